//! Backend transports and their connection pools (routing.md §11): one hyper-util client per upstream key,
//! HTTP/1.1 keep-alive with up to 1,024 idle connections, h2c with prior knowledge, and TLS (ALPN `http/1.1`
//! or `h2`) via rustls.
//!
//! Each client dials exactly its upstream's host and port whatever the request URI says, so the URI authority
//! can carry the forwarded Host for HTTP/2 backends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tunnelgate_route::{Upstream, UpstreamProtocol, UpstreamScheme};

use crate::body::ProxyBody;
use crate::metrics::BackendErrorReason;
use crate::tls;

/// Fixed backend connect timeout (routing.md §8).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle pooled connections close after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per pool; the Go project keeps 2, which caps throughput.
const MAX_IDLE_PER_HOST: usize = 1024;

/// The pooled client of one upstream.
pub struct UpstreamClient {
    pub upstream: Arc<Upstream>,
    pub client: Client<Connector, ProxyBody>,
    pub connector: Connector,
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

/// A connection to a backend.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamClient {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        let h2 = upstream.protocol == UpstreamProtocol::H2c;
        let connector = Connector::new(&upstream, h2);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if h2 {
            builder
                .http2_only(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_timeout(Duration::from_secs(15))
                .http2_keep_alive_while_idle(true);
        }
        let client = builder.build(connector.clone());
        Self {
            upstream,
            client,
            connector,
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
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, inner.port)))
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

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<BackendStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect().await.map(TokioIo::new) })
    }
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

/// Classifies a client error by walking its source chain.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> BackendErrorReason {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return c.reason();
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_canceled()
        {
            return BackendErrorReason::Canceled;
        }
        cur = e.source();
    }
    BackendErrorReason::Other
}

impl Connection for BackendStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(_) => Connected::new(),
            Self::Tls(tls) => {
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
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
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
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
