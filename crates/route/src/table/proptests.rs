//! Property tests: the indexed lookup equals a slow reference scan, and lookup never panics.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::config::{
    BackendRef, Config, PathMatch, PathMatchType, RouteMatch, RouteRule, ValueMatch, ValueMatchType,
};

/// A small universe so that random rules and requests collide often.
const HOSTS: &[&str] = &[
    "a.com",
    "b.a.com",
    "x.b.a.com",
    "c.org",
    "A.COM",
    "*.a.com",
    "*.b.a.com",
    "*.org",
];
const REQUEST_HOSTS: &[&str] = &[
    "a.com",
    "A.com:8080",
    "b.a.com",
    "x.b.a.com",
    "y.b.a.com.",
    "q.a.com",
    "c.org",
    "z.c.org",
    "org",
    "",
    "[::1]:80",
];
const SEGMENTS: &[&str] = &["a", "b", "ab", "", "%2F"];
const REGEXES: &[&str] = &["^/a", "b$", "/a/.*", "^/$", "a|b", "^/(a|b)/b"];
const METHODS: &[&str] = &["GET", "POST"];
const HEADER_NAMES: &[&str] = &["x", "X", "y"];
const QUERY_NAMES: &[&str] = &["q", "Q", "r"];
const VALUES: &[&str] = &["1", "2", "", "1+2"];

fn path_strategy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(SEGMENTS), 0..4),
        any::<bool>(),
    )
        .prop_map(|(segs, slash)| {
            let mut p: String = segs.iter().map(|s| format!("/{s}")).collect();
            if p.is_empty() || slash {
                p.push('/');
            }
            p
        })
}

fn value_match(names: &'static [&'static str]) -> impl Strategy<Value = ValueMatch> {
    (
        any::<bool>(),
        prop::sample::select(names),
        prop::sample::select(VALUES),
    )
        .prop_map(|(regex, name, value)| ValueMatch {
            kind: if regex {
                ValueMatchType::RegularExpression
            } else {
                ValueMatchType::Exact
            },
            name: name.to_owned(),
            value: if regex {
                format!("^{}", regex::escape(value))
            } else {
                value.to_owned()
            },
        })
}

fn route_match() -> impl Strategy<Value = RouteMatch> {
    let path = prop_oneof![
        Just(None),
        path_strategy().prop_map(|value| Some(PathMatch {
            kind: PathMatchType::Exact,
            value
        })),
        path_strategy().prop_map(|value| Some(PathMatch {
            kind: PathMatchType::PathPrefix,
            value
        })),
        prop::sample::select(REGEXES).prop_map(|v| Some(PathMatch {
            kind: PathMatchType::RegularExpression,
            value: v.to_owned()
        })),
    ];
    (
        path,
        prop::collection::vec(value_match(HEADER_NAMES), 0..3),
        prop::collection::vec(value_match(QUERY_NAMES), 0..3),
        prop::option::of(prop::sample::select(METHODS)),
    )
        .prop_map(|(path, headers, query_params, method)| RouteMatch {
            path,
            headers,
            query_params,
            method: method.unwrap_or_default().to_owned(),
        })
}

fn route_rule() -> impl Strategy<Value = RouteRule> {
    (
        prop::collection::vec(prop::sample::select(HOSTS), 0..3),
        prop::collection::vec(route_match(), 0..4),
    )
        .prop_map(|(hostnames, matches)| RouteRule {
            hostnames: hostnames.into_iter().map(str::to_owned).collect(),
            matches,
            backends: vec![BackendRef {
                url: "http://backend:8080".to_owned(),
                weight: 1,
                ..BackendRef::default()
            }],
            ..RouteRule::default()
        })
}

fn config() -> impl Strategy<Value = Config> {
    prop::collection::vec(route_rule(), 0..12).prop_map(|rules| Config {
        version: 1,
        rules,
        has_grpc_route: false,
    })
}

#[derive(Debug, Clone)]
struct Request {
    method: Method,
    host: String,
    path: String,
    query: Option<String>,
    headers: Vec<(&'static str, &'static str)>,
}

fn request() -> impl Strategy<Value = Request> {
    let pair = (prop::sample::select(QUERY_NAMES), prop::sample::select(VALUES));
    (
        prop::sample::select(&["GET", "POST", "HEAD"][..]),
        prop::sample::select(REQUEST_HOSTS),
        path_strategy(),
        prop::option::of(prop::collection::vec(pair, 0..4)),
        prop::collection::vec(
            (
                prop::sample::select(&["x", "y", "z"][..]),
                prop::sample::select(VALUES),
            ),
            0..4,
        ),
    )
        .prop_map(|(method, host, path, query, headers)| Request {
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            host: host.to_owned(),
            path,
            query: query.map(|pairs| {
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            }),
            headers,
        })
}

impl Request {
    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }
}

/// Which bucket a rule hostname belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Exact(String),
    Wildcard(String),
    Default,
}

fn key_of(raw: &str) -> Key {
    let lower = raw.to_ascii_lowercase();
    match lower.strip_prefix('*') {
        Some(suffix) => Key::Wildcard(suffix.to_owned()),
        None => Key::Exact(lower),
    }
}

/// routing.md §3 and §4.6 as a plain scan: candidate buckets in order, and in each the greatest precedence key
/// among all arms (of all rules in the bucket) whose conditions hold.
fn reference(
    cfg: &Config,
    table: &RouteTable,
    req: &RequestHead<'_>,
) -> Option<(usize, usize, String, Option<String>)> {
    let host = normalize_host(req.host).into_owned();
    let rule_keys: Vec<BTreeSet<Key>> = cfg
        .rules
        .iter()
        .map(|r| {
            if r.hostnames.is_empty() {
                BTreeSet::from([Key::Default])
            } else {
                r.hostnames.iter().map(|h| key_of(h)).collect()
            }
        })
        .collect();
    let mut candidates = vec![Key::Exact(host.clone())];
    let mut wildcards: Vec<String> = rule_keys
        .iter()
        .flatten()
        .filter_map(|k| match k {
            Key::Wildcard(s) if host.ends_with(s.as_str()) && host.len() > s.len() => Some(s.clone()),
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    wildcards.sort_by_key(|s| std::cmp::Reverse(s.len()));
    candidates.extend(wildcards.into_iter().map(Key::Wildcard));
    candidates.push(Key::Default);
    for key in candidates {
        let best = table
            .rules()
            .iter()
            .enumerate()
            .filter(|(r, _)| rule_keys[*r].contains(&key))
            .flat_map(|(r, rule)| rule.arms.iter().enumerate().map(move |(a, arm)| (r, a, arm)))
            .filter(|(_, _, arm)| arm.matches(req))
            .max_by_key(|(r, a, arm)| arm.precedence(*r, *a));
        if let Some((r, a, arm)) = best {
            let label = match key {
                Key::Exact(h) => h,
                Key::Wildcard(s) => format!("*{s}"),
                Key::Default => String::new(),
            };
            return Some((r, a, label, arm.prefix().map(str::to_owned)));
        }
    }
    None
}

/// `cfg` with one more rule per rule hostname and one for the default bucket, each with more Exact paths than
/// a bucket scans without a hash index (paths no request of [`request`] has), so every bucket is hashed.
fn with_hashed_buckets(mut cfg: Config) -> Config {
    let mut hostnames: BTreeSet<Option<String>> = cfg
        .rules
        .iter()
        .flat_map(|r| r.hostnames.iter().cloned().map(Some))
        .collect();
    hostnames.insert(None);
    for host in hostnames {
        let matches = (0..=FEW_RUNS)
            .map(|k| RouteMatch {
                path: Some(PathMatch {
                    kind: PathMatchType::Exact,
                    value: format!("/zz{k}"),
                }),
                ..RouteMatch::default()
            })
            .collect();
        cfg.rules.push(RouteRule {
            hostnames: host.into_iter().collect(),
            matches,
            ..RouteRule::default()
        });
    }
    cfg
}

/// Checks `table.lookup` against the reference scan for every request.
fn lookups_equal_the_reference(
    cfg: &Config,
    table: &RouteTable,
    reqs: &[Request],
) -> Result<(), TestCaseError> {
    for req in reqs {
        let headers = req.header_map();
        let head = RequestHead {
            method: &req.method,
            host: &req.host,
            path: &req.path,
            query: req.query.as_deref(),
            headers: &headers,
        };
        let got = table.lookup(&head).map(|hit| {
            (
                hit.rule_index,
                hit.arm_index,
                hit.hostname.to_owned(),
                hit.prefix.map(str::to_owned),
            )
        });
        prop_assert_eq!(got, reference(cfg, table, &head), "request {:?}", req);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hashed_lookup_equals_the_reference_scan(cfg in config(), reqs in prop::collection::vec(request(), 1..16)) {
        let cfg = with_hashed_buckets(cfg);
        let table = RouteTable::compile(&cfg).unwrap();
        prop_assert!(table.buckets.iter().all(|b| b.paths.1 & HASHED != 0));
        lookups_equal_the_reference(&cfg, &table, &reqs)?;
    }

    #[test]
    fn lookup_equals_the_reference_scan(cfg in config(), reqs in prop::collection::vec(request(), 1..16)) {
        let table = RouteTable::compile(&cfg).unwrap();
        lookups_equal_the_reference(&cfg, &table, &reqs)?;
    }

    #[test]
    fn lookup_never_panics_on_arbitrary_request_heads(
        cfg in config(),
        method in "[A-Za-z!#$%&'*+.^_`|~-]{1,12}",
        host in any::<String>(),
        path in any::<String>(),
        query in prop::option::of(any::<String>()),
        headers in prop::collection::vec(("[a-z0-9-]{1,8}", prop::collection::vec(any::<u8>(), 0..16)), 0..6),
    ) {
        let table = RouteTable::compile(&cfg).unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let Ok(value) = http::HeaderValue::from_bytes(&value) {
                map.append(http::HeaderName::try_from(name).unwrap(), value);
            }
        }
        let head = RequestHead { method: &method, host: &host, path: &path, query: query.as_deref(), headers: &map };
        let got = table.lookup(&head).map(|hit| {
            (hit.rule_index, hit.arm_index, hit.hostname.to_owned(), hit.prefix.map(str::to_owned))
        });
        prop_assert_eq!(got, reference(&cfg, &table, &head));
    }
}
