//! The real `tunnelgate` binary as a process: `proxy` with a config file (serve, reload, drain), strict
//! environment parsing, and `demo --check`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod process;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use process::{Running, access_lines, bin, expect_refusal, free_addr, proxy_with_config, wait_ready};
use tunnelgate_testkit::{Backend, Client, Echo};

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tunnelgate-proxy-{name}-{}", std::process::id()))
}

fn route_yaml(version: u32, url: &str) -> String {
    format!(
        "version: {version}\nrules:\n  - hostnames: [file.example.com]\n    backends:\n      - url: {url}\n        weight: 1\n"
    )
}

async fn backend_of(client: &Client, data: SocketAddr) -> String {
    let r = client.get(data, "file.example.com", "/").await;
    assert_eq!(r.status, 200);
    Echo::parse(&r.body).backend().to_owned()
}

#[tokio::test]
async fn proxy_serves_a_config_file_reloads_it_and_drains_on_sigterm() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let file = temp_file("reload.yaml");
    std::fs::write(&file, route_yaml(1, &a.url())).unwrap();
    let (mut cmd, data, config) = proxy_with_config(&file);
    let child = cmd
        .env("PROXY_LOG_FORMAT", "text")
        .env("PROXY_GRACE_PERIOD", "5s")
        .env("PROXY_DATA_WORKERS", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = Running(child);
    let client = Client::new();
    wait_ready(&client, config).await;
    assert_eq!(backend_of(&client, data).await, "a");

    // A changed file is picked up within a few seconds.
    std::fs::write(&file, route_yaml(2, &b.url()) + "# changed\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend_of(&client, data).await != "b" {
        assert!(Instant::now() < deadline, "reload not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A bad file is rejected and the active config stays.
    std::fs::write(
        &file,
        "version: 3\nrules: [{backends: [{url: 'ftp://nope', weight: 1}]}]\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(backend_of(&client, data).await, "b");

    let status = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = proc.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0));
    let _ = std::fs::remove_file(&file);
}

fn run_expecting_failure(envs: &[(&str, &str)], needle: &str) {
    let (data, config) = (free_addr(), free_addr());
    let mut cmd = bin();
    cmd.arg("proxy")
        .env("PROXY_ADDR", data.to_string())
        .env("PROXY_CONFIG_ADDR", config.to_string());
    expect_refusal(cmd, envs, needle);
}

#[test]
fn bad_environment_values_exit_1_naming_the_variable() {
    run_expecting_failure(&[("PROXY_GRACE_PERIOD", "soon")], "PROXY_GRACE_PERIOD");
    run_expecting_failure(&[("PROXY_METRICS_ENABLED", "maybe")], "PROXY_METRICS_ENABLED");
    run_expecting_failure(&[("PROXY_MAX_CONFIG_BYTES", "1000")], "PROXY_MAX_CONFIG_BYTES");
    run_expecting_failure(
        &[("PROXY_ACCESS_LOG_SAMPLING_RATE", "2")],
        "PROXY_ACCESS_LOG_SAMPLING_RATE",
    );
    run_expecting_failure(&[("PROXY_ADDR", "nowhere")], "PROXY_ADDR");
    run_expecting_failure(&[("PROXY_LOG_FORMAT", "xml")], "PROXY_LOG_FORMAT");
    run_expecting_failure(&[("PROXY_DATA_WORKERS", "many")], "PROXY_DATA_WORKERS");
    run_expecting_failure(&[("PROXY_DATA_WORKERS", "-1")], "PROXY_DATA_WORKERS");
    run_expecting_failure(
        &[("PROXY_DATA_WORKERS", "100000")],
        "PROXY_DATA_WORKERS: at most 1024",
    );
    run_expecting_failure(&[("PROXY_AUTH_TOKEN", "")], "PROXY_AUTH_TOKEN is set but empty");
    run_expecting_failure(
        &[("PROXY_AUTH_TOKEN", "   ")],
        "PROXY_AUTH_TOKEN is set but empty",
    );
    // A token that does not decode is a startup error, never a silent fallback to standalone mode.
    run_expecting_failure(&[("TUNNEL_TOKEN", "eyJhIjoiYiJ9")], "TUNNEL_TOKEN");
}

#[test]
fn a_busy_port_is_a_startup_error() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    run_expecting_failure(&[("PROXY_CONFIG_ADDR", addr.as_str())], "cannot listen");
}

#[test]
fn demo_check_passes() {
    let out = bin()
        .args(["demo", "--check", "--port", "0", "--config-port", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok   default route",
        "ok   header match",
        "ok   weighted split",
        "ok   redirect",
        "ok   rewrite",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}

#[tokio::test]
async fn access_log_lines_are_json_on_stdout_and_5xx_are_always_kept() {
    let ok = Backend::start("ok").await;
    let closed = free_addr();
    let file = temp_file("access.json");
    let doc = serde_json::json!({"version": 1, "rules": [
        {"hostnames": ["file.example.com"], "backends": [{"url": ok.url(), "weight": 1}]},
        {"hostnames": ["down.example.com"], "backends": [{"url": format!("http://{closed}"), "weight": 1}]}
    ]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let (mut cmd, data, config) = proxy_with_config(&file);
    let child = cmd
        .env("PROXY_ACCESS_LOG_ENABLED", "true")
        .env("PROXY_ACCESS_LOG_SAMPLING_RATE", "0")
        .env("PROXY_ACCESS_LOG_STRIP_QUERY", "yes")
        .env("PROXY_GRACE_PERIOD", "1s")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut proc = Running(child);
    let client = Client::new();
    wait_ready(&client, config).await;
    assert_eq!(
        client.get(data, "file.example.com", "/sampled-out").await.status,
        200
    );
    assert_eq!(
        client
            .get(data, "down.example.com", "/kept?secret=1")
            .await
            .status,
        502
    );
    Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap();
    let out = std::mem::replace(&mut proc.0, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let access = access_lines(&stdout);
    assert_eq!(access.len(), 1, "{stdout}");
    let line = &access[0];
    assert_eq!(line["status"], 502);
    assert_eq!(line["host"], "down.example.com");
    assert_eq!(line["path"], "/kept");
    assert_eq!(line["query"], "", "the query is stripped");
    assert_eq!(line["method"], "GET");
    assert!(line["duration_ms"].is_number() && line["bytes_written"].is_number());
    let _ = std::fs::remove_file(&file);
}
