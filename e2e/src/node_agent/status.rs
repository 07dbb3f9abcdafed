//! Pod status as a kubelet reports it, computed from the agent's view of the pod's containers:
//! the phase (kubelet's rules), the conditions (PodReadyToStartContainers, Initialized,
//! ContainersReady, Ready; PodScheduled is the scheduler's), addresses, start time and one
//! container status per container in spec order.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A finished container instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

/// What the status needs to know about one container.
#[derive(Clone, Debug)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

/// The pod phase by kubelet's rules. `terminal`: the pod is being deleted and its containers
/// will not run again, so it ends Succeeded or Failed whatever its restart policy.
pub fn phase(restart_policy: &str, containers: &[ContainerView], terminal: bool) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => match &c.last {
                Some(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            },
        }
    }
    if terminal && running == 0 {
        return if waiting == 0 && stopped == succeeded {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    match restart_policy {
        "Always" => "Running",
        _ if stopped == succeeded => "Succeeded",
        "Never" => "Failed",
        _ => "Running", // OnFailure, restarting the failed ones
    }
}

/// Transition times of the conditions, kept across reports.
#[derive(Clone, Debug, Default)]
pub struct Transitions {
    seen: BTreeMap<String, (String, Timestamp)>,
}

impl Transitions {
    fn condition(
        &mut self,
        type_: &str,
        ok: bool,
        reason: Option<&str>,
        message: Option<String>,
        now: Timestamp,
    ) -> PodCondition {
        let status = if ok { "True" } else { "False" };
        let entry = self
            .seen
            .entry(type_.to_owned())
            .or_insert_with(|| (status.to_owned(), now));
        if entry.0 != status {
            *entry = (status.to_owned(), now);
        }
        PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.map(str::to_owned),
            message,
            last_transition_time: Some(Time(entry.1)),
            last_probe_time: None,
            observed_generation: None,
        }
    }
}

/// Everything the pod's status is made of.
#[derive(Clone, Debug)]
pub struct PodView<'a> {
    pub phase: &'static str,
    pub sandbox_ready: bool,
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Ipv4Addr,
    pub start_time: Timestamp,
    pub containers: &'a [ContainerView],
}

pub fn pod_status(view: &PodView<'_>, transitions: &mut Transitions, now: Timestamp) -> PodStatus {
    let unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let completed = matches!(view.phase, "Succeeded" | "Failed");
    let (reason, message) = if completed {
        (Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let all_ready = unready.is_empty() && !completed;
    let conditions = vec![
        transitions.condition(
            "PodReadyToStartContainers",
            view.sandbox_ready && !completed,
            None,
            None,
            now,
        ),
        transitions.condition("Initialized", true, None, None, now),
        transitions.condition("ContainersReady", all_ready, reason, message.clone(), now),
        transitions.condition("Ready", all_ready, reason, message, now),
    ];
    let pod_ip = view.pod_ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(view.phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: view.host_ip.to_string(),
        }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(Time(view.start_time)),
        container_statuses: Some(view.containers.iter().map(container_status).collect()),
        ..PodStatus::default()
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state(&c.state)),
        last_state: Some(c.last.as_ref().map_or_else(ContainerState::default, |t| {
            state(&State::Terminated(t.clone()))
        })),
        ..ContainerStatus::default()
    }
}

fn state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..ContainerState::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: t.signal,
                reason: Some(t.reason.clone()),
                message: t.message.clone(),
                started_at: t.started_at.map(Time),
                finished_at: Some(Time(t.finished_at)),
                container_id: t.container_id.clone(),
            }),
            ..ContainerState::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: State, last: Option<i32>) -> ContainerView {
        let t = |code| Terminated {
            exit_code: code,
            signal: None,
            reason: "Error".into(),
            message: None,
            started_at: None,
            finished_at: Timestamp::UNIX_EPOCH,
            container_id: None,
        };
        ContainerView {
            name: "c".into(),
            image: "i".into(),
            image_id: String::new(),
            container_id: None,
            state,
            last: last.map(t),
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    fn waiting() -> State {
        State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        }
    }

    fn running() -> State {
        State::Running {
            started_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn exited(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: None,
            started_at: None,
            finished_at: Timestamp::UNIX_EPOCH,
            container_id: None,
        })
    }

    #[test]
    fn phases_follow_kubelet() {
        assert_eq!(phase("Always", &[c(waiting(), None)], false), "Pending");
        assert_eq!(
            phase("Always", &[c(running(), None), c(waiting(), None)], false),
            "Pending"
        );
        assert_eq!(phase("Always", &[c(running(), None)], false), "Running");
        // Crash-looping counts as stopped, not waiting.
        assert_eq!(phase("Always", &[c(waiting(), Some(1))], false), "Running");
        assert_eq!(phase("Always", &[c(exited(0), None)], false), "Running");
        assert_eq!(phase("Never", &[c(exited(0), None)], false), "Succeeded");
        assert_eq!(phase("Never", &[c(exited(2), None)], false), "Failed");
        assert_eq!(phase("OnFailure", &[c(exited(2), None)], false), "Running");
        assert_eq!(
            phase("OnFailure", &[c(exited(0), None)], false),
            "Succeeded"
        );
        // Deleted: terminal whatever the policy.
        assert_eq!(phase("Always", &[c(exited(0), None)], true), "Succeeded");
        assert_eq!(phase("Always", &[c(exited(137), None)], true), "Failed");
        assert_eq!(phase("Always", &[c(waiting(), None)], true), "Failed");
    }

    #[test]
    fn ready_conditions_name_the_unready_containers_and_keep_transition_times() {
        let mut t = Transitions::default();
        let mut a = c(running(), None);
        a.name = "a".into();
        a.ready = true;
        let mut b = c(running(), None);
        b.name = "b".into();
        let containers = vec![a, b];
        let view = PodView {
            phase: "Running",
            sandbox_ready: true,
            pod_ip: Some(Ipv4Addr::new(127, 9, 1, 2)),
            host_ip: Ipv4Addr::new(127, 9, 1, 1),
            start_time: Timestamp::UNIX_EPOCH,
            containers: &containers,
        };
        let t0 = Timestamp::from_second(100).unwrap();
        let s = pod_status(&view, &mut t, t0);
        let ready = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(s.pod_ips.unwrap()[0].ip, "127.9.1.2");

        let mut containers = containers.clone();
        containers[1].ready = true;
        let view = PodView {
            containers: &containers,
            ..view
        };
        let t1 = Timestamp::from_second(200).unwrap();
        let s = pod_status(&view, &mut t, t1);
        let get = |ty: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == ty)
                .unwrap()
                .clone()
        };
        assert_eq!(get("Ready").status, "True");
        assert_eq!(get("Ready").last_transition_time, Some(Time(t1)));
        assert_eq!(get("Initialized").last_transition_time, Some(Time(t0)));
    }
}
