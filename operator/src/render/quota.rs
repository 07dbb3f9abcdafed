//! How many replica groups a deployment may run: its tenant's quota and its pool's capacity,
//! minus what the tenant's (and the pool's) other deployments already use.
//!
//! Every dimension (server pods, CPU, memory, GPUs; tenant quota, then pool capacity) allows
//! `floor((limit - used) / per_group)` groups, where a group is `shards` pods; an absent limit,
//! or a dimension this deployment does not use (GPUs of a CPU deployment), allows any number.
//! When the desired replicas exceed the smallest allowance, that dimension caps them and names
//! the reason (the first in the order above on a tie); [`QuotaCap::message`] says it in words.

use std::fmt;
use std::ops::Add;

use super::resources::PodResources;
use super::tenant::TenantRef;
use crate::crd::{InferencePool, Quantity};
use crate::error::Result;

/// Resources of a set of server pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Server pods (all shards counted).
    pub pods: i128,
    /// CPU in millicores.
    pub cpu_millis: i128,
    /// Memory in bytes.
    pub memory_bytes: i128,
    /// GPUs.
    pub gpus: i128,
}

impl Footprint {
    /// One server pod with `r`.
    pub fn pod(r: &PodResources) -> Self {
        Self {
            pods: 1,
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            gpus: i128::from(r.gpus),
        }
    }

    /// `groups` replica groups of `shards` pods with `r` each.
    pub fn of_deployment(r: &PodResources, groups: i32, shards: i32) -> Self {
        Self::pod(r).times(i128::from(groups.max(0)) * i128::from(shards.max(1)))
    }

    /// `n` times this footprint.
    pub fn times(self, n: i128) -> Self {
        Self {
            pods: self.pods * n,
            cpu_millis: self.cpu_millis * n,
            memory_bytes: self.memory_bytes * n,
            gpus: self.gpus * n,
        }
    }
}

impl Add for Footprint {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            pods: self.pods + o.pods,
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory_bytes: self.memory_bytes + o.memory_bytes,
            gpus: self.gpus + o.gpus,
        }
    }
}

impl std::iter::Sum for Footprint {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), Add::add)
    }
}

/// Why replicas were capped (the `QuotaExceeded` condition's reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapReason {
    /// The tenant's `quota.maxReplicas` (server pods).
    TenantMaxReplicas,
    /// The tenant's `quota.maxCPU`.
    TenantMaxCpu,
    /// The tenant's `quota.maxMemory`.
    TenantMaxMemory,
    /// The tenant's `quota.maxGPUs`.
    TenantMaxGpus,
    /// The pool's `capacity.maxReplicas`.
    PoolMaxReplicas,
    /// The pool's `capacity.maxCPU`.
    PoolMaxCpu,
    /// The pool's `capacity.maxMemory`.
    PoolMaxMemory,
    /// The pool's `capacity.maxGPUs`.
    PoolMaxGpus,
}

impl CapReason {
    /// The condition reason: `TenantMaxReplicas`, `TenantMaxCPU`, ..., `PoolMaxGPUs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantMaxReplicas => "TenantMaxReplicas",
            Self::TenantMaxCpu => "TenantMaxCPU",
            Self::TenantMaxMemory => "TenantMaxMemory",
            Self::TenantMaxGpus => "TenantMaxGPUs",
            Self::PoolMaxReplicas => "PoolMaxReplicas",
            Self::PoolMaxCpu => "PoolMaxCPU",
            Self::PoolMaxMemory => "PoolMaxMemory",
            Self::PoolMaxGpus => "PoolMaxGPUs",
        }
    }
}

impl fmt::Display for CapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the quota math needs.
#[derive(Clone, Debug)]
pub struct QuotaInput<'a> {
    /// The pool (its name and `capacity`).
    pub pool: &'a InferencePool,
    /// The deployment's tenant (its name and quota).
    pub tenant: &'a TenantRef,
    /// What the tenant's other deployments in the pool use.
    pub tenant_used: Footprint,
    /// What every other deployment in the pool uses (the tenant's included).
    pub pool_used: Footprint,
    /// One server pod of this deployment.
    pub per_pod: Footprint,
    /// Pods per replica group.
    pub shards: i32,
    /// Replica groups wanted (from `spec.replicas` or the autoscaler).
    pub desired: i32,
}

/// The quota's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaDecision {
    /// Replica groups to run: `desired`, or fewer when capped.
    pub replicas: i32,
    /// Why and by how much, when capped.
    pub cap: Option<QuotaCap>,
}

/// A cap on replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaCap {
    /// The binding limit.
    pub reason: CapReason,
    /// For people: "team-a may run 8 server pods in pool cpu-avx512; this deployment needs 2
    /// more (...)".
    pub message: String,
}

#[derive(Clone, Copy)]
enum Unit {
    Pods,
    Cpu,
    Memory,
    Gpus,
}

impl Unit {
    fn show(self, n: i128) -> String {
        match self {
            Unit::Pods => format!("{n} server pod{}", plural(n)),
            Unit::Cpu if n % 1000 == 0 => format!("{} CPU{}", n / 1000, plural(n / 1000)),
            Unit::Cpu => format!("{n}m CPU"),
            Unit::Memory => format!("{} of memory", memory(n)),
            Unit::Gpus => format!("{n} GPU{}", plural(n)),
        }
    }

    fn amount(self, n: i128) -> String {
        match self {
            Unit::Pods | Unit::Gpus => n.to_string(),
            Unit::Cpu if n % 1000 == 0 => (n / 1000).to_string(),
            Unit::Cpu => format!("{n}m"),
            Unit::Memory => memory(n),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Unit::Pods => "run",
            _ => "request",
        }
    }
}

fn plural(n: i128) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Bytes in the largest binary unit that divides them exactly ("64Gi", "1536Mi", "1000").
fn memory(bytes: i128) -> String {
    if bytes != 0 {
        for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            if bytes % (1i128 << shift) == 0 {
                return format!("{}{suffix}", bytes >> shift);
            }
        }
    }
    bytes.to_string()
}

struct Dimension {
    reason: CapReason,
    unit: Unit,
    limit: i128,
    used: i128,
    per_group: i128,
    tenant_side: bool,
}

impl Dimension {
    /// Groups this dimension allows; `None` is unbounded.
    fn allows(&self) -> Option<i128> {
        (self.per_group > 0).then(|| ((self.limit - self.used).max(0)) / self.per_group)
    }
}

fn cpu_limit(q: Option<&Quantity>) -> Result<Option<i128>> {
    q.map(Quantity::millis).transpose()
}

fn memory_limit(q: Option<&Quantity>) -> Result<Option<i128>> {
    q.map(Quantity::value).transpose()
}

/// Caps `input.desired` at what the tenant's quota and the pool's capacity allow. Errors only
/// on a quota or capacity quantity that does not parse.
pub fn cap_replicas(input: &QuotaInput<'_>) -> Result<QuotaDecision> {
    let shards = i128::from(input.shards.max(1));
    let group = input.per_pod.times(shards);
    let quota = input.tenant.quota.clone().unwrap_or_default();
    let capacity = input.pool.spec.capacity.clone().unwrap_or_default();
    let t = input.tenant_used;
    let p = input.pool_used;

    let candidates = [
        (
            CapReason::TenantMaxReplicas,
            Unit::Pods,
            quota.max_replicas.map(i128::from),
            t.pods,
            group.pods,
            true,
        ),
        (
            CapReason::TenantMaxCpu,
            Unit::Cpu,
            cpu_limit(quota.max_cpu.as_ref())?,
            t.cpu_millis,
            group.cpu_millis,
            true,
        ),
        (
            CapReason::TenantMaxMemory,
            Unit::Memory,
            memory_limit(quota.max_memory.as_ref())?,
            t.memory_bytes,
            group.memory_bytes,
            true,
        ),
        (
            CapReason::TenantMaxGpus,
            Unit::Gpus,
            quota.max_gpus.map(i128::from),
            t.gpus,
            group.gpus,
            true,
        ),
        (
            CapReason::PoolMaxReplicas,
            Unit::Pods,
            capacity.max_replicas.map(i128::from),
            p.pods,
            group.pods,
            false,
        ),
        (
            CapReason::PoolMaxCpu,
            Unit::Cpu,
            cpu_limit(capacity.max_cpu.as_ref())?,
            p.cpu_millis,
            group.cpu_millis,
            false,
        ),
        (
            CapReason::PoolMaxMemory,
            Unit::Memory,
            memory_limit(capacity.max_memory.as_ref())?,
            p.memory_bytes,
            group.memory_bytes,
            false,
        ),
        (
            CapReason::PoolMaxGpus,
            Unit::Gpus,
            capacity.max_gpus.map(i128::from),
            p.gpus,
            group.gpus,
            false,
        ),
    ];

    let desired = i128::from(input.desired.max(0));
    let mut binding: Option<(Dimension, i128)> = None;
    for (reason, unit, limit, used, per_group, tenant_side) in candidates {
        let Some(limit) = limit else { continue };
        let dim = Dimension {
            reason,
            unit,
            limit,
            used,
            per_group,
            tenant_side,
        };
        let Some(allowed) = dim.allows() else {
            continue;
        };
        if allowed < desired && binding.as_ref().is_none_or(|(_, a)| allowed < *a) {
            binding = Some((dim, allowed));
        }
    }

    Ok(match binding {
        None => QuotaDecision {
            replicas: input.desired.max(0),
            cap: None,
        },
        Some((dim, allowed)) => {
            let replicas = i32::try_from(allowed).unwrap_or(i32::MAX);
            QuotaDecision {
                replicas,
                cap: Some(QuotaCap {
                    reason: dim.reason,
                    message: message(input, &dim, desired, allowed),
                }),
            }
        }
    })
}

fn message(input: &QuotaInput<'_>, dim: &Dimension, desired: i128, allowed: i128) -> String {
    let pool = input.pool.metadata.name.as_deref().unwrap_or_default();
    let unit = dim.unit;
    let wanted = desired * dim.per_group;
    let available = (dim.limit - dim.used).max(0);
    let short = wanted - available;
    let (who, users) = if dim.tenant_side {
        (
            format!(
                "{} may {} {} in pool {pool}",
                input.tenant.display_name(),
                unit.verb(),
                unit.show(dim.limit)
            ),
            "the tenant's other deployments",
        )
    } else {
        (
            format!(
                "pool {pool} may {} {} in all",
                unit.verb(),
                unit.show(dim.limit)
            ),
            "other deployments in the pool",
        )
    };
    format!(
        "{who}; this deployment needs {} more ({} wanted for {desired} replica{} of {} shard{}, {} in use by {users}), so it runs {allowed} of {desired} replica{}",
        unit.amount(short),
        unit.amount(wanted),
        plural(desired),
        input.shards.max(1),
        plural(i128::from(input.shards.max(1))),
        unit.amount(dim.used),
        plural(desired),
    )
}
