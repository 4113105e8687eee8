#!/usr/bin/env bash
# gpu_bundle.sh — packs what tools/gpu_check.sh needs on a bare GPU machine that can receive
# only a few tens of MB and reach no package mirror: the CUDA build's binaries and tests, the
# shared libraries they load that are not glibc, libstdc++ or CUDA's own (the GPU machine brings
# those), and the default model cut to its first blocks (tools/truncate_gguf.py) so that it fits.
#
#     cmake --preset default -B build-gpu -DCMAKE_CUDA_ARCHITECTURES=90 -DLANTERN_NATIVE=OFF
#     cmake --build build-gpu -j --target lantern lantern-core lantern_cuda bench_cuda \
#         test_cuda_ops test_cuda_rmsnorm test_cuda_forward test_cuda_nccl test_cuda_tp
#     tools/gpu_bundle.sh [BUILD] [OUTDIR] [BLOCKS]       (defaults: build-gpu .gpu 6)
#
# OUTDIR (.gpu and .gpu-part0 are in .gitignore; another one must be ignored too) then holds
# bundle.tar.xz and model.gguf;
# on the GPU machine tools/gpu_remote.sh unpacks them and runs the check.
#
# BLOCKS=full: the whole default model (98 MB), too big for one call, in two halves: the first
# in OUTDIR-part0/model.part0, the second in OUTDIR/model.part1. Two calls, the second within the
# machine's warm time of the first: one that carries OUTDIR-part0 and runs
# `cp -r OUTDIR-part0 /root/`, then one that carries OUTDIR and runs tools/gpu_remote.sh, which
# joins the halves (and says so if the first is gone: a machine gone cold) and checks greedy ids
# with the transformers fixture's near-tie rule.
set -eu
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
out=${2:-.gpu}
blocks=${3:-6}
model=${LANTERN_MODEL:-$HOME/.cache/lantern/models/SmolLM2-135M-Instruct.Q4_1.gguf}
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$build/tests" "$stage/lib"
files=("$build/lantern" "$build/lantern-core" "$build/liblantern_cuda.so"
    "$build/CTestTestfile.cmake" "$build/tests/CTestTestfile.cmake" "$build/CMakeCache.txt")
for f in "$build"/tests/test_cuda_* "$build"/bench/bench_cuda; do [ -x "$f" ] && files+=("$f"); done
# the K-quant random model (1 MB) for test_cuda_forward (tools/gpu_check.sh, step 3)
kq=$build/models/llama-kquant-gguf/model.gguf
[ -f "$kq" ] || kq=build/models/llama-kquant-gguf/model.gguf
[ -f "$kq" ] && { mkdir -p "$stage/$build/models/llama-kquant-gguf"; cp "$kq" "$stage/$build/models/llama-kquant-gguf/"; }
for f in "${files[@]}"; do
    mkdir -p "$stage/$(dirname "$f")"
    cp "$f" "$stage/$f"
done
git describe --always --dirty >"$stage/$build/COMMIT" 2>/dev/null || echo unknown >"$stage/$build/COMMIT"
# the libraries: everything ldd resolves except glibc's, the C++ runtime and CUDA's
ldd "${files[@]}" 2>/dev/null | awk '/=>/ {print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|librt|libpthread|libresolv|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
    grep -v -E 'cuda|cublas|nccl|libcudart' | while read -r l; do cp -L "$l" "$stage/lib/"; done
tar -C "$stage" -cJf "$out/bundle.tar.xz" .
rm -f "$out"/model.gguf "$out"/model.part1
if [ "$blocks" = full ]; then
    size=$(stat -c %s "$model")
    half=$(((size + 1) / 2))
    mkdir -p "$out-part0"
    head -c "$half" "$model" >"$out-part0/model.part0"
    tail -c +$((half + 1)) "$model" >"$out/model.part1"
    sha256sum "$model" | cut -d' ' -f1 >"$out/model.sha256"
    du -b "$out"/bundle.tar.xz "$out-part0/model.part0" "$out/model.part1"
else
    rm -f "$out/model.sha256"
    .venv/bin/python tools/truncate_gguf.py "$model" "$out/model.gguf" --blocks "$blocks"
    du -b "$out"/bundle.tar.xz "$out"/model.gguf
fi
