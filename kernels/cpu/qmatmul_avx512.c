/*
 * qmatmul_avx512.c — kn_qmatmul's inner loops for AVX-512 (F, BW, VL), compiled for that
 * instruction set whatever the build's -march and called only where CPUID reports it
 * (qmatmul.c). Bit-identical to the scalar reference (qmatmul_priv.h says how).
 *
 * rowdot (a few activation rows): four blocks at a time, each block's pair products by one
 * vpmaddwd, the four vectors summed across into one (lane j: block j's integer dot product),
 * converted and accumulated in one 4-lane vector. gemm (16 rows across a vector): each weight pair
 * is broadcast against 16 rows' activation pairs (qmatmul_avx512_gemm.h).
 */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "qmatmul_priv.h"

static inline float f16_fast(uint16_t h) {
    return _cvtsh_ss(h);
}

/* The block's 32 quants as int16 in element order (Q5: bit i of qh adds 16 to lane i). */
static inline __m512i load_q16(int type, const uint8_t *qs) {
    if (type == LT_DTYPE_Q8_0) return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)qs));
    const uint8_t *nib = kn_is_q5(type) ? qs + 4 : qs;
    __m128i raw = _mm_loadu_si128((const __m128i *)nib);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(raw, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    __m512i q = _mm512_cvtepu8_epi16(_mm256_set_m128i(hi, lo));
    if (kn_is_q5(type))
        q = _mm512_mask_add_epi16(q, (__mmask32)kn_q5_bits(qs), q, _mm512_set1_epi16(16));
    return q;
}

static inline __m512i pair_dot(__m512i acc, __m512i w, __m512i x) {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(w, x));
}

#include "qmatmul_avx512_gemm.h"

static inline void store_q16(int16_t *dst, __m256i q8, int is_signed) {
    _mm512_store_si512(dst, is_signed ? _mm512_cvtepi8_epi16(q8) : _mm512_cvtepu8_epi16(q8));
}

#include "qmatmul_sb.h"
#include "qmatmul_avx512_dec.h"

/* Lane j * 4 + i: the sum of u[j]'s four 128-bit lanes' element i. */
static inline __m512i hsum_lanes(const __m512i *u) {
    __m512i w01 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512i w23 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(w01, w23, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(w01, w23, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* One group (nbg blocks from b0) of four weight rows against activation row 0. */
static inline __attribute__((always_inline)) void rowdot4_group(int type, int nbg,
                                                                const uint8_t *w0, size_t row_bytes,
                                                                size_t bb, const kn_qact_t *a,
                                                                int b0, __m512 *acc, __m128 *off) {
    int hdr = type == LT_DTYPE_Q4_1 || type == LT_DTYPE_Q5_1 ? 4 : 2; /* kn_block_head's */
    __m512i u[KN_ACC], v[4];
    for (int j = 0; j < KN_ACC; j++) {
        if (j >= nbg) {
            u[j] = _mm512_setzero_si512();
            continue;
        }
        __m512i x = _mm512_loadu_si512(a->xq + (size_t)(b0 + j) * KN_QK);
        for (int i = 0; i < 4; i++) {
            const uint8_t *blk = w0 + (size_t)i * row_bytes + (size_t)j * bb;
            _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
            v[i] = _mm512_madd_epi16(load_q16(type, blk + hdr), x);
        }
        u[j] = hsum4x4(v[0], v[1], v[2], v[3]);
    }
    __m512 d, mn;
    group_heads(type, w0, row_bytes, bb, nbg, &d, &mn);
    group_acc4(hsum_lanes(u), d, mn, a, b0, nbg, acc, off);
}

static inline __attribute__((always_inline)) void rowdot4_typed(int type, const uint8_t *w,
                                                                size_t row_bytes, size_t bb,
                                                                const kn_qact_t *a, float *out) {
    __m512 acc = _mm512_setzero_ps();
    __m128 off = _mm_setzero_ps();
    int b0 = 0;
    for (; b0 + KN_ACC <= a->nb; b0 += KN_ACC)
        rowdot4_group(type, KN_ACC, w + (size_t)b0 * bb, row_bytes, bb, a, b0, &acc, &off);
    if (b0 < a->nb)
        rowdot4_group(type, a->nb - b0, w + (size_t)b0 * bb, row_bytes, bb, a, b0, &acc, &off);
    _mm_storeu_ps(out, _mm_add_ps(tree4x4(acc), off));
}

/* Four weight rows (row_bytes apart) against activation row 0: decode's kernel. */
void kn_rowdot4_avx512(int type, const uint8_t *w, size_t row_bytes, size_t bb, const kn_qact_t *a,
                       float *out) {
    switch (type) {
    case LT_DTYPE_Q4_0: rowdot4_typed(LT_DTYPE_Q4_0, w, row_bytes, bb, a, out); break;
    case LT_DTYPE_Q4_1: rowdot4_typed(LT_DTYPE_Q4_1, w, row_bytes, bb, a, out); break;
    case LT_DTYPE_Q5_0: rowdot4_typed(LT_DTYPE_Q5_0, w, row_bytes, bb, a, out); break;
    case LT_DTYPE_Q5_1: rowdot4_typed(LT_DTYPE_Q5_1, w, row_bytes, bb, a, out); break;
    default: rowdot4_typed(LT_DTYPE_Q8_0, w, row_bytes, bb, a, out); break;
    }
}

/* Lanes j * 4 + i of the per-block values v[(r + i) * nb + b0 + j] (i < 4, j < nbg; zero past
 * nbg): four rows' runs of four, transposed. */
static inline __m512 rows_by_block(const float *v, int nb, int b0, int nbg) {
    __mmask8 k = (__mmask8)((1u << nbg) - 1);
    __m128 r0 = _mm_maskz_loadu_ps(k, v + b0), r1 = _mm_maskz_loadu_ps(k, v + nb + b0),
           r2 = _mm_maskz_loadu_ps(k, v + 2 * (size_t)nb + b0),
           r3 = _mm_maskz_loadu_ps(k, v + 3 * (size_t)nb + b0);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3); /* r_j = [row 0 .. 3 of block j] */
    __m512 out = _mm512_castps128_ps512(r0);
    out = _mm512_insertf32x4(out, r1, 1);
    out = _mm512_insertf32x4(out, r2, 2);
    return _mm512_insertf32x4(out, r3, 3);
}

/* Q4_K or Q5_K (a constant where inlined): four weight rows (row_bytes apart) against activation
 * row 0, straight from the super-blocks: the reference arithmetic on the form kn_k_head gives,
 * without writing the quants out. Q5_K's fifth bits add 16 to the lanes bit j of qh marks. */
static inline __attribute__((always_inline)) void
rowdot4k_typed(int type, const uint8_t *w, size_t row_bytes, const kn_qact_t *a, float *out) {
    __m512 acc = _mm512_setzero_ps();
    __m128 off = _mm_setzero_ps();
    const size_t sbb = lt_dtype_block_bytes(type);
    for (int sb = 0; sb < a->nb / 8; sb++) {
        float d[4][8], mn[4][8];
        const uint8_t *qs[4][8];
        __m256i qh[4];
        for (int i = 0; i < 4; i++) {
            const uint8_t *blk = w + (size_t)i * row_bytes + (size_t)sb * sbb;
            for (int j = 0; j < 8; j++)
                qs[i][j] = kn_k_head(type, blk, j, &d[i][j], &mn[i][j], f16_fast);
            qh[i] = type == LT_DTYPE_Q5_K ? _mm256_loadu_si256((const __m256i *)kn_q5_k_bits(blk))
                                          : _mm256_setzero_si256();
        }
        for (int j0 = 0; j0 < 8; j0 += KN_ACC) {
            int b0 = sb * 8 + j0;
            __m512i u[KN_ACC];
            for (int j = 0; j < KN_ACC; j++) {
                int jj = j0 + j;
                __m512i x = _mm512_loadu_si512(a->xq + (size_t)(b0 + j) * KN_QK), v[4];
                for (int i = 0; i < 4; i++) {
                    if (jj % 2 == 0)
                        _mm_prefetch((const char *)qs[i][jj] + KN_PREFETCH, _MM_HINT_T0);
                    __m512i q = _mm512_cvtepu8_epi16(sb_k32_bytes(type, qs[i][jj], jj, qh[i]));
                    v[i] = _mm512_madd_epi16(q, x);
                }
                u[j] = hsum4x4(v[0], v[1], v[2], v[3]);
            }
            group_acc4(hsum_lanes(u), rows_by_block(&d[0][0], 8, j0, KN_ACC),
                       rows_by_block(&mn[0][0], 8, j0, KN_ACC), a, b0, KN_ACC, &acc, &off);
        }
    }
    _mm_storeu_ps(out, _mm_add_ps(tree4x4(acc), off));
}

/* Lanes j * 4 + i: u[j]'s 128-bit lanes 0 + 1 of element i in *lo, 2 + 3 in *hi (the halves of
 * a 32-element block: hsum_lanes before its last add). */
static inline void hsum_halves(const __m512i *u, __m512i *lo, __m512i *hi) {
    __m512i w01 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512i w23 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
    *lo = _mm512_shuffle_i32x4(w01, w23, _MM_SHUFFLE(2, 0, 2, 0));
    *hi = _mm512_shuffle_i32x4(w01, w23, _MM_SHUFFLE(3, 1, 3, 1));
}

/* Q6_K: four weight rows against activation row 0 from the super-blocks, each block's halves
 * accumulated in turn (qmatmul_priv.h); the offset term stays that of mn = 0. */
static void rowdot4_q6k(const uint8_t *w, size_t row_bytes, const kn_qact_t *a, float *out) {
    __m512 acc = _mm512_setzero_ps();
    __m128 off = _mm_setzero_ps();
    const size_t sbb = lt_dtype_block_bytes(LT_DTYPE_Q6_K);
    for (int sb = 0; sb < a->nb / 8; sb++) {
        float dlo[4][8], dhi[4][8];
        const uint8_t *ql[4][8], *qh[4][8];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 8; j++)
                ql[i][j] = kn_q6_k_head(w + (size_t)i * row_bytes + (size_t)sb * sbb, j, &dlo[i][j],
                                        &dhi[i][j], &qh[i][j], f16_fast);
#pragma GCC unroll 2
        for (int j0 = 0; j0 < 8; j0 += KN_ACC) {
            int b0 = sb * 8 + j0;
            __m512i u[KN_ACC];
#pragma GCC unroll 4
            for (int j = 0; j < KN_ACC; j++) {
                int jj = j0 + j;
                __m512i x = _mm512_loadu_si512(a->xq + (size_t)(b0 + j) * KN_QK), v[4];
                for (int i = 0; i < 4; i++) {
                    if (jj % 2 == 0)
                        _mm_prefetch((const char *)ql[i][jj] + KN_PREFETCH, _MM_HINT_T0);
                    __m256i q8 = sb_q6k_bytes(ql[i][jj], qh[i][jj], jj);
                    v[i] = _mm512_madd_epi16(_mm512_cvtepi8_epi16(q8), x);
                }
                u[j] = hsum4x4(v[0], v[1], v[2], v[3]);
            }
            __m512i ilo, ihi;
            hsum_halves(u, &ilo, &ihi);
            __m512 dx = by_block(_mm_loadu_ps(a->dx + b0));
            __m512 slo = _mm512_mul_ps(rows_by_block(&dlo[0][0], 8, j0, KN_ACC), dx),
                   shi = _mm512_mul_ps(rows_by_block(&dhi[0][0], 8, j0, KN_ACC), dx);
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ilo), slo, acc);
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ihi), shi, acc);
            off = group_off(_mm512_setzero_ps(), by_block(_mm_loadu_ps(a->xs + b0)), KN_ACC, off);
        }
    }
    _mm_storeu_ps(out, _mm_add_ps(tree4x4(acc), off));
}

void kn_rowdot4k_avx512(int type, const uint8_t *w, size_t row_bytes, const kn_qact_t *a,
                        float *out) {
    if (type == LT_DTYPE_Q6_K)
        rowdot4_q6k(w, row_bytes, a, out);
    else if (type == LT_DTYPE_Q5_K)
        rowdot4k_typed(LT_DTYPE_Q5_K, w, row_bytes, a, out);
    else
        rowdot4k_typed(LT_DTYPE_Q4_K, w, row_bytes, a, out);
}

/* One weight row against m <= 4 activation rows: lane j * 4 + r for activation row r. */
void kn_rowdot_avx512(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                      float *out) {
    __m512 acc = _mm512_setzero_ps();
    __m128 off = _mm_setzero_ps();
    __mmask16 rows = (__mmask16)(0x1111u * ((1u << m) - 1));
    /* lane j * 4 + r: dx[r][b0 + j] and xs[r][b0 + j] */
    __m512i idx = _mm512_add_epi32(
        _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
        _mm512_mullo_epi32(_mm512_set1_epi32(a->nb),
                           _mm512_set_epi32(3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0)));
    for (int b0 = 0; b0 < a->nb; b0 += KN_ACC) {
        int nbg = a->nb - b0 < KN_ACC ? a->nb - b0 : KN_ACC;
        __mmask16 k = group_mask(nbg) & rows;
        __m512i v[16];
        float dj[KN_ACC] = {0}, mnj[KN_ACC] = {0};
        for (int j = 0; j < KN_ACC; j++) {
            __m512i q = _mm512_setzero_si512();
            if (j < nbg) {
                const uint8_t *blk = wrow + (size_t)(b0 + j) * bb;
                _mm_prefetch((const char *)blk + KN_PREFETCH, _MM_HINT_T0);
                q = load_q16(type, kn_block_head(type, blk, &dj[j], &mnj[j], f16_fast));
            }
            for (int r = 0; r < 4; r++)
                v[j * 4 + r] =
                    j < nbg && r < m
                        ? _mm512_madd_epi16(q, _mm512_loadu_si512(a->xq + (size_t)r * a->k +
                                                                  (size_t)(b0 + j) * KN_QK))
                        : _mm512_setzero_si512();
        }
        __m512 dx = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, idx, a->dx + b0, 4);
        __m512 xs = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, idx, a->xs + b0, 4);
        __m512 s = _mm512_mul_ps(by_block(_mm_loadu_ps(dj)), dx);
        __m512i u[KN_ACC];
        for (int j = 0; j < KN_ACC; j++)
            u[j] = hsum4x4(v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]);
        acc = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(hsum_lanes(u)), s, acc, k);
        off = group_off(by_block(_mm_loadu_ps(mnj)), xs, nbg, off);
    }
    float res[4];
    _mm_storeu_ps(res, _mm_add_ps(tree4x4(acc), off));
    for (int r = 0; r < m; r++) out[r] = res[r];
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

void kn_unpack_sb_avx512(int type, const uint8_t *w, size_t row_bytes, int rows,
                         const kn_wrows_t *out) {
    sb_unpack(type, w, row_bytes, rows, out, f16_fast);
}

void kn_gemm_avx512(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y, int n,
                    int row0, int j0) {
    gemm_avx512_body(w, rows, a, lanes, y, n, row0, j0);
}

/* kn_dotf4 for RA (a constant where inlined) rows of a. */
static inline __attribute__((always_inline)) void
dotf4_rows(const float *a, size_t as, int RA, const float *b, size_t bs, int n, float *out) {
    __m512 acc[4][4];
    for (int i = 0; i < RA; i++)
        for (int t = 0; t < 4; t++) acc[i][t] = _mm512_setzero_ps();
    int e = 0;
    for (; e + 16 <= n; e += 16) {
        __m512 w[4];
        for (int t = 0; t < 4; t++) w[t] = _mm512_loadu_ps(b + t * bs + e);
        for (int i = 0; i < RA; i++) {
            __m512 x = _mm512_loadu_ps(a + i * as + e);
            for (int t = 0; t < 4; t++) acc[i][t] = _mm512_fmadd_ps(x, w[t], acc[i][t]);
        }
    }
    if (e < n) {
        __mmask16 k = (__mmask16)((1u << (n - e)) - 1);
        __m512 w[4];
        for (int t = 0; t < 4; t++) w[t] = _mm512_maskz_loadu_ps(k, b + t * bs + e);
        for (int i = 0; i < RA; i++) {
            __m512 x = _mm512_maskz_loadu_ps(k, a + i * as + e);
            for (int t = 0; t < 4; t++) acc[i][t] = _mm512_fmadd_ps(x, w[t], acc[i][t]);
        }
    }
    for (int i = 0; i < RA; i++)
        for (int t = 0; t < 4; t++) out[i * 4 + t] = _mm512_reduce_add_ps(acc[i][t]);
}

void kn_dotf4_avx512(const float *a, size_t as, int ra, const float *b, size_t bs, int n,
                     float *out) {
    switch (ra) {
    case 4: dotf4_rows(a, as, 4, b, bs, n, out); break;
    case 3: dotf4_rows(a, as, 3, b, bs, n, out); break;
    case 2: dotf4_rows(a, as, 2, b, bs, n, out); break;
    default: dotf4_rows(a, as, 1, b, bs, n, out); break;
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

/* kn_quant_scalar's arithmetic a block at a time: the largest magnitude (exact in any order), the
 * products and their rounding (vcvtps2dq rounds to nearest even, as lrintf does), quants that fit
 * int16; the sums as kn_block_sums. Byte planes: each block's low and high bytes (vpmovwb). */
void kn_quant_avx512(const float *x, int k, int16_t *q, float *dx, float *xs, uint8_t *xp) {
    int nb = k / KN_QK;
    for (int b = 0; b < nb; b += KN_ACC)
        kn_block_sums(x + (size_t)b * KN_QK, nb - b < KN_ACC ? nb - b : KN_ACC, xs + b);
    if (xp && nb % KN_ACC) /* the last group's missing blocks */
        memset(xp + (size_t)(nb / KN_ACC) * KN_PLANE_GROUP, 0, KN_PLANE_GROUP);
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)b * KN_QK;
        __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        __m512 vi = _mm512_set1_ps(inv);
        __m256i q0 = _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vi)));
        __m256i q1 = _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v1, vi)));
        __m512i qb = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
        _mm512_storeu_si512(q + (size_t)b * KN_QK, qb);
        dx[b] = amax / 32767.0f;
        if (!xp) continue;
        uint8_t *g = xp + (size_t)(b / KN_ACC) * KN_PLANE_GROUP + (b % KN_ACC) * (KN_QK / 2);
        __m256i lo = _mm512_cvtepi16_epi8(qb), hi = _mm512_cvtepi16_epi8(_mm512_srai_epi16(qb, 8));
        _mm_storeu_si128((__m128i *)g, _mm256_castsi256_si128(lo));
        _mm_storeu_si128((__m128i *)(g + 64), _mm256_extracti128_si256(lo, 1));
        _mm_storeu_si128((__m128i *)(g + 128), _mm256_castsi256_si128(hi));
        _mm_storeu_si128((__m128i *)(g + 192), _mm256_extracti128_si256(hi, 1));
    }
}
