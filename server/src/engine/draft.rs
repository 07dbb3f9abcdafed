//! Prompt-lookup drafting for speculative decoding: guess the next tokens by finding the
//! sequence's latest n-gram earlier in its own tokens and proposing what followed it there.
//!
//! Generation that repeats its input (editing code, quoting a document, filling a template)
//! continues text it has already seen; every guessed token the model confirms is a forward
//! step saved. The guesses cost no model: the sequence's tokens are the draft model. The
//! engine verifies a draft in one forward pass (the last token and the drafted ones, each
//! row as a decode step) and keeps the drafted tokens up to the first one the model would not
//! have produced itself, so the output is exactly that of decoding one token at a time.

/// How drafts are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DraftOptions {
    /// Tokens drafted at most per step (`--draft-max`).
    pub max_tokens: usize,
    /// The longest n-gram matched (`--draft-ngram`); shorter ones are tried down to
    /// `min_ngram` (`--draft-ngram-min`; a one-token match is a weak guess).
    pub ngram: usize,
    pub min_ngram: usize,
}

impl Default for DraftOptions {
    fn default() -> Self {
        DraftOptions {
            max_tokens: 4,
            ngram: 3,
            min_ngram: 2,
        }
    }
}

/// The tokens that followed the latest earlier occurrence of `tokens`' last n-gram (the
/// longest `n` from `opts.ngram` down to `opts.min_ngram` that occurs), at most `limit` of
/// them; empty when nothing matches.
pub fn propose(tokens: &[u32], opts: DraftOptions, limit: usize) -> Vec<u32> {
    let limit = limit.min(opts.max_tokens);
    if limit == 0 {
        return Vec::new();
    }
    let shortest = opts.min_ngram.max(1);
    for n in (shortest..=opts.ngram.min(tokens.len().saturating_sub(1))).rev() {
        let tail = &tokens[tokens.len() - n..];
        // Latest start `s < len - n` with tokens[s..s + n] == tail and something after it.
        let found = (0..tokens.len() - n)
            .rev()
            .find(|&s| &tokens[s..s + n] == tail);
        if let Some(s) = found {
            let from = s + n;
            let to = (from + limit).min(tokens.len());
            return tokens[from..to].to_vec();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: DraftOptions = DraftOptions {
        max_tokens: 4,
        ngram: 3,
        min_ngram: 1,
    };

    #[test]
    fn the_latest_longest_match_proposes_what_followed() {
        // "1 2 3 4 5 ... 1 2 3" -> 4 5 6 7
        let t = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3];
        assert_eq!(propose(&t, OPTS, 8), [4, 5, 6, 7]);
        // The latest occurrence wins: "7 1 2 ... 7 1 2 ... 7" after the last 7 1 2 is 9.
        let t = [7, 1, 2, 5, 7, 1, 2, 9, 3, 7, 1, 2];
        assert_eq!(propose(&t, OPTS, 1), [9]);
    }

    #[test]
    fn shorter_ngrams_are_tried_and_drafts_stop_at_the_end() {
        // No earlier "8 9 4" nor "9 4", but an earlier 4: what followed it.
        let t = [4, 10, 11, 8, 9, 4];
        assert_eq!(propose(&t, OPTS, 4), [10, 11, 8, 9]);
        // The match's continuation runs into the present: only what exists is proposed.
        let t = [5, 6, 5];
        assert_eq!(propose(&t, OPTS, 4), [6, 5]);
        // Unless one-token matches are too weak to use.
        let two = DraftOptions {
            min_ngram: 2,
            ..OPTS
        };
        assert!(propose(&[4, 10, 11, 8, 9, 4], two, 4).is_empty());
        assert_eq!(propose(&[8, 9, 1, 8, 9], two, 4), [1, 8, 9]);
    }

    #[test]
    fn nothing_to_match_proposes_nothing() {
        assert!(propose(&[1, 2, 3, 4], OPTS, 4).is_empty());
        assert!(propose(&[1], OPTS, 4).is_empty());
        assert!(propose(&[1, 1, 1], OPTS, 0).is_empty());
        let off = DraftOptions {
            max_tokens: 0,
            ..OPTS
        };
        assert!(propose(&[1, 2, 1, 2], off, 4).is_empty());
    }
}
