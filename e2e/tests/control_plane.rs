//! The control plane works as a cluster without nodes: a Deployment gets a ReplicaSet and Pods
//! from the real controller-manager, and the real scheduler tries to place them and says why it
//! cannot.
//!
//! Needs the binaries from `make k8s`. Without them the test skips, unless RYZANSTEIN_E2E=1, when
//! a missing build is a failure.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use ryzanstein_e2e::wait::eventually;
use ryzanstein_e2e::{control_plane_or_skip, Binaries};

const NAMESPACE: &str = "e2e-control-plane";

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "server", "image": "ryzanstein/server:e2e" }] }
            }
        }
    }))
    .expect("valid Deployment")
}

#[tokio::test]
async fn deployment_gets_replicaset_and_unschedulable_pods() {
    let Some(cp) = control_plane_or_skip().await else {
        return;
    };
    eprintln!(
        "control plane ready in {:.1}s at {}",
        cp.ready_in().as_secs_f64(),
        cp.endpoints().apiserver
    );
    let client = cp.client().await.expect("admin client");
    let timeout = Duration::from_secs(60);

    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.git_version, Binaries::kubernetes_version());

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": NAMESPACE } })).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");

    // The serviceaccount and root-ca-cert-publisher controllers fill a new namespace.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    eventually("the default ServiceAccount", timeout, || async {
        sas.get_opt("default").await.unwrap()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    eventually("kube-root-ca.crt", timeout, || async {
        cms.get_opt("kube-root-ca.crt").await.unwrap()
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let created = deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .expect("create");
    let deployment_uid = created.meta().uid.clone().expect("uid");

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let rs = eventually("a ReplicaSet owned by the Deployment", timeout, || async {
        let list = replicasets.list(&ListParams::default()).await.unwrap();
        list.items.into_iter().find(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.uid == deployment_uid && o.controller == Some(true))
        })
    })
    .await;
    let rs_uid = rs.meta().uid.clone().expect("uid");

    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let owned = eventually("two Pods owned by the ReplicaSet", timeout, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        let owned: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.owner_references().iter().any(|o| o.uid == rs_uid))
            .collect();
        (owned.len() == 2).then_some(owned)
    })
    .await;
    for pod in &owned {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert!(
            spec.node_name.is_none(),
            "no nodes exist, yet a pod was bound: {:?}",
            spec.node_name
        );
        // ServiceAccount admission mounted a projected token volume.
        let volumes = spec.volumes.as_deref().unwrap_or_default();
        assert!(
            volumes.iter().any(|v| v.projected.is_some()),
            "no projected token volume: {volumes:?}"
        );
    }

    // The scheduler tried: PodScheduled=False, reason Unschedulable.
    let condition = eventually(
        "PodScheduled=False/Unschedulable on a Pod",
        timeout,
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap();
            list.items.into_iter().find_map(|p| {
                let status = p.status?;
                assert_eq!(status.phase.as_deref(), Some("Pending"));
                status.conditions?.into_iter().find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
        },
    )
    .await;
    eprintln!("scheduler: {}", condition.message.unwrap_or_default());

    let state_dir = cp.state_dir().to_path_buf();
    let pids = cp.pids();
    let stopped_in = cp.stop();
    eprintln!("control plane stopped in {:.1}s", stopped_in.as_secs_f64());
    for (name, pid) in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) still runs"
        );
    }
    if std::env::var("RYZANSTEIN_E2E_KEEP").as_deref() != Ok("1") {
        assert!(
            !state_dir.exists(),
            "state directory {} left behind",
            state_dir.display()
        );
    }
}
