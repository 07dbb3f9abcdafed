//! `InferencePool` (cluster-scoped, owned by the platform team): which nodes, how much capacity,
//! which tenants, and what each tenant may use.

// `#[kube(printcolumn(...))]` repeats `name`/`type_` keys by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, Quantity, DNS_LABEL, MAX_CONDITIONS};

/// Most tenants a pool may list.
pub const MAX_TENANTS: usize = 64;
/// Most namespaces one tenant may list.
pub const MAX_TENANT_NAMESPACES: usize = 16;
/// Most CPU features a pool may require or prefer (each list).
pub const MAX_CPU_FEATURES: usize = 32;

/// Condition types on an `InferencePool`.
pub mod condition {
    /// At least one node matches the pool's hardware (`False` with reason
    /// [`NO_MATCHING_NODES`] otherwise).
    pub const READY: &str = "Ready";
    /// Reason for `Ready=False` when no node satisfies the pool's node affinity.
    pub const NO_MATCHING_NODES: &str = "NoMatchingNodes";
}

/// A set of nodes (by hardware), its capacity, and the tenants allowed to use it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ryzanstein.dev",
    version = "v1alpha1",
    kind = "InferencePool",
    shortname = "ipool",
    category = "ryzanstein",
    status = "InferencePoolStatus",
    derive = "PartialEq",
    doc = "InferencePool: a hardware class of nodes, its capacity and its tenants with their quotas.",
    printcolumn(name = "Class", type_ = "string", json_path = ".spec.hardware.class"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.matchingNodes"),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.allocated.replicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.defaultQuota) || self.admitUnlistedNamespaces").message(
        "defaultQuota applies only to namespaces that no tenant lists; set admitUnlistedNamespaces: true or remove defaultQuota"
    ),
    validation = Rule::new(
        "self.hardware.class == 'GPU' || !has(self.capacity) || !has(self.capacity.maxGPUs) || self.capacity.maxGPUs == 0"
    ).message("capacity.maxGPUs is set on a CPU pool; GPUs are only scheduled in pools with hardware.class GPU")
)]
pub struct InferencePoolSpec {
    /// Which nodes belong to the pool.
    pub hardware: Hardware,

    /// Limits for the whole pool; absent means unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,

    /// Tenants: sets of namespaces, each with a quota. A namespace belongs to at most one tenant
    /// of a pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TENANTS))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message(Message::Expression(
            "'tenant names must be unique; \"' + self.map(a, a.name).filter(n, self.filter(b, b.name == n).size() > 1)[0] + '\" is listed more than once'".into()
        )),
        validation = Rule::new(
            "self.all(a, self.all(b, a.name == b.name || !a.namespaces.exists(ns, ns in b.namespaces)))"
        ).message(Message::Expression(
            "'namespace \"' + self.map(a, a.namespaces.filter(ns, self.exists(b, b.name != a.name && ns in b.namespaces))).filter(l, l.size() > 0)[0][0] + '\" is listed by more than one tenant; a namespace belongs to at most one tenant of a pool'".into()
        ))
    )]
    pub tenants: Vec<Tenant>,

    /// `true`: namespaces that no tenant lists may deploy here and share `defaultQuota`.
    #[serde(default)]
    pub admit_unlisted_namespaces: bool,

    /// The quota shared by unlisted namespaces (only with `admitUnlistedNamespaces: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_quota: Option<Quota>,
}

/// CPU-only nodes or GPU nodes.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HardwareClass {
    /// Models run on the CPU.
    #[serde(rename = "CPU")]
    Cpu,
    /// Models run on GPUs (pods request `nvidia.com/gpu` or `amd.com/gpu`).
    #[serde(rename = "GPU")]
    Gpu,
}

/// Node selection: hardware class, CPU features, GPU model, extra labels and tolerations.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.class == 'GPU' || !has(self.gpu)")
        .message("hardware.gpu is only allowed when hardware.class is GPU"),
    validation = Rule::new("self.class != 'GPU' || has(self.gpu)")
        .message("hardware.class GPU needs hardware.gpu with at least its vendor (it names the GPU resource)")
)]
pub struct Hardware {
    /// `CPU` or `GPU`.
    pub class: HardwareClass,

    /// CPU features and vendor (Node Feature Discovery labels). Also allowed in GPU pools, where
    /// the host CPU still runs tokenisation, sampling and any CPU-offloaded layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuSelector>,

    /// GPU vendor, products and memory; only with `class: GPU`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuSelector>,

    /// Extra node labels, ANDed with the ones derived from the fields above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations added to every server pod in the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
}

/// CPU requirements, matched against `feature.node.kubernetes.io/cpu-cpuid.<FEATURE>=true` and
/// `feature.node.kubernetes.io/cpu-model.vendor_id`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.requiredFeatures) || !has(self.preferredFeatures) || !self.preferredFeatures.exists(f, f in self.requiredFeatures)"
).message(Message::Expression(
    "'cpu feature ' + self.preferredFeatures.filter(f, f in self.requiredFeatures)[0] + ' is both required and preferred; list it in one of requiredFeatures or preferredFeatures'".into()
)))]
pub struct CpuSelector {
    /// NFD cpuid feature names every node must have (AVX2, AVX512F, AVX512BW, AVX512VNNI,
    /// AMXINT8, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_CPU_FEATURES),
        inner(length(min = 1, max = 32), pattern("^[A-Z0-9][A-Z0-9_.]*$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub required_features: Vec<String>,

    /// NFD cpuid feature names that make a node preferred (scheduling weight), not required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_CPU_FEATURES),
        inner(length(min = 1, max = 32), pattern("^[A-Z0-9][A-Z0-9_.]*$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub preferred_features: Vec<String>,

    /// Preferred CPU vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<CpuVendor>,
}

/// CPU vendor as NFD reports it in `cpu-model.vendor_id`.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuVendor {
    /// AMD.
    #[serde(rename = "AMD")]
    Amd,
    /// Intel.
    Intel,
}

/// GPU requirements.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.vendor == 'NVIDIA' || !has(self.minMemoryMiB)").message(
    "gpu.minMemoryMiB applies to NVIDIA GPUs only (it is matched against the nvidia.com/gpu.memory node label; AMD nodes publish no such label); remove it or list the accepted AMD products in gpu.products"
))]
pub struct GpuSelector {
    /// `NVIDIA` (resource `nvidia.com/gpu`) or `AMD` (resource `amd.com/gpu`).
    pub vendor: GpuVendor,

    /// Accepted products, matched against `nvidia.com/gpu.product` or
    /// `amd.com/gpu.product-name`; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 63)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub products: Vec<String>,

    /// Minimum memory per GPU in MiB (the `nvidia.com/gpu.memory` label).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "minMemoryMiB"
    )]
    #[schemars(range(min = 1))]
    pub min_memory_mib: Option<i64>,
}

/// GPU vendor.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuVendor {
    /// NVIDIA: resource `nvidia.com/gpu`.
    #[serde(rename = "NVIDIA")]
    Nvidia,
    /// AMD: resource `amd.com/gpu`.
    #[serde(rename = "AMD")]
    Amd,
}

/// Limits for the whole pool. An absent field means no limit in that dimension.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Server pods in the pool (all shards counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_replicas: Option<i32>,
    /// CPU requested by all server pods together.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "maxCPU")]
    pub max_cpu: Option<Quantity>,
    /// Memory requested by all server pods together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<Quantity>,
    /// GPUs requested by all server pods together (GPU pools only).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "maxGPUs")]
    #[schemars(range(min = 0))]
    pub max_gpus: Option<i32>,
}

/// A tenant: a named set of namespaces sharing one quota.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// Tenant name (a DNS label), unique within the pool.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub name: String,

    /// Namespaces that belong to the tenant.
    #[schemars(
        length(min = 1, max = MAX_TENANT_NAMESPACES),
        inner(length(min = 1, max = 63), pattern(DNS_LABEL)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub namespaces: Vec<String>,

    /// What the tenant may use in this pool; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,

    /// Relative share of the pool when it is contended.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: i32,
}

fn default_weight() -> i32 {
    1
}

/// What a tenant may use in a pool. An absent field means no limit in that dimension.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Server pods (all shards counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_replicas: Option<i32>,
    /// CPU requested by the tenant's server pods together.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "maxCPU")]
    pub max_cpu: Option<Quantity>,
    /// Memory requested by the tenant's server pods together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<Quantity>,
    /// GPUs requested by the tenant's server pods together.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "maxGPUs")]
    #[schemars(range(min = 0))]
    pub max_gpus: Option<i32>,
    /// Requests per minute across the tenant's deployments in the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub requests_per_minute: Option<i64>,
    /// Prompt plus completion tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub tokens_per_minute: Option<i64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_concurrent_requests: Option<i32>,
}

/// Observed state of a pool, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Nodes that satisfy the pool's hardware selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching_nodes: Option<i32>,

    /// What all deployments in the pool request together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Usage>,

    /// Usage per tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TENANTS + 1))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tenants: Vec<TenantUsage>,

    /// `Ready` (reason `NoMatchingNodes` when no node matches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONDITIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Resources requested by a set of server pods.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Server pods (all shards counted).
    pub replicas: i32,
    /// CPU requested.
    pub cpu: Quantity,
    /// Memory requested.
    pub memory: Quantity,
    /// GPUs requested.
    pub gpus: i32,
}

/// One tenant's usage of the pool.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantUsage {
    /// Tenant name.
    pub name: String,
    /// Server pods (all shards counted).
    pub replicas: i32,
    /// CPU requested.
    pub cpu: Quantity,
    /// Memory requested.
    pub memory: Quantity,
    /// GPUs requested.
    pub gpus: i32,
    /// ModelDeployments of the tenant in this pool.
    pub deployments: i32,
    /// Whether some deployment of the tenant is held below its desired replicas by the quota.
    pub throttled: bool,
}
