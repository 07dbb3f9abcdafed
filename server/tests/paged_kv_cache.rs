//! The paged KV cache through the engine, with the real model: prefix caching never leaks one
//! conversation into another (interleaved, overlapping conversations give the same tokens with
//! and without the cache), a cache too small for every sequence preempts and resumes them with
//! the same output, and a client that leaves gives its blocks back. (These found that a row's
//! bits depend on the order attention sums in, prompt batch or decode step: the cache keys
//! blocks by it, and recomputed tokens keep their order.)

mod common;

use std::thread;
use std::time::{Duration, Instant};

use ryzanstein_server::chat_template::ChatMessage;
use ryzanstein_server::engine::{self, EngineHandle, EngineOptions, GenEvent, GenRequest};
use ryzanstein_server::sampler::SamplingParams;

fn start(opts: EngineOptions) -> engine::Engine {
    let path = common::model_path();
    engine::load(path.to_str().unwrap(), &opts).expect("load the bundled model")
}

fn options(parallel: usize) -> EngineOptions {
    EngineOptions {
        threads: 2,
        ctx_size: Some(2048),
        max_sequences: parallel,
        queue_capacity: 64,
        ..EngineOptions::default()
    }
}

/// The tokens generated for `prompt`.
fn generate(h: &EngineHandle, prompt: Vec<u32>, max_tokens: usize, seed: Option<u64>) -> Vec<u32> {
    let sampling = match seed {
        None => SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        Some(s) => SamplingParams {
            temperature: 0.9,
            seed: Some(s),
            ..SamplingParams::default()
        },
    };
    let req = GenRequest {
        prompt_ids: prompt,
        sampling,
        max_tokens,
        stop: vec![],
        ignore_eos: true,
        tenant: Default::default(),
    };
    let mut rx = h.submit(req).expect("submit");
    let mut out = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            GenEvent::Token { id, .. } => out.push(id),
            GenEvent::Done { .. } => return out,
            GenEvent::Error(e) => panic!("generation failed: {e}"),
            GenEvent::TimedOut { after } => panic!("timed out after {after:?}"),
        }
    }
    panic!("the stream ended without Done");
}

const SYSTEM: &str = "You are a careful assistant for a travel company. Answer briefly, name \
    the places you mention, never invent prices, and say so when you do not know something. \
    Customers ask about trains, ferries, museums and the weather in European cities.";

const QUESTIONS: [&str; 4] = [
    "How do I get from Paris to Lyon?",
    "Is the Louvre open on Tuesdays?",
    "What is the weather like in Oslo in March?",
    "How do I get from Paris to Marseille?",
];

/// Two turns of every conversation (the second repeats the first turn and its answer), run on
/// `h` from one thread per conversation at once; the tokens of every turn.
fn conversations(h: &EngineHandle, seed: Option<u64>) -> Vec<[Vec<u32>; 2]> {
    let threads: Vec<_> = QUESTIONS
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let h = h.clone();
            thread::spawn(move || {
                let tok = h.tokenizer().clone();
                let mut messages = vec![
                    ChatMessage::new("system", SYSTEM),
                    ChatMessage::new("user", *q),
                ];
                let first = generate(
                    &h,
                    h.encode_chat(&messages).unwrap(),
                    24,
                    seed.map(|s| s + i as u64),
                );
                messages.push(ChatMessage::new(
                    "assistant",
                    tok.decode(&first, true).unwrap(),
                ));
                messages.push(ChatMessage::new("user", "And the way back?"));
                let second = generate(
                    &h,
                    h.encode_chat(&messages).unwrap(),
                    24,
                    seed.map(|s| s + 10 + i as u64),
                );
                [first, second]
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn prefix_caching_never_leaks_one_conversation_into_another() {
    // Without the cache, one conversation at a time: the reference.
    let plain = start(EngineOptions {
        prefix_cache: false,
        ..options(1)
    });
    let want_greedy = conversations(&plain.handle(), None);
    let want_sampled = conversations(&plain.handle(), Some(7));
    let s = plain.handle().stats();
    assert_eq!(s.prompt_tokens_cached, 0, "no cache, no reuse");
    plain.join();

    // With the cache, all conversations interleaved: they share the system prompt and each
    // second turn extends its own first.
    let cached = start(options(4));
    let h = cached.handle();
    let got_greedy = conversations(&h, None);
    let got_sampled = conversations(&h, Some(7));
    let s = h.stats();
    assert!(
        s.prefix.hits > 0 && s.prompt_tokens_cached > 0,
        "the workload must hit the prefix cache: {s:?}"
    );
    for (i, (g, w)) in got_greedy.iter().zip(&want_greedy).enumerate() {
        assert_eq!(
            g, w,
            "greedy conversation {i} differs with the prefix cache"
        );
    }
    for (i, (g, w)) in got_sampled.iter().zip(&want_sampled).enumerate() {
        assert_eq!(
            g, w,
            "sampled conversation {i} differs with the prefix cache"
        );
    }
    drop(h);
    cached.join();
}

#[test]
fn a_full_cache_preempts_and_resumes_with_the_same_output() {
    let prompts: Vec<String> = (0..6)
        .map(|i| format!("Write a long story about the number {i} and the sea."))
        .collect();
    let roomy = start(options(6));
    let want: Vec<Vec<u32>> = {
        let h = roomy.handle();
        let ts: Vec<_> = prompts
            .iter()
            .map(|p| {
                let (h, p) = (h.clone(), p.clone());
                thread::spawn(move || generate(&h, h.encode_text(&p).unwrap(), 80, None))
            })
            .collect();
        ts.into_iter().map(|t| t.join().unwrap()).collect()
    };
    roomy.join();

    // Twelve blocks (384 positions) for six sequences of ~95 positions each.
    let tight = start(EngineOptions {
        kv_cache_bytes: Some(12 * kv_block_bytes()),
        ..options(6)
    });
    let h = tight.handle();
    let ts: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (h, p) = (h.clone(), p.clone());
            thread::spawn(move || generate(&h, h.encode_text(&p).unwrap(), 80, None))
        })
        .collect();
    let got: Vec<Vec<u32>> = ts.into_iter().map(|t| t.join().unwrap()).collect();
    let s = h.stats();
    assert!(s.preemptions > 0, "the cache was meant to run out: {s:?}");
    assert_eq!(s.kv_blocks, 12);
    assert_eq!(
        got, want,
        "preempted sequences must resume where they stopped"
    );
    drop(h);
    tight.join();
}

/// Bytes of one KV block of the bundled model (30 layers, 3 KV heads of 64, f16).
fn kv_block_bytes() -> u64 {
    let g = ryzanstein_server::gguf::GgufFile::open(common::model_path()).unwrap();
    let model = ryzanstein_server::models::load_gguf(&g, 1).unwrap();
    model.kv_shape().bytes_per_block() as u64
}

#[test]
fn a_client_that_leaves_gives_its_blocks_back() {
    let e = start(options(2));
    let h = e.handle();
    let prompt = h
        .encode_text("Tell me everything about the history of Rome.")
        .unwrap();
    let req = GenRequest {
        prompt_ids: prompt,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: 1500,
        stop: vec![],
        ignore_eos: true,
        tenant: Default::default(),
    };
    let mut rx = h.submit(req).unwrap();
    for _ in 0..40 {
        match rx.blocking_recv() {
            Some(GenEvent::Token { .. }) => {}
            other => panic!("expected tokens, got {other:?}"),
        }
    }
    assert!(h.stats().kv_blocks_used >= 2, "{:?}", h.stats());
    drop(rx);
    // The worker notices at its next step; wait (bounded) for the gauge.
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.stats().kv_blocks_used > 0 || h.stats().running > 0 {
        assert!(
            Instant::now() < deadline,
            "blocks not released: {:?}",
            h.stats()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let s = h.stats();
    assert_eq!(s.requests[2], 1, "counted as cancelled: {s:?}");
    assert!(s.kv_blocks_cached >= 1, "its full blocks stay cached");
    drop(h);
    e.join();
}
