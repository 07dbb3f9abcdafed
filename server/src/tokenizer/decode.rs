//! Incremental decoding for streaming: text comes out only once it is complete UTF-8.
//!
//! Byte-level BPE tokens (and SentencePiece byte-fallback tokens) can end in the middle of a
//! multi-byte character; the bytes of an unfinished character are held back until the tokens
//! that finish it arrive, so a stream never shows a replacement character that the full decode
//! would not show.

use std::sync::Arc;

use super::Tokenizer;
use crate::error::Result;

/// Feeds ids one at a time and returns the text they complete.
#[derive(Debug)]
pub struct IncrementalDecoder {
    tok: Arc<Tokenizer>,
    skip_special: bool,
    /// Bytes of a character that is not finished yet (at most 3).
    pending: Vec<u8>,
    /// For tokenizers decoded as a whole sequence: every id so far and the text already
    /// returned.
    ids: Vec<u32>,
    emitted: String,
}

impl IncrementalDecoder {
    /// A decoder over `tok`; `skip_special` leaves out control tokens (as in
    /// [`Tokenizer::decode`]).
    pub fn new(tok: Arc<Tokenizer>, skip_special: bool) -> Self {
        IncrementalDecoder {
            tok,
            skip_special,
            pending: Vec::new(),
            ids: Vec::new(),
            emitted: String::new(),
        }
    }

    /// Adds one id; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        if self.tok.decode_with_inner {
            self.ids.push(id);
            let full = self.tok.decode(&self.ids, self.skip_special)?;
            // Text whose end may still change (a replacement character) waits for more ids.
            let stable = full.trim_end_matches('\u{fffd}');
            let out = match stable.strip_prefix(self.emitted.as_str()) {
                Some(new) => new.to_owned(),
                None => String::new(),
            };
            self.emitted.push_str(&out);
            return Ok(out);
        }
        let piece = self.tok.piece_bytes(id, self.skip_special)?;
        self.pending.extend_from_slice(piece);
        Ok(self.take_complete())
    }

    /// Returns whatever is held back (bytes that never became a character come out as
    /// U+FFFD) and resets the decoder for a new sequence.
    pub fn flush(&mut self) -> String {
        let out = if self.tok.decode_with_inner {
            let full = self
                .tok
                .decode(&self.ids, self.skip_special)
                .unwrap_or_default();
            full.strip_prefix(self.emitted.as_str())
                .unwrap_or_default()
                .to_owned()
        } else {
            String::from_utf8_lossy(&self.pending).into_owned()
        };
        self.pending.clear();
        self.ids.clear();
        self.emitted.clear();
        out
    }

    /// Takes the longest prefix of `pending` that can no longer change: complete characters,
    /// and invalid bytes (as U+FFFD), keeping only an unfinished character at the end.
    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid])
                            .expect("valid prefix"),
                    );
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{fffd}');
                            start += valid + bad;
                        }
                        None => {
                            // An unfinished character at the end: hold it back.
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}
