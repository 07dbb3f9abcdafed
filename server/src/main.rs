//! `ryzanstein`: generate text from the command line, or serve the OpenAI-compatible API.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ryzanstein_server::api::{self, auth::ApiKeys, ratelimit::RateLimiter, AppState, ServerConfig};
use ryzanstein_server::chat_template::ChatMessage;
use ryzanstein_server::embeddings::{self, EmbeddingModel};
use ryzanstein_server::engine::{self, EngineOptions, GenEvent, GenRequest};
use ryzanstein_server::models;
use ryzanstein_server::sampler::SamplingParams;
use ryzanstein_server::source::pin::Sha256Pin;

const DEFAULT_MODEL: &str = "bundled://smollm2-135m-instruct";

#[derive(Parser)]
#[command(name = "ryzanstein", version, about = "CPU-first LLM inference server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: text, or json (one object per line with the request span's
    /// fields, its trace_id among them when traces are exported). The filter is RUST_LOG.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RYZANSTEIN_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a completion for one prompt and print it to stdout as it comes.
    Generate(GenerateArgs),
    /// Serve the OpenAI-compatible HTTP API.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Model source: a GGUF file, a Hugging Face directory, hf://org/repo[@rev],
    /// https://host/path/file.gguf, https://host/path/dir/ (a Hugging Face directory) or
    /// bundled://NAME. https:// trusts the webpki roots plus the CA certificates in the PEM file
    /// named by SSL_CERT_FILE.
    #[arg(long, env = "RYZANSTEIN_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// The sha256 the model's file must have (the GGUF file, or model.safetensors of a Hugging
    /// Face directory), 64 hex characters. A download that does not match is deleted.
    #[arg(long, env = "RYZANSTEIN_MODEL_SHA256", value_name = "HEX")]
    model_sha256: Option<String>,
    /// Threads for the model's kernels (default: all available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Context window in tokens (default and maximum: the model's context length).
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Memory of the paged KV cache shared by all sequences, e.g. 512MiB, 2GiB or a byte
    /// count (default: every --parallel sequence's full context, at most 2GiB; pages are
    /// committed as blocks are used). Requests are limited to what it holds.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    kv_cache_memory: Option<u64>,
    /// Do not share the KV cache of common prompt prefixes between requests (outputs are the
    /// same either way; this only costs time).
    #[arg(long)]
    no_prefix_cache: bool,
    /// Speculative decoding by prompt lookup: draft up to N tokens per step from earlier text
    /// of the same sequence, verified in one forward pass (output unchanged; 0: off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    draft_max: usize,
    /// Longest n-gram the prompt lookup matches (shorter ones are tried down to
    /// --draft-ngram-min).
    #[arg(long, value_name = "N", default_value_t = 3)]
    draft_ngram: usize,
    /// Shortest n-gram the prompt lookup matches.
    #[arg(long, value_name = "N", default_value_t = 2)]
    draft_ngram_min: usize,
    /// Quantise the model's projections at load. `ternary`: BitNet's absmean rule per tensor
    /// with int8 activations, on any Llama-family model; for speed measurements only (a model
    /// not trained for it answers nonsense).
    #[arg(long, value_enum, value_name = "TYPE")]
    quantize: Option<models::Quantize>,
    /// The kernels that multiply ternary weights: `i2s` (2-bit codes times int8, maddubs or
    /// VNNI), `lut` (lookup tables, pshufb) or `auto` (the faster here).
    #[arg(long, value_enum, default_value_t = models::TernaryKernel::Auto)]
    ternary_kernel: models::TernaryKernel,
    /// The output matrix's type: `auto` (Q8_0 for a float head of a ternary model), `stored`
    /// or `q8_0` (any float head).
    #[arg(long, value_enum, default_value_t = models::LmHead::Auto)]
    lm_head: models::LmHead,
}

/// A memory size: a byte count with an optional unit (K, M, G, T; KiB/KB and so on, all
/// powers of 1024).
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: write e.g. 512MiB, 2GiB or 1073741824"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("{s:?} must be at least one byte"));
    }
    Ok(bytes as u64)
}

impl ModelArgs {
    /// Engine options from these arguments; `batching` is (max sequences, batch tokens).
    fn engine_options(
        &self,
        queue_capacity: usize,
        batching: (usize, usize),
    ) -> Result<EngineOptions> {
        let (parallel, batch_size) = batching;
        let threads = match self.threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(n) => n,
            None => EngineOptions::default().threads,
        };
        if self.ctx_size == Some(0) {
            bail!("--ctx-size must be at least 1");
        }
        if parallel == 0 {
            bail!("--parallel must be at least 1");
        }
        if batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let model_sha256 = match &self.model_sha256 {
            Some(hex) => Some(Sha256Pin::parse(hex).map_err(|e| anyhow!("--model-sha256: {e}"))?),
            None => None,
        };
        Ok(EngineOptions {
            threads,
            ctx_size: self.ctx_size,
            queue_capacity,
            max_sequences: parallel,
            batch_tokens: batch_size,
            kv_cache_bytes: self.kv_cache_memory,
            prefix_cache: !self.no_prefix_cache,
            draft: (self.draft_max > 0).then_some(engine::draft::DraftOptions {
                max_tokens: self.draft_max,
                ngram: self.draft_ngram.max(1),
                min_ngram: self.draft_ngram_min.clamp(1, self.draft_ngram.max(1)),
            }),
            model_sha256,
            model: models::ModelOptions {
                quantize: self.quantize,
                ternary_kernel: self.ternary_kernel,
                lm_head: self.lm_head,
            },
        })
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt text (special tokens such as <|im_start|> written in it are recognised).
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy (argmax), the default.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k (0 disables).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Top-p (1 disables).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Min-p (0 disables).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Repetition penalty over the last 64 tokens (1 disables).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Seed for sampling (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep generating through end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// At the end, print one JSON line of timings to stderr:
    /// {"prompt_tokens","prompt_ms","gen_tokens","gen_ms","threads"}.
    #[arg(long)]
    timings: bool,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the address is printed to stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Model name for clients (default: the file stem, repository name or bundled name).
    #[arg(long)]
    served_name: Option<String>,
    /// Requests that may wait while --parallel are generating; more get 429.
    #[arg(long, default_value_t = 16)]
    queue_size: usize,
    /// Requests generated at once (continuous batching: one forward pass per step for all of
    /// them, the weights read once).
    #[arg(long, visible_alias = "max-num-seqs", default_value_t = 16)]
    parallel: usize,
    /// Rows of one forward step: a token of every decoding request plus chunks of prompts
    /// (long prompts are spread over several steps so running requests keep streaming).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// HTTP requests handled at once; more get 503.
    #[arg(long, default_value_t = 256)]
    max_concurrent_requests: usize,
    /// Seconds a request may take: one without its response by then gets 504, and generation
    /// (streams too) stops at this deadline, freeing its KV cache.
    #[arg(long, default_value_t = 600)]
    request_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
    /// Also serve POST /v1/embeddings with this sentence-transformers BERT model: a directory
    /// (config.json, model.safetensors, tokenizer.json, modules.json, 1_Pooling/config.json),
    /// hf://org/repo[@rev] or bundled://all-minilm-l6-v2. It runs on --threads threads.
    #[arg(long, env = "RYZANSTEIN_EMBEDDING_MODEL", value_name = "SPEC")]
    embedding_model: Option<String>,
    /// Model name for embedding clients (default: all-MiniLM-L6-v2 for the bundled model, else
    /// the directory or repository name).
    #[arg(long, requires = "embedding_model")]
    embedding_served_name: Option<String>,
    /// An API key clients must send (`Authorization: Bearer KEY` or `X-Api-Key`), for tenant
    /// `default`; repeat for more keys. The probes and /metrics need none.
    #[arg(long, env = "RYZANSTEIN_API_KEY", value_name = "KEY")]
    api_key: Vec<String>,
    /// A file of API keys, one per line: `TENANT KEY` (or a bare `KEY` for tenant `default`);
    /// `#` starts a comment line. Read again when it changes (a mounted Secret); a broken file
    /// keeps the keys read before.
    #[arg(long, value_name = "PATH")]
    api_key_file: Option<std::path::PathBuf>,
    /// Per-tenant limits, JSON: `{"tenants": {"NAME": {"requestsPerMinute": N,
    /// "tokensPerMinute": N, "maxConcurrentRequests": N, "weight": N}}, "default": {...}}`
    /// (every field optional; `default` covers tenants not named). Over a limit a request gets
    /// 429 with Retry-After. Read again when it changes.
    #[arg(long, env = "RYZANSTEIN_TENANT_LIMITS", value_name = "PATH")]
    tenant_limits: Option<std::path::PathBuf>,
    /// Count every caller as this tenant (limits, metrics, fair queue), whatever tenant its API
    /// key names: a server that serves one tenant (the operator sets it).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Generate(_) => "warn",
        Command::Serve(_) => "info",
    };
    // Flushes buffered spans when main returns.
    let _telemetry =
        ryzanstein_server::telemetry::init(default_level, cli.log_format == LogFormat::Json)
            .map_err(anyhow::Error::msg)?;
    match cli.command {
        Command::Generate(args) => generate(args),
        Command::Serve(args) => serve(args),
    }
}

fn generate(args: GenerateArgs) -> Result<()> {
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if !(0.0..=2.0).contains(&args.temperature) {
        bail!("--temperature must be between 0 and 2 (0 is greedy)");
    }
    // One request: room for it in the queue.
    let opts = args.model.engine_options(1, (1, 512))?;
    let engine = engine::load(&args.model.model, &opts)
        .with_context(|| format!("loading the model {:?}", args.model.model))?;
    let handle = engine.handle();
    let prompt_ids = if args.chat {
        handle.encode_chat(&[ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
        }])?
    } else {
        handle.encode_text(&args.prompt)?
    };
    let mut events = handle.submit(GenRequest {
        prompt_ids,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repeat_penalty,
            seed: args.seed,
            ..SamplingParams::default()
        },
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        tenant: Default::default(),
    })?;

    let mut stdout = std::io::stdout().lock();
    let mut ended_with_newline = true;
    while let Some(ev) = events.blocking_recv() {
        match ev {
            GenEvent::Token { text, .. } => {
                if !text.is_empty() {
                    ended_with_newline = text.ends_with('\n');
                    stdout.write_all(text.as_bytes())?;
                    stdout.flush()?;
                }
            }
            GenEvent::Error(message) => bail!("generation failed: {message}"),
            GenEvent::TimedOut { after } => bail!("generation timed out after {after:?}"),
            GenEvent::Done { usage, timings, .. } => {
                if stdout.is_terminal() && !ended_with_newline {
                    writeln!(stdout)?;
                }
                if args.timings {
                    let line = serde_json::json!({
                        "prompt_tokens": timings.prompt_eval_tokens,
                        "prompt_ms": timings.prompt_ms,
                        "gen_tokens": usage.completion_tokens,
                        "gen_ms": timings.gen_ms,
                        "draft_tokens": timings.draft_tokens,
                        "accepted_tokens": timings.accepted_tokens,
                        "threads": opts.threads,
                    });
                    eprintln!("{line}");
                }
                return Ok(());
            }
        }
    }
    bail!("the engine stopped before finishing the request (see the log above)")
}

fn serve(args: ServeArgs) -> Result<()> {
    let opts = args
        .model
        .engine_options(args.queue_size, (args.parallel, args.batch_size))?;
    if args.max_concurrent_requests == 0 {
        bail!("--max-concurrent-requests must be at least 1");
    }
    let served_name = args
        .served_name
        .clone()
        .unwrap_or_else(|| engine::default_served_name(&args.model.model));
    let cfg = ServerConfig {
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        max_concurrent_requests: args.max_concurrent_requests,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        api_keys: if args.api_key.is_empty() && args.api_key_file.is_none() {
            None
        } else {
            let keys = ApiKeys::new(&args.api_key, args.api_key_file.clone())
                .map_err(anyhow::Error::msg)?;
            Some(std::sync::Arc::new(keys))
        },
        limiter: std::sync::Arc::new(
            match &args.tenant_limits {
                Some(path) => RateLimiter::from_file(path.clone()).map_err(anyhow::Error::msg)?,
                None => RateLimiter::default(),
            }
            .with_only_tenant(args.tenant.clone()),
        ),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ryzanstein-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}:{}; pick another --port or --host",
                    args.host, args.port
                )
            })?;
        let addr: SocketAddr = listener.local_addr()?;
        if let Some(keys) = &cfg.api_keys {
            keys.spawn_reloader();
        }
        cfg.limiter.spawn_reloader();
        eprintln!("ryzanstein: listening on http://{addr} (model {served_name:?} loading)");

        let embedding_name = args.embedding_model.as_deref().map(|spec| {
            args.embedding_served_name
                .clone()
                .unwrap_or_else(|| embeddings::default_served_name(spec))
        });
        let state = AppState::with_embeddings(served_name, embedding_name);
        if let Some(spec) = args.embedding_model.clone() {
            let loading = state.clone();
            let threads = opts.threads;
            std::thread::Builder::new()
                .name("ryzanstein-load-embed".into())
                .spawn(move || match EmbeddingModel::load(&spec, threads) {
                    Ok(model) => {
                        loading.set_embedding_model(std::sync::Arc::new(model));
                        tracing::info!("embedding model {spec:?} ready");
                    }
                    Err(e) => {
                        tracing::error!("loading the embedding model {spec:?} failed: {e}");
                        eprintln!("ryzanstein: loading the embedding model {spec:?} failed: {e}");
                        std::process::exit(1);
                    }
                })
                .context("starting the embedding model loading thread")?;
        }
        let loading = state.clone();
        let spec = args.model.model.clone();
        std::thread::Builder::new()
            .name("ryzanstein-load".into())
            .spawn(move || match engine::load(&spec, &opts) {
                Ok(engine) => {
                    loading.set_engine(engine.handle());
                    tracing::info!("ready");
                    eprintln!("ryzanstein: ready");
                }
                Err(e) => {
                    tracing::error!("loading the model {spec:?} failed: {e}");
                    eprintln!("ryzanstein: loading the model {spec:?} failed: {e}");
                    std::process::exit(1);
                }
            })
            .context("starting the model loading thread")?;

        api::serve(listener, state, cfg).await.context("serving")?;
        eprintln!("ryzanstein: stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("3 parsecs")
            .unwrap_err()
            .contains("unknown size unit"));
        assert!(parse_size("0").is_err());
    }
}
