#!/usr/bin/env python3
"""Write llama.cpp's tokenization of a test corpus as the reference for our tokenizer.

Runs llama.cpp (through the llama-cpp-python package) on the bundled SmolLM2 GGUF with
`vocab_only=True` and writes server/tests/data/tokenizer/smollm2.json, which
server/tests/tokenizer_reference.rs compares against. For every corpus text it records:

  ids             llm.tokenize(text, add_bos=False, special=True)   (special tokens parsed)
  decoded         the ids' pieces (special=False) joined, UTF-8 with errors="replace"
  decoded_special the same with special=True (control tokens rendered)

Pieces come from llama.cpp's llama_token_to_piece (lstrip 0) with a buffer large enough for any
token, joined token by token: that is what llama.cpp's server streams. llm.detokenize is not
used because llama-cpp-python truncates pieces longer than 32 bytes (runs of spaces) and drops a
leading space from the whole text when the first id is BOS.

Usage: ~/.cache/ryzanstein/venv/bin/python scripts/make_tokenizer_refs.py [MODEL.gguf] [OUT.json]
"""

import ast
import ctypes
import hashlib
import json
import os
import re
import sys

import llama_cpp
from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.expanduser(
    os.environ.get(
        "RYZANSTEIN_TEST_MODEL",
        "~/.cache/ryzanstein/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    )
)
DEFAULT_OUT = os.path.join(ROOT, "server/tests/data/tokenizer/smollm2.json")
GREEDY_REF = "/work/shared/reference/smollm2-greedy.json"

RUST_CODE = '''use std::collections::HashMap;

/// Counts words.
fn count(text: &str) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for w in text.split_whitespace() {
        *m.entry(w).or_insert(0) += 1;
    }
    m
}
'''

PYTHON_CODE = '''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
\tprint(f"{fib(10)=}")  # tab-indented on purpose
'''

JSON_TEXT = '''{
  "model": "SmolLM2-135M-Instruct",
  "params": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 256},
  "messages": [{"role": "user", "content": "Hi!\\nHow are you?"}],
  "tags": ["a", "b", null, true, false, -1.5e-3]
}'''

CORPUS = [
    # empty and whitespace
    "",
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\n\n\n\n",
    "\t",
    "\t\t",
    " \t\n",
    "\r\n",
    "line one\r\nline two\r\n",
    "  leading spaces",
    "trailing spaces   ",
    "tabs\t\tand\tnewlines\n\n\nend",
    "mixed \t \n \t\n  \n\t x",
    "a  b   c    d     e",
    "\u00a0non-breaking\u00a0space",
    "ideographic\u3000space",
    "line\u2028separator",
    # plain English, contractions, punctuation
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll see they've said it's fine, but we'd rather not; DON'T.",
    "What's up? Nothing... really!!! (ok) [fine] {sure}",
    "e-mail: someone@example.com, url: https://example.com/a?b=c&d=e#f",
    "    indented text with four spaces",
    # digits and numbers
    "0",
    "12",
    "123",
    "1234",
    "1234567890",
    "3.14159",
    "1,000,000",
    "-42",
    "2024-06-01T12:30:00Z",
    "v1.2.3 and 10x faster, 99.9% of 7B models",
    "٣٤٥ ۱۲۳ ४२",
    "Ⅻ ½ ²³",
    # accents and combining marks
    "Café naïve résumé Ångström façade",
    "e\u0301 a\u0308 n\u0303 (combining marks)",
    "Z\u0351\u0364\u0341a\u0350\u0307l\u0360g\u033a\u0330o\u0354",
    "L'Étoile, la Marseillaise",
    # scripts
    "Ελληνικά γράμματα",
    "Русский текст, ёлки-палки",
    "你好，世界！",
    "こんにちは世界。カタカナ",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "שלום עולם",
    "Mixed: English עברית عربى 中文",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    # emoji and symbols
    "👋🌍🚀",
    "family: 👨‍👩‍👧‍👦 flag: 🏳️‍🌈 skin: 👍🏽",
    "∑∫√∞ ≠ ≤ ≥ → ← ↔ ©®™",
    "€100 £50 ¥1000 ₹500",
    # code
    RUST_CODE,
    PYTHON_CODE,
    JSON_TEXT,
    "<div class=\"x\">&nbsp;</div>",
    "SELECT * FROM users WHERE id = 42;",
    # special tokens inside text
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more",
    "<|im_start|><|im_start|><|im_end|>",
    "<|im_start|> spaced <|im_end|>",
    "<|im_start",
    "<|im_end|",
    "<repo_name>repo<file_sep>path<filename>f.py",
    "<jupyter_code>x = 1<jupyter_output>1<empty_output>",
    # long runs
    "a" * 200,
    " " * 100,
    "\n" * 50,
    "ab" * 100,
    "1" * 40,
]


def repr_field(text, key):
    """One field of a Python-repr'd dict (the shared reference stores its secondary run so)."""
    m = re.search(r"'%s': ('(?:[^'\\\\]|\\\\.)*'|\"(?:[^\"\\\\]|\\\\.)*\"|\[[^\]]*\])" % key, text)
    if m is None:
        sys.exit(f"{GREEDY_REF}: secondary reference has no {key!r}")
    return ast.literal_eval(m.group(1))


def shared_reference(llm, pieces):
    """The shared reference's prompts and greedy texts, checked against llama.cpp here."""
    with open(GREEDY_REF) as f:
        ref = json.load(f)
    sec = ref["secondary_reference_no_system_prompt"]
    if isinstance(sec, str):
        sec = {k: repr_field(sec, k) for k in ("prompt_text", "prompt_ids", "greedy_ids_64", "greedy_text_64")}
    runs = {"primary": ref, "secondary_no_system_prompt": sec}
    out = {"user_message": ref["user_message"]}
    for name, run in runs.items():
        ids = llm.tokenize(run["prompt_text"].encode(), add_bos=False, special=True)
        if ids != run["prompt_ids"]:
            sys.exit(f"{GREEDY_REF} {name}: llama.cpp tokenizes prompt_text to {ids}, not prompt_ids")
        greedy = run["greedy_ids_64"]
        plain = pieces(greedy, False).decode("utf-8", errors="replace")
        special = pieces(greedy, True).decode("utf-8", errors="replace")
        if run["greedy_text_64"] not in (plain, special):
            sys.exit(f"{GREEDY_REF} {name}: greedy_text_64 is neither decode of greedy_ids_64")
        out[name] = {
            "prompt_text": run["prompt_text"],
            "prompt_ids": run["prompt_ids"],
            "greedy_ids_64": greedy,
            "greedy_text_64": run["greedy_text_64"],
            "greedy_text_64_special_rendered": run["greedy_text_64"] == special,
        }
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    if not os.path.exists(model):
        sys.exit(f"{model} not found; run `make model` first")

    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    buf = ctypes.create_string_buffer(256)

    def piece(token, special):
        nonlocal buf
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def pieces(ids, special):
        return b"".join(piece(i, special) for i in ids)

    corpus = list(CORPUS)
    shared = None
    if os.path.exists(GREEDY_REF):
        shared = shared_reference(llm, pieces)
        corpus += [shared["primary"]["prompt_text"], shared["primary"]["greedy_text_64"]]
    else:
        print(f"note: {GREEDY_REF} not found; writing no shared_reference section")

    entries = []
    for text in corpus:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        entries.append(
            {
                "text": text,
                "ids": ids,
                "decoded": pieces(ids, False).decode("utf-8", errors="replace"),
                "decoded_special": pieces(ids, True).decode("utf-8", errors="replace"),
            }
        )

    # Single-token pieces over a spread of ids (and every control token), as hex bytes, so that
    # tokens that are part of a character are compared exactly.
    sample = sorted(
        set(range(0, n_vocab, 97))
        | {i for i in range(n_vocab) if llama_cpp.llama_vocab_is_control(vocab, i)}
    )
    single = [
        {
            "id": i,
            "piece_hex": piece(i, True).hex(),
            "piece_hex_no_special": piece(i, False).hex(),
        }
        for i in sample
    ]

    def opt(x):
        return None if x < 0 else x

    data = {
        "generated_by": "scripts/make_tokenizer_refs.py (do not edit by hand)",
        "model": os.path.basename(model),
        "model_sha256": sha256(model),
        "llama_cpp_python": llama_cpp.__version__,
        "n_vocab": n_vocab,
        "bos_id": opt(llama_cpp.llama_vocab_bos(vocab)),
        "eos_id": opt(llama_cpp.llama_vocab_eos(vocab)),
        "eot_id": opt(llama_cpp.llama_vocab_eot(vocab)),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "eog_ids": [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "control_ids": [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_control(vocab, i)],
        "shared_reference": shared,
        "entries": entries,
        "single_token_pieces": single,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {out}: {len(entries)} texts, {len(single)} single-token pieces")


if __name__ == "__main__":
    main()
