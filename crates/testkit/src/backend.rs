//! A real echo backend on loopback.
//!
//! Endpoints (any method, matched on the path the backend receives):
//! - default: 200 JSON [`Echo`] of what arrived (backend name, method, path, query, host, headers, body length
//!   and whether the body followed the pattern of [`crate::pattern_byte`]);
//! - `?delay=MS`: waits before answering (any path);
//! - `/stream/N`: streams N pattern bytes in 64 KiB chunks;
//! - `/status/N`: answers status N;
//! - `/trailers`: echoes the request trailers as response trailers, with body `trailers`;
//! - `/hop`: answers with hop-by-hop headers that a proxy must drop;
//! - `/sse`: sends a first event at once, a second one after `?gap=MS`, then ends;
//! - a WebSocket upgrade on any path: echoes every message.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, Infallible>;

/// Options of a backend.
#[derive(Clone, Default)]
pub struct BackendOptions {
    /// Serve TLS with this config (set its ALPN for h2).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bind this address instead of an ephemeral loopback port.
    pub addr: Option<SocketAddr>,
    /// Wait this long before answering any request.
    pub delay: Option<Duration>,
}

/// What a request looked like when it reached the backend.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body_len: u64,
}

/// A running backend. Stops when dropped.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    tls: bool,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The JSON body of the default endpoint.
#[derive(Debug, Clone)]
pub struct Echo(pub serde_json::Value);

#[derive(Clone)]
struct Shared {
    name: Arc<str>,
    delay: Option<Duration>,
    requests: Arc<AtomicUsize>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
}

impl Backend {
    /// Plain HTTP/1.1 + h2c backend on an ephemeral loopback port.
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, BackendOptions::default()).await
    }

    pub async fn start_with(name: &str, options: BackendOptions) -> Backend {
        let addr = options
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            name: Arc::from(name),
            delay: options.delay,
            requests: Arc::new(AtomicUsize::new(0)),
            recorded: Arc::new(Mutex::new(Vec::new())),
        };
        let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let conns = connections.clone();
        let open = Arc::new(AtomicUsize::new(0));
        let open_count = open.clone();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                open_count.fetch_add(1, Ordering::SeqCst);
                let shared = s.clone();
                let tls = tls.clone();
                let open_count = open_count.clone();
                tokio::spawn(async move {
                    let _open = OpenConnection(open_count);
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            tls: options.tls.is_some(),
            connections,
            open,
            requests: shared.requests,
            recorded: shared.recorded,
            task,
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// TCP connections currently open.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests answered so far (WebSocket upgrades included).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Every request seen, in arrival order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("recorded").clone()
    }

    /// Waits until at least `n` requests arrived, or `limit` passes. Returns the count.
    pub async fn wait_requests(&self, n: usize, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        while self.requests() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.requests()
    }
}

/// Decrements the open-connection count when a connection task ends.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub fn parse(body: &[u8]) -> Echo {
        Echo(serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "backend echo is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        }))
    }
    pub fn backend(&self) -> &str {
        self.0["backend"].as_str().unwrap_or("")
    }
    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or("")
    }
    pub fn query(&self) -> Option<&str> {
        self.0["query"].as_str()
    }
    pub fn method(&self) -> &str {
        self.0["method"].as_str().unwrap_or("")
    }
    pub fn host(&self) -> &str {
        self.0["host"].as_str().unwrap_or("")
    }
    pub fn version(&self) -> &str {
        self.0["version"].as_str().unwrap_or("")
    }
    pub fn body_len(&self) -> u64 {
        self.0["body_len"].as_u64().unwrap_or(0)
    }
    pub fn body_pattern_ok(&self) -> bool {
        self.0["body_pattern_ok"].as_bool().unwrap_or(false)
    }
    /// All values of a header (lowercase name), joined with `,`, or `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.0["headers"].get(name)?.as_array()?;
        Some(
            values
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

async fn handle(shared: Shared, mut req: Request<Incoming>) -> Response<Body> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(delay) = shared.delay {
        tokio::time::sleep(delay).await;
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Some(ms) = query_value(&query, "delay").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
    {
        return websocket(&shared, &mut req);
    }
    let path = req.uri().path().to_owned();
    if let Some(n) = path.strip_prefix("/stream/").and_then(|n| n.parse::<u64>().ok()) {
        record(&shared, &req, 0);
        return stream_response(n);
    }
    if let Some(code) = path.strip_prefix("/status/").and_then(|n| n.parse::<u16>().ok()) {
        record(&shared, &req, 0);
        let mut resp = Response::new(full(format!("status {code}")));
        *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return resp;
    }
    if path == "/sse" {
        record(&shared, &req, 0);
        let gap = query_value(&query, "gap")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: one\n\n"))))
                .await;
            tokio::time::sleep(Duration::from_millis(gap)).await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: two\n\n"))))
                .await;
        });
        let stream = tokio_stream_from(rx);
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/event-stream"));
        return resp;
    }
    if path == "/hop" {
        record(&shared, &req, 0);
        let mut resp = Response::new(full("hop"));
        let h = resp.headers_mut();
        h.insert("connection", HeaderValue::from_static("x-hop-secret"));
        h.insert("x-hop-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        return resp;
    }

    let (parts, mut body) = req.into_parts();
    let mut body_len = 0u64;
    let mut pattern_ok = true;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        match frame.into_data() {
            Ok(data) => {
                for (k, b) in data.iter().enumerate() {
                    if *b != crate::pattern_byte(body_len + k as u64) {
                        pattern_ok = false;
                    }
                }
                body_len += data.len() as u64;
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body_len,
    };
    shared.recorded.lock().expect("recorded").push(rec);

    if path == "/trailers" {
        let mut out = trailers.unwrap_or_default();
        out.insert("x-backend-trailer", HeaderValue::from_static("done"));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"trailers"))),
            Ok(Frame::trailers(out)),
        ];
        let stream = futures::stream::iter(frames);
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        // HTTP/1.1 only carries trailer fields that were declared up front.
        resp.headers_mut().insert(
            "trailer",
            HeaderValue::from_static("x-checksum, x-backend-trailer"),
        );
        return resp;
    }

    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let entry = headers
            .entry(name.as_str().to_owned())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(a) = entry {
            a.push(serde_json::Value::String(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get("host")
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let echo = serde_json::json!({
        "backend": &*shared.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "host": host,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
        "body_pattern_ok": pattern_ok,
    });
    let mut resp = Response::new(full(echo.to_string()));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        "x-backend",
        HeaderValue::from_str(&shared.name).unwrap_or(HeaderValue::from_static("?")),
    );
    resp
}

fn record(shared: &Shared, req: &Request<Incoming>, body_len: u64) {
    shared.recorded.lock().expect("recorded").push(Recorded {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        headers: req.headers().clone(),
        body_len,
    });
}

fn websocket(shared: &Shared, req: &mut Request<Incoming>) -> Response<Body> {
    record(shared, req, 0);
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut resp = Response::new(full("missing key"));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on = hyper::upgrade::on(req);
    let name = shared.name.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else { return };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if msg.is_text() || msg.is_binary() {
                let reply = match msg {
                    tokio_tungstenite::tungstenite::Message::Text(t) => {
                        tokio_tungstenite::tungstenite::Message::text(format!("{name}: {}", t.as_str()))
                    }
                    other => other,
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

fn stream_response(total: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let stream = futures::stream::unfold(0u64, move |offset| async move {
        if offset >= total {
            return None;
        }
        let n = CHUNK.min(total - offset);
        let mut buf = vec![0u8; n as usize];
        crate::fill_pattern(&mut buf, offset);
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(buf))), offset + n))
    });
    Response::new(BodyExt::boxed(StreamBody::new(stream)))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn full(s: impl Into<Bytes>) -> Body {
    BodyExt::boxed(http_body_util::Full::new(s.into()))
}

fn empty() -> Body {
    BodyExt::boxed(http_body_util::Empty::new())
}
