//! The tunnelgate Gateway API controller (`tunnelgate controller`), built on kube-rs.
//!
//! What this crate does (shared/spec/controller.md §1, §2, §6–§10):
//! - informer caches (reflectors) of GatewayClass, Gateway, HTTPRoute, GRPCRoute, ReferenceGrant,
//!   BackendTLSPolicy, Service, EndpointSlice, Namespace and ConfigMap on every replica, plus the proxy
//!   auth-token and tunnel-token Secrets;
//! - one debounced full sync: snapshot the caches, translate with `tunnelgate-gateway`, push the document to every
//!   proxy replica, write the status that changed with server-side apply;
//! - Lease-based leader election: only the leader syncs; losing the lease ends [`Controller::wait`] with
//!   [`Error::LeaseLost`] (the binary exits 1);
//! - proxy discovery from the EndpointSlices of the proxy's headless Service (ready or not) or fixed URLs;
//!   parallel pushes with a timeout, wall-clock-seeded strictly increasing versions, 409 recovery, skip when
//!   unchanged, immediate push to a new replica, bearer token from a Secret generated once if missing;
//! - the optional Cloudflare API sync of the tunnel's ingress document, with the Gateway condition
//!   `tunnelgate.dev/CloudflareSynced` ([`cloudflare`]);
//! - `/metrics`, `/healthz`, `/readyz`;
//! - spans for each sync pass (`reconcile`) and each config push (`config push`) through the process-wide
//!   OpenTelemetry tracer; the binary installs an OTLP exporter behind it with `--tracing-enabled`, otherwise
//!   the spans go to the API's no-op tracer.
//!
//! What it does not do: translation (that is `tunnelgate-gateway`, a pure function), command-line parsing and
//! logging setup (the `tunnelgate` binary), and DNS records at Cloudflare. The Gateway API bundle version for
//! `SupportedVersion` is read from the GatewayClass CRD's annotation (polled every ten minutes).

/// Instrumentation scope of the controller's spans.
pub const TRACER_SCOPE: &str = "tunnelgate-controller";

pub mod auth_token;
pub mod cloudflare;
pub mod debounce;
pub mod diagnostics;
pub mod discovery;
pub mod document;
pub mod events;
pub mod finalizer;
pub mod lease;
pub mod metrics;
pub mod options;
pub mod push;
pub mod reconcile;
pub mod status;
pub mod tunnel_token;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use options::{
    AuthTokenOptions, CloudflareOptions, ConfigPort, ControllerOptions, DEFAULT_CLOUDFLARE_API_URL,
    LeaderElectionOptions, ObjectName, OptionError, ProxyTargets, ProxyUrl, TunnelTokenOptions,
};
pub use tunnelgate_gateway::BackendResolution;

use crate::auth_token::{
    AUTH_TOKEN_HASH_ANNOTATION, AuthTokens, TUNNEL_TOKEN_HASH_ANNOTATION, ensure_token, token_from_secret,
    token_hash,
};
use crate::debounce::Trigger;
use crate::diagnostics::Diagnostics;
use crate::document::VersionCounter;
use crate::events::EventLog;
use crate::lease::LeaderElector;
use crate::metrics::Metrics;
use crate::push::Pusher;
use crate::reconcile::{Context, run_sync_loop};
use crate::watch::Stores;

/// Why the controller stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialising the config document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("proxy auth token Secret {secret}: {reason}")]
    AuthToken { secret: String, reason: String },
    #[error("lost leadership: {0}")]
    LeaseLost(String),
    #[error("{0} status writes failed")]
    StatusWrites(usize),
    #[error("the informer caches stopped before they synced")]
    CachesStopped,
    #[error("controller task failed: {0}")]
    TaskFailed(String),
}

/// A started controller.
pub struct Controller {
    /// Bound address of the health listener, when enabled.
    pub health_addr: Option<SocketAddr>,
    /// Bound address of the metrics listener, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    main: JoinHandle<Result<(), Error>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("health_addr", &self.health_addr)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Binds the listeners, starts the caches and returns; leader election and syncing continue in the background.
    pub async fn start(client: kube::Client, opts: ControllerOptions) -> Result<Self, Error> {
        let metrics = Arc::new(Metrics::default());
        let ready = Arc::new(AtomicBool::new(false));
        let diagnostics = Diagnostics {
            ready: ready.clone(),
            metrics: metrics.clone(),
        };
        let mut tasks = Vec::new();
        let health_addr = match opts.health_addr {
            Some(addr) => Some(diagnostics.serve(addr, &mut tasks).await?),
            None => None,
        };
        let metrics_addr = match opts.metrics_addr {
            Some(addr) if Some(addr) != opts.health_addr => Some(diagnostics.serve(addr, &mut tasks).await?),
            Some(_) => health_addr,
            None => None,
        };
        let trigger = Trigger::default();
        let stores = Stores::start(&client, &trigger, &mut tasks);
        let is_leader = Arc::new(AtomicBool::new(false));

        let (tokens_tx, tokens_rx) = channel::channel(AuthTokens::default());
        if let Some(auth) = &opts.auth_token {
            let token = ensure_token(&Api::namespaced(client.clone(), &auth.secret.namespace), auth).await?;
            tokens_tx.send_replace(AuthTokens::new(Some(token)));
            tasks.push(tokio::spawn(follow_auth_token(
                client.clone(),
                auth.clone(),
                opts.proxy_deployment.clone(),
                tokens_tx,
                is_leader.clone(),
                trigger.clone(),
            )));
        }
        let cloudflare = opts
            .cloudflare
            .clone()
            .map(|c| Arc::new(cloudflare::sync::Link::new(c)));
        if let Some(link) = &cloudflare {
            tasks.push(tokio::spawn(cloudflare::sync::follow_api_token(
                client.clone(),
                link.clone(),
            )));
        }
        let (addresses_tx, addresses_rx) = channel::channel(standalone_addresses(&opts));
        let (tunnel_hash_tx, tunnel_hash_rx) = channel::channel(None);
        if let Some(tunnel) = &opts.tunnel_token {
            tasks.push(tokio::spawn(follow_tunnel_token(
                client.clone(),
                tunnel.clone(),
                opts.proxy_deployment.clone(),
                TunnelTokenFollowers {
                    addresses: addresses_tx,
                    hash: tunnel_hash_tx,
                    cloudflare: cloudflare.clone(),
                },
                is_leader.clone(),
                trigger.clone(),
            )));
        }

        let (bundle_tx, bundle_rx) = channel::channel(None);
        tasks.push(tokio::spawn(follow_bundle_version(
            client.clone(),
            bundle_tx,
            trigger.clone(),
        )));

        // The leader records events; its identity (the pod name in a cluster) tells replicas apart.
        let event_instance = opts.leader_election.as_ref().map(|l| l.identity.clone());
        let pusher = Pusher::new(
            Arc::new(VersionCounter::seeded_from_clock()),
            tokens_rx,
            opts.push_timeout,
            opts.push_failure_grace,
            trigger.clone(),
            metrics.clone(),
        );
        let ctx = Arc::new(Context {
            client: client.clone(),
            stores,
            pusher,
            opts,
            metrics: metrics.clone(),
            trigger,
            gateway_addresses: addresses_rx,
            bundle_version: bundle_rx,
            tunnel_token_hash: tunnel_hash_rx,
            events: EventLog::new(client.clone(), crate::options::FIELD_MANAGER, event_instance),
            cloudflare,
        });
        let main = tokio::spawn(lead_and_sync(client, ctx, ready, is_leader));
        Ok(Self {
            health_addr,
            metrics_addr,
            metrics,
            main,
            tasks,
        })
    }

    /// Runs until leadership is lost (or the caches die); never returns `Ok` on its own.
    pub async fn wait(mut self) -> Result<(), Error> {
        let result = (&mut self.main).await;
        match result {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(Error::TaskFailed(e.to_string())),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.main.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A client configured from the environment: the in-cluster service account, else `KUBECONFIG` or
/// `~/.kube/config`.
pub async fn connect() -> Result<kube::Client, Error> {
    Ok(kube::Client::try_default().await?)
}

/// Starts the controller and runs it until it fails.
pub async fn run(client: kube::Client, opts: ControllerOptions) -> Result<(), Error> {
    Controller::start(client, opts).await?.wait().await
}

async fn lead_and_sync(
    client: kube::Client,
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
    is_leader: Arc<AtomicBool>,
) -> Result<(), Error> {
    ctx.stores
        .wait_until_ready()
        .await
        .map_err(|_| Error::CachesStopped)?;
    ready.store(true, Ordering::Release);
    tracing::info!("informer caches synced");

    let lease_lost = match &ctx.opts.leader_election {
        Some(le) => {
            let api: Api<Lease> = Api::namespaced(client.clone(), &le.lease.namespace);
            let mut elector = LeaderElector::new(api, le.clone());
            elector.acquire().await?;
            Some(AbortOnDrop(tokio::spawn(elector.keep_leading())))
        }
        None => None,
    };
    is_leader.store(true, Ordering::Release);
    ctx.metrics.is_leader.set(1);
    catch_up_deployment_roll(&ctx).await;

    let mut sync = AbortOnDrop(tokio::spawn(run_sync_loop(ctx.clone())));
    let _cloudflare = ctx.cloudflare.clone().map(|link| {
        AbortOnDrop(tokio::spawn(cloudflare::sync::run(
            link,
            ctx.trigger.clone(),
            ctx.metrics.clone(),
        )))
    });
    ctx.trigger.fire();
    let result = match lease_lost {
        Some(mut handle) => match (&mut handle.0).await {
            Ok(err) => Err(err),
            Err(e) => Err(Error::TaskFailed(format!("lease renewal: {e}"))),
        },
        None => {
            let _ = (&mut sync.0).await;
            return Err(Error::CachesStopped);
        }
    };
    drop(sync);
    is_leader.store(false, Ordering::Release);
    ctx.metrics.is_leader.set(0);
    result
}

/// Aborts a task spawned on behalf of a task that is itself aborted (the controller being dropped).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Gateway addresses without a tunnel token: the proxy Service's DNS name (standalone mode).
fn standalone_addresses(opts: &ControllerOptions) -> Vec<String> {
    if opts.tunnel_token.is_some() {
        return Vec::new();
    }
    let service = match (&opts.proxy_deployment, &opts.proxy_targets) {
        (Some(deployment), _) => deployment,
        (None, ProxyTargets::Service { service, .. }) => service,
        (None, ProxyTargets::Urls(_)) => return Vec::new(),
    };
    vec![format!(
        "{}.{}.svc.{}",
        service.name, service.namespace, opts.cluster_domain
    )]
}

pub(crate) fn secret_watch(
    client: &kube::Client,
    secret: &ObjectName,
) -> impl futures::Stream<Item = Result<Secret, watcher::Error>> + use<> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", secret.name));
    watcher::watcher(api, config).default_backoff().applied_objects()
}

/// Follows the auth token Secret: a new value becomes the token to push with (the old one stays usable for ten
/// minutes) and, on the leader, rolls the proxy Deployment.
async fn follow_auth_token(
    client: kube::Client,
    auth: AuthTokenOptions,
    deployment: Option<ObjectName>,
    tokens: channel::Sender<AuthTokens>,
    is_leader: Arc<AtomicBool>,
    trigger: Trigger,
) {
    let mut secrets = std::pin::pin!(secret_watch(&client, &auth.secret));
    while let Some(event) = secrets.next().await {
        let secret = match event {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(secret = %auth.secret, error = %e, "watching the auth token Secret failed");
                continue;
            }
        };
        let token = match token_from_secret(&secret, &auth.key) {
            Ok(t) => t,
            Err(reason) => {
                tracing::error!(secret = %auth.secret, %reason, "unusable proxy auth token; keeping the previous one");
                continue;
            }
        };
        let hash = token_hash(&token);
        let rotated = tokens.send_if_modified(|t| t.rotate(Some(token), Instant::now()));
        if !rotated {
            continue;
        }
        tracing::info!(secret = %auth.secret, "proxy auth token changed");
        if let Some(deployment) = &deployment
            && is_leader.load(Ordering::Acquire)
        {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &deployment.namespace);
            match auth_token::roll_deployment(&api, &deployment.name, AUTH_TOKEN_HASH_ANNOTATION, &hash, true)
                .await
            {
                Ok(true) => {
                    tracing::info!(%deployment, "rolling the proxy Deployment for the new auth token")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(%deployment, error = %e, "patching the proxy Deployment failed"),
            }
        }
        trigger.fire();
    }
}

/// A new leader finishes a roll its predecessor may have missed: when the Deployment already carries an auth or
/// tunnel token hash that differs from the current token's. A Deployment without the annotation is left alone, so
/// a first install does not restart the proxies.
async fn catch_up_deployment_roll(ctx: &Context) {
    let Some(deployment) = &ctx.opts.proxy_deployment else {
        return;
    };
    let auth = ctx
        .opts
        .auth_token
        .as_ref()
        .and(ctx.pusher.token())
        .map(|t| token_hash(&t));
    let tunnel = ctx.tunnel_token_hash.borrow().clone();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &deployment.namespace);
    for (annotation, hash) in [
        (AUTH_TOKEN_HASH_ANNOTATION, auth),
        (TUNNEL_TOKEN_HASH_ANNOTATION, tunnel),
    ] {
        let Some(hash) = hash else {
            continue;
        };
        if let Err(e) = auth_token::roll_deployment(&api, &deployment.name, annotation, &hash, false).await {
            tracing::warn!(%deployment, annotation, error = %e, "checking the proxy Deployment's token hash failed");
        }
    }
}

/// The CRD whose `gateway.networking.k8s.io/bundle-version` annotation gives `SupportedVersion`.
const BUNDLE_CRD: &str = "gatewayclasses.gateway.networking.k8s.io";
const BUNDLE_ANNOTATION: &str = "gateway.networking.k8s.io/bundle-version";

/// Reads the Gateway API bundle version now and every ten minutes (CRD upgrades are rare; RBAC allows `get`
/// only, so it is polled rather than watched). Unknown (`None`) while it cannot be read.
async fn follow_bundle_version(
    client: kube::Client,
    version: channel::Sender<Option<String>>,
    trigger: Trigger,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    loop {
        let read = match api.get_opt(BUNDLE_CRD).await {
            Ok(crd) => crd.and_then(|c| c.metadata.annotations?.get(BUNDLE_ANNOTATION).cloned()),
            Err(e) => {
                tracing::warn!(crd = BUNDLE_CRD, error = %e, "reading the Gateway API bundle version failed");
                None
            }
        };
        if version.send_if_modified(|v| {
            let changed = *v != read;
            *v = read.clone();
            changed
        }) {
            tracing::info!(bundle_version = ?read, "Gateway API bundle version");
            trigger.fire();
        }
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    }
}

/// Where [`follow_tunnel_token`] publishes what it reads.
struct TunnelTokenFollowers {
    /// The Gateway address `<tunnel-id>.cfargotunnel.com`.
    addresses: channel::Sender<Vec<String>>,
    /// The token's hash, for a new leader's catch-up roll.
    hash: channel::Sender<Option<String>>,
    /// The account and tunnel ids, for the Cloudflare API sync.
    cloudflare: Option<Arc<cloudflare::sync::Link>>,
}

/// Follows the tunnel token Secret: its tunnel id gives the Gateway address `<tunnel-id>.cfargotunnel.com`, and a
/// changed usable token rolls the proxy Deployment on the leader (`tunnelgate.dev/tunnel-token-hash`), since the
/// proxies read the token only at start. An unusable token is logged and changes nothing: rolling onto it would
/// leave the new pods failing to start.
async fn follow_tunnel_token(
    client: kube::Client,
    tunnel: TunnelTokenOptions,
    deployment: Option<ObjectName>,
    out: TunnelTokenFollowers,
    is_leader: Arc<AtomicBool>,
    trigger: Trigger,
) {
    let mut secrets = std::pin::pin!(secret_watch(&client, &tunnel.secret));
    while let Some(event) = secrets.next().await {
        let Ok(secret) = event else {
            continue;
        };
        let read = token_from_secret(&secret, &tunnel.key)
            .map_err(|reason| reason.to_string())
            .and_then(|t| {
                let ids = tunnel_token::tunnel_ids(&t).map_err(|e| e.to_string())?;
                Ok((ids, token_hash(&t)))
            });
        let (ids, hash) = match read {
            Ok(read) => read,
            Err(reason) => {
                tracing::error!(secret = %tunnel.secret, %reason, "unusable tunnel token");
                continue;
            }
        };
        if let Some(link) = &out.cloudflare {
            link.set_token_ids(ids.clone());
        }
        let id = ids.tunnel_id;
        if out.addresses.send_if_modified(|a| {
            let next = vec![tunnel_token::tunnel_hostname(&id)];
            let changed = *a != next;
            *a = next;
            changed
        }) {
            trigger.fire();
        }
        // The first value read is the one the proxies started with, unless the Deployment already carries
        // another token's hash (a change this process did not see): then only a differing annotation rolls it,
        // as in a new leader's catch-up.
        let changed = match out.hash.send_replace(Some(hash.clone())) {
            None => false,
            Some(previous) if previous == hash => continue,
            Some(_) => true,
        };
        if changed {
            tracing::info!(secret = %tunnel.secret, "tunnel token changed");
        }
        if let Some(deployment) = &deployment
            && is_leader.load(Ordering::Acquire)
        {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &deployment.namespace);
            let annotation = TUNNEL_TOKEN_HASH_ANNOTATION;
            match auth_token::roll_deployment(&api, &deployment.name, annotation, &hash, changed).await {
                Ok(true) => {
                    tracing::info!(%deployment, "rolling the proxy Deployment for the new tunnel token")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(%deployment, error = %e, "patching the proxy Deployment failed"),
            }
        }
    }
}
