#!/usr/bin/env python3
"""Metrics, health and dumps, on a running `lantern serve` (tiny random model, TP 2; fast).

- /metrics passes `promtool check metrics` (Prometheus text) and carries vLLM's V1 set under
  `lantern:` (and under `vllm:` with --metrics-prefix vllm), the per-rank step, forward and
  all-reduce histograms, and resident memory for every process;
- after a scripted workload the counters agree with the responses: prompt and generation token
  deltas equal the sums of `usage`, histogram counts equal the number of requests, and the TTFT
  histogram's sum equals the responses' queue + prefill times within 1 ms per request;
- OpenMetrics (Accept: application/openmetrics-text) ends with # EOF and its latency buckets carry
  exemplars whose trace id is the one the request arrived with; with tracing on, every exemplar's
  trace and span are ones the trace receiver got;
- a wedged worker (SIGSTOP) makes /health 503 within the watchdog time, leaves a dump naming the
  stalled step and its request, ends every in-flight request with an error, and the server
  exits non-zero; a malformed STEP (fault injection) ends the request with an error, not a hang;
- SIGUSR1 under load with --dump-dir: every process writes a JSON dump that parses, and every
  request still completes.
"""
import concurrent.futures as cf
import glob
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import httpx

import ltcheck
from ltcheck import check, Server, tiny_model


def scrape(base, om=False):
    h = {"Accept": "application/openmetrics-text; version=1.0.0"} if om else {}
    r = httpx.get(base + "/metrics", headers=h, timeout=30)
    return r.text, r.headers.get("content-type", "")


def value(text, name, labels=""):
    """The sample `name{...labels...}` (labels: a substring the label set must contain)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line.split("}")[0]:
            return float(line.rsplit(" ", 1)[1] if " # " not in line else
                         line.split(" # ")[0].rsplit(" ", 1)[1])
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def complete(base, i, trace=None, flags="01"):
    headers = {"X-Request-Id": f"m-{i}"}
    if trace:
        headers["traceparent"] = f"00-{trace}-{secrets.token_hex(8)}-{flags}"
    r = httpx.post(base + "/v1/completions", timeout=120, headers=headers,
                   json={"prompt": f"Request number {i} says", "max_tokens": 6 + i % 5,
                         "temperature": 0, "ignore_eos": True})
    return r.json()


def test_exposition_and_truth(model):
    srv = Server(model, "--tensor-parallel-size", "2", "--threads", "1")
    try:
        if not check("metrics: server up", srv.base, srv.log()):
            return
        complete(srv.base, 99)  # warm-up, counted in the baseline
        before, ctype = scrape(srv.base)
        check("metrics: Prometheus text 0.0.4", "version=0.0.4" in ctype, ctype)
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=before, text=True,
                               capture_output=True)
            # promtool lints HELP/TYPE style; names with ':' are reserved for recording rules
            # in its lint, which vLLM's names (and ours, the same) deliberately use
            # two lints are vLLM's naming, which we keep on purpose (same names as vLLM): the
            # ':' of its namespace, and iteration_tokens_total, a histogram named like a counter
            bad = [l for l in (p.stdout + p.stderr).splitlines()
                   if l.strip() and "should not contain ':'" not in l and
                   not ("iteration_tokens_total" in l and "_total" in l)]
            check("metrics: promtool check metrics", not bad, "\n".join(bad[:10]))
        else:
            print("skip promtool check: promtool not installed")
        for name in ["lantern:num_requests_running", "lantern:num_requests_waiting",
                     "lantern:kv_cache_usage_perc", "lantern:prompt_tokens_total",
                     "lantern:generation_tokens_total", "lantern:request_success_total",
                     "lantern:time_to_first_token_seconds_bucket",
                     "lantern:inter_token_latency_seconds_bucket",
                     "lantern:e2e_request_latency_seconds_bucket",
                     "lantern:request_queue_time_seconds_bucket",
                     "lantern:request_prefill_time_seconds_bucket",
                     "lantern:request_decode_time_seconds_bucket",
                     "lantern:request_inference_time_seconds_bucket",
                     "lantern:request_prompt_tokens_bucket",
                     "lantern:request_generation_tokens_bucket",
                     "lantern:iteration_tokens_total_bucket", "lantern:request_params_n_bucket",
                     "lantern:request_params_max_tokens_bucket", "lantern:cache_config_info",
                     "lantern:num_preemptions_total", "lantern:prefix_cache_queries_total",
                     "lantern:prefix_cache_hits_total"]:
            check(f"metrics: {name}", name + "{" in before, "")
        for r in (0, 1):
            for h in ("step_duration_seconds", "forward_duration_seconds",
                      "allreduce_duration_seconds"):
                v = value(before, f"lantern:{h}_count", f'rank="{r}"')
                check(f"metrics: {h} rank {r} observed", v and v > 0, v)
        for role in ('role="frontend"', 'role="engine"', 'rank="0"', 'rank="1"'):
            v = value(before, "lantern:process_resident_memory_bytes", role)
            check(f"metrics: resident memory {role}", v and v > 1e6, v)

        # a scripted workload, then the deltas against the responses
        trace, unsampled = secrets.token_hex(16), secrets.token_hex(16)
        n = 12
        with cf.ThreadPoolExecutor(4) as ex:
            res = list(ex.map(lambda i: complete(srv.base, i, trace if i == 3 else
                                                 unsampled if i == 5 else None,
                                                 "00" if i == 5 else "01"), range(n)))
        time.sleep(0.5)
        after, _ = scrape(srv.base)

        def delta(name, labels=""):
            return (value(after, name, labels) or 0) - (value(before, name, labels) or 0)
        usage_p = sum(r["usage"]["prompt_tokens"] for r in res)
        usage_c = sum(r["usage"]["completion_tokens"] for r in res)
        check("truth: prompt_tokens_total delta = sum of usage.prompt_tokens",
              delta("lantern:prompt_tokens_total") == usage_p,
              f"{delta('lantern:prompt_tokens_total')} vs {usage_p}")
        check("truth: generation_tokens_total delta = sum of usage.completion_tokens",
              delta("lantern:generation_tokens_total") == usage_c,
              f"{delta('lantern:generation_tokens_total')} vs {usage_c}")
        for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds",
                  "request_queue_time_seconds", "request_prompt_tokens",
                  "request_generation_tokens", "request_params_n"):
            check(f"truth: {h} count delta = {n} requests",
                  delta(f"lantern:{h}_count") == n, delta(f"lantern:{h}_count"))
        check("truth: request_success_total{length} delta = requests",
              delta("lantern:request_success_total", 'finished_reason="length"') == n, "")
        ttft = sum(r["timings"]["queue_ms"] + r["timings"]["prefill_ms"] for r in res) / 1e3
        got = delta("lantern:time_to_first_token_seconds_sum")
        check("truth: TTFT sum = the responses' queue + prefill within 1 ms per request",
              abs(got - ttft) <= 1e-3 * n, f"{got} vs {ttft}")
        itl = delta("lantern:inter_token_latency_seconds_count")
        check("truth: one inter-token latency per token after the first",
              itl == usage_c - n, f"{itl} vs {usage_c - n}")

        om, ctype = scrape(srv.base, om=True)
        check("openmetrics: content type and # EOF",
              "openmetrics-text" in ctype and om.rstrip().endswith("# EOF"), ctype)
        ex = re.findall(r'time_to_first_token_seconds_bucket\{[^}]*\} \d+ # \{trace_id="(\w+)"', om)
        check("openmetrics: a TTFT bucket's exemplar carries the request's trace id", trace in ex,
              ex)
        check("openmetrics: no exemplar names a trace its client did not sample",
              unsampled not in om, unsampled)
    finally:
        srv.stop()
    srv = Server(model, "--threads", "1", "--metrics-prefix", "vllm")
    try:
        text, _ = scrape(srv.base) if srv.base else ("", "")
        check("metrics: --metrics-prefix vllm gives vLLM's names",
              "vllm:num_requests_running{" in text and "lantern:" not in text, text[:200])
    finally:
        srv.stop()


def test_watchdog(model):
    srv = Server(model, "--tensor-parallel-size", "2", "--threads", "1", "--watchdog-timeout",
                 "3", "--max-model-len", "512")
    try:
        if not check("watchdog: server up", srv.base, srv.log()):
            return
        workers = [l for l in srv.lines if " worker[1] " in l and "ready:" in l]
        pid = int(re.search(r"pid=(\d+)", workers[0]).group(1)) if workers else None
        check("watchdog: worker pid", pid, "")
        os.kill(pid, signal.SIGSTOP)  # wedged before the request: its first step never ends
        with cf.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(lambda: httpx.post(
                srv.base + "/v1/completions", timeout=60, headers={"X-Request-Id": "wedged"},
                json={"prompt": "x", "max_tokens": 400, "ignore_eos": True}))
            t0 = time.monotonic()
            status, t503 = 200, None
            while time.monotonic() - t0 < 15:
                try:
                    status = httpx.get(srv.base + "/health", timeout=2).status_code
                except httpx.HTTPError:
                    status = 0  # the server exited: the tree went down
                if status != 200:
                    t503 = time.monotonic() - t0
                    break
                time.sleep(0.2)
            check("watchdog: /health stops answering 200 within the watchdog time (3 s) + 2 s",
                  t503 is not None and t503 < 5.5, f"{status} after {t503}")
            r = fut.result(timeout=30)
            check("watchdog: the in-flight request ends with an error",
                  r.status_code >= 500 and "stalled" in r.text, f"{r.status_code} {r.text[:200]}")
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        srv.p.wait(30)
    finally:
        code = srv.stop()
    log = srv.log(200000)
    check("watchdog: the dump names the stalled step and its request",
          re.search(r"watchdog: step \d+ \(1 sequences: wedged\)", log) and
          "state dump:" in log, log[-1500:])
    check("watchdog: the server exits non-zero", code not in (0, None), code)

    os.environ["LANTERN_FAULT_CORRUPT_STEP"] = "4"
    srv = Server(model, "--tensor-parallel-size", "2", "--threads", "1")
    os.environ.pop("LANTERN_FAULT_CORRUPT_STEP")
    try:
        t0 = time.monotonic()
        r = httpx.post(srv.base + "/v1/completions", timeout=60,
                       json={"prompt": "x", "max_tokens": 20, "ignore_eos": True})
        dt = time.monotonic() - t0
        check("malformed STEP: the request ends with an error, quickly",
              r.status_code >= 500 and dt < 10, f"{r.status_code} in {dt:.1f} s: {r.text[:200]}")
        check("malformed STEP: the worker said why",
              "could not read the step" in srv.log(100000), srv.log(1500))
    finally:
        srv.stop()


def test_dumps(model):
    d = tempfile.mkdtemp(prefix="lantern-dumps.")
    srv = Server(model, "--tensor-parallel-size", "2", "--threads", "1", "--dump-dir", d)
    try:
        if not check("dumps: server up", srv.base, srv.log()):
            return
        with cf.ThreadPoolExecutor(6) as ex:
            futs = [ex.submit(lambda i=i: httpx.post(
                srv.base + "/v1/completions", timeout=120, headers={"X-Request-Id": f"d-{i}"},
                json={"prompt": "Tell me", "max_tokens": 200, "ignore_eos": True}))
                for i in range(6)]
            time.sleep(0.4)
            for _ in range(3):
                srv.p.send_signal(signal.SIGUSR1)
                time.sleep(0.3)
            codes = [f.result().status_code for f in futs]
        check("dumps: every request completed under SIGUSR1", codes == [200] * 6, codes)
        time.sleep(1)
        files = glob.glob(os.path.join(d, "*.json"))
        roles = set()
        ok = True
        for f in files:
            try:
                doc = json.load(open(f))
                roles.add(doc["role"] + (f"-{doc['rank']}" if "rank" in doc else ""))
            except (ValueError, KeyError) as e:
                ok = False
                print(f"unparsable {f}: {e}")
        check("dumps: every JSON dump parses", ok and files, files)
        check("dumps: frontend, engine and both workers dumped",
              {"frontend", "engine", "worker-0", "worker-1"} <= roles, roles)
        eng = [json.load(open(f)) for f in files if os.path.basename(f).startswith("engine")]
        ids = {r["request_id"] for e in eng for r in e.get("requests", [])}
        check("dumps: the engine's dump lists the requests by id", ids & {f"d-{i}" for i in range(6)},
              ids)
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_exemplar_traced(model):
    """With tracing on, a latency bucket's exemplar names a trace (and span) the receiver got."""
    try:
        from otlp_receivers import GrpcReceiver
    except ImportError as e:
        print(f"skip exemplar_traced: {e}")
        return
    rec = GrpcReceiver()
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    srv = Server(model, "--threads", "1", "--otlp-traces-endpoint",
                 f"http://127.0.0.1:{rec.port}")
    del os.environ["OTEL_BSP_SCHEDULE_DELAY"]
    try:
        if not check("exemplar_traced: server up", srv.base, srv.log()):
            return
        with cf.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda i: complete(srv.base, i), range(8)))  # no traceparent: ours
        om, _ = scrape(srv.base, om=True)
    finally:
        status = srv.stop()  # flushes the spans
        rec.close()
    exemplars = {}
    for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds",
              "request_queue_time_seconds", "inter_token_latency_seconds"):
        exemplars[h] = re.findall(
            h + r'_bucket\{[^}]*\} \d+ # \{trace_id="(\w{32})",span_id="(\w{16})"\}', om)
    spans = {(s.trace_id.hex(), s.span_id.hex()) for s in rec.spans()}
    traces = {t for t, _ in spans}
    check("exemplar_traced: server stopped cleanly", status == 0, srv.log())
    for h, ex in exemplars.items():
        check(f"exemplar_traced: {h} buckets have exemplars with trace and span ids", ex, om[:300])
        missing = [t for t, _ in ex if t not in traces]
        check(f"exemplar_traced: the receiver has every {h} exemplar's trace", not missing,
              f"missing {missing}; {len(traces)} traces received")
        missing = [(t, sp) for t, sp in ex if (t, sp) not in spans]
        check(f"exemplar_traced: the receiver has every {h} exemplar's span", not missing,
              f"missing {missing}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(tmp)
        only = sys.argv[1:]
        for name, fn in [("exposition", test_exposition_and_truth), ("watchdog", test_watchdog),
                         ("dumps", test_dumps), ("exemplar_traced", test_exemplar_traced)]:
            if not only or name in only:
                fn(model)
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
