/*
 * forward.c — the CPU forward pass of a Llama-family decoder over a batch of tokens from several
 * sequences, reading and writing a paged KV cache through per-sequence block tables.
 *
 * Matrix products go through OpenBLAS over the whole batch (prefill of a prompt is one sgemm per
 * weight); attention is computed per (token, head) in OpenMP threads, each token attending to its
 * own sequence's cached positions 0..pos. All buffers come from wk_ctx_t, sized once.
 */
#include "worker.h"

#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "lt.h"

/* ---- scratch ---- */

struct wk_ctx {
    int max_tokens, max_ctx, n_threads;
    float *x;                  /* (max_tokens, dim) residual stream */
    float *xb;                 /* (max_tokens, dim) normed input / projection output */
    float *q;                  /* (max_tokens, n_head_local * head_dim) */
    float *k;                  /* (max_tokens, n_kv_head_local * head_dim) */
    float *v;                  /* (max_tokens, n_kv_head_local * head_dim) */
    float *att;                /* (max_tokens, n_head_local * head_dim) attention output */
    float *hb;                 /* (max_tokens, hidden_local) */
    float *hb2;                /* (max_tokens, hidden_local) */
    float *score;              /* (n_threads, max_ctx) */
    wk_allreduce_fn allreduce; /* tensor parallel: sums partial outputs across ranks */
    void *allreduce_user;
};

void wk_ctx_set_allreduce(wk_ctx_t *c, wk_allreduce_fn fn, void *user) {
    c->allreduce = fn;
    c->allreduce_user = user;
}

int wk_ctx_create(const wk_model_t *m, int max_tokens, int max_ctx, wk_ctx_t **out, char *err) {
    *out = NULL;
    if (max_tokens <= 0 || max_ctx <= 0)
        return lt_errf(err, LT_ERR_INVAL, "wk_ctx_create: sizes must be positive");
    const lt_model_config_t *c = &m->cfg;
    wk_ctx_t *x = calloc(1, sizeof *x);
    if (!x) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    x->max_tokens = max_tokens;
    x->max_ctx = max_ctx;
    x->n_threads = omp_get_max_threads();
    size_t T = (size_t)max_tokens;
    size_t qd = (size_t)m->n_head_local * c->head_dim,
           kvd = (size_t)m->n_kv_head_local * c->head_dim;
    x->x = malloc(T * c->dim * sizeof(float));
    x->xb = malloc(T * c->dim * sizeof(float));
    x->q = malloc(T * qd * sizeof(float));
    x->k = malloc(T * kvd * sizeof(float));
    x->v = malloc(T * kvd * sizeof(float));
    x->att = malloc(T * qd * sizeof(float));
    x->hb = malloc(T * m->hidden_local * sizeof(float));
    x->hb2 = malloc(T * m->hidden_local * sizeof(float));
    int group = m->n_head_local / m->n_kv_head_local;
    x->score = malloc((size_t)x->n_threads * group * max_ctx * sizeof(float));
    if (!x->x || !x->xb || !x->q || !x->k || !x->v || !x->att || !x->hb || !x->hb2 || !x->score) {
        wk_ctx_destroy(&x);
        return lt_errf(err, LT_ERR_NOMEM, "out of memory for %d-token scratch", max_tokens);
    }
    *out = x;
    return LT_OK;
}

void wk_ctx_destroy(wk_ctx_t **cp) {
    wk_ctx_t *c = *cp;
    if (!c) return;
    free(c->x);
    free(c->xb);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->hb);
    free(c->hb2);
    free(c->score);
    free(c);
    *cp = NULL;
}

/* ---- KV cache ---- */

int wk_kv_cache_create(const wk_model_t *m, int n_blocks, int block_size, wk_kv_cache_t **out,
                       char *err) {
    *out = NULL;
    if (n_blocks <= 0 || block_size <= 0)
        return lt_errf(err, LT_ERR_INVAL, "kv cache: block count and size must be positive");
    wk_kv_cache_t *kv = calloc(1, sizeof *kv);
    if (!kv) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    kv->n_layer = m->cfg.n_layer;
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->n_kv_head = m->n_kv_head_local;
    kv->head_dim = m->cfg.head_dim;
    size_t n = (size_t)kv->n_layer * n_blocks * kv->n_kv_head * block_size * kv->head_dim;
    kv->k = calloc(n, sizeof(float));
    kv->v = calloc(n, sizeof(float));
    if (!kv->k || !kv->v) {
        wk_kv_cache_destroy(&kv);
        return lt_errf(err, LT_ERR_NOMEM, "out of memory for a KV cache of %zu MiB",
                       2 * n * sizeof(float) >> 20);
    }
    *out = kv;
    return LT_OK;
}

void wk_kv_cache_destroy(wk_kv_cache_t **kvp) {
    wk_kv_cache_t *kv = *kvp;
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv);
    *kvp = NULL;
}

/* Offset of (layer, block, kv_head, slot) in kv->k / kv->v. */
static inline size_t kv_off(const wk_kv_cache_t *kv, int layer, int block, int h, int slot) {
    return ((((size_t)layer * kv->n_blocks + block) * kv->n_kv_head + h) * kv->block_size + slot) *
           kv->head_dim;
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

/* ---- attention ---- */

static inline float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* out (n_head_local * hd) for token t: causal attention over its sequence's positions 0..pos. */
/* out (n_head_local * hd) for token t, the `group` query heads that share KV head kvh: causal
 * attention over its sequence's positions 0..pos. Each K/V row is read once for the whole group
 * (grouped-query attention), block by block. score: (group, pos + 1) scratch. */
static void attend(const wk_model_t *m, const wk_kv_cache_t *kv, const wk_batch_t *b, int layer,
                   const float *q, float *out, int t, int kvh, float *score, int stride) {
    int hd = m->cfg.head_dim, bs = kv->block_size;
    int group = m->n_head_local / m->n_kv_head_local;
    int p = b->pos[t], n = p + 1;
    const int32_t *bt = b->block_tables[b->seq[t]];
    const float *q0 = q + (size_t)kvh * group * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int j0 = 0; j0 < n; j0 += bs) {
        const float *kb = kv->k + kv_off(kv, layer, bt[j0 / bs], kvh, 0);
        int jn = n - j0 < bs ? n - j0 : bs;
        for (int j = 0; j < jn; j++)
            for (int g = 0; g < group; g++)
                score[(size_t)g * stride + j0 + j] =
                    dot(q0 + (size_t)g * hd, kb + (size_t)j * hd, hd) * scale;
    }
    for (int g = 0; g < group; g++) kn_softmax(score + (size_t)g * stride, n);
    float *o0 = out + (size_t)kvh * group * hd;
    memset(o0, 0, (size_t)group * hd * sizeof(float));
    for (int j0 = 0; j0 < n; j0 += bs) {
        const float *vb = kv->v + kv_off(kv, layer, bt[j0 / bs], kvh, 0);
        int jn = n - j0 < bs ? n - j0 : bs;
        for (int j = 0; j < jn; j++) {
            const float *vj = vb + (size_t)j * hd;
            for (int g = 0; g < group; g++) {
                float a = score[(size_t)g * stride + j0 + j];
                float *og = o0 + (size_t)g * hd;
#pragma omp simd
                for (int i = 0; i < hd; i++) og[i] += a * vj[i];
            }
        }
    }
}

/* ---- forward ---- */

/* Row-parallel outputs (attention o_proj, MLP down_proj) are partial sums on each rank. */
static int tp_allreduce(wk_ctx_t *c, float *buf, size_t n, char *err) {
    if (!c->allreduce)
        return lt_errf(err, LT_ERR_INVAL, "tensor-parallel model without an all-reduce");
    int rc = c->allreduce(buf, n, c->allreduce_user);
    return rc ? lt_errf(err, rc, "all-reduce failed: %s", lt_err_str(rc)) : LT_OK;
}

/* y (T, n) = x (T, k) @ W^T + bias: from the stored quantized blocks for decode-sized batches
 * (bandwidth-bound), else fp32 sgemm (compute-bound prefill). HOT */
/* Largest batch that takes the quantized path: KN_QMATMUL_MAX_ROWS, or every batch in
 * batch-invariant mode. Set once at start-up, before any forward. */
static int qmatmul_max_rows = KN_QMATMUL_MAX_ROWS;

void wk_set_batch_invariant(bool on) {
    qmatmul_max_rows = on ? INT_MAX : KN_QMATMUL_MAX_ROWS;
}

/* Row blocks of KN_QMATMUL_MAX_ROWS: each row's result depends on that row alone. */
static int qmatmul_rows(float *y, const float *x, const wk_qweight_t *q, int T, int n, int k) {
    for (int t = 0; t < T; t += KN_QMATMUL_MAX_ROWS) {
        int m = T - t < KN_QMATMUL_MAX_ROWS ? T - t : KN_QMATMUL_MAX_ROWS;
        int rc = kn_qmatmul(y + (size_t)t * n, x + (size_t)t * k, q->data, q->type, m, n, k);
        if (rc) return rc;
    }
    return LT_OK;
}

static void matmul_w(float *y, const float *x, const float *w, const wk_qweight_t *q,
                     const float *bias, int T, int n, int k) {
    if (q->data && T <= qmatmul_max_rows && qmatmul_rows(y, x, q, T, n, k) == LT_OK) {
        if (bias)
            for (int t = 0; t < T; t++)
                for (int j = 0; j < n; j++) y[(size_t)t * n + j] += bias[j];
        return;
    }
    kn_matmul(y, x, w, bias, T, n, k);
}

int wk_forward(const wk_model_t *m, wk_kv_cache_t *kv, wk_ctx_t *c, const wk_batch_t *b,
               float *logits, char *err) {
    /* HOT */
    int rc = batch_validate(m, kv, c, b, err);
    if (rc) return rc;
    const lt_model_config_t *cf = &m->cfg;
    int T = b->n_tokens, dim = cf->dim, hd = cf->head_dim;
    int nh = m->n_head_local, nkv = m->n_kv_head_local, hid = m->hidden_local;
    int qd = nh * hd, kvd = nkv * hd;

    for (int t = 0; t < T; t++)
        memcpy(c->x + (size_t)t * dim, m->tok_embd + (size_t)b->tokens[t] * dim,
               (size_t)dim * sizeof(float));

    for (int l = 0; l < cf->n_layer; l++) {
        const wk_layer_t *L = &m->layers[l];
        for (int t = 0; t < T; t++)
            kn_rmsnorm(c->xb + (size_t)t * dim, c->x + (size_t)t * dim, L->attn_norm, dim,
                       cf->norm_eps);
        matmul_w(c->q, c->xb, L->wq, &L->qq, L->bq, T, qd, dim);
        matmul_w(c->k, c->xb, L->wk, &L->qk, L->bk, T, kvd, dim);
        matmul_w(c->v, c->xb, L->wv, &L->qv, L->bv, T, kvd, dim);

#pragma omp parallel for schedule(static) if (T > 1)
        for (int t = 0; t < T; t++) {
            float *qt = c->q + (size_t)t * qd, *kt = c->k + (size_t)t * kvd;
            for (int h = 0; h < nh; h++) {
                float *qh = qt + (size_t)h * hd;
                if (L->q_norm) kn_rmsnorm(qh, qh, L->q_norm, hd, cf->norm_eps);
                kn_rope(qh, hd, b->pos[t], m->inv_freq, cf->rope_neox, m->rope_attn_factor);
            }
            for (int h = 0; h < nkv; h++) {
                float *kh = kt + (size_t)h * hd;
                if (L->k_norm) kn_rmsnorm(kh, kh, L->k_norm, hd, cf->norm_eps);
                kn_rope(kh, hd, b->pos[t], m->inv_freq, cf->rope_neox, m->rope_attn_factor);
            }
            /* store this token's K/V in its slot */
            int p = b->pos[t], blk = b->block_tables[b->seq[t]][p / kv->block_size];
            for (int h = 0; h < nkv; h++) {
                size_t off = kv_off(kv, l, blk, h, p % kv->block_size);
                memcpy(kv->k + off, kt + (size_t)h * hd, (size_t)hd * sizeof(float));
                memcpy(kv->v + off, c->v + (size_t)t * kvd + (size_t)h * hd,
                       (size_t)hd * sizeof(float));
            }
        }

        int group = nh / nkv;
#pragma omp parallel for schedule(dynamic, 1)
        for (int th = 0; th < T * nkv; th++) {
            int t = th / nkv, h = th % nkv;
            float *score = c->score + (size_t)omp_get_thread_num() * group * c->max_ctx;
            attend(m, kv, b, l, c->q + (size_t)t * qd, c->att + (size_t)t * qd, t, h, score,
                   c->max_ctx);
        }

        matmul_w(c->xb, c->att, L->wo, &L->qo, NULL, T, dim, qd);
        if (m->tp_size > 1 && (rc = tp_allreduce(c, c->xb, (size_t)T * dim, err))) return rc;
        for (size_t i = 0; i < (size_t)T * dim; i++) c->x[i] += c->xb[i];

        for (int t = 0; t < T; t++)
            kn_rmsnorm(c->xb + (size_t)t * dim, c->x + (size_t)t * dim, L->ffn_norm, dim,
                       cf->norm_eps);
        matmul_w(c->hb, c->xb, L->w_gate, &L->qgate, NULL, T, hid, dim);
        matmul_w(c->hb2, c->xb, L->w_up, &L->qup, NULL, T, hid, dim);
        kn_swiglu(c->hb, c->hb2, T * hid);
        matmul_w(c->xb, c->hb, L->w_down, &L->qdown, NULL, T, dim, hid);
        if (m->tp_size > 1 && (rc = tp_allreduce(c, c->xb, (size_t)T * dim, err))) return rc;
        for (size_t i = 0; i < (size_t)T * dim; i++) c->x[i] += c->xb[i];
    }

    if (b->n_logits == 0) return LT_OK;
    /* Only the requested rows go through the final norm and the vocabulary projection. */
    for (int i = 0; i < b->n_logits; i++)
        kn_rmsnorm(c->xb + (size_t)i * dim, c->x + (size_t)b->logits_rows[i] * dim, m->out_norm,
                   dim, cf->norm_eps);
    matmul_w(logits, c->xb, m->output, &m->qoutput, NULL, b->n_logits, cf->vocab_size, dim);
    return LT_OK;
}
