//! Support for the hardening tests: raw-socket clients that control every byte, and backends that can be killed
//! (every connection closed), restarted on the same port, or scripted to misbehave.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What came back on a raw connection.
#[derive(Debug)]
pub struct RawReply {
    pub bytes: Vec<u8>,
    /// The peer closed the connection (EOF or reset) before the read deadline.
    pub closed: bool,
}

impl RawReply {
    /// Status code of the first response, if any.
    pub fn status(&self) -> Option<u16> {
        status_of(&self.bytes)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Number of responses in the bytes (counts status lines).
    pub fn responses(&self) -> usize {
        self.text().matches("HTTP/1.1 ").count()
    }
}

/// Status code of an HTTP/1.x status line at the start of `bytes`.
pub fn status_of(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.trim().parse().ok()
}

/// Writes `request` on a fresh connection and reads until the peer closes or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the proxy");
    // A peer that rejects early may reset before everything is written; what it answered still counts.
    let _ = stream.write_all(request).await;
    read_until_close(&mut stream, limit).await
}

/// Reads until EOF, a reset, or `limit`.
pub async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> RawReply {
    let deadline = Instant::now() + limit;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return RawReply { bytes, closed: true },
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => return RawReply { bytes, closed: false },
        }
    }
}

/// Reads one response head (up to the blank line) and returns it, leaving the connection open.
pub async fn read_head(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// Reads exactly `n` bytes (a body of known length).
pub async fn read_exact_within(stream: &mut TcpStream, n: usize, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    match tokio::time::timeout(limit, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

/// An HTTP/1.1 backend whose connections can all be cut at once, and which can come back on the same port.
pub struct KillableBackend {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    tasks: JoinSet<()>,
}

impl KillableBackend {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> KillableBackend {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr` (retrying briefly while the port is released).
    pub async fn start_on(addr: SocketAddr) -> KillableBackend {
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(addr).await {
                Ok(listener) => return Self::serve(listener),
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("cannot bind backend on {addr}: {last:?}");
    }

    fn serve(listener: TcpListener) -> KillableBackend {
        let addr = listener.local_addr().expect("backend addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let counter = requests.clone();
        tasks.spawn(async move {
            // Connections live in this inner set, so aborting the accept task drops (closes) all of them.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"alive")))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        KillableBackend {
            addr,
            requests,
            tasks,
        }
    }

    /// Closes the listener and every open connection.
    pub async fn kill(mut self) -> SocketAddr {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A backend that runs `script` on every accepted raw connection (after nothing has been read).
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedBackend {
    pub async fn start<F, Fut>(script: F) -> ScriptedBackend
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind scripted backend");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let script = Arc::new(script);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                conns.spawn(async move { script(stream).await });
                while conns.try_join_next().is_some() {}
            }
        });
        ScriptedBackend {
            addr,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a request head from a raw backend connection.
pub async fn read_request_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    read_head(stream, Duration::from_secs(10)).await
}

/// A loopback port that refuses connections: bound once, then released.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}
