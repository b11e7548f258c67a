//! Reconnects, registration errors, broken streams and graceful unregister.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::*;
use tunnelgate_edge_emu::{Emulator, EmulatorConfig, FaultRule};
use tunnelgate_tunnel::{ProtocolChoice, Tunnel, TunnelMetrics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_restart_reconnects_and_serves_within_5s() {
    for protocol in [ProtocolChoice::Quic, ProtocolChoice::Http2] {
        let s = setup(protocol, 1).await;
        let c = client();
        assert_eq!(get(&c, s.emulator.http_addr, "/hello").await.status, 200);
        let edge = s.emulator.edge_addrs.clone();
        let ca_key = s.emulator.ca_key_pem().to_string();
        s.emulator.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Same ports and CA key, so the connector's address list and trust roots still fit.
        let restarted = Emulator::start(EmulatorConfig {
            listen: edge,
            ca_key_pem: Some(ca_key),
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        let started = tokio::time::Instant::now();
        wait_until(Duration::from_secs(5), || restarted.registered() == 1).await;
        let r = get(&c, restarted.http_addr, "/hello").await;
        assert_eq!(r.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{protocol:?}: took {:?}",
            started.elapsed()
        );
        s.tunnel.shutdown().await;
        restarted.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_registration_error_is_retried_with_attempts_counted() {
    init_logs();
    let backend = start_backend().await;
    let rule = FaultRule::from_json(&json!({"trigger":"register","connIndex":0,"attempt":0,"action":{"retryable":"server busy","retryAfterMs":200},"times":1})).unwrap();
    let emulator = emulator(1, vec![rule]).await;
    let ca = write_ca(&emulator, "retry");
    let tunnel = Tunnel::start(
        tunnel_config(&emulator, &ca, ProtocolChoice::Quic, 1),
        Arc::new(ForwardingOrigin { backend }),
        TunnelMetrics::default(),
    )
    .unwrap();
    wait_until(Duration::from_secs(10), || emulator.registered() == 1).await;
    let state = emulator.state();
    let attempts: Vec<u64> = state["registrationAttempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["numPreviousAttempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [0, 1], "{state}");
    assert_eq!(get(&client(), emulator.http_addr, "/hello").await.status, 200);
    tunnel.shutdown().await;
    emulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_never_registers_and_never_exits() {
    init_logs();
    let backend = start_backend().await;
    let rule =
        FaultRule::from_json(&json!({"trigger":"register","action":{"permanent":"Unauthorized: nope"}}))
            .unwrap();
    let emulator = emulator(1, vec![rule]).await;
    let ca = write_ca(&emulator, "perm");
    let tunnel = Tunnel::start(
        tunnel_config(&emulator, &ca, ProtocolChoice::Quic, 1),
        Arc::new(ForwardingOrigin { backend }),
        TunnelMetrics::default(),
    )
    .unwrap();
    let mut events = emulator.events();
    wait_event(&mut events, Duration::from_secs(5), |e| {
        e["event"] == "fault_applied"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!*tunnel.ever_registered().borrow(), "must stay not ready");
    assert_eq!(get(&client(), emulator.http_addr, "/hello").await.status, 530);
    tunnel.abort().await;
    emulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_data_stream_fails_only_that_stream() {
    let s = setup(ProtocolChoice::Quic, 1).await;
    let rule = FaultRule::from_json(
        &json!({"trigger":"request","pathPrefix":"/hello","action":{"bad_signature":true},"times":1}),
    )
    .unwrap();
    s.emulator.add_fault(rule);
    let c = client();
    let http = s.emulator.http_addr;
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, http, "/slow").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bad = get(&c, http, "/hello").await;
    assert_eq!(bad.status, 502, "the broken stream fails");
    let r = slow.await.unwrap();
    assert_eq!(
        (r.status.as_u16(), &r.body[..]),
        (200, &b"slow done"[..]),
        "the in-flight stream is unaffected"
    );
    assert_eq!(
        get(&c, http, "/hello").await.status,
        200,
        "the connection still serves"
    );
    assert_eq!(s.emulator.registered(), 1);
    s.tunnel.shutdown().await;
    s.emulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_stream_variants_are_accepted() {
    let s = setup(ProtocolChoice::Quic, 1).await;
    for action in [
        json!({"bare_path_dest":true}),
        json!({"unknown_metadata_key":true}),
        json!({"keep_hop_headers":true}),
    ] {
        s.emulator.add_fault(
            FaultRule::from_json(&json!({"trigger":"request","action":action,"times":1})).unwrap(),
        );
        assert_eq!(
            get(&client(), s.emulator.http_addr, "/hello").await.status,
            200,
            "{action}"
        );
    }
    s.emulator.add_fault(
        FaultRule::from_json(
            &json!({"trigger":"request","pathPrefix":"/ws","action":{"keep_hop_headers":true},"times":1}),
        )
        .unwrap(),
    );
    websocket_echo(s.emulator.http_addr).await;
    s.tunnel.shutdown().await;
    s.emulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_unregisters_every_connection_and_drains_in_flight_requests() {
    for protocol in [ProtocolChoice::Quic, ProtocolChoice::Http2] {
        let s = setup(protocol, 2).await;
        let mut events = s.emulator.events();
        let c = client();
        let http = s.emulator.http_addr;
        let in_flight = {
            let c = c.clone();
            tokio::spawn(async move { get(&c, http, "/slow").await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let shutdown = tokio::spawn(async move {
            s.tunnel.shutdown().await;
        });
        let mut unregistered = 0;
        while unregistered < 2 {
            wait_event(&mut events, Duration::from_secs(5), |e| {
                e["event"] == "unregistered"
            })
            .await;
            unregistered += 1;
        }
        let r = in_flight.await.unwrap();
        assert_eq!(
            r.status, 200,
            "{protocol:?}: in-flight request finishes during the drain"
        );
        assert_eq!(&r.body[..], b"slow done");
        tokio::time::timeout(Duration::from_secs(10), shutdown)
            .await
            .unwrap()
            .unwrap();
        // After unregister the edge routes nothing more to the connector.
        assert_eq!(get(&c, http, "/hello").await.status, 530);
        s.emulator.stop().await;
    }
}
