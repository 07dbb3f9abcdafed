//! The engine thread: continuous batching over a paged KV cache. The worker owns the queues
//! (the channel of new requests, and `waiting`: requests taken from it that did not fit yet, and
//! preempted ones), the running set (at most [`Limits::max_sequences`]), the cache's store and
//! its block pool. Every step runs one forward pass over the running sequences (each decoding
//! sequence's new token plus chunks of prompts, see [`scheduler`](super::scheduler)); each
//! sequence leaves as soon as it finishes, fails, or its client goes away, and its blocks go
//! back to the pool at once (the full ones stay in the prefix cache).
//!
//! When the cache runs out of blocks in a step, the most recently admitted sequence is
//! preempted: its blocks are released (its full blocks stay cached, so resuming it mostly hits
//! the prefix cache) and it waits at the front of the queue with everything it has generated;
//! it resumes where it stopped, so its client sees no difference but time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use super::blocks::BlockPool;
use super::draft::DraftOptions;
use super::fair::{self, FairQueue};
use super::scheduler::{self, Need};
use super::sequence::{Progress, Sequence};
use super::stats::{EngineStats, Outcome};
use super::{GenEvent, Job};
use crate::models::{BatchItem, CausalLm, KvStore};
use crate::structured::TokenTable;
use crate::tokenizer::Tokenizer;

/// How much the engine runs at once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_sequences: usize,
    pub batch_tokens: usize,
    /// Blocks of the KV cache.
    pub kv_blocks: usize,
    pub prefix_cache: bool,
    pub draft: Option<DraftOptions>,
}

/// The worker's state.
struct Worker<'a> {
    model: &'a dyn CausalLm,
    tokenizer: &'a Arc<Tokenizer>,
    /// The vocabulary as bytes, for constrained sequences.
    tokens: Arc<TokenTable>,
    stats: &'a EngineStats,
    limits: Limits,
    store: KvStore,
    pool: BlockPool,
    running: Vec<Sequence>,
    /// One FIFO per tenant (see [`fair`]).
    waiting: FairQueue<Sequence>,
}

pub(super) fn run(
    model: Box<dyn CausalLm>,
    tokenizer: Arc<Tokenizer>,
    limits: Limits,
    queue: Receiver<Job>,
    stats: Arc<EngineStats>,
) {
    let mut w = Worker {
        model: model.as_ref(),
        tokenizer: &tokenizer,
        tokens: Arc::new(TokenTable::new(&tokenizer)),
        stats: &stats,
        limits,
        store: KvStore::new(model.kv_shape(), limits.kv_blocks),
        pool: BlockPool::new(limits.kv_blocks, limits.prefix_cache),
        running: Vec::new(),
        waiting: FairQueue::default(),
    };
    let mut open = true;
    loop {
        open = w.receive(&queue, open);
        w.drop_ended();
        w.admit();
        if w.running.is_empty() {
            w.publish(); // blocks freed by dropped requests
            if open || !w.waiting.is_empty() {
                continue;
            }
            break;
        }
        w.step();
        w.publish();
    }
    tracing::info!("engine worker stopped: no more handles");
}

impl Worker<'_> {
    /// Moves new requests from the channel to `waiting` (every one, so each waiting request's
    /// deadline is watched; the handle bounds how many wait), blocking only when nothing runs
    /// or waits. Returns whether the channel is still open.
    fn receive(&mut self, queue: &Receiver<Job>, mut open: bool) -> bool {
        while open {
            let job = if self.running.is_empty() && self.waiting.is_empty() {
                queue.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                queue.try_recv()
            };
            match job {
                Ok(job) => {
                    let seq = Sequence::new(job, self.tokenizer, &self.tokens);
                    let tag = seq.tenant().clone();
                    self.waiting.push_back(&tag, seq);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        open
    }

    /// Admits waiting requests while there is room (slots and blocks), the next one always
    /// from the tenant with the fewest running per weight (see [`fair`]). With every slot
    /// taken, a tenant above its share of the slots gives one up (preempted, like for a full
    /// cache) to a waiting tenant below its share. (Requests whose client left or whose
    /// deadline passed were dropped just before.)
    fn admit(&mut self) {
        loop {
            if self.running.len() >= self.limits.max_sequences.max(1) && !self.make_room() {
                break;
            }
            let running = &self.running;
            let Some((tag, mut seq)) = self.waiting.pop(|t| running_of(running, t)) else {
                break;
            };
            let (queried, hits) = seq.attach(&mut self.pool);
            // Room for the rest of its tokens and a block to grow into; a sequence alone
            // always fits (requests are checked against the cache's size when submitted).
            let want = seq.blocks_short(seq_pending(&seq)) + 1;
            if !self.running.is_empty() && self.pool.available() < want {
                seq.release(&mut self.pool);
                self.waiting.push_front(&tag, seq);
                break;
            }
            if seq.admitted() {
                self.pool.note_lookup(queried, hits);
            }
            self.stats.started();
            self.running.push(seq);
        }
    }

    /// Preempts the newest sequence of the tenant furthest above its share of the slots when
    /// the tenant that would start next is below its own; says whether it did.
    fn make_room(&mut self) -> bool {
        let running = &self.running;
        let Some(next) = self.waiting.peek_tag(|t| running_of(running, t)).cloned() else {
            return false;
        };
        let victim = {
            let running: Vec<&fair::TenantTag> = self.running.iter().map(|s| s.tenant()).collect();
            let others: Vec<&fair::TenantTag> = self
                .waiting
                .tags()
                .filter(|t| t.name != next.name)
                .collect();
            fair::rebalance(self.limits.max_sequences.max(1), &running, &next, &others)
                .map(|t| t.name.clone())
        };
        let Some(victim) = victim else {
            return false;
        };
        let Some(i) = self.running.iter().rposition(|s| s.tenant().name == victim) else {
            return false;
        };
        let mut seq = self.running.remove(i);
        tracing::debug!(
            tenant = %victim,
            for_tenant = %next.name,
            generated = seq.generated(),
            "slot given to a tenant below its share: sequence preempted"
        );
        seq.release(&mut self.pool);
        self.stats.preempted();
        let tag = seq.tenant().clone();
        self.waiting.push_front(&tag, seq);
        true
    }

    /// Clients that went away, and requests past their deadline, free their slot and blocks
    /// now.
    fn drop_ended(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.running.len() {
            let seq = &self.running[i];
            if seq.cancelled() {
                let mut seq = self.running.remove(i);
                self.finish(&mut seq, Outcome::Cancelled);
            } else if seq.expired(now) {
                let mut seq = self.running.remove(i);
                tracing::debug!(
                    generated = seq.generated(),
                    "deadline passed; generation stopped"
                );
                self.finish(&mut seq, Outcome::TimedOut);
                seq.send(GenEvent::TimedOut { after: seq.age() });
            } else {
                i += 1;
            }
        }
        // Waiting sequences hold no blocks (preempted ones released theirs).
        let stats = self.stats;
        self.waiting.retain(
            |seq| !seq.cancelled() && !seq.expired(now),
            |seq| {
                // A preempted sequence had run: its tokens count like a running one's.
                let ran = seq
                    .has_run()
                    .then(|| (seq.prompt_tokens(), seq.reused(), seq.generated()));
                if seq.cancelled() {
                    stats.skipped(Outcome::Cancelled, ran);
                } else {
                    stats.skipped(Outcome::TimedOut, ran);
                    seq.send(GenEvent::TimedOut { after: seq.age() });
                }
            },
        );
    }

    /// The plan of the next step, with blocks for every planned token: when the pool runs
    /// out, the newest sequences are preempted until the rest fit.
    fn plan(&mut self) -> Vec<usize> {
        for seq in &mut self.running {
            seq.prepare(self.limits.draft);
        }
        loop {
            let needs: Vec<Need> = self.running.iter().map(Sequence::need).collect();
            let plan = scheduler::plan(&needs, self.limits.batch_tokens);
            let pool = &mut self.pool;
            let fits = self
                .running
                .iter_mut()
                .zip(&plan)
                .all(|(seq, &n)| n == 0 || seq.grow(pool, n));
            if fits {
                return plan;
            }
            let Some(mut victim) = self.running.pop() else {
                return Vec::new();
            };
            tracing::debug!(
                blocks = victim.blocks(),
                generated = victim.generated(),
                "KV cache full: sequence preempted"
            );
            victim.release(&mut self.pool);
            self.stats.preempted();
            let tag = victim.tenant().clone();
            self.waiting.push_front(&tag, victim);
        }
    }

    /// One forward pass over the running sequences, then a token for each that reached its
    /// last token.
    fn step(&mut self) {
        let plan = self.plan();
        if self.running.is_empty() {
            return;
        }
        let (model, store, running) = (self.model, &mut self.store, &self.running);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let items: Vec<BatchItem<'_>> = running
                .iter()
                .zip(&plan)
                .filter(|(_, &n)| n > 0)
                .map(|(seq, &n)| seq.batch_item(n))
                .collect();
            model.forward_batch(store, &items)
        }));
        let logits = match outcome {
            Ok(Ok(logits)) => logits,
            failure => {
                let message = match failure {
                    Ok(Err(e)) => e.to_string(),
                    Err(panic) => format!(
                        "the generation worker panicked: {}",
                        crate::error::panic_message(&*panic)
                    ),
                    Ok(Ok(_)) => unreachable!("handled above"),
                };
                tracing::error!(%message, sequences = self.running.len(), "generation failed");
                // The step's new positions may be half-written; they are in private blocks
                // (registered blocks are full and never written again), which are released.
                for mut seq in std::mem::take(&mut self.running) {
                    self.finish(&mut seq, Outcome::Failed);
                    seq.send(GenEvent::Error(message.clone()));
                }
                return;
            }
        };

        let mut logits = logits.into_iter();
        let vocab = self.model.vocab_size();
        let mut kept = Vec::with_capacity(self.running.len());
        for (mut seq, n) in std::mem::take(&mut self.running).into_iter().zip(plan) {
            if n == 0 {
                kept.push(seq);
                continue;
            }
            let l = logits.next().unwrap_or_default();
            let progress = seq.advance(n, l, vocab, self.tokenizer, &mut self.pool);
            if let Some(latency) = seq.take_latency() {
                self.stats.latency(latency);
            }
            match progress {
                Ok(Progress::Running) => kept.push(seq),
                Ok(Progress::Finished(reason)) => {
                    // Counted before the client hears `Done`, so a client that reads /metrics
                    // after its response sees its request.
                    self.finish(&mut seq, Outcome::Finished(reason));
                    seq.send(seq.done_event(reason));
                }
                Ok(Progress::Cancelled) => {
                    tracing::debug!(
                        generated = seq.generated(),
                        "client went away; generation stopped"
                    );
                    self.finish(&mut seq, Outcome::Cancelled);
                }
                Err(e) => {
                    let message = e.to_string();
                    tracing::error!(%message, "generation failed");
                    self.finish(&mut seq, Outcome::Failed);
                    seq.send(GenEvent::Error(message));
                }
            }
        }
        self.running = kept;
    }

    fn finish(&mut self, seq: &mut Sequence, outcome: Outcome) {
        seq.release(&mut self.pool);
        let (drafted, accepted) = seq.speculation();
        self.stats.speculated(drafted, accepted);
        if let Outcome::Finished(_) = outcome {
            self.stats.request_latency(seq.age());
        }
        self.stats
            .finished(outcome, seq.prompt_tokens(), seq.reused(), seq.generated());
    }

    /// The cache's gauges for `/metrics`.
    fn publish(&self) {
        self.stats.kv_cache(
            self.pool.capacity(),
            self.pool.used(),
            self.pool.cached_idle(),
            self.pool.stats(),
        );
    }
}

/// Sequences of `tenant` in `running`.
fn running_of(running: &[Sequence], tenant: &str) -> usize {
    running
        .iter()
        .filter(|s| &*s.tenant().name == tenant)
        .count()
}

/// Tokens the sequence has yet to run before its next token.
fn seq_pending(seq: &Sequence) -> usize {
    match seq.need() {
        Need::Decode(rows) => rows,
        Need::Prefill(n) => n,
    }
}
