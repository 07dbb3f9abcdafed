//! The engine: owns the model, tokenizer and chat template, and runs generation requests on a
//! dedicated OS thread (the model forward is blocking CPU work that must never run on the async
//! runtime's threads).
//!
//! [`EngineHandle`] is the async side's view: it tokenizes, checks a request against the
//! context window, and [`submit`](EngineHandle::submit)s it to a bounded queue; the worker
//! answers with a stream of [`GenEvent`]s. The worker batches continuously: up to
//! [`EngineOptions::max_sequences`] requests are generated together, one forward pass per step
//! for all of them ([`scheduler`]), and a waiting request starts as soon as one of them ends. A
//! full queue is refused at once ([`Error::QueueFull`]), and a request whose receiver is dropped
//! (the client went away) stops at the next step.

mod blocks;
pub mod draft;
pub mod fair;
mod load;
pub mod scheduler;
mod sequence;
pub mod stats;
pub mod stop;
mod worker;

use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::models::{kv::blocks_for, CausalLm, BLOCK};
use crate::sampler::{SamplingParams, TokenLogprobs};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

pub use blocks::PrefixStats;
pub use fair::TenantTag;
pub use load::{default_served_name, load};
pub use stats::{EngineStats, Outcome, StatsSnapshot};

/// The KV cache's default ceiling: its pages are only committed as blocks are used.
pub const DEFAULT_KV_CACHE_BYTES: u64 = 2 << 30;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Worker threads for the model's kernels.
    pub threads: usize,
    /// Context window in tokens; `None` uses the model's own context length. Larger values are
    /// capped at the model's.
    pub ctx_size: Option<usize>,
    /// Requests that may wait while [`max_sequences`](Self::max_sequences) run; more are
    /// refused with [`Error::QueueFull`].
    pub queue_capacity: usize,
    /// Requests generated at once (continuous batching); at least 1.
    pub max_sequences: usize,
    /// Rows of one forward step: a token of every decoding sequence, the rest prompt chunks.
    pub batch_tokens: usize,
    /// Bytes of the paged KV cache (`--kv-cache-memory`); `None`: room for every sequence's
    /// full context, at most [`DEFAULT_KV_CACHE_BYTES`]. The context window is capped at what
    /// the cache holds.
    pub kv_cache_bytes: Option<u64>,
    /// Share the KV blocks of common prompt prefixes between requests (`--no-prefix-cache`
    /// turns it off; outputs are the same either way).
    pub prefix_cache: bool,
    /// Speculative decoding by prompt lookup (`--draft-max`); `None`: off.
    pub draft: Option<draft::DraftOptions>,
    /// The sha256 the model's file must have (`--model-sha256`; see [`crate::source::pin`]).
    pub model_sha256: Option<crate::source::pin::Sha256Pin>,
    /// How the weights are prepared at load (`--quantize`, `--ternary-kernel`, `--lm-head`).
    pub model: crate::models::ModelOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ctx_size: None,
            queue_capacity: 16,
            max_sequences: 16,
            batch_tokens: 256,
            kv_cache_bytes: None,
            prefix_cache: true,
            draft: None,
            model_sha256: None,
            model: crate::models::ModelOptions::default(),
        }
    }
}

/// One generation request, already tokenized.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt_ids: Vec<u32>,
    pub sampling: SamplingParams,
    /// At most this many tokens are generated (finish reason "length").
    pub max_tokens: usize,
    /// Generation ends before any of these strings, which are never emitted.
    pub stop: Vec<String>,
    /// Keep generating through end-of-generation tokens.
    pub ignore_eos: bool,
    /// Whose request it is: the waiting queue is fair between tenants (see [`fair`]).
    pub tenant: TenantTag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Where the time of one request went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// Prompt tokens actually run through the model (the rest came from the reused prefix).
    pub prompt_eval_tokens: usize,
    /// From submission to the first admission to the running set (waiting in the queue).
    pub queue_ms: f64,
    /// Prompt forward plus the first token's sampling.
    pub prompt_ms: f64,
    /// Everything after the first token: one forward step per further generated token and the
    /// sampling.
    pub gen_ms: f64,
    /// Tokens drafted for speculative decoding, and of those confirmed by the model (each one
    /// a forward step saved).
    pub draft_tokens: usize,
    pub accepted_tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// One generated token and the text it released (possibly empty: text that might begin a
    /// stop string, or an unfinished UTF-8 character, waits for later tokens; the last token's
    /// event carries everything still held back). `logprobs` is there when the request's
    /// [`SamplingParams::logprobs`] asks for it.
    Token {
        id: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    /// The last event of a successful request.
    Done {
        finish_reason: FinishReason,
        usage: Usage,
        timings: Timings,
    },
    /// The request failed; nothing follows.
    Error(String),
    /// The request ran past its deadline (it had run for `after`); its blocks are freed and
    /// nothing follows.
    TimedOut { after: std::time::Duration },
}

/// A queued request and where its events go.
struct Job {
    req: GenRequest,
    events: UnboundedSender<GenEvent>,
    /// When the request was accepted (latencies count from here, queue wait included).
    submitted: std::time::Instant,
    /// Waiting or running past this, the request ends with [`GenEvent::TimedOut`].
    deadline: Option<std::time::Instant>,
}

struct Shared {
    jobs: Sender<Job>,
    tokenizer: Arc<Tokenizer>,
    template: Option<ChatTemplate>,
    context_length: usize,
    vocab_size: usize,
    architecture: String,
    queue_capacity: usize,
    /// Requests generated at once: with `queue_capacity`, how many may be in the engine.
    max_sequences: usize,
    stats: Arc<EngineStats>,
}

/// The async side's handle on the engine; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

/// The running engine: its handle and worker thread. Dropping every handle (this one's
/// included) ends the worker after its current request.
pub struct Engine {
    handle: EngineHandle,
    worker: JoinHandle<()>,
}

impl Engine {
    /// Starts the worker thread that owns `model`.
    pub fn start(
        model: Box<dyn CausalLm>,
        tokenizer: Tokenizer,
        template: Option<ChatTemplate>,
        opts: &EngineOptions,
    ) -> Result<Engine> {
        let model_ctx = model.context_length();
        let mut context_length = opts.ctx_size.unwrap_or(model_ctx).min(model_ctx);
        if context_length == 0 {
            return Err(Error::Engine(format!(
                "the context size is 0 (model context length {model_ctx}); pass a positive \
                 --ctx-size"
            )));
        }
        let max_sequences = opts.max_sequences.max(1);
        let block_bytes = model.kv_shape().bytes_per_block() as u64;
        let kv_blocks = match opts.kv_cache_bytes {
            Some(bytes) => (bytes / block_bytes) as usize,
            None => {
                let full = max_sequences * blocks_for(context_length);
                full.min((DEFAULT_KV_CACHE_BYTES / block_bytes) as usize)
                    .max(blocks_for(context_length))
            }
        };
        if kv_blocks == 0 {
            return Err(Error::Engine(format!(
                "--kv-cache-memory is smaller than one block of the KV cache ({block_bytes} \
                 bytes: {BLOCK} positions); give it at least {block_bytes} bytes"
            )));
        }
        if kv_blocks * BLOCK < context_length {
            tracing::warn!(
                context_length,
                kv_cache_positions = kv_blocks * BLOCK,
                "the KV cache holds fewer positions than the context window: requests are \
                 limited to what it holds (raise --kv-cache-memory for longer ones)"
            );
            context_length = kv_blocks * BLOCK;
        }
        tracing::info!(
            kv_blocks,
            block_positions = BLOCK,
            mib = (kv_blocks as u64 * block_bytes) >> 20,
            "paged KV cache"
        );
        let tokenizer = Arc::new(tokenizer);
        let stats = Arc::new(EngineStats::default());
        let limits = worker::Limits {
            max_sequences,
            batch_tokens: opts.batch_tokens.max(1),
            kv_blocks,
            prefix_cache: opts.prefix_cache,
            draft: opts.draft.filter(|d| d.max_tokens > 0 && d.ngram > 0),
        };
        // Unbounded: the worker moves every new job to its waiting queue at once (to watch
        // deadlines); `submit` bounds how many wait.
        let (jobs, queue) = channel();
        let shared = Arc::new(Shared {
            jobs,
            tokenizer: tokenizer.clone(),
            template,
            context_length,
            vocab_size: model.vocab_size(),
            architecture: model.architecture().to_owned(),
            queue_capacity: opts.queue_capacity,
            max_sequences,
            stats: stats.clone(),
        });
        let worker = std::thread::Builder::new()
            .name("ryzanstein-engine".into())
            .spawn(move || worker::run(model, tokenizer, limits, queue, stats))
            .map_err(|e| Error::Engine(format!("cannot start the engine thread: {e}")))?;
        Ok(Engine {
            handle: EngineHandle { shared },
            worker,
        })
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Drops this handle and waits for the worker to finish once every other handle is gone.
    pub fn join(self) {
        let Engine { handle, worker } = self;
        drop(handle);
        let _ = worker.join();
    }
}

impl EngineHandle {
    /// The context window requests must fit in (prompt plus `max_tokens`).
    pub fn context_length(&self) -> usize {
        self.shared.context_length
    }

    pub fn vocab_size(&self) -> usize {
        self.shared.vocab_size
    }

    /// Sequences generated at once (`--parallel`).
    pub fn max_sequences(&self) -> usize {
        self.shared.max_sequences
    }

    /// Live request and token counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    pub fn architecture(&self) -> &str {
        &self.shared.architecture
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.shared.tokenizer
    }

    pub fn has_chat_template(&self) -> bool {
        self.shared.template.is_some()
    }

    /// Renders `messages` with the model's chat template (with the assistant turn opened) and
    /// tokenizes the result.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.encode_chat_with_prefix(messages, "")
    }

    /// [`encode_chat`](Self::encode_chat) with the assistant's reply begun by `prefix`.
    pub fn encode_chat_with_prefix(
        &self,
        messages: &[ChatMessage],
        prefix: &str,
    ) -> Result<Vec<u32>> {
        let template = self.shared.template.as_ref().ok_or_else(|| {
            Error::ChatTemplate(
                "this model has no chat template (no tokenizer.chat_template in the GGUF, no \
                 chat_template in tokenizer_config.json); use /v1/completions with a prompt"
                    .into(),
            )
        })?;
        let mut text = template.render(messages, true)?;
        text.push_str(prefix);
        self.encode_text(&text)
    }

    /// Tokenizes `text` (special tokens written in it are parsed), with a BOS when the model
    /// wants one.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let tok = &self.shared.tokenizer;
        tok.encode(text, tok.add_bos())
    }

    /// Checks `req` against the model and queues it. Errors: [`Error::EmptyPrompt`],
    /// [`Error::TokenOutOfRange`], [`Error::ContextOverflow`], [`Error::QueueFull`],
    /// [`Error::EngineStopped`].
    pub fn submit(&self, req: GenRequest) -> Result<UnboundedReceiver<GenEvent>> {
        self.submit_by(req, None)
    }

    /// [`submit`](Self::submit) with a deadline: a request still waiting or generating then
    /// ends with [`GenEvent::TimedOut`] at the next step, and its KV blocks are freed.
    pub fn submit_by(
        &self,
        req: GenRequest,
        deadline: Option<std::time::Instant>,
    ) -> Result<UnboundedReceiver<GenEvent>> {
        let s = &self.shared;
        if req.prompt_ids.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if let Some(&id) = req
            .prompt_ids
            .iter()
            .find(|&&id| id as usize >= s.vocab_size)
        {
            return Err(Error::TokenOutOfRange {
                id,
                vocab_size: s.vocab_size,
            });
        }
        if req.max_tokens == 0 || req.prompt_ids.len() + req.max_tokens > s.context_length {
            return Err(Error::ContextOverflow {
                prompt_tokens: req.prompt_ids.len(),
                max_tokens: req.max_tokens,
                context_length: s.context_length,
            });
        }
        // Counted before the worker can see it, so `waiting` stays consistent.
        if !s.stats.try_queue(s.max_sequences + s.queue_capacity) {
            return Err(Error::QueueFull {
                capacity: s.queue_capacity,
            });
        }
        let (events, rx) = unbounded_channel();
        let job = Job {
            req,
            events,
            submitted: std::time::Instant::now(),
            deadline,
        };
        match s.jobs.send(job) {
            Ok(()) => Ok(rx),
            Err(_) => {
                s.stats.unqueued();
                Err(Error::EngineStopped)
            }
        }
    }
}
