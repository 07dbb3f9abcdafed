//! What the next forward step runs: the pure part of continuous batching.
//!
//! Every decoding sequence runs its one new token in every step, so no running sequence ever
//! stalls. The rest of the step's token budget goes to prompts still being prefilled, oldest
//! first, in chunks: a long prompt is spread over several steps instead of holding the decoding
//! sequences up for its whole length, and a short one is finished in the step it arrives.

/// What one running sequence has left to run before its next token can be sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Its last sampled token and the tokens drafted after it (speculative decoding): this
    /// many rows, at least one.
    Decode(usize),
    /// This many prompt tokens are still to be run.
    Prefill(usize),
}

/// The tokens each sequence runs in the next step (`0`: none), for sequences in arrival order,
/// under a budget of `budget` rows. Decoding sequences always get their rows, even past the
/// budget; prefill chunks fill what remains, at least one row in all when anything is left.
pub fn plan(needs: &[Need], budget: usize) -> Vec<usize> {
    let decoding: usize = needs
        .iter()
        .map(|n| match n {
            Need::Decode(rows) => *rows,
            Need::Prefill(_) => 0,
        })
        .sum();
    let mut left = budget.saturating_sub(decoding);
    if decoding == 0 {
        left = left.max(1);
    }
    needs
        .iter()
        .map(|need| match *need {
            Need::Decode(rows) => rows,
            Need::Prefill(pending) => {
                let n = pending.min(left);
                left -= n;
                n
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Need::Prefill;
    use super::*;

    #[allow(non_upper_case_globals)]
    const Decode: Need = Need::Decode(1);

    #[test]
    fn decoders_always_run_and_prefills_share_the_rest_oldest_first() {
        assert_eq!(
            plan(&[Decode, Prefill(300), Decode, Prefill(50)], 256),
            [1, 254, 1, 0]
        );
        assert_eq!(plan(&[Prefill(10), Prefill(20), Decode], 64), [10, 20, 1]);
    }

    #[test]
    fn more_decoders_than_budget_still_all_run() {
        assert_eq!(plan(&[Decode; 5], 3), [1; 5]);
        assert_eq!(plan(&[Decode, Decode, Prefill(9)], 2), [1, 1, 0]);
    }

    #[test]
    fn drafted_rows_count_against_the_budget() {
        assert_eq!(
            plan(&[Need::Decode(5), Prefill(100), Decode], 16),
            [5, 10, 1]
        );
        assert_eq!(plan(&[Need::Decode(5), Prefill(100)], 4), [5, 0]);
    }

    #[test]
    fn a_prefill_alone_always_progresses() {
        assert_eq!(plan(&[Prefill(9)], 0), [1]);
        assert_eq!(plan(&[Prefill(1000)], 256), [256]);
        assert_eq!(plan(&[], 256), Vec::<usize>::new());
    }

    #[test]
    fn the_plan_never_exceeds_the_budget_beyond_the_decoders() {
        let needs = [Prefill(7), Decode, Prefill(3), Prefill(100), Decode];
        for budget in 0..130 {
            let p = plan(&needs, budget);
            let prefill: usize = p[0] + p[2] + p[3];
            assert!(prefill <= budget.saturating_sub(2), "{budget}: {p:?}");
            assert_eq!((p[1], p[4]), (1, 1));
            assert!(p[0] <= 7 && p[2] <= 3 && p[3] <= 100);
        }
    }
}
