//! Ryzanstein engine and OpenAI-compatible HTTP server.
//!
//! Map of the crate (one concern per module):
//! - [`gguf`]: memory-mapped GGUF reader (metadata, tensor infos, zero-copy views).
//! - [`safetensors_dir`]: Hugging Face directories (config.json, *.safetensors, tokenizer.json).
//! - [`source`]: model sources (local path, `hf://org/repo[@rev]`, `https://...`, `bundled://...`) resolved into files.
//! - [`tokenizer`]: tokenizers built from GGUF metadata or tokenizer.json; [`chat_template`] renders prompts.
//! - [`models`]: architectures (llama family) over the `ryzanstein-kernels` crate.
//! - [`embeddings`]: the BERT sentence encoder behind `/v1/embeddings` (all-MiniLM-L6-v2).
//! - [`sampler`]: logits to token ids (greedy, temperature, top-k/p, min-p, penalties, seed).
//! - [`structured`]: JSON-schema-constrained decoding (`response_format`, tool calls).
//! - [`engine`]: owns the model on a worker thread, runs generation requests, streams tokens.
//! - [`api`]: the OpenAI-compatible HTTP surface (axum).

pub mod api;
pub mod chat_template;
pub mod embeddings;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod models;
pub mod safetensors_dir;
pub mod sampler;
pub mod source;
pub mod structured;
pub mod telemetry;
pub mod tokenizer;

pub use error::{Error, Result};
