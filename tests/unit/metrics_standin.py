"""lantern's metrics contract (names, types, labels) and a stand-in exporter that serves it.

METRICS lists every metric conf/ (the Grafana dashboard, the alert rules) may use, as the
server exposes it at /metrics: name as Prometheus stores it, type, and labels beyond the
job/instance of the scrape. test_conf.py checks that conf/ uses no other name; test_prometheus.py
checks that a scraped server exposes them all.

Standin serves exactly that set, with plausible values that move with time (a steady load of a
few requests per second), over prometheus_client's exposition: OpenMetrics when the scraper asks
for it (then TTFT and e2e buckets carry trace-id exemplars), the 0.0.4 text format otherwise. It
lets the conf/ checks run before the server exposes the whole set:

    python tests/unit/metrics_standin.py --port 8000      # by hand, for a Prometheus to scrape
    LANTERN_METRICS_STANDIN=1 <python> tests/unit/test_prometheus.py   # the test, against it

Importing the module needs only the standard library; Standin needs prometheus_client
(tools/requirements.txt).
"""
import math
import threading
import time

# ---- the contract ----

_M = ("model_name", "engine")  # every metric's labels unless said otherwise
_RANK = _M + ("rank",)
# per-process series: the frontend belongs to no engine, so these carry no engine label
_PROC = ("model_name", "role", "rank")

# vLLM's buckets (vllm/v1/metrics/loggers.py) for the request histograms; lantern's own
# histograms get buckets fit for their scale (the stand-in's choice: the names are the contract).
_TTFT_B = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
           10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
_ITL_B = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
          20.0, 40.0, 80.0]
_REQ_B = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
          240.0, 480.0, 960.0, 1920.0, 7680.0]
_TOK_B = [1, 2, 5, 10, 20, 50, 100, 200, 500]  # 1-2-5 up to max_model_len (512 here)
_ITER_B = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
_N_B = [1, 2, 5, 10, 20]
_STEP_B = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
_AR_B = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01]

# name -> (type, labels, stand-in: value per request or per second / histogram model)
# Histograms: (buckets, median, sigma, observations per request); log-normal observations.
METRICS = {
    # gauges
    "lantern:num_requests_running": ("gauge", _M),
    "lantern:num_requests_waiting": ("gauge", _M),
    "lantern:kv_cache_usage_perc": ("gauge", _M),
    "lantern:engine_alive": ("gauge", ("model_name",)),
    "lantern:engine_stalled": ("gauge", ("model_name",)),
    "lantern:cache_config_info": ("gauge", _M + ("block_size", "num_gpu_blocks",
                                                 "enable_prefix_caching")),
    "lantern:kv_cache_blocks": ("gauge", _M + ("state",)),
    "lantern:process_resident_memory_bytes": ("gauge", _PROC),
    # counters
    "lantern:prompt_tokens_total": ("counter", _M),
    "lantern:generation_tokens_total": ("counter", _M),
    "lantern:num_preemptions_total": ("counter", _M),
    "lantern:prefix_cache_queries_total": ("counter", _M),
    "lantern:prefix_cache_hits_total": ("counter", _M),
    "lantern:request_success_total": ("counter", _M + ("finished_reason",)),
    "lantern:client_disconnects_total": ("counter", _M),
    "lantern:traceparent_malformed_total": ("counter", _M),
    "lantern:spans_exported_total": ("counter", _PROC),  # only with tracing on
    "lantern:spans_dropped_total": ("counter", _PROC),
    "lantern:spans_failed_total": ("counter", _PROC),
    # request histograms (vLLM's)
    "lantern:time_to_first_token_seconds": ("histogram", _M, (_TTFT_B, 0.05, 0.8, 1)),
    "lantern:inter_token_latency_seconds": ("histogram", _M, (_ITL_B, 0.02, 0.5, 15)),
    "lantern:time_per_output_token_seconds": ("histogram", _M, (_ITL_B, 0.02, 0.5, 15)),
    "lantern:request_time_per_output_token_seconds": ("histogram", _M, (_ITL_B, 0.025, 0.4, 1)),
    "lantern:e2e_request_latency_seconds": ("histogram", _M, (_REQ_B, 0.6, 0.6, 1)),
    "lantern:request_queue_time_seconds": ("histogram", _M, (_REQ_B, 0.01, 1.0, 1)),
    "lantern:request_prefill_time_seconds": ("histogram", _M, (_REQ_B, 0.04, 0.7, 1)),
    "lantern:request_decode_time_seconds": ("histogram", _M, (_REQ_B, 0.5, 0.6, 1)),
    "lantern:request_inference_time_seconds": ("histogram", _M, (_REQ_B, 0.55, 0.6, 1)),
    "lantern:request_prompt_tokens": ("histogram", _M, (_TOK_B, 40, 0.8, 1)),
    "lantern:request_generation_tokens": ("histogram", _M, (_TOK_B, 16, 0.5, 1)),
    "lantern:iteration_tokens_total": ("histogram", _M, (_ITER_B, 20, 1.0, 10)),
    "lantern:request_params_n": ("histogram", _M, (_N_B, 1, 0.3, 1)),
    "lantern:request_params_max_tokens": ("histogram", _M, (_TOK_B, 16, 0.4, 1)),
    # lantern's own histograms
    "lantern:step_duration_seconds": ("histogram", _RANK, (_STEP_B, 0.004, 0.5, 15)),
    "lantern:forward_duration_seconds": ("histogram", _RANK, (_STEP_B, 0.003, 0.5, 15)),
    "lantern:allreduce_duration_seconds": ("histogram", _RANK, (_AR_B, 0.00006, 0.6, 60)),
    "lantern:tokenize_duration_seconds": ("histogram", _M, (_AR_B, 0.0002, 0.5, 1)),
}
# Present only with more than one tensor-parallel rank / with tracing on.
ONLY_WITH_RANKS = {"lantern:allreduce_duration_seconds"}
ONLY_WITH_TRACING = {"lantern:spans_exported_total", "lantern:spans_dropped_total",
                     "lantern:spans_failed_total"}


def series_names():
    """Every series name Prometheus stores for METRICS (histograms: _bucket, _sum, _count)."""
    out = set()
    for name, spec in METRICS.items():
        if spec[0] == "histogram":
            out |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            out.add(name)
    return out


# ---- the stand-in ----

def _cdf(x, median, sigma):
    return 0.5 * (1 + math.erf((math.log(x) - math.log(median)) / (sigma * math.sqrt(2))))


class Standin:
    """Serves METRICS at http://127.0.0.1:<port>/metrics (port 0: a free one, in .port) from a
    thread; .accept holds the Accept header of every scrape. close() stops it."""

    def __init__(self, model_name="tiny", ranks=2, port=0, rps=3.0):
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
        from socketserver import ThreadingMixIn
        from prometheus_client import CollectorRegistry
        from prometheus_client import exposition
        from prometheus_client.openmetrics import exposition as om

        self.model, self.ranks, self.rps, self.t0 = model_name, ranks, rps, time.time()
        self.accept = []
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)

        # Our own negotiation, not make_wsgi_app's: prometheus_client (0.22 on) writes OpenMetrics
        # sample names with ':' turned into '_' while HELP/TYPE keep it (client_python#1177), so
        # a name like lantern:x would not reach Prometheus. escaping=allow-utf-8 leaves names
        # that are valid in the classic character set (ours) as they are.
        def app(environ, start_response):
            accept = environ.get("HTTP_ACCEPT", "")
            self.accept.append(accept)
            if "application/openmetrics-text" in accept:
                body = om.generate_latest(registry, escaping=om.ALLOWUTF8)
                ctype = om.CONTENT_TYPE_LATEST
            else:
                body = exposition.generate_latest(registry)
                ctype = exposition.CONTENT_TYPE_PLAIN_0_0_4
            start_response("200 OK", [("Content-Type", ctype),
                                      ("Content-Length", str(len(body)))])
            return [body]

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class Quiet(WSGIRequestHandler):
            def log_message(self, *a):
                pass

        self.httpd = make_server("127.0.0.1", port, app, Server, handler_class=Quiet)
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # prometheus_client's collector interface
    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        from prometheus_client.samples import Exemplar

        t = time.time() - self.t0
        n_req = self.rps * t  # requests finished so far
        m, e = self.model, "0"
        ranks = [str(r) for r in range(self.ranks)]

        def labels_for(name):
            labels = METRICS[name][1]
            rows = [{}]
            for lb in labels:
                vals = {"model_name": [m], "engine": [e], "rank": ranks,
                        "finished_reason": ["stop", "length", "abort", "error"],
                        "state": ["used", "free", "cached"],
                        "block_size": ["16"], "num_gpu_blocks": ["4096"],
                        "enable_prefix_caching": ["True"]}.get(lb)
                if lb == "role":
                    continue  # set with rank below
                rows = [dict(r, **{lb: v}) for r in rows for v in vals]
            if "role" in labels:
                roles = [("frontend", "-1"), ("engine", "-1")] + [("worker", r) for r in ranks]
                rows = [dict(r, role=ro, rank=rk) for r in rows if r.get("rank") == ranks[0]
                        for ro, rk in roles]
            return [tuple(r[lb] for lb in labels) for r in rows]

        wave = 0.5 + 0.5 * math.sin(t / 7.0)  # load that rises and falls
        gauges = {
            "lantern:num_requests_running": lambda lv: round(2 + 6 * wave),
            "lantern:num_requests_waiting": lambda lv: round(3 * wave),
            "lantern:kv_cache_usage_perc": lambda lv: 0.1 + 0.5 * wave,
            "lantern:engine_alive": lambda lv: 1,
            "lantern:engine_stalled": lambda lv: 0,
            "lantern:cache_config_info": lambda lv: 1,
            "lantern:kv_cache_blocks": lambda lv: {"used": 400 + 2000 * wave, "cached": 300,
                                                   "free": 3396 - 2000 * wave}[lv[2]],
            "lantern:process_resident_memory_bytes": lambda lv: {
                "frontend": 60e6, "engine": 40e6, "worker": 300e6}[lv[1]],
        }
        per_req = {  # counters: per finished request
            "lantern:prompt_tokens_total": lambda lv: 40,
            "lantern:generation_tokens_total": lambda lv: 16,
            "lantern:num_preemptions_total": lambda lv: 0.02,
            "lantern:prefix_cache_queries_total": lambda lv: 40,
            "lantern:prefix_cache_hits_total": lambda lv: 24,
            "lantern:request_success_total": lambda lv: {"stop": 0.6, "length": 0.37,
                                                         "abort": 0.02, "error": 0.01}[lv[2]],
            "lantern:client_disconnects_total": lambda lv: 0.02,
            "lantern:traceparent_malformed_total": lambda lv: 0.01,
            "lantern:spans_exported_total": lambda lv: {"frontend": 5, "engine": 3,
                                                        "worker": 0}[lv[1]],
            "lantern:spans_dropped_total": lambda lv: 0,
            "lantern:spans_failed_total": lambda lv: 0,
        }
        for name, spec in METRICS.items():
            kind, labels = spec[0], list(spec[1])
            if name in ONLY_WITH_RANKS and self.ranks < 2:
                continue
            if kind == "gauge":
                f = GaugeMetricFamily(name, name, labels=labels)
                for lv in labels_for(name):
                    f.add_metric(lv, float(gauges[name](lv)))
            elif kind == "counter":
                f = CounterMetricFamily(name[:-len("_total")], name, labels=labels)
                for lv in labels_for(name):
                    f.add_metric(lv, math.floor(n_req * per_req[name](lv)))
            else:
                buckets, median, sigma, per = spec[2]
                f = HistogramMetricFamily(name, name, labels=labels)
                count = math.floor(n_req * per)
                mean = median * math.exp(sigma * sigma / 2)
                for lv in labels_for(name):
                    bs = []
                    for le in buckets:
                        b = (repr(float(le)), math.floor(count * _cdf(le, median, sigma)))
                        if name in ("lantern:time_to_first_token_seconds",
                                    "lantern:e2e_request_latency_seconds") and \
                                le >= median and not any(len(x) == 3 for x in bs):
                            b += (Exemplar({"trace_id": "%032x" % (int(t) + 1)},
                                           median, time.time()),)
                        bs.append(b)
                    bs.append(("+Inf", count))
                    f.add_metric(lv, bs, count * mean)
            yield f


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model-name", default="tiny")
    ap.add_argument("--ranks", type=int, default=2)
    a = ap.parse_args()
    s = Standin(a.model_name, a.ranks, a.port)
    print(f"stand-in lantern metrics on http://127.0.0.1:{s.port}/metrics", flush=True)
    try:
        s.thread.join()
    except KeyboardInterrupt:
        s.close()


if __name__ == "__main__":
    main()
