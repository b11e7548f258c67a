//! The routing document as pushed: a translated config stamped with a version (controller.md §7.3, §7.4).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tunnelgate_config::Config;

use crate::options::ObjectName;

/// SHA-256 of the canonical serialisation with `version` set to 0: equal hashes mean equal routing.
pub type DocumentHash = [u8; 32];

/// Process-wide version source. Seeded from wall-clock milliseconds so that a newly elected leader starts above
/// whatever its predecessor pushed (barring clock skew).
#[derive(Debug)]
pub struct VersionCounter(AtomicI64);

/// A config ready to send, with what is needed to decide skips and Gateway `Programmed`.
#[derive(Debug)]
pub struct Document {
    pub version: i64,
    pub hash: DocumentHash,
    /// The JSON body sent with `PUT /config`.
    pub body: Bytes,
    pub rules: usize,
    /// True once this routing content was re-stamped after a 409, so a second 409 goes to backoff.
    pub restamped: bool,
    /// The `metadata.generation` of every Gateway the document was built from.
    pub gateway_generations: Arc<BTreeMap<ObjectName, i64>>,
    config: Arc<Config>,
}

impl VersionCounter {
    pub fn seeded_from_clock() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
            .unwrap_or(1);
        Self::starting_at(ms.max(1))
    }

    pub fn starting_at(value: i64) -> Self {
        Self(AtomicI64::new(value))
    }

    /// The next version; never 0 and strictly above every version handed out before.
    pub fn next(&self) -> i64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn current(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Makes the next version at least `remote + 1` (409 recovery).
    pub fn raise_to(&self, remote: i64) {
        self.0.fetch_max(remote, Ordering::SeqCst);
    }
}

/// How the canonical serialisation of a config starts when its `version` is 0: `version` is the first field.
const UNVERSIONED_PREFIX: &[u8] = b"{\"version\":0";

/// Hash of `config` ignoring its `version`.
pub fn document_hash(config: &Config) -> Result<DocumentHash, serde_json::Error> {
    Ok(hash_of(&unversioned_json(config)?))
}

/// The canonical serialisation of `config` with `version` 0, which is what [`DocumentHash`] hashes.
pub fn unversioned_json(config: &Config) -> Result<Vec<u8>, serde_json::Error> {
    if config.version == 0 {
        return serde_json::to_vec(config);
    }
    let mut unversioned = config.clone();
    unversioned.version = 0;
    serde_json::to_vec(&unversioned)
}

/// The hash of an [`unversioned_json`] serialisation.
pub fn hash_of(unversioned: &[u8]) -> DocumentHash {
    Sha256::digest(unversioned).into()
}

/// `unversioned` with `version` written in. Only the leading `version` field differs, so a document of
/// thousands of rules is serialised once per content rather than once more per version. `None` when the
/// serialisation does not start as expected.
fn with_version(unversioned: &[u8], version: i64) -> Option<Bytes> {
    let rest = unversioned.strip_prefix(UNVERSIONED_PREFIX)?;
    if !matches!(rest.first(), Some(b',' | b'}')) {
        return None;
    }
    let version = version.to_string();
    let mut body = Vec::with_capacity(unversioned.len() + version.len());
    body.extend_from_slice(b"{\"version\":");
    body.extend_from_slice(version.as_bytes());
    body.extend_from_slice(rest);
    Some(body.into())
}

impl Document {
    /// Stamps `config` with `version`.
    pub fn stamp(
        config: Arc<Config>,
        hash: DocumentHash,
        version: i64,
        gateway_generations: Arc<BTreeMap<ObjectName, i64>>,
    ) -> Result<Self, serde_json::Error> {
        let unversioned = unversioned_json(&config)?;
        Self::stamp_serialized(config, &unversioned, hash, version, gateway_generations)
    }

    /// Stamps `config`, already serialised as `unversioned` ([`unversioned_json`]), with `version`.
    pub fn stamp_serialized(
        config: Arc<Config>,
        unversioned: &[u8],
        hash: DocumentHash,
        version: i64,
        gateway_generations: Arc<BTreeMap<ObjectName, i64>>,
    ) -> Result<Self, serde_json::Error> {
        let body = match with_version(unversioned, version) {
            Some(body) => body,
            None => {
                let mut versioned = (*config).clone();
                versioned.version = version;
                Bytes::from(serde_json::to_vec(&versioned)?)
            }
        };
        Ok(Self {
            version,
            hash,
            body,
            rules: config.rules.len(),
            restamped: false,
            gateway_generations,
            config,
        })
    }

    /// The same routing content under a new version, marked as re-stamped.
    pub fn restamp(&self, version: i64) -> Result<Self, serde_json::Error> {
        let mut doc = Self::stamp(
            self.config.clone(),
            self.hash,
            version,
            self.gateway_generations.clone(),
        )?;
        doc.restamped = true;
        Ok(doc)
    }

    /// The same version and content with other Gateway generations (a Gateway changed without changing routing).
    pub fn with_generations(&self, gateway_generations: Arc<BTreeMap<ObjectName, i64>>) -> Self {
        Self {
            version: self.version,
            hash: self.hash,
            body: self.body.clone(),
            rules: self.rules,
            restamped: self.restamped,
            gateway_generations,
            config: self.config.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_is_strictly_increasing_and_recovers_past_remote() {
        let c = VersionCounter::starting_at(100);
        assert_eq!(c.next(), 101);
        assert_eq!(c.next(), 102);
        c.raise_to(500);
        assert_eq!(c.next(), 501);
        c.raise_to(10);
        assert_eq!(c.next(), 502);
    }

    #[test]
    fn clock_seed_is_wall_clock_milliseconds() {
        let seeded = VersionCounter::seeded_from_clock().current();
        // 2020-01-01 in ms: anything below means the seed is not in milliseconds.
        assert!(seeded > 1_577_836_800_000);
    }

    #[test]
    fn hash_ignores_version_but_not_content() {
        let a = Config {
            version: 1,
            ..Config::default()
        };
        let b = Config {
            version: 2,
            ..Config::default()
        };
        assert_eq!(document_hash(&a).unwrap(), document_hash(&b).unwrap());
        let c = Config {
            has_grpc_route: true,
            ..Config::default()
        };
        assert_ne!(document_hash(&a).unwrap(), document_hash(&c).unwrap());
    }

    #[test]
    fn stamp_writes_the_version_into_the_body() {
        let cfg = Arc::new(Config::default());
        let hash = document_hash(&cfg).unwrap();
        let doc = Document::stamp(cfg, hash, 42, Arc::default()).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&doc.body).unwrap();
        assert_eq!(body["version"], 42);
        assert_eq!(body["rules"], serde_json::json!([]));
        let again = doc.restamp(43).unwrap();
        assert!(again.restamped);
        assert_eq!(again.hash, doc.hash);
        let body: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
        assert_eq!(body["version"], 43);
    }

    #[test]
    fn stamped_body_is_the_config_serialised_with_its_version() {
        let cfg: Config = serde_json::from_value(serde_json::json!({
            "version": 7,
            "hasGrpcRoute": true,
            "rules": [{"hostnames": ["a.example.com"], "backends": [{"url": "http://10.0.0.1:80", "weight": 1}]}],
        }))
        .unwrap();
        let cfg = Arc::new(cfg);
        let hash = document_hash(&cfg).unwrap();
        for version in [1, 42, i64::MAX] {
            let doc = Document::stamp(cfg.clone(), hash, version, Arc::default()).unwrap();
            let mut expected = (*cfg).clone();
            expected.version = version;
            assert_eq!(doc.body, serde_json::to_vec(&expected).unwrap());
        }
    }
}
