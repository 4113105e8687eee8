/*
 * qmatmul_priv.h — the per-instruction-set inner loops of kn_qmatmul (qmatmul.c), one translation
 * unit each: the scalar reference in qmatmul.c, AVX2 (qmatmul_avx2.c) and AVX-512
 * (qmatmul_avx512.c), each compiled for its own instruction set whatever the build's -march, and
 * picked at run time.
 *
 * The arithmetic every variant reproduces bit for bit, for one weight row w and activation row r
 * of a directly read type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the 32-element sub-blocks of Q4_K and
 * Q5_K), with four accumulators, one per block residue:
 *
 *     acc[0..3] = 0, off = 0
 *     for b = 0 .. nb-1:                                          (blocks in order)
 *         i = sum over e < 32 of q[b][e] * xq[r][b][e]            (exact in int32)
 *         acc[b % 4] = fmaf((float)i, d[b] * dx[r][b], acc[b % 4])
 *         off = fmaf(mn[b], xs[r][b], off)
 *     y = ((acc[0] + acc[2]) + (acc[1] + acc[3])) + off          (kn_tree4)
 *
 * q/d/mn are the weight block's quants, scale and offset coefficient (kn_block_head); xq/dx/xs the
 * activation block's int16 quants, scale and fp32 sum.
 *
 * Q6_K's scales cover 16 elements, so its 32-element blocks (q = the 6-bit quant - 32, mn = 0)
 * take the two halves' integer sums in turn, each with its own scale (kn_q6_k_head):
 *
 *         i_lo = sum over e < 16 of q[b][e] * xq[r][b][e],  i_hi: e = 16 .. 31
 *         acc[b % 4] = fmaf((float)i_lo, d_lo[b] * dx[r][b], acc[b % 4])
 *         acc[b % 4] = fmaf((float)i_hi, d_hi[b] * dx[r][b], acc[b % 4])
 *
 * A block's integer dot product is exact (|i| <= 32 * 128 * 32768 = 2^27; a Q6_K half's
 * <= 16 * 32 * 32768 = 2^24), so any grouping of it gives the same bits: vpmaddwd pairs,
 * vpdpwssd (AVX-512 VNNI) chains, horizontal sums. Only a conversion and a fused multiply-add per
 * block are floating point. Decode (one activation row) sums four blocks' products across into one
 * 4-lane vector (lane b % 4) and accumulates that; sixteen activation rows side by side (prefill,
 * large batches) hold four accumulators per weight row across a vector of rows, which leaves
 * registers to run several weight rows against each activation load. The floating-point steps are
 * the same operations in the same order everywhere: a result does not depend on the instruction
 * set, on the kernel or on the other rows of the batch.
 */
#ifndef KN_QMATMUL_PRIV_H
#define KN_QMATMUL_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "kernels.h"

#define KN_QK    32 /* elements per block of the directly read types */
#define KN_LANES 16 /* activation rows side by side in the transposed layout */
#define KN_ACC   4  /* float accumulators per output: block b goes to b % KN_ACC */
/* Bytes ahead of the block being read that the SIMD kernels prefetch: weights stream from memory
 * once per step (decode reads every weight once per token), and the hardware prefetcher alone
 * leaves decode ~25% slower on the 2-core machines this was measured on (bench/RESULTS.md). */
#define KN_PREFETCH 256

/* Activation rows quantized per KN_QK-element block to int16, row-major: xq (m, k), and per
 * block its scale dx (m, nb) and fp32 sum xs (m, nb), nb = k / KN_QK. xp: NULL, or the same
 * quants as byte planes (kn_quant_fn's xp), kn_planes_bytes(nb) per row, for the instruction sets
 * whose decode kernel multiplies bytes (KN_ISA_AVX512VNNI's vpdpbusd). */
typedef struct kn_qact {
    const int16_t *xq;
    const float *dx, *xs;
    int k, nb;
    const uint8_t *xp;
} kn_qact_t;

/* Byte planes of an activation row: each int16 quant x is 256 * h + l with l = x & 0xff
 * (unsigned) and h = x >> 8 (signed), so a block's integer dot product with unsigned weight
 * quants q (Q4, Q5: 0..31) is 256 * sum(q * h) + sum(l * q), two byte products that vpdpbusd
 * takes as they are, exact in int32. The planes are laid out for four blocks at a time (the
 * decode kernel's four 16-byte nibble runs side by side): per group of four blocks, 256 bytes:
 * l of elements 0..15 of blocks 0..3 (16 bytes each), l of elements 16..31, then h likewise;
 * zeros past the last block. */
#define KN_PLANE_GROUP 256
static inline size_t kn_planes_bytes(int nb) {
    return (size_t)(nb + KN_ACC - 1) / KN_ACC * KN_PLANE_GROUP;
}

/* KN_LANES activation rows side by side: for block b and element pair p (elements 2p, 2p+1),
 * xq[((b * KN_QK / 2 + p) * KN_LANES + lane) * 2 + {0, 1}]; dx[b * KN_LANES + lane],
 * xs[b * KN_LANES + lane]. Lanes past the rows in use hold zeros. */
typedef struct kn_qactT {
    const int16_t *xq;
    const float *dx, *xs;
    int nb;
} kn_qactT_t;

/* One activation row x (k elements, k % KN_QK == 0) quantized per block (qmatmul.c's reference
 * arithmetic): quants q, scales dx and fp32 sums xs (each block's elements added in order), and
 * where xp is not NULL the byte planes (kn_planes_bytes(k / KN_QK) bytes). */
typedef void (*kn_quant_fn)(const float *x, int k, int16_t *q, float *dx, float *xs, uint8_t *xp);
void kn_quant_scalar(const float *x, int k, int16_t *q, float *dx, float *xs, uint8_t *xp);
void kn_quant_avx512(const float *x, int k, int16_t *q, float *dx, float *xs, uint8_t *xp);

/* xs[j] for blocks j < n (1..KN_ACC) of x: each block's elements added in order, the blocks'
 * sums side by side (independent chains: the same bits as one block at a time). */
static inline void kn_block_sums(const float *x, int n, float *xs) {
    float s[KN_ACC] = {0};
    for (int e = 0; e < KN_QK; e++)
        for (int j = 0; j < KN_ACC; j++)
            if (j < n) s[j] += x[(size_t)j * KN_QK + e];
    for (int j = 0; j < n; j++) xs[j] = s[j];
}

/* out[r] (r < m <= KN_ROWDOT_MAX) for weight row wrow against activation rows 0..m-1 of a. */
#define KN_ROWDOT_MAX 4
/* Activation rows the few-row path takes at most: KN_ROWDOT_MAX, or this many where every weight
 * is a kn_planes_type and the instruction set has rowdot4m (it runs them four at a time over each
 * group of weight rows, still in L1), instead of the 16-lane gemm. */
#define KN_FEW_MAX 8
typedef void (*kn_rowdot_fn)(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                             float *out);
/* out[0..3] for four consecutive weight rows (row_bytes apart) against activation row 0 of a:
 * the reference arithmetic for each, four blocks of the four rows summed across in one vector
 * (decode; kn_qmatmul calls it once per activation row). */
typedef void (*kn_rowdot4_fn)(int type, const uint8_t *w, size_t row_bytes, size_t bb,
                              const kn_qact_t *a, float *out);
/* out[0..3] for four Q4_K, Q5_K or Q6_K weight rows (row_bytes apart) against activation row 0 of
 * a, read in place: the reference arithmetic on kn_k_head's (kn_q6_k_head's) form, without an
 * unpacked copy (decode). */
typedef void (*kn_rowdot4k_fn)(int type, const uint8_t *w, size_t row_bytes, const kn_qact_t *a,
                               float *out);
void kn_rowdot4k_avx512(int type, const uint8_t *w, size_t row_bytes, const kn_qact_t *a,
                        float *out);
void kn_rowdot4_avx512(int type, const uint8_t *w, size_t row_bytes, size_t bb, const kn_qact_t *a,
                       float *out);
/* Four weight rows (row_bytes apart) of a kn_planes_type against the m (1..KN_ROWDOT_MAX)
 * activation rows of a, whose byte planes are there: y[r * ys + i] for activation row r, weight
 * row i; each weight group is decoded once for every activation row, and each output gets the
 * bits the one-row kernel gives it (decode of a few sequences). */
typedef void (*kn_rowdot4m_fn)(int type, const uint8_t *w, size_t row_bytes, size_t bb,
                               const kn_qact_t *a, int m, float *y, size_t ys);
void kn_rowdot4m_avx512vnni(int type, const uint8_t *w, size_t row_bytes, size_t bb,
                            const kn_qact_t *a, int m, float *y, size_t ys);

/* The types whose decode reads the activation's byte planes (their quants are nibbles, with
 * Q5's fifth bit: unsigned bytes for vpdpbusd). */
static inline int kn_planes_type(int type) {
    return type == LT_DTYPE_Q4_0 || type == LT_DTYPE_Q4_1 || type == LT_DTYPE_Q5_0 ||
           type == LT_DTYPE_Q5_1;
}

/* Weight rows unpacked once for all the row groups of a product: block b of row r has its quants
 * q[(r * nb + b) * KN_QK ..] as int16 in element order (kn_block_q16), its scale d[r * nb + b]
 * and offset coefficient mn[r * nb + b] (kn_block_head). d2 is NULL but for Q6_K, whose d is the
 * scale of a block's first 16 elements and d2 that of the last 16. */
typedef struct kn_wrows {
    int16_t *q;
    float *d, *mn, *d2;
    int nb;
} kn_wrows_t;
typedef void (*kn_unpack_fn)(int type, const uint8_t *w, size_t row_bytes, size_t bb, int rows,
                             const kn_wrows_t *out);
/* The same for the K-quant super-blocks (Q4_K, Q5_K, Q6_K: kn_k_head's and kn_q6_k_head's forms;
 * d2 set for Q6_K). */
typedef void (*kn_unpack_sb_fn)(int type, const uint8_t *w, size_t row_bytes, int rows,
                                const kn_wrows_t *out);
void kn_unpack_sb_scalar(int type, const uint8_t *w, size_t row_bytes, int rows,
                         const kn_wrows_t *out);
void kn_unpack_sb_avx2(int type, const uint8_t *w, size_t row_bytes, int rows,
                       const kn_wrows_t *out);
void kn_unpack_sb_avx512(int type, const uint8_t *w, size_t row_bytes, int rows,
                         const kn_wrows_t *out);

/* y[(row0 + lane) * n + j0 + r] for r < rows and lane < lanes: unpacked weight rows w against
 * the KN_LANES-row group a. */
typedef void (*kn_gemm_fn)(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y,
                           int n, int row0, int j0);

void kn_rowdot_scalar(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                      float *out);
void kn_rowdot_avx2(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                    float *out);
void kn_rowdot_avx512(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                      float *out);
void kn_gemm_scalar(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y, int n,
                    int row0, int j0);
void kn_unpack_scalar(int type, const uint8_t *w, size_t row_bytes, size_t bb, int rows,
                      const kn_wrows_t *out);
void kn_gemm_avx2(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y, int n,
                  int row0, int j0);
void kn_unpack_avx2(int type, const uint8_t *w, size_t row_bytes, size_t bb, int rows,
                    const kn_wrows_t *out);
void kn_gemm_avx512(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y, int n,
                    int row0, int j0);
void kn_gemm_avx512vnni(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y,
                        int n, int row0, int j0);
void kn_unpack_avx512(int type, const uint8_t *w, size_t row_bytes, size_t bb, int rows,
                      const kn_wrows_t *out);

/* fp32 dot product of n elements, for the weight types read through a dequantized row. */
typedef float (*kn_dotf_fn)(const float *a, const float *b, int n);
float kn_dotf_scalar(const float *a, const float *b, int n);
float kn_dotf_avx2(const float *a, const float *b, int n);
float kn_dotf_avx512(const float *a, const float *b, int n);
/* out[i * 4 + t] = the same ISA's dotf(a + i * as, b + t * bs, n) for i < ra (1..4), t < 4, bit
 * for bit: a block of dot products sharing each load (one accumulator each, in dotf's order). */
typedef void (*kn_dotf4_fn)(const float *a, size_t as, int ra, const float *b, size_t bs, int n,
                            float *out);
void kn_dotf4_scalar(const float *a, size_t as, int ra, const float *b, size_t bs, int n,
                     float *out);
void kn_dotf4_avx2(const float *a, size_t as, int ra, const float *b, size_t bs, int n, float *out);
void kn_dotf4_avx512(const float *a, size_t as, int ra, const float *b, size_t bs, int n,
                     float *out);

/* The fixed pairwise sum of u[0..3]: (0 + 2) + (1 + 3). */
static inline float kn_tree4(const float *u) {
    return (u[0] + u[2]) + (u[1] + u[3]);
}

/* Whether a 32-element block type carries a fifth bit per quant (Q5_0, Q5_1: a little-endian
 * u32 qh before the nibbles, bit i for element i). */
static inline int kn_is_q5(int type) {
    return type == LT_DTYPE_Q5_0 || type == LT_DTYPE_Q5_1;
}

/* Block header: scale d and offset coefficient mn (element value = d * q + mn); returns the
 * quants (for Q5_0/Q5_1, their qh word, the nibbles after it). Q4_0's implicit -8 and Q5_0's -16
 * are folded into mn. f16 converts a half (each variant passes its fastest; the call is
 * inlined). */
static inline const uint8_t *kn_block_head(int type, const uint8_t *blk, float *d, float *mn,
                                           float (*f16)(uint16_t)) {
    *d = f16((uint16_t)(blk[0] | blk[1] << 8));
    if (type == LT_DTYPE_Q4_1 || type == LT_DTYPE_Q5_1) {
        *mn = f16((uint16_t)(blk[2] | blk[3] << 8));
        return blk + 4;
    }
    *mn = type == LT_DTYPE_Q4_0 ? -8.0f * *d : type == LT_DTYPE_Q5_0 ? -16.0f * *d : 0.0f;
    return blk + 2;
}

/* The qh word of a Q5_0/Q5_1 block (kn_block_head's pointer). */
static inline uint32_t kn_q5_bits(const uint8_t *qs) {
    return (uint32_t)qs[0] | (uint32_t)qs[1] << 8 | (uint32_t)qs[2] << 16 | (uint32_t)qs[3] << 24;
}

/* The block's quants as int16 in element order (Q4/Q5: element i < 16 is the low nibble of
 * qs[i], element i + 16 the high one, plus 16 where Q5's bit i is set; Q4_0's -8 and Q5_0's -16
 * are in mn). */
static inline void kn_block_q16(int type, const uint8_t *qs, int16_t *q) {
    uint32_t qh = 0;
    if (kn_is_q5(type)) {
        qh = kn_q5_bits(qs);
        qs += 4;
    }
    for (int i = 0; i < KN_QK; i++) {
        if (type == LT_DTYPE_Q8_0)
            q[i] = (int8_t)qs[i];
        else
            q[i] = (int16_t)((i < KN_QK / 2 ? (qs[i] & 0x0f) : (qs[i - KN_QK / 2] >> 4)) |
                             (int)((qh >> i) & 1) << 4);
    }
}

/* Q4_K and Q5_K super-blocks (256 elements: d, dmin (f16), 12 bytes of 6-bit scales and mins;
 * Q5_K then 32 bytes of fifth bits qh, bit j of qh[l] for element 32j + l; 128 bytes of nibbles)
 * read as 32-element blocks of the same form: sub-block j (0..7) of super-block blk has scale
 * d * scale_j and offset coefficient -(dmin * min_j); returns its 32 bytes of nibbles, the low
 * ones for j even, the high ones for j odd. */
static inline const uint8_t *kn_k_head(int type, const uint8_t *blk, int j, float *d, float *mn,
                                       float (*f16)(uint16_t)) {
    int sc, m;
    kn_k_scale_min(blk + 4, j, &sc, &m);
    *d = f16((uint16_t)(blk[0] | blk[1] << 8)) * (float)sc;
    *mn = -(f16((uint16_t)(blk[2] | blk[3] << 8)) * (float)m);
    return blk + 16 + (type == LT_DTYPE_Q5_K ? 32 : 0) + 32 * (j / 2);
}

/* The fifth bits of a Q5_K super-block (kn_k_head's form). */
static inline const uint8_t *kn_q5_k_bits(const uint8_t *blk) {
    return blk + 16;
}

/* Q6_K (210-byte super-blocks: ql[128] low nibbles, qh[64] high bit pairs, 16 int8 scales, d
 * (f16)) as 32-element blocks: block j (0..7) of super-block blk lies in half h = j / 4 and is
 * quarter c = j % 4 of it; element l takes nibble c / 2 (shift 4 * (c / 2)) of ql[64h + 32(c % 2)
 * + l] and bit pair c (shift 2c) of qh[32h + l], minus 32. Its halves' scales d * scale[2j] and
 * d * scale[2j + 1]; returns the nibble bytes, the bit-pair bytes in *qh. */
static inline const uint8_t *kn_q6_k_head(const uint8_t *blk, int j, float *d_lo, float *d_hi,
                                          const uint8_t **qh, float (*f16)(uint16_t)) {
    int h = j / 4, c = j % 4;
    const int8_t *sc = (const int8_t *)(blk + 192);
    float d = f16((uint16_t)(blk[208] | blk[209] << 8));
    *d_lo = d * (float)sc[2 * j];
    *d_hi = d * (float)sc[2 * j + 1];
    *qh = blk + 128 + 32 * h;
    return blk + 64 * h + 32 * (c % 2);
}

/* The K-quants whose sub-blocks are 32 elements of kn_k_head's form. */
static inline int kn_is_k32(int type) {
    return type == LT_DTYPE_Q4_K || type == LT_DTYPE_Q5_K;
}

/* The K-quants read as 32-element blocks: kn_k_head's form and Q6_K's (kn_q6_k_head). */
static inline int kn_is_superblock(int type) {
    return kn_is_k32(type) || type == LT_DTYPE_Q6_K;
}

#endif
