#!/usr/bin/env bash
# gpu_remote.sh — runs on the GPU machine, from the repository root, after tools/gpu_bundle.sh
# packed BUNDLE_DIR (default .gpu) here: unpacks the build and its libraries, finds the CUDA
# runtime, cuBLAS and NCCL that machine has, runs tools/gpu_check.sh on the packed model, and
# copies the report to $OUT (the device tool's return folder) when it is set. Extra arguments
# are passed to gpu_check.sh after the build and report paths. With the whole model in two
# halves (gpu_bundle.sh ... full), it joins them first: the first half from PART0 (default
# /root/.gpu-part0/model.part0, where the first call copied it).
set -u
cd "$(dirname "$0")/.."
dir=${BUNDLE_DIR:-.gpu}
tar -C . -xJf "$dir/bundle.tar.xz" || exit 1
build=$(sed -n 's/^CMAKE_CACHEFILE_DIR:INTERNAL=//p' build-gpu/CMakeCache.txt)
src=$(dirname "$build")
# the build's absolute paths (ctest files) name the tree it was made in
if [ "$src" != "$PWD" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"
fi
libs=$PWD/lib
for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
    p=$(ldconfig -p | awk -v l="$l" '$1 == l {print $NF; exit}')
    [ -n "$p" ] || p=$(find /usr/local /usr/lib /opt -name "$l" 2>/dev/null | head -1)
    [ -n "$p" ] && libs=$libs:$(dirname "$p")
    echo "gpu_remote: $l: ${p:-not found}"
done
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LANTERN_MODEL=$PWD/$dir/model.gguf GPU_CHECK_REFERENCE=none
if [ -f "$dir/model.part1" ]; then # the whole default model, in two calls (gpu_bundle.sh)
    part0=${PART0:-/root/$(basename "$dir")-part0/model.part0}
    if [ ! -f "$part0" ]; then
        echo "gpu_remote: $part0 missing (the first call's half: the machine went cold?)"
        exit 1
    fi
    cat "$part0" "$dir/model.part1" >"$dir/model.gguf"
    if [ "$(sha256sum "$dir/model.gguf" | cut -d' ' -f1)" != "$(cat "$dir/model.sha256")" ]; then
        echo "gpu_remote: the joined model's checksum differs"
        exit 1
    fi
    export GPU_CHECK_REFERENCE=default # the transformers fixture's near-tie rule holds
fi
report=${OUT:-.}/gpu_check_report.txt
tools/gpu_check.sh build-gpu "$report" "$@"
rc=$?
[ -n "${OUT:-}" ] && cp build-gpu/Testing/Temporary/LastTest.log "$OUT/" 2>/dev/null
exit $rc
