//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the engine's counters. The
//! operator's autoscaler reads `ryzanstein_num_requests_running` and
//! `ryzanstein_num_requests_waiting`; the names follow vLLM's (`vllm:num_requests_running`) in
//! Prometheus' naming style.

use std::fmt::Write;

use std::sync::atomic::Ordering;

use super::embeddings::EmbeddingService;
use super::ratelimit::{Reason, TenantSnapshot};
use crate::engine::stats::{HistogramSnapshot, LATENCY_BUCKETS};
use crate::engine::{Outcome, StatsSnapshot};
use crate::models::BLOCK;

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
    let zero = StatsSnapshot::default();
    let s = stats.unwrap_or(&zero);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        family(&mut out, name, kind, help, samples)
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
        "Requests the engine ended, by outcome (stop, length, cancelled, error, timeout).",
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
        &[(base.clone(), s.generation_tokens)],
    );
    metric(
        "ryzanstein_num_preemptions_total",
        "counter",
        "Sequences preempted because the KV cache was full (they resume later).",
        &[(base.clone(), s.preemptions)],
    );
    metric(
        "ryzanstein_kv_cache_blocks",
        "gauge",
        "Blocks of the paged KV cache, by state: used (held by running sequences), cached \
         (unreferenced, keeping a prefix) and free.",
        &[
            (format!("{base},state=\"used\""), s.kv_blocks_used),
            (format!("{base},state=\"cached\""), s.kv_blocks_cached),
            (
                format!("{base},state=\"free\""),
                s.kv_blocks
                    .saturating_sub(s.kv_blocks_used + s.kv_blocks_cached),
            ),
        ],
    );
    let tokens = |blocks: u64| blocks * BLOCK as u64;
    metric(
        "ryzanstein_prefix_cache_queries_total",
        "counter",
        "Prompt tokens in full KV blocks looked up in the prefix cache.",
        &[(base.clone(), tokens(s.prefix.queried))],
    );
    metric(
        "ryzanstein_prefix_cache_hits_total",
        "counter",
        "Of those, tokens found in the prefix cache.",
        &[(base.clone(), tokens(s.prefix.hits))],
    );
    metric(
        "ryzanstein_prefix_cache_evictions_total",
        "counter",
        "Cached KV blocks evicted (least recently used first) to make room.",
        &[(base.clone(), s.prefix.evicted)],
    );
    metric(
        "ryzanstein_spec_decode_num_draft_tokens_total",
        "counter",
        "Speculative decoding: tokens drafted (prompt lookup) by ended requests.",
        &[(base.clone(), s.draft_tokens)],
    );
    metric(
        "ryzanstein_spec_decode_num_accepted_tokens_total",
        "counter",
        "Speculative decoding: drafted tokens the model confirmed (forward steps saved).",
        &[(base.clone(), s.accepted_tokens)],
    );
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    gauge_f64(
        &mut out,
        "ryzanstein_kv_cache_usage_perc",
        "Fraction of the KV cache's blocks held by running sequences (0 to 1).",
        &base,
        ratio(s.kv_blocks_used, s.kv_blocks),
    );
    gauge_f64(
        &mut out,
        "ryzanstein_prefix_cache_hit_rate",
        "Prefix-cache hits over queries since the start, in tokens (0 to 1).",
        &base,
        ratio(s.prefix.hits, s.prefix.queried),
    );
    histogram(
        &mut out,
        "ryzanstein_time_to_first_token_seconds",
        "From a request's acceptance (queue wait included) to its first generated token.",
        &base,
        &s.ttft,
    );
    histogram(
        &mut out,
        "ryzanstein_inter_token_latency_seconds",
        "Between two consecutive generated tokens of a request.",
        &base,
        &s.itl,
    );
    histogram(
        &mut out,
        "ryzanstein_e2e_request_latency_seconds",
        "From a request's acceptance to its last token (finished requests).",
        &base,
        &s.e2e,
    );
    out
}

/// One metric family: its HELP and TYPE lines, then a sample per label set.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

fn gauge_f64(out: &mut String, name: &str, help: &str, labels: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name}{{{labels}}} {v}");
}

fn histogram(out: &mut String, name: &str, help: &str, labels: &str, h: &HistogramSnapshot) {
    histograms(out, name, help, &[(labels.to_owned(), h)]);
}

/// A histogram family with one series per label set.
fn histograms(out: &mut String, name: &str, help: &str, series: &[(String, &HistogramSnapshot)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in series {
        let bounds = LATENCY_BUCKETS.iter().map(|b| b.to_string());
        for (i, le) in bounds.chain(["+Inf".to_string()]).enumerate() {
            let c = h.cumulative.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
    }
}

/// The per-tenant series (tenants as `--api-key-file` names them; `default` without keys).
pub fn render_tenants(model: &str, tenants: &[TenantSnapshot]) -> String {
    let mut out = String::new();
    let label = |t: &TenantSnapshot| {
        format!(
            "model_name=\"{}\",tenant=\"{}\"",
            escape(model),
            escape(&t.tenant)
        )
    };
    let each = |f: &dyn Fn(&TenantSnapshot) -> u64| -> Vec<(String, u64)> {
        tenants.iter().map(|t| (label(t), f(t))).collect()
    };
    family(
        &mut out,
        "ryzanstein_tenant_requests_total",
        "counter",
        "API requests admitted, by tenant.",
        &each(&|t| t.admitted),
    );
    let rejected: Vec<(String, u64)> = tenants
        .iter()
        .flat_map(|t| {
            Reason::ALL
                .iter()
                .zip(t.rejected)
                .map(move |(r, v)| (format!("{},reason=\"{}\"", label(t), r.as_str()), v))
        })
        .collect();
    family(
        &mut out,
        "ryzanstein_tenant_rejected_requests_total",
        "counter",
        "Requests refused by the tenant's limits, by reason (requests_per_minute, \
         tokens_per_minute, concurrency, too_large).",
        &rejected,
    );
    family(
        &mut out,
        "ryzanstein_tenant_prompt_tokens_total",
        "counter",
        "Prompt tokens charged to the tenant.",
        &each(&|t| t.prompt_tokens),
    );
    family(
        &mut out,
        "ryzanstein_tenant_completion_tokens_total",
        "counter",
        "Generated tokens charged to the tenant.",
        &each(&|t| t.completion_tokens),
    );
    family(
        &mut out,
        "ryzanstein_tenant_requests_in_flight",
        "gauge",
        "The tenant's requests whose response has not ended.",
        &each(&|t| t.in_flight as u64),
    );
    let durations: Vec<(String, &HistogramSnapshot)> =
        tenants.iter().map(|t| (label(t), &t.duration)).collect();
    histograms(
        &mut out,
        "ryzanstein_tenant_request_duration_seconds",
        "From admission to the end of the response (a stream's last event), by tenant.",
        &durations,
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
        family(&mut out, name, kind, help, samples)
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
            requests: [5, 1, 0, 3, 2],
            prompt_tokens: 100,
            prompt_tokens_cached: 40,
            generation_tokens: 7,
            kv_blocks: 10,
            kv_blocks_used: 4,
            kv_blocks_cached: 2,
            prefix: crate::engine::PrefixStats {
                queried: 4,
                hits: 1,
                evicted: 0,
            },
            ..StatsSnapshot::default()
        };
        let text = render("a\"b", Some(&s));
        assert!(text.contains("ryzanstein_num_requests_running{model_name=\"a\\\"b\"} 1\n"));
        assert!(text.contains("ryzanstein_num_requests_waiting{model_name=\"a\\\"b\"} 2\n"));
        assert!(
            text.contains("ryzanstein_requests_total{model_name=\"a\\\"b\",outcome=\"error\"} 3\n")
        );
        assert!(text
            .contains("ryzanstein_requests_total{model_name=\"a\\\"b\",outcome=\"timeout\"} 2\n"));
        assert!(text.contains("# TYPE ryzanstein_generation_tokens_total counter\n"));
        assert!(text.contains("ryzanstein_model_loaded{model_name=\"a\\\"b\"} 1\n"));
        assert!(text.contains("ryzanstein_kv_cache_usage_perc{model_name=\"a\\\"b\"} 0.4\n"));
        assert!(text.contains("ryzanstein_prefix_cache_hit_rate{model_name=\"a\\\"b\"} 0.25\n"));
        assert!(
            text.contains("ryzanstein_kv_cache_blocks{model_name=\"a\\\"b\",state=\"free\"} 4\n")
        );
        assert!(text.contains(
            "ryzanstein_time_to_first_token_seconds_bucket{model_name=\"a\\\"b\",le=\"+Inf\"} 0\n"
        ));
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

    #[test]
    fn tenant_series() {
        let t = TenantSnapshot {
            tenant: "team-\"a".into(),
            in_flight: 2,
            admitted: 5,
            rejected: [1, 2, 3, 4],
            prompt_tokens: 70,
            completion_tokens: 30,
            duration: HistogramSnapshot::default(),
        };
        let text = render_tenants("m", &[t]);
        let l = "model_name=\"m\",tenant=\"team-\\\"a\"";
        assert!(
            text.contains(&format!("ryzanstein_tenant_requests_total{{{l}}} 5\n")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "ryzanstein_tenant_rejected_requests_total{{{l},reason=\"tokens_per_minute\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "ryzanstein_tenant_rejected_requests_total{{{l},reason=\"too_large\"}} 4\n"
        )));
        assert!(text.contains(&format!(
            "ryzanstein_tenant_prompt_tokens_total{{{l}}} 70\n"
        )));
        assert!(text.contains(&format!("ryzanstein_tenant_requests_in_flight{{{l}}} 2\n")));
        assert!(text.contains(&format!(
            "ryzanstein_tenant_request_duration_seconds_count{{{l}}} 0\n"
        )));
        assert_eq!(
            text.matches("# TYPE ryzanstein_tenant_request_duration_seconds histogram")
                .count(),
            1
        );
    }
}
