//! HTTP/2 backend pools (routing.md §11): requests multiplex on one connection while the backend's
//! `MAX_CONCURRENT_STREAMS` leaves room, and another connection is opened when every connection is at the limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use harness::Proxy;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How long a held request waits for the others before it gives up with a 500, so that a proxy that queues
/// requests behind each other fails the test instead of hanging it.
const GATHER_WAIT: Duration = Duration::from_secs(5);

/// An h2c backend that advertises `max_streams` and holds every response until `gather` requests are in flight
/// at the same time (then answers 200), or answers 500 after [`GATHER_WAIT`].
struct GatheringBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// The most requests that were in flight at once.
    peak: Arc<AtomicUsize>,
}

struct Gather {
    want: usize,
    in_flight: AtomicUsize,
    peak: Arc<AtomicUsize>,
    arrived: Notify,
}

impl GatheringBackend {
    async fn start(max_streams: u32, gather: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(Gather {
            want: gather,
            in_flight: AtomicUsize::new(0),
            peak: peak.clone(),
            arrived: Notify::new(),
        });
        let accepted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(max_streams)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            connections,
            peak,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn handle(state: Arc<Gather>, _req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak.fetch_max(now, Ordering::SeqCst);
    state.arrived.notify_waiters();
    let gathered = tokio::time::timeout(GATHER_WAIT, async {
        loop {
            let arrived = state.arrived.notified();
            if state.peak.load(Ordering::SeqCst) >= state.want {
                return;
            }
            arrived.await;
        }
    })
    .await
    .is_ok();
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let status = if gathered {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"gathered")))
        .unwrap())
}

async fn h2c_route(proxy: &Proxy, backend: &GatheringBackend) {
    proxy
        .push(json!({"version": 1, "rules": [{"backends": [{"url": backend.url(), "weight": 1, "protocol": "h2c"}]}]}))
        .await;
}

/// Sends `n` GETs through the proxy at the same time and returns their statuses.
async fn concurrent_gets(proxy: &Proxy, n: usize) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = proxy.client.clone();
            let data = proxy.data;
            tokio::spawn(async move {
                client
                    .get(data, "h2.example.com", &format!("/r/{i}"))
                    .await
                    .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn a_backend_allowing_one_stream_gets_a_connection_per_concurrent_request() {
    let proxy = Proxy::start().await;
    let backend = GatheringBackend::start(1, 3).await;
    h2c_route(&proxy, &backend).await;
    let statuses = concurrent_gets(&proxy, 3).await;
    assert_eq!(
        statuses,
        vec![StatusCode::OK; 3],
        "all three were at the backend at once"
    );
    assert!(
        backend.connections() >= 3,
        "one stream per connection needs three connections, saw {}",
        backend.connections()
    );
}

#[tokio::test]
async fn a_second_connection_opens_when_the_first_is_at_the_stream_limit() {
    let proxy = Proxy::start().await;
    let backend = GatheringBackend::start(2, 4).await;
    h2c_route(&proxy, &backend).await;
    let statuses = concurrent_gets(&proxy, 4).await;
    assert_eq!(statuses, vec![StatusCode::OK; 4]);
    assert_eq!(backend.peak.load(Ordering::SeqCst), 4);
    assert!(
        backend.connections() >= 2,
        "two streams per connection need two connections for four requests, saw {}",
        backend.connections()
    );
    // Once the burst is over, its connections are reused: sequential requests (answered at once now that the
    // backend has seen four together) open none.
    let opened = backend.connections();
    for _ in 0..10 {
        assert_eq!(proxy.get("h2.example.com", "/").await.status, StatusCode::OK);
    }
    assert_eq!(backend.connections(), opened);
}

#[tokio::test]
async fn concurrent_requests_under_the_limit_share_one_connection() {
    let proxy = Proxy::start().await;
    let backend = GatheringBackend::start(100, 8).await;
    h2c_route(&proxy, &backend).await;
    let statuses = concurrent_gets(&proxy, 8).await;
    assert_eq!(statuses, vec![StatusCode::OK; 8]);
    assert_eq!(
        backend.connections(),
        1,
        "eight streams fit on one connection whose peer allows 100, even when they arrive before its SETTINGS"
    );
}
