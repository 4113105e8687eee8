#!/usr/bin/env bash
# Installs everything (tools/setup.sh), builds lantern and runs it on the default model: the
# README's run command. Extra arguments go to `lantern generate`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default -j"$(nproc 2>/dev/null || echo 2)"
if [ $# -eq 0 ]; then
    set -- --chat "What is the capital of France?" --max-tokens 64
fi
exec build/lantern generate "$@"
