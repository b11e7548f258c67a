//! The optional Cloudflare API sync (controller.md §9): keeps the tunnel's remote ingress document, as the
//! Cloudflare dashboard shows it, in step with the hostnames the routes serve.
//!
//! Routing never depends on it: the proxies ignore remote configuration, so edge traffic reaches them whatever this
//! document says. What lives here:
//! - [`tunnel_ingress`], a pure function from the translated config to the ingress document;
//! - [`same_ingress`], the semantic comparison with what `GET …/configurations` returned, so that a `PUT` is sent
//!   only when something differs;
//! - [`api::ConfigurationsApi`], the HTTP client of the two calls;
//! - [`sync::run`], the leader's task that debounces, calls and backs off, and publishes a [`CloudflareSynced`]
//!   verdict for the Gateway condition `tunnelgate.dev/CloudflareSynced`.
//!
//! What it does not do: DNS records, tunnel creation, or reading any other part of the remote configuration.

pub mod api;
pub mod sync;

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;
use tunnelgate_config::Config;

/// The `service` of every hostname entry. A placeholder: the proxies ignore the remote document.
pub const PROXY_SERVICE: &str = "http://tunnelgate-proxy:8080";
/// The `service` of the final catch-all entry.
pub const CATCH_ALL_SERVICE: &str = "http_status:404";
/// Entries in the document at most, the catch-all included.
pub const MAX_INGRESS_ENTRIES: usize = 1000;

/// One entry of the tunnel's ingress list, as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub service: String,
}

/// The ingress list for the tunnel, and how many hostnames did not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelIngress {
    /// Hostname entries followed by the catch-all; never longer than [`MAX_INGRESS_ENTRIES`].
    pub entries: Vec<IngressEntry>,
    /// Distinct hostnames in the config.
    pub hostnames: usize,
    /// Hostnames left out because the list was full (the last wildcards, then the last exact names).
    pub dropped: usize,
}

/// What the last attempt to sync the ingress document came to; the source of `tunnelgate.dev/CloudflareSynced`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudflareSynced {
    /// No attempt has finished since this replica became leader.
    Pending,
    /// The remote document equals ours (already, or after a `PUT`).
    Synced {
        /// Hostname entries in the remote document.
        listed: usize,
        /// Hostnames that did not fit (the document is truncated when non-zero).
        dropped: usize,
    },
    /// The last attempt failed; `reason` is the condition reason.
    Failed { reason: &'static str, message: String },
}

impl TunnelIngress {
    /// The body of `PUT …/configurations`.
    pub fn put_body(&self) -> Value {
        serde_json::json!({"config": {"ingress": self.entries}})
    }
}

/// The tunnel's ingress document for `config`: one entry per distinct hostname of its rules, exact hostnames before
/// wildcards, each group sorted, ending with the catch-all `http_status:404`; at most [`MAX_INGRESS_ENTRIES`].
///
/// Rules without hostnames (a route and listener that both leave the hostname open) have nothing to list: the
/// catch-all stands for them.
pub fn tunnel_ingress(config: &Config) -> TunnelIngress {
    let mut exact = BTreeSet::new();
    let mut wildcard = BTreeSet::new();
    for host in config.rules.iter().flat_map(|r| r.hostnames.iter()) {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            continue;
        }
        if host.starts_with('*') {
            wildcard.insert(host);
        } else {
            exact.insert(host);
        }
    }
    let hostnames = exact.len() + wildcard.len();
    let room = MAX_INGRESS_ENTRIES - 1;
    let mut entries: Vec<IngressEntry> = exact
        .into_iter()
        .chain(wildcard)
        .take(room)
        .map(|h| IngressEntry {
            hostname: Some(h),
            service: PROXY_SERVICE.to_owned(),
        })
        .collect();
    entries.push(IngressEntry {
        hostname: None,
        service: CATCH_ALL_SERVICE.to_owned(),
    });
    TunnelIngress {
        entries,
        hostnames,
        dropped: hostnames.saturating_sub(room),
    }
}

/// Whether the `result` of `GET …/configurations` already holds `ours`: the same entries in the same order, each
/// with the same hostname and service and nothing else that changes routing (a `path`, or non-empty
/// `originRequest` settings, count as a difference, since a `PUT` would remove them). Field order, an absent versus
/// empty hostname, letter case and a trailing dot in hostnames do not count.
pub fn same_ingress(remote: &Value, ours: &[IngressEntry]) -> bool {
    let Some(list) = remote
        .get("result")
        .and_then(|r| r.get("config"))
        .and_then(|c| c.get("ingress"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    list.len() == ours.len()
        && list
            .iter()
            .zip(ours)
            .all(|(theirs, ours)| same_entry(theirs, ours))
}

fn same_entry(theirs: &Value, ours: &IngressEntry) -> bool {
    let hostname = theirs
        .get("hostname")
        .and_then(Value::as_str)
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| !h.is_empty());
    let unset = |key: &str| match theirs.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    };
    theirs.is_object()
        && hostname == ours.hostname
        && theirs.get("service").and_then(Value::as_str) == Some(ours.service.as_str())
        && unset("path")
        && unset("originRequest")
}

#[cfg(test)]
mod tests;
