/*
 * http.h — the insides of `lantern serve` (frontend/http/), shared by its files and by nothing
 * else: the server's state, one call per HTTP request with its choices, and the functions one
 * file of the module offers another.
 *
 *   serve.c      the daemon's main: command line, start-up, the main thread's loop (signals,
 *                health, hang-up watchdog, stats line, dumps), shutdown
 *   server.c     libmicrohttpd glue: the access handler, routing, authorization, responses and
 *                errors, the request's identity from its headers
 *   call.c       a call's lifecycle (suspend/resume, references, release) and the generation it
 *                drives: submitting choices, reading outputs, detokenizing, stop strings, SSE
 *   render.c     OpenAI response bodies: full responses, stream chunks, logprobs, usage, timings
 *   endpoints.c  the small endpoints: models, metrics, tokenize, detokenize
 *   conns.c      connection management: header and idle deadlines, connection caps, eviction
 *
 * Threads: see serve.c's comment (MHD's event-loop threads run the handlers; none waits on the
 * engine). Not a public header.
 */
#ifndef FE_HTTP_H
#define FE_HTTP_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include "chat_template.h"
#include "lantern.h"
#include "model_config.h"
#include "oai.h"
#include "stop.h"
#include "tokenizer.h"
#include "metrics.h"
#include "trace.h"

#define TOKENS_PER_READ 64
/* A client's X-Request-Id: printable ASCII without spaces, short enough that "<id>-<choice>"
 * still fits an envelope's request id. */
#define FE_RID_MAX (IPC_REQUEST_ID_MAX - 8)
#define FE_RID_STR "120"
_Static_assert(FE_RID_MAX == 120, "FE_RID_STR spells FE_RID_MAX");

#define FE_SPANS_PENDING 4

/* Connections let in past a full server (or an address at its cap) only to be answered 503 (429)
 * at once; beyond these the accept is refused. */
#define FE_CONN_OVERFLOW 64
/* The time one of those gets to send its request headers. */
#define FE_CONN_REFUSE_TIMEOUT_S 2u

/* ---- server state ---- */

typedef struct call call_t;
typedef struct fe_conn fe_conn_t; /* conns.c: one open connection */

/* What connection management says of a connection whose request headers are in. */
typedef enum fe_conn_verdict {
    FE_CONN_OK,     /* serve it */
    FE_CONN_FULL,   /* let in past a full server: answer 503 */
    FE_CONN_PER_IP, /* let in past its address's cap: answer 429 */
    FE_CONN_CLOSED, /* we closed it (evicted, or past its deadline): drop it */
} fe_conn_verdict_t;

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
    size_t max_undelivered_req, max_undelivered; /* bytes; lantern_set_output_limits */
    bool log_requests, log_stats;
    time_t started;
    pthread_mutex_t mu; /* guards calls */
    call_t *calls;      /* live calls, for dumps and shutdown */
    int n_calls;
    /* counters (frontend view) */
    atomic_ullong n_requests, n_disconnects;
    atomic_ullong n_errors[6];       /* 400 401 404 413 503 other */
    atomic_ullong n_bad_traceparent; /* requests whose traceparent header was malformed */
    uint64_t trace_slow_ns;          /* --trace-slow-threshold-ms, ns (0: off) */
    /* what only the frontend observes (metrics.c); the rest is in the tree's metrics region */
    const char *metrics_prefix; /* "lantern", or "vllm" (--metrics-prefix) */
    tel_hist_t h_e2e, h_n, h_tokenize, h_detokenize;
    /* connection management (conns.c) */
    unsigned header_timeout_s, idle_timeout_s; /* --http-header-timeout, --http-idle-timeout */
    int max_conns, max_conns_per_ip;           /* --http-max-connections, ...-per-ip (0: no cap) */
    pthread_mutex_t conn_mu;                   /* guards conns and the two counts */
    fe_conn_t *conns;                          /* every open connection, newest first */
    int n_conns, n_conns_over;        /* open ones we did not close: served, to be refused */
    atomic_ullong n_conn_evicted;     /* closed without a request to make room */
    atomic_ullong n_conn_timed_out;   /* closed: request headers not in by the deadline */
    atomic_ullong n_conn_idle_closed; /* keep-alive connections closed after the idle timeout */
    atomic_ullong n_conn_refused;     /* accepts refused: full, and no room left to answer */
    atomic_ullong n_conn_full;        /* answered 503: the server full of requests */
    atomic_ullong n_conn_per_ip;      /* answered 429: the address at its cap */
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
    tel_ctx_t client_ctx;     /* the client's traceparent, when valid */
    char traceparent[IPC_TRACEPARENT_LEN + 1]; /* what the engine gets: llm_request's context,
                                                  or the client's with tracing off; "" if none */
    char tracestate[IPC_TRACESTATE_MAX + 1];
    /* spans (spans.c): NULL with tracing off */
    char method[16];
    uint64_t t0_unix_ns, t_first_chunk_ns;
    uint64_t detok_ns; /* time spent detokenizing its tokens */
    tel_span_t *http_span, *req_span, *stream_span;
    tel_span_t *pending[FE_SPANS_PENDING]; /* ended children, submitted with llm_request */
    int n_pending;
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
    lantern_group_t group; /* its choices, for the limits on output waiting for the client */
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
    bool close;       /* the response says Connection: close (and MHD closes after it) */
    int retry_after;  /* seconds, for a Retry-After header; 0: none */
    int status;
    call_t *prev, *next; /* srv->calls */
};

/* What a response reports about its request (or one choice): token counts and the engine's
 * phase times. */
typedef struct summary {
    int prompt, cached, completion;
    double queue_s, prefill_s, decode_s;
} summary_t;

/* ---- spans.c: the spans of one HTTP request ---- */

/* The HTTP server span (when the headers are in and the call routed). */
void fe_http_span_begin(call_t *c, const char *method, const char *url);
/* llm_request, before the body is parsed; its context becomes what the engine receives. */
void fe_http_span_request(call_t *c);
/* chat_template and tokenize, from the parse's recorded instants. */
void fe_http_span_parsed(call_t *c);
/* stream, when a streaming response starts. */
void fe_http_span_stream(call_t *c);
/* Ends every span of the call (tail keeping: errors, aborts, slow requests are kept). */
void fe_http_span_end(call_t *c, bool client_gone);

/* ---- server.c: libmicrohttpd glue: access handler, routing, authorization, responses ---- */

void fe_http_call_identity(call_t *c);
enum MHD_Result fe_http_queue(call_t *c, int status, const char *type, struct MHD_Response *r);
enum MHD_Result fe_http_respond(call_t *c, int status, const char *type, const char *body,
                                size_t len);
void fe_http_json_begin(fe_jw_t *w, lt_buf_t *b);
enum MHD_Result fe_http_respond_json(call_t *c, fe_jw_t *w);
enum MHD_Result fe_http_respond_error(call_t *c, const fe_oai_error_t *e);
enum MHD_Result fe_http_fail(call_t *c, int status, const char *type, const char *code,
                             const char *param, const char *msg);
enum MHD_Result fe_http_engine_gone(call_t *c);
enum MHD_Result fe_http_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls);
void fe_http_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                          enum MHD_RequestTerminationCode toe);
void fe_http_mhd_log(void *cls, const char *fmt, va_list ap);

/* ---- call.c: calls and the generations they drive ---- */

void fe_http_call_unref(call_t *c);
void fe_http_call_release(call_t *c);
enum MHD_Result fe_http_generation(call_t *c);
call_t *fe_http_call_new(srv_t *s, struct MHD_Connection *conn);

/* ---- conns.c: connection management (see its comment) ---- */

/* MHD's accept policy callback and connection notification callback (cls: the srv_t). */
enum MHD_Result fe_http_conns_accept(void *cls, const struct sockaddr *sa, socklen_t len);
void fe_http_conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code);
/* From the access handler's first call for a request (its headers are in): what to do. */
fe_conn_verdict_t fe_http_conns_request(srv_t *s, struct MHD_Connection *conn);
/* From the access handler once the request's body is in (before it is answered). */
void fe_http_conns_body_done(srv_t *s, struct MHD_Connection *conn);
/* From the request-completed callback: the connection waits for its next request. */
void fe_http_conns_completed(srv_t *s, struct MHD_Connection *conn);
/* Main thread, a few times a second: closes connections past their deadline. */
void fe_http_conns_tick(srv_t *s);
/* Open connections by phase (for dumps and logs). */
void fe_http_conns_count(srv_t *s, int *n_headers, int *n_request, int *n_idle, int *n_over);

/* ---- render.c: OpenAI response bodies and stream chunks ---- */

double fe_http_tokens_per_s(int n_tokens, double decode_s);
void fe_http_call_summary(const call_t *c, summary_t *t);
/* "stop", "length", "abort", "error"; NULL while a choice runs. */
const char *fe_http_finish_str(lantern_finish_t f);
void fe_http_build_full(call_t *c, const summary_t *t, lt_buf_t *b);
void fe_http_build_chunks(call_t *c);
void fe_http_log_done(call_t *c);

/* ---- endpoints.c: the small endpoints ---- */

enum MHD_Result fe_http_models(call_t *c);
enum MHD_Result fe_http_model(call_t *c, const char *id);
enum MHD_Result fe_http_metrics(call_t *c);
/* True once the engine's step watchdog fired (/health answers 503). */
bool fe_http_engine_stalled(const srv_t *s);
enum MHD_Result fe_http_tokenize(call_t *c);
enum MHD_Result fe_http_detokenize(call_t *c);

#endif
