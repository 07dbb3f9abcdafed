//! Speculative decoding by prompt lookup, with the real model: on prompts whose answers repeat
//! their input, drafted tokens are accepted, and the output is exactly that of plain decoding,
//! greedy and sampled (a drafted token is kept only when the model samples it itself), alone
//! and batched with other requests.

mod common;

use std::thread;

use ryzanstein_server::chat_template::ChatMessage;
use ryzanstein_server::engine::draft::DraftOptions;
use ryzanstein_server::engine::{self, EngineHandle, EngineOptions, GenEvent, GenRequest};
use ryzanstein_server::sampler::SamplingParams;

fn start(draft: Option<DraftOptions>) -> engine::Engine {
    let opts = EngineOptions {
        threads: 2,
        ctx_size: Some(2048),
        max_sequences: 4,
        draft,
        ..EngineOptions::default()
    };
    let path = common::model_path();
    engine::load(path.to_str().unwrap(), &opts).expect("load the bundled model")
}

/// Generated tokens and (drafted, accepted).
fn generate(h: &EngineHandle, prompt: &str, seed: Option<u64>) -> (Vec<u32>, (usize, usize)) {
    let messages = [ChatMessage::new("user", prompt)];
    let sampling = SamplingParams {
        temperature: if seed.is_some() { 0.8 } else { 0.0 },
        seed,
        ..SamplingParams::default()
    };
    let req = GenRequest {
        prompt_ids: h.encode_chat(&messages).unwrap(),
        sampling,
        max_tokens: 96,
        stop: vec![],
        ignore_eos: false,
        tenant: Default::default(),
    };
    let mut rx = h.submit(req).expect("submit");
    let mut out = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            GenEvent::Token { id, .. } => out.push(id),
            GenEvent::Done { timings, .. } => {
                return (out, (timings.draft_tokens, timings.accepted_tokens))
            }
            GenEvent::Error(e) => panic!("generation failed: {e}"),
            GenEvent::TimedOut { after } => panic!("timed out after {after:?}"),
        }
    }
    panic!("the stream ended without Done");
}

const PROMPTS: [&str; 3] = [
    "Repeat this sentence exactly, twice: The quick brown fox jumps over the lazy dog near the \
     river bank.",
    "Rename the variable x to total in this code and print the code:\n\
     def add(a, b):\n    x = a + b\n    print(x)\n    return x\n",
    "Quote the first line, then summarise: \"Rome was not built in a day, but it was built \
     every day.\"",
];

/// Every prompt, all at once (batched), greedy and with a seed.
fn run_all(h: &EngineHandle) -> Vec<(Vec<u32>, (usize, usize))> {
    let runs: Vec<_> = PROMPTS
        .iter()
        .flat_map(|p| [(p, None), (p, Some(11))])
        .map(|(p, seed)| {
            let (h, p) = (h.clone(), p.to_string());
            thread::spawn(move || generate(&h, &p, seed))
        })
        .collect();
    runs.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn drafted_tokens_are_accepted_and_the_output_is_unchanged() {
    let plain = start(None);
    let want: Vec<Vec<u32>> = PROMPTS
        .iter()
        .flat_map(|p| [(p, None), (p, Some(11))])
        .map(|(p, seed)| generate(&plain.handle(), p, seed).0)
        .collect();
    plain.join();

    let spec = start(Some(DraftOptions {
        max_tokens: 4,
        ngram: 3,
        min_ngram: 1,
    }));
    let h = spec.handle();
    // Alone, then batched together.
    let alone: Vec<(Vec<u32>, (usize, usize))> = PROMPTS
        .iter()
        .flat_map(|p| [(p, None), (p, Some(11))])
        .map(|(p, seed)| generate(&h, p, seed))
        .collect();
    let together = run_all(&h);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&alone[i].0, w, "request {i}: speculative output differs");
        assert_eq!(
            &together[i].0, w,
            "request {i}: batched speculative output differs"
        );
    }
    let (drafted, accepted) = alone
        .iter()
        .fold((0, 0), |(d, a), (_, (dd, aa))| (d + dd, a + aa));
    assert!(
        accepted > 0 && accepted <= drafted,
        "{accepted} of {drafted} drafted accepted"
    );
    let s = h.stats();
    assert!(s.accepted_tokens >= accepted as u64 && s.draft_tokens >= drafted as u64);
    eprintln!(
        "accepted {accepted} of {drafted} drafted tokens ({:.0}%)",
        100.0 * accepted as f64 / drafted.max(1) as f64
    );
    drop(h);
    spec.join();
}
