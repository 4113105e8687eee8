/*
 * msg.h — the payload schemas of lantern's messages, on top of the envelope codec (ipc.h):
 *
 *   ADD     frontend → engine   a request: prompt ids, limits, stop ids, sampling parameters
 *   OUTPUT  engine → frontend   one step's new tokens for every request that got one, finishes,
 *                               errors and per-request phase durations; plus scheduler stats
 *   STEP    engine → workers    a step plan: rows (token, position, sequence), block tables,
 *                               rows to sample, sampling state for sequences new to the workers,
 *                               ids to forget
 *   RESULT  rank 0 → engine     sampled token (and logprobs) per sampled sequence
 *   HELLO   child → parent      ready, with what the parent needs to know
 *
 * Payloads are msgpack positional arrays; long integer vectors travel as ipc_wr_i32_vec bins.
 * Decoders validate every count against the caller's capacities and every enum against its
 * range, and copy into caller-owned storage (no views into the message survive the call).
 * Thread safety: stateless functions over caller-owned objects. HOT: the STEP/RESULT/OUTPUT
 * codecs (no allocation).
 */
#ifndef LT_IPC_MSG_H
#define LT_IPC_MSG_H

#include <stdbool.h>
#include <stdint.h>

#include "ipc.h"

/* ---- sampling parameters ---- */

#define IPC_MAX_LOGIT_BIAS 300
#define IPC_MAX_STOP_IDS   64
#define IPC_MAX_LOGPROBS   20

typedef struct ipc_sampling {
    float temperature, top_p, min_p;
    float repetition_penalty, presence_penalty, frequency_penalty;
    int32_t top_k;
    bool has_seed;
    uint64_t seed;
    int32_t logprobs; /* -1: none */
    int32_t n_logit_bias;
    int32_t logit_bias_ids[IPC_MAX_LOGIT_BIAS];
    float logit_bias[IPC_MAX_LOGIT_BIAS];
} ipc_sampling_t;

void ipc_sampling_defaults(ipc_sampling_t *s);

/* ---- ADD ---- */

typedef struct ipc_add {
    uint64_t id;
    int32_t *prompt; /* caller storage: encode reads n_prompt, decode fills up to prompt_cap */
    int32_t n_prompt, prompt_cap;
    int32_t max_tokens, min_tokens;
    bool ignore_eos;
    int32_t n_stop_ids;
    int32_t stop_ids[IPC_MAX_STOP_IDS];
    ipc_sampling_t sampling;
} ipc_add_t;

int ipc_msg_add_write(ipc_writer_t *w, const ipc_add_t *a, const ipc_trace_ctx_t *trace,
                      const void **data, size_t *len, char *err);
int ipc_msg_add_read(const ipc_envelope_t *env, ipc_add_t *a, char *err);

/* ---- OUTPUT ---- */

typedef enum ipc_finish {
    IPC_FINISH_NONE = 0,
    IPC_FINISH_STOP = 1,
    IPC_FINISH_LENGTH = 2,
    IPC_FINISH_ABORT = 3,
    IPC_FINISH_ERROR = 4, /* text in `error` */
} ipc_finish_t;

typedef struct ipc_out_item {
    uint64_t id;
    int32_t token; /* -1 when the item only reports a finish or an error */
    float logprob;
    int32_t n_top;
    int32_t top_ids[IPC_MAX_LOGPROBS];
    float top_logprobs[IPC_MAX_LOGPROBS];
    int32_t finish;     /* ipc_finish_t */
    int32_t stop_token; /* the stop id that ended it, or -1 */
    int32_t n_prompt, n_cached;
    /* durations measured inside the engine, ns: filled when finished */
    uint64_t queue_ns, prefill_ns, decode_ns;
    int32_t n_preemptions;
    char error[256];
} ipc_out_item_t;

typedef struct ipc_sched_stats {
    int32_t running, waiting;
    int32_t step_seqs; /* sequences in the step this output comes from (its batch size) */
    float kv_usage;
    uint64_t prefix_queries, prefix_hits, preemptions, steps;
} ipc_sched_stats_t;

typedef struct ipc_output {
    uint64_t step_id;
    int32_t n_items;
    ipc_out_item_t *items; /* caller storage, items_cap entries for decode */
    int32_t items_cap;
    ipc_sched_stats_t stats;
} ipc_output_t;

int ipc_msg_output_write(ipc_writer_t *w, const ipc_output_t *o, const void **data, size_t *len,
                         char *err);
int ipc_msg_output_read(const ipc_envelope_t *env, ipc_output_t *o, char *err);

/* ---- STEP ---- */

/* What rank 0 needs of a sequence the first time it sees it. */
typedef struct ipc_step_new {
    uint64_t id;
    ipc_sampling_t sampling;
    int32_t n_prompt; /* prompt ids for the repetition penalty: the first n_prompt of the seq's */
} ipc_step_new_t;

typedef struct ipc_step {
    uint64_t step_id;
    int32_t n_tokens, n_seqs, n_sampled, n_new, n_finished;
    /* caller storage; capacities for decode */
    int32_t *tokens, *pos, *seq_idx;    /* (n_tokens) */
    uint64_t *seq_ids;                  /* (n_seqs) */
    int32_t *table_lens;                /* (n_seqs) */
    int32_t *tables;                    /* (n_seqs, max_blocks) flattened */
    int32_t *sample_rows, *sample_seqs; /* (n_sampled) */
    ipc_step_new_t *news;               /* (n_new) */
    int32_t *new_prompts;               /* (n_new, max_prompt) flattened: prompt ids per new */
    uint64_t *finished;                 /* (n_finished) */
    int32_t cap_tokens, cap_seqs, max_blocks, cap_new, max_prompt, cap_finished;
} ipc_step_t;

int ipc_msg_step_write(ipc_writer_t *w, const ipc_step_t *s, const ipc_trace_ctx_t *trace,
                       const void **data, size_t *len, char *err);
int ipc_msg_step_read(const ipc_envelope_t *env, ipc_step_t *s, char *err);

/* ---- RESULT ---- */

typedef struct ipc_result {
    uint64_t step_id;
    int32_t n;
    ipc_out_item_t *items; /* only id, token, logprob, n_top, top_* are used */
    int32_t cap;
    int32_t error; /* 0, or a worker-side failure (text in err_text) */
    char err_text[256];
} ipc_result_t;

int ipc_msg_result_write(ipc_writer_t *w, const ipc_result_t *r, const void **data, size_t *len,
                         char *err);
int ipc_msg_result_read(const ipc_envelope_t *env, ipc_result_t *r, char *err);

/* ---- HELLO ---- */

typedef struct ipc_hello {
    int32_t role; /* 0 engine, 1 worker */
    int32_t rank, pid;
    int32_t num_blocks, vocab, eos_id, bos_id, max_model_len, block_size;
} ipc_hello_t;

int ipc_msg_hello_write(ipc_writer_t *w, const ipc_hello_t *h, const void **data, size_t *len,
                        char *err);
/* A child's first message: its HELLO, or the ERROR it sent instead of one. For an ERROR, returns
 * IPC_CHILD_ERROR with the child's own text in err (the reason it could not start). */
#define IPC_CHILD_ERROR 3
int ipc_msg_hello_read(const ipc_envelope_t *env, ipc_hello_t *h, char *err);

/* ---- ERROR ---- */

/* A failure report a child sends its parent before exiting (e.g. a model that does not load),
 * so the text reaches the user once instead of as every process's log line. */
int ipc_msg_error_write(ipc_writer_t *w, int code, const char *text, const void **data, size_t *len,
                        char *err);
int ipc_msg_error_read(const ipc_envelope_t *env, int *code, char *text, size_t cap, char *err);

#endif
