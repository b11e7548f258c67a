//! Informer caches: one kube-rs reflector per watched kind, every event firing the sync trigger.
//!
//! Every replica runs these, leader or not, so a failover starts from warm caches (controller.md §1).
//! EndpointSlice changes all trigger a sync: with endpoint expansion (§5.2) an address change is a routing change,
//! and the debouncer absorbs churn.

use std::fmt::Debug;

use futures::StreamExt as _;
use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tunnelgate_gateway::Snapshot;

use crate::debounce::Trigger;

/// Read handles of every cache the translation reads.
#[derive(Clone)]
pub struct Stores {
    pub gateway_classes: Store<GatewayClass>,
    pub gateways: Store<Gateway>,
    pub http_routes: Store<HttpRoute>,
    pub grpc_routes: Store<GrpcRoute>,
    pub reference_grants: Store<ReferenceGrant>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub namespaces: Store<Namespace>,
    pub backend_tls_policies: Store<BackendTlsPolicy>,
    /// Every ConfigMap: a BackendTLSPolicy may name any one in its namespace for its CA bundle.
    pub config_maps: Store<ConfigMap>,
    /// Secrets of type `kubernetes.io/tls` only: Gateways' backend client certificates.
    pub tls_secrets: Store<Secret>,
}

impl Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// Starts every reflector; the tasks run until aborted.
    pub fn start(client: &Client, trigger: &Trigger, tasks: &mut Vec<JoinHandle<()>>) -> Self {
        Self {
            gateway_classes: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            gateways: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            http_routes: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            grpc_routes: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            reference_grants: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            services: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            endpoint_slices: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            namespaces: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            backend_tls_policies: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            config_maps: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                trigger,
                tasks,
            ),
            tls_secrets: reflect(
                Api::all(client.clone()),
                watcher::Config::default().fields("type=kubernetes.io/tls"),
                trigger,
                tasks,
            ),
        }
    }

    /// Resolves once every cache has completed its initial list.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.gateway_classes.wait_until_ready().await?;
        self.gateways.wait_until_ready().await?;
        self.http_routes.wait_until_ready().await?;
        self.grpc_routes.wait_until_ready().await?;
        self.reference_grants.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.endpoint_slices.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.backend_tls_policies.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.tls_secrets.wait_until_ready().await
    }

    /// Every cached object, as the translation wants it. The objects are shared with the caches, not copied.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            gateway_classes: self.gateway_classes.state(),
            gateways: self.gateways.state(),
            http_routes: self.http_routes.state(),
            grpc_routes: self.grpc_routes.state(),
            reference_grants: self.reference_grants.state(),
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            namespaces: self.namespaces.state(),
            backend_tls_policies: self.backend_tls_policies.state(),
            config_maps: self.config_maps.state(),
            secrets: self.tls_secrets.state(),
        }
    }
}

/// Starts a reflector for `api` and returns its store. Each applied or deleted object, and the end of each
/// (re)list, fires `trigger`; watch errors are retried with kube's default backoff.
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    trigger: &Trigger,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, config)).default_backoff();
    let trigger = trigger.clone();
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => trigger.fire(),
                Ok(Event::Init | Event::InitApply(_)) => {}
                Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
            }
        }
    }));
    reader
}
