/*
 * otlp.h — the OTLP trace exporter: configuration from --otlp-traces-endpoint and the standard
 * OTEL_EXPORTER_OTLP_* variables, the encoder of a batch of spans into an
 * ExportTraceServiceRequest (protobuf-c, from telemetry/proto), and the two transports over
 * libcurl: gRPC (HTTP/2, TraceService/Export) and http/protobuf (POST /v1/traces), with the
 * OTLP specification's retries (exponential back-off with jitter, Retry-After, the retryable
 * HTTP statuses and gRPC codes), every export bounded by its deadline.
 *
 * The exporter is the batch span processor's export function (bsp.h): tel_otlp_export has the
 * tel_export_fn shape, with the tel_otlp_t as user pointer.
 *
 *     tel_otlp_config_t cfg;
 *     if (tel_otlp_config_from_env(&cfg, args->otlp_traces_endpoint, err)) fail(err);
 *     if (cfg.enabled) {
 *         tel_otlp_create(&otlp, &cfg, &resource, err);
 *         tel_bsp_create(&bsp, &bsp_cfg, tel_otlp_export, otlp, release, pool, err);
 *     }
 *     ...
 *     tel_bsp_destroy(&bsp, 5000, &final);  // first: it still calls the exporter
 *     tel_otlp_destroy(&otlp);
 *
 * Thread safety: configuration and encoding are pure (any thread). A tel_otlp_t is used by one
 * thread at a time: the processor's exporter thread. Nothing here is on the hot path; the
 * exporter allocates per export (the message tree and the encoded bytes).
 * Logging: a partial success (LT_WARN: rejected spans and the receiver's message); failed
 * exports (LT_WARN, at most one line per 10 s, with the number of exports failed meanwhile).
 */
#ifndef TEL_OTLP_H
#define TEL_OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bsp.h"
#include "span.h"

/* ---- configuration ---- */

typedef enum tel_otlp_protocol {
    TEL_OTLP_GRPC = 0,      /* "grpc": the default, as in vLLM */
    TEL_OTLP_HTTP_PROTOBUF, /* "http/protobuf" */
} tel_otlp_protocol_t;

#define TEL_OTLP_MAX_HEADERS 16
#define TEL_OTLP_URL_MAX     1024

typedef struct tel_otlp_header {
    char name[128];  /* a token (RFC 9110), lowercase for gRPC */
    char value[896]; /* URL-decoded, no control characters */
} tel_otlp_header_t;

typedef struct tel_otlp_config {
    bool enabled; /* an endpoint was given (flag or environment): export */
    tel_otlp_protocol_t protocol;
    /* Where the requests go, a full URL: for http/protobuf the traces URL as given (or the
     * base endpoint + "/v1/traces"); for gRPC scheme://host:port + the method's path. */
    char url[TEL_OTLP_URL_MAX];
    bool tls;       /* https (gRPC: https:// or no/other scheme without INSECURE=true) */
    int timeout_ms; /* one export, retries included (_TIMEOUT, 10000) */
    int n_headers;
    tel_otlp_header_t headers[TEL_OTLP_MAX_HEADERS];
    char ca_file[512]; /* _CERTIFICATE: PEM file of the CAs to trust ("": the system's) */
} tel_otlp_config_t;

/* Reads the configuration. flag_endpoint (--otlp-traces-endpoint, may be NULL or "") wins over
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, which wins over OTEL_EXPORTER_OTLP_ENDPOINT (a base URL:
 * http/protobuf appends "/v1/traces"). For each of _PROTOCOL ("grpc", "http/protobuf"), _HEADERS
 * ("k=v,k2=v2", percent-encoded values), _TIMEOUT (ms), _INSECURE ("true"/"false") and
 * _CERTIFICATE the OTEL_EXPORTER_OTLP_TRACES_ variable wins over the OTEL_EXPORTER_OTLP_ one. An
 * empty variable counts as unset. No endpoint anywhere: 0 with cfg->enabled false (the other
 * variables are still checked). LT_ERR_INVAL naming the variable and the value for anything
 * malformed (unknown protocol, a URL that is not http(s) where one is needed, a header without
 * '=' or with a bad name or escape, a timeout that is not a positive whole number, a boolean
 * that is neither true nor false); LT_ERR_UNSUPPORTED for "http/json". */
int tel_otlp_config_from_env(tel_otlp_config_t *cfg, const char *flag_endpoint, char *err);

const char *tel_otlp_protocol_name(tel_otlp_protocol_t p);

/* ---- encoding ---- */

/* Encodes spans[0, n) of one resource into an ExportTraceServiceRequest: one ResourceSpans with
 * the resource, one ScopeSpans with the scope {"lantern", lt_version()}. Ids as bytes
 * (parent_span_id empty for a root), attributes as KeyValue with the AnyValue of their type,
 * events, links (with their W3C flags), status, kind, flags (the W3C trace flags) and the
 * dropped counts. Strings that are not valid UTF-8 (or hold a NUL) are repaired with U+FFFD, as
 * receivers refuse invalid UTF-8 in protobuf strings.
 *
 * *out (malloc'd, the caller frees) receives headroom free bytes and then the message; *len
 * the message's length (headroom excluded): gRPC puts its 5-byte frame header in front. */
int tel_otlp_encode(const tel_span_t *const *spans, size_t n, const tel_resource_t *res,
                    size_t headroom, uint8_t **out, size_t *len, char *err);

/* ---- the exporter ---- */

typedef struct tel_otlp tel_otlp_t;

/* Copies the configuration and the resource. Refuses a configuration that is not enabled. */
int tel_otlp_create(tel_otlp_t **out, const tel_otlp_config_t *cfg, const tel_resource_t *res,
                    char *err);
/* Frees the exporter (closing its connections); sets *otlp_p to NULL. */
void tel_otlp_destroy(tel_otlp_t **otlp_p);

/* A tel_export_fn (bsp.h), user = the tel_otlp_t: encodes and sends one batch, retrying what
 * the specification calls retryable until min(*deadline_ns, start + timeout_ms). 0 when the
 * receiver accepted the request (partial success included, logged), LT_ERR_IO when it failed
 * (connection, timeout, a non-retryable status, retries out of time), LT_ERR_NOMEM. */
int tel_otlp_export(void *otlp, const tel_span_t *const *spans, size_t n,
                    const _Atomic uint64_t *deadline_ns, tel_export_stats_t *st);

#endif
