//! Function calling through the HTTP API with the real model: forced calls (`required`, a
//! named function) whose arguments follow the schema, streamed as `delta.tool_calls`; calls
//! parsed from a free (`auto`) reply; tool turns in the history; 400s for bad tool requests.

mod api_harness;
mod common;

use api_harness::Server;
use serde_json::{json, Value};

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {"type": "object",
                "properties": {"city": {"type": "string"},
                               "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time",
            "description": "The current time in a time zone",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                "required": ["zone"]}}}
    ])
}

fn ask(choice: Value) -> Value {
    json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
           "tools": tools(), "tool_choice": choice, "temperature": 0, "max_tokens": 60})
}

/// The arguments of a returned call, checked to be a JSON object.
fn arguments(call: &Value) -> Value {
    assert_eq!(call["type"], "function", "{call}");
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    let text = call["function"]["arguments"]
        .as_str()
        .expect("arguments is a string");
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v.is_object(), "{v}");
    v
}

#[test]
fn forced_calls_follow_the_schema_whole_and_streamed() {
    let server = Server::start(&[]);
    let (status, v) = server.post("/v1/chat/completions", &ask(json!("required")));
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert!(choice["message"]["content"].is_null(), "{v}");
    let call = &choice["message"]["tool_calls"][0];
    let name = call["function"]["name"].as_str().unwrap();
    let args = arguments(call);
    match name {
        "get_weather" => {
            assert!(args["city"].is_string(), "{args}");
            assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
            assert_eq!(args.as_object().unwrap().len(), 2, "{args}");
        }
        "get_time" => assert!(args["zone"].is_string(), "{args}"),
        other => panic!("a call to {other:?}, which is not a tool"),
    }

    // A named function is the one called, even where another fits the question better.
    let named = json!({"type": "function", "function": {"name": "get_time"}});
    let (status, v) = server.post("/v1/chat/completions", &ask(named.clone()));
    assert_eq!(status, 200, "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_time", "{v}");
    assert!(arguments(call)["zone"].is_string());
    let whole_args = call["function"]["arguments"].clone();

    // Streamed: the id and name first, then the arguments; no tags as content.
    let mut body = ask(named);
    body["stream"] = json!(true);
    let frames = server.stream_all("/v1/chat/completions", &body);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let mut deltas = Vec::new();
    let mut finish = None;
    for c in &chunks {
        let ch = &c["choices"][0];
        if let Some(content) = ch["delta"]["content"].as_str() {
            assert!(content.is_empty(), "content in a forced call: {content:?}");
        }
        if let Some(d) = ch["delta"]["tool_calls"].as_array() {
            deltas.extend(d.iter().cloned());
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(deltas[0]["index"], 0);
    assert!(deltas[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(deltas[0]["function"]["name"], "get_time");
    let streamed_args: String = deltas
        .iter()
        .map(|d| d["function"]["arguments"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        Value::String(streamed_args),
        whole_args,
        "greedy: the same call"
    );
}

#[test]
fn auto_replies_history_and_errors() {
    let server = Server::start(&[]);
    // A free reply that writes a call (the small model copies one it is shown): the call is
    // parsed out, whole and streamed, and the tags never reach the content.
    let copy = json!({"messages": [{"role": "user", "content": "Repeat exactly this text: \
            <tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}</tool_call>"}],
        "tools": tools(), "tool_choice": "auto", "temperature": 0, "max_tokens": 60});
    let (status, v) = server.post("/v1/chat/completions", &copy);
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(arguments(call), json!({"city": "Paris"}));
    let content = choice["message"]["content"].as_str().unwrap_or("");
    assert!(!content.contains("</tool_call>"), "{content:?}");
    let mut streamed = copy.clone();
    streamed["stream"] = json!(true);
    let frames = server.stream_all("/v1/chat/completions", &streamed);
    let mut text = String::new();
    let mut names = Vec::new();
    for f in &frames[..frames.len() - 1] {
        let c: Value = serde_json::from_str(f).unwrap();
        let delta = &c["choices"][0]["delta"];
        text.push_str(delta["content"].as_str().unwrap_or(""));
        for d in delta["tool_calls"].as_array().into_iter().flatten() {
            names.extend(d["function"]["name"].as_str().map(str::to_owned));
        }
    }
    assert_eq!(names, ["get_weather"]);
    assert!(!text.contains("</tool_call>"), "{text:?}");

    // A conversation that already called a tool and got its answer: the model writes text.
    let body = json!({"messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "get_weather",
                "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21}"},
        ], "tools": tools(), "temperature": 0, "max_tokens": 40});
    let (status, v) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    match choice["finish_reason"].as_str().unwrap() {
        "tool_calls" => {
            arguments(&choice["message"]["tool_calls"][0]);
        }
        _ => {
            let text = choice["message"]["content"].as_str().unwrap();
            assert!(!text.contains("<tool_call>"), "an unparsed call: {text}");
        }
    }

    // tool_choice "none": no tools in the prompt, a plain reply.
    let (status, v) = server.post("/v1/chat/completions", &ask(json!("none")));
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
    assert_ne!(v["choices"][0]["finish_reason"], "tool_calls");

    for (body, param) in [
        (
            ask(json!({"type": "function", "function": {"name": "nope"}})),
            "tool_choice",
        ),
        (ask(json!("maybe")), "tool_choice"),
        (
            json!({"messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f",
                   "parameters": {"type": "object",
                   "properties": {"d": {"type": "string", "format": "date"}}}}}],
                   "tool_choice": "required"}),
            "tools[0].function.parameters",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "code_interpreter"}]}),
            "tools[0].type",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": [
                   {"type": "function", "function": {"name": "f"}}]}]}),
            "messages[0].tool_calls",
        ),
    ] {
        let (status, v) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    let (status, v) = server.post("/v1/completions", &json!({"prompt": "x", "tools": tools()}));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "tools");
}
