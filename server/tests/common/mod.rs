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

/// A seeded xorshift generator for tests that write their own random models.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// `n` ternary values (-1, 0, 1).
    pub fn ternary(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| (self.next() % 3) as i8 - 1).collect()
    }
    /// `n` values in `center ± spread`.
    pub fn floats(&mut self, n: usize, center: f32, spread: f32) -> Vec<f32> {
        (0..n)
            .map(|_| center + spread * ((self.next() % 20001) as f32 / 10000.0 - 1.0))
            .collect()
    }
}

/// The shape of a tiny `llama`-architecture GGUF written by a test.
pub struct TinyLlama {
    pub d: usize,
    pub ff: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layers: usize,
}

impl TinyLlama {
    /// Hidden 256, FFN 512, 4 heads / 2 KV heads of 64, 2 layers: every row a whole number of
    /// 256-weight ternary blocks.
    pub const WHOLE_BLOCKS: TinyLlama = TinyLlama {
        d: 256,
        ff: 512,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        layers: 2,
    };

    /// A writer holding this shape's metadata (context 64, RMS eps 1e-5), no tensors yet.
    pub fn writer(&self) -> ryzanstein_server::gguf::GgufWriter {
        use ryzanstein_server::gguf::{GgufWriter, Value};
        GgufWriter::new()
            .kv("general.architecture", Value::String("llama".into()))
            .kv("llama.embedding_length", Value::U32(self.d as u32))
            .kv("llama.block_count", Value::U32(self.layers as u32))
            .kv("llama.feed_forward_length", Value::U32(self.ff as u32))
            .kv("llama.attention.head_count", Value::U32(self.heads as u32))
            .kv(
                "llama.attention.head_count_kv",
                Value::U32(self.kv_heads as u32),
            )
            .kv("llama.context_length", Value::U32(64))
            .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
    }

    /// A layer's seven projections: (tensor name stem, rows, cols).
    pub fn projections(&self) -> [(&'static str, usize, usize); 7] {
        let (d, ff) = (self.d, self.ff);
        let (q, kv) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        [
            ("attn_q", q, d),
            ("attn_k", kv, d),
            ("attn_v", kv, d),
            ("attn_output", d, q),
            ("ffn_gate", ff, d),
            ("ffn_up", ff, d),
            ("ffn_down", d, ff),
        ]
    }
}
