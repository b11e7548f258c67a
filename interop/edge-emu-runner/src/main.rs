//! edge-emu-runner: the `tunnelgate-edge-emu` library as a process, with the subset of the
//! `tunnelgate edge-emulator` flags (tunnel.md §13.1) that the cloudflared interop check needs.
//!
//! It exists because the check must be runnable before (and independently of) the
//! `tunnelgate edge-emulator` subcommand. It does not parse fault scripts or `--token`; it always
//! generates fresh credentials, expects exactly them, and writes the matching token to `--token-out`.

use std::net::SocketAddr;
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use serde_json::json;
use tunnelgate_edge_emu::{Emulator, EmulatorConfig, ExpectedCredentials};
use uuid::Uuid;

struct Args {
    config: EmulatorConfig,
    ca_out: String,
    token_out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut config = EmulatorConfig::default();
    let mut listen = Vec::new();
    let mut ca_out = None;
    let mut token_out = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let addr = |v: String| {
            v.parse::<SocketAddr>()
                .map_err(|e| format!("{flag}: {v:?} is not host:port ({e})"))
        };
        match flag.as_str() {
            "--listen" => listen.push(addr(value()?)?),
            "--http-listen" => config.http_listen = addr(value()?)?,
            "--admin-listen" => config.admin_listen = addr(value()?)?,
            "--ca-out" => ca_out = Some(value()?),
            "--token-out" => token_out = Some(value()?),
            "--location" => config.location = value()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !listen.is_empty() {
        config.listen = listen;
    }
    Ok(Args {
        config,
        ca_out: ca_out.ok_or("--ca-out is required")?,
        token_out,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("edge-emu-runner: {e}");
            return ExitCode::from(2);
        }
    };
    let mut account = [0u8; 16];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut account);
    rand::rng().fill_bytes(&mut secret);
    let account_tag: String = account.iter().map(|b| format!("{b:02x}")).collect();
    let tunnel_id = Uuid::new_v4();
    let token_json = json!({"a": account_tag, "s": STANDARD.encode(secret), "t": tunnel_id.to_string()});
    let token = STANDARD.encode(token_json.to_string());
    args.config.expected = ExpectedCredentials {
        account_tag: Some(account_tag),
        tunnel_id: Some(tunnel_id),
        secret: Some(secret.to_vec()),
    };

    let emu = match Emulator::start(args.config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("edge-emu-runner: start: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::write(&args.ca_out, emu.ca_pem()) {
        eprintln!("edge-emu-runner: writing {}: {e}", args.ca_out);
        return ExitCode::from(1);
    }
    if let Some(path) = &args.token_out {
        if let Err(e) = std::fs::write(path, &token) {
            eprintln!("edge-emu-runner: writing {path}: {e}");
            return ExitCode::from(1);
        }
    }
    let mut events = emu.events();
    println!(
        "{}",
        json!({
            "event": "started",
            "edge": emu.edge_addrs,
            "http": emu.http_addr,
            "admin": emu.admin_addr,
            "ca": args.ca_out,
        })
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edge-emu-runner: signal handler: {e}");
            return ExitCode::from(1);
        }
    };
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(v) => println!("{v}"),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("{}", json!({"event": "lagged", "missed": n}));
                }
                Err(_) => break,
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("{}", json!({"event": "final_state", "state": emu.state()}));
    emu.stop().await;
    ExitCode::SUCCESS
}
