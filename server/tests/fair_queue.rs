//! Tenant-fair scheduling through the engine, with the real model: while one tenant's burst
//! holds every slot and more of its requests wait, another tenant's request starts at once (a
//! sequence of the burst gives up its slot and resumes later) and ends before the burst's
//! queued requests have started; the preempted sequences' outputs are unchanged. The order of
//! events is asserted, not timings.

mod common;

use std::sync::Arc;

use ryzanstein_server::engine::{self, EngineOptions, GenEvent, GenRequest, TenantTag};
use ryzanstein_server::sampler::SamplingParams;
use tokio::sync::mpsc::UnboundedReceiver;

const SLOTS: usize = 4;

fn request(prompt: Vec<u32>, max_tokens: usize, tenant: &str) -> GenRequest {
    GenRequest {
        prompt_ids: prompt,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens,
        stop: vec![],
        ignore_eos: true,
        tenant: TenantTag {
            name: Arc::from(tenant),
            weight: 1,
        },
    }
}

/// The engine on the bundled model with [`SLOTS`] slots.
fn start() -> engine::Engine {
    let path = common::model_path();
    let opts = EngineOptions {
        threads: 2,
        ctx_size: Some(1024),
        max_sequences: SLOTS,
        queue_capacity: 64,
        ..EngineOptions::default()
    };
    engine::load(path.to_str().unwrap(), &opts).expect("load the bundled model")
}

/// The first event, which must be a token.
fn first_token(rx: &mut UnboundedReceiver<GenEvent>) -> Vec<u32> {
    match rx.blocking_recv() {
        Some(GenEvent::Token { id, .. }) => vec![id],
        other => panic!("expected a token, got {other:?}"),
    }
}

fn rest(rx: &mut UnboundedReceiver<GenEvent>, mut out: Vec<u32>) -> Vec<u32> {
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            GenEvent::Token { id, .. } => out.push(id),
            GenEvent::Done { .. } => return out,
            other => panic!("generation failed: {other:?}"),
        }
    }
    panic!("the stream ended without Done");
}

#[test]
fn another_tenant_is_not_starved_by_a_burst() {
    let engine = start();
    let h = engine.handle();
    let prompt = h
        .encode_text("Once upon a time, in a quiet village,")
        .unwrap();

    // Tenant a: twice as many long requests as there are slots.
    let mut burst: Vec<_> = (0..2 * SLOTS)
        .map(|_| h.submit(request(prompt.clone(), 96, "a")).unwrap())
        .collect();
    // The first SLOTS run (each has a token); the others wait.
    let mut started: Vec<Vec<u32>> = burst[..SLOTS].iter_mut().map(first_token).collect();
    assert_eq!(h.stats().running, SLOTS as u64);

    // Tenant b asks for a short answer: it gets a slot now, and ends before any of a's queued
    // requests has produced a token.
    let mut b = h.submit(request(prompt.clone(), 8, "b")).unwrap();
    let b_tokens = rest(&mut b, Vec::new());
    assert_eq!(b_tokens.len(), 8);
    for rx in &mut burst[SLOTS..] {
        assert!(
            rx.try_recv().is_err(),
            "a queued request of the burst started before tenant b's request ended"
        );
    }
    assert!(
        h.stats().preemptions >= 1,
        "a sequence of the burst gave its slot to tenant b"
    );

    // Every request of the burst ends with the same greedy text (the preempted one too), and
    // b's text is the start of it.
    started.resize(2 * SLOTS, Vec::new());
    let outputs: Vec<Vec<u32>> = burst
        .iter_mut()
        .zip(started)
        .map(|(rx, head)| rest(rx, head))
        .collect();
    assert!(outputs.iter().all(|o| o == &outputs[0] && o.len() == 96));
    assert_eq!(&outputs[0][..8], &b_tokens[..]);
}

/// A sequence preempted for another tenant whose client leaves while it waits is counted with
/// the tokens it had generated (its prompt and generated tokens are in the engine's counters).
#[test]
fn a_preempted_sequence_cancelled_while_waiting_keeps_its_tokens_counted() {
    let engine = start();
    let h = engine.handle();
    let prompt = h
        .encode_text("Once upon a time, in a quiet village,")
        .unwrap();
    let mut burst: Vec<_> = (0..SLOTS)
        .map(|_| h.submit(request(prompt.clone(), 96, "a")).unwrap())
        .collect();
    for rx in &mut burst {
        first_token(rx);
    }
    // b's arrival preempts a's newest sequence, which waits while b runs.
    let mut b = h.submit(request(prompt.clone(), 32, "b")).unwrap();
    let mut b_tokens = first_token(&mut b);
    assert!(h.stats().preemptions >= 1);
    let mut victim = burst.pop().unwrap();
    let mut victim_tokens = 1; // its first token, read above
    while let Ok(ev) = victim.try_recv() {
        assert!(matches!(ev, GenEvent::Token { .. }), "{ev:?}");
        victim_tokens += 1;
    }
    drop(victim);
    b_tokens = rest(&mut b, b_tokens);
    let mut total = b_tokens.len() + victim_tokens;
    for rx in &mut burst {
        total += rest(rx, Vec::new()).len() + 1;
    }
    let cancelled = engine::Outcome::ALL
        .iter()
        .position(|o| *o == engine::Outcome::Cancelled)
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while h.stats().requests[cancelled] == 0 {
        assert!(
            std::time::Instant::now() < until,
            "the cancel was never seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let s = h.stats();
    assert_eq!(s.waiting + s.running, 0);
    assert_eq!(
        s.generation_tokens, total as u64,
        "every generated token is counted, the cancelled sequence's too"
    );
    assert_eq!(s.prompt_tokens, (prompt.len() * (SLOTS + 1)) as u64);
}
