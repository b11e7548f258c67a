use super::*;
use crate::{Filter, RouteTable, config};

fn cors(payload: &str) -> Cors {
    let doc = format!(r#"{{"rules":[{{"filters":[{{"type":"CORS","cors":{payload}}}],"backends":[]}}]}}"#);
    let cfg = config::Config::from_json_slice(doc.as_bytes()).unwrap();
    let table = RouteTable::compile(&cfg).unwrap();
    match &table.rules()[0].filters[0] {
        Filter::Cors(c) => c.clone(),
        other => panic!("not a CORS filter: {other:?}"),
    }
}

fn hv(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

fn find(headers: &[(HeaderName, HeaderValue)], name: HeaderName) -> Option<&str> {
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_str().unwrap())
}

#[test]
fn cors_origin_ports_are_compared_after_default_port_folding() {
    let c = cors(r#"{"allowOrigins":["https://a.com","http://b.com:8080"]}"#);
    assert!(c.origin_allowed(b"https://a.com"));
    assert!(c.origin_allowed(b"https://a.com:443"));
    assert!(!c.origin_allowed(b"https://a.com:8443"));
    assert!(!c.origin_allowed(b"http://a.com"));
    assert!(c.origin_allowed(b"http://b.com:8080"));
    assert!(!c.origin_allowed(b"http://b.com"));
    let c = cors(r#"{"allowOrigins":["https://a.com:443"]}"#);
    assert!(c.origin_allowed(b"https://a.com"));
}

#[test]
fn cors_origin_scheme_and_host_compare_case_insensitively() {
    let c = cors(r#"{"allowOrigins":["https://WWW.Example.com"]}"#);
    assert!(c.origin_allowed(b"HTTPS://www.example.COM"));
    assert!(!c.origin_allowed(b"https://www.example.com/path"));
}

#[test]
fn cors_wildcard_origin_host_needs_one_or_more_labels_never_the_bare_base() {
    let c = cors(r#"{"allowOrigins":["https://*.example.org"]}"#);
    assert!(c.origin_allowed(b"https://a.example.org"));
    assert!(c.origin_allowed(b"https://a.b.example.org"));
    assert!(!c.origin_allowed(b"https://example.org"));
    assert!(!c.origin_allowed(b"https://.example.org"));
    assert!(!c.origin_allowed(b"https://aexample.org"));
    assert!(!c.origin_allowed(b"http://a.example.org"));
}

#[test]
fn cors_null_and_star_origins_match_only_the_star_entry() {
    let c = cors(r#"{"allowOrigins":["https://a.com"]}"#);
    assert!(!c.origin_allowed(b"null"));
    assert!(!c.origin_allowed(b"*"));
    let c = cors(r#"{"allowOrigins":["*"]}"#);
    assert!(c.origin_allowed(b"null"));
    assert!(c.origin_allowed(b"*"));
    assert!(c.origin_allowed(b"https://anything.test:1"));
}

#[test]
fn cors_preflight_echoes_the_origin_never_star() {
    let c = cors(
        r#"{"allowOrigins":["*"],"allowMethods":["GET","POST"],"allowHeaders":["X-Requested-With"],
            "exposeHeaders":["X-Request-Id"],"maxAge":600}"#,
    );
    let h = c.preflight_headers(
        &hv("https://x.test"),
        Some(&hv("PUT")),
        Some(&hv("x-requested-with")),
    );
    assert_eq!(
        find(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("https://x.test")
    );
    assert_eq!(find(&h, header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, POST"));
    assert_eq!(
        find(&h, header::ACCESS_CONTROL_ALLOW_HEADERS),
        Some("X-Requested-With")
    );
    assert_eq!(
        find(&h, header::ACCESS_CONTROL_EXPOSE_HEADERS),
        Some("X-Request-Id")
    );
    assert_eq!(find(&h, header::ACCESS_CONTROL_MAX_AGE), Some("600"));
    assert_eq!(find(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    assert_eq!(
        find(&h, header::VARY),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
}

#[test]
fn cors_preflight_star_methods_and_headers_echo_the_request() {
    let c = cors(r#"{"allowOrigins":["https://a.com"],"allowMethods":["*"],"allowHeaders":["*"]}"#);
    let h = c.preflight_headers(&hv("https://a.com"), Some(&hv("PATCH")), Some(&hv("  x-a, x-b ")));
    assert_eq!(find(&h, header::ACCESS_CONTROL_ALLOW_METHODS), Some("PATCH"));
    assert_eq!(find(&h, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("x-a, x-b"));
}

#[test]
fn cors_preflight_allow_headers_only_when_requested_and_max_age_defaults_to_5() {
    let c = cors(r#"{"allowOrigins":["https://a.com"],"allowHeaders":["X-A"]}"#);
    let h = c.preflight_headers(&hv("https://a.com"), Some(&hv("GET")), None);
    assert_eq!(find(&h, header::ACCESS_CONTROL_ALLOW_HEADERS), None);
    assert_eq!(find(&h, header::ACCESS_CONTROL_ALLOW_METHODS), None);
    assert_eq!(find(&h, header::ACCESS_CONTROL_MAX_AGE), Some("5"));
}

#[test]
fn cors_preflight_for_a_disallowed_origin_has_only_vary() {
    let c = cors(r#"{"allowOrigins":["https://a.com"],"allowMethods":["GET"]}"#);
    let h = c.preflight_headers(&hv("https://evil.com"), Some(&hv("GET")), None);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].0, header::VARY);
}

#[test]
fn cors_expose_star_is_literal_but_dropped_with_credentials() {
    let c = cors(r#"{"allowOrigins":["*"],"exposeHeaders":["*"]}"#);
    let h = c.preflight_headers(&hv("https://a.com"), Some(&hv("GET")), None);
    assert_eq!(find(&h, header::ACCESS_CONTROL_EXPOSE_HEADERS), Some("*"));
    let c = cors(r#"{"allowOrigins":["*"],"exposeHeaders":["*"],"allowCredentials":true}"#);
    let h = c.preflight_headers(&hv("https://a.com"), Some(&hv("GET")), None);
    assert_eq!(find(&h, header::ACCESS_CONTROL_EXPOSE_HEADERS), None);
    assert_eq!(find(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
}

#[test]
fn cors_actual_response_replaces_backend_values_and_appends_vary_origin() {
    let c = cors(
        r#"{"allowOrigins":["https://a.com"],"allowCredentials":true,"exposeHeaders":["X-Id","X-Other"]}"#,
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, hv("*"));
    headers.insert(header::VARY, hv("Accept-Encoding"));
    c.apply_actual_response(&hv("https://a.com"), &mut headers);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.com");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(headers[header::ACCESS_CONTROL_EXPOSE_HEADERS], "X-Id, X-Other");
    assert_eq!(
        headers.get_all(header::VARY).iter().collect::<Vec<_>>(),
        ["Accept-Encoding", "Origin"]
    );
}

#[test]
fn cors_actual_response_for_a_disallowed_origin_only_adds_vary() {
    let c = cors(r#"{"allowOrigins":["https://a.com"]}"#);
    let mut headers = HeaderMap::new();
    c.apply_actual_response(&hv("https://b.com"), &mut headers);
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[header::VARY], "Origin");
}

#[test]
fn cors_origin_pattern_rejects_paths_and_bad_ports() {
    for bad in [
        "a.com",
        "https://",
        "https://a.com/",
        "https://a.com:x",
        "https://a.*.com",
        "https://*.",
    ] {
        assert_eq!(OriginPattern::parse(bad), None, "{bad}");
    }
    assert!(OriginPattern::parse("https://[::1]:8443").is_some());
}
