//! Names, labels, annotations and owner references shared by every child object.
//!
//! Names (for a ModelDeployment `m`): Deployment, client Service and PodDisruptionBudget `m`;
//! ConfigMap `m-config`; with N > 1 shards, StatefulSets `m-shard-0` .. `m-shard-(N-1)` and the
//! headless Service `m-shards`, so pod `g` of shard `i` is
//! `m-shard-i-g.m-shards.<namespace>.svc`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

use super::unrenderable;
use crate::crd::ModelDeployment;
use crate::error::Result;

/// `app.kubernetes.io/name` of every server object.
pub const APP_NAME: &str = "ryzanstein-server";
/// `app.kubernetes.io/managed-by` of every object the operator writes.
pub const MANAGED_BY: &str = "ryzanstein-operator";
/// Label key: application name.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label key: the ModelDeployment's name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label key: who manages the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label key on pods (and shard workloads): the pipeline stage, "0" for unsharded models.
pub const LABEL_SHARD: &str = "ryzanstein.dev/shard";
/// Annotation key: the pool the deployment runs in (a pool name may be longer than a label
/// value may be).
pub const ANNOTATION_POOL: &str = "ryzanstein.dev/pool";
/// Annotation key: the tenant the namespace belongs to in that pool.
pub const ANNOTATION_TENANT: &str = "ryzanstein.dev/tenant";
/// Annotation key on pod templates: hash of the ConfigMap's data, so a changed configuration
/// rolls the pods (the server reads it at start).
pub const ANNOTATION_CONFIG_HASH: &str = "ryzanstein.dev/config-hash";

/// Longest StatefulSet name that still leaves room for the `controller-revision-hash` label
/// (`<name>-<hash>` must fit in a 63-character label value).
pub const MAX_STATEFULSET_NAME: usize = 52;

/// Name and namespace of a ModelDeployment, checked once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
}

impl Names {
    /// The names of `md`; an error when it has no name or namespace (not from the API server).
    pub fn of(md: &ModelDeployment) -> Result<Self> {
        let name = md
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| unrenderable(md, "it has no metadata.name"))?;
        let namespace = md
            .metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| unrenderable(md, "it has no metadata.namespace"))?;
        Ok(Self { name, namespace })
    }

    /// The Deployment (1 shard), the client Service and the PodDisruptionBudget.
    pub fn workload(&self) -> String {
        self.name.clone()
    }

    /// The client Service (selects shard 0, which serves the API).
    pub fn service(&self) -> String {
        self.name.clone()
    }

    /// The ConfigMap with engine options and tenant limits.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.name)
    }

    /// The ConfigMap with each pod's share of the tenant's request and token limits.
    pub fn limits_config_map(&self) -> String {
        format!("{}-limits", self.name)
    }

    /// The StatefulSet of shard `i` (N > 1 shards).
    pub fn stateful_set(&self, shard: i32) -> String {
        format!("{}-shard-{shard}", self.name)
    }

    /// The headless Service that gives shard pods stable DNS names (N > 1 shards).
    pub fn headless_service(&self) -> String {
        format!("{}-shards", self.name)
    }

    /// The PodDisruptionBudget.
    pub fn pod_disruption_budget(&self) -> String {
        self.name.clone()
    }

    /// `http://<service>.<namespace>.svc:8080/v1`, the OpenAI-compatible base URL.
    pub fn endpoint(&self) -> String {
        format!(
            "http://{}.{}.svc:{}/v1",
            self.service(),
            self.namespace,
            super::SERVER_PORT
        )
    }

    /// DNS domain of shard pods: `<headless>.<namespace>.svc`.
    pub fn shard_domain(&self) -> String {
        format!("{}.{}.svc", self.headless_service(), self.namespace)
    }
}

/// The labels on every child: name, instance and managed-by.
pub fn common_labels(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), names.name.clone()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ])
}

/// Labels that select all server pods of the deployment (every shard).
pub fn selector_labels(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), names.name.clone()),
    ])
}

/// Labels that select the server pods of shard `shard`.
pub fn shard_selector_labels(names: &Names, shard: i32) -> BTreeMap<String, String> {
    let mut labels = selector_labels(names);
    labels.insert(LABEL_SHARD.to_owned(), shard.to_string());
    labels
}

/// `matchLabels` selector.
pub fn label_selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}

/// The selector of the pods serving the API (shard 0) as a string, for `status.selector` (the
/// scale subresource's label selector): `app.kubernetes.io/instance=m,app.kubernetes.io/name=ryzanstein-server,ryzanstein.dev/shard=0`.
pub fn selector_string(names: &Names) -> String {
    shard_selector_labels(names, 0)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The owner reference every child carries: the ModelDeployment, as controller, blocking its
/// deletion until the child is gone (foreground deletion).
pub fn owner_reference(md: &ModelDeployment) -> Result<OwnerReference> {
    let mut owner = md.controller_owner_ref(&()).ok_or_else(|| {
        unrenderable(
            md,
            "it has no metadata.uid (render objects read from the API server)",
        )
    })?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// Metadata of a child: name, namespace, common labels (plus `extra_labels`), the pool and
/// tenant annotations, and the owner reference.
pub fn child_meta(
    names: &Names,
    name: String,
    owner: &OwnerReference,
    extra_labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> ObjectMeta {
    let mut labels = common_labels(names);
    labels.extend(extra_labels.clone());
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// FNV-1a (64-bit) of `bytes` as 16 hex digits: a hash that stays the same across Rust versions
/// and operator builds, so pods roll only when their configuration changes.
pub fn stable_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            name: "smollm2".into(),
            namespace: "team-a".into(),
        }
    }

    #[test]
    fn child_names_and_endpoint() {
        let n = names();
        assert_eq!(n.workload(), "smollm2");
        assert_eq!(n.config_map(), "smollm2-config");
        assert_eq!(n.stateful_set(3), "smollm2-shard-3");
        assert_eq!(n.headless_service(), "smollm2-shards");
        assert_eq!(n.endpoint(), "http://smollm2.team-a.svc:8080/v1");
        assert_eq!(n.shard_domain(), "smollm2-shards.team-a.svc");
    }

    #[test]
    fn selector_string_selects_shard_zero() {
        assert_eq!(
            selector_string(&names()),
            "app.kubernetes.io/instance=smollm2,app.kubernetes.io/name=ryzanstein-server,ryzanstein.dev/shard=0"
        );
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(stable_hash(b""), "cbf29ce484222325");
        assert_eq!(stable_hash(b"a"), "af63dc4c8601ec8c");
        assert_ne!(stable_hash(b"ab"), stable_hash(b"ba"));
    }
}
