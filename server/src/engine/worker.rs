//! The engine thread: takes one job at a time from the queue and generates its tokens.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::stats::{EngineStats, Outcome};
use super::stop::{StopMatcher, StopOutcome};
use super::{FinishReason, GenEvent, GenRequest, Job, Timings, Usage};
use crate::models::{CausalLm, SeqState};
use crate::sampler::{token_logprobs, Sampler};
use crate::tokenizer::{IncrementalDecoder, Tokenizer};
use crate::{Error, Result};

/// The KV state kept between requests, and the tokens it holds.
struct Cache {
    state: SeqState,
    tokens: Vec<u32>,
}

impl Cache {
    /// Keeps the longest common prefix of the cached tokens and `prompt`, leaving at least the
    /// last prompt token to run (its logits are needed). Returns how many prompt tokens are
    /// reused.
    fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        self.state.truncate(common);
        self.tokens.truncate(common);
        common
    }

    fn forget(&mut self) {
        self.state.truncate(0);
        self.tokens.clear();
    }
}

pub(super) fn run(
    model: Box<dyn CausalLm>,
    tokenizer: Arc<Tokenizer>,
    context_length: usize,
    queue: Receiver<Job>,
    stats: Arc<EngineStats>,
) {
    let mut cache = Cache {
        state: model.new_state(context_length),
        tokens: Vec::new(),
    };
    for job in queue {
        if job.events.is_closed() {
            stats.skipped();
            continue; // the client left while the request waited
        }
        stats.started();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            generate(model.as_ref(), &tokenizer, &mut cache, &job)
        }));
        let failure = match outcome {
            Ok(Ok(r)) => {
                // Counted before the client hears `Done`, so a client that reads /metrics
                // after its response sees its request.
                stats.finished(r.outcome, job.req.prompt_ids.len(), r.cached, r.generated);
                if let Some(done) = r.done {
                    let _ = job.events.send(done);
                }
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(format!(
                "the generation worker panicked: {}",
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into())
            )),
        };
        if let Some(message) = failure {
            stats.finished(Outcome::Failed, job.req.prompt_ids.len(), 0, 0);
            tracing::error!(%message, "generation failed");
            // The state may be half-written: start the next request from scratch.
            cache.forget();
            let _ = job.events.send(GenEvent::Error(message));
        }
    }
    tracing::info!("engine worker stopped: no more handles");
}

/// What one request did, for [`EngineStats`].
struct Report {
    outcome: Outcome,
    /// Prompt tokens reused from the cache.
    cached: usize,
    generated: usize,
    /// The final event, sent once the request is counted.
    done: Option<GenEvent>,
}

/// Runs one request; its `Done` event is in the report (the caller counts, then sends it).
/// Returns early without a `Done` when the receiver is dropped.
fn generate(
    model: &dyn CausalLm,
    tokenizer: &Arc<Tokenizer>,
    cache: &mut Cache,
    job: &Job,
) -> Result<Report> {
    let req: &GenRequest = &job.req;
    let events: &UnboundedSender<GenEvent> = &job.events;
    let prompt = &req.prompt_ids;

    let t_start = Instant::now();
    let reused = cache.reuse_prefix(prompt);
    let mut logits = model.forward(&mut cache.state, &prompt[reused..])?;
    cache.tokens.extend_from_slice(&prompt[reused..]);
    check_logits(&logits, model.vocab_size())?;

    let mut sampler = Sampler::new(req.sampling.clone());
    let mut decoder = IncrementalDecoder::new(tokenizer.clone(), true);
    let mut stops = StopMatcher::new(&req.stop);
    let mut history = prompt.clone();
    let mut t_first: Option<Instant> = None;
    let mut prompt_ms = 0.0;

    let finish = loop {
        // Logprobs report the model's own distribution: the logits before sampling changes them.
        let raw = req.sampling.logprobs.map(|n| (logits.clone(), n));
        let id = sampler.sample(&mut logits, &history);
        let logprobs = raw.map(|(raw, n)| token_logprobs(&raw, id, n));
        history.push(id);
        let generated = history.len() - prompt.len();
        if t_first.is_none() {
            let now = Instant::now();
            prompt_ms = ms(now - t_start);
            t_first = Some(now);
        }

        let eog = !req.ignore_eos && tokenizer.is_eog(id);
        let at_limit = generated >= req.max_tokens;
        let mut text = String::new();
        let mut stopped = false;
        if !eog {
            let piece = decoder.push(id)?;
            match stops.push(&piece) {
                StopOutcome::Emit(t) => text = t,
                StopOutcome::Stopped(t) => {
                    text = t;
                    stopped = true;
                }
            }
        }
        if (eog || at_limit) && !stopped {
            // The end: release what the decoder and the stop matcher still hold.
            match stops.push(&decoder.flush()) {
                StopOutcome::Emit(t) => {
                    text.push_str(&t);
                    text.push_str(&stops.flush());
                }
                StopOutcome::Stopped(t) => {
                    text.push_str(&t);
                    stopped = true;
                }
            }
        }
        if events.send(GenEvent::Token { id, text, logprobs }).is_err() {
            tracing::debug!(generated, "client went away; generation stopped");
            return Ok(Report {
                outcome: Outcome::Cancelled,
                cached: reused,
                generated: history.len() - prompt.len(),
                done: None,
            });
        }
        if stopped || eog {
            break FinishReason::Stop;
        }
        // Run the new token: for the next logits, or (at the limit) so the KV cache holds the
        // whole exchange for a follow-up request.
        logits = model.forward(&mut cache.state, &[id])?;
        cache.tokens.push(id);
        if at_limit {
            break FinishReason::Length;
        }
        check_logits(&logits, model.vocab_size())?;
    };

    let t_end = Instant::now();
    let usage = Usage {
        prompt_tokens: prompt.len(),
        completion_tokens: history.len() - prompt.len(),
    };
    let timings = Timings {
        prompt_eval_tokens: prompt.len() - reused,
        prompt_ms,
        gen_ms: t_first.map_or(0.0, |t| ms(t_end - t)),
    };
    Ok(Report {
        outcome: Outcome::Finished(finish),
        cached: reused,
        generated: usage.completion_tokens,
        done: Some(GenEvent::Done {
            finish_reason: finish,
            usage,
            timings,
        }),
    })
}

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
