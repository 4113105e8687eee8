/*
 * qmatmul_priv.h — the per-instruction-set inner loops of kn_qmatmul (qmatmul.c), one translation
 * unit each: the scalar reference here, AVX2 (qmatmul_avx2.c) and AVX-512 (qmatmul_avx512.c),
 * each compiled for its own instruction set whatever the build's -march, and picked at run time.
 */
#ifndef KN_QMATMUL_PRIV_H
#define KN_QMATMUL_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define KN_QK 32 /* elements per block of the directly read types (Q4_0, Q4_1, Q8_0) */

/* Activation rows quantized per KN_QK-element block to int16: xq (m, k) with row stride k, and
 * per block its scale dx (m, nb) and fp32 sum xs (m, nb), row stride nb = k / KN_QK. */
typedef struct kn_qact {
    const int16_t *xq;
    const float *dx, *xs;
    int k, nb;
} kn_qact_t;

/* out[r] (r < m <= KN_QMATMUL_MAX_GROUP) = dot(weight row wrow, activation row r of a), the
 * weight row in blocks of `type` (bb bytes each). Every variant sums each row's blocks in block
 * order into its own accumulator, so a row's result depends on that row alone. */
typedef void (*kn_rowdot_fn)(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                             float *out);

#define KN_QMATMUL_MAX_GROUP 8 /* activation rows one weight row is read for */

void kn_rowdot_scalar(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                      float *out);
void kn_rowdot_avx2(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                    float *out);
void kn_rowdot_avx512(int type, const uint8_t *wrow, size_t bb, const kn_qact_t *a, int m,
                      float *out);

/* fp32 dot product of n elements, for the weight types read through a dequantized row. */
typedef float (*kn_dotf_fn)(const float *a, const float *b, int n);
float kn_dotf_scalar(const float *a, const float *b, int n);
float kn_dotf_avx2(const float *a, const float *b, int n);
float kn_dotf_avx512(const float *a, const float *b, int n);

/* Block header: scale d and offset coefficient mn (element value = d * q + mn); returns the
 * quants. Q4_0's implicit -8 is folded into mn. f16 converts a half (each variant passes its
 * fastest; the call is inlined). */
static inline const uint8_t *kn_block_head(int type, const uint8_t *blk, float *d, float *mn,
                                           float (*f16)(uint16_t)) {
    *d = f16((uint16_t)(blk[0] | blk[1] << 8));
    if (type == LT_DTYPE_Q4_1) {
        *mn = f16((uint16_t)(blk[2] | blk[3] << 8));
        return blk + 4;
    }
    *mn = type == LT_DTYPE_Q4_0 ? -8.0f * *d : 0.0f;
    return blk + 2;
}

#endif
