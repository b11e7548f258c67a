//! Backend resolution (`controller.md` §4, §5.2, §5.3): a backendRef or mirror target becomes URLs, from
//! EndpointSlices when they exist, with invalid references keeping their weight share as `unavailableStatus`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use tunnelgate_config as wire;

use crate::policy::Policies;
use crate::route::{ObjectRef, RouteKind};
use crate::{
    BackendResolution, EndpointSlice, GATEWAY_API_VERSION, GATEWAY_GROUP, ObjectEvent, ReferenceGrant,
    Secret, Service, Snapshot, TranslateOptions,
};

/// Why a reference does not resolve; goes into the route's `ResolvedRefs=False` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefProblem {
    pub reason: &'static str,
    pub message: String,
}

/// Where a reference leads.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Endpoint URLs when expanded, else exactly one URL (DNS name, ExternalName, or a descriptive URL for an
    /// unavailable ref). Shared: many routes reference the same Service port.
    pub urls: Rc<[String]>,
    /// True when `urls` are endpoints that each become a backend.
    pub expanded: bool,
    /// The Service DNS URL (or `urls[0]`), used when the ref is not expanded (weight 0).
    pub service_url: Rc<str>,
    pub protocol: &'static str,
    pub websocket: bool,
    pub unavailable_status: i32,
    /// TLS towards the backend, from the BackendTLSPolicy that applies (then the URLs are `https://`).
    pub tls: Option<Rc<wire::BackendTls>>,
    /// Every BackendTLSPolicy (index in [`Policies::list`]) that targets the Service port: their ancestor
    /// status lists the Gateways of the routes that reach it.
    pub policies: Rc<[usize]>,
}

/// Lookups over a snapshot, built once per translation.
pub(crate) struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    /// ReferenceGrants by (grant namespace, from group, from kind, from namespace).
    grants: HashMap<GrantKey<'a>, Vec<&'a ReferenceGrant>>,
    /// Resolved Service ports by (Service, port, gRPC): thousands of routes name the same few Services, and
    /// expanding endpoints into URLs is the costly part of resolving one. The Service is keyed by its address,
    /// which is unique and stable while the snapshot is borrowed.
    resolved: RefCell<HashMap<(*const Service, i32, bool), Target>>,
    pub(crate) policies: Policies<'a>,
    /// Events found while resolving (at most one per Service port, as resolution is cached).
    events: RefCell<Vec<ObjectEvent>>,
    /// Secrets by (namespace, name), for Gateways' backend client certificates.
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    opts: &'a TranslateOptions,
}

/// A Gateway's backend client certificate, as the wire carries it: base64 of the PEM bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientCertificate {
    pub cert_pem_b64: String,
    pub key_pem_b64: String,
}

/// A Gateway's reference to a Secret, as its several reference types spell it.
pub(crate) struct SecretRef<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

/// The Secret type a client certificate must have (Gateway API core support).
const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

type GrantKey<'a> = (&'a str, &'a str, &'a str, &'a str);

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl<'a> Resolver<'a> {
    pub(crate) fn new(snapshot: &'a Snapshot, opts: &'a TranslateOptions) -> Resolver<'a> {
        let mut services = HashMap::new();
        for s in &snapshot.services {
            if let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref()) {
                services.insert((ns, name), &**s);
            }
        }
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in &snapshot.endpoint_slices {
            let owner = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(svc)) = (s.metadata.namespace.as_deref(), owner) {
                slices.entry((ns, svc.as_str())).or_default().push(s);
            }
        }
        let mut grants: HashMap<GrantKey<'a>, Vec<&ReferenceGrant>> = HashMap::new();
        for g in &snapshot.reference_grants {
            let Some(ns) = g.metadata.namespace.as_deref() else {
                continue;
            };
            for f in &g.spec.from {
                let list = grants
                    .entry((ns, f.group.as_str(), f.kind.as_str(), f.namespace.as_str()))
                    .or_default();
                if !list.last().is_some_and(|last| std::ptr::eq(*last, &**g)) {
                    list.push(g);
                }
            }
        }
        let mut secrets = HashMap::new();
        for s in &snapshot.secrets {
            if let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref()) {
                secrets.insert((ns, name), &**s);
            }
        }
        Resolver {
            services,
            slices,
            grants,
            secrets,
            resolved: RefCell::default(),
            policies: Policies::new(snapshot),
            events: RefCell::default(),
            opts,
        }
    }

    /// True when a ReferenceGrant in `to_namespace` lets a `from_kind` in `from_namespace` reference the
    /// core-group `to_kind` named `to_name`.
    pub(crate) fn granted(
        &self,
        from_group: &str,
        from_kind: &str,
        from_namespace: &str,
        to_namespace: &str,
        to_kind: &str,
        to_name: &str,
    ) -> bool {
        let key = (to_namespace, from_group, from_kind, from_namespace);
        self.grants.get(&key).is_some_and(|grants| {
            grants.iter().any(|g| {
                g.spec.to.iter().any(|t| {
                    t.group.is_empty() && t.kind == to_kind && t.name.as_deref().is_none_or(|n| n == to_name)
                })
            })
        })
    }

    /// A Gateway's reference to a core Secret (`field` names it in messages; `gateway_namespace` is the
    /// Gateway's): the Secret's namespace, or the (reason, message) of `ResolvedRefs=False`: `invalid` for another
    /// group or kind, `RefNotPermitted` across namespaces without a ReferenceGrant.
    pub(crate) fn gateway_secret_ref<'r>(
        &self,
        gateway_namespace: &'r str,
        r: &SecretRef<'r>,
        field: &str,
        invalid: &'static str,
    ) -> Result<&'r str, (&'static str, String)> {
        let kind = r.kind.unwrap_or("Secret");
        if r.group.is_some_and(|g| !g.is_empty()) || kind != "Secret" {
            return Err((
                invalid,
                format!("{field} {}: kind {kind} is not a core Secret", r.name),
            ));
        }
        let namespace = r.namespace.unwrap_or(gateway_namespace);
        if namespace != gateway_namespace
            && !self.granted(
                GATEWAY_GROUP,
                "Gateway",
                gateway_namespace,
                namespace,
                "Secret",
                r.name,
            )
        {
            return Err((
                "RefNotPermitted",
                format!(
                    "{field} {namespace}/{}: no ReferenceGrant in namespace {namespace} allows it",
                    r.name
                ),
            ));
        }
        Ok(namespace)
    }

    /// A Gateway's `spec.tls.backend.clientCertificateRef`, or the (reason, message) of its `ResolvedRefs=False`:
    /// [`Resolver::gateway_secret_ref`]'s, or `InvalidClientCertificateRef` for a missing Secret, another Secret
    /// type, or keys `tls.crt`/`tls.key` missing or not PEM.
    pub(crate) fn client_certificate(
        &self,
        gateway_namespace: &str,
        r: &SecretRef<'_>,
    ) -> Result<ClientCertificate, (&'static str, String)> {
        const INVALID: &str = "InvalidClientCertificateRef";
        let namespace = self.gateway_secret_ref(gateway_namespace, r, "clientCertificateRef", INVALID)?;
        let name = r.name;
        let what = format!("clientCertificateRef {namespace}/{name}");
        let Some(secret) = self.secrets.get(&(namespace, name)) else {
            return Err((
                INVALID,
                format!("{what}: Secret not found (it must be of type {TLS_SECRET_TYPE})"),
            ));
        };
        if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
            return Err((
                INVALID,
                format!("{what}: the Secret is not of type {TLS_SECRET_TYPE}"),
            ));
        }
        let data = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.as_slice())
        };
        let cert = data("tls.crt").filter(|c| tunnelgate_route::is_pem_certificates(c));
        let key = data("tls.key").filter(|k| tunnelgate_route::is_pem_private_key(k));
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(ClientCertificate {
                cert_pem_b64: STANDARD.encode(cert),
                key_pem_b64: STANDARD.encode(key),
            }),
            (None, _) => Err((
                INVALID,
                format!("{what}: tls.crt is missing or holds no PEM certificate"),
            )),
            (_, None) => Err((
                INVALID,
                format!("{what}: tls.key is missing or holds no PEM private key"),
            )),
        }
    }

    /// The events found while resolving so far.
    pub(crate) fn events(&self) -> Vec<ObjectEvent> {
        self.events.borrow().clone()
    }

    /// Resolves one reference made by a route of `route_kind` in `route_namespace`.
    pub(crate) fn resolve(
        &self,
        target: &ObjectRef,
        route_kind: RouteKind,
        route_namespace: &str,
    ) -> (Target, Option<RefProblem>) {
        let namespace = target.namespace.as_deref().unwrap_or(route_namespace);
        let name = target.name.as_str();
        let service_url = || -> Rc<str> {
            let port_suffix = target.port.map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "http://{name}.{namespace}.svc.{}{port_suffix}",
                self.opts.cluster_domain
            )
            .into()
        };
        let fail = |status: i32, reason: &'static str, message: String| {
            let service_url = service_url();
            let target = Target {
                urls: Rc::from([service_url.to_string()]),
                expanded: false,
                service_url,
                protocol: "",
                websocket: false,
                unavailable_status: status,
                tls: None,
                policies: Rc::from([]),
            };
            (target, Some(RefProblem { reason, message }))
        };
        let describe = || format!("{namespace}/{name}");
        if !(target.group.is_empty() && target.kind == "Service") {
            let group = if target.group.is_empty() {
                "core"
            } else {
                target.group.as_str()
            };
            return fail(
                500,
                "InvalidKind",
                format!(
                    "backendRef {}: kind {}/{} is not supported",
                    describe(),
                    group,
                    target.kind
                ),
            );
        }
        if namespace != route_namespace
            && !self.granted(
                GATEWAY_GROUP,
                route_kind.kind(),
                route_namespace,
                namespace,
                "Service",
                name,
            )
        {
            return fail(
                500,
                "RefNotPermitted",
                format!(
                    "backendRef {}: no ReferenceGrant in namespace {namespace} allows it",
                    describe()
                ),
            );
        }
        let Some(service) = self.services.get(&(namespace, name)).copied() else {
            return fail(
                500,
                "BackendNotFound",
                format!("backendRef {}: Service not found", describe()),
            );
        };
        let Some(port) = target.port else {
            return fail(
                500,
                "BackendNotFound",
                format!("backendRef {}: port is required for a Service", describe()),
            );
        };
        let key = (std::ptr::from_ref(service), port, route_kind == RouteKind::Grpc);
        if let Some(resolved) = self.resolved.borrow().get(&key) {
            return (resolved.clone(), None);
        }
        let default_spec = ServiceSpec::default();
        let spec = service.spec.as_ref().unwrap_or(&default_spec);
        let Some(service_port) = spec.ports.iter().flatten().find(|p| p.port == port) else {
            return fail(
                500,
                "BackendNotFound",
                format!("backendRef {}: port {port} not found", describe()),
            );
        };
        let service_url = service_url();
        let (policy, policies) = self
            .policies
            .for_port(namespace, name, service_port.name.as_deref());
        let mut resolved = Target {
            urls: Rc::from([service_url.to_string()]),
            expanded: false,
            service_url,
            protocol: "",
            websocket: false,
            unavailable_status: 0,
            tls: None,
            policies: policies.into(),
        };
        match service_port.app_protocol.as_deref() {
            None | Some("" | "http" | "HTTP") => {}
            Some("kubernetes.io/h2c") => resolved.protocol = "h2c",
            Some("kubernetes.io/ws") => resolved.websocket = true,
            // TLS by definition: without a BackendTLSPolicy there is nothing to verify the backend with, so it
            // fails closed rather than being dialled in plain text.
            Some("kubernetes.io/wss" | "https" | "HTTPS") => {
                resolved.websocket = service_port.app_protocol.as_deref() == Some("kubernetes.io/wss");
                if policy.is_none() {
                    resolved.unavailable_status = 502;
                    return (resolved, None);
                }
            }
            Some(other) => {
                return fail(
                    500,
                    "UnsupportedProtocol",
                    format!(
                        "backendRef {}: appProtocol {other:?} is not supported",
                        describe()
                    ),
                );
            }
        }
        if route_kind == RouteKind::Grpc {
            resolved.protocol = "h2c";
        }
        self.expand(&mut resolved, spec, service_port, (namespace, name), port);
        if let Some(policy) = policy {
            // With TLS, `protocol: "h2c"` means HTTP/2 over TLS with ALPN h2 (routing.md §11).
            match &policy.tls {
                Ok(tls) => {
                    if service_port.app_protocol.as_deref() == Some("kubernetes.io/h2c") {
                        self.events.borrow_mut().push(ObjectEvent {
                            api_version: GATEWAY_API_VERSION.to_owned(),
                            kind: "BackendTLSPolicy".to_owned(),
                            namespace: Some(policy.namespace.to_owned()),
                            name: policy.name.to_owned(),
                            warning: false,
                            reason: "HTTP2OverTLS".to_owned(),
                            note: format!(
                                "Service {namespace}/{name} port {port} declares appProtocol kubernetes.io/h2c; \
                                 with this policy it is dialled as HTTP/2 over TLS (ALPN h2), not cleartext h2c"
                            ),
                        });
                    }
                    resolved.tls = Some(tls.clone());
                    resolved.urls = resolved.urls.iter().map(|u| https(u)).collect();
                    resolved.service_url = https(&resolved.service_url).into();
                }
                // The policy's CA cannot be read: fail closed (its status says why).
                Err(_) => resolved.unavailable_status = 502,
            }
        }
        self.resolved.borrow_mut().insert(key, resolved.clone());
        (resolved, None)
    }

    /// Fills in the URLs of a resolved Service port: the ExternalName, the ready endpoints, or (DNS resolution,
    /// or no EndpointSlice) the Service DNS name already in `resolved`.
    fn expand(
        &self,
        resolved: &mut Target,
        spec: &ServiceSpec,
        service_port: &ServicePort,
        service: (&str, &str),
        port: i32,
    ) {
        if spec.type_.as_deref() == Some("ExternalName") {
            let host = spec.external_name.as_deref().unwrap_or_default();
            let url = format!("http://{host}:{port}");
            resolved.service_url = url.as_str().into();
            resolved.urls = Rc::from([url]);
            return;
        }
        if self.opts.backend_resolution == BackendResolution::Dns {
            return;
        }
        let Some(slices) = self.slices.get(&service) else {
            if spec.cluster_ip.as_deref() == Some("None") {
                // A headless Service has no virtual IP to fall back to.
                resolved.unavailable_status = 503;
            }
            return;
        };
        let mut endpoints: Vec<(&str, i32)> = Vec::new();
        for slice in slices {
            let slice_port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == service_port.name.as_deref().unwrap_or(""));
            let Some(target_port) = slice_port.and_then(|p| p.port) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if ready {
                    for address in &endpoint.addresses {
                        endpoints.push((address.as_str(), target_port));
                    }
                }
            }
        }
        endpoints.sort_unstable();
        endpoints.dedup();
        if endpoints.is_empty() {
            resolved.unavailable_status = 503;
            return;
        }
        resolved.urls = endpoints
            .iter()
            .map(|(ip, port)| {
                if ip.contains(':') {
                    format!("http://[{ip}]:{port}")
                } else {
                    format!("http://{ip}:{port}")
                }
            })
            .collect();
        resolved.expanded = true;
    }
}

/// One rule's backends after resolution: per ref, its weight, target and backend-level filters.
pub(crate) struct ResolvedBackend {
    pub weight: i32,
    pub target: Target,
    pub filters: Vec<wire::RouteFilter>,
    /// A backend-level filter could not be honoured: this backend fails closed with 500.
    pub filter_failed: bool,
}

/// Expands endpoints into backends and scales weights so each ref keeps its share (`controller.md` §5.2):
/// an endpoint gets its ref's weight, every other backend is multiplied by the number of endpoints, then all
/// positive weights are divided by their GCD and capped at 2^31−1.
pub(crate) fn weighted_backends(refs: Vec<ResolvedBackend>) -> Vec<wire::BackendRef> {
    let refs: Vec<ResolvedBackend> = refs
        .into_iter()
        // A weight-0 ref that would be invalid carries no traffic and no signal.
        .filter(|r| !(r.weight <= 0 && (r.target.unavailable_status != 0 || r.filter_failed)))
        .collect();
    let expands = |r: &ResolvedBackend| {
        r.weight > 0 && r.target.unavailable_status == 0 && !r.filter_failed && r.target.expanded
    };
    let counts: Vec<u128> = refs
        .iter()
        .map(|r| {
            if expands(r) {
                r.target.urls.len().max(1) as u128
            } else {
                1
            }
        })
        .collect();
    let mut out: Vec<(wire::BackendRef, u128)> = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let others: u128 = counts
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .fold(1u128, |acc, (_, n)| acc.saturating_mul(*n));
        let weight = u128::try_from(r.weight.max(0))
            .unwrap_or(0)
            .saturating_mul(others);
        let unavailable_status = if r.filter_failed {
            500
        } else {
            r.target.unavailable_status
        };
        let urls: Vec<&str> = if expands(r) {
            r.target.urls.iter().map(String::as_str).collect()
        } else if r.weight <= 0 {
            vec![&*r.target.service_url]
        } else {
            r.target.urls.iter().take(1).map(String::as_str).collect()
        };
        for url in urls {
            out.push((
                wire::BackendRef {
                    url: url.to_owned(),
                    weight: 0,
                    protocol: r.target.protocol.to_owned(),
                    tls: match unavailable_status {
                        0 => r.target.tls.as_deref().cloned().map(Box::new),
                        _ => None,
                    },
                    filters: r.filters.clone(),
                    websocket: r.target.websocket,
                    unavailable_status,
                },
                weight,
            ));
        }
    }
    let divisor = out
        .iter()
        .map(|(_, w)| *w)
        .filter(|w| *w > 0)
        .fold(0u128, gcd)
        .max(1);
    out.into_iter()
        .map(|(mut b, w)| {
            b.weight = i32::try_from(w / divisor).unwrap_or(i32::MAX);
            b
        })
        .collect()
}

/// `url` with the scheme `https` instead of `http`.
fn https(url: &str) -> String {
    format!("https://{}", url.strip_prefix("http://").unwrap_or(url))
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 { a } else { gcd(b, a % b) }
}
