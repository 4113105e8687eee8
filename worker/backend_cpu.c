/*
 * backend_cpu.c — the CPU backend (backend.h): host memory, OpenMP threads, the kernels in
 * kernels/.
 *
 * Weights are used where the model file maps them: a weight whose rows are contiguous in the file
 * is a pointer into the mapping (file-backed pages, shared by every process that maps the same
 * file), so a worker's resident memory is the part of the file it touches plus its KV cache and
 * scratch. Matrix products read the stored blocks (kn_qmatmul). The KV cache holds F32, F16 or
 * BF16; attention runs per (token, KV head) over the paged cache in fp32, each K/V row read (and
 * converted) once for the query heads that share it.
 */
#include <math.h>
#include <omp.h>
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "kernels.h"
#include "lt.h"
#include "worker.h"

typedef struct cpu {
    const wk_batch_t *b; /* the current step's batch (host memory is backend memory here) */
    kn_qscratch_t *qs;
    int max_rows, max_k, max_ctx, group, n_threads;
    float *score;          /* (n_threads, group, max_ctx) attention scores */
    float *kv_tmp;         /* (n_threads, 2, block_size, head_dim) KV rows converted to fp32 */
    size_t kv_tmp_len;     /* floats in kv_tmp */
    int kv_bs, kv_hd;      /* the KV cache's block size and head size (kv_alloc) */
    int att_chunk;         /* positions per attention chunk before rounding to blocks (ATT_CHUNK) */
    float *part;           /* attention chunks' partial results (att_*) */
    float *rope_cs;        /* (max_rows, head_dim) the step's cos/sin per token (kn_rope_table) */
    size_t rope_len;       /* floats in rope_cs */
    const float *rope_for; /* the inv_freq rope_cs was made from this step (NULL: not yet) */
    size_t part_len;       /* floats in part */
    int att_max_chunks;    /* the most chunks any token of the step attends over (begin) */
} cpu_t;

static cpu_t *cpu_of(wk_backend_t *be) {
    return be->impl;
}

/* ---- memory ---- */

/* 64-byte aligned (a cache line, an AVX-512 vector); pages untouched until used. */
static void *cpu_alloc(wk_backend_t *be, size_t n) {
    (void)be;
    void *p = NULL;
    return posix_memalign(&p, 64, n ? n : 64) ? NULL : p;
}

static void cpu_release(wk_backend_t *be, void *p) {
    (void)be;
    free(p);
}

static void cpu_upload(wk_backend_t *be, void *dst, const void *host, size_t n) {
    (void)be;
    memcpy(dst, host, n);
}

static void cpu_to_host(wk_backend_t *be, float *host, const float *src, size_t n) {
    (void)be;
    if (host != src) memcpy(host, src, n * sizeof(float));
}

static bool cpu_supports(wk_backend_t *be, int type, int64_t cols) {
    (void)be;
    return cols <= INT32_MAX && kn_qmatmul_supported(type, (int)cols);
}

static int cpu_weight(wk_backend_t *be, const void *src, int type, int64_t cols, int64_t row0,
                      int64_t nrows, wk_tensor_t *out, void **owned, char *err) {
    (void)be;
    (void)err;
    int64_t rb = lt_dtype_nbytes(type, cols);
    *owned = NULL;
    *out = (wk_tensor_t){.data = (const uint8_t *)src + row0 * rb,
                         .type = type,
                         .rows = nrows,
                         .cols = cols,
                         .row_bytes = (size_t)rb};
    return LT_OK;
}

static int cpu_reserve(wk_backend_t *be, int max_rows, int max_k, int max_ctx, int group,
                       char *err) {
    cpu_t *c = cpu_of(be);
    if (max_rows <= c->max_rows && max_k <= c->max_k && max_ctx <= c->max_ctx && group <= c->group)
        return LT_OK;
    max_rows = max_rows > c->max_rows ? max_rows : c->max_rows;
    max_k = max_k > c->max_k ? max_k : c->max_k;
    max_ctx = max_ctx > c->max_ctx ? max_ctx : c->max_ctx;
    group = group > c->group ? group : c->group;
    kn_qscratch_t *qs = kn_qscratch_create(max_rows, max_k);
    float *score = malloc((size_t)c->n_threads * group * max_ctx * sizeof(float));
    if (!qs || !score) {
        kn_qscratch_destroy(&qs);
        free(score);
        return lt_errf(err, LT_ERR_NOMEM, "out of memory for %d-row scratch", max_rows);
    }
    kn_qscratch_destroy(&c->qs);
    free(c->score);
    c->qs = qs;
    c->score = score;
    c->max_rows = max_rows;
    c->max_k = max_k;
    c->max_ctx = max_ctx;
    c->group = group;
    return LT_OK;
}

/* ---- elementwise and row operations ---- */

/* Attention runs over chunks of ATT_CHUNK positions (rounded up to whole KV blocks): each chunk's
 * softmax-weighted sum is computed on its own (its max m, sum of exponentials l, unnormalized
 * output o per query head) and the chunks are then combined in order. Chunks are fixed by
 * position, so a token's result does not depend on its batch; they let one long sequence's
 * decode use every thread. LANTERN_ATTENTION_CHUNK=<positions> sets another size (tests). */
#define ATT_CHUNK 256

static int att_chunk_len(const cpu_t *c) {
    return (c->att_chunk + c->kv_bs - 1) / c->kv_bs * c->kv_bs;
}

static int att_chunks(const cpu_t *c, int n) {
    return (n + att_chunk_len(c) - 1) / att_chunk_len(c);
}

/* Floats of one chunk's partial result: m and l (group), o (group, head_dim). */
static size_t att_part_len(const cpu_t *c) {
    return (size_t)c->group * (c->kv_hd + 2);
}

static int cpu_begin(wk_backend_t *be, const wk_batch_t *b, char *err) {
    cpu_t *c = cpu_of(be);
    if (b->n_tokens > c->max_rows)
        return lt_errf(err, LT_ERR_INVAL, "batch of %d tokens over the backend's %d", b->n_tokens,
                       c->max_rows);
    c->b = b;
    c->rope_for = NULL; /* positions changed: the first layer makes the table again */
    if (c->kv_hd > 0 && (size_t)b->n_tokens * c->kv_hd > c->rope_len) {
        float *p = realloc(c->rope_cs, (size_t)b->n_tokens * c->kv_hd * sizeof(float));
        if (!p) return lt_errf(err, LT_ERR_NOMEM, "out of memory for rotary tables");
        c->rope_cs = p;
        c->rope_len = (size_t)b->n_tokens * c->kv_hd;
    }
    /* room for the attention chunks' partial results: (2 x threads, chunks, part) */
    int max_pos = 0;
    for (int t = 0; t < b->n_tokens; t++) max_pos = b->pos[t] > max_pos ? b->pos[t] : max_pos;
    if (c->kv_hd > 0) {
        c->att_max_chunks = att_chunks(c, max_pos + 1);
        size_t need = (size_t)2 * c->n_threads * c->att_max_chunks * att_part_len(c);
        if (need > c->part_len) {
            float *p = realloc(c->part, need * sizeof(float));
            if (!p) return lt_errf(err, LT_ERR_NOMEM, "out of memory for attention scratch");
            c->part = p;
            c->part_len = need;
        }
    }
    return LT_OK;
}

static void cpu_embed(wk_backend_t *be, float *x, const wk_tensor_t *emb) {
    const wk_batch_t *b = cpu_of(be)->b;
    int dim = (int)emb->cols;
    for (int t = 0; t < b->n_tokens; t++)
        kn_dequantize(emb->type, (const uint8_t *)emb->data + (size_t)b->tokens[t] * emb->row_bytes,
                      x + (size_t)t * dim, dim);
}

static void cpu_rmsnorm(wk_backend_t *be, float *out, const float *x, const float *w, int rows,
                        int n, float eps) {
    (void)be;
    for (int t = 0; t < rows; t++) kn_rmsnorm(out + (size_t)t * n, x + (size_t)t * n, w, n, eps);
}

static int cpu_matmul(wk_backend_t *be, float *y, const float *x, const wk_tensor_t *w,
                      const float *bias, int rows) {
    cpu_t *c = cpu_of(be);
    int n = (int)w->rows, k = (int)w->cols;
    int rc = kn_qmatmul(y, x, w->data, w->type, rows, n, k, c->qs);
    if (rc) return rc;
    if (bias)
        for (int t = 0; t < rows; t++)
            for (int j = 0; j < n; j++) y[(size_t)t * n + j] += bias[j];
    return LT_OK;
}

static int cpu_matmul_n(wk_backend_t *be, float *const *y, const float *x,
                        const wk_tensor_t *const *w, const float *const *bias, int count,
                        int rows) {
    cpu_t *c = cpu_of(be);
    kn_qmm_t mm[KN_QMM_MAX];
    if (count < 1 || count > KN_QMM_MAX) return LT_ERR_INVAL;
    for (int i = 0; i < count; i++) {
        if (w[i]->cols != w[0]->cols) return LT_ERR_INVAL;
        mm[i] = (kn_qmm_t){y[i], w[i]->data, w[i]->type, (int)w[i]->rows};
    }
    int rc = kn_qmatmul_n(mm, count, x, rows, (int)w[0]->cols, c->qs);
    if (rc) return rc;
    for (int i = 0; i < count; i++)
        if (bias[i])
            for (int t = 0; t < rows; t++)
                for (int64_t j = 0; j < w[i]->rows; j++)
                    y[i][(size_t)t * w[i]->rows + j] += bias[i][j];
    return LT_OK;
}

static void cpu_qk_rope(wk_backend_t *be, float *q, float *k, int nh, int nkv, int hd,
                        const float *q_norm, const float *k_norm, float eps,
                        const wk_rope_t *rope) {
    cpu_t *c = cpu_of(be);
    const wk_batch_t *b = c->b;
    int T = b->n_tokens;
    /* every layer rotates by the same angles: the step's cos/sin table is made once */
    bool table = c->rope_cs && (size_t)T * hd <= c->rope_len,
         make = table && c->rope_for != rope->inv_freq;
#pragma omp parallel for schedule(static) if (T > 1)
    for (int t = 0; t < T; t++) {
        float *cs = table ? c->rope_cs + (size_t)t * hd : NULL;
        if (make) kn_rope_table(cs, hd, b->pos[t], rope->inv_freq, rope->attn_factor);
        for (int h = 0; h < nh + nkv; h++) {
            float *x = h < nh ? q + ((size_t)t * nh + h) * hd : k + ((size_t)t * nkv + h - nh) * hd;
            const float *norm = h < nh ? q_norm : k_norm;
            if (norm) kn_rmsnorm(x, x, norm, hd, eps);
            if (cs)
                kn_rope_cs(x, hd, cs, rope->neox);
            else
                kn_rope(x, hd, b->pos[t], rope->inv_freq, rope->neox, rope->attn_factor);
        }
    }
    if (make) c->rope_for = rope->inv_freq;
}

static void cpu_swiglu(wk_backend_t *be, float *gate, const float *up, size_t n) {
    (void)be;
    kn_swiglu(gate, up, (int)n);
}

static void cpu_add(wk_backend_t *be, float *x, const float *y, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void cpu_gather(wk_backend_t *be, float *dst, const float *src, const int32_t *rows,
                       int n_rows, int n) {
    (void)be;
    for (int i = 0; i < n_rows; i++)
        memmove(dst + (size_t)i * n, src + (size_t)rows[i] * n, (size_t)n * sizeof(float));
}

/* ---- KV cache and attention ---- */

/* The cache holds F32, F16 or BF16 elements; attention converts one block's rows at a time to
 * fp32 (per-thread buffers) and computes in fp32. */

static inline size_t kv_elem(const wk_kv_cache_t *kv) {
    return kv->dtype == LT_DTYPE_F32 ? 4 : 2;
}

static void row_store(int dtype, void *dst, const float *src, int n) {
    if (dtype == LT_DTYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *d = dst;
    int i = 0;
#if defined(__F16C__) && defined(__AVX__)
    if (dtype == LT_DTYPE_F16)
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(d + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) {
        if (dtype == LT_DTYPE_F16) {
            d[i] = lt_f32_to_f16(src[i]);
        } else { /* bf16: round to nearest even; NaN stays NaN */
            uint32_t u;
            memcpy(&u, &src[i], 4);
            d[i] = (u & 0x7fffffff) > 0x7f800000 ? (uint16_t)((u >> 16) | 0x40)
                                                 : (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        }
    }
}

static void row_load(int dtype, float *dst, const void *src, int n) {
    const uint16_t *s = src;
    int i = 0;
#if defined(__F16C__) && defined(__AVX__)
    if (dtype == LT_DTYPE_F16)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
#endif
    for (; i < n; i++) dst[i] = dtype == LT_DTYPE_F16 ? lt_f16_to_f32(s[i]) : lt_bf16_to_f32(s[i]);
}

static int cpu_kv_alloc(wk_backend_t *be, wk_kv_cache_t *kv, char *err) {
    cpu_t *c = cpu_of(be);
    size_t n = (size_t)kv->n_layer * kv->n_blocks * kv->n_kv_head * kv->block_size * kv->head_dim;
    size_t tmp = (size_t)c->n_threads * 2 * kv->block_size * kv->head_dim;
    kv->k = calloc(n, kv_elem(kv));
    kv->v = calloc(n, kv_elem(kv));
    if (tmp > c->kv_tmp_len) {
        free(c->kv_tmp);
        c->kv_tmp = malloc(tmp * sizeof(float));
        c->kv_tmp_len = c->kv_tmp ? tmp : 0;
    }
    c->kv_bs = kv->block_size;
    c->kv_hd = kv->head_dim;
    if (!kv->k || !kv->v || !c->kv_tmp)
        return lt_errf(err, LT_ERR_NOMEM, "out of memory for a KV cache of %zu MiB",
                       2 * n * kv_elem(kv) >> 20);
    return LT_OK;
}

/* Element offset of (layer, block, kv_head, slot) in kv->k / kv->v. */
static inline size_t kv_off(const wk_kv_cache_t *kv, int layer, int block, int h, int slot) {
    return ((((size_t)layer * kv->n_blocks + block) * kv->n_kv_head + h) * kv->block_size + slot) *
           kv->head_dim;
}

#define KT_ROW 64 /* K elements converted at a time before they are spread over their block */

static void cpu_kv_store(wk_backend_t *be, wk_kv_cache_t *kv, int layer, const float *k,
                         const float *v) {
    const wk_batch_t *b = cpu_of(be)->b;
    int nkv = kv->n_kv_head, hd = kv->head_dim;
    size_t es = kv_elem(kv);
    uint8_t *kc = kv->k, *vc = kv->v;
    for (int t = 0; t < b->n_tokens; t++) {
        int p = b->pos[t], blk = b->block_tables[b->seq[t]][p / kv->block_size];
        for (int h = 0; h < nkv; h++) {
            size_t off = kv_off(kv, layer, blk, h, p % kv->block_size) * es;
            size_t src = ((size_t)t * nkv + h) * hd;
            /* K transposed within its block: element i of slot s at i * block_size + s */
            uint8_t *kt = kc + (kv_off(kv, layer, blk, h, 0) + p % kv->block_size) * es;
            for (int i0 = 0; i0 < hd; i0 += KT_ROW) {
                int n = hd - i0 < KT_ROW ? hd - i0 : KT_ROW;
                uint8_t row[KT_ROW * sizeof(float)];
                row_store(kv->dtype, row, k + src + i0, n);
                for (int i = 0; i < n; i++)
                    memcpy(kt + (size_t)(i0 + i) * kv->block_size * es, row + (size_t)i * es, es);
            }
            row_store(kv->dtype, vc + off, v + src, hd);
        }
    }
}

/* The first n elements of one block of layer `layer`, KV head kvh, as fp32: in place for an F32
 * cache, else converted into tmp (block_size * head_dim). V blocks are rows of head_dim (slot by
 * slot); K blocks are transposed (head_dim rows of block_size), so that a block's scores are
 * vectors across its slots. */
static const float *block_rows(const wk_kv_cache_t *kv, const void *base, int layer, int block,
                               int kvh, int n, float *tmp) {
    size_t off = kv_off(kv, layer, block, kvh, 0);
    if (kv->dtype == LT_DTYPE_F32) return (const float *)base + off;
    row_load(kv->dtype, tmp, (const uint16_t *)base + off, n);
    return tmp;
}

/* Asks for one block of layer `layer`, KV head kvh, to be brought into cache. */
static void prefetch_block(const wk_kv_cache_t *kv, const void *base, int layer, int block,
                           int kvh) {
    size_t es = kv_elem(kv), n = (size_t)kv->block_size * kv->head_dim * es;
    const char *p = (const char *)base + kv_off(kv, layer, block, kvh, 0) * es;
    for (size_t i = 0; i < n; i += 64) __builtin_prefetch(p + i);
}

/* fn(G, ...) with the query-head group size G a constant for 1..4 (each is its own inlined copy,
 * its accumulators in registers), the variable beyond. */
#define BY_GROUP(fn, group, ...)                                                                   \
    do {                                                                                           \
        switch (group) {                                                                           \
        case 1: fn(1, __VA_ARGS__); break;                                                         \
        case 2: fn(2, __VA_ARGS__); break;                                                         \
        case 3: fn(3, __VA_ARGS__); break;                                                         \
        case 4: fn(4, __VA_ARGS__); break;                                                         \
        default: fn(group, __VA_ARGS__); break;                                                    \
        }                                                                                          \
    } while (0)

/* Sixteen slots' scores for G query heads at once: each K row vector of the transposed block
 * is loaded once for all of them. Inlined for each constant G. */
static inline __attribute__((always_inline)) void scores16(int G, const float *kt, const float *q,
                                                           int hd, int bs, float scale, float *s,
                                                           int stride) {
    float acc[8][16] = {{0}};
    for (int i = 0; i < hd; i++) {
        const float *ki = kt + (size_t)i * bs;
        for (int g = 0; g < G; g++) {
            float qi = q[(size_t)g * hd + i];
#pragma omp simd
            for (int j = 0; j < 16; j++) acc[g][j] += qi * ki[j];
        }
    }
    for (int g = 0; g < G; g++)
        for (int j = 0; j < 16; j++) s[(size_t)g * stride + j] = acc[g][j] * scale;
}

/* s[g * stride + j] = scale * (q_g (hd) . slot j of the transposed K block kt (hd, bs)) for the
 * `group` query heads q (group, hd) and slots j < jn; each score sums over i in order. */
static void block_scores(const float *kt, const float *q, int group, int hd, int bs, int jn,
                         float scale, float *s, int stride) {
    int j0 = 0;
    for (; j0 + 16 <= jn && group <= 8; j0 += 16)
        BY_GROUP(scores16, group, kt + j0, q, hd, bs, scale, s + j0, stride);
    for (int g = 0; g < group; g++)
        for (int j = j0; j < jn; j++) {
            float acc = 0.0f;
            for (int i = 0; i < hd; i++) acc += q[(size_t)g * hd + i] * kt[(size_t)i * bs + j];
            s[(size_t)g * stride + j] = acc * scale;
        }
}

/* o (hd) += sum over slots j < jn of a[j] * v row j (hd), j in order; 64 columns at a time held
 * in registers across the slots. */
static void block_values(const float *v, const float *a, int hd, int jn, float *o) {
    int i0 = 0;
    for (; i0 + 64 <= hd; i0 += 64) {
        float acc[64];
        memcpy(acc, o + i0, sizeof acc);
        for (int j = 0; j < jn; j++) {
            float aj = a[j];
            const float *vj = v + (size_t)j * hd + i0;
#pragma omp simd
            for (int i = 0; i < 64; i++) acc[i] += aj * vj[i];
        }
        memcpy(o + i0, acc, sizeof acc);
    }
    for (int j = 0; j < jn && i0 < hd; j++)
        for (int i = i0; i < hd; i++) o[i] += a[j] * v[(size_t)j * hd + i];
}

#if defined(__AVX512F__) && defined(__F16C__)
/* An fp16 cache read in place: the conversions happen in the registers that use them instead of
 * through a converted copy of the block (block_rows). The same operations in the same order as
 * scores16 and block_values (fp16 -> fp32 is exact), so the same bits. */
#define KV_F16_DIRECT 1

/* scores16 for G query heads over 16 slots of an fp16 transposed K block (row stride bs). */
static inline __attribute__((always_inline)) void scores16_h(int G, const uint16_t *kt,
                                                             const float *q, int hd, int bs,
                                                             float scale, float *s, int stride) {
    __m512 acc[8];
    for (int g = 0; g < G; g++) acc[g] = _mm512_setzero_ps();
    for (int i = 0; i < hd; i++) {
        __m512 ki = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kt + (size_t)i * bs)));
        for (int g = 0; g < G; g++)
            acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(q[(size_t)g * hd + i]), ki, acc[g]);
    }
    for (int g = 0; g < G; g++)
        _mm512_storeu_ps(s + (size_t)g * stride, _mm512_mul_ps(acc[g], _mm512_set1_ps(scale)));
}

/* A whole fp16 K block's scores (bs a multiple of 16, group <= 8). */
static void block_scores_h(const uint16_t *kt, const float *q, int group, int hd, int bs,
                           float scale, float *s, int stride) {
    for (int j0 = 0; j0 < bs; j0 += 16)
        BY_GROUP(scores16_h, group, kt + j0, q, hd, bs, scale, s + j0, stride);
}

/* block_values for every query head g < group (weights a + g * stride, outputs o + g * hd) over
 * the slots j < jn of an fp16 V block (hd a multiple of 64): each slot's row converted once for
 * all of them. */
static void block_values_h(const uint16_t *v, const float *a, int stride, int group, int hd, int jn,
                           float *o) {
    for (int i0 = 0; i0 < hd; i0 += 64)
        for (int g0 = 0; g0 < group; g0 += 4) {
            int G = group - g0 < 4 ? group - g0 : 4;
            __m512 acc[4][4];
            for (int g = 0; g < G; g++)
                for (int u = 0; u < 4; u++)
                    acc[g][u] = _mm512_loadu_ps(o + (size_t)(g0 + g) * hd + i0 + 16 * u);
            for (int j = 0; j < jn; j++) {
                __m512 vj[4];
                for (int u = 0; u < 4; u++)
                    vj[u] = _mm512_cvtph_ps(
                        _mm256_loadu_si256((const __m256i *)(v + (size_t)j * hd + i0 + 16 * u)));
                for (int g = 0; g < G; g++) {
                    __m512 aj = _mm512_set1_ps(a[(size_t)(g0 + g) * stride + j]);
                    for (int u = 0; u < 4; u++) acc[g][u] = _mm512_fmadd_ps(aj, vj[u], acc[g][u]);
                }
            }
            for (int g = 0; g < G; g++)
                for (int u = 0; u < 4; u++)
                    _mm512_storeu_ps(o + (size_t)(g0 + g) * hd + i0 + 16 * u, acc[g][u]);
        }
}
#else
#define KV_F16_DIRECT 0
#endif

/* One chunk, positions [p0, p1) of token t's sequence in KV head kvh, for the `group` query heads
 * q0 (group * hd) that share it: part = m (group), l (group), o (group, hd). score: (group,
 * stride); tmp: (block_size, head_dim). */
static void att_chunk(const wk_kv_cache_t *kv, const wk_batch_t *b, int layer, const float *q0,
                      int t, int kvh, int group, int p0, int p1, float *score, int stride,
                      float *tmp, float *part) {
    int hd = kv->head_dim, bs = kv->block_size;
    const int32_t *bt = b->block_tables[b->seq[t]];
    float scale = 1.0f / sqrtf((float)hd);
    float *m = part, *l = part + group, *o = part + 2 * group;
    /* fp16 cache, whole 16-slot vectors and 64-column rows: read in place (KV_F16_DIRECT) */
    bool h16 =
        KV_F16_DIRECT && kv->dtype == LT_DTYPE_F16 && bs % 16 == 0 && group <= 8 && hd % 64 == 0;
    (void)h16;
    for (int j0 = p0; j0 < p1; j0 += bs) {
        int jn = p1 - j0 < bs ? p1 - j0 : bs;
        if (j0 + bs < p1) { /* the next block's K and V are on their way while this one runs */
            prefetch_block(kv, kv->k, layer, bt[j0 / bs + 1], kvh);
            prefetch_block(kv, kv->v, layer, bt[j0 / bs + 1], kvh);
        }
#if KV_F16_DIRECT
        if (h16 && jn == bs) {
            block_scores_h((const uint16_t *)kv->k + kv_off(kv, layer, bt[j0 / bs], kvh, 0), q0,
                           group, hd, bs, scale, score + j0 - p0, stride);
            continue;
        }
#endif
        const float *kt = block_rows(kv, kv->k, layer, bt[j0 / bs], kvh, bs * hd, tmp);
        block_scores(kt, q0, group, hd, bs, jn, scale, score + j0 - p0, stride);
    }
    for (int g = 0; g < group; g++) {
        float *sg = score + (size_t)g * stride, mx = sg[0], sum = 0.0f;
        for (int j = 1; j < p1 - p0; j++) mx = sg[j] > mx ? sg[j] : mx;
#pragma omp simd
        for (int j = 0; j < p1 - p0; j++) sg[j] = kn_expf_v(sg[j] - mx);
        for (int j = 0; j < p1 - p0; j++) sum += sg[j]; /* in order */
        m[g] = mx;
        l[g] = sum;
    }
    memset(o, 0, (size_t)group * hd * sizeof(float));
    for (int j0 = p0; j0 < p1; j0 += bs) {
        int jn = p1 - j0 < bs ? p1 - j0 : bs;
#if KV_F16_DIRECT
        if (h16) {
            block_values_h((const uint16_t *)kv->v + kv_off(kv, layer, bt[j0 / bs], kvh, 0),
                           score + j0 - p0, stride, group, hd, jn, o);
            continue;
        }
#endif
        const float *vb = block_rows(kv, kv->v, layer, bt[j0 / bs], kvh, jn * hd, tmp);
        for (int g = 0; g < group; g++)
            block_values(vb, score + (size_t)g * stride + j0 - p0, hd, jn, o + (size_t)g * hd);
    }
}

/* o0 (group * hd) from nc chunks' partial results (each plen floats), combined in order. */
static void att_combine(const float *parts, int nc, size_t plen, int group, int hd, float *o0) {
    for (int g = 0; g < group; g++) {
        float mx = parts[g], sum = 0.0f, *og = o0 + (size_t)g * hd;
        for (int c = 1; c < nc; c++) mx = parts[c * plen + g] > mx ? parts[c * plen + g] : mx;
        memset(og, 0, (size_t)hd * sizeof(float));
        for (int c = 0; c < nc; c++) {
            const float *pc = parts + c * plen;
            float w = expf(pc[g] - mx);
            sum += w * pc[group + g];
            const float *oc = pc + 2 * group + (size_t)g * hd;
#pragma omp simd
            for (int i = 0; i < hd; i++) og[i] += w * oc[i];
        }
        float inv = 1.0f / sum;
#pragma omp simd
        for (int i = 0; i < hd; i++) og[i] *= inv;
    }
}

/* out (T, nh * hd): each token's query heads over its sequence's positions 0..pos, chunk by chunk
 * (ATT_CHUNK). With many (token, KV head) pairs each thread takes whole pairs; with few (decode
 * of a few sequences) the chunks themselves are spread over the threads and combined after. The
 * arithmetic is the same either way. */
static void cpu_attention(wk_backend_t *be, float *out, const float *q, const wk_kv_cache_t *kv,
                          int layer, int nh, int nkv, int hd) {
    cpu_t *c = cpu_of(be);
    const wk_batch_t *b = c->b;
    int T = b->n_tokens, group = nh / nkv, qd = nh * hd, ch = att_chunk_len(c);
    int max_nc = c->att_max_chunks;
    size_t tmp_len = (size_t)2 * kv->block_size * kv->head_dim, plen = att_part_len(c);
    if (T * nkv >= 2 * c->n_threads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads)
        for (int th = 0; th < T * nkv; th++) {
            int t = th / nkv, h = th % nkv, me = omp_get_thread_num(), n = b->pos[t] + 1;
            int nc = att_chunks(c, n);
            float *score = c->score + (size_t)me * c->group * c->max_ctx;
            float *parts = c->part + (size_t)me * max_nc * plen;
            size_t o = (size_t)t * qd + (size_t)h * group * hd;
            for (int ci = 0; ci < nc; ci++) {
                int p1 = (ci + 1) * ch < n ? (ci + 1) * ch : n;
                att_chunk(kv, b, layer, q + o, t, h, group, ci * ch, p1, score, c->max_ctx,
                          c->kv_tmp + (size_t)me * tmp_len, parts + ci * plen);
            }
            att_combine(parts, nc, plen, group, hd, out + o);
        }
        return;
    }
    /* few pairs: (token, KV head, chunk) units, pair th's chunks at c->part + th * max_nc */
#pragma omp parallel num_threads(c->n_threads)
    {
        int me = omp_get_thread_num();
        float *score = c->score + (size_t)me * c->group * c->max_ctx;
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < T * nkv * max_nc; u++) {
            int th = u / max_nc, ci = u % max_nc, t = th / nkv, h = th % nkv, n = b->pos[t] + 1;
            if (ci * ch >= n) continue;
            int p1 = (ci + 1) * ch < n ? (ci + 1) * ch : n;
            size_t o = (size_t)t * qd + (size_t)h * group * hd;
            att_chunk(kv, b, layer, q + o, t, h, group, ci * ch, p1, score, c->max_ctx,
                      c->kv_tmp + (size_t)me * tmp_len, c->part + (size_t)u * plen);
        }
#pragma omp for schedule(static)
        for (int th = 0; th < T * nkv; th++) {
            int t = th / nkv, h = th % nkv;
            size_t o = (size_t)t * qd + (size_t)h * group * hd;
            att_combine(c->part + (size_t)th * max_nc * plen, att_chunks(c, b->pos[t] + 1), plen,
                        group, hd, out + o);
        }
    }
}

/* ---- the backend ---- */

static void cpu_destroy(wk_backend_t *be) {
    cpu_t *c = cpu_of(be);
    kn_qscratch_destroy(&c->qs);
    free(c->score);
    free(c->kv_tmp);
    free(c->part);
    free(c->rope_cs);
    free(c);
}

static const wk_backend_ops_t CPU_OPS = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_upload,
    .to_host = cpu_to_host,
    .supports = cpu_supports,
    .weight = cpu_weight,
    .reserve = cpu_reserve,
    .begin = cpu_begin,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .matmul_n = cpu_matmul_n,
    .qk_rope = cpu_qk_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .gather = cpu_gather,
    .kv_alloc = cpu_kv_alloc,
    .destroy = cpu_destroy,
};

wk_backend_t *wk_backend_cpu_create(void) {
    wk_backend_t *be = calloc(1, sizeof *be);
    cpu_t *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return NULL;
    }
    c->n_threads = omp_get_max_threads();
    const char *chunk = getenv("LANTERN_ATTENTION_CHUNK");
    c->att_chunk = chunk && atoi(chunk) > 0 ? atoi(chunk) : ATT_CHUNK;
    be->ops = &CPU_OPS;
    be->impl = c;
    return be;
}

void wk_backend_destroy(wk_backend_t **bep) {
    wk_backend_t *be = *bep;
    if (!be) return;
    be->ops->destroy(be);
    free(be);
    *bep = NULL;
}
