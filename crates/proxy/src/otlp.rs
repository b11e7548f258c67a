//! OTLP tracing of proxied requests (routing.md §13): a server span per request whose parent is the W3C
//! `traceparent` the client sent, a client span around the backend call whose id goes to the backend in a fresh
//! `traceparent` (not on upgrades), and batch export over OTLP HTTP/protobuf.
//!
//! Sampling is parent-based: a valid incoming `traceparent` decides (its sampled flag is honoured both ways);
//! a request without one starts a new trace sampled at the configured rate. An unsampled request gets no client
//! span and no `traceparent` of ours: its headers reach the backend as the client sent them.
//!
//! Spans are ended on the request path and queued; a task on the runtime that started the proxy exports them in
//! batches (`export`), sending a request again when the collector's answer allows it (`retry`); nothing on the
//! request path waits for the collector.

use std::borrow::Cow;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, SpanId, TraceId};
use opentelemetry_sdk::trace::SdkTracer;

pub use self::export::{TracerPipeline, tracer_pipeline};
use crate::settings::TracingSettings;

mod export;
mod retry;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const SCOPE: &str = "tunnelgate-proxy";

/// The tracer of a running proxy. Cheap to clone.
#[derive(Clone)]
pub struct RequestTracer {
    tracer: SdkTracer,
    pipeline: TracerPipeline,
}

/// The server span of one sampled request; ended when the response completes.
pub struct ServerSpan {
    span: opentelemetry_sdk::trace::Span,
    context: SpanContext,
    /// A valid `traceparent` came with the request.
    remote_parent: bool,
}

/// The client span around one backend call.
pub struct ClientSpan {
    span: opentelemetry_sdk::trace::Span,
}

/// Tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("invalid OTLP endpoint {0:?}: expected http(s)://host[:port][/path] or host:port")]
    Endpoint(String),
    #[error("OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("OTLP trace exporter TLS: {0}")]
    Tls(#[from] crate::tls::TlsSetupError),
}

impl RequestTracer {
    /// Builds the exporter and the batch processor. Must run inside the tokio runtime that should carry the
    /// exports (the processor task is spawned there).
    pub fn start(settings: &TracingSettings) -> Result<Self, TracingError> {
        let pipeline = tracer_pipeline(settings, SCOPE)?;
        Ok(Self {
            tracer: pipeline.provider().tracer(SCOPE),
            pipeline,
        })
    }

    /// Starts the server span of a request. `None` when the request is not sampled.
    pub fn server_span(&self, parts: &Parts, host: &str, scheme: &'static str) -> Option<Box<ServerSpan>> {
        let parent = parent_context(&parts.headers);
        let remote_parent = parent.has_active_span();
        let builder = self
            .tracer
            .span_builder(span_name(&parts.method))
            .with_kind(SpanKind::Server);
        let mut span = self.tracer.build_with_context(builder, &parent);
        let context = span.span_context().clone();
        if !context.is_sampled() {
            return None;
        }
        // Set after the sampling decision so that an unsampled request allocates none of them.
        span.set_attributes([
            KeyValue::new("http.request.method", method_attr(&parts.method)),
            KeyValue::new("url.path", parts.uri.path().to_owned()),
            KeyValue::new("url.scheme", scheme),
            KeyValue::new("server.address", host.to_owned()),
        ]);
        Some(Box::new(ServerSpan {
            span,
            context,
            remote_parent,
        }))
    }

    /// Exports what is queued and stops the processor, waiting at most `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        let _ = self.pipeline.shutdown(limit).await;
    }
}

impl ServerSpan {
    pub fn trace_id(&self) -> TraceId {
        self.context.trace_id()
    }

    pub fn span_id(&self) -> SpanId {
        self.context.span_id()
    }

    /// Starts the client span of the backend call and writes its `traceparent` into the backend request. A
    /// `tracestate` is only meaningful with the trace it came with: it is dropped when this is a new trace.
    pub fn client_span(
        &self,
        tracer: &RequestTracer,
        method: &Method,
        upstream: &http::uri::Authority,
        headers: &mut HeaderMap,
    ) -> Box<ClientSpan> {
        let mut attributes = Vec::with_capacity(3);
        attributes.push(KeyValue::new("http.request.method", method_attr(method)));
        attributes.push(KeyValue::new("server.address", upstream.host().to_owned()));
        if let Some(port) = upstream.port_u16() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let builder = tracer
            .tracer
            .span_builder(span_name(method))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes);
        let parent = Context::new().with_remote_span_context(self.context.clone());
        let span = tracer.tracer.build_with_context(builder, &parent);
        let sc = span.span_context();
        let value = format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        );
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(TRACEPARENT, value);
        }
        if !self.remote_parent {
            headers.remove(TRACESTATE);
        }
        Box::new(ClientSpan { span })
    }

    /// Ends the span with the status sent to the client; `aborted` when the response did not complete.
    pub fn end(mut self: Box<Self>, status: u16, aborted: bool) {
        self.span
            .set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if aborted {
            self.span.set_attribute(KeyValue::new("error.type", "aborted"));
            self.span.set_status(Status::error("response aborted"));
        } else if status >= 500 {
            self.span
                .set_attribute(KeyValue::new("error.type", status.to_string()));
            self.span.set_status(Status::error(""));
        }
        self.span.end();
    }
}

impl ClientSpan {
    /// Ends the span with the backend's status.
    pub fn end_with_status(mut self: Box<Self>, status: u16) {
        self.span
            .set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            self.span
                .set_attribute(KeyValue::new("error.type", status.to_string()));
            self.span.set_status(Status::error(""));
        }
        self.span.end();
    }

    /// Ends the span of a backend call that produced no response.
    pub fn end_with_error(mut self: Box<Self>, error_type: &'static str) {
        self.span.set_attribute(KeyValue::new("error.type", error_type));
        self.span.set_status(Status::error(error_type));
        self.span.end();
    }
}

/// `PROXY_TRACING_ENDPOINT` to the URL the exporter posts to. A base URL (no path) gets the OTLP traces path
/// appended, as the standard `OTEL_EXPORTER_OTLP_ENDPOINT` does; a bare `host:port` means `http://host:port`.
pub fn traces_url(endpoint: &str) -> Result<String, TracingError> {
    let endpoint = endpoint.trim();
    let full: Cow<'_, str> = if endpoint.contains("://") {
        Cow::Borrowed(endpoint)
    } else {
        Cow::Owned(format!("http://{endpoint}"))
    };
    let uri: http::Uri = full
        .parse()
        .map_err(|_| TracingError::Endpoint(endpoint.to_owned()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(TracingError::Endpoint(endpoint.to_owned()));
    }
    match uri.path() {
        "" | "/" => Ok(format!(
            "{}://{}/v1/traces",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str())
        )),
        _ => Ok(full.into_owned()),
    }
}

/// The remote parent from `traceparent` (and `tracestate`); an empty context when absent or invalid.
fn parent_context(headers: &HeaderMap) -> Context {
    let Some(parent) = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()) else {
        return Context::new();
    };
    let Some(mut sc) = parse_traceparent(parent) else {
        return Context::new();
    };
    if let Some(state) = headers
        .get(&TRACESTATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceState>().ok())
    {
        sc = SpanContext::new(sc.trace_id(), sc.span_id(), sc.trace_flags(), true, state);
    }
    Context::new().with_remote_span_context(sc)
}

/// W3C Trace Context level 1 `traceparent`: `version-traceid-parentid-flags`, all lowercase hex. A future
/// version may append fields after the flags; version `ff`, all-zero ids and malformed values are invalid.
fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let value = value.trim();
    let mut fields = value.split('-');
    let version = fields.next()?;
    let trace_id = fields.next()?;
    let span_id = fields.next()?;
    let flags = fields.next()?;
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if version.len() != 2 || !lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && fields.next().is_some() {
        return None;
    }
    if trace_id.len() != 32 || span_id.len() != 16 || flags.len() != 2 {
        return None;
    }
    if !lower_hex(trace_id) || !lower_hex(span_id) || !lower_hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// The semantic conventions name HTTP spans after the method; methods outside the registry become `HTTP`.
fn span_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "HTTP",
    }
}

/// `http.request.method`: a known method, else `_OTHER` (the conventions' bound on cardinality).
fn method_attr(method: &Method) -> &'static str {
    match span_name(method) {
        "HTTP" => "_OTHER",
        known => known,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing_follows_the_w3c_rules() {
        let ok = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(ok.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(ok.span_id().to_string(), "b7ad6b7169203331");
        assert!(ok.is_sampled());
        assert!(ok.is_remote());
        let unsampled = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
        assert!(!unsampled.is_sampled());
        // A later version may carry more fields; version 00 may not.
        assert!(parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz").is_some());
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn endpoint_gets_the_traces_path_only_when_it_has_none() {
        assert_eq!(traces_url("http://c:4318").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(traces_url("https://c:4318/").unwrap(), "https://c:4318/v1/traces");
        assert_eq!(traces_url("c:4318").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c/otlp/v1/traces").unwrap(),
            "http://c/otlp/v1/traces"
        );
        assert!(traces_url("ftp://c:21").is_err());
        assert!(traces_url("http://").is_err());
        assert!(traces_url("http://bad host").is_err());
    }

    #[test]
    fn unknown_methods_keep_cardinality_bounded() {
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(span_name(&custom), "HTTP");
        assert_eq!(method_attr(&custom), "_OTHER");
        assert_eq!(method_attr(&Method::GET), "GET");
    }
}
