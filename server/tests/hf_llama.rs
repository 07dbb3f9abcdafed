//! A Hugging Face safetensors directory (config.json, two shards and their index,
//! tokenizer.json) loads and computes the same logits as the reference in
//! tests/data/hf_tiny_llama/reference.json, made by scripts/make_hf_fixture.py (transformers'
//! LlamaForCausalLM when torch is available, else an independent float64 NumPy forward pass;
//! the file says which). The checkpoint is a tiny random model: the real SmolLM2 checkpoint is
//! not reachable from here, and its architecture is the same.

mod common;

use ryzanstein_server::models::{self, CausalLm};
use ryzanstein_server::source::ModelFiles;
use ryzanstein_server::tokenizer::Tokenizer;
use serde_json::Value;

/// f32 weights and activations, but an f16 KV cache and f16 attention probabilities (as for
/// GGUF models): logits agree with the float64 reference to about 1e-3.
const TOL: f32 = 1e-2;

fn fixture() -> std::path::PathBuf {
    common::test_data("hf_tiny_llama")
}

fn load() -> Box<dyn CausalLm> {
    models::load(&ModelFiles::HfDir(fixture()), 2).expect("load the Hugging Face directory")
}

use common::max_diff_json as max_diff;

#[test]
fn logits_match_reference_batched_and_incremental() {
    let r = common::read_json(&fixture().join("reference.json"));
    let model = load();
    assert_eq!(model.architecture(), "LlamaForCausalLM");
    assert_eq!(model.vocab_size(), 48);
    for seq in r["sequences"].as_array().unwrap() {
        let ids: Vec<u32> = seq["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want = seq["logits"].as_array().unwrap();
        // Whole sequence in one batch: the last position's logits.
        let mut state = model.new_state(ids.len());
        let last = model.forward(&mut state, &ids).unwrap();
        let d = max_diff(&last, want.last().unwrap());
        assert!(d <= TOL, "{ids:?} batched: max |logit diff| {d}");
        // One token at a time: every position.
        let mut state = model.new_state(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let logits = model.forward(&mut state, &[*id]).unwrap();
            let d = max_diff(&logits, &want[i]);
            assert!(d <= TOL, "{ids:?} position {i}: max |logit diff| {d}");
        }
    }
}

#[test]
fn tokenizer_and_chat_template_load_from_the_directory() {
    let dir = fixture();
    let cfg: Value = common::read_json(&dir.join("tokenizer_config.json"));
    let tok = Tokenizer::from_hf_files(&dir.join("tokenizer.json"), Some(&cfg)).unwrap();
    assert_eq!(tok.encode("the a of", false).unwrap(), vec![3, 4, 5]);
    let template =
        ryzanstein_server::chat_template::ChatTemplate::from_tokenizer_config(&cfg).unwrap();
    assert!(template.is_some());
}

#[test]
fn unsupported_architecture_and_shape_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixture()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: Value = common::read_json(&cfg_path);
    cfg["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = models::load(&ModelFiles::HfDir(tmp.path().to_path_buf()), 1)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("GPT2LMHeadModel") && err.contains("LlamaForCausalLM"),
        "{err}"
    );
    cfg["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    cfg["hidden_size"] = serde_json::json!(32);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = models::load(&ModelFiles::HfDir(tmp.path().to_path_buf()), 1)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("expected") && err.contains("config.json"),
        "{err}"
    );
}
