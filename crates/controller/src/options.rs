//! Settings of one controller process, independent of how they were given (flags, env, tests).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Our `GatewayClass.spec.controllerName` unless told otherwise.
pub const DEFAULT_CONTROLLER_NAME: &str = "tunnelgate.dev/gateway-controller";
/// Base URL of the Cloudflare API v4 (controller.md §9).
pub const DEFAULT_CLOUDFLARE_API_URL: &str = "https://api.cloudflare.com/client/v4";
/// Field manager of every status write (server-side apply).
pub const FIELD_MANAGER: &str = "tunnelgate-controller";

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub controller_name: String,
    pub cluster_domain: String,
    /// How Service backendRefs become backend URLs (`--backend-resolution`).
    pub backend_resolution: tunnelgate_gateway::BackendResolution,
    /// `None` disables the metrics listener.
    pub metrics_addr: Option<SocketAddr>,
    /// `None` disables the health listener.
    pub health_addr: Option<SocketAddr>,
    /// `None` means this replica is always the leader (single replica, `--leader-elect=false`).
    pub leader_election: Option<LeaderElectionOptions>,
    pub proxy_targets: ProxyTargets,
    pub push_timeout: Duration,
    /// How long a ready proxy may fail to acknowledge the current document before routes and Gateways show
    /// `tunnelgate.dev/ConfigPushed=False/PushFailing` (controller.md §6.4: 60 s).
    pub push_failure_grace: Duration,
    /// Proxy bearer token source; `None` pushes without `Authorization`.
    pub auth_token: Option<AuthTokenOptions>,
    /// The tunnel token Secret, read for the Gateway address `<tunnel-id>.cfargotunnel.com` (tunnel mode).
    pub tunnel_token: Option<TunnelTokenOptions>,
    /// The proxy Deployment whose pod template gets `tunnelgate.dev/auth-token-hash` (controller.md §8).
    pub proxy_deployment: Option<ObjectName>,
    /// The proxies run the tunnel over explicit QUIC (`--tunnel-protocol=quic`): GRPCRoutes are not accepted
    /// (controller.md §6.4; see `TranslateOptions::reject_grpc_routes`).
    pub reject_grpc_routes: bool,
    /// The Cloudflare API sync (controller.md §9); `None` when off (the default).
    pub cloudflare: Option<CloudflareOptions>,
    /// Quiet time a burst of changes must leave before a sync runs.
    pub debounce: Duration,
    /// Upper bound on how long a continuous stream of changes can hold a sync back.
    pub debounce_max_delay: Duration,
}

impl ControllerOptions {
    /// Options with the documented defaults for the given proxy target source.
    pub fn new(proxy_targets: ProxyTargets) -> Self {
        Self {
            controller_name: DEFAULT_CONTROLLER_NAME.to_owned(),
            cluster_domain: "cluster.local".to_owned(),
            backend_resolution: tunnelgate_gateway::BackendResolution::Endpoints,
            metrics_addr: None,
            health_addr: None,
            leader_election: None,
            proxy_targets,
            push_timeout: Duration::from_secs(10),
            push_failure_grace: Duration::from_secs(60),
            auth_token: None,
            tunnel_token: None,
            proxy_deployment: None,
            reject_grpc_routes: false,
            cloudflare: None,
            debounce: Duration::from_millis(50),
            debounce_max_delay: Duration::from_millis(250),
        }
    }
}

/// Lease-based leader election (controller.md §10).
#[derive(Debug, Clone)]
pub struct LeaderElectionOptions {
    pub lease: ObjectName,
    /// This replica's identity in `holderIdentity`; the pod name in a cluster.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElectionOptions {
    /// The spec's timings: lease 15 s, renew deadline 10 s, retry 2 s.
    pub fn new(lease: ObjectName, identity: String) -> Self {
        Self {
            lease,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Where the proxy replicas are found.
#[derive(Debug, Clone)]
pub enum ProxyTargets {
    /// Every endpoint (ready or not) of the EndpointSlices of this headless Service.
    Service { service: ObjectName, port: ConfigPort },
    /// `--proxy-endpoints`: fixed URLs whose hosts are resolved on every sync.
    Urls(Vec<ProxyUrl>),
}

/// Which EndpointSlice port carries the proxy config API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigPort {
    /// The slice port with this name (`config-api`).
    Name(String),
    /// This port number, whatever the slice ports say.
    Number(u16),
}

/// The proxy bearer token Secret (controller.md §8).
#[derive(Debug, Clone)]
pub struct AuthTokenOptions {
    pub secret: ObjectName,
    pub key: String,
    /// Create the Secret with a random token when it does not exist.
    pub generate: bool,
}

/// The tunnel token Secret (controller.md §8).
#[derive(Debug, Clone)]
pub struct TunnelTokenOptions {
    pub secret: ObjectName,
    pub key: String,
}

/// The Cloudflare API sync (controller.md §9): where the API is, which tunnel, which token, and how often.
#[derive(Debug, Clone)]
pub struct CloudflareOptions {
    /// Base URL of the API: `https://api.cloudflare.com/client/v4`, or a loopback `http://` fake in tests.
    pub api_url: String,
    /// The Secret holding an API token with "Cloudflare Tunnel: Edit".
    pub api_token_secret: ObjectName,
    pub api_token_key: String,
    /// `--cloudflare-account-id`; when unset the tunnel token's account tag is used.
    pub account_id: Option<String>,
    /// `--cloudflare-tunnel-id`; when unset the tunnel token's tunnel id is used.
    pub tunnel_id: Option<String>,
    /// Wait after a routing change before calling the API (2 s), so a burst of changes makes one call.
    pub debounce: Duration,
    /// First wait after a 429, 5xx or transport failure (5 s); it doubles on each further failure.
    pub backoff_base: Duration,
    /// Longest wait between retries (5 min); also how long a refused call (401, 403, 404, ...) waits before it is
    /// tried again without a change.
    pub backoff_max: Duration,
    /// Bound on one API call, connection and body included.
    pub call_timeout: Duration,
}

impl CloudflareOptions {
    /// The real API and the spec's timings.
    pub fn new(api_token_secret: ObjectName, api_token_key: impl Into<String>) -> Self {
        Self {
            api_url: DEFAULT_CLOUDFLARE_API_URL.to_owned(),
            api_token_secret,
            api_token_key: api_token_key.into(),
            account_id: None,
            tunnel_id: None,
            debounce: Duration::from_secs(2),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName {
    pub namespace: String,
    pub name: String,
}

/// A `--proxy-endpoints` entry: `http://host:port[/config]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub host: String,
    pub port: u16,
}

/// Malformed option values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("expected NAMESPACE/NAME, got {0:?}")]
    ObjectName(String),
    #[error("invalid proxy endpoint URL {0:?}: expected http://HOST:PORT[/config]")]
    ProxyUrl(String),
}

impl ObjectName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl FromStr for ObjectName {
    type Err = OptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OptionError::ObjectName(s.to_owned());
        let (namespace, name) = s.split_once('/').ok_or_else(bad)?;
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 253
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !valid(namespace) || !valid(name) {
            return Err(bad());
        }
        Ok(Self::new(namespace, name))
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for ProxyUrl {
    type Err = OptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OptionError::ProxyUrl(s.to_owned());
        let rest = s.strip_prefix("http://").ok_or_else(bad)?;
        let authority = match rest.split_once('/') {
            Some((authority, "config" | "")) => authority,
            Some(_) => return Err(bad()),
            None => rest,
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, tail) = v6.split_once(']').ok_or_else(bad)?;
            (host, tail.strip_prefix(':').ok_or_else(bad)?)
        } else {
            authority.rsplit_once(':').ok_or_else(bad)?
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains(['@', ' ']) {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_name_needs_both_parts() {
        assert_eq!("ns/name".parse(), Ok(ObjectName::new("ns", "name")));
        assert!("name".parse::<ObjectName>().is_err());
        assert!("/name".parse::<ObjectName>().is_err());
        assert!("ns/".parse::<ObjectName>().is_err());
        assert!("ns/a/b".parse::<ObjectName>().is_err());
        assert!("NS/name".parse::<ObjectName>().is_err());
    }

    #[test]
    fn proxy_url_forms() {
        assert_eq!(
            "http://proxy.ns.svc:8081/config".parse(),
            Ok(ProxyUrl {
                host: "proxy.ns.svc".into(),
                port: 8081
            })
        );
        assert_eq!(
            "http://[::1]:9000".parse(),
            Ok(ProxyUrl {
                host: "::1".into(),
                port: 9000
            })
        );
        assert!("https://x:1".parse::<ProxyUrl>().is_err());
        assert!("http://x".parse::<ProxyUrl>().is_err());
        assert!("http://x:0".parse::<ProxyUrl>().is_err());
        assert!("http://x:1/other".parse::<ProxyUrl>().is_err());
    }
}
