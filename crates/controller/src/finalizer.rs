//! The GatewayClass finalizer (controller.md §6.1): `gateway-exists-finalizer.gateway.networking.k8s.io` is on
//! each of our GatewayClasses while any Gateway names it, so that the class cannot be deleted from under its
//! Gateways, and comes off once none does (a class being deleted then goes).
//!
//! Which classes need a change is a pure function of the snapshot; the write is a JSON merge patch of
//! `metadata.finalizers` that carries the cached `resourceVersion`, so a concurrent change by anyone else makes
//! it fail with a conflict (409) instead of losing their finalizer, and the next sync tries again from fresh data.

use std::collections::BTreeSet;

use gateway_api::gatewayclasses::GatewayClass;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tunnelgate_gateway::Snapshot;

use crate::options::FIELD_MANAGER;

/// The finalizer the Gateway API reserves for this purpose.
pub const GATEWAY_EXISTS_FINALIZER: &str = "gateway-exists-finalizer.gateway.networking.k8s.io";

/// One GatewayClass whose finalizers must change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizerChange {
    pub class: String,
    /// The `resourceVersion` the change was computed from.
    pub resource_version: Option<String>,
    /// The complete new `metadata.finalizers` (others' entries kept in their order).
    pub finalizers: Vec<String>,
    /// True when ours is added, false when it is removed.
    pub add: bool,
}

/// The finalizer changes our GatewayClasses need: ours added where some Gateway names the class, removed where
/// none does.
pub fn changes(snapshot: &Snapshot, controller_name: &str) -> Vec<FinalizerChange> {
    let referenced: BTreeSet<&str> = snapshot
        .gateways
        .iter()
        .map(|g| g.spec.gateway_class_name.as_str())
        .collect();
    let mut out: Vec<FinalizerChange> = snapshot
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == controller_name)
        .filter_map(|c| {
            change_for(
                c,
                referenced.contains(c.metadata.name.as_deref().unwrap_or_default()),
            )
        })
        .collect();
    out.sort_by(|a, b| a.class.cmp(&b.class));
    out
}

fn change_for(class: &GatewayClass, referenced: bool) -> Option<FinalizerChange> {
    let name = class.metadata.name.clone()?;
    let current = class.metadata.finalizers.as_deref().unwrap_or_default();
    let has = current.iter().any(|f| f == GATEWAY_EXISTS_FINALIZER);
    if has == referenced {
        return None;
    }
    // A class already being deleted gets no new finalizer: that would only hold up a deletion in progress.
    if referenced && class.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let mut finalizers: Vec<String> = current
        .iter()
        .filter(|f| *f != GATEWAY_EXISTS_FINALIZER)
        .cloned()
        .collect();
    if referenced {
        finalizers.push(GATEWAY_EXISTS_FINALIZER.to_owned());
    }
    Some(FinalizerChange {
        class: name,
        resource_version: class.metadata.resource_version.clone(),
        finalizers,
        add: referenced,
    })
}

/// Writes one change.
pub async fn write(client: &kube::Client, change: &FinalizerChange) -> Result<(), kube::Error> {
    let patch = json!({
        "metadata": {
            "resourceVersion": change.resource_version,
            "finalizers": change.finalizers,
        }
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    Api::<GatewayClass>::all(client.clone())
        .patch(&change.class, &params, &Patch::Merge(&patch))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;

    const OURS: &str = "tunnelgate.dev/gateway-controller";

    fn class(name: &str, controller: &str, finalizers: Value, deleting: bool) -> Arc<GatewayClass> {
        let mut metadata = json!({"name": name, "resourceVersion": "7", "finalizers": finalizers});
        if deleting {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(
            serde_json::from_value(json!({"metadata": metadata, "spec": {"controllerName": controller}}))
                .unwrap(),
        )
    }

    fn gateway(class: &str) -> Arc<tunnelgate_gateway::Gateway> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"namespace": "default", "name": format!("gw-{class}")},
                "spec": {"gatewayClassName": class, "listeners": []}}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn a_named_class_gets_the_finalizer_and_an_unnamed_one_loses_it_keeping_others() {
        let snapshot = Snapshot {
            gateway_classes: vec![
                class("used", OURS, json!(["example.net/keep"]), false),
                class(
                    "unused",
                    OURS,
                    json!(["example.net/keep", GATEWAY_EXISTS_FINALIZER]),
                    false,
                ),
                class("settled", OURS, json!([GATEWAY_EXISTS_FINALIZER]), false),
                class("theirs", "example.net/other", json!([]), false),
            ],
            gateways: vec![gateway("used"), gateway("settled"), gateway("theirs")],
            ..Snapshot::default()
        };
        let got = changes(&snapshot, OURS);
        assert_eq!(
            got,
            vec![
                FinalizerChange {
                    class: "unused".into(),
                    resource_version: Some("7".into()),
                    finalizers: vec!["example.net/keep".into()],
                    add: false,
                },
                FinalizerChange {
                    class: "used".into(),
                    resource_version: Some("7".into()),
                    finalizers: vec!["example.net/keep".into(), GATEWAY_EXISTS_FINALIZER.into()],
                    add: true,
                },
            ]
        );
    }

    #[test]
    fn a_class_being_deleted_loses_the_finalizer_only_once_unnamed_and_never_gains_it() {
        let deleting_used = Snapshot {
            gateway_classes: vec![class("c", OURS, json!([]), true)],
            gateways: vec![gateway("c")],
            ..Snapshot::default()
        };
        assert!(changes(&deleting_used, OURS).is_empty());
        let deleting_held = Snapshot {
            gateway_classes: vec![class("c", OURS, json!([GATEWAY_EXISTS_FINALIZER]), true)],
            gateways: vec![gateway("c")],
            ..Snapshot::default()
        };
        assert!(changes(&deleting_held, OURS).is_empty());
        let released = Snapshot {
            gateway_classes: vec![class("c", OURS, json!([GATEWAY_EXISTS_FINALIZER]), true)],
            ..Snapshot::default()
        };
        let got = changes(&released, OURS);
        assert_eq!(got.len(), 1);
        assert!(!got[0].add && got[0].finalizers.is_empty());
    }
}
