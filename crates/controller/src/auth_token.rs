//! The proxy bearer token (controller.md §8): read from a Secret, generated once when missing, rotated with a
//! grace period for pods that still run with the previous value.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rand::Rng as _;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::Error;
use crate::options::{AuthTokenOptions, FIELD_MANAGER, ObjectName};

/// How long the previous token is still tried after a rotation.
pub const PREVIOUS_TOKEN_GRACE: Duration = Duration::from_secs(600);
/// Pod-template annotation that rolls the proxy Deployment when the token changes.
pub const AUTH_TOKEN_HASH_ANNOTATION: &str = "tunnelgate.dev/auth-token-hash";
/// The proxy Deployment's pod-template annotation holding [`token_hash`] of the tunnel token (controller.md §8).
pub const TUNNEL_TOKEN_HASH_ANNOTATION: &str = "tunnelgate.dev/tunnel-token-hash";

/// The token to send and, for a while after a rotation, the one before it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthTokens {
    current: Option<String>,
    previous: Option<(String, Instant)>,
}

impl fmt::Debug for AuthTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthTokens")
            .field("current", &self.current.as_ref().map(|_| "<redacted>"))
            .field("previous", &self.previous.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AuthTokens {
    pub fn new(current: Option<String>) -> Self {
        Self {
            current,
            previous: None,
        }
    }

    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// The token replaced less than [`PREVIOUS_TOKEN_GRACE`] ago.
    pub fn previous(&self, now: Instant) -> Option<&str> {
        self.previous
            .as_ref()
            .filter(|(_, since)| now.duration_since(*since) < PREVIOUS_TOKEN_GRACE)
            .map(|(t, _)| t.as_str())
    }

    /// Installs `next`; returns true when it differs from the current token.
    pub fn rotate(&mut self, next: Option<String>, now: Instant) -> bool {
        if next == self.current {
            return false;
        }
        self.previous = self.current.take().map(|t| (t, now));
        self.current = next;
        true
    }
}

/// 32 random bytes, base64url without padding.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// First 16 hex characters of the token's SHA-256: safe to show in an annotation.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The token stored under `key`; an absent, non-UTF-8 or blank value is an error (the proxy would refuse it).
pub fn token_from_secret(secret: &Secret, key: &str) -> Result<String, String> {
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| format!("key {key:?} is missing"))?;
    let token = String::from_utf8(raw).map_err(|_| format!("key {key:?} is not UTF-8"))?;
    if token.trim().is_empty() {
        return Err(format!("key {key:?} is empty"));
    }
    Ok(token)
}

/// The Secret a controller replica creates when generation is on.
pub fn generated_secret(name: &ObjectName, key: &str, token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.name.clone()),
            namespace: Some(name.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "tunnelgate-controller".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            key.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// Reads the token Secret, creating it first when it is missing and generation is on. Creation is idempotent across
/// replicas: `AlreadyExists` means another replica won, and its value is read back. Never overwrites.
pub async fn ensure_token(api: &Api<Secret>, opts: &AuthTokenOptions) -> Result<String, Error> {
    let bad = |reason: String| Error::AuthToken {
        secret: opts.secret.to_string(),
        reason,
    };
    let secret = match api.get_opt(&opts.secret.name).await? {
        Some(s) => s,
        None if opts.generate => {
            let fresh = generated_secret(&opts.secret, &opts.key, &generate_token());
            match api.create(&PostParams::default(), &fresh).await {
                Ok(s) => {
                    tracing::info!(secret = %opts.secret, "created the proxy auth token Secret");
                    s
                }
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    api.get(&opts.secret.name).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => {
            return Err(bad(
                "the Secret does not exist and --proxy-auth-secret-generate is off".to_owned(),
            ));
        }
    };
    token_from_secret(&secret, &opts.key).map_err(bad)
}

/// Sets the proxy Deployment's pod-template `annotation` ([`AUTH_TOKEN_HASH_ANNOTATION`] or
/// [`TUNNEL_TOKEN_HASH_ANNOTATION`]) to `hash` when it differs (when it is absent too only if `when_absent`);
/// returns true when it patched, which rolls the proxy pods.
pub async fn roll_deployment(
    api: &Api<Deployment>,
    name: &str,
    annotation: &str,
    hash: &str,
    when_absent: bool,
) -> Result<bool, Error> {
    let deployment = api.get(name).await?;
    let current = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(annotation));
    match current {
        Some(h) if h == hash => return Ok(false),
        None if !when_absent => return Ok(false),
        _ => {}
    }
    let patch = serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {annotation: hash}}}}
    });
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests;
