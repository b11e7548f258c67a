//! The config API under hostile or broken pushes: every malformed input class gets a 4xx with a JSON error and
//! the previous config keeps serving; pushes racing each other end at the highest version; bad and stale
//! pushes mixed into swaps under load fail no request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hardening_support;
mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hardening_support::raw_exchange;
use harness::Proxy;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tunnelgate_proxy::ProxySettings;
use tunnelgate_testkit::{Backend, Client, Echo, full};

/// `PUT /config` with exactly these body bytes.
async fn put_raw(config: SocketAddr, body: impl Into<Bytes>) -> (StatusCode, String, Option<String>) {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("http://{config}/config"))
        .header("content-type", "application/json")
        .body(full(body.into()))
        .unwrap();
    let reply = Client::new().send(req).await.expect("PUT /config answered");
    let content_type = reply
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
        content_type,
    )
}

/// The proxy with a 1 MiB body limit, serving version 7 that routes everything to backend "old".
async fn serving_proxy() -> (Proxy, Backend) {
    let proxy = Proxy::start_with(ProxySettings {
        max_config_bytes: 1 << 20,
        ..ProxySettings::loopback()
    })
    .await;
    let old = Backend::start("old").await;
    proxy
        .push(json!({"version": 7, "rules": [{"backends": [{"url": old.url(), "weight": 1}]}]}))
        .await;
    (proxy, old)
}

async fn assert_old_config_serves(proxy: &Proxy, case: &str) {
    let status: Value = serde_json::from_slice(&proxy.config_get("/config").await.body).unwrap();
    assert_eq!(status["version"], 7, "{case}: version changed");
    assert_eq!(status["rules"], 1, "{case}: rules changed");
    let reply = proxy.get("app.example.com", "/still-there").await;
    assert_eq!(reply.status, 200, "{case}: data path broken");
    assert_eq!(
        Echo::parse(&reply.body).backend(),
        "old",
        "{case}: routed elsewhere"
    );
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Every class of malformed document, with the status it must get.
fn malformed_documents(backend: &str) -> Vec<(&'static str, Vec<u8>, u16)> {
    let ok_backend = json!([{"url": backend, "weight": 1}]);
    let doc = |rules: Value| json!({"version": 8, "rules": rules}).to_string().into_bytes();
    let mut cases: Vec<(&'static str, Vec<u8>, u16)> = vec![
        // Not a document at all.
        ("empty body", b"".to_vec(), 400),
        ("whitespace only", b" \n\t ".to_vec(), 400),
        ("top-level array", b"[]".to_vec(), 400),
        ("top-level string", br#""config""#.to_vec(), 400),
        ("top-level null", b"null".to_vec(), 400),
        (
            "truncated",
            br#"{"version": 8, "rules": [{"backends": ["#.to_vec(),
            400,
        ),
        ("trailing garbage", br#"{"version": 8} x"#.to_vec(), 400),
        ("two documents", br#"{"version": 8}{"version": 9}"#.to_vec(), 400),
        ("comment", b"{\"version\": 8 /* hi */}".to_vec(), 400),
        ("single quotes", b"{'version': 8}".to_vec(), 400),
        // Wrong types.
        ("version as string", br#"{"version": "8"}"#.to_vec(), 400),
        ("version as float", br#"{"version": 8.5}"#.to_vec(), 400),
        (
            "version past int64",
            br#"{"version": 9223372036854775808}"#.to_vec(),
            400,
        ),
        ("negative version", br#"{"version": -1}"#.to_vec(), 400),
        ("rules as object", br#"{"version": 8, "rules": {}}"#.to_vec(), 400),
        (
            "weight as string",
            doc(json!([{"backends": [{"url": backend, "weight": "1"}]}])),
            400,
        ),
        (
            "weight past int32",
            doc(json!([{"backends": [{"url": backend, "weight": 2147483648_i64}]}])),
            400,
        ),
        (
            "url as number",
            doc(json!([{"backends": [{"url": 1, "weight": 1}]}])),
            400,
        ),
        (
            "hostnames as string",
            doc(json!([{"hostnames": "a.example.com", "backends": ok_backend}])),
            400,
        ),
        (
            "duration as number",
            doc(json!([{"timeouts": {"request": 5}, "backends": ok_backend}])),
            400,
        ),
        (
            "malformed duration",
            doc(json!([{"timeouts": {"request": "5 seconds"}, "backends": ok_backend}])),
            400,
        ),
        // Unknown enum values.
        (
            "unknown path type",
            doc(json!([{"matches": [{"path": {"type": "Prefix", "value": "/"}}], "backends": ok_backend}])),
            400,
        ),
        (
            "unknown filter type",
            doc(json!([{"filters": [{"type": "Rewrite"}], "backends": ok_backend}])),
            400,
        ),
        (
            "unknown header match type",
            doc(
                json!([{"matches": [{"headers": [{"type": "Contains", "name": "a", "value": "b"}]}], "backends": ok_backend}]),
            ),
            400,
        ),
        (
            "unknown backend protocol",
            doc(json!([{"backends": [{"url": backend, "weight": 1, "protocol": "h3"}]}])),
            400,
        ),
        (
            "unknown redirect scheme",
            doc(
                json!([{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "ftp"}}], "backends": ok_backend}]),
            ),
            400,
        ),
        (
            "empty type",
            doc(json!([{"matches": [{"path": {"type": "", "value": "/"}}], "backends": ok_backend}])),
            400,
        ),
        // Invalid values.
        (
            "invalid regex",
            doc(
                json!([{"matches": [{"path": {"type": "RegularExpression", "value": "(unclosed"}}], "backends": ok_backend}]),
            ),
            400,
        ),
        (
            "regex past the size limit",
            doc(
                json!([{"matches": [{"path": {"type": "RegularExpression", "value": "(a{1000}){1000}"}}], "backends": ok_backend}]),
            ),
            400,
        ),
        (
            "backend url with userinfo",
            doc(json!([{"backends": [{"url": "http://user:pw@a.example.com", "weight": 1}]}])),
            400,
        ),
        (
            "NUL in a hostname",
            doc(json!([{"hostnames": ["a\u{0}.example.com"], "backends": ok_backend}])),
            400,
        ),
        (
            "CRLF in a header value",
            doc(
                json!([{"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "a\r\nInjected: 1"}]}}], "backends": ok_backend}]),
            ),
            400,
        ),
        (
            "one-megabyte hostname",
            doc(json!([{"hostnames": ["a".repeat(900_000)], "backends": ok_backend}])),
            400,
        ),
        // Encoding.
        (
            "invalid UTF-8 in a known field",
            b"{\"version\": 8, \"rules\": [{\"hostnames\": [\"\xff\xfe\"]}]}".to_vec(),
            400,
        ),
        (
            "invalid UTF-8 in an unknown field",
            b"{\"version\": 8, \"note\": \"\xc3\x28\"}".to_vec(),
            400,
        ),
        (
            "lone surrogate",
            br#"{"version": 8, "rules": [{"hostnames": ["\ud800"]}]}"#.to_vec(),
            400,
        ),
        (
            "UTF-16 body",
            "{\"version\": 8}"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
            400,
        ),
        // Duplicate keys.
        (
            "duplicate version",
            br#"{"version": 8, "version": 9}"#.to_vec(),
            400,
        ),
        (
            "duplicate nested key",
            format!(r#"{{"version": 8, "rules": [{{"backends": [], "backends": {ok_backend}}}]}}"#)
                .into_bytes(),
            400,
        ),
        // Deep nesting, in a known and in an unknown field.
        (
            "deep nesting in rules",
            format!(r#"{{"version": 8, "rules": {}}}"#, nested(10_000)).into_bytes(),
            400,
        ),
        // Huge arrays: wrong-typed (rejected at the first element) and past the body limit (413).
        (
            "huge array of wrong types",
            format!(r#"{{"version": 8, "rules": [{}0]}}"#, "0,".repeat(400_000)).into_bytes(),
            400,
        ),
        (
            "huge array past the limit",
            format!(r#"{{"version": 8, "rules": [{}{{}}]}}"#, "{},".repeat(400_000)).into_bytes(),
            413,
        ),
    ];
    // A stale version is also a 4xx that changes nothing.
    cases.push((
        "stale version",
        doc(json!([{"backends": ok_backend}])).replace_version(6),
        409,
    ));
    cases
}

trait ReplaceVersion {
    fn replace_version(self, v: i64) -> Vec<u8>;
}

impl ReplaceVersion for Vec<u8> {
    fn replace_version(self, v: i64) -> Vec<u8> {
        let mut doc: Value = serde_json::from_slice(&self).unwrap();
        doc["version"] = json!(v);
        doc.to_string().into_bytes()
    }
}

#[tokio::test]
async fn every_malformed_input_class_gets_a_json_4xx_and_the_old_config_keeps_serving() {
    let (proxy, old) = serving_proxy().await;
    let other = Backend::start("other").await;
    for (case, body, want) in malformed_documents(&other.url()) {
        let (status, body, content_type) = put_raw(proxy.config, body).await;
        assert_eq!(status.as_u16(), want, "{case}: {body}");
        assert_eq!(content_type.as_deref(), Some("application/json"), "{case}");
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{case}: body {body:?}: {e}"));
        let error = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: no error in {body}"));
        assert!(
            !error.is_empty() && !error.contains('\n'),
            "{case}: error {error:?}"
        );
        assert!(
            body.len() < 4096,
            "{case}: error body of {} bytes echoes the input",
            body.len()
        );
        assert_old_config_serves(&proxy, case).await;
    }
    assert_eq!(other.requests(), 0);
    assert!(old.requests() > 0);
}

#[tokio::test]
async fn oversized_bodies_get_413_however_they_are_framed() {
    let (proxy, _old) = serving_proxy().await;
    let limit = 1usize << 20;
    let big = format!(r#"{{"version": 8, "pad": "{}"}}"#, "p".repeat(limit));
    // Declared length over the limit: refused before the body is read.
    let head = format!(
        "PUT /config HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        1u64 << 40
    );
    let reply = raw_exchange(proxy.config, head.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(reply.status(), Some(413), "{}", reply.text());
    // Chunked, no length: cut once the limit is passed.
    let mut chunked = b"PUT /config HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for piece in big.as_bytes().chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = raw_exchange(proxy.config, &chunked, Duration::from_secs(10)).await;
    assert_eq!(reply.status(), Some(413), "{}", reply.text());
    let body = reply.text();
    let json: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
    assert_eq!(json["limit"], limit);
    // Exactly at the limit is not too large (it is a document with an unknown field).
    let at_limit = format!(r#"{{"version": 7, "pad": "{}"}}"#, "p".repeat(limit - 25));
    assert_eq!(at_limit.len(), limit);
    let (status, body, _) = put_raw(proxy.config, at_limit).await;
    assert_ne!(status, 413, "{body}");
}

/// Unknown fields are ignored at every level (config-api.md §2.1), however deep: they are skipped without
/// recursion, so a deeply nested one is accepted and the process stays up.
#[tokio::test]
async fn deep_nesting_in_an_ignored_field_is_skipped_without_recursion() {
    let (proxy, old) = serving_proxy().await;
    let doc = format!(
        r#"{{"version": 7, "extra": {}, "rules": [{{"backends": [{{"url": "{}", "weight": 1}}]}}]}}"#,
        nested(200_000),
        old.url()
    );
    let (status, body, _) = put_raw(proxy.config, doc).await;
    assert_eq!(status, 200, "{body}");
    assert_old_config_serves(&proxy, "deep ignored nesting").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_end_at_the_highest_version() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("b").await;
    let doc = |v: i64| {
        json!({"version": v, "rules": [
            {"hostnames": [format!("v{v}.example.com")], "backends": [{"url": backend.url(), "weight": 1}]}
        ]})
        .to_string()
    };
    // Versions 1..=40 in a scrambled order, all in flight at once, several times each.
    let mut order: Vec<i64> = (1..=40).chain(1..=40).chain(1..=40).collect();
    for i in 0..order.len() {
        let j = (i * 7919 + 13) % order.len();
        order.swap(i, j);
    }
    let mut tasks = Vec::new();
    for v in order {
        let (config, body) = (proxy.config, doc(v));
        tasks.push(tokio::spawn(async move { (v, put_raw(config, body).await.0) }));
    }
    for t in tasks {
        let (v, status) = t.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "version {v}: {status}"
        );
        if v == 40 {
            assert_eq!(status, StatusCode::OK, "the highest version is never stale");
        }
    }
    let status: Value = serde_json::from_slice(&proxy.config_get("/config").await.body).unwrap();
    assert_eq!(status["version"], 40);
    assert_eq!(proxy.get("v40.example.com", "/").await.status, 200);
    assert_eq!(proxy.get("v39.example.com", "/").await.status, 404);
}

/// Valid swaps with invalid and stale pushes mixed in, under load from 4 clients: no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_and_stale_pushes_during_swaps_under_load_fail_no_request() {
    let proxy = Proxy::start().await;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let doc = |v: i64| {
        let url = if v % 2 == 0 { a.url() } else { b.url() };
        json!({"version": v, "rules": [{"hostnames": ["load.example.com"], "backends": [{"url": url, "weight": 1}]}]})
            .to_string()
    };
    proxy.push(serde_json::from_str(&doc(1)).unwrap()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), proxy.data);
        clients.push(tokio::spawn(async move {
            let client = Client::new();
            while !stop.load(Ordering::Relaxed) {
                let reply = client.get(addr, "load.example.com", "/").await;
                if reply.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for v in 2..=101 {
        let (status, body, _) = put_raw(proxy.config, doc(v)).await;
        assert_eq!(status, 200, "{body}");
        let bad = format!(
            r#"{{"version": {}, "rules": [{{"matches": [{{"path": {{"type": "RegularExpression", "value": "("}}}}]}}]}}"#,
            v + 1
        );
        assert_eq!(put_raw(proxy.config, bad).await.0, 400);
        assert_eq!(put_raw(proxy.config, doc(v - 1)).await.0, 409);
        assert_eq!(
            put_raw(proxy.config, &b"{\"version\": 1000, \"rules\": 5}"[..])
                .await
                .0,
            400
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let ok = ok.load(Ordering::Relaxed);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{ok} requests succeeded");
    assert!(ok >= 100, "only {ok} requests ran during 100 swaps");
    let status: Value = serde_json::from_slice(&proxy.config_get("/config").await.body).unwrap();
    assert_eq!(status["version"], 101);
    eprintln!("swaps under load: 100 valid + 300 rejected pushes, {ok} requests, 0 failed");
}
