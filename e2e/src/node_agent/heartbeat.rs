//! A node's registration and heartbeats, as a kubelet does them: the Node object is created
//! (or, when it exists, its labels, taints and status are brought up to date), a
//! `coordination.k8s.io` Lease named after the node in `kube-node-lease` is renewed every
//! [`super::AgentOptions::lease_renew_interval`] (what the node lifecycle controller watches),
//! and the node status is patched every [`super::AgentOptions::node_status_interval`] with fresh
//! heartbeat times. All with the node's own client, so NodeRestriction applies.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::network::NodeNetwork;
use super::nodes::{node_object, node_status, NodeProfile};

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Create the Node (or update an existing one's labels, taints and status) and return it.
pub async fn register(
    client: &Client,
    profile: &NodeProfile,
    network: &NodeNetwork,
) -> kube::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = node_object(profile, network);
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = json!({
                "metadata": { "labels": profile.labels },
                "spec": { "taints": node.spec.as_ref().and_then(|s| s.taints.clone()) },
            });
            nodes
                .patch(
                    &profile.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Err(e) => return Err(e),
    }
    patch_status(&nodes, profile, network, Timestamp::now()).await
}

async fn patch_status(
    nodes: &Api<Node>,
    profile: &NodeProfile,
    network: &NodeNetwork,
    since: Timestamp,
) -> kube::Result<Node> {
    let status = node_status(profile, network, Timestamp::now(), since);
    nodes
        .patch_status(
            &profile.name,
            &PatchParams::default(),
            &Patch::Strategic(json!({ "status": status })),
        )
        .await
}

/// Renew the node's Lease and report its status until the task is aborted. Failures are
/// logged and retried at the next tick.
pub(crate) async fn run(node: std::sync::Arc<super::NodeContext>, registered: Node) {
    let node_uid = registered.metadata.uid.clone().unwrap_or_default();
    // Conditions keep their transition time from registration.
    let since = registered
        .status
        .and_then(|s| s.conditions)
        .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time)
        .map_or_else(Timestamp::now, |t| t.0);
    let options = &node.shared.options;
    let leases: Api<Lease> = Api::namespaced(node.client.clone(), NODE_LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(node.client.clone());
    let name = &node.profile.name;
    let mut renew = tokio::time::interval(options.lease_renew_interval);
    let mut report = tokio::time::interval(options.node_status_interval);
    report.tick().await; // registration just reported it
    loop {
        tokio::select! {
            _ = renew.tick() => {
                if let Err(e) = renew_lease(&leases, name, &node_uid, options.lease_duration).await {
                    node.shared.log.line(format_args!("node {name}: renewing its Lease: {e}"));
                }
            }
            _ = report.tick() => {
                if let Err(e) = patch_status(&nodes, &node.profile, &node.network, since).await {
                    node.shared.log.line(format_args!("node {name}: reporting its status: {e}"));
                }
            }
        }
    }
}

async fn renew_lease(
    leases: &Api<Lease>,
    node: &str,
    node_uid: &str,
    duration: Duration,
) -> kube::Result<()> {
    let now = MicroTime(Timestamp::now());
    match leases.get_opt(node).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some(node.to_owned());
            spec.lease_duration_seconds = Some(duration.as_secs() as i32);
            spec.renew_time = Some(now);
            leases
                .replace(&lease.name_any(), &PostParams::default(), &lease)
                .await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_owned()),
                    namespace: Some(NODE_LEASE_NAMESPACE.to_owned()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".to_owned(),
                        kind: "Node".to_owned(),
                        name: node.to_owned(),
                        uid: node_uid.to_owned(),
                        ..OwnerReference::default()
                    }]),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_owned()),
                    lease_duration_seconds: Some(duration.as_secs() as i32),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}
