//! Emulator ⇄ connector ⇄ origin ⇄ loopback backend, over QUIC and over HTTP/2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::*;
use tunnelgate_tunnel::ProtocolChoice;

async fn traffic(protocol: ProtocolChoice) {
    let s = setup(protocol, 2).await;
    let c = client();
    let http = s.emulator.http_addr;

    let r = get(&c, http, "/hello").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello");
    let multi: Vec<_> = r
        .headers
        .get_all("x-multi")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(r.headers.get("x-seen-host").unwrap(), "app.example.com");
    assert_eq!(r.headers.get("x-seen-cf-ray").unwrap(), "true");

    // 10 MB streamed up (chunked, no length) and echoed back down.
    let n = 10 * 1024 * 1024;
    let r = send(&c, http, "POST", "/echo", streamed(n)).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body.len(), n);
    assert!(r.body[..] == pattern(n)[..], "echoed body differs");
    // 10 MB down.
    let r = get(&c, http, &format!("/big?n={n}")).await;
    assert_eq!(r.body.len(), n);
    assert!(r.body[..] == pattern(n)[..]);

    let r = get(&c, http, "/redirect").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers.get("location").unwrap(), "/hello");
    let r = get(&c, http, "/missing").await;
    assert_eq!(r.status, 404);
    assert_eq!(&r.body[..], b"not found");

    websocket_echo(http).await;

    assert_concurrent_gets_ok(&c, http, "/hello", 50).await;
    let state = s.emulator.state();
    let total: u64 = state["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["requests"].as_u64().unwrap())
        .sum();
    assert!(total >= 56, "{state}");
    let label = if protocol == ProtocolChoice::Http2 {
        "http2"
    } else {
        "quic"
    };
    assert_eq!(s.metrics.connections(label), 2);
    s.tunnel.shutdown().await;
    s.emulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_end_to_end() {
    traffic(ProtocolChoice::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_end_to_end() {
    traffic(ProtocolChoice::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_fields_match_the_spec() {
    let s = setup(ProtocolChoice::Quic, 2).await;
    let state = s.emulator.state();
    let conns = state["connections"].as_array().unwrap();
    let mut indexes: Vec<u64> = conns.iter().map(|c| c["connIndex"].as_u64().unwrap()).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1]);
    let c0 = &conns[0];
    assert_eq!(c0["connIndex"], 0, "connection 0 registers first");
    assert_eq!(
        c0["features"],
        serde_json::json!([
            "serialized_headers",
            "support_quic_eof",
            "allow_remote_config",
            "support_datagram_v2"
        ])
    );
    assert!(c0["version"].as_str().unwrap().starts_with("tunnelgate-"));
    assert_eq!(
        c0["arch"].as_str().unwrap(),
        format!(
            "linux_{}",
            if cfg!(target_arch = "x86_64") {
                "amd64"
            } else {
                "arm64"
            }
        )
    );
    assert_eq!(c0["numPreviousAttempts"], 0);
    assert_eq!(
        conns[0]["clientId"], conns[1]["clientId"],
        "one connector id per process"
    );
    assert_ne!(
        conns[0]["edge"], conns[1]["edge"],
        "each connection uses its own edge address"
    );
    // Connection 0 sends the informational local config.
    assert_eq!(
        state["localConfigs"][0]["config"]["ingress"][0]["service"],
        "http_status:404"
    );
    s.tunnel.shutdown().await;
    s.emulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_configuration_and_udp_sessions() {
    for protocol in [ProtocolChoice::Quic, ProtocolChoice::Http2] {
        let s = setup(protocol, 1).await;
        let admin = s.emulator.admin_addr;
        let c = client();
        let body = serde_json::json!({"connIndex": 0, "version": 7, "config": {"ingress": []}}).to_string();
        let r = send(&c, admin, "POST", "/rpc/update-configuration", full(body)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let latest = v
            .get("latestAppliedVersion")
            .or_else(|| v.get("lastAppliedVersion"))
            .unwrap();
        assert_eq!(latest, 7, "{v}");
        // A lower version does not lower what we report.
        let body = serde_json::json!({"connIndex": 0, "version": 3, "config": {}}).to_string();
        let r = send(&c, admin, "POST", "/rpc/update-configuration", full(body)).await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v.get("latestAppliedVersion")
                .or_else(|| v.get("lastAppliedVersion"))
                .unwrap(),
            7
        );
        if protocol == ProtocolChoice::Quic {
            let r = send(
                &c,
                admin,
                "POST",
                "/rpc/register-udp-session",
                full(r#"{"connIndex":0}"#),
            )
            .await;
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["err"], "UDP sessions are not supported", "{v}");
        }
        // Routing still works afterwards.
        assert_eq!(get(&c, s.emulator.http_addr, "/hello").await.status, 200);
        s.tunnel.shutdown().await;
        s.emulator.stop().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--seed`: a run with the same seed repeats the connection UUID and the `Cf-Ray` ids; another seed does not.
#[tokio::test]
async fn a_seeded_emulator_repeats_its_random_choices() {
    async fn run(seed: u64) -> Vec<String> {
        let s = seeded_setup(ProtocolChoice::Http2, 1, Some(seed)).await;
        let mut seen = vec![
            s.emulator.state()["connections"][0]["connection"]
                .as_str()
                .unwrap()
                .to_owned(),
        ];
        let c = client();
        for _ in 0..2 {
            let r = get(&c, s.emulator.http_addr, "/hello").await;
            assert_eq!(r.status, 200);
            seen.push(r.headers.get("x-cf-ray").unwrap().to_str().unwrap().to_owned());
        }
        s.tunnel.shutdown().await;
        seen
    }
    let first = run(7).await;
    assert_eq!(first.len(), 3);
    assert_ne!(first[1], first[2], "each request gets its own id");
    assert_eq!(run(7).await, first);
    let other = run(8).await;
    assert!(
        other.iter().zip(&first).all(|(a, b)| a != b),
        "{other:?} vs {first:?}"
    );
}
