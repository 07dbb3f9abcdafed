//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the engine's counters. The
//! operator's autoscaler reads `ryzanstein_num_requests_running` and
//! `ryzanstein_num_requests_waiting`; the names follow vLLM's (`vllm:num_requests_running`) in
//! Prometheus' naming style.

use std::fmt::Write;

use std::sync::atomic::Ordering;

use super::embeddings::EmbeddingService;
use crate::engine::{Outcome, StatsSnapshot};

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label values are quoted; backslash, quote and newline must be escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Render the metrics of one served model. `stats` is `None` while the model loads (the gauges
/// read 0 and `ryzanstein_model_loaded` says why).
pub fn render(model: &str, stats: Option<&StatsSnapshot>) -> String {
    let m = escape(model);
    let zero = StatsSnapshot {
        waiting: 0,
        running: 0,
        requests: [0; 4],
        prompt_tokens: 0,
        prompt_tokens_cached: 0,
        generation_tokens: 0,
    };
    let s = stats.unwrap_or(&zero);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let base = format!("model_name=\"{m}\"");
    metric(
        "ryzanstein_model_loaded",
        "gauge",
        "1 once the model is loaded and requests are served.",
        &[(base.clone(), stats.is_some() as u64)],
    );
    metric(
        "ryzanstein_num_requests_running",
        "gauge",
        "Requests being generated now.",
        &[(base.clone(), s.running)],
    );
    metric(
        "ryzanstein_num_requests_waiting",
        "gauge",
        "Requests accepted and waiting for the engine.",
        &[(base.clone(), s.waiting)],
    );
    let by_outcome: Vec<(String, u64)> = Outcome::ALL
        .iter()
        .zip(s.requests)
        .map(|(o, v)| (format!("{base},outcome=\"{}\"", o.as_str()), v))
        .collect();
    metric(
        "ryzanstein_requests_total",
        "counter",
        "Requests the engine ended, by outcome (stop, length, cancelled, error).",
        &by_outcome,
    );
    metric(
        "ryzanstein_prompt_tokens_total",
        "counter",
        "Prompt tokens of ended requests.",
        &[(base.clone(), s.prompt_tokens)],
    );
    metric(
        "ryzanstein_prompt_tokens_cached_total",
        "counter",
        "Prompt tokens taken from the prefix cache instead of computed.",
        &[(base.clone(), s.prompt_tokens_cached)],
    );
    metric(
        "ryzanstein_generation_tokens_total",
        "counter",
        "Generated tokens of ended requests.",
        &[(base, s.generation_tokens)],
    );
    out
}

/// The `/v1/embeddings` series of the embedding model `e` (names apart from the chat model's).
pub fn render_embeddings(e: &EmbeddingService) -> String {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let s = &e.stats;
    let base = format!("model_name=\"{}\"", escape(&e.name));
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    metric(
        "ryzanstein_embedding_model_loaded",
        "gauge",
        "1 once the embedding model is loaded and /v1/embeddings is served.",
        &[(base.clone(), e.model().is_some() as u64)],
    );
    metric(
        "ryzanstein_embedding_requests_total",
        "counter",
        "/v1/embeddings requests answered, by outcome (success, error).",
        &[
            (format!("{base},outcome=\"success\""), load(&s.succeeded)),
            (format!("{base},outcome=\"error\""), load(&s.failed)),
        ],
    );
    metric(
        "ryzanstein_embedding_inputs_total",
        "counter",
        "Inputs embedded (one per returned embedding).",
        &[(base.clone(), load(&s.inputs))],
    );
    metric(
        "ryzanstein_embedding_prompt_tokens_total",
        "counter",
        "Tokens of embedded inputs.",
        &[(base, load(&s.prompt_tokens))],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_escaped_labels() {
        let s = StatsSnapshot {
            waiting: 2,
            running: 1,
            requests: [5, 1, 0, 3],
            prompt_tokens: 100,
            prompt_tokens_cached: 40,
            generation_tokens: 7,
        };
        let text = render("a\"b", Some(&s));
        assert!(text.contains("ryzanstein_num_requests_running{model_name=\"a\\\"b\"} 1\n"));
        assert!(text.contains("ryzanstein_num_requests_waiting{model_name=\"a\\\"b\"} 2\n"));
        assert!(
            text.contains("ryzanstein_requests_total{model_name=\"a\\\"b\",outcome=\"error\"} 3\n")
        );
        assert!(text.contains("# TYPE ryzanstein_generation_tokens_total counter\n"));
        assert!(text.contains("ryzanstein_model_loaded{model_name=\"a\\\"b\"} 1\n"));
        let loading = render("m", None);
        assert!(loading.contains("ryzanstein_model_loaded{model_name=\"m\"} 0\n"));
        assert!(loading.contains("ryzanstein_num_requests_running{model_name=\"m\"} 0\n"));
    }

    #[test]
    fn embedding_series() {
        let e = EmbeddingService::new("mini");
        e.stats.succeeded.fetch_add(2, Ordering::Relaxed);
        e.stats.failed.fetch_add(1, Ordering::Relaxed);
        e.stats.prompt_tokens.fetch_add(30, Ordering::Relaxed);
        let text = render_embeddings(&e);
        assert!(text.contains("ryzanstein_embedding_model_loaded{model_name=\"mini\"} 0\n"));
        assert!(text.contains(
            "ryzanstein_embedding_requests_total{model_name=\"mini\",outcome=\"success\"} 2\n"
        ));
        assert!(text.contains(
            "ryzanstein_embedding_requests_total{model_name=\"mini\",outcome=\"error\"} 1\n"
        ));
        assert!(text.contains("ryzanstein_embedding_prompt_tokens_total{model_name=\"mini\"} 30\n"));
        assert!(!text.contains("ryzanstein_num_requests_running"));
    }
}
