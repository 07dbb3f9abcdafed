//! Ternary GGUF weights: a tiny Llama-architecture model with random ternary weights (one
//! scale per tensor, a power of two so f16 and f32 hold it exactly) written as GGUF TQ2_0,
//! TQ1_0 and bitnet.cpp's I2_S, and as F32 (the same values as floats). The three ternary files
//! load into the same codes and scales, so their logits are bit-identical; against the F32
//! model they differ only by the int8 quantisation of the activations. Rows whose blocks do not
//! share a scale are refused, naming the tensor and the row.

use half::f16;
use ryzanstein_kernels::ternary::codes;
use ryzanstein_server::gguf::{GgmlType, GgufFile};
use ryzanstein_server::models::{self, CausalLm};

mod common;

use common::{Rng, TinyLlama};

const SHAPE: TinyLlama = TinyLlama::WHOLE_BLOCKS;
const VOCAB: usize = 40;

/// A `rows x cols` ternary tensor in `t` (the values are `v * scale`).
fn encode(t: GgmlType, v: &[i8], cols: usize, scale: f32) -> Vec<u8> {
    let d = f16::from_f32(scale);
    match t {
        GgmlType::F32 => v
            .iter()
            .flat_map(|&x| (x as f32 * scale).to_le_bytes())
            .collect(),
        GgmlType::TQ2_0 => v.chunks(cols).flat_map(|r| codes::to_tq2_0(r, d)).collect(),
        GgmlType::TQ1_0 => v.chunks(cols).flat_map(|r| codes::to_tq1_0(r, d)).collect(),
        GgmlType::I2_S => {
            let mut out = vec![0u8; v.len() / 4];
            codes::encode(v, &mut out);
            out.extend_from_slice(&scale.to_le_bytes());
            out.resize(v.len() / 4 + 32, 0);
            out
        }
        other => panic!("no encoder for {other}"),
    }
}

/// The model's GGUF with matrices in `t`; `broken_row`: give one row of the first matrix a
/// second block scale.
fn model_gguf(t: GgmlType, broken_row: bool) -> Vec<u8> {
    let mut rng = Rng(0x5eed_1234_abcd);
    let d = SHAPE.d;
    let mut w = SHAPE.writer();
    w = w.f32_tensor(
        "token_embd.weight",
        &[d as u64, VOCAB as u64],
        &rng.floats(d * VOCAB, 0.0, 1.0),
    );
    w = w.f32_tensor("output_norm.weight", &[d as u64], &rng.floats(d, 1.0, 0.1));
    for i in 0..SHAPE.layers {
        for (name, rows, cols) in SHAPE.projections() {
            let v = rng.ternary(rows * cols);
            let scale = 1.0 / (4u32 << (rng.next() % 3)) as f32;
            let mut data = encode(t, &v, cols, scale);
            if broken_row && i == 0 && name == "ffn_down" {
                // Row 1's second block: another scale.
                let at = cols / 256 * 66 + 66 + 64;
                data[at..at + 2].copy_from_slice(&f16::from_f32(scale * 2.0).to_le_bytes());
            }
            w = w.tensor(
                &format!("blk.{i}.{name}.weight"),
                &[cols as u64, rows as u64],
                t,
                data,
            );
        }
        w = w.f32_tensor(
            &format!("blk.{i}.attn_norm.weight"),
            &[d as u64],
            &rng.floats(d, 1.0, 0.1),
        );
        w = w.f32_tensor(
            &format!("blk.{i}.ffn_norm.weight"),
            &[d as u64],
            &rng.floats(d, 1.0, 0.1),
        );
    }
    w.to_bytes()
}

fn load(
    bytes: &[u8],
) -> (
    tempfile::TempDir,
    ryzanstein_server::Result<Box<dyn CausalLm>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, bytes).unwrap();
    let model = GgufFile::open(&path).and_then(|g| models::load_gguf(&g, 2));
    (dir, model)
}

fn logits(model: &dyn CausalLm) -> Vec<Vec<f32>> {
    let ids = [3u32, 17, 5, 39, 0, 22];
    let mut state = model.new_state(ids.len());
    ids.iter()
        .map(|id| model.forward(&mut state, &[*id]).unwrap())
        .collect()
}

#[test]
fn tq2_0_tq1_0_and_i2_s_load_to_the_same_ternary_model() {
    let mut got = Vec::new();
    for t in [GgmlType::TQ2_0, GgmlType::TQ1_0, GgmlType::I2_S] {
        let (_dir, model) = load(&model_gguf(t, false));
        got.push((t, logits(model.unwrap().as_ref())));
    }
    for (t, l) in &got[1..] {
        assert_eq!(l, &got[0].1, "{t} differs from TQ2_0");
    }
    let (_dir, f32_model) = load(&model_gguf(GgmlType::F32, false));
    let want = logits(f32_model.unwrap().as_ref());
    for (pos, (a, b)) in got[0].1.iter().zip(&want).enumerate() {
        let range = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= 0.05 * range,
            "position {pos}: ternary vs f32 weights differ by {diff} (logits up to {range})"
        );
    }
}

#[test]
fn a_row_with_two_block_scales_is_refused() {
    let (_dir, model) = load(&model_gguf(GgmlType::TQ2_0, true));
    let err = model.err().expect("must fail").to_string();
    assert!(
        err.contains("blk.0.ffn_down.weight") && err.contains("row 1") && err.contains("one scale"),
        "{err}"
    );
}
