#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (the serving peer of scripts/bench_serving.py) from the
# llama.cpp bundled in the llama-cpp-python source distribution (the same llama.cpp that the
# other benchmarks use through llama-cpp-python), for this machine's CPU:
#   ~/.cache/ryzanstein/llama-server/src/   the sdist and its extracted tree
#   ~/.cache/ryzanstein/llama-server/build/ the cmake build (only the llama-server target)
#   ~/.cache/ryzanstein/llama-server/bin/llama-server  the installed binary (static: no .so)
# Idempotent: when the binary is there and the stamp file names the same version, nothing runs.
set -euo pipefail

VERSION="0.3.36"
CACHE="${RYZANSTEIN_CACHE:-$HOME/.cache/ryzanstein}"
ROOT="$CACHE/llama-server"
SRC="$ROOT/src"
BUILD="$ROOT/build"
BIN="$ROOT/bin/llama-server"
STAMP="$ROOT/bin/.version"
WANT="llama-cpp-python==$VERSION GGML_NATIVE=ON static"
JOBS="${JOBS:-2}"

if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "llama-server: $BIN is there ($WANT)"
    exit 0
fi

# Tools: cmake and a C++ compiler (Debian packages; installed here when missing and we are root).
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
        echo "llama-server: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "build-llama-server: ${missing[*]} required; install them and rerun" >&2
        exit 1
    fi
fi

PY="$CACHE/venv/bin/python"
[[ -x "$PY" ]] || PY="$(command -v python3)" || { echo "build-llama-server: python3 is required" >&2; exit 1; }

mkdir -p "$SRC"
sdist="$SRC/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$sdist" ]]; then
    echo "llama-server: downloading the llama-cpp-python $VERSION source distribution"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
        "llama-cpp-python==$VERSION" -d "$SRC"
fi
[[ -f "$sdist" ]] || { echo "build-llama-server: pip gave no $sdist" >&2; ls "$SRC" >&2; exit 1; }

tree="$SRC/llama_cpp_python-$VERSION"
if [[ ! -f "$tree/vendor/llama.cpp/CMakeLists.txt" ]]; then
    echo "llama-server: extracting $sdist"
    rm -rf "$tree"
    tar -xzf "$sdist" -C "$SRC"
fi
LLAMA="$tree/vendor/llama.cpp"
[[ -f "$LLAMA/CMakeLists.txt" ]] || { echo "build-llama-server: no llama.cpp in $tree/vendor" >&2; exit 1; }

echo "llama-server: configuring $LLAMA (Release, native, static, no curl/tests/examples)"
cmake -S "$LLAMA" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_COMMON=ON >"$ROOT/configure.log" 2>&1 \
    || { tail -40 "$ROOT/configure.log" >&2; exit 1; }
echo "llama-server: building the llama-server target with -j$JOBS (several minutes once; log: $ROOT/build.log)"
cmake --build "$BUILD" --config Release --target llama-server -j "$JOBS" >"$ROOT/build.log" 2>&1 \
    || { tail -40 "$ROOT/build.log" >&2; exit 1; }

built="$(find "$BUILD" -type f -name llama-server -perm -u+x | head -n1)"
[[ -n "$built" ]] || { echo "build-llama-server: the build gave no llama-server binary" >&2; exit 1; }
mkdir -p "$(dirname "$BIN")"
install -m 0755 "$built" "$BIN"
if ldd "$BIN" | grep -qE 'libllama|libggml'; then
    echo "build-llama-server: $BIN links llama/ggml shared libraries; expected a static build" >&2
    exit 1
fi
"$BIN" --version >/dev/null 2>&1 || { echo "build-llama-server: $BIN --version failed" >&2; exit 1; }
echo "$WANT" >"$STAMP"
echo "llama-server: installed $BIN ($("$BIN" --version 2>&1 | grep -m1 -i version || true))"
