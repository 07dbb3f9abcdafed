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

fn fixture() -> std::path::PathBuf {
    common::test_data("hf_tiny_bitnet")
}

fn load(dir: &std::path::Path) -> Box<dyn CausalLm> {
    models::load(&ModelFiles::HfDir(dir.to_path_buf()), 2).expect("load the BitNet directory")
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
