/*
 * otlp.c — the OTLP exporter's transports (otlp.h): one batch of spans per call, sent over
 * libcurl as gRPC (HTTP/2) or http/protobuf, retried as the OTLP specification says, never past
 * the export's deadline.
 *
 * gRPC without a gRPC library: a unary call is one HTTP/2 POST to
 * /opentelemetry.proto.collector.trace.v1.TraceService/Export with content-type
 * application/grpc and te: trailers, whose body is the message behind a 5-byte frame header
 * (a compressed flag, then the length, big-endian); the answer is a framed
 * ExportTraceServiceResponse and the call's status comes as grpc-status / grpc-message in the
 * trailers (or in the headers of a trailers-only answer), which libcurl hands to the header
 * callback like any header. http:// endpoints speak cleartext HTTP/2 with prior knowledge
 * (h2c, as gRPC servers expect), https:// ones negotiate h2 with ALPN.
 *
 * Each attempt runs on a private curl multi handle in 50 ms slices, so that the deadline, which
 * shutdown may bring forward from another thread, cuts a black-holed request short; the multi
 * handle keeps the connection between exports.
 */
#define _GNU_SOURCE
#include "otlp.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "curl_lazy.h"
#include "lt.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse pb_response_t;

#define NS_PER_MS     1000000ull
#define SLICE_MS      50                  /* how often a running attempt re-reads the deadline */
#define BODY_MAX      (1u << 20)          /* bytes of a response we keep */
#define BACKOFF_FIRST (250 * NS_PER_MS)   /* first retry after 125..250 ms */
#define BACKOFF_MAX   (5000 * NS_PER_MS)  /* later ones at most 5 s apart */
#define LOG_EVERY_NS  (10000 * NS_PER_MS) /* failed exports: one warning per 10 s */

/* gRPC status codes (grpc/doc/statuscodes.md) */
enum {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
};

struct tel_otlp {
    tel_otlp_config_t cfg;
    tel_resource_t res;
    CURLM *multi;
    CURL *easy;
    struct curl_slist *headers;
    char curl_err[CURL_ERROR_SIZE];
    /* the current attempt's answer */
    uint8_t *body;
    size_t body_len, body_cap;
    long retry_after_ms; /* -1: none */
    int grpc_status;     /* -1: none seen */
    char grpc_message[256];
    /* failure logging */
    uint64_t last_log_ns;
    uint64_t unlogged;
    uint64_t rng;
};

/* ---- response callbacks ---- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *user) {
    tel_otlp_t *o = user;
    size_t n = size * nmemb;
    if (o->body_len + n > o->body_cap && o->body_len + n <= BODY_MAX) {
        size_t cap = o->body_cap ? o->body_cap : 4096;
        while (cap < o->body_len + n) cap *= 2;
        uint8_t *b = realloc(o->body, cap);
        if (!b) return n; /* keep what we have: the body only feeds a log line */
        o->body = b, o->body_cap = cap;
    }
    if (o->body_len + n <= o->body_cap) memcpy(o->body + o->body_len, p, n), o->body_len += n;
    return n;
}

/* A gRPC message header value is percent-encoded (gRPC over HTTP/2, "Status-Message"). */
static void grpc_message_decode(char *out, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            char c = (char)strtol(hex, NULL, 16);
            out[o++] = c ? c : '?';
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = 0;
}

/* Header lines of the answer, trailers included: the gRPC status and Retry-After. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *user) {
    tel_otlp_t *o = user;
    size_t n = size * nmemb;
    const char *colon = memchr(p, ':', n);
    if (!colon) return n;
    size_t kn = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t vn = (size_t)(end - v);
    char val[256];
    snprintf(val, sizeof val, "%.*s", (int)(vn < sizeof val ? vn : sizeof val - 1), v);
    if (kn == 11 && !strncasecmp(p, "grpc-status", kn)) {
        long long c;
        o->grpc_status = lt_parse_long(val, 0, 1000, &c) ? (int)c : GRPC_UNKNOWN;
    } else if (kn == 12 && !strncasecmp(p, "grpc-message", kn)) {
        grpc_message_decode(o->grpc_message, sizeof o->grpc_message, v, vn);
    } else if (kn == 11 && !strncasecmp(p, "retry-after", kn)) {
        long long s;
        if (lt_parse_long(val, 0, 86400, &s)) {
            o->retry_after_ms = (long)s * 1000;
        } else { /* an HTTP date */
            time_t t = tel_curl.getdate(val, NULL);
            time_t now = time(NULL);
            if (t != -1) o->retry_after_ms = t > now ? (long)(t - now) * 1000 : 0;
        }
    }
    return n;
}

/* ---- lifecycle ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) {
    curl_init_rc = tel_curl.global_init(CURL_GLOBAL_DEFAULT);
}

static int build_headers(tel_otlp_t *o, char *err) {
    const char *fixed_grpc[] = {"content-type: application/grpc", "te: trailers", "Accept:"};
    const char *fixed_http[] = {"Content-Type: application/x-protobuf", "Accept:", "Expect:"};
    const char **fixed = o->cfg.protocol == TEL_OTLP_GRPC ? fixed_grpc : fixed_http;
    for (int i = 0; i < 3; i++) {
        struct curl_slist *l = tel_curl.slist_append(o->headers, fixed[i]);
        if (!l) return lt_errf(err, LT_ERR_NOMEM, "otlp: out of memory");
        o->headers = l;
    }
    for (int i = 0; i < o->cfg.n_headers; i++) {
        char line[sizeof o->cfg.headers[0].name + sizeof o->cfg.headers[0].value + 4];
        const tel_otlp_header_t *h = &o->cfg.headers[i];
        /* "name;" is curl's way to send a header with an empty value */
        if (h->value[0])
            snprintf(line, sizeof line, "%s: %s", h->name, h->value);
        else
            snprintf(line, sizeof line, "%s;", h->name);
        struct curl_slist *l = tel_curl.slist_append(o->headers, line);
        if (!l) return lt_errf(err, LT_ERR_NOMEM, "otlp: out of memory");
        o->headers = l;
    }
    return 0;
}

/* Only HTTP(S), whatever the URL says (and never a redirect elsewhere: none are followed). */
static CURLcode set_protocols(CURL *e) {
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    return tel_curl.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    return tel_curl.easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}

static int setup_easy(tel_otlp_t *o, char *err) {
    CURL *e = o->easy;
    char ua[64];
    snprintf(ua, sizeof ua, "lantern/%s (OTLP exporter)", lt_version());
    bool grpc = o->cfg.protocol == TEL_OTLP_GRPC;
    long ver = !grpc        ? CURL_HTTP_VERSION_NONE /* curl's default: 1.1, or h2 over TLS */
               : o->cfg.tls ? CURL_HTTP_VERSION_2TLS
                            : CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
    if (tel_curl.easy_setopt(e, CURLOPT_URL, o->cfg.url) || set_protocols(e) ||
        tel_curl.easy_setopt(e, CURLOPT_HTTP_VERSION, ver) ||
        tel_curl.easy_setopt(e, CURLOPT_POST, 1L) ||
        tel_curl.easy_setopt(e, CURLOPT_NOSIGNAL, 1L) ||
        tel_curl.easy_setopt(e, CURLOPT_HTTPHEADER, o->headers) ||
        tel_curl.easy_setopt(e, CURLOPT_USERAGENT, ua) ||
        tel_curl.easy_setopt(e, CURLOPT_ERRORBUFFER, o->curl_err) ||
        tel_curl.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) ||
        tel_curl.easy_setopt(e, CURLOPT_WRITEDATA, o) ||
        tel_curl.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) ||
        tel_curl.easy_setopt(e, CURLOPT_HEADERDATA, o) ||
        (o->cfg.ca_file[0] && tel_curl.easy_setopt(e, CURLOPT_CAINFO, o->cfg.ca_file)) ||
        /* libcurl before 8.0.0 breaks a reused HTTP/2 prior-knowledge connection ("Error in
         * the HTTP2 framing layer", curl/curl#10634, fixed by #10643): h2c gets a fresh
         * connection per request there (one per export: cheap next to the export). */
        (grpc && !o->cfg.tls && tel_curl.version_info(CURLVERSION_NOW)->version_num < 0x080000 &&
         tel_curl.easy_setopt(e, CURLOPT_FORBID_REUSE, 1L)))
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "otlp: this libcurl cannot send %s to %s (HTTP/2 or TLS missing?)",
                       tel_otlp_protocol_name(o->cfg.protocol), o->cfg.url);
    return 0;
}

int tel_otlp_create(tel_otlp_t **out, const tel_otlp_config_t *cfg, const tel_resource_t *res,
                    char *err) {
    *out = NULL;
    if (!cfg->enabled) return lt_errf(err, LT_ERR_INVAL, "otlp: no endpoint configured");
    int lrc = tel_curl_load(err);
    if (lrc) return lrc;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc)
        return lt_errf(err, LT_ERR_IO, "otlp: curl_global_init: %s",
                       tel_curl.easy_strerror(curl_init_rc));
    if (cfg->protocol == TEL_OTLP_GRPC &&
        !(tel_curl.version_info(CURLVERSION_NOW)->features & CURL_VERSION_HTTP2))
        return lt_errf(err, LT_ERR_UNSUPPORTED, "otlp: grpc needs a libcurl with HTTP/2");
    tel_otlp_t *o = calloc(1, sizeof *o);
    if (!o) return lt_errf(err, LT_ERR_NOMEM, "otlp: out of memory");
    o->cfg = *cfg;
    o->res = *res;
    o->rng = lt_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
    o->multi = tel_curl.multi_init();
    o->easy = tel_curl.easy_init();
    int rc = !o->multi || !o->easy ? lt_errf(err, LT_ERR_NOMEM, "otlp: curl handles") : 0;
    if (!rc) rc = build_headers(o, err);
    if (!rc) rc = setup_easy(o, err);
    if (rc) {
        tel_otlp_destroy(&o);
        return rc;
    }
    *out = o;
    return 0;
}

void tel_otlp_destroy(tel_otlp_t **otlp_p) {
    if (!otlp_p || !*otlp_p) return;
    tel_otlp_t *o = *otlp_p;
    *otlp_p = NULL;
    if (o->easy) tel_curl.easy_cleanup(o->easy);
    if (o->multi) tel_curl.multi_cleanup(o->multi);
    tel_curl.slist_free_all(o->headers);
    free(o->body);
    free(o);
}

/* ---- one attempt ---- */

typedef enum { ATTEMPT_OK, ATTEMPT_RETRY, ATTEMPT_FAIL } attempt_t;

static uint64_t deadline_now(const _Atomic uint64_t *deadline_ns, uint64_t own) {
    uint64_t d = atomic_load_explicit(deadline_ns, memory_order_acquire);
    return d < own ? d : own;
}

/* Runs the transfer until it ends or the deadline passes; the curl result. */
static CURLcode transfer(tel_otlp_t *o, const _Atomic uint64_t *deadline_ns, uint64_t own_dl) {
    uint64_t now = lt_now_ns(), dl = deadline_now(deadline_ns, own_dl);
    long left_ms = dl > now ? (long)((dl - now + NS_PER_MS - 1) / NS_PER_MS) : 1;
    /* curl's own limits as a backstop; the loop below is what honours a moved deadline */
    tel_curl.easy_setopt(o->easy, CURLOPT_TIMEOUT_MS, left_ms);
    tel_curl.easy_setopt(o->easy, CURLOPT_CONNECTTIMEOUT_MS, left_ms);
    if (tel_curl.multi_add_handle(o->multi, o->easy) != CURLM_OK) return CURLE_FAILED_INIT;
    CURLcode res = CURLE_OPERATION_TIMEDOUT;
    for (;;) {
        int running = 0;
        if (tel_curl.multi_perform(o->multi, &running) != CURLM_OK) {
            res = CURLE_FAILED_INIT;
            break;
        }
        if (!running) {
            int q;
            CURLMsg *m;
            while ((m = tel_curl.multi_info_read(o->multi, &q)))
                if (m->msg == CURLMSG_DONE && m->easy_handle == o->easy) res = m->data.result;
            break;
        }
        now = lt_now_ns();
        dl = deadline_now(deadline_ns, own_dl);
        if (now >= dl) {
            snprintf(o->curl_err, sizeof o->curl_err, "no answer before the export deadline");
            break; /* CURLE_OPERATION_TIMEDOUT: removing the handle abandons the request */
        }
        uint64_t ms = (dl - now + NS_PER_MS - 1) / NS_PER_MS;
        tel_curl.multi_poll(o->multi, NULL, 0, ms < SLICE_MS ? (int)ms : SLICE_MS, NULL);
    }
    tel_curl.multi_remove_handle(o->multi, o->easy);
    return res;
}

static bool curl_retryable(CURLcode c) {
    switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST: /* DNS or the collector may come back */
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR: return true;
    default: return false;
    }
}

static bool grpc_retryable(int code) { /* the OTLP specification's list */
    return code == GRPC_CANCELLED || code == GRPC_DEADLINE_EXCEEDED ||
           code == GRPC_RESOURCE_EXHAUSTED || code == GRPC_ABORTED || code == GRPC_OUT_OF_RANGE ||
           code == GRPC_UNAVAILABLE || code == GRPC_DATA_LOSS;
}

static bool http_retryable(long status) {
    return status == 429 || status == 502 || status == 503 || status == 504;
}

/* The receiver's ExportTraceServiceResponse: a partial success is worth a warning. */
static void log_response(tel_otlp_t *o, const uint8_t *p, size_t n, size_t n_spans) {
    if (n == 0) return;
    pb_response_t *r =
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(NULL, n,
                                                                                          p);
    if (!r) {
        LT_DEBUG("otlp: %s: the %zu-byte response is not an ExportTraceServiceResponse", o->cfg.url,
                 n);
        return;
    }
    const Opentelemetry__Proto__Collector__Trace__V1__ExportTracePartialSuccess *ps =
        r->partial_success;
    if (ps && (ps->rejected_spans || (ps->error_message && ps->error_message[0])))
        LT_WARN("otlp: %s: partial success: %lld of %zu spans rejected: %s", o->cfg.url,
                (long long)ps->rejected_spans, n_spans,
                ps->error_message && ps->error_message[0] ? ps->error_message : "(no message)");
    opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(r,
                                                                                             NULL);
}

/* Judges a finished gRPC attempt; why receives a failure's description. */
static attempt_t judge_grpc(tel_otlp_t *o, long http, size_t n_spans, char *why, size_t wn) {
    if (http != 200) { /* gRPC's HTTP-to-status mapping: 429/502/503/504 are UNAVAILABLE */
        snprintf(why, wn, "HTTP %ld from a gRPC endpoint", http);
        return http_retryable(http) ? ATTEMPT_RETRY : ATTEMPT_FAIL;
    }
    if (o->grpc_status < 0) {
        snprintf(why, wn, "no grpc-status in the answer");
        return ATTEMPT_FAIL;
    }
    if (o->grpc_status != GRPC_OK) {
        snprintf(why, wn, "grpc-status %d%s%s", o->grpc_status, o->grpc_message[0] ? ": " : "",
                 o->grpc_message);
        return grpc_retryable(o->grpc_status) ? ATTEMPT_RETRY : ATTEMPT_FAIL;
    }
    /* one framed message: flag 0 (uncompressed), 4-byte length, the message */
    if (o->body_len >= 5 && o->body[0] == 0) {
        size_t len = (size_t)o->body[1] << 24 | (size_t)o->body[2] << 16 | (size_t)o->body[3] << 8 |
                     o->body[4];
        if (len <= o->body_len - 5) log_response(o, o->body + 5, len, n_spans);
    }
    return ATTEMPT_OK;
}

static attempt_t judge_http(tel_otlp_t *o, long http, size_t n_spans, char *why, size_t wn) {
    if (http >= 200 && http < 300) {
        log_response(o, o->body, o->body_len, n_spans);
        return ATTEMPT_OK;
    }
    snprintf(why, wn, "HTTP %ld", http);
    return http_retryable(http) ? ATTEMPT_RETRY : ATTEMPT_FAIL;
}

static attempt_t attempt(tel_otlp_t *o, const uint8_t *req, size_t len, size_t n_spans,
                         const _Atomic uint64_t *deadline_ns, uint64_t own_dl, char *why,
                         size_t wn) {
    o->body_len = 0;
    o->retry_after_ms = -1;
    o->grpc_status = -1;
    o->grpc_message[0] = 0;
    o->curl_err[0] = 0;
    tel_curl.easy_setopt(o->easy, CURLOPT_POSTFIELDS, req);
    tel_curl.easy_setopt(o->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    CURLcode c = transfer(o, deadline_ns, own_dl);
    if (c != CURLE_OK) {
        snprintf(why, wn, "%s", o->curl_err[0] ? o->curl_err : tel_curl.easy_strerror(c));
        return curl_retryable(c) ? ATTEMPT_RETRY : ATTEMPT_FAIL;
    }
    long http = 0;
    tel_curl.easy_getinfo(o->easy, CURLINFO_RESPONSE_CODE, &http);
    return o->cfg.protocol == TEL_OTLP_GRPC ? judge_grpc(o, http, n_spans, why, wn)
                                            : judge_http(o, http, n_spans, why, wn);
}

/* ---- the export ---- */

static uint64_t backoff_ns(tel_otlp_t *o, int retry) {
    uint64_t d = BACKOFF_FIRST;
    for (int i = 0; i < retry && d < BACKOFF_MAX; i++) d *= 2;
    if (d > BACKOFF_MAX) d = BACKOFF_MAX;
    o->rng ^= o->rng << 13, o->rng ^= o->rng >> 7, o->rng ^= o->rng << 17; /* xorshift64 */
    return d / 2 + o->rng % (d / 2 + 1);                                   /* jitter: [d/2, d] */
}

/* Sleeps until `until`, or false at once when the deadline comes first (no point waiting). */
static bool sleep_until(const _Atomic uint64_t *deadline_ns, uint64_t own_dl, uint64_t until) {
    for (;;) {
        uint64_t now = lt_now_ns();
        if (until >= deadline_now(deadline_ns, own_dl)) return false;
        if (now >= until) return true;
        uint64_t ns = until - now;
        if (ns > SLICE_MS * NS_PER_MS) ns = SLICE_MS * NS_PER_MS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ns};
        nanosleep(&ts, NULL);
    }
}

static void log_failure(tel_otlp_t *o, size_t n, const char *why, uint32_t requests) {
    uint64_t now = lt_now_ns();
    if (o->last_log_ns && now - o->last_log_ns < LOG_EVERY_NS) {
        o->unlogged++;
        return;
    }
    char more[96] = "";
    if (o->unlogged)
        snprintf(more, sizeof more, " (and %llu failed exports since the last warning)",
                 (unsigned long long)o->unlogged);
    LT_WARN("otlp: export of %zu spans to %s (%s) failed after %u request(s): %s%s", n, o->cfg.url,
            tel_otlp_protocol_name(o->cfg.protocol), requests, why, more);
    o->last_log_ns = now;
    o->unlogged = 0;
}

int tel_otlp_export(void *otlp, const tel_span_t *const *spans, size_t n,
                    const _Atomic uint64_t *deadline_ns, tel_export_stats_t *st) {
    tel_otlp_t *o = otlp;
    uint64_t own_dl = lt_now_ns() + (uint64_t)o->cfg.timeout_ms * NS_PER_MS;
    const size_t head = o->cfg.protocol == TEL_OTLP_GRPC ? 5 : 0;
    uint8_t *buf;
    size_t len;
    char err[LT_ERR_LEN];
    if (tel_otlp_encode(spans, n, &o->res, head, &buf, &len, err)) {
        log_failure(o, n, err, 0);
        return LT_ERR_NOMEM;
    }
    if (head) { /* the gRPC frame: not compressed, then the length, big-endian */
        buf[0] = 0;
        buf[1] = (uint8_t)(len >> 24), buf[2] = (uint8_t)(len >> 16);
        buf[3] = (uint8_t)(len >> 8), buf[4] = (uint8_t)len;
    }
    char why[CURL_ERROR_SIZE + 64] = "no attempt before the deadline";
    int rc = LT_ERR_IO;
    for (int retry = 0;; retry++) {
        if (lt_now_ns() >= deadline_now(deadline_ns, own_dl)) break;
        st->requests++;
        if (retry) st->retries++;
        attempt_t a = attempt(o, buf, len + head, n, deadline_ns, own_dl, why, sizeof why);
        if (a == ATTEMPT_OK) {
            rc = 0;
            break;
        }
        if (a == ATTEMPT_FAIL) break;
        uint64_t wait =
            o->retry_after_ms >= 0 ? (uint64_t)o->retry_after_ms * NS_PER_MS : backoff_ns(o, retry);
        if (!sleep_until(deadline_ns, own_dl, lt_now_ns() + wait)) {
            size_t w = strlen(why);
            snprintf(why + w, sizeof why - w, " (no time left to retry)");
            break;
        }
    }
    free(buf);
    if (rc)
        log_failure(o, n, why, st->requests);
    else if (o->unlogged || o->last_log_ns) {
        LT_INFO("otlp: %s: exporting again", o->cfg.url);
        o->last_log_ns = 0, o->unlogged = 0;
    }
    return rc;
}
