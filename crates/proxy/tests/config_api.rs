//! The config API contract of config-api.md §2–§9, end to end over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use bytes::Bytes;
use harness::{Proxy, single_route};
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tunnelgate_proxy::ProxySettings;
use tunnelgate_testkit::{Backend, Client, empty, full, put_config};

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

async fn raw_put(
    proxy: &Proxy,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut req = Request::builder()
        .method(Method::PUT)
        .uri(format!("http://{}/config", proxy.config));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let reply = Client::new().send(req.body(full(body)).unwrap()).await.unwrap();
    let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, reply.headers, body)
}

fn with_token(token: &str) -> ProxySettings {
    ProxySettings {
        auth_token: Some(token.to_owned()),
        ..ProxySettings::loopback()
    }
}

#[tokio::test]
async fn healthz_is_always_ok_and_readyz_waits_for_a_versioned_config() {
    let proxy = Proxy::start().await;
    let health = proxy.config_get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(json_of(&health.body), json!({"status": "ok"}));
    assert_eq!(health.headers["content-type"], "application/json");

    let ready = proxy.config_get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        json_of(&ready.body),
        json!({"ready": false, "reason": "no config loaded"})
    );

    // Version 0 is accepted but does not make the proxy ready.
    proxy.push(json!({"version": 0, "rules": []})).await;
    assert_eq!(proxy.config_get("/readyz").await.status, 503);

    let status = proxy.push(json!({"version": 7, "rules": []})).await;
    assert_eq!(status["version"], 7);
    assert_eq!(status["ready"], true);
    let ready = proxy.config_get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(json_of(&ready.body), json!({"ready": true}));
}

#[tokio::test]
async fn get_config_reports_the_status_object() {
    let proxy = Proxy::start().await;
    let before = json_of(&proxy.config_get("/config").await.body);
    assert_eq!(
        before,
        json!({"version": 0, "ready": false, "rules": 0, "appliedAt": null})
    );
    let backend = Backend::start("a").await;
    let mut doc = single_route(1767225600123, "a.example.com", &backend.url());
    doc["rules"].as_array_mut().unwrap().push(json!({"backends": []}));
    let put = proxy.push(doc).await;
    let got = proxy.config_get("/config").await;
    assert_eq!(got.status, 200);
    let got = json_of(&got.body);
    assert_eq!(got, put, "PUT reply and GET /config describe the same table");
    assert_eq!(got["version"], 1767225600123i64);
    assert_eq!(got["rules"], 2);
    assert_eq!(got["ready"], true);
    let applied = got["appliedAt"].as_str().unwrap();
    assert_eq!(applied.len(), "2026-11-26T14:03:07.412Z".len(), "{applied}");
    assert!(applied.ends_with('Z') && applied.as_bytes()[19] == b'.');
}

#[tokio::test]
async fn auth_is_checked_first_and_in_constant_time() {
    let proxy = Proxy::start_with(with_token("s3cret token")).await;
    let doc = json!({"version": 1, "rules": []}).to_string();

    // No header, wrong scheme, wrong token, token prefix: all 401, even with a bad content type.
    for headers in [
        vec![("content-type", "text/plain")],
        vec![
            ("content-type", "application/json"),
            ("authorization", "Basic s3cret token"),
        ],
        vec![
            ("content-type", "application/json"),
            ("authorization", "Bearer wrong"),
        ],
        vec![
            ("content-type", "application/json"),
            ("authorization", "Bearer s3cret"),
        ],
    ] {
        let (status, resp_headers, body) = raw_put(&proxy, &headers, doc.clone()).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(resp_headers["www-authenticate"], "Bearer");
        assert_eq!(body, json!({"error": "unauthorized"}));
    }
    // The scheme is case-insensitive; the token is byte-exact.
    let (status, _, _) = raw_put(
        &proxy,
        &[
            ("content-type", "application/json"),
            ("authorization", "bEARER s3cret token"),
        ],
        doc.clone(),
    )
    .await;
    assert_eq!(status, 200);

    // GET /config is protected too; health endpoints are not.
    assert_eq!(proxy.config_get("/config").await.status, 401);
    let req = Request::builder()
        .uri(format!("http://{}/config", proxy.config))
        .header("authorization", "Bearer s3cret token")
        .body(empty())
        .unwrap();
    assert_eq!(Client::new().send(req).await.unwrap().status, 200);
    assert_eq!(proxy.config_get("/healthz").await.status, 200);
    assert_eq!(proxy.config_get("/readyz").await.status, 200);
    assert_eq!(proxy.config_get("/metrics").await.status, 200);
}

#[tokio::test]
async fn content_type_must_be_json() {
    let proxy = Proxy::start().await;
    let doc = json!({"version": 1}).to_string();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/jsonx"),
        Some("application/x-yaml"),
    ] {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
        let (status, _, body) = raw_put(&proxy, &headers, doc.clone()).await;
        assert_eq!(status, 415, "{ct:?}");
        assert_eq!(body, json!({"error": "unsupported content type"}));
    }
    let (status, _, _) = raw_put(
        &proxy,
        &[("content-type", "Application/JSON; charset=utf-8")],
        doc,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn oversized_bodies_get_413_with_the_limit() {
    let settings = ProxySettings {
        max_config_bytes: 65536,
        ..ProxySettings::loopback()
    };
    let proxy = Proxy::start_with(settings).await;
    // Declared by Content-Length.
    let big = format!(r#"{{"version":1,"pad":"{}"}}"#, "x".repeat(70_000));
    let (status, _, body) = raw_put(&proxy, &[("content-type", "application/json")], big.clone()).await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"error": "config body exceeds maximum size", "limit": 65536})
    );
    // Chunked, without Content-Length: counted while reading.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = big
        .as_bytes()
        .chunks(8192)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(futures::stream::iter(chunks)));
    let body = http_body_util::BodyExt::map_err(body, |e| match e {});
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("http://{}/config", proxy.config))
        .header("content-type", "application/json")
        .body(http_body_util::BodyExt::boxed(body))
        .unwrap();
    let reply = Client::new().send(req).await.unwrap();
    assert_eq!(reply.status, 413);
    // Exactly at the limit is fine.
    let pad = 65536 - r#"{"version":1,"pad":""}"#.len();
    let exact = format!(r#"{{"version":1,"pad":"{}"}}"#, "x".repeat(pad));
    assert_eq!(exact.len(), 65536);
    let (status, _, _) = raw_put(&proxy, &[("content-type", "application/json")], exact).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_json_and_invalid_configs_get_400_with_a_path() {
    let proxy = Proxy::start().await;
    let ct = [("content-type", "application/json")];
    let (status, _, body) = raw_put(&proxy, &ct, "{not json").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().starts_with("invalid JSON"),
        "{body}"
    );

    let (status, _, body) = raw_put(&proxy, &ct, r#"{"version":1} x"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = raw_put(&proxy, &ct, "{\"version\":1}  \n").await;
    assert_eq!(status, 200, "trailing whitespace is fine");

    let (status, _, body) = raw_put(
        &proxy,
        &ct,
        r#"{"version":2,"rules":[{"backends":[],"timeouts":{"request":"ten seconds"}}]}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["path"], "rules[0].timeouts.request", "{body}");

    let bad_regex = json!({"version": 2, "rules": [
        {"backends": []},
        {"matches": [{"path": {"type": "RegularExpression", "value": "^/(unclosed"}}], "backends": []}
    ]});
    let (status, _, body) = raw_put(&proxy, &ct, bad_regex.to_string()).await;
    assert_eq!(status, 400, "an invalid regex is a 400, never a 500");
    assert_eq!(body["path"], "rules[1].matches[0].path.value", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("regular expression"),
        "{body}"
    );

    let (status, _, body) = raw_put(&proxy, &ct, json!({"version": -1}).to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(body["path"], "version");

    let bad_url = json!({"version": 2, "rules": [{"backends": [{"url": "ftp://x", "weight": 1}]}]});
    let (status, _, body) = raw_put(&proxy, &ct, bad_url.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(body["path"], "rules[0].backends[0].url", "{body}");

    // Nothing of the rejected documents was applied.
    let status = json_of(&proxy.config_get("/config").await.body);
    assert_eq!(status["version"], 1);
}

#[tokio::test]
async fn stale_versions_get_409_and_change_nothing() {
    let proxy = Proxy::start().await;
    proxy
        .push(json!({"version": 10, "rules": [{"backends": []}]}))
        .await;
    let (status, body) = put_config(proxy.config, None, json!({"version": 9, "rules": []}).to_string()).await;
    assert_eq!(status, 409);
    assert_eq!(
        body,
        json!({"error": "stale config version", "current": 10, "received": 9})
    );
    let now = json_of(&proxy.config_get("/config").await.body);
    assert_eq!(now["version"], 10);
    assert_eq!(now["rules"], 1);
    // Equal version re-applies; version 0 applies without lowering the version.
    assert_eq!(proxy.push(json!({"version": 10, "rules": []})).await["rules"], 0);
    let zero = proxy
        .push(json!({"version": 0, "rules": [{"backends": []}]}))
        .await;
    assert_eq!(zero["version"], 10);
    assert_eq!(zero["rules"], 1);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let proxy = Proxy::start().await;
    for path in ["/nope", "/config/", "/healthz/", "/"] {
        let r = proxy.config_get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(json_of(&r.body), json!({"error": "not found"}));
    }
    for (method, path, allow) in [
        (Method::POST, "/config", "GET, HEAD, PUT"),
        (Method::DELETE, "/healthz", "GET, HEAD"),
        (Method::PUT, "/readyz", "GET, HEAD"),
        (Method::POST, "/metrics", "GET, HEAD"),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{path}", proxy.config))
            .body(empty())
            .unwrap();
        let r = Client::new().send(req).await.unwrap();
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.headers["allow"], allow);
        assert_eq!(json_of(&r.body), json!({"error": "method not allowed"}));
    }
    // A query string is ignored; HEAD answers like GET without a body.
    assert_eq!(proxy.config_get("/healthz?x=1").await.status, 200);
    let req = Request::builder()
        .method(Method::HEAD)
        .uri(format!("http://{}/readyz", proxy.config))
        .body(empty())
        .unwrap();
    let r = Client::new().send(req).await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body.is_empty());
}

/// Concurrent pushes queue for the bounded apply threads: every one is answered (200, or 409 when a newer
/// version won first), none fails, and the newest version ends up active.
#[tokio::test]
async fn concurrent_pushes_are_all_answered_and_the_newest_wins() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("c").await;
    let pushes = (1..=8i64).map(|version| {
        let doc = single_route(version, "c.example.com", &backend.url()).to_string();
        put_config(proxy.config, proxy.token.as_deref(), doc)
    });
    let replies = futures::future::join_all(pushes).await;
    for (status, body) in &replies {
        assert!(
            *status == StatusCode::OK || *status == StatusCode::CONFLICT,
            "{status} {body}"
        );
    }
    let status = json_of(&proxy.config_get("/config").await.body);
    assert_eq!(status["version"], 8, "{status}");
    assert_eq!(proxy.get("c.example.com", "/").await.status, 200);
}

/// The `hostname` label set follows the active config: series of a pattern that the new config no longer routes
/// are removed, those of patterns it keeps go on counting, and a pattern that comes back starts from zero.
#[tokio::test]
async fn metric_series_of_patterns_left_out_of_the_config_are_removed() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("m").await;
    let url = backend.url();
    let two = |version: i64, hosts: [&str; 2]| {
        serde_json::json!({
            "version": version,
            "rules": [
                {"hostnames": [hosts[0]], "backends": [{"url": url, "weight": 1}]},
                {"hostnames": [hosts[1]], "backends": [{"url": url, "weight": 1}]},
            ],
        })
    };
    let series = |host: &str, n: u32| {
        format!(r#"cftunnel_proxy_requests_total{{hostname="{host}",status_class="2xx"}} {n}"#)
    };
    proxy.push(two(1, ["kept.example.com", "gone.example.com"])).await;
    assert_eq!(proxy.get("kept.example.com", "/").await.status, 200);
    assert_eq!(proxy.get("gone.example.com", "/").await.status, 200);
    let text = String::from_utf8(proxy.config_get("/metrics").await.body.to_vec()).unwrap();
    assert!(text.contains(&series("gone.example.com", 1)), "{text}");

    proxy.push(two(2, ["kept.example.com", "new.example.com"])).await;
    assert_eq!(proxy.get("kept.example.com", "/").await.status, 200);
    let text = String::from_utf8(proxy.config_get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        !text.contains("gone.example.com"),
        "series of a removed pattern kept:\n{text}"
    );
    assert!(text.contains(&series("kept.example.com", 2)), "{text}");

    proxy.push(two(3, ["kept.example.com", "gone.example.com"])).await;
    assert_eq!(proxy.get("gone.example.com", "/").await.status, 200);
    let text = String::from_utf8(proxy.config_get("/metrics").await.body.to_vec()).unwrap();
    assert!(text.contains(&series("gone.example.com", 1)), "{text}");
    assert!(text.contains(&series("kept.example.com", 2)), "{text}");
}

#[tokio::test]
async fn metrics_are_exported_and_can_be_disabled() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("m").await;
    proxy
        .push(single_route(3, "metrics.example.com", &backend.url()))
        .await;
    assert_eq!(proxy.get("metrics.example.com", "/x").await.status, 200);
    assert_eq!(proxy.get("other.example.com", "/x").await.status, 404);
    let _ = put_config(proxy.config, None, "{").await;
    let text = String::from_utf8(proxy.config_get("/metrics").await.body.to_vec()).unwrap();
    for needle in [
        "cftunnel_proxy_requests_in_flight",
        "cftunnel_proxy_websocket_active_sessions",
        r#"cftunnel_proxy_requests_total{hostname="metrics.example.com",status_class="2xx"} 1"#,
        r#"cftunnel_proxy_requests_total{hostname="unmatched",status_class="4xx"} 1"#,
        r#"cftunnel_proxy_request_duration_seconds_bucket{le="30.0",hostname="metrics.example.com"} 1"#,
        "cftunnel_proxy_backend_errors_total",
        "cftunnel_proxy_response_bytes_total",
        "tunnelgate_proxy_config_version 3",
        "tunnelgate_proxy_config_rules 1",
        r#"tunnelgate_proxy_config_applies_total{result="ok"} 1"#,
        r#"tunnelgate_proxy_config_applies_total{result="invalid"} 1"#,
        "tunnelgate_proxy_config_apply_seconds_count 1",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    let disabled = Proxy::start_with(ProxySettings {
        metrics_enabled: false,
        ..ProxySettings::loopback()
    })
    .await;
    assert_eq!(disabled.config_get("/metrics").await.status, 404);
}
