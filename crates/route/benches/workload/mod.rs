//! The lookup benchmark's workload, shared by `benches/lookup.rs` and `examples/lookup_cost.rs`: 10, 1,000 or
//! 10,000 rules spread over 100 hostnames, and 1,024 scrambled requests that hit every rule.
//!
//! Each rule has two arms (a PathPrefix with a method, and an Exact health path) plus one backend; a catch-all
//! default rule closes the document. Requests cycle through paths that hit every rule, so a lookup walks the
//! same kind of bucket a real request would, not just the first arm.

use http::{HeaderMap, Method};
use tunnelgate_route::RequestHead;
use tunnelgate_route::config::{
    BackendRef, Config, PathMatch, PathMatchType, RouteMatch, RouteRule, ValueMatch, ValueMatchType,
};

const HOSTNAMES: usize = 100;

pub fn document(rules: usize) -> Config {
    let mut out: Vec<RouteRule> = (0..rules)
        .map(|i| {
            let service = i / HOSTNAMES;
            let mut api = RouteMatch {
                path: Some(PathMatch {
                    kind: PathMatchType::PathPrefix,
                    value: format!("/svc{service}/api/"),
                }),
                method: "GET".to_owned(),
                ..RouteMatch::default()
            };
            if i % 7 == 0 {
                api.headers.push(ValueMatch {
                    kind: ValueMatchType::Exact,
                    name: "x-tenant".to_owned(),
                    value: "blue".to_owned(),
                });
            }
            let health = RouteMatch {
                path: Some(PathMatch {
                    kind: PathMatchType::Exact,
                    value: format!("/svc{service}/health"),
                }),
                ..RouteMatch::default()
            };
            RouteRule {
                hostnames: vec![format!("host{}.example.com", i % HOSTNAMES)],
                matches: vec![api, health],
                backends: vec![BackendRef {
                    url: format!("http://svc{service}.ns{}.svc.cluster.local:8080", i % HOSTNAMES),
                    weight: 1,
                    ..BackendRef::default()
                }],
                ..RouteRule::default()
            }
        })
        .collect();
    out.push(RouteRule {
        backends: vec![BackendRef {
            url: "http://fallback:8080".to_owned(),
            weight: 1,
            ..BackendRef::default()
        }],
        ..RouteRule::default()
    });
    Config {
        version: 1,
        rules: out,
        has_grpc_route: false,
    }
}

/// (host, path) pairs that hit every rule's API arm, in a scrambled order.
pub fn requests(rules: usize) -> Vec<(String, String)> {
    let n = rules.max(1);
    (0..1024)
        .map(|k| {
            let i = (k * 7919) % n;
            (
                format!("Host{}.example.com:443", i % HOSTNAMES),
                format!("/svc{}/api/items/{k}", i / HOSTNAMES),
            )
        })
        .collect()
}

/// The request head of one `(host, path)` of [`requests`]: a GET without a query.
pub fn head<'a>(host: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestHead<'a> {
    RequestHead {
        method: &Method::GET,
        host,
        path,
        query: None,
        headers,
    }
}
