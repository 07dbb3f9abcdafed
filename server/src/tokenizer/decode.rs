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
            self.tok.piece_bytes(id, false)?; // range check
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;

    /// A WordPiece tokenizer (decoded as a whole sequence, like BERT's).
    fn wordpiece() -> Arc<Tokenizer> {
        let vocab: tokenizers::models::bpe::Vocab = [
            ("[UNK]", 0),
            ("[CLS]", 1),
            ("hello", 2),
            ("world", 3),
            ("##s", 4),
        ]
        .into_iter()
        .map(|(t, i)| (t.to_owned(), i))
        .collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(Whitespace {}));
        inner.with_decoder(Some(WordPieceDecoder::default()));
        inner.add_special_tokens(&[tokenizers::AddedToken::from("[CLS]", true)]);
        Arc::new(Tokenizer::from_hf_tokenizer(inner, None).unwrap())
    }

    #[test]
    fn whole_sequence_decoders_stream_their_differences() {
        let tok = wordpiece();
        let ids = tok.encode("[CLS] hello worlds", false).unwrap();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(tok.decode(&ids, true).unwrap(), "hello worlds");
        let mut dec = IncrementalDecoder::new(tok.clone(), true);
        let chunks: Vec<String> = ids.iter().map(|&i| dec.push(i).unwrap()).collect();
        assert_eq!(chunks, ["", "hello", " world", "s"]);
        assert_eq!(dec.flush(), "");
        // After a flush the decoder starts a new sequence.
        assert_eq!(dec.push(3).unwrap(), "world");
    }

    #[test]
    fn out_of_range_ids_are_errors() {
        let tok = wordpiece();
        let mut dec = IncrementalDecoder::new(tok, true);
        let e = dec.push(99).unwrap_err().to_string();
        assert!(e.contains("outside the vocabulary"), "{e}");
    }
}
