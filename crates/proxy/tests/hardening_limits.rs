//! Connection limits of the data listener: the configurable cap on concurrent connections, and memory with
//! 10,000 idle keep-alive connections (measured on a proxy in its own process, so its RSS is its own).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hardening_support;
mod harness;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use hardening_support::{read_exact_within, read_head, status_of};
use harness::Proxy;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tunnelgate_proxy::{ProxyServer, ProxySettings, ProxyState, Registry};
use tunnelgate_testkit::Backend;

const WAIT: Duration = Duration::from_secs(10);

/// Sends one keep-alive request and reads its whole response; the connection stays open.
async fn one_request(stream: &mut TcpStream, host: &str, limit: Duration) -> Option<u16> {
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let head = read_head(stream, limit).await?;
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    read_exact_within(stream, len, limit).await?;
    status_of(&head)
}

#[tokio::test]
async fn the_connection_cap_holds_further_clients_in_the_backlog() {
    let proxy = Proxy::start_with(ProxySettings {
        max_connections: Some(3),
        ..ProxySettings::loopback()
    })
    .await;
    let backend = Backend::start("b").await;
    proxy
        .push(json!({"version": 1, "rules": [{"backends": [{"url": backend.url(), "weight": 1}]}]}))
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.data).await.unwrap();
        assert_eq!(one_request(&mut s, "x", WAIT).await, Some(200));
        held.push(s);
    }
    // The fourth client connects (the kernel's backlog takes it) but is not served while three are open.
    let mut fourth = TcpStream::connect(proxy.data).await.unwrap();
    let waiting = one_request(&mut fourth, "x", Duration::from_millis(800)).await;
    assert_eq!(waiting, None, "a fourth connection was served above the cap of 3");
    // The held connections keep working.
    assert_eq!(one_request(&mut held[0], "x", WAIT).await, Some(200));
    // One closes; the waiting client is accepted and its request (already sent) is answered.
    drop(held.pop());
    let head = read_head(&mut fourth, WAIT)
        .await
        .expect("served once a slot was free");
    assert_eq!(status_of(&head), Some(200));
    assert_eq!(backend.requests(), 5);
}

/// The child half of [`ten_thousand_idle_connections_keep_memory_bounded`]: a proxy alone in its process.
#[test]
#[ignore = "started as a child process by ten_thousand_idle_connections_keep_memory_bounded"]
fn idle_connections_child_proxy() {
    if std::env::var_os("TUNNELGATE_HARDENING_CHILD").is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let settings = ProxySettings {
            header_read_timeout: Duration::from_secs(300),
            ..ProxySettings::loopback()
        };
        let handle = ProxyServer::start(settings, ProxyState::new(Registry::default()))
            .await
            .unwrap();
        println!("DATA_ADDR={}", handle.data_addr().unwrap());
        // Serve until the parent closes stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await
        .unwrap();
    });
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_keep_memory_bounded() {
    const CONNECTIONS: usize = 10_000;
    // This process holds the client ends, the child the server ends; each needs headroom above 10,000.
    let limit = open_files_limit();
    if limit < (CONNECTIONS as u64) + 500 {
        eprintln!(
            "SKIPPED ten_thousand_idle_connections_keep_memory_bounded: open-file limit {limit} < {}; raise it \
             with `ulimit -n 20000`",
            CONNECTIONS + 500
        );
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "idle_connections_child_proxy",
            "--ignored",
            "--nocapture",
        ])
        .env("TUNNELGATE_HARDENING_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let addr: SocketAddr = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            if let Some(addr) = line.unwrap().strip_prefix("DATA_ADDR=") {
                return addr.parse().unwrap();
            }
        }
        panic!("child proxy did not report its address");
    })
    .await
    .unwrap();

    let mut warm = TcpStream::connect(addr).await.unwrap();
    assert_eq!(one_request(&mut warm, "x", WAIT).await, Some(404));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);

    // Open the connections 250 at a time; each makes one request and then stays open and idle.
    let mut idle: Vec<TcpStream> = Vec::with_capacity(CONNECTIONS);
    while idle.len() < CONNECTIONS {
        let batch = (CONNECTIONS - idle.len()).min(250);
        let opened = futures::future::join_all((0..batch).map(|_| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let status = one_request(&mut s, "idle.example.com", WAIT).await;
            assert_eq!(status, Some(404));
            s
        }))
        .await;
        idle.extend(opened);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let per_connection = (after.saturating_sub(before) * 1024) / CONNECTIONS as u64;
    eprintln!(
        "idle connections: {CONNECTIONS}; proxy RSS {before} KiB before, {after} KiB after ({per_connection} bytes \
         per connection)"
    );

    // Still serving, on a fresh connection and on a sample of the idle ones.
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    assert_eq!(one_request(&mut fresh, "x", WAIT).await, Some(404));
    for s in idle.iter_mut().step_by(1000) {
        assert_eq!(
            one_request(s, "x", WAIT).await,
            Some(404),
            "an idle connection was dropped"
        );
    }
    drop(idle);
    drop(child.stdin.take());
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    // Bounded: an idle HTTP/1.1 connection costs its buffers and task, not megabytes.
    assert!(
        per_connection < 64 * 1024,
        "{per_connection} bytes of RSS per idle connection"
    );
    assert!(
        after < 1024 * 1024,
        "proxy RSS {after} KiB with {CONNECTIONS} idle connections"
    );
}
