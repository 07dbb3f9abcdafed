//! `Tokenizer::from_hf_files`: a tokenizer.json (written from the GGUF-built SmolLM2 tokenizer,
//! which is what SmolLM2's own tokenizer.json describes: digits split, byte-level BPE, the
//! control tokens as special added tokens) plus a tokenizer_config.json give the same ids and
//! text as llama.cpp on the reference corpus, and the config's special-token facts.

use std::path::PathBuf;

use ryzanstein_server::chat_template::{ChatMessage, ChatTemplate};
use ryzanstein_server::gguf::GgufFile;
use ryzanstein_server::tokenizer::Tokenizer;
use serde_json::{json, Value};

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

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_json_round_trip_matches_llama_cpp() {
    let f = GgufFile::open(model_path()).unwrap();
    let gguf_tok = Tokenizer::from_gguf(&f).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("tokenizer.json");
    gguf_tok.inner().save(&json_path, false).unwrap();
    let template = f.get_str("tokenizer.chat_template").unwrap();
    let config = json!({
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": true},
        "add_bos_token": false,
        "chat_template": template,
    });

    let tok = Tokenizer::from_hf_files(&json_path, Some(&config)).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert!(!tok.add_bos());
    assert_eq!(tok.eos_ids(), &[0, 2], "<|im_end|> (eos) and <|endoftext|>");
    assert!(tok.is_special(2) && !tok.is_special(100));

    let reference_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/smollm2.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(reference_path).unwrap()).unwrap();
    for e in r["entries"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        let want = ids(&e["ids"]);
        assert_eq!(tok.encode(text, false).unwrap(), want, "encode {text:?}");
        assert_eq!(
            tok.decode(&want, true).unwrap(),
            e["decoded"].as_str().unwrap(),
            "decode {want:?}"
        );
    }

    let tmpl = ChatTemplate::from_tokenizer_config(&config)
        .unwrap()
        .unwrap();
    let shared = &r["shared_reference"];
    let prompt = tmpl
        .render(
            &[ChatMessage::new(
                "user",
                shared["user_message"].as_str().unwrap(),
            )],
            true,
        )
        .unwrap();
    assert_eq!(prompt, shared["primary"]["prompt_text"].as_str().unwrap());
}

#[test]
fn unreadable_tokenizer_json_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "{not json").unwrap();
    let e = Tokenizer::from_hf_files(&path, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("not a usable"),
        "{e}"
    );
}
