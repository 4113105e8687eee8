/*
 * qmatmul_sb.h — the K-quant super-blocks' 32-element blocks as bytes, and the unpack built on
 * them, for the SIMD variants: included by qmatmul_avx2.c and qmatmul_avx512.c (AVX2 at least,
 * from each file's target pragma). Each includer first defines store_q16(dst, q8, is_signed):
 * 32 quants stored as int16 at dst (64-byte aligned) from the 32 bytes of q8, sign-extended or not.
 * The forms are kn_k_head's and kn_q6_k_head's (qmatmul_priv.h).
 */
#ifndef KN_QMATMUL_SB_H
#define KN_QMATMUL_SB_H

#include <immintrin.h>

#include "qmatmul_priv.h"

/* Q4_K/Q5_K sub-block j's 32 quants (0..31) from its nibble bytes qs; qh: the super-block's 32
 * fifth-bit bytes, loaded (Q5_K only). */
static inline __m256i sb_k32_bytes(int type, const uint8_t *qs, int j, __m256i qh) {
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    __m256i raw = _mm256_loadu_si256((const __m256i *)qs);
    __m256i q =
        j % 2 ? _mm256_and_si256(_mm256_srli_epi16(raw, 4), lo4) : _mm256_and_si256(raw, lo4);
    if (type == LT_DTYPE_Q5_K) {
        __m256i bit = _mm256_set1_epi8((char)(1 << j));
        __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
        q = _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(16)));
    }
    return q;
}

/* Q6_K block j's 32 quants minus 32 (-32..31, signed bytes) from its nibble bytes ql and bit-pair
 * bytes qh (kn_q6_k_head). */
static inline __m256i sb_q6k_bytes(const uint8_t *ql, const uint8_t *qh, int j) {
    int c = j % 4;
    __m256i nib =
        _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)ql), 4 * (c / 2)),
                         _mm256_set1_epi8(0x0f));
    __m256i top = _mm256_and_si256(
        _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)qh), 2 * c), _mm256_set1_epi8(3));
    return _mm256_sub_epi8(_mm256_or_si256(nib, _mm256_slli_epi16(top, 4)), _mm256_set1_epi8(32));
}

/* Block j (0..7) of super-block blk of a K-quant type: its 32 quants as bytes (signed, -32..31,
 * for Q6_K; 0..31 otherwise), its scale *d, offset coefficient *mn and, for Q6_K, the second
 * half's scale *d2 (kn_k_head, kn_q6_k_head). */
static inline __attribute__((always_inline)) __m256i sb_block(int type, const uint8_t *blk, int j,
                                                              float *d, float *d2, float *mn,
                                                              float (*f16)(uint16_t)) {
    if (type == LT_DTYPE_Q6_K) {
        const uint8_t *qh, *ql = kn_q6_k_head(blk, j, d, d2, &qh, f16);
        *mn = 0.0f;
        return sb_q6k_bytes(ql, qh, j);
    }
    const uint8_t *qs = kn_k_head(type, blk, j, d, mn, f16);
    return sb_k32_bytes(type, qs, j,
                        type == LT_DTYPE_Q5_K
                            ? _mm256_loadu_si256((const __m256i *)kn_q5_k_bits(blk))
                            : _mm256_setzero_si256());
}

/* kn_unpack for Q4_K, Q5_K and Q6_K: the scalar reference (kn_unpack_sb_scalar), the quants
 * decoded 32 at a time. */
static inline void sb_unpack(int type, const uint8_t *w, size_t row_bytes, int rows,
                             const kn_wrows_t *out, float (*f16)(uint16_t)) {
    const size_t sbb = lt_dtype_block_bytes(type);
    float unused;
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < out->nb; b++) {
            size_t at = (size_t)r * out->nb + b;
            const uint8_t *blk = w + (size_t)r * row_bytes + (size_t)(b / 8) * sbb;
            if (b % 8 == 0) _mm_prefetch((const char *)blk + sbb, _MM_HINT_T0);
            __m256i q8 = sb_block(type, blk, b % 8, &out->d[at], out->d2 ? &out->d2[at] : &unused,
                                  &out->mn[at], f16);
            store_q16(out->q + at * KN_QK, q8, type == LT_DTYPE_Q6_K);
        }
}

#endif
