//! The pure parts of HTTPRoute filters (routing.md §5): header modifiers, redirect `Location` math, URL rewrite
//! paths and mirror sampling. CORS lives in [`crate::cors`].

use std::sync::Arc;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::backend::Upstream;
use crate::cors::Cors;
use crate::host::split_port;

/// A compiled filter, at rule or backend level, applied in declared order.
#[derive(Debug, Clone)]
pub enum Filter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestRedirect(Redirect),
    UrlRewrite(Rewrite),
    RequestMirror(Mirror),
    Cors(Cors),
}

/// Set, add and remove header operations, applied in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// A RequestRedirect filter (short-circuit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// 301, 302 (the default), 303, 307 or 308.
    pub status: StatusCode,
    pub(crate) scheme: Option<&'static str>,
    pub(crate) hostname: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) path: Option<PathModifier>,
}

/// What [`Redirect::location`] needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RedirectInput<'a> {
    /// The request's scheme, `http` or `https` (tunnel mode: the edge's `X-Forwarded-Proto`).
    pub scheme: &'a str,
    /// The raw routing host; it may carry a port, which then counts as the request port.
    pub host: &'a str,
    /// The raw request path.
    pub path: &'a str,
    /// The raw query, without `?`.
    pub query: Option<&'a str>,
}

/// A URLRewrite filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Replaces the authority and `Host` sent to the backend.
    pub hostname: Option<HeaderValue>,
    pub(crate) path: Option<PathModifier>,
}

/// A RequestMirror filter: a fire-and-forget copy of the request to `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    /// 0..=100; an absent `percent` is 100.
    pub percent: u8,
}

/// Path part of a redirect or rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathModifier {
    ReplaceFullPath(String),
    /// The replacement as configured; §5.4 removes one trailing `/` when applying it.
    ReplacePrefixMatch(String),
}

/// Hop-by-hop header names (routing.md §7.2). `te` is listed; the proxy keeps `te: trailers` itself. Names listed
/// in a `Connection` header are hop-by-hop too, which the caller handles per message.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
        || name.as_str() == "proxy-connection"
        || name.as_str() == "keep-alive"
}

/// Names a header modifier never touches: `Host` (URLRewrite owns it) and hop-by-hop names.
fn is_protected(name: &HeaderName) -> bool {
    *name == header::HOST || is_hop_by_hop(name)
}

impl HeaderModifier {
    /// Set (replace every field line of the name), then add (append a line), then remove. `Host` and hop-by-hop
    /// names are skipped.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            if !is_protected(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.add {
            if !is_protected(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        for name in &self.remove {
            if !is_protected(name) {
                headers.remove(name);
            }
        }
    }
}

impl PathModifier {
    /// The new path for request path `path` when the fired arm had normalised prefix `fired_prefix`.
    fn apply(&self, path: &str, fired_prefix: Option<&str>) -> String {
        match (self, fired_prefix) {
            (PathModifier::ReplaceFullPath(value), _) => value.clone(),
            (PathModifier::ReplacePrefixMatch(value), Some(prefix)) => {
                replace_prefix_match(path, prefix, value)
            }
            // Defensive (the controller rejects it): not a PathPrefix arm, so the value replaces the whole path.
            (PathModifier::ReplacePrefixMatch(value), None) if value.is_empty() => "/".to_owned(),
            (PathModifier::ReplacePrefixMatch(value), None) => value.clone(),
        }
    }
}

/// routing.md §5.4, with `prefix` already normalised (one trailing `/` removed): `rest = r[len(p)..]`,
/// `out = v + rest` with one trailing `/` removed from `v`, and `"/"` when that is empty. No dot-segment
/// resolution, no slash collapsing.
pub(crate) fn replace_prefix_match(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let v = replacement.strip_suffix('/').unwrap_or(replacement);
    let mut out = String::with_capacity(v.len() + rest.len());
    out.push_str(v);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn well_known_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

impl Redirect {
    /// The `Location` value (routing.md §5.2): `scheme://host[:port]path[?query]`.
    pub fn location(&self, req: &RedirectInput<'_>, fired_prefix: Option<&str>) -> String {
        let scheme = self.scheme.unwrap_or(req.scheme);
        let (request_host, request_port) = split_port(req.host);
        let request_port = request_port.and_then(|p| p.parse::<u16>().ok());
        let host = self.hostname.as_deref().unwrap_or(request_host);
        let port = match (self.port, self.scheme) {
            (Some(port), _) => Some(port),
            (None, Some(_)) => None,
            (None, None) => request_port,
        }
        .filter(|&p| Some(p) != well_known_port(scheme));
        let path = match &self.path {
            Some(modifier) => std::borrow::Cow::Owned(modifier.apply(req.path, fired_prefix)),
            None => std::borrow::Cow::Borrowed(req.path),
        };
        let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        if let Some(port) = port {
            out.push(':');
            out.push_str(&port.to_string());
        }
        out.push_str(&path);
        if let Some(query) = req.query.filter(|q| !q.is_empty()) {
            out.push('?');
            out.push_str(query);
        }
        out
    }

    /// The configured scheme, if any.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme
    }

    /// The configured hostname, if any.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// The configured port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl Rewrite {
    /// The rewritten path, or `None` when the filter does not change the path.
    pub fn rewrite_path(&self, path: &str, fired_prefix: Option<&str>) -> Option<String> {
        self.path
            .as_ref()
            .map(|modifier| modifier.apply(path, fired_prefix))
    }
}

impl Mirror {
    /// Whether this request is mirrored, given a uniform draw in `[0,100)`.
    pub fn sample(&self, draw: u32) -> bool {
        self.percent >= 100 || draw < u32::from(self.percent)
    }
}

#[cfg(test)]
mod tests;
