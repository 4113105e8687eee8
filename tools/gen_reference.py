#!/usr/bin/env python3
"""Writes the reference fixtures the forward-pass tests compare against.

For the default model (SmolLM2-135M-Instruct Q4_1 GGUF, loaded by Hugging Face transformers from
the same file, dequantized to fp32) and for the random-weight models of tools/random_models.json
(Hugging Face directories made by tools/make_random_model.py), it records for a few prompts given
as token ids:
  - at every prompt position, the top-20 logits (ids and values) and the min/max of all logits;
  - a 32-token greedy continuation (argmax at every step, EOS not special), with the top-1/top-2
    margin at each step so a test can tell a real disagreement from a float near-tie.

Needs the reference packages: tools/setup.sh --reference. Run from the repository root:
    .venv/bin/python tools/gen_reference.py [--only NAME]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TOP = 20
GREEDY = 32

DEFAULT_TEXTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhat is 17 times 23?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old "
    "clockmaker who had never once left the valley. Every morning he",
]
RANDOM_PROMPTS = [
    [1, 2, 3, 4, 5],
    [17, 300, 42, 42, 42, 7, 511, 0, 99, 256, 128, 64, 32, 16, 8],
    [5],
    list(range(100, 160)),
]


def default_model_path():
    out = subprocess.run([os.path.join(ROOT, "tools", "fetch_model.sh")], check=True,
                         capture_output=True, text=True).stdout.strip()
    return out


@torch.no_grad()
def reference(model, prompts):
    cases = []
    for ids in prompts:
        x = torch.tensor([ids])
        out = model(x, use_cache=True)
        logits = out.logits[0].float()
        positions = []
        for row in logits:
            v, i = torch.topk(row, TOP)
            positions.append({"ids": i.tolist(), "logits": [float(f) for f in v],
                              "min": float(row.min()), "max": float(row.max())})
        past = out.past_key_values
        last = logits[-1]
        greedy, margins = [], []
        for _ in range(GREEDY):
            v, i = torch.topk(last, 2)
            nxt = int(i[0])
            greedy.append(nxt)
            margins.append(float(v[0] - v[1]))
            out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            last = out.logits[0, -1].float()
        cases.append({"prompt_ids": ids, "positions": positions, "greedy": greedy,
                      "greedy_margin": margins})
    return cases


def write(name, meta, cases):
    path = os.path.join(FIXTURES, f"reference_{name}.json")
    with open(path, "w") as f:
        json.dump({**meta, "top": TOP, "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def gen_default():
    path = default_model_path()
    d, fname = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=fname, dtype=torch.float32)
    model.eval()
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in DEFAULT_TEXTS]
    meta = {"model": "default", "file": fname, "texts": DEFAULT_TEXTS,
            "generator": f"transformers {__import__('transformers').__version__}, "
                         f"torch {torch.__version__}, fp32"}
    cases = reference(model, prompts)
    # transformers' own greedy generation and text, for the text-in/text-out tests. The prompt ids
    # are tokenized without special tokens: this GGUF says tokenizer.ggml.add_bos_token = false
    # (llama.cpp and lantern add none), while transformers' GGUF tokenizer adds a BOS regardless.
    for case, ids in zip(cases, prompts):
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=16)
        new = out[0, len(ids):].tolist()
        case["generate_16"] = new
        case["generate_16_text"] = tok.decode(new, skip_special_tokens=True)
        case["greedy_text"] = tok.decode(case["greedy"], skip_special_tokens=False)
    write("default", meta, cases)


def gen_random(name, args):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, name)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_model.py"),
                        "--out", out, *args], check=True)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        model.eval()
        meta = {"model": name, "args": args,
                "generator": f"transformers {__import__('transformers').__version__}, "
                             f"torch {torch.__version__}, fp32"}
        write(name, meta, reference(model, RANDOM_PROMPTS))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="one fixture name: default or a key of random_models.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    with open(os.path.join(ROOT, "tools", "random_models.json")) as f:
        models = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    if a.only in (None, "default"):
        gen_default()
    for name, args in models.items():
        if "--format" in args and args[args.index("--format") + 1] == "gguf":
            continue  # the GGUF twin is checked against its HF twin's reference
        if a.only in (None, name):
            gen_random(name, args)


if __name__ == "__main__":
    main()
