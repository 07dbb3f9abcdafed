#!/usr/bin/env python3
"""Compare Ryzanstein with llama.cpp on the same GGUF, the same prompts and the same threads.

Per thread count, each engine runs two tests (llama-bench's):
  prefill (pp) = a --pp-tokens prompt (512) evaluated in one call: prompt tokens / prompt time;
                 time to first token (TTFT) = that prompt time plus choosing the first token
  decode  (tg) = --tg-tokens (128) greedy tokens after a short prompt (--tg-prompt-tokens, 16):
                 generated tokens / generation time, end-of-sequence ignored
Per thread count the engines take turns, one run each, `--repeats` times after one warm-up
round (llama.cpp also warms up inside each of its processes); the table shows medians. Peak RSS is GNU time's maximum resident set size of each child process, measured the
same way for both (llama.cpp's figure includes the Python interpreter hosting it).

The bandwidth ceiling: `membw` (kernels/examples/membw.rs, a STREAM-style triad over arrays
eight times the L3, in Rust) measures this machine's memory bandwidth at each thread count;
the bytes of weights a generated token reads come from the GGUF's tensor table (every layer
tensor, the output matrix, the output norm and one embedding row); ceiling = bandwidth / bytes.

Ryzanstein is `ryzanstein generate --model M --prompt P --max-tokens N [--ignore-eos] --threads T
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
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path.home() / ".cache/ryzanstein/models/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/ryzanstein/target"))
DEFAULT_BIN = TARGET_DIR / "release/ryzanstein"
DEFAULT_MEMBW = TARGET_DIR / "release/examples/membw"
MARK_BEGIN = "<!-- bench:begin (written by scripts/bench.py; do not edit by hand) -->"
MARK_END = "<!-- bench:end -->"

# Source text for the prompts: the first --pp-tokens (--tg-prompt-tokens) tokens, by llama.cpp's
# tokenizer, of this paragraph repeated as often as needed.
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

def llama_worker(model: str, pp_prompt: str, tg_prompt: str, threads: int, tg: int, runs: int) -> None:
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
    pp_ids = llm.tokenize(pp_prompt.encode("utf-8"), add_bos=add_bos, special=True)
    tg_ids = llm.tokenize(tg_prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def argmax() -> int:
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))

    results = []
    for _ in range(runs):
        # Prefill: the long prompt in one eval, then the first token.
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(pp_ids)
        argmax()
        t1 = time.perf_counter()
        # Decode: a short prompt, then one eval per generated token.
        llm.reset()
        llm.eval(tg_ids)
        token = argmax()
        t2 = time.perf_counter()
        for _ in range(tg):
            llm.eval([token])
            token = argmax()
        t3 = time.perf_counter()
        results.append(
            {
                "prompt_tokens": len(pp_ids),
                "prompt_ms": (t1 - t0) * 1e3,
                "gen_tokens": tg,
                "gen_ms": (t3 - t2) * 1e3,
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
    """The first `n_tokens` tokens of the source paragraph (repeated), as text, and how many
    tokens that text has when tokenized again."""
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
    one = len(llm.tokenize(PROMPT_SOURCE.encode("utf-8"), add_bos=False, special=False))
    source = "\n\n".join([PROMPT_SOURCE] * (n_tokens // max(one, 1) + 2))
    ids = llm.tokenize(source.encode("utf-8"), add_bos=False, special=False)
    text = llm.detokenize(ids[:n_tokens]).decode("utf-8")
    n = len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    return text, n


def bench_llama(args, pp_prompt: str, tg_prompt: str, threads: int) -> tuple[dict, int, str]:
    """One timed llama.cpp run (after a warm-up run in the same process)."""
    cmd = [sys.executable, __file__, "--llama-worker", "--model", str(args.model),
           "--prompt", pp_prompt, "--tg-prompt", tg_prompt, "--threads", str(threads),
           "--tg-tokens", str(args.tg_tokens), "--repeats", "2"]
    code, out, err, rss = run_child(cmd)
    if code != 0:
        sys.exit(f"bench: the llama.cpp worker failed (exit {code}):\n{err}")
    res = json.loads(out.strip().splitlines()[-1])
    return res["runs"][-1], rss, res["version"]


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


def run_ours(args, prompt: str, threads: int, max_tokens: int,
             extra: tuple[str, ...] = ()) -> tuple[dict, int]:
    """One `ryzanstein generate` process; `extra` are more command-line options."""
    cmd = [str(args.bin), "generate", "--model", str(args.model), "--prompt", prompt,
           "--max-tokens", str(max_tokens), "--ignore-eos", "--threads", str(threads), "--timings",
           *extra]
    code, _, err, rss = run_child(cmd)
    if code != 0:
        sys.exit(f"bench: `{' '.join(cmd[:2])} ...` failed (exit {code}):\n{err[-4000:]}")
    try:
        t = parse_timings(err)
    except ValueError:
        sys.exit(f"bench: {args.bin} printed no timings JSON line on stderr "
                 f"(expected keys prompt_tokens, prompt_ms, gen_tokens, gen_ms); stderr:\n{err[-4000:]}")
    if t["gen_tokens"] != max_tokens:
        sys.exit(f"bench: ryzanstein generated {t['gen_tokens']} tokens, expected {max_tokens} "
                 "(is --ignore-eos honoured?)")
    return t, rss


def bench_ours(args, pp_prompt: str, tg_prompt: str, threads: int) -> tuple[dict, int]:
    """One ryzanstein run: a prefill process and a decode process."""
    pp, rss_pp = run_ours(args, pp_prompt, threads, 1)
    tg, rss_tg = run_ours(args, tg_prompt, threads, args.tg_tokens)
    run = {"prompt_tokens": pp["prompt_tokens"], "prompt_ms": pp["prompt_ms"],
           "gen_tokens": tg["gen_tokens"], "gen_ms": tg["gen_ms"], "threads": threads}
    return run, max(rss_pp, rss_tg)


def speeds(runs: list[dict]) -> tuple[float, float, float]:
    """Median prefill tok/s, decode tok/s and time to first token (ms)."""
    pp = statistics.median(r["prompt_tokens"] / (r["prompt_ms"] / 1e3) for r in runs)
    tg = statistics.median(r["gen_tokens"] / (r["gen_ms"] / 1e3) for r in runs)
    ttft = statistics.median(r["prompt_ms"] for r in runs)
    return pp, tg, ttft


# --------------------------------------------------------------------------------------------
# bytes of weights per generated token (from the GGUF tensor table) and memory bandwidth
# --------------------------------------------------------------------------------------------

# ggml type id -> (values per block, bytes per block)
GGML_TYPES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 30: (1, 2), 34: (256, 54), 35: (256, 66),
}


def gguf_tensors(path: Path) -> dict[str, tuple[list[int], int]]:
    """name -> (dims, bytes) for every tensor of a GGUF file (version 2 or 3, little-endian)."""
    with open(path, "rb") as f:
        def read(fmt: str):
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, f.read(size))

        def read_str() -> str:
            (n,) = read("Q")
            return f.read(n).decode("utf-8", "replace")

        scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

        def skip_value(vtype: int) -> None:
            if vtype == 8:
                read_str()
            elif vtype == 9:
                (item, n) = read("IQ")
                if item in scalar:
                    f.seek(n * struct.calcsize("<" + scalar[item]), 1)
                else:
                    for _ in range(n):
                        skip_value(item)
            else:
                read(scalar[vtype])

        magic, version = f.read(4), read("I")[0]
        if magic != b"GGUF" or version < 2:
            sys.exit(f"bench: {path} is not a GGUF v2/v3 file")
        n_tensors, n_kv = read("QQ")
        for _ in range(n_kv):
            read_str()
            skip_value(read("I")[0])
        tensors = {}
        for _ in range(n_tensors):
            name = read_str()
            (n_dims,) = read("I")
            dims = list(read("Q" * n_dims))
            ttype, _offset = read("IQ")
            if ttype not in GGML_TYPES:
                sys.exit(f"bench: tensor {name} has ggml type {ttype}, unknown to bench.py's size table")
            block, size = GGML_TYPES[ttype]
            n = 1
            for d in dims:
                n *= d
            tensors[name] = (dims, n // block * size)
        return tensors


def weight_bytes_per_token(path: Path, tensors: dict | None = None) -> tuple[int, str]:
    """Bytes of weights one generated token reads: every tensor but the token embedding, plus
    the output matrix (the token embedding itself when tied) and one embedding row. `tensors`
    (name -> (dims, bytes), as gguf_tensors returns) replaces the file's table when given."""
    if tensors is None:
        tensors = gguf_tensors(path)
    embd_dims, embd_bytes = tensors["token_embd.weight"]
    rows = embd_dims[1] if len(embd_dims) > 1 else 1
    total = sum(b for name, (_, b) in tensors.items() if name != "token_embd.weight")
    total += embd_bytes // rows
    tied = "output.weight" not in tensors
    if tied:
        total += embd_bytes
    how = ("every layer tensor, output norm, the tied output matrix (token_embd) and one embedding row"
           if tied else "every layer tensor, output norm, the output matrix and one embedding row")
    return total, how


def measure_bandwidth(args, threads_list: list[int]) -> dict[int, dict]:
    if not (args.membw.is_file() and os.access(args.membw, os.X_OK)):
        sys.exit(f"bench: {args.membw} not found; build it with "
                 "`cargo build --release -p ryzanstein-kernels --example membw` (make bench does)")
    out = subprocess.run([str(args.membw), "--threads", ",".join(map(str, threads_list))],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: {args.membw} failed (exit {out.returncode}):\n{out.stderr}")
    res = {}
    for line in out.stdout.splitlines():
        obj = json.loads(line)
        res[int(obj["threads"])] = obj
    return res


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

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
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no",
                                "--", "kernels", "server"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(args, results, bandwidth, weight_bytes, weight_how, prompts, llama_version: str) -> str:
    """results: threads -> (llama (pp, tg, ttft), ours (pp, tg, ttft), llama rss KiB, ours rss KiB)."""
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    pp_n, tg_prompt_n = prompts
    lines = [
        f"Measured {date} on {cpu_model()} ({os.cpu_count()} logical CPUs), commit {git_rev()}, "
        f"load average before the run {args.load_before}, after {load}.",
        f"Model {args.model.name}. Prefill: a {pp_n}-token prompt in one call (pp{pp_n}); decode: "
        f"{args.tg_tokens} greedy tokens after a {tg_prompt_n}-token prompt (tg{args.tg_tokens}). "
        f"Median of {args.repeats} runs after one warm-up. llama.cpp: llama-cpp-python {llama_version}.",
        "",
        "| test | threads | llama.cpp | ryzanstein | ratio (ryzanstein / llama.cpp) | target |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for threads, (ref, ours, _, _) in results.items():
        rows.append((0, threads, f"decode tg{args.tg_tokens} (tok/s)", ref[1], ours[1], "1", "≥ 1.50"))
    for threads, (ref, ours, _, _) in results.items():
        rows.append((1, threads, f"prefill pp{pp_n} (tok/s)", ref[0], ours[0], "1", "≥ 1.25"))
    for threads, (ref, ours, _, _) in results.items():
        rows.append((2, threads, f"time to first token, {pp_n}-token prompt (ms)", ref[2], ours[2], "0", ""))
    for threads, (_, _, ref_rss, our_rss) in results.items():
        rows.append((3, threads, "peak RSS (MiB)", ref_rss / 1024, our_rss / 1024, "0", "≤ 1.00"))
    for _, threads, name, ref, ours, digits, target in sorted(rows, key=lambda r: (r[0], r[1])):
        fmt = f"{{:.{digits}f}}"
        lines.append(f"| {name} | {threads} | {fmt.format(ref)} | {fmt.format(ours)} | {ours / ref:.3f} | {target} |")
    lines += [
        "",
        f"Weights read per generated token: {weight_bytes / 1e6:.1f} MB ({weight_how}; from the GGUF "
        "tensor table). Bandwidth: `membw` (kernels/examples/membw.rs), best of 10 passes over "
        f"{next(iter(bandwidth.values()))['array_mib']} MiB arrays; ceiling = triad bandwidth / "
        "weight bytes per token.",
        "",
        "| threads | triad (GB/s) | read-only (GB/s) | decode ceiling (tok/s) | llama.cpp decode / ceiling "
        "| ryzanstein decode / ceiling |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for threads, (ref, ours, _, _) in results.items():
        bw = bandwidth.get(threads)
        if not bw:
            continue
        ceiling = bw["triad_gbs"] * 1e9 / weight_bytes
        lines.append(f"| {threads} | {bw['triad_gbs']:.1f} | {bw['read_gbs']:.1f} | {ceiling:.0f} | "
                     f"{ref[1] / ceiling:.0%} | {ours[1] / ceiling:.0%} |")
    lines += ["", "Targets (issue P3): decode ≥ 1.5× llama.cpp at 1 and 2 threads and ≥ 70% of the "
              "ceiling at 1 thread; prefill ≥ 1.25×; peak RSS ≤ llama.cpp's."]
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
    ap.add_argument("--membw", type=Path, default=DEFAULT_MEMBW, help="the membw bandwidth binary")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF file used by both engines")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per engine and thread count")
    ap.add_argument("--pp-tokens", type=int, default=512, help="prefill prompt length in tokens")
    ap.add_argument("--tg-tokens", type=int, default=128, help="tokens to generate in the decode test")
    ap.add_argument("--tg-prompt-tokens", type=int, default=16, help="prompt length of the decode test")
    ap.add_argument("--write", type=Path, help="also write the table into this markdown file between markers")
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prompt", help=argparse.SUPPRESS)
    ap.add_argument("--tg-prompt", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.llama_worker:
        llama_worker(str(args.model), args.prompt, args.tg_prompt, int(args.threads), args.tg_tokens,
                     args.repeats)
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
    weight_bytes, weight_how = weight_bytes_per_token(args.model)
    pp_prompt, pp_n = make_prompt(args.model, args.pp_tokens)
    tg_prompt, tg_prompt_n = make_prompt(args.model, args.tg_prompt_tokens)
    print(f"bench: prefill prompt of {pp_n} tokens; decode {args.tg_tokens} tokens after {tg_prompt_n}; "
          f"threads {threads_list}, {args.repeats} repeats", file=sys.stderr)
    print("bench: memory bandwidth...", file=sys.stderr)
    bandwidth = measure_bandwidth(args, threads_list)

    # The engines take turns, run by run, so that a change in the machine's load during the
    # bench hits both alike. Each engine's first run is a warm-up (page cache, allocator).
    results, llama_version = {}, "?"
    for threads in threads_list:
        ref_runs, our_runs, ref_rss, our_rss = [], [], 0, 0
        for i in range(args.repeats + 1):
            print(f"bench: {threads} thread(s), run {i + 1} of {args.repeats + 1}"
                  f"{' (warm-up)' if i == 0 else ''}...", file=sys.stderr)
            ref, rss, llama_version = bench_llama(args, pp_prompt, tg_prompt, threads)
            ref_rss = max(ref_rss, rss)
            ours, rss = bench_ours(args, pp_prompt, tg_prompt, threads)
            our_rss = max(our_rss, rss)
            if i > 0:
                ref_runs.append(ref)
                our_runs.append(ours)
        results[threads] = (speeds(ref_runs), speeds(our_runs), ref_rss, our_rss)

    table = render(args, results, bandwidth, weight_bytes, weight_how, (pp_n, tg_prompt_n), llama_version)
    print(table)
    if args.write:
        write_doc(args.write, table)
        print(f"bench: wrote the table into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
