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
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
