/*
 * test_qmatmul.c — kn_qmatmul (kernels/cpu/qmatmul.c) against dequantize + a double-precision
 * product, for every weight type it reads and every instruction set this CPU has (scalar, AVX2,
 * AVX-512), over odd sizes, every row count 1..17 and a large one. Also: a row's result is
 * bit-identical whatever the number of rows around it (batch invariance), and bad arguments are
 * refused.
 *
 * Weights are random bytes whose f16 scale fields are set to sane values (random bits would make
 * infinities); activations carry an outlier per row, as real hidden states do.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "lt.h"

/* ---- random inputs ---- */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static float rndf(void) { /* [-1, 1) */
    return (float)(rnd() & 0xffffff) / (float)(1 << 23) - 1.0f;
}

/* Offsets of the f16 scale fields inside one block, -1 terminated. */
static const int *scale_fields(int type) {
    static const int q0[] = {0, -1}, q01[] = {0, 2, -1}, q2k[] = {80, 82, -1}, q3k[] = {108, -1},
                     q6k[] = {208, -1};
    switch (type) {
    case LT_DTYPE_Q4_0:
    case LT_DTYPE_Q5_0:
    case LT_DTYPE_Q8_0: return q0;
    case LT_DTYPE_Q4_1:
    case LT_DTYPE_Q5_1:
    case LT_DTYPE_Q4_K:
    case LT_DTYPE_Q5_K: return q01;
    case LT_DTYPE_Q2_K: return q2k;
    case LT_DTYPE_Q3_K: return q3k;
    case LT_DTYPE_Q6_K: return q6k;
    default: return NULL;
    }
}

/* n rows of k elements of `type`. */
static uint8_t *random_weights(int type, int n, int k) {
    size_t bytes = (size_t)lt_dtype_nbytes(type, (int64_t)n * k);
    uint8_t *w = malloc(bytes);
    if (type == LT_DTYPE_F32 || type == LT_DTYPE_F16 || type == LT_DTYPE_BF16) {
        for (int64_t i = 0; i < (int64_t)n * k; i++) {
            float v = rndf() * 0.1f;
            if (type == LT_DTYPE_F32) {
                memcpy(w + 4 * i, &v, 4);
            } else {
                uint32_t bits;
                memcpy(&bits, &v, 4);
                uint16_t h = type == LT_DTYPE_F16 ? lt_f32_to_f16(v) : (uint16_t)(bits >> 16);
                memcpy(w + 2 * i, &h, 2);
            }
        }
        return w;
    }
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rnd();
    size_t bb = lt_dtype_block_bytes(type);
    const int *f = scale_fields(type);
    for (size_t b = 0; b < bytes / bb; b++)
        for (int i = 0; f[i] >= 0; i++) {
            uint16_t h = lt_f32_to_f16(0.002f + 0.01f * (float)(rnd() % 100) / 100.0f);
            memcpy(w + b * bb + f[i], &h, 2);
        }
    return w;
}

static float *random_acts(int m, int k) {
    float *x = malloc((size_t)m * k * sizeof(float));
    for (int i = 0; i < m * k; i++) x[i] = rndf();
    for (int r = 0; r < m; r++) x[(size_t)r * k + (r * 7) % k] = 40.0f; /* an outlier */
    return x;
}

/* ---- checks ---- */

/* y (m, n) within tolerance of dequantize(w) @ x^T in double. The tolerance is the kernel's own
 * bound: for the direct types each activation is rounded to a step of its 32-block's largest
 * magnitude / 32767 (error at most half a step, so a full step per element is a 2x margin), and
 * fp32 accumulation adds ~1e-6 of sum|w||x|. */
static void check_against_reference(int type, const uint8_t *w, const float *x, const float *y,
                                    int m, int n, int k, const char *what) {
    float *row = malloc((size_t)k * sizeof(float));
    size_t rb = (size_t)lt_dtype_nbytes(type, k);
    bool direct = kn_qmatmul_direct(type);
    for (int j = 0; j < n; j++) {
        assert_int_equal(kn_dequantize(type, w + j * rb, row, k), 0);
        for (int r = 0; r < m; r++) {
            const float *xr = x + (size_t)r * k;
            double ref = 0, mag = 0, quant = 0;
            for (int b = 0; b < k; b += 32) {
                int e = b + 32 < k ? b + 32 : k;
                double amax = 0, wsum = 0;
                for (int i = b; i < e; i++) {
                    ref += (double)row[i] * xr[i];
                    mag += fabs((double)row[i] * xr[i]);
                    amax = fmax(amax, fabs(xr[i]));
                    wsum += fabs(row[i]);
                }
                quant += wsum * amax / 32767.0;
            }
            double got = y[(size_t)r * n + j], tol = 1e-5 * mag + (direct ? quant : 0) + 1e-6;
            if (!(fabs(got - ref) <= tol))
                fail_msg("%s %s m=%d n=%d k=%d: y[%d][%d] = %.7g, reference %.7g (tolerance %.2g)",
                         what, lt_dtype_name(type), m, n, k, r, j, got, ref, tol);
        }
    }
    free(row);
}

static const int k_types[] = {LT_DTYPE_F32,  LT_DTYPE_F16,  LT_DTYPE_BF16, LT_DTYPE_Q8_0,
                              LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q5_0, LT_DTYPE_Q5_1,
                              LT_DTYPE_Q2_K, LT_DTYPE_Q3_K, LT_DTYPE_Q4_K, LT_DTYPE_Q5_K,
                              LT_DTYPE_Q6_K};

/* Row counts 1..17 and a large one against the reference, for one type, size and ISA; and
 * every row of the large product bit-identical to the same row computed alone. */
static void check_type(int type, int n, int k, kn_qscratch_t *s, const char *isa) {
    const int big = 70;
    uint8_t *w = random_weights(type, n, k);
    float *x = random_acts(big, k);
    float *y = malloc((size_t)big * n * sizeof(float)), *y1 = malloc((size_t)n * sizeof(float));
    for (int m = 1; m <= 17; m++) {
        assert_int_equal(kn_qmatmul(y, x, w, type, m, n, k, s), LT_OK);
        check_against_reference(type, w, x, y, m, n, k, isa);
    }
    assert_int_equal(kn_qmatmul(y, x, w, type, big, n, k, s), LT_OK);
    check_against_reference(type, w, x, y, big, n, k, isa);
    for (int r = 0; r < big; r++) {
        assert_int_equal(kn_qmatmul(y1, x + (size_t)r * k, w, type, 1, n, k, s), LT_OK);
        if (memcmp(y1, y + (size_t)r * n, (size_t)n * sizeof(float)) != 0)
            fail_msg("%s %s: row %d of %d differs from the row alone", isa, lt_dtype_name(type), r,
                     big);
    }
    free(w);
    free(x);
    free(y);
    free(y1);
}

static void test_every_type_every_isa(void **state) {
    (void)state;
    kn_qscratch_t *s = kn_qscratch_create(70, 1024);
    assert_non_null(s);
    kn_isa_t saved = kn_isa();
    int tested = 0;
    for (int isa = KN_ISA_SCALAR; isa < KN_ISA_COUNT; isa++) {
        if (!kn_isa_supported((kn_isa_t)isa)) {
            print_message("%s: not on this CPU, not tested\n", kn_isa_name((kn_isa_t)isa));
            continue;
        }
        assert_int_equal(kn_set_isa((kn_isa_t)isa), LT_OK);
        for (size_t t = 0; t < sizeof k_types / sizeof *k_types; t++) {
            int type = k_types[t], be = lt_dtype_block_elems(type);
            /* odd row counts; one block, a few blocks and an odd multiple of the block */
            int ks[3] = {be, 3 * be, be == 1 ? 37 : (be == 32 ? 288 : 2 * be)};
            int ns[3] = {1, 7, 67};
            for (int i = 0; i < 3; i++) check_type(type, ns[i], ks[i], s, kn_isa_name(isa));
        }
        tested++;
    }
    print_message("%d instruction sets tested\n", tested);
    assert_int_equal(kn_set_isa(saved), LT_OK);
    kn_qscratch_destroy(&s);
}

/* Every instruction set gives the same bits for the direct types (the arithmetic is specified
 * to the operation: qmatmul_priv.h), with few rows (rowdot) and many (gemm). */
static void test_isas_agree(void **state) {
    (void)state;
    /* n = 33: four-row decode groups and a leftover row; n = 32: groups only (Q4_K's few rows
     * then never go through gemm, whose laid-out activations are not made: the reference runs
     * on its own scratch, so nothing stale could stand in for them); k: fewer blocks than a
     * residue group (3), a whole number of groups plus two (18), plus one (33) */
    int m = 40;
    static const int ns[] = {33, 32};
    static const int ks[] = {96, 576, 1056}, ks_k[] = {256, 768, 1280}; /* K-quants: 256s */
    static const int ms[] = {1, 2, 3, 4, 5, 16, 17, 40};
    kn_qscratch_t *s = kn_qscratch_create(m, 1280), *s_ref = kn_qscratch_create(m, 1280);
    kn_isa_t saved = kn_isa();
    static const int types[] = {LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q5_0, LT_DTYPE_Q5_1,
                                LT_DTYPE_Q8_0, LT_DTYPE_Q4_K, LT_DTYPE_Q5_K, LT_DTYPE_Q6_K};
    for (size_t t = 0; t < sizeof types / sizeof *types; t++)
        for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++)
            for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
                int k = lt_dtype_block_elems(types[t]) == 32 ? ks[ki] : ks_k[ki], n = ns[ni];
                uint8_t *w = random_weights(types[t], n, k);
                float *x = random_acts(m, k), *ref = malloc((size_t)m * n * sizeof(float)),
                      *y = malloc((size_t)m * n * sizeof(float));
                for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++) {
                    int rows = ms[mi];
                    assert_int_equal(kn_set_isa(KN_ISA_SCALAR), LT_OK);
                    assert_int_equal(kn_qmatmul(ref, x, w, types[t], rows, n, k, s_ref), LT_OK);
                    for (int isa = KN_ISA_AVX2; isa < KN_ISA_COUNT; isa++) {
                        if (kn_set_isa((kn_isa_t)isa) != LT_OK) continue;
                        assert_int_equal(kn_qmatmul(y, x, w, types[t], rows, n, k, s), LT_OK);
                        if (memcmp(y, ref, (size_t)rows * n * sizeof(float)) != 0)
                            fail_msg("%s %s, n %d, k %d, %d rows: not bit-identical to scalar",
                                     kn_isa_name(isa), lt_dtype_name(types[t]), n, k, rows);
                    }
                }
                free(w);
                free(x);
                free(ref);
                free(y);
            }
    assert_int_equal(kn_set_isa(saved), LT_OK);
    kn_qscratch_destroy(&s);
    kn_qscratch_destroy(&s_ref);
}

/* kn_qmatmul_n (several weights of different types and sizes over the same x in one pass) gives
 * the same bits as kn_qmatmul on each, for few rows and many. */
static void test_several_in_one_pass(void **state) {
    (void)state;
    int k = 768, m_max = 20; /* three Q6_K blocks */
    static const int types[3] = {LT_DTYPE_Q4_1, LT_DTYPE_Q8_0, LT_DTYPE_Q6_K};
    static const int ns[3] = {37, 64, 5};
    kn_qscratch_t *s = kn_qscratch_create(m_max, k);
    float *x = random_acts(m_max, k);
    uint8_t *w[3];
    float *y[3], *ref[3];
    for (int i = 0; i < 3; i++) {
        w[i] = random_weights(types[i], ns[i], k);
        y[i] = malloc((size_t)m_max * ns[i] * sizeof(float));
        ref[i] = malloc((size_t)m_max * ns[i] * sizeof(float));
    }
    static const int ms[3] = {1, 5, 20};
    for (int t = 0; t < 3; t++) {
        int m = ms[t];
        kn_qmm_t mm[3];
        for (int i = 0; i < 3; i++) {
            assert_int_equal(kn_qmatmul(ref[i], x, w[i], types[i], m, ns[i], k, s), LT_OK);
            mm[i] = (kn_qmm_t){y[i], w[i], types[i], ns[i]};
        }
        assert_int_equal(kn_qmatmul_n(mm, 3, x, m, k, s), LT_OK);
        for (int i = 0; i < 3; i++)
            if (memcmp(y[i], ref[i], (size_t)m * ns[i] * sizeof(float)) != 0)
                fail_msg("%s, %d rows: one pass differs from its own product",
                         lt_dtype_name(types[i]), m);
    }
    kn_qmm_t bad = {y[0], w[0], types[0], 0};
    assert_int_equal(kn_qmatmul_n(&bad, 1, x, 1, k, s), LT_ERR_INVAL);
    assert_int_equal(kn_qmatmul_n(&bad, 0, x, 1, k, s), LT_ERR_INVAL);
    for (int i = 0; i < 3; i++) {
        free(w[i]);
        free(y[i]);
        free(ref[i]);
    }
    free(x);
    kn_qscratch_destroy(&s);
}

static void test_refuses_bad_arguments(void **state) {
    (void)state;
    kn_qscratch_t *s = kn_qscratch_create(4, 64);
    float x[4 * 128] = {0}, y[64] = {0};
    uint8_t w[4096] = {0};
    assert_int_equal(kn_qmatmul(y, x, w, LT_DTYPE_Q4_1, 5, 1, 64, s), LT_ERR_INVAL);  /* rows */
    assert_int_equal(kn_qmatmul(y, x, w, LT_DTYPE_Q4_1, 1, 1, 128, s), LT_ERR_INVAL); /* k */
    assert_int_equal(kn_qmatmul(y, x, w, LT_DTYPE_Q4_1, 1, 1, 48, s), LT_ERR_INVAL);  /* block */
    assert_int_equal(kn_qmatmul(y, x, w, LT_DTYPE_Q8_1, 1, 1, 32, s), LT_ERR_INVAL);  /* type */
    assert_int_equal(kn_qmatmul(y, x, w, LT_DTYPE_Q4_1, 1, 1, 32, NULL), LT_ERR_INVAL);
    assert_false(kn_qmatmul_supported(LT_DTYPE_Q4_K, 128));
    assert_true(kn_qmatmul_supported(LT_DTYPE_Q4_K, 256));
    assert_int_equal(kn_set_isa((kn_isa_t)99), LT_ERR_UNSUPPORTED);
    kn_qscratch_destroy(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type_every_isa),
        cmocka_unit_test(test_isas_agree),
        cmocka_unit_test(test_several_in_one_pass),
        cmocka_unit_test(test_refuses_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
