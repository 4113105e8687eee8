/*
 * msg.c — encoders and validating decoders of the message payloads (see msg.h). Every decoder
 * reads through an ipc_rd_t cursor, whose first error is sticky, checks every count against the
 * caller's capacity and every enum against its range, and ends with ipc_rd_end so a payload with
 * extra or missing fields is refused.
 */
#include "msg.h"

#include <stdio.h>
#include <string.h>

/* ---- helpers ---- */

/* A message that belongs to no single request: nil request_id. */
static int begin(ipc_writer_t *w, ipc_msg_type_t type, const ipc_trace_ctx_t *trace, char *err) {
    return ipc_envelope_begin(w, type, (ipc_str_t){NULL, 0}, trace, err);
}

static int payload_cursor(const ipc_envelope_t *env, ipc_msg_type_t type, ipc_rd_t *r,
                          const char *name, char *err) {
    if (env->type != type)
        return lt_errf(err, LT_ERR_FORMAT, "%s: unexpected message type %s", name,
                       ipc_msg_type_name(env->type));
    return ipc_rd_init(r, env->payload, name, err);
}

/* ---- parameters ---- */

void ipc_params_defaults(ipc_params_t *p) {
    memset(p, 0, sizeof *p);
    p->max_tokens = IPC_DEF_MAX_TOKENS;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
    p->logprobs = -1;
}

/* "'name' must be ..." with the field named for the caller (an OpenAI param in the frontend). */
#define FIELD_FAIL(name, ...)                                                                      \
    do {                                                                                           \
        if (field) *field = name;                                                                  \
        return lt_errf(err, LT_ERR_INVAL, __VA_ARGS__);                                            \
    } while (0)

static int check_range(const char *name, float v, float lo, bool lo_open, float hi,
                       const char **field, char *err) {
    if (!(v >= lo) || (lo_open && v == lo) || !(v <= hi)) {
        if (lo_open) FIELD_FAIL(name, "'%s' must be in (%g, %g], got %g", name, lo, hi, v);
        FIELD_FAIL(name, "'%s' must be between %g and %g, got %g", name, lo, hi, v);
    }
    return LT_OK;
}

static int check_ids(const char *name, const int32_t *ids, int n, int max, int vocab,
                     const char **field, char *err) {
    if (n < 0 || n > max) FIELD_FAIL(name, "at most %d entries in '%s'", max, name);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || (vocab > 0 && ids[i] >= vocab))
            FIELD_FAIL(name, "token id %d in '%s' is outside the vocabulary (0..%d)", ids[i], name,
                       vocab - 1);
    return LT_OK;
}

int ipc_params_check(const ipc_params_t *p, int vocab, const char **field, char *err) {
    int rc;
    if (field) *field = NULL;
    if (p->max_tokens < 0) FIELD_FAIL("max_tokens", "'max_tokens' must be at least 0");
    if (p->min_tokens < 0 || p->min_tokens > p->max_tokens)
        FIELD_FAIL("min_tokens", "'min_tokens' (%d) must be between 0 and max_tokens (%d)",
                   p->min_tokens, p->max_tokens);
    if ((rc = check_ids("stop_token_ids", p->stop_ids, p->n_stop_ids, IPC_MAX_STOP_IDS, vocab,
                        field, err)) ||
        (rc = check_ids("logit_bias", p->logit_bias_ids, p->n_logit_bias, IPC_MAX_LOGIT_BIAS, vocab,
                        field, err)))
        return rc;
    for (int i = 0; i < p->n_logit_bias; i++)
        if (!(p->logit_bias[i] >= -100.0f && p->logit_bias[i] <= 100.0f))
            FIELD_FAIL("logit_bias", "logit_bias values must be numbers in [-100, 100]");
    if ((rc = check_range("temperature", p->temperature, 0, false, 2, field, err)) ||
        (rc = check_range("top_p", p->top_p, 0, true, 1, field, err)) ||
        (rc = check_range("min_p", p->min_p, 0, false, 1, field, err)) ||
        (rc = check_range("repetition_penalty", p->repetition_penalty, 0, true, 10, field, err)) ||
        (rc = check_range("presence_penalty", p->presence_penalty, -2, false, 2, field, err)) ||
        (rc = check_range("frequency_penalty", p->frequency_penalty, -2, false, 2, field, err)))
        return rc;
    if (p->top_k < 0) FIELD_FAIL("top_k", "'top_k' must be 0 (off) or positive, got %d", p->top_k);
    if (p->logprobs < -1 || p->logprobs > IPC_MAX_LOGPROBS)
        FIELD_FAIL("logprobs", "'logprobs' must be between 0 and %d", IPC_MAX_LOGPROBS);
    return LT_OK;
}

static void wr_params(ipc_writer_t *w, const ipc_params_t *p) {
    ipc_wr_array(w, 15);
    ipc_wr_i64(w, p->max_tokens);
    ipc_wr_i64(w, p->min_tokens);
    ipc_wr_bool(w, p->ignore_eos);
    ipc_wr_i32_vec(w, p->stop_ids, (size_t)p->n_stop_ids);
    ipc_wr_i32_vec(w, p->logit_bias_ids, (size_t)p->n_logit_bias);
    ipc_wr_f32_array(w, p->logit_bias, (size_t)p->n_logit_bias);
    ipc_wr_f32(w, p->repetition_penalty);
    ipc_wr_f32(w, p->presence_penalty);
    ipc_wr_f32(w, p->frequency_penalty);
    ipc_wr_f32(w, p->temperature);
    ipc_wr_f32(w, p->min_p);
    ipc_wr_i64(w, p->top_k);
    ipc_wr_f32(w, p->top_p);
    if (p->has_seed)
        ipc_wr_u64(w, p->seed);
    else
        ipc_wr_nil(w);
    ipc_wr_i64(w, p->logprobs);
}

/* Types and counts only: ranges are ipc_params_check's. */
static int rd_params(ipc_rd_t *r, ipc_params_t *p) {
    ipc_rd_t a;
    memset(p, 0, sizeof *p);
    ipc_rd_array(r, &a, NULL, 15);
    size_t ns = 0, n = 0, m = 0;
    ipc_rd_i32(&a, &p->max_tokens);
    ipc_rd_i32(&a, &p->min_tokens);
    ipc_rd_bool(&a, &p->ignore_eos);
    ipc_rd_i32_vec(&a, p->stop_ids, IPC_MAX_STOP_IDS, &ns);
    ipc_rd_i32_vec(&a, p->logit_bias_ids, IPC_MAX_LOGIT_BIAS, &n);
    ipc_rd_f32_array(&a, p->logit_bias, IPC_MAX_LOGIT_BIAS, &m);
    ipc_rd_f32(&a, &p->repetition_penalty);
    ipc_rd_f32(&a, &p->presence_penalty);
    ipc_rd_f32(&a, &p->frequency_penalty);
    ipc_rd_f32(&a, &p->temperature);
    ipc_rd_f32(&a, &p->min_p);
    ipc_rd_i32(&a, &p->top_k);
    ipc_rd_f32(&a, &p->top_p);
    p->has_seed = ipc_rd_nil(&a) == 0;
    if (p->has_seed) ipc_rd_u64(&a, &p->seed);
    ipc_rd_i32_range(&a, &p->logprobs, -1, IPC_MAX_LOGPROBS);
    if (a.rc == 0 && n != m) {
        a.rc = lt_errf(a.err, LT_ERR_FORMAT, "params: %zu logit_bias ids but %zu values", n, m);
        r->rc = a.rc;
    }
    p->n_stop_ids = (int32_t)ns;
    p->n_logit_bias = (int32_t)n;
    return ipc_rd_end(&a);
}

/* ---- identity ---- */

static int copy_checked(char *dst, size_t cap, const char *s, bool (*valid)(const char *, size_t),
                        const char *what, char *err) {
    size_t n = s ? strlen(s) : 0;
    if (n >= cap || (n && !valid(s, n)))
        return lt_errf(err, LT_ERR_INVAL, "invalid %s \"%.80s\"", what, s);
    memcpy(dst, s ? s : "", n);
    dst[n] = '\0';
    return LT_OK;
}

int ipc_ident_set(ipc_ident_t *d, const char *id, const char *traceparent, const char *tracestate,
                  char *err) {
    if (!id || !*id) return lt_errf(err, LT_ERR_INVAL, "a request needs an id");
    int rc = copy_checked(d->id, sizeof d->id, id, ipc_request_id_valid, "request id", err);
    if (!rc)
        rc = copy_checked(d->traceparent, sizeof d->traceparent, traceparent, ipc_traceparent_valid,
                          "traceparent", err);
    if (!rc)
        rc = copy_checked(d->tracestate, sizeof d->tracestate, d->traceparent[0] ? tracestate : "",
                          ipc_tracestate_valid, "tracestate", err);
    return rc;
}

const ipc_trace_ctx_t *ipc_ident_trace(const ipc_ident_t *d, ipc_trace_ctx_t *t) {
    if (!d->traceparent[0]) return NULL;
    t->traceparent = ipc_str(d->traceparent);
    t->tracestate = ipc_str(d->tracestate);
    return t;
}

/* Copies a decoded view into fixed storage of cap bytes (the decoder bounded its length). */
static void copy_view(char *dst, size_t cap, ipc_str_t v) {
    size_t n = v.ptr ? (v.len < cap ? v.len : cap - 1) : 0;
    if (n) memcpy(dst, v.ptr, n);
    dst[n] = '\0';
}

static void ident_from_envelope(const ipc_envelope_t *env, ipc_ident_t *d) {
    copy_view(d->id, sizeof d->id, env->request_id);
    copy_view(d->traceparent, sizeof d->traceparent,
              env->has_trace ? env->trace.traceparent : (ipc_str_t){0});
    copy_view(d->tracestate, sizeof d->tracestate,
              env->has_trace ? env->trace.tracestate : (ipc_str_t){0});
}

static void wr_ident(ipc_writer_t *w, const ipc_ident_t *d) {
    ipc_wr_array(w, 3);
    ipc_wr_cstr(w, d->id);
    ipc_wr_cstr(w, d->traceparent[0] ? d->traceparent : NULL);
    ipc_wr_cstr(w, d->traceparent[0] ? d->tracestate : NULL);
}

static int rd_ident(ipc_rd_t *r, ipc_ident_t *d) {
    ipc_rd_t a;
    ipc_str_t id = {0}, tp = {0}, ts = {0};
    ipc_rd_array(r, &a, NULL, 3);
    ipc_rd_str(&a, &id, IPC_REQUEST_ID_MAX);
    if (ipc_rd_nil(&a) == 0) ipc_rd_str(&a, &tp, IPC_TRACEPARENT_LEN);
    if (ipc_rd_nil(&a) == 0) ipc_rd_str(&a, &ts, IPC_TRACESTATE_MAX);
    if (a.rc == 0 && (!ipc_request_id_valid(id.ptr, id.len) ||
                      (tp.ptr && !ipc_traceparent_valid(tp.ptr, tp.len)) ||
                      (ts.ptr && !ipc_tracestate_valid(ts.ptr, ts.len)))) {
        a.rc = lt_errf(a.err, LT_ERR_FORMAT, "identity: invalid request id or trace context");
        r->rc = a.rc;
    }
    copy_view(d->id, sizeof d->id, id);
    copy_view(d->traceparent, sizeof d->traceparent, tp);
    copy_view(d->tracestate, sizeof d->tracestate, ts);
    return ipc_rd_end(&a);
}

/* ---- ADD ---- */

int ipc_msg_add_write(ipc_writer_t *w, const ipc_add_t *a, const void **data, size_t *len,
                      char *err) {
    ipc_trace_ctx_t t;
    int rc = ipc_envelope_begin(w, IPC_MSG_ADD, ipc_str(a->ident.id),
                                ipc_ident_trace(&a->ident, &t), err);
    if (rc) return rc;
    ipc_wr_array(w, 3);
    ipc_wr_u64(w, a->id);
    ipc_wr_i32_vec(w, a->prompt, (size_t)a->n_prompt);
    wr_params(w, &a->params);
    return ipc_envelope_end(w, data, len, err);
}

int ipc_msg_add_read(const ipc_envelope_t *env, ipc_add_t *a, char *err) {
    ipc_rd_t r;
    int rc = payload_cursor(env, IPC_MSG_ADD, &r, "add", err);
    if (rc) return rc;
    size_t n = 0;
    ipc_rd_u64(&r, &a->id);
    ipc_rd_i32_vec(&r, a->prompt, (size_t)a->prompt_cap, &n);
    rd_params(&r, &a->params);
    a->n_prompt = (int32_t)n;
    if ((rc = ipc_rd_end(&r))) return rc;
    if (!env->request_id.ptr) return lt_errf(err, LT_ERR_FORMAT, "add: no request id");
    ident_from_envelope(env, &a->ident);
    return LT_OK;
}

/* ---- ABORT ---- */

int ipc_msg_abort_write(ipc_writer_t *w, uint64_t id, const char *rid, const void **data,
                        size_t *len, char *err) {
    int rc = ipc_envelope_begin(w, IPC_MSG_ABORT, ipc_str(rid), NULL, err);
    if (rc) return rc;
    ipc_wr_array(w, 1);
    ipc_wr_u64(w, id);
    return ipc_envelope_end(w, data, len, err);
}

int ipc_msg_abort_read(const ipc_envelope_t *env, uint64_t *id, char *err) {
    ipc_rd_t r;
    int rc = payload_cursor(env, IPC_MSG_ABORT, &r, "abort", err);
    if (rc) return rc;
    ipc_rd_u64(&r, id);
    return ipc_rd_end(&r);
}

/* ---- OUTPUT ---- */

static void wr_item(ipc_writer_t *w, const ipc_out_item_t *it, bool full) {
    ipc_wr_array(w, full ? 15 : 5);
    ipc_wr_u64(w, it->id);
    ipc_wr_i64(w, it->token);
    ipc_wr_f32(w, it->logprob);
    ipc_wr_i32_vec(w, it->top_ids, (size_t)it->n_top);
    ipc_wr_f32_array(w, it->top_logprobs, (size_t)it->n_top);
    if (!full) return;
    ipc_wr_i64(w, it->finish);
    ipc_wr_i64(w, it->stop_token);
    ipc_wr_i64(w, it->n_prompt);
    ipc_wr_i64(w, it->n_cached);
    ipc_wr_u64(w, it->queue_ns);
    ipc_wr_u64(w, it->prefill_ns);
    ipc_wr_u64(w, it->decode_ns);
    ipc_wr_i64(w, it->n_preemptions);
    ipc_wr_cstr(w, it->rid[0] ? it->rid : NULL);
    if (it->error[0])
        ipc_wr_cstr(w, it->error);
    else
        ipc_wr_nil(w);
}

static void rd_item(ipc_rd_t *r, ipc_out_item_t *it, bool full) {
    ipc_rd_t a;
    memset(it, 0, sizeof *it);
    ipc_rd_array(r, &a, NULL, full ? 15 : 5);
    size_t n = 0, m = 0;
    ipc_rd_u64(&a, &it->id);
    ipc_rd_i32_range(&a, &it->token, -1, INT32_MAX);
    ipc_rd_f32(&a, &it->logprob);
    ipc_rd_i32_vec(&a, it->top_ids, IPC_MAX_LOGPROBS, &n);
    ipc_rd_f32_array(&a, it->top_logprobs, IPC_MAX_LOGPROBS, &m);
    if (a.rc == 0 && n != m) {
        a.rc = lt_errf(a.err, LT_ERR_FORMAT, "output item: %zu top ids, %zu logprobs", n, m);
        r->rc = a.rc;
    }
    it->n_top = (int32_t)n;
    if (full) {
        ipc_rd_i32_range(&a, &it->finish, IPC_FINISH_NONE, IPC_FINISH_ERROR);
        ipc_rd_i32_range(&a, &it->stop_token, -1, INT32_MAX);
        ipc_rd_i32_range(&a, &it->n_prompt, 0, INT32_MAX);
        ipc_rd_i32_range(&a, &it->n_cached, 0, INT32_MAX);
        ipc_rd_u64(&a, &it->queue_ns);
        ipc_rd_u64(&a, &it->prefill_ns);
        ipc_rd_u64(&a, &it->decode_ns);
        ipc_rd_i32_range(&a, &it->n_preemptions, 0, INT32_MAX);
        ipc_str_t rid = {0};
        if (ipc_rd_nil(&a) == 0) ipc_rd_str(&a, &rid, IPC_REQUEST_ID_MAX);
        copy_view(it->rid, sizeof it->rid, rid);
        if (ipc_rd_nil(&a) == 0) {
            ipc_str_t s = {0};
            ipc_rd_str(&a, &s, sizeof it->error - 1);
            if (s.ptr) memcpy(it->error, s.ptr, s.len);
            it->error[s.len] = '\0';
        }
    }
    ipc_rd_end(&a);
}

int ipc_msg_output_write(ipc_writer_t *w, const ipc_output_t *o, const void **data, size_t *len,
                         char *err) {
    int rc = begin(w, IPC_MSG_OUTPUT, NULL, err);
    if (rc) return rc;
    ipc_wr_array(w, 3);
    ipc_wr_u64(w, o->step_id);
    ipc_wr_array(w, (size_t)o->n_items);
    for (int i = 0; i < o->n_items; i++) wr_item(w, &o->items[i], true);
    const ipc_sched_stats_t *s = &o->stats;
    ipc_wr_array(w, 8);
    ipc_wr_i64(w, s->running);
    ipc_wr_i64(w, s->waiting);
    ipc_wr_i64(w, s->step_seqs);
    ipc_wr_f32(w, s->kv_usage);
    ipc_wr_u64(w, s->prefix_queries);
    ipc_wr_u64(w, s->prefix_hits);
    ipc_wr_u64(w, s->preemptions);
    ipc_wr_u64(w, s->steps);
    return ipc_envelope_end(w, data, len, err);
}

int ipc_msg_output_read(const ipc_envelope_t *env, ipc_output_t *o, char *err) {
    ipc_rd_t r, items, st;
    int rc = payload_cursor(env, IPC_MSG_OUTPUT, &r, "output", err);
    if (rc) return rc;
    uint32_t n = 0;
    ipc_rd_u64(&r, &o->step_id);
    ipc_rd_array(&r, &items, &n, (uint32_t)o->items_cap);
    o->n_items = r.rc ? 0 : (int32_t)n;
    for (int i = 0; i < o->n_items; i++) rd_item(&items, &o->items[i], true);
    ipc_rd_end(&items);
    ipc_sched_stats_t *s = &o->stats;
    ipc_rd_array(&r, &st, NULL, 8);
    ipc_rd_i32(&st, &s->running);
    ipc_rd_i32(&st, &s->waiting);
    ipc_rd_i32_range(&st, &s->step_seqs, 0, INT32_MAX);
    ipc_rd_f32(&st, &s->kv_usage);
    ipc_rd_u64(&st, &s->prefix_queries);
    ipc_rd_u64(&st, &s->prefix_hits);
    ipc_rd_u64(&st, &s->preemptions);
    ipc_rd_u64(&st, &s->steps);
    ipc_rd_end(&st);
    return ipc_rd_end(&r);
}

/* ---- STEP ---- */

int ipc_msg_step_write(ipc_writer_t *w, const ipc_step_t *s, const ipc_trace_ctx_t *trace,
                       const void **data, size_t *len, char *err) {
    int rc = begin(w, IPC_MSG_STEP, trace, err);
    if (rc) return rc;
    ipc_wr_array(w, 9);
    ipc_wr_u64(w, s->step_id);
    ipc_wr_i32_vec(w, s->tokens, (size_t)s->n_tokens);
    ipc_wr_i32_vec(w, s->pos, (size_t)s->n_tokens);
    ipc_wr_i32_vec(w, s->seq_idx, (size_t)s->n_tokens);
    ipc_wr_array(w, (size_t)s->n_seqs);
    for (int i = 0; i < s->n_seqs; i++) {
        ipc_wr_array(w, 2);
        ipc_wr_u64(w, s->seq_ids[i]);
        ipc_wr_i32_vec(w, s->tables + (size_t)i * s->max_blocks, (size_t)s->table_lens[i]);
    }
    ipc_wr_i32_vec(w, s->sample_rows, (size_t)s->n_sampled);
    ipc_wr_i32_vec(w, s->sample_seqs, (size_t)s->n_sampled);
    ipc_wr_array(w, (size_t)s->n_new);
    for (int i = 0; i < s->n_new; i++) {
        ipc_wr_array(w, 4);
        ipc_wr_u64(w, s->news[i].id);
        wr_ident(w, &s->news[i].ident);
        wr_params(w, &s->news[i].params);
        ipc_wr_i32_vec(w, s->new_prompts + (size_t)i * s->max_prompt, (size_t)s->news[i].n_prompt);
    }
    ipc_wr_array(w, (size_t)s->n_finished);
    for (int i = 0; i < s->n_finished; i++) ipc_wr_u64(w, s->finished[i]);
    return ipc_envelope_end(w, data, len, err);
}

int ipc_msg_step_read(const ipc_envelope_t *env, ipc_step_t *s, char *err) {
    ipc_rd_t r, seqs, news, fin;
    int rc = payload_cursor(env, IPC_MSG_STEP, &r, "step", err);
    if (rc) return rc;
    size_t n1 = 0, n2 = 0, n3 = 0, ns1 = 0, ns2 = 0;
    uint32_t n = 0;
    ipc_rd_u64(&r, &s->step_id);
    ipc_rd_i32_vec(&r, s->tokens, (size_t)s->cap_tokens, &n1);
    ipc_rd_i32_vec(&r, s->pos, (size_t)s->cap_tokens, &n2);
    ipc_rd_i32_vec(&r, s->seq_idx, (size_t)s->cap_tokens, &n3);
    ipc_rd_array(&r, &seqs, &n, (uint32_t)s->cap_seqs);
    s->n_seqs = r.rc ? 0 : (int32_t)n;
    for (int i = 0; i < s->n_seqs; i++) {
        ipc_rd_t q;
        size_t nb = 0;
        ipc_rd_array(&seqs, &q, NULL, 2);
        ipc_rd_u64(&q, &s->seq_ids[i]);
        ipc_rd_i32_vec(&q, s->tables + (size_t)i * s->max_blocks, (size_t)s->max_blocks, &nb);
        s->table_lens[i] = (int32_t)nb;
        ipc_rd_end(&q);
    }
    ipc_rd_end(&seqs);
    ipc_rd_i32_vec(&r, s->sample_rows, (size_t)s->cap_seqs, &ns1);
    ipc_rd_i32_vec(&r, s->sample_seqs, (size_t)s->cap_seqs, &ns2);
    ipc_rd_array(&r, &news, &n, (uint32_t)s->cap_new);
    s->n_new = r.rc ? 0 : (int32_t)n;
    for (int i = 0; i < s->n_new; i++) {
        ipc_rd_t q;
        size_t np = 0;
        ipc_rd_array(&news, &q, NULL, 4);
        ipc_rd_u64(&q, &s->news[i].id);
        rd_ident(&q, &s->news[i].ident);
        rd_params(&q, &s->news[i].params);
        ipc_rd_i32_vec(&q, s->new_prompts + (size_t)i * s->max_prompt, (size_t)s->max_prompt, &np);
        s->news[i].n_prompt = (int32_t)np;
        ipc_rd_end(&q);
    }
    ipc_rd_end(&news);
    ipc_rd_array(&r, &fin, &n, (uint32_t)s->cap_finished);
    s->n_finished = r.rc ? 0 : (int32_t)n;
    for (int i = 0; i < s->n_finished; i++) ipc_rd_u64(&fin, &s->finished[i]);
    ipc_rd_end(&fin);
    if ((rc = ipc_rd_end(&r))) return rc;
    /* cross-field consistency: the worker indexes with these */
    if (n1 != n2 || n1 != n3)
        return lt_errf(err, LT_ERR_FORMAT, "step: %zu tokens, %zu positions, %zu seq indices", n1,
                       n2, n3);
    if (ns1 != ns2) return lt_errf(err, LT_ERR_FORMAT, "step: sample rows/seqs differ");
    s->n_tokens = (int32_t)n1;
    s->n_sampled = (int32_t)ns1;
    for (int i = 0; i < s->n_tokens; i++)
        if (s->seq_idx[i] < 0 || s->seq_idx[i] >= s->n_seqs)
            return lt_errf(err, LT_ERR_FORMAT, "step: row %d names sequence %d of %d", i,
                           s->seq_idx[i], s->n_seqs);
    for (int i = 0; i < s->n_sampled; i++)
        if (s->sample_rows[i] < 0 || s->sample_rows[i] >= s->n_tokens || s->sample_seqs[i] < 0 ||
            s->sample_seqs[i] >= s->n_seqs)
            return lt_errf(err, LT_ERR_FORMAT, "step: sample %d out of range", i);
    return LT_OK;
}

/* ---- RESULT ---- */

int ipc_msg_result_write(ipc_writer_t *w, const ipc_result_t *r, const void **data, size_t *len,
                         char *err) {
    int rc = begin(w, IPC_MSG_RESULT, NULL, err);
    if (rc) return rc;
    ipc_wr_array(w, 4);
    ipc_wr_u64(w, r->step_id);
    ipc_wr_array(w, (size_t)r->n);
    for (int i = 0; i < r->n; i++) wr_item(w, &r->items[i], false);
    ipc_wr_i64(w, r->error);
    if (r->error)
        ipc_wr_cstr(w, r->err_text);
    else
        ipc_wr_nil(w);
    return ipc_envelope_end(w, data, len, err);
}

int ipc_msg_result_read(const ipc_envelope_t *env, ipc_result_t *r, char *err) {
    ipc_rd_t rd, items;
    int rc = payload_cursor(env, IPC_MSG_RESULT, &rd, "result", err);
    if (rc) return rc;
    uint32_t n = 0;
    ipc_rd_u64(&rd, &r->step_id);
    ipc_rd_array(&rd, &items, &n, (uint32_t)r->cap);
    r->n = rd.rc ? 0 : (int32_t)n;
    for (int i = 0; i < r->n; i++) rd_item(&items, &r->items[i], false);
    ipc_rd_end(&items);
    ipc_rd_i32_range(&rd, &r->error, -100, 0);
    r->err_text[0] = '\0';
    if (ipc_rd_nil(&rd) == 0) {
        ipc_str_t s = {0};
        ipc_rd_str(&rd, &s, sizeof r->err_text - 1);
        if (s.ptr) memcpy(r->err_text, s.ptr, s.len);
        r->err_text[s.len] = '\0';
    }
    return ipc_rd_end(&rd);
}

/* ---- HELLO ---- */

int ipc_msg_hello_write(ipc_writer_t *w, const ipc_hello_t *h, const void **data, size_t *len,
                        char *err) {
    int rc = begin(w, IPC_MSG_HELLO, NULL, err);
    if (rc) return rc;
    ipc_wr_array(w, 9);
    ipc_wr_i64(w, h->role);
    ipc_wr_i64(w, h->rank);
    ipc_wr_i64(w, h->pid);
    ipc_wr_i64(w, h->num_blocks);
    ipc_wr_i64(w, h->vocab);
    ipc_wr_i64(w, h->eos_id);
    ipc_wr_i64(w, h->bos_id);
    ipc_wr_i64(w, h->max_model_len);
    ipc_wr_i64(w, h->block_size);
    return ipc_envelope_end(w, data, len, err);
}

int ipc_msg_hello_read(const ipc_envelope_t *env, ipc_hello_t *h, char *err) {
    if (env->type == IPC_MSG_ERROR) {
        int code;
        char text[LT_ERR_LEN];
        int rc = ipc_msg_error_read(env, &code, text, sizeof text, err);
        if (rc) return rc;
        snprintf(err, LT_ERR_LEN, "%s", text);
        return IPC_CHILD_ERROR;
    }
    ipc_rd_t r;
    int rc = payload_cursor(env, IPC_MSG_HELLO, &r, "hello", err);
    if (rc) return rc;
    ipc_rd_i32_range(&r, &h->role, 0, 1);
    ipc_rd_i32_range(&r, &h->rank, 0, 1023);
    ipc_rd_i32_range(&r, &h->pid, 1, INT32_MAX);
    ipc_rd_i32_range(&r, &h->num_blocks, 0, INT32_MAX);
    ipc_rd_i32_range(&r, &h->vocab, 1, INT32_MAX);
    ipc_rd_i32_range(&r, &h->eos_id, -1, INT32_MAX);
    ipc_rd_i32_range(&r, &h->bos_id, -1, INT32_MAX);
    ipc_rd_i32_range(&r, &h->max_model_len, 1, INT32_MAX);
    ipc_rd_i32_range(&r, &h->block_size, 1, 1024);
    return ipc_rd_end(&r);
}

/* ---- ERROR ---- */

int ipc_msg_error_write(ipc_writer_t *w, int code, const char *text, const void **data, size_t *len,
                        char *err) {
    int rc = begin(w, IPC_MSG_ERROR, NULL, err);
    if (rc) return rc;
    ipc_wr_array(w, 2);
    ipc_wr_i64(w, code);
    ipc_wr_cstr(w, text);
    return ipc_envelope_end(w, data, len, err);
}

int ipc_msg_error_read(const ipc_envelope_t *env, int *code, char *text, size_t cap, char *err) {
    ipc_rd_t r;
    int rc = payload_cursor(env, IPC_MSG_ERROR, &r, "error", err);
    if (rc) return rc;
    int32_t c = 0;
    ipc_str_t s = {0};
    ipc_rd_i32_range(&r, &c, -100, 0);
    ipc_rd_str(&r, &s, cap - 1);
    if ((rc = ipc_rd_end(&r))) return rc;
    *code = c;
    memcpy(text, s.ptr, s.len);
    text[s.len] = '\0';
    return LT_OK;
}
