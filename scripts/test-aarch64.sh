#!/usr/bin/env bash
# Build the kernels for aarch64 and run their tests under qemu-user, on an x86-64 machine: the
# NEON and NEON-dotprod paths are held to the same property tests as on an AArch64 host.
#
# Runs the kernel tests twice: on an emulated CPU with the dot-product extension (`-cpu max`:
# the ladder scalar, neon, dotprod is tested) and on one without it (`-cpu cortex-a72`: detection
# must stop at neon). Then checks that the server compiles for aarch64 (`cargo check`; the
# whole binary builds too, in ~10 minutes on two cores: `cargo build` instead).
# The toolchain comes from scripts/aarch64-toolchain.sh (a Debian root under the cache); the
# build runs in that root with this checkout bind-mounted, in a private mount namespace, so
# nothing stays mounted afterwards.
#
# With AARCH64_MODEL_TESTS=1 it also builds the server's llama.cpp reference tests for aarch64
# and runs them under qemu on the dotprod CPU and with RYZANSTEIN_ISA=neon: the bundled model's
# logits (and the Q4_K_M model's, when `make model-q4-k-m` has made it) must equal llama.cpp's
# on the NEON paths too. Slow (the server's tests build in ~10 minutes, inference is emulated),
# so not part of `make test`.
#
# usage: scripts/test-aarch64.sh [cargo test args...]   (e.g. -- --test-threads=1)
# Environment: RYZANSTEIN_CACHE (default ~/.cache/ryzanstein), AARCH64_MODEL_TESTS,
# AARCH64_MODEL_ISAS (the instruction sets the model tests force; default "dotprod neon").
# Needs root.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RYZANSTEIN_CACHE:-$HOME/.cache/ryzanstein}"
"$REPO/scripts/aarch64-toolchain.sh"
ROOT="$("$REPO/scripts/aarch64-toolchain.sh" --print-root)"
WORK="$CACHE/aarch64/work"       # cargo's home and target directory, kept between runs
REGISTRY="${CARGO_HOME:-$HOME/.cargo}/registry"
MODELS="$CACHE/models"
mkdir -p "$WORK/cargo-home/registry" "$WORK/target" "$WORK/cache/models" "$ROOT/src" "$ROOT/work" "$REGISTRY" "$MODELS"

# The crates come from this machine's cargo (its network set-up: proxies, CA certificates), for
# every platform the lock file names; the build inside the root is offline and reads them there.
(cd "$REPO" && cargo fetch --locked -q)

# The commands run inside the root (arguments: extra cargo test args).
INNER='
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CARGO_HOME=/work/cargo-home
export CARGO_TARGET_DIR=/work/target CARGO_TERM_COLOR=never
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cd /src
echo "test-aarch64: $(rustc --version), $(qemu-aarch64 --version | head -n1)"
for cpu_isa in max:dotprod cortex-a72:neon; do
    cpu=${cpu_isa%:*}
    echo "test-aarch64: kernel tests on an emulated $cpu (must detect ${cpu_isa#*:})"
    RYZANSTEIN_EXPECT_ISA=${cpu_isa#*:} CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu $cpu" \
        cargo test --offline --locked --release -p ryzanstein-kernels --target aarch64-unknown-linux-gnu "$@"
done
if [[ "$MODEL_TESTS" == 1 ]]; then
    for isa in ${MODEL_ISAS:-dotprod neon}; do
        echo "test-aarch64: llama.cpp reference tests on an emulated max CPU, RYZANSTEIN_ISA=$isa"
        RYZANSTEIN_ISA=$isa RYZANSTEIN_CACHE=/work/cache \
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max" \
            cargo test --offline --locked --release --no-fail-fast -p ryzanstein-server \
            --target aarch64-unknown-linux-gnu --test llama_reference --test llama_reference_q4_k_m
    done
fi
echo "test-aarch64: checking the server for aarch64"
cargo check --offline --locked --release -p ryzanstein-server --bin ryzanstein --target aarch64-unknown-linux-gnu
'

unshare --mount --propagation private -- bash -euo pipefail -c '
ROOT=$1 REPO=$2 WORK=$3 REGISTRY=$4 MODELS=$5 MODEL_TESTS=$6 MODEL_ISAS=$7 INNER=$8; shift 8
mount --bind "$REPO" "$ROOT/src"
mount --bind "$WORK" "$ROOT/work"
mount --bind "$REGISTRY" "$ROOT/work/cargo-home/registry"
mount --bind "$MODELS" "$ROOT/work/cache/models"
# The shared references beside the checkout (/src/../shared), where there are any.
if [[ -d "$REPO/../shared" ]]; then
    mkdir -p "$ROOT/shared"
    mount --bind "$REPO/../shared" "$ROOT/shared"
fi
mount -t proc proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
chroot "$ROOT" /usr/bin/env -i MODEL_TESTS="$MODEL_TESTS" MODEL_ISAS="$MODEL_ISAS" bash -c "$INNER" inner "$@"
' outer "$ROOT" "$REPO" "$WORK" "$REGISTRY" "$MODELS" "${AARCH64_MODEL_TESTS:-0}" "${AARCH64_MODEL_ISAS:-dotprod neon}" "$INNER" "$@"
