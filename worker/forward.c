/*
 * forward.c — the graph of a Llama-family decoder, once, over a batch of tokens from several
 * sequences, reading and writing a paged KV cache through per-sequence block tables.
 *
 * Every step is a batched operation of the model's backend (backend.h): RMSNorm, matrix products
 * from weights in their stored type, RoPE, KV writes, paged attention, SwiGLU, residual adds and,
 * under tensor parallelism, an all-reduce after attention and after the MLP. This file knows the
 * model's shape, not the hardware: the CPU and a GPU backend run the same graph. All buffers come
 * from wk_ctx_t, sized once in backend memory.
 */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"

/* ---- scratch ---- */

#define LOGITS_CHUNK 32 /* logits rows computed per vocabulary product */

struct wk_ctx {
    wk_backend_t *be; /* the model's */
    int max_tokens, max_ctx;
    float *x;                  /* (max_tokens, dim) residual stream */
    float *xb;                 /* (max_tokens, dim) normed input / projection output */
    float *q;                  /* (max_tokens, n_head_local * head_dim) */
    float *k;                  /* (max_tokens, n_kv_head_local * head_dim) */
    float *v;                  /* (max_tokens, n_kv_head_local * head_dim) */
    float *att;                /* (max_tokens, n_head_local * head_dim) attention output */
    float *hb;                 /* (max_tokens, hidden_local) */
    float *hb2;                /* (max_tokens, hidden_local) */
    float *logits;             /* (LOGITS_CHUNK, vocab_size) before the copy to the host */
    wk_allreduce_fn allreduce; /* tensor parallel: sums partial outputs across ranks */
    void *allreduce_user;
    bool eager; /* never recorded steps (--enforce-eager) */
};

void wk_ctx_set_allreduce(wk_ctx_t *c, wk_allreduce_fn fn, void *user) {
    c->allreduce = fn;
    c->allreduce_user = user;
}

void wk_ctx_set_eager(wk_ctx_t *c, bool eager) {
    c->eager = eager;
}

int wk_ctx_create(const wk_model_t *m, int max_tokens, int max_ctx, wk_ctx_t **out, char *err) {
    *out = NULL;
    if (max_tokens <= 0 || max_ctx <= 0)
        return lt_errf(err, LT_ERR_INVAL, "wk_ctx_create: sizes must be positive");
    const lt_model_config_t *c = &m->cfg;
    wk_ctx_t *x = calloc(1, sizeof *x);
    if (!x) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    wk_backend_t *be = m->be;
    x->be = be;
    x->max_tokens = max_tokens;
    x->max_ctx = max_ctx;
    size_t T = (size_t)max_tokens;
    size_t qd = (size_t)m->n_head_local * c->head_dim,
           kvd = (size_t)m->n_kv_head_local * c->head_dim;
    int max_k = c->dim > m->hidden_local ? c->dim : m->hidden_local;
    if ((int)qd > max_k) max_k = (int)qd;
    x->x = be->ops->alloc(be, T * c->dim * sizeof(float));
    x->xb = be->ops->alloc(be, T * c->dim * sizeof(float));
    x->q = be->ops->alloc(be, T * qd * sizeof(float));
    x->k = be->ops->alloc(be, T * kvd * sizeof(float));
    x->v = be->ops->alloc(be, T * kvd * sizeof(float));
    x->att = be->ops->alloc(be, T * qd * sizeof(float));
    x->hb = be->ops->alloc(be, T * m->hidden_local * sizeof(float));
    x->hb2 = be->ops->alloc(be, T * m->hidden_local * sizeof(float));
    x->logits = be->ops->alloc(be, (size_t)LOGITS_CHUNK * c->vocab_size * sizeof(float));
    if (!x->x || !x->xb || !x->q || !x->k || !x->v || !x->att || !x->hb || !x->hb2 || !x->logits) {
        wk_ctx_destroy(&x);
        return lt_errf(err, LT_ERR_NOMEM, "out of memory for %d-token scratch", max_tokens);
    }
    int rc =
        be->ops->reserve(be, max_tokens, max_k, max_ctx, m->n_head_local / m->n_kv_head_local, err);
    if (rc) {
        wk_ctx_destroy(&x);
        return rc;
    }
    *out = x;
    return LT_OK;
}

void wk_ctx_destroy(wk_ctx_t **cp) {
    wk_ctx_t *c = *cp;
    if (!c) return;
    if (c->be->ops->graph_reset) c->be->ops->graph_reset(c->be);
    float *bufs[] = {c->x, c->xb, c->q, c->k, c->v, c->att, c->hb, c->hb2, c->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) c->be->ops->release(c->be, bufs[i]);
    free(c);
    *cp = NULL;
}

/* ---- KV cache ---- */

size_t wk_kv_block_bytes(const wk_model_t *m, int block_size, int dtype) {
    return (size_t)2 * m->cfg.n_layer * m->n_kv_head_local * block_size * m->cfg.head_dim *
           (dtype == LT_DTYPE_F32 ? 4 : 2);
}

int wk_kv_blocks_for(size_t free_bytes, size_t total_bytes, double util, size_t block_bytes,
                     long long *out, char *err) {
    *out = 0;
    if (!(util > 0.0 && util <= 1.0))
        return lt_errf(err, LT_ERR_INVAL, "--gpu-memory-utilization %g: want a fraction in (0, 1]",
                       util);
    double keep = (1.0 - util) * (double)total_bytes, budget = (double)free_bytes - keep;
    if (block_bytes == 0 || budget < (double)block_bytes)
        return lt_errf(err, LT_ERR_RANGE,
                       "--gpu-memory-utilization %g: the model, its scratch and a profiling step "
                       "leave %.2f GiB free of %.2f GiB, and %.2f GiB must stay unused: no room "
                       "for one %zu-byte KV block (raise it, or lower --max-num-batched-tokens)",
                       util, free_bytes / 1073741824.0, total_bytes / 1073741824.0,
                       keep / 1073741824.0, block_bytes);
    double n = budget / (double)block_bytes;
    *out = n > (double)(1 << 24) ? (1 << 24) : (long long)n;
    return LT_OK;
}

int wk_kv_cache_create(const wk_model_t *m, int n_blocks, int block_size, int dtype,
                       wk_kv_cache_t **out, char *err) {
    *out = NULL;
    if (n_blocks <= 0 || block_size <= 0)
        return lt_errf(err, LT_ERR_INVAL, "kv cache: block count and size must be positive");
    if (dtype != LT_DTYPE_F32 && dtype != LT_DTYPE_F16 && dtype != LT_DTYPE_BF16)
        return lt_errf(err, LT_ERR_UNSUPPORTED, "kv cache: element type %s (want F32, F16, BF16)",
                       lt_dtype_name(dtype));
    wk_kv_cache_t *kv = calloc(1, sizeof *kv);
    if (!kv) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    kv->n_layer = m->cfg.n_layer;
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->n_kv_head = m->n_kv_head_local;
    kv->head_dim = m->cfg.head_dim;
    kv->dtype = dtype;
    kv->be = m->be;
    int rc = m->be->ops->kv_alloc(m->be, kv, err);
    if (rc) {
        wk_kv_cache_destroy(&kv);
        return rc;
    }
    *out = kv;
    return LT_OK;
}

void wk_kv_cache_destroy(wk_kv_cache_t **kvp) {
    wk_kv_cache_t *kv = *kvp;
    if (!kv) return;
    if (kv->be && kv->be->ops->graph_reset) kv->be->ops->graph_reset(kv->be);
    if (kv->k) kv->be->ops->release(kv->be, kv->k);
    if (kv->v) kv->be->ops->release(kv->be, kv->v);
    free(kv);
    *kvp = NULL;
}

/* ---- validation ---- */

static int batch_validate(const wk_model_t *m, const wk_kv_cache_t *kv, const wk_ctx_t *c,
                          const wk_batch_t *b, char *err) {
    if (b->n_tokens <= 0 || b->n_tokens > c->max_tokens)
        return lt_errf(err, LT_ERR_INVAL, "batch of %d tokens (limit %d)", b->n_tokens,
                       c->max_tokens);
    if (b->n_logits < 0 || b->n_logits > b->n_tokens)
        return lt_errf(err, LT_ERR_INVAL, "batch asks for %d logits rows", b->n_logits);
    for (int i = 0; i < b->n_logits; i++)
        if (b->logits_rows[i] < 0 || b->logits_rows[i] >= b->n_tokens)
            return lt_errf(err, LT_ERR_INVAL, "logits row %d out of range", b->logits_rows[i]);
    for (int t = 0; t < b->n_tokens; t++) {
        int tok = b->tokens[t], p = b->pos[t], s = b->seq[t];
        if (tok < 0 || tok >= m->cfg.vocab_size)
            return lt_errf(err, LT_ERR_INVAL, "token id %d out of range (vocab %d)", tok,
                           m->cfg.vocab_size);
        if (s < 0 || s >= b->n_seqs)
            return lt_errf(err, LT_ERR_INVAL, "sequence %d out of range", s);
        if (p < 0 || p >= c->max_ctx)
            return lt_errf(err, LT_ERR_INVAL, "position %d out of range (context %d)", p,
                           c->max_ctx);
        /* every block the token's attention reads must exist */
        int need = p / kv->block_size + 1;
        if (need > b->block_table_len[s])
            return lt_errf(err, LT_ERR_INVAL, "position %d of sequence %d has no block", p, s);
        for (int j = 0; j < need; j++) {
            int blk = b->block_tables[s][j];
            if (blk < 0 || blk >= kv->n_blocks)
                return lt_errf(err, LT_ERR_INVAL, "block id %d out of range", blk);
        }
    }
    return LT_OK;
}

/* ---- forward ---- */

/* Row-parallel outputs (attention o_proj, MLP down_proj) are partial sums on each rank. */
static int tp_allreduce(wk_ctx_t *c, float *buf, size_t n, char *err) {
    if (!c->allreduce)
        return lt_errf(err, LT_ERR_INVAL, "tensor-parallel model without an all-reduce");
    int rc = c->allreduce(buf, n, c->allreduce_user);
    return rc ? lt_errf(err, rc, "all-reduce failed: %s", lt_err_str(rc)) : LT_OK;
}

static int matmul(wk_backend_t *be, float *y, const float *x, const wk_tensor_t *w,
                  const float *bias, int rows, char *err) {
    int rc = be->ops->matmul(be, y, x, w, bias, rows);
    return rc ? lt_errf(err, rc, "matrix product (%lld x %lld, type %s) failed", (long long)w->rows,
                        (long long)w->cols, lt_dtype_name(w->type))
              : LT_OK;
}

/* y[i] = x @ w[i]^T [+ bias[i]] for count weights sharing x: in one pass where the backend can. */
static int matmul_n(wk_backend_t *be, float *const *y, const float *x, const wk_tensor_t *const *w,
                    const float *const *bias, int count, int rows, char *err) {
    if (!be->ops->matmul_n) {
        for (int i = 0; i < count; i++) {
            int rc = matmul(be, y[i], x, w[i], bias[i], rows, err);
            if (rc) return rc;
        }
        return LT_OK;
    }
    int rc = be->ops->matmul_n(be, y, x, w, bias, count, rows);
    return rc ? lt_errf(err, rc, "matrix products (%d of %lld inputs, type %s) failed", count,
                        (long long)w[0]->cols, lt_dtype_name(w[0]->type))
              : LT_OK;
}

/* c->x += c->xb (a block's output, all-reduced), then c->xb = RMSNorm(c->x) * w: fused where the
 * backend can (one kernel on CUDA), add then rmsnorm otherwise. */
static void add_rmsnorm(const wk_model_t *m, wk_ctx_t *c, const float *w, int T) {
    wk_backend_t *be = m->be;
    int dim = m->cfg.dim;
    if (be->ops->add_rmsnorm) {
        be->ops->add_rmsnorm(be, c->x, c->xb, c->xb, w, T, dim, m->cfg.norm_eps);
    } else {
        be->ops->add(be, c->x, c->xb, (size_t)T * dim);
        be->ops->rmsnorm(be, c->xb, c->x, w, T, dim, m->cfg.norm_eps);
    }
}

/* One decoder layer over the batch's T rows of c->x. The residual of the previous layer's MLP
 * (c->xb) is added here, with this layer's first RMSNorm (first: there is none, layer 0); this
 * layer's is left in c->xb for the next (layers_forward adds the last). */
static int layer_forward(const wk_model_t *m, wk_kv_cache_t *kv, wk_ctx_t *c, int l, int T,
                         char *err) {
    const lt_model_config_t *cf = &m->cfg;
    const wk_layer_t *L = &m->layers[l];
    wk_backend_t *be = m->be;
    const wk_backend_ops_t *op = be->ops;
    int dim = cf->dim, hd = cf->head_dim, nh = m->n_head_local, nkv = m->n_kv_head_local;
    size_t n = (size_t)T * dim;
    int rc;

    if (l == 0)
        op->rmsnorm(be, c->xb, c->x, L->attn_norm, T, dim, cf->norm_eps);
    else
        add_rmsnorm(m, c, L->attn_norm, T);
    float *qkv[3] = {c->q, c->k, c->v};
    const wk_tensor_t *wqkv[3] = {&L->wq, &L->wk, &L->wv};
    const float *bqkv[3] = {L->bq, L->bk, L->bv};
    if ((rc = matmul_n(be, qkv, c->xb, wqkv, bqkv, 3, T, err))) return rc;
    if (op->qk_rope_store) {
        op->qk_rope_store(be, c->q, c->k, c->v, nh, nkv, hd, L->q_norm, L->k_norm, cf->norm_eps,
                          &m->rope, kv, l);
    } else {
        op->qk_rope(be, c->q, c->k, nh, nkv, hd, L->q_norm, L->k_norm, cf->norm_eps, &m->rope);
        op->kv_store(be, kv, l, c->k, c->v);
    }
    op->attention(be, c->att, c->q, kv, l, nh, nkv, hd);
    if ((rc = matmul(be, c->xb, c->att, &L->wo, NULL, T, err))) return rc;
    if (m->tp_size > 1 && (rc = tp_allreduce(c, c->xb, n, err))) return rc;
    add_rmsnorm(m, c, L->ffn_norm, T);
    float *gu[2] = {c->hb, c->hb2};
    const wk_tensor_t *wgu[2] = {&L->w_gate, &L->w_up};
    const float *no_bias[2] = {NULL, NULL};
    if ((rc = matmul_n(be, gu, c->xb, wgu, no_bias, 2, T, err))) return rc;
    op->swiglu(be, c->hb, c->hb2, (size_t)T * m->hidden_local);
    if ((rc = matmul(be, c->xb, c->hb, &L->w_down, NULL, T, err))) return rc;
    if (m->tp_size > 1 && (rc = tp_allreduce(c, c->xb, n, err))) return rc;
    return LT_OK;
}

/* Every layer over the batch: the residual stream c->x, and the KV cache. */
static int layers_forward(const wk_model_t *m, wk_kv_cache_t *kv, wk_ctx_t *c, const wk_batch_t *b,
                          char *err) {
    m->be->ops->embed(m->be, c->x, &m->tok_embd);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        int rc = layer_forward(m, kv, c, l, b->n_tokens, err);
        if (rc) return rc;
    }
    if (m->cfg.n_layer > 0) /* the last layer's MLP output */
        m->be->ops->add(m->be, c->x, c->xb, (size_t)b->n_tokens * m->cfg.dim);
    return LT_OK;
}

/* The logits of rows [row0, row0 + nr) of the batch in c->logits (backend memory): only the
 * requested rows go through the final norm and the vocabulary projection. */
static int logits_rows(const wk_model_t *m, wk_ctx_t *c, const wk_batch_t *b, int row0, int nr,
                       char *err) {
    const lt_model_config_t *cf = &m->cfg;
    wk_backend_t *be = m->be;
    be->ops->gather(be, c->xb, c->x, b->logits_rows + row0, nr, cf->dim);
    be->ops->rmsnorm(be, c->xb, c->xb, m->out_norm, nr, cf->dim, cf->norm_eps);
    return matmul(be, c->logits, c->xb, &m->output, NULL, nr, err);
}

int wk_forward(const wk_model_t *m, wk_kv_cache_t *kv, wk_ctx_t *c, const wk_batch_t *b,
               float *logits, char *err) {
    /* HOT */
    int rc = batch_validate(m, kv, c, b, err);
    if (rc) return rc;
    wk_backend_t *be = m->be;
    const wk_backend_ops_t *op = be->ops;
    int vocab = m->cfg.vocab_size, nl = b->n_logits;
    if ((rc = op->begin(be, b, err))) return rc;
    /* one chunk of logits: the backend may replay a recording of the step */
    int mode = WK_GRAPH_OFF;
    if (op->graph_begin && !c->eager && nl <= LOGITS_CHUNK && (nl > 0 || m->tp_size > 1))
        mode = op->graph_begin(be, kv, c, nl);
    size_t n = (size_t)nl * vocab;
    if (mode == WK_GRAPH_RECORD && m->tp_size == 1) {
        if ((rc = layers_forward(m, kv, c, b, err)) || (rc = logits_rows(m, c, b, 0, nl, err)) ||
            (rc = op->graph_record(be, c->logits, n, err)) < 0)
            return rc;
        if (rc == LT_OK) { /* recording: the same operations again, then replayed and checked */
            if (!(rc = layers_forward(m, kv, c, b, err))) rc = logits_rows(m, c, b, 0, nl, err);
            if ((rc = op->graph_end(be, c->logits, n, rc, err))) return rc;
        }
    } else if (mode == WK_GRAPH_RECORD) {
        /* tensor parallel: every rank runs each step once, or their all-reduces would not pair
         * (a rank with no logits rows records nothing); the recording is the step, unchecked
         * (test_cuda_tp compares recorded and eager runs) */
        if ((rc = op->graph_record(be, NULL, 0, err)) < 0) return rc;
        if (rc == LT_OK) {
            if (!(rc = layers_forward(m, kv, c, b, err)) && nl > 0)
                rc = logits_rows(m, c, b, 0, nl, err);
            if ((rc = op->graph_end(be, c->logits, n, rc, err)) < 0) return rc;
        }
        if (rc > 0) mode = WK_GRAPH_OFF; /* not recorded: nothing ran */
    }
    if (mode == WK_GRAPH_OFF && (rc = layers_forward(m, kv, c, b, err))) return rc;
    /* replayed or recorded: the one chunk is in c->logits already */
    for (int i = 0; i < nl; i += LOGITS_CHUNK) {
        int nr = nl - i < LOGITS_CHUNK ? nl - i : LOGITS_CHUNK;
        if (mode == WK_GRAPH_OFF && (rc = logits_rows(m, c, b, i, nr, err))) return rc;
        op->to_host(be, logits + (size_t)i * vocab, c->logits, (size_t)nr * vocab);
    }
    if (nl == 0) op->to_host(be, NULL, NULL, 0); /* no logits: still the step's end, waited for */
    return LT_OK;
}
