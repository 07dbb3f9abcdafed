//! Tiny model directories built with the safetensors crate's serializer in a tempdir.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use super::*;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_shard(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn err(dir: &Path) -> String {
    HfDir::open(dir).unwrap_err().to_string()
}

fn single_file_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(
        d,
        "config.json",
        r#"{"model_type": "llama", "hidden_size": 2}"#,
    );
    write(d, "tokenizer.json", "{}");
    write(
        d,
        "tokenizer_config.json",
        r#"{"chat_template": "{{ x }}"}"#,
    );
    let h: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let b: Vec<u8> = [0.5f32, 4.0, -1.0]
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    write_shard(
        &d.join("model.safetensors"),
        &[
            (
                "lin.weight",
                Dtype::F32,
                vec![2, 3],
                f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ),
            ("half", Dtype::F16, vec![2], h),
            ("brain", Dtype::BF16, vec![3], b),
            ("position_ids", Dtype::I64, vec![2], vec![0u8; 16]),
        ],
    );
    t
}

#[test]
fn single_file_directory() {
    let t = single_file_dir();
    let hf = HfDir::open(t.path()).unwrap();
    assert_eq!(hf.config()["model_type"], "llama");
    assert_eq!(
        hf.tensor_names(),
        &["brain", "half", "lin.weight", "position_ids"]
    );
    let w = hf.tensor("lin.weight").unwrap();
    assert_eq!(
        (w.dtype, w.shape.clone(), w.n_elements()),
        (DType::F32, vec![2, 3], 6)
    );
    assert_eq!(w.to_f32_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(w.data.len(), 24);
    assert_eq!(hf.tensor("half").unwrap().to_f32_vec(), vec![1.5, -2.0]);
    let b = hf.tensor("brain").unwrap();
    assert_eq!(b.dtype, DType::BF16);
    assert_eq!(b.to_f32_vec(), vec![0.5, 4.0, -1.0]);
    assert_eq!(hf.tensor_meta("position_ids"), Some(("I64", &[2usize][..])));

    let e = hf.tensor("position_ids").unwrap_err().to_string();
    assert!(e.contains("\"position_ids\"") && e.contains("I64"), "{e}");
    let e = hf.tensor("nope").unwrap_err().to_string();
    assert!(e.contains("\"nope\"") && e.contains("not found"), "{e}");

    assert_eq!(hf.tokenizer_json(), Some(t.path().join("tokenizer.json")));
    assert_eq!(
        hf.tokenizer_config().unwrap().unwrap()["chat_template"],
        "{{ x }}"
    );
    assert!(hf.generation_config().unwrap().is_none());
    write(t.path(), "generation_config.json", "{not json");
    let e = hf.generation_config().unwrap_err().to_string();
    assert!(
        e.contains("generation_config.json") && e.contains("invalid JSON"),
        "{e}"
    );
}

fn sharded_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(d, "config.json", r#"{"model_type": "llama"}"#);
    write_shard(
        &d.join("model-00001-of-00002.safetensors"),
        &[
            ("a", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])),
            ("b", Dtype::F32, vec![1], f32_bytes(&[3.0])),
        ],
    );
    write_shard(
        &d.join("model-00002-of-00002.safetensors"),
        &[("c", Dtype::F32, vec![1, 1], f32_bytes(&[4.0]))],
    );
    write(
        d,
        INDEX_FILE,
        r#"{"metadata": {"total_size": 16}, "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
            "c": "model-00002-of-00002.safetensors"}}"#,
    );
    t
}

#[test]
fn two_shard_index() {
    let t = sharded_dir();
    let hf = HfDir::open(t.path()).unwrap();
    assert_eq!(hf.tensor_names(), &["a", "b", "c"]);
    assert_eq!(hf.tensor("a").unwrap().to_f32_vec(), vec![1.0, 2.0]);
    assert_eq!(hf.tensor("b").unwrap().to_f32_vec(), vec![3.0]);
    let c = hf.tensor("c").unwrap();
    assert_eq!((c.shape.clone(), c.to_f32_vec()), (vec![1, 1], vec![4.0]));
    assert!(hf.tokenizer_json().is_none());
    assert!(hf.tokenizer_config().unwrap().is_none());
    let index = read_index(&t.path().join(INDEX_FILE)).unwrap();
    assert_eq!(
        index.shards,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    assert_eq!(index.weight_map.len(), 3);
}

#[test]
fn missing_shard_is_named() {
    let t = sharded_dir();
    std::fs::remove_file(t.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = err(t.path());
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn index_inconsistent_with_shards() {
    let t = sharded_dir();
    write(
        t.path(),
        INDEX_FILE,
        r#"{"weight_map": {"a": "model-00001-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors",
            "x": "model-00002-of-00002.safetensors"}}"#,
    );
    let e = err(t.path());
    assert!(
        e.contains("tensor \"c\"") && e.contains("does not contain"),
        "{e}"
    );

    // The same tensor in two shards.
    write_shard(
        &t.path().join("model-00002-of-00002.safetensors"),
        &[("a", Dtype::F32, vec![1], f32_bytes(&[9.0]))],
    );
    write(
        t.path(),
        INDEX_FILE,
        r#"{"weight_map": {"a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors"}}"#,
    );
    let e = err(t.path());
    assert!(e.contains("\"a\"") && e.contains("one shard"), "{e}");

    for bad in [
        r#"{"weight_map": {"a": "../model.safetensors"}}"#,
        r#"{"weight_map": {"a": "/etc/passwd"}}"#,
    ] {
        write(t.path(), INDEX_FILE, bad);
        let e = err(t.path());
        assert!(e.contains("not a file name in this directory"), "{e}");
    }
    write(t.path(), INDEX_FILE, r#"{"weight_map": {"a": 3}}"#);
    assert!(err(t.path()).contains("expected a shard file name"));
    write(t.path(), INDEX_FILE, r#"{"metadata": {}}"#);
    assert!(err(t.path()).contains("no \"weight_map\""));
}

#[test]
fn corrupt_shards_are_explained() {
    let t = single_file_dir();
    let path = t.path().join("model.safetensors");
    let good = std::fs::read(&path).unwrap();

    // Truncated data.
    std::fs::write(&path, &good[..good.len() - 4]).unwrap();
    let e = err(t.path());
    assert!(
        e.contains("model.safetensors") && e.contains("data_offsets"),
        "{e}"
    );

    // Shorter than the length prefix; length prefix larger than the file.
    std::fs::write(&path, b"\x01\x02").unwrap();
    assert!(err(t.path()).contains("shorter than the 8-byte header length"));
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    std::fs::write(&path, &huge).unwrap();
    assert!(err(t.path()).contains("header length is 18446744073709551615"));

    // Header that is not JSON, and one whose entry lacks fields.
    let with_header = |h: &str, data: usize| {
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h.as_bytes());
        v.resize(v.len() + data, 0);
        v
    };
    std::fs::write(&path, with_header("{nope", 0)).unwrap();
    assert!(err(t.path()).contains("corrupt safetensors header"));
    std::fs::write(&path, with_header(r#"{"w": {"dtype": "F32"}}"#, 0)).unwrap();
    let e = err(t.path());
    assert!(e.contains("tensor \"w\"") && e.contains("shape"), "{e}");

    // Shape and offsets disagree.
    let h = r#"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#;
    std::fs::write(&path, with_header(h, 8)).unwrap();
    let e = err(t.path());
    assert!(e.contains("needs 12 bytes") && e.contains("span 8"), "{e}");

    // An unknown dtype opens; asking for that tensor is the error.
    let h = r#"{"__metadata__": {"format": "pt"},
        "w": {"dtype": "F4_NEW", "shape": [3], "data_offsets": [0, 2]}}"#;
    std::fs::write(&path, with_header(h, 2)).unwrap();
    let hf = HfDir::open(t.path()).unwrap();
    let e = hf.tensor("w").unwrap_err().to_string();
    assert!(e.contains("F4_NEW") && e.contains("\"w\""), "{e}");
}

#[test]
fn directories_that_are_not_models() {
    let t = tempfile::tempdir().unwrap();
    assert!(err(t.path()).contains("no config.json"));
    write(t.path(), "config.json", "[1, 2");
    let e = err(t.path());
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );
    write(t.path(), "config.json", "[1, 2]");
    assert!(err(t.path()).contains("not a JSON object"));
    write(t.path(), "config.json", "{}");
    let e = err(t.path());
    assert!(e.contains(SINGLE_FILE) && e.contains(INDEX_FILE), "{e}");
    write(t.path(), "pytorch_model.bin", "");
    assert!(err(t.path()).contains("convert them to safetensors"));
}
