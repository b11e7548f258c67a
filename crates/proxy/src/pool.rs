//! Backend transports and their connection pools (routing.md §11): per upstream, our own HTTP/1.1 pool
//! ([`http1`]: up to 1,024 idle keep-alive connections, driven by the task that uses them), or our HTTP/2 pool
//! ([`http2`]: h2c with prior knowledge, or TLS with ALPN `h2`; requests multiplex on a connection, and another
//! opens when every connection is at the backend's `MAX_CONCURRENT_STREAMS`); TLS via rustls.
//!
//! Each transport dials exactly its upstream's host and port whatever the request URI says, so the URI authority
//! can carry the forwarded Host for HTTP/2 backends.

mod http1;
mod http2;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Uri};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tunnelgate_route::{Upstream, UpstreamProtocol, UpstreamScheme};

use crate::body::{self, ProxyBody};
use crate::dns::resolve_backend;
use crate::metrics::BackendErrorReason;
use crate::tls;

pub use self::http1::Http1Pool;
pub use self::http2::Http2Pool;

/// Fixed backend connect timeout (routing.md §8).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle pooled connections close after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per pool; the Go project keeps 2, which caps throughput.
const MAX_IDLE_PER_HOST: usize = 1024;

/// The pooled transport of one upstream.
pub struct UpstreamClient {
    pub upstream: Arc<Upstream>,
    pub connector: Connector,
    transport: Transport,
    /// `Host` for HTTP/1.1 requests that arrive without one (an HTTP/1.0 client): the upstream's host, with the
    /// port only when it is not the scheme's default.
    default_host: Option<HeaderValue>,
}

enum Transport {
    Http1(Arc<Http1Pool>),
    Http2(Arc<Http2Pool>),
}

/// Dials one upstream: TCP, then TLS when the upstream is https.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    host: String,
    port: u16,
    /// `Some(Err)` when the TLS settings could not be built: every dial then fails closed.
    tls: Option<Result<(TlsConnector, ServerName<'static>), Arc<str>>>,
}

/// A failed dial, classified for metrics.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to backend: {0}")]
    Dial(io::Error),
    #[error("connect to backend: timed out")]
    Timeout,
    #[error("tls handshake with backend: {0}")]
    Tls(io::Error),
    #[error("backend tls settings: {0}")]
    TlsSetup(Arc<str>),
}

/// A failed backend exchange (before a response head arrived).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(ConnectError),
    #[error("backend exchange: {0}")]
    Http(hyper::Error),
    #[error("backend connection closed before a response")]
    Closed,
}

/// A connection to a backend.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamClient {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self::with_idle_timeout(upstream, IDLE_TIMEOUT)
    }

    fn with_idle_timeout(upstream: Arc<Upstream>, idle_timeout: Duration) -> Self {
        let h2 = upstream.protocol == UpstreamProtocol::H2c;
        let connector = Connector::new(&upstream, h2);
        let transport = if h2 {
            Transport::Http2(Http2Pool::new(connector.clone(), idle_timeout))
        } else {
            Transport::Http1(Http1Pool::new(connector.clone(), idle_timeout, MAX_IDLE_PER_HOST))
        };
        let default_port = match upstream.scheme {
            UpstreamScheme::Http => 80,
            UpstreamScheme::Https => 443,
        };
        let default_host = if upstream.port == default_port {
            HeaderValue::from_str(upstream.authority.host()).ok()
        } else {
            HeaderValue::from_str(upstream.authority.as_str()).ok()
        };
        Self {
            upstream,
            connector,
            transport,
            default_host,
        }
    }

    /// Sends a request prepared for this upstream. HTTP/1.1 requests are put into origin form (authority form for
    /// CONNECT) and get a `Host` when they have none; HTTP/2 requests keep their absolute URI.
    pub async fn request(&self, mut req: Request<ProxyBody>) -> Result<Response<ProxyBody>, SendError> {
        match &self.transport {
            Transport::Http1(pool) => {
                if req.uri().authority().is_some() {
                    let uri = if req.method() == Method::CONNECT {
                        Uri::from(self.upstream.authority.clone())
                    } else {
                        match req.uri().path_and_query() {
                            Some(pq) => Uri::from(pq.clone()),
                            None => Uri::from_static("/"),
                        }
                    };
                    *req.uri_mut() = uri;
                }
                if !req.headers().contains_key(header::HOST)
                    && let Some(host) = &self.default_host
                {
                    req.headers_mut().insert(header::HOST, host.clone());
                }
                let resp = pool.send(req).await?;
                Ok(resp.map(body::boxed_exact))
            }
            Transport::Http2(pool) => {
                let resp = pool.send(req).await?;
                Ok(resp.map(body::boxed))
            }
        }
    }

    /// Idle HTTP/1.1 connections in the pool (0 for HTTP/2 upstreams).
    #[cfg(test)]
    fn idle_connections(&self) -> usize {
        match &self.transport {
            Transport::Http1(pool) => pool.idle_len(),
            Transport::Http2(_) => 0,
        }
    }

    /// Open HTTP/2 connections of the pool (0 for HTTP/1.1 upstreams).
    #[cfg(test)]
    fn http2_connections(&self) -> usize {
        match &self.transport {
            Transport::Http1(_) => 0,
            Transport::Http2(pool) => pool.connections(),
        }
    }
}

impl Connector {
    fn new(upstream: &Upstream, h2: bool) -> Self {
        let tls = (upstream.scheme == UpstreamScheme::Https).then(|| {
            let tls_block = upstream.tls.as_deref();
            let config = tls::client_config(tls_block, h2).map_err(|e| Arc::from(e.to_string()))?;
            let name = tls::server_name(tls_block, &upstream.host).map_err(|e| Arc::from(e.to_string()))?;
            Ok((TlsConnector::from(Arc::new(config)), name))
        });
        if let Some(Err(e)) = &tls {
            tracing::warn!(upstream = %upstream.authority, error = %e, "backend tls settings unusable; requests will fail with 502");
        }
        Self {
            inner: Arc::new(ConnectorInner {
                host: upstream.host.clone(),
                port: upstream.port,
                tls,
            }),
        }
    }

    /// Opens a fresh connection (used directly by the upgrade path).
    pub async fn connect(&self) -> Result<BackendStream, ConnectError> {
        let inner = &self.inner;
        let host = inner.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, dial(host, inner.port))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Dial)?;
        // Latency matters more than packet count for proxied request heads.
        let _ = tcp.set_nodelay(true);
        match &inner.tls {
            None => Ok(BackendStream::Plain(tcp)),
            Some(Err(e)) => Err(ConnectError::TlsSetup(e.clone())),
            Some(Ok((connector, name))) => {
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| ConnectError::Timeout)?
                    .map_err(ConnectError::Tls)?;
                Ok(BackendStream::Tls(Box::new(tls)))
            }
        }
    }
}

/// A TCP connection to `host` (an IP literal, or a name resolved through the system resolver, whose cache honours
/// TTLs) on `port`: each address in the resolver's order until one answers.
async fn dial(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in resolve_backend(host, port).await? {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))))
}

impl ConnectError {
    pub fn reason(&self) -> BackendErrorReason {
        match self {
            Self::Dial(_) => BackendErrorReason::Dial,
            Self::Timeout => BackendErrorReason::Dial,
            Self::Tls(_) | Self::TlsSetup(_) => BackendErrorReason::Tls,
        }
    }
}

impl SendError {
    pub fn reason(&self) -> BackendErrorReason {
        match self {
            Self::Connect(e) => e.reason(),
            Self::Http(e) if e.is_canceled() => BackendErrorReason::Canceled,
            Self::Http(_) | Self::Closed => BackendErrorReason::Other,
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => crate::coalesce::poll_write_vectored(Pin::new(s), cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
