//! Fuzz the GGUF parser: any input must give Ok or Err, never a panic, and every tensor of a
//! header that parses must be viewable over the same bytes.
//!
//! Run (from server/fuzz; needs the nightly toolchain and `cargo install cargo-fuzz`):
//!
//!     mkdir -p corpus/gguf_parse && cp seeds/gguf_parse/* corpus/gguf_parse/
//!     cargo +nightly fuzz run gguf_parse corpus/gguf_parse -- -max_total_time=60
//!
//! A crash is saved under artifacts/gguf_parse/; replay it with
//! `cargo +nightly fuzz run gguf_parse artifacts/gguf_parse/<file>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ryzanstein_server::gguf::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = parse(data) else {
        return;
    };
    for (key, value) in header.metadata() {
        // Pointer equality: NaN floats are not equal to themselves.
        assert!(header.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        let _ = value.type_name();
    }
    let _ = header.architecture();
    let _ = header.get_str_array("tokenizer.ggml.tokens");
    for info in header.tensors() {
        let view = header
            .tensor_in(data, &info.name)
            .expect("a tensor of a parsed header must be in range");
        assert_eq!(view.data.len(), info.n_bytes);
        let _ = view.dtype();
        let _ = view.to_f32_vec();
    }
});
