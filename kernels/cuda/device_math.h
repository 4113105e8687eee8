/*
 * device_math.h — the per-element arithmetic of the CUDA kernels (ops.cu), as inline functions
 * that compile both as `__host__ __device__` code under nvcc and as plain C11 under gcc, so the
 * CPU unit test test_cuda_device_math checks them against the CPU reference (kernels/cpu) without
 * a GPU: half/bfloat16 conversions, the GPU's row layout of the quantized types (Q4_0, Q4_1, Q8_0
 * regrouped; the Q3_K, Q4_K, Q5_K and Q6_K super-blocks and the Q5_0 / Q5_1 blocks unfolded into
 * 32-element blocks) and its dequantization, the 16-bit activation quants and the integer block
 * dot products, the rotation of one RoPE pair, the online-softmax update and SiLU.
 *
 * Thread safety: pure functions. HOT (inlined into every kernel).
 */
#ifndef KN_CUDA_DEVICE_MATH_H
#define KN_CUDA_DEVICE_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define KN_HD static __host__ __device__ __forceinline__
/* the type tables below: also usable in constant expressions (kernel templates) under nvcc */
#define KN_HDC static __host__ __device__ __forceinline__ constexpr
#else
#define KN_HD  static inline
#define KN_HDC static inline
#endif

/* Stored-type codes (the values of lt_dtype_t, repeated so device code needs no host header). */
#define KN_T_F32  0
#define KN_T_F16  1
#define KN_T_Q4_0 2
#define KN_T_Q4_1 3
#define KN_T_Q5_0 6
#define KN_T_Q5_1 7
#define KN_T_Q8_0 8
#define KN_T_Q4_K 12
#define KN_T_Q5_K 13
#define KN_T_Q6_K 14
#define KN_T_Q3_K 11
#define KN_T_BF16 30
#define KN_BLOCK  32  /* elements per Q4_0 / Q4_1 / Q8_0 block, and per block of the GPU layout */
#define KN_KBLOCK 256 /* elements per Q4_K / Q5_K / Q6_K super-block */

KN_HD uint32_t kn_f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

KN_HD float kn_u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half to float, exact (subnormals, infinities and NaN included). */
KN_HD float kn_h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return kn_u2f(sign | 0x7f800000 | (man << 13));
    if (exp == 0) { /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return kn_u2f(sign | ((exp + 112) << 23) | (man << 13));
}

/* Float to IEEE half, round to nearest even; overflow to infinity, NaN stays NaN. */
KN_HD uint16_t kn_f2h(float f) {
    uint32_t u = kn_f2u(f), sign = (u >> 16) & 0x8000, a = u & 0x7fffffff;
    if (a > 0x7f800000) return (uint16_t)(sign | 0x7e00);  /* NaN */
    if (a >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* rounds past 65504: infinity */
    if (a < 0x38800000) {                                  /* below 2^-14: subnormal half */
        float v = kn_u2f(a) * 16777216.0f;                 /* exact: a power-of-two scale */
        uint32_t m = (uint32_t)v;                          /* truncated; round to even below */
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t r = a + 0xfff + ((a >> 13) & 1) - (112u << 23);
    return (uint16_t)(sign | (r >> 13));
}

KN_HD float kn_bf2f(uint16_t b) {
    return kn_u2f((uint32_t)b << 16);
}

/* Float to bfloat16, round to nearest even; NaN stays NaN (as backend_cpu.c's row_store). */
KN_HD uint16_t kn_f2bf(float f) {
    uint32_t u = kn_f2u(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* Bytes of one stored KN_BLOCK-element block of Q4_0 / Q4_1 / Q8_0 (0 for the others). */
KN_HDC int kn_qblock_bytes(int type) {
    return type == KN_T_Q4_0 ? 18 : type == KN_T_Q4_1 ? 20 : type == KN_T_Q8_0 ? 34 : 0;
}

/* The K-quants the GPU reads: bytes of one stored super-block (0 for the others). */
KN_HDC int kn_ksb_bytes(int type) {
    return type == KN_T_Q4_K   ? 144
           : type == KN_T_Q5_K ? 176
           : type == KN_T_Q6_K ? 210
           : type == KN_T_Q3_K ? 110
                               : 0;
}

/* The types whose rows grow on the GPU ("unfolded": quants widened to a byte each, headers to two
 * floats): the K-quants, a stored unit a 256-element super-block, and Q5_0 / Q5_1, a unit one
 * 32-element block. Bytes of one stored unit (0 for the others), and its 32-element blocks. */
KN_HDC int kn_unfold_bytes(int type) {
    return kn_ksb_bytes(type)  ? kn_ksb_bytes(type)
           : type == KN_T_Q5_0 ? 22
           : type == KN_T_Q5_1 ? 24
                               : 0;
}

KN_HDC int kn_unfold_blocks(int type) {
    return kn_ksb_bytes(type) ? 8 : 1;
}

/* Whether rows of `type` lie on the GPU in the quantized block layout below (quants of every
 * 32-element block, then every block's header). */
KN_HD int kn_is_qgpu(int type) {
    return kn_qblock_bytes(type) || kn_unfold_bytes(type);
}

/* Bytes of one block's quants in the GPU layout (below): 16 of nibbles or 32 of bytes. */
KN_HDC int kn_qs_bytes(int type) {
    return type == KN_T_Q4_0 || type == KN_T_Q4_1 || type == KN_T_Q4_K ? 16 : 32;
}

/* The types whose 32-element GPU blocks carry the scales of their two 16-element halves (d for
 * elements 0..15, mn for 16..31) and no offset: Q6_K, Q3_K. */
KN_HDC int kn_halves(int type) {
    return type == KN_T_Q6_K || type == KN_T_Q3_K;
}

/* A block's header: scale d and offset mn (element = d * q + mn; Q4_0's -8 folded into mn);
 * returns its quants. kn_qblock_q gives quant i (0..31) as an integer. */
KN_HD const uint8_t *kn_qblock_head(int type, const uint8_t *blk, float *d, float *mn) {
    *d = kn_h2f((uint16_t)(blk[0] | blk[1] << 8));
    if (type == KN_T_Q4_1) {
        *mn = kn_h2f((uint16_t)(blk[2] | blk[3] << 8));
        return blk + 4;
    }
    *mn = type == KN_T_Q4_0 ? -8.0f * *d : 0.0f;
    return blk + 2;
}

KN_HD int kn_qblock_q(int type, const uint8_t *qs, int i) {
    if (kn_qs_bytes(type) == 32) return (int8_t)qs[i];
    return i < 16 ? (qs[i] & 0x0f) : (qs[i - 16] >> 4);
}

/* Element i of a repacked block from kn_prow_block's d, mn and quants. */
KN_HD float kn_pelem(int type, const uint8_t *qs, float d, float mn, int i) {
    float q = (float)kn_qblock_q(type, qs, i);
    if (kn_halves(type)) return (i < 16 ? d : mn) * q;
    return d * q + mn;
}

/* The GPU layout of a row of nb quantized 32-element blocks ("repacked"): first every block's
 * quants (nb * kn_qs_bytes: 16 bytes of nibbles, element i < 16 the low nibble of byte i, i >= 16
 * the high nibble of byte i - 16; or 32 bytes, one a quant), then every block's header
 * (nb * kn_qhead_bytes). Element = d * q + mn.
 *
 * - Q4_0, Q4_1, Q8_0: the stored bytes regrouped (d as a half, Q4_1's m after it; Q4_0's q - 8
 *   and Q8_0's signed bytes as stored): a row keeps its size.
 * - Q4_K, Q5_K, Q6_K: each 256-element super-block unfolded into its eight 32-element sub-blocks,
 *   the header two floats: Q4_K and Q5_K (nibbles; Q5_K's quants 0..31 as bytes) d * scale and
 *   -(dmin * min), the products the CPU's dequantizer forms; Q6_K the quants minus 32 as signed
 *   bytes and the scales of the block's two 16-element halves, d * scale[2j] and d * scale[2j + 1]
 *   (no offset); Q3_K likewise, its quants -4..3 and its halves' scales d * (scale - 32). Rows
 *   grow: 24 bytes per 32 elements for Q4_K (stored: 18), 40 for Q5_K (22), Q6_K (26.25) and Q3_K
 *   (13.75), against 128 as fp32.
 * - Q5_0, Q5_1: each block's 5-bit quants as bytes, the header two floats: Q5_0 the quants minus
 *   16 (signed) and d, 0; Q5_1 the quants and d, m. 40 bytes per 32 elements (stored: 22, 24).
 *
 * The backend rearranges each quantized weight once, at upload. */
KN_HDC int kn_qhead_bytes(int type) {
    return kn_unfold_bytes(type) ? 8 : type == KN_T_Q4_1 ? 4 : 2;
}

/* Bytes of a GPU row of k elements of a quantized type (k a multiple of the type's block). */
KN_HD size_t kn_qrow_bytes(int type, int64_t k) {
    return (size_t)(k / KN_BLOCK) * (size_t)(kn_qs_bytes(type) + kn_qhead_bytes(type));
}

/* Sub-block j's 6-bit scale and min from a Q4_K / Q5_K super-block's 12 packed bytes s (the CPU's
 * kn_k_scale_min). */
KN_HD void kn_k_scale_min_hd(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 0x3f;
        *mn = s[j + 4] & 0x3f;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Block j (0..7; 0 for Q5_0 / Q5_1) of a stored unit sb of an unfolded type: its 32 quants q
 * (Q6_K's minus 32, Q5_0's minus 16) and its header h[2] in the GPU layout's terms. */
KN_HD void kn_ksub_block(int type, const uint8_t *sb, int j, int *q, float *h) {
    if (type == KN_T_Q5_0 || type == KN_T_Q5_1) {
        int o = type == KN_T_Q5_1 ? 4 : 2, off = type == KN_T_Q5_0 ? 16 : 0;
        uint32_t qh = (uint32_t)sb[o] | (uint32_t)sb[o + 1] << 8 | (uint32_t)sb[o + 2] << 16 |
                      (uint32_t)sb[o + 3] << 24;
        const uint8_t *qs = sb + o + 4;
        for (int l = 0; l < 16; l++) {
            q[l] = ((qs[l] & 0x0f) | (int)((qh >> l) & 1) << 4) - off;
            q[l + 16] = ((qs[l] >> 4) | (int)((qh >> (l + 16)) & 1) << 4) - off;
        }
        h[0] = kn_h2f((uint16_t)(sb[0] | sb[1] << 8));
        h[1] = type == KN_T_Q5_1 ? kn_h2f((uint16_t)(sb[2] | sb[3] << 8)) : 0.0f;
        return;
    }
    if (type == KN_T_Q3_K) { /* 16-element sub-blocks 2j, 2j + 1 (the CPU's deq_q3_k) */
        const uint8_t *hmask = sb, *qs = sb + 32 + 32 * (j / 4), *s = sb + 96;
        float d = kn_h2f((uint16_t)(s[12] | s[13] << 8));
        for (int half = 0; half < 2; half++) {
            int i = 2 * j + half, lo = (s[i % 8] >> (4 * (i / 8))) & 0x0f;
            int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
            h[half] = d * (float)((lo | (hi << 4)) - 32);
            for (int l = 0; l < 16; l++) {
                int v = (qs[16 * half + l] >> (2 * (j % 4))) & 3;
                if (!((hmask[16 * half + l] >> j) & 1)) v -= 4;
                q[16 * half + l] = v;
            }
        }
        return;
    }
    if (type == KN_T_Q6_K) {
        int half = j / 4, c = j % 4;
        const uint8_t *ql = sb + 64 * half + 32 * (c % 2), *qh = sb + 128 + 32 * half;
        float d = kn_h2f((uint16_t)(sb[208] | sb[209] << 8));
        for (int l = 0; l < KN_BLOCK; l++)
            q[l] = (((ql[l] >> (4 * (c / 2))) & 0x0f) | (((qh[l] >> (2 * c)) & 3) << 4)) - 32;
        h[0] = d * (float)(int8_t)sb[192 + 2 * j];
        h[1] = d * (float)(int8_t)sb[192 + 2 * j + 1];
        return;
    }
    int sc, m;
    kn_k_scale_min_hd(sb + 4, j, &sc, &m);
    const uint8_t *qs = sb + 16 + (type == KN_T_Q5_K ? 32 : 0) + 32 * (j / 2);
    for (int l = 0; l < KN_BLOCK; l++) {
        q[l] = (qs[l] >> (4 * (j % 2))) & 0x0f;
        if (type == KN_T_Q5_K) q[l] |= ((sb[16 + l] >> j) & 1) << 4;
    }
    h[0] = kn_h2f((uint16_t)(sb[0] | sb[1] << 8)) * (float)sc;
    h[1] = -(kn_h2f((uint16_t)(sb[2] | sb[3] << 8)) * (float)m);
}

/* Block b (of nb) of a GPU row dst: quants q (as kn_ksub_block gives them) and header h. */
KN_HD void kn_put_block(int type, uint8_t *dst, int nb, int b, const int *q, const float *h) {
    uint8_t *qs = dst + (size_t)b * kn_qs_bytes(type);
    if (kn_qs_bytes(type) == 16)
        for (int i = 0; i < 16; i++) qs[i] = (uint8_t)(q[i] | q[i + 16] << 4);
    else
        for (int i = 0; i < KN_BLOCK; i++) qs[i] = (uint8_t)(int8_t)q[i];
    memcpy(dst + (size_t)nb * kn_qs_bytes(type) + (size_t)b * 8, h, 8);
}

/* Stored unit s (a super-block, or a Q5 block) of the row src of an unfolded type into the GPU row
 * dst of nb 32-element blocks: its blocks (krepack_kernel's unit of work). */
KN_HD void kn_krepack_sb(int type, uint8_t *dst, const uint8_t *src, int nb, int s) {
    const uint8_t *sb = src + (size_t)s * kn_unfold_bytes(type);
    int nj = kn_unfold_blocks(type);
    for (int j = 0; j < nj; j++) {
        int q[KN_BLOCK];
        float h[2];
        kn_ksub_block(type, sb, j, q, h);
        kn_put_block(type, dst, nb, s * nj + j, q, h);
    }
}

/* GPU row dst (kn_qrow_bytes) = the stored row src of an unfolded type, nb 32-element blocks. */
KN_HD void kn_krepack_row(int type, uint8_t *dst, const uint8_t *src, int nb) {
    for (int s = 0; s < nb / kn_unfold_blocks(type); s++) kn_krepack_sb(type, dst, src, nb, s);
}

/* Block b of the stored Q4_0 / Q4_1 / Q8_0 row src into the repacked row dst of nb blocks
 * (repack_kernel's unit of work). */
KN_HD void kn_repack_block(int type, uint8_t *dst, const uint8_t *src, int nb, int b) {
    int qb = kn_qblock_bytes(type), qs = kn_qs_bytes(type), hb = kn_qhead_bytes(type);
    memcpy(dst + (size_t)b * qs, src + (size_t)b * qb + hb, (size_t)qs);
    memcpy(dst + (size_t)nb * qs + (size_t)b * hb, src + (size_t)b * qb, (size_t)hb);
}

/* dst (repacked) = src (nb stored blocks); dst and src must not overlap. */
KN_HD void kn_repack_row(int type, uint8_t *dst, const uint8_t *src, int nb) {
    for (int b = 0; b < nb; b++) kn_repack_block(type, dst, src, nb, b);
}

/* Block b's scale d and offset mn (element = d * q + mn; Q4_0's -8 folded into mn; Q6_K: the
 * halves' scales, kn_pelem) and its quants in a repacked row of nb blocks. */
KN_HD const uint8_t *kn_prow_block(int type, const uint8_t *row, int nb, int b, float *d,
                                   float *mn) {
    const uint8_t *h = row + (size_t)nb * kn_qs_bytes(type) + (size_t)b * kn_qhead_bytes(type);
    if (kn_unfold_bytes(type)) {
        memcpy(d, h, 4);
        memcpy(mn, h + 4, 4);
        return row + (size_t)b * kn_qs_bytes(type);
    }
    *d = kn_h2f((uint16_t)(h[0] | h[1] << 8));
    *mn = type == KN_T_Q4_1   ? kn_h2f((uint16_t)(h[2] | h[3] << 8))
          : type == KN_T_Q4_0 ? -8.0f * *d
                              : 0.0f;
    return row + (size_t)b * kn_qs_bytes(type);
}

/* Element i of a row of k elements of any supported type as it lies on the GPU (quantized rows
 * repacked). */
KN_HD float kn_row_elem(int type, const uint8_t *row, int64_t k, int64_t i) {
    switch (type) {
    case KN_T_F32: return ((const float *)row)[i];
    case KN_T_F16: return kn_h2f(((const uint16_t *)row)[i]);
    case KN_T_BF16: return kn_bf2f(((const uint16_t *)row)[i]);
    default: {
        float d, mn;
        const uint8_t *qs =
            kn_prow_block(type, row, (int)(k / KN_BLOCK), (int)(i / KN_BLOCK), &d, &mn);
        return kn_pelem(type, qs, d, mn, (int)(i % KN_BLOCK));
    }
    }
}

/* ---- integer matrix-vector products (the decode kernels) ---- */

/* v (|v| <= KN_Q16_MAX) as 256 * hi + lo, both signed bytes. */
KN_HD void kn_q16_split(int v, int8_t *hi, int8_t *lo) {
    int h = (v + 128) >> 8; /* arithmetic: floor */
    *hi = (int8_t)h;
    *lo = (int8_t)(v - 256 * h);
}

/* The activations' quants: 16-bit, as the CPU's (kn_quant), so decode on the GPU rounds as
 * little as on the CPU; int8 quants (llama.cpp's) leave logits ~1e-4 (NMSE) from the CPU's on
 * the default model, enough to part greedy texts. A quant v = 256 h + l is kept as two signed
 * byte planes, h = floor((v + 128) / 256) and l = v - 256 h, each in [-128, 127] for
 * |v| <= KN_Q16_MAX, and meets the weights in two dp4a each. */
#define KN_Q16_MAX 32639 /* 127 * 256 + 127 */

/* One block of 32 activations quantized for the integer dot products: v[i] = round(x[i] / d)
 * with d = max|x| / KN_Q16_MAX (0 for a block of zeros, v all 0), stored as the planes hi and
 * lo; returns d. *sum = d * sum(v). */
KN_HD float kn_q16_block(const float *x, int8_t *hi, int8_t *lo, float *sum) {
    float amax = 0.0f;
    for (int i = 0; i < KN_BLOCK; i++) amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / (float)KN_Q16_MAX;
    int s = 0;
    for (int i = 0; i < KN_BLOCK; i++) {
        int v = d > 0.0f ? (int)rintf(x[i] / d) : 0;
        kn_q16_split(v, &hi[i], &lo[i]);
        s += v;
    }
    *sum = d * (float)s;
    return d;
}

/* c + the dot product of the four signed bytes of a and of b (the dp4a instruction). */
KN_HD int kn_dp4a(int a, int b, int c) {
#if defined(__CUDA_ARCH__)
    return __dp4a(a, b, c);
#else
    int a0 = (int8_t)a, a1 = (int8_t)(a >> 8), a2 = (int8_t)(a >> 16), a3 = (int8_t)(a >> 24);
    int b0 = (int8_t)b, b1 = (int8_t)(b >> 8), b2 = (int8_t)(b >> 16), b3 = (int8_t)(b >> 24);
    return c + a0 * b0 + a1 * b1 + a2 * b2 + a3 * b3;
#endif
}

/* 32 bytes of quants as eight ints (passed by value: kernels keep them in registers). */
typedef struct kn_q32 {
    int v[8];
} kn_q32_t;

/* Sum over one block of weight x activation: the weight block's quants in the GPU layout (16
 * bytes of nibbles in the first 4 ints, element i < 16 the low nibble of byte i, i >= 16 the high
 * nibble of byte i - 16; or 32 signed bytes in all 8), its scale d and offset mn (element = d * q
 * + mn); the activation block's 16-bit quants as planes xh, xl (kn_q16_block) with scale dx and
 * sx = dx * sum(quants). Exact integer sums (|256 * sum(w h) + sum(w l)| < 2^28), then two
 * products. Q6_K, Q3_K (kn_halves): d and mn are the halves' scales, no offset. */
KN_HD float kn_qdot_block(int type, kn_q32_t wq, float d, float mn, kn_q32_t xh, kn_q32_t xl,
                          float dx, float sx) {
    int sh = 0, sl = 0;
    if (kn_halves(type)) {
        int lh = 0, ll = 0;
        for (int j = 0; j < 4; j++) {
            lh = kn_dp4a(wq.v[j], xh.v[j], lh);
            ll = kn_dp4a(wq.v[j], xl.v[j], ll);
        }
        for (int j = 4; j < 8; j++) {
            sh = kn_dp4a(wq.v[j], xh.v[j], sh);
            sl = kn_dp4a(wq.v[j], xl.v[j], sl);
        }
        return d * dx * (float)(256 * lh + ll) + mn * dx * (float)(256 * sh + sl);
    }
    if (kn_qs_bytes(type) == 32) {
        for (int j = 0; j < 8; j++) {
            sh = kn_dp4a(wq.v[j], xh.v[j], sh);
            sl = kn_dp4a(wq.v[j], xl.v[j], sl);
        }
    } else {
        for (int j = 0; j < 4; j++) {
            int w0 = wq.v[j] & 0x0f0f0f0f, w1 = (wq.v[j] >> 4) & 0x0f0f0f0f;
            sh = kn_dp4a(w0, xh.v[j], sh);
            sh = kn_dp4a(w1, xh.v[4 + j], sh);
            sl = kn_dp4a(w0, xl.v[j], sl);
            sl = kn_dp4a(w1, xl.v[4 + j], sl);
        }
    }
    return d * dx * (float)(256 * sh + sl) + mn * sx;
}

/* RoPE: the element indices of pair i of a head of hd elements (halves for neox, adjacent
 * otherwise), and the rotation of that pair by (c, s) = (cos, sin) * attn_factor. */
KN_HD void kn_rope_pair_idx(int i, int hd, int neox, int *a, int *b) {
    *a = neox ? i : 2 * i;
    *b = neox ? i + hd / 2 : 2 * i + 1;
}

KN_HD void kn_rope_rotate(float *x0, float *x1, float c, float s) {
    float a = *x0, b = *x1;
    *x0 = a * c - b * s;
    *x1 = a * s + b * c;
}

/* Online softmax: running max m, running sum l of exp(score - m) and the weighted value
 * accumulator o; adding one score rescales by exp(m_old - m_new). kn_online_step returns the
 * factor to rescale o by and writes the new weight of the value in *p. */
KN_HD float kn_online_step(float *m, float *l, float score, float *p) {
    float m_new = score > *m ? score : *m;
    float corr = expf(*m - m_new); /* m starts at -INFINITY: exp(-inf) = 0 */
    *p = expf(score - m_new);
    *l = *l * corr + *p;
    *m = m_new;
    return corr;
}

/* Merging n online-softmax states (m[i], l[i]: running max and sum of exp(score - m[i]); a state
 * with l[i] == 0 saw no score): w[i] = exp(m[i] - M) with M the largest m of the states that saw
 * scores (0 for the others); returns the merged sum, sum of l[i] * w[i]. The merged output is
 * sum of o[i] * w[i] divided by it. */
KN_HD float kn_online_merge(const float *m, const float *l, int n, float *w) {
    float mx = -INFINITY, den = 0.0f;
    for (int i = 0; i < n; i++)
        if (l[i] > 0.0f && m[i] > mx) mx = m[i];
    for (int i = 0; i < n; i++) {
        w[i] = l[i] > 0.0f ? expf(m[i] - mx) : 0.0f;
        den += l[i] * w[i];
    }
    return den;
}

KN_HD float kn_silu(float g) {
    return g / (1.0f + expf(-g));
}

#endif
