/*
 * lantern.h — liblantern: the frontend side of the engine as a C library. lantern_create()
 * starts the engine-core process (which starts the tensor-parallel workers); requests go in as
 * token ids with sampling parameters and an optional W3C trace context; outputs stream back per
 * request. `lantern generate` and the HTTP server are built on it, and so can any embedder.
 *
 * Thread safety: every function may be called from any thread, concurrently; each request's
 * outputs are read by one thread at a time. A background thread receives the engine's outputs
 * and routes them to their requests; it also watches the engine process: if the engine dies,
 * every pending request ends with an error and lantern_alive() turns false.
 * Ownership: lantern_destroy() stops the process tree and removes its shared memory and socket
 * files; lantern_create() first removes those of trees that crashed (ipc_cleanup_stale: pids
 * that no longer exist) and makes sure the open-file limit leaves the tree enough descriptors
 * (raising the soft limit when the hard one allows, else an error naming `ulimit -n`).
 */
#ifndef LANTERN_H
#define LANTERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "args.h"
#include "msg.h"

/* The engine's arguments are ipc/args.h's: one struct and one set of defaults for every command
 * and process. */
typedef ipc_engine_args_t lantern_engine_args_t;

static inline void lantern_engine_args_default(lantern_engine_args_t *a) {
    ipc_engine_args_defaults(a);
}

typedef struct lantern lantern_t;

/* Starts the engine and waits until it is ready (model loaded in every worker). The arguments
 * are resolved (ipc_engine_args_resolve) and passed to the engine, and by it to every worker,
 * as command-line flags. */
int lantern_create(const lantern_engine_args_t *args, lantern_t **out, char *err);
void lantern_destroy(lantern_t **l);

typedef struct lantern_model_info {
    int vocab_size, eos_id, bos_id, max_model_len, num_kv_blocks, block_size;
} lantern_model_info_t;
void lantern_model_info(const lantern_t *l, lantern_model_info_t *info);

/* The tree's shared metrics region (telemetry/metrics.h), written by the engine and the workers:
 * read it at any time, from any thread, without calling into the engine. NULL before create. */
struct tel_metrics_shm;
const struct tel_metrics_shm *lantern_metrics(const lantern_t *l);

/* false once the engine has died. */
bool lantern_alive(const lantern_t *l);

/* Output back-pressure. A request's outputs wait in liblantern until its reader takes them
 * (lantern_next); a reader that stops reading (an HTTP client that does not read its stream)
 * would let them, and the engine's work for it, grow without bound. Requests may share a group
 * (an HTTP call's n choices): when the bytes waiting for one group (or for a request without a
 * group) exceed `per_group`, or those of every request exceed `total` (then the group with the
 * largest backlog goes first), the group's requests are aborted in the engine, what waited for
 * them is dropped, and each ends with LANTERN_FINISH_ERROR and a message saying why, which the
 * reader gets if it ever reads; the event is logged with the group's name. 0: no limit (the
 * default: `lantern serve` sets its own, --max-undelivered-bytes[-per-request]). Bytes are what
 * the queued outputs occupy in memory. Any thread, any time. */
void lantern_set_output_limits(lantern_t *l, size_t per_group, size_t total);

/* A group of requests for the limits above: caller storage, zero-initialised, alive until every
 * request submitted with it has been read to its end or released. Its fields are liblantern's
 * (under its lock) except `name`. */
typedef struct lantern_group {
    const char *name; /* the caller's: names the group in the log line (NULL: the request id) */
    size_t queued_bytes;
    bool tripped;
} lantern_group_t;

/* One request. Its parameters are ipc/msg.h's ipc_params_t: resolved by the caller, checked
 * with ipc_params_check at submit, carried unchanged to the engine and the sampler. */
typedef struct lantern_request {
    const int32_t *prompt;
    int n_prompt;
    ipc_params_t params;
    /* Identity: the request id every process's logs and dumps name it by (1..IPC_REQUEST_ID_MAX
     * bytes without control characters; NULL: one is made up), and the optional W3C trace
     * context of the caller's span (an invalid traceparent is refused). */
    const char *request_id;
    const char *traceparent;
    const char *tracestate;
    /* Optional: called from liblantern's receiver thread each time new output for this request
     * is queued (tokens, its finish, or its failure), so an event loop can wake the request's
     * consumer instead of blocking in lantern_next. It runs under liblantern's lock: it must be
     * quick and must not call liblantern. Never called after lantern_release(id) returns. */
    void (*notify)(void *arg);
    void *notify_arg;
    /* Optional: the group it counts in for lantern_set_output_limits (NULL: on its own). */
    lantern_group_t *group;
} lantern_request_t;

/* ipc_params_defaults, no identity, no notify. */
void lantern_request_default(lantern_request_t *r);

/* Queues a request; *id identifies it afterwards. Errors: invalid arguments (the message names
 * the parameter), a dead engine. */
int lantern_submit(lantern_t *l, const lantern_request_t *r, uint64_t *id, char *err);

typedef enum lantern_finish {
    LANTERN_FINISH_NONE = 0,
    LANTERN_FINISH_STOP,
    LANTERN_FINISH_LENGTH,
    LANTERN_FINISH_ABORT,
    LANTERN_FINISH_ERROR,
} lantern_finish_t;

#define LANTERN_MAX_LOGPROBS 20

typedef struct lantern_token {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_ids[LANTERN_MAX_LOGPROBS];
    float top_logprobs[LANTERN_MAX_LOGPROBS];
} lantern_token_t;

typedef struct lantern_output {
    int n_tokens;            /* new tokens since the last call */
    lantern_token_t *tokens; /* caller storage of tokens_cap entries */
    int tokens_cap;
    lantern_finish_t finish; /* set on the last output of a request */
    int32_t stop_token;
    char error[256];
    /* set with finish: measured in the engine */
    int n_prompt, n_cached_tokens, n_preemptions;
    double queue_s, prefill_s, decode_s;
} lantern_output_t;

/* Waits up to timeout_ms (< 0: forever) for new tokens or the end of request id; returns 0 with
 * out filled, 1 (LANTERN_AGAIN) on timeout, or a negative error (unknown id). After an output
 * with finish != NONE the request is forgotten. */
#define LANTERN_AGAIN 1
int lantern_next(lantern_t *l, uint64_t id, lantern_output_t *out, int timeout_ms, char *err);

/* Cancels a request: its blocks are freed, its last output has finish ABORT. */
int lantern_abort(lantern_t *l, uint64_t id);

/* Forgets a request the caller no longer reads (a client went away): aborts it in the engine
 * when it has not finished, drops its queued outputs, and guarantees its notify hook is not
 * called again. Unknown (already finished and read) ids are fine. */
void lantern_release(lantern_t *l, uint64_t id);

typedef struct lantern_stats {
    int running, waiting, pending_requests;
    int max_running; /* largest batch (sequences in one step) the engine has reported */
    float kv_usage;
    uint64_t prefix_queries, prefix_hits, preemptions, steps;
    uint64_t undelivered_bytes;  /* outputs waiting for their readers now, bytes */
    uint64_t undelivered_aborts; /* groups aborted because their reader did not read */
} lantern_stats_t;
void lantern_stats(lantern_t *l, lantern_stats_t *st);

/* SIGUSR1 for the whole tree: liblantern logs its pending requests (with their ids) and signals
 * the engine, which dumps and signals its workers. With the engine argument dump_dir set, this
 * process's state is also written as JSON (frontend-<pid>.json), with the items of `extra` (a
 * cJSON object the caller adds, e.g. its HTTP calls; taken over, may be NULL) beside liblantern's
 * own. */
struct cJSON;
void lantern_dump(lantern_t *l, struct cJSON *extra);

#endif
