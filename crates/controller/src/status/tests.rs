use super::*;
use k8s_openapi::jiff::Timestamp;

const OURS: &str = "tunnelgate.dev/gateway-controller";

fn time(s: &str) -> Time {
    Time(s.parse::<Timestamp>().unwrap())
}

fn cond(kind: &str, status: &str, reason: &str, generation: i64, at: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": "", "observedGeneration": generation,
           "lastTransitionTime": at})
}

fn parent(controller: &str, gateway: &str, conditions: Vec<Value>) -> Value {
    json!({"controllerName": controller,
           "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway},
           "conditions": conditions})
}

fn route_status(parents: Vec<Value>) -> ObjectStatus {
    ObjectStatus {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        namespace: Some("default".into()),
        name: "r".into(),
        status: json!({ "parents": parents }),
    }
}

#[test]
fn an_identical_status_is_not_written() {
    let current = json!({"parents": [parent(OURS, "gw", vec![cond("Accepted", "True", "Accepted", 1, "2026-01-01T00:00:00Z")])]});
    // Different key order and an explicit default must not count as a change.
    let desired = json!({"parents": [{
        "parentRef": {"name": "gw", "kind": "Gateway", "group": "gateway.networking.k8s.io"},
        "conditions": [{"status": "True", "type": "Accepted", "reason": "Accepted", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
        "controllerName": OURS}]});
    assert!(!needs_write("HTTPRoute", Some(&current), &desired, OURS));
}

#[test]
fn a_changed_condition_is_written() {
    let current = json!({"parents": [parent(OURS, "gw", vec![cond("Accepted", "True", "Accepted", 1, "2026-01-01T00:00:00Z")])]});
    let desired = json!({"parents": [parent(OURS, "gw", vec![cond("Accepted", "False", "NotAllowedByListeners", 1, "2026-01-02T00:00:00Z")])]});
    assert!(needs_write("HTTPRoute", Some(&current), &desired, OURS));
    assert!(needs_write("HTTPRoute", None, &desired, OURS));
}

#[test]
fn a_write_that_lowers_observed_generation_is_skipped() {
    let current = json!({"parents": [parent(OURS, "gw", vec![cond("Accepted", "True", "Accepted", 3, "2026-01-01T00:00:00Z")])]});
    let stale = json!({"parents": [parent(OURS, "gw", vec![cond("Accepted", "False", "NoMatchingParent", 2, "2026-01-01T00:00:00Z")])]});
    assert!(!needs_write("HTTPRoute", Some(&current), &stale, OURS));
    // Another controller's newer generation does not block ours.
    let theirs = json!({"parents": [parent("other.io/ctl", "gw2", vec![cond("Accepted", "True", "Accepted", 9, "2026-01-01T00:00:00Z")])]});
    let ours = json!({"parents": [
        parent("other.io/ctl", "gw2", vec![cond("Accepted", "True", "Accepted", 9, "2026-01-01T00:00:00Z")]),
        parent(OURS, "gw", vec![cond("Accepted", "True", "Accepted", 2, "2026-01-01T00:00:00Z")])]});
    assert!(needs_write("HTTPRoute", Some(&theirs), &ours, OURS));
}

#[test]
fn detached_routes_lose_only_our_entries() {
    let current = json!({"parents": [
        parent("other.io/ctl", "gw2", vec![cond("Accepted", "True", "Accepted", 1, "2026-01-01T00:00:00Z")]),
        parent(OURS, "gw", vec![cond("Accepted", "True", "Accepted", 1, "2026-01-01T00:00:00Z")])]});
    let next = without_our_parents(&current, OURS).unwrap();
    let parents = next["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0]["controllerName"], "other.io/ctl");
    assert_eq!(without_our_parents(&next, OURS), None);
}

#[test]
fn routes_get_push_failing_only_while_pushes_fail() {
    let now = time("2026-11-26T10:00:00Z");
    let base = route_status(vec![
        parent("other.io/ctl", "gw2", vec![]),
        parent(
            OURS,
            "gw",
            vec![cond("Accepted", "True", "Accepted", 4, "2026-01-01T00:00:00Z")],
        ),
    ]);
    let mut healthy = base.clone();
    add_config_pushed(
        &mut healthy,
        None,
        Some(4),
        &PushView {
            all_acked: true,
            ..PushView::default()
        },
        OURS,
        &now,
    );
    assert_eq!(healthy, base);

    let failing = PushView {
        failing: Some("proxy 10.0.0.1:8081 has not acknowledged".into()),
        ..PushView::default()
    };
    let mut st = base.clone();
    add_config_pushed(&mut st, None, Some(4), &failing, OURS, &now);
    let theirs = &st.status["parents"][0]["conditions"];
    assert_eq!(theirs, &json!([]), "other controllers' entries are untouched");
    let c = st.status["parents"][1]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == CONFIG_PUSHED)
        .unwrap();
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "PushFailing");
    assert_eq!(c["observedGeneration"], 4);
    assert_eq!(c["lastTransitionTime"], "2026-11-26T10:00:00Z");

    // The transition time survives later syncs while it stays failing.
    let mut again = base;
    add_config_pushed(
        &mut again,
        Some(&st.status),
        Some(4),
        &failing,
        OURS,
        &time("2026-11-26T10:05:00Z"),
    );
    let c = again.status["parents"][1]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == CONFIG_PUSHED)
        .unwrap();
    assert_eq!(c["lastTransitionTime"], "2026-11-26T10:00:00Z");
}

#[test]
fn gateways_report_pushed_rejected_or_keep_the_last_verdict() {
    let now = time("2026-11-26T10:00:00Z");
    let gateway = ObjectStatus {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        namespace: Some("default".into()),
        name: "gw".into(),
        status: json!({"conditions": [cond("Accepted", "True", "Accepted", 2, "2026-01-01T00:00:00Z")], "listeners": []}),
    };
    let pushed_of = |st: &ObjectStatus| {
        st.status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == CONFIG_PUSHED)
            .cloned()
    };

    let mut pending = gateway.clone();
    add_config_pushed(&mut pending, None, Some(2), &PushView::default(), OURS, &now);
    assert_eq!(
        pushed_of(&pending),
        None,
        "no verdict while the first push is in flight"
    );

    let mut acked = gateway.clone();
    add_config_pushed(
        &mut acked,
        None,
        Some(2),
        &PushView {
            all_acked: true,
            ..PushView::default()
        },
        OURS,
        &now,
    );
    assert_eq!(pushed_of(&acked).unwrap()["reason"], "Pushed");

    let mut in_flight = gateway.clone();
    add_config_pushed(
        &mut in_flight,
        Some(&acked.status),
        Some(2),
        &PushView::default(),
        OURS,
        &now,
    );
    assert_eq!(
        pushed_of(&in_flight).unwrap()["reason"],
        "Pushed",
        "kept while the next push is in flight"
    );

    let mut rejected = gateway;
    let view = PushView {
        rejected: Some("HTTP 400: invalid regular expression at rules[0]".into()),
        ..PushView::default()
    };
    add_config_pushed(&mut rejected, Some(&acked.status), Some(2), &view, OURS, &now);
    let c = pushed_of(&rejected).unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("Rejected"))
    );
}

#[test]
fn gateways_report_the_cloudflare_sync_and_routes_do_not() {
    let now = time("2026-11-26T10:00:00Z");
    let gateway = ObjectStatus {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        namespace: Some("default".into()),
        name: "gw".into(),
        status: json!({"conditions": [cond("Accepted", "True", "Accepted", 2, "2026-01-01T00:00:00Z")], "listeners": []}),
    };
    let synced_of = |st: &ObjectStatus| {
        st.status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == CLOUDFLARE_SYNCED)
            .cloned()
            .unwrap()
    };

    let mut pending = gateway.clone();
    add_cloudflare_synced(&mut pending, None, Some(2), &CloudflareSynced::Pending, &now);
    let c = synced_of(&pending);
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("Unknown"), Some("Pending"))
    );

    let mut synced = gateway.clone();
    let ok = CloudflareSynced::Synced {
        listed: 3,
        dropped: 0,
    };
    add_cloudflare_synced(&mut synced, None, Some(2), &ok, &now);
    let c = synced_of(&synced);
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("Synced"))
    );
    assert_eq!(c["observedGeneration"], 2);
    assert!(c["message"].as_str().unwrap().contains("3 hostnames"));

    // A new leader keeps the last verdict until it has tried itself.
    let mut kept = gateway.clone();
    add_cloudflare_synced(
        &mut kept,
        Some(&synced.status),
        Some(3),
        &CloudflareSynced::Pending,
        &now,
    );
    let c = synced_of(&kept);
    assert_eq!(
        (c["reason"].as_str(), c["observedGeneration"].as_i64()),
        (Some("Synced"), Some(3))
    );

    let mut truncated = gateway.clone();
    let cut = CloudflareSynced::Synced {
        listed: 999,
        dropped: 12,
    };
    add_cloudflare_synced(&mut truncated, None, Some(2), &cut, &now);
    let c = synced_of(&truncated);
    assert_eq!(c["reason"], "Truncated");
    assert!(c["message"].as_str().unwrap().contains("leaves out 12"));

    let mut failed = gateway.clone();
    let refused = CloudflareSynced::Failed {
        reason: "RateLimited",
        message: "the Cloudflare API answered 429: slow down".into(),
    };
    add_cloudflare_synced(
        &mut failed,
        Some(&synced.status),
        Some(2),
        &refused,
        &time("2026-11-26T10:05:00Z"),
    );
    let c = synced_of(&failed);
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("RateLimited"))
    );
    assert_eq!(
        c["lastTransitionTime"], "2026-11-26T10:05:00Z",
        "the status flipped"
    );

    let mut route = route_status(vec![parent(OURS, "gw", vec![])]);
    let before = route.clone();
    add_cloudflare_synced(&mut route, None, Some(1), &refused, &now);
    assert_eq!(
        route, before,
        "route status does not depend on the Cloudflare API"
    );
}
