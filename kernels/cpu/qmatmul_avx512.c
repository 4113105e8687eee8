/*
 * qmatmul_avx512.c — kn_qmatmul's inner loops for AVX-512 (F, BW, VL), compiled for that
 * instruction set whatever the build's -march and called only where CPUID reports it
 * (qmatmul.c). Same arithmetic as the scalar reference: integer block products, one fp32
 * accumulator per activation row, blocks in order.
 */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")

#include <immintrin.h>

#include "qmatmul_priv.h"

static inline float f16_fast(uint16_t h) {
    return _cvtsh_ss(h);
}

/* The block's 32 quants as int16, element order 0..31 (Q4 nibbles: low = 0..15, high = 16..31). */
static inline __m512i load_q16(int type, const uint8_t *qs) {
    if (type == LT_DTYPE_Q8_0) return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)qs));
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(raw, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    return _mm512_cvtepu8_epi16(_mm256_set_m128i(hi, lo));
}

void kn_rowdot_avx512(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                      float *out) {
    __m512 acc[KN_QMATMUL_MAX_GROUP];
    float off[KN_QMATMUL_MAX_GROUP];
    for (int r = 0; r < m; r++) {
        acc[r] = _mm512_setzero_ps();
        off[r] = 0.0f;
    }
    for (int b = 0; b < a->nb; b++) {
        float d, mn;
        const uint8_t *qs = kn_block_head(type, wrow + (size_t)b * bb, &d, &mn, f16_fast);
        __m512i q16 = load_q16(type, qs);
        for (int r = 0; r < m; r++) {
            __m512i x16 =
                _mm512_loadu_si512((const void *)(a->xq + (size_t)r * a->k + (size_t)b * KN_QK));
            __m512i p = _mm512_madd_epi16(q16, x16);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p),
                                     _mm512_set1_ps(d * a->dx[(size_t)r * a->nb + b]), acc[r]);
            off[r] += mn * a->xs[(size_t)r * a->nb + b];
        }
    }
    for (int r = 0; r < m; r++) out[r] = _mm512_reduce_add_ps(acc[r]) + off[r];
}

float kn_dotf_avx512(const float *a, const float *b, int n) {
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        acc =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
}
