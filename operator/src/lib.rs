//! Ryzanstein's Kubernetes operator: the `InferencePool` and `ModelDeployment` custom resources
//! and (as P2 proceeds) the controllers that turn them into placed, scaled, quota-bound pods.
//!
//! Modules:
//! - [`crd`]: the custom resource types, their CEL validation rules and CRD generation
//!   (`crdgen` writes `crds/` and `charts/ryzanstein/crds/` from them).
//! - [`error`]: the crate's one error type.
//! - [`config`]: the operator's configuration file (`--config`).
//! - [`metrics`], [`http`]: Prometheus metrics and the `/metrics` + `/healthz` listener.
//! - [`leader`]: leader election through a `coordination.k8s.io/v1` Lease.
//! - [`context`]: what every reconcile gets (client, metrics, event recorder, configuration).
//! - [`pool_status`], [`pool_controller`]: the InferencePool controller (pure part, reconcile).
//! - [`deployment_status`], [`deployment_controller`]: the ModelDeployment controller (pure
//!   part, reconcile).
//! - [`grants`]: quota grants, so concurrent reconciles cannot spend one quota twice.
//! - [`autoscale`], [`autoscaler`]: load-based autoscaling (pure decisions, the scrape loop).
//! - [`run`], [`shutdown`]: the controllers behind leader election, until SIGTERM/SIGINT.

pub mod autoscale;
pub mod autoscaler;
pub mod config;
pub mod context;
pub mod crd;
pub mod deployment_controller;
pub mod deployment_status;
pub mod error;
pub mod grants;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod pool_controller;
pub mod pool_status;
pub mod render;
pub mod run;
pub mod shutdown;

pub use error::{Error, Result};
