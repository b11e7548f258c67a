//! The CORS filter (routing.md §5.6): origin matching and the headers of preflight and actual responses.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// A compiled CORS filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub(crate) any_origin: bool,
    pub(crate) origins: Vec<OriginPattern>,
    pub(crate) allow_credentials: bool,
    pub(crate) any_method: bool,
    /// `allowMethods` joined with `, `; `None` when empty.
    pub(crate) allow_methods: Option<HeaderValue>,
    pub(crate) any_header: bool,
    pub(crate) allow_headers: Option<HeaderValue>,
    /// The `Access-Control-Expose-Headers` value, already resolved for `*` and credentials.
    pub(crate) expose_headers: Option<HeaderValue>,
    pub(crate) max_age: HeaderValue,
}

/// An `allowOrigins` entry other than `*`: `scheme://host[:port]`, the host possibly `*.base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OriginPattern {
    scheme: String,
    host: OriginHost,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginHost {
    Exact(String),
    /// `*.base`, stored as `.base`.
    Wildcard(String),
}

/// A parsed origin: lowercase scheme and host, effective port (default port folded in).
#[derive(Debug, PartialEq, Eq)]
struct Origin<'a> {
    scheme: &'a [u8],
    host: &'a [u8],
    port: Option<u16>,
}

const VARY_PREFLIGHT: HeaderValue =
    HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// Splits `scheme://host[:port]` (nothing after) into its parts; the port is the effective one.
fn parse_origin(raw: &[u8]) -> Option<Origin<'_>> {
    let sep = raw.windows(3).position(|w| w == b"://")?;
    let (scheme, rest) = (&raw[..sep], &raw[sep + 3..]);
    if scheme.is_empty()
        || !scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let (host, port) = if rest.first() == Some(&b'[') {
        let end = rest.iter().position(|&b| b == b']')?;
        let (host, after) = rest.split_at(end + 1);
        match after {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return None,
        }
    } else {
        match rest.iter().rposition(|&b| b == b':') {
            Some(colon) => (&rest[..colon], Some(&rest[colon + 1..])),
            None => (rest, None),
        }
    };
    if host.is_empty()
        || host
            .iter()
            .any(|&b| matches!(b, b'/' | b'?' | b'#' | b'@') || b <= b' ' || b == 0x7f)
    {
        return None;
    }
    let port = match port {
        Some(digits) => {
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(digits).ok()?.parse::<u16>().ok()
        }
        None if scheme.eq_ignore_ascii_case(b"http") => Some(80),
        None if scheme.eq_ignore_ascii_case(b"https") => Some(443),
        None => None,
    };
    Some(Origin { scheme, host, port })
}

impl OriginPattern {
    /// Parses an `allowOrigins` entry other than `*`.
    pub(crate) fn parse(raw: &str) -> Option<OriginPattern> {
        let origin = parse_origin(raw.as_bytes())?;
        let host = String::from_utf8(origin.host.to_ascii_lowercase()).ok()?;
        let host = match host.strip_prefix("*.") {
            Some(base) if !base.is_empty() && !base.contains('*') => OriginHost::Wildcard(format!(".{base}")),
            Some(_) => return None,
            None if host.contains('*') => return None,
            None => OriginHost::Exact(host),
        };
        Some(OriginPattern {
            scheme: String::from_utf8(origin.scheme.to_ascii_lowercase()).ok()?,
            host,
            port: origin.port,
        })
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        if !origin.scheme.eq_ignore_ascii_case(self.scheme.as_bytes()) || origin.port != self.port {
            return false;
        }
        match &self.host {
            OriginHost::Exact(host) => origin.host.eq_ignore_ascii_case(host.as_bytes()),
            OriginHost::Wildcard(suffix) => {
                let suffix = suffix.as_bytes();
                origin.host.len() > suffix.len()
                    && origin.host[origin.host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && origin.host[0] != b'.'
            }
        }
    }
}

impl Cors {
    /// Whether the `Origin` value is allowed. `null` and `*` (unparsable as origins) match only a `*` entry.
    pub fn origin_allowed(&self, origin: &[u8]) -> bool {
        if self.any_origin {
            return true;
        }
        if origin.contains(&b'*') {
            return false;
        }
        match parse_origin(origin) {
            Some(parsed) => self.origins.iter().any(|p| p.matches(&parsed)),
            None => false,
        }
    }

    /// Headers for a preflight reply (204). Always includes `Vary`; only `Vary` when the origin is not allowed.
    pub fn preflight_headers(
        &self,
        origin: &HeaderValue,
        request_method: Option<&HeaderValue>,
        request_headers: Option<&HeaderValue>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(7);
        if self.origin_allowed(origin.as_bytes()) {
            out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
            if self.allow_credentials {
                out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE));
            }
            let methods = if self.any_method {
                request_method.cloned()
            } else {
                self.allow_methods.clone()
            };
            if let Some(methods) = methods {
                out.push((header::ACCESS_CONTROL_ALLOW_METHODS, methods));
            }
            if let Some(requested) = request_headers {
                let allowed = if self.any_header {
                    HeaderValue::from_bytes(requested.as_bytes().trim_ascii()).ok()
                } else {
                    self.allow_headers.clone()
                };
                if let Some(allowed) = allowed {
                    out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, allowed));
                }
            }
            if let Some(expose) = &self.expose_headers {
                out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
            }
            out.push((header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
        }
        out.push((header::VARY, VARY_PREFLIGHT));
        out
    }

    /// Applies CORS to a backend response of an actual (non-preflight) request carrying `Origin`: the
    /// `Access-Control-*` headers this filter owns replace the backend's, and `Vary: Origin` is appended.
    pub fn apply_actual_response(&self, origin: &HeaderValue, response_headers: &mut HeaderMap) {
        if self.origin_allowed(origin.as_bytes()) {
            response_headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.allow_credentials {
                response_headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
            } else {
                response_headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
            }
            match &self.expose_headers {
                Some(expose) => {
                    response_headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
                }
                None => {
                    response_headers.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
                }
            }
        }
        response_headers.append(header::VARY, VARY_ORIGIN);
    }
}

#[cfg(test)]
mod tests;
