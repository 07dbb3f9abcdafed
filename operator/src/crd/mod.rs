//! The custom resources, group `ryzanstein.dev`, version `v1alpha1` (see
//! `shared/design/CRDS.md`), and the generation of their CustomResourceDefinitions.
//!
//! The Rust types are the source of truth: `crdgen` (see [`generate`]) writes the YAML in `crds/`
//! and `charts/ryzanstein/crds/`, and a test fails when the committed files drift.

pub mod common;
pub mod deployment;
pub mod generate;
pub mod pool;

pub use common::{Condition, Quantity};
pub use deployment::{
    ApiKeySecret, Autoscaling, Engine, Load, ModelDeployment, ModelDeploymentSpec,
    ModelDeploymentStatus, ModelFormat, ModelSpec, Quantization, Resources, Sharding, Speculative,
    SpeculativeMode,
};
pub use pool::{
    Capacity, CpuSelector, CpuVendor, GpuSelector, GpuVendor, Hardware, HardwareClass,
    InferencePool, InferencePoolSpec, InferencePoolStatus, Quota, Tenant, TenantUsage, Usage,
};

/// API group of both resources.
pub const GROUP: &str = "ryzanstein.dev";
/// API version of both resources.
pub const VERSION: &str = "v1alpha1";
