#!/usr/bin/env python3
"""Speculative decoding by prompt lookup: acceptance rate and speed-up on prompts whose answers
repeat their input (code editing, summarise-and-quote), ours against llama.cpp's prompt lookup.

Per prompt, greedy, --max-tokens (128) at --threads (2), each engine runs plain decoding and
prompt-lookup decoding, taking turns, `--repeats` times after one warm-up round; the table
shows medians.

Ours is `ryzanstein generate --chat --timings` without and with `--draft-max N` (n-grams of
`--draft-ngram-min`..`--draft-ngram`); its timings line gives the prompt and generation times
and the drafted and accepted token counts. Request time = prompt_ms + gen_ms (model loading
excluded). The two outputs must be the same text (speculation never changes an answer; the
script fails otherwise).

llama.cpp is llama-cpp-python's high-level API in a subprocess of this script
(`--llama-worker`): `create_chat_completion` with and without
`draft_model=LlamaPromptLookupDecoding(num_pred_tokens=N)`; request time = the wall time of
that call (model loading excluded). It reports no acceptance counts.

Run with the venv that has llama-cpp-python: `make bench` (writes docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import git_rev  # the same commit stamp as the main table

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path.home() / ".cache/ryzanstein/models/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/ryzanstein/target"))
DEFAULT_BIN = TARGET_DIR / "release/ryzanstein"
MARK_BEGIN = "<!-- speculative:begin (written by scripts/bench_speculative.py; do not edit by hand) -->"
MARK_END = "<!-- speculative:end -->"

PROMPTS = {
    "code editing": (
        "Rename the variable `total` to `subtotal` in this Python function and print the whole "
        "function again:\n\n"
        "def order_total(items, tax_rate):\n"
        "    total = 0\n"
        "    for item in items:\n"
        "        total += item.price * item.quantity\n"
        "    total = total * (1 + tax_rate)\n"
        "    return round(total, 2)\n"
    ),
    "summarise and quote": (
        "Quote the following paragraph exactly, then summarise it in one sentence.\n\n"
        "\"The transistor, invented in 1947, changed everything: it was smaller, cooler and far "
        "more reliable than the vacuum tube. Integrated circuits put many transistors on one "
        "chip, and the microprocessor put a whole computer on a single piece of silicon.\""
    ),
}


def llama_worker(model: str, threads: int, max_tokens: int, draft: int, prompts: list[str]) -> None:
    """One process: load once, then print {"ms", "text"} per prompt and mode (plain, lookup)."""
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    llms = {
        "plain": Llama(model_path=model, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                       verbose=False),
        "lookup": Llama(model_path=model, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                        verbose=False,
                        draft_model=LlamaPromptLookupDecoding(num_pred_tokens=draft)),
    }
    for prompt in prompts:
        for mode, llm in llms.items():
            llm.reset()
            t0 = time.perf_counter()
            out = llm.create_chat_completion(
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens, temperature=0.0, top_k=1)
            ms = (time.perf_counter() - t0) * 1e3
            print(json.dumps({"mode": mode, "ms": ms,
                              "tokens": out["usage"]["completion_tokens"],
                              "text": out["choices"][0]["message"]["content"]}), flush=True)


def run_ours(args, prompt: str, draft: int) -> dict:
    cmd = [str(args.bin), "generate", "--model", str(args.model), "--chat", "--prompt", prompt,
           "--max-tokens", str(args.max_tokens), "--threads", str(args.threads), "--timings",
           "--draft-max", str(draft), "--draft-ngram", str(args.ngram),
           "--draft-ngram-min", str(args.ngram_min)]
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        sys.exit(f"bench_speculative: {' '.join(cmd[:3])} failed:\n{p.stderr[-2000:]}")
    line = next(l for l in reversed(p.stderr.splitlines()) if l.startswith("{"))
    t = json.loads(line)
    return {"ms": t["prompt_ms"] + t["gen_ms"], "tokens": t["gen_tokens"], "text": p.stdout,
            "drafted": t["draft_tokens"], "accepted": t["accepted_tokens"]}


def run_llama(args, prompts: list[str]) -> list[dict]:
    cmd = [sys.executable, __file__, "--llama-worker", "--model", str(args.model),
           "--threads", str(args.threads), "--max-tokens", str(args.max_tokens),
           "--draft-max", str(args.draft_max), "--prompts-json", json.dumps(prompts)]
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        sys.exit(f"bench_speculative: the llama.cpp worker failed:\n{p.stderr[-2000:]}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prompts-json", help=argparse.SUPPRESS)
    ap.add_argument("--bin", type=Path, default=DEFAULT_BIN)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--draft-max", type=int, default=4)
    ap.add_argument("--ngram", type=int, default=3)
    ap.add_argument("--ngram-min", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write", type=Path, help="write the table into this markdown file")
    args = ap.parse_args()
    if args.llama_worker:
        llama_worker(str(args.model), args.threads, args.max_tokens, args.draft_max,
                     json.loads(args.prompts_json))
        return 0
    for path, what in [(args.bin, "the ryzanstein binary (make build)"),
                       (args.model, "the bundled model (make model)")]:
        if not path.exists():
            sys.exit(f"bench_speculative: {path} is missing: {what}")

    names = list(PROMPTS)
    ours = {n: {"plain": [], "lookup": []} for n in names}
    peer = {n: {"plain": [], "lookup": []} for n in names}
    for rep in range(args.repeats + 1):  # round 0 warms up
        for n in names:
            plain = run_ours(args, PROMPTS[n], 0)
            lookup = run_ours(args, PROMPTS[n], args.draft_max)
            if plain["text"] != lookup["text"]:
                sys.exit(f"bench_speculative: {n}: speculative output differs from plain decoding")
            if rep:
                ours[n]["plain"].append(plain)
                ours[n]["lookup"].append(lookup)
        runs = run_llama(args, [PROMPTS[n] for n in names])
        if rep:
            for i, n in enumerate(names):
                for r in runs[2 * i:2 * i + 2]:
                    peer[n][r["mode"]].append(r)
        print(f"bench_speculative: round {rep}/{args.repeats} done", file=sys.stderr)

    med = lambda rs, k: statistics.median(r[k] for r in rs)
    lines = [
        f"Speculative decoding (prompt lookup, up to {args.draft_max} drafted tokens, n-grams "
        f"{args.ngram_min}..{args.ngram}), greedy, {args.max_tokens} tokens at most, "
        f"{args.threads} threads; medians of {args.repeats} runs; request time = prompt + "
        f"generation (model loading excluded). Commit {git_rev()}, "
        f"{dt.date.today().isoformat()}, load average {os.getloadavg()[0]:.1f}.",
        "",
        "| prompt | engine | tokens | plain ms | lookup ms | speed-up | accepted / drafted |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        o, p = ours[n], peer[n]
        drafted = sum(r["drafted"] for r in o["lookup"])
        accepted = sum(r["accepted"] for r in o["lookup"])
        op, ol = med(o["plain"], "ms"), med(o["lookup"], "ms")
        pp, pl = med(p["plain"], "ms"), med(p["lookup"], "ms")
        lines.append(f"| {n} | Ryzanstein | {int(med(o['plain'], 'tokens'))} | {op:.0f} | "
                     f"{ol:.0f} | {op / ol:.2f}x | {accepted}/{drafted} "
                     f"({100 * accepted / max(drafted, 1):.0f}%) |")
        lines.append(f"| {n} | llama.cpp (llama-cpp-python) | {int(med(p['plain'], 'tokens'))} | "
                     f"{pp:.0f} | {pl:.0f} | {pp / pl:.2f}x | n/a |")
    lines.append("")
    lines.append(f"Lookup request time, llama.cpp / Ryzanstein: " + ", ".join(
        f"{n} {med(peer[n]['lookup'], 'ms') / med(ours[n]['lookup'], 'ms'):.2f}x" for n in names))
    table = "\n".join(lines)
    print(table)
    if args.write:
        text = args.write.read_text() if args.write.exists() else "# Benchmarks\n"
        block = f"{MARK_BEGIN}\n{table}\n{MARK_END}"
        if MARK_BEGIN in text and MARK_END in text:
            text = text[:text.index(MARK_BEGIN)] + block + text[text.index(MARK_END) + len(MARK_END):]
        else:
            text = text.rstrip() + "\n\n## Speculative decoding\n\n" + block + "\n"
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
