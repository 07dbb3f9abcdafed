//! The crate's one error type. Every message says what was wrong and what to do about it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // --- gguf / safetensors / model files ---
    /// A model file that is truncated, corrupt or of an unsupported kind.
    #[error("{path}: {what}")]
    ModelFile { path: PathBuf, what: String },

    // --- model sources (download, cache, bundled) ---
    #[error("model source {source_spec:?}: {what}")]
    Source { source_spec: String, what: String },

    // --- tokenizer / chat template ---
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),

    // --- model construction / forward ---
    #[error("model: {0}")]
    Model(String),
    #[error(transparent)]
    Kernel(#[from] ryzanstein_kernels::KernelError),

    // --- engine ---
    #[error("engine: {0}")]
    Engine(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn model_file(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::ModelFile { path: path.into(), what: what.into() }
    }
}
