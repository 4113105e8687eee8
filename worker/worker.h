/*
 * worker.h — the model a worker runs: configuration, weights, KV cache and the forward pass.
 *
 * A model comes from a GGUF file or a Hugging Face directory (config.json + safetensors); both
 * end in the same lt_model_config_t and weights in their stored type, placed by a backend
 * (backend.h; the model's graph is forward.c). The forward pass takes a batch of tokens from
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

#include "backend.h"
#include "dtype.h"
#include "model_config.h"

/* ---- model ---- */

/* One decoder layer's weights. Matrices stay in their stored type (backend.h: wk_tensor_t), rows
 * = output features (PyTorch layout); vectors are fp32. For tensor parallelism each rank holds its
 * slice: n_head_local heads of q/o, n_kv_head_local of k/v, hidden_local rows of gate/up and
 * columns of down. Everything is backend memory. */
typedef struct wk_layer {
    const float *attn_norm;       /* (dim) */
    wk_tensor_t wq;               /* (n_head_local * head_dim, dim) */
    wk_tensor_t wk;               /* (n_kv_head_local * head_dim, dim) */
    wk_tensor_t wv;               /* (n_kv_head_local * head_dim, dim) */
    const float *bq, *bk, *bv;    /* (rows of wq/wk/wv) or NULL without qkv_bias */
    const float *q_norm, *k_norm; /* (head_dim) or NULL without qk_norm */
    wk_tensor_t wo;               /* (dim, n_head_local * head_dim) */
    const float *ffn_norm;        /* (dim) */
    wk_tensor_t w_gate;           /* (hidden_local, dim) */
    wk_tensor_t w_up;             /* (hidden_local, dim) */
    wk_tensor_t w_down;           /* (dim, hidden_local) */
} wk_layer_t;

typedef struct wk_model {
    lt_model_config_t cfg;
    char path[1024];
    int tp_rank, tp_size;
    int n_head_local, n_kv_head_local, hidden_local;
    wk_backend_t *be;         /* owned: the hardware the model runs on */
    wk_tensor_t tok_embd;     /* (vocab_size, dim) */
    const float *out_norm;    /* (dim) */
    wk_tensor_t output;       /* (vocab_size, dim); the same as tok_embd when tied */
    wk_layer_t *layers;       /* (n_layer) */
    wk_rope_t rope;           /* rotary frequencies, scaling applied */
    size_t weight_bytes;      /* every weight in its stored type (file-backed where mapped) */
    size_t weight_copy_bytes; /* the part copied into backend memory (column slices, vectors) */
    /* private: the mapped model file(s) the weights point into, and every backend allocation */
    void *gguf, *st;
    void **bufs;
    int n_bufs, cap_bufs;
} wk_model_t;

enum { WK_DEVICE_CPU, WK_DEVICE_CUDA };

typedef struct wk_load_opts {
    int tp_rank;     /* 0..tp_size-1 */
    int tp_size;     /* 1 = whole model; heads, kv heads and hidden must divide by it */
    int device;      /* WK_DEVICE_CPU (the zero default) or WK_DEVICE_CUDA */
    int cuda_device; /* with WK_DEVICE_CUDA: the device index (the worker's rank) */
} wk_load_opts_t;

/* Loads a GGUF file or a Hugging Face directory (config.json + *.safetensors) onto a new backend
 * (opts->device: CPU unless it says CUDA), and validates every tensor's presence and shape against
 * the configuration. Weights keep their stored type; the file stays mapped for the model's life.
 * opts may be NULL (whole model). Errors are one line naming the file and the problem. */
int wk_model_load(const char *path, const wk_load_opts_t *opts, wk_model_t **out, char *err);
void wk_model_free(wk_model_t **m);
/* A model of configuration cfg (no qkv bias or q/k norm) whose matrices are random blocks of
 * `type` (Q4_0, Q4_1, Q8_0, Q4_K, F16, BF16 or F32; weights spread over about ±0.03, Q4_K's
 * about ±0.06; Q4_K needs input dimensions that are multiples of 256) and whose norms
 * are ones, made without a file on a new backend as wk_model_load does: for benchmarks of
 * shapes no test model has. The same seed gives the same weights. */
int wk_model_random(const lt_model_config_t *cfg, int type, const wk_load_opts_t *opts,
                    uint64_t seed, wk_model_t **out, char *err);

/* ---- paged KV cache ---- */

typedef struct wk_kv_cache {
    int n_layer, n_blocks, block_size, n_kv_head, head_dim;
    int dtype;        /* lt_dtype_t of the elements: F32, F16 or BF16 */
    wk_backend_t *be; /* the model's, which allocated k and v */
    void *k;          /* (n_layer, n_blocks, n_kv_head, block_size, head_dim) backend memory */
    void *v;          /* (n_layer, n_blocks, n_kv_head, block_size, head_dim) backend memory */
} wk_kv_cache_t;

/* Creates a cache of n_blocks blocks of block_size token slots for this model's local heads, with
 * elements of dtype (LT_DTYPE_F32, F16 or BF16). */
int wk_kv_cache_create(const wk_model_t *m, int n_blocks, int block_size, int dtype,
                       wk_kv_cache_t **out, char *err);
/* Bytes of one block (K and V, every layer) of a cache of this model with elements of dtype. */
size_t wk_kv_block_bytes(const wk_model_t *m, int block_size, int dtype);
/* vLLM's --gpu-memory-utilization: the KV blocks of block_bytes that fit when this process may
 * fill util (0, 1] of a device of total_bytes, free_bytes of which are free now (after the model,
 * the scratch and a profiling step at the largest batch took theirs): free - (1 - util) * total,
 * at most 2^24 blocks. Other processes' memory on the device counts as used. LT_ERR_INVAL for a
 * util out of range, LT_ERR_RANGE with the figures when not one block fits. */
int wk_kv_blocks_for(size_t free_bytes, size_t total_bytes, double util, size_t block_bytes,
                     long long *out, char *err);
void wk_kv_cache_destroy(wk_kv_cache_t **kv);

/* ---- forward pass ---- */

/* A batch of tokens from one or more sequences. Every sequence's tokens in the batch have
 * consecutive positions, and positions 0..pos-1 of that sequence are already in the cache (or
 * earlier in this batch). block_tables[s] maps position p to block block_tables[s][p / block_size].
 */
struct wk_batch {
    int n_tokens;
    const int32_t *tokens; /* (n_tokens) */
    const int32_t *pos;    /* (n_tokens) */
    const int32_t *seq;    /* (n_tokens) index into block_tables */
    int n_seqs;
    const int32_t *const *block_tables; /* (n_seqs)(block_table_len[s]) */
    const int32_t *block_table_len;     /* (n_seqs) */
    int n_logits;
    const int32_t *logits_rows; /* (n_logits) batch rows whose logits are wanted */
};

/* Scratch buffers for batches of up to max_tokens tokens and contexts up to max_ctx. */
typedef struct wk_ctx wk_ctx_t;
int wk_ctx_create(const wk_model_t *m, int max_tokens, int max_ctx, wk_ctx_t **out, char *err);
void wk_ctx_destroy(wk_ctx_t **c);

/* Required before wk_forward on a model loaded with tp_size > 1. On such a model only the ranks
 * that ask for logits compute the vocabulary projection (rank 0 in practice). */
void wk_ctx_set_allreduce(wk_ctx_t *c, wk_allreduce_fn fn, void *user);
/* eager: never replay recorded steps (CUDA graphs) on this scratch (--enforce-eager). */
void wk_ctx_set_eager(wk_ctx_t *c, bool eager);

/* Runs the model over the batch, writing K/V into the cache and logits (n_logits, vocab_size,
 * host memory) for the requested rows. A row's logits do not depend on the other rows of the
 * batch (every backend operation is row-independent, in a fixed order). Validates the batch
 * (token ids, positions, block ids) and returns LT_ERR_INVAL with a message if it is malformed.
 * Allocates nothing. HOT */
int wk_forward(const wk_model_t *m, wk_kv_cache_t *kv, wk_ctx_t *c, const wk_batch_t *b,
               float *logits, char *err);

/* ---- the single-process reference path ---- */

/* `lantern generate --in-process`: greedy decoding of one prompt in this process (no engine);
 * prints the generated ids on stdout and load/prefill/decode figures on stderr. Returns the exit
 * status. threads > 0 sets the OpenMP thread count. */
int wk_generate_solo(const char *model_path, const int *prompt, int n_prompt, int max_tokens,
                     bool ignore_eos, int threads);

#endif
