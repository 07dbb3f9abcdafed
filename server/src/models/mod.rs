//! Model architectures. Each is self-contained (see `llama`); the engine sees only [`CausalLm`].

use crate::Result;

/// A decoder-only language model: append tokens to sequences' caches, get next-token logits.
pub trait CausalLm: Send + Sync {
    /// Number of logits per position.
    fn vocab_size(&self) -> usize;
    /// Longest sequence (prompt plus generated tokens) the model supports.
    fn context_length(&self) -> usize;
    /// Architecture name, e.g. "llama".
    fn architecture(&self) -> &str;
    /// What one block of its key/value cache holds.
    fn kv_shape(&self) -> KvShape;
    /// Append each item's tokens at positions `item.start..` of its cache (blocks of `kv`
    /// named by its block table), in one pass, and return the logits of each item's last
    /// [`BatchItem::logits`] positions (`logits x vocab_size` values, in position order). An
    /// item's results are the same whatever else is in the batch.
    fn forward_batch(&self, kv: &mut KvStore, items: &[BatchItem<'_>]) -> Result<Vec<Vec<f32>>>;

    /// A fresh, empty single-sequence state that can hold up to `max_len` positions.
    fn new_state(&self, max_len: usize) -> SeqState {
        SeqState::new(self.kv_shape(), max_len.min(self.context_length()))
    }

    /// Append `tokens` at positions `state.len()..`, and return the logits of the last one.
    fn forward(&self, state: &mut SeqState, tokens: &[u32]) -> Result<Vec<f32>> {
        let end = state.len + tokens.len();
        if end > state.max_len {
            return Err(crate::Error::Model(format!(
                "sequence of {end} positions exceeds this state's capacity of {}",
                state.max_len
            )));
        }
        state.reserve(end);
        let item = BatchItem {
            table: &state.table,
            start: state.len,
            tokens,
            logits: 1,
            batched: tokens.len() > 1,
        };
        let mut out = self.forward_batch(&mut state.store, std::slice::from_ref(&item))?;
        state.len = end;
        out.pop()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| crate::Error::Model("the forward pass returned no logits".into()))
    }
}

/// One sequence's part of a batched forward pass.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// The sequence's block table; it covers positions `0..start + tokens.len()`.
    pub table: &'a [u32],
    /// Positions already in the cache (the new tokens go at `start..`).
    pub start: usize,
    pub tokens: &'a [u32],
    /// Logits of this many last new positions (0: none, as for a prompt chunk that is not the
    /// prompt's last; more than 1 to verify drafted tokens).
    pub logits: usize,
    /// The order attention sums in for these rows: as rows of a prompt batch (`true`), or each
    /// row as a decode step of its own (`false`). llama.cpp uses the first for a prompt of two
    /// or more tokens and the second for generated tokens; a row's result depends on it, and on
    /// nothing else in the batch, so a sequence whose rows always get the same order gives the
    /// same output however its tokens are chunked, batched, cached or recomputed.
    pub batched: bool,
}

pub mod kv;
pub use kv::{KvShape, KvStore, SeqState, BLOCK};

pub mod hf_llama;
pub mod llama;
pub mod options;
mod requantize;
mod weights;

pub use llama::Llama;
pub use options::{LmHead, ModelOptions, Quantize, TernaryKernel};

/// Load the model in `files` (a GGUF file or a Hugging Face directory), choosing the
/// architecture from its metadata.
pub fn load(files: &crate::source::ModelFiles, threads: usize) -> Result<Box<dyn CausalLm>> {
    load_with(files, threads, &ModelOptions::default())
}

/// [`load`] with load options (post-training quantisation, kernels, the LM head's type).
pub fn load_with(
    files: &crate::source::ModelFiles,
    threads: usize,
    opts: &ModelOptions,
) -> Result<Box<dyn CausalLm>> {
    use crate::source::ModelFiles;
    match files {
        ModelFiles::Gguf(path) => {
            load_gguf_with(&crate::gguf::GgufFile::open(path)?, threads, opts)
        }
        ModelFiles::HfDir(dir) => {
            let dir = crate::safetensors_dir::HfDir::open(dir)?;
            Ok(Box::new(hf_llama::load(&dir, threads, opts)?))
        }
    }
}

/// Load the model of an open GGUF file.
pub fn load_gguf(g: &crate::gguf::GgufFile, threads: usize) -> Result<Box<dyn CausalLm>> {
    load_gguf_with(g, threads, &ModelOptions::default())
}

/// [`load_gguf`] with load options.
pub fn load_gguf_with(
    g: &crate::gguf::GgufFile,
    threads: usize,
    opts: &ModelOptions,
) -> Result<Box<dyn CausalLm>> {
    let arch = g.architecture()?;
    if !llama::GGUF_ARCHITECTURES.contains(&arch) {
        return Err(crate::Error::model_file(
            g.path(),
            format!(
                "architecture {arch:?} is not supported (supported: {:?})",
                llama::GGUF_ARCHITECTURES
            ),
        ));
    }
    Ok(Box::new(Llama::from_gguf(g, threads, opts)?))
}
