//! `tunnelgate edge-emulator`: a local stand-in for the Cloudflare edge (tunnel.md §13.1). Prints one JSON
//! start-up line with the bound addresses, then one JSON line per event, until SIGINT/SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tunnelgate_edge_emu::{Emulator, EmulatorConfig, ExpectedCredentials, FaultRule};
use tunnelgate_tunnel::TunnelToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Boxed: the subcommand enum stays small.
    #[command(flatten)]
    flags: Box<Flags>,
}

#[derive(Debug, clap::Args)]
struct Flags {
    /// Edge address serving QUIC (UDP) and HTTP/2-over-TLS (TCP). Repeat for several HA addresses.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:7844")]
    listen: Vec<SocketAddr>,
    /// Write the generated CA certificate (PEM) here; pass it as PROXY_TUNNEL_CA_FILE / --cacert.
    #[arg(long, value_name = "PATH")]
    ca_out: PathBuf,
    /// Persist the CA key here, and reuse it if the file already exists.
    #[arg(long, value_name = "PATH")]
    ca_key_out: Option<PathBuf>,
    /// Plain eyeball listener (HTTP/1.1 and h2c).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http_listen: SocketAddr,
    /// JSON admin API listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// Expected account tag (unset: accept any).
    #[arg(long, value_name = "TAG")]
    account: Option<String>,
    /// Expected tunnel id (unset: accept any).
    #[arg(long, value_name = "UUID")]
    tunnel_id: Option<String>,
    /// Expected tunnel secret, standard base64 (unset: accept any).
    #[arg(long, value_name = "B64")]
    secret_b64: Option<String>,
    /// Expect exactly the credentials of this tunnel token.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_out")]
    token: Option<String>,
    /// Generate fresh credentials, expect them, and write the matching tunnel token here.
    #[arg(long, value_name = "PATH")]
    token_out: Option<PathBuf>,
    /// Answer tunnelIsRemotelyManaged=true.
    #[arg(long)]
    remotely_managed: bool,
    /// locationName returned on registration.
    #[arg(long, default_value = "TST")]
    location: String,
    /// JSON fault script (an array of rules).
    #[arg(long, value_name = "PATH")]
    script: Option<PathBuf>,
    /// Scheme placed in `dest` and X-Forwarded-Proto.
    #[arg(long, default_value = "https")]
    eyeball_scheme: String,
    /// Seed the random choices (connection UUIDs, Cf-Ray ids, the credentials of --token-out), so that a run
    /// repeats them. Keys and certificates stay random (--ca-key-out keeps the CA).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

/// Writes `contents` to `path` atomically (temporary file in the same directory, then rename).
fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Mixed into `--seed` for the generated credentials.
const TOKEN_STREAM: u64 = 0x746f_6b65_6e00_0001;

fn expected(args: &Flags) -> anyhow::Result<(ExpectedCredentials, Option<TunnelToken>)> {
    if let Some(t) = &args.token {
        let t = TunnelToken::parse(t).context("--token")?;
        let exp = ExpectedCredentials {
            account_tag: Some(t.account_tag.clone()),
            tunnel_id: Some(t.tunnel_id),
            secret: Some(t.secret.clone()),
        };
        return Ok((exp, None));
    }
    if args.token_out.is_some() {
        let t = match args.seed {
            // Its own stream, so the credentials do not take the emulator's first draws.
            Some(seed) => TunnelToken::generate_with(&mut StdRng::seed_from_u64(seed ^ TOKEN_STREAM)),
            None => TunnelToken::generate(),
        };
        let exp = ExpectedCredentials {
            account_tag: Some(t.account_tag.clone()),
            tunnel_id: Some(t.tunnel_id),
            secret: Some(t.secret.clone()),
        };
        return Ok((exp, Some(t)));
    }
    let tunnel_id = args
        .tunnel_id
        .as_deref()
        .map(uuid::Uuid::parse_str)
        .transpose()
        .context("--tunnel-id")?;
    let secret = args
        .secret_b64
        .as_deref()
        .map(|s| base64::engine::general_purpose::STANDARD.decode(s.trim()))
        .transpose()
        .context("--secret-b64")?;
    Ok((
        ExpectedCredentials {
            account_tag: args.account.clone(),
            tunnel_id,
            secret,
        },
        None,
    ))
}

fn print_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let args = *args.flags;
    let (expected, generated) = expected(&args)?;
    let script = match &args.script {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading --script {}", p.display()))?;
            FaultRule::script_from_json(&text).with_context(|| format!("--script {}", p.display()))?
        }
        None => Vec::new(),
    };
    let ca_key_pem = match &args.ca_key_out {
        Some(p) if p.exists() => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        _ => None,
    };
    let config = EmulatorConfig {
        listen: args.listen.clone(),
        http_listen: args.http_listen,
        admin_listen: args.admin_listen,
        expected,
        remotely_managed: args.remotely_managed,
        location: args.location.clone(),
        script,
        eyeball_scheme: args.eyeball_scheme.clone(),
        ca_key_pem,
        seed: args.seed,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let emulator = Emulator::start(config).await.context("starting the edge emulator")?;
        write_atomic(&args.ca_out, emulator.ca_pem().as_bytes())?;
        if let Some(p) = &args.ca_key_out {
            write_atomic(p, emulator.ca_key_pem().as_bytes())?;
        }
        if let (Some(p), Some(t)) = (&args.token_out, &generated) {
            write_atomic(p, t.encode().as_bytes())?;
        }
        let mut events = emulator.events();
        print_line(&serde_json::json!({
            "event": "started",
            "edge": emulator.edge_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "http": emulator.http_addr.to_string(),
            "admin": emulator.admin_addr.to_string(),
            "ca": args.ca_out.display().to_string(),
        }));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("installing SIGTERM handler")?;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(v) => print_line(&v),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => print_line(&serde_json::json!({"event": "events_dropped", "count": n})),
                    Err(_) => break,
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        emulator.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}
