//! A control plane that outlives the process that started it (for people, through
//! `scripts/k8s-control-plane.sh`): its `state.json`, status and stop.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::process::http_client;
use super::Endpoints;
use crate::{Error, Result};

/// What `state.json` in the state directory records, for `status` and `stop` from another process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateFile {
    pub endpoints: Endpoints,
    pub kubeconfig: PathBuf,
    pub ca: PathBuf,
    /// (component, pid), in start order.
    pub pids: Vec<(String, u32)>,
}

/// Read `state.json` from a state directory written by a (detached) start.
pub fn read_state(state_dir: &Path) -> Result<StateFile> {
    let path = state_dir.join("state.json");
    let text = fs::read_to_string(&path).map_err(|e| Error::State {
        dir: state_dir.to_path_buf(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::State {
        dir: state_dir.to_path_buf(),
        reason: format!("bad state.json: {e}"),
    })
}

/// One component as [`status_detached`] sees it.
#[derive(Debug, Clone)]
pub struct ComponentStatus {
    pub name: String,
    pub pid: u32,
    pub running: bool,
    /// The health endpoint's answer, e.g. `200 OK: ok`, or the connection error.
    pub health: String,
    pub healthy: bool,
}

/// The processes and health endpoints of a detached control plane.
pub async fn status_detached(state_dir: &Path) -> Result<Vec<ComponentStatus>> {
    let state = read_state(state_dir)?;
    let http = http_client(&state.ca)?;
    let mut out = Vec::new();
    for (name, pid) in &state.pids {
        let url = match name.as_str() {
            "etcd" => format!("{}/health", state.endpoints.etcd),
            "kube-apiserver" => format!("{}/readyz", state.endpoints.apiserver),
            "kube-controller-manager" => format!("{}/healthz", state.endpoints.controller_manager),
            _ => format!("{}/healthz", state.endpoints.scheduler),
        };
        let (health, healthy) = match http.get(&url).timeout(Duration::from_secs(2)).send().await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                (format!("{status}: {}", body.trim()), status.is_success())
            }
            Err(e) => (e.to_string(), false),
        };
        out.push(ComponentStatus {
            name: name.clone(),
            pid: *pid,
            running: is_ours(*pid, name),
            health,
            healthy,
        });
    }
    Ok(out)
}

/// Stop the processes of a detached control plane and remove its state directory.
pub fn stop_detached(state_dir: &Path) -> Result<()> {
    let state = read_state(state_dir)?;
    let ours: Vec<u32> = state
        .pids
        .iter()
        .rev()
        .filter(|(name, pid)| is_ours(*pid, name))
        .map(|(_, pid)| *pid)
        .collect();
    for &pid in &ours {
        signal(pid, libc::SIGKILL);
    }
    // They are not our children: wait until their new parent has reaped them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ours.iter().any(|&pid| alive(pid)) {
        if Instant::now() >= deadline {
            return Err(Error::State {
                dir: state_dir.to_path_buf(),
                reason: format!("processes {ours:?} still alive 10 s after SIGKILL"),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::remove_dir_all(state_dir)
        .map_err(|e| Error::io(format!("removing {}", state_dir.display()), e))
}

/// Whether `pid` is alive and still runs the component `name` (not a recycled pid).
fn is_ours(pid: u32, name: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    alive(pid) && Path::new(OsStr::from_bytes(argv0)).ends_with(name)
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: "pid (comm) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub(super) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}
