//! Model architectures. Each is self-contained (see `llama`); the engine sees only [`CausalLm`].

use crate::Result;

/// A decoder-only language model: append tokens to a sequence's state, get next-token logits.
pub trait CausalLm: Send + Sync {
    /// Number of logits per position.
    fn vocab_size(&self) -> usize;
    /// Longest sequence (prompt plus generated tokens) the model supports.
    fn context_length(&self) -> usize;
    /// Architecture name, e.g. "llama".
    fn architecture(&self) -> &str;
    /// A fresh, empty per-sequence state (KV cache) that can hold up to `max_len` positions.
    fn new_state(&self, max_len: usize) -> SeqState;
    /// Append each item's tokens at positions `state.len()..` of its state, in one pass, and
    /// return the logits of each item's last position where [`BatchItem::logits`] asks for
    /// them. An item's results are the same whatever else is in the batch.
    fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Option<Vec<f32>>>>;

    /// Append `tokens` at positions `state.len()..`, and return the logits of the last one.
    fn forward(&self, state: &mut SeqState, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut items = [BatchItem {
            state,
            tokens,
            logits: true,
        }];
        let mut out = self.forward_batch(&mut items)?;
        out.pop()
            .flatten()
            .ok_or_else(|| crate::Error::Model("the forward pass returned no logits".into()))
    }
}

/// One sequence's part of a batched forward pass.
pub struct BatchItem<'a> {
    pub state: &'a mut SeqState,
    /// The new tokens, appended at `state.len()..`.
    pub tokens: &'a [u32],
    /// Whether to compute the logits of the last new token (a prompt chunk that is not the
    /// prompt's last needs none).
    pub logits: bool,
}

/// Per-sequence state: the key/value cache of every layer, stored as f16 like llama.cpp's default.
/// Keys are position-major; values are transposed (one row of positions per value dimension,
/// as llama.cpp stores them without flash attention), so that each attention output is one
/// contiguous dot product.
pub struct SeqState {
    /// `k[layer]` holds `len * kv_dim` values, position-major.
    pub(crate) k: Vec<Vec<half::f16>>,
    /// `v[layer]` holds `kv_dim` rows of `v_cap` positions; positions from `len` up to the
    /// next multiple of 32 are zero.
    pub(crate) v: Vec<Vec<half::f16>>,
    /// Positions per row of `v` (a multiple of 32).
    pub(crate) v_cap: usize,
    pub(crate) len: usize,
    pub(crate) max_len: usize,
}

impl SeqState {
    /// An empty state for `layers` layers (the caches grow on demand).
    pub(crate) fn new(layers: usize, max_len: usize) -> SeqState {
        SeqState {
            k: vec![Vec::new(); layers],
            v: vec![Vec::new(); layers],
            v_cap: 0,
            len: 0,
            max_len,
        }
    }
    /// Make room in the value cache for `positions` positions of `kv_dim` values (the rows grow
    /// by doubling, up to this state's capacity, keeping what they hold).
    pub(crate) fn reserve_values(&mut self, kv_dim: usize, positions: usize) {
        const PAD: usize = ryzanstein_kernels::attention::PAD;
        let need = positions.div_ceil(PAD) * PAD;
        if need <= self.v_cap {
            return;
        }
        let limit = self.max_len.div_ceil(PAD) * PAD;
        let cap = need.max((2 * self.v_cap).min(limit)).max(256.min(limit));
        let old = self.v_cap;
        for v in &mut self.v {
            let mut grown = vec![half::f16::ZERO; kv_dim * cap];
            if old > 0 {
                for (new_row, old_row) in grown.chunks_exact_mut(cap).zip(v.chunks_exact(old)) {
                    new_row[..old].copy_from_slice(old_row);
                }
            }
            *v = grown;
        }
        self.v_cap = cap;
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn max_len(&self) -> usize {
        self.max_len
    }
    /// Forget every position from `len` on (to reuse a common prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

pub mod hf_llama;
pub mod llama;
mod weights;

pub use llama::Llama;

/// Load the model in `files` (a GGUF file or a Hugging Face directory), choosing the
/// architecture from its metadata.
pub fn load(files: &crate::source::ModelFiles, threads: usize) -> Result<Box<dyn CausalLm>> {
    use crate::source::ModelFiles;
    match files {
        ModelFiles::Gguf(path) => load_gguf(&crate::gguf::GgufFile::open(path)?, threads),
        ModelFiles::HfDir(dir) => {
            let dir = crate::safetensors_dir::HfDir::open(dir)?;
            Ok(Box::new(hf_llama::load(&dir, threads)?))
        }
    }
}

/// Load the model of an open GGUF file.
pub fn load_gguf(g: &crate::gguf::GgufFile, threads: usize) -> Result<Box<dyn CausalLm>> {
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
    Ok(Box::new(Llama::from_gguf(g, threads)?))
}
