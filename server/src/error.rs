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

    // --- structured output ---
    /// A JSON schema (`response_format`, a tool's `parameters`) that constrained decoding
    /// cannot enforce; `pointer` says where in the schema.
    #[error("schema at {pointer}: {what}")]
    Schema { pointer: String, what: String },

    // --- model construction / forward ---
    #[error("model: {0}")]
    Model(String),
    #[error(transparent)]
    Kernel(#[from] ryzanstein_kernels::KernelError),

    // --- engine ---
    #[error("engine: {0}")]
    Engine(String),
    /// The prompt plus the requested completion does not fit the context window.
    #[error("{}", context_overflow_message(*.prompt_tokens, *.max_tokens, *.context_length))]
    ContextOverflow {
        prompt_tokens: usize,
        max_tokens: usize,
        context_length: usize,
    },
    /// The prompt tokenized to nothing: there is no position to predict from.
    #[error("the prompt is empty (0 tokens); send at least one token of text")]
    EmptyPrompt,
    /// A prompt token id the model's vocabulary does not have.
    #[error("the prompt has token id {id}, but the vocabulary has {vocab_size} tokens (ids 0 to {}); send ids from this model's tokenizer", vocab_size.saturating_sub(1))]
    TokenOutOfRange { id: u32, vocab_size: usize },
    /// The engine's bounded queue is full; the caller should retry later.
    #[error("the engine's queue is full ({capacity} requests waiting); retry in a moment")]
    QueueFull { capacity: usize },
    /// The engine's worker thread is gone (it panicked or the server is shutting down).
    #[error("engine: the generation worker has stopped; restart the server")]
    EngineStopped,
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn model_file(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::ModelFile {
            path: path.into(),
            what: what.into(),
        }
    }
}

fn context_overflow_message(prompt: usize, max_tokens: usize, context: usize) -> String {
    if prompt >= context {
        format!(
            "the prompt is {prompt} tokens, which leaves no room in the context length of \
             {context} tokens; shorten the prompt to fewer than {context} tokens"
        )
    } else {
        format!(
            "the prompt is {prompt} tokens and max_tokens is {max_tokens}, together more than \
             the context length of {context} tokens; set max_tokens to at most {} or shorten \
             the prompt",
            context - prompt
        )
    }
}

/// The text of a caught panic's payload (a `&str` or a `String`, as `panic!` makes them).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
