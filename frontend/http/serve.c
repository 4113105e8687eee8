/*
 * serve.c — `lantern serve`: the OpenAI-compatible HTTP server (libmicrohttpd) in the frontend
 * process, in front of the engine tree that liblantern starts.
 *
 * Threads: libmicrohttpd runs a small pool of event-loop threads; none of them ever waits on the
 * engine. A request that waits for tokens is *suspended* (MHD_suspend_connection) and resumed by
 * liblantern's notify hook when its next output arrives, so 128 concurrent streams cost no
 * thread each and no polling. The main thread only watches signals, the engine's health and the
 * periodic stats line.
 *
 * Suspend/resume protocol (call_sleep / call_notify): a call sleeps by suspending first, then
 * raising `suspended`, then re-checking `ready`; the notifier raises `ready`, then takes
 * `suspended` with an exchange. Whichever of the two takes `suspended` resumes the connection, so
 * a wake-up can never be lost and a connection is never resumed before it was suspended.
 *
 * Lifetime of a call: one per HTTP request (MHD's con_cls). Streaming calls are also referenced by
 * their response (the SSE reader); the last of the two references frees the call. A call's engine
 * requests are released (aborted if still running) when the HTTP request completes for any
 * reason, client disconnect included, and lantern_release guarantees no notify after that.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "chat_template.h"
#include "cli.h"
#include "lantern.h"
#include "lt.h"
#include "oai.h"
#include "proc.h"
#include "stop.h"
#include "tokenizer.h"
#include "model_config.h"

#define TOKENS_PER_READ 64
/* A client's X-Request-Id: printable ASCII without spaces, short enough that "<id>-<choice>"
 * still fits an envelope's request id. */
#define FE_RID_MAX (IPC_REQUEST_ID_MAX - 8)
#define FE_RID_STR "120"
_Static_assert(FE_RID_MAX == 120, "FE_RID_STR spells FE_RID_MAX");

/* ---- server state ---- */

typedef struct call call_t;

typedef struct srv {
    struct MHD_Daemon *d;
    lantern_t *l;
    fe_tokenizer_t *tok;
    fe_chat_template_t *tpl;
    fe_oai_ctx_t oai;
    lt_model_config_t gen; /* the model's generation config (fe_oai_ctx_t.gen) */
    lantern_model_info_t info;
    char model[4096], served_name[256], host[256];
    int port;
    char *api_key;
    size_t max_body;
    bool log_requests, log_stats;
    time_t started;
    pthread_mutex_t mu; /* guards calls */
    call_t *calls;      /* live calls, for dumps and shutdown */
    int n_calls;
    /* counters (frontend view) */
    atomic_ullong n_requests, n_prompt_tokens, n_gen_tokens, n_disconnects;
    atomic_ullong n_finished[5]; /* by lantern_finish_t */
    atomic_ullong n_errors[6];   /* 400 401 404 413 503 other */
} srv_t;

typedef enum route {
    R_NONE,
    R_COMPLETIONS,
    R_CHAT,
    R_MODELS,
    R_MODEL, /* /v1/models/{id} */
    R_HEALTH,
    R_VERSION,
    R_METRICS,
    R_TOKENIZE,
    R_DETOKENIZE,
} route_t;

/* A generated token with its logprobs, and where its text starts in the choice's text. */
typedef struct lp_entry {
    lantern_token_t tok;
    size_t offset;
} lp_entry_t;

typedef struct choice {
    int index, prompt;
    uint64_t id;                      /* liblantern's handle */
    char rid[IPC_REQUEST_ID_MAX + 1]; /* its engine request id: the call's, "-<index>" if n > 1 */
    bool live;                        /* submitted and not yet finished in liblantern */
    bool stopped;                     /* a stop string matched: no more text */
    bool final_sent;
    bool role_sent;
    fe_detok_t *detok;
    fe_stopper_t stopper;
    bool stopper_ok;
    lt_buf_t text;     /* non-streaming: all the text; streaming: not yet sent */
    size_t text_total; /* bytes of text released so far (logprobs text_offset) */
    lp_entry_t *lp;    /* logprob entries not yet written */
    int n_lp, cap_lp;
    int n_tokens;
    lantern_finish_t finish;
    int stop_string; /* index into the request's stops, or -1 */
    int32_t stop_token;
    char error[256];
    double queue_s, prefill_s, decode_s;
    int n_cached;
} choice_t;

struct call {
    srv_t *s;
    struct MHD_Connection *conn;
    route_t route;
    atomic_int refs;
    char rid[FE_RID_MAX + 1]; /* X-Request-Id, or made up: the request's identity everywhere */
    bool rid_bad;             /* the client's X-Request-Id is not one we can carry: a 400 */
    char traceparent[IPC_TRACEPARENT_LEN + 1]; /* the client's, when valid; "" otherwise */
    char tracestate[IPC_TRACESTATE_MAX + 1];
    char oid[FE_RID_MAX + 16]; /* the response's "id" */
    long created;
    uint64_t t0_ns;
    lt_buf_t body;
    bool too_large, body_done;
    /* a generation */
    fe_oai_request_t req;
    bool has_req;
    bool submitted; /* its choices reached the engine */
    choice_t *ch;
    int n_ch, n_live;
    lantern_token_t *toks; /* TOKENS_PER_READ scratch for lantern_next */
    atomic_bool ready;
    atomic_bool suspended;
    lt_buf_t out;     /* SSE bytes not yet handed to MHD */
    lt_buf_t scratch; /* stop-string releases */
    size_t out_pos;
    bool tail_sent;   /* usage chunk and [DONE] written */
    bool complete;    /* every choice finished */
    bool closed;      /* MHD is done with the connection (under srv->mu) */
    atomic_bool gone; /* the watchdog saw the client hang up */
    int status;
    call_t *prev, *next; /* srv->calls */
};

static srv_t g_srv;

/* ---- small helpers ---- */

static void random_hex(char *out, int n) {
    unsigned char b[32];
    if (n > 64) n = 64;
    if (getrandom(b, (size_t)(n + 1) / 2, 0) < 0)
        for (int i = 0; i < 32; i++) b[i] = (unsigned char)(lt_now_ns() >> (i % 8));
    for (int i = 0; i < n; i++) out[i] = "0123456789abcdef"[(b[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[n] = '\0';
}

/* The request's identity from its headers: the client's X-Request-Id (refused later with a 400
 * when it is not 1..FE_RID_MAX printable ASCII characters; never silently replaced) or a made-up
 * one, and the client's W3C trace context when its traceparent is valid (ignored otherwise, as
 * the W3C spec asks). */
static void call_identity(call_t *c) {
    const char *h = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = h ? strlen(h) : 0;
    bool ok = h && n >= 1 && n <= FE_RID_MAX;
    for (size_t i = 0; ok && i < n; i++) ok = h[i] >= 0x21 && h[i] <= 0x7e;
    if (ok)
        memcpy(c->rid, h, n + 1);
    else
        random_hex(c->rid, 32);
    c->rid_bad = h && !ok;
    const char *tp = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "traceparent");
    const char *ts = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "tracestate");
    if (tp && ipc_traceparent_valid(tp, strlen(tp))) {
        memcpy(c->traceparent, tp, IPC_TRACEPARENT_LEN + 1);
        if (ts && ipc_tracestate_valid(ts, strlen(ts)))
            snprintf(c->tracestate, sizeof c->tracestate, "%s", ts);
    }
}

/* constant-time: the time taken depends on the key's length, never on where it differs */
static bool key_matches(const char *given, const char *key) {
    size_t gl = strlen(given), kl = strlen(key);
    unsigned char diff = gl != kl;
    for (size_t i = 0; i < kl; i++) diff |= (unsigned char)(key[i] ^ (i < gl ? given[i] : 0));
    return diff == 0;
}

/* ---- responses ---- */

/* Sends a response with the headers every answer carries; takes r. */
static enum MHD_Result queue(call_t *c, int status, const char *type, struct MHD_Response *r) {
    if (!r) return MHD_NO;
    if (type) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "X-Request-Id", c->rid);
    c->status = status;
    enum MHD_Result ok = MHD_queue_response(c->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result respond(call_t *c, int status, const char *type, const char *body,
                               size_t len) {
    return queue(c, status, type,
                 MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY));
}

/* A JSON object body: json_begin opens it, respond_json closes, sends and frees it. */
static void json_begin(fe_jw_t *w, lt_buf_t *b) {
    memset(b, 0, sizeof *b);
    fe_jw_init(w, b);
    fe_jw_obj(w);
}

static enum MHD_Result respond_json(call_t *c, fe_jw_t *w) {
    fe_jw_end(w, '}');
    enum MHD_Result ok =
        w->err ? MHD_NO : respond(c, 200, "application/json", w->b->data, w->b->len);
    lt_buf_free(w->b);
    return ok;
}

static void count_error(srv_t *s, int status) {
    int k = status == 400   ? 0
            : status == 401 ? 1
            : status == 404 ? 2
            : status == 413 ? 3
            : status == 503 ? 4
                            : 5;
    atomic_fetch_add(&s->n_errors[k], 1);
}

static enum MHD_Result respond_error(call_t *c, const fe_oai_error_t *e) {
    lt_buf_t b = {0};
    fe_oai_error_json(e, &b);
    count_error(c->s, e->status);
    if (c->s->log_requests) LT_INFO("req=%s: %d %s", c->rid, e->status, e->message);
    enum MHD_Result ok = respond(c, e->status, "application/json", b.data ? b.data : "{}", b.len);
    lt_buf_free(&b);
    return ok;
}

static enum MHD_Result fail(call_t *c, int status, const char *type, const char *code,
                            const char *param, const char *msg) {
    fe_oai_error_t e;
    fe_oai_fail(&e, status, type, code, param, "%s", msg);
    return respond_error(c, &e);
}

static enum MHD_Result engine_gone(call_t *c) {
    return fail(c, 503, "service_unavailable_error", "engine_unavailable", NULL,
                "the engine is not running");
}

/* ---- calls ---- */

static void call_unref(call_t *c);

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
static void call_release(call_t *c) {
    for (int i = 0; i < c->n_ch; i++)
        if (c->ch[i].live) {
            lantern_release(c->s->l, c->ch[i].id);
            c->ch[i].live = false;
            c->ch[i].finish = LANTERN_FINISH_ABORT;
            c->n_live--;
            atomic_fetch_add(&c->s->n_finished[LANTERN_FINISH_ABORT], 1);
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
    call_release(c);
    for (int i = 0; i < c->n_ch; i++) choice_fini(&c->ch[i]);
    free(c->ch);
    free(c->toks);
    if (c->has_req) fe_oai_request_fini(&c->req);
    lt_buf_free(&c->body);
    lt_buf_free(&c->out);
    lt_buf_free(&c->scratch);
    free(c);
}

static void call_unref(call_t *c) {
    if (atomic_fetch_sub(&c->refs, 1) == 1) call_free(c);
}

static call_t *call_new(srv_t *s, struct MHD_Connection *conn) {
    call_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->s = s;
    c->conn = conn;
    atomic_init(&c->refs, 1);
    atomic_init(&c->ready, false);
    atomic_init(&c->suspended, false);
    c->t0_ns = lt_now_ns();
    c->created = (long)time(NULL);
    call_identity(c);
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
            fe_stopper_init(&ch->stopper, q->stops, q->n_stops, q->include_stop, err))
            return fe_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        ch->stopper_ok = true;
        if (q->echo) text_out(ch, q->prompts[ch->prompt].text, strlen(q->prompts[ch->prompt].text));
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
        if (lantern_submit(s->l, &r, &ch->id, err)) {
            call_release(c);
            if (!lantern_alive(s->l))
                return fe_oai_fail(e, 503, "service_unavailable_error", "engine_unavailable", NULL,
                                   "the engine is not running");
            return fe_oai_fail(e, 500, "server_error", NULL, NULL, "%s", err);
        }
        ch->live = true;
        c->n_live++;
    }
    for (int i = 0; i < q->n_prompts; i++)
        atomic_fetch_add(&s->n_prompt_tokens, (unsigned long long)q->prompts[i].n_ids);
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
        if (fe_detok_feed(ch->detok, t->id, &txt, &n, err) == 0 && n) choice_text(c, ch, txt, n);
    }
    atomic_fetch_add(&c->s->n_gen_tokens, (unsigned long long)o->n_tokens);
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
    atomic_fetch_add(&c->s->n_finished[ch->finish], 1);
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

/* ---- response bodies ---- */

static const char *finish_str(lantern_finish_t f) {
    switch (f) {
    case LANTERN_FINISH_STOP: return "stop";
    case LANTERN_FINISH_LENGTH: return "length";
    case LANTERN_FINISH_ABORT: return "abort";
    case LANTERN_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

static void write_stop_reason(fe_jw_t *w, const call_t *c, const choice_t *ch) {
    fe_jw_key(w, "stop_reason");
    if (ch->stop_string >= 0)
        fe_jw_cstr(w, c->req.stops[ch->stop_string]);
    else if (ch->stop_token >= 0)
        fe_jw_int(w, ch->stop_token);
    else
        fe_jw_null(w);
}

static double tokens_per_s(int n_tokens, double decode_s) {
    return decode_s > 0 && n_tokens > 1 ? (n_tokens - 1) / decode_s : 0;
}

/* What a response reports about its request (or one choice): token counts and the engine's
 * phase times. */
typedef struct summary {
    int prompt, cached, completion;
    double queue_s, prefill_s, decode_s;
} summary_t;

/* The whole request: prompts counted once each, every choice's tokens, the slowest choice's
 * phases (tokens/s is then over every choice). */
static void call_summary(const call_t *c, summary_t *t) {
    memset(t, 0, sizeof *t);
    for (int i = 0; i < c->req.n_prompts; i++) t->prompt += c->req.prompts[i].n_ids;
    for (int i = 0; i < c->n_ch; i++) {
        const choice_t *ch = &c->ch[i];
        t->completion += ch->n_tokens;
        if (ch->queue_s > t->queue_s) t->queue_s = ch->queue_s;
        if (ch->prefill_s > t->prefill_s) t->prefill_s = ch->prefill_s;
        if (ch->decode_s > t->decode_s) t->decode_s = ch->decode_s;
        if (ch->n_cached > t->cached) t->cached = ch->n_cached;
    }
}

static void write_timings(fe_jw_t *w, const summary_t *t) {
    fe_jw_key(w, "timings");
    fe_jw_obj(w);
    fe_jw_key(w, "queue_ms");
    fe_jw_num(w, t->queue_s * 1e3);
    fe_jw_key(w, "prefill_ms");
    fe_jw_num(w, t->prefill_s * 1e3);
    fe_jw_key(w, "decode_ms");
    fe_jw_num(w, t->decode_s * 1e3);
    fe_jw_key(w, "decode_tokens_per_s");
    fe_jw_num(w, tokens_per_s(t->completion, t->decode_s));
    fe_jw_key(w, "prompt_tokens");
    fe_jw_int(w, t->prompt);
    fe_jw_key(w, "cached_prompt_tokens");
    fe_jw_int(w, t->cached);
    fe_jw_key(w, "completion_tokens");
    fe_jw_int(w, t->completion);
    fe_jw_end(w, '}');
}

static void token_text(const srv_t *s, int32_t id, char *out, size_t cap) {
    char *t = NULL, err[LT_ERR_LEN];
    size_t n;
    if (fe_tokenizer_decode(s->tok, &id, 1, false, &t, &n, err)) n = 0;
    snprintf(out, cap, "%.*s", (int)n, t ? t : "");
    free(t);
}

static void write_bytes(fe_jw_t *w, const char *t) {
    fe_jw_key(w, "bytes");
    fe_jw_arr(w);
    for (const unsigned char *p = (const unsigned char *)t; *p; p++) fe_jw_int(w, *p);
    fe_jw_end(w, ']');
}

/* Writes and forgets the logprob entries gathered so far. */
static void write_logprobs(fe_jw_t *w, const call_t *c, choice_t *ch) {
    fe_jw_key(w, "logprobs");
    if (c->req.params.logprobs < 0) {
        fe_jw_null(w);
        return;
    }
    char t[256];
    fe_jw_obj(w);
    if (c->req.kind == FE_OAI_CHAT) {
        fe_jw_key(w, "content");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) {
            const lantern_token_t *e = &ch->lp[i].tok;
            fe_jw_obj(w);
            token_text(c->s, e->id, t, sizeof t);
            fe_jw_key(w, "token");
            fe_jw_cstr(w, t);
            fe_jw_key(w, "logprob");
            fe_jw_num(w, e->logprob);
            write_bytes(w, t);
            fe_jw_key(w, "top_logprobs");
            fe_jw_arr(w);
            for (int k = 0; k < e->n_top && k < c->req.params.logprobs; k++) {
                fe_jw_obj(w);
                token_text(c->s, e->top_ids[k], t, sizeof t);
                fe_jw_key(w, "token");
                fe_jw_cstr(w, t);
                fe_jw_key(w, "logprob");
                fe_jw_num(w, e->top_logprobs[k]);
                write_bytes(w, t);
                fe_jw_end(w, '}');
            }
            fe_jw_end(w, ']');
            fe_jw_end(w, '}');
        }
        fe_jw_end(w, ']');
    } else {
        fe_jw_key(w, "tokens");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) {
            token_text(c->s, ch->lp[i].tok.id, t, sizeof t);
            fe_jw_cstr(w, t);
        }
        fe_jw_end(w, ']');
        fe_jw_key(w, "token_logprobs");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) fe_jw_num(w, ch->lp[i].tok.logprob);
        fe_jw_end(w, ']');
        fe_jw_key(w, "top_logprobs");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) {
            fe_jw_obj(w);
            /* the chosen token first, then the alternatives (vLLM's layout) */
            token_text(c->s, ch->lp[i].tok.id, t, sizeof t);
            fe_jw_key(w, t);
            fe_jw_num(w, ch->lp[i].tok.logprob);
            for (int k = 0; k < ch->lp[i].tok.n_top && k < c->req.params.logprobs; k++) {
                if (ch->lp[i].tok.top_ids[k] == ch->lp[i].tok.id) continue;
                token_text(c->s, ch->lp[i].tok.top_ids[k], t, sizeof t);
                fe_jw_key(w, t);
                fe_jw_num(w, ch->lp[i].tok.top_logprobs[k]);
            }
            fe_jw_end(w, '}');
        }
        fe_jw_end(w, ']');
        fe_jw_key(w, "text_offset");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) fe_jw_int(w, (long long)ch->lp[i].offset);
        fe_jw_end(w, ']');
    }
    fe_jw_end(w, '}');
    ch->n_lp = 0;
}

static void write_usage(fe_jw_t *w, const summary_t *t) {
    fe_jw_key(w, "usage");
    fe_jw_obj(w);
    fe_jw_key(w, "prompt_tokens");
    fe_jw_int(w, t->prompt);
    fe_jw_key(w, "completion_tokens");
    fe_jw_int(w, t->completion);
    fe_jw_key(w, "total_tokens");
    fe_jw_int(w, t->prompt + t->completion);
    fe_jw_end(w, '}');
}

static void write_head(fe_jw_t *w, const call_t *c, bool chunk) {
    bool chat = c->req.kind == FE_OAI_CHAT;
    fe_jw_key(w, "id");
    fe_jw_cstr(w, c->oid);
    fe_jw_key(w, "object");
    fe_jw_cstr(w, chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    fe_jw_key(w, "created");
    fe_jw_int(w, c->created);
    fe_jw_key(w, "model");
    fe_jw_cstr(w, c->s->served_name);
}

static void build_full(call_t *c, const summary_t *t, lt_buf_t *b) {
    bool chat = c->req.kind == FE_OAI_CHAT;
    fe_jw_t w;
    fe_jw_init(&w, b);
    fe_jw_obj(&w);
    write_head(&w, c, false);
    fe_jw_key(&w, "choices");
    fe_jw_arr(&w);
    for (int i = 0; i < c->n_ch; i++) {
        choice_t *ch = &c->ch[i];
        fe_jw_obj(&w);
        fe_jw_key(&w, "index");
        fe_jw_int(&w, i);
        if (chat) {
            fe_jw_key(&w, "message");
            fe_jw_obj(&w);
            fe_jw_key(&w, "role");
            fe_jw_cstr(&w, "assistant");
            fe_jw_key(&w, "content");
            fe_jw_str(&w, ch->text.data ? ch->text.data : "", ch->text.len);
            fe_jw_end(&w, '}');
        } else {
            fe_jw_key(&w, "text");
            fe_jw_str(&w, ch->text.data ? ch->text.data : "", ch->text.len);
        }
        write_logprobs(&w, c, ch);
        fe_jw_key(&w, "finish_reason");
        fe_jw_cstr(&w, finish_str(ch->finish));
        write_stop_reason(&w, c, ch);
        fe_jw_end(&w, '}');
    }
    fe_jw_end(&w, ']');
    write_usage(&w, t);
    write_timings(&w, t);
    fe_jw_end(&w, '}');
}

/* One SSE event per choice with news: text, logprobs, its end. */
static void build_chunks(call_t *c) {
    bool chat = c->req.kind == FE_OAI_CHAT;
    fe_jw_t w;
    for (int i = 0; i < c->n_ch; i++) {
        choice_t *ch = &c->ch[i];
        bool ended = !ch->live && ch->finish != LANTERN_FINISH_NONE;
        bool role = chat && !ch->role_sent;
        if (ch->final_sent || (!role && ch->text.len == 0 && ch->n_lp == 0 && !ended)) continue;
        lt_buf_put(&c->out, "data: ", 6);
        fe_jw_init(&w, &c->out);
        fe_jw_obj(&w);
        write_head(&w, c, true);
        fe_jw_key(&w, "choices");
        fe_jw_arr(&w);
        fe_jw_obj(&w);
        fe_jw_key(&w, "index");
        fe_jw_int(&w, i);
        if (chat) {
            fe_jw_key(&w, "delta");
            fe_jw_obj(&w);
            if (role) {
                fe_jw_key(&w, "role");
                fe_jw_cstr(&w, "assistant");
                ch->role_sent = true;
            }
            if (ch->text.len || role) {
                fe_jw_key(&w, "content");
                fe_jw_str(&w, ch->text.data ? ch->text.data : "", ch->text.len);
            }
            fe_jw_end(&w, '}');
        } else {
            fe_jw_key(&w, "text");
            fe_jw_str(&w, ch->text.data ? ch->text.data : "", ch->text.len);
        }
        lt_buf_clear(&ch->text);
        write_logprobs(&w, c, ch);
        fe_jw_key(&w, "finish_reason");
        fe_jw_cstr(&w, ended ? finish_str(ch->finish) : NULL);
        if (ended) {
            write_stop_reason(&w, c, ch);
            ch->final_sent = true;
        }
        fe_jw_end(&w, '}');
        fe_jw_end(&w, ']');
        if (ended) {
            summary_t t = {.prompt = c->req.prompts[ch->prompt].n_ids,
                           .cached = ch->n_cached,
                           .completion = ch->n_tokens,
                           .queue_s = ch->queue_s,
                           .prefill_s = ch->prefill_s,
                           .decode_s = ch->decode_s};
            write_timings(&w, &t);
        }
        fe_jw_end(&w, '}');
        lt_buf_put(&c->out, "\n\n", 2);
        if (ended && ch->finish == LANTERN_FINISH_ERROR) {
            fe_oai_error_t e;
            lt_buf_t eb = {0};
            fe_oai_fail(&e, 500, "server_error", NULL, NULL, "generation failed: %s", ch->error);
            fe_oai_error_json(&e, &eb);
            lt_buf_put(&c->out, "data: ", 6);
            lt_buf_put(&c->out, eb.data ? eb.data : "{}", eb.len);
            lt_buf_put(&c->out, "\n\n", 2);
            lt_buf_free(&eb);
        }
    }
    if (c->complete && !c->tail_sent) {
        if (c->req.include_usage) {
            lt_buf_put(&c->out, "data: ", 6);
            fe_jw_init(&w, &c->out);
            fe_jw_obj(&w);
            write_head(&w, c, true);
            fe_jw_key(&w, "choices");
            fe_jw_arr(&w);
            fe_jw_end(&w, ']');
            summary_t t;
            call_summary(c, &t);
            write_usage(&w, &t);
            fe_jw_end(&w, '}');
            lt_buf_put(&c->out, "\n\n", 2);
        }
        lt_buf_put(&c->out, "data: [DONE]\n\n", 14);
        c->tail_sent = true;
    }
}

static void log_done(call_t *c) {
    if (!c->s->log_requests || !c->has_req) return;
    summary_t t;
    call_summary(c, &t);
    LT_INFO("req=%s: %s %d, %d choice(s), prompt %d tokens (%d cached), completion %d "
            "tokens, queue %.1f ms, prefill %.1f ms, decode %.1f ms (%.1f tokens/s)",
            c->rid, c->route == R_CHAT ? "chat" : "completion", c->status, c->n_ch, t.prompt,
            t.cached, t.completion, t.queue_s * 1e3, t.prefill_s * 1e3, t.decode_s * 1e3,
            tokens_per_s(t.completion, t.decode_s));
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
            log_done(c);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        atomic_store(&c->ready, false);
        call_pump(c);
        build_chunks(c);
        if (c->out.len > 0) continue;
        call_sleep(c);
        return 0;
    }
}

static void sse_free(void *cls) {
    call_unref(cls);
}

/* ---- endpoints ---- */

static enum MHD_Result generation(call_t *c) {
    srv_t *s = c->s;
    if (!c->has_req) {
        fe_oai_error_t e;
        c->has_req = true;
        if (!lantern_alive(s->l)) return engine_gone(c);
        fe_oai_kind_t kind = c->route == R_CHAT ? FE_OAI_CHAT : FE_OAI_COMPLETION;
        if (fe_oai_parse(kind, c->body.data ? c->body.data : "", c->body.len, &s->oai, &c->req,
                         &e) ||
            call_submit(c, &e))
            return respond_error(c, &e);
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
            atomic_fetch_add(&c->refs, 1);
            MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
            return queue(c, 200, "text/event-stream", r);
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
            if (!lantern_alive(s->l)) return engine_gone(c);
            char msg[320];
            snprintf(msg, sizeof msg, "generation failed: %s", c->ch[i].error);
            return fail(c, 500, "server_error", NULL, NULL, msg);
        }
    summary_t t;
    call_summary(c, &t);
    lt_buf_t b = {0};
    build_full(c, &t, &b);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(b.len, b.data ? b.data : "", MHD_RESPMEM_MUST_COPY);
    lt_buf_free(&b);
    if (!r) return MHD_NO;
    static const char *const names[] = {"X-Lantern-Queue-Ms", "X-Lantern-Prefill-Ms",
                                        "X-Lantern-Decode-Ms", "X-Lantern-Decode-Tokens-Per-S"};
    const double vals[] = {t.queue_s * 1e3, t.prefill_s * 1e3, t.decode_s * 1e3,
                           tokens_per_s(t.completion, t.decode_s)};
    for (int k = 0; k < 4; k++) {
        char v[32];
        snprintf(v, sizeof v, k < 3 ? "%.3f" : "%.2f", vals[k]);
        MHD_add_response_header(r, names[k], v);
    }
    c->status = 200; /* for the log line */
    log_done(c);
    return queue(c, 200, "application/json", r);
}

static void write_model(fe_jw_t *w, const srv_t *s) {
    fe_jw_obj(w);
    fe_jw_key(w, "id");
    fe_jw_cstr(w, s->served_name);
    fe_jw_key(w, "object");
    fe_jw_cstr(w, "model");
    fe_jw_key(w, "created");
    fe_jw_int(w, (long long)s->started);
    fe_jw_key(w, "owned_by");
    fe_jw_cstr(w, "lantern");
    fe_jw_key(w, "root");
    fe_jw_cstr(w, s->model);
    fe_jw_key(w, "max_model_len");
    fe_jw_int(w, s->info.max_model_len);
    fe_jw_end(w, '}');
}

static enum MHD_Result models(call_t *c) {
    lt_buf_t b;
    fe_jw_t w;
    json_begin(&w, &b);
    fe_jw_key(&w, "object");
    fe_jw_cstr(&w, "list");
    fe_jw_key(&w, "data");
    fe_jw_arr(&w);
    write_model(&w, c->s);
    fe_jw_end(&w, ']');
    return respond_json(c, &w);
}

/* GET /v1/models/{id}: the model object itself (OpenAI's "retrieve model") */
static enum MHD_Result model(call_t *c, const char *id) {
    fe_oai_error_t e;
    if (fe_oai_model_known(&c->s->oai, id, &e)) return respond_error(c, &e);
    lt_buf_t b = {0};
    fe_jw_t w;
    fe_jw_init(&w, &b);
    write_model(&w, c->s);
    enum MHD_Result ok =
        w.err ? MHD_NO : respond(c, 200, "application/json", b.data ? b.data : "", b.len);
    lt_buf_free(&b);
    return ok;
}

static void metric(lt_buf_t *b, const char *name, const char *type, const char *help,
                   const char *labels, double v) {
    char line[512];
    int n =
        snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s{model_name=\"%s\"%s} %.17g\n",
                 name, help, name, type, name, g_srv.served_name, labels, v);
    lt_buf_put(b, line, (size_t)n);
}

static enum MHD_Result metrics(call_t *c) {
    srv_t *s = c->s;
    lantern_stats_t st;
    lantern_stats(s->l, &st);
    lt_buf_t b = {0};
    metric(&b, "lantern:num_requests_running", "gauge",
           "Number of requests in model execution batches.", "", st.running);
    metric(&b, "lantern:num_requests_waiting", "gauge",
           "Number of requests waiting to be processed.", "", st.waiting);
    metric(&b, "lantern:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
           "", st.kv_usage);
    metric(&b, "lantern:prefix_cache_queries_total", "counter",
           "Prefix cache queries, in terms of number of queried tokens.", "",
           (double)st.prefix_queries);
    metric(&b, "lantern:prefix_cache_hits_total", "counter",
           "Prefix cache hits, in terms of number of cached tokens.", "", (double)st.prefix_hits);
    metric(&b, "lantern:num_preemptions_total", "counter", "Cumulative number of preemptions.", "",
           (double)st.preemptions);
    metric(&b, "lantern:prompt_tokens_total", "counter", "Number of prefill tokens processed.", "",
           (double)atomic_load(&s->n_prompt_tokens));
    metric(&b, "lantern:generation_tokens_total", "counter",
           "Number of generation tokens processed.", "", (double)atomic_load(&s->n_gen_tokens));
    static const char *reasons[] = {NULL, "stop", "length", "abort", "error"};
    static const char succ[] = "# HELP lantern:request_success_total Count of finished requests "
                               "by finish reason.\n# TYPE lantern:request_success_total counter\n";
    lt_buf_put(&b, succ, sizeof succ - 1);
    for (int k = 1; k <= 4; k++) {
        char line[256];
        int n = snprintf(line, sizeof line,
                         "lantern:request_success_total{model_name=\"%s\",finished_reason=\"%s\"} "
                         "%llu\n",
                         s->served_name, reasons[k], atomic_load(&s->n_finished[k]));
        lt_buf_put(&b, line, (size_t)n);
    }
    metric(&b, "lantern:client_disconnects_total", "counter",
           "Requests whose client went away before the end (aborted in the engine).", "",
           (double)atomic_load(&s->n_disconnects));
    metric(&b, "lantern:engine_alive", "gauge", "1 while the engine process tree is running.", "",
           lantern_alive(s->l));
    enum MHD_Result ok = respond(c, 200, "text/plain; version=0.0.4", b.data, b.len);
    lt_buf_free(&b);
    return ok;
}

static enum MHD_Result tokenize(call_t *c) {
    srv_t *s = c->s;
    fe_oai_error_t e;
    cJSON *j = cJSON_ParseWithLength(c->body.data ? c->body.data : "", c->body.len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return fail(c, 400, "invalid_request_error", NULL, NULL, "the body must be a JSON object");
    }
    enum MHD_Result ok;
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(j, "add_special_tokens");
    char *text = NULL, err[LT_ERR_LEN];
    int32_t *ids = NULL;
    int n = 0;
    if (fe_oai_check_model(&s->oai, j, &e)) {
        ok = respond_error(c, &e);
        goto out;
    }
    if (add && !cJSON_IsBool(add) && !cJSON_IsNull(add)) {
        ok = fail(c, 400, "invalid_request_error", NULL, "add_special_tokens",
                  "'add_special_tokens' must be a boolean");
        goto out;
    }
    bool add_special;
    if (cJSON_IsString(prompt)) {
        add_special = !add || !cJSON_IsFalse(add);
        text = strdup(prompt->valuestring);
    } else if (msgs) {
        add_special = add && cJSON_IsTrue(add);
        if (fe_oai_render_chat(&s->oai, j, &text, &e)) {
            ok = respond_error(c, &e);
            goto out;
        }
    } else {
        ok = fail(c, 400, "invalid_request_error", NULL, "prompt",
                  "give 'prompt' (a string) or 'messages'");
        goto out;
    }
    if (!text ||
        fe_tokenizer_encode(s->tok, text, strlen(text), add_special, true, &ids, &n, err)) {
        ok = fail(c, 500, "server_error", NULL, NULL, "tokenization failed");
        goto out;
    }
    lt_buf_t b;
    fe_jw_t w;
    json_begin(&w, &b);
    fe_jw_key(&w, "count");
    fe_jw_int(&w, n);
    fe_jw_key(&w, "max_model_len");
    fe_jw_int(&w, s->info.max_model_len);
    fe_jw_key(&w, "tokens");
    fe_jw_arr(&w);
    for (int i = 0; i < n; i++) fe_jw_int(&w, ids[i]);
    fe_jw_end(&w, ']');
    ok = respond_json(c, &w);
out:
    free(text);
    free(ids);
    cJSON_Delete(j);
    return ok;
}

static enum MHD_Result detokenize(call_t *c) {
    srv_t *s = c->s;
    fe_oai_error_t e;
    cJSON *j = cJSON_ParseWithLength(c->body.data ? c->body.data : "", c->body.len);
    enum MHD_Result ok;
    int32_t *ids = NULL;
    int n = 0;
    char *text = NULL, err[LT_ERR_LEN];
    if (!cJSON_IsObject(j)) {
        ok = fail(c, 400, "invalid_request_error", NULL, NULL, "the body must be a JSON object");
        goto out;
    }
    if (fe_oai_token_ids(&s->oai, cJSON_GetObjectItemCaseSensitive(j, "tokens"), "tokens", &ids, &n,
                         &e)) {
        ok = respond_error(c, &e);
        goto out;
    }
    size_t len;
    if (fe_tokenizer_decode(s->tok, ids, n, false, &text, &len, err)) {
        ok = fail(c, 500, "server_error", NULL, NULL, "detokenization failed");
        goto out;
    }
    lt_buf_t b;
    fe_jw_t w;
    json_begin(&w, &b);
    fe_jw_key(&w, "prompt");
    fe_jw_str(&w, text, len);
    ok = respond_json(c, &w);
out:
    free(ids);
    free(text);
    cJSON_Delete(j);
    return ok;
}

/* ---- the access handler ---- */

static route_t route_of(const char *url, bool *post) {
    static const struct {
        const char *path;
        route_t r;
        bool post;
    } table[] = {
        {"/v1/completions", R_COMPLETIONS, true}, {"/v1/chat/completions", R_CHAT, true},
        {"/v1/models", R_MODELS, false},          {"/health", R_HEALTH, false},
        {"/version", R_VERSION, false},           {"/metrics", R_METRICS, false},
        {"/tokenize", R_TOKENIZE, true},          {"/detokenize", R_DETOKENIZE, true},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(url, table[i].path) == 0) {
            *post = table[i].post;
            return table[i].r;
        }
    if (strncmp(url, "/v1/models/", 11) == 0 && url[11]) {
        *post = false;
        return R_MODEL;
    }
    return R_NONE;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    srv_t *s = cls;
    call_t *c = *con_cls;
    if (!c) { /* headers are in: route, authorize, size-check before reading any body */
        if (!(c = call_new(s, conn))) return MHD_NO;
        *con_cls = c;
        bool want_post = false;
        c->route = route_of(url, &want_post);
        /* the key guards every path but the three that monitoring must reach, unknown ones too
         * (so a client without the key learns nothing about what exists) */
        bool open = c->route == R_HEALTH || c->route == R_VERSION || c->route == R_METRICS;
        if (s->api_key && !open) {
            const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
            if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !key_matches(h + 7, s->api_key))
                return fail(c, 401, "authentication_error", "invalid_api_key", NULL,
                            "missing or invalid API key: send 'Authorization: Bearer <key>'");
        }
        if (c->route == R_NONE)
            return fail(c, 404, "invalid_request_error", "not_found", NULL, "no such endpoint");
        if (c->rid_bad)
            return fail(c, 400, "invalid_request_error", "invalid_request_id", NULL,
                        "X-Request-Id must be 1 to " FE_RID_STR
                        " printable ASCII characters without spaces");
        bool method_ok = want_post ? strcmp(method, "POST") == 0
                                   : strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
        if (!method_ok)
            return fail(c, 405, "invalid_request_error", "method_not_allowed", NULL,
                        want_post ? "use POST" : "use GET");
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->max_body) {
            char msg[128];
            snprintf(msg, sizeof msg, "the request body is over the limit of %zu bytes",
                     s->max_body);
            return fail(c, 413, "invalid_request_error", "request_too_large", NULL, msg);
        }
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        if (!c->too_large && c->body.len + *upload_size > s->max_body) {
            c->too_large = true;
            lt_buf_free(&c->body);
        }
        if (!c->too_large && lt_buf_put(&c->body, upload, *upload_size)) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->status) return MHD_YES; /* already answered (a resumed call that was failed) */
    if (c->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is over the limit of %zu bytes", s->max_body);
        return fail(c, 413, "invalid_request_error", "request_too_large", NULL, msg);
    }
    switch (c->route) {
    case R_COMPLETIONS:
    case R_CHAT: return generation(c);
    case R_MODELS: return models(c);
    case R_MODEL: return model(c, url + 11);
    case R_HEALTH: return respond(c, lantern_alive(s->l) ? 200 : 503, NULL, "", 0);
    case R_VERSION: {
        char v[64];
        int n = snprintf(v, sizeof v, "{\"version\":\"%s\"}", lt_version());
        return respond(c, 200, "application/json", v, (size_t)n);
    }
    case R_METRICS: return metrics(c);
    case R_TOKENIZE: return tokenize(c);
    case R_DETOKENIZE: return detokenize(c);
    default: return MHD_NO;
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)conn;
    call_t *c = *con_cls;
    if (!c) return;
    *con_cls = NULL;
    pthread_mutex_lock(&c->s->mu);
    c->closed = true;
    pthread_mutex_unlock(&c->s->mu);
    if (c->n_live > 0 || atomic_load(&c->gone) ||
        (c->submitted && c->req.stream && !c->tail_sent)) {
        atomic_fetch_add(&c->s->n_disconnects, 1);
        if (c->s->log_requests)
            LT_INFO("req=%s: the client went away (%s): aborted in the engine", c->rid,
                    toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT      ? "client abort"
                    : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "server shutdown"
                                                                    : "connection error");
    }
    call_release(c); /* no notify after this: the connection may now go */
    call_unref(c);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    LT_WARN("http: %s", line);
}

/* ---- the hang-up watchdog ---- */

/* A suspended connection is not watched by MHD, so a client that gives up while its request
 * waits (queued, or a non-streaming request still generating) would go unnoticed until the
 * response is written. The main thread polls those sockets for a hang-up and aborts their engine
 * requests; the ABORT outputs then resume the connection, which MHD closes. Only lantern_abort
 * is called here: the call itself belongs to its MHD thread. */
static void watch_hangups(srv_t *s) {
    pthread_mutex_lock(&s->mu);
    for (call_t *c = s->calls; c; c = c->next) {
        if (c->closed || !atomic_load(&c->suspended) || atomic_load(&c->gone)) continue;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci) continue;
        struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
        if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR))) continue;
        atomic_store(&c->gone, true);
        for (int i = 0; i < c->n_ch; i++) lantern_abort(s->l, c->ch[i].id);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- state dump and stats line ---- */

static void dump_state(srv_t *s) {
    uint64_t now = lt_now_ns();
    pthread_mutex_lock(&s->mu);
    LT_INFO("state dump: http server on %s:%d, %d open requests", s->host, s->port, s->n_calls);
    for (call_t *c = s->calls; c; c = c->next) {
        int toks = 0;
        for (int i = 0; i < c->n_ch; i++) toks += c->ch[i].n_tokens;
        LT_INFO("state dump: req=%s traceparent=%s: %s, age %.1f s, %d choice(s), %d still "
                "generating, %d tokens so far%s",
                c->rid, c->traceparent[0] ? c->traceparent : "-",
                c->route == R_CHAT          ? "chat"
                : c->route == R_COMPLETIONS ? "completion"
                                            : "other",
                (double)(now - c->t0_ns) / 1e9, c->n_ch, c->n_live, toks,
                atomic_load(&c->suspended) ? ", waiting for the engine" : "");
    }
    pthread_mutex_unlock(&s->mu);
    lantern_dump(s->l);
}

static void stats_line(srv_t *s, double dt, unsigned long long *last_p,
                       unsigned long long *last_g) {
    lantern_stats_t st;
    lantern_stats(s->l, &st);
    unsigned long long p = atomic_load(&s->n_prompt_tokens), g = atomic_load(&s->n_gen_tokens);
    if (p == *last_p && g == *last_g && st.running == 0 && st.waiting == 0) return; /* idle */
    LT_INFO("stats: prompt throughput %.1f tokens/s, generation throughput %.1f tokens/s, running "
            "%d, waiting %d, KV cache usage %.1f%%, prefix cache hit rate %.1f%%, %d open HTTP "
            "requests",
            (double)(p - *last_p) / dt, (double)(g - *last_g) / dt, st.running, st.waiting,
            st.kv_usage * 100.0,
            st.prefix_queries ? 100.0 * (double)st.prefix_hits / (double)st.prefix_queries : 0.0,
            s->n_calls);
    *last_p = p;
    *last_g = g;
}

/* ---- command line ---- */

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: lantern serve [MODEL] [options]\n"
        "\n"
        "Serves MODEL (a GGUF file or a Hugging Face directory; default: SmolLM2-135M-Instruct)\n"
        "over an OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions (streaming\n"
        "with SSE), /v1/models, /tokenize, /detokenize, /health, /version, /metrics.\n"
        "\n"
        "server options (vLLM's names):\n"
        "  --host HOST                    address to listen on (127.0.0.1; use 0.0.0.0 or ::\n"
        "                                 to listen on all interfaces)\n"
        "  --port PORT                    port (8000; 0 picks a free one)\n"
        "  --served-model-name NAME       the name clients use as 'model' (default: the file\n"
        "                                 or directory name)\n"
        "  --api-key KEY                  require 'Authorization: Bearer KEY' on every path but\n"
        "                                 /health, /metrics, /version (also LANTERN_API_KEY)\n"
        "  --max-request-body BYTES       largest request body, K/M/G suffixes (16M)\n"
        "  --disable-log-requests         no log line per request\n"
        "  --disable-log-stats            no periodic stats line\n"
        "  --help                         this text\n"
        "\n");
    ipc_engine_args_help(f);
}

static void default_name(const char *model, char *out, size_t cap) {
    const char *b = strrchr(model, '/');
    b = b && b[1] ? b + 1 : model;
    snprintf(out, cap, "%.255s", b);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = '\0';
    if (n > 5 && strcmp(out + n - 5, ".gguf") == 0) out[n - 5] = '\0';
}

static int bind_addr(const char *host, int port, struct sockaddr_storage *ss, unsigned *flags,
                     char *err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc)
        return lt_errf(err, LT_ERR_INVAL, "cannot resolve host '%s': %s", host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    if (res->ai_family == AF_INET6) *flags |= MHD_USE_DUAL_STACK; /* "::" serves IPv4 too */
    freeaddrinfo(res);
    return LT_OK;
}

/* The command line: the server's own options, then every engine option (ipc/args.h). 0 to go
 * on, else the exit status. */
enum {
    OPT_HOST = 1,
    OPT_PORT,
    OPT_NAME,
    OPT_KEY,
    OPT_BODY,
    OPT_NO_LOG_REQ,
    OPT_NO_LOG_STATS,
    OPT_HELP
};

static int parse_args(srv_t *s, int argc, char **argv, lantern_engine_args_t *a, long long *port) {
    static const struct option own[] = {{"host", required_argument, 0, OPT_HOST},
                                        {"port", required_argument, 0, OPT_PORT},
                                        {"served-model-name", required_argument, 0, OPT_NAME},
                                        {"api-key", required_argument, 0, OPT_KEY},
                                        {"max-request-body", required_argument, 0, OPT_BODY},
                                        {"disable-log-requests", no_argument, 0, OPT_NO_LOG_REQ},
                                        {"disable-log-stats", no_argument, 0, OPT_NO_LOG_STATS},
                                        {"help", no_argument, 0, OPT_HELP}};
    struct option opts[40];
    ipc_engine_opts_table(own, (int)(sizeof own / sizeof own[0]), opts, 40);
    const char *name = NULL, *host = "127.0.0.1", *key = getenv("LANTERN_API_KEY");
    long long max_body = 16ll << 20;
    char err[LT_ERR_LEN];
    *port = 8000;
    s->log_requests = s->log_stats = true;
    ipc_engine_args_defaults(a);
    int o, li = 0;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, &li)) != -1) {
        int rc = ipc_engine_args_set(a, o, optarg, err);
        bool ok = true;
        if (rc < 0) {
            fprintf(stderr, "lantern serve: %s\n", err);
            return 2;
        }
        if (rc == 0) continue;
        switch (o) {
        case OPT_HOST: host = optarg; break;
        case OPT_PORT: ok = lt_parse_long(optarg, 0, 65535, port); break;
        case OPT_NAME: name = optarg; break;
        case OPT_KEY: key = optarg; break;
        case OPT_BODY: ok = lt_parse_size(optarg, &max_body); break;
        case OPT_NO_LOG_REQ: s->log_requests = false; break;
        case OPT_NO_LOG_STATS: s->log_stats = false; break;
        case OPT_HELP: usage(stdout); return -1;
        default: usage(stderr); return 2;
        }
        if (!ok) {
            fprintf(stderr, "lantern serve: invalid value '%s' for --%s\n", optarg, opts[li].name);
            return 2;
        }
    }
    if (optind < argc && !a->model) a->model = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "lantern serve: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (key && !*key) key = NULL;
    if (a->model)
        snprintf(s->model, sizeof s->model, "%s", a->model);
    else
        lt_default_model_path(s->model, sizeof s->model);
    a->model = s->model;
    if (name)
        snprintf(s->served_name, sizeof s->served_name, "%s", name);
    else
        default_name(s->model, s->served_name, sizeof s->served_name);
    snprintf(s->host, sizeof s->host, "%s", host);
    s->max_body = (size_t)max_body;
    s->api_key = key ? strdup(key) : NULL;
    return 0;
}

int fe_cmd_serve(int argc, char **argv) {
    srv_t *s = &g_srv;
    memset(s, 0, sizeof *s);
    lantern_engine_args_t a;
    long long port;
    int st = parse_args(s, argc, argv, &a, &port);
    if (st) return st < 0 ? 0 : st;
    const char *host = s->host;
    lt_log_set_role("frontend", -1);
    s->started = time(NULL);
    pthread_mutex_init(&s->mu, NULL);

    int status = 1;
    char err[LT_ERR_LEN];
    char *src = NULL;
    lt_signals_install();
    if (fe_tokenizer_load(s->model, &s->tok, err)) goto fail;
    if (fe_chat_template_source(s->model, &src, err) == 0) {
        if (fe_chat_template_compile(src, strlen(src), &s->tpl, err))
            LT_WARN("the model's chat template cannot be used (%s): /v1/chat/completions will "
                    "refuse requests",
                    err);
    } else {
        LT_WARN("%s: /v1/chat/completions will refuse requests", err);
    }
    free(src);
    struct sockaddr_storage ss;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (bind_addr(host, (int)port, &ss, &flags, err)) goto fail;
    LT_INFO("starting the engine for %s (tensor parallel size %d)", s->model,
            a.tensor_parallel_size);
    if (lantern_create(&a, &s->l, err)) goto fail;
    lantern_model_info(s->l, &s->info);
    lt_model_config_defaults(&s->gen);
    if (lt_is_dir(s->model) && lt_model_config_from_hf_dir(s->model, &s->gen, err))
        LT_WARN("generation config: %s (OpenAI's defaults apply)", err);
    s->oai = (fe_oai_ctx_t){.tok = s->tok,
                            .tpl = s->tpl,
                            .served_name = s->served_name,
                            .max_model_len = s->info.max_model_len,
                            .vocab_size = s->info.vocab_size,
                            .gen = &s->gen};
    s->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, /* first: it logs the rest */
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)4, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)1000, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->d) {
        lt_errf(err, LT_ERR_IO, "cannot listen on %s:%lld: %s", host, port, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : (int)port;
    bool v6 = strchr(host, ':') != NULL; /* an IPv6 literal goes in brackets in a URL */
    LT_INFO("serving %s as '%s' (context %d tokens, %d KV blocks of %d): listening on "
            "http://%s%s%s:%d",
            s->model, s->served_name, s->info.max_model_len, s->info.num_kv_blocks,
            s->info.block_size, v6 ? "[" : "", host, v6 ? "]" : "", s->port);

    uint64_t last_stats = lt_now_ns(), dead_since = 0;
    unsigned long long last_p = 0, last_g = 0;
    status = 0;
    while (!lt_sig_shutdown) {
        usleep(100 * 1000);
        if (lt_sig_dump) {
            lt_sig_dump = 0;
            dump_state(s);
        }
        watch_hangups(s);
        uint64_t now = lt_now_ns();
        if (!lantern_alive(s->l)) {
            /* keep answering 503 briefly so health checks see it, then exit non-zero */
            if (!dead_since) {
                dead_since = now;
                LT_ERROR("the engine died: answering 503 and exiting");
            }
            if (now - dead_since > 2000000000ull) {
                status = 1;
                break;
            }
        }
        if (s->log_stats && now - last_stats >= 10000000000ull) {
            stats_line(s, (double)(now - last_stats) / 1e9, &last_p, &last_g);
            last_stats = now;
        }
    }
    LT_INFO("shutting down: %d open requests", s->n_calls);
    /* stop accepting, let open requests end (aborting what still generates), then stop */
    MHD_socket lsock = MHD_quiesce_daemon(s->d);
    if (lsock != MHD_INVALID_SOCKET) close(lsock);
    pthread_mutex_lock(&s->mu);
    for (call_t *c = s->calls; c; c = c->next)
        for (int i = 0; i < c->n_ch; i++)
            if (c->ch[i].live) lantern_abort(s->l, c->ch[i].id);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < 50 && s->n_calls > 0; i++) usleep(100 * 1000);
    MHD_stop_daemon(s->d);
    s->d = NULL;
    goto done;
fail:
    fprintf(stderr, "lantern serve: %s\n", err);
done:
    if (s->d) MHD_stop_daemon(s->d);
    lantern_destroy(&s->l);
    fe_chat_template_destroy(&s->tpl);
    fe_tokenizer_destroy(&s->tok);
    free(s->api_key);
    return status;
}
