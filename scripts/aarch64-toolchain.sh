#!/usr/bin/env bash
# A cross toolchain for aarch64, to build and run the NEON / dotprod kernels on an x86-64 machine:
# a Debian trixie root (debootstrap) under
#   ~/.cache/ryzanstein/aarch64/root
# holding Debian's rustc and cargo (trixie-backports) with the arm64 standard library
# (libstd-rust-dev:arm64), the aarch64 cross linker and qemu-user, which runs the aarch64 test
# binaries (`scripts/test-aarch64.sh` uses it). rustup's aarch64 standard library is not used:
# only the package registries are reachable here, and Debian ships the std for each architecture.
#
# Idempotent: a root whose stamp matches this script's package list is kept. Packages come from
# the Debian mirror this machine's own apt sources name. Needs root (debootstrap, chroot).
#
# usage: scripts/aarch64-toolchain.sh [--print-root]
# Environment: RYZANSTEIN_CACHE (default ~/.cache/ryzanstein); AARCH64_TOOLCHAIN_FORCE=1 rebuilds.
set -euo pipefail

CACHE="${RYZANSTEIN_CACHE:-$HOME/.cache/ryzanstein}"
BASE="$CACHE/aarch64"
ROOT="$BASE/root"
SUITE=trixie
# Cross-building needs the rustc and the arm64 std of one release; backports has both.
PACKAGES_NATIVE="ca-certificates gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
PACKAGES_RUST="rustc cargo libstd-rust-dev libstd-rust-dev:arm64"
STAMP="$SUITE|$PACKAGES_NATIVE|$PACKAGES_RUST|v1"

if [[ "${1:-}" == "--print-root" ]]; then
    echo "$ROOT"
    exit 0
fi

if [[ -z "${AARCH64_TOOLCHAIN_FORCE:-}" && -f "$BASE/stamp" && "$(cat "$BASE/stamp")" == "$STAMP" ]]; then
    echo "aarch64-toolchain: ready in $ROOT ($(chroot "$ROOT" rustc --version))"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || { echo "aarch64-toolchain: needs root (debootstrap and chroot)" >&2; exit 1; }

# The Debian mirror of this machine's apt sources (deb822 `URIs:` or one-line `deb URI suite`).
mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        uri="$(awk '$1 == "URIs:" { print $2; exit } $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' "$f" |
            grep -v -- '-security' | head -n1 || true)"
        if [[ -n "$uri" ]]; then
            echo "${uri%/}"
            return
        fi
    done
    echo "aarch64-toolchain: no Debian mirror found in /etc/apt/sources*" >&2
    exit 1
}
MIRROR="$(mirror)"

if ! command -v debootstrap >/dev/null; then
    echo "aarch64-toolchain: installing debootstrap"
    apt-get update -qq && apt-get install -y -qq debootstrap
fi

rm -rf "$BASE"
mkdir -p "$BASE"
echo "aarch64-toolchain: debootstrap $SUITE from the host's Debian mirror into $ROOT"
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$BASE/debootstrap.log" 2>&1 ||
    { tail -n 30 "$BASE/debootstrap.log" >&2; exit 1; }

cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $MIRROR $SUITE-backports main
EOF
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive "$@"; }

in_root dpkg --add-architecture arm64
in_root apt-get update -qq
# shellcheck disable=SC2086
in_root apt-get install -y -qq --no-install-recommends $PACKAGES_NATIVE >"$BASE/apt.log" 2>&1 ||
    { tail -n 30 "$BASE/apt.log" >&2; exit 1; }
# shellcheck disable=SC2086
in_root apt-get install -y -qq --no-install-recommends -t "$SUITE-backports" $PACKAGES_RUST >>"$BASE/apt.log" 2>&1 ||
    { tail -n 30 "$BASE/apt.log" >&2; exit 1; }
in_root apt-get clean

echo "$STAMP" >"$BASE/stamp"
echo "aarch64-toolchain: ready in $ROOT ($(in_root rustc --version); $(in_root qemu-aarch64 --version | head -n1))"
