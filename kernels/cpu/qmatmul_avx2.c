/*
 * qmatmul_avx2.c — kn_qmatmul's inner loops for AVX2 with FMA and F16C, compiled for that
 * instruction set whatever the build's -march and called only where CPUID reports it
 * (qmatmul.c). Same arithmetic as the scalar reference: integer block products, one fp32
 * accumulator per activation row, blocks in order.
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

/* The block's 32 quants as bytes, element order 0..31 (Q4 nibbles: low = 0..15, high = 16..31). */
static inline __m256i load_q8(int type, const uint8_t *qs) {
    if (type == LT_DTYPE_Q8_0) return _mm256_loadu_si256((const __m256i *)qs);
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(raw, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    return _mm256_set_m128i(hi, lo);
}

void kn_rowdot_avx2(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                    float *out) {
    __m256 acc[KN_QMATMUL_MAX_GROUP];
    float off[KN_QMATMUL_MAX_GROUP];
    for (int r = 0; r < m; r++) {
        acc[r] = _mm256_setzero_ps();
        off[r] = 0.0f;
    }
    for (int b = 0; b < a->nb; b++) {
        float d, mn;
        const uint8_t *qs = kn_block_head(type, wrow + (size_t)b * bb, &d, &mn, f16_fast);
        __m256i q8 = load_q8(type, qs);
        __m128i q8lo = _mm256_castsi256_si128(q8), q8hi = _mm256_extracti128_si256(q8, 1);
        __m256i qlo =
            type == LT_DTYPE_Q8_0 ? _mm256_cvtepi8_epi16(q8lo) : _mm256_cvtepu8_epi16(q8lo);
        __m256i qhi =
            type == LT_DTYPE_Q8_0 ? _mm256_cvtepi8_epi16(q8hi) : _mm256_cvtepu8_epi16(q8hi);
        for (int r = 0; r < m; r++) {
            const int16_t *xq = a->xq + (size_t)r * a->k + (size_t)b * KN_QK;
            __m256i p = _mm256_add_epi32(
                _mm256_madd_epi16(qlo, _mm256_loadu_si256((const __m256i *)xq)),
                _mm256_madd_epi16(qhi, _mm256_loadu_si256((const __m256i *)(xq + 16))));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                     _mm256_set1_ps(d * a->dx[(size_t)r * a->nb + b]), acc[r]);
            off[r] += mn * a->xs[(size_t)r * a->nb + b];
        }
    }
    for (int r = 0; r < m; r++) out[r] = hsum256(acc[r]) + off[r];
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
