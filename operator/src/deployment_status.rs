//! The pure part of the ModelDeployment controller: how many replica groups it wants, what its
//! workloads report, its five conditions, and the events their changes deserve.
//!
//! Conditions (always all five, in this order, each with `observedGeneration` and a
//! `lastTransitionTime` kept while its status stays):
//! - `Ready`: every replica group the deployment may run (after the quota) is ready; `True`
//!   with `ScaledToZero` when it wants none.
//! - `Progressing`: the workloads are still converging on the current spec (`ReplicasUpdating`),
//!   `False` with `ReplicasStable` once they have.
//! - `Degraded`: a workload reports that pods cannot be created (for example a namespace
//!   ResourceQuota refused them: the Deployment's `ReplicaFailure` condition), that a rollout
//!   exceeded its progress deadline, or that the spec cannot be rendered.
//! - `QuotaExceeded`: the tenant's quota or the pool's capacity capped the replicas (reason and
//!   message from [`crate::render::quota::cap_replicas`]).
//! - `PoolReady`: the pool exists, admits the namespace, and has matching nodes.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::deployment::condition;
use crate::crd::pool::condition as pool_condition;
use crate::crd::{Condition, InferencePool, ModelDeployment};
use crate::render::{NotAdmitted, QuotaDecision, TenantRef};

/// Condition reasons the controller writes (besides the quota's `CapReason`s, the pool's own
/// `NoMatchingNodes` and the workloads' failure reasons such as `FailedCreate`).
pub mod reason {
    /// `spec.poolRef` names no InferencePool.
    pub const POOL_NOT_FOUND: &str = "PoolNotFound";
    /// The pool admits the namespace (as a listed tenant or an unlisted namespace).
    pub const TENANT_ADMITTED: &str = "TenantAdmitted";
    /// The quota and capacity allow every desired replica group.
    pub const WITHIN_QUOTA: &str = "WithinQuota";
    /// The quota was not evaluated (no pool, namespace not admitted, spec invalid).
    pub const NOT_EVALUATED: &str = "NotEvaluated";
    /// A workload reports a `ReplicaFailure` condition without a reason of its own.
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    /// A Deployment rollout did not finish within its progress deadline.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// Nothing is wrong.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// The workloads are converging on the current spec.
    pub const REPLICAS_UPDATING: &str = "ReplicasUpdating";
    /// The workloads run the current spec with every replica group ready.
    pub const REPLICAS_STABLE: &str = "ReplicasStable";
    /// Every replica group is ready.
    pub const REPLICAS_READY: &str = "ReplicasReady";
    /// Some replica groups are not ready yet.
    pub const REPLICAS_NOT_READY: &str = "ReplicasNotReady";
    /// The deployment wants no replicas (autoscaling down to `minReplicas: 0`, or `replicas: 0`).
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// The quota allows no replica group at all.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// The spec (or the pool's quota quantities) cannot be rendered into pods.
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

/// Replica groups wanted before the quota: `spec.replicas` when autoscaling is off; otherwise
/// the autoscaler's `status.desiredReplicas` (`minReplicas` until it has decided), clamped to
/// `[minReplicas, maxReplicas]`.
pub fn desired_replicas(md: &ModelDeployment) -> i32 {
    match md.spec.autoscaling.as_ref().filter(|a| a.enabled) {
        None => md.spec.replicas.max(0),
        Some(a) => {
            let min = a.min_replicas.max(0);
            let max = a.max_replicas.max(min);
            md.status
                .as_ref()
                .and_then(|s| s.desired_replicas)
                .unwrap_or(min)
                .clamp(min, max)
        }
    }
}

/// Why pods are not being created or rolled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Condition reason (`FailedCreate`, `ProgressDeadlineExceeded`, ...).
    pub reason: String,
    /// What the workload said, prefixed with the workload.
    pub message: String,
}

/// What the workloads report, in replica groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Groups whose pods exist (for shards: the fewest pods of any shard).
    pub replicas: i32,
    /// Groups ready.
    pub ready_replicas: i32,
    /// Groups running the current pod template.
    pub updated_replicas: i32,
    /// Every workload's controller has seen its latest spec.
    pub current: bool,
    /// The first failure a workload reports.
    pub failure: Option<Failure>,
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            replicas: 0,
            ready_replicas: 0,
            updated_replicas: 0,
            current: true,
            failure: None,
        }
    }
}

fn replica_failure(
    kind: &str,
    name: &str,
    conditions: impl IntoIterator<Item = (String, String, Option<String>, Option<String>)>,
) -> Option<Failure> {
    let mut deadline = None;
    for (type_, status, reason, message) in conditions {
        let message = message.unwrap_or_default();
        if type_ == "ReplicaFailure" && status == "True" {
            return Some(Failure {
                reason: reason
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| reason::REPLICA_FAILURE.to_owned()),
                message: format!("{kind} {name}: {message}"),
            });
        }
        if type_ == "Progressing"
            && status == "False"
            && reason.as_deref() == Some(reason::PROGRESS_DEADLINE_EXCEEDED)
        {
            deadline = Some(Failure {
                reason: reason::PROGRESS_DEADLINE_EXCEEDED.to_owned(),
                message: format!("{kind} {name}: {message}"),
            });
        }
    }
    deadline
}

/// What a Deployment (one shard) reports.
pub fn observe_deployment(d: &Deployment) -> Observed {
    let name = d.metadata.name.clone().unwrap_or_default();
    let Some(st) = &d.status else {
        return Observed {
            current: d.metadata.generation.is_none(),
            ..Observed::default()
        };
    };
    Observed {
        replicas: st.replicas.unwrap_or(0),
        ready_replicas: st.ready_replicas.unwrap_or(0),
        updated_replicas: st.updated_replicas.unwrap_or(0),
        current: st.observed_generation >= d.metadata.generation,
        failure: replica_failure(
            "Deployment",
            &name,
            st.conditions.iter().flatten().map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                )
            }),
        ),
    }
}

/// What the StatefulSets of a sharded deployment report: a replica group counts once every
/// shard has (is ready with, is updated with) its pod, so each number is the smallest over the
/// shards.
pub fn observe_stateful_sets(sets: &[StatefulSet]) -> Observed {
    if sets.is_empty() {
        return Observed::default();
    }
    let mut o = Observed {
        replicas: i32::MAX,
        ready_replicas: i32::MAX,
        updated_replicas: i32::MAX,
        current: true,
        failure: None,
    };
    for s in sets {
        let name = s.metadata.name.clone().unwrap_or_default();
        let st = s.status.clone().unwrap_or_default();
        o.replicas = o.replicas.min(st.replicas);
        o.ready_replicas = o.ready_replicas.min(st.ready_replicas.unwrap_or(0));
        o.updated_replicas = o.updated_replicas.min(st.updated_replicas.unwrap_or(0));
        o.current &= s.status.is_some() && st.observed_generation >= s.metadata.generation;
        if o.failure.is_none() {
            o.failure = replica_failure(
                "StatefulSet",
                &name,
                st.conditions.iter().flatten().map(|c| {
                    (
                        c.type_.clone(),
                        c.status.clone(),
                        c.reason.clone(),
                        c.message.clone(),
                    )
                }),
            );
        }
    }
    o
}

/// Whether a StatefulSet has fewer pods than its spec asks for, as its controller last saw
/// it: then its `FailedCreate` events say why (the StatefulSet controller reports pod-creation
/// failures only as events, not as a status condition).
pub fn missing_pods(s: &StatefulSet) -> bool {
    let wanted = s.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1);
    s.status
        .as_ref()
        .is_some_and(|st| st.observed_generation >= s.metadata.generation && st.replicas < wanted)
}

/// The newest `FailedCreate` event of StatefulSet `name` among `events` (core/v1 Events the
/// StatefulSet controller wrote), as a failure.
pub fn failed_create(name: &str, events: &[k8s_openapi::api::core::v1::Event]) -> Option<Failure> {
    let when = |e: &k8s_openapi::api::core::v1::Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    events
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("FailedCreate")
                && e.involved_object.kind.as_deref() == Some("StatefulSet")
                && e.involved_object.name.as_deref() == Some(name)
        })
        .max_by_key(|e| when(e))
        .map(|e| Failure {
            reason: "FailedCreate".into(),
            message: format!(
                "StatefulSet {name}: {}",
                e.message.clone().unwrap_or_default()
            ),
        })
}

/// Where the reconcile got to.
#[derive(Clone, Debug)]
pub enum Outcome<'a> {
    /// `spec.poolRef` names no pool; nothing is created.
    PoolNotFound {
        /// The missing pool's name.
        pool: &'a str,
    },
    /// The pool does not admit the namespace; nothing is created.
    NotAdmitted(&'a NotAdmitted),
    /// The spec (or the pool's quota) cannot be rendered; the message says why.
    Invalid {
        /// The error, for people.
        message: String,
    },
    /// Children rendered and applied.
    Running {
        /// The pool.
        pool: &'a InferencePool,
        /// The namespace's tenant in it.
        tenant: &'a TenantRef,
        /// Replica groups wanted before the quota.
        desired: i32,
        /// The quota's verdict (`replicas` is what was applied).
        decision: &'a QuotaDecision,
        /// What the workloads report.
        observed: &'a Observed,
    },
}

struct Cond {
    type_: &'static str,
    status: &'static str,
    reason: String,
    message: String,
}

fn cond(type_: &'static str, status: &'static str, reason: &str, message: String) -> Cond {
    Cond {
        type_,
        status,
        reason: reason.to_owned(),
        message,
    }
}

fn plural(n: i32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The five conditions of `md` for `outcome` at `now`; a condition whose status is unchanged
/// from `md.status` keeps its `lastTransitionTime`.
pub fn conditions(md: &ModelDeployment, outcome: &Outcome<'_>, now: Timestamp) -> Vec<Condition> {
    let namespace = md.metadata.namespace.as_deref().unwrap_or_default();
    let conds = match outcome {
        Outcome::PoolNotFound { pool } => {
            let msg = format!(
                "InferencePool {pool} does not exist; nothing runs until it is created (or spec.poolRef names an existing pool)"
            );
            vec![
                cond(
                    condition::READY,
                    "False",
                    reason::POOL_NOT_FOUND,
                    msg.clone(),
                ),
                cond(
                    condition::PROGRESSING,
                    "False",
                    reason::POOL_NOT_FOUND,
                    msg.clone(),
                ),
                cond(
                    condition::DEGRADED,
                    "Unknown",
                    reason::POOL_NOT_FOUND,
                    msg.clone(),
                ),
                cond(
                    condition::QUOTA_EXCEEDED,
                    "Unknown",
                    reason::NOT_EVALUATED,
                    format!("no quota applies without the pool: {msg}"),
                ),
                cond(condition::POOL_READY, "False", reason::POOL_NOT_FOUND, msg),
            ]
        }
        Outcome::NotAdmitted(na) => {
            let msg = na.to_string();
            vec![
                cond(condition::READY, "False", NotAdmitted::REASON, msg.clone()),
                cond(
                    condition::PROGRESSING,
                    "False",
                    NotAdmitted::REASON,
                    msg.clone(),
                ),
                cond(
                    condition::DEGRADED,
                    "Unknown",
                    NotAdmitted::REASON,
                    msg.clone(),
                ),
                cond(
                    condition::QUOTA_EXCEEDED,
                    "Unknown",
                    reason::NOT_EVALUATED,
                    format!("no quota applies to a namespace the pool does not admit: {msg}"),
                ),
                cond(condition::POOL_READY, "False", NotAdmitted::REASON, msg),
            ]
        }
        Outcome::Invalid { message } => vec![
            cond(
                condition::READY,
                "False",
                reason::INVALID_SPEC,
                message.clone(),
            ),
            cond(
                condition::PROGRESSING,
                "False",
                reason::INVALID_SPEC,
                message.clone(),
            ),
            cond(
                condition::DEGRADED,
                "True",
                reason::INVALID_SPEC,
                message.clone(),
            ),
            cond(
                condition::QUOTA_EXCEEDED,
                "Unknown",
                reason::NOT_EVALUATED,
                format!("the quota is not evaluated for a spec that cannot be rendered: {message}"),
            ),
            cond(
                condition::POOL_READY,
                "True",
                reason::TENANT_ADMITTED,
                format!(
                    "the pool {} exists and admits namespace {namespace}",
                    md.spec.pool_ref
                ),
            ),
        ],
        Outcome::Running {
            pool,
            tenant,
            desired,
            decision,
            observed,
        } => running(md, pool, tenant, *desired, decision, observed),
    };
    let previous = md
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    conds
        .into_iter()
        .map(|c| {
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: c.type_.to_owned(),
                status: c.status.to_owned(),
                reason: c.reason,
                message: c.message,
                last_transition_time,
                observed_generation: md.metadata.generation,
            }
        })
        .collect()
}

fn running(
    md: &ModelDeployment,
    pool: &InferencePool,
    tenant: &TenantRef,
    desired: i32,
    decision: &QuotaDecision,
    observed: &Observed,
) -> Vec<Cond> {
    let namespace = md.metadata.namespace.as_deref().unwrap_or_default();
    let pool_name = pool.metadata.name.as_deref().unwrap_or_default();
    let target = decision.replicas;
    let ignored = match md.spec.autoscaling.as_ref().filter(|a| a.enabled) {
        Some(_) if md.spec.replicas != desired => format!(
            "; spec.replicas ({}) is ignored while autoscaling is enabled",
            md.spec.replicas
        ),
        _ => String::new(),
    };

    let ready = if target == 0 && desired == 0 {
        cond(
            condition::READY,
            "True",
            reason::SCALED_TO_ZERO,
            format!("no replica groups wanted{ignored}"),
        )
    } else if target == 0 {
        let why = decision
            .cap
            .as_ref()
            .map(|c| c.message.clone())
            .unwrap_or_default();
        cond(
            condition::READY,
            "False",
            reason::QUOTA_EXCEEDED,
            format!("the quota allows no replica group: {why}"),
        )
    } else if observed.ready_replicas >= target {
        cond(
            condition::READY,
            "True",
            reason::REPLICAS_READY,
            format!(
                "{} of {target} replica group{} ready{ignored}",
                observed.ready_replicas,
                plural(target)
            ),
        )
    } else {
        cond(
            condition::READY,
            "False",
            reason::REPLICAS_NOT_READY,
            format!(
                "{} of {target} replica group{} ready{ignored}",
                observed.ready_replicas,
                plural(target)
            ),
        )
    };

    let settled = observed.current
        && observed.replicas == target
        && observed.updated_replicas >= target
        && observed.ready_replicas >= target;
    let progressing = if settled {
        cond(
            condition::PROGRESSING,
            "False",
            reason::REPLICAS_STABLE,
            format!(
                "{target} replica group{} run the current spec",
                plural(target)
            ),
        )
    } else {
        cond(
            condition::PROGRESSING,
            "True",
            reason::REPLICAS_UPDATING,
            format!(
                "converging on {target} replica group{}: {} exist, {} updated, {} ready",
                plural(target),
                observed.replicas,
                observed.updated_replicas,
                observed.ready_replicas
            ),
        )
    };

    let degraded = match &observed.failure {
        Some(f) => cond(condition::DEGRADED, "True", &f.reason, f.message.clone()),
        None => cond(
            condition::DEGRADED,
            "False",
            reason::AS_EXPECTED,
            "the workloads report no pod creation failure".to_owned(),
        ),
    };

    let quota = match &decision.cap {
        Some(cap) => cond(
            condition::QUOTA_EXCEEDED,
            "True",
            cap.reason.as_str(),
            cap.message.clone(),
        ),
        None => cond(
            condition::QUOTA_EXCEEDED,
            "False",
            reason::WITHIN_QUOTA,
            format!(
                "{desired} replica group{} fit the quota of {} and the capacity of pool {pool_name}",
                plural(desired),
                tenant.display_name()
            ),
        ),
    };

    let pool_not_ready = pool.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == pool_condition::READY && c.status == "False")
    });
    let pool_ready = match pool_not_ready {
        Some(c) => cond(
            condition::POOL_READY,
            "False",
            &c.reason,
            format!("InferencePool {pool_name}: {}", c.message),
        ),
        None => cond(
            condition::POOL_READY,
            "True",
            reason::TENANT_ADMITTED,
            if tenant.listed {
                format!(
                    "namespace {namespace} belongs to tenant {} of InferencePool {pool_name}",
                    tenant.name
                )
            } else {
                format!(
                    "InferencePool {pool_name} admits namespace {namespace} as an unlisted namespace (defaultQuota)"
                )
            },
        ),
    };
    vec![ready, progressing, degraded, quota, pool_ready]
}

/// An event a condition change deserves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionEvent {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// The event's reason.
    pub reason: String,
    /// What the operator was doing (`CapReplicas`, `ResolvePool`, `ObserveWorkloads`).
    pub action: &'static str,
    /// The condition's message.
    pub note: String,
}

/// Events for the decisions `current` records relative to `previous`: a quota cap (Warning,
/// again when its message changes) and its lifting; the pool missing, not admitting the
/// namespace or without nodes (Warning) and recovering; a workload failure (Warning) and its
/// end. Unchanged conditions publish nothing.
pub fn condition_events(previous: &[Condition], current: &[Condition]) -> Vec<ConditionEvent> {
    let find = |list: &[Condition], t: &str| list.iter().find(|c| c.type_ == t).cloned();
    let mut events = Vec::new();
    for (type_, bad, action, recovered) in [
        (
            condition::POOL_READY,
            "False",
            "ResolvePool",
            reason::TENANT_ADMITTED,
        ),
        (
            condition::QUOTA_EXCEEDED,
            "True",
            "CapReplicas",
            reason::WITHIN_QUOTA,
        ),
        (
            condition::DEGRADED,
            "True",
            "ObserveWorkloads",
            reason::AS_EXPECTED,
        ),
    ] {
        let Some(now) = find(current, type_) else {
            continue;
        };
        let before = find(previous, type_);
        let was_bad = before.as_ref().is_some_and(|b| b.status == bad);
        if now.status == bad {
            let same = before.as_ref().is_some_and(|b| {
                b.status == bad && b.reason == now.reason && b.message == now.message
            });
            if !same {
                events.push(ConditionEvent {
                    warning: true,
                    reason: now.reason.clone(),
                    action,
                    note: now.message.clone(),
                });
            }
        } else if was_bad && now.reason == recovered {
            events.push(ConditionEvent {
                warning: false,
                reason: recovered.to_owned(),
                action,
                note: now.message.clone(),
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ModelDeploymentStatus;
    use crate::render::{CapReason, QuotaCap};
    use k8s_openapi::api::apps::v1::{
        DeploymentCondition, DeploymentStatus, StatefulSetCondition, StatefulSetStatus,
    };
    use serde_json::json;

    fn md(extra: serde_json::Value) -> ModelDeployment {
        let mut v = json!({
            "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "smollm2", "namespace": "team-a", "generation": 4},
            "spec": {"model": {"source": "bundled://smollm2-135m-instruct"}, "poolRef": "cpu", "replicas": 3},
        });
        if let serde_json::Value::Object(m) = extra {
            for (k, val) in m {
                if k == "spec" {
                    for (sk, sv) in val.as_object().unwrap() {
                        v["spec"][sk] = sv.clone();
                    }
                } else {
                    v[k] = val;
                }
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn pool(status: Option<serde_json::Value>) -> InferencePool {
        let mut v = json!({
            "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "InferencePool",
            "metadata": {"name": "cpu"},
            "spec": {"hardware": {"class": "CPU"}, "tenants": [{"name": "team-a", "namespaces": ["team-a"]}]},
        });
        if let Some(s) = status {
            v["status"] = s;
        }
        serde_json::from_value(v).unwrap()
    }

    fn tenant() -> TenantRef {
        TenantRef {
            name: "team-a".into(),
            quota: None,
            listed: true,
        }
    }

    fn observed(replicas: i32, ready: i32) -> Observed {
        Observed {
            replicas,
            ready_replicas: ready,
            updated_replicas: replicas,
            current: true,
            failure: None,
        }
    }

    fn get<'a>(cs: &'a [Condition], t: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == t).unwrap()
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn desired_follows_spec_or_the_clamped_autoscaler() {
        assert_eq!(desired_replicas(&md(json!({}))), 3);
        let auto = json!({"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}});
        // No decision yet: minReplicas.
        assert_eq!(desired_replicas(&md(auto.clone())), 2);
        let mut m = md(auto);
        m.status = Some(ModelDeploymentStatus {
            desired_replicas: Some(9),
            ..Default::default()
        });
        assert_eq!(desired_replicas(&m), 5);
        m.status.as_mut().unwrap().desired_replicas = Some(0);
        assert_eq!(desired_replicas(&m), 2);
        m.status.as_mut().unwrap().desired_replicas = Some(4);
        assert_eq!(desired_replicas(&m), 4);
        // Disabled autoscaling: spec.replicas again.
        m.spec.autoscaling.as_mut().unwrap().enabled = false;
        assert_eq!(desired_replicas(&m), 3);
    }

    #[test]
    fn a_replica_failure_condition_is_the_degraded_message() {
        let d = Deployment {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("smollm2".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: None,
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(1),
                ready_replicas: Some(1),
                updated_replicas: Some(1),
                conditions: Some(vec![DeploymentCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    reason: Some("FailedCreate".into()),
                    message: Some(
                        "pods \"smollm2-x\" is forbidden: exceeded quota: compute".into(),
                    ),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        let o = observe_deployment(&d);
        assert_eq!((o.replicas, o.ready_replicas, o.current), (1, 1, true));
        let f = o.failure.unwrap();
        assert_eq!(f.reason, "FailedCreate");
        assert_eq!(
            f.message,
            "Deployment smollm2: pods \"smollm2-x\" is forbidden: exceeded quota: compute"
        );
        // A controller that has not seen the latest spec is not current.
        let mut stale = d.clone();
        stale.metadata.generation = Some(3);
        assert!(!observe_deployment(&stale).current);
        // A fresh Deployment without status: nothing yet, not current.
        let mut fresh = d;
        fresh.status = None;
        assert_eq!(observe_deployment(&fresh).replicas, 0);
        assert!(!observe_deployment(&fresh).current);
    }

    #[test]
    fn a_group_of_shards_counts_once_every_shard_has_its_pod() {
        let set = |name: &str, replicas: i32, ready: i32, failure: bool| StatefulSet {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: None,
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas,
                ready_replicas: Some(ready),
                updated_replicas: Some(replicas),
                conditions: failure.then(|| {
                    vec![StatefulSetCondition {
                        type_: "ReplicaFailure".into(),
                        status: "True".into(),
                        reason: None,
                        message: Some("exceeded quota".into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        };
        let o =
            observe_stateful_sets(&[set("m-shard-0", 3, 3, false), set("m-shard-1", 2, 1, true)]);
        assert_eq!(
            (o.replicas, o.ready_replicas, o.updated_replicas),
            (2, 1, 2)
        );
        assert_eq!(
            o.failure,
            Some(Failure {
                reason: "ReplicaFailure".into(),
                message: "StatefulSet m-shard-1: exceeded quota".into()
            })
        );
    }

    #[test]
    fn running_conditions_and_kept_transition_times() {
        let m = md(json!({}));
        let p = pool(None);
        let ten = tenant();
        let decision = QuotaDecision {
            replicas: 3,
            cap: None,
        };
        let obs = observed(1, 1);
        let out = Outcome::Running {
            pool: &p,
            tenant: &ten,
            desired: 3,
            decision: &decision,
            observed: &obs,
        };
        let cs = conditions(&m, &out, t(100));
        let types: Vec<&str> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                "Ready",
                "Progressing",
                "Degraded",
                "QuotaExceeded",
                "PoolReady"
            ]
        );
        assert!(cs.iter().all(|c| c.observed_generation == Some(4)));
        let ready = get(&cs, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ReplicasNotReady")
        );
        assert_eq!(ready.message, "1 of 3 replica groups ready");
        assert_eq!(get(&cs, "Progressing").status, "True");
        assert_eq!(get(&cs, "Degraded").status, "False");
        assert_eq!(get(&cs, "QuotaExceeded").reason, "WithinQuota");
        let pr = get(&cs, "PoolReady");
        assert_eq!(
            (pr.status.as_str(), pr.reason.as_str()),
            ("True", "TenantAdmitted")
        );
        assert!(pr.message.contains("tenant team-a"), "{}", pr.message);

        // Later, all ready: Ready and Progressing transition, the others keep their times.
        let mut m2 = m.clone();
        m2.status = Some(ModelDeploymentStatus {
            conditions: cs.clone(),
            ..Default::default()
        });
        let obs = observed(3, 3);
        let out = Outcome::Running {
            pool: &p,
            tenant: &ten,
            desired: 3,
            decision: &decision,
            observed: &obs,
        };
        let cs2 = conditions(&m2, &out, t(200));
        assert_eq!(get(&cs2, "Ready").status, "True");
        assert_eq!(get(&cs2, "Ready").last_transition_time, Time(t(200)));
        assert_eq!(get(&cs2, "Progressing").status, "False");
        assert_eq!(get(&cs2, "Progressing").reason, "ReplicasStable");
        assert_eq!(get(&cs2, "Degraded").last_transition_time, Time(t(100)));
        assert_eq!(get(&cs2, "PoolReady").last_transition_time, Time(t(100)));
    }

    #[test]
    fn cap_failure_pool_without_nodes_and_scale_to_zero() {
        let m = md(json!({"spec": {"autoscaling": {"minReplicas": 0, "maxReplicas": 4}}}));
        let p = pool(Some(json!({"conditions": [{
            "type": "Ready", "status": "False", "reason": "NoMatchingNodes",
            "message": "no schedulable node matches", "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]})));
        let ten = tenant();
        let capped = QuotaDecision {
            replicas: 0,
            cap: Some(QuotaCap {
                reason: CapReason::TenantMaxCpu,
                message: "team-a may request 4 CPUs in pool cpu; ...".into(),
            }),
        };
        let mut obs = observed(0, 0);
        obs.failure = Some(Failure {
            reason: "FailedCreate".into(),
            message: "Deployment smollm2: exceeded quota".into(),
        });
        let out = Outcome::Running {
            pool: &p,
            tenant: &ten,
            desired: 2,
            decision: &capped,
            observed: &obs,
        };
        let cs = conditions(&m, &out, t(1));
        let q = get(&cs, "QuotaExceeded");
        assert_eq!(
            (q.status.as_str(), q.reason.as_str()),
            ("True", "TenantMaxCPU")
        );
        assert_eq!(q.message, "team-a may request 4 CPUs in pool cpu; ...");
        let r = get(&cs, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "QuotaExceeded")
        );
        let d = get(&cs, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "FailedCreate")
        );
        assert_eq!(d.message, "Deployment smollm2: exceeded quota");
        let pr = get(&cs, "PoolReady");
        assert_eq!(
            (pr.status.as_str(), pr.reason.as_str()),
            ("False", "NoMatchingNodes")
        );
        assert_eq!(pr.message, "InferencePool cpu: no schedulable node matches");

        let zero = QuotaDecision {
            replicas: 0,
            cap: None,
        };
        let out = Outcome::Running {
            pool: &p,
            tenant: &ten,
            desired: 0,
            decision: &zero,
            observed: &observed(0, 0),
        };
        let cs = conditions(&m, &out, t(1));
        let r = get(&cs, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("True", "ScaledToZero")
        );
        assert!(
            r.message
                .contains("spec.replicas (3) is ignored while autoscaling is enabled"),
            "{}",
            r.message
        );
        assert_eq!(get(&cs, "Progressing").status, "False");
    }

    #[test]
    fn pool_missing_not_admitted_and_invalid() {
        let m = md(json!({}));
        let cs = conditions(&m, &Outcome::PoolNotFound { pool: "cpu" }, t(1));
        let pr = get(&cs, "PoolReady");
        assert_eq!(
            (pr.status.as_str(), pr.reason.as_str()),
            ("False", "PoolNotFound")
        );
        assert!(pr.message.contains("InferencePool cpu does not exist"));
        assert_eq!(get(&cs, "Ready").status, "False");
        assert_eq!(get(&cs, "QuotaExceeded").status, "Unknown");

        let na = NotAdmitted {
            pool: "cpu".into(),
            namespace: "team-z".into(),
        };
        let cs = conditions(&m, &Outcome::NotAdmitted(&na), t(1));
        let pr = get(&cs, "PoolReady");
        assert_eq!(pr.reason, "NamespaceNotAdmitted");
        assert!(pr.message.contains("namespace team-z is not listed"));

        let cs = conditions(
            &m,
            &Outcome::Invalid {
                message: "resources.gpus is 1 but pool cpu is a CPU pool".into(),
            },
            t(1),
        );
        let d = get(&cs, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert_eq!(get(&cs, "PoolReady").status, "True");
    }

    fn c(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    #[test]
    fn events_on_decisions_not_on_repeats() {
        let capped = [c("QuotaExceeded", "True", "TenantMaxReplicas", "8 pods")];
        let e = condition_events(&[], &capped);
        assert_eq!(
            e,
            [ConditionEvent {
                warning: true,
                reason: "TenantMaxReplicas".into(),
                action: "CapReplicas",
                note: "8 pods".into()
            }]
        );
        // Same cap again: nothing; a different cap message: again.
        assert!(condition_events(&capped, &capped).is_empty());
        let other = [c("QuotaExceeded", "True", "TenantMaxReplicas", "9 pods")];
        assert_eq!(condition_events(&capped, &other).len(), 1);
        // Lifted: a Normal event.
        let lifted = [c("QuotaExceeded", "False", "WithinQuota", "fits")];
        let e = condition_events(&capped, &lifted);
        assert_eq!(e.len(), 1);
        assert!(!e[0].warning);
        assert_eq!(e[0].reason, "WithinQuota");
        // Within quota from the start: nothing.
        assert!(condition_events(&[], &lifted).is_empty());
        // Pool missing and a failure: two warnings.
        let bad = [
            c("PoolReady", "False", "PoolNotFound", "no pool"),
            c("Degraded", "True", "FailedCreate", "quota"),
        ];
        let e = condition_events(&[], &bad);
        assert_eq!(
            e.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["PoolNotFound", "FailedCreate"]
        );
        assert!(e.iter().all(|e| e.warning));
        // The pool disappears, then comes back (unknown quota does not count as lifted).
        let back = [
            c("PoolReady", "True", "TenantAdmitted", "ok"),
            c("Degraded", "False", "AsExpected", "ok"),
        ];
        let e = condition_events(&bad, &back);
        assert_eq!(
            e.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["TenantAdmitted", "AsExpected"]
        );
    }
}
