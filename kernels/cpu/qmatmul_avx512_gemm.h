/*
 * qmatmul_avx512_gemm.h — the body of the AVX-512 gemm kernel (sixteen activation rows across a
 * vector), included by qmatmul_avx512.c and qmatmul_avx512vnni.c. Each defines pair_dot(acc, w,
 * x) first, which adds to acc's lanes the pair products of w and x: vpmaddwd then vpaddd, or one
 * vpdpwssd. A block's integer sum is exact, so both give the same bits (qmatmul_priv.h).
 */
#ifndef KN_QMATMUL_AVX512_GEMM_H
#define KN_QMATMUL_AVX512_GEMM_H

#include <immintrin.h>

#include "qmatmul_priv.h"

#define GEMM_TILE 4 /* weight rows per pass: each activation load feeds this many products */

/* Weight rows r0 .. r0 + R - 1 (R <= GEMM_TILE, a constant where it is inlined) against the
 * group: per row KN_ACC accumulators (block b into b % KN_ACC) and the offset term, lanes being
 * the group's sixteen rows. halves (a constant): Q6_K, each block's two 16-element halves
 * accumulated in turn with their own scales (w->d, w->d2). */
static inline __attribute__((always_inline)) void gemm_tile(const kn_wrows_t *w, int r0, int R,
                                                            const kn_qactT_t *a, int lanes,
                                                            float *y, int n, int row0, int j0,
                                                            int halves) {
    __m512 acc[GEMM_TILE][KN_ACC], off[GEMM_TILE];
#pragma GCC unroll 4
    for (int t = 0; t < R; t++) {
        off[t] = _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int i = 0; i < KN_ACC; i++) acc[t][i] = _mm512_setzero_ps();
    }
    for (int b0 = 0; b0 < a->nb; b0 += KN_ACC) {
#pragma GCC unroll 4
        for (int j = 0; j < KN_ACC; j++) {
            int b = b0 + j;
            if (b >= a->nb) break;
            const int16_t *xb = a->xq + (size_t)b * (KN_QK / 2) * KN_LANES * 2;
            const int32_t *q32[GEMM_TILE];
            __m512i c[GEMM_TILE];
            __m512 dx = _mm512_load_ps(a->dx + (size_t)b * KN_LANES);
#pragma GCC unroll 4
            for (int t = 0; t < R; t++) {
                q32[t] = (const int32_t *)(w->q + ((size_t)(r0 + t) * w->nb + b) * KN_QK);
                c[t] = _mm512_setzero_si512();
            }
#pragma GCC unroll 16
            for (int p = 0; p < KN_QK / 2; p++) {
                __m512i x = _mm512_load_si512(xb + (size_t)p * KN_LANES * 2);
                /* one load for the tile: without this the compiler folds it into every product */
                __asm__("" : "+v"(x));
#pragma GCC unroll 4
                for (int t = 0; t < R; t++) c[t] = pair_dot(c[t], _mm512_set1_epi32(q32[t][p]), x);
                if (halves && p == KN_QK / 4 - 1) /* the first half's sum, then the second's */
#pragma GCC unroll 4
                    for (int t = 0; t < R; t++) {
                        size_t at = (size_t)(r0 + t) * w->nb + b;
                        acc[t][j] =
                            _mm512_fmadd_ps(_mm512_cvtepi32_ps(c[t]),
                                            _mm512_mul_ps(_mm512_set1_ps(w->d[at]), dx), acc[t][j]);
                        c[t] = _mm512_setzero_si512();
                    }
            }
            __m512 xs = _mm512_load_ps(a->xs + (size_t)b * KN_LANES);
#pragma GCC unroll 4
            for (int t = 0; t < R; t++) {
                size_t at = (size_t)(r0 + t) * w->nb + b;
                float d = halves ? w->d2[at] : w->d[at];
                acc[t][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c[t]),
                                            _mm512_mul_ps(_mm512_set1_ps(d), dx), acc[t][j]);
                off[t] = _mm512_fmadd_ps(_mm512_set1_ps(w->mn[at]), xs, off[t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < R; t++) {
        float res[KN_LANES] __attribute__((aligned(64)));
        __m512 v =
            _mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][2]), _mm512_add_ps(acc[t][1], acc[t][3]));
        _mm512_store_ps(res, _mm512_add_ps(v, off[t]));
        for (int l = 0; l < lanes; l++) y[(size_t)(row0 + l) * n + j0 + r0 + t] = res[l];
    }
}

static inline __attribute__((always_inline)) void gemm_rows(const kn_wrows_t *w, int rows,
                                                            const kn_qactT_t *a, int lanes,
                                                            float *y, int n, int row0, int j0,
                                                            int halves) {
    int r = 0;
    for (; r + GEMM_TILE <= rows; r += GEMM_TILE)
        gemm_tile(w, r, GEMM_TILE, a, lanes, y, n, row0, j0, halves);
    for (; r < rows; r++) gemm_tile(w, r, 1, a, lanes, y, n, row0, j0, halves);
}

static inline void gemm_avx512_body(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes,
                                    float *y, int n, int row0, int j0) {
    if (w->d2)
        gemm_rows(w, rows, a, lanes, y, n, row0, j0, 1);
    else
        gemm_rows(w, rows, a, lanes, y, n, row0, j0, 0);
}

#endif
