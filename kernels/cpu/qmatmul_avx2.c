/*
 * qmatmul_avx2.c — kn_qmatmul's inner loops for AVX2 with FMA and F16C, compiled for that
 * instruction set whatever the build's -march and called only where CPUID reports it
 * (qmatmul.c). Bit-identical to the scalar reference (qmatmul_priv.h says how); the same two
 * kernels as qmatmul_avx512.c on 8-lane vectors (a block's pairs in two vectors; sixteen rows as
 * two halves of eight).
 */
#pragma GCC target("avx2,fma,f16c")

#include <immintrin.h>
#include <math.h>

#include "qmatmul_priv.h"

static inline float f16_fast(uint16_t h) {
    return _cvtsh_ss(h);
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The block's 32 quants as int16 in element order: elements 0..15 in lo, 16..31 in hi. */
static inline void load_q16(int type, const uint8_t *qs, __m256i *lo, __m256i *hi) {
    if (type == LT_DTYPE_Q8_0) {
        *lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)qs));
        *hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16)));
        return;
    }
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m128i mask = _mm_set1_epi8(0x0f);
    *lo = _mm256_cvtepu8_epi16(_mm_and_si128(raw, mask));
    *hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), mask));
}

/* kn_tree16 of u: lanes 0..7 of lo and hi are u[0..7] and u[8..15]. */
static inline float tree16(__m256 lo, __m256 hi) {
    __m256 v8 = _mm256_add_ps(lo, hi);
    __m128 v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
    __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    return _mm_cvtss_f32(_mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1)));
}

void kn_rowdot_avx2(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                    float *out) {
    __m256 acc_lo[KN_ROWDOT_MAX], acc_hi[KN_ROWDOT_MAX]; /* pairs 0..7 and 8..15 */
    float off[KN_ROWDOT_MAX];
    for (int r = 0; r < m; r++) {
        acc_lo[r] = acc_hi[r] = _mm256_setzero_ps();
        off[r] = 0.0f;
    }
    for (int b = 0; b < a->nb; b++) {
        float d, mn;
        __m256i qlo, qhi;
        const uint8_t *blk = wrow + (size_t)b * bb;
        _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
        load_q16(type, kn_block_head(type, blk, &d, &mn, f16_fast), &qlo, &qhi);
        for (int r = 0; r < m; r++) {
            size_t ab = (size_t)r * a->nb + b;
            const __m256i *x = (const __m256i *)(a->xq + (size_t)r * a->k + (size_t)b * KN_QK);
            __m256 s = _mm256_set1_ps(d * a->dx[ab]);
            acc_lo[r] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_madd_epi16(qlo, _mm256_loadu_si256(x))), s, acc_lo[r]);
            acc_hi[r] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_madd_epi16(qhi, _mm256_loadu_si256(x + 1))), s,
                acc_hi[r]);
            off[r] = fmaf(mn, a->xs[ab], off[r]);
        }
    }
    for (int r = 0; r < m; r++) out[r] = tree16(acc_lo[r], acc_hi[r]) + off[r];
}

void kn_unpack_avx2(int type, const uint8_t *w, size_t row_bytes, size_t bb, int rows,
                    const kn_wrows_t *out) {
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < out->nb; b++) {
            size_t at = (size_t)r * out->nb + b;
            const uint8_t *blk = w + (size_t)r * row_bytes + (size_t)b * bb;
            __m256i ql, qh;
            _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
            load_q16(type, kn_block_head(type, blk, &out->d[at], &out->mn[at], f16_fast), &ql, &qh);
            _mm256_store_si256((__m256i *)(out->q + at * KN_QK), ql);
            _mm256_store_si256((__m256i *)(out->q + at * KN_QK + 16), qh);
        }
}

void kn_gemm_avx2(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y, int n,
                  int row0, int j0) {
    float res[KN_LANES] __attribute__((aligned(32)));
    for (int r = 0; r < rows; r++) {
        /* rows 0..7 and 8..15 in turn: sixteen accumulators (one per pair) of eight rows */
        for (int h = 0; h < 2; h++) {
            __m256 acc[KN_QK / 2], off = _mm256_setzero_ps();
            for (int p = 0; p < KN_QK / 2; p++) acc[p] = _mm256_setzero_ps();
            for (int b = 0; b < a->nb; b++) {
                size_t at = (size_t)r * w->nb + b;
                const int32_t *q32 = (const int32_t *)(w->q + at * KN_QK);
                const int16_t *xb = a->xq + (size_t)b * (KN_QK / 2) * KN_LANES * 2 + h * 16;
                const float *dx = a->dx + (size_t)b * KN_LANES + h * 8,
                            *xs = a->xs + (size_t)b * KN_LANES + h * 8;
                __m256 s = _mm256_mul_ps(_mm256_set1_ps(w->d[at]), _mm256_load_ps(dx));
                for (int p = 0; p < KN_QK / 2; p++) {
                    __m256i pr = _mm256_madd_epi16(
                        _mm256_set1_epi32(q32[p]),
                        _mm256_load_si256((const __m256i *)(xb + (size_t)p * KN_LANES * 2)));
                    acc[p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pr), s, acc[p]);
                }
                off = _mm256_fmadd_ps(_mm256_set1_ps(w->mn[at]), _mm256_load_ps(xs), off);
            }
            for (int i = 0; i < 8; i++) acc[i] = _mm256_add_ps(acc[i], acc[i + 8]);
            for (int i = 0; i < 4; i++) acc[i] = _mm256_add_ps(acc[i], acc[i + 4]);
            for (int i = 0; i < 2; i++) acc[i] = _mm256_add_ps(acc[i], acc[i + 2]);
            _mm256_store_ps(res + h * 8, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), off));
        }
        for (int l = 0; l < lanes; l++) y[(size_t)(row0 + l) * n + j0 + r] = res[l];
    }
}

float kn_dotf_avx2(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = hsum256(acc);
    for (; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}
