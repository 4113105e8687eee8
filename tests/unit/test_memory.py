#!/usr/bin/env python3
"""The worker keeps weights in their stored type, in the mapped model file (issue: no fp32 copies).

`lantern serve` on the default model (tensor-parallel size 1 and 2); after a few requests, each
worker's memory (from /proc/<pid>/status) is checked:
- anonymous memory (RssAnon) stays under the KV cache it has touched plus its scratch and a
  fixed allowance for the process itself; the build before this change held ~610 MiB of fp32
  weight copies here;
- file-backed memory (RssFile) is at most the model file plus the executable and its libraries;
- at TP 3 every rank maps the same file, and the copies of the row-parallel slices (o_proj and
  down_proj, half of those matrices each) stay under their share of the file;
- no process of the tree (frontend, engine, workers) maps libcurl (no spans are exported) or
  OpenBLAS, and the engine and workers run lantern-core, without the HTTP server's libraries.
Prints every figure. Skips when the default model is absent.
"""
import os
import re
import sys

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from ltcheck import Server, check, default_model, process_tree, summary  # noqa: E402

MiB = 1 << 20
PROCESS_ALLOWANCE = 48 * MiB  # libraries' data, OpenMP/ZeroMQ threads' stacks, the heap
LIBS_FILE = 48 * MiB          # the executable and its shared libraries, mapped


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                out[k] = int(v.split()[0]) * 1024
    return out


def mapped_libs(pid):
    with open(f"/proc/{pid}/maps") as f:
        return {os.path.basename(line.split()[5]) for line in f if len(line.split()) > 5}


def run(model, tp):
    srv = Server(model, "--tensor-parallel-size", str(tp), "--threads", "1",
                 "--max-num-batched-tokens", "512", "--kv-cache-memory", "256M")
    try:
        if not check(f"TP {tp}: server starts", srv.base, srv.log()):
            return
        prompt = "The old lighthouse stood at the end of a narrow spit of rock. " * 8
        for i in range(3):
            r = httpx.post(srv.base + "/v1/completions",
                           json={"prompt": prompt + str(i), "max_tokens": 16}, timeout=300)
            check(f"TP {tp}: completion {i}", r.status_code == 200, r.text[:200])
        log = "".join(srv.lines)
        pids = {int(m.group(1)): int(m.group(2))
                for m in re.finditer(r"worker\[(\d+)\] pid=(\d+) ready", log)}
        copied = [float(x) for x in re.findall(r"MiB in their stored type \(([\d.]+) MiB copied\)",
                                               log)]
        if not check(f"TP {tp}: every worker logged ready", len(pids) == tp, log[-1500:]):
            return
        size = os.path.getsize(model)
        # KV the requests touched: ~130 tokens each, fp16, 30 layers x 3 KV heads x 64 x 2 (K, V)
        # x 2 bytes = 23 KB per token, split across ranks; scratch for 512-token steps
        kv_touched = 3 * 160 * 23040 // tp
        scratch = 512 * (576 * 6 + 1536 * 2 // tp) * 4 + 32 * 49152 * 4
        for rank, pid in sorted(pids.items()):
            st = status(pid)
            anon, file_ = st["RssAnon"], st["RssFile"]
            print(f"TP {tp} rank {rank}: RssAnon {anon / MiB:.1f} MiB, RssFile {file_ / MiB:.1f} "
                  f"MiB (model file {size / MiB:.1f} MiB, copied {copied[rank]:.1f} MiB)")
            check(f"TP {tp} rank {rank}: anonymous memory under KV + scratch + "
                  f"{PROCESS_ALLOWANCE // MiB} MiB (no weight copies)",
                  anon <= kv_touched + scratch + PROCESS_ALLOWANCE + copied[rank] * MiB,
                  f"{anon / MiB:.1f} MiB")
            check(f"TP {tp} rank {rank}: file-backed memory at most the model file + "
                  f"{LIBS_FILE // MiB} MiB", file_ <= size + LIBS_FILE, f"{file_ / MiB:.1f} MiB")
            check(f"TP {tp} rank {rank}: copies (row-parallel slices) under 1/{tp} of the file",
                  copied[rank] * MiB <= size / tp, f"{copied[rank]} MiB")
        # a tree that exports no spans never loads libcurl (and its TLS, Kerberos, LDAP, SSH
        # stack), and OpenBLAS is no part of lantern: each cost ~2.5 MiB resident per process
        for pid in process_tree(srv.p.pid):
            libs = mapped_libs(pid)
            unwanted = sorted(x for x in libs if x.startswith(("libcurl", "libopenblas")))
            check(f"TP {tp} pid {pid}: neither libcurl nor OpenBLAS mapped without tracing",
                  not unwanted, f"{unwanted}")
            if pid == srv.p.pid:
                continue
            # the engine and the workers run lantern-core: no HTTP server, no TLS stack
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            http = sorted(x for x in libs if x.startswith(("libmicrohttpd", "libgnutls")))
            check(f"TP {tp} pid {pid}: runs lantern-core, without libmicrohttpd or GnuTLS",
                  exe == "lantern-core" and not http, f"{exe}, {http}")
    finally:
        srv.stop()


def main():
    model = default_model()
    if not model:
        print("default model absent: skipped")
        return summary(skipped=True)
    for tp in (1, 3):
        run(model, tp)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
