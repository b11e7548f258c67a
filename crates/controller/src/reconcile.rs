//! The sync: one reconcile of everything, in the kube-rs `reconcile(Arc<Ctx>) -> Result<Action>` /
//! `error_policy` shape, keyed by the single "sync" key of controller.md §1 rather than by object.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::reflector::ObjectRef;
use opentelemetry::KeyValue;
use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{Span as _, Status, Tracer as _};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tunnelgate_gateway::{ObjectEvent, ObjectStatus, Snapshot, TranslateOptions, translate};

use crate::Error;
use crate::cloudflare::sync::Link as CloudflareLink;
use crate::cloudflare::tunnel_ingress;
use crate::debounce::{Debouncer, Trigger};
use crate::discovery::{targets_from_slices, targets_from_urls};
use crate::events::EventLog;
use crate::finalizer;
use crate::metrics::{Metrics, StatusLabel, TypeValue};
use crate::options::{ControllerOptions, ObjectName, ProxyTargets};
use crate::push::Pusher;
use crate::status;
use crate::watch::Stores;

/// Status writes in flight at once.
const PARALLEL_STATUS_WRITES: usize = 8;

/// What the sync loop does after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// Run again after this long even without a change.
    pub requeue_after: Option<Duration>,
}

impl Action {
    pub fn await_change() -> Self {
        Self { requeue_after: None }
    }

    pub fn requeue(after: Duration) -> Self {
        Self {
            requeue_after: Some(after),
        }
    }
}

/// Everything a reconcile reads and drives.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub pusher: Pusher,
    pub opts: ControllerOptions,
    pub metrics: Arc<Metrics>,
    pub trigger: Trigger,
    /// `status.addresses` of our Gateways (from the tunnel token, or the proxy Service DNS name).
    pub gateway_addresses: watch::Receiver<Vec<String>>,
    /// The Gateway API CRD bundle version, for `SupportedVersion`; `None` while unknown.
    pub bundle_version: watch::Receiver<Option<String>>,
    /// [`crate::auth_token::token_hash`] of the current usable tunnel token; `None` before one is read.
    pub tunnel_token_hash: watch::Receiver<Option<String>>,
    pub events: EventLog,
    /// The Cloudflare API sync, when enabled.
    pub cloudflare: Option<Arc<CloudflareLink>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// Rebuilds the document and all status from the caches, pushes the document and writes the status that changed.
/// Each pass is one span (`reconcile`) of the process's OTLP tracer; without one, the global no-op tracer.
pub async fn reconcile(ctx: Arc<Context>) -> Result<Action, Error> {
    let mut span = opentelemetry::global::tracer(crate::TRACER_SCOPE).start("reconcile");
    let result = reconcile_pass(ctx, &mut span).await;
    if let Err(e) = &result {
        span.set_status(Status::error(e.to_string()));
    }
    span.end();
    result
}

async fn reconcile_pass(ctx: Arc<Context>, span: &mut BoxedSpan) -> Result<Action, Error> {
    let targets = match &ctx.opts.proxy_targets {
        ProxyTargets::Service { service, port } => {
            let slices = ctx.stores.endpoint_slices.state();
            targets_from_slices(slices.iter().map(|s| s.as_ref()), service, port)
        }
        ProxyTargets::Urls(urls) => targets_from_urls(urls).await,
    };

    let snapshot = ctx.stores.snapshot();
    let generations = our_gateway_generations(&snapshot, &ctx.opts.controller_name);
    let before = ctx.pusher.view();
    let acknowledged = generations
        .iter()
        .all(|(gw, g)| before.acked_generations.get(gw).is_some_and(|a| a >= g));
    let now = Time(Timestamp::now());
    let options = TranslateOptions {
        controller_name: ctx.opts.controller_name.clone(),
        cluster_domain: ctx.opts.cluster_domain.clone(),
        backend_resolution: ctx.opts.backend_resolution,
        now: now.clone(),
        config_acknowledged: acknowledged,
        gateway_addresses: ctx.gateway_addresses.borrow().clone(),
        bundle_version: ctx.bundle_version.borrow().clone(),
        reject_grpc_routes: ctx.opts.reject_grpc_routes,
        ..TranslateOptions::default()
    };
    let started = Instant::now();
    let translation = translate(&snapshot, &options);
    let translated = started.elapsed();
    record_document_metrics(
        &ctx.metrics,
        &translation.config,
        &translation.statuses,
        &ctx.opts.controller_name,
    );

    if let Some(link) = &ctx.cloudflare {
        link.offer(tunnel_ingress(&translation.config));
    }
    let cloudflare_verdict = ctx.cloudflare.as_ref().map(|link| link.verdict());

    // Push first: the document is what serves traffic, status can follow.
    let doc = ctx.pusher.publish(translation.config, generations)?;
    ctx.pusher.set_targets(&targets);
    span.set_attributes([
        KeyValue::new("tunnelgate.document.version", doc.version),
        KeyValue::new("tunnelgate.document.rules", doc.rules as i64),
        KeyValue::new("tunnelgate.proxy.targets", targets.len() as i64),
    ]);
    tracing::debug!(
        version = doc.version,
        rules = doc.rules,
        targets = targets.len(),
        translate_us = translated.as_micros(),
        published_us = started.elapsed().as_micros(),
        "document published"
    );

    let view = ctx.pusher.view();
    let mut events = translation.events;
    if let Some(message) = &view.rejected {
        // controller.md §7.2: a rejected document is recorded on each of our Gateways.
        events.extend(
            translation
                .statuses
                .iter()
                .filter(|s| s.kind == "Gateway")
                .map(|s| ObjectEvent {
                    api_version: s.api_version.clone(),
                    kind: s.kind.clone(),
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    warning: true,
                    reason: "ConfigRejected".to_owned(),
                    note: message.clone(),
                }),
        );
    }
    let mut writes = Vec::new();
    let mut seen_routes = BTreeSet::new();
    for mut object in translation.statuses {
        let (current, generation) = current_status(&ctx.stores, &object);
        if object.kind == "HTTPRoute" || object.kind == "GRPCRoute" {
            seen_routes.insert((
                object.kind.clone(),
                object.namespace.clone().unwrap_or_default(),
                object.name.clone(),
            ));
        }
        status::add_config_pushed(
            &mut object,
            current.as_ref(),
            generation,
            &view,
            &ctx.opts.controller_name,
            &now,
        );
        if let Some(verdict) = &cloudflare_verdict {
            status::add_cloudflare_synced(&mut object, current.as_ref(), generation, verdict, &now);
        }
        if status::needs_write(
            &object.kind,
            current.as_ref(),
            &object.status,
            &ctx.opts.controller_name,
        ) {
            writes.push(object);
        }
    }
    writes.extend(detached_routes(
        &ctx.stores,
        &seen_routes,
        &ctx.opts.controller_name,
    ));
    let mut failed = write_statuses(&ctx, writes).await;
    failed += write_finalizers(&ctx, &snapshot).await;
    failed += ctx
        .events
        .record(events, |e| uid_of(&ctx.stores, e), &ctx.metrics)
        .await;
    if failed > 0 {
        return Err(Error::StatusWrites(failed));
    }
    Ok(Action::await_change())
}

/// On failure: count it and try the whole sync again shortly.
pub fn error_policy(error: &Error, ctx: &Context) -> Action {
    let kind = match error {
        Error::StatusWrites(_) => "status_write",
        Error::Json(_) => "serialize",
        Error::Kube(_) => "kubernetes",
        _ => "other",
    };
    ctx.metrics.sync_error(kind);
    tracing::warn!(error = %error, "sync failed; retrying in 5s");
    Action::requeue(Duration::from_secs(5))
}

/// Debounces triggers into reconciles, forever.
pub async fn run_sync_loop(ctx: Arc<Context>) {
    let mut debouncer = Debouncer::new(
        ctx.trigger.clone(),
        ctx.opts.debounce,
        ctx.opts.debounce_max_delay,
    );
    let mut requeue: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        debouncer.next_sync().await;
        if let Some(r) = requeue.take() {
            r.abort();
        }
        let started = Instant::now();
        let result = reconcile(ctx.clone()).await;
        let elapsed = started.elapsed().as_secs_f64();
        let action = match result {
            Ok(action) => {
                ctx.metrics
                    .sync_duration
                    .get_or_create(&StatusLabel {
                        status: "success".into(),
                    })
                    .observe(elapsed);
                ctx.metrics.reconcile("success");
                action
            }
            Err(e) => {
                ctx.metrics
                    .sync_duration
                    .get_or_create(&StatusLabel {
                        status: "error".into(),
                    })
                    .observe(elapsed);
                ctx.metrics.reconcile("error");
                error_policy(&e, &ctx)
            }
        };
        if let Some(after) = action.requeue_after {
            let trigger = ctx.trigger.clone();
            requeue = Some(tokio::spawn(async move {
                tokio::time::sleep(after).await;
                trigger.fire();
            }));
        }
    }
}

/// `metadata.generation` of every Gateway whose class is ours.
pub fn our_gateway_generations(snapshot: &Snapshot, controller_name: &str) -> BTreeMap<ObjectName, i64> {
    let classes: BTreeSet<&str> = snapshot
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == controller_name)
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    snapshot
        .gateways
        .iter()
        .filter(|g| classes.contains(g.spec.gateway_class_name.as_str()))
        .filter_map(|g| {
            let key = ObjectName::new(g.metadata.namespace.clone()?, g.metadata.name.clone()?);
            Some((key, g.metadata.generation.unwrap_or(0)))
        })
        .collect()
}

fn current_status(stores: &Stores, object: &ObjectStatus) -> (Option<Value>, Option<i64>) {
    fn read<K>(
        store: &kube::runtime::reflector::Store<K>,
        object: &ObjectStatus,
        status: impl Fn(&K) -> Option<Value>,
    ) -> (Option<Value>, Option<i64>)
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut key = ObjectRef::<K>::new(&object.name);
        if let Some(ns) = &object.namespace {
            key = key.within(ns);
        }
        match store.get(&key) {
            Some(obj) => (status(&obj), obj.meta().generation),
            None => (None, None),
        }
    }
    fn json<T: serde::Serialize>(status: Option<&T>) -> Option<Value> {
        status.and_then(|s| serde_json::to_value(s).ok())
    }
    match object.kind.as_str() {
        "GatewayClass" => read(&stores.gateway_classes, object, |o| json(o.status.as_ref())),
        "Gateway" => read(&stores.gateways, object, |o| json(o.status.as_ref())),
        "HTTPRoute" => read(&stores.http_routes, object, |o| json(o.status.as_ref())),
        "GRPCRoute" => read(&stores.grpc_routes, object, |o| json(o.status.as_ref())),
        "BackendTLSPolicy" => read(&stores.backend_tls_policies, object, |o| json(o.status.as_ref())),
        _ => (None, None),
    }
}

/// The UID of the object an event is about, from the caches.
fn uid_of(stores: &Stores, event: &ObjectEvent) -> Option<String> {
    fn read<K>(store: &kube::runtime::reflector::Store<K>, event: &ObjectEvent) -> Option<String>
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut key = ObjectRef::<K>::new(&event.name);
        if let Some(ns) = &event.namespace {
            key = key.within(ns);
        }
        store.get(&key)?.meta().uid.clone()
    }
    match event.kind.as_str() {
        "Gateway" => read(&stores.gateways, event),
        "HTTPRoute" => read(&stores.http_routes, event),
        "GRPCRoute" => read(&stores.grpc_routes, event),
        "BackendTLSPolicy" => read(&stores.backend_tls_policies, event),
        _ => None,
    }
}

/// Routes that still carry our parent entries but were not in the translation: ours are removed.
fn detached_routes(
    stores: &Stores,
    seen: &BTreeSet<(String, String, String)>,
    controller_name: &str,
) -> Vec<ObjectStatus> {
    fn detached<K, S: serde::Serialize>(
        kind: &str,
        routes: &[Arc<K>],
        status_of: impl Fn(&K) -> Option<&S>,
        seen: &BTreeSet<(String, String, String)>,
        controller_name: &str,
    ) -> Vec<ObjectStatus>
    where
        K: kube::Resource,
    {
        routes
            .iter()
            .filter_map(|route| {
                let ns = route.meta().namespace.clone()?;
                let name = route.meta().name.clone()?;
                if seen.contains(&(kind.to_owned(), ns.clone(), name.clone())) {
                    return None;
                }
                let current = serde_json::to_value(status_of(route)?).ok()?;
                let status = status::without_our_parents(&current, controller_name)?;
                Some(ObjectStatus {
                    api_version: tunnelgate_gateway::GATEWAY_API_VERSION.to_owned(),
                    kind: kind.to_owned(),
                    namespace: Some(ns),
                    name,
                    status,
                })
            })
            .collect()
    }
    let mut out = detached(
        "HTTPRoute",
        &stores.http_routes.state(),
        |r| r.status.as_ref(),
        seen,
        controller_name,
    );
    out.extend(detached(
        "GRPCRoute",
        &stores.grpc_routes.state(),
        |r| r.status.as_ref(),
        seen,
        controller_name,
    ));
    out
}

async fn write_statuses(ctx: &Context, writes: Vec<ObjectStatus>) -> usize {
    let results = futures::stream::iter(writes)
        .map(|object| async move {
            let result = status::write(&ctx.client, &object).await;
            (object, result)
        })
        .buffer_unordered(PARALLEL_STATUS_WRITES)
        .collect::<Vec<_>>()
        .await;
    let mut failed = 0;
    for (object, result) in results {
        match result {
            Ok(()) => {
                tracing::debug!(kind = %object.kind, namespace = ?object.namespace, name = %object.name, "status written");
                ctx.metrics.status_write(&object.kind, "success");
            }
            // The object went away between the cache read and the write: nothing to report on.
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                ctx.metrics.status_write(&object.kind, "not_found")
            }
            Err(e) => {
                tracing::warn!(kind = %object.kind, namespace = ?object.namespace, name = %object.name, error = %e, "status write failed");
                ctx.metrics.status_write(&object.kind, "error");
                failed += 1;
            }
        }
    }
    failed
}

/// Adds or removes the GatewayClass finalizer where needed; returns how many writes failed. A conflict (the class
/// changed since the cache saw it) counts as a failure, so the sync runs again on fresh data.
async fn write_finalizers(ctx: &Context, snapshot: &Snapshot) -> usize {
    let mut failed = 0;
    for change in finalizer::changes(snapshot, &ctx.opts.controller_name) {
        let action = if change.add { "added" } else { "removed" };
        match finalizer::write(&ctx.client, &change).await {
            Ok(()) => {
                tracing::info!(class = %change.class, finalizer = finalizer::GATEWAY_EXISTS_FINALIZER, "finalizer {action}");
                ctx.metrics.status_write("GatewayClassFinalizer", "success");
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                ctx.metrics.status_write("GatewayClassFinalizer", "not_found")
            }
            Err(e) => {
                tracing::warn!(class = %change.class, error = %e, "GatewayClass finalizer update failed");
                ctx.metrics.status_write("GatewayClassFinalizer", "error");
                failed += 1;
            }
        }
    }
    failed
}

fn record_document_metrics(
    metrics: &Metrics,
    config: &tunnelgate_config::Config,
    statuses: &[ObjectStatus],
    controller_name: &str,
) {
    let unavailable = config
        .rules
        .iter()
        .map(|r| r.backends.iter().filter(|b| b.unavailable_status != 0).count())
        .sum::<usize>();
    metrics
        .failed_backend_refs
        .get_or_create(&TypeValue {
            r#type: "unavailable".into(),
        })
        .set(to_i64(unavailable));
    for kind in ["HTTPRoute", "GRPCRoute"] {
        let routes: Vec<&ObjectStatus> = statuses.iter().filter(|s| s.kind == kind).collect();
        metrics
            .synced_routes
            .get_or_create(&TypeValue { r#type: kind.into() })
            .set(to_i64(routes.len()));
    }
    let routes = statuses
        .iter()
        .filter(|s| s.kind == "HTTPRoute" || s.kind == "GRPCRoute");
    let (healthy, unhealthy) = routes.fold((0usize, 0usize), |(h, u), s| {
        if s.route_is_healthy(controller_name) {
            (h + 1, u)
        } else {
            (h, u + 1)
        }
    });
    metrics
        .routes_by_status
        .get_or_create(&StatusLabel {
            status: "accepted_resolved".into(),
        })
        .set(to_i64(healthy));
    metrics
        .routes_by_status
        .get_or_create(&StatusLabel {
            status: "not_accepted_or_unresolved".into(),
        })
        .set(to_i64(unhealthy));
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_gateways_of_our_classes_count_for_programmed() {
        let snapshot = Snapshot {
            gateway_classes: vec![
                Arc::new(serde_json::from_value(json!({"metadata": {"name": "ours"}, "spec": {"controllerName": "tunnelgate.dev/gateway-controller"}})).unwrap()),
                Arc::new(serde_json::from_value(json!({"metadata": {"name": "theirs"}, "spec": {"controllerName": "example.net/other"}})).unwrap()),
            ],
            gateways: vec![
                Arc::new(serde_json::from_value(json!({"metadata": {"namespace": "a", "name": "g1", "generation": 3},
                    "spec": {"gatewayClassName": "ours", "listeners": []}})).unwrap()),
                Arc::new(serde_json::from_value(json!({"metadata": {"namespace": "b", "name": "g2", "generation": 7},
                    "spec": {"gatewayClassName": "theirs", "listeners": []}})).unwrap()),
            ],
            ..Snapshot::default()
        };
        let generations = our_gateway_generations(&snapshot, "tunnelgate.dev/gateway-controller");
        assert_eq!(generations, BTreeMap::from([(ObjectName::new("a", "g1"), 3)]));
    }
}
