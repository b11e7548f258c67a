//! Data-stream protocol (tunnel.md §5): stream signatures, `ConnectRequest`/`ConnectResponse`, and the
//! mapping between their metadata and HTTP heads, for both the connector and the edge side.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::framing;
use crate::tunnel_capnp::{ConnectionType as WireType, connect_request, connect_response, metadata};

/// First bytes of a data stream.
pub const DATA_STREAM_SIGNATURE: [u8; 6] = [0x0A, 0x36, 0xCD, 0x12, 0xA1, 0x3E];
/// First bytes of an edge-initiated RPC stream.
pub const RPC_STREAM_SIGNATURE: [u8; 6] = [0x52, 0xBB, 0x82, 0x5C, 0xDB, 0x65];
/// Version bytes after the data signature.
pub const PROTOCOL_VERSION: [u8; 2] = *b"01";

/// Metadata keys.
pub const HTTP_METHOD: &str = "HttpMethod";
pub const HTTP_HOST: &str = "HttpHost";
pub const HTTP_HEADER_PREFIX: &str = "HttpHeader:";
pub const HTTP_STATUS: &str = "HttpStatus";
/// The marker header the edge adds to WebSocket and control requests.
pub const UPGRADE_MARKER: &str = "cf-cloudflared-proxy-connection-upgrade";
/// Error text for `type = tcp`.
pub const TCP_UNSUPPORTED: &str = "TCP proxying is not supported";

/// What a stream carries, by its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Data,
    Rpc,
    Unknown,
}

/// Classifies a stream by its first six bytes.
pub fn classify(signature: &[u8; 6]) -> StreamKind {
    if *signature == DATA_STREAM_SIGNATURE {
        StreamKind::Data
    } else if *signature == RPC_STREAM_SIGNATURE {
        StreamKind::Rpc
    } else {
        StreamKind::Unknown
    }
}

/// `ConnectionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionType {
    Http,
    Websocket,
    Tcp,
}

/// One metadata entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub key: String,
    pub val: String,
}

impl Metadata {
    pub fn new(key: impl Into<String>, val: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            val: val.into(),
        }
    }
}

/// The head of a data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub dest: String,
    pub kind: ConnectionType,
    pub metadata: Vec<Metadata>,
}

/// The answer written back on a data stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    pub error: String,
    pub metadata: Vec<Metadata>,
}

fn write_metadata(mut list: capnp::struct_list::Builder<'_, metadata::Owned>, entries: &[Metadata]) {
    for (i, m) in entries.iter().enumerate() {
        let mut e = list.reborrow().get(i as u32);
        e.set_key(m.key.as_str());
        e.set_val(m.val.as_str());
    }
}

/// Most metadata entries accepted in one `ConnectRequest`/`ConnectResponse`: far more than any real head
/// (one entry per header value). A list of zero-sized structs costs the sender no bytes, so without this bound a
/// 49-byte message could make the reader allocate and walk millions of entries.
pub const MAX_METADATA_ENTRIES: u32 = 4096;

fn read_metadata(list: capnp::struct_list::Reader<'_, metadata::Owned>) -> capnp::Result<Vec<Metadata>> {
    if list.len() > MAX_METADATA_ENTRIES {
        return Err(capnp::Error::failed(format!(
            "{} metadata entries exceed the limit of {MAX_METADATA_ENTRIES}",
            list.len()
        )));
    }
    let mut out = Vec::with_capacity(list.len() as usize);
    for m in list.iter() {
        out.push(Metadata {
            key: m.get_key()?.to_string()?,
            val: m.get_val()?.to_string()?,
        });
    }
    Ok(out)
}

impl ConnectRequest {
    /// The framed message.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = capnp::message::Builder::new_default();
        let mut r = m.init_root::<connect_request::Builder>();
        r.set_dest(self.dest.as_str());
        r.set_type(match self.kind {
            ConnectionType::Http => WireType::Http,
            ConnectionType::Websocket => WireType::Websocket,
            ConnectionType::Tcp => WireType::Tcp,
        });
        write_metadata(r.init_metadata(self.metadata.len() as u32), &self.metadata);
        framing::encode(&m)
    }

    /// Decodes a received message.
    pub fn read(msg: &capnp::message::Reader<capnp::serialize::OwnedSegments>) -> capnp::Result<Self> {
        let r = msg.get_root::<connect_request::Reader>()?;
        let kind = match r.get_type()? {
            WireType::Http => ConnectionType::Http,
            WireType::Websocket => ConnectionType::Websocket,
            WireType::Tcp => ConnectionType::Tcp,
        };
        Ok(Self {
            dest: r.get_dest()?.to_string()?,
            kind,
            metadata: read_metadata(r.get_metadata()?)?,
        })
    }
}

impl ConnectResponse {
    /// The framed message.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = capnp::message::Builder::new_default();
        let mut r = m.init_root::<connect_response::Builder>();
        r.set_error(self.error.as_str());
        write_metadata(r.init_metadata(self.metadata.len() as u32), &self.metadata);
        framing::encode(&m)
    }

    pub fn read(msg: &capnp::message::Reader<capnp::serialize::OwnedSegments>) -> capnp::Result<Self> {
        let r = msg.get_root::<connect_response::Reader>()?;
        Ok(Self {
            error: r.get_error()?.to_string()?,
            metadata: read_metadata(r.get_metadata()?)?,
        })
    }

    /// An error answer (`ConnectResponse{error}` with no metadata).
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            error: text.into(),
            metadata: Vec::new(),
        }
    }
}

/// Why a `ConnectRequest` cannot become an HTTP request. Answered with `ConnectResponse{error}`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MalformedRequest {
    #[error("malformed metadata key {0:?}")]
    Key(String),
    #[error("invalid header {0:?}")]
    Header(String),
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("invalid destination {0:?}")]
    Dest(String),
    #[error("Content-Length is not a number")]
    ContentLength,
}

/// A `ConnectRequest` turned into an HTTP request head (connector side).
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    /// Scheme from `dest`, or `https` for a bare path.
    pub scheme: &'static str,
    /// Origin-form target: path and query.
    pub path_and_query: String,
    pub headers: HeaderMap,
    /// A request body follows on the stream.
    pub has_body: bool,
    pub websocket: bool,
}

/// Headers that belong to one hop and never cross the tunnel (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    let hop: Vec<HeaderName> = headers.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
    for n in hop {
        headers.remove(n);
    }
}

fn scheme_of(dest: &str) -> (&'static str, &str) {
    if let Some(rest) = dest.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = dest.strip_prefix("http://") {
        ("http", rest)
    } else if let Some(rest) = dest.strip_prefix("wss://") {
        ("https", rest)
    } else if let Some(rest) = dest.strip_prefix("ws://") {
        ("http", rest)
    } else {
        ("https", "")
    }
}

impl ConnectRequest {
    /// Converts the metadata into an HTTP head (tunnel.md §5.3, §5.5).
    pub fn to_head(&self) -> Result<RequestHead, MalformedRequest> {
        let (scheme, after_scheme) = scheme_of(&self.dest);
        let path_and_query = if after_scheme.is_empty() && self.dest.starts_with('/') {
            self.dest.clone()
        } else if !after_scheme.is_empty() {
            match after_scheme.find('/') {
                Some(i) => after_scheme[i..].to_string(),
                None => match after_scheme.find('?') {
                    Some(i) => format!("/{}", &after_scheme[i..]),
                    None => "/".to_string(),
                },
            }
        } else {
            return Err(MalformedRequest::Dest(self.dest.clone()));
        };
        if path_and_query.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(MalformedRequest::Dest(self.dest.clone()));
        }
        let mut method = Method::GET;
        let mut host: Option<String> = None;
        let mut headers = HeaderMap::new();
        for m in &self.metadata {
            if m.key == HTTP_METHOD {
                method = Method::from_bytes(m.val.as_bytes())
                    .map_err(|_| MalformedRequest::Method(m.val.clone()))?;
            } else if m.key == HTTP_HOST {
                host = Some(m.val.clone());
            } else if let Some(name) = m.key.strip_prefix(HTTP_HEADER_PREFIX) {
                if name.is_empty() || name.contains(':') {
                    return Err(MalformedRequest::Key(m.key.clone()));
                }
                let n = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| MalformedRequest::Header(name.into()))?;
                let v = HeaderValue::from_str(&m.val).map_err(|_| MalformedRequest::Header(name.into()))?;
                headers.append(n, v);
            }
        }
        if let Some(h) = host {
            let v = HeaderValue::from_str(&h).map_err(|_| MalformedRequest::Header("Host".into()))?;
            headers.insert(http::header::HOST, v);
        }
        let websocket = self.kind == ConnectionType::Websocket
            || headers
                .get(UPGRADE_MARKER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        headers.remove(UPGRADE_MARKER);
        let chunked = headers.get_all(http::header::TRANSFER_ENCODING).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
        });
        let mut has_body = chunked;
        if let Some(cl) = headers.get(http::header::CONTENT_LENGTH) {
            let n: u64 = cl
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(MalformedRequest::ContentLength)?;
            has_body = has_body || n > 0;
        }
        if websocket {
            strip_hop_by_hop(&mut headers);
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
            headers
                .entry(http::header::SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
            has_body = false;
        } else {
            // The body arrives de-chunked; the origin frames it again as it needs.
            strip_hop_by_hop(&mut headers);
        }
        Ok(RequestHead {
            method,
            scheme,
            path_and_query,
            headers,
            has_body,
            websocket,
        })
    }
}

/// Response metadata for a head (connector side, tunnel.md §5.4).
pub fn response_metadata(status: StatusCode, headers: &HeaderMap) -> Vec<Metadata> {
    let mut out = Vec::with_capacity(headers.len() + 1);
    out.push(Metadata::new(HTTP_STATUS, status.as_str()));
    let mut headers = headers.clone();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(&mut headers);
    }
    for (name, value) in &headers {
        if let Ok(v) = value.to_str() {
            out.push(Metadata::new(
                format!("{HTTP_HEADER_PREFIX}{}", canonical_name(name.as_str())),
                v,
            ));
        }
    }
    out
}

/// `content-type` → `Content-Type`, the casing Go's `http.Header` gives header names.
pub fn canonical_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// Why a `ConnectResponse` cannot become an HTTP response head (edge side).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadResponse {
    #[error("origin error: {0}")]
    Origin(String),
    #[error("missing or invalid HttpStatus")]
    Status,
    #[error("invalid response header {0:?}")]
    Header(String),
}

impl ConnectResponse {
    /// Converts a response into status and headers (edge side).
    pub fn to_head(&self) -> Result<(StatusCode, HeaderMap), BadResponse> {
        if !self.error.is_empty() {
            return Err(BadResponse::Origin(self.error.clone()));
        }
        let mut status = None;
        let mut headers = HeaderMap::new();
        for m in &self.metadata {
            if m.key == HTTP_STATUS {
                status = m
                    .val
                    .parse::<u16>()
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok());
            } else if let Some(name) = m.key.strip_prefix(HTTP_HEADER_PREFIX) {
                let n =
                    HeaderName::from_bytes(name.as_bytes()).map_err(|_| BadResponse::Header(name.into()))?;
                let v = HeaderValue::from_str(&m.val).map_err(|_| BadResponse::Header(name.into()))?;
                headers.append(n, v);
            }
        }
        Ok((status.ok_or(BadResponse::Status)?, headers))
    }
}

/// Options for building a `ConnectRequest` on the edge side (the emulator's faults change these).
#[derive(Debug, Clone, Default)]
pub struct EdgeRequestOptions {
    /// Send `/path` instead of an absolute URL.
    pub bare_path_dest: bool,
    /// Lowercase the method.
    pub lowercase_method: bool,
    /// Keep `Connection`/`Upgrade` on WebSocket requests.
    pub keep_hop_headers: bool,
    /// Add an unknown metadata key.
    pub unknown_metadata_key: bool,
}

/// Builds the `ConnectRequest` for an eyeball request (edge side, tunnel.md §13.3).
pub fn connect_request_for(
    parts: &http::request::Parts,
    scheme: &str,
    host: &str,
    opts: &EdgeRequestOptions,
) -> ConnectRequest {
    let websocket = parts
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let dest = if opts.bare_path_dest {
        pq.to_string()
    } else {
        format!("{scheme}://{host}{pq}")
    };
    let method = if opts.lowercase_method {
        parts.method.as_str().to_ascii_lowercase()
    } else {
        parts.method.as_str().to_string()
    };
    let mut metadata = vec![Metadata::new(HTTP_METHOD, method), Metadata::new(HTTP_HOST, host)];
    if opts.unknown_metadata_key {
        metadata.push(Metadata::new("EmuUnknownKey", "ignored"));
    }
    for (name, value) in &parts.headers {
        let keep_hop = websocket
            && opts.keep_hop_headers
            && (name == http::header::CONNECTION || name == http::header::UPGRADE);
        if (is_hop_by_hop(name) && !keep_hop) || name == http::header::HOST {
            continue;
        }
        if let Ok(v) = value.to_str() {
            metadata.push(Metadata::new(
                format!("{HTTP_HEADER_PREFIX}{}", canonical_name(name.as_str())),
                v,
            ));
        }
    }
    // The edge de-chunks the eyeball body but tells the origin that one follows.
    let chunked = parts.headers.get(http::header::TRANSFER_ENCODING).is_some();
    if chunked && !websocket {
        metadata.push(Metadata::new(
            format!("{HTTP_HEADER_PREFIX}Transfer-Encoding"),
            "chunked",
        ));
    }
    if websocket {
        metadata.push(Metadata::new(
            format!("{HTTP_HEADER_PREFIX}Cf-Cloudflared-Proxy-Connection-Upgrade"),
            "websocket",
        ));
    }
    ConnectRequest {
        dest,
        kind: if websocket {
            ConnectionType::Websocket
        } else {
            ConnectionType::Http
        },
        metadata,
    }
}

#[cfg(test)]
mod tests;
