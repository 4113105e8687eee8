#!/usr/bin/env python3
"""Checks tools/make_random_model.py against Hugging Face transformers (a dev script, not run in CI;
needs torch and transformers: tools/setup.sh --reference).

For each architecture and a spread of shapes and dtypes it:
  - loads the HF directory with AutoModelForCausalLM (float32) and fails on any missing,
    unexpected or mismatched weight or any loading warning;
  - runs a forward pass and requires finite logits with a clear greedy winner at every position
    (top-1/top-2 margin), the property reference comparisons rely on;
  - where transformers can load the GGUF twin (same seed and shape), loads it with gguf_file= and
    requires its logits to equal the HF ones (allclose 1e-4); for llama this proves the q/k row
    permutation;
  - regenerates every file and requires identical bytes (determinism);
  - if the tokenizer is loadable from the GGUF, encodes and decodes a string.

    .venv/bin/python tools/check_random_model.py
"""
import hashlib
import logging
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKE = os.path.join(ROOT, "tools", "make_random_model.py")
PROMPT = [1, 17, 300, 42, 42, 42, 7, 250, 0, 99, 256, 128, 64, 32, 16, 8, 3, 5, 200, 201]

CASES = [
    # name, args, compare the GGUF twin through transformers
    ("llama-gqa-f32", ["--arch", "llama", "--layers", "2", "--dim", "128", "--heads", "8",
                       "--kv-heads", "4", "--hidden", "256", "--vocab", "512"], True),
    ("llama-headdim-tied", ["--arch", "llama", "--layers", "2", "--dim", "96", "--heads", "4",
                            "--kv-heads", "2", "--head-dim", "32", "--hidden", "160",
                            "--vocab", "300", "--tie", "--rope-theta", "500000"], True),
    ("llama-f16", ["--arch", "llama", "--layers", "2", "--dim", "64", "--heads", "4",
                   "--kv-heads", "1", "--hidden", "128", "--vocab", "400", "--dtype", "f16"], True),
    ("llama-bf16-sharded", ["--arch", "llama", "--layers", "3", "--dim", "64", "--heads", "4",
                            "--hidden", "128", "--vocab", "300", "--dtype", "bf16",
                            "--shards", "3"], True),
    ("llama-llama3-rope", ["--arch", "llama", "--layers", "2", "--dim", "128", "--heads", "8",
                           "--kv-heads", "4", "--hidden", "256", "--vocab", "512",
                           "--max-pos", "512", "--rope-theta", "500000",
                           "--rope-scaling", "llama3:8", "--dtype", "f16"], False),
    ("llama-linear-rope", ["--arch", "llama", "--layers", "1", "--dim", "64", "--heads", "4",
                           "--hidden", "128", "--vocab", "300", "--rope-scaling", "linear:4"],
     False),
    ("qwen2", ["--arch", "qwen2", "--layers", "2", "--dim", "128", "--heads", "8",
               "--kv-heads", "4", "--hidden", "256", "--vocab", "512", "--max-pos", "512"], True),
    ("qwen3-headdim-sharded", ["--arch", "qwen3", "--layers", "2", "--dim", "128", "--heads", "8",
                               "--kv-heads", "4", "--head-dim", "32", "--hidden", "256",
                               "--vocab", "512", "--rope-theta", "1000000", "--tie",
                               "--dtype", "bf16", "--shards", "2"], False),
    # transformers' GGUF loader cannot pass head_dim for qwen3 (Qwen3Config defaults it to 128),
    # so the GGUF twin is compared on a shape whose head_dim is 128.
    ("qwen3-hd128", ["--arch", "qwen3", "--layers", "2", "--dim", "256", "--heads", "2",
                     "--kv-heads", "1", "--hidden", "256", "--vocab", "300", "--eps", "1e-6"],
     True),
]
MIN_MARGIN = 1e-3  # 100x the float error of an fp32 forward pass at these logit sizes


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


def make(out, args, fmt, seed="5"):
    if fmt == "gguf" and "--shards" in args:  # GGUF twins are single files
        i = args.index("--shards")
        args = args[:i] + args[i + 2:]
    subprocess.run([sys.executable, MAKE, "--format", fmt, "--out", out, "--seed", seed, *args],
                   check=True)


def digest(path):
    h = hashlib.sha256()
    paths = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, f) for f in os.listdir(path))
    for p in paths:
        if p != path:
            h.update(os.path.basename(p).encode())
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def load(path, gguf_file=None):
    col = Collect()
    tl = transformers.logging.get_logger("transformers")
    tl.addHandler(col)
    try:
        kw = {"gguf_file": gguf_file} if gguf_file else {}
        model, info = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, output_loading_info=True, **kw)
    finally:
        tl.removeHandler(col)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"{path}: loading info {bad}")
    warnings = [r for r in col.records if "weight" in r.lower() or "initialized" in r.lower()]
    if warnings:
        raise SystemExit(f"{path}: loading warnings: {warnings}")
    model.eval()
    return model


@torch.no_grad()
def logits_of(model):
    return model(torch.tensor([prompt_for(model)])).logits[0].float().numpy()


def prompt_for(model):
    return [t % model.config.vocab_size for t in PROMPT]


def margins(logits):
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


@torch.no_grad()
def greedy_margins(model, steps=32):
    ids = prompt_for(model)
    n = len(ids)
    out = []
    for _ in range(steps):
        row = model(torch.tensor([ids])).logits[0, -1].float().numpy()
        top = np.sort(row)[-2:]
        out.append(float(top[1] - top[0]))
        ids.append(int(row.argmax()))
    return np.array(out), ids[n:]


def main():
    torch.manual_seed(0)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, args, twin in CASES:
            hf = os.path.join(tmp, name)
            make(hf, args, "hf")
            again = os.path.join(tmp, name + "-again")
            make(again, args, "hf")
            if digest(hf) != digest(again):
                raise SystemExit(f"{name}: hf output is not deterministic")
            model = load(hf)
            lg = logits_of(model)
            if not np.isfinite(lg).all():
                raise SystemExit(f"{name}: non-finite logits")
            m = margins(lg)
            gm, gen = greedy_margins(model)
            line = (f"{name:24s} logits std {lg.std():6.2f}  prompt margin min {m.min():.4f}  "
                    f"greedy margin min {gm.min():.4f}  distinct greedy {len(set(gen))}")
            ok = m.min() > MIN_MARGIN and gm.min() > MIN_MARGIN

            gg = os.path.join(tmp, name + ".gguf")
            make(gg, args, "gguf")
            gg2 = os.path.join(tmp, name + "-again.gguf")
            make(gg2, args, "gguf")
            if digest(gg) != digest(gg2):
                raise SystemExit(f"{name}: gguf output is not deterministic")
            if twin:
                gmodel = load(tmp, gguf_file=os.path.basename(gg))
                glg = logits_of(gmodel)
                diff = float(np.abs(glg - lg).max())
                same = np.allclose(glg, lg, atol=1e-4, rtol=1e-4)
                line += f"  gguf max|diff| {diff:.2e} {'ok' if same else 'MISMATCH'}"
                ok = ok and same
                if name == "llama-gqa-f32":
                    tok = AutoTokenizer.from_pretrained(tmp, gguf_file=os.path.basename(gg))
                    enc = tok("the cat", add_special_tokens=False)["input_ids"]
                    dec = tok.decode(enc)
                    line += f"  tokenizer {enc} -> {dec!r}"
                    ok = ok and dec == "the cat"
            print(("PASS " if ok else "FAIL ") + line, flush=True)
            failures += not ok
    print(f"{len(CASES) - failures}/{len(CASES)} cases passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
