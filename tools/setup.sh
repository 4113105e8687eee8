#!/usr/bin/env bash
# Idempotent set-up from nothing: Debian packages, the Python environment, the default model.
#
#   tools/setup.sh              packages for building, testing and running lantern
#   tools/setup.sh --reference  also torch/transformers, to regenerate reference fixtures
#   tools/setup.sh --bench      also the benchmarks' peer: llama.cpp's llama-bench and
#                               llama-server (bench/build_llama_cpp.sh, cached outside the
#                               checkout) and llama-cpp-python (built locally)
#   tools/setup.sh --fuzz       also clang (with libFuzzer), for the `fuzz` preset / tools/fuzz.sh
#
# Every step checks before it acts, so running it twice is cheap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

want_reference=0
want_bench=0
want_fuzz=0
for a in "$@"; do
    case "$a" in
    --reference) want_reference=1 ;;
    --bench) want_bench=1 ;;
    --fuzz) want_fuzz=1 ;;
    *) echo "setup.sh: unknown option '$a'" >&2; exit 2 ;;
    esac
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# ---- Debian packages ----
debs=(build-essential cmake pkg-config git unzip ca-certificates curl
      libopenblas-openmp-dev libcjson-dev libjansson-dev libzmq3-dev libmsgpack-dev
      libmicrohttpd-dev libpcre2-dev libutf8proc-dev libcurl4-openssl-dev libprotobuf-c-dev
      protobuf-c-compiler
      libcmocka-dev python3-venv clang-format openssl
      prometheus systemd strace)
# clang brings libclang_rt.fuzzer (libFuzzer); only the fuzz preset needs it, CI builds with gcc.
[ "$want_fuzz" -eq 0 ] || debs+=(clang)
# prometheus: the server and promtool that tests/unit/test_conf.py and test_prometheus.py run (each
# test starts its own on a free loopback port; the Debian service the package may start is not
# used); systemd: systemd-analyze, which checks conf/lantern.service; strace: test_conf.py runs
# lantern serve under it to check the unit's system-call filter.
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---- Python environment (inside the checkout, ignored by git) ----
venv="${LANTERN_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating Python environment $venv"
    python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" -r "$here/requirements.txt"
if [ "$want_reference" -eq 1 ]; then
    "${pip[@]}" -r "$here/requirements-reference.txt"
fi
if [ "$want_bench" -eq 1 ]; then
    # llama-cpp-python builds llama.cpp from source here, for this CPU (bench_offline.py).
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" "${pip[@]}" -r "$here/requirements-bench.txt"
    # llama.cpp's own programs (bench_generate.py, bench_serve.py --compare); cached.
    llama_bin=$(LANTERN_VENV="$venv" "$root/bench/build_llama_cpp.sh")
    echo "setup: llama.cpp's programs in $llama_bin"
fi

# ---- the default model ----
"$here/fetch_model.sh"
echo "setup: done"
