//! The wire format of tunnelgate's config API: the document a controller sends with `PUT /config`
//! (`shared/spec/config-api.md` §4), compatible field for field with the Go project
//! (lexfrei/cloudflare-tunnel-gateway-controller).
//!
//! What this crate does:
//! - serde types for the document, with Go `omitempty` semantics (absent, `null` and the zero value are the same);
//! - decoding from JSON or YAML with the JSON path of the first syntax or type error ([`Config::from_json_slice`],
//!   [`Config::from_yaml_str`]);
//! - Go duration strings (`"1m30s"`, `"500ms"`) as [`GoDuration`].
//!
//! What it does not do: semantic validation (regexes, URLs, ranges) and compilation. Those belong to the
//! `tunnelgate-route` crate, which turns this dumb document into a checked routing table. No I/O, no async.

mod decode;
mod duration;

pub use decode::DecodeError;
pub use duration::{DurationError, GoDuration};

use serde::{Deserialize, Deserializer, Serialize};

/// The whole routing document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Monotonic version chosen by the controller; 0 means unversioned.
    #[serde(default, deserialize_with = "null_default")]
    pub version: i64,
    /// Ordered rules; the order is the last precedence tie-break.
    #[serde(default, deserialize_with = "vec_or_null")]
    pub rules: Vec<RouteRule>,
    /// True when a GRPCRoute contributed rules (tunnel transport choice).
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "is_false")]
    pub has_grpc_route: bool,
}

/// One rule: hostnames, ORed match arms, filters and backends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hostnames: Vec<String>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub matches: Vec<RouteMatch>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub filters: Vec<RouteFilter>,
    /// Always emitted by the controller, possibly empty.
    #[serde(default, deserialize_with = "vec_or_null")]
    pub backends: Vec<BackendRef>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Timeouts::is_empty"
    )]
    pub timeouts: Timeouts,
    /// Non-zero: every request matched by this rule gets this status.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "is_zero")]
    pub unavailable_status: i32,
}

/// One match arm; its conditions are ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub headers: Vec<ValueMatch>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub query_params: Vec<ValueMatch>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub method: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathMatch {
    #[serde(rename = "type")]
    pub kind: PathMatchType,
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueMatchType {
    Exact,
    RegularExpression,
}

/// A header or query-parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValueMatch {
    #[serde(rename = "type")]
    pub kind: ValueMatchType,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
}

/// Route timeouts. Each bounds the time to response headers; `0s` or absent means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<GoDuration>,
    /// Gateway API `backendRequest`; the wire name is `backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<GoDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    RequestMirror,
    #[serde(rename = "CORS")]
    Cors,
}

/// A filter: `type` plus the payload named after it. Payloads for other types are ignored.
///
/// The payloads are boxed (as is every [`BackendTls`]): a filter uses one of them, and inline they made every
/// filter 624 bytes and every backend 232, most of a large decoded document. The JSON is the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteFilter {
    #[serde(rename = "type")]
    pub kind: FilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<Box<HeaderModifier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<Box<HeaderModifier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<Box<RequestRedirect>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<Box<UrlRewrite>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<Box<RequestMirror>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Box<Cors>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderModifier {
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub set: Vec<Header>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub add: Vec<Header>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub scheme: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub hostname: String,
    /// 0 = not set.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "is_zero")]
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RedirectPath>,
    /// 0 = 302.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "is_zero")]
    pub status_code: i32,
}

/// The redirect path shape: `{type, value}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectPath {
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlRewrite {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RewritePath>,
}

/// The rewrite path shape: `{type, replaceFullPath | replacePrefixMatch}`; the field named after the type
/// carries the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewritePath {
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirror {
    #[serde(default, deserialize_with = "null_default")]
    pub backend_url: String,
    /// Absent = 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<BackendTls>>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_origins: Vec<String>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "is_false")]
    pub allow_credentials: bool,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_methods: Vec<String>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_headers: Vec<String>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub expose_headers: Vec<String>,
    /// Seconds; 0 or absent = 5.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "is_zero")]
    pub max_age: i32,
}

/// One weighted backend of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default, deserialize_with = "null_default")]
    pub url: String,
    #[serde(default, deserialize_with = "null_default")]
    pub weight: i32,
    /// `""` (HTTP/1.1) or `"h2c"` (HTTP/2).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<BackendTls>>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub filters: Vec<RouteFilter>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "is_false")]
    pub websocket: bool,
    /// Non-zero: reply this status instead of dialling; the backend keeps its weight share.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "is_zero")]
    pub unavailable_status: i32,
}

/// TLS settings towards a backend or mirror target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendTls {
    /// PEM, one or more certificates. When set, only these roots are trusted.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub ca_bundle: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub server_name: String,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subject_alt_names: Vec<String>,
    #[serde(
        default,
        deserialize_with = "vec_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subject_alt_name_uris: Vec<String>,
    /// Base64 (standard, padded) of PEM bytes, as Go encodes `[]byte`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub client_cert_pem: String,
    /// Base64 (standard, padded) of PEM bytes.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub client_key_pem: String,
}

impl Timeouts {
    pub fn is_empty(&self) -> bool {
        self.request.is_none() && self.backend.is_none()
    }
}

impl RouteFilter {
    /// A filter of `kind` with no payload; set the payload field that matches `kind`.
    pub fn new(kind: FilterType) -> Self {
        Self {
            kind,
            request_header_modifier: None,
            response_header_modifier: None,
            request_redirect: None,
            url_rewrite: None,
            request_mirror: None,
            cors: None,
        }
    }
}

/// Go's encoders emit `null` for nil slices and absent fields for omitempty; both mean the zero value.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A `null`-or-array field, allocated to its exact length. A derived `Vec` field grows by doubling from 4
/// elements, so a one-element array of a large struct (one backend, one match) would keep room for four: most
/// of the decoded size of a big document, and memory the allocator may keep after the document is dropped.
fn vec_or_null<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Items<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Items<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Vec<T>, D2::Error> {
            d.deserialize_seq(self)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let Some(first) = seq.next_element()? else {
                return Ok(Vec::new());
            };
            let Some(second) = seq.next_element()? else {
                return Ok(vec![first]);
            };
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).saturating_add(2).min(64));
            items.push(first);
            items.push(second);
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            items.shrink_to_fit();
            Ok(items)
        }
    }

    d.deserialize_option(Items(std::marker::PhantomData))
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests;
