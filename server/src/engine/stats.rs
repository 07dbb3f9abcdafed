//! Live counters of the engine, read by `GET /metrics` (and by the operator's autoscaler, which
//! sums `running + waiting` over a deployment's pods).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::FinishReason;

/// How a request ended, as counted in `ryzanstein_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Finished(FinishReason),
    /// The client went away before the end.
    Cancelled,
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Finished(FinishReason::Stop),
        Outcome::Finished(FinishReason::Length),
        Outcome::Cancelled,
        Outcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Finished(r) => r.as_str(),
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "error",
        }
    }

    fn index(self) -> usize {
        Outcome::ALL
            .iter()
            .position(|o| *o == self)
            .expect("every outcome is listed")
    }
}

/// Counters shared by the request path and the worker.
#[derive(Debug, Default)]
pub struct EngineStats {
    waiting: AtomicI64,
    running: AtomicI64,
    requests: [AtomicU64; 4],
    prompt_tokens: AtomicU64,
    prompt_tokens_cached: AtomicU64,
    generation_tokens: AtomicU64,
}

/// A snapshot of [`EngineStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests accepted and not yet started.
    pub waiting: u64,
    /// Requests being generated.
    pub running: u64,
    /// Finished requests by [`Outcome`], in [`Outcome::ALL`]'s order.
    pub requests: [u64; 4],
    /// Prompt tokens of finished requests, and how many of them came from the prefix cache.
    pub prompt_tokens: u64,
    pub prompt_tokens_cached: u64,
    pub generation_tokens: u64,
}

impl EngineStats {
    pub(super) fn queued(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// A queued request was refused after all (the queue was full or the worker gone).
    pub(super) fn unqueued(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    pub(super) fn started(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    /// A queued request was dropped before it started (its client left).
    pub(super) fn skipped(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.requests[Outcome::Cancelled.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn finished(
        &self,
        outcome: Outcome,
        prompt: usize,
        cached: usize,
        generated: usize,
    ) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.requests[outcome.index()].fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.prompt_tokens_cached
            .fetch_add(cached as u64, Ordering::Relaxed);
        self.generation_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
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
        }
    }
}
