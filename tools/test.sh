#!/usr/bin/env bash
# Installs everything (tools/setup.sh), builds lantern and runs every test: the README's test
# command and what CI runs. Two builds: the normal one (all tests) and an ASan+UBSan one (all
# tests but those on the default model, which would take minutes under the sanitizers), then a
# ThreadSanitizer one of the multi-threaded tests only (ctest label tsan; LANTERN_SKIP_TSAN=1
# leaves it out). The soak test (label soak) is tools/soak.sh's, not this script's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)

tools/setup.sh

cmake --preset default >/dev/null
cmake --build --preset default -j"$jobs"
ctest --preset default -j"$jobs"

if [ "${LANTERN_SKIP_ASAN:-0}" != 1 ]; then
    cmake --preset asan >/dev/null
    cmake --build --preset asan -j"$jobs"
    LANTERN_MODEL=/nonexistent ctest --preset asan -j"$jobs"
fi

if [ "${LANTERN_SKIP_TSAN:-0}" != 1 ]; then
    cmake --preset tsan >/dev/null
    # only what the tsan-labelled tests run
    cmake --build --preset tsan -j"$jobs" --target lantern otlp_send test_ipc_ring \
        test_ipc_allreduce test_trace test_otlp
    ctest --preset tsan -j"$jobs"
fi
