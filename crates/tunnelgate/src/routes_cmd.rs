//! `tunnelgate routes`: work with Gateway API YAML files without a cluster.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tunnelgate_config::Config;
use tunnelgate_gateway::{
    BackendResolution, DEFAULT_CLUSTER_DOMAIN, DEFAULT_CONTROLLER_NAME, Time, Timestamp,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: RoutesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RoutesCommand {
    /// Translate Gateway API YAML and print what the controller would do: the proxy config document and the
    /// status of every GatewayClass, Gateway, HTTPRoute and GRPCRoute read. Exits 1 when a route is not
    /// Accepted or has unresolved references.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// A YAML file, or a directory of `*.yaml`/`*.yml`/`*.json` files (read recursively, in path order).
    path: PathBuf,
    #[arg(long, value_enum, default_value_t = Output::Json)]
    output: Output,
    /// GatewayClasses with this controllerName are ours. Without any GatewayClass in the files, every Gateway
    /// is taken as ours.
    #[arg(long, env = "TUNNELGATE_CONTROLLER_NAME", default_value = DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    /// Used for Service DNS names when a Service has no EndpointSlice.
    #[arg(long, env = "TUNNELGATE_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// `endpoints`: one backend per ready EndpointSlice endpoint; `dns`: always the Service DNS name.
    #[arg(long, env = "TUNNELGATE_BACKEND_RESOLUTION", value_enum, default_value_t = Resolution::Endpoints)]
    backend_resolution: Resolution,
    /// The proxies' tunnel protocol, as the controller's flag: under `quic` GRPCRoutes are not accepted.
    #[arg(long, env = "TUNNELGATE_TUNNEL_PROTOCOL", value_enum, ignore_case = true, default_value_t = Protocol::Auto)]
    tunnel_protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Protocol {
    Auto,
    Quic,
    Http2,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Resolution {
    Endpoints,
    Dns,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        RoutesCommand::Check(a) => check(a),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let snapshot = tunnelgate_gateway::load_path(&args.path)?;
    let opts = tunnelgate_gateway::TranslateOptions {
        controller_name: args.controller_name,
        cluster_domain: args.cluster_domain,
        backend_resolution: match args.backend_resolution {
            Resolution::Endpoints => BackendResolution::Endpoints,
            Resolution::Dns => BackendResolution::Dns,
        },
        adopt_gateways_without_class: true,
        now: Time(Timestamp::now()),
        reject_grpc_routes: args.tunnel_protocol == Protocol::Quic,
        ..Default::default()
    };
    let report = tunnelgate_gateway::check(&snapshot, &opts);
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&report.document)? + "\n",
        Output::Yaml => serde_norway::to_string(&report.document)?,
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the report")?;
    if report.unhealthy_routes.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for route in &report.unhealthy_routes {
        eprintln!("tunnelgate: {route}");
    }
    Ok(ExitCode::FAILURE)
}

/// The loader behind `tunnelgate proxy --routes PATH`: Gateway API YAML translated as the controller would,
/// with every Gateway in the files taken as ours when they hold no GatewayClass. Routes that are not Accepted
/// or have unresolved refs are logged on every load; rules the proxy would reject are already dropped by the
/// translation, so the document applies.
pub fn file_mode_loader() -> crate::proxy_cmd::ConfigLoader {
    Arc::new(|path: &Path| -> Result<Config, String> {
        let snapshot = tunnelgate_gateway::load_path(path).map_err(|e| e.to_string())?;
        let opts = tunnelgate_gateway::TranslateOptions {
            adopt_gateways_without_class: true,
            config_acknowledged: true,
            now: Time(Timestamp::now()),
            ..Default::default()
        };
        let translation = tunnelgate_gateway::translate(&snapshot, &opts);
        let report = tunnelgate_gateway::report(&snapshot, &translation, &opts.controller_name);
        for route in &report.unhealthy_routes {
            tracing::warn!(route = %route, "route is not Accepted or has unresolved references");
        }
        Ok(translation.config)
    })
}
