//! Logits to token ids, following llama.cpp's default sampler chain:
//! penalties → top-k → top-p → min-p → temperature → draw.
//!
//! A temperature of 0 (anything at or below [`GREEDY_TEMPERATURE`]) is greedy: after the
//! penalties, the token with the highest logit wins, the lowest id on ties (llama.cpp's greedy
//! sampler keeps the first maximum). Draws use a ChaCha20 generator seeded from
//! [`SamplingParams::seed`], so the same seed, prompt and parameters give the same tokens.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Temperatures at or below this are treated as greedy decoding.
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// How to pick the next token. Defaults are llama.cpp's (`llama-server`) defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the draw; 0 means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of recently seen tokens; 1 disables.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every recently seen token; 0 disables.
    pub presence_penalty: f32,
    /// Subtracted from a recently seen token's logit once per occurrence; 0 disables.
    pub frequency_penalty: f32,
    /// How many of the latest tokens the penalties look at; 0 disables the penalties.
    pub penalty_last_n: usize,
    /// Seed of the draw; `None` picks a random one.
    pub seed: Option<u64>,
    /// Added to the logits of these token ids before anything else (OpenAI's `logit_bias`):
    /// -100 effectively bans a token, 100 effectively forces it.
    pub logit_bias: Vec<(u32, f32)>,
    /// Report the chosen token's log-probability and this many top alternatives (see
    /// [`token_logprobs`]); `None` reports nothing. Not a sampling transform: the reported
    /// numbers come from the model's raw logits.
    pub logprobs: Option<usize>,
    /// Constrain the output to JSON this grammar accepts (`response_format`, tool calls): the
    /// engine masks the tokens that cannot extend it before each draw (see
    /// [`crate::structured`]).
    pub grammar: Option<std::sync::Arc<crate::structured::Grammar>>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: None,
            logit_bias: Vec::new(),
            logprobs: None,
            grammar: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (argmax), no penalties.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= GREEDY_TEMPERATURE
    }

    fn has_penalties(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repetition_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

/// One sequence's sampler: its parameters and its random generator.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha20Rng,
    /// Reused candidate buffer (id, logit), to avoid an allocation per token.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => ChaCha20Rng::seed_from_u64(seed),
            None => ChaCha20Rng::from_entropy(),
        };
        Sampler {
            params,
            rng,
            candidates: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Pick the next token from `logits` (modified in place by the logit bias and the
    /// penalties). `history` is every token of the sequence so far (prompt and generated); the
    /// penalties look at its last `penalty_last_n` tokens.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        assert!(!logits.is_empty(), "sample() needs at least one logit");
        apply_logit_bias(logits, &self.params.logit_bias);
        if self.params.has_penalties() {
            apply_penalties(logits, history, &self.params);
        }
        if self.params.is_greedy() {
            return argmax(logits);
        }

        let p = &self.params;
        let cands = &mut self.candidates;
        cands.clear();
        cands.extend(
            logits
                .iter()
                .enumerate()
                // A masked token (-inf) is never drawn, not even as the rounding fallback.
                .filter(|(_, l)| !l.is_nan() && **l != f32::NEG_INFINITY)
                .map(|(i, &l)| (i as u32, l)),
        );
        if cands.is_empty() {
            // Every logit is NaN or masked: nothing to rank; stay deterministic.
            return 0;
        }
        // Sort descending by logit (lowest id first on ties), only as far as needed.
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cands.len() {
            cands.select_nth_unstable_by(p.top_k - 1, by_logit);
            cands.truncate(p.top_k);
        }
        cands.sort_unstable_by(by_logit);

        // top-p over the softmax of what is left.
        if p.top_p < 1.0 {
            let probs = softmax(cands.iter().map(|c| c.1));
            let mut cum = 0.0f32;
            let mut keep = cands.len();
            for (i, pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep);
        }

        // min-p: logit >= max_logit + ln(min_p).
        if p.min_p > 0.0 && cands.len() > 1 {
            let threshold = cands[0].1 + p.min_p.ln();
            let keep = cands
                .iter()
                .skip(1)
                .position(|c| c.1 < threshold)
                .map_or(cands.len(), |i| i + 1);
            cands.truncate(keep);
        }

        // Temperature, then a draw from the softmax.
        let t = p.temperature;
        let probs = softmax(cands.iter().map(|c| c.1 / t));
        let total: f64 = probs.iter().map(|&x| x as f64).sum();
        let mut u = self.rng.gen::<f64>() * total;
        for (c, &pr) in cands.iter().zip(&probs) {
            u -= pr as f64;
            if u < 0.0 {
                return c.0;
            }
        }
        // Rounding left a sliver past the last candidate: it is the last one.
        cands[cands.len() - 1].0
    }
}

/// Index of the largest logit; the lowest index on ties. NaNs never win.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_val = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_nan() && (!found || l > best_val) {
            best = i;
            best_val = l;
            found = true;
        }
    }
    best as u32
}

/// Adds each `(id, bias)` to the logit of `id`; ids outside `logits` are ignored (requests are
/// checked against the vocabulary before they get here).
pub fn apply_logit_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(id, b) in bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += b;
        }
    }
}

/// The log-probability of one generated token under the model's distribution, and the most
/// likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The token that was generated.
    pub id: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The `n` most likely tokens and their log-probabilities, most likely first (lowest id
    /// first on ties).
    pub top: Vec<(u32, f32)>,
}

/// `ln(sum(exp(logits)))`, computed in f64 after subtracting the largest logit, so it neither
/// overflows for large logits nor loses small terms. NaN logits are left out; `-inf` when every
/// logit is `-inf` or NaN.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits
        .iter()
        .filter(|l| !l.is_nan())
        .fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    if max == f64::INFINITY {
        return f64::INFINITY;
    }
    let sum: f64 = logits
        .iter()
        .filter(|l| !l.is_nan())
        .map(|&l| (l as f64 - max).exp())
        .sum();
    max + sum.ln()
}

/// Log-softmax of `logits` at `chosen`, and the `top_n` most likely tokens with theirs: what the
/// API reports as `logprobs` (the raw model distribution, before logit bias, penalties,
/// temperature or truncation).
pub fn token_logprobs(logits: &[f32], chosen: u32, top_n: usize) -> TokenLogprobs {
    let lse = log_sum_exp(logits);
    let lp = |l: f32| (l as f64 - lse) as f32;
    let logprob = logits
        .get(chosen as usize)
        .map_or(f32::NEG_INFINITY, |&l| lp(l));
    let top_n = top_n.min(logits.len());
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(top_n + 1);
    if top_n > 0 {
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if top_n < cands.len() {
            cands.select_nth_unstable_by(top_n - 1, by_logit);
            cands.truncate(top_n);
        }
        cands.sort_unstable_by(by_logit);
        top.extend(cands.into_iter().map(|(i, l)| (i, lp(l))));
    }
    TokenLogprobs {
        id: chosen,
        logprob,
        top,
    }
}

/// llama.cpp's penalties over the last `penalty_last_n` tokens of `history`: for a token seen
/// `count > 0` times, a non-positive logit is multiplied and a positive one divided by the
/// repetition penalty, then `count * frequency + presence` is subtracted.
pub fn apply_penalties(logits: &mut [f32], history: &[u32], p: &SamplingParams) {
    let window = &history[history.len().saturating_sub(p.penalty_last_n)..];
    let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for &t in window {
        *counts.entry(t).or_default() += 1;
    }
    for (&tok, &count) in &counts {
        let Some(l) = logits.get_mut(tok as usize) else {
            continue;
        };
        if *l <= 0.0 {
            *l *= p.repetition_penalty;
        } else {
            *l /= p.repetition_penalty;
        }
        *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
    }
}

/// Numerically stable softmax of a (non-empty) sequence of logits.
fn softmax(logits: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max);
    let mut out: Vec<f32> = logits.map(|l| (l - max).exp()).collect();
    let sum: f32 = out.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        out.iter_mut().for_each(|x| *x /= sum);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(7),
            ..SamplingParams::default()
        }
    }

    fn draw_many(p: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(p);
        (0..n)
            .map(|_| s.sample(&mut logits.to_vec(), &[]))
            .collect()
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut l = vec![0.5, 3.0, -1.0, 3.0, 2.9];
        assert_eq!(
            Sampler::new(SamplingParams::greedy()).sample(&mut l, &[]),
            1
        );
        assert_eq!(argmax(&[f32::NAN, -5.0, f32::NAN]), 1);
    }

    #[test]
    fn tiny_top_p_picks_the_max() {
        let logits = [1.0, 2.0, 4.0, 3.9, 0.0];
        let p = SamplingParams {
            top_p: 1e-6,
            ..params(1.5)
        };
        assert!(draw_many(p, &logits, 200).iter().all(|&t| t == 2));
    }

    #[test]
    fn min_p_filters_unlikely_tokens() {
        // exp(-3) ≈ 0.05 relative probability: below min_p 0.1, so token 1 must never appear.
        let logits = [5.0, 2.0, 4.5];
        let p = SamplingParams {
            min_p: 0.1,
            ..params(1.0)
        };
        let drawn = draw_many(p.clone(), &logits, 2000);
        assert!(!drawn.contains(&1));
        assert!(drawn.contains(&0) && drawn.contains(&2));
        // Without min-p, token 1 shows up at ~3% over 2000 draws.
        let unfiltered = draw_many(params(1.0), &logits, 2000);
        assert!(unfiltered.contains(&1));
    }

    #[test]
    fn top_k_restricts_to_the_k_best() {
        let logits = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5];
        let p = SamplingParams {
            top_k: 2,
            ..params(1.0)
        };
        let drawn = draw_many(p, &logits, 500);
        assert!(drawn.iter().all(|&t| t == 4 || t == 5));
        assert!(drawn.contains(&4) && drawn.contains(&5));
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0)
        };
        let mut l = vec![4.0, -4.0, 4.0, -4.0];
        apply_penalties(&mut l, &[0, 1, 0], &p);
        assert_eq!(l, vec![2.0, -8.0, 4.0, -4.0]);
    }

    #[test]
    fn presence_and_frequency_subtract_per_occurrence() {
        let p = SamplingParams {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..params(0.0)
        };
        let mut l = vec![1.0, 1.0, 1.0];
        apply_penalties(&mut l, &[0, 0, 0, 2], &p);
        assert_eq!(l, vec![1.0 - 0.75 - 0.5, 1.0, 1.0 - 0.25 - 0.5]);
    }

    #[test]
    fn penalties_only_see_the_last_n_tokens() {
        let p = SamplingParams {
            presence_penalty: 1.0,
            penalty_last_n: 2,
            ..params(0.0)
        };
        let mut l = vec![0.0; 4];
        apply_penalties(&mut l, &[0, 1, 2, 3], &p);
        assert_eq!(l, vec![0.0, 0.0, -1.0, -1.0]);
    }

    #[test]
    fn penalties_can_change_the_greedy_choice() {
        let p = SamplingParams {
            repetition_penalty: 1.5,
            ..params(0.0)
        };
        let mut l = vec![3.0, 2.5];
        assert_eq!(Sampler::new(p).sample(&mut l, &[0]), 1);
    }

    #[test]
    fn logit_bias_forces_and_bans_under_greedy() {
        let logits = vec![1.0, 5.0, -3.0, 4.0];
        let with = |bias: Vec<(u32, f32)>| {
            let p = SamplingParams {
                logit_bias: bias,
                ..SamplingParams::greedy()
            };
            Sampler::new(p).sample(&mut logits.clone(), &[])
        };
        assert_eq!(with(vec![]), 1);
        assert_eq!(with(vec![(2, 100.0)]), 2);
        assert_eq!(with(vec![(1, -100.0)]), 3);
        // Out-of-vocabulary ids are ignored rather than panicking.
        assert_eq!(with(vec![(99, 100.0)]), 1);
    }

    #[test]
    fn logprobs_match_a_naive_log_softmax() {
        let logits = [0.5f32, -1.0, 2.0, 2.0, 0.0];
        let sum: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let naive: Vec<f64> = logits.iter().map(|&l| l as f64 - sum.ln()).collect();
        let t = token_logprobs(&logits, 4, 3);
        assert_eq!(t.id, 4);
        assert!((t.logprob as f64 - naive[4]).abs() < 1e-6);
        // Ties keep the lower id first.
        let ids: Vec<u32> = t.top.iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![2, 3, 0]);
        for (id, lp) in &t.top {
            assert!((*lp as f64 - naive[*id as usize]).abs() < 1e-6);
        }
        assert!(token_logprobs(&logits, 0, 0).top.is_empty());
        assert_eq!(token_logprobs(&logits, 0, 50).top.len(), logits.len());
    }

    #[test]
    fn logprobs_are_stable_for_huge_logits() {
        // A naive exp() overflows f32 (and f64) here; the max-subtracted sum does not.
        let logits = [1.0e4f32, 1.0e4 - 1.0, -1.0e4, 3.0e38];
        let t = token_logprobs(&logits, 3, 2);
        assert!(t.logprob.abs() < 1e-6, "{t:?}");
        assert!(t.top[1].1.is_finite() && t.top[1].1 < -1e30);
        let t = token_logprobs(&logits[..3], 1, 1);
        let expected = -(1.0f64 + (-1.0f64).exp()).ln() - 1.0;
        assert!((t.logprob as f64 - expected).abs() < 1e-6, "{t:?}");
        assert!(log_sum_exp(&[f32::NEG_INFINITY, f32::NAN]) == f64::NEG_INFINITY);
    }

    proptest! {
        #[test]
        fn logprobs_sum_to_one_in_probability_space(
            logits in prop::collection::vec(-50.0f32..50.0, 1..500),
        ) {
            let lse = log_sum_exp(&logits);
            let total: f64 = logits.iter().map(|&l| (l as f64 - lse).exp()).sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "{}", total);
            let all = token_logprobs(&logits, 0, logits.len());
            let total32: f64 = all.top.iter().map(|x| (x.1 as f64).exp()).sum();
            prop_assert!((total32 - 1.0).abs() < 1e-4, "{}", total32);
            prop_assert!(all.top.windows(2).all(|w| w[0].1 >= w[1].1));
            prop_assert!(all.top.iter().all(|x| x.1 <= 0.0));
        }

        #[test]
        fn same_seed_same_tokens(
            logits in prop::collection::vec(-10.0f32..10.0, 2..200),
            seed in any::<u64>(),
            temp in 0.1f32..2.0,
        ) {
            let p = SamplingParams { seed: Some(seed), temperature: temp, ..SamplingParams::default() };
            prop_assert_eq!(draw_many(p.clone(), &logits, 20), draw_many(p, &logits, 20));
        }

        #[test]
        fn top_k_one_is_greedy(
            logits in prop::collection::vec(-10.0f32..10.0, 1..200),
            seed in any::<u64>(),
            temp in 0.1f32..2.0,
        ) {
            let p = SamplingParams { top_k: 1, seed: Some(seed), temperature: temp, ..SamplingParams::default() };
            let t = Sampler::new(p).sample(&mut logits.clone(), &[]);
            prop_assert_eq!(t, argmax(&logits));
        }

        #[test]
        fn draws_stay_in_range(
            logits in prop::collection::vec(-30.0f32..30.0, 1..300),
            seed in any::<u64>(),
        ) {
            let p = SamplingParams { seed: Some(seed), temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..SamplingParams::default() };
            let t = Sampler::new(p).sample(&mut logits.clone(), &[]);
            prop_assert!((t as usize) < logits.len());
        }
    }
}
