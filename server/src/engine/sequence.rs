//! One request being generated: its blocks of the KV cache, how much of its tokens they hold,
//! and what happens to each new token (sampling, stop strings, events to the client).

use std::sync::Arc;
use std::time::Instant;

use super::blocks::{chain_hash, BlockPool, ChainHash};
use super::draft::{self, DraftOptions};
use super::scheduler::Need;
use super::stats::Latency;
use super::stop::{StopMatcher, StopOutcome};
use super::{FinishReason, GenEvent, Job, Timings, Usage};
use crate::models::{kv::blocks_for, BatchItem, BLOCK};
use crate::sampler::{token_logprobs, Sampler};
use crate::structured::{Constraint, TokenTable};
use crate::tokenizer::{IncrementalDecoder, Tokenizer};
use crate::{Error, Result};

/// Where a sequence stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    Running,
    Finished(FinishReason),
    /// The client went away.
    Cancelled,
}

pub(super) struct Sequence {
    job: Job,
    /// Block table: the blocks holding positions `0..fed` (and room for the next step).
    table: Vec<u32>,
    /// Chain hashes of the full blocks at the start of `table`, registered in the prefix cache.
    hashes: Vec<ChainHash>,
    /// Tokens of `history` in the cache.
    fed: usize,
    /// Prompt tokens that came from the prefix cache when the request started.
    reused: usize,
    /// Whether the sequence has been admitted once (a preempted one comes back).
    admitted: bool,
    sampler: Sampler,
    /// What the output must match (`response_format`, tool calls), when constrained.
    constraint: Option<Constraint>,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    /// The prompt and every token sampled so far; the last sampled one is not in the cache yet.
    history: Vec<u32>,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    /// The latency of the token sampled last, until the worker takes it.
    latency: Option<Latency>,
    /// This step's decode rows: the last sampled token, then the drafted ones.
    step: Vec<u32>,
    /// Tokens drafted, and of those accepted, over the request.
    drafted: usize,
    accepted: usize,
    prompt_ms: f64,
}

impl Sequence {
    /// The tenant the request belongs to.
    pub fn tenant(&self) -> &super::fair::TenantTag {
        &self.job.req.tenant
    }

    pub fn new(job: Job, tokenizer: &Arc<Tokenizer>, table: &Arc<TokenTable>) -> Sequence {
        Sequence {
            constraint: job
                .req
                .sampling
                .grammar
                .clone()
                .map(|g| Constraint::new(g, table.clone())),
            sampler: Sampler::new(job.req.sampling.clone()),
            decoder: IncrementalDecoder::new(tokenizer.clone(), true),
            stops: StopMatcher::new(&job.req.stop),
            history: job.req.prompt_ids.clone(),
            job,
            table: Vec::new(),
            hashes: Vec::new(),
            fed: 0,
            reused: 0,
            admitted: false,
            started: Instant::now(),
            first_token: None,
            last_token: None,
            latency: None,
            step: Vec::new(),
            drafted: 0,
            accepted: 0,
            prompt_ms: 0.0,
        }
    }

    fn prompt(&self) -> &[u32] {
        &self.job.req.prompt_ids
    }

    /// Takes the cached blocks of the longest cached prefix of this sequence's tokens (never
    /// all of them: the last token must run for its logits). Returns the full blocks looked up
    /// and how many were found.
    pub fn attach(&mut self, pool: &mut BlockPool) -> (usize, usize) {
        debug_assert!(self.table.is_empty() && self.fed == 0);
        let full = (self.history.len() - 1) / BLOCK;
        let rows: Vec<usize> = (0..full).map(|i| self.batched_rows(i)).collect();
        let blocks: Vec<(&[u32], usize)> = (0..full)
            .map(|i| (&self.history[i * BLOCK..(i + 1) * BLOCK], rows[i]))
            .collect();
        let table = pool.lookup(blocks.iter().copied());
        let mut parent = None;
        let mut hashes = Vec::with_capacity(table.len());
        for &(tokens, batched) in &blocks[..table.len()] {
            let h = chain_hash(parent, tokens, batched);
            hashes.push(h);
            parent = Some(h);
        }
        self.fed = table.len() * BLOCK;
        self.table = table;
        self.hashes = hashes;
        (full, self.table.len())
    }

    /// Whether prompt rows are computed in a prompt batch's order: llama.cpp's choice for a
    /// prompt of two or more tokens (a one-token prompt runs as a decode step).
    fn prompt_batched(&self) -> bool {
        self.prompt().len() > 1
    }

    /// How many rows of block `i` are computed in a prompt batch's order (the rest are
    /// generated tokens, computed as decode steps): part of the block's identity in the cache.
    fn batched_rows(&self, i: usize) -> usize {
        if !self.prompt_batched() {
            return 0;
        }
        self.prompt().len().saturating_sub(i * BLOCK).min(BLOCK)
    }

    /// Marks the sequence admitted to the running set; true the first time (a preempted
    /// sequence is admitted again), when its prompt's cache hits count as reused.
    pub fn admitted(&mut self) -> bool {
        if self.admitted {
            return false;
        }
        self.admitted = true;
        self.reused = self.fed;
        self.started = Instant::now();
        true
    }

    /// Gives every block back (the full ones stay in the prefix cache); the sequence keeps
    /// its tokens and sampler, and runs them again when it is attached again.
    pub fn release(&mut self, pool: &mut BlockPool) {
        self.step.clear();
        for b in self.table.drain(..) {
            pool.release(b);
        }
        self.hashes.clear();
        self.fed = 0;
    }

    /// Blocks the sequence still lacks for its next `n` tokens.
    pub fn blocks_short(&self, n: usize) -> usize {
        blocks_for(self.fed + n).saturating_sub(self.table.len())
    }

    /// Takes blocks for the next `n` tokens; false if the pool ran out (what it took stays).
    pub fn grow(&mut self, pool: &mut BlockPool, n: usize) -> bool {
        while self.table.len() < blocks_for(self.fed + n) {
            match pool.allocate() {
                Some(b) => self.table.push(b),
                None => return false,
            }
        }
        true
    }

    /// Blocks held.
    pub fn blocks(&self) -> usize {
        self.table.len()
    }

    /// Before planning a step: a decoding sequence drafts the tokens it will verify along
    /// with its last one (none without `draft`, or past what `max_tokens` still allows).
    pub fn prepare(&mut self, draft: Option<DraftOptions>) {
        self.step.clear();
        if !self.decoding() {
            return;
        }
        self.step.push(self.history[self.fed]);
        // A constrained sequence does not draft: its tokens are masked one step at a time.
        if let (Some(opts), None) = (draft, &self.constraint) {
            let room = self.job.req.max_tokens.saturating_sub(self.generated() + 1);
            self.step.extend(draft::propose(&self.history, opts, room));
        }
    }

    /// Whether the next step runs the last sampled token (rather than prompt tokens, or
    /// generated ones a preemption dropped).
    fn decoding(&self) -> bool {
        self.fed >= self.prompt().len() && self.history.len() - self.fed == 1
    }

    /// What the sequence runs next: the rest of its prompt, its last sampled token (and its
    /// draft), or (after a preemption) the generated tokens it must recompute. A step never
    /// mixes prompt and generated tokens of one sequence (they are computed in different
    /// orders).
    pub fn need(&self) -> Need {
        let prompt = self.prompt().len();
        if self.fed < prompt {
            Need::Prefill(prompt - self.fed)
        } else if self.decoding() {
            Need::Decode(self.step.len().max(1))
        } else {
            Need::Prefill(self.history.len() - self.fed)
        }
    }

    /// The next `n` tokens to run (what [`need`](Self::need) says, or less of a prefill), as
    /// a batch item: logits only when they reach the last token, or of every row of a
    /// decode step with a draft.
    pub fn batch_item(&self, n: usize) -> BatchItem<'_> {
        if self.decoding() {
            return BatchItem {
                table: &self.table,
                start: self.fed,
                tokens: &self.step[..n],
                logits: n,
                batched: false,
            };
        }
        BatchItem {
            table: &self.table,
            start: self.fed,
            tokens: &self.history[self.fed..self.fed + n],
            logits: usize::from(self.fed + n == self.history.len()),
            batched: self.fed < self.prompt().len() && self.prompt_batched(),
        }
    }

    /// After the step ran the `n` tokens of [`batch_item`](Self::batch_item) with these
    /// `logits` (`rows x vocab`): records what the cache now holds and samples what comes
    /// next. A decode step's draft is verified row by row: each row's token is sampled as in
    /// plain decoding, and the next row counts only while the sampled token is the drafted
    /// one, so the output is exactly plain decoding's (for sampling too: a draft is a point
    /// mass, and "sample from the target, accept if equal" is rejection sampling for it).
    pub fn advance(
        &mut self,
        n: usize,
        logits: Vec<f32>,
        vocab: usize,
        tokenizer: &Tokenizer,
        pool: &mut BlockPool,
    ) -> Result<Progress> {
        if !self.decoding() {
            self.ran(n, pool);
            if logits.is_empty() {
                return Ok(Progress::Running);
            }
            check_logits(&logits, vocab)?;
            return self.on_logits(logits, tokenizer);
        }
        if logits.len() != n * vocab || vocab == 0 {
            return Err(Error::Engine(format!(
                "the model returned {} logits for a decode step of {n} rows, expected {}",
                logits.len(),
                n * vocab
            )));
        }
        let draft = self.step[1..n].to_vec();
        self.drafted += draft.len();
        for (j, row) in logits.chunks_exact(vocab).enumerate() {
            self.ran(1, pool);
            let progress = self.on_logits(row.to_vec(), tokenizer)?;
            let confirmed = j < draft.len()
                && progress == Progress::Running
                && self.history.last() == Some(&draft[j]);
            if !confirmed {
                return Ok(progress);
            }
            self.accepted += 1;
        }
        unreachable!("the last row never confirms a draft token")
    }

    /// Records that the cache now holds `n` more tokens of `history`, and registers the
    /// blocks they filled in the prefix cache.
    fn ran(&mut self, n: usize, pool: &mut BlockPool) {
        self.fed += n;
        while self.hashes.len() < self.fed / BLOCK {
            let i = self.hashes.len();
            let tokens = &self.history[i * BLOCK..(i + 1) * BLOCK];
            let batched = self.batched_rows(i);
            let h = pool.register(self.table[i], self.hashes.last().copied(), tokens, batched);
            self.hashes.push(h);
        }
    }

    /// Tokens drafted and accepted so far.
    pub fn speculation(&self) -> (usize, usize) {
        (self.drafted, self.accepted)
    }

    /// Whether the client stopped listening.
    pub fn cancelled(&self) -> bool {
        self.job.events.is_closed()
    }

    /// Whether the request's deadline has passed at `now`.
    pub fn expired(&self, now: std::time::Instant) -> bool {
        self.job.deadline.is_some_and(|d| now >= d)
    }

    /// Samples the next token from `logits`, sends it to the client, and says whether the
    /// sequence goes on.
    pub fn on_logits(&mut self, mut logits: Vec<f32>, tokenizer: &Tokenizer) -> Result<Progress> {
        let req = &self.job.req;
        // Logprobs report the model's own distribution: the logits before sampling changes them.
        let raw = req.sampling.logprobs.map(|n| (logits.clone(), n));
        let so_far = self.history.len() - self.prompt().len();
        if let Some(c) = &mut self.constraint {
            c.mask(&mut logits, req.max_tokens.saturating_sub(so_far))?;
        }
        let id = self.sampler.sample(&mut logits, &self.history);
        // The end of a constrained value ends generation, ignore_eos or not.
        let mut end_of_value = false;
        if let Some(c) = &mut self.constraint {
            c.accept(id)?;
            end_of_value = tokenizer.is_eog(id);
        }
        let logprobs = raw.map(|(raw, n)| token_logprobs(&raw, id, n));
        self.history.push(id);
        let generated = self.history.len() - self.prompt().len();
        let now = Instant::now();
        self.latency = Some(match self.last_token {
            None => {
                self.prompt_ms = ms(now - self.started);
                self.first_token = Some(now);
                Latency::FirstToken(now - self.job.submitted)
            }
            Some(t) => Latency::InterToken(now - t),
        });
        self.last_token = Some(now);

        let eog = end_of_value || (!req.ignore_eos && tokenizer.is_eog(id));
        let at_limit = generated >= req.max_tokens;
        let mut text = String::new();
        let mut stopped = false;
        if !eog {
            let piece = self.decoder.push(id)?;
            match self.stops.push(&piece) {
                StopOutcome::Emit(t) => text = t,
                StopOutcome::Stopped(t) => {
                    text = t;
                    stopped = true;
                }
            }
        }
        if (eog || at_limit) && !stopped {
            // The end: release what the decoder and the stop matcher still hold.
            match self.stops.push(&self.decoder.flush()) {
                StopOutcome::Emit(t) => {
                    text.push_str(&t);
                    text.push_str(&self.stops.flush());
                }
                StopOutcome::Stopped(t) => {
                    text.push_str(&t);
                    stopped = true;
                }
            }
        }
        if self
            .job
            .events
            .send(GenEvent::Token { id, text, logprobs })
            .is_err()
        {
            return Ok(Progress::Cancelled);
        }
        Ok(if stopped || eog {
            Progress::Finished(FinishReason::Stop)
        } else if at_limit {
            Progress::Finished(FinishReason::Length)
        } else {
            Progress::Running
        })
    }

    /// The latency of the last sampled token, once.
    pub fn take_latency(&mut self) -> Option<Latency> {
        self.latency.take()
    }

    /// Time since the request was accepted.
    pub fn age(&self) -> std::time::Duration {
        self.job.submitted.elapsed()
    }

    /// Whether the sequence ran before (it waits again after a preemption).
    pub fn has_run(&self) -> bool {
        self.admitted
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt().len()
    }

    pub fn reused(&self) -> usize {
        self.reused
    }

    pub fn generated(&self) -> usize {
        self.history.len() - self.prompt().len()
    }

    /// The event that ends a finished sequence.
    pub fn done_event(&self, finish_reason: FinishReason) -> GenEvent {
        GenEvent::Done {
            finish_reason,
            usage: Usage {
                prompt_tokens: self.prompt().len(),
                completion_tokens: self.generated(),
            },
            timings: Timings {
                prompt_eval_tokens: self.prompt().len() - self.reused,
                queue_ms: ms(self.started.saturating_duration_since(self.job.submitted)),
                prompt_ms: self.prompt_ms,
                gen_ms: self.first_token.map_or(0.0, |t| ms(t.elapsed())),
                draft_tokens: self.drafted,
                accepted_tokens: self.accepted,
            },
        }
    }

    /// Sends `event` to the client (it may have left; nothing to do then).
    pub fn send(&self, event: GenEvent) {
        let _ = self.job.events.send(event);
    }
}

/// Checks that the model returned one logit per vocabulary entry.
fn check_logits(logits: &[f32], vocab_size: usize) -> Result<()> {
    if logits.len() != vocab_size || logits.is_empty() {
        return Err(Error::Engine(format!(
            "the model returned {} logits, expected {vocab_size} (its vocabulary size)",
            logits.len()
        )));
    }
    Ok(())
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
