//! The operator against a real API server (no nodes yet): it runs as a local process with an
//! admin kubeconfig, and every object it writes goes through the real kube-apiserver's
//! validation, server-side apply, status subresource, finalizers and garbage collector.
//!
//! Checked: a ModelDeployment in a pool gets its ConfigMap, Deployment, Service and
//! PodDisruptionBudget owned by it, the status and print columns the design names, and
//! `PoolReady=False NoMatchingNodes` (there are no nodes); a second deployment of the same
//! tenant is capped at the tenant's quota with `QuotaExceeded` and a Warning event, while the
//! other tenant is unaffected; a missing pool and a GPU request in a CPU pool create nothing and
//! say why; deleting a deployment removes its children. (Pods stay Pending here: running them
//! is the node agent's part.)

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use ryzanstein_e2e::objects::{apply, condition, model_deployment as md, resource, wait_condition};
use ryzanstein_e2e::wait::eventually;
use ryzanstein_e2e::workspace::{binary, install_crds};
use ryzanstein_e2e::{control_plane_or_skip, ControlPlane};
use serde_json::{json, Value};

/// The operator process; killed when dropped.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_operator(cp: &ControlPlane) -> Operator {
    let dir = cp.state_dir().join("operator");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("operator.yaml");
    std::fs::write(
        &config,
        "defaultServerImage: ryzanstein/server:e2e\nautoscaler:\n  scrapeIntervalSeconds: 2\n  scrapeTimeoutSeconds: 1\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("operator.log")).unwrap();
    let bin = binary("ryzanstein-operator").unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(bin)
        .arg(format!("--config={}", config.display()))
        .arg(format!("--http-addr=127.0.0.1:{port}"))
        .arg("--log-format=text")
        .arg("--leader-elect=false")
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "info,ryzanstein_operator=debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start ryzanstein-operator");
    Operator(child)
}

fn small(pool: &str, replicas: i32) -> Value {
    json!({
        "model": {"source": "bundled://smollm2-135m-instruct"},
        "poolRef": pool, "replicas": replicas,
        "resources": {"cpu": "1", "memory": "1Gi"},
    })
}

#[tokio::test]
async fn the_operator_reconciles_against_a_real_api_server() {
    let Some(cp) = control_plane_or_skip().await else {
        return;
    };
    let client = cp.client().await.unwrap();
    install_crds(&client).await.unwrap();
    for ns in ["team-a", "team-b"] {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let _operator = start_operator(&cp);

    apply(
        &client,
        json!({
            "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "InferencePool",
            "metadata": {"name": "cpu-avx512"},
            "spec": {
                "hardware": {"class": "CPU", "cpu": {"requiredFeatures": ["AVX512F"]}},
                "tenants": [
                    {"name": "team-a", "namespaces": ["team-a"], "quota": {"maxReplicas": 3}},
                    {"name": "team-b", "namespaces": ["team-b"], "quota": {"maxReplicas": 4}},
                ],
            },
        }),
    )
    .await;

    // A deployment within the quota: every child, owned by it; no node matches the pool.
    apply(&client, md("team-a", "chat", small("cpu-avx512", 2))).await;
    let s = wait_condition(
        &client,
        "team-a",
        "chat",
        "PoolReady",
        ("False", "NoMatchingNodes"),
    )
    .await;
    assert_eq!(s["tenant"], "team-a", "{s:#}");
    assert_eq!(s["desiredReplicas"], 2, "{s:#}");
    assert_eq!(s["endpoint"], "http://chat.team-a.svc:8080/v1", "{s:#}");
    assert_eq!(condition(&s, "QuotaExceeded").unwrap()["status"], "False");
    let deployments = Api::<Deployment>::namespaced(client.clone(), "team-a");
    let d = eventually(
        "Deployment team-a/chat",
        Duration::from_secs(20),
        || async { deployments.get_opt("chat").await.ok().flatten() },
    )
    .await;
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ModelDeployment", "chat")
    );
    assert_eq!(
        d.metadata.managed_fields.as_ref().unwrap()[0]
            .manager
            .as_deref(),
        Some("ryzanstein-operator")
    );
    Api::<Service>::namespaced(client.clone(), "team-a")
        .get("chat")
        .await
        .expect("client Service");
    Api::<ConfigMap>::namespaced(client.clone(), "team-a")
        .get("chat-config")
        .await
        .expect("engine ConfigMap");
    Api::<PodDisruptionBudget>::namespaced(client.clone(), "team-a")
        .get("chat")
        .await
        .expect("PodDisruptionBudget");

    // The print columns, as `kubectl get md` shows them.
    let table: Value = {
        let request = http::Request::get(
            "/apis/ryzanstein.dev/v1alpha1/namespaces/team-a/modeldeployments/chat",
        )
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
        client.request(request).await.unwrap()
    };
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Name", "Model", "Pool", "Ready", "Desired", "Hardware", "Age"]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "chat");
    assert_eq!(cells[1], "bundled://smollm2-135m-instruct");
    assert_eq!(cells[2], "cpu-avx512");
    assert_eq!(cells[4], 2);
    assert!(
        cells[5]
            .as_str()
            .unwrap()
            .starts_with("cpu-avx512 (CPU AVX512F"),
        "{cells}"
    );

    // Same tenant, quota 3 pods, chat holds 2: embed gets 1 of its 2 and says why.
    apply(&client, md("team-a", "embed", small("cpu-avx512", 2))).await;
    let s = wait_condition(
        &client,
        "team-a",
        "embed",
        "QuotaExceeded",
        ("True", "TenantMaxReplicas"),
    )
    .await;
    let message = condition(&s, "QuotaExceeded").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("team-a may run 3 server pods in pool cpu-avx512"),
        "{message}"
    );
    let embed = eventually(
        "Deployment team-a/embed",
        Duration::from_secs(20),
        || async { deployments.get_opt("embed").await.ok().flatten() },
    )
    .await;
    assert_eq!(embed.spec.unwrap().replicas, Some(1));
    let events = Api::<Event>::namespaced(client.clone(), "team-a");
    eventually(
        "the Warning event on embed",
        Duration::from_secs(20),
        || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=embed"))
                .await
                .ok()?;
            list.items
                .iter()
                .find(|e| e.reason.as_deref() == Some("TenantMaxReplicas"))
                .map(|e| assert_eq!(e.type_.as_deref(), Some("Warning")))
        },
    )
    .await;

    // The other tenant is unaffected by team-a's cap.
    apply(&client, md("team-b", "chat", small("cpu-avx512", 4))).await;
    let s = wait_condition(
        &client,
        "team-b",
        "chat",
        "QuotaExceeded",
        ("False", "WithinQuota"),
    )
    .await;
    assert_eq!(s["tenant"], "team-b");
    let team_b = Api::<Deployment>::namespaced(client.clone(), "team-b");
    let d = eventually(
        "Deployment team-b/chat",
        Duration::from_secs(20),
        || async { team_b.get_opt("chat").await.ok().flatten() },
    )
    .await;
    assert_eq!(d.spec.unwrap().replicas, Some(4));

    // A missing pool and a GPU request in a CPU pool: no children, and the status says why.
    apply(&client, md("team-a", "lost", small("no-such-pool", 1))).await;
    let s = wait_condition(
        &client,
        "team-a",
        "lost",
        "PoolReady",
        ("False", "PoolNotFound"),
    )
    .await;
    assert!(
        condition(&s, "PoolReady").unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("no-such-pool"),
        "{s:#}"
    );
    let mut gpu = small("cpu-avx512", 1);
    gpu["resources"]["gpus"] = json!(1);
    apply(&client, md("team-a", "gpu", gpu)).await;
    let s = wait_condition(
        &client,
        "team-a",
        "gpu",
        "Degraded",
        ("True", "InvalidSpec"),
    )
    .await;
    let message = condition(&s, "Degraded").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("is a CPU pool"), "{message}");
    for name in ["lost", "gpu"] {
        assert!(deployments.get_opt(name).await.unwrap().is_none(), "{name}");
    }

    // The pool adds up what its deployments run (pods exist, Pending, so they count: chat 2,
    // embed 1, team-b's chat 4), the unrenderable one left out, and says no node matches.
    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &resource("InferencePool"));
    let pool_status = eventually("pool usage 7 replicas", Duration::from_secs(60), || async {
        let p = pools.get("cpu-avx512").await.ok()?;
        let s = p.data.get("status")?.clone();
        (s["allocated"]["replicas"] == 7).then_some(s)
    })
    .await;
    assert_eq!(pool_status["matchingNodes"], 0, "{pool_status:#}");
    let ready = condition(&pool_status, "Ready").unwrap();
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("NoMatchingNodes"))
    );
    let tenants = pool_status["tenants"].as_array().unwrap();
    assert_eq!(tenants[0]["name"], "team-a");
    assert_eq!(tenants[0]["replicas"], 3);
    assert_eq!(tenants[0]["throttled"], true);
    assert_eq!(tenants[1]["replicas"], 4);

    // The scale subresource (what HPA, KEDA and `kubectl scale` use) drives spec.replicas while
    // autoscaling is off: its status names the pods' selector, and the Deployment follows.
    let team_b_mds: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "team-b", &resource("ModelDeployment"));
    let scale = team_b_mds.get_scale("chat").await.unwrap();
    assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(4));
    let selector = scale
        .status
        .as_ref()
        .unwrap()
        .selector
        .clone()
        .unwrap_or_default();
    assert!(
        selector.contains("app.kubernetes.io/instance=chat"),
        "{selector}"
    );
    team_b_mds
        .patch_scale(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    eventually(
        "team-b/chat scaled to 2",
        Duration::from_secs(30),
        || async {
            let d = team_b.get_opt("chat").await.ok()??;
            (d.spec?.replicas == Some(2)).then_some(())
        },
    )
    .await;

    // Deleting a deployment: the finalizer lets the operator clean up, the garbage collector
    // removes the children.
    let mds: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "team-a", &resource("ModelDeployment"));
    mds.delete("chat", &DeleteParams::default()).await.unwrap();
    eventually(
        "ModelDeployment team-a/chat gone",
        Duration::from_secs(30),
        || async { mds.get_opt("chat").await.ok()?.is_none().then_some(()) },
    )
    .await;
    eventually(
        "Deployment team-a/chat collected",
        Duration::from_secs(60),
        || async {
            deployments
                .get_opt("chat")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    // With chat gone, embed gets the quota back.
    eventually("embed scaled to 2", Duration::from_secs(60), || async {
        let d = deployments.get_opt("embed").await.ok()??;
        (d.spec?.replicas == Some(2)).then_some(())
    })
    .await;
}
