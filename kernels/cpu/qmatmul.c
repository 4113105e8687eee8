/*
 * qmatmul.c — matrix products straight from quantized weights, for decode.
 *
 * A decode step multiplies a handful of activation rows by every weight matrix, so it is bound by
 * the bytes of weight read: fp32 weights cost 4 bytes each, Q4_1 0.625. These kernels read the
 * weights in their stored block format (Q4_0, Q4_1, Q8_0) and never widen them in memory.
 *
 * Arithmetic: each activation row is quantized per 32-element block to int16 with its own scale
 * (relative error <= 2^-16 of the block's largest value, far below the fp32 path's other
 * rounding differences and ~250x finer than the int8 activations common elsewhere), and each
 * block product is an exact integer dot product (pmaddwd) of the weight quants and the int16
 * activations, scaled once by (weight scale x activation scale). Q4_1's offset and Q4_0's
 * implicit -8 contribute m * sum(x), with the block sum of x taken in fp32 from the unquantized
 * activations. The result matches dequantize-then-sgemm to ~1e-5 relative.
 *
 * Rows of the output are split across OpenMP threads; each reads its weight rows once for all
 * m activation rows.
 */
#include "kernels.h"

#include <math.h>
#include <string.h>

#include "lt.h"

#if defined(__AVX512BW__) && defined(__AVX512F__)
#include <immintrin.h>
#define QM_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define QM_AVX2 1
#endif

#define QK            32
#define QM_MAX_ROWS   KN_QMATMUL_MAX_ROWS
#define QM_MAX_BLOCKS 1024 /* k up to 32768 */

bool kn_qmatmul_supported(int type) {
    return type == LT_DTYPE_Q4_0 || type == LT_DTYPE_Q4_1 || type == LT_DTYPE_Q8_0;
}

static inline float ld_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
#if defined(__F16C__)
    return _cvtsh_ss(h); /* one instruction: this runs twice per block */
#else
    return lt_f16_to_f32(h);
#endif
}

/* Quantized activations of one call: per calling thread, sized for the largest call. */
typedef struct {
    int16_t xq[QM_MAX_ROWS * QM_MAX_BLOCKS * QK]; /* (m, k) */
    float dx[QM_MAX_ROWS * QM_MAX_BLOCKS];        /* (m, nb) activation scale per block */
    float xs[QM_MAX_ROWS * QM_MAX_BLOCKS];        /* (m, nb) fp32 sum of each block */
} qm_act_t;

static _Thread_local qm_act_t g_act;

static void quantize_act(const float *x, int m, int k, qm_act_t *a) {
    int nb = k / QK;
    for (int r = 0; r < m; r++) {
        for (int b = 0; b < nb; b++) {
            const float *xb = x + (size_t)r * k + (size_t)b * QK;
            float amax = 0.0f, sum = 0.0f;
            for (int i = 0; i < QK; i++) {
                float v = fabsf(xb[i]);
                amax = v > amax ? v : amax;
                sum += xb[i];
            }
            float d = amax / 32767.0f, inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
            int16_t *q = a->xq + (size_t)r * k + (size_t)b * QK;
            for (int i = 0; i < QK; i++) q[i] = (int16_t)lrintf(xb[i] * inv);
            a->dx[r * nb + b] = d;
            a->xs[r * nb + b] = sum;
        }
    }
}

/* Block header: scale d and offset term coefficient mn (value = d*q + mn). */
static inline const uint8_t *block_head(int type, const uint8_t *blk, float *d, float *mn) {
    *d = ld_f16(blk);
    if (type == LT_DTYPE_Q4_1) {
        *mn = ld_f16(blk + 2);
        return blk + 4;
    }
    *mn = type == LT_DTYPE_Q4_0 ? -8.0f * *d : 0.0f;
    return blk + 2;
}

/* ---- one weight row against m activation rows ---- */

#if defined(QM_AVX512) || defined(QM_AVX2)
/* The block's 32 quants as bytes, element order 0..31 (Q4 nibbles: low = 0..15, high = 16..31). */
static inline __m256i load_q8(int type, const uint8_t *qs) {
    if (type == LT_DTYPE_Q8_0) return _mm256_loadu_si256((const __m256i *)qs);
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(raw, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    return _mm256_set_m128i(hi, lo);
}
#endif

#if defined(QM_AVX512)
static void row_dot(int type, const uint8_t *wrow, size_t bb, int nb, int k, const qm_act_t *a,
                    int m, float *out) {
    __m512 acc[QM_MAX_ROWS];
    float off[QM_MAX_ROWS];
    for (int r = 0; r < m; r++) {
        acc[r] = _mm512_setzero_ps();
        off[r] = 0.0f;
    }
    for (int b = 0; b < nb; b++) {
        float d, mn;
        const uint8_t *qs = block_head(type, wrow + (size_t)b * bb, &d, &mn);
        __m256i q8 = load_q8(type, qs);
        __m512i q16 = type == LT_DTYPE_Q8_0 ? _mm512_cvtepi8_epi16(q8) : _mm512_cvtepu8_epi16(q8);
        for (int r = 0; r < m; r++) {
            __m512i x16 =
                _mm512_loadu_si512((const void *)(a->xq + (size_t)r * k + (size_t)b * QK));
            __m512i p = _mm512_madd_epi16(q16, x16);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(d * a->dx[r * nb + b]),
                                     acc[r]);
            off[r] += mn * a->xs[r * nb + b];
        }
    }
    for (int r = 0; r < m; r++) out[r] = _mm512_reduce_add_ps(acc[r]) + off[r];
}
#elif defined(QM_AVX2)
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static void row_dot(int type, const uint8_t *wrow, size_t bb, int nb, int k, const qm_act_t *a,
                    int m, float *out) {
    __m256 acc[QM_MAX_ROWS];
    float off[QM_MAX_ROWS];
    for (int r = 0; r < m; r++) {
        acc[r] = _mm256_setzero_ps();
        off[r] = 0.0f;
    }
    for (int b = 0; b < nb; b++) {
        float d, mn;
        const uint8_t *qs = block_head(type, wrow + (size_t)b * bb, &d, &mn);
        __m256i q8 = load_q8(type, qs);
        __m128i q8lo = _mm256_castsi256_si128(q8), q8hi = _mm256_extracti128_si256(q8, 1);
        __m256i qlo =
            type == LT_DTYPE_Q8_0 ? _mm256_cvtepi8_epi16(q8lo) : _mm256_cvtepu8_epi16(q8lo);
        __m256i qhi =
            type == LT_DTYPE_Q8_0 ? _mm256_cvtepi8_epi16(q8hi) : _mm256_cvtepu8_epi16(q8hi);
        for (int r = 0; r < m; r++) {
            const int16_t *xq = a->xq + (size_t)r * k + (size_t)b * QK;
            __m256i p = _mm256_add_epi32(
                _mm256_madd_epi16(qlo, _mm256_loadu_si256((const __m256i *)xq)),
                _mm256_madd_epi16(qhi, _mm256_loadu_si256((const __m256i *)(xq + 16))));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a->dx[r * nb + b]),
                                     acc[r]);
            off[r] += mn * a->xs[r * nb + b];
        }
    }
    for (int r = 0; r < m; r++) out[r] = hsum256(acc[r]) + off[r];
}
#else
static void row_dot(int type, const uint8_t *wrow, size_t bb, int nb, int k, const qm_act_t *a,
                    int m, float *out) {
    for (int r = 0; r < m; r++) out[r] = 0.0f;
    for (int b = 0; b < nb; b++) {
        float d, mn;
        const uint8_t *qs = block_head(type, wrow + (size_t)b * bb, &d, &mn);
        int q[QK];
        for (int i = 0; i < QK; i++) {
            if (type == LT_DTYPE_Q8_0)
                q[i] = (int8_t)qs[i];
            else
                q[i] = i < 16 ? (qs[i] & 0x0f) : (qs[i - 16] >> 4);
        }
        for (int r = 0; r < m; r++) {
            const int16_t *xq = a->xq + (size_t)r * k + (size_t)b * QK;
            int32_t s = 0;
            for (int i = 0; i < QK; i++) s += q[i] * xq[i];
            out[r] += d * a->dx[r * nb + b] * (float)s + mn * a->xs[r * nb + b];
        }
    }
}
#endif

/* ---- public ---- */

int kn_qmatmul(float *y, const float *x, const void *w, int type, int m, int n, int k) {
    /* HOT */
    if (!kn_qmatmul_supported(type) || m < 1 || m > QM_MAX_ROWS || k % QK || k / QK > QM_MAX_BLOCKS)
        return LT_ERR_INVAL;
    int nb = k / QK;
    size_t bb = lt_dtype_block_bytes(type);
    qm_act_t *a = &g_act;
    quantize_act(x, m, k, a);
    const uint8_t *wb = w;
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; j++) {
        float out[QM_MAX_ROWS];
        row_dot(type, wb + (size_t)j * nb * bb, bb, nb, k, a, m, out);
        for (int r = 0; r < m; r++) y[(size_t)r * n + j] = out[r];
    }
    return LT_OK;
}
