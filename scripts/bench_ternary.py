#!/usr/bin/env python3
"""Ternary (BitNet b1.58) decode speed: Ryzanstein's ternary kernels against its own Q4_0 and
against llama.cpp, on the same prompt with the same thread counts.

Decode = --tg-tokens (128) greedy tokens after a --prompt-tokens (16) prompt, end-of-sequence
ignored: generated tokens / generation time. Per thread count the rows of a model take turns,
one run each, --repeats (3) times after one warm-up round; the table shows medians. Ryzanstein
and llama.cpp are run exactly as scripts/bench.py runs them (its functions are reused): one
`ryzanstein generate ... --timings` process per run, and llama-cpp-python's low-level API in a
child process (bench.py's worker, which warms up inside the process before its timed run).

Two models:

1. A synthetic BitNet-shaped ~1B model that this script writes with the `gguf` package
   (architecture "llama", so llama.cpp runs it): hidden 2048, 24 layers, 32 heads and 8 KV
   heads (head_dim 64), FFN 5632, context 2048, rope theta 10000, RMS eps 1e-5, and the
   tokenizer of the bundled SmolLM2 GGUF (vocab 49152). Its weights are random (seeded): every
   projection (attn_q/k/v/output, ffn_gate/up/down) is Gaussian ternarised BitNet's way,
   round(W / mean|W|) clipped to {-1, 0, +1} times that one absmean scale per tensor; the norms
   are f32 near 1; the token embedding (tied: no output.weight) is Q8_0. Two files hold the same
   values: projections in TQ2_0 (exact) and projections in Q4_0. Rows: llama.cpp on each file;
   Ryzanstein on the TQ2_0 file (its loader converts TQ2_0 rows to I2S ternary codes) with
   `--ternary-kernel i2s` and `lut`; Ryzanstein on the Q4_0 file.
2. SmolLM2-135M (the bundled Q4_1 GGUF) ternarised at load: Ryzanstein `--quantize ternary`
   (one absmean scale per projection tensor) with `--ternary-kernel i2s` and `lut`, against
   Ryzanstein on the Q4_1 file as it is and on a Q4_0 file (written here: the Q4_1 projections
   dequantised and quantised to Q4_0, every other tensor as it is), and llama.cpp on that Q4_0
   file. llama.cpp's TQ2_0 cannot hold SmolLM2 (its 576-wide rows are not whole 256-weight
   blocks), so it has no such row.

Weights read per generated token come from each file's tensor table as in bench.py (every layer
tensor, the output norm, the tied output matrix and one embedding row); for `--quantize
ternary` rows every projection counts 2 bits per weight. Peak RSS is GNU time's, as in bench.py.

The generated files are cached under ~/.cache/ryzanstein/bench/, named by shape, seed and
generator version, so reruns reuse them. --shape makes a small model for trying the script out
(e.g. --shape hidden=256,layers=2,ffn=512).

Run with the bench venv (llama-cpp-python, gguf): `make bench` (writes docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import bench  # run_child, bench_llama, run_ours, make_prompt, gguf_tensors, cpu_model, git_rev
from bench_serving import write_doc

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("RYZANSTEIN_CACHE", Path.home() / ".cache/ryzanstein"))
DEFAULT_SMOLLM2 = bench.DEFAULT_MODEL
DEFAULT_BENCH_DIR = CACHE / "bench"
MARK_BEGIN = "<!-- bench-ternary:begin (written by scripts/bench_ternary.py; do not edit by hand) -->"
MARK_END = "<!-- bench-ternary:end -->"

# Bump when the generated files change (values, metadata or layout): the cache key holds it.
GENERATOR_VERSION = 1

SHAPE_1B = {"hidden": 2048, "layers": 24, "heads": 32, "kv_heads": 8, "ffn": 5632, "ctx": 2048}
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
TERNARY_BLOCK = 256  # weights per TQ2_0 block: every projection row holds whole blocks


def is_projection(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "blk" and parts[2] in PROJECTIONS and parts[3] == "weight"


# --------------------------------------------------------------------------------------------
# the synthetic BitNet-shaped model
# --------------------------------------------------------------------------------------------

def parse_shape(spec: str | None) -> dict:
    """The 1B shape, with `key=value` overrides. Heads follow the hidden size (head_dim 64, a
    quarter as many KV heads) unless given."""
    shape = dict(SHAPE_1B)
    given = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in shape:
            sys.exit(f"bench_ternary: --shape takes key=value pairs with keys {', '.join(shape)}; "
                     f"got {item!r}")
        try:
            given[key] = int(value)
        except ValueError:
            sys.exit(f"bench_ternary: --shape {key} must be an integer, got {value!r}")
    shape.update(given)
    if "hidden" in given and "heads" not in given:
        shape["heads"] = max(1, shape["hidden"] // 64)
    if "kv_heads" not in given and ("heads" in given or "hidden" in given):
        shape["kv_heads"] = max(1, shape["heads"] // 4)
    h, heads, kv, ffn = shape["hidden"], shape["heads"], shape["kv_heads"], shape["ffn"]
    if min(shape.values()) < 1:
        sys.exit(f"bench_ternary: every --shape value must be positive: {shape}")
    if h % TERNARY_BLOCK or ffn % TERNARY_BLOCK:
        sys.exit(f"bench_ternary: hidden ({h}) and ffn ({ffn}) must be multiples of {TERNARY_BLOCK} "
                 "(TQ2_0 blocks along every projection row)")
    if h % heads or heads % kv or (h // heads) % 2:
        sys.exit(f"bench_ternary: hidden {h}, heads {heads}, kv_heads {kv}: the heads must divide "
                 "hidden into an even head_dim and the KV heads must divide the heads")
    return shape


def shape_key(shape: dict, seed: int) -> str:
    s = shape
    return (f"bitnet-synth-v{GENERATOR_VERSION}-h{s['hidden']}-l{s['layers']}-a{s['heads']}"
            f"-kv{s['kv_heads']}-f{s['ffn']}-c{s['ctx']}-s{seed}")


def describe_shape(shape: dict, n_vocab: int) -> str:
    s = shape
    head_dim = s["hidden"] // s["heads"]
    n_proj = projection_params(shape)
    n_all = n_proj + n_vocab * s["hidden"] + (2 * s["layers"] + 1) * s["hidden"]
    return (f"hidden {s['hidden']}, {s['layers']} layers, {s['heads']} heads / {s['kv_heads']} KV heads "
            f"(head_dim {head_dim}), FFN {s['ffn']}, context {s['ctx']}, vocab {n_vocab}; "
            f"{count(n_all)} parameters, {count(n_proj)} of them in projections")


def count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def projection_params(shape: dict) -> int:
    h, f = shape["hidden"], shape["ffn"]
    kv_dim = shape["kv_heads"] * (h // shape["heads"])
    return shape["layers"] * (2 * h * h + 2 * kv_dim * h + 3 * h * f)


def tensor_plan(shape: dict, n_vocab: int) -> list[tuple[str, int, int]]:
    """(name, rows, cols) in file order; rows = 1 for the 1-D norms."""
    h, f = shape["hidden"], shape["ffn"]
    kv_dim = shape["kv_heads"] * (h // shape["heads"])
    plan = [("token_embd.weight", n_vocab, h)]
    for i in range(shape["layers"]):
        plan += [
            (f"blk.{i}.attn_norm.weight", 1, h),
            (f"blk.{i}.attn_q.weight", h, h),
            (f"blk.{i}.attn_k.weight", kv_dim, h),
            (f"blk.{i}.attn_v.weight", kv_dim, h),
            (f"blk.{i}.attn_output.weight", h, h),
            (f"blk.{i}.ffn_norm.weight", 1, h),
            (f"blk.{i}.ffn_gate.weight", f, h),
            (f"blk.{i}.ffn_up.weight", f, h),
            (f"blk.{i}.ffn_down.weight", h, f),
        ]
    plan.append(("output_norm.weight", 1, h))
    return plan


def copy_fields(reader, writer, keep) -> None:
    """Copies the metadata keys for which keep(key) holds, with their GGUF value types."""
    import gguf

    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key == gguf.Keys.General.ARCHITECTURE or not keep(key):
            continue
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, fld.contents(), vtype, sub_type=sub)


def ternary_values(rng, rows: int, cols: int):
    """A Gaussian matrix ternarised with one absmean scale (rounded to f16, so that TQ2_0, whose
    block scale is an f16, holds the values exactly): scale * {-1, 0, +1}, as float32."""
    import numpy as np

    w = rng.standard_normal((rows, cols), dtype=np.float32)
    w *= np.float32(1.0 / np.sqrt(cols))
    scale = np.float32(np.float16(np.abs(w).mean(dtype=np.float64)))
    q = np.clip(np.rint(w / scale), -1, 1)
    q *= scale
    return q


def quantize_rows(values, qtype, chunk_rows: int):
    """gguf.quants.quantize over row chunks (its temporaries stay small)."""
    import numpy as np
    from gguf import quants

    rows, cols = values.shape
    block, size = quants.GGML_QUANT_SIZES[qtype]
    out = np.empty((rows, cols // block * size), dtype=np.uint8)
    for r in range(0, rows, chunk_rows):
        out[r:r + chunk_rows] = quants.quantize(values[r:r + chunk_rows], qtype)
    return out


def write_synthetic(shape: dict, seed: int, smollm2: Path, paths: dict) -> None:
    """Writes the TQ2_0, Q4_0 and Q4_1 files (paths: kind -> path) from the same values,
    tensor by tensor, each file through its own streaming writer."""
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as Q

    src = gguf.GGUFReader(smollm2)
    n_vocab = len(src.fields["tokenizer.ggml.tokens"].data)
    plan = tensor_plan(shape, n_vocab)
    proj_type = {"TQ2_0": Q.TQ2_0, "Q4_0": Q.Q4_0, "Q4_1": Q.Q4_1}
    file_type = {"TQ2_0": gguf.LlamaFileType.MOSTLY_TQ2_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
                 "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}
    tmp = {k: p.with_name(p.name + ".part") for k, p in paths.items()}
    writers = {}
    for kind, path in tmp.items():
        w = gguf.GGUFWriter(path, "llama")
        w.add_name(f"bench_ternary synthetic BitNet b1.58 ({shape_key(shape, seed)}, {kind})")
        w.add_description("Random seeded ternary weights for speed benchmarks only; its text is "
                          "meaningless. Written by Ryzanstein's scripts/bench_ternary.py.")
        w.add_vocab_size(n_vocab)
        w.add_context_length(shape["ctx"])
        w.add_embedding_length(shape["hidden"])
        w.add_block_count(shape["layers"])
        w.add_feed_forward_length(shape["ffn"])
        w.add_head_count(shape["heads"])
        w.add_head_count_kv(shape["kv_heads"])
        w.add_rope_dimension_count(shape["hidden"] // shape["heads"])
        w.add_rope_freq_base(ROPE_THETA)
        w.add_layer_norm_rms_eps(RMS_EPS)
        w.add_file_type(file_type[kind])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        copy_fields(src, w, lambda key: key.startswith("tokenizer.ggml."))
        for name, rows, cols in plan:
            if rows == 1:
                w.add_tensor_info(name, (cols,), np.dtype(np.float32), cols * 4)
            else:
                qtype = proj_type[kind] if is_projection(name) else Q.Q8_0
                block, size = gguf.GGML_QUANT_SIZES[qtype]
                row_bytes = cols // block * size
                w.add_tensor_info(name, (rows, row_bytes), np.dtype(np.uint8), rows * row_bytes,
                                  raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        writers[kind] = w
    del src

    t0 = time.perf_counter()
    for index, (name, rows, cols) in enumerate(plan):
        rng = np.random.default_rng([seed, index])
        if rows == 1:
            norm = (1.0 + 0.05 * rng.standard_normal(cols)).astype(np.float32)
            for w in writers.values():
                w.write_tensor_data(norm)
            continue
        if not is_projection(name):
            # The embedding (also the tied output matrix): Q8_0 in both files.
            block, size = gguf.GGML_QUANT_SIZES[Q.Q8_0]
            data = np.empty((rows, cols // block * size), dtype=np.uint8)
            for r in range(0, rows, 4096):
                part = rng.standard_normal((min(4096, rows - r), cols), dtype=np.float32)
                part *= np.float32(0.02)
                data[r:r + len(part)] = gguf.quants.quantize(part, Q.Q8_0)
            for w in writers.values():
                w.write_tensor_data(data)
            continue
        values = ternary_values(rng, rows, cols)
        for kind, w in writers.items():
            data = quantize_rows(values, proj_type[kind], 1024)
            if kind == "TQ2_0":
                # TQ2_0 must hold the ternary values exactly (one scale per block, all equal).
                back = gguf.quants.dequantize(data[:1], Q.TQ2_0)
                if not np.array_equal(back, values[:1]):
                    sys.exit(f"bench_ternary: TQ2_0 does not reproduce {name}'s ternary values")
            w.write_tensor_data(data)
        if is_projection(name) and name.endswith("ffn_down.weight"):
            layer = int(name.split(".")[1])
            print(f"bench_ternary: layer {layer + 1} of {shape['layers']} written "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    for w in writers.values():
        w.close()
    for kind, path in paths.items():
        os.replace(tmp[kind], path)


def synthetic_files(args, shape: dict) -> dict:
    key = shape_key(shape, args.seed)
    paths = {kind: args.bench_dir / f"{key}.{kind}.gguf" for kind in ("TQ2_0", "Q4_0", "Q4_1")}
    if all(p.is_file() for p in paths.values()):
        print(f"bench_ternary: reusing {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
        return paths
    args.bench_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench_ternary: writing {key} (TQ2_0, Q4_0 and Q4_1) into {args.bench_dir}...", file=sys.stderr)
    t0 = time.perf_counter()
    write_synthetic(shape, args.seed, args.smollm2, paths)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in paths.values())
    print(f"bench_ternary: wrote {sizes} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return paths


def smollm2_q4_0(args) -> Path:
    """The bundled SmolLM2 with its projections requantised Q4_1 -> f32 -> Q4_0; every other
    tensor and every metadata key as they are (the file type says Q4_0)."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    out = args.bench_dir / f"{args.smollm2.stem}.as-Q4_0.v{GENERATOR_VERSION}.gguf"
    if out.is_file():
        return out
    args.bench_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench_ternary: writing {out}...", file=sys.stderr)
    src = gguf.GGUFReader(args.smollm2)
    tmp = out.with_name(out.name + ".part")
    w = gguf.GGUFWriter(tmp, "llama")
    copy_fields(src, w, lambda key: key != gguf.Keys.General.FILE_TYPE)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    for t in src.tensors:
        if is_projection(t.name) and len(t.shape) == 2:
            values = gguf.quants.dequantize(t.data, t.tensor_type)
            w.add_tensor(t.name, gguf.quants.quantize(values, Q.Q4_0), raw_dtype=Q.Q4_0)
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)
    return out


# --------------------------------------------------------------------------------------------
# rows and runs
# --------------------------------------------------------------------------------------------

@dataclass
class Row:
    key: str                 # short id, used by the ratios
    model: str               # "synthetic" or "smollm2"
    engine: str              # "llama.cpp" or "Ryzanstein"
    path: Path
    weights: str             # what the row computes with, for the table
    extra: tuple[str, ...] = ()
    ternary_at_load: bool = False
    weight_bytes: int = 0    # weights read per generated token
    rss: dict = field(default_factory=dict)   # threads -> KiB

    def options(self) -> str:
        return f"`{' '.join(self.extra)}`" if self.extra else "—"


def kernel_flags(kernel: str) -> tuple[str, ...]:
    return () if kernel == "default" else ("--ternary-kernel", kernel)


def kernel_label(kernel: str) -> str:
    return "default kernel" if kernel == "default" else kernel


def make_rows(args, synth: dict | None, smol_q4_0: Path | None) -> list[Row]:
    rows = []
    if synth:
        rows.append(Row("llama-tq2", "synthetic", "llama.cpp", synth["TQ2_0"], "TQ2_0"))
        rows.append(Row("llama-q40", "synthetic", "llama.cpp", synth["Q4_0"], "Q4_0"))
        for k in args.kernels:
            rows.append(Row(f"ours-tq2-{k}", "synthetic", "Ryzanstein", synth["TQ2_0"],
                            f"TQ2_0 file as I2S ternary ({kernel_label(k)})", kernel_flags(k)))
        rows.append(Row("ours-q40", "synthetic", "Ryzanstein", synth["Q4_0"], "Q4_0"))
        rows.append(Row("ours-q41", "synthetic", "Ryzanstein", synth["Q4_1"], "Q4_1"))
    if smol_q4_0:
        for k in args.kernels:
            rows.append(Row(f"ours-tern-{k}", "smollm2", "Ryzanstein", args.smollm2,
                            f"Q4_1 file ternarised at load ({kernel_label(k)})",
                            ("--quantize", "ternary", *kernel_flags(k)), ternary_at_load=True))
        rows.append(Row("ours-q41", "smollm2", "Ryzanstein", args.smollm2, "Q4_1"))
        rows.append(Row("ours-q40", "smollm2", "Ryzanstein", smol_q4_0, "Q4_0"))
        rows.append(Row("llama-q40", "smollm2", "llama.cpp", smol_q4_0, "Q4_0"))
    return rows


def check_flags(args, rows: list[Row]) -> list[Row]:
    """The options these rows pass must be in `ryzanstein generate --help`: a clear error when
    they are not (or, with --skip-missing-flags, the rows are left out and named)."""
    res = subprocess.run([str(args.bin), "generate", "--help"], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"bench_ternary: `{args.bin} generate --help` failed (exit {res.returncode}):\n"
                 f"{res.stderr[-2000:]}")
    missing = sorted({x for r in rows for x in r.extra if x.startswith("--") and x not in res.stdout})
    if not missing:
        return rows
    if not args.skip_missing_flags:
        sys.exit(f"bench_ternary: {args.bin} has no {', '.join(missing)} option (see `ryzanstein "
                 "generate --help`); rebuild it from a tree that has them, or pass "
                 "--skip-missing-flags to leave the rows that need them out")
    kept = [r for r in rows if not any(x in missing for x in r.extra)]
    args.skipped = [r for r in rows if all(r is not k for k in kept)]
    args.missing_flags = missing
    for r in args.skipped:
        print(f"bench_ternary: leaving out {r.model} / {r.engine} {r.weights}: the binary has no "
              f"{', '.join(x for x in r.extra if x in missing)}", file=sys.stderr)
    return kept


def weight_bytes(row: Row) -> int:
    """Weights read per generated token (bench.py's count); a row ternarised at load reads
    2 bits per projection weight instead of the file's bytes."""
    tensors = bench.gguf_tensors(row.path)
    if row.ternary_at_load:
        for name, (dims, _) in list(tensors.items()):
            if is_projection(name):
                n = 1
                for d in dims:
                    n *= d
                tensors[name] = (dims, n // 4)
    return bench.weight_bytes_per_token(row.path, tensors)[0]


def run_row(args, row: Row, prompt: str, threads: int) -> tuple[dict, int, str | None]:
    ns = SimpleNamespace(model=row.path, bin=args.bin, tg_tokens=args.tg_tokens)
    if row.engine == "llama.cpp":
        return bench.bench_llama(ns, prompt, prompt, threads)
    run, rss = bench.run_ours(ns, prompt, threads, args.tg_tokens, row.extra)
    return run, rss, None


def decode_speed(runs: list[dict]) -> float:
    return statistics.median(r["gen_tokens"] / (r["gen_ms"] / 1e3) for r in runs)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def ratio_specs(args) -> list[tuple[str, str, str, str, float | None]]:
    """(model, numerator key, denominator key, description, target)."""
    specs = []
    for k in args.kernels:
        label = kernel_label(k)
        specs += [
            ("synthetic", f"ours-tq2-{k}", "ours-q40", f"Ryzanstein ternary ({label}) / Ryzanstein Q4_0", 2.0),
            ("synthetic", f"ours-tq2-{k}", "llama-tq2", f"Ryzanstein ternary ({label}) / llama.cpp TQ2_0", 1.5),
            ("synthetic", f"ours-tq2-{k}", "ours-q41", f"Ryzanstein ternary ({label}) / Ryzanstein Q4_1", None),
        ]
    for k in args.kernels:
        label = kernel_label(k)
        specs += [
            ("smollm2", f"ours-tern-{k}", "ours-q40", f"Ryzanstein ternary ({label}) / Ryzanstein Q4_0", None),
            ("smollm2", f"ours-tern-{k}", "ours-q41", f"Ryzanstein ternary ({label}) / Ryzanstein Q4_1", None),
            ("smollm2", f"ours-tern-{k}", "llama-q40", f"Ryzanstein ternary ({label}) / llama.cpp Q4_0", None),
        ]
    return specs


def render(args, rows: list[Row], speeds: dict, shape: dict, n_vocab: int, prompt_n: int,
           llama_version: str) -> str:
    """speeds: (model, key, threads) -> median decode tok/s."""
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    models = {r.model for r in rows} | {r.model for r in getattr(args, "skipped", [])}
    names = {"synthetic": "synthetic BitNet", "smollm2": "SmolLM2-135M"}
    lines = [
        f"Measured {date} on {bench.cpu_model()} ({os.cpu_count()} logical CPUs), commit "
        f"{bench.git_rev()}, load average before the run {args.load_before}, after {load}. "
        f"llama.cpp: llama-cpp-python {llama_version}.",
        f"Decode: {args.tg_tokens} greedy tokens after a {prompt_n}-token prompt, end-of-sequence "
        f"ignored, the same prompt and thread count for every row; median of {args.repeats} runs "
        "after one warm-up round, the rows of a model taking turns.",
        "",
    ]
    if "synthetic" in models:
        synth = {r.path.name.rsplit(".", 2)[-2]: r.path for r in rows if r.model == "synthetic"
                 and r.path.name.endswith((".TQ2_0.gguf", ".Q4_0.gguf", ".Q4_1.gguf"))}
        sizes = ", ".join(f"{w} {p.stat().st_size / 1e6:.0f} MB" for w, p in synth.items())
        lines += [
            f"- **synthetic BitNet**: a llama-architecture model shaped like BitNet b1.58 "
            f"({describe_shape(shape, n_vocab)}; rope theta {ROPE_THETA:g}, RMS eps {RMS_EPS:g}; "
            "SmolLM2's tokenizer), written by the script with random seeded weights: each projection "
            "ternary {-1, 0, +1} times one absmean scale per tensor, norms f32, the tied token "
            "embedding Q8_0. Three files from the same values: projections in TQ2_0 (exact), in "
            "Q4_0 (Q4_0's asymmetric range stores one sign of each block as 7/8 of the scale) and "
            "in Q4_1 (Ryzanstein's fastest 4-bit path: it repacks Q4_1 for its eight-row kernels "
            f"and runs Q4_0 row by row); {sizes}. "
            "Ryzanstein converts the TQ2_0 rows to its I2S ternary codes at load and runs them "
            "with the named `--ternary-kernel`.",
        ]
    if "smollm2" in models:
        lines += [
            "- **SmolLM2-135M**: the bundled Q4_1 GGUF; `--quantize ternary` rows ternarise every "
            "projection at load (one absmean scale per tensor): **their output is meaningless "
            "text; they measure speed only**. Q4_0 is the same model with its Q4_1 projections "
            "requantised to Q4_0 by the script (other tensors as they are). llama.cpp has no "
            "TQ2_0 row here: TQ2_0 packs 256-weight blocks along a row and SmolLM2's rows are "
            "576 (and 1536) wide, not whole blocks.",
        ]
    lines += [
        "- Weights read per token: from each file's tensor table as in the main table (layer "
        "tensors, output norm, tied output matrix, one embedding row); `--quantize ternary` rows "
        "count 2 bits per projection weight (rows padded to whole code blocks at load read a "
        "little more). Peak RSS: GNU time's, per process (llama.cpp's "
        "includes the Python interpreter hosting it).",
        "",
        "| model | engine | weights | options | threads | decode (tok/s) | weights read per token (MB) "
        "| peak RSS (MiB) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for model in ("synthetic", "smollm2"):
        for threads in args.threads_list:
            for r in (r for r in rows if r.model == model):
                tg = speeds[(r.model, r.key, threads)]
                lines.append(f"| {names[r.model]} | {r.engine} | {r.weights} | {r.options()} | {threads} "
                             f"| {tg:.1f} | {r.weight_bytes / 1e6:.1f} | {r.rss[threads] / 1024:.0f} |")
    for r in getattr(args, "skipped", []):
        lines.append(f"| {names[r.model]} | {r.engine} | {r.weights} | {r.options()} | | not run: the "
                     f"binary has no {', '.join(x for x in r.extra if x in args.missing_flags)} | | |")
    lines += [
        "",
        "| model | threads | ratio | value | target | holds |",
        "|---|---:|---|---:|---:|---|",
    ]
    verdicts = []
    for model, num, den, what, target in ratio_specs(args):
        for threads in args.threads_list:
            a, b = speeds.get((model, num, threads)), speeds.get((model, den, threads))
            if a is None or b is None:
                continue
            value = a / b
            holds = "" if target is None else ("yes" if value >= target else "**no**")
            tgt = "" if target is None else f"≥ {target:.2f}"
            lines.append(f"| {names[model]} | {threads} | {what} | {value:.2f} | {tgt} | {holds} |")
            if target is not None:
                verdicts.append(value >= target)
    if lines[-1].startswith("|---"):
        lines[-2:] = ["No ratios: the rows they compare were not run."]
    lines += ["", "Targets (issue: ternary decode on the synthetic 1B model): ≥ 2× Ryzanstein's "
              "own Q4_0 and ≥ 1.5× llama.cpp's TQ2_0 at each thread count"
              + (f"; {sum(verdicts)} of {len(verdicts)} comparisons hold." if verdicts else ".")]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=bench.DEFAULT_BIN, help="the ryzanstein binary")
    ap.add_argument("--smollm2", type=Path, default=DEFAULT_SMOLLM2,
                    help="the bundled SmolLM2 Q4_1 GGUF (tokenizer of the synthetic model; model 2)")
    ap.add_argument("--models", default="synthetic,smollm2",
                    help="which models to bench: synthetic, smollm2 or both (default both)")
    ap.add_argument("--shape", help="synthetic shape overrides, key=value,... with keys "
                    f"{', '.join(SHAPE_1B)} (default the 1B shape: "
                    f"{','.join(f'{k}={v}' for k, v in SHAPE_1B.items())})")
    ap.add_argument("--seed", type=int, default=1, help="seed of the synthetic weights (default 1)")
    ap.add_argument("--bench-dir", type=Path, default=DEFAULT_BENCH_DIR,
                    help=f"where generated GGUF files are cached (default {DEFAULT_BENCH_DIR})")
    ap.add_argument("--ternary-kernels", default="i2s,lut",
                    help="Ryzanstein ternary kernels to time: i2s, lut, auto, or default (pass no "
                    "--ternary-kernel option); default i2s,lut")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row and thread count")
    ap.add_argument("--tg-tokens", type=int, default=128, help="tokens to generate (default 128)")
    ap.add_argument("--prompt-tokens", type=int, default=16, help="prompt length in tokens (default 16)")
    ap.add_argument("--skip-missing-flags", action="store_true",
                    help="leave out (and name) the rows whose options the binary does not have, "
                    "instead of stopping")
    ap.add_argument("--prepare", action="store_true", help="only write the GGUF files, then exit")
    ap.add_argument("--write", type=Path, help="also write the table into this markdown file between markers")
    args = ap.parse_args()

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in ("synthetic", "smollm2") for m in models):
        sys.exit(f"bench_ternary: --models takes synthetic and/or smollm2, got {args.models!r}")
    args.kernels = [k.strip() for k in args.ternary_kernels.split(",") if k.strip()]
    if not args.kernels or any(k not in ("i2s", "lut", "auto", "default") for k in args.kernels):
        sys.exit(f"bench_ternary: --ternary-kernels takes i2s, lut, auto and default, got "
                 f"{args.ternary_kernels!r}")
    if len(set(args.kernels)) != len(args.kernels):
        sys.exit("bench_ternary: --ternary-kernels names a kernel twice")
    try:
        args.threads_list = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        sys.exit(f"bench_ternary: --threads must be comma-separated integers, got {args.threads!r}")
    if args.repeats < 1 or args.tg_tokens < 1 or args.prompt_tokens < 1 or not args.threads_list:
        sys.exit("bench_ternary: --repeats, --tg-tokens, --prompt-tokens and --threads must be positive")
    if not args.smollm2.is_file():
        sys.exit(f"bench_ternary: {args.smollm2} not found; run `make model`")
    shape = parse_shape(args.shape)

    synth = synthetic_files(args, shape) if "synthetic" in models else None
    smol_q4_0 = smollm2_q4_0(args) if "smollm2" in models else None
    if args.prepare:
        for p in [*(synth or {}).values(), *([smol_q4_0] if smol_q4_0 else [])]:
            print(f"{p}\t{p.stat().st_size} bytes")
        return 0

    if not os.access(bench.TIME, os.X_OK):
        sys.exit(f"bench_ternary: {bench.TIME} (GNU time) is needed to measure peak RSS; "
                 "install the `time` package")
    if not (args.bin.is_file() and os.access(args.bin, os.X_OK)):
        sys.exit(f"bench_ternary: {args.bin} not found; build it with `make build` (or pass --bin)")
    rows = check_flags(args, make_rows(args, synth, smol_q4_0))
    for r in rows:
        r.weight_bytes = weight_bytes(r)

    args.load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    prompt, prompt_n = bench.make_prompt(args.smollm2, args.prompt_tokens)
    print(f"bench_ternary: decode {args.tg_tokens} tokens after a {prompt_n}-token prompt; threads "
          f"{args.threads_list}, {args.repeats} repeats, {len(rows)} rows", file=sys.stderr)

    speeds, llama_version = {}, "?"
    for model in models:
        model_rows = [r for r in rows if r.model == model]
        for threads in args.threads_list:
            runs = {r.key: [] for r in model_rows}
            for i in range(args.repeats + 1):
                print(f"bench_ternary: {model}, {threads} thread(s), round {i + 1} of "
                      f"{args.repeats + 1}{' (warm-up)' if i == 0 else ''}...", file=sys.stderr)
                for r in model_rows:
                    run, rss, version = run_row(args, r, prompt, threads)
                    llama_version = version or llama_version
                    r.rss[threads] = max(r.rss.get(threads, 0), rss)
                    if i > 0:
                        runs[r.key].append(run)
            for r in model_rows:
                speeds[(model, r.key, threads)] = decode_speed(runs[r.key])

    n_vocab = bench.gguf_tensors(args.smollm2)["token_embd.weight"][0][1]
    table = render(args, rows, speeds, shape, n_vocab, prompt_n, llama_version)
    print(table)
    if args.write:
        write_doc(args.write, table, MARK_BEGIN, MARK_END, heading="Ternary (BitNet b1.58) decode")
        print(f"bench_ternary: wrote the table into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
