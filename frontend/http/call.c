/*
 * call.c — one call per HTTP request: its lifecycle (suspend/resume protocol, references,
 * release of its engine requests) and the generation it drives: one engine request per choice,
 * outputs read without waiting, tokens turned into text through the detokenizer and the stop
 * strings, and the SSE reader of a stream. See serve.c's comment for the protocol.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "lt.h"

/* ---- calls ---- */

void fe_http_call_unref(call_t *c);

static void call_notify(void *arg) {
    call_t *c = arg;
    atomic_store(&c->ready, true);
    if (atomic_exchange(&c->suspended, false)) MHD_resume_connection(c->conn);
}

/* Only from the connection's own access handler or content reader (MHD's rule). */
static void call_sleep(call_t *c) {
    MHD_suspend_connection(c->conn);
    atomic_store(&c->suspended, true);
    if (atomic_load(&c->ready) && atomic_exchange(&c->suspended, false))
        MHD_resume_connection(c->conn);
}

static void choice_fini(choice_t *ch) {
    fe_detok_destroy(&ch->detok);
    if (ch->stopper_ok) fe_stopper_fini(&ch->stopper);
    lt_buf_free(&ch->text);
    free(ch->lp);
}

/* Stops generating (client gone or server stopping): engine requests are released. */
void fe_http_call_release(call_t *c) {
    for (int i = 0; i < c->n_ch; i++)
        if (c->ch[i].live) {
            lantern_release(c->s->l, c->ch[i].id);
            c->ch[i].live = false;
            c->ch[i].finish = LANTERN_FINISH_ABORT;
            c->n_live--;
        }
}

static void call_free(call_t *c) {
    srv_t *s = c->s;
    pthread_mutex_lock(&s->mu);
    if (c->prev)
        c->prev->next = c->next;
    else if (s->calls == c)
        s->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_calls--;
    pthread_mutex_unlock(&s->mu);
    fe_http_call_release(c);
    for (int i = 0; i < c->n_ch; i++) choice_fini(&c->ch[i]);
    free(c->ch);
    free(c->toks);
    if (c->has_req) fe_oai_request_fini(&c->req);
    lt_buf_free(&c->body);
    lt_buf_free(&c->out);
    lt_buf_free(&c->scratch);
    free(c);
}

void fe_http_call_unref(call_t *c) {
    if (atomic_fetch_sub(&c->refs, 1) == 1) call_free(c);
}

call_t *fe_http_call_new(srv_t *s, struct MHD_Connection *conn) {
    call_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->s = s;
    c->conn = conn;
    atomic_init(&c->refs, 1);
    atomic_init(&c->ready, false);
    atomic_init(&c->suspended, false);
    c->t0_ns = lt_now_ns();
    c->created = (long)time(NULL);
    fe_http_call_identity(c);
    pthread_mutex_lock(&s->mu);
    c->next = s->calls;
    if (s->calls) s->calls->prev = c;
    s->calls = c;
    s->n_calls++;
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* ---- generation: submit, read outputs, turn tokens into text ---- */

static void text_out(choice_t *ch, const char *t, size_t n) {
    lt_buf_put(&ch->text, t, n);
    ch->text_total += n;
}

static int call_submit(call_t *c, fe_oai_error_t *e) {
    srv_t *s = c->s;
    fe_oai_request_t *q = &c->req;
    char err[LT_ERR_LEN];
    int n_ch = q->n_prompts * q->n;
    c->group.name = c->rid;
    choice_t *ch0 = calloc((size_t)n_ch, sizeof *ch0);
    c->toks = malloc(sizeof *c->toks * TOKENS_PER_READ);
    if (!ch0 || !c->toks) {
        free(ch0);
        return fe_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    /* published under the lock: the dump and the hang-up watchdog read the choices */
    pthread_mutex_lock(&s->mu);
    c->ch = ch0;
    c->n_ch = n_ch;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < c->n_ch; i++) {
        choice_t *ch = &c->ch[i];
        ch->index = i;
        ch->prompt = i / q->n;
        ch->stop_string = -1;
        ch->stop_token = -1;
        if (fe_detok_create(s->tok, q->skip_special, &ch->detok, err) ||
            fe_stopper_init(&ch->stopper, q->stops, q->stop_lens, q->n_stops, q->include_stop, err))
            return fe_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        ch->stopper_ok = true;
        if (q->echo) text_out(ch, q->prompts[ch->prompt].text, q->prompts[ch->prompt].text_len);
    }
    for (int i = 0; i < c->n_ch; i++) {
        choice_t *ch = &c->ch[i];
        if (q->params.max_tokens == 0) {
            ch->finish = LANTERN_FINISH_LENGTH;
            continue;
        }
        const fe_oai_prompt_t *p = &q->prompts[ch->prompt];
        lantern_request_t r;
        lantern_request_default(&r);
        r.prompt = p->ids;
        r.n_prompt = p->n_ids;
        r.params = q->params;
        r.params.seed = q->params.seed + (uint64_t)(i % q->n); /* choice k of n: seed + k */
        /* one engine request per choice: "<id>" alone, "<id>-<index>" among several */
        if (c->n_ch == 1)
            snprintf(ch->rid, sizeof ch->rid, "%s", c->rid);
        else
            snprintf(ch->rid, sizeof ch->rid, "%.*s-%u", FE_RID_MAX, c->rid, (unsigned)i % 1000u);
        r.request_id = ch->rid;
        r.traceparent = c->traceparent[0] ? c->traceparent : NULL;
        r.tracestate = c->tracestate;
        r.notify = call_notify;
        r.notify_arg = c;
        r.group = &c->group;
        if (lantern_submit(s->l, &r, &ch->id, err)) {
            fe_http_call_release(c);
            if (!lantern_alive(s->l))
                return fe_oai_fail(e, 503, "service_unavailable_error", "engine_unavailable", NULL,
                                   "the engine is not running");
            return fe_oai_fail(e, 500, "server_error", NULL, NULL, "%s", err);
        }
        ch->live = true;
        c->n_live++;
    }
    tel_hist_observe(&s->h_n, &TEL_B_N, q->n, NULL, NULL);
    tel_hist_observe(&s->h_tokenize, &TEL_B_FAST,
                     (double)(q->tokenize_ns + (q->render_end_ns - q->render_start_ns)) * 1e-9,
                     NULL, NULL);
    return 0;
}

/* Runs released text through the stop strings. */
static void choice_text(call_t *c, choice_t *ch, const char *t, size_t n) {
    lt_buf_t *out = &c->scratch;
    lt_buf_clear(out);
    int m = fe_stopper_feed(&ch->stopper, t, n, out);
    text_out(ch, out->data ? out->data : "", out->len);
    if (m == 1) {
        ch->stopped = true;
        ch->stop_string = ch->stopper.matched;
        /* the engine ends it at its next step; its ABORT output still brings the timings */
        lantern_abort(c->s->l, ch->id);
    }
}

static void choice_feed(call_t *c, choice_t *ch, const lantern_output_t *o) {
    const fe_oai_request_t *q = &c->req;
    char err[LT_ERR_LEN];
    for (int i = 0; i < o->n_tokens && !ch->stopped; i++) {
        const lantern_token_t *t = &o->tokens[i];
        ch->n_tokens++;
        if (!c->t_first_chunk_ns) c->t_first_chunk_ns = lt_now_ns();
        if (q->params.logprobs >= 0) {
            if (ch->n_lp == ch->cap_lp) {
                int cap = ch->cap_lp ? ch->cap_lp * 2 : 16;
                lp_entry_t *nl = realloc(ch->lp, sizeof *nl * (size_t)cap);
                if (nl) {
                    ch->lp = nl;
                    ch->cap_lp = cap;
                }
            }
            if (ch->n_lp < ch->cap_lp) /* out of memory: the entry is lost, not the request */
                ch->lp[ch->n_lp++] =
                    (lp_entry_t){.tok = *t, .offset = ch->text_total + ch->stopper.held.len};
        }
        /* the token that ended the request (EOS or a stop id) is not text, as in vLLM */
        bool stop_tok = o->finish == LANTERN_FINISH_STOP && i == o->n_tokens - 1;
        if (stop_tok && !q->include_stop) continue;
        const char *txt;
        size_t n;
        uint64_t d0 = lt_now_ns();
        int bad = fe_detok_feed(ch->detok, t->id, &txt, &n, err);
        c->detok_ns += lt_now_ns() - d0;
        if (!bad && n) choice_text(c, ch, txt, n);
    }
    if (o->finish == LANTERN_FINISH_NONE) return;
    ch->live = false;
    c->n_live--;
    ch->queue_s = o->queue_s;
    ch->prefill_s = o->prefill_s;
    ch->decode_s = o->decode_s;
    ch->n_cached = o->n_cached_tokens;
    ch->stop_token = o->stop_token;
    if (ch->stopped) {
        ch->finish = LANTERN_FINISH_STOP;
    } else {
        ch->finish = o->finish;
        const char *txt;
        size_t n;
        if (fe_detok_flush(ch->detok, &txt, &n, err) == 0 && n) choice_text(c, ch, txt, n);
        if (!ch->stopped) {
            lt_buf_clear(&c->scratch);
            fe_stopper_flush(&ch->stopper, &c->scratch);
            text_out(ch, c->scratch.data ? c->scratch.data : "", c->scratch.len);
        } else {
            ch->finish = LANTERN_FINISH_STOP;
        }
        if (o->finish == LANTERN_FINISH_ERROR)
            snprintf(ch->error, sizeof ch->error, "%s", o->error);
    }
}

/* Reads whatever the engine has for every live choice; never waits. */
static void call_pump(call_t *c) {
    char err[LT_ERR_LEN];
    for (int i = 0; i < c->n_ch; i++) {
        choice_t *ch = &c->ch[i];
        while (ch->live) {
            lantern_output_t o = {.tokens = c->toks, .tokens_cap = TOKENS_PER_READ};
            int rc = lantern_next(c->s->l, ch->id, &o, 0, err);
            if (rc == LANTERN_AGAIN) break;
            if (rc < 0) { /* liblantern forgot it: treat as failed */
                ch->live = false;
                c->n_live--;
                ch->finish = LANTERN_FINISH_ERROR;
                snprintf(ch->error, sizeof ch->error, "%.255s", err);
                break;
            }
            choice_feed(c, ch, &o);
        }
    }
    c->complete = c->n_live == 0;
}

/* ---- streaming: the SSE reader ---- */

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    call_t *c = cls;
    for (;;) {
        if (c->out_pos < c->out.len) {
            size_t n = c->out.len - c->out_pos;
            if (n > max) n = max;
            memcpy(buf, c->out.data + c->out_pos, n);
            c->out_pos += n;
            if (c->out_pos == c->out.len) {
                lt_buf_clear(&c->out);
                c->out_pos = 0;
            }
            return (ssize_t)n;
        }
        if (c->tail_sent) {
            fe_http_log_done(c);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        atomic_store(&c->ready, false);
        call_pump(c);
        fe_http_build_chunks(c);
        if (c->out.len > 0) continue;
        call_sleep(c);
        return 0;
    }
}

static void sse_free(void *cls) {
    fe_http_call_unref(cls);
}

/* ---- endpoints ---- */

enum MHD_Result fe_http_generation(call_t *c) {
    srv_t *s = c->s;
    if (!c->has_req) {
        fe_oai_error_t e;
        c->has_req = true;
        if (!lantern_alive(s->l)) return fe_http_engine_gone(c);
        fe_oai_kind_t kind = c->route == R_CHAT ? FE_OAI_CHAT : FE_OAI_COMPLETION;
        fe_http_span_request(c);
        int bad =
            fe_oai_parse(kind, c->body.data ? c->body.data : "", c->body.len, &s->oai, &c->req, &e);
        fe_http_span_parsed(c);
        if (bad || call_submit(c, &e)) return fe_http_respond_error(c, &e);
        atomic_fetch_add(&s->n_requests, 1);
        c->submitted = true;
        snprintf(c->oid, sizeof c->oid, "%s-%s", kind == FE_OAI_CHAT ? "chatcmpl" : "cmpl", c->rid);
        if (s->log_requests)
            LT_INFO("req=%s: %s, %d prompt(s), %d tokens in the first, n %d, max_tokens %d, "
                    "temperature %g, top_p %g, seed %s%s",
                    c->rid, kind == FE_OAI_CHAT ? "chat" : "completion", c->req.n_prompts,
                    c->req.prompts[0].n_ids, c->req.n, c->req.params.max_tokens,
                    c->req.params.temperature, c->req.params.top_p,
                    c->req.params.has_seed ? "set" : "none", c->req.stream ? ", streaming" : "");
        if (c->req.stream) {
            struct MHD_Response *r =
                MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, c, sse_free);
            if (!r) return MHD_NO;
            fe_http_span_stream(c);
            atomic_fetch_add(&c->refs, 1);
            MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
            return fe_http_queue(c, 200, "text/event-stream", r);
        }
    }
    /* non-streaming: wait (suspended) until every choice has finished */
    atomic_store(&c->ready, false);
    call_pump(c);
    if (!c->complete) {
        call_sleep(c);
        return MHD_YES;
    }
    for (int i = 0; i < c->n_ch; i++)
        if (c->ch[i].finish == LANTERN_FINISH_ERROR) {
            if (!lantern_alive(s->l)) return fe_http_engine_gone(c);
            char msg[320];
            snprintf(msg, sizeof msg, "generation failed: %s", c->ch[i].error);
            return fe_http_fail(c, 500, "server_error", NULL, NULL, msg);
        }
    summary_t t;
    fe_http_call_summary(c, &t);
    lt_buf_t b = {0};
    fe_http_build_full(c, &t, &b);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(b.len, b.data ? b.data : "", MHD_RESPMEM_MUST_COPY);
    lt_buf_free(&b);
    if (!r) return MHD_NO;
    static const char *const names[] = {"X-Lantern-Queue-Ms", "X-Lantern-Prefill-Ms",
                                        "X-Lantern-Decode-Ms", "X-Lantern-Decode-Tokens-Per-S"};
    const double vals[] = {t.queue_s * 1e3, t.prefill_s * 1e3, t.decode_s * 1e3,
                           fe_http_tokens_per_s(t.completion, t.decode_s)};
    for (int k = 0; k < 4; k++) {
        char v[32];
        snprintf(v, sizeof v, k < 3 ? "%.3f" : "%.2f", vals[k]);
        MHD_add_response_header(r, names[k], v);
    }
    c->status = 200; /* for the log line */
    fe_http_log_done(c);
    return fe_http_queue(c, 200, "application/json", r);
}
