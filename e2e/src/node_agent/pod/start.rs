//! Starting a container: "pull" the image, resolve the environment, map the mounts, spawn the
//! process, its supervisor and its prober.

use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::api::PodApi;
use super::{Event, PodWorker};
use crate::node_agent::container::{supervise, Exit};
use crate::node_agent::env::{resolve, Env, PodFacts};
use crate::node_agent::launch::{command, plan, LaunchInputs};
use crate::node_agent::probe::{self, ProbeReport};
use crate::node_agent::process::Process;
use crate::node_agent::rewrite::PathMap;
use crate::node_agent::status::State;

impl PodWorker {
    pub(super) async fn start(&mut self, idx: usize) {
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
            let handle = self.tasks.spawn(probe::run(
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

    pub(super) async fn config_error(&mut self, idx: usize, message: String) {
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

    pub(super) fn set_waiting(&mut self, idx: usize, reason: &str, message: Option<String>) {
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
    pub(super) fn path_map(&self, container: &Container, env: &Env) -> Result<PathMap, String> {
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
    pub(super) fn service_env(&self) -> Env {
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

    pub(super) fn facts<'p>(&self, pod: &'p Pod) -> PodFacts<'p> {
        PodFacts {
            pod,
            pod_ip: self.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            host_ip: self.node.network.node_ip().to_string(),
        }
    }

    pub(super) fn api(&self) -> PodApi {
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
}
