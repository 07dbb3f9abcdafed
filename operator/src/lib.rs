//! Ryzanstein's Kubernetes operator: the `InferencePool` and `ModelDeployment` custom resources
//! and (as P2 proceeds) the controllers that turn them into placed, scaled, quota-bound pods.
//!
//! Modules:
//! - [`crd`]: the custom resource types, their CEL validation rules and CRD generation
//!   (`crdgen` writes `crds/` and `charts/ryzanstein/crds/` from them).
//! - [`error`]: the crate's one error type.

pub mod crd;
pub mod error;
// Pure render functions (spec in, Kubernetes objects out) go in `pub mod render;` here.

pub use error::{Error, Result};
