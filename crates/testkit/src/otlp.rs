//! A loopback OTLP/HTTP trace collector: it accepts `POST /v1/traces` with a protobuf body, decodes it with the
//! `opentelemetry-proto` types and keeps every span with its resource's `service.name`. Other paths get a 404 and
//! bodies that do not decode a 400, so an exporter that sends the wrong thing fails the test that waits for spans.
//! It can be told to refuse the next requests ([`OtlpCollector::refuse_next`]), to test an exporter's retries.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// How long [`OtlpCollector::wait_spans`] waits at most.
const WAIT: Duration = Duration::from_secs(10);

/// The collector; stops listening when dropped.
pub struct OtlpCollector {
    pub addr: SocketAddr,
    /// (service.name, span) in arrival order.
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    /// `METHOD PATH CONTENT-TYPE` of every request received.
    posts: Arc<Mutex<Vec<String>>>,
    /// The refusals to come, and the spans each request carried, refused or not.
    refusals: Arc<Mutex<Refusals>>,
    task: tokio::task::JoinHandle<()>,
}

/// The answer to the next requests instead of taking their spans.
#[derive(Debug, Default)]
struct Refusals {
    left: usize,
    status: u16,
    retry_after: Option<String>,
    /// Spans in the body of every request to `/v1/traces`, in arrival order.
    carried: Vec<usize>,
}

impl OtlpCollector {
    pub async fn start() -> OtlpCollector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP collector");
        let addr = listener.local_addr().expect("collector address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(Mutex::new(Refusals::default()));
        let (s, p, r) = (spans.clone(), posts.clone(), refusals.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (spans, posts, refusals) = (s.clone(), p.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (spans, posts, refusals) = (spans.clone(), posts.clone(), refusals.clone());
                        async move { receive(req, &spans, &posts, &refusals).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        OtlpCollector {
            addr,
            spans,
            posts,
            refusals,
            task,
        }
    }

    /// Answers the next `n` requests (from now) with `status` and, when given, a `Retry-After` header, and drops
    /// their spans; `status` 0 closes the connection without an answer. `usize::MAX` refuses for good.
    pub fn refuse_next(&self, n: usize, status: u16, retry_after: Option<&str>) {
        let mut refusals = self.refusals.lock().unwrap();
        refusals.left = n;
        refusals.status = status;
        refusals.retry_after = retry_after.map(str::to_owned);
    }

    /// How many spans each request to `/v1/traces` carried, refused or not: a batch sent again shows up twice.
    pub fn spans_per_request(&self) -> Vec<usize> {
        self.refusals.lock().unwrap().carried.clone()
    }

    /// `http://ADDR`, the base URL an exporter appends `/v1/traces` to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans_by_service().into_iter().map(|(_, s)| s).collect()
    }

    /// The spans received so far, each with its resource's `service.name` (empty when it had none).
    pub fn spans_by_service(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }

    /// `METHOD PATH CONTENT-TYPE` of every request received.
    pub fn posts(&self) -> Vec<String> {
        self.posts.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, at most 10 s; returns them.
    pub async fn wait_posts(&self, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let posts = self.posts();
            if posts.len() >= n || tokio::time::Instant::now() >= deadline {
                return posts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The spans once at least `n` arrived, or what arrived within 10 s.
    pub async fn wait_spans(&self, n: usize) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let spans = self.spans();
            if spans.len() >= n || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    req: Request<hyper::body::Incoming>,
    spans: &Mutex<Vec<(String, Span)>>,
    posts: &Mutex<Vec<String>>,
    refusals: &Mutex<Refusals>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_owned();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    posts
        .lock()
        .unwrap()
        .push(format!("{} {path} {content_type}", req.method()));
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let decoded = match &body {
        Ok(body) if path == "/v1/traces" => Some(ExportTraceServiceRequest::decode(body.clone())),
        _ => None,
    };
    let refusal = {
        let mut refusals = refusals.lock().unwrap();
        if let Some(Ok(export)) = &decoded {
            let n = export
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum();
            refusals.carried.push(n);
        }
        (refusals.left > 0).then(|| {
            refusals.left -= 1;
            (refusals.status, refusals.retry_after.clone())
        })
    };
    if let Some((status, retry_after)) = refusal {
        if status == 0 {
            // hyper closes a connection whose service fails.
            return Err(std::io::Error::other("refused without an answer"));
        }
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::from_u16(status).expect("a status code");
        if let Some(v) = retry_after {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_str(&v).expect("a Retry-After value"),
            );
        }
        return Ok(resp);
    }
    let status = match decoded {
        Some(decoded) => match decoded {
            Ok(export) => {
                let mut all = spans.lock().unwrap();
                for rs in export.resource_spans {
                    let service = rs
                        .resource
                        .as_ref()
                        .and_then(|r| string_value(&r.attributes, "service.name"))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        all.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
                    }
                }
                StatusCode::OK
            }
            Err(_) => StatusCode::BAD_REQUEST,
        },
        None => StatusCode::NOT_FOUND,
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(resp)
}

/// A span's string attribute.
pub fn str_attr(span: &Span, key: &str) -> Option<String> {
    string_value(&span.attributes, key)
}

/// A span's integer attribute.
pub fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(&span.attributes, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// Trace and span ids as the lower-case hex of `traceparent`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_value(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}
