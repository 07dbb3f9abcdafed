//! Shared helpers for integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The bundled SmolLM2-135M-Instruct Q4_1 GGUF: `RYZANSTEIN_TEST_MODEL`, else the project cache.
/// Panics (failing the test) with what to do when it is missing; never skips silently.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("RYZANSTEIN_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("RYZANSTEIN_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                        .join(".cache/ryzanstein")
                });
            cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        path.is_file(),
        "test model {} is missing: run `make model` first",
        path.display()
    );
    path
}

/// `../shared/reference/<name>` beside the repository (CI clones with `shared/` next to it).
pub fn shared_reference(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference")
        .join(name);
    assert!(
        p.is_file(),
        "{} is missing: the repository expects ../shared beside it",
        p.display()
    );
    p
}

/// A file under server/tests/data.
pub fn test_data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// Read a JSON file.
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The largest `|a[i] - b[i]|`, `b` a JSON array of numbers (a reference's logits).
pub fn max_diff_json(a: &[f32], b: &serde_json::Value) -> f32 {
    let b: Vec<f32> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
