//! Response-header serialisation for the HTTP/2 transport (tunnel.md §7.4):
//! `B64(name) ":" B64(value)` pairs joined with `;`, standard alphabet without padding.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Header carrying the serialised response headers.
pub const RESPONSE_HEADERS: &str = "cf-cloudflared-response-headers";
/// Header carrying the response source.
pub const RESPONSE_META: &str = "cf-cloudflared-response-meta";
/// Meta value for an origin response.
pub const META_ORIGIN: &str = r#"{"src":"origin"}"#;
/// Meta value for a failure inside the connector.
pub const META_CLOUDFLARED: &str = r#"{"src":"cloudflared"}"#;
/// Request header that classifies edge requests.
pub const UPGRADE_MARKER: &str = "cf-cloudflared-proxy-connection-upgrade";
/// Request header that marks a TCP stream.
pub const PROXY_SRC: &str = "cf-cloudflared-proxy-src";

fn excluded(lower: &str) -> bool {
    if matches!(lower, "sec-websocket-accept" | "connection" | "upgrade") {
        return false;
    }
    lower.starts_with(':')
        || lower.starts_with("cf-int-")
        || lower.starts_with("cf-cloudflared-")
        || lower.starts_with("cf-proxy-")
}

/// Serialises response headers.
pub fn serialize(headers: &HeaderMap) -> String {
    let mut out = String::new();
    for (name, value) in headers {
        if excluded(name.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(&STANDARD_NO_PAD.encode(crate::stream::canonical_name(name.as_str())));
        out.push(':');
        out.push_str(&STANDARD_NO_PAD.encode(value.as_bytes()));
    }
    out
}

/// A serialised header list that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed serialized headers: {0}")]
pub struct SerializedHeadersError(pub String);

/// Decodes a serialised header list (edge side).
pub fn deserialize(s: &str) -> Result<HeaderMap, SerializedHeadersError> {
    let mut out = HeaderMap::new();
    if s.is_empty() {
        return Ok(out);
    }
    for pair in s.split(';') {
        let (n, v) = pair
            .split_once(':')
            .ok_or_else(|| SerializedHeadersError(format!("pair {pair:?} has no ':'")))?;
        let n = STANDARD_NO_PAD
            .decode(n)
            .map_err(|e| SerializedHeadersError(e.to_string()))?;
        let v = STANDARD_NO_PAD
            .decode(v)
            .map_err(|e| SerializedHeadersError(e.to_string()))?;
        let name = HeaderName::from_bytes(&n).map_err(|e| SerializedHeadersError(e.to_string()))?;
        let value = HeaderValue::from_bytes(&v).map_err(|e| SerializedHeadersError(e.to_string()))?;
        out.append(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_from_the_spec() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(serialize(&h), "Q29udGVudC1UeXBl:dGV4dC9wbGFpbg");
    }

    #[test]
    fn empty_set_is_empty_string_and_repeated_values_repeat() {
        assert_eq!(serialize(&HeaderMap::new()), "");
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.insert("cf-int-x", HeaderValue::from_static("no"));
        h.insert("cf-cloudflared-y", HeaderValue::from_static("no"));
        h.insert("connection", HeaderValue::from_static("upgrade"));
        let s = serialize(&h);
        assert_eq!(s.matches(';').count(), 2, "{s}");
        let back = deserialize(&s).unwrap();
        let cookies: Vec<_> = back.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(back.get("cf-int-x").is_none());
        assert_eq!(back.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(deserialize("abc").is_err());
        assert!(deserialize("!!:AA").is_err());
    }
}
