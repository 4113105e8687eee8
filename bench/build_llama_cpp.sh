#!/usr/bin/env bash
# Builds the benchmarks' peer: llama.cpp's own C++ programs (llama-server, llama-bench,
# llama-batched-bench, llama-tokenize), from the llama.cpp tree vendored in the
# llama-cpp-python source package, for this CPU. Prints the directory holding the four binaries
# on stdout (progress goes to stderr):
#
#   bin=$(bench/build_llama_cpp.sh)      # then "$bin/llama-bench", "$bin/llama-server", ...
#
# The build lives outside the repository, in
#   ${LANTERN_LLAMA_CPP_DIR:-${XDG_CACHE_HOME:-~/.cache}/lantern/llama.cpp/<version>}
# with src/ (the unpacked source package), build/ (CMake's), bin/ (the four programs),
# configure.log, build.log and stamp. The stamp names the version, the CMake flags and the
# targets; when it matches and the programs are there, nothing is downloaded or rebuilt (a build
# takes ~10 minutes on 2 cores). Set LANTERN_LLAMA_CPP_REBUILD=1 to rebuild anyway,
# LANTERN_LLAMA_CPP_JOBS to choose the build's parallelism (default: all cores).
#
# The source package comes through pip (`pip download --no-binary :all:`), from whatever index
# pip is configured to use; pip is taken from $LANTERN_VENV, else the checkout's .venv, else
# python3's.
set -euo pipefail

version=0.3.36
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dir="${LANTERN_LLAMA_CPP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lantern/llama.cpp/$version}"
flags=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF
       -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_USE_PREBUILT_UI=OFF
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF)
targets=(llama-server llama-bench llama-batched-bench llama-tokenize)
stamp="llama-cpp-python $version; ${flags[*]}; ${targets[*]}"

die() {
    echo "build_llama_cpp: $*" >&2
    exit 1
}
say() { echo "build_llama_cpp: $*" >&2; }

# ---- cached? ----
cached() {
    [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$stamp" ] || return 1
    local t
    for t in "${targets[@]}"; do
        [ -x "$dir/bin/$t" ] || return 1
    done
}
if [ "${LANTERN_LLAMA_CPP_REBUILD:-0}" != 1 ] && cached; then
    echo "$dir/bin"
    exit 0
fi
if [ -f "$dir/stamp" ]; then
    say "the stamp in $dir differs from this script's build (or a program is missing): rebuilding"
    say "  have: $(cat "$dir/stamp")"
    say "  want: $stamp"
fi

# ---- tools ----
for tool in cmake make c++ tar; do
    command -v "$tool" >/dev/null || die "'$tool' not found: run tools/setup.sh first"
done
py=""
for cand in "${LANTERN_VENV:+$LANTERN_VENV/bin/python}" "$root/.venv/bin/python" python3; do
    [ -n "$cand" ] || continue
    if "$cand" -m pip --version >/dev/null 2>&1; then
        py=$cand
        break
    fi
done
[ -n "$py" ] || die "no Python with pip found (tried \$LANTERN_VENV, $root/.venv, python3): run tools/setup.sh first"

mkdir -p "$dir" || die "cannot create $dir (set LANTERN_LLAMA_CPP_DIR)"
rm -f "$dir/stamp" # a stale stamp must not outlive a failed build

# ---- the source package ----
if [ ! -f "$dir/src/vendor/llama.cpp/CMakeLists.txt" ]; then
    dl=$(mktemp -d "$dir/download.XXXXXX")
    trap 'rm -rf "$dl"' EXIT
    say "downloading the llama-cpp-python $version source package with pip"
    "$py" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
        --dest "$dl" "llama-cpp-python==$version" >&2 ||
        die "pip could not download llama-cpp-python==$version's source package (no network, or no such version on the configured index)"
    sdist=$(find "$dl" -maxdepth 1 -name '*.tar.gz' | head -n1)
    [ -n "$sdist" ] || die "pip downloaded no source archive into $dl: $(ls "$dl")"
    rm -rf "$dir/src"
    mkdir -p "$dir/src"
    tar -xzf "$sdist" -C "$dir/src" --strip-components=1 || die "cannot unpack $sdist"
    [ -f "$dir/src/vendor/llama.cpp/CMakeLists.txt" ] ||
        die "$sdist has no vendor/llama.cpp/CMakeLists.txt"
fi

# ---- configure and build ----
jobs="${LANTERN_LLAMA_CPP_JOBS:-$(nproc)}"
say "configuring llama.cpp in $dir/build (log: $dir/configure.log)"
if ! cmake -S "$dir/src/vendor/llama.cpp" -B "$dir/build" "${flags[@]}" \
    >"$dir/configure.log" 2>&1; then
    tail -n 30 "$dir/configure.log" >&2
    die "CMake configuration failed; see $dir/configure.log"
fi
say "building ${targets[*]} with $jobs jobs (log: $dir/build.log; ~10 min on 2 cores)"
if ! cmake --build "$dir/build" -j "$jobs" --target "${targets[@]}" >"$dir/build.log" 2>&1; then
    tail -n 30 "$dir/build.log" >&2
    die "the build failed; see $dir/build.log"
fi
mkdir -p "$dir/bin"
for t in "${targets[@]}"; do
    [ -x "$dir/build/bin/$t" ] || die "the build made no $dir/build/bin/$t"
    cp -f "$dir/build/bin/$t" "$dir/bin/$t"
done
printf '%s\n' "$stamp" >"$dir/stamp.tmp"
mv -f "$dir/stamp.tmp" "$dir/stamp"
say "done"
echo "$dir/bin"
