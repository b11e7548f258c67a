//! Test harness: a real loopback backend, a small origin that forwards to it, the emulator and a connector.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelgate_edge_emu::{Emulator, EmulatorConfig};
use tunnelgate_tunnel::origin::{
    BoxError, BoxFuture, Origin, OriginBody, StreamInfo, TunnelUpgrade, full_body,
};
use tunnelgate_tunnel::{EdgeSource, ProtocolChoice, Tunnel, TunnelConfig, TunnelMetrics, TunnelToken};

pub const PATTERN: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A loopback HTTP/1.1 backend with a few routes.
pub async fn start_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(backend);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn pattern_body(n: usize) -> OriginBody {
    let chunks = (0..n).step_by(16 * 1024).map(move |start| {
        let len = (16 * 1024).min(n - start);
        let bytes: Vec<u8> = (start..start + len).map(|i| PATTERN[i % PATTERN.len()]).collect();
        Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(bytes)))
    });
    http_body_util::StreamBody::new(futures::stream::iter(chunks)).boxed_unsync()
}

async fn backend(
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<OriginBody>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/hello" => {
            let host = req
                .headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let ray = req.headers().get("cf-ray").cloned();
            Response::builder()
                .header("x-multi", "a")
                .header("x-multi", "b")
                .header("x-seen-host", host)
                .header("x-seen-cf-ray", ray.is_some().to_string())
                .header("x-cf-ray", ray.unwrap_or(http::HeaderValue::from_static("")))
                .header("content-type", "text/plain")
                .body(full_body("hello"))
                .unwrap()
        }
        "/echo" => {
            let body = req
                .into_body()
                .map_err(|e| Box::new(e) as BoxError)
                .boxed_unsync();
            Response::builder().status(201).body(body).unwrap()
        }
        "/big" => {
            let n: usize = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1024);
            Response::builder().body(pattern_body(n)).unwrap()
        }
        "/redirect" => Response::builder()
            .status(302)
            .header("location", "/hello")
            .body(full_body(""))
            .unwrap(),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Response::builder().body(full_body("slow done")).unwrap()
        }
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = hyper_util::rt::TokioIo::new(up);
                    let mut buf = [0u8; 4096];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", "test-accept")
                .body(full_body(""))
                .unwrap()
        }
        _ => Response::builder()
            .status(404)
            .body(full_body("not found"))
            .unwrap(),
    };
    Ok(resp)
}

/// Forwards tunnel requests to the backend over a fresh HTTP/1.1 connection each.
pub struct ForwardingOrigin {
    pub backend: SocketAddr,
}

impl Origin for ForwardingOrigin {
    fn serve(&self, mut req: Request<OriginBody>, _info: StreamInfo) -> BoxFuture<Response<OriginBody>> {
        let backend = self.backend;
        Box::pin(async move {
            let upgrade = req.extensions_mut().remove::<TunnelUpgrade>();
            if std::env::var_os("PROBE").is_some() {
                eprintln!(
                    "origin got {:?} {:?} {:?} end={}",
                    req.method(),
                    req.version(),
                    req.headers(),
                    http_body::Body::is_end_stream(req.body())
                );
            }
            let result = async {
                let tcp = tokio::net::TcpStream::connect(backend).await?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                let mut resp = sender.send_request(req).await?;
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(up) = upgrade.and_then(|u| u.take())
                {
                    let backend_up = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        if let (Ok(b), Ok(c)) = (backend_up.await, up.await) {
                            let mut b = hyper_util::rt::TokioIo::new(b);
                            let mut c = hyper_util::rt::TokioIo::new(c);
                            let _ = tokio::io::copy_bidirectional(&mut b, &mut c).await;
                        }
                    });
                }
                Ok::<_, BoxError>(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
            };
            match result.await {
                Ok(r) => r,
                Err(e) => Response::builder()
                    .status(502)
                    .body(full_body(format!("origin error: {e}")))
                    .unwrap(),
            }
        })
    }
}

pub struct Setup {
    pub emulator: Emulator,
    pub tunnel: Tunnel,
    pub backend: SocketAddr,
    pub ca_file: std::path::PathBuf,
    pub metrics: TunnelMetrics,
}

pub fn write_ca(emulator: &Emulator, tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tg-emu-{}-{tag}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, emulator.ca_pem()).unwrap();
    path
}

pub fn tunnel_config(
    emulator: &Emulator,
    ca_file: &std::path::Path,
    protocol: ProtocolChoice,
    ha: u8,
) -> TunnelConfig {
    let mut cfg = TunnelConfig::new(TunnelToken::generate());
    cfg.edge = EdgeSource::List(emulator.edge_addrs.iter().map(|a| a.to_string()).collect());
    cfg.ca_file = Some(ca_file.to_path_buf());
    cfg.protocol = protocol;
    cfg.ha_connections = ha;
    cfg.grace_period = Duration::from_secs(3);
    cfg.stagger = Duration::from_millis(100);
    cfg
}

pub async fn emulator(listeners: usize, script: Vec<tunnelgate_edge_emu::FaultRule>) -> Emulator {
    seeded_emulator(listeners, script, None).await
}

pub async fn seeded_emulator(
    listeners: usize,
    script: Vec<tunnelgate_edge_emu::FaultRule>,
    seed: Option<u64>,
) -> Emulator {
    let config = EmulatorConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap(); listeners],
        script,
        seed,
        ..EmulatorConfig::default()
    };
    Emulator::start(config).await.unwrap()
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TEST_LOG").unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn setup(protocol: ProtocolChoice, ha: u8) -> Setup {
    seeded_setup(protocol, ha, None).await
}

/// [`setup`] with the emulator's random choices seeded.
pub async fn seeded_setup(protocol: ProtocolChoice, ha: u8, seed: Option<u64>) -> Setup {
    init_logs();
    let backend = start_backend().await;
    let emulator = seeded_emulator(ha as usize, Vec::new(), seed).await;
    let ca_file = write_ca(&emulator, "setup");
    let metrics = TunnelMetrics::default();
    let tunnel = Tunnel::start(
        tunnel_config(&emulator, &ca_file, protocol, ha),
        Arc::new(ForwardingOrigin { backend }),
        metrics.clone(),
    )
    .unwrap();
    wait_until(Duration::from_secs(15), || emulator.registered() == ha as usize).await;
    Setup {
        emulator,
        tunnel,
        backend,
        ca_file,
        metrics,
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, OriginBody>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub async fn send(client: &Client, addr: SocketAddr, method: &str, path: &str, body: OriginBody) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", "app.example.com")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(client: &Client, addr: SocketAddr, path: &str) -> Reply {
    send(client, addr, "GET", path, tunnelgate_tunnel::origin::empty_body()).await
}

/// Sends `n` GETs at once through the eyeball listener; every one must answer 200.
pub async fn assert_concurrent_gets_ok(client: &Client, addr: SocketAddr, path: &str, n: usize) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (c, path) = (client.clone(), path.to_owned());
        set.spawn(async move { get(&c, addr, &path).await.status });
    }
    let mut ok = 0;
    while let Some(status) = set.join_next().await {
        assert_eq!(status.unwrap(), 200);
        ok += 1;
    }
    assert_eq!(ok, n);
}

pub fn full(b: impl Into<Bytes>) -> OriginBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| PATTERN[i % PATTERN.len()]).collect()
}

/// Streams `n` pattern bytes in 64 KiB chunks with no Content-Length (chunked on HTTP/1.1).
pub fn streamed(n: usize) -> OriginBody {
    pattern_body(n)
}

/// A raw WebSocket-style upgrade through the eyeball listener, then an echo of text and binary bytes.
pub async fn websocket_echo(addr: SocketAddr) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    while !resp.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(Duration::from_secs(10), tcp.read_u8())
            .await
            .unwrap()
            .unwrap();
        resp.push(b);
    }
    let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("sec-websocket-accept: test-accept"), "{text}");
    for msg in [&b"text frame"[..], &[0u8, 1, 2, 255, 254][..]] {
        tcp.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
}

/// Collects events already emitted or arriving within `limit` until `pred` matches one.
pub async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<serde_json::Value>,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    tokio::time::timeout(limit, async {
        loop {
            match rx.recv().await {
                Ok(v) if pred(&v) => return v,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("event not seen in time")
}
