#!/usr/bin/env python3
"""bench_builds.py — `lantern serve` against `lantern serve`: two builds (say, the previous commit
and this one) on the same model, threads and workload, in one run, interleaved, so a change can
show it costs nothing (or what it costs). Each run starts a fresh server, sends one warm-up
request, then the workload of bench_serve.py (client mode, streaming) at each concurrency.

    .venv/bin/python bench/bench_builds.py --base /tmp/lantern-prev --new build/lantern \\
        --concurrency 1,8,32 --reps 3

Prints, per concurrency, the median over reps of output tok/s, TTFT p50/p99 and ITL p50/p99 for
both builds and their ratio (> 1: the new build is better).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_model():
    r = subprocess.run([os.path.join(ROOT, "tools", "fetch_model.sh")], capture_output=True,
                       text=True, check=True)
    return r.stdout.strip()


def run_one(binary, model, threads, conc, args, log, extra=()):
    """One server (binary serve model ... extra), one warm-up, the workload at concurrency conc;
    returns bench_serve.py's JSON result."""
    port = free_port()
    srv = subprocess.Popen([binary, "serve", model, "--port", str(port), "--threads",
                            str(threads), "--disable-log-requests", *args.server_arg, *extra],
                           stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or srv.poll() is not None:
                    raise SystemExit(f"bench_builds: {binary} did not start (see {log.name})")
                time.sleep(0.2)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            n = max(8, 2 * conc)
            subprocess.run([sys.executable, os.path.join(HERE, "bench_serve.py"), "--base-url",
                            f"http://127.0.0.1:{port}", "--concurrency", str(conc),
                            "--num-prompts", str(n), "--input-len", str(args.input_len),
                            "--output-len", str(args.output_len), "--disable-tqdm", "--json",
                            out.name], check=True, stdout=subprocess.DEVNULL)
            return json.load(open(out.name))
    finally:
        srv.terminate()
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:
            srv.kill()


def figures(result):
    s = result.get("summary", result)
    return {"out tok/s": s["output_throughput"], "TTFT p50 ms": s["ttft_ms"]["p50"],
            "TTFT p99 ms": s["ttft_ms"]["p99"], "ITL p50 ms": s["itl_ms"]["p50"],
            "ITL p99 ms": s["itl_ms"]["p99"]}


def table(runs, concs, reps, sides):
    """Medians over reps and the ratio of each side to the first (> 1: better)."""
    first = sides[0]
    head = " | ".join(sides)
    ratios = " | ".join(f"{s}/{first}" for s in sides[1:])
    print(f"\n| C | metric (median of {reps}) | {head} | {ratios} |")
    print("|---:|---|" + "---:|" * (2 * len(sides) - 1))
    for c in concs:
        for k in runs[first][c][0]:
            meds = [statistics.median(r[k] for r in runs[s][c]) for s in sides]
            rs = []
            for m in meds[1:]:
                b = meds[0]
                rs.append((m / b if k == "out tok/s" else b / m) if b and m else float("nan"))
            print(f"| {c} | {k} | " + " | ".join(f"{m:.1f}" for m in meds) + " | " +
                  " | ".join(f"{r:.3f}" for r in rs) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the reference lantern binary")
    ap.add_argument("--new", default=os.path.join(ROOT, "build", "lantern"))
    ap.add_argument("--model", help="GGUF or HF directory (default: the default model)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--server-arg", action="append", default=[], help="for both servers")
    args = ap.parse_args()
    model = args.model or default_model()
    concs = [int(c) for c in args.concurrency.split(",")]
    runs = {side: {c: [] for c in concs} for side in ("base", "new")}
    log = tempfile.NamedTemporaryFile("w", prefix="bench_builds.", suffix=".log", delete=False)
    turn = 0
    for rep in range(args.reps):
        for c in concs:
            order = ("base", "new") if turn % 2 == 0 else ("new", "base")  # drift hits both
            turn += 1
            for side in order:
                binary = args.base if side == "base" else args.new
                f = figures(run_one(binary, model, args.threads, c, args, log))
                runs[side][c].append(f)
                print(f"rep {rep + 1} C={c:<3} {side:>4}: " +
                      ", ".join(f"{k} {v:.1f}" for k, v in f.items()), file=sys.stderr,
                      flush=True)
    table(runs, concs, args.reps, ["base", "new"])
    print(f"\nmodel {os.path.basename(model)}, {args.threads} threads, {args.input_len} in / "
          f"{args.output_len} out tokens, streaming; load average {os.getloadavg()[0]:.2f} at "
          f"the end; server logs in {log.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
