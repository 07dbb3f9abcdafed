//! The autoscaler loop: every scrape interval, for each ModelDeployment with autoscaling
//! enabled, it lists the ready pods that serve its API (shard 0, `status.selector`), reads
//! their `/metrics`, decides the replica groups with [`crate::autoscale`], and asks the
//! ModelDeployment controller to reconcile the deployment when the decision changed (or the
//! recorded load is stale). The reconcile is the only writer of the status: it reads the
//! decision from [`Autoscaler::view`] and records `desiredReplicas`, `load` and
//! `lastScaleTime`, applies the quota cap, and tells the autoscaler what the quota allowed.
//!
//! Decisions live in memory. A new operator leader starts from the status (`desiredReplicas`,
//! `lastScaleTime`) and holds that count for a full `scaleDownDelaySeconds`, so a restart
//! never scales down before the delay has passed under its own eyes.
//!
//! Without ready pods there is no load to read: the count stays as it is (a deployment scaled
//! to zero stays at zero until `minReplicas` or something outside the operator raises it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tokio::sync::mpsc;

use crate::autoscale::{decide, in_flight_from_metrics, recommend, Policy, Recommendations};
use crate::config::AutoscalerConfig;
use crate::crd::{Load, ModelDeployment};
use crate::deployment_status::desired_replicas;
use crate::metrics::{lock, AutoscalerDecision, Metrics};
use crate::render::SERVER_PORT;
use crate::shutdown::Shutdown;

/// How old the recorded load may get before a reconcile refreshes it, although the decision
/// did not change.
pub const LOAD_REFRESH: Duration = Duration::from_secs(60);

/// (namespace, name) of a ModelDeployment.
type Key = (String, String);

/// What the reconcile reads for one deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleView {
    /// Replica groups to run (clamped to the current min/max, before the quota cap).
    pub desired: i32,
    /// The last load sample.
    pub load: Option<Load>,
    /// When `desired` last changed.
    pub last_scale_time: Option<Time>,
    /// Why it last changed, for the event.
    pub reason: Option<String>,
}

/// One deployment's autoscaling state.
#[derive(Debug)]
struct State {
    uid: String,
    desired: i32,
    recs: Recommendations,
    load: Option<Load>,
    last_scale_time: Option<Time>,
    reason: Option<String>,
    /// Groups the quota allowed at the last reconcile, when it capped the deployment.
    allowed: Option<i32>,
    /// No scaling down before this: a full delay after the state was (re)built.
    hold_until: Instant,
}

/// The autoscaler's decisions, shared by its loop and the ModelDeployment reconcile.
#[derive(Debug, Default)]
pub struct Autoscaler {
    states: Mutex<HashMap<Key, State>>,
}

/// What one deployment's round found.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Running plus waiting requests over the pods read.
    pub in_flight: f64,
    /// Ready pods read.
    pub pods: usize,
}

impl Autoscaler {
    /// The decision for `md`, when the autoscaler has one for this very object (same uid) and
    /// autoscaling is enabled.
    pub fn view(&self, md: &ModelDeployment) -> Option<ScaleView> {
        let policy = Policy::of(md.spec.autoscaling.as_ref())?;
        let states = lock(&self.states);
        let s = states.get(&md.key())?;
        (s.uid == md.uid()).then(|| ScaleView {
            desired: policy.clamp(s.desired),
            load: s.load.clone(),
            last_scale_time: s.last_scale_time.clone(),
            reason: s.reason.clone(),
        })
    }

    /// Records how many groups the quota and pool capacity allowed `md` (`None`: not capped).
    pub fn set_allowed(&self, md: &ModelDeployment, allowed: Option<i32>) {
        if let Some(s) = lock(&self.states).get_mut(&md.key()) {
            if s.uid == md.uid() {
                s.allowed = allowed;
            }
        }
    }

    /// Forgets the deployments that are gone or no longer autoscaled.
    pub fn retain(&self, autoscaled: &[Arc<ModelDeployment>]) {
        let live: HashMap<Key, String> = autoscaled.iter().map(|md| (md.key(), md.uid())).collect();
        lock(&self.states).retain(|k, s| live.get(k) == Some(&s.uid));
    }

    /// Takes one round's `sample` of `md` (or `None` when no ready pod could be read) at `now`
    /// and decides. Returns whether the reconcile should run: the decision changed, or the
    /// recorded load is missing or older than [`LOAD_REFRESH`].
    pub fn observe(
        &self,
        md: &ModelDeployment,
        sample: Option<&Sample>,
        now: Instant,
        wall: Timestamp,
        metrics: &Metrics,
    ) -> bool {
        let Some(policy) = Policy::of(md.spec.autoscaling.as_ref()) else {
            return false;
        };
        let mut states = lock(&self.states);
        let k = md.key();
        let fresh = states.get(&k).is_none_or(|s| s.uid != md.uid());
        if fresh {
            // Start from what the status says and hold it for a full scale-down delay.
            states.insert(
                k.clone(),
                State {
                    uid: md.uid(),
                    desired: desired_replicas(md),
                    recs: Recommendations::default(),
                    hold_until: now + policy.down_window,
                    load: md.status.as_ref().and_then(|s| s.load.clone()),
                    last_scale_time: md.status.as_ref().and_then(|s| s.last_scale_time.clone()),
                    reason: None,
                    allowed: None,
                },
            );
        }
        let s = states.get_mut(&k).expect("inserted above");
        let before = policy.clamp(s.desired);
        let Some(sample) = sample.filter(|s| s.pods > 0) else {
            s.desired = before;
            return before != recorded_desired(md);
        };
        let recommended = recommend(sample.in_flight, policy.target);
        s.recs.record(now, recommended, policy.horizon());
        let mut step = decide(&policy, s.desired, &s.recs, now, s.allowed);
        if step.desired < before && now < s.hold_until {
            step.desired = before;
            step.decision = AutoscalerDecision::unchanged;
        }
        metrics.autoscaler_decided(step.decision);
        let per_replica = sample.in_flight / sample.pods as f64;
        s.load = Some(Load {
            in_flight_per_replica: (per_replica * 100.0).round() / 100.0,
            observed_at: Time(wall),
        });
        if step.desired != before {
            s.reason = Some(format!(
                "{} requests in flight over {} ready pods (target {} per replica group) asks for {}; {} → {} replica groups{}",
                sample.in_flight,
                sample.pods,
                policy.target,
                step.recommended,
                before,
                step.desired,
                if step.desired < before {
                    format!(" after {}s of lower load", policy.down_window.as_secs())
                } else {
                    String::new()
                }
            ));
            s.last_scale_time = Some(Time(wall));
            tracing::info!(
                md = %format!("{}/{}", k.0, k.1),
                from = before,
                to = step.desired,
                in_flight = sample.in_flight,
                pods = sample.pods,
                "autoscaler changed the desired replica groups"
            );
        }
        s.desired = step.desired;
        let recorded_at = md
            .status
            .as_ref()
            .and_then(|st| st.load.as_ref())
            .map(|l| l.observed_at.0);
        let stale = recorded_at.is_none_or(|t| {
            wall.duration_since(t)
                .try_into()
                .is_ok_and(|d: Duration| d >= LOAD_REFRESH)
        });
        step.desired != recorded_desired(md) || stale
    }
}

/// The desired count the status shows now.
fn recorded_desired(md: &ModelDeployment) -> i32 {
    md.status
        .as_ref()
        .and_then(|s| s.desired_replicas)
        .unwrap_or(i32::MIN)
}

/// Whether `pod` is ready to serve: not being deleted, has an IP, condition `Ready=True`.
pub fn serving_ip(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

/// `http://ip:port/metrics` of a server pod (IPv6 in brackets).
pub fn metrics_url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}/metrics"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}/metrics"),
    }
}

/// Reads the load of `md`'s ready API pods (listed by `status.selector`, scraped on `port`):
/// `None` when the deployment has no selector yet or the pods cannot be listed; pods that do
/// not answer are left out (and logged).
pub async fn sample(
    client: &kube::Client,
    http: &reqwest::Client,
    md: &ModelDeployment,
    port: u16,
) -> Option<Sample> {
    let selector = md.status.as_ref()?.selector.clone()?;
    let namespace = md.namespace()?;
    let pods = match Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(md = %format!("{namespace}/{}", md.name_any()), error = %e, "autoscaler could not list the server pods");
            return None;
        }
    };
    let reads = pods.iter().filter_map(serving_ip).map(|ip| async move {
        let url = metrics_url(ip, port);
        let result = async {
            let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let text = response.text().await.map_err(|e| e.to_string())?;
            in_flight_from_metrics(&text)
        }
        .await;
        result.map_err(|e| (url, e))
    });
    let mut total = Sample {
        in_flight: 0.0,
        pods: 0,
    };
    for result in join_all(reads).await {
        match result {
            Ok(in_flight) => {
                total.in_flight += in_flight;
                total.pods += 1;
            }
            Err((url, e)) => {
                tracing::warn!(url, error = %e, "autoscaler could not read a server pod's load; leaving it out")
            }
        }
    }
    Some(total)
}

/// Runs the autoscaler until `shutdown`: a round every scrape interval over the autoscaled
/// deployments in `store`, sending the ones to reconcile to `trigger`.
pub async fn run(
    client: kube::Client,
    autoscaler: Arc<Autoscaler>,
    metrics: Arc<Metrics>,
    config: AutoscalerConfig,
    store: Store<ModelDeployment>,
    trigger: mpsc::Sender<ObjectRef<ModelDeployment>>,
    shutdown: Shutdown,
) {
    let http = match reqwest::Client::builder()
        .timeout(config.scrape_timeout())
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "the autoscaler cannot build its HTTP client; autoscaling is off");
            return;
        }
    };
    let mut ticker = tokio::time::interval(config.scrape_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            _ = ticker.tick() => {}
        }
        let autoscaled: Vec<Arc<ModelDeployment>> = store
            .state()
            .into_iter()
            .filter(|md| {
                md.metadata.deletion_timestamp.is_none()
                    && Policy::of(md.spec.autoscaling.as_ref()).is_some()
            })
            .collect();
        autoscaler.retain(&autoscaled);
        let samples = join_all(
            autoscaled
                .iter()
                .map(|md| sample(&client, &http, md, SERVER_PORT as u16)),
        )
        .await;
        let now = Instant::now();
        let wall = Timestamp::now();
        for (md, sample) in autoscaled.iter().zip(samples) {
            if autoscaler.observe(md, sample.as_ref(), now, wall, &metrics)
                && trigger
                    .send(ObjectRef::from_obj(md.as_ref()))
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
    tracing::info!("autoscaler stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md(status: serde_json::Value) -> ModelDeployment {
        serde_json::from_value(json!({
            "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u1"},
            "spec": {
                "model": {"source": "bundled://smollm2-135m-instruct"},
                "poolRef": "p",
                "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetInFlightPerReplica": 2,
                                "scaleDownDelaySeconds": 30},
            },
            "status": status,
        }))
        .unwrap()
    }

    fn busy(in_flight: f64, pods: usize) -> Sample {
        Sample { in_flight, pods }
    }

    #[test]
    fn scales_with_the_sample_and_records_load_and_time() {
        let a = Autoscaler::default();
        let m = Metrics::new();
        let t = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        let md1 = md(json!({"desiredReplicas": 1, "selector": "x=y"}));
        assert!(a.observe(&md1, Some(&busy(7.0, 1)), t, wall, &m));
        let v = a.view(&md1).unwrap();
        assert_eq!(v.desired, 4);
        assert_eq!(v.load.as_ref().unwrap().in_flight_per_replica, 7.0);
        assert_eq!(v.last_scale_time, Some(Time(wall)));
        assert!(v.reason.unwrap().contains("1 → 4"));
        assert!(m
            .encode()
            .contains("ryzanstein_operator_autoscaler_decisions_total{decision=\"scale_up\"} 1"));

        // The status now says 4 with a fresh load: nothing to reconcile while load holds.
        let md4 = md(
            json!({"desiredReplicas": 4, "load": {"inFlightPerReplica": 1.75,
            "observedAt": "1970-01-01T00:00:00Z"}}),
        );
        assert!(!a.observe(
            &md4,
            Some(&busy(7.0, 4)),
            t + Duration::from_secs(10),
            wall,
            &m
        ));
        // Idle: held for the 30 s delay, then down to min.
        let idle = busy(0.0, 4);
        assert!(!a.observe(&md4, Some(&idle), t + Duration::from_secs(20), wall, &m));
        assert!(!a.observe(&md4, Some(&idle), t + Duration::from_secs(40), wall, &m));
        assert!(a.observe(&md4, Some(&idle), t + Duration::from_secs(50), wall, &m));
        assert_eq!(a.view(&md4).unwrap().desired, 1);
    }

    #[test]
    fn a_new_leader_holds_the_status_count_for_the_delay() {
        let a = Autoscaler::default();
        let m = Metrics::new();
        let t = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        let md3 = md(json!({"desiredReplicas": 3}));
        // Idle from the first round: 3 stays until 30 s after this replica started.
        assert!(a.observe(&md3, Some(&busy(0.0, 3)), t, wall, &m));
        assert_eq!(a.view(&md3).unwrap().desired, 3);
        a.observe(
            &md3,
            Some(&busy(0.0, 3)),
            t + Duration::from_secs(31),
            wall,
            &m,
        );
        assert_eq!(a.view(&md3).unwrap().desired, 1);
    }

    #[test]
    fn no_ready_pods_means_no_decision() {
        let a = Autoscaler::default();
        let m = Metrics::new();
        let md2 = md(json!({"desiredReplicas": 2}));
        let t = Instant::now();
        assert!(!a.observe(&md2, None, t, Timestamp::UNIX_EPOCH, &m));
        assert!(!a.observe(
            &md2,
            Some(&busy(0.0, 0)),
            t + Duration::from_secs(100),
            Timestamp::UNIX_EPOCH,
            &m
        ));
        assert_eq!(a.view(&md2).unwrap().desired, 2);
        assert!(!m.encode().contains("autoscaler_decisions_total{"));
    }

    #[test]
    fn forgets_replaced_and_removed_deployments() {
        let a = Autoscaler::default();
        let m = Metrics::new();
        let t = Instant::now();
        let md1 = Arc::new(md(json!({})));
        a.observe(&md1, Some(&busy(8.0, 1)), t, Timestamp::UNIX_EPOCH, &m);
        assert!(a.view(&md1).is_some());
        // Same name, new object: the old decision does not apply to it.
        let mut replaced = md(json!({}));
        replaced.metadata.uid = Some("u2".into());
        assert!(a.view(&replaced).is_none());
        a.retain(&[Arc::new(replaced)]);
        assert!(a.view(&md1).is_none());
    }

    #[test]
    fn pods_serve_only_when_ready_addressed_and_not_terminating() {
        let pod = |ready: &str, ip: Option<&str>, deleting: bool| -> Pod {
            let mut v = json!({
                "metadata": {"name": "p"},
                "status": {"conditions": [{"type": "Ready", "status": ready}]},
            });
            if let Some(ip) = ip {
                v["status"]["podIP"] = json!(ip);
            }
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(v).unwrap()
        };
        let ip = serving_ip(&pod("True", Some("127.0.10.2"), false)).unwrap();
        assert_eq!(metrics_url(ip, 8080), "http://127.0.10.2:8080/metrics");
        assert!(serving_ip(&pod("False", Some("127.0.10.2"), false)).is_none());
        assert!(serving_ip(&pod("True", None, false)).is_none());
        assert!(serving_ip(&pod("True", Some("127.0.10.2"), true)).is_none());
        let v6 = serving_ip(&pod("True", Some("fd00::5"), false)).unwrap();
        assert_eq!(metrics_url(v6, 8080), "http://[fd00::5]:8080/metrics");
    }
}
