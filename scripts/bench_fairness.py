#!/usr/bin/env python3
"""Tenant fairness benchmark: how much one tenant's burst raises another tenant's time to
first token, ours (tenant-fair queue) against llama.cpp's `llama-server` (no tenants), on the
same GGUF file and the same thread count.

Two tenants, both sending streaming chat completions (temperature 0, `ignore_eos: true`,
`stream_options.include_usage`) through the client of scripts/bench_serving.py:
  burst:  --burst-clients (24) clients sending requests of --burst-tokens (128) tokens back to
          back, more than the servers' 16 slots, so requests queue;
  steady: one client sending --steady-requests (24) requests of --steady-tokens (16) tokens,
          one after the other (the tenant whose latency is measured).
TTFT = from just before the request is sent to the first chunk with content (queueing and
prefill included). p50/p99 over the steady tenant's requests (linear interpolation).

Runs, each on a freshly started server, --parallel 16 on both:
  ours, steady alone;
  ours, steady during the burst, the two tenants with their own API keys
      (`--api-key-file` with `burst KEY` and `steady KEY`; no limits, so only the fair
      queue acts);
  ours, steady during the burst, both with the burst's key: one tenant, so the queue is
      plain FIFO (what the steady client would see without tenant fairness);
  llama-server, steady alone, and during the burst.
Ours runs with --queue-size 64 so the burst fits the queue (llama-server queues without a
bound). The burst starts first and has filled every slot before the steady client begins;
burst throughput is the burst's generated tokens over the steady client's measuring window.

Run by `make bench` and `make bench-fairness` (writes docs/BENCHMARKS.md). Standard library
only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import cpu_model, git_rev
from bench_serving import (DEFAULT_BIN, DEFAULT_LLAMA_SERVER, DEFAULT_MODEL, QUESTIONS,
                           SHORT_SYSTEM, SLOTS, Server, llama_server, llama_server_version, ms,
                           ours_server, percentile, ratio, stream_chat, write_doc)

MARK_BEGIN = "<!-- fairness:begin (written by scripts/bench_fairness.py; do not edit by hand) -->"
MARK_END = "<!-- fairness:end -->"
KEYS = {"burst": "sk-bench-burst", "steady": "sk-bench-steady"}


def run(server: Server, args, burst: bool, steady_key: str | None, burst_key: str | None) -> dict:
    """The steady client's TTFTs, with or without the burst running alongside."""
    stop = threading.Event()
    errors: list[BaseException] = []
    burst_results: list[dict] = []
    lock = threading.Lock()

    def burst_client(i: int) -> None:
        n = 0
        while not stop.is_set():
            q = QUESTIONS[(i * 7 + n) % len(QUESTIONS)]
            n += 1
            try:
                r = stream_chat(server.port, SHORT_SYSTEM, q, args.burst_tokens, burst_key)
            except BaseException as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(e)
                return
            with lock:
                burst_results.append(r)

    threads = []
    if burst:
        threads = [threading.Thread(target=burst_client, args=(i,), daemon=True)
                   for i in range(args.burst_clients)]
        for t in threads:
            t.start()
        # Let the burst fill every slot and the queue behind them.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if server.running(server.scrape()) >= SLOTS:
                    break
            except OSError:  # a busy llama-server can be slow to answer /metrics
                pass
            time.sleep(0.1)
        time.sleep(1.0)
    steady: list[dict] = []
    t0 = time.perf_counter()
    try:
        for i in range(args.steady_requests):
            q = QUESTIONS[(50 + i) % len(QUESTIONS)]
            steady.append(stream_chat(server.port, SHORT_SYSTEM, q, args.steady_tokens, steady_key))
    finally:
        t1 = time.perf_counter()
        stop.set()
        for t in threads:
            t.join()
    if errors:
        raise RuntimeError(f"{server.name}: a burst request failed: {errors[0]}")
    # Burst tokens generated inside the steady window, pro rata for requests that overlap it.
    burst_tokens = 0.0
    for r in burst_results:
        span = r["end"] - r["start"]
        inside = max(0.0, min(r["end"], t1) - max(r["start"], t0))
        burst_tokens += r["tokens"] * (inside / span if span > 0 else 0.0)
    ttft = [r["ttft"] for r in steady]
    return {"p50": percentile(ttft, 50), "p99": percentile(ttft, 99), "max": max(ttft),
            "burst_tok_s": burst_tokens / (t1 - t0) if burst else float("nan"),
            "n": len(steady)}


def render(args, rows: list[tuple[str, str, dict]], version: str, load_before: str) -> str:
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    alone = {server: r for server, case, r in rows if case == "alone"}
    lines = [
        f"Measured {date} on {cpu_model()} ({os.cpu_count()} logical CPUs, {platform.machine()}), "
        f"commit {git_rev()}, load average before {load_before}, after {load}. "
        f"`{args.model.name}`, {args.threads} threads, --parallel {SLOTS} on both servers; "
        f"llama-server {version}.",
        "",
        f"A burst of {args.burst_clients} clients ({args.burst_tokens} tokens each, back to back) "
        f"and one steady client ({args.steady_requests} requests of {args.steady_tokens} tokens, "
        "one after another); the steady client's time to first token.",
        "",
        "| server | steady client | TTFT p50 (ms) | TTFT p99 (ms) | TTFT max (ms) "
        "| p99 / alone | burst tokens/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for server, case, r in rows:
        base = alone.get(server)
        burst = "" if math.isnan(r["burst_tok_s"]) else f"{r['burst_tok_s']:.1f}"
        lines.append(
            f"| {server} | {case} | {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['max'])} "
            f"| {ratio(r['p99'], base['p99']) if base else 'n/a'} | {burst} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=DEFAULT_BIN)
    ap.add_argument("--llama-server", type=Path, default=DEFAULT_LLAMA_SERVER)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx-size", type=int, default=1024)
    ap.add_argument("--burst-clients", type=int, default=24)
    ap.add_argument("--burst-tokens", type=int, default=128)
    ap.add_argument("--steady-requests", type=int, default=24)
    ap.add_argument("--steady-tokens", type=int, default=16)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    for path, what in [(args.bin, "the ryzanstein binary (make build)"),
                       (args.llama_server, "llama-server (make llama-server)"),
                       (args.model, "the bundled model (make model)")]:
        if not path.exists():
            sys.exit(f"bench_fairness: {path} is missing: {what}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    version = llama_server_version(args.llama_server)
    keys = tempfile.NamedTemporaryFile("w", prefix="bench-fairness-keys-", delete=False)
    keys.write("".join(f"{t} {k}\n" for t, k in KEYS.items()))
    keys.close()
    cases = [
        ("Ryzanstein", "alone", False, KEYS["steady"], None),
        ("Ryzanstein", "during the burst, own tenant", True, KEYS["steady"], KEYS["burst"]),
        ("Ryzanstein", "during the burst, same tenant (FIFO)", True, KEYS["burst"], KEYS["burst"]),
        ("llama-server", "alone", False, None, None),
        ("llama-server", "during the burst", True, None, None),
    ]
    rows = []
    for server_name, case, burst, steady_key, burst_key in cases:
        server = (ours_server(args, True, ("--queue-size", "64", "--api-key-file", keys.name))
                  if server_name == "Ryzanstein" else llama_server(args))
        try:
            server.start()
            stream_chat(server.port, SHORT_SYSTEM, "Say hello.", 8, steady_key or burst_key)
            r = run(server, args, burst, steady_key, burst_key)
        finally:
            server.stop()
        print(f"bench_fairness: {server_name}, {case}: TTFT p50 {ms(r['p50'])} ms, "
              f"p99 {ms(r['p99'])} ms", file=sys.stderr)
        rows.append((server_name, case, r))
    Path(keys.name).unlink()
    table = render(args, rows, version, load_before)
    print(table)
    if args.write:
        write_doc(args.write, table, MARK_BEGIN, MARK_END, "Tenant fairness")
    return 0


if __name__ == "__main__":
    sys.exit(main())
