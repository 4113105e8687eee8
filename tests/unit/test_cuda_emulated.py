#!/usr/bin/env python3
"""`lantern generate --device cuda` through the whole process tree on the CPU emulator of CUDA
(tests/cuemu: LANTERN_CUDA_MODULE names liblantern_cuda_emu.so, CUEMU_DEVICES how many devices it
shows, CUEMU_DEVICE_MIB its memory): the device errors are clear, exit status 1, no crash (no
device, fewer devices than ranks, a model that does not fit), on the K-quant random model; then,
unless $LANTERN_MODEL leaves the default model out (the sanitizer run), the default model split
over 3 workers (--tensor-parallel-size 3: NCCL's unique id over the tree's shared-memory
all-reduce, then the emulated NCCL) with its KV cache sized by --gpu-memory-utilization after a
profiling step gives the CPU backend's greedy ids. Skipped (77) where the emulator is not built.
"""
import os
import subprocess

import ltcheck
from ltcheck import check, default_model

BIN = os.environ["LANTERN_BIN"]
EMU = os.path.join(os.environ.get("LANTERN_BUILD_DIR", ""), "liblantern_cuda_emu.so")
PROMPT = "1,504,3458,282,4649,314"


def generate(*args, devices=None, mib=None):
    env = dict(os.environ, LANTERN_CUDA_MODULE=EMU)
    if devices is not None:
        env["CUEMU_DEVICES"] = str(devices)
    if mib is not None:
        env["CUEMU_DEVICE_MIB"] = str(mib)
    return subprocess.run([BIN, "generate", *args], capture_output=True, text=True, timeout=600,
                          env=env)


def main():
    if not os.path.exists(EMU):
        print(f"{EMU} absent (no C++ compiler, or LANTERN_CUEMU=OFF): skipped")
        return ltcheck.summary(skipped=True)
    tiny = os.path.join(os.environ["LANTERN_MODELS_DIR"], "llama-kquant-gguf", "model.gguf")
    for label, kw, args, want in [
            ("no device", {"devices": 0}, [], "no CUDA device visible"),
            ("fewer devices than ranks", {"devices": 1}, ["--tensor-parallel-size", "2"],
             "device 1 asked for, 1 visible"),
            ("a model that does not fit", {"devices": 1, "mib": 1}, [], "out of memory")]:
        r = generate("--model", tiny, "--prompt-ids", "1,2,3", "--device", "cuda", *args, **kw)
        check(f"{label}: a clear error, status 1", r.returncode == 1 and want in r.stderr
              and "Traceback" not in r.stderr and "Sanitizer" not in r.stderr,
              f"status {r.returncode}, stderr {r.stderr[-400:]!r}")

    model = default_model()
    if not model:
        print("default model left out: skipping the tensor-parallel run")
        return ltcheck.summary()
    base = ["--model", model, "--prompt-ids", PROMPT, "--max-tokens", "8", "--ignore-eos"]
    cpu = generate(*base, "--device", "cpu")
    check("CPU run", cpu.returncode == 0, cpu.stderr[-300:])
    # 3 ranks: 9 heads / 3 KV heads; a small batch keeps the emulated profiling step short
    tp = generate(*base, "--device", "cuda", "--tensor-parallel-size", "3",
                  "--gpu-memory-utilization", "0.5", "--max-num-batched-tokens", "64",
                  "--max-model-len", "256", devices=3)
    check("--device cuda --tensor-parallel-size 3 --gpu-memory-utilization 0.5: the CPU's ids",
          tp.returncode == 0 and tp.stdout.strip() == cpu.stdout.strip() != "",
          f"status {tp.returncode}, got {tp.stdout.strip()!r}, want {cpu.stdout.strip()!r}, "
          f"stderr {tp.stderr[-600:]}")
    check("the KV cache sized by the profiling step",
          "--gpu-memory-utilization 0.50:" in tp.stderr, tp.stderr[-600:])
    return ltcheck.summary()


if __name__ == "__main__":
    raise SystemExit(main())
