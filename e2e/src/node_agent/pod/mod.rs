//! A pod worker: one task per pod bound to a node, from the first time the node's watch sees
//! it until it is gone from the API server. It materialises the volumes, takes a pod address,
//! starts each container (image → binary, environment, arguments), runs the probes, restarts
//! containers by the restart policy with back-off, reports status through `pods/status`, and
//! when the pod gets a deletion timestamp stops the containers (preStop, SIGTERM, grace period,
//! SIGKILL), reports the final status and deletes the pod object with grace 0 — the kubelet's
//! part of a deletion.
//!
//! Split by concern: this file has the worker's state, its loop and its status reports;
//! [`start`] starts containers, [`stop`] handles exits, probe results and deletion, [`api`] is
//! the pod's view of the API server, [`logs`] the container logs.

mod api;
mod logs;
mod start;
mod stop;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::container::{Backoff, BackoffPolicy, Exit, StopRequest};
use super::probe::ProbeReport;
use super::status::{phase, pod_status, ContainerView, PodView, State, Transitions};
use super::volumes::{materialise, Volumes};
use super::NodeContext;

pub use logs::latest_log;

/// What the node's watch tells a worker.
#[derive(Clone, Debug)]
pub enum PodUpdate {
    Pod(Box<Pod>),
    /// The pod is no longer in the API server.
    Gone,
}

enum Event {
    Exited {
        slot: usize,
        instance: u32,
        exit: Exit,
    },
    Probe {
        slot: usize,
        instance: u32,
        report: ProbeReport,
    },
}

/// One container of the pod.
struct Slot {
    spec: Container,
    view: ContainerView,
    /// Incremented at each start; events of earlier instances are ignored.
    instance: u32,
    /// When a waiting container may be (re)started.
    start_at: Option<Instant>,
    running_since: Option<Instant>,
    stop: Option<mpsc::UnboundedSender<StopRequest>>,
    prober: Option<AbortHandle>,
    stopping: bool,
    restart_backoff: Backoff,
    pull_backoff: Backoff,
    pull_failures: u32,
    config_backoff: Backoff,
}

pub struct PodWorker {
    node: Arc<NodeContext>,
    pod: Pod,
    uid: String,
    updates: watch::Receiver<PodUpdate>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    dir: PathBuf,
    log_dir: PathBuf,
    volumes: Option<Volumes>,
    volume_error: Option<String>,
    volume_backoff: Backoff,
    volume_retry_at: Instant,
    ip: Option<Ipv4Addr>,
    slots: Vec<Slot>,
    tasks: JoinSet<()>,
    start_time: Timestamp,
    transitions: Transitions,
    last_reported: Option<serde_json::Value>,
    report_retry_at: Option<Instant>,
    /// Containers will not be started again (a terminal phase, or stopping).
    done: bool,
    terminating: bool,
}

impl PodWorker {
    pub fn new(node: Arc<NodeContext>, pod: Pod, updates: watch::Receiver<PodUpdate>) -> PodWorker {
        let uid = pod.uid().unwrap_or_default();
        let dir = node.shared.state_dir.join("pods").join(&uid);
        let log_dir = node.shared.state_dir.join("logs").join(format!(
            "{}_{}_{uid}",
            pod.namespace().unwrap_or_default(),
            pod.name_any()
        ));
        let policy = node.shared.options.restart_backoff;
        let pull = node.shared.options.image_pull_backoff;
        let short = BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
            reset_after: Duration::MAX,
        };
        let slots = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|spec| Slot {
                view: ContainerView {
                    name: spec.name.clone(),
                    image: spec.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    container_id: None,
                    state: State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: None,
                    },
                    last: None,
                    restart_count: 0,
                    ready: false,
                    started: false,
                },
                spec,
                instance: 0,
                start_at: Some(Instant::now()),
                running_since: None,
                stop: None,
                prober: None,
                stopping: false,
                restart_backoff: Backoff::new(policy),
                pull_backoff: Backoff::new(pull),
                pull_failures: 0,
                config_backoff: Backoff::new(short),
            })
            .collect();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let already_final = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        PodWorker {
            start_time: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map_or_else(Timestamp::now, |t| t.0),
            node,
            pod,
            uid,
            updates,
            events_tx,
            events_rx,
            dir,
            log_dir,
            volumes: None,
            volume_error: None,
            volume_backoff: Backoff::new(short),
            volume_retry_at: Instant::now(),
            ip: None,
            slots,
            tasks: JoinSet::new(),
            transitions: Transitions::default(),
            last_reported: None,
            report_retry_at: None,
            done: already_final,
            terminating: false,
        }
    }

    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.pod.namespace().unwrap_or_default(),
            self.pod.name_any()
        )
    }

    fn log(&self, message: std::fmt::Arguments<'_>) {
        self.node.shared.log.line(format_args!(
            "{} pod {}: {message}",
            self.node.profile.name,
            self.name()
        ));
    }

    /// Run until the pod is gone; returns its uid.
    pub async fn run(mut self) -> String {
        let already_final = self.done;
        if !already_final {
            self.log(format_args!("admitted"));
        }
        let gone = loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                break false;
            }
            if !already_final {
                self.sync().await;
                self.report().await;
            }
            let wake = self.next_wake();
            tokio::select! {
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        break true;
                    }
                    let update = self.updates.borrow_and_update().clone();
                    match update {
                        PodUpdate::Pod(pod) => self.pod = *pod,
                        PodUpdate::Gone => break true,
                    }
                }
                Some(event) = self.events_rx.recv() => self.handle(event).await,
                _ = tokio::time::sleep_until(wake) => {}
            }
        };
        self.terminate(!gone).await;
        self.uid.clone()
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(3600);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = wake.min(t);
            }
        };
        if !self.done {
            if self.volumes.is_none() {
                consider(Some(self.volume_retry_at));
            }
            for slot in &self.slots {
                if matches!(
                    slot.view.state,
                    State::Waiting { .. } | State::Terminated(_)
                ) {
                    consider(slot.start_at);
                }
            }
            consider(self.volumes.as_ref().and_then(Volumes::next_refresh));
        }
        consider(self.report_retry_at);
        wake
    }

    /// Bring the pod towards running: volumes, address, containers due to start.
    async fn sync(&mut self) {
        if self.done {
            return;
        }
        let now = Instant::now();
        if self.volumes.is_none() {
            if now < self.volume_retry_at {
                return;
            }
            let api = self.api();
            let pod = self.pod.clone();
            let facts = self.facts(&pod);
            match materialise(&pod, &facts, &self.dir.join("volumes"), &api).await {
                Ok(v) => {
                    if self.volume_error.take().is_some() {
                        self.log(format_args!("volumes mounted"));
                    }
                    self.volumes = Some(v);
                }
                Err(e) => {
                    if self.volume_error.as_deref() != Some(e.as_str()) {
                        self.log(format_args!("{e}"));
                        self.event(EventType::Warning, "FailedMount", &e).await;
                    }
                    self.volume_error = Some(e);
                    self.volume_retry_at = now + self.volume_backoff.retry_delay();
                    return;
                }
            }
        }
        if self.ip.is_none() {
            match self.node.network.allocate() {
                Some(ip) => {
                    self.ip = Some(ip);
                    self.log(format_args!("pod IP {ip}"));
                }
                None => {
                    self.volume_error = Some("no free pod address on the node".into());
                    self.volume_retry_at = now + Duration::from_secs(1);
                    return;
                }
            }
        }
        if self
            .volumes
            .as_ref()
            .and_then(Volumes::next_refresh)
            .is_some_and(|t| t <= now)
        {
            let api = self.api();
            let mut volumes = self.volumes.take().expect("volumes");
            if let Err(e) = volumes.refresh_due(&api).await {
                self.log(format_args!("refreshing service-account tokens: {e}"));
            }
            self.volumes = Some(volumes);
        }
        for idx in 0..self.slots.len() {
            let slot = &self.slots[idx];
            let due = slot.start_at.is_some_and(|t| t <= now);
            let idle = matches!(
                slot.view.state,
                State::Waiting { .. } | State::Terminated(_)
            );
            if due && idle {
                self.start(idx).await;
            }
        }
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    /// Report the status when it changed since the last report.
    async fn report(&mut self) {
        let views: Vec<ContainerView> = self.slots.iter().map(|s| s.view.clone()).collect();
        let phase = phase(
            &self.restart_policy(),
            &views,
            self.terminating && self.running() == 0,
        );
        let view = PodView {
            phase,
            sandbox_ready: self.ip.is_some(),
            pod_ip: self.ip,
            host_ip: self.node.network.node_ip(),
            start_time: self.start_time,
            containers: &views,
        };
        // Transition times only move when a status changes, so "now" does not make every
        // report differ.
        let status = pod_status(&view, &mut self.transitions, Timestamp::now());
        let body = serde_json::json!({ "status": status });
        if self.last_reported.as_ref() == Some(&body) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(
            self.node.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        match pods
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&body),
            )
            .await
        {
            Ok(_) => {
                self.last_reported = Some(body);
                self.report_retry_at = None;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.last_reported = Some(body);
                self.report_retry_at = None;
            }
            Err(e) => {
                self.log(format_args!("reporting status: {e}"));
                self.report_retry_at = Some(Instant::now() + Duration::from_millis(500));
            }
        }
    }

    fn running(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.view.state, State::Running { .. }))
            .count()
    }

    /// Stop every container (the pod is being deleted, or is gone), report, delete, clean up.
    fn current_log(&self, container: &str) -> Option<PathBuf> {
        latest_log(&self.log_dir.join(container))
    }

    async fn event(&self, type_: EventType, reason: &str, note: &str) {
        let reference = self.pod.object_ref(&());
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.node.recorder.publish(&event, &reference).await {
            self.node.shared.log.line(format_args!(
                "{} pod {}: event {reason}: {e}",
                self.node.profile.name,
                self.name()
            ));
        }
    }
}
