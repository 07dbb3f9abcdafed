//! From the byte matcher to tokens: which vocabulary entries may come next.
//!
//! [`TokenTable`] holds every token's bytes once (built with the engine). For a step,
//! [`Constraint::mask`] sets the logit of every token that cannot extend a valid prefix to
//! `-inf`: tokens are grouped by first byte, a group is skipped whole when its first byte is
//! refused, and inside a string a token of plain text is checked without copying the matcher.
//! When the value is complete only end-of-generation tokens stay. Near the end of the token
//! budget only tokens that leave room to close the value stay: each closing byte is a
//! one-byte token, so a value whose shortest completion is `k` bytes closes within `k` tokens.

use std::sync::Arc;

use super::matcher::{Matcher, StrStep};
use super::schema::Grammar;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The vocabulary as bytes.
#[derive(Debug)]
pub struct TokenTable {
    /// Each token's bytes; empty for tokens never allowed (special or empty ones).
    bytes: Vec<Box<[u8]>>,
    /// Token ids by their first byte.
    by_first: Vec<Vec<u32>>,
    /// Whether the token is plain string text (no quote, backslash or control byte).
    plain: Vec<bool>,
    /// End-of-generation ids.
    eog: Vec<u32>,
}

impl TokenTable {
    pub fn new(tokenizer: &Tokenizer) -> TokenTable {
        let n = tokenizer.vocab_size();
        let pieces = (0..n as u32).map(|id| {
            if tokenizer.is_special(id) {
                Vec::new()
            } else {
                tokenizer
                    .piece_bytes(id, false)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default()
            }
        });
        TokenTable::from_pieces(pieces, tokenizer.eos_ids().to_vec())
    }

    /// A table of these token byte strings (id = position) and end-of-generation ids.
    pub fn from_pieces(pieces: impl IntoIterator<Item = Vec<u8>>, eog: Vec<u32>) -> TokenTable {
        let mut bytes = Vec::new();
        let mut by_first = vec![Vec::new(); 256];
        let mut plain = Vec::new();
        for (id, p) in pieces.into_iter().enumerate() {
            let p = if eog.contains(&(id as u32)) {
                Vec::new()
            } else {
                p
            };
            if let Some(&b) = p.first() {
                by_first[b as usize].push(id as u32);
            }
            plain.push(!p.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20));
            bytes.push(p.into_boxed_slice());
        }
        TokenTable {
            bytes,
            by_first,
            plain,
            eog,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// One sequence's constraint: the matcher of what it generated and the vocabulary.
#[derive(Debug, Clone)]
pub struct Constraint {
    matcher: Matcher,
    table: Arc<TokenTable>,
    /// Scratch matchers, kept to reuse their allocations.
    probe: Matcher,
    scratch: Matcher,
}

impl Constraint {
    pub fn new(grammar: Arc<Grammar>, table: Arc<TokenTable>) -> Constraint {
        let matcher = Matcher::new(grammar);
        Constraint {
            probe: matcher.clone(),
            scratch: matcher.clone(),
            matcher,
            table,
        }
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Whether the output so far is a whole value.
    pub fn complete(&self) -> bool {
        self.matcher.accepting()
    }

    /// The tokens allowed next when `remaining` tokens (this one included) may still be
    /// generated, sorted. Never empty: when the budget cannot be met, the tokens that come
    /// closest to closing are allowed.
    pub fn allowed(&mut self, remaining: usize) -> Result<Vec<u32>> {
        let t = &*self.table;
        // (token, fewest bytes that close the value after it)
        let mut valid: Vec<(u32, usize)> = Vec::new();
        let plain = self.matcher.plain_string();
        let base = self.matcher.min_close();
        for (first, ids) in t.by_first.iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            self.probe.set_from(&self.matcher);
            if !self.probe.feed(first as u8) {
                continue;
            }
            for &id in ids {
                let bytes = &t.bytes[id as usize];
                if let (Some(s), true) = (plain, t.plain[id as usize]) {
                    // Plain text inside a string: only the UTF-8 check can refuse it, and only
                    // what the string still owes changes.
                    let mut st = s;
                    let ok = bytes.iter().all(|&b| match st.feed(b) {
                        StrStep::Continue(n) => {
                            st = n;
                            true
                        }
                        _ => false,
                    });
                    if ok {
                        valid.push((id, base - s.pending() + st.pending()));
                    }
                    continue;
                }
                self.scratch.set_from(&self.probe);
                if self.scratch.feed_all(&bytes[1..]) {
                    valid.push((id, self.scratch.min_close()));
                }
            }
        }
        let accepting = self.matcher.accepting();
        // After this token, one for each closing byte and one for the end; with fewer than
        // two tokens left only the end fits.
        let mut allowed: Vec<u32> = match remaining.checked_sub(2) {
            Some(limit) => valid
                .iter()
                .filter(|&&(_, c)| c <= limit)
                .map(|&(id, _)| id)
                .collect(),
            None => Vec::new(),
        };
        if accepting {
            allowed.extend_from_slice(&t.eog);
        }
        if allowed.is_empty() {
            let Some(best) = valid.iter().map(|&(_, c)| c).min() else {
                return Err(Error::Engine(
                    "constrained decoding reached a state no token can continue; this is a bug, \
                     please report it with the schema"
                        .into(),
                ));
            };
            allowed = valid
                .iter()
                .filter(|&&(_, c)| c == best)
                .map(|&(id, _)| id)
                .collect();
        }
        allowed.sort_unstable();
        Ok(allowed)
    }

    /// Sets every logit but those of [`allowed`](Self::allowed) tokens to `-inf`.
    pub fn mask(&mut self, logits: &mut [f32], remaining: usize) -> Result<()> {
        let allowed = self.allowed(remaining)?;
        let mut next = allowed.iter().peekable();
        for (id, l) in logits.iter_mut().enumerate() {
            if next.peek() == Some(&&(id as u32)) {
                next.next();
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Takes the sampled token `id` (an end-of-generation one only when complete).
    pub fn accept(&mut self, id: u32) -> Result<()> {
        let t = &*self.table;
        if t.eog.contains(&id) {
            return if self.matcher.accepting() {
                Ok(())
            } else {
                Err(Error::Engine(format!(
                    "constrained decoding ended with token {id} before the value was complete"
                )))
            };
        }
        let bytes = t.bytes.get(id as usize).map_or(&[][..], |b| &b[..]);
        if bytes.is_empty() || !self.matcher.feed_all(bytes) {
            return Err(Error::Engine(format!(
                "constrained decoding sampled token {id}, which the grammar does not allow"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A toy vocabulary: every single byte, a few words, an end token (id 300).
    fn table() -> Arc<TokenTable> {
        let mut pieces: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for w in [
            &b"{\""[..],
            b"\":",
            b"\",",
            b"name",
            b" name",
            b"true",
            b"  ",
            b"\"}",
            b"hello world",
            b"\xC3",
            b"\xA9",
        ] {
            pieces.push(w.to_vec());
        }
        while pieces.len() < 300 {
            pieces.push(Vec::new());
        }
        pieces.push(Vec::new());
        Arc::new(TokenTable::from_pieces(pieces, vec![300]))
    }

    fn piece(t: &TokenTable, id: u32) -> &[u8] {
        &t.bytes[id as usize]
    }

    #[test]
    fn only_continuations_and_then_only_the_end() {
        let t = table();
        let g = Arc::new(
            Grammar::from_schema(&json!({"type": "object",
                "properties": {"name": {"type": "string"}}, "required": ["name"]}))
            .unwrap(),
        );
        let mut c = Constraint::new(g, t.clone());
        let first = c.allowed(100).unwrap();
        let texts: Vec<&[u8]> = first.iter().map(|&id| piece(&t, id)).collect();
        assert!(texts.contains(&&b"{"[..]) && texts.contains(&&b"{\""[..]));
        assert!(texts.contains(&&b" "[..]) && !texts.contains(&&b"  "[..]));
        assert!(!texts.contains(&&b"["[..]));
        for id in [256u32, 259] {
            // `{"` then `name`
            assert!(c.allowed(100).unwrap().contains(&id));
            c.accept(id).unwrap();
        }
        c.accept(257).unwrap(); // `":`
        let in_value = c.allowed(100).unwrap();
        assert!(in_value.contains(&(b'"' as u32)) && !in_value.contains(&300));
        c.accept(b'"' as u32).unwrap();
        let in_string = c.allowed(100).unwrap();
        assert!(in_string.contains(&264), "plain text in a string"); // hello world
        assert!(in_string.contains(&263)); // `"}` closes both
        assert!(
            in_string.contains(&265) && !in_string.contains(&266),
            "UTF-8 order"
        );
        c.accept(263).unwrap();
        assert!(c.complete());
        assert_eq!(c.allowed(100).unwrap(), vec![300]);
        c.accept(300).unwrap();
    }

    #[test]
    fn a_complete_value_with_one_token_left_ends() {
        let t = table();
        let g = Arc::new(Grammar::from_schema(&json!({"type": "integer"})).unwrap());
        let mut c = Constraint::new(g, t);
        c.accept(b'7' as u32).unwrap();
        assert!(c.allowed(2).unwrap().contains(&(b'1' as u32)));
        assert_eq!(c.allowed(1).unwrap(), vec![300]);
    }

    #[test]
    fn the_budget_forces_the_value_closed() {
        let t = table();
        let g = Arc::new(
            Grammar::from_schema(&json!({"type": "array", "items": {"type": "string"}})).unwrap(),
        );
        let mut c = Constraint::new(g, t.clone());
        c.accept(b'[' as u32).unwrap();
        c.accept(b'"' as u32).unwrap();
        // `"]` is the shortest close. Three tokens left (this, one more, the end): only the
        // quote keeps it within reach (alone, or after a `{` as text: the `{"` token); text
        // alone would need a fourth.
        assert!(c.allowed(100).unwrap().contains(&264));
        assert_eq!(c.allowed(3).unwrap(), vec![b'"' as u32, 256]);
        // Two left: nothing closes in time, so the tokens closest to closing stay.
        assert_eq!(c.allowed(2).unwrap(), vec![b'"' as u32, 256]);
        for id in [b'"' as u32, b']' as u32] {
            c.accept(id).unwrap();
        }
        assert!(c.complete());
        assert!(c.accept(b'x' as u32).is_err(), "nothing after the value");
    }
}
