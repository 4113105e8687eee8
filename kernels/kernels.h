/*
 * kernels.h — the CPU kernels every backend is checked against: tensor element types and their
 * block layouts, dequantization, matrix products from weights in their stored type, and the fp32
 * math of a decoder layer (RMSNorm, RoPE, softmax, SwiGLU).
 *
 * Thread safety: all functions are pure over their arguments; callers may run them on disjoint
 * outputs from several threads. Kernels marked HOT never allocate.
 * Shapes are given in row-major order, outermost first, in the comment beside each argument.
 */
#ifndef KN_KERNELS_H
#define KN_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dtype.h"

/* ---- element types: lt_dtype_t and its geometry (common/dtype.h) ---- */

/* Dequantizes n elements (a multiple of the type's block size) from src to dst (n) f32.
 * Returns 0, or LT_ERR_UNSUPPORTED / LT_ERR_INVAL. */
int kn_dequantize(int type, const void *src, float *dst, int64_t n);
/* The 12-byte scale table of Q4_K/Q5_K: eight 6-bit scales and eight 6-bit mins, sub-block j's
 * (0..7). Sub-blocks 0..3 keep theirs in the low 6 bits of bytes 0..3 (scale) and 4..7 (min);
 * sub-blocks 4..7 take the low/high nibble of bytes 8..11 plus the top two bits of bytes 0..3 /
 * 4..7. Shared by the dequantizer and the matrix products. */
static inline void kn_k_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 0x3f;
        *mn = s[j + 4] & 0x3f;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* ---- fp32 math ---- */

/* e^x in a form the compiler vectorizes under `#pragma omp simd` (libm's expf is a call per
 * element), for the SiLU and attention's softmax: x clamped to [-87, 88] (the result stays a
 * normal float: e^-87 stands for anything smaller), x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two
 * parts), e^r by its Taylor polynomial to degree 7 (truncation below 5e-9), times 2^n made from
 * n's bits. Within 2 ulp of expf over the range. */
static inline float kn_expf_v(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    float n = rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.42860682030941723e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

/* ---- matrix products from weights in their stored type (qmatmul.c) ---- */

/* The instruction sets the CPU kernels exist for; the best the CPU has is used unless
 * LANTERN_CPU_ISA=scalar|avx2|avx512|avx512vnni (or kn_set_isa) picks another. avx512vnni is
 * avx512 with VNNI's vpdpwssd in the many-row kernel. KN_ISA_COUNT: how many there are. */
typedef enum {
    KN_ISA_SCALAR,
    KN_ISA_AVX2,
    KN_ISA_AVX512,
    KN_ISA_AVX512VNNI,
    KN_ISA_COUNT
} kn_isa_t;
bool kn_isa_supported(kn_isa_t isa);
kn_isa_t kn_isa(void);
const char *kn_isa_name(kn_isa_t isa);
/* Tests and benchmarks: use isa from now on. LT_ERR_UNSUPPORTED if the CPU lacks it. */
int kn_set_isa(kn_isa_t isa);

/* True for the weight types kn_qmatmul reads (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q2_K..Q6_K) with rows of k elements (a multiple of the type's block). */
bool kn_qmatmul_supported(int type, int k);
/* True for the types whose blocks are multiplied without dequantizing (Q4_0, Q4_1, Q8_0); the
 * others go through one dequantized fp32 row at a time. */
bool kn_qmatmul_direct(int type);

/* sum(a[i] * b[i]) over n fp32 elements with the best instruction set, in an order fixed by the
 * index (never by the pointers' alignment), so the same inputs give the same bits anywhere. HOT */
float kn_dot(const float *a, const float *b, int n);

/* Per-caller scratch of kn_qmatmul for up to max_rows activation rows of up to max_k elements.
 * Returns NULL when out of memory. */
typedef struct kn_qscratch kn_qscratch_t;
kn_qscratch_t *kn_qscratch_create(int max_rows, int max_k);
void kn_qscratch_destroy(kn_qscratch_t **s);

/* y (m, n) = x (m, k) @ w (n, k)^T with w in its stored type, for any m up to the scratch's.
 * Each row of y depends on its row of x alone, in a fixed order (batch invariant). Direct types
 * match dequantize-then-fp32 to ~1e-5 relative. Returns 0 or LT_ERR_INVAL. HOT */
int kn_qmatmul(float *y, const float *x, const void *w, int type, int m, int n, int k,
               kn_qscratch_t *s);

/* Several products of the same activations x (m, k) in one pass: mm[i].y (m, mm[i].n) = x @
 * mm[i].w^T, x quantized once and the weight rows of all of them spread over the threads
 * together (the q/k/v or gate/up projections of a layer). The same bits as kn_qmatmul on each. */
#define KN_QMM_MAX 8
typedef struct kn_qmm {
    float *y;
    const void *w;
    int type, n;
} kn_qmm_t;
int kn_qmatmul_n(const kn_qmm_t *mm, int count, const float *x, int m, int k, kn_qscratch_t *s);

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
/* The same in two steps, for many heads at one position: cs (head_dim) = each pair's cos and sin
 * (times attn_factor) at pos, then kn_rope_cs applies them; bit-identical to kn_rope. */
void kn_rope_table(float *cs, int head_dim, int pos, const float *inv_freq, float attn_factor);
void kn_rope_cs(float *x, int head_dim, const float *cs, bool neox);

#endif
