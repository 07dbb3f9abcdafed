//! `POST /v1/embeddings` end to end: the real `ryzanstein serve` binary with
//! `--embedding-model bundled://all-minilm-l6-v2` beside the chat model, driven over HTTP.
//! Float and base64 answers, token-id input, the OpenAI error shapes, `/v1/models` and
//! `/metrics`; embeddings are compared with the sentence-transformers fixture.

mod api_harness;
mod common;

use api_harness::{client, Server};
use serde_json::{json, Value};

const EMBED: &str = "all-MiniLM-L6-v2";
const CHAT: &str = "SmolLM2-135M-Instruct.Q4_1";

fn fixture() -> Value {
    common::read_json(&common::test_data("embeddings/all_minilm_l6_v2.json"))
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// Standard base64 with padding, as the server writes it.
fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    assert_eq!(s.len() % 4, 0, "base64 length");
    let mut out = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let pad = q.iter().filter(|&&c| c == b'=').count();
        let n = q
            .iter()
            .map(|&c| if c == b'=' { 0 } else { val(c) as u32 })
            .fold(0u32, |acc, v| acc << 6 | v);
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

fn error_of(server: &Server, body: Value) -> (u16, Value) {
    let (status, v) = server.post("/v1/embeddings", &body);
    assert!(
        status >= 400,
        "expected an error for {body}, got {status}: {v}"
    );
    (status, v["error"].clone())
}

#[test]
fn embeddings_over_http() {
    let server = Server::start(&["--embedding-model", "bundled://all-minilm-l6-v2"]);
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    let (s0, s1) = (&cases[0], &cases[1]);
    let text = |c: &Value| c["text"].as_str().unwrap().to_owned();

    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [CHAT, EMBED]);

    // Floats, two inputs, against sentence-transformers.
    let (status, v) = server.post(
        "/v1/embeddings",
        &json!({"model": EMBED, "input": [text(s0), text(s1)], "user": "test"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], EMBED);
    let tokens = |c: &Value| c["input_ids"].as_array().unwrap().len();
    let n_tokens = tokens(s0) + tokens(s1);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": n_tokens, "total_tokens": n_tokens})
    );
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, (item, case)) in data.iter().zip([s0, s1]).enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        let got = floats(&item["embedding"]);
        assert_eq!(got.len(), 384);
        let cos = cosine(&got, &floats(&case["embedding"]));
        assert!(cos >= 0.9999, "cosine {cos} for input {i}");
    }
    let first = floats(&data[0]["embedding"]);

    // base64: the same floats, as little-endian f32 bytes.
    let (status, b) = server.post(
        "/v1/embeddings",
        &json!({"model": EMBED, "input": text(s0), "encoding_format": "base64",
                "dimensions": 384}),
    );
    assert_eq!(status, 200, "{b}");
    let bytes = unbase64(b["data"][0]["embedding"].as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded.len(), 384);
    let same_bits = decoded
        .iter()
        .zip(&first)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same_bits, "base64 and float answers differ");

    // Token ids as the tokenizer gives them: the same embedding as the text, one array or
    // several; no model field means the embedding model.
    let ids0 = s0["input_ids"].clone();
    let (status, t) = server.post("/v1/embeddings", &json!({"input": ids0}));
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["usage"]["prompt_tokens"], tokens(s0));
    let from_ids = floats(&t["data"][0]["embedding"]);
    assert!(from_ids
        .iter()
        .zip(&first)
        .all(|(a, b)| (a - b).abs() < 1e-6));
    let (status, t) = server.post(
        "/v1/embeddings",
        &json!({"model": EMBED, "input": [ids0, s1["input_ids"]]}),
    );
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["data"].as_array().unwrap().len(), 2);
    let cos = cosine(
        &floats(&t["data"][1]["embedding"]),
        &floats(&s1["embedding"]),
    );
    assert!(cos >= 0.9999, "cosine {cos}");

    // Errors: the OpenAI shape, the right status, the field named.
    let bad_request = |body: Value, param: &str, says: &str| {
        let (status, e) = error_of(&server, body.clone());
        assert_eq!(status, 400, "{body}: {e}");
        assert_eq!(e["type"], "invalid_request_error", "{e}");
        assert_eq!(e["param"], param, "{body}: {e}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(says), "{body}: {msg}");
    };
    bad_request(json!({"input": ""}), "input", "empty string");
    bad_request(json!({"input": []}), "input", "empty array");
    bad_request(json!({"input": ["fine", ""]}), "input[1]", "empty string");
    bad_request(json!({"model": EMBED}), "input", "required");
    bad_request(json!({ "input": vec!["a"; 2049] }), "input", "at most 2048");
    bad_request(
        json!({"input": "x", "dimensions": 128}),
        "dimensions",
        "384",
    );
    bad_request(
        json!({"input": "x", "encoding_format": "int8"}),
        "encoding_format",
        "\"base64\"",
    );
    bad_request(json!({"input": [101, 30522]}), "input[1]", "0 to 30521");
    bad_request(json!({"input": vec![101; 257]}), "input", "at most 256");
    bad_request(json!({"model": CHAT, "input": "x"}), "model", "chat model");
    let (status, e) = error_of(
        &server,
        json!({"model": "text-embedding-3-small", "input": "x"}),
    );
    assert_eq!(status, 404);
    assert_eq!(e["code"], "model_not_found");
    assert!(e["message"].as_str().unwrap().contains(EMBED), "{e}");

    // Text past max_seq_length is truncated, not refused.
    let long = text(&cases[6]);
    let (status, v) = server.post("/v1/embeddings", &json!({ "input": long }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 256);

    // A body past axum's 2 MB default (mostly whitespace, so cheap to embed) is accepted.
    let padded = format!("a{}", " ".repeat(2000));
    let (status, v) = server.post("/v1/embeddings", &json!({ "input": vec![padded; 1500] }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 1500 * 3);

    // /metrics counts the embedding requests next to the chat model's series.
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let series = |line: &str| -> u64 {
        let l = metrics
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"));
        l.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let m = format!("model_name=\"{EMBED}\"");
    assert_eq!(
        series(&format!(
            "ryzanstein_embedding_requests_total{{{m},outcome=\"success\"}}"
        )),
        6
    );
    assert_eq!(
        series(&format!(
            "ryzanstein_embedding_requests_total{{{m},outcome=\"error\"}}"
        )),
        11
    );
    assert_eq!(
        series(&format!("ryzanstein_embedding_inputs_total{{{m}}}")),
        1507
    );
    assert_eq!(
        series(&format!("ryzanstein_embedding_model_loaded{{{m}}}")),
        1
    );
    assert!(metrics.contains(&format!(
        "ryzanstein_num_requests_running{{model_name=\"{CHAT}\"}}"
    )));
}

#[test]
fn without_an_embedding_model_the_endpoint_says_how_to_enable_it() {
    let server = Server::start(&[]);
    let (status, e) = error_of(&server, json!({"input": "hello"}));
    assert_eq!(status, 400);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("--embedding-model"), "{msg}");
    let (_, models) = server.get("/v1/models");
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!metrics.contains("ryzanstein_embedding_"));
}
