//! Tunnel mode end to end with the real binaries as processes on loopback: `tunnelgate edge-emulator` as the
//! edge, `tunnelgate proxy` with `TUNNEL_TOKEN` dialling it over QUIC or HTTP/2, and a testkit backend. Checks
//! readiness gating on registration, eyeball requests through the emulator, and unregister-then-exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod process;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use process::{Running, bin, free_addr};
use serde_json::Value;
use tunnelgate_testkit::{Backend, Client, Echo};

/// Registration RPCs answer this late (emulator fault script), so the test can see `/readyz` refuse while a
/// config is loaded but no connection has registered yet. Below the proxy's 5 s registration timeout.
const REGISTER_DELAY_MS: u64 = 3500;

fn temp_path(protocol: &str, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tunnelgate-tunnel-{protocol}-{name}-{}",
        std::process::id()
    ))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The emulator's stdout, one JSON value per line, read on a thread so that every wait can be bounded.
struct Events {
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Events {
    fn new(child: &mut Child) -> Self {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("emulator printed a non-JSON line {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Self { rx, seen: Vec::new() }
    }

    fn drain(&mut self) {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
    }

    fn named(&mut self, name: &str) -> Vec<Value> {
        self.drain();
        self.seen.iter().filter(|v| v["event"] == name).cloned().collect()
    }

    /// Waits until at least `n` events called `name` have been printed.
    fn wait_for(&mut self, name: &str, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.named(name);
            if found.len() >= n {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "waited {limit:?} for {n} {name:?} event(s); saw {:?}",
                self.seen
            );
            if let Ok(v) = self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                self.seen.push(v);
            }
        }
    }
}

struct Emulator {
    proc: Running,
    events: Events,
    edge: Vec<String>,
    http: SocketAddr,
    token: String,
    ca: PathBuf,
}

fn start_emulator(protocol: &str) -> Emulator {
    let faults = serde_json::json!([
        {"trigger": "register", "attempt": 0, "action": {"delayMs": REGISTER_DELAY_MS}}
    ]);
    start_emulator_with(protocol, faults)
}

/// An emulator with the given fault script; `name` keeps its temp files apart from other tests'.
fn start_emulator_with(name: &str, faults: Value) -> Emulator {
    let ca = temp_path(name, "ca.pem");
    let token_file = temp_path(name, "token");
    let script = temp_path(name, "faults.json");
    std::fs::write(&script, faults.to_string()).unwrap();
    let child = bin()
        .arg("edge-emulator")
        .args(["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--ca-out")
        .arg(&ca)
        .arg("--token-out")
        .arg(&token_file)
        .arg("--script")
        .arg(&script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut proc = Running(child);
    let mut events = Events::new(&mut proc.0);
    let started = events.wait_for("started", 1, Duration::from_secs(20))[0].clone();
    let edge: Vec<String> = started["edge"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(edge.len(), 2, "{started}");
    for a in &edge {
        assert_ne!(a.parse::<SocketAddr>().unwrap().port(), 0, "{started}");
    }
    let http: SocketAddr = started["http"].as_str().unwrap().parse().unwrap();
    assert_eq!(PathBuf::from(started["ca"].as_str().unwrap()), ca);
    // The files are written before the start-up line.
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert!(!token.is_empty());
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let _ = std::fs::remove_file(&token_file);
    let _ = std::fs::remove_file(&script);
    Emulator {
        proc,
        events,
        edge,
        http,
        token,
        ca,
    }
}

async fn get_json(client: &Client, addr: SocketAddr, path: &str) -> Option<(u16, Value)> {
    let req = Client::request(http::Method::GET, addr, "x", path)
        .body(tunnelgate_testkit::empty())
        .unwrap();
    let r = client.send(req).await.ok()?;
    let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Some((r.status.as_u16(), json))
}

async fn wait_healthy(client: &Client, config: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((200, _)) = get_json(client, config, "/healthz").await {
            return;
        }
        assert!(Instant::now() < deadline, "config port never answered /healthz");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tunnel_mode_end_to_end(protocol: &str) {
    let backend = Backend::start("demo").await;
    let mut emu = start_emulator(protocol);
    let config = free_addr();
    let auth = "tunnel-test-secret";
    let spawned = Instant::now();
    let child = bin()
        .arg("proxy")
        .env("TUNNEL_TOKEN", &emu.token)
        .env("PROXY_TUNNEL_EDGE", emu.edge.join(","))
        .env("PROXY_TUNNEL_CA_FILE", &emu.ca)
        .env("PROXY_TUNNEL_PROTOCOL", protocol)
        .env("PROXY_TUNNEL_HA_CONNECTIONS", "2")
        .env("PROXY_CONFIG_ADDR", config.to_string())
        .env("PROXY_AUTH_TOKEN", auth)
        .env("PROXY_GRACE_PERIOD", "5s")
        .env("PROXY_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut proxy = Running(child);
    let client = Client::new();

    // (1) Not ready before a config is pushed.
    wait_healthy(&client, config).await;
    let (status, body) = get_json(&client, config, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "no config loaded", "{body}");

    let doc = serde_json::json!({"version": 1, "rules": [
        {"hostnames": ["demo.example.com"], "backends": [{"url": backend.url(), "weight": 1}]}
    ]});
    let (status, body) = tunnelgate_testkit::put_config(config, Some(auth), doc.to_string()).await;
    assert_eq!(status, 200, "{body}");

    // Config loaded, but the emulator holds the registration replies back: still not ready.
    let (status, body) = get_json(&client, config, "/readyz").await.unwrap();
    if spawned.elapsed() < Duration::from_millis(REGISTER_DELAY_MS) {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["reason"], "tunnel not connected to edge", "{body}");
    }

    // Ready once a connection has registered; the emulator printed the registration before answering it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get_json(&client, config, "/readyz").await.unwrap();
        if status == 200 {
            assert_eq!(body["ready"], true, "{body}");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registered = emu.events.wait_for("registered", 1, Duration::from_secs(5));
    assert!(
        registered.iter().all(|r| r["protocol"] == protocol),
        "{registered:?}"
    );
    // HA: both connections register, with distinct connection indexes.
    let registered = emu.events.wait_for("registered", 2, Duration::from_secs(30));
    let mut indexes: Vec<u64> = registered
        .iter()
        .map(|r| r["connIndex"].as_u64().unwrap())
        .collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes, vec![0, 1], "{registered:?}");

    // (2) An eyeball request through the emulator reaches the backend, status and body intact.
    let r = client.get(emu.http, "demo.example.com", "/hello").await;
    assert_eq!(r.status, 200);
    let echo = Echo::parse(&r.body);
    assert_eq!(echo.backend(), "demo");
    assert_eq!(echo.path(), "/hello");
    let r = client.get(emu.http, "demo.example.com", "/status/418").await;
    assert_eq!(r.status.as_u16(), 418);
    assert_eq!(&r.body[..], b"status 418");
    let before = backend.requests();
    let r = client.get(emu.http, "unknown.example.com", "/").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        backend.requests(),
        before,
        "an unknown host must not reach the backend"
    );

    // (3) SIGTERM: every connection unregisters at the edge, then the proxy exits 0 within the grace period.
    let term = Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let signalled = Instant::now();
    let deadline = signalled + Duration::from_secs(10);
    let (exit, exited_ms) = loop {
        if let Some(s) = proxy.0.try_wait().unwrap() {
            break (s, now_ms());
        }
        assert!(Instant::now() < deadline, "proxy did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5) + Duration::from_secs(2),
        "exit took {:?}",
        signalled.elapsed()
    );
    let unregistered = emu.events.wait_for("unregistered", 2, Duration::from_secs(5));
    for u in &unregistered {
        assert_eq!(u["protocol"], protocol, "{u}");
        let at = u["ts_ms"].as_u64().unwrap();
        assert!(
            at <= exited_ms,
            "unregistered at {at} ms, after the proxy exit was seen at {exited_ms} ms"
        );
    }

    let _ = std::fs::remove_file(&emu.ca);
    drop(emu.proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_mode_over_quic_gates_readiness_serves_eyeballs_and_unregisters_on_sigterm() {
    tunnel_mode_end_to_end("quic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_mode_over_http2_gates_readiness_serves_eyeballs_and_unregisters_on_sigterm() {
    tunnel_mode_end_to_end("http2").await;
}

/// Starts `tunnelgate proxy` in tunnel mode with `PROXY_TUNNEL_PROTOCOL` unset (`auto`), one HA connection.
fn start_auto_proxy(
    emu: &Emulator,
    config: SocketAddr,
    auth: &str,
    wait: &str,
    ha: u8,
    log: &std::path::Path,
) -> Running {
    let child = bin()
        .arg("proxy")
        .env("TUNNEL_TOKEN", &emu.token)
        .env("PROXY_TUNNEL_EDGE", emu.edge.join(","))
        .env("PROXY_TUNNEL_CA_FILE", &emu.ca)
        .env_remove("PROXY_TUNNEL_PROTOCOL")
        .env("PROXY_TUNNEL_PROTOCOL_WAIT", wait)
        .env("PROXY_TUNNEL_HA_CONNECTIONS", ha.to_string())
        .env("PROXY_CONFIG_ADDR", config.to_string())
        .env("PROXY_AUTH_TOKEN", auth)
        .env("PROXY_GRACE_PERIOD", "2s")
        .env("PROXY_LOG_FORMAT", "text")
        .stdout(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Running(child)
}

/// tunnel.md §11: in `auto` the proxy dials nothing until the first config arrives (up to
/// PROXY_TUNNEL_PROTOCOL_WAIT), and a config with gRPC routes makes it dial HTTP/2 instead of QUIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_protocol_waits_for_the_first_config_and_dials_http2_for_grpc_routes() {
    let backend = Backend::start("grpc").await;
    let mut emu = start_emulator_with("auto-grpc", serde_json::json!([]));
    let config = free_addr();
    let auth = "tunnel-auto-secret";
    let log = temp_path("auto-grpc", "proxy.log");
    let _proxy = start_auto_proxy(&emu, config, auth, "20s", 1, &log);
    let client = Client::new();
    wait_healthy(&client, config).await;

    // Without a config, nothing is dialled: an emulator without faults would register a dial within
    // milliseconds.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        emu.events.named("registered").is_empty(),
        "dialled before any config: {:?}",
        emu.events.seen
    );

    let doc = serde_json::json!({"version": 1, "hasGrpcRoute": true, "rules": [
        {"hostnames": ["grpc.example.com"], "backends": [{"url": backend.url(), "weight": 1}]}
    ]});
    let (status, body) = tunnelgate_testkit::put_config(config, Some(auth), doc.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let registered = emu.events.wait_for("registered", 1, Duration::from_secs(10));
    assert_eq!(registered[0]["protocol"], "http2", "{registered:?}");

    // And it serves through that connection.
    let r = client.get(emu.http, "grpc.example.com", "/via-h2").await;
    assert_eq!(r.status, 200);
    assert_eq!(Echo::parse(&r.body).backend(), "grpc");
    let _ = std::fs::remove_file(&emu.ca);
    let _ = std::fs::remove_file(&log);
}

/// tunnel.md §11: in `auto`, once PROXY_TUNNEL_PROTOCOL_WAIT passes without a config, the proxy dials QUIC; a
/// later config with gRPC routes moves the connections to HTTP/2 one at a time, and a client sending requests all
/// along never sees a failure (the other connection serves while one is moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_protocol_dials_quic_without_a_config_then_switches_live_to_http2_for_grpc_routes() {
    let backend = Backend::start("live").await;
    let mut emu = start_emulator_with("auto-quic", serde_json::json!([]));
    let config = free_addr();
    let started = Instant::now();
    let auth = "tunnel-auto-secret";
    let log = temp_path("auto-quic", "proxy.log");
    let _proxy = start_auto_proxy(&emu, config, auth, "1s", 2, &log);
    let registered = emu.events.wait_for("registered", 2, Duration::from_secs(20));
    assert!(
        registered.iter().all(|r| r["protocol"] == "quic"),
        "{registered:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "registered after {:?}, before the 1 s wait ended",
        started.elapsed()
    );

    let rule = serde_json::json!({"hostnames": ["live.example.com"], "backends": [{"url": backend.url(), "weight": 1}]});
    let plain = serde_json::json!({"version": 1, "rules": [rule.clone()]});
    let (status, body) = tunnelgate_testkit::put_config(config, Some(auth), plain.to_string()).await;
    assert_eq!(status, 200, "{body}");

    // Requests all along the switch.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let eyeball = emu.http;
    let looping = tokio::spawn({
        let stop = stop.clone();
        async move {
            let client = Client::new();
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.get(eyeball, "live.example.com", "/loop").await;
                statuses.push(r.status.as_u16());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let grpc = serde_json::json!({"version": 2, "hasGrpcRoute": true, "rules": [rule]});
    let (status, body) = tunnelgate_testkit::put_config(config, Some(auth), grpc.to_string()).await;
    assert_eq!(status, 200, "{body}");
    // Two more registrations, both over HTTP/2, for connections 0 and 1, each after its QUIC one unregistered.
    let registered = emu.events.wait_for("registered", 4, Duration::from_secs(30));
    let moved = &registered[2..];
    assert!(moved.iter().all(|r| r["protocol"] == "http2"), "{registered:?}");
    let mut indexes: Vec<u64> = moved.iter().map(|r| r["connIndex"].as_u64().unwrap()).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, vec![0, 1], "{registered:?}");
    let unregistered = emu.events.named("unregistered");
    assert!(
        unregistered.len() >= 2 && unregistered.iter().all(|u| u["protocol"] == "quic"),
        "{unregistered:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = looping.await.unwrap();
    assert!(statuses.len() > 20, "only {} requests", statuses.len());
    let failed: Vec<u16> = statuses.iter().copied().filter(|s| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the switch: {failed:?}",
        failed.len(),
        statuses.len()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("moving the tunnel connections from QUIC to HTTP/2"),
        "{text}"
    );
    let _ = std::fs::remove_file(&emu.ca);
    let _ = std::fs::remove_file(&log);
}

/// `edge-emulator --seed N --token-out PATH` writes the same credentials on every run with the same seed.
#[test]
fn a_seeded_emulator_writes_the_same_token_every_time() {
    let token = |seed: Option<&str>, run: &str| {
        let token_file = temp_path(run, "seeded-token");
        let ca = temp_path(run, "seeded-ca.pem");
        let mut cmd = bin();
        cmd.arg("edge-emulator")
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0", "--ca-out"])
            .arg(&ca)
            .arg("--token-out")
            .arg(&token_file)
            .stdout(Stdio::piped());
        if let Some(seed) = seed {
            cmd.args(["--seed", seed]);
        }
        let mut proc = Running(cmd.spawn().unwrap());
        Events::new(&mut proc.0).wait_for("started", 1, Duration::from_secs(20));
        let text = std::fs::read_to_string(&token_file).unwrap();
        let _ = std::fs::remove_file(&token_file);
        let _ = std::fs::remove_file(&ca);
        tunnelgate_tunnel::TunnelToken::parse(text.trim()).unwrap()
    };
    let first = token(Some("42"), "seed-a");
    let again = token(Some("42"), "seed-b");
    assert_eq!(
        (&first.account_tag, &first.secret, first.tunnel_id),
        (&again.account_tag, &again.secret, again.tunnel_id)
    );
    let other = token(Some("43"), "seed-c");
    assert_ne!(first.secret, other.secret);
    let unseeded = token(None, "seed-d");
    assert_ne!(first.secret, unseeded.secret);
}
