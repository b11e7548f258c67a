//! The seam between the tunnel and whatever answers requests (in `tunnelgate proxy`, the one request
//! service). The tunnel does not depend on the proxy crate; the binary adapts one to the other.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::BodyExt;

/// Errors carried through boxed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Streaming body in both directions (the same type the proxy uses, so no copying in the adapter).
pub type OriginBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Facts about the tunnel stream a request arrived on.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Scheme the eyeball used (from `dest` over QUIC, `:scheme` over HTTP/2).
    pub scheme: &'static str,
    /// `"quic"` or `"http2"`, the metrics label.
    pub transport: &'static str,
    /// HA connection the stream arrived on.
    pub conn_index: u8,
}

/// Request extension: the eyeball's raw byte stream, handed over once the origin has answered 101 and the
/// tunnel has relayed that answer to the edge. An origin that answers 101 awaits it and splices.
#[derive(Clone)]
pub struct TunnelUpgrade(std::sync::Arc<std::sync::Mutex<Option<UpgradeFuture>>>);

/// Resolves to the eyeball's byte stream once the 101 has been relayed.
pub type UpgradeFuture = BoxFuture<Result<hyper::upgrade::Upgraded, BoxError>>;

impl TunnelUpgrade {
    pub fn new(fut: UpgradeFuture) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(Some(fut))))
    }

    /// Takes the future; `None` if it was already taken.
    pub fn take(&self) -> Option<BoxFuture<Result<hyper::upgrade::Upgraded, BoxError>>> {
        self.0.lock().ok().and_then(|mut f| f.take())
    }
}

/// Answers requests that arrive over tunnel streams.
pub trait Origin: Send + Sync + 'static {
    fn serve(
        &self,
        req: http::Request<OriginBody>,
        info: StreamInfo,
    ) -> BoxFuture<http::Response<OriginBody>>;
}

/// An empty body.
pub fn empty_body() -> OriginBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body holding `bytes`.
pub fn full_body(bytes: impl Into<Bytes>) -> OriginBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
