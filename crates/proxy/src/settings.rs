//! Process settings of the proxy (config-api.md §8). The binary fills them from flags and environment
//! variables; tests build them directly with ephemeral ports.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Everything the proxy needs besides the routing document.
#[derive(Clone)]
pub struct ProxySettings {
    /// Data listener. `None` runs without one (tunnel mode feeds [`crate::RequestService`] directly).
    pub data_addr: Option<SocketAddr>,
    /// Config API listener.
    pub config_addr: SocketAddr,
    /// Bearer token for `/config`. `None` disables authentication.
    pub auth_token: Option<String>,
    /// `PUT /config` body limit in bytes.
    pub max_config_bytes: usize,
    /// Honour `X-Original-Host` (routing.md §2.1).
    pub trust_original_host: bool,
    /// Serve `/metrics`.
    pub metrics_enabled: bool,
    /// Drain window after shutdown starts.
    pub grace_period: Duration,
    /// Upgrade path: backend connect timeout.
    pub ws_dial_timeout: Duration,
    /// Upgrade path: time to the backend's response head.
    pub ws_handshake_timeout: Duration,
    /// Larger request bodies are not mirrored.
    pub mirror_max_body_bytes: usize,
    /// Access log switches.
    pub access_log: AccessLogSettings,
    /// Data port: time allowed for a request head, counted from accept (before the first request) or from the
    /// end of the previous response (keep-alive). Slow-loris clients and silent connections are cut here.
    pub header_read_timeout: Duration,
    /// Data port: connections served at once. At the cap the listener stops accepting and further clients wait
    /// in the kernel's listen backlog. `None` = no cap.
    pub max_connections: Option<usize>,
    /// Data port: worker threads, each with a single-threaded runtime, that serve the accepted connections
    /// (`crate::workers`). 0 serves them on the runtime that started the proxy. Default: one per available core.
    pub data_workers: usize,
    /// OTLP tracing (routing.md §13). `None` = off: the request path does not look at trace headers.
    pub tracing: Option<TracingSettings>,
}

/// OTLP tracing switches (config-api.md §8).
#[derive(Debug, Clone)]
pub struct TracingSettings {
    /// `PROXY_TRACING_ENDPOINT`; `None` or empty = the standard `OTEL_EXPORTER_OTLP_*` variables.
    pub endpoint: Option<String>,
    /// In [0,1]: share of new traces (requests without a valid `traceparent`) that are sampled.
    pub sample_rate: f64,
    /// How often the batch processor exports. `None` = the SDK's default (5 s, or `OTEL_BSP_SCHEDULE_DELAY`).
    pub export_interval: Option<Duration>,
}

/// Access-log switches (config-api.md §8, routing.md §13).
#[derive(Debug, Clone, Copy)]
pub struct AccessLogSettings {
    pub enabled: bool,
    /// In [0,1]; 5xx responses are always logged.
    pub sampling_rate: f64,
    pub strip_query: bool,
}

/// A listen address that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid listen address {0:?}: expected \":PORT\", \"HOST:PORT\" or \"[V6]:PORT\"")]
pub struct AddrError(pub String);

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            data_addr: Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080)),
            config_addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8081),
            auth_token: None,
            max_config_bytes: 16 * 1024 * 1024,
            trust_original_host: false,
            metrics_enabled: true,
            grace_period: Duration::from_secs(30),
            ws_dial_timeout: Duration::from_secs(30),
            ws_handshake_timeout: Duration::from_secs(30),
            mirror_max_body_bytes: 1024 * 1024,
            access_log: AccessLogSettings::default(),
            header_read_timeout: Duration::from_secs(60),
            max_connections: None,
            data_workers: std::thread::available_parallelism().map_or(1, usize::from),
            tracing: None,
        }
    }
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            sample_rate: 1.0,
            export_interval: None,
        }
    }
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            sampling_rate: 1.0,
            strip_query: false,
        }
    }
}

impl std::fmt::Debug for ProxySettings {
    // Hand-written so that the token can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySettings")
            .field("data_addr", &self.data_addr)
            .field("config_addr", &self.config_addr)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<redacted>"))
            .field("max_config_bytes", &self.max_config_bytes)
            .field("trust_original_host", &self.trust_original_host)
            .field("metrics_enabled", &self.metrics_enabled)
            .field("grace_period", &self.grace_period)
            .field("ws_dial_timeout", &self.ws_dial_timeout)
            .field("ws_handshake_timeout", &self.ws_handshake_timeout)
            .field("mirror_max_body_bytes", &self.mirror_max_body_bytes)
            .field("access_log", &self.access_log)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("tracing", &self.tracing)
            .finish()
    }
}

impl ProxySettings {
    /// Settings for tests and embedding: both listeners on `127.0.0.1` with ephemeral ports.
    pub fn loopback() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            data_addr: Some(any),
            config_addr: any,
            ..Self::default()
        }
    }
}

/// Parses `:PORT` (all interfaces, IPv4 and IPv6), `HOST:PORT` with an IP host, `localhost:PORT` or `[V6]:PORT`.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, AddrError> {
    let err = || AddrError(text.to_owned());
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| err())?;
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| err())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_forms() {
        assert_eq!(parse_listen_addr(":8080").unwrap(), "[::]:8080".parse().unwrap());
        assert_eq!(
            parse_listen_addr("127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert_eq!(parse_listen_addr("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            parse_listen_addr("localhost:80").unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        for bad in ["", "8080", ":", ":x", ":70000", "host:80", "1.2.3.4"] {
            assert!(parse_listen_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let s = ProxySettings {
            auth_token: Some("s3cret".into()),
            ..ProxySettings::default()
        };
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
