#!/usr/bin/env python3
"""The OTLP exporter against real receivers, both protocols (fast; runs under ASan).

tests/otlp_send (tests/unit/otlp_send.c) sends deterministic spans through the batch span
processor and the OTLP exporter, configured by the OTEL_* variables as a lantern process is, and
prints each span it sent as JSON plus its counters at the end. The receivers here are built from
the registries' packages:
- gRPC: a grpcio server with opentelemetry-proto's TraceServiceServicer (the official stubs);
- http/protobuf: http.server decoding opentelemetry-proto's ExportTraceServiceRequest;
- TLS for both (https://, a self-signed certificate made with openssl, trusted through
  OTEL_EXPORTER_OTLP_CERTIFICATE), when the openssl command is there.
Checked:
- every field of every span arrives as sent (ids, parent, flags, name, kind, times, attributes
  with their value kinds, events, links, status, dropped counts), the resource and the scope,
  the configured headers (percent-decoded) and the batch size limit, for both protocols and for
  the base (OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces) and full URL forms;
- a partial success is logged with the rejected count and the receiver's message;
- a receiver answering UNAVAILABLE / 503, then 429 with Retry-After: 1, then OK is retried (the
  Retry-After wait honoured) and the spans are exported once; INVALID_ARGUMENT / 400 is not
  retried and the spans count as failed;
- a black-holing receiver (accepts TCP, never answers) and a dead port: exports fail within the
  export timeout, the counters say so (failed, dropped, requests, retries), shutdown keeps its
  deadline, and submitting never waits (every submit timed).
"""
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ltcheck
from ltcheck import check

try:
    from otlp_receivers import (BlackHole, GrpcReceiver, HttpReceiver, dead_port, span_dict,
                                attrs)
    import grpc
except ImportError as e:  # the environment predates tools/requirements.txt's grpcio/otel-proto
    print(f"skip: {e} (run tools/setup.sh)")
    sys.exit(77)

SENDER = os.path.join(os.environ.get("LANTERN_BUILD_DIR", "build"), "tests", "otlp_send")
HEADERS = "X-Api-Key=s3cr%2Ct%20value,x-tenant=t1"  # a percent-encoded value
HEADERS_WANT = {"x-api-key": "s3cr,t value", "x-tenant": "t1"}


# ---- the sender ----

def send(env_extra, n, endpoint=None, interval_us=0, flush_ms=5000, destroy_ms=5000):
    """Runs otlp_send; returns (spans it sent, its summary, its stderr, its pid, wall seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(env_extra)
    args = [SENDER, "--spans", str(n), "--interval-us", str(interval_us),
            "--flush-ms", str(flush_ms), "--destroy-ms", str(destroy_ms)]
    if endpoint:
        args += ["--endpoint", endpoint]
    t0 = time.monotonic()
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    if p.returncode != 0:
        print(f"otlp_send exited {p.returncode}:\n{err}")
    sent, summary = [], None
    for line in out.splitlines():
        obj = json.loads(line)
        if "span" in obj:
            sent.append(obj["span"])
        else:
            summary = obj["summary"]
    return sent, summary or {}, err, p.pid, took


def check_arrived(label, rec, sent, pid, batch_max):
    got = [span_dict(s) for s in rec.spans()]
    by_id = {s["span_id"]: s for s in got}
    check(f"{label}: every span arrived once", len(got) == len(sent) == len(by_id),
          f"sent {len(sent)}, received {len(got)} ({len(by_id)} distinct)")
    bad = [(s, by_id.get(s["span_id"])) for s in sent if by_id.get(s["span_id"]) != s]
    check(f"{label}: every field as sent", not bad,
          f"{len(bad)} differ; first: sent {bad[0][0]}\n received {bad[0][1]}" if bad else "")
    sizes = [sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
             for _, req, _, _ in rec.calls]
    check(f"{label}: batches of at most {batch_max}", sizes and max(sizes) <= batch_max, sizes)
    rs = rec.calls[0][1].resource_spans[0]
    check(f"{label}: resource", attrs(rs.resource.attributes) == {
        "service.name": "otlp_send", "process.pid": f"int:{pid}", "lantern.process.role": "test"},
        attrs(rs.resource.attributes))
    scope = rs.scope_spans[0].scope
    check(f"{label}: scope lantern <version>",
          scope.name == "lantern" and re.fullmatch(r"\d+\.\d+\.\d+.*", scope.version), scope)
    hdrs = rec.calls[0][2]
    check(f"{label}: configured headers, percent-decoded",
          all(hdrs.get(k) == v for k, v in HEADERS_WANT.items()), hdrs)
    check(f"{label}: user-agent names lantern", "lantern/" in hdrs.get("user-agent", ""), hdrs)


def check_counters(label, summ, **want):
    final = summ.get("final", {})
    diff = {k: (final.get(k), v) for k, v in want.items() if final.get(k) != v}
    check(f"{label}: counters {want}", not diff, f"(got, want): {diff}; summary {summ}")


# ---- scenarios ----

BASE_ENV = {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8", "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": HEADERS, "OTEL_EXPORTER_OTLP_TIMEOUT": "5000"}


def grpc_fields():
    rec = GrpcReceiver([("partial", 2, "too old: 2 spans"), "ok"])
    try:
        sent, summ, err, pid, _ = send(dict(BASE_ENV), 20, f"http://127.0.0.1:{rec.port}")
        check_arrived("grpc", rec, sent, pid, 8)
        check_counters("grpc", summ, exported=20, failed=0, dropped=0, retries=0,
                       requests=len(rec.calls), queued=0)
        check("grpc: the submitter got every span back", summ.get("released") == 20, summ)
        check("grpc: partial success logged with the count and message",
              re.search(r"partial success: 2 of \d+ spans rejected: too old: 2 spans", err), err)
    finally:
        rec.close()


def grpc_retry():
    rec = GrpcReceiver([("fail", grpc.StatusCode.UNAVAILABLE, "warming up"), "ok"])
    try:
        env = dict(BASE_ENV, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc",
                   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{rec.port}",
                   OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16")
        sent, summ, err, _, _ = send(env, 5)
        check("grpc UNAVAILABLE then OK: retried", len(rec.calls) == 2, len(rec.calls))
        check("grpc retry: the same spans both times",
              len(rec.calls) == 2 and rec.calls[0][1] == rec.calls[1][1])
        check_counters("grpc retry", summ, exported=5, failed=0, requests=2, retries=1)
    finally:
        rec.close()
    rec = GrpcReceiver([("fail", grpc.StatusCode.INVALID_ARGUMENT, "bad data: 100% wrong")])
    try:
        env = dict(BASE_ENV, OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16")
        sent, summ, err, _, _ = send(env, 5, f"http://127.0.0.1:{rec.port}")
        check("grpc INVALID_ARGUMENT: not retried", len(rec.calls) == 1, len(rec.calls))
        check_counters("grpc INVALID_ARGUMENT", summ, exported=0, failed=5, requests=1, retries=0)
        check("grpc INVALID_ARGUMENT: logged with grpc-message decoded",
              "grpc-status 3: bad data: 100% wrong" in err, err)
    finally:
        rec.close()


def http_fields():
    rec = HttpReceiver([("partial", 1, "one too many"), "ok"])
    try:
        env = dict(BASE_ENV, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{rec.port}/")
        sent, summ, err, pid, _ = send(env, 20)
        check_arrived("http", rec, sent, pid, 8)
        check("http: POST /v1/traces (base endpoint + /v1/traces)",
              all(c[3] == "/v1/traces" for c in rec.calls), [c[3] for c in rec.calls])
        check("http: content-type application/x-protobuf",
              rec.calls[0][2].get("content-type") == "application/x-protobuf", rec.calls[0][2])
        check_counters("http", summ, exported=20, failed=0, dropped=0, retries=0,
                       requests=len(rec.calls))
        check("http: partial success logged",
              re.search(r"partial success: 1 of \d+ spans rejected: one too many", err), err)
    finally:
        rec.close()
    rec = HttpReceiver()
    try:
        env = dict(BASE_ENV, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
                   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{rec.port}/custom/traces")
        sent, summ, err, _, _ = send(env, 3)
        check("http: the signal-specific endpoint used as given",
              [c[3] for c in rec.calls] == ["/custom/traces"], [c[3] for c in rec.calls])
        check_counters("http full URL", summ, exported=3)
    finally:
        rec.close()


def http_retry():
    rec = HttpReceiver([("fail", 503, "busy", {}), ("fail", 429, "slow down", {"Retry-After": "1"}),
                        "ok"])
    try:
        env = dict(BASE_ENV, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16")
        sent, summ, err, _, _ = send(env, 5, f"http://127.0.0.1:{rec.port}/v1/traces")
        check("http 503, 429, 200: retried twice", len(rec.calls) == 3, len(rec.calls))
        gap = rec.calls[2][0] - rec.calls[1][0] if len(rec.calls) == 3 else 0
        check("http 429 Retry-After: 1 honoured", 0.95 <= gap < 2.5, f"{gap:.3f} s")
        check_counters("http retry", summ, exported=5, failed=0, requests=3, retries=2)
    finally:
        rec.close()
    rec = HttpReceiver([("fail", 400, "malformed", {})])
    try:
        env = dict(BASE_ENV, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16")
        sent, summ, err, _, _ = send(env, 5, f"http://127.0.0.1:{rec.port}/v1/traces")
        check("http 400: not retried", len(rec.calls) == 1, len(rec.calls))
        check_counters("http 400", summ, exported=0, failed=5, requests=1, retries=0)
        check("http 400: logged", "HTTP 400" in err, err)
    finally:
        rec.close()


def unreachable(protocol, kind):
    """A black hole or a dead port: 600 spans submitted over ~0.3 s against a 64-span queue and a
    500 ms export timeout; flush gives up after 200 ms, shutdown after 700 ms."""
    label = f"{protocol} {kind}"
    hole = BlackHole() if kind == "black hole" else None
    port = hole.port if hole else dead_port()
    try:
        env = {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_TIMEOUT": "500",
               "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
               "OTEL_BSP_SCHEDULE_DELAY": "100"}
        path = "/v1/traces" if protocol == "http/protobuf" else ""
        sent, summ, err, _, took = send(env, 600, f"http://127.0.0.1:{port}{path}",
                                        interval_us=500, flush_ms=200, destroy_ms=700)
        final = summ.get("final", {})
        check(f"{label}: nothing exported, every span failed or dropped",
              final.get("exported") == 0 and final.get("failed", 0) > 0
              and final.get("dropped", 0) > 0
              and final.get("failed", 0) + final.get("dropped", 0) == 600, summ)
        check(f"{label}: requests counted", final.get("requests", 0) >= 1, summ)
        if kind == "dead port":
            check(f"{label}: connection refused is retried", final.get("retries", 0) >= 1, summ)
        check(f"{label}: flush gave up at its timeout",
              summ.get("flush_rc") != 0 and summ.get("flush_ms", 99) < 400, summ)
        check(f"{label}: shutdown kept its deadline (700 ms)", summ.get("destroy_ms", 99) < 900,
              summ)
        check(f"{label}: every span given back", summ.get("released") == 600, summ)
        check(f"{label}: submits never waited (max {summ.get('submit_max_ms')} ms, "
              f"p99 {summ.get('submit_p99_ms')} ms)",
              summ.get("submit_max_ms", 99) < 50 and summ.get("submit_p99_ms", 99) < 1, summ)
        # the whole sender process, start-up included: LANTERN_TIME_SCALE (the tsan preset's 3)
        # widens it for instrumented builds, whose own deadlines are checked above unchanged
        limit = 4 * float(os.environ.get("LANTERN_TIME_SCALE", "1"))
        check(f"{label}: the sender finished promptly (< {limit:.0f} s)", took < limit,
              f"{took:.1f} s")
        check(f"{label}: the failure was logged", "failed after" in err, err)
    finally:
        if hole:
            hole.close()


def make_cert(tmp):
    key, crt = os.path.join(tmp, "key.pem"), os.path.join(tmp, "crt.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True, text=True)
    return (crt, key) if r.returncode == 0 else None


def tls(tmp):
    cert = make_cert(tmp) if shutil.which("openssl") else None
    if not cert:
        print("note: no openssl command: the TLS checks are skipped")
        return
    for proto, cls in (("grpc", GrpcReceiver), ("http/protobuf", HttpReceiver)):
        rec = cls(tls=cert)
        try:
            env = dict(BASE_ENV, OTEL_EXPORTER_OTLP_PROTOCOL=proto,
                       OTEL_EXPORTER_OTLP_CERTIFICATE=cert[0])
            path = "/v1/traces" if proto == "http/protobuf" else ""
            sent, summ, err, pid, _ = send(env, 10, f"https://localhost:{rec.port}{path}")
            check_arrived(f"{proto} TLS", rec, sent, pid, 8)
            check_counters(f"{proto} TLS", summ, exported=10, failed=0)
        finally:
            rec.close()
        # without the CA the certificate is refused, and that is not retried
        rec = cls(tls=cert)
        try:
            env = dict(BASE_ENV, OTEL_EXPORTER_OTLP_PROTOCOL=proto)
            sent, summ, err, pid, _ = send(env, 3, f"https://localhost:{rec.port}{path}")
            check_counters(f"{proto} TLS, untrusted certificate", summ, exported=0, failed=3,
                           retries=0)
        finally:
            rec.close()


def main():
    if not os.path.exists(SENDER):
        print(f"no {SENDER}: build the tests first")
        return 1
    t0 = time.monotonic()
    # the slow ones (timeouts) in parallel with the rest
    slow = [threading.Thread(target=unreachable, args=(p, k))
            for p in ("grpc", "http/protobuf") for k in ("black hole", "dead port")]
    for t in slow:
        t.start()
    grpc_fields()
    grpc_retry()
    http_fields()
    http_retry()
    with tempfile.TemporaryDirectory() as tmp:
        tls(tmp)
    for t in slow:
        t.join()
    print(f"test_otlp_export: {time.monotonic() - t0:.1f} s")
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
