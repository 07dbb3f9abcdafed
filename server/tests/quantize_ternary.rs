//! `--quantize ternary` and the ternary kernels on tiny random Llama models written as F32
//! GGUF files:
//! - rows of whole 128-weight blocks: ternarised at load, the model gives bit for bit the logits
//!   of an I2_S file holding the same ternarisation (computed here, independently: BitNet's
//!   absmean per tensor);
//! - rows that are not whole blocks (hidden 96, feed-forward 160), padded with zero weights at
//!   load: the logits are those of an F32 file holding the ternary values times their scale,
//!   up to the int8 quantisation of the activations (which the F32 model does not do);
//! - the lookup-table kernels give the I2S kernels' logits bit for bit, padded or not.

use ryzanstein_kernels::ternary::codes;
use ryzanstein_server::gguf::{GgmlType, GgufFile};
use ryzanstein_server::models::{self, CausalLm, LmHead, ModelOptions, Quantize, TernaryKernel};

mod common;

use common::{Rng, TinyLlama};

const VOCAB: usize = 40;

/// How the projections are written.
#[derive(Clone, Copy, PartialEq)]
enum Proj {
    /// The random float weights.
    Float,
    /// Their ternarisation as F32 values `v * s`.
    TernaryF32,
    /// Their ternarisation as I2_S codes with the f32 scale `s`.
    I2S,
}

/// BitNet's absmean rule over a whole tensor: the values and the scale.
fn absmean(w: &[f32]) -> (Vec<i8>, f32) {
    let s = ((w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len() as f64) as f32).max(1e-5);
    let v = w
        .iter()
        .map(|x| (x / s).round_ties_even().clamp(-1.0, 1.0) as i8)
        .collect();
    (v, s)
}

fn model_gguf(shape: &TinyLlama, proj: Proj) -> Vec<u8> {
    let d = shape.d;
    let mut rng = Rng(0x07e5_70fa_b1e5);
    let mut w = shape.writer();
    w = w.f32_tensor(
        "token_embd.weight",
        &[d as u64, VOCAB as u64],
        &rng.floats(d * VOCAB, 0.0, 1.0),
    );
    w = w.f32_tensor("output_norm.weight", &[d as u64], &rng.floats(d, 1.0, 0.1));
    for i in 0..shape.layers {
        for (name, rows, cols) in shape.projections() {
            let spread = 1.0 / (cols as f32).sqrt() * 2.0;
            let f = rng.floats(rows * cols, 0.0, spread);
            let (v, s) = absmean(&f);
            let name = format!("blk.{i}.{name}.weight");
            let dims = [cols as u64, rows as u64];
            w = match proj {
                Proj::Float => w.f32_tensor(&name, &dims, &f),
                Proj::TernaryF32 => {
                    let t: Vec<f32> = v.iter().map(|&x| x as f32 * s).collect();
                    w.f32_tensor(&name, &dims, &t)
                }
                Proj::I2S => {
                    let mut data = vec![0u8; v.len() / 4];
                    codes::encode(&v, &mut data);
                    data.extend_from_slice(&s.to_le_bytes());
                    data.resize(v.len() / 4 + 32, 0);
                    w.tensor(&name, &dims, GgmlType::I2_S, data)
                }
            };
        }
        for norm in ["attn_norm", "ffn_norm"] {
            w = w.f32_tensor(
                &format!("blk.{i}.{norm}.weight"),
                &[d as u64],
                &rng.floats(d, 1.0, 0.1),
            );
        }
    }
    w.to_bytes()
}

fn load(bytes: &[u8], opts: ModelOptions) -> Box<dyn CausalLm> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, bytes).unwrap();
    let g = GgufFile::open(&path).unwrap();
    models::load_gguf_with(&g, 2, &opts).expect("load the model")
}

fn opts(quantize: Option<Quantize>, kernel: TernaryKernel) -> ModelOptions {
    ModelOptions {
        quantize,
        ternary_kernel: kernel,
        lm_head: LmHead::Stored,
    }
}

/// Logits of a whole prompt and then one token at a time, at every position.
fn logits(model: &dyn CausalLm) -> Vec<Vec<f32>> {
    let ids = [3u32, 17, 5, 39, 0, 22, 8, 8];
    let mut out = Vec::new();
    let mut state = model.new_state(ids.len() * 2);
    out.push(model.forward(&mut state, &ids[..5]).unwrap());
    for id in &ids[5..] {
        out.push(model.forward(&mut state, &[*id]).unwrap());
    }
    out
}

const PADDED: TinyLlama = TinyLlama {
    d: 96,
    ff: 160,
    heads: 3,
    kv_heads: 1,
    head_dim: 32,
    layers: 2,
};

#[test]
fn ternarised_at_load_equals_the_i2_s_file_of_the_same_ternarisation() {
    let float = model_gguf(&TinyLlama::WHOLE_BLOCKS, Proj::Float);
    let i2s = model_gguf(&TinyLlama::WHOLE_BLOCKS, Proj::I2S);
    let want = logits(load(&i2s, opts(None, TernaryKernel::I2s)).as_ref());
    for kernel in [TernaryKernel::I2s, TernaryKernel::Lut] {
        let got = logits(load(&float, opts(Some(Quantize::Ternary), kernel)).as_ref());
        assert_eq!(got, want, "{kernel:?}");
        let from_file = logits(load(&i2s, opts(None, kernel)).as_ref());
        assert_eq!(from_file, want, "{kernel:?} on the I2_S file");
    }
    // And it is not the float model.
    let dense = logits(load(&float, opts(None, TernaryKernel::I2s)).as_ref());
    assert_ne!(dense, want);
}

#[test]
fn padded_rows_compute_the_ternary_model() {
    let float = model_gguf(&PADDED, Proj::Float);
    let want = logits(
        load(
            &model_gguf(&PADDED, Proj::TernaryF32),
            opts(None, TernaryKernel::I2s),
        )
        .as_ref(),
    );
    let i2s = logits(load(&float, opts(Some(Quantize::Ternary), TernaryKernel::I2s)).as_ref());
    let lut = logits(load(&float, opts(Some(Quantize::Ternary), TernaryKernel::Lut)).as_ref());
    assert_eq!(lut, i2s, "the LUT kernels on padded rows");
    for (pos, (a, b)) in i2s.iter().zip(&want).enumerate() {
        let range = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= 0.05 * range,
            "position {pos}: ternarised at load vs the F32 ternary model differ by {diff} \
             (logits up to {range})"
        );
    }
}
