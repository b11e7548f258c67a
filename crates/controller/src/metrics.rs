//! Controller metrics (controller.md §10), exposed on `--metrics-addr` at `/metrics`.
//!
//! The `cftunnel_*` names are the Go project's, kept so its dashboards keep working. The Cloudflare API metrics stay
//! at zero unless the Cloudflare sync is on.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeValue {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorTypeLabel {
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiCallLabels {
    pub method: String,
    pub resource: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiResourceLabels {
    pub method: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindResultLabels {
    pub kind: String,
    pub result: String,
}

/// Every metric the controller keeps.
pub struct Metrics {
    registry: Registry,
    pub sync_duration: Family<StatusLabel, Histogram>,
    pub synced_routes: Family<TypeValue, Gauge>,
    pub failed_backend_refs: Family<TypeValue, Gauge>,
    pub sync_errors: Family<ErrorTypeLabel, Counter>,
    pub routes_by_status: Family<StatusLabel, Gauge>,
    pub config_version: Gauge,
    pub config_rules: Gauge,
    pub config_bytes: Gauge,
    pub proxy_targets: Family<StateLabel, Gauge>,
    pub proxy_push: Family<ResultLabel, Counter>,
    pub proxy_push_duration: Histogram,
    pub proxy_target_version: Family<TargetLabel, Gauge>,
    pub is_leader: Gauge,
    pub status_writes: Family<KindResultLabels, Counter>,
    pub reconciles: Family<ResultLabel, Counter>,
    pub cloudflare_api_calls: Family<ApiCallLabels, Counter>,
    pub cloudflare_api_duration: Family<ApiResourceLabels, Histogram>,
    pub cloudflare_syncs: Family<ResultLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let sync_duration =
            Family::<StatusLabel, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
        let proxy_push_duration = duration_histogram();
        let cloudflare_api_duration = Family::<ApiResourceLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let m = Self {
            sync_duration: sync_duration.clone(),
            synced_routes: Family::default(),
            failed_backend_refs: Family::default(),
            sync_errors: Family::default(),
            routes_by_status: Family::default(),
            config_version: Gauge::default(),
            config_rules: Gauge::default(),
            config_bytes: Gauge::default(),
            proxy_targets: Family::default(),
            proxy_push: Family::default(),
            proxy_push_duration: proxy_push_duration.clone(),
            proxy_target_version: Family::default(),
            is_leader: Gauge::default(),
            status_writes: Family::default(),
            reconciles: Family::default(),
            cloudflare_api_calls: Family::default(),
            cloudflare_api_duration: cloudflare_api_duration.clone(),
            cloudflare_syncs: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "cftunnel_sync_duration_seconds",
            "Duration of a full sync, by outcome",
            sync_duration,
        );
        registry.register(
            "cftunnel_synced_routes",
            "Routes in the last synced document, by kind",
            m.synced_routes.clone(),
        );
        registry.register(
            "cftunnel_failed_backend_refs",
            "Backends emitted as unavailable in the last document, by route kind",
            m.failed_backend_refs.clone(),
        );
        registry.register(
            "cftunnel_sync_errors",
            "Failed syncs, by error type",
            m.sync_errors.clone(),
        );
        registry.register(
            "tunnelgate_routes",
            "Our HTTPRoutes by status: accepted, not_accepted, unresolved_refs, push_failing",
            m.routes_by_status.clone(),
        );
        registry.register(
            "tunnelgate_config_version",
            "Version of the current document",
            m.config_version.clone(),
        );
        registry.register(
            "tunnelgate_config_rules",
            "Rules in the current document",
            m.config_rules.clone(),
        );
        registry.register(
            "tunnelgate_config_bytes",
            "Size of the current document in bytes",
            m.config_bytes.clone(),
        );
        registry.register(
            "tunnelgate_proxy_targets",
            "Proxy replicas by push state: acked, pending, failing",
            m.proxy_targets.clone(),
        );
        registry.register(
            "tunnelgate_proxy_push",
            "Config pushes by result",
            m.proxy_push.clone(),
        );
        registry.register(
            "tunnelgate_proxy_push_duration_seconds",
            "Duration of one PUT /config",
            proxy_push_duration,
        );
        registry.register(
            "tunnelgate_proxy_target_acked_version",
            "Document version last acknowledged by each proxy replica",
            m.proxy_target_version.clone(),
        );
        registry.register(
            "tunnelgate_is_leader",
            "1 while this replica holds the leader lease",
            m.is_leader.clone(),
        );
        registry.register(
            "tunnelgate_status_writes",
            "Status writes by kind and result",
            m.status_writes.clone(),
        );
        registry.register("tunnelgate_reconciles", "Syncs by result", m.reconciles.clone());
        registry.register(
            "cftunnel_cloudflare_api_calls",
            "Cloudflare API calls by method, resource and HTTP status (\"error\" when there was no answer)",
            m.cloudflare_api_calls.clone(),
        );
        registry.register(
            "cftunnel_cloudflare_api_duration_seconds",
            "Duration of one Cloudflare API call",
            cloudflare_api_duration,
        );
        registry.register(
            "tunnelgate_cloudflare_syncs",
            "Cloudflare tunnel ingress sync attempts by result: updated, unchanged, error, missing_token, missing_ids",
            m.cloudflare_syncs.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn sync_error(&self, error_type: &str) {
        self.sync_errors
            .get_or_create(&ErrorTypeLabel {
                error_type: error_type.to_owned(),
            })
            .inc();
    }

    pub fn push_result(&self, result: &str) {
        self.proxy_push
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn status_write(&self, kind: &str, result: &str) {
        self.status_writes
            .get_or_create(&KindResultLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn cloudflare_api_call(&self, method: &str, resource: &str, status: &str, seconds: f64) {
        self.cloudflare_api_calls
            .get_or_create(&ApiCallLabels {
                method: method.to_owned(),
                resource: resource.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.cloudflare_api_duration
            .get_or_create(&ApiResourceLabels {
                method: method.to_owned(),
                resource: resource.to_owned(),
            })
            .observe(seconds);
    }

    pub fn cloudflare_sync(&self, result: &str) {
        self.cloudflare_syncs
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn reconcile(&self, result: &str) {
        self.reconciles
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        let m = Metrics::default();
        m.push_result("ok");
        m.status_write("HTTPRoute", "ok");
        m.is_leader.set(1);
        m.cloudflare_api_call("GET", "tunnel_configurations", "200", 0.1);
        m.cloudflare_sync("unchanged");
        m.sync_duration
            .get_or_create(&StatusLabel {
                status: "success".into(),
            })
            .observe(0.01);
        let text = m.encode();
        for name in [
            "tunnelgate_proxy_push_total{result=\"ok\"} 1",
            "tunnelgate_status_writes_total{kind=\"HTTPRoute\",result=\"ok\"} 1",
            "tunnelgate_is_leader 1",
            "cftunnel_sync_duration_seconds_count{status=\"success\"} 1",
            "# TYPE tunnelgate_proxy_push_duration_seconds histogram",
            "cftunnel_cloudflare_api_calls_total{method=\"GET\",resource=\"tunnel_configurations\",status=\"200\"} 1",
            "cftunnel_cloudflare_api_duration_seconds_count{method=\"GET\",resource=\"tunnel_configurations\"} 1",
            "tunnelgate_cloudflare_syncs_total{result=\"unchanged\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
