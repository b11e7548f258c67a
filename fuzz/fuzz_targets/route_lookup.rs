//! Route matching on arbitrary request heads against a fixed set of compiled tables, then the pure filter math
//! of the winning rule, the way the proxy's request service calls it.
//!
//! Properties, beyond "nothing panics":
//! - the hit points at a real rule and arm, and its hostname label is the host's exact name, one of its
//!   wildcard suffixes, or the default bucket;
//! - a fired PathPrefix matches the path element-wise;
//! - the weighted backend choice is in range;
//! - for a head the HTTP layer can produce (host is a header value, path and query form a valid URI), the
//!   redirect `Location` is a valid header value and a rewritten path is a valid URI path, so neither a redirect
//!   without `Location` nor a 502 from an unforwardable path can happen.
#![no_main]

use std::sync::OnceLock;

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tunnelgate_config::Config;
use tunnelgate_route::{Filter, RedirectInput, RequestHead, RouteTable, normalize_host};

/// Tables with every matcher family, overlapping hostnames and prefixes, and every filter kind.
const TABLES: [&str; 3] = [
    r#"{"version":1,"rules":[
      {"hostnames":["shop.example.com","*.example.com","*.b.example.com","EXAMPLE.org."],
       "matches":[{"path":{"type":"PathPrefix","value":"/api/"},"method":"GET",
                   "headers":[{"type":"RegularExpression","name":"user-agent","value":"^curl/"},
                              {"type":"Exact","name":"x-tenant","value":"blue"}],
                   "queryParams":[{"type":"Exact","name":"debug","value":"1"},
                                  {"type":"RegularExpression","name":"q","value":"^[a-z%0-9]+$"}]},
                  {"path":{"type":"RegularExpression","value":"^/f/[0-9a-f]{4,}(/.*)?$"}},
                  {"path":{"type":"Exact","value":"/old"}},
                  {"path":{"type":"PathPrefix","value":"/v1"},"method":"POST"}],
       "filters":[{"type":"URLRewrite","urlRewrite":{"hostname":"api.internal:8080",
                   "path":{"type":"ReplacePrefixMatch","replacePrefixMatch":"/v2/"}}},
                  {"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x-a","value":"1"}],
                   "add":[{"name":"x-trace","value":"tg"}],"remove":["x-b","host","connection"]}},
                  {"type":"RequestRedirect","requestRedirect":{"path":{"type":"ReplacePrefixMatch","value":"/new/"}}},
                  {"type":"CORS","cors":{"allowOrigins":["https://*.example.org","http://a.test:8080"],
                   "allowMethods":["GET","POST"],"allowHeaders":["*"],"exposeHeaders":["x-e"],"allowCredentials":true}}],
       "backends":[{"url":"http://a:1","weight":3},{"url":"http://b:1/base?k=v","weight":0},
                   {"url":"https://c:443","weight":2147483647,"unavailableStatus":503}]},
      {"hostnames":["*.b.example.com","10.0.0.1"],
       "matches":[{"path":{"type":"PathPrefix","value":"//"}},{"headers":[{"type":"Exact","name":"x","value":""}]}],
       "filters":[{"type":"RequestRedirect","requestRedirect":{"scheme":"https","port":8443,"statusCode":308,
                   "hostname":"[2001:db8::1]","path":{"type":"ReplaceFullPath","value":"/x%20y"}}},
                  {"type":"RequestMirror","requestMirror":{"backendUrl":"http://shadow:9","percent":50}}],
       "backends":[]},
      {"matches":[{"path":{"type":"PathPrefix","value":"/"},"queryParams":[{"type":"RegularExpression","name":"q","value":"^(a|%)+$"}]},
                  {"path":{"type":"Exact","value":"/"}},{"method":"DELETE"}],
       "filters":[{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplaceFullPath","replaceFullPath":"/full"}}},
                  {"type":"ResponseHeaderModifier","responseHeaderModifier":{"set":[{"name":"server","value":"tg"}]}}],
       "backends":[{"url":"https://c","weight":1}],"timeouts":{"request":"1s","backend":"500ms"}}
    ]}"#,
    r#"{"version":2,"rules":[
      {"hostnames":["a.test"],"matches":[{"path":{"type":"PathPrefix","value":"/a/b/"}}],
       "filters":[{"type":"RequestRedirect","requestRedirect":{"hostname":"b.test","port":80,
                   "path":{"type":"ReplacePrefixMatch","value":"/"}}}],"backends":[]},
      {"hostnames":["a.test"],"matches":[{"path":{"type":"PathPrefix","value":"/a"}}],
       "filters":[{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplacePrefixMatch","replacePrefixMatch":""}}}],
       "backends":[{"url":"http://x:1","weight":1}]},
      {"hostnames":["*.test"],"matches":[{"path":{"type":"RegularExpression","value":"(?i)^/CASE"}}],
       "filters":[{"type":"RequestRedirect","requestRedirect":{"scheme":"http","statusCode":301}}],"backends":[]},
      {"hostnames":["*.test"],"unavailableStatus":503,"backends":[]}
    ]}"#,
    r#"{"version":3,"rules":[]}"#,
];

fn tables() -> &'static [RouteTable] {
    static TABLES_COMPILED: OnceLock<Vec<RouteTable>> = OnceLock::new();
    TABLES_COMPILED.get_or_init(|| {
        TABLES
            .iter()
            .map(|doc| {
                let cfg = Config::from_json_slice(doc.as_bytes()).expect("fixed table decodes");
                RouteTable::compile(&cfg).expect("fixed table compiles")
            })
            .collect()
    })
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    table: u8,
    method: &'a [u8],
    host: &'a str,
    target: &'a str,
    headers: Vec<(&'a [u8], &'a [u8])>,
    https: bool,
    draw: u64,
}

fuzz_target!(|input: Input<'_>| {
    let table = &tables()[usize::from(input.table) % TABLES.len()];
    let method = Method::from_bytes(input.method).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let (path, query) = match input.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (input.target, None),
    };
    let head = RequestHead {
        method: &method,
        host: input.host,
        path,
        query,
        headers: &headers,
    };
    let Some(hit) = table.lookup(&head) else {
        return;
    };

    let rule = table.rules().get(hit.rule_index).expect("rule index in range");
    assert!(std::ptr::eq(rule, hit.rule), "hit.rule is not rules[rule_index]");
    assert!(hit.arm_index < rule.arm_count() || rule.arm_count() == 0);
    let host = normalize_host(input.host);
    if let Some(suffix) = hit.hostname.strip_prefix('*') {
        assert!(
            host.ends_with(suffix) && host.len() > suffix.len(),
            "wildcard bucket {} for host {host:?}",
            hit.hostname
        );
    } else if !hit.hostname.is_empty() {
        assert_eq!(hit.hostname, &*host, "exact bucket for another host");
    }
    if let Some(prefix) = hit.prefix {
        assert!(
            prefix.is_empty()
                || path == prefix
                || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')),
            "prefix {prefix:?} fired for path {path:?}"
        );
    }
    let draw = input.draw;
    if let Some(b) = rule.choose_backend(|n| if n == 0 { 0 } else { draw % n }) {
        assert!(b < rule.backends.len());
    }

    // What hyper can hand the request service: a header-value host and an origin-form target.
    let valid_head = HeaderValue::from_str(input.host).is_ok()
        && path.starts_with('/')
        && input.target.parse::<PathAndQuery>().is_ok();
    let scheme = if input.https { "https" } else { "http" };
    let mut current_path = path.to_owned();
    for filter in &rule.filters {
        match filter {
            Filter::RequestRedirect(r) => {
                let location = r.location(
                    &RedirectInput {
                        scheme,
                        host: input.host,
                        path: &current_path,
                        query,
                    },
                    hit.prefix,
                );
                if valid_head {
                    assert!(
                        HeaderValue::from_str(&location).is_ok(),
                        "Location {location:?} is not a header value"
                    );
                }
                break;
            }
            Filter::UrlRewrite(rw) => {
                if let Some(p) = rw.rewrite_path(&current_path, hit.prefix) {
                    if valid_head {
                        assert!(p.starts_with('/'), "rewritten path {p:?} is not absolute");
                        assert!(p.parse::<PathAndQuery>().is_ok(), "rewritten path {p:?} is not a URI path");
                    }
                    current_path = p;
                }
            }
            Filter::RequestHeaderModifier(m) | Filter::ResponseHeaderModifier(m) => {
                let mut h = headers.clone();
                m.apply(&mut h);
            }
            Filter::RequestMirror(m) => {
                let _ = m.sample((draw % 100) as u32);
            }
            Filter::Cors(c) => {
                if let Some(origin) = headers.get(http::header::ORIGIN) {
                    let _ = c.preflight_headers(
                        origin,
                        headers.get("access-control-request-method"),
                        headers.get("access-control-request-headers"),
                    );
                    let mut resp = HeaderMap::new();
                    c.apply_actual_response(origin, &mut resp);
                }
            }
        }
    }
});
