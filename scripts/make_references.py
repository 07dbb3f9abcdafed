#!/usr/bin/env python3
"""Write llama.cpp reference outputs for the engine's token-for-token tests.

For each prompt below, run llama.cpp (through llama-cpp-python's low-level API) greedily for
N steps on the bundled GGUF and write server/tests/data/llama_refs/<name>.json with the prompt's
token ids, the greedy token ids, and the top-5 logits and top-1/top-2 margin of every step. The
field names follow /work/shared/reference/smollm2-greedy.json (prompt_text, prompt_ids,
greedy_ids, steps_top5_logits).

Before writing, the script re-derives the shared reference's own prompt and checks that this
setup reproduces its ids and logits, so a mismatch in settings is caught here, not in Rust.

Run it with `make references`, which builds llama-cpp-python for AVX2 (GGML_NATIVE=OFF,
AVX2/FMA/F16C on, AVX-512 off) into ~/.cache/ryzanstein/venv-refs first: the shared reference
was made by such a build, an AVX-512 build sums in another order, and the script checks that it
reproduces the shared reference before writing anything. llama-cpp-python's defaults are used:
no flash attention.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

try:
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError as exc:  # pragma: no cover - environment check
    sys.exit(
        f"make_references: {exc}. Run `make setup-bench` and use "
        "~/.cache/ryzanstein/venv/bin/python."
    )

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path.home() / ".cache/ryzanstein/models/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_OUT = REPO / "server/tests/data/llama_refs"
SHARED_REF = REPO.parent / "shared/reference/smollm2-greedy.json"

N_CTX = 2048
N_BATCH = 512
N_THREADS = 2
N_STEPS = 32
TOP_K = 5

LONG_TEXT = (
    "The history of computing is a story of ever smaller and faster machines. Early mechanical "
    "calculators could add and subtract; Charles Babbage designed an analytical engine that "
    "could, in principle, run any program, and Ada Lovelace wrote what many consider the first "
    "algorithm intended for such a machine. A century later, electronic computers filled whole "
    "rooms, used thousands of vacuum tubes, and consumed as much power as a small town. The "
    "transistor, invented in 1947, changed everything: it was smaller, cooler and far more "
    "reliable. Integrated circuits put many transistors on one chip, and the microprocessor put "
    "a whole central processing unit on a single piece of silicon. Since then, the number of "
    "transistors on a chip has doubled roughly every two years, an observation known as Moore's "
    "law. Caches, pipelines, branch predictors and vector units made each core faster, and "
    "multiple cores made each chip wider. Today a laptop holds more computing power than all "
    "the computers of 1970 combined, and data centres run models with billions of parameters. "
    "Yet the basic idea is unchanged: a processor reads instructions and data from memory, "
    "computes, and writes results back. The hard part, now as then, is moving data quickly "
    "enough to keep the arithmetic units busy. In one sentence, the main lesson of this "
    "history is that"
)

# (name, kind, payload). kind "chat": payload is a list of messages rendered with the GGUF's own
# chat template (add_generation_prompt=True). kind "raw": payload is the completion prompt text.
PROMPTS: list[tuple[str, str, object]] = [
    ("chat_capital_france", "chat", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "chat_system_colors",
        "chat",
        [
            {"role": "system", "content": "You are a concise assistant. Answer in one line."},
            {"role": "user", "content": "Name the three primary colors."},
        ],
    ),
    (
        "chat_multi_turn_haiku",
        "chat",
        [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "Write a haiku about the sea."},
        ],
    ),
    (
        "chat_explain_cache",
        "chat",
        [{"role": "user", "content": "Explain what a CPU cache is in one sentence."}],
    ),
    (
        "chat_translate_spanish",
        "chat",
        [{"role": "user", "content": "Translate \"good morning, my friend\" into Spanish."}],
    ),
    ("raw_code_python", "raw", 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'),
    ("raw_list_shopping", "raw", "Shopping list:\n1. Milk\n2."),
    ("raw_story_opening", "raw", "Once upon a time, in a small village by the sea,"),
    ("raw_numbers", "raw", "1, 2, 3, 4, 5, 6, 7, 8,"),
    ("raw_french", "raw", "La tour Eiffel est située à Paris. Elle a été construite en"),
    ("raw_chinese", "raw", "北京是中国的首都，也是"),
    ("raw_whitespace", "raw", "  Hello,\n\n\tworld!  "),
    ("raw_long_context", "raw", LONG_TEXT),
]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def raise_exception(message: str):
    raise ValueError(f"chat template raised: {message}")


def render_chat(template: str, messages: list[dict], bos: str, eos: str) -> str:
    """Render like Hugging Face transformers and llama-cpp-python's Jinja2 formatter do."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos
    )


class Reference:
    def __init__(self, model_path: Path, n_threads: int):
        self.llm = Llama(
            model_path=str(model_path),
            n_ctx=N_CTX,
            n_batch=N_BATCH,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=False,
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()
        self.add_bos = bool(self.llm._model.add_bos_token())
        meta = self.llm.metadata
        self.template = meta.get("tokenizer.chat_template")
        self.bos_id = self.llm.token_bos()
        self.eos_id = self.llm.token_eos()
        self.eot_id = self.llm._model.token_eot()
        self.bos = self.piece(self.bos_id)
        self.eos = self.piece(self.eos_id)

    def piece(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=self.add_bos, special=True)

    def last_logits(self) -> np.ndarray:
        ptr = self.llm._ctx.get_logits()
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32).copy()

    def run(self, prompt_ids: list[int], n_steps: int) -> tuple[list[int], list[dict]]:
        llm = self.llm
        llm.reset()
        llm.eval(prompt_ids)
        greedy: list[int] = []
        steps: list[dict] = []
        for step in range(n_steps):
            logits = self.last_logits()
            if not np.all(np.isfinite(logits)):
                raise RuntimeError(f"non-finite logits at step {step}")
            # Sort by logit descending, then by id ascending (argmax picks the lowest id on ties).
            order = np.lexsort((np.arange(self.n_vocab), -logits))[:TOP_K]
            top = [[int(i), float(logits[i])] for i in order]
            steps.append(
                {"step": step, "top5": top, "margin_top1_top2": float(logits[order[0]] - logits[order[1]])}
            )
            token = int(order[0])
            greedy.append(token)
            llm.eval([token])
        return greedy, steps


def build_case(ref: Reference, name: str, kind: str, payload, n_steps: int, meta: dict) -> dict:
    if kind == "chat":
        if not ref.template:
            raise RuntimeError("the GGUF has no tokenizer.chat_template; cannot render chat prompts")
        prompt_text = render_chat(ref.template, payload, ref.bos, ref.eos)
    else:
        prompt_text = payload
    prompt_ids = ref.tokenize(prompt_text)
    if len(prompt_ids) + n_steps > N_CTX:
        raise RuntimeError(f"{name}: {len(prompt_ids)} prompt tokens + {n_steps} steps exceed n_ctx {N_CTX}")
    greedy, steps = ref.run(prompt_ids, n_steps)
    stops = {ref.eos_id, ref.eot_id}
    eos_index = next((i for i, t in enumerate(greedy) if t in stops), None)
    case = {
        "name": name,
        "kind": kind,
    }
    if kind == "chat":
        case["messages"] = payload
    case.update(
        {
            "prompt_text": prompt_text,
            "prompt_ids": prompt_ids,
            "prompt_pieces": [ref.piece(t) for t in prompt_ids],
            "greedy_ids": greedy,
            "greedy_text": ref.llm.detokenize(greedy, special=True).decode("utf-8", errors="replace"),
            "greedy_pieces": [ref.piece(t) for t in greedy],
            "eos_index": eos_index,
            "min_margin": min(s["margin_top1_top2"] for s in steps),
            "steps_top5_logits": steps,
        }
    )
    case.update(meta)
    return case


def check_against_shared(ref: Reference, shared_path: Path, n_steps: int) -> bool:
    """Reproduce the shared reference's prompt and compare ids and logits. Returns True if equal."""
    shared = json.loads(shared_path.read_text())
    messages = [{"role": "user", "content": shared["user_message"]}]
    text = render_chat(shared["metadata_chat_template"], messages, ref.bos, ref.eos)
    ok = True
    if text != shared["prompt_text"]:
        print(f"  prompt_text differs from the shared reference:\n    ours  {text!r}\n    theirs {shared['prompt_text']!r}")
        ok = False
    ids = ref.tokenize(shared["prompt_text"])
    if ids != shared["prompt_ids"]:
        print(f"  prompt_ids differ: ours {ids} vs shared {shared['prompt_ids']}")
        ok = False
    n = min(n_steps, len(shared["steps_top5_logits"]), len(shared["greedy_ids_64"]))
    greedy, steps = ref.run(shared["prompt_ids"], n)
    if greedy != shared["greedy_ids_64"][:n]:
        print(f"  greedy ids differ in the first {n} steps: ours {greedy} vs shared {shared['greedy_ids_64'][:n]}")
        ok = False
    max_diff = 0.0
    for ours, theirs in zip(steps, shared["steps_top5_logits"][:n]):
        if [t[0] for t in ours["top5"]] != [t[0] for t in theirs["top5"]]:
            print(f"  step {ours['step']}: top-5 ids differ: ours {ours['top5']} vs shared {theirs['top5']}")
            ok = False
            continue
        for (_, a), (_, b) in zip(ours["top5"], theirs["top5"]):
            max_diff = max(max_diff, abs(a - b))
    print(f"  shared reference check over {n} steps: ids {'equal' if ok else 'DIFFER'}, max |top-5 logit diff| = {max_diff:.3g}")
    return ok and max_diff <= 1e-4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path(os.environ.get("RYZANSTEIN_TEST_MODEL", DEFAULT_MODEL)))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=N_STEPS)
    ap.add_argument("--threads", type=int, default=N_THREADS)
    ap.add_argument("--shared-ref", type=Path, default=SHARED_REF)
    ap.add_argument("--only", action="append", help="write only this case (repeatable)")
    args = ap.parse_args()

    if not args.model.is_file():
        print(f"make_references: model {args.model} not found; run `make model`", file=sys.stderr)
        return 1
    sha = sha256_file(args.model)
    if sha != MODEL_SHA256 and args.model == DEFAULT_MODEL:
        print(f"make_references: {args.model} has sha256 {sha}, want {MODEL_SHA256}; "
              "delete it and run `make model`", file=sys.stderr)
        return 1

    ref = Reference(args.model, args.threads)
    print(f"llama-cpp-python {llama_cpp.__version__}, model {args.model.name} (sha256 {sha[:12]}...), "
          f"n_threads {args.threads}, add_bos {ref.add_bos}, bos {ref.bos_id} eos {ref.eos_id} eot {ref.eot_id}")

    if args.shared_ref.is_file() and sha == MODEL_SHA256:
        print(f"sanity check against {args.shared_ref}:")
        if not check_against_shared(ref, args.shared_ref, args.steps):
            print("make_references: this setup does not reproduce the shared reference; "
                  "fix the settings before writing references. The reference comes from llama.cpp "
                  "built for AVX2 (an AVX-512 build sums in another order): rebuild with "
                  "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON "
                  "-DGGML_F16C=ON -DGGML_AVX512=OFF' pip install --force-reinstall --no-cache-dir "
                  "llama-cpp-python==0.3.36 (into a separate venv, and run this script with it)",
                  file=sys.stderr)
            return 1
    else:
        print(f"skipping the shared reference check ({args.shared_ref} missing or a different model)")

    meta = {
        "model": args.model.name,
        "model_sha256": sha,
        "engine": f"llama-cpp-python {llama_cpp.__version__}",
        "llama_cpp_python_version": llama_cpp.__version__,
        "n_threads": args.threads,
        "n_ctx": N_CTX,
        "n_batch": N_BATCH,
        "n_steps": args.steps,
        "add_bos": ref.add_bos,
        "bos_id": ref.bos_id,
        "eos_id": ref.eos_id,
        "eot_id": ref.eot_id,
        "sampling": "argmax over the logits of the last position (ties: lowest id)",
        "generated_by": "scripts/make_references.py",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    names = {p[0] for p in PROMPTS}
    for only in args.only or []:
        if only not in names:
            print(f"make_references: unknown case {only!r}; known: {sorted(names)}", file=sys.stderr)
            return 2
    for name, kind, payload in PROMPTS:
        if args.only and name not in args.only:
            continue
        case = build_case(ref, name, kind, payload, args.steps, meta)
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(case, indent=1, ensure_ascii=False) + "\n")
        margin = case["min_margin"]
        print(f"  {path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
              f"{len(case['prompt_ids'])} prompt tokens, {len(case['greedy_ids'])} steps, "
              f"min margin {margin:.3f}, eos at {case['eos_index']}: {case['greedy_text'][:60]!r}")
        assert math.isfinite(margin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
