/*
 * backend_cuda.c — the CUDA backend (backend.h) over the kernels of kernels/cuda/ops.h: device
 * memory, one stream, cuBLAS bound to it.
 *
 * Weights are uploaded in their stored type (quantized blocks stay quantized, regrouped once into
 * the GPU's row layout by kn_cu_repack, or for the K-quants and Q5_0 / Q5_1 unfolded into a new,
 * larger allocation by kn_cu_krepack; matmul reads them with integer dot products or dequantizes
 * them into fp16 tiles for cuBLAS, see ops.cu). begin() packs the batch's indices (tokens,
 * positions, sequences, logits rows, block tables padded to the longest) into one host buffer and
 * uploads it once per step; to_host copies logits back and synchronizes the stream. The void
 * operations of backend.h cannot return an error: the first failure is kept (sticky) and returned
 * by the next matmul or begin, so the step fails rather than computing on garbage; logits copied
 * back after a failure are NaN.
 *
 * Built only with LANTERN_HAVE_CUDA, into the module liblantern_cuda.so with nccl_comm.c and
 * kernels/cuda, which cuda_loader.c opens only when a worker runs on CUDA: the CPU path never
 * maps cuBLAS, NCCL or the CUDA runtime. Its lt_* calls resolve against the executable
 * (LT_CUDA_MODULE_IMPORTS). Checked on an H200 by tools/gpu_check.sh (README "GPU").
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "lt.h"
#include "worker.h"

#ifdef LANTERN_HAVE_CUDA

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "cuda/ops.h"

enum { GRAPHS_MAX = 128, GRAPH_MAX_TOKENS = 32, BLAS_WS = 32 << 20 };
enum { OP_EVENTS = 4096, OP_KINDS = 32 };
enum { STICKY_WHY = 1 }; /* a failure explained by sticky_why (kn_cu codes are negative) */
/* Attention splits a token's positions into ranges of about ATT_SPLIT_SPAN when its batch has
 * at most ATT_SPLIT_ROWS tokens (decode) and the block tables span more than ATT_SPLIT_MIN. */
enum { ATT_SPLIT_ROWS = 64, ATT_SPLIT_MIN = 1024, ATT_SPLIT_SPAN = 512 };

typedef struct cu {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws; /* cuBLAS's workspace (BLAS_WS bytes) */
    kn_cu_mm_scratch_t mm;
    int max_rows, max_k;
    int32_t *h_idx, *d_idx; /* the batch's indices, host staging and device copy */
    size_t idx_cap;         /* int32s in each */
    int32_t *d_rows;        /* (max_rows) gather rows that are not the batch's logits rows */
    const wk_batch_t *hb;   /* the current batch (host) */
    kn_cu_batch_t b;        /* its indices on the device */
    const int32_t *d_logits_rows;
    void *repack_tmp; /* load time: kn_cu_repack's staging (REPACK_TMP bytes), freed by reserve */
    float *att_part;  /* long-context attention's per-range states (att_part_bytes), or NULL */
    size_t att_part_bytes;
    /* CUDA graphs of steps (backend.h "recorded steps"), keyed by the step's shape */
    struct cu_graph {
        int n_tokens, n_logits, bt_stride;
        const void *kv, *ctx;
        int seen;             /* eager runs of this shape so far */
        cudaGraphExec_t exec; /* NULL until recorded */
    } graphs[GRAPHS_MAX];
    int n_graphs, recording; /* recording: the index being recorded, or -1 */
    bool checking;           /* the recording is checked against an eager run (one rank) */
    bool graphs_off;         /* a recording failed or differed: never again */
    float *ref;              /* the eager logits of the step being recorded */
    size_t ref_cap;
    /* LANTERN_CUDA_OP_TIMES=1: an event after every operation, their gaps summed per
     * operation name, the table logged when the backend goes (graphs off meanwhile) */
    bool timing;
    cudaEvent_t ev[OP_EVENTS];
    const char *ev_what[OP_EVENTS];
    int n_ev;
    struct op_time {
        const char *what;
        double ms;
        long calls;
    } times[OP_KINDS];
    int n_times;
    long steps;
    int sticky; /* first failure since the last begin: 0, a kn_cu code or STICKY_WHY */
    char sticky_what[64];
    char sticky_why[200]; /* STICKY_WHY's reason */
} cu_t;

/* The module's entry points (cuda_loader.c finds them with dlsym). */
wk_backend_t *wk_backend_cuda_create_mod(int device, char *err);
void *wk_backend_cuda_stream_mod(wk_backend_t *be);
/* nccl_comm.c: the end-of-step wait, watching the all-reduces of a communicator on the stream */
int wk_nccl_stream_wait_mod(void *stream, char *why, size_t why_len);

static cu_t *cu_of(wk_backend_t *be) {
    return be->impl;
}

/* Forgets every step graph (their kernels name buffers that are going away). */
static void graphs_drop(cu_t *c) {
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].exec) cudaGraphExecDestroy(c->graphs[i].exec);
    c->n_graphs = 0;
    c->recording = -1;
}

/* --- per-operation times (LANTERN_CUDA_OP_TIMES) --- */

/* An event on the stream after operation `what` (what NULL: the step's start). */
static void op_mark(cu_t *c, const char *what) {
    if (c->n_ev == OP_EVENTS) return;
    if (cudaEventRecord(c->ev[c->n_ev], c->stream) != cudaSuccess) return;
    c->ev_what[c->n_ev++] = what;
}

/* After a synchronization: the gaps between the events, summed per operation name. */
static void op_collect(cu_t *c) {
    for (int i = 1; i < c->n_ev; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->ev[i - 1], c->ev[i]) != cudaSuccess) continue;
        int k = 0;
        while (k < c->n_times && strcmp(c->times[k].what, c->ev_what[i]) != 0) k++;
        if (k == c->n_times) {
            if (k == OP_KINDS) continue;
            c->times[c->n_times++] = (struct op_time){.what = c->ev_what[i]};
        }
        c->times[k].ms += ms;
        c->times[k].calls++;
    }
    if (c->n_ev > 1) { /* the last event starts what follows (another chunk of logits) */
        cudaEvent_t last = c->ev[c->n_ev - 1];
        c->ev[c->n_ev - 1] = c->ev[0];
        c->ev[0] = last;
        c->ev_what[0] = NULL;
        c->n_ev = 1;
    }
}

static void op_report(cu_t *c) {
    double total = 0;
    for (int k = 0; k < c->n_times; k++) total += c->times[k].ms;
    if (total <= 0) return;
    LT_INFO("CUDA device %d: operation times over %ld steps (eager, each from the previous "
            "operation's end: launch gaps included), %.3f ms per step:",
            c->device, c->steps, total / (c->steps ? c->steps : 1));
    for (int k = 0; k < c->n_times; k++)
        LT_INFO("  %-14s %6.1f%%  %10.3f ms  %8ld calls  %8.2f us each", c->times[k].what,
                100 * c->times[k].ms / total, c->times[k].ms, c->times[k].calls,
                1e3 * c->times[k].ms / c->times[k].calls);
}

/* Keeps the first failure; returns rc. After an operation that leaves its output's quants for the
 * next product (kn_cu_rmsnorm_q, kn_cu_swiglu_q). */
static int note_keep(cu_t *c, int rc, const char *what) {
    if (rc && !c->sticky) {
        c->sticky = rc;
        snprintf(c->sticky_what, sizeof c->sticky_what, "%s", what);
    }
    if (c->timing) op_mark(c, what);
    return rc;
}

/* note_keep after any other operation: the quants left by the one before (c->mm.quantized)
 * served the product that read them, or their buffer may have changed. */
static int note(cu_t *c, int rc, const char *what) {
    c->mm.quantized = NULL;
    return note_keep(c, rc, what);
}

static int sticky_err(cu_t *c, char *err) {
    if (!c->sticky) return LT_OK;
    int rc = c->sticky;
    c->sticky = 0;
    return lt_errf(err, LT_ERR_IO, "CUDA device %d: %s failed: %s", c->device, c->sticky_what,
                   rc == STICKY_WHY ? c->sticky_why : kn_cu_error_str(rc));
}

static int cu_rc(cudaError_t e) {
    return e == cudaSuccess ? 0 : -(int)e;
}

/* ---- memory ---- */

static void *cu_alloc(wk_backend_t *be, size_t n) {
    void *p = NULL;
    (void)be;
    return cudaMalloc(&p, n ? n : 256) == cudaSuccess ? p : NULL;
}

static void cu_release(wk_backend_t *be, void *p) {
    (void)be;
    cudaFree(p);
}

static void cu_upload(wk_backend_t *be, void *dst, const void *host, size_t n) {
    cu_t *c = cu_of(be);
    note(c, cu_rc(cudaMemcpyAsync(dst, host, n, cudaMemcpyHostToDevice, c->stream)), "upload");
    note(c, cu_rc(cudaStreamSynchronize(c->stream)), "upload");
}

static void cu_to_host(wk_backend_t *be, float *host, const float *src, size_t n) {
    cu_t *c = cu_of(be);
    if (n)
        note(
            c,
            cu_rc(cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, c->stream)),
            "copy to host");
    bool timing = c->timing;
    c->timing = false; /* the synchronization is no operation */
    char why[200];
    if (wk_nccl_stream_wait_mod(c->stream, why, sizeof why) && !c->sticky) {
        c->sticky = STICKY_WHY;
        snprintf(c->sticky_what, sizeof c->sticky_what, "the step");
        snprintf(c->sticky_why, sizeof c->sticky_why, "%s", why);
    }
    c->timing = timing;
    if (timing) op_collect(c);
    if (c->sticky) /* the step failed: no plausible-looking logits; the next begin says why */
        for (size_t i = 0; i < n; i++) host[i] = NAN;
}

enum { REPACK_TMP = 64 << 20 };

/* A K-quant weight's stored rows, just placed in device memory, unfolded into the GPU layout in
 * a new allocation (kn_cu_krepack: rows grow); the stored rows are freed. */
static int cu_unfold(cu_t *c, wk_tensor_t *w, char *err) {
    size_t grb = kn_cu_row_bytes(w->type, w->cols, w->row_bytes), n = grb * (size_t)w->rows;
    void *d = NULL;
    if (cudaMalloc(&d, n ? n : 256) != cudaSuccess)
        return lt_errf(err, LT_ERR_NOMEM,
                       "CUDA device %d: out of memory for a %zu MiB %s weight (unfolded)",
                       c->device, n >> 20, lt_dtype_name(w->type));
    int rc =
        kn_cu_krepack(d, w->data, w->type, w->row_bytes, (int)w->rows, (int)w->cols, c->stream);
    if (!rc) rc = cu_rc(cudaStreamSynchronize(c->stream));
    if (rc) {
        cudaFree(d);
        return lt_errf(err, LT_ERR_IO, "CUDA device %d: unfolding a %s weight: %s", c->device,
                       lt_dtype_name(w->type), kn_cu_error_str(rc));
    }
    cudaFree((void *)w->data);
    w->data = d;
    w->row_bytes = grb;
    return LT_OK;
}

/* A quantized weight just placed in device memory, into the GPU's row layout. */
static int cu_prepare(wk_backend_t *be, wk_tensor_t *w, char *err) {
    cu_t *c = cu_of(be);
    if (kn_cu_row_bytes(w->type, w->cols, w->row_bytes) != w->row_bytes)
        return cu_unfold(c, w, err);
    if (!c->repack_tmp && cudaMalloc(&c->repack_tmp, REPACK_TMP) != cudaSuccess)
        return lt_errf(err, LT_ERR_NOMEM, "CUDA device %d: out of memory repacking a weight",
                       c->device);
    int rc = kn_cu_repack((void *)w->data, w->type, w->row_bytes, (int)w->rows, (int)w->cols,
                          c->repack_tmp, REPACK_TMP, c->stream);
    if (!rc) rc = cu_rc(cudaStreamSynchronize(c->stream));
    if (rc)
        return lt_errf(err, LT_ERR_IO, "CUDA device %d: repacking a weight: %s", c->device,
                       kn_cu_error_str(rc));
    return LT_OK;
}

static bool cu_supports(wk_backend_t *be, int type, int64_t cols) {
    (void)be;
    return kn_cu_matmul_supported(type, cols) != 0;
}

static int cu_weight(wk_backend_t *be, const void *src, int type, int64_t cols, int64_t row0,
                     int64_t nrows, wk_tensor_t *out, void **owned, char *err) {
    cu_t *c = cu_of(be);
    size_t rb = (size_t)lt_dtype_nbytes(type, cols), n = rb * (size_t)nrows;
    void *d = cu_alloc(be, n);
    if (!d)
        return lt_errf(err, LT_ERR_NOMEM, "CUDA device %d: out of memory for a %zu MiB weight",
                       c->device, n >> 20);
    cu_upload(be, d, (const uint8_t *)src + (size_t)row0 * rb, n);
    *out = (wk_tensor_t){.data = d, .type = type, .rows = nrows, .cols = cols, .row_bytes = rb};
    int rc = sticky_err(c, err);
    if (!rc) rc = cu_prepare(be, out, err); /* may move it (K-quants) */
    if (rc) {
        cudaFree((void *)out->data);
        return rc;
    }
    *owned = (void *)out->data;
    return LT_OK;
}

static int cu_reserve(wk_backend_t *be, int max_rows, int max_k, int max_ctx, int group,
                      char *err) {
    cu_t *c = cu_of(be);
    (void)group;
    if (max_rows <= c->max_rows && max_k <= c->max_k) return LT_OK;
    max_rows = max_rows > c->max_rows ? max_rows : c->max_rows;
    max_k = max_k > c->max_k ? max_k : c->max_k;
    cudaFree(c->repack_tmp); /* loading is over */
    c->repack_tmp = NULL;
    if (max_ctx > ATT_SPLIT_MIN && !c->att_part) { /* long contexts: split attention's states */
        int rows = max_rows < ATT_SPLIT_ROWS ? max_rows : ATT_SPLIT_ROWS;
        size_t n = (size_t)rows * KN_ATT_MAX_SPLITS * ((size_t)max_k + 2 * (size_t)max_k / 16);
        if (cudaMalloc((void **)&c->att_part, n * sizeof(float)) == cudaSuccess)
            c->att_part_bytes = n * sizeof(float);
        else /* not fatal: attention runs unsplit */
            c->att_part = NULL, cudaGetLastError();
    }
    graphs_drop(c); /* their kernels point into the old scratch */
    void *wt = cu_alloc(be, (size_t)KN_CU_DEQ_ROWS * max_k * 2);
    void *xh = cu_alloc(be, (size_t)max_rows * max_k * 2);
    void *rows = cu_alloc(be, (size_t)max_rows * sizeof(int32_t));
    void *xq = cu_alloc(be, (size_t)KN_CU_MATVEC_MAX_ROWS * max_k * 2);
    void *xs = cu_alloc(be, (size_t)KN_CU_MATVEC_MAX_ROWS * (max_k / 32 + 1) * 8);
    if (!wt || !xh || !rows || !xq || !xs) {
        cudaFree(wt);
        cudaFree(xh);
        cudaFree(rows);
        cudaFree(xq);
        cudaFree(xs);
        return lt_errf(err, LT_ERR_NOMEM, "CUDA device %d: out of memory for %d-row scratch",
                       c->device, max_rows);
    }
    cudaFree(c->mm.wtile);
    cudaFree(c->mm.xh);
    cudaFree(c->mm.xq);
    cudaFree(c->mm.xs);
    cudaFree(c->d_rows);
    c->mm.wtile = wt;
    c->mm.xh = xh;
    c->mm.xq = xq;
    c->mm.xs = xs;
    c->mm.max_k = max_k;
    c->d_rows = rows;
    c->max_rows = max_rows;
    c->max_k = max_k;
    return LT_OK;
}

/* ---- one step ---- */

static int grow_idx(cu_t *c, size_t need, char *err) {
    if (need <= c->idx_cap) return LT_OK;
    size_t cap = need * 2;
    int32_t *h = malloc(cap * sizeof *h), *d = NULL;
    if (!h || cudaMalloc((void **)&d, cap * sizeof *d) != cudaSuccess) {
        free(h);
        return lt_errf(err, LT_ERR_NOMEM, "CUDA device %d: out of memory for batch indices",
                       c->device);
    }
    graphs_drop(c); /* their kernels point into the old index buffer */
    free(c->h_idx);
    cudaFree(c->d_idx);
    c->h_idx = h;
    c->d_idx = d;
    c->idx_cap = cap;
    return LT_OK;
}

static int cu_begin(wk_backend_t *be, const wk_batch_t *b, char *err) {
    cu_t *c = cu_of(be);
    c->mm.quantized = NULL;
    int rc = sticky_err(c, err);
    if (rc) return rc;
    if (b->n_tokens > c->max_rows)
        return lt_errf(err, LT_ERR_INVAL, "batch of %d tokens over the backend's %d", b->n_tokens,
                       c->max_rows);
    int T = b->n_tokens, stride = 1, longest = 1;
    for (int s = 0; s < b->n_seqs; s++)
        if (b->block_table_len[s] > longest) longest = b->block_table_len[s];
    while (stride < longest) stride *= 2; /* a power of two: few step-graph shapes */
    /* prefill-sized batches: attention by tiles of a sequence's consecutive tokens */
    bool tiled = T > ATT_SPLIT_ROWS;
    size_t need = (size_t)3 * T + (size_t)b->n_logits + (size_t)b->n_seqs * stride +
                  (tiled ? (size_t)2 * T : 0);
    if ((rc = grow_idx(c, need, err))) return rc;
    int32_t *h = c->h_idx;
    memcpy(h, b->tokens, (size_t)T * 4);
    memcpy(h + T, b->pos, (size_t)T * 4);
    memcpy(h + 2 * T, b->seq, (size_t)T * 4);
    if (b->n_logits) memcpy(h + 3 * T, b->logits_rows, (size_t)b->n_logits * 4);
    int32_t *bt = h + 3 * T + b->n_logits;
    for (int s = 0; s < b->n_seqs; s++) {
        int len = b->block_table_len[s];
        memcpy(bt + (size_t)s * stride, b->block_tables[s], (size_t)len * 4);
        for (int j = len; j < stride; j++) bt[(size_t)s * stride + j] = 0;
    }
    int32_t *tiles = bt + (size_t)b->n_seqs * stride;
    int n_tiles = tiled ? kn_cu_att_tiles(b->seq, b->pos, T, KN_CU_ATT_TILE, tiles) : 0;
    need = (size_t)(tiles - h) + 2 * (size_t)n_tiles;
    if ((rc = cu_rc(cudaMemcpyAsync(c->d_idx, h, need * 4, cudaMemcpyHostToDevice, c->stream))))
        return lt_errf(err, LT_ERR_IO, "CUDA device %d: batch upload failed: %s", c->device,
                       kn_cu_error_str(rc));
    int32_t *d = c->d_idx;
    c->b = (kn_cu_batch_t){.n_tokens = T,
                           .tokens = d,
                           .pos = d + T,
                           .seq = d + 2 * T,
                           .block_tables = d + 3 * T + b->n_logits,
                           .bt_stride = stride,
                           .tiles = tiled ? d + (tiles - h) : NULL,
                           .n_tiles = n_tiles};
    c->d_logits_rows = d + 3 * T;
    c->hb = b;
    if (c->timing) { /* the step's start; the upload above is not counted */
        c->n_ev = 0;
        c->steps++;
        op_mark(c, NULL);
    }
    return LT_OK;
}

static void cu_embed(wk_backend_t *be, float *x, const wk_tensor_t *emb) {
    cu_t *c = cu_of(be);
    note(c, kn_cu_embed(x, emb->data, emb->type, emb->row_bytes, (int)emb->cols, &c->b, c->stream),
         "embed");
}

/* RMSNorm and SwiGLU feed matrix products: for a few rows they leave their output's quants for
 * the next one (one kernel fewer per product: ops.h kn_cu_rmsnorm_q). */
static void cu_rmsnorm(wk_backend_t *be, float *out, const float *x, const float *w, int rows,
                       int n, float eps) {
    cu_t *c = cu_of(be);
    note_keep(c, kn_cu_rmsnorm_q(out, x, w, rows, n, eps, &c->mm, c->stream), "rmsnorm");
}

static int cu_matmul(wk_backend_t *be, float *y, const float *x, const wk_tensor_t *w,
                     const float *bias, int rows) {
    cu_t *c = cu_of(be);
    if (c->sticky) return LT_ERR_IO;
    int rc = kn_cu_matmul(y, x, w->data, w->type, w->row_bytes, (int)w->rows, (int)w->cols, bias,
                          rows, &c->mm, c->stream);
    return note(c, rc, "matmul") ? LT_ERR_IO : LT_OK;
}

static int cu_matmul_n(wk_backend_t *be, float *const *y, const float *x,
                       const wk_tensor_t *const *w, const float *const *bias, int count, int rows) {
    cu_t *c = cu_of(be);
    if (c->sticky) return LT_ERR_IO;
    kn_cu_mat_t m[3];
    if (count > 3) { /* not asked by forward.c: one by one */
        for (int i = 0; i < count; i++) {
            int rc = cu_matmul(be, y[i], x, w[i], bias[i], rows);
            if (rc) return rc;
        }
        return LT_OK;
    }
    for (int i = 0; i < count; i++)
        m[i] = (kn_cu_mat_t){.w = w[i]->data,
                             .type = w[i]->type,
                             .row_bytes = w[i]->row_bytes,
                             .n = (int)w[i]->rows,
                             .y = y[i],
                             .bias = bias[i]};
    int rc = kn_cu_matmul_n(m, count, x, (int)w[0]->cols, rows, &c->mm, c->stream);
    return note(c, rc, "matmul") ? LT_ERR_IO : LT_OK;
}

static void cu_qk_rope(wk_backend_t *be, float *q, float *k, int nh, int nkv, int hd,
                       const float *q_norm, const float *k_norm, float eps, const wk_rope_t *rope) {
    cu_t *c = cu_of(be);
    note(c,
         kn_cu_qk_rope(q, k, nh, nkv, hd, q_norm, k_norm, eps, rope->inv_freq, rope->neox,
                       rope->attn_factor, &c->b, c->stream),
         "qk_rope");
}

static kn_cu_kv_t kv_desc(const wk_kv_cache_t *kv) {
    return (kn_cu_kv_t){.k = kv->k,
                        .v = kv->v,
                        .dtype = kv->dtype,
                        .n_blocks = kv->n_blocks,
                        .n_kv_head = kv->n_kv_head,
                        .block_size = kv->block_size,
                        .head_dim = kv->head_dim};
}

static void cu_kv_store(wk_backend_t *be, wk_kv_cache_t *kv, int layer, const float *k,
                        const float *v) {
    cu_t *c = cu_of(be);
    kn_cu_kv_t d = kv_desc(kv);
    note(c, kn_cu_kv_store(&d, layer, k, v, &c->b, c->stream), "kv_store");
}

static void cu_attention(wk_backend_t *be, float *out, const float *q, const wk_kv_cache_t *kv,
                         int layer, int nh, int nkv, int hd) {
    cu_t *c = cu_of(be);
    (void)nkv; /* the cache's */
    kn_cu_kv_t d = kv_desc(kv);
    /* a function of the step's shape (tokens, block-table width): the same in a graph's replays */
    int span = c->b.bt_stride * kv->block_size, splits = 1;
    if (c->att_part && c->b.n_tokens <= ATT_SPLIT_ROWS && span > ATT_SPLIT_MIN) {
        splits =
            span / ATT_SPLIT_SPAN < KN_ATT_MAX_SPLITS ? span / ATT_SPLIT_SPAN : KN_ATT_MAX_SPLITS;
        if ((size_t)c->b.n_tokens * nh * splits * (hd + 2) * sizeof(float) > c->att_part_bytes)
            splits = 1;
    }
    if (c->b.tiles)
        note(c, kn_cu_attention_tiled(out, q, &d, layer, nh, &c->b, c->stream), "attention");
    else /* its output's quants for the output projection, as RMSNorm's */
        note_keep(
            c,
            kn_cu_attention_q(out, q, &d, layer, nh, &c->b, c->att_part, splits, &c->mm, c->stream),
            "attention");
}

static void cu_swiglu(wk_backend_t *be, float *gate, const float *up, size_t n) {
    cu_t *c = cu_of(be);
    int rows = c->b.n_tokens;
    if (rows > 0 && n % (size_t)rows == 0)
        note_keep(c, kn_cu_swiglu_q(gate, up, rows, (int)(n / (size_t)rows), &c->mm, c->stream),
                  "swiglu");
    else
        note(c, kn_cu_swiglu(gate, up, n, c->stream), "swiglu");
}

static void cu_add_rmsnorm(wk_backend_t *be, float *x, const float *y, float *out, const float *w,
                           int rows, int n, float eps) {
    cu_t *c = cu_of(be);
    note_keep(c, kn_cu_add_rmsnorm_q(x, y, out, w, rows, n, eps, &c->mm, c->stream), "add_rmsnorm");
}

static void cu_qk_rope_store(wk_backend_t *be, float *q, float *k, const float *v, int nh, int nkv,
                             int hd, const float *q_norm, const float *k_norm, float eps,
                             const wk_rope_t *rope, wk_kv_cache_t *kv, int layer) {
    cu_t *c = cu_of(be);
    kn_cu_kv_t d = kv_desc(kv);
    note(c,
         kn_cu_qk_rope_store(q, k, v, nh, nkv, hd, q_norm, k_norm, eps, rope->inv_freq, rope->neox,
                             rope->attn_factor, &d, layer, &c->b, c->stream),
         "qk_rope_store");
}

static void cu_add(wk_backend_t *be, float *x, const float *y, size_t n) {
    cu_t *c = cu_of(be);
    note(c, kn_cu_add(x, y, n, c->stream), "add");
}

/* rows is host memory: the batch's logits rows are on the device already (begin); others are
 * uploaded. */
static void cu_gather(wk_backend_t *be, float *dst, const float *src, const int32_t *rows,
                      int n_rows, int n) {
    cu_t *c = cu_of(be);
    const int32_t *d_rows;
    const wk_batch_t *b = c->hb;
    if (b && rows >= b->logits_rows && rows + n_rows <= b->logits_rows + b->n_logits) {
        d_rows = c->d_logits_rows + (rows - b->logits_rows);
    } else if (n_rows <= c->max_rows) {
        note(c,
             cu_rc(cudaMemcpyAsync(c->d_rows, rows, (size_t)n_rows * 4, cudaMemcpyHostToDevice,
                                   c->stream)),
             "gather rows upload");
        d_rows = c->d_rows;
    } else {
        note(c, -(int)cudaErrorInvalidValue, "gather (too many rows)");
        return;
    }
    note(c, kn_cu_gather(dst, src, d_rows, n_rows, n, c->stream), "gather");
}

static int cu_kv_alloc(wk_backend_t *be, wk_kv_cache_t *kv, char *err) {
    cu_t *c = cu_of(be);
    size_t n = (size_t)kv->n_layer * kv->n_blocks * kv->n_kv_head * kv->block_size * kv->head_dim *
               (kv->dtype == LT_DTYPE_F32 ? 4 : 2);
    kv->k = cu_alloc(be, n);
    kv->v = cu_alloc(be, n);
    if (!kv->k || !kv->v)
        return lt_errf(err, LT_ERR_NOMEM, "CUDA device %d: out of memory for a KV cache of %zu MiB",
                       c->device, 2 * n >> 20);
    if (cudaMemset(kv->k, 0, n) != cudaSuccess || cudaMemset(kv->v, 0, n) != cudaSuccess)
        return lt_errf(err, LT_ERR_IO, "CUDA device %d: KV cache clear failed", c->device);
    return LT_OK;
}

/* ---- recorded steps: CUDA graphs ---- */

static void cu_graph_reset(wk_backend_t *be) {
    graphs_drop(cu_of(be));
}

/* Recordings off for good, with a warning saying why; returns 1 (graph_record's "could not
 * start"). */
static int graphs_fail(cu_t *c, const char *why, cudaError_t e) {
    LT_WARN("CUDA device %d: %s (%s): CUDA graphs off, steps run eagerly", c->device, why,
            e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA error");
    cudaGetLastError();
    c->graphs_off = true;
    graphs_drop(c);
    return 1;
}

/* Every kernel argument of a step is a function of its shape (tokens, logits rows, block-table
 * stride: begin() rounds it up to a power of two) and of the buffers it runs on (the cache, the
 * scratch, the index buffer and the backend's own scratch, whose reallocation drops every
 * graph); tokens, positions and block tables are read from device memory. A shape is recorded
 * the second time it runs, and checked against that run. */
static int cu_graph_begin(wk_backend_t *be, const void *kv, const void *ctx, int n_logits) {
    cu_t *c = cu_of(be);
    if (c->graphs_off || c->timing || c->sticky || c->b.n_tokens > GRAPH_MAX_TOKENS)
        return WK_GRAPH_OFF;
    struct cu_graph *g = NULL;
    for (int i = 0; i < c->n_graphs && !g; i++) {
        struct cu_graph *h = &c->graphs[i];
        if (h->n_tokens == c->b.n_tokens && h->n_logits == n_logits &&
            h->bt_stride == c->b.bt_stride && h->kv == kv && h->ctx == ctx)
            g = h;
    }
    if (!g) {
        if (c->n_graphs == GRAPHS_MAX) return WK_GRAPH_OFF;
        g = &c->graphs[c->n_graphs++];
        *g = (struct cu_graph){.n_tokens = c->b.n_tokens,
                               .n_logits = n_logits,
                               .bt_stride = c->b.bt_stride,
                               .kv = kv,
                               .ctx = ctx};
    }
    if (g->exec) {
        cudaError_t e = cudaGraphLaunch(g->exec, c->stream);
        if (e == cudaSuccess) return WK_GRAPH_REPLAYED;
        graphs_fail(c, "replaying a step graph failed", e);
        return WK_GRAPH_OFF;
    }
    if (g->seen++ < 1) return WK_GRAPH_OFF;
    c->recording = (int)(g - c->graphs);
    return WK_GRAPH_RECORD;
}

static int cu_graph_record(wk_backend_t *be, const float *ref, size_t n, char *err) {
    cu_t *c = cu_of(be);
    (void)err;
    c->checking = ref != NULL;
    if (!ref) {
        cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
        return e == cudaSuccess ? LT_OK : graphs_fail(c, "could not start recording a step", e);
    }
    if (n > c->ref_cap) {
        cudaFree(c->ref);
        c->ref = NULL;
        c->ref_cap = 0;
        if (cudaMalloc((void **)&c->ref, n * sizeof(float)) != cudaSuccess)
            return graphs_fail(c, "no memory to check a step graph", cudaGetLastError());
        c->ref_cap = n;
    }
    cudaError_t e =
        cudaMemcpyAsync(c->ref, ref, n * sizeof(float), cudaMemcpyDeviceToDevice, c->stream);
    if (e == cudaSuccess) e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    return e == cudaSuccess ? LT_OK : graphs_fail(c, "could not start recording a step", e);
}

static int cu_graph_end(wk_backend_t *be, float *out, size_t n, int rc, char *err) {
    cu_t *c = cu_of(be);
    (void)err;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    int idx = c->recording;
    c->recording = -1;
    const char *why = NULL;
    if (rc || c->sticky)
        why = "an operation failed while recording a step";
    else if (e != cudaSuccess || !graph)
        why = "recording a step failed";
    else if ((e = cudaGraphInstantiate(&exec, graph, 0)) != cudaSuccess)
        why = "instantiating";
    else if ((e = cudaGraphLaunch(exec, c->stream)) != cudaSuccess)
        why = "replaying";
    if (graph) cudaGraphDestroy(graph);
    if (!c->checking) { /* the recording is the step: it ran (graph launch) or nothing did */
        if (!why) {
            if (idx >= 0 && idx < c->n_graphs)
                c->graphs[idx].exec = exec;
            else
                cudaGraphExecDestroy(exec);
            return LT_OK;
        }
        if (exec) cudaGraphExecDestroy(exec);
        c->sticky = 0;
        return graphs_fail(c, why, e);
    }
    float *a = NULL, *b = NULL;
    if (!why) { /* the replay's logits against the eager run's, bit for bit */
        a = malloc(n * sizeof(float)), b = malloc(n * sizeof(float));
        if (!a || !b)
            why = "no host memory to check a step graph";
        else if ((e = cudaMemcpyAsync(a, out, n * sizeof(float), cudaMemcpyDeviceToHost,
                                      c->stream)) != cudaSuccess ||
                 (e = cudaMemcpyAsync(b, c->ref, n * sizeof(float), cudaMemcpyDeviceToHost,
                                      c->stream)) != cudaSuccess ||
                 (e = cudaStreamSynchronize(c->stream)) != cudaSuccess)
            why = "checking a step graph";
        else if (memcmp(a, b, n * sizeof(float)) != 0)
            why = "a step graph's logits differ from the same step run eagerly";
    }
    free(a), free(b);
    if (why) {
        if (exec) cudaGraphExecDestroy(exec);
        c->sticky = 0; /* the eager run's results stand */
        graphs_fail(c, why, e);
        cudaMemcpyAsync(out, c->ref, n * sizeof(float), cudaMemcpyDeviceToDevice, c->stream);
        return LT_OK;
    }
    if (idx >= 0 && idx < c->n_graphs)
        c->graphs[idx].exec = exec;
    else
        cudaGraphExecDestroy(exec);
    return LT_OK;
}

static int cu_mem_info(wk_backend_t *be, size_t *free_bytes, size_t *total_bytes, char *err) {
    cu_t *c = cu_of(be);
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) e = cudaMemGetInfo(free_bytes, total_bytes);
    if (e != cudaSuccess)
        return lt_errf(err, LT_ERR_IO, "CUDA device %d: cudaMemGetInfo: %s", c->device,
                       cudaGetErrorString(e));
    return LT_OK;
}

static void cu_destroy(wk_backend_t *be) {
    cu_t *c = cu_of(be);
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->timing) {
        op_report(c);
        for (int i = 0; i < OP_EVENTS; i++) cudaEventDestroy(c->ev[i]);
    }
    cudaFree(c->mm.wtile);
    cudaFree(c->mm.xh);
    cudaFree(c->mm.xq);
    cudaFree(c->mm.xs);
    cudaFree(c->repack_tmp);
    cudaFree(c->att_part);
    graphs_drop(c);
    cudaFree(c->ref);
    cudaFree(c->d_rows);
    cudaFree(c->d_idx);
    free(c->h_idx);
    if (c->blas) cublasDestroy(c->blas);
    cudaFree(c->blas_ws);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static const wk_backend_ops_t CUDA_OPS = {
    .name = "cuda",
    .alloc = cu_alloc,
    .release = cu_release,
    .upload = cu_upload,
    .to_host = cu_to_host,
    .supports = cu_supports,
    .weight = cu_weight,
    .prepare = cu_prepare,
    .reserve = cu_reserve,
    .begin = cu_begin,
    .embed = cu_embed,
    .rmsnorm = cu_rmsnorm,
    .matmul = cu_matmul,
    .matmul_n = cu_matmul_n,
    .qk_rope = cu_qk_rope,
    .kv_store = cu_kv_store,
    .attention = cu_attention,
    .swiglu = cu_swiglu,
    .add = cu_add,
    .add_rmsnorm = cu_add_rmsnorm,
    .qk_rope_store = cu_qk_rope_store,
    .gather = cu_gather,
    .kv_alloc = cu_kv_alloc,
    .mem_info = cu_mem_info,
    .graph_begin = cu_graph_begin,
    .graph_record = cu_graph_record,
    .graph_end = cu_graph_end,
    .graph_reset = cu_graph_reset,
    .destroy = cu_destroy,
};

/* The device, its driver and runtime, a stream and a cuBLAS handle on it. */
static int cu_open(cu_t *c, int device, char *err) {
    int n = 0, drv = 0, rt = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    if (drv == 0 || e == cudaErrorNoDevice)
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "--device cuda: no CUDA device visible (no NVIDIA driver or GPU: %s)",
                       cudaGetErrorString(e));
    if (e == cudaErrorInsufficientDriver || drv < rt)
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "--device cuda: the NVIDIA driver supports CUDA %d.%d, this build needs "
                       "%d.%d (%s)",
                       drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10,
                       cudaGetErrorString(e));
    if (e != cudaSuccess || n == 0)
        return lt_errf(err, LT_ERR_UNSUPPORTED, "--device cuda: no CUDA device visible (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount is 0");
    if (device < 0 || device >= n)
        return lt_errf(err, LT_ERR_RANGE,
                       "--device cuda: device %d asked for, %d visible (worker rank r uses "
                       "device r of CUDA_VISIBLE_DEVICES)",
                       device, n);
    c->device = device;
    if ((e = cudaSetDevice(device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
        return lt_errf(err, LT_ERR_IO, "CUDA device %d: %s", device, cudaGetErrorString(e));
    cublasStatus_t bs = cublasCreate(&c->blas);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(c->blas, c->stream);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return lt_errf(err, LT_ERR_IO, "CUDA device %d: cuBLAS: %s", device,
                       cublasGetStatusString(bs));
    /* cuBLAS's workspace ours, so that a recorded step (a CUDA graph) allocates nothing */
    if ((e = cudaMalloc(&c->blas_ws, BLAS_WS)) != cudaSuccess ||
        (bs = cublasSetWorkspace(c->blas, c->blas_ws, BLAS_WS)) != CUBLAS_STATUS_SUCCESS)
        return lt_errf(err, LT_ERR_IO, "CUDA device %d: cuBLAS workspace: %s", device,
                       e != cudaSuccess ? cudaGetErrorString(e) : cublasGetStatusString(bs));
    c->mm.cublas = c->blas;
    c->recording = -1;
    const char *t = getenv("LANTERN_CUDA_OP_TIMES");
    if (t && *t && strcmp(t, "0") != 0) {
        for (int i = 0; i < OP_EVENTS; i++)
            if (cudaEventCreate(&c->ev[i]) != cudaSuccess)
                return lt_errf(err, LT_ERR_IO, "CUDA device %d: LANTERN_CUDA_OP_TIMES: no events",
                               device);
        c->timing = true;
        LT_INFO("CUDA device %d: LANTERN_CUDA_OP_TIMES: timing every operation (no graphs)",
                device);
    }
    return LT_OK;
}

wk_backend_t *wk_backend_cuda_create_mod(int device, char *err) {
    wk_backend_t *be = calloc(1, sizeof *be);
    cu_t *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        lt_errf(err, LT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (cu_open(c, device, err)) {
        cu_destroy((wk_backend_t *)&(wk_backend_t){.impl = c});
        free(be);
        return NULL;
    }
    be->ops = &CUDA_OPS;
    be->impl = c;
    return be;
}

void *wk_backend_cuda_stream_mod(wk_backend_t *be) {
    return be && be->ops == &CUDA_OPS ? cu_of(be)->stream : NULL;
}

#endif
