//! Tokenizers built from GGUF metadata ([`gguf`]) or a Hugging Face `tokenizer.json`, with the
//! special-token facts the engine needs (BOS, end-of-generation ids) and llama.cpp's rules for
//! splitting special tokens out of text.

mod decode;
mod gguf;
mod pretokenizers;

use std::path::Path;

pub use decode::IncrementalDecoder;

use crate::error::{Error, Result};

/// A tokenizer plus the facts about its special tokens that generation needs.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &crate::gguf::GgufFile) -> Result<Tokenizer> {
        gguf::build(g)
    }

    /// Builds a tokenizer from a Hugging Face `tokenizer.json` and, when present, the parsed
    /// `tokenizer_config.json` (for `add_bos_token`, `bos_token`, `eos_token`).
    pub fn from_hf_files(
        tokenizer_json: &Path,
        tokenizer_config: Option<&serde_json::Value>,
    ) -> Result<Tokenizer> {
        let _ = (tokenizer_json, tokenizer_config);
        Err(Error::Tokenizer("from_hf_files: being written".into()))
    }

    /// Token ids for `text`. Special tokens written in the text become their single ids (like
    /// llama.cpp with `parse_special = true`). `add_bos` prepends the BOS id when the vocabulary
    /// has one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let _ = (text, add_bos);
        Err(Error::Tokenizer("encode: being written".into()))
    }

    /// Text of `ids`; `skip_special` leaves out control tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let _ = (ids, skip_special);
        Err(Error::Tokenizer("decode: being written".into()))
    }

    /// The decoded text of one token (lossy when the token is part of a multi-byte character).
    pub fn token_piece(&self, id: u32) -> Option<String> {
        let _ = id;
        None
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The beginning-of-sequence id, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        None
    }

    /// Whether prompts get a BOS prepended by default.
    pub fn add_bos(&self) -> bool {
        false
    }

    /// Every id that ends generation (EOS, EOT, EOM and known end-of-turn control tokens).
    pub fn eos_ids(&self) -> &[u32] {
        &[]
    }

    /// The id whose text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        let _ = id;
        false
    }
}
