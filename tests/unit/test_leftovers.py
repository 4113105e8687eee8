#!/usr/bin/env python3
"""What a crash, a client that never reads and a starved machine leave behind (issue 14, items 3,
5 and the start-up errors of 6), on `lantern serve` with a random tiny model:

- crash leftovers: kill -9 of the frontend leaves its /dev/shm segments and socket files (its
  children die with it); the next start removes them, and the planted files of a pid that no
  longer exists, but keeps a live process's files and names of another pattern; after it stops,
  /dev/shm and /tmp hold no lantern-* name of either tree, and nothing the run removed belonged
  to a live process;
- back-pressure: a raw socket that sends a streaming request (n 64, logprobs 20) and never reads
  gets its requests aborted once the output waiting for it passes
  --max-undelivered-bytes-per-request (and, on a second server, --max-undelivered-bytes): the
  lantern:undelivered_bytes gauge stays under the cap, the engine stops generating for it, a
  reading client is served meanwhile, the log names the request and the reason, and the never
  reading client, when it finally reads, gets finish_reason "error" and the reason;
- start-up errors: an open-file limit of 16 ends with a clean exit naming the limit and
  `ulimit -n` (a low soft limit under a high hard one is raised and the tree runs); a /dev/shm
  too small for the segments (a private tmpfs in a mount namespace) ends with a message naming
  /dev/shm and the size, not a SIGBUS; a port in use is named.
"""
import glob
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import ltcheck
from ltcheck import check, Server, tiny_model

BIN = os.environ["LANTERN_BIN"]
# the sockets go to /tmp, as the issue describes (the runtime directory is $XDG_RUNTIME_DIR)
os.environ.pop("XDG_RUNTIME_DIR", None)
NAME = re.compile(r"^lantern-(\d+)-[A-Za-z0-9._-]+$")


def ours():
    """lantern-<pid>-* names in /dev/shm and /tmp."""
    return set(glob.glob("/dev/shm/lantern-*") + glob.glob("/tmp/lantern-*"))


def pid_of(path):
    m = NAME.match(os.path.basename(path).removesuffix(".sock"))
    return int(m.group(1)) if m else None


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+(\S+)\s*$", text, re.M)
    return float(m.group(2)) if m else None


def get(base, path, timeout=10):
    with urllib.request.urlopen(base + path, timeout=timeout) as r:
        return r.read().decode()


def post(base, path, body, timeout=60):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def run_to_exit(args, timeout=90, **kw):
    """Runs a command that should exit on its own; (status, stderr), status None if it was still
    running after timeout s (then killed)."""
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, err
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return None, err


def unix_socket_file(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, as a crashed process's does


# ---- crash leftovers ----

def test_crash_leftovers(model):
    before = ours()
    srv = Server(model)
    pid1 = srv.p.pid
    if not check("leftovers: first server listens", srv.base, srv.log()):
        srv.stop()
        return
    mine = {p for p in ours() if pid_of(p) == pid1}
    check("leftovers: the tree's segments and sockets exist while it runs",
          f"/dev/shm/lantern-{pid1}-step" in mine and f"/dev/shm/lantern-{pid1}-metrics" in mine
          and any(p.endswith(".sock") for p in mine), sorted(mine))
    srv.p.send_signal(signal.SIGKILL)
    srv.p.wait()
    time.sleep(1.0)  # the engine and the workers die with it (parent-death signal)
    left = {p for p in ours() if pid_of(p) == pid1}
    check("leftovers: kill -9 of the frontend leaves its files (what the next start must remove)",
          left, "nothing left: the test would prove nothing")

    # planted: a dead pid's (removed), a live pid's and a foreign name (kept)
    dead = dead_pid()
    planted_dead = [f"/dev/shm/lantern-{dead}-step", f"/tmp/lantern-{dead}-input.sock"]
    planted_live = [f"/dev/shm/lantern-{os.getpid()}-leftovers-test",
                    f"/tmp/lantern-{os.getpid()}-leftovers-test.sock"]
    foreign = ["/dev/shm/lantern-x-leftovers-test", f"/tmp/lantern-{dead}-not-a-socket.sock"]
    for p in (planted_dead[0], planted_live[0], foreign[0], foreign[1]):
        open(p, "w").close()
    unix_socket_file(planted_dead[1])
    unix_socket_file(planted_live[1])
    try:
        srv2 = Server(model)
        pid2 = srv2.p.pid
        check("leftovers: second server listens", srv2.base, srv2.log())
        still = sorted(p for p in left | set(planted_dead) if os.path.exists(p))
        check("leftovers: the restart removed the crashed tree's files and a dead pid's", not still,
              still)
        kept = [p for p in planted_live + foreign if not os.path.exists(p)]
        check("leftovers: a live process's files and other names are kept", not kept,
              f"removed: {kept}")
        check("leftovers: each removal is logged",
              f"left behind by lantern process {pid1}" in "".join(srv2.lines), srv2.log())
        st = srv2.stop()
        check("leftovers: second server stops cleanly", st == 0, f"status {st}")
    finally:
        for p in planted_live + foreign + planted_dead:
            if os.path.exists(p):
                os.unlink(p)
    after = ours()
    remaining = sorted(p for p in after if pid_of(p) in (pid1, pid2, dead))
    check("leftovers: /dev/shm and /tmp hold nothing of either tree afterwards", not remaining,
          remaining)
    # other tests may run beside this one: what disappeared must be a dead process's
    gone_live = sorted(p for p in before - after if pid_of(p) and alive(pid_of(p)))
    check("leftovers: nothing of a live process was removed", not gone_live, gone_live)


# ---- back-pressure ----

def never_reader(base, n, max_tokens, rid):
    """A raw socket that sends a streaming request and does not read."""
    host, port = base.split("//")[1].rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    body = json.dumps({"prompt": "hello", "n": n, "max_tokens": max_tokens, "logprobs": 20,
                       "stream": True, "ignore_eos": True, "temperature": 1.0}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\n"
              + f"X-Request-Id: {rid}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return s


def read_all(s, timeout=60):
    s.settimeout(timeout)
    chunks = []
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            chunks.append(b)
    except socket.timeout:
        pass
    return b"".join(chunks)


def sse_events(raw):
    """The JSON events of a raw HTTP/1.1 response (bytes) with a chunked SSE body, and whether it
    ended with data: [DONE]."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        out, rest = [], body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            out.append(rest[:n])
            rest = rest[n + 2:]
        body = b"".join(out)
    events, done = [], False
    for line in body.decode(errors="replace").split("\n"):
        if line.startswith("data: "):
            if line == "data: [DONE]":
                done = True
            else:
                events.append(json.loads(line[6:]))
    return events, done


def watch(base, stop, seen):
    while not stop.is_set():
        try:
            t = get(base, "/metrics", timeout=5)
            v = metric(t, "lantern:undelivered_bytes")
            if v is not None:
                seen.append(v)
        except Exception:
            pass
        time.sleep(0.05)


def test_backpressure(model, label, flags, cap, flag_name):
    # room for a reading client beside the 64 choices that are not read
    srv = Server(model, "--max-num-seqs", "128", *flags)
    try:
        if not check(f"{label}: server listens", srv.base, srv.log()):
            return
        stop, seen = threading.Event(), []
        w = threading.Thread(target=watch, args=(srv.base, stop, seen), daemon=True)
        w.start()
        rid = "never-reads-" + label.replace(" ", "-")
        s = never_reader(srv.base, 64, 440, rid)
        # a reading client is served meanwhile
        served = None
        try:
            st, body = post(srv.base, "/v1/completions",
                            {"prompt": "hi", "max_tokens": 16, "ignore_eos": True})
            served = st == 200 and json.loads(body)["choices"][0]["finish_reason"] == "length"
        except Exception as e:  # noqa: BLE001
            served = e
        check(f"{label}: a reading client is served beside the one that does not read",
              served is True, served)
        deadline, aborts = time.time() + 90, None
        while time.time() < deadline:
            aborts = metric(get(srv.base, "/metrics"), "lantern:undelivered_aborts_total")
            if aborts:
                break
            time.sleep(0.2)
        check(f"{label}: the never-reading request is aborted (lantern:undelivered_aborts_total)",
              aborts == 1, f"{aborts}; {srv.log(800)}")
        time.sleep(1.0)
        t1 = get(srv.base, "/metrics")
        time.sleep(1.0)
        t2 = get(srv.base, "/metrics")
        stop.set()
        w.join(10)
        gen1 = metric(t1, "lantern:generation_tokens_total")
        gen2 = metric(t2, "lantern:generation_tokens_total")
        check(f"{label}: the engine stopped generating for it while its connection stays open",
              metric(t2, "lantern:num_requests_running") == 0 and gen1 == gen2
              and gen2 is not None and gen2 < 64 * 440,
              f"running {metric(t2, 'lantern:num_requests_running')}, tokens {gen1} -> {gen2}")
        check(f"{label}: lantern:undelivered_bytes stayed under the cap ({cap} bytes)",
              seen and max(seen) <= cap * 1.1,
              f"max {max(seen) if seen else None} over {len(seen)} scrapes")
        log = "".join(srv.lines)
        m = re.search(r"req=" + re.escape(rid) + r": output not read: (\d+) bytes.*" +
                      re.escape(flag_name), log)
        check(f"{label}: the log names the request, the backlog and the limit",
              m and cap // 2 < int(m.group(1)) <= cap + 64 * 1024, srv.log(800))
        text = read_all(s)
        s.close()
        try:
            events, done = sse_events(text)
        except ValueError as e:
            events, done = None, f"malformed: {e}"
        finishes = [c.get("finish_reason") for e in events or [] for c in e.get("choices", [])
                    if c.get("finish_reason")]
        errors = [e["error"]["message"] for e in events or [] if "error" in e]
        check(f"{label}: the client, reading at last, gets finish_reason error and the reason",
              done is True and len(finishes) == 64 and set(finishes) == {"error"} and len(errors) == 64
              and all("output not read" in m for m in errors),
              f"{len(events or [])} events, finishes {set(finishes)} x{len(finishes)}, "
              f"errors {errors[:1]}, done {done}: {text[-300:]!r}")
        st, body = post(srv.base, "/v1/completions", {"prompt": "hi", "max_tokens": 4})
        check(f"{label}: the server keeps serving", st == 200, body[:300])
        t = get(srv.base, "/metrics")
        check(f"{label}: nothing waits for a client once all are done",
              metric(t, "lantern:undelivered_bytes") == 0, metric(t, "lantern:undelivered_bytes"))
    finally:
        st = srv.stop()
        check(f"{label}: server stops cleanly", st == 0, f"status {st}")


# ---- start-up errors ----

def nofile(soft, hard):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_fd_limit(model):
    st, err = run_to_exit([BIN, "serve", model, "--port", "0"], preexec_fn=nofile(16, 16))
    check("ulimit -n 16: a clean error exit (a status, not a signal)", st is not None and st > 0,
          f"status {st}: {err[-600:]}")
    check("ulimit -n 16: the message names the open-file limit and `ulimit -n`",
          "RLIMIT_NOFILE" in err and "ulimit -n" in err and "is 16 " in err, err[-600:])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1024:
        print(f"note: hard open-file limit {hard}: the raise check is left out")
        return
    r = subprocess.run([BIN, "generate", "--model", model, "--prompt-ids", "1,2,3",
                        "--max-tokens", "4"], capture_output=True, text=True, timeout=120,
                       preexec_fn=nofile(16, hard))
    check("soft limit 16 under a high hard limit: raised, and the tree runs",
          r.returncode == 0 and "raised the open-file limit" in r.stderr
          and len(r.stdout.strip().split(",")) == 4, f"status {r.returncode}: {r.stderr[-600:]}")


def test_shm_full(model):
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"note: no mount namespace here ({probe.stderr.strip()}): /dev/shm checks left out")
        return
    for size in ("16k", "1m"):
        script = f'mount -t tmpfs -o size={size} tmpfs /dev/shm && exec "$0" "$@"'
        st, err = run_to_exit(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script, BIN, "serve", model, "--port", "0"])
        check(f"/dev/shm of {size}: a clean error exit (a status, not a signal)",
              st is not None and st > 0, f"status {st}: {err[-600:]}")
        check(f"/dev/shm of {size}: the message names /dev/shm and the size",
              re.search(r"cannot reserve \d+ bytes in /dev/shm", err), err[-600:])


def test_port_in_use(model):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
            st, err = run_to_exit([BIN, "serve", model, "--port", str(port)], timeout=60)
    finally:
        s.close()
    check("port in use: a clean error exit naming the address and the cause",
          st is not None and st > 0 and f"127.0.0.1:{port}" in err and "in use" in err,
          f"status {st}: {err[-600:]}")
    # another lantern on the same port: refused too, not sharing the port (SO_REUSEPORT)
    srv = Server(model)
    try:
        if check("port in use: a first server listens", srv.base, srv.log()):
            st, err = run_to_exit([BIN, "serve", model, "--port", str(srv.port)], timeout=60)
            check("port in use by another lantern serve: refused, naming the cause",
                  st is not None and st > 0 and "in use" in err, f"status {st}: {err[-600:]}")
    finally:
        srv.stop()


def main():
    r = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    check("serve --help lists the output limits",
          "--max-undelivered-bytes-per-request " in r.stdout
          and "--max-undelivered-bytes " in r.stdout, r.stdout[-800:])
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(tmp)
        test_fd_limit(model)
        test_shm_full(model)
        test_port_in_use(model)
        test_crash_leftovers(model)
        test_backpressure(model, "per request",
                          ["--max-undelivered-bytes-per-request", "1M",
                           "--max-undelivered-bytes", "0"],
                          1 << 20, "--max-undelivered-bytes-per-request")
        test_backpressure(model, "across requests",
                          ["--max-undelivered-bytes-per-request", "0",
                           "--max-undelivered-bytes", "2M"],
                          2 << 20, "--max-undelivered-bytes)")
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
