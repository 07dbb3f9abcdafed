//! Leader election through a `coordination.k8s.io/v1` Lease, with client-go's semantics.
//!
//! kube 5 (kube-runtime included) has no lease lock, so this is a small one. The holder renews
//! the Lease every retry period; a candidate takes it over when its record (holder, renew time,
//! transitions) has not changed for the Lease's own `leaseDurationSeconds` as measured on the
//! candidate's clock (not by comparing `renewTime` with the local time, so clock skew between
//! nodes cannot hand the Lease to two replicas), or at once when it is released. Writes carry
//! the `resourceVersion` they read, so two candidates racing for the same Lease cannot both win:
//! the API server refuses the second with a conflict. A holder that cannot renew within the renew
//! deadline stops leading before another candidate may take over (`renewDeadline <
//! leaseDuration`).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// Where the Lease is and how it is timed (the `--leader-election-*` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a Lease that is not renewed stays with its holder.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it stops leading.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Refuses timings under which two replicas could lead at once or a leader could never
    /// renew in time (client-go's rules).
    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.namespace.is_empty() || self.name.is_empty() || self.identity.is_empty() {
            return bad(format!(
                "leader election needs a Lease namespace, a Lease name and an identity (got namespace {:?}, name {:?}, identity {:?}); set --leader-election-namespace or POD_NAMESPACE, --leader-election-lease-name, and POD_NAME",
                self.namespace, self.name, self.identity
            ));
        }
        if self.lease_duration.as_secs() < 1 || self.lease_duration.subsec_nanos() != 0 {
            return bad(format!(
                "--leader-election-lease-duration {:?} must be a whole number of seconds, at least 1s (the Lease stores seconds)",
                self.lease_duration
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return bad(format!(
                "--leader-election-renew-deadline ({:?}) must be shorter than --leader-election-lease-duration ({:?}): a leader must give up before others may take over",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return bad(format!(
                "--leader-election-renew-deadline ({:?}) must exceed 1.2 × --leader-election-retry-period ({:?}), or a leader could not retry a failed renewal in time",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.retry_period.is_zero() {
            return bad("--leader-election-retry-period must be above zero".into());
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What one attempt to acquire or renew found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This replica now holds the Lease (created, released before, or taken over after expiry).
    Acquired,
    /// This replica held the Lease and renewed it.
    Renewed,
    /// Another replica holds the Lease and it has not expired.
    HeldBy(String),
    /// Another replica wrote the Lease between our read and our write.
    Conflict,
}

/// The Lease record as last seen, and when it was first seen that way (local clock).
#[derive(Debug)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
    duration_seconds: Option<i32>,
    since: Instant,
}

/// Acquires, renews and releases one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Option<Observed>,
}

impl LeaderElector {
    /// An elector for the Lease in `settings` (checked with [`LeaseSettings::check`]).
    pub fn new(client: Client, settings: LeaseSettings) -> Result<Self> {
        settings.check()?;
        Ok(Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        })
    }

    /// The settings this elector runs with.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// One round: create the Lease if absent, renew it if ours, take it if released or expired.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt> {
        let name = self.settings.name.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("get Lease {}", self.settings.lease_ref()), e))?
        else {
            let now = MicroTime(Timestamp::now());
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.settings.identity.clone()),
                    lease_duration_seconds: Some(self.settings.lease_duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Acquired)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(Error::kube(
                    format!("create Lease {}", self.settings.lease_ref()),
                    e,
                )),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let now = MicroTime(Timestamp::now());
        let attempt = match holder {
            Some(h) if h == self.settings.identity => Attempt::Renewed,
            None => Attempt::Acquired,
            Some(h) if !self.observed_expired() => return Ok(Attempt::HeldBy(h)),
            Some(_) => Attempt::Acquired,
        };
        if attempt == Attempt::Acquired {
            spec.holder_identity = Some(self.settings.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.settings.lease_duration_seconds());
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(attempt)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(Error::kube(
                format!("update Lease {}", self.settings.lease_ref()),
                e,
            )),
        }
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once instead of after the
    /// lease duration. Does nothing when another replica holds it.
    pub async fn release(&mut self) -> Result<bool> {
        let name = self.settings.name.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("get Lease {}", self.settings.lease_ref()), e))?
        else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await
            .map_err(|e| Error::kube(format!("release Lease {}", self.settings.lease_ref()), e))?;
        Ok(true)
    }

    /// Tries every retry period until this replica holds the Lease (`Ok(true)`) or `shutdown`
    /// fires (`Ok(false)`). API errors are logged and retried.
    pub async fn acquire(&mut self, shutdown: &Shutdown) -> bool {
        let mut last_holder: Option<String> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Acquired | Attempt::Renewed) => {
                    tracing::info!(lease = %self.settings.lease_ref(), identity = %self.settings.identity, "acquired the leader-election Lease");
                    return true;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.settings.lease_ref(), %holder, "another replica leads; standing by");
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::Conflict) => {
                    tracing::debug!(lease = %self.settings.lease_ref(), "lost a race for the Lease")
                }
                Err(e) => {
                    tracing::warn!(lease = %self.settings.lease_ref(), error = %e, "could not acquire the Lease; retrying")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.retry_period) => {}
                () = shutdown.wait() => return false,
            }
        }
    }

    /// Renews the Lease every retry period for as long as possible; returns why leadership
    /// ended: another holder took the Lease, or no renewal succeeded within the renew deadline.
    pub async fn hold(&mut self) -> Error {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            let left = self
                .settings
                .renew_deadline
                .saturating_sub(last_renewal.elapsed());
            let outcome = tokio::time::timeout(left, self.try_acquire_or_renew()).await;
            match outcome {
                Ok(Ok(Attempt::Renewed | Attempt::Acquired)) => last_renewal = Instant::now(),
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    return Error::LeaseLost {
                        lease: self.settings.lease_ref(),
                        reason: format!("{holder} holds it now"),
                    }
                }
                Ok(Ok(Attempt::Conflict)) => {
                    tracing::warn!(lease = %self.settings.lease_ref(), "conflict renewing the Lease; retrying")
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.settings.lease_ref(), error = %e, "could not renew the Lease; retrying")
                }
                Err(_) => {}
            }
            if last_renewal.elapsed() >= self.settings.renew_deadline {
                return Error::LeaseLost {
                    lease: self.settings.lease_ref(),
                    reason: format!(
                        "not renewed within the renew deadline ({:?})",
                        self.settings.renew_deadline
                    ),
                };
            }
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let same = self.observed.as_ref().is_some_and(|o| {
            o.holder == spec.holder_identity
                && o.renew_time == spec.renew_time
                && o.transitions == spec.lease_transitions
                && o.duration_seconds == spec.lease_duration_seconds
        });
        if !same {
            self.observed = Some(Observed {
                holder: spec.holder_identity,
                renew_time: spec.renew_time,
                transitions: spec.lease_transitions,
                duration_seconds: spec.lease_duration_seconds,
                since: Instant::now(),
            });
        }
    }

    /// Whether the last observed record has stood unchanged for its lease duration.
    fn observed_expired(&self) -> bool {
        self.observed.as_ref().is_some_and(|o| {
            let seconds = o
                .duration_seconds
                .unwrap_or(self.settings.lease_duration_seconds())
                .max(0);
            o.since.elapsed() >= Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            namespace: "ryzanstein-system".into(),
            name: "ryzanstein-operator".into(),
            identity: "op-1".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    #[test]
    fn the_chart_defaults_are_accepted() {
        settings().check().unwrap();
    }

    #[test]
    fn timings_that_allow_two_leaders_are_refused() {
        let cases = [
            (
                LeaseSettings {
                    renew_deadline: Duration::from_secs(15),
                    ..settings()
                },
                "shorter than",
            ),
            (
                LeaseSettings {
                    retry_period: Duration::from_secs(9),
                    ..settings()
                },
                "1.2 ×",
            ),
            (
                LeaseSettings {
                    lease_duration: Duration::from_millis(15_500),
                    ..settings()
                },
                "whole number of seconds",
            ),
            (
                LeaseSettings {
                    identity: String::new(),
                    ..settings()
                },
                "POD_NAME",
            ),
        ];
        for (s, needle) in cases {
            let err = s.check().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
