//! The real `tunnelgate controller` process against the controller crate's loopback Kubernetes API server
//! (connected through a kubeconfig), pushing to real `tunnelgate proxy` processes that route to a real backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../../controller/tests/support/apiserver.rs"]
mod apiserver;

#[allow(dead_code)]
mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use process::{Running, bin, expect_refusal, free_addr};
use serde_json::{Value, json};
use tunnelgate_testkit::{Backend, Client, Echo};

const TOKEN: &str = "process-test-token";
const GW: &str = "gateway.networking.k8s.io/v1";

fn kubeconfig(api: &ApiServer) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "tunnelgate-controller-kubeconfig-{}-{}",
        std::process::id(),
        api.addr.port()
    ));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: loopback\n  cluster:\n    server: http://{}\n\
         users:\n- name: test\n  user: {{}}\ncontexts:\n- name: loopback\n  context:\n    cluster: loopback\n    user: test\n\
         current-context: loopback\n",
        api.addr
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn slice(name: &str, service: &str, port_name: &str, port: u16) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"namespace": if service == "app" { "default" } else { "tg" }, "name": name,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4", "ports": [{"name": port_name, "port": port}],
           "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]})
}

/// GET that tolerates a server that is not listening yet.
async fn try_get(client: &Client, addr: SocketAddr, host: &str, path: &str) -> Option<(u16, bytes::Bytes)> {
    let req = Client::request(http::Method::GET, addr, host, path)
        .body(tunnelgate_testkit::empty())
        .ok()?;
    let reply = client.send(req).await.ok()?;
    Some((reply.status.as_u16(), reply.body))
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_process_pushes_to_proxy_processes_and_exits_1_when_it_loses_the_lease() {
    let api = ApiServer::start().await;
    let backend = Backend::start("app").await;
    for ns in ["default", "tg"] {
        api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    api.apply(
        json!({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "tunnelgate"},
                     "spec": {"controllerName": "tunnelgate.dev/gateway-controller"}}),
    );
    api.apply(
        json!({"apiVersion": GW, "kind": "Gateway", "metadata": {"namespace": "default", "name": "gw"},
                     "spec": {"gatewayClassName": "tunnelgate",
                              "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}}),
    );
    api.apply(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default", "name": "app"},
                     "spec": {"ports": [{"name": "http", "port": 80}]}}),
    );
    api.apply(slice("app-1", "app", "http", backend.addr.port()));
    use base64::Engine as _;
    api.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": "tg", "name": "proxy-auth"},
                     "data": {"auth-token": base64::engine::general_purpose::STANDARD.encode(TOKEN)}}),
    );

    let mut proxies = Vec::new();
    for i in 0..3 {
        let (data, config) = (free_addr(), free_addr());
        let child = bin()
            .arg("proxy")
            .env("PROXY_ADDR", data.to_string())
            .env("PROXY_CONFIG_ADDR", config.to_string())
            .env("PROXY_AUTH_TOKEN", TOKEN)
            .env("PROXY_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        api.apply(slice(
            &format!("proxy-headless-{i}"),
            "proxy-headless",
            "config-api",
            config.port(),
        ));
        proxies.push((Running(child), data));
    }

    let (health, metrics) = (free_addr(), free_addr());
    let mut controller = Running(
        bin()
            .args(["controller", "--log-format", "text", "--proxy-push-timeout", "2s"])
            .arg(format!("--health-addr={health}"))
            .arg(format!("--metrics-addr={metrics}"))
            .env("KUBECONFIG", kubeconfig(&api))
            .env("POD_NAME", "controller-0")
            .env("POD_NAMESPACE", "tg")
            // Flags from the environment, names relative to the pod namespace.
            .env("TUNNELGATE_PROXY_SERVICE", "proxy-headless")
            .env("TUNNELGATE_PROXY_AUTH_SECRET", "proxy-auth")
            .env("TUNNELGATE_LEADER_ELECTION_LEASE_NAME", "tunnelgate-leader")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::new();
    wait_for("controller ready", Duration::from_secs(20), || async {
        try_get(&client, health, "controller", "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
    })
    .await;

    api.apply(
        json!({"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"namespace": "default", "name": "web"},
                     "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["app.example.com"],
                              "rules": [{"backendRefs": [{"name": "app", "port": 80}]}]}}),
    );
    for (_, data) in &proxies {
        wait_for(
            "every proxy process serves the route",
            Duration::from_secs(20),
            || async {
                let r = client.get(*data, "app.example.com", "/x").await;
                r.status == 200 && Echo::parse(&r.body).backend() == "app"
            },
        )
        .await;
    }
    wait_for("route status", Duration::from_secs(10), || async {
        let route = api.get(GW, "HTTPRoute", "default", "web").unwrap();
        route["status"]["parents"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    })
    .await;
    let lease = api
        .get("coordination.k8s.io/v1", "Lease", "tg", "tunnelgate-leader")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "controller-0");
    let m = client.get(metrics, "controller", "/metrics").await;
    assert!(String::from_utf8_lossy(&m.body).contains("tunnelgate_proxy_targets{state=\"acked\"} 3"));

    // Another replica takes the lease: this one must exit 1 at its next renewal (retry period 2 s).
    let mut lease = api
        .get("coordination.k8s.io/v1", "Lease", "tg", "tunnelgate-leader")
        .unwrap();
    lease["spec"]["holderIdentity"] = json!("controller-1");
    api.apply(lease);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = controller.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the controller kept running after losing the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1));
}

#[test]
fn unimplemented_features_are_refused_from_flags_and_environment() {
    let out = bin()
        .args(["controller", "--proxy-service", "p", "--cloudflare-sync"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--cloudflare-sync needs --cloudflare-api-token-secret"),
        "{stderr}"
    );

    // Tracing: bad values and stray flags are refused; good ones get as far as the Kubernetes API.
    for (envs, needle) in [
        (
            &[
                ("TUNNELGATE_TRACING_ENABLED", "true"),
                ("TUNNELGATE_TRACING_ENDPOINT", "ftp://otel:21"),
            ][..],
            "--tracing-endpoint",
        ),
        (
            &[
                ("TUNNELGATE_TRACING_ENABLED", "true"),
                ("TUNNELGATE_TRACING_SAMPLE_RATE", "2"),
            ][..],
            "--tracing-sample-rate",
        ),
        (
            &[("TUNNELGATE_TRACING_ENDPOINT", "http://otel:4318")][..],
            "--tracing-endpoint only applies with --tracing-enabled=true",
        ),
        (
            &[
                ("TUNNELGATE_TRACING_ENABLED", "true"),
                ("TUNNELGATE_TRACING_ENDPOINT", "http://127.0.0.1:9"),
            ][..],
            "connecting to the Kubernetes API",
        ),
    ] {
        let mut cmd = bin();
        cmd.args(["controller", "--proxy-service", "p"]);
        expect_refusal(cmd, envs, needle);
    }

    let out = bin().args(["controller"]).output().unwrap();
    assert!(!out.status.success(), "a proxy target source is required");
}
