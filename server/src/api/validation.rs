//! Raw requests to typed [`ValidRequest`]s, with errors written for the person sending them.
//!
//! Parsing (`parse_body`) names the offending field for wrong JSON types; `validate` checks
//! ranges and the fields we do not support. What needs the model (tokenizing, the context
//! length, the vocabulary) is checked by the engine when the request is submitted.

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use serde_json::Value;

use super::errors::ApiError;
use super::tools::{self, Tools};
use super::types::{RawContent, RawMessage, RawPrompt, RawRequest, RawStop};
use crate::chat_template::ChatMessage;
use crate::sampler::SamplingParams;
use crate::structured::Grammar;

/// Which endpoint a request came to; it decides whether `messages` or `prompt` is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Chat messages, to be rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text, tokenized as is.
    Text(String),
    /// Token ids, used as is.
    Tokens(Vec<u32>),
}

/// A request that passed every check that does not need the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    pub endpoint: Endpoint,
    /// The model name to answer with (the one requested, which is the served one).
    pub model: String,
    pub input: PromptInput,
    /// `None`: until the context is full (or a stop condition).
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
    /// Choices to generate (`n`), each its own sequence.
    pub n: usize,
    /// Function tools (chat only), when the request has any.
    pub tools: Option<Tools>,
}

/// Most choices one request may ask for (`n`); the server's `--parallel` may lower it.
pub const MAX_N: i64 = 16;

/// Checks the Content-Type and parses the body, naming the field whose JSON type is wrong.
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<RawRequest, ApiError> {
    parse_json(headers, body)
}

/// [`parse_body`] for any request type (`/tokenize`, `/detokenize`).
pub fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_json = content_type.as_deref().is_some_and(|ct| {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    });
    if !is_json {
        let got = match &content_type {
            Some(ct) => format!("Content-Type {ct:?}"),
            None => "no Content-Type header".to_owned(),
        };
        return Err(ApiError::invalid_body(format!(
            "the request body must be JSON with Content-Type: application/json, but it has \
             {got}; set that header and send a JSON object"
        )));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_body(
            "the request body is empty; send a JSON object such as \
             {\"model\": ..., \"messages\": [...]}",
        ));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_body(
            match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(v) => format!(
                    "the request body must be a JSON object, but it is {}",
                    json_kind(&v)
                ),
                Err(e) => format!("the request body is not valid JSON: {e}"),
            },
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let raw = parsed.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => ApiError::invalid(
                path.clone(),
                format!("field `{path}` has the wrong type or value: {inner}"),
            ),
            serde_json::error::Category::Data => {
                ApiError::invalid_body(format!("the request body must be a JSON object: {inner}"))
            }
            _ => ApiError::invalid_body(format!("the request body is not valid JSON: {inner}")),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::invalid_body(format!(
            "the request body has data after the JSON object: {e}"
        ))
    })?;
    Ok(raw)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Turns a parsed request into a [`ValidRequest`] for `endpoint` on a server serving
/// `served_name`.
pub fn validate(
    raw: RawRequest,
    endpoint: Endpoint,
    served_name: &str,
) -> Result<ValidRequest, ApiError> {
    let model = match raw.model {
        Some(m) if m != served_name => {
            return Err(ApiError::ModelNotFound {
                requested: m,
                served: served_name.to_owned(),
            })
        }
        _ => served_name.to_owned(),
    };

    let mut sampling = validate_sampling(&raw)?;
    sampling.logprobs = validate_logprobs(&raw, endpoint)?;
    sampling.grammar = validate_response_format(&raw)?.map(Arc::new);
    sampling.logit_bias = validate_logit_bias(raw.logit_bias.as_ref())?;
    let tools = match endpoint {
        Endpoint::Chat => tools::validate(raw.tools.as_ref(), raw.tool_choice.as_ref())?,
        Endpoint::Completions if raw.tools.is_some() => {
            return Err(ApiError::invalid(
                "tools",
                "tools are for /v1/chat/completions; /v1/completions continues a prompt",
            ))
        }
        Endpoint::Completions => None,
    };
    if let Some(grammar) = tools
        .as_ref()
        .map(Tools::forced_grammar)
        .transpose()?
        .flatten()
    {
        if sampling.grammar.is_some() {
            return Err(ApiError::invalid(
                "tool_choice",
                "a required tool call already fixes the reply's format; leave out \
                 response_format or set tool_choice to \"auto\"",
            ));
        }
        sampling.grammar = Some(Arc::new(grammar));
    }
    let input = match endpoint {
        Endpoint::Chat => {
            let messages = validate_messages(raw.messages)?;
            PromptInput::Chat(match &tools {
                Some(t) => t.prompt(messages),
                None => messages,
            })
        }
        Endpoint::Completions => validate_prompt(raw.prompt)?,
    };

    let n = match raw.n {
        None => 1,
        Some(n) if (1..=MAX_N).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("n is {n}; it must be between 1 and {MAX_N} (choices per request)"),
            ))
        }
    };
    if raw.echo == Some(true) {
        return Err(ApiError::invalid(
            "echo",
            "echo is not supported; leave it out or set it to false",
        ));
    }

    // max_completion_tokens is the current name; max_tokens the older one.
    let (max_param, max_value) = match (raw.max_completion_tokens, raw.max_tokens) {
        (Some(v), _) => ("max_completion_tokens", Some(v)),
        (None, v) => ("max_tokens", v),
    };
    let max_tokens = match max_value {
        Some(v) if v < 1 => {
            return Err(ApiError::invalid(
                max_param,
                format!("{max_param} is {v}; it must be at least 1"),
            ))
        }
        Some(v) => Some(usize::try_from(v).unwrap_or(usize::MAX)),
        None => None,
    };

    let stop = match raw.stop {
        None => Vec::new(),
        Some(RawStop::One(s)) => vec![s],
        Some(RawStop::Many(v)) => v,
    };
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "stop contains an empty string, which would stop before any text; remove it",
        ));
    }

    let stream = raw.stream.unwrap_or(false);
    Ok(ValidRequest {
        endpoint,
        model,
        input,
        max_tokens,
        sampling,
        stop,
        stream,
        include_usage: stream
            && raw
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        ignore_eos: raw.ignore_eos.unwrap_or(false),
        n,
        tools,
    })
}

/// `response_format` (both endpoints) and llama.cpp's `json_schema` (completions) to the
/// grammar the output must follow; `None` for free text.
fn validate_response_format(raw: &RawRequest) -> Result<Option<Grammar>, ApiError> {
    if let Some(schema) = &raw.json_schema {
        if raw.response_format.is_some() {
            return Err(ApiError::invalid(
                "json_schema",
                "send either response_format or json_schema, not both",
            ));
        }
        return compile_schema(schema, "json_schema").map(Some);
    }
    let Some(format) = &raw.response_format else {
        return Ok(None);
    };
    let kind = format.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => Ok(None),
        Some("json_object") => match format.get("schema") {
            // llama.cpp also takes a schema here.
            Some(schema) => compile_schema(schema, "response_format.schema").map(Some),
            None => Ok(Some(Grammar::any_object())),
        },
        Some("json_schema") => {
            let Some(spec) = format.get("json_schema").filter(|s| s.is_object()) else {
                return Err(ApiError::invalid(
                    "response_format.json_schema",
                    "response_format of type json_schema needs a json_schema object: \
                     {\"name\": ..., \"schema\": {...}, \"strict\": true}",
                ));
            };
            if let Some(name) = spec.get("name") {
                let ok = name.as_str().is_some_and(|n| {
                    !n.is_empty()
                        && n.len() <= 64
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                });
                if !ok {
                    return Err(ApiError::invalid(
                        "response_format.json_schema.name",
                        format!(
                            "response_format.json_schema.name is {name}; it must be 1 to 64                              letters, digits, underscores or dashes"
                        ),
                    ));
                }
            }
            match spec.get("schema") {
                Some(schema) => {
                    compile_schema(schema, "response_format.json_schema.schema").map(Some)
                }
                // No schema: any JSON value.
                None => compile_schema(&Value::Object(Default::default()), "").map(Some),
            }
        }
        _ => Err(ApiError::invalid(
            "response_format.type",
            format!(
                "response_format.type is {}; it must be \"text\", \"json_object\" or \
                 \"json_schema\"",
                format
                    .get("type")
                    .map_or("missing".to_owned(), Value::to_string)
            ),
        )),
    }
}

/// Compiles a schema sent in field `param`, answering what it cannot enforce with a 400.
pub fn compile_schema(schema: &Value, param: &str) -> Result<Grammar, ApiError> {
    Grammar::from_schema(schema).map_err(|e| ApiError::invalid(param, format!("{param}: {e}")))
}

/// Most alternatives per token: `top_logprobs` (chat) and `logprobs` (completions).
pub const MAX_TOP_LOGPROBS_CHAT: i64 = 20;
pub const MAX_LOGPROBS_COMPLETIONS: i64 = 5;

/// How many alternatives to report per token, `None` for no logprobs at all. Chat takes
/// `logprobs: bool` and `top_logprobs: 0..=20`; completions take `logprobs: 0..=5`.
fn validate_logprobs(raw: &RawRequest, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    use serde_json::Value;
    match endpoint {
        Endpoint::Chat => {
            let wanted = match &raw.logprobs {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(ApiError::invalid(
                        "logprobs",
                        format!(
                            "logprobs is {other} on /v1/chat/completions; it must be true or                              false (set top_logprobs for alternatives)"
                        ),
                    ))
                }
            };
            let top = match raw.top_logprobs {
                None => 0,
                Some(n) if (0..=MAX_TOP_LOGPROBS_CHAT).contains(&n) => n as usize,
                Some(n) => {
                    return Err(ApiError::invalid(
                        "top_logprobs",
                        format!(
                            "top_logprobs is {n}; it must be between 0 and                              {MAX_TOP_LOGPROBS_CHAT}"
                        ),
                    ))
                }
            };
            if top > 0 && !wanted {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "top_logprobs needs logprobs: true",
                ));
            }
            Ok(wanted.then_some(top))
        }
        Endpoint::Completions => match &raw.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(k) if (0..=MAX_LOGPROBS_COMPLETIONS).contains(&k) => Ok(Some(k as usize)),
                _ => Err(ApiError::invalid(
                    "logprobs",
                    format!(
                        "logprobs is {n}; on /v1/completions it must be an integer between 0                          and {MAX_LOGPROBS_COMPLETIONS} (the alternatives per token)"
                    ),
                )),
            },
            Some(other) => Err(ApiError::invalid(
                "logprobs",
                format!(
                    "logprobs is {other}; on /v1/completions it must be an integer between 0                      and {MAX_LOGPROBS_COMPLETIONS} (the alternatives per token)"
                ),
            )),
        },
    }
}

/// `logit_bias` keys to token ids, values checked to lie in -100..=100. The ids are checked
/// against the vocabulary with [`check_logit_bias_vocab`] once the model is known.
fn validate_logit_bias(
    bias: Option<&std::collections::BTreeMap<String, f64>>,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(bias) = bias else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(bias.len());
    for (key, &value) in bias {
        let Ok(id) = key.trim().parse::<u32>() else {
            return Err(ApiError::invalid(
                "logit_bias",
                format!(
                    "logit_bias has the key {key:?}, which is not a token id; keys are token ids                      written as strings, such as \"1234\""
                ),
            ));
        };
        if !(-100.0..=100.0).contains(&value) {
            return Err(ApiError::invalid(
                "logit_bias",
                format!("logit_bias[{key:?}] is {value}; biases must be between -100 and 100"),
            ));
        }
        out.push((id, value as f32));
    }
    out.sort_by_key(|&(id, _)| id);
    out.dedup_by_key(|&mut (id, _)| id);
    Ok(out)
}

/// Refuses `logit_bias` entries for token ids the model does not have.
pub fn check_logit_bias_vocab(bias: &[(u32, f32)], vocab_size: usize) -> Result<(), ApiError> {
    match bias.iter().find(|&&(id, _)| id as usize >= vocab_size) {
        Some(&(id, _)) => Err(ApiError::invalid(
            "logit_bias",
            format!(
                "logit_bias names token id {id}, but the model's vocabulary has {vocab_size}                  tokens (ids 0 to {})",
                vocab_size.saturating_sub(1)
            ),
        )),
        None => Ok(()),
    }
}

fn validate_sampling(raw: &RawRequest) -> Result<SamplingParams, ApiError> {
    let mut p = SamplingParams::default();
    if let Some(t) = raw.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature is {t}; it must be between 0 and 2 (0 is greedy)"),
            ));
        }
        p.temperature = t as f32;
    }
    if let Some(v) = raw.top_p {
        if !(v > 0.0 && v <= 1.0) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p is {v}; it must be greater than 0 and at most 1 (1 disables it)"),
            ));
        }
        p.top_p = v as f32;
    }
    if let Some(k) = raw.top_k {
        if k < -1 {
            return Err(ApiError::invalid(
                "top_k",
                format!("top_k is {k}; it must be a positive count, or 0 or -1 to disable it"),
            ));
        }
        p.top_k = k.max(0) as usize;
    }
    if let Some(v) = raw.min_p {
        if !(0.0..=1.0).contains(&v) {
            return Err(ApiError::invalid(
                "min_p",
                format!("min_p is {v}; it must be between 0 and 1 (0 disables it)"),
            ));
        }
        p.min_p = v as f32;
    }
    for (name, value, target) in [
        (
            "presence_penalty",
            raw.presence_penalty,
            &mut p.presence_penalty,
        ),
        (
            "frequency_penalty",
            raw.frequency_penalty,
            &mut p.frequency_penalty,
        ),
    ] {
        if let Some(v) = value {
            if !(-2.0..=2.0).contains(&v) {
                return Err(ApiError::invalid(
                    name,
                    format!("{name} is {v}; it must be between -2 and 2 (0 disables it)"),
                ));
            }
            *target = v as f32;
        }
    }
    if let Some(v) = raw.repetition_penalty {
        if !(v > 0.0 && v.is_finite()) {
            return Err(ApiError::invalid(
                "repetition_penalty",
                format!("repetition_penalty is {v}; it must be greater than 0 (1 disables it)"),
            ));
        }
        p.repetition_penalty = v as f32;
    }
    if let Some(n) = raw.repeat_last_n {
        p.penalty_last_n = match n {
            -1 => usize::MAX,
            n if n >= 0 => n as usize,
            _ => {
                return Err(ApiError::invalid(
                    "repeat_last_n",
                    format!(
                        "repeat_last_n is {n}; it must be 0 (off), a positive count, or -1 \
                         (the whole context)"
                    ),
                ))
            }
        };
    }
    // llama.cpp's convention: -1 asks for a random seed.
    p.seed = raw.seed.filter(|&s| s != -1).map(|s| s as u64);
    Ok(p)
}

fn validate_messages(messages: Option<Vec<RawMessage>>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(messages) = messages else {
        return Err(ApiError::invalid(
            "messages",
            "messages is required: an array of {\"role\", \"content\"} objects",
        ));
    };
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages is empty; send at least one message",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "user" | "assistant" | "tool" => m.role,
                // OpenAI's newer name for the system role; templates know "system".
                "developer" => "system".to_owned(),
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        format!(
                            "messages[{i}].role is {other:?}; it must be one of system, \
                             developer, user, assistant, tool"
                        ),
                    ))
                }
            };
            let mut content = match m.content {
                None => String::new(),
                Some(RawContent::Text(s)) => s,
                Some(RawContent::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        let param = format!("messages[{i}].content[{j}]");
                        if part.kind != "text" {
                            return Err(ApiError::invalid(
                                format!("{param}.type"),
                                format!(
                                    "{param} is a {:?} part; only \"text\" parts are supported",
                                    part.kind
                                ),
                            ));
                        }
                        let Some(t) = part.text else {
                            return Err(ApiError::invalid(
                                format!("{param}.text"),
                                format!("{param} is a text part without \"text\""),
                            ));
                        };
                        text.push_str(&t);
                    }
                    text
                }
            };
            if let Some(calls) = m.tool_calls.as_deref().filter(|c| !c.is_empty()) {
                if role != "assistant" {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].tool_calls"),
                        format!("messages[{i}] has tool_calls, which only assistant messages have"),
                    ));
                }
                let calls = tools::render_calls(calls, &format!("messages[{i}].tool_calls"))?;
                if !content.is_empty() {
                    content.push('\n');
                }
                content.push_str(&calls);
            }
            if role == "tool" {
                content = format!("<tool_response>\n{content}\n</tool_response>");
            }
            Ok(ChatMessage { role, content })
        })
        .collect()
}

fn validate_prompt(prompt: Option<RawPrompt>) -> Result<PromptInput, ApiError> {
    let several = |n: usize| {
        ApiError::invalid(
            "prompt",
            format!("prompt holds {n} prompts; send exactly one (a string or one array)"),
        )
    };
    match prompt {
        None => Err(ApiError::invalid(
            "prompt",
            "prompt is required: a string, or an array of token ids",
        )),
        Some(RawPrompt::Text(s)) => Ok(PromptInput::Text(s)),
        Some(RawPrompt::Tokens(ids)) => Ok(PromptInput::Tokens(ids)),
        Some(RawPrompt::Texts(mut v)) if v.len() == 1 => Ok(PromptInput::Text(v.remove(0))),
        Some(RawPrompt::Texts(v)) => Err(several(v.len())),
        Some(RawPrompt::TokenLists(mut v)) if v.len() == 1 => Ok(PromptInput::Tokens(v.remove(0))),
        Some(RawPrompt::TokenLists(v)) => Err(several(v.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    fn check(body: serde_json::Value, endpoint: Endpoint) -> Result<ValidRequest, ApiError> {
        let raw = parse_body(&json_headers(), body.to_string().as_bytes())?;
        validate(raw, endpoint, "smol")
    }

    fn chat(extra: serde_json::Value) -> Result<ValidRequest, ApiError> {
        let mut body = serde_json::json!({"model": "smol",
            "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        check(body, Endpoint::Chat)
    }

    fn param_of(r: Result<ValidRequest, ApiError>) -> Option<String> {
        match r {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_chat_request_is_valid() {
        let v = chat(
            serde_json::json!({"temperature": 0, "max_tokens": 5, "stop": "\n",
            "stream": true, "stream_options": {"include_usage": true}, "seed": 3,
            "some_unknown_field": [1, 2]}),
        )
        .unwrap();
        assert_eq!(v.model, "smol");
        assert_eq!(
            v.input,
            PromptInput::Chat(vec![ChatMessage {
                role: "user".into(),
                content: "hi".into()
            }])
        );
        assert_eq!(v.max_tokens, Some(5));
        assert!(v.sampling.is_greedy());
        assert_eq!(v.sampling.seed, Some(3));
        assert_eq!(v.stop, vec!["\n".to_string()]);
        assert!(v.stream && v.include_usage);
    }

    #[test]
    fn content_parts_are_joined() {
        let v = check(
            serde_json::json!({"messages": [{"role": "developer", "content":
                [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}),
            Endpoint::Chat,
        )
        .unwrap();
        assert_eq!(
            v.input,
            PromptInput::Chat(vec![ChatMessage {
                role: "system".into(),
                content: "ab".into()
            }])
        );
        let bad = check(
            serde_json::json!({"messages": [{"role": "user", "content":
                [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            Endpoint::Chat,
        );
        assert_eq!(
            param_of(bad).as_deref(),
            Some("messages[0].content[0].type")
        );
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        use serde_json::json;
        for (extra, param) in [
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"temperature": -0.1}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"top_p": 1.5}), "top_p"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (
                json!({"max_completion_tokens": -3}),
                "max_completion_tokens",
            ),
            (json!({"n": 0}), "n"),
            (json!({"n": 17}), "n"),
            (json!({"logprobs": 3}), "logprobs"),
            (
                json!({"logprobs": true, "top_logprobs": 21}),
                "top_logprobs",
            ),
            (
                json!({"logprobs": true, "top_logprobs": -1}),
                "top_logprobs",
            ),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"logit_bias": {"abc": 1}}), "logit_bias"),
            (json!({"logit_bias": {"12": 101}}), "logit_bias"),
            (json!({"logit_bias": {"12": -100.5}}), "logit_bias"),
            (json!({"logit_bias": {"12": "x"}}), "logit_bias.12"),
            (json!({"min_p": 2}), "min_p"),
            (json!({"top_k": -5}), "top_k"),
            (json!({"presence_penalty": 3}), "presence_penalty"),
            (json!({"repeat_penalty": 0}), "repetition_penalty"),
            (json!({"stop": ["ok", ""]}), "stop"),
            (json!({"messages": []}), "messages"),
            (
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                "messages[0].role",
            ),
            (json!({"temperature": "hot"}), "temperature"),
        ] {
            assert_eq!(
                param_of(chat(extra.clone())).as_deref(),
                Some(param),
                "{extra}"
            );
        }
    }

    #[test]
    fn unknown_model_is_404() {
        let e = chat(serde_json::json!({"model": "gpt-4"})).unwrap_err();
        assert_eq!(e.status(), 404);
        assert_eq!(e.body().error.code.as_deref(), Some("model_not_found"));
    }

    #[test]
    fn bad_json_and_content_type_are_400_without_param() {
        let e = parse_body(&json_headers(), b"{\"messages\": [").unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.body().error.message.contains("not valid JSON"));
        let e = parse_body(&HeaderMap::new(), b"{}").unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.body().error.message.contains("Content-Type"));
        let e = parse_body(&json_headers(), b"[1]").unwrap_err();
        assert!(e.body().error.message.contains("JSON object"));
        let e = parse_body(&json_headers(), b"{} {}").unwrap_err();
        assert!(e.body().error.message.contains("after the JSON object"));
    }

    #[test]
    fn prompts_take_one_string_or_token_list() {
        use serde_json::json;
        let ok = |p: serde_json::Value| check(json!({"prompt": p}), Endpoint::Completions);
        assert_eq!(
            ok(json!("hi")).unwrap().input,
            PromptInput::Text("hi".into())
        );
        assert_eq!(
            ok(json!(["hi"])).unwrap().input,
            PromptInput::Text("hi".into())
        );
        assert_eq!(
            ok(json!([1, 2, 3])).unwrap().input,
            PromptInput::Tokens(vec![1, 2, 3])
        );
        assert_eq!(
            ok(json!([[4, 5]])).unwrap().input,
            PromptInput::Tokens(vec![4, 5])
        );
        assert_eq!(param_of(ok(json!(["a", "b"]))).as_deref(), Some("prompt"));
        assert_eq!(
            param_of(check(json!({}), Endpoint::Completions)).as_deref(),
            Some("prompt")
        );
    }

    #[test]
    fn logprobs_per_endpoint() {
        use serde_json::json;
        assert_eq!(chat(json!({})).unwrap().sampling.logprobs, None);
        assert_eq!(
            chat(json!({"logprobs": false})).unwrap().sampling.logprobs,
            None
        );
        assert_eq!(
            chat(json!({"logprobs": true})).unwrap().sampling.logprobs,
            Some(0)
        );
        assert_eq!(
            chat(json!({"logprobs": true, "top_logprobs": 20}))
                .unwrap()
                .sampling
                .logprobs,
            Some(20)
        );
        let comp = |lp: serde_json::Value| {
            check(
                json!({"prompt": "x", "logprobs": lp}),
                Endpoint::Completions,
            )
        };
        assert_eq!(comp(json!(null)).unwrap().sampling.logprobs, None);
        assert_eq!(comp(json!(0)).unwrap().sampling.logprobs, Some(0));
        assert_eq!(comp(json!(5)).unwrap().sampling.logprobs, Some(5));
        for bad in [json!(6), json!(-1), json!(true), json!(1.5)] {
            assert_eq!(
                param_of(comp(bad.clone())).as_deref(),
                Some("logprobs"),
                "{bad}"
            );
        }
    }

    #[test]
    fn logit_bias_parses_and_checks_the_vocabulary() {
        let v = chat(serde_json::json!({"logit_bias": {"30": -100, "7": 100, " 9": 0.5}})).unwrap();
        assert_eq!(
            v.sampling.logit_bias,
            vec![(7, 100.0), (9, 0.5), (30, -100.0)]
        );
        assert!(check_logit_bias_vocab(&v.sampling.logit_bias, 31).is_ok());
        let e = check_logit_bias_vocab(&v.sampling.logit_bias, 30).unwrap_err();
        assert_eq!(e.body().error.param.as_deref(), Some("logit_bias"));
        assert!(e.body().error.message.contains("30"), "{e:?}");
    }

    #[test]
    fn max_completion_tokens_wins_and_seed_minus_one_is_random() {
        let v = chat(serde_json::json!({"max_tokens": 9, "max_completion_tokens": 4, "seed": -1}))
            .unwrap();
        assert_eq!(v.max_tokens, Some(4));
        assert_eq!(v.sampling.seed, None);
    }

    #[test]
    fn response_format_compiles_a_grammar_or_names_what_is_wrong() {
        use serde_json::json;
        assert!(chat(json!({})).unwrap().sampling.grammar.is_none());
        let text = chat(json!({"response_format": {"type": "text"}})).unwrap();
        assert!(text.sampling.grammar.is_none());
        let obj = chat(json!({"response_format": {"type": "json_object"}})).unwrap();
        assert_eq!(
            obj.sampling.grammar.as_deref(),
            Some(&Grammar::any_object())
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let v = chat(json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": schema, "strict": true}}}))
        .unwrap();
        assert_eq!(
            v.sampling.grammar.as_deref(),
            Some(&Grammar::from_schema(&schema).unwrap())
        );
        let c = check(
            json!({"prompt": "x", "json_schema": schema}),
            Endpoint::Completions,
        )
        .unwrap();
        assert!(c.sampling.grammar.is_some());
        for (extra, param) in [
            (
                json!({"response_format": {"type": "xml"}}),
                "response_format.type",
            ),
            (
                json!({"response_format": {"type": "json_schema"}}),
                "response_format.json_schema",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema":
                    {"name": "bad name", "schema": {}}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema":
                    {"name": "s", "schema": {"type": "string", "format": "date"}}}}),
                "response_format.json_schema.schema",
            ),
        ] {
            assert_eq!(
                param_of(chat(extra.clone())).as_deref(),
                Some(param),
                "{extra}"
            );
        }
        let e = chat(
            json!({"response_format": {"type": "json_schema", "json_schema":
            {"name": "s", "schema": {"type": "string", "format": "date"}}}}),
        )
        .unwrap_err();
        assert!(e.body().error.message.contains("`format`"), "{e:?}");
    }
}
