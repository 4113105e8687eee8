/*
 * dtype.h — tensor element types and their block geometry, as GGUF and safetensors files store
 * them: the one table every reader and kernel agrees on. The values are GGML's type ids, so a
 * GGUF tensor's type field maps directly. What a type *means* (dequantization, dot products)
 * lives with the kernels (kernels/kernels.h); this header only says how many bytes hold how many
 * elements, so that model-file readers can validate a file without linking any kernel.
 *
 * Thread safety: pure functions over a constant table. Not on the hot path.
 */
#ifndef LT_DTYPE_H
#define LT_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    LT_DTYPE_F32 = 0,
    LT_DTYPE_F16 = 1,
    LT_DTYPE_Q4_0 = 2,
    LT_DTYPE_Q4_1 = 3,
    LT_DTYPE_Q5_0 = 6,
    LT_DTYPE_Q5_1 = 7,
    LT_DTYPE_Q8_0 = 8,
    LT_DTYPE_Q8_1 = 9,
    LT_DTYPE_Q2_K = 10,
    LT_DTYPE_Q3_K = 11,
    LT_DTYPE_Q4_K = 12,
    LT_DTYPE_Q5_K = 13,
    LT_DTYPE_Q6_K = 14,
    LT_DTYPE_Q8_K = 15,
    LT_DTYPE_BF16 = 30,
} lt_dtype_t;

#define LT_DTYPE_QK   32  /* elements in a Q4_0..Q8_1 block */
#define LT_DTYPE_QK_K 256 /* elements in a K-quant super-block */

/* True for the types a weight may be stored in (Q8_1 and Q8_K are activation formats: named, so
 * errors can say what a file holds, but never valid as stored weights). */
bool lt_dtype_supported(int type);
/* Name as GGUF tools print it ("Q4_1"), or "unknown". */
const char *lt_dtype_name(int type);
/* Elements per block (1 for F32/F16/BF16, 32 for Q4_0.., 256 for K-quants); 0 if unsupported. */
int lt_dtype_block_elems(int type);
/* Bytes per block; 0 if unsupported. */
size_t lt_dtype_block_bytes(int type);
/* Bytes of n elements; -1 if unsupported or n is not a multiple of the block size. */
int64_t lt_dtype_nbytes(int type, int64_t n);

#endif
