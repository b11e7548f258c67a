//! The connector: HA connections to the edge, registration, reconnect with backoff, graceful shutdown
//! (tunnel.md §8–§11). Each connection is served by [`quic`] or [`http2`].

mod data;
mod http2;
mod quic;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::edge_addr::{self, AddrPool};
use crate::metrics::TunnelMetrics;
use crate::origin::Origin;
use crate::registration::{ConnectionDetails, ConnectionError, FEATURES, RegisterRequest};
use crate::token::TunnelToken;
use crate::transport;

/// `PROXY_TUNNEL_PROTOCOL` after the `auto` decision about gRPC has been made by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolChoice {
    /// QUIC, falling back to HTTP/2 per connection as cloudflared does.
    Auto,
    Quic,
    Http2,
}

impl std::str::FromStr for ProtocolChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "quic" => Ok(Self::Quic),
            "http2" => Ok(Self::Http2),
            other => Err(format!(
                "unknown tunnel protocol {other:?} (expected auto, quic or http2)"
            )),
        }
    }
}

/// The wire protocol of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Quic,
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Http2 => "http2",
        }
    }
}

/// Where edge addresses come from.
#[derive(Debug, Clone)]
pub enum EdgeSource {
    /// DNS SRV discovery.
    Srv,
    /// `PROXY_TUNNEL_EDGE`: `host:port` entries used as-is.
    List(Vec<String>),
}

/// Everything the connector needs.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    pub token: TunnelToken,
    pub edge: EdgeSource,
    /// `PROXY_TUNNEL_CA_FILE`.
    pub ca_file: Option<std::path::PathBuf>,
    pub protocol: ProtocolChoice,
    /// `PROXY_TUNNEL_HA_CONNECTIONS`.
    pub ha_connections: u8,
    /// `PROXY_GRACE_PERIOD`.
    pub grace_period: Duration,
    /// Interval between starting connections 1..N after connection 0 registered.
    pub stagger: Duration,
}

impl TunnelConfig {
    pub fn new(token: TunnelToken) -> Self {
        Self {
            token,
            edge: EdgeSource::Srv,
            ca_file: None,
            protocol: ProtocolChoice::Auto,
            ha_connections: 4,
            grace_period: Duration::from_secs(30),
            stagger: Duration::from_secs(1),
        }
    }
}

/// A start-up failure that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] transport::TlsError),
}

/// How one connection attempt ended.
#[derive(Debug)]
pub(crate) enum ConnEnd {
    /// Graceful shutdown completed.
    Shutdown,
    /// Unregistered and drained for the switch to HTTP/2 (tunnel.md §11, live switch); redial at once.
    Migrated,
    /// The edge refused the registration.
    Refused(ConnectionError),
    /// Failed before registering.
    Failed {
        reason: &'static str,
        error: String,
        rotate: bool,
        udp_blocked: bool,
    },
    /// Registered, then lost.
    Lost {
        reason: &'static str,
        error: String,
        rotate: bool,
    },
}

/// State shared by all connection tasks.
pub(crate) struct Shared {
    pub config: TunnelConfig,
    pub origin: Arc<dyn Origin>,
    pub metrics: TunnelMetrics,
    pub client_id: Uuid,
    pub roots: rustls::RootCertStore,
    pub addrs: Mutex<AddrPool>,
    /// Highest remote-config version seen (§6), starting at −1.
    pub config_version: AtomicI32,
    pub quic_ever_registered: AtomicBool,
    /// Protocol connection 0 registered with; later connections start with it.
    pub first_protocol: Mutex<Option<Protocol>>,
    pub registered: watch::Sender<usize>,
    pub ever_registered: watch::Sender<bool>,
    /// Set by [`Tunnel::switch_to_http2`]: every later dial uses HTTP/2.
    pub force_http2: AtomicBool,
    /// Per connection index: cancelled to move that connection from QUIC to HTTP/2.
    pub migrate: Mutex<Vec<CancellationToken>>,
    /// Per connection index: the protocol it is registered with, `None` while not registered.
    pub conn_protocols: watch::Sender<Vec<Option<Protocol>>>,
    /// First signal: unregister, drain, close.
    pub shutdown: CancellationToken,
    /// Second signal: close everything now.
    pub abort: CancellationToken,
}

impl Shared {
    pub(crate) fn register_request(
        &self,
        conn_index: u8,
        attempts: u8,
        local_ip: Option<std::net::IpAddr>,
    ) -> RegisterRequest {
        RegisterRequest {
            account_tag: self.config.token.account_tag.clone(),
            tunnel_secret: self.config.token.secret.clone(),
            tunnel_id: self.config.token.tunnel_id,
            conn_index,
            client_id: self.client_id,
            features: FEATURES.iter().map(|f| (*f).to_string()).collect(),
            version: format!("tunnelgate-{}", env!("CARGO_PKG_VERSION")),
            arch: crate::registration::go_arch(),
            origin_local_ip: local_ip,
            replace_existing: false,
            num_previous_attempts: attempts,
        }
    }

    /// Book-keeping once a connection registered.
    pub(crate) fn on_registered(
        &self,
        conn_index: u8,
        protocol: Protocol,
        details: &ConnectionDetails,
        edge: std::net::SocketAddr,
    ) {
        tracing::info!(
            conn_index,
            connection = %details.uuid,
            location = %details.location,
            protocol = protocol.as_str(),
            edge_ip = %edge.ip(),
            "registered tunnel connection"
        );
        self.metrics.registration("ok");
        self.metrics.connection_up(protocol.as_str());
        if protocol == Protocol::Quic {
            self.quic_ever_registered.store(true, Ordering::SeqCst);
        }
        if let Ok(mut p) = self.first_protocol.lock() {
            p.get_or_insert(protocol);
        }
        self.registered.send_modify(|n| *n += 1);
        self.ever_registered.send_replace(true);
        self.conn_protocols.send_modify(|p| {
            if let Some(slot) = p.get_mut(usize::from(conn_index)) {
                *slot = Some(protocol);
            }
        });
    }

    /// Book-keeping once a registered connection went away.
    pub(crate) fn on_unregistered(&self, conn_index: u8, protocol: Protocol) {
        self.metrics.connection_down(protocol.as_str());
        self.registered.send_modify(|n| *n = n.saturating_sub(1));
        self.conn_protocols.send_modify(|p| {
            if let Some(slot) = p.get_mut(usize::from(conn_index)) {
                *slot = None;
            }
        });
    }

    /// The token that asks connection `conn_index` to move to HTTP/2.
    pub(crate) fn migrate_token(&self, conn_index: u8) -> CancellationToken {
        self.migrate
            .lock()
            .ok()
            .and_then(|m| m.get(usize::from(conn_index)).cloned())
            .unwrap_or_default()
    }

    /// Records a remote-config version and returns the highest seen.
    pub(crate) fn note_config_version(&self, version: i32) -> i32 {
        self.config_version
            .fetch_max(version, Ordering::SeqCst)
            .max(version)
    }
}

/// A running tunnel. Dropping it does not stop the tunnel; call [`Tunnel::shutdown`].
pub struct Tunnel {
    shared: Arc<Shared>,
    tasks: TaskTracker,
}

impl Tunnel {
    /// Starts the connections in the background (connection 0 first, the others once it registered).
    /// Never fails because of the edge; only local set-up problems (a bad CA file) are errors.
    pub fn start(
        config: TunnelConfig,
        origin: Arc<dyn Origin>,
        metrics: TunnelMetrics,
    ) -> Result<Self, StartError> {
        let roots = transport::root_store(config.ca_file.as_deref())?;
        let (registered, _) = watch::channel(0usize);
        let (ever_registered, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            origin,
            metrics,
            client_id: Uuid::new_v4(),
            roots,
            addrs: Mutex::new(AddrPool::default()),
            config_version: AtomicI32::new(-1),
            quic_ever_registered: AtomicBool::new(false),
            first_protocol: Mutex::new(None),
            registered,
            ever_registered,
            force_http2: AtomicBool::new(false),
            migrate: Mutex::new(
                (0..MAX_HA_CONNECTIONS)
                    .map(|_| CancellationToken::new())
                    .collect(),
            ),
            conn_protocols: watch::channel(vec![None; MAX_HA_CONNECTIONS]).0,
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
        });
        let tasks = TaskTracker::new();
        tasks.spawn(supervise(shared.clone(), tasks.clone()));
        Ok(Self { shared, tasks })
    }

    /// The connector id sent as `clientId`.
    pub fn client_id(&self) -> Uuid {
        self.shared.client_id
    }

    /// Live count of registered connections.
    pub fn registered(&self) -> watch::Receiver<usize> {
        self.shared.registered.subscribe()
    }

    /// Becomes true at the first registration and stays true (the readiness latch).
    pub fn ever_registered(&self) -> watch::Receiver<bool> {
        self.shared.ever_registered.subscribe()
    }

    /// Graceful shutdown: unregister every connection, let in-flight streams finish within the grace period,
    /// then close. Resolves when every connection task has ended.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.tasks.close();
        let grace = self.shared.config.grace_period;
        // Unregister (≤ grace) + drain (≤ grace) + close; the margin covers the close handshake.
        if tokio::time::timeout(grace * 2 + Duration::from_secs(2), self.tasks.wait())
            .await
            .is_err()
        {
            self.shared.abort.cancel();
            self.tasks.wait().await;
        }
    }

    /// The live switch of tunnel.md §11: moves every connection that runs on QUIC to HTTP/2, one at a time
    /// (unregister, drain within the grace period, redial over HTTP/2, wait until it registered) so that the
    /// other connections keep serving meanwhile; later dials and reconnects use HTTP/2 too. Never goes back to
    /// QUIC. Returns at once; the migration runs in the background and stops at shutdown.
    pub fn switch_to_http2(&self) {
        if self.shared.force_http2.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!("switching tunnel connections to HTTP/2, one at a time");
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            let mut protocols = shared.conn_protocols.subscribe();
            // A connection that was between dials when a pass looked at it may still register over QUIC (its
            // dial had started); a later pass moves it too.
            for _pass in 0..MIGRATION_PASSES {
                let on_quic: Vec<u8> = protocols
                    .borrow()
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| **p == Some(Protocol::Quic))
                    .filter_map(|(i, _)| u8::try_from(i).ok())
                    .collect();
                if on_quic.is_empty() {
                    break;
                }
                for conn_index in on_quic {
                    shared.migrate_token(conn_index).cancel();
                    // Until it is back on HTTP/2 (bounded: unregister and drain take up to a grace period each).
                    let limit = shared.config.grace_period * 2 + MIGRATION_REDIAL_LIMIT;
                    let slot = usize::from(conn_index);
                    let back = protocols.wait_for(|p| p.get(slot) == Some(&Some(Protocol::Http2)));
                    tokio::select! {
                        r = tokio::time::timeout(limit, back) => {
                            if r.is_err() {
                                tracing::warn!(conn_index, "connection not back on HTTP/2 in time; moving on");
                            }
                        }
                        _ = shared.shutdown.cancelled() => return,
                    }
                }
            }
            tracing::info!("tunnel connections switched to HTTP/2");
        });
    }

    /// Immediate stop (second signal).
    pub async fn abort(&self) {
        self.shared.shutdown.cancel();
        self.shared.abort.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn supervise(shared: Arc<Shared>, tasks: TaskTracker) {
    // Discovery is retried like any other failure until it works (§8: never exit because of the edge).
    let mut backoff = Backoff::default();
    let regions = loop {
        let found = match &shared.config.edge {
            EdgeSource::List(list) => edge_addr::resolve_edge_list(list).await,
            EdgeSource::Srv => edge_addr::discover_srv(shared.config.token.endpoint.as_deref()).await,
        };
        match found {
            Ok(r) => break r,
            Err(e) => {
                let delay = backoff.next_delay(rand::random::<f64>(), Duration::ZERO);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "edge discovery failed");
                shared.metrics.reconnect("discovery");
                if sleep_or_shutdown(&shared, delay).await {
                    return;
                }
            }
        }
    };
    let ha = {
        let Ok(mut pool) = shared.addrs.lock() else { return };
        *pool = AddrPool::new(regions);
        (shared.config.ha_connections as usize).min(pool.len()).max(1)
    };
    tasks.spawn(run_connection(shared.clone(), 0));
    let mut ever = shared.ever_registered.subscribe();
    tokio::select! {
        _ = ever.wait_for(|r| *r) => {}
        _ = shared.shutdown.cancelled() => return,
    }
    for i in 1..ha {
        if sleep_or_shutdown(&shared, shared.config.stagger).await {
            return;
        }
        tasks.spawn(run_connection(shared.clone(), i as u8));
    }
}

/// Sleeps; returns true if shutdown started meanwhile.
async fn sleep_or_shutdown(shared: &Shared, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shared.shutdown.cancelled() => true,
    }
}

/// Retries after which an `auto` connection falls back to HTTP/2 (§11).
const FALLBACK_RETRIES: u32 = 5;

/// Connection indexes a tunnel can have (`PROXY_TUNNEL_HA_CONNECTIONS` is 1..16).
const MAX_HA_CONNECTIONS: usize = 16;

/// Passes of the live switch over the connections still on QUIC.
const MIGRATION_PASSES: usize = 3;

/// During the live switch, how long a connection may take to register again over HTTP/2 after its drain.
const MIGRATION_REDIAL_LIMIT: Duration = Duration::from_secs(30);

async fn run_connection(shared: Arc<Shared>, conn_index: u8) {
    let mut backoff = Backoff::default();
    let mut protocol = match shared.config.protocol {
        ProtocolChoice::Http2 => Protocol::Http2,
        ProtocolChoice::Quic => Protocol::Quic,
        ProtocolChoice::Auto => shared
            .first_protocol
            .lock()
            .ok()
            .and_then(|p| *p)
            .unwrap_or(Protocol::Quic),
    };
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let Some(addr) = shared.addrs.lock().ok().and_then(|mut p| p.get(conn_index)) else {
            return;
        };
        if shared.force_http2.load(Ordering::SeqCst) {
            protocol = Protocol::Http2;
        }
        let attempts = u8::try_from(backoff.retries()).unwrap_or(u8::MAX);
        let end = match protocol {
            Protocol::Quic => quic::serve(&shared, conn_index, addr, attempts).await,
            Protocol::Http2 => http2::serve(&shared, conn_index, addr, attempts).await,
        };
        let (delay, rotate, reason) = match end {
            ConnEnd::Shutdown => return,
            ConnEnd::Migrated => {
                shared.metrics.reconnect("protocol_switch");
                backoff.reset();
                tracing::info!(conn_index, "redialling over HTTP/2");
                continue;
            }
            ConnEnd::Refused(e) => {
                if e.cause == "EDUPCONN" {
                    shared.metrics.registration("duplicate");
                    tracing::warn!(
                        conn_index,
                        "edge reported a duplicate connection; rotating address"
                    );
                    (
                        backoff.next_delay(rand::random::<f64>(), Duration::ZERO),
                        true,
                        "duplicate",
                    )
                } else if e.should_retry {
                    shared.metrics.registration("retryable_error");
                    tracing::warn!(conn_index, cause = %e.cause, "edge refused registration; retrying");
                    (
                        backoff.next_delay(rand::random::<f64>(), e.retry_after),
                        false,
                        "registration_error",
                    )
                } else {
                    shared.metrics.registration("permanent_error");
                    tracing::error!(conn_index, cause = %e.cause, "edge refused registration permanently; retrying at the maximum backoff");
                    (backoff.max_delay(), false, "registration_error")
                }
            }
            ConnEnd::Failed {
                reason,
                error,
                rotate,
                udp_blocked,
            } => {
                shared.metrics.registration("failed");
                tracing::warn!(conn_index, protocol = protocol.as_str(), reason, %error, "tunnel connection failed");
                let fall_back = shared.config.protocol == ProtocolChoice::Auto
                    && protocol == Protocol::Quic
                    && !shared.quic_ever_registered.load(Ordering::SeqCst)
                    && (udp_blocked || backoff.retries() + 1 >= FALLBACK_RETRIES);
                if fall_back {
                    tracing::warn!(conn_index, "falling back from QUIC to HTTP/2");
                    protocol = Protocol::Http2;
                }
                (
                    backoff.next_delay(rand::random::<f64>(), Duration::ZERO),
                    rotate,
                    reason,
                )
            }
            ConnEnd::Lost {
                reason,
                error,
                rotate,
            } => {
                tracing::warn!(conn_index, protocol = protocol.as_str(), reason, %error, "tunnel connection lost");
                backoff.reset();
                (
                    backoff.next_delay(rand::random::<f64>(), Duration::ZERO),
                    rotate,
                    reason,
                )
            }
        };
        shared.metrics.reconnect(reason);
        if rotate && let Ok(mut p) = shared.addrs.lock() {
            p.rotate(conn_index);
        }
        tracing::info!(conn_index, retry_in_ms = delay.as_millis() as u64, "reconnecting");
        if sleep_or_shutdown(&shared, delay).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_choice_parses_case_insensitively() {
        assert_eq!(" QUIC ".parse::<ProtocolChoice>(), Ok(ProtocolChoice::Quic));
        assert_eq!("http2".parse::<ProtocolChoice>(), Ok(ProtocolChoice::Http2));
        assert_eq!("Auto".parse::<ProtocolChoice>(), Ok(ProtocolChoice::Auto));
        assert!("h3".parse::<ProtocolChoice>().is_err());
    }
}
