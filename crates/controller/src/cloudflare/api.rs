//! The two calls of controller.md §9: `GET` and `PUT /accounts/{account_id}/cfd_tunnel/{tunnel_id}/configurations`.
//!
//! One HTTP/1.1 connection per call (TLS with the webpki roots for `https`, plain TCP for a loopback `http://`
//! test server): calls are seconds apart at the least, so a pool would only hold idle sockets. Every call is
//! bounded by a timeout covering connection, request and reply, and the reply body is read up to
//! [`MAX_REPLY_BYTES`]. The API token goes into `Authorization` only; it is never logged nor put in an error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
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
    Status { status: u16, message: String },
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
            Ok((status, _)) => status.as_u16().to_string(),
            Err(_) => "error".to_owned(),
        };
        metrics.cloudflare_api_call(
            method.as_str(),
            RESOURCE,
            &status,
            started.elapsed().as_secs_f64(),
        );
        let (status, bytes) = result?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(ApiError::Status {
            status: status.as_u16(),
            message: error_message(&bytes),
        })
    }

    async fn exchange(
        &self,
        method: &Method,
        tunnel: &TunnelRef,
        token: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
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

async fn send<I>(io: I, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), ApiError>
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
        let body = Limited::new(reply.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| ApiError::Reply(format!("reading the body (at most {MAX_REPLY_BYTES} bytes): {e}")))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
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
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let api =
            ConfigurationsApi::new("https://api.cloudflare.com/client/v4/", Duration::from_secs(1)).unwrap();
        assert!(api.https);
        assert_eq!(
            (api.host.as_str(), api.port, api.base_path.as_str()),
            ("api.cloudflare.com", 443, "/client/v4")
        );
        let api = ConfigurationsApi::new("http://127.0.0.1:8999", Duration::from_secs(1)).unwrap();
        assert_eq!((api.https, api.port, api.base_path.as_str()), (false, 8999, ""));
        let api = ConfigurationsApi::new("http://[::1]:8999/v4", Duration::from_secs(1)).unwrap();
        assert_eq!(
            (api.host.as_str(), api.host_for_header()),
            ("::1", "[::1]".to_owned())
        );
        for bad in ["ftp://x", "api.cloudflare.com", "https://", "https://x/?q=1", ""] {
            assert!(
                ConfigurationsApi::new(bad, Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_are_one_safe_path_segment() {
        assert!(
            TunnelRef::new(
                "0123456789abcdef0123456789abcdef",
                "6ff42ae2-765d-4adf-8112-31c55c1551ef"
            )
            .is_ok()
        );
        assert!(TunnelRef::new("../x", "t").is_err());
        assert!(TunnelRef::new("a", "t/configurations?x").is_err());
        assert!(TunnelRef::new("", "t").is_err());
    }

    #[test]
    fn which_failures_back_off() {
        let status = |s| ApiError::Status {
            status: s,
            message: String::new(),
        };
        assert!(status(429).is_transient());
        assert!(status(503).is_transient());
        assert!(ApiError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!status(403).is_transient());
        assert!(!status(400).is_transient());
        assert_eq!(status(429).reason(), "RateLimited");
        assert_eq!(status(401).reason(), "Unauthorized");
        assert_eq!(status(502).reason(), "ApiUnavailable");
    }

    #[test]
    fn error_messages_come_from_cloudflare_errors() {
        let body =
            br#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[]}"#;
        assert_eq!(error_message(body), "Authentication error (code 10000)");
        assert_eq!(error_message(b"upstream connect error"), "upstream connect error");
        assert_eq!(error_message(b""), "no error message");
        assert!(error_message("x".repeat(1000).as_bytes()).chars().count() <= 301);
    }
}
