//! Full rebuild cost (`controller.md` §1 targets 5,000 routes in under 100 ms), in the controller's steady state:
//! every object already carries the status of the previous sync, as it does in the informer caches.
//!
//! The cluster: 4 Gateways with 3 listeners each (HTTP and HTTPS on a wildcard zone, an HTTP listener for
//! selected namespaces), 100 labelled namespaces with 5 Services each (one EndpointSlice of 3 ready and 1
//! unready endpoint per Service), a shared namespace whose Service half of the namespaces may use through
//! ReferenceGrants, and 5,000 HTTPRoutes with 2 hostnames and 3 rules each (header match and header modifier,
//! weighted split; exact or regex path; URL rewrite), a fifth of them attached to two Gateways.
//!
//! `compile_translated_document` times the proxy's compiler on the translated document alone: `translate` runs
//! it once to validate the document, so that share of `translate_5000_routes` belongs to `tunnelgate-route`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tunnelgate_gateway::{Snapshot, TranslateOptions, load_yaml_documents, translate};

const GATEWAYS: usize = 4;
const NAMESPACES: usize = 100;
const SERVICES: usize = 5;
const ROUTES: usize = 5_000;

fn snapshot() -> Snapshot {
    load_yaml_documents(&cluster_yaml()).unwrap()
}

fn cluster_yaml() -> String {
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: tg}\n\
         spec: {controllerName: tunnelgate.dev/gateway-controller}\n",
    );
    for g in 0..GATEWAYS {
        write!(
            text,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw{g}, namespace: infra}}\n\
             spec:\n  gatewayClassName: tg\n  listeners:\n\
             \x20 - {{name: http, port: 80, protocol: HTTP, hostname: \"*.zone{g}.example.com\", allowedRoutes: {{namespaces: {{from: All}}}}}}\n\
             \x20 - {{name: https, port: 443, protocol: HTTPS, hostname: \"*.zone{g}.example.com\", \
             tls: {{certificateRefs: [{{name: zone{g}-cert}}]}}, allowedRoutes: {{namespaces: {{from: All}}}}}}\n\
             \x20 - {{name: internal, port: 8080, protocol: HTTP, hostname: \"*.internal.example.com\", \
             allowedRoutes: {{namespaces: {{from: Selector, selector: {{matchLabels: {{tier: internal}}}}}}}}}}\n"
        )
        .unwrap();
    }
    write!(
        text,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: auth, namespace: shared}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: auth-1, namespace: shared, labels: {{kubernetes.io/service-name: auth}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 9000}}]\n\
         endpoints: [{{addresses: [10.255.0.1]}}, {{addresses: [10.255.0.2]}}]\n"
    )
    .unwrap();
    for n in 0..NAMESPACES {
        let tier = if n % 3 == 0 { "internal" } else { "public" };
        write!(
            text,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{tier: {tier}}}}}\n"
        )
        .unwrap();
        if n % 2 == 0 {
            write!(
                text,
                "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
                 metadata: {{name: from-ns{n}, namespace: shared}}\n\
                 spec: {{from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: ns{n}}}], \
                 to: [{{group: \"\", kind: Service, name: auth}}]}}\n"
            )
            .unwrap();
        }
        for s in 0..SERVICES {
            write!(
                text,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}, namespace: ns{n}}}\n\
                 spec: {{ports: [{{name: http, port: 80}}, {{name: metrics, port: 9090}}]}}\n---\n\
                 apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: svc{s}-a, namespace: ns{n}, labels: {{kubernetes.io/service-name: svc{s}}}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: metrics, port: 9090}}]\n\
                 endpoints: [{{addresses: [10.{n}.{s}.1]}}, {{addresses: [10.{n}.{s}.2]}}, {{addresses: [10.{n}.{s}.3]}}, \
                 {{addresses: [10.{n}.{s}.4], conditions: {{ready: false}}}}]\n"
            )
            .unwrap();
        }
    }
    for r in 0..ROUTES {
        let n = r % NAMESPACES;
        let g = r % GATEWAYS;
        let s = r % SERVICES;
        let (s1, s2) = ((r + 1) % SERVICES, (r + 2) % SERVICES);
        let mut parents = format!("[{{name: gw{g}, namespace: infra}}");
        if r % 5 == 0 {
            write!(
                parents,
                ", {{name: gw{}, namespace: infra, sectionName: http}}",
                (g + 1) % GATEWAYS
            )
            .unwrap();
        }
        parents.push(']');
        let second = if r % 10 == 0 {
            format!(
                "{{path: {{type: RegularExpression, value: \"^/items/[0-9]{{{}}}$\"}}}}",
                r % 7 + 1
            )
        } else {
            "{path: {type: Exact, value: /healthz}}".to_owned()
        };
        let second_backends = if r % 10 == 0 {
            format!("[{{name: svc{s}, port: 80}}, {{name: auth, namespace: shared, port: 80, weight: 0}}]")
        } else {
            format!("[{{name: svc{s}, port: 80}}]")
        };
        write!(
            text,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: r{r}, namespace: ns{n}, creationTimestamp: \"2026-01-01T00:{:02}:{:02}Z\"}}\n\
             spec:\n  parentRefs: {parents}\n  hostnames: [r{r}.zone{g}.example.com, www-r{r}.zone{g}.example.com]\n  rules:\n\
             \x20 - matches: [{{path: {{type: PathPrefix, value: /api/v{}}}, headers: [{{name: x-tenant, value: t{r}}}]}}]\n\
             \x20   filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-route, value: r{r}}}]}}}}]\n\
             \x20   backendRefs: [{{name: svc{s}, port: 80, weight: 90}}, {{name: svc{s1}, port: 80, weight: 10}}]\n\
             \x20 - matches: [{second}]\n\
             \x20   backendRefs: {second_backends}\n\
             \x20 - matches: [{{path: {{type: PathPrefix, value: /static}}}}]\n\
             \x20   filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /assets}}}}}}]\n\
             \x20   backendRefs: [{{name: svc{s2}, port: 80}}]\n",
            (r / 60) % 60,
            r % 60,
            r % 3
        )
        .unwrap();
    }
    text
}

/// Writes the status of one translation back into the objects, as the API server would after a sync.
fn with_status(mut snapshot: Snapshot, opts: &TranslateOptions) -> Snapshot {
    let translation = translate(&snapshot, opts);
    let mut statuses: HashMap<(String, Option<String>, String), serde_json::Value> = translation
        .statuses
        .into_iter()
        .map(|s| ((s.kind, s.namespace, s.name), s.status))
        .collect();
    let mut take = |kind: &str, meta: &ObjectMeta| {
        statuses
            .remove(&(
                kind.to_owned(),
                meta.namespace.clone(),
                meta.name.clone().unwrap(),
            ))
            .map(|s| serde_json::from_value(s).unwrap())
    };
    for route in &mut snapshot.http_routes {
        let route = Arc::make_mut(route);
        route.status = take("HTTPRoute", &route.metadata).map(|s| serde_json::from_value(s).unwrap());
    }
    for gateway in &mut snapshot.gateways {
        let gateway = Arc::make_mut(gateway);
        gateway.status = take("Gateway", &gateway.metadata).map(|s| serde_json::from_value(s).unwrap());
    }
    snapshot
}

fn bench(c: &mut Criterion) {
    let opts = TranslateOptions {
        config_acknowledged: true,
        ..TranslateOptions::default()
    };
    let snapshot = with_status(snapshot(), &opts);
    let translation = translate(&snapshot, &opts);
    // Every route binds; only the routes of namespaces without a grant lose their weight-0 shared backend.
    assert_eq!(translation.config.rules.len(), ROUTES * 3);
    assert_eq!(translation.statuses.len(), 1 + GATEWAYS + ROUTES);
    c.bench_function("translate_5000_routes", |b| {
        b.iter(|| translate(&snapshot, &opts))
    });
    c.bench_function("compile_translated_document", |b| {
        b.iter(|| tunnelgate_route::RouteTable::compile(&translation.config).is_ok())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
