//! Container processes: spawned in their own process group, tied to this process's life
//! (`PR_SET_PDEATHSIG`, through the control plane's spawner thread), awaited through a pidfd,
//! and recorded in a [`ProcessTable`] so the agent can kill whatever is left when it stops.
//!
//! A container runtime sends SIGTERM to a container's first process and SIGKILL to everything in
//! the container; here the container is the process group the first process leads. When the
//! first process exits, the rest of its group is killed (as a runtime tears down the container's
//! PID namespace) before it is reaped, while the zombie still holds the group's id.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::control_plane::spawn_supervised;

/// Every container process the agent has started and not yet reaped, by pid. Reaping and the
/// agent's final kill both happen under its lock, so a pid is never signalled after it may have
/// been reused.
#[derive(Clone, Debug, Default)]
pub struct ProcessTable {
    pids: Arc<Mutex<BTreeSet<u32>>>,
}

impl ProcessTable {
    /// The pids of the running container processes.
    pub fn pids(&self) -> Vec<u32> {
        self.lock().iter().copied().collect()
    }

    /// SIGKILL every process group and reap every first process.
    pub fn kill_all(&self) {
        let mut pids = self.lock();
        for &pid in pids.iter() {
            // SAFETY: plain syscalls on pids this table owns; none is reaped yet (see above).
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        for &pid in pids.iter() {
            let mut status = 0;
            // SAFETY: waits for a child of this process that was just killed.
            unsafe {
                libc::waitpid(pid as libc::pid_t, &mut status, 0);
            }
        }
        pids.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One running container process.
#[derive(Debug)]
pub struct Process {
    child: Child,
    pidfd: AsyncFd<OwnedFd>,
    table: ProcessTable,
    status: Option<ExitStatus>,
}

impl Process {
    /// Start `cmd` as the leader of a new process group.
    pub fn spawn(mut cmd: Command, table: &ProcessTable) -> std::io::Result<Process> {
        cmd.process_group(0);
        let mut child = spawn_supervised(cmd)?;
        let pid = child.id();
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: the child is not reaped yet, so its group id is ours.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        table.lock().insert(pid);
        // SAFETY: the OwnedFd stays open, and keeps its descriptor, for the AsyncFd's life.
        let registered = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) };
        let pidfd = match registered.map_err(std::io::Error::from) {
            Ok(fd) => fd,
            Err(e) => {
                let mut pids = table.lock();
                // SAFETY: as above.
                unsafe {
                    libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                pids.remove(&pid);
                return Err(e);
            }
        };
        Ok(Process {
            child,
            pidfd,
            table: table.clone(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until the process exits; kill what is left of its group; reap it. Cancel-safe.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let _ready = self.pidfd.readable().await?;
        self.reap()
    }

    fn reap(&mut self) -> std::io::Result<ExitStatus> {
        let mut pids = self.table.lock();
        let pid = self.child.id();
        if !pids.contains(&pid) {
            // The agent stopped and reaped it already.
            let status = ExitStatus::from_raw(libc::SIGKILL);
            self.status = Some(status);
            return Ok(status);
        }
        // The first process is a zombie (or running, when called after a failed pidfd_open):
        // its group id is still taken, so this reaches only the container's processes.
        // SAFETY: signals the group this process leads; the leader is not reaped yet.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
        let status = self.child.wait()?;
        pids.remove(&pid);
        self.status = Some(status);
        Ok(status)
    }

    /// Send `signal` to the first process (not its group), unless it has been reaped.
    pub fn signal(&self, signal: i32) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: pidfd_send_signal on our own pidfd; a no-op error once the process is gone.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }

    /// SIGKILL the whole process group, unless the leader has been reaped.
    pub fn kill_group(&self) {
        if self.status.is_some() {
            return;
        }
        let pids = self.table.lock();
        let pid = self.child.id();
        if pids.contains(&pid) {
            // SAFETY: the leader is not reaped (it is in the table), so the group id is ours.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Process {
    /// A container task that is cancelled (its pod worker stopped) leaves nothing running.
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill_group();
            let _ = self.reap();
        }
    }
}

/// Exit code as a container runtime reports it: the code, or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (-1, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_signals_and_kills_the_group() {
        let table = ProcessTable::default();
        let mut cmd = Command::new("sh");
        // A child of the container's first process that would outlive it.
        cmd.args(["-c", "sleep 30 & echo $! > \"$1\"; exec sleep 30", "sh"]);
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        cmd.arg(&pidfile);
        let mut p = Process::spawn(cmd, &table).unwrap();
        assert_eq!(table.pids(), vec![p.pid()]);
        let grandchild: i32 = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile) {
                if let Ok(pid) = text.trim().parse() {
                    break pid;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        p.signal(libc::SIGTERM);
        let status = p.wait().await.unwrap();
        assert_eq!(exit_code(status), (143, Some(libc::SIGTERM)));
        assert!(table.pids().is_empty());
        // The group went with it.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "grandchild still runs: {stat}"
        );
    }

    #[tokio::test]
    async fn exit_codes_and_kill_all() {
        let table = ProcessTable::default();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let mut p = Process::spawn(cmd, &table).unwrap();
        assert_eq!(exit_code(p.wait().await.unwrap()), (3, None));

        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = Process::spawn(cmd, &table).unwrap();
        let pid = p.pid();
        table.kill_all();
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(p);
    }
}
