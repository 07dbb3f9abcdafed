//! A node's pod watch: every pod bound to the node (`spec.nodeName=<node>`, the only pods the
//! Node authorizer lets a node list) gets a [`PodWorker`], fed every change of its pod. A pod
//! that disappears from the API server (deleted with grace 0 by someone else, or missing after
//! the watch re-lists) is stopped at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::pod::{PodUpdate, PodWorker};
use super::NodeContext;

/// Watch the node's pods and run their workers until aborted.
pub async fn run(node: Arc<NodeContext>) {
    let api: Api<Pod> = Api::all(node.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.profile.name));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut workers: BTreeMap<String, watch::Sender<PodUpdate>> = BTreeMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut listed: Option<BTreeSet<String>> = None;
    loop {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { break };
                match event {
                    Ok(Event::Init) => listed = Some(BTreeSet::new()),
                    Ok(Event::InitApply(pod)) => {
                        if let Some(seen) = listed.as_mut() {
                            seen.insert(pod.uid().unwrap_or_default());
                        }
                        dispatch(&node, pod, &mut workers, &mut tasks);
                    }
                    Ok(Event::InitDone) => {
                        if let Some(seen) = listed.take() {
                            for (uid, tx) in &workers {
                                if !seen.contains(uid) {
                                    let _ = tx.send(PodUpdate::Gone);
                                }
                            }
                        }
                    }
                    Ok(Event::Apply(pod)) => dispatch(&node, pod, &mut workers, &mut tasks),
                    Ok(Event::Delete(pod)) => {
                        if let Some(tx) = workers.get(&pod.uid().unwrap_or_default()) {
                            let _ = tx.send(PodUpdate::Gone);
                        }
                    }
                    Err(e) => node.shared.log.line(format_args!("{}: watching pods: {e}", node.profile.name)),
                }
            }
            Some(done) = tasks.join_next() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                }
            }
        }
    }
}

fn dispatch(
    node: &Arc<NodeContext>,
    pod: Pod,
    workers: &mut BTreeMap<String, watch::Sender<PodUpdate>>,
    tasks: &mut JoinSet<String>,
) {
    let uid = pod.uid().unwrap_or_default();
    if let Some(tx) = workers.get(&uid) {
        let _ = tx.send(PodUpdate::Pod(Box::new(pod)));
        return;
    }
    let (tx, rx) = watch::channel(PodUpdate::Pod(Box::new(pod.clone())));
    let worker = PodWorker::new(node.clone(), pod, rx);
    tasks.spawn(worker.run());
    workers.insert(uid, tx);
}
