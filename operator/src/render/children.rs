//! Every object a ModelDeployment owns.
//!
//! - 1 shard: a Deployment `m` of `replicas` pods (rolling update with `maxSurge: 0`, so an
//!   update never runs more pods than the quota was checked for).
//! - N > 1 shards: a StatefulSet `m-shard-i` of `replicas` pods per shard (parallel pod
//!   management: groups do not start in order) and the headless Service `m-shards` that gives
//!   each pod a stable name; replica group `g` is pod `g` of every StatefulSet. The headless
//!   Service publishes pods before they are ready, because shard 0 only becomes ready once the
//!   later stages answer.
//! - The client Service `m` (port 8080, named `http`) selects shard 0, which serves the API.
//! - The PodDisruptionBudget `m` allows one server pod of the deployment (any shard) to be
//!   evicted at a time: at most one replica group is broken by a drain, and a single-replica
//!   deployment never blocks a node drain forever (as `minAvailable: 1` would). Pods that are
//!   not ready (still loading) may always be evicted.
//! - The ConfigMap `m-config` with the engine options and the tenant's limits for the pool.
//! - The ConfigMap `m-limits` with each pod's share of the tenant's request and token limits,
//!   which the servers enforce (see [`super::limits`]).
//!
//! Every object carries the common labels, the namespace, the pool and tenant annotations and a
//! controller owner reference to the ModelDeployment with `blockOwnerDeletion`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{config_file, config_map};
use super::limits::{limits_config_map, limits_file};
use super::meta::{
    child_meta, label_selector, owner_reference, selector_labels, selector_string,
    shard_selector_labels, stable_hash, Names, ANNOTATION_POOL, ANNOTATION_TENANT, LABEL_SHARD,
    MAX_STATEFULSET_NAME,
};
use super::placement::{describe, placement};
use super::pod::{pod_template, PodInputs};
use super::resources::PodResources;
use super::tenant::TenantRef;
use super::{shards, unrenderable, RenderOptions, Scale, PORT_NAME, SERVER_PORT};
use crate::crd::{InferencePool, ModelDeployment};
use crate::error::Result;

/// The pods: one Deployment, or a StatefulSet per shard with their headless Service.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// One shard.
    Deployment(Box<Deployment>),
    /// N > 1 shards.
    Sharded {
        /// StatefulSet of shard `i` at index `i`.
        stateful_sets: Vec<StatefulSet>,
        /// The headless Service of all shard pods.
        headless_service: Box<Service>,
    },
}

/// Every child of a ModelDeployment, plus what its status reports about them.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// The pods.
    pub workload: Workload,
    /// The client Service (shard 0).
    pub service: Service,
    /// The PodDisruptionBudget.
    pub pod_disruption_budget: PodDisruptionBudget,
    /// Engine options and tenant limits.
    pub config_map: ConfigMap,
    /// Each pod's share of the tenant's limits (not in the pods' config hash: it changes with
    /// the tenant's scale, and the servers reload it).
    pub limits_config_map: ConfigMap,
    /// `status.selector`: the pods serving the API.
    pub selector: String,
    /// `status.endpoint`: the OpenAI-compatible base URL.
    pub endpoint: String,
    /// `status.hardware`: the pool and its hardware.
    pub hardware: String,
    /// One server pod's resources (for usage accounting).
    pub pod_resources: PodResources,
}

/// Kind and name of a child, to find children that a new render no longer has (a Deployment
/// after switching to shards, StatefulSets after shards shrink).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChildRef {
    /// `Deployment`, `StatefulSet`, `Service`, `PodDisruptionBudget`, `ConfigMap`.
    pub kind: &'static str,
    /// `metadata.name`.
    pub name: String,
}

impl Children {
    /// Every child's kind and name.
    pub fn refs(&self) -> Vec<ChildRef> {
        let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.name.clone().unwrap_or_default()
        };
        let mut refs = Vec::new();
        match &self.workload {
            Workload::Deployment(d) => refs.push(ChildRef {
                kind: "Deployment",
                name: name(&d.metadata),
            }),
            Workload::Sharded {
                stateful_sets,
                headless_service,
            } => {
                refs.extend(stateful_sets.iter().map(|s| ChildRef {
                    kind: "StatefulSet",
                    name: name(&s.metadata),
                }));
                refs.push(ChildRef {
                    kind: "Service",
                    name: name(&headless_service.metadata),
                });
            }
        }
        refs.push(ChildRef {
            kind: "Service",
            name: name(&self.service.metadata),
        });
        refs.push(ChildRef {
            kind: "PodDisruptionBudget",
            name: name(&self.pod_disruption_budget.metadata),
        });
        refs.push(ChildRef {
            kind: "ConfigMap",
            name: name(&self.config_map.metadata),
        });
        refs.push(ChildRef {
            kind: "ConfigMap",
            name: name(&self.limits_config_map.metadata),
        });
        refs.sort();
        refs
    }
}

/// See [`super::render`].
pub fn children(
    md: &ModelDeployment,
    pool: &InferencePool,
    tenant: &TenantRef,
    scale: Scale,
    opts: &RenderOptions,
) -> Result<Children> {
    let replicas = scale.replicas;
    let names = Names::of(md)?;
    let owner = owner_reference(md)?;
    if replicas < 0 {
        return Err(unrenderable(
            md,
            format!("{replicas} replicas requested; use 0 or more"),
        ));
    }
    let shards = shards(md);
    if shards > 1 && names.stateful_set(shards - 1).len() > MAX_STATEFULSET_NAME {
        return Err(unrenderable(
            md,
            format!(
                "with {shards} shards its StatefulSets are named up to {} ({} characters), more than Kubernetes allows ({MAX_STATEFULSET_NAME}); use a shorter ModelDeployment name",
                names.stateful_set(shards - 1),
                names.stateful_set(shards - 1).len()
            ),
        ));
    }
    let resources = PodResources::of(md, pool, opts)?;
    let placement = placement(&pool.spec.hardware);
    let annotations = BTreeMap::from([
        (
            ANNOTATION_POOL.to_owned(),
            pool.metadata.name.clone().unwrap_or_default(),
        ),
        (ANNOTATION_TENANT.to_owned(), tenant.name.clone()),
    ]);

    let file = config_file(md, &names, pool, tenant);
    let config_map = config_map(&names, &owner, &annotations, &file);
    let config_hash = stable_hash(
        config_map
            .data
            .as_ref()
            .and_then(|d| d.values().next())
            .map(String::as_bytes)
            .unwrap_or_default(),
    );
    let tenant_pods =
        scale.tenant_pods_elsewhere + i128::from(replicas.max(0)) * i128::from(shards.max(1));
    let limits = limits_file(tenant, tenant_pods);
    let limits_config_map = limits_config_map(&names, &owner, &annotations, &limits);
    let inputs = PodInputs {
        md,
        tenant: &tenant.name,
        names: &names,
        resources: &resources,
        placement: &placement,
        opts,
        annotations: &annotations,
        config_hash: &config_hash,
    };

    let workload = if shards == 1 {
        Workload::Deployment(Box::new(deployment(&inputs, &owner, replicas)?))
    } else {
        Workload::Sharded {
            stateful_sets: (0..shards)
                .map(|i| stateful_set(&inputs, &owner, replicas, i))
                .collect::<Result<_>>()?,
            headless_service: Box::new(headless_service(&names, &owner, &annotations)),
        }
    };

    Ok(Children {
        workload,
        service: client_service(&names, &owner, &annotations),
        pod_disruption_budget: pod_disruption_budget(&names, &owner, &annotations),
        config_map,
        limits_config_map,
        selector: selector_string(&names),
        endpoint: names.endpoint(),
        hardware: describe(pool),
        pod_resources: resources,
    })
}

fn shard_labels(shard: i32) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_SHARD.to_owned(), shard.to_string())])
}

fn deployment(inputs: &PodInputs<'_>, owner: &OwnerReference, replicas: i32) -> Result<Deployment> {
    let names = inputs.names;
    Ok(Deployment {
        metadata: child_meta(
            names,
            names.workload(),
            owner,
            &shard_labels(0),
            inputs.annotations,
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: label_selector(shard_selector_labels(names, 0)),
            template: pod_template(inputs, 0)?,
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            revision_history_limit: Some(3),
            // Downloading a large model may take a while before the first pod is ready.
            progress_deadline_seconds: Some(super::pod::STARTUP_SECONDS),
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

fn stateful_set(
    inputs: &PodInputs<'_>,
    owner: &OwnerReference,
    replicas: i32,
    shard: i32,
) -> Result<StatefulSet> {
    let names = inputs.names;
    Ok(StatefulSet {
        metadata: child_meta(
            names,
            names.stateful_set(shard),
            owner,
            &shard_labels(shard),
            inputs.annotations,
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            selector: label_selector(shard_selector_labels(names, shard)),
            service_name: Some(names.headless_service()),
            template: pod_template(inputs, shard)?,
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: None,
            }),
            revision_history_limit: Some(3),
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}

fn http_port() -> ServicePort {
    ServicePort {
        name: Some(PORT_NAME.into()),
        port: SERVER_PORT,
        target_port: Some(IntOrString::String(PORT_NAME.into())),
        protocol: Some("TCP".into()),
        app_protocol: Some("http".into()),
        ..ServicePort::default()
    }
}

fn client_service(
    names: &Names,
    owner: &OwnerReference,
    annotations: &BTreeMap<String, String>,
) -> Service {
    Service {
        metadata: child_meta(names, names.service(), owner, &BTreeMap::new(), annotations),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(shard_selector_labels(names, 0)),
            ports: Some(vec![http_port()]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn headless_service(
    names: &Names,
    owner: &OwnerReference,
    annotations: &BTreeMap<String, String>,
) -> Service {
    Service {
        metadata: child_meta(
            names,
            names.headless_service(),
            owner,
            &BTreeMap::new(),
            annotations,
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(names)),
            ports: Some(vec![http_port()]),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn pod_disruption_budget(
    names: &Names,
    owner: &OwnerReference,
    annotations: &BTreeMap<String, String>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: child_meta(
            names,
            names.pod_disruption_budget(),
            owner,
            &BTreeMap::new(),
            annotations,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(label_selector(selector_labels(names))),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
