//! Black-box tests of the Cloudflare API sync (controller.md §9): the real controller runs against the loopback
//! Kubernetes API stand-in and a loopback Cloudflare API stand-in (tests/support/cloudflare.rs), with short
//! debounce and backoff so that the tests stay fast.
// Helpers outside #[test] functions fail the test on the spot, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::cloudflare::{FakeCloudflare, RetryAfter};
use support::*;
use tunnelgate_controller::{
    CloudflareOptions, ConfigPort, Controller, ControllerOptions, ObjectName, ProxyTargets,
    TunnelTokenOptions,
};

const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
const TUNNEL: &str = "6ff42ae2-765d-4adf-8112-31c55c1551ef";
const API_TOKEN: &str = "cf-api-token-for-tests";
const SYNCED: &str = "tunnelgate.dev/CloudflareSynced";
const PROXY: &str = "http://tunnelgate-proxy:8080";
const LIMIT: Duration = Duration::from_secs(10);

/// A tunnel token as `cloudflared tunnel token` prints it.
fn tunnel_token() -> String {
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let json = json!({"a": ACCOUNT, "t": TUNNEL, "s": secret}).to_string();
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// Namespaces, our class, Gateway `default/gw`, the route `web` (app.example.com), the tunnel token and the API
/// token Secrets.
fn cluster(api: &ApiServer) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    for ns in ["default", "tg"] {
        api.apply(namespace(ns));
    }
    api.apply(gateway_class("tunnelgate", CONTROLLER));
    api.apply(gateway("default", "gw", "tunnelgate"));
    api.apply(service("default", "app"));
    api.apply(http_route("default", "web", "gw", "app.example.com", "/", "app"));
    api.apply(secret("tg", "tunnel", "token", &tunnel_token()));
    api.apply(secret("tg", "cf-api", "api-token", API_TOKEN));
}

/// No proxies (the sync does not depend on them), ids from the tunnel token, fast timings.
fn options(fake: &FakeCloudflare) -> ControllerOptions {
    let mut opts = ControllerOptions::new(ProxyTargets::Service {
        service: ObjectName::new("tg", "proxy-headless"),
        port: ConfigPort::Name("config-api".into()),
    });
    opts.tunnel_token = Some(TunnelTokenOptions {
        secret: ObjectName::new("tg", "tunnel"),
        key: "token".into(),
    });
    let mut cf = CloudflareOptions::new(ObjectName::new("tg", "cf-api"), "api-token");
    cf.api_url = fake.url();
    cf.debounce = Duration::from_millis(50);
    cf.backoff_base = Duration::from_millis(100);
    cf.backoff_max = Duration::from_millis(400);
    cf.call_timeout = Duration::from_secs(5);
    opts.cloudflare = Some(cf);
    opts
}

fn entry(host: &str) -> Value {
    json!({"hostname": host, "service": PROXY})
}

fn catch_all() -> Value {
    json!({"service": "http_status:404"})
}

fn synced_condition(api: &ApiServer) -> Option<Value> {
    let gw = api.get(GW_V1, "Gateway", "default", "gw")?;
    condition(&gw["status"]["conditions"], SYNCED).cloned()
}

fn synced_reason(api: &ApiServer) -> Option<(String, String)> {
    let c = synced_condition(api)?;
    Some((c["status"].as_str()?.to_owned(), c["reason"].as_str()?.to_owned()))
}

fn methods(fake: &FakeCloudflare) -> Vec<(String, u16)> {
    fake.calls().into_iter().map(|c| (c.method, c.status)).collect()
}

/// The calls of a sync whose GETs failed with `statuses` before one went through and its document was PUT.
fn failed_then_synced(statuses: &[u16]) -> Vec<(String, u16)> {
    let get = |status| ("GET".to_owned(), status);
    let done = [get(200), ("PUT".to_owned(), 200)];
    statuses.iter().map(|&s| get(s)).chain(done).collect()
}

async fn wait_for_calls(fake: &FakeCloudflare, n: usize) {
    wait_until(&format!("{n} Cloudflare API calls"), LIMIT, || async {
        fake.calls().len() >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sync_puts_the_document_and_an_unchanged_one_is_only_read() {
    let api = ApiServer::start().await;
    cluster(&api);
    api.apply(http_route("default", "wild", "gw", "*.example.net", "/", "app"));
    let fake = FakeCloudflare::start(ACCOUNT, TUNNEL, API_TOKEN, Value::Null).await;
    let controller = Controller::start(api.client(), options(&fake)).await.unwrap();

    wait_until("CloudflareSynced=True", LIMIT, || async {
        synced_reason(&api) == Some(("True".into(), "Synced".into()))
    })
    .await;
    let calls = fake.calls();
    assert_eq!(methods(&fake), [("GET".into(), 200), ("PUT".into(), 200)]);
    for call in &calls {
        assert_eq!(call.path, fake.path());
        assert_eq!(
            call.authorization.as_deref(),
            Some("Bearer cf-api-token-for-tests")
        );
    }
    assert_eq!(
        calls[1].body,
        json!({"config": {"ingress": [entry("app.example.com"), entry("*.example.net"), catch_all()]}})
    );
    let c = synced_condition(&api).unwrap();
    assert_eq!(c["observedGeneration"], 1);
    assert!(c["message"].as_str().unwrap().contains("2 hostnames"), "{c}");
    // Route status does not carry the condition.
    let route = api.get(GW_V1, "HTTPRoute", "default", "web").unwrap();
    assert!(!route["status"].to_string().contains(SYNCED), "{route}");

    // A change that keeps the hostnames (a new path) calls nothing.
    api.apply(http_route(
        "default",
        "web",
        "gw",
        "app.example.com",
        "/v2",
        "app",
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.calls().len(), 2, "{:?}", methods(&fake));

    // A new leader finds the remote document already right: it reads, and does not write.
    drop(controller);
    let _next = Controller::start(api.client(), options(&fake)).await.unwrap();
    wait_for_calls(&fake, 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        methods(&fake),
        [("GET".into(), 200), ("PUT".into(), 200), ("GET".into(), 200)]
    );
    assert_eq!(synced_reason(&api), Some(("True".into(), "Synced".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_route_puts_the_new_document_and_overwrites_dashboard_edits() {
    let api = ApiServer::start().await;
    cluster(&api);
    // Someone edited the tunnel in the dashboard: it is put back in step with the routes.
    let edited = json!([{"hostname": "app.example.com", "service": "http://localhost:8000"}, catch_all()]);
    let fake = FakeCloudflare::start(ACCOUNT, TUNNEL, API_TOKEN, edited).await;
    let _controller = Controller::start(api.client(), options(&fake)).await.unwrap();
    wait_for_calls(&fake, 2).await;
    assert_eq!(fake.ingress(), json!([entry("app.example.com"), catch_all()]));

    api.apply(http_route(
        "default",
        "shop",
        "gw",
        "shop.example.com",
        "/",
        "app",
    ));
    wait_until("the new hostname in Cloudflare", LIMIT, || async {
        fake.ingress() == json!([entry("app.example.com"), entry("shop.example.com"), catch_all()])
    })
    .await;
    assert_eq!(
        methods(&fake),
        [
            ("GET".into(), 200),
            ("PUT".into(), 200),
            ("GET".into(), 200),
            ("PUT".into(), 200)
        ]
    );

    api.delete(GW_V1, "HTTPRoute", "default", "web");
    wait_until("the removed hostname gone from Cloudflare", LIMIT, || async {
        fake.ingress() == json!([entry("shop.example.com"), catch_all()])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_back_off_then_succeed() {
    let api = ApiServer::start().await;
    cluster(&api);
    let fake = FakeCloudflare::start(ACCOUNT, TUNNEL, API_TOKEN, Value::Null).await;
    fake.fail_next(&[500, 503, 429]);
    let _controller = Controller::start(api.client(), options(&fake)).await.unwrap();
    // The last failure is shown for the longest backoff (400 ms), so a sync lands while it holds.
    wait_until("CloudflareSynced=False/RateLimited", LIMIT, || async {
        synced_reason(&api) == Some(("False".into(), "RateLimited".into()))
    })
    .await;
    wait_until("CloudflareSynced=True after the failures", LIMIT, || async {
        synced_reason(&api) == Some(("True".into(), "Synced".into()))
    })
    .await;
    let calls = fake.calls();
    assert_eq!(methods(&fake), failed_then_synced(&[500, 503, 429]));
    // Backoff 100 ms, then 200 ms, then 400 ms (the maximum in these options).
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, at_least) in gaps.iter().zip([100, 200, 400]) {
        assert!(*gap >= Duration::from_millis(at_least), "gaps {gaps:?}");
    }
    assert_eq!(fake.ingress(), json!([entry("app.example.com"), catch_all()]));

    // The False verdict was written with the status Cloudflare answered.
    let failures: Vec<Value> = api
        .writes()
        .iter()
        .filter(|w| w.path.ends_with("/gateways/gw/status"))
        .filter_map(|w| condition(&w.body["status"]["conditions"], SYNCED).cloned())
        .filter(|c| c["status"] == "False")
        .collect();
    assert!(
        failures
            .iter()
            .any(|c| c["reason"] == "RateLimited" && c["message"].as_str().unwrap().contains("429")),
        "{failures:?}"
    );
}

/// Options whose backoff runs from 100 ms to `max`.
fn options_with_max_backoff(fake: &FakeCloudflare, max: Duration) -> ControllerOptions {
    let mut opts = options(fake);
    opts.cloudflare.as_mut().unwrap().backoff_max = max;
    opts
}

/// Starts a controller against `fake`, waits for `True/Synced` and returns the gaps between the calls.
async fn gaps_until_synced(fake: &FakeCloudflare, opts: ControllerOptions) -> Vec<Duration> {
    let api = ApiServer::start().await;
    cluster(&api);
    let _controller = Controller::start(api.client(), opts).await.unwrap();
    wait_until("CloudflareSynced=True after the failures", LIMIT, || async {
        synced_reason(&api) == Some(("True".into(), "Synced".into()))
    })
    .await;
    assert_eq!(fake.ingress(), json!([entry("app.example.com"), catch_all()]));
    let calls = fake.calls();
    calls.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_the_backoff_step_delays_the_next_call() {
    let fake = FakeCloudflare::start(ACCOUNT, TUNNEL, API_TOKEN, Value::Null).await;
    // Backoff steps 100 ms and 200 ms; the server asks for 1 s, then for a date 3 s ahead (at least 2 s, since an
    // HTTP-date has whole seconds).
    fake.fail_next_with(429, RetryAfter::Value("1".into()));
    fake.fail_next_with(503, RetryAfter::DateAfter(Duration::from_secs(3)));
    let gaps = gaps_until_synced(&fake, options_with_max_backoff(&fake, Duration::from_secs(5))).await;
    assert_eq!(methods(&fake), failed_then_synced(&[429, 503]));
    assert!(gaps[0] >= Duration::from_secs(1), "gaps {gaps:?}");
    // 1.5 s rather than 2 s: the fake's Instant and the controller's wall clock may drift apart a little.
    assert!(gaps[1] >= Duration::from_millis(1500), "gaps {gaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_large_retry_after_is_capped_at_the_longest_backoff() {
    let fake = FakeCloudflare::start(ACCOUNT, TUNNEL, API_TOKEN, Value::Null).await;
    // 10^9 seconds and a date ten years ahead: both wait the longest backoff (1 s here), and the sync succeeds well
    // within the test's limit.
    fake.fail_next_with(429, RetryAfter::Value("1000000000".into()));
    fake.fail_next_with(
        503,
        RetryAfter::DateAfter(Duration::from_secs(10 * 365 * 24 * 3600)),
    );
    let gaps = gaps_until_synced(&fake, options_with_max_backoff(&fake, Duration::from_secs(1))).await;
    assert_eq!(methods(&fake), failed_then_synced(&[429, 503]));
    for gap in &gaps[..2] {
        assert!(*gap >= Duration::from_secs(1), "gaps {gaps:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_past_retry_after_falls_back_to_the_backoff() {
    let fake = FakeCloudflare::start(ACCOUNT, TUNNEL, API_TOKEN, Value::Null).await;
    for (status, retry_after) in [
        (429, RetryAfter::Value("soon".into())),
        (503, RetryAfter::Value("-5".into())),
        (429, RetryAfter::Value("1.5".into())),
        (503, RetryAfter::DateBefore(Duration::from_secs(3600))),
    ] {
        fake.fail_next_with(status, retry_after);
    }
    // A longest backoff of a minute: misreading any of these as a long wait would miss the test's limit.
    let gaps = gaps_until_synced(&fake, options_with_max_backoff(&fake, Duration::from_secs(60))).await;
    assert_eq!(
        fake.calls().iter().map(|c| c.status).collect::<Vec<_>>(),
        [429, 503, 429, 503, 200, 200]
    );
    for (gap, at_least) in gaps.iter().zip([100, 200, 400, 800]) {
        assert!(*gap >= Duration::from_millis(at_least), "gaps {gaps:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_read_from_429_and_503_replies_only() {
    use tunnelgate_controller::cloudflare::api::{ApiError, ConfigurationsApi, TunnelRef};
    let fake = FakeCloudflare::start(ACCOUNT, TUNNEL, API_TOKEN, Value::Null).await;
    let api = ConfigurationsApi::new(&fake.url(), LIMIT).unwrap();
    let metrics = tunnelgate_controller::metrics::Metrics::default();
    let tunnel = TunnelRef::new(ACCOUNT, TUNNEL).unwrap();
    for (status, expected) in [
        (429, Some(Duration::from_secs(7))),
        (503, Some(Duration::from_secs(7))),
        (500, None),
        (502, None),
        (403, None),
    ] {
        fake.fail_next_with(status, RetryAfter::Value("7".into()));
        let err = api.get(&tunnel, API_TOKEN, &metrics).await.unwrap_err();
        assert!(
            matches!(&err, ApiError::Status { status: s, .. } if *s == status),
            "{err}"
        );
        assert_eq!(err.retry_after(), expected, "{status}");
    }
    fake.fail_next_with(503, RetryAfter::Value("later".into()));
    let err = api.get(&tunnel, API_TOKEN, &metrics).await.unwrap_err();
    assert_eq!(err.retry_after(), None, "a malformed value is dropped");
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.retry_after.as_deref().is_some_and(|v| v == "7" || v == "later")),
        "the fake sent the header every time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_shows_on_the_gateway_until_the_secret_is_fixed() {
    let api = ApiServer::start().await;
    cluster(&api);
    api.apply(secret("tg", "cf-api", "api-token", "a-revoked-token"));
    let fake = FakeCloudflare::start(ACCOUNT, TUNNEL, API_TOKEN, Value::Null).await;
    // The ids come from the flags here, not from the tunnel token.
    let mut opts = options(&fake);
    opts.tunnel_token = None;
    let cf = opts.cloudflare.as_mut().unwrap();
    cf.account_id = Some(ACCOUNT.into());
    cf.tunnel_id = Some(TUNNEL.into());
    cf.backoff_max = Duration::from_secs(60);
    let _controller = Controller::start(api.client(), opts).await.unwrap();
    wait_until("CloudflareSynced=False/Unauthorized", LIMIT, || async {
        synced_reason(&api) == Some(("False".into(), "Unauthorized".into()))
    })
    .await;
    let c = synced_condition(&api).unwrap();
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains("403") && message.contains("Authentication error"),
        "{message}"
    );
    assert!(
        !c.to_string().contains("a-revoked-token"),
        "the token never shows: {c}"
    );
    // A refusal is not retried in a loop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(methods(&fake), [("GET".into(), 403)]);

    api.apply(secret("tg", "cf-api", "api-token", API_TOKEN));
    wait_until("CloudflareSynced=True with the new token", LIMIT, || async {
        synced_reason(&api) == Some(("True".into(), "Synced".into()))
    })
    .await;
    assert_eq!(fake.ingress(), json!([entry("app.example.com"), catch_all()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tunnel_ids_nothing_is_called_and_the_gateway_says_why() {
    let api = ApiServer::start().await;
    cluster(&api);
    let fake = FakeCloudflare::start(ACCOUNT, TUNNEL, API_TOKEN, Value::Null).await;
    let mut opts = options(&fake);
    opts.tunnel_token = None;
    let _controller = Controller::start(api.client(), opts).await.unwrap();
    wait_until("CloudflareSynced=False/MissingTunnelIds", LIMIT, || async {
        synced_reason(&api) == Some(("False".into(), "MissingTunnelIds".into()))
    })
    .await;
    assert!(fake.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_api_is_dialled_over_tls_and_an_unknown_certificate_is_refused() {
    use tunnelgate_controller::cloudflare::api::{ApiError, ConfigurationsApi, TunnelRef};
    let pki = tunnelgate_testkit::TestPki::new();
    let leaf = pki.leaf(&["localhost"], &[]);
    let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server_config(None, &[b"http/1.1"]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        acceptor.accept(stream).await.map(drop).map_err(|e| e.to_string())
    });

    let api = ConfigurationsApi::new(&format!("https://localhost:{port}/client/v4"), LIMIT).unwrap();
    let metrics = tunnelgate_controller::metrics::Metrics::default();
    let tunnel = TunnelRef::new(ACCOUNT, TUNNEL).unwrap();
    let err = api.get(&tunnel, API_TOKEN, &metrics).await.unwrap_err();
    // The test CA is not among the webpki roots: the client refuses the server before sending anything.
    assert!(
        matches!(&err, ApiError::Transport(m) if m.contains("TLS")),
        "{err}"
    );
    assert!(!err.to_string().contains(API_TOKEN));
    let handshake = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(
        handshake.is_err(),
        "the server saw a TLS client that gave up: {handshake:?}"
    );
    assert!(
        metrics
            .encode()
            .contains(r#"cftunnel_cloudflare_api_calls_total{method="GET",resource="tunnel_configurations",status="error"} 1"#)
    );
}
