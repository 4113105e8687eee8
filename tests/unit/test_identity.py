#!/usr/bin/env python3
"""One request, one identity, through every process of the tree; and every engine flag reaches
the engine and the workers.

Identity: `lantern serve` at --tensor-parallel-size 3 on the default model gets a streaming
request with `X-Request-Id` and a W3C `traceparent`/`tracestate`; SIGUSR1 while it generates makes
every process dump. The id must appear in the frontend's log and dump lines, in liblantern's and
the engine's dump lines, and in every worker's; the traceparent (the trace context the engine read
from the ADD envelope, and the workers from the STEP entry) beside it in the engine's and every
worker's. A malformed X-Request-Id is refused with a 400, a malformed traceparent ignored.

Flags: `serve`, `generate` and `batch`, each given a non-default value of every engine flag, dump
the same resolved arguments in the frontend (liblantern), the engine and every worker, and the
workers act on them (block size, KV blocks). A flag the CPU backend cannot honour
(--gpu-memory-utilization) and an unknown flag are refused with a message.
"""
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time

import httpx

import ltcheck
from ltcheck import check, default_model, Server, start_tree

BIN = os.environ["LANTERN_BIN"]


def tagged(lines, role):
    """The log lines of one process role: 'frontend', 'engine', 'worker[1]'."""
    return [l for l in lines if re.match(r"^\S+ \w+ " + re.escape(role) + r" pid=", l)]


def with_id(lines, rid):
    return [l for l in lines if f"req={rid}" in l]


# ---- identity ----

def stream_until_dumped(srv, rid, traceparent, tracestate):
    """Streams a long completion; after its first chunk, SIGUSR1s the server and waits for the
    dumps; then closes. Returns the response headers."""
    headers = {"X-Request-Id": rid, "traceparent": traceparent, "tracestate": tracestate}
    body = {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True, "stream": True,
            "temperature": 0}
    with httpx.Client(timeout=120) as c:
        with c.stream("POST", srv.base + "/v1/completions", json=body, headers=headers) as r:
            it = r.iter_lines()
            first = next(it, "")
            check("identity: the stream started", first.startswith("data: "), first)
            srv.p.send_signal(signal.SIGUSR1)
            deadline = time.time() + 30
            while time.time() < deadline:  # every process dumps, then we stop reading
                if sum("state dump: rank" in l for l in srv.lines) >= 3 and any(
                        "state dump: req=" + rid in l and " engine " in l for l in srv.lines):
                    break
                time.sleep(0.2)
            return dict(r.headers)


def test_identity():
    model = default_model(honor_env=False)
    if not model:
        print("skip identity: default model absent")
        return
    rid = "test-identity-" + secrets.token_hex(6)
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    tracestate = "lantern=t1,other=x"
    srv = Server(model, "--tensor-parallel-size", "3", "--threads", "1", "--max-model-len", "1024")
    try:
        check("identity: server up", srv.base is not None, srv.log())
        if not srv.base:
            return
        hdrs = stream_until_dumped(srv, rid, traceparent, tracestate)
        check("identity: X-Request-Id echoed", hdrs.get("x-request-id") == rid, str(hdrs))
        time.sleep(0.5)
        lines = list(srv.lines)
        fe = with_id(tagged(lines, "frontend"), rid)
        check("identity: frontend log line names the request",
              any("completion" in l and "state dump" not in l for l in fe), "\n".join(fe))
        check("identity: frontend dump names it with its traceparent",
              any(f"state dump: req={rid} traceparent={traceparent}" in l for l in fe),
              "\n".join(fe))
        check("identity: liblantern dump names it",
              any(f"state dump: req={rid} engine id" in l for l in fe), "\n".join(fe))
        eng = with_id(tagged(lines, "engine"), rid)
        check("identity: engine dump names it, with the trace context of its ADD envelope",
              any(f"traceparent={traceparent}" in l and trace_id in l for l in eng),
              "\n".join(eng) or srv.log(3000))
        for r in range(3):
            w = with_id(tagged(lines, f"worker[{r}]"), rid)
            check(f"identity: worker {r} dump names it, with its traceparent",
                  any(f"traceparent={traceparent}" in l for l in w),
                  "\n".join(w) or srv.log(3000))
        # a malformed id is refused, not replaced; a malformed traceparent is ignored
        for bad in ["has space", "x" * 121, ""]:
            r = httpx.post(srv.base + "/v1/completions", json={"prompt": "a", "max_tokens": 1},
                           headers={"X-Request-Id": bad}, timeout=60)
            err = r.json().get("error", {}) if r.status_code == 400 else {}
            check(f"identity: X-Request-Id {bad[:12]!r} refused",
                  r.status_code == 400 and err.get("code") == "invalid_request_id",
                  f"{r.status_code} {r.text[:200]}")
        r = httpx.post(srv.base + "/v1/completions", json={"prompt": "a", "max_tokens": 1},
                       headers={"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
                                "X-Request-Id": "ok-id"}, timeout=60)
        check("identity: a malformed traceparent is ignored", r.status_code == 200,
              f"{r.status_code} {r.text[:200]}")
    finally:
        srv.stop()


# ---- engine flags ----

FLAGS = ["--tensor-parallel-size", "3", "--max-num-seqs", "7", "--max-num-batched-tokens", "300",
         "--max-step-ms", "150", "--max-model-len", "1024", "--block-size", "32", "--no-enable-prefix-caching",
         "--kv-cache-memory", "256M", "--threads", "1", "--batch-invariant", "--enforce-eager"]
RESOLVED = ("tensor_parallel_size=3 max_num_seqs=7 max_num_batched_tokens=300 max_step_ms=150 "
            "max_model_len=1024 "
            "block_size=32 enable_prefix_caching=0 kv_cache_memory=268435456 "
            "gpu_memory_utilization=0 threads=1 batch_invariant=1 enforce_eager=1")


def run_and_dump(args):
    """Starts `lantern ...args`, SIGUSR1s it once its engine is ready and a request runs,
    returns its stderr lines."""
    p, lines, ready, t = start_tree([BIN, *args], stdout=subprocess.DEVNULL)
    ready.wait(300)
    time.sleep(1.5)
    p.send_signal(signal.SIGUSR1)
    deadline = time.time() + 30
    while time.time() < deadline and sum("state dump: rank" in l for l in lines) < 3:
        time.sleep(0.2)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    t.join(5)
    return lines


def check_flags(cmd, lines):
    fe = [l for l in tagged(lines, "frontend") + tagged(lines, "lantern")
          if "engine arguments" in l]
    check(f"flags {cmd}: liblantern resolved them", any(RESOLVED in l for l in fe),
          "\n".join(fe) or "".join(lines[-20:]))
    eng = [l for l in tagged(lines, "engine") if "state dump:" in l and "model=" in l]
    check(f"flags {cmd}: the engine has them", any(RESOLVED in l for l in eng),
          "\n".join(eng) or "".join(lines[-20:]))
    for r in range(3):
        w = [l for l in tagged(lines, f"worker[{r}]") if "state dump: rank" in l]
        check(f"flags {cmd}: worker {r} has them and acts on them",
              any(RESOLVED in l and "KV blocks of 32 tokens" in l for l in w),
              "\n".join(w) or "".join(lines[-20:]))
    bi = [l for l in lines if "batch-invariant mode" in l]
    check(f"flags {cmd}: every worker runs batch-invariant", len(bi) >= 3, "".join(bi))


def test_flags():
    model = default_model(honor_env=False)
    if not model:
        print("skip flags: default model absent")
        return
    check_flags("generate", run_and_dump(["generate", "--model", model, "--prompt-ids", "1,2,3",
                                          "--max-tokens", "900", "--ignore-eos", *FLAGS]))
    with tempfile.TemporaryDirectory() as d:
        inp = os.path.join(d, "in.jsonl")
        with open(inp, "w") as f:
            for i in range(4):
                f.write(json.dumps({"prompt_ids": [5 + i, 6, 7], "max_tokens": 900,
                                    "ignore_eos": True}) + "\n")
        check_flags("batch", run_and_dump(["batch", "--model", model, "--input", inp, *FLAGS]))
    srv = Server(model, *FLAGS)
    try:
        if check("flags serve: up", srv.base is not None, srv.log()):
            done = threading.Event()

            def one():
                try:
                    httpx.post(srv.base + "/v1/completions", timeout=120,
                               json={"prompt": "a", "max_tokens": 600, "ignore_eos": True})
                except httpx.HTTPError:
                    pass
                done.set()
            threading.Thread(target=one, daemon=True).start()
            time.sleep(1.0)
            srv.p.send_signal(signal.SIGUSR1)
            deadline = time.time() + 30
            while time.time() < deadline and sum("state dump: rank" in l for l in srv.lines) < 3:
                time.sleep(0.2)
            time.sleep(0.3)
            check_flags("serve", list(srv.lines))
    finally:
        srv.stop()

    # every engine option (ipc/args.c's table) is in each command's --help
    src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ipc",
                            "args.c")).read()
    names = re.findall(r'OPT\("([a-z-]+)"', src)
    for cmd in ("serve", "generate", "batch"):
        r = subprocess.run([BIN, cmd, "--help"], capture_output=True, text=True, timeout=30)
        missing = [n for n in names if f"--{n} " not in r.stdout + r.stderr]
        check(f"{cmd} --help lists all {len(names)} engine options", len(names) > 15 and
              not missing, f"missing: {missing}")

    # refused: a flag the CPU backend cannot honour, and an unknown one
    for cmd, extra in [("serve", ["--port", "0"]), ("generate", ["--prompt-ids", "1"]),
                       ("batch", ["--input", "/dev/null"])]:
        r = subprocess.run([BIN, cmd, "--model", model, *extra, "--gpu-memory-utilization", "0.5"],
                           capture_output=True, text=True, timeout=120)
        check(f"refused {cmd}: --gpu-memory-utilization on the CPU backend",
              r.returncode != 0 and "CUDA backend" in r.stderr and "--kv-cache-memory" in r.stderr,
              f"status {r.returncode}: {r.stderr[-400:]}")
        r = subprocess.run([BIN, cmd, *extra, "--frobnicate"], capture_output=True, text=True,
                           timeout=60)
        check(f"refused {cmd}: unknown flag", r.returncode == 2 and "frobnicate" in r.stderr,
              f"status {r.returncode}: {r.stderr[-300:]}")
        r = subprocess.run([BIN, cmd, *extra, "--max-num-seqs", "zero"], capture_output=True,
                           text=True, timeout=60)
        check(f"refused {cmd}: bad value names the flag",
              r.returncode == 2 and "--max-num-seqs" in r.stderr, r.stderr[-300:])
        for bad in ["-5", "soon", "3600001"]:
            r = subprocess.run([BIN, cmd, *extra, "--max-step-ms", bad], capture_output=True,
                               text=True, timeout=60)
            check(f"refused {cmd}: --max-step-ms {bad}",
                  r.returncode == 2 and "--max-step-ms" in r.stderr and "milliseconds" in r.stderr,
                  r.stderr[-300:])


def main():
    only = sys.argv[1:]
    for name, fn in [("identity", test_identity), ("flags", test_flags)]:
        if not only or name in only:
            fn()
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
