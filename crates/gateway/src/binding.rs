//! Gateways, their listeners, and binding routes to them (`controller.md` §3, §6.2, §6.3).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use gateway_api::gateways::{
    GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From,
    GatewayListenersAllowedRoutesNamespacesSelector as Selector,
};

use crate::backend::{ClientCertificate, Resolver, SecretRef};
use crate::hostname::Hostnames;
use crate::route::{ParentRef, Route, RouteKind};
use crate::{GATEWAY_GROUP, Gateway, Namespace};

/// The route kinds our listeners can carry, in `supportedKinds` order.
const SUPPORTED_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// One of our Gateways, evaluated.
#[derive(Debug)]
pub(crate) struct GatewayView<'a> {
    pub gateway: &'a Gateway,
    pub namespace: &'a str,
    pub name: &'a str,
    /// `None` when accepted; else (reason, message) for `Accepted=False`.
    pub rejected: Option<(&'static str, String)>,
    pub listeners: Vec<ListenerView<'a>>,
    /// `spec.tls.backend.clientCertificateRef`, when set: the certificate, or (reason, message) for the
    /// Gateway's `ResolvedRefs=False`.
    pub client_certificate: Option<Result<Rc<ClientCertificate>, (&'static str, String)>>,
}

#[derive(Debug)]
pub(crate) struct ListenerView<'a> {
    pub listener: &'a GatewayListeners,
    /// HTTP or HTTPS.
    pub protocol_supported: bool,
    /// Effective allowed kinds: the requested ones we support, or all we support when none are requested.
    pub kinds: Vec<&'static str>,
    /// Requested kinds we do not support.
    pub invalid_kinds: Vec<String>,
    /// (reason, message) for `ResolvedRefs=False` caused by `certificateRefs`.
    pub certificate_problem: Option<(&'static str, String)>,
    /// (reason, message) for `Conflicted=True`.
    pub conflict: Option<(&'static str, String)>,
    pub attached_routes: i32,
}

/// Why a route did not attach to a parent, most specific last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum BindFailure {
    NoMatchingParent,
    NotAllowedByListeners,
    NoMatchingListenerHostname,
}

/// A successful binding: which listeners accepted, and the narrowed hostnames.
#[derive(Debug)]
pub(crate) struct Binding {
    pub listeners: Vec<usize>,
    pub hostnames: Hostnames,
}

impl BindFailure {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            BindFailure::NoMatchingParent => "NoMatchingParent",
            BindFailure::NotAllowedByListeners => "NotAllowedByListeners",
            BindFailure::NoMatchingListenerHostname => "NoMatchingListenerHostname",
        }
    }
}

impl<'a> GatewayView<'a> {
    pub(crate) fn new(gateway: &'a Gateway, resolver: &Resolver<'_>) -> GatewayView<'a> {
        let namespace = gateway.metadata.namespace.as_deref().unwrap_or("default");
        let name = gateway.metadata.name.as_deref().unwrap_or("");
        let mut listeners: Vec<ListenerView<'a>> = gateway
            .spec
            .listeners
            .iter()
            .map(|l| ListenerView::new(l, namespace, resolver))
            .collect();
        mark_conflicts(&mut listeners);
        let rejected = if gateway.spec.addresses.as_ref().is_some_and(|a| !a.is_empty()) {
            Some((
                "UnsupportedAddress",
                "spec.addresses cannot be honoured: traffic reaches the Gateway through a Cloudflare Tunnel"
                    .to_owned(),
            ))
        } else if !listeners.iter().any(|l| l.protocol_supported) {
            Some((
                "ListenersNotValid",
                "no listener has a supported protocol (HTTP, HTTPS)".to_owned(),
            ))
        } else {
            None
        };
        let client_certificate = gateway
            .spec
            .tls
            .as_ref()
            .and_then(|t| t.backend.as_ref())
            .and_then(|b| b.client_certificate_ref.as_ref())
            .map(|r| {
                let r = SecretRef {
                    group: r.group.as_deref(),
                    kind: r.kind.as_deref(),
                    namespace: r.namespace.as_deref(),
                    name: &r.name,
                };
                resolver.client_certificate(namespace, &r).map(Rc::new)
            });
        GatewayView {
            gateway,
            namespace,
            name,
            rejected,
            listeners,
            client_certificate,
        }
    }

    /// Binds `route` through `parent` (already known to name this Gateway) to the listeners that accept it.
    pub(crate) fn bind(
        &self,
        route: &Route<'_>,
        parent: &ParentRef<'_>,
        namespaces: &NamespaceLabels<'_>,
    ) -> Result<Binding, BindFailure> {
        if self.rejected.is_some() {
            return Err(BindFailure::NoMatchingParent);
        }
        let mut worst = BindFailure::NoMatchingParent;
        let mut binding = Binding {
            listeners: Vec::new(),
            hostnames: Hostnames::Only(Vec::new()),
        };
        let mut any_hostnames: Option<Hostnames> = None;
        for (index, view) in self.listeners.iter().enumerate() {
            let l = view.listener;
            if parent.section_name.is_some_and(|s| s != l.name)
                || parent.key.port.is_some_and(|p| p != l.port)
            {
                continue;
            }
            if !view.protocol_supported
                || !view.kinds.contains(&route.kind.kind())
                || !self.namespace_allowed(view, route.namespace, namespaces)
            {
                worst = worst.max(BindFailure::NotAllowedByListeners);
                continue;
            }
            let Some(hostnames) = Hostnames::intersect(l.hostname.as_deref(), route.hostnames) else {
                worst = worst.max(BindFailure::NoMatchingListenerHostname);
                continue;
            };
            binding.listeners.push(index);
            any_hostnames = Some(match any_hostnames {
                None => hostnames,
                Some(h) => h.union(hostnames),
            });
        }
        match any_hostnames {
            Some(h) => {
                binding.hostnames = h;
                Ok(binding)
            }
            None => Err(worst),
        }
    }

    fn namespace_allowed(
        &self,
        view: &ListenerView<'_>,
        route_namespace: &str,
        namespaces: &NamespaceLabels<'_>,
    ) -> bool {
        let allowed = view
            .listener
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref());
        match allowed.and_then(|n| n.from.as_ref()) {
            None | Some(From::Same) => route_namespace == self.namespace,
            Some(From::All) => true,
            Some(From::Selector) => allowed
                .and_then(|n| n.selector.as_ref())
                .is_some_and(|s| selector_matches(s, |key| namespaces.label(route_namespace, key))),
        }
    }
}

impl<'a> ListenerView<'a> {
    fn new(
        listener: &'a GatewayListeners,
        gateway_namespace: &str,
        resolver: &Resolver<'_>,
    ) -> ListenerView<'a> {
        let protocol_supported = matches!(listener.protocol.as_str(), "HTTP" | "HTTPS");
        let mut kinds = Vec::new();
        let mut invalid_kinds = Vec::new();
        match listener.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
            Some(requested) if !requested.is_empty() => {
                for k in requested {
                    let group_ok = k.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP);
                    match SUPPORTED_KINDS.iter().find(|s| **s == k.kind) {
                        Some(s) if group_ok => {
                            if !kinds.contains(s) {
                                kinds.push(*s);
                            }
                        }
                        _ => invalid_kinds.push(k.kind.clone()),
                    }
                }
            }
            _ => kinds.extend(SUPPORTED_KINDS),
        }
        if !protocol_supported {
            kinds.clear();
        }
        let certificate_problem = if listener.protocol == "HTTPS" {
            certificate_problem(listener, gateway_namespace, resolver)
        } else {
            None
        };
        ListenerView {
            listener,
            protocol_supported,
            kinds,
            invalid_kinds,
            certificate_problem,
            conflict: None,
            attached_routes: 0,
        }
    }
}

/// `certificateRefs` are validated, never served (TLS ends at the Cloudflare edge): kind and cross-namespace
/// permission are checked, not the Secret's existence (the snapshot holds only the Secrets a client certificate
/// can come from).
fn certificate_problem(
    listener: &GatewayListeners,
    gateway_namespace: &str,
    resolver: &Resolver<'_>,
) -> Option<(&'static str, String)> {
    for r in listener
        .tls
        .iter()
        .flat_map(|t| t.certificate_refs.iter().flatten())
    {
        let r = SecretRef {
            group: r.group.as_deref(),
            kind: r.kind.as_deref(),
            namespace: r.namespace.as_deref(),
            name: &r.name,
        };
        if let Err(problem) =
            resolver.gateway_secret_ref(gateway_namespace, &r, "certificateRef", "InvalidCertificateRef")
        {
            return Some(problem);
        }
    }
    None
}

/// Listeners on one port must agree on the protocol, and must not repeat a hostname.
fn mark_conflicts(listeners: &mut [ListenerView<'_>]) {
    let snapshot: Vec<(i32, String, String)> = listeners
        .iter()
        .map(|l| {
            (
                l.listener.port,
                l.listener.protocol.clone(),
                l.listener
                    .hostname
                    .clone()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
            )
        })
        .collect();
    for (i, view) in listeners.iter_mut().enumerate() {
        let (port, protocol, hostname) = &snapshot[i];
        let same_port = snapshot
            .iter()
            .enumerate()
            .filter(|(j, o)| *j != i && o.0 == *port);
        let mut conflict = None;
        for (_, (_, other_protocol, other_hostname)) in same_port {
            if other_protocol != protocol {
                conflict = Some((
                    "ProtocolConflict",
                    format!("another listener on port {port} uses {other_protocol}"),
                ));
                break;
            }
            if other_hostname == hostname {
                conflict = Some((
                    "HostnameConflict",
                    format!("another {protocol} listener on port {port} has the same hostname"),
                ));
            }
        }
        view.conflict = conflict;
    }
}

/// The label the API server puts on every namespace, with the namespace's name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Namespace labels for `allowedRoutes.namespaces.selector`, including the `kubernetes.io/metadata.name` label
/// the API server puts on every namespace (added here too, so it works when the Namespace object is absent).
pub(crate) struct NamespaceLabels<'a> {
    by_name: HashMap<&'a str, &'a BTreeMap<String, String>>,
}

impl<'a> NamespaceLabels<'a> {
    pub(crate) fn new(namespaces: &'a [Arc<Namespace>]) -> NamespaceLabels<'a> {
        let by_name = namespaces
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.labels.as_ref()?)))
            .collect();
        NamespaceLabels { by_name }
    }

    /// The value of label `key` on `namespace`.
    fn label<'n>(&'n self, namespace: &'n str, key: &str) -> Option<&'n str> {
        if key == NAMESPACE_NAME_LABEL {
            return Some(namespace);
        }
        self.by_name.get(namespace)?.get(key).map(String::as_str)
    }
}

/// Kubernetes label selector semantics over a label lookup; an unknown operator matches nothing.
fn selector_matches<'l>(selector: &Selector, label: impl Fn(&str) -> Option<&'l str>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| label(k) == Some(v.as_str()));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        let value = label(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// Listener kinds in `supportedKinds` form.
pub(crate) fn route_kind_entry(kind: &str) -> serde_json::Value {
    serde_json::json!({"group": GATEWAY_GROUP, "kind": kind})
}

impl RouteKind {
    pub(crate) fn is_grpc(self) -> bool {
        self == RouteKind::Grpc
    }
}
