//! The one request service (routing.md §1): the plain listener and the tunnel streams both call
//! [`RequestService::serve`]. It loads the active table once, routes, runs the filters, dispatches to the chosen
//! backend and relays the response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use rand::Rng as _;
use tokio::sync::oneshot;
use tunnelgate_route::{
    Filter, RedirectInput, RequestHead, RouteHit, Rule, Upstream, UpstreamProtocol, UpstreamScheme,
};

use crate::access_log::AccessRecord;
use crate::body::{self, ProxyBody, reason_line, text_response};
use crate::forward::{append_forwarded_for, is_upgrade, strip_hop_by_hop, strip_request_hop_by_hop};
use crate::metrics::{BackendErrorReason, HostMetrics};
use crate::mirror::{MirrorBody, MirrorCopy, Mirrors};
use crate::observe::{Finish, ObservedRequest, ObservedResponse, RequestGuard, Tee};
use crate::otlp::{RequestTracer, ServerSpan};
use crate::pool::UpstreamClient;
use crate::settings::{AccessLogSettings, ProxySettings};
use crate::state::{Active, ProxyState};
use crate::upgrade::{self, ClientUpgrade};

const X_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-original-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const ACCESS_CONTROL_REQUEST_METHOD: HeaderName = HeaderName::from_static("access-control-request-method");
const ACCESS_CONTROL_REQUEST_HEADERS: HeaderName = HeaderName::from_static("access-control-request-headers");

/// Per-request facts the transport knows.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// `http` on the plain listener; the tunnel passes the edge's scheme.
    pub scheme: &'static str,
    /// The TCP peer on the plain listener (appended to `X-Forwarded-For`); `None` in tunnel mode.
    pub peer: Option<SocketAddr>,
    /// Metrics label of the transport: `listener`, `quic`, `http2`.
    pub transport: &'static str,
}

/// The one request service. Cheap to clone.
#[derive(Clone)]
pub struct RequestService {
    inner: Arc<Inner>,
}

struct Inner {
    state: ProxyState,
    trust_original_host: bool,
    ws_dial_timeout: Duration,
    ws_handshake_timeout: Duration,
    mirror_max_body_bytes: usize,
    access_log: AccessLogSettings,
    mirrors: Mirrors,
    /// `None` when tracing is off: then no trace header is looked at.
    tracer: Option<RequestTracer>,
}

/// How a request ended before a backend response, each mapped to exactly one status (routing.md §9).
enum Outcome {
    Response(Response<ProxyBody>),
    NoRoute { grpc: bool },
    RuleUnavailable(StatusCode),
    NoBackend,
    BackendUnavailable(StatusCode),
    BadGateway(BackendErrorReason),
    Timeout,
}

/// Edits made by request-phase filters.
#[derive(Default)]
struct Edits {
    /// Rewritten path (raw).
    path: Option<String>,
    /// URLRewrite hostname.
    host: Option<HeaderValue>,
    mirrors: Vec<MirrorCopy>,
}

impl RequestService {
    pub fn new(state: ProxyState, settings: &ProxySettings) -> Self {
        Self::with_tracer(state, settings, None)
    }

    /// A service whose requests are traced by `tracer`.
    pub(crate) fn with_tracer(
        state: ProxyState,
        settings: &ProxySettings,
        tracer: Option<RequestTracer>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                mirrors: Mirrors::new(state.clone()),
                state,
                trust_original_host: settings.trust_original_host,
                ws_dial_timeout: settings.ws_dial_timeout,
                ws_handshake_timeout: settings.ws_handshake_timeout,
                mirror_max_body_bytes: settings.mirror_max_body_bytes,
                access_log: settings.access_log,
                tracer,
            }),
        }
    }

    pub fn state(&self) -> &ProxyState {
        &self.inner.state
    }

    /// Serves one request. Never fails: every error becomes a proxy-generated response.
    pub async fn serve(&self, req: Request<ProxyBody>, ctx: RequestContext) -> Response<ProxyBody> {
        let inner = &*self.inner;
        let metrics = inner.state.metrics();
        let active = inner.state.active();
        let (mut parts, body) = req.into_parts();

        let original_host = inner
            .trust_original_host
            .then(|| parts.headers.get(&X_ORIGINAL_HOST))
            .flatten()
            .filter(|v| !v.is_empty())
            .cloned();
        let host = match &original_host {
            Some(h) => Some(h.clone()),
            None => request_host(&parts),
        };
        let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        let mut log = inner
            .access_log
            .enabled
            .then(|| AccessRecord::capture(&parts, host_str, &inner.access_log));
        let span = match &inner.tracer {
            None => None,
            Some(tracer) => tracer.server_span(&parts, host_str, ctx.scheme),
        };
        if let (Some(log), Some(span)) = (log.as_mut(), span.as_deref()) {
            log.traced(span.trace_id(), span.span_id());
        }
        let head_only = parts.method == Method::HEAD;

        let hit = active.table.lookup(&RequestHead {
            method: &parts.method,
            host: host_str,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
        });
        // Created once the hostname pattern is known, so that the pattern's handles are cloned once (their
        // reference count is shared by every worker thread).
        let host_metrics = match &hit {
            Some(hit) => active.host_metrics(hit.hostname, metrics).clone(),
            None => metrics.unmatched().clone(),
        };
        let guard = RequestGuard::new(&metrics.in_flight, host_metrics);
        let outcome = match hit {
            None => {
                let grpc = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                Outcome::NoRoute { grpc }
            }
            Some(hit) => {
                self.routed(
                    &active,
                    hit,
                    &guard.host,
                    &mut parts,
                    body,
                    &ctx,
                    host.as_ref(),
                    original_host.is_some(),
                    span.as_deref(),
                )
                .await
            }
        };
        let resp = match outcome {
            Outcome::Response(r) => r,
            Outcome::NoRoute { grpc: true } => grpc_unimplemented(),
            Outcome::NoRoute { grpc: false } => {
                text_response(StatusCode::NOT_FOUND, "no matching route\n", head_only)
            }
            Outcome::RuleUnavailable(status) => text_response(status, reason_line(status), head_only),
            Outcome::NoBackend => text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no backend available for this route\n",
                head_only,
            ),
            Outcome::BackendUnavailable(status) => text_response(status, "backend unavailable\n", head_only),
            Outcome::BadGateway(reason) => {
                guard.host.backend_error(reason);
                text_response(StatusCode::BAD_GATEWAY, "bad gateway\n", head_only)
            }
            Outcome::Timeout => {
                guard.host.backend_error(BackendErrorReason::Timeout);
                text_response(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n", head_only)
            }
        };
        let (resp_parts, resp_body) = resp.into_parts();
        let finish = Finish {
            status: resp_parts.status.as_u16(),
            guard,
            log,
            span,
        };
        Response::from_parts(
            resp_parts,
            body::boxed_exact(ObservedResponse::new(resp_body, finish)),
        )
    }

    /// Steps 5–11 of the pipeline for a matched request.
    #[allow(clippy::too_many_arguments)]
    async fn routed(
        &self,
        active: &Active,
        hit: RouteHit<'_>,
        host_metrics: &Arc<HostMetrics>,
        parts: &mut Parts,
        body: ProxyBody,
        ctx: &RequestContext,
        host: Option<&HeaderValue>,
        original_host_honoured: bool,
        span: Option<&ServerSpan>,
    ) -> Outcome {
        let inner = &*self.inner;
        let rule = hit.rule;
        if let Some(status) = rule.unavailable_status {
            return Outcome::RuleUnavailable(status);
        }
        let chosen = rule.choose_backend(|n| if n == 0 { 0 } else { rand::rng().random_range(0..n) });
        let backend = chosen.and_then(|i| rule.backends.get(i));

        let mut edits = Edits::default();
        let mut cors_origin: Option<HeaderValue> = None;
        let host_str = host.and_then(|h| h.to_str().ok()).unwrap_or("");
        let phases = [
            Some(rule.filters.as_slice()),
            backend.map(|b| b.filters.as_slice()),
        ];
        for filters in phases.into_iter().flatten() {
            if let Some(short) = self.request_phase(
                active,
                filters,
                &hit,
                parts,
                ctx,
                host_str,
                &mut edits,
                &mut cors_origin,
            ) {
                return Outcome::Response(short);
            }
        }

        let Some(backend) = backend else {
            return Outcome::NoBackend;
        };
        if let Some(status) = backend.unavailable_status {
            return Outcome::BackendUnavailable(status);
        }
        let Some(client) = active.clients.get(&*backend.upstream) else {
            return Outcome::BadGateway(BackendErrorReason::Other);
        };

        let upgrading = is_upgrade(&parts.headers);
        let mut body = body;
        let mut body_end = None;
        if !edits.mirrors.is_empty() {
            let copies = std::mem::take(&mut edits.mirrors);
            if body_is_empty(&body) {
                inner.mirrors.launch(copies, MirrorBody::Empty);
            } else {
                let (tx, rx) = oneshot::channel();
                let tee = Tee::new(inner.mirror_max_body_bytes, tx);
                let (end_tx, end_rx) = timeout_end_signal(rule);
                body_end = end_rx;
                body = body::boxed_exact(ObservedRequest::new(
                    body,
                    host_metrics.request_bytes.clone(),
                    end_tx,
                    Some(tee),
                ));
                inner.mirrors.launch(copies, MirrorBody::Teed(rx));
            }
        } else if !body_is_empty(&body) {
            let (end_tx, end_rx) = timeout_end_signal(rule);
            body_end = end_rx;
            body = body::boxed_exact(ObservedRequest::new(
                body,
                host_metrics.request_bytes.clone(),
                end_tx,
                None,
            ));
        }

        let forwarded_host = edits.host.as_ref().or(host);
        let mut req = match build_backend_request(
            parts,
            body,
            &client.upstream,
            edits.path.as_deref(),
            forwarded_host,
            ctx,
            upgrading,
            original_host_honoured,
        ) {
            Some(r) => r,
            None => return Outcome::BadGateway(BackendErrorReason::Other),
        };

        let mut resp = if upgrading {
            let client_io = parts.extensions.remove::<ClientUpgrade>();
            // Boxed: rare, and bigger than the common path's state (see `request_futures_stay_small`).
            match Box::pin(upgrade::forward(
                client,
                req,
                client_io,
                inner.ws_dial_timeout,
                inner.ws_handshake_timeout,
                inner.state.metrics().websocket_sessions.clone(),
            ))
            .await
            {
                Ok(r) => r,
                Err(e) => return Outcome::BadGateway(e.reason()),
            }
        } else {
            // Boxed and only when traced, so that the untraced future stays as it was.
            let client_span = match (span, &inner.tracer) {
                (Some(span), Some(tracer)) => {
                    let method = req.method().clone();
                    Some(span.client_span(tracer, &method, &client.upstream.authority, req.headers_mut()))
                }
                _ => None,
            };
            match send(client, req, rule.timeout, body_end).await {
                Ok(r) => {
                    if let Some(c) = client_span {
                        c.end_with_status(r.status().as_u16());
                    }
                    r
                }
                Err(outcome) => {
                    if let Some(c) = client_span {
                        c.end_with_error(match &outcome {
                            Outcome::BadGateway(reason) => reason.label(),
                            Outcome::Timeout => "timeout",
                            _ => "other",
                        });
                    }
                    return outcome;
                }
            }
        };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(resp.headers_mut(), switching);
        for filters in [Some(rule.filters.as_slice()), Some(backend.filters.as_slice())]
            .into_iter()
            .flatten()
        {
            response_phase(filters, resp.headers_mut(), cors_origin.as_ref());
        }
        Outcome::Response(resp)
    }

    /// Runs one level of request-phase filters. Returns a response when a filter short-circuits.
    #[allow(clippy::too_many_arguments)]
    fn request_phase(
        &self,
        active: &Active,
        filters: &[Filter],
        hit: &RouteHit<'_>,
        parts: &mut Parts,
        ctx: &RequestContext,
        host: &str,
        edits: &mut Edits,
        cors_origin: &mut Option<HeaderValue>,
    ) -> Option<Response<ProxyBody>> {
        for filter in filters {
            match filter {
                Filter::RequestHeaderModifier(m) => m.apply(&mut parts.headers),
                Filter::ResponseHeaderModifier(_) => {}
                Filter::UrlRewrite(rw) => {
                    if let Some(h) = &rw.hostname {
                        edits.host = Some(h.clone());
                    }
                    let current = edits.path.as_deref().unwrap_or(parts.uri.path());
                    if let Some(p) = rw.rewrite_path(current, hit.prefix) {
                        edits.path = Some(p);
                    }
                }
                Filter::RequestRedirect(r) => {
                    let location = r.location(
                        &RedirectInput {
                            scheme: request_scheme(parts, ctx),
                            host,
                            path: edits.path.as_deref().unwrap_or(parts.uri.path()),
                            query: parts.uri.query(),
                        },
                        hit.prefix,
                    );
                    let mut resp = Response::new(body::empty());
                    *resp.status_mut() = r.status;
                    if let Ok(v) = HeaderValue::try_from(location) {
                        resp.headers_mut().insert(header::LOCATION, v);
                    }
                    resp.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                    return Some(resp);
                }
                Filter::RequestMirror(m) => {
                    if !m.sample(rand::rng().random_range(0..100)) {
                        continue;
                    }
                    let Some(client) = active.clients.get(&*m.upstream) else {
                        continue;
                    };
                    let path = edits.path.as_deref().unwrap_or(parts.uri.path());
                    let Some(path_and_query) = join_path_and_query(&m.upstream, path, parts.uri.query())
                    else {
                        continue;
                    };
                    edits.mirrors.push(MirrorCopy {
                        client: client.clone(),
                        method: parts.method.clone(),
                        path_and_query,
                        headers: parts.headers.clone(),
                    });
                }
                Filter::Cors(c) => {
                    let Some(origin) = parts.headers.get(header::ORIGIN) else {
                        continue;
                    };
                    let acrm = parts.headers.get(ACCESS_CONTROL_REQUEST_METHOD);
                    if parts.method == Method::OPTIONS && acrm.is_some() {
                        let mut resp = Response::new(body::empty());
                        *resp.status_mut() = StatusCode::NO_CONTENT;
                        let headers = c.preflight_headers(
                            origin,
                            acrm,
                            parts.headers.get(ACCESS_CONTROL_REQUEST_HEADERS),
                        );
                        for (name, value) in headers {
                            resp.headers_mut().append(name, value);
                        }
                        return Some(resp);
                    }
                    *cors_origin = Some(origin.clone());
                }
            }
        }
        None
    }
}

/// Response-phase filters of one level: header modifiers and CORS headers of actual requests.
fn response_phase(filters: &[Filter], headers: &mut http::HeaderMap, origin: Option<&HeaderValue>) {
    for filter in filters {
        match filter {
            Filter::ResponseHeaderModifier(m) => m.apply(headers),
            Filter::Cors(c) => {
                if let Some(origin) = origin {
                    c.apply_actual_response(origin, headers);
                }
            }
            _ => {}
        }
    }
}

/// Sends a non-upgrade request, bounding the time to response headers (routing.md §8). The clock restarts when
/// the request body has been fully forwarded.
async fn send(
    client: &UpstreamClient,
    req: Request<ProxyBody>,
    timeout: Option<Duration>,
    body_end: Option<oneshot::Receiver<()>>,
) -> Result<Response<ProxyBody>, Outcome> {
    // Pinned once here and awaited through a reference in both arms: awaiting it by value in one arm and
    // through a pin in the other would give this future two slots for it (a kilobyte each) to move per request.
    let fut = client.request(req);
    tokio::pin!(fut);
    let result = match timeout {
        None => fut.await,
        Some(limit) => {
            let deadline = tokio::time::sleep(limit);
            tokio::pin!(deadline);
            let mut body_end = body_end;
            loop {
                tokio::select! {
                    r = &mut fut => break r,
                    () = &mut deadline => return Err(Outcome::Timeout),
                    end = async {
                        match body_end.as_mut() {
                            Some(rx) => rx.await,
                            None => std::future::pending().await,
                        }
                    }, if body_end.is_some() => {
                        body_end = None;
                        if end.is_ok() {
                            deadline.as_mut().reset(tokio::time::Instant::now() + limit);
                        }
                    }
                }
            }
        }
    };
    match result {
        Ok(resp) => Ok(resp),
        Err(e) => {
            tracing::debug!(error = %e, upstream = %client.upstream.authority, "backend request failed");
            Err(Outcome::BadGateway(e.reason()))
        }
    }
}

/// A request body that is already known to be empty needs no wrapper.
fn body_is_empty(body: &ProxyBody) -> bool {
    http_body::Body::is_end_stream(body)
}

/// A channel for "request body fully forwarded", only when the rule has a timeout.
fn timeout_end_signal(rule: &Rule) -> (Option<oneshot::Sender<()>>, Option<oneshot::Receiver<()>>) {
    if rule.timeout.is_some() {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}

/// The raw routing host: the URI authority (absolute-form or HTTP/2 `:authority`), else `Host`.
fn request_host(parts: &Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    }
}

/// The request's scheme for redirects: tunnel transports trust the edge's `X-Forwarded-Proto`.
fn request_scheme(parts: &Parts, ctx: &RequestContext) -> &'static str {
    if ctx.peer.is_none()
        && let Some(v) = parts.headers.get(&X_FORWARDED_PROTO)
    {
        let first = v
            .as_bytes()
            .split(|b| *b == b',')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        if first.eq_ignore_ascii_case(b"https") {
            return "https";
        }
        if first.eq_ignore_ascii_case(b"http") {
            return "http";
        }
    }
    ctx.scheme
}

/// Builds the request sent to the backend from the filtered request (routing.md §7).
#[allow(clippy::too_many_arguments)]
fn build_backend_request(
    parts: &mut Parts,
    body: ProxyBody,
    upstream: &Upstream,
    rewritten_path: Option<&str>,
    forwarded_host: Option<&HeaderValue>,
    ctx: &RequestContext,
    upgrading: bool,
    original_host_honoured: bool,
) -> Option<Request<ProxyBody>> {
    let h2 = upstream.protocol == UpstreamProtocol::H2c;
    let path_and_query =
        if rewritten_path.is_none() && upstream.base_path.is_none() && upstream.base_query.is_none() {
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            let path = rewritten_path.unwrap_or(parts.uri.path());
            join_path_and_query(upstream, path, parts.uri.query())?
        };
    // HTTP/1.1 requests go out in origin form; HTTP/2 carries the Host in `:authority`. The transport dials the
    // upstream whatever the URI says.
    let uri = if !h2 && parts.method != Method::CONNECT {
        Uri::from(path_and_query)
    } else {
        let authority = match (h2, forwarded_host) {
            (true, Some(h)) => {
                Authority::try_from(h.as_bytes()).unwrap_or_else(|_| upstream.authority.clone())
            }
            _ => upstream.authority.clone(),
        };
        let scheme = match upstream.scheme {
            UpstreamScheme::Http => Scheme::HTTP,
            UpstreamScheme::Https => Scheme::HTTPS,
        };
        Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .ok()?
    };

    let mut headers = std::mem::take(&mut parts.headers);
    strip_request_hop_by_hop(&mut headers, upgrading);
    if original_host_honoured {
        headers.remove(&X_ORIGINAL_HOST);
    }
    if let Some(peer) = ctx.peer {
        append_forwarded_for(&mut headers, peer.ip());
    }
    // Issue 3 asks for X-Forwarded-Proto when the client sent none (routing.md §7.2 says not to add it; the
    // issue is the newer requirement). Through the tunnel the edge has always set it already.
    if let http::header::Entry::Vacant(missing) = headers.entry(X_FORWARDED_PROTO) {
        missing.insert(HeaderValue::from_static(ctx.scheme));
    }
    if h2 {
        headers.remove(header::HOST);
    } else if let Some(h) = forwarded_host {
        headers.insert(header::HOST, h.clone());
    }
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    if h2 {
        *req.version_mut() = http::Version::HTTP_2;
    }
    Some(req)
}

/// `base_path + path` joined with exactly one `/`, then the request query plus base-URL parameters the request
/// does not carry (routing.md §7.1).
fn join_path_and_query(upstream: &Upstream, path: &str, query: Option<&str>) -> Option<PathAndQuery> {
    let mut buf = BytesMut::with_capacity(
        path.len() + query.map_or(0, str::len) + upstream.base_path.as_ref().map_or(0, String::len) + 2,
    );
    if let Some(base) = &upstream.base_path {
        buf.put_slice(base.trim_end_matches('/').as_bytes());
        if !path.starts_with('/') {
            buf.put_u8(b'/');
        }
    }
    buf.put_slice(if path.is_empty() { "/" } else { path }.as_bytes());
    let mut has_query = false;
    if let Some(q) = query
        && !q.is_empty()
    {
        buf.put_u8(b'?');
        buf.put_slice(q.as_bytes());
        has_query = true;
    }
    if let Some(base_query) = &upstream.base_query {
        for pair in base_query.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split('=').next().unwrap_or(pair);
            let present =
                query.is_some_and(|q| q.split('&').any(|p| p.split('=').next().unwrap_or(p) == name));
            if !present {
                buf.put_u8(if has_query { b'&' } else { b'?' });
                buf.put_slice(pair.as_bytes());
                has_query = true;
            }
        }
    }
    PathAndQuery::from_maybe_shared(buf.freeze()).ok()
}

/// Trailers-only gRPC reply for unmatched gRPC requests (routing.md §9).
fn grpc_unimplemented() -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from_static("12"));
    h.insert("grpc-message", HeaderValue::from_static("no matching route"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper moves each request's service future into its connection state, so every byte of it is copied per
    /// request. Paths that are rare (dialling a new connection, an upgrade) are boxed so that the common path
    /// stays small; this catches a kilobyte-sized future slipping back in. The bounds leave room for compiler
    /// changes; the sizes in a debug build were 2,944 / 1,832 / 1,312 bytes when written (6,224 / 3,096 / 2,320
    /// before the boxing).
    #[test]
    fn request_futures_stay_small() {
        let state = ProxyState::new(prometheus_client::registry::Registry::default());
        let service = RequestService::new(state, &ProxySettings::loopback());
        let ctx = RequestContext {
            scheme: "http",
            peer: None,
            transport: "test",
        };
        let serve = service.serve(Request::new(body::empty()), ctx);
        let cfg: tunnelgate_route::config::Config = serde_json::from_str(
            r#"{"version":1,"rules":[{"backends":[{"url":"http://127.0.0.1:1","weight":1}]}]}"#,
        )
        .unwrap();
        let table = tunnelgate_route::RouteTable::compile(&cfg).unwrap();
        let client = crate::pool::UpstreamClient::new(table.shared_upstreams()[0].clone());
        let send = send(&client, Request::new(body::empty()), None, None);
        let request = client.request(Request::new(body::empty()));
        for (name, size, bound) in [
            ("RequestService::serve", std::mem::size_of_val(&serve), 4096),
            ("send", std::mem::size_of_val(&send), 2560),
            ("UpstreamClient::request", std::mem::size_of_val(&request), 2048),
        ] {
            assert!(size <= bound, "{name} future is {size} bytes (bound {bound})");
        }
    }
}
