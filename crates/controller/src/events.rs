//! Kubernetes Events (events.k8s.io/v1) about our objects: the translation's advisory events (`RouteShadowed`,
//! `HTTP2OverTLS`) and `ConfigRejected` on our Gateways when a proxy refuses the document (controller.md §7.2).
//!
//! A sync recomputes every event from scratch, so each is recorded once when it first appears, not on every sync:
//! the log keeps the set recorded by the previous sync and publishes only what is new. An event that goes away and
//! comes back is recorded again; one whose write failed is tried again at the next sync. kube-rs's [`Recorder`]
//! does the writing.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::Mutex;
use tunnelgate_gateway::ObjectEvent;

use crate::metrics::Metrics;

/// Publishes events that were not already recorded by the previous sync.
pub struct EventLog {
    recorder: Recorder,
    recorded: Mutex<BTreeSet<ObjectEvent>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

impl EventLog {
    /// `controller` and `instance` become the events' `reportingController` / `reportingInstance`.
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: controller.to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client, reporter),
            recorded: Mutex::default(),
        }
    }

    /// Records the events of `current` that the previous call did not; `uid` gives an object's UID (from the
    /// caches) so that `kubectl describe` finds the event. Returns how many writes failed.
    pub async fn record(
        &self,
        current: Vec<ObjectEvent>,
        uid: impl Fn(&ObjectEvent) -> Option<String>,
        metrics: &Metrics,
    ) -> usize {
        let mut recorded = self.recorded.lock().await;
        let mut kept = BTreeSet::new();
        let mut failed = 0;
        for event in current {
            if recorded.contains(&event) || kept.contains(&event) {
                kept.insert(event);
                continue;
            }
            let reference = ObjectReference {
                api_version: Some(event.api_version.clone()),
                kind: Some(event.kind.clone()),
                name: Some(event.name.clone()),
                namespace: event.namespace.clone(),
                uid: uid(&event),
                ..ObjectReference::default()
            };
            let ev = Event {
                type_: if event.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: event.reason.clone(),
                note: Some(truncate(&event.note, 1024)),
                action: "Reconcile".to_owned(),
                secondary: None,
            };
            match self.recorder.publish(&ev, &reference).await {
                Ok(()) => {
                    tracing::info!(kind = %event.kind, namespace = ?event.namespace, name = %event.name,
                        reason = %event.reason, note = %event.note, "event recorded");
                    metrics.status_write("Event", "success");
                    kept.insert(event);
                }
                Err(e) => {
                    tracing::warn!(kind = %event.kind, namespace = ?event.namespace, name = %event.name,
                        reason = %event.reason, error = %e, "event not recorded; trying again at the next sync");
                    metrics.status_write("Event", "error");
                    failed += 1;
                }
            }
        }
        *recorded = kept;
        failed
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", text.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("short", 1024), "short");
        let long = "é".repeat(600);
        let cut = truncate(&long, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with("..."));
        assert!(cut.trim_end_matches("...").chars().all(|c| c == 'é'));
    }
}
