//! The report of `tunnelgate routes check`: what the controller would do with a set of objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::{GATEWAY_API_VERSION, Snapshot, TranslateOptions, Translation, translate};

/// `{"config": <document>, "objects": [{apiVersion, kind, metadata: {namespace, name}, status}], "events":
/// [{regarding: {apiVersion, kind, metadata}, type, reason, note}]}` plus the routes that are not healthy (not
/// Accepted, or with unresolved refs, on any of our parents).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    pub document: Value,
    /// Every route that is not Accepted or has unresolved refs, in report order.
    pub unhealthy_routes: Vec<UnhealthyRoute>,
}

/// A route that would not serve as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnhealthyRoute {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `Type=False/Reason: message` of each failing condition of ours; empty when no parentRef names a Gateway
    /// of ours.
    pub problems: Vec<String>,
}

/// Translates `snapshot` and reports, for every GatewayClass, Gateway, HTTPRoute and GRPCRoute read, the
/// status the controller would write (`null` for objects that are not ours).
pub fn check(snapshot: &Snapshot, opts: &TranslateOptions) -> CheckReport {
    let translation = translate(snapshot, opts);
    report(snapshot, &translation, &opts.controller_name)
}

/// The report for an existing translation of `snapshot`.
pub fn report(snapshot: &Snapshot, translation: &Translation, controller_name: &str) -> CheckReport {
    let mut objects = Vec::new();
    let mut unhealthy_routes = Vec::new();
    let mut read: Vec<(&str, Option<&str>, &str)> = Vec::new();
    read.extend(
        snapshot
            .gateway_classes
            .iter()
            .map(|o| ("GatewayClass", None, name(&o.metadata.name))),
    );
    let mut gateways: Vec<_> = snapshot
        .gateways
        .iter()
        .map(|o| namespaced("Gateway", &o.metadata))
        .collect();
    let mut http: Vec<_> = snapshot
        .http_routes
        .iter()
        .map(|o| namespaced("HTTPRoute", &o.metadata))
        .collect();
    let mut grpc: Vec<_> = snapshot
        .grpc_routes
        .iter()
        .map(|o| namespaced("GRPCRoute", &o.metadata))
        .collect();
    let mut policies: Vec<_> = snapshot
        .backend_tls_policies
        .iter()
        .map(|o| namespaced("BackendTLSPolicy", &o.metadata))
        .collect();
    read.sort();
    gateways.sort();
    http.sort();
    grpc.sort();
    policies.sort();
    read.extend(gateways);
    read.extend(http);
    read.extend(grpc);
    read.extend(policies);
    for (kind, namespace, object_name) in read {
        let status = translation
            .statuses
            .iter()
            .find(|s| s.kind == kind && s.namespace.as_deref() == namespace && s.name == object_name);
        if kind.ends_with("Route") && !status.is_some_and(|s| s.route_is_healthy(controller_name)) {
            unhealthy_routes.push(UnhealthyRoute {
                kind: kind.to_owned(),
                namespace: namespace.unwrap_or("").to_owned(),
                name: object_name.to_owned(),
                problems: status
                    .map(|s| failing_conditions(&s.status, controller_name))
                    .unwrap_or_default(),
            });
        }
        let mut metadata = json!({ "name": object_name });
        if let Some(ns) = namespace {
            metadata["namespace"] = json!(ns);
        }
        objects.push(json!({
            "apiVersion": GATEWAY_API_VERSION,
            "kind": kind,
            "metadata": metadata,
            "status": status.map(|s| s.status.clone()).unwrap_or(Value::Null),
        }));
    }
    let config = serde_json::to_value(&translation.config).unwrap_or(Value::Null);
    let events: Vec<Value> = translation
        .events
        .iter()
        .map(|e| {
            let mut metadata = json!({ "name": e.name });
            if let Some(ns) = &e.namespace {
                metadata["namespace"] = json!(ns);
            }
            json!({
                "regarding": {"apiVersion": e.api_version, "kind": e.kind, "metadata": metadata},
                "type": if e.warning { "Warning" } else { "Normal" },
                "reason": e.reason,
                "note": e.note,
            })
        })
        .collect();
    CheckReport {
        document: json!({ "config": config, "objects": objects, "events": events }),
        unhealthy_routes,
    }
}

impl std::fmt::Display for UnhealthyRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}: ", self.kind, self.namespace, self.name)?;
        if self.problems.is_empty() {
            f.write_str("no parentRef names a Gateway served by tunnelgate")
        } else {
            f.write_str(&self.problems.join("; "))
        }
    }
}

fn failing_conditions(status: &Value, controller_name: &str) -> Vec<String> {
    let ours = status
        .get("parents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("controllerName").and_then(Value::as_str) == Some(controller_name));
    let mut problems = Vec::new();
    for parent in ours {
        for c in parent
            .get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
            let failing = match field("type") {
                "Accepted" | "ResolvedRefs" => field("status") == "False",
                "PartiallyInvalid" => field("status") == "True",
                _ => false,
            };
            let line = format!(
                "{}={}/{}: {}",
                field("type"),
                field("status"),
                field("reason"),
                field("message")
            );
            if failing && !problems.contains(&line) {
                problems.push(line);
            }
        }
    }
    if problems.is_empty() {
        problems.push("no parent entry accepted the route".to_owned());
    }
    problems
}

fn namespaced<'a>(kind: &'static str, meta: &'a ObjectMeta) -> (&'static str, Option<&'a str>, &'a str) {
    (kind, Some(name(&meta.namespace)), name(&meta.name))
}

fn name(field: &Option<String>) -> &str {
    field.as_deref().unwrap_or("")
}
