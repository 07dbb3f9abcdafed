//! One running container: waits for its process to exit, or stops it on request the way a
//! kubelet does — the preStop hook (`sleep`: wait; `httpGet`: call it; `exec`: not supported,
//! reported), then SIGTERM, then SIGKILL to the whole container once the grace period (counted
//! from the stop request, preStop included) is over; at least 2 s pass between SIGTERM and
//! SIGKILL, as in kubelet. Also the restart back-off.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::probe::http_get;
use super::process::{exit_code, Process};

/// kubelet's minimum time between SIGTERM and SIGKILL.
pub const MINIMUM_GRACE: Duration = Duration::from_secs(2);

/// Stop the container within `grace`.
#[derive(Clone, Debug)]
pub struct StopRequest {
    pub grace: Duration,
    /// Run the container's preStop hook first.
    pub pre_stop: bool,
}

/// How a container instance ended.
#[derive(Clone, Debug)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub finished_at: Timestamp,
    /// A preStop hook that failed, for an event.
    pub pre_stop_error: Option<String>,
    /// SIGKILL was needed after the grace period.
    pub killed_after_grace: bool,
}

/// Supervise `process` until it exits or a stop request has been carried out.
pub async fn supervise(
    mut process: Process,
    mut stop: mpsc::UnboundedReceiver<StopRequest>,
    http: reqwest::Client,
    container: Container,
    pod_ip: IpAddr,
) -> Exit {
    let exit = |status: std::io::Result<std::process::ExitStatus>| {
        let (exit_code, signal) = match status {
            Ok(s) => exit_code(s),
            Err(_) => (-1, None),
        };
        Exit {
            exit_code,
            signal,
            finished_at: Timestamp::now(),
            pre_stop_error: None,
            killed_after_grace: false,
        }
    };
    let request = tokio::select! {
        status = process.wait() => return exit(status),
        Some(request) = stop.recv() => request,
    };
    let deadline = Instant::now() + request.grace;
    let mut pre_stop_error = None;
    let hook = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.clone())
        .filter(|_| request.pre_stop);
    if let Some(hook) = hook {
        tokio::select! {
            status = process.wait() => return exit(status),
            result = tokio::time::timeout_at(deadline, pre_stop(&http, &hook, &container, pod_ip, deadline)) => {
                pre_stop_error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("PreStop hook did not finish within the {:?} grace period", request.grace)),
                };
            }
        }
    }
    process.signal(libc::SIGTERM);
    let kill_at = deadline.max(Instant::now() + MINIMUM_GRACE);
    let (status, killed_after_grace) = tokio::select! {
        status = process.wait() => (status, false),
        _ = tokio::time::sleep_until(kill_at) => {
            process.kill_group();
            (process.wait().await, true)
        }
    };
    Exit {
        pre_stop_error,
        killed_after_grace,
        ..exit(status)
    }
}

async fn pre_stop(
    http: &reqwest::Client,
    hook: &LifecycleHandler,
    container: &Container,
    pod_ip: IpAddr,
    deadline: Instant,
) -> Result<(), String> {
    if let Some(sleep) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        Ok(())
    } else if let Some(action) = &hook.http_get {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let code = http_get(http, action, container, pod_ip, timeout).await?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("PreStop httpGet hook answered HTTP {code}"))
        }
    } else if hook.exec.is_some() {
        Err("exec preStop hooks are not supported by the e2e node agent (no container to exec into); skipped".into())
    } else {
        Err("preStop hook has no handler".into())
    }
}

/// Restart and image-pull back-off: kubelet's doubling delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// A container that ran this long starts over from `initial`.
    pub reset_after: Duration,
}

impl BackoffPolicy {
    /// kubelet's: 10 s doubling to 5 min, reset after 10 min of running.
    pub const KUBELET: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(300),
        reset_after: Duration::from_secs(600),
    };
}

/// The delays of one container.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    next: Option<Duration>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff { policy, next: None }
    }

    /// The delay before the next restart: none for the first, then `initial`, doubling up to
    /// `max` (kubelet restarts a container at once the first time it exits, and backs off
    /// from then on).
    pub fn restart_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.reset_after {
            self.next = None;
        }
        match self.next {
            None => {
                self.next = Some(self.policy.initial);
                Duration::ZERO
            }
            Some(delay) => {
                self.next = Some((delay * 2).min(self.policy.max));
                delay
            }
        }
    }

    /// The delay before retrying a failed pull: `initial`, doubling up to `max`.
    pub fn retry_delay(&mut self) -> Duration {
        let delay = self.next.unwrap_or(self.policy.initial);
        self.next = Some((delay * 2).min(self.policy.max));
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(40),
        reset_after: Duration::from_secs(600),
    };

    #[test]
    fn restarts_are_immediate_first_then_doubling_then_reset() {
        let mut b = Backoff::new(POLICY);
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..5).map(|_| b.restart_delay(short).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 40]);
        assert_eq!(b.restart_delay(Duration::from_secs(600)), Duration::ZERO);
        assert_eq!(b.restart_delay(short), Duration::from_secs(10));
    }

    #[test]
    fn pull_retries_double() {
        let mut b = Backoff::new(POLICY);
        let delays: Vec<u64> = (0..4).map(|_| b.retry_delay().as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 40]);
    }

    fn sh(script: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[tokio::test]
    async fn sigterm_then_sigkill_after_the_grace_period() {
        let table = super::super::process::ProcessTable::default();
        let http = super::super::probe::http_client();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();

        // Exits on SIGTERM.
        let p = Process::spawn(sh("exec sleep 30"), &table).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(supervise(p, rx, http.clone(), Container::default(), ip));
        tx.send(StopRequest {
            grace: Duration::from_secs(5),
            pre_stop: true,
        })
        .unwrap();
        let exit = task.await.unwrap();
        assert_eq!(
            (exit.exit_code, exit.signal, exit.killed_after_grace),
            (143, Some(15), false)
        );

        // Ignores SIGTERM: killed once the grace period (at least 2 s) is over, preStop sleep
        // included.
        let p = Process::spawn(sh("trap '' TERM; sleep 30 & wait; sleep 30"), &table).unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "lifecycle": { "preStop": { "sleep": { "seconds": 1 } } }
        }))
        .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        let task = tokio::spawn(supervise(p, rx, http, c, ip));
        tx.send(StopRequest {
            grace: Duration::from_secs(3),
            pre_stop: true,
        })
        .unwrap();
        let exit = task.await.unwrap();
        let took = started.elapsed();
        assert_eq!((exit.exit_code, exit.killed_after_grace), (137, true));
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_secs(6),
            "{took:?}"
        );
        assert!(table.pids().is_empty());
    }
}
