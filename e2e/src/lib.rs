//! Whole-system tests for Ryzanstein: a real Kubernetes control plane on this machine
//! ([`control_plane`]), certificates for it ([`pki`]), a node agent that registers nodes and runs
//! their pods as local processes ([`node_agent`]), and — later — the scenarios.

use std::path::PathBuf;

pub mod control_plane;
pub mod gate;
pub mod node_agent;
pub mod objects;
pub mod pki;
pub mod summary;
pub mod tools;
pub mod traffic;
pub mod wait;
pub mod workspace;

pub use control_plane::{Binaries, ControlPlane, Endpoints, Options};
pub use gate::{binaries_or_skip, control_plane_or_skip};
pub use node_agent::{AgentOptions, ImageTable, NodeAgent, NodeProfile};

/// What can go wrong while building, starting or stopping the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control-plane binaries are missing or are not the pinned version.
    #[error("control-plane binaries not built in {dir}: {reason}; run `make k8s` (scripts/k8s-build.sh)")]
    NotBuilt { dir: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    /// A component exited, or was not healthy in time.
    #[error("{0}")]
    Component(Box<ComponentFailure>),
    #[error("state directory {dir}: {reason}")]
    State { dir: PathBuf, reason: String },
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The node agent's pod network could not be set up.
    #[error("pod network: {0}")]
    Network(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// A component that did not become healthy, with the end of its log.
#[derive(Debug)]
pub struct ComponentFailure {
    pub component: &'static str,
    /// What went wrong, e.g. "exited (exit status: 1) before it was healthy".
    pub what: String,
    pub log: PathBuf,
    pub tail: String,
}

impl std::fmt::Display for ComponentFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}; last lines of {}:\n{}",
            self.component,
            self.what,
            self.log.display(),
            self.tail
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
