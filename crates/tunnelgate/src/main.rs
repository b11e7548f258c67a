//! The `tunnelgate` binary: one executable with a subcommand per role. Each subcommand lives in its own
//! module and only parses arguments, sets up logging and calls into its library crate.

mod controller_cmd;
mod demo_cmd;
mod edge_cmd;
mod proxy_cmd;
mod routes_cmd;

use clap::{Parser, Subcommand};

/// jemalloc rather than the C library's malloc: a config apply frees tens of MiB (the decoded document, the
/// replaced table), which glibc keeps in its per-thread arenas (RSS grew with every apply), while jemalloc's
/// background thread hands it back to the OS within about 0.1 s (`dirty_decay_ms:100`, set at build time in
/// `.cargo/config.toml`). It is also faster for the apply's many small allocations. Figures in BENCHMARKS.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Kubernetes Gateway API for Cloudflare Tunnel.
#[derive(Debug, Parser)]
#[command(name = "tunnelgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data plane: the routing proxy, fed by a tunnel or a plain listener.
    Proxy(proxy_cmd::Args),
    /// Run the Gateway API controller that pushes config to the proxies.
    Controller(controller_cmd::Args),
    /// Run a local stand-in for the Cloudflare edge (tunnel mode offline).
    EdgeEmulator(Box<edge_cmd::Args>),
    /// Work with Gateway API YAML files without a cluster.
    Routes(routes_cmd::Args),
    /// Start a proxy with built-in backends and a demo config, and print curl lines to try.
    Demo(demo_cmd::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Proxy(a) => proxy_cmd::run(a),
        Command::Controller(a) => controller_cmd::run(a),
        Command::EdgeEmulator(a) => edge_cmd::run(*a),
        Command::Routes(a) => routes_cmd::run(a),
        Command::Demo(a) => demo_cmd::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tunnelgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
