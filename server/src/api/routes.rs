//! Request handlers: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, probes.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::errors::ApiError;
use super::types::{
    AssistantMessage, ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, Completion,
    CompletionChoice, Delta, Header, ModelCard, ModelList, Usage,
};
use super::validation::{parse_body, validate, Endpoint, PromptInput, ValidRequest};
use super::{sse, AppState};
use crate::engine::{GenEvent, GenRequest};

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    complete(state, headers, body, Endpoint::Chat).await
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    complete(state, headers, body, Endpoint::Completions).await
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: state.served_name.clone(),
            object: "model",
            created: state.created,
            owned_by: "ryzanstein",
        }],
    })
}

/// Liveness: the process is up and answering.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: 200 once the model is loaded, 503 while loading and once shutdown has begun.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.engine() {
        Ok(_) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not_ready", "reason": e.body().error.message})),
        )
            .into_response(),
    }
}

/// Prometheus metrics of the served model.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.loaded_engine().map(|e| e.stats());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            super::metrics::CONTENT_TYPE,
        )],
        super::metrics::render(&state.served_name, stats.as_ref()),
    )
        .into_response()
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn complete(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            message: format!("{}; send a smaller request body", e.body_text()),
        },
        _ => ApiError::invalid_body(format!("cannot read the request body: {}", e.body_text())),
    })?;
    let req = validate(parse_body(&headers, &body)?, endpoint, &state.served_name)?;

    // Tokenizing (and rendering the template) is CPU work: keep it off the async workers.
    let input = req.input.clone();
    let tokenizing = engine.clone();
    let prompt_ids = tokio::task::spawn_blocking(move || match input {
        PromptInput::Chat(messages) => tokenizing.encode_chat(&messages),
        PromptInput::Text(text) => tokenizing.encode_text(&text),
        PromptInput::Tokens(ids) => Ok(ids),
    })
    .await
    .map_err(|e| ApiError::Internal {
        message: format!("tokenizing the prompt failed: {e}"),
    })??;

    let max_tokens = req
        .max_tokens
        .unwrap_or_else(|| engine.context_length().saturating_sub(prompt_ids.len()));
    let prompt_len = prompt_ids.len();
    let events = engine.submit(GenRequest {
        prompt_ids,
        sampling: req.sampling.clone(),
        max_tokens,
        stop: req.stop.clone(),
        ignore_eos: req.ignore_eos,
    })?;
    tracing::debug!(
        prompt_len,
        max_tokens,
        stream = req.stream,
        "request queued"
    );

    let header = Header {
        id: match endpoint {
            Endpoint::Chat => format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            Endpoint::Completions => format!("cmpl-{}", uuid::Uuid::new_v4().simple()),
        },
        object: match (endpoint, req.stream) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        },
        created: unix_now(),
        model: req.model.clone(),
        system_fingerprint: system_fingerprint(),
    };
    if req.stream {
        Ok(stream_response(header, &req, events))
    } else {
        whole_response(header, endpoint, events).await
    }
}

/// Waits for the whole completion and answers with one JSON object.
async fn whole_response(
    header: Header,
    endpoint: Endpoint,
    mut events: UnboundedReceiver<GenEvent>,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(ev) = events.recv().await {
        match ev {
            GenEvent::Token { text: t, .. } => text.push_str(&t),
            GenEvent::Error(message) => return Err(ApiError::Internal { message }),
            GenEvent::Done {
                finish_reason,
                usage,
                ..
            } => {
                let usage = Usage::new(usage.prompt_tokens, usage.completion_tokens);
                let finish_reason = finish_reason.as_str();
                let resp = match endpoint {
                    Endpoint::Chat => Json(ChatCompletion {
                        header,
                        choices: vec![ChatChoice {
                            index: 0,
                            message: AssistantMessage {
                                role: "assistant",
                                content: text,
                            },
                            logprobs: None,
                            finish_reason,
                        }],
                        usage,
                    })
                    .into_response(),
                    Endpoint::Completions => Json(Completion {
                        header,
                        choices: vec![CompletionChoice {
                            index: 0,
                            text,
                            logprobs: None,
                            finish_reason: Some(finish_reason),
                        }],
                        usage: Some(usage),
                    })
                    .into_response(),
                };
                return Ok(resp);
            }
        }
    }
    Err(ApiError::Internal {
        message: "the engine ended the request without finishing it; see the server log".into(),
    })
}

/// Streams the completion as SSE chunks. The event receiver lives inside the stream, so a
/// client that disconnects drops it and the engine stops at its next token.
fn stream_response(
    header: Header,
    req: &ValidRequest,
    mut events: UnboundedReceiver<GenEvent>,
) -> Response {
    let endpoint = req.endpoint;
    let include_usage = req.include_usage;
    let chat_chunk = move |header: &Header, delta: Delta, finish: Option<&'static str>| {
        sse::frame(&ChatChunk {
            header: header.clone(),
            choices: vec![ChatChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
        })
    };
    let text_chunk = move |header: &Header, text: String, finish: Option<&'static str>| {
        sse::frame(&Completion {
            header: header.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
        })
    };
    let frames = async_stream::stream! {
        if endpoint == Endpoint::Chat {
            let opening = Delta { role: Some("assistant"), content: Some(String::new()) };
            yield chat_chunk(&header, opening, None);
        }
        while let Some(ev) = events.recv().await {
            match ev {
                GenEvent::Token { text, .. } if text.is_empty() => {}
                GenEvent::Token { text, .. } => match endpoint {
                    Endpoint::Chat => {
                        yield chat_chunk(&header, Delta { role: None, content: Some(text) }, None)
                    }
                    Endpoint::Completions => yield text_chunk(&header, text, None),
                },
                GenEvent::Done { finish_reason, usage, .. } => {
                    let finish = Some(finish_reason.as_str());
                    match endpoint {
                        Endpoint::Chat => yield chat_chunk(&header, Delta::default(), finish),
                        Endpoint::Completions => yield text_chunk(&header, String::new(), finish),
                    }
                    if include_usage {
                        let usage = Some(Usage::new(usage.prompt_tokens, usage.completion_tokens));
                        match endpoint {
                            Endpoint::Chat => yield sse::frame(&ChatChunk {
                                header: header.clone(), choices: vec![], usage,
                            }),
                            Endpoint::Completions => yield sse::frame(&Completion {
                                header: header.clone(), choices: vec![], usage,
                            }),
                        }
                    }
                    break;
                }
                GenEvent::Error(message) => {
                    yield sse::frame(&ApiError::Internal { message }.body());
                    break;
                }
            }
        }
        yield Bytes::from_static(sse::DONE);
    };
    sse::response(frames)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn system_fingerprint() -> String {
    format!("ryzanstein-{}", env!("CARGO_PKG_VERSION"))
}

pub(super) fn created_now() -> u64 {
    unix_now()
}
