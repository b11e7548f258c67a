use serde_json::json;
use tunnelgate_config::RouteRule;

use super::*;

fn config(rules: &[&[&str]]) -> Config {
    Config {
        version: 7,
        rules: rules
            .iter()
            .map(|hosts| RouteRule {
                hostnames: hosts.iter().map(|h| (*h).to_owned()).collect(),
                ..RouteRule::default()
            })
            .collect(),
        has_grpc_route: false,
    }
}

fn hostnames(ingress: &TunnelIngress) -> Vec<Option<&str>> {
    ingress.entries.iter().map(|e| e.hostname.as_deref()).collect()
}

#[test]
fn exact_hostnames_come_before_wildcards_each_sorted_then_the_catch_all() {
    let ingress = tunnel_ingress(&config(&[
        &["b.example.com", "*.z.example.com"],
        &["*.example.com", "a.example.com"],
        &["c.example.net"],
    ]));
    assert_eq!(
        hostnames(&ingress),
        [
            Some("a.example.com"),
            Some("b.example.com"),
            Some("c.example.net"),
            Some("*.example.com"),
            Some("*.z.example.com"),
            None
        ]
    );
    assert!(ingress.entries[..5].iter().all(|e| e.service == PROXY_SERVICE));
    assert_eq!(ingress.entries[5].service, CATCH_ALL_SERVICE);
    assert_eq!((ingress.hostnames, ingress.dropped), (5, 0));
}

#[test]
fn a_hostname_served_by_many_rules_is_listed_once() {
    let ingress = tunnel_ingress(&config(&[
        &["app.example.com"],
        &["APP.example.com."],
        &["app.example.com", "*.example.com"],
        &["*.example.com"],
    ]));
    assert_eq!(
        hostnames(&ingress),
        [Some("app.example.com"), Some("*.example.com"), None]
    );
}

#[test]
fn rules_without_hostnames_leave_only_the_catch_all() {
    let ingress = tunnel_ingress(&config(&[&[], &[""]]));
    assert_eq!(hostnames(&ingress), [None]);
    assert_eq!(
        ingress.put_body(),
        json!({"config": {"ingress": [{"service": "http_status:404"}]}})
    );
    assert_eq!(tunnel_ingress(&Config::default()).entries.len(), 1);
}

#[test]
fn the_put_body_is_the_documented_shape() {
    let ingress = tunnel_ingress(&config(&[&["a.example.com"]]));
    assert_eq!(
        ingress.put_body(),
        json!({"config": {"ingress": [
            {"hostname": "a.example.com", "service": "http://tunnelgate-proxy:8080"},
            {"service": "http_status:404"}
        ]}})
    );
}

#[test]
fn more_than_a_thousand_entries_are_truncated_exact_names_first() {
    let exact: Vec<String> = (0..1200).map(|i| format!("h{i:04}.example.com")).collect();
    let mut rules: Vec<Vec<&str>> = exact.iter().map(|h| vec![h.as_str()]).collect();
    rules.push(vec!["*.example.com"]);
    let rules: Vec<&[&str]> = rules.iter().map(Vec::as_slice).collect();
    let ingress = tunnel_ingress(&config(&rules));
    assert_eq!(ingress.entries.len(), MAX_INGRESS_ENTRIES);
    assert_eq!((ingress.hostnames, ingress.dropped), (1201, 1201 - 999));
    assert_eq!(ingress.entries[0].hostname.as_deref(), Some("h0000.example.com"));
    assert_eq!(
        ingress.entries[998].hostname.as_deref(),
        Some("h0998.example.com")
    );
    assert_eq!(
        ingress.entries[999].hostname, None,
        "the catch-all is always last"
    );
    assert!(!hostnames(&ingress).contains(&Some("*.example.com")));
}

#[test]
fn exactly_a_thousand_entries_fit() {
    let exact: Vec<String> = (0..999).map(|i| format!("h{i:04}.example.com")).collect();
    let rules: Vec<Vec<&str>> = exact.iter().map(|h| vec![h.as_str()]).collect();
    let rules: Vec<&[&str]> = rules.iter().map(Vec::as_slice).collect();
    let ingress = tunnel_ingress(&config(&rules));
    assert_eq!((ingress.entries.len(), ingress.dropped), (1000, 0));
}

fn remote(ingress: serde_json::Value) -> serde_json::Value {
    json!({"success": true, "errors": [], "messages": [],
           "result": {"tunnel_id": "t", "version": 3, "source": "cloudflare",
                      "config": {"ingress": ingress, "warp-routing": {"enabled": false}}}})
}

#[test]
fn the_remote_document_is_compared_by_meaning() {
    let ours = tunnel_ingress(&config(&[&["a.example.com", "*.example.com"]]));
    let same = remote(json!([
        {"service": "http://tunnelgate-proxy:8080", "hostname": "A.example.com", "originRequest": {}},
        {"hostname": "*.example.com", "service": "http://tunnelgate-proxy:8080", "path": ""},
        {"service": "http_status:404", "hostname": ""}
    ]));
    assert!(same_ingress(&same, &ours.entries));
}

#[test]
fn any_difference_in_the_remote_document_counts() {
    let ours = tunnel_ingress(&config(&[&["a.example.com"]]));
    let entries = &ours.entries;
    let catch_all = json!({"service": "http_status:404"});
    let a = |extra: serde_json::Value| {
        let mut e = json!({"hostname": "a.example.com", "service": "http://tunnelgate-proxy:8080"});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    for (what, doc) in [
        (
            "a null config (locally managed)",
            json!({"success": true, "result": {"config": null}}),
        ),
        ("no result", json!({"success": true})),
        ("empty ingress", remote(json!([]))),
        ("missing catch-all", remote(json!([a(json!({}))]))),
        ("other order", remote(json!([catch_all.clone(), a(json!({}))]))),
        (
            "other service",
            remote(json!([
                a(json!({"service": "http://localhost:80"})),
                catch_all.clone()
            ])),
        ),
        (
            "a path",
            remote(json!([a(json!({"path": "/api"})), catch_all.clone()])),
        ),
        (
            "origin settings",
            remote(json!([
                a(json!({"originRequest": {"noTLSVerify": true}})),
                catch_all.clone()
            ])),
        ),
        (
            "an extra hostname",
            remote(json!([
                a(json!({})),
                a(json!({"hostname": "b.example.com"})),
                catch_all.clone()
            ])),
        ),
        (
            "another catch-all",
            remote(json!([a(json!({})), {"service": "http_status:503"}])),
        ),
        (
            "a non-object entry",
            remote(json!([a(json!({})), "http_status:404"])),
        ),
    ] {
        assert!(!same_ingress(&doc, entries), "{what} must count as a difference");
    }
    assert!(same_ingress(&remote(json!([a(json!({})), catch_all])), entries));
}
