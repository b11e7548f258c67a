//! The controller's spans leave the process over OTLP: the tunnelgate OTLP tracer provider installed as the global
//! one (as the binary does with `--tracing-enabled`) exports `reconcile` and `config push` spans to a loopback
//! OTLP/HTTP collector while the controller syncs a route to a real proxy against the loopback API server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::*;
use tunnelgate_controller::{
    AuthTokenOptions, ConfigPort, Controller, ControllerOptions, ObjectName, ProxyTargets,
};
use tunnelgate_proxy::TracingSettings;
use tunnelgate_testkit::otlp::{OtlpCollector, str_attr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_passes_and_pushes_are_exported_as_spans() {
    let otlp = OtlpCollector::start().await;
    let pipeline = tunnelgate_proxy::tracer_pipeline(
        &TracingSettings {
            endpoint: Some(otlp.endpoint()),
            sample_rate: 1.0,
            export_interval: Some(Duration::from_millis(50)),
        },
        tunnelgate_controller::TRACER_SCOPE,
    )
    .unwrap();
    opentelemetry::global::set_tracer_provider(pipeline.provider().clone());

    let (Cluster { api, .. }, proxy) = cluster_with_web_route().await;

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
            let spans = otlp.spans_by_service();
            spans.iter().any(|(_, s)| s.name == "reconcile")
                && spans.iter().any(|(_, s)| {
                    s.name == "config push"
                        && str_attr(s, "server.address").as_deref() == Some(target.as_str())
                })
        },
    )
    .await;
    let spans = otlp.spans_by_service();
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
