/*
 * msg.h — the payload schemas of lantern's messages, on top of the envelope codec (ipc.h):
 *
 *   ADD     frontend → engine   a request: its identity (in the envelope), prompt ids and its
 *                               parameters (ipc_params_t)
 *   ABORT   frontend → engine   cancel a request
 *   OUTPUT  engine → frontend   one step's new tokens for every request that got one, finishes,
 *                               errors and per-request phase durations; plus scheduler stats
 *   STEP    engine → workers    a step plan: rows (token, position, sequence), block tables,
 *                               rows to sample, identity, parameters and prompt of sequences new
 *                               to the workers, ids to forget
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

/* ---- a request's parameters ---- */

#define IPC_MAX_LOGIT_BIAS 300
#define IPC_MAX_STOP_IDS   64
#define IPC_MAX_LOGPROBS   20

/* Defaults (ipc_params_defaults): what a request gets when nobody said otherwise. The frontend
 * resolves OpenAI's and the model's generation config on top of these, once. */
#define IPC_DEF_MAX_TOKENS 16

/* Everything a request asks of the engine besides its prompt: limits, stop token ids and the
 * sampling parameters. Resolved and defaulted once in the frontend, checked once at each trust
 * boundary (ipc_params_check: liblantern's submit, the engine's ADD), then carried unchanged:
 * ADD → the engine's request → the STEP entry that first schedules it → rank 0's sampler. */
typedef struct ipc_params {
    /* limits */
    int32_t max_tokens; /* output tokens at most, >= 0 */
    int32_t min_tokens; /* EOS and stop ids do not end the request before this many outputs */
    bool ignore_eos;
    int32_t n_stop_ids;
    int32_t stop_ids[IPC_MAX_STOP_IDS];
    /* sampling, in the order the sampler applies it (worker/sampler.h) */
    int32_t n_logit_bias;
    int32_t logit_bias_ids[IPC_MAX_LOGIT_BIAS];
    float logit_bias[IPC_MAX_LOGIT_BIAS]; /* added to the logit, [-100, 100] */
    float repetition_penalty;             /* (0, 10]; 1 disables */
    float presence_penalty;               /* [-2, 2] */
    float frequency_penalty;              /* [-2, 2] */
    float temperature;                    /* [0, 2]; 0 is greedy */
    float min_p;                          /* [0, 1]; 0 disables */
    int32_t top_k;                        /* 0 disables */
    float top_p;                          /* (0, 1]; 1 disables */
    bool has_seed;
    uint64_t seed;
    int32_t logprobs; /* -1: none; 0..IPC_MAX_LOGPROBS: the chosen token's and that many more */
} ipc_params_t;

/* Greedy, no filters, no penalties, no logprobs, max_tokens IPC_DEF_MAX_TOKENS. */
void ipc_params_defaults(ipc_params_t *p);

/* The one range check of a request's parameters. vocab > 0 also checks the token ids (stop ids,
 * logit_bias keys) against it. On failure returns LT_ERR_INVAL with the message in err and the
 * OpenAI name of the offending field in *field (may be NULL). */
int ipc_params_check(const ipc_params_t *p, int vocab, const char **field, char *err);

/* ---- a request's identity ---- */

/* Fixed once in the frontend: the request id (the client's X-Request-Id, or one made up) and the
 * W3C trace context of the span that submitted it. The id travels in ADD, ABORT and OUTPUT and
 * in the STEP entry that first schedules the request; every log line and dump about the request,
 * in every process, carries it. */
typedef struct ipc_ident {
    char id[IPC_REQUEST_ID_MAX + 1];           /* 1..IPC_REQUEST_ID_MAX bytes, no controls */
    char traceparent[IPC_TRACEPARENT_LEN + 1]; /* "" or a valid traceparent */
    char tracestate[IPC_TRACESTATE_MAX + 1];   /* "" unless traceparent is set */
} ipc_ident_t;

/* Fills d, validating each part (traceparent and tracestate may be NULL or ""). LT_ERR_INVAL
 * with a message naming the part. */
int ipc_ident_set(ipc_ident_t *d, const char *id, const char *traceparent, const char *tracestate,
                  char *err);
/* The identity's trace context as an envelope wants it: t filled and returned, or NULL when the
 * identity has none. */
const ipc_trace_ctx_t *ipc_ident_trace(const ipc_ident_t *d, ipc_trace_ctx_t *t);

/* ---- ADD ---- */

typedef struct ipc_add {
    uint64_t id;       /* the tree-unique handle liblantern gave the request */
    ipc_ident_t ident; /* travels in the envelope (request_id, trace_context) */
    int32_t *prompt;   /* caller storage: encode reads n_prompt, decode fills up to prompt_cap */
    int32_t n_prompt, prompt_cap;
    ipc_params_t params;
} ipc_add_t;

int ipc_msg_add_write(ipc_writer_t *w, const ipc_add_t *a, const void **data, size_t *len,
                      char *err);
/* Reads ADD into a, the identity from the envelope (which must carry a request id). The params
 * are decoded, not range-checked: the receiver calls ipc_params_check with its vocabulary. */
int ipc_msg_add_read(const ipc_envelope_t *env, ipc_add_t *a, char *err);

/* ---- ABORT ---- */

/* ABORT of request `id` whose identity is `rid` (the envelope's request_id). */
int ipc_msg_abort_write(ipc_writer_t *w, uint64_t id, const char *rid, const void **data,
                        size_t *len, char *err);
int ipc_msg_abort_read(const ipc_envelope_t *env, uint64_t *id, char *err);

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
    char rid[IPC_REQUEST_ID_MAX + 1]; /* the request's id string (OUTPUT only; "" in RESULT) */
    int32_t token;                    /* -1 when the item only reports a finish or an error */
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

/* What the workers learn of a request the first time a step schedules it (and again after a
 * preemption): its identity (every rank names it in logs and dumps) and, for rank 0's sampler,
 * its parameters and prompt (the repetition penalty reads the prompt ids). */
typedef struct ipc_step_new {
    uint64_t id;
    ipc_ident_t ident;
    ipc_params_t params;
    int32_t n_prompt; /* prompt ids: the first n_prompt of the request's tokens */
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
