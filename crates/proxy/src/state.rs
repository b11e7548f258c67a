//! The proxy's shared state: the active routing table (one `ArcSwap` snapshot), the version rules of
//! config-api.md §6, readiness (§7) and the backend pools that belong to the active table.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;
use tunnelgate_config::Config;
use tunnelgate_route::{RouteTable, Upstream};

use crate::metrics::{ApplyResult, HostMetrics, HostMetricsIndex, Metrics};
use crate::pool::UpstreamClient;

/// Shared proxy state. Cheap to clone.
#[derive(Clone)]
pub struct ProxyState {
    shared: Arc<Shared>,
}

struct Shared {
    active: ArcSwap<Active>,
    /// Serialises the version check and the pointer store; readers never take it.
    apply_lock: Mutex<()>,
    draining: AtomicBool,
    tunnel_mode: AtomicBool,
    tunnel_registered: AtomicBool,
    metrics: Metrics,
}

/// One installed table and everything that changes with it. Requests hold an `Arc` to it until they finish,
/// which keeps the pools they use alive across swaps.
pub struct Active {
    pub table: RouteTable,
    /// `current_version`: never lowered by a version-0 apply.
    pub version: i64,
    pub applied_at: Option<SystemTime>,
    /// The config's `hasGrpcRoute`: the tunnel's `auto` protocol choice reads it (tunnel.md §11).
    pub has_grpc_route: bool,
    pub hosts: HostMetricsIndex,
    pub clients: Clients,
}

/// The backend pools of one table, one per upstream. A pool is created on its upstream's first request, not by
/// the apply: a 10,000-rule document names thousands of upstreams, and a pool (connector, TLS settings, idle
/// list) costs a few hundred bytes to kilobytes each, most of it for upstreams that may never see a request
/// before the next swap. Pools that did serve are carried over by later applies.
#[derive(Default)]
pub struct Clients {
    slots: FxHashMap<Arc<Upstream>, OnceLock<Arc<UpstreamClient>>>,
}

/// The status object of `GET /config` (config-api.md §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigStatus {
    pub version: i64,
    pub ready: bool,
    pub rules: usize,
    pub applied_at: Option<SystemTime>,
}

/// The snapshot an apply replaced. Freeing a 10,000-rule table takes milliseconds of `free` calls, so the
/// config API hands it to a blocking thread ([`Retired::release`]) after replying instead of freeing it on the
/// apply path. Dropping it anywhere is correct too.
#[must_use = "drop it, or release it off the request path"]
pub struct Retired(Arc<Active>);

/// A successful apply: the new status, the snapshot it replaced, and how long each step took (logged by the
/// config API, so an operator can see where an apply's time went).
#[must_use = "drop the retired snapshot, or release it off the request path"]
pub struct Applied {
    pub status: ConfigStatus,
    pub retired: Retired,
    pub phases: ApplyPhases,
}

/// How long [`Retired::release`] waited for in-flight requests, and how long the free took (zero when a request
/// still held the snapshot: the last of them frees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub wait: Duration,
    pub free: Duration,
}

/// Wall time of the steps of one apply on the applying thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyPhases {
    /// `RouteTable::compile`.
    pub compile: Duration,
    /// Backend pool slots set up, the pools of the previous table carried over.
    pub pools: Duration,
    /// The host metrics index.
    pub hosts: Duration,
    /// Waiting for the apply lock, the version check and the pointer store.
    pub swap: Duration,
}

/// How long [`Retired::release`] waits for in-flight requests to let go of the old snapshot before leaving the
/// last reference to them (a long response or a WebSocket session may hold it for hours).
const RETIRE_WAIT: Duration = Duration::from_secs(5);

/// Why a document was not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Validation or compilation failed; nothing changed.
    #[error("{message}")]
    Invalid { message: String, path: Option<String> },
    /// `0 < received < current`; nothing changed.
    #[error("stale config version")]
    Stale { current: i64, received: i64 },
}

impl ProxyState {
    /// Fresh state with no config (not ready). Proxy metrics are added to `registry`, which may already hold
    /// metrics of other components.
    pub fn new(registry: Registry) -> Self {
        let metrics = Metrics::new(registry);
        let active = Active {
            table: RouteTable::empty(),
            version: 0,
            applied_at: None,
            has_grpc_route: false,
            hosts: HostMetricsIndex::default(),
            clients: Clients::default(),
        };
        Self {
            shared: Arc::new(Shared {
                active: ArcSwap::from_pointee(active),
                apply_lock: Mutex::new(()),
                draining: AtomicBool::new(false),
                tunnel_mode: AtomicBool::new(false),
                tunnel_registered: AtomicBool::new(false),
                metrics,
            }),
        }
    }

    /// Validates, compiles and installs `config` with the version rules of config-api.md §6.2. Compilation
    /// happens before the apply lock is taken; only the version check and the pointer store run under it.
    pub fn apply(&self, config: &Config) -> Result<ConfigStatus, ApplyError> {
        self.apply_retiring(config).map(|applied| applied.status)
    }

    /// [`ProxyState::apply`] that hands back the replaced snapshot instead of dropping it, so the caller can free
    /// it after replying. CPU-bound (a 10,000-rule document takes tens of milliseconds): call it from a blocking
    /// thread, not from an async task.
    pub fn apply_retiring(&self, config: &Config) -> Result<Applied, ApplyError> {
        let started = Instant::now();
        let metrics = &self.shared.metrics;
        let result = self.apply_inner(config);
        match &result {
            Ok(_) => {
                metrics.config_apply(ApplyResult::Ok);
                metrics
                    .config_apply_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(ApplyError::Invalid { .. }) => metrics.config_apply(ApplyResult::Invalid),
            Err(ApplyError::Stale { .. }) => metrics.config_apply(ApplyResult::Stale),
        }
        result
    }

    fn apply_inner(&self, config: &Config) -> Result<Applied, ApplyError> {
        let started = Instant::now();
        if config.version < 0 {
            return Err(ApplyError::Invalid {
                message: "version must be >= 0".into(),
                path: Some("version".into()),
            });
        }
        let table = RouteTable::compile(config).map_err(|e| match e.errors.first() {
            Some(first) => ApplyError::Invalid {
                message: first.message.clone(),
                path: (!first.path.is_empty()).then(|| first.path.clone()),
            },
            None => ApplyError::Invalid {
                message: e.to_string(),
                path: None,
            },
        })?;
        let compiled = Instant::now();

        // Carry over the pools (and their warm connections) that requests created, of upstreams the new table
        // still names; the others are created on first use.
        let previous = self.shared.active.load();
        let upstreams = table.shared_upstreams();
        let mut slots = FxHashMap::with_capacity_and_hasher(upstreams.len(), Default::default());
        for upstream in upstreams {
            slots.entry(Arc::clone(upstream)).or_insert_with(|| {
                let slot = OnceLock::new();
                if let Some(client) = previous.clients.created(upstream) {
                    let _ = slot.set(Arc::clone(client));
                }
                slot
            });
        }
        let clients = Clients { slots };
        let pooled = Instant::now();
        // Metric handles are resolved on a pattern's first request, not here: 17 labelled series per pattern
        // for every pattern of a 10,000-rule table cost tens of MiB and most of an apply's time. Handles already
        // resolved by the previous table are carried over: only the patterns that saw traffic are looked up.
        let mut hosts = HostMetricsIndex::with_capacity_and_hasher(
            table.rules().iter().map(|r| r.hostnames.len().max(1)).sum(),
            Default::default(),
        );
        for pattern in hostname_patterns(&table) {
            hosts.entry(pattern.into()).or_default();
        }
        drop(previous);
        let indexed = Instant::now();

        let received = config.version;
        let rules = table.rule_count();
        let guard = self
            .shared
            .apply_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let replaced = self.shared.active.load();
        let current = replaced.version;
        if received > 0 && received < current {
            return Err(ApplyError::Stale { current, received });
        }
        if received == 0 && current > 0 {
            tracing::warn!(
                current,
                "config with version 0 applied; the recorded version is kept"
            );
        }
        let version = received.max(current);
        // Carried over under the lock, from the table this one replaces: a concurrent apply cannot slip in
        // between, so no handle whose series `forget_host` below removed is carried into a later table.
        for (pattern, resolved) in replaced.hosts.iter() {
            if let (Some(handles), Some(slot)) = (resolved.get(), hosts.get(pattern)) {
                let _ = slot.set(handles.clone());
            }
        }
        drop(replaced);
        let applied_at = SystemTime::now();
        // The old table and any pool only it referenced are dropped once the last in-flight request that
        // loaded it finishes; idle connections of dropped pools close with them.
        let old = self.shared.active.swap(Arc::new(Active {
            table,
            version,
            applied_at: Some(applied_at),
            has_grpc_route: config.has_grpc_route,
            hosts,
            clients,
        }));
        // Series of patterns no config routes any more are removed, so that /metrics does not grow with every
        // pattern ever applied.
        let installed = self.shared.active.load();
        for (pattern, resolved) in old.hosts.iter() {
            if resolved.get().is_some() && !installed.hosts.contains_key(pattern) {
                self.shared.metrics.forget_host(pattern);
            }
        }
        drop(installed);
        drop(guard);
        let swapped = Instant::now();
        self.shared.metrics.config_version.set(version);
        self.shared.metrics.config_rules.set(rules as i64);
        let status = ConfigStatus {
            version,
            ready: self.readiness().is_ok(),
            rules,
            applied_at: Some(applied_at),
        };
        Ok(Applied {
            status,
            retired: Retired(old),
            phases: ApplyPhases {
                compile: compiled - started,
                pools: pooled - compiled,
                hosts: indexed - pooled,
                swap: swapped - indexed,
            },
        })
    }

    /// The status object of the active table.
    pub fn status(&self) -> ConfigStatus {
        let active = self.shared.active.load();
        ConfigStatus {
            version: active.version,
            ready: self.readiness().is_ok(),
            rules: active.table.rule_count(),
            applied_at: active.applied_at,
        }
    }

    /// Whether a config has been applied since start (any version, 0 included).
    pub fn has_config(&self) -> bool {
        self.shared.active.load().applied_at.is_some()
    }

    /// `hasGrpcRoute` of the active config (false before the first apply).
    pub fn has_grpc_route(&self) -> bool {
        self.shared.active.load().has_grpc_route
    }

    /// `Ok` when ready; otherwise the 503 reason of config-api.md §7, in its order.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.shared.draining.load(Ordering::Acquire) {
            return Err("shutting down");
        }
        if self.shared.active.load().version <= 0 {
            return Err("no config loaded");
        }
        if self.shared.tunnel_mode.load(Ordering::Acquire)
            && !self.shared.tunnel_registered.load(Ordering::Acquire)
        {
            return Err("tunnel not connected to edge");
        }
        Ok(())
    }

    /// Marks the process as draining: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// In tunnel mode readiness also waits for the first edge registration.
    pub fn set_tunnel_mode(&self, on: bool) {
        self.shared.tunnel_mode.store(on, Ordering::Release);
    }

    /// Latched: later disconnects do not make the proxy unready again.
    pub fn set_tunnel_registered(&self) {
        self.shared.tunnel_registered.store(true, Ordering::Release);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The active snapshot. The request path calls this exactly once per request.
    pub fn active(&self) -> Arc<Active> {
        self.shared.active.load_full()
    }
}

impl Retired {
    /// Frees the snapshot here, on the calling (blocking) thread: waits up to a few seconds for requests that
    /// still use it, polling, so that the frees happen here rather than at the end of some request.
    pub fn release(self) -> Released {
        let started = Instant::now();
        while Arc::strong_count(&self.0) > 1 && started.elapsed() < RETIRE_WAIT {
            std::thread::sleep(Duration::from_millis(20));
        }
        let freeing = Instant::now();
        drop(self);
        Released {
            wait: freeing - started,
            free: freeing.elapsed(),
        }
    }
}

impl Clients {
    /// The pool of `upstream`, created on first use; `None` when the table does not name the upstream.
    pub fn get<Q>(&self, upstream: &Q) -> Option<&Arc<UpstreamClient>>
    where
        Arc<Upstream>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (key, slot) = self.slots.get_key_value(upstream)?;
        Some(slot.get_or_init(|| Arc::new(UpstreamClient::new(Arc::clone(key)))))
    }

    /// The pool of `upstream` if a request has created it.
    fn created(&self, upstream: &Upstream) -> Option<&Arc<UpstreamClient>> {
        self.slots.get(upstream)?.get()
    }
}

impl Active {
    /// Metric handles of a matched hostname pattern, resolved on the pattern's first request.
    pub fn host_metrics<'a>(&'a self, pattern: &str, metrics: &'a Metrics) -> &'a Arc<HostMetrics> {
        match self.hosts.get(pattern) {
            Some(slot) => slot.get_or_init(|| Arc::new(metrics.host(pattern))),
            None => metrics.unmatched(),
        }
    }
}

impl ConfigStatus {
    /// `{"version","ready","rules","appliedAt"}` with `appliedAt` as RFC 3339 UTC with milliseconds, or null.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "ready": self.ready,
            "rules": self.rules,
            "appliedAt": self.applied_at.map(rfc3339_millis),
        })
    }
}

/// The `hostname` metric labels a table can produce: each rule's normalised hostname patterns, and `""` for
/// rules without hostnames (the default bucket).
fn hostname_patterns(table: &RouteTable) -> impl Iterator<Item = &str> + '_ {
    table.rules().iter().flat_map(|rule| {
        let default = rule.hostnames.is_empty().then_some("");
        rule.hostnames.iter().map(String::as_str).chain(default)
    })
}

/// Formats a time as `2026-11-26T14:03:07.412Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let millis = since.subsec_millis();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formatting() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_701_787_412);
        assert_eq!(rfc3339_millis(t), "2026-11-26T14:03:07.412Z");
        assert_eq!(rfc3339_millis(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }

    fn doc(version: i64) -> Config {
        Config {
            version,
            ..Config::default()
        }
    }

    #[test]
    fn apply_retiring_hands_back_the_replaced_snapshot() {
        let state = ProxyState::new(Registry::default());
        let applied = state.apply_retiring(&doc(1)).unwrap();
        assert_eq!(applied.status.version, 1);
        let first = applied.retired;
        assert_eq!(first.0.version, 0, "the empty snapshot the state started with");
        let in_flight = state.active();
        let second = state.apply_retiring(&doc(2)).unwrap().retired;
        assert_eq!(second.0.version, 1);
        assert!(Arc::ptr_eq(&second.0, &in_flight));
        assert_eq!(state.active().version, 2);
        drop(in_flight);
        second.release();
        first.release();
        // A refused document retires nothing and keeps the active table.
        assert!(state.apply_retiring(&doc(1)).is_err());
        assert_eq!(state.active().version, 2);
    }

    fn with_backends(version: i64, urls: &[&str]) -> Config {
        let rules: Vec<String> = urls
            .iter()
            .map(|u| format!(r#"{{"backends":[{{"url":"{u}","weight":1}}]}}"#))
            .collect();
        let json = format!(r#"{{"version":{version},"rules":[{}]}}"#, rules.join(","));
        Config::from_json_slice(json.as_bytes()).unwrap()
    }

    #[test]
    fn pools_are_created_on_first_use_and_carried_over_while_named() {
        let (a, b) = ("http://127.0.0.1:9001", "http://127.0.0.1:9002");
        let state = ProxyState::new(Registry::default());
        state.apply(&with_backends(1, &[a, b])).unwrap();
        let first = state.active();
        let upstream = |active: &Active, port| {
            let found = active.table.shared_upstreams().iter().find(|u| u.port == port);
            Arc::clone(found.unwrap())
        };
        let (ua, ub) = (upstream(&first, 9001), upstream(&first, 9002));
        assert!(first.clients.created(&ua).is_none(), "no pool before a request");
        let pool_a = Arc::clone(first.clients.get(&ua).unwrap());
        assert!(Arc::ptr_eq(first.clients.created(&ua).unwrap(), &pool_a));
        assert!(first.clients.created(&ub).is_none());

        state.apply(&with_backends(2, &[a, b])).unwrap();
        let second = state.active();
        assert!(
            Arc::ptr_eq(second.clients.get(&ua).unwrap(), &pool_a),
            "the used pool is carried over"
        );
        assert!(
            second.clients.created(&ub).is_none(),
            "an unused upstream still has no pool"
        );

        state.apply(&with_backends(3, &[b])).unwrap();
        let third = state.active();
        assert!(
            third.clients.get(&ua).is_none(),
            "an upstream the table no longer names has no pool"
        );
        assert!(third.clients.get(&ub).is_some());
    }

    #[test]
    fn version_rules() {
        let state = ProxyState::new(Registry::default());
        assert_eq!(state.readiness(), Err("no config loaded"));
        assert_eq!(state.apply(&doc(0)).unwrap().version, 0);
        assert_eq!(state.readiness(), Err("no config loaded"));
        assert_eq!(state.apply(&doc(5)).unwrap().version, 5);
        assert!(state.readiness().is_ok());
        assert_eq!(state.apply(&doc(5)).unwrap().version, 5);
        assert_eq!(
            state.apply(&doc(4)),
            Err(ApplyError::Stale {
                current: 5,
                received: 4
            })
        );
        let zero = state.apply(&doc(0)).unwrap();
        assert_eq!(zero.version, 5, "version 0 never lowers the version");
        assert_eq!(state.apply(&doc(9)).unwrap().version, 9);
        assert!(matches!(state.apply(&doc(-1)), Err(ApplyError::Invalid { .. })));
        state.set_tunnel_mode(true);
        assert_eq!(state.readiness(), Err("tunnel not connected to edge"));
        state.set_tunnel_registered();
        assert!(state.readiness().is_ok());
        state.set_draining();
        assert_eq!(state.readiness(), Err("shutting down"));
    }
}
