//! API keys on the real server process with the real model: keys from a file map to tenants,
//! a request without a valid key gets an OpenAI-shaped 401 while the probes stay open, and an
//! edited key file takes effect without a restart (a broken edit keeps the keys in force).

mod api_harness;
mod common;

use std::time::{Duration, Instant};

use api_harness::{client, Server};
use serde_json::{json, Value};

fn chat(server: &Server, key: Option<&str>) -> (u16, Value) {
    let mut req = client()
        .post(server.url("/v1/chat/completions"))
        .json(&json!({
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4, "temperature": 0,
        }));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().expect("POST");
    (r.status().as_u16(), r.json().unwrap())
}

/// Waits (bounded) until `key` gets `status`.
fn wait_for(server: &Server, key: &str, status: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, body) = chat(server, Some(key));
        if got == status {
            return;
        }
        assert!(
            Instant::now() < until,
            "{key} still gets {got} ({body}) instead of {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn keys_from_a_file_are_required_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# tenants\nteam-a sk-a-1\nteam-b sk-b-1\n").unwrap();
    let server = Server::start(&["--api-key-file", file.to_str().unwrap()]);

    let (status, body) = chat(&server, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = chat(&server, Some("sk-a-2"));
    assert_eq!(status, 401, "{body}");
    let (status, body) = chat(&server, Some("sk-a-1"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    let r = client()
        .get(server.url("/v1/models"))
        .header("x-api-key", "sk-b-1")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.get("/readyz").0, 200);
    let metrics = client().get(server.url("/metrics")).send().unwrap();
    assert_eq!(metrics.status().as_u16(), 200, "metrics need no key");

    // Rotate team-a's key: the new one works and the old one stops, without a restart.
    std::fs::write(&file, "team-a sk-a-2\nteam-b sk-b-1\n").unwrap();
    wait_for(&server, "sk-a-2", 200);
    assert_eq!(chat(&server, Some("sk-a-1")).0, 401);
    // A broken edit keeps the keys in force.
    std::fs::write(&file, "team-a sk-a-3 extra\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(chat(&server, Some("sk-a-2")).0, 200);
    assert_eq!(chat(&server, Some("sk-a-3")).0, 401);
}

#[test]
fn a_key_file_without_keys_stops_the_server_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# nothing yet\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ryzanstein"))
        .args(["serve", "--port", "0", "--model"])
        .arg(common::model_path())
        .arg("--api-key-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no API key"), "{err}");
}
