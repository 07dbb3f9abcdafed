//! Pure render functions: a `ModelDeployment`, its `InferencePool` and its tenant in, Kubernetes
//! objects out. Nothing here talks to the API server; the reconciler resolves the pool and the
//! tenant, decides the replica count (after [`quota`] capping) and applies what [`render`]
//! returns with server-side apply.
//!
//! - [`meta`]: object names, the common labels, owner references.
//! - [`resources`]: what one server pod requests (requests equal limits) and its thread count.
//! - [`placement`]: node affinity, tolerations and the GPU resource from the pool's hardware.
//! - [`source`]: the model source as the server's `--model` argument (and a volume for `pvc://`).
//! - [`config`]: the ConfigMap with the engine options and the tenant's limits.
//! - [`pod`]: the server pod template.
//! - [`children`]: Deployment or StatefulSets, Services, PodDisruptionBudget, ConfigMap.
//! - [`tenant`]: which tenant of a pool a namespace belongs to.
//! - [`quota`]: how many replica groups the tenant's quota and the pool's capacity allow.

pub mod children;
pub mod config;
pub mod limits;
pub mod meta;
pub mod placement;
pub mod pod;
pub mod quota;
pub mod resources;
pub mod source;
pub mod tenant;

pub use children::{ChildRef, Children, Workload};
pub use quota::{cap_replicas, CapReason, Footprint, QuotaCap, QuotaDecision, QuotaInput};
pub use resources::PodResources;
pub use tenant::{resolve_tenant, NotAdmitted, TenantRef};

use crate::crd::{InferencePool, ModelDeployment, Quantity};
use crate::error::{Error, Result};

/// Port the server listens on inside the pod (and the Services' port).
pub const SERVER_PORT: i32 = 8080;
/// Name of the server's container port and of the Services' port.
pub const PORT_NAME: &str = "http";

/// Operator-wide settings the render functions need (from the operator's config file).
#[derive(Clone, Debug, PartialEq)]
pub struct RenderOptions {
    /// Server image for ModelDeployments with no `spec.image`.
    pub default_image: String,
    /// `imagePullPolicy` of server containers; `None` leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// Names of Secrets put on server pods as `imagePullSecrets`.
    pub image_pull_secrets: Vec<String>,
    /// CPU of a server pod whose ModelDeployment leaves `resources.cpu` out.
    pub default_cpu: Quantity,
    /// Memory of a server pod whose ModelDeployment leaves `resources.memory` out.
    pub default_memory: Quantity,
    /// Seconds the server gets to finish in-flight requests after SIGTERM (its
    /// `--drain-timeout-secs`).
    pub drain_seconds: i64,
    /// Seconds the preStop hook waits before SIGTERM, so that endpoint controllers and proxies
    /// stop sending new requests to a terminating pod first.
    pub pre_stop_sleep_seconds: i64,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            default_image: format!("ryzanstein/server:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            default_cpu: Quantity::new(resources::DEFAULT_POD_CPU),
            default_memory: Quantity::new(resources::DEFAULT_POD_MEMORY),
            drain_seconds: 60,
            pre_stop_sleep_seconds: 5,
        }
    }
}

/// Renders every child object of `md` running `scale.replicas` replica groups in `pool` for
/// `tenant`.
///
/// `scale.replicas` is the number of replica groups after autoscaling and quota capping (see
/// [`quota::cap_replicas`]); with `shards` > 1 each group is one pod of every shard's
/// StatefulSet. `md` must come from the API server (it needs a namespace and a uid for the owner
/// references).
pub fn render(
    md: &ModelDeployment,
    pool: &InferencePool,
    tenant: &TenantRef,
    scale: impl Into<Scale>,
    opts: &RenderOptions,
) -> Result<Children> {
    children::children(md, pool, tenant, scale.into(), opts)
}

/// How many pods a render is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scale {
    /// Replica groups of this deployment.
    pub replicas: i32,
    /// Server pods of the tenant's other deployments in the pool (all shards counted): the
    /// tenant's request and token limits are split over its pods (see [`limits`]).
    pub tenant_pods_elsewhere: i128,
}

/// A deployment whose tenant has no other pods in the pool.
impl From<i32> for Scale {
    fn from(replicas: i32) -> Self {
        Scale {
            replicas,
            tenant_pods_elsewhere: 0,
        }
    }
}

/// Server pods per replica group (`sharding.shards`, at least 1).
pub fn shards(md: &ModelDeployment) -> i32 {
    md.spec.sharding.as_ref().map_or(1, |s| s.shards.max(1))
}

/// The error for a ModelDeployment that cannot be rendered as written.
pub(crate) fn unrenderable(md: &ModelDeployment, reason: impl Into<String>) -> Error {
    Error::Unrenderable {
        object: format!(
            "ModelDeployment {}/{}",
            md.metadata.namespace.as_deref().unwrap_or_default(),
            md.metadata.name.as_deref().unwrap_or_default()
        ),
        reason: reason.into(),
    }
}
