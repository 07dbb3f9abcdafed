//! Streamed responses (`stream: true`): SSE chunks for every choice as its tokens come, each
//! with its `index`; tool calls as `delta.tool_calls` (id, type and name first, then the
//! arguments), never as the raw tags.
//!
//! The event receivers live inside the stream, so a client that disconnects drops them and
//! the engine stops those sequences at their next token. With logprobs, each chunk carries
//! the logprobs of the tokens whose text it releases; tokens whose text is held back (a
//! possible stop string, part of a character, a possible tool-call tag) are reported with the
//! next chunk of that choice that has text, or with its finishing chunk.

use axum::body::Bytes;
use axum::response::Response;
use futures::StreamExt;

use super::errors::ApiError;
use super::logprobs::Renderer;
use super::routes::ChoiceEvents;
use super::tools::{CallMode, CallSplitter, Piece, ToolCall};
use super::types::{
    ChatChunk, ChatChunkChoice, Completion, CompletionChoice, Delta, FunctionCallDelta, Header,
    ToolCallDelta, Usage,
};
use super::validation::{Endpoint, ValidRequest};
use super::{sse, RequestTimeout};
use crate::engine::GenEvent;
use crate::sampler::TokenLogprobs;

/// The SSE response of every choice's events, interleaved as they come.
pub(super) fn response(
    header: Header,
    req: &ValidRequest,
    calls: Option<CallMode>,
    choices: Vec<ChoiceEvents>,
    renderer: Renderer<impl Fn(u32) -> Vec<u8> + Send + 'static>,
    timeout: RequestTimeout,
) -> Response {
    let endpoint = req.endpoint;
    let include_usage = req.include_usage;
    let n = choices.len();
    let mut merged = futures::stream::select_all(
        choices
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.into_stream().map(move |ev| (i, ev))),
    );
    let frames = async_stream::stream! {
        let mut chunker = Chunker { header, endpoint, renderer };
        let mut states: Vec<ChoiceState> = (0..n).map(|_| ChoiceState::new(calls)).collect();
        if endpoint == Endpoint::Chat {
            for i in 0..n {
                let opening = Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    tool_calls: None,
                };
                yield chunker.chat(i, opening, &mut None, None);
            }
        }
        let mut open = n;
        let mut usage = Usage::new(0, 0);
        while let Some((i, ev)) = merged.next().await {
            let st = &mut states[i];
            match ev {
                GenEvent::Token { text, logprobs, .. } => {
                    if let Some(lp) = logprobs {
                        st.pending.get_or_insert_with(Vec::new).push(lp);
                    }
                    if text.is_empty() {
                        continue;
                    }
                    let pieces = match &mut st.splitter {
                        None => vec![Piece::Content(text)],
                        Some(sp) => sp.push(&text),
                    };
                    for piece in pieces {
                        for frame in chunker.piece(i, st, piece) {
                            yield frame;
                        }
                    }
                }
                GenEvent::Done { finish_reason, usage: u, .. } => {
                    let rest = st.splitter.as_mut().map(CallSplitter::finish).unwrap_or_default();
                    for piece in rest {
                        for frame in chunker.piece(i, st, piece) {
                            yield frame;
                        }
                    }
                    let finish = if st.calls > 0 { "tool_calls" } else { finish_reason.as_str() };
                    yield chunker.text(i, st, String::new(), Some(finish));
                    usage = Usage::new(u.prompt_tokens, usage.completion_tokens + u.completion_tokens);
                    open -= 1;
                    if open == 0 {
                        if include_usage {
                            let header = chunker.header.clone();
                            match endpoint {
                                Endpoint::Chat => yield sse::frame(&ChatChunk {
                                    header, choices: vec![], usage: Some(usage),
                                }),
                                Endpoint::Completions => yield sse::frame(&Completion {
                                    header, choices: vec![], usage: Some(usage),
                                }),
                            }
                        }
                        break;
                    }
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

/// One choice's part of the stream.
struct ChoiceState {
    /// Characters of completion text before the next token (the legacy `text_offset`).
    offset: usize,
    /// Logprobs of tokens whose text is not out yet.
    pending: Option<Vec<TokenLogprobs>>,
    /// Separates tool calls from content, when the request has tools.
    splitter: Option<CallSplitter>,
    /// Tool calls sent so far.
    calls: u32,
}

impl ChoiceState {
    fn new(calls: Option<CallMode>) -> ChoiceState {
        ChoiceState {
            offset: 0,
            pending: None,
            splitter: calls.map(CallSplitter::new),
            calls: 0,
        }
    }
}

/// Builds the SSE chunks of one streamed response.
struct Chunker<F: Fn(u32) -> Vec<u8>> {
    header: Header,
    endpoint: Endpoint,
    renderer: Renderer<F>,
}

impl<F: Fn(u32) -> Vec<u8>> Chunker<F> {
    /// The frames of a piece of choice `i`'s reply.
    fn piece(&mut self, i: usize, st: &mut ChoiceState, piece: Piece) -> Vec<Bytes> {
        match piece {
            Piece::Content(text) if text.is_empty() => Vec::new(),
            Piece::Content(text) => vec![self.text(i, st, text, None)],
            Piece::Call(call) => self.call(i, st, call),
        }
    }

    /// A chunk of choice `i` with `text` and its pending logprobs (taken).
    fn text(
        &mut self,
        i: usize,
        st: &mut ChoiceState,
        text: String,
        finish: Option<&'static str>,
    ) -> Bytes {
        match self.endpoint {
            Endpoint::Chat => {
                let delta = match finish {
                    Some(_) => Delta::default(),
                    None => Delta {
                        role: None,
                        content: Some(text),
                        tool_calls: None,
                    },
                };
                self.chat(i, delta, &mut st.pending, finish)
            }
            Endpoint::Completions => {
                let logprobs = st.pending.take().map(|lp| {
                    let (out, next) = self.renderer.completion(&lp, st.offset);
                    st.offset = next;
                    out
                });
                sse::frame(&Completion {
                    header: self.header.clone(),
                    choices: vec![CompletionChoice {
                        index: i as u32,
                        text,
                        logprobs,
                        finish_reason: finish,
                    }],
                    usage: None,
                })
            }
        }
    }

    /// Two chunks: the call's id, type and name, then its arguments.
    fn call(&mut self, i: usize, st: &mut ChoiceState, call: ToolCall) -> Vec<Bytes> {
        let index = st.calls;
        st.calls += 1;
        let head = ToolCallDelta {
            index,
            id: Some(call.id),
            kind: Some("function"),
            function: FunctionCallDelta {
                name: Some(call.name),
                arguments: Some(String::new()),
            },
        };
        let args = ToolCallDelta {
            index,
            id: None,
            kind: None,
            function: FunctionCallDelta {
                name: None,
                arguments: Some(call.arguments),
            },
        };
        [head, args]
            .into_iter()
            .map(|d| {
                let delta = Delta {
                    role: None,
                    content: None,
                    tool_calls: Some(vec![d]),
                };
                self.chat(i, delta, &mut st.pending, None)
            })
            .collect()
    }

    fn chat(
        &mut self,
        i: usize,
        delta: Delta,
        pending: &mut Option<Vec<TokenLogprobs>>,
        finish: Option<&'static str>,
    ) -> Bytes {
        sse::frame(&ChatChunk {
            header: self.header.clone(),
            choices: vec![ChatChunkChoice {
                index: i as u32,
                delta,
                logprobs: pending.take().map(|lp| self.renderer.chat(&lp)),
                finish_reason: finish,
            }],
            usage: None,
        })
    }
}
