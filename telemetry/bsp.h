/*
 * bsp.h — the batch span processor: finished spans go into a bounded lock-free queue from any
 * thread, and one background thread hands them in batches to an export function (the OTLP
 * exporter, otlp.h, or a test's fake), with OpenTelemetry's BatchSpanProcessor semantics:
 *
 *   - a queue of max_queue_size spans; a span submitted to a full queue is dropped (counted), so
 *     a slow, black-holing or dead collector costs spans, never serving time;
 *   - an export when max_export_batch_size spans are waiting, or schedule_delay_ms after the
 *     previous export, whichever comes first, of at most max_export_batch_size spans;
 *   - each export bounded by export_timeout_ms (the export function's retries included);
 *   - flush (export everything queued now) and shutdown (flush with a deadline, then stop).
 *
 * Defaults 2048 / 512 / 5000 ms / 30000 ms; OTEL_BSP_MAX_QUEUE_SIZE,
 * OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_SCHEDULE_DELAY and OTEL_BSP_EXPORT_TIMEOUT override
 * them (tel_bsp_config_from_env).
 *
 * Ownership: tel_bsp_submit hands the span over. The processor gives every span back, exactly
 * once, through the release callback its creator supplied (the recorder's pool): from the
 * exporter thread once the span was exported or failed, from tel_bsp_submit itself when the
 * queue was full, from tel_bsp_destroy for what was left. The release callback must therefore be
 * safe to call from any of those threads without blocking.
 *
 * Thread safety: tel_bsp_submit and tel_bsp_stats may be called from any thread at any time
 * between create and destroy; tel_bsp_flush from any thread but the exporter's (not from inside
 * the export or release callbacks); tel_bsp_destroy once, after every submitter has stopped.
 *
 * Hot path: tel_bsp_submit (engine and worker step loops, HTTP threads) never blocks, never
 * allocates and takes no lock: a CAS on the queue's head, a store into the slot, and — once per
 * exporter wake-up, when a full batch is waiting — one non-blocking eventfd write.
 */
#ifndef TEL_BSP_H
#define TEL_BSP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "span.h"

/* ---- configuration ---- */

typedef struct tel_bsp_config {
    int max_queue_size;        /* spans waiting at most (OTEL_BSP_MAX_QUEUE_SIZE, 2048) */
    int max_export_batch_size; /* spans per export at most, <= max_queue_size (512) */
    int schedule_delay_ms;     /* between two exports at most (OTEL_BSP_SCHEDULE_DELAY, 5000) */
    int export_timeout_ms;     /* one export, retries included (OTEL_BSP_EXPORT_TIMEOUT, 30000) */
} tel_bsp_config_t;

/* OpenTelemetry's defaults. */
void tel_bsp_config_default(tel_bsp_config_t *cfg);
/* The defaults overridden by the OTEL_BSP_* variables (an empty variable counts as unset).
 * LT_ERR_INVAL naming the variable for a value that is not a whole number in range, or a batch
 * size over the queue size. */
int tel_bsp_config_from_env(tel_bsp_config_t *cfg, char *err);

/* ---- what the processor calls ---- */

/* Filled by an export function: HTTP/gRPC requests sent (first tries and retries) and retries. */
typedef struct tel_export_stats {
    uint32_t requests;
    uint32_t retries;
} tel_export_stats_t;

/* Sends spans[0, n) (borrowed for the call). Returns 0 when the receiver accepted the batch (a
 * partial success included: the receiver's rejections are its business, and are not retried),
 * a negative LT_ERR_* when it did not, after the retries the deadline allowed. Called from the
 * exporter thread only, one call at a time.
 *
 * *deadline_ns is a lt_now_ns() time the call must return by. Another thread may bring it
 * forward while the call runs (shutdown): the function re-reads it at least every 50 ms. */
typedef int (*tel_export_fn)(void *user, const tel_span_t *const *spans, size_t n,
                             const _Atomic uint64_t *deadline_ns, tel_export_stats_t *st);

/* Gives a span back to its creator. */
typedef void (*tel_release_fn)(tel_span_t *sp, void *user);

/* ---- the processor ---- */

typedef struct tel_bsp tel_bsp_t;

/* Starts the exporter thread (named "lt-bsp", all signals blocked). The queue and the batch
 * array are allocated here, once. */
int tel_bsp_create(tel_bsp_t **out, const tel_bsp_config_t *cfg, tel_export_fn export_fn,
                   void *export_user, tel_release_fn release, void *release_user, char *err);

/* Queues a finished span for export and hands it over. Returns false when the queue was full:
 * the span was dropped (counted) and already given back through release. HOT */
bool tel_bsp_submit(tel_bsp_t *bsp, tel_span_t *sp);

/* tel_bsp_submit in the shape of the recorder's submit callback (trace.h's tel_submit_fn), with
 * the processor as user pointer. HOT */
void tel_bsp_submit_cb(tel_span_t *sp, void *bsp);

/* Exports everything queued before the call and waits until those exports have finished
 * (succeeded or failed: the counters say which), at most timeout_ms. 0 when done in time,
 * LT_ERR_IO when the time ran out first (the exports go on in the background). */
int tel_bsp_flush(tel_bsp_t *bsp, int timeout_ms);

/* Shutdown: exports what is queued, each export cut short at the deadline (now + timeout_ms),
 * stops the exporter thread, gives every span still queued back (counted as failed), frees the
 * processor and sets *bsp_p to NULL. Returns by the deadline plus the time the export function
 * takes to notice it (50 ms). The final counters go to *final when it is not NULL (for the
 * process's last log line). NULL and *bsp_p NULL are no-ops. */
struct tel_bsp_stats;
void tel_bsp_destroy(tel_bsp_t **bsp_p, int timeout_ms, struct tel_bsp_stats *final);

/* ---- counters ---- */

/* Monotonic totals since create, except queued. Each field is read atomically; the set is not
 * a snapshot (a span moves from queued to exported between two reads). */
typedef struct tel_bsp_stats {
    uint64_t queued;   /* spans in the queue now */
    uint64_t dropped;  /* submits refused: the queue was full */
    uint64_t exported; /* spans a receiver accepted */
    uint64_t failed;   /* spans not exported: export failed after retries, or shutdown's deadline */
    uint64_t requests; /* export requests sent, retries included */
    uint64_t retries;  /* of those, retries */
    uint64_t batches;  /* calls of the export function */
} tel_bsp_stats_t;

void tel_bsp_stats(const tel_bsp_t *bsp, tel_bsp_stats_t *st);

#endif
