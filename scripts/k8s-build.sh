#!/usr/bin/env bash
# Build the e2e control plane — etcd, kube-apiserver, kube-scheduler, kube-controller-manager —
# from Go modules at the versions pinned in e2e/k8s/{kubernetes,etcd}/go.mod (and go.sum), into
#   ~/.cache/ryzanstein/k8s/<kubernetes version>/bin/
# Idempotent: a binary that is already there and reports the pinned version is not rebuilt.
#
# usage: scripts/k8s-build.sh [--print-bin-dir]
#   --print-bin-dir   print the directory the binaries go to and exit (builds nothing)
#
# Environment:
#   RYZANSTEIN_CACHE  cache root (default ~/.cache/ryzanstein); Go's module and build caches
#                     live in $RYZANSTEIN_CACHE/go/{mod,build} so CI can keep them.
#   K8S_BUILD_FORCE=1 rebuild even when the binaries are there.
#
# Needs Go 1.26 or newer on PATH (e2e/k8s/etcd/go.mod says go 1.26.0); never downloads another
# toolchain (GOTOOLCHAIN=local).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RYZANSTEIN_CACHE:-$HOME/.cache/ryzanstein}"
K8S_MOD="$ROOT/e2e/k8s/kubernetes"
ETCD_MOD="$ROOT/e2e/k8s/etcd"

export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOTOOLCHAIN=local      # build with the Go on PATH; fail rather than fetch another
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0          # static binaries, as the upstream releases are

# The version a module's go.mod pins for one dependency.
pinned() { # <module dir> <module path>
    awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1/go.mod"
}

K8S_VERSION="$(pinned "$K8S_MOD" k8s.io/kubernetes)"
ETCD_VERSION="$(pinned "$ETCD_MOD" go.etcd.io/etcd/server/v3)"
[[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" ]] || { echo "k8s-build: cannot read pinned versions" >&2; exit 1; }
BIN_DIR="$CACHE/k8s/$K8S_VERSION/bin"

if [[ "${1:-}" == "--print-bin-dir" ]]; then
    echo "$BIN_DIR"
    exit 0
fi

command -v go >/dev/null || { echo "k8s-build: go is not on PATH (Go 1.26+ needed)" >&2; exit 1; }
mkdir -p "$BIN_DIR"
echo "k8s-build: Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, $(go version | cut -d' ' -f3) -> $BIN_DIR"

# What `<binary> --version` prints when the binary is the pinned one.
expected_version() { # <binary>
    case "$1" in
        etcd) echo "etcd Version: ${ETCD_VERSION#v}" ;;
        *) echo "Kubernetes $K8S_VERSION" ;;
    esac
}

reports_pinned_version() { # <binary>
    local bin="$BIN_DIR/$1" out
    [[ -x "$bin" ]] || return 1
    # Captured first: grep -q would stop reading early, and pipefail would see SIGPIPE.
    out="$("$bin" --version 2>/dev/null)" || return 1
    grep -qxF "$(expected_version "$1")" <<<"$out"
}

up_to_date() { # <binary>
    [[ "${K8S_BUILD_FORCE:-0}" != 1 ]] && reports_pinned_version "$1"
}

# Version stamps the upstream build (hack/lib/version.sh) writes with -X; without them the
# binaries call themselves v0.0.0-master. The build date is the release's module timestamp, so
# two builds of one pin are the same bytes.
k8s_ldflags() {
    local minor="${K8S_VERSION#v1.}"
    minor="${minor%%.*}"
    local date
    date="$(cd "$K8S_MOD" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
    local flags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    echo "$flags"
}

build() { # <module dir> <package> <binary> <ldflags>
    local dir="$1" pkg="$2" name="$3" ldflags="$4"
    if up_to_date "$name"; then
        echo "k8s-build: $name is up to date ($(expected_version "$name"))"
        return
    fi
    echo "k8s-build: building $name from $pkg ..."
    local start=$SECONDS tmp="$BIN_DIR/.$name.tmp"
    (cd "$dir" && go build -trimpath -ldflags="$ldflags" -o "$tmp" "$pkg")
    mv -f "$tmp" "$BIN_DIR/$name"
    if ! reports_pinned_version "$name"; then
        echo "k8s-build: $name built but '--version' says '$("$BIN_DIR/$name" --version 2>&1 | head -1)'," \
             "expected '$(expected_version "$name")'" >&2
        exit 1
    fi
    echo "k8s-build: built $name in $((SECONDS - start))s ($(du -h "$BIN_DIR/$name" | cut -f1))"
}

LDFLAGS_K8S="$(k8s_ldflags)"
build "$ETCD_MOD" go.etcd.io/etcd/server/v3 etcd "-s -w"
build "$K8S_MOD" k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$LDFLAGS_K8S"
build "$K8S_MOD" k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$LDFLAGS_K8S"
build "$K8S_MOD" k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$LDFLAGS_K8S"
echo "k8s-build: done; binaries in $BIN_DIR"
