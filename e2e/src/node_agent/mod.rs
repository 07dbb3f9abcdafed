//! A node agent: a kubelet stand-in that registers nodes with the control plane and runs the pods
//! bound to them as processes on this machine.
//!
//! What it does as a kubelet does:
//! - registers each node (labels, taints, capacity, allocatable, addresses, node info, Ready=True)
//!   and keeps it alive (a Lease in `kube-node-lease`, periodic status) — `heartbeat`;
//! - authenticates each node as itself with a client certificate `CN=system:node:<name>`,
//!   `O=system:nodes` signed by the cluster CA, so the API server's Node authorizer and the
//!   NodeRestriction admission plugin apply: a node reads only its own pods and the ConfigMaps,
//!   Secrets and service-account tokens they reference, and writes only its own Node, Lease and
//!   pods' status;
//! - watches the pods bound to each node and runs each container as a process — `watch`,
//!   `pod`: environment with `$(VAR)` expansion and the downward API ([`env`](mod@env)), volumes
//!   ([`volumes`]), service-account tokens from the TokenRequest API bound to the pod, one pod
//!   IP per pod ([`network`]), startup/readiness/liveness probes ([`probe`]), restarts by the
//!   restart policy with back-off, status through `pods/status` ([`status`]), events;
//! - on deletion runs preStop, sends SIGTERM, waits out the grace period, sends SIGKILL, reports
//!   the final status and deletes the pod object with grace 0 ([`container`]).
//!
//! Where it cannot do what a kubelet does, because no container runtime, container image or
//! kube-proxy can run here (mocked because they cannot run here):
//! - **Mount paths are rewritten** ([`rewrite`]): a container's processes share this machine's
//!   filesystem, so every occurrence of a volume's `mountPath` in its command, args, env values
//!   and workingDir is replaced by the pod's directory for that volume. This is the one place
//!   a pod sees something different from what it would see on a real node: a path compiled into
//!   a program, or read from a file, is not rewritten.
//! - **Images are binaries** built on this machine ([`images`]): an image the test's table does
//!   not map cannot be pulled (`ErrImagePull`, then `ImagePullBackOff`).
//! - **API access**: the `kubernetes` Service's cluster IP is unreachable (no kube-proxy), so
//!   `KUBERNETES_SERVICE_HOST`/`PORT` name the API server on loopback, and a container with the
//!   service-account mount gets `KUBECONFIG` pointing at a kubeconfig with that mount's CA and
//!   token file — the in-cluster config's fixed path cannot exist per pod ([`launch`]).
//! - **No isolation**: no namespaces or cgroups; processes run as the agent's user, whatever the
//!   pod's `securityContext` says. Requests and limits are not enforced (the scheduler still
//!   places pods by the nodes' allocatable, so capacity matters). Pods share
//!   this machine's network namespace and bind their own address from a block of 198.18.0.0/15
//!   that the agent routes to loopback ([`network`]: 127.x addresses would do for binding, but
//!   the API server refuses them in EndpointSlices). The route needs CAP_NET_ADMIN and
//!   iproute2's `ip`.
//! - Not supported: init and ephemeral containers, `exec` probes and hooks, `resourceFieldRef`,
//!   persistent volumes, ConfigMap/Secret updates after start, Service environment variables
//!   other than the API server's, logs/exec through the API server (read logs with
//!   [`NodeAgent::container_log`]).
//!
//! Dropping the [`NodeAgent`] kills every process it started; the processes also die with this
//! process (`PR_SET_PDEATHSIG`), so a crashed test leaves nothing running.

pub mod container;
pub mod env;
pub mod expand;
mod heartbeat;
pub mod images;
pub mod launch;
pub mod log;
pub mod network;
pub mod nodes;
mod pod;
pub mod probe;
pub mod process;
pub mod rewrite;
pub mod status;
pub mod volumes;
mod watch;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use tokio::task::JoinHandle;

pub use container::BackoffPolicy;
pub use images::ImageTable;
pub use network::PodNetworkKind;
pub use nodes::NodeProfile;

use crate::control_plane::kubeconfig_client;
use crate::{ControlPlane, Error, Result};
use network::{NodeNetwork, PodNetwork};
use process::ProcessTable;

/// How to run the agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub nodes: Vec<NodeProfile>,
    pub images: ImageTable,
    /// Pod directories, logs, node certificates and the agent's log. `None`: a new directory
    /// under the system temp dir, removed on drop unless `RYZANSTEIN_E2E_KEEP=1`.
    pub state_dir: Option<PathBuf>,
    /// Container restarts (default: kubelet's, 10 s doubling to 5 min).
    pub restart_backoff: BackoffPolicy,
    /// Image pull retries (default: kubelet's).
    pub image_pull_backoff: BackoffPolicy,
    /// The nodes' Lease duration (kubelet: 40 s).
    pub lease_duration: Duration,
    /// How often Leases are renewed (kubelet: a quarter of the duration).
    pub lease_renew_interval: Duration,
    /// How often node status is reported when nothing changes.
    pub node_status_interval: Duration,
    /// Where pod addresses come from (default: a routed block, see [`network`]).
    pub pod_network: PodNetworkKind,
}

impl AgentOptions {
    pub fn new(nodes: Vec<NodeProfile>, images: ImageTable) -> AgentOptions {
        AgentOptions {
            nodes,
            images,
            state_dir: None,
            restart_backoff: BackoffPolicy::KUBELET,
            image_pull_backoff: BackoffPolicy::KUBELET,
            lease_duration: Duration::from_secs(40),
            lease_renew_interval: Duration::from_secs(10),
            node_status_interval: Duration::from_secs(60),
            pod_network: PodNetworkKind::Routed,
        }
    }
}

/// What every node of the agent shares.
pub(crate) struct Shared {
    pub options: AgentOptions,
    pub images: ImageTable,
    pub apiserver: String,
    pub state_dir: PathBuf,
    pub processes: ProcessTable,
    pub http: reqwest::Client,
    pub log: log::Log,
    pub keep_state: bool,
}

/// One node: its identity, address range and event recorder.
pub(crate) struct NodeContext {
    pub shared: Arc<Shared>,
    pub profile: NodeProfile,
    pub network: NodeNetwork,
    pub client: Client,
    pub recorder: Recorder,
}

/// A registered node.
#[derive(Clone)]
pub struct AgentNode {
    pub name: String,
    /// The node's InternalIP.
    pub address: Ipv4Addr,
    /// The pod CIDR pod addresses come from.
    pub pod_cidr: String,
    /// A client authenticated as the node (`system:node:<name>`).
    pub client: Client,
    /// The node's kubeconfig.
    pub kubeconfig: PathBuf,
}

/// Running nodes; dropping the agent kills every process it started.
pub struct NodeAgent {
    shared: Arc<Shared>,
    nodes: Vec<AgentNode>,
    tasks: Vec<JoinHandle<()>>,
    /// Dropped after the processes are killed: the route goes last.
    network: PodNetwork,
}

impl NodeAgent {
    /// Register every node of `options` with `cluster` and start running their pods. Returns
    /// once every Node exists with Ready=True.
    pub async fn start(cluster: &ControlPlane, options: AgentOptions) -> Result<NodeAgent> {
        let keep_state = std::env::var("RYZANSTEIN_E2E_KEEP").as_deref() == Ok("1");
        let state_dir = match &options.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                dir.clone()
            }
            None => tempfile::Builder::new()
                .prefix("ryzanstein-node-agent-")
                .tempdir()
                .map_err(|e| Error::io("creating the node agent's state directory", e))?
                .keep(),
        };
        let state_dir = std::fs::canonicalize(&state_dir)
            .map_err(|e| Error::io(format!("resolving {}", state_dir.display()), e))?;
        let log = log::Log::open(&state_dir.join("agent.log"));
        if options.nodes.len() > network::MAX_NODES {
            return Err(Error::Network(format!(
                "{} nodes; an agent runs at most {}",
                options.nodes.len(),
                network::MAX_NODES
            )));
        }
        let network = PodNetwork::claim(options.pod_network)?;
        log.line(format_args!(
            "pod network {} ({:?}), state in {}",
            network.cidr(),
            network.kind(),
            state_dir.display()
        ));
        let shared = Arc::new(Shared {
            images: options.images.clone(),
            apiserver: cluster.endpoints().apiserver.clone(),
            state_dir: state_dir.clone(),
            processes: ProcessTable::default(),
            http: probe::http_client(),
            log,
            keep_state,
            options: options.clone(),
        });
        let mut agent = NodeAgent {
            shared: shared.clone(),
            nodes: Vec::new(),
            tasks: Vec::new(),
            network,
        };
        for (index, profile) in options.nodes.iter().enumerate() {
            let network = agent.network.node(index);
            agent.add_node(cluster, profile.clone(), network).await?;
        }
        Ok(agent)
    }

    async fn add_node(
        &mut self,
        cluster: &ControlPlane,
        profile: NodeProfile,
        network: NodeNetwork,
    ) -> Result<()> {
        let shared = self.shared.clone();
        let pki_dir = shared.state_dir.join("nodes");
        let cert = cluster.pki().issue_node_client(&pki_dir, &profile.name)?;
        let user = format!("system:node:{}", profile.name);
        let kubeconfig = pki_dir.join(format!("{}.kubeconfig", profile.name));
        let text = cluster
            .pki()
            .kubeconfig_for(&user, &cert, &shared.apiserver);
        std::fs::write(&kubeconfig, text)
            .map_err(|e| Error::io(format!("writing {}", kubeconfig.display()), e))?;
        let client = kubeconfig_client(&kubeconfig).await?;
        // kube-node-lease and the RBAC the Node authorizer relies on appear right after the
        // API server is ready; retry briefly.
        let mut attempts = 0;
        let node = loop {
            match heartbeat::register(&client, &profile, &network).await {
                Ok(node) => break node,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    shared
                        .log
                        .line(format_args!("registering {}: {e}; retrying", profile.name));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        shared.log.line(format_args!(
            "node {} registered: InternalIP {}, pod CIDR {}",
            profile.name,
            network.node_ip(),
            network.cidr()
        ));
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "kubelet".into(),
                instance: Some(profile.name.clone()),
            },
        );
        let node_ctx = Arc::new(NodeContext {
            shared: shared.clone(),
            profile: profile.clone(),
            network,
            client: client.clone(),
            recorder,
        });
        self.nodes.push(AgentNode {
            name: profile.name.clone(),
            address: node_ctx.network.node_ip(),
            pod_cidr: node_ctx.network.cidr(),
            client: client.clone(),
            kubeconfig,
        });
        let hb = node_ctx.clone();
        self.tasks
            .push(tokio::spawn(async move { heartbeat::run(hb, node).await }));
        self.tasks.push(tokio::spawn(watch::run(node_ctx)));
        Ok(())
    }

    pub fn nodes(&self) -> &[AgentNode] {
        &self.nodes
    }

    /// A registered node by name.
    pub fn node(&self, name: &str) -> Option<&AgentNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The agent's address block, e.g. `198.18.8.0/21`.
    pub fn pod_network(&self) -> String {
        self.network.cidr()
    }

    pub fn state_dir(&self) -> &Path {
        &self.shared.state_dir
    }

    /// The agent's own log.
    pub fn log_path(&self) -> &Path {
        self.shared.log.path()
    }

    /// The pids of every container process now running.
    pub fn pids(&self) -> Vec<u32> {
        self.shared.processes.pids()
    }

    /// The output of the newest instance of a pod's container (`kubectl logs`), also after the
    /// pod was deleted; `previous`: the instance before it (`kubectl logs --previous`).
    pub fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<String> {
        let logs = self.shared.state_dir.join("logs");
        let prefix = format!("{namespace}_{pod}_");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&logs)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path().join(container))
            .collect();
        // The newest pod of that name.
        dirs.sort_by_key(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok());
        let dir = dirs.pop()?;
        let newest = pod::latest_log(&dir)?;
        let file = if previous {
            let n: u32 = newest.file_stem()?.to_string_lossy().parse().ok()?;
            dir.join(format!("{}.log", n.checked_sub(1)?))
        } else {
            newest
        };
        std::fs::read_to_string(file).ok()
    }

    /// Kill every process and stop every node's tasks (the same as dropping the agent).
    pub fn stop(self) {}
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.processes.kill_all();
        if self.shared.keep_state {
            eprintln!(
                "node agent: kept state and logs in {}",
                self.shared.state_dir.display()
            );
        } else if self.shared.options.state_dir.is_none() {
            let _ = std::fs::remove_dir_all(&self.shared.state_dir);
        }
    }
}
