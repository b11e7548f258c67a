//! Redirect and rewrite computation with arbitrary filter settings: a one-rule document is built from the
//! fuzzer's fields, compiled, and the filters are applied to an arbitrary request the HTTP layer could accept.
//!
//! The property is the compiler's promise: whatever it accepts produces usable output. A compiled redirect
//! gives a `Location` that is a valid header value and a valid absolute URI; a compiled rewrite gives a path that
//! is a valid URI path starting with `/`, and a hostname that is a valid header value.
#![no_main]

use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Uri};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tunnelgate_config::Config;
use tunnelgate_route::{Filter, RedirectInput, RequestHead, RouteTable};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// PathPrefix value of the only match arm (`/` is prepended when missing, so it usually compiles).
    prefix: &'a str,
    redirect: Option<RedirectFields<'a>>,
    rewrite: Option<RewriteFields<'a>>,
    https: bool,
    host: &'a str,
    port: Option<u16>,
    path: &'a str,
    query: Option<&'a str>,
}

#[derive(Debug, Arbitrary)]
struct RedirectFields<'a> {
    scheme: u8,
    hostname: &'a str,
    port: i16,
    path: Option<(bool, &'a str)>,
    status: u8,
}

#[derive(Debug, Arbitrary)]
struct RewriteFields<'a> {
    hostname: &'a str,
    path: Option<(bool, &'a str)>,
}

fn redirect_json(r: &RedirectFields<'_>) -> Value {
    let scheme = ["", "http", "https", "ftp"][usize::from(r.scheme % 4)];
    let status = [0, 301, 302, 303, 307, 308, 200][usize::from(r.status % 7)];
    let mut v = json!({"scheme": scheme, "hostname": r.hostname, "port": r.port, "statusCode": status});
    if let Some((full, value)) = r.path {
        let kind = if full { "ReplaceFullPath" } else { "ReplacePrefixMatch" };
        v["path"] = json!({"type": kind, "value": value});
    }
    json!({"type": "RequestRedirect", "requestRedirect": v})
}

fn rewrite_json(r: &RewriteFields<'_>) -> Value {
    let mut v = json!({"hostname": r.hostname});
    if let Some((full, value)) = r.path {
        v["path"] = if full {
            json!({"type": "ReplaceFullPath", "replaceFullPath": value})
        } else {
            json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": value})
        };
    }
    json!({"type": "URLRewrite", "urlRewrite": v})
}

fuzz_target!(|input: Input<'_>| {
    let prefix = if input.prefix.starts_with('/') {
        input.prefix.to_owned()
    } else {
        format!("/{}", input.prefix)
    };
    // Rewrite first, so that the redirect sees the rewritten path, as in the proxy's filter chain.
    let mut filters = Vec::new();
    if let Some(rw) = &input.rewrite {
        filters.push(rewrite_json(rw));
    }
    if let Some(r) = &input.redirect {
        filters.push(redirect_json(r));
    }
    let doc = json!({"version": 1, "rules": [{
        "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
        "filters": filters,
        "backends": [{"url": "http://backend:8080", "weight": 1}]
    }]});
    let bytes = serde_json::to_vec(&doc).expect("serialise");
    let cfg = Config::from_json_slice(&bytes).expect("a built document decodes");
    let Ok(table) = RouteTable::compile(&cfg) else {
        return;
    };

    // A request the HTTP layer could have accepted: Host is an authority, the target an origin-form URI.
    let host = match input.port {
        Some(p) => format!("{}:{p}", input.host),
        None => input.host.to_owned(),
    };
    let target = match input.query {
        Some(q) => format!("{}?{q}", input.path),
        None => input.path.to_owned(),
    };
    if !input.path.starts_with('/')
        || target.parse::<PathAndQuery>().is_err()
        || host.parse::<Authority>().is_err()
        || host.contains('@')
        || HeaderValue::from_str(&host).is_err()
    {
        return;
    }
    let headers = HeaderMap::new();
    let head = RequestHead {
        method: &Method::GET,
        host: &host,
        path: input.path,
        query: input.query,
        headers: &headers,
    };
    let Some(hit) = table.lookup(&head) else {
        return;
    };
    let scheme = if input.https { "https" } else { "http" };
    let mut path = input.path.to_owned();
    for filter in &hit.rule.filters {
        match filter {
            Filter::UrlRewrite(rw) => {
                if let Some(h) = &rw.hostname {
                    assert!(h.to_str().is_ok_and(|s| s.parse::<Authority>().is_ok()));
                }
                if let Some(p) = rw.rewrite_path(&path, hit.prefix) {
                    assert!(p.starts_with('/'), "rewritten path {p:?} is not absolute");
                    assert!(p.parse::<PathAndQuery>().is_ok(), "rewritten path {p:?} is not a URI path");
                    path = p;
                }
            }
            Filter::RequestRedirect(r) => {
                let location = r.location(
                    &RedirectInput {
                        scheme,
                        host: &host,
                        path: &path,
                        query: input.query,
                    },
                    hit.prefix,
                );
                assert!(
                    HeaderValue::from_str(&location).is_ok(),
                    "Location {location:?} is not a header value"
                );
                let uri: Uri = location
                    .parse()
                    .unwrap_or_else(|e| panic!("Location {location:?} is not a URI: {e}"));
                assert!(uri.scheme().is_some() && uri.authority().is_some(), "{location:?} is not absolute");
                assert!(uri.path().starts_with('/'), "{location:?} has a relative path");
            }
            _ => {}
        }
    }
});
