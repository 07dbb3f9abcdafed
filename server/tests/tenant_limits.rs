//! Per-tenant limits on the real server process with the real model: a tenant over its
//! requests per minute, tokens per minute or concurrency gets an OpenAI-shaped 429 with
//! `Retry-After` and `x-ratelimit-*` headers while another tenant is served, a prompt larger
//! than a whole minute's tokens is a 400, and `/metrics` counts all of it by tenant.

mod api_harness;
mod common;

use std::io::{BufRead, BufReader};

use api_harness::{client, Server};
use serde_json::{json, Value};

const KEYS: &str = "team-a sk-a\nteam-b sk-b\nteam-c sk-c\n";
const LIMITS: &str = r#"{
  "tenants": {
    "team-a": {"requestsPerMinute": 2},
    "team-b": {"maxConcurrentRequests": 1},
    "team-c": {"tokensPerMinute": 400}
  }
}"#;

fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let limits = dir.path().join("limits.json");
    std::fs::write(&keys, KEYS).unwrap();
    std::fs::write(&limits, LIMITS).unwrap();
    let server = Server::start(&[
        "--api-key-file",
        keys.to_str().unwrap(),
        "--tenant-limits",
        limits.to_str().unwrap(),
    ]);
    (dir, server)
}

fn chat_body(content: &str, max_tokens: u32) -> Value {
    json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens, "temperature": 0,
    })
}

fn chat(server: &Server, key: &str, body: &Value) -> reqwest::blocking::Response {
    client()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .expect("POST")
}

fn header<'a>(r: &'a reqwest::blocking::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", r.headers()))
        .to_str()
        .unwrap()
}

#[test]
fn a_tenant_over_its_limits_gets_429_while_others_are_served() {
    let (_dir, server) = start();

    // team-a: two requests a minute.
    for remaining in ["1", "0"] {
        let r = chat(&server, "sk-a", &chat_body("Say hi.", 4));
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "2");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), remaining);
        assert!(header(&r, "x-ratelimit-reset-requests").ends_with('s'));
    }
    let r = chat(&server, "sk-a", &chat_body("Say hi.", 4));
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 requests per minute"));
    // Meanwhile team-c (no request limit) is served.
    let r = chat(&server, "sk-c", &chat_body("Say hi.", 4));
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "400");
    assert!(r.headers().get("x-ratelimit-limit-requests").is_none());

    // team-b: one request in flight. A stream holds its slot until it ends.
    let mut stream = client()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth("sk-b")
        .json(&json!({
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 200, "temperature": 0, "ignore_eos": true, "stream": true,
        }))
        .send()
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let mut first = String::new();
    let mut reader = BufReader::new(&mut stream);
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("data: "), "{first}");
    let r = chat(&server, "sk-b", &chat_body("Say hi.", 4));
    assert_eq!(r.status().as_u16(), 429);
    let body: Value = r.json().unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1 requests in flight"));
    assert_eq!(
        chat(&server, "sk-c", &chat_body("Say hi.", 4))
            .status()
            .as_u16(),
        200,
        "another tenant is served while team-b's slot is taken"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(rest.contains("data: [DONE]"));
    drop(stream);
    // The slot is free once the stream has ended (released when the body is dropped).
    let mut freed = false;
    for _ in 0..50 {
        if chat(&server, "sk-b", &chat_body("Say hi.", 4)).status() == 200 {
            freed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(freed, "team-b's slot came back after its stream ended");

    // team-c: 400 tokens a minute. A prompt over 400 tokens can never fit: 400.
    let long = "the quick brown fox jumps over the lazy dog ".repeat(60);
    let r = chat(&server, "sk-c", &chat_body(&long, 4));
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("400 tokens per minute"));
    // Completion tokens are charged afterwards: a long answer uses up the minute.
    let r = chat(
        &server,
        "sk-c",
        &json!({"messages": [{"role": "user", "content": "Tell a story."}],
                "max_tokens": 500, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(r.status().as_u16(), 200);
    let r = chat(&server, "sk-c", &chat_body("Say hi.", 4));
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "0");
    let body: Value = r.json().unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tokens per minute"));

    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    // Series are `name{model_name="...",LABELS} VALUE`.
    let series = |name: &str, labels: &str| -> u64 {
        let tail = format!(",{labels}}} ");
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find_map(|l| l.split_once(&tail).map(|(_, v)| v))
            .unwrap_or_else(|| panic!("no {name} with {labels} in\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        series(
            "ryzanstein_tenant_rejected_requests_total",
            "tenant=\"team-a\",reason=\"requests_per_minute\""
        ),
        1
    );
    assert_eq!(
        series(
            "ryzanstein_tenant_rejected_requests_total",
            "tenant=\"team-b\",reason=\"concurrency\""
        ),
        1
    );
    assert_eq!(
        series(
            "ryzanstein_tenant_rejected_requests_total",
            "tenant=\"team-c\",reason=\"too_large\""
        ),
        1
    );
    assert_eq!(
        series("ryzanstein_tenant_requests_total", "tenant=\"team-a\""),
        2
    );
    assert!(
        series(
            "ryzanstein_tenant_completion_tokens_total",
            "tenant=\"team-c\""
        ) >= 500
    );
    assert_eq!(
        series("ryzanstein_tenant_requests_in_flight", "tenant=\"team-b\""),
        0
    );
}
