//! The controller's spans leave the process over OTLP: the tunnelgate OTLP tracer provider installed as the global
//! one (as the binary does with `--tracing-enabled`) exports `reconcile` and `config push` spans to a loopback
//! OTLP/HTTP collector while the controller syncs a route to a real proxy against the loopback API server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use support::apiserver::ApiServer;
use support::*;
use tunnelgate_controller::{
    AuthTokenOptions, ConfigPort, Controller, ControllerOptions, ObjectName, ProxyTargets,
};
use tunnelgate_proxy::TracingSettings;
use tunnelgate_testkit::Backend;

/// Loopback OTLP/HTTP collector keeping the decoded spans (with their service name).
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<(String, Span)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let all = spans.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let all = all.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let all = all.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        let mut all = all.lock().unwrap();
                        for rs in export.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| r.attributes.iter())
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| kv.value.as_ref())
                                .and_then(|v| match &v.value {
                                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                all.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
                            }
                        }
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, spans)
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_passes_and_pushes_are_exported_as_spans() {
    let (otlp, spans) = collector().await;
    let pipeline = tunnelgate_proxy::tracer_pipeline(
        &TracingSettings {
            endpoint: Some(format!("http://{otlp}")),
            sample_rate: 1.0,
            export_interval: Some(Duration::from_millis(50)),
        },
        tunnelgate_controller::TRACER_SCOPE,
    )
    .unwrap();
    opentelemetry::global::set_tracer_provider(pipeline.provider().clone());

    let api = ApiServer::start().await;
    let backend = Backend::start("app").await;
    for ns in ["default", "tg"] {
        api.apply(namespace(ns));
    }
    api.apply(gateway_class("tunnelgate", CONTROLLER));
    api.apply(gateway("default", "gw", "tunnelgate"));
    api.apply(service("default", "app"));
    api.apply(endpoint_slice(
        "default",
        "app-1",
        "app",
        "http",
        backend.addr.port(),
        &[("127.0.0.1", true)],
    ));
    api.apply(secret("tg", "proxy-auth", "auth-token", TOKEN));
    let proxy = Proxy::start().await;
    api.apply(proxy.slice("proxy-headless-a", true));
    api.apply(http_route("default", "web", "gw", "app.example.com", "/", "app"));

    let mut opts = ControllerOptions::new(ProxyTargets::Service {
        service: ObjectName::new("tg", "proxy-headless"),
        port: ConfigPort::Name("config-api".into()),
    });
    opts.auth_token = Some(AuthTokenOptions {
        secret: ObjectName::new("tg", "proxy-auth"),
        key: "auth-token".into(),
        generate: false,
    });
    let _controller = Controller::start(api.client(), opts).await.unwrap();
    wait_until("the proxy got the route", Duration::from_secs(10), || async {
        proxy.version() > 0
    })
    .await;

    let target = proxy.config.to_string();
    wait_until(
        "reconcile and push spans exported",
        Duration::from_secs(10),
        || async {
            let spans = spans.lock().unwrap();
            spans.iter().any(|(_, s)| s.name == "reconcile")
                && spans.iter().any(|(_, s)| {
                    s.name == "config push"
                        && str_attr(s, "server.address").as_deref() == Some(target.as_str())
                })
        },
    )
    .await;
    let spans = spans.lock().unwrap().clone();
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "tunnelgate-controller"),
        "{:?}",
        spans.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    let push = spans.iter().find(|(_, s)| s.name == "config push").unwrap();
    assert_eq!(str_attr(&push.1, "tunnelgate.push.result").as_deref(), Some("ok"));
    pipeline.shutdown(Duration::from_secs(5)).await;
}
