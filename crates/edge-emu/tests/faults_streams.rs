//! Tunnel faults against the real connector, driven by the emulator's scripted faults: a stream with an unknown
//! signature, an edge that cuts a response mid-body, an edge that closes the whole connection. Only the affected
//! stream fails, the process does not panic, and a closed connection comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use serde_json::json;
use support::*;
use tunnelgate_edge_emu::FaultRule;
use tunnelgate_tunnel::ProtocolChoice;
use tunnelgate_tunnel::origin::empty_body;

/// GET through the eyeball listener; `Err` when the connection or the body fails.
async fn try_get(c: &Client, addr: SocketAddr, path: &str) -> Result<(u16, usize), String> {
    let req = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", "app.example.com")
        .body(empty_body())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), c.request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
        .await
        .map_err(|_| "body timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes().len()))
}

async fn all_hello_ok(c: &Client, addr: SocketAddr, n: usize) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let c = c.clone();
        set.spawn(async move { try_get(&c, addr, "/hello").await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap(), Ok((200, 5)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_an_unknown_signature_fails_alone() {
    let s = setup(ProtocolChoice::Quic, 1).await;
    let c = client();
    let http = s.emulator.http_addr;
    s.emulator.add_fault(
        FaultRule::from_json(
            &json!({"trigger": "request", "pathPrefix": "/bad", "action": {"bad_signature": true}}),
        )
        .unwrap(),
    );
    // Bad streams interleaved with good ones on the same connection.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let c = c.clone();
        let path = if i % 4 == 0 { "/bad" } else { "/hello" };
        set.spawn(async move { (path, try_get(&c, http, path).await) });
    }
    while let Some(r) = set.join_next().await {
        let (path, result) = r.unwrap();
        if path == "/bad" {
            assert!(
                !matches!(result, Ok((200, _))),
                "a stream with a bad signature was served: {result:?}"
            );
        } else {
            assert_eq!(result, Ok((200, 5)), "{path}");
        }
    }
    assert_eq!(
        s.emulator.registered(),
        1,
        "the connection survived the bad streams"
    );
    all_hello_ok(&c, http, 10).await;
    s.tunnel.shutdown().await;
    s.emulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cutting_a_response_mid_body_fails_only_that_request() {
    let s = setup(ProtocolChoice::Quic, 1).await;
    let c = client();
    let http = s.emulator.http_addr;
    s.emulator.add_fault(
        FaultRule::from_json(
            &json!({"trigger": "request", "pathPrefix": "/big", "action": {"reset_after_bytes": 100_000}}),
        )
        .unwrap(),
    );
    let n = 4 * 1024 * 1024;
    for _ in 0..3 {
        let result = try_get(&c, http, &format!("/big?n={n}")).await;
        assert!(
            !matches!(result, Ok((200, len)) if len == n),
            "a cut response arrived complete: {result:?}"
        );
        all_hello_ok(&c, http, 5).await;
    }
    assert_eq!(s.emulator.registered(), 1);
    s.tunnel.shutdown().await;
    s.emulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_closing_the_connection_is_followed_by_a_reconnect() {
    let s = setup(ProtocolChoice::Quic, 1).await;
    let c = client();
    let http = s.emulator.http_addr;
    all_hello_ok(&c, http, 5).await;
    s.emulator.add_fault(
        FaultRule::from_json(
            &json!({"trigger": "request", "pathPrefix": "/close", "action": {"close_connection": true}, "times": 1}),
        )
        .unwrap(),
    );
    let _ = try_get(&c, http, "/close").await;
    // Back within the reconnect backoff (first retry waits under 2 s), then serving again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if matches!(try_get(&c, http, "/hello").await, Ok((200, 5))) && s.emulator.registered() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reconnect within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    all_hello_ok(&c, http, 10).await;
    s.tunnel.shutdown().await;
    s.emulator.stop().await;
}
