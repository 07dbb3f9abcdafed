//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the operator crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A resource quantity ("2", "500m", "4Gi") that does not parse or does not fit.
    #[error("{value:?} is not a usable Kubernetes quantity: {reason}")]
    InvalidQuantity {
        /// The text as written in the resource.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A CustomResourceDefinition could not be written out as YAML.
    #[error("could not serialise the {kind} CustomResourceDefinition to YAML: {source}")]
    CrdYaml {
        /// The custom resource kind.
        kind: &'static str,
        /// The serialiser's error.
        #[source]
        source: serde_saphyr::ser::Error,
    },

    /// A generated file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// "could not read" / "could not write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A ModelDeployment (or its pool) asks for something that cannot be rendered into pods;
    /// the reason says what to change.
    #[error("{object} cannot be rendered: {reason}")]
    Unrenderable {
        /// "ModelDeployment team-a/smollm2".
        object: String,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A call to the Kubernetes API failed.
    #[error("could not {action}: {source}")]
    Kube {
        /// What the operator was doing ("list Nodes", "patch InferencePool cpu status").
        action: String,
        /// The client's error (HTTP status and the API server's message when there is one).
        #[source]
        source: kube::Error,
    },

    /// The operator's configuration file or a command-line setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An object could not be turned into JSON for the API server.
    #[error("could not serialise {what}: {source}")]
    Json {
        /// The object.
        what: String,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },

    /// Another operator replica holds the leader-election Lease, so this one must stop.
    #[error("lost the leader-election Lease {lease}: {reason}")]
    LeaseLost {
        /// `namespace/name` of the Lease.
        lease: String,
        /// Why (taken over by another holder, or not renewed within the renew deadline).
        reason: String,
    },
}

impl Error {
    /// A short, stable label for the `reason` of `ryzanstein_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidQuantity { .. } => "invalid_quantity",
            Error::CrdYaml { .. } => "crd_yaml",
            Error::Io { .. } => "io",
            Error::Unrenderable { .. } => "unrenderable",
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.is_not_found() => "kube_not_found",
                kube::Error::Api(status) if status.code == 409 => "kube_conflict",
                kube::Error::Api(status) if status.code == 403 => "kube_forbidden",
                kube::Error::Api(_) => "kube_api",
                _ => "kube_client",
            },
            Error::Config(_) => "config",
            Error::Json { .. } => "json",
            Error::LeaseLost { .. } => "lease_lost",
        }
    }

    /// Wraps a Kubernetes client error with what the operator was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
