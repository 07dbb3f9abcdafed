//! The ModelDeployment reconcile against a scripted API server: it reads the pool and the
//! pool's deployments, lists its existing children, deletes the ones no longer rendered,
//! applies every child and the status with server-side apply under the operator's field
//! manager, publishes events on its decisions and keeps the condition gauge; the cleanup
//! finalizer is added first and removed on deletion.

mod mock;

use std::sync::Arc;

use kube::runtime::controller::Action;
use ryzanstein_operator::config::OperatorConfig;
use ryzanstein_operator::context::Context;
use ryzanstein_operator::crd::ModelDeployment;
use ryzanstein_operator::deployment_controller::{
    reconcile, reconcile_measured, FINALIZER, RESYNC, RETRY,
};
use ryzanstein_operator::metrics::Metrics;
use serde_json::{json, Value};

const POOL: &str = "/apis/ryzanstein.dev/v1alpha1/inferencepools/cpu-avx512";
const ALL_MDS: &str = "/apis/ryzanstein.dev/v1alpha1/modeldeployments?";
const MD: &str = "/apis/ryzanstein.dev/v1alpha1/namespaces/team-a/modeldeployments/smollm2?";
const STATUS: &str =
    "/apis/ryzanstein.dev/v1alpha1/namespaces/team-a/modeldeployments/smollm2/status?";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events?";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/team-a/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/team-a/statefulsets";
const SERVICES: &str = "/api/v1/namespaces/team-a/services";
const CONFIGMAPS: &str = "/api/v1/namespaces/team-a/configmaps";
const PDBS: &str = "/apis/policy/v1/namespaces/team-a/poddisruptionbudgets";
const UID: &str = "0b7c1d2e-md";

fn md_value(replicas: i32, shards: i32) -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {
            "name": "smollm2", "namespace": "team-a", "uid": UID, "generation": 2,
            "resourceVersion": "40", "finalizers": [FINALIZER],
        },
        "spec": {
            "model": {"source": "bundled://smollm2-135m-instruct"},
            "poolRef": "cpu-avx512",
            "replicas": replicas,
            "sharding": {"shards": shards},
            "resources": {"cpu": "2", "memory": "4Gi"},
        },
    })
}

fn md(replicas: i32, shards: i32) -> ModelDeployment {
    serde_json::from_value(md_value(replicas, shards)).unwrap()
}

/// Another deployment in the pool, running `replicas` groups.
fn other(namespace: &str, name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
        "spec": {
            "model": {"source": "bundled://smollm2-135m-instruct"},
            "poolRef": "cpu-avx512",
            "replicas": replicas,
            "resources": {"cpu": "2", "memory": "4Gi"},
        },
        "status": {"replicas": replicas, "readyReplicas": replicas},
    })
}

fn pool(team_a_max_replicas: i32) -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": "cpu-avx512", "uid": "pool-uid", "generation": 1},
        "spec": {
            "hardware": {"class": "CPU", "cpu": {"requiredFeatures": ["AVX512F"]}},
            "tenants": [
                {"name": "team-a", "namespaces": ["team-a"], "quota": {"maxReplicas": team_a_max_replicas}},
                {"name": "team-b", "namespaces": ["team-b"]},
            ],
        },
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "9"}, "items": items})
}

/// Metadata of an existing child owned (as controller) by `owner_uid`.
fn child(name: &str, owner_uid: &str, rv: &str) -> Value {
    json!({"metadata": {
        "name": name, "namespace": "team-a", "resourceVersion": rv,
        "generation": rv.parse::<i64>().unwrap(),
        "labels": {"app.kubernetes.io/instance": "smollm2", "app.kubernetes.io/managed-by": "ryzanstein-operator"},
        "ownerReferences": [{
            "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment", "name": "smollm2",
            "uid": owner_uid, "controller": true, "blockOwnerDeletion": true,
        }],
    }})
}

fn context(client: kube::Client) -> (Arc<Context>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let config = OperatorConfig::parse("defaultServerImage: ryzanstein/server:0.1.0\n").unwrap();
    let ctx = Arc::new(Context::new(
        client,
        metrics.clone(),
        Arc::new(config),
        Some("operator-a".into()),
    ));
    (ctx, metrics)
}

/// Existing children per kind, in the order the reconcile lists them.
#[derive(Default)]
struct Existing {
    deployments: Vec<Value>,
    stateful_sets: Vec<Value>,
    services: Vec<Value>,
    config_maps: Vec<Value>,
    pdbs: Vec<Value>,
}

async fn answer_pool_and_usage(api: &mut mock::ApiServer, pool: Value, mds: Vec<Value>) {
    api.expect("GET", POOL).await.reply(200, pool);
    api.expect("GET", ALL_MDS)
        .await
        .reply(200, list("ModelDeploymentList", mds));
}

async fn answer_child_lists(api: &mut mock::ApiServer, existing: Existing) {
    for (path, items) in [
        (DEPLOYMENTS, existing.deployments),
        (STATEFULSETS, existing.stateful_sets),
        (SERVICES, existing.services),
        (CONFIGMAPS, existing.config_maps),
        (PDBS, existing.pdbs),
    ] {
        let call = api.expect("GET", &format!("{path}?")).await;
        assert!(
            call.uri.contains("labelSelector=app.kubernetes.io%2Finstance%3Dsmollm2%2Capp.kubernetes.io%2Fmanaged-by%3Dryzanstein-operator"),
            "{}",
            call.uri
        );
        call.reply(200, list("PartialObjectMetadataList", items));
    }
}

/// [`expect_apply_at`] with the generation equal to the resourceVersion (a spec change).
async fn expect_apply(
    api: &mut mock::ApiServer,
    path: &str,
    rv: &str,
    status: Option<Value>,
) -> Value {
    expect_apply_at(api, path, rv, rv.parse().unwrap(), status).await
}

/// Checks a server-side apply under the operator's field manager and answers it with the
/// applied object at `rv` and `generation` (plus `status`); returns the applied body.
async fn expect_apply_at(
    api: &mut mock::ApiServer,
    path: &str,
    rv: &str,
    generation: i64,
    status: Option<Value>,
) -> Value {
    let call = api.expect("PATCH", &format!("{path}?")).await;
    assert!(
        call.uri.contains("fieldManager=ryzanstein-operator"),
        "{}",
        call.uri
    );
    assert!(call.uri.contains("force=true"), "{}", call.uri);
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml"),
        "{}",
        call.uri
    );
    let body = call.body.clone();
    let owner = &body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], UID, "{path}");
    assert_eq!(owner["kind"], "ModelDeployment");
    assert_eq!(owner["controller"], true);
    let mut answer = body.clone();
    answer["metadata"]["resourceVersion"] = json!(rv);
    answer["metadata"]["uid"] = json!(format!("uid-{rv}"));
    answer["metadata"]["generation"] = json!(generation);
    if let Some(s) = status {
        answer["status"] = s;
    }
    call.reply(200, answer);
    body
}

/// Answers the status apply; returns its `status`.
async fn expect_status(api: &mut mock::ApiServer) -> Value {
    let call = api.expect("PATCH", STATUS).await;
    assert!(
        call.uri.contains("fieldManager=ryzanstein-operator"),
        "{}",
        call.uri
    );
    assert!(call.uri.contains("force=true"), "{}", call.uri);
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(call.body["apiVersion"], "ryzanstein.dev/v1alpha1");
    assert_eq!(call.body["kind"], "ModelDeployment");
    let status = call.body["status"].clone();
    let mut answer = md_value(1, 1);
    answer["status"] = status.clone();
    call.reply(200, answer);
    status
}

/// Answers the next event; returns (type, reason, note).
async fn expect_event(api: &mut mock::ApiServer) -> (String, String, String) {
    let call = api.expect("POST", EVENTS).await;
    assert_eq!(call.body["regarding"]["kind"], "ModelDeployment");
    assert_eq!(call.body["regarding"]["name"], "smollm2");
    assert_eq!(call.body["reportingController"], "ryzanstein-operator");
    let got = (
        call.body["type"].as_str().unwrap_or_default().to_owned(),
        call.body["reason"].as_str().unwrap_or_default().to_owned(),
        call.body["note"].as_str().unwrap_or_default().to_owned(),
    );
    let body = call.body.clone();
    call.reply(201, body);
    got
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn creates_every_child_with_server_side_apply_and_writes_the_status() {
    let (client, mut api) = mock::client();
    let (ctx, metrics) = context(client);
    let task = tokio::spawn(reconcile(Arc::new(md(2, 1)), ctx));

    answer_pool_and_usage(
        &mut api,
        pool(8),
        vec![md_value(2, 1), other("team-a", "chat", 1)],
    )
    .await;
    answer_child_lists(&mut api, Existing::default()).await;
    let cm = expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-config"), "1", None).await;
    let limits = expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-limits"), "1", None).await;
    let file: Value =
        serde_json::from_str(limits["data"]["limits.json"].as_str().unwrap()).unwrap();
    assert!(file["tenants"]["team-a"].is_object(), "{file}");
    assert_eq!(cm["kind"], "ConfigMap");
    let d = expect_apply(
        &mut api,
        &format!("{DEPLOYMENTS}/smollm2"),
        "2",
        Some(json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 2})),
    )
    .await;
    assert_eq!(d["apiVersion"], "apps/v1");
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    let svc = expect_apply(&mut api, &format!("{SERVICES}/smollm2"), "3", None).await;
    assert_eq!(svc["spec"]["selector"]["ryzanstein.dev/shard"], "0");
    expect_apply(&mut api, &format!("{PDBS}/smollm2"), "4", None).await;

    let status = expect_status(&mut api).await;
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(status["tenant"], "team-a");
    assert!(
        status["hardware"]
            .as_str()
            .unwrap()
            .starts_with("cpu-avx512 (CPU AVX512F"),
        "{status}"
    );
    assert_eq!(status["replicas"], 2);
    assert_eq!(status["readyReplicas"], 1);
    assert_eq!(status["desiredReplicas"], 2);
    assert_eq!(status["endpoint"], "http://smollm2.team-a.svc:8080/v1");
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/instance=smollm2,app.kubernetes.io/name=ryzanstein-server,ryzanstein.dev/shard=0"
    );
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ReplicasNotReady");
    assert_eq!(ready["observedGeneration"], 2);
    assert_eq!(condition(&status, "Progressing")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(condition(&status, "QuotaExceeded")["status"], "False");
    assert_eq!(condition(&status, "PoolReady")["status"], "True");

    let (type_, reason, note) = expect_event(&mut api).await;
    assert_eq!((type_.as_str(), reason.as_str()), ("Normal", "Created"));
    assert_eq!(
        note,
        "created ConfigMap smollm2-config, ConfigMap smollm2-limits, Deployment smollm2, Service smollm2, PodDisruptionBudget smollm2"
    );
    let action = task.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    api.expect_no_more_calls().await;
    assert!(metrics.encode().contains(
        "ryzanstein_operator_modeldeployment_condition{namespace=\"team-a\",modeldeployment=\"smollm2\",condition=\"Ready\",status=\"False\"} 1\n"
    ));
}

#[tokio::test]
async fn caps_replicas_at_the_tenant_quota_with_a_warning() {
    let (client, mut api) = mock::client();
    let (ctx, metrics) = context(client);
    let task = tokio::spawn(reconcile(Arc::new(md(4, 1)), ctx));

    // team-a may run 3 pods; "chat" runs 2, so 1 of the 4 wanted fits. team-b's 5 do not count
    // against team-a.
    answer_pool_and_usage(
        &mut api,
        pool(3),
        vec![
            md_value(4, 1),
            other("team-a", "chat", 2),
            other("team-b", "embed", 5),
        ],
    )
    .await;
    answer_child_lists(&mut api, Existing::default()).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-config"), "1", None).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-limits"), "1", None).await;
    let d = expect_apply(&mut api, &format!("{DEPLOYMENTS}/smollm2"), "2", None).await;
    assert_eq!(d["spec"]["replicas"], 1);
    expect_apply(&mut api, &format!("{SERVICES}/smollm2"), "3", None).await;
    expect_apply(&mut api, &format!("{PDBS}/smollm2"), "4", None).await;

    let status = expect_status(&mut api).await;
    assert_eq!(status["desiredReplicas"], 4);
    let q = condition(&status, "QuotaExceeded");
    assert_eq!(q["status"], "True");
    assert_eq!(q["reason"], "TenantMaxReplicas");
    let message = q["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "team-a may run 3 server pods in pool cpu-avx512; this deployment needs 3 more"
        ),
        "{message}"
    );
    assert!(message.ends_with("so it runs 1 of 4 replicas"), "{message}");

    assert_eq!(expect_event(&mut api).await.1, "Created");
    let (type_, reason, note) = expect_event(&mut api).await;
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Warning", "TenantMaxReplicas")
    );
    assert_eq!(note, message);
    task.await.unwrap().unwrap();
    api.expect_no_more_calls().await;
    assert!(metrics.encode().contains(
        "ryzanstein_operator_modeldeployment_condition{namespace=\"team-a\",modeldeployment=\"smollm2\",condition=\"QuotaExceeded\",status=\"True\"} 1\n"
    ));
}

#[tokio::test]
async fn a_missing_pool_creates_nothing_and_says_so() {
    let (client, mut api) = mock::client();
    let (ctx, _) = context(client);
    // It ran in the pool before the pool was deleted.
    let mut before = md(1, 1);
    before.status = Some(serde_json::from_value(json!({
        "tenant": "team-a", "hardware": "cpu-avx512 (CPU AVX512F)", "replicas": 1, "readyReplicas": 1,
        "endpoint": "http://smollm2.team-a.svc:8080/v1",
    })).unwrap());
    let task = tokio::spawn(reconcile(Arc::new(before), ctx));

    api.expect("GET", POOL).await.fail(
        404,
        "NotFound",
        "inferencepools.ryzanstein.dev \"cpu-avx512\" not found",
    );
    let status = expect_status(&mut api).await;
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(status.get("tenant"), None, "{status}");
    assert_eq!(status.get("hardware"), None, "{status}");
    // Its existing pods are not touched: the last counts and the endpoint stay.
    assert_eq!(status["replicas"], 1);
    assert_eq!(status["endpoint"], "http://smollm2.team-a.svc:8080/v1");
    let pr = condition(&status, "PoolReady");
    assert_eq!(pr["status"], "False");
    assert_eq!(pr["reason"], "PoolNotFound");
    assert!(pr["message"]
        .as_str()
        .unwrap()
        .contains("InferencePool cpu-avx512 does not exist"));
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "PoolNotFound");

    let (type_, reason, _) = expect_event(&mut api).await;
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Warning", "PoolNotFound")
    );
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RETRY));
    // No child was listed, applied or deleted.
    api.expect_no_more_calls().await;
}

#[tokio::test]
async fn the_finalizer_is_added_before_anything_else() {
    let (client, mut api) = mock::client();
    let (ctx, _) = context(client);
    let mut v = md_value(1, 1);
    v["metadata"].as_object_mut().unwrap().remove("finalizers");
    let fresh: ModelDeployment = serde_json::from_value(v.clone()).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(fresh), ctx));

    let call = api.expect("PATCH", MD).await;
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(
        call.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    );
    let mut answer = v;
    answer["metadata"]["finalizers"] = json!([FINALIZER]);
    call.reply(200, answer);
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    api.expect_no_more_calls().await;
}

#[tokio::test]
async fn deletion_forgets_the_gauge_and_removes_the_finalizer() {
    let (client, mut api) = mock::client();
    let (ctx, metrics) = context(client);
    let mut v = md_value(1, 1);
    v["metadata"]["deletionTimestamp"] = json!("2026-11-24T03:00:00Z");
    let deleting: ModelDeployment = serde_json::from_value(v.clone()).unwrap();
    let ready: ryzanstein_operator::crd::Condition = serde_json::from_value(json!({
        "type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "",
        "lastTransitionTime": "2026-11-24T02:00:00Z",
    }))
    .unwrap();
    metrics.set_modeldeployment_conditions("team-a", "smollm2", &[ready]);
    assert!(metrics.encode().contains("modeldeployment=\"smollm2\""));
    let task = tokio::spawn(reconcile(Arc::new(deleting), ctx));

    let call = api.expect("PATCH", MD).await;
    assert_eq!(
        call.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    let mut answer = v;
    answer["metadata"]["finalizers"] = json!([]);
    call.reply(200, answer);
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    api.expect_no_more_calls().await;
    assert!(
        !metrics.encode().contains("modeldeployment=\"smollm2\""),
        "{}",
        metrics.encode()
    );
}

#[tokio::test]
async fn a_shard_count_change_deletes_the_children_no_longer_rendered() {
    let (client, mut api) = mock::client();
    let (ctx, _) = context(client);
    // Was 1 shard (a Deployment) and, before that, 3 (StatefulSets 0..2); now 2 shards.
    let task = tokio::spawn(reconcile(Arc::new(md(1, 2)), ctx));

    answer_pool_and_usage(&mut api, pool(8), vec![md_value(1, 2)]).await;
    answer_child_lists(
        &mut api,
        Existing {
            deployments: vec![child("smollm2", UID, "7")],
            stateful_sets: vec![
                child("smollm2-shard-0", UID, "7"),
                child("smollm2-shard-1", UID, "7"),
                child("smollm2-shard-2", UID, "7"),
                // Carries our labels but another controller owns it: never deleted.
                child("smollm2-shard-7", "someone-else", "7"),
            ],
            services: vec![child("smollm2", UID, "7")],
            config_maps: vec![
                child("smollm2-config", UID, "7"),
                child("smollm2-limits", UID, "7"),
            ],
            pdbs: vec![child("smollm2", UID, "7")],
        },
    )
    .await;

    for path in [
        format!("{DEPLOYMENTS}/smollm2?"),
        format!("{STATEFULSETS}/smollm2-shard-2?"),
    ] {
        let call = api.expect("DELETE", &path).await;
        assert_eq!(call.body["propagationPolicy"], "Background", "{path}");
        call.reply(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        );
    }
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-config"), "7", None).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-limits"), "7", None).await;
    let headless = expect_apply(&mut api, &format!("{SERVICES}/smollm2-shards"), "8", None).await;
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let shard_status = |generation: i64| json!({"observedGeneration": generation, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1});
    // Shard 0 changes (its peers' addresses), shard 1 does not.
    let s0 = expect_apply(
        &mut api,
        &format!("{STATEFULSETS}/smollm2-shard-0"),
        "8",
        Some(shard_status(8)),
    )
    .await;
    assert_eq!(s0["spec"]["replicas"], 1);
    expect_apply(
        &mut api,
        &format!("{STATEFULSETS}/smollm2-shard-1"),
        "7",
        Some(shard_status(7)),
    )
    .await;
    expect_apply(&mut api, &format!("{SERVICES}/smollm2"), "7", None).await;
    expect_apply(&mut api, &format!("{PDBS}/smollm2"), "7", None).await;

    let status = expect_status(&mut api).await;
    assert_eq!(status["replicas"], 1);
    assert_eq!(status["readyReplicas"], 1);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Progressing")["status"], "False");

    let events = [
        expect_event(&mut api).await,
        expect_event(&mut api).await,
        expect_event(&mut api).await,
    ];
    assert_eq!(
        events.map(|(t, r, n)| format!("{t} {r}: {n}")),
        [
            "Normal Created: created Service smollm2-shards".to_owned(),
            "Normal Updated: updated StatefulSet smollm2-shard-0".to_owned(),
            "Normal Deleted: deleted Deployment smollm2, StatefulSet smollm2-shard-2".to_owned(),
        ]
    );
    task.await.unwrap().unwrap();
    api.expect_no_more_calls().await;
}

#[tokio::test]
async fn a_replica_failure_is_surfaced_as_degraded() {
    let (client, mut api) = mock::client();
    let (ctx, metrics) = context(client);
    let task = tokio::spawn(reconcile(Arc::new(md(2, 1)), ctx));

    answer_pool_and_usage(&mut api, pool(8), vec![md_value(2, 1)]).await;
    answer_child_lists(
        &mut api,
        Existing {
            deployments: vec![child("smollm2", UID, "7")],
            stateful_sets: vec![],
            services: vec![child("smollm2", UID, "7")],
            config_maps: vec![
                child("smollm2-config", UID, "7"),
                child("smollm2-limits", UID, "7"),
            ],
            pdbs: vec![child("smollm2", UID, "7")],
        },
    )
    .await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-config"), "7", None).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-limits"), "7", None).await;
    let refused = "pods \"smollm2-6d9f-x2\" is forbidden: exceeded quota: compute, requested: cpu=2, used: cpu=8, limited: cpu=8";
    // The Deployment's status moved on (a new resourceVersion), its spec did not (the same
    // generation): not an update of ours.
    expect_apply_at(
        &mut api,
        &format!("{DEPLOYMENTS}/smollm2"),
        "9",
        7,
        Some(json!({
            "observedGeneration": 7, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": refused},
            ],
        })),
    )
    .await;
    expect_apply(&mut api, &format!("{SERVICES}/smollm2"), "7", None).await;
    expect_apply(&mut api, &format!("{PDBS}/smollm2"), "7", None).await;

    let status = expect_status(&mut api).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "FailedCreate");
    assert_eq!(
        degraded["message"],
        format!("Deployment smollm2: {refused}")
    );
    assert_eq!(condition(&status, "Ready")["reason"], "ReplicasNotReady");

    // Nothing changed in the children: only the failure earns an event.
    let (type_, reason, note) = expect_event(&mut api).await;
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Warning", "FailedCreate")
    );
    assert!(note.contains("exceeded quota"), "{note}");
    task.await.unwrap().unwrap();
    api.expect_no_more_calls().await;
    assert!(metrics.encode().contains(
        "ryzanstein_operator_modeldeployment_condition{namespace=\"team-a\",modeldeployment=\"smollm2\",condition=\"Degraded\",status=\"True\"} 1\n"
    ));
}

#[tokio::test]
async fn a_namespace_the_pool_does_not_admit_creates_nothing() {
    let (client, mut api) = mock::client();
    let (ctx, _) = context(client);
    let task = tokio::spawn(reconcile(Arc::new(md(1, 1)), ctx));

    let mut p = pool(8);
    p["spec"]["tenants"] = json!([{"name": "team-b", "namespaces": ["team-b"]}]);
    api.expect("GET", POOL).await.reply(200, p);
    let status = expect_status(&mut api).await;
    let pr = condition(&status, "PoolReady");
    assert_eq!(pr["status"], "False");
    assert_eq!(pr["reason"], "NamespaceNotAdmitted");
    assert!(
        pr["message"].as_str().unwrap().starts_with(
            "namespace team-a is not listed by any tenant of InferencePool cpu-avx512"
        ),
        "{pr}"
    );
    assert_eq!(condition(&status, "QuotaExceeded")["status"], "Unknown");
    let (type_, reason, _) = expect_event(&mut api).await;
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Warning", "NamespaceNotAdmitted")
    );
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    api.expect_no_more_calls().await;
}

#[tokio::test]
async fn a_spec_that_cannot_be_rendered_is_degraded_not_retried_in_a_loop() {
    let (client, mut api) = mock::client();
    let (ctx, metrics) = context(client);
    let mut gpus = md(1, 1);
    gpus.spec.resources.as_mut().unwrap().gpus = Some(1);
    let task = tokio::spawn(reconcile_measured(Arc::new(gpus), ctx));

    api.expect("GET", POOL).await.reply(200, pool(8));
    let status = expect_status(&mut api).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "InvalidSpec");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("resources.gpus is 1 but pool cpu-avx512 is a CPU pool"),
        "{degraded}"
    );
    let (type_, reason, _) = expect_event(&mut api).await;
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Warning", "InvalidSpec")
    );
    // A spec error is a verdict, not a failed reconcile: no error is counted.
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    api.expect_no_more_calls().await;
    let text = metrics.encode();
    assert!(!text.contains("reconcile_errors_total{"), "{text}");
    assert!(text.contains(
        "ryzanstein_operator_reconcile_total{controller=\"modeldeployment\",result=\"success\"} 1\n"
    ), "{text}");
}

#[tokio::test]
async fn the_autoscalers_decision_sets_the_replicas_load_and_scale_time_within_the_quota() {
    use ryzanstein_operator::autoscaler::Sample;
    use std::time::Instant;

    let (client, mut api) = mock::client();
    let (ctx, metrics) = context(client);
    let mut v = md_value(1, 1);
    v["spec"]["autoscaling"] =
        json!({"minReplicas": 1, "maxReplicas": 6, "targetInFlightPerReplica": 2});
    v["status"] = json!({"desiredReplicas": 1, "replicas": 1, "readyReplicas": 1,
                         "selector": "x=y"});
    let md: ModelDeployment = serde_json::from_value(v.clone()).unwrap();
    // 9 requests in flight on the one ready pod: ceil(9 / 2) = 5 groups.
    let wall = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let busy = Sample {
        in_flight: 9.0,
        pods: 1,
    };
    assert!(ctx
        .autoscaler
        .observe(&md, Some(&busy), Instant::now(), wall, &metrics));

    let task = tokio::spawn(reconcile(Arc::new(md.clone()), ctx.clone()));
    // team-a may run 3 pods: the 5 wanted are capped at 3.
    answer_pool_and_usage(&mut api, pool(3), vec![v.clone()]).await;
    answer_child_lists(&mut api, Existing::default()).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-config"), "1", None).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-limits"), "1", None).await;
    let d = expect_apply(&mut api, &format!("{DEPLOYMENTS}/smollm2"), "2", None).await;
    assert_eq!(d["spec"]["replicas"], 3);
    expect_apply(&mut api, &format!("{SERVICES}/smollm2"), "3", None).await;
    expect_apply(&mut api, &format!("{PDBS}/smollm2"), "4", None).await;

    let status = expect_status(&mut api).await;
    assert_eq!(status["desiredReplicas"], 5);
    assert_eq!(status["load"]["inFlightPerReplica"], 9.0);
    assert_eq!(status["load"]["observedAt"], "2027-01-15T08:00:00Z");
    assert_eq!(status["lastScaleTime"], "2027-01-15T08:00:00Z");
    assert_eq!(condition(&status, "QuotaExceeded")["status"], "True");

    let mut reasons = Vec::new();
    let mut scaled = String::new();
    for _ in 0..3 {
        let (type_, reason, note) = expect_event(&mut api).await;
        if reason == "ScaledUp" {
            assert_eq!(type_, "Normal");
            scaled = note;
        }
        reasons.push(reason);
    }
    assert_eq!(reasons, ["Created", "TenantMaxReplicas", "ScaledUp"]);
    assert_eq!(
        scaled,
        "9 requests in flight over 1 ready pods (target 2 per replica group) asks for 5; 1 → 5 replica groups"
    );
    task.await.unwrap().unwrap();
    api.expect_no_more_calls().await;

    // The quota's allowance reached the autoscaler: more load is now a capped decision.
    ctx.autoscaler
        .observe(&md, Some(&busy), Instant::now(), wall, &metrics);
    assert!(metrics
        .encode()
        .contains("ryzanstein_operator_autoscaler_decisions_total{decision=\"capped\"} 1"));
}

#[tokio::test]
async fn a_grant_not_yet_in_the_others_status_still_counts_against_the_quota() {
    use ryzanstein_operator::render::Footprint;

    let (client, mut api) = mock::client();
    let (ctx, _) = context(client);
    // "chat" was just granted 2 groups by another reconcile; its status still says 0 pods.
    let chat: ModelDeployment = serde_json::from_value(other("team-a", "chat", 0)).unwrap();
    ctx.grants.lock().await.record(
        &chat,
        "cpu-avx512",
        Footprint {
            pods: 2,
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            gpus: 0,
        },
    );
    let task = tokio::spawn(reconcile(Arc::new(md(2, 1)), ctx.clone()));
    // team-a may run 3 pods: 2 are granted to chat, so smollm2 gets 1 of its 2.
    answer_pool_and_usage(
        &mut api,
        pool(3),
        vec![md_value(2, 1), other("team-a", "chat", 0)],
    )
    .await;
    answer_child_lists(&mut api, Existing::default()).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-config"), "1", None).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-limits"), "1", None).await;
    let d = expect_apply(&mut api, &format!("{DEPLOYMENTS}/smollm2"), "2", None).await;
    assert_eq!(d["spec"]["replicas"], 1);
    expect_apply(&mut api, &format!("{SERVICES}/smollm2"), "3", None).await;
    expect_apply(&mut api, &format!("{PDBS}/smollm2"), "4", None).await;
    let status = expect_status(&mut api).await;
    assert_eq!(condition(&status, "QuotaExceeded")["status"], "True");
    expect_event(&mut api).await;
    expect_event(&mut api).await;
    task.await.unwrap().unwrap();
    api.expect_no_more_calls().await;
    // smollm2's own grant is recorded for the next decision.
    let smollm2 = md(2, 1);
    assert_eq!(
        ctx.grants
            .lock()
            .await
            .granted(&smollm2, "cpu-avx512")
            .map(|f| f.pods),
        Some(1)
    );
}

#[tokio::test]
async fn a_stateful_set_that_cannot_create_pods_is_degraded_with_its_event() {
    let (client, mut api) = mock::client();
    let (ctx, _) = context(client);
    let task = tokio::spawn(reconcile(Arc::new(md(1, 2)), ctx));

    answer_pool_and_usage(&mut api, pool(8), vec![md_value(1, 2)]).await;
    answer_child_lists(&mut api, Existing::default()).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-config"), "1", None).await;
    expect_apply(&mut api, &format!("{CONFIGMAPS}/smollm2-limits"), "1", None).await;
    expect_apply(&mut api, &format!("{SERVICES}/smollm2-shards"), "2", None).await;
    // Shard 0 has its pod; shard 1's controller saw the spec and has none.
    expect_apply(
        &mut api,
        &format!("{STATEFULSETS}/smollm2-shard-0"),
        "3",
        Some(json!({"observedGeneration": 3, "replicas": 1, "readyReplicas": 1})),
    )
    .await;
    expect_apply(
        &mut api,
        &format!("{STATEFULSETS}/smollm2-shard-1"),
        "4",
        Some(json!({"observedGeneration": 4, "replicas": 0})),
    )
    .await;
    let refused = "create Pod smollm2-shard-1-0 in StatefulSet smollm2-shard-1 failed error: pods \"smollm2-shard-1-0\" is forbidden: exceeded quota: compute, requested: cpu=2, used: cpu=8, limited: cpu=8";
    let call = api.expect("GET", "/api/v1/namespaces/team-a/events?").await;
    assert!(
        call.uri.contains("fieldSelector=involvedObject.kind%3DStatefulSet%2CinvolvedObject.name%3Dsmollm2-shard-1%2Creason%3DFailedCreate"),
        "{}",
        call.uri
    );
    let event = |message: &str, last: &str| {
        json!({
            "metadata": {"name": format!("e-{last}"), "namespace": "team-a"},
            "involvedObject": {"kind": "StatefulSet", "name": "smollm2-shard-1", "namespace": "team-a"},
            "reason": "FailedCreate", "message": message, "type": "Warning",
            "lastTimestamp": last,
        })
    };
    call.reply(
        200,
        list(
            "EventList",
            vec![
                event(refused, "2026-11-24T10:00:00Z"),
                event("an older failure", "2026-11-24T09:00:00Z"),
            ],
        ),
    );
    expect_apply(&mut api, &format!("{SERVICES}/smollm2"), "5", None).await;
    expect_apply(&mut api, &format!("{PDBS}/smollm2"), "6", None).await;

    let status = expect_status(&mut api).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "FailedCreate");
    assert_eq!(
        degraded["message"],
        format!("StatefulSet smollm2-shard-1: {refused}")
    );
    let (_, reason, _) = expect_event(&mut api).await;
    assert_eq!(reason, "Created");
    let (type_, reason, note) = expect_event(&mut api).await;
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Warning", "FailedCreate")
    );
    assert!(note.contains("exceeded quota"), "{note}");
    task.await.unwrap().unwrap();
    api.expect_no_more_calls().await;
}
