//! The pure part of the autoscaler: what a server pod's `/metrics` says about its load, how
//! many replica groups a load asks for, and when the replica count may follow it.
//!
//! Load is the number of requests a pod is running plus the number waiting in its queue
//! (`ryzanstein_num_requests_running` + `ryzanstein_num_requests_waiting`), added up over the
//! ready pods that serve the API. Each round the autoscaler turns the total into a
//! recommendation, `ceil(total / targetInFlightPerReplica)`, and keeps the recommendations of
//! the last few minutes. Like the HorizontalPodAutoscaler's stabilisation windows:
//! - scaling up follows the *smallest* recommendation of the last
//!   `scaleUpStabilizationSeconds` (0: the newest one, without delay): load must have stayed
//!   high for the whole window;
//! - scaling down follows the *largest* recommendation of the last `scaleDownDelaySeconds`:
//!   load must have stayed low for the whole delay, and a single busy moment resets it.
//!
//! The result is clamped to `[minReplicas, maxReplicas]` and, when the last reconcile found the
//! tenant's quota or the pool's capacity allows fewer, marked as capped (the reconcile applies
//! that cap and reports it in the `QuotaExceeded` condition).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::crd::Autoscaling;
use crate::metrics::AutoscalerDecision;

/// Gauge the server exports: requests being generated.
pub const RUNNING_METRIC: &str = "ryzanstein_num_requests_running";
/// Gauge the server exports: requests admitted and waiting for a slot.
pub const WAITING_METRIC: &str = "ryzanstein_num_requests_waiting";

/// A deployment's autoscaling settings, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Fewest replica groups.
    pub min: i32,
    /// Most replica groups (at least `min`).
    pub max: i32,
    /// Requests in flight per replica group aimed for (at least 1).
    pub target: i32,
    /// How long the load must stay higher before scaling up.
    pub up_window: Duration,
    /// How long the load must stay lower before scaling down.
    pub down_window: Duration,
}

impl Policy {
    /// The policy of `spec.autoscaling` when it is enabled; `None` when autoscaling is off.
    pub fn of(a: Option<&Autoscaling>) -> Option<Self> {
        let a = a.filter(|a| a.enabled)?;
        let min = a.min_replicas.max(0);
        Some(Self {
            min,
            max: a.max_replicas.max(min),
            target: a.target_in_flight_per_replica.max(1),
            up_window: secs(a.scale_up_stabilization_seconds),
            down_window: secs(a.scale_down_delay_seconds),
        })
    }

    /// `replicas` within `[min, max]`.
    pub fn clamp(&self, replicas: i32) -> i32 {
        replicas.clamp(self.min, self.max)
    }

    /// How long a recommendation matters.
    pub fn horizon(&self) -> Duration {
        self.up_window.max(self.down_window)
    }
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// Replica groups a total load asks for: `ceil(in_flight / target)`, saturating at `i32::MAX`.
pub fn recommend(in_flight: f64, target: i32) -> i32 {
    if !in_flight.is_finite() || in_flight <= 0.0 {
        return 0;
    }
    let groups = (in_flight / f64::from(target.max(1))).ceil();
    if groups >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        groups as i32
    }
}

/// Recommendations of the recent past, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recommendations {
    samples: VecDeque<(Instant, i32)>,
}

impl Recommendations {
    /// Records `replicas` recommended at `at` and forgets what is older than `keep` before it.
    pub fn record(&mut self, at: Instant, replicas: i32, keep: Duration) {
        self.samples.push_back((at, replicas));
        while let Some(&(t, _)) = self.samples.front() {
            if at.saturating_duration_since(t) > keep {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    fn within(&self, now: Instant, window: Duration) -> impl Iterator<Item = i32> + '_ {
        self.samples
            .iter()
            .filter(move |(t, _)| now.saturating_duration_since(*t) <= window)
            .map(|&(_, r)| r)
    }

    /// Recommendations kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// What one round decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Replica groups to run from now on (before the quota cap, which the reconcile applies).
    pub desired: i32,
    /// The newest recommendation, before stabilisation and clamping.
    pub recommended: i32,
    /// What kind of decision it was.
    pub decision: AutoscalerDecision,
}

/// The replica groups to run, given the `current` desired count and the recommendations so far
/// (the newest included), at `now`. `allowed` is how many groups the quota and pool capacity
/// allowed at the last reconcile, when they capped the deployment.
pub fn decide(
    policy: &Policy,
    current: i32,
    recs: &Recommendations,
    now: Instant,
    allowed: Option<i32>,
) -> Step {
    let recommended = recs.samples.back().map_or(current, |&(_, r)| r);
    let current = policy.clamp(current);
    let stabilised = if recommended > current {
        // Up only as far as the load stayed for the whole up window.
        let floor = recs
            .within(now, policy.up_window)
            .min()
            .unwrap_or(recommended);
        floor.max(current)
    } else if recommended < current {
        // Down only as far as the load stayed for the whole down delay.
        let ceiling = recs
            .within(now, policy.down_window)
            .max()
            .unwrap_or(recommended);
        ceiling.min(current)
    } else {
        current
    };
    let desired = policy.clamp(stabilised);
    let limit = allowed.map_or(policy.max, |a| a.min(policy.max));
    let decision = if recommended > limit && desired >= current {
        AutoscalerDecision::capped
    } else if desired > current {
        AutoscalerDecision::scale_up
    } else if desired < current {
        AutoscalerDecision::scale_down
    } else {
        AutoscalerDecision::unchanged
    };
    Step {
        desired,
        recommended,
        decision,
    }
}

/// Running plus waiting requests in a server's `/metrics` text (Prometheus or OpenMetrics
/// exposition), summed over every series of the two gauges. An error when neither gauge is
/// there (the endpoint is not a Ryzanstein server, or not one that exports its queue).
pub fn in_flight_from_metrics(text: &str) -> Result<f64, String> {
    let mut found = false;
    let mut total = 0.0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        if name != RUNNING_METRIC && name != WAITING_METRIC {
            continue;
        }
        let rest = &line[name_end..];
        let after_labels = match rest.strip_prefix('{') {
            Some(labels) => match closing_brace(labels) {
                Some(end) => &labels[end + 1..],
                None => return Err(format!("unterminated label set in {line:?}")),
            },
            None => rest,
        };
        let value = after_labels
            .split_whitespace()
            .next()
            .ok_or_else(|| format!("no value in {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("value {value:?} of {name} is not a number"))?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{name} is {value}, not a request count"));
        }
        found = true;
        total += value;
    }
    if found {
        Ok(total)
    } else {
        Err(format!(
            "neither {RUNNING_METRIC} nor {WAITING_METRIC} is exported (is this a Ryzanstein server?)"
        ))
    }
}

/// Index of the `}` closing a label set, skipping quoted label values (which may hold `}` and
/// escaped quotes).
fn closing_brace(labels: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: i32, max: i32, up: u64, down: u64) -> Policy {
        Policy {
            min,
            max,
            target: 4,
            up_window: Duration::from_secs(up),
            down_window: Duration::from_secs(down),
        }
    }

    /// Records `loads` (total in flight) one per 10 s from `t0`, deciding each round like the
    /// autoscaler does; returns the desired count after each round.
    fn run(policy: &Policy, start: i32, loads: &[f64]) -> Vec<i32> {
        let t0 = Instant::now();
        let mut recs = Recommendations::default();
        let mut current = start;
        loads
            .iter()
            .enumerate()
            .map(|(i, &load)| {
                let now = t0 + Duration::from_secs(10 * i as u64);
                recs.record(now, recommend(load, policy.target), policy.horizon());
                current = decide(policy, current, &recs, now, None).desired;
                current
            })
            .collect()
    }

    #[test]
    fn recommendation_is_the_ceiling_of_load_over_target() {
        assert_eq!(recommend(0.0, 4), 0);
        assert_eq!(recommend(1.0, 4), 1);
        assert_eq!(recommend(4.0, 4), 1);
        assert_eq!(recommend(4.5, 4), 2);
        assert_eq!(recommend(17.0, 8), 3);
        assert_eq!(recommend(f64::NAN, 8), 0);
        assert_eq!(recommend(1e300, 1), i32::MAX);
    }

    #[test]
    fn scales_up_at_once_and_down_only_after_the_delay() {
        let p = policy(1, 5, 0, 30);
        // Load 20 → 5 groups at once; then idle: the 5 stays for the 30 s delay (rounds at
        // 10, 20, 30 s still see the busy sample within 30 s), then drops to min.
        let got = run(&p, 1, &[20.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(got, vec![5, 5, 5, 5, 1, 1]);
    }

    #[test]
    fn a_busy_moment_resets_the_scale_down_delay() {
        let p = policy(1, 5, 0, 30);
        let got = run(&p, 1, &[12.0, 0.0, 0.0, 12.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(got, vec![3, 3, 3, 3, 3, 3, 3, 1]);
    }

    #[test]
    fn scale_down_follows_the_highest_load_of_the_delay() {
        let p = policy(1, 8, 0, 20);
        // 8 groups, then load for 6, then for 2: each step down waits for its own window.
        let got = run(&p, 1, &[32.0, 24.0, 24.0, 24.0, 8.0, 8.0, 8.0]);
        assert_eq!(got, vec![8, 8, 8, 6, 6, 6, 2]);
    }

    #[test]
    fn scale_up_stabilisation_needs_the_load_for_the_whole_window() {
        let p = policy(1, 5, 20, 300);
        // A one-round spike does not scale up; load that lasts 20 s does.
        let got = run(&p, 1, &[1.0, 20.0, 1.0, 20.0, 20.0, 20.0]);
        assert_eq!(got, vec![1, 1, 1, 1, 1, 5]);
    }

    #[test]
    fn clamped_to_min_and_max_and_capped_reported() {
        let p = policy(2, 4, 0, 0);
        let t = Instant::now();
        let mut recs = Recommendations::default();
        recs.record(t, recommend(100.0, p.target), p.horizon());
        let step = decide(&p, 2, &recs, t, None);
        assert_eq!(step.desired, 4);
        assert_eq!(step.recommended, 25);
        assert_eq!(step.decision, AutoscalerDecision::capped);

        let mut idle = Recommendations::default();
        idle.record(t, 0, p.horizon());
        let step = decide(&p, 4, &idle, t, None);
        assert_eq!(
            (step.desired, step.decision),
            (2, AutoscalerDecision::scale_down)
        );

        // A current count outside new bounds (the spec changed) comes back inside them.
        let step = decide(&p, 9, &idle, t, None);
        assert_eq!(step.desired, 2);
    }

    #[test]
    fn quota_allowance_marks_the_decision_capped() {
        let p = policy(1, 10, 0, 0);
        let t = Instant::now();
        let mut recs = Recommendations::default();
        recs.record(t, 6, p.horizon());
        // The quota allowed 3 at the last reconcile: the autoscaler still asks for 6 (the
        // reconcile caps and says why), and counts the decision as capped.
        let step = decide(&p, 3, &recs, t, Some(3));
        assert_eq!(step.desired, 6);
        assert_eq!(step.decision, AutoscalerDecision::capped);
        let step = decide(&p, 3, &recs, t, Some(8));
        assert_eq!(step.decision, AutoscalerDecision::scale_up);
    }

    #[test]
    fn unchanged_when_load_matches_the_replicas() {
        let p = policy(1, 5, 0, 60);
        let t = Instant::now();
        let mut recs = Recommendations::default();
        recs.record(t, 3, p.horizon());
        let step = decide(&p, 3, &recs, t, None);
        assert_eq!(
            (step.desired, step.decision),
            (3, AutoscalerDecision::unchanged)
        );
    }

    #[test]
    fn old_recommendations_are_forgotten() {
        let t = Instant::now();
        let mut recs = Recommendations::default();
        for i in 0..100 {
            recs.record(t + Duration::from_secs(i), 1, Duration::from_secs(10));
        }
        assert_eq!(recs.len(), 11);
    }

    #[test]
    fn policy_reads_the_spec() {
        let a: Autoscaling = serde_json::from_value(serde_json::json!({
            "minReplicas": 1, "maxReplicas": 3, "targetInFlightPerReplica": 2,
            "scaleUpStabilizationSeconds": 5, "scaleDownDelaySeconds": 60,
        }))
        .unwrap();
        let p = Policy::of(Some(&a)).unwrap();
        assert_eq!(
            p,
            Policy {
                min: 1,
                max: 3,
                target: 2,
                up_window: Duration::from_secs(5),
                down_window: Duration::from_secs(60),
            }
        );
        let off = Autoscaling {
            enabled: false,
            ..a
        };
        assert_eq!(Policy::of(Some(&off)), None);
        assert_eq!(Policy::of(None), None);
    }

    #[test]
    fn load_is_read_from_the_servers_metrics() {
        let text = "# HELP ryzanstein_num_requests_running Requests being generated\n\
                    # TYPE ryzanstein_num_requests_running gauge\n\
                    ryzanstein_num_requests_running{model_name=\"a}b\\\"c\"} 3\n\
                    ryzanstein_num_requests_waiting{model_name=\"m\"} 2 1700000000000\n\
                    ryzanstein_num_requests_running_extra 100\n\
                    ryzanstein_requests_total{outcome=\"ok\"} 9\n\
                    # EOF\n";
        assert_eq!(in_flight_from_metrics(text), Ok(5.0));
        assert_eq!(
            in_flight_from_metrics("ryzanstein_num_requests_waiting 4\n"),
            Ok(4.0)
        );
        let err = in_flight_from_metrics("up 1\n").unwrap_err();
        assert!(err.contains("neither"), "{err}");
        let err =
            in_flight_from_metrics("ryzanstein_num_requests_running{a=\"b\" 1\n").unwrap_err();
        assert!(err.contains("unterminated"), "{err}");
        let err = in_flight_from_metrics("ryzanstein_num_requests_running -1\n").unwrap_err();
        assert!(err.contains("not a request count"), "{err}");
        let err = in_flight_from_metrics("ryzanstein_num_requests_running x\n").unwrap_err();
        assert!(err.contains("not a number"), "{err}");
    }
}
