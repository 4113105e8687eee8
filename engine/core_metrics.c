/*
 * core_metrics.c — the engine's metrics, written into the shared region (telemetry/metrics.h)
 * as they happen: the scheduler's gauges after every step, token and preemption counters, the
 * per-step iteration histogram, and each request's histograms when its events happen (TTFT and
 * inter-token latency as tokens come, queue / prefill / decode / inference / token counts when
 * it finishes). Every interval is the difference of two of the engine's own monotonic readings.
 * Exemplars carry the request's trace id when it has one.
 *
 * All of it runs on the engine's one thread; a missing region (attach failed) turns every
 * function into a no-op.
 */
#include <string.h>
#include <unistd.h>

#include "core_priv.h"
#include "lt.h"
#include "telemetry.h"

#define NS 1e-9

int core_metrics_attach(core_t *c, char *err) {
    char name[128];
    int rc = ipc_name(name, sizeof name, c->tree_pid, "metrics", err);
    if (rc == 0) rc = tel_metrics_attach(name, &c->metrics, err);
    if (rc) return rc;
    tel_engine_metrics_t *m = &c->metrics->engine;
    atomic_store(&m->pid, (int64_t)getpid());
    return LT_OK;
}

void core_metrics_ready(core_t *c) {
    if (!c->metrics) return;
    tel_engine_metrics_t *m = &c->metrics->engine;
    c->metrics->max_model_len = c->info.max_model_len;
    atomic_store(&m->block_size, c->args.block_size);
    atomic_store(&m->kv_total, c->info.num_blocks);
    atomic_store(&m->prefix_caching, c->args.enable_prefix_caching);
    tel_bounds_125(&c->tok_bounds, c->info.max_model_len);
    core_metrics_gauges(c);
}

void core_metrics_gauges(core_t *c) {
    if (!c->metrics) return;
    tel_engine_metrics_t *m = &c->metrics->engine;
    eng_sched_stats_t st;
    eng_sched_get_stats(c->sched, &st);
    atomic_store_explicit(&m->running, st.n_running, memory_order_relaxed);
    atomic_store_explicit(&m->waiting, st.n_waiting, memory_order_relaxed);
    tel_set_double(&m->kv_usage_bits, st.kv.usage);
    atomic_store_explicit(&m->kv_used, st.kv.used, memory_order_relaxed);
    atomic_store_explicit(&m->kv_free, st.kv.free, memory_order_relaxed);
    atomic_store_explicit(&m->kv_cached, st.kv.cached, memory_order_relaxed);
    atomic_store_explicit(&m->prefix_queries, st.kv.prefix_queries, memory_order_relaxed);
    atomic_store_explicit(&m->prefix_hits, st.kv.prefix_hits, memory_order_relaxed);
    atomic_store_explicit(&m->preemptions, st.num_preemptions, memory_order_relaxed);
    atomic_store_explicit(&m->steps, st.num_steps, memory_order_relaxed);
    tel_process_stats_t ts; /* this process's spans, for /metrics */
    tel_process_stats(&ts);
    atomic_store_explicit(&m->spans.enabled, ts.enabled, memory_order_relaxed);
    atomic_store_explicit(&m->spans.exported, ts.bsp.exported, memory_order_relaxed);
    atomic_store_explicit(&m->spans.dropped, ts.bsp.dropped, memory_order_relaxed);
    atomic_store_explicit(&m->spans.failed, ts.bsp.failed, memory_order_relaxed);
    atomic_store_explicit(&m->spans.queued, ts.bsp.queued, memory_order_relaxed);
}

void core_metrics_step_sent(core_t *c, uint64_t now_ns) {
    if (!c->metrics) return;
    tel_engine_metrics_t *m = &c->metrics->engine;
    atomic_store_explicit(&m->step_started_ns, now_ns, memory_order_relaxed);
    tel_hist_observe(&m->hist[TEL_H_ITERATION], &TEL_B_ITERATION, c->plan.n_tokens, NULL, NULL);
}

/* An exemplar's trace id and span id: the request's parent (the frontend's llm_request span, or
 * the client's span with tracing off), only when that trace is sampled (OpenTelemetry's
 * trace-based exemplar filter: an exemplar leads to a trace someone has). */
static const uint8_t *trace_of(const core_req_t *r) {
    return r->parent.valid && (r->parent.flags & 1) ? r->parent.trace_id : NULL;
}

static const uint8_t *span_of(const core_req_t *r) {
    return r->parent.span_id;
}

static int fin_index(eng_finish_t f) {
    return f == ENG_FINISH_STOP     ? TEL_FIN_STOP
           : f == ENG_FINISH_LENGTH ? TEL_FIN_LENGTH
                                    : TEL_FIN_ABORT;
}

/* A finished request's histograms (its events are the scheduler's, in the engine's clock). */
static void finished(core_t *c, const core_req_t *r, const eng_req_events_t *e, int n_prompt,
                     int n_output, int fin) {
    tel_engine_metrics_t *m = &c->metrics->engine;
    atomic_fetch_add_explicit(&m->finished[fin], 1, memory_order_relaxed);
    if (!e) return;
    tel_hist_t *h = m->hist;
    const uint8_t *tr = trace_of(r);
    double queue = e->first_scheduled_ns > e->queued_ns
                       ? (double)(e->first_scheduled_ns - e->queued_ns) * NS
                       : 0;
    double prefill = e->first_token_ns > e->first_scheduled_ns
                         ? (double)(e->first_token_ns - e->first_scheduled_ns) * NS
                         : 0;
    double decode = e->first_token_ns && e->finished_ns > e->first_token_ns
                        ? (double)(e->finished_ns - e->first_token_ns) * NS
                        : 0;
    tel_hist_observe(&h[TEL_H_QUEUE], &TEL_B_LATENCY, queue, tr, span_of(r));
    tel_hist_observe(&h[TEL_H_PREFILL], &TEL_B_LATENCY, prefill, tr, span_of(r));
    tel_hist_observe(&h[TEL_H_DECODE], &TEL_B_LATENCY, decode, tr, span_of(r));
    tel_hist_observe(&h[TEL_H_INFERENCE], &TEL_B_LATENCY, prefill + decode, tr, span_of(r));
    tel_hist_observe(&h[TEL_H_PROMPT_TOKENS], &c->tok_bounds, n_prompt, NULL, NULL);
    tel_hist_observe(&h[TEL_H_GEN_TOKENS], &c->tok_bounds, n_output, NULL, NULL);
    tel_hist_observe(&h[TEL_H_MAX_GEN_TOKENS], &c->tok_bounds, r->params.max_tokens, NULL, NULL);
    tel_hist_observe(&h[TEL_H_PARAMS_MAX_TOKENS], &c->tok_bounds, r->params.max_tokens, NULL, NULL);
    if (n_prompt > 0)
        tel_hist_observe(&h[TEL_H_PREFILL_PER_TOKEN], &TEL_B_PREFILL_TOKEN, prefill / n_prompt, tr,
                         span_of(r));
    if (n_output > 1)
        tel_hist_observe(&h[TEL_H_REQ_TPOT], &TEL_B_ITL, decode / (n_output - 1), tr, span_of(r));
}

void core_metrics_result(core_t *c, const eng_outputs_t *outs, uint64_t now_ns) {
    if (!c->metrics) return;
    tel_engine_metrics_t *m = &c->metrics->engine;
    atomic_store_explicit(&m->step_started_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&m->last_step_done_ns, now_ns, memory_order_relaxed);
    for (int i = 0; i < outs->n; i++) {
        const eng_output_t *o = &outs->items[i];
        core_req_t *r = (core_req_t *)o->user;
        if (o->token >= 0) {
            atomic_fetch_add_explicit(&m->generation_tokens, 1, memory_order_relaxed);
            if (o->n_output == 1) { /* the first token: the prompt counts once */
                atomic_fetch_add_explicit(&m->prompt_tokens, (uint64_t)o->n_prompt,
                                          memory_order_relaxed);
                const eng_req_events_t *e = o->events;
                if (e && e->first_token_ns > e->queued_ns)
                    tel_hist_observe(&m->hist[TEL_H_TTFT], &TEL_B_TTFT,
                                     (double)(e->first_token_ns - e->queued_ns) * NS, trace_of(r),
                                     span_of(r));
            } else if (r->last_token_ns) {
                double itl = (double)(now_ns - r->last_token_ns) * NS;
                tel_hist_observe(&m->hist[TEL_H_ITL], &TEL_B_ITL, itl, trace_of(r), span_of(r));
                tel_hist_observe(&m->hist[TEL_H_TPOT], &TEL_B_ITL, itl, NULL, NULL);
            }
            r->last_token_ns = now_ns;
        }
        if (o->finish != ENG_FINISH_NONE)
            finished(c, r, o->events, o->n_prompt, o->n_output, fin_index(o->finish));
    }
    core_metrics_gauges(c);
}

void core_metrics_finish(core_t *c, core_req_t *r, bool error) {
    if (!c->metrics) return;
    eng_req_info_t in;
    uint64_t now = lt_now_ns();
    int n_prompt = r->n_prompt, n_output = 0;
    if (eng_sched_get(c->sched, r->id, now, &in) == LT_OK) n_output = in.n_output;
    finished(c, r, eng_sched_events(c->sched, r->id), n_prompt, n_output,
             error ? TEL_FIN_ERROR : TEL_FIN_ABORT);
}
