/*
 * kernels.h — the CPU kernels every backend is checked against: tensor element types and their
 * block layouts, dequantization, and the fp32 math of a decoder layer (matrix products through
 * OpenBLAS, RMSNorm, RoPE, softmax, SwiGLU).
 *
 * Thread safety: all functions are pure over their arguments; callers may run them on disjoint
 * outputs from several threads. Kernels marked HOT never allocate.
 * Shapes are given in row-major order, outermost first, in the comment beside each argument.
 */
#ifndef KN_KERNELS_H
#define KN_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

/* ---- element types: lt_dtype_t and its geometry (common/dtype.h) ---- */

/* Dequantizes n elements (a multiple of the type's block size) from src to dst (n) f32.
 * Returns 0, or LT_ERR_UNSUPPORTED / LT_ERR_INVAL. */
int kn_dequantize(int type, const void *src, float *dst, int64_t n);

/* ---- fp32 math ---- */

/* y (m, n) = x (m, k) @ w (n, k)^T [+ bias (n)]. Uses OpenBLAS sgemm/sgemv. HOT */
void kn_matmul(float *y, const float *x, const float *w, const float *bias, int m, int n, int k);

/* Largest m kn_qmatmul takes: decode-sized batches. */
#define KN_QMATMUL_MAX_ROWS 8

/* True for the stored weight types kn_qmatmul reads directly (Q4_0, Q4_1, Q8_0). */
bool kn_qmatmul_supported(int type);

/* y (m, n) = x (m, k) @ w (n, k)^T with w in its stored block format `type`; 1 <= m <=
 * KN_QMATMUL_MAX_ROWS, k a multiple of 32 and at most 32768. Same values as dequantizing w and
 * calling kn_matmul, summed in another order; reads 4-6x fewer weight bytes. Returns 0 or
 * LT_ERR_INVAL. HOT */
int kn_qmatmul(float *y, const float *x, const void *w, int type, int m, int n, int k);

/* out (n) = x (n) / rms(x) * w (n). out may alias x. HOT */
void kn_rmsnorm(float *out, const float *x, const float *w, int n, float eps);

/* In place softmax over x (n). HOT */
void kn_softmax(float *x, int n);

/* gate (n) = silu(gate) * up (n). HOT */
void kn_swiglu(float *gate, const float *up, int n);

/* Rotary embedding of one head vector x (head_dim) at position pos, with precomputed inverse
 * frequencies inv_freq (head_dim/2). neox=true rotates halves (x[i], x[i+d/2]) as Hugging Face
 * does; neox=false rotates adjacent pairs (x[2i], x[2i+1]) as GGUF Llama weights expect.
 * attn_factor scales cos/sin (1 unless YaRN). HOT */
void kn_rope(float *x, int head_dim, int pos, const float *inv_freq, bool neox, float attn_factor);

#endif
