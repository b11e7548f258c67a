//! Starts the real proxy in-process on loopback ephemeral ports for black-box tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use serde_json::Value;
use tunnelgate_proxy::{ProxyHandle, ProxyServer, ProxySettings, ProxyState, Registry};
use tunnelgate_testkit::{Client, Reply, put_config};

pub struct Proxy {
    pub handle: ProxyHandle,
    pub data: SocketAddr,
    pub config: SocketAddr,
    pub client: Client,
    pub token: Option<String>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        Self::start_with(ProxySettings::loopback()).await
    }

    pub async fn start_with(settings: ProxySettings) -> Proxy {
        let token = settings.auth_token.clone();
        let state = ProxyState::new(Registry::default());
        let handle = ProxyServer::start(settings, state).await.expect("proxy starts");
        Proxy {
            data: handle.data_addr().expect("data listener"),
            config: handle.config_addr(),
            handle,
            client: Client::new(),
            token,
        }
    }

    /// Pushes a config and asserts it was accepted.
    pub async fn push(&self, config: Value) -> Value {
        let (status, body) = put_config(self.config, self.token.as_deref(), config.to_string()).await;
        assert_eq!(status, 200, "config rejected: {body}");
        body
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.client.get(self.data, host, path).await
    }

    /// GET on the config port.
    pub async fn config_get(&self, path: &str) -> Reply {
        self.client.get(self.config, "proxy", path).await
    }
}

/// One rule routing `host` (or every host when empty) to `url`.
pub fn single_route(version: i64, host: &str, url: &str) -> Value {
    let hostnames: Vec<&str> = if host.is_empty() { vec![] } else { vec![host] };
    serde_json::json!({
        "version": version,
        "rules": [{"hostnames": hostnames, "backends": [{"url": url, "weight": 1}]}]
    })
}
