//! Sentence embeddings for `/v1/embeddings`: a BERT encoder (all-MiniLM-L6-v2 and other
//! sentence-transformers BERT models) with the pooling and normalisation its directory
//! declares.
//!
//! A model directory holds `config.json`, `model.safetensors`, `tokenizer.json`,
//! `modules.json` (Transformer, Pooling, optionally Normalize), the pooling module's
//! `config.json` and optionally `sentence_bert_config.json` (`max_seq_length`). Text is
//! tokenized with [CLS]/[SEP] and truncated to `max_seq_length`, as sentence-transformers
//! does; the encoder runs in f32 ([`forward`]); token states are pooled ([`pooling`]) and, with
//! a Normalize module, scaled to unit length.
//!
//! - [`config`]: `config.json` and the sentence-transformers pipeline files.
//! - [`weights`]: the weights, dense layers repacked for the f32 GEMM.
//! - [`forward`]: the encoder over a batch of unpadded sequences.
//! - [`ops`]: LayerNorm and GELU. [`pooling`]: pooling and normalisation.

pub mod config;
pub mod forward;
pub mod ops;
pub mod pooling;
pub mod weights;

use std::path::Path;
use std::sync::Mutex;

use ryzanstein_kernels::Pool;

use crate::error::{Error, Result};
use crate::safetensors_dir::HfDir;
use crate::source::{self, ModelFiles};
use config::{BertConfig, Pipeline};
use forward::Encoder;
use weights::BertWeights;

/// Tokens of one forward pass at most: a request's inputs are embedded in batches of about
/// this many tokens (activations stay in the tens of megabytes).
const BATCH_TOKENS: usize = 8192;

/// A loaded embedding model. [`EmbeddingModel::embed`] may be called from several threads;
/// batches run one at a time on the model's compute threads.
pub struct EmbeddingModel {
    encoder: Encoder,
    pipeline: Pipeline,
    tokenizer: tokenizers::Tokenizer,
    pool: Pool,
    busy: Mutex<()>,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("config", &self.encoder.cfg)
            .field("pipeline", &self.pipeline)
            .field("threads", &self.pool.threads())
            .finish()
    }
}

/// The name an embedding model is served under when none is given: `all-MiniLM-L6-v2` for
/// the bundled model (its name on the Hugging Face Hub, which clients know), else the
/// directory or repository name.
pub fn default_served_name(spec: &str) -> String {
    if spec.trim().trim_end_matches('/') == "bundled://all-minilm-l6-v2" {
        return "all-MiniLM-L6-v2".to_owned();
    }
    crate::engine::default_served_name(spec.trim())
}

impl EmbeddingModel {
    /// Resolve `spec` (a local directory, `hf://org/repo[@rev]` or `bundled://NAME`) and load
    /// it with `threads` compute threads. BLOCKING: it may download and reads ~100 MB.
    pub fn load(spec: &str, threads: usize) -> Result<EmbeddingModel> {
        match source::resolve(spec, &source::cache_root())? {
            ModelFiles::HfDir(dir) => Self::open(&dir, threads),
            ModelFiles::Gguf(path) => Err(Error::model_file(
                path,
                "an embedding model must be a sentence-transformers directory (config.json, \
                 model.safetensors, tokenizer.json, modules.json, 1_Pooling/config.json), not \
                 a GGUF file",
            )),
        }
    }

    /// Load the sentence-transformers directory `dir`.
    pub fn open(dir: &Path, threads: usize) -> Result<EmbeddingModel> {
        let hf = HfDir::open(dir)?;
        let cfg = BertConfig::from_json(&dir.join("config.json"), hf.config())?;
        let pipeline = Pipeline::read(dir, cfg.max_position_embeddings)?;
        let tok_path = hf.tokenizer_json().ok_or_else(|| {
            Error::model_file(
                dir,
                "no tokenizer.json: the embedding model needs its tokenizer",
            )
        })?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| {
            Error::Tokenizer(format!(
                "{}: not a usable tokenizer.json: {e}",
                tok_path.display()
            ))
        })?;
        // sentence-transformers pads and truncates per call (to the batch's longest input and
        // to max_seq_length), whatever tokenizer.json says; inputs here are never padded.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: pipeline.max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let weights = BertWeights::load(&hf, &cfg)?;
        let pool = Pool::new(threads.max(1)).map_err(|e| {
            Error::Model(format!(
                "cannot start {threads} embedding compute threads: {e}"
            ))
        })?;
        Ok(EmbeddingModel {
            encoder: Encoder { cfg, weights },
            pipeline,
            tokenizer,
            pool,
            busy: Mutex::new(()),
        })
    }

    /// Values per embedding.
    pub fn dimensions(&self) -> usize {
        self.encoder.cfg.hidden_size * self.pipeline.pooling.modes()
    }

    /// Tokens per input at most ([CLS] and [SEP] included); text is truncated to it.
    pub fn max_seq_length(&self) -> usize {
        self.pipeline.max_seq_length
    }

    pub fn vocab_size(&self) -> usize {
        self.encoder.cfg.vocab_size
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The model's input for `text`: [CLS], the tokens, [SEP], truncated to
    /// [`max_seq_length`](Self::max_seq_length).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(format!("encoding text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// One embedding per input (model inputs as [`tokenize`](Self::tokenize) gives them, each
    /// 1 to `max_seq_length` ids below the vocabulary size), in order. BLOCKING.
    pub fn embed(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        for ids in inputs {
            if ids.is_empty() || ids.len() > self.max_seq_length() {
                return Err(Error::Model(format!(
                    "an input of {} tokens; inputs hold 1 to {} tokens",
                    ids.len(),
                    self.max_seq_length()
                )));
            }
        }
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let h = self.encoder.cfg.hidden_size;
        let mut out = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < inputs.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < inputs.len() && (end == start || tokens + inputs[end].len() <= BATCH_TOKENS)
            {
                tokens += inputs[end].len();
                end += 1;
            }
            let batch: Vec<&[u32]> = inputs[start..end].iter().map(Vec::as_slice).collect();
            let states = self.encoder.forward(&self.pool, &batch)?;
            let mut row = 0;
            for ids in &batch {
                let s = &states[row * h..(row + ids.len()) * h];
                let mut v = pooling::pool(s, h, self.pipeline.pooling);
                if self.pipeline.normalize {
                    pooling::l2_normalize(&mut v);
                }
                out.push(v);
                row += ids.len();
            }
            start = end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_names() {
        assert_eq!(
            default_served_name("bundled://all-minilm-l6-v2"),
            "all-MiniLM-L6-v2"
        );
        assert_eq!(
            default_served_name("hf://sentence-transformers/all-mpnet-base-v2"),
            "all-mpnet-base-v2"
        );
    }

    #[test]
    fn a_gguf_file_is_not_an_embedding_model() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("m.gguf");
        std::fs::write(&f, b"GGUF").unwrap();
        let e = EmbeddingModel::load(f.to_str().unwrap(), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sentence-transformers directory"), "{e}");
        let e = EmbeddingModel::open(d.path(), 1).unwrap_err().to_string();
        assert!(e.contains("no config.json"), "{e}");
    }
}
