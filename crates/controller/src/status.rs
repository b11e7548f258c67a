//! Status writes (controller.md §6): which of the translated statuses to write, the controller's own
//! `tunnelgate.dev/ConfigPushed` and `tunnelgate.dev/CloudflareSynced` conditions, and the server-side apply
//! itself.
//!
//! The translation already merges other controllers' route parent entries and keeps `lastTransitionTime` for
//! unchanged conditions. What is decided here: skip writes that change nothing or would lower
//! `observedGeneration` (a stale cache), remove our entries from routes that no longer bind to us, and add push
//! health. Only the leader calls [`write`].

use gateway_api::backendtlspolicies::{BackendTlsPolicy, BackendTlsPolicyStatus};
use gateway_api::gatewayclasses::{GatewayClass, GatewayClassStatus};
use gateway_api::gateways::{Gateway, GatewayStatus};
use gateway_api::grpcroutes::{GrpcRoute, GrpcRouteStatus};
use gateway_api::httproutes::{HttpRoute, HttpRouteStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tunnelgate_gateway::ObjectStatus;

use crate::cloudflare::{CloudflareSynced, MAX_INGRESS_ENTRIES};
use crate::options::FIELD_MANAGER;
use crate::push::PushView;

/// Our condition reporting whether the proxies run the current document.
pub const CONFIG_PUSHED: &str = "tunnelgate.dev/ConfigPushed";
/// Our Gateway condition reporting whether the tunnel's ingress document in Cloudflare lists the routes' hostnames
/// (controller.md §9); present only while the sync is enabled.
pub const CLOUDFLARE_SYNCED: &str = "tunnelgate.dev/CloudflareSynced";

/// Adds `tunnelgate.dev/CloudflareSynced` to a translated Gateway status (other kinds are left alone: route status
/// does not depend on the Cloudflare API).
///
/// True/`Synced` when the remote document lists every hostname; True/`Truncated` when it is in step but cut at
/// 1,000 entries (the message says how many hostnames are missing); False with the failure's reason otherwise.
/// Before this leader's first attempt the condition found on the object is kept, or Unknown/`Pending` is set.
pub fn add_cloudflare_synced(
    status: &mut ObjectStatus,
    current: Option<&Value>,
    generation: Option<i64>,
    verdict: &CloudflareSynced,
    now: &Time,
) {
    if status.kind != "Gateway" {
        return;
    }
    let current_conditions = current.and_then(|c| c.get("conditions"));
    let mut c = match verdict {
        CloudflareSynced::Pending => match find_condition(current_conditions, CLOUDFLARE_SYNCED) {
            Some(found) => {
                let mut kept = found.clone();
                if let Some(g) = generation {
                    kept["observedGeneration"] = json!(g);
                }
                kept
            }
            None => {
                let mut c = condition(
                    CLOUDFLARE_SYNCED,
                    false,
                    "Pending",
                    "the tunnel's ingress document has not been synced with the Cloudflare API yet",
                    generation,
                    now,
                );
                c["status"] = json!("Unknown");
                c
            }
        },
        CloudflareSynced::Synced { listed, dropped: 0 } => condition(
            CLOUDFLARE_SYNCED,
            true,
            "Synced",
            &format!("the tunnel's ingress document in Cloudflare lists the routes' {listed} hostnames"),
            generation,
            now,
        ),
        CloudflareSynced::Synced { listed, dropped } => condition(
            CLOUDFLARE_SYNCED,
            true,
            "Truncated",
            &format!(
                "the tunnel's ingress document is limited to {MAX_INGRESS_ENTRIES} entries: it lists {listed} \
                 hostnames and leaves out {dropped}; routing through the tunnel is not affected"
            ),
            generation,
            now,
        ),
        CloudflareSynced::Failed { reason, message } => {
            condition(CLOUDFLARE_SYNCED, false, reason, message, generation, now)
        }
    };
    carry_transition_time(&mut c, current_conditions);
    push_condition(status.status.get_mut("conditions"), c);
}

/// Adds `tunnelgate.dev/ConfigPushed` to a translated status.
///
/// Gateways: False/`Rejected` when a proxy rejected the document, False/`PushFailing` while a ready proxy has
/// failed to take it for longer than the grace period, True/`Pushed` once every proxy runs it; while a push is
/// still in flight the condition found on the object is kept, so it does not flap.
/// Routes: False/`PushFailing` (or `Rejected`) on each of our parent entries while that holds; absent otherwise,
/// because `Accepted` does not depend on pushes.
pub fn add_config_pushed(
    status: &mut ObjectStatus,
    current: Option<&Value>,
    generation: Option<i64>,
    view: &PushView,
    controller_name: &str,
    now: &Time,
) {
    let failure = match (&view.rejected, &view.failing) {
        (Some(msg), _) => Some(("Rejected", msg.as_str())),
        (None, Some(msg)) => Some(("PushFailing", msg.as_str())),
        (None, None) => None,
    };
    match status.kind.as_str() {
        "Gateway" => {
            let current_conditions = current.and_then(|c| c.get("conditions"));
            let condition = match failure {
                Some((reason, msg)) => Some(condition(CONFIG_PUSHED, false, reason, msg, generation, now)),
                None if view.all_acked => Some(condition(
                    CONFIG_PUSHED,
                    true,
                    "Pushed",
                    "every proxy replica runs the current config",
                    generation,
                    now,
                )),
                None => find_condition(current_conditions, CONFIG_PUSHED).cloned(),
            };
            if let Some(mut c) = condition {
                carry_transition_time(&mut c, current_conditions);
                push_condition(status.status.get_mut("conditions"), c);
            }
        }
        "HTTPRoute" | "GRPCRoute" => {
            let Some((reason, msg)) = failure else {
                return;
            };
            let current_parents = current.and_then(|c| c.get("parents")).and_then(Value::as_array);
            let Some(parents) = status.status.get_mut("parents").and_then(Value::as_array_mut) else {
                return;
            };
            for parent in parents.iter_mut().filter(|p| is_ours(p, controller_name)) {
                let mut c = condition(CONFIG_PUSHED, false, reason, msg, generation, now);
                let before = current_parents
                    .into_iter()
                    .flatten()
                    .find(|p| is_ours(p, controller_name) && p.get("parentRef") == parent.get("parentRef"))
                    .and_then(|p| p.get("conditions"));
                carry_transition_time(&mut c, before);
                push_condition(parent.get_mut("conditions"), c);
            }
        }
        _ => {}
    }
}

/// The status to write to a route that still carries our parent entries but no longer binds to any of our
/// Gateways: the same list without ours. `None` when there is nothing of ours.
pub fn without_our_parents(current: &Value, controller_name: &str) -> Option<Value> {
    let parents = current.get("parents")?.as_array()?;
    if !parents.iter().any(|p| is_ours(p, controller_name)) {
        return None;
    }
    let kept: Vec<Value> = parents
        .iter()
        .filter(|p| !is_ours(p, controller_name))
        .cloned()
        .collect();
    Some(json!({"parents": kept}))
}

/// Whether writing `desired` would change anything: compared after both went through the kind's typed status (so
/// defaults and field order do not matter). A write that would lower `observedGeneration` is skipped too: the cache
/// is behind what some writer already saw.
pub fn needs_write(kind: &str, current: Option<&Value>, desired: &Value, controller_name: &str) -> bool {
    let desired = normalize(kind, desired);
    let current = current.map(|c| normalize(kind, c));
    if current.as_ref() == Some(&desired) {
        return false;
    }
    let seen = current
        .as_ref()
        .map_or(i64::MIN, |c| max_observed_generation(kind, c, controller_name));
    let ours = max_observed_generation(kind, &desired, controller_name);
    !(ours != i64::MIN && ours < seen)
}

/// Server-side applies `status` under our field manager, forcing ownership of the fields we send (route parents
/// are an atomic list, so the whole list is sent, other controllers' entries included).
pub async fn write(client: &kube::Client, status: &ObjectStatus) -> Result<(), kube::Error> {
    let body = json!({
        "apiVersion": status.api_version,
        "kind": status.kind,
        "metadata": {"name": status.name, "namespace": status.namespace},
        "status": status.status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    let ns = status.namespace.as_deref().unwrap_or_default();
    match status.kind.as_str() {
        "GatewayClass" => Api::<GatewayClass>::all(client.clone())
            .patch_status(&status.name, &params, &patch)
            .await
            .map(drop),
        "Gateway" => Api::<Gateway>::namespaced(client.clone(), ns)
            .patch_status(&status.name, &params, &patch)
            .await
            .map(drop),
        "HTTPRoute" => Api::<HttpRoute>::namespaced(client.clone(), ns)
            .patch_status(&status.name, &params, &patch)
            .await
            .map(drop),
        "GRPCRoute" => Api::<GrpcRoute>::namespaced(client.clone(), ns)
            .patch_status(&status.name, &params, &patch)
            .await
            .map(drop),
        "BackendTLSPolicy" => Api::<BackendTlsPolicy>::namespaced(client.clone(), ns)
            .patch_status(&status.name, &params, &patch)
            .await
            .map(drop),
        other => {
            tracing::warn!(kind = other, "no status writer for this kind");
            Ok(())
        }
    }
}

fn is_ours(parent: &Value, controller_name: &str) -> bool {
    parent.get("controllerName").and_then(Value::as_str) == Some(controller_name)
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    });
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

fn find_condition<'a>(conditions: Option<&'a Value>, kind: &str) -> Option<&'a Value> {
    conditions?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// Keeps the earlier `lastTransitionTime` when the status did not flip.
fn carry_transition_time(c: &mut Value, before: Option<&Value>) {
    let Some(kind) = c.get("type").and_then(Value::as_str) else {
        return;
    };
    if let Some(old) = find_condition(before, kind)
        && old.get("status") == c.get("status")
        && let Some(t) = old.get("lastTransitionTime")
    {
        c["lastTransitionTime"] = t.clone();
    }
}

/// Replaces a condition of the same type or appends it.
fn push_condition(conditions: Option<&mut Value>, c: Value) {
    let Some(list) = conditions.and_then(Value::as_array_mut) else {
        return;
    };
    list.retain(|old| old.get("type") != c.get("type"));
    list.push(c);
}

fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Value {
    serde_json::from_value::<T>(value.clone())
        .and_then(|t| serde_json::to_value(t))
        .unwrap_or_else(|_| value.clone())
}

fn normalize(kind: &str, value: &Value) -> Value {
    match kind {
        "GatewayClass" => round_trip::<GatewayClassStatus>(value),
        "Gateway" => round_trip::<GatewayStatus>(value),
        "HTTPRoute" => round_trip::<HttpRouteStatus>(value),
        "GRPCRoute" => round_trip::<GrpcRouteStatus>(value),
        "BackendTLSPolicy" => round_trip::<BackendTlsPolicyStatus>(value),
        _ => value.clone(),
    }
}

/// The highest `observedGeneration` among the conditions we own in `status`.
fn max_observed_generation(kind: &str, status: &Value, controller_name: &str) -> i64 {
    let from_conditions = |holder: &Value| {
        holder
            .get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("observedGeneration").and_then(Value::as_i64))
            .max()
            .unwrap_or(i64::MIN)
    };
    match kind {
        // Route parent entries and policy ancestor entries: only ours count.
        "HTTPRoute" | "GRPCRoute" | "BackendTLSPolicy" => status
            .get(if kind == "BackendTLSPolicy" {
                "ancestors"
            } else {
                "parents"
            })
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| is_ours(p, controller_name))
            .map(from_conditions)
            .max()
            .unwrap_or(i64::MIN),
        _ => {
            let listeners = status
                .get("listeners")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(from_conditions)
                .max()
                .unwrap_or(i64::MIN);
            from_conditions(status).max(listeners)
        }
    }
}

#[cfg(test)]
mod tests;
