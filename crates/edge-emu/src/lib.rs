//! tunnelgate-edge-emu: a local stand-in for the Cloudflare edge (tunnel.md §13).
//!
//! It does: accept connector connections over QUIC (UDP) and HTTP/2-over-TLS (TCP) on the same ports,
//! serve `RegistrationServer` on their control streams (checking credentials, detecting duplicates,
//! recording every field), forward requests from a plain eyeball listener (HTTP/1.1 and h2c) over a
//! registered connection, expose a JSON admin API, inject scripted faults, and report JSON events.
//!
//! It does not: talk to the network beyond the addresses it is given, implement Cloudflare's caching,
//! WAF or routing, or carry TCP/UDP (WARP) traffic. The protocol itself lives in `tunnelgate-tunnel`.

mod admin;
pub mod certs;
mod eyeball;
pub mod faults;
mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tunnelgate_tunnel::edge;
use tunnelgate_tunnel::registration::{
    ConnectionDetails, ConnectionError, ConnectionResponse, RegisterRequest, RegistrationCall,
};
use tunnelgate_tunnel::rpc::ServerReply;
use tunnelgate_tunnel::transport;
use uuid::Uuid;

pub use certs::EdgeCerts;
pub use faults::{Action, FaultRule, Trigger};

/// An emulator start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    #[error("certificate generation: {0}")]
    Certificate(String),
    #[error("tls: {0}")]
    Tls(#[from] transport::TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fault(#[from] faults::FaultError),
}

/// Credentials the edge expects; unset parts accept anything.
#[derive(Debug, Clone, Default)]
pub struct ExpectedCredentials {
    pub account_tag: Option<String>,
    pub tunnel_id: Option<Uuid>,
    pub secret: Option<Vec<u8>>,
}

/// Emulator settings (the `tunnelgate edge-emulator` flags).
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: Vec<SocketAddr>,
    pub http_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub expected: ExpectedCredentials,
    pub remotely_managed: bool,
    pub location: String,
    pub script: Vec<FaultRule>,
    pub eyeball_scheme: String,
    /// Reuse this CA key (PEM) instead of generating one.
    pub ca_key_pem: Option<String>,
    /// Seeds the emulator's random choices (connection UUIDs, `Cf-Ray` ids), so that a run repeats them;
    /// `None` draws them from the OS. Keys and certificates stay random (`ca_key_pem` pins the CA).
    pub seed: Option<u64>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let lo = |p| SocketAddr::from(([127, 0, 0, 1], p));
        Self {
            listen: vec![lo(7844)],
            http_listen: lo(0),
            admin_listen: lo(0),
            expected: ExpectedCredentials::default(),
            remotely_managed: false,
            location: "TST".into(),
            script: Vec::new(),
            eyeball_scheme: "https".into(),
            ca_key_pem: None,
            seed: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    Connected,
    Registered,
    Unregistered,
    Closed,
}

impl ConnState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Registered => "registered",
            Self::Unregistered => "unregistered",
            Self::Closed => "closed",
        }
    }
}

#[derive(Clone)]
pub(crate) enum ConnHandle {
    Quic(quinn::Connection),
    H2 {
        send: h2::client::SendRequest<Bytes>,
        abort: tokio::task::AbortHandle,
    },
}

pub(crate) struct ConnEntry {
    pub id: u64,
    pub protocol: &'static str,
    pub peer: SocketAddr,
    pub edge: SocketAddr,
    pub registration: Option<RegisterRequest>,
    pub uuid: Option<Uuid>,
    pub state: ConnState,
    pub requests: u64,
    pub handle: ConnHandle,
}

struct ActiveFault {
    id: u64,
    rule: FaultRule,
    fired: u32,
}

pub(crate) struct Inner {
    config: EmulatorConfig,
    conns: Mutex<Vec<ConnEntry>>,
    next_conn: AtomicU64,
    round_robin: AtomicUsize,
    faults: Mutex<Vec<ActiveFault>>,
    next_fault: AtomicU64,
    attempts: Mutex<Vec<Value>>,
    local_configs: Mutex<Vec<Value>>,
    unregisters: Mutex<Vec<Value>>,
    events: broadcast::Sender<Value>,
    drop_switch: Arc<udp::DropSwitch>,
    refuse_tcp: AtomicBool,
    /// Every random choice of a run, seeded by `EmulatorConfig::seed`.
    rng: Mutex<StdRng>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Inner {
    /// Random bytes from the run's source (seeded or not).
    pub(crate) fn random_bytes<const N: usize>(&self) -> [u8; N] {
        match self.rng.lock() {
            Ok(mut rng) => rng.random(),
            Err(poisoned) => poisoned.into_inner().random(),
        }
    }

    pub(crate) fn emit(&self, event: &str, mut fields: Value) {
        if let Some(m) = fields.as_object_mut() {
            m.insert("event".into(), json!(event));
            m.insert("ts_ms".into(), json!(now_ms()));
        }
        let _ = self.events.send(fields);
    }

    fn add_conn(
        &self,
        protocol: &'static str,
        peer: SocketAddr,
        edge: SocketAddr,
        handle: ConnHandle,
    ) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut c) = self.conns.lock() {
            c.push(ConnEntry {
                id,
                protocol,
                peer,
                edge,
                registration: None,
                uuid: None,
                state: ConnState::Connected,
                requests: 0,
                handle,
            });
        }
        id
    }

    fn with_conn<T>(&self, id: u64, f: impl FnOnce(&mut ConnEntry) -> T) -> Option<T> {
        self.conns
            .lock()
            .ok()
            .and_then(|mut c| c.iter_mut().find(|e| e.id == id).map(f))
    }

    fn mark_closed(&self, id: u64) {
        let info = self.with_conn(id, |e| {
            let was = e.state;
            e.state = ConnState::Closed;
            (was, e.registration.as_ref().map(|r| r.conn_index), e.protocol)
        });
        if let Some((was, conn_index, protocol)) = info
            && was != ConnState::Closed
        {
            self.emit(
                "connection_closed",
                json!({"id": id, "connIndex": conn_index, "protocol": protocol}),
            );
        }
    }

    /// Takes the first matching fault (counting its use).
    fn take_fault(&self, pred: impl Fn(&FaultRule) -> bool) -> Option<(u64, Action)> {
        let mut faults = self.faults.lock().ok()?;
        let pos = faults
            .iter()
            .position(|f| pred(&f.rule) && f.rule.times.is_none_or(|t| f.fired < t))?;
        let f = &mut faults[pos];
        f.fired += 1;
        Some((f.id, f.rule.action.clone()))
    }

    /// All matching request faults (several can combine on one request).
    pub(crate) fn take_request_faults(&self, path: &str, conn_index: u8) -> Vec<Action> {
        let Ok(mut faults) = self.faults.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for f in faults.iter_mut() {
            if f.rule.matches_request(path, conn_index) && f.rule.times.is_none_or(|t| f.fired < t) {
                f.fired += 1;
                out.push(f.rule.action.clone());
                let _ = self.events.send(json!({"event":"fault_applied","id":f.id,"trigger":"request","path":path,"ts_ms":now_ms()}));
            }
        }
        out
    }

    pub(crate) fn add_fault(self: &Arc<Self>, rule: FaultRule) -> u64 {
        let id = self.next_fault.fetch_add(1, Ordering::SeqCst);
        if let Trigger::AfterMs { ms, conn_index } = rule.trigger.clone() {
            let inner = self.clone();
            let action = rule.action.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                inner.emit("fault_applied", json!({"id": id, "trigger": "after_ms"}));
                inner.apply_transport_fault(&action, conn_index).await;
            });
        }
        if let Ok(mut f) = self.faults.lock() {
            f.push(ActiveFault { id, rule, fired: 0 });
        }
        id
    }

    pub(crate) fn remove_faults(&self, id: Option<u64>) -> usize {
        let Ok(mut f) = self.faults.lock() else { return 0 };
        let before = f.len();
        match id {
            Some(id) => f.retain(|r| r.id != id),
            None => f.clear(),
        }
        before - f.len()
    }

    async fn apply_transport_fault(self: &Arc<Self>, action: &Action, conn_index: Option<u8>) {
        match action {
            Action::DropUdp => self.drop_switch.set_all(true),
            Action::RefuseTcp => self.refuse_tcp.store(true, Ordering::SeqCst),
            Action::CloseConnection => self.close_matching(conn_index, CloseMode::Close),
            Action::BlackholeConnection => self.close_matching(conn_index, CloseMode::Blackhole),
            Action::CloseAllAfterMs(ms) => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                self.close_matching(None, CloseMode::Close);
            }
            _ => {}
        }
    }

    fn close_matching(&self, conn_index: Option<u8>, mode: CloseMode) {
        let targets: Vec<u64> = self
            .conns
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|e| e.state != ConnState::Closed)
                    .filter(|e| {
                        conn_index.is_none_or(|i| e.registration.as_ref().is_some_and(|r| r.conn_index == i))
                    })
                    .map(|e| e.id)
                    .collect()
            })
            .unwrap_or_default();
        for id in targets {
            let _ = self.close_conn(id, mode);
        }
    }

    pub(crate) fn close_conn(&self, id: u64, mode: CloseMode) -> Result<(), String> {
        let (handle, peer) = self
            .with_conn(id, |e| (e.handle.clone(), e.peer))
            .ok_or("no such connection")?;
        match (handle, mode) {
            (ConnHandle::Quic(c), CloseMode::Close) => c.close(quinn::VarInt::from_u32(0), b""),
            (ConnHandle::Quic(c), CloseMode::Reset) => {
                c.close(quinn::VarInt::from_u32(1), b"reset by edge emulator")
            }
            (ConnHandle::Quic(_), CloseMode::Blackhole) => self.drop_switch.blackhole(peer),
            (ConnHandle::H2 { abort, .. }, CloseMode::Close | CloseMode::Reset) => abort.abort(),
            (ConnHandle::H2 { .. }, CloseMode::Blackhole) => {
                return Err("blackhole applies to QUIC connections only".into());
            }
        }
        Ok(())
    }

    /// Picks a registered connection: forced by connIndex, else round-robin.
    pub(crate) fn pick(&self, forced: Option<u8>) -> Option<(u64, u8, ConnHandle)> {
        let conns = self.conns.lock().ok()?;
        let live: Vec<&ConnEntry> = conns
            .iter()
            .filter(|e| e.state == ConnState::Registered)
            .collect();
        let chosen = match forced {
            Some(i) => live
                .into_iter()
                .find(|e| e.registration.as_ref().is_some_and(|r| r.conn_index == i))?,
            None => {
                if live.is_empty() {
                    return None;
                }
                live[self.round_robin.fetch_add(1, Ordering::Relaxed) % live.len()]
            }
        };
        Some((
            chosen.id,
            chosen.registration.as_ref().map_or(0, |r| r.conn_index),
            chosen.handle.clone(),
        ))
    }

    pub(crate) fn count_request(&self, id: u64) {
        self.with_conn(id, |e| e.requests += 1);
    }

    fn check_credentials(&self, req: &RegisterRequest) -> bool {
        let exp = &self.config.expected;
        exp.account_tag.as_ref().is_none_or(|a| *a == req.account_tag)
            && exp.tunnel_id.is_none_or(|t| t == req.tunnel_id)
            && exp.secret.as_ref().is_none_or(|s| *s == req.tunnel_secret)
    }

    fn register(&self, id: u64, req: &RegisterRequest) -> ConnectionResponse {
        let protocol = self.with_conn(id, |e| e.protocol).unwrap_or("quic");
        self.attempts
            .lock()
            .map(|mut a| a.push(registration_json(req, protocol)))
            .ok();
        if !self.check_credentials(req) {
            return refuse("Unauthorized: invalid tunnel credentials", false, 0);
        }
        let duplicate = self.conns.lock().is_ok_and(|c| {
            c.iter().any(|e| {
                e.id != id
                    && e.state == ConnState::Registered
                    && e.registration
                        .as_ref()
                        .is_some_and(|r| r.client_id == req.client_id && r.conn_index == req.conn_index)
            })
        });
        if duplicate {
            return refuse("EDUPCONN", true, 0);
        }
        let uuid = uuid::Builder::from_random_bytes(self.random_bytes()).into_uuid();
        let edge = self.with_conn(id, |e| {
            e.registration = Some(req.clone());
            e.uuid = Some(uuid);
            e.state = ConnState::Registered;
            e.edge
        });
        let mut ev = registration_json(req, protocol);
        if let Some(m) = ev.as_object_mut() {
            m.insert("id".into(), json!(id));
            m.insert("connection".into(), json!(uuid.to_string()));
            m.insert("edge".into(), json!(edge.map(|e| e.to_string())));
        }
        self.emit("registered", ev);
        ConnectionResponse::Details(ConnectionDetails {
            uuid,
            location: self.config.location.clone(),
            remotely_managed: self.config.remotely_managed,
        })
    }

    /// The edge's answer to one `RegistrationServer` call.
    async fn on_call(self: Arc<Self>, id: u64, call: RegistrationCall) -> ServerReply {
        match call {
            RegistrationCall::Register(req) => {
                let fault =
                    self.take_fault(|r| r.matches_register(req.conn_index, req.num_previous_attempts));
                if let Some((fid, action)) = fault {
                    self.emit(
                        "fault_applied",
                        json!({"id": fid, "trigger": "register", "connIndex": req.conn_index}),
                    );
                    let protocol = self.with_conn(id, |e| e.protocol).unwrap_or("quic");
                    self.attempts
                        .lock()
                        .map(|mut a| a.push(registration_json(&req, protocol)))
                        .ok();
                    match action {
                        Action::Duplicate => return results(refuse("EDUPCONN", true, 0)),
                        Action::Retryable {
                            cause,
                            retry_after_ms,
                        } => return results(refuse(&cause, true, retry_after_ms)),
                        Action::Permanent(cause) => return results(refuse(&cause, false, 0)),
                        Action::Exception(text) => return ServerReply::Exception(text),
                        Action::NoReply => return ServerReply::NoReply,
                        Action::DelayMs(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            // The delayed attempt was recorded above; `register` records it again.
                            self.attempts.lock().map(|mut a| a.pop()).ok();
                        }
                        _ => {}
                    }
                }
                results(self.register(id, &req))
            }
            RegistrationCall::Unregister => {
                let info = self.with_conn(id, |e| {
                    e.state = ConnState::Unregistered;
                    (e.registration.as_ref().map(|r| r.conn_index), e.protocol)
                });
                let (conn_index, protocol) = info.unwrap_or((None, "quic"));
                let ev = json!({"id": id, "connIndex": conn_index, "protocol": protocol, "ts_ms": now_ms()});
                self.unregisters.lock().map(|mut u| u.push(ev.clone())).ok();
                self.emit("unregistered", ev);
                ServerReply::Results(Box::new(|c| {
                    c.init_as::<capnp_empty::Builder>();
                    Ok(())
                }))
            }
            RegistrationCall::UpdateLocalConfiguration(bytes) => {
                let config: Value =
                    serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
                let conn_index = self
                    .with_conn(id, |e| e.registration.as_ref().map(|r| r.conn_index))
                    .flatten();
                self.local_configs
                    .lock()
                    .map(|mut l| l.push(json!({"connIndex": conn_index, "config": config.clone()})))
                    .ok();
                self.emit(
                    "local_config",
                    json!({"id": id, "connIndex": conn_index, "config": config}),
                );
                ServerReply::Results(Box::new(|c| {
                    c.init_as::<capnp_empty::Builder>();
                    Ok(())
                }))
            }
            RegistrationCall::Unknown { .. } => ServerReply::Exception("unimplemented".into()),
        }
    }

    pub(crate) fn state_json(&self) -> Value {
        let conns: Vec<Value> = self
            .conns
            .lock()
            .map(|c| {
                c.iter()
                    .map(|e| {
                        let mut v = e
                            .registration
                            .as_ref()
                            .map_or_else(|| json!({}), |r| registration_json(r, e.protocol));
                        if let Some(m) = v.as_object_mut() {
                            m.insert("id".into(), json!(e.id));
                            m.insert("protocol".into(), json!(e.protocol));
                            m.insert("state".into(), json!(e.state.as_str()));
                            m.insert("requests".into(), json!(e.requests));
                            m.insert("peer".into(), json!(e.peer.to_string()));
                            m.insert("edge".into(), json!(e.edge.to_string()));
                            m.insert("connection".into(), json!(e.uuid.map(|u| u.to_string())));
                        }
                        v
                    })
                    .collect()
            })
            .unwrap_or_default();
        let faults: Vec<Value> = self
            .faults
            .lock()
            .map(|f| {
                f.iter()
                    .map(|r| json!({"id": r.id, "fired": r.fired, "rule": format!("{:?}", r.rule)}))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "connections": conns,
            "registrationAttempts": self.attempts.lock().map(|a| a.clone()).unwrap_or_default(),
            "localConfigs": self.local_configs.lock().map(|a| a.clone()).unwrap_or_default(),
            "unregisters": self.unregisters.lock().map(|a| a.clone()).unwrap_or_default(),
            "faults": faults,
        })
    }
}

/// The empty struct used for results without fields.
mod capnp_empty {
    pub use tunnelgate_tunnel::tunnel_capnp::registration_server::unregister_connection_results::Builder;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseMode {
    Close,
    Reset,
    Blackhole,
}

fn results(resp: ConnectionResponse) -> ServerReply {
    ServerReply::Results(Box::new(move |c| resp.write(c)))
}

fn refuse(cause: &str, should_retry: bool, retry_after_ms: u64) -> ConnectionResponse {
    ConnectionResponse::Error(ConnectionError {
        cause: cause.to_string(),
        retry_after: Duration::from_millis(retry_after_ms),
        should_retry,
    })
}

fn registration_json(r: &RegisterRequest, protocol: &str) -> Value {
    json!({
        "connIndex": r.conn_index,
        "protocol": protocol,
        "clientId": r.client_id.to_string(),
        "tunnelId": r.tunnel_id.to_string(),
        "accountTag": r.account_tag,
        "version": r.version,
        "arch": r.arch,
        "features": r.features,
        "numPreviousAttempts": r.num_previous_attempts,
        "originLocalIp": r.origin_local_ip.map(|ip| ip.to_string()),
        "replaceExisting": r.replace_existing,
    })
}

/// A running emulator.
pub struct Emulator {
    inner: Arc<Inner>,
    /// Bound edge addresses (each serves UDP and TCP).
    pub edge_addrs: Vec<SocketAddr>,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    ca_pem: String,
    ca_key_pem: String,
    endpoints: Vec<quinn::Endpoint>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("edge_addrs", &self.edge_addrs)
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

impl Emulator {
    /// Binds every listener and starts serving.
    pub async fn start(config: EmulatorConfig) -> Result<Self, EmuError> {
        let certs = EdgeCerts::generate(config.ca_key_pem.as_deref())?;
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            config: config.clone(),
            conns: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(0),
            round_robin: AtomicUsize::new(0),
            faults: Mutex::new(Vec::new()),
            next_fault: AtomicU64::new(1),
            attempts: Mutex::new(Vec::new()),
            local_configs: Mutex::new(Vec::new()),
            unregisters: Mutex::new(Vec::new()),
            events,
            drop_switch: Arc::new(udp::DropSwitch::default()),
            refuse_tcp: AtomicBool::new(false),
            rng: Mutex::new(match config.seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_os_rng(),
            }),
        });
        let mut tasks = JoinSet::new();
        let mut edge_addrs = Vec::new();
        let mut endpoints = Vec::new();
        let quic_cfg =
            transport::edge_quic_server_config(certs.leaf_chain.clone(), certs.leaf_key.clone_key())?;
        let tls = Arc::new(transport::edge_server_tls(
            certs.leaf_chain.clone(),
            certs.leaf_key.clone_key(),
            None,
        )?);
        for want in &config.listen {
            // TCP first so that port 0 resolves to one port used for both transports.
            let tcp = tokio::net::TcpListener::bind(want)
                .await
                .map_err(|source| EmuError::Bind { addr: *want, source })?;
            let addr = tcp
                .local_addr()
                .map_err(|source| EmuError::Bind { addr: *want, source })?;
            let udp = std::net::UdpSocket::bind(addr).map_err(|source| EmuError::Bind { addr, source })?;
            udp.set_nonblocking(true)
                .map_err(|source| EmuError::Bind { addr, source })?;
            let runtime = quinn::default_runtime().ok_or_else(|| EmuError::Bind {
                addr,
                source: std::io::Error::other("no async runtime for quinn"),
            })?;
            let socket = runtime
                .wrap_udp_socket(udp)
                .map_err(|source| EmuError::Bind { addr, source })?;
            let socket: Arc<dyn quinn::AsyncUdpSocket> =
                Arc::new(udp::DroppingSocket::new(socket, inner.drop_switch.clone()));
            let endpoint = quinn::Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                Some(quic_cfg.clone()),
                socket,
                runtime,
            )
            .map_err(|source| EmuError::Bind { addr, source })?;
            tasks.spawn(serve_quic(inner.clone(), endpoint.clone(), addr));
            tasks.spawn(serve_tcp(inner.clone(), tcp, tls.clone(), addr));
            endpoints.push(endpoint);
            edge_addrs.push(addr);
        }
        let http = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| EmuError::Bind {
                addr: config.http_listen,
                source,
            })?;
        let http_addr = http.local_addr().map_err(|source| EmuError::Bind {
            addr: config.http_listen,
            source,
        })?;
        tasks.spawn(eyeball::serve(inner.clone(), http));
        let admin = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| EmuError::Bind {
                addr: config.admin_listen,
                source,
            })?;
        let admin_addr = admin.local_addr().map_err(|source| EmuError::Bind {
            addr: config.admin_listen,
            source,
        })?;
        tasks.spawn(admin::serve(inner.clone(), admin));
        for rule in config.script.clone() {
            inner.add_fault(rule);
        }
        Ok(Self {
            inner,
            edge_addrs,
            http_addr,
            admin_addr,
            ca_pem: certs.ca_pem,
            ca_key_pem: certs.ca_key_pem,
            endpoints,
            tasks,
        })
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA key (PEM), for `--ca-key-out`.
    pub fn ca_key_pem(&self) -> &str {
        &self.ca_key_pem
    }

    /// Subscribes to JSON events.
    pub fn events(&self) -> broadcast::Receiver<Value> {
        self.inner.events.subscribe()
    }

    /// The `/state` document.
    pub fn state(&self) -> Value {
        self.inner.state_json()
    }

    /// Adds a fault rule; returns its id.
    pub fn add_fault(&self, rule: FaultRule) -> u64 {
        self.inner.add_fault(rule)
    }

    /// Number of connections currently registered (and not unregistered).
    pub fn registered(&self) -> usize {
        self.inner
            .conns
            .lock()
            .map(|c| c.iter().filter(|e| e.state == ConnState::Registered).count())
            .unwrap_or(0)
    }

    /// Closes every connection (QUIC application close 0, TCP close) and stops all listeners.
    pub async fn stop(mut self) {
        for ep in &self.endpoints {
            ep.close(quinn::VarInt::from_u32(0), b"edge emulator stopping");
        }
        if let Ok(conns) = self.inner.conns.lock() {
            for c in conns.iter() {
                if let ConnHandle::H2 { abort, .. } = &c.handle {
                    abort.abort();
                }
            }
        }
        for ep in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
        }
        self.tasks.shutdown().await;
        // Connection handles keep their endpoint's socket open; drop them so the ports can be bound again.
        if let Ok(mut conns) = self.inner.conns.lock() {
            conns.clear();
        }
        self.endpoints.clear();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn serve_quic(inner: Arc<Inner>, endpoint: quinn::Endpoint, local: SocketAddr) {
    while let Some(incoming) = endpoint.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let peer = conn.remote_address();
            let id = inner.add_conn("quic", peer, local, ConnHandle::Quic(conn.clone()));
            if let Ok((send, recv)) = conn.accept_bi().await {
                let handler_inner = inner.clone();
                let served = edge::serve_control(tokio::io::join(recv, send), move |call| {
                    Box::pin(handler_inner.clone().on_call(id, call))
                });
                tokio::select! {
                    _ = served => {}
                    _ = conn.closed() => {}
                }
            }
            conn.closed().await;
            inner.mark_closed(id);
        });
    }
}

async fn serve_tcp(
    inner: Arc<Inner>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    local: SocketAddr,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        if inner.refuse_tcp.load(Ordering::SeqCst) {
            drop(tcp);
            continue;
        }
        let inner = inner.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(15), acceptor.accept(tcp)).await
            else {
                return;
            };
            let Ok((mut send, connection)) = h2::client::Builder::new()
                .initial_window_size(4 * 1024 * 1024)
                .initial_connection_window_size(16 * 1024 * 1024)
                .handshake::<_, Bytes>(stream)
                .await
            else {
                return;
            };
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            let id = inner.add_conn(
                "http2",
                peer,
                local,
                ConnHandle::H2 {
                    send: send.clone(),
                    abort: driver.abort_handle(),
                },
            );
            if let Ok(io) = edge::open_control_h2(&mut send).await {
                let handler_inner = inner.clone();
                let served =
                    edge::serve_control(io, move |call| Box::pin(handler_inner.clone().on_call(id, call)));
                let _ = served.await;
            }
            // The edge drops a connection whose control stream ended without a registration:
            // cloudflared's HTTP/2 transport only retries once the edge has closed the connection.
            if inner.with_conn(id, |e| e.state) == Some(ConnState::Connected) {
                driver.abort();
            }
            let _ = driver.await;
            inner.mark_closed(id);
        });
    }
}
