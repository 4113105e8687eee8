/*
 * trace.h — the span recorder every lantern process uses: W3C trace context parsing and
 * formatting, trace and span ids, the sampler, and a pool of spans that are started, filled and
 * handed to the exporter without allocating.
 *
 * One tracer per process (tel_tracer_init at start-up, after the process became itself: every
 * child of the tree is exec'd, and the id generator is seeded per thread from getrandom() and
 * re-seeded if the process id changes, so no two processes ever share an id sequence). With no
 * exporter configured the tracer is off: tel_span_start returns NULL and costs one branch.
 *
 * Sampling (OTEL_TRACES_SAMPLER / _ARG): always_on, always_off, traceidratio,
 * parentbased_always_on (the default), parentbased_always_off, parentbased_traceidratio. A span
 * of an unsampled trace is still recorded, so that the caller can keep it after all (tail
 * keeping: an error, an abort, a slow request): tel_span_submit(sp, keep) exports it when its
 * trace is sampled or keep is true, and gives it back to the pool otherwise.
 *
 * Thread safety: every function may be called from any thread; a span belongs to one thread at
 * a time until it is submitted. Hot path: tel_span_start / _set_* / _end / _submit take no lock
 * and allocate nothing, except tel_span_add_link growing a span's link array past what it held
 * before (rare: the storage stays with the pooled span for its next use).
 */
#ifndef TEL_TRACE_H
#define TEL_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "span.h"

/* ---- W3C trace context ---- */

#define TEL_TRACEPARENT_LEN 55 /* "00-<32 hex>-<16 hex>-<2 hex>" */

typedef struct tel_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* bit 0: sampled */
    bool valid;
} tel_ctx_t;

/* Strict W3C traceparent: version 00 is exactly 55 characters; a higher version (01..fe) may
 * continue after a '-'; version ff, uppercase hex, all-zero trace or parent ids and anything
 * else malformed are refused (false, *out invalid). */
bool tel_ctx_parse(const char *s, size_t len, tel_ctx_t *out);
/* "00-<trace>-<span>-<flags>" into out (TEL_TRACEPARENT_LEN + 1 bytes). */
void tel_ctx_format(const tel_ctx_t *c, char *out);
static inline bool tel_ctx_sampled(const tel_ctx_t *c) {
    return c->valid && (c->flags & 1);
}
/* The context a span gives its children. */
tel_ctx_t tel_span_ctx(const tel_span_t *sp);
/* 32 lowercase hex of a trace id into out (33 bytes). */
void tel_trace_id_hex(const uint8_t id[16], char *out);

/* ---- ids ---- */

/* Random, never all zero; per-thread generators seeded from getrandom(). */
void tel_new_trace_id(uint8_t id[16]);
void tel_new_span_id(uint8_t id[8]);

/* Wall-clock time, ns since the Unix epoch (span times; intervals use lt_now_ns()). */
uint64_t tel_now_unix_ns(void);

/* ---- the tracer ---- */

typedef enum tel_sampler_kind {
    TEL_SAMPLE_ALWAYS_ON = 0,
    TEL_SAMPLE_ALWAYS_OFF,
    TEL_SAMPLE_RATIO,
    TEL_SAMPLE_PARENT_ON,
    TEL_SAMPLE_PARENT_OFF,
    TEL_SAMPLE_PARENT_RATIO,
} tel_sampler_kind_t;

typedef struct tel_sampler {
    tel_sampler_kind_t kind;
    double ratio; /* traceidratio's argument, [0, 1] */
} tel_sampler_t;

/* OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG; LT_ERR_INVAL naming a malformed value. */
int tel_sampler_from_env(tel_sampler_t *s, char *err);
/* The head decision for a new span: its parent's flag (parentbased_*) or the sampler's own. */
bool tel_sampler_decide(const tel_sampler_t *s, const tel_ctx_t *parent, const uint8_t trace[16]);

/* Where finished spans go: the batch span processor's submit (it gives each span back through
 * tel_span_release once exported, failed or dropped). */
typedef void (*tel_submit_fn)(tel_span_t *sp, void *user);

typedef struct tel_tracer_config {
    bool enabled; /* false: every start returns NULL */
    tel_sampler_t sampler;
    int pool_size; /* spans in flight at most (started, queued, exporting) */
    tel_submit_fn submit;
    void *submit_user;
} tel_tracer_config_t;

int tel_tracer_init(const tel_tracer_config_t *cfg, char *err);
/* Frees the pool; spans still out are lost. After the exporter has stopped. */
void tel_tracer_fini(void);
bool tel_tracer_enabled(void);

typedef struct tel_tracer_stats {
    uint64_t started, submitted, discarded; /* discarded: unsampled and not kept */
    uint64_t pool_empty;                    /* starts refused: every span was in use */
    uint64_t links_dropped;
} tel_tracer_stats_t;
void tel_tracer_stats(tel_tracer_stats_t *st);

/* ---- spans ---- */

/* Starts a span from the pool: a child of parent when it is valid, else the root of a new trace
 * (the sampler decides its flag). NULL when the tracer is off or the pool is empty (counted). */
tel_span_t *tel_span_start(const char *name, tel_kind_t kind, const tel_ctx_t *parent,
                           uint64_t start_unix_ns);
/* Adds a link (to a span of this or another trace); grows the span's link storage if needed. */
void tel_span_add_link(tel_span_t *sp, const tel_ctx_t *to);
/* A timed event with up to TEL_EVENT_ATTRS integer attributes: n pairs of a static key and an
 * int64_t value (cast: the arguments are read as int64_t). t_unix_ns 0: now. */
void tel_span_event(tel_span_t *sp, const char *name, uint64_t t_unix_ns, int n, ...);
void tel_span_set_status(tel_span_t *sp, tel_status_t st, const char *message);
/* Sets the end time and submits: exported when its trace is sampled or keep is true, else given
 * back to the pool. sp may be NULL (tracing off). */
void tel_span_submit(tel_span_t *sp, uint64_t end_unix_ns, bool keep);
/* Gives a span back without exporting it (the exporter calls this once done with a span). */
void tel_span_release(tel_span_t *sp);

#endif
