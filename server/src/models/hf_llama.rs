//! Llama-family checkpoints in Hugging Face format (`config.json` + safetensors): the
//! hyper-parameters from `config.json`, the `model.layers.N.*` tensors copied into aligned
//! buffers in their own dtype (f32, f16 or bf16), and rotary embedding in the Hugging Face
//! (GPT-NeoX, "rotate half") layout, since these checkpoints are not permuted the way GGUF's are.

use super::llama::{Llama, LlamaConfig};
use super::weights::Weight;
use crate::safetensors_dir::HfDir;
use crate::{Error, Result};
use ryzanstein_kernels::ops::{Rope, RopeStyle};
use serde_json::Value;

/// `architectures` values this loader reads.
pub const HF_ARCHITECTURES: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM"];

fn bad(dir: &HfDir, what: String) -> Error {
    Error::model_file(dir.dir().join("config.json"), what)
}

fn usize_key(dir: &HfDir, cfg: &Value, key: &str) -> Result<usize> {
    cfg.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| bad(dir, format!("missing or non-integer {key:?}")))
}

fn opt_usize(cfg: &Value, key: &str) -> Option<usize> {
    cfg.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

fn opt_f32(cfg: &Value, key: &str) -> Option<f32> {
    cfg.get(key).and_then(Value::as_f64).map(|v| v as f32)
}

/// Llama 3 "rope_scaling": per-pair frequency divisors (1 for high frequencies, `factor` for
/// low ones, a smooth blend between), in the form ggml's `rope_freqs` tensor holds them.
fn llama3_freq_factors(rs: &Value, n_dims: usize, base: f32) -> Option<Vec<f32>> {
    let factor = rs.get("factor")?.as_f64()?;
    let low = rs.get("low_freq_factor")?.as_f64()?;
    let high = rs.get("high_freq_factor")?.as_f64()?;
    let orig = rs.get("original_max_position_embeddings")?.as_f64()?;
    let (low_wavelen, high_wavelen) = (orig / low, orig / high);
    Some(
        (0..n_dims / 2)
            .map(|i| {
                let freq = 1.0 / (base as f64).powf(2.0 * i as f64 / n_dims as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor as f32
                } else {
                    let smooth = (orig / wavelen - low) / (high - low);
                    (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                }
            })
            .collect(),
    )
}

/// The hyper-parameters of a Llama-family `config.json`.
pub fn config(dir: &HfDir) -> Result<LlamaConfig> {
    let cfg = dir.config();
    let archs: Vec<&str> = cfg
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(arch) = archs.iter().find(|a| HF_ARCHITECTURES.contains(a)) else {
        return Err(bad(
            dir,
            format!("architectures {archs:?} are not supported (supported: {HF_ARCHITECTURES:?})"),
        ));
    };
    let n_embd = usize_key(dir, cfg, "hidden_size")?;
    let n_head = usize_key(dir, cfg, "num_attention_heads")?;
    let head_dim = opt_usize(cfg, "head_dim").unwrap_or(n_embd / n_head.max(1));
    let freq_base = opt_f32(cfg, "rope_theta").unwrap_or(10000.0);
    let (mut freq_scale, mut freq_factors) = (1.0, vec![]);
    match cfg.get("rope_scaling") {
        None | Some(Value::Null) => {}
        Some(rs) => {
            let kind = rs
                .get("rope_type")
                .or_else(|| rs.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("");
            match kind {
                "default" => {}
                "linear" => {
                    let f = rs
                        .get("factor")
                        .and_then(Value::as_f64)
                        .ok_or_else(|| bad(dir, "linear rope_scaling without a factor".into()))?;
                    freq_scale = 1.0 / f as f32;
                }
                "llama3" => {
                    freq_factors = llama3_freq_factors(rs, head_dim, freq_base)
                        .ok_or_else(|| bad(dir, format!("incomplete llama3 rope_scaling {rs}")))?;
                }
                other => {
                    return Err(bad(dir, format!("rope_scaling type {other:?} is not supported (supported: linear, llama3)")));
                }
            }
        }
    }
    let cfg = LlamaConfig {
        architecture: arch.to_string(),
        n_layer: usize_key(dir, cfg, "num_hidden_layers")?,
        n_embd,
        n_ff: usize_key(dir, cfg, "intermediate_size")?,
        n_head,
        n_head_kv: opt_usize(cfg, "num_key_value_heads").unwrap_or(n_head),
        head_dim,
        rms_eps: opt_f32(cfg, "rms_norm_eps").unwrap_or(1e-6),
        rope: Rope {
            style: RopeStyle::Neox,
            n_dims: head_dim,
            freq_base,
            freq_scale,
            freq_factors,
        },
        context_length: opt_usize(cfg, "max_position_embeddings").unwrap_or(2048),
        vocab_size: usize_key(dir, cfg, "vocab_size")?,
    };
    Ok(cfg)
}

/// Load a Llama-family checkpoint directory.
pub fn load(dir: &HfDir, threads: usize) -> Result<Llama> {
    let cfg = config(dir)?;
    let path = dir.dir().to_path_buf();
    let mat = |name: &str, rows: usize, cols: usize| -> Result<Weight> {
        let t = dir.tensor(name)?;
        if t.shape != [rows, cols] {
            return Err(Error::model_file(
                &path,
                format!("tensor {name:?} has shape {:?}, expected [{rows}, {cols}] for this config.json", t.shape),
            ));
        }
        Weight::owned(t.dtype, rows, cols, t.data)
            .map_err(|e| Error::model_file(&path, format!("tensor {name:?}: {e}")))
    };
    let norm = |name: &str| -> Result<Vec<f32>> {
        let t = dir.tensor(name)?;
        if t.shape != [cfg.n_embd] {
            return Err(Error::model_file(
                &path,
                format!(
                    "tensor {name:?} has shape {:?}, expected [{}]",
                    t.shape, cfg.n_embd
                ),
            ));
        }
        Ok(t.to_f32_vec())
    };
    let (d, q, kv, ff) = (
        cfg.n_embd,
        cfg.n_head * cfg.head_dim,
        cfg.n_head_kv * cfg.head_dim,
        cfg.n_ff,
    );
    let mut layers = Vec::with_capacity(cfg.n_layer);
    let mut norms = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let n = |s: &str| format!("model.layers.{i}.{s}.weight");
        layers.push([
            mat(&n("self_attn.q_proj"), q, d)?,
            mat(&n("self_attn.k_proj"), kv, d)?,
            mat(&n("self_attn.v_proj"), kv, d)?,
            mat(&n("self_attn.o_proj"), d, q)?,
            mat(&n("mlp.gate_proj"), ff, d)?,
            mat(&n("mlp.up_proj"), ff, d)?,
            mat(&n("mlp.down_proj"), d, ff)?,
        ]);
        norms.push((
            norm(&n("input_layernorm"))?,
            norm(&n("post_attention_layernorm"))?,
        ));
    }
    let tok_embd = mat("model.embed_tokens.weight", cfg.vocab_size, d)?;
    let tied = dir
        .config()
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let output = if dir.has_tensor("lm_head.weight") {
        Some(mat("lm_head.weight", cfg.vocab_size, d)?)
    } else if tied {
        None
    } else {
        return Err(Error::model_file(
            &path,
            "no lm_head.weight and tie_word_embeddings is not true",
        ));
    };
    let output_norm = norm("model.norm.weight")?;
    Llama::from_parts(cfg, tok_embd, layers, norms, output_norm, output, threads)
}
