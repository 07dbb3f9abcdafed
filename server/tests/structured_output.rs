//! Structured output with the real model: random schemas of the supported subset, decoded
//! greedy and sampled under a small token budget, always give JSON that parses and that an
//! independent validator (below, written from the JSON Schema rules, not from our matcher)
//! accepts; and the same through the HTTP API (`response_format`), with 400s for what cannot
//! be enforced.

mod api_harness;
mod common;

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use api_harness::Server;
use ryzanstein_server::chat_template::ChatMessage;
use ryzanstein_server::engine::draft::DraftOptions;
use ryzanstein_server::engine::{
    self, EngineHandle, EngineOptions, FinishReason, GenEvent, GenRequest,
};
use ryzanstein_server::sampler::SamplingParams;
use ryzanstein_server::structured::Grammar;

fn engine() -> &'static EngineHandle {
    static ENGINE: OnceLock<(engine::Engine, EngineHandle)> = OnceLock::new();
    &ENGINE
        .get_or_init(|| {
            let opts = EngineOptions {
                threads: 2,
                ctx_size: Some(2048),
                max_sequences: 4,
                // Constrained sequences do not draft; drafting stays on for the others.
                draft: Some(DraftOptions::default()),
                ..EngineOptions::default()
            };
            let path = common::model_path();
            let e = engine::load(path.to_str().unwrap(), &opts).expect("load the bundled model");
            let h = e.handle();
            (e, h)
        })
        .1
}

/// Generates under `schema`; the text and the finish reason.
fn generate(schema: &Value, seed: Option<u64>, max_tokens: usize) -> (String, FinishReason) {
    let h = engine();
    let grammar = Arc::new(Grammar::from_schema(schema).expect("a supported schema"));
    let messages = [ChatMessage::new(
        "user",
        format!("Answer with a JSON value that follows this JSON schema: {schema}"),
    )];
    let sampling = SamplingParams {
        temperature: if seed.is_some() { 1.0 } else { 0.0 },
        seed,
        grammar: Some(grammar),
        ..SamplingParams::default()
    };
    let req = GenRequest {
        prompt_ids: h.encode_chat(&messages).unwrap(),
        sampling,
        max_tokens,
        stop: vec![],
        ignore_eos: false,
        tenant: Default::default(),
    };
    let mut rx = h.submit(req).expect("submit");
    let mut text = String::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            GenEvent::Token { text: t, .. } => text.push_str(&t),
            GenEvent::Done { finish_reason, .. } => return (text, finish_reason),
            GenEvent::Error(e) => panic!("generation failed: {e}"),
            GenEvent::TimedOut { after } => panic!("timed out after {after:?}"),
        }
    }
    panic!("the stream ended without Done");
}

/// Whether `v` satisfies `schema` (the supported subset; standard JSON Schema meaning).
fn validate(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let fail = |what: String| Err(format!("{at}: {what} (value {v}, schema {schema})"));
    let s = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Object(s) => s,
        _ => return fail("unexpected schema".into()),
    };
    if let Some(c) = s.get("const") {
        if c != v {
            return fail("not the const".into());
        }
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(v) {
            return fail("not in the enum".into());
        }
    }
    if let Some(Value::Array(alts)) = s.get("anyOf") {
        if !alts.iter().any(|a| validate(a, v, at).is_ok()) {
            return fail("no anyOf alternative matches".into());
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let is = |t: &str| match (t, v) {
        ("null", Value::Null) | ("boolean", Value::Bool(_)) | ("string", Value::String(_)) => true,
        ("number", Value::Number(_)) | ("object", Value::Object(_)) => true,
        ("array", Value::Array(_)) => true,
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        return fail(format!("not of type {types:?}"));
    }
    if let Value::Object(o) = v {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req {
                if !o.contains_key(r.as_str().unwrap()) {
                    return fail(format!("required {r} missing"));
                }
            }
        }
        for (k, val) in o {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => validate(sub, val, &format!("{at}/{k}"))?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => return fail(format!("extra key {k:?}")),
                    Some(sub @ Value::Object(_)) => validate(sub, val, &format!("{at}/{k}"))?,
                    _ => {}
                },
            }
        }
    }
    if let Value::Array(a) = v {
        let n = a.len() as u64;
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            return fail("too few items".into());
        }
        if s.get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            return fail("too many items".into());
        }
        if let Some(items) = s.get("items") {
            for (i, item) in a.iter().enumerate() {
                validate(items, item, &format!("{at}/{i}"))?;
            }
        }
    }
    Ok(())
}

fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!({"type": "string"})),
        Just(json!({"type": "integer"})),
        Just(json!({"type": "number"})),
        Just(json!({"type": "boolean"})),
        Just(json!({"type": "null"})),
        Just(json!({"type": ["string", "null"]})),
        Just(json!({"enum": ["red", "green", "blue"]})),
        Just(json!({"enum": [1, 2, 10, "ten", null]})),
        Just(json!({"const": "fixed"})),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            (
                prop::collection::vec(inner.clone(), 1..4),
                any::<u8>(),
                any::<bool>()
            )
                .prop_map(|(subs, req, closed)| {
                    let names = ["name", "age", "tags", "city"];
                    let mut props = serde_json::Map::new();
                    let mut required = Vec::new();
                    for (i, s) in subs.into_iter().enumerate() {
                        props.insert(names[i].to_owned(), s);
                        if req & (1 << i) != 0 {
                            required.push(names[i]);
                        }
                    }
                    let mut o = json!({"type": "object", "properties": props,
                                       "required": required});
                    if closed {
                        o["additionalProperties"] = json!(false);
                    }
                    o
                }),
            (inner.clone(), 0u64..3, 0u64..3).prop_map(|(items, min, extra)| json!({
                "type": "array", "items": items, "minItems": min, "maxItems": min + extra})),
            (inner.clone(), 0u64..2)
                .prop_map(|(items, min)| json!({"type": "array", "items": items, "minItems": min})),
            prop::collection::vec(inner, 2..3).prop_map(|alts| json!({"anyOf": alts})),
        ]
    })
}

/// Every finished output parses and validates, greedy and sampled; the budget (a few dozen
/// tokens over the schema's shortest value) is never exceeded: values are forced closed.
#[test]
fn random_schemas_give_valid_json() {
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        max_shrink_iters: 8,
        ..Config::default()
    });
    runner
        .run(&(schema(), prop::option::of(any::<u64>())), |(s, seed)| {
            let g = Grammar::from_schema(&s).unwrap();
            let budget = g.min_bytes(g.root()) + 24;
            let (text, finish) = generate(&s, seed, budget);
            prop_assert_eq!(
                finish,
                FinishReason::Stop,
                "the value was not closed within {} tokens: {:?}",
                budget,
                text
            );
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{e}: {text:?} for {s}")))?;
            validate(&s, &v, "").map_err(TestCaseError::fail)?;
            Ok(())
        })
        .unwrap();
}

/// A budget far below what the model would write on its own still ends in a whole value.
#[test]
fn a_tight_budget_forces_the_value_closed() {
    let s = json!({"type": "object", "properties": {
        "summary": {"type": "string"},
        "items": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
        "required": ["summary", "items"], "additionalProperties": false});
    let g = Grammar::from_schema(&s).unwrap();
    // {"items":["",""],"summary":""}: 30 bytes; two more tokens for slack and the end.
    assert_eq!(g.min_bytes(g.root()), 30);
    for seed in [None, Some(5)] {
        let (text, finish) = generate(&s, seed, 32);
        assert_eq!(finish, FinishReason::Stop, "{text:?}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        validate(&s, &v, "").unwrap();
    }
}

#[test]
fn response_format_over_http() {
    let server = Server::start(&["--parallel", "2"]);
    let schema = json!({"type": "object", "properties": {
        "city": {"type": "string"}, "country": {"type": "string"},
        "population": {"type": "integer"}},
        "required": ["city", "country", "population"], "additionalProperties": false});
    let body = json!({"messages": [{"role": "user",
            "content": "Give the capital of France as JSON."}],
        "temperature": 0, "max_tokens": 60,
        "response_format": {"type": "json_schema",
            "json_schema": {"name": "capital", "schema": schema, "strict": true}}});
    let (status, v) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    validate(&schema, &parsed, "").unwrap();

    // Streaming gives the same text in pieces.
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let frames = server.stream_all("/v1/chat/completions", &stream_body);
    let streamed: String = frames
        .iter()
        .filter(|f| f.as_str() != "[DONE]")
        .filter_map(|f| {
            let c: Value = serde_json::from_str(f).unwrap();
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed, content);

    // json_object: any object.
    let (status, v) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Describe a cat in JSON."}],
                "max_tokens": 40, "seed": 3, "response_format": {"type": "json_object"}}),
    );
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(parsed.is_object(), "{parsed}");

    // llama.cpp's json_schema on /v1/completions.
    let (status, v) = server.post(
        "/v1/completions",
        &json!({"prompt": "A list of three colours as JSON: ", "max_tokens": 40,
                "temperature": 0, "json_schema": {"type": "array",
                "items": {"enum": ["red", "green", "blue"]}, "minItems": 3, "maxItems": 3}}),
    );
    assert_eq!(status, 200, "{v}");
    let parsed: Value = serde_json::from_str(v["choices"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(parsed.as_array().map(Vec::len), Some(3), "{parsed}");

    // What cannot be enforced is a 400 naming the keyword.
    let (status, v) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "s",
                "schema": {"type": "string", "pattern": "^a"}}}}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "response_format.json_schema.schema");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`pattern`"),
        "{v}"
    );
    let (status, v) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "yaml"}}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "response_format.type");
}
