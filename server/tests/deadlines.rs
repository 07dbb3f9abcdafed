//! Per-request deadlines, with the real model: a generating request that runs past its deadline
//! ends with `TimedOut` and gives its KV blocks back; one still waiting for a slot ends without
//! a token; over HTTP a stream past `--request-timeout-secs` ends with an OpenAI-shaped
//! `timeout_error` event and `[DONE]`, and /metrics counts it under outcome "timeout".

mod api_harness;
mod common;

use std::thread;
use std::time::{Duration, Instant};

use api_harness::Server;
use ryzanstein_server::engine::{self, EngineHandle, EngineOptions, GenEvent, GenRequest};
use ryzanstein_server::sampler::SamplingParams;
use serde_json::json;

/// Index of outcome "timeout" in `EngineSnapshot::requests` (`Outcome::ALL`'s order).
const TIMED_OUT: usize = 4;

fn start(parallel: usize) -> engine::Engine {
    let opts = EngineOptions {
        threads: 2,
        ctx_size: Some(2048),
        max_sequences: parallel,
        queue_capacity: 8,
        ..EngineOptions::default()
    };
    engine::load(common::model_path().to_str().unwrap(), &opts).expect("load the bundled model")
}

/// A request that would run for ~1500 tokens.
fn long_request(h: &EngineHandle) -> GenRequest {
    GenRequest {
        prompt_ids: h.encode_text("Tell me about the history of Rome.").unwrap(),
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: 1500,
        stop: vec![],
        ignore_eos: true,
        tenant: Default::default(),
    }
}

/// Waits (bounded) until nothing runs and no block is held.
fn wait_idle(h: &EngineHandle) {
    let until = Instant::now() + Duration::from_secs(60);
    while h.stats().running > 0 || h.stats().kv_blocks_used > 0 {
        assert!(Instant::now() < until, "not idle: {:?}", h.stats());
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_running_request_past_its_deadline_times_out_and_frees_its_blocks() {
    let e = start(2);
    let h = e.handle();
    let mut rx = h
        .submit_by(
            long_request(&h),
            Some(Instant::now() + Duration::from_millis(400)),
        )
        .unwrap();
    let mut tokens = 0;
    let ended = loop {
        match rx.blocking_recv().expect("the engine ends the request") {
            GenEvent::Token { .. } => tokens += 1,
            other => break other,
        }
    };
    assert!(
        matches!(ended, GenEvent::TimedOut { after } if after >= Duration::from_millis(400)),
        "after {tokens} tokens: {ended:?}"
    );
    assert!(tokens < 1500);
    assert!(rx.blocking_recv().is_none(), "nothing follows TimedOut");
    wait_idle(&h);
    let s = h.stats();
    assert_eq!(s.requests[TIMED_OUT], 1, "{s:?}");
    assert_eq!(s.requests.iter().sum::<u64>(), 1, "{s:?}");
    drop(h);
    e.join();
}

#[test]
fn a_waiting_request_past_its_deadline_times_out_without_a_token() {
    let e = start(1);
    let h = e.handle();
    let mut first = h.submit(long_request(&h)).unwrap();
    assert!(matches!(
        first.blocking_recv(),
        Some(GenEvent::Token { .. })
    ));
    // One slot, taken: the second request waits until its deadline.
    let mut second = h
        .submit_by(
            long_request(&h),
            Some(Instant::now() + Duration::from_millis(200)),
        )
        .unwrap();
    match second.blocking_recv() {
        Some(GenEvent::TimedOut { .. }) => {}
        other => panic!("expected TimedOut first, got {other:?}"),
    }
    assert!(second.blocking_recv().is_none());
    // The first goes on.
    assert!(matches!(
        first.blocking_recv(),
        Some(GenEvent::Token { .. })
    ));
    drop(first);
    wait_idle(&h);
    let s = h.stats();
    assert_eq!(s.requests[TIMED_OUT], 1, "{s:?}");
    assert_eq!(s.waiting, 0, "{s:?}");
    drop(h);
    e.join();
}

#[test]
fn a_stream_past_the_request_timeout_ends_with_a_timeout_error() {
    let server = Server::start(&["--request-timeout-secs", "1"]);
    let frames = server.stream_all(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Tell me about Rome."}],
                "max_tokens": 1500, "temperature": 0, "ignore_eos": true, "stream": true}),
    );
    assert_eq!(
        frames.last().map(String::as_str),
        Some("[DONE]"),
        "{frames:?}"
    );
    let last: serde_json::Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
    assert_eq!(last["error"]["type"], "timeout_error", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--request-timeout-secs"),
        "{last}"
    );
    // Content came before it (the response had begun well within the second).
    assert!(frames.len() > 3, "{frames:?}");

    let metrics = api_harness::client()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let timed_out = metrics
        .lines()
        .find(|l| l.starts_with("ryzanstein_requests_total") && l.contains("outcome=\"timeout\""))
        .unwrap_or_else(|| panic!("no timeout outcome in:\n{metrics}"));
    assert!(timed_out.ends_with(" 1"), "{timed_out}");
}
