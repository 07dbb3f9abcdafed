//! `helm install` of the chart on a real API server, the operator's RBAC judged by the real
//! authorizer, and `helm uninstall` leaving nothing behind.
//!
//! The operator's permissions are checked with SubjectAccessReviews as its ServiceAccount: every
//! call the operator makes is allowed, and what it must never do (read Secrets, exec into pods,
//! write Nodes) is denied. (Running the operator pod itself needs the node agent; the scenario
//! tests do that.) Needs `make k8s` and `make kube-tools` (helm); `make test` runs both first.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use ryzanstein_e2e::control_plane_or_skip;
use ryzanstein_e2e::tools::KubeTools;
use ryzanstein_e2e::workspace::repo_root;
use serde_json::json;

const NAMESPACE: &str = "ryzanstein-system";
const LABEL: &str = "app.kubernetes.io/instance=ryzanstein";
/// The chart's default Lease name for release `ryzanstein`.
const LEASE: &str = "ryzanstein-operator";

/// (verb, API group, resource, subresource, namespace) of one access check.
type Access = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// Names of the release's objects (by its instance label) that `api` lists.
async fn labelled<K>(api: &Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.list(&ListParams::default().labels(LABEL))
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect()
}

/// Whether `user` may `verb` `resource` (`group`, optional `subresource`) in `namespace`.
async fn allowed(
    client: &kube::Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    subresource: Option<&str>,
    namespace: Option<&str>,
) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{NAMESPACE}"), "system:authenticated"],
            "resourceAttributes": {
                "verb": verb, "group": group, "resource": resource,
                "subresource": subresource.unwrap_or_default(),
                "namespace": namespace.unwrap_or_default(),
                // The leader-election Role names its one Lease.
                "name": if resource == "leases" { LEASE } else { "" },
            },
        },
    }))
    .unwrap();
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn helm_install_grants_the_operator_what_it_needs_and_uninstall_leaves_nothing() {
    let Some(cp) = control_plane_or_skip().await else {
        return;
    };
    let Some(tools) = KubeTools::for_cluster_or_skip(&cp) else {
        return;
    };
    let client = cp.client().await.unwrap();
    let chart = repo_root().join("charts/ryzanstein");
    tools.helm(&[
        "install",
        "ryzanstein",
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
    ]);

    // The CRDs came with the chart and are served.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for name in [
        "inferencepools.ryzanstein.dev",
        "modeldeployments.ryzanstein.dev",
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let established = crds
                .get(name)
                .await
                .unwrap()
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "{name} not established");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The operator Deployment runs under the chart's ServiceAccount with its configuration.
    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    let operator = deployments
        .list(&ListParams::default().labels(LABEL))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the chart's operator Deployment");
    let pod = operator.spec.unwrap().template.spec.unwrap();
    let sa = pod.service_account_name.expect("a ServiceAccount");
    Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
        .get(&sa)
        .await
        .unwrap();
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert!(
        args.contains(&"--config=/etc/ryzanstein/operator.yaml".to_owned()),
        "{args:?}"
    );
    let configs = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(LABEL))
        .await
        .unwrap();
    assert!(
        configs.items.iter().any(|c| c
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key("operator.yaml"))),
        "no operator.yaml ConfigMap"
    );

    // What the operator does, as its ServiceAccount, judged by the real RBAC authorizer.
    let user = format!("system:serviceaccount:{NAMESPACE}:{sa}");
    let tenant = Some("team-a");
    let needed: &[Access] = &[
        ("watch", "ryzanstein.dev", "modeldeployments", None, None),
        ("patch", "ryzanstein.dev", "modeldeployments", None, tenant),
        (
            "patch",
            "ryzanstein.dev",
            "modeldeployments",
            Some("status"),
            tenant,
        ),
        (
            "update",
            "ryzanstein.dev",
            "modeldeployments",
            Some("finalizers"),
            tenant,
        ),
        ("watch", "ryzanstein.dev", "inferencepools", None, None),
        (
            "patch",
            "ryzanstein.dev",
            "inferencepools",
            Some("status"),
            None,
        ),
        // Server-side apply of an absent child is authorized as `create` too.
        ("create", "apps", "deployments", None, tenant),
        ("patch", "apps", "deployments", None, tenant),
        ("create", "apps", "statefulsets", None, tenant),
        ("delete", "apps", "statefulsets", None, tenant),
        ("watch", "apps", "statefulsets", None, None),
        ("create", "", "services", None, tenant),
        ("patch", "", "services", None, tenant),
        ("create", "", "configmaps", None, tenant),
        ("patch", "", "configmaps", None, tenant),
        ("create", "policy", "poddisruptionbudgets", None, tenant),
        ("patch", "policy", "poddisruptionbudgets", None, tenant),
        ("list", "", "pods", None, tenant),
        ("list", "", "nodes", None, None),
        ("list", "", "namespaces", None, None),
        ("create", "events.k8s.io", "events", None, tenant),
        ("list", "", "events", None, tenant),
        (
            "create",
            "coordination.k8s.io",
            "leases",
            None,
            Some(NAMESPACE),
        ),
        (
            "get",
            "coordination.k8s.io",
            "leases",
            None,
            Some(NAMESPACE),
        ),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            None,
            Some(NAMESPACE),
        ),
    ];
    let mut missing = Vec::new();
    for &(verb, group, resource, sub, ns) in needed {
        if !allowed(&client, &user, verb, group, resource, sub, ns).await {
            missing.push(format!(
                "{verb} {group}/{resource}{}",
                sub.map(|s| format!("/{s}")).unwrap_or_default()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "the chart's RBAC does not allow: {missing:?}"
    );
    let forbidden: &[Access] = &[
        ("get", "", "secrets", None, tenant),
        ("list", "", "secrets", None, None),
        ("create", "", "pods", Some("exec"), tenant),
        ("patch", "", "nodes", None, None),
        // Children are applied, never updated, and pods come from their controllers.
        ("update", "apps", "deployments", None, tenant),
        ("create", "", "pods", None, tenant),
        ("create", "", "secrets", None, tenant),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            None,
            Some("kube-system"),
        ),
        ("delete", "ryzanstein.dev", "inferencepools", None, None),
    ];
    let mut excess = Vec::new();
    for &(verb, group, resource, sub, ns) in forbidden {
        if allowed(&client, &user, verb, group, resource, sub, ns).await {
            excess.push(format!(
                "{verb} {group}/{resource}{} in {ns:?}",
                sub.map(|s| format!("/{s}")).unwrap_or_default()
            ));
        }
    }
    assert!(
        excess.is_empty(),
        "the chart's RBAC allows more than it should: {excess:?}"
    );

    // Uninstall: everything the release created is gone; the CRDs stay (Helm never deletes
    // crds/), and deleting them leaves nothing of Ryzanstein.
    tools.helm(&[
        "uninstall",
        "ryzanstein",
        "--namespace",
        NAMESPACE,
        "--wait",
    ]);
    let left = [
        ("Deployments", labelled(&deployments).await),
        (
            "ConfigMaps",
            labelled(&Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)).await,
        ),
        (
            "ServiceAccounts",
            labelled(&Api::<ServiceAccount>::namespaced(
                client.clone(),
                NAMESPACE,
            ))
            .await,
        ),
        (
            "ClusterRoles",
            labelled(&Api::<ClusterRole>::all(client.clone())).await,
        ),
        (
            "ClusterRoleBindings",
            labelled(&Api::<ClusterRoleBinding>::all(client.clone())).await,
        ),
    ];
    for (kind, names) in left {
        assert!(
            names.is_empty(),
            "{kind} left after helm uninstall: {names:?}"
        );
    }
    for name in [
        "inferencepools.ryzanstein.dev",
        "modeldeployments.ryzanstein.dev",
    ] {
        crds.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = crds
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|c| c.spec.group == "ryzanstein.dev")
            .count();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} Ryzanstein CRDs still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
