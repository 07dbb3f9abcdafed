//! A container's end and the pod's: probe results, exits and restarts, and the deletion
//! sequence (stop every container, report, delete with grace 0, clean up).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tokio::time::Instant;

use super::logs::log_tail;
use super::{Event, PodUpdate, PodWorker};
use crate::node_agent::container::{Exit, StopRequest};
use crate::node_agent::probe::{ProbeKind, ProbeReport};
use crate::node_agent::status::{phase, ContainerView, State, Terminated};

impl PodWorker {
    pub(super) async fn handle(&mut self, event: Event) {
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

    pub(super) async fn probed(&mut self, idx: usize, report: ProbeReport) {
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
            (ProbeKind::Startup | ProbeKind::Liveness, false) if !slot.stopping => {
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
            (ProbeKind::Startup | ProbeKind::Liveness, _) => {}
        }
    }

    pub(super) fn stop_container(&mut self, idx: usize, grace: Duration) {
        let slot = &mut self.slots[idx];
        if slot.stopping {
            return;
        }
        // Readiness stays what the probe says until the container exits (a terminating pod's
        // endpoints report it as `serving`), as with a kubelet.
        slot.stopping = true;
        if let Some(stop) = &slot.stop {
            let _ = stop.send(StopRequest {
                grace,
                pre_stop: true,
            });
        }
    }

    /// A container instance ended: record it, and restart it when the policy says so.
    pub(super) async fn exited(
        &mut self,
        idx: usize,
        exit: Exit,
        start_error: Option<(&str, String)>,
    ) {
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

    pub(super) async fn terminate(&mut self, in_api: bool) {
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
                    self.handle(event).await;
                    if in_api {
                        self.report().await;
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
}
