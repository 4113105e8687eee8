#!/usr/bin/env python3
"""Soak: `lantern serve` on llama-tiny-gguf (random weights) takes SOAK_ROUNDS (5) rounds of
SOAK_CLIENTS (512) concurrent streaming completions (httpx.AsyncClient), of which about
SOAK_DISCONNECT (20%) disconnect at a random point of their stream. Checks:
- nothing is lost: every client that did not disconnect gets its whole stream, a finish_reason
  ("length", ignore_eos) and `data: [DONE]`;
- the open file descriptors of every process of the tree return to their idle count after each
  round (within 10 s);
- the resident set of every process is within 2% between rounds 3 and 5 (after the warm-up rounds,
  a steady state must not grow).
Prints RSS (KiB) and fds per process per round, the lost count and the duration. Minutes long:
ctest label `soak` (not in the default run), or tools/soak.sh.
"""
import asyncio
import json
import os
import random
import sys
import tempfile
import time

import httpx

import ltcheck
from ltcheck import check, process_tree, Server, tiny_model

ROUNDS = int(os.environ.get("SOAK_ROUNDS", "5"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "512"))
DISCONNECT = float(os.environ.get("SOAK_DISCONNECT", "0.2"))
TOKENS = int(os.environ.get("SOAK_TOKENS", "24"))
# --kv-cache-memory: the CPU worker's KV pool is touched page by page as the block manager hands
# out blocks it has not used before (freed blocks stay in the prefix cache until evicted), so with
# the default 1G the worker's RSS climbs for many rounds before it is steady; a small pool is
# touched whole in the first round (measured: worker anon RSS +8 MB a round with 64M or 1G,
# flat from round 2 with 12M). SOAK_KV=1G shows the climb.
KV = os.environ.get("SOAK_KV", "12M")


def name(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        return " ".join(a.decode() for a in args[1:3]) or str(pid)
    except OSError:
        return str(pid)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_parts(pid):
    """anon/file/shmem KiB of the resident set (where growth is: heap or shared rings)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            for k in ("RssAnon", "RssFile", "RssShmem"):
                if line.startswith(k + ":"):
                    out[k[3:].lower()] = int(line.split()[1])
    return out


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def snapshot(pids):
    return {p: (rss_kib(p), nfds(p)) for p in pids}


async def one(client, base, i, rnd):
    """One streaming completion: ('done', finish) or ('disconnected', None) or ('lost', why)."""
    cut = rnd.randint(1, TOKENS) if rnd.random() < DISCONNECT else None
    body = {"model": "soak", "prompt": f"Request {i}: tell me something.", "max_tokens": TOKENS,
            "ignore_eos": True, "temperature": 0.8, "seed": i, "stream": True}
    finish, got, done = None, 0, False
    try:
        async with client.stream("POST", base + "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                return "lost", f"status {resp.status_code}: {(await resp.aread())[:200]!r}"
            async for line in resp.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    got += 1
                    ch = json.loads(line[6:])
                    for c in ch.get("choices", []):
                        finish = c.get("finish_reason") or finish
                    if cut is not None and got >= cut:
                        return "disconnected", None  # leaving the block closes the connection
    except Exception as e:  # noqa: BLE001 - counted as lost, with its reason
        return "lost", repr(e)
    if done and finish == "length":
        return "done", finish
    return "lost", f"done={done} finish={finish} chunks={got}"


async def round_(base, seed):
    rnd = random.Random(seed)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        return await asyncio.gather(*[one(client, base, seed * CLIENTS + i, rnd)
                                      for i in range(CLIENTS)])


def wait_fds(pids, idle, timeout=10.0):
    t0 = time.time()
    while True:
        now = {p: nfds(p) for p in pids}
        if all(now[p] <= idle[p] for p in pids) or time.time() - t0 > timeout:
            return now
        time.sleep(0.2)


def main():
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="lantern-soak-") as tmp:
        model = tiny_model(tmp)
        srv = Server(model, "--served-model-name", "soak", "--threads", "1",
                     "--kv-cache-memory", KV)
        if not srv.base:
            print("FAIL the server did not start: " + srv.log())
            srv.stop()
            return 1
        try:
            # warm-up: one request, then the idle state every round must return to
            httpx.post(srv.base + "/v1/completions", timeout=60,
                       json={"model": "soak", "prompt": "hi", "max_tokens": 2})
            time.sleep(1.0)
            pids = process_tree(srv.p.pid)
            idle = {p: nfds(p) for p in pids}
            print("processes: " + ", ".join(f"{p} ({name(p)})" for p in pids))
            print(f"idle fds: {idle}")
            per_round, lost_total = [], 0
            for r in range(1, ROUNDS + 1):
                t = time.time()
                res = asyncio.run(round_(srv.base, r))
                took = time.time() - t
                lost = [x[1] for x in res if x[0] == "lost"]
                disc = sum(x[0] == "disconnected" for x in res)
                lost_total += len(lost)
                fds = wait_fds(pids, idle)
                time.sleep(1.0)  # let the allocators settle before reading RSS
                snap = {p: rss_kib(p) for p in pids}
                per_round.append(snap)
                print(f"round {r}: {took:.1f} s, {CLIENTS - disc - len(lost)} done, {disc} "
                      f"disconnected, {len(lost)} lost{' e.g. ' + lost[0] if lost else ''}; "
                      f"rss KiB {snap}; fds {fds}", flush=True)
                print("    rss parts KiB " + "; ".join(f"{p}: {rss_parts(p)}" for p in pids),
                      flush=True)
                check(f"round {r}: nothing lost", not lost, f"{len(lost)}: {lost[:3]}")
                check(f"round {r}: every process's fds back to idle", fds == idle,
                      f"idle {idle} now {fds}")
            if ROUNDS >= 5:
                for p in pids:
                    a, b = per_round[2][p], per_round[4][p]
                    check(f"rss of {p} ({name(p)}) within 2% between rounds 3 and 5",
                          abs(b - a) <= 0.02 * a, f"{a} -> {b} KiB ({100.0 * (b - a) / a:+.2f}%)")
                    print(f"rss {p} ({name(p)}): " + " ".join(str(s[p]) for s in per_round)
                          + f" KiB; round 3 -> 5 {100.0 * (b - a) / a:+.2f}%")
            print(f"lost in all: {lost_total}; duration {time.time() - t_start:.1f} s")
        finally:
            rc = srv.stop()
        check("the server exits 0", rc == 0, f"status {rc}: {srv.log(800)}")
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
