//! Emulator ⇄ tunnel client ⇄ the real proxy request service ⇄ loopback backend, over QUIC and HTTP/2.
//! Unlike `e2e.rs`, whose origin forwards everything, routing here is tunnelgate's own: the redirect and the
//! 404 come from the proxy, and only routed paths reach the backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use tunnelgate_config::Config;
use tunnelgate_proxy::{ClientUpgrade, ProxySettings, ProxyState, Registry, RequestContext, RequestService};
use tunnelgate_tunnel::origin::{BoxFuture, Origin, OriginBody, StreamInfo, TunnelUpgrade};
use tunnelgate_tunnel::{ProtocolChoice, Tunnel, TunnelMetrics};

/// The same adapter `tunnelgate proxy` uses in tunnel mode.
struct ProxyOrigin(RequestService);

impl Origin for ProxyOrigin {
    fn serve(
        &self,
        mut req: http::Request<OriginBody>,
        info: StreamInfo,
    ) -> BoxFuture<http::Response<OriginBody>> {
        if let Some(upgrade) = req.extensions_mut().remove::<TunnelUpgrade>()
            && let Some(fut) = upgrade.take()
        {
            req.extensions_mut().insert(ClientUpgrade::new(fut));
        }
        let service = self.0.clone();
        let ctx = RequestContext {
            scheme: info.scheme,
            peer: None,
            transport: info.transport,
        };
        Box::pin(async move { service.serve(req, ctx).await })
    }
}

fn routing(backend: std::net::SocketAddr) -> Config {
    let doc = serde_json::json!({
        "version": 1,
        "rules": [
            {"hostnames": ["app.example.com"],
             "matches": [{"path": {"type": "Exact", "value": "/old"}}],
             "filters": [{"type": "RequestRedirect",
                          "requestRedirect": {"path": {"type": "ReplaceFullPath", "value": "/hello"},
                                              "statusCode": 301}}],
             "backends": []},
            {"hostnames": ["app.example.com"],
             "matches": [{"path": {"type": "PathPrefix", "value": "/hello"}},
                         {"path": {"type": "PathPrefix", "value": "/echo"}},
                         {"path": {"type": "PathPrefix", "value": "/big"}},
                         {"path": {"type": "PathPrefix", "value": "/ws"}}],
             "filters": [{"type": "ResponseHeaderModifier",
                          "responseHeaderModifier": {"set": [{"name": "x-routed-by", "value": "tunnelgate"}]}}],
             "backends": [{"url": format!("http://{backend}"), "weight": 1}]}
        ]
    });
    Config::from_json_slice(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

async fn through_the_proxy(protocol: ProtocolChoice) {
    init_logs();
    let backend = start_backend().await;
    let state = ProxyState::new(Registry::default());
    state.apply(&routing(backend)).unwrap();
    let service = RequestService::new(state, &ProxySettings::default());
    let emulator = emulator(2, Vec::new()).await;
    let ca_file = write_ca(&emulator, "proxy");
    let metrics = TunnelMetrics::default();
    let tunnel = Tunnel::start(
        tunnel_config(&emulator, &ca_file, protocol, 2),
        Arc::new(ProxyOrigin(service)),
        metrics.clone(),
    )
    .unwrap();
    wait_until(Duration::from_secs(15), || emulator.registered() == 2).await;
    let c = client();
    let http = emulator.http_addr;

    let r = get(&c, http, "/hello").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello");
    assert_eq!(r.headers["x-routed-by"], "tunnelgate", "response filter ran");
    assert_eq!(
        r.headers["x-seen-host"], "app.example.com",
        "Host forwarded unchanged"
    );
    let multi: Vec<_> = r.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);

    // 10 MB streamed up and echoed back down, then 10 MB down.
    let n = 10 * 1024 * 1024;
    let r = send(&c, http, "POST", "/echo", streamed(n)).await;
    assert_eq!(r.status, 201);
    assert!(
        r.body[..] == pattern(n)[..],
        "echoed body differs ({} bytes)",
        r.body.len()
    );
    let r = get(&c, http, &format!("/big?n={n}")).await;
    assert!(
        r.body[..] == pattern(n)[..],
        "download differs ({} bytes)",
        r.body.len()
    );

    // Answers the proxy makes itself.
    let r = get(&c, http, "/old").await;
    assert_eq!(r.status, 301);
    let location = r.headers["location"].to_str().unwrap();
    assert!(location.ends_with("://app.example.com/hello"), "{location}");
    let r = get(&c, http, "/missing").await;
    assert_eq!(r.status, 404);
    assert_eq!(&r.body[..], b"no matching route\n");

    websocket_echo(http).await;

    assert_concurrent_gets_ok(&c, http, "/hello", 50).await;

    tunnel.shutdown().await;
    emulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_through_the_proxy() {
    tokio::time::timeout(Duration::from_secs(120), through_the_proxy(ProtocolChoice::Quic))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_through_the_proxy() {
    tokio::time::timeout(Duration::from_secs(120), through_the_proxy(ProtocolChoice::Http2))
        .await
        .unwrap();
}
