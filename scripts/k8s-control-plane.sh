#!/usr/bin/env bash
# Start, inspect or stop the e2e Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) on loopback, for a person at a terminal.
#
# usage: scripts/k8s-control-plane.sh start|stop|status <state-dir>
#   start   generate certificates and kubeconfigs in <state-dir> (created; must be empty), start
#           the four processes on free 127.0.0.1 ports, wait until healthy, print the admin
#           KUBECONFIG and return, leaving them running; logs in <state-dir>/logs/
#   status  each process and its health endpoint; exit 1 unless all are healthy
#   stop    kill the processes and remove <state-dir>
#
# The binaries come from `make k8s` (scripts/k8s-build.sh). Tests use the same code as a Rust
# struct, ryzanstein_e2e::ControlPlane, which stops everything when dropped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ryzanstein/target}"

if [[ $# -ne 2 || ! "$1" =~ ^(start|stop|status)$ ]]; then
    sed -n 's/^# usage: /usage: /p' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
cargo build -q --manifest-path "$ROOT/Cargo.toml" -p ryzanstein-e2e --bin ryzanstein-control-plane
exec "$CARGO_TARGET_DIR/debug/ryzanstein-control-plane" "$@"
