//! Table-driven translation tests: every directory under `tests/fixtures/` holds `input.yaml` (Gateway API and
//! core objects) and `expected.json` (the `routes check` report: the config document and each object's status).
//! Optional `options.json` overrides translation options (`backendResolution`, `configAcknowledged`,
//! `gatewayAddresses`, `bundleVersion`, `adopt`, `rejectGrpcRoutes`).
//!
//! `UPDATE_FIXTURES=1 cargo test -p tunnelgate-gateway --test fixtures` rewrites `expected.json` from the
//! current output; review the diff before committing it.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use tunnelgate_gateway::{BackendResolution, Time, TranslateOptions, check, load_path, translate};

fn options(dir: &Path) -> TranslateOptions {
    let mut opts = TranslateOptions {
        now: Time("2026-01-01T00:00:00Z".parse().unwrap()),
        adopt_gateways_without_class: true,
        ..Default::default()
    };
    let Ok(text) = std::fs::read_to_string(dir.join("options.json")) else {
        return opts;
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    if v["backendResolution"] == "dns" {
        opts.backend_resolution = BackendResolution::Dns;
    }
    if let Some(b) = v["configAcknowledged"].as_bool() {
        opts.config_acknowledged = b;
    }
    if let Some(b) = v["adopt"].as_bool() {
        opts.adopt_gateways_without_class = b;
    }
    if let Some(a) = v["gatewayAddresses"].as_array() {
        opts.gateway_addresses = a.iter().map(|x| x.as_str().unwrap().to_owned()).collect();
    }
    if let Some(b) = v["rejectGrpcRoutes"].as_bool() {
        opts.reject_grpc_routes = b;
    }
    if let Some(b) = v["bundleVersion"].as_str() {
        opts.bundle_version = Some(b.to_owned());
    }
    opts
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn fixtures_translate_to_the_expected_config_and_status() {
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    let mut failures = Vec::new();
    let cases = cases();
    assert!(update || cases.len() >= 10, "fixture directories are missing");
    for dir in cases {
        let snapshot =
            load_path(&dir.join("input.yaml")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let opts = options(&dir);
        let actual = check(&snapshot, &opts).document;
        let expected_path = dir.join("expected.json");
        if update {
            let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
            std::fs::write(&expected_path, text).unwrap();
            continue;
        }
        let expected: serde_json::Value = match std::fs::read_to_string(&expected_path) {
            Ok(t) => serde_json::from_str(&t).unwrap(),
            Err(e) => panic!("{}: {e}", expected_path.display()),
        };
        if actual != expected {
            failures.push(format!(
                "{}: actual output differs from expected.json:\n{}",
                dir.display(),
                serde_json::to_string_pretty(&actual).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_translated_config_compiles_in_the_proxy_route_table() {
    for dir in cases() {
        let snapshot = load_path(&dir.join("input.yaml")).unwrap();
        let translation = translate(&snapshot, &options(&dir));
        if let Err(e) = tunnelgate_route::RouteTable::compile(&translation.config) {
            panic!("{}: the translated config does not compile: {e}", dir.display());
        }
    }
}
