//! What the operator granted each deployment at its last quota decision, so that reconciles
//! running at the same time cannot both spend the same quota.
//!
//! A deployment's usage is otherwise read from its `status.replicas`, which lags: right after
//! a deployment is granted 3 replica groups its workload still reports 0 pods. Two
//! deployments of one tenant created together would each see the other using nothing and
//! together exceed the quota. So the quota decision (list the pool's deployments, add up their
//! usage, cap, record the grant) runs under one lock, and a deployment counts as using the
//! larger of what its status reports and what it was granted.
//!
//! Grants live in memory: after an operator restart the first reconciles see statuses that
//! have caught up with the pods that exist, and every new decision is recorded again.

use std::collections::HashMap;

use tokio::sync::{Mutex, MutexGuard};

use crate::crd::ModelDeployment;
use crate::render::Footprint;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Grant {
    uid: String,
    pool: String,
    footprint: Footprint,
}

/// The grants, behind the lock every quota decision takes.
#[derive(Debug, Default)]
pub struct Grants {
    inner: Mutex<HashMap<(String, String), Grant>>,
}

/// Held while one quota decision is made.
pub struct GrantsGuard<'a> {
    map: MutexGuard<'a, HashMap<(String, String), Grant>>,
}

impl Grants {
    /// Waits for the other quota decisions to finish.
    pub async fn lock(&self) -> GrantsGuard<'_> {
        GrantsGuard {
            map: self.inner.lock().await,
        }
    }

    /// Forgets a deleted deployment.
    pub async fn forget(&self, md: &ModelDeployment) {
        self.inner.lock().await.remove(&md.key());
    }
}

impl GrantsGuard<'_> {
    /// What `md` (this very object) was last granted in `pool`.
    pub fn granted(&self, md: &ModelDeployment, pool: &str) -> Option<Footprint> {
        self.map
            .get(&md.key())
            .filter(|g| g.uid == md.uid() && g.pool == pool)
            .map(|g| g.footprint)
    }

    /// Records that `md` may use `footprint` in `pool`.
    pub fn record(&mut self, md: &ModelDeployment, pool: &str, footprint: Footprint) {
        self.map.insert(
            md.key(),
            Grant {
                uid: md.uid(),
                pool: pool.to_owned(),
                footprint,
            },
        );
    }
}

/// Per dimension, the larger of two footprints.
pub fn larger(a: Footprint, b: Footprint) -> Footprint {
    Footprint {
        pods: a.pods.max(b.pods),
        cpu_millis: a.cpu_millis.max(b.cpu_millis),
        memory_bytes: a.memory_bytes.max(b.memory_bytes),
        gpus: a.gpus.max(b.gpus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md(name: &str, uid: &str) -> ModelDeployment {
        serde_json::from_value(json!({
            "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"model": {"source": "bundled://m"}, "poolRef": "p"},
        }))
        .unwrap()
    }

    fn pods(n: i128) -> Footprint {
        Footprint {
            pods: n,
            cpu_millis: 1000 * n,
            memory_bytes: 0,
            gpus: 0,
        }
    }

    #[tokio::test]
    async fn grants_belong_to_one_object_in_one_pool() {
        let grants = Grants::default();
        let a = md("a", "u1");
        {
            let mut g = grants.lock().await;
            g.record(&a, "p", pods(3));
            assert_eq!(g.granted(&a, "p"), Some(pods(3)));
            assert_eq!(g.granted(&a, "other-pool"), None);
            assert_eq!(g.granted(&md("a", "u2"), "p"), None);
            assert_eq!(g.granted(&md("b", "u1"), "p"), None);
        }
        grants.forget(&a).await;
        assert_eq!(grants.lock().await.granted(&a, "p"), None);
    }

    #[test]
    fn larger_is_per_dimension() {
        let a = Footprint {
            pods: 1,
            cpu_millis: 4000,
            memory_bytes: 5,
            gpus: 0,
        };
        let b = Footprint {
            pods: 2,
            cpu_millis: 1000,
            memory_bytes: 7,
            gpus: 1,
        };
        assert_eq!(
            larger(a, b),
            Footprint {
                pods: 2,
                cpu_millis: 4000,
                memory_bytes: 7,
                gpus: 1
            }
        );
    }
}
