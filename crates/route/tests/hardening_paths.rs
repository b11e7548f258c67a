//! Replacement paths that are visible ASCII but not URI path characters (found while fuzzing redirect and
//! rewrite computation): compiling them used to succeed, and every forwarded request on the rule then failed
//! with a 502 because the rewritten path could not be built.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tunnelgate_route::RouteTable;
use tunnelgate_route::config::Config;

fn compile(filter: serde_json::Value) -> Result<RouteTable, tunnelgate_route::CompileError> {
    let doc = serde_json::json!({"version": 1, "rules": [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
        "filters": [filter],
        "backends": [{"url": "http://backend:8080", "weight": 1}]
    }]});
    RouteTable::compile(&Config::from_json_slice(doc.to_string().as_bytes()).unwrap())
}

#[test]
fn replacement_paths_must_be_uri_paths() {
    for bad in ["/a<b", "/a>b", "/a`b"] {
        let err = compile(serde_json::json!({"type": "URLRewrite",
            "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": bad}}}))
        .expect_err(bad);
        let first = err.first().unwrap();
        assert_eq!(
            first.path, "rules[0].filters[0].urlRewrite.path.replaceFullPath",
            "{bad}"
        );
        assert_eq!(first.message, "invalid path value");
        let err = compile(serde_json::json!({"type": "RequestRedirect",
            "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "value": bad}}}))
        .expect_err(bad);
        assert_eq!(
            err.first().unwrap().path,
            "rules[0].filters[0].requestRedirect.path.value"
        );
    }
    // Characters that clients send unencoded and the URI parser accepts stay allowed.
    for good in ["/a\"b", "/a{b}", "/a|b", "/a^b", "/%20x", "/a;b=c"] {
        let table = compile(serde_json::json!({"type": "URLRewrite",
            "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": good}}}));
        assert!(table.is_ok(), "{good}: {:?}", table.err());
    }
}

/// Found by the `redirect_rewrite` fuzz target: a redirect hostname `[` compiled, and the `Location` built from
/// it (`http://[:11985//`) was not a URL.
#[test]
fn redirect_hostnames_must_be_url_hosts() {
    for bad in ["[", "[abc", "a[b"] {
        let err =
            compile(serde_json::json!({"type": "RequestRedirect", "requestRedirect": {"hostname": bad}}))
                .expect_err(bad);
        assert_eq!(
            err.first().unwrap().path,
            "rules[0].filters[0].requestRedirect.hostname",
            "{bad}"
        );
    }
    for good in [
        "example.com",
        "[2001:db8::1]",
        "10.0.0.1",
        "xn--bcher-kva.example",
    ] {
        let table =
            compile(serde_json::json!({"type": "RequestRedirect", "requestRedirect": {"hostname": good}}));
        assert!(table.is_ok(), "{good}: {:?}", table.err());
    }
}
