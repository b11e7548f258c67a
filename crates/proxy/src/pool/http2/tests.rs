//! The HTTP/2 pool against real loopback servers: reuse, the connection bound, idle timeout, a backend restart.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http2 as server;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tunnelgate_route::{RouteTable, Upstream};
use tunnelgate_testkit::Backend;

use super::MAX_CONNECTIONS;
use crate::body;
use crate::metrics::BackendErrorReason;
use crate::pool::{SendError, UpstreamClient};

fn h2c_upstream(url: &str) -> Arc<Upstream> {
    let config: tunnelgate_config::Config = serde_json::from_value(serde_json::json!({
        "version": 1,
        "rules": [{"backends": [{"url": url, "weight": 1, "protocol": "h2c"}]}]
    }))
    .unwrap();
    let table = RouteTable::compile(&config).unwrap();
    Arc::new(table.upstreams().next().unwrap().clone())
}

async fn get(client: &UpstreamClient, addr: SocketAddr) -> Result<StatusCode, SendError> {
    let req = Request::builder()
        .uri(format!("http://{addr}/"))
        .body(body::empty())
        .unwrap();
    let resp = client.request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    Ok(status)
}

/// An h2c server advertising `max_streams` whose handler answers once it got a permit from `gate`; the task ends
/// (closing every connection) when aborted.
fn gated_server(
    listener: TcpListener,
    max_streams: u32,
    gate: Arc<Semaphore>,
    accepted: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            connections.spawn(async move {
                let service = service_fn(move |_req| {
                    let gate = gate.clone();
                    async move {
                        let _permit = gate.acquire().await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = server::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(max_streams)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let backend = Backend::start("h2").await;
    let client = UpstreamClient::new(h2c_upstream(&backend.url()));
    for _ in 0..20 {
        assert_eq!(get(&client, backend.addr).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(backend.connections(), 1);
    assert_eq!(client.http2_connections(), 1);
}

#[tokio::test]
async fn the_pool_stops_opening_connections_at_its_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let _server = gated_server(listener, 1, gate.clone(), accepted.clone());
    let client = Arc::new(UpstreamClient::new(h2c_upstream(&format!("http://{addr}"))));
    let requests = MAX_CONNECTIONS + 8;
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, addr).await.unwrap() })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) < MAX_CONNECTIONS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Time for the requests beyond the bound to dial, if the bound did not hold.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), MAX_CONNECTIONS);
    assert_eq!(client.http2_connections(), MAX_CONNECTIONS);
    // The requests over the bound wait for a stream on one of them, and get it.
    gate.add_permits(requests);
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), MAX_CONNECTIONS);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let backend = Backend::start("h2").await;
    let client = UpstreamClient::with_idle_timeout(h2c_upstream(&backend.url()), Duration::from_millis(200));
    assert_eq!(get(&client, backend.addr).await.unwrap(), StatusCode::OK);
    assert_eq!(client.http2_connections(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (client.http2_connections() > 0 || backend.open_connections() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.http2_connections(), 0, "the idle connection was retired");
    assert_eq!(backend.open_connections(), 0, "and the backend saw it close");
    assert_eq!(get(&client, backend.addr).await.unwrap(), StatusCode::OK);
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn the_pool_recovers_after_the_backend_restarts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let first = Arc::new(AtomicUsize::new(0));
    let server = gated_server(listener, 100, open.clone(), first.clone());
    let client = UpstreamClient::new(h2c_upstream(&format!("http://{addr}")));
    for _ in 0..5 {
        assert_eq!(get(&client, addr).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(first.load(Ordering::SeqCst), 1);
    server.abort();
    let _ = server.await;
    // Down: the closed connection is dropped and the dial is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.http2_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.http2_connections(), 0);
    let err = get(&client, addr).await.unwrap_err();
    assert_eq!(err.reason(), BackendErrorReason::Dial, "{err}");
    let listener = TcpListener::bind(addr).await.unwrap();
    let second = Arc::new(AtomicUsize::new(0));
    let _server = gated_server(listener, 100, open, second.clone());
    for _ in 0..5 {
        assert_eq!(get(&client, addr).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(second.load(Ordering::SeqCst), 1, "one new connection, reused");
}

#[tokio::test]
async fn dropping_the_pool_closes_its_connections_after_their_last_stream() {
    let backend = Backend::start("h2").await;
    let client = UpstreamClient::new(h2c_upstream(&backend.url()));
    let req = Request::builder()
        .uri(format!("http://{}/stream/20000000", backend.addr))
        .body(body::empty())
        .unwrap();
    let streaming = client.request(req).await.unwrap();
    assert_eq!(get(&client, backend.addr).await.unwrap(), StatusCode::OK);
    // The upstream left the table while a response was still streaming (more than the 5 MB connection window).
    drop(client);
    let body = streaming.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 20_000_000, "the stream in flight finished");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while backend.open_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(backend.open_connections(), 0, "then the connection closed");
}
