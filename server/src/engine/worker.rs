//! The engine thread: continuous batching. Requests join the running set as slots free up
//! (at most [`Limits::max_sequences`]), every step runs one forward pass over all of them (each
//! decoding sequence's new token plus chunks of prompts, see [`scheduler`](super::scheduler)),
//! and each sequence leaves as soon as it finishes, fails, or its client goes away.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use super::idle::IdleStates;
use super::scheduler::{self, Need};
use super::sequence::{check_logits, Progress, Sequence};
use super::stats::{EngineStats, Outcome};
use super::{GenEvent, Job};
use crate::models::{BatchItem, CausalLm};
use crate::tokenizer::Tokenizer;

/// How much the engine runs at once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_sequences: usize,
    pub batch_tokens: usize,
    pub context_length: usize,
}

pub(super) fn run(
    model: Box<dyn CausalLm>,
    tokenizer: Arc<Tokenizer>,
    limits: Limits,
    queue: Receiver<Job>,
    stats: Arc<EngineStats>,
) {
    let mut running: Vec<Sequence> = Vec::new();
    let mut idle = IdleStates::new(limits.max_sequences);
    let mut open = true;
    loop {
        // Admit waiting requests while there is room; block only when there is nothing to run.
        while open && running.len() < limits.max_sequences.max(1) {
            let job = if running.is_empty() {
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => {
                        open = false;
                        break;
                    }
                }
            } else {
                match queue.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            if job.events.is_closed() {
                stats.skipped();
                continue; // the client left while the request waited
            }
            stats.started();
            let (held, reused) = idle.take(&job.req.prompt_ids, || {
                model.new_state(limits.context_length)
            });
            running.push(Sequence::start(job, held, reused, &tokenizer));
        }
        if running.is_empty() {
            if open {
                continue;
            }
            break;
        }

        // Clients that went away free their slot now.
        let mut i = 0;
        while i < running.len() {
            if running[i].cancelled() {
                let seq = running.remove(i);
                finish(&stats, &seq, Outcome::Cancelled);
                idle.put(seq.into_held());
            } else {
                i += 1;
            }
        }
        if running.is_empty() {
            continue;
        }

        step(
            model.as_ref(),
            &tokenizer,
            &stats,
            &mut running,
            &mut idle,
            limits,
        );
    }
    tracing::info!("engine worker stopped: no more handles");
}

/// One forward pass over the running sequences, then a token for each that finished its input.
fn step(
    model: &dyn CausalLm,
    tokenizer: &Tokenizer,
    stats: &EngineStats,
    running: &mut Vec<Sequence>,
    idle: &mut IdleStates,
    limits: Limits,
) {
    let needs: Vec<Need> = running.iter().map(Sequence::need).collect();
    let plan = scheduler::plan(&needs, limits.batch_tokens);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut items: Vec<BatchItem<'_>> = running
            .iter_mut()
            .zip(&plan)
            .filter(|(_, &n)| n > 0)
            .map(|(seq, &n)| seq.batch_item(n))
            .collect();
        model.forward_batch(&mut items)
    }));
    let logits = match outcome {
        Ok(Ok(logits)) => logits,
        failure => {
            let message = match failure {
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!(
                    "the generation worker panicked: {}",
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into())
                ),
                Ok(Ok(_)) => unreachable!("handled above"),
            };
            tracing::error!(%message, sequences = running.len(), "generation failed");
            // Every state in the step may be half-written: none is kept.
            for seq in running.drain(..) {
                finish(stats, &seq, Outcome::Failed);
                seq.send(GenEvent::Error(message.clone()));
            }
            return;
        }
    };

    let mut logits = logits.into_iter();
    let mut kept = Vec::with_capacity(running.len());
    for (mut seq, n) in running.drain(..).zip(plan) {
        if n == 0 {
            kept.push(seq);
            continue;
        }
        seq.ran(n);
        let progress = match logits.next().flatten() {
            None => Ok(Progress::Running),
            Some(l) => {
                check_logits(&l, model.vocab_size()).and_then(|()| seq.on_logits(l, tokenizer))
            }
        };
        match progress {
            Ok(Progress::Running) => kept.push(seq),
            Ok(Progress::Finished(reason)) => {
                // Counted before the client hears `Done`, so a client that reads /metrics
                // after its response sees its request.
                finish(stats, &seq, Outcome::Finished(reason));
                seq.send(seq.done_event(reason));
                idle.put(seq.into_held());
            }
            Ok(Progress::Cancelled) => {
                tracing::debug!(
                    generated = seq.generated(),
                    "client went away; generation stopped"
                );
                finish(stats, &seq, Outcome::Cancelled);
                idle.put(seq.into_held());
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(%message, "generation failed");
                finish(stats, &seq, Outcome::Failed);
                seq.send(GenEvent::Error(message));
            }
        }
    }
    *running = kept;
}

fn finish(stats: &EngineStats, seq: &Sequence, outcome: Outcome) {
    stats.finished(outcome, seq.prompt_tokens(), seq.reused(), seq.generated());
}
