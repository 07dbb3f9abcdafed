//! `POST /tokenize` and `POST /detokenize`, in llama.cpp server's shapes and vLLM's:
//!
//! - `/tokenize {"content": str, "add_special"?: bool, "with_pieces"?: bool}` →
//!   `{"tokens": [id, ...]}`, or `{"tokens": [{"id", "piece"}, ...]}` with pieces (a piece that
//!   is not UTF-8 on its own is given as a byte array, as llama.cpp does).
//! - `/tokenize {"prompt": str, "model"?, "add_special_tokens"?: bool}` →
//!   `{"tokens": [...], "count": n, "max_model_len": context}`.
//! - `/detokenize {"tokens": [id, ...]}` → `{"content": str, "prompt": str}` (both names, so
//!   either client finds its field). Special tokens are written out.
//!
//! Special tokens written in the text are parsed (llama.cpp's `parse_special`). `add_special`
//! (default false, as in llama.cpp) / `add_special_tokens` (default true, as in vLLM) add the
//! BOS token when the model's tokenizer adds one.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::validation::parse_json;
use super::AppState;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Default, Deserialize)]
pub struct TokenizeRequest {
    /// llama.cpp's name for the text.
    pub content: Option<String>,
    /// vLLM's name for the text.
    pub prompt: Option<String>,
    pub model: Option<String>,
    pub add_special: Option<bool>,
    pub add_special_tokens: Option<bool>,
    pub with_pieces: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Option<Vec<i64>>,
    pub model: Option<String>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TokenizeResponse {
    /// llama.cpp: `{"tokens": [...]}`.
    Llama { tokens: Vec<TokenOut> },
    /// vLLM: `{"tokens", "count", "max_model_len"}`.
    Vllm {
        tokens: Vec<u32>,
        count: usize,
        max_model_len: usize,
    },
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TokenOut {
    Id(u32),
    WithPiece { id: u32, piece: Piece },
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Piece {
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, PartialEq, Serialize)]
pub struct DetokenizeResponse {
    pub content: String,
    pub prompt: String,
}

pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let engine = state.engine()?;
    let req: TokenizeRequest = parse_json(&headers, &read_body(body)?)?;
    check_model(req.model.as_deref(), &state.served_name)?;
    let context_length = engine.context_length();
    let tokenizer = engine.tokenizer().clone();
    tokio::task::spawn_blocking(move || run_tokenize(&tokenizer, req, context_length))
        .await
        .map_err(|e| ApiError::Internal {
            message: format!("tokenizing failed: {e}"),
        })?
        .map(Json)
}

pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let engine = state.engine()?;
    let req: DetokenizeRequest = parse_json(&headers, &read_body(body)?)?;
    check_model(req.model.as_deref(), &state.served_name)?;
    run_detokenize(engine.tokenizer(), req).map(Json)
}

fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            message: format!("{}; send a smaller request body", e.body_text()),
        },
        _ => ApiError::invalid_body(format!("cannot read the request body: {}", e.body_text())),
    })
}

fn check_model(requested: Option<&str>, served: &str) -> Result<(), ApiError> {
    match requested {
        Some(m) if m != served => Err(ApiError::ModelNotFound {
            requested: m.to_owned(),
            served: served.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The `/tokenize` answer for `req` (the shape follows which text field it used).
pub fn run_tokenize(
    tok: &Tokenizer,
    req: TokenizeRequest,
    context_length: usize,
) -> Result<TokenizeResponse, ApiError> {
    let (text, vllm) = match (req.content, req.prompt) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "content",
                "send the text as either content (llama.cpp) or prompt (vLLM), not both",
            ))
        }
        (Some(t), None) => (t, false),
        (None, Some(t)) => (t, true),
        (None, None) => {
            return Err(ApiError::invalid(
                "content",
                "content is required: the text to tokenize (or prompt, as vLLM names it)",
            ))
        }
    };
    let add_special = if vllm {
        req.add_special_tokens.or(req.add_special).unwrap_or(true)
    } else {
        req.add_special.or(req.add_special_tokens).unwrap_or(false)
    };
    let ids = tok.encode(&text, add_special && tok.add_bos())?;
    if vllm {
        return Ok(TokenizeResponse::Vllm {
            count: ids.len(),
            tokens: ids,
            max_model_len: context_length,
        });
    }
    let tokens = if req.with_pieces.unwrap_or(false) {
        ids.into_iter()
            .map(|id| {
                let bytes = tok.piece_bytes(id, false)?.to_vec();
                let piece = match String::from_utf8(bytes) {
                    Ok(s) => Piece::Text(s),
                    Err(e) => Piece::Bytes(e.into_bytes()),
                };
                Ok(TokenOut::WithPiece { id, piece })
            })
            .collect::<Result<_, crate::Error>>()?
    } else {
        ids.into_iter().map(TokenOut::Id).collect()
    };
    Ok(TokenizeResponse::Llama { tokens })
}

/// The `/detokenize` answer for `req`.
pub fn run_detokenize(
    tok: &Tokenizer,
    req: DetokenizeRequest,
) -> Result<DetokenizeResponse, ApiError> {
    let Some(tokens) = req.tokens else {
        return Err(ApiError::invalid(
            "tokens",
            "tokens is required: an array of token ids",
        ));
    };
    let vocab = tok.vocab_size();
    let mut ids = Vec::with_capacity(tokens.len());
    for (i, &t) in tokens.iter().enumerate() {
        match u32::try_from(t) {
            Ok(id) if (id as usize) < vocab => ids.push(id),
            _ => {
                return Err(ApiError::invalid(
                    format!("tokens[{i}]"),
                    format!(
                        "tokens[{i}] is {t}, which is not a token id of this model (0 to {})",
                        vocab.saturating_sub(1)
                    ),
                ))
            }
        }
    }
    let content = tok.decode(&ids, false)?;
    Ok(DetokenizeResponse {
        prompt: content.clone(),
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_shapes() {
        let llama = TokenizeResponse::Llama {
            tokens: vec![
                TokenOut::Id(3),
                TokenOut::WithPiece {
                    id: 4,
                    piece: Piece::Text("hi".into()),
                },
                TokenOut::WithPiece {
                    id: 5,
                    piece: Piece::Bytes(vec![0xE2]),
                },
            ],
        };
        assert_eq!(
            serde_json::to_value(&llama).unwrap(),
            serde_json::json!({"tokens": [3, {"id": 4, "piece": "hi"}, {"id": 5, "piece": [226]}]})
        );
        let vllm = TokenizeResponse::Vllm {
            tokens: vec![1, 2],
            count: 2,
            max_model_len: 8,
        };
        assert_eq!(
            serde_json::to_value(&vllm).unwrap(),
            serde_json::json!({"tokens": [1, 2], "count": 2, "max_model_len": 8})
        );
    }

    #[test]
    fn another_model_is_404() {
        assert!(check_model(None, "smol").is_ok());
        assert!(check_model(Some("smol"), "smol").is_ok());
        assert_eq!(check_model(Some("gpt"), "smol").unwrap_err().status(), 404);
    }
}
