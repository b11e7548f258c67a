//! Edge discovery and address assignment (tunnel.md §2).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use rand::Rng as _;

/// A discovery failure. Retried under backoff by the caller.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("invalid edge address {0:?}: expected host:port")]
    BadAddress(String),
    #[error("resolving {0}: {1}")]
    Resolve(String, String),
    #[error("SRV answer for {0} has fewer than 2 targets")]
    TooFewTargets(String),
    #[error("no edge addresses")]
    Empty,
    #[error("{first}; then over DNS-over-TLS to {server}: {second}")]
    Fallback {
        first: Box<DiscoveryError>,
        /// `addr (server name)`.
        server: String,
        second: String,
    },
}

/// The SRV service name for an optional region (`e` in the token).
pub fn srv_name(region: Option<&str>) -> String {
    match region {
        Some(r) => format!("_{r}-v2-origintunneld._tcp.argotunnel.com."),
        None => "_v2-origintunneld._tcp.argotunnel.com.".to_string(),
    }
}

/// Parses `PROXY_TUNNEL_EDGE` (comma-separated `host:port`), without resolving names.
pub fn parse_edge_list(list: &str) -> Result<Vec<String>, DiscoveryError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok = item
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(DiscoveryError::BadAddress(item.to_string()));
        }
        out.push(item.to_string());
    }
    if out.is_empty() {
        return Err(DiscoveryError::Empty);
    }
    Ok(out)
}

/// Resolves an override list: entry i goes to region i % 2.
pub async fn resolve_edge_list(list: &[String]) -> Result<[Vec<SocketAddr>; 2], DiscoveryError> {
    let mut regions: [Vec<SocketAddr>; 2] = [Vec::new(), Vec::new()];
    for (i, item) in list.iter().enumerate() {
        let addrs = tokio::net::lookup_host(item.as_str())
            .await
            .map_err(|e| DiscoveryError::Resolve(item.clone(), e.to_string()))?;
        // Used as-is: the first resolved address of each entry.
        if let Some(a) = addrs.into_iter().next() {
            regions[i % 2].push(a);
        }
    }
    if regions.iter().all(Vec::is_empty) {
        return Err(DiscoveryError::Empty);
    }
    Ok(regions)
}

/// How SRV discovery resolves names (tunnel.md §2): a first resolver, then, when it fails, the same queries over
/// DNS-over-TLS.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// `None`: the system resolver (`/etc/resolv.conf`); otherwise these name servers.
    pub primary: Option<ResolverConfig>,
    /// Asked when the first resolver fails; `None` turns the fallback off.
    pub fallback: Option<DotServer>,
}

impl Default for Discovery {
    /// The system resolver, then Cloudflare's DNS-over-TLS service.
    fn default() -> Self {
        Self {
            primary: None,
            fallback: Some(DotServer::default()),
        }
    }
}

/// A DNS-over-TLS server for the discovery fallback.
#[derive(Debug, Clone)]
pub struct DotServer {
    pub addr: SocketAddr,
    /// The name its certificate must carry (sent as SNI).
    pub server_name: String,
    /// `None`: the built-in web PKI roots.
    pub ca_pem: Option<String>,
    /// Bounds the whole fallback: the SRV query and the lookups of its targets.
    pub timeout: Duration,
}

impl Default for DotServer {
    /// `1.1.1.1:853`, `cloudflare-dns.com`, 15 s.
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([1, 1, 1, 1], 853)),
            server_name: "cloudflare-dns.com".to_owned(),
            ca_pem: None,
            timeout: Duration::from_secs(15),
        }
    }
}

impl DotServer {
    fn resolver(&self) -> Result<Resolver<TokioRuntimeProvider>, String> {
        let mut connection = ConnectionConfig::tls(Arc::from(self.server_name.as_str()));
        connection.port = self.addr.port();
        let mut server = NameServerConfig::tls(self.addr.ip(), Arc::from(self.server_name.as_str()));
        server.connections = vec![connection];
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![server]);
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_tls_config(self.tls_config()?);
        builder.options_mut().timeout = self.timeout;
        builder.build().map_err(|e| e.to_string())
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_pem {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(pem) => {
                for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                    let cert = cert.map_err(|e| format!("DNS-over-TLS CA: {e}"))?;
                    roots.add(cert).map_err(|e| format!("DNS-over-TLS CA: {e}"))?;
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// Resolves the edge by DNS SRV: target 0 is region 1, target 1 region 2, each with every A/AAAA record. The
/// system resolver first; if that fails, Cloudflare's DNS-over-TLS service.
pub async fn discover_srv(region: Option<&str>) -> Result<[Vec<SocketAddr>; 2], DiscoveryError> {
    discover_srv_with(region, &Discovery::default()).await
}

/// [`discover_srv`] with the given resolvers. When the first fails (an error, or fewer than 2 targets), the SRV
/// query and the target lookups are made again over DNS-over-TLS; the error then names both failures.
pub async fn discover_srv_with(
    region: Option<&str>,
    discovery: &Discovery,
) -> Result<[Vec<SocketAddr>; 2], DiscoveryError> {
    let name = srv_name(region);
    let primary = match &discovery.primary {
        None => Resolver::builder_tokio().and_then(|b| b.build()),
        Some(config) => {
            Resolver::builder_with_config(config.clone(), TokioRuntimeProvider::default()).build()
        }
    };
    let first = match primary {
        Ok(resolver) => srv_regions(&resolver, &name).await,
        Err(e) => Err(DiscoveryError::Resolve(name.clone(), e.to_string())),
    };
    let (failure, dot) = match (first, &discovery.fallback) {
        (Ok(regions), _) => return Ok(regions),
        (Err(e), None) => return Err(e),
        (Err(e), Some(dot)) => (e, dot),
    };
    tracing::warn!(error = %failure, server = %dot.addr, "edge discovery: the system resolver failed; asking over DNS-over-TLS");
    let second = match dot.resolver() {
        Err(e) => e,
        Ok(resolver) => match tokio::time::timeout(dot.timeout, srv_regions(&resolver, &name)).await {
            Ok(Ok(regions)) => return Ok(regions),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", dot.timeout),
        },
    };
    Err(DiscoveryError::Fallback {
        first: Box::new(failure),
        server: format!("{} ({})", dot.addr, dot.server_name),
        second,
    })
}

/// The SRV query for `name` and the address lookups of its first two targets, all through `resolver`.
async fn srv_regions(
    resolver: &Resolver<TokioRuntimeProvider>,
    name: &str,
) -> Result<[Vec<SocketAddr>; 2], DiscoveryError> {
    use hickory_resolver::proto::rr::RData;
    let lookup = resolver
        .srv_lookup(name)
        .await
        .map_err(|e| DiscoveryError::Resolve(name.to_owned(), e.to_string()))?;
    let mut targets = Vec::new();
    for r in lookup.answers() {
        if let RData::SRV(srv) = &r.data {
            targets.push((srv.target.to_string(), srv.port));
        }
    }
    if targets.len() < 2 {
        return Err(DiscoveryError::TooFewTargets(name.to_owned()));
    }
    let mut regions: [Vec<SocketAddr>; 2] = [Vec::new(), Vec::new()];
    for (i, (target, port)) in targets.iter().take(2).enumerate() {
        let ips = resolver
            .lookup_ip(target.as_str())
            .await
            .map_err(|e| DiscoveryError::Resolve(target.clone(), e.to_string()))?;
        regions[i].extend(ips.iter().map(|ip| SocketAddr::new(ip, *port)));
    }
    Ok(regions)
}

/// Assigns each connection index a distinct edge address, spreading over both regions.
#[derive(Debug, Default)]
pub struct AddrPool {
    regions: [Vec<SocketAddr>; 2],
    in_use: HashMap<u8, SocketAddr>,
}

impl AddrPool {
    pub fn new(regions: [Vec<SocketAddr>; 2]) -> Self {
        Self {
            regions,
            in_use: HashMap::new(),
        }
    }

    /// Number of distinct addresses (the HA cap).
    pub fn len(&self) -> usize {
        self.regions[0].len() + self.regions[1].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address of `conn`, assigning one if it has none.
    pub fn get(&mut self, conn: u8) -> Option<SocketAddr> {
        if let Some(a) = self.in_use.get(&conn) {
            return Some(*a);
        }
        let a = self.pick_fresh(None)?;
        self.in_use.insert(conn, a);
        Some(a)
    }

    /// Moves `conn` to a different address (after `EDUPCONN`, an idle timeout or a dial error).
    pub fn rotate(&mut self, conn: u8) -> Option<SocketAddr> {
        let old = self.in_use.remove(&conn);
        let a = self.pick_fresh(old).or(old)?;
        self.in_use.insert(conn, a);
        Some(a)
    }

    fn pick_fresh(&self, avoid: Option<SocketAddr>) -> Option<SocketAddr> {
        let unused = |r: &Vec<SocketAddr>| -> Vec<SocketAddr> {
            r.iter()
                .filter(|a| !self.in_use.values().any(|u| u == *a) && Some(**a) != avoid)
                .copied()
                .collect()
        };
        let (u0, u1) = (unused(&self.regions[0]), unused(&self.regions[1]));
        let mut rng = rand::rng();
        let from = match u0.len().cmp(&u1.len()) {
            std::cmp::Ordering::Greater => &u0,
            std::cmp::Ordering::Less => &u1,
            std::cmp::Ordering::Equal if rng.random_bool(0.5) => &u0,
            std::cmp::Ordering::Equal => &u1,
        };
        if let Some(a) = from.first() {
            return Some(*a);
        }
        // Every address is taken: share one rather than not connecting.
        self.regions
            .iter()
            .flatten()
            .find(|a| Some(**a) != avoid)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn override_list_is_validated() {
        assert_eq!(
            parse_edge_list(" 127.0.0.1:7844, localhost:7845 ").unwrap().len(),
            2
        );
        assert!(matches!(
            parse_edge_list("127.0.0.1"),
            Err(DiscoveryError::BadAddress(_))
        ));
        assert!(matches!(parse_edge_list(" , "), Err(DiscoveryError::Empty)));
    }

    #[tokio::test]
    async fn override_list_alternates_regions() {
        let list = parse_edge_list("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3").unwrap();
        let r = resolve_edge_list(&list).await.unwrap();
        assert_eq!(r[0], vec![addr(1), addr(3)]);
        assert_eq!(r[1], vec![addr(2)]);
    }

    #[test]
    fn connections_get_distinct_addresses_across_regions_and_rotate() {
        let mut pool = AddrPool::new([vec![addr(1), addr(3)], vec![addr(2), addr(4)]]);
        let assigned: Vec<_> = (0..4).map(|c| pool.get(c).unwrap()).collect();
        let mut sorted = assigned.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        // Keeps its address across calls.
        assert_eq!(pool.get(0), Some(assigned[0]));
        let mut small = AddrPool::new([vec![addr(1)], vec![addr(2)]]);
        let first = small.get(0).unwrap();
        assert_ne!(small.rotate(0).unwrap(), first);
    }

    #[test]
    fn srv_name_includes_the_region() {
        assert_eq!(srv_name(None), "_v2-origintunneld._tcp.argotunnel.com.");
        assert_eq!(srv_name(Some("us")), "_us-v2-origintunneld._tcp.argotunnel.com.");
    }
}
