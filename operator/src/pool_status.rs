//! The pure part of the InferencePool controller: which nodes a pool's hardware selects, what its
//! deployments use (per tenant and in all), and the status that says so.
//!
//! [`node_requirements`] is the one translation of `spec.hardware` into required node-selector
//! terms; counting matching nodes evaluates exactly those terms, so a pool reports nodes only
//! when pods with that node affinity can be scheduled somewhere.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NodeSelectorRequirement;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::deployment::condition as md_condition;
use crate::crd::pool::condition;
use crate::crd::Condition;
use crate::crd::{
    GpuVendor, Hardware, HardwareClass, InferencePool, InferencePoolStatus, ModelDeployment,
    ModelDeploymentSpec, Quantity, TenantUsage, Usage,
};
use crate::error::Result;

/// Prefix of Node Feature Discovery's CPUID labels (`...cpu-cpuid.AVX512F=true`).
pub const NFD_CPUID_PREFIX: &str = "feature.node.kubernetes.io/cpu-cpuid.";
/// NFD's CPU vendor label (a preference only; never required).
pub const NFD_CPU_VENDOR: &str = "feature.node.kubernetes.io/cpu-model.vendor_id";
/// NVIDIA GPU feature discovery: product name.
pub const NVIDIA_GPU_PRODUCT: &str = "nvidia.com/gpu.product";
/// NVIDIA GPU feature discovery: memory per GPU in MiB.
pub const NVIDIA_GPU_MEMORY: &str = "nvidia.com/gpu.memory";
/// AMD GPU node labeller: product name.
pub const AMD_GPU_PRODUCT: &str = "amd.com/gpu.product-name";

/// Reason of `Ready=True` on a pool.
pub const NODES_AVAILABLE: &str = "NodesAvailable";

/// Name under which namespaces admitted by `admitUnlistedNamespaces` appear in
/// `status.tenants` (not a DNS label, so it never collides with a real tenant).
pub const UNLISTED_TENANT: &str = "(unlisted)";

/// CPU of a server pod whose ModelDeployment leaves `resources.cpu` out.
pub const DEFAULT_POD_CPU: &str = "1";
/// Memory of a server pod whose ModelDeployment leaves `resources.memory` out.
pub const DEFAULT_POD_MEMORY: &str = "2Gi";

/// The required node-selector terms (ANDed) that `hardware` stands for: every required CPU
/// feature as an NFD cpuid label, the GPU product (or, with no product listed, any product of
/// the vendor) and minimum memory, and the extra `nodeSelector` labels. Preferred features and
/// the CPU vendor only weigh scheduling and are not here.
///
/// AMD's node labeller publishes no memory label in MiB, so `minMemoryMiB` restricts NVIDIA
/// nodes only.
pub fn node_requirements(hardware: &Hardware) -> Vec<NodeSelectorRequirement> {
    let mut reqs = Vec::new();
    if let Some(cpu) = &hardware.cpu {
        for feature in &cpu.required_features {
            reqs.push(requirement(
                &format!("{NFD_CPUID_PREFIX}{feature}"),
                "In",
                &["true"],
            ));
        }
    }
    if let (HardwareClass::Gpu, Some(gpu)) = (hardware.class, &hardware.gpu) {
        let product_label = match gpu.vendor {
            GpuVendor::Nvidia => NVIDIA_GPU_PRODUCT,
            GpuVendor::Amd => AMD_GPU_PRODUCT,
        };
        if gpu.products.is_empty() {
            reqs.push(requirement(product_label, "Exists", &[]));
        } else {
            let products: Vec<&str> = gpu.products.iter().map(String::as_str).collect();
            reqs.push(requirement(product_label, "In", &products));
        }
        if let (GpuVendor::Nvidia, Some(min)) = (gpu.vendor, gpu.min_memory_mib) {
            // `Gt` is strict: at least `min` MiB is "greater than min - 1".
            reqs.push(requirement(
                NVIDIA_GPU_MEMORY,
                "Gt",
                &[&(min - 1).to_string()],
            ));
        }
    }
    for (key, value) in &hardware.node_selector {
        reqs.push(requirement(key, "In", &[value]));
    }
    reqs
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

/// Whether `labels` satisfy one requirement, with the scheduler's semantics (`In`, `NotIn`,
/// `Exists`, `DoesNotExist`, `Gt`, `Lt`; `Gt`/`Lt` compare integers and fail on a label that is
/// not one).
pub fn requirement_matches(
    req: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or_default();
    let compare = |ordering: std::cmp::Ordering| {
        let (Some(value), [bound]) = (value, values) else {
            return false;
        };
        match (value.parse::<i64>(), bound.parse::<i64>()) {
            (Ok(v), Ok(b)) => v.cmp(&b) == ordering,
            _ => false,
        }
    };
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(std::cmp::Ordering::Greater),
        "Lt" => compare(std::cmp::Ordering::Less),
        _ => false,
    }
}

/// Whether a node with `labels` satisfies every requirement.
pub fn node_matches(reqs: &[NodeSelectorRequirement], labels: &BTreeMap<String, String>) -> bool {
    reqs.iter().all(|r| requirement_matches(r, labels))
}

/// How many of the nodes (given by their labels) satisfy every requirement.
pub fn count_matching_nodes<'a>(
    reqs: &[NodeSelectorRequirement],
    nodes: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
) -> i32 {
    let n = nodes
        .into_iter()
        .filter(|labels| node_matches(reqs, labels))
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The requirements as a person reads them: `a=true, b in (x, y), c > 39999`.
pub fn describe_requirements(reqs: &[NodeSelectorRequirement]) -> String {
    if reqs.is_empty() {
        return "no label requirements".into();
    }
    reqs.iter()
        .map(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            match (r.operator.as_str(), values) {
                ("In", [one]) => format!("{}={one}", r.key),
                ("In", many) => format!("{} in ({})", r.key, many.join(", ")),
                ("NotIn", many) => format!("{} not in ({})", r.key, many.join(", ")),
                ("Exists", _) => format!("{} present", r.key),
                ("DoesNotExist", _) => format!("{} absent", r.key),
                ("Gt", [v]) => format!("{} > {v}", r.key),
                ("Lt", [v]) => format!("{} < {v}", r.key),
                (op, values) => format!("{} {op} {values:?}", r.key),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one server pod requests (requests equal limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodResources {
    /// CPU in millicores.
    pub cpu_millis: i128,
    /// Memory in bytes.
    pub memory_bytes: i128,
    /// GPUs.
    pub gpus: i32,
}

/// The resources of one server pod of `spec` in a pool of `class`: the spec's values, else
/// [`DEFAULT_POD_CPU`] and [`DEFAULT_POD_MEMORY`]; GPUs default to 1 in a GPU pool and 0 in a
/// CPU pool.
pub fn pod_resources(spec: &ModelDeploymentSpec, class: HardwareClass) -> Result<PodResources> {
    let r = spec.resources.as_ref();
    let cpu = r
        .and_then(|r| r.cpu.clone())
        .unwrap_or_else(|| Quantity::new(DEFAULT_POD_CPU));
    let memory = r
        .and_then(|r| r.memory.clone())
        .unwrap_or_else(|| Quantity::new(DEFAULT_POD_MEMORY));
    let gpus = r
        .and_then(|r| r.gpus)
        .unwrap_or(i32::from(class == HardwareClass::Gpu));
    Ok(PodResources {
        cpu_millis: cpu.millis()?,
        memory_bytes: memory.value()?,
        gpus,
    })
}

/// Server pods per replica group.
pub fn shards(spec: &ModelDeploymentSpec) -> i32 {
    spec.sharding.as_ref().map_or(1, |s| s.shards.max(1))
}

/// Which tenant of a pool a namespace belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership<'a> {
    /// A tenant lists the namespace.
    Tenant(&'a str),
    /// No tenant lists it; the pool admits unlisted namespaces under `defaultQuota`.
    Unlisted,
    /// No tenant lists it and the pool admits no one else.
    NotAdmitted,
}

/// The tenant of `pool` that `namespace` belongs to.
pub fn membership<'a>(pool: &'a InferencePool, namespace: &str) -> Membership<'a> {
    match pool
        .spec
        .tenants
        .iter()
        .find(|t| t.namespaces.iter().any(|n| n == namespace))
    {
        Some(t) => Membership::Tenant(&t.name),
        None if pool.spec.admit_unlisted_namespaces => Membership::Unlisted,
        None => Membership::NotAdmitted,
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sum {
    pods: i64,
    cpu_millis: i128,
    memory_bytes: i128,
    gpus: i64,
    deployments: i64,
    throttled: bool,
}

impl Sum {
    fn add(&mut self, pods: i64, per_pod: PodResources, throttled: bool) {
        self.pods += pods;
        self.cpu_millis += i128::from(pods) * per_pod.cpu_millis;
        self.memory_bytes += i128::from(pods) * per_pod.memory_bytes;
        self.gpus += pods * i64::from(per_pod.gpus);
        self.deployments += 1;
        self.throttled |= throttled;
    }

    fn usage(&self) -> Usage {
        Usage {
            replicas: saturate(self.pods),
            cpu: format_cpu(self.cpu_millis),
            memory: format_memory(self.memory_bytes),
            gpus: saturate(self.gpus),
        }
    }

    fn tenant(&self, name: &str) -> TenantUsage {
        let u = self.usage();
        TenantUsage {
            name: name.to_owned(),
            replicas: u.replicas,
            cpu: u.cpu,
            memory: u.memory,
            gpus: u.gpus,
            deployments: saturate(self.deployments),
            throttled: self.throttled,
        }
    }
}

fn saturate(n: i64) -> i32 {
    i32::try_from(n.max(0)).unwrap_or(i32::MAX)
}

/// A pool's usage: in all, and per tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolUsage {
    /// What every deployment in the pool requests together (deployments of namespaces the pool
    /// no longer admits included, while their pods exist).
    pub allocated: Usage,
    /// Every listed tenant in the pool's order (zero rows included), then [`UNLISTED_TENANT`]
    /// when unlisted namespaces are admitted and deploy here.
    pub tenants: Vec<TenantUsage>,
}

/// Adds up what the ModelDeployments referencing `pool` use: each deployment's existing replica
/// groups (`status.replicas`) × shards × its per-pod resources. Deployments of other pools are
/// ignored. A deployment is throttled when it reports `QuotaExceeded=True`.
pub fn aggregate_usage<'a>(
    pool: &InferencePool,
    deployments: impl IntoIterator<Item = &'a ModelDeployment>,
) -> Result<PoolUsage> {
    let pool_name = pool.metadata.name.as_deref().unwrap_or_default();
    let mut all = Sum::default();
    let mut per_tenant: BTreeMap<&str, Sum> = BTreeMap::new();
    let mut unlisted: Option<Sum> = None;
    for md in deployments {
        if md.spec.pool_ref != pool_name {
            continue;
        }
        let per_pod = pod_resources(&md.spec, pool.spec.hardware.class)?;
        let groups = md.status.as_ref().map_or(0, |s| s.replicas.max(0));
        let pods = i64::from(groups) * i64::from(shards(&md.spec));
        let throttled = md.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == md_condition::QUOTA_EXCEEDED && c.status == "True")
        });
        all.add(pods, per_pod, throttled);
        let namespace = md.metadata.namespace.as_deref().unwrap_or_default();
        match membership(pool, namespace) {
            Membership::Tenant(name) => per_tenant
                .entry(name)
                .or_default()
                .add(pods, per_pod, throttled),
            Membership::Unlisted => unlisted
                .get_or_insert_with(Sum::default)
                .add(pods, per_pod, throttled),
            Membership::NotAdmitted => {}
        }
    }
    let mut tenants: Vec<TenantUsage> = pool
        .spec
        .tenants
        .iter()
        .map(|t| {
            per_tenant
                .get(t.name.as_str())
                .copied()
                .unwrap_or_default()
                .tenant(&t.name)
        })
        .collect();
    if let Some(sum) = unlisted {
        tenants.push(sum.tenant(UNLISTED_TENANT));
    }
    Ok(PoolUsage {
        allocated: all.usage(),
        tenants,
    })
}

/// Millicores as a quantity: whole cores when exact ("10"), else millicores ("1500m").
pub fn format_cpu(millis: i128) -> Quantity {
    if millis % 1000 == 0 {
        Quantity::new((millis / 1000).to_string())
    } else {
        Quantity::new(format!("{millis}m"))
    }
}

/// Bytes as a quantity in the largest binary unit that divides them exactly ("20Gi", "1536Mi").
pub fn format_memory(bytes: i128) -> Quantity {
    if bytes == 0 {
        return Quantity::new("0");
    }
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        let unit = 1i128 << shift;
        if bytes % unit == 0 {
            return Quantity::new(format!("{}{suffix}", bytes / unit));
        }
    }
    Quantity::new(bytes.to_string())
}

/// The pool's `Ready` condition for `matching_nodes` nodes, keeping `lastTransitionTime` from
/// `previous` when the status did not change.
pub fn ready_condition(
    pool: &InferencePool,
    reqs: &[NodeSelectorRequirement],
    matching_nodes: i32,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let (status, reason, message) = if matching_nodes > 0 {
        (
            "True",
            NODES_AVAILABLE,
            format!(
                "{matching_nodes} node{} match{} the pool's hardware ({})",
                if matching_nodes == 1 { "" } else { "s" },
                if matching_nodes == 1 { "es" } else { "" },
                describe_requirements(reqs)
            ),
        )
    } else {
        (
            "False",
            condition::NO_MATCHING_NODES,
            format!(
                "no node matches the pool's hardware, so its server pods cannot be scheduled; nodes need {} (Node Feature Discovery and GPU feature discovery publish these labels)",
                describe_requirements(reqs)
            ),
        )
    };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == condition::READY && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: condition::READY.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time,
        observed_generation: pool.metadata.generation,
    }
}

/// The whole status the controller writes.
pub fn pool_status(
    pool: &InferencePool,
    reqs: &[NodeSelectorRequirement],
    matching_nodes: i32,
    usage: PoolUsage,
    now: Timestamp,
) -> InferencePoolStatus {
    let previous = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    InferencePoolStatus {
        observed_generation: pool.metadata.generation,
        matching_nodes: Some(matching_nodes),
        allocated: Some(usage.allocated),
        tenants: usage.tenants,
        conditions: vec![ready_condition(pool, reqs, matching_nodes, previous, now)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        CpuSelector, GpuSelector, InferencePoolSpec, ModelDeploymentStatus, ModelSpec, Resources,
        Sharding, Tenant,
    };

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn cpu_hardware(required: &[&str], preferred: &[&str]) -> Hardware {
        Hardware {
            class: HardwareClass::Cpu,
            cpu: Some(CpuSelector {
                required_features: required.iter().map(|s| (*s).to_owned()).collect(),
                preferred_features: preferred.iter().map(|s| (*s).to_owned()).collect(),
                vendor: Some(crate::crd::CpuVendor::Amd),
            }),
            gpu: None,
            node_selector: BTreeMap::new(),
            tolerations: vec![],
        }
    }

    fn pool(name: &str, hardware: Hardware, tenants: Vec<Tenant>, admit: bool) -> InferencePool {
        let mut p = InferencePool::new(
            name,
            InferencePoolSpec {
                hardware,
                capacity: None,
                tenants,
                admit_unlisted_namespaces: admit,
                default_quota: None,
            },
        );
        p.metadata.generation = Some(3);
        p
    }

    fn tenant(name: &str, namespaces: &[&str]) -> Tenant {
        Tenant {
            name: name.into(),
            namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
            quota: None,
            weight: 1,
        }
    }

    fn md(
        namespace: &str,
        name: &str,
        pool: &str,
        replicas: i32,
        shards: i32,
        cpu: Option<&str>,
        memory: Option<&str>,
    ) -> ModelDeployment {
        let mut md = ModelDeployment::new(
            name,
            ModelDeploymentSpec {
                model: ModelSpec {
                    source: "bundled://smollm2-135m-instruct".into(),
                    served_name: None,
                    format: Default::default(),
                    quantization: Default::default(),
                    sha256: None,
                },
                pool_ref: pool.into(),
                replicas,
                autoscaling: None,
                sharding: Some(Sharding { shards }),
                resources: Some(Resources {
                    cpu: cpu.map(Quantity::new),
                    memory: memory.map(Quantity::new),
                    gpus: None,
                }),
                engine: None,
                image: None,
            },
        );
        md.metadata.namespace = Some(namespace.into());
        md.status = Some(ModelDeploymentStatus {
            replicas,
            ..Default::default()
        });
        md
    }

    #[test]
    fn required_cpu_features_must_all_be_labelled_true_and_preferences_do_not_restrict() {
        let reqs = node_requirements(&cpu_hardware(&["AVX512F", "AVX512BW"], &["AVX512VNNI"]));
        assert_eq!(reqs.len(), 2);
        let avx512 = labels(&[
            ("feature.node.kubernetes.io/cpu-cpuid.AVX512F", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.AVX512BW", "true"),
            ("feature.node.kubernetes.io/cpu-model.vendor_id", "Intel"),
        ]);
        let avx2 = labels(&[("feature.node.kubernetes.io/cpu-cpuid.AVX2", "true")]);
        let half = labels(&[("feature.node.kubernetes.io/cpu-cpuid.AVX512F", "true")]);
        let wrong_value = labels(&[
            ("feature.node.kubernetes.io/cpu-cpuid.AVX512F", "false"),
            ("feature.node.kubernetes.io/cpu-cpuid.AVX512BW", "true"),
        ]);
        // Vendor AMD and AVX512VNNI are preferences: an Intel node without VNNI still matches.
        assert!(node_matches(&reqs, &avx512));
        assert!(!node_matches(&reqs, &avx2));
        assert!(!node_matches(&reqs, &half));
        assert!(!node_matches(&reqs, &wrong_value));
        assert_eq!(
            count_matching_nodes(&reqs, [&avx512, &avx2, &half, &avx512]),
            2
        );
    }

    #[test]
    fn node_selector_labels_are_anded() {
        let mut hw = cpu_hardware(&["AVX2"], &[]);
        hw.node_selector = labels(&[("pool", "inference")]);
        let reqs = node_requirements(&hw);
        let avx2 = labels(&[("feature.node.kubernetes.io/cpu-cpuid.AVX2", "true")]);
        let mut avx2_pool = avx2.clone();
        avx2_pool.insert("pool".into(), "inference".into());
        let mut avx2_other = avx2.clone();
        avx2_other.insert("pool".into(), "batch".into());
        assert!(!node_matches(&reqs, &avx2));
        assert!(node_matches(&reqs, &avx2_pool));
        assert!(!node_matches(&reqs, &avx2_other));
    }

    #[test]
    fn a_cpu_pool_without_requirements_matches_every_node() {
        let hw = Hardware {
            class: HardwareClass::Cpu,
            cpu: None,
            gpu: None,
            node_selector: BTreeMap::new(),
            tolerations: vec![],
        };
        let reqs = node_requirements(&hw);
        assert!(reqs.is_empty());
        assert_eq!(count_matching_nodes(&reqs, [&BTreeMap::new()]), 1);
        assert_eq!(describe_requirements(&reqs), "no label requirements");
    }

    fn gpu_hardware(vendor: GpuVendor, products: &[&str], min_mib: Option<i64>) -> Hardware {
        Hardware {
            class: HardwareClass::Gpu,
            cpu: None,
            gpu: Some(GpuSelector {
                vendor,
                products: products.iter().map(|s| (*s).to_owned()).collect(),
                min_memory_mib: min_mib,
            }),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
        }
    }

    #[test]
    fn nvidia_product_and_memory_labels() {
        let reqs = node_requirements(&gpu_hardware(
            GpuVendor::Nvidia,
            &["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"],
            Some(40000),
        ));
        let h100 = labels(&[
            ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
            ("nvidia.com/gpu.memory", "81559"),
        ]);
        let exactly_min = labels(&[
            ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB"),
            ("nvidia.com/gpu.memory", "40000"),
        ]);
        let too_small = labels(&[
            ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB"),
            ("nvidia.com/gpu.memory", "39999"),
        ]);
        let other_product = labels(&[
            ("nvidia.com/gpu.product", "Tesla-T4"),
            ("nvidia.com/gpu.memory", "81559"),
        ]);
        let no_memory_label = labels(&[("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3")]);
        let garbage_memory = labels(&[
            ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
            ("nvidia.com/gpu.memory", "80GB"),
        ]);
        assert!(node_matches(&reqs, &h100));
        assert!(node_matches(&reqs, &exactly_min));
        assert!(!node_matches(&reqs, &too_small));
        assert!(!node_matches(&reqs, &other_product));
        assert!(!node_matches(&reqs, &no_memory_label));
        assert!(!node_matches(&reqs, &garbage_memory));
        assert_eq!(
            describe_requirements(&reqs),
            "nvidia.com/gpu.product in (NVIDIA-H100-80GB-HBM3, NVIDIA-A100-SXM4-80GB), nvidia.com/gpu.memory > 39999"
        );
    }

    #[test]
    fn any_product_of_the_vendor_when_none_is_listed() {
        let reqs = node_requirements(&gpu_hardware(GpuVendor::Amd, &[], Some(1000)));
        // AMD publishes no MiB memory label: only the product label is required.
        assert_eq!(reqs.len(), 1);
        let mi300 = labels(&[("amd.com/gpu.product-name", "AMD_Instinct_MI300X")]);
        let nvidia = labels(&[("nvidia.com/gpu.product", "Tesla-T4")]);
        let cpu_only = labels(&[("feature.node.kubernetes.io/cpu-cpuid.AVX2", "true")]);
        assert!(node_matches(&reqs, &mi300));
        assert!(!node_matches(&reqs, &nvidia));
        assert!(!node_matches(&reqs, &cpu_only));
    }

    #[test]
    fn requirement_operators_follow_the_scheduler() {
        let l = labels(&[("a", "1"), ("b", "x")]);
        let r = |key: &str, op: &str, values: &[&str]| requirement(key, op, values);
        assert!(requirement_matches(&r("b", "NotIn", &["y"]), &l));
        assert!(!requirement_matches(&r("b", "NotIn", &["x"]), &l));
        assert!(requirement_matches(&r("zz", "NotIn", &["x"]), &l));
        assert!(requirement_matches(&r("zz", "DoesNotExist", &[]), &l));
        assert!(!requirement_matches(&r("a", "DoesNotExist", &[]), &l));
        assert!(requirement_matches(&r("a", "Lt", &["2"]), &l));
        assert!(!requirement_matches(&r("a", "Gt", &["1"]), &l));
        assert!(!requirement_matches(&r("a", "Gt", &["0", "1"]), &l));
        assert!(!requirement_matches(&r("a", "Matches", &["1"]), &l));
    }

    #[test]
    fn usage_is_existing_groups_times_shards_times_pod_resources_per_tenant() {
        let p = pool(
            "cpu",
            cpu_hardware(&["AVX2"], &[]),
            vec![
                tenant("team-a", &["team-a", "team-a-staging"]),
                tenant("team-b", &["team-b"]),
                tenant("idle", &["idle"]),
            ],
            true,
        );
        let mut throttled = md("team-b", "big", "cpu", 1, 4, Some("1500m"), Some("3Gi"));
        throttled
            .status
            .as_mut()
            .unwrap()
            .conditions
            .push(Condition {
                type_: "QuotaExceeded".into(),
                status: "True".into(),
                reason: "TenantMaxReplicas".into(),
                message: String::new(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: None,
            });
        let mut not_yet_running = md("team-a", "new", "cpu", 3, 1, Some("2"), Some("2Gi"));
        not_yet_running.status = None;
        let deployments = [
            md("team-a", "smollm2", "cpu", 2, 1, Some("2"), Some("2Gi")),
            md("team-a-staging", "smollm2", "cpu", 1, 1, None, None),
            not_yet_running,
            throttled,
            md("sandbox", "try", "cpu", 1, 1, Some("500m"), Some("512Mi")),
            md(
                "nobody",
                "outsider",
                "other-pool",
                5,
                1,
                Some("8"),
                Some("8Gi"),
            ),
        ];
        let usage = aggregate_usage(&p, &deployments).unwrap();
        // team-a: 2 pods × (2, 2Gi) + 1 pod × defaults (1, 2Gi) + 0 pods (no status yet).
        assert_eq!(
            usage.tenants[0],
            TenantUsage {
                name: "team-a".into(),
                replicas: 3,
                cpu: Quantity::new("5"),
                memory: Quantity::new("6Gi"),
                gpus: 0,
                deployments: 3,
                throttled: false,
            }
        );
        // team-b: 1 group × 4 shards × (1500m, 3Gi).
        assert_eq!(
            usage.tenants[1],
            TenantUsage {
                name: "team-b".into(),
                replicas: 4,
                cpu: Quantity::new("6"),
                memory: Quantity::new("12Gi"),
                gpus: 0,
                deployments: 1,
                throttled: true,
            }
        );
        assert_eq!(usage.tenants[2].name, "idle");
        assert_eq!(usage.tenants[2].replicas, 0);
        assert_eq!(usage.tenants[2].cpu, Quantity::new("0"));
        assert_eq!(usage.tenants[2].memory, Quantity::new("0"));
        assert_eq!(
            usage.tenants[3],
            TenantUsage {
                name: UNLISTED_TENANT.into(),
                replicas: 1,
                cpu: Quantity::new("500m"),
                memory: Quantity::new("512Mi"),
                gpus: 0,
                deployments: 1,
                throttled: false,
            }
        );
        assert_eq!(usage.tenants.len(), 4);
        assert_eq!(
            usage.allocated,
            Usage {
                replicas: 8,
                cpu: Quantity::new("11500m"),
                memory: Quantity::new("18944Mi"),
                gpus: 0,
            }
        );
    }

    #[test]
    fn namespaces_the_pool_no_longer_admits_count_in_allocated_only() {
        let p = pool(
            "cpu",
            cpu_hardware(&[], &[]),
            vec![tenant("team-a", &["team-a"])],
            false,
        );
        let usage =
            aggregate_usage(&p, &[md("stray", "x", "cpu", 1, 1, Some("1"), Some("1Gi"))]).unwrap();
        assert_eq!(usage.allocated.replicas, 1);
        assert_eq!(usage.tenants.len(), 1);
        assert_eq!(usage.tenants[0].replicas, 0);
    }

    #[test]
    fn gpu_pods_default_to_one_gpu_in_a_gpu_pool() {
        let p = pool(
            "gpu",
            gpu_hardware(GpuVendor::Nvidia, &[], None),
            vec![tenant("t", &["t"])],
            false,
        );
        let mut explicit = md("t", "two", "gpu", 1, 2, Some("4"), Some("16Gi"));
        explicit.spec.resources.as_mut().unwrap().gpus = Some(2);
        let usage = aggregate_usage(
            &p,
            &[
                md("t", "one", "gpu", 3, 1, Some("4"), Some("16Gi")),
                explicit,
            ],
        )
        .unwrap();
        assert_eq!(usage.allocated.gpus, 3 + 2 * 2);
        assert_eq!(usage.tenants[0].gpus, 7);
    }

    #[test]
    fn a_bad_quantity_is_an_error_naming_it() {
        let p = pool("cpu", cpu_hardware(&[], &[]), vec![], true);
        let err =
            aggregate_usage(&p, &[md("a", "b", "cpu", 1, 1, Some("2 cores"), None)]).unwrap_err();
        assert!(err.to_string().contains("2 cores"), "{err}");
    }

    #[test]
    fn quantities_are_written_in_their_shortest_exact_form() {
        assert_eq!(format_cpu(0).as_str(), "0");
        assert_eq!(format_cpu(10_000).as_str(), "10");
        assert_eq!(format_cpu(1_500).as_str(), "1500m");
        assert_eq!(format_memory(20 << 30).as_str(), "20Gi");
        assert_eq!(format_memory(1536 << 20).as_str(), "1536Mi");
        assert_eq!(format_memory(1 << 40).as_str(), "1Ti");
        assert_eq!(format_memory(1000).as_str(), "1000");
        assert_eq!(format_memory(2048).as_str(), "2Ki");
    }

    #[test]
    fn ready_condition_says_why_and_keeps_its_transition_time() {
        let p = pool("cpu", cpu_hardware(&["AVX512F"], &[]), vec![], false);
        let reqs = node_requirements(&p.spec.hardware);
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let none = ready_condition(&p, &reqs, 0, &[], t0);
        assert_eq!(none.status, "False");
        assert_eq!(none.reason, "NoMatchingNodes");
        assert!(
            none.message
                .contains("feature.node.kubernetes.io/cpu-cpuid.AVX512F=true"),
            "{}",
            none.message
        );
        assert_eq!(none.observed_generation, Some(3));
        assert_eq!(none.last_transition_time, Time(t0));
        // Still none later: the transition time stays.
        let still = ready_condition(&p, &reqs, 0, std::slice::from_ref(&none), t1);
        assert_eq!(still.last_transition_time, Time(t0));
        // Nodes appear: a new transition.
        let some = ready_condition(&p, &reqs, 2, &[still], t1);
        assert_eq!(
            (some.status.as_str(), some.reason.as_str()),
            ("True", "NodesAvailable")
        );
        assert!(
            some.message.starts_with("2 nodes match"),
            "{}",
            some.message
        );
        assert_eq!(some.last_transition_time, Time(t1));
        let one = ready_condition(&p, &reqs, 1, &[], t1);
        assert!(one.message.starts_with("1 node matches"), "{}", one.message);
    }

    #[test]
    fn status_carries_observed_generation_nodes_usage_and_ready() {
        let p = pool(
            "cpu",
            cpu_hardware(&[], &[]),
            vec![tenant("a", &["a"])],
            false,
        );
        let usage =
            aggregate_usage(&p, &[md("a", "m", "cpu", 1, 1, Some("2"), Some("4Gi"))]).unwrap();
        let s = pool_status(&p, &[], 4, usage, Timestamp::UNIX_EPOCH);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.matching_nodes, Some(4));
        assert_eq!(s.allocated.as_ref().unwrap().memory, Quantity::new("4Gi"));
        assert_eq!(s.tenants.len(), 1);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].type_, "Ready");
    }
}
