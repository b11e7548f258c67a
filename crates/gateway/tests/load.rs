//! File mode loading: multi-document YAML, directories in path order, and errors that name the file and the
//! document at fault.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use tunnelgate_gateway::{LoadError, load_path, load_yaml_documents};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tunnelgate-gateway-load-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn multi_document_text_fills_every_kind_and_defaults_the_namespace() {
    let snapshot = load_yaml_documents(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\n\
         spec: {gatewayClassName: x, listeners: [{name: h, port: 80, protocol: HTTP}]}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n---\n\
         apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: s, namespace: team}}\n",
    )
    .unwrap();
    assert_eq!(snapshot.gateways.len(), 1);
    assert_eq!(
        snapshot.gateways[0].metadata.namespace.as_deref(),
        Some("default")
    );
    assert_eq!(snapshot.namespaces[0].metadata.namespace, None);
    assert_eq!(snapshot.services[0].metadata.namespace.as_deref(), Some("team"));
}

#[test]
fn a_schema_error_names_the_document_and_the_field() {
    let err = load_yaml_documents(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n\
         spec: {rules: [{backendRefs: [{name: app, port: eighty}]}]}\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("<input>: document 2: HTTPRoute web: "), "{text}");
    assert!(text.contains("spec.rules[0].backendRefs[0].port"), "{text}");
}

#[test]
fn unknown_kinds_and_missing_names_are_rejected_clearly() {
    let err =
        load_yaml_documents("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("apps/v1 Deployment is not a kind tunnelgate reads"),
        "{err}"
    );
    let err = load_yaml_documents("apiVersion: v1\nkind: Service\nmetadata: {}\n").unwrap_err();
    assert!(
        err.to_string().contains("Service: missing metadata.name"),
        "{err}"
    );
    let err = load_yaml_documents("kind: Service\n").unwrap_err();
    assert!(err.to_string().contains("missing apiVersion"), "{err}");
}

#[test]
fn invalid_yaml_is_reported_with_its_document() {
    let err =
        load_yaml_documents("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkey: [unclosed\n")
            .unwrap_err();
    match err {
        LoadError::Document {
            document, message, ..
        } => {
            assert_eq!(document, 2);
            assert!(message.starts_with("invalid YAML"), "{message}");
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn a_directory_is_read_recursively_in_path_order_skipping_hidden_and_other_files() {
    let dir = temp_dir("dir");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join("..data")).unwrap();
    let ns = |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
    std::fs::write(dir.join("b.yaml"), ns("b")).unwrap();
    std::fs::write(dir.join("a.yml"), ns("a")).unwrap();
    std::fs::write(
        dir.join("sub/c.json"),
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "not yaml: [").unwrap();
    std::fs::write(dir.join("..data/x.yaml"), "not yaml: [").unwrap();
    let snapshot = load_path(&dir).unwrap();
    let names: Vec<_> = snapshot
        .namespaces
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);

    std::fs::write(
        dir.join("sub/d.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
    )
    .unwrap();
    let err = load_path(&dir).unwrap_err();
    assert!(
        err.to_string().contains("sub/d.yaml: document 1: v1 Pod"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_path_is_a_read_error_naming_it() {
    let err = load_path(std::path::Path::new("/nonexistent/tunnelgate-routes")).unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }));
    assert!(
        err.to_string().starts_with("/nonexistent/tunnelgate-routes: "),
        "{err}"
    );
}
