//! Building a tokenizer from GGUF `tokenizer.ggml.*` metadata.

use super::Tokenizer;
use crate::error::{Error, Result};

pub(super) fn build(g: &crate::gguf::GgufFile) -> Result<Tokenizer> {
    let _ = g;
    Err(Error::Tokenizer("from_gguf: being written".into()))
}
