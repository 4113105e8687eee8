/*
 * test_otlp.c — the OTLP exporter and the batch span processor without a receiver:
 *   - configuration: every OTEL_EXPORTER_OTLP_* variable (signal-specific over generic, the
 *     --otlp-traces-endpoint flag over both), the gRPC and http/protobuf endpoint rules, and a
 *     clear error naming the variable for each kind of malformed value; the OTEL_BSP_* variables;
 *   - encoding: a batch encoded by tel_otlp_encode and decoded again with protobuf-c's unpacker
 *     (the generated code of telemetry/proto), every field compared: ids, parent, flags, kind,
 *     times, attributes of each type, events, links, status, dropped counts, resource, scope,
 *     and invalid UTF-8 repaired;
 *   - the batch span processor with a fake export function: batches of the maximum size,
 *     the schedule delay, flush, a full queue dropping and releasing at once, every span given
 *     back exactly once under four concurrent producers, no allocation and no waiting in submit
 *     while the exporter is stuck, flush and destroy bounded by their deadlines while exports
 *     hang;
 *   - the exporter against a dead port and a listener that never answers: failures within the
 *     deadline, retries counted, a deadline brought forward by another thread honoured.
 * The real receivers (grpcio, http.server with opentelemetry-proto) are test_otlp_export.py's.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bsp.h"
#include "lt.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "otlp.h"
#include "span.h"
#include "testutil.h"

/* ---- allocation counter for the calling thread (not under sanitizers) ---- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNT_ALLOCS 0
#else
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static long g_allocs;
static __thread int g_counting;
void *malloc(size_t n) {
    if (g_counting) g_allocs++;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
    if (g_counting) g_allocs++;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    if (g_counting) g_allocs++;
    return __libc_realloc(p, n);
}
void free(void *p) {
    __libc_free(p);
}
#endif

#define MS 1000000ull

/* ---- configuration ---- */

static const char *const OTEL_VARS[] = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",     "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",     "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_INSECURE",    "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_BSP_MAX_QUEUE_SIZE",        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",        "OTEL_BSP_EXPORT_TIMEOUT",
};

static int clear_env(void **state) {
    for (size_t i = 0; i < sizeof OTEL_VARS / sizeof *OTEL_VARS; i++) unsetenv(OTEL_VARS[i]);
    return 0;
}

#define GRPC_PATH "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

static void cfg_ok(tel_otlp_config_t *c, const char *flag) {
    char err[LT_ERR_LEN] = "";
    int rc = tel_otlp_config_from_env(c, flag, err);
    if (rc) print_message("unexpected error: %s\n", err);
    assert_int_equal(rc, 0);
}

/* A malformed value: the error code, and the message names `needle` (the variable). */
static void cfg_bad(const char *flag, int code, const char *needle) {
    tel_otlp_config_t c;
    char err[LT_ERR_LEN] = "";
    assert_int_equal(tel_otlp_config_from_env(&c, flag, err), code);
    if (!strstr(err, needle)) print_message("error '%s' lacks '%s'\n", err, needle);
    assert_non_null(strstr(err, needle));
}

static void test_config_defaults(void **state) {
    tel_otlp_config_t c;
    cfg_ok(&c, NULL);
    assert_false(c.enabled);
    assert_int_equal(c.protocol, TEL_OTLP_GRPC);
    assert_int_equal(c.timeout_ms, 10000);
    assert_int_equal(c.n_headers, 0);
    cfg_ok(&c, "");
    assert_false(c.enabled);
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", 1); /* empty: unset */
    cfg_ok(&c, NULL);
    assert_false(c.enabled);
}

static void test_config_grpc_endpoints(void **state) {
    tel_otlp_config_t c;
    cfg_ok(&c, "http://127.0.0.1:4317");
    assert_true(c.enabled);
    assert_false(c.tls);
    assert_string_equal(c.url, "http://127.0.0.1:4317" GRPC_PATH);
    cfg_ok(&c, "https://collector.example:4317/ignored/path?q=1");
    assert_true(c.tls);
    assert_string_equal(c.url, "https://collector.example:4317" GRPC_PATH);
    cfg_ok(&c, "localhost:4317"); /* no scheme: TLS unless INSECURE */
    assert_true(c.tls);
    assert_string_equal(c.url, "https://localhost:4317" GRPC_PATH);
    setenv("OTEL_EXPORTER_OTLP_INSECURE", "true", 1);
    cfg_ok(&c, "localhost:4317");
    assert_false(c.tls);
    assert_string_equal(c.url, "http://localhost:4317" GRPC_PATH);
    cfg_ok(&c, "grpc://jaeger:4317"); /* vLLM's examples */
    assert_false(c.tls);
    assert_string_equal(c.url, "http://jaeger:4317" GRPC_PATH);
    setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "FALSE", 1); /* signal-specific wins */
    cfg_ok(&c, "grpc://jaeger:4317");
    assert_true(c.tls);
    cfg_ok(&c, "http://jaeger:4317"); /* the scheme wins over INSECURE */
    assert_false(c.tls);
    cfg_ok(&c, "http://[::1]:4317");
    assert_string_equal(c.url, "http://[::1]:4317" GRPC_PATH);
}

static void test_config_endpoint_precedence(void **state) {
    tel_otlp_config_t c;
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:1", 1);
    cfg_ok(&c, NULL);
    assert_string_equal(c.url, "http://base:1" GRPC_PATH);
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:2", 1);
    cfg_ok(&c, NULL);
    assert_string_equal(c.url, "http://traces:2" GRPC_PATH);
    cfg_ok(&c, "http://flag:3");
    assert_string_equal(c.url, "http://flag:3" GRPC_PATH);
}

static void test_config_http_endpoints(void **state) {
    tel_otlp_config_t c;
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", 1);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", 1);
    cfg_ok(&c, NULL);
    assert_int_equal(c.protocol, TEL_OTLP_HTTP_PROTOBUF);
    assert_string_equal(c.url, "http://collector:4318/v1/traces");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/", 1);
    cfg_ok(&c, NULL);
    assert_true(c.tls);
    assert_string_equal(c.url, "https://collector:4318/v1/traces");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw/otlp/", 1);
    cfg_ok(&c, NULL);
    assert_string_equal(c.url, "http://gw/otlp/v1/traces");
    /* the signal-specific endpoint and the flag are used as given */
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/custom/traces", 1);
    cfg_ok(&c, NULL);
    assert_string_equal(c.url, "http://collector:4318/custom/traces");
    cfg_ok(&c, "http://127.0.0.1:9/x");
    assert_string_equal(c.url, "http://127.0.0.1:9/x");
    assert_false(c.tls);
    /* http/protobuf needs a URL with an http(s) scheme */
    cfg_bad("localhost:4318", LT_ERR_INVAL, "--otlp-traces-endpoint");
    cfg_bad("grpc://x:1", LT_ERR_INVAL, "http:// or https://");
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x", 1);
    cfg_bad(NULL, LT_ERR_INVAL, "OTEL_EXPORTER_OTLP_ENDPOINT='ftp://x'");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://", 1);
    cfg_bad(NULL, LT_ERR_INVAL, "OTEL_EXPORTER_OTLP_ENDPOINT");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http:///path", 1);
    cfg_bad(NULL, LT_ERR_INVAL, "OTEL_EXPORTER_OTLP_ENDPOINT");
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", 1);
    cfg_bad(NULL, LT_ERR_INVAL, "expected [scheme://]host[:port]");
}

static void test_config_protocol(void **state) {
    tel_otlp_config_t c;
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", 1);
    setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc", 1); /* wins */
    cfg_ok(&c, "http://h:1");
    assert_int_equal(c.protocol, TEL_OTLP_GRPC);
    assert_string_equal(tel_otlp_protocol_name(c.protocol), "grpc");
    setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "", 1); /* empty: the generic one */
    cfg_ok(&c, "http://h:1");
    assert_int_equal(c.protocol, TEL_OTLP_HTTP_PROTOBUF);
    setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", 1);
    cfg_bad("http://h:1", LT_ERR_UNSUPPORTED, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'");
    setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "GRPC", 1);
    cfg_bad("http://h:1", LT_ERR_INVAL, "expected grpc or http/protobuf");
    cfg_bad(NULL, LT_ERR_INVAL, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"); /* checked when off too */
}

static void test_config_headers(void **state) {
    tel_otlp_config_t c;
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "generic=1", 1);
    setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS",
           " Api-Key = secret%20value%21 ,x-tenant=a%2Cb%3Dc,empty=,, plus=a+b", 1);
    cfg_ok(&c, "http://h:1");
    assert_int_equal(c.n_headers, 4); /* the signal-specific list replaces the generic one */
    assert_string_equal(c.headers[0].name, "api-key");
    assert_string_equal(c.headers[0].value, "secret value!");
    assert_string_equal(c.headers[1].name, "x-tenant");
    assert_string_equal(c.headers[1].value, "a,b=c");
    assert_string_equal(c.headers[2].name, "empty");
    assert_string_equal(c.headers[2].value, "");
    assert_string_equal(c.headers[3].value, "a+b"); /* percent-decoding only: + stays */
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS");
    cfg_ok(&c, "http://h:1");
    assert_int_equal(c.n_headers, 1);
    assert_string_equal(c.headers[0].name, "generic");

    const char *bad[][2] = {
        {"novalue", "is not key=value"},
        {"=v", "header name"},
        {"a b=c", "not a valid header name"},
        {"k(=v", "not a valid header name"},
        {"k=%zz", "bad percent escape"},
        {"k=abc%4", "bad percent escape"},
        {"k=a%0d%0aInjected: 1", "control character"},
        {"k=a%00b", "control character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", bad[i][0], 1);
        cfg_bad("http://h:1", LT_ERR_INVAL, bad[i][1]);
        cfg_bad("http://h:1", LT_ERR_INVAL, "OTEL_EXPORTER_OTLP_TRACES_HEADERS");
    }
    char many[512] = "";
    for (int i = 0; i <= TEL_OTLP_MAX_HEADERS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "h%d=v,", i);
    setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", many, 1);
    cfg_bad("http://h:1", LT_ERR_INVAL, "more than");
}

static void test_config_timeout_insecure_certificate(void **state) {
    tel_otlp_config_t c;
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500", 1);
    cfg_ok(&c, "http://h:1");
    assert_int_equal(c.timeout_ms, 2500);
    setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700", 1);
    cfg_ok(&c, "http://h:1");
    assert_int_equal(c.timeout_ms, 700);
    const char *bad_timeouts[] = {"abc", "-1", "0", "1.5", "10s", "99999999999"};
    for (size_t i = 0; i < sizeof bad_timeouts / sizeof *bad_timeouts; i++) {
        setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", bad_timeouts[i], 1);
        cfg_bad("http://h:1", LT_ERR_INVAL, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT");
    }
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT");
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", 1);
    cfg_bad("http://h:1", LT_ERR_INVAL, "OTEL_EXPORTER_OTLP_TIMEOUT='soon'");
    unsetenv("OTEL_EXPORTER_OTLP_TIMEOUT");

    setenv("OTEL_EXPORTER_OTLP_INSECURE", "yes", 1);
    cfg_bad("h:1", LT_ERR_INVAL, "OTEL_EXPORTER_OTLP_INSECURE='yes': expected true or false");
    unsetenv("OTEL_EXPORTER_OTLP_INSECURE");

    setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", 1);
    cfg_bad("https://h:1", LT_ERR_INVAL, "OTEL_EXPORTER_OTLP_CERTIFICATE");
    const char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    assert_int_equal(tu_write_file(path, "x", 1), 0);
    setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", path, 1);
    cfg_ok(&c, "https://h:1");
    assert_string_equal(c.ca_file, path);
    unlink(path);
    rmdir(dir);
}

static void test_bsp_config(void **state) {
    tel_bsp_config_t c;
    char err[LT_ERR_LEN];
    assert_int_equal(tel_bsp_config_from_env(&c, err), 0);
    assert_int_equal(c.max_queue_size, 2048);
    assert_int_equal(c.max_export_batch_size, 512);
    assert_int_equal(c.schedule_delay_ms, 5000);
    assert_int_equal(c.export_timeout_ms, 30000);
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100", 1);
    setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10", 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "250", 1);
    setenv("OTEL_BSP_EXPORT_TIMEOUT", "1000", 1);
    assert_int_equal(tel_bsp_config_from_env(&c, err), 0);
    assert_int_equal(c.max_queue_size, 100);
    assert_int_equal(c.max_export_batch_size, 10);
    assert_int_equal(c.schedule_delay_ms, 250);
    assert_int_equal(c.export_timeout_ms, 1000);
    const char *bad[][2] = {
        {"OTEL_BSP_MAX_QUEUE_SIZE", "0"},          {"OTEL_BSP_MAX_QUEUE_SIZE", "many"},
        {"OTEL_BSP_SCHEDULE_DELAY", "-5"},         {"OTEL_BSP_EXPORT_TIMEOUT", "1e3"},
        {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "101"}, /* over the queue */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        clear_env(NULL);
        setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100", 1);
        setenv(bad[i][0], bad[i][1], 1);
        assert_int_equal(tel_bsp_config_from_env(&c, err), LT_ERR_INVAL);
        assert_non_null(strstr(err, bad[i][0]));
    }
}

/* ---- encoding ---- */

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest pb_request_t;
typedef Opentelemetry__Proto__Trace__V1__Span pb_span_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue pb_kv_t;
#define ANY(x) OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_##x

static void fill_id(uint8_t *id, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; i++) id[i] = (uint8_t)(seed + 17 * i + 1);
}

static const tel_link_t LINKS[2] = {
    {.trace_id = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
     .span_id = {21, 22, 23, 24, 25, 26, 27, 28},
     .flags = 1},
    {.trace_id = {0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 7, 6, 5, 4, 3, 2, 1, 0x42},
     .span_id = {0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8},
     .flags = 0},
};

/* A span with everything: a parent, attributes of each type, events, links, an error status. */
static void full_span(tel_span_t *sp) {
    memset(sp, 0, sizeof *sp);
    fill_id(sp->trace_id, 16, 3);
    fill_id(sp->span_id, 8, 50);
    fill_id(sp->parent_id, 8, 90);
    sp->flags = 1;
    strcpy(sp->name, "llm_request");
    sp->kind = TEL_KIND_SERVER;
    sp->status = TEL_STATUS_ERROR;
    strcpy(sp->status_message, "engine died");
    sp->start_unix_ns = 1700000000123456789ull;
    sp->end_unix_ns = 1700000001987654321ull;
    tel_span_set_str(sp, "gen_ai.request.model", "SmolLM2-135M-Instruct");
    tel_span_set_int(sp, "gen_ai.usage.prompt_tokens", -42);
    tel_span_set_int(sp, "gen_ai.request.max_tokens", INT64_MAX);
    tel_span_set_double(sp, "gen_ai.request.temperature", 0.7);
    tel_span_set_bool(sp, "lantern.stream", true);
    tel_span_set_bool(sp, "lantern.cached", false);
    tel_span_set_str(sp, "lantern.utf8", "caf\xc3\xa9 \xf0\x9f\x94\xa6");
    tel_span_set_str(sp, "lantern.bad",
                     "a\xff"
                     "b\xc3"); /* invalid, then truncated */
    tel_attrs_str(sp->attrs, &sp->n_attrs, TEL_MAX_ATTRS, sp->text, &sp->text_len, TEL_TEXT_MAX,
                  &sp->dropped_attrs, "lantern.nul", "x\0y", 3);
    tel_span_set_str(sp, "lantern.empty", "");
    sp->dropped_attrs = 3;
    sp->dropped_events = 2;
    sp->n_events = 2;
    sp->events[0] =
        (tel_event_t){.name = "first_token", .time_unix_ns = 1700000000500000000ull, .n_attrs = 2};
    sp->events[0].attrs[0] = (tel_attr_t){.key = "tokens", .type = TEL_ATTR_INT, .v.i = 7};
    sp->events[0].attrs[1] = (tel_attr_t){.key = "ratio", .type = TEL_ATTR_DOUBLE, .v.d = 0.25};
    sp->events[1] =
        (tel_event_t){.name = "preempted", .time_unix_ns = 1700000000600000000ull, .n_attrs = 2};
    sp->events[1].attrs[0] = (tel_attr_t){.key = "swapped", .type = TEL_ATTR_BOOL, .v.b = true};
    sp->events[1].attrs[1] = (tel_attr_t){.key = "no_text", .type = TEL_ATTR_STR}; /* dropped */
    sp->n_links = 2;
    sp->links = LINKS;
}

static const pb_kv_t *find_kv(pb_kv_t **kvs, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(kvs[i]->key, key)) return kvs[i];
    fail_msg("attribute %s missing", key);
    return NULL;
}

static void assert_str_kv(pb_kv_t **kvs, size_t n, const char *key, const char *want) {
    const pb_kv_t *kv = find_kv(kvs, n, key);
    assert_int_equal(kv->value->value_case, ANY(STRING_VALUE));
    assert_string_equal(kv->value->string_value, want);
}

static void check_full_span(const pb_span_t *s, const tel_span_t *sp) {
    assert_int_equal(s->trace_id.len, 16);
    assert_memory_equal(s->trace_id.data, sp->trace_id, 16);
    assert_int_equal(s->span_id.len, 8);
    assert_memory_equal(s->span_id.data, sp->span_id, 8);
    assert_int_equal(s->parent_span_id.len, 8);
    assert_memory_equal(s->parent_span_id.data, sp->parent_id, 8);
    assert_int_equal(s->flags, 1);
    assert_string_equal(s->name, "llm_request");
    assert_int_equal(s->kind, OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER);
    assert_true(s->start_time_unix_nano == sp->start_unix_ns);
    assert_true(s->end_time_unix_nano == sp->end_unix_ns);
    assert_int_equal(s->n_attributes, 10);
    assert_int_equal(s->dropped_attributes_count, 3);
    assert_str_kv(s->attributes, s->n_attributes, "gen_ai.request.model", "SmolLM2-135M-Instruct");
    const pb_kv_t *kv = find_kv(s->attributes, s->n_attributes, "gen_ai.usage.prompt_tokens");
    assert_int_equal(kv->value->value_case, ANY(INT_VALUE));
    assert_true(kv->value->int_value == -42);
    kv = find_kv(s->attributes, s->n_attributes, "gen_ai.request.max_tokens");
    assert_true(kv->value->int_value == INT64_MAX);
    kv = find_kv(s->attributes, s->n_attributes, "gen_ai.request.temperature");
    assert_int_equal(kv->value->value_case, ANY(DOUBLE_VALUE));
    assert_true(kv->value->double_value == 0.7);
    kv = find_kv(s->attributes, s->n_attributes, "lantern.stream");
    assert_int_equal(kv->value->value_case, ANY(BOOL_VALUE));
    assert_true(kv->value->bool_value);
    kv = find_kv(s->attributes, s->n_attributes, "lantern.cached");
    assert_int_equal(kv->value->value_case, ANY(BOOL_VALUE));
    assert_false(kv->value->bool_value);
    assert_str_kv(s->attributes, s->n_attributes, "lantern.utf8", "caf\xc3\xa9 \xf0\x9f\x94\xa6");
    assert_str_kv(s->attributes, s->n_attributes, "lantern.bad",
                  "a\xef\xbf\xbd"
                  "b\xef\xbf\xbd");
    assert_str_kv(s->attributes, s->n_attributes, "lantern.nul", "x\xef\xbf\xbdy");
    assert_str_kv(s->attributes, s->n_attributes, "lantern.empty", "");

    assert_int_equal(s->n_events, 2);
    assert_int_equal(s->dropped_events_count, 2);
    assert_string_equal(s->events[0]->name, "first_token");
    assert_true(s->events[0]->time_unix_nano == 1700000000500000000ull);
    assert_int_equal(s->events[0]->n_attributes, 2);
    assert_string_equal(s->events[0]->attributes[0]->key, "tokens");
    assert_true(s->events[0]->attributes[0]->value->int_value == 7);
    assert_true(s->events[0]->attributes[1]->value->double_value == 0.25);
    assert_int_equal(s->events[0]->dropped_attributes_count, 0);
    assert_string_equal(s->events[1]->name, "preempted");
    assert_int_equal(s->events[1]->n_attributes, 1);
    assert_int_equal(s->events[1]->attributes[0]->value->value_case, ANY(BOOL_VALUE));
    assert_int_equal(s->events[1]->dropped_attributes_count, 1);

    assert_int_equal(s->n_links, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(s->links[i]->trace_id.len, 16);
        assert_memory_equal(s->links[i]->trace_id.data, LINKS[i].trace_id, 16);
        assert_int_equal(s->links[i]->span_id.len, 8);
        assert_memory_equal(s->links[i]->span_id.data, LINKS[i].span_id, 8);
        assert_int_equal(s->links[i]->flags, LINKS[i].flags);
    }
    assert_non_null(s->status);
    assert_int_equal(s->status->code,
                     OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR);
    assert_string_equal(s->status->message, "engine died");
}

static void test_encode_round_trip(void **state) {
    static tel_span_t a, b;
    full_span(&a);
    memset(&b, 0, sizeof b); /* a bare root span */
    fill_id(b.trace_id, 16, 7);
    fill_id(b.span_id, 8, 8);
    strcpy(b.name, "engine.step");
    b.kind = TEL_KIND_INTERNAL;
    b.start_unix_ns = 5, b.end_unix_ns = 6;
    static tel_resource_t res;
    memset(&res, 0, sizeof res);
    tel_resource_set_str(&res, "service.name", "lantern");
    tel_resource_set_int(&res, "process.pid", 4242);
    tel_resource_set_str(&res, "lantern.process.role", "engine");

    const tel_span_t *spans[] = {&a, &b};
    uint8_t *buf;
    size_t len;
    char err[LT_ERR_LEN];
    assert_int_equal(tel_otlp_encode(spans, 2, &res, 5, &buf, &len, err), 0);
    pb_request_t *req =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, len,
                                                                                         buf + 5);
    assert_non_null(req);
    assert_int_equal(req->n_resource_spans, 1);
    const Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = req->resource_spans[0];
    assert_int_equal(rs->resource->n_attributes, 3);
    assert_str_kv(rs->resource->attributes, 3, "service.name", "lantern");
    assert_true(find_kv(rs->resource->attributes, 3, "process.pid")->value->int_value == 4242);
    assert_str_kv(rs->resource->attributes, 3, "lantern.process.role", "engine");
    assert_int_equal(rs->n_scope_spans, 1);
    assert_string_equal(rs->scope_spans[0]->scope->name, "lantern");
    assert_string_equal(rs->scope_spans[0]->scope->version, lt_version());
    assert_int_equal(rs->scope_spans[0]->n_spans, 2);
    check_full_span(rs->scope_spans[0]->spans[0], &a);

    const pb_span_t *s = rs->scope_spans[0]->spans[1];
    assert_int_equal(s->parent_span_id.len, 0); /* a root */
    assert_memory_equal(s->span_id.data, b.span_id, 8);
    assert_int_equal(s->kind, OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_INTERNAL);
    assert_int_equal(s->flags, 0);
    assert_int_equal(s->n_attributes + s->n_events + s->n_links, 0);
    assert_int_equal(s->status->code, 0);
    assert_string_equal(s->status->message, "");
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req,
                                                                                            NULL);
    free(buf);

    /* no spans: a valid request with an empty scope */
    assert_int_equal(tel_otlp_encode(NULL, 0, &res, 0, &buf, &len, err), 0);
    req = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
        NULL, len, buf);
    assert_non_null(req);
    assert_int_equal(req->resource_spans[0]->scope_spans[0]->n_spans, 0);
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req,
                                                                                            NULL);
    free(buf);
}

/* A span filled to every capacity, string store full: the arena sizing holds. */
static void test_encode_full_capacity(void **state) {
    static tel_span_t sp;
    memset(&sp, 0, sizeof sp);
    memset(sp.name, 0xff, sizeof sp.name); /* no NUL and invalid: every byte becomes U+FFFD */
    char big[TEL_TEXT_MAX];
    memset(big, 0x80, sizeof big);
    for (int i = 0; i < TEL_MAX_ATTRS + 2; i++) {
        if (i % 2)
            tel_span_set_int(&sp, "k", i);
        else
            tel_attrs_str(sp.attrs, &sp.n_attrs, TEL_MAX_ATTRS, sp.text, &sp.text_len, TEL_TEXT_MAX,
                          &sp.dropped_attrs, "s", big, 100);
    }
    sp.n_events = TEL_MAX_EVENTS;
    for (int i = 0; i < TEL_MAX_EVENTS; i++) {
        sp.events[i].name = "e";
        sp.events[i].n_attrs = TEL_EVENT_ATTRS;
        for (int k = 0; k < TEL_EVENT_ATTRS; k++)
            sp.events[i].attrs[k] = (tel_attr_t){.key = "n", .type = TEL_ATTR_INT, .v.i = k};
    }
    const tel_span_t *spans[] = {&sp, &sp, &sp};
    static tel_resource_t res;
    memset(&res, 0, sizeof res);
    for (int i = 0; i < TEL_RESOURCE_ATTRS; i++) tel_resource_set_str(&res, "r", "value");
    uint8_t *buf;
    size_t len;
    char err[LT_ERR_LEN];
    assert_int_equal(tel_otlp_encode(spans, 3, &res, 0, &buf, &len, err), 0);
    pb_request_t *req =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, len,
                                                                                         buf);
    assert_non_null(req);
    const pb_span_t *s = req->resource_spans[0]->scope_spans[0]->spans[2];
    assert_int_equal(s->n_attributes, TEL_MAX_ATTRS);
    assert_int_equal(s->dropped_attributes_count, 2);
    assert_int_equal(strlen(s->name), 3 * TEL_NAME_MAX);
    assert_int_equal(s->n_events, TEL_MAX_EVENTS);
    assert_int_equal(req->resource_spans[0]->resource->n_attributes, TEL_RESOURCE_ATTRS);
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req,
                                                                                            NULL);
    free(buf);
}

/* ---- the batch span processor with a fake exporter ---- */

enum { FAKE_OK, FAKE_FAIL, FAKE_HANG };

typedef struct fake {
    _Atomic int mode;
    _Atomic int calls;
    _Atomic long spans;
    _Atomic int max_batch, last_batch;
    _Atomic bool in_export;
    _Atomic uint64_t hang_ended_ns; /* when a hanging export noticed its deadline */
} fake_t;

static int fake_export(void *user, const tel_span_t *const *spans, size_t n,
                       const _Atomic uint64_t *deadline_ns, tel_export_stats_t *st) {
    fake_t *f = user;
    f->in_export = true;
    st->requests = 1;
    f->calls++;
    f->last_batch = (int)n;
    if ((int)n > f->max_batch) f->max_batch = (int)n;
    int rc = 0;
    switch (f->mode) {
    case FAKE_OK: f->spans += (long)n; break;
    case FAKE_FAIL: rc = LT_ERR_IO; break;
    default: /* a black hole: wait for the deadline, re-reading it every 10 ms */
        while (f->mode == FAKE_HANG && lt_now_ns() < atomic_load(deadline_ns)) usleep(10000);
        f->hang_ended_ns = lt_now_ns();
        rc = f->mode == FAKE_HANG ? LT_ERR_IO : 0;
        if (!rc) f->spans += (long)n;
        break;
    }
    f->in_export = false;
    return rc;
}

/* Spans the tests hand over are identified by address: a slot of `ids`, never dereferenced as a
 * span by the processor or the fake exporter, so that 80,000 of them cost 80,000 words. */
#define N_IDS 80000
static uint64_t g_ids[N_IDS];
static _Atomic uint8_t g_released[N_IDS];
static _Atomic long g_release_calls;

static tel_span_t *id_span(int i) {
    return (tel_span_t *)(void *)&g_ids[i];
}

static void id_release(tel_span_t *sp, void *user) {
    size_t i = (size_t)((uint64_t *)(void *)sp - g_ids);
    assert_true(i < N_IDS);
    g_released[i]++;
    g_release_calls++;
}

static void ids_reset(void) {
    for (int i = 0; i < N_IDS; i++) g_released[i] = 0;
    g_release_calls = 0;
}

static void ids_released_once(int n) {
    for (int i = 0; i < n; i++) {
        if (g_released[i] != 1) print_message("span %d released %d times\n", i, g_released[i]);
        assert_int_equal(g_released[i], 1);
    }
}

static tel_bsp_t *bsp_new(fake_t *f, int queue, int batch, int delay_ms, int timeout_ms) {
    tel_bsp_config_t cfg = {queue, batch, delay_ms, timeout_ms};
    tel_bsp_t *bsp;
    char err[LT_ERR_LEN];
    assert_int_equal(tel_bsp_create(&bsp, &cfg, fake_export, f, id_release, NULL, err), 0);
    return bsp;
}

/* Polls cond for up to ms milliseconds. */
#define WAIT_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        uint64_t t0_ = lt_now_ns();                                                                \
        while (!(cond) && lt_now_ns() - t0_ < (uint64_t)(ms)*MS) usleep(1000);                     \
    } while (0)

static void test_bsp_batches_and_flush(void **state) {
    ids_reset();
    fake_t f = {0};
    tel_bsp_t *bsp = bsp_new(&f, 64, 8, 60000, 1000); /* the timer never fires here */
    for (int i = 0; i < 32; i++) assert_true(tel_bsp_submit(bsp, id_span(i)));
    tel_bsp_stats_t st;
    WAIT_FOR((tel_bsp_stats(bsp, &st), st.exported == 32), 2000);
    assert_int_equal(st.exported, 32); /* full batches go at once, without the timer */
    assert_int_equal(f.max_batch, 8);
    assert_int_equal(f.calls, 4);
    assert_int_equal(st.batches, 4);
    assert_int_equal(st.requests, 4);
    for (int i = 32; i < 35; i++) tel_bsp_submit_cb(id_span(i), bsp);
    usleep(50000);
    tel_bsp_stats(bsp, &st);
    assert_int_equal(st.exported, 32); /* a partial batch waits for the timer... */
    assert_int_equal(st.queued, 3);
    assert_int_equal(tel_bsp_flush(bsp, 2000), 0); /* ...or a flush */
    tel_bsp_stats(bsp, &st);
    assert_int_equal(st.exported, 35);
    assert_int_equal(st.queued, 0);
    assert_int_equal(f.last_batch, 3);
    assert_int_equal(tel_bsp_flush(bsp, 1000), 0); /* nothing queued: at once */
    tel_bsp_destroy(&bsp, 1000, NULL);
    assert_null(bsp);
    tel_bsp_destroy(&bsp, 1000, NULL); /* NULL: nothing */
    ids_released_once(35);
    assert_int_equal(g_release_calls, 35);
}

static void test_bsp_schedule_delay(void **state) {
    ids_reset();
    fake_t f = {0};
    tel_bsp_t *bsp = bsp_new(&f, 2048, 512, 100, 1000);
    uint64_t t0 = lt_now_ns();
    for (int i = 0; i < 5; i++) tel_bsp_submit(bsp, id_span(i));
    tel_bsp_stats_t st;
    WAIT_FOR((tel_bsp_stats(bsp, &st), st.exported == 5), 3000);
    uint64_t took = lt_now_ns() - t0;
    assert_int_equal(st.exported, 5);
    assert_true(took < 2000 * MS); /* by the 100 ms timer, not by a flush */
    assert_int_equal(f.calls, 1);
    tel_bsp_destroy(&bsp, 1000, NULL);
    ids_released_once(5);
}

static void test_bsp_queue_full(void **state) {
    ids_reset();
    fake_t f = {.mode = FAKE_HANG};
    tel_bsp_t *bsp = bsp_new(&f, 16, 4, 60000, 60000);
    uint64_t worst = 0;
    long refused = 0;
#if COUNT_ALLOCS
    g_allocs = 0;
    g_counting = 1;
#endif
    for (int i = 0; i < 1000; i++) {
        uint64_t t = lt_now_ns();
        if (!tel_bsp_submit(bsp, id_span(i))) {
            refused++;
            assert_int_equal(g_released[i], 1); /* given back at once */
        }
        t = lt_now_ns() - t;
        if (t > worst) worst = t;
    }
#if COUNT_ALLOCS
    g_counting = 0;
    assert_int_equal(g_allocs, 0); /* submit never allocates, dropping included */
#endif
    WAIT_FOR(f.in_export, 2000);
    assert_true(f.in_export);
    tel_bsp_stats_t st;
    tel_bsp_stats(bsp, &st);
    assert_int_equal(st.dropped, refused);
    /* the exporter holds at most one batch; the queue holds 16 */
    assert_true(refused >= 1000 - 16 - 4);
    assert_true(st.queued <= 16);
    assert_int_equal(st.queued + st.dropped + (uint64_t)f.last_batch, 1000);
    print_message("submit while the exporter hangs: worst %.3f ms\n", (double)worst / 1e6);
    assert_true(worst < 100 * MS); /* no waiting on the exporter (generous: a loaded machine) */

    f.mode = FAKE_OK; /* the collector comes back */
    assert_int_equal(tel_bsp_flush(bsp, 2000), 0);
    tel_bsp_stats(bsp, &st);
    assert_int_equal(st.exported + st.dropped, 1000);
    assert_int_equal(st.failed, 0);
    tel_bsp_destroy(&bsp, 1000, NULL);
    ids_released_once(1000);
}

/* Exports that hang until their deadline: flush gives up at its timeout, destroy returns by
 * its deadline and gives every span back as failed. */
static void test_bsp_destroy_while_hanging(void **state) {
    ids_reset();
    fake_t f = {.mode = FAKE_HANG};
    tel_bsp_t *bsp = bsp_new(&f, 128, 10, 60000, 30000);
    for (int i = 0; i < 100; i++) assert_true(tel_bsp_submit(bsp, id_span(i)));
    WAIT_FOR(f.in_export, 2000);
    uint64_t t0 = lt_now_ns();
    assert_int_equal(tel_bsp_flush(bsp, 100), LT_ERR_IO);
    uint64_t took = lt_now_ns() - t0;
    assert_true(took >= 90 * MS && took < 1000 * MS);
    t0 = lt_now_ns();
    tel_bsp_stats_t st;
    tel_bsp_destroy(&bsp, 200, &st);
    took = lt_now_ns() - t0;
    print_message("destroy with a hanging exporter: %.0f ms (deadline 200 ms)\n",
                  (double)took / 1e6);
    assert_true(took >= 150 * MS && took < 1000 * MS);
    assert_true(f.hang_ended_ns - t0 < 400 * MS); /* the running export saw the new deadline */
    assert_int_equal(st.failed, 100);             /* the hung batch and the 90 spans still queued */
    assert_int_equal(st.exported + st.queued + st.dropped, 0);
    assert_int_equal(st.batches, 1); /* nothing more was tried after the deadline */
    assert_int_equal(f.calls, 1);
    ids_released_once(100);
    assert_int_equal(g_release_calls, 100);
}

static void test_bsp_failing_exports(void **state) {
    ids_reset();
    fake_t f = {.mode = FAKE_FAIL};
    tel_bsp_t *bsp = bsp_new(&f, 64, 8, 60000, 1000);
    for (int i = 0; i < 20; i++) tel_bsp_submit(bsp, id_span(i));
    assert_int_equal(tel_bsp_flush(bsp, 2000), 0);
    tel_bsp_stats_t st;
    tel_bsp_stats(bsp, &st);
    assert_int_equal(st.failed, 20);
    assert_int_equal(st.exported, 0);
    assert_int_equal(st.batches, 3);
    tel_bsp_destroy(&bsp, 1000, NULL);
    ids_released_once(20);
}

typedef struct producer {
    tel_bsp_t *bsp;
    int first, n;
    long refused;
} producer_t;

static void *producer_main(void *arg) {
    producer_t *p = arg;
    for (int i = p->first; i < p->first + p->n; i++) {
        if (!tel_bsp_submit(p->bsp, id_span(i))) p->refused++;
        if (i % 64 == 0) usleep(50); /* let the exporter in: takes interleave with submits */
    }
    return NULL;
}

/* Four producers against a small queue: every span exported or dropped, each given back once. */
static void test_bsp_concurrent_producers(void **state) {
    ids_reset();
    fake_t f = {0};
    tel_bsp_t *bsp = bsp_new(&f, 256, 32, 5, 1000);
    producer_t p[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        p[i] = (producer_t){.bsp = bsp, .first = i * (N_IDS / 4), .n = N_IDS / 4};
        assert_int_equal(pthread_create(&t[i], NULL, producer_main, &p[i]), 0);
    }
    long refused = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        refused += p[i].refused;
    }
    assert_int_equal(tel_bsp_flush(bsp, 5000), 0);
    tel_bsp_stats_t st;
    tel_bsp_stats(bsp, &st);
    print_message("4 producers, %d spans: %llu exported, %llu dropped, %llu batches\n", N_IDS,
                  (unsigned long long)st.exported, (unsigned long long)st.dropped,
                  (unsigned long long)st.batches);
    assert_int_equal(st.dropped, refused);
    assert_int_equal(st.exported + st.dropped, N_IDS);
    assert_int_equal(f.spans, (long)st.exported);
    assert_true(f.max_batch <= 32);
    tel_bsp_destroy(&bsp, 1000, NULL);
    ids_released_once(N_IDS);
}

static void test_bsp_create_errors(void **state) {
    tel_bsp_t *bsp = (tel_bsp_t *)1;
    char err[LT_ERR_LEN];
    tel_bsp_config_t cfg = {16, 32, 100, 100};
    assert_int_equal(tel_bsp_create(&bsp, &cfg, fake_export, NULL, id_release, NULL, err),
                     LT_ERR_INVAL);
    assert_null(bsp);
    cfg.max_export_batch_size = 4;
    assert_int_equal(tel_bsp_create(&bsp, &cfg, NULL, NULL, id_release, NULL, err), LT_ERR_INVAL);
}

/* ---- the exporter without a receiver ---- */

/* A loopback TCP port: listening (and never accepting) when listen_too, else closed. */
static int tcp_port(bool listen_too, int *fd_out) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    if (listen_too)
        assert_int_equal(listen(fd, 16), 0);
    else
        close(fd), fd = -1;
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static tel_otlp_t *exporter_to(const char *protocol, int port, int timeout_ms) {
    char url[128], ms[16];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    snprintf(ms, sizeof ms, "%d", timeout_ms);
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol, 1);
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", ms, 1);
    tel_otlp_config_t cfg;
    cfg_ok(&cfg, url);
    static tel_resource_t res;
    tel_resource_set_str(&res, "service.name", "test_otlp");
    tel_otlp_t *o;
    char err[LT_ERR_LEN];
    assert_int_equal(tel_otlp_create(&o, &cfg, &res, err), 0);
    return o;
}

static void test_export_dead_port(void **state) {
    static tel_span_t sp;
    full_span(&sp);
    const tel_span_t *spans[] = {&sp};
    const char *protos[] = {"grpc", "http/protobuf"};
    for (int i = 0; i < 2; i++) {
        int fd;
        int port = tcp_port(false, &fd);
        tel_otlp_t *o = exporter_to(protos[i], port, 800);
        _Atomic uint64_t dl = UINT64_MAX;
        tel_export_stats_t st = {0};
        uint64_t t0 = lt_now_ns();
        assert_int_equal(tel_otlp_export(o, spans, 1, &dl, &st), LT_ERR_IO);
        uint64_t took = lt_now_ns() - t0;
        print_message("%s, refused: %u requests in %.0f ms\n", protos[i], st.requests,
                      (double)took / 1e6);
        assert_true(st.requests >= 2); /* connection refused is retried... */
        assert_int_equal(st.retries, st.requests - 1);
        assert_true(took < 900 * MS); /* ...within the export timeout */
        tel_otlp_destroy(&o);
        assert_null(o);
    }
}

typedef struct lowerer {
    _Atomic uint64_t *dl;
    int after_ms;
    uint64_t at; /* when it moved the deadline */
} lowerer_t;

static void *lower_main(void *arg) {
    lowerer_t *l = arg;
    usleep((useconds_t)l->after_ms * 1000);
    l->at = lt_now_ns();
    atomic_store(l->dl, l->at);
    return NULL;
}

/* A listener that never answers: the attempt runs until the deadline, which another thread
 * brings forward (shutdown), and the export gives up within a slice of it. */
static void test_export_black_hole_deadline(void **state) {
    static tel_span_t sp;
    full_span(&sp);
    const tel_span_t *spans[] = {&sp};
    const char *protos[] = {"grpc", "http/protobuf"};
    for (int i = 0; i < 2; i++) {
        int fd;
        int port = tcp_port(true, &fd);
        tel_otlp_t *o = exporter_to(protos[i], port, 60000);
        _Atomic uint64_t dl = UINT64_MAX;
        lowerer_t l = {&dl, 150, 0};
        pthread_t t;
        pthread_create(&t, NULL, lower_main, &l);
        tel_export_stats_t st = {0};
        uint64_t t0 = lt_now_ns();
        assert_int_equal(tel_otlp_export(o, spans, 1, &dl, &st), LT_ERR_IO);
        uint64_t end = lt_now_ns();
        pthread_join(t, NULL);
        print_message("%s, black hole: gave up %.0f ms after the deadline moved (at %.0f ms)\n",
                      protos[i], (double)(end - l.at) / 1e6, (double)(l.at - t0) / 1e6);
        assert_int_equal(st.requests, 1);                  /* no retry: no time left */
        assert_true(end >= l.at && end - l.at < 200 * MS); /* one 50 ms slice, and slack */
        tel_otlp_destroy(&o);
        close(fd);
    }
}

static void test_otlp_create_errors(void **state) {
    tel_otlp_config_t cfg;
    cfg_ok(&cfg, NULL); /* not enabled */
    tel_resource_t res = {0};
    tel_otlp_t *o = (tel_otlp_t *)1;
    char err[LT_ERR_LEN];
    assert_int_equal(tel_otlp_create(&o, &cfg, &res, err), LT_ERR_INVAL);
    assert_null(o);
    tel_otlp_destroy(NULL);
    tel_otlp_destroy(&o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_config_defaults, clear_env),
        cmocka_unit_test_setup(test_config_grpc_endpoints, clear_env),
        cmocka_unit_test_setup(test_config_endpoint_precedence, clear_env),
        cmocka_unit_test_setup(test_config_http_endpoints, clear_env),
        cmocka_unit_test_setup(test_config_protocol, clear_env),
        cmocka_unit_test_setup(test_config_headers, clear_env),
        cmocka_unit_test_setup(test_config_timeout_insecure_certificate, clear_env),
        cmocka_unit_test_setup(test_bsp_config, clear_env),
        cmocka_unit_test(test_encode_round_trip),
        cmocka_unit_test(test_encode_full_capacity),
        cmocka_unit_test(test_bsp_batches_and_flush),
        cmocka_unit_test(test_bsp_schedule_delay),
        cmocka_unit_test(test_bsp_queue_full),
        cmocka_unit_test(test_bsp_destroy_while_hanging),
        cmocka_unit_test(test_bsp_failing_exports),
        cmocka_unit_test(test_bsp_concurrent_producers),
        cmocka_unit_test(test_bsp_create_errors),
        cmocka_unit_test_setup(test_export_dead_port, clear_env),
        cmocka_unit_test_setup(test_export_black_hole_deadline, clear_env),
        cmocka_unit_test_setup(test_otlp_create_errors, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
