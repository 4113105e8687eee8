#!/usr/bin/env python3
"""bench_generate.py — lantern's CPU prefill and decode throughput against llama.cpp's.

Both engines run the same GGUF, the same 512-token prompt and the same thread count, in the
same run, alternating (lantern, llama.cpp, lantern, ...) so that noise from other jobs on the
machine hits both sides. Prints a table: metric | lantern | llama.cpp | ratio, plus the
machine, the commit and the peer's version (see bench/README.md for how to read it).

    tools/setup.sh --bench && .venv/bin/python bench/bench_generate.py [--threads T] [--reps R]

lantern is run as a subprocess (`build/lantern generate ... --ignore-eos`) and its own
prefill/decode timers are parsed from stderr; model loading is outside both timers. llama.cpp
runs in this process through llama-cpp-python, loaded once; its timers wrap `Llama.eval`.
"""
import argparse
import atexit
import datetime
import hashlib
import json
import os
import platform
import re
import statistics
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- the prompt ----

# Plain English prose (written for this benchmark) tokenized by the model's own tokenizer, so
# the prompt looks like a real one. It is repeated if the tokenizer yields fewer ids than asked.
PROMPT_TEXT = """\
The old lighthouse stood at the end of a narrow spit of rock, and for nearly a century it had
guided fishing boats home through fog and winter storms. When the keeper retired, the town
council argued for months about what to do with it. Some wanted to sell it to a developer who
promised a small hotel with a restaurant on the ground floor; others wanted to turn it into a
museum about the coast, the shipwrecks and the families who had lived from the sea. In the end
a group of teachers proposed something simpler: the lighthouse would become a place where
children from the school could learn how things work. They would study the great lens, which
bent the light of a single lamp into a beam that could be seen twenty miles away, and the
clockwork that had turned it before electricity reached the point. They would measure the tides,
record the weather every morning, and keep a logbook just as the keepers had done.

The first winter was harder than anyone expected. The heating failed twice, the road flooded in
February, and a storm tore part of the roof from the workshop. Yet the children kept coming.
They learned to read a barometer and to predict the weather from the shape of the clouds. They
discovered that the lens was made of dozens of glass prisms, each ground to a slightly different
angle, and that a French engineer had worked out the design two hundred years ago by careful
calculation rather than trial and error. One girl built a small model of the lens from plastic
and a torch, and showed the whole class how the light folded into a single bright line.

By spring the project had become the pride of the town. Visitors came from the city to see the
logbooks, which were full of neat tables of numbers, drawings of birds and boats, and long
notes about the sea. A retired engineer offered to repair the clockwork, and after weeks of
patient work the great lens turned again, slowly, with a soft ticking sound that filled the
tower. The council, which had once argued so bitterly, voted without a single objection to keep
the lighthouse open for the school. The teachers wrote a short report explaining what they had
learned: that children understand a machine best when they can touch it, take it apart and put
it together again; that patience matters more than cleverness; and that a building which had
kept sailors safe for a hundred years could, with a little care, keep teaching for a hundred
more. Today the logbook is on its fortieth volume, and every page begins with the same words
the first keeper wrote: wind, sea, sky, and the light is burning.
"""


def make_prompt(llm, n):
    ids = list(llm.tokenize(PROMPT_TEXT.encode("utf-8"), add_bos=False, special=False))
    if not ids:
        sys.exit("bench_generate: the tokenizer returned no tokens")
    out = []
    while len(out) < n:
        out.extend(ids)
    return out[:n]


# ---- the machine ----


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_isa():
    """The vector extensions that decide which kernels either engine can use."""
    want = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
            "avx512_bf16", "amx_int8"]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in want if w in have]
    except OSError:
        pass
    return []


def n_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def git_commit():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        # Edits to the benchmarks and docs don't change what is measured.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!bench", ":!*.md"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def default_model():
    try:
        out = subprocess.run([os.path.join(ROOT, "tools", "fetch_model.sh")],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"bench_generate: tools/fetch_model.sh failed ({e}); pass --model")
    return out.strip().splitlines()[-1]


# ---- lantern ----

PREFILL_RE = re.compile(r"^prefill: (\d+) tokens in ([0-9.]+) s \(([0-9.]+) tok/s\)", re.M)
DECODE_RE = re.compile(r"^decode: (\d+) tokens in ([0-9.]+) s \(([0-9.]+) tok/s\)", re.M)


def prepare(tool, lantern_path, model_arg):
    """Checks the peer and the binary, snapshots the binary (others may rebuild build/ while a
    benchmark runs) and resolves the model. Returns (llama_cpp module, binary path, its sha256
    prefix, its mtime, model path); exits with a clear message when something is missing."""
    try:
        import llama_cpp
        import numpy  # noqa: F401  (llama-cpp-python depends on it)
    except ImportError:
        sys.exit(f"{tool}: the peer, llama-cpp-python, is not installed in this Python "
                 f"({sys.executable}): run tools/setup.sh --bench, then "
                 f".venv/bin/python bench/{tool}.py")
    if not os.access(lantern_path, os.X_OK):
        sys.exit(f"{tool}: {lantern_path} not found: build lantern first "
                 "(cmake --preset default && cmake --build --preset default)")
    snapdir = tempfile.mkdtemp(prefix=f"{tool}.")
    atexit.register(shutil.rmtree, snapdir, True)
    binary = os.path.join(snapdir, "lantern")
    shutil.copy2(lantern_path, binary)
    with open(binary, "rb") as f:
        bin_sha = hashlib.sha256(f.read()).hexdigest()[:12]
    bin_mtime = datetime.datetime.fromtimestamp(os.path.getmtime(binary)).astimezone()
    model = model_arg or default_model()
    if not os.path.isfile(model):
        sys.exit(f"{tool}: model {model} not found")
    return llama_cpp, binary, bin_sha, bin_mtime, model


def run_lantern(binary, model, prompt, n_decode, threads):
    """One `lantern generate` run; returns (prefill tok/s, decode tok/s, generated ids)."""
    cmd = [binary, "generate", "--model", model, "--prompt-ids", ",".join(map(str, prompt)),
           "--max-tokens", str(n_decode + 1), "--ignore-eos", "--threads", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_generate: lantern failed (exit {p.returncode}):\n{p.stderr}")
    pm, dm = PREFILL_RE.search(p.stderr), DECODE_RE.search(p.stderr)
    if not pm or not dm:
        sys.exit(f"bench_generate: could not parse lantern's timings from:\n{p.stderr}")
    if int(pm.group(1)) != len(prompt) or int(dm.group(1)) != n_decode:
        sys.exit(f"bench_generate: lantern ran {pm.group(1)}+{dm.group(1)} tokens, "
                 f"expected {len(prompt)}+{n_decode}:\n{p.stderr}")
    # lantern prints tok/s with one decimal; recompute from tokens and seconds for precision.
    pre = int(pm.group(1)) / float(pm.group(2))
    dec = int(dm.group(1)) / float(dm.group(2))
    ids = [int(x) for x in p.stdout.strip().split(",") if x]
    return pre, dec, ids


# ---- llama.cpp ----


def run_llama(llm, prompt, n_decode):
    """Prefill the prompt in one batch, then n_decode greedy single-token steps; returns
    (prefill tok/s, decode tok/s, generated ids). The first generated id comes from the
    prefill's logits, as in lantern, and its argmax is inside the decode timer, as in lantern."""
    import llama_cpp
    import numpy as np

    # Llama.eval keeps no logits unless logits_all=True (which would compute all 512 rows of
    # the prefill), so the last row is read straight from the context, as a sampler would.
    n_vocab = llm.n_vocab()

    def next_id():
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(row, shape=(n_vocab,))))

    llm.reset()  # n_tokens = 0; eval() then drops the KV cache from position 0 on
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    ids = [next_id()]
    for _ in range(n_decode):
        llm.eval([ids[-1]])
        ids.append(next_id())
    t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), n_decode / (t2 - t1), ids


# ---- main ----


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF file (default: tools/fetch_model.sh's default model)")
    ap.add_argument("--threads", type=int, default=n_cores(),
                    help="threads for both engines (default: all cores, %(default)s here)")
    ap.add_argument("--reps", type=int, default=3, help="measured runs per side (default 3)")
    ap.add_argument("--prompt-tokens", type=int, default=512, help="prompt length (default 512)")
    ap.add_argument("--decode-tokens", type=int, default=128,
                    help="greedy decode steps after the prefill (default 128)")
    ap.add_argument("--lantern", default=os.path.join(ROOT, "build", "lantern"),
                    help="lantern binary (default build/lantern)")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    args = ap.parse_args()
    if args.threads < 1 or args.reps < 1 or args.prompt_tokens < 1 or args.decode_tokens < 1:
        ap.error("--threads, --reps, --prompt-tokens and --decode-tokens must be >= 1")

    llama_cpp, binary, bin_sha, bin_mtime, model = prepare("bench_generate", args.lantern,
                                                           args.model)

    n_ctx = 1024
    while n_ctx < args.prompt_tokens + args.decode_tokens + 1:
        n_ctx *= 2
    n_batch = max(512, args.prompt_tokens)  # the whole prompt in one batch, as lantern does
    llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                          n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    prompt = make_prompt(llm, args.prompt_tokens)

    machine = {"cpu": cpu_model(), "cores": n_cores(), "threads": args.threads,
               "isa": cpu_isa(), "kernel": platform.release()}
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": git_commit(), "llama_cpp_python": llama_cpp.__version__,
            "lantern_binary": {"path": args.lantern, "sha256_12": bin_sha,
                               "built": bin_mtime.isoformat(timespec="seconds")},
            "model": model, "prompt_tokens": args.prompt_tokens,
            "decode_tokens": args.decode_tokens, "reps": args.reps, "machine": machine}

    print(f"bench_generate: {os.path.basename(model)}, prompt {args.prompt_tokens} tokens, "
          f"decode {args.decode_tokens} tokens, {args.threads} threads, {args.reps} reps "
          "(+1 warm-up each)", file=sys.stderr, flush=True)
    runs = {"lantern": {"prefill": [], "decode": []}, "llama.cpp": {"prefill": [], "decode": []}}
    lt_ids = lc_ids = None
    for rep in range(args.reps + 1):
        tag = "warm-up" if rep == 0 else f"rep {rep}/{args.reps}"
        lp, ld, lt_ids = run_lantern(binary, model, prompt, args.decode_tokens,
                                     args.threads)
        cp, cd, lc_ids = run_llama(llm, prompt, args.decode_tokens)
        print(f"  {tag:>9}: lantern prefill {lp:8.1f} decode {ld:7.1f} | "
              f"llama.cpp prefill {cp:8.1f} decode {cd:7.1f}  tok/s", file=sys.stderr,
              flush=True)
        if rep > 0:
            runs["lantern"]["prefill"].append(lp)
            runs["lantern"]["decode"].append(ld)
            runs["llama.cpp"]["prefill"].append(cp)
            runs["llama.cpp"]["decode"].append(cd)

    # Both decode greedily from the same prompt; on a quantized model they may part ways after a
    # while (fp32-dequantized weights vs quantized dot products), but not at the first tokens.
    agree = 0
    for a, b in zip(lt_ids, lc_ids):
        if a != b:
            break
        agree += 1

    med = {side: {k: statistics.median(v) for k, v in r.items()} for side, r in runs.items()}
    rows = [("prefill tok/s", "prefill"), ("decode tok/s", "decode")]
    print()
    print(f"| metric ({args.prompt_tokens}-token prompt, median of {args.reps}) "
          "| lantern | llama.cpp | ratio (lantern/llama.cpp) |")
    print("|---|---:|---:|---:|")
    ratios = {}
    for label, k in rows:
        a, b = med["lantern"][k], med["llama.cpp"][k]
        ratios[k] = a / b
        print(f"| {label} | {a:.1f} | {b:.1f} | {ratios[k]:.3f} |")
    print()
    print(f"machine: {machine['cpu']} ({' '.join(machine['isa']) or 'no AVX2'}), "
          f"{machine['cores']} cores, {args.threads} threads used; Linux {machine['kernel']}")
    print(f"commit: {info['commit']}; llama-cpp-python {info['llama_cpp_python']}; "
          f"model {os.path.basename(model)}")
    print(f"lantern binary: {args.lantern} built {info['lantern_binary']['built']} "
          f"(sha256 {bin_sha}...)")
    print(f"greedy ids identical for the first {agree} of {len(lt_ids)} generated tokens")

    if args.json:
        out = dict(info, runs=runs, median=med, ratio=ratios, greedy_agree=agree,
                   greedy_total=len(lt_ids), lantern_ids=lt_ids, llama_cpp_ids=lc_ids,
                   prompt_ids=prompt)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
