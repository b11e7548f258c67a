//! Tunnel metrics (config-api.md §9): live connections per protocol, registrations by result,
//! reconnects by reason, and requests per transport.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Cheap to clone; every clone updates the same series.
#[derive(Clone, Default)]
pub struct TunnelMetrics {
    connections: Family<Labels, Gauge>,
    registrations: Family<Labels, Counter>,
    reconnects: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
}

impl std::fmt::Debug for TunnelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunnelMetrics")
    }
}

impl TunnelMetrics {
    /// Creates the metrics and registers them (prometheus-client adds `_total` to counters).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "tunnelgate_tunnel_connections",
            "Tunnel connections currently registered with the edge",
            m.connections.clone(),
        );
        registry.register(
            "tunnelgate_tunnel_registrations",
            "Tunnel registration attempts by result",
            m.registrations.clone(),
        );
        registry.register(
            "tunnelgate_tunnel_reconnects",
            "Tunnel reconnects by reason",
            m.reconnects.clone(),
        );
        registry.register(
            "tunnelgate_tunnel_requests",
            "Requests received over tunnel streams, by transport",
            m.requests.clone(),
        );
        m
    }

    pub(crate) fn connection_up(&self, protocol: &'static str) {
        self.connections
            .get_or_create(&vec![("protocol", protocol)])
            .inc();
    }

    pub(crate) fn connection_down(&self, protocol: &'static str) {
        self.connections
            .get_or_create(&vec![("protocol", protocol)])
            .dec();
    }

    pub(crate) fn registration(&self, result: &'static str) {
        self.registrations.get_or_create(&vec![("result", result)]).inc();
    }

    pub(crate) fn reconnect(&self, reason: &'static str) {
        self.reconnects.get_or_create(&vec![("reason", reason)]).inc();
    }

    pub(crate) fn request(&self, transport: &'static str) {
        self.requests.get_or_create(&vec![("transport", transport)]).inc();
    }

    /// Current number of registered connections for `protocol` (for tests and status output).
    pub fn connections(&self, protocol: &'static str) -> i64 {
        self.connections
            .get_or_create(&vec![("protocol", protocol)])
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_use_the_documented_names() {
        let mut reg = Registry::default();
        let m = TunnelMetrics::register(&mut reg);
        m.connection_up("quic");
        m.registration("ok");
        m.reconnect("idle_timeout");
        m.request("http2");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains(r#"tunnelgate_tunnel_connections{protocol="quic"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"tunnelgate_tunnel_registrations_total{result="ok"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"tunnelgate_tunnel_reconnects_total{reason="idle_timeout"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"tunnelgate_tunnel_requests_total{transport="http2"} 1"#),
            "{out}"
        );
        m.connection_down("quic");
        assert_eq!(m.connections("quic"), 0);
    }
}
