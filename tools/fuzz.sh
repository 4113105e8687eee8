#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz/ (build: the `fuzz` preset, clang).
#
#   tools/fuzz.sh [minutes] [target...]     e.g. tools/fuzz.sh 5 oai tokenizer
#
# Each target runs for `minutes` (default 5) on a copy of its seed corpus in a work directory
# ($LANTERN_FUZZ_WORK, default build-fuzz/fuzz-work/<target>), so the committed corpus never
# grows; with LANTERN_FUZZ_MERGE=1 the inputs that add coverage are merged back into
# tests/fuzz/corpus_<target> afterwards (libFuzzer -merge=1). Crash, timeout and out-of-memory
# inputs are written to the work directory and listed at the end; add each one to
# tests/fuzz/corpus_<target>/ once fixed so that its ctest replays it. Needs clang with
# libclang_rt.fuzzer (tools/setup.sh --fuzz installs it). Exits 1 when any target found a crash.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root" || exit 2

minutes=${1:-5}
shift || true
all=(envelope msg gguf traceparent oai safetensors tokenizer chat_template)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
case "$minutes" in '' | *[!0-9.]*) echo "fuzz.sh: minutes must be a number" >&2; exit 2 ;; esac
seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')

# the longest input worth trying per target: headers and bodies, not whole models
max_len() {
    case "$1" in
    traceparent) echo 256 ;;
    envelope | msg | tokenizer) echo 4096 ;;
    oai | chat_template) echo 8192 ;;
    *) echo 16384 ;;
    esac
}

mkdir -p build-fuzz
cmake --preset fuzz >build-fuzz/fuzz-build.log 2>&1 &&
    cmake --build --preset fuzz -j"${LANTERN_FUZZ_JOBS:-2}" \
        --target $(printf 'fuzz_%s ' "${targets[@]}") >>build-fuzz/fuzz-build.log 2>&1 || {
    tail -20 build-fuzz/fuzz-build.log >&2
    echo "fuzz.sh: the fuzz preset did not build (build-fuzz/fuzz-build.log)" >&2
    exit 2
}

work_root=${LANTERN_FUZZ_WORK:-$root/build-fuzz/fuzz-work}
export LANTERN_FIXTURES="$root/tests/fixtures"
found=0
summary=()
for t in "${targets[@]}"; do
    exe="$root/build-fuzz/tests/fuzz_$t"
    seeds="$root/tests/fuzz/corpus_$t"
    [ -x "$exe" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
    work="$work_root/$t"
    rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts"
    cp "$seeds"/* "$work/corpus/"
    log="$work/fuzz.log"
    echo "== $t: ${minutes} min, -max_len=$(max_len "$t"), log $log"
    start=$(date +%s)
    "$exe" "$work/corpus" -max_total_time="$seconds" -max_len="$(max_len "$t")" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" >"$log" 2>&1
    rc=$?
    wall=$(($(date +%s) - start))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1)
    crashes=$(find "$work/artifacts" -type f | sort)
    n_crash=$(printf '%s' "$crashes" | grep -c . || true)
    line="$t: ${runs:-?} executions in ${wall}s (${eps:-?} exec/s), ${cov:-cov ?}, rc $rc, $n_crash crash file(s)"
    echo "$line"
    summary+=("$line")
    if [ -n "$crashes" ]; then
        found=1
        echo "$crashes" | sed 's/^/  crash: /'
        grep -m3 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" | sed 's/^/  /'
    fi
    if [ "${LANTERN_FUZZ_MERGE:-0}" = 1 ]; then
        "$exe" -merge=1 -max_len="$(max_len "$t")" "$seeds" "$work/corpus" >>"$log" 2>&1
        echo "  merged new coverage into $seeds"
    fi
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $found
