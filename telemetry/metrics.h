/*
 * metrics.h — lantern's metrics: lock-free histograms with exemplars, the shared-memory region
 * the engine and every worker update in place and the frontend reads at scrape time (no
 * per-scrape IPC, no lock on any step path), and the writers of the Prometheus text and
 * OpenMetrics formats.
 *
 * Where each figure is recorded (DESIGN.md §5: where the event is observed, intervals from one
 * process's monotonic clock): the engine records the scheduler's gauges and counters and the
 * request histograms it can time (queue, prefill, decode, inference, TTFT, inter-token latency);
 * each worker its own step, forward and all-reduce times; the frontend what it alone sees (e2e
 * latency, tokenization, n) in its own memory.
 *
 * The region: "lantern-<tree pid>-metrics" in /dev/shm, created by liblantern before the engine
 * starts, sized for the tree's tensor-parallel size; it opens with {magic, version, size}, holds
 * no pointers, and every field is an atomic. One writer per field (the engine's thread, or one
 * worker's): counters and gauges are relaxed stores and adds; a histogram's buckets, count and
 * sum are relaxed atomics (a scrape may see an observation's bucket before its sum: harmless), and
 * each bucket's exemplar is guarded by a sequence counter (seqlock), so a reader never sees a
 * torn trace id.
 *
 * Thread safety: as above; the writers are the owner of each section. Hot path:
 * tel_hist_observe (a handful of relaxed atomics), the gauge and counter helpers.
 */
#ifndef TEL_METRICS_H
#define TEL_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* ---- histograms ---- */

#define TEL_HIST_MAX_BOUNDS 32

typedef struct tel_exemplar {
    _Atomic uint32_t seq; /* odd while being written */
    _Atomic uint64_t trace_hi, trace_lo, span_id;
    _Atomic uint64_t value_bits; /* double */
    _Atomic uint64_t unix_ms;
} tel_exemplar_t;

/* Counts per bucket (not cumulative: the writer cumulates), +Inf last. */
typedef struct tel_hist {
    _Atomic uint64_t bucket[TEL_HIST_MAX_BOUNDS + 1];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_bits; /* double, updated with a compare-and-swap (several writers OK) */
    tel_exemplar_t exemplar[TEL_HIST_MAX_BOUNDS + 1];
} tel_hist_t;

/* Bucket bounds (upper, inclusive), ascending; shared by every process (the same binary). */
typedef struct tel_bounds {
    int n;
    double le[TEL_HIST_MAX_BOUNDS];
} tel_bounds_t;

/* vLLM's bucket sets. */
extern const tel_bounds_t TEL_B_TTFT;          /* 0.001 .. 2560 s */
extern const tel_bounds_t TEL_B_ITL;           /* 0.01 .. 80 s */
extern const tel_bounds_t TEL_B_LATENCY;       /* 0.3 .. 7680 s: e2e, queue, prefill, decode, ... */
extern const tel_bounds_t TEL_B_PREFILL_TOKEN; /* 0.001 .. 1 s per prompt token */
extern const tel_bounds_t TEL_B_ITERATION;     /* 1 .. 16384 tokens per step */
extern const tel_bounds_t TEL_B_N;             /* 1, 2, 5, 10, 20 */
/* lantern's own: step, forward and all-reduce times (10 us .. 60 s), tokenization (1 us .. 1 s). */
extern const tel_bounds_t TEL_B_STEP;
extern const tel_bounds_t TEL_B_FAST;
/* vLLM's build_1_2_5_buckets(max): 1, 2, 5, 10, 20, 50, ... up to max (token counts). */
void tel_bounds_125(tel_bounds_t *b, int64_t max);

/* Records v. trace (16 bytes) and span (8) may be NULL: no exemplar. HOT */
void tel_hist_observe(tel_hist_t *h, const tel_bounds_t *b, double v, const uint8_t *trace,
                      const uint8_t *span);

/* ---- the shared region ---- */

#define TEL_METRICS_MAGIC   0x4c544d45u /* "LTME" */
#define TEL_METRICS_VERSION 1
#define TEL_MAX_RANKS       64

/* Spans of one process (copied from its batch processor and recorder now and then). */
typedef struct tel_span_counts {
    _Atomic uint64_t exported, dropped, failed, queued;
    _Atomic int32_t enabled;
} tel_span_counts_t;

enum { /* engine histograms */
       TEL_H_TTFT,
       TEL_H_ITL,
       TEL_H_TPOT,
       TEL_H_REQ_TPOT,
       TEL_H_PREFILL_PER_TOKEN,
       TEL_H_QUEUE,
       TEL_H_PREFILL,
       TEL_H_DECODE,
       TEL_H_INFERENCE,
       TEL_H_PROMPT_TOKENS,
       TEL_H_GEN_TOKENS,
       TEL_H_MAX_GEN_TOKENS,
       TEL_H_PARAMS_MAX_TOKENS,
       TEL_H_ITERATION,
       TEL_H_ENGINE_COUNT
};

enum { TEL_FIN_STOP, TEL_FIN_LENGTH, TEL_FIN_ABORT, TEL_FIN_ERROR, TEL_FIN_COUNT };

typedef struct tel_engine_metrics {
    _Atomic int64_t pid;
    _Atomic int64_t running, waiting;
    _Atomic uint64_t kv_usage_bits; /* double, 0..1 */
    _Atomic int64_t kv_used, kv_free, kv_cached, kv_total, block_size;
    _Atomic int32_t prefix_caching;
    _Atomic uint64_t prompt_tokens, generation_tokens, preemptions, prefix_queries, prefix_hits;
    _Atomic uint64_t steps;
    _Atomic uint64_t finished[TEL_FIN_COUNT];
    /* the watchdog: CLOCK_MONOTONIC ns, which every process of the machine shares */
    _Atomic uint64_t step_started_ns; /* 0: no step in flight */
    _Atomic uint64_t last_step_done_ns;
    _Atomic int32_t stalled; /* 1 once the watchdog fired */
    tel_hist_t hist[TEL_H_ENGINE_COUNT];
    tel_span_counts_t spans;
} tel_engine_metrics_t;

enum { TEL_H_STEP, TEL_H_FORWARD, TEL_H_ALLREDUCE, TEL_H_RANK_COUNT };

typedef struct tel_rank_metrics {
    _Atomic int64_t pid;
    _Atomic uint64_t steps;
    tel_hist_t hist[TEL_H_RANK_COUNT];
    tel_span_counts_t spans;
} tel_rank_metrics_t;

typedef struct tel_metrics_shm {
    uint32_t magic, version;
    uint64_t size;
    int32_t n_ranks;
    int32_t max_model_len; /* for the token-count buckets (set by the engine once ready) */
    tel_engine_metrics_t engine;
    tel_rank_metrics_t rank[]; /* (n_ranks) */
} tel_metrics_shm_t;

/* Creates (O_EXCL) and maps the region for n_ranks ranks; attaches (existing, checked magic,
 * version and size) when create is false. */
int tel_metrics_create(const char *name, int n_ranks, tel_metrics_shm_t **out, char *err);
int tel_metrics_attach(const char *name, tel_metrics_shm_t **out, char *err);
void tel_metrics_detach(tel_metrics_shm_t **m);

/* ---- small helpers on the region's fields ---- */

static inline void tel_set_double(_Atomic uint64_t *bits, double v) {
    uint64_t u;
    __builtin_memcpy(&u, &v, sizeof u);
    atomic_store_explicit(bits, u, memory_order_relaxed);
}
static inline double tel_get_double(const _Atomic uint64_t *bits) {
    uint64_t u = atomic_load_explicit((_Atomic uint64_t *)bits, memory_order_relaxed);
    double v;
    __builtin_memcpy(&v, &u, sizeof v);
    return v;
}

/* ---- exposition ---- */

/* One writer for both formats: Prometheus text 0.0.4 (the default) or OpenMetrics 1.0 (when
 * the scraper asks for it), which adds exemplars and the # EOF line. */
typedef struct tel_expo {
    lt_buf_t *b;
    const char *prefix; /* "lantern" or "vllm" */
    bool openmetrics;
    char labels[512]; /* the labels every series carries, e.g. model_name="m",engine="0" */
} tel_expo_t;

/* `extra` labels (may be "" or NULL) are written after the common ones, comma-first free. */
void tel_expo_gauge(tel_expo_t *e, const char *name, const char *help, const char *extra, double v);
/* name without _total: "prompt_tokens" → lantern:prompt_tokens_total */
void tel_expo_counter(tel_expo_t *e, const char *name, const char *help, const char *extra,
                      double v);
/* Further series of the metric just written (same name and type, other labels). */
void tel_expo_more(tel_expo_t *e, const char *name, bool counter, const char *extra, double v);
void tel_expo_hist(tel_expo_t *e, const char *name, const char *help, const char *extra,
                   const tel_hist_t *h, const tel_bounds_t *b);
/* The same histogram's series for another label set (e.g. another rank), without HELP/TYPE. */
void tel_expo_hist_more(tel_expo_t *e, const char *name, const char *extra, const tel_hist_t *h,
                        const tel_bounds_t *b);
/* Ends the exposition (OpenMetrics' # EOF). */
void tel_expo_end(tel_expo_t *e);

/* A process's resident memory (bytes) from /proc/<pid>/statm; -1 if unknown. */
int64_t tel_process_rss(int64_t pid);

#endif
