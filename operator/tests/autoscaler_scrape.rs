//! The autoscaler's scrape: it lists the deployment's pods by `status.selector` from a scripted
//! API server, reads `/metrics` of the ready ones from real HTTP servers on loopback, adds up
//! running and waiting requests, and leaves out pods that are not ready, terminating or do not
//! answer. (The API server is scripted because this test runs without a cluster; the P4
//! end-to-end tests run the whole loop against a real one.)

mod mock;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use ryzanstein_operator::autoscaler::{sample, Sample};
use ryzanstein_operator::crd::ModelDeployment;
use serde_json::{json, Value};

/// Serves `body` on `http://addr/metrics` until the test ends.
async fn metrics_server(addr: SocketAddr, body: &'static str) -> Option<u16> {
    let listener = tokio::net::TcpListener::bind(addr).await.ok()?;
    let port = listener.local_addr().ok()?.port();
    let app = axum::Router::new().route("/metrics", get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Some(port)
}

fn pod(name: &str, ip: &str, ready: bool, deleting: bool) -> Value {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "team-a"},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
    });
    if deleting {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    p
}

fn md(selector: Option<&str>) -> ModelDeployment {
    let mut v = json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "smollm2", "namespace": "team-a", "uid": "u"},
        "spec": {"model": {"source": "bundled://smollm2-135m-instruct"}, "poolRef": "p",
                 "autoscaling": {"maxReplicas": 4}},
        "status": {},
    });
    if let Some(s) = selector {
        v["status"]["selector"] = json!(s);
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn adds_up_the_ready_pods_and_leaves_out_the_rest() {
    // Two servers on one port at two loopback addresses, as two pods would be.
    let Some(port) = metrics_server(
        "127.0.0.1:0".parse().unwrap(),
        "# TYPE ryzanstein_num_requests_running gauge\n\
         ryzanstein_num_requests_running{model_name=\"smollm2\"} 3\n\
         ryzanstein_num_requests_waiting{model_name=\"smollm2\"} 2\n",
    )
    .await
    else {
        panic!("cannot bind a loopback port");
    };
    let second = SocketAddr::new("127.0.0.2".parse().unwrap(), port);
    let Some(_) = metrics_server(
        second,
        "ryzanstein_num_requests_running 1\nryzanstein_num_requests_waiting 0\n",
    )
    .await
    else {
        panic!("cannot bind {second}: is 127.0.0.0/8 routed to loopback here?");
    };
    // A third address with nothing listening: refused, left out.
    let (client, mut api) = mock::client();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let selector = "app.kubernetes.io/instance=smollm2,app.kubernetes.io/name=ryzanstein-server,ryzanstein.dev/shard=0";
    let md = md(Some(selector));
    let task = tokio::spawn(async move { sample(&client, &http, &md, port).await });
    let call = api.expect("GET", "/api/v1/namespaces/team-a/pods?").await;
    assert!(
        call.uri.contains("labelSelector=app.kubernetes.io%2Finstance%3Dsmollm2%2Capp.kubernetes.io%2Fname%3Dryzanstein-server%2Cryzanstein.dev%2Fshard%3D0"),
        "{}",
        call.uri
    );
    call.reply(
        200,
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": [
            pod("a", "127.0.0.1", true, false),
            pod("b", "127.0.0.2", true, false),
            pod("starting", "127.0.0.1", false, false),
            pod("terminating", "127.0.0.2", true, true),
            pod("gone", "127.0.0.3", true, false),
        ]}),
    );
    let got = task.await.unwrap();
    assert_eq!(
        got,
        Some(Sample {
            in_flight: 6.0,
            pods: 2
        })
    );
    api.expect_no_more_calls().await;
}

#[tokio::test]
async fn no_selector_yet_means_no_sample_and_no_call() {
    let (client, mut api) = mock::client();
    let http = reqwest::Client::new();
    assert_eq!(sample(&client, &http, &md(None), 8080).await, None);
    api.expect_no_more_calls().await;
}

#[tokio::test]
async fn a_refused_list_means_no_sample() {
    let (client, mut api) = mock::client();
    let http = reqwest::Client::new();
    let md = md(Some("a=b"));
    let task = tokio::spawn(async move { sample(&client, &http, &md, 8080).await });
    api.expect("GET", "/api/v1/namespaces/team-a/pods?")
        .await
        .fail(
            403,
            "Forbidden",
            "pods is forbidden: cannot list resource \"pods\"",
        );
    assert_eq!(task.await.unwrap(), None);
}
