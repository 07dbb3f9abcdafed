//! Live counters of the engine, read by `GET /metrics` (and by the operator's autoscaler, which
//! sums `running + waiting` over a deployment's pods).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::FinishReason;

/// How a request ended, as counted in `ryzanstein_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Finished(FinishReason),
    /// The client went away before the end.
    Cancelled,
    Failed,
    /// The request ran past its deadline.
    TimedOut,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Finished(FinishReason::Stop),
        Outcome::Finished(FinishReason::Length),
        Outcome::Cancelled,
        Outcome::Failed,
        Outcome::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Finished(r) => r.as_str(),
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "error",
            Outcome::TimedOut => "timeout",
        }
    }

    fn index(self) -> usize {
        Outcome::ALL
            .iter()
            .position(|o| *o == self)
            .expect("every outcome is listed")
    }
}

/// Upper bounds (seconds) of the latency histograms' buckets (a last `+Inf` bucket follows).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A cumulative-bucket histogram of durations (Prometheus' shape), lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at most `LATENCY_BUCKETS[i]`, not cumulative (the last: larger ones).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

/// A snapshot of a [`Histogram`]: cumulative counts per bucket bound, the count and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A latency the worker observed for one token or request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// From acceptance to the first generated token.
    FirstToken(Duration),
    /// Between two consecutive tokens of a request.
    InterToken(Duration),
}

/// Counters shared by the request path and the worker.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Requests submitted and not yet ended (waiting, running or preempted): the bound of
    /// [`try_queue`](Self::try_queue).
    in_engine: AtomicI64,
    waiting: AtomicI64,
    running: AtomicI64,
    requests: [AtomicU64; Outcome::ALL.len()],
    prompt_tokens: AtomicU64,
    prompt_tokens_cached: AtomicU64,
    generation_tokens: AtomicU64,
    preemptions: AtomicU64,
    kv_blocks: AtomicU64,
    kv_blocks_used: AtomicU64,
    kv_blocks_cached: AtomicU64,
    prefix_queried: AtomicU64,
    prefix_hits: AtomicU64,
    prefix_evicted: AtomicU64,
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    draft_tokens: AtomicU64,
    accepted_tokens: AtomicU64,
}

/// A snapshot of [`EngineStats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Requests accepted and not yet started.
    pub waiting: u64,
    /// Requests being generated.
    pub running: u64,
    /// Finished requests by [`Outcome`], in [`Outcome::ALL`]'s order.
    pub requests: [u64; Outcome::ALL.len()],
    /// Prompt tokens of finished requests, and how many of them came from the prefix cache.
    pub prompt_tokens: u64,
    pub prompt_tokens_cached: u64,
    pub generation_tokens: u64,
    /// Sequences preempted because the KV cache was full (they resume later).
    pub preemptions: u64,
    /// The KV cache in blocks of [`crate::models::BLOCK`] positions: all of them, those
    /// running sequences hold, and unreferenced ones that keep a cached prefix.
    pub kv_blocks: u64,
    pub kv_blocks_used: u64,
    pub kv_blocks_cached: u64,
    /// Prefix-cache lookups of requests, in full prompt blocks, and cached blocks evicted.
    pub prefix: super::blocks::PrefixStats,
    /// Time to first token, between tokens, and from acceptance to the end of a request.
    pub ttft: HistogramSnapshot,
    pub itl: HistogramSnapshot,
    pub e2e: HistogramSnapshot,
    /// Speculative decoding: tokens drafted, and of those accepted, by ended requests.
    pub draft_tokens: u64,
    pub accepted_tokens: u64,
}

impl EngineStats {
    /// Counts one more waiting request unless `limit` requests are already in the engine
    /// (waiting or running); says whether it did.
    pub(super) fn try_queue(&self, limit: usize) -> bool {
        let counted = self
            .in_engine
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit as i64).then_some(n + 1)
            })
            .is_ok();
        if counted {
            self.waiting.fetch_add(1, Ordering::SeqCst);
        }
        counted
    }

    /// A queued request was refused after all (the queue was full or the worker gone).
    pub(super) fn unqueued(&self) {
        self.in_engine.fetch_sub(1, Ordering::SeqCst);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    pub(super) fn started(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    /// A waiting request was dropped (its client left, or its deadline passed): `outcome` is
    /// how it ended, `ran` the tokens of a preempted one, `(prompt, cached, generated)`.
    pub(super) fn skipped(&self, outcome: Outcome, ran: Option<(usize, usize, usize)>) {
        self.in_engine.fetch_sub(1, Ordering::SeqCst);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.requests[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if let Some((prompt, cached, generated)) = ran {
            self.count_tokens(prompt, cached, generated);
        }
    }

    fn count_tokens(&self, prompt: usize, cached: usize, generated: usize) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.prompt_tokens_cached
            .fetch_add(cached as u64, Ordering::Relaxed);
        self.generation_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
    }

    pub(super) fn latency(&self, l: Latency) {
        match l {
            Latency::FirstToken(d) => self.ttft.observe(d),
            Latency::InterToken(d) => self.itl.observe(d),
        }
    }

    /// A request ended after `d` (from its acceptance).
    pub(super) fn request_latency(&self, d: Duration) {
        self.e2e.observe(d);
    }

    /// An ended request's speculative decoding.
    pub(super) fn speculated(&self, drafted: usize, accepted: usize) {
        self.draft_tokens
            .fetch_add(drafted as u64, Ordering::Relaxed);
        self.accepted_tokens
            .fetch_add(accepted as u64, Ordering::Relaxed);
    }

    /// A running sequence was preempted: it waits again.
    pub(super) fn preempted(&self) {
        self.preemptions.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// The KV cache's state after a step.
    pub(super) fn kv_cache(
        &self,
        blocks: usize,
        used: usize,
        cached: usize,
        prefix: super::blocks::PrefixStats,
    ) {
        self.kv_blocks.store(blocks as u64, Ordering::Relaxed);
        self.kv_blocks_used.store(used as u64, Ordering::Relaxed);
        self.kv_blocks_cached
            .store(cached as u64, Ordering::Relaxed);
        self.prefix_queried.store(prefix.queried, Ordering::Relaxed);
        self.prefix_hits.store(prefix.hits, Ordering::Relaxed);
        self.prefix_evicted.store(prefix.evicted, Ordering::Relaxed);
    }

    pub(super) fn finished(
        &self,
        outcome: Outcome,
        prompt: usize,
        cached: usize,
        generated: usize,
    ) {
        self.in_engine.fetch_sub(1, Ordering::SeqCst);
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.requests[outcome.index()].fetch_add(1, Ordering::Relaxed);
        self.count_tokens(prompt, cached, generated);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        // `queued` runs before the worker can see the job, so `waiting` never goes below zero
        // for long; clamp the instant where `started` ran first.
        let gauge = |v: &AtomicI64| v.load(Ordering::SeqCst).max(0) as u64;
        StatsSnapshot {
            waiting: gauge(&self.waiting),
            running: gauge(&self.running),
            requests: std::array::from_fn(|i| self.requests[i].load(Ordering::Relaxed)),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            prompt_tokens_cached: self.prompt_tokens_cached.load(Ordering::Relaxed),
            generation_tokens: self.generation_tokens.load(Ordering::Relaxed),
            preemptions: self.preemptions.load(Ordering::Relaxed),
            kv_blocks: self.kv_blocks.load(Ordering::Relaxed),
            kv_blocks_used: self.kv_blocks_used.load(Ordering::Relaxed),
            kv_blocks_cached: self.kv_blocks_cached.load(Ordering::Relaxed),
            prefix: super::blocks::PrefixStats {
                queried: self.prefix_queried.load(Ordering::Relaxed),
                hits: self.prefix_hits.load(Ordering::Relaxed),
                evicted: self.prefix_evicted.load(Ordering::Relaxed),
            },
            ttft: self.ttft.snapshot(),
            itl: self.itl.snapshot(),
            e2e: self.e2e.snapshot(),
            draft_tokens: self.draft_tokens.load(Ordering::Relaxed),
            accepted_tokens: self.accepted_tokens.load(Ordering::Relaxed),
        }
    }
}
