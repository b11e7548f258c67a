//! Leader election on a coordination/v1 Lease with resourceVersion optimistic concurrency (controller.md §10).
//!
//! The same protocol as client-go's leaderelection: a lease is free when nobody holds it or when its record has not
//! changed for `leaseDurationSeconds` as measured on *our* clock from when we first saw that record (so clock skew
//! between replicas does not matter). The holder renews every retry period; when it cannot renew within the renew
//! deadline, or finds someone else in the record, it has lost and the process exits.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::Error;
use crate::options::LeaderElectionOptions;

/// What to do with the lease as last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// No lease object yet.
    Create,
    /// Free or expired: take it over.
    Acquire,
    /// Ours: bump `renewTime`.
    Renew,
    /// Someone else holds a live lease.
    Wait,
}

/// The part of a lease record whose change proves the holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    acquire_time: Option<MicroTime>,
    transitions: Option<i32>,
}

/// Decides from the current lease, our identity and how long its record has been unchanged.
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    unchanged_for: std::time::Duration,
    default_duration: std::time::Duration,
) -> LeaseAction {
    let Some(lease) = lease else {
        return LeaseAction::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    match holder {
        Some(h) if h == identity => LeaseAction::Renew,
        None => LeaseAction::Acquire,
        Some(_) => {
            let duration = spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(default_duration, std::time::Duration::from_secs);
            if unchanged_for >= duration {
                LeaseAction::Acquire
            } else {
                LeaseAction::Wait
            }
        }
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    opts: LeaderElectionOptions,
    observed: Option<(Record, Instant)>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("lease", &self.opts.lease)
            .field("identity", &self.opts.identity)
            .finish()
    }
}

fn record(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity,
        renew_time: spec.renew_time,
        acquire_time: spec.acquire_time,
        transitions: spec.lease_transitions,
    }
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, opts: LeaderElectionOptions) -> Self {
        Self {
            api,
            opts,
            observed: None,
        }
    }

    /// Blocks until this replica holds the lease.
    pub async fn acquire(&mut self) -> Result<(), Error> {
        loop {
            match self.step().await {
                Ok(true) => {
                    tracing::info!(lease = %self.opts.lease, identity = %self.opts.identity, "acquired the leader lease");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.opts.lease, error = %e, "leader election attempt failed")
                }
            }
            tokio::time::sleep(self.opts.retry_period).await;
        }
    }

    /// Renews until the lease is lost; returns the reason.
    pub async fn keep_leading(mut self) -> Error {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.opts.retry_period).await;
            match self.step().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => {
                    return Error::LeaseLost(format!("{} is now held by another replica", self.opts.lease));
                }
                Err(e) => {
                    tracing::warn!(lease = %self.opts.lease, error = %e, "renewing the leader lease failed")
                }
            }
            if last_renewal.elapsed() >= self.opts.renew_deadline {
                return Error::LeaseLost(format!(
                    "{} not renewed within {:?}",
                    self.opts.lease, self.opts.renew_deadline
                ));
            }
        }
    }

    /// One read-decide-write round; true when we hold the lease afterwards.
    async fn step(&mut self) -> Result<bool, Error> {
        let now = Instant::now();
        let lease = self.api.get_opt(&self.opts.lease.name).await?;
        if let Some(l) = &lease {
            let rec = record(l);
            if self.observed.as_ref().is_none_or(|(seen, _)| *seen != rec) {
                self.observed = Some((rec, now));
            }
        }
        let unchanged_for = self
            .observed
            .as_ref()
            .map_or(std::time::Duration::ZERO, |(_, at)| now.duration_since(*at));
        let action = decide(
            lease.as_ref(),
            &self.opts.identity,
            unchanged_for,
            self.opts.lease_duration,
        );
        let stamp = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.opts.lease_duration.as_secs()).unwrap_or(15);
        let written = match (action, lease) {
            (LeaseAction::Wait, _) => return Ok(false),
            (LeaseAction::Create, _) | (_, None) => {
                let fresh = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.opts.lease.name.clone()),
                        namespace: Some(self.opts.lease.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.opts.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &fresh).await
            }
            (LeaseAction::Acquire, Some(mut l)) => {
                let spec = l.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(self.opts.identity.clone());
                spec.lease_duration_seconds = Some(duration_secs);
                spec.acquire_time = Some(stamp.clone());
                spec.renew_time = Some(stamp);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                self.api
                    .replace(&self.opts.lease.name, &PostParams::default(), &l)
                    .await
            }
            (LeaseAction::Renew, Some(mut l)) => {
                let spec = l.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(stamp);
                spec.lease_duration_seconds = Some(duration_secs);
                self.api
                    .replace(&self.opts.lease.name, &PostParams::default(), &l)
                    .await
            }
        };
        match written {
            Ok(l) => {
                self.observed = Some((record(&l), Instant::now()));
                Ok(true)
            }
            // Somebody else wrote first (409 on replace, AlreadyExists on create): not ours this round.
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
