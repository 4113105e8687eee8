/*
 * qmatmul_avx512.c — kn_qmatmul's inner loops for AVX-512 (F, BW, VL), compiled for that
 * instruction set whatever the build's -march and called only where CPUID reports it
 * (qmatmul.c). Bit-identical to the scalar reference (qmatmul_priv.h says how).
 *
 * rowdot (a few activation rows): a block's 16 pair products by one vpmaddwd, the sixteen
 * accumulators across one vector. gemm (16 rows across a vector): each weight pair is broadcast
 * against 16 rows' activation pairs, one vector of accumulators per pair.
 */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")

#include <immintrin.h>
#include <math.h>

#include "qmatmul_priv.h"

static inline float f16_fast(uint16_t h) {
    return _cvtsh_ss(h);
}

/* The block's 32 quants as int16 in element order. */
static inline __m512i load_q16(int type, const uint8_t *qs) {
    if (type == LT_DTYPE_Q8_0) return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)qs));
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(raw, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    return _mm512_cvtepu8_epi16(_mm256_set_m128i(hi, lo));
}

/* kn_tree16 of the 16 lanes of u. */
static inline float tree16(__m512 u) {
    __m256 v8 = _mm256_add_ps(_mm512_castps512_ps256(u),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1)));
    __m128 v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
    __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    return _mm_cvtss_f32(_mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1)));
}

void kn_rowdot_avx512(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                      float *out) {
    __m512 acc[KN_ROWDOT_MAX];
    float off[KN_ROWDOT_MAX];
    for (int r = 0; r < m; r++) {
        acc[r] = _mm512_setzero_ps();
        off[r] = 0.0f;
    }
    for (int b = 0; b < a->nb; b++) {
        float d, mn;
        const uint8_t *blk = wrow + (size_t)b * bb;
        _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
        __m512i q16 = load_q16(type, kn_block_head(type, blk, &d, &mn, f16_fast));
        for (int r = 0; r < m; r++) {
            size_t ab = (size_t)r * a->nb + b;
            __m512i p = _mm512_madd_epi16(
                q16, _mm512_loadu_si512(a->xq + (size_t)r * a->k + (size_t)b * KN_QK));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(d * a->dx[ab]), acc[r]);
            off[r] = fmaf(mn, a->xs[ab], off[r]);
        }
    }
    for (int r = 0; r < m; r++) out[r] = tree16(acc[r]) + off[r];
}

void kn_rowdot4_avx512(int type, const uint8_t *w, size_t row_bytes, size_t bb, const kn_qact_t *a,
                       float *out) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    float off[4] = {0};
    for (int b = 0; b < a->nb; b++) {
        __m512i x = _mm512_loadu_si512(a->xq + (size_t)b * KN_QK);
        float dx = a->dx[b], xs = a->xs[b];
        for (int i = 0; i < 4; i++) {
            float d, mn;
            const uint8_t *blk = w + (size_t)i * row_bytes + (size_t)b * bb;
            _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
            const uint8_t *qs = kn_block_head(type, blk, &d, &mn, f16_fast);
            __m512i p = _mm512_madd_epi16(load_q16(type, qs), x);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(d * dx), acc[i]);
            off[i] = fmaf(mn, xs, off[i]);
        }
    }
    for (int i = 0; i < 4; i++) out[i] = tree16(acc[i]) + off[i];
}

void kn_unpack_avx512(int type, const uint8_t *w, size_t row_bytes, size_t bb, int rows,
                      const kn_wrows_t *out) {
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < out->nb; b++) {
            size_t at = (size_t)r * out->nb + b;
            const uint8_t *blk = w + (size_t)r * row_bytes + (size_t)b * bb;
            _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
            _mm512_store_si512(
                out->q + at * KN_QK,
                load_q16(type, kn_block_head(type, blk, &out->d[at], &out->mn[at], f16_fast)));
        }
}

void kn_gemm_avx512(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y, int n,
                    int row0, int j0) {
    float res[KN_LANES] __attribute__((aligned(64)));
    for (int r = 0; r < rows; r++) {
        __m512 acc[KN_QK / 2], off = _mm512_setzero_ps();
        for (int p = 0; p < KN_QK / 2; p++) acc[p] = _mm512_setzero_ps();
        for (int b = 0; b < a->nb; b++) {
            size_t at = (size_t)r * w->nb + b;
            const int32_t *q32 = (const int32_t *)(w->q + at * KN_QK);
            const int16_t *xb = a->xq + (size_t)b * (KN_QK / 2) * KN_LANES * 2;
            __m512 s = _mm512_mul_ps(_mm512_set1_ps(w->d[at]),
                                     _mm512_load_ps(a->dx + (size_t)b * KN_LANES));
            for (int p = 0; p < KN_QK / 2; p++) {
                __m512i pr = _mm512_madd_epi16(_mm512_set1_epi32(q32[p]),
                                               _mm512_load_si512(xb + (size_t)p * KN_LANES * 2));
                acc[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pr), s, acc[p]);
            }
            off = _mm512_fmadd_ps(_mm512_set1_ps(w->mn[at]),
                                  _mm512_load_ps(a->xs + (size_t)b * KN_LANES), off);
        }
        for (int i = 0; i < 8; i++) acc[i] = _mm512_add_ps(acc[i], acc[i + 8]);
        for (int i = 0; i < 4; i++) acc[i] = _mm512_add_ps(acc[i], acc[i + 4]);
        for (int i = 0; i < 2; i++) acc[i] = _mm512_add_ps(acc[i], acc[i + 2]);
        _mm512_store_ps(res, _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), off));
        for (int l = 0; l < lanes; l++) y[(size_t)(row0 + l) * n + j0 + r] = res[l];
    }
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
