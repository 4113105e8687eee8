#!/usr/bin/env python3
"""The benchmarks' plumbing around their peer, llama.cpp's own programs, without llama.cpp:

- bench_generate reads llama-bench's `-o json` output (a sample written by hand in its format:
  pp512 and tg128 at depths 0 and 512): prefill from pp at depth 0, decode@D from tg at depth D;
  a missing test or non-JSON output is an error, not a number; lantern's stderr timings too;
- medians and ratios: throughput ratios are lantern/llama.cpp, latency and memory ones
  llama.cpp/lantern, medians over reps;
- bench_serve's tokenize probe, against fake HTTP servers: llama-server's dialect ({"content"}
  in, {"tokens"} out, and 200 with no tokens for {"prompt"}, which must not be taken as a
  tokenizer), lantern's ({"prompt"}), and a server with none;
- the resident memory of a process tree (/proc): a grandchild's memory counts, and the sampler
  catches a peak that is gone by the time it stops.
"""
import asyncio
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "bench"))

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402
import bench_generate as bg  # noqa: E402
import bench_serve as bs  # noqa: E402

MIB = 1 << 20


def bench_entry(n_prompt, n_gen, n_depth, avg_ts):
    """One test of llama-bench's JSON output, with the fields it prints (values made up)."""
    return {"build_commit": "0c1e570", "build_number": 1, "cpu_info": "AMD EPYC",
            "gpu_info": "", "backends": "CPU", "model_filename": "/m/model.gguf",
            "model_type": "llama 256M Q4_1", "model_size": 96576768,
            "model_n_params": 134515008, "n_batch": 2048, "n_ubatch": 512, "n_threads": 2,
            "cpu_mask": "0x0", "cpu_strict": False, "poll": 50, "type_k": "f16",
            "type_v": "f16", "n_gpu_layers": -1, "flash_attn": -1, "embeddings": False,
            "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": n_depth,
            "test_time": "2026-12-04T13:02:38Z", "avg_ns": int(1e9 * max(n_prompt, n_gen)
                                                               / avg_ts),
            "stddev_ns": 0, "avg_ts": avg_ts, "stddev_ts": 0.0,
            "samples_ns": [int(1e9 * max(n_prompt, n_gen) / avg_ts)], "samples_ts": [avg_ts]}


def test_llama_bench_json():
    sample = [bench_entry(512, 0, 0, 471.25), bench_entry(0, 128, 0, 151.5),
              bench_entry(512, 0, 512, 402.0), bench_entry(0, 128, 512, 120.75)]
    text = json.dumps(sample, indent=2)
    got = bg.parse_llama_bench(text, 512, 128, [0, 512])
    check("llama-bench JSON: prefill 512 is pp512 at depth 0, decode@D is tg128 at depth D",
          got == {"decode@0": 151.5, "decode@512": 120.75, "prefill 512": 471.25}, got)
    check("metric names in the table's order",
          list(got) == bg.metric_names(512, [0, 512]), list(got))
    for label, bad in (("tg128 at depth 512 missing", json.dumps(sample[:3])),
                       ("not JSON (a markdown table)", "| model | size |\n|---|---|"),
                       ("a test without avg_ts",
                        json.dumps([{k: v for k, v in e.items() if k != "avg_ts"}
                                    for e in sample])),
                       ("other token counts", json.dumps([bench_entry(256, 0, 0, 1.0),
                                                          bench_entry(0, 64, 0, 1.0)]))):
        try:
            bg.parse_llama_bench(bad, 512, 128, [0, 512])
            check(f"llama-bench JSON: {label} is an error", False, "no ValueError")
        except ValueError:
            check(f"llama-bench JSON: {label} is an error", True)

    err = ("load: 0.002 s (92.0 MiB of weights)\nprefill: 512 tokens in 1.024 s (500.0 tok/s)\n"
           "decode: 128 tokens in 0.800 s (160.0 tok/s)\n")
    pre, dec = bg.parse_lantern(err, 512, 128)
    check("lantern's timings: tokens / seconds", abs(pre - 500.0) < 1e-9
          and abs(dec - 160.0) < 1e-9, (pre, dec))
    try:
        bg.parse_lantern(err, 512, 127)
        check("lantern's timings: other token counts are an error", False, "no ValueError")
    except ValueError:
        check("lantern's timings: other token counts are an error", True)


def test_medians_and_ratios():
    runs = {"lantern": {"decode@0": [100.0, 300.0, 200.0], "prefill 512": [50.0, 40.0, 60.0]},
            "llama.cpp": {"decode@0": [400.0, 400.0, 1000.0], "prefill 512": [25.0, 20.0, 30.0]}}
    med, ratio = bg.medians_and_ratios(runs)
    check("medians per side and metric",
          med == {"lantern": {"decode@0": 200.0, "prefill 512": 50.0},
                  "llama.cpp": {"decode@0": 400.0, "prefill 512": 25.0}}, med)
    check("throughput ratio lantern/llama.cpp",
          ratio == {"decode@0": 0.5, "prefill 512": 2.0}, ratio)

    def run(tput, ttft50, itl99, idle, peak):
        return {"summary": {"output_throughput": tput,
                            "ttft_ms": {"p50": ttft50, "p99": ttft50 * 2},
                            "itl_ms": {"p50": 10.0, "p99": itl99},
                            "rss_mib": {"idle": idle, "peak": peak},
                            "pss_mib": {"idle": idle / 2, "peak": peak / 2}}}
    runs = {"lantern": {8: [run(90, 100, 30, 100, 200), run(110, 300, 10, 100, 400),
                            run(100, 200, 20, 100, 300)]},
            "llama.cpp": {8: [run(50, 100, 40, 300, 600), run(50, 100, 40, 300, 600),
                              run(60, 100, 40, 300, 600)]}}
    table = {r["metric"]: r for r in bs.compare_table(runs, [8])}
    want = {"output tok/s": (100, 50, 2.0), "TTFT p50 (ms)": (200, 100, 0.5),
            "TTFT p99 (ms)": (400, 200, 0.5), "ITL p50 (ms)": (10, 10, 1.0),
            "ITL p99 (ms)": (20, 40, 2.0), "RSS idle (MiB)": (100, 300, 3.0),
            "RSS peak (MiB)": (300, 600, 2.0), "PSS idle (MiB)": (50, 150, 3.0),
            "PSS peak (MiB)": (150, 300, 2.0)}
    got = {m: (r["lantern"], r["llama.cpp"], r["ratio"]) for m, r in table.items()}
    check("serve table: medians; ratio > 1 where lantern is better (throughput up, latency "
          "and memory down)", got == want, got)


# ---- fake tokenize servers ----


class FakeHandler(http.server.BaseHTTPRequestHandler):
    """Tokenizes by words: one id per word, a BOS (id 1) first when special tokens are asked."""
    dialect = None  # "llama-server", "lantern" or "none"

    def log_message(self, *_):
        pass

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        words = lambda t: [100 + len(w) for w in t.split()]  # noqa: E731
        if self.path != "/tokenize" or self.dialect == "none":
            return self.reply(404, {"error": "not found"})
        if self.dialect == "llama-server":
            if "content" not in body:  # what llama-server does with {"prompt"}
                return self.reply(200, {"tokens": []})
            bos = [1] if body.get("add_special") else []
            return self.reply(200, {"tokens": bos + words(body["content"])})
        if "prompt" not in body:
            return self.reply(400, {"error": {"message": "prompt is required"}})
        bos = [1] if body.get("add_special_tokens", True) else []
        return self.reply(200, {"tokens": bos + words(body["prompt"])})


def with_fake(dialect, fn):
    handler = type(f"Fake_{dialect}", (FakeHandler,), {"dialect": dialect})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        target = bs.Target(f"http://127.0.0.1:{srv.server_address[1]}", "/v1/completions",
                           "m", None, None, 10)
        return asyncio.run(fn(target))
    finally:
        srv.shutdown()
        srv.server_close()


def test_tokenize_probe():
    async def probe(target):
        count, how = await bs.find_tokenizer(target)
        if count is None:
            return None, how, None, None, None
        counts = await bs.WordCounts.build_async(count)
        return how, await count("a bb ccc"), await count("a bb ccc", True), counts, None

    for dialect, field in (("llama-server", "'content'"), ("lantern", "'prompt'")):
        how, plain, special, counts, _ = with_fake(dialect, probe)
        check(f"{dialect}: the probe finds /tokenize with {field}",
              how == f"/tokenize {{{field}}}", how)
        check(f"{dialect}: token counts without and with the BOS", (plain, special) == (3, 4),
              (plain, special))
        check(f"{dialect}: one token per word, the BOS measured away",
              counts is not None and counts.exact
              and set(counts.spaced.values()) == {1} and set(counts.bare.values()) == {1},
              counts and (set(counts.spaced.values()), set(counts.bare.values())))
        reqs = bs.make_requests(3, 20, 4, 0.0, counts, 0)
        check(f"{dialect}: prompts of the asked length",
              [len(r["prompt"].split()) for r in reqs] == [20, 20, 20],
              [len(r["prompt"].split()) for r in reqs])

    got = with_fake("none", probe)
    check("a server without a tokenizer: no counts", got[0] is None and got[1] is None, got)


# ---- RSS of a process tree ----

GRANDCHILD = r"""
import os, sys, time
d = sys.argv[1]
open(os.path.join(d, "gc.pid"), "w").write(str(os.getpid()))
def wait(name):
    while not os.path.exists(os.path.join(d, name)):
        time.sleep(0.01)
wait("go")
big = b"\x01" * (64 << 20)   # written, so resident
open(os.path.join(d, "held"), "w").close()
wait("free")
del big
open(os.path.join(d, "freed"), "w").close()
time.sleep(120)
"""

CHILD = r"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
time.sleep(120)
"""


def own_rss(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wait_file(path, timeout=30.0):
    t0 = time.monotonic()
    while not os.path.exists(path):
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.01)
    return True


def test_tree_rss():
    with tempfile.TemporaryDirectory() as d:
        child = subprocess.Popen([sys.executable, "-c", CHILD, GRANDCHILD, d])
        try:
            if not check("the grandchild starts", wait_file(os.path.join(d, "gc.pid")),
                         "no gc.pid"):
                return
            time.sleep(0.2)
            gc = int(open(os.path.join(d, "gc.pid")).read())
            meter = bs.RssMeter(child.pid, interval=0.02)
            start = meter.idle
            both = own_rss(child.pid) + own_rss(gc)
            check("tree RSS: the child and the grandchild, summed",
                  abs(start - both) < 4 * MIB and start > own_rss(child.pid) + MIB,
                  f"tree {start / MIB:.1f} MiB, child + grandchild {both / MIB:.1f} MiB")
            open(os.path.join(d, "go"), "w").close()
            wait_file(os.path.join(d, "held"))
            held = bs.tree_mem(child.pid)[0]
            check("tree RSS: the grandchild's 64 MiB count", held - start >= 60 * MIB,
                  f"{start / MIB:.1f} -> {held / MIB:.1f} MiB")
            time.sleep(0.2)  # several samples while held
            open(os.path.join(d, "free"), "w").close()
            wait_file(os.path.join(d, "freed"))
            time.sleep(0.1)
            after = bs.tree_mem(child.pid)[0]
            first, peak = meter.stop()
            check("RSS meter: the peak is the held memory, gone by the end",
                  first == start and peak - start >= 60 * MIB and peak - after >= 50 * MIB,
                  f"start {start / MIB:.1f}, peak {peak / MIB:.1f}, end {after / MIB:.1f} MiB")
            check("RSS meter: it sampled", meter.samples >= 5, meter.samples)
            check("PSS meter: the held 64 MiB (private pages) count in PSS too",
                  meter.pss_peak - meter.pss_idle >= 60 * MIB and 0 < meter.pss_idle <= start,
                  f"PSS idle {meter.pss_idle / MIB:.1f}, peak {meter.pss_peak / MIB:.1f} MiB")
            check("tree RSS of a pid that is gone is 0", bs.tree_mem(2**22 + 12345) == (0, 0))
        finally:
            child.kill()
            child.wait()
            try:
                os.kill(int(open(os.path.join(d, "gc.pid")).read()), 9)
            except (OSError, ValueError):
                pass


def test_kv_bytes_per_token():
    """--kv-match sizes lantern's pool from the model's KV bytes per token."""
    check("a file that is not there: None", bs.kv_bytes_per_token("/nonexistent.gguf") is None)
    model = ltcheck.default_model()
    try:
        import gguf  # noqa: F401
    except ImportError:
        if model:
            check("without the gguf package: None (bench_serve then says what to install)",
                  bs.kv_bytes_per_token(model) is None)
        return
    if model:
        # SmolLM2-135M: 30 layers x 3 KV heads x (64 + 64) x 2 bytes
        got = bs.kv_bytes_per_token(model)
        check("the default model: 23040 bytes of fp16 K and V per token", got == 23040, got)


def test_snapshot_has_lantern_core():
    """The benchmarks run a snapshot of the binary: lantern-core goes with it, or the tree's
    engine and workers would fall back to lantern itself (and its frontend libraries)."""
    with tempfile.TemporaryDirectory() as d:
        for name in ("lantern", "lantern-core"):
            with open(os.path.join(d, name), "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(os.path.join(d, name), 0o755)
        fake_model = os.path.join(d, "m.gguf")
        open(fake_model, "w").close()
        binary = bg.prepare_lantern("test", os.path.join(d, "lantern"), fake_model)[0]
        snap = os.path.dirname(binary)
        check("the snapshot holds lantern and lantern-core side by side",
              os.access(os.path.join(snap, "lantern-core"), os.X_OK) and snap != d,
              sorted(os.listdir(snap)))


def main():
    test_snapshot_has_lantern_core()
    test_kv_bytes_per_token()
    test_llama_bench_json()
    test_medians_and_ratios()
    test_tokenize_probe()
    test_tree_rss()
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
