//! The translation entry point: classes → Gateways → routes → rules, then status for all of them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};
use tunnelgate_config as wire;

use crate::backend::{ClientCertificate, RefProblem, ResolvedBackend, Resolver, weighted_backends};
use crate::binding::{BindFailure, Binding, GatewayView, NamespaceLabels, route_kind_entry};
use crate::hostname::Hostnames;
use crate::route::{Filter, ParentKey, ParentRef, Route, RouteObject, Rule};
use crate::status::Conditions;
use crate::{
    GATEWAY_API_VERSION, GATEWAY_GROUP, GatewayClass, ObjectEvent, ObjectStatus, Snapshot, TranslateOptions,
    Translation,
};

/// A route parentRef of ours and how binding went: (Gateway index, binding) or (reason, message).
type ParentOutcome<'r> = (
    &'r ParentRef<'r>,
    Result<(usize, Binding), (&'static str, String)>,
);

/// The `Accepted=False` message of a GRPCRoute under [`TranslateOptions::reject_grpc_routes`].
const GRPC_OVER_QUIC: &str = "GRPCRoutes are not served while the proxies run the tunnel over QUIC \
     (--tunnel-protocol=quic): the Cloudflare edge does not carry the HTTP/2 trailers gRPC needs over QUIC; use \
     auto or http2";

/// Translates a snapshot into the routing document and the status of every object we manage.
///
/// Pure and deterministic: the same snapshot and options give the same result.
pub fn translate(snapshot: &Snapshot, opts: &TranslateOptions) -> Translation {
    let resolver = Resolver::new(snapshot, opts);
    let namespaces = NamespaceLabels::new(&snapshot.namespaces);
    let mut statuses = Vec::new();

    let mut classes: Vec<&GatewayClass> = snapshot
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == opts.controller_name)
        .map(|c| &**c)
        .collect();
    classes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut accepted_classes = HashSet::new();
    for class in classes {
        let (status, accepted) = class_status(class, opts);
        if accepted {
            accepted_classes.insert(class.metadata.name.as_deref().unwrap_or(""));
        }
        statuses.push(ObjectStatus {
            api_version: GATEWAY_API_VERSION.to_owned(),
            kind: "GatewayClass".to_owned(),
            namespace: None,
            name: class.metadata.name.clone().unwrap_or_default(),
            status,
        });
    }

    let adopt_all = opts.adopt_gateways_without_class && snapshot.gateway_classes.is_empty();
    let mut gateways: Vec<GatewayView<'_>> = snapshot
        .gateways
        .iter()
        .filter(|g| adopt_all || accepted_classes.contains(g.spec.gateway_class_name.as_str()))
        .map(|g| GatewayView::new(g, &resolver))
        .collect();
    gateways.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
    let gateway_index: HashMap<(&str, &str), usize> = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| ((g.namespace, g.name), i))
        .collect();
    let known_gateways: HashSet<(&str, &str)> = snapshot
        .gateways
        .iter()
        .map(|g| {
            (
                g.metadata.namespace.as_deref().unwrap_or("default"),
                g.metadata.name.as_deref().unwrap_or(""),
            )
        })
        .collect();

    let mut http: Vec<Route<'_>> = snapshot.http_routes.iter().map(|r| r.read()).collect();
    let mut grpc: Vec<Route<'_>> = snapshot.grpc_routes.iter().map(|r| r.read()).collect();
    // Rule order encodes the spec's tie-breaks: oldest route first, then namespace/name.
    for routes in [&mut http, &mut grpc] {
        routes.sort_unstable_by_key(|r| (r.created.map(|t| t.0), r.namespace, r.name));
    }

    // Phase 1: bind every route and build its rules. Validation waits until all candidate rules are known, so
    // that the proxy's compiler runs once over the whole document instead of once per rule.
    let mut pending: Vec<PendingRoute<'_>> = Vec::new();
    let mut candidates = wire::Config::default();
    let mut owners: Vec<(usize, usize)> = Vec::new();
    for route in http.iter_mut().chain(grpc.iter_mut()) {
        // Each rule is built once, so its parts move into the document instead of being copied.
        let mut rules = std::mem::take(&mut route.rules);
        let route: &Route<'_> = route;
        let mut outcomes: Vec<ParentOutcome<'_>> = Vec::new();
        for parent in &route.parent_refs {
            if parent.key.group != GATEWAY_GROUP || parent.key.kind != "Gateway" {
                continue;
            }
            let namespace = parent.namespace;
            match gateway_index.get(&(namespace, parent.key.name)) {
                Some(&g) => {
                    let result = gateways[g]
                        .bind(route, parent, &namespaces)
                        .map(|b| (g, b))
                        .map_err(|f| (f.reason(), bind_message(f, &gateways[g])));
                    outcomes.push((parent, result));
                }
                // In file mode every Gateway is ours, so a reference to a missing one is our business.
                None if adopt_all && !known_gateways.contains(&(namespace, parent.key.name)) => {
                    outcomes.push((
                        parent,
                        Err((
                            BindFailure::NoMatchingParent.reason(),
                            format!("Gateway {namespace}/{} not found", parent.key.name),
                        )),
                    ));
                }
                None => {}
            }
        }
        if opts.reject_grpc_routes && route.kind.is_grpc() {
            for (_, outcome) in &mut outcomes {
                if outcome.is_ok() {
                    *outcome = Err(("UnsupportedValue", GRPC_OVER_QUIC.to_owned()));
                }
            }
        }

        // The client certificate backends reached over TLS present: that of the first Gateway (in parentRefs
        // order) that takes the route and has one. The document has one rule for all of a route's parents.
        let client_certificate = outcomes.iter().find_map(|(_, outcome)| match outcome {
            Ok((g, _)) => gateways[*g].client_certificate.as_ref()?.as_ref().ok().cloned(),
            Err(_) => None,
        });
        let mut hostnames: Option<Hostnames> = None;
        for (_, outcome) in &outcomes {
            if let Ok((_, binding)) = outcome {
                let h = binding.hostnames.clone();
                hostnames = Some(match hostnames {
                    None => h,
                    Some(prev) => prev.union(h),
                });
            }
        }
        let mut entry = PendingRoute {
            route,
            rules: Vec::new(),
            outcomes,
            problems: Vec::new(),
            policies: BTreeSet::new(),
            dropped: Vec::new(),
            emitted: 0,
        };
        if !entry.outcomes.is_empty() {
            // Rules are built even when no parent accepts the route, so that ResolvedRefs tells the truth.
            let config_hostnames = hostnames.clone().map(Hostnames::into_config).unwrap_or_default();
            for (index, rule) in rules.iter_mut().enumerate() {
                let refs = (&mut entry.problems, &mut entry.policies);
                match build_rule(rule, route, &config_hostnames, &resolver, refs) {
                    Ok(mut r) if hostnames.is_some() => {
                        if let Some(certificate) = &client_certificate {
                            present_client_certificate(&mut r, certificate);
                        }
                        candidates.rules.push(r);
                        owners.push((pending.len(), index));
                    }
                    Ok(_) => {}
                    Err(message) => entry.dropped.push(dropped_message(rule, index, &message)),
                }
            }
        }
        entry.rules = rules;
        pending.push(entry);
    }

    // Phase 2: rules the proxy would reject are dropped from their route.
    let invalid = crate::validate::invalid_rules(&candidates);
    let mut config = wire::Config::default();
    // The (route, rule index) of each rule in `config`.
    let mut emitted: Vec<(usize, usize)> = Vec::new();
    for (position, rule) in candidates.rules.into_iter().enumerate() {
        let (owner, index) = owners[position];
        let entry = &mut pending[owner];
        match invalid.get(&position) {
            Some(message) => {
                let dropped = dropped_message(&entry.rules[index], index, message);
                entry.dropped.push(dropped);
            }
            None => {
                entry.emitted += 1;
                config.has_grpc_route |= entry.route.kind.is_grpc();
                config.rules.push(rule);
                emitted.push((owner, index));
            }
        }
    }

    let mut events = shadowed_routes(&config, &emitted, &pending);

    // Phase 3: attachment counts and route status.
    let mut route_statuses = Vec::new();
    let mut policy_ancestors: HashMap<usize, BTreeSet<(&str, &str)>> = HashMap::new();
    for mut entry in pending {
        for (_, outcome) in &entry.outcomes {
            if let Ok((g, _)) = outcome {
                let gateway = (gateways[*g].namespace, gateways[*g].name);
                for &p in &entry.policies {
                    policy_ancestors.entry(p).or_default().insert(gateway);
                }
            }
        }
        // Rule order in the messages follows the route, whichever phase dropped the rule.
        entry.dropped.sort_by_key(|(index, _)| *index);
        let dropped: Vec<String> = entry.dropped.into_iter().map(|(_, m)| m).collect();
        let accepted_somewhere = entry.outcomes.iter().any(|(_, o)| o.is_ok());
        let all_dropped = accepted_somewhere && entry.emitted == 0 && !dropped.is_empty();
        if !all_dropped {
            let mut attached: BTreeSet<(usize, usize)> = BTreeSet::new();
            for (_, outcome) in &entry.outcomes {
                if let Ok((g, binding)) = outcome {
                    attached.extend(binding.listeners.iter().map(|l| (*g, *l)));
                }
            }
            for (g, l) in attached {
                gateways[g].listeners[l].attached_routes += 1;
            }
        }
        let route = entry.route;
        if let Some(status) = route_status(
            route,
            &entry.outcomes,
            &entry.problems,
            &dropped,
            all_dropped,
            opts,
        ) {
            route_statuses.push((route.kind.is_grpc(), route.namespace, route.name, status));
        }
    }

    for g in &gateways {
        statuses.push(ObjectStatus {
            api_version: GATEWAY_API_VERSION.to_owned(),
            kind: "Gateway".to_owned(),
            namespace: Some(g.namespace.to_owned()),
            name: g.name.to_owned(),
            status: gateway_status(g, opts),
        });
    }
    route_statuses.sort_unstable_by_key(|(grpc, namespace, name, _)| (*grpc, *namespace, *name));
    statuses.extend(
        route_statuses
            .into_iter()
            .map(|(grpc, namespace, name, status)| ObjectStatus {
                api_version: GATEWAY_API_VERSION.to_owned(),
                kind: if grpc { "GRPCRoute" } else { "HTTPRoute" }.to_owned(),
                namespace: Some(namespace.to_owned()),
                name: name.to_owned(),
                status,
            }),
    );
    statuses.extend(
        resolver
            .policies
            .statuses(&policy_ancestors, opts)
            .into_iter()
            .map(|(namespace, name, status)| ObjectStatus {
                api_version: GATEWAY_API_VERSION.to_owned(),
                kind: "BackendTLSPolicy".to_owned(),
                namespace: Some(namespace),
                name,
                status,
            }),
    );
    events.extend(resolver.events());
    // A Service port resolved for an HTTPRoute and for a GRPCRoute reports the same thing twice.
    events.sort();
    events.dedup();
    Translation {
        config,
        statuses,
        events,
    }
}

/// Events `RouteShadowed` (`controller.md` §6.4): a match of a route that is identical, on the same hostname, to a
/// match of an earlier route (older, or as old and first by namespace/name) never fires, because the earlier one
/// takes precedence. Advisory only: nothing is dropped.
fn shadowed_routes(
    config: &wire::Config,
    emitted: &[(usize, usize)],
    pending: &[PendingRoute<'_>],
) -> Vec<ObjectEvent> {
    /// Shadowed matches listed in one Event; the count says how many more there are.
    const LISTED: usize = 5;
    let implicit = wire::RouteMatch::default();
    let mut first: HashMap<(&str, &wire::RouteMatch), usize> = HashMap::new();
    // Per shadowed route: its descriptions of shadowed matches.
    let mut shadowed: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (rule, &(owner, index)) in config.rules.iter().zip(emitted) {
        let matches = if rule.matches.is_empty() {
            std::slice::from_ref(&implicit)
        } else {
            rule.matches.as_slice()
        };
        let hostnames: Vec<&str> = if rule.hostnames.is_empty() {
            vec![""]
        } else {
            rule.hostnames.iter().map(String::as_str).collect()
        };
        for hostname in hostnames {
            for (m, condition) in matches.iter().enumerate() {
                let earlier = *first.entry((hostname, condition)).or_insert(owner);
                if earlier != owner {
                    let older = pending[earlier].route;
                    let host = if hostname.is_empty() {
                        "any hostname"
                    } else {
                        hostname
                    };
                    shadowed.entry(owner).or_default().push(format!(
                        "rule {index} match {m} on {host} is identical to a match of {} {}/{}",
                        older.kind.kind(),
                        older.namespace,
                        older.name
                    ));
                }
            }
        }
    }
    shadowed
        .into_iter()
        .map(|(owner, lines)| {
            let route = pending[owner].route;
            let more = lines.len().saturating_sub(LISTED);
            let mut note = lines.into_iter().take(LISTED).collect::<Vec<_>>().join("; ");
            if more > 0 {
                note.push_str(&format!("; and {more} more"));
            }
            note.push_str(
                ": the earlier route (older, or as old and first by namespace/name) takes precedence",
            );
            ObjectEvent {
                api_version: GATEWAY_API_VERSION.to_owned(),
                kind: route.kind.kind().to_owned(),
                namespace: Some(route.namespace.to_owned()),
                name: route.name.to_owned(),
                warning: true,
                reason: "RouteShadowed".to_owned(),
                note,
            }
        })
        .collect()
}

/// A route between binding and status: its parent outcomes, reference problems, and rules dropped so far
/// (rule index, message).
struct PendingRoute<'r> {
    route: &'r Route<'r>,
    /// The route's rules, taken out of `route` and emptied of what went into the document.
    rules: Vec<Rule>,
    outcomes: Vec<ParentOutcome<'r>>,
    problems: Vec<RefProblem>,
    /// The BackendTLSPolicies of the Service ports the route's backends and mirrors reach.
    policies: BTreeSet<usize>,
    dropped: Vec<(usize, String)>,
    emitted: usize,
}

/// `Dropped Rule <index|name>: <error>` (`controller.md` §5.6).
fn dropped_message(rule: &Rule, index: usize, message: &str) -> (usize, String) {
    let label = rule.name.clone().unwrap_or_else(|| index.to_string());
    (index, format!("Dropped Rule {label}: {message}"))
}

fn bind_message(failure: BindFailure, gateway: &GatewayView<'_>) -> String {
    let gw = format!("{}/{}", gateway.namespace, gateway.name);
    match failure {
        BindFailure::NoMatchingParent if gateway.rejected.is_some() => {
            format!("Gateway {gw} is not accepted")
        }
        BindFailure::NoMatchingParent => format!("no listener of Gateway {gw} matches the sectionName/port"),
        BindFailure::NotAllowedByListeners => {
            format!("the listeners of Gateway {gw} do not allow this route's kind or namespace")
        }
        BindFailure::NoMatchingListenerHostname => {
            format!("no hostname of this route intersects a listener hostname of Gateway {gw}")
        }
    }
}

/// One config rule, or why the rule is dropped (`controller.md` §5.6). Reference problems are collected into
/// `problems` whether or not the rule survives. The rule's matches, filters and timeouts move into the result.
fn build_rule(
    rule: &mut Rule,
    route: &Route<'_>,
    hostnames: &[String],
    resolver: &Resolver<'_>,
    (problems, policies): (&mut Vec<RefProblem>, &mut BTreeSet<usize>),
) -> Result<wire::RouteRule, String> {
    let mut unavailable_status = 0;
    let mut filters = Vec::new();
    let apply_filter = |filters: &mut Vec<wire::RouteFilter>,
                        filter: Filter,
                        problems: &mut Vec<RefProblem>,
                        policies: &mut BTreeSet<usize>| match filter {
        Filter::Wire(f) => {
            filters.push(*f);
            true
        }
        Filter::Mirror { target, percent } => {
            let (resolved, problem) = resolver.resolve(&target, route.kind, route.namespace);
            policies.extend(resolved.policies.iter().copied());
            if let Some(mut p) = problem {
                p.message = format!("RequestMirror {}", p.message);
                problems.push(p);
            } else if resolved.unavailable_status == 0
                && let Some(url) = resolved.urls.first()
            {
                let mut f = wire::RouteFilter::new(wire::FilterType::RequestMirror);
                f.request_mirror = Some(Box::new(wire::RequestMirror {
                    backend_url: url.clone(),
                    percent,
                    tls: resolved.tls.as_deref().cloned().map(Box::new),
                    protocol: resolved.protocol.to_owned(),
                }));
                filters.push(f);
            }
            true
        }
        Filter::Unsupported(message) => {
            problems.push(RefProblem {
                reason: "UnsupportedValue",
                message: format!("{message} (IncompatibleFilters)"),
            });
            false
        }
    };
    for f in std::mem::take(&mut rule.filters) {
        if !apply_filter(&mut filters, f, problems, policies) {
            unavailable_status = 500;
        }
    }
    let mut resolved_backends = Vec::new();
    for b in std::mem::take(&mut rule.backends) {
        let (target, problem) = resolver.resolve(&b.target, route.kind, route.namespace);
        problems.extend(problem);
        policies.extend(target.policies.iter().copied());
        let mut backend_filters = Vec::new();
        let mut filter_failed = false;
        for f in b.filters {
            if !apply_filter(&mut backend_filters, f, problems, policies) {
                filter_failed = true;
            }
        }
        resolved_backends.push(ResolvedBackend {
            weight: b.weight,
            target,
            filters: backend_filters,
            filter_failed,
        });
    }
    if let Some(problem) = rule.invalid.first() {
        return Err(problem.clone());
    }
    let out = wire::RouteRule {
        hostnames: hostnames.to_vec(),
        matches: std::mem::take(&mut rule.matches),
        filters,
        backends: weighted_backends(resolved_backends),
        timeouts: std::mem::take(&mut rule.timeouts),
        unavailable_status,
    };
    let all_prefix = out.matches.iter().all(|m| {
        m.path
            .as_ref()
            .is_none_or(|p| p.kind == wire::PathMatchType::PathPrefix)
    });
    let replaces_prefix = out
        .filters
        .iter()
        .chain(out.backends.iter().flat_map(|b| b.filters.iter()))
        .any(|f| {
            f.url_rewrite
                .as_ref()
                .and_then(|r| r.path.as_ref())
                .is_some_and(|p| p.kind == wire::PathModifierType::ReplacePrefixMatch)
                || f.request_redirect
                    .as_ref()
                    .and_then(|r| r.path.as_ref())
                    .is_some_and(|p| p.kind == wire::PathModifierType::ReplacePrefixMatch)
        });
    if replaces_prefix && !all_prefix {
        return Err("ReplacePrefixMatch needs every match of the rule to be a PathPrefix match".to_owned());
    }
    Ok(out)
}

/// Gives every TLS backend and TLS mirror target of `rule` the Gateway's client certificate.
fn present_client_certificate(rule: &mut wire::RouteRule, certificate: &ClientCertificate) {
    let present = |tls: &mut Option<Box<wire::BackendTls>>| {
        if let Some(tls) = tls {
            tls.client_cert_pem.clone_from(&certificate.cert_pem_b64);
            tls.client_key_pem.clone_from(&certificate.key_pem_b64);
        }
    };
    let mut filters: Vec<&mut wire::RouteFilter> = rule.filters.iter_mut().collect();
    for backend in &mut rule.backends {
        present(&mut backend.tls);
        filters.extend(backend.filters.iter_mut());
    }
    for mirror in filters.into_iter().filter_map(|f| f.request_mirror.as_mut()) {
        present(&mut mirror.tls);
    }
}

fn class_status(class: &GatewayClass, opts: &TranslateOptions) -> (Value, bool) {
    let previous = class
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let c = Conditions {
        generation: class.metadata.generation,
        previous,
        now: &opts.now,
    };
    let accepted = class.spec.parameters_ref.is_none();
    let accepted_condition = if accepted {
        c.make(
            "Accepted",
            true,
            "Accepted",
            "GatewayClass is accepted by tunnelgate",
        )
    } else {
        c.make(
            "Accepted",
            false,
            "InvalidParameters",
            "parametersRef is not supported: tunnelgate has no parameters kind",
        )
    };
    let supported = match opts.bundle_version.as_deref() {
        None => c.make(
            "SupportedVersion",
            true,
            "SupportedVersion",
            "the Gateway API CRD bundle version was not checked",
        ),
        Some(v) if v.starts_with("v1.5.") || v.starts_with("v1.6.") => c.make(
            "SupportedVersion",
            true,
            "SupportedVersion",
            format!("Gateway API bundle {v} is supported"),
        ),
        Some(v) => c.make(
            "SupportedVersion",
            false,
            "UnsupportedVersion",
            format!("Gateway API bundle {v} is not supported; use v1.5.x or v1.6.x"),
        ),
    };
    (json!({ "conditions": [accepted_condition, supported] }), accepted)
}

fn gateway_status(g: &GatewayView<'_>, opts: &TranslateOptions) -> Value {
    let current = g.gateway.status.as_ref();
    let previous = current.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let c = Conditions {
        generation: g.gateway.metadata.generation,
        previous,
        now: &opts.now,
    };
    let accepted = g.rejected.is_none();
    let mut conditions = vec![match &g.rejected {
        None => c.make("Accepted", true, "Accepted", "Gateway is accepted"),
        Some((reason, message)) => c.make("Accepted", false, reason, message.clone()),
    }];
    conditions.push(programmed(&c, accepted, opts.config_acknowledged));
    match &g.client_certificate {
        None => {}
        Some(Ok(_)) => conditions.push(c.make(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "the backend client certificate (spec.tls.backend.clientCertificateRef) is resolved",
        )),
        Some(Err((reason, message))) => {
            conditions.push(c.make("ResolvedRefs", false, reason, message.clone()))
        }
    }

    let mut listeners = Vec::new();
    for view in &g.listeners {
        let l = view.listener;
        let previous = current
            .and_then(|s| s.listeners.as_ref())
            .and_then(|ls| ls.iter().find(|x| x.name == l.name))
            .map_or(&[][..], |x| x.conditions.as_slice());
        let lc = Conditions {
            generation: g.gateway.metadata.generation,
            previous,
            now: &opts.now,
        };
        let mut conds = Vec::new();
        conds.push(if !view.protocol_supported {
            lc.make(
                "Accepted",
                false,
                "UnsupportedProtocol",
                format!("protocol {} is not supported; use HTTP or HTTPS", l.protocol),
            )
        } else if l.protocol == "HTTPS" {
            lc.make(
                "Accepted",
                true,
                "Accepted",
                "TLS is terminated at the Cloudflare edge: certificateRefs are validated but not served, and the \
                 listener port does not affect routing",
            )
        } else {
            lc.make(
                "Accepted",
                true,
                "Accepted",
                "the listener port does not affect routing: the Cloudflare edge decides the client-facing ports",
            )
        });
        conds.push(if !view.invalid_kinds.is_empty() {
            lc.make(
                "ResolvedRefs",
                false,
                "InvalidRouteKinds",
                format!("unsupported route kinds: {}", view.invalid_kinds.join(", ")),
            )
        } else if let Some((reason, message)) = &view.certificate_problem {
            lc.make("ResolvedRefs", false, reason, message.clone())
        } else {
            lc.make(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "all references are resolved",
            )
        });
        conds.push(programmed(
            &lc,
            accepted && view.protocol_supported,
            opts.config_acknowledged,
        ));
        conds.push(match &view.conflict {
            Some((reason, message)) => lc.make("Conflicted", true, reason, message.clone()),
            None => lc.make("Conflicted", false, "NoConflicts", "no conflicts"),
        });
        listeners.push(json!({
            "name": l.name,
            "supportedKinds": view.kinds.iter().map(|k| route_kind_entry(k)).collect::<Vec<_>>(),
            "attachedRoutes": view.attached_routes,
            "conditions": conds,
        }));
    }
    let mut status = json!({ "conditions": conditions, "listeners": listeners });
    if accepted && !opts.gateway_addresses.is_empty() {
        status["addresses"] = opts
            .gateway_addresses
            .iter()
            .map(|a| json!({"type": "Hostname", "value": a}))
            .collect();
    }
    status
}

fn programmed(c: &Conditions<'_>, valid: bool, acknowledged: bool) -> Condition {
    if !valid {
        c.make("Programmed", false, "Invalid", "not accepted, so not programmed")
    } else if acknowledged {
        c.make(
            "Programmed",
            true,
            "Programmed",
            "the routing document is served by the proxies",
        )
    } else {
        c.make(
            "Programmed",
            false,
            "Pending",
            "waiting for a proxy to acknowledge the routing document",
        )
    }
}

/// The route's whole `.status`: other controllers' parent entries unchanged, then ours. `None` when we have
/// nothing to say and nothing of ours to remove.
fn route_status(
    route: &Route<'_>,
    outcomes: &[ParentOutcome<'_>],
    problems: &[RefProblem],
    dropped: &[String],
    all_dropped: bool,
    opts: &TranslateOptions,
) -> Option<Value> {
    let ours = opts.controller_name.as_str();
    let had_ours = route.current_parents.iter().any(|p| p.controller_name == ours);
    if outcomes.is_empty() && !had_ours {
        return None;
    }
    let mut parents: Vec<Value> = route
        .current_parents
        .iter()
        .filter(|p| p.controller_name != ours)
        .map(|p| p.entry.to_json())
        .collect();
    let mut seen: Vec<&ParentKey<'_>> = Vec::new();
    for (parent, outcome) in outcomes {
        // Two identical parentRefs share one status entry.
        if seen.contains(&&parent.key) {
            continue;
        }
        seen.push(&parent.key);
        let previous = route.current_conditions(&parent.key, ours);
        let c = Conditions {
            generation: route.generation,
            previous,
            now: &opts.now,
        };
        let mut conditions = vec![match outcome {
            Ok(_) if all_dropped => c.make("Accepted", false, "UnsupportedValue", dropped.join("; ")),
            Ok(_) => c.make("Accepted", true, "Accepted", "route is accepted"),
            Err((reason, message)) => c.make("Accepted", false, reason, message.clone()),
        }];
        conditions.push(match problems.first() {
            None => c.make(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "all references are resolved",
            ),
            Some(first) => c.make(
                "ResolvedRefs",
                false,
                first.reason,
                problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        });
        if !dropped.is_empty() && !all_dropped && outcome.is_ok() {
            conditions.push(c.make("PartiallyInvalid", true, "UnsupportedValue", dropped.join("; ")));
        }
        // Built by hand rather than with `json!`, which would copy the values it is given.
        let mut entry = serde_json::Map::new();
        entry.insert("parentRef".to_owned(), parent.echo.to_json());
        entry.insert(
            "controllerName".to_owned(),
            Value::String(opts.controller_name.clone()),
        );
        entry.insert(
            "conditions".to_owned(),
            serde_json::to_value(&conditions).unwrap_or(Value::Null),
        );
        parents.push(Value::Object(entry));
    }
    let mut status = serde_json::Map::new();
    status.insert("parents".to_owned(), Value::Array(parents));
    Some(Value::Object(status))
}
