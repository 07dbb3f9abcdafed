//! The bundled SmolLM2 GGUF's own chat template, rendered and tokenized, against llama.cpp:
//! the shared greedy reference's prompt and every chat prompt of the engine references
//! (server/tests/data/llama_refs/chat_*.json).

use std::path::PathBuf;

use ryzanstein_server::chat_template::{ChatMessage, ChatTemplate};
use ryzanstein_server::gguf::GgufFile;
use ryzanstein_server::tokenizer::Tokenizer;
use serde_json::Value;

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

fn data(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn load() -> (Tokenizer, ChatTemplate) {
    let f = GgufFile::open(model_path()).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let tmpl = ChatTemplate::from_gguf(&f, &tok)
        .unwrap()
        .expect("SmolLM2's GGUF has tokenizer.chat_template");
    (tok, tmpl)
}

#[test]
fn shared_reference_prompt_renders_and_tokenizes_exactly() {
    let r = data("tokenizer/smollm2.json");
    let shared = &r["shared_reference"];
    assert!(
        shared.is_object(),
        "smollm2.json has no shared_reference section"
    );
    let (tok, tmpl) = load();
    let messages = [ChatMessage::new(
        "user",
        shared["user_message"].as_str().unwrap(),
    )];
    let prompt = tmpl.render(&messages, true).unwrap();
    assert_eq!(prompt, shared["primary"]["prompt_text"].as_str().unwrap());
    assert!(!tok.add_bos());
    assert_eq!(
        tok.encode(&prompt, tok.add_bos()).unwrap(),
        ids(&shared["primary"]["prompt_ids"])
    );
}

#[test]
fn every_reference_chat_prompt_renders_and_tokenizes_exactly() {
    let (tok, tmpl) = load();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/llama_refs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let r = data(&format!("llama_refs/{name}"));
        let prompt_text = r["prompt_text"].as_str().unwrap();
        if r["kind"] == "chat" {
            let messages: Vec<ChatMessage> = serde_json::from_value(r["messages"].clone()).unwrap();
            assert_eq!(
                tmpl.render(&messages, true).unwrap(),
                prompt_text,
                "{name}: rendered prompt"
            );
        }
        assert_eq!(
            tok.encode(prompt_text, tok.add_bos()).unwrap(),
            ids(&r["prompt_ids"]),
            "{name}: prompt ids"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} reference files in {}",
        dir.display()
    );
}

#[test]
fn template_without_generation_prompt_ends_after_the_last_turn() {
    let (_, tmpl) = load();
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
    ];
    assert_eq!(
        tmpl.render(&messages, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n"
    );
}
