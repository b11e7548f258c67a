//! Pushes against real HTTP servers on loopback that implement the proxy's `PUT /config` / `GET /config`
//! contract (config-api.md §2, §3, §6.2), with scripted failures.

use std::collections::VecDeque;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tunnelgate_config::RouteRule;

use super::*;

#[derive(Default)]
struct ConfigServerState {
    version: i64,
    token: Option<String>,
    /// Statuses to answer the next PUTs with, before the normal handling.
    script: VecDeque<(u16, Value)>,
    puts: Vec<Value>,
    hang: bool,
}

#[derive(Clone)]
struct ConfigServer {
    addr: SocketAddr,
    state: Arc<Mutex<ConfigServerState>>,
}

impl ConfigServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ConfigServerState::default()));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    fn target(&self, ready: bool) -> Target {
        Target {
            key: TargetKey {
                authority: self.addr.to_string(),
                pod: None,
            },
            ready,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConfigServerState> {
        self.state.lock().unwrap()
    }

    fn versions(&self) -> Vec<i64> {
        self.lock()
            .puts
            .iter()
            .map(|p| p["version"].as_i64().unwrap())
            .collect()
    }
}

async fn handle(st: Arc<Mutex<ConfigServerState>>, req: Request<Incoming>) -> http::Response<Full<Bytes>> {
    let respond = |code: u16, body: Value| {
        http::Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    if st.lock().unwrap().hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let expected = st.lock().unwrap().token.clone();
    if let Some(token) = expected {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if auth != format!("Bearer {token}") {
            return respond(401, json!({"error": "unauthorized"}));
        }
    }
    let method = req.method().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut s = st.lock().unwrap();
    if method == Method::GET {
        return respond(200, json!({"version": s.version, "ready": s.version > 0}));
    }
    if let Some((code, body)) = s.script.pop_front() {
        return respond(code, body);
    }
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let v = doc["version"].as_i64().unwrap();
    if v > 0 && v < s.version {
        return respond(
            409,
            json!({"error": "stale config version", "current": s.version, "received": v}),
        );
    }
    s.version = s.version.max(v);
    s.puts.push(doc);
    respond(200, json!({"version": s.version, "ready": true}))
}

struct Harness {
    pusher: Pusher,
    counter: Arc<VersionCounter>,
    trigger: Trigger,
    tokens: watch::Sender<AuthTokens>,
}

fn harness(grace: Duration) -> Harness {
    let counter = Arc::new(VersionCounter::starting_at(1_000));
    let trigger = Trigger::default();
    let (tokens, rx) = watch::channel(AuthTokens::default());
    let pusher = Pusher::new(
        counter.clone(),
        rx,
        Duration::from_secs(2),
        grace,
        trigger.clone(),
        Arc::default(),
    );
    Harness {
        pusher,
        counter,
        trigger,
        tokens,
    }
}

fn config(paths: &[&str]) -> Config {
    let rules = paths
        .iter()
        .map(|p| {
            serde_json::from_value::<RouteRule>(json!({
                "matches": [{"path": {"type": "PathPrefix", "value": p}}],
                "backends": [{"url": "http://127.0.0.1:9/", "weight": 1}],
            }))
            .unwrap()
        })
        .collect();
    Config {
        version: 0,
        rules,
        has_grpc_route: false,
    }
}

/// Polls `check` every 10 ms for up to 5 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn gw(generation: i64) -> BTreeMap<ObjectName, i64> {
    BTreeMap::from([(ObjectName::new("default", "gw"), generation)])
}

#[tokio::test]
async fn every_target_gets_the_document_once_and_changes_raise_the_version() {
    let h = harness(Duration::from_secs(60));
    let (a, b) = (ConfigServer::start().await, ConfigServer::start().await);
    let first = h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    h.pusher.set_targets(&[a.target(true), b.target(false)]);
    eventually("both acked", || h.pusher.view().all_acked).await;
    assert_eq!(a.versions(), vec![first.version]);
    assert_eq!(b.versions(), vec![first.version]);
    assert_eq!(h.pusher.view().acked_generations, gw(1));

    // Same routing again: nothing is sent.
    let same = h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    assert_eq!(same.version, first.version);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.versions().len(), 1);

    // New routing: a strictly higher version everywhere.
    let second = h.pusher.publish(config(&["/a", "/b"]), gw(2)).unwrap();
    assert!(second.version > first.version);
    eventually("both on the new version", || {
        a.versions().len() == 2 && b.versions().len() == 2
    })
    .await;
    assert_eq!(a.lock().puts[1]["rules"].as_array().unwrap().len(), 2);
    eventually("generation 2 acked", || {
        h.pusher.view().acked_generations == gw(2)
    })
    .await;
}

#[tokio::test]
async fn a_target_that_appears_later_gets_the_current_document_and_others_are_left_alone() {
    let h = harness(Duration::from_secs(60));
    let a = ConfigServer::start().await;
    let doc = h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    h.pusher.set_targets(&[a.target(true)]);
    eventually("a acked", || h.pusher.view().all_acked).await;

    let late = ConfigServer::start().await;
    h.pusher.set_targets(&[a.target(true), late.target(false)]);
    eventually("late acked", || late.versions() == vec![doc.version]).await;
    assert_eq!(a.versions().len(), 1, "an acked target is not pushed again");

    // A removed target is forgotten: pushes no longer wait for it.
    h.pusher.set_targets(&[late.target(true)]);
    h.pusher.publish(config(&["/c"]), gw(1)).unwrap();
    eventually("late on /c", || h.pusher.view().all_acked).await;
    assert_eq!(a.versions().len(), 1);
}

#[tokio::test]
async fn a_409_from_a_proxy_ahead_of_us_is_recovered_by_restamping_for_everyone() {
    let h = harness(Duration::from_secs(60));
    let (a, b) = (ConfigServer::start().await, ConfigServer::start().await);
    h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    h.pusher.set_targets(&[a.target(true)]);
    eventually("a acked", || h.pusher.view().all_acked).await;

    // b was driven by a previous leader whose counter ran ahead of ours.
    b.lock().version = h.counter.current() + 500;
    let remote = b.lock().version;
    h.pusher.set_targets(&[a.target(true), b.target(true)]);
    eventually("both acked after recovery", || h.pusher.view().all_acked).await;
    let restamped = h.pusher.current().unwrap();
    assert!(restamped.restamped);
    assert_eq!(restamped.version, remote + 1);
    assert_eq!(b.versions(), vec![remote + 1]);
    assert_eq!(
        a.versions().last(),
        Some(&(remote + 1)),
        "the re-stamped document goes to all targets"
    );
    assert!(h.counter.next() > remote + 1);
}

#[tokio::test]
async fn a_second_409_for_the_same_content_goes_to_backoff() {
    let h = harness(Duration::from_secs(60));
    let a = ConfigServer::start().await;
    let remote = h.counter.current() + 500;
    a.lock().version = remote;
    // The first two PUTs are refused whatever their version.
    for _ in 0..2 {
        a.lock()
            .script
            .push_back((409, json!({"error": "stale config version", "current": remote})));
    }
    h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    h.pusher.set_targets(&[a.target(true)]);
    eventually("acked after backoff", || h.pusher.view().all_acked).await;
    let doc = h.pusher.current().unwrap();
    assert!(doc.restamped);
    assert_eq!(doc.version, remote + 1, "re-stamped exactly once");
    assert_eq!(a.versions(), vec![remote + 1]);
}

#[tokio::test]
async fn a_rejected_document_is_not_retried_and_is_reported() {
    let h = harness(Duration::from_secs(60));
    let a = ConfigServer::start().await;
    a.lock().script.push_back((400, json!({"error": "invalid regular expression: unclosed group", "path": "rules[0].matches[0].path.value"})));
    h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    h.pusher.set_targets(&[a.target(true)]);
    eventually("rejection reported", || h.pusher.view().rejected.is_some()).await;
    let msg = h.pusher.view().rejected.unwrap();
    assert!(
        msg.contains(
            "HTTP 400: invalid regular expression: unclosed group at rules[0].matches[0].path.value"
        ),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.versions().is_empty(), "the same content is not retried");

    // New content is tried again.
    h.pusher.publish(config(&["/fixed"]), gw(1)).unwrap();
    eventually("new content acked", || h.pusher.view().all_acked).await;
    assert_eq!(h.pusher.view().rejected, None);
}

#[tokio::test]
async fn server_errors_are_retried_until_acked() {
    let h = harness(Duration::from_secs(60));
    let a = ConfigServer::start().await;
    a.lock().script.push_back((503, json!({"error": "busy"})));
    h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    h.pusher.set_targets(&[a.target(true)]);
    eventually("acked after a retry", || h.pusher.view().all_acked).await;
    assert_eq!(a.versions().len(), 1);
}

#[tokio::test]
async fn a_ready_target_that_keeps_failing_is_reported_after_the_grace_period() {
    let h = harness(Duration::from_millis(200));
    // A port with nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let dead_ready = Target {
        key: TargetKey {
            authority: dead.to_string(),
            pod: None,
        },
        ready: true,
    };
    h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    h.pusher.set_targets(std::slice::from_ref(&dead_ready));
    assert_eq!(h.pusher.view().failing, None);
    // The pusher asks for a status sync once the grace period has passed.
    tokio::time::timeout(Duration::from_secs(2), h.trigger.0.notified())
        .await
        .unwrap();
    eventually("failing reported", || h.pusher.view().failing.is_some()).await;
    let msg = h.pusher.view().failing.unwrap();
    assert!(msg.contains(&dead.to_string()), "{msg}");

    // The same target while not ready does not count.
    h.pusher.set_targets(&[Target {
        ready: false,
        ..dead_ready
    }]);
    assert_eq!(h.pusher.view().failing, None);
}

#[tokio::test]
async fn pushes_carry_the_bearer_token_and_fall_back_to_the_previous_one() {
    let h = harness(Duration::from_secs(60));
    let a = ConfigServer::start().await;
    a.lock().token = Some("old-token".into());
    h.tokens.send_modify(|t| {
        t.rotate(Some("old-token".into()), Instant::now());
        t.rotate(Some("new-token".into()), Instant::now());
    });
    h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    h.pusher.set_targets(&[a.target(true)]);
    eventually("acked with the previous token", || h.pusher.view().all_acked).await;
}

#[tokio::test]
async fn a_proxy_that_never_answers_times_out() {
    let counter = Arc::new(VersionCounter::starting_at(1));
    let (_tokens, rx) = watch::channel(AuthTokens::default());
    let pusher = Pusher::new(
        counter,
        rx,
        Duration::from_millis(200),
        Duration::ZERO,
        Trigger::default(),
        Arc::default(),
    );
    let a = ConfigServer::start().await;
    a.lock().hang = true;
    let doc = pusher.publish(config(&["/a"]), gw(1)).unwrap();
    let started = Instant::now();
    let outcome = pusher.shared.push(&a.target(true).key, &doc).await;
    assert!(
        matches!(&outcome, PushOutcome::Failed(m) if m.contains("no reply")),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn backoff_doubles_from_one_second_to_thirty() {
    let mut b = Backoff::default();
    let ceilings: Vec<u64> = (0..7)
        .map(|_| {
            let c = b.ceiling().as_secs();
            assert!(b.next_delay() <= Duration::from_secs(c));
            c
        })
        .collect();
    assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 30, 30]);
    b.reset();
    assert_eq!(b.ceiling(), Duration::from_secs(1));
}

#[test]
fn until_the_first_ack_a_target_is_retried_at_least_every_five_seconds() {
    let mut b = Backoff::default();
    for _ in 0..20 {
        assert!(b.next_retry(false) <= FIRST_PUSH_RETRY);
    }
    assert_eq!(b.ceiling(), Duration::from_secs(30));
    // Once acknowledged, later failures back off up to the ceiling again.
    let longest = (0..200).map(|_| b.next_retry(true)).max().unwrap();
    assert!(longest > FIRST_PUSH_RETRY, "{longest:?}");
}

#[tokio::test]
async fn each_push_is_a_span_with_its_target_version_and_result() {
    use opentelemetry::Value as AttrValue;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let h = harness(Duration::from_secs(60));
    let (good, bad) = (ConfigServer::start().await, ConfigServer::start().await);
    bad.lock()
        .script
        .push_back((400, json!({"error": "invalid", "path": "rules[0]"})));
    let doc = h.pusher.publish(config(&["/a"]), gw(1)).unwrap();
    h.pusher.set_targets(&[good.target(true), bad.target(true)]);
    eventually("rejection reported", || h.pusher.view().rejected.is_some()).await;
    eventually("good acked", || good.versions() == vec![doc.version]).await;

    let spans = exporter.get_finished_spans().unwrap();
    let attr = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    };
    let of = |server: &ConfigServer| {
        spans
            .iter()
            .find(|s| {
                s.name == "config push"
                    && attr(s, "server.address") == Some(AttrValue::from(server.addr.to_string()))
            })
            .unwrap_or_else(|| panic!("no span for {}: {spans:?}", server.addr))
            .clone()
    };
    let ok = of(&good);
    assert_eq!(ok.span_kind, opentelemetry::trace::SpanKind::Client);
    assert_eq!(
        attr(&ok, "tunnelgate.document.version"),
        Some(AttrValue::I64(doc.version))
    );
    assert_eq!(attr(&ok, "tunnelgate.push.result"), Some(AttrValue::from("ok")));
    assert_eq!(ok.status, opentelemetry::trace::Status::Unset);
    let rejected = of(&bad);
    assert_eq!(
        attr(&rejected, "tunnelgate.push.result"),
        Some(AttrValue::from("rejected"))
    );
    assert_eq!(attr(&rejected, "error.type"), Some(AttrValue::from("rejected")));
    assert!(matches!(
        rejected.status,
        opentelemetry::trace::Status::Error { .. }
    ));
    let _ = provider.shutdown();
}
