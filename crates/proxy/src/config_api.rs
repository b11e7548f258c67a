//! The config API on `PROXY_CONFIG_ADDR` (config-api.md §2–§7): `PUT`/`GET /config`, `/healthz`, `/readyz`,
//! `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, oneshot};
use tunnelgate_config::Config;

use crate::metrics::ApplyResult;
use crate::state::{Applied, ApplyError, ProxyState};

/// Time allowed to receive a whole `PUT /config` body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the config API handler needs. Built once at startup.
pub struct ConfigApi {
    state: ProxyState,
    /// SHA-256 of the bearer token; comparing digests keeps the comparison constant-time and length-blind.
    token_digest: Option<[u8; 32]>,
    max_config_bytes: usize,
    metrics_enabled: bool,
    /// Bounds the decode-and-compile threads of concurrent `PUT /config` requests (each takes a thread of its
    /// own, and the decode may start more); further PUTs wait for a permit. Only one swap wins anyway.
    applies: Arc<Semaphore>,
}

/// `PUT /config` requests decoded and compiled at the same time.
const MAX_CONCURRENT_APPLIES: usize = 2;

type ApiResponse = Response<Full<Bytes>>;

/// Why a `PUT /config` body was not installed.
enum Rejection {
    Decode(tunnelgate_config::DecodeError),
    Apply(ApplyError),
}

impl ConfigApi {
    pub fn new(
        state: ProxyState,
        token: Option<&str>,
        max_config_bytes: usize,
        metrics_enabled: bool,
    ) -> Self {
        Self {
            state,
            token_digest: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            max_config_bytes,
            metrics_enabled,
            applies: Arc::new(Semaphore::new(MAX_CONCURRENT_APPLIES)),
        }
    }

    /// Handles one request. Runs the route on its own task so that a bug that panics turns into a 500 reply
    /// instead of a dropped connection.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> ApiResponse {
        match tokio::spawn(async move { self.route(req).await }).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::error!(error = %e, "config API handler failed");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "internal error"}),
                )
            }
        }
    }

    async fn route(&self, req: Request<Incoming>) -> ApiResponse {
        let get_like = req.method() == Method::GET || req.method() == Method::HEAD;
        match req.uri().path() {
            "/config" => match *req.method() {
                Method::PUT => self.put_config(req).await,
                Method::GET | Method::HEAD => {
                    if !self.authorized(&req) {
                        return unauthorized();
                    }
                    json_response(StatusCode::OK, &self.state.status().to_json())
                }
                _ => method_not_allowed("GET, HEAD, PUT"),
            },
            "/healthz" if get_like => json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" if get_like => match self.state.readiness() {
                Ok(()) => json_response(StatusCode::OK, &json!({"ready": true})),
                Err(reason) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"ready": false, "reason": reason}),
                ),
            },
            "/metrics" if self.metrics_enabled && get_like => match self.state.metrics().encode() {
                Ok(text) => {
                    let mut resp = Response::new(Full::new(Bytes::from(text)));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    resp
                }
                Err(_) => json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "internal error"}),
                ),
            },
            "/healthz" | "/readyz" => method_not_allowed("GET, HEAD"),
            "/metrics" if self.metrics_enabled => method_not_allowed("GET, HEAD"),
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
        }
    }

    /// The processing order of config-api.md §2.1: auth, content type, size, decode, validate, version, swap.
    async fn put_config(&self, req: Request<Incoming>) -> ApiResponse {
        // The request head has been parsed; the phases logged below start here.
        let started = Instant::now();
        let metrics = self.state.metrics();
        if !self.authorized(&req) {
            metrics.config_apply(ApplyResult::Unauthorized);
            return unauthorized();
        }
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            metrics.config_apply(ApplyResult::UnsupportedMediaType);
            return json_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &json!({"error": "unsupported content type"}),
            );
        }
        let limit = self.max_config_bytes;
        let too_large = || {
            metrics.config_apply(ApplyResult::TooLarge);
            json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": "config body exceeds maximum size", "limit": limit}),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return too_large();
        }
        // Sized from Content-Length (already checked against the limit), so a large body is received into one
        // allocation instead of a doubling series of copies.
        let expected = declared.map_or(0, |n| n as usize);
        let read = read_limited(req.into_body(), limit, expected);
        let body = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
            Ok(Ok(Some(body))) => body,
            Ok(Ok(None)) => return too_large(),
            Ok(Err(_)) | Err(_) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "could not read request body"}),
                );
            }
        };
        let received = Instant::now();
        // Decode and compile take tens of milliseconds of CPU for a large document: run them off the runtime so
        // its workers keep serving traffic meanwhile, on a thread of their own that ends with the apply. When a
        // thread ends, the allocator takes back the memory it kept cached for that thread; a pooled blocking
        // thread would sit idle for seconds holding megabytes of the apply's freed allocations.
        let state = self.state.clone();
        let Ok(permit) = self.applies.clone().acquire_owned().await else {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "internal error"}),
            );
        };
        let applied = on_own_thread("config-apply", move || {
            let _permit = permit;
            let dequeued = Instant::now();
            let config = Config::from_json_slice(&body).map_err(Rejection::Decode)?;
            let decoded = Instant::now();
            let bytes = body.len();
            drop(body);
            match state.apply_retiring(&config) {
                Ok(applied) => Ok((applied, config, bytes, dequeued, decoded)),
                Err(e) => Err(Rejection::Apply(e)),
            }
        });
        let applied = match applied {
            Ok(result) => result.await,
            Err(e) => {
                tracing::error!(error = %e, "could not start the config apply thread");
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "internal error"}),
                );
            }
        };
        match applied {
            Ok(Ok((applied, config, bytes, dequeued, decoded))) => {
                let Applied {
                    status,
                    retired,
                    phases,
                } = applied;
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                tracing::info!(
                    version = status.version,
                    rules = status.rules,
                    bytes,
                    total_ms = ms(started.elapsed()),
                    body_ms = ms(received - started),
                    queue_ms = ms(dequeued - received),
                    decode_ms = ms(decoded - dequeued),
                    compile_ms = ms(phases.compile),
                    pools_ms = ms(phases.pools),
                    hosts_ms = ms(phases.hosts),
                    swap_ms = ms(phases.swap),
                    "config applied"
                );
                // The new table is live; free the replaced one and the decoded document off this path, on a
                // thread of their own too. Should no thread start, they are freed here.
                let _ = on_own_thread("config-free", move || {
                    let freeing = Instant::now();
                    drop(config);
                    let document = freeing.elapsed();
                    let waited = retired.release();
                    tracing::debug!(
                        document_ms = ms(document),
                        table_wait_ms = ms(waited.wait),
                        table_ms = ms(waited.free),
                        "replaced config freed"
                    );
                });
                json_response(StatusCode::OK, &status.to_json())
            }
            Ok(Err(Rejection::Decode(e))) => {
                metrics.config_apply(ApplyResult::Invalid);
                error_with_path(&e.message, e.path.as_deref())
            }
            Ok(Err(Rejection::Apply(ApplyError::Invalid { message, path }))) => {
                tracing::info!(error = %message, path = path.as_deref().unwrap_or(""), "config rejected");
                error_with_path(&message, path.as_deref())
            }
            Ok(Err(Rejection::Apply(ApplyError::Stale { current, received }))) => {
                tracing::info!(current, received, "stale config version rejected");
                json_response(
                    StatusCode::CONFLICT,
                    &json!({"error": "stale config version", "current": current, "received": received}),
                )
            }
            Err(_) => {
                tracing::error!("config apply failed: the apply thread panicked");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "internal error"}),
                )
            }
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(want) = &self.token_digest else {
            return true;
        };
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let bytes = value.as_bytes();
        if bytes.len() < 7 || !bytes[..7].eq_ignore_ascii_case(b"Bearer ") {
            return false;
        }
        let got: [u8; 32] = Sha256::digest(&bytes[7..]).into();
        got.ct_eq(want).into()
    }
}

/// Runs `work` on a new thread named `name`; the receiver gets its result, or an error if it panicked.
fn on_own_thread<T, F>(name: &str, work: F) -> std::io::Result<oneshot::Receiver<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let _ = tx.send(work());
    })?;
    Ok(rx)
}

/// Reads at most `limit` bytes; `None` when the body is longer. `expected` (at most `limit`) is the room
/// reserved up front.
async fn read_limited(
    mut body: Incoming,
    limit: usize,
    expected: usize,
) -> Result<Option<Bytes>, hyper::Error> {
    let mut buf = BytesMut::with_capacity(expected.min(limit));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > limit {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf.freeze()))
}

/// The media type, compared case-insensitively with parameters ignored, must be `application/json`.
fn is_json(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = value.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> ApiResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_with_path(message: &str, path: Option<&str>) -> ApiResponse {
    let body = match path {
        Some(p) => json!({"error": message, "path": p}),
        None => json!({"error": message}),
    };
    json_response(StatusCode::BAD_REQUEST, &body)
}

fn unauthorized() -> ApiResponse {
    let mut resp = json_response(StatusCode::UNAUTHORIZED, &json!({"error": "unauthorized"}));
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn method_not_allowed(allow: &'static str) -> ApiResponse {
    let mut resp = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": "method not allowed"}),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_parsing() {
        let v = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(is_json(v("application/json").as_ref()));
        assert!(is_json(v("Application/JSON; charset=utf-8").as_ref()));
        assert!(is_json(v(" application/json ;x=y").as_ref()));
        assert!(!is_json(v("text/plain").as_ref()));
        assert!(!is_json(v("application/json-patch+json").as_ref()));
        assert!(!is_json(None));
    }
}
