//! The leader's Cloudflare sync task (controller.md §9 scheduling).
//!
//! Each controller sync hands the ingress document it built to [`Link::offer`]; only a document that differs from
//! the last one wakes the task. The task waits the debounce (2 s) so that a burst of route changes makes one call,
//! then `GET`s the remote document and `PUT`s ours only when they differ. A 429, a 5xx or no answer at all backs
//! off exponentially (5 s doubling to 5 min) and tries again with the newest document; a 429 or 503 that carries
//! `Retry-After` waits the longer of that and the backoff step, never longer than the longest backoff (see
//! [`RetryWait`]). Another refusal (401, 403, 404, …) waits for a change of document, token or ids, or at most the
//! longest backoff. Each outcome becomes the [`CloudflareSynced`] verdict the next controller sync writes to the
//! Gateways.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;

use super::api::{ApiError, ConfigurationsApi, TunnelRef};
use super::{CloudflareSynced, TunnelIngress, same_ingress};
use crate::auth_token::token_from_secret;
use crate::debounce::Trigger;
use crate::metrics::Metrics;
use crate::options::CloudflareOptions;
use crate::tunnel_token::TunnelIds;

/// What the controller and the sync task share. Lives as long as the controller.
pub struct Link {
    pub options: CloudflareOptions,
    desired: watch::Sender<Option<Arc<TunnelIngress>>>,
    api_token: watch::Sender<Option<String>>,
    token_ids: watch::Sender<Option<TunnelIds>>,
    verdict: watch::Sender<CloudflareSynced>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Link {
    pub fn new(options: CloudflareOptions) -> Self {
        Self {
            options,
            desired: watch::channel(None).0,
            api_token: watch::channel(None).0,
            token_ids: watch::channel(None).0,
            verdict: watch::channel(CloudflareSynced::Pending).0,
        }
    }

    /// The document the current routes call for; the task wakes only when it differs from the last one.
    pub fn offer(&self, ingress: TunnelIngress) {
        self.desired.send_if_modified(|d| {
            if d.as_deref() == Some(&ingress) {
                return false;
            }
            *d = Some(Arc::new(ingress));
            true
        });
    }

    /// The ids read from the tunnel token (the flags, when given, take precedence).
    pub fn set_token_ids(&self, ids: TunnelIds) {
        self.token_ids.send_if_modified(|i| {
            let changed = i.as_ref() != Some(&ids);
            *i = Some(ids.clone());
            changed
        });
    }

    /// The API token read from its Secret.
    pub fn set_api_token(&self, token: String) -> bool {
        self.api_token.send_if_modified(|t| {
            let changed = t.as_deref() != Some(token.as_str());
            *t = Some(token.clone());
            changed
        })
    }

    /// The verdict of the last attempt, for the Gateway condition.
    pub fn verdict(&self) -> CloudflareSynced {
        self.verdict.borrow().clone()
    }

    /// A new leader starts from `Pending`: the condition on the Gateways stays as the last leader left it until
    /// this one has tried.
    fn reset_verdict(&self) {
        self.verdict.send_replace(CloudflareSynced::Pending);
    }

    fn tunnel_ref(&self) -> Result<TunnelRef, CloudflareSynced> {
        let from_token = self.token_ids.borrow().clone();
        let account = self
            .options
            .account_id
            .clone()
            .or_else(|| from_token.as_ref().and_then(|t| t.account_id.clone()));
        let tunnel = self
            .options
            .tunnel_id
            .clone()
            .or_else(|| from_token.as_ref().map(|t| t.tunnel_id.clone()));
        let (Some(account), Some(tunnel)) = (account, tunnel) else {
            return Err(CloudflareSynced::Failed {
                reason: "MissingTunnelIds",
                message:
                    "the account and tunnel ids are not known yet: they come from the tunnel token Secret or \
                          --cloudflare-account-id and --cloudflare-tunnel-id"
                        .to_owned(),
            });
        };
        TunnelRef::new(&account, &tunnel).map_err(|message| CloudflareSynced::Failed {
            reason: "InvalidTunnelIds",
            message,
        })
    }
}

/// Follows the API token Secret (every replica, so that a new leader has it at once). An unusable value is logged
/// and keeps the previous token.
pub async fn follow_api_token(client: kube::Client, link: Arc<Link>) {
    let secret = link.options.api_token_secret.clone();
    let key = link.options.api_token_key.clone();
    let mut secrets = std::pin::pin!(crate::secret_watch(&client, &secret));
    while let Some(event) = secrets.next().await {
        let secret_object = match event {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%secret, error = %e, "watching the Cloudflare API token Secret failed");
                continue;
            }
        };
        match token_from_secret(&secret_object, &key) {
            Ok(token) => {
                if link.set_api_token(token) {
                    tracing::info!(%secret, "Cloudflare API token read");
                }
            }
            Err(reason) => {
                tracing::error!(%secret, %reason, "unusable Cloudflare API token; keeping the previous one")
            }
        }
    }
}

/// The leader's sync loop; runs until aborted (leadership lost or the controller dropped).
pub async fn run(link: Arc<Link>, trigger: Trigger, metrics: Arc<Metrics>) {
    link.reset_verdict();
    let mut desired = link.desired.subscribe();
    let mut api_token = link.api_token.subscribe();
    let mut token_ids = link.token_ids.subscribe();
    desired.mark_changed();
    let opts = link.options.clone();
    let api = match ConfigurationsApi::new(&opts.api_url, opts.call_timeout) {
        Ok(api) => api,
        Err(e) => {
            tracing::error!(error = %e, "the Cloudflare API sync cannot run");
            publish(
                &link,
                &trigger,
                CloudflareSynced::Failed {
                    reason: "InvalidApiUrl",
                    message: e.to_string(),
                },
            );
            return;
        }
    };
    let mut backoff: Option<Duration> = None;
    loop {
        // Links live as long as the controller, so the senders outlive this task: `changed` does not fail.
        tokio::select! {
            _ = desired.changed() => {}
            _ = api_token.changed() => {}
            _ = token_ids.changed() => {}
        }
        tokio::time::sleep(opts.debounce).await;
        loop {
            let ingress = desired.borrow_and_update().clone();
            let token = api_token.borrow_and_update().clone();
            token_ids.borrow_and_update();
            let Some(ingress) = ingress else {
                break;
            };
            let outcome = attempt(&link, &api, token.as_deref(), &ingress, &metrics).await;
            let next = match &outcome {
                Ok(_) | Err(Failure::Missing(_)) => {
                    backoff = None;
                    Next::AwaitChange
                }
                Err(Failure::Api(e)) if e.is_transient() => {
                    // The step doubles as before whatever the server asked, so a later failure without
                    // `Retry-After` still finds the backoff where it would have been.
                    let step = backoff.map_or(opts.backoff_base, |b| (b * 2).min(opts.backoff_max));
                    backoff = Some(step);
                    Next::Backoff(RetryWait::new(step, e.retry_after(), opts.backoff_max))
                }
                Err(Failure::Api(_)) => {
                    backoff = None;
                    Next::ChangeOrRetry(opts.backoff_max)
                }
            };
            let verdict = match outcome {
                Ok(verdict) | Err(Failure::Missing(verdict)) => verdict,
                Err(Failure::Api(e)) => {
                    tracing::warn!(error = %e, next = %next, "Cloudflare tunnel configuration sync failed");
                    CloudflareSynced::Failed {
                        reason: e.reason(),
                        message: e.to_string(),
                    }
                }
            };
            publish(&link, &trigger, verdict);
            match next {
                Next::AwaitChange => break,
                // 429 / 5xx: honour the wait even if the routes change meanwhile.
                Next::Backoff(retry) => tokio::time::sleep(retry.wait).await,
                // A refusal: a new document, token or ids may fix it; otherwise try again after the longest wait.
                Next::ChangeOrRetry(wait) => {
                    let changed = tokio::select! {
                        _ = desired.changed() => true,
                        _ = api_token.changed() => true,
                        _ = token_ids.changed() => true,
                        () = tokio::time::sleep(wait) => false,
                    };
                    if changed {
                        tokio::time::sleep(opts.debounce).await;
                    }
                }
            }
        }
    }
}

/// What the task does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// In step, or nothing to call with: wait for a new document, token or ids.
    AwaitChange,
    /// Throttled or unavailable: try again after this long, whatever changes meanwhile.
    Backoff(RetryWait),
    /// Refused: try again when something changes, or after this long.
    ChangeOrRetry(Duration),
}

/// The wait after a throttled or failed call: the longer of the backoff step and the server's `Retry-After`, the
/// latter never beyond the longest backoff (a broken or hostile value must not park the sync for longer). A
/// malformed `Retry-After` never gets here (the API client drops it) and one already past is zero, so both leave
/// the backoff step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RetryWait {
    wait: Duration,
    /// What the server asked for, when it sent `Retry-After` with a 429 or 503.
    asked: Option<Duration>,
    source: WaitSource,
}

/// What set a [`RetryWait`], for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitSource {
    /// The exponential backoff step: no `Retry-After`, or one no longer than the step.
    Backoff,
    /// The server's `Retry-After`, longer than the step.
    RetryAfter,
    /// The server's `Retry-After` was longer than the longest backoff, which is waited instead.
    RetryAfterCapped,
}

impl RetryWait {
    fn new(step: Duration, asked: Option<Duration>, max: Duration) -> Self {
        let (wait, source) = match asked {
            Some(asked) if asked > step && asked > max => (step.max(max), WaitSource::RetryAfterCapped),
            Some(asked) if asked > step => (asked, WaitSource::RetryAfter),
            _ => (step, WaitSource::Backoff),
        };
        Self { wait, asked, source }
    }
}

impl std::fmt::Display for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AwaitChange => f.write_str("wait for a change"),
            Self::Backoff(retry) => {
                write!(f, "retry in {:?} ", retry.wait)?;
                match (retry.source, retry.asked) {
                    (WaitSource::Backoff, None) => f.write_str("(backoff)"),
                    (WaitSource::Backoff, Some(asked)) => {
                        write!(f, "(backoff; Retry-After asked for {asked:?})")
                    }
                    (WaitSource::RetryAfter, _) => f.write_str("(Retry-After)"),
                    (WaitSource::RetryAfterCapped, Some(asked)) => {
                        write!(f, "(Retry-After asked for {asked:?}, capped)")
                    }
                    (WaitSource::RetryAfterCapped, None) => f.write_str("(Retry-After, capped)"),
                }
            }
            Self::ChangeOrRetry(wait) => write!(f, "retry on a change, or in {wait:?}"),
        }
    }
}

enum Failure {
    /// Token or ids missing: nothing to call with until they appear.
    Missing(CloudflareSynced),
    Api(ApiError),
}

async fn attempt(
    link: &Link,
    api: &ConfigurationsApi,
    token: Option<&str>,
    ingress: &TunnelIngress,
    metrics: &Metrics,
) -> Result<CloudflareSynced, Failure> {
    let tunnel = match link.tunnel_ref() {
        Ok(t) => t,
        Err(verdict) => {
            metrics.cloudflare_sync("missing_ids");
            return Err(Failure::Missing(verdict));
        }
    };
    let Some(token) = token else {
        metrics.cloudflare_sync("missing_token");
        return Err(Failure::Missing(CloudflareSynced::Failed {
            reason: "MissingApiToken",
            message: format!(
                "waiting for the API token: key {:?} of Secret {}",
                link.options.api_token_key, link.options.api_token_secret
            ),
        }));
    };
    let result = async {
        let remote = api.get(&tunnel, token, metrics).await?;
        if same_ingress(&remote, &ingress.entries) {
            return Ok(false);
        }
        api.put(&tunnel, token, &ingress.put_body(), metrics).await?;
        Ok(true)
    }
    .await;
    match result {
        Ok(changed) => {
            metrics.cloudflare_sync(if changed { "updated" } else { "unchanged" });
            if changed {
                tracing::info!(
                    tunnel = %tunnel.tunnel_id,
                    hostnames = ingress.entries.len() - 1,
                    dropped = ingress.dropped,
                    "Cloudflare tunnel ingress updated"
                );
            }
            if ingress.dropped > 0 {
                tracing::warn!(
                    hostnames = ingress.hostnames,
                    dropped = ingress.dropped,
                    "the Cloudflare tunnel ingress is truncated to {} entries",
                    super::MAX_INGRESS_ENTRIES
                );
            }
            Ok(CloudflareSynced::Synced {
                listed: ingress.entries.len() - 1,
                dropped: ingress.dropped,
            })
        }
        Err(e) => {
            metrics.cloudflare_sync("error");
            Err(Failure::Api(e))
        }
    }
}

fn publish(link: &Link, trigger: &Trigger, verdict: CloudflareSynced) {
    if link.verdict.send_if_modified(|v| {
        let changed = *v != verdict;
        *v = verdict.clone();
        changed
    }) {
        trigger.fire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(300);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn without_retry_after_the_backoff_step_is_waited() {
        let retry = RetryWait::new(secs(5), None, MAX);
        assert_eq!((retry.wait, retry.source), (secs(5), WaitSource::Backoff));
        assert_eq!(Next::Backoff(retry).to_string(), "retry in 5s (backoff)");
    }

    #[test]
    fn a_retry_after_no_longer_than_the_step_leaves_the_step() {
        for asked in [secs(0), secs(3), secs(20)] {
            let retry = RetryWait::new(secs(20), Some(asked), MAX);
            assert_eq!(
                (retry.wait, retry.source),
                (secs(20), WaitSource::Backoff),
                "{asked:?}"
            );
        }
        assert_eq!(
            Next::Backoff(RetryWait::new(secs(20), Some(secs(3)), MAX)).to_string(),
            "retry in 20s (backoff; Retry-After asked for 3s)"
        );
    }

    #[test]
    fn a_retry_after_longer_than_the_step_is_waited() {
        let retry = RetryWait::new(secs(5), Some(secs(60)), MAX);
        assert_eq!((retry.wait, retry.source), (secs(60), WaitSource::RetryAfter));
        assert_eq!(
            RetryWait::new(secs(5), Some(MAX), MAX).wait,
            MAX,
            "exactly the longest backoff is not capped"
        );
        assert_eq!(Next::Backoff(retry).to_string(), "retry in 60s (Retry-After)");
    }

    #[test]
    fn a_retry_after_beyond_the_longest_backoff_is_capped() {
        for asked in [secs(301), secs(1_000_000_000), secs(u64::MAX)] {
            let retry = RetryWait::new(secs(5), Some(asked), MAX);
            assert_eq!(
                (retry.wait, retry.source),
                (MAX, WaitSource::RetryAfterCapped),
                "{asked:?}"
            );
        }
        assert_eq!(
            Next::Backoff(RetryWait::new(secs(5), Some(secs(1_000_000_000)), MAX)).to_string(),
            "retry in 300s (Retry-After asked for 1000000000s, capped)"
        );
    }
}
