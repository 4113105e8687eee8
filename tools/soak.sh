#!/usr/bin/env bash
# The soak test (tests/unit/test_soak.py, ctest label soak): 5 rounds of 512 concurrent streaming
# requests with random disconnects against `lantern serve` on a tiny random model; minutes long,
# so not in tools/test.sh. Builds the default preset first. SOAK_ROUNDS / SOAK_CLIENTS /
# SOAK_DISCONNECT / SOAK_TOKENS change its size.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cmake --preset default >/dev/null
cmake --build --preset default -j"$(nproc 2>/dev/null || echo 2)"
ctest --test-dir build -L soak --output-on-failure -V
