#!/usr/bin/env python3
"""Make the Q4_K_M GGUF of the bundled model with llama.cpp, and (optionally) its references.

1. Requantise the bundled SmolLM2-135M-Instruct Q4_1 GGUF to Q4_K_M with llama.cpp's own
   quantiser (llama-cpp-python's `llama_model_quantize`, allow_requantize, no imatrix, one
   thread) into ~/.cache/ryzanstein/models/SmolLM2-135M-Instruct.Q4_K_M.gguf. The output is
   deterministic; its sha256 is pinned below and checked, so a different llama.cpp (another
   quantiser) is caught here instead of as mismatching logits.

   For this model llama.cpp's Q4_K_M is a mix: 576-wide rows are not a whole number of 256-value
   super-blocks, so every tensor but ffn_down falls back (Q4_K -> Q5_0, Q6_K -> Q8_0; the tied
   token embedding is Q8_0); ffn_down (1536-wide rows) is Q4_K, or Q6_K in the layers
   llama.cpp gives more bits. The script prints the type of every tensor.

2. With --references, write greedy references for a few prompts into
   server/tests/data/llama_refs_q4_k_m/ exactly as scripts/make_references.py does for the Q4_1
   model (same settings, same JSON fields), with the Q4_K_M file's sha256 in each.

Run it with the AVX2 build of llama-cpp-python (`make references` builds it into
~/.cache/ryzanstein/venv-refs): ~/.cache/ryzanstein/venv-refs/bin/python scripts/make_q4_k_m.py
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_references as refs  # noqa: E402  (the sibling script: settings and the runner)

try:
    import llama_cpp
except ImportError as exc:  # pragma: no cover - environment check
    sys.exit(f"make_q4_k_m: {exc}. Run `make references` (it builds ~/.cache/ryzanstein/venv-refs).")

MODELS = Path.home() / ".cache/ryzanstein/models"
SOURCE = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET = MODELS / "SmolLM2-135M-Instruct.Q4_K_M.gguf"
# sha256 of TARGET as llama-cpp-python 0.3.36's quantiser writes it from the pinned Q4_1 file.
TARGET_SHA256 = "dc0f3a02e821146247a0af6895adf9872124f368682cb110cb9ed09ff2a9f9f1"
OUT = refs.REPO / "server/tests/data/llama_refs_q4_k_m"

# A chat prompt, a raw prompt, and the long context (prefill in one batch of many rows).
CASES = ["chat_capital_france", "raw_story_opening", "raw_code_python", "raw_long_context"]

GGML_TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
                   10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}


def quantize(source: Path, target: Path) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.allow_requantize = True
    params.nthread = 1
    tmp = target.with_suffix(".gguf.tmp")
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed with {rc}")
    tmp.replace(target)


def tensor_types(path: Path) -> dict[str, str]:
    """Tensor name -> ggml type name, read with gguf-py if present, else from llama.cpp's log."""
    try:
        from gguf import GGUFReader  # llama-cpp-python does not ship it; optional
    except ImportError:
        return {}
    r = GGUFReader(str(path))
    return {t.name: GGML_TYPE_NAMES.get(int(t.tensor_type), str(int(t.tensor_type))) for t in r.tensors}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--target", type=Path, default=TARGET)
    ap.add_argument("--references", action="store_true", help="also write the reference JSON files")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--force", action="store_true", help="requantise even if the target exists")
    args = ap.parse_args()

    if not args.source.is_file():
        print(f"make_q4_k_m: {args.source} not found; run `make model`", file=sys.stderr)
        return 1
    if refs.sha256_file(args.source) != refs.MODEL_SHA256:
        print(f"make_q4_k_m: {args.source} is not the pinned Q4_1 model; run `make model`", file=sys.stderr)
        return 1
    if args.force or not args.target.is_file() or refs.sha256_file(args.target) != TARGET_SHA256:
        print(f"quantising {args.source.name} -> {args.target} (Q4_K_M, llama-cpp-python {llama_cpp.__version__})")
        quantize(args.source, args.target)
    sha = refs.sha256_file(args.target)
    print(f"{args.target}: sha256 {sha}")
    if sha != TARGET_SHA256:
        print(f"make_q4_k_m: sha256 {sha} differs from the pinned {TARGET_SHA256}: another llama.cpp "
              "quantiser? Update TARGET_SHA256 and regenerate the references together.", file=sys.stderr)
        return 1
    for name, t in sorted(tensor_types(args.target).items()):
        print(f"  {name:32} {t}")

    if not args.references:
        return 0
    ref = refs.Reference(args.target, refs.N_THREADS)
    meta = {
        "model": args.target.name,
        "model_sha256": sha,
        "made_from": f"{args.source.name} (sha256 {refs.MODEL_SHA256}) by llama_model_quantize "
                     "(LLAMA_FTYPE_MOSTLY_Q4_K_M, allow_requantize, 1 thread)",
        "engine": f"llama-cpp-python {llama_cpp.__version__}",
        "llama_cpp_python_version": llama_cpp.__version__,
        "n_threads": refs.N_THREADS,
        "n_ctx": refs.N_CTX,
        "n_batch": refs.N_BATCH,
        "n_steps": refs.N_STEPS,
        "add_bos": ref.add_bos,
        "bos_id": ref.bos_id,
        "eos_id": ref.eos_id,
        "eot_id": ref.eot_id,
        "sampling": "argmax over the logits of the last position (ties: lowest id)",
        "generated_by": "scripts/make_q4_k_m.py --references",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    prompts = {p[0]: p for p in refs.PROMPTS}
    for name in CASES:
        _, kind, payload = prompts[name]
        case = refs.build_case(ref, name, kind, payload, refs.N_STEPS, meta)
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(case, indent=1, ensure_ascii=False) + "\n")
        print(f"  {path.relative_to(refs.REPO)}: {len(case['prompt_ids'])} prompt tokens, "
              f"min margin {case['min_margin']:.3f}: {case['greedy_text'][:60]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
