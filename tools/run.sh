#!/usr/bin/env bash
# Installs everything (tools/setup.sh), builds lantern and serves the default model over the
# OpenAI-compatible HTTP API on http://127.0.0.1:8000: the README's run command. Extra arguments
# go to `lantern serve` (e.g. --port 8080, --host 0.0.0.0, --tensor-parallel-size 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default -j"$(nproc 2>/dev/null || echo 2)"
exec build/lantern serve "$@"
