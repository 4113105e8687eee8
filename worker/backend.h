/*
 * backend.h — the seam between the model's graph and the hardware it runs on.
 *
 * forward.c holds a Llama-family decoder's graph once, as a sequence of batched operations over
 * rows of activations; a backend implements those operations over its own memory. The CPU backend
 * (backend_cpu.c) runs them on host pointers with OpenMP and the kernels in kernels/; a GPU backend
 * implements the same signatures over device pointers (weights uploaded in their stored type, the
 * batch's indices uploaded once per step by begin()).
 *
 * Memory: every pointer an operation takes (activations, weights, KV cache, the batch's indices
 * after begin()) is backend memory, except where a comment says host. The graph never reads or
 * writes backend memory itself; logits come back through to_host.
 *
 * Shapes are row-major, outermost first. "rows" is the batch's token count T (or the number of
 * logits rows); every operation treats rows independently, in a fixed order, so a row's result
 * never depends on the other rows in the batch (batch invariance).
 *
 * Thread safety: a backend belongs to one worker thread; its operations may use threads inside.
 */
#ifndef WK_BACKEND_H
#define WK_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct wk_batch wk_batch_t;
typedef struct wk_kv_cache wk_kv_cache_t;

/* A weight matrix in its stored type: rows = output features (PyTorch layout), each row cols
 * elements in blocks of `type`. */
typedef struct wk_tensor {
    const void *data; /* backend memory (the CPU backend may point into the mmapped file) */
    int type;         /* lt_dtype_t */
    int64_t rows, cols;
    size_t row_bytes;
} wk_tensor_t;

/* Rotary embedding of the model, in backend memory after model load. */
typedef struct wk_rope {
    const float *inv_freq; /* (head_dim / 2) inverse frequencies, scaling applied */
    float attn_factor;     /* scales cos/sin (1 unless YaRN) */
    bool neox;             /* rotate halves (HF) rather than adjacent pairs (GGUF Llama) */
} wk_rope_t;

typedef struct wk_backend wk_backend_t;

typedef struct wk_backend_ops {
    const char *name;

    /* ---- memory ---- */
    /* Backend memory of n bytes (contents undefined), or NULL. */
    void *(*alloc)(wk_backend_t *be, size_t n);
    void (*release)(wk_backend_t *be, void *p);
    /* Copies n bytes from host memory into backend memory dst. */
    void (*upload)(wk_backend_t *be, void *dst, const void *host, size_t n);
    /* Copies n floats from backend memory src to host memory, once every operation before it
     * has run: a step's end (n 0, host and src NULL: only that wait, for a step without logits;
     * under tensor parallelism the all-reduces' failures surface there). */
    void (*to_host)(wk_backend_t *be, float *host, const float *src, size_t n);
    /* True when matmul reads weights of `type` with rows of cols elements as they are. */
    bool (*supports)(wk_backend_t *be, int type, int64_t cols);
    /* A weight from the model file: rows [row0, row0 + nrows) of a stored matrix of `type` whose
     * rows are src_row_bytes long, at host address src (the mmapped file, valid as long as the
     * model). The tensor may reference src (*owned = NULL) or live in new backend memory (*owned =
     * that memory, released with release()). Column slices are made by the caller. */
    int (*weight)(wk_backend_t *be, const void *src, int type, int64_t cols, int64_t row0,
                  int64_t nrows, wk_tensor_t *out, void **owned, char *err);
    /* Optional (NULL: nothing to do): a weight matrix the caller placed in backend memory itself
     * (alloc + upload of its stored blocks, as for column slices) becomes one matmul and embed
     * can read: the backend may rearrange its bytes in place (the CUDA backend regroups quantized
     * blocks), or move them into a new allocation of another size, releasing the old one and
     * setting w->data and w->row_bytes (the CUDA backend unfolds K-quant super-blocks); the caller
     * then owns the new memory. weight() does this itself. */
    int (*prepare)(wk_backend_t *be, wk_tensor_t *w, char *err);

    /* Sizes the backend's own scratch for steps of up to max_rows rows, matrix products with up
     * to max_k inputs, and attention over up to max_ctx positions with `group` query heads per KV
     * head. Called before the first step (and again to grow it). */
    int (*reserve)(wk_backend_t *be, int max_rows, int max_k, int max_ctx, int group, char *err);

    /* ---- one forward step ---- */
    /* Makes the host batch b (validated) the current one: its tokens, positions, sequences and
     * block tables are what embed, rope, kv_store and attention read. */
    int (*begin)(wk_backend_t *be, const wk_batch_t *b, char *err);
    /* x (T, cols) = rows of emb for the batch's tokens. */
    void (*embed)(wk_backend_t *be, float *x, const wk_tensor_t *emb);
    /* out (rows, n) = x / rms(x) * w (n), row by row; out may alias x. */
    void (*rmsnorm)(wk_backend_t *be, float *out, const float *x, const float *w, int rows, int n,
                    float eps);
    /* y (rows, w.rows) = x (rows, w.cols) @ w^T [+ bias (w.rows)]. */
    int (*matmul)(wk_backend_t *be, float *y, const float *x, const wk_tensor_t *w,
                  const float *bias, int rows);
    /* Optional (NULL: matmul one by one): y[i] = x @ w[i]^T [+ bias[i]] for count (<= 8)
     * weights with the same cols, in one pass over x; the same results as matmul on each. */
    int (*matmul_n)(wk_backend_t *be, float *const *y, const float *x, const wk_tensor_t *const *w,
                    const float *const *bias, int count, int rows);
    /* Per head of q (T, nh, hd) and k (T, nkv, hd): RMSNorm with q_norm / k_norm (hd) when not
     * NULL, then the rotary embedding at each token's position. */
    void (*qk_rope)(wk_backend_t *be, float *q, float *k, int nh, int nkv, int hd,
                    const float *q_norm, const float *k_norm, float eps, const wk_rope_t *rope);
    /* Writes each token's k and v (T, nkv * hd) into its slot of layer `layer` of the cache. */
    void (*kv_store)(wk_backend_t *be, wk_kv_cache_t *kv, int layer, const float *k,
                     const float *v);
    /* out (T, nh * hd): causal attention of each token's q (T, nh * hd) over its sequence's
     * positions 0..pos in layer `layer` of the cache (grouped-query: nh / nkv heads per KV head).
     */
    void (*attention)(wk_backend_t *be, float *out, const float *q, const wk_kv_cache_t *kv,
                      int layer, int nh, int nkv, int hd);
    /* gate (n) = silu(gate) * up (n). */
    void (*swiglu)(wk_backend_t *be, float *gate, const float *up, size_t n);
    /* x (n) += y (n). */
    void (*add)(wk_backend_t *be, float *x, const float *y, size_t n);
    /* Optional (NULL: add, then rmsnorm): x (rows, n) += y, then out = x / rms(x) * w; out may
     * alias y. The same results as the two operations, in one where the backend fuses them. */
    void (*add_rmsnorm)(wk_backend_t *be, float *x, const float *y, float *out, const float *w,
                        int rows, int n, float eps);
    /* Optional (NULL: qk_rope, then kv_store of k and v): the same, in one operation. */
    void (*qk_rope_store)(wk_backend_t *be, float *q, float *k, const float *v, int nh, int nkv,
                          int hd, const float *q_norm, const float *k_norm, float eps,
                          const wk_rope_t *rope, wk_kv_cache_t *kv, int layer);
    /* dst row i (n) = src row rows[i] (n), rows (n_rows) in host memory. */
    void (*gather)(wk_backend_t *be, float *dst, const float *src, const int32_t *rows, int n_rows,
                   int n);

    /* ---- KV cache ---- */
    /* Allocates kv->k and kv->v for the geometry already in kv. */
    int (*kv_alloc)(wk_backend_t *be, wk_kv_cache_t *kv, char *err);
    /* Optional (NULL: the backend's memory is the host's): the device memory free now and in
     * all, in bytes, for --gpu-memory-utilization. */
    int (*mem_info)(wk_backend_t *be, size_t *free_bytes, size_t *total_bytes, char *err);

    /* ---- recorded steps (optional: NULL, every step runs operation by operation) ----
     * A backend that can record a step's operations and replay them with one launch (CUDA
     * graphs) offers these; forward.c asks for steps with at most 32 logits rows.
     * After begin(), graph_begin(kv, ctx: identify the cache and scratch the step uses) answers:
     *   WK_GRAPH_REPLAYED  a recording of a step of this shape on this cache and scratch ran:
     *                      the logits rows are in place; run no operations;
     *   WK_GRAPH_RECORD    one rank: run the operations as usual, then graph_record (with their
     *                      logits), then the same operations again (recorded, not run), then
     *                      graph_end, which checks the recording against the eager run;
     *                      tensor parallel: graph_record(NULL, 0), the operations (recorded,
     *                      not run), graph_end, which runs the recording as the step, unchecked
     *                      (each rank must run each step once: their all-reduces pair up);
     *   WK_GRAPH_OFF       run the operations as usual. */
    int (*graph_begin)(wk_backend_t *be, const void *kv, const void *ctx, int n_logits);
    /* Keeps a copy of the eager run's logits (n floats, backend memory; none when ref is NULL)
     * and starts recording: LT_OK, or 1 when recording could not start (recordings are then off;
     * with a reference the step stands, without one the caller runs it as usual). */
    int (*graph_record)(wk_backend_t *be, const float *ref, size_t n, char *err);
    /* Ends the recording (rc: the recorded operations' status). With a reference: replays it and
     * compares its logits (out) with the eager run's bit for bit; a failed recording or any
     * difference turns the backend's recordings off for good, with a warning, and puts the
     * eager logits back in out: the step stands either way (LT_OK). Without one: runs it, the
     * step's logits landing in out (LT_OK), or, when the recording failed, turns recordings off
     * and returns 1: nothing ran, the caller runs the step as usual. */
    int (*graph_end)(wk_backend_t *be, float *out, size_t n, int rc, char *err);
    /* Forgets every recording (a cache or scratch they name is going away). */
    void (*graph_reset)(wk_backend_t *be);

    void (*destroy)(wk_backend_t *be);
} wk_backend_ops_t;

enum { WK_GRAPH_OFF, WK_GRAPH_REPLAYED, WK_GRAPH_RECORD };

/* Tensor parallelism: sums buf (n floats, backend memory) elementwise across all ranks in place,
 * identically on every rank; returns 0 or a negative LT_ERR_* (a dead peer). */
typedef int (*wk_allreduce_fn)(float *buf, size_t n, void *user);

struct wk_backend {
    const wk_backend_ops_t *ops;
    void *impl;
};

/* The CPU backend: OpenMP threads (omp_get_max_threads()) and the kernels in kernels/.
 * Returns NULL when out of memory. */
wk_backend_t *wk_backend_cpu_create(void);

/* The CUDA backend (backend_cuda.c, kernels/cuda/) on device `device` of CUDA_VISIBLE_DEVICES:
 * one stream, cuBLAS on it, weights uploaded in their stored type. NULL with a one-line reason in
 * err (LT_ERR_LEN) when there is no device, the driver is older than the runtime, it is out of
 * memory, or this build has no CUDA. Checked on an H200 (README "GPU"). */
wk_backend_t *wk_backend_cuda_create(int device, char *err);
/* CUDA devices visible (0 without a driver, a device or a CUDA build); never fails. */
int wk_cuda_device_count(void);
/* The CUDA backend's stream (a cudaStream_t), NULL for another backend. */
void *wk_backend_cuda_stream(wk_backend_t *be);
void wk_backend_destroy(wk_backend_t **be);

#endif
