//! The two calls of controller.md §9: `GET` and `PUT /accounts/{account_id}/cfd_tunnel/{tunnel_id}/configurations`.
//!
//! One HTTP/1.1 connection per call (TLS with the webpki roots for `https`, plain TCP for a loopback `http://`
//! test server): calls are seconds apart at the least, so a pool would only hold idle sockets. Every call is
//! bounded by a timeout covering connection, request and reply, and the reply body is read up to
//! [`MAX_REPLY_BYTES`]. The API token goes into `Authorization` only; it is never logged nor put in an error.
//! A 429 or 503 reply's `Retry-After` is read into the error, as a wait from the moment the reply arrived.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Largest reply read: a full 1,000-entry document with settings is far below this.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// The `resource` label of the API metrics.
const RESOURCE: &str = "tunnel_configurations";

/// Why a call failed. Messages carry the HTTP status and Cloudflare's own error messages, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("the Cloudflare API answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The reply's `Retry-After`, read only for 429 and 503 (RFC 9110 §10.2.3, RFC 6585 §4).
        retry_after: Option<Duration>,
    },
    #[error("calling the Cloudflare API failed: {0}")]
    Transport(String),
    #[error("the Cloudflare API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the Cloudflare API reply is unusable: {0}")]
    Reply(String),
}

/// Where the API is and how to reach it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiUrlError {
    #[error("the Cloudflare API URL {0:?} is not an http:// or https:// URL with a host")]
    Url(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// The account and tunnel a sync is about; each checked to be one safe path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelRef {
    pub account_id: String,
    pub tunnel_id: String,
}

/// Client of the tunnel configurations endpoint.
pub struct ConfigurationsApi {
    https: bool,
    host: String,
    port: u16,
    /// The base URL's path without a trailing slash (`/client/v4`).
    base_path: String,
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for ConfigurationsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigurationsApi")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

impl ApiError {
    /// 429, 5xx and failures to get any answer are retried with exponential backoff; other refusals (400, 401,
    /// 403, 404) will not change by retrying soon.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Transport(_) | Self::Timeout(_) => true,
            Self::Reply(_) => false,
        }
    }

    /// How long the API asked us to wait before the next call: the `Retry-After` of a 429 or 503 reply.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::Transport(_) | Self::Timeout(_) | Self::Reply(_) => None,
        }
    }

    /// The `tunnelgate.dev/CloudflareSynced` reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Status { status: 429, .. } => "RateLimited",
            Self::Status {
                status: 401 | 403, ..
            } => "Unauthorized",
            Self::Status { status: 404, .. } => "TunnelNotFound",
            Self::Status { status, .. } if *status >= 500 => "ApiUnavailable",
            Self::Status { .. } | Self::Reply(_) => "ApiError",
            Self::Transport(_) | Self::Timeout(_) => "ApiUnavailable",
        }
    }
}

impl TunnelRef {
    /// Both ids, checked: letters, digits and `-` only (a 32-hex account tag, a tunnel UUID), at most 64 each.
    pub fn new(account_id: &str, tunnel_id: &str) -> Result<Self, String> {
        Ok(Self {
            account_id: Self::check_id("account id", account_id)?,
            tunnel_id: Self::check_id("tunnel id", tunnel_id)?,
        })
    }

    /// One id, trimmed, if it is one safe path segment; `what` names it in the error.
    pub fn check_id(what: &str, id: &str) -> Result<String, String> {
        let id = id.trim();
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!(
                "the {what} {id:?} is not an id (letters, digits and '-', at most 64)"
            ));
        }
        Ok(id.to_owned())
    }
}

impl ConfigurationsApi {
    /// A client of the API at `base_url` (`https://api.cloudflare.com/client/v4`), each call bounded by `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, ApiUrlError> {
        let bad = || ApiUrlError::Url(base_url.to_owned());
        let uri: Uri = base_url.trim().parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        if uri.query().is_some() {
            return Err(bad());
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiUrlError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            https,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            timeout,
        })
    }

    /// `GET …/configurations`: the whole reply (`{"success":…, "result": {"config": {"ingress": […]}}}`).
    pub async fn get(&self, tunnel: &TunnelRef, token: &str, metrics: &Metrics) -> Result<Value, ApiError> {
        let body = self.call(Method::GET, tunnel, token, None, metrics).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Reply(format!("GET reply is not JSON: {e}")))
    }

    /// `PUT …/configurations` with `body` (`{"config":{"ingress":[…]}}`).
    pub async fn put(
        &self,
        tunnel: &TunnelRef,
        token: &str,
        body: &Value,
        metrics: &Metrics,
    ) -> Result<(), ApiError> {
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Reply(e.to_string()))?;
        self.call(Method::PUT, tunnel, token, Some(Bytes::from(body)), metrics)
            .await
            .map(drop)
    }

    async fn call(
        &self,
        method: Method,
        tunnel: &TunnelRef,
        token: &str,
        body: Option<Bytes>,
        metrics: &Metrics,
    ) -> Result<Bytes, ApiError> {
        let started = Instant::now();
        let result =
            match tokio::time::timeout(self.timeout, self.exchange(&method, tunnel, token, body)).await {
                Ok(r) => r,
                Err(_) => Err(ApiError::Timeout(self.timeout)),
            };
        let status = match &result {
            Ok(reply) => reply.status.as_u16().to_string(),
            Err(_) => "error".to_owned(),
        };
        metrics.cloudflare_api_call(
            method.as_str(),
            RESOURCE,
            &status,
            started.elapsed().as_secs_f64(),
        );
        let Reply {
            status,
            retry_after,
            body,
        } = result?;
        if status.is_success() {
            return Ok(body);
        }
        let throttled = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        Err(ApiError::Status {
            status: status.as_u16(),
            message: error_message(&body),
            retry_after: retry_after.filter(|_| throttled),
        })
    }

    async fn exchange(
        &self,
        method: &Method,
        tunnel: &TunnelRef,
        token: &str,
        body: Option<Bytes>,
    ) -> Result<Reply, ApiError> {
        let path = format!(
            "{}/accounts/{}/cfd_tunnel/{}/configurations",
            self.base_path, tunnel.account_id, tunnel.tunnel_id
        );
        let authority = if (self.https && self.port == 443) || (!self.https && self.port == 80) {
            self.host_for_header()
        } else {
            format!("{}:{}", self.host_for_header(), self.port)
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, authority)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("tunnelgate-controller/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ApiError::Transport(format!("building the request: {e}")))?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ApiError::Transport(format!("connecting to {}:{}: {e}", self.host, self.port)))?;
        let _ = tcp.set_nodelay(true);
        if self.https {
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| ApiError::Transport(format!("server name {:?}: {e}", self.host)))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| ApiError::Transport(format!("TLS with {}: {e}", self.host)))?;
            send(tls, request).await
        } else {
            send(tcp, request).await
        }
    }

    fn host_for_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// What [`send`] got back.
struct Reply {
    status: StatusCode,
    /// `Retry-After`, whatever the status, as a wait from when the headers arrived.
    retry_after: Option<Duration>,
    body: Bytes,
}

async fn send<I>(io: I, request: Request<Full<Bytes>>) -> Result<Reply, ApiError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ApiError::Transport(format!("HTTP handshake: {e}")))?;
    let driver = tokio::spawn(connection);
    let result = async {
        let reply = sender
            .send_request(request)
            .await
            .map_err(|e| ApiError::Transport(format!("sending the request: {e}")))?;
        let status = reply.status();
        let retry_after = retry_after_header(reply.headers(), SystemTime::now());
        let body = Limited::new(reply.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| ApiError::Reply(format!("reading the body (at most {MAX_REPLY_BYTES} bytes): {e}")))?
            .to_bytes();
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }
    .await;
    driver.abort();
    result
}

/// The first `Retry-After` field of `headers`, read by [`retry_after`]; `None` when absent or not visible ASCII.
fn retry_after_header(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    retry_after(value, now)
}

/// A `Retry-After` value (RFC 9110 §10.2.3) as a wait from `now`: delay-seconds (digits only; more than fit in a
/// `u64` count as the most there are), or an HTTP-date in any of the three forms recipients must accept (a date
/// already past is no wait at all). Anything else (a sign, a fraction, a unit, an unparsable date) is `None`.
/// No bound is applied here: the caller clamps the wait to its own longest backoff.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits, so a parse error can only be an overflow.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Cloudflare's `errors[].message` (with codes), else the start of the body; at most 300 characters.
fn error_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let errors = v.get("errors")?.as_array()?;
        let parts: Vec<String> = errors
            .iter()
            .filter_map(|e| {
                let message = e.get("message")?.as_str()?;
                Some(match e.get("code").and_then(Value::as_i64) {
                    Some(code) => format!("{message} (code {code})"),
                    None => message.to_owned(),
                })
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let text = if text.is_empty() {
        "no error message".to_owned()
    } else {
        text
    };
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests;
