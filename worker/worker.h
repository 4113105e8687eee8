/*
 * worker.h — the model a worker runs: configuration, weights, KV cache and the CPU forward pass.
 *
 * A model comes from a GGUF file or a Hugging Face directory (config.json + safetensors); both
 * end in the same lt_model_config_t and fp32 weights. The forward pass takes a batch of tokens from
 * one or more sequences, each with its positions and a block table into the paged KV cache, and
 * returns logits for the rows asked for.
 *
 * Thread safety: a wk_model_t is read-only after load and may be shared; a wk_kv_cache_t and a
 * wk_ctx_t (scratch buffers) belong to one thread at a time.
 * Ownership: wk_model_load() returns a model the caller frees with wk_model_free().
 */
#ifndef WK_WORKER_H
#define WK_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model_config.h"

/* ---- model ---- */

/* A weight matrix kept in its stored quantized block format, for decode-sized products
 * (kn_qmatmul); data == NULL when the stored type has no such kernel. */
typedef struct wk_qweight {
    const void *data; /* (rows, cols) in blocks of `type`, owned by the model */
    int type;         /* lt_dtype_t */
} wk_qweight_t;

/* One decoder layer's weights, fp32, rows = output features (PyTorch layout). For tensor
 * parallelism each rank holds its slice: n_head_local heads of q/o, n_kv_head_local of k/v,
 * hidden_local rows of gate/up and columns of down. */
typedef struct wk_layer {
    float *attn_norm;       /* (dim) */
    float *wq;              /* (n_head_local * head_dim, dim) */
    float *wk;              /* (n_kv_head_local * head_dim, dim) */
    float *wv;              /* (n_kv_head_local * head_dim, dim) */
    float *bq, *bk, *bv;    /* (rows of wq/wk/wv) or NULL without qkv_bias */
    float *q_norm, *k_norm; /* (head_dim) or NULL without qk_norm */
    float *wo;              /* (dim, n_head_local * head_dim) */
    float *ffn_norm;        /* (dim) */
    float *w_gate;          /* (hidden_local, dim) */
    float *w_up;            /* (hidden_local, dim) */
    float *w_down;          /* (dim, hidden_local) */
    /* the same matrices in their stored format, where kn_qmatmul reads it */
    wk_qweight_t qq, qk, qv, qo, qgate, qup, qdown;
} wk_layer_t;

typedef struct wk_model {
    lt_model_config_t cfg;
    char path[1024];
    int tp_rank, tp_size;
    int n_head_local, n_kv_head_local, hidden_local;
    float *tok_embd; /* (vocab_size, dim) */
    float *out_norm; /* (dim) */
    float *output;   /* (vocab_size, dim); == tok_embd when tied */
    wk_qweight_t qoutput;
    wk_layer_t *layers; /* (n_layer) */
    float *inv_freq;    /* (head_dim / 2) rotary inverse frequencies, scaling applied */
    float rope_attn_factor;
    /* private: every weight buffer, for wk_model_free */
    void **bufs;
    int n_bufs, cap_bufs;
    size_t weight_bytes;
} wk_model_t;

typedef struct wk_load_opts {
    int tp_rank; /* 0..tp_size-1 */
    int tp_size; /* 1 = whole model; heads, kv heads and hidden must divide by it */
} wk_load_opts_t;

/* Loads a GGUF file or a Hugging Face directory (config.json + *.safetensors), validates every
 * tensor's presence and shape against the configuration and dequantizes to fp32. opts may be
 * NULL (whole model). Errors are one line naming the file and the problem. */
int wk_model_load(const char *path, const wk_load_opts_t *opts, wk_model_t **out, char *err);
void wk_model_free(wk_model_t **m);

/* ---- paged KV cache ---- */

typedef struct wk_kv_cache {
    int n_layer, n_blocks, block_size, n_kv_head, head_dim;
    float *k; /* (n_layer, n_blocks, n_kv_head, block_size, head_dim) */
    float *v; /* (n_layer, n_blocks, n_kv_head, block_size, head_dim) */
} wk_kv_cache_t;

/* Creates a cache of n_blocks blocks of block_size token slots for this model's local heads. */
int wk_kv_cache_create(const wk_model_t *m, int n_blocks, int block_size, wk_kv_cache_t **out,
                       char *err);
void wk_kv_cache_destroy(wk_kv_cache_t **kv);

/* ---- forward pass ---- */

/* A batch of tokens from one or more sequences. Every sequence's tokens in the batch have
 * consecutive positions, and positions 0..pos-1 of that sequence are already in the cache (or
 * earlier in this batch). block_tables[s] maps position p to block block_tables[s][p / block_size].
 */
typedef struct wk_batch {
    int n_tokens;
    const int32_t *tokens; /* (n_tokens) */
    const int32_t *pos;    /* (n_tokens) */
    const int32_t *seq;    /* (n_tokens) index into block_tables */
    int n_seqs;
    const int32_t *const *block_tables; /* (n_seqs)(block_table_len[s]) */
    const int32_t *block_table_len;     /* (n_seqs) */
    int n_logits;
    const int32_t *logits_rows; /* (n_logits) batch rows whose logits are wanted */
} wk_batch_t;

/* Scratch buffers for batches of up to max_tokens tokens and contexts up to max_ctx. */
typedef struct wk_ctx wk_ctx_t;
int wk_ctx_create(const wk_model_t *m, int max_tokens, int max_ctx, wk_ctx_t **out, char *err);
void wk_ctx_destroy(wk_ctx_t **c);

/* Tensor parallelism: sums buf (n) elementwise across all ranks in place, identically on every
 * rank; returns 0 or a negative LT_ERR_* (a dead peer). Called twice per layer. */
typedef int (*wk_allreduce_fn)(float *buf, size_t n, void *user);
/* Required before wk_forward on a model loaded with tp_size > 1. On such a model only the ranks
 * that ask for logits compute the vocabulary projection (rank 0 in practice). */
void wk_ctx_set_allreduce(wk_ctx_t *c, wk_allreduce_fn fn, void *user);

/* Batch-invariant mode (process-wide, before the first forward): every matrix product over
 * stored quantized weights takes the quantized kernel in row blocks, whatever the batch size, so
 * a sequence's logits no longer depend on what it is batched with (seeded sampling then
 * reproduces across batch shapes and schedules). Costs throughput on large batches: fp32 sgemm
 * is faster there. Off by default (as in vLLM). */
void wk_set_batch_invariant(bool on);

/* Runs the model over the batch, writing K/V into the cache and logits (n_logits, vocab_size)
 * for the requested rows. Validates the batch (token ids, positions, block ids) and returns
 * LT_ERR_INVAL with a message if it is malformed. Allocates nothing. HOT */
int wk_forward(const wk_model_t *m, wk_kv_cache_t *kv, wk_ctx_t *c, const wk_batch_t *b,
               float *logits, char *err);

/* ---- the single-process reference path ---- */

/* `lantern generate --in-process`: greedy decoding of one prompt in this process (no engine);
 * prints the generated ids on stdout and load/prefill/decode figures on stderr. Returns the exit
 * status. threads > 0 sets the OpenMP thread count. */
int wk_generate_solo(const char *model_path, const int *prompt, int n_prompt, int max_tokens,
                     bool ignore_eos, int threads);

#endif
