#!/usr/bin/env python3
"""conf/ against a real Prometheus scraping a real lantern serve under load.

Debian's `prometheus` runs with a config made from conf/prometheus/prometheus.yml (the same job,
its rule file alerts.yml, the target swapped for the server below, a 1 s scrape, temp storage,
--enable-feature=exemplar-storage) on a free loopback port. It scrapes `lantern serve` on the
tiny random model, two tensor-parallel ranks (so all-reduce is measured), tracing on to a local
gRPC receiver (so the span counters exist), while a few clients send completions for a few
seconds: streaming and not, n = 2, shared prefixes, a client that goes away, a malformed
traceparent. Then, through Prometheus's HTTP API:

- the target is up and every metric of lantern's contract (metrics_standin.METRICS) is stored,
  with the labels the contract gives it, and the per-process and per-rank series cover the tree
  (frontend, engine, workers 0 and 1);
- the dashboard's model_name variable finds the served model (label values API);
- every dashboard expression ($model_name = the model, $__rate_interval = 30s) returns data, and
  the latency percentiles are numbers (the load moved the buckets);
- every alert expression evaluates, and returns data once its comparisons are removed (the
  series it watches exist even when it does not fire); every selector in any expression alone
  returns data (names the missing metric when one does not);
- every alert rule loaded and evaluates without error (/api/v1/rules);
- exemplars: lantern answers OpenMetrics to Prometheus's Accept header (with the stand-in: the
  scrapes asked for OpenMetrics first) and the TTFT buckets' trace-id exemplars were stored.

LANTERN_METRICS_STANDIN=1 scrapes tests/unit/metrics_standin.py's stand-in (the whole metric set,
made-up values) instead of lantern: the harness's own check while the server's metric set is
incomplete. Without prometheus (tools/setup.sh installs it) the test is skipped (77).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import ltcheck
from ltcheck import check

try:
    import httpx
    import yaml
    from metrics_standin import METRICS, series_names
    from test_conf import (CONF, alert_rules, dashboard, dashboard_exprs, instantiate,
                           selectors, strip_comparisons)
except ImportError as e:
    print(f"skip: {e} (run tools/setup.sh)")
    sys.exit(77)

MODEL = "tiny"
RATE = "30s"
LOAD_S = float(os.environ.get("LANTERN_PROM_LOAD_S", "6"))
STANDIN = os.environ.get("LANTERN_METRICS_STANDIN") == "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_config(target, tmp):
    """conf/prometheus/prometheus.yml with the target, a 1 s scrape and alerts.yml's full path."""
    with open(os.path.join(CONF, "prometheus", "prometheus.yml")) as f:
        cfg = yaml.safe_load(f)
    cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    cfg["rule_files"] = [os.path.join(CONF, "prometheus", r) for r in cfg["rule_files"]]
    jobs = [j for j in cfg["scrape_configs"] if j["job_name"] == "lantern"]
    jobs[0]["static_configs"] = [{"targets": [target]}]
    path = os.path.join(tmp, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


class Prometheus:
    def __init__(self, config, tmp):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logf = open(os.path.join(tmp, "prometheus.log"), "w+")
        self.p = subprocess.Popen(
            ["prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--enable-feature=exemplar-storage", "--log.level=warn"],
            stdout=self.logf, stderr=subprocess.STDOUT)
        self.c = httpx.Client(base_url=self.base, timeout=30)

    def wait_ready(self):
        self.ready = False
        for _ in range(300):
            if self.p.poll() is not None:
                break
            try:
                if self.c.get("/-/ready").status_code == 200:
                    self.ready = True
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return self.ready

    def api(self, path, **params):
        r = self.c.get("/api/v1/" + path, params=params)
        try:
            j = r.json()
        except ValueError:
            return {"status": "error", "error": r.text}
        return j

    def query(self, expr):
        return self.api("query", query=expr)

    def log(self):
        self.logf.seek(0)
        return self.logf.read()[-2000:]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.c.close()
        self.logf.close()


# ---- load ----

def load(base, seconds):
    """A few clients for `seconds`; returns the status codes seen."""
    codes, stop = [], time.time() + seconds
    prefix = "The lantern at the end of the long corridor burned all night, and "

    def client(k):
        with httpx.Client(base_url=base, timeout=60) as c:
            i = 0
            while time.time() < stop:
                i += 1
                body = {"model": MODEL, "prompt": prefix + f"client {k} request {i}",
                        "max_tokens": 8 + (i % 3) * 8}
                try:
                    if k == 0:
                        with c.stream("POST", "/v1/completions",
                                      json=dict(body, stream=True)) as r:
                            r.read()
                    elif k == 1:
                        r = c.post("/v1/completions", json=dict(body, n=2))
                    elif k == 2 and i % 4 == 0:  # a client that goes away mid-stream
                        with c.stream("POST", "/v1/completions",
                                      json=dict(body, stream=True, max_tokens=400)) as r:
                            for _ in r.iter_lines():
                                break
                        continue
                    elif k == 2 and i % 4 == 1:
                        r = c.post("/v1/completions", json=body,
                                   headers={"traceparent": "00-garbage"})
                    else:
                        r = c.post("/v1/completions", json=body)
                    codes.append(r.status_code)
                except httpx.HTTPError as e:
                    codes.append(repr(e))
    ts = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return codes


# ---- the checks ----

def nonempty(j):
    return j.get("status") == "success" and bool(j.get("data", {}).get("result"))


def show(j):
    if j.get("status") != "success":
        return f"{j.get('errorType')}: {j.get('error')}"
    return f"empty result ({j.get('data', {}).get('resultType')})"


def run_checks(prom, target_base, standin):
    up = prom.query('up{job="lantern"}')
    check("the lantern target is up", nonempty(up) and
          up["data"]["result"][0]["value"][1] == "1", show(up) if not nonempty(up) else up)
    names = set(prom.api("label/__name__/values").get("data", []))
    missing = sorted(series_names() - names)
    check(f"every metric of lantern's contract is stored ({len(series_names())} series names)",
          not missing, f"missing: {missing}")
    series = prom.api("series", **{"match[]": '{__name__=~"lantern:.+"}',
                                   "start": str(time.time() - 120)}).get("data", [])
    lacking = {}
    for name, spec in METRICS.items():
        want = set(spec[1])
        for sr in series:
            n = sr["__name__"]
            if n == name or (spec[0] == "histogram" and n.startswith(name + "_") and
                             n[len(name) + 1:] in ("bucket", "sum", "count")):
                miss = want - set(sr)
                if miss:
                    lacking.setdefault(n, set()).update(miss)
    check("every stored metric of the contract carries its labels "
          "(model_name, engine, rank, role, ...)", not lacking,
          {k: sorted(v) for k, v in sorted(lacking.items())})
    # the per-process and per-rank series cover the whole tree (2 ranks here), as the panels
    # by role and by rank expect
    def groups(expr, *labels):
        j = prom.query(expr)
        return {tuple(r["metric"].get(lb, "") for lb in labels)
                for r in j.get("data", {}).get("result", [])}
    tree = {
        ("count by (role, rank) (lantern:process_resident_memory_bytes)", ("role", "rank")):
            {("frontend", "-1"), ("engine", "-1"), ("worker", "0"), ("worker", "1")},
        ("count by (role) (lantern:spans_exported_total)", ("role",)):
            {("frontend",), ("engine",)},
    }
    for m in ("step", "forward", "allreduce"):
        tree[(f"count by (rank) (lantern:{m}_duration_seconds_count)", ("rank",))] = \
            {("0",), ("1",)}
    for (expr, labels), want in tree.items():
        got = groups(expr, *labels)
        check(f"{expr}: covers {sorted(want)}", want <= got, sorted(got))
    vals = prom.api("label/model_name/values", **{"match[]": "lantern:num_requests_running"})
    check("dashboard variable: label_values(lantern:num_requests_running, model_name) finds "
          f"{MODEL!r}", MODEL in vals.get("data", []), vals)

    d = dashboard()
    seen = set()
    for label, e in dashboard_exprs(d):
        q = instantiate(e, MODEL, RATE)
        seen.add(q)
        j = prom.query(q)
        check(f"dashboard {label}: returns data", nonempty(j), f"{show(j)}: {q}")
        if nonempty(j) and "histogram_quantile" in q and (
                "time_to_first_token" in q or "e2e_request_latency" in q):
            v = [r["value"][1] for r in j["data"]["result"]]
            check(f"dashboard {label}: a number (the load moved the buckets)",
                  all(x not in ("NaN", "+Inf", "-Inf") for x in v), v)
    for r in alert_rules():
        e = " ".join(r["expr"].split())
        j = prom.query(e)
        check(f"alert {r['alert']}: evaluates", j.get("status") == "success", f"{show(j)}: {e}")
        bare = strip_comparisons(e)
        seen.add(bare)
        j = prom.query(bare)
        check(f"alert {r['alert']}: its series exist (comparisons removed)", nonempty(j),
              f"{show(j)}: {bare}")
    for s in sorted({s for q in seen for s in selectors(q)}):
        j = prom.query(s)
        check(f"selector {s}: returns data", nonempty(j), show(j))

    rules = prom.api("rules", type="alert")
    got = [r for g in rules.get("data", {}).get("groups", []) for r in g["rules"]]
    bad = [(r["name"], r.get("health"), r.get("lastError")) for r in got
           if r.get("health") != "ok"]
    check(f"alerts.yml: all {len(alert_rules())} rules loaded and evaluate without error",
          len(got) == len(alert_rules()) and not bad, bad or len(got))
    firing = [(r["name"], a.get("labels", {}).get("instance")) for r in got
              for a in r.get("alerts", []) if a.get("state") == "firing"]
    print(f"note: alerts firing at the end: {firing or 'none'}")

    # exemplars
    now = time.time()
    ex = prom.api("query_exemplars", query="lantern:time_to_first_token_seconds_bucket",
                  start=str(now - 120), end=str(now))
    n_ex = sum(len(s.get("exemplars", [])) for s in ex.get("data", []) or [])
    if standin:
        acc = standin.accept
        check("exemplars: Prometheus asked for OpenMetrics first on every scrape",
              acc and all(a.startswith("application/openmetrics-text") for a in acc), acc[:2])
        check("exemplars: the TTFT buckets' trace ids are stored", n_ex > 0, ex)
    else:
        r = httpx.get(target_base + "/metrics", timeout=30, headers={
            "Accept": "application/openmetrics-text;version=1.0.0,"
                      "text/plain;version=0.0.4;q=0.5"})
        ctype = r.headers.get("content-type", "")
        check("exemplars: lantern answers OpenMetrics to Prometheus's Accept header",
              ctype.startswith("application/openmetrics-text"), ctype)
        check("exemplars: the TTFT buckets' trace ids are stored", n_ex > 0, ex)

def main():
    if not shutil.which("prometheus"):
        print("skip: no prometheus (tools/setup.sh installs Debian's)")
        return 77
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="lantern-test-prometheus-")
    prom = server = rec = standin = None
    try:
        if STANDIN:
            from metrics_standin import Standin
            standin = Standin(MODEL, ranks=2)
            base = f"http://127.0.0.1:{standin.port}"
            print(f"note: scraping the stand-in exporter ({len(METRICS)} metrics), not lantern")
        else:
            from otlp_receivers import GrpcReceiver
            rec = GrpcReceiver()
            os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "200"
            server = ltcheck.Server(ltcheck.tiny_model(tmp), "--served-model-name", MODEL,
                                    "--tensor-parallel-size", "2", "--threads", "1",
                                    "--otlp-traces-endpoint", f"http://127.0.0.1:{rec.port}")
            if not check("lantern serve up", server.base, server.log()):
                return ltcheck.summary()
            base = server.base
        prom = Prometheus(prometheus_config(base.replace("http://", ""), tmp), tmp)
        if not check("prometheus up (its own, on a free loopback port)", prom.wait_ready(),
                     prom.log()):
            return ltcheck.summary()
        # Prometheus hands its targets to the scrapers ~5 s after start: load from the first
        # scrape on, so every rate window has samples from before and during it
        for _ in range(200):
            if nonempty(prom.query('up{job="lantern"}')):
                break
            time.sleep(0.1)
        t_load = time.time()
        print(f"note: first scrape {t_load - t0:.1f} s after the start")
        if STANDIN:
            time.sleep(LOAD_S)  # its values move by themselves
        else:
            codes = load(base, LOAD_S)
            ok = sum(1 for c in codes if c == 200)
            check(f"load: {ok} completions in {LOAD_S:.0f} s, all 200",
                  ok > 10 and ok == len(codes), [c for c in codes if c != 200][:5])
        time.sleep(2)  # the last scrapes land
        print(f"note: load {time.time() - t_load:.1f} s")
        run_checks(prom, base, standin)
    finally:
        if prom:
            prom.stop()
        if server:
            status = server.stop()
            check("lantern serve stopped cleanly", status == 0, server.log())
        if rec:
            rec.close()
        if standin:
            standin.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_prometheus: {time.time() - t0:.1f} s"
          + (" (against the stand-in)" if STANDIN else ""))
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
