//! The InferencePool reconcile against a scripted API server: it lists nodes (page by page) and
//! ModelDeployments, writes the status with server-side apply under the operator's field
//! manager, publishes an event when Ready changes, and sets the matching-nodes gauge.

mod mock;

use std::sync::Arc;

use ryzanstein_operator::config::OperatorConfig;
use ryzanstein_operator::context::Context;
use ryzanstein_operator::crd::InferencePool;
use ryzanstein_operator::metrics::Metrics;
use ryzanstein_operator::pool_controller::{
    deployments_in_pool, reconcile, reconcile_measured, PoolContext, RESYNC,
};
use serde_json::{json, Value};

const NODES: &str = "/api/v1/nodes?";
const DEPLOYMENTS: &str = "/apis/ryzanstein.dev/v1alpha1/modeldeployments?";
const STATUS: &str = "/apis/ryzanstein.dev/v1alpha1/inferencepools/cpu-avx512/status?";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events?";

fn pool(status: Option<Value>) -> InferencePool {
    let mut p = json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": "cpu-avx512", "generation": 3, "uid": "6f1f", "resourceVersion": "100"},
        "spec": {
            "hardware": {"class": "CPU", "cpu": {"requiredFeatures": ["AVX512F"], "preferredFeatures": ["AVX512VNNI"]}},
            "tenants": [
                {"name": "team-a", "namespaces": ["team-a"], "quota": {"maxReplicas": 8}},
                {"name": "team-b", "namespaces": ["team-b"]},
            ],
        },
    });
    if let Some(s) = status {
        p["status"] = s;
    }
    serde_json::from_value(p).unwrap()
}

fn node(name: &str, features: &[&str]) -> Value {
    let labels: serde_json::Map<String, Value> = features
        .iter()
        .map(|f| {
            (
                format!("feature.node.kubernetes.io/cpu-cpuid.{f}"),
                json!("true"),
            )
        })
        .chain([("kubernetes.io/hostname".to_owned(), json!(name))])
        .collect();
    json!({"metadata": {"name": name, "labels": labels}})
}

fn tainted(mut node: Value) -> Value {
    node["spec"] =
        json!({"taints": [{"key": "gpu-only", "value": "true", "effect": "NoSchedule"}]});
    node
}

fn node_page(items: Vec<Value>, continue_token: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "NodeList",
        "metadata": {"continue": continue_token}, "items": items,
    })
}

fn md(
    namespace: &str,
    name: &str,
    pool: &str,
    replicas: i32,
    shards: i32,
    cpu: &str,
    memory: &str,
) -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"source": "bundled://smollm2-135m-instruct"},
            "poolRef": pool,
            "replicas": replicas,
            "sharding": {"shards": shards},
            "resources": {"cpu": cpu, "memory": memory},
        },
        "status": {"replicas": replicas, "readyReplicas": replicas},
    })
}

fn md_list(items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeploymentList",
        "metadata": {"resourceVersion": "5"}, "items": items,
    })
}

fn context(client: kube::Client) -> (Arc<PoolContext>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let config = OperatorConfig::parse("defaultServerImage: ryzanstein/server:0.1.0\n").unwrap();
    let ctx = Arc::new(Context::new(
        client,
        metrics.clone(),
        Arc::new(config),
        Some("operator-a".into()),
    ));
    (Arc::new(PoolContext { ctx, pools: None }), metrics)
}

/// Answers the status patch with the pool carrying that status; returns the patch body.
fn accept_status(call: mock::Call, p: &InferencePool) -> Value {
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
    let body = call.body.clone();
    let mut answer = serde_json::to_value(p).unwrap();
    answer["status"] = body["status"].clone();
    call.reply(200, answer);
    body
}

#[tokio::test]
async fn counts_matching_nodes_over_every_page_and_reports_ready() {
    let (client, mut api) = mock::client();
    let (pctx, metrics) = context(client);
    let p = pool(None);
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), pctx));

    let first = api.expect("GET", NODES).await;
    assert!(first.uri.contains("limit=500"), "{}", first.uri);
    first.reply(
        200,
        node_page(
            vec![node("n1", &["AVX2", "AVX512F"]), node("n2", &["AVX2"])],
            "page-2",
        ),
    );
    let second = api.expect("GET", NODES).await;
    assert!(second.uri.contains("continue=page-2"), "{}", second.uri);
    second.reply(
        200,
        node_page(
            vec![
                node("n3", &["AVX512F", "AVX512VNNI"]),
                // Matching labels, but a NoSchedule taint the pool does not tolerate.
                tainted(node("n4", &["AVX512F"])),
            ],
            "",
        ),
    );
    api.expect("GET", DEPLOYMENTS)
        .await
        .reply(200, md_list(vec![]));

    let patch = accept_status(api.expect("PATCH", STATUS).await, &p);
    assert_eq!(patch["apiVersion"], "ryzanstein.dev/v1alpha1");
    assert_eq!(patch["kind"], "InferencePool");
    let status = &patch["status"];
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["matchingNodes"], 2);
    assert_eq!(
        status["allocated"],
        json!({"replicas": 0, "cpu": "0", "memory": "0", "gpus": 0})
    );
    assert_eq!(status["tenants"].as_array().unwrap().len(), 2);
    let ready = &status["conditions"][0];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], "NodesAvailable");
    assert_eq!(ready["observedGeneration"], 3);

    // Ready changed (there was no status): one Normal event on the pool.
    let event = api.expect("POST", EVENTS).await;
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(event.body["reason"], "NodesAvailable");
    assert_eq!(event.body["regarding"]["kind"], "InferencePool");
    assert_eq!(event.body["regarding"]["name"], "cpu-avx512");
    assert_eq!(event.body["reportingController"], "ryzanstein-operator");
    let body = event.body.clone();
    event.reply(201, body);

    let action = task.await.unwrap().unwrap();
    assert_eq!(action, kube::runtime::controller::Action::requeue(RESYNC));
    assert!(metrics
        .encode()
        .contains("ryzanstein_operator_pool_matching_nodes{pool=\"cpu-avx512\"} 2\n"));
}

#[tokio::test]
async fn no_matching_node_is_ready_false_with_a_warning() {
    let (client, mut api) = mock::client();
    let (pctx, metrics) = context(client);
    let ready_before = json!({"conditions": [{
        "type": "Ready", "status": "True", "reason": "NodesAvailable", "message": "1 node matches",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2,
    }]});
    let p = pool(Some(ready_before));
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), pctx));

    api.expect("GET", NODES).await.reply(
        200,
        node_page(vec![node("n1", &["AVX2"]), node("n2", &[])], ""),
    );
    api.expect("GET", DEPLOYMENTS)
        .await
        .reply(200, md_list(vec![]));
    let patch = accept_status(api.expect("PATCH", STATUS).await, &p);
    let ready = &patch["status"]["conditions"][0];
    assert_eq!(patch["status"]["matchingNodes"], 0);
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "NoMatchingNodes");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("feature.node.kubernetes.io/cpu-cpuid.AVX512F=true"),
        "{ready}"
    );
    assert_ne!(ready["lastTransitionTime"], "2026-01-01T00:00:00Z");

    let event = api.expect("POST", EVENTS).await;
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "NoMatchingNodes");
    let body = event.body.clone();
    event.reply(201, body);

    task.await.unwrap().unwrap();
    assert!(metrics
        .encode()
        .contains("ryzanstein_operator_pool_matching_nodes{pool=\"cpu-avx512\"} 0\n"));
}

#[tokio::test]
async fn aggregates_usage_of_the_pools_deployments_per_tenant_without_a_repeat_event() {
    let (client, mut api) = mock::client();
    let (pctx, _) = context(client);
    let ready_before = json!({"conditions": [{
        "type": "Ready", "status": "True", "reason": "NodesAvailable", "message": "1 node matches",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3,
    }]});
    let p = pool(Some(ready_before));
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), pctx));

    api.expect("GET", NODES)
        .await
        .reply(200, node_page(vec![node("n1", &["AVX512F"])], ""));
    api.expect("GET", DEPLOYMENTS).await.reply(
        200,
        md_list(vec![
            md("team-a", "chat", "cpu-avx512", 2, 1, "2", "4Gi"),
            md("team-a", "big", "cpu-avx512", 1, 3, "4", "8Gi"),
            md("team-b", "embed", "cpu-avx512", 1, 1, "500m", "1Gi"),
            md("team-b", "elsewhere", "cpu-avx2", 4, 1, "8", "8Gi"),
        ]),
    );
    let patch = accept_status(api.expect("PATCH", STATUS).await, &p);
    let status = &patch["status"];
    assert_eq!(
        status["tenants"],
        json!([
            {"name": "team-a", "replicas": 5, "cpu": "16", "memory": "32Gi", "gpus": 0, "deployments": 2, "throttled": false},
            {"name": "team-b", "replicas": 1, "cpu": "500m", "memory": "1Gi", "gpus": 0, "deployments": 1, "throttled": false},
        ])
    );
    assert_eq!(
        status["allocated"],
        json!({"replicas": 6, "cpu": "16500m", "memory": "33Gi", "gpus": 0})
    );
    // Still Ready: the transition time stays and no event is published.
    assert_eq!(
        status["conditions"][0]["lastTransitionTime"],
        "2026-01-01T00:00:00Z"
    );
    task.await.unwrap().unwrap();
    api.expect_no_more_calls().await;
}

#[tokio::test]
async fn an_api_failure_is_counted_by_reason() {
    let (client, mut api) = mock::client();
    let (pctx, metrics) = context(client);
    let task = tokio::spawn(reconcile_measured(Arc::new(pool(None)), pctx));
    api.expect("GET", NODES).await.fail(
        403,
        "Forbidden",
        "nodes is forbidden: User \"system:serviceaccount:x:y\" cannot list resource \"nodes\"",
    );
    let err = task.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("list Nodes"), "{err}");
    let text = metrics.encode();
    assert!(text.contains(
        "ryzanstein_operator_reconcile_errors_total{controller=\"inferencepool\",reason=\"kube_forbidden\"} 1\n"
    ), "{text}");
    assert!(text.contains(
        "ryzanstein_operator_reconcile_total{controller=\"inferencepool\",result=\"error\"} 1\n"
    ), "{text}");
    api.expect_no_more_calls().await;
}

#[test]
fn lists_the_deployments_a_pool_change_affects() {
    let items: Vec<ryzanstein_operator::crd::ModelDeployment> = [
        md("team-a", "chat", "cpu-avx512", 1, 1, "1", "1Gi"),
        md("team-b", "other", "gpu", 1, 1, "1", "1Gi"),
        md("team-b", "embed", "cpu-avx512", 1, 1, "1", "1Gi"),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let affected: Vec<String> = deployments_in_pool("cpu-avx512", &items)
        .into_iter()
        .map(|r| format!("{}/{}", r.namespace.unwrap(), r.name))
        .collect();
    assert_eq!(affected, ["team-a/chat", "team-b/embed"]);
}
