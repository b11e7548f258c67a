//! Conditions with the status discipline of `controller.md` §6: `observedGeneration` is the object's current
//! generation, and `lastTransitionTime` moves only when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Builds the conditions of one condition holder (an object, a listener, a route parent entry).
pub(crate) struct Conditions<'a> {
    pub generation: Option<i64>,
    /// The holder's current conditions, as found on the object.
    pub previous: &'a [Condition],
    pub now: &'a Time,
}

impl Conditions<'_> {
    pub(crate) fn make(
        &self,
        kind: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Condition {
        let status = if status { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.now.clone());
        Condition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time,
        }
    }
}
