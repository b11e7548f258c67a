//! The data listener with and without worker threads: many keep-alive clients served, backend connections
//! reused, and a drain that waits for an in-flight request, for 0 (the caller's runtime), 1 and 3 workers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::Duration;

use harness::{Proxy, single_route};
use tunnelgate_proxy::ProxySettings;
use tunnelgate_testkit::{Backend, BackendOptions, Client};

async fn serves_and_drains(workers: usize) {
    let proxy = Proxy::start_with(ProxySettings {
        data_workers: workers,
        grace_period: Duration::from_secs(5),
        ..ProxySettings::loopback()
    })
    .await;
    let backend = Backend::start("w").await;
    proxy.push(single_route(1, "", &backend.url())).await;
    // 8 clients with their own keep-alive connections, 25 requests each.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let data = proxy.data;
            tokio::spawn(async move {
                let client = Client::new();
                for i in 0..25 {
                    let reply = client.get(data, "w.example.com", &format!("/{c}/{i}")).await;
                    assert_eq!(reply.status, 200, "workers={workers} client {c} request {i}");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(backend.requests(), 200);
    let opened = backend.connections();
    assert!(
        opened <= 8 * workers.max(1),
        "workers={workers}: 200 requests on 8 client connections opened {opened} backend connections"
    );

    let slow = Backend::start_with(
        "slow",
        BackendOptions {
            delay: Some(Duration::from_millis(500)),
            ..BackendOptions::default()
        },
    )
    .await;
    proxy.push(single_route(2, "", &slow.url())).await;
    let data = proxy.data;
    let in_flight = tokio::spawn(async move { Client::new().get(data, "x", "/slow").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let Proxy { handle, .. } = proxy;
    let shutdown = tokio::spawn(handle.shutdown());
    assert_eq!(
        in_flight.await.unwrap().status,
        200,
        "workers={workers}: drained, not cut"
    );
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("the drain ends once the in-flight request is done")
        .unwrap();
}

#[tokio::test]
async fn without_workers() {
    serves_and_drains(0).await;
}

#[tokio::test]
async fn with_one_worker() {
    serves_and_drains(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_workers() {
    serves_and_drains(3).await;
}
