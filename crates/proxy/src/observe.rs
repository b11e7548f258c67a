//! Body wrappers that observe a request while it streams: response bytes, completion or abort (metrics and
//! the access log), request bytes, the end of the request body (timeout restart) and the mirror tee.
//!
//! Completion is detected on the end-of-stream frame, on `is_end_stream()` after a frame, or at drop time:
//! hyper stops polling a body that reports `is_end_stream()`, so waiting for a final `None` is not enough.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

use crate::access_log::AccessRecord;
use crate::body::{BoxError, ProxyBody};
use crate::metrics::{HostMetrics, StatusClass};
use crate::otlp::ServerSpan;

/// Wraps a response body; records metrics and the access log once, when it completes or is dropped.
pub struct ObservedResponse {
    inner: ProxyBody,
    finish: Option<Finish>,
    bytes: u64,
}

/// What to record when a response ends.
pub struct Finish {
    pub guard: RequestGuard,
    pub status: u16,
    pub log: Option<Box<AccessRecord>>,
    /// The server span, when the request is traced.
    pub span: Option<Box<ServerSpan>>,
}

/// Counts a request in flight from intake until it is recorded. Dropped unrecorded (the client went away before
/// a response was produced), it counts the request as `aborted`.
pub struct RequestGuard {
    in_flight: Gauge,
    pub host: Arc<HostMetrics>,
    started: Instant,
    recorded: bool,
}

/// Wraps a request body with a non-empty stream: counts bytes, signals the end of the body, tees for mirrors.
pub struct ObservedRequest {
    inner: ProxyBody,
    bytes: Counter,
    end: Option<oneshot::Sender<()>>,
    tee: Option<Tee>,
}

/// Collects a copy of the request body for mirrors, up to a limit.
pub struct Tee {
    chunks: Vec<Bytes>,
    len: usize,
    max: usize,
    tx: oneshot::Sender<Result<Bytes, TeeAbandoned>>,
}

/// Why a mirror gets no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeeAbandoned {
    TooLarge,
    ReadError,
}

impl ObservedResponse {
    pub fn new(inner: ProxyBody, finish: Finish) -> Self {
        Self {
            inner,
            finish: Some(finish),
            bytes: 0,
        }
    }

    fn complete(&mut self, aborted: bool) {
        let Some(mut finish) = self.finish.take() else {
            return;
        };
        let class = if aborted {
            StatusClass::Aborted
        } else {
            StatusClass::Status(finish.status)
        };
        let elapsed = finish.guard.started.elapsed();
        let host = &finish.guard.host;
        host.request_done(class, elapsed.as_secs_f64());
        host.response_bytes.inc_by(self.bytes);
        finish.guard.recorded = true;
        if let Some(span) = finish.span.take() {
            span.end(finish.status, aborted);
        }
        if let Some(log) = finish.log
            && !aborted
        {
            log.emit(finish.status, self.bytes, elapsed);
        }
    }
}

impl Body for ObservedResponse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.complete(false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.complete(true);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.complete(false);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedResponse {
    fn drop(&mut self) {
        let done = self.inner.is_end_stream();
        self.complete(!done);
    }
}

impl RequestGuard {
    pub fn new(in_flight: &Gauge, host: Arc<HostMetrics>) -> Self {
        in_flight.inc();
        Self {
            in_flight: in_flight.clone(),
            host,
            started: Instant::now(),
            recorded: false,
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if !self.recorded {
            self.host
                .request_done(StatusClass::Aborted, self.started.elapsed().as_secs_f64());
        }
        self.in_flight.dec();
    }
}

impl ObservedRequest {
    pub fn new(inner: ProxyBody, bytes: Counter, end: Option<oneshot::Sender<()>>, tee: Option<Tee>) -> Self {
        Self {
            inner,
            bytes,
            end,
            tee,
        }
    }

    fn ended(&mut self) {
        if let Some(end) = self.end.take() {
            let _ = end.send(());
        }
        if let Some(tee) = self.tee.take() {
            tee.finish();
        }
    }
}

impl Body for ObservedRequest {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes.inc_by(data.len() as u64);
                    if let Some(tee) = &mut this.tee
                        && !tee.push(data)
                    {
                        this.tee = None;
                    }
                }
                if this.inner.is_end_stream() {
                    this.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(tee) = this.tee.take() {
                    let _ = tee.tx.send(Err(TeeAbandoned::ReadError));
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.ended();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedRequest {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}

impl Tee {
    pub fn new(max: usize, tx: oneshot::Sender<Result<Bytes, TeeAbandoned>>) -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
            max,
            tx,
        }
    }

    /// Keeps a reference to the chunk (no copy). `false` when the limit was passed and the mirror abandoned.
    fn push(&mut self, data: &Bytes) -> bool {
        self.len += data.len();
        if self.len > self.max {
            let tx = std::mem::replace(&mut self.tx, oneshot::channel().0);
            let _ = tx.send(Err(TeeAbandoned::TooLarge));
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    fn finish(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut all = Vec::with_capacity(self.len);
                for c in &self.chunks {
                    all.extend_from_slice(c);
                }
                Bytes::from(all)
            }
        };
        let _ = self.tx.send(Ok(body));
    }
}
