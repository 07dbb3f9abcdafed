//! The HTTP API end to end: the real `ryzanstein serve` binary on the real bundled model,
//! driven over HTTP on 127.0.0.1.

mod api_harness;
mod common;

use std::time::Duration;

use api_harness::{merge, Server};
use serde_json::{json, Value};

const QUESTION: &str = "What is the capital of France?";

fn parse_frames(frames: &[String]) -> (Vec<Value>, bool) {
    let done = frames.last().map(String::as_str) == Some("[DONE]");
    let chunks = frames
        .iter()
        .filter(|f| f.as_str() != "[DONE]")
        .map(|f| serde_json::from_str(f).unwrap_or_else(|e| panic!("chunk {f:?}: {e}")))
        .collect();
    (chunks, done)
}

#[test]
fn chat_completion_json_models_and_probes() {
    let server = Server::start(&[]);
    let served = "SmolLM2-135M-Instruct.Q4_1";

    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.get("/readyz").0, 200);
    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], served);
    assert_eq!(models["data"][0]["owned_by"], "ryzanstein");

    let (status, v) = server.post(
        "/v1/chat/completions",
        &json!({"model": served, "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 8, "temperature": 0, "ignore_eos": true, "user": "test",
                "unknown_field": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"), "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], served);
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert!(v["system_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("ryzanstein"));
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(choice["finish_reason"], "length");
    // The reference prompt (system prompt from the GGUF template + question) is 37 tokens.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 37, "completion_tokens": 8, "total_tokens": 45})
    );

    // Content given as text parts is the same request.
    let (status, parts) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": [
                    {"type": "text", "text": "What is the capital"},
                    {"type": "text", "text": " of France?"}]}],
                "max_completion_tokens": 8, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{parts}");
    assert_eq!(
        parts["choices"][0]["message"]["content"],
        choice["message"]["content"]
    );
}

/// Greedy decoding through the whole stack gives llama.cpp's text (the shared reference).
#[test]
fn greedy_chat_matches_the_llama_cpp_reference() {
    let reference = common::read_json(&common::shared_reference("smollm2-greedy.json"));
    let server = Server::start(&[]);
    let (text, finish, v) = server.chat_text(
        reference["user_message"].as_str().unwrap(),
        json!({"max_tokens": 64}),
    );
    assert_eq!(text, reference["greedy_text_64"].as_str().unwrap());
    assert_eq!(finish, "length");
    assert_eq!(v["usage"]["completion_tokens"], 64);
}

#[test]
fn chat_streaming_sends_role_content_finish_usage_and_done() {
    let server = Server::start(&[]);
    let (whole, _, _) = server.chat_text(QUESTION, json!({"max_tokens": 10, "ignore_eos": true}));

    let frames = server.stream_all(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 10,
                "temperature": 0, "ignore_eos": true, "stream": true,
                "stream_options": {"include_usage": true}}),
    );
    let (chunks, done) = parse_frames(&frames);
    assert!(done, "the stream ends with [DONE]: {frames:?}");
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let id = first["id"].clone();
    assert!(chunks.iter().all(|c| c["id"] == id), "one id per stream");

    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 10);
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 37);
    let finish_chunk = &chunks[chunks.len() - 2];
    assert_eq!(finish_chunk["choices"][0]["finish_reason"], "length");

    let content: String = chunks[..chunks.len() - 2]
        .iter()
        .map(|c| {
            assert!(c["choices"][0]["finish_reason"].is_null());
            c["choices"][0]["delta"]["content"].as_str().unwrap_or("")
        })
        .collect();
    assert_eq!(content, whole, "streamed and whole answers agree");

    // Without include_usage there is no usage chunk.
    let frames = server.stream_all(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 3,
                "temperature": 0, "ignore_eos": true, "stream": true}),
    );
    let (chunks, done) = parse_frames(&frames);
    assert!(done);
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none_or(Value::is_null)));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
}

#[test]
fn completions_json_and_streaming_agree() {
    let server = Server::start(&[]);
    let body = json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0});
    let (status, v) = server.post("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap().to_owned();
    assert!(!text.is_empty());
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 6);

    // A one-element array of strings is the same prompt.
    let (_, same) = server.post(
        "/v1/completions",
        &json!({"prompt": ["The capital of France is"], "max_tokens": 6, "temperature": 0}),
    );
    assert_eq!(same["choices"][0]["text"], text.as_str());

    let mut streaming = body.clone();
    merge(
        &mut streaming,
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let (chunks, done) = parse_frames(&server.stream_all("/v1/completions", &streaming));
    assert!(done);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, text);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 6);

    // Token ids as the prompt.
    let (status, ids) = server.post(
        "/v1/completions",
        &json!({"prompt": [504, 3575, 282, 4649, 314], "max_tokens": 2, "temperature": 0}),
    );
    assert_eq!(status, 200, "{ids}");
    assert_eq!(ids["usage"]["prompt_tokens"], 5);
}

#[test]
fn bad_requests_get_openai_errors_naming_the_field() {
    // A small context makes the context overflow cheap to provoke.
    let server = Server::start(&["--ctx-size", "64"]);
    let msgs = json!([{"role": "user", "content": QUESTION}]);
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "temperature": 2.5}),
            400,
            Some("temperature"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "temperature": -1}),
            400,
            Some("temperature"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "top_p": 0}),
            400,
            Some("top_p"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "top_p": 1.01}),
            400,
            Some("top_p"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "max_tokens": 0}),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "n": 17}),
            400,
            Some("n"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "logprobs": true, "top_logprobs": 21}),
            400,
            Some("top_logprobs"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}),
            400,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"max_tokens": 3}),
            400,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "temperature": "warm"}),
            400,
            Some("temperature"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "model": "gpt-4o"}),
            404,
            Some("model"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "max_tokens": 100}),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            json!({"prompt": ["a", "b"]}),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            json!({"prompt": [99999999]}),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            json!({"max_tokens": 3}),
            400,
            Some("prompt"),
        ),
    ];
    for (path, body, status, param) in cases {
        let (got, v) = server.post(path, &body);
        assert_eq!(got, status, "{path} {body} -> {v}");
        let err = &v["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert_eq!(err["param"].as_str(), param, "{body} -> {v}");
        assert!(err.get("code").is_some(), "code is always present: {v}");
        assert_eq!(err["type"], "invalid_request_error");
        if status == 404 {
            assert_eq!(err["code"], "model_not_found");
        }
    }

    // The context overflow says the numbers and what to do.
    let (_, v) = server.post(
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 100}),
    );
    let message = v["error"]["message"].as_str().unwrap();
    for needle in ["37", "100", "64", "max_tokens to at most 27"] {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }

    // Bodies that are not JSON, or not declared as JSON.
    let client = api_harness::client();
    for (content_type, body, needle) in [
        ("application/json", "{\"messages\": [", "not valid JSON"),
        ("text/plain", "{}", "Content-Type"),
        ("application/json", "[1, 2]", "JSON object"),
    ] {
        let r = client
            .post(server.url("/v1/chat/completions"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v} lacks {needle:?}"
        );
    }
    let r = client.get(server.url("/v1/nothing-here")).send().unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn stop_strings_length_seed_and_ignore_eos() {
    let server = Server::start(&[]);

    // Stop strings: cut the greedy answer before the stop string, finish "stop".
    // ignore_eos keeps the answer 16 tokens long whatever the model would say.
    let limits = json!({"max_tokens": 16, "ignore_eos": true});
    let (full, finish, _) = server.chat_text(QUESTION, limits.clone());
    assert_eq!(finish, "length");
    let stop = full
        .chars()
        .skip(3)
        .find(|c| *c == ',' || *c == ' ')
        .expect("the answer has a comma or a space after its third character")
        .to_string();
    let mut with_stop = limits.clone();
    merge(&mut with_stop, json!({"stop": [&stop]}));
    let (cut, finish, _) = server.chat_text(QUESTION, with_stop);
    assert_eq!(finish, "stop");
    assert_eq!(cut, full[..full.find(&stop).unwrap()]);
    // A stop string that never appears changes nothing.
    let mut never = limits.clone();
    merge(&mut never, json!({"stop": "never-appears-xyz"}));
    let (same, finish, _) = server.chat_text(QUESTION, never);
    assert_eq!((same.as_str(), finish.as_str()), (full.as_str(), "length"));

    // Seeded sampling is reproducible.
    let sampled = |seed: u64| {
        server
            .chat_text(
                "Write a short poem.",
                json!({"max_tokens": 12, "temperature": 0.8, "seed": seed, "ignore_eos": true}),
            )
            .0
    };
    assert_eq!(sampled(42), sampled(42));

    // Without a system prompt this question ends with <|im_end|> after 8 tokens (llama.cpp
    // reference): finish "stop" at EOS, unless ignore_eos, which runs to max_tokens.
    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let (status, v) = server.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 20, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
    assert!(!v["choices"][0]["text"]
        .as_str()
        .unwrap()
        .contains("<|im_end|>"));
    let (status, v) = server.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 20, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 20);
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let server = Server::start(&["--parallel", "1", "--queue-size", "0"]);
    // Hold one generation open: its first chunk proves the engine is busy with it.
    let mut busy = server.post_stream(
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0,
                "ignore_eos": true, "stream": true}),
    );
    assert!(busy.next_frame().is_some());
    let r = api_harness::client()
        .post(server.url("/v1/completions"))
        .json(&json!({"prompt": "Hello", "max_tokens": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "queue_full");
    // The client goes away: the engine drops that generation and serves the next request.
    drop(busy);
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (status, v) = server.post(
            "/v1/completions",
            &json!({"prompt": "Hello", "max_tokens": 2, "temperature": 0}),
        );
        if status == 200 {
            assert_eq!(v["usage"]["completion_tokens"], 2);
            break;
        }
        assert_eq!(status, 429, "{v}");
        assert!(
            std::time::Instant::now() < deadline,
            "the engine stayed busy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_finishes_in_flight_streams_then_exits() {
    let mut server = Server::start(&[]);
    let mut stream = server.post_stream(
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0,
                "ignore_eos": true, "stream": true}),
    );
    assert!(stream.next_frame().is_some());
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut frames = Vec::new();
    while let Some(f) = stream.next_frame() {
        frames.push(f);
    }
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let (chunks, _) = parse_frames(&frames);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    let status = server.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "exit status {status}");
}

/// The value of the first sample of `name` whose labels contain `labels`, in Prometheus text.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in:\n{text}"))
}

fn metrics_text(server: &Server) -> String {
    let r = api_harness::client()
        .get(server.url("/metrics"))
        .send()
        .expect("GET /metrics");
    assert_eq!(r.status().as_u16(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    r.text().unwrap()
}

#[test]
fn metrics_count_running_requests_outcomes_and_tokens() {
    let server = Server::start(&[]);
    let m = metrics_text(&server);
    assert_eq!(sample(&m, "ryzanstein_model_loaded", ""), 1.0);
    assert_eq!(sample(&m, "ryzanstein_num_requests_running", ""), 0.0);
    assert_eq!(sample(&m, "ryzanstein_num_requests_waiting", ""), 0.0);

    let (status, v) = server.post(
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{v}");
    let m = metrics_text(&server);
    assert_eq!(
        sample(&m, "ryzanstein_requests_total", "outcome=\"length\""),
        1.0
    );
    assert_eq!(sample(&m, "ryzanstein_generation_tokens_total", ""), 5.0);
    let prompt_tokens = v["usage"]["prompt_tokens"].as_f64().unwrap();
    assert_eq!(
        sample(&m, "ryzanstein_prompt_tokens_total", ""),
        prompt_tokens
    );

    // A long stream is counted as running while it generates, and as cancelled once dropped.
    let mut stream = server.post_stream(
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": true, "stream": true}),
    );
    stream.next_frame().expect("a first frame");
    let m = metrics_text(&server);
    assert_eq!(sample(&m, "ryzanstein_num_requests_running", ""), 1.0);
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics_text(&server);
        if sample(&m, "ryzanstein_requests_total", "outcome=\"cancelled\"") == 1.0 {
            assert_eq!(sample(&m, "ryzanstein_num_requests_running", ""), 0.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped stream was never counted:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
