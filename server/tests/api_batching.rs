//! Continuous batching through the HTTP API: concurrent requests are generated together (the
//! running gauge shows them side by side) and each gets exactly the text it gets alone; a full
//! queue answers 429 with Retry-After; a client that leaves frees its slot for the next request.

mod api_harness;
mod common;

use std::time::{Duration, Instant};

use api_harness::{client, Server};
use serde_json::{json, Value};

const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Write one sentence about the sea.",
    "Count from one to five.",
];

fn body(prompt: &str, max_tokens: u32) -> Value {
    json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
    })
}

fn text(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {v}"))
        .to_owned()
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn concurrent_requests_run_together_and_answer_as_they_would_alone() {
    let server = Server::start(&["--parallel", "4", "--threads", "2"]);
    // Alone, one after another.
    let alone: Vec<String> = PROMPTS
        .iter()
        .map(|p| {
            let (status, v) = server.post("/v1/chat/completions", &body(p, 48));
            assert_eq!(status, 200, "{v}");
            text(&v)
        })
        .collect();

    // Together, while a watcher samples the running gauge.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let base = server.base.clone();
        std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let text = client()
                    .get(format!("{base}/metrics"))
                    .send()
                    .and_then(|r| r.text())
                    .unwrap_or_default();
                if let Some(v) = text
                    .lines()
                    .find(|l| l.starts_with("ryzanstein_num_requests_running"))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    peak = peak.max(v);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = PROMPTS
            .iter()
            .map(|p| {
                let server = &server;
                s.spawn(move || {
                    let (status, v) = server.post("/v1/chat/completions", &body(p, 48));
                    assert_eq!(status, 200, "{v}");
                    text(&v)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = watcher.join().unwrap();
    assert_eq!(
        together, alone,
        "batched generations differ from generations alone"
    );
    assert!(
        peak >= 2.0,
        "requests never ran together (peak running {peak})"
    );
}

#[test]
fn a_full_queue_answers_429_and_a_client_that_leaves_frees_its_slot() {
    let server = Server::start(&["--parallel", "1", "--queue-size", "1", "--threads", "2"]);
    // One long request runs, one waits; the third is refused.
    let mut first = server.post_stream("/v1/chat/completions", &{
        let mut b = body(PROMPTS[0], 2000);
        b["stream"] = json!(true);
        b
    });
    assert!(first.next_frame().is_some(), "the first request streams");
    let waiting = {
        let base = server.base.clone();
        std::thread::spawn(move || {
            client()
                .post(format!("{base}/v1/chat/completions"))
                .json(&body(PROMPTS[1], 4))
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "ryzanstein_num_requests_waiting") < 1.0 {
        assert!(Instant::now() < deadline, "the second request never queued");
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = client()
        .post(server.url("/v1/chat/completions"))
        .json(&body(PROMPTS[2], 4))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let error: Value = refused.json().unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error", "{error}");

    // The first client leaves: its slot goes to the waiting request, which finishes.
    drop(first);
    assert_eq!(waiting.join().unwrap(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "ryzanstein_num_requests_running") > 0.0 {
        assert!(Instant::now() < deadline, "a request is still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}
