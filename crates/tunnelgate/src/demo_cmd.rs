//! `tunnelgate demo`: the proxy in standalone mode with two built-in backends and a config that shows header
//! matching, a weighted split, a redirect and a rewrite. It prints `curl` lines to try; `--check` sends those
//! requests itself and exits 0 when every answer is as described.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tunnelgate_config::Config;
use tunnelgate_proxy::{ProxyServer, ProxySettings, ProxyState, Registry};

use crate::proxy_cmd::{LogFormat, init_logging, wait_for_signal_then_drain};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data port of the demo proxy (on 127.0.0.1). 0 picks a free port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Config API port of the demo proxy (on 127.0.0.1). 0 picks a free port.
    #[arg(long, default_value_t = 8081)]
    config_port: u16,
    /// Send the demo requests, print the results, and exit 0 if all behave as described (1 otherwise).
    #[arg(long)]
    check: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::ERROR, LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(demo(args))
}

async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    let alpha = start_backend("alpha").await?;
    let beta = start_backend("beta").await?;
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let settings = ProxySettings {
        data_addr: Some(SocketAddr::new(loopback, args.port)),
        config_addr: SocketAddr::new(loopback, args.config_port),
        grace_period: Duration::from_secs(2),
        ..ProxySettings::default()
    };
    let state = ProxyState::new(Registry::default());
    let doc = demo_config(alpha, beta);
    state
        .apply(&doc)
        .map_err(|e| anyhow::anyhow!("demo config rejected: {e}"))?;
    let handle = match ProxyServer::start(settings, state).await {
        Ok(h) => h,
        Err(e) if e.source.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "port {} is already in use; pick free ports with --port and --config-port (0 = any free port)",
            e.addr.port()
        ),
        Err(e) => return Err(e.into()),
    };
    let data = handle
        .data_addr()
        .context("the demo proxy has no data listener")?;
    let config = handle.config_addr();

    if args.check {
        let ok = check(data).await;
        handle.shutdown().await;
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }

    println!("tunnelgate demo: proxy on http://{data}, config API on http://{config}");
    println!(
        "backends: alpha on http://{alpha}, beta on http://{beta} (each echoes what it received as JSON)\n"
    );
    println!("# the default route goes to alpha");
    println!("curl -s http://{data}/hello");
    println!("# header match: X-Demo-Tier: beta routes to beta");
    println!("curl -s -H 'X-Demo-Tier: beta' http://{data}/hello");
    println!("# weighted split: /split sends 80% to alpha and 20% to beta");
    println!("for i in $(seq 10); do curl -s http://{data}/split | grep -o '\"backend\":\"[a-z]*\"'; done");
    println!("# redirect: /old/... answers 301 with Location /new/...");
    println!("curl -si http://{data}/old/page");
    println!("# rewrite: /api/... reaches beta as /v2/... with Host api.internal");
    println!("curl -s 'http://{data}/api/items?page=2'");
    println!("# the active config");
    println!("curl -s http://{config}/config");
    println!("\nCtrl-C to stop.");
    wait_for_signal_then_drain(handle).await
}

/// The demo routing document. Rule order matters only for ties; each rule here has its own path or header.
fn demo_config(alpha: SocketAddr, beta: SocketAddr) -> Config {
    let doc = serde_json::json!({
        "version": 1,
        "rules": [
            {"matches": [{"headers": [{"type": "Exact", "name": "X-Demo-Tier", "value": "beta"}]}],
             "filters": [{"type": "ResponseHeaderModifier",
                          "responseHeaderModifier": {"set": [{"name": "X-Demo-Route", "value": "header-match"}]}}],
             "backends": [{"url": format!("http://{beta}"), "weight": 1}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/split"}}],
             "backends": [{"url": format!("http://{alpha}"), "weight": 80},
                          {"url": format!("http://{beta}"), "weight": 20}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
             "filters": [{"type": "RequestRedirect",
                          "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "value": "/new"},
                                              "statusCode": 301}}],
             "backends": []},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
             "filters": [{"type": "URLRewrite",
                          "urlRewrite": {"hostname": "api.internal",
                                         "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}},
                         {"type": "RequestHeaderModifier",
                          "requestHeaderModifier": {"add": [{"name": "X-Demo-Rewritten", "value": "yes"}]}}],
             "backends": [{"url": format!("http://{beta}"), "weight": 1}]},
            {"backends": [{"url": format!("http://{alpha}"), "weight": 1}]}
        ]
    });
    // The document is a literal above; decoding it cannot fail unless the literal is edited wrongly, and then
    // `apply` reports it.
    serde_json::from_value(doc).unwrap_or_default()
}

/// A backend that answers every request with a JSON echo of what it received.
async fn start_backend(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("bind a demo backend")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req| async move { Ok::<_, Infallible>(echo(name, req)) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn echo(name: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let body = serde_json::json!({
        "backend": name,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    json: serde_json::Value,
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    data: SocketAddr,
    path: &str,
    header: Option<(&str, &str)>,
) -> anyhow::Result<Answer> {
    let mut req = Request::builder().uri(format!("http://{data}{path}"));
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let resp = client.request(req.body(Empty::new())?).await?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    })
}

/// Sends the demo requests and prints one line per expectation.
async fn check(data: SocketAddr) -> bool {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut all_ok = true;
    let mut report = |ok: bool, what: &str, detail: String| {
        println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
        all_ok &= ok;
    };
    match get(&client, data, "/hello", None).await {
        Ok(a) => report(
            a.status == 200 && a.json["backend"] == "alpha",
            "default route",
            format!("{} from {}", a.status, a.json["backend"]),
        ),
        Err(e) => report(false, "default route", e.to_string()),
    }
    match get(&client, data, "/hello", Some(("X-Demo-Tier", "beta"))).await {
        Ok(a) => report(
            a.status == 200
                && a.json["backend"] == "beta"
                && a.headers.get("x-demo-route").is_some_and(|v| v == "header-match"),
            "header match X-Demo-Tier: beta",
            format!("{} from {}", a.status, a.json["backend"]),
        ),
        Err(e) => report(false, "header match", e.to_string()),
    }
    let mut alpha = 0;
    let mut beta = 0;
    for _ in 0..200 {
        if let Ok(a) = get(&client, data, "/split", None).await {
            match a.json["backend"].as_str() {
                Some("alpha") => alpha += 1,
                Some("beta") => beta += 1,
                _ => {}
            }
        }
    }
    let share = f64::from(alpha) / 200.0;
    report(
        alpha + beta == 200 && (0.65..=0.93).contains(&share),
        "weighted split 80/20",
        format!("alpha {alpha}, beta {beta} of 200"),
    );
    match get(&client, data, "/old/page?x=1", None).await {
        Ok(a) => {
            let location = a
                .headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            report(
                a.status == 301 && location.ends_with("/new/page?x=1"),
                "redirect /old/page",
                format!("{} Location: {location}", a.status),
            );
        }
        Err(e) => report(false, "redirect", e.to_string()),
    }
    match get(&client, data, "/api/items?page=2", None).await {
        Ok(a) => report(
            a.status == 200
                && a.json["backend"] == "beta"
                && a.json["path"] == "/v2/items"
                && a.json["headers"]["host"] == "api.internal"
                && a.json["headers"]["x-demo-rewritten"] == "yes",
            "rewrite /api/items",
            format!(
                "{} from {} as {} (Host {})",
                a.status, a.json["backend"], a.json["path"], a.json["headers"]["host"]
            ),
        ),
        Err(e) => report(false, "rewrite", e.to_string()),
    }
    all_ok
}
