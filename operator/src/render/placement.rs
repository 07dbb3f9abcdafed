//! Where server pods may run: node affinity, tolerations and the GPU resource, from an
//! `InferencePool`'s `spec.hardware`.
//!
//! Required (one node-selector term, every requirement ANDed):
//! - each `cpu.requiredFeatures` entry `F`: `feature.node.kubernetes.io/cpu-cpuid.F=true`
//!   (Node Feature Discovery);
//! - GPU pools: the product label (`nvidia.com/gpu.product` or `amd.com/gpu.product-name`) in
//!   `gpu.products`, or present when no product is listed; NVIDIA's `nvidia.com/gpu.memory`
//!   (MiB, from GPU feature discovery) greater than `minMemoryMiB - 1`. AMD's node labeller has
//!   no numeric memory label, so `minMemoryMiB` restricts NVIDIA nodes only;
//! - each `nodeSelector` label, as `key In (value)`.
//!
//! Preferred (weighted, never restricting): each `cpu.preferredFeatures` entry (weight
//! [`PREFERRED_FEATURE_WEIGHT`] each) and the CPU vendor
//! (`feature.node.kubernetes.io/cpu-model.vendor_id`, weight [`VENDOR_WEIGHT`]), so a node with
//! every preferred feature beats one with only the right vendor.
//!
//! The pool's tolerations are copied to every pod. [`admits`] evaluates the same required terms
//! and the node's taints, so a pool counts exactly the nodes its pods can be scheduled on.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PreferredSchedulingTerm, Taint, Toleration,
};

use crate::crd::{CpuVendor, GpuVendor, Hardware, HardwareClass, InferencePool};

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
/// Extended resource of NVIDIA GPUs.
pub const NVIDIA_GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Extended resource of AMD GPUs.
pub const AMD_GPU_RESOURCE: &str = "amd.com/gpu";

/// Scheduling weight of each preferred CPU feature.
pub const PREFERRED_FEATURE_WEIGHT: i32 = 20;
/// Scheduling weight of the preferred CPU vendor.
pub const VENDOR_WEIGHT: i32 = 10;

/// Node affinity and tolerations of a pool's server pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// `None` when the pool neither requires nor prefers anything (any node will do).
    pub affinity: Option<Affinity>,
    /// The pool's tolerations.
    pub tolerations: Vec<Toleration>,
}

/// The placement of server pods in a pool with `hardware`.
pub fn placement(hardware: &Hardware) -> Placement {
    let required = required_requirements(hardware);
    let preferred = preferred_terms(hardware);
    let node_affinity = NodeAffinity {
        required_during_scheduling_ignored_during_execution: (!required.is_empty()).then(|| {
            NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(required),
                    match_fields: None,
                }],
            }
        }),
        preferred_during_scheduling_ignored_during_execution: (!preferred.is_empty())
            .then_some(preferred),
    };
    let any = node_affinity
        .required_during_scheduling_ignored_during_execution
        .is_some()
        || node_affinity
            .preferred_during_scheduling_ignored_during_execution
            .is_some();
    Placement {
        affinity: any.then(|| Affinity {
            node_affinity: Some(node_affinity),
            ..Affinity::default()
        }),
        tolerations: hardware.tolerations.clone(),
    }
}

/// The required node-selector requirements (ANDed) that `hardware` stands for; see the module
/// documentation. The one translation of `hardware` into what a node must have.
pub fn required_requirements(hardware: &Hardware) -> Vec<NodeSelectorRequirement> {
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
            // `Gt` is strict: "at least min MiB" is "greater than min - 1".
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

/// The weighted preferences: preferred CPU features, then the CPU vendor.
pub fn preferred_terms(hardware: &Hardware) -> Vec<PreferredSchedulingTerm> {
    let Some(cpu) = &hardware.cpu else {
        return Vec::new();
    };
    let mut terms: Vec<PreferredSchedulingTerm> = cpu
        .preferred_features
        .iter()
        .map(|feature| {
            preferred(
                PREFERRED_FEATURE_WEIGHT,
                requirement(&format!("{NFD_CPUID_PREFIX}{feature}"), "In", &["true"]),
            )
        })
        .collect();
    if let Some(vendor) = cpu.vendor {
        terms.push(preferred(
            VENDOR_WEIGHT,
            requirement(NFD_CPU_VENDOR, "In", &[vendor_id(vendor)]),
        ));
    }
    terms
}

/// NFD's `cpu-model.vendor_id` value for a vendor.
pub fn vendor_id(vendor: CpuVendor) -> &'static str {
    match vendor {
        CpuVendor::Amd => "AMD",
        CpuVendor::Intel => "Intel",
    }
}

/// The extended resource a GPU vendor's device plugin advertises.
pub fn gpu_resource(vendor: GpuVendor) -> &'static str {
    match vendor {
        GpuVendor::Nvidia => NVIDIA_GPU_RESOURCE,
        GpuVendor::Amd => AMD_GPU_RESOURCE,
    }
}

fn preferred(weight: i32, req: NodeSelectorRequirement) -> PreferredSchedulingTerm {
    PreferredSchedulingTerm {
        weight,
        preference: NodeSelectorTerm {
            match_expressions: Some(vec![req]),
            match_fields: None,
        },
    }
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

/// Whether `labels` satisfy one requirement, with the scheduler's semantics (`Gt`/`Lt` compare
/// integers and fail on a label that is not one; an unknown operator never matches).
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

/// Whether `tolerations` tolerate `taint` (the scheduler's rules: an empty effect matches every
/// effect; `Exists` with an empty key matches every taint; `Equal`, the default, compares key
/// and value).
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key = t.key.as_deref().unwrap_or_default();
        let key_value_ok = match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => key.is_empty() || key == taint.key,
            "Equal" => {
                key == taint.key
                    && t.value.as_deref().unwrap_or_default()
                        == taint.value.as_deref().unwrap_or_default()
            }
            _ => false,
        };
        effect_ok && key_value_ok
    })
}

/// Whether a server pod of a pool with `hardware` can be scheduled on `node` as far as labels
/// and taints go: every required requirement holds, and every `NoSchedule`/`NoExecute` taint
/// (cordoned nodes carry one) is tolerated. Capacity is not considered.
pub fn admits(hardware: &Hardware, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let labels_ok = required_requirements(hardware)
        .iter()
        .all(|r| requirement_matches(r, labels));
    let taints_ok = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerates(&hardware.tolerations, t));
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    labels_ok && taints_ok && !cordoned
}

/// The pool and its hardware for people (`status.hardware`): "cpu-avx512 (CPU AVX512F+AVX512BW,
/// AMD)", "gpu-h100 (GPU NVIDIA NVIDIA-H100-80GB-HBM3)".
pub fn describe(pool: &InferencePool) -> String {
    let hw = &pool.spec.hardware;
    let mut parts: Vec<String> = Vec::new();
    match (hw.class, &hw.gpu) {
        (HardwareClass::Gpu, Some(gpu)) => {
            let vendor = match gpu.vendor {
                GpuVendor::Nvidia => "NVIDIA",
                GpuVendor::Amd => "AMD",
            };
            if gpu.products.is_empty() {
                parts.push(format!("GPU {vendor}"));
            } else {
                parts.push(format!("GPU {vendor} {}", gpu.products.join("|")));
            }
        }
        (HardwareClass::Gpu, None) => parts.push("GPU".into()),
        (HardwareClass::Cpu, _) => {
            let features = hw
                .cpu
                .as_ref()
                .map(|c| c.required_features.join("+"))
                .unwrap_or_default();
            if features.is_empty() {
                parts.push("CPU".into());
            } else {
                parts.push(format!("CPU {features}"));
            }
        }
    }
    if let Some(vendor) = hw.cpu.as_ref().and_then(|c| c.vendor) {
        parts.push(vendor_id(vendor).to_owned());
    }
    format!(
        "{} ({})",
        pool.metadata.name.as_deref().unwrap_or_default(),
        parts.join(", ")
    )
}
