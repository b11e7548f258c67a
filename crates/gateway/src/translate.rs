//! The translation entry point.

use crate::{Snapshot, TranslateOptions, Translation};

/// Translates a snapshot into the routing document and the status of every object we manage.
///
/// Interim: binding and rule emission are not implemented yet; this returns an empty document and no status.
pub fn translate(_snapshot: &Snapshot, _opts: &TranslateOptions) -> Translation {
    Translation {
        config: tunnelgate_config::Config::default(),
        statuses: Vec::new(),
    }
}
