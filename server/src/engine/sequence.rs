//! One request being generated: its KV state, where it is in its prompt, and what happens to
//! each new token (sampling, stop strings, events to the client).

use std::sync::Arc;
use std::time::Instant;

use super::idle::Held;
use super::scheduler::Need;
use super::stop::{StopMatcher, StopOutcome};
use super::{FinishReason, GenEvent, Job, Timings, Usage};
use crate::models::BatchItem;
use crate::sampler::{token_logprobs, Sampler};
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
    held: Held,
    /// Prompt tokens in the state (reused or run).
    fed: usize,
    /// Prompt tokens that came from an idle state.
    reused: usize,
    /// The sampled token the model has not run yet.
    last: Option<u32>,
    sampler: Sampler,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    history: Vec<u32>,
    started: Instant,
    first_token: Option<Instant>,
    prompt_ms: f64,
}

impl Sequence {
    /// Starts `job` on `held`, which already holds `reused` of its prompt tokens.
    pub fn start(job: Job, held: Held, reused: usize, tokenizer: &Arc<Tokenizer>) -> Sequence {
        Sequence {
            sampler: Sampler::new(job.req.sampling.clone()),
            decoder: IncrementalDecoder::new(tokenizer.clone(), true),
            stops: StopMatcher::new(&job.req.stop),
            history: job.req.prompt_ids.clone(),
            job,
            held,
            fed: reused,
            reused,
            last: None,
            started: Instant::now(),
            first_token: None,
            prompt_ms: 0.0,
        }
    }

    fn prompt(&self) -> &[u32] {
        &self.job.req.prompt_ids
    }

    pub fn need(&self) -> Need {
        match self.last {
            Some(_) => Need::Decode,
            None => Need::Prefill(self.prompt().len() - self.fed),
        }
    }

    /// The next `n` tokens to run, as a batch item (logits only when they end the prompt or
    /// are a decode step).
    pub fn batch_item(&mut self, n: usize) -> BatchItem<'_> {
        let (tokens, logits): (&[u32], bool) = match &self.last {
            Some(id) => (std::slice::from_ref(id), true),
            None => {
                let prompt = &self.job.req.prompt_ids;
                (
                    &prompt[self.fed..self.fed + n],
                    self.fed + n == prompt.len(),
                )
            }
        };
        BatchItem {
            state: &mut self.held.state,
            tokens,
            logits,
        }
    }

    /// Records that the step ran the `n` tokens of [`batch_item`](Self::batch_item).
    pub fn ran(&mut self, n: usize) {
        match self.last.take() {
            Some(id) => self.held.tokens.push(id),
            None => {
                let end = self.fed + n;
                let run = self.job.req.prompt_ids[self.fed..end].to_vec();
                self.held.tokens.extend(run);
                self.fed = end;
            }
        }
    }

    /// Whether the client stopped listening.
    pub fn cancelled(&self) -> bool {
        self.job.events.is_closed()
    }

    /// Samples the next token from `logits`, sends it to the client, and says whether the
    /// sequence goes on.
    pub fn on_logits(&mut self, mut logits: Vec<f32>, tokenizer: &Tokenizer) -> Result<Progress> {
        let req = &self.job.req;
        // Logprobs report the model's own distribution: the logits before sampling changes them.
        let raw = req.sampling.logprobs.map(|n| (logits.clone(), n));
        let id = self.sampler.sample(&mut logits, &self.history);
        let logprobs = raw.map(|(raw, n)| token_logprobs(&raw, id, n));
        self.history.push(id);
        let generated = self.history.len() - self.prompt().len();
        if self.first_token.is_none() {
            let now = Instant::now();
            self.prompt_ms = ms(now - self.started);
            self.first_token = Some(now);
        }

        let eog = !req.ignore_eos && tokenizer.is_eog(id);
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
            self.last = Some(id);
            Progress::Running
        })
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
                prompt_ms: self.prompt_ms,
                gen_ms: self.first_token.map_or(0.0, |t| ms(t.elapsed())),
            },
        }
    }

    /// Sends `event` to the client (it may have left; nothing to do then).
    pub fn send(&self, event: GenEvent) {
        let _ = self.job.events.send(event);
    }

    /// The state and the tokens it holds, for the next request that shares them.
    pub fn into_held(self) -> Held {
        self.held
    }
}

/// Checks that the model returned one logit per vocabulary entry.
pub(super) fn check_logits(logits: &[f32], vocab_size: usize) -> Result<()> {
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
