//! Unit tests on hand-built byte buffers: each error path and the accessors.

use super::*;

/// Raw little-endian byte builder for malformed files the writer would never produce.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, tensors: u64, kvs: u64) -> Raw {
        Raw::default()
            .bytes(b"GGUF")
            .u32(version)
            .u64(tensors)
            .u64(kvs)
    }
    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn str(self, s: &str) -> Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A tensor info: name, dims, type id, offset.
    fn tinfo(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    fn pad_to(mut self, align: usize) -> Raw {
        self.0.resize(self.0.len().div_ceil(align) * align, 0);
        self
    }
    fn zeros(mut self, n: usize) -> Raw {
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

fn err(bytes: &[u8]) -> String {
    match parse(bytes) {
        Ok(h) => panic!("expected an error, parsed {} tensors", h.tensors().len()),
        Err(e) => e.to_string(),
    }
}

fn assert_err(bytes: &[u8], needles: &[&str]) {
    let msg = err(bytes);
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} should mention {n:?}");
    }
}

fn sample() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("llama.block_count", Value::U32(2))
        .kv("signed", Value::I32(-3))
        .kv("eps", Value::F32(1e-5))
        .kv("wide", Value::F64(0.5))
        .kv("flag", Value::Bool(true))
        .kv(
            "tokens",
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        )
        .kv("types", Value::Array(vec![Value::I32(1), Value::I32(-2)]))
        .kv(
            "scores",
            Value::Array(vec![Value::F32(0.25), Value::F32(-1.0)]),
        )
        .f32_tensor("norm", &[4], &[1.0, 2.0, 3.0, 4.0])
        .tensor("q", &[32, 2], GgmlType::Q4_1, vec![7u8; 40])
        .tensor(
            "h",
            &[3],
            GgmlType::F16,
            [1.0f32, -2.0, 0.5]
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        )
        .tensor(
            "b",
            &[2],
            GgmlType::BF16,
            [3.0f32, -0.25]
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        )
        .tensor("k5", &[256], GgmlType::Q5_K, vec![0u8; 176])
}

#[test]
fn writer_output_round_trips() {
    let bytes = sample().to_bytes();
    let h = parse(&bytes).unwrap();
    assert_eq!(h.version(), 3);
    assert_eq!(h.architecture().unwrap(), "llama");
    let keys: Vec<&str> = h.metadata().map(|(k, _)| k).collect();
    assert_eq!(keys[0], "general.architecture");
    assert_eq!(keys.len(), 9);
    assert_eq!(h.tensors().len(), 5);
    assert_eq!(h.data_offset() % 32, 0);
    let q = h.tensor_info("q").unwrap();
    assert_eq!(
        (q.n_bytes, q.n_elements(), q.row_len(), q.n_rows()),
        (40, 64, 32, 2)
    );
    assert!(h.has_tensor("norm") && !h.has_tensor("nope"));

    let v = h.tensor_in(&bytes, "q").unwrap();
    assert_eq!(v.data, &[7u8; 40][..]);
    assert_eq!(v.dtype().unwrap(), ryzanstein_kernels::DType::Q4_1);
    assert_eq!(
        h.tensor_in(&bytes, "norm").unwrap().to_f32_vec().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0]
    );
    assert_eq!(
        h.tensor_in(&bytes, "h").unwrap().to_f32_vec().unwrap(),
        vec![1.0, -2.0, 0.5]
    );
    assert_eq!(
        h.tensor_in(&bytes, "b").unwrap().to_f32_vec().unwrap(),
        vec![3.0, -0.25]
    );
}

#[test]
fn version_2_is_read() {
    let bytes = sample().version(2).to_bytes();
    assert_eq!(parse(&bytes).unwrap().version(), 2);
}

#[test]
fn accessors_convert_and_explain() {
    let bytes = sample().to_bytes();
    let h = parse(&bytes).unwrap();
    assert_eq!(h.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(h.get_u64("llama.block_count").unwrap(), 2);
    assert_eq!(h.get_f32("eps").unwrap(), 1e-5);
    assert_eq!(h.get_f32("wide").unwrap(), 0.5);
    assert!(h.get_bool("flag").unwrap());
    assert_eq!(h.get_str_array("tokens").unwrap(), vec!["a", "b"]);
    assert_eq!(h.get_i32_array("types").unwrap(), vec![1, -2]);
    assert_eq!(h.get_f32_array("scores").unwrap(), vec![0.25, -1.0]);
    assert_eq!(h.get_array("tokens").unwrap().len(), 2);
    assert_eq!(h.opt_u32("absent").unwrap(), None);
    assert_eq!(h.opt_str("absent").unwrap(), None);
    assert_eq!(h.opt_f32("eps").unwrap(), Some(1e-5));
    assert_eq!(h.opt_bool("flag").unwrap(), Some(true));
    assert_eq!(h.get("signed"), Some(&Value::I32(-3)));

    let e = h.get_u32("signed").unwrap_err().to_string();
    assert!(
        e.contains("\"signed\"") && e.contains("u32") && e.contains("i32"),
        "{e}"
    );
    assert!(e.contains("<memory>"), "{e}");
    let e = h.opt_str("llama.block_count").unwrap_err().to_string();
    assert!(
        e.contains("expected string") && e.contains("found u32"),
        "{e}"
    );
    let e = h.get_str("missing.key").unwrap_err().to_string();
    assert!(
        e.contains("\"missing.key\"") && e.contains("missing"),
        "{e}"
    );
    let e = h.get_str_array("types").unwrap_err().to_string();
    assert!(e.contains("element 0") && e.contains("i32"), "{e}");
    let e = h.get_f32_array("tokens").unwrap_err().to_string();
    assert!(e.contains("array of float"), "{e}");
    assert!(h.get_bool("eps").is_err());
}

#[test]
fn tensor_lookups_explain_failures() {
    let bytes = sample().to_bytes();
    let h = parse(&bytes).unwrap();
    let e = h
        .tensor_in(&bytes, "missing.weight")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"missing.weight\"") && e.contains("not found"),
        "{e}"
    );
    let k5 = h.tensor_in(&bytes, "k5").unwrap();
    let e = k5.dtype().unwrap_err().to_string();
    assert!(e.contains("\"k5\"") && e.contains("Q5_K"), "{e}");
    let e = h
        .tensor_in(&bytes, "q")
        .unwrap()
        .to_f32_vec()
        .unwrap_err()
        .to_string();
    assert!(e.contains("Q4_1"), "{e}");
}

#[test]
fn custom_alignment_is_honoured() {
    let bytes = GgufWriter::new()
        .kv("general.alignment", Value::U32(64))
        .f32_tensor("a", &[3], &[1.0, 2.0, 3.0])
        .f32_tensor("b", &[1], &[9.0])
        .to_bytes();
    let h = parse(&bytes).unwrap();
    assert_eq!(h.alignment(), 64);
    assert_eq!(h.data_offset() % 64, 0);
    assert_eq!(h.tensor_info("b").unwrap().offset, 64);
    assert_eq!(
        h.tensor_in(&bytes, "b").unwrap().to_f32_vec().unwrap(),
        vec![9.0]
    );
}

#[test]
fn bad_magic_and_versions() {
    assert_err(b"GGML\x03\0\0\0", &["not a GGUF file"]);
    assert_err(b"", &["truncated", "magic", "offset 0", "only 0 bytes"]);
    assert_err(&Raw::header(1, 0, 0).0, &["version 1"]);
    assert_err(&Raw::header(3u32.swap_bytes(), 0, 0).0, &["big-endian"]);
    assert_err(&Raw::header(7, 0, 0).0, &["unsupported GGUF version 7"]);
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let bytes = sample().to_bytes();
    for n in 0..bytes.len() {
        let msg = err(&bytes[..n]);
        assert!(
            msg.contains("truncated") || msg.contains("corrupt"),
            "cut at {n}: {msg}"
        );
    }
    // A truncation inside the header says where and what.
    let one_kv = GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .to_bytes();
    let msg = err(&one_kv[..40]);
    assert!(
        msg.contains("offset 24") && msg.contains("file's 40 bytes"),
        "{msg}"
    );
    assert!(
        msg.contains("length of the key of metadata entry 0"),
        "{msg}"
    );
    let msg = err(&one_kv[..54]);
    assert!(
        msg.contains("offset 52") && msg.contains("only 54 bytes"),
        "{msg}"
    );
    assert!(
        msg.contains("value type of metadata value \"general.architecture\""),
        "{msg}"
    );
    let msg = err(&one_kv[..one_kv.len() - 2]);
    assert!(
        msg.contains("metadata value \"general.architecture\""),
        "{msg}"
    );
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    assert_err(
        &Raw::header(3, u64::MAX, 0).0,
        &["tensor count", "is 18446744073709551615"],
    );
    assert_err(&Raw::header(3, 0, 1 << 40).0, &["key/value count"]);
    let r = Raw::header(3, 0, 1)
        .u64(u64::MAX - 3)
        .bytes(b"abcdefghijklm");
    assert_err(&r.0, &["length of the key of metadata entry 0"]);
    let r = Raw::header(3, 0, 1)
        .str("k")
        .u32(9)
        .u32(4)
        .u64(1 << 50)
        .zeros(16);
    assert_err(
        &r.0,
        &[
            "element count of metadata value \"k\"",
            "room for at most 4",
        ],
    );
    let r = Raw::header(3, 0, 1).str("k").u32(9).u32(8).u64(3).zeros(16);
    assert_err(&r.0, &["room for at most 2"]);
}

#[test]
fn unknown_types_are_named_with_their_number() {
    let r = Raw::header(3, 0, 1).str("k").u32(13).zeros(8);
    assert_err(&r.0, &["unknown value type 13", "\"k\""]);
    let r = Raw::header(3, 0, 1).str("k").u32(9).u32(99).u64(0);
    assert_err(&r.0, &["unknown value type 99", "element type"]);
    let r = Raw::header(3, 1, 0)
        .tinfo("t", &[32], 4, 0)
        .pad_to(32)
        .zeros(64);
    assert_err(&r.0, &["unknown ggml type 4", "\"t\""]);
}

#[test]
fn malformed_values_are_rejected() {
    let r = Raw::header(3, 0, 1).str("b").u32(7).bytes(&[2]);
    assert_err(&r.0, &["bool stored as 2"]);
    let r = Raw::header(3, 0, 1)
        .str("s")
        .u32(8)
        .u64(2)
        .bytes(&[0xff, 0xfe]);
    assert_err(&r.0, &["not valid UTF-8", "\"s\""]);
    let r = Raw::header(3, 0, 2)
        .str("k")
        .u32(4)
        .u32(1)
        .str("k")
        .u32(4)
        .u32(2);
    assert_err(&r.0, &["\"k\" appears twice"]);
    // Arrays nested deeper than the limit.
    let mut r = Raw::header(3, 0, 1).str("deep");
    r = r.u32(9);
    for _ in 0..20 {
        r = r.u32(9).u64(1);
    }
    r = r.zeros(64);
    assert_err(&r.0, &["nests arrays"]);
}

#[test]
fn bad_alignment_is_rejected() {
    for v in [
        Value::U32(0),
        Value::U32(48),
        Value::String("32".into()),
        Value::I32(-32),
    ] {
        let bytes = GgufWriter::new().kv("general.alignment", v).to_bytes();
        assert_err(&bytes, &["general.alignment", "power of two"]);
    }
}

#[test]
fn bad_tensor_infos_are_rejected() {
    // Rows that are not whole blocks.
    let r = Raw::header(3, 1, 0)
        .tinfo("t", &[33], 3, 0)
        .pad_to(32)
        .zeros(64);
    assert_err(&r.0, &["\"t\"", "Q4_1", "rows of 33", "block size 32"]);
    // Too many dimensions.
    let r = Raw::header(3, 1, 0)
        .tinfo("t", &[1, 1, 1, 1, 1], 0, 0)
        .pad_to(32)
        .zeros(8);
    assert_err(&r.0, &["5 dimensions", "at most 4"]);
    // Dimension product overflow.
    let r = Raw::header(3, 1, 0).tinfo("t", &[1 << 40, 1 << 40], 0, 0);
    assert_err(&r.0, &["overflow"]);
    // Byte size that cannot be addressed.
    let r = Raw::header(3, 1, 0).tinfo("t", &[1 << 62], 0, 0);
    assert_err(&r.0, &["too large"]);
    // Misaligned offset.
    let r = Raw::header(3, 1, 0)
        .tinfo("t", &[4], 0, 4)
        .pad_to(32)
        .zeros(64);
    assert_err(&r.0, &["offset 4", "not a multiple of the alignment 32"]);
    // Data beyond the end of the file.
    let r = Raw::header(3, 1, 0)
        .tinfo("t", &[16], 0, 0)
        .pad_to(32)
        .zeros(63);
    assert_err(
        &r.0,
        &["\"t\"", "64 bytes", "lies at bytes", "fetch the file again"],
    );
    // Offset so large the end overflows.
    let r = Raw::header(3, 1, 0)
        .tinfo("t", &[16], 0, u64::MAX - 31)
        .pad_to(32);
    assert_err(&r.0, &["\"t\"", "lies at bytes"]);
    // Duplicate names.
    let r = Raw::header(3, 2, 0)
        .tinfo("t", &[1], 0, 0)
        .tinfo("t", &[1], 0, 32)
        .pad_to(32)
        .zeros(64);
    assert_err(&r.0, &["tensor \"t\" appears twice"]);
}

#[test]
fn open_reads_a_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, sample().to_bytes()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.path(), path);
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(f.tensor("norm").unwrap().to_f32_vec().unwrap()[3], 4.0);
    let e = f.tensor("nope").unwrap_err().to_string();
    assert!(e.contains("tiny.gguf") && e.contains("\"nope\""), "{e}");

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).unwrap_err().to_string();
    assert!(e.contains("empty.gguf") && e.contains("empty"), "{e}");

    let e = GgufFile::open(dir.path().join("absent.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.gguf"), "{e}");
}
