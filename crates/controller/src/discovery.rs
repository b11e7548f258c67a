//! Proxy discovery (controller.md §7.1): which config-API endpoints exist right now.
//!
//! Targets are every endpoint address of the proxy's headless Service, ready or not: a proxy only becomes ready
//! once it has a config, so waiting for readiness would deadlock a fresh install.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::options::{ConfigPort, ObjectName, ProxyUrl};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One proxy replica's config API.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    /// `ip:port`, `[v6]:port` or `host:port`.
    pub authority: String,
    /// The pod behind the address (`targetRef` uid, else name), so that a pod replaced at the same IP counts as a
    /// new target and is pushed again.
    pub pod: Option<String>,
}

/// A target and whether Kubernetes considers it ready (only ready targets count for `PushFailing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: TargetKey,
    pub ready: bool,
}

impl TargetKey {
    /// `http://<authority>/config`.
    pub fn config_url(&self) -> String {
        format!("http://{}/config", self.authority)
    }
}

/// Targets of the headless Service `service`, sorted by key, duplicates merged (ready wins).
pub fn targets_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    service: &ObjectName,
    port: &ConfigPort,
) -> Vec<Target> {
    let mut out: BTreeMap<TargetKey, bool> = BTreeMap::new();
    for slice in slices {
        if slice.metadata.namespace.as_deref() != Some(service.namespace.as_str()) {
            continue;
        }
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if owner.map(String::as_str) != Some(service.name.as_str()) {
            continue;
        }
        let Some(port) = slice_port(slice, port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let pod = endpoint
                .target_ref
                .as_ref()
                .and_then(|r| r.uid.clone().or_else(|| r.name.clone()));
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let key = TargetKey {
                    authority: SocketAddr::new(ip, port).to_string(),
                    pod: pod.clone(),
                };
                let entry = out.entry(key).or_insert(false);
                *entry |= ready;
            }
        }
    }
    out.into_iter()
        .map(|(key, ready)| Target { key, ready })
        .collect()
}

/// The config-API port of a slice: by number, by name, or the only port when the slice has just one unnamed port.
fn slice_port(slice: &EndpointSlice, wanted: &ConfigPort) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let as_u16 = |p: Option<i32>| p.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0);
    match wanted {
        ConfigPort::Number(n) => Some(*n),
        ConfigPort::Name(name) => {
            if let Some(p) = ports.iter().find(|p| p.name.as_deref() == Some(name.as_str())) {
                return as_u16(p.port);
            }
            match ports {
                [only] if only.name.as_deref().unwrap_or_default().is_empty() => as_u16(only.port),
                _ => None,
            }
        }
    }
}

/// Resolves `--proxy-endpoints` URLs to one target per address (5 s per lookup); a failed lookup keeps the URL's
/// host as is, as the Go project does.
pub async fn targets_from_urls(urls: &[ProxyUrl]) -> Vec<Target> {
    let mut out: BTreeMap<TargetKey, bool> = BTreeMap::new();
    for url in urls {
        let lookup = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((url.host.as_str(), url.port)),
        )
        .await;
        let addrs: Vec<SocketAddr> = match lookup {
            Ok(Ok(addrs)) => addrs.collect(),
            _ => Vec::new(),
        };
        if addrs.is_empty() {
            let authority = if url.host.contains(':') {
                format!("[{}]:{}", url.host, url.port)
            } else {
                format!("{}:{}", url.host, url.port)
            };
            out.insert(TargetKey { authority, pod: None }, true);
        }
        for addr in addrs {
            out.insert(
                TargetKey {
                    authority: addr.to_string(),
                    pod: None,
                },
                true,
            );
        }
    }
    out.into_iter()
        .map(|(key, ready)| Target { key, ready })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    fn proxy_slice(name: &str, service: &str, endpoints: serde_json::Value) -> EndpointSlice {
        slice(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "tg", "name": name, "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "ports": [{"name": "config-api", "port": 8081}, {"name": "proxy", "port": 8080}],
            "endpoints": endpoints,
        }))
    }

    fn headless() -> ObjectName {
        ObjectName::new("tg", "proxy-headless")
    }

    #[test]
    fn not_ready_endpoints_are_targets_too() {
        let s = proxy_slice(
            "a",
            "proxy-headless",
            json!([
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "p2", "uid": "u2"}},
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "p1"}},
            ]),
        );
        let targets = targets_from_slices([&s], &headless(), &ConfigPort::Name("config-api".into()));
        assert_eq!(
            targets,
            vec![
                Target {
                    key: TargetKey {
                        authority: "10.0.0.1:8081".into(),
                        pod: Some("p1".into())
                    },
                    ready: true
                },
                Target {
                    key: TargetKey {
                        authority: "10.0.0.2:8081".into(),
                        pod: Some("u2".into())
                    },
                    ready: false
                },
            ]
        );
        assert_eq!(targets[0].key.config_url(), "http://10.0.0.1:8081/config");
    }

    #[test]
    fn other_services_and_namespaces_are_ignored() {
        let other = proxy_slice("b", "something-else", json!([{"addresses": ["10.0.0.9"]}]));
        let mut elsewhere = proxy_slice("c", "proxy-headless", json!([{"addresses": ["10.0.0.8"]}]));
        elsewhere.metadata.namespace = Some("other".into());
        assert!(
            targets_from_slices(
                [&other, &elsewhere],
                &headless(),
                &ConfigPort::Name("config-api".into())
            )
            .is_empty()
        );
    }

    #[test]
    fn port_by_number_and_single_unnamed_port() {
        let s = proxy_slice("a", "proxy-headless", json!([{"addresses": ["fd00::1"]}]));
        let t = targets_from_slices([&s], &headless(), &ConfigPort::Number(9000));
        assert_eq!(t[0].key.authority, "[fd00::1]:9000");

        let mut unnamed = s.clone();
        unnamed.ports = Some(vec![serde_json::from_value(json!({"port": 7000})).unwrap()]);
        let t = targets_from_slices([&unnamed], &headless(), &ConfigPort::Name("config-api".into()));
        assert_eq!(t[0].key.authority, "[fd00::1]:7000");

        let mut missing = s;
        missing.ports = Some(vec![
            serde_json::from_value(json!({"name": "proxy", "port": 8080})).unwrap(),
        ]);
        assert!(
            targets_from_slices([&missing], &headless(), &ConfigPort::Name("config-api".into())).is_empty()
        );
    }

    #[test]
    fn the_same_address_in_two_slices_is_one_target() {
        let a = proxy_slice(
            "a",
            "proxy-headless",
            json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}]),
        );
        let b = proxy_slice(
            "b",
            "proxy-headless",
            json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]),
        );
        let t = targets_from_slices([&a, &b], &headless(), &ConfigPort::Name("config-api".into()));
        assert_eq!(t.len(), 1);
        assert!(t[0].ready);
    }

    #[tokio::test]
    async fn urls_resolve_or_stay_as_given() {
        let urls = vec![
            ProxyUrl {
                host: "127.0.0.1".into(),
                port: 9001,
            },
            ProxyUrl {
                host: "no-such-host.invalid".into(),
                port: 9002,
            },
        ];
        let t = targets_from_urls(&urls).await;
        let authorities: Vec<_> = t.iter().map(|t| t.key.authority.as_str()).collect();
        assert_eq!(authorities, vec!["127.0.0.1:9001", "no-such-host.invalid:9002"]);
    }
}
