//! Backends and upstream targets (routing.md §6, §7.1, §11).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::StatusCode;
use http::uri::{Authority, Uri};

use crate::config;
use crate::filter::Filter;

/// One weighted backend of a rule.
#[derive(Debug, Clone)]
pub struct Backend {
    pub upstream: Arc<Upstream>,
    pub weight: u32,
    /// Backend-level filters; they run only when this backend is chosen.
    pub filters: Vec<Filter>,
    /// Declared WebSocket-capable (metrics only; upgrades do not require it).
    pub websocket: bool,
    /// When set, requests that choose this backend get this status instead of being forwarded.
    pub unavailable_status: Option<StatusCode>,
}

/// Where to send requests: everything a connection pool needs. `Eq + Hash`: the proxy keys its pools by it.
#[derive(Debug, Clone, Eq)]
pub struct Upstream {
    /// `Https` when the URL scheme is `https` or TLS settings are present.
    pub scheme: UpstreamScheme,
    /// `host:port` with the default port of the URL scheme made explicit; IPv6 literals in brackets.
    pub authority: Authority,
    /// The host without port, for DNS and the default SNI. IPv6 literals without brackets (`::1`), the form
    /// socket-address and server-name parsers expect.
    pub host: String,
    pub port: u16,
    /// Non-root path of the backend URL without a trailing `/` (ExternalBackend-style bases).
    pub base_path: Option<String>,
    /// Query of the backend URL, without `?`; its parameters are added when the request lacks them.
    pub base_query: Option<String>,
    pub protocol: UpstreamProtocol,
    pub tls: Option<Arc<config::BackendTls>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamScheme {
    Http,
    Https,
}

/// `H2c` with TLS means HTTP/2 over TLS (ALPN `h2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http1,
    H2c,
}

/// `Authority` hashes byte by byte (it compares case-insensitively); `host` and `port` determine it and are
/// compared exactly by `Eq`, so hashing them instead is consistent with `Eq` and much cheaper.
impl Hash for Upstream {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.scheme.hash(state);
        self.host.hash(state);
        self.port.hash(state);
        self.base_path.hash(state);
        self.base_query.hash(state);
        self.protocol.hash(state);
        self.tls.hash(state);
    }
}

/// Field by field, after a check of the address: the proxy looks up the pool of every request's upstream with
/// the table's own object, which the pool map holds as its key, and comparing the fields (the authority case
/// insensitively, the TLS settings in full) would cost more than the rest of the lookup.
impl PartialEq for Upstream {
    fn eq(&self, other: &Self) -> bool {
        if std::ptr::eq(self, other) {
            return true;
        }
        // Destructured, so that a new field cannot be left out of the comparison.
        let Upstream {
            scheme,
            authority,
            host,
            port,
            base_path,
            base_query,
            protocol,
            tls,
        } = self;
        *scheme == other.scheme
            && *authority == other.authority
            && *host == other.host
            && *port == other.port
            && *base_path == other.base_path
            && *base_query == other.base_query
            && *protocol == other.protocol
            && *tls == other.tls
    }
}

impl Upstream {
    /// Parses an absolute `http`/`https` URL with a host, a port that is absent or 1..65535, no userinfo and no
    /// fragment. `None` otherwise.
    pub(crate) fn parse(
        url: &str,
        protocol: UpstreamProtocol,
        tls: Option<Arc<config::BackendTls>>,
    ) -> Option<Upstream> {
        if url.contains('#') || url.bytes().any(|b| b.is_ascii_whitespace()) {
            return None;
        }
        let uri: Uri = url.parse().ok()?;
        let url_scheme = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("http") => UpstreamScheme::Http,
            s if s.eq_ignore_ascii_case("https") => UpstreamScheme::Https,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let default_port = match url_scheme {
            UpstreamScheme::Http => 80,
            UpstreamScheme::Https => 443,
        };
        // `Authority::port` hides a port that does not fit in u16, so read the text after the host.
        let port = match authority.as_str().get(authority.host().len()..) {
            Some("") => default_port,
            Some(text) => match text.strip_prefix(':').map(str::parse::<u16>) {
                Some(Ok(n)) if n != 0 => n,
                _ => return None,
            },
            None => return None,
        };
        let bracketed = authority.host();
        if bracketed.is_empty() {
            return None;
        }
        let host = bracketed
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(bracketed)
            .to_ascii_lowercase();
        let explicit = authority.as_str().len() > bracketed.len();
        let authority: Authority = if explicit && !authority.as_str().bytes().any(|b| b.is_ascii_uppercase())
        {
            authority.clone()
        } else {
            format!("{}:{port}", bracketed.to_ascii_lowercase())
                .parse()
                .ok()?
        };
        let path = uri.path().trim_end_matches('/');
        let base_path = (!path.is_empty()).then(|| path.to_owned());
        let base_query = uri.query().filter(|q| !q.is_empty()).map(str::to_owned);
        let scheme = if tls.is_some() {
            UpstreamScheme::Https
        } else {
            url_scheme
        };
        Some(Upstream {
            scheme,
            authority,
            host,
            port,
            base_path,
            base_query,
            protocol,
            tls,
        })
    }

    /// Stand-in target of a backend whose `unavailableStatus` is set and whose `url` is not a URL (the Go
    /// controller leaves an internal sentinel there). Such a backend is never dialled, and
    /// [`crate::RouteTable::upstreams`] does not list it. `.invalid` never resolves (RFC 6761).
    pub(crate) fn unreachable() -> Upstream {
        Upstream {
            scheme: UpstreamScheme::Http,
            authority: Authority::from_static("unavailable.invalid:80"),
            host: "unavailable.invalid".to_owned(),
            port: 80,
            base_path: None,
            base_query: None,
            protocol: UpstreamProtocol::Http1,
            tls: None,
        }
    }
}

/// Cumulative weights of a rule's backends, for weighted choice (routing.md §6). Only rules with more than
/// [`LINEAR_CHOICE_MAX`] backends keep one ([`WeightTable::for_backends`]); the others choose with
/// [`choose_linear`] over the backends' own weights, which saves an allocation per rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct WeightTable {
    /// `cumulative[i]` = sum of weights of backends `0..=i`.
    cumulative: Vec<u64>,
}

/// Above this many backends the choice uses binary search.
const LINEAR_CHOICE_MAX: usize = 8;

/// Weighted choice by a linear scan: the first backend whose running weight sum exceeds the draw. A draw outside
/// `[0,total)` is reduced modulo `total` rather than trusted.
pub(crate) fn choose_linear(
    weights: impl Iterator<Item = u32> + Clone,
    draw: impl FnOnce(u64) -> u64,
) -> Option<usize> {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 {
        return None;
    }
    let x = draw(total) % total;
    let mut sum = 0u64;
    weights.into_iter().position(|w| {
        sum += u64::from(w);
        sum > x
    })
}

impl WeightTable {
    /// The table a rule with these backends keeps: empty (choose with [`choose_linear`]) up to
    /// [`LINEAR_CHOICE_MAX`] backends.
    pub(crate) fn for_backends(backends: &[Backend]) -> WeightTable {
        if backends.len() <= LINEAR_CHOICE_MAX {
            WeightTable::default()
        } else {
            WeightTable::new(backends.iter().map(|b| b.weight))
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }

    pub(crate) fn new(weights: impl IntoIterator<Item = u32>) -> WeightTable {
        let mut total = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += u64::from(w);
                total
            })
            .collect();
        WeightTable { cumulative }
    }

    pub(crate) fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The first backend whose cumulative weight exceeds the draw. A draw outside `[0,total)` is reduced modulo
    /// `total` rather than trusted.
    pub(crate) fn choose(&self, draw: impl FnOnce(u64) -> u64) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let x = draw(total) % total;
        if self.cumulative.len() <= LINEAR_CHOICE_MAX {
            self.cumulative.iter().position(|&c| c > x)
        } else {
            Some(self.cumulative.partition_point(|&c| c <= x))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Option<Upstream> {
        Upstream::parse(url, UpstreamProtocol::Http1, None)
    }

    #[test]
    fn backend_url_default_port_is_made_explicit() {
        let up = parse("http://API.shop.svc:8080").unwrap();
        assert_eq!(up.authority.as_str(), "api.shop.svc:8080");
        assert_eq!((up.host.as_str(), up.port), ("api.shop.svc", 8080));
        assert_eq!(up.scheme, UpstreamScheme::Http);
        let up = parse("https://assets.web.svc").unwrap();
        assert_eq!(up.authority.as_str(), "assets.web.svc:443");
        assert_eq!(up.scheme, UpstreamScheme::Https);
        let up = parse("http://[::1]/").unwrap();
        assert_eq!(up.authority.as_str(), "[::1]:80");
        assert_eq!(up.host, "::1");
        assert_eq!(up.base_path, None);
    }

    #[test]
    fn upstreams_are_equal_by_value_whatever_the_object() {
        let a = parse("http://API.shop.svc:8080/v1").unwrap();
        assert_eq!(a, a);
        assert_eq!(a, parse("http://api.shop.svc:8080/v1").unwrap());
        for other in [
            "https://api.shop.svc:8080/v1",
            "http://api.shop.svc:8081/v1",
            "http://web.shop.svc:8080/v1",
            "http://api.shop.svc:8080/v2",
            "http://api.shop.svc:8080/v1?k=v",
        ] {
            assert_ne!(a, parse(other).unwrap(), "{other}");
        }
        assert_ne!(
            a,
            Upstream::parse("http://api.shop.svc:8080/v1", UpstreamProtocol::H2c, None).unwrap()
        );
        let tls = Arc::new(config::BackendTls::default());
        assert_ne!(
            a,
            Upstream::parse("http://api.shop.svc:8080/v1", UpstreamProtocol::Http1, Some(tls)).unwrap()
        );
    }

    #[test]
    fn backend_url_base_path_and_query_are_kept() {
        let up = parse("http://ext.example.com/base/v1/?k=v").unwrap();
        assert_eq!(up.base_path.as_deref(), Some("/base/v1"));
        assert_eq!(up.base_query.as_deref(), Some("k=v"));
    }

    #[test]
    fn backend_url_tls_settings_imply_https() {
        let tls = Arc::new(config::BackendTls::default());
        let up = Upstream::parse("http://a:8443", UpstreamProtocol::H2c, Some(tls)).unwrap();
        assert_eq!(up.scheme, UpstreamScheme::Https);
        assert_eq!(up.port, 8443);
    }

    #[test]
    fn backend_url_rejects_userinfo_fragment_bad_port_and_other_schemes() {
        for bad in [
            "",
            "api:8080",
            "/path",
            "ftp://a",
            "http://user@a",
            "http://a/#x",
            "http://a:0",
            "http://a:65536",
            "http://a:",
            "http:///x",
            "http://a b",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn weighted_choice_never_picks_weight_zero() {
        let table = WeightTable::new([0, 3, 0, 1]);
        let picks: Vec<_> = (0..4).map(|x| table.choose(|_| x).unwrap()).collect();
        assert_eq!(picks, [1, 1, 1, 3]);
    }

    #[test]
    fn linear_choice_agrees_with_the_cumulative_table() {
        for weights in [
            &[0u32, 3, 0, 1][..],
            &[5],
            &[0, 0, 7],
            &[1, 1, 1, 1, 1, 1, 1, 1],
            &[u32::MAX, 2],
        ] {
            let table = WeightTable::new(weights.iter().copied());
            let total = table.total();
            for x in (0..total.min(64)).chain([total.saturating_sub(1), total, total + 3]) {
                assert_eq!(
                    choose_linear(weights.iter().copied(), |n| {
                        assert_eq!(n, total);
                        x
                    }),
                    table.choose(|_| x),
                    "{weights:?} draw {x}"
                );
            }
        }
        assert_eq!(choose_linear([0u32, 0].into_iter(), |_| 0), None);
        assert_eq!(choose_linear(std::iter::empty(), |_| 0), None);
    }

    #[test]
    fn weighted_choice_all_zero_or_empty_is_none() {
        assert_eq!(WeightTable::new([0, 0]).choose(|_| 0), None);
        assert_eq!(WeightTable::new([]).choose(|_| 0), None);
    }

    #[test]
    fn weighted_choice_binary_search_above_eight_backends_matches_linear() {
        let weights: Vec<u32> = (0..20).map(|i| (i * 7 % 5) as u32).collect();
        let table = WeightTable::new(weights.iter().copied());
        let total = table.total();
        for x in 0..total {
            let linear = table.cumulative.iter().position(|&c| c > x);
            assert_eq!(
                table.choose(|n| {
                    assert_eq!(n, total);
                    x
                }),
                linear
            );
        }
    }
}
