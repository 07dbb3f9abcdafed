//! The Q4_K_M GGUF of the bundled model (llama.cpp's own requantisation of the Q4_1 file, made
//! by scripts/make_q4_k_m.py: Q4_K and Q6_K ffn_down, Q5_0 and Q8_0 elsewhere) against
//! llama.cpp's outputs on that file, in tests/data/llama_refs_q4_k_m.
//!
//! Teacher-forced like `llama_reference.rs`: each step feeds the reference token. The kernels
//! follow llama.cpp's AVX2 operation order for every type in the file (Q4_K in its repacked
//! one-row and four-row orders, Q6_K in its tiled-GEMM order for batches of eight or more rows:
//! how llama.cpp multiplies them on an AVX2 CPU), so the
//! logits must be llama.cpp's bit for bit, and the greedy tokens equal.

mod common;

use ryzanstein_server::gguf::GgufFile;
use ryzanstein_server::models::{CausalLm, Llama};
use serde_json::Value;
use sha2::Digest;
use std::path::PathBuf;

/// `RYZANSTEIN_TEST_MODEL_Q4_K_M`, else the Q4_K_M file beside the bundled model in the cache.
/// Panics (failing the test) with what to do when it is missing; never skips.
fn model_path() -> PathBuf {
    let path = std::env::var_os("RYZANSTEIN_TEST_MODEL_Q4_K_M")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            common::model_path().with_file_name("SmolLM2-135M-Instruct.Q4_K_M.gguf")
        });
    assert!(
        path.is_file(),
        "Q4_K_M test model {} is missing: make it with `~/.cache/ryzanstein/venv-refs/bin/python \
         scripts/make_q4_k_m.py` (llama-cpp-python from `make references`)",
        path.display()
    );
    path
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn references() -> Vec<(PathBuf, Value)> {
    let dir = common::test_data("llama_refs_q4_k_m");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no references in {}", dir.display());
    files
        .into_iter()
        .map(|f| {
            let v = common::read_json(&f);
            (f, v)
        })
        .collect()
}

fn load() -> Llama {
    let path = model_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sha = format!("{:x}", sha2::Sha256::digest(&bytes));
    let refs = references();
    let want = refs[0].1["model_sha256"].as_str().expect("model_sha256");
    assert_eq!(
        sha,
        want,
        "{} is not the file the references were made from: remake it with scripts/make_q4_k_m.py",
        path.display()
    );
    let g = GgufFile::open(&path).expect("open Q4_K_M model");
    Llama::from_gguf(&g, 2, &Default::default()).expect("load Q4_K_M llama")
}

/// Every type llama.cpp's Q4_K_M chose for this model is in the file and loads.
#[test]
fn q4_k_m_file_mixes_k_quants_and_fallbacks() {
    let g = GgufFile::open(model_path()).expect("open Q4_K_M model");
    let mut types = std::collections::BTreeSet::new();
    for t in g.tensors() {
        types.insert(t.ggml_type.name());
        // Every tensor's type is one the kernels compute with.
        g.tensor(&t.name).unwrap().dtype().unwrap();
    }
    for t in ["Q4_K", "Q6_K", "Q5_0", "Q8_0", "F32"] {
        assert!(
            types.contains(t),
            "no {t} tensor in the Q4_K_M file: {types:?}"
        );
    }
}

/// Teacher-forced top-5 logits and greedy ids against llama.cpp, bit for bit.
#[test]
fn q4_k_m_references_match_llama_cpp() {
    let model = load();
    for (f, r) in references() {
        let prompt = ids(&r["prompt_ids"]);
        let greedy = ids(&r["greedy_ids"]);
        let steps = r["steps_top5_logits"].as_array().unwrap();
        let mut state = model.new_state(prompt.len() + greedy.len() + 1);
        let mut logits = model.forward(&mut state, &prompt).expect("prefill");
        let mut max_diff = 0.0f32;
        for (s, &want) in greedy.iter().enumerate() {
            for pair in steps[s]["top5"].as_array().unwrap() {
                let (id, logit) = (
                    pair[0].as_u64().unwrap() as usize,
                    pair[1].as_f64().unwrap() as f32,
                );
                max_diff = max_diff.max((logits[id] - logit).abs());
            }
            assert_eq!(
                argmax(&logits),
                want,
                "{}: step {s}: greedy id differs from llama.cpp's",
                f.display()
            );
            if s + 1 < greedy.len() {
                logits = model.forward(&mut state, &[want]).expect("decode");
            }
        }
        eprintln!(
            "{}: {} steps, max |logit diff| {max_diff:e}",
            f.display(),
            steps.len()
        );
        assert_eq!(
            max_diff,
            0.0,
            "{}: logits are not bit-identical to llama.cpp's",
            f.display()
        );
    }
}

/// Free-running greedy generation (no teacher forcing) reproduces llama.cpp's tokens.
#[test]
fn q4_k_m_free_running_greedy_matches() {
    let model = load();
    for (f, r) in references() {
        let prompt = ids(&r["prompt_ids"]);
        let greedy = ids(&r["greedy_ids"]);
        let mut state = model.new_state(prompt.len() + greedy.len() + 1);
        let mut logits = model.forward(&mut state, &prompt).unwrap();
        let mut got = vec![];
        for _ in 0..greedy.len() {
            let id = argmax(&logits);
            got.push(id);
            logits = model.forward(&mut state, &[id]).unwrap();
        }
        assert_eq!(got, greedy, "{}", f.display());
    }
}
