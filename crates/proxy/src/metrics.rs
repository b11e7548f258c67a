//! Prometheus metrics of the proxy (config-api.md §9). Names of the `cftunnel_proxy_*` families match the Go
//! project so that its dashboards keep working.
//!
//! Per-hostname handles ([`HostMetrics`]) are resolved on a pattern's first request and kept in the table's
//! slot for it (and carried over by later applies), so the request path only looks a handle up by the matched
//! pattern and bumps atomics: no label allocation and no lock per request after the first.

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;

/// The `hostname` label value for requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// `status_class` label values, indexed by [`StatusClass`].
const STATUS_CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "aborted", "other"];

/// `reason` label values of backend errors, indexed by [`BackendErrorReason`].
const BACKEND_ERROR_REASONS: [&str; 7] = [
    "dial",
    "timeout",
    "tls",
    "canceled",
    "ws_dial",
    "ws_handshake",
    "other",
];

/// How a request ended, for `cftunnel_proxy_requests_total{status_class}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Status(u16),
    Aborted,
}

/// Why a backend exchange failed, for `cftunnel_proxy_backend_errors_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorReason {
    Dial = 0,
    Timeout = 1,
    Tls = 2,
    Canceled = 3,
    WsDial = 4,
    WsHandshake = 5,
    Other = 6,
}

impl BackendErrorReason {
    /// The `reason` label value (also the `error.type` of a traced backend call).
    pub fn label(self) -> &'static str {
        BACKEND_ERROR_REASONS[self as usize]
    }
}

/// Results of `PUT /config`, for `tunnelgate_proxy_config_applies_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyResult {
    Ok,
    Stale,
    Invalid,
    Unauthorized,
    TooLarge,
    UnsupportedMediaType,
}

/// Results of mirror requests, for `tunnelgate_proxy_mirror_requests_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorResult {
    Sent,
    SkippedBody,
    DroppedOverload,
    Failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    hostname: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostClassLabels {
    hostname: String,
    status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostReasonLabels {
    hostname: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the proxy exports, plus the registry they live in.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) in_flight: Gauge,
    pub(crate) websocket_sessions: Gauge,
    request_duration: HistogramFamily<HostLabels>,
    requests: Family<HostClassLabels, Counter>,
    backend_errors: Family<HostReasonLabels, Counter>,
    request_bytes: Family<HostLabels, Counter>,
    response_bytes: Family<HostLabels, Counter>,
    pub(crate) config_version: Gauge,
    pub(crate) config_rules: Gauge,
    config_applies: Family<ResultLabels, Counter>,
    pub(crate) config_apply_seconds: Histogram,
    mirror_requests: Family<ResultLabels, Counter>,
    unmatched: Arc<HostMetrics>,
    registry: Registry,
}

/// Pre-resolved metric handles of one hostname pattern.
#[derive(Debug, Clone)]
pub struct HostMetrics {
    requests: [Counter; 7],
    backend_errors: [Counter; 7],
    pub(crate) duration: Histogram,
    pub(crate) request_bytes: Counter,
    pub(crate) response_bytes: Counter,
}

/// One slot per hostname pattern of a table, filled with the pattern's handles on its first request.
pub type HostMetricsIndex = FxHashMap<Box<str>, OnceLock<Arc<HostMetrics>>>;

/// RSS, CPU time and open file descriptors of this process, read from `/proc` on each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Metrics {
    /// Creates the proxy metrics inside `registry`, which may already hold metrics of other components (the
    /// tunnel registers its own there before the server starts).
    pub fn new(mut registry: Registry) -> Self {
        let in_flight = Gauge::default();
        let websocket_sessions = Gauge::default();
        let request_duration: HistogramFamily<HostLabels> = Family::new_with_constructor(duration_histogram);
        let requests = Family::<HostClassLabels, Counter>::default();
        let backend_errors = Family::<HostReasonLabels, Counter>::default();
        let request_bytes = Family::<HostLabels, Counter>::default();
        let response_bytes = Family::<HostLabels, Counter>::default();
        let config_version = Gauge::default();
        let config_rules = Gauge::default();
        let config_applies = Family::<ResultLabels, Counter>::default();
        let config_apply_seconds = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        let mirror_requests = Family::<ResultLabels, Counter>::default();

        registry.register(
            "cftunnel_proxy_requests_in_flight",
            "Requests currently being served",
            in_flight.clone(),
        );
        registry.register(
            "cftunnel_proxy_websocket_active_sessions",
            "Open WebSocket and other upgraded sessions",
            websocket_sessions.clone(),
        );
        registry.register(
            "cftunnel_proxy_request_duration_seconds",
            "Request duration by matched hostname pattern",
            request_duration.clone(),
        );
        registry.register(
            "cftunnel_proxy_requests",
            "Requests by matched hostname pattern and status class",
            requests.clone(),
        );
        registry.register(
            "cftunnel_proxy_backend_errors",
            "Backend failures by matched hostname pattern and reason",
            backend_errors.clone(),
        );
        registry.register(
            "cftunnel_proxy_request_bytes",
            "Request body bytes received from clients",
            request_bytes.clone(),
        );
        registry.register(
            "cftunnel_proxy_response_bytes",
            "Response body bytes sent to clients",
            response_bytes.clone(),
        );
        registry.register(
            "tunnelgate_proxy_config_version",
            "Version of the active config",
            config_version.clone(),
        );
        registry.register(
            "tunnelgate_proxy_config_rules",
            "Rules in the active config",
            config_rules.clone(),
        );
        registry.register(
            "tunnelgate_proxy_config_applies",
            "PUT /config outcomes",
            config_applies.clone(),
        );
        registry.register(
            "tunnelgate_proxy_config_apply_seconds",
            "Time to compile and install a config",
            config_apply_seconds.clone(),
        );
        registry.register(
            "tunnelgate_proxy_mirror_requests",
            "RequestMirror outcomes",
            mirror_requests.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));

        let mut metrics = Self {
            in_flight,
            websocket_sessions,
            request_duration,
            requests,
            backend_errors,
            request_bytes,
            response_bytes,
            config_version,
            config_rules,
            config_applies,
            config_apply_seconds,
            mirror_requests,
            unmatched: Arc::new(HostMetrics::placeholder()),
            registry,
        };
        metrics.unmatched = Arc::new(metrics.host(UNMATCHED));
        metrics
    }

    /// Resolves (creating when new) the handles for one hostname pattern.
    pub fn host(&self, hostname: &str) -> HostMetrics {
        let requests = STATUS_CLASSES.map(|status_class| {
            self.requests
                .get_or_create(&HostClassLabels {
                    hostname: hostname.to_owned(),
                    status_class,
                })
                .clone()
        });
        let backend_errors = BACKEND_ERROR_REASONS.map(|reason| {
            self.backend_errors
                .get_or_create(&HostReasonLabels {
                    hostname: hostname.to_owned(),
                    reason,
                })
                .clone()
        });
        let labels = HostLabels {
            hostname: hostname.to_owned(),
        };
        HostMetrics {
            requests,
            backend_errors,
            duration: self.request_duration.get_or_create(&labels).clone(),
            request_bytes: self.request_bytes.get_or_create(&labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&labels).clone(),
        }
    }

    /// Removes every series labelled with `hostname`, once no config routes that pattern any more, so that the
    /// label set stays bounded by the patterns of the active config rather than growing with every pattern ever
    /// applied. A pattern that comes back starts from zero (a counter reset, which Prometheus handles).
    /// Requests still in flight keep their handles; what they count after this is not exported. The `unmatched`
    /// series are never removed.
    pub fn forget_host(&self, hostname: &str) {
        if hostname == UNMATCHED {
            return;
        }
        for status_class in STATUS_CLASSES {
            self.requests.remove(&HostClassLabels {
                hostname: hostname.to_owned(),
                status_class,
            });
        }
        for reason in BACKEND_ERROR_REASONS {
            self.backend_errors.remove(&HostReasonLabels {
                hostname: hostname.to_owned(),
                reason,
            });
        }
        let labels = HostLabels {
            hostname: hostname.to_owned(),
        };
        self.request_duration.remove(&labels);
        self.request_bytes.remove(&labels);
        self.response_bytes.remove(&labels);
    }

    /// Handles for requests that matched no route.
    pub fn unmatched(&self) -> &Arc<HostMetrics> {
        &self.unmatched
    }

    pub fn config_apply(&self, result: ApplyResult) {
        let result = match result {
            ApplyResult::Ok => "ok",
            ApplyResult::Stale => "stale",
            ApplyResult::Invalid => "invalid",
            ApplyResult::Unauthorized => "unauthorized",
            ApplyResult::TooLarge => "too_large",
            ApplyResult::UnsupportedMediaType => "unsupported_media_type",
        };
        self.config_applies.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn mirror(&self, result: MirrorResult) {
        let result = match result {
            MirrorResult::Sent => "sent",
            MirrorResult::SkippedBody => "skipped_body",
            MirrorResult::DroppedOverload => "dropped_overload",
            MirrorResult::Failed => "failed",
        };
        self.mirror_requests.get_or_create(&ResultLabels { result }).inc();
    }

    /// The Prometheus text exposition (format 0.0.4) of every registered metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl HostMetrics {
    /// Handles that are not registered anywhere; replaced right after construction.
    fn placeholder() -> Self {
        Self {
            requests: Default::default(),
            backend_errors: Default::default(),
            duration: duration_histogram(),
            request_bytes: Counter::default(),
            response_bytes: Counter::default(),
        }
    }

    pub fn request_done(&self, class: StatusClass, seconds: f64) {
        let index = match class {
            StatusClass::Status(s @ 100..=599) => usize::from(s / 100 - 1),
            StatusClass::Status(_) => 6,
            StatusClass::Aborted => 5,
        };
        self.requests[index].inc();
        self.duration.observe(seconds);
    }

    pub fn backend_error(&self, reason: BackendErrorReason) {
        self.backend_errors[reason as usize].inc();
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stat) = ProcessStat::read() else {
            return Ok(());
        };
        let rss = ConstGauge::new(stat.rss_bytes as f64);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?)?;
        let cpu = ConstGauge::new(stat.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let fds = ConstGauge::new(stat.open_fds as f64);
        fds.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Number of open file descriptors",
            None,
            fds.metric_type(),
        )?)?;
        Ok(())
    }
}

struct ProcessStat {
    rss_bytes: u64,
    cpu_seconds: f64,
    open_fds: usize,
}

impl ProcessStat {
    /// Linux only; elsewhere the collector exports nothing.
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may contain spaces; fields after the closing parenthesis are space-separated.
        let after = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        // After the name: state(0) ... utime(11) stime(12) ... rss(21), in pages.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let rss_pages: u64 = fields.get(21)?.parse().ok()?;
        // USER_HZ is 100 and pages are 4 KiB on every Linux target we build for.
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Some(Self {
            rss_bytes: rss_pages * 4096,
            cpu_seconds: (utime + stime) / 100.0,
            open_fds,
        })
    }
}

/// Prometheus default buckets plus 30 s, as in the Go project.
fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}
