#!/usr/bin/env python3
"""bench_generate.py — lantern's single-stream CPU prefill and decode against llama.cpp's.

Both engines run the same GGUF with the same thread count, in the same run, alternating
(lantern, llama.cpp, lantern, ...) so that noise from other jobs on the machine hits both
sides; each figure is the median over --reps runs (after one warm-up run of each). Prints a
table: metric | lantern | llama.cpp | ratio, plus the machine, the commit and the peer's build
(see bench/README.md for how to read it).

    tools/setup.sh --bench && .venv/bin/python bench/bench_generate.py [--threads T] [--reps R]

The peer is llama.cpp's own `llama-bench` (built by bench/build_llama_cpp.sh):
`llama-bench -m GGUF -t T -p 512 -n 128 -d 0,512 -r 1 -o json`, read from its JSON: prefill =
pp512 at depth 0, decode@0 = tg128 at depth 0, decode@512 = tg128 after 512 tokens in the
cache. lantern: `build/lantern generate --in-process --prompt-ids IDS --max-tokens 129
--ignore-eos --threads T` (the first generated id comes from the prefill, so 129 gives 128
decode steps), its own prefill/decode timers parsed from stderr: prefill and decode@512 from a
512-token prompt, decode@0 from a 4-token one. Model loading is outside every timer. The prompt
is English prose tokenized by llama-tokenize.
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


def tokenize(bindir, model, text):
    """The model's token ids for text (no BOS), from llama.cpp's llama-tokenize."""
    p = subprocess.run([os.path.join(bindir, "llama-tokenize"), "-m", model, "--stdin", "--ids",
                        "--no-bos", "--log-disable"], input=text, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_generate: llama-tokenize failed (exit {p.returncode}):\n{p.stderr}")
    m = re.search(r"\[[0-9, ]*\]", p.stdout)
    if not m:
        sys.exit(f"bench_generate: no id list in llama-tokenize's output:\n{p.stdout[:500]}")
    return json.loads(m.group(0))


def make_prompt(bindir, model, n):
    ids = tokenize(bindir, model, PROMPT_TEXT)
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


# ---- the peer's build ----


def llama_bin_dir(tool, override=None):
    """The directory of llama.cpp's programs: --llama-bin, else what bench/build_llama_cpp.sh
    prints (it reuses its cache, or builds llama.cpp once, ~10 minutes on 2 cores)."""
    if override:
        bindir = override
    else:
        script = os.path.join(ROOT, "bench", "build_llama_cpp.sh")
        p = subprocess.run([script], stdout=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.exit(f"{tool}: bench/build_llama_cpp.sh failed (exit {p.returncode}); "
                     "see its messages above")
        bindir = p.stdout.strip().splitlines()[-1]
    for prog in ("llama-bench", "llama-server", "llama-tokenize"):
        if not os.access(os.path.join(bindir, prog), os.X_OK):
            sys.exit(f"{tool}: {bindir}/{prog} not found: run bench/build_llama_cpp.sh")
    return bindir


def peer_version(bindir):
    """The llama.cpp build: the source package's version, from the cache's stamp."""
    stamp = os.path.join(os.path.dirname(bindir), "stamp")
    try:
        with open(stamp) as f:
            return f.read().split(";")[0].strip()
    except OSError:
        return "llama.cpp (unknown version)"


# ---- lantern ----

PREFILL_RE = re.compile(r"^prefill: (\d+) tokens in ([0-9.]+) s \(([0-9.]+) tok/s\)", re.M)
DECODE_RE = re.compile(r"^decode: (\d+) tokens in ([0-9.]+) s \(([0-9.]+) tok/s\)", re.M)


def prepare_lantern(tool, lantern_path, model_arg):
    """Checks the binary, snapshots it (others may rebuild build/ while a benchmark runs) and
    resolves the model. Returns (binary path, its sha256 prefix, its mtime, model path); exits
    with a clear message when something is missing."""
    if not os.access(lantern_path, os.X_OK):
        sys.exit(f"{tool}: {lantern_path} not found: build lantern first "
                 "(cmake --preset default && cmake --build --preset default)")
    snapdir = tempfile.mkdtemp(prefix=f"{tool}.")
    atexit.register(shutil.rmtree, snapdir, True)
    binary = os.path.join(snapdir, "lantern")
    shutil.copy2(lantern_path, binary)
    # the tree's engine and workers run lantern-core from the same directory when it is there
    core = os.path.join(os.path.dirname(lantern_path), "lantern-core")
    if os.access(core, os.X_OK):
        shutil.copy2(core, os.path.join(snapdir, "lantern-core"))
    with open(binary, "rb") as f:
        bin_sha = hashlib.sha256(f.read()).hexdigest()[:12]
    bin_mtime = datetime.datetime.fromtimestamp(os.path.getmtime(binary)).astimezone()
    model = model_arg or default_model()
    if not os.path.isfile(model):
        sys.exit(f"{tool}: model {model} not found")
    return binary, bin_sha, bin_mtime, model


def prepare(tool, lantern_path, model_arg):
    """prepare_lantern plus the llama-cpp-python module, for bench_offline.py (the one benchmark
    still measuring llama.cpp through its Python binding)."""
    try:
        import llama_cpp
        import numpy  # noqa: F401  (llama-cpp-python depends on it)
    except ImportError:
        sys.exit(f"{tool}: llama-cpp-python is not installed in this Python "
                 f"({sys.executable}): run tools/setup.sh --bench, then "
                 f".venv/bin/python bench/{tool}.py")
    return (llama_cpp,) + prepare_lantern(tool, lantern_path, model_arg)


def parse_lantern(stderr, n_prompt, n_decode):
    """(prefill tok/s, decode tok/s) from `lantern generate`'s stderr; ValueError when the
    timings are missing or cover other token counts than asked."""
    pm, dm = PREFILL_RE.search(stderr), DECODE_RE.search(stderr)
    if not pm or not dm:
        raise ValueError(f"could not parse lantern's timings from:\n{stderr}")
    if int(pm.group(1)) != n_prompt or int(dm.group(1)) != n_decode:
        raise ValueError(f"lantern ran {pm.group(1)}+{dm.group(1)} tokens, expected "
                         f"{n_prompt}+{n_decode}:\n{stderr}")
    # lantern prints tok/s with one decimal; recompute from tokens and seconds for precision.
    return int(pm.group(1)) / float(pm.group(2)), int(dm.group(1)) / float(dm.group(2))


def run_lantern(binary, model, prompt, n_decode, threads):
    """One `lantern generate --in-process` run; returns (prefill tok/s, decode tok/s)."""
    cmd = [binary, "generate", "--model", model, "--prompt-ids", ",".join(map(str, prompt)),
           "--in-process", "--max-tokens", str(n_decode + 1), "--ignore-eos",
           "--threads", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_generate: lantern failed (exit {p.returncode}):\n{p.stderr}")
    try:
        return parse_lantern(p.stderr, len(prompt), n_decode)
    except ValueError as e:
        sys.exit(f"bench_generate: {e}")


# ---- llama.cpp ----


def parse_llama_bench(text, n_prompt, n_gen, depths):
    """llama-bench's `-o json` output -> {metric: tok/s}: "prefill N" (pp N at depth 0) and
    "decode@D" (tg n_gen at depth D) for each D in depths. Each test's avg_ts is the mean over
    its repetitions. ValueError when the JSON is malformed or a test is missing."""
    try:
        tests = json.loads(text)
    except ValueError as e:
        raise ValueError(f"llama-bench's output is not JSON ({e}): {text[:300]!r}") from None
    if not isinstance(tests, list):
        raise ValueError("llama-bench's JSON is not a list of tests")
    got = {}
    for t in tests:
        try:
            pp, tg, d, ts = int(t["n_prompt"]), int(t["n_gen"]), int(t["n_depth"]), t["avg_ts"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"a llama-bench test without n_prompt/n_gen/n_depth/avg_ts: {e}")
        if pp == n_prompt and tg == 0 and d == 0:
            got[f"prefill {n_prompt}"] = float(ts)
        elif pp == 0 and tg == n_gen and d in depths:
            got[f"decode@{d}"] = float(ts)
    want = metric_names(n_prompt, depths)
    missing = [m for m in want if m not in got]
    if missing:
        raise ValueError(f"llama-bench's JSON has no {', '.join(missing)} test")
    return {m: got[m] for m in want}


def metric_names(n_prompt, depths):
    return [f"decode@{d}" for d in depths] + [f"prefill {n_prompt}"]


def run_llama_bench(bindir, model, n_prompt, n_gen, depths, threads):
    """One llama-bench run (-r 1: each test once, after llama-bench's own warm-up); returns
    (tok/s per metric, the build commit it reports)."""
    cmd = [os.path.join(bindir, "llama-bench"), "-m", model, "-t", str(threads),
           "-p", str(n_prompt), "-n", str(n_gen), "-d", ",".join(map(str, depths)),
           "-r", "1", "-o", "json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_generate: llama-bench failed (exit {p.returncode}):\n"
                 f"{' '.join(cmd)}\n{p.stderr[-3000:]}")
    try:
        got = parse_llama_bench(p.stdout, n_prompt, n_gen, depths)
    except ValueError as e:
        sys.exit(f"bench_generate: {e}\n{' '.join(cmd)}")
    commit = json.loads(p.stdout)[0].get("build_commit", "?")
    return got, commit


# ---- medians and ratios ----


def medians_and_ratios(runs, ours="lantern", theirs="llama.cpp"):
    """runs: {side: {metric: [tok/s per rep]}} -> ({side: {metric: median}}, {metric: ours /
    theirs}); throughputs, so a ratio > 1 means lantern is faster."""
    med = {side: {m: statistics.median(v) for m, v in r.items()} for side, r in runs.items()}
    ratio = {m: (med[ours][m] / med[theirs][m] if med[theirs][m] else float("nan"))
             for m in med[ours]}
    return med, ratio


# ---- main ----


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF file (default: tools/fetch_model.sh's default model)")
    ap.add_argument("--threads", type=int, default=n_cores(),
                    help="threads for both engines (default: all cores, %(default)s here)")
    ap.add_argument("--reps", type=int, default=3, help="measured runs per side (default 3)")
    ap.add_argument("--prompt-tokens", type=int, default=512, help="prompt length (default 512)")
    ap.add_argument("--decode-tokens", type=int, default=128,
                    help="decode steps after the prefill (default 128)")
    ap.add_argument("--short-prompt", type=int, default=4,
                    help="prompt tokens of lantern's decode@0 run (default 4)")
    ap.add_argument("--lantern", default=os.path.join(ROOT, "build", "lantern"),
                    help="lantern binary (default build/lantern)")
    ap.add_argument("--llama-bin", help="directory of llama.cpp's programs (default: what "
                                        "bench/build_llama_cpp.sh prints)")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    args = ap.parse_args()
    if min(args.threads, args.reps, args.prompt_tokens, args.decode_tokens,
           args.short_prompt) < 1:
        ap.error("--threads, --reps, --prompt-tokens, --decode-tokens and --short-prompt must "
                 "be >= 1")
    if args.short_prompt > args.prompt_tokens:
        ap.error("--short-prompt must be <= --prompt-tokens")

    binary, bin_sha, bin_mtime, model = prepare_lantern("bench_generate", args.lantern,
                                                        args.model)
    bindir = llama_bin_dir("bench_generate", args.llama_bin)
    P, N, T = args.prompt_tokens, args.decode_tokens, args.threads
    depths = [0, P]
    prompt = make_prompt(bindir, model, P)
    short = prompt[:args.short_prompt]
    metrics = metric_names(P, depths)

    machine = {"cpu": cpu_model(), "cores": n_cores(), "threads": T,
               "isa": cpu_isa(), "kernel": platform.release(), "loadavg_start": os.getloadavg()}
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": git_commit(), "peer": peer_version(bindir), "llama_bin": bindir,
            "lantern_binary": {"path": args.lantern, "sha256_12": bin_sha,
                               "built": bin_mtime.isoformat(timespec="seconds")},
            "model": model, "prompt_tokens": P, "decode_tokens": N,
            "short_prompt": args.short_prompt, "reps": args.reps, "machine": machine}

    print(f"bench_generate: {os.path.basename(model)}, prompt {P} tokens, decode {N} tokens, "
          f"{T} threads, {args.reps} reps (+1 warm-up each)", file=sys.stderr, flush=True)
    runs = {"lantern": {m: [] for m in metrics}, "llama.cpp": {m: [] for m in metrics}}
    commit = "?"
    for rep in range(args.reps + 1):
        tag = "warm-up" if rep == 0 else f"rep {rep}/{args.reps}"
        # Alternate which side goes first, so drift in the machine's load hits both.
        sides = ["lantern", "llama.cpp"] if rep % 2 == 0 else ["llama.cpp", "lantern"]
        got = {}
        for side in sides:
            if side == "lantern":
                _, d0 = run_lantern(binary, model, short, N, T)
                pre, dP = run_lantern(binary, model, prompt, N, T)
                got[side] = {"decode@0": d0, f"decode@{P}": dP, f"prefill {P}": pre}
            else:
                got[side], commit = run_llama_bench(bindir, model, P, N, depths, T)
        print(f"  {tag:>9}: " + " | ".join(
            f"{side} " + " ".join(f"{m} {got[side][m]:.1f}" for m in metrics)
            for side in ("lantern", "llama.cpp")) + "  tok/s", file=sys.stderr, flush=True)
        if rep > 0:
            for side in runs:
                for m in metrics:
                    runs[side][m].append(got[side][m])
    machine["loadavg_end"] = os.getloadavg()
    info["llama_cpp_commit"] = commit

    med, ratio = medians_and_ratios(runs)
    print()
    print(f"| metric (tok/s, median of {args.reps}) | lantern | llama.cpp "
          "| ratio (lantern/llama.cpp) |")
    print("|---|---:|---:|---:|")
    for m in metrics:
        print(f"| {m} | {med['lantern'][m]:.1f} | {med['llama.cpp'][m]:.1f} | {ratio[m]:.3f} |")
    print()
    print(f"decode@D: {N} decode steps after D tokens in the cache (lantern's decode@0: a "
          f"{args.short_prompt}-token prompt); prefill {P}: one {P}-token prompt")
    print(f"machine: {machine['cpu']} ({' '.join(machine['isa']) or 'no AVX2'}), "
          f"{machine['cores']} cores, {T} threads used; Linux {machine['kernel']}; load average "
          "%.1f/%.1f/%.1f at start, %.1f/%.1f/%.1f at end"
          % (machine["loadavg_start"] + machine["loadavg_end"]))
    print(f"commit: {info['commit']}; peer: llama-bench from {info['peer']} (llama.cpp "
          f"{commit}), {bindir}; model {os.path.basename(model)}")
    print(f"lantern binary: {args.lantern} built {info['lantern_binary']['built']} "
          f"(sha256 {bin_sha}...)")

    if args.json:
        out = dict(info, runs=runs, median=med, ratio=ratio, prompt_ids=prompt)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
