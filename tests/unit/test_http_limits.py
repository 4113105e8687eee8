#!/usr/bin/env python3
"""`lantern serve`'s connection management and HTTP framing, on the random tiny model (fast).

Server A (the default connection limit, 1000; --http-header-timeout 4, --http-idle-timeout 4):
- flood: 1,100 connections held open from 127.0.0.1, 600 silent and 500 sending a never-ending
  header one byte a second; the server keeps at most 1000 (the oldest beyond are closed to make
  room) and a normal client's /health and completions are each answered within 1 s while they
  are open; the server closes every one of them by the header timeout, the slow ones too though
  they keep sending.
Server B (--http-header-timeout 3, --http-idle-timeout 2, --http-max-connections 8,
--http-max-connections-per-ip 4):
- timeouts: a keep-alive connection is closed after the idle timeout, a stalled body after the
  header timeout; a stream whose engine is paused (SIGSTOP) longer than both, before its first
  token and again mid-stream, still completes with [DONE];
- per-address cap: with 4 requests in progress from 127.0.0.2, a 5th connection from there is
  answered 429 with Retry-After at once while 127.0.0.3 is served; 4 silent connections from
  127.0.0.4 do not lock that address out (the oldest is closed for its request);
- full: with 8 requests in progress, a new client is answered 503 with Retry-After within 1 s,
  and served again once they end;
- framing (RFC 9112): Content-Length with Transfer-Encoding, two Content-Lengths (different and
  equal), Transfer-Encoding gzip,chunked (501), chunked,identity, chunked twice, 'chunked ' with
  a trailing space, a space before the colon, chunked in HTTP/1.0 are each answered once
  (400/501, error JSON, Connection: close) and the connection closed; the request hidden in
  the body is never executed (no second status line, and its X-Request-Id never reaches the
  log, which a control request shows it would); a valid chunked request still works.
Also: every option of serve's own table is in `lantern serve --help`.
The test raises its RLIMIT_NOFILE (inherited by the servers) to hold the flood: the server needs
`ulimit -n` of about 1.25 x --http-max-connections + 300, and raises its own soft limit to that.
"""
import http.client
import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import ltcheck
from ltcheck import check, Server, tiny_model

BIN = os.environ["LANTERN_BIN"]
N_SILENT, N_SLOW = 600, 500


# ---- helpers ----

def request(port, method, path, body=None, src="127.0.0.1", headers=None, timeout=5):
    """One request on a new connection from address src: (status, headers, body text, seconds);
    status None when it failed or timed out."""
    t0 = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(src, 0))
    try:
        hd = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hd["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hd)
        r = conn.getresponse()
        text = r.read().decode(errors="replace")
        return r.status, {k.lower(): v for k, v in r.getheaders()}, text, time.time() - t0
    except (OSError, http.client.HTTPException) as e:
        return None, {}, repr(e), time.time() - t0
    finally:
        conn.close()


def connect(port, src="127.0.0.1"):
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))


def is_closed(sock):
    """True when the server closed (or reset) the connection; data it sent is drained. Leaves the
    socket non-blocking."""
    sock.setblocking(False)
    try:
        while True:
            if sock.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def read_all(sock, timeout):
    """Everything the server sends until it closes: (bytes, closed?)."""
    sock.setblocking(False)
    poller = select.poll()  # not select(): the flood's descriptors go past FD_SETSIZE
    poller.register(sock, select.POLLIN)
    out, end = b"", time.time() + timeout
    while time.time() < end:
        if not poller.poll(max(0, int((end - time.time()) * 1000))):
            break
        try:
            d = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            return out, True
        if not d:
            return out, True
        out += d
    return out, False


def engine_pid(srv):
    r = subprocess.run(["ps", "--ppid", str(srv.p.pid), "-o", "pid=,args="], capture_output=True,
                       text=True)
    kids = [line.split(None, 1) for line in r.stdout.strip().splitlines()]
    engine = [int(k[0]) for k in kids if len(k) == 2 and "__engine" in k[1]]
    return engine[0] if engine else None


def served(port, label, limit=1.0):
    st, _, text, dt = request(port, "GET", "/health", timeout=5)
    st2, _, text2, dt2 = request(port, "POST", "/v1/completions",
                                 {"prompt": "hello", "max_tokens": 4}, timeout=5)
    check(f"{label}: /health and a completion answered 200 within {limit} s",
          st == 200 and st2 == 200 and dt < limit and dt2 < limit,
          f"health {st} in {dt:.2f} s, completion {st2} in {dt2:.2f} s {text2[:200]!r}")


def error_code(text):
    try:
        return json.loads(text)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


# ---- server A: the flood ----

def test_flood(srv):
    port = srv.port
    t0 = time.time()
    silent, slow = [], []
    try:
        for i in range(N_SILENT + N_SLOW):
            s = connect(port)
            if i % 11 < 5 and len(slow) < N_SLOW:  # interleaved, so both kinds get evicted
                s.sendall(b"G")
                slow.append(s)
            else:
                silent.append(s)
    except OSError as e:
        check("flood: 1,100 connections open", False, f"after {len(silent) + len(slow)}: {e!r}")
        return
    prefix = b"ET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
    stop = threading.Event()
    live_slow = set(range(len(slow)))

    def trickle():  # one byte a second on every slow connection, the header never ending
        k = 0
        while not stop.wait(1.0):
            for i in list(live_slow):
                try:
                    slow[i].send(prefix[k:k + 1] if k < len(prefix) else b"a")
                except OSError:
                    live_slow.discard(i)
            k += 1
    th = threading.Thread(target=trickle, daemon=True)
    th.start()
    t_open = time.time() - t0
    time.sleep(0.5)
    everyone = silent + slow
    n_closed = sum(is_closed(s) for s in everyone)
    check(f"flood: {len(everyone)} connections opened in {t_open:.2f} s; the server keeps at most "
          "1000 (the oldest beyond are closed to make room)",
          len(everyone) - n_closed <= 1000 + 4 and n_closed <= len(everyone) - 900,
          f"{n_closed} closed by the server")
    # a normal client, while the flood is held open
    times = []
    for k in range(3):
        st, _, text, dt = request(port, "GET", "/health", timeout=3)
        st2, _, text2, dt2 = request(port, "POST", "/v1/completions",
                                     {"prompt": "hello", "max_tokens": 4}, timeout=3)
        times += [dt, dt2]
        if st != 200 or st2 != 200 or dt >= 1 or dt2 >= 1:
            break
    within = time.time() - t0
    print(f"     flood: {n_closed} closed to make room; the normal client's times "
          f"{[round(t, 3) for t in times]} s, done {within:.2f} s after the flood began")
    check("flood: a normal client's /health and completions (3 each) are answered 200 within 1 s "
          "each while the flood is open",
          st == 200 and st2 == 200 and len(times) == 6 and max(times) < 1.0 and within < 4.0,
          f"health {st}, completion {st2} {text2[:160]!r}; times {[round(t, 2) for t in times]}, "
          f"{within:.1f} s after the flood began")
    still = sum(not is_closed(s) for s in everyone)
    check("flood: still held open during those requests (not yet timed out)",
          still >= 800, f"{still} open")
    # every one of them is closed by the header timeout (4 s), the slow ones though they trickle
    deadline = t0 + 4 + 3.0
    while time.time() < deadline:
        if all(is_closed(s) for s in everyone):
            break
        time.sleep(0.25)
    open_silent = sum(not is_closed(s) for s in silent)
    open_slow = sum(not is_closed(s) for s in slow)
    print(f"     flood: all closed {time.time() - t0:.2f} s after the flood began")
    check("flood: the header timeout closes every silent and every slow connection (4 s, slow "
          "ones still sending a byte a second)", open_silent == 0 and open_slow == 0,
          f"{open_silent} silent and {open_slow} slow still open {time.time() - t0:.1f} s after "
          "they connected")
    stop.set()
    th.join(3)
    for s in everyone:
        s.close()
    served(port, "flood: after the flood")
    st, _, text, _ = request(port, "GET", "/metrics")
    shed = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^lantern:http_connections_shed_total\{[^}]*reason="(\w+)"[^}]*\} (\S+)$', text, re.M)}
    # the slow ones are ours to close (each byte restarts MHD's inactivity timeout); silent ones
    # may go by MHD's own timeout, at the same instant
    check("flood: /metrics counts the connections evicted (>= 99) and closed past the header "
          "timeout (>= 400)", shed.get("evicted", 0) >= 99 and shed.get("header_timeout", 0) >= 400
          and re.search(r'^lantern:http_connections\{[^}]*phase="headers"', text, re.M),
          f"{st} {shed}")


# ---- server B: timeouts ----

def test_timeouts(srv):
    port = srv.port
    # a keep-alive connection after its response
    ka = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    ka.request("GET", "/health")
    r = ka.getresponse()
    r.read()
    ok = r.status == 200 and not r.will_close
    t_resp = time.time()
    # a body that stalls, and headers that never end though they trickle
    stall = connect(port)
    stall.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"prompt\"")
    slow = connect(port)
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    t_slow = time.time()
    closed_ka = closed_stall = closed_slow = None
    while time.time() < t_slow + 6:
        now = time.time()
        if closed_ka is None and is_closed(ka.sock):
            closed_ka = now - t_resp
        if closed_stall is None and is_closed(stall):
            closed_stall = now - t_slow
        if closed_slow is None and is_closed(slow):
            closed_slow = now - t_slow
        if None not in (closed_ka, closed_stall, closed_slow):
            break
        if closed_slow is None:
            try:
                slow.send(b"a")
            except OSError:
                closed_slow = time.time() - t_slow
        time.sleep(0.25)
    print(f"     timeouts: keep-alive closed after {closed_ka}, stalled body after {closed_stall}, "
          f"slow headers after {closed_slow} s")
    check("timeouts: a keep-alive connection is closed after --http-idle-timeout (2 s)",
          ok and closed_ka is not None and 1.5 <= closed_ka <= 3.5, f"closed after {closed_ka}")
    check("timeouts: a stalled body is closed after --http-header-timeout (3 s)",
          closed_stall is not None and 2.5 <= closed_stall <= 4.5, f"closed after {closed_stall}")
    check("timeouts: headers trickling 4 bytes a second are closed after --http-header-timeout",
          closed_slow is not None and 2.5 <= closed_slow <= 4.5, f"closed after {closed_slow}")
    for s in (stall, slow):
        s.close()
    ka.close()


def test_paused_stream(srv):
    """A stream waits for its engine (stopped) longer than both timeouts, twice."""
    pid = engine_pid(srv)
    check("stream: the engine is a child of the server", pid is not None, "")
    if pid is None:
        return
    body = json.dumps({"prompt": "hello", "max_tokens": 300, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    s = connect(srv.port)
    os.kill(pid, signal.SIGSTOP)
    try:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        first, _ = read_all(s, 3.5)  # longer than both timeouts, with no token
    finally:
        os.kill(pid, signal.SIGCONT)
    s.setblocking(True)
    s.settimeout(10)
    got = b""
    while b"data: " not in got:
        d = s.recv(65536)
        if not d:
            break
        got += d
    os.kill(pid, signal.SIGSTOP)  # again, mid-stream
    try:
        more, closed_mid = read_all(s, 3.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    rest, closed = read_all(s, 20)
    text = (first + got + more + rest).decode(errors="replace")
    print(f"     stream: {(first + got).count(b'data: {')} chunks before the second pause, "
          f"{more.count(b'data: {')} during it, {rest.count(b'data: {')} after")
    m = re.search(r'"completion_tokens":\s*(\d+)', text)
    n_tokens = int(m.group(1)) if m else None
    check("stream: paused in the engine 3.5 s before its first token and again mid-stream (both "
          "timeouts are shorter), it completes: 200, all 300 tokens, [DONE]",
          text.startswith("HTTP/1.1 200") and "data: [DONE]" in text and n_tokens == 300 and
          not closed_mid and '"error"' not in text,
          f"{n_tokens} tokens, closed mid-pause {closed_mid}: {text[:300]!r} ... {text[-300:]!r}")
    s.close()


# ---- server B: caps ----

class Trickle:
    """Requests in progress: headers in, a 1000-byte body sent a byte every 0.5 s."""

    def __init__(self, port, src, n):
        self.socks = []
        for _ in range(n):
            s = connect(port, src)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            self.socks.append(s)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.wait(0.5):
            for s in self.socks:
                try:
                    s.send(b" ")
                except OSError:
                    pass

    def open_count(self):
        return sum(not is_closed(s) for s in self.socks)

    def close(self):
        self.stop.set()
        self.t.join(2)
        for s in self.socks:
            s.close()


def test_caps(srv):
    port = srv.port
    busy = Trickle(port, "127.0.0.2", 4)
    time.sleep(0.3)
    st, hd, text, dt = request(port, "GET", "/health", src="127.0.0.2", timeout=3)
    check("per-address cap: a 5th connection from an address with 4 requests in progress is "
          "answered 429 too_many_connections with Retry-After, at once",
          st == 429 and hd.get("retry-after") == "1" and
          error_code(text) == "too_many_connections" and dt < 1.0,
          f"{st} {hd} {text[:200]!r} in {dt:.2f} s")
    st, _, text, dt = request(port, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 3},
                              src="127.0.0.3", timeout=3)
    check("per-address cap: another address is served meanwhile", st == 200 and dt < 1.0,
          f"{st} {text[:200]!r} in {dt:.2f} s")
    # silent connections do not lock their address out: the oldest makes room
    idle = [connect(port, "127.0.0.4") for _ in range(4)]
    time.sleep(0.2)
    st, _, text, dt = request(port, "GET", "/health", src="127.0.0.4", timeout=3)
    n_closed = sum(is_closed(s) for s in idle)
    check("per-address cap: 4 silent connections from an address; its next request is served, "
          "one silent connection closed for it", st == 200 and dt < 1.0 and n_closed == 1,
          f"{st} in {dt:.2f} s, {n_closed} silent ones closed")
    for s in idle:
        s.close()
    # the server must have seen those close (and the earlier requests' connections) before the
    # next four arrive, or on a loaded machine it may still count them, find itself full and make
    # room by evicting the oldest connection whose headers it has not parsed yet: one of busy2's
    time.sleep(1.0)
    # full: 8 requests in progress (--http-max-connections 8)
    busy2 = Trickle(port, "127.0.0.5", 4)
    time.sleep(0.5)
    st, hd, text, dt = request(port, "GET", "/health", src="127.0.0.6", timeout=3)
    check("full: with 8 requests in progress a new client is answered 503 server_full with "
          "Retry-After within 1 s",
          st == 503 and hd.get("retry-after") == "1" and error_code(text) == "server_full" and
          dt < 1.0, f"{st} {hd} {text[:200]!r} in {dt:.2f} s")
    check("caps: the 8 requests in progress were never cut",
          busy.open_count() == 4 and busy2.open_count() == 4,
          f"{busy.open_count()} + {busy2.open_count()} open")
    busy.close()
    busy2.close()
    time.sleep(0.3)
    served(port, "full: once they end")


# ---- server B: framing ----

HIDDEN = "GET /v1/smuggled HTTP/1.1\r\nHost: x\r\nX-Request-Id: {rid}\r\n\r\n"


def framing_cases():
    """(label, raw request, expected status, the hidden request's id)."""
    cases = []

    def post(headers, body, version="HTTP/1.1"):
        return (f"POST /v1/completions {version}\r\nHost: x\r\nContent-Type: application/json\r\n"
                + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + body

    rid = "smuggled-cl-te"
    body = b"0\r\n\r\n" + HIDDEN.format(rid=rid).encode()
    cases.append(("Content-Length with Transfer-Encoding: chunked",
                  post([f"Content-Length: {len(body)}", "Transfer-Encoding: chunked"], body),
                  400, rid))
    rid = "smuggled-te-cl"
    body = b"0\r\n\r\n" + HIDDEN.format(rid=rid).encode()
    cases.append(("Transfer-Encoding: chunked, then Content-Length",
                  post(["Transfer-Encoding: chunked", f"Content-Length: {len(body)}"], body),
                  400, rid))
    rid = "smuggled-two-cl"
    body = HIDDEN.format(rid=rid).encode()
    cases.append(("two different Content-Lengths (0, then the hidden request's length)",
                  post(["Content-Length: 0", f"Content-Length: {len(body)}"], body), 400, rid))
    rid = "smuggled-same-cl"
    body = b"{}" + HIDDEN.format(rid=rid).encode()
    cases.append(("two equal Content-Lengths", post(["Content-Length: 2", "Content-Length: 2"],
                                                    body), 400, rid))
    rid = "smuggled-gzip"
    body = b"0\r\n\r\n" + HIDDEN.format(rid=rid).encode()
    cases.append(("Transfer-Encoding: gzip, chunked", post(["Transfer-Encoding: gzip, chunked"],
                                                           body), 501, rid))
    rid = "smuggled-identity"
    body = b"0\r\n\r\n" + HIDDEN.format(rid=rid).encode()
    cases.append(("Transfer-Encoding: chunked, identity",
                  post(["Transfer-Encoding: chunked, identity"], body), 400, rid))
    rid = "smuggled-twice"
    body = b"0\r\n\r\n" + HIDDEN.format(rid=rid).encode()
    cases.append(("Transfer-Encoding: chunked twice",
                  post(["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], body), 400,
                  rid))
    rid = "smuggled-te-space"
    body = b"0\r\n\r\n" + HIDDEN.format(rid=rid).encode()
    cases.append(("'Transfer-Encoding: chunked ' (a trailing space libmicrohttpd keeps)",
                  post(["Transfer-Encoding: chunked "], body), 400, rid))
    rid = "smuggled-name-space"
    body = b"0\r\n\r\n" + HIDDEN.format(rid=rid).encode()
    cases.append(("'Transfer-Encoding : chunked' (whitespace before the colon) with "
                  "Content-Length", post(["Transfer-Encoding : chunked",
                                          f"Content-Length: {len(body)}"], body), 400, rid))
    rid = "smuggled-http10"
    body = b"0\r\n\r\n" + HIDDEN.format(rid=rid).encode()
    cases.append(("Transfer-Encoding: chunked in HTTP/1.0",
                  post(["Transfer-Encoding: chunked"], body, "HTTP/1.0"), 400, rid))
    return cases


def test_framing(srv):
    port = srv.port
    # control: the hidden request, sent openly, reaches the log under its id
    s = connect(port)
    s.sendall(HIDDEN.format(rid="control-visible").encode())
    out, _ = read_all(s, 2)
    s.close()
    time.sleep(0.3)
    check("framing: control: the hidden request sent openly is answered 404 and logged with its "
          "id", out.startswith(b"HTTP/1.1 404") and "req=control-visible" in "".join(srv.lines),
          f"{out[:100]!r}; log {srv.log(400)}")
    for label, raw, status, rid in framing_cases():
        s = connect(port)
        s.sendall(raw)
        out, closed = read_all(s, 3)
        s.close()
        text = out.decode(errors="replace")
        statuses = re.findall(r"HTTP/1\.[01] (\d{3})", text)
        head, _, body = text.partition("\r\n\r\n")
        code = error_code(body)
        check(f"framing: {label}: one answer, {status} ({code}), Connection: close, then closed",
              statuses == [str(status)] and closed and
              re.search(r"(?im)^connection: close", head) is not None and
              code in ("bad_framing", "unsupported_transfer_coding"),
              f"statuses {statuses}, closed {closed}: {text[:400]!r}")
        time.sleep(0.2)
        check(f"framing: {label}: the hidden request was never executed",
              f"req={rid}" not in "".join(srv.lines), srv.log(400))
    # a valid chunked request still works
    body = json.dumps({"prompt": "hello", "max_tokens": 3}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    s = connect(port)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
    out, _ = read_all(s, 5)
    s.close()
    check("framing: a valid chunked request is answered 200", out.startswith(b"HTTP/1.1 200"),
          repr(out[:300]))
    served(port, "framing: afterwards")


def test_help():
    src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "frontend",
                            "http", "serve.c")).read()
    table = src[src.index("static const struct option own[]"):]
    names = re.findall(r'\{"([a-z-]+)",', table[:table.index("};")])
    r = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    missing = [n for n in names if f"--{n} " not in r.stdout]
    check(f"serve --help lists all {len(names)} of serve's own options",
          len(names) >= 12 and not missing, f"missing {missing}")


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 1600:
        check("RLIMIT_NOFILE can hold the flood (test and server)", False,
              f"hard limit {hard}: raise it to 4096")
        return ltcheck.summary()
    t0 = time.time()
    test_help()
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(tmp)
        for label, args, tests in [
            ("A", ["--http-header-timeout", "4", "--http-idle-timeout", "4"], [test_flood]),
            ("B", ["--http-header-timeout", "3", "--http-idle-timeout", "2",
                   "--http-max-connections", "8", "--http-max-connections-per-ip", "4"],
             [test_timeouts, test_caps, test_framing, test_paused_stream]),
        ]:
            srv = Server(model, "--threads", "1", *args, wait=120)
            if not srv.base:
                check(f"server {label} starts", False, srv.log())
                srv.stop()
                continue
            try:
                for fn in tests:
                    try:
                        fn(srv)
                    except Exception as e:  # noqa: BLE001 - one section's crash must not hide the rest
                        check(f"{fn.__name__}: ran without an exception", False,
                              f"{e!r} {srv.log(600)}")
            finally:
                rc = srv.stop()
            check(f"server {label}: SIGTERM exits 0", rc == 0, f"status {rc}: {srv.log(600)}")
    print(f"     (total {time.time() - t0:.1f} s)")
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
