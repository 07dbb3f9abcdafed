//! `n` choices through the HTTP API with the real model: one sequence per choice, seeds
//! derived from the request's so the response is reproducible and choice 0 is the `n: 1`
//! answer, usage counting the prompt once, streamed with `index`, bounded by `--parallel`.

mod api_harness;
mod common;

use std::collections::BTreeMap;

use api_harness::Server;
use serde_json::{json, Value};

fn chat(n: u64, extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "Name a fruit."}],
        "n": n, "max_tokens": 12, "temperature": 1.0, "seed": 42});
    api_harness::merge(&mut body, extra);
    body
}

fn texts(v: &Value) -> Vec<String> {
    v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i as u64, "{v}");
            c["message"]["content"]
                .as_str()
                .or(c["text"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn n_choices_whole_streamed_and_bounded() {
    let server = Server::start(&["--parallel", "4"]);
    let (status, one) = server.post("/v1/chat/completions", &chat(1, json!({})));
    assert_eq!(status, 200, "{one}");
    let (status, three) = server.post("/v1/chat/completions", &chat(3, json!({})));
    assert_eq!(status, 200, "{three}");
    let t3 = texts(&three);
    assert_eq!(t3.len(), 3);
    assert_eq!(t3[0], texts(&one)[0], "choice 0 uses the request's seed");
    assert!(
        t3[1] != t3[0] || t3[2] != t3[0],
        "other choices get other seeds: {t3:?}"
    );
    let (_, again) = server.post("/v1/chat/completions", &chat(3, json!({})));
    assert_eq!(texts(&again), t3, "derived seeds are deterministic");
    let u1 = &one["usage"];
    let u3 = &three["usage"];
    assert_eq!(
        u3["prompt_tokens"], u1["prompt_tokens"],
        "the prompt counts once"
    );
    let completion: u64 = three["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            if c["finish_reason"] == "length" {
                12
            } else {
                0
            }
        })
        .sum();
    assert!(u3["completion_tokens"].as_u64().unwrap() >= completion);
    assert_eq!(
        u3["total_tokens"].as_u64().unwrap(),
        u3["prompt_tokens"].as_u64().unwrap() + u3["completion_tokens"].as_u64().unwrap()
    );

    // Streamed: every chunk names its choice; the texts are the same as whole.
    let frames = server.stream_all(
        "/v1/chat/completions",
        &chat(
            3,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    );
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let mut by_index: BTreeMap<u64, String> = BTreeMap::new();
    let mut finished = 0;
    let mut usage = Value::Null;
    for f in &frames[..frames.len() - 1] {
        let c: Value = serde_json::from_str(f).unwrap();
        if !c["usage"].is_null() {
            usage = c["usage"].clone();
        }
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap();
            let text = by_index.entry(i).or_default();
            text.push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            finished += usize::from(ch["finish_reason"].is_string());
        }
    }
    assert_eq!(finished, 3);
    assert_eq!(by_index.into_values().collect::<Vec<_>>(), t3);
    assert_eq!(usage, three["usage"]);

    // Greedy choices are all the same; completions take n too.
    let (status, greedy) = server.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "n": 2, "max_tokens": 6,
                "temperature": 0}),
    );
    assert_eq!(status, 200, "{greedy}");
    let g = texts(&greedy);
    assert_eq!(g.len(), 2);
    assert_eq!(g[0], g[1]);

    // The choices share the prompt: after the first has run it, the others find its full
    // blocks in the prefix cache.
    let hits = || -> u64 {
        let text = api_harness::client()
            .get(server.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("ryzanstein_prefix_cache_hits_total"))
            .unwrap_or_else(|| panic!("no prefix hits metric in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = hits();
    let long = "Here is a list of fruits: apple, banana, cherry, date, elderberry, fig, grape, \
                honeydew, kiwi, lemon, mango, nectarine, orange, papaya, quince, raspberry, \
                strawberry, tangerine. Which of them is yellow?";
    let (status, v) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": long}], "n": 3, "max_tokens": 4,
                "seed": 9}),
    );
    assert_eq!(status, 200, "{v}");
    let full_blocks = (v["usage"]["prompt_tokens"].as_u64().unwrap() - 1) / 32;
    assert!(full_blocks >= 2, "{v}");
    assert!(
        hits() - before >= 2 * full_blocks,
        "choices 1 and 2 reuse choice 0's {full_blocks} prompt blocks: {} hits",
        hits() - before
    );

    for n in [0, 5, 17] {
        let (status, v) = server.post("/v1/chat/completions", &chat(n, json!({})));
        assert_eq!(status, 400, "n = {n}: {v}");
        assert_eq!(v["error"]["param"], "n");
    }
}
