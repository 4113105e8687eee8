/*
 * qmatmul_avx2.c — kn_qmatmul's inner loops for AVX2 with FMA and F16C, compiled for that
 * instruction set whatever the build's -march and called only where CPUID reports it
 * (qmatmul.c). Bit-identical to the scalar reference (qmatmul_priv.h says how): a few rows sum
 * each block across into a 4-lane vector (lane b % 4); sixteen rows run as two halves of eight,
 * two weight rows per activation load.
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

/* 16 in lane i where bit i of bits is set, else 0. */
static inline __m256i fifth_bits(uint32_t bits) {
    const __m256i sel = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                          8192, 16384, (short)0x8000);
    __m256i hit = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16((short)bits), sel), sel);
    return _mm256_and_si256(hit, _mm256_set1_epi16(16));
}

/* The block's 32 quants as int16 in element order: elements 0..15 in lo, 16..31 in hi. */
static inline void load_q16(int type, const uint8_t *qs, __m256i *lo, __m256i *hi) {
    if (type == LT_DTYPE_Q8_0) {
        *lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)qs));
        *hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16)));
        return;
    }
    __m128i raw = _mm_loadu_si128((const __m128i *)(kn_is_q5(type) ? qs + 4 : qs));
    __m128i mask = _mm_set1_epi8(0x0f);
    *lo = _mm256_cvtepu8_epi16(_mm_and_si128(raw, mask));
    *hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), mask));
    if (kn_is_q5(type)) {
        uint32_t qh = kn_q5_bits(qs);
        *lo = _mm256_or_si256(*lo, fifth_bits(qh & 0xffffu));
        *hi = _mm256_or_si256(*hi, fifth_bits(qh >> 16));
    }
}

/* kn_tree4 of u's lanes. */
static inline float tree4(__m128 u) {
    __m128 v2 = _mm_add_ps(u, _mm_movehl_ps(u, u)); /* [0 + 2, 1 + 3] */
    return _mm_cvtss_f32(_mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1)));
}

/* Lane j: the sum of v[j]'s eight lanes (integers: exact in any order). */
static inline __m128i hsum4x8(const __m256i *v) {
    __m256i ab = _mm256_hadd_epi32(v[0], v[1]), cd = _mm256_hadd_epi32(v[2], v[3]);
    __m256i abcd = _mm256_hadd_epi32(ab, cd); /* [a, b, c, d] over lanes 0..3, then 4..7 */
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* Lanes j < nbg all ones. */
static inline __m128i lanes_below(int nbg) {
    return _mm_cmpgt_epi32(_mm_set1_epi32(nbg), _mm_setr_epi32(0, 1, 2, 3));
}

/* 32 quant bytes as int16, elements 0..15 in *lo and 16..31 in *hi, sign-extended or not. */
static inline void widen_q16(__m256i q8, int is_signed, __m256i *lo, __m256i *hi) {
    __m128i l = _mm256_castsi256_si128(q8), h = _mm256_extracti128_si256(q8, 1);
    *lo = is_signed ? _mm256_cvtepi8_epi16(l) : _mm256_cvtepu8_epi16(l);
    *hi = is_signed ? _mm256_cvtepi8_epi16(h) : _mm256_cvtepu8_epi16(h);
}

static inline void store_q16(int16_t *dst, __m256i q8, int is_signed) {
    __m256i lo, hi;
    widen_q16(q8, is_signed, &lo, &hi);
    _mm256_store_si256((__m256i *)dst, lo);
    _mm256_store_si256((__m256i *)(dst + 16), hi);
}

#include "qmatmul_sb.h"

/* Block b of a weight row (bb: the bytes of its type's block, a K-quant's super-block): its
 * quants, elements 0..15 in *lo and 16..31 in *hi; its scale d, offset coefficient mn, and for
 * Q6_K the second half's scale d2 (kn_block_head, kn_k_head, kn_q6_k_head). */
static inline __attribute__((always_inline)) void row_block(int type, const uint8_t *wrow,
                                                            size_t bb, int b, __m256i *lo,
                                                            __m256i *hi, float *d, float *d2,
                                                            float *mn) {
    if (kn_is_superblock(type)) {
        const uint8_t *sb = wrow + (size_t)(b / 8) * bb;
        if (b % 8 == 0) _mm_prefetch((const char *)sb + KN_PREFETCH, _MM_HINT_T0);
        widen_q16(sb_block(type, sb, b % 8, d, d2, mn, f16_fast), type == LT_DTYPE_Q6_K, lo, hi);
        return;
    }
    const uint8_t *blk = wrow + (size_t)b * bb;
    _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
    load_q16(type, kn_block_head(type, blk, d, mn, f16_fast), lo, hi);
}

/* Four blocks at a time: a block's products summed across into lane b % 4 of a 4-lane vector,
 * converted, scaled and accumulated (qmatmul_priv.h); Q6_K's halves summed apart and accumulated
 * in turn. type is a constant where inlined. */
static inline __attribute__((always_inline)) void
rowdot_typed(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m, float *out) {
    __m128 acc[KN_ROWDOT_MAX];
    float off[KN_ROWDOT_MAX];
    for (int r = 0; r < m; r++) {
        acc[r] = _mm_setzero_ps();
        off[r] = 0.0f;
    }
    for (int b0 = 0; b0 < a->nb; b0 += KN_ACC) {
        int nbg = a->nb - b0 < KN_ACC ? a->nb - b0 : KN_ACC;
        __m256i qlo[KN_ACC], qhi[KN_ACC];
        float d[KN_ACC] = {0}, d2[KN_ACC] = {0}, mn[KN_ACC] = {0};
        for (int j = 0; j < nbg; j++)
            row_block(type, wrow, bb, b0 + j, &qlo[j], &qhi[j], &d[j], &d2[j], &mn[j]);
        __m128i k = lanes_below(nbg);
        for (int r = 0; r < m; r++) {
            size_t ab = (size_t)r * a->nb + b0;
            __m256i vlo[KN_ACC], vhi[KN_ACC];
            for (int j = 0; j < KN_ACC; j++) {
                if (j >= nbg) {
                    vlo[j] = vhi[j] = _mm256_setzero_si256();
                    continue;
                }
                const __m256i *x =
                    (const __m256i *)(a->xq + (size_t)r * a->k + (size_t)(b0 + j) * KN_QK);
                vlo[j] = _mm256_madd_epi16(qlo[j], _mm256_loadu_si256(x));
                vhi[j] = _mm256_madd_epi16(qhi[j], _mm256_loadu_si256(x + 1));
            }
            __m128 dx = _mm_maskload_ps(a->dx + ab, k), t;
            if (type == LT_DTYPE_Q6_K) {
                t = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4x8(vlo)), _mm_mul_ps(_mm_loadu_ps(d), dx),
                                 acc[r]);
                t = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4x8(vhi)), _mm_mul_ps(_mm_loadu_ps(d2), dx),
                                 t);
            } else {
                for (int j = 0; j < KN_ACC; j++) vlo[j] = _mm256_add_epi32(vlo[j], vhi[j]);
                t = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4x8(vlo)), _mm_mul_ps(_mm_loadu_ps(d), dx),
                                 acc[r]);
            }
            acc[r] = _mm_blendv_ps(acc[r], t, _mm_castsi128_ps(k));
            for (int j = 0; j < nbg; j++) off[r] = fmaf(mn[j], a->xs[ab + j], off[r]);
        }
    }
    for (int r = 0; r < m; r++) out[r] = tree4(acc[r]) + off[r];
}

/* One weight row against m <= 4 activation rows, every directly read type (the K-quants' blocks
 * decoded from their super-blocks in place). */
void kn_rowdot_avx2(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                    float *out) {
    switch (type) {
    case LT_DTYPE_Q4_K: rowdot_typed(LT_DTYPE_Q4_K, wrow, bb, a, m, out); break;
    case LT_DTYPE_Q5_K: rowdot_typed(LT_DTYPE_Q5_K, wrow, bb, a, m, out); break;
    case LT_DTYPE_Q6_K: rowdot_typed(LT_DTYPE_Q6_K, wrow, bb, a, m, out); break;
    default: rowdot_typed(type, wrow, bb, a, m, out); break;
    }
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

void kn_unpack_sb_avx2(int type, const uint8_t *w, size_t row_bytes, int rows,
                       const kn_wrows_t *out) {
    sb_unpack(type, w, row_bytes, rows, out, f16_fast);
}

#define GEMM_TILE 2 /* weight rows per pass */

/* Weight rows r0 .. r0 + R - 1 against rows 8h .. 8h + 7 of the group: per weight row KN_ACC
 * accumulators (block b into b % KN_ACC) and the offset term; results into res[t][8h ..]. */
static inline __attribute__((always_inline)) void gemm_tile(const kn_wrows_t *w, int r0, int R,
                                                            const kn_qactT_t *a, int h,
                                                            float res[][KN_LANES], int halves) {
    __m256 acc[GEMM_TILE][KN_ACC], off[GEMM_TILE];
#pragma GCC unroll 2
    for (int t = 0; t < R; t++) {
        off[t] = _mm256_setzero_ps();
#pragma GCC unroll 4
        for (int i = 0; i < KN_ACC; i++) acc[t][i] = _mm256_setzero_ps();
    }
    for (int b0 = 0; b0 < a->nb; b0 += KN_ACC) {
#pragma GCC unroll 4
        for (int j = 0; j < KN_ACC; j++) {
            int b = b0 + j;
            if (b >= a->nb) break;
            const int16_t *xb = a->xq + (size_t)b * (KN_QK / 2) * KN_LANES * 2 + h * 16;
            __m256i c[GEMM_TILE];
            __m256 dx = _mm256_load_ps(a->dx + (size_t)b * KN_LANES + h * 8);
#pragma GCC unroll 2
            for (int t = 0; t < R; t++) c[t] = _mm256_setzero_si256();
#pragma GCC unroll 16
            for (int p = 0; p < KN_QK / 2; p++) {
                __m256i x = _mm256_load_si256((const __m256i *)(xb + (size_t)p * KN_LANES * 2));
                __asm__("" : "+x"(x)); /* one load for the tile */
#pragma GCC unroll 2
                for (int t = 0; t < R; t++) {
                    const int32_t *q32 =
                        (const int32_t *)(w->q + ((size_t)(r0 + t) * w->nb + b) * KN_QK);
                    c[t] = _mm256_add_epi32(c[t], _mm256_madd_epi16(_mm256_set1_epi32(q32[p]), x));
                }
                /* Q6_K: the first half's sum, then the second's */
                if (halves && p == KN_QK / 4 - 1)
#pragma GCC unroll 2
                    for (int t = 0; t < R; t++) {
                        size_t at = (size_t)(r0 + t) * w->nb + b;
                        acc[t][j] =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[t]),
                                            _mm256_mul_ps(_mm256_set1_ps(w->d[at]), dx), acc[t][j]);
                        c[t] = _mm256_setzero_si256();
                    }
            }
            __m256 xs = _mm256_load_ps(a->xs + (size_t)b * KN_LANES + h * 8);
#pragma GCC unroll 2
            for (int t = 0; t < R; t++) {
                size_t at = (size_t)(r0 + t) * w->nb + b;
                float d = halves ? w->d2[at] : w->d[at];
                acc[t][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[t]),
                                            _mm256_mul_ps(_mm256_set1_ps(d), dx), acc[t][j]);
                off[t] = _mm256_fmadd_ps(_mm256_set1_ps(w->mn[at]), xs, off[t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int t = 0; t < R; t++) {
        __m256 v =
            _mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][2]), _mm256_add_ps(acc[t][1], acc[t][3]));
        _mm256_storeu_ps(res[t] + h * 8, _mm256_add_ps(v, off[t]));
    }
}

static inline __attribute__((always_inline)) void gemm_rows(const kn_wrows_t *w, int rows,
                                                            const kn_qactT_t *a, int lanes,
                                                            float *y, int n, int row0, int j0,
                                                            int halves) {
    float res[GEMM_TILE][KN_LANES];
    for (int r = 0; r < rows;) {
        int R = rows - r >= GEMM_TILE ? GEMM_TILE : 1;
        for (int h = 0; h < (lanes > 8 ? 2 : 1); h++) { /* a half of eight lanes, if in use */
            if (R == GEMM_TILE)
                gemm_tile(w, r, GEMM_TILE, a, h, res, halves);
            else
                gemm_tile(w, r, 1, a, h, res, halves);
        }
        for (int t = 0; t < R; t++)
            for (int l = 0; l < lanes; l++) y[(size_t)(row0 + l) * n + j0 + r + t] = res[t][l];
        r += R;
    }
}

void kn_gemm_avx2(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y, int n,
                  int row0, int j0) {
    if (w->d2)
        gemm_rows(w, rows, a, lanes, y, n, row0, j0, 1);
    else
        gemm_rows(w, rows, a, lanes, y, n, row0, j0, 0);
}

/* kn_dotf4 for RA (a constant where inlined, at most 2: sixteen registers) rows of a. */
static inline __attribute__((always_inline)) void
dotf4_rows(const float *a, size_t as, int RA, const float *b, size_t bs, int n, float *out) {
    __m256 acc[2][4];
    for (int i = 0; i < RA; i++)
        for (int t = 0; t < 4; t++) acc[i][t] = _mm256_setzero_ps();
    int e = 0;
    for (; e + 8 <= n; e += 8)
        for (int i = 0; i < RA; i++) {
            __m256 x = _mm256_loadu_ps(a + i * as + e);
            for (int t = 0; t < 4; t++)
                acc[i][t] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + t * bs + e), acc[i][t]);
        }
    for (int i = 0; i < RA; i++)
        for (int t = 0; t < 4; t++) {
            float s = hsum256(acc[i][t]);
            for (int f = e; f < n; f++) s = fmaf(a[i * as + f], b[t * bs + f], s);
            out[i * 4 + t] = s;
        }
}

void kn_dotf4_avx2(const float *a, size_t as, int ra, const float *b, size_t bs, int n,
                   float *out) {
    for (int i = 0; i < ra; i += 2) {
        if (ra - i >= 2)
            dotf4_rows(a + i * as, as, 2, b, bs, n, out + i * 4);
        else
            dotf4_rows(a + i * as, as, 1, b, bs, n, out + i * 4);
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
