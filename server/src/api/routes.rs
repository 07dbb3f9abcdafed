//! Request handlers: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, probes, metrics.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::errors::ApiError;
use super::logprobs::Renderer;
use super::types::{
    AssistantMessage, ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, Completion,
    CompletionChoice, Delta, Header, ModelCard, ModelList, Usage,
};
use super::validation::{
    check_logit_bias_vocab, parse_body, validate, Endpoint, PromptInput, ValidRequest,
};
use super::{sse, AppState, RequestTimeout};
use crate::engine::{EngineHandle, GenEvent, GenRequest};
use crate::sampler::TokenLogprobs;

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(timeout): Extension<RequestTimeout>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    complete(state, timeout, headers, body, Endpoint::Chat).await
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(timeout): Extension<RequestTimeout>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    complete(state, timeout, headers, body, Endpoint::Completions).await
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let card = |id: &str| ModelCard {
        id: id.to_owned(),
        object: "model",
        created: state.created,
        owned_by: "ryzanstein",
    };
    let mut data = vec![card(&state.served_name)];
    data.extend(state.embeddings().map(|e| card(&e.name)));
    Json(ModelList {
        object: "list",
        data,
    })
}

/// Liveness: the process is up and answering.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: 200 once the models are loaded, 503 while loading and once shutdown has begun.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.readiness() {
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
    let mut text = super::metrics::render(&state.served_name, stats.as_ref());
    if let Some(e) = state.embeddings() {
        text.push_str(&super::metrics::render_embeddings(e));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            super::metrics::CONTENT_TYPE,
        )],
        text,
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
    timeout: RequestTimeout,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let engine = state.engine()?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            message: format!("{}; send a smaller request body", e.body_text()),
        },
        _ => ApiError::invalid_body(format!("cannot read the request body: {}", e.body_text())),
    })?;
    let req = validate(parse_body(&headers, &body)?, endpoint, &state.served_name)?;
    check_logit_bias_vocab(&req.sampling.logit_bias, engine.vocab_size())?;

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
    // The engine stops the request at its deadline (streams too, which the HTTP timeout
    // covers only until their headers), so a forgotten stream cannot hold a slot forever.
    let request = GenRequest {
        prompt_ids,
        sampling: req.sampling.clone(),
        max_tokens,
        stop: req.stop.clone(),
        ignore_eos: req.ignore_eos,
    };
    let events = engine.submit_by(request, Some(timeout.deadline_from(arrived)))?;
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
    let renderer = renderer(&engine);
    if req.stream {
        Ok(stream_response(header, &req, events, renderer, timeout))
    } else {
        whole_response(header, endpoint, events, renderer, timeout).await
    }
}

/// Waits for the whole completion and answers with one JSON object.
async fn whole_response(
    header: Header,
    endpoint: Endpoint,
    mut events: UnboundedReceiver<GenEvent>,
    renderer: Renderer<impl Fn(u32) -> Vec<u8>>,
    timeout: RequestTimeout,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut logprobs: Option<Vec<TokenLogprobs>> = None;
    while let Some(ev) = events.recv().await {
        match ev {
            GenEvent::Token {
                text: t,
                logprobs: lp,
                ..
            } => {
                text.push_str(&t);
                if let Some(lp) = lp {
                    logprobs.get_or_insert_with(Vec::new).push(lp);
                }
            }
            GenEvent::Error(message) => return Err(ApiError::Internal { message }),
            GenEvent::TimedOut { .. } => return Err(timeout.error()),
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
                            logprobs: logprobs.map(|lp| renderer.chat(&lp)),
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
                            logprobs: logprobs.map(|lp| renderer.completion(&lp, 0).0),
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
///
/// With logprobs, each chunk carries the logprobs of the tokens whose text it releases; tokens
/// whose text is held back (a possible stop string, part of a character) are reported with the
/// next chunk that has text, or with the finishing chunk.
fn stream_response(
    header: Header,
    req: &ValidRequest,
    mut events: UnboundedReceiver<GenEvent>,
    renderer: Renderer<impl Fn(u32) -> Vec<u8> + Send + 'static>,
    timeout: RequestTimeout,
) -> Response {
    let endpoint = req.endpoint;
    let include_usage = req.include_usage;
    let frames = async_stream::stream! {
        let mut chunker = Chunker { header, endpoint, renderer, offset: 0 };
        if endpoint == Endpoint::Chat {
            let opening = Delta { role: Some("assistant"), content: Some(String::new()) };
            yield chunker.chat(opening, &mut None, None);
        }
        let mut pending: Option<Vec<TokenLogprobs>> = None;
        while let Some(ev) = events.recv().await {
            match ev {
                GenEvent::Token { text, logprobs, .. } => {
                    if let Some(lp) = logprobs {
                        pending.get_or_insert_with(Vec::new).push(lp);
                    }
                    if !text.is_empty() {
                        yield chunker.text(text, &mut pending, None);
                    }
                }
                GenEvent::Done { finish_reason, usage, .. } => {
                    yield chunker.text(String::new(), &mut pending, Some(finish_reason.as_str()));
                    if include_usage {
                        let usage = Some(Usage::new(usage.prompt_tokens, usage.completion_tokens));
                        let header = chunker.header.clone();
                        match endpoint {
                            Endpoint::Chat => yield sse::frame(&ChatChunk {
                                header, choices: vec![], usage,
                            }),
                            Endpoint::Completions => yield sse::frame(&Completion {
                                header, choices: vec![], usage,
                            }),
                        }
                    }
                    break;
                }
                GenEvent::Error(message) => {
                    yield sse::frame(&ApiError::Internal { message }.body());
                    break;
                }
                GenEvent::TimedOut { .. } => {
                    yield sse::frame(&timeout.error().body());
                    break;
                }
            }
        }
        yield Bytes::from_static(sse::DONE);
    };
    sse::response(frames)
}

/// Builds the SSE chunks of one streamed response.
struct Chunker<F: Fn(u32) -> Vec<u8>> {
    header: Header,
    endpoint: Endpoint,
    renderer: Renderer<F>,
    /// Characters of completion text before the next token (the legacy `text_offset`).
    offset: usize,
}

impl<F: Fn(u32) -> Vec<u8>> Chunker<F> {
    /// A chunk with `text` and the logprobs in `pending` (taken).
    fn text(
        &mut self,
        text: String,
        pending: &mut Option<Vec<TokenLogprobs>>,
        finish: Option<&'static str>,
    ) -> Bytes {
        match self.endpoint {
            Endpoint::Chat => {
                let delta = match finish {
                    Some(_) => Delta::default(),
                    None => Delta {
                        role: None,
                        content: Some(text),
                    },
                };
                self.chat(delta, pending, finish)
            }
            Endpoint::Completions => {
                let logprobs = pending.take().map(|lp| {
                    let (out, next) = self.renderer.completion(&lp, self.offset);
                    self.offset = next;
                    out
                });
                sse::frame(&Completion {
                    header: self.header.clone(),
                    choices: vec![CompletionChoice {
                        index: 0,
                        text,
                        logprobs,
                        finish_reason: finish,
                    }],
                    usage: None,
                })
            }
        }
    }

    fn chat(
        &mut self,
        delta: Delta,
        pending: &mut Option<Vec<TokenLogprobs>>,
        finish: Option<&'static str>,
    ) -> Bytes {
        sse::frame(&ChatChunk {
            header: self.header.clone(),
            choices: vec![ChatChunkChoice {
                index: 0,
                delta,
                logprobs: pending.take().map(|lp| self.renderer.chat(&lp)),
                finish_reason: finish,
            }],
            usage: None,
        })
    }
}

/// Renders token ids with the engine's tokenizer (special tokens written out).
fn renderer(engine: &EngineHandle) -> Renderer<impl Fn(u32) -> Vec<u8> + Send + 'static> {
    let tokenizer = engine.tokenizer().clone();
    Renderer::new(move |id| {
        tokenizer
            .piece_bytes(id, false)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    })
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
