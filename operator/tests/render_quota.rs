//! Quota math: each cap reason, unlimited dimensions, exact boundaries, usage already over the
//! limit, ties, and the message a person reads in `QuotaExceeded`.

use ryzanstein_operator::crd::InferencePool;
use ryzanstein_operator::render::{
    cap_replicas, resolve_tenant, CapReason, Footprint, QuotaDecision, QuotaInput, TenantRef,
};
use serde_json::{json, Value};

const GI: i128 = 1 << 30;

fn pool(capacity: Value, quota: Value) -> InferencePool {
    serde_json::from_value(json!({
        "apiVersion": "ryzanstein.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "cpu-avx512"},
        "spec": {
            "hardware": {"class": "GPU", "gpu": {"vendor": "NVIDIA"}},
            "capacity": capacity,
            "tenants": [{"name": "team-a", "namespaces": ["team-a"], "quota": quota}],
        },
    }))
    .unwrap()
}

/// A pod of 2 CPUs, 4Gi and `gpus` GPUs.
fn pod(gpus: i128) -> Footprint {
    Footprint {
        pods: 1,
        cpu_millis: 2000,
        memory_bytes: 4 * GI,
        gpus,
    }
}

fn used(pods: i128, cpu: i128, mem_gi: i128, gpus: i128) -> Footprint {
    Footprint {
        pods,
        cpu_millis: cpu * 1000,
        memory_bytes: mem_gi * GI,
        gpus,
    }
}

struct Case {
    pool: InferencePool,
    tenant_used: Footprint,
    pool_used: Footprint,
    per_pod: Footprint,
    shards: i32,
}

impl Case {
    fn new(capacity: Value, quota: Value) -> Self {
        Self {
            pool: pool(capacity, quota),
            tenant_used: Footprint::default(),
            pool_used: Footprint::default(),
            per_pod: pod(0),
            shards: 1,
        }
    }

    fn decide(&self, desired: i32) -> QuotaDecision {
        let tenant: TenantRef = resolve_tenant(&self.pool, "team-a").unwrap();
        cap_replicas(&QuotaInput {
            pool: &self.pool,
            tenant: &tenant,
            tenant_used: self.tenant_used,
            pool_used: self.pool_used,
            per_pod: self.per_pod,
            shards: self.shards,
            desired,
        })
        .unwrap()
    }

    fn reason(&self, desired: i32) -> Option<CapReason> {
        self.decide(desired).cap.map(|c| c.reason)
    }
}

#[test]
fn no_quota_and_no_capacity_is_unlimited() {
    let mut c = Case::new(json!({}), json!({}));
    c.per_pod = pod(1);
    c.tenant_used = used(1000, 2000, 4000, 1000);
    c.pool_used = c.tenant_used;
    assert_eq!(
        c.decide(50),
        QuotaDecision {
            replicas: 50,
            cap: None
        }
    );
}

#[test]
fn tenant_max_replicas_counts_every_shard_and_says_so() {
    let mut c = Case::new(json!({}), json!({"maxReplicas": 8}));
    c.shards = 2;
    c.tenant_used = used(6, 0, 0, 0);
    c.pool_used = c.tenant_used;
    let d = c.decide(2);
    assert_eq!(d.replicas, 1);
    let cap = d.cap.unwrap();
    assert_eq!(cap.reason, CapReason::TenantMaxReplicas);
    assert_eq!(cap.reason.as_str(), "TenantMaxReplicas");
    assert_eq!(
        cap.message,
        "team-a may run 8 server pods in pool cpu-avx512; this deployment needs 2 more (4 wanted for 2 replicas of 2 shards, 6 in use by the tenant's other deployments), so it runs 1 of 2 replicas"
    );
}

#[test]
fn exact_boundary_fits_and_one_more_is_capped() {
    // 8 pods allowed, 6 used, 2 wanted: exactly full, not capped.
    let mut c = Case::new(json!({}), json!({"maxReplicas": 8}));
    c.tenant_used = used(6, 0, 0, 0);
    assert_eq!(c.decide(2).replicas, 2);
    assert_eq!(c.decide(2).cap, None);
    assert_eq!(c.decide(3).replicas, 2);
    assert_eq!(c.reason(3), Some(CapReason::TenantMaxReplicas));

    // The same for CPU in millicores: 16 CPUs, 12 used, 2 per pod.
    let mut c = Case::new(json!({}), json!({"maxCPU": "16"}));
    c.tenant_used = used(6, 12, 0, 0);
    assert_eq!(c.decide(2).cap, None);
    assert_eq!(c.decide(3).replicas, 2);
    // 15999m leaves room for only one more 2-CPU pod.
    let mut c = Case::new(json!({}), json!({"maxCPU": "15999m"}));
    c.tenant_used = used(6, 12, 0, 0);
    assert_eq!(c.decide(2).replicas, 1);
    assert_eq!(c.reason(2), Some(CapReason::TenantMaxCpu));
}

#[test]
fn tenant_cpu_memory_and_gpus_each_cap() {
    let mut c = Case::new(json!({}), json!({"maxCPU": "16"}));
    c.tenant_used = used(4, 10, 0, 0);
    let d = c.decide(4);
    assert_eq!(d.replicas, 3);
    let cap = d.cap.unwrap();
    assert_eq!(cap.reason.as_str(), "TenantMaxCPU");
    assert!(
        cap.message.starts_with(
            "team-a may request 16 CPUs in pool cpu-avx512; this deployment needs 2 more (8 wanted"
        ),
        "{}",
        cap.message
    );

    let mut c = Case::new(json!({}), json!({"maxMemory": "64Gi"}));
    c.tenant_used = used(0, 0, 60, 0);
    let d = c.decide(2);
    assert_eq!(d.replicas, 1);
    let cap = d.cap.unwrap();
    assert_eq!(cap.reason.as_str(), "TenantMaxMemory");
    assert!(
        cap.message.contains(
            "may request 64Gi of memory in pool cpu-avx512; this deployment needs 4Gi more"
        ),
        "{}",
        cap.message
    );

    let mut c = Case::new(json!({}), json!({"maxGPUs": 2}));
    c.per_pod = pod(1);
    c.tenant_used = used(1, 0, 0, 1);
    let d = c.decide(3);
    assert_eq!(d.replicas, 1);
    assert_eq!(d.cap.as_ref().unwrap().reason.as_str(), "TenantMaxGPUs");
    assert!(d.cap.unwrap().message.contains("may request 2 GPUs"));
}

#[test]
fn a_dimension_the_deployment_does_not_use_never_caps() {
    // A GPU quota of 0 does not stop a CPU-only deployment.
    let c = Case::new(json!({"maxGPUs": 0}), json!({"maxGPUs": 0}));
    assert_eq!(c.decide(5).replicas, 5);
    assert_eq!(c.decide(5).cap, None);
}

#[test]
fn pool_capacity_caps_with_pool_reasons() {
    let cases = [
        (
            json!({"maxReplicas": 10}),
            CapReason::PoolMaxReplicas,
            "PoolMaxReplicas",
        ),
        (json!({"maxCPU": "20"}), CapReason::PoolMaxCpu, "PoolMaxCPU"),
        (
            json!({"maxMemory": "40Gi"}),
            CapReason::PoolMaxMemory,
            "PoolMaxMemory",
        ),
        (
            json!({"maxGPUs": 10}),
            CapReason::PoolMaxGpus,
            "PoolMaxGPUs",
        ),
    ];
    for (capacity, reason, name) in cases {
        let mut c = Case::new(capacity, json!({}));
        c.per_pod = pod(1);
        // Other tenants use 8 pods, 16 CPUs, 32Gi and 8 GPUs: room for 2 more pods in each.
        c.pool_used = used(8, 16, 32, 8);
        let d = c.decide(3);
        assert_eq!(d.replicas, 2, "{name}");
        let cap = d.cap.unwrap();
        assert_eq!((cap.reason, cap.reason.as_str()), (reason, name));
        assert!(
            cap.message.starts_with("pool cpu-avx512 may "),
            "{}",
            cap.message
        );
        assert!(
            cap.message
                .contains("in use by other deployments in the pool"),
            "{}",
            cap.message
        );
        assert!(
            cap.message.ends_with("so it runs 2 of 3 replicas"),
            "{}",
            cap.message
        );
    }
}

#[test]
fn the_tightest_limit_wins_and_ties_go_to_the_tenant() {
    // Tenant allows 3 groups by CPU, pool allows 2 by pods: the pool binds.
    let mut c = Case::new(json!({"maxReplicas": 2}), json!({"maxCPU": "6"}));
    assert_eq!(c.decide(4).replicas, 2);
    assert_eq!(c.reason(4), Some(CapReason::PoolMaxReplicas));
    // Both allow 2: the tenant's quota is named.
    c = Case::new(json!({"maxReplicas": 2}), json!({"maxCPU": "4"}));
    assert_eq!(c.reason(4), Some(CapReason::TenantMaxCpu));
    // Within the tenant, pods before CPU on a tie.
    c = Case::new(json!({}), json!({"maxReplicas": 2, "maxCPU": "4"}));
    assert_eq!(c.reason(4), Some(CapReason::TenantMaxReplicas));
}

#[test]
fn usage_already_over_the_limit_allows_zero() {
    let mut c = Case::new(json!({}), json!({"maxReplicas": 4}));
    c.tenant_used = used(6, 0, 0, 0);
    let d = c.decide(1);
    assert_eq!(d.replicas, 0);
    let cap = d.cap.unwrap();
    assert!(cap.message.contains("needs 1 more"), "{}", cap.message);
    assert!(
        cap.message.ends_with("so it runs 0 of 1 replica"),
        "{}",
        cap.message
    );
}

#[test]
fn zero_desired_is_never_capped() {
    let mut c = Case::new(json!({}), json!({"maxReplicas": 0}));
    c.tenant_used = used(6, 0, 0, 0);
    assert_eq!(
        c.decide(0),
        QuotaDecision {
            replicas: 0,
            cap: None
        }
    );
}

#[test]
fn unlisted_namespaces_share_the_default_quota() {
    let pool: InferencePool = serde_json::from_value(json!({
        "apiVersion": "ryzanstein.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "cpu-avx2"},
        "spec": {
            "hardware": {"class": "CPU"},
            "admitUnlistedNamespaces": true,
            "defaultQuota": {"maxReplicas": 2},
        },
    }))
    .unwrap();
    let tenant = resolve_tenant(&pool, "somebody").unwrap();
    let d = cap_replicas(&QuotaInput {
        pool: &pool,
        tenant: &tenant,
        tenant_used: used(1, 0, 0, 0),
        pool_used: used(1, 0, 0, 0),
        per_pod: pod(0),
        shards: 1,
        desired: 3,
    })
    .unwrap();
    assert_eq!(d.replicas, 1);
    let msg = d.cap.unwrap().message;
    assert!(
        msg.starts_with("namespaces that no tenant lists may run 2 server pods in pool cpu-avx2"),
        "{msg}"
    );
}

#[test]
fn footprints_add_and_scale() {
    let r = Footprint {
        pods: 1,
        cpu_millis: 1500,
        memory_bytes: GI,
        gpus: 0,
    };
    let two_groups_of_three = r.times(6);
    assert_eq!(two_groups_of_three.cpu_millis, 9000);
    let sum: Footprint = [r, r, r].into_iter().sum();
    assert_eq!(sum, r.times(3));
    assert_eq!(r + r, r.times(2));
}

#[test]
fn a_bad_quota_quantity_is_an_error() {
    let pool = pool(json!({}), json!({"maxMemory": "lots"}));
    let tenant = resolve_tenant(&pool, "team-a").unwrap();
    let e = cap_replicas(&QuotaInput {
        pool: &pool,
        tenant: &tenant,
        tenant_used: Footprint::default(),
        pool_used: Footprint::default(),
        per_pod: pod(0),
        shards: 1,
        desired: 1,
    })
    .unwrap_err();
    assert!(e.to_string().contains("\"lots\""), "{e}");
}

#[test]
fn a_deployments_footprint_is_groups_times_shards_pods() {
    use ryzanstein_operator::crd::Quantity;
    use ryzanstein_operator::render::PodResources;
    let r = PodResources {
        cpu: Quantity::new("4"),
        memory: Quantity::new("8Gi"),
        cpu_millis: 4000,
        memory_bytes: 8 * GI,
        gpus: 0,
        gpu_resource: None,
    };
    // The sharded example: 2 groups of 2 shards, 16 CPUs and 32Gi.
    assert_eq!(
        Footprint::of_deployment(&r, 2, 2),
        Footprint {
            pods: 4,
            cpu_millis: 16_000,
            memory_bytes: 32 * GI,
            gpus: 0
        }
    );
    assert_eq!(Footprint::of_deployment(&r, 0, 4), Footprint::default());
}
