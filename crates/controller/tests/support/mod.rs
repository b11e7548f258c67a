//! Test support for the controller's black-box tests: the loopback API server, fixture builders for the
//! Kubernetes objects, and real proxies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod apiserver;
pub mod cloudflare;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use serde_json::{Value, json};
use tunnelgate_proxy::{ProxyHandle, ProxyServer, ProxySettings, ProxyState, Registry};
use tunnelgate_testkit::{Backend, Client, Reply};

pub const CONTROLLER: &str = "tunnelgate.dev/gateway-controller";
pub const GW_V1: &str = "gateway.networking.k8s.io/v1";
pub const TOKEN: &str = "s3cr3t-proxy-token";

pub struct Cluster {
    pub api: ApiServer,
    pub backend: Backend,
}

/// Namespaces, our GatewayClass and Gateway, a Service `app` whose one endpoint is a real backend, and the auth
/// token Secret.
pub async fn cluster() -> Cluster {
    // `RUST_LOG=tunnelgate_controller=debug` shows what the controller does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let api = ApiServer::start().await;
    let backend = Backend::start("app").await;
    for ns in ["default", "tg"] {
        api.apply(namespace(ns));
    }
    api.apply(gateway_class("tunnelgate", CONTROLLER));
    api.apply(gateway("default", "gw", "tunnelgate"));
    api.apply(service("default", "app"));
    api.apply(endpoint_slice(
        "default",
        "app-1",
        "app",
        "http",
        backend.addr.port(),
        &[("127.0.0.1", true)],
    ));
    api.apply(secret("tg", "proxy-auth", "auth-token", TOKEN));
    Cluster { api, backend }
}

/// [`cluster`] with one proxy in the headless Service and the HTTPRoute `web` (app.example.com → `app`).
pub async fn cluster_with_web_route() -> (Cluster, Proxy) {
    let c = cluster().await;
    let proxy = Proxy::start().await;
    c.api.apply(proxy.slice("proxy-headless-a", true));
    c.api
        .apply(http_route("default", "web", "gw", "app.example.com", "/", "app"));
    (c, proxy)
}

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
}

pub fn gateway_class(name: &str, controller: &str) -> Value {
    json!({"apiVersion": GW_V1, "kind": "GatewayClass", "metadata": {"name": name},
           "spec": {"controllerName": controller}})
}

pub fn gateway(ns: &str, name: &str, class: &str) -> Value {
    json!({"apiVersion": GW_V1, "kind": "Gateway", "metadata": {"namespace": ns, "name": name},
           "spec": {"gatewayClassName": class,
                    "listeners": [{"name": "http", "protocol": "HTTP", "port": 80,
                                   "allowedRoutes": {"namespaces": {"from": "All"}}}]}})
}

pub fn http_route(ns: &str, name: &str, gateway: &str, host: &str, path: &str, service: &str) -> Value {
    json!({"apiVersion": GW_V1, "kind": "HTTPRoute", "metadata": {"namespace": ns, "name": name},
           "spec": {"parentRefs": [{"name": gateway}],
                    "hostnames": [host],
                    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                               "backendRefs": [{"name": service, "port": 80}]}]}})
}

pub fn service(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name},
           "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

/// An EndpointSlice of `service` with one endpoint per address, on a port named `port_name`.
pub fn endpoint_slice(
    ns: &str,
    name: &str,
    service: &str,
    port_name: &str,
    port: u16,
    endpoints: &[(&str, bool)],
) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (ip, ready))| json!({"addresses": [ip], "conditions": {"ready": ready},
                                       "targetRef": {"kind": "Pod", "name": format!("{name}-{i}"), "uid": format!("{name}-uid-{i}")}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
           "endpoints": endpoints})
}

pub fn secret(ns: &str, name: &str, key: &str, value: &str) -> Value {
    use base64::Engine as _;
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": ns, "name": name},
           "data": {key: base64::engine::general_purpose::STANDARD.encode(value)}})
}

/// The real proxy, in-process, on loopback ephemeral ports, with the bearer token [`TOKEN`].
pub struct Proxy {
    pub handle: ProxyHandle,
    pub data: SocketAddr,
    pub config: SocketAddr,
    client: Client,
}

impl Proxy {
    pub async fn start() -> Proxy {
        let mut settings = ProxySettings::loopback();
        settings.auth_token = Some(TOKEN.to_owned());
        let handle = ProxyServer::start(settings, ProxyState::new(Registry::default()))
            .await
            .expect("proxy starts");
        Proxy {
            data: handle.data_addr().expect("data listener"),
            config: handle.config_addr(),
            handle,
            client: Client::new(),
        }
    }

    pub fn version(&self) -> i64 {
        self.handle.state().status().version
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.client.get(self.data, host, path).await
    }

    /// The proxy's headless-Service EndpointSlice (one per proxy: each listens on its own loopback port).
    pub fn slice(&self, name: &str, ready: bool) -> Value {
        endpoint_slice(
            "tg",
            name,
            "proxy-headless",
            "config-api",
            self.config.port(),
            &[("127.0.0.1", ready)],
        )
    }
}

/// Polls `check` every millisecond until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The condition of `kind` in a conditions array.
pub fn condition<'a>(conditions: &'a Value, kind: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == kind)
}
