/*
 * test_dequant.c — checks kernels/cpu/dtype.c against the gguf Python package: each fixture in
 * tests/fixtures/dequant/ (written by tools/gen_dequant_fixtures.py) holds raw blocks and the
 * float32 values gguf decodes them to. Also checks the block geometry table and error returns.
 *
 * Every value must match bit for bit (NaN matches NaN): the decoders form their products in the
 * reference's order, and where an offset is added the product is exact (see dtype.c), so neither
 * operation order nor a fused multiply-add leaves room for a difference.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "lt.h"

/* ---- fixture loading ---- */

#define FIXTURE_MAGIC 0x51445446u

typedef struct {
    int type;
    int64_t n_elems;
    size_t n_bytes;
    uint8_t *raw;
    float *ref;
    char *buf; /* owns raw/ref storage */
} fixture_t;

static uint32_t rd_u32(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd_u64(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Loads tests/fixtures/dequant/<name>.bin; returns 0 or -1 if the file is absent. */
static int fixture_load(const char *name, fixture_t *fx) {
    char rel[64], err[LT_ERR_LEN];
    snprintf(rel, sizeof rel, "dequant/%s.bin", name);
    size_t len;
    if (lt_read_file(tu_fixture(rel), &fx->buf, &len, err) != 0) return -1;
    assert_true(len >= 24);
    assert_int_equal(rd_u32(fx->buf), FIXTURE_MAGIC);
    fx->type = (int)rd_u32(fx->buf + 4);
    fx->n_elems = (int64_t)rd_u64(fx->buf + 8);
    fx->n_bytes = (size_t)rd_u64(fx->buf + 16);
    assert_int_equal(len, 24 + fx->n_bytes + 4 * (size_t)fx->n_elems);
    fx->raw = malloc(fx->n_bytes);
    fx->ref = malloc(4 * (size_t)fx->n_elems);
    assert_non_null(fx->raw);
    assert_non_null(fx->ref);
    memcpy(fx->raw, fx->buf + 24, fx->n_bytes);
    memcpy(fx->ref, fx->buf + 24 + fx->n_bytes, 4 * (size_t)fx->n_elems);
    return 0;
}

static void fixture_free(fixture_t *fx) {
    free(fx->raw);
    free(fx->ref);
    free(fx->buf);
    memset(fx, 0, sizeof *fx);
}

/* ---- comparison ---- */

static bool same_bits(float a, float b) {
    if (isnan(a) && isnan(b)) return true;
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Compares got with the reference over one block of be elements starting at element off. */
static void check_block(const fixture_t *fx, const float *got, int64_t off, int be) {
    const float *ref = fx->ref + off;
    for (int i = 0; i < be; i++) {
        if (!same_bits(got[i], ref[i])) {
            uint32_t gb, rb;
            memcpy(&gb, &got[i], 4);
            memcpy(&rb, &ref[i], 4);
            fail_msg("%s element %lld: got %.9g (0x%08x), want %.9g (0x%08x)",
                     lt_dtype_name(fx->type), (long long)(off + i), (double)got[i], gb,
                     (double)ref[i], rb);
        }
    }
}

static const char *k_fixture_names[] = {"F32",  "F16",  "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                                        "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
#define N_FIXTURES (int)(sizeof k_fixture_names / sizeof k_fixture_names[0])

/* ---- tests: values ---- */

static void check_fixture(const char *name) {
    fixture_t fx;
    if (fixture_load(name, &fx) != 0) fail_msg("fixture dequant/%s.bin missing", name);
    assert_string_equal(lt_dtype_name(fx.type), name);
    assert_true(lt_dtype_supported(fx.type));
    assert_int_equal(lt_dtype_nbytes(fx.type, fx.n_elems), (int64_t)fx.n_bytes);

    const int be = lt_dtype_block_elems(fx.type);
    const size_t bb = lt_dtype_block_bytes(fx.type);
    float *out = malloc(4 * (size_t)fx.n_elems);
    assert_non_null(out);

    /* Block by block, each into its own slice. */
    for (int64_t b = 0; b < fx.n_elems / be; b++) {
        assert_int_equal(kn_dequantize(fx.type, fx.raw + b * bb, out + b * be, be), LT_OK);
        check_block(&fx, out + b * be, b * be, be);
    }

    /* All at once, from a source shifted by one byte: blocks in a GGUF tensor need not be
     * aligned, and the decoder must not assume they are. */
    uint8_t *shifted = malloc(fx.n_bytes + 1);
    assert_non_null(shifted);
    memcpy(shifted + 1, fx.raw, fx.n_bytes);
    memset(out, 0xff, 4 * (size_t)fx.n_elems);
    assert_int_equal(kn_dequantize(fx.type, shifted + 1, out, fx.n_elems), LT_OK);
    for (int64_t b = 0; b < fx.n_elems / be; b++) check_block(&fx, out + b * be, b * be, be);

    free(shifted);
    free(out);
    fixture_free(&fx);
}

static void test_fixtures(void **state) {
    (void)state;
    for (int i = 0; i < N_FIXTURES; i++) check_fixture(k_fixture_names[i]);
}

/* Every type we claim to support must have a fixture: support is only claimed once tested. */
static void test_every_supported_type_has_fixture(void **state) {
    (void)state;
    for (int t = -2; t < 64; t++) {
        if (!lt_dtype_supported(t)) continue;
        bool found = false;
        for (int i = 0; i < N_FIXTURES; i++)
            found |= strcmp(lt_dtype_name(t), k_fixture_names[i]) == 0;
        if (!found) fail_msg("type %d (%s) is supported but has no fixture", t, lt_dtype_name(t));
    }
}

/* ---- tests: geometry and errors ---- */

static void test_geometry(void **state) {
    (void)state;
    static const struct {
        int type;
        const char *name;
        int elems;
        size_t bytes;
    } want[] = {
        {LT_DTYPE_F32, "F32", 1, 4},       {LT_DTYPE_F16, "F16", 1, 2},
        {LT_DTYPE_BF16, "BF16", 1, 2},     {LT_DTYPE_Q4_0, "Q4_0", 32, 18},
        {LT_DTYPE_Q4_1, "Q4_1", 32, 20},   {LT_DTYPE_Q5_0, "Q5_0", 32, 22},
        {LT_DTYPE_Q5_1, "Q5_1", 32, 24},   {LT_DTYPE_Q8_0, "Q8_0", 32, 34},
        {LT_DTYPE_Q2_K, "Q2_K", 256, 84},  {LT_DTYPE_Q3_K, "Q3_K", 256, 110},
        {LT_DTYPE_Q4_K, "Q4_K", 256, 144}, {LT_DTYPE_Q5_K, "Q5_K", 256, 176},
        {LT_DTYPE_Q6_K, "Q6_K", 256, 210},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_true(lt_dtype_supported(want[i].type));
        assert_string_equal(lt_dtype_name(want[i].type), want[i].name);
        assert_int_equal(lt_dtype_block_elems(want[i].type), want[i].elems);
        assert_int_equal(lt_dtype_block_bytes(want[i].type), want[i].bytes);
        assert_int_equal(lt_dtype_nbytes(want[i].type, 0), 0);
        assert_int_equal(lt_dtype_nbytes(want[i].type, 3 * want[i].elems),
                         (int64_t)(3 * want[i].bytes));
        if (want[i].elems > 1)
            assert_int_equal(lt_dtype_nbytes(want[i].type, want[i].elems + 1), -1);
        assert_int_equal(lt_dtype_nbytes(want[i].type, -want[i].elems), -1);
    }
    /* Overflow of n / block * bytes. */
    assert_int_equal(lt_dtype_nbytes(LT_DTYPE_F32, INT64_MAX), -1);
    assert_int_equal(lt_dtype_nbytes(LT_DTYPE_Q8_0, (INT64_MAX / 32) * 32), -1);
    /* Model-sized tensor: token_embd of SmolLM2-135M in Q8_0. */
    assert_int_equal(lt_dtype_nbytes(LT_DTYPE_Q8_0, 576LL * 49152), 576LL * 49152 / 32 * 34);

    /* Known ids we do not decode, and ids that are not types at all. */
    static const int unsupported[] = {LT_DTYPE_Q8_1, LT_DTYPE_Q8_K, 4, 5, 16, 29, 31, 99, -1,
                                      1 << 30};
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        int t = unsupported[i];
        assert_false(lt_dtype_supported(t));
        assert_int_equal(lt_dtype_block_elems(t), 0);
        assert_int_equal(lt_dtype_block_bytes(t), 0);
        assert_int_equal(lt_dtype_nbytes(t, 256), -1);
    }
    assert_string_equal(lt_dtype_name(LT_DTYPE_Q8_1), "Q8_1");
    assert_string_equal(lt_dtype_name(LT_DTYPE_Q8_K), "Q8_K");
    assert_string_equal(lt_dtype_name(4), "unknown");
    assert_string_equal(lt_dtype_name(99), "unknown");
    assert_string_equal(lt_dtype_name(-1), "unknown");
}

static void test_errors(void **state) {
    (void)state;
    uint8_t src[1024] = {0};
    float dst[512];
    assert_int_equal(kn_dequantize(LT_DTYPE_Q8_1, src, dst, 32), LT_ERR_UNSUPPORTED);
    assert_int_equal(kn_dequantize(LT_DTYPE_Q8_K, src, dst, 256), LT_ERR_UNSUPPORTED);
    assert_int_equal(kn_dequantize(99, src, dst, 32), LT_ERR_UNSUPPORTED);
    assert_int_equal(kn_dequantize(-3, src, dst, 32), LT_ERR_UNSUPPORTED);
    assert_int_equal(kn_dequantize(LT_DTYPE_Q4_1, src, dst, 31), LT_ERR_INVAL);
    assert_int_equal(kn_dequantize(LT_DTYPE_Q4_K, src, dst, 32), LT_ERR_INVAL);
    assert_int_equal(kn_dequantize(LT_DTYPE_Q6_K, src, dst, 257), LT_ERR_INVAL);
    assert_int_equal(kn_dequantize(LT_DTYPE_F32, src, dst, -1), LT_ERR_INVAL);
    assert_int_equal(kn_dequantize(LT_DTYPE_Q8_0, NULL, dst, 32), LT_ERR_INVAL);
    assert_int_equal(kn_dequantize(LT_DTYPE_Q8_0, src, NULL, 32), LT_ERR_INVAL);
    /* Zero elements is a valid no-op, even without buffers. */
    assert_int_equal(kn_dequantize(LT_DTYPE_Q8_0, NULL, NULL, 0), LT_OK);

    /* All-zero blocks decode to zeros (zero scales). */
    for (int t = 0; t < 64; t++) {
        if (!lt_dtype_supported(t)) continue;
        int be = lt_dtype_block_elems(t);
        int64_t n = be == 1 ? 256 : 2 * be;
        memset(dst, 0x7f, sizeof dst);
        assert_int_equal(kn_dequantize(t, src, dst, n), LT_OK);
        for (int64_t i = 0; i < n; i++) assert_true(dst[i] == 0.0f);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_every_supported_type_has_fixture),
        cmocka_unit_test(test_geometry),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
