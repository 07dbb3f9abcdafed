//! Which tenant of a pool a namespace belongs to.
//!
//! A tenant that lists the namespace owns it (the CRD's rules keep a namespace to one tenant per
//! pool; should two list it anyway, the first in the pool's order wins). A namespace that no
//! tenant lists is admitted only with `admitUnlistedNamespaces: true`, and then all such
//! namespaces together form one tenant, [`UNLISTED_TENANT`], sharing `defaultQuota`.

use std::fmt;

use crate::crd::{InferencePool, Quota};

/// Name of the tenant formed by the namespaces no tenant lists (not a DNS label, so it never
/// collides with a listed tenant; the same name the pool's `status.tenants` uses).
pub const UNLISTED_TENANT: &str = "(unlisted)";

/// A namespace's tenant in a pool.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantRef {
    /// The tenant's name, or [`UNLISTED_TENANT`].
    pub name: String,
    /// What it may use; `None` is unlimited.
    pub quota: Option<Quota>,
    /// `false` for the namespaces admitted through `admitUnlistedNamespaces`.
    pub listed: bool,
}

impl TenantRef {
    /// The tenant as a sentence's subject: "team-a", or "namespaces no tenant lists".
    pub fn display_name(&self) -> String {
        if self.listed {
            self.name.clone()
        } else {
            "namespaces that no tenant lists".to_owned()
        }
    }
}

/// A namespace the pool does not admit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAdmitted {
    /// The pool.
    pub pool: String,
    /// The namespace.
    pub namespace: String,
}

impl NotAdmitted {
    /// Condition reason (`PoolReady=False`).
    pub const REASON: &'static str = "NamespaceNotAdmitted";
}

impl fmt::Display for NotAdmitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "namespace {} is not listed by any tenant of InferencePool {}, which does not admit unlisted namespaces; ask the platform team to add it to a tenant's namespaces (or to set admitUnlistedNamespaces: true)",
            self.namespace, self.pool
        )
    }
}

impl std::error::Error for NotAdmitted {}

/// The tenant of `pool` that `namespace` belongs to.
pub fn resolve_tenant(pool: &InferencePool, namespace: &str) -> Result<TenantRef, NotAdmitted> {
    if let Some(t) = pool
        .spec
        .tenants
        .iter()
        .find(|t| t.namespaces.iter().any(|n| n == namespace))
    {
        return Ok(TenantRef {
            name: t.name.clone(),
            quota: t.quota.clone(),
            listed: true,
        });
    }
    if pool.spec.admit_unlisted_namespaces {
        return Ok(TenantRef {
            name: UNLISTED_TENANT.to_owned(),
            quota: pool.spec.default_quota.clone(),
            listed: false,
        });
    }
    Err(NotAdmitted {
        pool: pool.metadata.name.clone().unwrap_or_default(),
        namespace: namespace.to_owned(),
    })
}
