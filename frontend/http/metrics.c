/*
 * metrics.c — GET /metrics: vLLM's V1 metric set under `lantern:` (or `vllm:` with
 * --metrics-prefix vllm, so vLLM's dashboards and alerts work unchanged), with the same names,
 * types, labels (model_name, engine), units and buckets, plus what vLLM lacks: per-rank step,
 * forward and all-reduce times, tokenization time, KV blocks by state, span counts and resident
 * memory per process, the engine's health.
 *
 * Everything the engine and the workers measure is read from the tree's shared metrics region
 * (telemetry/metrics.h) at scrape time: no IPC per scrape, no lock on any step path. What only
 * the frontend sees (e2e latency, tokenization, n, disconnects) lives in srv_t.
 *
 * Format: Prometheus text 0.0.4, or OpenMetrics 1.0 with exemplars (the trace id of the last
 * request seen in a latency bucket) when the scraper's Accept header asks for
 * application/openmetrics-text.
 */
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "lt.h"
#include "metrics.h"
#include "telemetry.h"

static const char *const k_fin[TEL_FIN_COUNT] = {"stop", "length", "abort", "error"};

static double ld(const _Atomic int64_t *v) {
    return (double)atomic_load_explicit((_Atomic int64_t *)v, memory_order_relaxed);
}
static double lu(const _Atomic uint64_t *v) {
    return (double)atomic_load_explicit((_Atomic uint64_t *)v, memory_order_relaxed);
}

/* The scheduler's state and counters (vLLM's names). */
static void engine_scalars(tel_expo_t *e, const tel_engine_metrics_t *m) {
    tel_expo_gauge(e, "num_requests_running", "Number of requests in model execution batches.",
                   NULL, ld(&m->running));
    tel_expo_gauge(e, "num_requests_waiting", "Number of requests waiting to be processed.", NULL,
                   ld(&m->waiting));
    tel_expo_gauge(e, "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", NULL,
                   tel_get_double(&m->kv_usage_bits));
    tel_expo_counter(e, "prefix_cache_queries",
                     "Prefix cache queries, in terms of number of queried tokens.", NULL,
                     lu(&m->prefix_queries));
    tel_expo_counter(e, "prefix_cache_hits",
                     "Prefix cache hits, in terms of number of cached tokens.", NULL,
                     lu(&m->prefix_hits));
    tel_expo_counter(e, "num_preemptions", "Cumulative number of preemption from the engine.", NULL,
                     lu(&m->preemptions));
    tel_expo_counter(e, "prompt_tokens", "Number of prefill tokens processed.", NULL,
                     lu(&m->prompt_tokens));
    tel_expo_counter(e, "generation_tokens", "Number of generation tokens processed.", NULL,
                     lu(&m->generation_tokens));
    for (int k = 0; k < TEL_FIN_COUNT; k++) {
        char l[64];
        snprintf(l, sizeof l, "finished_reason=\"%s\"", k_fin[k]);
        if (k == 0)
            tel_expo_counter(e, "request_success", "Count of successfully processed requests.", l,
                             lu(&m->finished[k]));
        else
            tel_expo_more(e, "request_success", true, l, lu(&m->finished[k]));
    }
    char info[256];
    snprintf(info, sizeof info,
             "block_size=\"%lld\",num_gpu_blocks=\"%lld\",enable_prefix_caching=\"%s\"",
             (long long)ld(&m->block_size), (long long)ld(&m->kv_total),
             atomic_load(&((tel_engine_metrics_t *)m)->prefix_caching) ? "True" : "False");
    tel_expo_gauge(e, "cache_config_info", "Information of the LLMEngine CacheConfig", info, 1);
}

/* The request histograms the engine records (vLLM's names and buckets). */
static void engine_hists(tel_expo_t *e, const tel_metrics_shm_t *sh) {
    const tel_engine_metrics_t *m = &sh->engine;
    tel_bounds_t tok;
    tel_bounds_125(&tok, sh->max_model_len > 0 ? sh->max_model_len : 1);
    static const struct {
        int id;
        const char *name, *help;
        const tel_bounds_t *b; /* NULL: the token-count buckets */
    } hs[] = {
        {TEL_H_TTFT, "time_to_first_token_seconds", "Histogram of time to first token in seconds.",
         &TEL_B_TTFT},
        {TEL_H_ITL, "inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
         &TEL_B_ITL},
        {TEL_H_TPOT, "time_per_output_token_seconds",
         "Histogram of time per output token in seconds.", &TEL_B_ITL},
        {TEL_H_REQ_TPOT, "request_time_per_output_token_seconds",
         "Histogram of time_per_output_token_seconds per request.", &TEL_B_ITL},
        {TEL_H_PREFILL_PER_TOKEN, "time_per_prefill_token_request_seconds",
         "Time spent per token during prefill phase in seconds", &TEL_B_PREFILL_TOKEN},
        {TEL_H_QUEUE, "request_queue_time_seconds",
         "Histogram of time spent in WAITING phase for request.", &TEL_B_LATENCY},
        {TEL_H_INFERENCE, "request_inference_time_seconds",
         "Histogram of time spent in RUNNING phase for request.", &TEL_B_LATENCY},
        {TEL_H_PREFILL, "request_prefill_time_seconds",
         "Histogram of time spent in PREFILL phase for request.", &TEL_B_LATENCY},
        {TEL_H_DECODE, "request_decode_time_seconds",
         "Histogram of time spent in DECODE phase for request.", &TEL_B_LATENCY},
        {TEL_H_PROMPT_TOKENS, "request_prompt_tokens", "Number of prefill tokens processed.", NULL},
        {TEL_H_GEN_TOKENS, "request_generation_tokens", "Number of generation tokens processed.",
         NULL},
        {TEL_H_MAX_GEN_TOKENS, "request_max_num_generation_tokens",
         "Histogram of maximum number of requested generation tokens.", NULL},
        {TEL_H_PARAMS_MAX_TOKENS, "request_params_max_tokens",
         "Histogram of the max_tokens request parameter.", NULL},
        {TEL_H_ITERATION, "iteration_tokens_total",
         "Histogram of number of tokens per engine_step.", &TEL_B_ITERATION},
    };
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
        tel_expo_hist(e, hs[i].name, hs[i].help, NULL, &m->hist[hs[i].id],
                      hs[i].b ? hs[i].b : &tok);
}

/* Per rank and per process: what vLLM does not have. */
static void ranks(tel_expo_t *e, const tel_metrics_shm_t *sh) {
    static const struct {
        int id;
        const char *name, *help;
    } hs[] = {{TEL_H_STEP, "step_duration_seconds", "Time a worker rank spends on one step."},
              {TEL_H_FORWARD, "forward_duration_seconds", "Time of one forward pass, per rank."},
              {TEL_H_ALLREDUCE, "allreduce_duration_seconds",
               "Time of one tensor-parallel all-reduce, per rank."}};
    for (size_t k = 0; k < sizeof hs / sizeof hs[0]; k++)
        for (int r = 0; r < sh->n_ranks; r++) {
            char l[32];
            snprintf(l, sizeof l, "rank=\"%d\"", r);
            if (r == 0)
                tel_expo_hist(e, hs[k].name, hs[k].help, l, &sh->rank[r].hist[hs[k].id],
                              &TEL_B_STEP);
            else
                tel_expo_hist_more(e, hs[k].name, l, &sh->rank[r].hist[hs[k].id], &TEL_B_STEP);
        }
    const tel_engine_metrics_t *m = &sh->engine;
    static const char *const states[3] = {"used", "free", "cached"};
    const _Atomic int64_t *vals[3] = {&m->kv_used, &m->kv_free, &m->kv_cached};
    for (int k = 0; k < 3; k++) {
        char l[32];
        snprintf(l, sizeof l, "state=\"%s\"", states[k]);
        if (k == 0)
            tel_expo_gauge(e, "kv_cache_blocks",
                           "KV-cache blocks by state (every rank holds the same block ids).", l,
                           ld(vals[k]));
        else
            tel_expo_more(e, "kv_cache_blocks", false, l, ld(vals[k]));
    }
}

/* Resident memory and span counts of every process of the tree. */
static void processes(tel_expo_t *e, const tel_metrics_shm_t *sh, pid_t self) {
    char l[64];
    snprintf(l, sizeof l, "role=\"frontend\",rank=\"-1\"");
    tel_expo_gauge(e, "process_resident_memory_bytes",
                   "Resident memory of each process of the tree.", l,
                   (double)tel_process_rss(self));
    snprintf(l, sizeof l, "role=\"engine\",rank=\"-1\"");
    tel_expo_more(e, "process_resident_memory_bytes", false, l,
                  (double)tel_process_rss(atomic_load(&((tel_metrics_shm_t *)sh)->engine.pid)));
    for (int r = 0; r < sh->n_ranks; r++) {
        snprintf(l, sizeof l, "role=\"worker\",rank=\"%d\"", r);
        tel_expo_more(
            e, "process_resident_memory_bytes", false, l,
            (double)tel_process_rss(atomic_load(&((tel_metrics_shm_t *)sh)->rank[r].pid)));
    }
    /* spans: the frontend's from its own processor, the others' from the region */
    tel_process_stats_t ts;
    tel_process_stats(&ts);
    const char *fams[3] = {"spans_exported", "spans_dropped", "spans_failed"};
    const char *helps[3] = {"Spans a collector accepted.",
                            "Spans dropped: the export queue was full.",
                            "Spans not exported: the collector failed or did not answer in time."};
    for (int k = 0; k < 3; k++) {
        bool first = true;
        for (int p = -2; p < sh->n_ranks; p++) { /* -2 frontend, -1 engine, else a rank */
            const tel_span_counts_t *c = p == -1  ? &sh->engine.spans
                                         : p >= 0 ? &sh->rank[p].spans
                                                  : NULL;
            bool on = c ? atomic_load(&((tel_span_counts_t *)c)->enabled) : ts.enabled;
            if (!on) continue;
            double v = c ? lu(k == 0   ? &c->exported
                              : k == 1 ? &c->dropped
                                       : &c->failed)
                         : (double)(k == 0   ? ts.bsp.exported
                                    : k == 1 ? ts.bsp.dropped
                                             : ts.bsp.failed);
            snprintf(l, sizeof l, "role=\"%s\",rank=\"%d\"",
                     p == -2   ? "frontend"
                     : p == -1 ? "engine"
                               : "worker",
                     p < 0 ? -1 : p);
            if (first)
                tel_expo_counter(e, fams[k], helps[k], l, v);
            else
                tel_expo_more(e, fams[k], true, l, v);
            first = false;
        }
    }
}

/* Connection management (conns.c): open connections by phase, and what it closed or refused. */
static void http_connections(tel_expo_t *e, srv_t *s) {
    int n[4];
    fe_http_conns_count(s, &n[0], &n[1], &n[2], &n[3]);
    static const char *const phase[4] = {"phase=\"headers\"", "phase=\"request\"", "phase=\"idle\"",
                                         "phase=\"refusing\""};
    tel_expo_gauge(e, "http_connections",
                   "Open HTTP connections: sending their request headers, in a request, idle "
                   "between requests, let in past a limit only to be answered 503/429.",
                   phase[0], n[0]);
    for (int k = 1; k < 4; k++) tel_expo_more(e, "http_connections", false, phase[k], n[k]);
    const struct {
        const char *label;
        atomic_ullong *v;
    } closed[] = {{"reason=\"evicted\"", &s->n_conn_evicted},
                  {"reason=\"header_timeout\"", &s->n_conn_timed_out},
                  {"reason=\"idle_timeout\"", &s->n_conn_idle_closed},
                  {"reason=\"refused_at_accept\"", &s->n_conn_refused},
                  {"reason=\"server_full_503\"", &s->n_conn_full},
                  {"reason=\"per_ip_cap_429\"", &s->n_conn_per_ip}};
    tel_expo_counter(e, "http_connections_shed",
                     "HTTP connections closed or refused by connection management: evicted (idle, "
                     "to make room), past the header or idle timeout, refused at accept, answered "
                     "503 (full) or 429 (the address at its cap).",
                     closed[0].label, (double)atomic_load(closed[0].v));
    for (size_t k = 1; k < sizeof closed / sizeof closed[0]; k++)
        tel_expo_more(e, "http_connections_shed", true, closed[k].label,
                      (double)atomic_load(closed[k].v));
}

/* What the frontend itself observes. */
static void frontend(tel_expo_t *e, srv_t *s, bool stalled) {
    tel_expo_hist(e, "e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                  NULL, &s->h_e2e, &TEL_B_LATENCY);
    tel_expo_hist(e, "request_params_n", "Histogram of the n request parameter.", NULL, &s->h_n,
                  &TEL_B_N);
    tel_expo_hist(e, "tokenize_duration_seconds",
                  "Time to render and tokenize a request's prompts.", NULL, &s->h_tokenize,
                  &TEL_B_FAST);
    tel_expo_hist(e, "detokenize_duration_seconds",
                  "Time a request's incremental detokenization took in all.", NULL,
                  &s->h_detokenize, &TEL_B_FAST);
    tel_expo_counter(e, "client_disconnects",
                     "Requests whose client went away before the end (aborted in the engine).",
                     NULL, (double)atomic_load(&s->n_disconnects));
    lantern_stats_t st;
    lantern_stats(s->l, &st);
    tel_expo_gauge(e, "undelivered_bytes",
                   "Bytes of generated output waiting for clients to read it (in liblantern).",
                   NULL, (double)st.undelivered_bytes);
    tel_expo_counter(e, "undelivered_aborts",
                     "Requests aborted because their client did not read their output "
                     "(--max-undelivered-bytes[-per-request]).",
                     NULL, (double)st.undelivered_aborts);
    tel_expo_counter(e, "traceparent_malformed",
                     "Requests whose traceparent header was malformed (ignored).", NULL,
                     (double)atomic_load(&s->n_bad_traceparent));
    http_connections(e, s);
    tel_expo_gauge(e, "engine_alive", "1 while the engine process tree is running.", NULL,
                   lantern_alive(s->l));
    tel_expo_gauge(e, "engine_stalled",
                   "1 once the step watchdog saw no progress with work pending.", NULL, stalled);
}

bool fe_http_engine_stalled(const srv_t *s) {
    const tel_metrics_shm_t *sh = lantern_metrics(s->l);
    return sh && atomic_load(&((tel_metrics_shm_t *)sh)->engine.stalled);
}

enum MHD_Result fe_http_metrics(call_t *c) {
    srv_t *s = c->s;
    const char *accept = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Accept");
    bool om = accept && strstr(accept, "application/openmetrics-text");
    lt_buf_t b = {0};
    tel_expo_t e = {.b = &b, .prefix = s->metrics_prefix, .openmetrics = om};
    snprintf(e.labels, sizeof e.labels, "model_name=\"%s\",engine=\"0\"", s->served_name);
    const tel_metrics_shm_t *sh = lantern_metrics(s->l);
    if (sh) {
        engine_scalars(&e, &sh->engine);
        engine_hists(&e, sh);
        ranks(&e, sh);
    }
    frontend(&e, s, fe_http_engine_stalled(s));
    snprintf(e.labels, sizeof e.labels, "model_name=\"%s\"", s->served_name);
    if (sh) processes(&e, sh, getpid());
    tel_expo_end(&e);
    enum MHD_Result ok =
        fe_http_respond(c, 200,
                        om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                           : "text/plain; version=0.0.4; charset=utf-8",
                        lt_buf_str(&b), b.len);
    lt_buf_free(&b);
    return ok;
}
