//! BackendTLSPolicy (`controller.md` §5.3): which policy applies to a Service port, the [`wire::BackendTls`] it
//! produces, and the ancestor status every policy should carry.
//!
//! A policy targets Services, optionally one port by name (`sectionName`). For a Service port, a policy naming
//! that port is more specific than one naming the whole Service and wins over it; between policies with the same
//! target the oldest wins (creation time, then namespace/name), and the others are `Conflicted` there.
//! The CA bundle is the `ca.crt` of each referenced ConfigMap in the policy's namespace, concatenated; with
//! `wellKnownCACertificates: System` the proxy's built-in roots are used. A policy whose CA cannot be read still
//! applies: the backends it covers fail closed (`unavailableStatus: 502`) rather than falling back to plain HTTP.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use gateway_api::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyStatusAncestors,
    BackendTlsPolicyValidationSubjectAltNamesType as SanType,
};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;
use tunnelgate_config as wire;

use crate::status::Conditions;
use crate::{GATEWAY_GROUP, Snapshot, TranslateOptions};

/// The key of a ConfigMap that holds the CA bundle.
const CA_KEY: &str = "ca.crt";

/// Status entries are written for at most this many ancestors per policy (the CRD's limit).
const MAX_ANCESTORS: usize = 16;

/// One policy, judged once per translation.
pub(crate) struct Policy<'a> {
    pub object: &'a BackendTlsPolicy,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The TLS settings, or why they cannot be built: (reason, message) of `ResolvedRefs=False`.
    pub tls: Result<Rc<wire::BackendTls>, (&'static str, String)>,
    /// `Accepted=False` (reason, message) when the policy itself is unusable.
    pub invalid: Option<(&'static str, String)>,
    /// Targets (Service, port name or whole Service) where another policy with the same target wins: an older
    /// one, or one as old and first by namespace/name.
    pub lost: Vec<String>,
    /// How many targets the policy names.
    pub targets: usize,
}

/// (namespace, Service, port name or `None` for the whole Service).
type TargetKey<'a> = (&'a str, &'a str, Option<&'a str>);

/// Every policy of a snapshot, and the winner per target.
#[derive(Default)]
pub(crate) struct Policies<'a> {
    pub list: Vec<Policy<'a>>,
    /// The winning policy (index in `list`) per target, and the policies it wins over.
    winners: HashMap<TargetKey<'a>, (usize, Vec<usize>)>,
    /// Invalid policies per target: they apply nowhere and win nothing, but report their status there.
    invalid: HashMap<TargetKey<'a>, Vec<usize>>,
}

impl<'a> Policies<'a> {
    pub(crate) fn new(snapshot: &'a Snapshot) -> Policies<'a> {
        let config_maps: HashMap<(&str, &str), &ConfigMap> = snapshot
            .config_maps
            .iter()
            .filter_map(|c| {
                Some((
                    (c.metadata.namespace.as_deref()?, c.metadata.name.as_deref()?),
                    &**c,
                ))
            })
            .collect();
        let mut ordered: Vec<&BackendTlsPolicy> =
            snapshot.backend_tls_policies.iter().map(|p| &**p).collect();
        ordered.sort_by(|a, b| {
            let key = |p: &'a BackendTlsPolicy| {
                (
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.metadata.namespace.as_deref().unwrap_or("default"),
                    p.metadata.name.as_deref().unwrap_or(""),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut out = Policies::default();
        for object in ordered {
            let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
            let name = object.metadata.name.as_deref().unwrap_or("");
            let index = out.list.len();
            let mut lost = Vec::new();
            let service_targets = || {
                object
                    .spec
                    .target_refs
                    .iter()
                    .filter(|t| t.group.is_empty() && t.kind == "Service")
            };
            let targets = service_targets().count();
            let invalid = invalid_reason(object, targets);
            for t in service_targets() {
                let key = (namespace, t.name.as_str(), t.section_name.as_deref());
                if invalid.is_some() {
                    out.invalid.entry(key).or_default().push(index);
                    continue;
                }
                match out.winners.get_mut(&key) {
                    Some((winner, losers)) => {
                        if *winner != index && !losers.contains(&index) {
                            losers.push(index);
                            let winner = out.list.get(*winner).map_or("", |p| p.name);
                            lost.push(match t.section_name.as_deref() {
                                Some(port) => {
                                    format!("Service {} port {port} (policy {winner} wins)", t.name)
                                }
                                None => format!("Service {} (policy {winner} wins)", t.name),
                            });
                        }
                    }
                    None => {
                        out.winners.insert(key, (index, Vec::new()));
                    }
                }
            }
            out.list.push(Policy {
                object,
                namespace,
                name,
                tls: tls_of(object, namespace, &config_maps),
                invalid,
                lost,
                targets,
            });
        }
        out
    }

    /// The policy that applies to port `port_name` of Service `namespace/service`, and every policy that targets
    /// that port (the applied one first), for their status.
    pub(crate) fn for_port(
        &self,
        namespace: &str,
        service: &str,
        port_name: Option<&str>,
    ) -> (Option<&Policy<'a>>, Vec<usize>) {
        let mut involved = Vec::new();
        let mut applied = None;
        let specific = port_name.filter(|n| !n.is_empty());
        let keys = [
            specific.map(|p| (namespace, service, Some(p))),
            Some((namespace, service, None)),
        ];
        for key in keys.into_iter().flatten() {
            if let Some((winner, losers)) = self.winners.get(&key) {
                if applied.is_none() {
                    applied = self.list.get(*winner);
                }
                involved.push(*winner);
                involved.extend(losers.iter().copied());
            }
            involved.extend(self.invalid.get(&key).into_iter().flatten().copied());
        }
        (applied, involved)
    }

    /// The status of every policy that some route of ours reaches, with one ancestor entry per Gateway in
    /// `ancestors` (policy index → Gateway (namespace, name)). Entries of other controllers are kept.
    pub(crate) fn statuses(
        &self,
        ancestors: &HashMap<usize, BTreeSet<(&str, &str)>>,
        opts: &TranslateOptions,
    ) -> Vec<(String, String, Value)> {
        let ours = opts.controller_name.as_str();
        let mut out = Vec::new();
        for (index, policy) in self.list.iter().enumerate() {
            let current = policy
                .object
                .status
                .as_ref()
                .map(|s| s.ancestors.as_slice())
                .unwrap_or_default();
            let had_ours = current.iter().any(|a| a.controller_name == ours);
            let gateways = ancestors.get(&index);
            if gateways.is_none() && !had_ours {
                continue;
            }
            let mut entries: Vec<Value> = current
                .iter()
                .filter(|a| a.controller_name != ours)
                .filter_map(|a| serde_json::to_value(a).ok())
                .collect();
            for &(namespace, name) in gateways.into_iter().flatten().take(MAX_ANCESTORS) {
                let previous = current
                    .iter()
                    .find(|a| {
                        a.controller_name == ours
                            && a.ancestor_ref.name == name
                            && a.ancestor_ref.namespace.as_deref().unwrap_or(policy.namespace) == namespace
                    })
                    .map(|a| a.conditions.as_slice())
                    .unwrap_or_default();
                let c = Conditions {
                    generation: policy.object.metadata.generation,
                    previous,
                    now: &opts.now,
                };
                let accepted = match (&policy.invalid, policy.lost.len()) {
                    (Some((reason, message)), _) => c.make("Accepted", false, reason, message.clone()),
                    (None, lost) if lost > 0 && lost >= policy.targets => c.make(
                        "Accepted",
                        false,
                        "Conflicted",
                        format!(
                            "another policy, older or first by name, wins every target: {}",
                            policy.lost.join("; ")
                        ),
                    ),
                    (None, 0) => c.make(
                        "Accepted",
                        true,
                        "Accepted",
                        format!("policy is accepted{}", ignored_options(policy.object)),
                    ),
                    (None, _) => c.make(
                        "Accepted",
                        true,
                        "Accepted",
                        format!(
                            "policy is accepted{}; another policy, older or first by name, applies instead to {}",
                            ignored_options(policy.object),
                            policy.lost.join("; ")
                        ),
                    ),
                };
                let resolved = match &policy.tls {
                    Ok(_) => c.make(
                        "ResolvedRefs",
                        true,
                        "ResolvedRefs",
                        "all references are resolved",
                    ),
                    Err((reason, message)) => c.make("ResolvedRefs", false, reason, message.clone()),
                };
                let entry = BackendTlsPolicyStatusAncestors {
                    ancestor_ref:
                        gateway_api::backendtlspolicies::BackendTlsPolicyStatusAncestorsAncestorRef {
                            group: Some(GATEWAY_GROUP.to_owned()),
                            kind: Some("Gateway".to_owned()),
                            name: name.to_owned(),
                            namespace: Some(namespace.to_owned()),
                            port: None,
                            section_name: None,
                        },
                    conditions: vec![accepted, resolved],
                    controller_name: ours.to_owned(),
                };
                entries.extend(serde_json::to_value(entry).ok());
            }
            let mut status = serde_json::Map::new();
            status.insert("ancestors".to_owned(), Value::Array(entries));
            out.push((
                policy.namespace.to_owned(),
                policy.name.to_owned(),
                Value::Object(status),
            ));
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }
}

/// `spec.options` are implementation-specific and this implementation defines none: an accepted policy says
/// which it did not apply (TLS then uses the proxy's defaults), rather than ignoring them silently.
fn ignored_options(policy: &BackendTlsPolicy) -> String {
    let keys: Vec<&str> = policy
        .spec
        .options
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    if keys.is_empty() {
        return String::new();
    }
    format!(
        "; options are not supported and were not applied: {}",
        keys.join(", ")
    )
}

/// `Accepted=False` of a policy that cannot apply at all.
fn invalid_reason(policy: &BackendTlsPolicy, targets: usize) -> Option<(&'static str, String)> {
    let v = &policy.spec.validation;
    let refs = v.ca_certificate_refs.as_deref().unwrap_or_default();
    if targets == 0 {
        return Some(("Invalid", "no targetRef names a Service".to_owned()));
    }
    if v.hostname.is_empty() {
        return Some(("Invalid", "validation.hostname is empty".to_owned()));
    }
    for san in v.subject_alt_names.iter().flatten() {
        match (&san.r#type, &san.hostname, &san.uri) {
            (SanType::Hostname, Some(h), _) if !h.is_empty() => {}
            (SanType::Uri, _, Some(u)) if !u.is_empty() => {}
            (SanType::Hostname, ..) => {
                return Some((
                    "Invalid",
                    "a subjectAltName of type Hostname has no hostname".to_owned(),
                ));
            }
            (SanType::Uri, ..) => {
                return Some(("Invalid", "a subjectAltName of type URI has no uri".to_owned()));
            }
        }
    }
    match (v.well_known_ca_certificates.as_deref(), refs.is_empty()) {
        (Some("System"), true) | (None, false) => None,
        (Some("System"), false) => Some((
            "Invalid",
            "caCertificateRefs and wellKnownCACertificates are mutually exclusive".to_owned(),
        )),
        (Some(other), _) => Some((
            "Invalid",
            format!("wellKnownCACertificates {other:?} is not supported (only System)"),
        )),
        (None, true) => Some((
            "Invalid",
            "one of caCertificateRefs and wellKnownCACertificates is required".to_owned(),
        )),
    }
}

/// The TLS settings of a policy: the CA bundle from its ConfigMaps (or the built-in roots), SNI and SANs.
fn tls_of(
    policy: &BackendTlsPolicy,
    namespace: &str,
    config_maps: &HashMap<(&str, &str), &ConfigMap>,
) -> Result<Rc<wire::BackendTls>, (&'static str, String)> {
    let v = &policy.spec.validation;
    let mut ca_bundle = String::new();
    for r in v.ca_certificate_refs.iter().flatten() {
        if !(r.group.is_empty() && r.kind == "ConfigMap") {
            let group = if r.group.is_empty() {
                "core"
            } else {
                r.group.as_str()
            };
            return Err((
                "InvalidKind",
                format!(
                    "caCertificateRef {}: kind {group}/{} is not supported",
                    r.name, r.kind
                ),
            ));
        }
        let Some(map) = config_maps.get(&(namespace, r.name.as_str())) else {
            return Err((
                "InvalidCACertificateRef",
                format!("caCertificateRef {namespace}/{}: ConfigMap not found", r.name),
            ));
        };
        let Some(pem) = map.data.as_ref().and_then(|d| d.get(CA_KEY)) else {
            return Err((
                "InvalidCACertificateRef",
                format!("caCertificateRef {namespace}/{}: no {CA_KEY} key", r.name),
            ));
        };
        if !tunnelgate_route::is_pem_certificates(pem.as_bytes()) {
            return Err((
                "InvalidCACertificateRef",
                format!(
                    "caCertificateRef {namespace}/{}: {CA_KEY} holds no PEM certificate",
                    r.name
                ),
            ));
        }
        ca_bundle.push_str(pem);
        if !ca_bundle.ends_with('\n') {
            ca_bundle.push('\n');
        }
    }
    let mut tls = wire::BackendTls {
        ca_bundle,
        server_name: v.hostname.clone(),
        ..wire::BackendTls::default()
    };
    for san in v.subject_alt_names.iter().flatten() {
        match (&san.r#type, &san.hostname, &san.uri) {
            (SanType::Hostname, Some(h), _) => tls.subject_alt_names.push(h.clone()),
            (SanType::Uri, _, Some(u)) => tls.subject_alt_name_uris.push(u.clone()),
            // Refused by `invalid_reason`: such a policy never applies.
            _ => {}
        }
    }
    Ok(Rc::new(tls))
}
