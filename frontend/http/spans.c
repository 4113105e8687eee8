/*
 * spans.c — the frontend's spans of one HTTP request (DESIGN.md §5):
 *
 *   "<METHOD> <route>" (SERVER)   the HTTP request, a child of the client's traceparent if any
 *     └ llm_request               the generation, with vLLM's gen_ai.* attributes and the current
 *         │                       OpenTelemetry GenAI names beside them; its context travels to
 *         │                       the engine in the ADD envelope, so the engine's spans of the
 *         │                       request are its children
 *         ├ chat_template         rendering the messages (chat)
 *         ├ tokenize              tokenizing the prompt(s)
 *         └ stream                writing the SSE stream (streaming only)
 *
 * The spans of a request are ended together when the HTTP request completes, and exported when
 * its trace is sampled or, whatever the sampler said, when the request failed, was aborted or
 * took longer than --trace-slow-threshold-ms end to end (tail keeping). With tracing off every
 * function here returns at once.
 */
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "lt.h"

void fe_http_span_begin(call_t *c, const char *method, const char *url) {
    c->t0_unix_ns = tel_now_unix_ns();
    snprintf(c->method, sizeof c->method, "%s", method);
    char name[TEL_NAME_MAX];
    const char *route = c->route == R_NONE    ? "unknown"
                        : c->route == R_MODEL ? "/v1/models/{id}"
                                              : url;
    snprintf(name, sizeof name, "%s %s", method, route);
    c->http_span = tel_span_start(name, TEL_KIND_SERVER, &c->client_ctx, c->t0_unix_ns);
    if (!c->http_span) return;
    tel_span_set_str(c->http_span, "http.request.method", method);
    tel_span_set_str(c->http_span, "url.path", url);
    tel_span_set_str(c->http_span, "http.route", route);
    tel_span_set_int(c->http_span, "server.port", c->s->port);
    tel_span_set_str(c->http_span, "http.request.header.x-request-id", c->rid);
    const char *ua = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "User-Agent");
    if (ua) tel_span_set_str(c->http_span, "user_agent.original", ua);
}

void fe_http_span_request(call_t *c) {
    if (!c->http_span) return;
    tel_ctx_t parent = tel_span_ctx(c->http_span);
    c->req_span = tel_span_start("llm_request", TEL_KIND_INTERNAL, &parent, 0);
    if (!c->req_span) return;
    /* the engine's spans of this request are children of llm_request: its context replaces
     * the client's in what the engine receives (the trace stays the client's) */
    tel_ctx_t rc = tel_span_ctx(c->req_span);
    tel_ctx_format(&rc, c->traceparent);
}

/* A child of llm_request that ran between two recorded instants. */
static void child_span(call_t *c, const char *name, uint64_t start, uint64_t end) {
    if (!c->req_span || !start || end < start) return;
    tel_ctx_t parent = tel_span_ctx(c->req_span);
    tel_span_t *sp = tel_span_start(name, TEL_KIND_INTERNAL, &parent, start);
    if (!sp) return;
    if (c->n_pending < FE_SPANS_PENDING) {
        sp->end_unix_ns = end;
        c->pending[c->n_pending++] = sp;
    } else {
        tel_span_submit(sp, end, false);
    }
}

void fe_http_span_parsed(call_t *c) {
    const fe_oai_request_t *q = &c->req;
    child_span(c, "chat_template", q->render_start_ns, q->render_end_ns);
    if (q->tokenize_start_ns) {
        child_span(c, "tokenize", q->tokenize_start_ns, q->tokenize_end_ns);
        if (c->n_pending && c->pending[c->n_pending - 1]->start_unix_ns == q->tokenize_start_ns) {
            tel_span_t *sp = c->pending[c->n_pending - 1];
            int n = 0;
            for (int i = 0; i < q->n_prompts; i++) n += q->prompts[i].n_ids;
            tel_span_set_int(sp, "lantern.prompts", q->n_prompts);
            tel_span_set_int(sp, "lantern.prompt_tokens", n);
            tel_span_set_int(sp, "lantern.tokenize_ns", (int64_t)q->tokenize_ns);
        }
    }
}

void fe_http_span_stream(call_t *c) {
    if (!c->req_span || c->stream_span) return;
    tel_ctx_t parent = tel_span_ctx(c->req_span);
    c->stream_span = tel_span_start("stream", TEL_KIND_INTERNAL, &parent, 0);
}

/* llm_request's attributes: vLLM's names, then the OpenTelemetry GenAI ones beside them. */
static void request_attrs(call_t *c, tel_span_t *sp, const summary_t *t) {
    const fe_oai_request_t *q = &c->req;
    const ipc_params_t *p = &q->params;
    bool chat = q->kind == FE_OAI_CHAT;
    tel_span_set_str(sp, "gen_ai.request.id", c->rid);
    tel_span_set_int(sp, "gen_ai.request.max_tokens", p->max_tokens);
    tel_span_set_double(sp, "gen_ai.request.temperature", p->temperature);
    tel_span_set_double(sp, "gen_ai.request.top_p", p->top_p);
    tel_span_set_int(sp, "gen_ai.request.n", q->n);
    tel_span_set_str(sp, "gen_ai.response.model", c->s->served_name);
    char reasons[256] = "";
    for (int i = 0; i < c->n_ch; i++) {
        const char *r = fe_http_finish_str(c->ch[i].finish);
        size_t n = strlen(reasons);
        snprintf(reasons + n, sizeof reasons - n, "%s%s", i ? "," : "", r ? r : "none");
    }
    tel_span_set_str(sp, "gen_ai.response.finish_reasons", reasons);
    tel_span_set_int(sp, "gen_ai.usage.prompt_tokens", t->prompt);
    tel_span_set_int(sp, "gen_ai.usage.completion_tokens", t->completion);
    tel_span_set_int(sp, "gen_ai.usage.cached_tokens", t->cached);
    double e2e = (double)(lt_now_ns() - c->t0_ns) / 1e9;
    tel_span_set_double(sp, "gen_ai.latency.time_in_queue", t->queue_s);
    tel_span_set_double(sp, "gen_ai.latency.time_to_first_token", t->queue_s + t->prefill_s);
    tel_span_set_double(sp, "gen_ai.latency.e2e", e2e);
    tel_span_set_double(sp, "gen_ai.latency.time_in_scheduler", t->queue_s);
    tel_span_set_double(sp, "gen_ai.latency.time_in_model_prefill", t->prefill_s);
    tel_span_set_double(sp, "gen_ai.latency.time_in_model_decode", t->decode_s);
    tel_span_set_double(sp, "gen_ai.latency.time_in_model_inference", t->prefill_s + t->decode_s);
    tel_span_set_str(sp, "gen_ai.operation.name", chat ? "chat" : "text_completion");
    tel_span_set_str(sp, "gen_ai.provider.name", "lantern");
    tel_span_set_str(sp, "gen_ai.request.model", c->s->served_name);
    tel_span_set_int(sp, "gen_ai.usage.input_tokens", t->prompt);
    tel_span_set_int(sp, "gen_ai.usage.output_tokens", t->completion);
    if (q->stream && c->t_first_chunk_ns)
        tel_span_set_double(sp, "gen_ai.response.time_to_first_chunk",
                            (double)(c->t_first_chunk_ns - c->t0_ns) / 1e9);
    if (p->has_seed) tel_span_set_int(sp, "gen_ai.request.seed", (int64_t)p->seed);
}

/* The frontend's own histograms of a finished generation (e2e, detokenization). */
static void record(call_t *c) {
    if (!c->submitted) return;
    /* the exemplar: our SERVER span, else the client's (tracing off), when sampled */
    const uint8_t *trace = NULL, *span = NULL;
    if (c->http_span && (c->http_span->flags & 1)) {
        trace = c->http_span->trace_id;
        span = c->http_span->span_id;
    } else if (!c->http_span && c->client_ctx.valid && (c->client_ctx.flags & 1)) {
        trace = c->client_ctx.trace_id;
        span = c->client_ctx.span_id;
    }
    tel_hist_observe(&c->s->h_e2e, &TEL_B_LATENCY, (double)(lt_now_ns() - c->t0_ns) * 1e-9, trace,
                     span);
    tel_hist_observe(&c->s->h_detokenize, &TEL_B_FAST, (double)c->detok_ns * 1e-9, NULL, NULL);
}

void fe_http_span_end(call_t *c, bool client_gone) {
    record(c);
    if (!c->http_span) return;
    uint64_t now = tel_now_unix_ns();
    const char *error = NULL;
    if (client_gone)
        error = "client_disconnected";
    else if (c->status >= 500 || c->status == 0)
        error = c->status == 503 ? "engine_unavailable" : "server_error";
    for (int i = 0; i < c->n_ch && !error; i++)
        if (c->ch[i].finish == LANTERN_FINISH_ERROR) error = "generation_failed";
    uint64_t slow = c->s->trace_slow_ns;
    bool keep = error || c->status >= 400 || (slow && lt_now_ns() - c->t0_ns > slow);
    if (c->req_span) {
        summary_t t;
        fe_http_call_summary(c, &t);
        request_attrs(c, c->req_span, &t);
        if (error) {
            tel_span_set_str(c->req_span, "error.type", error);
            tel_span_set_status(c->req_span, TEL_STATUS_ERROR, error);
        }
    }
    if (c->stream_span) tel_span_submit(c->stream_span, now, keep);
    for (int i = 0; i < c->n_pending; i++)
        tel_span_submit(c->pending[i], c->pending[i]->end_unix_ns, keep);
    c->n_pending = 0;
    if (c->req_span) tel_span_submit(c->req_span, now, keep);
    tel_span_t *h = c->http_span;
    tel_span_set_int(h, "http.response.status_code", c->status);
    if (error || c->status >= 500) {
        tel_span_set_str(h, "error.type", error ? error : "server_error");
        tel_span_set_status(h, TEL_STATUS_ERROR, error);
    }
    tel_span_submit(h, now, keep);
    c->http_span = c->req_span = c->stream_span = NULL;
}
