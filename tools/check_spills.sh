#!/usr/bin/env bash
# Compiles every kernels/cuda/*.cu with `-Xptxas -v` for each architecture given (default 80 90)
# into a log, and fails if ptxas reports a register spill (spill stores or loads > 0) in any
# kernel. Needs nvcc, not a GPU. Usage: check_spills.sh [LOG] [ARCH...]; NVCC_FLAGS adds flags
# (NVCC_FLAGS=-maxrregcount=16 makes it fail: the check can fail).
set -u
cd "$(dirname "$0")/.."
log=${1:-/tmp/lantern-ptxas.log}
shift || true
archs=${*:-80 90}
nvcc=${NVCC:-nvcc}
command -v "$nvcc" >/dev/null || { echo "check_spills: no nvcc: skipped"; exit 77; }
: >"$log"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in kernels/cuda/*.cu; do
    for a in $archs; do
        echo "== $f sm_$a" >>"$log"
        if ! "$nvcc" ${NVCC_FLAGS:-} -c -std=c++17 -O3 -arch="sm_$a" -Xptxas -v -Ikernels -Ikernels/cuda \
            "$f" -o "$tmp/out.o" >>"$log" 2>&1; then
            echo "check_spills: $f failed to compile for sm_$a (see $log)"
            exit 1
        fi
    done
done
kernels=$(grep -c "Compiling entry function" "$log")
bad=$(grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$log" | wc -l)
if [ "$kernels" -eq 0 ]; then
    echo "check_spills: ptxas reported no kernels (see $log)"
    exit 1
fi
if [ "$bad" -ne 0 ]; then
    echo "check_spills: register spills in $bad kernel compilations:"
    grep -B1 -E "[1-9][0-9]* bytes spill (stores|loads)" "$log" | grep -v '^--'
    exit 1
fi
echo "check_spills: $kernels kernel compilations for sm_{${archs// /,}}, no register spills (log $log)"
