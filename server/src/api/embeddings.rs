//! `POST /v1/embeddings`, OpenAI's shape, served by the embedding model given with
//! `--embedding-model` (see [`crate::embeddings`]).
//!
//! Request: `input` (a string, an array of strings, an array of token ids, or an array of
//! token-id arrays), `model` (the embedding model's served name; optional), `encoding_format`
//! (`"float"`, the default, or `"base64"`: the little-endian f32 bytes), `dimensions` (only the
//! model's own size: the model is not trained to be shortened), `user` (accepted, unused).
//! Text is tokenized with [CLS]/[SEP] and truncated to the model's `max_seq_length`; token ids
//! are the model input as given (include [CLS] and [SEP] to match text input) and are refused,
//! not truncated, when longer. Response: `{"object": "list", "data": [{"object": "embedding",
//! "index", "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::ApiError;
use super::ratelimit::Permit;
use super::validation::parse_json;
use super::AppState;
use crate::embeddings::EmbeddingModel;

/// Inputs one request may carry at most (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// Request body size accepted by this route: room for [`MAX_INPUTS`] inputs of full length,
/// as text or token ids (the other routes keep axum's 2 MB default).
pub const MAX_BODY_BYTES: usize = 32 << 20;

#[derive(Debug, Default, Deserialize)]
pub struct EmbeddingRequest {
    pub input: Option<Value>,
    pub model: Option<String>,
    pub encoding_format: Option<String>,
    pub dimensions: Option<i64>,
    pub user: Option<String>,
}

/// One input: text to tokenize, or the model's token ids as given.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    Base64,
}

/// A request that passed [`validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEmbeddingRequest {
    pub inputs: Vec<EmbedInput>,
    pub format: EncodingFormat,
}

/// What [`validate`] checks inputs against.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The model's served name (for messages).
    pub model: String,
    pub dimensions: usize,
    pub vocab_size: usize,
    /// Token ids per input at most.
    pub max_tokens: usize,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct EmbeddingList {
    pub object: &'static str,
    pub data: Vec<EmbeddingItem>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct EmbeddingItem {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, PartialEq, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

/// Counters of `/v1/embeddings` for `/metrics`.
#[derive(Debug, Default)]
pub struct EmbeddingStats {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub inputs: AtomicU64,
    pub prompt_tokens: AtomicU64,
}

/// The embedding side of the server: its served name, the model once loaded, counters.
#[derive(Debug)]
pub struct EmbeddingService {
    pub name: String,
    model: OnceLock<Arc<EmbeddingModel>>,
    pub stats: EmbeddingStats,
}

impl EmbeddingService {
    pub fn new(name: impl Into<String>) -> EmbeddingService {
        EmbeddingService {
            name: name.into(),
            model: OnceLock::new(),
            stats: EmbeddingStats::default(),
        }
    }

    /// Makes embeddings servable.
    pub fn set_model(&self, model: Arc<EmbeddingModel>) {
        if self.model.set(model).is_err() {
            tracing::warn!("embedding model set twice; keeping the first");
        }
    }

    pub fn model(&self) -> Option<&Arc<EmbeddingModel>> {
        self.model.get()
    }
}

fn bad_input(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid(param, message)
}

/// A token id array at `param`: integers in `0..vocab_size`, 1 to `max_tokens` of them.
fn token_ids(param: &str, items: &[Value], limits: &Limits) -> Result<Vec<u32>, ApiError> {
    if items.is_empty() {
        return Err(bad_input(
            param,
            format!("{param} is an empty token array; send at least one token id"),
        ));
    }
    if items.len() > limits.max_tokens {
        return Err(bad_input(
            param,
            format!(
                "{param} has {} token ids; {} takes at most {} per input (text input is \
                 truncated to that length, token ids are not)",
                items.len(),
                limits.model,
                limits.max_tokens
            ),
        ));
    }
    let top = limits.vocab_size.saturating_sub(1);
    items
        .iter()
        .enumerate()
        .map(|(j, v)| {
            v.as_u64()
                .filter(|&id| id <= top as u64)
                .map(|id| id as u32)
                .ok_or_else(|| {
                    bad_input(
                        format!("{param}[{j}]"),
                        format!(
                            "{param}[{j}] is {v}, which is not a token id of {} (integers 0 \
                             to {top})",
                            limits.model
                        ),
                    )
                })
        })
        .collect()
}

fn text(param: &str, s: &str) -> Result<EmbedInput, ApiError> {
    if s.is_empty() {
        return Err(bad_input(
            param,
            format!("{param} is an empty string; every input needs some text"),
        ));
    }
    Ok(EmbedInput::Text(s.to_owned()))
}

/// `input` in any of its four shapes, as a list of inputs.
fn parse_input(input: Option<&Value>, limits: &Limits) -> Result<Vec<EmbedInput>, ApiError> {
    const SHAPES: &str = "a string, an array of strings, an array of token ids or an array of \
                          token-id arrays";
    let Some(input) = input.filter(|v| !v.is_null()) else {
        return Err(bad_input(
            "input",
            format!("input is required: the text to embed, as {SHAPES}"),
        ));
    };
    let items = match input {
        Value::String(s) => return Ok(vec![text("input", s)?]),
        Value::Array(items) => items,
        other => {
            return Err(bad_input(
                "input",
                format!("input is {other}; send {SHAPES}"),
            ))
        }
    };
    if items.is_empty() {
        return Err(bad_input(
            "input",
            "input is an empty array; send at least one input",
        ));
    }
    if items.iter().all(Value::is_number) {
        return Ok(vec![EmbedInput::Tokens(token_ids("input", items, limits)?)]);
    }
    if items.len() > MAX_INPUTS {
        return Err(bad_input(
            "input",
            format!(
                "input has {} items; send at most {MAX_INPUTS} per request",
                items.len()
            ),
        ));
    }
    let strings = items[0].is_string();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let param = format!("input[{i}]");
            match item {
                Value::String(s) if strings => text(&param, s),
                Value::Array(ids) if !strings => {
                    Ok(EmbedInput::Tokens(token_ids(&param, ids, limits)?))
                }
                other => Err(bad_input(
                    &param,
                    format!(
                        "{param} is {other}, but input[0] is {}; an array input holds only \
                         strings or only token-id arrays",
                        if strings {
                            "a string"
                        } else {
                            "a token-id array"
                        }
                    ),
                )),
            }
        })
        .collect()
}

/// Check a request against the model's limits.
pub fn validate(
    req: &EmbeddingRequest,
    limits: &Limits,
) -> Result<ValidEmbeddingRequest, ApiError> {
    let format = match req.encoding_format.as_deref() {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(bad_input(
                "encoding_format",
                format!("encoding_format {other:?} is not supported; use \"float\" or \"base64\""),
            ))
        }
    };
    if let Some(d) = req.dimensions {
        if d != limits.dimensions as i64 {
            return Err(bad_input(
                "dimensions",
                format!(
                    "dimensions {d} is not supported: {} gives {}-value embeddings and was not \
                     trained to be shortened (Matryoshka); leave dimensions out or set it to {}",
                    limits.model, limits.dimensions, limits.dimensions
                ),
            ));
        }
    }
    Ok(ValidEmbeddingRequest {
        inputs: parse_input(req.input.as_ref(), limits)?,
        format,
    })
}

/// Standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An embedding as the client asked: floats, or base64 of its little-endian f32 bytes.
pub fn encode(v: Vec<f32>, format: EncodingFormat) -> EmbeddingValue {
    match format {
        EncodingFormat::Float => EmbeddingValue::Float(v),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            EmbeddingValue::Base64(base64(&bytes))
        }
    }
}

/// Ok when `requested` is absent or names the embedding model `served`; the chat model's name
/// is a 400 that says so, any other name a 404.
fn check_model(state: &AppState, requested: Option<&str>, served: &str) -> Result<(), ApiError> {
    match requested {
        None => Ok(()),
        Some(m) if m == served => Ok(()),
        Some(m) if m == state.served_name => Err(bad_input(
            "model",
            format!("{m:?} is this server's chat model; /v1/embeddings is served by {served:?}"),
        )),
        Some(m) => Err(ApiError::ModelNotFound {
            requested: m.to_owned(),
            served: served.to_owned(),
        }),
    }
}

pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    Extension(permit): Extension<Arc<Permit>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingList>, ApiError> {
    let req = body
        .map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
                message: format!("{}; send fewer inputs per request", e.body_text()),
            },
            _ => ApiError::invalid_body(format!("cannot read the request body: {}", e.body_text())),
        })
        .and_then(|body| parse_json(&headers, &body));
    serve(&state, &permit, req).await.map(Json)
}

/// Answers a parsed embedding request (HTTP and gRPC alike), counting it in the embedding
/// model's metrics (a request that could not be parsed counts as failed).
pub(super) async fn serve(
    state: &AppState,
    permit: &Permit,
    req: Result<EmbeddingRequest, ApiError>,
) -> Result<EmbeddingList, ApiError> {
    let (service, model) = state.embedding_model()?;
    let stats = &service.stats;
    let result = match req {
        Ok(req) => run(state, (&service.name, permit), model, req).await,
        Err(e) => Err(e),
    };
    match &result {
        Ok(list) => {
            stats.succeeded.fetch_add(1, Ordering::Relaxed);
            stats
                .inputs
                .fetch_add(list.data.len() as u64, Ordering::Relaxed);
            stats
                .prompt_tokens
                .fetch_add(list.usage.prompt_tokens as u64, Ordering::Relaxed);
        }
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    result
}

async fn run(
    state: &AppState,
    (name, permit): (&str, &Permit),
    model: Arc<EmbeddingModel>,
    req: EmbeddingRequest,
) -> Result<EmbeddingList, ApiError> {
    check_model(state, req.model.as_deref(), name)?;
    let limits = Limits {
        model: name.to_owned(),
        dimensions: model.dimensions(),
        vocab_size: model.vocab_size(),
        max_tokens: model.max_seq_length(),
    };
    let valid = validate(&req, &limits)?;
    // Tokenizing and the forward pass are CPU work: keep them off the async workers. The
    // inputs' tokens are charged to the tenant in between.
    let failed = |e: tokio::task::JoinError| ApiError::Internal {
        message: format!("the embedding task failed: {e}"),
    };
    let tokenizing = model.clone();
    let ids = tokio::task::spawn_blocking(move || {
        valid
            .inputs
            .into_iter()
            .map(|input| match input {
                EmbedInput::Text(t) => tokenizing.tokenize(&t),
                EmbedInput::Tokens(ids) => Ok(ids),
            })
            .collect::<crate::Result<Vec<_>>>()
    })
    .await
    .map_err(failed)??;
    let prompt_tokens = ids.iter().map(Vec::len).sum();
    permit.take_prompt(prompt_tokens, std::time::Instant::now())?;
    let vectors = tokio::task::spawn_blocking(move || model.embed(&ids))
        .await
        .map_err(failed)??;
    Ok(EmbeddingList {
        object: "list",
        data: vectors
            .into_iter()
            .enumerate()
            .map(|(index, v)| EmbeddingItem {
                object: "embedding",
                index,
                embedding: encode(v, valid.format),
            })
            .collect(),
        model: name.to_owned(),
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            model: "mini".into(),
            dimensions: 384,
            vocab_size: 1000,
            max_tokens: 8,
        }
    }

    fn req(v: Value) -> EmbeddingRequest {
        serde_json::from_value(v).unwrap()
    }

    fn check(v: Value) -> Result<ValidEmbeddingRequest, ApiError> {
        validate(&req(v), &limits())
    }

    fn rejected(v: Value) -> (Option<String>, String) {
        match check(v) {
            Err(ApiError::InvalidRequest { param, message }) => (param, message),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn the_four_input_shapes() {
        let t = |s: &str| EmbedInput::Text(s.into());
        assert_eq!(check(json!({"input": "hi"})).unwrap().inputs, vec![t("hi")]);
        assert_eq!(
            check(json!({"input": ["a", " "]})).unwrap().inputs,
            vec![t("a"), t(" ")]
        );
        assert_eq!(
            check(json!({"input": [101, 7, 102]})).unwrap().inputs,
            vec![EmbedInput::Tokens(vec![101, 7, 102])]
        );
        let v = check(json!({"input": [[1, 2], [3]], "model": "mini", "user": "u",
                              "encoding_format": "base64", "dimensions": 384}))
        .unwrap();
        assert_eq!(
            v.inputs,
            vec![EmbedInput::Tokens(vec![1, 2]), EmbedInput::Tokens(vec![3])]
        );
        assert_eq!(v.format, EncodingFormat::Base64);
        assert_eq!(
            check(json!({"input": "x", "encoding_format": "float"}))
                .unwrap()
                .format,
            EncodingFormat::Float
        );
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let (p, m) = rejected(json!({}));
        assert_eq!(p.as_deref(), Some("input"));
        assert!(m.contains("required"), "{m}");
        let (p, m) = rejected(json!({"input": ""}));
        assert_eq!(p.as_deref(), Some("input"));
        assert!(m.contains("empty string"), "{m}");
        let (_, m) = rejected(json!({"input": []}));
        assert!(m.contains("empty array"), "{m}");
        let (p, m) = rejected(json!({"input": ["ok", ""]}));
        assert_eq!(p.as_deref(), Some("input[1]"));
        assert!(m.contains("empty string"), "{m}");
        let (p, m) = rejected(json!({"input": ["ok", [1]]}));
        assert_eq!(p.as_deref(), Some("input[1]"));
        assert!(m.contains("only strings or only token-id arrays"), "{m}");
        let (p, _) = rejected(json!({"input": [[1], []]}));
        assert_eq!(p.as_deref(), Some("input[1]"));
        let (p, m) = rejected(json!({"input": [1, 1000]}));
        assert_eq!(p.as_deref(), Some("input[1]"));
        assert!(m.contains("0 to 999"), "{m}");
        let (p, _) = rejected(json!({"input": [[5, -1]]}));
        assert_eq!(p.as_deref(), Some("input[0][1]"));
        let (p, _) = rejected(json!({"input": [1.5]}));
        assert_eq!(p.as_deref(), Some("input[0]"));
        let (_, m) = rejected(json!({"input": [1, 2, 3, 4, 5, 6, 7, 8, 9]}));
        assert!(m.contains("9 token ids") && m.contains("at most 8"), "{m}");
        let (_, m) = rejected(json!({"input": 5}));
        assert!(m.contains("input is 5"), "{m}");
        let many: Vec<&str> = vec!["a"; MAX_INPUTS + 1];
        let (_, m) = rejected(json!({ "input": many }));
        assert!(m.contains("at most 2048"), "{m}");
        assert!(check(json!({ "input": vec!["a"; MAX_INPUTS] })).is_ok());
    }

    #[test]
    fn options_are_checked() {
        let (p, m) = rejected(json!({"input": "x", "dimensions": 128}));
        assert_eq!(p.as_deref(), Some("dimensions"));
        assert!(m.contains("384") && m.contains("Matryoshka"), "{m}");
        let (p, m) = rejected(json!({"input": "x", "encoding_format": "int8"}));
        assert_eq!(p.as_deref(), Some("encoding_format"));
        assert!(m.contains("\"int8\""), "{m}");
    }

    #[test]
    fn base64_of_little_endian_floats() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"\xff\xfe\x00\x10"), "//4AEA==");
        // 1.0f32 is 00 00 80 3f; -2.0 is 00 00 00 c0.
        assert_eq!(
            encode(vec![1.0, -2.0], EncodingFormat::Base64),
            EmbeddingValue::Base64("AACAPwAAAMA=".into())
        );
    }

    #[test]
    fn response_shape() {
        let list = EmbeddingList {
            object: "list",
            data: vec![EmbeddingItem {
                object: "embedding",
                index: 0,
                embedding: EmbeddingValue::Float(vec![0.5, -0.25]),
            }],
            model: "mini".into(),
            usage: EmbeddingUsage {
                prompt_tokens: 3,
                total_tokens: 3,
            },
        };
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"object": "list", "data": [{"object": "embedding", "index": 0,
                   "embedding": [0.5, -0.25]}], "model": "mini",
                   "usage": {"prompt_tokens": 3, "total_tokens": 3}})
        );
    }

    #[test]
    fn model_names() {
        let state = AppState::new("chat");
        assert!(check_model(&state, None, "mini").is_ok());
        assert!(check_model(&state, Some("mini"), "mini").is_ok());
        assert_eq!(
            check_model(&state, Some("gpt"), "mini")
                .unwrap_err()
                .status(),
            404
        );
        let e = check_model(&state, Some("chat"), "mini").unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.body().error.message.contains("chat model"));
    }
}
