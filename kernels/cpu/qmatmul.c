/*
 * qmatmul.c — matrix products straight from weights in their stored type, for every batch size.
 *
 * Weights stay as the model file stores them (mmapped; see worker/model.c); nothing is widened to
 * fp32 in memory. Two paths:
 *
 * - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (the 32-element block types) are read directly, and so are the
 *   32-element sub-blocks of Q4_K and Q5_K (scale and min decoded per sub-block: d * q + mn per
 *   32 elements, the same form) and the 32-element blocks of Q6_K (two 16-element halves with a
 *   scale each, taken in turn). Each activation row is quantized per 32-element block to int16
 *   with its own scale (relative error <= 2^-16 of the block's largest value, ~250x finer than
 *   the int8 activations common elsewhere, so results stay within the fp32 reference's own
 *   rounding noise); each block product is an exact integer dot product of the weight quants and
 *   the int16 activations, converted once and scaled by (weight scale x activation scale). The
 *   offsets (Q4_1/Q5_1's m, Q4_0's implicit -8, Q5_0's -16, the K-quants' mins) contribute
 *   mn * sum(x), with the block sum taken in fp32 from the unquantized activations. The exact
 *   sequence of operations is in qmatmul_priv.h.
 * - Every other type (F32, F16, BF16, Q2_K, Q3_K) is dequantized a chunk of weight rows at a time
 *   into a per-thread fp32 buffer and dotted with the activation rows in blocks of 4 x 4 (dotf's
 *   order for each pair: the same bits as one dot product at a time).
 *
 * Two kernels for the direct types, bit-identical to each other and to the scalar reference: up
 * to KN_ROWDOT_MAX rows run four weight rows at a time, each activation row in turn (decode; the
 * K-quants' super-blocks decoded in place: rowdot4k on AVX-512, rowdot on AVX2; with VNNI the
 * Q4/Q5 nibbles of four weight rows are decoded once for up to four activation rows, rowdot4m,
 * and batches of up to KN_FEW_MAX rows of those types take it four rows at a time);
 * more rows are laid side by side, 16 to a vector, and each weight pair is broadcast against them
 * (prefill, large batches). So a row of y depends on its own row of x and on w alone, whatever m is
 * and whichever kernel or instruction set ran: a sequence's logits do not depend on what it is
 * batched with.
 *
 * Work is split across OpenMP threads by chunks of weight rows; each chunk is read once per group
 * of activation rows while it sits in L1. The inner loops exist for the scalar reference, AVX2,
 * AVX-512 and AVX-512 with VNNI (qmatmul_avx2.c, qmatmul_avx512.c, qmatmul_avx512vnni.c); the
 * best one the CPU reports is picked at the first call, and
 * LANTERN_CPU_ISA=scalar|avx2|avx512|avx512vnni forces one (tests, benchmarks).
 */
#include "kernels.h"

#include <cpuid.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"
#include "qmatmul_priv.h"

#define QK         KN_QK
#define ROW_CHUNK  16    /* weight rows per unit of work */
#define PAR_MIN_MK 65536 /* below n * k multiply-adds, one thread: a fork costs more */

/* ---- instruction sets ---- */

static const struct {
    const char *name;
    kn_rowdot_fn rowdot;
    kn_rowdot4_fn rowdot4;   /* NULL: rowdot row by row */
    kn_rowdot4m_fn rowdot4m; /* non-NULL: the planes types' few rows read the activation's byte
                              * planes (kn_qact_t.xp), every row per weight read */
    kn_unpack_fn unpack;
    kn_gemm_fn gemm;
    kn_dotf_fn dotf;
    kn_dotf4_fn dotf4;
    kn_rowdot4k_fn rowdot4k; /* NULL: the K-quants' few rows as rowdot_sb says */
    kn_unpack_sb_fn unpack_sb;
    kn_quant_fn quant;
    bool rowdot_sb; /* rowdot reads the K-quants too (else their few rows are unpacked first) */
} k_isa[] = {
    [KN_ISA_SCALAR] = {"scalar", kn_rowdot_scalar, NULL, NULL, kn_unpack_scalar, kn_gemm_scalar,
                       kn_dotf_scalar, kn_dotf4_scalar, NULL, kn_unpack_sb_scalar, kn_quant_scalar,
                       false},
    [KN_ISA_AVX2] = {"avx2", kn_rowdot_avx2, NULL, NULL, kn_unpack_avx2, kn_gemm_avx2, kn_dotf_avx2,
                     kn_dotf4_avx2, NULL, kn_unpack_sb_avx2, kn_quant_scalar, true},
    [KN_ISA_AVX512] = {"avx512", kn_rowdot_avx512, kn_rowdot4_avx512, NULL, kn_unpack_avx512,
                       kn_gemm_avx512, kn_dotf_avx512, kn_dotf4_avx512, kn_rowdot4k_avx512,
                       kn_unpack_sb_avx512, kn_quant_avx512, false},
    [KN_ISA_AVX512VNNI] = {"avx512vnni", kn_rowdot_avx512, kn_rowdot4_avx512,
                           kn_rowdot4m_avx512vnni, kn_unpack_avx512, kn_gemm_avx512vnni,
                           kn_dotf_avx512, kn_dotf4_avx512, kn_rowdot4k_avx512, kn_unpack_sb_avx512,
                           kn_quant_avx512, false},
};

static kn_isa_t g_isa;
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;

/* F16C from CPUID leaf 1 (ECX bit 29): clang before 15 has no "f16c" in
 * __builtin_cpu_supports, and the `fuzz` preset builds with clang 14. */
static bool cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

bool kn_isa_supported(kn_isa_t isa) {
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    switch (isa) {
    case KN_ISA_SCALAR: return true;
    case KN_ISA_AVX2: return avx2;
    case KN_ISA_AVX512:
    case KN_ISA_AVX512VNNI:
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") &&
               (isa == KN_ISA_AVX512 || __builtin_cpu_supports("avx512vnni"));
    case KN_ISA_COUNT: break;
    }
    return false;
}

const char *kn_isa_name(kn_isa_t isa) {
    return isa >= KN_ISA_SCALAR && isa < KN_ISA_COUNT ? k_isa[isa].name : "?";
}

static void isa_init(void) {
    g_isa = KN_ISA_SCALAR;
    for (int i = KN_ISA_COUNT - 1; i > KN_ISA_SCALAR && g_isa == KN_ISA_SCALAR; i--)
        if (kn_isa_supported((kn_isa_t)i)) g_isa = (kn_isa_t)i;
    const char *want = getenv("LANTERN_CPU_ISA");
    if (!want || !*want) return;
    for (int i = KN_ISA_SCALAR; i < KN_ISA_COUNT; i++) {
        if (strcmp(want, k_isa[i].name) != 0) continue;
        if (kn_isa_supported((kn_isa_t)i)) {
            g_isa = (kn_isa_t)i;
            return;
        }
        fprintf(stderr, "lantern: LANTERN_CPU_ISA=%s: this CPU lacks it; using %s\n", want,
                k_isa[g_isa].name);
        return;
    }
    fprintf(stderr,
            "lantern: LANTERN_CPU_ISA=%s: not one of scalar, avx2, avx512, avx512vnni; using %s\n",
            want, k_isa[g_isa].name);
}

kn_isa_t kn_isa(void) {
    pthread_once(&g_isa_once, isa_init);
    return g_isa;
}

int kn_set_isa(kn_isa_t isa) {
    if (isa < KN_ISA_SCALAR || isa >= KN_ISA_COUNT || !kn_isa_supported(isa))
        return LT_ERR_UNSUPPORTED;
    pthread_once(&g_isa_once, isa_init);
    g_isa = isa;
    return LT_OK;
}

/* ---- scalar reference ---- */

static float f16_ref(uint16_t h) {
    return lt_f16_to_f32(h);
}

/* One block of the reference arithmetic (qmatmul_priv.h), unpacked (quants q, scale d, offset
 * coefficient mn; d2 non-NULL: Q6_K, d and *d2 its halves' scales), as block b of its row, into
 * acc (KN_ACC) and off. */
static inline void block_step_q(const int16_t *q, float d, const float *d2, float mn,
                                const int16_t *xq, float dx, float xs, int b, float *acc,
                                float *off) {
    int32_t i = 0;
    if (d2) {
        for (int e = 0; e < KN_QK / 2; e++) i += q[e] * xq[e];
        acc[b % KN_ACC] = fmaf((float)i, d * dx, acc[b % KN_ACC]);
        i = 0;
        for (int e = KN_QK / 2; e < KN_QK; e++) i += q[e] * xq[e];
        acc[b % KN_ACC] = fmaf((float)i, *d2 * dx, acc[b % KN_ACC]);
    } else {
        for (int e = 0; e < KN_QK; e++) i += q[e] * xq[e];
        acc[b % KN_ACC] = fmaf((float)i, d * dx, acc[b % KN_ACC]);
    }
    *off = fmaf(mn, xs, *off);
}

static inline void block_step(int type, const uint8_t *blk, const int16_t *xq, float dx, float xs,
                              int b, float *acc, float *off) {
    float d, mn;
    int16_t q[KN_QK];
    kn_block_q16(type, kn_block_head(type, blk, &d, &mn, f16_ref), q);
    block_step_q(q, d, NULL, mn, xq, dx, xs, b, acc, off);
}

void kn_rowdot_scalar(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                      float *out) {
    for (int r = 0; r < m; r++) {
        float acc[KN_ACC] = {0}, off = 0.0f;
        for (int b = 0; b < a->nb; b++) {
            size_t ab = (size_t)r * a->nb + b;
            block_step(type, wrow + (size_t)b * bb, a->xq + (size_t)r * a->k + (size_t)b * KN_QK,
                       a->dx[ab], a->xs[ab], b, acc, &off);
        }
        out[r] = kn_tree4(acc) + off;
    }
}

void kn_unpack_scalar(int type, const uint8_t *w, size_t row_bytes, size_t bb, int rows,
                      const kn_wrows_t *out) {
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < out->nb; b++) {
            size_t at = (size_t)r * out->nb + b;
            const uint8_t *qs = kn_block_head(type, w + (size_t)r * row_bytes + (size_t)b * bb,
                                              &out->d[at], &out->mn[at], f16_ref);
            kn_block_q16(type, qs, out->q + at * KN_QK);
        }
}

void kn_gemm_scalar(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y, int n,
                    int row0, int j0) {
    for (int r = 0; r < rows; r++) {
        for (int l = 0; l < lanes; l++) {
            float acc[KN_ACC] = {0}, off = 0.0f;
            for (int b = 0; b < a->nb; b++) {
                /* this lane's activation block, gathered from the side-by-side layout */
                int16_t xq[KN_QK];
                const int16_t *xb = a->xq + (size_t)b * (KN_QK / 2) * KN_LANES * 2;
                for (int p = 0; p < KN_QK / 2; p++) {
                    xq[2 * p] = xb[((size_t)p * KN_LANES + l) * 2];
                    xq[2 * p + 1] = xb[((size_t)p * KN_LANES + l) * 2 + 1];
                }
                size_t at = (size_t)r * w->nb + b;
                block_step_q(w->q + at * KN_QK, w->d[at], w->d2 ? &w->d2[at] : NULL, w->mn[at], xq,
                             a->dx[(size_t)b * KN_LANES + l], a->xs[(size_t)b * KN_LANES + l], b,
                             acc, &off);
            }
            y[(size_t)(row0 + l) * n + j0 + r] = kn_tree4(acc) + off;
        }
    }
}

float kn_dotf_scalar(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void kn_dotf4_scalar(const float *a, size_t as, int ra, const float *b, size_t bs, int n,
                     float *out) {
    for (int i = 0; i < ra; i++)
        for (int t = 0; t < 4; t++) out[i * 4 + t] = kn_dotf_scalar(a + i * as, b + t * bs, n);
}

float kn_dot(const float *a, const float *b, int n) {
    return k_isa[kn_isa()].dotf(a, b, n);
}

/* ---- scratch ---- */

struct kn_qscratch {
    int max_rows, max_k, n_threads;
    int16_t *xq;   /* (max_rows, max_k) */
    float *dx;     /* (max_rows, max_k / QK) */
    float *xs;     /* (max_rows, max_k / QK) */
    int16_t *xqT;  /* (groups, max_k) x KN_LANES: the same, KN_LANES rows side by side */
    float *dxT;    /* (groups, max_k / QK) x KN_LANES */
    float *xsT;    /* (groups, max_k / QK) x KN_LANES */
    int16_t *xq1;  /* (n_threads, KN_FEW_MAX, max_k): few rows, quantized by every thread */
    float *dx1;    /* (n_threads, KN_FEW_MAX, max_k / QK) */
    float *xs1;    /* (n_threads, KN_FEW_MAX, max_k / QK) */
    uint8_t *xp1;  /* (n_threads, KN_FEW_MAX, kn_planes_bytes(max_k / QK)): their byte planes */
    float *rowbuf; /* (n_threads, ROW_CHUNK, max_k) dequantized weight rows per thread */
    int16_t *wq;   /* (n_threads, ROW_CHUNK, max_k) unpacked weight quants per thread */
    float *wd;     /* (n_threads, ROW_CHUNK, max_k / QK) their scales */
    float *wm;     /* (n_threads, ROW_CHUNK, max_k / QK) their offset coefficients */
    float *wd2;    /* (n_threads, ROW_CHUNK, max_k / QK) Q6_K's second-half scales */
};

/* 64-byte aligned, for the vector loads of the transposed layout. */
static void *alloc64(size_t n) {
    void *p = NULL;
    return posix_memalign(&p, 64, n ? n : 64) ? NULL : p;
}

kn_qscratch_t *kn_qscratch_create(int max_rows, int max_k) {
    if (max_rows < 1 || max_k < 1) return NULL;
    kn_qscratch_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->max_rows = max_rows;
    s->max_k = max_k;
    s->n_threads = omp_get_max_threads();
    size_t nbk = (size_t)(max_k + QK - 1) / QK;
    s->xq = malloc((size_t)max_rows * max_k * sizeof *s->xq);
    s->dx = malloc((size_t)max_rows * nbk * sizeof(float));
    s->xs = malloc((size_t)max_rows * nbk * sizeof(float));
    size_t groups = (size_t)(max_rows + KN_LANES - 1) / KN_LANES;
    s->xqT = alloc64(groups * KN_LANES * nbk * QK * sizeof(int16_t));
    s->dxT = alloc64(groups * KN_LANES * nbk * sizeof(float));
    s->xsT = alloc64(groups * KN_LANES * nbk * sizeof(float));
    s->xq1 = malloc((size_t)s->n_threads * KN_FEW_MAX * max_k * sizeof *s->xq1);
    s->dx1 = malloc((size_t)s->n_threads * KN_FEW_MAX * nbk * sizeof(float));
    s->xs1 = malloc((size_t)s->n_threads * KN_FEW_MAX * nbk * sizeof(float));
    s->xp1 = alloc64((size_t)s->n_threads * KN_FEW_MAX * kn_planes_bytes((int)nbk));
    s->rowbuf = malloc((size_t)s->n_threads * ROW_CHUNK * max_k * sizeof(float));
    size_t nbk_c = nbk * KN_QK; /* max_k rounded up to whole blocks */
    s->wq = alloc64((size_t)s->n_threads * ROW_CHUNK * nbk_c * sizeof(int16_t));
    s->wd = malloc((size_t)s->n_threads * ROW_CHUNK * nbk * sizeof(float));
    s->wm = malloc((size_t)s->n_threads * ROW_CHUNK * nbk * sizeof(float));
    s->wd2 = malloc((size_t)s->n_threads * ROW_CHUNK * nbk * sizeof(float));
    if (!s->xq || !s->dx || !s->xs || !s->xqT || !s->dxT || !s->xsT || !s->xq1 || !s->dx1 ||
        !s->xs1 || !s->xp1 || !s->rowbuf || !s->wq || !s->wd || !s->wm || !s->wd2)
        kn_qscratch_destroy(&s);
    return s;
}

void kn_qscratch_destroy(kn_qscratch_t **sp) {
    kn_qscratch_t *s = *sp;
    if (!s) return;
    free(s->xq);
    free(s->dx);
    free(s->xs);
    free(s->xqT);
    free(s->dxT);
    free(s->xsT);
    free(s->xq1);
    free(s->dx1);
    free(s->xs1);
    free(s->xp1);
    free(s->rowbuf);
    free(s->wq);
    free(s->wd);
    free(s->wm);
    free(s->wd2);
    free(s);
    *sp = NULL;
}

/* ---- the product ---- */

/* The direct types whose 32-element blocks are read in place by the few-row kernels (rowdot),
 * one block per kn_block_head. Q4_K/Q5_K's sub-blocks have the same form (kn_k_head): unpacked
 * (unpack_sb) for the many-row kernel, read in place by their own few-row kernel (rowdot4k)
 * where the instruction set has one. */
static bool rowdot_form(int type) {
    return type == LT_DTYPE_Q4_0 || type == LT_DTYPE_Q4_1 || type == LT_DTYPE_Q5_0 ||
           type == LT_DTYPE_Q5_1 || type == LT_DTYPE_Q8_0;
}

bool kn_qmatmul_direct(int type) {
    return rowdot_form(type) || kn_is_superblock(type);
}

/* kn_unpack for Q4_K, Q5_K and Q6_K, 32 elements at a time (kn_k_head, kn_q6_k_head): the
 * reference the SIMD variants (qmatmul_sb.h) reproduce. */
void kn_unpack_sb_scalar(int type, const uint8_t *w, size_t row_bytes, int rows,
                         const kn_wrows_t *out) {
    size_t sbb = lt_dtype_block_bytes(type);
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < out->nb; b++) {
            size_t at = (size_t)r * out->nb + b;
            const uint8_t *sb = w + (size_t)r * row_bytes + (size_t)(b / 8) * sbb, *qs, *qh;
            int16_t *q = out->q + at * KN_QK;
            if (type == LT_DTYPE_Q6_K) {
                qs = kn_q6_k_head(sb, b % 8, &out->d[at], &out->d2[at], &qh, f16_ref);
                out->mn[at] = 0.0f;
                int c = b % 4;
                for (int l = 0; l < KN_QK; l++)
                    q[l] = (int16_t)((((qs[l] >> (4 * (c / 2))) & 0x0f) | ((qh[l] >> (2 * c)) & 3)
                                                                              << 4) -
                                     32);
                continue;
            }
            qs = kn_k_head(type, sb, b % 8, &out->d[at], &out->mn[at], f16_ref);
            qh = kn_q5_k_bits(sb);
            int shift = 4 * (b % 2);
            for (int l = 0; l < KN_QK; l++)
                q[l] = (int16_t)(((qs[l] >> shift) & 0x0f) |
                                 (type == LT_DTYPE_Q5_K ? ((qh[l] >> (b % 8)) & 1) << 4 : 0));
        }
}

/* Activation row r of the quantized rows xa, as a one-row kn_qact_t. */
static kn_qact_t act_row(const kn_qact_t *xa, int r) {
    return (kn_qact_t){xa->xq + (size_t)r * xa->k,
                       xa->dx + (size_t)r * xa->nb,
                       xa->xs + (size_t)r * xa->nb,
                       xa->k,
                       xa->nb,
                       xa->xp ? xa->xp + (size_t)r * kn_planes_bytes(xa->nb) : NULL};
}

bool kn_qmatmul_supported(int type, int k) {
    switch (type) {
    case LT_DTYPE_F32:
    case LT_DTYPE_F16:
    case LT_DTYPE_BF16:
    case LT_DTYPE_Q4_0:
    case LT_DTYPE_Q4_1:
    case LT_DTYPE_Q5_0:
    case LT_DTYPE_Q5_1:
    case LT_DTYPE_Q8_0:
    case LT_DTYPE_Q2_K:
    case LT_DTYPE_Q3_K:
    case LT_DTYPE_Q4_K:
    case LT_DTYPE_Q5_K:
    case LT_DTYPE_Q6_K: return k > 0 && k % lt_dtype_block_elems(type) == 0;
    default: return false;
    }
}

/* The reference: per block the largest magnitude, quants lrintf(x * 32767 / amax), and the
 * block's sum in order (kn_block_sums). */
void kn_quant_scalar(const float *x, int k, int16_t *q, float *dx, float *xs, uint8_t *xp) {
    int nb = k / QK;
    for (int b = 0; b < nb; b += KN_ACC)
        kn_block_sums(x + (size_t)b * QK, nb - b < KN_ACC ? nb - b : KN_ACC, xs + b);
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)b * QK;
        float amax = 0.0f;
        for (int i = 0; i < QK; i++) {
            float v = fabsf(xb[i]);
            amax = v > amax ? v : amax;
        }
        float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        for (int i = 0; i < QK; i++) q[(size_t)b * QK + i] = (int16_t)lrintf(xb[i] * inv);
        dx[b] = amax / 32767.0f;
    }
    if (!xp) return;
    memset(xp, 0, kn_planes_bytes(nb));
    for (int b = 0; b < nb; b++) {
        uint8_t *g = xp + (size_t)(b / KN_ACC) * KN_PLANE_GROUP + (b % KN_ACC) * (QK / 2);
        for (int e = 0; e < QK; e++) {
            int v = q[(size_t)b * QK + e], at = (e / (QK / 2)) * 64 + e % (QK / 2);
            g[at] = (uint8_t)(v & 0xff);
            g[128 + at] = (uint8_t)(int8_t)(v >> 8);
        }
    }
}

/* Group g (rows g * KN_LANES ..) of the row-major quantized activations, side by side; lanes
 * past row m are zeros. */
static void transpose_group(const kn_qscratch_t *s, int g, int m, int k) {
    int nb = k / QK, r0 = g * KN_LANES;
    int16_t *xt = s->xqT + (size_t)g * KN_LANES * nb * QK;
    float *dt = s->dxT + (size_t)g * KN_LANES * nb, *st = s->xsT + (size_t)g * KN_LANES * nb;
    for (int l = 0; l < KN_LANES; l++) {
        int r = r0 + l;
        const int16_t *xr = s->xq + (size_t)r * k;
        for (int b = 0; b < nb; b++) {
            for (int p = 0; p < QK / 2; p++) {
                int16_t *o = xt + (((size_t)b * (QK / 2) + p) * KN_LANES + l) * 2;
                o[0] = r < m ? xr[b * QK + 2 * p] : 0;
                o[1] = r < m ? xr[b * QK + 2 * p + 1] : 0;
            }
            dt[(size_t)b * KN_LANES + l] = r < m ? s->dx[(size_t)r * nb + b] : 0.0f;
            st[(size_t)b * KN_LANES + l] = r < m ? s->xs[(size_t)r * nb + b] : 0.0f;
        }
    }
}

/* Weight rows [j0, j1) against every activation row, direct types: a few rows (quantized in xa)
 * through rowdot, more in groups of KN_LANES through gemm (bit-identical either way). */
static void chunk_direct(float *y, const uint8_t *w, int type, size_t row_bytes, size_t bb,
                         const kn_qscratch_t *s, const kn_qact_t *xa, int m, int n, int k, int j0,
                         int j1, kn_isa_t isa) {
    int nb = k / QK;
    if (xa->xp && kn_planes_type(type)) { /* up to KN_FEW_MAX rows, four at a time (rowdot4m) */
        int j = j0;
        for (; j + 4 <= j1; j += 4)
            for (int r0 = 0; r0 < m; r0 += KN_ROWDOT_MAX) {
                kn_qact_t ar = act_row(xa, r0);
                k_isa[isa].rowdot4m(type, w + (size_t)j * row_bytes, row_bytes, bb, &ar,
                                    m - r0 < KN_ROWDOT_MAX ? m - r0 : KN_ROWDOT_MAX,
                                    y + (size_t)r0 * n + j, (size_t)n);
            }
        for (; j < j1; j++)
            for (int r0 = 0; r0 < m; r0 += KN_ROWDOT_MAX) {
                float out[KN_ROWDOT_MAX];
                int mr = m - r0 < KN_ROWDOT_MAX ? m - r0 : KN_ROWDOT_MAX;
                kn_qact_t ar = act_row(xa, r0);
                k_isa[isa].rowdot(type, w + (size_t)j * row_bytes, bb, &ar, mr, out);
                for (int r = 0; r < mr; r++) y[(size_t)(r0 + r) * n + j] = out[r];
            }
        return;
    }
    if (m <= KN_ROWDOT_MAX &&
        (rowdot_form(type) || (kn_is_superblock(type) && k_isa[isa].rowdot_sb))) {
        int j = j0;
        if (k_isa[isa].rowdot4 && rowdot_form(type))
            for (; j + 4 <= j1; j += 4)
                for (int r = 0; r < m; r++) {
                    kn_qact_t ar = act_row(xa, r);
                    k_isa[isa].rowdot4(type, w + (size_t)j * row_bytes, row_bytes, bb, &ar,
                                       y + (size_t)r * n + j);
                }
        for (; j < j1; j++) {
            float out[KN_ROWDOT_MAX];
            k_isa[isa].rowdot(type, w + (size_t)j * row_bytes, bb, xa, m, out);
            for (int r = 0; r < m; r++) y[(size_t)r * n + j] = out[r];
        }
        return;
    }
    if (kn_is_superblock(type) && m <= KN_ROWDOT_MAX && k_isa[isa].rowdot4k) {
        for (; j0 + 4 <= j1; j0 += 4) /* K-quant decode: read in place, four rows at a time */
            for (int i = 0; i < m; i++) {
                kn_qact_t ai = act_row(xa, i);
                k_isa[isa].rowdot4k(type, w + (size_t)j0 * row_bytes, row_bytes, &ai,
                                    y + (size_t)i * n + j0);
            }
        if (j0 == j1) return;
    }
    /* the chunk's weight rows unpacked once, then read by every row group */
    int me = omp_get_thread_num(), nbk = (s->max_k + QK - 1) / QK;
    size_t at = (size_t)me * ROW_CHUNK * nbk;
    kn_wrows_t wr = {s->wq + at * QK, s->wd + at, s->wm + at,
                     type == LT_DTYPE_Q6_K ? s->wd2 + at : NULL, nb};
    if (rowdot_form(type))
        k_isa[isa].unpack(type, w + (size_t)j0 * row_bytes, row_bytes, bb, j1 - j0, &wr);
    else
        k_isa[isa].unpack_sb(type, w + (size_t)j0 * row_bytes, row_bytes, j1 - j0, &wr);
    for (int g = 0; g * KN_LANES < m; g++) {
        kn_qactT_t a = {s->xqT + (size_t)g * KN_LANES * nb * QK, s->dxT + (size_t)g * KN_LANES * nb,
                        s->xsT + (size_t)g * KN_LANES * nb, nb};
        int lanes = m - g * KN_LANES < KN_LANES ? m - g * KN_LANES : KN_LANES;
        k_isa[isa].gemm(&wr, j1 - j0, &a, lanes, y, n, g * KN_LANES, j0);
    }
}

/* Weight rows [j0, j1) (at most ROW_CHUNK) against every activation row, through dequantized
 * rows: the chunk dequantized once into rows, then blocks of up to four activation rows against
 * four of its rows (dotf4, the same bits as dotf one by one: a result does not depend on m). */
static void chunk_generic(float *y, const float *x, const uint8_t *w, int type, size_t row_bytes,
                          float *rows, int m, int n, int k, int j0, int j1, kn_isa_t isa) {
    int nr = j1 - j0;
    for (int j = 0; j < nr; j++)
        kn_dequantize(type, w + (size_t)(j0 + j) * row_bytes, rows + (size_t)j * k, k);
    for (int r = 0; r < m; r += 4) {
        int ra = m - r < 4 ? m - r : 4;
        const float *xr = x + (size_t)r * k;
        float *yr = y + (size_t)r * n + j0;
        int j = 0;
        for (; j + 4 <= nr; j += 4) {
            float out[16];
            k_isa[isa].dotf4(xr, (size_t)k, ra, rows + (size_t)j * k, (size_t)k, k, out);
            for (int i = 0; i < ra; i++)
                memcpy(yr + (size_t)i * n + j, out + i * 4, 4 * sizeof(float));
        }
        for (; j < nr; j++)
            for (int i = 0; i < ra; i++)
                yr[(size_t)i * n + j] =
                    k_isa[isa].dotf(xr + (size_t)i * k, rows + (size_t)j * k, k);
    }
}

int kn_qmatmul_n(const kn_qmm_t *mm, int count, const float *x, int m, int k, kn_qscratch_t *s) {
    /* HOT */
    if (!s || count < 1 || count > KN_QMM_MAX || m < 1 || m > s->max_rows || k > s->max_k)
        return LT_ERR_INVAL;
    kn_isa_t isa = kn_isa();
    int first[KN_QMM_MAX + 1] = {0};               /* chunk index where matrix i starts */
    bool any_direct = false, gemm_few = false;     /* gemm_few: a few rows go through gemm */
    bool planes_all = k_isa[isa].rowdot4m != NULL; /* every weight a kn_planes_type */
    bool planes_any = false;                       /* some weight one, rowdot4m there */
    int64_t work = 0;
    for (int i = 0; i < count; i++) {
        if (mm[i].n < 1 || !kn_qmatmul_supported(mm[i].type, k)) return LT_ERR_INVAL;
        first[i + 1] = first[i] + (mm[i].n + ROW_CHUNK - 1) / ROW_CHUNK;
        any_direct |= kn_qmatmul_direct(mm[i].type);
        /* K-quants' few rows take rowdot4k, four weight rows at a time; the rest of a chunk,
         * gemm */
        gemm_few |= kn_is_superblock(mm[i].type) && !k_isa[isa].rowdot_sb &&
                    (!k_isa[isa].rowdot4k || mm[i].n % 4 != 0);
        planes_all &= kn_planes_type(mm[i].type) != 0;
        planes_any |= k_isa[isa].rowdot4m && kn_planes_type(mm[i].type);
        work += (int64_t)mm[i].n * k;
    }
    bool par = work >= PAR_MIN_MK;
    /* own: a few rows read by rowdot alone; every thread quantizes them itself (a few thousand
     * elements, the same bits), so no thread waits for another before its chunks */
    bool own = (m <= KN_ROWDOT_MAX || (planes_all && m <= KN_FEW_MAX)) && !gemm_few;
    int nb = k / QK, nbk = (s->max_k + QK - 1) / QK;
#pragma omp parallel if (par) num_threads(s->n_threads)
    {
        int me = omp_get_thread_num();
        kn_qact_t xa = {s->xq, s->dx, s->xs, k, nb, NULL};
        if (any_direct && own) {
            uint8_t *xp =
                planes_any ? s->xp1 + (size_t)me * KN_FEW_MAX * kn_planes_bytes(nbk) : NULL;
            xa = (kn_qact_t){s->xq1 + (size_t)me * KN_FEW_MAX * s->max_k,
                             s->dx1 + (size_t)me * KN_FEW_MAX * nbk,
                             s->xs1 + (size_t)me * KN_FEW_MAX * nbk,
                             k,
                             nb,
                             xp};
            for (int r = 0; r < m; r++)
                k_isa[isa].quant(x + (size_t)r * k, k, (int16_t *)xa.xq + (size_t)r * k,
                                 (float *)xa.dx + (size_t)r * nb, (float *)xa.xs + (size_t)r * nb,
                                 xp ? xp + (size_t)r * kn_planes_bytes(nb) : NULL);
        } else if (any_direct) {
#pragma omp for schedule(static)
            for (int r = 0; r < m; r++)
                k_isa[isa].quant(x + (size_t)r * k, k, s->xq + (size_t)r * k,
                                 s->dx + (size_t)r * nb, s->xs + (size_t)r * nb, NULL);
            if (m > KN_ROWDOT_MAX || gemm_few) {
#pragma omp for schedule(static)
                for (int g = 0; g < (m + KN_LANES - 1) / KN_LANES; g++) transpose_group(s, g, m, k);
            }
        }
        float *rows = s->rowbuf + (size_t)me * ROW_CHUNK * s->max_k;
#pragma omp for schedule(static)
        for (int c = 0; c < first[count]; c++) {
            int i = 0;
            while (c >= first[i + 1]) i++;
            const kn_qmm_t *q = &mm[i];
            size_t row_bytes = (size_t)lt_dtype_nbytes(q->type, k);
            int j0 = (c - first[i]) * ROW_CHUNK, j1 = j0 + ROW_CHUNK < q->n ? j0 + ROW_CHUNK : q->n;
            if (kn_qmatmul_direct(q->type))
                chunk_direct(q->y, q->w, q->type, row_bytes, lt_dtype_block_bytes(q->type), s, &xa,
                             m, q->n, k, j0, j1, isa);
            else
                chunk_generic(q->y, x, q->w, q->type, row_bytes, rows, m, q->n, k, j0, j1, isa);
        }
    }
    return LT_OK;
}

int kn_qmatmul(float *y, const float *x, const void *w, int type, int m, int n, int k,
               kn_qscratch_t *s) {
    kn_qmm_t mm = {y, w, type, n};
    return kn_qmatmul_n(&mm, 1, x, m, k, s);
}
