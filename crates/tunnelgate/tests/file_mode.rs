//! File mode, black-box: the real `tunnelgate` binary reading Gateway API YAML (`routes check`, and
//! `proxy --routes` in front of real loopback backends declared through Service + EndpointSlice objects).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use process::{Running, bin, free_addr, wait_ready};
use tunnelgate_testkit::{Backend, BackendOptions, Client, Echo, TestPki};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tunnelgate-file-mode-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: local}
spec:
  gatewayClassName: tunnelgate
  listeners: [{name: http, port: 80, protocol: HTTP}]
";

fn write_service(dir: &Path, name: &str, port: u16) {
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
    );
    std::fs::write(dir.join(format!("svc-{name}.yaml")), text).unwrap();
}

#[test]
fn routes_check_prints_the_config_and_statuses_and_exits_zero_when_all_routes_are_healthy() {
    let dir = temp_dir("check-ok");
    std::fs::write(dir.join("gateway.yaml"), GATEWAY).unwrap();
    write_service(&dir, "app", 18080);
    std::fs::write(
        dir.join("route.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n\
         spec: {parentRefs: [{name: local}], hostnames: [app.localhost], rules: [{backendRefs: [{name: app, port: 80}]}]}\n",
    )
    .unwrap();
    let out = bin().args(["routes", "check"]).arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["config"]["rules"][0]["hostnames"][0], "app.localhost");
    assert_eq!(
        report["config"]["rules"][0]["backends"][0]["url"],
        "http://127.0.0.1:18080"
    );
    let kinds: Vec<&str> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Gateway", "HTTPRoute"]);
    let route = &report["objects"][1];
    assert_eq!(route["metadata"]["name"], "web");
    assert_eq!(route["status"]["parents"][0]["conditions"][0]["type"], "Accepted");
    assert_eq!(route["status"]["parents"][0]["conditions"][0]["status"], "True");

    let yaml = bin()
        .args(["routes", "check", "--output", "yaml"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(yaml.status.success());
    let text = String::from_utf8(yaml.stdout).unwrap();
    assert!(text.starts_with("config:\n"), "{text}");
    assert!(text.contains("url: http://127.0.0.1:18080"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn routes_check_exits_non_zero_for_a_route_with_unresolved_refs_or_not_accepted() {
    let dir = temp_dir("check-bad");
    std::fs::write(dir.join("gateway.yaml"), GATEWAY).unwrap();
    std::fs::write(
        dir.join("route.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: missing-backend}\n\
         spec: {parentRefs: [{name: local}], rules: [{backendRefs: [{name: nope, port: 80}]}]}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: wrong-gateway}\n\
         spec: {parentRefs: [{name: typo}]}\n",
    )
    .unwrap();
    let out = bin().args(["routes", "check"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTPRoute default/missing-backend"), "{stderr}");
    assert!(stderr.contains("HTTPRoute default/wrong-gateway"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backend = &report["config"]["rules"][0]["backends"][0];
    assert_eq!(backend["unavailableStatus"], 500);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn routes_check_under_quic_rejects_grpc_routes_and_keeps_http_routes() {
    let dir = temp_dir("check-quic");
    std::fs::write(dir.join("gateway.yaml"), GATEWAY).unwrap();
    write_service(&dir, "app", 18081);
    std::fs::write(
        dir.join("routes.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: greeter}\n\
         spec: {parentRefs: [{name: local}], rules: [{backendRefs: [{name: app, port: 80}]}]}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n\
         spec: {parentRefs: [{name: local}], rules: [{backendRefs: [{name: app, port: 80}]}]}\n",
    )
    .unwrap();
    let check = |protocol: &str| {
        let out = bin()
            .args(["routes", "check", "--tunnel-protocol", protocol])
            .arg(&dir)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            report,
        )
    };

    let (code, _, report) = check("auto");
    assert_eq!(code, Some(0));
    assert_eq!(report["config"]["hasGrpcRoute"], true);
    assert_eq!(report["config"]["rules"].as_array().unwrap().len(), 2);

    let (code, stderr, report) = check("quic");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("GRPCRoute default/greeter"), "{stderr}");
    assert!(!stderr.contains("HTTPRoute"), "{stderr}");
    assert!(report["config"].get("hasGrpcRoute").is_none(), "{report}");
    let rules = report["config"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{report}");
    let grpc = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "GRPCRoute")
        .unwrap();
    let accepted = &grpc["status"]["parents"][0]["conditions"][0];
    assert_eq!(accepted["type"], "Accepted");
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "UnsupportedValue");
    assert!(
        accepted["message"].as_str().unwrap().contains("QUIC"),
        "{accepted}"
    );

    let out = bin()
        .args(["routes", "check", "--tunnel-protocol", "pigeon"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn routes_check_reports_a_bad_file_by_name_and_document() {
    let dir = temp_dir("check-invalid");
    std::fs::write(dir.join("a.yaml"), GATEWAY).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\nnot: [valid\n",
    )
    .unwrap();
    let out = bin().args(["routes", "check"]).arg(&dir).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("b.yaml: document 2: invalid YAML"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_shipped_example_directory_checks_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/file-mode");
    let out = bin().args(["routes", "check"]).arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules = report["config"]["rules"].as_array().unwrap();
    assert_eq!(rules[0]["hostnames"][0], "app.localhost");
    let backends: Vec<(&str, i64)> = rules[0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["url"].as_str().unwrap(), b["weight"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        backends,
        [("http://127.0.0.1:8001", 9), ("http://127.0.0.1:8002", 1)]
    );
}

fn port_of(backend: &Backend) -> u16 {
    backend
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

fn write_route(dir: &Path, host: &str, service: &str, extra: &str) {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {service}-route}}\n\
         spec:\n  parentRefs: [{{name: local}}]\n  hostnames: [{host}]\n  rules:\n  - backendRefs: [{{name: {service}, port: 80}}]\n{extra}"
    );
    std::fs::write(dir.join(format!("route-{host}.yaml")), text).unwrap();
}

/// Starts `tunnelgate proxy --routes dir` and waits until it is ready; returns it and its data address.
async fn proxy_with_routes(dir: &Path) -> (Running, SocketAddr) {
    let (data, config) = (free_addr(), free_addr());
    let child = bin()
        .env_clear()
        .args(["proxy", "--routes"])
        .arg(dir)
        .env("PROXY_ADDR", data.to_string())
        .env("PROXY_CONFIG_ADDR", config.to_string())
        .env("PROXY_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Running(child);
    wait_ready(&Client::new(), config).await;
    (proc, data)
}

/// Polls until `host` is served by `backend` (or answers `status` when `backend` is empty).
async fn eventually(
    client: &Client,
    data: SocketAddr,
    host: &str,
    status: u16,
    backend: &str,
) -> tunnelgate_testkit::Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client.get(data, host, "/").await;
        let served_by = if reply.status == 200 {
            Echo::parse(&reply.body).backend().to_owned()
        } else {
            String::new()
        };
        if reply.status.as_u16() == status && served_by == backend {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "{host}: still {} from {served_by:?}, expected {status} from {backend:?}",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn proxy_serves_gateway_api_files_and_follows_edits_without_restart() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let dir = temp_dir("proxy-routes");
    std::fs::write(dir.join("gateway.yaml"), GATEWAY).unwrap();
    write_service(&dir, "svc-a", port_of(&a));
    write_service(&dir, "svc-b", port_of(&b));
    write_route(&dir, "one.localhost", "svc-a", "");
    write_route(&dir, "two.localhost", "svc-b", "");

    let (_proc, data) = proxy_with_routes(&dir).await;
    let client = Client::new();

    // Each hostname reaches the backend its Service's EndpointSlice names; other hosts get no route.
    assert_eq!(
        Echo::parse(&client.get(data, "one.localhost", "/").await.body).backend(),
        "a"
    );
    assert_eq!(
        Echo::parse(&client.get(data, "two.localhost", "/").await.body).backend(),
        "b"
    );
    assert_eq!(client.get(data, "three.localhost", "/").await.status, 404);

    // Editing a route file re-points the hostname and adds a filter, without a restart.
    write_route(
        &dir,
        "one.localhost",
        "svc-b",
        "    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-File-Mode, value: edited}]}}]\n",
    );
    let reply = eventually(&client, data, "one.localhost", 200, "b").await;
    assert_eq!(
        Echo::parse(&reply.body).header("x-file-mode").as_deref(),
        Some("edited")
    );

    // A new file in the directory counts as a change too.
    write_route(&dir, "three.localhost", "svc-a", "");
    eventually(&client, data, "three.localhost", 200, "a").await;

    // An EndpointSlice without ready endpoints makes the Service answer 503.
    let slice = std::fs::read_to_string(dir.join("svc-svc-a.yaml")).unwrap();
    std::fs::write(
        dir.join("svc-svc-a.yaml"),
        slice.replace("[127.0.0.1]}]", "[127.0.0.1], conditions: {ready: false}}]"),
    )
    .unwrap();
    eventually(&client, data, "three.localhost", 503, "").await;

    // A file that does not parse is rejected and the active routing stays.
    std::fs::write(
        dir.join("zz-broken.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: [oops\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        Echo::parse(&client.get(data, "two.localhost", "/").await.body).backend(),
        "b"
    );
    assert_eq!(client.get(data, "three.localhost", "/").await.status, 503);

    // Fixing it resumes reloading.
    std::fs::remove_file(dir.join("zz-broken.yaml")).unwrap();
    write_route(&dir, "two.localhost", "svc-a", "");
    std::fs::write(dir.join("svc-svc-a.yaml"), slice).unwrap();
    eventually(&client, data, "two.localhost", 200, "a").await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The ConfigMap `name` (file `ca.yaml`) whose `ca.crt` is `ca_pem`.
fn write_ca_config_map(dir: &Path, name: &str, ca_pem: &str) {
    let ca: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    std::fs::write(
        dir.join("ca.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata:\n  ca.crt: |\n{ca}"),
    )
    .unwrap();
}

/// The BackendTLSPolicy of `service`, trusting the ConfigMap `ca` and expecting `hostname`.
fn write_tls_policy(dir: &Path, service: &str, ca: &str, hostname: &str) {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {service}-tls}}\n\
         spec:\n  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n  validation:\n    \
         caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {ca}}}]\n    hostname: {hostname}\n"
    );
    std::fs::write(dir.join(format!("policy-{service}.yaml")), text).unwrap();
}

#[tokio::test]
async fn proxy_dials_a_backend_over_tls_as_its_backend_tls_policy_says() {
    let pki = TestPki::new();
    let leaf = pki.leaf(&["api.internal"], &[]);
    let options = BackendOptions {
        tls: Some(leaf.server_config(None, &[b"http/1.1"])),
        ..BackendOptions::default()
    };
    let secure = Backend::start_with("secure", options).await;
    let dir = temp_dir("backend-tls");
    std::fs::write(dir.join("gateway.yaml"), GATEWAY).unwrap();
    write_service(&dir, "api", port_of(&secure));
    write_route(&dir, "tls.localhost", "api", "");
    write_ca_config_map(&dir, "internal-ca", &pki.ca_pem);
    write_tls_policy(&dir, "api", "internal-ca", "api.internal");

    let (_proc, data) = proxy_with_routes(&dir).await;
    let client = Client::new();

    // The policy's CA and hostname verify the backend's certificate: the request goes through over TLS.
    eventually(&client, data, "tls.localhost", 200, "secure").await;
    assert_eq!(secure.requests(), 1);

    // A hostname the certificate does not carry fails the handshake: 502, nothing reaches the backend.
    write_tls_policy(&dir, "api", "internal-ca", "other.internal");
    eventually(&client, data, "tls.localhost", 502, "").await;

    // Back to the right hostname, then the ConfigMap goes away: the backend fails closed, no plain-text retry.
    write_tls_policy(&dir, "api", "internal-ca", "api.internal");
    eventually(&client, data, "tls.localhost", 200, "secure").await;
    let ca_file = std::fs::read_to_string(dir.join("ca.yaml")).unwrap();
    std::fs::remove_file(dir.join("ca.yaml")).unwrap();
    eventually(&client, data, "tls.localhost", 502, "").await;

    // The ConfigMap back, then the policy removed: the Service port is plain HTTP again, which the TLS server
    // does not speak.
    std::fs::write(dir.join("ca.yaml"), ca_file).unwrap();
    eventually(&client, data, "tls.localhost", 200, "secure").await;
    std::fs::remove_file(dir.join("policy-api.yaml")).unwrap();
    eventually(&client, data, "tls.localhost", 502, "").await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A Secret of type `kubernetes.io/tls` in file form.
fn tls_secret_yaml(name: &str, cert_pem: &str, key_pem: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\n\
         data: {{tls.crt: {}, tls.key: {}}}\n",
        b64(cert_pem),
        b64(key_pem)
    )
}

#[tokio::test]
async fn proxy_presents_the_gateways_client_certificate_to_a_backend_that_requires_one() {
    let server_pki = TestPki::new();
    let client_pki = TestPki::new();
    let leaf = server_pki.leaf(&["api.internal"], &[]);
    let options = BackendOptions {
        tls: Some(leaf.server_config(Some(&client_pki), &[b"http/1.1"])),
        ..BackendOptions::default()
    };
    let secure = Backend::start_with("mtls", options).await;
    let dir = temp_dir("backend-mtls");
    write_service(&dir, "api", port_of(&secure));
    write_route(&dir, "mtls.localhost", "api", "");
    write_ca_config_map(&dir, "internal-ca", &server_pki.ca_pem);
    write_tls_policy(&dir, "api", "internal-ca", "api.internal");
    let client_cert = client_pki.leaf(&["gateway.local"], &[]);
    std::fs::write(
        dir.join("client-secret.yaml"),
        tls_secret_yaml("gateway-client", &client_cert.cert_pem, &client_cert.key_pem),
    )
    .unwrap();
    let with_certificate =
        format!("{GATEWAY}  tls: {{backend: {{clientCertificateRef: {{name: gateway-client}}}}}}\n");
    // Without the Gateway's client certificate the backend refuses the handshake.
    std::fs::write(dir.join("gateway.yaml"), GATEWAY).unwrap();
    let (_proc, data) = proxy_with_routes(&dir).await;
    let client = Client::new();
    eventually(&client, data, "mtls.localhost", 502, "").await;
    assert_eq!(secure.requests(), 0);

    // With it, the request goes through.
    std::fs::write(dir.join("gateway.yaml"), &with_certificate).unwrap();
    eventually(&client, data, "mtls.localhost", 200, "mtls").await;

    // A certificate from another CA is refused again.
    let stranger = TestPki::new().leaf(&["gateway.local"], &[]);
    std::fs::write(
        dir.join("client-secret.yaml"),
        tls_secret_yaml("gateway-client", &stranger.cert_pem, &stranger.key_pem),
    )
    .unwrap();
    eventually(&client, data, "mtls.localhost", 502, "").await;

    // `routes check` reports a Secret that is missing on the Gateway.
    std::fs::remove_file(dir.join("client-secret.yaml")).unwrap();
    let out = bin().args(["routes", "check"]).arg(&dir).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gateway = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Gateway")
        .unwrap();
    let resolved = gateway["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ResolvedRefs")
        .unwrap();
    assert_eq!(resolved["status"], "False", "{resolved}");
    assert_eq!(resolved["reason"], "InvalidClientCertificateRef", "{resolved}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn proxy_refuses_routes_and_config_together() {
    let out = bin()
        .args(["proxy", "--routes", "a", "--config", "b"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn proxy_with_unreadable_routes_exits_naming_the_file() {
    let dir = temp_dir("proxy-bad-routes");
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
    )
    .unwrap();
    let mut cmd = bin();
    cmd.args(["proxy", "--routes"])
        .arg(&dir)
        .env("PROXY_ADDR", free_addr().to_string())
        .env("PROXY_CONFIG_ADDR", free_addr().to_string());
    let out = process::output_within(&mut cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml: document 1: v1 Pod"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
