#!/usr/bin/env python3
"""Compare Ryzanstein with llama.cpp on the same GGUF, the same prompt and the same threads.

Both engines run greedily on one ~128-token prompt and then generate 64 tokens:
  pp = prompt processing speed (prompt tokens / prompt time)
  tg = token generation speed  (generated tokens / generation time)
Each (engine, threads) pair runs in its own process, `--repeats` times after one warm-up run;
the table shows medians. Peak RSS is GNU time's maximum resident set size of each child process,
measured the same way for both (llama.cpp's figure includes the Python interpreter hosting it).

Ryzanstein is `ryzanstein generate --model M --prompt P --max-tokens N --ignore-eos --threads T
--timings`, which prints one JSON line on stderr at the end:
  {"prompt_tokens", "prompt_ms", "gen_tokens", "gen_ms", "threads"}
llama.cpp is llama-cpp-python's low-level API (eval + argmax), run by this same script in a
subprocess (`--llama-worker`).

Run with the venv that has llama-cpp-python: `make bench` (writes docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path.home() / ".cache/ryzanstein/models/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_BIN = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/ryzanstein/target")) / "release/ryzanstein"
MARK_BEGIN = "<!-- bench:begin (written by scripts/bench.py; do not edit by hand) -->"
MARK_END = "<!-- bench:end -->"

# Source text for the prompt; the first --pp-tokens tokens of it (by llama.cpp's tokenizer) are used.
PROMPT_SOURCE = (
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
    "the computers of 1970 combined, and data centres run models with billions of parameters."
)


# --------------------------------------------------------------------------------------------
# llama.cpp worker (runs in a child process so that its peak RSS is its own)
# --------------------------------------------------------------------------------------------

def llama_worker(model: str, prompt: str, threads: int, tg: int, runs: int) -> None:
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(
        model_path=model,
        n_ctx=2048,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=False,
        verbose=False,
    )
    n_vocab = llm.n_vocab()
    add_bos = bool(llm._model.add_bos_token())
    ids = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
    results = []
    for _ in range(runs):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        token = int(np.argmax(logits))
        t1 = time.perf_counter()
        for _ in range(tg):
            llm.eval([token])
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
            token = int(np.argmax(logits))
        t2 = time.perf_counter()
        results.append(
            {
                "prompt_tokens": len(ids),
                "prompt_ms": (t1 - t0) * 1e3,
                "gen_tokens": tg,
                "gen_ms": (t2 - t1) * 1e3,
                "threads": threads,
            }
        )
    print(json.dumps({"version": llama_cpp.__version__, "runs": results}))


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

TIME = "/usr/bin/time"


def run_child(cmd: list[str]) -> tuple[int, str, str, int]:
    """Run cmd; return (exit code, stdout, stderr, peak RSS in KiB).

    Peak RSS comes from GNU time's %M. Measuring with wait4() here would be wrong: Linux carries
    the forking parent's high-water RSS into the child's ru_maxrss, so a child forked from this
    Python process would report at least this process's size. GNU time forks from a tiny process.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss_file:
        code = subprocess.call([TIME, "-q", "-f", "%M", "-o", rss_file.name, *cmd],
                               stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        out.seek(0)
        err.seek(0)
        rss_text = rss_file.read().strip().splitlines()
        rss = int(rss_text[-1]) if rss_text and rss_text[-1].isdigit() else 0
        return code, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"), rss


def make_prompt(model: Path, n_tokens: int) -> tuple[str, int]:
    from llama_cpp import Llama

    # llama.cpp logs a context warning for vocab-only loads even with verbose=False; hide it.
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            llm = Llama(model_path=str(model), n_ctx=512, vocab_only=True, verbose=False)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    ids = llm.tokenize(PROMPT_SOURCE.encode("utf-8"), add_bos=False, special=False)
    if len(ids) < n_tokens:
        sys.exit(f"bench: the prompt source has only {len(ids)} tokens; --pp-tokens must be <= that")
    text = llm.detokenize(ids[:n_tokens]).decode("utf-8")
    n = len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    return text, n


def bench_llama(args, prompt: str, threads: int) -> tuple[list[dict], int, str]:
    runs = args.repeats + 1
    cmd = [sys.executable, __file__, "--llama-worker", "--model", str(args.model), "--prompt", prompt,
           "--threads", str(threads), "--tg-tokens", str(args.tg_tokens), "--repeats", str(runs)]
    code, out, err, rss = run_child(cmd)
    if code != 0:
        sys.exit(f"bench: the llama.cpp worker failed (exit {code}):\n{err}")
    res = json.loads(out.strip().splitlines()[-1])
    return res["runs"][1:], rss, res["version"]


def parse_timings(stderr: str) -> dict:
    for line in reversed(stderr.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if {"prompt_tokens", "prompt_ms", "gen_tokens", "gen_ms"} <= obj.keys():
                return obj
    raise ValueError("no timings JSON line on stderr")


def bench_ours(args, prompt: str, threads: int) -> tuple[list[dict], int]:
    cmd = [str(args.bin), "generate", "--model", str(args.model), "--prompt", prompt,
           "--max-tokens", str(args.tg_tokens), "--ignore-eos", "--threads", str(threads), "--timings"]
    runs, peak = [], 0
    for i in range(args.repeats + 1):
        code, _, err, rss = run_child(cmd)
        if code != 0:
            sys.exit(f"bench: `{' '.join(cmd[:2])} ...` failed (exit {code}):\n{err[-4000:]}")
        try:
            t = parse_timings(err)
        except ValueError:
            sys.exit(f"bench: {args.bin} printed no timings JSON line on stderr "
                     f"(expected keys prompt_tokens, prompt_ms, gen_tokens, gen_ms); stderr:\n{err[-4000:]}")
        if t["gen_tokens"] != args.tg_tokens:
            sys.exit(f"bench: ryzanstein generated {t['gen_tokens']} tokens, expected {args.tg_tokens} "
                     "(is --ignore-eos honoured?)")
        peak = max(peak, rss)
        if i > 0:  # the first run is the warm-up
            runs.append(t)
    return runs, peak


def speeds(runs: list[dict]) -> tuple[float, float]:
    pp = statistics.median(r["prompt_tokens"] / (r["prompt_ms"] / 1e3) for r in runs)
    tg = statistics.median(r["gen_tokens"] / (r["gen_ms"] / 1e3) for r in runs)
    return pp, tg


def cpu_model() -> str:
    """lscpu's model name and the SIMD features that decide which kernels run."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    m = re.search(r"^Model name:\s*(.+)$", out, re.M)
    name = m.group(1).strip() if m else (platform.processor() or "unknown CPU")
    f = re.search(r"^Flags:\s*(.+)$", out, re.M)
    flags = set(f.group(1).split()) if f else set()
    wanted = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"]
    simd = [x for x in wanted if x in flags]
    return f"{name} [{' '.join(simd) or 'no AVX2/AVX-512'}]"


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(args, rows, rss_rows, prompt_tokens: int, llama_version: str) -> str:
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"Measured {date} on {cpu_model()} ({os.cpu_count()} logical CPUs), commit {git_rev()}, "
        f"load average before the run {args.load_before}, after {load}.",
        f"Model {args.model.name}; prompt {prompt_tokens} tokens (pp{prompt_tokens}), "
        f"then {args.tg_tokens} generated tokens (tg{args.tg_tokens}), greedy; "
        f"median of {args.repeats} runs after one warm-up. llama.cpp: llama-cpp-python {llama_version}.",
        "",
        "| test | threads | llama.cpp tok/s | ryzanstein tok/s | ratio (ryzanstein / llama.cpp) |",
        "|---|---:|---:|---:|---:|",
    ]
    for test, threads, ref, ours in rows:
        lines.append(f"| {test} | {threads} | {ref:.1f} | {ours:.1f} | {ours / ref:.3f} |")
    lines += [
        "",
        "| threads | llama.cpp peak RSS (MiB) | ryzanstein peak RSS (MiB) |",
        "|---:|---:|---:|",
    ]
    for threads, ref_kib, ours_kib in rss_rows:
        lines.append(f"| {threads} | {ref_kib / 1024:.0f} | {ours_kib / 1024:.0f} |")
    return "\n".join(lines)


def write_doc(path: Path, table: str) -> None:
    block = f"{MARK_BEGIN}\n{table}\n{MARK_END}"
    text = path.read_text() if path.exists() else ""
    if MARK_BEGIN in text and MARK_END in text:
        pre = text[: text.index(MARK_BEGIN)]
        post = text[text.index(MARK_END) + len(MARK_END):]
        text = pre + block + post
    else:
        text = (text.rstrip() + "\n\n" if text else "# Benchmarks\n\n") + block + "\n"
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=DEFAULT_BIN, help="the ryzanstein binary")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF file used by both engines")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per engine and thread count")
    ap.add_argument("--pp-tokens", type=int, default=128, help="prompt length in tokens")
    ap.add_argument("--tg-tokens", type=int, default=64, help="tokens to generate")
    ap.add_argument("--write", type=Path, help="also write the table into this markdown file between markers")
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prompt", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.llama_worker:
        llama_worker(str(args.model), args.prompt, int(args.threads), args.tg_tokens, args.repeats)
        return 0

    if args.repeats < 1:
        sys.exit("bench: --repeats must be at least 1")
    if not args.model.is_file():
        sys.exit(f"bench: model {args.model} not found; run `make model`")
    if not os.access(TIME, os.X_OK):
        sys.exit(f"bench: {TIME} (GNU time) is needed to measure peak RSS; install the `time` package")
    if not (args.bin.is_file() and os.access(args.bin, os.X_OK)):
        sys.exit(f"bench: {args.bin} not found; build it with `make build` (or pass --bin)")
    try:
        threads_list = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        sys.exit(f"bench: --threads must be comma-separated integers, got {args.threads!r}")

    args.load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    prompt, prompt_tokens = make_prompt(args.model, args.pp_tokens)
    print(f"bench: prompt of {prompt_tokens} tokens, {args.tg_tokens} generated, threads {threads_list}, "
          f"{args.repeats} repeats", file=sys.stderr)

    rows, rss_rows, llama_version = [], [], "?"
    for threads in threads_list:
        print(f"bench: llama.cpp, {threads} thread(s)...", file=sys.stderr)
        ref_runs, ref_rss, llama_version = bench_llama(args, prompt, threads)
        print(f"bench: ryzanstein, {threads} thread(s)...", file=sys.stderr)
        our_runs, our_rss = bench_ours(args, prompt, threads)
        ref_pp, ref_tg = speeds(ref_runs)
        our_pp, our_tg = speeds(our_runs)
        rows.append((f"pp{prompt_tokens}", threads, ref_pp, our_pp))
        rows.append((f"tg{args.tg_tokens}", threads, ref_tg, our_tg))
        rss_rows.append((threads, ref_rss, our_rss))
    rows.sort(key=lambda r: (not r[0].startswith("pp"), r[1]))

    table = render(args, rows, rss_rows, prompt_tokens, llama_version)
    print(table)
    if args.write:
        write_doc(args.write, table)
        print(f"bench: wrote the table into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
