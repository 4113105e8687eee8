/*
 * core_priv.h — the engine-core process's state, shared by core.c (the process: channels,
 * workers, the step loop) and core_spans.c (its spans). Not a public header.
 */
#ifndef ENG_CORE_PRIV_H
#define ENG_CORE_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "args.h"
#include "engine.h"
#include "ipc.h"
#include "metrics.h"
#include "msg.h"
#include "proc.h"
#include "trace.h"

#define CORE_SPANS_HELD 16
#define CORE_MAX_TP     64
/* send_step: the workers have not taken a step within the watchdog timeout */
#define CORE_STALLED     (-101)
#define CORE_RING_CHUNKS 8
#define CORE_RING_CHUNK  (256 * 1024)
/* wait_workers: a worker reported a start-up error (text in err), to pass on to the frontend */
#define CORE_CHILD_FAILED (-100)

/* What the engine keeps per request besides the scheduler's state: what rank 0 needs when the
 * sequence first reaches it. */
typedef struct core_req {
    struct core_req *prev, *next; /* every live request, for aborts and shutdown */
    uint64_t id;
    ipc_ident_t ident; /* from the ADD envelope: the id every log line names it by */
    ipc_params_t params;
    int32_t *prompt;
    int n_prompt;
    /* spans (core_spans.c): children of the frontend's llm_request */
    tel_ctx_t parent;           /* the ADD envelope's trace context */
    uint64_t arrival_unix_ns;   /* wall clock at ADD */
    uint64_t preempted_unix_ns; /* wall clock of its last preemption, 0 when running */
    bool scheduled;             /* left the waiting queue once */
    uint64_t last_token_ns;     /* its last token (inter-token latency), monotonic */
    tel_span_t *decode;         /* open from its first decode step to its end */
    int decode_steps, prefill_chunks;
    tel_span_t *held[CORE_SPANS_HELD]; /* ended spans of an unsampled trace, kept or dropped at
                                          the end (tail keeping) */
    int n_held;
} core_req_t;

typedef struct core {
    /* arguments */
    ipc_engine_args_t args;
    const char *in_ep, *out_ep;
    int tree_pid;
    /* children and channels */
    lt_child_t workers[CORE_MAX_TP];
    ipc_ctx_t *ctx;
    ipc_sock_t *in, *out, *res;
    ipc_ring_t *ring;
    ipc_allreduce_t *ar;
    char ring_name[128], ar_name[128], res_ep[256];
    /* state */
    eng_sched_t *sched;
    ipc_hello_t info;
    ipc_writer_t wr;
    ipc_envelope_t env;
    ipc_add_t add;
    ipc_step_t step;
    ipc_result_t result;
    ipc_output_t output;
    int out_cap;
    int32_t *sampled;
    bool in_flight;
    eng_plan_t plan;
    uint64_t step_started_ns;
    core_req_t *reqs;    /* live requests (head of a doubly-linked list) */
    core_req_t *retired; /* finished ones the scheduler still holds: freed after its next step */
    /* spans of the step in flight (core_spans.c) */
    tel_span_t *step_span;    /* --collect-detailed-traces engine: one per step */
    tel_span_t **chunk_spans; /* (max_num_seqs) prefill chunks of the step, by plan index */
    char step_traceparent[TEL_TRACEPARENT_LEN + 1]; /* the STEP envelope's, "" without */
    uint64_t trace_slow_ns;
    /* metrics (core_metrics.c): the tree's shared region, NULL if it could not be attached */
    tel_metrics_shm_t *metrics;
    tel_bounds_t tok_bounds;     /* token-count buckets (1, 2, 5, ... up to max_model_len) */
    uint64_t fault_corrupt_step; /* LANTERN_FAULT_CORRUPT_STEP: a test's fault injection */
} core_t;

/* ---- core_spans.c ---- */

/* A request arrived (its parent context from the ADD envelope). */
void core_spans_add(core_t *c, core_req_t *r);
/* A step was planned: its step span (detailed), each request's queue / preempted spans as they
 * end, prefill chunk spans and decode spans as they start; fills c->step_traceparent. */
void core_spans_step(core_t *c, uint64_t now_unix_ns);
/* The step's results were applied: chunk spans and the step span end; finished requests' spans
 * end and are kept or dropped. */
void core_spans_result(core_t *c, const eng_outputs_t *outs, uint64_t now_unix_ns);
/* A request ends outside a result (abort, failure): its open spans end, kept (an error). */
void core_spans_finish(core_t *c, core_req_t *r, const char *why, bool error);
/* Allocates the per-step arrays (start-up). */
int core_spans_init(core_t *c, char *err);
void core_spans_fini(core_t *c);

/* ---- core_metrics.c ---- */

int core_metrics_attach(core_t *c, char *err);
/* The engine is ready: cache configuration, buckets. */
void core_metrics_ready(core_t *c);
/* The scheduler's gauges and counters, this process's span counts. */
void core_metrics_gauges(core_t *c);
void core_metrics_step_sent(core_t *c, uint64_t now_ns);
void core_metrics_result(core_t *c, const eng_outputs_t *outs, uint64_t now_ns);
/* A request ends outside a result: aborted or failed. */
void core_metrics_finish(core_t *c, core_req_t *r, bool error);

#endif
