//! Full rebuild cost (`controller.md` §1 targets 5,000 routes in under 100 ms): 5,000 HTTPRoutes in 50
//! namespaces, two rules each, every backend a Service with a three-endpoint EndpointSlice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write;

use criterion::{Criterion, criterion_group, criterion_main};
use tunnelgate_gateway::{Snapshot, TranslateOptions, load_yaml_documents, translate};

fn snapshot(routes: usize, namespaces: usize) -> Snapshot {
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: tg}\n\
         spec: {controllerName: tunnelgate.dev/gateway-controller}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra}\n\
         spec: {gatewayClassName: tg, listeners: [{name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\", \
         allowedRoutes: {namespaces: {from: All}}}]}\n",
    );
    for n in 0..namespaces {
        write!(
            text,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: ns{n}}}\n\
             spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: app-1, namespace: ns{n}, labels: {{kubernetes.io/service-name: app}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\n\
             endpoints: [{{addresses: [10.{n}.0.1]}}, {{addresses: [10.{n}.0.2]}}, {{addresses: [10.{n}.0.3]}}]\n"
        )
        .unwrap();
    }
    for r in 0..routes {
        let n = r % namespaces;
        write!(
            text,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{r}, namespace: ns{n}}}\n\
             spec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [r{r}.example.com]\n  rules:\n\
             \x20 - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-tenant, value: t{r}}}]}}]\n\
             \x20   filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-route, value: r{r}}}]}}}}]\n\
             \x20   backendRefs: [{{name: app, port: 80, weight: 3}}, {{name: missing, port: 80, weight: 1}}]\n\
             \x20 - matches: [{{path: {{type: RegularExpression, value: \"^/items/[0-9]+$\"}}}}]\n\
             \x20   backendRefs: [{{name: app, port: 80}}]\n"
        )
        .unwrap();
    }
    load_yaml_documents(&text).unwrap()
}

fn bench(c: &mut Criterion) {
    let snapshot = snapshot(5_000, 50);
    let opts = TranslateOptions::default();
    let translation = translate(&snapshot, &opts);
    assert_eq!(translation.config.rules.len(), 10_000);
    c.bench_function("translate_5000_routes", |b| {
        b.iter(|| translate(&snapshot, &opts))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
