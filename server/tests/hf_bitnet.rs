//! BitNet b1.58 (`BitNetForCausalLM`) from a Hugging Face directory: the logits of the tiny
//! random checkpoint in tests/data/hf_tiny_bitnet match transformers' (BitLinear: ternary
//! weights from the packed uint8 form, per-token int8 activations), for whole prompts and one
//! token at a time; a corrupt packed code is refused. The fixture and its reference.json come
//! from scripts/make_bitnet_fixture.py (transformers and torch on the CPU); no real BitNet
//! checkpoint is reachable from here.
//!
//! Two references: transformers as is, and transformers with its attention's queries, keys,
//! values and probabilities rounded to f16 as our attention (llama.cpp's, with an f16 KV cache)
//! rounds them. We match the second to ~1e-5; the first differs by a few tenths, because every
//! BitLinear re-quantises its input to int8 and an f16 rounding can move a value across a
//! rounding boundary (a step of 1/127 of the row's largest value).

mod common;

use ryzanstein_server::models::{self, CausalLm};
use ryzanstein_server::source::ModelFiles;
use serde_json::Value;

/// Against transformers with f16 attention: the rest is the same arithmetic up to summation
/// order (ternary products are exact integers).
const TOL: f32 = 1e-3;
/// Against transformers as is (logits of magnitude ~10): the f16 attention's effect.
const TOL_F32_ATTENTION: f32 = 1.0;
/// The Q8_0 head against the f32 head (logits of magnitude ~10).
const Q8_0_HEAD_TOL: f32 = 0.5;

fn fixture() -> std::path::PathBuf {
    common::test_data("hf_tiny_bitnet")
}

/// The head as stored (f32): the reference comparison.
fn load(dir: &std::path::Path) -> Box<dyn CausalLm> {
    load_with_head(dir, models::LmHead::Stored)
}

fn load_with_head(dir: &std::path::Path, lm_head: models::LmHead) -> Box<dyn CausalLm> {
    let opts = models::ModelOptions {
        lm_head,
        ..Default::default()
    };
    models::load_with(&ModelFiles::HfDir(dir.to_path_buf()), 2, &opts)
        .expect("load the BitNet directory")
}

fn ids_of(seq: &Value) -> Vec<u32> {
    seq["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

use common::max_diff_json as max_diff;

/// The largest difference to reference `key` over every sequence, batched and incremental.
fn worst_diff(model: &dyn CausalLm, key: &str) -> f32 {
    let r = common::read_json(&fixture().join("reference.json"));
    let mut worst = 0.0f32;
    for seq in r["sequences"].as_array().unwrap() {
        let (ids, want) = (ids_of(seq), seq[key].as_array().unwrap());
        let mut state = model.new_state(ids.len());
        let last = model.forward(&mut state, &ids).unwrap();
        worst = worst.max(max_diff(&last, want.last().unwrap()));
        let mut state = model.new_state(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let logits = model.forward(&mut state, &[*id]).unwrap();
            worst = worst.max(max_diff(&logits, &want[i]));
        }
    }
    worst
}

#[test]
fn logits_match_transformers_bitlinear() {
    let model = load(&fixture());
    assert_eq!(model.architecture(), "BitNetForCausalLM");
    assert_eq!(model.vocab_size(), 48);
    let d = worst_diff(model.as_ref(), "logits_f16_attention");
    assert!(
        d <= TOL,
        "max |logit diff| {d} against transformers with f16 attention"
    );
    let d = worst_diff(model.as_ref(), "logits");
    assert!(
        d <= TOL_F32_ATTENTION,
        "max |logit diff| {d} against transformers"
    );
}

/// By default a ternary model's float head is requantised to Q8_0 (so it does not read more
/// bytes per token than the layers): the logits move by the Q8_0 rounding of the head (and of
/// the tied embedding) only, and the greedy choice stays.
#[test]
fn the_default_q8_0_head_stays_close_to_the_stored_head() {
    let stored = load(&fixture());
    let q8 = load_with_head(&fixture(), models::LmHead::Auto);
    let ids = [1u32, 7, 22, 40, 3, 15, 9];
    let (mut a, mut b) = (stored.new_state(ids.len()), q8.new_state(ids.len()));
    let mut worst = 0.0f32;
    for id in ids {
        let (x, y) = (
            stored.forward(&mut a, &[id]).unwrap(),
            q8.forward(&mut b, &[id]).unwrap(),
        );
        assert_ne!(x, y, "the Q8_0 head must change the logits a little");
        worst = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(worst, f32::max);
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
        assert_eq!(argmax(&x), argmax(&y), "greedy choice after token {id}");
    }
    eprintln!("max |logit diff| Q8_0 head against the f32 head: {worst}");
    assert!(worst <= Q8_0_HEAD_TOL, "max |logit diff| {worst}");
}

#[test]
fn a_corrupt_packed_code_is_refused_naming_the_tensor() {
    let src = fixture();
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let path = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let (name, offset) = {
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = st.tensor("model.layers.1.mlp.up_proj.weight").unwrap();
        let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
        ("model.layers.1.mlp.up_proj.weight", start)
    };
    bytes[offset] = 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = models::load(&ModelFiles::HfDir(tmp.path().to_path_buf()), 1)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains(name) && err.contains("corrupt"), "{err}");
}
