//! Fuzz bodies shared by the cargo-fuzz targets (`fuzz_targets/`) and the bounded harness that runs under
//! `cargo test` (`tests/fuzz_harness.rs`). Each takes arbitrary bytes and must not panic.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tunnelgate_route::config::Config;
use tunnelgate_route::{Filter, RedirectInput, RequestHead, RouteHit, RouteTable};

/// A table exercising every matcher and filter kind; the lookup target routes against it.
pub const LOOKUP_TABLE: &str = r#"{"version":3,"rules":[
  {"hostnames":["shop.example.com","*.example.com"],
   "matches":[{"path":{"type":"PathPrefix","value":"/api/"},"method":"GET",
               "headers":[{"type":"RegularExpression","name":"user-agent","value":"^curl/"}],
               "queryParams":[{"type":"Exact","name":"debug","value":"a b"}]},
              {"path":{"type":"RegularExpression","value":"^/f/[0-9a-f]{4,}$"}},
              {"path":{"type":"Exact","value":"/old"}}],
   "filters":[{"type":"RequestRedirect","requestRedirect":{"path":{"type":"ReplacePrefixMatch","value":"/new"}}},
              {"type":"URLRewrite","urlRewrite":{"hostname":"api.internal","path":{"type":"ReplacePrefixMatch","replacePrefixMatch":""}}},
              {"type":"CORS","cors":{"allowOrigins":["https://*.example.org","http://a.test:8080"],"allowMethods":["*"],"allowHeaders":["*"],"exposeHeaders":["*"]}},
              {"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x-a","value":"1"}],"remove":["x-b"]}}],
   "backends":[{"url":"http://a:1","weight":3},{"url":"http://b:1","weight":0}]},
  {"hostnames":["*.b.example.com","ip6.example.net"],"matches":[{"path":{"type":"PathPrefix","value":"//"}},{"headers":[{"type":"Exact","name":"x","value":""}]}],
   "filters":[{"type":"RequestRedirect","requestRedirect":{"scheme":"https","port":8443,"path":{"type":"ReplaceFullPath","value":"/x"}}},
              {"type":"RequestMirror","requestMirror":{"backendUrl":"http://shadow:9","percent":50}}],
   "backends":[]},
  {"matches":[{"path":{"type":"PathPrefix","value":"/"},"queryParams":[{"type":"RegularExpression","name":"q","value":"^(a|%)+$"}]},
              {"path":{"type":"Exact","value":"/"}}],
   "backends":[{"url":"https://c","weight":1}]}
]}"#;

/// Config JSON → decode → compile; on success, route a few fixed requests through the table.
pub fn compile_config(data: &[u8]) {
    let Ok(cfg) = Config::from_json_slice(data) else {
        return;
    };
    let Ok(table) = RouteTable::compile(&cfg) else {
        return;
    };
    assert_eq!(table.rule_count(), cfg.rules.len());
    let headers = HeaderMap::new();
    for (host, path, query) in [
        ("shop.example.com", "/api/x", Some("debug=0")),
        ("a.b.example.com:8080", "/", None),
        ("", "/f/0123", Some("")),
        ("[::1]:80", "//x", Some("q=%zz&q")),
    ] {
        for method in [Method::GET, Method::POST] {
            let head = RequestHead {
                method: &method,
                host,
                path,
                query,
                headers: &headers,
            };
            if let Some(hit) = table.lookup(&head) {
                exercise_hit(&hit, &head);
            }
        }
    }
    let _ = table.upstreams().count();
}

/// Bytes → request head (newline-separated: method, host, path, query, then `name: value` header lines)
/// → lookup against [`LOOKUP_TABLE`] → the filter math of the hit.
pub fn lookup_request(data: &[u8]) {
    static TABLE: OnceLock<Option<RouteTable>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        Config::from_json_slice(LOOKUP_TABLE.as_bytes())
            .ok()
            .and_then(|cfg| RouteTable::compile(&cfg).ok())
    });
    assert!(table.is_some(), "the fuzz lookup table must compile");
    let Some(table) = table else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let method = Method::from_bytes(lines.next().unwrap_or("GET").as_bytes()).unwrap_or(Method::GET);
    let host = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("/");
    let query = lines.next().filter(|q| !q.is_empty());
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.trim_start().as_bytes()),
            )
        {
            headers.append(name, value);
        }
    }
    let head = RequestHead {
        method: &method,
        host,
        path,
        query,
        headers: &headers,
    };
    if let Some(hit) = table.lookup(&head) {
        exercise_hit(&hit, &head);
    }
}

fn exercise_hit(hit: &RouteHit<'_>, head: &RequestHead<'_>) {
    assert!(hit.arm_index < hit.rule.arm_count());
    if let Some(i) = hit.rule.choose_backend(|n| n / 2) {
        assert!(i < hit.rule.backends.len());
        assert!(hit.rule.backends[i].weight > 0);
    }
    let origin = head
        .headers
        .get("origin")
        .cloned()
        .unwrap_or(HeaderValue::from_static("https://a.example.org"));
    for filter in hit
        .rule
        .filters
        .iter()
        .chain(hit.rule.backends.iter().flat_map(|b| b.filters.iter()))
    {
        match filter {
            Filter::RequestRedirect(redirect) => {
                let input = RedirectInput {
                    scheme: "http",
                    host: head.host,
                    path: head.path,
                    query: head.query,
                };
                let location = redirect.location(&input, hit.prefix);
                assert!(location.starts_with("http"));
            }
            Filter::UrlRewrite(rewrite) => {
                if let Some(path) = rewrite.rewrite_path(head.path, hit.prefix) {
                    assert!(!path.is_empty());
                }
            }
            Filter::RequestHeaderModifier(m) | Filter::ResponseHeaderModifier(m) => {
                let mut headers = head.headers.clone();
                m.apply(&mut headers);
            }
            Filter::RequestMirror(mirror) => {
                let _ = mirror.sample(42);
            }
            Filter::Cors(cors) => {
                let _ = cors.origin_allowed(origin.as_bytes());
                let _ = cors.preflight_headers(
                    &origin,
                    head.headers.get("access-control-request-method"),
                    head.headers.get("access-control-request-headers"),
                );
                let mut response = HeaderMap::new();
                cors.apply_actual_response(&origin, &mut response);
                assert!(response.contains_key("vary"));
            }
        }
    }
}
