//! The HTTP/1.1 connection pool of one upstream.
//!
//! A pooled connection is a hyper `SendRequest` together with its `Connection` future, and the connection is
//! driven by whichever task is using it: the request task polls it while the request goes out and the head comes
//! back, and the response body polls it while the body streams to the client. Nothing is handed to another task,
//! so a proxied request wakes no other task and no other thread (hyper-util's legacy client runs every backend
//! connection on a task of its own and passes each request and response through channels to it).
//!
//! Idle connections wait in a LIFO list without being polled, one list per data worker thread
//! ([`crate::workers::slot`]): a connection is registered with the reactor of the thread that opened it and is
//! only handed to requests on that thread. Each list has its own lock on its own cache line, so that two workers
//! taking and returning connections of the same upstream do not pass one lock's cache line back and forth twice
//! per request. A checkout polls the candidate once: a connection
//! the backend closed (or broke) in the meantime shows up there and is discarded. A sweeper task, started on the
//! first return, closes connections idle longer than the idle timeout and discards dead ones.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::{BackendStream, Connector, SendError};
use crate::body::{BoxError, ProxyBody};

/// An open HTTP/1.1 backend connection: the request handle and the connection state machine. Boxed so that
/// moving it in and out of the idle list copies a pointer.
struct Conn {
    sender: http1::SendRequest<ProxyBody>,
    driver: http1::Connection<TokioIo<BackendStream>, ProxyBody>,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// The idle list of one worker slot, alone on its cache line.
#[repr(align(64))]
#[derive(Default)]
struct IdleSlot(Mutex<Vec<Idle>>);

/// The pool of one upstream. Shared by the requests using it and (weakly) by its sweeper.
pub struct Http1Pool {
    connector: Connector,
    /// Idle lists by worker slot, allocated on the first return (an upstream that is never used costs no slots;
    /// by then the workers run and their number is known).
    idle: OnceLock<Box<[IdleSlot]>>,
    idle_timeout: Duration,
    max_idle: usize,
    sweeper_started: std::sync::atomic::AtomicBool,
}

/// A backend response body that drives its connection while it streams and puts the connection back into the
/// pool once the response ended cleanly. Dropped before its end, it closes the connection (HTTP/1.1 cannot
/// abandon a response and keep the connection).
pub struct PooledBody {
    body: Incoming,
    conn: Option<Box<Conn>>,
    pool: Arc<Http1Pool>,
    /// The request had a body, which may still be streaming when the response ends.
    request_body: bool,
}

impl Http1Pool {
    pub fn new(connector: Connector, idle_timeout: Duration, max_idle: usize) -> Arc<Self> {
        Arc::new(Self {
            connector,
            idle: OnceLock::new(),
            idle_timeout,
            max_idle,
            sweeper_started: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Idle connections in the pool.
    #[cfg(test)]
    pub fn idle_len(&self) -> usize {
        self.idle
            .get()
            .map_or(0, |slots| slots.iter().map(|slot| lock(slot).len()).sum())
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, or on a new one. A request that a reused
    /// connection could not even start to send (the backend closed it just now) is sent again on another.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let request_body = !req.body().is_end_stream();
        loop {
            let (mut conn, reused) = match poll_fn(|cx| Poll::Ready(self.checkout(cx))).await {
                Some(conn) => (conn, true),
                // Boxed: the connect future (TCP, TLS) is over a kilobyte, and keeping it inline would make every
                // request's future that much bigger to move, pooled connection or not.
                None => (Box::pin(self.open()).await?, false),
            };
            let mut response = std::pin::pin!(conn.sender.try_send_request(req));
            let mut driver_done = false;
            let result = poll_fn(|cx| {
                if !driver_done && let Poll::Ready(result) = Pin::new(&mut conn.driver).poll(cx) {
                    driver_done = true;
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "backend connection failed");
                    }
                }
                match response.as_mut().poll(cx) {
                    // The connection is gone and never answered: hyper reports that through the response
                    // future, so this arm is a guard against waiting forever.
                    Poll::Pending if driver_done => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                }
            })
            .await;
            match result {
                Some(Ok(resp)) => {
                    let pool = self.clone();
                    let conn = (!driver_done && keeps_alive(&resp)).then_some(conn);
                    return Ok(resp.map(|body| PooledBody {
                        body,
                        conn,
                        pool,
                        request_body,
                    }));
                }
                Some(Err(mut e)) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Http(e.into_error())),
                },
                None => return Err(SendError::Closed),
            }
        }
    }

    /// Takes the most recently used live connection. Each candidate is polled once: a closed or broken one
    /// finishes its future there and is dropped.
    fn checkout(&self, cx: &mut Context<'_>) -> Option<Box<Conn>> {
        let list = self.idle.get()?.get(crate::workers::slot())?;
        loop {
            let mut idle = lock(list).pop()?;
            if Pin::new(&mut idle.conn.driver).poll(cx).is_pending() && idle.conn.sender.is_ready() {
                return Some(idle.conn);
            }
        }
    }

    async fn open(&self) -> Result<Box<Conn>, SendError> {
        let stream = self.connector.connect().await.map_err(SendError::Connect)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        Ok(Box::new(Conn { sender, driver }))
    }

    /// Returns a connection whose response ended cleanly. Usually it is not polled here: the checkout that takes
    /// it next polls it anyway (hyper then notices the finished exchange and becomes ready), and one that is not
    /// ready after that poll is closed there. After a request with a body it is polled now: the body may still be
    /// streaming (a backend may answer before reading it), and such a connection must close at once rather than
    /// hold the client's body stream while it waits in the pool.
    fn release(self: &Arc<Self>, mut conn: Box<Conn>, request_body: bool) {
        if request_body {
            let mut cx = Context::from_waker(Waker::noop());
            if Pin::new(&mut conn.driver).poll(&mut cx).is_ready() || !conn.sender.is_ready() {
                return;
            }
        }
        let since = Instant::now();
        let slots = self.idle.get_or_init(|| {
            (0..crate::workers::slots())
                .map(|_| IdleSlot::default())
                .collect()
        });
        // A slot beyond the list exists only when a proxy with more workers started in the same process after this
        // pool's first return (tests); its connections are then closed instead of pooled.
        let Some(list) = slots.get(crate::workers::slot()) else {
            return;
        };
        let mut idle = lock(list);
        if idle.len() >= self.max_idle {
            return;
        }
        idle.push(Idle { conn, since });
        drop(idle);
        if !self.sweeper_started.load(std::sync::atomic::Ordering::Relaxed)
            && !self
                .sweeper_started
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.start_sweeper();
        }
    }

    fn start_sweeper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(self);
        // A quarter of the timeout: idle connections close between 1 and 1.25 times the timeout after their
        // last use, without a clock read on checkout.
        let period = (self.idle_timeout / 4).max(Duration::from_millis(10));
        runtime.spawn(sweep(pool, period));
    }

    /// Drops idle connections past the idle timeout and those the backend closed.
    fn sweep(&self, now: Instant) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut closed = Vec::new();
        for slot in self.idle.get().into_iter().flatten() {
            let mut idle = lock(slot);
            let mut i = 0;
            while i < idle.len() {
                let entry = &mut idle[i];
                let expired = now.saturating_duration_since(entry.since) >= self.idle_timeout;
                if expired || Pin::new(&mut entry.conn.driver).poll(&mut cx).is_ready() {
                    closed.push(idle.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        // Closing sockets happens outside the lock.
        drop(closed);
    }
}

fn lock(slot: &IdleSlot) -> std::sync::MutexGuard<'_, Vec<Idle>> {
    slot.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the backend keeps the connection open after this response (RFC 9112 §9.3): HTTP/1.1 without
/// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
fn keeps_alive<B>(resp: &Response<B>) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in resp.headers().get_all(http::header::CONNECTION) {
        // Most backends send exactly this with every response; no need to split it.
        if value.as_bytes().eq_ignore_ascii_case(b"keep-alive") {
            keep_alive = true;
            continue;
        }
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    match resp.version() {
        http::Version::HTTP_11 => !close,
        http::Version::HTTP_10 => keep_alive && !close,
        _ => false,
    }
}

async fn sweep(pool: Weak<Http1Pool>, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        // The pool is dropped with the last table naming its upstream; the sweeper ends with it.
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep(Instant::now());
    }
}

impl PooledBody {
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.release(conn, self.request_body);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut drove = false;
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if this.body.is_end_stream() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            // The body channel is empty: let the connection read more, then look again once.
            let Some(conn) = this.conn.as_mut().filter(|_| !drove) else {
                return Poll::Pending;
            };
            drove = true;
            if let Poll::Ready(result) = Pin::new(&mut conn.driver).poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "backend connection failed mid-response");
                }
                this.conn = None;
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.conn.is_some() && !self.body.is_end_stream() {
            self.drain_buffered();
        }
        // A response without a body (HEAD, 204, 304, `Content-Length: 0`) is never polled: return its connection
        // here. Anything else dropped before its end closes the connection with the drop of `conn`.
        if self.conn.is_some() && self.body.is_end_stream() {
            self.finish();
        }
    }
}

impl PooledBody {
    /// The client went away before the end of the response. A short body usually sits in hyper's read buffer
    /// already (it came with the head): read it to its end without waiting, so that the connection can be reused.
    /// A body that would need more reads leaves `conn` in place, and the connection closes.
    fn drain_buffered(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut drove = false;
        for _ in 0..16 {
            match Pin::new(&mut self.body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => drove = false,
                Poll::Ready(None) => return,
                Poll::Ready(Some(Err(_))) => {
                    self.conn = None;
                    return;
                }
                Poll::Pending if drove => return,
                Poll::Pending => {
                    let Some(conn) = self.conn.as_mut() else {
                        return;
                    };
                    drove = true;
                    if Pin::new(&mut conn.driver).poll(&mut cx).is_ready() {
                        self.conn = None;
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Response, Version};

    use super::keeps_alive;

    fn response(version: Version, connection: &[&str]) -> Response<()> {
        let mut resp = Response::new(());
        *resp.version_mut() = version;
        for value in connection {
            resp.headers_mut()
                .append(http::header::CONNECTION, value.parse().unwrap());
        }
        resp
    }

    #[test]
    fn keep_alive_follows_the_version_and_every_connection_line() {
        let cases: [(Version, &[&str], bool); 9] = [
            (Version::HTTP_11, &[], true),
            (Version::HTTP_11, &["keep-alive"], true),
            (Version::HTTP_11, &["Close"], false),
            (Version::HTTP_11, &["keep-alive, close"], false),
            (Version::HTTP_11, &["keep-alive", "close"], false),
            (Version::HTTP_10, &[], false),
            (Version::HTTP_10, &["Keep-Alive"], true),
            (Version::HTTP_10, &["Keep-Alive", "close"], false),
            (Version::HTTP_2, &["keep-alive"], false),
        ];
        for (version, connection, want) in cases {
            assert_eq!(
                keeps_alive(&response(version, connection)),
                want,
                "{version:?} {connection:?}"
            );
        }
    }
}
