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
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::errors::ApiError;
use super::logprobs::Renderer;
use super::ratelimit::{Permit, RateLimiter};
use super::tools::{self, CallMode, ToolCall};
use super::types::{
    AssistantMessage, ChatChoice, ChatCompletion, Completion, CompletionChoice, FunctionCallOut,
    Header, ModelCard, ModelList, RawRequest, ToolCallOut, Usage,
};
use super::validation::{
    check_logit_bias_vocab, parse_body, validate, Endpoint, PromptInput, ValidRequest,
};
use super::{stream, AppState, RequestTimeout};
use crate::engine::{EngineHandle, FinishReason, GenEvent, GenRequest};
use crate::sampler::TokenLogprobs;

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(timeout): Extension<RequestTimeout>,
    Extension(permit): Extension<Arc<Permit>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    complete(state, (timeout, permit), headers, body, Endpoint::Chat).await
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(timeout): Extension<RequestTimeout>,
    Extension(permit): Extension<Arc<Permit>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    complete(
        state,
        (timeout, permit),
        headers,
        body,
        Endpoint::Completions,
    )
    .await
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

/// Prometheus metrics of the served model and of the tenants.
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    Extension(limiter): Extension<Arc<RateLimiter>>,
) -> Response {
    let stats = state.loaded_engine().map(|e| e.stats());
    let mut text = super::metrics::render(&state.served_name, stats.as_ref());
    text.push_str(&super::metrics::render_tenants(
        &state.served_name,
        &limiter.snapshot(),
    ));
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

/// The OpenAPI 3.1 document of this API (`src/api/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
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
    (timeout, permit): (RequestTimeout, Arc<Permit>),
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let engine = state.engine()?;
    let (req, prompt_ids) = prepare(&engine, &state, &headers, body, endpoint)
        .instrument(tracing::info_span!("validate"))
        .await?;
    let deadline = timeout.deadline_from(arrived);
    let choices = submit(&engine, &req, prompt_ids, &permit, deadline).await?;
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
    let calls = req.tools.as_ref().and_then(|t| t.mode());
    if req.stream {
        Ok(stream::response(
            header, &req, calls, choices, renderer, timeout,
        ))
    } else {
        whole_response(header, endpoint, calls, choices, renderer, timeout).await
    }
}

/// Charges a validated request's prompt to its tenant and submits its choices to the engine
/// (HTTP and gRPC alike). The engine stops every choice at `deadline` (streams too, which the
/// HTTP timeout covers only until their headers), so a forgotten stream cannot hold a slot.
pub(super) async fn submit(
    engine: &EngineHandle,
    req: &ValidRequest,
    prompt_ids: Vec<u32>,
    permit: &Arc<Permit>,
    deadline: Instant,
) -> Result<Vec<ChoiceEvents>, ApiError> {
    // The prompt counts once against the tenant's tokens, however many choices.
    permit.take_prompt(prompt_ids.len(), Instant::now())?;
    let max_tokens = req
        .max_tokens
        .unwrap_or_else(|| engine.context_length().saturating_sub(prompt_ids.len()));
    let prompt_len = prompt_ids.len();
    // One sequence per choice. With several, the first runs its prompt alone: once it has a
    // token its prompt's full blocks are in the prefix cache, and the others start from them
    // instead of computing the same prompt side by side. A failure part-way drops the
    // receivers already made, which cancels their sequences.
    let make = |i: usize| {
        let mut sampling = req.sampling.clone();
        sampling.seed = req.sampling.seed.map(|s| choice_seed(s, i));
        GenRequest {
            prompt_ids: prompt_ids.clone(),
            sampling,
            max_tokens,
            stop: req.stop.clone(),
            ignore_eos: req.ignore_eos,
            tenant: permit.tag(),
        }
    };
    let trace = Arc::new(Trace {
        parent: tracing::Span::current().context(),
        submitted: SystemTime::now(),
    });
    let deadline = Some(deadline);
    let mut first = engine.submit_by(make(0), deadline)?;
    let head = match req.n {
        1 => None,
        _ => first.recv().await,
    };
    let mut choices = Vec::with_capacity(req.n);
    choices.push(ChoiceEvents {
        head,
        rx: first,
        permit: permit.clone(),
        trace: trace.clone(),
    });
    for i in 1..req.n {
        choices.push(ChoiceEvents {
            head: None,
            rx: engine.submit_by(make(i), deadline)?,
            permit: permit.clone(),
            trace: trace.clone(),
        });
    }
    tracing::debug!(
        prompt_len,
        max_tokens,
        n = req.n,
        stream = req.stream,
        "request queued"
    );
    Ok(choices)
}

/// Reads, validates and tokenizes a completion request (the `validate` span).
async fn prepare(
    engine: &EngineHandle,
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<(ValidRequest, Vec<u32>), ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            message: format!("{}; send a smaller request body", e.body_text()),
        },
        _ => ApiError::invalid_body(format!("cannot read the request body: {}", e.body_text())),
    })?;
    prepare_raw(engine, state, parse_body(headers, &body)?, endpoint).await
}

/// Validates and tokenizes a parsed completion request (HTTP and gRPC alike).
pub(super) async fn prepare_raw(
    engine: &EngineHandle,
    state: &AppState,
    raw: RawRequest,
    endpoint: Endpoint,
) -> Result<(ValidRequest, Vec<u32>), ApiError> {
    let req = validate(raw, endpoint, &state.served_name)?;
    check_logit_bias_vocab(&req.sampling.logit_bias, engine.vocab_size())?;
    if req.n > engine.max_sequences() {
        return Err(ApiError::invalid(
            "n",
            format!(
                "n is {}, but this server generates at most {} sequences at once (--parallel); \
                 ask for fewer choices",
                req.n,
                engine.max_sequences()
            ),
        ));
    }

    // Tokenizing (and rendering the template) is CPU work: keep it off the async workers.
    let input = req.input.clone();
    let prefix = req
        .tools
        .as_ref()
        .and_then(|t| t.reply_prefix())
        .unwrap_or_default();
    let tokenizing = engine.clone();
    let prompt_ids = tokio::task::spawn_blocking(move || match input {
        PromptInput::Chat(messages) => tokenizing.encode_chat_with_prefix(&messages, &prefix),
        PromptInput::Text(text) => tokenizing.encode_text(&text),
        PromptInput::Tokens(ids) => Ok(ids),
    })
    .await
    .map_err(|e| ApiError::Internal {
        message: format!("tokenizing the prompt failed: {e}"),
    })??;

    Ok((req, prompt_ids))
}

/// The seed of choice `i` when the request gives `seed`: the seed itself for the first
/// choice (so `n: 1` is unchanged), distinct deterministic seeds for the others.
pub fn choice_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One choice's events; the first may have been read already. When it ends, its generated
/// tokens are charged to the tenant and its spans recorded.
pub(super) struct ChoiceEvents {
    head: Option<GenEvent>,
    rx: UnboundedReceiver<GenEvent>,
    permit: Arc<Permit>,
    trace: Arc<Trace>,
}

/// Where a request's generation spans go: under its request span, from its submission.
struct Trace {
    parent: opentelemetry::Context,
    submitted: SystemTime,
}

/// A finished choice: its completion tokens charged to its tenant, its spans recorded.
fn on_end(permit: &Permit, trace: &Trace, ev: &GenEvent) {
    if let GenEvent::Done { usage, timings, .. } = ev {
        permit.charge_completion(usage.completion_tokens);
        crate::telemetry::record_generation(
            &trace.parent,
            trace.submitted,
            timings,
            usage.completion_tokens,
        );
    }
}

impl ChoiceEvents {
    async fn recv(&mut self) -> Option<GenEvent> {
        let ev = match self.head.take() {
            Some(ev) => Some(ev),
            None => self.rx.recv().await,
        };
        if let Some(ev) = &ev {
            on_end(&self.permit, &self.trace, ev);
        }
        ev
    }

    pub(super) fn into_stream(self) -> impl futures::Stream<Item = GenEvent> + Unpin + Send {
        use futures::StreamExt;
        let (permit, trace) = (self.permit, self.trace);
        futures::stream::iter(self.head)
            .chain(tokio_stream::wrappers::UnboundedReceiverStream::new(
                self.rx,
            ))
            .inspect(move |ev| on_end(&permit, &trace, ev))
    }
}

/// One choice's generation, whole.
struct Generated {
    text: String,
    logprobs: Option<Vec<TokenLogprobs>>,
    finish_reason: FinishReason,
    usage: crate::engine::Usage,
}

async fn collect(mut events: ChoiceEvents, timeout: RequestTimeout) -> Result<Generated, ApiError> {
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
                return Ok(Generated {
                    text,
                    logprobs,
                    finish_reason,
                    usage,
                })
            }
        }
    }
    Err(ApiError::Internal {
        message: "the engine ended the request without finishing it; see the server log".into(),
    })
}

/// Waits for every choice and answers with one JSON object. Usage counts the prompt once and
/// the completion tokens of every choice.
async fn whole_response(
    header: Header,
    endpoint: Endpoint,
    calls: Option<CallMode>,
    choices: Vec<ChoiceEvents>,
    renderer: Renderer<impl Fn(u32) -> Vec<u8>>,
    timeout: RequestTimeout,
) -> Result<Response, ApiError> {
    let mut done = Vec::with_capacity(choices.len());
    // The sequences run together in the engine; waiting on them in turn loses nothing.
    for events in choices {
        done.push(collect(events, timeout).await?);
    }
    let prompt_tokens = done.first().map_or(0, |g| g.usage.prompt_tokens);
    let completion_tokens = done.iter().map(|g| g.usage.completion_tokens).sum();
    let usage = Usage::new(prompt_tokens, completion_tokens);
    let resp = match endpoint {
        Endpoint::Chat => Json(ChatCompletion {
            header,
            choices: done
                .into_iter()
                .enumerate()
                .map(|(i, g)| {
                    let logprobs = g.logprobs.map(|lp| renderer.chat(&lp));
                    let (message, finish_reason) =
                        assistant_message(g.text, g.finish_reason, calls);
                    ChatChoice {
                        index: i as u32,
                        message,
                        logprobs,
                        finish_reason,
                    }
                })
                .collect(),
            usage,
        })
        .into_response(),
        Endpoint::Completions => Json(Completion {
            header,
            choices: done
                .into_iter()
                .enumerate()
                .map(|(i, g)| CompletionChoice {
                    index: i as u32,
                    text: g.text,
                    logprobs: g.logprobs.map(|lp| renderer.completion(&lp, 0).0),
                    finish_reason: Some(g.finish_reason.as_str()),
                })
                .collect(),
            usage: Some(usage),
        })
        .into_response(),
    };
    Ok(resp)
}

/// The reply as a message: its tool calls parsed out when the request has tools, and the
/// finish reason `tool_calls` when it made any.
fn assistant_message(
    text: String,
    finish: FinishReason,
    calls: Option<CallMode>,
) -> (AssistantMessage, &'static str) {
    let (content, calls) = match calls {
        None => (text, Vec::new()),
        Some(CallMode::Auto) => tools::parse_reply(&text),
        Some(CallMode::Forced) => match tools::parse_call(&text) {
            Some(call) => (String::new(), vec![call]),
            None => (text, Vec::new()),
        },
    };
    if calls.is_empty() {
        let message = AssistantMessage {
            role: "assistant",
            content: Some(content),
            tool_calls: None,
        };
        return (message, finish.as_str());
    }
    let message = AssistantMessage {
        role: "assistant",
        content: (!content.is_empty()).then_some(content),
        tool_calls: Some(calls.into_iter().map(call_out).collect()),
    };
    (message, "tool_calls")
}

pub(super) fn call_out(c: ToolCall) -> ToolCallOut {
    ToolCallOut {
        id: c.id,
        kind: "function",
        function: FunctionCallOut {
            name: c.name,
            arguments: c.arguments,
        },
    }
}

/// Renders token ids with the engine's tokenizer (special tokens written out).
pub(super) fn renderer(
    engine: &EngineHandle,
) -> Renderer<impl Fn(u32) -> Vec<u8> + Send + 'static> {
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
