//! Pure translation of Kubernetes Gateway API objects into tunnelgate's routing document
//! (`shared/spec/config-api.md` §4), plus the status every object should carry (`shared/spec/controller.md`
//! §3–§6).
//!
//! What this crate does:
//! - [`translate`]: a [`Snapshot`] of GatewayClasses, Gateways, HTTPRoutes, GRPCRoutes, ReferenceGrants,
//!   Services, EndpointSlices, Namespaces, BackendTLSPolicies, ConfigMaps and TLS Secrets in, a [`Translation`] out: the
//!   [`Config`] every proxy replica should serve and, per object we manage, the `.status` our controller would
//!   write ([`ObjectStatus`]);
//! - file mode loading: [`load_path`] and [`load_yaml_documents`] read Kubernetes YAML (one file or a directory,
//!   multi-document) into a [`Snapshot`].
//!
//! What it does not do: talk to a Kubernetes API server, watch, write status, push config, or keep time. It is a
//! pure function of its inputs (the clock reading is an input, [`TranslateOptions::now`]), so the controller and
//! `tunnelgate proxy --routes` share it and it can be tested from fixtures.

use std::sync::Arc;

#[macro_use]
mod filter;
mod backend;
mod binding;
mod check;
mod hostname;
mod load;
mod policy;
mod route;
mod status;
mod translate;
mod validate;

pub use check::{CheckReport, UnhealthyRoute, check, report};
pub use gateway_api::backendtlspolicies::BackendTlsPolicy;
pub use gateway_api::gatewayclasses::GatewayClass;
pub use gateway_api::gateways::Gateway;
pub use gateway_api::grpcroutes::GrpcRoute;
pub use gateway_api::httproutes::HttpRoute;
pub use gateway_api::referencegrants::ReferenceGrant;
pub use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
pub use k8s_openapi::jiff::Timestamp;
pub use load::{LoadError, input_files, load_path, load_yaml_documents};
pub use translate::translate;
pub use tunnelgate_config::Config;

/// The controller name our GatewayClasses carry unless told otherwise.
pub const DEFAULT_CONTROLLER_NAME: &str = "tunnelgate.dev/gateway-controller";
/// The cluster DNS domain used for Service DNS names unless told otherwise.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// `apiVersion` of the Gateway API kinds we read and write.
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The API group of the Gateway API.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Every object a translation reads. The order inside each `Vec` does not matter; [`translate`] sorts what it
/// needs (routes by creation time, then namespace/name).
///
/// Objects are shared (`Arc`) so that the controller can take a snapshot of its informer caches, which hold
/// `Arc`s, without copying thousands of objects on every sync.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub gateway_classes: Vec<Arc<GatewayClass>>,
    pub gateways: Vec<Arc<Gateway>>,
    pub http_routes: Vec<Arc<HttpRoute>>,
    pub grpc_routes: Vec<Arc<GrpcRoute>>,
    pub reference_grants: Vec<Arc<ReferenceGrant>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub namespaces: Vec<Arc<Namespace>>,
    pub backend_tls_policies: Vec<Arc<BackendTlsPolicy>>,
    /// Read for the CA bundles of BackendTLSPolicies (key `ca.crt`).
    pub config_maps: Vec<Arc<ConfigMap>>,
    /// Read for Gateways' backend client certificates (`spec.tls.backend.clientCertificateRef`). The controller
    /// caches only Secrets of type `kubernetes.io/tls`, the only type these may have.
    pub secrets: Vec<Arc<Secret>>,
}

/// How a Service backendRef becomes backend URLs (`controller.md` §5.2, `--backend-resolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendResolution {
    /// One backend per ready endpoint from the Service's EndpointSlices; the Service DNS name when it has none.
    #[default]
    Endpoints,
    /// Always the Service DNS name (`<name>.<ns>.svc.<clusterDomain>`), balanced by kube-proxy.
    Dns,
}

/// Knobs of a translation. Build it with struct update syntax: `TranslateOptions { now, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// GatewayClasses whose `spec.controllerName` equals this are ours.
    pub controller_name: String,
    /// Used in Service DNS names: `<svc>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    pub backend_resolution: BackendResolution,
    /// File mode: when the snapshot holds no GatewayClass at all, every Gateway is taken as ours.
    pub adopt_gateways_without_class: bool,
    /// The `lastTransitionTime` of a condition whose status flips (or is new). A condition whose status did not
    /// change keeps the time found in the object's current status.
    pub now: Time,
    /// True once a proxy replica acknowledged a document built from these objects: Gateways and listeners get
    /// `Programmed=True`. False gives `Programmed=False/Pending`.
    pub config_acknowledged: bool,
    /// Written to `status.addresses` of every accepted Gateway as `type: Hostname` (the tunnel's
    /// `<id>.cfargotunnel.com`, or the proxy Service DNS name in standalone mode). Empty: no addresses.
    pub gateway_addresses: Vec<String>,
    /// The `gateway.networking.k8s.io/bundle-version` annotation of the Gateway API CRDs, when known. `None`:
    /// `SupportedVersion` is reported True without a check (file mode).
    pub bundle_version: Option<String>,
    /// The proxies run the tunnel over QUIC by explicit choice (`--tunnel-protocol=quic`), where the Cloudflare
    /// edge does not carry the HTTP/2 trailers gRPC needs: GRPCRoutes are not accepted by any of our Gateways
    /// (`Accepted=False/UnsupportedValue`) and none of their rules reach the document. `auto` needs no such
    /// rejection: the proxies move to HTTP/2 when the document has a GRPCRoute.
    pub reject_grpc_routes: bool,
}

/// The result of [`translate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// The routing document; `version` is 0, the caller stamps it.
    pub config: Config,
    /// One entry per GatewayClass, Gateway and route that we manage and per BackendTLSPolicy our routes reach (or
    /// that still carries our status), in a stable order: classes, Gateways,
    /// HTTPRoutes, GRPCRoutes, BackendTLSPolicies, each sorted by namespace/name.
    pub statuses: Vec<ObjectStatus>,
    /// Advisory Kubernetes Events about the objects (`controller.md` §5.3, §6.4), in a stable order. The same
    /// snapshot gives the same events, so a caller that records them should record each once, not on every sync.
    pub events: Vec<ObjectEvent>,
}

/// A Kubernetes Event to record about one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectEvent {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// PascalCase, as Kubernetes reasons are.
    pub reason: String,
    /// The human-readable text (at most 1 kB).
    pub note: String,
}

/// The `.status` our controller writes to one object.
///
/// `status` is the complete value to server-side apply as `.status` (a JSON object). For routes, where
/// `status.parents` is an atomic list, it already holds the parent entries of other controllers copied unchanged
/// from the object's current status, followed by ours; Gateway and GatewayClass status is wholly ours.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStatus {
    pub api_version: String,
    pub kind: String,
    /// `None` for cluster-scoped kinds (GatewayClass).
    pub namespace: Option<String>,
    pub name: String,
    pub status: serde_json::Value,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            controller_name: DEFAULT_CONTROLLER_NAME.to_owned(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            backend_resolution: BackendResolution::Endpoints,
            adopt_gateways_without_class: false,
            now: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            config_acknowledged: false,
            gateway_addresses: Vec::new(),
            bundle_version: None,
            reject_grpc_routes: false,
        }
    }
}

impl ObjectStatus {
    /// The `metadata.generation`-independent summary of a route's status: true when every parent entry written
    /// by `controller_name` has `Accepted=True` and `ResolvedRefs=True`, and there is at least one.
    pub fn route_is_healthy(&self, controller_name: &str) -> bool {
        let Some(parents) = self.status.get("parents").and_then(|p| p.as_array()) else {
            return false;
        };
        let ours: Vec<&serde_json::Value> = parents
            .iter()
            .filter(|p| p.get("controllerName").and_then(|c| c.as_str()) == Some(controller_name))
            .collect();
        !ours.is_empty()
            && ours
                .iter()
                .all(|p| condition_is_true(p, "Accepted") && condition_is_true(p, "ResolvedRefs"))
    }
}

fn condition_is_true(holder: &serde_json::Value, kind: &str) -> bool {
    holder
        .get("conditions")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(|t| t.as_str()) == Some(kind)
                && c.get("status").and_then(|s| s.as_str()) == Some("True")
        })
}
