/*
 * dtype.c — tensor element types: dequantization to f32 (geometry: common/dtype.h) for the GGML
 * formats a GGUF model may carry (F32, F16, BF16, the 32-element Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 blocks
 * and the 256-element Q2_K..Q6_K super-blocks).
 *
 * The worker dequantizes every weight once at load, so this is the only place that knows the bit
 * layouts. Each decoder reproduces the gguf Python package's reference bit for bit: products are
 * formed in the same order ((d * sub_scale) * q). Where an offset is added (d * q + m), the
 * product of an f16 scale (11 significant bits) and a quant of at most 6 bits (times a 6-bit
 * sub-scale for the K-quants) is exact in f32, so a fused multiply-add rounds the same way.
 *
 * Block bytes are read with memcpy: blocks are packed (a Q5_0 block is 22 bytes), so the fields
 * inside them are generally misaligned. Assumes a little-endian host, as GGUF files are.
 */
#include "kernels.h"

#include <string.h>

#include "lt.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "dtype.c assumes a little-endian host");

/* ---- dequantizers, by type ---- */

#define QK   LT_DTYPE_QK
#define QK_K LT_DTYPE_QK_K

typedef void (*dequant_fn)(const uint8_t *blk, float *dst);

static void deq_q4_0(const uint8_t *blk, float *dst);
static void deq_q4_1(const uint8_t *blk, float *dst);
static void deq_q5_0(const uint8_t *blk, float *dst);
static void deq_q5_1(const uint8_t *blk, float *dst);
static void deq_q8_0(const uint8_t *blk, float *dst);
static void deq_q2_k(const uint8_t *blk, float *dst);
static void deq_q3_k(const uint8_t *blk, float *dst);
static void deq_q4_k(const uint8_t *blk, float *dst);
static void deq_q5_k(const uint8_t *blk, float *dst);
static void deq_q6_k(const uint8_t *blk, float *dst);

/* One block's decoder per quantized type (geometry: common/dtype.h); the plain float types have
 * none and are converted in bulk. */
static const dequant_fn k_dequant[] = {
    [LT_DTYPE_Q4_0] = deq_q4_0, [LT_DTYPE_Q4_1] = deq_q4_1, [LT_DTYPE_Q5_0] = deq_q5_0,
    [LT_DTYPE_Q5_1] = deq_q5_1, [LT_DTYPE_Q8_0] = deq_q8_0, [LT_DTYPE_Q2_K] = deq_q2_k,
    [LT_DTYPE_Q3_K] = deq_q3_k, [LT_DTYPE_Q4_K] = deq_q4_k, [LT_DTYPE_Q5_K] = deq_q5_k,
    [LT_DTYPE_Q6_K] = deq_q6_k,
};

/* ---- field loads ---- */

static inline float ld_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return lt_f16_to_f32(h);
}

static inline uint32_t ld_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- 32-element blocks ---- */

/* Q4_0: d (f16), qs[16]. Element j < 16 is the low nibble of qs[j], element j + 16 the high one;
 * value = d * (q - 8). */
static void deq_q4_0(const uint8_t *blk, float *dst) {
    const float d = ld_f16(blk);
    const uint8_t *qs = blk + 2;
    for (int j = 0; j < QK / 2; j++) {
        dst[j] = d * (float)((qs[j] & 0x0f) - 8);
        dst[j + QK / 2] = d * (float)((qs[j] >> 4) - 8);
    }
}

/* Q4_1: d, m (f16), qs[16]; value = d * q + m. */
static void deq_q4_1(const uint8_t *blk, float *dst) {
    const float d = ld_f16(blk);
    const float m = ld_f16(blk + 2);
    const uint8_t *qs = blk + 4;
    for (int j = 0; j < QK / 2; j++) {
        dst[j] = d * (float)(qs[j] & 0x0f) + m;
        dst[j + QK / 2] = d * (float)(qs[j] >> 4) + m;
    }
}

/* Q5_0: d (f16), qh (u32: bit j is the fifth bit of element j), qs[16] as in Q4_0;
 * value = d * (q - 16). */
static void deq_q5_0(const uint8_t *blk, float *dst) {
    const float d = ld_f16(blk);
    const uint32_t qh = ld_u32(blk + 2);
    const uint8_t *qs = blk + 6;
    for (int j = 0; j < QK / 2; j++) {
        int lo = (qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + QK / 2)) & 1) << 4);
        dst[j] = d * (float)(lo - 16);
        dst[j + QK / 2] = d * (float)(hi - 16);
    }
}

/* Q5_1: d, m (f16), qh (u32), qs[16]; value = d * q + m. */
static void deq_q5_1(const uint8_t *blk, float *dst) {
    const float d = ld_f16(blk);
    const float m = ld_f16(blk + 2);
    const uint32_t qh = ld_u32(blk + 4);
    const uint8_t *qs = blk + 8;
    for (int j = 0; j < QK / 2; j++) {
        int lo = (qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + QK / 2)) & 1) << 4);
        dst[j] = d * (float)lo + m;
        dst[j + QK / 2] = d * (float)hi + m;
    }
}

/* Q8_0: d (f16), qs[32] (int8); value = d * q. */
static void deq_q8_0(const uint8_t *blk, float *dst) {
    const float d = ld_f16(blk);
    const int8_t *qs = (const int8_t *)(blk + 2);
    for (int j = 0; j < QK; j++) dst[j] = (float)qs[j] * d;
}

/* ---- 256-element super-blocks ---- */

/* Q2_K: scales[16] (low nibble: scale, high nibble: min of each 16 elements), qs[64] (2 bits),
 * d, dmin (f16). The 256 elements are two halves of 128; in half h, element 32k + l takes bits
 * 2k..2k+1 of qs[32h + l]. value = (d * scale) * q - dmin * min. */
static void deq_q2_k(const uint8_t *blk, float *dst) {
    const uint8_t *sc = blk;
    const uint8_t *qs = blk + QK_K / 16;
    const float d = ld_f16(blk + QK_K / 16 + QK_K / 4);
    const float dmin = ld_f16(blk + QK_K / 16 + QK_K / 4 + 2);
    for (int i = 0; i < QK_K / 16; i++) {
        const float dl = d * (float)(sc[i] & 0x0f);
        const float ml = dmin * (float)(sc[i] >> 4);
        const int h = i / 8, k = (i / 2) % 4, l0 = (i % 2) * 16;
        const uint8_t *q = qs + 32 * h + l0;
        float *y = dst + 16 * i;
        for (int l = 0; l < 16; l++) y[l] = dl * (float)((q[l] >> (2 * k)) & 3) - ml;
    }
}

/* Q3_K: hmask[32], qs[64] (2 low bits, laid out as in Q2_K), scales[12] (sixteen 6-bit signed
 * scales, offset by 32), d (f16). Element 32b + l has its high bit in bit b of hmask[l]; the
 * quant is low - 4 when that bit is clear, low otherwise. value = (d * scale) * q. */
static void deq_q3_k(const uint8_t *blk, float *dst) {
    const uint8_t *hmask = blk;
    const uint8_t *qs = blk + QK_K / 8;
    const uint8_t *s = blk + QK_K / 8 + QK_K / 4;
    const float d = ld_f16(s + 12);
    for (int i = 0; i < QK_K / 16; i++) {
        /* Low 4 bits: nibble (i / 8) of s[i % 8]; high 2 bits: bits 2(i/4).. of s[8 + i % 4]. */
        const int lo = (s[i % 8] >> (4 * (i / 8))) & 0x0f;
        const int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        const float dl = d * (float)((lo | (hi << 4)) - 32);
        const int h = i / 8, k = (i / 2) % 4, l0 = (i % 2) * 16;
        const int b = i / 2; /* which hmask bit: element index 16i..16i+15 lies in 32-run b */
        const uint8_t *q = qs + 32 * h + l0;
        const uint8_t *hm = hmask + l0;
        float *y = dst + 16 * i;
        for (int l = 0; l < 16; l++) {
            int v = (q[l] >> (2 * k)) & 3;
            if (!((hm[l] >> b) & 1)) v -= 4;
            y[l] = dl * (float)v;
        }
    }
}

/* Q4_K: d, dmin (f16), scales[12], qs[128]. Sub-block j (32 elements) uses the low (j even) or
 * high (j odd) nibbles of qs[32 (j/2) ..]. value = (d * scale) * q - dmin * min. */
static void deq_q4_k(const uint8_t *blk, float *dst) {
    const float d = ld_f16(blk);
    const float dmin = ld_f16(blk + 2);
    const uint8_t *s = blk + 4;
    const uint8_t *qs = blk + 16;
    for (int j = 0; j < QK_K / 32; j++) {
        int sc, mn;
        kn_k_scale_min(s, j, &sc, &mn);
        const float dl = d * (float)sc;
        const float ml = dmin * (float)mn;
        const uint8_t *q = qs + 32 * (j / 2);
        const int shift = 4 * (j % 2);
        float *y = dst + 32 * j;
        for (int l = 0; l < 32; l++) y[l] = dl * (float)((q[l] >> shift) & 0x0f) - ml;
    }
}

/* Q5_K: as Q4_K with qh[32] before qs: the fifth bit of element 32j + l is bit j of qh[l]. */
static void deq_q5_k(const uint8_t *blk, float *dst) {
    const float d = ld_f16(blk);
    const float dmin = ld_f16(blk + 2);
    const uint8_t *s = blk + 4;
    const uint8_t *qh = blk + 16;
    const uint8_t *qs = blk + 16 + QK_K / 8;
    for (int j = 0; j < QK_K / 32; j++) {
        int sc, mn;
        kn_k_scale_min(s, j, &sc, &mn);
        const float dl = d * (float)sc;
        const float ml = dmin * (float)mn;
        const uint8_t *q = qs + 32 * (j / 2);
        const int shift = 4 * (j % 2);
        float *y = dst + 32 * j;
        for (int l = 0; l < 32; l++) {
            int v = ((q[l] >> shift) & 0x0f) | (((qh[l] >> j) & 1) << 4);
            y[l] = dl * (float)v - ml;
        }
    }
}

/* Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8), d (f16). In half h of 128
 * elements, element r takes nibble (r / 64) of ql[64h + r % 64] and bit pair (r / 32) of
 * qh[32h + r % 32]; value = (d * scale[r_abs / 16]) * (q - 32). */
static void deq_q6_k(const uint8_t *blk, float *dst) {
    const uint8_t *ql = blk;
    const uint8_t *qh = blk + QK_K / 2;
    const int8_t *sc = (const int8_t *)(blk + QK_K / 2 + QK_K / 4);
    const float d = ld_f16(blk + QK_K / 2 + QK_K / 4 + QK_K / 16);
    for (int h = 0; h < 2; h++) {
        const uint8_t *l4 = ql + 64 * h;
        const uint8_t *h2 = qh + 32 * h;
        float *y = dst + 128 * h;
        float dl[8];
        for (int i = 0; i < 8; i++) dl[i] = d * (float)sc[8 * h + i];
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q0 = ((l4[l] & 0x0f) | ((h2[l] & 3) << 4)) - 32;
            const int q1 = ((l4[l + 32] & 0x0f) | (((h2[l] >> 2) & 3) << 4)) - 32;
            const int q2 = ((l4[l] >> 4) | (((h2[l] >> 4) & 3) << 4)) - 32;
            const int q3 = ((l4[l + 32] >> 4) | (((h2[l] >> 6) & 3) << 4)) - 32;
            y[l] = dl[is] * (float)q0;
            y[l + 32] = dl[is + 2] * (float)q1;
            y[l + 64] = dl[is + 4] * (float)q2;
            y[l + 96] = dl[is + 6] * (float)q3;
        }
    }
}

/* ---- plain float types ---- */

static void deq_f16(const uint8_t *src, float *dst, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__)
    /* Hardware conversion is exact for every finite, infinite and quiet-NaN half, so it agrees
     * with lt_f16_to_f32; only a signalling NaN's quiet bit may differ. */
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
#endif
    for (; i < n; i++) dst[i] = ld_f16(src + 2 * i);
}

static void deq_bf16(const uint8_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint16_t b;
        memcpy(&b, src + 2 * i, 2);
        dst[i] = lt_bf16_to_f32(b);
    }
}

/* ---- public: dequantize ---- */

int kn_dequantize(int type, const void *src, float *dst, int64_t n) {
    if (!lt_dtype_supported(type)) return LT_ERR_UNSUPPORTED;
    const int be = lt_dtype_block_elems(type);
    const size_t bb = lt_dtype_block_bytes(type);
    if (n < 0 || n % be != 0) return LT_ERR_INVAL;
    if (n == 0) return LT_OK;
    if (!src || !dst) return LT_ERR_INVAL;
    const uint8_t *s = src;
    switch (type) {
    case LT_DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return LT_OK;
    case LT_DTYPE_F16: deq_f16(s, dst, n); return LT_OK;
    case LT_DTYPE_BF16: deq_bf16(s, dst, n); return LT_OK;
    default: break;
    }
    const dequant_fn fn = k_dequant[type];
    const int64_t nb = n / be;
    for (int64_t b = 0; b < nb; b++) fn(s + (size_t)b * bb, dst + b * be);
    return LT_OK;
}
