//! Routing through the real proxy: every matcher family, hostname buckets, weights, forwarded headers and the
//! status codes the proxy generates (routing.md §2–§9).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::{Duration, Instant};

use harness::{Proxy, single_route};
use http::Method;
use serde_json::json;
use tunnelgate_proxy::ProxySettings;
use tunnelgate_testkit::{Backend, Client, Echo, empty};

#[tokio::test]
async fn path_method_header_and_query_matchers_pick_the_right_backend() {
    let proxy = Proxy::start().await;
    let exact = Backend::start("exact").await;
    let prefix = Backend::start("prefix").await;
    let regex = Backend::start("regex").await;
    let method = Backend::start("method").await;
    let header = Backend::start("header").await;
    let query = Backend::start("query").await;
    let fallback = Backend::start("fallback").await;
    let b = |x: &Backend| json!([{"url": x.url(), "weight": 1}]);
    proxy
        .push(json!({"version": 1, "rules": [
            {"hostnames": ["m.example.com"], "matches": [{"path": {"type": "Exact", "value": "/exact"}}], "backends": b(&exact)},
            {"hostnames": ["m.example.com"], "matches": [{"path": {"type": "PathPrefix", "value": "/v1/"}}], "backends": b(&prefix)},
            {"hostnames": ["m.example.com"], "matches": [{"path": {"type": "RegularExpression", "value": "^/re/[0-9]+$"}}], "backends": b(&regex)},
            {"hostnames": ["m.example.com"], "matches": [{"method": "PATCH"}], "backends": b(&method)},
            {"hostnames": ["m.example.com"], "matches": [{"headers": [{"type": "Exact", "name": "X-Tenant", "value": "blue"}]},
                                                        {"headers": [{"type": "RegularExpression", "name": "x-color", "value": "^gr[ae]y$"}]}], "backends": b(&header)},
            {"hostnames": ["m.example.com"], "matches": [{"queryParams": [{"type": "Exact", "name": "animal", "value": "whale"}]}], "backends": b(&query)},
            {"hostnames": ["m.example.com"], "backends": b(&fallback)}
        ]}))
        .await;
    let h = "m.example.com";
    let backend_of = |r: tunnelgate_testkit::Reply| {
        assert_eq!(r.status, 200, "{:?}", r.body);
        Echo::parse(&r.body).backend().to_owned()
    };
    assert_eq!(backend_of(proxy.get(h, "/exact").await), "exact");
    assert_eq!(backend_of(proxy.get(h, "/exact/").await), "fallback");
    assert_eq!(
        backend_of(proxy.get(h, "/v1").await),
        "prefix",
        "a trailing / in the prefix is ignored"
    );
    assert_eq!(backend_of(proxy.get(h, "/v1/x?y=1").await), "prefix");
    assert_eq!(backend_of(proxy.get(h, "/v1x").await), "fallback");
    assert_eq!(backend_of(proxy.get(h, "/re/42").await), "regex");
    assert_eq!(backend_of(proxy.get(h, "/re/4x").await), "fallback");
    assert_eq!(backend_of(proxy.get(h, "/q?animal=whale&x=1").await), "query");
    assert_eq!(
        backend_of(proxy.get(h, "/q?animal=dolphin&animal=whale").await),
        "fallback",
        "only the first occurrence counts"
    );

    let send = |method: Method, headers: Vec<(&'static str, &'static str)>| {
        let mut req = Client::request(method, proxy.data, h, "/any");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        proxy.client.send(req.body(empty()).unwrap())
    };
    assert_eq!(backend_of(send(Method::PATCH, vec![]).await.unwrap()), "method");
    assert_eq!(
        backend_of(send(Method::GET, vec![("x-tenant", "blue")]).await.unwrap()),
        "header"
    );
    assert_eq!(
        backend_of(send(Method::GET, vec![("x-tenant", "Blue")]).await.unwrap()),
        "fallback",
        "header values are case-sensitive"
    );
    assert_eq!(
        backend_of(send(Method::GET, vec![("X-Color", "grey")]).await.unwrap()),
        "header"
    );
}

#[tokio::test]
async fn hostnames_exact_then_wildcard_then_default_with_fall_through() {
    let proxy = Proxy::start().await;
    let exact = Backend::start("exact").await;
    let wild = Backend::start("wild").await;
    let deeper = Backend::start("deeper").await;
    let default = Backend::start("default").await;
    let b = |x: &Backend| json!([{"url": x.url(), "weight": 1}]);
    proxy
        .push(json!({"version": 1, "rules": [
            {"hostnames": ["a.example.com"], "matches": [{"path": {"type": "PathPrefix", "value": "/only"}}], "backends": b(&exact)},
            {"hostnames": ["*.example.com"], "backends": b(&wild)},
            {"hostnames": ["*.b.example.com"], "backends": b(&deeper)},
            {"backends": b(&default)}
        ]}))
        .await;
    let backend = |host: &'static str, path: &'static str| {
        let proxy = &proxy;
        async move {
            Echo::parse(&proxy.get(host, path).await.body)
                .backend()
                .to_owned()
        }
    };
    assert_eq!(backend("a.example.com", "/only/x").await, "exact");
    assert_eq!(
        backend("A.Example.COM.", "/only").await,
        "exact",
        "case and a trailing dot are folded"
    );
    assert_eq!(
        backend("a.example.com:8443", "/only").await,
        "exact",
        "the port never matters"
    );
    assert_eq!(
        backend("a.example.com", "/else").await,
        "wild",
        "an exact bucket falls through to wildcards"
    );
    assert_eq!(backend("x.y.example.com", "/").await, "wild");
    assert_eq!(
        backend("c.b.example.com", "/").await,
        "deeper",
        "the longest wildcard suffix wins"
    );
    assert_eq!(
        backend("example.com", "/").await,
        "default",
        "a wildcard never matches the apex"
    );
    assert_eq!(backend("other.test", "/").await, "default");
}

#[tokio::test]
async fn proxy_generated_statuses() {
    let proxy = Proxy::start().await;
    let ok = Backend::start("ok").await;
    // A port that nothing listens on: bind, learn the port, drop.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    proxy
        .push(json!({"version": 1, "rules": [
            {"hostnames": ["s.example.com"], "matches": [{"path": {"type": "Exact", "value": "/none"}}], "backends": []},
            {"hostnames": ["s.example.com"], "matches": [{"path": {"type": "Exact", "value": "/zero"}}],
             "backends": [{"url": ok.url(), "weight": 0}]},
            {"hostnames": ["s.example.com"], "matches": [{"path": {"type": "Exact", "value": "/rule503"}}],
             "unavailableStatus": 503, "backends": [{"url": ok.url(), "weight": 1}]},
            {"hostnames": ["s.example.com"], "matches": [{"path": {"type": "Exact", "value": "/backend502"}}],
             "backends": [{"url": "http://invalid.invalid", "weight": 1, "unavailableStatus": 502}]},
            {"hostnames": ["s.example.com"], "matches": [{"path": {"type": "Exact", "value": "/refused"}}],
             "backends": [{"url": format!("http://{closed}"), "weight": 1}]},
            {"hostnames": ["s.example.com"], "matches": [{"path": {"type": "Exact", "value": "/ok"}}],
             "backends": [{"url": ok.url(), "weight": 1}]}
        ]}))
        .await;
    let h = "s.example.com";
    let check = |path: &'static str, status: u16, body: &'static str| {
        let proxy = &proxy;
        async move {
            let r = proxy.get(h, path).await;
            assert_eq!(r.status, status, "{path}");
            assert_eq!(std::str::from_utf8(&r.body).unwrap(), body, "{path}");
            if status != 200 {
                assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
                assert_eq!(r.headers["x-content-type-options"], "nosniff");
            }
        }
    };
    check("/missing", 404, "no matching route\n").await;
    check("/none", 500, "no backend available for this route\n").await;
    check("/zero", 500, "no backend available for this route\n").await;
    check("/rule503", 503, "Service Unavailable\n").await;
    check("/backend502", 502, "backend unavailable\n").await;
    check("/refused", 502, "bad gateway\n").await;
    assert_eq!(proxy.get(h, "/ok").await.status, 200);
    assert_eq!(proxy.get("unknown.test", "/ok").await.status, 404);

    // HEAD gets the status without a body.
    let req = Client::request(Method::HEAD, proxy.data, h, "/missing")
        .body(empty())
        .unwrap();
    let r = proxy.client.send(req).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());

    // gRPC requests that match nothing get a trailers-only Unimplemented.
    let req = Client::request(Method::POST, proxy.data, h, "/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .body(empty())
        .unwrap();
    let r = proxy.client.send_h2(req).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["grpc-status"], "12");
}

#[tokio::test]
async fn timeouts_bound_time_to_headers_and_zero_disables() {
    let proxy = Proxy::start().await;
    let slow = Backend::start("slow").await;
    proxy
        .push(json!({"version": 1, "rules": [
            {"hostnames": ["t.example.com"], "matches": [{"path": {"type": "PathPrefix", "value": "/limited"}}],
             "timeouts": {"request": "500ms"}, "backends": [{"url": slow.url(), "weight": 1}]},
            {"hostnames": ["t.example.com"], "matches": [{"path": {"type": "PathPrefix", "value": "/backend"}}],
             "timeouts": {"request": "10s", "backend": "300ms"}, "backends": [{"url": slow.url(), "weight": 1}]},
            {"hostnames": ["t.example.com"], "matches": [{"path": {"type": "PathPrefix", "value": "/unlimited"}}],
             "timeouts": {"request": "0s"}, "backends": [{"url": slow.url(), "weight": 1}]},
            {"hostnames": ["t.example.com"], "matches": [{"path": {"type": "PathPrefix", "value": "/sse"}}],
             "timeouts": {"request": "300ms"}, "backends": [{"url": slow.url(), "weight": 1}]}
        ]}))
        .await;
    let started = Instant::now();
    let r = proxy.get("t.example.com", "/limited?delay=1000").await;
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(&r.body[..], b"gateway timeout\n");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1000),
        "{took:?}"
    );

    let started = Instant::now();
    assert_eq!(
        proxy.get("t.example.com", "/backend?delay=1000").await.status,
        504
    );
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "the smaller non-zero timeout applies"
    );

    assert_eq!(
        proxy.get("t.example.com", "/unlimited?delay=1000").await.status,
        200
    );
    assert_eq!(proxy.get("t.example.com", "/limited?delay=10").await.status, 200);

    // The timeout stops at the response head: a stream that pauses longer than it is not cut.
    let r = proxy.get("t.example.com", "/sse?gap=800").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"data: one\n\ndata: two\n\n");
}

#[tokio::test]
async fn weighted_backends_share_traffic_and_zero_weight_gets_none() {
    let proxy = Proxy::start().await;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let never = Backend::start("never").await;
    proxy
        .push(json!({"version": 1, "rules": [{"backends": [
            {"url": a.url(), "weight": 3}, {"url": b.url(), "weight": 1}, {"url": never.url(), "weight": 0}
        ]}]}))
        .await;
    let mut count_a = 0;
    for _ in 0..400 {
        let r = proxy.get("w.example.com", "/").await;
        if Echo::parse(&r.body).backend() == "a" {
            count_a += 1;
        }
    }
    let share = f64::from(count_a) / 400.0;
    assert!((share - 0.75).abs() < 0.08, "share of a: {share}");
    assert_eq!(never.requests(), 0);
}

#[tokio::test]
async fn forwarded_headers_host_and_hop_by_hop() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("fwd").await;
    proxy.push(single_route(1, "", &backend.url())).await;
    let req = Client::request(Method::GET, proxy.data, "fwd.example.com:8080", "/p%2Fq?a=%20b&c")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("te", "trailers")
        .header("x-original-host", "evil.example.com")
        .header("proxy-authorization", "secret")
        .body(empty())
        .unwrap();
    let r = proxy.client.send(req).await.unwrap();
    let echo = Echo::parse(&r.body);
    assert_eq!(
        echo.host(),
        "fwd.example.com:8080",
        "Host is forwarded unmodified, port included"
    );
    assert_eq!(echo.path(), "/p%2Fq", "the raw path is forwarded byte for byte");
    assert_eq!(echo.query(), Some("a=%20b&c"));
    assert_eq!(
        echo.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(echo.header("x-drop-me"), None);
    assert_eq!(echo.header("proxy-authorization"), None);
    assert_eq!(echo.header("te").as_deref(), Some("trailers"));
    assert_eq!(
        echo.header("x-original-host").as_deref(),
        Some("evil.example.com"),
        "not trusted: passed through"
    );
    assert_eq!(
        echo.header("x-forwarded-proto").as_deref(),
        Some("http"),
        "set to the request scheme when the client sent none"
    );

    // Hop-by-hop response headers are dropped too.
    let r = proxy.get("fwd.example.com", "/hop").await;
    assert_eq!(r.headers["x-end-to-end"], "kept");
    for gone in ["x-hop-secret", "keep-alive", "proxy-authenticate"] {
        assert!(!r.headers.contains_key(gone), "{gone} leaked");
    }
}

#[tokio::test]
async fn x_original_host_is_honoured_only_when_trusted() {
    let proxy = Proxy::start_with(ProxySettings {
        trust_original_host: true,
        ..ProxySettings::loopback()
    })
    .await;
    let inner = Backend::start("inner").await;
    let outer = Backend::start("outer").await;
    proxy
        .push(json!({"version": 1, "rules": [
            {"hostnames": ["inner.example.com"], "backends": [{"url": inner.url(), "weight": 1}]},
            {"backends": [{"url": outer.url(), "weight": 1}]}
        ]}))
        .await;
    let req = Client::request(Method::GET, proxy.data, "edge.example.com", "/")
        .header("x-original-host", "inner.example.com")
        .body(empty())
        .unwrap();
    let echo = Echo::parse(&proxy.client.send(req).await.unwrap().body);
    assert_eq!(echo.backend(), "inner");
    assert_eq!(echo.host(), "inner.example.com");
    assert_eq!(echo.header("x-original-host"), None, "removed before forwarding");
}

#[tokio::test]
async fn h2c_clients_are_served_on_the_same_port() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("h1").await;
    proxy
        .push(single_route(1, "h2.example.com", &backend.url()))
        .await;
    let req = Client::request(Method::GET, proxy.data, "h2.example.com", "/over/h2")
        .body(empty())
        .unwrap();
    let r = proxy.client.send_h2(req).await.unwrap();
    assert_eq!(r.status, 200);
    let echo = Echo::parse(&r.body);
    assert_eq!(echo.path(), "/over/h2");
    assert_eq!(
        echo.host(),
        "h2.example.com",
        ":authority becomes the HTTP/1.1 Host"
    );
    assert_eq!(echo.version(), "HTTP/1.1");
}
