//! The engine's per-token logprobs ([`TokenLogprobs`]: ids and numbers) rendered in the two
//! OpenAI shapes: chat's `{"content": [{token, logprob, bytes, top_logprobs}]}` and the legacy
//! completions' parallel arrays (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).
//!
//! Token strings are each token's piece, special tokens written out (`<|im_end|>`), with bytes
//! that are not UTF-8 on their own (part of a character) shown as U+FFFD; `bytes` has them
//! exactly.

use super::types::{
    ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, OrderedLogprobs, TopLogprob,
};
use crate::sampler::TokenLogprobs;

/// Renders token ids: `piece(id)` is the token's bytes.
pub struct Renderer<F: Fn(u32) -> Vec<u8>> {
    piece: F,
}

impl<F: Fn(u32) -> Vec<u8>> Renderer<F> {
    pub fn new(piece: F) -> Self {
        Renderer { piece }
    }

    fn token(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = (self.piece)(id);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    /// Chat's shape for `tokens`.
    pub fn chat(&self, tokens: &[TokenLogprobs]) -> ChatLogprobs {
        ChatLogprobs {
            content: tokens
                .iter()
                .map(|t| {
                    let (token, bytes) = self.token(t.id);
                    ChatTokenLogprob {
                        token,
                        logprob: t.logprob,
                        bytes,
                        top_logprobs: t
                            .top
                            .iter()
                            .map(|&(id, logprob)| {
                                let (token, bytes) = self.token(id);
                                TopLogprob {
                                    token,
                                    logprob,
                                    bytes,
                                }
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }

    /// The legacy completions shape for `tokens`, whose text starts at character `offset` of
    /// the completion; also returns the offset after them (for the next streamed chunk). Each
    /// `top_logprobs` object holds the top alternatives and, like vLLM, the chosen token.
    pub fn completion(
        &self,
        tokens: &[TokenLogprobs],
        mut offset: usize,
    ) -> (CompletionLogprobs, usize) {
        let mut out = CompletionLogprobs::default();
        for t in tokens {
            let (token, _) = self.token(t.id);
            let mut top = OrderedLogprobs::default();
            for &(id, lp) in t.top.iter().chain(std::iter::once(&(t.id, t.logprob))) {
                let (s, _) = self.token(id);
                // Two ids can render to the same string; the object keeps the likelier one.
                if !top.0.iter().any(|(k, _)| *k == s) {
                    top.0.push((s, lp));
                }
            }
            out.text_offset.push(offset);
            offset += token.chars().count();
            out.tokens.push(token);
            out.token_logprobs.push(t.logprob);
            out.top_logprobs.push(top);
        }
        (out, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renderer() -> Renderer<impl Fn(u32) -> Vec<u8>> {
        Renderer::new(|id| match id {
            0 => b"<|im_end|>".to_vec(),
            1 => b"Hi".to_vec(),
            2 => b" there".to_vec(),
            3 => vec![0xE2, 0x82], // the first two bytes of "€"
            _ => b"Hi".to_vec(),   // renders like token 1
        })
    }

    fn tok(id: u32, logprob: f32, top: &[(u32, f32)]) -> TokenLogprobs {
        TokenLogprobs {
            id,
            logprob,
            top: top.to_vec(),
        }
    }

    #[test]
    fn chat_shape() {
        let v = renderer().chat(&[tok(1, -0.1, &[(1, -0.1), (3, -2.5)]), tok(0, -0.5, &[])]);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"content": [
                {"token": "Hi", "logprob": -0.1f32, "bytes": [72, 105], "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1f32, "bytes": [72, 105]},
                    {"token": "\u{fffd}", "logprob": -2.5f32, "bytes": [0xE2, 0x82]}]},
                {"token": "<|im_end|>", "logprob": -0.5f32,
                 "bytes": b"<|im_end|>".to_vec(), "top_logprobs": []}
            ]})
        );
    }

    #[test]
    fn completion_shape_with_offsets_across_chunks() {
        let r = renderer();
        let (a, next) = r.completion(&[tok(1, -0.25, &[(9, -0.2), (1, -0.25)])], 0);
        assert_eq!(next, 2);
        let (b, next) = r.completion(&[tok(2, -1.0, &[]), tok(1, -0.5, &[(2, -0.1)])], next);
        assert_eq!(next, 10);
        assert_eq!(b.text_offset, vec![2, 8]);
        let json = serde_json::to_value(&a).unwrap();
        // Ids 9 and 1 both render as "Hi": the likelier entry stays.
        assert_eq!(
            json,
            serde_json::json!({"tokens": ["Hi"], "token_logprobs": [-0.25f32],
                "top_logprobs": [{"Hi": -0.2f32}], "text_offset": [0]})
        );
        // logprobs: 0 still names the chosen token; order is most likely first.
        let order = serde_json::to_string(&b.top_logprobs).unwrap();
        assert_eq!(order, r#"[{" there":-1.0},{" there":-0.1,"Hi":-0.5}]"#);
    }
}
