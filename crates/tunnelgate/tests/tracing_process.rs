//! OTLP tracing of the real `tunnelgate proxy` process: the endpoint from the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, trace ids in the access log, the export flushed on SIGTERM, and bad values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod process;

use std::process::{Command, Stdio};
use std::time::Duration;

use process::{Running, access_lines, bin, free_addr, output_within, proxy_with_config, wait_ready};
use tunnelgate_testkit::otlp::{OtlpCollector, hex};
use tunnelgate_testkit::{Backend, Client, empty};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn traced_request_is_exported_and_logged_with_its_ids() {
    let otlp = OtlpCollector::start().await;
    let backend = Backend::start("b").await;
    let file = std::env::temp_dir().join(format!("tunnelgate-tracing-{}.yaml", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "version: 1\nrules:\n  - hostnames: [t.example.com]\n    backends:\n      - url: {}\n        weight: 1\n",
            backend.url()
        ),
    )
    .unwrap();
    let (mut cmd, data, config) = proxy_with_config(&file);
    let child = cmd
        .env("PROXY_ACCESS_LOG_ENABLED", "true")
        .env("PROXY_TRACING_ENABLED", "true")
        .env("PROXY_TRACING_ENDPOINT", "")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
        .env("OTEL_SERVICE_NAME", "tracing-test")
        .env("PROXY_GRACE_PERIOD", "1s")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut proc = Running(child);
    let client = Client::new();
    wait_ready(&client, config).await;
    let req = Client::request(http::Method::GET, data, "t.example.com", "/x")
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .body(empty())
        .unwrap();
    assert_eq!(client.send(req).await.unwrap().status, 200);
    let sent = backend.recorded()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        sent.starts_with(&format!("00-{TRACE}-")) && !sent.contains(PARENT),
        "{sent}"
    );

    Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap();
    // Waited for off the runtime: the collector must keep serving while the proxy flushes.
    let child = std::mem::replace(&mut proc.0, Command::new("true").spawn().unwrap());
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("the proxy exits after SIGTERM")
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let access = access_lines(&stdout);
    assert_eq!(access.len(), 1, "{stdout}");
    assert_eq!(access[0]["trace_id"], TRACE);
    let span_id = access[0]["span_id"].as_str().unwrap().to_owned();
    assert_eq!(span_id.len(), 16);

    // SIGTERM flushed the queue (the default schedule is 5 s, the drain 1 s).
    let spans = otlp.spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = spans
        .iter()
        .find(|s| hex(&s.span_id) == span_id)
        .expect("the logged span was exported");
    assert_eq!(hex(&server.parent_span_id), PARENT);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn bad_tracing_values_exit_1_naming_the_variable() {
    for (envs, needle) in [
        (
            &[
                ("PROXY_TRACING_ENABLED", "true"),
                ("PROXY_TRACING_ENDPOINT", "ftp://c:21"),
            ][..],
            "PROXY_TRACING_ENDPOINT",
        ),
        (
            &[("PROXY_TRACING_ENABLED", "perhaps")][..],
            "PROXY_TRACING_ENABLED",
        ),
        (
            &[("PROXY_TRACING_SAMPLE_RATE", "1.5")][..],
            "PROXY_TRACING_SAMPLE_RATE",
        ),
    ] {
        let (data, config) = (free_addr(), free_addr());
        let mut cmd = bin();
        cmd.arg("proxy")
            .env("PROXY_ADDR", data.to_string())
            .env("PROXY_CONFIG_ADDR", config.to_string());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = output_within(&mut cmd, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{envs:?}: {stderr}");
        assert!(stderr.contains(needle), "{envs:?}: {stderr}");
    }
}
