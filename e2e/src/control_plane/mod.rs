//! A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler, built by `scripts/k8s-build.sh` at the versions pinned in `e2e/k8s/`.
//!
//! [`ControlPlane::start`] picks free loopback ports, generates certificates ([`crate::pki`]),
//! starts the four processes, waits until etcd's `/health`, the API server's `/readyz` and the
//! scheduler's and controller-manager's `/healthz` answer `ok`, and writes an admin kubeconfig
//! into the state directory. Dropping the [`ControlPlane`] stops every process and removes the
//! state directory (set `RYZANSTEIN_E2E_KEEP=1` to keep it, with the components' logs).
//!
//! Processes started by a test are killed by the kernel if the test binary dies without running
//! `Drop` (`PR_SET_PDEATHSIG`), so a crashed or timed-out test leaves nothing listening.
//! [`ControlPlane::detach`] instead leaves them running for a person (the
//! `ryzanstein-control-plane` binary, `scripts/k8s-control-plane.sh`); [`stop_detached`] ends them.

mod binaries;
mod detached;
mod process;

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use binaries::Binaries;
pub use detached::{read_state, status_detached, stop_detached, ComponentStatus, StateFile};
pub(crate) use process::spawn_supervised;
use process::{free_ports, http_client, log_tail};

use crate::pki::{ClientIdentity, Pki};
use crate::{ComponentFailure, Error, Result};

/// The Service CIDR; its first address is the `kubernetes` Service's cluster IP. No traffic is
/// ever sent to it: nothing on this machine routes Service IPs.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The service-account token issuer (and default audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where certificates, kubeconfigs, etcd data and logs go. Created if missing; must be
    /// empty if it exists. `None`: a new directory under the system temp dir.
    pub state_dir: Option<PathBuf>,
    /// `None`: [`Binaries::locate`].
    pub binaries: Option<Binaries>,
    /// How long to wait for all components to be healthy.
    pub ready_timeout: Duration,
    /// Start the processes in their own process group and without the parent-death signal, so
    /// that they outlive this process once [`ControlPlane::detach`]ed.
    pub detached: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            state_dir: None,
            binaries: None,
            ready_timeout: Duration::from_secs(120),
            detached: false,
        }
    }
}

/// The URLs of the running components (all on 127.0.0.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoints {
    /// etcd client URL (plain HTTP, loopback only).
    pub etcd: String,
    /// API server (HTTPS).
    pub apiserver: String,
    /// kube-controller-manager secure port (HTTPS).
    pub controller_manager: String,
    /// kube-scheduler secure port (HTTPS).
    pub scheduler: String,
}

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running control plane; dropping it stops every process and removes the state directory.
pub struct ControlPlane {
    state_dir: PathBuf,
    kubeconfig: PathBuf,
    endpoints: Endpoints,
    pki: Pki,
    processes: Vec<Process>,
    ready_in: Duration,
    /// Remove the state directory on drop.
    remove_state_dir: bool,
    /// [`ControlPlane::detach`]ed: drop leaves everything as it is.
    detached: bool,
}

impl ControlPlane {
    /// Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler and wait until all
    /// are healthy. On error every process already started is stopped again.
    pub async fn start(options: Options) -> Result<ControlPlane> {
        let started = Instant::now();
        let binaries = match options.binaries {
            Some(b) => b,
            None => Binaries::locate()?,
        };
        let state_dir = prepare_state_dir(options.state_dir)?;
        let keep = std::env::var("RYZANSTEIN_E2E_KEEP").as_deref() == Ok("1");
        let mut cp = ControlPlane {
            kubeconfig: state_dir.join("kubeconfig"),
            endpoints: Endpoints {
                etcd: String::new(),
                apiserver: String::new(),
                controller_manager: String::new(),
                scheduler: String::new(),
            },
            pki: Pki::generate(&state_dir.join("pki"), IpAddr::V4(SERVICE_IP))?,
            processes: Vec::new(),
            ready_in: Duration::ZERO,
            remove_state_dir: !keep,
            detached: false,
            state_dir,
        };
        cp.launch(&binaries, options.detached, started + options.ready_timeout)
            .await?;
        cp.ready_in = started.elapsed();
        Ok(cp)
    }

    async fn launch(&mut self, bins: &Binaries, detached: bool, deadline: Instant) -> Result<()> {
        let [etcd_port, etcd_peer_port, apiserver_port, cm_port, scheduler_port] = free_ports()?;
        let loopback = "127.0.0.1";
        self.endpoints = Endpoints {
            etcd: format!("http://{loopback}:{etcd_port}"),
            apiserver: format!("https://{loopback}:{apiserver_port}"),
            controller_manager: format!("https://{loopback}:{cm_port}"),
            scheduler: format!("https://{loopback}:{scheduler_port}"),
        };
        let dir = self.state_dir.clone();
        fs::create_dir_all(dir.join("logs")).map_err(|e| Error::io("creating logs/", e))?;
        let kubeconfig_for = |who: ClientIdentity| -> Result<PathBuf> {
            let path = if who == ClientIdentity::Admin {
                dir.join("kubeconfig")
            } else {
                dir.join(format!("{}.kubeconfig", who.file_stem()))
            };
            let text = self.pki.kubeconfig(who, &self.endpoints.apiserver);
            fs::write(&path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            Ok(path)
        };
        let admin_kubeconfig = kubeconfig_for(ClientIdentity::Admin)?;
        let scheduler_kubeconfig = kubeconfig_for(ClientIdentity::Scheduler)?;
        let cm_kubeconfig = kubeconfig_for(ClientIdentity::ControllerManager)?;
        debug_assert_eq!(admin_kubeconfig, self.kubeconfig);
        let pki = self.pki.clone();
        let p = |path: &Path| path.to_string_lossy().into_owned();
        let http = http_client(&pki.ca.cert)?;

        // etcd: one member, loopback client and peer URLs, no fsync (the data is thrown away).
        let peer = format!("http://{loopback}:{etcd_peer_port}");
        let etcd_args = vec![
            "--name=e2e".to_string(),
            format!("--data-dir={}", p(&dir.join("etcd"))),
            format!("--listen-client-urls={}", self.endpoints.etcd),
            format!("--advertise-client-urls={}", self.endpoints.etcd),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=e2e={peer}"),
            "--initial-cluster-state=new".to_string(),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        self.spawn("etcd", &bins.etcd, &etcd_args, detached)?;
        let url = format!("{}/health", self.endpoints.etcd);
        self.wait_healthy(
            "etcd",
            &http,
            &url,
            |body| body.contains("\"health\":\"true\""),
            deadline,
        )
        .await?;

        let apiserver_args = vec![
            format!("--etcd-servers={}", self.endpoints.etcd),
            format!("--bind-address={loopback}"),
            format!("--advertise-address={loopback}"),
            format!("--secure-port={apiserver_port}"),
            format!("--tls-cert-file={}", p(&pki.apiserver.cert)),
            format!("--tls-private-key-file={}", p(&pki.apiserver.key)),
            format!("--client-ca-file={}", p(&pki.ca.cert)),
            "--authorization-mode=Node,RBAC".to_string(),
            "--enable-admission-plugins=NodeRestriction".to_string(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", p(&pki.service_account_pub)),
            format!(
                "--service-account-signing-key-file={}",
                p(&pki.service_account_key)
            ),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".to_string(),
            "--profiling=false".to_string(),
        ];
        self.spawn(
            "kube-apiserver",
            &bins.kube_apiserver,
            &apiserver_args,
            detached,
        )?;
        let url = format!("{}/readyz", self.endpoints.apiserver);
        self.wait_healthy(
            "kube-apiserver",
            &http,
            &url,
            |body| body.trim() == "ok",
            deadline,
        )
        .await?;

        // Both secure ports serve our CA's certificates; /healthz needs no credentials there.
        let common = |kubeconfig: &Path, port: u16, serving: &crate::pki::CertFiles| {
            vec![
                format!("--kubeconfig={}", p(kubeconfig)),
                format!("--authentication-kubeconfig={}", p(kubeconfig)),
                format!("--authorization-kubeconfig={}", p(kubeconfig)),
                format!("--bind-address={loopback}"),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={}", p(&serving.cert)),
                format!("--tls-private-key-file={}", p(&serving.key)),
                "--leader-elect=false".to_string(),
                "--profiling=false".to_string(),
            ]
        };
        let mut cm_args = common(&cm_kubeconfig, cm_port, &pki.controller_manager_serving);
        cm_args.extend([
            // Every controller a real cluster runs by default, deployment, replicaset,
            // statefulset, endpointslice, garbagecollector, namespace, serviceaccount(-token),
            // disruption, root-ca-cert-publisher and nodelifecycle among them.
            "--controllers=*".to_string(),
            "--cluster-name=ryzanstein-e2e".to_string(),
            "--use-service-account-credentials=true".to_string(),
            format!(
                "--service-account-private-key-file={}",
                p(&pki.service_account_key)
            ),
            format!("--root-ca-file={}", p(&pki.ca.cert)),
            format!("--cluster-signing-cert-file={}", p(&pki.ca.cert)),
            format!("--cluster-signing-key-file={}", p(&pki.ca.key)),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        ]);
        self.spawn(
            "kube-controller-manager",
            &bins.kube_controller_manager,
            &cm_args,
            detached,
        )?;
        let scheduler_args = common(
            &scheduler_kubeconfig,
            scheduler_port,
            &pki.scheduler_serving,
        );
        self.spawn(
            "kube-scheduler",
            &bins.kube_scheduler,
            &scheduler_args,
            detached,
        )?;

        let url = format!("{}/healthz", self.endpoints.controller_manager);
        self.wait_healthy(
            "kube-controller-manager",
            &http,
            &url,
            |b| b.trim() == "ok",
            deadline,
        )
        .await?;
        let url = format!("{}/healthz", self.endpoints.scheduler);
        self.wait_healthy(
            "kube-scheduler",
            &http,
            &url,
            |b| b.trim() == "ok",
            deadline,
        )
        .await?;

        self.write_state_file()
    }

    fn spawn(
        &mut self,
        name: &'static str,
        binary: &Path,
        args: &[String],
        detached: bool,
    ) -> Result<()> {
        let log = self.state_dir.join("logs").join(format!("{name}.log"));
        let out =
            File::create(&log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("duplicating a log file handle", e))?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .current_dir(&self.state_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = if detached {
            cmd.process_group(0);
            cmd.spawn()
        } else {
            spawn_supervised(cmd)
        }
        .map_err(|e| Error::io(format!("starting {}", binary.display()), e))?;
        self.processes.push(Process { name, child, log });
        Ok(())
    }

    /// Poll `url` until `ok(body)` holds for a 200 answer; fail early if any process exits.
    async fn wait_healthy(
        &mut self,
        component: &'static str,
        http: &reqwest::Client,
        url: &str,
        ok: impl Fn(&str) -> bool,
        deadline: Instant,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            for p in &mut self.processes {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(Error::Component(Box::new(ComponentFailure {
                        component: p.name,
                        what: format!("exited ({status}) before it was healthy"),
                        log: p.log.clone(),
                        tail: log_tail(&p.log),
                    })));
                }
            }
            let last = match http.get(url).timeout(Duration::from_secs(2)).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    if status.is_success() && ok(&body) {
                        return Ok(());
                    }
                    format!("{status}: {}", body.chars().take(2000).collect::<String>())
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                let log = self.state_dir.join("logs").join(format!("{component}.log"));
                return Err(Error::Component(Box::new(ComponentFailure {
                    component,
                    what: format!(
                        "was not healthy at {url} after {:.0?} (last answer: {last})",
                        started.elapsed()
                    ),
                    tail: log_tail(&log),
                    log,
                })));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn write_state_file(&self) -> Result<()> {
        let state = StateFile {
            endpoints: self.endpoints.clone(),
            kubeconfig: self.kubeconfig.clone(),
            ca: self.pki.ca.cert.clone(),
            pids: self
                .processes
                .iter()
                .map(|p| (p.name.to_string(), p.child.id()))
                .collect(),
        };
        let path = self.state_dir.join("state.json");
        let text = serde_json::to_string_pretty(&state).expect("state serialises");
        fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// How long [`ControlPlane::start`] took until every component was healthy.
    pub fn ready_in(&self) -> Duration {
        self.ready_in
    }

    /// A client with the admin identity.
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig_client(&self.kubeconfig).await
    }

    /// The process ids, in start order (etcd first).
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes
            .iter()
            .map(|p| (p.name, p.child.id()))
            .collect()
    }

    /// Leave the processes running (they must have been started with [`Options::detached`]) and
    /// return the state directory; [`stop_detached`] stops them.
    pub fn detach(mut self) -> PathBuf {
        self.processes.clear(); // dropping a Child neither kills nor waits for it
        self.detached = true;
        self.state_dir.clone()
    }

    /// Stop every process and remove the state directory; the same as dropping, but says how
    /// long it took.
    pub fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.stop_processes();
        started.elapsed()
    }

    /// SIGKILL, not SIGTERM: the state is thrown away, so there is nothing to drain, and a
    /// graceful shutdown of the four takes 2-3 s.
    fn stop_processes(&mut self) {
        for p in self.processes.iter_mut().rev() {
            let _ = p.child.kill();
        }
        for p in &mut self.processes {
            let _ = p.child.wait();
        }
        self.processes.clear();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.stop_processes();
        if self.remove_state_dir {
            let _ = fs::remove_dir_all(&self.state_dir);
        } else {
            eprintln!(
                "control plane: kept state and logs in {}",
                self.state_dir.display()
            );
        }
    }
}

/// A client for the kubeconfig at `path`.
pub async fn kubeconfig_client(path: &Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

fn prepare_state_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match dir {
        Some(dir) => {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            let mut entries = fs::read_dir(&dir)
                .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            if entries.next().is_some() {
                return Err(Error::State {
                    dir,
                    reason: "not empty (is a control plane already running there? stop it first)"
                        .into(),
                });
            }
            dir
        }
        None => tempfile::Builder::new()
            .prefix("ryzanstein-control-plane-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary state directory", e))?
            .keep(),
    };
    // Absolute, so that kubeconfigs and flags stay valid from any working directory.
    fs::canonicalize(&dir).map_err(|e| Error::io(format!("resolving {}", dir.display()), e))
}
