#!/usr/bin/env python3
"""Traces across every process, against real OTLP receivers, both protocols.

`lantern serve` at --tensor-parallel-size 3 on the default model, with
--collect-detailed-traces all, exports to a gRPC receiver (grpcio + opentelemetry-proto's
TraceServiceServicer) and then to an http/protobuf one (http.server + opentelemetry-proto). A
client of the official `openai` package sends requests from inside spans of its own
(opentelemetry-sdk, traceparent injected with TraceContextTextMapPropagator). Checked:

- lantern's spans of a request arrive as children of the client's span, in the client's trace;
  every span of the request (frontend and engine) shares that trace id;
- parent edges: HTTP server span → llm_request → its chat_template/tokenize/stream children
  (frontend), llm_request → queue/prefill/decode (engine, across the ADD envelope); each step
  span (engine) → worker_step on every rank (across the STEP envelope) → forward/sample;
- span times nest inside their parents';
- step spans link to exactly the requests of their batch: every request a step links to links
  back to that step from its prefill or decode span, and the other way round;
- llm_request's TTFT, phase times and token counts equal the response's `timings` and `usage`;
- resources name each process: frontend, engine and worker ranks 0..2 with their pids;
- the `traceparent` response header names the HTTP server span; malformed traceparents are
  ignored and counted (/metrics), never echoed;
- a collector that is down, black-holes, or answers 503: requests are served as usual, the
  spans count as failed in the shutdown lines, and shutdown is not held up.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import httpx

import ltcheck
from ltcheck import check, default_model, Server

try:
    from otlp_receivers import BlackHole, GrpcReceiver, HttpReceiver, dead_port
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    import openai
except ImportError as e:
    print(f"skip: {e} (run tools/setup.sh)")
    sys.exit(77)

BIN = os.environ["LANTERN_BIN"]


def start(model, endpoint, protocol, *extra):
    os.environ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = protocol
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    os.environ["OTEL_SERVICE_NAME"] = "lantern-test"
    return Server(model, "--tensor-parallel-size", "3", "--threads", "1", "--max-model-len",
                  "1024", "--otlp-traces-endpoint", endpoint, "--collect-detailed-traces", "all",
                  *extra)


def client_requests(base):
    """Three requests from inside client spans: chat (streaming), completion, completion n=2.
    Returns [(client span context, response dict, response headers)]."""
    provider = TracerProvider()
    tracer = provider.get_tracer("test_traces")
    oa = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
    name = oa.models.list().data[0].id
    out = []
    for i, kind in enumerate(["chat-stream", "completion", "completion-n2"]):
        with tracer.start_as_current_span(f"client-{kind}") as span:
            carrier = {}
            TraceContextTextMapPropagator().inject(carrier)
            hdrs = dict(carrier, **{"X-Request-Id": f"trace-test-{i}"})
            if kind == "chat-stream":
                raw = oa.chat.completions.with_raw_response.create(
                    model=name, messages=[{"role": "user", "content": "Name a colour."}],
                    max_tokens=12, temperature=0, stream=True,
                    stream_options={"include_usage": True}, extra_headers=hdrs)
                usage, timings = None, None
                for chunk in raw.parse():
                    d = chunk.model_dump()
                    usage = d.get("usage") or usage
                    for ch in d.get("choices") or []:
                        timings = (chunk.model_extra or {}).get("timings") or timings
                        timings = ch.get("timings") or timings
                body = {"usage": usage, "timings": timings}
            else:
                raw = oa.completions.with_raw_response.create(
                    model=name, prompt="The capital of France is", max_tokens=10, temperature=0,
                    n=2 if kind == "completion-n2" else 1, extra_headers=hdrs)
                body = raw.parse().model_dump()
            out.append((span.get_span_context(), body, dict(raw.headers), f"trace-test-{i}"))
    return out


def by_id(spans):
    return {s["span_id"]: (res, s) for res, s in spans}


def children(spans, parent_id):
    return [(r, s) for r, s in spans if s["parent_span_id"] == parent_id]


def nests(child, parent, slack_ns=2_000_000):
    return (int(child["start"]) >= int(parent["start"]) - slack_ns and
            int(child["end"]) <= int(parent["end"]) + slack_ns)


def check_request(tag, spans, ctx, body, headers, rid, pids):
    trace_id = format(ctx.trace_id, "032x")
    mine = [(r, s) for r, s in spans if s["trace_id"] == trace_id]
    http = [(r, s) for r, s in mine if s["parent_span_id"] == format(ctx.span_id, "016x")]
    if not check(f"{tag} {rid}: one HTTP server span, child of the client's span",
                 len(http) == 1 and http[0][1]["kind"] == 2, [s["name"] for _, s in mine]):
        return
    hres, h = http[0]
    tp = headers.get("traceparent", "")
    check(f"{tag} {rid}: traceparent response header names the HTTP span",
          tp == f"00-{trace_id}-{h['span_id']}-01", tp)
    check(f"{tag} {rid}: HTTP span attributes",
          h["attributes"].get("http.response.status_code") == "int:200" and
          h["attributes"].get("http.request.method") == "POST", h["attributes"])
    req = [(r, s) for r, s in children(mine, h["span_id"]) if s["name"] == "llm_request"]
    if not check(f"{tag} {rid}: llm_request under the HTTP span", len(req) == 1, ""):
        return
    _, lr = req[0]
    a = lr["attributes"]
    usage, timings = body["usage"], body["timings"]
    check(f"{tag} {rid}: llm_request token counts equal the response's usage",
          a.get("gen_ai.usage.prompt_tokens") == f"int:{usage['prompt_tokens']}" and
          a.get("gen_ai.usage.completion_tokens") == f"int:{usage['completion_tokens']}" and
          a.get("gen_ai.usage.input_tokens") == f"int:{usage['prompt_tokens']}",
          f"{a} vs {usage}")
    ttft = float(a.get("gen_ai.latency.time_to_first_token", "double:nan").split(":")[1])
    want = (timings["queue_ms"] + timings["prefill_ms"]) / 1e3
    check(f"{tag} {rid}: llm_request TTFT equals the response's queue + prefill",
          abs(ttft - want) < 1e-6 + 1e-3 * want, f"{ttft} vs {want}")
    dec = float(a.get("gen_ai.latency.time_in_model_decode", "double:nan").split(":")[1])
    check(f"{tag} {rid}: llm_request decode time equals the response's",
          abs(dec - timings["decode_ms"] / 1e3) < 1e-6 + 1e-3 * dec, f"{dec} {timings}")
    check(f"{tag} {rid}: GenAI names beside vLLM's",
          a.get("gen_ai.request.id") == rid and "gen_ai.operation.name" in a and
          a.get("gen_ai.provider.name") == "lantern", a)
    fe_children = {s["name"] for r, s in children(mine, lr["span_id"])
                   if r["lantern.process.role"] == "frontend"}
    check(f"{tag} {rid}: frontend children of llm_request", "tokenize" in fe_children, fe_children)
    eng = [(r, s) for r, s in children(mine, lr["span_id"])
           if r["lantern.process.role"] == "engine"]
    names = [s["name"] for _, s in eng]
    check(f"{tag} {rid}: engine spans are children of llm_request (across the ADD envelope)",
          "queue" in names and "prefill" in names and "decode" in names, names)
    check(f"{tag} {rid}: every span shares the client's trace",
          all(s["trace_id"] == trace_id for _, s in [(hres, h)] + req + eng), "")
    for r, s in eng + [(None, lr)]:
        if not nests(s, h):
            check(f"{tag} {rid}: {s['name']} nests in the HTTP span", False, f"{s} {h}")
    check(f"{tag} {rid}: resources: frontend and engine pids",
          hres["process.pid"] == f"int:{pids['frontend']}" and
          all(r["process.pid"] != hres["process.pid"] for r, _ in eng), "")
    return lr, eng


def check_steps(tag, spans, requests):
    steps = [(r, s) for r, s in spans if s["name"] == "step"]
    if not check(f"{tag}: step spans recorded", steps, ""):
        return
    lr_ids = {lr["span_id"]: eng for lr, eng in requests}
    ok_links = True
    for _, st in steps:
        for l in st["links"]:
            eng = lr_ids.get(l["span_id"])
            if eng is None:
                continue  # a request of another test phase (warm-up)
            back = any(any(bl["span_id"] == st["span_id"] for bl in s["links"]) for _, s in eng)
            ok_links &= back
    check(f"{tag}: every request a step links to links back to that step", ok_links, "")
    step_ids = {s["span_id"] for _, s in steps}
    fwd = True
    for lr, eng in requests:
        for _, s in eng:
            for l in s["links"]:
                if l["span_id"] in step_ids:
                    st = next(x for _, x in steps if x["span_id"] == l["span_id"])
                    fwd &= any(sl["span_id"] == lr["span_id"] for sl in st["links"])
    check(f"{tag}: every step a request span links to links to that request", fwd, "")
    # workers: each step span has a worker_step child on every rank, with forward (and sample)
    full = 0
    for _, st in steps:
        ws = children(spans, st["span_id"])
        ranks = {r.get("lantern.worker.rank") for r, s in ws if s["name"] == "worker_step"}
        if ranks == {"int:0", "int:1", "int:2"}:
            full += 1
            for r, w in ws:
                kids = {s["name"] for _, s in children(spans, w["span_id"])}
                if "forward" not in kids or (r["lantern.worker.rank"] == "int:0" and
                                             "sample" not in kids):
                    full -= 1
                    break
                if not nests(w, st, 5_000_000):
                    full -= 1
                    break
    check(f"{tag}: each step has worker_step spans on ranks 0..2 (across the STEP envelope), "
          "with forward and sample", full >= len(steps) - 1 and full > 0,
          f"{full} of {len(steps)}")
    wres = {(r["lantern.worker.rank"], r["process.pid"]) for r, s in spans
            if r.get("lantern.process.role") == "worker"}
    check(f"{tag}: worker resources: ranks 0..2, three pids",
          {x[0] for x in wres} == {"int:0", "int:1", "int:2"} and
          len({x[1] for x in wres}) == 3, wres)
    check(f"{tag}: resources carry service.name and tensor_parallel_size",
          all(r.get("service.name") == "lantern-test" and
              r.get("lantern.tensor_parallel_size") == "int:3" for r, _ in spans), "")


def run_protocol(model, protocol):
    tag = protocol
    rec = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    ep = f"http://127.0.0.1:{rec.port}" + ("" if protocol == "grpc" else "/v1/traces")
    srv = start(model, ep, protocol)
    try:
        if not check(f"{tag}: server up", srv.base is not None, srv.log()):
            return
        pids = {"frontend": srv.p.pid}
        results = client_requests(srv.base)
        # malformed traceparents: ignored (no echo), counted
        for bad in ["00-" + "0" * 32 + "-00f067aa0ba902b7-01", "garbage", "00-ABC"]:
            r = httpx.post(srv.base + "/v1/completions", timeout=60, headers={"traceparent": bad},
                           json={"prompt": "x", "max_tokens": 1})
            tp = r.headers.get("traceparent", "")
            check(f"{tag}: malformed traceparent {bad[:10]!r} ignored, not echoed",
                  r.status_code == 200 and bad not in tp, f"{r.status_code} {tp}")
        m = httpx.get(srv.base + "/metrics", timeout=30).text
        got = re.search(r"lantern:traceparent_malformed_total\{[^}]*\} (\S+)", m)
        check(f"{tag}: malformed traceparents counted", got and float(got.group(1)) >= 3,
              got.group(0) if got else m[-300:])
    finally:
        status = srv.stop()
    check(f"{tag}: server stopped cleanly", status == 0, srv.log())
    spans = rec.resource_spans()
    rec.close()
    reqs = []
    for ctx, body, headers, rid in results:
        got = check_request(tag, spans, ctx, body, headers, rid, pids)
        if got:
            reqs.append(got)
    check_steps(tag, spans, reqs)
    lines = srv.log(100000)
    check(f"{tag}: no span lost", "0 dropped (queue full), 0 failed" in lines and
          not re.search(r"[1-9]\d* dropped|[1-9]\d* failed", lines), lines[-800:])


def run_broken(model, what):
    """A collector that is down, black-holes or answers 503: serving goes on; spans fail."""
    hole, rec = None, None
    if what == "down":
        ep = f"http://127.0.0.1:{dead_port()}"
    elif what == "black hole":
        hole = BlackHole()
        ep = f"http://127.0.0.1:{hole.port}"
    else:
        rec = HttpReceiver(script=[("fail", 503, "overloaded", {})])
        ep = f"http://127.0.0.1:{rec.port}/v1/traces"
    os.environ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "1000"
    srv = start(model, ep, "grpc" if rec is None else "http/protobuf")
    try:
        if not check(f"collector {what}: server up", srv.base is not None, srv.log()):
            return
        t0 = time.monotonic()
        ok = 0
        for i in range(4):
            r = httpx.post(srv.base + "/v1/completions", timeout=60,
                           json={"prompt": "Hello", "max_tokens": 8, "temperature": 0})
            ok += r.status_code == 200
        check(f"collector {what}: every request served", ok == 4, "")
        check(f"collector {what}: serving not slowed down", time.monotonic() - t0 < 30,
              f"{time.monotonic() - t0:.1f} s")
    finally:
        t0 = time.monotonic()
        status = srv.stop()
        dt = time.monotonic() - t0
        os.environ.pop("OTEL_EXPORTER_OTLP_TIMEOUT", None)
        if hole:
            hole.close()
        if rec:
            rec.close()
    lines = srv.log(100000)
    failed = [int(x) for x in re.findall(r"(\d+) failed", lines)]
    check(f"collector {what}: spans counted as failed, none exported",
          failed and sum(failed) > 0 and "0 spans exported" in lines, lines[-600:])
    check(f"collector {what}: exit 0 and shutdown bounded", status == 0 and dt < 30,
          f"status {status}, {dt:.1f} s")


def run_generate(model):
    """`lantern generate` traces too: its llm_request is a child of --traceparent."""
    rec = GrpcReceiver()
    tid, sid = "5" * 32, "6" * 16
    env = dict(os.environ, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc")
    r = subprocess.run([BIN, "generate", "--model", model, "--prompt", "Hello", "--max-tokens",
                        "4", "--temperature", "0", "--otlp-traces-endpoint",
                        f"http://127.0.0.1:{rec.port}", "--traceparent", f"00-{tid}-{sid}-01"],
                       capture_output=True, text=True, timeout=300, env=env)
    spans = rec.resource_spans()
    rec.close()
    check("generate: runs", r.returncode == 0, r.stderr[-400:])
    lr = [s for _, s in spans if s["name"] == "llm_request"]
    check("generate: llm_request is a child of --traceparent",
          len(lr) == 1 and lr[0]["trace_id"] == tid and lr[0]["parent_span_id"] == sid,
          [(s["name"], s["trace_id"], s["parent_span_id"]) for _, s in spans])
    eng = [s["name"] for r, s in spans if r.get("lantern.process.role") == "engine" and lr and
           s["parent_span_id"] == lr[0]["span_id"]]
    check("generate: the engine's spans are its children", "decode" in eng, eng)
    r = subprocess.run([BIN, "generate", "--model", model, "--prompt", "Hello", "--traceparent",
                        "00-xyz"], capture_output=True, text=True, timeout=120)
    check("generate: a malformed --traceparent is refused", r.returncode != 0 and
          "traceparent" in r.stderr, r.stderr[-300:])


def run_without_libcurl(model):
    """libcurl is loaded only when spans are exported: a libcurl.so.4 that is not libcurl (here an
    empty library found first through LD_LIBRARY_PATH) is a clear start-up error, not a crash."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        print("note: no C compiler: the broken-libcurl check is not run")
        return
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "empty.c")
        with open(src, "w") as f:
            f.write("int lantern_test_not_libcurl;\n")
        subprocess.run([cc, "-shared", "-fPIC", "-o", os.path.join(d, "libcurl.so.4"), src],
                       check=True)
        env = dict(os.environ, LD_LIBRARY_PATH=d)
        r = subprocess.run([BIN, "generate", "--model", model, "--prompt", "Hello", "--max-tokens",
                            "1", "--otlp-traces-endpoint", "http://127.0.0.1:4318"],
                           capture_output=True, text=True, timeout=120, env=env)
        check("a libcurl.so.4 without curl's functions: exit with an error naming libcurl",
              r.returncode not in (0, -11, -6) and "otlp: libcurl" in r.stderr and
              "curl_global_init" in r.stderr, f"status {r.returncode}: {r.stderr[-300:]!r}")
        r = subprocess.run([BIN, "generate", "--model", model, "--prompt", "Hello", "--max-tokens",
                            "1"], capture_output=True, text=True, timeout=120, env=env)
        check("the same library path without tracing: runs (libcurl never loaded)",
              r.returncode == 0, r.stderr[-300:])


def run_tail(model):
    """Ratio sampling at 0: nothing is exported, except requests that failed, were aborted or
    were slower than --trace-slow-threshold-ms."""
    rec = GrpcReceiver()
    os.environ["OTEL_TRACES_SAMPLER"] = "traceidratio"
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0"
    srv = start(model, f"http://127.0.0.1:{rec.port}", "grpc", "--trace-slow-threshold-ms",
                "60000")
    try:
        if not check("tail: server up", srv.base is not None, srv.log()):
            return
        quick = httpx.post(srv.base + "/v1/completions", timeout=60,
                           headers={"X-Request-Id": "tail-quick"},
                           json={"prompt": "Hello", "max_tokens": 2})
        bad = httpx.post(srv.base + "/v1/completions", timeout=60,
                         headers={"X-Request-Id": "tail-bad"},
                         json={"prompt": "Hello", "max_tokens": -3})
        # a client that goes away mid-stream: its request is aborted
        try:
            with httpx.stream("POST", srv.base + "/v1/completions", timeout=60,
                              headers={"X-Request-Id": "tail-gone"},
                              json={"prompt": "Once", "max_tokens": 300, "ignore_eos": True,
                                    "stream": True}) as st:
                next(st.iter_lines())
        except httpx.HTTPError:
            pass
        time.sleep(2)
    finally:
        srv.stop()
        for k in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
            os.environ.pop(k, None)
    spans = rec.resource_spans()
    rec.close()
    ids = {s["attributes"].get("gen_ai.request.id") or
           s["attributes"].get("http.request.header.x-request-id") for _, s in spans}
    check("tail: a quick successful request is not exported", quick.status_code == 200 and
          "tail-quick" not in ids, ids)
    check("tail: a refused request (400) is kept", bad.status_code == 400 and "tail-bad" in ids,
          ids)
    gone = [(r["lantern.process.role"], s["name"]) for r, s in spans
            if s["attributes"].get("gen_ai.request.id") == "tail-gone" or
            s["attributes"].get("http.request.header.x-request-id") == "tail-gone"]
    roles = {r for r, _ in gone}
    check("tail: an aborted request is kept, in the frontend and the engine",
          {"frontend", "engine"} <= roles, gone)


def main():
    model = default_model(honor_env=False)
    if not model:
        print("skip: default model absent")
        return ltcheck.summary(skipped=True)
    only = sys.argv[1:]
    for p in ["grpc", "http/protobuf"]:
        if not only or p in only:
            run_protocol(model, p)
    for what in ["down", "black hole", "503"]:
        if not only or "broken" in only:
            run_broken(model, what)
    if not only or "generate" in only:
        run_generate(model)
    if not only or "tail" in only:
        run_tail(model)
    if not only or "libcurl" in only:
        run_without_libcurl(model)
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
