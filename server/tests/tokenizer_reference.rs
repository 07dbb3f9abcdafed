//! Our GGUF tokenizer against llama.cpp on the bundled SmolLM2 model: ids and decoded text for
//! a corpus (unicode, code, whitespace runs, digits, special tokens in text, empty string),
//! single-token pieces, special-token facts, the shared greedy reference, and streaming
//! decoding. The expected values come from llama.cpp through llama-cpp-python
//! (scripts/make_tokenizer_refs.py writes server/tests/data/tokenizer/smollm2.json).

use std::path::PathBuf;
use std::sync::Arc;

use ryzanstein_server::gguf::GgufFile;
use ryzanstein_server::tokenizer::{IncrementalDecoder, Tokenizer};
use serde_json::Value;
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

fn reference() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/smollm2.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/make_tokenizer_refs.py",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn tokenizer() -> Tokenizer {
    let f = GgufFile::open(model_path()).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn reference_was_made_from_this_model() {
    let r = reference();
    let bytes = std::fs::read(model_path()).unwrap();
    let sha = hex(&Sha256::digest(&bytes));
    assert_eq!(
        r["model_sha256"].as_str().unwrap(),
        sha,
        "the reference was generated from another model file; regenerate it with \
         scripts/make_tokenizer_refs.py for this model"
    );
}

#[test]
fn special_token_facts_match_llama_cpp() {
    let r = reference();
    let tok = tokenizer();
    assert_eq!(tok.vocab_size() as u64, r["n_vocab"].as_u64().unwrap());
    assert_eq!(tok.bos_id().map(u64::from), r["bos_id"].as_u64());
    assert_eq!(tok.eos_id().map(u64::from), r["eos_id"].as_u64());
    assert_eq!(tok.add_bos(), r["add_bos"].as_bool().unwrap());
    assert_eq!(tok.eos_ids(), ids(&r["eog_ids"]).as_slice());
    for id in ids(&r["control_ids"]) {
        assert!(
            tok.is_special(id),
            "id {id} is a control token in llama.cpp"
        );
    }
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
}

#[test]
fn corpus_ids_and_decoding_match_llama_cpp() {
    let r = reference();
    let tok = tokenizer();
    let entries = r["entries"].as_array().unwrap();
    assert!(entries.len() >= 70, "corpus too small: {}", entries.len());
    let mut failures = Vec::new();
    for e in entries {
        let text = e["text"].as_str().unwrap();
        let want = ids(&e["ids"]);
        let got = tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!(
                "encode {text:?}:\n  ours  {got:?}\n  llama {want:?}"
            ));
        }
        let decoded = tok.decode(&want, true).unwrap();
        if decoded != e["decoded"].as_str().unwrap() {
            failures.push(format!(
                "decode {want:?}: ours {decoded:?} vs {:?}",
                e["decoded"]
            ));
        }
        let special = tok.decode(&want, false).unwrap();
        if special != e["decoded_special"].as_str().unwrap() {
            failures.push(format!(
                "decode (special) {want:?}: ours {special:?} vs {:?}",
                e["decoded_special"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn single_token_pieces_match_llama_cpp() {
    let r = reference();
    let tok = tokenizer();
    let pieces = r["single_token_pieces"].as_array().unwrap();
    assert!(pieces.len() > 500);
    for p in pieces {
        let id = p["id"].as_u64().unwrap() as u32;
        assert_eq!(
            hex(tok.piece_bytes(id, false).unwrap()),
            p["piece_hex"].as_str().unwrap(),
            "piece of id {id}"
        );
        assert_eq!(
            hex(tok.piece_bytes(id, true).unwrap()),
            p["piece_hex_no_special"].as_str().unwrap(),
            "piece of id {id} without special tokens"
        );
    }
}

#[test]
fn shared_reference_prompts_and_greedy_text() {
    let r = reference();
    let shared = &r["shared_reference"];
    assert!(
        shared.is_object(),
        "smollm2.json has no shared_reference; regenerate it where the shared reference exists"
    );
    let tok = tokenizer();
    for run in ["primary", "secondary_no_system_prompt"] {
        let s = &shared[run];
        let prompt = s["prompt_text"].as_str().unwrap();
        assert_eq!(
            tok.encode(prompt, tok.add_bos()).unwrap(),
            ids(&s["prompt_ids"]),
            "{run} prompt"
        );
        let greedy = ids(&s["greedy_ids_64"]);
        let skip_special = !s["greedy_text_64_special_rendered"].as_bool().unwrap()
            || tok.decode(&greedy, true).unwrap() == tok.decode(&greedy, false).unwrap();
        assert_eq!(
            tok.decode(&greedy, skip_special).unwrap(),
            s["greedy_text_64"].as_str().unwrap(),
            "{run} greedy text"
        );
    }
}

/// Streams `ids` one at a time; returns the chunks (the flush last).
fn stream(tok: &Arc<Tokenizer>, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut dec = IncrementalDecoder::new(tok.clone(), skip_special);
    let mut chunks: Vec<String> = ids.iter().map(|&id| dec.push(id).unwrap()).collect();
    chunks.push(dec.flush());
    chunks
}

#[test]
fn incremental_decoding_streams_the_greedy_text() {
    let r = reference();
    let s = &r["shared_reference"]["primary"];
    let tok = Arc::new(tokenizer());
    let greedy = ids(&s["greedy_ids_64"]);
    let chunks = stream(&tok, &greedy, true);
    assert_eq!(chunks.concat(), s["greedy_text_64"].as_str().unwrap());
    for c in &chunks {
        assert!(
            !c.contains('\u{fffd}'),
            "chunk {c:?} has a replacement char"
        );
    }
}

#[test]
fn incremental_decoding_holds_back_split_characters() {
    let r = reference();
    let tok = Arc::new(tokenizer());
    let mut split_seen = false;
    for e in r["entries"].as_array().unwrap() {
        let want_ids = ids(&e["ids"]);
        for skip_special in [true, false] {
            let chunks = stream(&tok, &want_ids, skip_special);
            let field = if skip_special {
                "decoded"
            } else {
                "decoded_special"
            };
            assert_eq!(chunks.concat(), e[field].as_str().unwrap());
            for (i, c) in chunks.iter().enumerate() {
                assert!(
                    !c.contains('\u{fffd}'),
                    "chunk {i} {c:?} of {:?}",
                    e["text"]
                );
            }
            // Some token of the corpus ends inside a character (emoji, CJK): then a push
            // returned nothing although the token had bytes.
            for (i, &id) in want_ids.iter().enumerate() {
                if chunks[i].is_empty() && !tok.piece_bytes(id, skip_special).unwrap().is_empty() {
                    split_seen = true;
                }
            }
        }
    }
    assert!(
        split_seen,
        "the corpus never split a character across tokens"
    );
}

#[test]
fn invalid_bytes_come_out_as_replacement_chars() {
    let tok = Arc::new(tokenizer());
    // Byte-level tokens for a lone continuation byte and a truncated 3-byte sequence.
    let byte_token = |b: u8| {
        let c = gpt2_byte_char(b);
        tok.token_id(&c.to_string())
            .unwrap_or_else(|| panic!("no token for byte {b:#x}"))
    };
    let ids = [
        byte_token(0x80),
        byte_token(b'a'),
        byte_token(0xe4),
        byte_token(0xbd),
    ];
    let chunks = stream(&tok, &ids, true);
    assert_eq!(chunks[0], "\u{fffd}");
    assert_eq!(chunks[1], "a");
    assert_eq!(chunks[2], "");
    assert_eq!(chunks[3], "");
    assert_eq!(chunks[4], "\u{fffd}");
    assert_eq!(chunks.concat(), tok.decode(&ids, true).unwrap());
}

/// GPT-2's printable stand-in for byte `b`.
fn gpt2_byte_char(b: u8) -> char {
    let mut n = 0u32;
    for x in 0..=255u8 {
        let printable = matches!(x, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        let c = if printable {
            x as char
        } else {
            let c = char::from_u32(256 + n).unwrap();
            n += 1;
            c
        };
        if x == b {
            return c;
        }
    }
    unreachable!()
}
