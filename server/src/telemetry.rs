//! Logs and traces.
//!
//! Logs go to stderr, filtered by `RUST_LOG`, as text or as JSON lines (`--log-format json`:
//! the event's fields flattened, and the request span's fields, `trace_id` among them when
//! traces are exported). Traces are exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (spans go to its `/v1/traces`) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) is set, as the OpenTelemetry
//! specification has it: `OTEL_EXPORTER_OTLP_PROTOCOL` `http/protobuf` (the default) or
//! `http/json`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` (default `ryzanstein`),
//! `OTEL_BSP_SCHEDULE_DELAY` and the other batch settings. gRPC export is not built in.
//!
//! Every HTTP request is a server span whose parent is the caller's W3C `traceparent` (see
//! [`crate::api`]); a generation request's span has children for validation and tokenizing, the
//! wait in the queue, the prompt's prefill and the decode (see [`record_generation`]).

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

use crate::engine::Timings;

/// The instrumentation scope of our spans.
const SCOPE: &str = "ryzanstein";

/// Whether traces are to be exported (an OTLP endpoint is configured).
fn export_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The OTLP protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`.
fn protocol() -> Result<Protocol, String> {
    let var = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    match var.as_str() {
        "" | "http/protobuf" => Ok(Protocol::HttpBinary),
        "http/json" => Ok(Protocol::HttpJson),
        other => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL is {other:?}; this server exports over http/protobuf \
             or http/json (point it at the collector's HTTP port, 4318 by default)"
        )),
    }
}

/// The OTLP exporter's HTTP client: the same reqwest as the rest of the server, blocking (the
/// batch span processor runs on its own thread).
#[derive(Debug, Clone)]
struct OtlpHttp(reqwest::blocking::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self.0.request(parts.method, parts.uri.to_string());
        for (name, value) in &parts.headers {
            req = req.header(name, value);
        }
        let resp = req.body(body.to_vec()).send()?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes()?;
        let mut out = http::Response::builder().status(status).body(bytes)?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// Keeps the trace exporter alive; dropping it flushes the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("ryzanstein: flushing traces failed: {e}");
            }
        }
    }
}

/// Sets up logging (text, or JSON lines with `json`) and tracing, when an OTLP endpoint is
/// configured, for the process.
pub fn init(default_level: &str, json: bool) -> Result<Telemetry, String> {
    // RUST_LOG filters the log lines only, not the exported spans.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    // One of the two is Some; a None layer does nothing.
    let logs = tracing_subscriber::Layer::and_then(text, json).with_filter(filter);
    if !export_configured() {
        tracing_subscriber::registry().with(logs).init();
        return Ok(Telemetry { provider: None });
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?)
        .with_http_client(OtlpHttp(client))
        .build()
        .map_err(|e| format!("cannot set up the OTLP trace exporter: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "ryzanstein".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // Only our spans (the HTTP request span among them) are exported.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SCOPE))
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.is_span() && m.target().starts_with("ryzanstein")
        }));
    tracing_subscriber::registry().with(logs).with(otel).init();
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The caller's trace context from a request's W3C `traceparent` / `tracestate` headers.
pub fn remote_parent(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    })
}

/// The spans of one generation under `parent` (the request's span), from its engine timings:
/// `queue` from `submitted`, then `prefill`, then `decode`. (The engine runs every sequence in
/// shared batched steps, so these are spans of the request's time, not of its own work.)
pub fn record_generation(parent: &Context, submitted: SystemTime, t: &Timings, tokens: usize) {
    if !parent.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer(SCOPE);
    let ms = |x: f64| Duration::from_secs_f64(x.max(0.0) / 1e3);
    let queued = submitted + ms(t.queue_ms);
    let prefilled = queued + ms(t.prompt_ms);
    let decoded = prefilled + ms(t.gen_ms);
    let phases = [
        ("queue", submitted, queued, vec![]),
        (
            "prefill",
            queued,
            prefilled,
            vec![KeyValue::new(
                "ryzanstein.prompt_eval_tokens",
                t.prompt_eval_tokens as i64,
            )],
        ),
        (
            "decode",
            prefilled,
            decoded,
            vec![KeyValue::new("gen_ai.usage.output_tokens", tokens as i64)],
        ),
    ];
    for (name, start, end, attributes) in phases {
        let mut span = tracer
            .span_builder(name)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&tracer, parent);
        span.end_with_timestamp(end);
    }
}
