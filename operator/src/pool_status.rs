//! The pure part of the InferencePool controller: which nodes a pool's pods can be scheduled on,
//! what its deployments use (per tenant and in all), and the status that says so.
//!
//! Node matching, per-pod resources and tenant membership are the render functions' own
//! ([`placement::admits`], [`PodResources::of`], [`resolve_tenant`]), so a pool counts exactly
//! the nodes its server pods can land on and the usage the ModelDeployment controller caps with.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::deployment::condition as md_condition;
use crate::crd::pool::condition;
use crate::crd::Condition;
use crate::crd::{
    Hardware, InferencePool, InferencePoolStatus, ModelDeployment, Quantity, TenantUsage, Usage,
};
use crate::error::Result;
use crate::render::placement::{self, required_requirements};
use crate::render::{resolve_tenant, shards, Footprint, PodResources, RenderOptions};

pub use crate::render::tenant::UNLISTED_TENANT;

/// Reason of `Ready=True` on a pool.
pub const NODES_AVAILABLE: &str = "NodesAvailable";

/// How many of `nodes` a server pod of a pool with `hardware` can be scheduled on (labels,
/// taints and cordons; see [`placement::admits`]).
pub fn count_matching_nodes<'a>(
    hardware: &Hardware,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> i32 {
    let n = nodes
        .into_iter()
        .filter(|node| placement::admits(hardware, node))
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

/// What one deployment of `pool` uses now: its existing replica groups (`status.replicas`) ×
/// shards × one server pod's resources.
pub fn deployment_footprint(
    md: &ModelDeployment,
    pool: &InferencePool,
    opts: &RenderOptions,
) -> Result<Footprint> {
    let per_pod = PodResources::of(md, pool, opts)?;
    let groups = md.status.as_ref().map_or(0, |s| s.replicas.max(0));
    Ok(Footprint::of_deployment(&per_pod, groups, shards(md)))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sum {
    used: Footprint,
    deployments: i64,
    throttled: bool,
}

impl Sum {
    fn add(&mut self, used: Footprint, throttled: bool) {
        self.used = self.used + used;
        self.deployments += 1;
        self.throttled |= throttled;
    }

    fn usage(&self) -> Usage {
        Usage {
            replicas: saturate(self.used.pods),
            cpu: format_cpu(self.used.cpu_millis),
            memory: format_memory(self.used.memory_bytes),
            gpus: saturate(self.used.gpus),
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
            deployments: saturate(i128::from(self.deployments)),
            throttled: self.throttled,
        }
    }
}

fn saturate(n: i128) -> i32 {
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
    /// Deployments whose resources cannot be computed (the ModelDeployment controller renders
    /// no pods for them and reports why in their status), with the reason.
    pub left_out: Vec<String>,
}

/// Adds up what the ModelDeployments referencing `pool` use: each deployment's existing replica
/// groups (`status.replicas`) × shards × its per-pod resources. Deployments of other pools are
/// ignored. A deployment is throttled when it reports `QuotaExceeded=True`. A deployment whose
/// resources cannot be computed runs no pods: it is left out and named in
/// [`PoolUsage::left_out`], so one bad deployment cannot stop the pool's status.
pub fn aggregate_usage<'a>(
    pool: &InferencePool,
    deployments: impl IntoIterator<Item = &'a ModelDeployment>,
    opts: &RenderOptions,
) -> PoolUsage {
    let pool_name = pool.metadata.name.as_deref().unwrap_or_default();
    let mut all = Sum::default();
    let mut per_tenant: BTreeMap<String, Sum> = BTreeMap::new();
    let mut unlisted: Option<Sum> = None;
    let mut left_out = Vec::new();
    for md in deployments {
        if md.spec.pool_ref != pool_name {
            continue;
        }
        let used = match deployment_footprint(md, pool, opts) {
            Ok(used) => used,
            Err(e) => {
                left_out.push(e.to_string());
                continue;
            }
        };
        let throttled = md.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == md_condition::QUOTA_EXCEEDED && c.status == "True")
        });
        all.add(used, throttled);
        let namespace = md.metadata.namespace.as_deref().unwrap_or_default();
        match resolve_tenant(pool, namespace) {
            Ok(t) if t.listed => per_tenant.entry(t.name).or_default().add(used, throttled),
            Ok(_) => unlisted
                .get_or_insert_with(Sum::default)
                .add(used, throttled),
            Err(_) => {}
        }
    }
    let mut tenants: Vec<TenantUsage> = pool
        .spec
        .tenants
        .iter()
        .map(|t| {
            per_tenant
                .get(&t.name)
                .copied()
                .unwrap_or_default()
                .tenant(&t.name)
        })
        .collect();
    if let Some(sum) = unlisted {
        tenants.push(sum.tenant(UNLISTED_TENANT));
    }
    PoolUsage {
        allocated: all.usage(),
        tenants,
        left_out,
    }
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
    matching_nodes: i32,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let reqs = required_requirements(&pool.spec.hardware);
    let reqs = reqs.as_slice();
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
                "no schedulable node matches the pool's hardware, so its server pods cannot be scheduled; nodes need {} (Node Feature Discovery and GPU feature discovery publish these labels), must not be cordoned, and must have only NoSchedule/NoExecute taints that the pool tolerates",
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
        conditions: vec![ready_condition(pool, matching_nodes, previous, now)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        CpuSelector, GpuSelector, InferencePoolSpec, ModelDeploymentStatus, ModelSpec, Resources,
        Sharding, Tenant,
    };
    use crate::crd::{GpuVendor, HardwareClass, ModelDeploymentSpec};
    use k8s_openapi::api::core::v1::{NodeSpec, Taint, Toleration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn node(labels: &BTreeMap<String, String>) -> Node {
        Node {
            metadata: ObjectMeta {
                labels: Some(labels.clone()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    fn node_matches(hw: &Hardware, labels: &BTreeMap<String, String>) -> bool {
        placement::admits(hw, &node(labels))
    }

    fn count<'a>(
        hw: &Hardware,
        labels: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
    ) -> i32 {
        let nodes: Vec<Node> = labels.into_iter().map(node).collect();
        count_matching_nodes(hw, &nodes)
    }

    fn opts() -> RenderOptions {
        RenderOptions::default()
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
                api_keys: None,
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
        let hw = cpu_hardware(&["AVX512F", "AVX512BW"], &["AVX512VNNI"]);
        assert_eq!(required_requirements(&hw).len(), 2);
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
        assert!(node_matches(&hw, &avx512));
        assert!(!node_matches(&hw, &avx2));
        assert!(!node_matches(&hw, &half));
        assert!(!node_matches(&hw, &wrong_value));
        assert_eq!(count(&hw, [&avx512, &avx2, &half, &avx512]), 2);
    }

    #[test]
    fn node_selector_labels_are_anded() {
        let mut hw = cpu_hardware(&["AVX2"], &[]);
        hw.node_selector = labels(&[("pool", "inference")]);
        let avx2 = labels(&[("feature.node.kubernetes.io/cpu-cpuid.AVX2", "true")]);
        let mut avx2_pool = avx2.clone();
        avx2_pool.insert("pool".into(), "inference".into());
        let mut avx2_other = avx2.clone();
        avx2_other.insert("pool".into(), "batch".into());
        assert!(!node_matches(&hw, &avx2));
        assert!(node_matches(&hw, &avx2_pool));
        assert!(!node_matches(&hw, &avx2_other));
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
        assert!(required_requirements(&hw).is_empty());
        assert_eq!(count(&hw, [&BTreeMap::new()]), 1);
        assert_eq!(
            describe_requirements(&required_requirements(&hw)),
            "no label requirements"
        );
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
        let hw = gpu_hardware(
            GpuVendor::Nvidia,
            &["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"],
            Some(40000),
        );
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
        assert!(node_matches(&hw, &h100));
        assert!(node_matches(&hw, &exactly_min));
        assert!(!node_matches(&hw, &too_small));
        assert!(!node_matches(&hw, &other_product));
        assert!(!node_matches(&hw, &no_memory_label));
        assert!(!node_matches(&hw, &garbage_memory));
        assert_eq!(
            describe_requirements(&required_requirements(&hw)),
            "nvidia.com/gpu.product in (NVIDIA-H100-80GB-HBM3, NVIDIA-A100-SXM4-80GB), nvidia.com/gpu.memory > 39999"
        );
    }

    #[test]
    fn any_product_of_the_vendor_when_none_is_listed() {
        let hw = gpu_hardware(GpuVendor::Amd, &[], Some(1000));
        // AMD publishes no MiB memory label: only the product label is required.
        assert_eq!(required_requirements(&hw).len(), 1);
        let mi300 = labels(&[("amd.com/gpu.product-name", "AMD_Instinct_MI300X")]);
        let nvidia = labels(&[("nvidia.com/gpu.product", "Tesla-T4")]);
        let cpu_only = labels(&[("feature.node.kubernetes.io/cpu-cpuid.AVX2", "true")]);
        assert!(node_matches(&hw, &mi300));
        assert!(!node_matches(&hw, &nvidia));
        assert!(!node_matches(&hw, &cpu_only));
    }

    #[test]
    fn requirement_operators_follow_the_scheduler() {
        let l = labels(&[("a", "1"), ("b", "x")]);
        let r = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
            key: key.to_owned(),
            operator: op.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        };
        assert!(placement::requirement_matches(&r("b", "NotIn", &["y"]), &l));
        assert!(!placement::requirement_matches(
            &r("b", "NotIn", &["x"]),
            &l
        ));
        assert!(placement::requirement_matches(
            &r("zz", "NotIn", &["x"]),
            &l
        ));
        assert!(placement::requirement_matches(
            &r("zz", "DoesNotExist", &[]),
            &l
        ));
        assert!(!placement::requirement_matches(
            &r("a", "DoesNotExist", &[]),
            &l
        ));
        assert!(placement::requirement_matches(&r("a", "Lt", &["2"]), &l));
        assert!(!placement::requirement_matches(&r("a", "Gt", &["1"]), &l));
        assert!(!placement::requirement_matches(
            &r("a", "Gt", &["0", "1"]),
            &l
        ));
        assert!(!placement::requirement_matches(
            &r("a", "Matches", &["1"]),
            &l
        ));
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
        let usage = aggregate_usage(&p, &deployments, &opts());
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
        let usage = aggregate_usage(
            &p,
            &[md("stray", "x", "cpu", 1, 1, Some("1"), Some("1Gi"))],
            &opts(),
        );
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
            &opts(),
        );
        assert_eq!(usage.allocated.gpus, 3 + 2 * 2);
        assert_eq!(usage.tenants[0].gpus, 7);
    }

    #[test]
    fn a_deployment_that_cannot_be_computed_is_left_out_and_named() {
        let p = pool("cpu", cpu_hardware(&[], &[]), vec![], true);
        let usage = aggregate_usage(
            &p,
            &[
                md("a", "b", "cpu", 1, 1, Some("2 cores"), None),
                md("a", "c", "cpu", 1, 1, Some("2"), None),
            ],
            &opts(),
        );
        assert_eq!(usage.left_out.len(), 1);
        assert!(
            usage.left_out[0].contains("2 cores"),
            "{:?}",
            usage.left_out
        );
        assert_eq!(usage.allocated.cpu.as_str(), "2");
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
    fn untolerated_taints_and_cordons_exclude_a_node() {
        let mut hw = cpu_hardware(&["AVX2"], &[]);
        let labels = labels(&[("feature.node.kubernetes.io/cpu-cpuid.AVX2", "true")]);
        let tainted = |effect: &str| {
            let mut n = node(&labels);
            n.spec = Some(NodeSpec {
                taints: Some(vec![Taint {
                    key: "dedicated".into(),
                    value: Some("inference".into()),
                    effect: effect.into(),
                    time_added: None,
                }]),
                ..NodeSpec::default()
            });
            n
        };
        let mut cordoned = node(&labels);
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..NodeSpec::default()
        });
        let nodes = [
            node(&labels),
            tainted("NoSchedule"),
            tainted("PreferNoSchedule"),
            cordoned,
        ];
        // PreferNoSchedule only weighs scheduling; NoSchedule needs a toleration.
        assert_eq!(count_matching_nodes(&hw, &nodes), 2);
        hw.tolerations = vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("inference".into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        }];
        assert_eq!(count_matching_nodes(&hw, &nodes), 3);
    }

    #[test]
    fn ready_condition_says_why_and_keeps_its_transition_time() {
        let p = pool("cpu", cpu_hardware(&["AVX512F"], &[]), vec![], false);
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let none = ready_condition(&p, 0, &[], t0);
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
        let still = ready_condition(&p, 0, std::slice::from_ref(&none), t1);
        assert_eq!(still.last_transition_time, Time(t0));
        // Nodes appear: a new transition.
        let some = ready_condition(&p, 2, &[still], t1);
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
        let one = ready_condition(&p, 1, &[], t1);
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
        let usage = aggregate_usage(
            &p,
            &[md("a", "m", "cpu", 1, 1, Some("2"), Some("4Gi"))],
            &opts(),
        );
        let s = pool_status(&p, 4, usage, Timestamp::UNIX_EPOCH);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.matching_nodes, Some(4));
        assert_eq!(s.allocated.as_ref().unwrap().memory, Quantity::new("4Gi"));
        assert_eq!(s.tenants.len(), 1);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].type_, "Ready");
    }
}
