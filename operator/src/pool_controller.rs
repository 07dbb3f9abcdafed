//! The InferencePool controller: counts the nodes that match each pool's hardware, adds up what
//! the pool's ModelDeployments use (in all and per tenant), and writes that into the pool's
//! status with server-side apply. Pools are reconciled when they change, when a ModelDeployment
//! that references them changes, when a node's labels change (or a node comes or goes), and
//! every few minutes.
//!
//! The pure work (matching, aggregation, the status itself) is in [`crate::pool_status`].

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::Taint;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::context::{Context, FIELD_MANAGER};
use crate::crd::deployment::condition::QUOTA_EXCEEDED;
use crate::crd::pool::condition;
use crate::crd::{InferencePool, ModelDeployment};
use crate::error::{Error, Result};
use crate::metrics::ControllerKind;
use crate::pool_status::{aggregate_usage, count_matching_nodes, pool_status};
use crate::shutdown::Shutdown;

/// How often a pool is reconciled when nothing triggers it.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon a failed reconcile is retried.
pub const RETRY: Duration = Duration::from_secs(30);
/// Page size when listing nodes.
const NODE_PAGE: u32 = 500;

/// The pool controller's context: the shared one, and the controller's own cache of pools (to
/// drop the gauges of deleted pools).
pub struct PoolContext {
    /// Shared state.
    pub ctx: Arc<Context>,
    /// The controller's pool cache; `None` when reconciling outside a controller (tests).
    pub pools: Option<Store<InferencePool>>,
}

/// The ModelDeployments (among `deployments`) that reference `pool`: what to re-reconcile when
/// the pool changes. The ModelDeployment controller maps pool events through this.
pub fn deployments_in_pool<'a>(
    pool: &str,
    deployments: impl IntoIterator<Item = &'a ModelDeployment>,
) -> Vec<ObjectRef<ModelDeployment>> {
    deployments
        .into_iter()
        .filter(|md| md.spec.pool_ref == pool)
        .map(ObjectRef::from_obj)
        .collect()
}

/// The ModelDeployments (among `deployments`) in the same pool as `changed` that the quota
/// capped (`QuotaExceeded=True`), other than `changed` itself: what to re-reconcile when a
/// deployment changes or goes away, since it may have freed quota they are waiting for.
pub fn capped_peers<'a>(
    changed: &ModelDeployment,
    deployments: impl IntoIterator<Item = &'a ModelDeployment>,
) -> Vec<ObjectRef<ModelDeployment>> {
    let me = ObjectRef::from_obj(changed);
    deployments
        .into_iter()
        .filter(|md| md.spec.pool_ref == changed.spec.pool_ref)
        .filter(|md| {
            md.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == QUOTA_EXCEEDED && c.status == "True")
            })
        })
        .map(ObjectRef::from_obj)
        .filter(|r| *r != me)
        .collect()
}

/// Lists (through the API) every ModelDeployment, in any namespace, that references `pool`.
pub async fn list_deployments_in_pool(client: &Client, pool: &str) -> Result<Vec<ModelDeployment>> {
    let all = Api::<ModelDeployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list ModelDeployments", e))?;
    Ok(all
        .items
        .into_iter()
        .filter(|md| md.spec.pool_ref == pool)
        .collect())
}

/// Every node, page by page (labels, taints and cordons decide where server pods may run).
pub async fn list_nodes(client: &Client) -> Result<Vec<Node>> {
    let api = Api::<Node>::all(client.clone());
    let mut nodes = Vec::new();
    let mut params = ListParams::default().limit(NODE_PAGE);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| Error::kube("list Nodes", e))?;
        nodes.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(nodes),
        }
    }
}

/// Reconciles one pool: nodes, usage, status, events, gauge.
#[tracing::instrument(skip_all, fields(pool = %pool.name_any()))]
pub async fn reconcile(pool: Arc<InferencePool>, pctx: Arc<PoolContext>) -> Result<Action> {
    let ctx = &pctx.ctx;
    let name = pool.name_any();
    let nodes = list_nodes(&ctx.client).await?;
    let matching = count_matching_nodes(&pool.spec.hardware, &nodes);
    let deployments = list_deployments_in_pool(&ctx.client, &name).await?;
    let usage = aggregate_usage(&pool, &deployments, &ctx.config.render_options());
    for reason in &usage.left_out {
        tracing::warn!(pool = %name, reason = %reason, "left out of the pool's usage: no pods are rendered for it");
    }
    let status = pool_status(&pool, matching, usage, Timestamp::now());

    let patch = json!({
        "apiVersion": InferencePool::api_version(&()),
        "kind": InferencePool::kind(&()),
        "status": status,
    });
    Api::<InferencePool>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::kube(format!("apply the status of InferencePool {name}"), e))?;
    tracing::debug!(matching_nodes = matching, "pool status written");

    ctx.metrics
        .set_pool_matching_nodes(&name, i64::from(matching));
    if let Some(store) = &pctx.pools {
        let existing: HashSet<String> = store.state().iter().map(|p| p.name_any()).collect();
        if !existing.is_empty() {
            ctx.metrics.retain_pools(&existing);
        }
    }

    let was = pool
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::READY))
        .map(|c| c.status.clone());
    let ready = &status.conditions[0];
    if was.as_deref() != Some(ready.status.as_str()) {
        let event = Event {
            type_: if ready.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: ready.reason.clone(),
            note: Some(truncate(&ready.message, 1000)),
            action: "MatchNodes".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &pool.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an event on the pool");
        }
    }
    Ok(Action::requeue(RESYNC))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Counts the reconcile in the metrics (result, duration, error reason) around [`reconcile`].
pub async fn reconcile_measured(
    pool: Arc<InferencePool>,
    pctx: Arc<PoolContext>,
) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile(pool, pctx.clone()).await;
    pctx.ctx.metrics.reconciled(
        ControllerKind::inferencepool,
        started.elapsed(),
        result.as_ref().map(|_| ()),
    );
    result
}

/// Logs a failed reconcile and retries it after [`RETRY`] (the failure is already counted).
pub fn error_policy(pool: Arc<InferencePool>, error: &Error, _: Arc<PoolContext>) -> Action {
    tracing::warn!(pool = %pool.name_any(), reason = error.metric_label(), error = %error, "InferencePool reconcile failed; retrying");
    Action::requeue(RETRY)
}

/// What of a node decides whether pool pods may run there: labels, scheduling taints, cordon.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodePlacement {
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    unschedulable: bool,
}

impl NodePlacement {
    /// The placement-relevant part of `node`.
    pub fn of(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        Self {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|mut t| {
                    t.time_added = None;
                    t
                })
                .collect(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        }
    }
}

/// Node placement data as last seen, to tell which node events can change which nodes match a
/// pool (status heartbeats do not).
#[derive(Debug, Default)]
pub struct NodeLabelTracker {
    labels: HashMap<String, NodePlacement>,
    relisting: Option<HashMap<String, NodePlacement>>,
}

impl NodeLabelTracker {
    /// Takes one watch event; `true` when pools should be reconciled: a node appeared, went
    /// away or changed its labels, taints or cordon, or a (re)list finished (which may hide any
    /// of those).
    pub fn observe(&mut self, event: watcher::Event<Node>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(node) => {
                self.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(node.name_any(), NodePlacement::of(&node));
                false
            }
            watcher::Event::InitDone => {
                self.labels = self.relisting.take().unwrap_or_default();
                true
            }
            watcher::Event::Apply(node) => {
                let placement = NodePlacement::of(&node);
                self.labels.insert(node.name_any(), placement.clone()) != Some(placement)
            }
            watcher::Event::Delete(node) => {
                self.labels.remove(&node.name_any());
                true
            }
        }
    }
}

/// A stream that yields whenever nodes change in a way that may change pool matches.
pub fn node_changes(client: Client) -> impl Stream<Item = ()> + Send + 'static {
    let mut tracker = NodeLabelTracker::default();
    // Full nodes: taints and the cordon live in the spec.
    watcher::watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let trigger = match event {
                Ok(event) => tracker.observe(event),
                Err(e) => {
                    tracing::warn!(error = %e, "node watch failed; retrying");
                    false
                }
            };
            futures::future::ready(trigger.then_some(()))
        })
}

/// Runs the pool controller until `shutdown` (then lets running reconciles finish).
pub async fn run(ctx: Arc<Context>, shutdown: Shutdown) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<InferencePool>::all(client.clone()),
        watcher::Config::default(),
    );
    let pools = controller.store();
    let pctx = Arc::new(PoolContext {
        ctx,
        pools: Some(pools),
    });
    controller
        .watches(
            Api::<ModelDeployment>::all(client.clone()),
            watcher::Config::default(),
            |md| Some(ObjectRef::<InferencePool>::new(&md.spec.pool_ref)),
        )
        .reconcile_all_on(node_changes(client))
        .graceful_shutdown_on(async move { shutdown.wait().await })
        .run(reconcile_measured, error_policy, pctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "pool controller event");
            }
        })
        .await;
    tracing::info!("InferencePool controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_peers_are_the_throttled_others_of_the_pool() {
        let md = |ns: &str, name: &str, pool: &str, capped: bool| -> ModelDeployment {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"model": {"source": "bundled://m"}, "poolRef": pool},
                "status": {"conditions": [{
                    "type": "QuotaExceeded", "status": if capped {"True"} else {"False"},
                    "reason": "R", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z",
                }]},
            }))
            .unwrap()
        };
        let all = [
            md("a", "chat", "p", true),
            md("a", "embed", "p", true),
            md("b", "chat", "p", false),
            md("c", "x", "other", true),
        ];
        let got = capped_peers(&all[0], all.iter());
        assert_eq!(got, vec![ObjectRef::from_obj(&all[1])]);
        // A deployment that is gone still names its peers.
        let gone = md("b", "gone", "p", false);
        assert_eq!(capped_peers(&gone, all.iter()).len(), 2);
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    #[test]
    fn only_label_changes_arrivals_departures_and_relists_trigger() {
        let mut t = NodeLabelTracker::default();
        assert!(!t.observe(watcher::Event::Init));
        assert!(!t.observe(watcher::Event::InitApply(node("a", &[("x", "1")]))));
        assert!(t.observe(watcher::Event::InitDone));
        // A status heartbeat: same labels, no trigger.
        assert!(!t.observe(watcher::Event::Apply(node("a", &[("x", "1")]))));
        assert!(t.observe(watcher::Event::Apply(node("a", &[("x", "2")]))));
        assert!(t.observe(watcher::Event::Apply(node("b", &[]))));
        assert!(!t.observe(watcher::Event::Apply(node("b", &[]))));
        assert!(t.observe(watcher::Event::Delete(node("b", &[]))));
        // A cordon changes where pods may run.
        let mut cordoned = node("a", &[("x", "2")]);
        cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert!(t.observe(watcher::Event::Apply(cordoned.clone())));
        assert!(!t.observe(watcher::Event::Apply(cordoned)));
        assert!(t.observe(watcher::Event::Apply(node("a", &[("x", "2")]))));
        // After a relist the tracker knows only what the relist saw.
        assert!(!t.observe(watcher::Event::Init));
        assert!(t.observe(watcher::Event::InitDone));
        assert!(t.observe(watcher::Event::Apply(node("a", &[("x", "2")]))));
    }

    #[test]
    fn long_event_notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
