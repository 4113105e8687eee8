#!/usr/bin/env python3
"""The multi-process engine end to end: `lantern generate` and `lantern batch` run the real
process tree (frontend, engine-core, tensor-parallel workers) on loopback IPC.

Checks: greedy output through the tree with TP 1/2/4 (random 8-head model) and TP 3 (default
model) equals the single-process reference; 64 concurrent mixed requests give the same outputs as
each alone, with batches of more than one sequence; prefix-cache hits on a repeated prompt; KV
exhaustion preempts and still completes correctly; kill -9 of a worker and of the engine ends
every streaming request with an error within 2 s, the tree exits non-zero, and no process, shared
memory segment or socket file is left; SIGUSR1 makes every process dump its state; a request the
worker holds no sequence slot for (fault injection) fails alone with an error, never sampled some
other way, and the others finish as they would alone.
"""
import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import ltcheck
from ltcheck import check, default_model, start_tree

BIN = os.environ["LANTERN_BIN"]
MODELS = os.environ["LANTERN_MODELS_DIR"]






def generate(model, ids, n, *extra):
    r = subprocess.run([BIN, "generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)),
                        "--max-tokens", str(n), "--ignore-eos", *extra],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return None, r.stderr
    return [int(t) for t in r.stdout.strip().split(",")], r.stderr


def batch(model, reqs, *extra, timeout=600):
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        with open(inp, "w") as f:
            for q in reqs:
                f.write(json.dumps(q) + "\n")
        r = subprocess.run([BIN, "batch", "--model", model, "--input", inp, "--output", out,
                            *extra], capture_output=True, text=True, timeout=timeout)
        results = [json.loads(l) for l in open(out)] if os.path.exists(out) else []
        summary = json.loads(r.stdout) if r.stdout.strip() else {}
        return r, results, summary


def leftovers(tree_pid):
    shm = glob.glob(f"/dev/shm/lantern-{tree_pid}-*")
    rt = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    socks = glob.glob(os.path.join(rt, f"lantern-{tree_pid}-*")) + \
        glob.glob(f"/tmp/lantern-{tree_pid}-*")
    return shm + socks


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ---- greedy through the tree equals the single-process reference ----

def test_tp():
    qwen3 = os.path.join(MODELS, "qwen3-tiny")
    prompts = [[1, 2, 3, 4, 5], list(range(100, 140)), [7]]
    for ids in prompts:
        ref, err = generate(qwen3, ids, 24, "--in-process")
        check(f"reference run ({len(ids)} tokens)", ref is not None, err)
        for tp in (1, 2, 4):
            got, err = generate(qwen3, ids, 24, "--tensor-parallel-size", str(tp))
            check(f"qwen3-tiny TP={tp} prompt of {len(ids)}: equals single-process", got == ref,
                  f"got {got} want {ref} {err[-300:]}")
    m = default_model(honor_env=False)
    if m:
        ids = [504, 3575, 282, 4649, 314]
        ref, _ = generate(m, ids, 16, "--in-process")
        got, err = generate(m, ids, 16, "--tensor-parallel-size", "3")
        check("default model TP=3 equals single-process", got == ref and ref is not None,
              f"got {got} want {ref} {err[-300:]}")


# ---- concurrency, prefix cache, preemption ----

def mixed_requests(n, seed):
    rnd = random.Random(seed)
    return [{"prompt_ids": [rnd.randrange(3, 512) for _ in range(rnd.randint(1, 90))],
             "max_tokens": rnd.randint(1, 30), "ignore_eos": True} for _ in range(n)]


def test_concurrency():
    model = os.path.join(MODELS, "qwen2-tiny")
    reqs = mixed_requests(64, 5)
    r1, alone, _ = batch(model, reqs, "--concurrency", "1")
    check("64 requests one at a time", r1.returncode == 0 and len(alone) == 64, r1.stderr[-400:])
    r, res, summ = batch(model, reqs, "--max-num-seqs", "64", "--max-num-batched-tokens", "512")
    check("64 concurrent requests finish", r.returncode == 0 and summ.get("failed") == 0,
          r.stderr[-400:])
    same = sum(a["ids"] == b["ids"] for a, b in zip(alone, res))
    check("64 concurrent outputs equal each alone", same == 64 and len(res) == 64,
          f"{same}/64 equal")
    check("batches of more than one sequence formed", summ.get("max_running", 0) > 1,
          f"max_running {summ.get('max_running')}")

    # a repeated long prompt hits the prefix cache and gives the same output
    long_prompt = [random.Random(9).randrange(3, 512) for _ in range(200)]
    reqs = [{"prompt_ids": long_prompt, "max_tokens": 12, "ignore_eos": True}] * 4
    r, res, summ = batch(model, reqs, "--concurrency", "1")
    check("repeated prompt: prefix-cache hits", summ.get("prefix_hits", 0) >= 3 * 192,
          f"summary {summ}")
    check("repeated prompt: same output every time",
          r.returncode == 0 and all(x["ids"] == res[0]["ids"] for x in res), str(res)[:300])
    check("repeated prompt: cached tokens reported",
          all(x["cached_tokens"] >= 192 for x in res[1:]), str([x["cached_tokens"] for x in res]))

    # KV exhaustion: a cache of 40 blocks for 32 sequences of up to ~120 tokens
    reqs = mixed_requests(32, 7)
    for q in reqs:
        q["max_tokens"] = 30
    block_bytes = 2 * 2 * 4 * 16 * 16 * 4  # layers, K+V, kv heads, block, head_dim, fp32
    r, res, summ = batch(model, reqs, "--kv-cache-memory", str(40 * block_bytes),
                         "--max-model-len", "256")
    _, ref, _ = batch(model, reqs, "--concurrency", "1")
    check("KV exhaustion preempts", summ.get("preemptions", 0) > 0, f"summary {summ}")
    same = sum(a["ids"] == b["ids"] for a, b in zip(ref, res))
    check("KV exhaustion: every request completes correctly",
          r.returncode == 0 and same == len(reqs), f"{same}/{len(reqs)} equal, {r.stderr[-300:]}")


# ---- faults ----

def run_and_kill(which):
    """Streams 16 long requests on the default model (slow enough to be mid-stream), kill -9s a
    worker ('worker') or the engine, and measures."""
    model = default_model(honor_env=False)
    if not model:
        print(f"skip kill -9 {which}: default model absent")
        return
    reqs = [{"prompt_ids": [1 + i, 2, 3], "max_tokens": 400, "ignore_eos": True}
            for i in range(16)]
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        with open(inp, "w") as f:
            for q in reqs:
                f.write(json.dumps(q) + "\n")
        p, lines, ready, pump = start_tree(
            [BIN, "batch", "--model", model, "--input", inp, "--output", out,
             "--tensor-parallel-size", "3", "--max-model-len", "512",
             "--kv-cache-memory", str(64 << 20)])
        ready.wait(300)
        engine = children(p.pid)[0]
        workers = children(engine)
        time.sleep(1.0)  # let the requests stream
        victim = workers[1] if which == "worker" else engine
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        t_end = time.time() - t_kill
        pump.join(5)
        stdout, stderr = p.stdout.read(), "".join(lines)
        results = [json.loads(l) for l in open(out)] if os.path.exists(out) else []
        time.sleep(0.3)
        label = f"kill -9 {which}"
        check(f"{label}: tree exits non-zero", p.returncode not in (0, None),
              f"status {p.returncode}")
        check(f"{label}: every request ends with an error within 2 s",
              len(results) == 16 and all(x["finish"] == "error" for x in results) and t_end < 2.0,
              f"{t_end:.2f} s, status {p.returncode}, finishes {[x['finish'] for x in results]}, "
              f"stdout {stdout[-300:]!r}, stderr {stderr[-1500:]!r}")
        check(f"{label}: error names the cause",
              all(("worker" in x["error"] or "engine" in x["error"]) for x in results),
              results[0]["error"] if results else "no results")
        left = [q for q in [engine] + workers if alive(q)]
        check(f"{label}: no orphan process", not left, f"alive: {left}")
        check(f"{label}: no shared memory or socket file left", not leftovers(p.pid),
              str(leftovers(p.pid)))


def test_faults():
    run_and_kill("worker")
    run_and_kill("engine")


# ---- SIGUSR1 ----

def test_dump():
    model = default_model(honor_env=False)
    if not model:
        print("skip SIGUSR1: default model absent")
        return
    reqs = [{"prompt_ids": [5, 6, 7], "max_tokens": 300, "ignore_eos": True}] * 4
    with tempfile.TemporaryDirectory() as d:
        inp = os.path.join(d, "in.jsonl")
        with open(inp, "w") as f:
            for q in reqs:
                f.write(json.dumps(q) + "\n")
        p, lines, ready, pump = start_tree(
            [BIN, "batch", "--model", model, "--input", inp, "--tensor-parallel-size", "3",
             "--max-model-len", "512", "--kv-cache-memory", str(64 << 20)])
        ready.wait(300)
        time.sleep(1.0)
        os.kill(p.pid, signal.SIGUSR1)
        deadline = time.time() + 60  # a worker dumps between two steps (slow under ASan)
        while time.time() < deadline and sum("state dump: rank" in l for l in lines) < 3:
            time.sleep(0.2)
        p.terminate()
        p.wait(120)
        pump.join(5)
        stderr = "".join(lines)
    check("SIGUSR1: frontend dumps", "state dump: frontend" in stderr, stderr[-500:])
    check("SIGUSR1: engine dumps its scheduler", "engine" in stderr and "running" in stderr,
          stderr[-500:])
    check("SIGUSR1: every worker dumps", all(f"worker[{r}]" in stderr for r in range(3)) and
          stderr.count("state dump: rank") >= 3, stderr[-500:])


def test_slots():
    """LANTERN_FAULT_WORKER_SLOTS=1: the worker keeps sampling state (seeded generator, history)
    for one sequence only, while the engine runs four at once. Every request it cannot hold
    fails alone with an error naming the reason; none is sampled another way; the others give
    exactly what they give alone, and the tree goes on serving."""
    model = os.path.join(MODELS, "qwen2-tiny")
    rnd = random.Random(3)
    reqs = [{"prompt_ids": [rnd.randrange(3, 512) for _ in range(12)], "max_tokens": 16,
             "ignore_eos": True, "temperature": 0.9, "seed": 100 + i} for i in range(6)]
    _, alone, _ = batch(model, reqs, "--concurrency", "1")
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        with open(inp, "w") as f:
            for q in reqs:
                f.write(json.dumps(q) + "\n")
        env = dict(os.environ, LANTERN_FAULT_WORKER_SLOTS="1")
        r = subprocess.run([BIN, "batch", "--model", model, "--input", inp, "--output", out,
                            "--max-num-seqs", "4"], capture_output=True, text=True, timeout=300,
                           env=env)
        res = [json.loads(l) for l in open(out)] if os.path.exists(out) else []
    failed = [x for x in res if x["finish"] == "error"]
    ok = [x for x in res if x["finish"] != "error"]
    check("slots: every request answered", len(res) == len(reqs), r.stderr[-600:])
    check("slots: the requests without a slot fail with an error saying why",
          failed and all("sequence slot" in (x["error"] or "") for x in failed),
          str(failed)[:400])
    check("slots: the others finish (the tree goes on serving)", len(ok) >= 1,
          r.stderr[-600:])
    same = [x["ids"] == alone[x["index"]]["ids"] for x in ok] if len(alone) == len(reqs) else []
    check("slots: the others are sampled exactly as alone (seeded)", same and all(same),
          f"{sum(same)}/{len(same)} equal")


def main():
    only = sys.argv[1:]
    for name, fn in [("tp", test_tp), ("concurrency", test_concurrency), ("faults", test_faults),
                     ("dump", test_dump), ("slots", test_slots)]:
        if not only or name in only:
            fn()
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
