/*
 * qmatmul_avx512_dec.h — what the AVX-512 decode kernels (four weight rows against one activation
 * row) share, included by qmatmul_avx512.c and qmatmul_avx512vnni.c: the block sums moved across
 * into one vector (lane j * 4 + i for block j of row i), the blocks' scales and offsets gathered
 * in the same layout, and the floating-point steps of the reference (qmatmul_priv.h) on it.
 */
#ifndef KN_QMATMUL_AVX512_DEC_H
#define KN_QMATMUL_AVX512_DEC_H

#include <immintrin.h>

#include "qmatmul_priv.h"

/* 128-bit lane k: [v0, v1, v2, v3] summed over v's lanes 4k .. 4k + 3 (integers: exact in any
 * order). */
static inline __m512i hsum4x4(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
    __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(v0, v1), _mm512_unpackhi_epi32(v0, v1));
    __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(v2, v3), _mm512_unpackhi_epi32(v2, v3));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
}

/* The decode kernels keep four outputs' accumulators in one vector, lane j * 4 + i for block
 * residue j of output i, and their offset terms in one 4-lane vector. Per group of KN_ACC blocks:
 * the sixteen block products summed across (hsum16x16), converted, scaled, accumulated; the
 * offsets in block order. Then kn_tree4 per output: 128-bit lanes (0 + 2) + (1 + 3). */
static inline __m128 tree4x4(__m512 acc) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(acc),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Lane j * 4 + i = 1 for j < nbg. */
static inline __mmask16 group_mask(int nbg) {
    return (__mmask16)((1u << (4 * nbg)) - 1);
}

/* The offset coefficients of blocks whose header holds only d (Q4_0's -8 d, Q5_0's -16 d; none
 * for Q8_0). */
static inline __m512 implicit_mn(int type, __m512 d) {
    if (type == LT_DTYPE_Q4_0 || type == LT_DTYPE_Q5_0)
        return _mm512_mul_ps(_mm512_set1_ps(type == LT_DTYPE_Q4_0 ? -8.0f : -16.0f), d);
    return _mm512_setzero_ps();
}

/* The scale and offset coefficient vectors (lane j * 4 + i) of blocks b0 + j (j < nbg) of four
 * weight rows (row_bytes apart) from w0, the first row's block b0. */
static inline void group_heads(int type, const uint8_t *w0, size_t row_bytes, size_t bb, int nbg,
                               __m512 *d, __m512 *mn) {
    uint16_t hd[16] = {0}, hm[16] = {0};
    for (int j = 0; j < nbg; j++)
        for (int i = 0; i < 4; i++) {
            const uint8_t *blk = w0 + (size_t)i * row_bytes + (size_t)j * bb;
            hd[j * 4 + i] = (uint16_t)(blk[0] | blk[1] << 8);
            hm[j * 4 + i] = (uint16_t)(blk[2] | blk[3] << 8);
        }
    *d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)hd));
    if (type == LT_DTYPE_Q4_1 || type == LT_DTYPE_Q5_1)
        *mn = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)hm));
    else
        *mn = implicit_mn(type, *d);
}

/* off (4 lanes) over blocks j < nbg in order: off = fmaf(mn, xs, off) with 128-bit lane j of
 * each. */
static inline __m128 group_off(__m512 mn, __m512 xs, int nbg, __m128 off) {
    if (nbg > 0) off = _mm_fmadd_ps(_mm512_castps512_ps128(mn), _mm512_castps512_ps128(xs), off);
    if (nbg > 1)
        off = _mm_fmadd_ps(_mm512_extractf32x4_ps(mn, 1), _mm512_extractf32x4_ps(xs, 1), off);
    if (nbg > 2)
        off = _mm_fmadd_ps(_mm512_extractf32x4_ps(mn, 2), _mm512_extractf32x4_ps(xs, 2), off);
    if (nbg > 3)
        off = _mm_fmadd_ps(_mm512_extractf32x4_ps(mn, 3), _mm512_extractf32x4_ps(xs, 3), off);
    return off;
}

/* Lane j * 4 + i = j: spreads a 4-lane vector of per-block values over the four outputs. */
static inline __m512 by_block(__m128 v) {
    return _mm512_permutexvar_ps(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
                                 _mm512_castps128_ps512(v));
}

/* A group's floating-point step for four weight rows against activation row 0 of a (blocks
 * b0 .. b0 + nbg - 1): the integer block sums isum, the rows' scales d and offset coefficients
 * mn, lane j * 4 + i, into acc and off. */
static inline void group_acc4(__m512i isum, __m512 d, __m512 mn, const kn_qact_t *a, int b0,
                              int nbg, __m512 *acc, __m128 *off) {
    __mmask8 kb = (__mmask8)((1u << nbg) - 1);
    __m512 s = _mm512_mul_ps(d, by_block(_mm_maskz_loadu_ps(kb, a->dx + b0)));
    *acc = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(isum), s, *acc, group_mask(nbg));
    *off = group_off(mn, by_block(_mm_maskz_loadu_ps(kb, a->xs + b0)), nbg, *off);
}

#endif
