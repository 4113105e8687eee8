#!/usr/bin/env python3
"""Checks the code's shape: no source file over --max-file lines, no function over --max-func
lines (tables of data excepted: a top-level initialiser is not a function), and the include
arrows between modules (DESIGN.md §6): common/ includes nothing of the other modules, the
frontend includes no engine or worker header, the engine and worker no frontend header.

Exit status 0 when everything holds, 1 with one line per violation otherwise."""
import argparse
import os
import re
import subprocess
import sys

SRC_EXT = (".c", ".h", ".cu", ".cuh")


def strip(text):
    """Blanks out comments, strings and character literals, keeping line breaks."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + re.sub(r"[^\n]", " ", text[i + 1:j]) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(path):
    """(name, first line, line count) of every function definition in a C file."""
    text = strip(open(path, encoding="utf-8", errors="replace").read())
    lines = text.split("\n")
    depth, start, head, result = 0, None, [], []
    for no, line in enumerate(lines, 1):
        if depth == 0:
            stripped = line.strip()
            if stripped.startswith("#"):
                head = []
                continue
            if stripped:
                head.append((no, line))
        for ch in line:
            if ch == "{":
                if depth == 0:
                    sig = " ".join(l for _, l in head)
                    # a function: `name(args) {` with no `=` before the brace (not a table)
                    m = re.search(r"([A-Za-z_]\w*)\s*\([^;]*\)\s*(__attribute__\(\(.*\)\))?\s*\{$",
                                  sig.strip())
                    is_func = m and "=" not in sig.split("(")[0]
                    start = (m.group(1), head[0][0] if head else no) if is_func else None
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    if start:
                        result.append((start[0], start[1], no - start[1] + 1))
                    start, head = None, []
        if depth == 0 and line.rstrip().endswith(";"):
            head = []
    return result


INCLUDE_RULES = [
    # (module prefix, headers it must not include, why)
    ("common/", ("kernels.h", "worker.h", "engine.h", "lantern.h", "ipc.h", "msg.h"),
     "common/ is below every module"),
    ("frontend/", ("worker.h", "engine.h", "sampler.h", "safetensors.h", "kernels.h"),
     "the frontend talks to the engine only through liblantern and ipc/"),
    ("engine/", ("worker.h", "lantern.h", "tokenizer.h", "kernels.h"),
     "the engine never touches worker internals or text"),
    ("worker/", ("engine.h", "lantern.h", "tokenizer.h"),
     "the worker never touches engine or frontend internals"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-file", type=int, default=1500)
    ap.add_argument("--max-func", type=int, default=150)
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    args = ap.parse_args()
    os.chdir(args.root)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in files if f.endswith(SRC_EXT) and os.path.exists(f)]
    bad = []
    for f in files:
        if f.startswith("tests/"):
            continue
        text = open(f, encoding="utf-8", errors="replace").read()
        n = text.count("\n")
        if n > args.max_file:
            bad.append(f"{f}: {n} lines (limit {args.max_file})")
        if f.endswith((".c", ".cu")):
            for name, line, count in functions(f):
                if count > args.max_func:
                    bad.append(f"{f}:{line}: {name} is {count} lines (limit {args.max_func})")
        for prefix, banned, why in INCLUDE_RULES:
            if not f.startswith(prefix):
                continue
            for m in re.finditer(r'^#include\s+"([^"]+)"', text, re.M):
                if os.path.basename(m.group(1)) in banned:
                    bad.append(f"{f}: includes {m.group(1)} ({why})")
    for b in bad:
        print(b)
    print(f"check_layout: {len(files)} files, {len(bad)} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
