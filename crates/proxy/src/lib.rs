//! tunnelgate-proxy: the data plane of tunnelgate.
//!
//! What this crate does:
//! - serves routed traffic on a plain listener (HTTP/1.1 and h2c prior knowledge) and exposes the same
//!   [`RequestService`] to the tunnel transport;
//! - routes with the `tunnelgate-route` table, loading one `ArcSwap` snapshot per request, and runs every filter,
//!   including the ones that need I/O (RequestMirror);
//! - forwards to backends over pooled HTTP/1.1 keep-alive, h2c, or TLS (rustls) connections, streams bodies and
//!   trailers both ways, tunnels WebSocket / `Upgrade` sessions, and bounds time to response headers;
//! - serves the config API (`PUT`/`GET /config`, `/healthz`, `/readyz`, `/metrics`) with the contract of
//!   `shared/spec/config-api.md`, and drains gracefully.
//!
//! What it does not do: parse the process environment or flags (the `tunnelgate` binary does), speak the
//! Cloudflare tunnel protocol (`tunnelgate-tunnel` does, and calls [`RequestService::serve`]), or validate and
//! compile routing documents (`tunnelgate-route` does). No retries, caching or compression. When enabled, requests
//! are traced and the spans exported over OTLP HTTP/protobuf (`otlp`); there is no gRPC export.

mod access_log;
mod body;
mod coalesce;
mod config_api;
mod dns;
mod drain;
mod forward;
mod framing;
mod header_timeout;
mod metrics;
mod mirror;
mod observe;
mod otlp;
mod pool;
mod server;
mod service;
mod settings;
mod state;
mod tls;
mod upgrade;
mod workers;

pub use body::{BoxError, ProxyBody};
pub use metrics::Metrics;
pub use otlp::{TracerPipeline, TracingError, tracer_pipeline, traces_url};
pub use prometheus_client::registry::Registry;
pub use server::{ProxyHandle, ProxyServer, StartError};
pub use service::{RequestContext, RequestService};
pub use settings::{AccessLogSettings, AddrError, ProxySettings, TracingSettings, parse_listen_addr};
pub use state::{ApplyError, ConfigStatus, ProxyState};
pub use upgrade::ClientUpgrade;
