//! Llama-family checkpoints in Hugging Face format (`config.json` + safetensors): the
//! hyper-parameters from `config.json`, the `model.layers.N.*` tensors copied into aligned
//! buffers in their own dtype (f32, f16 or bf16), and rotary embedding in the Hugging Face
//! (GPT-NeoX, "rotate half") layout, since these checkpoints are not permuted the way GGUF's are.
//!
//! `BitNetForCausalLM` (BitNet b1.58) is the same layout plus `attn_sub_norm` and
//! `ffn_sub_norm`, a squared-ReLU gate, and ternary projections: packed (`uint8`, four rows
//! per byte, with `weight_scale`; transformers' offline `bitlinear` format) or float weights
//! ternarised at load with BitNet's per-tensor absmean rule (its online mode).

use super::llama::{FfnAct, LayerNorms, Llama, LlamaConfig};
use super::weights::Weight;
use crate::safetensors_dir::HfDir;
use crate::{Error, Result};
use ryzanstein_kernels::ops::{Rope, RopeStyle};
use ryzanstein_kernels::ternary::codes;
use serde_json::Value;

/// `architectures` values this loader reads.
pub const HF_ARCHITECTURES: &[&str] = &[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "BitNetForCausalLM",
];

const BITNET: &str = "BitNetForCausalLM";

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
    // transformers 5 writes `rope_parameters: {rope_theta, rope_type}`; older configs have
    // `rope_theta` and `rope_scaling`.
    let freq_base = opt_f32(cfg, "rope_theta")
        .or_else(|| {
            cfg.get("rope_parameters")
                .and_then(|r| opt_f32(r, "rope_theta"))
        })
        .unwrap_or(10000.0);
    let ffn_act = match cfg.get("hidden_act").and_then(Value::as_str) {
        None | Some("silu") | Some("swish") => FfnAct::Silu,
        Some("relu2") => FfnAct::Relu2,
        Some(other) => {
            return Err(bad(
                dir,
                format!("hidden_act {other:?} is not supported (supported: silu, relu2)"),
            ))
        }
    };
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
        ffn_act,
    };
    Ok(cfg)
}

/// Load a Llama-family checkpoint directory.
pub fn load(dir: &HfDir, threads: usize, opts: &super::ModelOptions) -> Result<Llama> {
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
    let norm_of = |name: &str, len: usize| -> Result<Vec<f32>> {
        let t = dir.tensor(name)?;
        if t.shape != [len] {
            return Err(Error::model_file(
                &path,
                format!("tensor {name:?} has shape {:?}, expected [{len}]", t.shape),
            ));
        }
        Ok(t.to_f32_vec())
    };
    let norm = |name: &str| norm_of(name, cfg.n_embd);
    let bitnet = cfg.architecture == BITNET;
    // A projection: as stored, or (BitNet) ternary.
    let proj = |name: &str, rows: usize, cols: usize| -> Result<Weight> {
        match bitnet {
            true => ternary(dir, name, rows, cols),
            false => mat(name, rows, cols),
        }
    };
    let (d, q, kv, ff) = (
        cfg.n_embd,
        cfg.n_head * cfg.head_dim,
        cfg.n_head_kv * cfg.head_dim,
        cfg.n_ff,
    );
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let n = |s: &str| format!("model.layers.{i}.{s}.weight");
        let weights = [
            proj(&n("self_attn.q_proj"), q, d)?,
            proj(&n("self_attn.k_proj"), kv, d)?,
            proj(&n("self_attn.v_proj"), kv, d)?,
            proj(&n("self_attn.o_proj"), d, q)?,
            proj(&n("mlp.gate_proj"), ff, d)?,
            proj(&n("mlp.up_proj"), ff, d)?,
            proj(&n("mlp.down_proj"), d, ff)?,
        ];
        let norms = LayerNorms {
            attn: norm(&n("input_layernorm"))?,
            ffn: norm(&n("post_attention_layernorm"))?,
            attn_sub: bitnet
                .then(|| norm_of(&n("self_attn.attn_sub_norm"), q))
                .transpose()?,
            ffn_sub: bitnet
                .then(|| norm_of(&n("mlp.ffn_sub_norm"), ff))
                .transpose()?,
        };
        layers.push((weights, norms));
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
    Llama::from_parts(cfg, tok_embd, layers, output_norm, output, threads, opts)
}

/// A BitNet projection `name` (`rows x cols`) as ternary codes with one scale for the tensor:
/// transformers' packed form (`uint8 [rows / 4, cols]` plus `weight_scale`, the inverse of the
/// scale), or float weights ternarised with BitNet's absmean rule (`s = mean|W|` over the
/// tensor).
fn ternary(dir: &HfDir, name: &str, rows: usize, cols: usize) -> Result<Weight> {
    let path = dir.dir();
    let err = |what: String| Error::model_file(path, format!("tensor {name:?}: {what}"));
    if !cols.is_multiple_of(ryzanstein_kernels::ternary::BLOCK) {
        return Err(err(format!(
            "ternary rows of {cols} weights are not a whole number of {}-weight blocks",
            ryzanstein_kernels::ternary::BLOCK
        )));
    }
    let (_, dtype, shape, data) = dir.raw_tensor(name)?;
    let mut code_bytes = vec![0u8; rows * cols / 4];
    let scale = if dtype == "U8" {
        if shape != [rows / 4, cols] || !rows.is_multiple_of(4) {
            return Err(err(format!(
                "packed ternary weights have shape {shape:?}, expected [{}, {cols}]",
                rows / 4
            )));
        }
        let scale_name = format!("{}weight_scale", name.trim_end_matches("weight"));
        let ws = dir.tensor(&scale_name)?.to_f32_vec();
        let [ws] = ws[..] else {
            return Err(err(format!(
                "{scale_name:?} has {} values, expected 1",
                ws.len()
            )));
        };
        if !(ws.is_finite() && ws > 0.0) {
            return Err(err(format!(
                "{scale_name:?} is {ws}; it must be a positive number"
            )));
        }
        if !codes::valid(data) {
            return Err(err(
                "a packed code is 3, which stands for no ternary value; the file is corrupt".into(),
            ));
        }
        codes::from_hf_packed(data, rows, cols, &mut code_bytes);
        1.0 / ws
    } else {
        let t = dir.tensor(name)?;
        if t.shape != [rows, cols] {
            return Err(err(format!(
                "shape {:?}, expected [{rows}, {cols}]",
                t.shape
            )));
        }
        codes::ternarize(&t.to_f32_vec(), rows, cols, cols, &mut code_bytes)
    };
    Weight::from_ternary(rows, cols, &code_bytes, vec![scale; rows]).map_err(|e| err(e.to_string()))
}
