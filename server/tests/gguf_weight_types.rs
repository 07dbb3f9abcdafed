//! The GGUF forward pass over every weight type the issue names (F32, F16, Q8_0, Q4_0, Q4_1):
//! the tiny Hugging Face fixture (tests/data/hf_tiny_llama) is converted here into GGUF files
//! the way llama.cpp's converter lays them out (ggml dimension order, Q/K rows permuted for
//! adjacent-pair RoPE, quantised with ggml's reference rounding), and each must reproduce the
//! fixture's reference logits within that type's quantisation error. Since 4-bit weights move
//! these random weights' logits a lot, each quantised model is also compared with an F32 model
//! of its own dequantised weights: the only difference left is the Q8 activation quantisation,
//! so a wrong block layout, permutation or RoPE style stands out.

mod common;

use ryzanstein_kernels::formats::{BlockQ4_0, BlockQ4_1, BlockQ8_0};
use ryzanstein_kernels::scalar::quantize::{
    quantize_row_q4_0, quantize_row_q4_1, quantize_row_q8_0_ref,
};
use ryzanstein_server::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use ryzanstein_server::models::{self, CausalLm};
use ryzanstein_server::safetensors_dir::HfDir;
use serde_json::Value as Json;

fn encode(t: GgmlType, x: &[f32]) -> Vec<u8> {
    match t {
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => x
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => {
            let mut b: Vec<BlockQ8_0> = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
            quantize_row_q8_0_ref(x, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        GgmlType::Q4_0 => {
            let mut b: Vec<BlockQ4_0> = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
            quantize_row_q4_0(x, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        GgmlType::Q4_1 => {
            let mut b: Vec<BlockQ4_1> = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
            quantize_row_q4_1(x, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        other => panic!("no encoder for {other:?}"),
    }
}

/// Hugging Face rotate-half rows to GGUF's adjacent pairs: within each head, row `2i + j`
/// of the result is row `j * hd/2 + i` of the input.
fn permute_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let (dst, src) = (h * hd + 2 * i + j, h * hd + j * hd / 2 + i);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Quantise to `t` and back (what a model with `t` weights really multiplies by).
fn round_trip(t: GgmlType, x: &[f32]) -> Vec<f32> {
    use ryzanstein_kernels::scalar::quantize::{
        dequantize_row_q4_0, dequantize_row_q4_1, dequantize_row_q8_0,
    };
    let bytes = encode(t, x);
    let mut out = vec![0.0f32; x.len()];
    match t {
        GgmlType::Q8_0 => dequantize_row_q8_0(bytemuck::cast_slice(&bytes), &mut out),
        GgmlType::Q4_0 => dequantize_row_q4_0(bytemuck::cast_slice(&bytes), &mut out),
        GgmlType::Q4_1 => dequantize_row_q4_1(bytemuck::cast_slice(&bytes), &mut out),
        _ => out.copy_from_slice(x),
    }
    out
}

/// A GGUF of the fixture with matrices in `wtype`; `dequantised_from`: instead, F32 matrices
/// holding the values a `dequantised_from` model would use.
fn to_gguf(hf: &HfDir, wtype: GgmlType, dequantised_from: Option<GgmlType>) -> Vec<u8> {
    let c = hf.config();
    let u = |k: &str| c[k].as_u64().unwrap() as u32;
    let mut w = GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("llama.embedding_length", Value::U32(u("hidden_size")))
        .kv("llama.block_count", Value::U32(u("num_hidden_layers")))
        .kv(
            "llama.feed_forward_length",
            Value::U32(u("intermediate_size")),
        )
        .kv(
            "llama.attention.head_count",
            Value::U32(u("num_attention_heads")),
        )
        .kv(
            "llama.attention.head_count_kv",
            Value::U32(u("num_key_value_heads")),
        )
        .kv("llama.attention.key_length", Value::U32(u("head_dim")))
        .kv(
            "llama.context_length",
            Value::U32(u("max_position_embeddings")),
        )
        .kv(
            "llama.rope.freq_base",
            Value::F32(c["rope_theta"].as_f64().unwrap() as f32),
        )
        .kv(
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(c["rms_norm_eps"].as_f64().unwrap() as f32),
        );
    let add =
        |w: GgufWriter, gguf_name: &str, hf_name: &str, permute: Option<usize>, t: GgmlType| {
            let tensor = hf.tensor(hf_name).unwrap();
            let mut x = tensor.to_f32_vec();
            let dims: Vec<u64> = tensor.shape.iter().rev().map(|d| *d as u64).collect();
            if let Some(heads) = permute {
                x = permute_rows(&x, heads, tensor.shape[1]);
            }
            if let (Some(q), true) = (dequantised_from, tensor.shape.len() == 2) {
                x = round_trip(q, &x);
            }
            w.tensor(gguf_name, &dims, t, encode(t, &x))
        };
    let (nh, nkv) = (
        u("num_attention_heads") as usize,
        u("num_key_value_heads") as usize,
    );
    w = add(
        w,
        "token_embd.weight",
        "model.embed_tokens.weight",
        None,
        wtype,
    );
    w = add(
        w,
        "output_norm.weight",
        "model.norm.weight",
        None,
        GgmlType::F32,
    );
    for i in 0..u("num_hidden_layers") {
        let p = format!("model.layers.{i}.");
        let b = format!("blk.{i}.");
        for (g, h, perm) in [
            ("attn_q", "self_attn.q_proj", Some(nh)),
            ("attn_k", "self_attn.k_proj", Some(nkv)),
            ("attn_v", "self_attn.v_proj", None),
            ("attn_output", "self_attn.o_proj", None),
            ("ffn_gate", "mlp.gate_proj", None),
            ("ffn_up", "mlp.up_proj", None),
            ("ffn_down", "mlp.down_proj", None),
        ] {
            w = add(
                w,
                &format!("{b}{g}.weight"),
                &format!("{p}{h}.weight"),
                perm,
                wtype,
            );
        }
        w = add(
            w,
            &format!("{b}attn_norm.weight"),
            &format!("{p}input_layernorm.weight"),
            None,
            GgmlType::F32,
        );
        w = add(
            w,
            &format!("{b}ffn_norm.weight"),
            &format!("{p}post_attention_layernorm.weight"),
            None,
            GgmlType::F32,
        );
    }
    w.to_bytes()
}

fn last_logits(model: &dyn CausalLm, ids: &[u32]) -> Vec<f32> {
    let mut state = model.new_state(ids.len());
    model.forward(&mut state, ids).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn every_weight_type_reproduces_the_reference() {
    let dir = common::test_data("hf_tiny_llama");
    let hf = HfDir::open(&dir).unwrap();
    let reference: Json = common::read_json(&dir.join("reference.json"));
    let seqs: Vec<(Vec<u32>, Vec<f32>)> = reference["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let ids = s["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let last = s["logits"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .as_array()
                .unwrap();
            (
                ids,
                last.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
            )
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let open = |name: &str, bytes: Vec<u8>| {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        models::load_gguf(&GgufFile::open(&path).unwrap(), 1).unwrap()
    };
    // (type, budget against the float64 reference, budget against its own dequantised weights).
    // The logits have an RMS of ~4.5; the f16 KV cache alone costs ~5e-3.
    for (t, vs_reference, vs_dequantised) in [
        (GgmlType::F32, 1e-2, 0.0),
        (GgmlType::F16, 2e-2, 0.0),
        (GgmlType::Q8_0, 0.4, 0.3),
        (GgmlType::Q4_1, 4.0, 0.3),
        (GgmlType::Q4_0, 4.0, 0.3),
    ] {
        let model = open(&format!("tiny-{}.gguf", t.name()), to_gguf(&hf, t, None));
        let exact = open(
            &format!("tiny-{}-dequantised.gguf", t.name()),
            to_gguf(&hf, GgmlType::F32, Some(t)),
        );
        let (mut worst_ref, mut worst_deq) = (0.0f32, 0.0f32);
        for (ids, want) in &seqs {
            let got = last_logits(model.as_ref(), ids);
            worst_ref = worst_ref.max(max_diff(&got, want));
            worst_deq = worst_deq.max(max_diff(&got, &last_logits(exact.as_ref(), ids)));
        }
        eprintln!("{}: max |logit diff| {worst_ref} against the reference, {worst_deq} against its dequantised weights", t.name());
        assert!(
            worst_ref <= vs_reference,
            "{} weights: {worst_ref} from the reference, over {vs_reference}",
            t.name()
        );
        if vs_dequantised > 0.0 {
            assert!(
                worst_deq <= vs_dequantised,
                "{} weights: {worst_deq} from its dequantised model, over {vs_dequantised}",
                t.name()
            );
        }
    }
}
