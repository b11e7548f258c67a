//! The HTTP/1.1 pool against real loopback servers: reuse, idle timeout, dead connections, a backend restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnelgate_route::{RouteTable, Upstream};
use tunnelgate_testkit::Backend;

use super::{SendError, UpstreamClient};
use crate::body;
use crate::metrics::BackendErrorReason;

fn upstream(url: &str) -> Arc<Upstream> {
    let config: tunnelgate_config::Config = serde_json::from_value(serde_json::json!({
        "version": 1,
        "rules": [{"backends": [{"url": url, "weight": 1}]}]
    }))
    .unwrap();
    let table = RouteTable::compile(&config).unwrap();
    Arc::new(table.upstreams().next().unwrap().clone())
}

async fn get(client: &UpstreamClient, path: &str) -> Result<(StatusCode, bytes::Bytes), SendError> {
    let req = Request::builder()
        .uri(path)
        .header("host", "pool.example.com")
        .body(body::empty())
        .unwrap();
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, bytes))
}

/// Answers every request on a connection with a keep-alive `200 ok`, then closes the connection after `close_after`
/// responses without announcing it (as a backend with a short keep-alive timeout does).
async fn closing_server(close_after: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_then_close(stream, close_after));
        }
    });
    (addr, accepted)
}

async fn serve_then_close(mut stream: TcpStream, close_after: usize) {
    let mut buf = Vec::new();
    let mut served = 0;
    while served < close_after {
        let mut chunk = [0u8; 1024];
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(reply).await.is_err() {
                return;
            }
            served += 1;
        }
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let backend = Backend::start("pool").await;
    let client = UpstreamClient::new(upstream(&backend.url()));
    for i in 0..50 {
        let (status, _) = get(&client, &format!("/n/{i}")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(backend.requests(), 50);
    assert_eq!(
        backend.connections(),
        1,
        "every request after the first reused the connection"
    );
    assert_eq!(client.idle_connections(), 1);
}

#[tokio::test]
async fn concurrent_requests_open_connections_that_are_then_reused() {
    let backend = Backend::start("pool").await;
    let client = Arc::new(UpstreamClient::new(upstream(&backend.url())));
    for _round in 0..3 {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { get(&client, &format!("/c/{i}")).await.unwrap().0 })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
    }
    assert_eq!(backend.requests(), 24);
    let opened = backend.connections();
    assert!(
        opened <= 8,
        "3 rounds of 8 concurrent requests opened {opened} connections"
    );
    assert_eq!(client.idle_connections(), opened);
}

#[tokio::test]
async fn requests_with_bodies_reuse_the_connection_too() {
    let backend = Backend::start("pool").await;
    let client = UpstreamClient::new(upstream(&backend.url()));
    for i in 0..20 {
        let req = Request::builder()
            .method("POST")
            .uri(format!("/p/{i}"))
            .header("host", "pool.example.com")
            .body(body::full(vec![b'x'; 1000 + i]))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(backend.requests(), 20);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn a_response_announcing_close_does_not_return_its_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let reply = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
                let _ = stream.write_all(reply).await;
                // Held open: the pool must not wait for the close to drop the connection.
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let client = UpstreamClient::new(upstream(&format!("http://{addr}")));
    let (status, bytes) = get(&client, "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&bytes[..], b"ok");
    assert_eq!(client.idle_connections(), 0);
}

#[tokio::test]
async fn a_response_dropped_after_its_head_keeps_the_connection_when_its_body_was_buffered() {
    let (addr, accepted) = closing_server(usize::MAX).await;
    let client = UpstreamClient::new(upstream(&format!("http://{addr}")));
    for _ in 0..5 {
        let req = Request::builder()
            .uri("/")
            .header("host", "pool.example.com")
            .body(body::empty())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // The client went away: the body is never read by anyone.
        drop(resp);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the two-byte body came with the head every time"
    );
    assert_eq!(client.idle_connections(), 1);
}

#[tokio::test]
async fn a_response_dropped_mid_body_closes_the_connection() {
    let backend = Backend::start("pool").await;
    let client = UpstreamClient::new(upstream(&backend.url()));
    // `/stream/N` sends N bytes in 64 KiB chunks; dropped after the head, most of it is still unread.
    let req = Request::builder()
        .uri("/stream/20000000")
        .header("host", "pool.example.com")
        .body(body::empty())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    drop(resp);
    assert_eq!(client.idle_connections(), 0);
    assert_eq!(get(&client, "/").await.unwrap().0, StatusCode::OK);
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let backend = Backend::start("pool").await;
    let client = UpstreamClient::with_idle_timeout(upstream(&backend.url()), Duration::from_millis(200));
    get(&client, "/").await.unwrap();
    assert_eq!(client.idle_connections(), 1);
    assert_eq!(backend.open_connections(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (client.idle_connections() > 0 || backend.open_connections() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        client.idle_connections(),
        0,
        "the sweeper dropped the idle connection"
    );
    assert_eq!(backend.open_connections(), 0, "and the backend saw it close");
    // The pool still works afterwards, on a new connection.
    assert_eq!(get(&client, "/").await.unwrap().0, StatusCode::OK);
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn connections_the_backend_closed_are_discarded_not_used() {
    let (addr, accepted) = closing_server(1).await;
    let client = UpstreamClient::new(upstream(&format!("http://{addr}")));
    for i in 0..5 {
        let (status, bytes) = get(&client, "/").await.unwrap();
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(&bytes[..], b"ok");
        // Give the close time to arrive, so that the next checkout finds the connection dead.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5, "one connection per request");
    assert!(client.idle_connections() <= 1);
}

#[tokio::test]
async fn a_request_racing_the_backend_close_is_retried_on_a_new_connection() {
    // No pause between requests: the close may or may not have arrived when the next request checks out the
    // connection; either way every request must succeed.
    let (addr, accepted) = closing_server(2).await;
    let client = UpstreamClient::new(upstream(&format!("http://{addr}")));
    for i in 0..20 {
        let (status, _) = get(&client, "/")
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, StatusCode::OK);
    }
    assert!(accepted.load(Ordering::SeqCst) >= 10);
}

/// A keep-alive server whose connections all close when its task is aborted (a process that went down).
fn killable_server(listener: TcpListener, accepted: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            connections.spawn(serve_then_close(stream, usize::MAX));
        }
    })
}

#[tokio::test]
async fn the_pool_recovers_after_the_backend_restarts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = Arc::new(AtomicUsize::new(0));
    let server = killable_server(listener, first.clone());
    let client = UpstreamClient::new(upstream(&format!("http://{addr}")));
    for _ in 0..5 {
        assert_eq!(get(&client, "/").await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(first.load(Ordering::SeqCst), 1);
    assert_eq!(client.idle_connections(), 1);
    server.abort();
    let _ = server.await;
    // Down: the pooled connection is found closed and the dial is refused.
    for _ in 0..3 {
        let err = get(&client, "/").await.unwrap_err();
        assert_eq!(err.reason(), BackendErrorReason::Dial, "{err}");
    }
    assert_eq!(client.idle_connections(), 0);
    let listener = TcpListener::bind(addr).await.unwrap();
    let second = Arc::new(AtomicUsize::new(0));
    let _server = killable_server(listener, second.clone());
    for _ in 0..10 {
        assert_eq!(get(&client, "/").await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(
        second.load(Ordering::SeqCst),
        1,
        "one new connection, reused after the restart"
    );
}
