//! A pod worker: one task per pod bound to a node, from the first time the node's watch sees
//! it until it is gone from the API server. It materialises the volumes, takes a pod address,
//! starts each container (image → binary, environment, arguments), runs the probes, restarts
//! containers by the restart policy with back-off, reports status through `pods/status`, and
//! when the pod gets a deletion timestamp stops the containers (preStop, SIGTERM, grace period,
//! SIGKILL), reports the final status and deletes the pod object with grace 0 — the kubelet's
//! part of a deletion.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::container::{supervise, Backoff, Exit, StopRequest};
use super::env::{resolve, Env, Objects, PodFacts};
use super::launch::{command, plan, LaunchInputs};
use super::probe::{ProbeKind, ProbeReport};
use super::process::Process;
use super::rewrite::PathMap;
use super::status::{phase, pod_status, ContainerView, PodView, State, Terminated, Transitions};
use super::volumes::{materialise, VolumeApi, Volumes};
use super::NodeContext;

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
        let short = super::container::BackoffPolicy {
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

    async fn start(&mut self, idx: usize) {
        let now = Instant::now();
        let shared = self.node.shared.clone();
        let image = self.slots[idx].view.image.clone();
        let name = self.slots[idx].spec.name.clone();
        // "Pull" the image.
        let binary = match shared.images.resolve(&image) {
            Ok(binary) => binary.to_path_buf(),
            Err(message) => {
                let slot = &mut self.slots[idx];
                let delay = slot.pull_backoff.retry_delay();
                slot.start_at = Some(now + delay);
                let (reason, text) = if slot.pull_failures == 0 {
                    ("ErrImagePull", message.clone())
                } else {
                    (
                        "ImagePullBackOff",
                        format!("Back-off pulling image \"{image}\": ErrImagePull: {message}"),
                    )
                };
                slot.pull_failures += 1;
                self.set_waiting(idx, reason, Some(text.clone()));
                if reason == "ErrImagePull" {
                    self.log(format_args!("container {name}: {message}"));
                    self.event(
                        EventType::Warning,
                        "Failed",
                        &format!("Error: ErrImagePull: {message}"),
                    )
                    .await;
                } else {
                    self.event(EventType::Normal, "BackOff", &text).await;
                }
                return;
            }
        };
        self.slots[idx].view.image_id = format!("file://{}", binary.display());

        let pod = self.pod.clone();
        let api = self.api();
        let facts = self.facts(&pod);
        let spec = self.slots[idx].spec.clone();
        let env = match resolve(&spec, &facts, self.service_env(), &api).await {
            Ok(env) => env,
            Err(message) => {
                self.config_error(idx, message).await;
                return;
            }
        };
        let paths = match self.path_map(&spec, &env) {
            Ok(paths) => paths,
            Err(message) => {
                self.config_error(idx, message).await;
                return;
            }
        };
        // A (re)start counts from here: the previous instance becomes the last state.
        let slot = &mut self.slots[idx];
        if slot.instance > 0 {
            slot.view.restart_count += 1;
            if let State::Terminated(t) = &slot.view.state {
                slot.view.last = Some(t.clone());
            }
        }
        slot.instance += 1;
        slot.start_at = None;
        slot.stopping = false;
        let instance = slot.instance;
        let restart_count = slot.view.restart_count;
        let root = self.dir.join("containers").join(&name);
        let kubeconfig = self.dir.join("kubeconfig").join(&name);
        let log_file = self
            .log_dir
            .join(&name)
            .join(format!("{restart_count}.log"));
        let process = plan(LaunchInputs {
            container: &spec,
            binary: &binary,
            env,
            paths: &paths,
            root: &root,
            pod_name: &pod.name_any(),
            kubeconfig: &kubeconfig,
            apiserver: &shared.apiserver,
        })
        .and_then(|l| command(&l, &log_file))
        .and_then(|cmd| {
            Process::spawn(cmd, &shared.processes)
                .map_err(|e| format!("starting {}: {e}", binary.display()))
        });
        let slot = &mut self.slots[idx];
        let container_id = format!("ryzanstein-e2e://{}-{name}-{restart_count}", self.uid);
        slot.view.container_id = Some(container_id.clone());
        let process = match process {
            Ok(p) => p,
            Err(message) => {
                self.log(format_args!("container {name}: {message}"));
                self.event(EventType::Warning, "Failed", &format!("Error: {message}"))
                    .await;
                let exit = Exit {
                    exit_code: 128,
                    signal: None,
                    finished_at: Timestamp::now(),
                    pre_stop_error: None,
                    killed_after_grace: false,
                };
                self.slots[idx].view.state = State::Running {
                    started_at: Timestamp::now(),
                };
                self.exited(idx, exit, Some(("StartError", message))).await;
                return;
            }
        };
        let pid = process.pid();
        let started_at = Timestamp::now();
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let ip = IpAddr::V4(self.ip.expect("address before containers"));
        let http = shared.http.clone();
        let events = self.events_tx.clone();
        let container = spec.clone();
        self.tasks.spawn(async move {
            let exit = supervise(process, stop_rx, http, container, ip).await;
            let _ = events.send(Event::Exited {
                slot: idx,
                instance,
                exit,
            });
        });
        let slot = &mut self.slots[idx];
        slot.stop = Some(stop_tx);
        slot.running_since = Some(Instant::now());
        slot.view.state = State::Running { started_at };
        slot.view.started = spec.startup_probe.is_none();
        slot.view.ready = slot.view.started && spec.readiness_probe.is_none();
        let has_probes = spec.startup_probe.is_some()
            || spec.readiness_probe.is_some()
            || spec.liveness_probe.is_some();
        if has_probes {
            let events = self.events_tx.clone();
            let report = move |report: ProbeReport| {
                let _ = events.send(Event::Probe {
                    slot: idx,
                    instance,
                    report,
                });
            };
            let handle = self.tasks.spawn(super::probe::run(
                shared.http.clone(),
                spec.clone(),
                ip,
                Instant::now(),
                report,
            ));
            self.slots[idx].prober = Some(handle);
        }
        self.log(format_args!(
            "container {name} started (pid {pid}, {container_id})"
        ));
        self.event(
            EventType::Normal,
            "Started",
            &format!("Started container {name}"),
        )
        .await;
    }

    async fn config_error(&mut self, idx: usize, message: String) {
        let name = self.slots[idx].spec.name.clone();
        let slot = &mut self.slots[idx];
        let delay = slot.config_backoff.retry_delay();
        slot.start_at = Some(Instant::now() + delay);
        let changed =
            !matches!(&slot.view.state, State::Waiting { message: Some(m), .. } if *m == message);
        self.set_waiting(idx, "CreateContainerConfigError", Some(message.clone()));
        if changed {
            self.log(format_args!("container {name}: {message}"));
            self.event(EventType::Warning, "Failed", &format!("Error: {message}"))
                .await;
        }
    }

    fn set_waiting(&mut self, idx: usize, reason: &str, message: Option<String>) {
        let slot = &mut self.slots[idx];
        if let State::Terminated(t) = &slot.view.state {
            slot.view.last = Some(t.clone());
        }
        slot.view.state = State::Waiting {
            reason: reason.to_owned(),
            message,
        };
    }

    /// The container's mount paths and the host directories standing for them.
    fn path_map(&self, container: &Container, env: &Env) -> Result<PathMap, String> {
        let volumes = self.volumes.as_ref().expect("volumes before containers");
        let mut paths = PathMap::default();
        for mount in container.volume_mounts.iter().flatten() {
            let dir = volumes.dirs.get(&mount.name).ok_or_else(|| {
                format!(
                    "volumeMount {}: no volume of that name in the pod",
                    mount.name
                )
            })?;
            let sub = match (&mount.sub_path, &mount.sub_path_expr) {
                (Some(p), _) if !p.is_empty() => Some(p.clone()),
                (_, Some(e)) if !e.is_empty() => Some(env.expand(e)),
                _ => None,
            };
            let host = match sub {
                Some(sub) => {
                    if Path::new(&sub)
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                    {
                        return Err(format!(
                            "volumeMount {}: invalid subPath {sub:?}",
                            mount.name
                        ));
                    }
                    let host = dir.join(&sub);
                    if !host.exists() {
                        std::fs::create_dir_all(&host)
                            .map_err(|e| format!("creating subPath {}: {e}", host.display()))?;
                    }
                    host
                }
                None => dir.clone(),
            };
            paths.insert(&mount.mount_path, &host);
        }
        Ok(paths)
    }

    /// The `KUBERNETES_SERVICE_*` variables every container gets, pointing at the API server on
    /// loopback (the `kubernetes` Service's cluster IP is unreachable: there is no kube-proxy).
    fn service_env(&self) -> Env {
        let mut env = Env::default();
        let url = &self.node.shared.apiserver;
        let hostport = url.trim_start_matches("https://");
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "443"));
        env.set("KUBERNETES_SERVICE_HOST", host.to_owned());
        env.set("KUBERNETES_SERVICE_PORT", port.to_owned());
        env.set("KUBERNETES_SERVICE_PORT_HTTPS", port.to_owned());
        env.set("KUBERNETES_PORT", format!("tcp://{host}:{port}"));
        env
    }

    fn facts<'p>(&self, pod: &'p Pod) -> PodFacts<'p> {
        PodFacts {
            pod,
            pod_ip: self.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            host_ip: self.node.network.node_ip().to_string(),
        }
    }

    fn api(&self) -> PodApi {
        PodApi {
            client: self.node.client.clone(),
            namespace: self.pod.namespace().unwrap_or_default(),
            pod: self.pod.name_any(),
            uid: self.uid.clone(),
            service_account: self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Exited {
                slot,
                instance,
                exit,
            } => {
                if self.slots[slot].instance == instance {
                    self.exited(slot, exit, None).await;
                }
            }
            Event::Probe {
                slot,
                instance,
                report,
            } => {
                let current = &self.slots[slot];
                if current.instance != instance
                    || !matches!(current.view.state, State::Running { .. })
                {
                    return;
                }
                self.probed(slot, report).await;
            }
        }
    }

    async fn probed(&mut self, idx: usize, report: ProbeReport) {
        let name = self.slots[idx].spec.name.clone();
        if !report.healthy {
            let text = format!("{} probe failed: {}", report.kind.title(), report.message);
            self.log(format_args!("container {name}: {text}"));
            self.event(EventType::Warning, "Unhealthy", &text).await;
        }
        let spec = self.slots[idx].spec.clone();
        let slot = &mut self.slots[idx];
        match (report.kind, report.healthy) {
            (ProbeKind::Startup, true) => {
                slot.view.started = true;
                slot.view.ready = spec.readiness_probe.is_none();
            }
            (ProbeKind::Readiness, healthy) => {
                slot.view.ready = healthy && slot.view.started;
            }
            (ProbeKind::Startup | ProbeKind::Liveness, false) => {
                let probe = match report.kind {
                    ProbeKind::Startup => spec.startup_probe.as_ref(),
                    _ => spec.liveness_probe.as_ref(),
                };
                let grace = probe
                    .and_then(|p| p.termination_grace_period_seconds)
                    .or_else(|| {
                        self.pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds)
                    })
                    .unwrap_or(30);
                let what = report.kind.title().to_lowercase();
                self.event(
                    EventType::Normal,
                    "Killing",
                    &format!("Container {name} failed {what} probe, will be restarted"),
                )
                .await;
                self.stop_container(idx, Duration::from_secs(grace.max(0) as u64));
            }
            (ProbeKind::Liveness, true) => {}
        }
    }

    fn stop_container(&mut self, idx: usize, grace: Duration) {
        let slot = &mut self.slots[idx];
        if slot.stopping {
            return;
        }
        slot.stopping = true;
        slot.view.ready = false;
        if let Some(stop) = &slot.stop {
            let _ = stop.send(StopRequest {
                grace,
                pre_stop: true,
            });
        }
    }

    /// A container instance ended: record it, and restart it when the policy says so.
    async fn exited(&mut self, idx: usize, exit: Exit, start_error: Option<(&str, String)>) {
        let name = self.slots[idx].spec.name.clone();
        if let Some(prober) = self.slots[idx].prober.take() {
            prober.abort();
        }
        if let Some(e) = &exit.pre_stop_error {
            self.event(EventType::Warning, "FailedPreStopHook", e).await;
        }
        let restart_policy = self.restart_policy();
        let fallback_to_logs = self.slots[idx].spec.termination_message_policy.as_deref()
            == Some("FallbackToLogsOnError");
        let log_file = self.current_log(&name);
        let slot = &mut self.slots[idx];
        let started_at = match &slot.view.state {
            State::Running { started_at } => Some(*started_at),
            _ => None,
        };
        let (reason, message) = match start_error {
            Some((reason, message)) => (reason.to_owned(), Some(message)),
            None => {
                let reason = if exit.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                let message = (exit.exit_code != 0 && fallback_to_logs)
                    .then(|| log_tail(log_file.as_deref()))
                    .flatten();
                (reason.to_owned(), message)
            }
        };
        let terminated = Terminated {
            exit_code: exit.exit_code,
            signal: exit.signal,
            reason,
            message,
            started_at,
            finished_at: exit.finished_at,
            container_id: slot.view.container_id.clone(),
        };
        let ran_for = slot
            .running_since
            .take()
            .map_or(Duration::ZERO, |t| t.elapsed());
        slot.stop = None;
        slot.view.ready = false;
        slot.view.started = false;
        slot.view.state = State::Terminated(terminated.clone());
        let restart = !self.done
            && match restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => exit.exit_code != 0,
                _ => true,
            };
        self.log(format_args!(
            "container {name} exited with code {}{}{}",
            exit.exit_code,
            if exit.killed_after_grace {
                " (killed after the grace period)"
            } else {
                ""
            },
            if restart { ", restarting" } else { "" }
        ));
        if restart {
            let slot = &mut self.slots[idx];
            let delay = slot.restart_backoff.restart_delay(ran_for);
            slot.start_at = Some(Instant::now() + delay);
            if !delay.is_zero() {
                let message = format!(
                    "back-off {}s restarting failed container={name} pod={}_{}({})",
                    delay.as_secs(),
                    self.pod.name_any(),
                    self.pod.namespace().unwrap_or_default(),
                    self.uid
                );
                self.set_waiting(idx, "CrashLoopBackOff", Some(message.clone()));
                self.event(
                    EventType::Warning,
                    "BackOff",
                    &format!("Back-off restarting failed container {name}"),
                )
                .await;
            }
        } else {
            self.slots[idx].start_at = None;
        }
        let views: Vec<ContainerView> = self.slots.iter().map(|s| s.view.clone()).collect();
        if matches!(
            phase(&restart_policy, &views, false),
            "Succeeded" | "Failed"
        ) {
            self.done = true;
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
    async fn terminate(&mut self, in_api: bool) {
        let mut in_api = in_api;
        self.done = true;
        self.terminating = true;
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0) as u64;
        let grace = Duration::from_secs(grace);
        let running: Vec<usize> = (0..self.slots.len())
            .filter(|&i| matches!(self.slots[i].view.state, State::Running { .. }))
            .collect();
        if !running.is_empty() {
            self.log(format_args!(
                "stopping {} container(s), grace period {grace:?}",
                running.len()
            ));
        }
        for &idx in &running {
            let name = self.slots[idx].spec.name.clone();
            if in_api {
                self.event(
                    EventType::Normal,
                    "Killing",
                    &format!("Stopping container {name}"),
                )
                .await;
            }
            self.stop_container(idx, grace);
        }
        while self.running() > 0 {
            tokio::select! {
                Some(event) = self.events_rx.recv() => {
                    if let Event::Exited { .. } = event {
                        self.handle(event).await;
                        if in_api {
                            self.report().await;
                        }
                    }
                }
                changed = self.updates.changed() => {
                    let gone = changed.is_err()
                        || matches!(*self.updates.borrow_and_update(), PodUpdate::Gone);
                    if gone {
                        in_api = false;
                    }
                }
            }
        }
        if in_api {
            // Containers that never ran count as failed: the pod ends Failed unless every
            // container completed.
            self.report().await;
            let pods: Api<Pod> = Api::namespaced(
                self.node.client.clone(),
                &self.pod.namespace().unwrap_or_default(),
            );
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(&self.pod.name_any(), &params).await {
                Ok(_) => self.log(format_args!("deleted")),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => self.log(format_args!("deleting: {e}")),
            }
        }
        self.tasks.abort_all();
        if let Some(ip) = self.ip.take() {
            self.node.network.release(ip);
        }
        if !self.node.shared.keep_state {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

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

/// The newest `<n>.log` in a container's log directory.
pub fn latest_log(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// kubelet's FallbackToLogsOnError message: the last 80 lines, at most 2 KiB.
fn log_tail(path: Option<&Path>) -> Option<String> {
    let text = std::fs::read_to_string(path?).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    let start = (start..=tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(0);
    let tail = tail[start..].to_owned();
    (!tail.is_empty()).then_some(tail)
}

/// The API as the node sees it for one pod: its namespace's ConfigMaps and Secrets (the Node
/// authorizer allows those the pod references) and tokens for its service account.
struct PodApi {
    client: kube::Client,
    namespace: String,
    pod: String,
    uid: String,
    service_account: String,
}

fn api_error(what: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("getting {what}: {} ({})", status.message, status.code),
        e => format!("getting {what}: {e}"),
    }
}

impl Objects for PodApi {
    async fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String> {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("configmap \"{name}\""), e))
    }

    async fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("secret \"{name}\""), e))
    }
}

impl VolumeApi for PodApi {
    async fn token(
        &self,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<(String, Timestamp), String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_owned()]).unwrap_or_default(),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod.clone()),
                    uid: Some(self.uid.clone()),
                }),
            },
            ..TokenRequest::default()
        };
        let response = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace)
            .create_token_request(&self.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                api_error(
                    &format!(
                        "a token for service account {}/{}",
                        self.namespace, self.service_account
                    ),
                    e,
                )
            })?;
        let status = response
            .status
            .ok_or_else(|| "TokenRequest answered without a status".to_owned())?;
        Ok((status.token, status.expiration_timestamp.0))
    }
}
