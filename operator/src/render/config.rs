//! The ConfigMap of a ModelDeployment: engine options and the tenant's limits, as one JSON file
//! (`config.json`) mounted into every server pod at [`CONFIG_MOUNT_PATH`] (its path is in the
//! pod's `RYZANSTEIN_CONFIG`).
//!
//! The tenant's `requestsPerMinute`, `tokensPerMinute` and `maxConcurrentRequests` are the
//! tenant's own numbers for the whole pool (absent means unlimited). The file holds nothing that
//! changes when the deployment scales: its hash is in the pod template, so a replica count in it
//! would roll every pod on every scale (the end-to-end scenario caught exactly that).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Serialize;

use super::meta::{child_meta, Names};
use super::tenant::TenantRef;
use crate::crd::{Engine, InferencePool, ModelDeployment, ModelSpec};

/// Key of the configuration file in the ConfigMap.
pub const CONFIG_KEY: &str = "config.json";
/// Directory the ConfigMap is mounted at.
pub const CONFIG_MOUNT_PATH: &str = "/etc/ryzanstein";

/// The configuration file's contents.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfigFile {
    /// The model as the ModelDeployment names it.
    pub model: ModelSpec,
    /// The served name clients send.
    pub served_name: String,
    /// Engine options as written (absent ones take the server's defaults).
    pub engine: Engine,
    /// The pool and the tenant's limits in it.
    pub tenant: TenantLimits,
    /// Sharding layout.
    pub sharding: ShardingLayout,
}

/// The tenant's request and token limits in the pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantLimits {
    /// Tenant name.
    pub name: String,
    /// Pool name.
    pub pool: String,
    /// Requests per minute for the whole tenant in the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<i64>,
    /// Prompt plus completion tokens per minute for the whole tenant in the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<i64>,
    /// Requests in flight at once for the whole tenant in the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<i32>,
}

/// How the model is split and where the stages find each other.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardingLayout {
    /// Pipeline stages per replica group.
    pub shards: i32,
    /// DNS domain of shard pods (`<statefulset>-<group>.<domain>`), with more than one shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// The configuration file of `md`.
pub fn config_file(
    md: &ModelDeployment,
    names: &Names,
    pool: &InferencePool,
    tenant: &TenantRef,
) -> ServerConfigFile {
    let quota = tenant.quota.clone().unwrap_or_default();
    let shards = super::shards(md);
    ServerConfigFile {
        model: md.spec.model.clone(),
        served_name: served_name(md, names),
        engine: md.spec.engine.clone().unwrap_or_default(),
        tenant: TenantLimits {
            name: tenant.name.clone(),
            pool: pool.metadata.name.clone().unwrap_or_default(),
            requests_per_minute: quota.requests_per_minute,
            tokens_per_minute: quota.tokens_per_minute,
            max_concurrent_requests: quota.max_concurrent_requests,
        },
        sharding: ShardingLayout {
            shards,
            domain: (shards > 1).then(|| names.shard_domain()),
        },
    }
}

/// `model.servedName`, else the ModelDeployment's name.
pub fn served_name(md: &ModelDeployment, names: &Names) -> String {
    md.spec
        .model
        .served_name
        .clone()
        .unwrap_or_else(|| names.name.clone())
}

/// The ConfigMap holding `file` as [`CONFIG_KEY`].
pub fn config_map(
    names: &Names,
    owner: &OwnerReference,
    annotations: &BTreeMap<String, String>,
    file: &ServerConfigFile,
) -> ConfigMap {
    json_config_map(
        names,
        names.config_map(),
        owner,
        annotations,
        CONFIG_KEY,
        file,
    )
}

/// A child ConfigMap `name` holding `file` as pretty JSON under `key`.
pub fn json_config_map(
    names: &Names,
    name: String,
    owner: &OwnerReference,
    annotations: &BTreeMap<String, String>,
    key: &str,
    file: &impl Serialize,
) -> ConfigMap {
    let text = serde_json::to_string_pretty(file)
        .expect("structs and maps of strings and integers always serialise to JSON");
    ConfigMap {
        metadata: child_meta(names, name, owner, &BTreeMap::new(), annotations),
        data: Some(BTreeMap::from([(key.to_owned(), text + "\n")])),
        ..ConfigMap::default()
    }
}
