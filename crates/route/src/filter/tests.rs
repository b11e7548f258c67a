use super::*;
use crate::backend::{UpstreamProtocol, UpstreamScheme};

fn redirect(scheme: Option<&'static str>, hostname: Option<&str>, port: Option<u16>) -> Redirect {
    Redirect {
        status: StatusCode::FOUND,
        scheme,
        hostname: hostname.map(str::to_owned),
        port,
        path: None,
    }
}

fn input<'a>(scheme: &'a str, host: &'a str, path: &'a str, query: Option<&'a str>) -> RedirectInput<'a> {
    RedirectInput {
        scheme,
        host,
        path,
        query,
    }
}

/// routing.md §5.4, every row of the table. Prefixes are passed normalised, as `RouteHit::prefix` gives them.
#[test]
fn replace_prefix_match_follows_the_spec_table() {
    let normalised = |p: &'static str| p.strip_suffix('/').unwrap_or(p);
    let rows: &[(&str, &str, &str, &str)] = &[
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo", "/foo", "/", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
        ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
        ("/anything/x", "/", "/xyz", "/xyz/anything/x"),
    ];
    for &(path, prefix, replacement, want) in rows {
        assert_eq!(
            replace_prefix_match(path, normalised(prefix), replacement),
            want,
            "{path} {prefix} {replacement}"
        );
        let rewrite = Rewrite {
            hostname: None,
            path: Some(PathModifier::ReplacePrefixMatch(replacement.to_owned())),
        };
        assert_eq!(
            rewrite.rewrite_path(path, Some(normalised(prefix))).as_deref(),
            Some(want)
        );
    }
}

#[test]
fn replace_prefix_match_does_no_dot_segment_resolution_or_slash_collapsing() {
    assert_eq!(replace_prefix_match("/api/../x", "/api", "/v2"), "/v2/../x");
    assert_eq!(replace_prefix_match("/api//x", "/api", "/v2"), "/v2//x");
    assert_eq!(replace_prefix_match("/api/", "/api", "/v2"), "/v2/");
}

#[test]
fn replace_prefix_match_on_a_non_prefix_arm_replaces_the_whole_path() {
    let rewrite = Rewrite {
        hostname: None,
        path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
    };
    assert_eq!(rewrite.rewrite_path("/exact/path", None).as_deref(), Some("/new"));
    let empty = Rewrite {
        hostname: None,
        path: Some(PathModifier::ReplacePrefixMatch(String::new())),
    };
    assert_eq!(empty.rewrite_path("/exact/path", None).as_deref(), Some("/"));
}

#[test]
fn replace_full_path_ignores_the_fired_prefix_and_keeps_nothing_of_the_old_path() {
    let rewrite = Rewrite {
        hostname: None,
        path: Some(PathModifier::ReplaceFullPath("/download".into())),
    };
    assert_eq!(
        rewrite.rewrite_path("/f/abc", Some("/f")).as_deref(),
        Some("/download")
    );
}

#[test]
fn rewrite_without_path_leaves_the_path_alone() {
    let rewrite = Rewrite {
        hostname: Some(HeaderValue::from_static("api.internal")),
        path: None,
    };
    assert_eq!(rewrite.rewrite_path("/x", Some("")), None);
}

#[test]
fn redirect_port_80_and_443_are_omitted_for_their_scheme() {
    let r = redirect(None, None, None);
    assert_eq!(
        r.location(&input("http", "a.com:80", "/p", None), None),
        "http://a.com/p"
    );
    assert_eq!(
        r.location(&input("https", "a.com:443", "/p", None), None),
        "https://a.com/p"
    );
    let r = redirect(Some("https"), None, Some(443));
    assert_eq!(
        r.location(&input("http", "a.com", "/", None), None),
        "https://a.com/"
    );
    let r = redirect(Some("http"), None, Some(80));
    assert_eq!(
        r.location(&input("https", "a.com", "/", None), None),
        "http://a.com/"
    );
}

#[test]
fn redirect_explicit_port_is_kept() {
    let r = redirect(None, None, Some(8443));
    assert_eq!(
        r.location(&input("http", "a.com:8080", "/p", None), None),
        "http://a.com:8443/p"
    );
    let r = redirect(Some("https"), Some("www.example.com"), Some(8443));
    assert_eq!(
        r.location(&input("http", "a.com", "/p", None), None),
        "https://www.example.com:8443/p"
    );
    // An explicit port that equals the other scheme's well-known port is not a default: kept.
    let r = redirect(Some("https"), None, Some(80));
    assert_eq!(
        r.location(&input("http", "a.com", "/", None), None),
        "https://a.com:80/"
    );
}

#[test]
fn redirect_scheme_change_without_port_implies_the_well_known_port() {
    let r = redirect(Some("https"), None, None);
    assert_eq!(
        r.location(&input("http", "a.com:8080", "/p", None), None),
        "https://a.com/p"
    );
}

#[test]
fn redirect_without_scheme_or_port_keeps_the_request_port() {
    let r = redirect(None, None, None);
    assert_eq!(
        r.location(&input("http", "a.com:8080", "/p", None), None),
        "http://a.com:8080/p"
    );
    assert_eq!(
        r.location(&input("http", "a.com", "/p", None), None),
        "http://a.com/p"
    );
    let r = redirect(None, Some("b.com"), None);
    assert_eq!(
        r.location(&input("http", "a.com:8080", "/p", None), None),
        "http://b.com:8080/p"
    );
}

#[test]
fn redirect_scheme_defaults_to_the_request_scheme() {
    let r = redirect(None, Some("b.com"), None);
    assert_eq!(
        r.location(&input("https", "a.com", "/", None), None),
        "https://b.com/"
    );
    assert_eq!(
        r.location(&input("http", "a.com", "/", None), None),
        "http://b.com/"
    );
}

#[test]
fn redirect_keeps_ipv6_brackets_and_the_raw_query() {
    let r = redirect(None, None, None);
    assert_eq!(
        r.location(&input("http", "[::1]:8080", "/a%20b", Some("x=1&y")), None),
        "http://[::1]:8080/a%20b?x=1&y"
    );
    assert_eq!(
        r.location(&input("http", "[::1]", "/", Some("")), None),
        "http://[::1]/"
    );
}

#[test]
fn redirect_path_modifiers_use_the_fired_prefix() {
    let mut r = redirect(Some("https"), Some("www.example.com"), None);
    r.path = Some(PathModifier::ReplacePrefixMatch("/new".into()));
    assert_eq!(
        r.location(
            &input("http", "x.example.com", "/old/page", Some("q=1")),
            Some("/old")
        ),
        "https://www.example.com/new/page?q=1"
    );
    r.path = Some(PathModifier::ReplaceFullPath("/moved".into()));
    assert_eq!(
        r.location(&input("http", "x.example.com", "/old/page", None), Some("/old")),
        "https://www.example.com/moved"
    );
}

#[test]
fn header_modifier_sets_then_adds_then_removes() {
    let name = |s: &'static str| HeaderName::from_static(s);
    let value = |s: &'static str| HeaderValue::from_static(s);
    let modifier = HeaderModifier {
        set: vec![(name("x-env"), value("prod"))],
        add: vec![(name("x-hop"), value("tunnelgate")), (name("x-gone"), value("1"))],
        remove: vec![name("x-gone"), name("x-debug")],
    };
    let mut headers = HeaderMap::new();
    headers.append("X-Env", value("dev"));
    headers.append("x-env", value("test"));
    headers.append("x-hop", value("edge"));
    headers.append("x-debug", value("1"));
    modifier.apply(&mut headers);
    assert_eq!(headers.get_all("x-env").iter().collect::<Vec<_>>(), ["prod"]);
    assert_eq!(
        headers.get_all("x-hop").iter().collect::<Vec<_>>(),
        ["edge", "tunnelgate"]
    );
    assert!(!headers.contains_key("x-gone"));
    assert!(!headers.contains_key("x-debug"));
}

#[test]
fn header_modifier_never_touches_host_or_hop_by_hop_headers() {
    let modifier = HeaderModifier {
        set: vec![
            (header::HOST, HeaderValue::from_static("evil")),
            (header::CONNECTION, HeaderValue::from_static("close")),
        ],
        add: vec![(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"))],
        remove: vec![header::HOST, HeaderName::from_static("keep-alive")],
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("a.com"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    modifier.apply(&mut headers);
    assert_eq!(headers[header::HOST], "a.com");
    assert_eq!(headers["keep-alive"], "timeout=5");
    assert!(!headers.contains_key(header::CONNECTION));
    assert!(!headers.contains_key(header::TRANSFER_ENCODING));
}

#[test]
fn hop_by_hop_names_are_the_spec_list() {
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
    }
    for name in ["host", "content-length", "x-forwarded-for", "trailers"] {
        assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
    }
}

#[test]
fn mirror_percent_samples_against_a_draw_in_0_to_100() {
    let upstream = Arc::new(Upstream::parse("http://shadow:8080", UpstreamProtocol::Http1, None).unwrap());
    assert_eq!(upstream.scheme, UpstreamScheme::Http);
    let mirror = |percent| Mirror {
        upstream: Arc::clone(&upstream),
        percent,
    };
    assert!((0..100).all(|d| !mirror(0).sample(d)));
    assert!((0..100).all(|d| mirror(100).sample(d)));
    assert_eq!((0..100).filter(|&d| mirror(10).sample(d)).count(), 10);
    assert!(mirror(10).sample(9) && !mirror(10).sample(10));
}
