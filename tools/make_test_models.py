#!/usr/bin/env python3
"""Makes every random-weight test model of tools/random_models.json under OUTDIR/<name>.

Used by ctest (fixture `random_models`) so the models exist before the forward tests run.
Deterministic: the same arguments give byte-identical files.
    python tools/make_test_models.py OUTDIR
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_test_models.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(ROOT, "tools", "random_models.json")) as f:
        models = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    for name, args in models.items():
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_model.py"),
                        "--out", os.path.join(outdir, name), *args], check=True)
        print(f"made {name}")


if __name__ == "__main__":
    main()
