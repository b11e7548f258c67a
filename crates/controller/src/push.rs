//! Config pushes to the proxy replicas (controller.md §7.2–§7.4).
//!
//! One worker task per target keeps that target on the current document: it pushes when the target has not
//! acknowledged the current (version, hash), backs off on failures (1 s doubling to 30 s, full jitter), stops on a
//! rejection until the content changes, and runs the 409 recovery. A new target gets a worker, and so the current
//! document, at once; a target that disappears loses its worker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use rand::Rng as _;
use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tunnelgate_config::Config;

use crate::auth_token::AuthTokens;
use crate::debounce::Trigger;
use crate::discovery::{Target, TargetKey};
use crate::document::{Document, DocumentHash, VersionCounter, hash_of, unversioned_json};
use crate::metrics::{Metrics, StateLabel, TargetLabel};
use crate::options::ObjectName;

/// At most this many pushes run at once (controller.md §7.2).
const MAX_PARALLEL_PUSHES: usize = 64;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Until a target has acknowledged a document once, it is retried at least this often (controller.md §7.4), so a
/// proxy that is starting up becomes ready soon after it can take a config.
const FIRST_PUSH_RETRY: Duration = Duration::from_secs(5);
/// Error bodies are short JSON objects; anything longer is cut.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// What the status writer needs to know about pushes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushView {
    /// Per Gateway, the highest generation contained in a document that at least one proxy acknowledged.
    pub acked_generations: BTreeMap<ObjectName, i64>,
    /// Set while a ready target has failed to acknowledge the current document for longer than the grace period.
    pub failing: Option<String>,
    /// Set while a target rejected the current content (400/413/415).
    pub rejected: Option<String>,
    /// Every known target acknowledged the current document (false while there are none).
    pub all_acked: bool,
}

/// Drives every target towards the current document.
pub struct Pusher {
    shared: Arc<Shared>,
    workers: Mutex<HashMap<TargetKey, AbortHandle>>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}

struct Shared {
    desired: watch::Sender<Option<Arc<Document>>>,
    counter: Arc<VersionCounter>,
    client: Client<HttpConnector, Full<Bytes>>,
    tokens: watch::Receiver<AuthTokens>,
    timeout: Duration,
    failure_grace: Duration,
    state: Mutex<PushState>,
    trigger: Trigger,
    metrics: Arc<Metrics>,
    permits: Semaphore,
}

#[derive(Debug, Default)]
struct PushState {
    targets: BTreeMap<TargetKey, TargetState>,
    acked_generations: BTreeMap<ObjectName, i64>,
}

#[derive(Debug, Default)]
struct TargetState {
    ready: bool,
    acked: Option<(i64, DocumentHash)>,
    failing_since: Option<Instant>,
    last_error: Option<String>,
    rejected: Option<(DocumentHash, String)>,
}

/// The reply of one `PUT /config`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PushOutcome {
    Acked,
    Stale,
    Rejected(String),
    Unauthorized,
    Failed(String),
}

impl Pusher {
    pub fn new(
        counter: Arc<VersionCounter>,
        tokens: watch::Receiver<AuthTokens>,
        timeout: Duration,
        failure_grace: Duration,
        trigger: Trigger,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let (desired, _) = watch::channel(None);
        let shared = Shared {
            desired,
            counter,
            client,
            tokens,
            timeout,
            failure_grace,
            state: Mutex::default(),
            trigger,
            metrics,
            permits: Semaphore::new(MAX_PARALLEL_PUSHES),
        };
        Self {
            shared: Arc::new(shared),
            workers: Mutex::default(),
        }
    }

    /// Makes `config` the current document. Unchanged content keeps the current version, so nothing is sent to
    /// targets that already have it.
    pub fn publish(
        &self,
        config: Config,
        gateway_generations: BTreeMap<ObjectName, i64>,
    ) -> Result<Arc<Document>, serde_json::Error> {
        let unversioned = unversioned_json(&config)?;
        let hash = hash_of(&unversioned);
        let generations = Arc::new(gateway_generations);
        let mut published = None;
        let mut error = None;
        self.shared.desired.send_if_modified(|current| {
            if let Some(doc) = current.as_ref().filter(|d| d.hash == hash) {
                if doc.gateway_generations == generations {
                    published = Some(doc.clone());
                    return false;
                }
                // Same routing, newer Gateway generations: no push, but acks so far also cover them.
                let doc = Arc::new(doc.with_generations(generations.clone()));
                *current = Some(doc.clone());
                published = Some(doc);
                return false;
            }
            match Document::stamp_serialized(
                Arc::new(config),
                &unversioned,
                hash,
                self.shared.counter.next(),
                generations.clone(),
            ) {
                Ok(doc) => {
                    let doc = Arc::new(doc);
                    *current = Some(doc.clone());
                    published = Some(doc);
                    true
                }
                Err(e) => {
                    error = Some(e);
                    false
                }
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        let doc =
            published.ok_or_else(|| serde_json::Error::io(std::io::Error::other("no document published")))?;
        self.shared.note_generations_if_acked(&doc);
        self.shared.metrics.config_version.set(doc.version);
        self.shared
            .metrics
            .config_rules
            .set(i64::try_from(doc.rules).unwrap_or(i64::MAX));
        self.shared
            .metrics
            .config_bytes
            .set(i64::try_from(doc.body.len()).unwrap_or(i64::MAX));
        Ok(doc)
    }

    /// The bearer token pushes use now.
    pub fn token(&self) -> Option<String> {
        self.shared.tokens.borrow().current().map(str::to_owned)
    }

    /// The document the targets are driven towards.
    pub fn current(&self) -> Option<Arc<Document>> {
        self.shared.desired.borrow().clone()
    }

    /// Replaces the target set: new targets get a worker (and so the current document) right away, removed ones
    /// are forgotten.
    pub fn set_targets(&self, targets: &[Target]) {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut state = self.shared.lock();
            state
                .targets
                .retain(|key, _| targets.iter().any(|t| &t.key == key));
            for t in targets {
                state.targets.entry(t.key.clone()).or_default().ready = t.ready;
            }
        }
        workers.retain(|key, handle| {
            let keep = targets.iter().any(|t| &t.key == key);
            if !keep {
                handle.abort();
                self.shared.metrics.proxy_target_version.remove(&TargetLabel {
                    target: key.authority.clone(),
                });
                tracing::info!(target = %key.authority, "proxy target removed");
            }
            keep
        });
        for t in targets {
            if !workers.contains_key(&t.key) {
                tracing::info!(target = %t.key.authority, ready = t.ready, "proxy target added");
                let task = tokio::spawn(run_worker(self.shared.clone(), t.key.clone()));
                workers.insert(t.key.clone(), task.abort_handle());
            }
        }
        drop(workers);
        self.shared.update_target_metrics();
    }

    /// Push state as the status writer sees it.
    pub fn view(&self) -> PushView {
        let current = self.current();
        let now = Instant::now();
        let state = self.shared.lock();
        let mut view = PushView {
            acked_generations: state.acked_generations.clone(),
            ..PushView::default()
        };
        let Some(doc) = current else {
            return view;
        };
        view.all_acked = !state.targets.is_empty()
            && state
                .targets
                .values()
                .all(|t| t.acked == Some((doc.version, doc.hash)));
        for (key, t) in &state.targets {
            if let Some((hash, msg)) = &t.rejected
                && *hash == doc.hash
                && view.rejected.is_none()
            {
                view.rejected = Some(format!("proxy {} rejected the document: {msg}", key.authority));
            }
            let sustained = t
                .failing_since
                .is_some_and(|since| now.duration_since(since) >= self.shared.failure_grace);
            if t.ready && sustained && t.acked != Some((doc.version, doc.hash)) && view.failing.is_none() {
                let secs = t.failing_since.map_or(0, |s| now.duration_since(s).as_secs());
                let err = t.last_error.as_deref().unwrap_or("no reply");
                view.failing = Some(format!(
                    "proxy {} has not acknowledged config version {} for {secs}s: {err}",
                    key.authority, doc.version
                ));
            }
        }
        view
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        for handle in self
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            handle.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PushState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_settled(&self, key: &TargetKey, doc: &Document) -> bool {
        let state = self.lock();
        state.targets.get(key).is_some_and(|t| {
            t.acked == Some((doc.version, doc.hash))
                || t.rejected.as_ref().is_some_and(|(h, _)| *h == doc.hash)
        })
    }

    fn record_ack(&self, key: &TargetKey, doc: &Document) {
        let mut state = self.lock();
        let mut status_changed = false;
        if let Some(t) = state.targets.get_mut(key) {
            status_changed |= t.failing_since.take().is_some() || t.rejected.take().is_some();
            t.acked = Some((doc.version, doc.hash));
            t.last_error = None;
        }
        for (gw, generation) in doc.gateway_generations.iter() {
            let acked = state.acked_generations.entry(gw.clone()).or_insert(i64::MIN);
            if *acked < *generation {
                *acked = *generation;
                status_changed = true;
            }
        }
        drop(state);
        self.metrics
            .proxy_target_version
            .get_or_create(&TargetLabel {
                target: key.authority.clone(),
            })
            .set(doc.version);
        self.update_target_metrics();
        if status_changed {
            self.trigger.fire();
        }
    }

    /// After `publish` with content some target already acknowledged, the new generations count as acked too.
    fn note_generations_if_acked(&self, doc: &Document) {
        let mut state = self.lock();
        if !state
            .targets
            .values()
            .any(|t| t.acked == Some((doc.version, doc.hash)))
        {
            return;
        }
        for (gw, generation) in doc.gateway_generations.iter() {
            let acked = state.acked_generations.entry(gw.clone()).or_insert(i64::MIN);
            *acked = (*acked).max(*generation);
        }
    }

    fn record_failure(self: &Arc<Self>, key: &TargetKey, error: String) {
        let mut state = self.lock();
        let Some(t) = state.targets.get_mut(key) else {
            return;
        };
        t.last_error = Some(error);
        if t.failing_since.is_none() {
            t.failing_since = Some(Instant::now());
            // Re-check status once the failure has lasted the grace period.
            let shared = Arc::downgrade(self);
            let grace = self.failure_grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if let Some(shared) = shared.upgrade() {
                    shared.trigger.fire();
                }
            });
        }
        drop(state);
        self.update_target_metrics();
    }

    fn record_rejection(&self, key: &TargetKey, doc: &Document, error: String) {
        let mut state = self.lock();
        if let Some(t) = state.targets.get_mut(key) {
            t.rejected = Some((doc.hash, error));
        }
        drop(state);
        self.update_target_metrics();
        self.trigger.fire();
    }

    /// 409 recovery step 2: raise the counter past the proxy's version and re-stamp the current content, once.
    fn restamp(&self, stale: &Document, remote: i64) {
        self.desired.send_if_modified(|current| {
            let Some(doc) = current.as_ref() else {
                return false;
            };
            if doc.version != stale.version || doc.restamped {
                return false;
            }
            self.counter.raise_to(remote);
            match doc.restamp(self.counter.next()) {
                Ok(next) => {
                    tracing::info!(
                        from = doc.version,
                        to = next.version,
                        remote,
                        "re-stamped the document after a 409"
                    );
                    self.metrics.config_version.set(next.version);
                    *current = Some(Arc::new(next));
                    true
                }
                Err(_) => false,
            }
        });
    }

    fn update_target_metrics(&self) {
        let current = self.desired.borrow().clone();
        let state = self.lock();
        let (mut acked, mut pending, mut failing) = (0, 0, 0);
        for t in state.targets.values() {
            let on_current = current
                .as_ref()
                .is_some_and(|d| t.acked == Some((d.version, d.hash)));
            if on_current {
                acked += 1;
            } else if t.failing_since.is_some() || t.rejected.is_some() {
                failing += 1;
            } else {
                pending += 1;
            }
        }
        for (label, value) in [("acked", acked), ("pending", pending), ("failing", failing)] {
            self.metrics
                .proxy_targets
                .get_or_create(&StateLabel {
                    state: label.to_owned(),
                })
                .set(value);
        }
    }

    async fn push(&self, key: &TargetKey, doc: &Document) -> PushOutcome {
        let _permit = self.permits.acquire().await;
        let tracer = opentelemetry::global::tracer(crate::TRACER_SCOPE);
        let mut span = tracer
            .span_builder("config push")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", "PUT"),
                KeyValue::new("server.address", key.authority.clone()),
                KeyValue::new("tunnelgate.document.version", doc.version),
            ])
            .start(&tracer);
        let started = Instant::now();
        let tokens = self.tokens.borrow().clone();
        let mut outcome = self.put(key, doc, tokens.current()).await;
        if outcome == PushOutcome::Unauthorized
            && let Some(previous) = tokens.previous(Instant::now())
        {
            outcome = self.put(key, doc, Some(previous)).await;
        }
        self.metrics
            .proxy_push_duration
            .observe(started.elapsed().as_secs_f64());
        let result = match &outcome {
            PushOutcome::Acked => "ok",
            PushOutcome::Stale => "conflict",
            PushOutcome::Rejected(_) => "rejected",
            PushOutcome::Unauthorized => "unauthorized",
            PushOutcome::Failed(_) => "error",
        };
        self.metrics.push_result(result);
        span.set_attribute(KeyValue::new("tunnelgate.push.result", result));
        if !matches!(outcome, PushOutcome::Acked | PushOutcome::Stale) {
            span.set_attribute(KeyValue::new("error.type", result));
            span.set_status(Status::error(result));
        }
        span.end();
        outcome
    }

    async fn put(&self, key: &TargetKey, doc: &Document, token: Option<&str>) -> PushOutcome {
        let reply = self.request(Method::PUT, key, doc.body.clone(), token).await;
        match reply {
            Err(e) => PushOutcome::Failed(e),
            Ok((StatusCode::OK, _)) => PushOutcome::Acked,
            Ok((StatusCode::CONFLICT, _)) => PushOutcome::Stale,
            Ok((StatusCode::UNAUTHORIZED, _)) => PushOutcome::Unauthorized,
            Ok((
                s @ (StatusCode::BAD_REQUEST
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE),
                body,
            )) => PushOutcome::Rejected(rejection_message(s, &body)),
            Ok((s, _)) => PushOutcome::Failed(format!("HTTP {}", s.as_u16())),
        }
    }

    /// `GET /config`'s `version`.
    async fn remote_version(&self, key: &TargetKey) -> Option<i64> {
        let token = self.tokens.borrow().current().map(str::to_owned);
        match self
            .request(Method::GET, key, Bytes::new(), token.as_deref())
            .await
        {
            Ok((StatusCode::OK, body)) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()?
                .get("version")?
                .as_i64(),
            _ => None,
        }
    }

    async fn request(
        &self,
        method: Method,
        key: &TargetKey,
        body: Bytes,
        token: Option<&str>,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut builder = Request::builder().method(method.clone()).uri(key.config_url());
        if method == Method::PUT {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| describe_client_error(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the reply: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no reply within {:?}", self.timeout)),
        }
    }
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// `HTTP 400: invalid regular expression at rules[3].matches[0].path.value`, from the proxy's JSON error body.
fn rejection_message(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match (field("error"), field("path")) {
        (Some(e), Some(p)) => format!("HTTP {}: {e} at {p}", status.as_u16()),
        (Some(e), None) => format!("HTTP {}: {e}", status.as_u16()),
        _ => format!("HTTP {}", status.as_u16()),
    }
}

/// Full-jitter exponential backoff: a uniform delay in `[0, min(max, base * 2^n)]`.
#[derive(Debug, Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn ceiling(&self) -> Duration {
        BACKOFF_BASE
            .saturating_mul(1u32 << self.attempts.min(16))
            .min(BACKOFF_MAX)
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempts = self.attempts.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }

    /// The next delay; before a target's first acknowledgement, at most [`FIRST_PUSH_RETRY`].
    fn next_retry(&mut self, acked_once: bool) -> Duration {
        let delay = self.next_delay();
        if acked_once {
            delay
        } else {
            delay.min(FIRST_PUSH_RETRY)
        }
    }
}

async fn run_worker(shared: Arc<Shared>, key: TargetKey) {
    let mut desired = shared.desired.subscribe();
    let mut backoff = Backoff::default();
    let mut acked_once = false;
    loop {
        let current = desired.borrow_and_update().clone();
        let Some(doc) = current.filter(|d| !shared.is_settled(&key, d)) else {
            if desired.changed().await.is_err() {
                return;
            }
            continue;
        };
        match shared.push(&key, &doc).await {
            PushOutcome::Acked => {
                tracing::debug!(target = %key.authority, version = doc.version, "proxy acknowledged the document");
                shared.record_ack(&key, &doc);
                backoff.reset();
                acked_once = true;
                continue;
            }
            PushOutcome::Rejected(msg) => {
                tracing::error!(target = %key.authority, version = doc.version, error = %msg,
                    "proxy rejected the document; not retrying this content");
                shared.record_rejection(&key, &doc, msg);
                continue;
            }
            PushOutcome::Stale => {
                let remote = shared.remote_version(&key).await;
                tracing::warn!(target = %key.authority, version = doc.version, ?remote, "proxy has a newer version (409)");
                if !doc.restamped
                    && let Some(remote) = remote
                    && remote >= shared.counter.current()
                {
                    shared.restamp(&doc, remote);
                    continue;
                }
                shared.record_failure(
                    &key,
                    format!("stale version {} (proxy has {remote:?})", doc.version),
                );
            }
            PushOutcome::Unauthorized => {
                tracing::warn!(target = %key.authority, "proxy refused the bearer token (401)");
                shared.record_failure(&key, "unauthorized (401)".to_owned());
            }
            PushOutcome::Failed(err) => {
                tracing::warn!(target = %key.authority, version = doc.version, error = %err, "config push failed");
                shared.record_failure(&key, err);
            }
        }
        let delay = backoff.next_retry(acked_once);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            changed = desired.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests;
