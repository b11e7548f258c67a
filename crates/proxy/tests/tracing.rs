//! OTLP tracing (routing.md §13) end to end: the proxy exports to a loopback OTLP/HTTP collector that decodes the
//! protobuf bodies, and a real backend records the `traceparent` it received.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::Duration;

use http::Method;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tunnelgate_proxy::{ProxySettings, TracingSettings};
use tunnelgate_testkit::otlp::{OtlpCollector, hex, int_attr, str_attr};
use tunnelgate_testkit::{Backend, Client, Recorded, empty};

use harness::{Proxy, single_route};

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const WAIT: Duration = Duration::from_secs(10);

fn kind(span: &Span, kind: SpanKind) -> bool {
    span.kind == kind as i32
}

/// The one exported span of `wanted` kind.
fn span_of(spans: &[Span], wanted: SpanKind) -> &Span {
    spans
        .iter()
        .find(|s| kind(s, wanted))
        .unwrap_or_else(|| panic!("no {wanted:?} span in {spans:?}"))
}

/// `00-trace-span-flags` split into its fields.
/// The fields of the `traceparent` the proxy sent with a request the backend recorded.
fn injected_traceparent(request: &Recorded) -> (String, String, String) {
    let value = request
        .headers
        .get("traceparent")
        .expect("traceparent injected")
        .to_str()
        .unwrap();
    traceparent_fields(value)
}

fn traceparent_fields(value: &str) -> (String, String, String) {
    let f: Vec<&str> = value.split('-').collect();
    assert_eq!(f.len(), 4, "traceparent {value:?}");
    assert_eq!(f[0], "00");
    (f[1].to_owned(), f[2].to_owned(), f[3].to_owned())
}

async fn traced_proxy(collector: &OtlpCollector, sample_rate: f64, export_interval: Duration) -> Proxy {
    let mut settings = ProxySettings::loopback();
    settings.tracing = Some(TracingSettings {
        endpoint: Some(collector.endpoint()),
        sample_rate,
        export_interval: Some(export_interval),
    });
    Proxy::start_with(settings).await
}

/// A collector, a backend, and a proxy exporting to the collector every 50 ms that routes `app.example` to the
/// backend.
async fn traced_setup(sample_rate: f64) -> (OtlpCollector, Backend, Proxy) {
    let collector = OtlpCollector::start().await;
    let backend = Backend::start("b").await;
    let proxy = traced_proxy(&collector, sample_rate, Duration::from_millis(50)).await;
    proxy.push(single_route(1, "app.example", &backend.url())).await;
    (collector, backend, proxy)
}

async fn get_with(proxy: &Proxy, headers: &[(&str, &str)]) -> u16 {
    let mut req = Client::request(Method::GET, proxy.data, "app.example", "/items/7?x=1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let reply = proxy.client.send(req.body(empty()).unwrap()).await.unwrap();
    reply.status.as_u16()
}

#[tokio::test]
async fn sampled_incoming_parent_continues_the_trace_through_server_and_client_spans() {
    let (collector, backend, proxy) = traced_setup(1.0).await;

    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let status = get_with(
        &proxy,
        &[("traceparent", &incoming), ("tracestate", "vendor=abc")],
    )
    .await;
    assert_eq!(status, 200);

    let seen = backend.recorded();
    let (trace, parent_id, flags) = injected_traceparent(&seen[0]);
    assert_eq!(trace, PARENT_TRACE);
    assert_ne!(
        parent_id, PARENT_SPAN,
        "the backend's parent must be the proxy's client span"
    );
    assert_eq!(flags, "01");
    assert_eq!(seen[0].headers.get("tracestate").unwrap(), "vendor=abc");

    let spans = collector.wait_spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = span_of(&spans, SpanKind::Server);
    let client = span_of(&spans, SpanKind::Client);
    assert_eq!(hex(&server.trace_id), PARENT_TRACE);
    assert_eq!(hex(&server.parent_span_id), PARENT_SPAN);
    assert_eq!(server.trace_state, "vendor=abc");
    assert_eq!(hex(&client.trace_id), PARENT_TRACE);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(hex(&client.span_id), parent_id);
    assert_eq!(server.name, "GET");
    assert_eq!(int_attr(server, "http.response.status_code"), Some(200));
    assert_eq!(int_attr(client, "http.response.status_code"), Some(200));
    assert_eq!(str_attr(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(str_attr(server, "url.path").as_deref(), Some("/items/7"));
    assert_eq!(str_attr(server, "server.address").as_deref(), Some("app.example"));
    assert_eq!(str_attr(client, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        int_attr(client, "server.port"),
        Some(i64::from(backend.addr.port()))
    );
    let posts = collector.posts();
    assert!(
        posts
            .iter()
            .all(|p| p == "POST /v1/traces application/x-protobuf"),
        "{posts:?}"
    );
    proxy.handle.shutdown().await;
}

#[tokio::test]
async fn request_without_traceparent_starts_a_new_trace() {
    let (collector, backend, proxy) = traced_setup(1.0).await;

    assert_eq!(get_with(&proxy, &[("tracestate", "stale=1")]).await, 200);
    let seen = backend.recorded();
    let (trace, parent_id, flags) = injected_traceparent(&seen[0]);
    assert_eq!(flags, "01");
    assert!(
        seen[0].headers.get("tracestate").is_none(),
        "a tracestate without its trace is not forwarded into a new trace"
    );

    let spans = collector.wait_spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = span_of(&spans, SpanKind::Server);
    let client = span_of(&spans, SpanKind::Client);
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(hex(&server.trace_id), trace);
    assert_eq!(hex(&client.span_id), parent_id);
    proxy.handle.shutdown().await;
}

#[tokio::test]
async fn backend_failure_is_recorded_as_an_error_on_both_spans() {
    let collector = OtlpCollector::start().await;
    let proxy = traced_proxy(&collector, 1.0, Duration::from_millis(50)).await;
    // Nothing listens there: the dial fails.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    proxy.push(single_route(1, "app.example", &dead)).await;

    assert_eq!(get_with(&proxy, &[]).await, 502);
    let spans = collector.wait_spans(2).await;
    let server = span_of(&spans, SpanKind::Server);
    let client = span_of(&spans, SpanKind::Client);
    assert_eq!(int_attr(server, "http.response.status_code"), Some(502));
    assert_eq!(str_attr(server, "error.type").as_deref(), Some("502"));
    assert_eq!(str_attr(client, "error.type").as_deref(), Some("dial"));
    assert_eq!(
        client.status.as_ref().map(|s| s.code),
        Some(2),
        "STATUS_CODE_ERROR"
    );
    proxy.handle.shutdown().await;
}

#[tokio::test]
async fn rate_zero_samples_no_new_trace_and_injects_nothing() {
    let (collector, backend, proxy) = traced_setup(0.0).await;

    for _ in 0..5 {
        assert_eq!(get_with(&proxy, &[]).await, 200);
    }
    // An unsampled parent is honoured too: the client's header reaches the backend untouched.
    let unsampled = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00");
    assert_eq!(get_with(&proxy, &[("traceparent", &unsampled)]).await, 200);
    let seen = backend.recorded();
    assert_eq!(seen.len(), 6);
    for r in &seen[..5] {
        assert!(r.headers.get("traceparent").is_none(), "{:?}", r.headers);
    }
    assert_eq!(seen[5].headers.get("traceparent").unwrap(), unsampled.as_str());

    // Shutdown flushes whatever is queued: still nothing.
    proxy.handle.shutdown().await;
    assert!(collector.spans().is_empty(), "{:?}", collector.spans());
}

#[tokio::test]
async fn rate_zero_still_follows_a_sampled_parent() {
    let (collector, _backend, proxy) = traced_setup(0.0).await;

    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    assert_eq!(get_with(&proxy, &[("traceparent", &incoming)]).await, 200);
    let spans = collector.wait_spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(spans.iter().all(|s| hex(&s.trace_id) == PARENT_TRACE));
    proxy.handle.shutdown().await;
}

#[tokio::test]
async fn shutdown_exports_spans_still_queued() {
    let collector = OtlpCollector::start().await;
    let backend = Backend::start("b").await;
    // The schedule alone would not export within the test.
    let proxy = traced_proxy(&collector, 1.0, Duration::from_secs(600)).await;
    proxy.push(single_route(1, "app.example", &backend.url())).await;

    assert_eq!(get_with(&proxy, &[]).await, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(collector.spans().is_empty(), "exported before shutdown");
    tokio::time::timeout(WAIT, proxy.handle.shutdown())
        .await
        .expect("shutdown is bounded");
    assert_eq!(collector.spans().len(), 2);
}

#[tokio::test]
async fn disabled_tracing_leaves_trace_headers_alone() {
    let backend = Backend::start("b").await;
    let proxy = Proxy::start().await;
    proxy.push(single_route(1, "app.example", &backend.url())).await;

    assert_eq!(get_with(&proxy, &[]).await, 200);
    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    assert_eq!(get_with(&proxy, &[("traceparent", &incoming)]).await, 200);
    let seen = backend.recorded();
    assert!(seen[0].headers.get("traceparent").is_none());
    assert_eq!(seen[1].headers.get("traceparent").unwrap(), incoming.as_str());
}

#[tokio::test]
async fn upgrade_requests_get_a_server_span_but_no_injected_traceparent() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let (collector, backend, proxy) = traced_setup(1.0).await;

    let mut req = format!("ws://{}/ws", proxy.data).into_client_request().unwrap();
    req.headers_mut().insert("host", "app.example".parse().unwrap());
    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    req.headers_mut().insert("traceparent", incoming.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws.send("ping".into()).await.unwrap();
    let _ = tokio::time::timeout(WAIT, ws.next()).await;
    drop(ws);

    let spans = collector.wait_spans(1).await;
    let server = span_of(&spans, SpanKind::Server);
    assert_eq!(hex(&server.parent_span_id), PARENT_SPAN);
    assert_eq!(int_attr(server, "http.response.status_code"), Some(101));
    assert!(!spans.iter().any(|s| kind(s, SpanKind::Client)), "{spans:?}");
    let seen = backend.recorded();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("traceparent").unwrap(),
        incoming.as_str(),
        "the client's header passes through unchanged"
    );
    proxy.handle.shutdown().await;
}

// Export failures, with the exporter's own retry policy: waits of about 1 s, 2 s, 4 s (each between half and all of
// it), `Retry-After` honoured up to 10 s, 5 attempts per batch. The two spans of a request may go out in one batch
// or, when an export falls between their ends, in two: the assertions hold either way.

#[tokio::test]
async fn spans_reach_a_collector_that_answered_503_twice() {
    let (collector, _backend, proxy) = traced_setup(1.0).await;
    collector.refuse_next(2, 503, None);

    assert_eq!(get_with(&proxy, &[]).await, 200);
    let spans = collector.wait_spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    proxy.handle.shutdown().await;
    assert_eq!(collector.spans().len(), 2, "each span arrives once");
    assert!(collector.posts().len() >= 3, "{:?}", collector.posts());
}

#[tokio::test]
async fn a_400_answer_drops_the_batch_without_a_retry() {
    let (collector, _backend, proxy) = traced_setup(1.0).await;
    collector.refuse_next(1, 400, None);

    assert_eq!(get_with(&proxy, &[]).await, 200);
    collector.wait_posts(1).await;
    // Longer than the first wait before a retry could be.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.handle.shutdown().await;
    let sent = collector.spans_per_request();
    assert_eq!(sent.iter().sum::<usize>(), 2, "each span sent once: {sent:?}");
    assert_eq!(collector.spans().len(), 2 - sent[0], "the refused batch is lost");
}

#[tokio::test]
async fn shutdown_with_a_collector_that_keeps_answering_503_tries_once_more_and_returns() {
    let (collector, _backend, proxy) = traced_setup(1.0).await;
    // Longer than the shutdown's 5 s flush limit: waiting it out would leave the flush unfinished.
    collector.refuse_next(usize::MAX, 503, Some("8"));

    assert_eq!(get_with(&proxy, &[]).await, 200);
    collector.wait_posts(1).await;
    tokio::time::timeout(WAIT, proxy.handle.shutdown())
        .await
        .expect("shutdown is bounded");
    let sent = collector.spans_per_request();
    assert!(
        sent.len() >= 2 && sent.iter().sum::<usize>() >= 3,
        "shutdown cuts the wait short with one last attempt: {sent:?}"
    );
    assert!(collector.spans().is_empty());
}
