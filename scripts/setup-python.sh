#!/usr/bin/env bash
# Create (or reuse) the project's Python virtual environment at ~/.cache/ryzanstein/venv.
#   scripts/setup-python.sh          -> openai + numpy (clients used by examples and tests) and
#                                       schemathesis (fuzzes the HTTP API from /openapi.json)
#   scripts/setup-python.sh --bench  -> also llama-cpp-python (the llama.cpp peer used by
#                                       scripts/bench.py and scripts/make_references.py); this
#                                       compiles llama.cpp from the sdist and takes ~10 minutes;
#                                       and gguf (scripts/bench_ternary.py writes its GGUF files).
# A marker file inside the venv records what was installed, so reruns return at once.
set -euo pipefail

CACHE="${RYZANSTEIN_CACHE:-$HOME/.cache/ryzanstein}"
VENV="${RYZANSTEIN_VENV:-$CACHE/venv}"
BASE_REQS=(openai numpy schemathesis==4.32.5)
BENCH_REQS=(llama-cpp-python==0.3.36 jinja2 gguf==0.19.0)

bench=0
case "${1:-}" in
    --bench) bench=1 ;;
    "") ;;
    *) echo "usage: $0 [--bench]" >&2; exit 2 ;;
esac
[[ "${BENCH:-0}" == "1" ]] && bench=1

# install_set NAME REQ... : pip-install the requirements unless the marker says they are in.
install_set() {
    local name="$1"; shift
    local marker="$VENV/.ryzanstein-$name"
    local want="$*"
    if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
        echo "python: $name packages already installed in $VENV ($want)"
        return 0
    fi
    echo "python: installing $name packages into $VENV: $want"
    if [[ "$name" == "bench" ]] && ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
        echo "python: llama-cpp-python compiles llama.cpp from source; this takes ~10 minutes"
        # Build llama.cpp for this machine's CPU, like a user of llama.cpp would.
        export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}"
    fi
    # --no-cache-dir: pip would otherwise reuse a llama-cpp-python wheel built with another
    # venv's CMAKE_ARGS (the references' AVX2-only build for the bench's native one).
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "$@"
    echo "$want" >"$marker"
    changed=1
}

changed=0
if [[ ! -x "$VENV/bin/python" ]]; then
    command -v python3 >/dev/null || { echo "setup-python: python3 (>= 3.9) is required" >&2; exit 1; }
    echo "python: creating virtual environment $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi

install_set base "${BASE_REQS[@]}"
if [[ "$bench" == "1" ]]; then
    install_set bench "${BENCH_REQS[@]}"
fi
[[ "$changed" == "1" ]] || exit 0
# Something was installed just now: prove the packages import.
"$VENV/bin/python" - "$bench" <<'PY'
import sys
import importlib.metadata
import numpy, openai
import schemathesis  # noqa: F401 - the import is the check
msg = (f"python: ok (numpy {numpy.__version__}, openai {openai.__version__}, "
       f"schemathesis {importlib.metadata.version('schemathesis')}")
if sys.argv[1] == "1":
    import llama_cpp
    msg += f", llama-cpp-python {llama_cpp.__version__}, gguf {importlib.metadata.version('gguf')}"
print(msg + ")")
PY
