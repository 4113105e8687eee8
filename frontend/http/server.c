/*
 * server.c — the libmicrohttpd side of `lantern serve`: the access handler (route, authorize,
 * size-check, read the body, dispatch), the completion hook that releases a finished call, the
 * responses every handler sends (with the headers every answer carries) and errors in OpenAI's
 * shape, and the request's identity from its headers (X-Request-Id, traceparent, tracestate).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "http.h"
#include "lt.h"

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
void fe_http_call_identity(call_t *c) {
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
    if (tp && tel_ctx_parse(tp, strlen(tp), &c->client_ctx)) {
        tel_ctx_format(&c->client_ctx, c->traceparent); /* a later version: as version 00 */
        if (ts && ipc_tracestate_valid(ts, strlen(ts)))
            snprintf(c->tracestate, sizeof c->tracestate, "%s", ts);
    } else if (tp) {
        atomic_fetch_add(&c->s->n_bad_traceparent, 1); /* ignored, never trusted or echoed */
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
enum MHD_Result fe_http_queue(call_t *c, int status, const char *type, struct MHD_Response *r) {
    if (!r) return MHD_NO;
    if (type) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "X-Request-Id", c->rid);
    /* where the client finds its trace: our server span, or its own context with tracing off */
    char tp[TEL_TRACEPARENT_LEN + 1];
    if (c->http_span) {
        tel_ctx_t hc = tel_span_ctx(c->http_span);
        tel_ctx_format(&hc, tp);
        MHD_add_response_header(r, "traceparent", tp);
    } else if (c->client_ctx.valid) {
        tel_ctx_format(&c->client_ctx, tp);
        MHD_add_response_header(r, "traceparent", tp);
    }
    if (c->close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (c->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", c->retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    c->status = status;
    enum MHD_Result ok = MHD_queue_response(c->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

enum MHD_Result fe_http_respond(call_t *c, int status, const char *type, const char *body,
                                size_t len) {
    return fe_http_queue(c, status, type,
                         MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY));
}

/* A JSON object body: json_begin opens it, respond_json closes, sends and frees it. */
void fe_http_json_begin(fe_jw_t *w, lt_buf_t *b) {
    memset(b, 0, sizeof *b);
    fe_jw_init(w, b);
    fe_jw_obj(w);
}

enum MHD_Result fe_http_respond_json(call_t *c, fe_jw_t *w) {
    fe_jw_end(w, '}');
    enum MHD_Result ok =
        w->err ? MHD_NO : fe_http_respond(c, 200, "application/json", w->b->data, w->b->len);
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

enum MHD_Result fe_http_respond_error(call_t *c, const fe_oai_error_t *e) {
    lt_buf_t b = {0};
    fe_oai_error_json(e, &b);
    count_error(c->s, e->status);
    if (c->s->log_requests) LT_INFO("req=%s: %d %s", c->rid, e->status, e->message);
    enum MHD_Result ok =
        fe_http_respond(c, e->status, "application/json", b.data ? b.data : "{}", b.len);
    lt_buf_free(&b);
    return ok;
}

enum MHD_Result fe_http_fail(call_t *c, int status, const char *type, const char *code,
                             const char *param, const char *msg) {
    fe_oai_error_t e;
    fe_oai_fail(&e, status, type, code, param, "%s", msg);
    return fe_http_respond_error(c, &e);
}

enum MHD_Result fe_http_engine_gone(call_t *c) {
    return fe_http_fail(c, 503, "service_unavailable_error", "engine_unavailable", NULL,
                        "the engine is not running");
}

/* ---- the request's framing ---- */

/* RFC 9112 §6: a request's body length must be unambiguous, or what one reader takes for the body
 * another takes for a second request (request smuggling). libmicrohttpd lets Transfer-Encoding
 * win over Content-Length, takes the first of several Content-Lengths, reads a body of any other
 * transfer coding until the connection closes, and keeps whitespace before a colon as part of
 * the field's name; so before any body is read we refuse Content-Length with Transfer-Encoding,
 * more than one Content-Length, Transfer-Encoding in HTTP/1.0, any transfer coding but a single
 * "chunked", and whitespace between a field's name and its colon. */
typedef struct framing {
    int n_cl, n_te;
    bool bad_name; /* whitespace before the colon: a name others may trim and we would not */
    char te[256];  /* every Transfer-Encoding field, joined as one list */
    size_t te_len;
    bool te_long;
} framing_t;

static enum MHD_Result framing_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value) {
    (void)kind;
    framing_t *f = cls;
    size_t kn = strlen(key);
    if (kn && (key[kn - 1] == ' ' || key[kn - 1] == '\t')) f->bad_name = true;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) f->n_cl++;
    if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) != 0) return MHD_YES;
    size_t n = value ? strlen(value) : 0;
    if (f->te_len + n + 2 >= sizeof f->te) {
        f->te_long = true;
        return MHD_YES;
    }
    if (f->n_te++) f->te[f->te_len++] = ',';
    memcpy(f->te + f->te_len, value ? value : "", n);
    f->te_len += n;
    f->te[f->te_len] = '\0';
    return MHD_YES;
}

/* The transfer codings, in order: 0 when they end with one chunked and hold nothing else; else
 * the status (400: cannot be framed; 501: a coding we do not implement), msg saying why. */
static int te_check(const char *te, char *msg, size_t cap) {
    char codings[256];
    snprintf(codings, sizeof codings, "%s", te);
    int n = 0, n_chunked = 0;
    const char *last = NULL, *other = NULL;
    char *save = NULL;
    for (char *tok = strtok_r(codings, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t') tok++;
        size_t len = strcspn(tok, " \t;"); /* the coding's name, without parameters */
        if (!len) continue;                /* empty list elements are allowed */
        tok[len] = '\0';
        n++;
        last = tok;
        if (strcasecmp(tok, "chunked") == 0)
            n_chunked++;
        else if (!other)
            other = tok;
    }
    if (!n || !last || strcasecmp(last, "chunked") != 0 || n_chunked > 1) {
        snprintf(msg, cap,
                 "Transfer-Encoding '%.100s' does not end with one 'chunked': the body's "
                 "length cannot be determined",
                 te);
        return 400;
    }
    if (other) {
        snprintf(msg, cap, "the transfer coding '%.60s' is not supported (only chunked)", other);
        return 501;
    }
    return 0;
}

static int framing_check(struct MHD_Connection *conn, const char *version, char *msg, size_t cap) {
    framing_t f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, framing_field, &f);
    if (f.bad_name) { /* RFC 9112 §5.1: a server MUST reject it */
        snprintf(msg, cap, "whitespace between a header field's name and its colon");
        return 400;
    }
    if (f.n_cl > 1) {
        snprintf(msg, cap, "more than one Content-Length header");
        return 400;
    }
    if (!f.n_te) return 0;
    if (f.n_cl) {
        snprintf(msg, cap, "Content-Length and Transfer-Encoding together");
        return 400;
    }
    if (version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0) {
        snprintf(msg, cap, "Transfer-Encoding in an HTTP/1.0 request");
        return 400;
    }
    if (f.te_long) {
        snprintf(msg, cap, "Transfer-Encoding is too long");
        return 400;
    }
    int st = te_check(f.te, msg, cap);
    if (st) return st;
    /* one chunked, but spelt so that libmicrohttpd would not see it (it compares the whole value
     * with "chunked"): it would read the body until the connection closes */
    if (f.n_te != 1 || strcasecmp(f.te, "chunked") != 0) {
        snprintf(msg, cap, "Transfer-Encoding must be exactly 'chunked'");
        return 400;
    }
    return 0;
}

/* Before anything else about a new request: connection management's verdict and the framing.
 * False to go on; true with *ret, what the access handler returns (the request answered, or the
 * connection dropped). An answer here comes before the body is read, so MHD closes the
 * connection after it and the body's bytes are never read as a request. */
static bool request_refused(call_t *c, const char *version, enum MHD_Result *ret) {
    srv_t *s = c->s;
    fe_conn_verdict_t v = fe_http_conns_request(s, c->conn);
    if (v == FE_CONN_CLOSED) {
        *ret = MHD_NO;
        return true;
    }
    c->close = true; /* for every answer below */
    if (v != FE_CONN_OK) {
        atomic_fetch_add(v == FE_CONN_FULL ? &s->n_conn_full : &s->n_conn_per_ip, 1);
        c->retry_after = 1;
        *ret = v == FE_CONN_FULL
                   ? fe_http_fail(c, 503, "service_unavailable_error", "server_full", NULL,
                                  "the server has no free connection: retry shortly")
                   : fe_http_fail(c, 429, "rate_limit_error", "too_many_connections", NULL,
                                  "too many connections from your address: retry shortly");
        return true;
    }
    char msg[200];
    int st = framing_check(c->conn, version, msg, sizeof msg);
    if (st) {
        *ret = fe_http_fail(c, st, "invalid_request_error",
                            st == 501 ? "unsupported_transfer_coding" : "bad_framing", NULL, msg);
        return true;
    }
    c->close = false;
    return false;
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

enum MHD_Result fe_http_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls) {
    srv_t *s = cls;
    call_t *c = *con_cls;
    if (!c) { /* headers are in: route, authorize, size-check before reading any body */
        if (!(c = fe_http_call_new(s, conn))) return MHD_NO;
        *con_cls = c;
        bool want_post = false;
        c->route = route_of(url, &want_post);
        /* monitoring paths (scraped every few seconds) get no span */
        if (c->route != R_HEALTH && c->route != R_METRICS && c->route != R_VERSION)
            fe_http_span_begin(c, method, url);
        enum MHD_Result refused;
        if (request_refused(c, version, &refused)) return refused;
        /* the key guards every path but the three that monitoring must reach, unknown ones too
         * (so a client without the key learns nothing about what exists) */
        bool open = c->route == R_HEALTH || c->route == R_VERSION || c->route == R_METRICS;
        if (s->api_key && !open) {
            const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
            if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !key_matches(h + 7, s->api_key))
                return fe_http_fail(
                    c, 401, "authentication_error", "invalid_api_key", NULL,
                    "missing or invalid API key: send 'Authorization: Bearer <key>'");
        }
        if (c->route == R_NONE)
            return fe_http_fail(c, 404, "invalid_request_error", "not_found", NULL,
                                "no such endpoint");
        if (c->rid_bad)
            return fe_http_fail(c, 400, "invalid_request_error", "invalid_request_id", NULL,
                                "X-Request-Id must be 1 to " FE_RID_STR
                                " printable ASCII characters without spaces");
        bool method_ok = want_post ? strcmp(method, "POST") == 0
                                   : strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
        if (!method_ok)
            return fe_http_fail(c, 405, "invalid_request_error", "method_not_allowed", NULL,
                                want_post ? "use POST" : "use GET");
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->max_body) {
            char msg[128];
            snprintf(msg, sizeof msg, "the request body is over the limit of %zu bytes",
                     s->max_body);
            return fe_http_fail(c, 413, "invalid_request_error", "request_too_large", NULL, msg);
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
    if (!c->body_done) {           /* the whole request is in: the response's timeout from now */
        c->body_done = true;
        fe_http_conns_body_done(s, conn);
    }
    if (c->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is over the limit of %zu bytes", s->max_body);
        return fe_http_fail(c, 413, "invalid_request_error", "request_too_large", NULL, msg);
    }
    switch (c->route) {
    case R_COMPLETIONS:
    case R_CHAT: return fe_http_generation(c);
    case R_MODELS: return fe_http_models(c);
    case R_MODEL: return fe_http_model(c, url + 11);
    case R_HEALTH: /* 503 once the engine died, or while its watchdog says it is stalled */
        return fe_http_respond(c, lantern_alive(s->l) && !fe_http_engine_stalled(s) ? 200 : 503,
                               NULL, "", 0);
    case R_VERSION: {
        char v[64];
        int n = snprintf(v, sizeof v, "{\"version\":\"%s\"}", lt_version());
        return fe_http_respond(c, 200, "application/json", v, (size_t)n);
    }
    case R_METRICS: return fe_http_metrics(c);
    case R_TOKENIZE: return fe_http_tokenize(c);
    case R_DETOKENIZE: return fe_http_detokenize(c);
    default: return MHD_NO;
    }
}

void fe_http_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                          enum MHD_RequestTerminationCode toe) {
    fe_http_conns_completed(cls, conn);
    call_t *c = *con_cls;
    if (!c) return;
    *con_cls = NULL;
    pthread_mutex_lock(&c->s->mu);
    c->closed = true;
    pthread_mutex_unlock(&c->s->mu);
    bool gone =
        c->n_live > 0 || atomic_load(&c->gone) || (c->submitted && c->req.stream && !c->tail_sent);
    if (gone) {
        atomic_fetch_add(&c->s->n_disconnects, 1);
        if (c->s->log_requests)
            LT_INFO("req=%s: the client went away (%s): aborted in the engine", c->rid,
                    toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT      ? "client abort"
                    : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "server shutdown"
                                                                    : "connection error");
    }
    fe_http_call_release(c); /* no notify after this: the connection may now go */
    fe_http_span_end(c, gone);
    fe_http_call_unref(c);
}

/* libmicrohttpd's messages, at most 10 a second: a flood of bad clients (each one closed with an
 * incomplete request, say) must not flood the log as well. */
void fe_http_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    static atomic_ullong window;
    static atomic_int n_window, n_dropped;
    unsigned long long sec = lt_now_ns() / 1000000000ull, w = atomic_load(&window);
    if (w != sec && atomic_compare_exchange_strong(&window, &w, sec)) {
        atomic_store(&n_window, 0);
        int dropped = atomic_exchange(&n_dropped, 0);
        if (dropped) LT_WARN("http: %d more libmicrohttpd messages not shown", dropped);
    }
    if (atomic_fetch_add(&n_window, 1) >= 10) {
        atomic_fetch_add(&n_dropped, 1);
        return;
    }
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    LT_WARN("http: %s", line);
}
