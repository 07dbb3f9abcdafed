//! The KV states of finished sequences, kept for the next requests that share their prefix.
//!
//! A follow-up turn of a conversation repeats everything before it, so a finished sequence's
//! state is kept (with the tokens it holds) and a new request starts from the idle state with
//! the longest common prefix, running only the rest of its prompt. Only whole tokens of the
//! same chain are shared, and the state is truncated to the common prefix before use, so
//! nothing of one conversation reaches another. The oldest idle state goes first when there is
//! no room.

use std::collections::VecDeque;

use crate::models::SeqState;

/// A state and the tokens it holds.
pub(super) struct Held {
    pub state: SeqState,
    pub tokens: Vec<u32>,
}

/// Idle states, most recently used first.
pub(super) struct IdleStates {
    held: VecDeque<Held>,
    capacity: usize,
}

impl IdleStates {
    pub fn new(capacity: usize) -> IdleStates {
        IdleStates {
            held: VecDeque::new(),
            capacity,
        }
    }

    /// A state for `prompt`: the idle one sharing the longest prefix with it (truncated to that
    /// prefix, and never the whole prompt: the last prompt token must run for its logits), else
    /// the least recently used one emptied, else `fresh()`. Returns it with how many prompt
    /// tokens it already holds.
    pub fn take(&mut self, prompt: &[u32], fresh: impl FnOnce() -> SeqState) -> (Held, usize) {
        let limit = prompt.len().saturating_sub(1);
        let best = self
            .held
            .iter()
            .enumerate()
            .map(|(i, h)| (i, common_prefix(&h.tokens, prompt).min(limit)))
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)));
        let (index, reused) = match best {
            Some((i, n)) if n > 0 => (Some(i), n),
            _ if !self.held.is_empty() && self.held.len() >= self.capacity => {
                (Some(self.held.len() - 1), 0)
            }
            _ => (None, 0),
        };
        let held = match index.and_then(|i| self.held.remove(i)) {
            Some(mut h) => {
                h.state.truncate(reused);
                h.tokens.truncate(reused);
                h
            }
            None => Held {
                state: fresh(),
                tokens: Vec::new(),
            },
        };
        (held, reused)
    }

    /// Keeps a finished sequence's state, dropping the oldest beyond capacity.
    pub fn put(&mut self, held: Held) {
        if self.capacity == 0 {
            return;
        }
        self.held.push_front(held);
        self.held.truncate(self.capacity);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SeqState {
        SeqState::new(1, 64)
    }

    fn held(tokens: &[u32]) -> Held {
        let mut state = state();
        state.len = tokens.len();
        Held {
            state,
            tokens: tokens.to_vec(),
        }
    }

    #[test]
    fn the_longest_shared_prefix_wins_and_is_truncated_to_it() {
        let mut idle = IdleStates::new(4);
        idle.put(held(&[1, 2, 3, 4, 5]));
        idle.put(held(&[1, 2, 9]));
        let (h, reused) = idle.take(&[1, 2, 3, 4, 7, 8], state);
        assert_eq!(reused, 4);
        assert_eq!(h.tokens, [1, 2, 3, 4]);
        assert_eq!(h.state.len(), 4);
        assert_eq!(idle.len(), 1);
    }

    #[test]
    fn the_last_prompt_token_always_runs() {
        let mut idle = IdleStates::new(4);
        idle.put(held(&[1, 2, 3]));
        let (h, reused) = idle.take(&[1, 2, 3], state);
        assert_eq!((reused, h.state.len()), (2, 2));
    }

    #[test]
    fn no_shared_prefix_gives_a_fresh_state_until_full_then_the_oldest_emptied() {
        let mut idle = IdleStates::new(2);
        idle.put(held(&[5, 6]));
        let (h, reused) = idle.take(&[1, 2], state);
        assert_eq!((reused, h.state.len(), idle.len()), (0, 0, 1));
        idle.put(held(&[7, 8]));
        idle.put(held(&[9, 9]));
        assert_eq!(idle.len(), 2);
        let (h, reused) = idle.take(&[1, 2], state);
        assert_eq!((reused, h.tokens.len(), idle.len()), (0, 0, 1));
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut idle = IdleStates::new(0);
        idle.put(held(&[1, 2]));
        assert_eq!(idle.len(), 0);
    }
}
