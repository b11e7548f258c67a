//! `tunnelgate proxy`: the data plane process (config-api.md §8, §11). Every environment variable also has a
//! flag of the same name (`PROXY_GRACE_PERIOD` ↔ `--proxy-grace-period`); values are parsed strictly and a bad
//! one stops the process with exit code 1 and a message naming the variable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tunnelgate_config::{Config, GoDuration};
use tunnelgate_proxy::{
    AccessLogSettings, ProxyHandle, ProxyServer, ProxySettings, ProxyState, Registry, TracingSettings,
    parse_listen_addr,
};

/// Loads a config file. `--config` uses [`load_config_file`]; `--routes` (Gateway API YAML) plugs in its own.
pub type ConfigLoader = Arc<dyn Fn(&Path) -> Result<Config, String> + Send + Sync>;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Routing document to load at startup (JSON or YAML); reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Gateway API YAML to serve (a file or a directory, see docs/file-mode.md); reloaded when a file changes.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub routes: Option<PathBuf>,
    /// Boxed: the subcommand enum stays small.
    #[command(flatten)]
    pub env: Box<EnvArgs>,
}

/// The environment of config-api.md §8, each variable also a flag.
#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Data listener (standalone mode): ":PORT", "HOST:PORT" or "[V6]:PORT". Default ":8080".
    #[arg(long, env = "PROXY_ADDR", value_name = "ADDR")]
    pub proxy_addr: Option<String>,
    /// Config API listener. Default ":8081".
    #[arg(long, env = "PROXY_CONFIG_ADDR", value_name = "ADDR")]
    pub proxy_config_addr: Option<String>,
    /// Bearer token for /config. Unset: no auth (warned). Set but empty: refuse to start.
    #[arg(long, env = "PROXY_AUTH_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub proxy_auth_token: Option<String>,
    /// Cloudflare tunnel token; set and non-empty selects tunnel mode.
    #[arg(long, env = "TUNNEL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub tunnel_token: Option<String>,
    /// PUT /config body limit in bytes (>= 65536). Default 16777216.
    #[arg(long, env = "PROXY_MAX_CONFIG_BYTES", value_name = "BYTES")]
    pub proxy_max_config_bytes: Option<String>,
    /// Honour X-Original-Host for routing and forwarding (test harnesses only). Default false.
    #[arg(long, env = "PROXY_TRUST_ORIGINAL_HOST", value_name = "BOOL")]
    pub proxy_trust_original_host: Option<String>,
    /// Serve /metrics on the config port. Default true.
    #[arg(long, env = "PROXY_METRICS_ENABLED", value_name = "BOOL")]
    pub proxy_metrics_enabled: Option<String>,
    /// Drain window after the first signal, clamped to 0..3m. Default 30s.
    #[arg(long, env = "PROXY_GRACE_PERIOD", value_name = "DURATION")]
    pub proxy_grace_period: Option<String>,
    /// Tunnel edge protocol: auto | quic | http2. Default auto.
    #[arg(long, env = "PROXY_TUNNEL_PROTOCOL", value_name = "PROTOCOL")]
    pub proxy_tunnel_protocol: Option<String>,
    /// In auto mode, how long to wait for the first config before dialling. Default 30s.
    #[arg(long, env = "PROXY_TUNNEL_PROTOCOL_WAIT", value_name = "DURATION")]
    pub proxy_tunnel_protocol_wait: Option<String>,
    /// Number of edge connections, 1..16. Default 4.
    #[arg(long, env = "PROXY_TUNNEL_HA_CONNECTIONS", value_name = "N")]
    pub proxy_tunnel_ha_connections: Option<String>,
    /// Comma-separated host:port list replacing edge discovery.
    #[arg(long, env = "PROXY_TUNNEL_EDGE", value_name = "ADDRS")]
    pub proxy_tunnel_edge: Option<String>,
    /// PEM file replacing the edge trust roots.
    #[arg(long, env = "PROXY_TUNNEL_CA_FILE", value_name = "FILE")]
    pub proxy_tunnel_ca_file: Option<String>,
    /// Upgrade path: backend connect timeout. Default 30s.
    #[arg(long, env = "PROXY_WS_DIAL_TIMEOUT", value_name = "DURATION")]
    pub proxy_ws_dial_timeout: Option<String>,
    /// Upgrade path: time to the backend's response head. Default 30s.
    #[arg(long, env = "PROXY_WS_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub proxy_ws_handshake_timeout: Option<String>,
    /// Larger request bodies are not mirrored. Default 1048576.
    #[arg(long, env = "PROXY_MIRROR_MAX_BODY_BYTES", value_name = "BYTES")]
    pub proxy_mirror_max_body_bytes: Option<String>,
    /// Data port: time allowed for a request head; slow and silent clients are cut. Default 60s.
    #[arg(long, env = "PROXY_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    pub proxy_header_read_timeout: Option<String>,
    /// Data port: most connections served at once; 0 (the default) means no cap.
    #[arg(long, env = "PROXY_MAX_CONNECTIONS", value_name = "N")]
    pub proxy_max_connections: Option<String>,
    /// Data port: threads serving client connections, each with its own single-threaded runtime. Default: one
    /// per available CPU (which follows the cgroup CPU quota); 0 serves them on the main runtime; at most 1024.
    #[arg(long, env = "PROXY_DATA_WORKERS", value_name = "N")]
    pub proxy_data_workers: Option<String>,
    /// One JSON line per request on stdout. Default false.
    #[arg(long, env = "PROXY_ACCESS_LOG_ENABLED", value_name = "BOOL")]
    pub proxy_access_log_enabled: Option<String>,
    /// Share of non-5xx requests logged, in [0,1]. Default 1.
    #[arg(long, env = "PROXY_ACCESS_LOG_SAMPLING_RATE", value_name = "RATE")]
    pub proxy_access_log_sampling_rate: Option<String>,
    /// Omit the query from access-log lines. Default false.
    #[arg(long, env = "PROXY_ACCESS_LOG_STRIP_QUERY", value_name = "BOOL")]
    pub proxy_access_log_strip_query: Option<String>,
    /// OTLP tracing of proxied requests (HTTP/protobuf export). Default false.
    #[arg(long, env = "PROXY_TRACING_ENABLED", value_name = "BOOL")]
    pub proxy_tracing_enabled: Option<String>,
    /// OTLP/HTTP endpoint: a base URL (`/v1/traces` is appended when it has no path) or `host:port`. Empty: the
    /// standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT variables.
    #[arg(long, env = "PROXY_TRACING_ENDPOINT", value_name = "URL")]
    pub proxy_tracing_endpoint: Option<String>,
    /// Share of new traces sampled, in [0,1]; a valid incoming traceparent decides for itself. Default 1.
    #[arg(long, env = "PROXY_TRACING_SAMPLE_RATE", value_name = "RATE")]
    pub proxy_tracing_sample_rate: Option<String>,
    /// error | warn | info | debug | trace. Default info. RUST_LOG, when set, wins.
    #[arg(long, env = "PROXY_LOG_LEVEL", value_name = "LEVEL")]
    pub proxy_log_level: Option<String>,
    /// json | text. Default json.
    #[arg(long, env = "PROXY_LOG_FORMAT", value_name = "FORMAT")]
    pub proxy_log_format: Option<String>,
}

/// Log settings shared with `demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let env = &*args.env;
    let level = parse_log_level(env.proxy_log_level.as_deref())?;
    let format = parse_log_format(env.proxy_log_format.as_deref())?;
    let settings = settings_from(env)?;
    if let Some(token) = env.tunnel_token.as_deref().filter(|t| !t.trim().is_empty()) {
        let tunnel = tunnel_config(env, token, settings.grace_period)?;
        let protocol_wait = parse_duration(
            "PROXY_TUNNEL_PROTOCOL_WAIT",
            env.proxy_tunnel_protocol_wait.as_deref(),
            DEFAULT_PROTOCOL_WAIT,
        )?;
        init_logging(level, format);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?;
        return runtime.block_on(run_tunnel_mode(settings, tunnel, protocol_wait));
    }
    init_logging(level, format);
    let (file, loader): (_, ConfigLoader) = match &args.routes {
        Some(routes) => (Some(routes.clone()), crate::routes_cmd::file_mode_loader()),
        None => (args.config.clone(), Arc::new(load_config_file)),
    };
    // With data workers (the default) this runtime only accepts connections and hands them over, serves the
    // config API and watches signals and the config file: one thread is enough for that (decode and compile run
    // on threads of their own), and every runtime thread costs its stack and allocator cache (~0.3 MiB each).
    // Without data workers it serves the data connections too, on every core.
    let mut builder = if settings.data_workers > 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build().context("start the async runtime")?;
    runtime.block_on(run_standalone(settings, file, loader))
}

/// Builds the tunnel settings (tunnel.md §1, §2, §11). A bad token is a start-up error (exit 1).
fn tunnel_config(
    args: &EnvArgs,
    token: &str,
    grace_period: Duration,
) -> anyhow::Result<tunnelgate_tunnel::TunnelConfig> {
    parse_tunnel_settings(args)?;
    let token = tunnelgate_tunnel::TunnelToken::parse(token).context("TUNNEL_TOKEN")?;
    let mut cfg = tunnelgate_tunnel::TunnelConfig::new(token);
    if let Some(p) = args
        .proxy_tunnel_protocol
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    {
        cfg.protocol = p
            .parse()
            .map_err(|e: String| anyhow::anyhow!("PROXY_TUNNEL_PROTOCOL: {e}"))?;
    }
    cfg.ha_connections = u8::try_from(parse_int(
        "PROXY_TUNNEL_HA_CONNECTIONS",
        args.proxy_tunnel_ha_connections.as_deref(),
        4,
    )?)
    .context("PROXY_TUNNEL_HA_CONNECTIONS")?;
    if let Some(edge) = args.proxy_tunnel_edge.as_deref().filter(|e| !e.trim().is_empty()) {
        let list = tunnelgate_tunnel::edge_addr::parse_edge_list(edge).context("PROXY_TUNNEL_EDGE")?;
        cfg.edge = tunnelgate_tunnel::EdgeSource::List(list);
    }
    cfg.ca_file = args
        .proxy_tunnel_ca_file
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(PathBuf::from);
    cfg.grace_period = grace_period;
    Ok(cfg)
}

/// Tunnel streams enter the same request service as the plain listener.
struct ProxyOrigin(tunnelgate_proxy::RequestService);

impl tunnelgate_tunnel::Origin for ProxyOrigin {
    fn serve(
        &self,
        mut req: http::Request<tunnelgate_tunnel::OriginBody>,
        info: tunnelgate_tunnel::StreamInfo,
    ) -> tunnelgate_tunnel::origin::BoxFuture<http::Response<tunnelgate_tunnel::OriginBody>> {
        if let Some(upgrade) = req.extensions_mut().remove::<tunnelgate_tunnel::TunnelUpgrade>()
            && let Some(fut) = upgrade.take()
        {
            req.extensions_mut()
                .insert(tunnelgate_proxy::ClientUpgrade::new(fut));
        }
        let service = self.0.clone();
        let ctx = tunnelgate_proxy::RequestContext {
            scheme: info.scheme,
            peer: None,
            transport: info.transport,
        };
        Box::pin(async move { service.serve(req, ctx).await })
    }
}

/// `PROXY_TUNNEL_PROTOCOL_WAIT` default (tunnel.md §11, config-api.md §8).
const DEFAULT_PROTOCOL_WAIT: Duration = Duration::from_secs(30);

/// In `auto`, how the first config is waited for (tunnel.md §11): polled, as it is read once at start-up.
const PROTOCOL_WAIT_POLL: Duration = Duration::from_millis(25);

/// The `auto` decision of tunnel.md §11: waits up to `wait` for the first `PUT /config`; a config with
/// `hasGrpcRoute` selects HTTP/2 (gRPC needs trailers end to end, which the QUIC data streams do not carry),
/// anything else, or no config in time, keeps `auto` (QUIC with per-connection fallback to HTTP/2).
async fn decide_auto_protocol(state: &ProxyState, wait: Duration) -> tunnelgate_tunnel::ProtocolChoice {
    use tunnelgate_tunnel::ProtocolChoice;
    let deadline = tokio::time::Instant::now() + wait;
    if !state.has_config() {
        tracing::info!(
            wait = ?wait,
            "tunnel protocol auto: waiting for the first config before dialling the edge"
        );
    }
    while !state.has_config() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + PROTOCOL_WAIT_POLL)).await;
    }
    if !state.has_config() {
        tracing::info!("tunnel protocol auto: no config within PROXY_TUNNEL_PROTOCOL_WAIT; dialling QUIC");
        ProtocolChoice::Auto
    } else if state.has_grpc_route() {
        tracing::info!("tunnel protocol auto: the config has gRPC routes; dialling HTTP/2");
        ProtocolChoice::Http2
    } else {
        tracing::info!("tunnel protocol auto: dialling QUIC (HTTP/2 as fallback)");
        ProtocolChoice::Auto
    }
}

/// How often a tunnel that may run on QUIC checks whether the config has gained gRPC routes.
const GRPC_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Connections on QUIC cannot carry gRPC (no trailers on QUIC data streams). With `quic`, warns once each time
/// the active config turns `hasGrpcRoute` on; with `auto`, moves the connections to HTTP/2 one at a time the
/// first time it does (tunnel.md §11, live switch), and never back.
async fn follow_grpc_routes(
    state: ProxyState,
    tunnel: Arc<tunnelgate_tunnel::Tunnel>,
    protocol: tunnelgate_tunnel::ProtocolChoice,
) {
    let mut warned = false;
    loop {
        let grpc = state.has_grpc_route();
        if grpc && protocol == tunnelgate_tunnel::ProtocolChoice::Auto {
            tracing::info!("the config has gRPC routes; moving the tunnel connections from QUIC to HTTP/2");
            tunnel.switch_to_http2();
            return;
        }
        if grpc && !warned {
            tracing::warn!(
                "the config has gRPC routes, but PROXY_TUNNEL_PROTOCOL=quic cannot carry them; use http2 or auto"
            );
        }
        warned = grpc;
        tokio::time::sleep(GRPC_CHECK_INTERVAL).await;
    }
}

/// Tunnel mode (config-api.md §11): config port only, tunnel connections feed the request service; readiness
/// latches at the first registration; SIGTERM unregisters and drains the tunnel, then the config port.
async fn run_tunnel_mode(
    mut settings: ProxySettings,
    mut tunnel: tunnelgate_tunnel::TunnelConfig,
    protocol_wait: Duration,
) -> anyhow::Result<ExitCode> {
    settings.data_addr = None;
    let mut registry = Registry::default();
    let metrics = tunnelgate_tunnel::TunnelMetrics::register(&mut registry);
    let state = ProxyState::new(registry);
    state.set_tunnel_mode(true);
    let handle = ProxyServer::start(settings, state.clone()).await?;
    if tunnel.protocol == tunnelgate_tunnel::ProtocolChoice::Auto {
        tokio::select! {
            choice = decide_auto_protocol(&state, protocol_wait) => tunnel.protocol = choice,
            signal = shutdown_signal() => {
                signal?;
                tracing::info!("shutdown signal received before the tunnel started; draining");
                state.set_draining();
                return drain_unless_signalled_again(handle.shutdown()).await;
            }
        }
    }
    let protocol = tunnel.protocol;
    let origin = Arc::new(ProxyOrigin(handle.service().clone()));
    let tunnel =
        Arc::new(tunnelgate_tunnel::Tunnel::start(tunnel, origin, metrics).context("starting the tunnel")?);
    if protocol != tunnelgate_tunnel::ProtocolChoice::Http2 {
        tokio::spawn(follow_grpc_routes(state.clone(), tunnel.clone(), protocol));
    }
    let mut registered = tunnel.ever_registered();
    let latch = state.clone();
    tokio::spawn(async move {
        if registered.wait_for(|r| *r).await.is_ok() {
            latch.set_tunnel_registered();
        }
    });
    shutdown_signal().await?;
    tracing::info!("shutdown signal received; unregistering tunnel connections and draining");
    state.set_draining();
    drain_unless_signalled_again(async {
        tunnel.shutdown().await;
        handle.shutdown().await;
    })
    .await
}

/// Validates the tunnel variables so that a bad value fails the same way in every mode.
fn parse_tunnel_settings(args: &EnvArgs) -> anyhow::Result<()> {
    match args
        .proxy_tunnel_protocol
        .as_deref()
        .map(|p| p.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("auto") | Some("quic") | Some("http2") => {}
        Some(other) => bail!("PROXY_TUNNEL_PROTOCOL: expected auto, quic or http2, got {other:?}"),
    }
    parse_duration(
        "PROXY_TUNNEL_PROTOCOL_WAIT",
        args.proxy_tunnel_protocol_wait.as_deref(),
        DEFAULT_PROTOCOL_WAIT,
    )?;
    let ha = parse_int(
        "PROXY_TUNNEL_HA_CONNECTIONS",
        args.proxy_tunnel_ha_connections.as_deref(),
        4,
    )?;
    if !(1..=16).contains(&ha) {
        bail!("PROXY_TUNNEL_HA_CONNECTIONS: must be within 1..16, got {ha}");
    }
    Ok(())
}

async fn run_standalone(
    settings: ProxySettings,
    config: Option<PathBuf>,
    loader: ConfigLoader,
) -> anyhow::Result<ExitCode> {
    let state = ProxyState::new(Registry::default());
    let mut watched = None;
    if let Some(path) = &config {
        let doc = loader(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        apply_file_config(&state, doc).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        tracing::info!(file = %path.display(), "initial config loaded");
        watched = Some(file_stamp(path));
    }
    let handle = ProxyServer::start(settings, state.clone()).await?;
    if let (Some(path), Some(stamp)) = (config, watched) {
        tokio::spawn(watch_config_file(path, stamp, loader, state));
    }
    wait_for_signal_then_drain(handle).await
}

/// First SIGTERM/SIGINT drains; a second one exits at once.
pub async fn wait_for_signal_then_drain(handle: ProxyHandle) -> anyhow::Result<ExitCode> {
    shutdown_signal().await?;
    tracing::info!("shutdown signal received; draining");
    drain_unless_signalled_again(handle.shutdown()).await
}

/// Runs `drain` after the first signal; a second SIGTERM/SIGINT exits at once.
async fn drain_unless_signalled_again(drain: impl Future<Output = ()>) -> anyhow::Result<ExitCode> {
    tokio::select! {
        () = drain => {
            tracing::info!("drained; exiting");
            Ok(ExitCode::SUCCESS)
        }
        second = shutdown_signal() => {
            second?;
            tracing::warn!("second signal; exiting immediately");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Reads a JSON or YAML routing document.
pub fn load_config_file(path: &Path) -> Result<Config, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    Config::from_json_or_yaml(&bytes).map_err(|e| match e.path {
        Some(p) => format!("{} (at {p})", e.message),
        None => e.message,
    })
}

/// Installs a document read from a file. A file without a version gets the wall clock in milliseconds (kept
/// above the current version), so that file mode becomes ready like a controller push would make it.
pub fn apply_file_config(state: &ProxyState, mut doc: Config) -> Result<(), String> {
    if doc.version == 0 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(1);
        doc.version = now_ms.max(state.status().version + 1);
    }
    match state.apply(&doc) {
        Ok(status) => {
            tracing::info!(
                version = status.version,
                rules = status.rules,
                "config applied from file"
            );
            Ok(())
        }
        Err(tunnelgate_proxy::ApplyError::Invalid { message, path }) => Err(match path {
            Some(p) => format!("{message} (at {p})"),
            None => message,
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// (file, mtime, size) of every file read; a `--routes` directory is several files.
type Stamp = Option<Vec<(PathBuf, Option<SystemTime>, u64)>>;

fn file_stamp(path: &Path) -> Stamp {
    let files = tunnelgate_gateway::input_files(path).ok()?;
    files
        .into_iter()
        .map(|f| {
            std::fs::metadata(&f)
                .ok()
                .map(|m| (f, m.modified().ok(), m.len()))
        })
        .collect()
}

/// Polls the file's mtime and size every second; a change reloads it. A bad file logs an error and the active
/// config stays.
pub async fn watch_config_file(path: PathBuf, mut last: Stamp, loader: ConfigLoader, state: ProxyState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let stamp = file_stamp(&path);
        if stamp == last {
            continue;
        }
        last = stamp.clone();
        if stamp.is_none() {
            tracing::error!(file = %path.display(), "config file disappeared; keeping the active config");
            continue;
        }
        // Loading and compiling a large document takes tens of milliseconds: off the runtime, which may have a
        // single thread that also accepts connections and serves the config API.
        let (load, file, target) = (Arc::clone(&loader), path.clone(), state.clone());
        let result =
            tokio::task::spawn_blocking(move || load(&file).and_then(|doc| apply_file_config(&target, doc)))
                .await
                .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
        if let Err(e) = result {
            tracing::error!(file = %path.display(), error = %e, "config file rejected; keeping the active config");
        }
    }
}

fn settings_from(args: &EnvArgs) -> anyhow::Result<ProxySettings> {
    let defaults = ProxySettings::default();
    let addr = |var: &str, value: Option<&str>, default: &str| {
        let text = value.map(str::trim).filter(|v| !v.is_empty()).unwrap_or(default);
        parse_listen_addr(text).with_context(|| var.to_owned())
    };
    let auth_token = match args.proxy_auth_token.clone() {
        Some(t) if t.trim().is_empty() => bail!("PROXY_AUTH_TOKEN is set but empty"),
        Some(t) => Some(t),
        // clap treats an empty environment value as absent; the contract does not.
        None if std::env::var_os("PROXY_AUTH_TOKEN").is_some() => {
            bail!("PROXY_AUTH_TOKEN is set but empty")
        }
        None => None,
    };
    let max_config_bytes = parse_int(
        "PROXY_MAX_CONFIG_BYTES",
        args.proxy_max_config_bytes.as_deref(),
        defaults.max_config_bytes as u64,
    )?;
    if max_config_bytes < 65536 {
        bail!("PROXY_MAX_CONFIG_BYTES: must be at least 65536, got {max_config_bytes}");
    }
    let grace = parse_duration(
        "PROXY_GRACE_PERIOD",
        args.proxy_grace_period.as_deref(),
        defaults.grace_period,
    )?
    .min(Duration::from_secs(180));
    let sampling_rate = parse_rate(
        "PROXY_ACCESS_LOG_SAMPLING_RATE",
        args.proxy_access_log_sampling_rate.as_deref(),
    )?;
    let tracing = tracing_settings(args)?;
    parse_tunnel_settings(args)?;
    let header_read_timeout = parse_duration(
        "PROXY_HEADER_READ_TIMEOUT",
        args.proxy_header_read_timeout.as_deref(),
        defaults.header_read_timeout,
    )?;
    if header_read_timeout.is_zero() {
        bail!("PROXY_HEADER_READ_TIMEOUT: must be greater than 0");
    }
    let max_connections = match parse_int("PROXY_MAX_CONNECTIONS", args.proxy_max_connections.as_deref(), 0)?
    {
        0 => None,
        n => Some(usize::try_from(n).context("PROXY_MAX_CONNECTIONS: too large")?),
    };
    let data_workers = match present(args.proxy_data_workers.as_deref()) {
        None => defaults.data_workers,
        Some(_) => match parse_int("PROXY_DATA_WORKERS", args.proxy_data_workers.as_deref(), 0)? {
            n @ 0..=MAX_DATA_WORKERS => n as usize,
            n => bail!("PROXY_DATA_WORKERS: at most {MAX_DATA_WORKERS}, got {n}"),
        },
    };
    Ok(ProxySettings {
        data_addr: Some(addr("PROXY_ADDR", args.proxy_addr.as_deref(), ":8080")?),
        config_addr: addr("PROXY_CONFIG_ADDR", args.proxy_config_addr.as_deref(), ":8081")?,
        auth_token,
        max_config_bytes: usize::try_from(max_config_bytes).context("PROXY_MAX_CONFIG_BYTES: too large")?,
        trust_original_host: parse_bool(
            "PROXY_TRUST_ORIGINAL_HOST",
            args.proxy_trust_original_host.as_deref(),
            false,
        )?,
        metrics_enabled: parse_bool(
            "PROXY_METRICS_ENABLED",
            args.proxy_metrics_enabled.as_deref(),
            true,
        )?,
        grace_period: grace,
        ws_dial_timeout: parse_duration(
            "PROXY_WS_DIAL_TIMEOUT",
            args.proxy_ws_dial_timeout.as_deref(),
            defaults.ws_dial_timeout,
        )?,
        ws_handshake_timeout: parse_duration(
            "PROXY_WS_HANDSHAKE_TIMEOUT",
            args.proxy_ws_handshake_timeout.as_deref(),
            defaults.ws_handshake_timeout,
        )?,
        mirror_max_body_bytes: usize::try_from(parse_int(
            "PROXY_MIRROR_MAX_BODY_BYTES",
            args.proxy_mirror_max_body_bytes.as_deref(),
            defaults.mirror_max_body_bytes as u64,
        )?)
        .context("PROXY_MIRROR_MAX_BODY_BYTES: too large")?,
        access_log: AccessLogSettings {
            enabled: parse_bool(
                "PROXY_ACCESS_LOG_ENABLED",
                args.proxy_access_log_enabled.as_deref(),
                false,
            )?,
            sampling_rate,
            strip_query: parse_bool(
                "PROXY_ACCESS_LOG_STRIP_QUERY",
                args.proxy_access_log_strip_query.as_deref(),
                false,
            )?,
        },
        header_read_timeout,
        max_connections,
        // One single-threaded runtime per core serves the data connections (docs/proxy.md, "Threads and
        // connection pools"); the multi-threaded runtime built in `run` keeps the config API, signals and the
        // tunnel.
        data_workers,
        tracing,
    })
}

fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// `1/true/yes/on` and `0/false/no/off`, case-insensitive and trimmed.
pub fn parse_bool(var: &str, value: Option<&str>, default: bool) -> anyhow::Result<bool> {
    let Some(v) = present(value) else {
        return Ok(default);
    };
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => bail!("{var}: expected a boolean (true/false, 1/0, yes/no, on/off), got {v:?}"),
    }
}

/// A Go duration (`30s`, `1m30s`, `500ms`), not negative.
pub fn parse_duration(var: &str, value: Option<&str>, default: Duration) -> anyhow::Result<Duration> {
    let Some(v) = present(value) else {
        return Ok(default);
    };
    let d = GoDuration::parse(v).map_err(|e| anyhow::anyhow!("{var}: invalid duration {v:?}: {e}"))?;
    d.to_std()
        .ok_or_else(|| anyhow::anyhow!("{var}: duration must not be negative, got {v:?}"))
}

/// More data worker threads than this is a typo, not a machine.
const MAX_DATA_WORKERS: u64 = 1024;

fn parse_int(var: &str, value: Option<&str>, default: u64) -> anyhow::Result<u64> {
    let Some(v) = present(value) else {
        return Ok(default);
    };
    v.parse::<u64>()
        .map_err(|_| anyhow::anyhow!("{var}: expected a non-negative decimal integer, got {v:?}"))
}

/// `PROXY_TRACING_*`. The rate is validated even when tracing is off; the endpoint only when it is on.
fn tracing_settings(args: &EnvArgs) -> anyhow::Result<Option<TracingSettings>> {
    let sample_rate = parse_rate(
        "PROXY_TRACING_SAMPLE_RATE",
        args.proxy_tracing_sample_rate.as_deref(),
    )?;
    if !parse_bool(
        "PROXY_TRACING_ENABLED",
        args.proxy_tracing_enabled.as_deref(),
        false,
    )? {
        return Ok(None);
    }
    let endpoint = present(args.proxy_tracing_endpoint.as_deref()).map(str::to_owned);
    if let Some(e) = &endpoint {
        tunnelgate_proxy::traces_url(e).map_err(|e| anyhow::anyhow!("PROXY_TRACING_ENDPOINT: {e}"))?;
    }
    Ok(Some(TracingSettings {
        endpoint,
        sample_rate,
        export_interval: None,
    }))
}

fn parse_rate(var: &str, value: Option<&str>) -> anyhow::Result<f64> {
    let Some(v) = present(value) else {
        return Ok(1.0);
    };
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => bail!("{var}: expected a number within [0,1], got {v:?}"),
    }
}

pub fn parse_log_level(value: Option<&str>) -> anyhow::Result<tracing::Level> {
    let Some(v) = present(value) else {
        return Ok(tracing::Level::INFO);
    };
    match v.to_ascii_lowercase().as_str() {
        "error" => Ok(tracing::Level::ERROR),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "info" => Ok(tracing::Level::INFO),
        "debug" => Ok(tracing::Level::DEBUG),
        "trace" => Ok(tracing::Level::TRACE),
        _ => bail!("PROXY_LOG_LEVEL: expected error, warn, info, debug or trace, got {v:?}"),
    }
}

pub fn parse_log_format(value: Option<&str>) -> anyhow::Result<LogFormat> {
    match present(value).map(str::to_ascii_lowercase).as_deref() {
        None | Some("json") => Ok(LogFormat::Json),
        Some("text") => Ok(LogFormat::Text),
        Some(other) => bail!("PROXY_LOG_FORMAT: expected json or text, got {other:?}"),
    }
}

/// Logs to stdout. `RUST_LOG`, when set, overrides the level.
pub fn init_logging(level: tracing::Level, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(level.as_str().to_ascii_lowercase()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
