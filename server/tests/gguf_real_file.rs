//! The GGUF reader against the real bundled model (SmolLM2-135M-Instruct Q4_1), and a
//! robustness sweep over its header: truncations and seeded byte flips must give Ok or Err,
//! never a panic.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use ryzanstein_kernels::DType;
use ryzanstein_server::gguf::{parse, GgmlType, GgufFile};
use sha2::{Digest, Sha256};

/// RYZANSTEIN_TEST_MODEL, else the bundled model in the cache; fails (never skips) when absent.
fn model_path() -> PathBuf {
    let path = match std::env::var_os("RYZANSTEIN_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/ryzanstein/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        }
    };
    assert!(
        path.is_file(),
        "test model {} not found: run `make model` (or set RYZANSTEIN_TEST_MODEL)",
        path.display()
    );
    path
}

#[test]
fn reads_smollm2_metadata_and_tensors() {
    let f = GgufFile::open(model_path()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.metadata().count(), 33);
    assert_eq!(
        f.metadata().next().map(|(k, _)| k),
        Some("general.architecture")
    );
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(
        f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        1e-5
    );
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
    assert_eq!(
        f.get_str("general.name").unwrap(),
        "Smollm2 135M 8k Lc100K Mix1 Ep2"
    );
    assert!(f.get_bool("tokenizer.ggml.add_bos_token").is_ok());
    assert!(f
        .get_str("tokenizer.chat_template")
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(f.opt_u32("general.alignment").unwrap(), None);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset(), 1_785_664);

    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens[0], "<|endoftext|>");
    assert_eq!(tokens[49151], "ectable");
    assert_eq!(
        f.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        49152
    );
    assert_eq!(
        f.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );

    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.info.ggml_type, GgmlType::Q8_0);
    assert_eq!(emb.dims(), &[576, 49152]);
    assert_eq!(emb.data.len(), 576 / 32 * 34 * 49152);
    assert_eq!(emb.dtype().unwrap(), DType::Q8_0);
    assert_eq!(emb.n_elements(), 576 * 49152);

    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.dtype().unwrap(), DType::Q4_1);
    assert_eq!(q.dims(), &[576, 576]);
    // Hash of the bytes as the Python `gguf` package reads them.
    let digest: String = Sha256::digest(q.data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        digest,
        "a8a1da23623a60216a214d68aca681284f4188cafcfe40664d8d025d3838038f"
    );

    let norm = f
        .tensor("output_norm.weight")
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert_eq!(norm.len(), 576);
    assert_eq!(&norm[..4], &[1.7578125, 1.8203125, 1.78125, 1.6015625]);

    let counts = |t: GgmlType| f.tensors().iter().filter(|i| i.ggml_type == t).count();
    assert_eq!(
        (
            counts(GgmlType::Q4_1),
            counts(GgmlType::F32),
            counts(GgmlType::Q8_0)
        ),
        (210, 61, 1)
    );
    let e = f.tensor("output.weight").unwrap_err().to_string();
    assert!(
        e.contains("SmolLM2-135M-Instruct") && e.contains("output.weight"),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupted_headers_never_panic() {
    let path = model_path();
    let bytes = std::fs::read(&path).unwrap();
    let header_end = parse(&bytes).unwrap().data_offset();

    // Truncations: every byte of the fixed header and the first kv pairs, then strided cuts
    // through the whole header region and into the data section.
    let cuts = (0..512)
        .chain((512..header_end + 4096).step_by(4099))
        .chain([header_end - 1, header_end, bytes.len() - 1]);
    for n in cuts {
        let err = parse(&bytes[..n]).expect_err(&format!("a cut at {n} bytes parsed"));
        let msg = err.to_string();
        assert!(
            msg.contains("truncated") || msg.contains("corrupt") || msg.contains("not a GGUF"),
            "cut at {n}: {msg}"
        );
    }

    // Seeded random flips of 1 to 4 bytes, mostly in the first 4 KiB (counts, types, lengths),
    // the rest anywhere in the header region.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x6767_7566);
    let mut buf = bytes[..header_end + 1024].to_vec();
    let (mut ok, mut err) = (0, 0);
    for round in 0..400 {
        let span = if round % 2 == 0 { 4096 } else { header_end };
        let flips: Vec<(usize, u8)> = (0..rng.gen_range(1..=4))
            .map(|_| (rng.gen_range(0..span), rng.gen::<u8>() | 1))
            .collect();
        for &(pos, x) in &flips {
            buf[pos] ^= x;
        }
        match parse(&buf) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
        for &(pos, x) in &flips {
            buf[pos] ^= x;
        }
    }
    assert_eq!(ok + err, 400);
    // Restored: the header region alone (no tensor data) must fail only on data ranges.
    let msg = parse(&buf).unwrap_err().to_string();
    assert!(msg.contains("lies at bytes"), "{msg}");
}
