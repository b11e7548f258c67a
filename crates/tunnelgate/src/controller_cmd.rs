//! `tunnelgate controller`: flags (each also read from `TUNNELGATE_<UPPER_SNAKE>`), logging, and the
//! `tunnelgate-controller` run loop. Exit 0 on SIGTERM/SIGINT, 1 on any error, including a lost leader lease.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::builder::BoolishValueParser;
use tunnelgate_config::GoDuration;
use tunnelgate_controller::cloudflare::api::{ConfigurationsApi, TunnelRef};
use tunnelgate_controller::{
    AuthTokenOptions, BackendResolution, CloudflareOptions, ConfigPort, ControllerOptions,
    LeaderElectionOptions, ObjectName, ProxyTargets, ProxyUrl, TunnelTokenOptions,
};

/// Where a pod's service-account namespace is mounted.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The flags, boxed so that the subcommand enum stays small.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    flags: Box<Flags>,
}

#[derive(Debug, clap::Args)]
struct Flags {
    /// GatewayClass `spec.controllerName` this controller serves.
    #[arg(
        long,
        env = "TUNNELGATE_CONTROLLER_NAME",
        default_value = "tunnelgate.dev/gateway-controller"
    )]
    controller_name: String,
    /// Cluster DNS domain for Service DNS names. Default: the `svc.<domain>` search entry of /etc/resolv.conf,
    /// else `cluster.local`.
    #[arg(long, env = "TUNNELGATE_CLUSTER_DOMAIN")]
    cluster_domain: Option<String>,
    /// `/metrics` listener (`:PORT`, `HOST:PORT`); `0` or empty disables it.
    #[arg(long, env = "TUNNELGATE_METRICS_ADDR", default_value = ":8080")]
    metrics_addr: String,
    /// `/healthz` and `/readyz` listener; `0` or empty disables it.
    #[arg(long, env = "TUNNELGATE_HEALTH_ADDR", default_value = ":8081")]
    health_addr: String,
    /// error, warn, info, debug or trace.
    #[arg(long, env = "TUNNELGATE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// json or text.
    #[arg(long, env = "TUNNELGATE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    /// Run Lease-based leader election; only the leader writes status and pushes config.
    #[arg(long, env = "TUNNELGATE_LEADER_ELECT", default_value = "true", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    leader_elect: bool,
    /// Namespace of the Lease. Default: the pod's namespace.
    #[arg(long, env = "TUNNELGATE_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        env = "TUNNELGATE_LEADER_ELECTION_LEASE_NAME",
        default_value = "tunnelgate-controller-leader"
    )]
    leader_election_lease_name: String,
    /// The proxies' headless Service, `NAME` (in the pod's namespace) or `NAMESPACE/NAME`.
    #[arg(
        long,
        env = "TUNNELGATE_PROXY_SERVICE",
        required_unless_present = "proxy_endpoints"
    )]
    proxy_service: Option<String>,
    /// EndpointSlice port name of the proxies' config API.
    #[arg(long, env = "TUNNELGATE_PROXY_CONFIG_PORT_NAME", default_value = "config-api")]
    proxy_config_port_name: String,
    /// Config API port number; when set it is used instead of the port name.
    #[arg(long, env = "TUNNELGATE_PROXY_PORT")]
    proxy_port: Option<u16>,
    /// Compatibility: fixed `http://HOST:PORT[/config]` URLs (comma-separated) instead of --proxy-service; each host
    /// is resolved on every sync.
    #[arg(
        long,
        env = "TUNNELGATE_PROXY_ENDPOINTS",
        value_delimiter = ',',
        conflicts_with = "proxy_service"
    )]
    proxy_endpoints: Vec<String>,
    /// Client timeout of one config push (Go duration).
    #[arg(long, env = "TUNNELGATE_PROXY_PUSH_TIMEOUT", default_value = "10s")]
    proxy_push_timeout: GoDuration,
    /// Secret holding the proxy bearer token, `NAME` or `NAMESPACE/NAME`. Unset: pushes carry no token.
    #[arg(long, env = "TUNNELGATE_PROXY_AUTH_SECRET")]
    proxy_auth_secret: Option<String>,
    /// Key of the token in that Secret.
    #[arg(long, env = "TUNNELGATE_PROXY_AUTH_SECRET_KEY", default_value = "auth-token")]
    proxy_auth_secret_key: String,
    /// Create the Secret with a random token when it does not exist.
    #[arg(long, env = "TUNNELGATE_PROXY_AUTH_SECRET_GENERATE", default_value = "true", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    proxy_auth_secret_generate: bool,
    /// Secret holding the tunnel token (tunnel mode), `NAME` or `NAMESPACE/NAME`: gives the Gateway address
    /// `<tunnel-id>.cfargotunnel.com`.
    #[arg(long, env = "TUNNELGATE_PROXY_TOKEN_SECRET")]
    proxy_token_secret: Option<String>,
    /// Key of the tunnel token in that Secret.
    #[arg(long, env = "TUNNELGATE_PROXY_TOKEN_SECRET_KEY", default_value = "token")]
    proxy_token_secret_key: String,
    /// The proxy Deployment, `NAME` or `NAMESPACE/NAME`: rolled when the auth token changes.
    #[arg(long, env = "TUNNELGATE_PROXY_DEPLOYMENT")]
    proxy_deployment: Option<String>,
    /// The proxies' tunnel protocol: auto, quic or http2. Under `quic` GRPCRoutes are not accepted, since the edge
    /// does not carry gRPC's trailers over QUIC; `auto` proxies move to HTTP/2 when there is a GRPCRoute.
    #[arg(long, env = "TUNNELGATE_TUNNEL_PROTOCOL", default_value = "auto")]
    tunnel_protocol: String,
    /// Service backends: `endpoints` (one backend per ready endpoint) or `dns` (the Service DNS name).
    #[arg(long, env = "TUNNELGATE_BACKEND_RESOLUTION", default_value = "endpoints", value_parser = ["endpoints", "dns"])]
    backend_resolution: String,
    /// Keep the tunnel's ingress document in the Cloudflare dashboard in step with the routes (controller.md §9).
    /// Needs --cloudflare-api-token-secret, and the account and tunnel ids from --proxy-token-secret or the flags.
    #[arg(long, env = "TUNNELGATE_CLOUDFLARE_SYNC", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    cloudflare_sync: bool,
    /// Secret holding an API token with "Cloudflare Tunnel: Edit", `NAME` or `NAMESPACE/NAME`.
    #[arg(long, env = "TUNNELGATE_CLOUDFLARE_API_TOKEN_SECRET")]
    cloudflare_api_token_secret: Option<String>,
    /// Key of the API token in that Secret.
    #[arg(
        long,
        env = "TUNNELGATE_CLOUDFLARE_API_TOKEN_KEY",
        default_value = "api-token"
    )]
    cloudflare_api_token_key: String,
    /// Account id (32 hex characters). Default: the account tag of the tunnel token.
    #[arg(long, env = "TUNNELGATE_CLOUDFLARE_ACCOUNT_ID")]
    cloudflare_account_id: Option<String>,
    /// Tunnel UUID. Default: the tunnel id of the tunnel token.
    #[arg(long, env = "TUNNELGATE_CLOUDFLARE_TUNNEL_ID")]
    cloudflare_tunnel_id: Option<String>,
    /// Base URL of the Cloudflare API. Default: https://api.cloudflare.com/client/v4.
    #[arg(long, env = "TUNNELGATE_CLOUDFLARE_API_URL")]
    cloudflare_api_url: Option<String>,
    /// OTLP tracing (HTTP/protobuf): a span per sync pass and per config push.
    #[arg(long, env = "TUNNELGATE_TRACING_ENABLED", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    tracing_enabled: bool,
    /// OTLP/HTTP endpoint (a base URL gets /v1/traces appended; host:port means http://). Default: the standard
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT variables. Only with --tracing-enabled.
    #[arg(long, env = "TUNNELGATE_TRACING_ENDPOINT")]
    tracing_endpoint: Option<String>,
    /// Share of new traces sampled, in [0,1]. Default 1. Only with --tracing-enabled.
    #[arg(long, env = "TUNNELGATE_TRACING_SAMPLE_RATE")]
    tracing_sample_rate: Option<f64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let args = *args.flags;
    refuse_flags_of_features_off(&args)?;
    init_logging(&args.log_level, &args.log_format)?;
    let pod_namespace = pod_namespace();
    let opts = controller_options(&args, &pod_namespace, pod_identity(), &resolv_conf())?;
    let tracing_settings = tracing_settings(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // Built inside the runtime: the batch processor runs as a task on it.
        let pipeline = match &tracing_settings {
            Some(t) => {
                let pipeline = tunnelgate_proxy::tracer_pipeline(t, tunnelgate_controller::TRACER_SCOPE)
                    .context("OTLP trace exporter")?;
                opentelemetry::global::set_tracer_provider(pipeline.provider().clone());
                Some(pipeline)
            }
            None => None,
        };
        let result = run_controller(opts).await;
        if let Some(pipeline) = pipeline {
            pipeline.shutdown(TRACE_FLUSH_LIMIT).await;
        }
        result
    })
}

/// Exit: time allowed to export the spans still queued.
const TRACE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

async fn run_controller(opts: ControllerOptions) -> anyhow::Result<ExitCode> {
    let client = tunnelgate_controller::connect()
        .await
        .context("connecting to the Kubernetes API")?;
    let controller = tunnelgate_controller::Controller::start(client, opts).await?;
    tokio::select! {
        result = controller.wait() => {
            result?;
            Ok(ExitCode::SUCCESS)
        }
        () = shutdown_signal() => {
            tracing::info!("signal received; stopping");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--tracing-*`: `None` when tracing is off.
fn tracing_settings(args: &Flags) -> anyhow::Result<Option<tunnelgate_proxy::TracingSettings>> {
    if !args.tracing_enabled {
        return Ok(None);
    }
    let sample_rate = args.tracing_sample_rate.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_rate) {
        bail!("--tracing-sample-rate: expected a number within [0,1], got {sample_rate}");
    }
    let endpoint = args
        .tracing_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned);
    if let Some(e) = &endpoint {
        tunnelgate_proxy::traces_url(e).map_err(|err| anyhow::anyhow!("--tracing-endpoint: {err}"))?;
    }
    Ok(Some(tunnelgate_proxy::TracingSettings {
        endpoint,
        sample_rate,
        export_interval: None,
    }))
}

/// Flags that only apply to a feature that is off are errors, never silently ignored.
fn refuse_flags_of_features_off(args: &Flags) -> anyhow::Result<()> {
    if !args.cloudflare_sync {
        let cloudflare_only = [
            (
                "--cloudflare-api-token-secret",
                args.cloudflare_api_token_secret.is_some(),
            ),
            ("--cloudflare-account-id", args.cloudflare_account_id.is_some()),
            ("--cloudflare-tunnel-id", args.cloudflare_tunnel_id.is_some()),
            ("--cloudflare-api-url", args.cloudflare_api_url.is_some()),
        ];
        if let Some((flag, _)) = cloudflare_only.iter().find(|(_, set)| *set) {
            bail!("{flag} only applies with --cloudflare-sync=true");
        }
    }
    if !args.tracing_enabled {
        let tracing_only = [
            ("--tracing-endpoint", args.tracing_endpoint.is_some()),
            ("--tracing-sample-rate", args.tracing_sample_rate.is_some()),
        ];
        if let Some((flag, _)) = tracing_only.iter().find(|(_, set)| *set) {
            bail!("{flag} only applies with --tracing-enabled=true");
        }
    }
    Ok(())
}

fn controller_options(
    args: &Flags,
    pod_namespace: &str,
    identity: String,
    resolv_conf: &str,
) -> anyhow::Result<ControllerOptions> {
    let in_pod_namespace = |flag: &str, value: &str| -> anyhow::Result<ObjectName> {
        let full = if value.contains('/') {
            value.to_owned()
        } else {
            format!("{pod_namespace}/{value}")
        };
        full.parse().with_context(|| flag.to_owned())
    };
    let proxy_targets = if args.proxy_endpoints.is_empty() {
        let Some(service) = &args.proxy_service else {
            bail!("--proxy-service or --proxy-endpoints is required");
        };
        let port = match args.proxy_port {
            Some(0) => bail!("--proxy-port must be 1..65535"),
            Some(n) => ConfigPort::Number(n),
            None => ConfigPort::Name(args.proxy_config_port_name.clone()),
        };
        ProxyTargets::Service {
            service: in_pod_namespace("--proxy-service", service)?,
            port,
        }
    } else {
        let urls = args
            .proxy_endpoints
            .iter()
            .map(|u| u.trim().parse::<ProxyUrl>().context("--proxy-endpoints"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        ProxyTargets::Urls(urls)
    };
    let mut opts = ControllerOptions::new(proxy_targets);
    opts.controller_name = args.controller_name.clone();
    opts.cluster_domain = match &args.cluster_domain {
        Some(d) if !d.trim().is_empty() => d.trim().trim_matches('.').to_owned(),
        _ => cluster_domain_from_resolv_conf(resolv_conf).unwrap_or_else(|| "cluster.local".to_owned()),
    };
    opts.metrics_addr = listen_addr("--metrics-addr", &args.metrics_addr)?;
    opts.health_addr = listen_addr("--health-addr", &args.health_addr)?;
    opts.push_timeout = args
        .proxy_push_timeout
        .to_std()
        .filter(|d| !d.is_zero())
        .context("--proxy-push-timeout must be positive")?;
    opts.backend_resolution = if args.backend_resolution == "dns" {
        BackendResolution::Dns
    } else {
        BackendResolution::Endpoints
    };
    if args.leader_elect {
        let namespace = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| pod_namespace.to_owned());
        let lease = format!("{namespace}/{}", args.leader_election_lease_name)
            .parse::<ObjectName>()
            .context("--leader-election-namespace / --leader-election-lease-name")?;
        opts.leader_election = Some(LeaderElectionOptions::new(lease, identity));
    }
    if let Some(secret) = &args.proxy_auth_secret {
        opts.auth_token = Some(AuthTokenOptions {
            secret: in_pod_namespace("--proxy-auth-secret", secret)?,
            key: args.proxy_auth_secret_key.clone(),
            generate: args.proxy_auth_secret_generate,
        });
    }
    if let Some(secret) = &args.proxy_token_secret {
        opts.tunnel_token = Some(TunnelTokenOptions {
            secret: in_pod_namespace("--proxy-token-secret", secret)?,
            key: args.proxy_token_secret_key.clone(),
        });
    }
    if let Some(deployment) = &args.proxy_deployment {
        opts.proxy_deployment = Some(in_pod_namespace("--proxy-deployment", deployment)?);
    }
    if args.cloudflare_sync {
        opts.cloudflare = Some(cloudflare_options(args, &in_pod_namespace)?);
    }
    opts.reject_grpc_routes = match args.tunnel_protocol.trim().to_ascii_lowercase().as_str() {
        "auto" | "http2" | "" => false,
        "quic" => true,
        other => bail!("--tunnel-protocol must be auto, quic or http2, not {other:?}"),
    };
    Ok(opts)
}

/// The Cloudflare API sync's settings: the API token Secret is required, and so are the account and tunnel ids,
/// from the tunnel token Secret or both flags.
fn cloudflare_options(
    args: &Flags,
    in_pod_namespace: &dyn Fn(&str, &str) -> anyhow::Result<ObjectName>,
) -> anyhow::Result<CloudflareOptions> {
    let Some(secret) = &args.cloudflare_api_token_secret else {
        bail!(
            "--cloudflare-sync needs --cloudflare-api-token-secret: a Secret holding an API token with the \
             \"Cloudflare Tunnel: Edit\" permission"
        );
    };
    let key = args.cloudflare_api_token_key.trim();
    if key.is_empty() {
        bail!("--cloudflare-api-token-key must not be empty");
    }
    let mut cf = CloudflareOptions::new(in_pod_namespace("--cloudflare-api-token-secret", secret)?, key);
    let id = |flag: &str, value: &Option<String>| -> anyhow::Result<Option<String>> {
        let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        TunnelRef::check_id(flag, value)
            .map(Some)
            .map_err(anyhow::Error::msg)
    };
    cf.account_id = id("--cloudflare-account-id", &args.cloudflare_account_id)?;
    cf.tunnel_id = id("--cloudflare-tunnel-id", &args.cloudflare_tunnel_id)?;
    if args.proxy_token_secret.is_none() {
        let missing: Vec<&str> = [
            ("--cloudflare-account-id", cf.account_id.is_none()),
            ("--cloudflare-tunnel-id", cf.tunnel_id.is_none()),
        ]
        .into_iter()
        .filter_map(|(flag, missing)| missing.then_some(flag))
        .collect();
        if !missing.is_empty() {
            bail!(
                "--cloudflare-sync needs the account and tunnel ids: give --proxy-token-secret (they are read from \
                 the tunnel token) or {}",
                missing.join(" and ")
            );
        }
    }
    if let Some(url) = args
        .cloudflare_api_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        cf.api_url = url.to_owned();
    }
    ConfigurationsApi::new(&cf.api_url, cf.call_timeout).context("--cloudflare-api-url")?;
    Ok(cf)
}

/// `:PORT` (every interface, IPv6 and IPv4), `HOST:PORT`, `[V6]:PORT`; `0` or empty disables the listener.
fn listen_addr(flag: &str, text: &str) -> anyhow::Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.is_empty() || text == "0" {
        return Ok(None);
    }
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .with_context(|| format!("{flag}: invalid port in {text:?}"))?;
        return Ok(Some(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))));
    }
    let addr = if let Some(port) = text.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        text.to_owned()
    };
    addr.parse()
        .map(Some)
        .with_context(|| format!("{flag}: expected :PORT or HOST:PORT, got {text:?}"))
}

/// The `<domain>` of the `svc.<domain>` entry in the resolv.conf `search` line.
fn cluster_domain_from_resolv_conf(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("search"))
        .flat_map(str::split_whitespace)
        .find_map(|entry| {
            entry
                .trim_end_matches('.')
                .strip_prefix("svc.")
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
        })
}

fn resolv_conf() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

fn pod_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// The Lease holder identity: the pod name, else the host name, plus the process id so that two processes on one
/// host never share an identity.
fn pod_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|s| !s.trim().is_empty()) {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{}-{}",
        if host.is_empty() { "tunnelgate" } else { &host },
        std::process::id()
    )
}

fn init_logging(level: &str, format: &str) -> anyhow::Result<()> {
    let level = level.trim().to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        bail!("--log-level must be error, warn, info, debug or trace, not {level:?}");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{level},kube=warn,hyper=warn,tower=warn"))
        .context("--log-level")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("logging setup: {e}"))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Flags {
        let mut full = vec!["controller"];
        full.extend_from_slice(argv);
        *Cli::try_parse_from(full).unwrap().args.flags
    }

    #[test]
    fn chart_arguments_parse_into_options() {
        let args = parse(&[
            "--controller-name=tunnelgate.dev/gateway-controller",
            "--metrics-addr=:8080",
            "--health-addr=:8081",
            "--log-level=info",
            "--log-format=json",
            "--leader-elect=true",
            "--leader-election-namespace=tg",
            "--leader-election-lease-name=rel-tunnelgate-leader",
            "--proxy-service=rel-tunnelgate-proxy-headless",
            "--proxy-config-port-name=config-api",
            "--proxy-push-timeout=10s",
            "--proxy-deployment=tg/rel-tunnelgate-proxy",
            "--proxy-auth-secret=tg/rel-tunnelgate-proxy-auth-token",
            "--proxy-auth-secret-key=auth-token",
            "--proxy-auth-secret-generate=true",
            "--proxy-token-secret=tg/tunnel",
            "--proxy-token-secret-key=token",
            "--tunnel-protocol=auto",
            "--cloudflare-sync=false",
            "--tracing-enabled=false",
        ]);
        refuse_flags_of_features_off(&args).unwrap();
        let resolv = "nameserver 10.96.0.10\nsearch tg.svc.corp.example svc.corp.example corp.example\noptions ndots:5\n";
        let opts = controller_options(&args, "tg", "pod-0".into(), resolv).unwrap();
        assert_eq!(opts.cluster_domain, "corp.example");
        match &opts.proxy_targets {
            ProxyTargets::Service { service, port } => {
                assert_eq!(service, &ObjectName::new("tg", "rel-tunnelgate-proxy-headless"));
                assert_eq!(port, &ConfigPort::Name("config-api".into()));
            }
            other => panic!("{other:?}"),
        }
        let le = opts.leader_election.unwrap();
        assert_eq!(le.lease, ObjectName::new("tg", "rel-tunnelgate-leader"));
        assert_eq!(le.identity, "pod-0");
        assert_eq!(opts.push_timeout, Duration::from_secs(10));
        assert_eq!(opts.metrics_addr, Some("[::]:8080".parse().unwrap()));
        assert_eq!(
            opts.auth_token.unwrap().secret,
            ObjectName::new("tg", "rel-tunnelgate-proxy-auth-token")
        );
        assert_eq!(opts.tunnel_token.unwrap().key, "token");
        assert_eq!(
            opts.proxy_deployment,
            Some(ObjectName::new("tg", "rel-tunnelgate-proxy"))
        );
    }

    #[test]
    fn unimplemented_features_and_stray_flags_are_refused_not_ignored() {
        for argv in [
            &["--proxy-service=p", "--cloudflare-account-id=0123"][..],
            &["--proxy-service=p", "--cloudflare-api-url=http://127.0.0.1:1"],
            &["--proxy-service=p", "--tracing-endpoint=http://otel:4318"],
            &["--proxy-service=p", "--tracing-sample-rate=0.5"],
        ] {
            let err = refuse_flags_of_features_off(&parse(argv))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("not") || err.contains("must") || err.contains("only applies"),
                "{argv:?}: {err}"
            );
        }
    }

    #[test]
    fn cloudflare_sync_takes_ids_from_the_tunnel_token_or_the_flags() {
        let args = parse(&[
            "--proxy-service=p",
            "--proxy-token-secret=tunnel",
            "--cloudflare-sync",
            "--cloudflare-api-token-secret=cf-api",
        ]);
        refuse_flags_of_features_off(&args).unwrap();
        let cf = controller_options(&args, "tg", "me".into(), "")
            .unwrap()
            .cloudflare
            .unwrap();
        assert_eq!(cf.api_token_secret, ObjectName::new("tg", "cf-api"));
        assert_eq!(cf.api_token_key, "api-token");
        assert_eq!((cf.account_id, cf.tunnel_id), (None, None));
        assert_eq!(cf.api_url, "https://api.cloudflare.com/client/v4");
        assert_eq!(cf.debounce, Duration::from_secs(2));
        assert_eq!(
            (cf.backoff_base, cf.backoff_max),
            (Duration::from_secs(5), Duration::from_secs(300))
        );

        let args = parse(&[
            "--proxy-service=p",
            "--cloudflare-sync=true",
            "--cloudflare-api-token-secret=ops/cf-api",
            "--cloudflare-api-token-key=token",
            "--cloudflare-account-id=0123456789abcdef0123456789abcdef",
            "--cloudflare-tunnel-id=6ff42ae2-765d-4adf-8112-31c55c1551ef",
            "--cloudflare-api-url=http://127.0.0.1:9/client/v4",
        ]);
        refuse_flags_of_features_off(&args).unwrap();
        let cf = controller_options(&args, "tg", "me".into(), "")
            .unwrap()
            .cloudflare
            .unwrap();
        assert_eq!(cf.api_token_secret, ObjectName::new("ops", "cf-api"));
        assert_eq!(cf.api_token_key, "token");
        assert_eq!(cf.account_id.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(
            cf.tunnel_id.as_deref(),
            Some("6ff42ae2-765d-4adf-8112-31c55c1551ef")
        );
        assert_eq!(cf.api_url, "http://127.0.0.1:9/client/v4");

        let off = parse(&["--proxy-service=p"]);
        assert!(
            controller_options(&off, "tg", "me".into(), "")
                .unwrap()
                .cloudflare
                .is_none()
        );
    }

    #[test]
    fn cloudflare_sync_without_what_it_needs_is_a_clear_error() {
        let bad = |argv: &[&str]| {
            let args = parse(argv);
            refuse_flags_of_features_off(&args).unwrap();
            controller_options(&args, "tg", "me".into(), "")
                .unwrap_err()
                .to_string()
        };
        let base = ["--proxy-service=p", "--cloudflare-sync"];
        let with = |extra: &[&'static str]| [&base[..], extra].concat();
        assert!(bad(&with(&["--proxy-token-secret=t"])).contains("--cloudflare-api-token-secret"));
        let no_ids = bad(&with(&["--cloudflare-api-token-secret=cf"]));
        assert!(
            no_ids.contains("--proxy-token-secret")
                && no_ids.contains("--cloudflare-account-id and --cloudflare-tunnel-id"),
            "{no_ids}"
        );
        let half = bad(&with(&[
            "--cloudflare-api-token-secret=cf",
            "--cloudflare-account-id=abc",
        ]));
        assert!(
            half.contains("--cloudflare-tunnel-id") && !half.contains("account-id and"),
            "{half}"
        );
        assert!(
            bad(&with(&[
                "--cloudflare-api-token-secret=cf",
                "--proxy-token-secret=t",
                "--cloudflare-tunnel-id=../../zones"
            ]))
            .contains("--cloudflare-tunnel-id")
        );
        assert!(
            bad(&with(&[
                "--cloudflare-api-token-secret=cf",
                "--proxy-token-secret=t",
                "--cloudflare-api-url=ftp://api.example.com"
            ]))
            .contains("--cloudflare-api-url")
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let bad = |argv: &[&str]| {
            let args = parse(argv);
            controller_options(&args, "tg", "me".into(), "")
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&["--proxy-service=a/b/c"]).contains("--proxy-service"));
        assert!(bad(&["--proxy-service=p", "--metrics-addr=:http"]).contains("--metrics-addr"));
        assert!(bad(&["--proxy-service=p", "--proxy-push-timeout=0s"]).contains("--proxy-push-timeout"));
        assert!(bad(&["--proxy-endpoints=ftp://x:1"]).contains("--proxy-endpoints"));
        assert!(
            bad(&["--proxy-service=p", "--tunnel-protocol=carrier-pigeon"]).contains("--tunnel-protocol")
        );
        let mut cli = vec!["controller", "--proxy-push-timeout=ten"];
        cli.push("--proxy-service=p");
        assert!(
            Cli::try_parse_from(cli).is_err(),
            "a malformed duration is a parse error"
        );
        assert!(
            Cli::try_parse_from(["controller"]).is_err(),
            "a proxy target source is required"
        );
    }

    #[test]
    fn defaults_and_disabled_listeners() {
        let args = parse(&[
            "--proxy-endpoints=http://proxy.tg.svc:8081/config",
            "--leader-elect=false",
            "--metrics-addr=0",
        ]);
        let opts = controller_options(&args, "tg", "me".into(), "search cluster.local\n").unwrap();
        assert!(opts.leader_election.is_none());
        assert_eq!(opts.metrics_addr, None);
        assert_eq!(opts.health_addr, Some("[::]:8081".parse().unwrap()));
        assert_eq!(opts.cluster_domain, "cluster.local");
        assert_eq!(opts.controller_name, "tunnelgate.dev/gateway-controller");
        assert!(matches!(opts.proxy_targets, ProxyTargets::Urls(ref u) if u[0].host == "proxy.tg.svc"));
        assert!(!opts.reject_grpc_routes);
    }

    #[test]
    fn only_explicit_quic_rejects_grpc_routes() {
        for (protocol, rejects) in [
            ("auto", false),
            ("http2", false),
            ("", false),
            ("quic", true),
            ("QUIC", true),
        ] {
            let flag = format!("--tunnel-protocol={protocol}");
            let args = parse(&["--proxy-service=p", &flag]);
            refuse_flags_of_features_off(&args).unwrap();
            let opts = controller_options(&args, "tg", "me".into(), "").unwrap();
            assert_eq!(opts.reject_grpc_routes, rejects, "{protocol}");
        }
    }
}
