//! Backend name resolution (routing.md §11, "DNS"). A backend hostname (`svc.ns.svc.cluster.local`) is resolved
//! with the system's resolver configuration (`/etc/resolv.conf` with its search list and `ndots`, and
//! `/etc/hosts`) through hickory-resolver, whose cache keeps each answer for its TTL: a new connection to a busy
//! backend does not wait for DNS, and a changed record is seen once its TTL has run out. IP literals are never
//! looked up. When the system configuration cannot be read, each connection asks the C library instead (logged
//! once).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use hickory_resolver::Resolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Answers kept in the cache: more than the distinct backend hostnames of a large document.
const CACHE_ENTRIES: u64 = 4096;

/// A resolver for backend hostnames.
pub struct Dns {
    resolver: Option<Resolver<TokioRuntimeProvider>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("cached", &self.resolver.is_some())
            .finish()
    }
}

static SYSTEM: OnceLock<Dns> = OnceLock::new();

impl Dns {
    /// The process-wide resolver built from the system configuration (on first use).
    pub fn system() -> &'static Dns {
        SYSTEM.get_or_init(|| {
            let built = Resolver::builder_tokio().and_then(|mut builder| {
                builder.options_mut().cache_size = CACHE_ENTRIES;
                builder.build()
            });
            match built {
                Ok(resolver) => Dns {
                    resolver: Some(resolver),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the system resolver configuration; backend names are \
                        resolved by the C library on every new connection, without caching");
                    Dns { resolver: None }
                }
            }
        })
    }

    /// A resolver asking these name servers (tests).
    #[cfg(test)]
    pub fn with_config(config: hickory_resolver::config::ResolverConfig) -> Result<Dns, String> {
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        builder.options_mut().cache_size = CACHE_ENTRIES;
        let resolver = builder.build().map_err(|e| e.to_string())?;
        Ok(Dns {
            resolver: Some(resolver),
        })
    }

    /// The addresses of `host` (a name, or an IP literal, IPv6 without brackets) with `port`, in the resolver's
    /// order.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Some(addr) = literal(host, port) {
            return Ok(vec![addr]);
        }
        match &self.resolver {
            Some(resolver) => {
                let ips = resolver
                    .lookup_ip(host)
                    .await
                    .map_err(|e| io::Error::other(format!("resolving {host}: {e}")))?;
                Ok(ips.iter().map(|ip| SocketAddr::new(ip, port)).collect())
            }
            None => Ok(tokio::net::lookup_host((host, port)).await?.collect()),
        }
    }
}

/// The addresses of a backend's `host` with `port`: an IP literal as it is, a name through [`Dns::system`]. The
/// system resolver is built at the first name only, so a proxy whose backends are all addresses (the controller's
/// usual output: EndpointSlice or cluster IPs) never loads it, its configuration or its cache.
pub async fn resolve_backend(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    match literal(host, port) {
        Some(addr) => Ok(vec![addr]),
        None => Dns::system().resolve(host, port).await,
    }
}

/// `host` (IPv6 without brackets) as a socket address with `port`, when it is an IP literal.
fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests;
