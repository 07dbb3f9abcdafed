//! What one server pod requests, and the engine thread count that follows its CPU.
//!
//! Requests equal limits for CPU and memory (Guaranteed QoS, so the kubelet's static CPU manager
//! can pin the pod to whole cores); GPUs are requested and limited alike.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use super::{placement, unrenderable, RenderOptions};
use crate::crd::{HardwareClass, InferencePool, ModelDeployment, Quantity};
use crate::error::Result;

/// CPU of a server pod whose ModelDeployment leaves `resources.cpu` out (the same default the
/// pool controller counts usage with).
pub const DEFAULT_POD_CPU: &str = "1";
/// Memory of a server pod whose ModelDeployment leaves `resources.memory` out.
pub const DEFAULT_POD_MEMORY: &str = "2Gi";

/// One server pod's resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodResources {
    /// CPU as written (or the default).
    pub cpu: Quantity,
    /// Memory as written (or the default).
    pub memory: Quantity,
    /// CPU in millicores.
    pub cpu_millis: i128,
    /// Memory in bytes.
    pub memory_bytes: i128,
    /// GPUs: `resources.gpus`, else 1 in a GPU pool and 0 in a CPU pool.
    pub gpus: i32,
    /// The extended resource GPUs are requested as (`nvidia.com/gpu`, `amd.com/gpu`), when the
    /// pod requests any.
    pub gpu_resource: Option<&'static str>,
}

impl PodResources {
    /// The resources of one server pod of `md` in `pool`. Errors: a quantity that does not
    /// parse or is not positive, GPUs asked for in a CPU pool, or a GPU pool without a vendor.
    pub fn of(md: &ModelDeployment, pool: &InferencePool, opts: &RenderOptions) -> Result<Self> {
        let r = md.spec.resources.as_ref();
        let cpu = r
            .and_then(|r| r.cpu.clone())
            .unwrap_or_else(|| opts.default_cpu.clone());
        let memory = r
            .and_then(|r| r.memory.clone())
            .unwrap_or_else(|| opts.default_memory.clone());
        let cpu_millis = cpu.millis()?;
        let memory_bytes = memory.value()?;
        if cpu_millis <= 0 {
            return Err(unrenderable(
                md,
                format!("resources.cpu is {cpu}; a server pod needs more than zero CPU"),
            ));
        }
        if memory_bytes <= 0 {
            return Err(unrenderable(
                md,
                format!("resources.memory is {memory}; a server pod needs more than zero memory"),
            ));
        }
        let class = pool.spec.hardware.class;
        let gpus = r
            .and_then(|r| r.gpus)
            .unwrap_or(i32::from(class == HardwareClass::Gpu));
        if gpus < 0 {
            return Err(unrenderable(
                md,
                format!("resources.gpus is {gpus}; use 0 or more"),
            ));
        }
        let gpu_resource = if gpus == 0 {
            None
        } else if class == HardwareClass::Cpu {
            return Err(unrenderable(
                md,
                format!(
                    "resources.gpus is {gpus} but pool {} is a CPU pool; set resources.gpus to 0 or use a pool with hardware.class GPU",
                    pool.metadata.name.as_deref().unwrap_or_default()
                ),
            ));
        } else {
            let vendor = pool.spec.hardware.gpu.as_ref().map(|g| g.vendor).ok_or_else(|| {
                unrenderable(
                    md,
                    format!(
                        "pool {} has hardware.class GPU but no hardware.gpu.vendor, so the GPU resource is unknown",
                        pool.metadata.name.as_deref().unwrap_or_default()
                    ),
                )
            })?;
            Some(placement::gpu_resource(vendor))
        };
        Ok(Self {
            cpu,
            memory,
            cpu_millis,
            memory_bytes,
            gpus,
            gpu_resource,
        })
    }

    /// Requests and limits, identical: `cpu`, `memory` and the GPU resource when any.
    pub fn requirements(&self) -> ResourceRequirements {
        let mut amounts = BTreeMap::from([
            ("cpu".to_owned(), K8sQuantity::from(&self.cpu)),
            ("memory".to_owned(), K8sQuantity::from(&self.memory)),
        ]);
        if let Some(resource) = self.gpu_resource {
            amounts.insert(resource.to_owned(), K8sQuantity(self.gpus.to_string()));
        }
        ResourceRequirements {
            requests: Some(amounts.clone()),
            limits: Some(amounts),
            ..ResourceRequirements::default()
        }
    }
}

/// The engine's thread count: `engine.threads` when above 0, else the CPU request rounded up to
/// whole cores (at least 1), so a pod with "1500m" runs 2 threads and one with "500m" runs 1.
pub fn threads(md: &ModelDeployment, resources: &PodResources) -> i64 {
    match md.spec.engine.as_ref().and_then(|e| e.threads) {
        Some(n) if n > 0 => i64::from(n),
        _ => {
            let cores = (resources.cpu_millis + 999) / 1000;
            i64::try_from(cores.max(1)).unwrap_or(i64::MAX)
        }
    }
}
