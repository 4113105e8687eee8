#!/usr/bin/env python3
"""bench_tokenizer.py — encode throughput of lantern's tokenizer against Hugging Face `tokenizers`,
measured in the same run on the same texts, one thread each.

Texts:
  corpus       the tokenizer test corpus (tests/fixtures/tokenizers/corpus.jsonl) joined with
               newlines into one string: every script, emoji, code, whitespace runs,
               special-token text
  corpus/doc   the same 2355 strings, one encode call each (as a server tokenizes requests)
  english      English prose: the docstrings of this Python's standard library (read with `ast`,
               no imports), about 3 MB, one string

Tokenizers: the default model's (SmolLM2, byte-level BPE with 49152 tokens; lantern reads the GGUF,
HF gets the same vocabulary and pipeline built by tools/gen_tokenizer_fixtures.py) and the two
trained test tokenizers (tests/fixtures/tokenizers/llama3 and spm, as tokenizer.json for both).

Each side encodes each text --reps times (default 5), add_special_tokens=False; the table shows
the median. HF keeps its word cache between repetitions (as a long-lived server
would); lantern has none. HF's encode also computes offsets, which lantern does not. The ids of
both sides are compared: the benchmark fails if they differ.

Usage: .venv/bin/python bench/bench_tokenizer.py [--build build-tok] [--reps 5] [--json PATH]
"""

import argparse
import ast
import glob
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def english_text(limit=3_000_000):
    parts = []
    total = 0
    stdlib = os.path.dirname(os.__file__)
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        if "site-packages" in path:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    parts.append(doc)
                    total += len(doc) + 2
        if total >= limit:
            break
    return "\n\n".join(parts)


def corpus_strings():
    with open(os.path.join(ROOT, "tests/fixtures/tokenizers/corpus.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def load_fixture_module():
    spec = importlib.util.spec_from_file_location(
        "gen_tokenizer_fixtures", os.path.join(ROOT, "tools/gen_tokenizer_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build-tok"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--model", help="default model GGUF (default: tools/fetch_model.sh)")
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args()

    from tokenizers import Tokenizer

    driver = os.path.join(a.build, "bench", "bench_tokenizer")
    if not os.path.exists(driver):
        sys.exit(f"{driver} not found: cmake --build {a.build} --target bench_tokenizer")
    model = a.model or subprocess.run([os.path.join(ROOT, "tools/fetch_model.sh")],
                                      capture_output=True, text=True, check=True).stdout.strip()
    fx = os.path.join(ROOT, "tests/fixtures/tokenizers")
    tokenizers = [("smollm2", model, load_fixture_module().build_smollm2(model))]
    for name in ("llama3", "spm"):
        d = os.path.join(fx, name)
        tokenizers.append((name, d, Tokenizer.from_file(os.path.join(d, "tokenizer.json"))))
    docs = corpus_strings()
    assert not any("\x00" in d for d in docs)
    texts = [("corpus", ["\n".join(docs)]), ("corpus/doc", docs), ("english", [english_text()])]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tname, text in texts:
            path = os.path.join(tmp, "text.txt")
            data = "\x00".join(text).encode("utf-8")
            with open(path, "wb") as f:
                f.write(data)
            for name, lt_path, hf in tokenizers:
                ids_path = os.path.join(tmp, "ids.txt")
                out = subprocess.run([driver, lt_path, path, str(a.reps), ids_path, "00"],
                                     capture_output=True, text=True, check=True).stdout
                lt = json.loads(out)
                with open(ids_path) as f:
                    lt_ids = [int(x) for x in f]
                times = []
                for _ in range(a.reps):
                    t0 = time.perf_counter()
                    hf_ids = []
                    for doc in text:
                        hf_ids += hf.encode(doc, add_special_tokens=False).ids
                    times.append(time.perf_counter() - t0)
                hf_s = statistics.median(times)
                same = hf_ids == lt_ids
                mb = lt["bytes"] / 1e6
                rows.append({
                    "tokenizer": name, "text": tname, "mb": mb, "tokens": len(hf_ids),
                    "lantern_mbs": mb / lt["median_s"], "hf_mbs": mb / hf_s,
                    "ratio": hf_s / lt["median_s"], "ids_equal": same,
                })
                print(f"{name:8s} {tname:10s} lantern {lt['median_s']:.4f} s  hf {hf_s:.4f} s  "
                      f"ids {'equal' if same else 'DIFFER'}", file=sys.stderr)

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    import tokenizers as tk
    print(f"\nTokenizer encode throughput, one thread, median of {a.reps} "
          f"(commit {commit}, tokenizers {tk.__version__}, {machine()})\n")
    print("| tokenizer | text | MB | tokens | lantern MB/s | HF tokenizers MB/s | lantern / HF |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tokenizer']} | {r['text']} | {r['mb']:.2f} | {r['tokens']} | "
              f"{r['lantern_mbs']:.1f} | {r['hf_mbs']:.1f} | {r['ratio']:.2f}x |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"commit": commit, "machine": machine(), "rows": rows}, f, indent=2)
    if not all(r["ids_equal"] for r in rows):
        sys.exit("ids differ between lantern and HF tokenizers")


if __name__ == "__main__":
    main()
