#!/usr/bin/env python3
"""Serving benchmark: aggregate throughput and time to first token under concurrent streaming
clients, and the gain of the prefix cache on a shared system prompt, ours against llama.cpp's
`llama-server` on the same GGUF file and the same thread count.

Servers, both on 127.0.0.1 at free ports, started by this script and always stopped by it:
  ours:         ryzanstein serve --model M --threads T --parallel 16 --ctx-size N
  llama-server: llama-server -m M -t T -tb T --parallel 16 -c 16*N --metrics --no-webui
                (16 slots of N positions each, the same context per sequence as ours; its
                prompt cache, continuous batching and prompt-cache RAM at their defaults)
Both answer POST /v1/chat/completions; a server is ready when GET /readyz (ours) or /health
(llama-server) answers 200.

Every request is a streaming chat completion: a system message and one user message,
temperature 0, `max_tokens` K, `ignore_eos: true` (every request generates exactly K tokens
on both servers), `stream_options: {"include_usage": true}`. The client is this script: one
thread per concurrent client, one HTTP/1.1 connection per request, reading the SSE stream.
  TTFT  = from just before the request is sent to the first chunk with non-empty
          `delta.content` (queueing and prefill included);
  TPOT  = (arrival of the last content chunk - first content chunk) / (tokens - 1), per request;
  tokens of a request = its final usage chunk's `completion_tokens` (required);
  aggregate tokens/s = all generated tokens of a level / the level's wall time (the first
          request sent to the last stream closed).
p50 and p99 are over the requests of a level (p99 by linear interpolation between the closest
ranks, so with few requests it is close to the maximum).

Throughput workload: for C in --clients (1, 4, 16), C clients send --requests-per-client
requests each (at least --min-requests in all) back to back; each request asks a different
short question (about 40 prompt tokens with the template), K = --max-tokens (128). One
warm-up request per server before the first level. The two servers take turns level by level
(both stay up; an idle server uses no CPU), so a change of the machine's load hits both alike.

Prefix-heavy workload: a shared system prompt of about --system-tokens (1000) tokens (numbered
rules of a made-up support policy) and a different short user question per request,
--prefix-clients (4) clients, --prefix-requests (16) requests in all, K = --prefix-max-tokens
(32). Each server first answers one warm-up request with the same system prompt (so the shared
prefix can be cached before the measured requests). Three runs: ours with its prefix cache,
ours restarted with --no-prefix-cache, and llama-server with its prompt cache.
  ours' hit rate     = the increase of ryzanstein_prefix_cache_hits_total over that of
                       ryzanstein_prefix_cache_queries_total during the measured requests
                       (prompt tokens in full 32-token KV blocks, from GET /metrics);
  cached prompt share = prompt tokens taken from a cache / all prompt tokens of the measured
                       requests: ours from ryzanstein_prompt_tokens_cached_total and
                       ryzanstein_prompt_tokens_total, llama-server from each response's
                       `timings` (cache_n / (cache_n + prompt_n)).

Batching seen from the servers' metrics, sampled every 0.2 s during a level: the most requests
running at once (ryzanstein_num_requests_running, llamacpp:requests_processing), and the mean
time between tokens of a stream on our side (ryzanstein_inter_token_latency_seconds sum/count
over the level, about the time of one batched decode step).

Run by `make bench` and `make bench-serving` (writes docs/BENCHMARKS.md). Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import cpu_model, git_rev  # the same machine facts as the main table

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("RYZANSTEIN_CACHE", Path.home() / ".cache/ryzanstein"))
DEFAULT_MODEL = CACHE / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", CACHE / "target"))
DEFAULT_BIN = TARGET_DIR / "release/ryzanstein"
DEFAULT_LLAMA_SERVER = CACHE / "llama-server/bin/llama-server"
MARK_BEGIN = "<!-- serving:begin (written by scripts/bench_serving.py; do not edit by hand) -->"
MARK_END = "<!-- serving:end -->"
SLOTS = 16  # --parallel of both servers

SHORT_SYSTEM = "You are a helpful assistant."
TOPICS = ["the water cycle", "volcanoes", "the printing press", "photosynthesis", "tides",
          "the Roman roads", "honey bees", "glaciers", "the telescope", "bread making",
          "lighthouses", "the compass", "coral reefs", "wind turbines", "the steam engine",
          "migrating birds"]
FORMS = ["Explain {} to a child.", "Write a short story about {}.", "List three facts about {}.",
         "Why does {} matter?", "Describe {} in one paragraph.", "What is the history of {}?"]
QUESTIONS = [f.format(t) for f in FORMS for t in TOPICS]  # 96 distinct questions

POLICY_TOPICS = ["refunds", "late deliveries", "damaged parcels", "password resets",
                 "invoices", "gift cards", "account closure", "warranty claims", "price matching",
                 "international shipping", "loyalty points", "order changes", "subscriptions",
                 "product recalls", "accessibility requests", "data export requests"]
POLICY_ACTIONS = ["confirm the order number first", "apologise once and move on to the fix",
                  "offer the standard remedy before any exception",
                  "quote the exact policy wording", "escalate to a supervisor only on request",
                  "summarise the next steps in two sentences"]
PREFIX_QUESTIONS = [f"A customer writes about {t}: what should I tell them?" for t in POLICY_TOPICS] + [
    f"How do I handle a second complaint about {t}?" for t in POLICY_TOPICS]


def system_prompt(approx_tokens: int) -> str:
    """A made-up support policy: numbered rules, ~24 tokens each, until ~approx_tokens."""
    head = ("You are the support assistant of a small online shop. Follow every rule below "
            "exactly. Rules:\n")
    rules = []
    i = 0
    while 8 + 24 * len(rules) < approx_tokens:
        t = POLICY_TOPICS[i % len(POLICY_TOPICS)]
        a = POLICY_ACTIONS[(i * 7 + i // len(POLICY_TOPICS)) % len(POLICY_ACTIONS)]
        rules.append(f"{i + 1}. For questions about {t} (case {i // len(POLICY_TOPICS) + 1}), {a}.")
        i += 1
    return head + "\n".join(rules) + "\nAnswer briefly and politely."


# --------------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on 127.0.0.1:port; its output goes to a log file."""

    def __init__(self, name: str, cmd: list[str], port: int, ready_path: str, metrics: str):
        self.name, self.cmd, self.port, self.ready_path = name, cmd, port, ready_path
        self.metrics_kind = metrics  # "ours" or "llama"
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-serving-{name}-", suffix=".log",
                                               delete=False)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        print(f"bench_serving: starting {self.name}: {' '.join(self.cmd)}", file=sys.stderr)
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"exited with status {self.proc.returncode} before it was ready")
            try:
                status, _ = http_get(self.port, self.ready_path, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.fail(f"not ready after {timeout:.0f} s")

    def fail(self, why: str):
        self.stop()
        tail = Path(self.log.name).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} {why}; the end of its log {self.log.name}:\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def scrape(self) -> dict[str, float]:
        """GET /metrics as {series name without labels: value} (first sample of each name)."""
        _, body = http_get(self.port, "/metrics", timeout=5)
        out: dict[str, float] = {}
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if m and m.group(1) not in out:
                try:
                    out[m.group(1)] = float(m.group(3))
                except ValueError:
                    pass
        return out

    def running(self, scraped: dict[str, float]) -> float:
        key = "ryzanstein_num_requests_running" if self.metrics_kind == "ours" else "llamacpp:requests_processing"
        return scraped.get(key, float("nan"))


def http_get(port: int, path: str, timeout: float) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# client
# --------------------------------------------------------------------------------------------

def stream_chat(port: int, system: str, question: str, max_tokens: int,
                key: str | None = None) -> dict:
    """One streaming chat completion (with `key` as its Bearer API key, when given); returns
    its timings and token counts."""
    body = json.dumps({
        "model": "bench",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True},
    })
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    first = last = None
    chunks = 0
    usage = timings = None
    try:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:500]!r}")
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            msg = json.loads(data)
            if "error" in msg:
                raise RuntimeError(f"stream error: {msg['error']}")
            for choice in msg.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
            if msg.get("usage"):
                usage = msg["usage"]
            if msg.get("timings"):
                timings = msg["timings"]
    finally:
        conn.close()
    end = time.perf_counter()
    if usage is None or first is None:
        raise RuntimeError("the stream ended without content or without a usage chunk")
    n = usage["completion_tokens"]
    return {
        "start": t0, "end": end, "ttft": first - t0,
        "tpot": (last - first) / (n - 1) if n > 1 else float("nan"),
        "tokens": n, "prompt_tokens": usage["prompt_tokens"], "chunks": chunks,
        "cache_n": (timings or {}).get("cache_n"), "prompt_n": (timings or {}).get("prompt_n"),
    }


class Sampler(threading.Thread):
    """Polls a server's /metrics every `every` seconds; keeps the most requests running."""

    def __init__(self, server: Server, every: float = 0.2):
        super().__init__(daemon=True)
        self.server, self.every = server, every
        self.max_running = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            try:
                r = self.server.running(self.server.scrape())
            except OSError:
                continue
            if not math.isnan(r):
                self.max_running = max(self.max_running, r)


def run_level(server: Server, system: str, questions: list[str], clients: int,
              max_tokens: int) -> dict:
    """`clients` threads send the requests for `questions` back to back; one level's summary."""
    results: list[dict] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    pending = list(reversed(questions))

    def client() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                q = pending.pop()
            try:
                r = stream_chat(server.port, system, q, max_tokens)
            except BaseException as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(e)
                return
            with lock:
                results.append(r)

    before = server.scrape()
    sampler = Sampler(server)
    sampler.start()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sampler.done.set()
    sampler.join()
    after = server.scrape()
    if errors:
        raise RuntimeError(f"{server.name}: a request failed: {errors[0]}")
    wall = max(r["end"] for r in results) - t0
    delta = lambda k: after.get(k, 0.0) - before.get(k, 0.0)
    tokens = sum(r["tokens"] for r in results)
    out = {
        "requests": len(results), "tokens": tokens, "wall": wall, "tok_s": tokens / wall,
        "ttft": [r["ttft"] for r in results], "tpot": [r["tpot"] for r in results],
        "prompt_tokens": statistics.mean(r["prompt_tokens"] for r in results),
        "gen_tokens": sorted({r["tokens"] for r in results}),
        "max_running": sampler.max_running,
    }
    if server.metrics_kind == "ours":
        n = delta("ryzanstein_inter_token_latency_seconds_count")
        out["itl_ms"] = 1e3 * delta("ryzanstein_inter_token_latency_seconds_sum") / n if n else float("nan")
        q = delta("ryzanstein_prefix_cache_queries_total")
        out["hit_rate"] = delta("ryzanstein_prefix_cache_hits_total") / q if q else 0.0
        p = delta("ryzanstein_prompt_tokens_total")
        out["cached_share"] = delta("ryzanstein_prompt_tokens_cached_total") / p if p else 0.0
    else:
        busy = lambda m: m.get("llamacpp:n_busy_slots_per_decode", 0.0) * m.get("llamacpp:n_decode_total", 0.0)
        n = delta("llamacpp:n_decode_total")
        out["busy_per_decode"] = (busy(after) - busy(before)) / n if n else float("nan")
        cached = sum(r["cache_n"] or 0 for r in results)
        fresh = sum(r["prompt_n"] or 0 for r in results)
        out["cached_share"] = cached / (cached + fresh) if cached + fresh else 0.0
    return out


def percentile(xs: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(x for x in xs if not math.isnan(x))
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def llama_server_version(path: Path) -> str:
    try:
        p = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
        m = re.search(r"version:\s*(.+)", p.stdout + p.stderr)
        return m.group(1).strip() if m else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{1e3 * x:.0f}"


def ratio(a: float, b: float, digits: int = 2) -> str:
    return "n/a" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.{digits}f}"


def render(args, levels: dict, prefix: dict, load_before: str, version: str) -> str:
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"Measured {date} on {cpu_model()} ({os.cpu_count()} logical CPUs), commit {git_rev()}, "
        f"load average before the run {load_before}, after {load}.",
        f"Model {args.model.name}, {args.threads} threads for each server, {SLOTS} sequences at "
        f"once (`--parallel {SLOTS}`), {args.ctx_size} positions per sequence. Peer: llama-server "
        f"{version} (llama.cpp bundled with llama-cpp-python 0.3.36, native build). Streaming "
        f"chat completions, greedy, {args.max_tokens} tokens per request (`ignore_eos`).",
        "",
        "| clients | requests | prompt tokens | server | tokens/s | TTFT p50 (ms) | TTFT p99 (ms) "
        "| TPOT p50 (ms) | most running | tokens/s ratio (ours / llama-server) | TTFT p99 ratio |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, (o, p) in levels.items():
        for name, r in (("Ryzanstein", o), ("llama-server", p)):
            first = name == "Ryzanstein"
            lines.append(
                f"| {c} | {r['requests']} | {r['prompt_tokens']:.0f} | {name} | {r['tok_s']:.1f} | "
                f"{ms(percentile(r['ttft'], 50))} | {ms(percentile(r['ttft'], 99))} | "
                f"{ms(percentile(r['tpot'], 50))} | {r['max_running']:.0f} | "
                + (f"{ratio(o['tok_s'], p['tok_s'])} | "
                   f"{ratio(percentile(o['ttft'], 99), percentile(p['ttft'], 99))} |" if first else " | |"))
    lines.append("")
    lines.append("Batching: " + "; ".join(
        f"{c} clients: ours {o['itl_ms']:.1f} ms between tokens of a stream (mean), llama-server "
        f"{p['busy_per_decode']:.1f} busy slots per decode call" for c, (o, p) in levels.items()) + ".")
    if prefix:
        o, n, p = prefix["ours"], prefix["ours-no-cache"], prefix["llama"]
        lines += [
            "",
            f"Prefix-heavy: a shared system prompt of {o['prompt_tokens']:.0f} prompt tokens per "
            f"request (mean, with the question), {args.prefix_clients} clients, "
            f"{o['requests']} requests, {args.prefix_max_tokens} tokens each, after one warm-up "
            f"request with the same system prompt.",
            "",
            "| server | prefix cache hit rate | cached prompt share | TTFT p50 (ms) | TTFT p99 (ms) "
            "| tokens/s |",
            "|---|---:|---:|---:|---:|---:|",
            f"| Ryzanstein, prefix cache | {100 * o['hit_rate']:.0f}% | {100 * o['cached_share']:.0f}% | "
            f"{ms(percentile(o['ttft'], 50))} | {ms(percentile(o['ttft'], 99))} | {o['tok_s']:.1f} |",
            f"| Ryzanstein, `--no-prefix-cache` | {100 * n['hit_rate']:.0f}% | "
            f"{100 * n['cached_share']:.0f}% | {ms(percentile(n['ttft'], 50))} | "
            f"{ms(percentile(n['ttft'], 99))} | {n['tok_s']:.1f} |",
            f"| llama-server, prompt cache | n/a | {100 * p['cached_share']:.0f}% | "
            f"{ms(percentile(p['ttft'], 50))} | {ms(percentile(p['ttft'], 99))} | {p['tok_s']:.1f} |",
            "",
            f"TTFT gain of our prefix cache (without / with): p50 "
            f"{ratio(percentile(n['ttft'], 50), percentile(o['ttft'], 50))}x, p99 "
            f"{ratio(percentile(n['ttft'], 99), percentile(o['ttft'], 99))}x; TTFT p99 ours / "
            f"llama-server {ratio(percentile(o['ttft'], 99), percentile(p['ttft'], 99))}.",
        ]
    top = max(levels)
    o, p = levels[top]
    thr = o["tok_s"] / p["tok_s"]
    ttft = percentile(o["ttft"], 99) < percentile(p["ttft"], 99)
    lines += [
        "",
        f"Target (issue 6): at {top} clients ≥ 2× llama-server's aggregate tokens/s "
        f"({'met' if thr >= 2 else 'not met'}: {thr:.2f}×) and a lower p99 TTFT "
        f"({'met' if ttft else 'not met'}).",
    ]
    return "\n".join(lines)


def write_doc(path: Path, table: str, begin: str = MARK_BEGIN, end: str = MARK_END,
              heading: str = "Serving") -> None:
    """Puts `table` between the markers `begin` and `end` in `path`, or appends it under a new
    `## heading` when the markers are not there yet."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{table}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    path.write_text(text)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def ours_server(args, prefix_cache: bool, extra: tuple[str, ...] = ()) -> Server:
    port = free_port()
    cmd = [str(args.bin), "serve", "--model", str(args.model), "--threads", str(args.threads),
           "--host", "127.0.0.1", "--port", str(port), "--parallel", str(SLOTS),
           "--ctx-size", str(args.ctx_size), "--served-name", "bench", *extra]
    if not prefix_cache:
        cmd.append("--no-prefix-cache")
    name = "ryzanstein" if prefix_cache else "ryzanstein-no-prefix-cache"
    return Server(name, cmd, port, "/readyz", "ours")


def llama_server(args) -> Server:
    port = free_port()
    cmd = [str(args.llama_server), "-m", str(args.model), "-t", str(args.threads),
           "-tb", str(args.threads), "--parallel", str(SLOTS), "-c", str(SLOTS * args.ctx_size),
           "--host", "127.0.0.1", "--port", str(port), "--metrics", "--no-webui"]
    return Server("llama-server", cmd, port, "/health", "llama")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=DEFAULT_BIN, help="the ryzanstein binary")
    ap.add_argument("--llama-server", type=Path, default=DEFAULT_LLAMA_SERVER,
                    help="llama.cpp's llama-server (scripts/build-llama-server.sh)")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx-size", type=int, default=2048, help="positions per sequence")
    ap.add_argument("--clients", default="1,4,16", help="concurrency levels, comma-separated")
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--min-requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--system-tokens", type=int, default=1000)
    ap.add_argument("--prefix-clients", type=int, default=4)
    ap.add_argument("--prefix-requests", type=int, default=16)
    ap.add_argument("--prefix-max-tokens", type=int, default=32)
    ap.add_argument("--no-prefix", action="store_true", help="skip the prefix-heavy workload")
    ap.add_argument("--write", type=Path, help="write the table into this markdown file")
    args = ap.parse_args()
    for path, what in [(args.bin, "the ryzanstein binary (make build)"),
                       (args.llama_server, "llama-server (make llama-server)"),
                       (args.model, "the bundled model (make model)")]:
        if not path.exists():
            sys.exit(f"bench_serving: {path} is missing: {what}")
    clients = [int(c) for c in args.clients.split(",")]
    if max(clients) > SLOTS:
        sys.exit(f"bench_serving: at most {SLOTS} clients (the servers' --parallel)")
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    version = llama_server_version(args.llama_server)
    # SIGTERM (e.g. from make) ends the run through the finally below, stopping the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    servers: list[Server] = []
    levels: dict[int, tuple[dict, dict]] = {}
    prefix: dict[str, dict] = {}
    try:
        ours, peer = ours_server(args, True), llama_server(args)
        servers += [ours, peer]
        for s in (ours, peer):
            s.start()
            stream_chat(s.port, SHORT_SYSTEM, "Say hello.", args.max_tokens)  # warm-up
        m = re.search(r"n_slots = (\d+), n_ctx_slot = (\d+)", Path(peer.log.name).read_text(errors="replace"))
        if not m or (int(m.group(1)), int(m.group(2))) != (SLOTS, args.ctx_size):
            raise RuntimeError(f"llama-server did not report {SLOTS} slots of {args.ctx_size} "
                               f"positions (its log says: {m.group(0) if m else 'nothing'})")
        offset = 0
        for c in clients:
            n = max(args.requests_per_client * c, args.min_requests)
            qs = [QUESTIONS[(offset + i) % len(QUESTIONS)] for i in range(n)]
            offset += n
            o = run_level(ours, SHORT_SYSTEM, qs, c, args.max_tokens)
            p = run_level(peer, SHORT_SYSTEM, qs, c, args.max_tokens)
            levels[c] = (o, p)
            print(f"bench_serving: {c} clients: ours {o['tok_s']:.1f} tok/s, llama-server "
                  f"{p['tok_s']:.1f} tok/s", file=sys.stderr)
        if not args.no_prefix:
            system = system_prompt(args.system_tokens)
            qs = [PREFIX_QUESTIONS[i % len(PREFIX_QUESTIONS)] for i in range(args.prefix_requests)]
            warm = "Which rule applies to a question about refunds?"
            for key, s in (("ours", ours), ("llama", peer)):
                stream_chat(s.port, system, warm, args.prefix_max_tokens)
                prefix[key] = run_level(s, system, qs, args.prefix_clients, args.prefix_max_tokens)
            ours.stop()
            nocache = ours_server(args, False)
            servers.append(nocache)
            nocache.start()
            stream_chat(nocache.port, system, warm, args.prefix_max_tokens)
            prefix["ours-no-cache"] = run_level(nocache, system, qs, args.prefix_clients,
                                                args.prefix_max_tokens)
            print(f"bench_serving: prefix-heavy: hit rate {100 * prefix['ours']['hit_rate']:.0f}%",
                  file=sys.stderr)
    finally:
        for s in servers:
            s.stop()

    for c, (o, p) in levels.items():
        for name, r in (("ours", o), ("llama-server", p)):
            if r["gen_tokens"] != [args.max_tokens]:
                sys.exit(f"bench_serving: {name} at {c} clients generated {r['gen_tokens']} tokens "
                         f"per request, not {args.max_tokens} (ignore_eos not honoured?)")
    table = render(args, levels, prefix, load_before, version)
    print(table)
    if args.write:
        write_doc(args.write, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
