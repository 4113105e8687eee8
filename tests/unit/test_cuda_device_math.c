/*
 * test_cuda_device_math.c — the per-element arithmetic of the CUDA kernels
 * (kernels/cuda/device_math.h, compiled here as plain C) against the CPU reference: half and
 * bfloat16 conversions (every half bit pattern, random floats), Q4_0/Q4_1/Q8_0 block
 * dequantization and the Q4_K/Q5_K/Q6_K rows unfolded into the GPU layout against kn_dequantize,
 * the int8 block dot products, a RoPE rotation against kn_rope, the online softmax
 * against kn_softmax, SiLU against kn_swiglu. Runs everywhere (no GPU, no nvcc needed).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/device_math.h"
#include "dtype.h"
#include "kernels.h"
#include "lt.h"
#include "testutil.h"

static float frand(float lo, float hi) {
    return lo + (hi - lo) * (float)rand() / (float)RAND_MAX;
}

static void test_type_codes(void **state) {
    (void)state;
    assert_int_equal(KN_T_F32, LT_DTYPE_F32);
    assert_int_equal(KN_T_F16, LT_DTYPE_F16);
    assert_int_equal(KN_T_Q4_0, LT_DTYPE_Q4_0);
    assert_int_equal(KN_T_Q4_1, LT_DTYPE_Q4_1);
    assert_int_equal(KN_T_Q5_0, LT_DTYPE_Q5_0);
    assert_int_equal(KN_T_Q5_1, LT_DTYPE_Q5_1);
    assert_int_equal(KN_T_Q8_0, LT_DTYPE_Q8_0);
    assert_int_equal(KN_T_BF16, LT_DTYPE_BF16);
    assert_int_equal(KN_T_Q4_K, LT_DTYPE_Q4_K);
    assert_int_equal(KN_T_Q5_K, LT_DTYPE_Q5_K);
    assert_int_equal(KN_T_Q6_K, LT_DTYPE_Q6_K);
    assert_int_equal(KN_T_Q3_K, LT_DTYPE_Q3_K);
    assert_int_equal(KN_KBLOCK, LT_DTYPE_QK_K);
    int ktypes[] = {LT_DTYPE_Q4_K, LT_DTYPE_Q5_K, LT_DTYPE_Q6_K, LT_DTYPE_Q3_K};
    for (int i = 0; i < 4; i++) {
        assert_int_equal((size_t)kn_ksb_bytes(ktypes[i]), lt_dtype_block_bytes(ktypes[i]));
        assert_true(kn_is_qgpu(ktypes[i]));
    }
    int utypes[] = {LT_DTYPE_Q4_K, LT_DTYPE_Q5_K, LT_DTYPE_Q6_K,
                    LT_DTYPE_Q3_K, LT_DTYPE_Q5_0, LT_DTYPE_Q5_1};
    for (int i = 0; i < 6; i++) { /* a stored unit: one super-block, or one Q5 block */
        assert_int_equal((size_t)kn_unfold_bytes(utypes[i]), lt_dtype_block_bytes(utypes[i]));
        assert_int_equal(KN_BLOCK * kn_unfold_blocks(utypes[i]), lt_dtype_block_elems(utypes[i]));
        assert_true(kn_is_qgpu(utypes[i]));
    }
    assert_false(kn_is_qgpu(LT_DTYPE_F16));
    assert_false(kn_is_qgpu(LT_DTYPE_Q2_K)); /* not read by the GPU: converted at load */
    int types[] = {LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q8_0};
    for (int i = 0; i < 3; i++)
        assert_int_equal((size_t)kn_qblock_bytes(types[i]), lt_dtype_block_bytes(types[i]));
}

static void test_half(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) { /* every half: to float and back */
        float ref = lt_f16_to_f32((uint16_t)h), got = kn_h2f((uint16_t)h);
        if (isnan(ref)) {
            assert_true(isnan(got));
            continue;
        }
        assert_memory_equal(&ref, &got, 4);
        assert_int_equal(kn_f2h(got), h);
    }
    srand(3);
    for (int i = 0; i < 200000; i++) { /* random floats over the half range and past it */
        float f = ldexpf(frand(-1, 1), rand() % 48 - 30);
        assert_int_equal(kn_f2h(f), lt_f32_to_f16(f));
    }
    float edges[] = {65504.0f, 65519.0f, 65520.0f, 1e9f, 6.1e-5f, 5.96e-8f, 2.9e-8f, 3.0e-8f, 0.0f};
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) {
        assert_int_equal(kn_f2h(edges[i]), lt_f32_to_f16(edges[i]));
        assert_int_equal(kn_f2h(-edges[i]), lt_f32_to_f16(-edges[i]));
    }
}

static void test_bf16(void **state) {
    (void)state;
    srand(5);
    for (int i = 0; i < 100000; i++) {
        float f = ldexpf(frand(-1, 1), rand() % 200 - 100);
        uint16_t b = kn_f2bf(f);
        float back = kn_bf2f(b);
        assert_true(fabsf(back - f) <= fabsf(f) * (1.0f / 256.0f));
        assert_true(back == lt_bf16_to_f32(b));
    }
    assert_true(isnan(kn_bf2f(kn_f2bf(NAN))));
}

static void test_dequant(void **state) {
    (void)state;
    int types[] = {LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q8_0,
                   LT_DTYPE_F16,  LT_DTYPE_BF16, LT_DTYPE_F32};
    const int n = 256;
    srand(7);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        int type = types[ti];
        size_t bytes = (size_t)lt_dtype_nbytes(type, n);
        uint8_t *row = malloc(bytes);
        for (size_t i = 0; i < bytes; i++) row[i] = (uint8_t)rand();
        /* sane scales: random bytes may make NaN halves in block headers / f16 / bf16 rows */
        if (type == LT_DTYPE_F16)
            for (int i = 0; i < n; i++) ((uint16_t *)row)[i] = lt_f32_to_f16(frand(-4, 4));
        if (type == LT_DTYPE_BF16)
            for (int i = 0; i < n; i++) ((uint16_t *)row)[i] = kn_f2bf(frand(-4, 4));
        if (type == LT_DTYPE_F32)
            for (int i = 0; i < n; i++) ((float *)row)[i] = frand(-4, 4);
        int qb = kn_qblock_bytes(type);
        for (int b = 0; qb && b < n / KN_BLOCK; b++) {
            uint16_t d = lt_f32_to_f16(frand(0.001f, 0.1f)), m = lt_f32_to_f16(frand(-1, 1));
            memcpy(row + (size_t)b * qb, &d, 2);
            if (type == LT_DTYPE_Q4_1) memcpy(row + (size_t)b * qb + 2, &m, 2);
        }
        float ref[256];
        assert_int_equal(kn_dequantize(type, row, ref, n), 0);
        uint8_t *gpu = malloc(bytes); /* the row as the GPU holds it */
        memcpy(gpu, row, bytes);
        if (qb) kn_repack_row(type, gpu, row, n / KN_BLOCK);
        if (qb) assert_memory_not_equal(gpu, row, bytes);
        for (int i = 0; i < n; i++) {
            float got = kn_row_elem(type, gpu, n, i);
            assert_float_equal(got, ref[i], fabsf(ref[i]) * 1e-6f + 1e-7f);
            if (qb) { /* the matrix-vector kernel's form: header once, then d * q + mn */
                float d, mn;
                const uint8_t *qs =
                    kn_qblock_head(type, row + (size_t)(i / KN_BLOCK) * qb, &d, &mn);
                float alt = d * (float)kn_qblock_q(type, qs, i % KN_BLOCK) + mn;
                assert_float_equal(alt, ref[i], fabsf(ref[i]) * 1e-6f + 1e-6f);
                const uint8_t *pq = kn_prow_block(type, gpu, n / KN_BLOCK, i / KN_BLOCK, &d, &mn);
                alt = d * (float)kn_qblock_q(type, pq, i % KN_BLOCK) + mn;
                assert_float_equal(alt, ref[i], fabsf(ref[i]) * 1e-6f + 1e-6f);
            }
        }
        free(gpu);
        free(row);
    }
}

/* The decode kernels' integer arithmetic: kn_q16_block's quants (hi and lo planes) reproduce the
 * activations within half a step, and kn_qdot_block over a repacked row equals its integer
 * formula exactly and the fp32 dot product of the dequantized row within the quantization error
 * (the weights' alone: 1e-6 of |w||x|). */
static void rand_krow(int type, uint8_t *row, int n);

static void test_integer_dot(void **state) {
    (void)state;
    int types[] = {LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q8_0, LT_DTYPE_Q4_K, LT_DTYPE_Q5_K,
                   LT_DTYPE_Q6_K, LT_DTYPE_Q3_K, LT_DTYPE_Q5_0, LT_DTYPE_Q5_1};
    const int n = 512, nb = n / KN_BLOCK;
    srand(11);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        int type = types[ti], qb = kn_qblock_bytes(type);
        size_t bytes = (size_t)lt_dtype_nbytes(type, n);
        uint8_t *row = malloc(bytes), *gpu = malloc(kn_qrow_bytes(type, n));
        for (size_t i = 0; i < bytes; i++) row[i] = (uint8_t)rand();
        for (int b = 0; qb && b < nb; b++) {
            uint16_t d = lt_f32_to_f16(frand(0.001f, 0.1f)), m = lt_f32_to_f16(frand(-1, 1));
            memcpy(row + (size_t)b * qb, &d, 2);
            if (type == LT_DTYPE_Q4_1) memcpy(row + (size_t)b * qb + 2, &m, 2);
        }
        if (qb) {
            kn_repack_row(type, gpu, row, nb);
        } else {
            rand_krow(type, row, n);
            kn_krepack_row(type, gpu, row, nb);
        }
        float w[512], x[512];
        assert_int_equal(kn_dequantize(type, row, w, n), 0);
        for (int i = 0; i < n; i++) x[i] = frand(-2, 2) * (i % 97 == 0 ? 10.0f : 1.0f);
        if (ti == 1)
            for (int i = 64; i < 96; i++) x[i] = 0.0f; /* an all-zero block: d = 0 */
        double ref = 0, mag = 0;
        for (int i = 0; i < n; i++) ref += (double)w[i] * x[i], mag += fabs((double)w[i] * x[i]);
        float got = 0.0f;
        for (int b = 0; b < nb; b++) {
            int8_t h[32], l[32];
            int q[32];
            float sx, dx = kn_q16_block(x + b * KN_BLOCK, h, l, &sx);
            int isum = 0;
            for (int i = 0; i < KN_BLOCK; i++) {
                q[i] = 256 * h[i] + l[i];
                assert_true(abs(q[i]) <= KN_Q16_MAX);
                assert_true(fabsf(q[i] * dx - x[b * KN_BLOCK + i]) <= 0.5f * dx + 1e-6f);
                isum += q[i];
            }
            assert_float_equal(sx, dx * (float)isum, 0);
            float d, mn;
            const uint8_t *qs = kn_prow_block(type, gpu, nb, b, &d, &mn);
            kn_q32_t wq = {{0}}, xh, xl;
            memcpy(wq.v, qs, (size_t)kn_qs_bytes(type));
            memcpy(xh.v, h, 32);
            memcpy(xl.v, l, 32);
            float part = kn_qdot_block(type, wq, d, mn, xh, xl, dx, sx);
            /* volatile: GCC 12 at -O2 -march=native (AVX512-VNNI) compiles this signed-byte sum
             * of products into vpdpbusd, which reads one side as unsigned: wrong sums */
            volatile int exact = 0, hi = 0;
            for (int i = 0; i < KN_BLOCK; i++)
                if (kn_halves(type) && i >= 16) /* the halves' own scales d and mn */
                    hi += kn_qblock_q(type, qs, i) * q[i];
                else
                    exact += kn_qblock_q(type, qs, i) * q[i];
            if (kn_halves(type))
                assert_float_equal(part, d * dx * (float)exact + mn * dx * (float)hi, 0);
            else
                assert_float_equal(part, d * dx * (float)exact + mn * sx, 0);
            got += part;
        }
        if (fabs(got - ref) > 1e-4 * mag)
            fail_msg("%s: integer dot %.6f, fp32 %.6f (|w||x| %.3f)", lt_dtype_name(type), got, ref,
                     mag);
        free(row), free(gpu);
    }
}

/* A random stored row of an unfolded type (K-quants: n % 256 == 0) with sane f16 scales. */
static void rand_krow(int type, uint8_t *row, int n) {
    if (type == LT_DTYPE_Q5_0 || type == LT_DTYPE_Q5_1) {
        size_t bb = lt_dtype_block_bytes(type);
        for (size_t i = 0; i < bb * (size_t)(n / KN_BLOCK); i++) row[i] = (uint8_t)rand();
        for (int b = 0; b < n / KN_BLOCK; b++) {
            uint16_t d = lt_f32_to_f16(frand(0.001f, 0.1f)), m = lt_f32_to_f16(frand(-1, 1));
            memcpy(row + (size_t)b * bb, &d, 2);
            if (type == LT_DTYPE_Q5_1) memcpy(row + (size_t)b * bb + 2, &m, 2);
        }
        return;
    }
    size_t sbb = lt_dtype_block_bytes(type);
    for (size_t i = 0; i < sbb * (size_t)(n / KN_KBLOCK); i++) row[i] = (uint8_t)rand();
    for (int s = 0; s < n / KN_KBLOCK; s++) {
        uint8_t *sb = row + (size_t)s * sbb;
        uint16_t d = lt_f32_to_f16(frand(0.0005f, 0.02f)), dmin = lt_f32_to_f16(frand(0, 0.02f));
        if (type == LT_DTYPE_Q6_K || type == LT_DTYPE_Q3_K) { /* d last, no dmin */
            memcpy(sb + sbb - 2, &d, 2);
        } else {
            memcpy(sb, &d, 2);
            memcpy(sb + 2, &dmin, 2);
        }
    }
}

/* Q4_K, Q5_K, Q6_K, Q3_K, Q5_0, Q5_1 unfolded into the GPU layout (kn_krepack_row): every element
 * as kn_row_elem and kn_pelem read it equals kn_dequantize's, bit for bit; the 6-bit scales as
 * kn_k_scale_min's. */
static void test_kquant_layout(void **state) {
    (void)state;
    srand(13);
    for (int i = 0; i < 1000; i++) {
        uint8_t s[12];
        for (int j = 0; j < 12; j++) s[j] = (uint8_t)rand();
        for (int j = 0; j < 8; j++) {
            int sc, mn, sc2, mn2;
            kn_k_scale_min(s, j, &sc, &mn);
            kn_k_scale_min_hd(s, j, &sc2, &mn2);
            assert_int_equal(sc, sc2);
            assert_int_equal(mn, mn2);
        }
    }
    int types[] = {LT_DTYPE_Q4_K, LT_DTYPE_Q5_K, LT_DTYPE_Q6_K,
                   LT_DTYPE_Q3_K, LT_DTYPE_Q5_0, LT_DTYPE_Q5_1};
    const int n = 768, nb = n / KN_BLOCK;
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        int type = types[ti];
        uint8_t *row = malloc((size_t)lt_dtype_nbytes(type, n));
        size_t gb = kn_qrow_bytes(type, n);
        uint8_t *gpu = malloc(gb);
        assert_int_equal(gb, (size_t)nb * (type == LT_DTYPE_Q4_K ? 24 : 40));
        for (int rep = 0; rep < 20; rep++) {
            rand_krow(type, row, n);
            float ref[768];
            assert_int_equal(kn_dequantize(type, row, ref, n), 0);
            memset(gpu, 0xa5, gb);
            kn_krepack_row(type, gpu, row, nb);
            for (int i = 0; i < n; i++) {
                float got = kn_row_elem(type, gpu, n, i), d, mn;
                if (memcmp(&got, &ref[i], 4) != 0)
                    fail_msg("%s element %d: %.9g on the GPU layout, %.9g dequantized",
                             lt_dtype_name(type), i, got, ref[i]);
                const uint8_t *qs = kn_prow_block(type, gpu, nb, i / KN_BLOCK, &d, &mn);
                float alt = kn_pelem(type, qs, d, mn, i % KN_BLOCK);
                assert_memory_equal(&alt, &ref[i], 4);
            }
        }
        free(row), free(gpu);
    }
}

static void test_rope(void **state) {
    (void)state;
    const int hd = 64;
    float inv[32];
    for (int i = 0; i < hd / 2; i++) inv[i] = powf(10000.0f, -2.0f * i / hd);
    for (int neox = 0; neox < 2; neox++)
        for (int pos = 0; pos < 3000; pos += 997) {
            float x[64], y[64];
            for (int i = 0; i < hd; i++) x[i] = y[i] = frand(-2, 2);
            kn_rope(x, hd, pos, inv, neox, 0.9f);
            for (int i = 0; i < hd / 2; i++) {
                double ang = (double)pos * inv[i];
                int a, b;
                kn_rope_pair_idx(i, hd, neox, &a, &b);
                kn_rope_rotate(&y[a], &y[b], (float)cos(ang) * 0.9f, (float)sin(ang) * 0.9f);
            }
            assert_memory_equal(x, y, sizeof x);
        }
}

static void test_online_softmax(void **state) {
    (void)state;
    const int n = 300, hd = 8;
    float s[300], v[300][8], p_ref[300];
    srand(11);
    for (int j = 0; j < n; j++) {
        s[j] = p_ref[j] = frand(-20, 20);
        for (int d = 0; d < hd; d++) v[j][d] = frand(-1, 1);
    }
    kn_softmax(p_ref, n);
    float m = -INFINITY, l = 0, o[8] = {0};
    for (int j = 0; j < n; j++) {
        float p, corr = kn_online_step(&m, &l, s[j], &p);
        for (int d = 0; d < hd; d++) o[d] = o[d] * corr + p * v[j][d];
    }
    for (int d = 0; d < hd; d++) {
        double ref = 0;
        for (int j = 0; j < n; j++) ref += p_ref[j] * v[j][d];
        assert_float_equal(o[d] / l, ref, 1e-5);
    }
}

/* Attention split over position ranges (the GPU's long-context decode): each range's online
 * softmax state, merged by kn_online_merge, equals one softmax over every position; an empty
 * range (no positions) takes no part. */
static void test_online_merge(void **state) {
    (void)state;
    enum { N = 1000, S = 7 };
    static float score[N], val[N];
    srand(13);
    for (int i = 0; i < N; i++) score[i] = frand(-30, 30), val[i] = frand(-1, 1);
    double mx = -1e30, den = 0, num = 0;
    for (int i = 0; i < N; i++) mx = score[i] > mx ? score[i] : mx;
    for (int i = 0; i < N; i++) den += exp(score[i] - mx), num += exp(score[i] - mx) * val[i];
    float m[S + 1], l[S + 1], o[S + 1], w[S + 1];
    int chunk = (N + S - 1) / S;
    for (int sp = 0; sp <= S; sp++) { /* the last range is empty */
        m[sp] = -INFINITY, l[sp] = 0.0f, o[sp] = 0.0f;
        for (int i = sp * chunk; i < N && i < (sp + 1) * chunk && sp < S; i++) {
            float p, corr = kn_online_step(&m[sp], &l[sp], score[i], &p);
            o[sp] = o[sp] * corr + p * val[i];
        }
    }
    float d = kn_online_merge(m, l, S + 1, w), acc = 0.0f;
    assert_float_equal(w[S], 0.0f, 0);
    for (int sp = 0; sp <= S; sp++) acc += o[sp] * w[sp];
    assert_float_equal(d, (float)den, 1e-4 * den);
    assert_float_equal(acc / d, (float)(num / den), 1e-5);
}

static void test_silu(void **state) {
    (void)state;
    float g[64], up[64];
    for (int i = 0; i < 64; i++) {
        g[i] = frand(-30, 30);
        up[i] = frand(-2, 2);
    }
    float ref[64];
    memcpy(ref, g, sizeof g);
    kn_swiglu(ref, up, 64);
    /* within float rounding: the CPU's e^x is its own vectorized polynomial (kn_expf_v), the
     * device's CUDA's expf, and this test's libm's */
    for (int i = 0; i < 64; i++) {
        float got = kn_silu(g[i]) * up[i];
        if (!(fabsf(got - ref[i]) <= 1e-6f * fabsf(ref[i]) + 1e-30f))
            fail_msg("silu(%g) * %g: %.9g here, %.9g from kn_swiglu", g[i], up[i], got, ref[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_codes),  cmocka_unit_test(test_half),
        cmocka_unit_test(test_bf16),        cmocka_unit_test(test_dequant),
        cmocka_unit_test(test_rope),        cmocka_unit_test(test_online_softmax),
        cmocka_unit_test(test_integer_dot), cmocka_unit_test(test_online_merge),
        cmocka_unit_test(test_silu),        cmocka_unit_test(test_kquant_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
