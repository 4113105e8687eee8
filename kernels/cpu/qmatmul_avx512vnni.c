/*
 * qmatmul_avx512vnni.c — the "avx512vnni" variant's own kernels, compiled for that instruction
 * set whatever the build's -march and called only where CPUID reports avx512vnni (qmatmul.c); the
 * rest of the variant is the AVX-512 one's. Bit-identical to the scalar reference
 * (qmatmul_priv.h): only integer sums change shape.
 *
 * gemm (sixteen activation rows across a vector): vpdpwssd, a pair product and its accumulation
 * in one instruction. Decode of Q4_0, Q4_1, Q5_0 and Q5_1 (rowdot4m): the weight nibbles stay
 * bytes and meet the activation's byte planes (kn_quant_fn's xp) in vpdpbusd, four products a lane,
 * 64 a instruction, against 32 for vpmaddwd on quants first widened to int16; the AVX-512 decode
 * kernel was bound by that arithmetic rather than by memory on 2-core machines (bench/RESULTS.md).
 * Each group of weight rows is decoded once for up to four activation rows. Q8_0's signed quants
 * take the AVX-512 kernel.
 */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

#include <immintrin.h>

static inline __m512i pair_dot(__m512i acc, __m512i w, __m512i x) {
    return _mm512_dpwssd_epi32(acc, w, x);
}

#include "qmatmul_avx512_dec.h"
#include "qmatmul_avx512_gemm.h"

void kn_gemm_avx512vnni(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y,
                        int n, int row0, int j0) {
    gemm_avx512_body(w, rows, a, lanes, y, n, row0, j0);
}

/* Blocks j < nbg of one weight row's group (seg: its first block) as bytes: quants 0..15 of block
 * j at bytes 16j .. 16j + 15 of *lo, quants 16..31 of *hi (zeros past nbg). */
static inline __attribute__((always_inline)) void row_nibbles(int type, int nbg, const uint8_t *seg,
                                                              size_t bb, __m512i *lo, __m512i *hi) {
    int hdr = type == LT_DTYPE_Q4_1 || type == LT_DTYPE_Q5_1 ? 4 : 2; /* kn_block_head's */
    const uint8_t *nib = seg + hdr + (kn_is_q5(type) ? 4 : 0);
    __m512i raw = _mm512_zextsi128_si512(_mm_loadu_si128((const __m128i *)nib));
    if (nbg > 1) raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(nib + bb)), 1);
    if (nbg > 2) raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(nib + 2 * bb)), 2);
    if (nbg > 3) raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(nib + 3 * bb)), 3);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    *lo = _mm512_and_si512(raw, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
    if (kn_is_q5(type)) { /* bit e of qh adds 16 to element e: 0..15 in lo, 16..31 in hi */
        uint64_t ml = 0, mh = 0;
        for (int j = 0; j < nbg; j++) {
            uint32_t h = kn_q5_bits(seg + (size_t)j * bb + hdr);
            ml |= (uint64_t)(h & 0xffff) << 16 * j;
            mh |= (uint64_t)(h >> 16) << 16 * j;
        }
        const __m512i b4 = _mm512_set1_epi8(16);
        *lo = _mm512_mask_add_epi8(*lo, _cvtu64_mask64(ml), *lo, b4);
        *hi = _mm512_mask_add_epi8(*hi, _cvtu64_mask64(mh), *hi, b4);
    }
}

/* row_nibbles' quants against an activation group's planes xp: lanes 4j .. 4j + 3 hold partial
 * sums of block j's integer dot product. l (unsigned) times q (0..31, a valid signed byte); q
 * (unsigned) times h (signed). */
static inline __m512i nib_dot(__m512i lo, __m512i hi, const __m512i *xp) {
    __m512i sl =
        _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), xp[0], lo), xp[1], hi);
    __m512i sh =
        _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xp[2]), hi, xp[3]);
    return _mm512_add_epi32(_mm512_slli_epi32(sh, 8), sl);
}

/* group_heads for Q4_0 and Q4_1, whose four blocks' headers lie in a group's first 64 bytes
 * (bb <= 20): one load a row, the d (and m) halves picked out by two two-row word permutes. */
static inline void group_heads_q4(int type, const uint8_t *w0, size_t row_bytes, size_t bb, int nbg,
                                  __m512 *d, __m512 *mn) {
    __mmask64 k = nbg * bb >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (nbg * bb)) - 1;
    __m512i r[4];
    for (int i = 0; i < 4; i++) r[i] = _mm512_maskz_loadu_epi8(k, w0 + (size_t)i * row_bytes);
    /* word p < 16 (block j = p / 4, row i = p % 4): d; p + 16: the next word, m. Words 0..31
     * index the first row of a pair, 32..63 the second. */
    short pick[32];
    for (int p = 0; p < 32; p++) {
        int j = (p % 16) / 4, i = p % 4;
        pick[p] = (short)(j * (int)bb / 2 + p / 16 + (i % 2) * 32);
    }
    __m512i idx = _mm512_loadu_si512(pick);
    __m512i h = _mm512_mask_blend_epi16(0xcccccccc, _mm512_permutex2var_epi16(r[0], idx, r[1]),
                                        _mm512_permutex2var_epi16(r[2], idx, r[3]));
    *d = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    *mn = type == LT_DTYPE_Q4_1 ? _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1))
                                : implicit_mn(type, *d);
}

/* One group (nbg blocks from b0) of four weight rows against the M activation rows of a (their
 * planes kn_planes_bytes(nb) apart): the weights' quants and headers taken once for all M rows,
 * then each row's products and floating-point steps, in the order of the one-row kernel. */
static inline __attribute__((always_inline)) void
rowdot4v_group(int type, int M, int nbg, const uint8_t *w0, size_t row_bytes, size_t bb,
               const kn_qact_t *a, int b0, __m512 *acc, __m128 *off) {
    __m512i lo[4], hi[4];
    for (int i = 0; i < 4; i++) {
        const uint8_t *seg = w0 + (size_t)i * row_bytes;
        _mm_prefetch((const char *)seg + KN_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)seg + KN_PREFETCH + 64, _MM_HINT_T0);
        row_nibbles(type, nbg, seg, bb, &lo[i], &hi[i]);
    }
    __m512 d, mn;
    if (type == LT_DTYPE_Q4_0 || type == LT_DTYPE_Q4_1)
        group_heads_q4(type, w0, row_bytes, bb, nbg, &d, &mn);
    else
        group_heads(type, w0, row_bytes, bb, nbg, &d, &mn);
    size_t pb = kn_planes_bytes(a->nb);
    for (int r = 0; r < M; r++) {
        const uint8_t *g = a->xp + (size_t)r * pb + (size_t)(b0 / KN_ACC) * KN_PLANE_GROUP;
        __m512i xp[4] = {_mm512_loadu_si512(g), _mm512_loadu_si512(g + 64),
                         _mm512_loadu_si512(g + 128), _mm512_loadu_si512(g + 192)};
        __m512i s[4];
        for (int i = 0; i < 4; i++) s[i] = nib_dot(lo[i], hi[i], xp);
        kn_qact_t ar = {NULL, a->dx + (size_t)r * a->nb, a->xs + (size_t)r * a->nb, a->k, a->nb,
                        NULL};
        group_acc4(hsum4x4(s[0], s[1], s[2], s[3]), d, mn, &ar, b0, nbg, &acc[r], &off[r]);
    }
}

/* Four weight rows against the M (a constant where inlined) activation rows of a: y[r * ys + i]
 * for row r, weight row i. */
static inline __attribute__((always_inline)) void rowdot4v_rows(int type, int M, const uint8_t *w,
                                                                size_t row_bytes, size_t bb,
                                                                const kn_qact_t *a, float *y,
                                                                size_t ys) {
    __m512 acc[KN_ROWDOT_MAX];
    __m128 off[KN_ROWDOT_MAX];
    for (int r = 0; r < M; r++) acc[r] = _mm512_setzero_ps(), off[r] = _mm_setzero_ps();
    int b0 = 0;
    for (; b0 + KN_ACC <= a->nb; b0 += KN_ACC)
        rowdot4v_group(type, M, KN_ACC, w + (size_t)b0 * bb, row_bytes, bb, a, b0, acc, off);
    if (b0 < a->nb)
        rowdot4v_group(type, M, a->nb - b0, w + (size_t)b0 * bb, row_bytes, bb, a, b0, acc, off);
    for (int r = 0; r < M; r++)
        _mm_storeu_ps(y + (size_t)r * ys, _mm_add_ps(tree4x4(acc[r]), off[r]));
}

/* rowdot4v_rows for type and M as constants. */
#define KN_ROWS_BY_M(T)                                                                            \
    switch (m) {                                                                                   \
    case 1: rowdot4v_rows(T, 1, w, row_bytes, bb, a, y, ys); break;                                \
    case 2: rowdot4v_rows(T, 2, w, row_bytes, bb, a, y, ys); break;                                \
    case 3: rowdot4v_rows(T, 3, w, row_bytes, bb, a, y, ys); break;                                \
    default: rowdot4v_rows(T, 4, w, row_bytes, bb, a, y, ys); break;                               \
    }

void kn_rowdot4m_avx512vnni(int type, const uint8_t *w, size_t row_bytes, size_t bb,
                            const kn_qact_t *a, int m, float *y, size_t ys) {
    switch (type) {
    case LT_DTYPE_Q4_0: KN_ROWS_BY_M(LT_DTYPE_Q4_0); break;
    case LT_DTYPE_Q4_1: KN_ROWS_BY_M(LT_DTYPE_Q4_1); break;
    case LT_DTYPE_Q5_0: KN_ROWS_BY_M(LT_DTYPE_Q5_0); break;
    default: KN_ROWS_BY_M(LT_DTYPE_Q5_1); break;
    }
}
#undef KN_ROWS_BY_M
