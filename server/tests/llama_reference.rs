//! Llama forward pass against llama.cpp's outputs on the same GGUF (the shared reference made
//! with llama-cpp-python, and the project's own references in tests/data/llama_refs, made by
//! scripts/make_references.py). Teacher-forced: each step feeds the reference token, so one
//! near-tie cannot derail the rest of the comparison.

mod common;

use ryzanstein_server::gguf::GgufFile;
use ryzanstein_server::models::{CausalLm, Llama};
use serde_json::Value;

/// Logit tolerance against llama.cpp (the acceptance bound).
const TOL: f32 = 0.05;

fn load() -> Llama {
    let g = GgufFile::open(common::model_path()).expect("open model");
    Llama::from_gguf(&g, 2, &Default::default()).expect("load llama")
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

struct Outcome {
    max_diff: f32,
    steps: usize,
    id_mismatches: Vec<usize>,
}

/// Run `prompt`, then for each reference step compare the top-5 logits and the greedy id,
/// feeding `expected_ids[s]` afterwards. `must_match_ids` steps must agree on the id unless the
/// reference's own top-2 margin is within rounding (then the logits decide).
fn compare(
    model: &Llama,
    prompt: &[u32],
    expected_ids: &[u32],
    steps: &[Value],
    must_match_ids: usize,
) -> Outcome {
    let mut state = model.new_state(prompt.len() + expected_ids.len() + 1);
    let mut logits = model.forward(&mut state, prompt).expect("prefill");
    let mut out = Outcome {
        max_diff: 0.0,
        steps: 0,
        id_mismatches: vec![],
    };
    for (s, &want) in expected_ids.iter().enumerate() {
        if let Some(step) = steps.get(s) {
            for pair in step["top5"].as_array().unwrap() {
                let (id, logit) = (
                    pair[0].as_u64().unwrap() as usize,
                    pair[1].as_f64().unwrap() as f32,
                );
                let diff = (logits[id] - logit).abs();
                out.max_diff = out.max_diff.max(diff);
                assert!(diff <= TOL, "step {s}: logit of token {id} is {} vs llama.cpp {logit} (|diff| {diff} > {TOL})", logits[id]);
            }
            out.steps += 1;
        }
        let got = argmax(&logits);
        if got != want {
            out.id_mismatches.push(s);
            let margin = steps
                .get(s)
                .and_then(|st| st["margin_top1_top2"].as_f64())
                .unwrap_or(f64::MAX) as f32;
            assert!(
                s >= must_match_ids || margin <= 2.0 * TOL,
                "step {s}: greedy id {got} vs llama.cpp {want} with a reference margin of {margin}"
            );
        }
        if s + 1 < expected_ids.len() {
            logits = model.forward(&mut state, &[want]).expect("decode");
        }
    }
    out
}

#[test]
fn shared_reference_chat_prompt_matches_llama_cpp() {
    let r = common::read_json(&common::shared_reference("smollm2-greedy.json"));
    let model = load();
    let prompt = ids(&r["prompt_ids"]);
    let greedy = ids(&r["greedy_ids_64"]);
    let steps = r["steps_top5_logits"].as_array().unwrap();
    let o = compare(&model, &prompt, &greedy, steps, 32);
    assert_eq!(o.steps, steps.len());
    assert!(
        o.id_mismatches.iter().all(|&s| s >= 32),
        "greedy ids differ at steps {:?}",
        o.id_mismatches
    );
    eprintln!(
        "shared reference: {} steps, max |logit diff| {:.4}, id mismatches {:?}",
        o.steps, o.max_diff, o.id_mismatches
    );
}

#[test]
fn shared_secondary_reference_matches_until_eos() {
    let r = common::read_json(&common::shared_reference("smollm2-greedy.json"));
    let sec = &r["secondary_reference_no_system_prompt"];
    let model = load();
    let prompt = ids(&sec["prompt_ids"]);
    let until_eos = ids(&sec["greedy_ids_until_eos"]);
    let eos_index = sec["eos_index"].as_u64().unwrap() as usize;
    let mut expected = until_eos.clone();
    expected.push(ids(&sec["greedy_ids_64"])[eos_index]); // the end-of-sequence token itself
    let steps = sec["steps_top5_logits"].as_array().unwrap();
    let o = compare(&model, &prompt, &expected, steps, expected.len());
    assert!(
        o.id_mismatches.is_empty(),
        "greedy ids differ at steps {:?}",
        o.id_mismatches
    );
}

/// Free-running greedy generation (no teacher forcing) reproduces llama.cpp's first 32 tokens.
#[test]
fn free_running_greedy_matches_first_32_tokens() {
    let r = common::read_json(&common::shared_reference("smollm2-greedy.json"));
    let model = load();
    let prompt = ids(&r["prompt_ids"]);
    let greedy = ids(&r["greedy_ids_64"]);
    let mut state = model.new_state(prompt.len() + 33);
    let mut logits = model.forward(&mut state, &prompt).unwrap();
    let mut got = vec![];
    for _ in 0..32 {
        let id = argmax(&logits);
        got.push(id);
        logits = model.forward(&mut state, &[id]).unwrap();
    }
    assert_eq!(got, greedy[..32]);
}

/// Prefill in one batch and token by token give the same next token and logits within the
/// spread of summation order: like llama.cpp, a batch sums attention products in GEMM order and a
/// single token in dot-product order, and this model amplifies rounding differences (the same
/// holds between llama.cpp runs with different batch sizes). A broken cache position, mask or
/// truncation shows up as differences of whole logits.
#[test]
fn batched_prefill_agrees_with_incremental() {
    let model = load();
    let prompt = [1u32, 4093, 198, 1780, 314, 260, 3575, 282];
    let mut a = model.new_state(16);
    let la = model.forward(&mut a, &prompt).unwrap();
    let mut b = model.new_state(16);
    let mut lb = vec![];
    for &t in &prompt {
        lb = model.forward(&mut b, &[t]).unwrap();
    }
    let max = la
        .iter()
        .zip(&lb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    eprintln!("batched vs incremental: max |logit diff| {max}");
    assert_eq!(argmax(&la), argmax(&lb));
    assert!(max < 1.0, "batched vs incremental prefill differ by {max}");
    // Truncating the state and re-running the tail in one batch.
    b.truncate(4);
    let lc = model.forward(&mut b, &prompt[4..]).unwrap();
    let max = la
        .iter()
        .zip(&lc)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    eprintln!("after truncate: max |logit diff| {max}");
    assert_eq!(argmax(&la), argmax(&lc));
    assert!(max < 1.0, "after truncate: {max}");
    // The same batch twice gives the same bits.
    let mut d = model.new_state(16);
    assert_eq!(la, model.forward(&mut d, &prompt).unwrap());
}

/// References over varied prompts made by scripts/make_references.py.
#[test]
fn project_references_match_llama_cpp() {
    let dir = common::test_data("llama_refs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no references in {}", dir.display());
    let model = load();
    for f in files {
        let r = common::read_json(&f);
        let prompt = ids(&r["prompt_ids"]);
        let greedy = ids(&r["greedy_ids"]);
        let steps = r["steps_top5_logits"].as_array().unwrap();
        let o = compare(&model, &prompt, &greedy, steps, greedy.len());
        eprintln!(
            "{}: {} steps, max |logit diff| {:e}",
            f.display(),
            o.steps,
            o.max_diff
        );
        // The kernels follow llama.cpp's AVX2 operation order on every instruction set, so the
        // logits are llama.cpp's bit for bit; any speed-up that changes a summation order
        // shows up here first.
        assert_eq!(
            o.max_diff,
            0.0,
            "{}: logits are no longer bit-identical to llama.cpp's",
            f.display()
        );
    }
}
