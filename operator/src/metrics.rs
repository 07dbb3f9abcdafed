//! The operator's Prometheus metrics, served on `/metrics` (OpenMetrics text).
//!
//! Names are the ones the chart's PrometheusRule alerts use (`charts/ryzanstein/README.md`,
//! "Metrics the alerts use"): `ryzanstein_operator_reconcile_total{result}`,
//! `ryzanstein_operator_reconcile_errors_total{reason}`,
//! `ryzanstein_operator_modeldeployment_condition{namespace,modeldeployment,condition,status}`,
//! `ryzanstein_operator_pool_matching_nodes{pool}`. Counters also carry the `controller` label.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::crd::Condition;
use crate::error::Error;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which controller a reconcile belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ControllerKind {
    /// The `ModelDeployment` controller.
    #[allow(non_camel_case_types)]
    modeldeployment,
    /// The `InferencePool` controller.
    #[allow(non_camel_case_types)]
    inferencepool,
}

/// How a reconcile ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReconcileResult {
    /// It did what it had to.
    #[allow(non_camel_case_types)]
    success,
    /// It returned an error (counted by reason in `reconcile_errors_total`).
    #[allow(non_camel_case_types)]
    error,
}

/// What the autoscaler decided for one ModelDeployment in one round.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum AutoscalerDecision {
    /// More replica groups.
    #[allow(non_camel_case_types)]
    scale_up,
    /// Fewer replica groups (after the scale-down delay).
    #[allow(non_camel_case_types)]
    scale_down,
    /// No change.
    #[allow(non_camel_case_types)]
    unchanged,
    /// Load asked for more than the quota or `maxReplicas` allows.
    #[allow(non_camel_case_types)]
    capped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: ControllerKind,
    result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: ControllerKind,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: ControllerKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    modeldeployment: String,
    condition: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: AutoscalerDecision,
}

const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

/// All of the operator's metrics and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Family<ControllerLabels, Histogram>,
    modeldeployment_condition: Family<ConditionLabels, Gauge>,
    pool_matching_nodes: Family<PoolLabels, Gauge>,
    autoscaler_decisions: Family<DecisionLabels, Counter>,
    leader: Gauge,
    /// Condition types published per (namespace, name), so a vanished condition or a deleted
    /// ModelDeployment takes its series with it.
    published_conditions: Mutex<BTreeMap<(String, String), BTreeSet<String>>>,
    /// Pools with a published gauge.
    published_pools: Mutex<BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `ryzanstein_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ryzanstein_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconcile",
            "Reconciles done, by controller and result",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by controller and reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(reconcile_histogram);
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took, by controller",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let modeldeployment_condition = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "modeldeployment_condition",
            "1 for a ModelDeployment condition's current status, 0 for the other statuses",
            modeldeployment_condition.clone(),
        );
        let pool_matching_nodes = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "pool_matching_nodes",
            "Nodes matching an InferencePool's hardware",
            pool_matching_nodes.clone(),
        );
        let autoscaler_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "autoscaler_decisions",
            "Autoscaler decisions, by kind",
            autoscaler_decisions.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader-election Lease (or runs without leader election)",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            modeldeployment_condition,
            pool_matching_nodes,
            autoscaler_decisions,
            leader,
            published_conditions: Mutex::default(),
            published_pools: Mutex::default(),
        }
    }

    /// Counts one reconcile of `controller` that took `elapsed` and ended with `outcome`.
    pub fn reconciled(
        &self,
        controller: ControllerKind,
        elapsed: Duration,
        outcome: Result<(), &Error>,
    ) {
        let result = match outcome {
            Ok(()) => ReconcileResult::success,
            Err(e) => {
                self.reconcile_errors
                    .get_or_create(&ErrorLabels {
                        controller,
                        reason: e.metric_label().to_owned(),
                    })
                    .inc();
                ReconcileResult::error
            }
        };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one autoscaler decision.
    pub fn autoscaler_decided(&self, decision: AutoscalerDecision) {
        self.autoscaler_decisions
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    /// Publishes a ModelDeployment's conditions (kube-state-metrics style: one series per
    /// condition and status, 1 for the current status). Condition types it no longer carries
    /// disappear.
    pub fn set_modeldeployment_conditions(
        &self,
        namespace: &str,
        name: &str,
        conditions: &[Condition],
    ) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut published = lock(&self.published_conditions);
        let now: BTreeSet<String> = conditions.iter().map(|c| c.type_.clone()).collect();
        if let Some(before) = published.get(&key) {
            for gone in before.difference(&now) {
                self.remove_condition(namespace, name, gone);
            }
        }
        for c in conditions {
            for status in CONDITION_STATUSES {
                self.modeldeployment_condition
                    .get_or_create(&ConditionLabels {
                        namespace: namespace.to_owned(),
                        modeldeployment: name.to_owned(),
                        condition: c.type_.clone(),
                        status: status.to_owned(),
                    })
                    .set(i64::from(c.status == status));
            }
        }
        if now.is_empty() {
            published.remove(&key);
        } else {
            published.insert(key, now);
        }
    }

    /// Drops every condition series of a deleted ModelDeployment.
    pub fn forget_modeldeployment(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(before) = lock(&self.published_conditions).remove(&key) {
            for condition in before {
                self.remove_condition(namespace, name, &condition);
            }
        }
    }

    fn remove_condition(&self, namespace: &str, name: &str, condition: &str) {
        for status in CONDITION_STATUSES {
            self.modeldeployment_condition.remove(&ConditionLabels {
                namespace: namespace.to_owned(),
                modeldeployment: name.to_owned(),
                condition: condition.to_owned(),
                status: status.to_owned(),
            });
        }
    }

    /// Publishes how many nodes match `pool`.
    pub fn set_pool_matching_nodes(&self, pool: &str, nodes: i64) {
        lock(&self.published_pools).insert(pool.to_owned());
        self.pool_matching_nodes
            .get_or_create(&PoolLabels {
                pool: pool.to_owned(),
            })
            .set(nodes);
    }

    /// Drops the gauges of pools not in `existing` (deleted pools).
    pub fn retain_pools(&self, existing: &HashSet<String>) {
        lock(&self.published_pools).retain(|pool| {
            let keep = existing.contains(pool);
            if !keep {
                self.pool_matching_nodes
                    .remove(&PoolLabels { pool: pool.clone() });
            }
            keep
        });
    }

    /// Records whether this replica leads. A replica that stops leading drops the per-object
    /// gauges: only the leader's are current.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        if !leader {
            self.modeldeployment_condition.clear();
            lock(&self.published_conditions).clear();
            self.pool_matching_nodes.clear();
            lock(&self.published_pools).clear();
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Buckets from 5 ms to about 41 s: a reconcile is a handful of API calls.
fn reconcile_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 14,
    ))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain bookkeeping behind; keep using it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn reconcile_counters_carry_the_names_the_alerts_use() {
        let m = Metrics::new();
        m.reconciled(
            ControllerKind::inferencepool,
            Duration::from_millis(3),
            Ok(()),
        );
        m.reconciled(
            ControllerKind::inferencepool,
            Duration::from_millis(30),
            Err(&Error::Config("x".into())),
        );
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE ryzanstein_operator_reconcile counter"));
        assert!(text.contains(
            "ryzanstein_operator_reconcile_total{controller=\"inferencepool\",result=\"success\"} 1\n"
        ));
        assert!(text.contains(
            "ryzanstein_operator_reconcile_total{controller=\"inferencepool\",result=\"error\"} 1\n"
        ));
        assert!(text.contains(
            "ryzanstein_operator_reconcile_errors_total{controller=\"inferencepool\",reason=\"config\"} 1\n"
        ));
        assert!(text.contains("# TYPE ryzanstein_operator_reconcile_duration_seconds histogram"));
        assert!(text.contains(
            "ryzanstein_operator_reconcile_duration_seconds_count{controller=\"inferencepool\"} 2\n"
        ));
        // 3 ms falls in the first bucket (5 ms), 30 ms from the 40 ms bucket on.
        assert!(text.contains(
            "ryzanstein_operator_reconcile_duration_seconds_bucket{le=\"0.005\",controller=\"inferencepool\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "ryzanstein_operator_reconcile_duration_seconds_bucket{le=\"0.04\",controller=\"inferencepool\"} 2\n"
        ), "{text}");
    }

    #[test]
    fn conditions_are_kube_state_metrics_style_and_vanish_with_their_object() {
        let m = Metrics::new();
        m.set_modeldeployment_conditions(
            "team-a",
            "smollm2",
            &[
                condition("QuotaExceeded", "True"),
                condition("Ready", "False"),
            ],
        );
        let text = m.encode();
        let got = lines(&text, "ryzanstein_operator_modeldeployment_condition{");
        let want = [
            r#"ryzanstein_operator_modeldeployment_condition{namespace="team-a",modeldeployment="smollm2",condition="QuotaExceeded",status="False"} 0"#,
            r#"ryzanstein_operator_modeldeployment_condition{namespace="team-a",modeldeployment="smollm2",condition="QuotaExceeded",status="True"} 1"#,
            r#"ryzanstein_operator_modeldeployment_condition{namespace="team-a",modeldeployment="smollm2",condition="QuotaExceeded",status="Unknown"} 0"#,
            r#"ryzanstein_operator_modeldeployment_condition{namespace="team-a",modeldeployment="smollm2",condition="Ready",status="False"} 1"#,
            r#"ryzanstein_operator_modeldeployment_condition{namespace="team-a",modeldeployment="smollm2",condition="Ready",status="True"} 0"#,
            r#"ryzanstein_operator_modeldeployment_condition{namespace="team-a",modeldeployment="smollm2",condition="Ready",status="Unknown"} 0"#,
        ];
        assert_eq!(got, want);

        // QuotaExceeded goes away: its series go with it.
        m.set_modeldeployment_conditions("team-a", "smollm2", &[condition("Ready", "True")]);
        let got = lines(
            &m.encode(),
            "ryzanstein_operator_modeldeployment_condition{",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|l| l.contains("condition=\"Ready\"")));
        assert!(got.iter().any(|l| l.contains("status=\"True\"} 1")));

        m.forget_modeldeployment("team-a", "smollm2");
        assert!(lines(
            &m.encode(),
            "ryzanstein_operator_modeldeployment_condition{"
        )
        .is_empty());
    }

    #[test]
    fn pool_gauges_follow_the_pools_that_exist() {
        let m = Metrics::new();
        m.set_pool_matching_nodes("cpu-avx512", 4);
        m.set_pool_matching_nodes("gpu", 0);
        let text = m.encode();
        assert!(text.contains("ryzanstein_operator_pool_matching_nodes{pool=\"cpu-avx512\"} 4\n"));
        assert!(text.contains("ryzanstein_operator_pool_matching_nodes{pool=\"gpu\"} 0\n"));
        m.retain_pools(&HashSet::from(["gpu".to_owned()]));
        let text = m.encode();
        assert!(!text.contains("pool=\"cpu-avx512\""), "{text}");
        assert!(text.contains("pool=\"gpu\""));
    }

    #[test]
    fn losing_leadership_drops_the_leader_only_gauges() {
        let m = Metrics::new();
        m.set_leader(true);
        m.set_pool_matching_nodes("p", 2);
        m.set_modeldeployment_conditions("ns", "md", &[condition("Ready", "True")]);
        m.autoscaler_decided(AutoscalerDecision::scale_up);
        let text = m.encode();
        assert!(text.contains("ryzanstein_operator_leader 1\n"));
        assert!(text
            .contains("ryzanstein_operator_autoscaler_decisions_total{decision=\"scale_up\"} 1\n"));
        m.set_leader(false);
        let text = m.encode();
        assert!(text.contains("ryzanstein_operator_leader 0\n"));
        assert!(!text.contains("pool=\"p\""), "{text}");
        assert!(!text.contains("modeldeployment=\"md\""), "{text}");
        // Counters are history, not state: they stay.
        assert!(text.contains("decision=\"scale_up\"} 1"));
    }
}
