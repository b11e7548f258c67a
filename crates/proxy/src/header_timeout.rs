//! The header-read timeout of a data connection, kept by one timer per connection instead of one per request.
//!
//! hyper's own `header_read_timeout` allocates a timer, reads the clock and inserts the timer into tokio's wheel
//! for every request head it waits for, then removes it again once the head has arrived: about a thousand
//! instructions per proxied request on a busy keep-alive connection, for a deadline that almost never fires.
//! Here the connection keeps one `Sleep` for its whole life and the timer wheel is touched only when that sleep
//! fires: a request head marks the connection busy, the end of its response marks it idle from that instant (a
//! clock read), and a firing sleep either cuts the connection (idle for the whole timeout) or is moved to the
//! next instant at which it could be due. A busy keep-alive connection therefore re-arms its timer about once per
//! timeout period rather than once per request, and the deadline stays exact: a connection is cut exactly one
//! timeout after accept (before its first request) or after the end of its last response, unless a complete
//! request head arrived in between.
//!
//! The connection future, the service function and the response bodies all run on the connection's task; the
//! atomics only make the shared state `Send` (relaxed loads and stores, no read-modify-write).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::body::{BoxError, ProxyBody};

/// The head/response state of one connection, shared by its service function and its response bodies.
pub(crate) struct HeadClock {
    /// The connection's accept instant; `idle_since` counts from here.
    origin: Instant,
    /// Request heads received so far; a response body ends the idle wait only for the newest one.
    heads: AtomicU64,
    /// A request is being served (from its head to the end of its response).
    busy: AtomicBool,
    /// Nanoseconds from `origin` to the end of the last response (0 before the first request).
    idle_since: AtomicU64,
    /// The connection speaks HTTP/2: hyper has no header-read timeout there and neither has this clock after the
    /// first request (the stream multiplexing makes "the next head" meaningless).
    stopped: AtomicBool,
}

/// What the connection does when its timer fires.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No complete head within the timeout: close the connection.
    Cut,
    /// Not due: fire again at this instant.
    Recheck(Instant),
    /// The clock no longer applies (HTTP/2).
    Stopped,
}

/// Marks the end of one response on the connection's clock when the response body ends or is dropped.
pub(crate) struct ResponseEnd {
    clock: Arc<HeadClock>,
    head: u64,
}

/// The response body of the data listener: the service's body, plus the mark of its end on the clock.
pub(crate) struct ListenerBody {
    inner: ProxyBody,
    end: Option<ResponseEnd>,
}

impl HeadClock {
    pub(crate) fn new(origin: Instant) -> Arc<Self> {
        Arc::new(Self {
            origin,
            heads: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        })
    }

    /// A request head arrived: the connection is busy until the returned mark is dropped.
    pub(crate) fn head_arrived(self: &Arc<Self>, version: Version) -> ResponseEnd {
        if version >= Version::HTTP_2 {
            self.stopped.store(true, Ordering::Relaxed);
        }
        let head = self.heads.load(Ordering::Relaxed) + 1;
        self.heads.store(head, Ordering::Relaxed);
        self.busy.store(true, Ordering::Relaxed);
        ResponseEnd {
            clock: self.clone(),
            head,
        }
    }

    /// The timer fired at `now`: cut, or when to look again.
    pub(crate) fn expiry(&self, now: Instant, timeout: Duration) -> Expiry {
        if self.stopped.load(Ordering::Relaxed) {
            return Expiry::Stopped;
        }
        if self.busy.load(Ordering::Relaxed) {
            // The response may end at any moment; the deadline then lies one timeout after that, so never earlier
            // than one timeout from now.
            return Expiry::Recheck(now + timeout);
        }
        let idle_since = self.origin + Duration::from_nanos(self.idle_since.load(Ordering::Relaxed));
        let due = idle_since + timeout;
        if due <= now {
            Expiry::Cut
        } else {
            Expiry::Recheck(due)
        }
    }

    fn response_ended(&self, head: u64) {
        if self.heads.load(Ordering::Relaxed) != head || !self.busy.load(Ordering::Relaxed) {
            return;
        }
        let since = Instant::now().saturating_duration_since(self.origin);
        self.idle_since.store(
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.busy.store(false, Ordering::Relaxed);
    }
}

impl Drop for ResponseEnd {
    fn drop(&mut self) {
        self.clock.response_ended(self.head);
    }
}

impl ListenerBody {
    pub(crate) fn new(inner: ProxyBody, end: ResponseEnd) -> Self {
        Self {
            inner,
            end: Some(end),
        }
    }
}

impl Body for ListenerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        // hyper stops polling once `is_end_stream` says so; the end is marked as soon as it is known.
        match &polled {
            Poll::Ready(None) => this.end = None,
            Poll::Ready(Some(_)) if this.inner.is_end_stream() => this.end = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn at(clock: &HeadClock, secs: u64) -> Instant {
        clock.origin + Duration::from_secs(secs)
    }

    #[test]
    fn a_connection_without_a_request_is_cut_one_timeout_after_accept() {
        let clock = HeadClock::new(Instant::now());
        assert_eq!(clock.expiry(at(&clock, 10), TIMEOUT), Expiry::Cut);
        assert_eq!(clock.expiry(at(&clock, 11), TIMEOUT), Expiry::Cut);
    }

    #[test]
    fn a_busy_connection_is_never_cut_and_is_looked_at_again_a_timeout_later() {
        let clock = HeadClock::new(Instant::now());
        let end = clock.head_arrived(Version::HTTP_11);
        assert_eq!(
            clock.expiry(at(&clock, 10), TIMEOUT),
            Expiry::Recheck(at(&clock, 20))
        );
        assert_eq!(
            clock.expiry(at(&clock, 500), TIMEOUT),
            Expiry::Recheck(at(&clock, 510))
        );
        drop(end);
        assert!(!clock.busy.load(Ordering::Relaxed));
    }

    #[test]
    fn the_idle_wait_counts_from_the_end_of_the_last_response() {
        let clock = HeadClock::new(Instant::now() - Duration::from_secs(5));
        drop(clock.head_arrived(Version::HTTP_11));
        // The response ended "now", 5 s after accept: due at 15 s, not at 10 s.
        match clock.expiry(at(&clock, 10), TIMEOUT) {
            Expiry::Recheck(due) => {
                assert!(due >= at(&clock, 15) && due < at(&clock, 16), "{due:?}");
                assert_eq!(clock.expiry(due, TIMEOUT), Expiry::Cut);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_newest_head_s_response_ends_the_busy_time() {
        let clock = HeadClock::new(Instant::now());
        let first = clock.head_arrived(Version::HTTP_11);
        let second = clock.head_arrived(Version::HTTP_11);
        drop(first);
        assert!(clock.busy.load(Ordering::Relaxed));
        drop(second);
        assert!(!clock.busy.load(Ordering::Relaxed));
    }

    #[test]
    fn http2_stops_the_clock() {
        let clock = HeadClock::new(Instant::now());
        drop(clock.head_arrived(Version::HTTP_2));
        assert_eq!(clock.expiry(at(&clock, 100), TIMEOUT), Expiry::Stopped);
    }

    #[test]
    fn the_body_marks_the_end_when_its_last_frame_is_taken() {
        let clock = HeadClock::new(Instant::now());
        let end = clock.head_arrived(Version::HTTP_11);
        let mut body = ListenerBody::new(crate::body::full("ok"), end);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(clock.busy.load(Ordering::Relaxed));
        let frame = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(frame, Poll::Ready(Some(Ok(_)))));
        assert!(!clock.busy.load(Ordering::Relaxed));
    }
}
