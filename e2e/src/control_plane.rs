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

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::pki::{ClientIdentity, Pki};
use crate::{ComponentFailure, Error, Result};

/// The Service CIDR; its first address is the `kubernetes` Service's cluster IP. No traffic is
/// ever sent to it: nothing on this machine routes Service IPs.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The service-account token issuer (and default audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

const KUBERNETES_GO_MOD: &str = include_str!("../k8s/kubernetes/go.mod");
const ETCD_GO_MOD: &str = include_str!("../k8s/etcd/go.mod");

/// Where the binaries are and which versions they must report.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
}

impl Binaries {
    /// The Kubernetes release pinned in `e2e/k8s/kubernetes/go.mod`, e.g. `v1.35.4`.
    pub fn kubernetes_version() -> &'static str {
        pinned_version(KUBERNETES_GO_MOD, "k8s.io/kubernetes")
    }

    /// The etcd release pinned in `e2e/k8s/etcd/go.mod`, e.g. `v3.6.16`.
    pub fn etcd_version() -> &'static str {
        pinned_version(ETCD_GO_MOD, "go.etcd.io/etcd/server/v3")
    }

    /// `$RYZANSTEIN_K8S_BIN_DIR`, else `<cache>/k8s/<version>/bin` where `<cache>` is
    /// `$RYZANSTEIN_CACHE` or `~/.cache/ryzanstein` — where `scripts/k8s-build.sh` puts them.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("RYZANSTEIN_K8S_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let cache = std::env::var_os("RYZANSTEIN_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/ryzanstein")
            });
        cache
            .join("k8s")
            .join(Self::kubernetes_version())
            .join("bin")
    }

    /// The binaries in [`Binaries::default_dir`], checked to exist and report the pinned versions.
    pub fn locate() -> Result<Binaries> {
        Self::locate_in(&Self::default_dir())
    }

    /// The binaries in `dir`, checked to exist and report the pinned versions.
    pub fn locate_in(dir: &Path) -> Result<Binaries> {
        let bins = Binaries {
            dir: dir.to_path_buf(),
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
            kube_scheduler: dir.join("kube-scheduler"),
        };
        let not_built = |reason: String| Error::NotBuilt {
            dir: dir.to_path_buf(),
            reason,
        };
        let expect_k8s = format!("Kubernetes {}", Self::kubernetes_version());
        let expect_etcd = format!(
            "etcd Version: {}",
            Self::etcd_version().trim_start_matches('v')
        );
        for (bin, expected) in [
            (&bins.etcd, &expect_etcd),
            (&bins.kube_apiserver, &expect_k8s),
            (&bins.kube_controller_manager, &expect_k8s),
            (&bins.kube_scheduler, &expect_k8s),
        ] {
            if !bin.is_file() {
                return Err(not_built(format!("{} is missing", bin.display())));
            }
            let out = Command::new(bin)
                .arg("--version")
                .output()
                .map_err(|e| not_built(format!("{} does not run: {e}", bin.display())))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !text.lines().any(|l| l.trim() == expected.as_str()) {
                let first = text.lines().next().unwrap_or("").trim().to_string();
                return Err(not_built(format!(
                    "{} reports '{first}', expected '{expected}'",
                    bin.display()
                )));
            }
        }
        Ok(bins)
    }
}

/// The version a go.mod pins for `module`, in a `require` line or block.
fn pinned_version(go_mod: &'static str, module: &str) -> &'static str {
    go_mod
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let mut first = words.next()?;
            if first == "require" {
                first = words.next()?;
            }
            let version = words.next()?;
            (first == module && version.starts_with('v')).then_some(version)
        })
        .unwrap_or_else(|| panic!("e2e/k8s go.mod pins no version of {module}"))
}

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

/// What `state.json` in the state directory records, for `status` and `stop` from another process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateFile {
    pub endpoints: Endpoints,
    pub kubeconfig: PathBuf,
    pub ca: PathBuf,
    /// (component, pid), in start order.
    pub pids: Vec<(String, u32)>,
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
    alive(pid) && Path::new(std::ffi::OsStr::from_bytes(argv0)).ends_with(name)
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

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
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

/// Distinct free loopback ports: all listeners are held until every port is chosen.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("choosing free loopback ports", e))?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(|e| Error::io("choosing free loopback ports", e))?
            .port();
    }
    Ok(ports)
}

fn http_client(ca_pem: &Path) -> Result<reqwest::Client> {
    let ca = fs::read(ca_pem).map_err(|e| Error::io(format!("reading {}", ca_pem.display()), e))?;
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .no_proxy()
        .build()?)
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    const BYTES: u64 = 6000;
    let Ok(mut f) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(BYTES)));
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    let lines: Vec<&str> = buf.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawn `cmd` so that the kernel kills it when this process dies (`PR_SET_PDEATHSIG`).
///
/// The signal fires when the *thread* that forked the child exits, so every child is forked by
/// one thread that lives as long as the process.
fn spawn_supervised(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("control-plane-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of
                    // the parent; this runs in the child between fork and exec.
                    let parent = std::process::id() as libc::pid_t;
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            // The parent may have died before prctl took effect.
                            if libc::getppid() != parent {
                                libc::_exit(1);
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the control-plane spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("control-plane spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("control-plane spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_go_mod_files() {
        assert!(
            Binaries::kubernetes_version().starts_with("v1."),
            "{}",
            Binaries::kubernetes_version()
        );
        assert!(
            Binaries::etcd_version().starts_with("v3."),
            "{}",
            Binaries::etcd_version()
        );
    }

    #[test]
    fn pinned_version_reads_require_lines_and_blocks() {
        let go_mod = "module x\n\nrequire k8s.io/kubernetes v1.2.3\n";
        assert_eq!(pinned_version(go_mod, "k8s.io/kubernetes"), "v1.2.3");
        let go_mod = "module x\nreplace k8s.io/api => k8s.io/api v0.2.3\nrequire (\n\tk8s.io/api v0.2.3 // indirect\n)\n";
        assert_eq!(pinned_version(go_mod, "k8s.io/api"), "v0.2.3");
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports::<5>().unwrap();
        let mut sorted = ports.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
    }

    #[test]
    fn a_missing_build_says_how_to_build() {
        let dir = tempfile::tempdir().unwrap();
        let err = Binaries::locate_in(dir.path()).unwrap_err();
        assert!(matches!(err, Error::NotBuilt { .. }));
        assert!(err.to_string().contains("make k8s"), "{err}");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&log, text).unwrap();
        let tail = log_tail(&log);
        assert!(
            tail.starts_with("line 75") && tail.ends_with("line 99"),
            "{tail}"
        );
    }
}
