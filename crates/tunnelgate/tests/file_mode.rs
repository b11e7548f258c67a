//! File mode, black-box: the real `tunnelgate` binary reading Gateway API YAML.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tunnelgate")
}

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
    let out = Command::new(bin())
        .args(["routes", "check"])
        .arg(&dir)
        .output()
        .unwrap();
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

    let yaml = Command::new(bin())
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
    let out = Command::new(bin())
        .args(["routes", "check"])
        .arg(&dir)
        .output()
        .unwrap();
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
fn routes_check_reports_a_bad_file_by_name_and_document() {
    let dir = temp_dir("check-invalid");
    std::fs::write(dir.join("a.yaml"), GATEWAY).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\nnot: [valid\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["routes", "check"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("b.yaml: document 2: invalid YAML"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_shipped_example_directory_checks_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/file-mode");
    let out = Command::new(bin())
        .args(["routes", "check"])
        .arg(&dir)
        .output()
        .unwrap();
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
