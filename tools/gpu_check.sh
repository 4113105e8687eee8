#!/usr/bin/env bash
# gpu_check.sh — the checks of the CUDA backend on a machine with an NVIDIA GPU, in one run of
# a few minutes, written to a report file. First run on an H200 on 2026-12-04 (bench/RESULTS.md).
#
# Prepare the build on any machine with nvcc, for the target GPU (an H100/H200 is sm_90):
#     cmake --preset default -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build --preset default -j
# carry the tree with build/ to the GPU machine, then run:
#     LANTERN_MODEL=/path/SmolLM2-135M-Instruct.Q4_1.gguf tools/gpu_check.sh [BUILD] [REPORT]
#
# Steps, each PASS / FAIL / SKIP in the report (exit status 1 if any FAIL):
#  1. nvidia-smi facts: GPU name, driver, memory, compute capability; the build's architectures
#  2. every `cuda`-labelled ctest (kernels against the CPU reference, the spill check)
#  3. compute-sanitizer memcheck on the kernel tests test_cuda_ops and test_cuda_rmsnorm (when
#     compute-sanitizer is on the PATH); then test_cuda_forward on the K-quant random model
#     ($build/models/llama-kquant-gguf/model.gguf: Q4_K/Q5_K/Q6_K, unfolded on the device) when
#     it is there, and test_cuda_tp on it (two ranks over NCCL) when two GPUs are visible
#  4. greedy ids CUDA vs CPU on the default model for the 4 prompts of
#     tests/fixtures/reference_default.json (32 tokens, --ignore-eos), and with
#     --tensor-parallel-size 2 when two GPUs are visible. Near-tie rule: the two sequences must be
#     identical, except that they may part at step i when the CPU's ids up to i equal the
#     reference (transformers) and the reference's top-1/top-2 logit margin at step i,
#     greedy_margin[i], is below 0.05: a tie that fp32 summation order may break either way.
#     Every other divergence fails. GPU_CHECK_REFERENCE=none (another model than the default,
#     e.g. tools/gpu_bundle.sh's cut one, for which the fixture's margins do not hold): the
#     prompts are the fixture's, and the two sequences must be identical.
#  5. informational: 256 greedy tokens' speed on CUDA and the CPU, in one process and the tree
#  6. bench/bench_cuda (when built): the Llama-3-8B-shaped decode and prefill benchmark against
#     the HBM roofline and the cuBLAS peak; GPU_BENCH_ARGS adds its options. Then once more for
#     Q4_1 with LANTERN_CUDA_OP_TIMES=1: the time of each operation kind per step (eager)
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
report=${2:-gpu_check_report.txt}
bin=$build/lantern
fails=0
: >"$report"
say() { echo "$*" | tee -a "$report"; }
result() { # result NAME STATUS [DETAIL]
    say "$2 $1${3:+: $3}"
    [ "$2" = FAIL ] && fails=$((fails + 1))
    return 0
}

say "== lantern gpu_check $(date -u +%FT%TZ) on $(hostname)"
# the build's commit (tools/gpu_bundle.sh writes it beside the binaries), else the tree's
if [ -f "$build/COMMIT" ]; then
    say "commit: $(cat "$build/COMMIT") (of the build)"
else
    say "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (of the tree)"
fi
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    result nvidia-smi FAIL "no NVIDIA driver or GPU visible"
    exit 1
fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv |
    tee -a "$report"
ngpu=$(nvidia-smi -L | wc -l)
say "build architectures: $(grep -E '^CMAKE_CUDA_ARCHITECTURES' "$build/CMakeCache.txt" 2>/dev/null)"
[ -x "$bin" ] || { result build FAIL "$bin missing: build first (see the header)"; exit 1; }

# 2. the cuda-labelled tests
if (cd "$build" && timeout 240 ctest -L cuda --output-on-failure) >>"$report" 2>&1; then
    result "ctest -L cuda" PASS
else
    result "ctest -L cuda" FAIL "see the log above"
fi
grep -E "^(ok  |FAIL) " "$build/Testing/Temporary/LastTest.log" 2>/dev/null | head -80 >>"$report"

# 3. memcheck on the kernel tests
if command -v compute-sanitizer >/dev/null; then
    for t in "$build"/tests/test_cuda_ops "$build"/tests/test_cuda_rmsnorm; do
        [ -x "$t" ] || continue
        if timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 "$t" \
            >>"$report" 2>&1; then
            result "memcheck $(basename "$t")" PASS
        else
            result "memcheck $(basename "$t")" FAIL "status $?"
        fi
    done
else
    result memcheck SKIP "compute-sanitizer not on the PATH"
fi
kq=$build/models/llama-kquant-gguf/model.gguf
if [ -f "$kq" ] && [ -x "$build/tests/test_cuda_forward" ]; then
    if LANTERN_MODEL=$kq timeout 120 "$build/tests/test_cuda_forward" >>"$report" 2>&1; then
        result "CUDA forward vs CPU, K-quant model" PASS
    else
        result "CUDA forward vs CPU, K-quant model" FAIL "status $?"
    fi
else
    result "CUDA forward vs CPU, K-quant model" SKIP "$kq absent (ctest -R random_models makes it)"
fi
# tensor parallel over NCCL (threads as ranks): 2 GPUs or more, else the test skips (77)
if [ -f "$kq" ] && [ -x "$build/tests/test_cuda_tp" ]; then
    LANTERN_MODEL=$kq timeout 120 "$build/tests/test_cuda_tp" >>"$report" 2>&1
    case $? in
    0) result "CUDA tensor parallel vs CPU, K-quant model" PASS ;;
    77) result "CUDA tensor parallel vs CPU, K-quant model" SKIP "fewer than 2 GPUs" ;;
    *) result "CUDA tensor parallel vs CPU, K-quant model" FAIL ;;
    esac
fi

# 4. greedy CUDA vs CPU
model=${LANTERN_MODEL:-}
if [ -z "$model" ] || [ ! -e "$model" ]; then
    result "greedy CUDA vs CPU" SKIP "set LANTERN_MODEL to the default model's .gguf"
else
    compare() { # compare TP
        python3 - "$bin" "$model" "$1" tests/fixtures/reference_default.json \
            "${GPU_CHECK_REFERENCE:-default}" <<'PY'
import json, os, subprocess, sys
bin_, model, tp, fix, mode = sys.argv[1:6]
ref = json.load(open(fix))
bad = 0
def run(dev, ids):
    r = subprocess.run([bin_, "generate", "--model", model, "--device", dev,
                        "--tensor-parallel-size", tp, "--prompt-ids", ",".join(map(str, ids)),
                        "--max-tokens", "32", "--ignore-eos"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode:
        return None, r.stderr.strip()[-300:]
    return [int(t) for t in r.stdout.strip().split(",")], r.stderr.strip().splitlines()[-2:]
for i, case in enumerate(ref["cases"]):
    cpu, _ = run("cpu", case["prompt_ids"])
    gpu, info = run(os.environ.get("GPU_CHECK_DEVICE", "cuda"), case["prompt_ids"])
    if cpu is None or gpu is None:
        print(f"FAIL tp={tp} prompt {i}: a run failed: {info}")
        bad += 1
        continue
    if cpu == gpu:
        print(f"PASS tp={tp} prompt {i}: 32 ids identical; cuda {' | '.join(info)}")
        continue
    step = next(j for j in range(32) if cpu[j] != gpu[j])
    margin = case["greedy_margin"][step] if mode != "none" else float("nan")
    tie = mode != "none" and cpu[:step + 1] == case["greedy"][:step + 1] and margin < 0.05
    print(f"{'PASS' if tie else 'FAIL'} tp={tp} prompt {i}: parts at step {step} "
          f"(cpu {cpu[step]}, cuda {gpu[step]}, reference margin {margin:.4f})"
          f"{': near tie' if tie else ''}")
    bad += not tie
sys.exit(1 if bad else 0)
PY
    }
    if out=$(compare 1 2>&1); then result "greedy CUDA vs CPU, tp 1" PASS; else
        result "greedy CUDA vs CPU, tp 1" FAIL; fi
    say "$out"
    if [ "$ngpu" -ge 2 ]; then
        if out=$(compare 2 2>&1); then result "greedy CUDA vs CPU, tp 2 (NCCL)" PASS; else
            result "greedy CUDA vs CPU, tp 2 (NCCL)" FAIL; fi
        say "$out"
    else
        result "greedy CUDA vs CPU, tp 2 (NCCL)" SKIP "one GPU"
    fi
fi

# 5. speed of the whole model, informational: 256 greedy tokens in one process and through the tree
if [ -n "$model" ] && [ -e "$model" ]; then
    for dev in cuda cpu; do
        for mode in --in-process ""; do
            line=$(timeout 120 "$bin" generate --model "$model" --device "$dev" $mode \
                --prompt-ids 1,2,3,4,5,6,7,8 --max-tokens 256 --ignore-eos 2>&1 >/dev/null | tail -1)
            say "INFO speed $dev ${mode:-tree}: $line"
        done
    done
fi

# 6. the GPU benchmark (bench/bench_cuda.c): Llama-3-8B shape, random weights, BF16, Q4_1 and Q4_K
if [ -x "$build/bench/bench_cuda" ]; then
    if timeout 300 "$build/bench/bench_cuda" ${GPU_BENCH_ARGS:-} >>"$report" 2>&1; then
        result "bench_cuda" PASS "figures above"
    else
        result "bench_cuda" FAIL "status $?"
    fi
    # where a step's time goes: every operation timed by events (eager), Q4_1, the table at the end
    if LANTERN_CUDA_OP_TIMES=1 timeout 120 "$build/bench/bench_cuda" --types q4_1 --steps 10 \
        >>"$report" 2>&1; then
        result "bench_cuda, operation times" PASS "table above"
    else
        result "bench_cuda, operation times" FAIL "status $?"
    fi
else
    result "bench_cuda" SKIP "$build/bench/bench_cuda not built"
fi

say "== $fails failure(s); report in $report"
[ "$fails" -eq 0 ]
