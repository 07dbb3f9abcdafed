//! Leader election against a scripted API server: acquiring an absent Lease, renewing our own,
//! standing by while another replica's Lease is fresh, taking it over once it has gone
//! unrenewed for its duration, losing a race, releasing on shutdown, and stopping leading when
//! another replica takes the Lease.

mod mock;

use std::time::Duration;

use ryzanstein_operator::leader::{Attempt, LeaderElector, LeaseSettings};
use ryzanstein_operator::Error;
use serde_json::{json, Value};

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/ryzanstein-system/leases/ryzanstein-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ryzanstein-system/leases";

fn settings() -> LeaseSettings {
    LeaseSettings {
        namespace: "ryzanstein-system".into(),
        name: "ryzanstein-operator".into(),
        identity: "operator-a".into(),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    }
}

fn lease(holder: Option<&str>, renew_time: &str, transitions: i32, rv: &str) -> Value {
    let mut spec = json!({
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-01-01T00:00:00.000000Z",
        "renewTime": renew_time,
        "leaseTransitions": transitions,
    });
    if let Some(h) = holder {
        spec["holderIdentity"] = json!(h);
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ryzanstein-operator", "namespace": "ryzanstein-system", "resourceVersion": rv},
        "spec": spec,
    })
}

/// Runs one attempt in a task so the test can play the API server meanwhile.
fn attempt(
    mut elector: LeaderElector,
) -> tokio::task::JoinHandle<(LeaderElector, ryzanstein_operator::Result<Attempt>)> {
    tokio::spawn(async move {
        let r = elector.try_acquire_or_renew().await;
        (elector, r)
    })
}

#[tokio::test]
async fn creates_the_lease_when_there_is_none() {
    let (client, mut api) = mock::client();
    let task = attempt(LeaderElector::new(client, settings()).unwrap());
    api.expect("GET", LEASE).await.fail(
        404,
        "NotFound",
        "leases.coordination.k8s.io \"ryzanstein-operator\" not found",
    );
    let create = api.expect("POST", LEASES).await;
    let spec = &create.body["spec"];
    assert_eq!(spec["holderIdentity"], "operator-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(spec["renewTime"].is_string() && spec["acquireTime"].is_string());
    assert_eq!(create.body["metadata"]["name"], "ryzanstein-operator");
    let mut created = create.body.clone();
    created["metadata"]["resourceVersion"] = json!("1");
    create.reply(201, created);
    let (_, result) = task.await.unwrap();
    assert_eq!(result.unwrap(), Attempt::Acquired);
}

#[tokio::test]
async fn renews_its_own_lease_with_the_version_it_read() {
    let (client, mut api) = mock::client();
    let task = attempt(LeaderElector::new(client, settings()).unwrap());
    api.expect("GET", LEASE).await.reply(
        200,
        lease(Some("operator-a"), "2026-01-01T00:00:00.000000Z", 3, "41"),
    );
    let update = api.expect("PUT", LEASE).await;
    assert_eq!(update.body["metadata"]["resourceVersion"], "41");
    assert_eq!(update.body["spec"]["holderIdentity"], "operator-a");
    // Renewing is not a transition.
    assert_eq!(update.body["spec"]["leaseTransitions"], 3);
    assert_eq!(
        update.body["spec"]["acquireTime"],
        "2026-01-01T00:00:00.000000Z"
    );
    assert_ne!(
        update.body["spec"]["renewTime"],
        "2026-01-01T00:00:00.000000Z"
    );
    let body = update.body.clone();
    update.reply(200, body);
    let (_, result) = task.await.unwrap();
    assert_eq!(result.unwrap(), Attempt::Renewed);
}

#[tokio::test(start_paused = true)]
async fn takes_over_only_after_the_holder_stops_renewing_for_the_lease_duration() {
    let (client, mut api) = mock::client();
    let elector = LeaderElector::new(client, settings()).unwrap();

    // First sight of operator-b's Lease: stand by (however old its renewTime looks: only our
    // own clock decides, so skew between nodes cannot hand the Lease over early).
    let task = attempt(elector);
    api.expect("GET", LEASE).await.reply(
        200,
        lease(Some("operator-b"), "2020-01-01T00:00:00.000000Z", 1, "7"),
    );
    let (elector, result) = task.await.unwrap();
    assert_eq!(result.unwrap(), Attempt::HeldBy("operator-b".into()));
    api.expect_no_more_calls().await;

    // 10 s later operator-b has renewed: the clock starts again.
    tokio::time::advance(Duration::from_secs(10)).await;
    let task = attempt(elector);
    api.expect("GET", LEASE).await.reply(
        200,
        lease(Some("operator-b"), "2020-01-01T00:00:10.000000Z", 1, "8"),
    );
    let (elector, result) = task.await.unwrap();
    assert_eq!(result.unwrap(), Attempt::HeldBy("operator-b".into()));

    // 10 s after that renewal (20 s after first sight) it is still operator-b's.
    tokio::time::advance(Duration::from_secs(10)).await;
    let task = attempt(elector);
    api.expect("GET", LEASE).await.reply(
        200,
        lease(Some("operator-b"), "2020-01-01T00:00:10.000000Z", 1, "8"),
    );
    let (elector, result) = task.await.unwrap();
    assert_eq!(result.unwrap(), Attempt::HeldBy("operator-b".into()));

    // 16 s after the last change: expired. Take it over, counting a transition.
    tokio::time::advance(Duration::from_secs(6)).await;
    let task = attempt(elector);
    api.expect("GET", LEASE).await.reply(
        200,
        lease(Some("operator-b"), "2020-01-01T00:00:10.000000Z", 1, "8"),
    );
    let update = api.expect("PUT", LEASE).await;
    assert_eq!(update.body["metadata"]["resourceVersion"], "8");
    assert_eq!(update.body["spec"]["holderIdentity"], "operator-a");
    assert_eq!(update.body["spec"]["leaseTransitions"], 2);
    assert_ne!(
        update.body["spec"]["acquireTime"],
        "2026-01-01T00:00:00.000000Z"
    );
    let body = update.body.clone();
    update.reply(200, body);
    let (_, result) = task.await.unwrap();
    assert_eq!(result.unwrap(), Attempt::Acquired);
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let (client, mut api) = mock::client();
    let task = attempt(LeaderElector::new(client, settings()).unwrap());
    api.expect("GET", LEASE)
        .await
        .reply(200, lease(None, "2026-01-01T00:00:00.000000Z", 4, "9"));
    let update = api.expect("PUT", LEASE).await;
    assert_eq!(update.body["spec"]["holderIdentity"], "operator-a");
    assert_eq!(update.body["spec"]["leaseTransitions"], 5);
    let body = update.body.clone();
    update.reply(200, body);
    assert_eq!(task.await.unwrap().1.unwrap(), Attempt::Acquired);
}

#[tokio::test]
async fn a_write_conflict_means_someone_else_won() {
    let (client, mut api) = mock::client();
    let task = attempt(LeaderElector::new(client, settings()).unwrap());
    api.expect("GET", LEASE)
        .await
        .reply(200, lease(None, "2026-01-01T00:00:00.000000Z", 4, "9"));
    api.expect("PUT", LEASE).await.fail(
        409,
        "Conflict",
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"ryzanstein-operator\": the object has been modified",
    );
    assert_eq!(task.await.unwrap().1.unwrap(), Attempt::Conflict);
}

#[tokio::test]
async fn other_api_errors_are_errors() {
    let (client, mut api) = mock::client();
    let task = attempt(LeaderElector::new(client, settings()).unwrap());
    api.expect("GET", LEASE).await.fail(
        403,
        "Forbidden",
        "leases.coordination.k8s.io is forbidden",
    );
    let err = task.await.unwrap().1.unwrap_err();
    assert_eq!(err.metric_label(), "kube_forbidden");
    assert!(
        err.to_string()
            .contains("get Lease ryzanstein-system/ryzanstein-operator"),
        "{err}"
    );
}

#[tokio::test]
async fn release_hands_the_lease_back_only_when_ours() {
    let (client, mut api) = mock::client();
    let mut elector = LeaderElector::new(client, settings()).unwrap();
    let task = tokio::spawn(async move {
        let r = elector.release().await;
        (elector, r)
    });
    api.expect("GET", LEASE).await.reply(
        200,
        lease(Some("operator-a"), "2026-01-01T00:00:00.000000Z", 2, "12"),
    );
    let update = api.expect("PUT", LEASE).await;
    assert!(
        update.body["spec"].get("holderIdentity").is_none(),
        "{}",
        update.body
    );
    assert_eq!(update.body["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(update.body["metadata"]["resourceVersion"], "12");
    let body = update.body.clone();
    update.reply(200, body);
    let (mut elector, result) = task.await.unwrap();
    assert!(result.unwrap());

    // Someone else's Lease is left alone.
    let task = tokio::spawn(async move { elector.release().await });
    api.expect("GET", LEASE).await.reply(
        200,
        lease(Some("operator-b"), "2026-01-01T00:00:00.000000Z", 3, "13"),
    );
    assert!(!task.await.unwrap().unwrap());
    api.expect_no_more_calls().await;
}

#[tokio::test(start_paused = true)]
async fn holding_ends_when_another_replica_took_the_lease() {
    let (client, mut api) = mock::client();
    let mut elector = LeaderElector::new(client, settings()).unwrap();
    let task = tokio::spawn(async move { elector.hold().await });
    // One successful renewal...
    api.expect("GET", LEASE).await.reply(
        200,
        lease(Some("operator-a"), "2026-01-01T00:00:00.000000Z", 1, "20"),
    );
    let update = api.expect("PUT", LEASE).await;
    let body = update.body.clone();
    update.reply(200, body);
    // ...then the Lease names operator-b.
    api.expect("GET", LEASE).await.reply(
        200,
        lease(Some("operator-b"), "2026-01-01T00:00:30.000000Z", 2, "25"),
    );
    let lost = task.await.unwrap();
    assert!(
        matches!(&lost, Error::LeaseLost { reason, .. } if reason.contains("operator-b")),
        "{lost}"
    );
}

#[tokio::test(start_paused = true)]
async fn holding_ends_when_renewals_keep_failing_past_the_deadline() {
    let (client, mut api) = mock::client();
    let mut elector = LeaderElector::new(client, settings()).unwrap();
    let task = tokio::spawn(async move { elector.hold().await });
    // Renewals fail every 2 s; by 10 s the leader must give up (before a standby, which waits
    // 15 s, could take over).
    let mut failures = 0;
    while let Some(call) = api.next_call(Duration::from_secs(3)).await {
        assert_eq!((call.method.as_str(), call.uri.as_str()), ("GET", LEASE));
        call.fail(500, "InternalError", "etcd timeout");
        failures += 1;
    }
    let lost = task.await.unwrap();
    assert!(
        matches!(&lost, Error::LeaseLost { reason, .. } if reason.contains("renew deadline")),
        "{lost}"
    );
    assert!((4..=5).contains(&failures), "{failures} renewals tried");
}
