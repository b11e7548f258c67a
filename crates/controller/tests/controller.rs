//! Black-box tests of the controller: the real kube-rs client, watchers, reflectors, sync and pushes run against a
//! loopback API server (tests/support/apiserver.rs) and real tunnelgate proxies on loopback, routing to real
//! backends.
// Helpers outside #[test] functions fail the test on the spot, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::*;
use tunnelgate_controller::{
    AuthTokenOptions, ConfigPort, Controller, ControllerOptions, LeaderElectionOptions, ObjectName,
    ProxyTargets, TunnelTokenOptions,
};
use tunnelgate_testkit::Echo;

fn options() -> ControllerOptions {
    let mut opts = ControllerOptions::new(ProxyTargets::Service {
        service: ObjectName::new("tg", "proxy-headless"),
        port: ConfigPort::Name("config-api".into()),
    });
    opts.health_addr = Some("127.0.0.1:0".parse().unwrap());
    opts.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    opts.auth_token = Some(AuthTokenOptions {
        secret: ObjectName::new("tg", "proxy-auth"),
        key: "auth-token".into(),
        generate: true,
    });
    opts.leader_election = Some(LeaderElectionOptions::new(
        ObjectName::new("tg", "tunnelgate-leader"),
        "replica-a".into(),
    ));
    opts
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let reply = tunnelgate_testkit::Client::new()
        .get(addr, "controller", path)
        .await;
    (
        reply.status.as_u16(),
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

/// Serves `host` with a 200 from the `app` backend.
async fn serves(proxy: &Proxy, host: &str) -> bool {
    let reply = proxy.get(host, "/hello").await;
    reply.status == 200 && Echo::parse(&reply.body).backend() == "app"
}

fn status_writes(api: &ApiServer, plural: &str, name: &str) -> Vec<support::apiserver::Write> {
    api.writes()
        .into_iter()
        .filter(|w| w.method == "PATCH" && w.path.ends_with(&format!("/{plural}/{name}/status")))
        .collect()
}

fn our_parent(status: &Value) -> Option<&Value> {
    status["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == CONTROLLER)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_route_reaches_every_proxy_and_gets_its_status() {
    let c = cluster().await;
    let proxies = [Proxy::start().await, Proxy::start().await, Proxy::start().await];
    for (i, p) in proxies.iter().enumerate() {
        // One replica is not ready yet: it must get config all the same.
        c.api.apply(p.slice(&format!("proxy-headless-{i}"), i != 2));
    }
    c.api.apply(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gatewayclasses.gateway.networking.k8s.io",
                     "annotations": {"gateway.networking.k8s.io/bundle-version": "v1.5.1"}},
        "spec": {"group": "gateway.networking.k8s.io", "names": {"kind": "GatewayClass", "plural": "gatewayclasses"},
                 "scope": "Cluster", "versions": []}}));
    let controller = Controller::start(c.api.client(), options()).await.unwrap();
    let health = controller.health_addr.unwrap();
    wait_until("readyz", Duration::from_secs(10), || async {
        http_get(health, "/readyz").await.0 == 200
    })
    .await;
    wait_until("initial push to every proxy", Duration::from_secs(10), || async {
        proxies.iter().all(|p| p.version() > 0)
    })
    .await;
    let initial = proxies[0].version();
    assert!(
        initial > 1_700_000_000_000,
        "versions are seeded from wall-clock milliseconds: {initial}"
    );

    // Let the start-up syncs (initial push, Gateway status) settle so that the measurement sees an idle controller.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The event: an HTTPRoute appears in the watch stream.
    let event = Instant::now();
    c.api
        .apply(http_route("default", "web", "gw", "app.example.com", "/", "app"));
    let mut served_at = Vec::new();
    for p in &proxies {
        wait_until(
            "the route serves on every proxy",
            Duration::from_secs(10),
            || async { serves(p, "app.example.com").await },
        )
        .await;
        served_at.push(event.elapsed());
    }
    println!(
        "route event -> all 3 proxies serving: {:?} (per proxy: {served_at:?})",
        event.elapsed()
    );
    let version = proxies[0].version();
    assert!(version > initial);
    assert!(
        proxies.iter().all(|p| p.version() == version),
        "every proxy runs the same version"
    );
    assert!(c.backend.requests() >= 3);

    // Status: server-side apply under our field manager, with the expected conditions.
    wait_until("route status", Duration::from_secs(10), || async {
        let route = c.api.get(GW_V1, "HTTPRoute", "default", "web").unwrap();
        our_parent(&route["status"]).is_some()
    })
    .await;
    let writes = status_writes(&c.api, "httproutes", "web");
    let w = writes.last().unwrap();
    assert_eq!(w.content_type, "application/apply-patch+yaml");
    assert!(
        w.query.contains("fieldManager=tunnelgate-controller") && w.query.contains("force=true"),
        "{}",
        w.query
    );
    let parent = our_parent(&w.body["status"]).unwrap();
    assert_eq!(parent["parentRef"]["name"], "gw");
    for kind in ["Accepted", "ResolvedRefs"] {
        let cond =
            condition(&parent["conditions"], kind).unwrap_or_else(|| panic!("{kind} missing: {parent}"));
        assert_eq!(cond["status"], "True", "{cond}");
        assert_eq!(cond["observedGeneration"], 1);
    }
    assert!(condition(&parent["conditions"], "tunnelgate.dev/ConfigPushed").is_none());

    // The Gateway becomes Programmed once the proxies acknowledged a document built from it.
    wait_until(
        "gateway programmed and pushed",
        Duration::from_secs(10),
        || async {
            let gw = c.api.get(GW_V1, "Gateway", "default", "gw").unwrap();
            let conditions = &gw["status"]["conditions"];
            condition(conditions, "Programmed").is_some_and(|c| c["status"] == "True")
                && condition(conditions, "tunnelgate.dev/ConfigPushed")
                    .is_some_and(|c| c["reason"] == "Pushed")
        },
    )
    .await;
    let gw = c.api.get(GW_V1, "Gateway", "default", "gw").unwrap();
    assert_eq!(
        gw["status"]["listeners"][0]["attachedRoutes"], 1,
        "{}",
        gw["status"]
    );

    // Leader election went through the Lease.
    let lease = c
        .api
        .get("coordination.k8s.io/v1", "Lease", "tg", "tunnelgate-leader")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");

    // Metrics.
    let (code, metrics) = http_get(controller.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "tunnelgate_is_leader 1",
        "tunnelgate_proxy_push_total{result=\"ok\"}",
        "tunnelgate_proxy_targets{state=\"acked\"} 3",
        &format!("tunnelgate_config_version {version}"),
        "cftunnel_synced_routes{type=\"HTTPRoute\"} 1",
        "tunnelgate_status_writes_total{kind=\"HTTPRoute\",result=\"success\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }

    // No-op syncs write nothing: an unrelated change triggers a sync that finds nothing to do.
    let before = c.api.writes().len();
    let before_version = proxies[0].version();
    c.api
        .apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "unrelated"}}));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new_writes: Vec<_> = c
        .api
        .writes()
        .into_iter()
        .skip(before)
        .filter(|w| w.path.ends_with("/status"))
        .collect();
    assert!(new_writes.is_empty(), "unexpected status writes: {new_writes:?}");
    assert_eq!(
        proxies[0].version(),
        before_version,
        "unchanged routing is not pushed again"
    );
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_appears_later_gets_the_current_config_at_once() {
    let c = cluster().await;
    let first = Proxy::start().await;
    c.api.apply(first.slice("proxy-headless-a", true));
    c.api
        .apply(http_route("default", "web", "gw", "app.example.com", "/", "app"));
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    wait_until("first proxy serves", Duration::from_secs(10), || async {
        serves(&first, "app.example.com").await
    })
    .await;
    let version = first.version();
    let applied_at = first.handle.state().status().applied_at;

    let late = Proxy::start().await;
    let appeared = Instant::now();
    c.api.apply(late.slice("proxy-headless-b", false));
    wait_until("late proxy serves", Duration::from_secs(10), || async {
        serves(&late, "app.example.com").await
    })
    .await;
    println!("new proxy pod -> serving: {:?}", appeared.elapsed());
    assert_eq!(
        late.version(),
        version,
        "the current document at the current version"
    );
    assert_eq!(
        first.handle.state().status().applied_at,
        applied_at,
        "the acked proxy is not pushed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_ahead_of_our_version_answers_409_and_is_recovered() {
    let c = cluster().await;
    let ahead = Proxy::start().await;
    let normal = Proxy::start().await;
    // A previous leader with a faster-running counter pushed this version.
    let remote = 9_000_000_000_000_i64;
    ahead
        .handle
        .state()
        .apply(&tunnelgate_config::Config {
            version: remote,
            ..Default::default()
        })
        .unwrap();
    c.api.apply(ahead.slice("proxy-headless-a", true));
    c.api.apply(normal.slice("proxy-headless-b", true));
    c.api
        .apply(http_route("default", "web", "gw", "app.example.com", "/", "app"));
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    for p in [&ahead, &normal] {
        wait_until(
            "both proxies serve after the 409",
            Duration::from_secs(10),
            || async { serves(p, "app.example.com").await },
        )
        .await;
    }
    wait_until(
        "both on the re-stamped version",
        Duration::from_secs(10),
        || async { ahead.version() == remote + 1 && normal.version() == remote + 1 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_controllers_parent_entries_survive_our_writes() {
    let c = cluster().await;
    let proxy = Proxy::start().await;
    c.api.apply(proxy.slice("proxy-headless-a", true));
    c.api
        .apply(gateway_class("other", "example.net/other-controller"));
    c.api.apply(gateway("default", "other-gw", "other"));
    let mut route = http_route("default", "web", "gw", "app.example.com", "/", "app");
    route["spec"]["parentRefs"] = json!([{"name": "gw"}, {"name": "other-gw"}]);
    let theirs = json!({
        "controllerName": "example.net/other-controller",
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "other-gw"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                        "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    });
    route["status"] = json!({"parents": [theirs.clone()]});
    c.api.apply(route);
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    wait_until("our entry written", Duration::from_secs(10), || async {
        our_parent(&c.api.get(GW_V1, "HTTPRoute", "default", "web").unwrap()["status"]).is_some()
    })
    .await;
    let status = c.api.get(GW_V1, "HTTPRoute", "default", "web").unwrap()["status"].clone();
    let parents = status["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{status}");
    assert!(
        parents.contains(&theirs),
        "the other controller's entry is kept unchanged: {status}"
    );
    // And the other class's Gateway is not ours to write.
    assert!(status_writes(&c.api, "gateways", "other-gw").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_push_failure_shows_on_the_route_and_clears() {
    let c = cluster().await;
    let proxy = Proxy::start().await;
    c.api.apply(proxy.slice("proxy-headless-a", true));
    // A ready proxy endpoint where nothing listens.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    c.api.apply(endpoint_slice(
        "tg",
        "proxy-headless-dead",
        "proxy-headless",
        "config-api",
        dead_port,
        &[("127.0.0.1", true)],
    ));
    c.api
        .apply(http_route("default", "web", "gw", "app.example.com", "/", "app"));
    let mut opts = options();
    opts.push_failure_grace = Duration::from_millis(500);
    let _controller = Controller::start(c.api.client(), opts).await.unwrap();

    let pushed = |route: &Value| {
        our_parent(&route["status"])
            .and_then(|p| condition(&p["conditions"], "tunnelgate.dev/ConfigPushed"))
            .cloned()
    };
    wait_until("PushFailing on the route", Duration::from_secs(10), || async {
        pushed(&c.api.get(GW_V1, "HTTPRoute", "default", "web").unwrap())
            .is_some_and(|c| c["reason"] == "PushFailing")
    })
    .await;
    let route = c.api.get(GW_V1, "HTTPRoute", "default", "web").unwrap();
    let cond = pushed(&route).unwrap();
    assert_eq!(cond["status"], "False");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{dead_port}")),
        "{cond}"
    );
    let accepted = condition(&our_parent(&route["status"]).unwrap()["conditions"], "Accepted").unwrap();
    assert_eq!(accepted["status"], "True", "Accepted does not depend on pushes");
    assert!(
        serves(&proxy, "app.example.com").await,
        "the healthy proxy serves meanwhile"
    );
    let gw = c.api.get(GW_V1, "Gateway", "default", "gw").unwrap();
    assert_eq!(
        condition(&gw["status"]["conditions"], "tunnelgate.dev/ConfigPushed").unwrap()["reason"],
        "PushFailing"
    );

    // The dead pod goes away: the condition clears.
    c.api.delete(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "tg",
        "proxy-headless-dead",
    );
    wait_until("condition cleared", Duration::from_secs(10), || async {
        pushed(&c.api.get(GW_V1, "HTTPRoute", "default", "web").unwrap()).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_pushes_and_a_standby_takes_over() {
    let (c, proxy) = cluster_with_web_route().await;
    let fast = |identity: &str| {
        let mut opts = options();
        let mut le = LeaderElectionOptions::new(ObjectName::new("tg", "tunnelgate-leader"), identity.into());
        le.lease_duration = Duration::from_millis(1500);
        le.renew_deadline = Duration::from_millis(1000);
        le.retry_period = Duration::from_millis(200);
        opts.leader_election = Some(le);
        opts
    };
    let a = Controller::start(c.api.client(), fast("replica-a"))
        .await
        .unwrap();
    wait_until("a leads and pushes", Duration::from_secs(10), || async {
        serves(&proxy, "app.example.com").await
    })
    .await;
    let b = Controller::start(c.api.client(), fast("replica-b"))
        .await
        .unwrap();
    let b_health = b.health_addr.unwrap();
    wait_until("standby ready", Duration::from_secs(10), || async {
        http_get(b_health, "/readyz").await.0 == 200
    })
    .await;
    let (_, metrics) = http_get(b.metrics_addr.unwrap(), "/metrics").await;
    assert!(metrics.contains("tunnelgate_is_leader 0"), "{metrics}");
    assert!(
        !metrics.contains("tunnelgate_proxy_push_total"),
        "a standby never pushes"
    );

    // The leader dies without releasing the lease; the standby takes over after the lease duration.
    drop(a);
    wait_until("b leads", Duration::from_secs(10), || async {
        let lease = c
            .api
            .get("coordination.k8s.io/v1", "Lease", "tg", "tunnelgate-leader")
            .unwrap();
        lease["spec"]["holderIdentity"] == "replica-b"
    })
    .await;
    // The new leader's versions are above the old leader's, and it pushes new routes.
    let old_version = proxy.version();
    c.api
        .apply(http_route("default", "web2", "gw", "two.example.com", "/", "app"));
    wait_until("b pushes", Duration::from_secs(10), || async {
        serves(&proxy, "two.example.com").await
    })
    .await;
    assert!(proxy.version() > old_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lease_stops_the_controller_with_an_error() {
    let c = cluster().await;
    let mut opts = options();
    let mut le = LeaderElectionOptions::new(ObjectName::new("tg", "tunnelgate-leader"), "replica-a".into());
    le.retry_period = Duration::from_millis(100);
    opts.leader_election = Some(le);
    let controller = Controller::start(c.api.client(), opts).await.unwrap();
    wait_until("leader", Duration::from_secs(10), || async {
        c.api
            .get("coordination.k8s.io/v1", "Lease", "tg", "tunnelgate-leader")
            .is_some()
    })
    .await;
    // Someone else takes the lease (as after a long partition).
    let mut lease = c
        .api
        .get("coordination.k8s.io/v1", "Lease", "tg", "tunnelgate-leader")
        .unwrap();
    lease["spec"]["holderIdentity"] = json!("replica-z");
    c.api.apply(lease);
    let err = tokio::time::timeout(Duration::from_secs(5), controller.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("lost leadership"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_token_secret_is_generated_when_missing() {
    let api = ApiServer::start().await;
    api.apply(namespace("tg"));
    let mut opts = options();
    opts.leader_election = None;
    let _controller = Controller::start(api.client(), opts).await.unwrap();
    let secret = api.get("v1", "Secret", "tg", "proxy-auth").expect("created");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tunnelgate-controller"
    );
    assert!(
        secret["data"]["auth-token"]
            .as_str()
            .is_some_and(|t| t.len() > 40)
    );
}

/// Measures (and prints) the time from an HTTPRoute watch event to all three proxies serving it, over several
/// routes created one after another on an idle controller. No timing assertion: the figure is reported, not
/// enforced, because test machines vary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_event_to_three_proxies_serving_latency() {
    let c = cluster().await;
    let proxies = [Proxy::start().await, Proxy::start().await, Proxy::start().await];
    for (i, p) in proxies.iter().enumerate() {
        c.api.apply(p.slice(&format!("proxy-headless-{i}"), true));
    }
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    wait_until("initial push", Duration::from_secs(10), || async {
        proxies.iter().all(|p| p.version() > 0)
    })
    .await;
    let mut samples = Vec::new();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let host = format!("r{i}.example.com");
        let event = Instant::now();
        c.api
            .apply(http_route("default", &format!("r{i}"), "gw", &host, "/", "app"));
        for p in &proxies {
            wait_until("served", Duration::from_secs(10), || async {
                serves(p, &host).await
            })
            .await;
        }
        samples.push(event.elapsed());
    }
    samples.sort();
    println!(
        "route event -> 3 proxies serving over {} routes: min {:?}, median {:?}, max {:?}",
        samples.len(),
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_leaves_our_gateways_loses_our_parent_entry() {
    let (c, proxy) = cluster_with_web_route().await;
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    let ours = || our_parent(&c.api.get(GW_V1, "HTTPRoute", "default", "web").unwrap()["status"]).is_some();
    wait_until("our entry written", Duration::from_secs(10), || async { ours() }).await;
    let mut moved = http_route("default", "web", "elsewhere", "app.example.com", "/", "app");
    moved["status"] = c.api.get(GW_V1, "HTTPRoute", "default", "web").unwrap()["status"].clone();
    c.api.apply(moved);
    wait_until("our entry removed", Duration::from_secs(10), || async { !ours() }).await;
    wait_until("the route no longer serves", Duration::from_secs(10), || async {
        proxy.get("app.example.com", "/hello").await.status == 404
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_tls_policy_gets_ancestor_status_and_its_missing_ca_fails_the_backend_closed() {
    let (c, proxy) = cluster_with_web_route().await;
    c.api.apply(json!({
        "apiVersion": GW_V1, "kind": "BackendTLSPolicy",
        "metadata": {"namespace": "default", "name": "app-tls", "generation": 1},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "app"}],
                 "validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "app-ca"}],
                                "hostname": "app.internal"}}
    }));
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    let resolved_refs = || {
        let policy = c.api.get(GW_V1, "BackendTLSPolicy", "default", "app-tls")?;
        let ancestor = policy["status"]["ancestors"]
            .as_array()?
            .iter()
            .find(|a| a["controllerName"] == CONTROLLER && a["ancestorRef"]["name"] == "gw")?
            .clone();
        let c = condition(&ancestor["conditions"], "ResolvedRefs")?;
        Some((c["status"].as_str()?.to_owned(), c["reason"].as_str()?.to_owned()))
    };
    wait_until(
        "the policy's ancestor status",
        Duration::from_secs(10),
        || async { resolved_refs() == Some(("False".into(), "InvalidCACertificateRef".into())) },
    )
    .await;
    // Without its CA the backend is not dialled in plain text: 502.
    wait_until("the route fails closed", Duration::from_secs(10), || async {
        proxy.get("app.example.com", "/hello").await.status == 502
    })
    .await;
    assert_eq!(c.backend.requests(), 0);

    let pki = tunnelgate_testkit::TestPki::new();
    c.api.apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"namespace": "default", "name": "app-ca"},
        "data": {"ca.crt": pki.ca_pem}
    }));
    wait_until("the CA resolved", Duration::from_secs(10), || async {
        resolved_refs() == Some(("True".into(), "ResolvedRefs".into()))
    })
    .await;
    assert!(!status_writes(&c.api, "backendtlspolicies", "app-tls").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_explicit_quic_a_grpc_route_is_not_accepted_and_not_served() {
    let (c, proxy) = cluster_with_web_route().await;
    c.api.apply(json!({
        "apiVersion": GW_V1, "kind": "GRPCRoute",
        "metadata": {"namespace": "default", "name": "greeter", "generation": 1},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["grpc.example.com"],
                 "rules": [{"backendRefs": [{"name": "app", "port": 80}]}]}
    }));
    let mut opts = options();
    opts.reject_grpc_routes = true;
    let _controller = Controller::start(c.api.client(), opts).await.unwrap();
    let accepted = || {
        let route = c.api.get(GW_V1, "GRPCRoute", "default", "greeter")?;
        let c = condition(&our_parent(&route["status"])?["conditions"], "Accepted")?;
        Some((c["status"].as_str()?.to_owned(), c["reason"].as_str()?.to_owned()))
    };
    wait_until("the GRPCRoute's status", Duration::from_secs(10), || async {
        accepted() == Some(("False".into(), "UnsupportedValue".into()))
    })
    .await;
    wait_until("the HTTPRoute serves", Duration::from_secs(10), || async {
        serves(&proxy, "app.example.com").await
    })
    .await;
    assert_eq!(proxy.get("grpc.example.com", "/hello").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_gateway_class_holds_the_finalizer_while_a_gateway_names_it() {
    let c = cluster().await;
    let proxy = Proxy::start().await;
    c.api.apply(proxy.slice("proxy-headless-a", true));
    let mut class = gateway_class("tunnelgate", CONTROLLER);
    class["metadata"]["finalizers"] = json!(["example.net/keep"]);
    c.api.apply(class);
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    let finalizers =
        || c.api.get(GW_V1, "GatewayClass", "", "tunnelgate").unwrap()["metadata"]["finalizers"].clone();
    let ours = "gateway-exists-finalizer.gateway.networking.k8s.io";
    wait_until("the finalizer added", Duration::from_secs(10), || async {
        finalizers() == json!(["example.net/keep", ours])
    })
    .await;
    // The last Gateway of the class goes: ours comes off, the other one stays.
    c.api.delete(GW_V1, "Gateway", "default", "gw");
    wait_until("the finalizer removed", Duration::from_secs(10), || async {
        finalizers() == json!(["example.net/keep"])
    })
    .await;
    // Another class's finalizers are not ours to touch.
    c.api
        .apply(gateway_class("other", "example.net/other-controller"));
    c.api.apply(gateway("default", "other-gw", "other"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.api.get(GW_V1, "GatewayClass", "", "other").unwrap()["metadata"]["finalizers"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadowed_route_gets_one_warning_event_not_one_per_sync() {
    let c = cluster().await;
    let proxy = Proxy::start().await;
    c.api.apply(proxy.slice("proxy-headless-a", true));
    let mut old = http_route("default", "old", "gw", "app.example.com", "/", "app");
    old["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    c.api.apply(old);
    let mut new = http_route("default", "new", "gw", "app.example.com", "/", "app");
    new["metadata"]["creationTimestamp"] = json!("2025-06-01T00:00:00Z");
    c.api.apply(new);
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    let events = || {
        c.api
            .writes()
            .into_iter()
            .filter(|w| {
                w.path
                    .contains("/apis/events.k8s.io/v1/namespaces/default/events")
            })
            .map(|w| (w.method, w.body))
            .collect::<Vec<_>>()
    };
    wait_until("the event recorded", Duration::from_secs(10), || async {
        !events().is_empty()
    })
    .await;
    let (method, body) = events().remove(0);
    assert_eq!(method, "POST");
    assert_eq!(body["reason"], "RouteShadowed");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["regarding"]["kind"], "HTTPRoute");
    assert_eq!(body["regarding"]["name"], "new");
    let uid = c.api.get(GW_V1, "HTTPRoute", "default", "new").unwrap()["metadata"]["uid"].clone();
    assert_eq!(body["regarding"]["uid"], uid);
    assert!(
        body["note"].as_str().unwrap().contains("HTTPRoute default/old"),
        "{body}"
    );
    // More syncs (an unrelated change) record nothing new while the shadowing is unchanged.
    c.api.apply(service("default", "unrelated"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(events().len(), 1, "{:?}", events());
}

/// A config API that rejects every document with 400, as a proxy would a document it cannot compile.
async fn rejecting_proxy() -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 16 * 1024];
                // Reads the head and as much of the body as Content-Length says, then answers and closes.
                loop {
                    let Ok(n) = conn.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let body = r#"{"error":"rules[0].matches[0].path.value: invalid regular expression","path":"rules[0]"}"#;
                let reply = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_document_is_recorded_as_an_event_on_our_gateway() {
    let c = cluster().await;
    let port = rejecting_proxy().await;
    c.api.apply(endpoint_slice(
        "tg",
        "proxy-headless-a",
        "proxy-headless",
        "config-api",
        port,
        &[("127.0.0.1", true)],
    ));
    c.api
        .apply(http_route("default", "web", "gw", "app.example.com", "/", "app"));
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    let rejected = || {
        c.api
            .writes()
            .into_iter()
            .filter(|w| {
                w.method == "POST"
                    && w.path
                        .contains("/apis/events.k8s.io/v1/namespaces/default/events")
            })
            .map(|w| w.body)
            .filter(|b| b["reason"] == "ConfigRejected")
            .collect::<Vec<_>>()
    };
    wait_until("the ConfigRejected event", Duration::from_secs(10), || async {
        !rejected().is_empty()
    })
    .await;
    let event = rejected().remove(0);
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["kind"], "Gateway");
    assert_eq!(event["regarding"]["name"], "gw");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("invalid regular expression"),
        "{event}"
    );
}

/// A tunnel token as `cloudflared tunnel token` prints it, for tunnel id `id`.
fn tunnel_token(id: &str) -> String {
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let json = json!({"a": "0123456789abcdef0123456789abcdef", "t": id, "s": secret}).to_string();
    base64::engine::general_purpose::STANDARD.encode(json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tunnel_token_rolls_the_proxy_deployment_and_a_bad_one_does_not() {
    const ID_1: &str = "6ff42ae2-765d-4adf-8112-31c55c1551ef";
    const ID_2: &str = "0b5e6a43-9d3c-4c43-9a57-2a1c5e0e7b11";
    let c = cluster().await;
    c.api.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"namespace": "tg", "name": "proxy"},
        "spec": {"selector": {"matchLabels": {"app": "proxy"}},
                 "template": {"metadata": {"labels": {"app": "proxy"}}, "spec": {"containers": []}}}
    }));
    c.api.apply(secret("tg", "tunnel", "token", &tunnel_token(ID_1)));
    let mut opts = options();
    opts.tunnel_token = Some(TunnelTokenOptions {
        secret: ObjectName::new("tg", "tunnel"),
        key: "token".into(),
    });
    opts.proxy_deployment = Some(ObjectName::new("tg", "proxy"));
    let _controller = Controller::start(c.api.client(), opts).await.unwrap();
    let address = || {
        let gw = c.api.get(GW_V1, "Gateway", "default", "gw")?;
        gw["status"]["addresses"][0]["value"].as_str().map(str::to_owned)
    };
    let annotation = || {
        let d = c.api.get("apps/v1", "Deployment", "tg", "proxy").unwrap();
        d["spec"]["template"]["metadata"]["annotations"]["tunnelgate.dev/tunnel-token-hash"]
            .as_str()
            .map(str::to_owned)
    };
    wait_until("the first token's address", Duration::from_secs(10), || async {
        address() == Some(format!("{ID_1}.cfargotunnel.com"))
    })
    .await;
    // The token the proxies started with: no restart on install.
    assert_eq!(annotation(), None);

    let second = tunnel_token(ID_2);
    c.api.apply(secret("tg", "tunnel", "token", &second));
    let expected = tunnelgate_controller::auth_token::token_hash(&second);
    wait_until("the roll for the new token", Duration::from_secs(10), || async {
        annotation().as_deref() == Some(expected.as_str())
    })
    .await;
    wait_until("the new token's address", Duration::from_secs(10), || async {
        address() == Some(format!("{ID_2}.cfargotunnel.com"))
    })
    .await;

    // A token the proxies could not start with does not roll them.
    c.api.apply(secret("tg", "tunnel", "token", "not a token"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(annotation().as_deref(), Some(expected.as_str()));
    assert_eq!(address(), Some(format!("{ID_2}.cfargotunnel.com")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_client_certificate_is_read_from_tls_secrets_only() {
    let c = cluster().await;
    let mut gw = gateway("default", "gw", "tunnelgate");
    gw["spec"]["tls"] = json!({"backend": {"clientCertificateRef": {"name": "client"}}});
    c.api.apply(gw);
    let pki = tunnelgate_testkit::TestPki::new();
    let leaf = pki.leaf(&["gateway.local"], &[]);
    let tls_secret = |kind: &str| {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": "default", "name": "client"},
               "type": kind, "data": {"tls.crt": b64(&leaf.cert_pem), "tls.key": b64(&leaf.key_pem)}})
    };
    // An Opaque Secret is not even cached: the controller watches kubernetes.io/tls Secrets only.
    c.api.apply(tls_secret("Opaque"));
    let _controller = Controller::start(c.api.client(), options()).await.unwrap();
    let resolved = || {
        let gw = c.api.get(GW_V1, "Gateway", "default", "gw")?;
        let c = condition(&gw["status"]["conditions"], "ResolvedRefs")?;
        Some((
            c["status"].as_str()?.to_owned(),
            c["message"].as_str()?.to_owned(),
        ))
    };
    wait_until("ResolvedRefs=False", Duration::from_secs(10), || async {
        resolved().is_some_and(|(status, message)| status == "False" && message.contains("not found"))
    })
    .await;
    c.api.apply(tls_secret("kubernetes.io/tls"));
    wait_until("ResolvedRefs=True", Duration::from_secs(10), || async {
        resolved().is_some_and(|(status, _)| status == "True")
    })
    .await;
}
