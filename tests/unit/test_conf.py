#!/usr/bin/env python3
"""conf/, every file checked without a Prometheus server (test_prometheus.py runs the queries).

- prometheus/prometheus.yml: `promtool check config` (which also loads alerts.yml); job
  `lantern` scrapes 127.0.0.1:8000 every 5 s and loads alerts.yml.
- prometheus/alerts.yml: `promtool check rules`; `promtool test rules` on alerts_test.yml, which
  must make every alert fire and hold one case where it does not; every alert has a severity, a
  summary and a description that prints $value, and uses only lantern's metric names.
- grafana/lantern.json: parses; importable (the DS_PROMETHEUS input, schemaVersion for Grafana
  10/11, the model_name variable from label_values(lantern:num_requests_running, model_name));
  every panel has the data source and queries; panels do not overlap; every expression filters on
  $model_name, uses only lantern's metric names and parses (each one, instantiated, through
  `promtool check rules` as a recording rule); the panels the ops team needs are there.
- otel-collector.yaml: parses; OTLP gRPC 4317 and HTTP 4318 on 127.0.0.1; every pipeline names
  only receivers/processors/exporters the file defines, batch included, and every receiver and
  processor is used.
- lantern.service: `systemd-analyze verify` says nothing (it exits 0 on unknown keys: its output
  is what counts; ExecStart's binary is swapped for the built one, /usr/local/bin/lantern is not
  installed here); the hardening keys; ExecStart's flags are flags `lantern serve --help` lists;
  and lantern serve, run the way the unit confines it, works: under PR_SET_MDWE (what
  MemoryDenyWriteExecute= sets) and strace, a streaming and a plain completion, /metrics, a
  SIGUSR1 dump (JSON from every process into --dump-dir) and a SIGTERM stop succeed, every system call it made is in @system-service,
  every socket it opened is in RestrictAddressFamilies=, and every writable-and-executable
  mapping it asked for (PCRE2's JIT) was refused.
- Every file opens with a comment saying what it is; conf/README.md names every file.

The helpers that read expressions out of conf/ (dashboard_exprs, alert_rules, instantiate,
strip_comparisons, selectors) serve test_prometheus.py too.
"""
import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import ltcheck
from ltcheck import check

try:
    import yaml
    from metrics_standin import METRICS, series_names
except ImportError as e:
    if __name__ == "__main__":
        print(f"skip: {e} (run tools/setup.sh)")
        sys.exit(77)
    raise

SRC = os.environ.get("LANTERN_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
CONF = os.path.join(SRC, "conf")
PROM_DIR = os.path.join(CONF, "prometheus")
DS_UID = "${DS_PROMETHEUS}"
MODEL_FILTER = 'model_name=~"$model_name"'

# ---- reading expressions out of conf/ (test_prometheus.py uses these too) ----


def dashboard():
    with open(os.path.join(CONF, "grafana", "lantern.json")) as f:
        return json.load(f)


def panels(d):
    """Every panel but rows, rows' collapsed panels included."""
    out = []
    for p in d.get("panels", []):
        if p.get("type") == "row":
            out += p.get("panels", [])
        else:
            out.append(p)
    return out


def dashboard_exprs(d):
    """[(label, expr)] for every query of every panel."""
    return [(f"{p.get('title')}/{t.get('refId')}", t.get("expr", ""))
            for p in panels(d) for t in p.get("targets", [])]


def alert_rules():
    with open(os.path.join(PROM_DIR, "alerts.yml")) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def instantiate(expr, model, rate_interval="30s"):
    """Grafana's variables as Grafana would expand them: $model_name as a regex matching model
    (inside a PromQL string, so backslashes doubled), $__rate_interval as rate_interval."""
    rx = re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\\\1", model)
    for v in ("${model_name}", "$model_name"):
        expr = expr.replace(v, rx)
    for v in ("${__rate_interval}", "$__rate_interval"):
        expr = expr.replace(v, rate_interval)
    return expr


COMPARISON = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?")


def strip_comparisons(expr):
    """expr with every comparison against a number removed: `a > 5 and b == 0` → `a and b`, the
    series an alert looks at whether or not it fires."""
    return COMPARISON.sub("", expr)


SELECTOR = re.compile(r'(?<![\w:"])(lantern:[A-Za-z0-9_:]+|up)(\s*\{[^}]*\})?(?![\w(])')


def selectors(expr):
    """The instant-vector selectors in expr (metric name and matchers, ranges dropped)."""
    return sorted({(m.group(1) + (m.group(2) or "")).replace(" ", "")
                   for m in SELECTOR.finditer(expr)})


def metric_names(expr):
    return set(re.findall(r"lantern:[A-Za-z0-9_:]+", expr))


def promtool(*args):
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def header_comment(path):
    with open(path) as f:
        first = f.readline()
    return first.startswith("# ") and os.path.basename(path) in first


# ---- prometheus.yml ----

def check_prometheus_yml(have_promtool):
    path = os.path.join(PROM_DIR, "prometheus.yml")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    check("prometheus.yml: opens with a comment naming it", header_comment(path))
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    job = jobs.get("lantern", {})
    targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    check("prometheus.yml: job lantern scrapes 127.0.0.1:8000", targets == ["127.0.0.1:8000"],
          targets)
    check("prometheus.yml: every 5 s",
          job.get("scrape_interval", cfg.get("global", {}).get("scrape_interval")) == "5s",
          cfg.get("global"))
    check("prometheus.yml: loads alerts.yml", "alerts.yml" in cfg.get("rule_files", []),
          cfg.get("rule_files"))
    if have_promtool:
        r = promtool("check", "config", path)
        check("promtool check config prometheus.yml", r.returncode == 0, r.stdout + r.stderr)


# ---- alerts.yml ----

def check_alerts(have_promtool):
    path = os.path.join(PROM_DIR, "alerts.yml")
    test_path = os.path.join(PROM_DIR, "alerts_test.yml")
    check("alerts.yml, alerts_test.yml: open with a comment naming them",
          header_comment(path) and header_comment(test_path))
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    for want in ("LanternTargetDown", "LanternEngineDown", "LanternEngineStalled",
                 "LanternQueueStuck", "LanternQueueGrowing", "LanternTTFTHigh",
                 "LanternKVCacheNearlyFull", "LanternSpanExportFailing", "LanternSpansDropped"):
        check(f"alerts.yml: {want} is there", want in names, names)
    known = series_names() | {"up"}
    for r in rules:
        a, ann = r["alert"], r.get("annotations", {})
        check(f"alerts.yml: {a}: severity critical or warning, a summary, a description with "
              "the value", r.get("labels", {}).get("severity") in ("critical", "warning") and
              ann.get("summary") and "$value" in ann.get("description", ""), r)
        unknown = metric_names(r["expr"]) - known
        check(f"alerts.yml: {a}: only lantern's metric names", not unknown, unknown)
        if a == "LanternTTFTHigh":
            check(f"alerts.yml: {a}: histogram_quantile over the rate of the buckets",
                  re.search(r"histogram_quantile\(0\.99,.*rate\(lantern:time_to_first_token"
                            r"_seconds_bucket\[", r["expr"], re.S), r["expr"])
    with open(test_path) as f:
        tests = yaml.safe_load(f)
    fires, quiet = set(), set()
    for t in tests["tests"]:
        for c in t.get("alert_rule_test", []):
            (fires if c.get("exp_alerts") else quiet).add(c["alertname"])
    check("alerts_test.yml: every alert fires in a case", set(names) <= fires,
          set(names) - fires)
    check("alerts_test.yml: every alert has a case where it does not fire", set(names) <= quiet,
          set(names) - quiet)
    if have_promtool:
        r = promtool("check", "rules", path)
        check("promtool check rules alerts.yml", r.returncode == 0, r.stdout + r.stderr)
        r = promtool("test", "rules", test_path)
        check("promtool test rules alerts_test.yml", r.returncode == 0, r.stdout + r.stderr)
    print("alert expressions:")
    for r in rules:
        print(f"  {r['alert']}: {' '.join(r['expr'].split())}")


# ---- grafana/lantern.json ----

def overlaps(a, b):
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and
            a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def check_dashboard(have_promtool, tmp):
    d = dashboard()
    check("lantern.json: a description says what it is", "lantern" in d.get("description", ""))
    check("lantern.json: schemaVersion for Grafana 10/11 (38..41)",
          38 <= d.get("schemaVersion", 0) <= 41, d.get("schemaVersion"))
    inputs = d.get("__inputs", [])
    check("lantern.json: the DS_PROMETHEUS data source input",
          any(i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource" and
              i.get("pluginId") == "prometheus" for i in inputs), inputs)
    var = {v["name"]: v for v in d.get("templating", {}).get("list", [])}.get("model_name", {})
    q = var.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    check("lantern.json: the model_name variable from "
          "label_values(lantern:num_requests_running, model_name)",
          var.get("type") == "query" and
          q == "label_values(lantern:num_requests_running, model_name)" and
          var.get("datasource", {}).get("uid") == DS_UID, var)
    ps = panels(d)
    ids = [p.get("id") for p in d["panels"]] + [p.get("id") for p in ps
                                                 if p not in d["panels"]]
    check("lantern.json: panel ids unique", len(ids) == len(set(ids)), ids)
    boxes = [(p["title"], p["gridPos"]) for p in d["panels"]]
    bad = [t for t, g in boxes if g["x"] < 0 or g["w"] <= 0 or g["x"] + g["w"] > 24]
    bad += [f"{a[0]} / {b[0]}" for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if overlaps(a[1], b[1])]
    check("lantern.json: panels fit the 24-column grid without overlapping", not bad, bad)
    known = series_names()
    for p in ps:
        t = p.get("title")
        tg = p.get("targets", [])
        check(f"panel {t!r}: data source ${{DS_PROMETHEUS}} and queries",
              p.get("datasource") == {"type": "prometheus", "uid": DS_UID} and tg and
              all(x.get("expr") and x.get("refId") and
                  x.get("datasource", {}).get("uid") == DS_UID for x in tg) and
              len({x["refId"] for x in tg}) == len(tg), p.get("datasource"))
    exprs = dashboard_exprs(d)
    for label, e in exprs:
        sels = [s for s in selectors(e) if s.startswith("lantern:")]
        check(f"{label}: every selector filters on $model_name",
              sels and all(MODEL_FILTER in s for s in sels), sels)
        unknown = metric_names(e) - known
        check(f"{label}: only lantern's metric names", not unknown, unknown)
    allx = "\n".join(e for _, e in exprs)
    need = {
        "TTFT p50/p90/p99": [rf"histogram_quantile\({q}, [^\n]*time_to_first_token_seconds_bucket"
                             for q in ("0.5", "0.9", "0.99")],
        "ITL p50/p90/p99": [rf"histogram_quantile\({q}, [^\n]*inter_token_latency_seconds_bucket"
                            for q in ("0.5", "0.9", "0.99")],
        "e2e p50/p90/p99": [rf"histogram_quantile\({q}, [^\n]*e2e_request_latency_seconds_bucket"
                            for q in ("0.5", "0.9", "0.99")],
        "prompt and generation throughput": [r"rate\(lantern:prompt_tokens_total",
                                             r"rate\(lantern:generation_tokens_total"],
        "running / waiting": [r"lantern:num_requests_running\{", r"lantern:num_requests_waiting\{"],
        "KV-cache usage": [r"lantern:kv_cache_usage_perc\{"],
        "prefix-cache hit rate": [r"prefix_cache_hits_total[^\n]*/[^\n]*prefix_cache_queries"],
        "preemptions": [r"rate\(lantern:num_preemptions_total"],
        "step time by rank": [r"by \(rank, le\) \(rate\(lantern:step_duration_seconds_bucket"],
        "all-reduce time by rank": [r"by \(rank, le\) \(rate\(lantern:allreduce_duration_seconds"],
        "success by finish reason": [r"by \(finished_reason\) \(rate\(lantern:request_success"],
        "memory by role": [r"by \(role[^)]*\) \(lantern:process_resident_memory_bytes"],
    }
    for what, pats in need.items():
        miss = [p for p in pats if not re.search(p, allx)]
        check(f"lantern.json: a panel for {what}", not miss, miss)
    if have_promtool:
        # promtool has no "parse this query" command; a rules file parses every expression
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:expr_{i}", "expr": instantiate(e, "tiny")}
            for i, (_, e) in enumerate(exprs)]}]}
        path = os.path.join(tmp, "dashboard_rules.yml")
        with open(path, "w") as f:
            yaml.safe_dump(rules, f)
        r = promtool("check", "rules", path)
        check(f"lantern.json: all {len(exprs)} expressions parse (promtool check rules)",
              r.returncode == 0 and f"{len(exprs)} rules found" in r.stdout,
              r.stdout + r.stderr)
    print("dashboard expressions:")
    for label, e in exprs:
        print(f"  {label}: {e}")
    print(f"  variable model_name: {q}")


# ---- otel-collector.yaml ----

def check_collector():
    path = os.path.join(CONF, "otel-collector.yaml")
    check("otel-collector.yaml: opens with a comment naming it", header_comment(path))
    with open(path) as f:
        text = f.read()
    c = yaml.safe_load(text)
    protos = c.get("receivers", {}).get("otlp", {}).get("protocols", {})
    check("otel-collector.yaml: OTLP gRPC on 127.0.0.1:4317 and HTTP on 127.0.0.1:4318",
          protos.get("grpc", {}).get("endpoint") == "127.0.0.1:4317" and
          protos.get("http", {}).get("endpoint") == "127.0.0.1:4318", protos)
    check("otel-collector.yaml: an otlp exporter and the debug one",
          any(k == "otlp" or k.startswith("otlp/") for k in c.get("exporters", {})) and
          "debug" in c.get("exporters", {}), list(c.get("exporters", {})))
    pipes = c.get("service", {}).get("pipelines", {})
    check("otel-collector.yaml: a traces pipeline", "traces" in pipes, list(pipes))
    used = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, p in pipes.items():
        for kind in used:
            refs = p.get(kind, [])
            used[kind] |= set(refs)
            undefined = [r for r in refs if r not in (c.get(kind) or {})]
            check(f"otel-collector.yaml: pipeline {name}: its {kind} are defined",
                  (refs or kind == "processors") and not undefined, undefined or refs)
        procs = p.get("processors", [])
        check(f"otel-collector.yaml: pipeline {name}: batch, after memory_limiter if any",
              "batch" in procs and ("memory_limiter" not in procs or
                                    procs[0] == "memory_limiter"), procs)
    for kind in ("receivers", "processors"):
        unused = set(c.get(kind) or {}) - used[kind]
        check(f"otel-collector.yaml: every one of its {kind} is in a pipeline", not unused,
              unused)
    check("otel-collector.yaml: says how to point lantern at it",
          "--otlp-traces-endpoint http://127.0.0.1:4317" in text)


# ---- lantern.service ----

def read_unit(path):
    """{section: [(key, value)]}, repeated keys kept, comments and continuations handled."""
    out, sec, pending = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = pending + raw.rstrip("\n")
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            if s.startswith("[") and s.endswith("]"):
                sec = s[1:-1]
                out.setdefault(sec, [])
                continue
            k, _, v = s.partition("=")
            out[sec].append((k.strip(), v.strip()))
    return out


def check_unit(tmp):
    path = os.path.join(CONF, "lantern.service")
    check("lantern.service: opens with a comment naming it", header_comment(path))
    unit = read_unit(path)
    svc = dict(unit.get("Service", []))
    multi = {}
    for k, v in unit.get("Service", []):
        multi.setdefault(k, []).append(v)
    want = {
        "User": "lantern", "Restart": "on-failure", "KillSignal": "SIGTERM",
        "KillMode": "mixed", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "RuntimeDirectory": "lantern",
        "Environment": "XDG_RUNTIME_DIR=%t/lantern", "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native", "SystemCallFilter": "@system-service",
    }
    for k, v in want.items():
        check(f"lantern.service: {k}={v}", v in multi.get(k, []), multi.get(k))
    stop = svc.get("TimeoutStopSec", "")
    m = re.fullmatch(r"(\d+)(s|min)?", stop)
    secs = int(m.group(1)) * (60 if m.group(2) == "min" else 1) if m else 0
    check("lantern.service: TimeoutStopSec lets the tree stop in order (>= 20 s: 5 s for open "
          "requests, then the engine and span flushes)", secs >= 20, stop)
    check("lantern.service: LimitNOFILE raised", int(svc.get("LimitNOFILE", "0")) >= 4096,
          svc.get("LimitNOFILE"))
    check("lantern.service: ReadWritePaths for its dump directory, which StateDirectory makes",
          svc.get("ReadWritePaths") == "/var/lib/lantern/dumps" and
          svc.get("StateDirectory") == "lantern/dumps", svc.get("ReadWritePaths"))
    argv = shlex.split(svc.get("ExecStart", ""))
    check("lantern.service: ExecStart runs /usr/local/bin/lantern serve on the model, "
          "127.0.0.1:8000, dumps into the state directory",
          argv[:3] == ["/usr/local/bin/lantern", "serve", "/var/lib/lantern/model.gguf"] and
          argv[3:] == ["--host", "127.0.0.1", "--port", "8000",
                       "--dump-dir", "/var/lib/lantern/dumps"], argv)
    binary = os.environ.get("LANTERN_BIN")
    if binary and os.access(binary, os.X_OK):
        r = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True,
                           timeout=30)
        listed = set(re.findall(r"^\s+(--[a-z0-9-]+)", r.stdout + r.stderr, re.M))
        flags = [a for a in argv if a.startswith("--")]
        check("lantern.service: ExecStart's flags are flags `lantern serve --help` lists",
              flags and set(flags) <= listed, f"{flags} vs {sorted(listed)}")
    else:
        print("note: no LANTERN_BIN: ExecStart's flags not checked against --help")
    sa = shutil.which("systemd-analyze")
    if sa and binary:
        # verify wants ExecStart's binary to exist: the built one stands in for the installed one
        copy = os.path.join(tmp, "lantern.service")
        with open(path) as f:
            text = f.read().replace("ExecStart=/usr/local/bin/lantern", f"ExecStart={binary}")
        with open(copy, "w") as f:
            f.write(text)
        r = subprocess.run([sa, "verify", "--man=no", copy], capture_output=True, text=True,
                           timeout=60)
        out = (r.stdout + r.stderr).strip()
        check("systemd-analyze verify lantern.service: exit 0 and not one warning",
              r.returncode == 0 and not out, out)
    else:
        print("note: systemd-analyze or LANTERN_BIN missing: unit checked by its keys only")
    return multi


def syscall_set(sa, group, depth=0):
    r = subprocess.run([sa, "syscall-filter", group], capture_output=True, text=True, timeout=30)
    out = set()
    for line in r.stdout.splitlines()[1:]:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        out |= syscall_set(sa, s, depth + 1) if s.startswith("@") and depth < 5 else {s}
    return out


def check_sandbox(tmp, multi):
    """lantern serve the way lantern.service confines it: MDWE, system calls, socket families."""
    binary, sa, strace = (os.environ.get("LANTERN_BIN"), shutil.which("systemd-analyze"),
                          shutil.which("strace"))
    if not (binary and sa and strace):
        print("note: LANTERN_BIN, systemd-analyze or strace missing: the unit's sandbox not run")
        return
    if subprocess.run([strace, "-f", "-qq", "-o", os.devnull, "true"],
                      capture_output=True).returncode != 0:
        print("note: strace cannot trace here (ptrace refused): the unit's sandbox not run")
        return
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
    if libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) < 0:
        print("note: this kernel has no PR_SET_MDWE (Linux 6.3+): the unit's sandbox not run")
        return
    try:
        from otlp_receivers import GrpcReceiver
    except ImportError as e:
        print(f"note: {e}: the unit's sandbox not run")
        return
    import httpx

    model = ltcheck.tiny_model(tmp)
    allowed = syscall_set(sa, multi["SystemCallFilter"][0])
    families = set(multi["RestrictAddressFamilies"][0].split())
    rec = GrpcReceiver()
    trace_out = os.path.join(tmp, "strace.out")
    dump_dir = tempfile.mkdtemp(dir=tmp)  # as the unit's --dump-dir

    # A small Python process sets MDWE on itself and execs strace, which lantern under it
    # inherits. Not preexec_fn: that forks this process, whose gRPC receiver threads' fork
    # handlers then run in the child (seen: "epoll_wait error: Bad file descriptor" and no
    # server, now and then); without it the child is spawned without them.
    mdwe = ("import ctypes, os, sys\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
            "    os._exit(99)\n"
            "os.execv(sys.argv[1], sys.argv[1:])\n")

    # LeakSanitizer cannot run under ptrace and fails the exit status of a sanitized build; the
    # other ASan checks still run.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="200",
               XDG_RUNTIME_DIR=tempfile.mkdtemp(dir=tmp),
               ASAN_OPTIONS=(asan + ":" if asan else "") + "detect_leaks=0")
    p = subprocess.Popen([sys.executable, "-c", mdwe,
                          strace, "-f", "-qq", "-o", trace_out, binary, "serve", model,
                          "--port", "0", "--tensor-parallel-size", "2", "--threads", "1",
                          "--served-model-name", "tiny",
                          "--otlp-traces-endpoint", f"http://127.0.0.1:{rec.port}",
                          "--dump-dir", dump_dir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=env)
    lines, base = [], []
    ready = threading.Event()

    def pump():
        for line in p.stderr:
            lines.append(line)
            m = re.search(r"listening on (http://\S+:\d+)", line)
            if m and not base:
                base.append(m.group(1))
                ready.set()
        ready.set()
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    status, front = None, None
    try:
        ready.wait(120)
        if not check("sandbox: lantern serve starts under MDWE and strace", base,
                     "".join(lines)[-1500:]):
            return
        url = base[0]
        body = {"model": "tiny", "prompt": "The unit's sandbox", "max_tokens": 8}
        with httpx.Client(timeout=60) as c:
            r1 = c.post(url + "/v1/completions", json=dict(body, stream=True))
            r2 = c.post(url + "/v1/completions", json=dict(body, n=2))
            r3 = c.get(url + "/metrics")
        check("sandbox: a streaming and a plain completion, /metrics",
              r1.status_code == 200 and "[DONE]" in r1.text and r2.status_code == 200 and
              r3.status_code == 200 and "lantern:" in r3.text,
              f"{r1.status_code} {r2.status_code} {r3.status_code}")
        # to lantern's frontend itself: strace would die of SIGUSR1
        front = int(re.search(r"frontend pid=(\d+)", "".join(lines)).group(1))
        os.kill(front, signal.SIGUSR1)
        deadline = time.time() + 10
        while time.time() < deadline and len(os.listdir(dump_dir)) < 4:
            time.sleep(0.1)
        os.kill(front, signal.SIGTERM)
        status = p.wait(60)  # strace ends with the status of the process it started
    finally:
        if p.poll() is None:
            p.kill()  # strace: its tracees live on, detached; the tree goes with its frontend
            p.wait()
            if front is None:
                m = re.search(r"frontend pid=(\d+)", "".join(lines))
                front = int(m.group(1)) if m else None
            if front:
                try:
                    os.kill(front, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        rec.close()
    t.join(5)
    log = "".join(lines)
    check("sandbox: SIGUSR1 dump, then a clean stop (exit 0)",
          "state dump" in log and status == 0, f"status {status}: {log[-1500:]}")
    dumps = sorted(re.sub(r"-\d+\.json$", "", n) for n in os.listdir(dump_dir))
    check("sandbox: --dump-dir has every process's JSON state (frontend, engine, 2 workers)",
          dumps == ["engine", "frontend", "worker-0", "worker-1"], dumps)
    with open(trace_out, errors="replace") as f:
        trace = f.read()
    calls = set(re.findall(r"^\d+\s+([a-z_0-9]+)\(", trace, re.M))
    check(f"sandbox: all {len(calls)} system calls lantern made are in "
          f"{multi['SystemCallFilter'][0]}", calls and calls <= allowed,
          sorted(calls - allowed))
    fams = set(re.findall(r"\bsocket(?:pair)?\((AF_[A-Z0-9]+)", trace))
    check(f"sandbox: every socket it opened is in RestrictAddressFamilies ({sorted(fams)})",
          fams and fams <= families, sorted(fams - families))
    # The one writable-and-executable mapping lantern asks for is PCRE2's JIT (the tokenizer's
    # pre-split regex): refused here as under the unit, PCRE2 interprets instead (same tokens).
    # strace splits a call another thread interrupts: "PID mmap(... <unfinished ...>" and later
    # "PID <... mmap resumed>...) = -1 EACCES": the result is on the resumed line.
    wx = []
    for m in re.finditer(r"^(\d+)\s+(mmap|mprotect|pkey_mprotect)\([^\n]*PROT_WRITE\|PROT_EXEC"
                         r"[^\n]*", trace, re.M):
        line = m.group(0)
        if line.endswith("<unfinished ...>"):
            r = re.compile(rf"^{m.group(1)}\s+<\.\.\. {m.group(2)} resumed>[^\n]*", re.M)
            resumed = r.search(trace, m.end())
            line += " " + (resumed.group(0) if resumed else "(never resumed)")
        wx.append(line)
    check(f"sandbox: MDWE in force: every writable-and-executable mapping refused "
          f"({len(wx)} asked for), and lantern served all the same",
          all("EACCES" in w for w in wx), [w for w in wx if "EACCES" not in w][:3])


# ---- README and headers ----

def check_readme():
    path = os.path.join(CONF, "README.md")
    with open(path) as f:
        text = f.read()
    files = []
    for root, _, names in os.walk(CONF):
        files += [os.path.relpath(os.path.join(root, n), CONF) for n in names
                  if n != "README.md"]
    missing = [f for f in files if f"`{f}`" not in text]
    check("conf/README.md names every file in conf/", not missing, missing)


def main():
    have_promtool = shutil.which("promtool") is not None
    if not have_promtool:
        print("note: promtool missing (tools/setup.sh installs Debian's prometheus): the "
              "promtool checks are skipped")
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="lantern-test-conf-")
    try:
        check_prometheus_yml(have_promtool)
        check_alerts(have_promtool)
        check_dashboard(have_promtool, tmp)
        check_collector()
        multi = check_unit(tmp)
        check_readme()
        check_sandbox(tmp, multi)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_conf: {time.time() - t0:.1f} s")
    return ltcheck.summary(skipped=not have_promtool)


if __name__ == "__main__":
    sys.exit(main())
