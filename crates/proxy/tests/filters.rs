//! Every filter of routing.md §5, at rule and backend level, through the real proxy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::{Duration, Instant};

use harness::Proxy;
use http::Method;
use serde_json::json;
use tunnelgate_testkit::{Backend, Client, Echo, empty, full};

#[tokio::test]
async fn header_modifiers_set_add_remove_in_both_directions() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("hm").await;
    proxy
        .push(json!({"version": 1, "rules": [{
            "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [{"name": "X-Env", "value": "prod"}],
                    "add": [{"name": "X-Hop", "value": "tunnelgate"}],
                    "remove": ["X-Debug"]}},
                {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                    "set": [{"name": "X-Backend", "value": "hidden"}],
                    "add": [{"name": "X-Served-By", "value": "proxy"}],
                    "remove": ["Content-Type"]}}
            ],
            "backends": [{"url": backend.url(), "weight": 1, "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "X-Backend-Level", "value": "yes"}]}},
                {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "X-Canary", "value": "1"}]}}
            ]}]
        }]}))
        .await;
    let req = Client::request(Method::GET, proxy.data, "h.example.com", "/")
        .header("x-env", "dev")
        .header("x-env", "test")
        .header("x-hop", "client")
        .header("x-debug", "1")
        .body(empty())
        .unwrap();
    let r = proxy.client.send(req).await.unwrap();
    let echo = Echo::parse(&r.body);
    assert_eq!(echo.header("x-env").as_deref(), Some("prod"));
    assert_eq!(echo.header("x-hop").as_deref(), Some("client,tunnelgate"));
    assert_eq!(echo.header("x-debug"), None);
    assert_eq!(echo.header("x-backend-level").as_deref(), Some("yes"));
    assert_eq!(r.headers["x-backend"], "hidden");
    assert_eq!(r.headers["x-served-by"], "proxy");
    assert_eq!(r.headers["x-canary"], "1");
    assert!(!r.headers.contains_key("content-type"));
}

#[tokio::test]
async fn redirects_short_circuit_without_contacting_a_backend() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("never").await;
    proxy
        .push(json!({"version": 1, "rules": [
            {"hostnames": ["r.example.com"], "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
             "filters": [{"type": "RequestRedirect", "requestRedirect": {
                 "scheme": "https", "hostname": "www.example.com", "port": 8443,
                 "path": {"type": "ReplacePrefixMatch", "value": "/new"}, "statusCode": 308}}],
             "backends": [{"url": backend.url(), "weight": 1}]},
            {"hostnames": ["r.example.com"], "matches": [{"path": {"type": "PathPrefix", "value": "/plain"}}],
             "filters": [{"type": "RequestRedirect", "requestRedirect": {}}],
             "backends": []}
        ]}))
        .await;
    let r = proxy.get("r.example.com", "/old/page?x=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "https://www.example.com:8443/new/page?x=1");
    assert_eq!(r.headers["content-length"], "0");
    assert!(r.body.is_empty());
    let r = proxy.get("r.example.com:8080", "/plain").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "http://r.example.com:8080/plain");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn url_rewrite_changes_path_and_host() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("rw").await;
    proxy
        .push(json!({"version": 1, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api/"}}],
             "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "api.internal",
                 "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}}],
             "backends": [{"url": backend.url(), "weight": 1}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/full"}}],
             "filters": [{"type": "URLRewrite", "urlRewrite": {
                 "path": {"type": "ReplaceFullPath", "replaceFullPath": "/download"}}}],
             "backends": [{"url": backend.url(), "weight": 1}]}
        ]}))
        .await;
    let echo = Echo::parse(&proxy.get("shop.example.com", "/api/items?page=2").await.body);
    assert_eq!(echo.path(), "/v2/items");
    assert_eq!(echo.query(), Some("page=2"));
    assert_eq!(echo.host(), "api.internal");
    let echo = Echo::parse(&proxy.get("shop.example.com", "/api/").await.body);
    assert_eq!(echo.path(), "/v2/");
    let echo = Echo::parse(&proxy.get("shop.example.com", "/full/a/b").await.body);
    assert_eq!(echo.path(), "/download");
    assert_eq!(echo.host(), "shop.example.com");
}

#[tokio::test]
async fn cors_preflight_is_answered_and_actual_responses_get_headers() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("cors").await;
    proxy
        .push(json!({"version": 1, "rules": [{
            "filters": [{"type": "CORS", "cors": {
                "allowOrigins": ["https://www.example.com", "https://*.example.org"],
                "allowMethods": ["GET", "POST"], "allowHeaders": ["X-Requested-With"],
                "exposeHeaders": ["X-Request-Id"], "allowCredentials": true, "maxAge": 600}}],
            "backends": [{"url": backend.url(), "weight": 1}]
        }]}))
        .await;
    let preflight = Client::request(Method::OPTIONS, proxy.data, "cdn.example.com", "/x")
        .header("origin", "https://a.example.org:443")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-requested-with")
        .body(empty())
        .unwrap();
    let r = proxy.client.send(preflight).await.unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://a.example.org:443"
    );
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(r.headers["access-control-allow-methods"], "GET, POST");
    assert_eq!(r.headers["access-control-max-age"], "600");
    assert!(r.headers.contains_key("vary"));
    assert_eq!(backend.requests(), 0, "preflights are never forwarded");

    let denied = Client::request(Method::OPTIONS, proxy.data, "cdn.example.com", "/x")
        .header("origin", "https://evil.test")
        .header("access-control-request-method", "POST")
        .body(empty())
        .unwrap();
    let r = proxy.client.send(denied).await.unwrap();
    assert_eq!(r.status, 204);
    assert!(!r.headers.contains_key("access-control-allow-origin"));

    let actual = Client::request(Method::GET, proxy.data, "cdn.example.com", "/x")
        .header("origin", "https://www.example.com")
        .body(empty())
        .unwrap();
    let r = proxy.client.send(actual).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://www.example.com"
    );
    assert_eq!(r.headers["access-control-expose-headers"], "X-Request-Id");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn mirrors_get_copies_without_delaying_the_primary() {
    let proxy = Proxy::start().await;
    let primary = Backend::start("primary").await;
    let shadow = Backend::start("shadow").await;
    let slow_shadow = Backend::start_with(
        "slow-shadow",
        tunnelgate_testkit::BackendOptions {
            delay: Some(Duration::from_secs(2)),
            ..Default::default()
        },
    )
    .await;
    let never = Backend::start("never").await;
    proxy
        .push(json!({"version": 1, "rules": [
            {"hostnames": ["m.example.com"],
             "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "X-Before", "value": "1"}]}},
                {"type": "RequestMirror", "requestMirror": {"backendUrl": shadow.url()}},
                {"type": "RequestMirror", "requestMirror": {"backendUrl": never.url(), "percent": 0}},
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "X-After", "value": "1"}]}}
             ],
             "backends": [{"url": primary.url(), "weight": 1}]},
            {"hostnames": ["slow.example.com"],
             "filters": [{"type": "RequestMirror", "requestMirror": {"backendUrl": slow_shadow.url()}}],
             "backends": [{"url": primary.url(), "weight": 1}]}
        ]}))
        .await;

    // A copy with the headers as modified up to the mirror filter, and the full body.
    let body = vec![7u8; 10_000];
    let req = Client::request(Method::POST, proxy.data, "m.example.com", "/submit?q=1")
        .body(full(body))
        .unwrap();
    let r = proxy.client.send(req).await.unwrap();
    assert_eq!(Echo::parse(&r.body).backend(), "primary");
    assert_eq!(shadow.wait_requests(1, Duration::from_secs(5)).await, 1);
    let copy = &shadow.recorded()[0];
    assert_eq!(copy.method, "POST");
    assert_eq!(copy.path, "/submit");
    assert_eq!(copy.body_len, 10_000);
    assert_eq!(copy.headers["x-before"], "1");
    assert!(!copy.headers.contains_key("x-after"));
    assert_eq!(
        copy.headers["host"].to_str().unwrap(),
        shadow.addr.to_string(),
        "the mirror's Host is its own authority"
    );

    // A mirror target that takes 2 s to answer does not slow the primary down.
    let slow_path = "/x";
    let started = Instant::now();
    let r = proxy.get("slow.example.com", slow_path).await;
    assert_eq!(r.status, 200);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1000), "primary took {took:?}");
    assert_eq!(slow_shadow.wait_requests(1, Duration::from_secs(5)).await, 1);
    assert_eq!(never.requests(), 0, "percent 0 never mirrors");
}
