//! Listeners and lifecycle: the data listener (HTTP/1.1 and h2c prior knowledge, told apart by the HTTP/2
//! preface), the config API listener, and graceful shutdown (config-api.md §11).

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::body::{self, BoxError};
use crate::config_api::ConfigApi;
use crate::drain::{Drain, Ticket};
use crate::forward::is_upgrade;
use crate::framing::FramingGuard;
use crate::header_timeout::{Expiry, HeadClock, ListenerBody, ResponseEnd};
use crate::otlp::RequestTracer;
use crate::service::{RequestContext, RequestService};
use crate::settings::ProxySettings;
use crate::state::ProxyState;
use crate::upgrade::ClientUpgrade;
use crate::workers::Workers;

/// Shutdown: time allowed to export the spans still queued.
const TRACE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Config port: time to read a request head.
const CONFIG_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the proxy's listeners.
#[derive(Debug)]
pub struct ProxyServer;

/// A running proxy: its bound addresses and the way to stop it.
pub struct ProxyHandle {
    config_addr: SocketAddr,
    data_addr: Option<SocketAddr>,
    state: ProxyState,
    service: RequestService,
    stop_data: watch::Sender<bool>,
    stop_config: watch::Sender<bool>,
    data_task: Option<JoinHandle<()>>,
    config_task: JoinHandle<()>,
    grace_period: Duration,
    tracer: Option<RequestTracer>,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({which}): {source}")]
pub struct StartError {
    pub which: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

impl ProxyServer {
    /// Binds the config listener and, when `settings.data_addr` is set, the data listener, then serves both on
    /// the current tokio runtime. Port 0 picks ephemeral ports; the handle reports the bound addresses.
    pub async fn start(settings: ProxySettings, state: ProxyState) -> Result<ProxyHandle, StartError> {
        if settings.auth_token.is_none() {
            tracing::warn!("PROXY_AUTH_TOKEN is not set: the config API accepts unauthenticated pushes");
        }
        let config_listener = bind(settings.config_addr).map_err(|source| StartError {
            which: "config API",
            addr: settings.config_addr,
            source,
        })?;
        let data_listener = match settings.data_addr {
            Some(addr) => Some(bind(addr).map_err(|source| StartError {
                which: "data",
                addr,
                source,
            })?),
            None => None,
        };
        let config_addr = local_addr(&config_listener, settings.config_addr);
        let data_addr = data_listener
            .as_ref()
            .zip(settings.data_addr)
            .map(|(l, a)| local_addr(l, a));

        let tracer = match &settings.tracing {
            None => None,
            Some(t) => Some(RequestTracer::start(t).map_err(|e| StartError {
                which: "OTLP trace exporter",
                addr: settings.config_addr,
                source: io::Error::other(e),
            })?),
        };
        let service = RequestService::with_tracer(state.clone(), &settings, tracer.clone());
        let api = Arc::new(ConfigApi::new(
            state.clone(),
            settings.auth_token.as_deref(),
            settings.max_config_bytes,
            settings.metrics_enabled,
        ));
        let (stop_data, stop_data_rx) = watch::channel(false);
        let (stop_config, stop_config_rx) = watch::channel(false);
        let limits = DataLimits {
            header_read_timeout: settings.header_read_timeout,
            max_connections: settings
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
        };
        // Worker threads serve the data connections; 0 serves them on the caller's runtime.
        let workers = match (&data_listener, settings.data_workers) {
            (Some(_), n) if n > 0 => Some(Workers::start(n).map_err(|source| StartError {
                which: "data workers",
                addr: data_addr.unwrap_or(settings.config_addr),
                source,
            })?),
            _ => None,
        };
        let data_task = data_listener
            .map(|l| tokio::spawn(serve_data(l, service.clone(), limits, workers, stop_data_rx)));
        let config_task = tokio::spawn(serve_config(config_listener, api, stop_config_rx));
        tracing::info!(config = %config_addr, data = ?data_addr, "proxy listening");
        Ok(ProxyHandle {
            config_addr,
            data_addr,
            state,
            service,
            stop_data,
            stop_config,
            data_task,
            config_task,
            grace_period: settings.grace_period,
            tracer,
        })
    }
}

impl ProxyHandle {
    pub fn config_addr(&self) -> SocketAddr {
        self.config_addr
    }

    /// `None` when started without a data listener (tunnel mode).
    pub fn data_addr(&self) -> Option<SocketAddr> {
        self.data_addr
    }

    pub fn state(&self) -> &ProxyState {
        &self.state
    }

    /// The request service, for transports other than the data listener (the tunnel).
    pub fn service(&self) -> &RequestService {
        &self.service
    }

    /// Drains: `/readyz` turns 503, the data listener stops accepting, idle keep-alive connections close and
    /// in-flight requests get up to the grace period. The config API serves until the drain ends.
    pub async fn shutdown(self) {
        self.state.set_draining();
        let _ = self.stop_data.send(true);
        if let Some(task) = self.data_task
            && tokio::time::timeout(self.grace_period, task).await.is_err()
        {
            tracing::warn!(grace_period = ?self.grace_period, "grace period over; remaining requests are cut");
        }
        let _ = self.stop_config.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.config_task).await;
        if let Some(tracer) = self.tracer {
            tracer.shutdown(TRACE_FLUSH_LIMIT).await;
        }
    }
}

/// Binds with `SO_REUSEADDR`; an unspecified IPv6 address also accepts IPv4 (`:PORT` means every interface),
/// falling back to IPv4 only on hosts without IPv6.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    match bind_exact(addr) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            tracing::debug!(error = %e, "IPv6 unavailable; listening on IPv4 only");
            bind_exact(SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())))
        }
        other => other,
    }
}

fn bind_exact(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

/// Data listener limits against slow and numerous clients.
struct DataLimits {
    header_read_timeout: Duration,
    /// One permit per open connection.
    max_connections: Option<Arc<Semaphore>>,
}

async fn serve_data(
    listener: TcpListener,
    service: RequestService,
    limits: DataLimits,
    workers: Option<Workers>,
    mut stop: watch::Receiver<bool>,
) {
    let drain = Drain::default();
    let header_read_timeout = limits.header_read_timeout;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header-read timeout is kept by the connection (`header_timeout`), not by hyper's timer per request.
    builder.http1().header_read_timeout(None).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);
    loop {
        // At the cap, stop accepting: further clients wait in the kernel's listen backlog.
        let permit = match &limits.max_connections {
            Some(cap) => tokio::select! {
                permit = cap.clone().acquire_owned() => permit.ok(),
                _ = stop.changed() => break,
            },
            None => None,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = DataConnection {
                        service: service.clone(),
                        builder: builder.clone(),
                        // Counted from accept on, so that a drain waits for it even before a worker runs it.
                        ticket: drain.ticket(),
                        header_read_timeout,
                        _permit: permit,
                        peer,
                    };
                    match &workers {
                        None => {
                            tokio::spawn(conn.serve(stream));
                        }
                        // The socket moves to the worker's reactor: deregistered here, registered there.
                        Some(workers) => match stream.into_std() {
                            Ok(stream) => workers.spawn(async move {
                                match TcpStream::from_std(stream) {
                                    Ok(stream) => conn.serve(stream).await,
                                    Err(e) => tracing::debug!(error = %e, peer = %conn.peer, "cannot register the connection"),
                                }
                            }),
                            Err(e) => tracing::debug!(error = %e, %peer, "cannot hand the connection to a worker"),
                        },
                    }
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed on the data listener");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    drain.shutdown().await;
    // The workers stop with `workers` here, after the last connection closed.
}

/// One accepted data connection and what serving it needs besides the socket.
struct DataConnection {
    service: RequestService,
    builder: auto::Builder<TokioExecutor>,
    ticket: Ticket,
    header_read_timeout: Duration,
    /// Held for the connection's life (PROXY_MAX_CONNECTIONS).
    _permit: Option<OwnedSemaphorePermit>,
    peer: SocketAddr,
}

impl DataConnection {
    async fn serve(self, stream: TcpStream) {
        let Self {
            service,
            builder,
            ticket,
            header_read_timeout,
            _permit,
            peer,
        } = self;
        let clock = HeadClock::new(Instant::now());
        let heads = clock.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let end = heads.head_arrived(req.version());
            serve_listener_request(service.clone(), peer, req, end)
        });
        // The framing guard refuses requests with both Content-Length and Transfer-Encoding.
        let io = TokioIo::new(FramingGuard::new(stream));
        let conn = builder.serve_connection_with_upgrades(io, svc);
        let conn = ticket.watch(conn, auto::UpgradeableConnection::graceful_shutdown);
        // One timer for the connection's life bounds the wait for every request head: before the first request
        // (which also covers the HTTP/2 preface sniff and an HTTP/2 connection without a request) and between
        // HTTP/1 requests. It is moved only when it fires (`header_timeout`).
        let mut conn = std::pin::pin!(conn);
        let sleep = tokio::time::sleep(header_read_timeout);
        let mut sleep = std::pin::pin!(sleep);
        let mut timed = true;
        // Whether the sleep holds this task's waker for its current deadline. Until it fires, a wake-up then
        // costs one atomic load (`is_elapsed`) instead of a poll that re-registers the waker.
        let mut armed = false;
        let result = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            if timed && (!armed || sleep.is_elapsed()) {
                loop {
                    // Unconstrained: a poll refused for want of coop budget would leave the timer without the
                    // waker, and the connection would never be cut.
                    let polled = std::pin::pin!(tokio::task::coop::unconstrained(sleep.as_mut())).poll(cx);
                    if polled.is_pending() {
                        armed = true;
                        break;
                    }
                    match clock.expiry(Instant::now(), header_read_timeout) {
                        Expiry::Cut => return Poll::Ready(None),
                        Expiry::Recheck(at) => sleep.as_mut().reset(at),
                        Expiry::Stopped => {
                            timed = false;
                            break;
                        }
                    }
                }
            }
            Poll::Pending
        })
        .await;
        let Some(result) = result else {
            tracing::debug!(%peer, "no request within the header read timeout; closing");
            return;
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, %peer, "client connection ended with an error");
        }
    }
}

async fn serve_listener_request(
    service: RequestService,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    end: ResponseEnd,
) -> Result<Response<ListenerBody>, Infallible> {
    if !host_is_acceptable(&req) {
        let mut resp = body::text_response(
            StatusCode::BAD_REQUEST,
            "bad request\n",
            req.method() == Method::HEAD,
        );
        if req.version() < Version::HTTP_2 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Ok(resp.map(|body| ListenerBody::new(body, end)));
    }
    if is_upgrade(req.headers()) {
        let on = hyper::upgrade::on(&mut req);
        req.extensions_mut().insert(ClientUpgrade::new(
            async move { on.await.map_err(BoxError::from) },
        ));
    }
    let ctx = RequestContext {
        scheme: "http",
        peer: Some(peer),
        transport: "listener",
    };
    let resp = service.serve(req.map(body::boxed), ctx).await;
    Ok(resp.map(|body| ListenerBody::new(body, end)))
}

/// RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host, and a Host must be a valid `uri-host[:port]`
/// (no userinfo, a numeric port). HTTP/1.0 and HTTP/2 may omit it (routing then uses the authority, or the
/// empty host).
fn host_is_acceptable<B>(req: &Request<B>) -> bool {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => false,
        (Some(host), None) => {
            let host = host.as_bytes();
            is_plain_host(host)
                || (!host.contains(&b'@') && Authority::try_from(host).is_ok() && port_is_valid(host))
        }
        (None, _) => req.version() != Version::HTTP_11 || req.uri().authority().is_some(),
    }
}

/// The common Host shape, `name[:port]` with letters, digits, `.` and `-` and a port up to 65535, accepted
/// without the general `Authority` parse (a subset of what that parse and [`port_is_valid`] accept). One pass
/// over the name, a table lookup per byte: this runs for every request.
fn is_plain_host(host: &[u8]) -> bool {
    let name_len = host
        .iter()
        .position(|&b| !NAME_BYTE[usize::from(b)])
        .unwrap_or(host.len());
    let (name, rest) = host.split_at(name_len);
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => {
            (1..=5).contains(&port.len())
                && port.iter().all(u8::is_ascii_digit)
                && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65_535
        }
        _ => false,
    };
    !name.is_empty() && port_ok
}

/// The bytes of a plain host name: ASCII letters and digits, `.` and `-`.
static NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
        b += 1;
    }
    table
};

/// `Authority` accepts any text after the last `:`; a Host port must be empty or a number up to 65535.
fn port_is_valid(host: &[u8]) -> bool {
    let after_literal = host.iter().rposition(|b| *b == b']').map_or(0, |i| i + 1);
    let rest = &host[after_literal..];
    match rest.iter().rposition(|b| *b == b':') {
        Some(colon) => {
            let port = &rest[colon + 1..];
            port.is_empty()
                || (port.iter().all(u8::is_ascii_digit)
                    && std::str::from_utf8(port).is_ok_and(|p| p.parse::<u16>().is_ok()))
        }
        None => true,
    }
}

async fn serve_config(listener: TcpListener, api: Arc<ConfigApi>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(CONFIG_HEADER_TIMEOUT);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let api = api.clone();
                    let svc = service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(req).await) }
                    });
                    let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the config listener");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn general(host: &[u8]) -> bool {
        !host.contains(&b'@') && Authority::try_from(host).is_ok() && port_is_valid(host)
    }

    #[test]
    fn the_plain_host_shortcut_accepts_only_what_the_general_check_accepts() {
        let plain: [&[u8]; 6] = [
            b"example.com",
            b"bench.example.com:8080",
            b"a-b.c:1",
            b"localhost:65535",
            b"127.0.0.1:80",
            b"EXAMPLE.com",
        ];
        for host in plain {
            assert!(is_plain_host(host), "{}", String::from_utf8_lossy(host));
            assert!(general(host), "{}", String::from_utf8_lossy(host));
        }
        let not_plain: [&[u8]; 12] = [
            b"",
            b":80",
            b"host:",
            b"host:65536",
            b"host:123456",
            b"host:8o",
            b"user@host",
            b"[::1]:80",
            b"a b",
            b"host:80:81",
            b"a_b.example",
            b"h\xc3\xa9.com",
        ];
        for host in not_plain {
            assert!(!is_plain_host(host), "{}", String::from_utf8_lossy(host));
        }
    }
}
