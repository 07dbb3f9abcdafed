//! The ModelDeployment controller: resolves the pool and the tenant, caps the replicas at what
//! the tenant's quota and the pool's capacity leave, renders the children with the pure render
//! functions, applies them with server-side apply under the operator's one field manager,
//! deletes children a new render no longer has (a shard count change), writes the status with
//! server-side apply, publishes events on its decisions and the condition gauge.
//!
//! Every reconcile, in this order (the tests script the API calls in it):
//! 1. GET the InferencePool (missing: `PoolReady=False, PoolNotFound`, no children);
//! 2. resolve the tenant (not admitted: `PoolReady=False, NamespaceNotAdmitted`, no children);
//! 3. LIST every ModelDeployment, to add up what the tenant's and the pool's others use (the
//!    larger of their status and their last grant, under the lock of [`crate::grants`]), and
//!    cap the replicas (the autoscaler's decision, or `spec.replicas`);
//! 4. LIST this deployment's existing children of each kind (Deployments, StatefulSets,
//!    Services, ConfigMaps, PodDisruptionBudgets; by label, then by controller owner uid);
//! 5. DELETE the children that are no longer rendered (before applying, so the old topology's
//!    pods never run beside the new one's beyond the quota);
//! 6. PATCH (apply) ConfigMap, headless Service, StatefulSets or Deployment, Service, PDB
//!    (and LIST the `FailedCreate` events of a StatefulSet that lacks pods);
//! 7. PATCH (apply) the status; 8. POST the events.
//!
//! Besides its own changes and its children's, a deployment is reconciled when its pool
//! changes, when the autoscaler decides, and — if the quota capped it — when another deployment
//! of its pool changes or is deleted (it may have freed quota).
//!
//! A finalizer (`ryzanstein.dev/cleanup`) lets the controller drop the deployment's condition
//! gauge when it is deleted; owner references make Kubernetes delete the children.
//!
//! The pure work (desired replicas, what the workloads report, conditions, which changes earn
//! an event) is in [`crate::deployment_status`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as FinalizerEvent};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::autoscaler::{self, ScaleView};
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{InferencePool, ModelDeployment, ModelDeploymentStatus};
use crate::deployment_status::{
    condition_events, conditions, desired_replicas, failed_create, missing_pods,
    observe_deployment, observe_stateful_sets, Failure, Observed, Outcome,
};
use crate::error::{Error, Result};
use crate::grants::larger;
use crate::metrics::ControllerKind;
use crate::pool_controller::{capped_peers, deployments_in_pool, list_deployments_in_pool};
use crate::pool_status::deployment_footprint;
use crate::render::meta::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY};
use crate::render::{
    cap_replicas, render, resolve_tenant, shards, ChildRef, Children, Footprint, PodResources,
    QuotaDecision, QuotaInput, RenderOptions, Scale, TenantRef, Workload,
};
use crate::shutdown::Shutdown;

/// The finalizer that lets the controller forget a deleted deployment's metrics.
pub const FINALIZER: &str = "ryzanstein.dev/cleanup";
/// How often a deployment is reconciled when nothing triggers it.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon a failed reconcile, or one waiting for its pool, is retried.
pub const RETRY: Duration = Duration::from_secs(30);
/// Longest event note written (the API server refuses notes over 1 kB).
const NOTE_MAX: usize = 1000;

fn object_name(md: &ModelDeployment) -> String {
    format!(
        "ModelDeployment {}/{}",
        md.namespace().unwrap_or_default(),
        md.name_any()
    )
}

/// Reconciles one ModelDeployment behind the cleanup finalizer: adds it first (the next
/// reconcile does the work), runs [`apply`] while the object lives, [`cleanup`] once it is
/// being deleted, then removes it.
#[tracing::instrument(skip_all, fields(md = %object_name(&md)))]
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let object = object_name(&md);
    let namespace = md.namespace().ok_or_else(|| Error::Unrenderable {
        object: object.clone(),
        reason: "it has no metadata.namespace".into(),
    })?;
    let api = Api::<ModelDeployment>::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, md, |event| async move {
        match event {
            FinalizerEvent::Apply(md) => apply(md, ctx).await,
            FinalizerEvent::Cleanup(md) => Ok(cleanup(&md, &ctx).await),
        }
    })
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        FinalizerError::AddFinalizer(e) => {
            Error::kube(format!("add the finalizer {FINALIZER} to {object}"), e)
        }
        FinalizerError::RemoveFinalizer(e) => {
            Error::kube(format!("remove the finalizer {FINALIZER} from {object}"), e)
        }
        FinalizerError::UnnamedObject => Error::Unrenderable {
            object,
            reason: "it has no metadata.name".into(),
        },
        FinalizerError::InvalidFinalizer => Error::Unrenderable {
            object,
            reason: format!("the finalizer {FINALIZER} is not a valid JSON pointer segment"),
        },
    })
}

/// A deployment is going away: its children go with it (owner references), its gauge goes
/// here.
pub async fn cleanup(md: &ModelDeployment, ctx: &Context) -> Action {
    ctx.grants.forget(md).await;
    let namespace = md.namespace().unwrap_or_default();
    ctx.metrics
        .forget_modeldeployment(&namespace, &md.name_any());
    tracing::info!("ModelDeployment deleted; its children are garbage-collected");
    Action::await_change()
}

/// What the reconcile decided, for the status and the events.
struct Applied {
    tenant: TenantRef,
    desired: i32,
    scale: Option<ScaleView>,
    decision: QuotaDecision,
    children: Children,
    observed: Observed,
    notes: Vec<(&'static str, Vec<String>)>,
}

/// Reconciles a live deployment (see the module documentation for the steps).
pub async fn apply(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let pool_name = md.spec.pool_ref.clone();
    let opts = ctx.config.render_options();
    let now = Timestamp::now();

    let pool = Api::<InferencePool>::all(ctx.client.clone())
        .get_opt(&pool_name)
        .await
        .map_err(|e| Error::kube(format!("get InferencePool {pool_name}"), e))?;
    let Some(pool) = pool else {
        let outcome = Outcome::PoolNotFound { pool: &pool_name };
        finish(&md, &ctx, &outcome, None, &[], now).await?;
        return Ok(Action::requeue(RETRY));
    };
    let tenant = match resolve_tenant(&pool, &namespace) {
        Ok(t) => t,
        Err(na) => {
            finish(&md, &ctx, &Outcome::NotAdmitted(&na), None, &[], now).await?;
            return Ok(Action::requeue(RESYNC));
        }
    };

    let applied = match plan_and_apply(&md, &ctx, &pool, tenant, &opts).await {
        Ok(a) => a,
        Err(e @ (Error::Unrenderable { .. } | Error::InvalidQuantity { .. })) => {
            let outcome = Outcome::Invalid {
                message: e.to_string(),
            };
            finish(&md, &ctx, &outcome, None, &[], now).await?;
            return Ok(Action::requeue(RESYNC));
        }
        Err(e) => return Err(e),
    };
    let outcome = Outcome::Running {
        pool: &pool,
        tenant: &applied.tenant,
        desired: applied.desired,
        decision: &applied.decision,
        observed: &applied.observed,
    };
    finish(&md, &ctx, &outcome, Some(&applied), &applied.notes, now).await?;
    tracing::debug!(
        namespace,
        name,
        replicas = applied.decision.replicas,
        "ModelDeployment reconciled"
    );
    Ok(Action::requeue(RESYNC))
}

/// Quota, render, stale deletion and apply (steps 3 to 6).
async fn plan_and_apply(
    md: &ModelDeployment,
    ctx: &Context,
    pool: &InferencePool,
    tenant: TenantRef,
    opts: &RenderOptions,
) -> Result<Applied> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let per_pod = PodResources::of(md, pool, opts)?;
    let scale = ctx.autoscaler.view(md);
    let desired = scale
        .as_ref()
        .map_or_else(|| desired_replicas(md), |v| v.desired);

    // One quota decision at a time, counting what the others were granted (see `grants`).
    let mut grants = ctx.grants.lock().await;
    let others = list_deployments_in_pool(&ctx.client, &md.spec.pool_ref).await?;
    let (tenant_used, pool_used) = usage_of_others(md, pool, &tenant, &others, opts, |other| {
        grants.granted(other, &md.spec.pool_ref)
    });
    let decision = cap_replicas(&QuotaInput {
        pool,
        tenant: &tenant,
        tenant_used,
        pool_used,
        per_pod: Footprint::pod(&per_pod),
        shards: shards(md),
        desired,
    })?;
    grants.record(
        md,
        &md.spec.pool_ref,
        Footprint::of_deployment(&per_pod, decision.replicas, shards(md)),
    );
    drop(grants);
    ctx.autoscaler
        .set_allowed(md, decision.cap.is_some().then_some(decision.replicas));
    let render_scale = Scale {
        replicas: decision.replicas,
        tenant_pods_elsewhere: tenant_used.pods,
    };
    let children = render(md, pool, &tenant, render_scale, opts)?;

    let uid = md.metadata.uid.clone().unwrap_or_default();
    let existing = existing_children(ctx, &namespace, &name, &uid).await?;
    let wanted = children.refs();
    let mut deleted = Vec::new();
    for stale in existing.keys().filter(|r| !wanted.contains(r)) {
        delete_child(ctx, &namespace, stale).await?;
        deleted.push(format!("{} {}", stale.kind, stale.name));
    }

    let mut tracker = ChangeTracker {
        existing: &existing,
        created: Vec::new(),
        updated: Vec::new(),
    };
    let client = &ctx.client;
    let cm = apply_child(client, &namespace, &children.config_map).await?;
    tracker.saw("ConfigMap", &cm);
    let limits = apply_child(client, &namespace, &children.limits_config_map).await?;
    tracker.saw("ConfigMap", &limits);
    let observed = match &children.workload {
        Workload::Deployment(d) => {
            let applied = apply_child(client, &namespace, d.as_ref()).await?;
            tracker.saw("Deployment", &applied);
            observe_deployment(&applied)
        }
        Workload::Sharded {
            stateful_sets,
            headless_service,
        } => {
            let svc = apply_child(client, &namespace, headless_service.as_ref()).await?;
            tracker.saw("Service", &svc);
            let mut sets = Vec::with_capacity(stateful_sets.len());
            for s in stateful_sets {
                let applied = apply_child(client, &namespace, s).await?;
                tracker.saw("StatefulSet", &applied);
                sets.push(applied);
            }
            let mut observed = observe_stateful_sets(&sets);
            if observed.failure.is_none() {
                observed.failure = stateful_set_failure(ctx, &namespace, &sets).await?;
            }
            observed
        }
    };
    let svc = apply_child(client, &namespace, &children.service).await?;
    tracker.saw("Service", &svc);
    let pdb = apply_child(client, &namespace, &children.pod_disruption_budget).await?;
    tracker.saw("PodDisruptionBudget", &pdb);

    let notes = vec![
        ("Created", tracker.created),
        ("Updated", tracker.updated),
        ("Deleted", deleted),
    ];
    Ok(Applied {
        tenant,
        desired,
        scale,
        decision,
        children,
        observed,
        notes,
    })
}

/// Why a StatefulSet that lacks pods cannot create them: its newest `FailedCreate` event (for
/// example a namespace ResourceQuota refusing the pod).
async fn stateful_set_failure(
    ctx: &Context,
    namespace: &str,
    sets: &[StatefulSet],
) -> Result<Option<Failure>> {
    for set in sets.iter().filter(|s| missing_pods(s)) {
        let name = set.metadata.name.clone().unwrap_or_default();
        let fields = format!(
            "involvedObject.kind=StatefulSet,involvedObject.name={name},reason=FailedCreate"
        );
        let events = Api::<CoreEvent>::namespaced(ctx.client.clone(), namespace)
            .list(&ListParams::default().fields(&fields))
            .await
            .map_err(|e| {
                Error::kube(
                    format!("list the events of StatefulSet {namespace}/{name}"),
                    e,
                )
            })?;
        if let Some(f) = failed_create(&name, &events.items) {
            return Ok(Some(f));
        }
    }
    Ok(None)
}

/// What the pool's other deployments use: those of the same tenant, and all of them (the
/// tenant's included). Each uses the larger of what its status reports and what `granted`
/// says it was last granted. A deployment whose resources cannot be computed is left out (it
/// has no pods this operator created) with a warning.
pub fn usage_of_others(
    md: &ModelDeployment,
    pool: &InferencePool,
    tenant: &TenantRef,
    deployments: &[ModelDeployment],
    opts: &RenderOptions,
    granted: impl Fn(&ModelDeployment) -> Option<Footprint>,
) -> (Footprint, Footprint) {
    let me = (md.namespace(), md.name_any());
    let mut tenant_used = Footprint::default();
    let mut pool_used = Footprint::default();
    for other in deployments {
        if (other.namespace(), other.name_any()) == me {
            continue;
        }
        let used = match deployment_footprint(other, pool, opts) {
            Ok(f) => granted(other).map_or(f, |g| larger(f, g)),
            Err(e) => {
                tracing::warn!(other = %object_name(other), error = %e, "left out of the quota: its resources cannot be computed");
                continue;
            }
        };
        pool_used = pool_used + used;
        let same_tenant = resolve_tenant(pool, &other.namespace().unwrap_or_default())
            .is_ok_and(|t| t.name == tenant.name);
        if same_tenant {
            tenant_used = tenant_used + used;
        }
    }
    (tenant_used, pool_used)
}

/// What tells whether an apply changed a child: its `generation` where the kind has one (so
/// status updates of a workload are not mistaken for changes), else its `resourceVersion`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    generation: Option<i64>,
    resource_version: Option<String>,
}

impl Version {
    fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        Self {
            generation: meta.generation,
            resource_version: meta.resource_version.clone(),
        }
    }

    fn changed_to(&self, after: &Self) -> bool {
        match (self.generation, after.generation) {
            (Some(a), Some(b)) => a != b,
            _ => self.resource_version != after.resource_version,
        }
    }
}

struct ChangeTracker<'a> {
    existing: &'a BTreeMap<ChildRef, Version>,
    created: Vec<String>,
    updated: Vec<String>,
}

impl ChangeTracker<'_> {
    fn saw<K: Resource>(&mut self, kind: &'static str, applied: &K) {
        let name = applied.meta().name.clone().unwrap_or_default();
        let key = ChildRef {
            kind,
            name: name.clone(),
        };
        match self.existing.get(&key) {
            None => self.created.push(format!("{kind} {name}")),
            Some(before) if before.changed_to(&Version::of(applied.meta())) => {
                self.updated.push(format!("{kind} {name}"))
            }
            Some(_) => {}
        }
    }
}

/// Server-side applies `object` under the operator's field manager, taking over conflicting
/// fields; returns the object as stored (with its status).
pub async fn apply_child<K>(client: &kube::Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|e| Error::kube(format!("apply {} {namespace}/{name}", K::kind(&())), e))
}

async fn list_owned<K>(
    ctx: &Context,
    namespace: &str,
    selector: &str,
    uid: &str,
    kind: &'static str,
    into: &mut BTreeMap<ChildRef, Version>,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let list = Api::<K>::namespaced(ctx.client.clone(), namespace)
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::kube(format!("list {kind}s in {namespace}"), e))?;
    for item in list.items {
        let owned = item
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true));
        if owned {
            into.insert(
                ChildRef {
                    kind,
                    name: item.metadata.name.clone().unwrap_or_default(),
                },
                Version::of(&item.metadata),
            );
        }
    }
    Ok(())
}

/// This deployment's children as they exist (kind and name → version): objects with
/// its instance label, managed by the operator, whose controller owner is this deployment.
async fn existing_children(
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<BTreeMap<ChildRef, Version>> {
    let selector = format!("{LABEL_INSTANCE}={name},{LABEL_MANAGED_BY}={MANAGED_BY}");
    let mut found = BTreeMap::new();
    list_owned::<Deployment>(ctx, namespace, &selector, uid, "Deployment", &mut found).await?;
    list_owned::<StatefulSet>(ctx, namespace, &selector, uid, "StatefulSet", &mut found).await?;
    list_owned::<Service>(ctx, namespace, &selector, uid, "Service", &mut found).await?;
    list_owned::<ConfigMap>(ctx, namespace, &selector, uid, "ConfigMap", &mut found).await?;
    list_owned::<PodDisruptionBudget>(
        ctx,
        namespace,
        &selector,
        uid,
        "PodDisruptionBudget",
        &mut found,
    )
    .await?;
    Ok(found)
}

async fn delete_one<K>(ctx: &Context, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    match Api::<K>::namespaced(ctx.client.clone(), namespace)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(Error::kube(
            format!("delete {} {namespace}/{name}", K::kind(&())),
            e,
        )),
    }
}

async fn delete_child(ctx: &Context, namespace: &str, child: &ChildRef) -> Result<()> {
    let name = child.name.as_str();
    match child.kind {
        "Deployment" => delete_one::<Deployment>(ctx, namespace, name).await,
        "StatefulSet" => delete_one::<StatefulSet>(ctx, namespace, name).await,
        "Service" => delete_one::<Service>(ctx, namespace, name).await,
        "ConfigMap" => delete_one::<ConfigMap>(ctx, namespace, name).await,
        "PodDisruptionBudget" => delete_one::<PodDisruptionBudget>(ctx, namespace, name).await,
        other => Err(Error::Unrenderable {
            object: format!("{other} {namespace}/{name}"),
            reason: "the operator does not manage this kind".into(),
        }),
    }
}

/// The status for `outcome`: what the reconcile found, the conditions, the autoscaler's
/// decision (`desiredReplicas`, `load`, `lastScaleTime`), and what it does not decide carried
/// over (without an apply the last replica counts, selector and endpoint, load and scale time;
/// the children of an earlier apply are left running). Without a pool or
/// tenant, `tenant` and `hardware` are cleared.
pub fn status(
    md: &ModelDeployment,
    outcome: &Outcome<'_>,
    applied: Option<&AppliedView<'_>>,
    now: Timestamp,
) -> ModelDeploymentStatus {
    let previous = md.status.clone().unwrap_or_default();
    let conditions = conditions(md, outcome, now);
    let mut s = ModelDeploymentStatus {
        observed_generation: md.metadata.generation,
        conditions,
        load: previous.load.clone(),
        last_scale_time: previous.last_scale_time.clone(),
        desired_replicas: Some(desired_replicas(md)),
        ..previous
    };
    if matches!(
        outcome,
        Outcome::PoolNotFound { .. } | Outcome::NotAdmitted(_)
    ) {
        // No pool, or no tenant in it: nothing to report for either.
        s.tenant = None;
        s.hardware = None;
    }
    if let Some(a) = applied {
        s.tenant = Some(a.tenant.name.clone());
        s.hardware = Some(a.children.hardware.clone());
        s.replicas = a.observed.replicas;
        s.ready_replicas = a.observed.ready_replicas;
        s.desired_replicas = Some(a.desired);
        if let Some(scale) = a.scale {
            s.load = scale.load.clone().or(s.load);
            s.last_scale_time = scale.last_scale_time.clone().or(s.last_scale_time);
        }
        s.selector = Some(a.children.selector.clone());
        s.endpoint = Some(a.children.endpoint.clone());
    }
    s
}

/// The parts of a successful apply the status reports.
pub struct AppliedView<'a> {
    /// The tenant.
    pub tenant: &'a TenantRef,
    /// Replica groups wanted before the quota.
    pub desired: i32,
    /// The autoscaler's decision, when it made one.
    pub scale: Option<&'a ScaleView>,
    /// The rendered children.
    pub children: &'a Children,
    /// What the workloads report.
    pub observed: &'a Observed,
}

/// Status, events, gauge (steps 7 and 8).
async fn finish(
    md: &ModelDeployment,
    ctx: &Context,
    outcome: &Outcome<'_>,
    applied: Option<&Applied>,
    notes: &[(&'static str, Vec<String>)],
    now: Timestamp,
) -> Result<()> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let view = applied.map(|a| AppliedView {
        tenant: &a.tenant,
        desired: a.desired,
        scale: a.scale.as_ref(),
        children: &a.children,
        observed: &a.observed,
    });
    let status = status(md, outcome, view.as_ref(), now);
    let patch = json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": status,
    });
    Api::<ModelDeployment>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| {
            Error::kube(
                format!("apply the status of ModelDeployment {namespace}/{name}"),
                e,
            )
        })?;
    ctx.metrics
        .set_modeldeployment_conditions(&namespace, &name, &status.conditions);

    let mut events: Vec<Event> = notes
        .iter()
        .filter(|(_, objects)| !objects.is_empty())
        .map(|(reason, objects)| Event {
            type_: EventType::Normal,
            reason: (*reason).to_owned(),
            note: Some(truncate(
                &format!("{} {}", reason.to_lowercase(), objects.join(", ")),
                NOTE_MAX,
            )),
            action: "ApplyChildren".into(),
            secondary: None,
        })
        .collect();
    let previous = md
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    events.extend(
        condition_events(previous, &status.conditions)
            .into_iter()
            .map(|e| Event {
                type_: if e.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: e.reason,
                note: Some(truncate(&e.note, NOTE_MAX)),
                action: e.action.into(),
                secondary: None,
            }),
    );
    if let Some(event) = applied.and_then(|a| scale_event(md, a.scale.as_ref(), &status)) {
        events.push(event);
    }
    let reference = md.object_ref(&());
    for event in &events {
        if let Err(e) = ctx.recorder.publish(event, &reference).await {
            tracing::warn!(error = %e, reason = %event.reason, "could not publish an event on the ModelDeployment");
        }
    }
    Ok(())
}

/// `ScaledUp` / `ScaledDown` when the autoscaler changed the desired replica groups since the
/// status last said.
fn scale_event(
    md: &ModelDeployment,
    scale: Option<&ScaleView>,
    status: &ModelDeploymentStatus,
) -> Option<Event> {
    let before = md.status.as_ref()?.desired_replicas?;
    let after = status.desired_replicas?;
    let reason = scale?.reason.clone()?;
    let up = match after.cmp(&before) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => return None,
    };
    Some(Event {
        type_: EventType::Normal,
        reason: if up { "ScaledUp" } else { "ScaledDown" }.into(),
        note: Some(truncate(&reason, NOTE_MAX)),
        action: "Autoscale".into(),
        secondary: None,
    })
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
pub async fn reconcile_measured(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile(md, ctx.clone()).await;
    ctx.metrics.reconciled(
        ControllerKind::modeldeployment,
        started.elapsed(),
        result.as_ref().map(|_| ()),
    );
    result
}

/// Logs a failed reconcile and retries it after [`RETRY`] (the failure is already counted).
pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(md = %object_name(&md), reason = error.metric_label(), error = %error, "ModelDeployment reconcile failed; retrying");
    Action::requeue(RETRY)
}

/// Runs the ModelDeployment controller and the autoscaler until `shutdown` (then lets running
/// reconciles finish): it reconciles a deployment when it changes, when one of its children
/// changes, when its pool changes, and when the autoscaler decides.
pub async fn run(ctx: Arc<Context>, shutdown: Shutdown) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<ModelDeployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let deployments = controller.store();
    // The autoscaler reads the same cache and asks for reconciles through this channel.
    let (trigger_tx, trigger_rx) = tokio::sync::mpsc::channel(256);
    let autoscaler_loop = autoscaler::run(
        client.clone(),
        ctx.autoscaler.clone(),
        ctx.metrics.clone(),
        ctx.config.autoscaler.clone(),
        deployments.clone(),
        trigger_tx,
        shutdown.clone(),
    );
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let controller = controller
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), owned)
        // A deployment that shrinks or goes away may free quota that capped ones wait for.
        .watches(
            Api::<ModelDeployment>::all(client.clone()),
            watcher::Config::default(),
            {
                let deployments = deployments.clone();
                move |md| {
                    let state = deployments.state();
                    capped_peers(&md, state.iter().map(Arc::as_ref))
                }
            },
        )
        .watches(
            Api::<InferencePool>::all(client.clone()),
            watcher::Config::default(),
            move |pool| {
                let state = deployments.state();
                deployments_in_pool(&pool.name_any(), state.iter().map(Arc::as_ref))
            },
        )
        .reconcile_on(tokio_stream::wrappers::ReceiverStream::new(trigger_rx))
        .graceful_shutdown_on(async move { shutdown.wait().await })
        .run(reconcile_measured, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "ModelDeployment controller event");
            }
        });
    tokio::join!(controller, autoscaler_loop);
    tracing::info!("ModelDeployment controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_event_notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
