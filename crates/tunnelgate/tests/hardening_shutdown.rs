//! SIGTERM on the real binary under load: no new connections, every in-flight request completes within the
//! grace period, exit 0. Also the listener-limit variables of the hardening review.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod process;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use process::{Running, bin, free_addr};
use serde_json::json;
use tunnelgate_testkit::{Backend, BackendOptions, Client, put_config};

fn proxy(data: SocketAddr, config: SocketAddr, extra: &[(&str, &str)]) -> Running {
    let mut cmd = bin();
    cmd.arg("proxy")
        .env("PROXY_ADDR", data.to_string())
        .env("PROXY_CONFIG_ADDR", config.to_string())
        .env("PROXY_LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Running(cmd.spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_in_flight_requests_and_exits_0() {
    let slow = Backend::start_with(
        "slow",
        BackendOptions {
            delay: Some(Duration::from_millis(1500)),
            ..BackendOptions::default()
        },
    )
    .await;
    let fast = Backend::start("fast").await;
    let (data, config) = (free_addr(), free_addr());
    let mut proc = proxy(
        data,
        config,
        &[
            ("PROXY_GRACE_PERIOD", "10s"),
            ("PROXY_MAX_CONNECTIONS", "256"),
            ("PROXY_HEADER_READ_TIMEOUT", "5s"),
        ],
    );
    let doc = json!({"version": 1, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}], "backends": [{"url": slow.url(), "weight": 1}]},
        {"backends": [{"url": fast.url(), "weight": 1}]}
    ]});
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(config).await.is_err() {
        assert!(Instant::now() < deadline, "proxy did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = put_config(config, None, doc.to_string()).await;
    assert_eq!(status, 200, "{body}");

    // Load: four clients looping on the fast route; every HTTP answer they get must be a 200.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        loops.push(tokio::spawn(async move {
            let client = Client::new();
            while !stop.load(Ordering::Relaxed) {
                let req = Client::request(http::Method::GET, data, "load.example.com", "/")
                    .body(tunnelgate_testkit::empty())
                    .unwrap();
                match client.send(req).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        eprintln!("load: status {}", r.status);
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    // Refused or closed once the drain has begun: expected.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    // Twenty slow requests in flight, each on its own connection.
    let mut in_flight = Vec::new();
    for i in 0..20 {
        in_flight.push(tokio::spawn(async move {
            Client::new()
                .get(data, "load.example.com", &format!("/slow/{i}"))
                .await
                .status
        }));
    }
    assert_eq!(slow.wait_requests(20, Duration::from_secs(10)).await, 20);

    let term = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // No new connections once the drain has started.
    let refused_by = Instant::now() + Duration::from_secs(3);
    while tokio::net::TcpStream::connect(data).await.is_ok() {
        assert!(
            Instant::now() < refused_by,
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in in_flight {
        assert_eq!(r.await.unwrap(), 200, "an in-flight request was cut by the drain");
    }
    let exit = loop {
        if let Some(s) = proc.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            term.elapsed() < Duration::from_secs(12),
            "no exit within the 10 s grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drained_in = term.elapsed();
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(exit.code(), Some(0));
    assert_eq!(bad.load(Ordering::Relaxed), 0, "non-200 answers during the drain");
    eprintln!(
        "shutdown under load: {} load requests ok, 20/20 in-flight completed, exit 0 after {drained_in:?}",
        ok.load(Ordering::Relaxed)
    );
}

#[test]
fn listener_limit_variables_are_parsed_strictly() {
    for (var, value) in [
        ("PROXY_MAX_CONNECTIONS", "many"),
        ("PROXY_MAX_CONNECTIONS", "-1"),
        ("PROXY_HEADER_READ_TIMEOUT", "soon"),
        ("PROXY_HEADER_READ_TIMEOUT", "0s"),
    ] {
        let out = bin()
            .arg("proxy")
            .env("PROXY_ADDR", free_addr().to_string())
            .env("PROXY_CONFIG_ADDR", free_addr().to_string())
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}={value}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(var),
            "{var}={value}: message does not name the variable: {text}"
        );
    }
}
