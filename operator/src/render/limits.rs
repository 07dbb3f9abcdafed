//! The tenant limits each server pod enforces: the ConfigMap `m-limits` with `limits.json` in
//! the server's `--tenant-limits` format, mounted at [`LIMITS_MOUNT_PATH`].
//!
//! The pool's quota gives the tenant's requests per minute, tokens per minute and concurrent
//! requests for the whole pool. Each server counts on its own, so each pod gets a share: the
//! tenant's number divided by the tenant's server pods in the pool (this deployment's and its
//! other deployments', all shards counted), rounded up, at least 1. Together the pods admit
//! about the tenant's quota (a little more from the rounding); with shards only the first stage
//! takes requests, so the share is then smaller than it could be. The pods count every caller
//! as the deployment's tenant (`--tenant`), whatever tenant names an API key file holds.
//!
//! The share changes when the tenant scales, so this file is apart from the engine's
//! ConfigMap (whose hash rolls the pods): the kubelet updates the mounted file in place (within
//! its sync period, about a minute) and the server reads it again when it changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Serialize;

use super::config::json_config_map;
use super::meta::Names;
use super::tenant::TenantRef;

/// Key of the limits file in the ConfigMap.
pub const LIMITS_KEY: &str = "limits.json";
/// Directory the limits ConfigMap is mounted at (apart from the engine's ConfigMap, which is
/// read-only and cannot hold a mount point).
pub const LIMITS_MOUNT_PATH: &str = "/etc/ryzanstein-limits";

/// One tenant's limits on one server, as the server reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<i64>,
}

/// The limits file: the tenant and its share per pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitsFile {
    pub tenants: BTreeMap<String, ServerLimit>,
}

/// `total` split over `pods`, rounded up, at least 1.
fn share(total: i64, pods: i128) -> i64 {
    let pods = pods.max(1);
    let each = (i128::from(total.max(1)) + pods - 1) / pods;
    i64::try_from(each).unwrap_or(i64::MAX).max(1)
}

/// The limits of `tenant` on each of its `tenant_pods` server pods in the pool.
pub fn limits_file(tenant: &TenantRef, tenant_pods: i128) -> LimitsFile {
    let quota = tenant.quota.clone().unwrap_or_default();
    let limit = ServerLimit {
        requests_per_minute: quota.requests_per_minute.map(|n| share(n, tenant_pods)),
        tokens_per_minute: quota.tokens_per_minute.map(|n| share(n, tenant_pods)),
        max_concurrent_requests: quota
            .max_concurrent_requests
            .map(|n| share(i64::from(n), tenant_pods)),
    };
    LimitsFile {
        tenants: BTreeMap::from([(tenant.name.clone(), limit)]),
    }
}

/// The ConfigMap holding `file` as [`LIMITS_KEY`].
pub fn limits_config_map(
    names: &Names,
    owner: &OwnerReference,
    annotations: &BTreeMap<String, String>,
    file: &LimitsFile,
) -> ConfigMap {
    json_config_map(
        names,
        names.limits_config_map(),
        owner,
        annotations,
        LIMITS_KEY,
        file,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Quota;

    fn tenant(quota: Option<Quota>) -> TenantRef {
        TenantRef {
            name: "team-a".into(),
            quota,
            listed: true,
        }
    }

    #[test]
    fn the_quota_is_split_over_the_tenants_pods_rounding_up() {
        let quota = Quota {
            requests_per_minute: Some(600),
            tokens_per_minute: Some(100_001),
            max_concurrent_requests: Some(3),
            ..Quota::default()
        };
        let f = limits_file(&tenant(Some(quota)), 4);
        assert_eq!(
            f.tenants["team-a"],
            ServerLimit {
                requests_per_minute: Some(150),
                tokens_per_minute: Some(25_001),
                max_concurrent_requests: Some(1),
            }
        );
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"tenants": {"team-a": {"requestsPerMinute": 150,
                "tokensPerMinute": 25001, "maxConcurrentRequests": 1}}})
        );
        // No pods counted yet (scaled to zero): the whole quota.
        assert_eq!(
            limits_file(
                &tenant(Some(Quota {
                    requests_per_minute: Some(60),
                    ..Quota::default()
                })),
                0
            )
            .tenants["team-a"]
                .requests_per_minute,
            Some(60)
        );
    }

    #[test]
    fn no_quota_is_no_limit() {
        let f = limits_file(&tenant(None), 3);
        assert_eq!(f.tenants["team-a"], ServerLimit::default());
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"tenants": {"team-a": {}}})
        );
    }
}
