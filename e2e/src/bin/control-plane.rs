//! `ryzanstein-control-plane start|stop|status <state-dir>`: the e2e control plane for people.
//!
//! `start` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback,
//! waits until they are healthy, prints how to use the admin kubeconfig and exits, leaving them
//! running. `stop` ends them and removes the state directory. `status` shows each process and
//! its health endpoint; it exits non-zero unless all are healthy.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use ryzanstein_e2e::control_plane::{self, Binaries, ControlPlane, Options};

const USAGE: &str = "usage: ryzanstein-control-plane start|stop|status <state-dir>";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, dir] = args.as_slice() else {
        bail!("{USAGE}")
    };
    let dir = PathBuf::from(dir);
    match command.as_str() {
        "start" => {
            let options = Options {
                state_dir: Some(dir),
                detached: true,
                ..Options::default()
            };
            eprintln!(
                "starting Kubernetes {} (etcd {}) from {}",
                Binaries::kubernetes_version(),
                Binaries::etcd_version(),
                Binaries::default_dir().display()
            );
            let cp = ControlPlane::start(options)
                .await
                .context("starting the control plane")?;
            let ready_in = cp.ready_in();
            let kubeconfig = cp.kubeconfig().to_path_buf();
            let endpoints = cp.endpoints().clone();
            let dir = cp.detach();
            println!("control plane ready in {:.1}s", ready_in.as_secs_f64());
            println!("  apiserver   {}", endpoints.apiserver);
            println!("  etcd        {}", endpoints.etcd);
            println!("  logs        {}/logs/", dir.display());
            println!("  export KUBECONFIG={}", kubeconfig.display());
            println!(
                "stop it with: scripts/k8s-control-plane.sh stop {}",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        "stop" => {
            control_plane::stop_detached(&dir)
                .with_context(|| format!("stopping {}", dir.display()))?;
            println!("stopped; removed {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        "status" => {
            let statuses = control_plane::status_detached(&dir).await?;
            let mut all_healthy = true;
            for s in &statuses {
                all_healthy &= s.running && s.healthy;
                let state = if s.running { "running" } else { "gone" };
                println!("{:<24} pid {:<8} {:<8} {}", s.name, s.pid, state, s.health);
            }
            Ok(if all_healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        _ => bail!("{USAGE}"),
    }
}
