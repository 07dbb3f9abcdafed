//! Files written by the Python `gguf` package (the fuzz seeds in server/fuzz/seeds) parse with
//! the values that package wrote: a cross-check against another implementation's writer.

use std::path::Path;

use ryzanstein_server::gguf::{GgmlType, GgufFile, Value};

fn seed(name: &str) -> GgufFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds/gguf_parse")
        .join(name);
    GgufFile::open(path).unwrap()
}

#[test]
fn tiny_llama_seed() {
    let f = seed("tiny-llama.gguf");
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        vec!["<s>", "a", "b"]
    );
    assert_eq!(
        f.get_i32_array("tokenizer.ggml.token_type").unwrap(),
        vec![1, 1, 1]
    );
    assert!(f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(
        f.tensor("norm").unwrap().to_f32_vec().unwrap(),
        vec![0.0, 1.0, 2.0, 3.0]
    );
    let h = f.tensor("h").unwrap();
    // numpy shape (2, 4) is ggml dims [4, 2].
    assert_eq!(h.dims(), &[4, 2]);
    assert_eq!(
        h.to_f32_vec().unwrap(),
        (0..8).map(|i| i as f32).collect::<Vec<_>>()
    );
}

#[test]
fn aligned_seed_with_nested_arrays() {
    let f = seed("align64.gguf");
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    let nested = f.get_array("nested").unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(nested[1], Value::Array(vec![Value::I32(3)]));
    assert_eq!(f.get_u64("u").unwrap(), 7);
    assert_eq!(f.get_f32("f").unwrap(), 0.5);
    let q = f.tensor("q").unwrap();
    assert_eq!(q.info.ggml_type, GgmlType::Q4_1);
    assert_eq!(q.dims(), &[32, 1]);
    assert_eq!(q.data, &[0u8; 20][..]);
}
