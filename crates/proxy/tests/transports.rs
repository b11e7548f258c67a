//! Backend transports: WebSocket upgrades, h2c backends and TLS backends (CA bundle, SNI, SAN lists, client
//! certificates).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use harness::Proxy;
use http::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tunnelgate_testkit::{Backend, BackendOptions, Client, Echo, TestPki, empty};

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("ws").await;
    proxy
        .push(json!({"version": 1, "rules": [{"hostnames": ["ws.example.com"],
            "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "X-Upgraded", "value": "yes"}]}}],
            "backends": [{"url": backend.url(), "weight": 1}]}]}))
        .await;
    let stream = tokio::net::TcpStream::connect(proxy.data).await.unwrap();
    let request = http::Request::builder()
        .uri(format!("ws://{}/chat", proxy.data))
        .header("host", "ws.example.com")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()["x-upgraded"],
        "yes",
        "response filters apply to the 101"
    );
    for text in ["hello", "world"] {
        ws.send(Message::text(text)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), format!("ws: {text}"));
    }
    // A config swap does not cut the session.
    proxy.push(json!({"version": 2, "rules": []})).await;
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_data().as_ref(), &[1, 2, 3]);
    ws.close(None).await.unwrap();
    assert_eq!(
        backend.recorded()[0].headers["host"],
        "ws.example.com",
        "the original Host is preserved"
    );
}

#[tokio::test]
async fn upgrades_to_h2c_backends_fail_with_502() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("h2").await;
    proxy
        .push(json!({"version": 1, "rules": [{"backends": [{"url": backend.url(), "weight": 1, "protocol": "h2c"}]}]}))
        .await;
    let req = Client::request(Method::GET, proxy.data, "x", "/")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(empty())
        .unwrap();
    assert_eq!(proxy.client.send(req).await.unwrap().status, 502);
}

#[tokio::test]
async fn h2c_backends_get_http2() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("h2c").await;
    proxy
        .push(json!({"version": 1, "rules": [{"backends": [{"url": backend.url(), "weight": 1, "protocol": "h2c"}]}]}))
        .await;
    for _ in 0..20 {
        let echo = Echo::parse(&proxy.get("grpc.example.com:9000", "/svc/Method").await.body);
        assert_eq!(echo.version(), "HTTP/2.0");
        assert_eq!(
            echo.host(),
            "grpc.example.com:9000",
            ":authority carries the original Host"
        );
    }
    assert_eq!(
        backend.connections(),
        1,
        "h2c requests multiplex on one connection"
    );
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn tls_backends_with_ca_bundle_sni_sans_and_client_certs() {
    let server_pki = TestPki::new();
    let client_pki = TestPki::new();
    let leaf = server_pki.leaf(&["assets.web.svc"], &["spiffe://cluster.local/ns/web/sa/assets"]);
    let plain = Backend::start_with(
        "tls",
        BackendOptions {
            tls: Some(leaf.server_config(None, &[b"http/1.1"])),
            ..BackendOptions::default()
        },
    )
    .await;
    let h2 = Backend::start_with(
        "tls-h2",
        BackendOptions {
            tls: Some(leaf.server_config(None, &[b"h2"])),
            ..BackendOptions::default()
        },
    )
    .await;
    let mtls = Backend::start_with(
        "mtls",
        BackendOptions {
            tls: Some(leaf.server_config(Some(&client_pki), &[b"http/1.1"])),
            ..BackendOptions::default()
        },
    )
    .await;
    let client_cert = client_pki.leaf(&["client.test"], &[]);
    let other_ca = TestPki::new();
    let url = |b: &Backend| format!("https://{}", b.addr);
    let ca = &server_pki.ca_pem;
    let route = |path: &str, backend: serde_json::Value| json!({"matches": [{"path": {"type": "PathPrefix", "value": path}}], "backends": [backend]});
    proxy_tls_checks(
        json!({"version": 1, "rules": [
            route("/sni", json!({"url": url(&plain), "weight": 1, "tls": {"caBundle": ca, "serverName": "assets.web.svc"}})),
            route("/wrong-sni", json!({"url": url(&plain), "weight": 1, "tls": {"caBundle": ca, "serverName": "other.web.svc"}})),
            route("/dns-san", json!({"url": url(&plain), "weight": 1, "tls": {"caBundle": ca, "serverName": "whatever", "subjectAltNames": ["nope.web.svc", "*.web.svc"]}})),
            route("/uri-san", json!({"url": url(&plain), "weight": 1, "tls": {"caBundle": ca, "serverName": "x", "subjectAltNameUris": ["spiffe://cluster.local/ns/web/sa/assets"]}})),
            route("/bad-san", json!({"url": url(&plain), "weight": 1, "tls": {"caBundle": ca, "serverName": "x", "subjectAltNames": ["other.svc"], "subjectAltNameUris": ["spiffe://x/y"]}})),
            route("/other-ca", json!({"url": url(&plain), "weight": 1, "tls": {"caBundle": other_ca.ca_pem, "serverName": "assets.web.svc"}})),
            route("/h2", json!({"url": url(&h2), "weight": 1, "protocol": "h2c", "tls": {"caBundle": ca, "serverName": "assets.web.svc"}})),
            route("/mtls-ok", json!({"url": url(&mtls), "weight": 1, "tls": {"caBundle": ca, "serverName": "assets.web.svc",
                "clientCertPem": b64(&client_cert.cert_pem), "clientKeyPem": b64(&client_cert.key_pem)}})),
            route("/mtls-missing", json!({"url": url(&mtls), "weight": 1, "tls": {"caBundle": ca, "serverName": "assets.web.svc"}}))
        ]}),
    )
    .await;
}

async fn proxy_tls_checks(doc: serde_json::Value) {
    let proxy = Proxy::start().await;
    proxy.push(doc).await;
    let status = |path: &'static str| {
        let proxy = &proxy;
        async move { proxy.get("tls.example.com", path).await }
    };
    let r = status("/sni").await;
    assert_eq!(r.status, 200);
    assert_eq!(Echo::parse(&r.body).host(), "tls.example.com");
    assert_eq!(status("/wrong-sni").await.status, 502);
    assert_eq!(status("/dns-san").await.status, 200);
    assert_eq!(status("/uri-san").await.status, 200);
    assert_eq!(status("/bad-san").await.status, 502);
    assert_eq!(
        status("/other-ca").await.status,
        502,
        "a CA bundle replaces the trust roots"
    );
    let r = status("/h2").await;
    assert_eq!(r.status, 200);
    assert_eq!(Echo::parse(&r.body).version(), "HTTP/2.0");
    assert_eq!(status("/mtls-ok").await.status, 200);
    assert_eq!(status("/mtls-missing").await.status, 502);
    let metrics = String::from_utf8(proxy.config_get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"cftunnel_proxy_backend_errors_total{hostname="",reason="tls"}"#),
        "{metrics}"
    );
}

/// A backend named by hostname is dialled through the resolver (here `localhost` from `/etc/hosts`); a name that
/// does not resolve is a 502, and the next request to the good name still works.
#[tokio::test]
async fn backends_named_by_hostname_are_resolved() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("named").await;
    let port = backend.addr.port();
    proxy
        .push(json!({"version": 1, "rules": [
            {"hostnames": ["named.example.com"], "backends": [{"url": format!("http://localhost:{port}"), "weight": 1}]},
            {"hostnames": ["nowhere.example.com"],
             "backends": [{"url": format!("http://no-such-host.invalid:{port}"), "weight": 1}]}]}))
        .await;
    for _ in 0..3 {
        let reply = proxy.get("named.example.com", "/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(Echo::parse(&reply.body).backend(), "named");
    }
    assert_eq!(proxy.get("nowhere.example.com", "/").await.status, 502);
    assert_eq!(proxy.get("named.example.com", "/").await.status, 200);
}
