#!/usr/bin/env python3
"""bench_builds.py — `lantern serve` against `lantern serve`: two builds (say, the previous commit
and this one) on the same model, threads and workload, in one run, interleaved, so a change can
show it costs nothing (or what it costs). Each run starts a fresh server, sends one warm-up
request, then the workload of bench_serve.py (client mode, streaming) at each concurrency.

    .venv/bin/python bench/bench_builds.py --base /tmp/lantern-prev --new build/lantern \\
        --concurrency 1,8,32 --reps 3

Prints, per concurrency, the median over reps of output tok/s, TTFT p50/p99 and ITL p50/p99 for
both builds and their ratio (> 1: the new build is better).

--scrape S scrapes /metrics every S seconds while the workload runs (as Prometheus would, asking
for OpenMetrics); --scrape-side new scrapes only the new build's server, so with --base and --new
the same binary the table is the cost of being scraped.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
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


def run_one(binary, model, threads, conc, args, log, extra=(), scrape=0.0):
    """One server (binary serve model ... extra), one warm-up, the workload at concurrency conc
    (a scraper on /metrics every scrape seconds, if scrape); returns bench_serve.py's JSON
    result."""
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
        stop = threading.Event()
        scrapes = []
        if scrape:
            def scraper():
                req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={
                    "Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
                while not stop.wait(scrape):
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(req, timeout=10) as r:
                        r.read()
                    scrapes.append(time.perf_counter() - t0)
            threading.Thread(target=scraper, daemon=True).start()
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            n = max(8, 2 * conc)
            subprocess.run([sys.executable, os.path.join(HERE, "bench_serve.py"), "--base-url",
                            f"http://127.0.0.1:{port}", "--concurrency", str(conc),
                            "--num-prompts", str(n), "--input-len", str(args.input_len),
                            "--output-len", str(args.output_len), "--disable-tqdm", "--json",
                            out.name], check=True, stdout=subprocess.DEVNULL)
            stop.set()
            result = json.load(open(out.name))
            if scrapes:
                result["scrapes"] = scrapes
            return result
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
    ap.add_argument("--scrape", type=float, default=0.0,
                    help="scrape /metrics every S seconds during the workload (0: not)")
    ap.add_argument("--scrape-side", choices=("both", "new"), default="both")
    args = ap.parse_args()
    model = args.model or default_model()
    concs = [int(c) for c in args.concurrency.split(",")]
    runs = {side: {c: [] for c in concs} for side in ("base", "new")}
    scrape_ms = {"base": [], "new": []}
    log = tempfile.NamedTemporaryFile("w", prefix="bench_builds.", suffix=".log", delete=False)
    turn = 0
    for rep in range(args.reps):
        for c in concs:
            order = ("base", "new") if turn % 2 == 0 else ("new", "base")  # drift hits both
            turn += 1
            for side in order:
                binary = args.base if side == "base" else args.new
                scrape = args.scrape if args.scrape_side == "both" or side == "new" else 0.0
                res = run_one(binary, model, args.threads, c, args, log, scrape=scrape)
                f = figures(res)
                runs[side][c].append(f)
                scrape_ms[side].extend(1e3 * t for t in res.get("scrapes", []))
                print(f"rep {rep + 1} C={c:<3} {side:>4}: " +
                      ", ".join(f"{k} {v:.1f}" for k, v in f.items()), file=sys.stderr,
                      flush=True)
    table(runs, concs, args.reps, ["base", "new"])
    for side, ms in scrape_ms.items():
        if ms:
            ms.sort()
            print(f"{side}: {len(ms)} scrapes of /metrics every {args.scrape} s, "
                  f"p50 {statistics.median(ms):.2f} ms, max {ms[-1]:.2f} ms")
    print(f"\nmodel {os.path.basename(model)}, {args.threads} threads, {args.input_len} in / "
          f"{args.output_len} out tokens, streaming; load average {os.getloadavg()[0]:.2f} at "
          f"the end; server logs in {log.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
