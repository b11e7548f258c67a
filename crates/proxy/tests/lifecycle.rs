//! Config swaps under load and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use harness::Proxy;
use serde_json::json;
use tunnelgate_proxy::ProxySettings;
use tunnelgate_testkit::{Backend, BackendOptions, Client, Echo, put_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_config_swaps_under_load_fail_no_request() {
    let proxy = Proxy::start().await;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let doc = |version: i64| {
        // Alternate backends, weights and rule shapes so every push really changes the table.
        let (first, second) = if version % 2 == 0 { (&a, &b) } else { (&b, &a) };
        json!({"version": version, "rules": [
            {"hostnames": ["load.example.com"], "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
             "backends": [{"url": first.url(), "weight": 1 + version % 3}, {"url": second.url(), "weight": 1}]},
            {"hostnames": ["load.example.com"], "backends": [{"url": second.url(), "weight": 1}]},
            {"hostnames": [format!("v{version}.example.com")], "backends": [{"url": first.url(), "weight": 1}]}
        ]})
    };
    proxy.push(doc(1)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let addr = proxy.data;
        clients.push(tokio::spawn(async move {
            let client = Client::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path = if i.is_multiple_of(2) { "/api/x" } else { "/other" };
                let req = Client::request(http::Method::GET, addr, "load.example.com", path)
                    .body(tunnelgate_testkit::empty())
                    .unwrap();
                match client.send(req).await {
                    Ok(r) if r.status == 200 && matches!(Echo::parse(&r.body).backend(), "a" | "b") => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("client {c}: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }
    for version in 2..=101 {
        let (status, body) = put_config(proxy.config, None, doc(version).to_string()).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let ok = ok.load(Ordering::Relaxed);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during swaps ({ok} ok)"
    );
    assert!(ok > 100, "only {ok} requests ran during the swaps");
    let status: serde_json::Value = serde_json::from_slice(&proxy.config_get("/config").await.body).unwrap();
    assert_eq!(status["version"], 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let proxy = Proxy::start_with(ProxySettings {
        grace_period: Duration::from_secs(5),
        ..ProxySettings::loopback()
    })
    .await;
    let slow = Backend::start_with(
        "slow",
        BackendOptions {
            delay: Some(Duration::from_millis(700)),
            ..BackendOptions::default()
        },
    )
    .await;
    proxy
        .push(json!({"version": 1, "rules": [{"backends": [{"url": slow.url(), "weight": 1}]}]}))
        .await;
    let (data, config) = (proxy.data, proxy.config);
    let in_flight = tokio::spawn(async move { Client::new().get(data, "x", "/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let Proxy { handle, .. } = proxy;
    let state = handle.state().clone();
    let shutdown = tokio::spawn(handle.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state.readiness(), Err("shutting down"));
    // The config port still answers during the drain, and reports it.
    let ready = Client::new().get(config, "x", "/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&ready.body).unwrap()["reason"],
        "shutting down"
    );
    // New connections are refused.
    assert!(tokio::net::TcpStream::connect(data).await.is_err());

    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request finished");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("drain ends once in-flight requests are done")
        .unwrap();
}

#[tokio::test]
async fn pools_of_backends_dropped_by_a_swap_close_their_idle_connections() {
    let proxy = Proxy::start().await;
    let old = Backend::start("old").await;
    let new = Backend::start("new").await;
    let route = |version: i64, b: &Backend| json!({"version": version, "rules": [{"backends": [{"url": b.url(), "weight": 1}]}]});
    proxy.push(route(1, &old)).await;
    assert_eq!(proxy.get("x", "/").await.status, 200);
    assert_eq!(
        old.open_connections(),
        1,
        "the pooled connection stays open while the table names it"
    );
    proxy.push(route(2, &old)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        old.open_connections(),
        1,
        "a swap that keeps the backend keeps its pool"
    );
    proxy.push(route(3, &new)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while old.open_connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle connection of a dropped pool stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(Echo::parse(&proxy.get("x", "/").await.body).backend(), "new");
}
