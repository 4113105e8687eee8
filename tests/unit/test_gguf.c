/*
 * test_gguf.c — the GGUF reader (worker/gguf.c) on files written here byte by byte: a valid file
 * must parse with every metadata type readable through the getters, and each kind of corruption
 * must be refused with the right error code and a one-line message naming the file and the
 * problem. Every prefix of a valid file is also opened, to show truncation anywhere is caught.
 * When the default model is present, its known facts are checked too.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kernels.h"
#include "lt.h"

/* ---- a tiny GGUF writer ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} gw_t;

static void gw_put(gw_t *b, const void *src, size_t len) {
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len) cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->n, src, len);
    b->n += len;
}

static void gw_u8(gw_t *b, uint8_t v) {
    gw_put(b, &v, 1);
}
static void gw_u32(gw_t *b, uint32_t v) {
    gw_put(b, &v, 4);
}
static void gw_u64(gw_t *b, uint64_t v) {
    gw_put(b, &v, 8);
}
static void gw_str(gw_t *b, const char *s) {
    gw_u64(b, strlen(s));
    gw_put(b, s, strlen(s));
}

static void gw_header(gw_t *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gw_put(b, "GGUF", 4);
    gw_u32(b, version);
    gw_u64(b, n_tensors);
    gw_u64(b, n_kv);
}

/* Key and type; the caller writes the value. */
static void gw_key(gw_t *b, const char *key, uint32_t type) {
    gw_str(b, key);
    gw_u32(b, type);
}

static void gw_kv_u32(gw_t *b, const char *key, uint32_t v) {
    gw_key(b, key, LT_GGUF_UINT32);
    gw_u32(b, v);
}

static void gw_kv_str(gw_t *b, const char *key, const char *v) {
    gw_key(b, key, LT_GGUF_STRING);
    gw_str(b, v);
}

static void gw_tensor(gw_t *b, const char *name, uint32_t n_dims, const uint64_t *dims,
                      uint32_t type, uint64_t offset) {
    gw_str(b, name);
    gw_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) gw_u64(b, dims[i]);
    gw_u32(b, type);
    gw_u64(b, offset);
}

static void gw_pad(gw_t *b, size_t align) {
    while (b->n % align) gw_u8(b, 0);
}

static void gw_free(gw_t *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- running the reader on bytes ---- */

static char g_dir[4096];

static int setup(void **state) {
    (void)state;
    const char *d = tu_tmpdir();
    assert_non_null(d);
    snprintf(g_dir, sizeof g_dir, "%s", d);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char path[4200];
    snprintf(path, sizeof path, "%s/t.gguf", g_dir);
    unlink(path);
    rmdir(g_dir);
    return 0;
}

static const char *tmp_path(void) {
    static char path[4200];
    snprintf(path, sizeof path, "%s/t.gguf", g_dir);
    return path;
}

/* Unlinks before writing: truncating an existing file makes ext4 flush it on close, which turns
 * the ~900 writes of the truncation test into seconds of disk waits. */
static const char *write_tmp(const void *data, size_t len) {
    const char *path = tmp_path();
    unlink(path);
    assert_int_equal(tu_write_file(path, data, len), 0);
    return path;
}

/* Opens len bytes of data and expects code with a one-line message holding the path and want. */
static void expect_fail_n(const gw_t *b, size_t len, int code, const char *want) {
    const char *path = write_tmp(b->p, len);
    char err[LT_ERR_LEN] = "";
    lt_gguf_t *g = (lt_gguf_t *)1;
    int rc = lt_gguf_open(path, &g, err);
    if (rc != code || g != NULL || strncmp(err, path, strlen(path)) != 0 ||
        strncmp(err + strlen(path), ": ", 2) != 0 || strchr(err, '\n') ||
        (want && !strstr(err, want)))
        fail_msg("len %zu: got rc %d (%s) err \"%s\"; want rc %d and \"%s\"", len, rc,
                 lt_err_str(rc), err, code, want ? want : "");
}

static void expect_fail(const gw_t *b, int code, const char *want) {
    expect_fail_n(b, b->n, code, want);
}

static lt_gguf_t *open_ok(const gw_t *b) {
    const char *path = write_tmp(b->p, b->n);
    char err[LT_ERR_LEN] = "";
    lt_gguf_t *g = NULL;
    int rc = lt_gguf_open(path, &g, err);
    if (rc != LT_OK) fail_msg("open failed: %d %s", rc, err);
    assert_non_null(g);
    return g;
}

/* ---- the valid file ---- */

/* Tensor payloads, in data-section order. */
static const uint64_t k_dims_a[] = {4, 2};        /* F32, 32 bytes */
static const uint64_t k_dims_b[] = {64};          /* Q8_0, 2 blocks, 68 bytes */
static const uint64_t k_dims_c[] = {32, 1, 1, 2}; /* Q4_1, 2 blocks, 40 bytes */

/* Byte offset of the tensor-info section and of the data section in the valid file. */
static size_t g_infos_at, g_data_at;

static void build_valid(gw_t *b, uint32_t version, uint32_t align) {
    memset(b, 0, sizeof *b);
    const int n_kv = 17 + (align ? 1 : 0);
    gw_header(b, version, 3, (uint64_t)n_kv);
    gw_kv_str(b, "general.architecture", "llama");
    gw_key(b, "t.u8", LT_GGUF_UINT8);
    gw_u8(b, 200);
    gw_key(b, "t.i8", LT_GGUF_INT8);
    gw_u8(b, (uint8_t)-5);
    gw_key(b, "t.u16", LT_GGUF_UINT16);
    uint16_t u16 = 60000;
    gw_put(b, &u16, 2);
    gw_key(b, "t.i16", LT_GGUF_INT16);
    int16_t i16 = -30000;
    gw_put(b, &i16, 2);
    gw_kv_u32(b, "t.u32", 4000000000u);
    gw_key(b, "t.i32", LT_GGUF_INT32);
    gw_u32(b, (uint32_t)-7);
    gw_key(b, "t.f32", LT_GGUF_FLOAT32);
    float f = 1.5e-5f;
    gw_put(b, &f, 4);
    gw_key(b, "t.bool", LT_GGUF_BOOL);
    gw_u8(b, 1);
    gw_key(b, "t.u64", LT_GGUF_UINT64);
    gw_u64(b, 1ull << 40);
    gw_key(b, "t.u64big", LT_GGUF_UINT64);
    gw_u64(b, UINT64_MAX);
    gw_key(b, "t.i64", LT_GGUF_INT64);
    gw_u64(b, (uint64_t)-123456789012LL);
    gw_key(b, "t.f64", LT_GGUF_FLOAT64);
    double d = 10000.25;
    gw_put(b, &d, 8);
    gw_kv_str(b, "t.empty", "");
    gw_key(b, "t.strs", LT_GGUF_ARRAY);
    gw_u32(b, LT_GGUF_STRING);
    gw_u64(b, 3);
    gw_str(b, "a");
    gw_str(b, "bc");
    gw_str(b, "");
    gw_key(b, "t.i32s", LT_GGUF_ARRAY);
    gw_u32(b, LT_GGUF_INT32);
    gw_u64(b, 3);
    gw_u32(b, 1);
    gw_u32(b, (uint32_t)-2);
    gw_u32(b, 3);
    gw_key(b, "t.none", LT_GGUF_ARRAY);
    gw_u32(b, LT_GGUF_FLOAT32);
    gw_u64(b, 0);
    if (align) gw_kv_u32(b, "general.alignment", align);
    size_t a = align ? align : 32;
    g_infos_at = b->n;
    gw_tensor(b, "a", 2, k_dims_a, LT_DTYPE_F32, 0);
    gw_tensor(b, "blk.0.b", 1, k_dims_b, LT_DTYPE_Q8_0, a > 32 ? a : 64);
    gw_tensor(b, "c", 4, k_dims_c, LT_DTYPE_Q4_1, a > 32 ? 2 * a : 160);
    gw_pad(b, a);
    g_data_at = b->n;
    /* Tensor bytes are their offset within the data section, mod 251: checkable positions. */
    size_t end = g_data_at + (a > 32 ? 2 * a : 160) + 40;
    while (b->n < end) gw_u8(b, (uint8_t)((b->n - g_data_at) % 251));
}

static void check_tensor(const lt_gguf_t *g, const char *name, int type, int n_dims,
                         const uint64_t *dims, size_t nbytes, size_t offset) {
    const lt_tensor_t *t = lt_gguf_find_tensor(g, name);
    assert_non_null(t);
    assert_string_equal(t->name, name);
    assert_int_equal(t->type, type);
    assert_int_equal(t->n_dims, n_dims);
    for (int i = 0; i < LT_MAX_DIMS; i++)
        assert_int_equal(t->ne[i], i < n_dims ? (int64_t)dims[i] : 1);
    assert_int_equal(t->nbytes, nbytes);
    const uint8_t *p = t->data;
    for (size_t i = 0; i < nbytes; i++) assert_int_equal(p[i], (offset + i) % 251);
}

static void check_valid(uint32_t version, uint32_t align) {
    gw_t b;
    build_valid(&b, version, align);
    lt_gguf_t *g = open_ok(&b);
    assert_int_equal(lt_gguf_version(g), version);
    assert_string_equal(lt_gguf_path(g), tmp_path());
    assert_int_equal(lt_gguf_n_kv(g), 17 + (align ? 1 : 0));
    assert_string_equal(lt_gguf_kv_key(g, 0), "general.architecture");
    assert_int_equal(lt_gguf_kv_type(g, 0), LT_GGUF_STRING);
    assert_int_equal(lt_gguf_kv_type(g, lt_gguf_find_key(g, "t.strs")), LT_GGUF_ARRAY);
    assert_null(lt_gguf_kv_key(g, -1));
    assert_null(lt_gguf_kv_key(g, 99));
    assert_int_equal(lt_gguf_kv_type(g, 99), -1);
    assert_int_equal(lt_gguf_find_key(g, "t.i16"), 4);
    assert_int_equal(lt_gguf_find_key(g, "t.nope"), -1);
    for (int i = 0; i < lt_gguf_n_kv(g); i++)
        assert_int_equal(lt_gguf_find_key(g, lt_gguf_kv_key(g, i)), i);

    const char *s;
    size_t len;
    assert_int_equal(lt_gguf_get_str(g, "general.architecture", &s, &len), LT_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(s, "llama", 5);
    assert_int_equal(lt_gguf_get_str(g, "t.empty", &s, &len), LT_OK);
    assert_int_equal(len, 0);

    uint32_t u;
    int64_t i64;
    float fv;
    bool bv;
    assert_int_equal(lt_gguf_get_u32(g, "t.u8", &u), LT_OK);
    assert_int_equal(u, 200);
    assert_int_equal(lt_gguf_get_u32(g, "t.u16", &u), LT_OK);
    assert_int_equal(u, 60000);
    assert_int_equal(lt_gguf_get_u32(g, "t.u32", &u), LT_OK);
    assert_int_equal(u, 4000000000u);
    assert_int_equal(lt_gguf_get_u32(g, "t.u64", &u), LT_ERR_FORMAT); /* 2^40 does not fit */
    assert_int_equal(lt_gguf_get_u32(g, "t.i8", &u), LT_ERR_FORMAT);  /* negative */
    assert_int_equal(lt_gguf_get_u32(g, "t.f32", &u), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_u32(g, "t.bool", &u), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_u32(g, "general.architecture", &u), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_u32(g, "t.nope", &u), LT_ERR_NOTFOUND);
    assert_int_equal(lt_gguf_get_i64(g, "t.i8", &i64), LT_OK);
    assert_int_equal(i64, -5);
    assert_int_equal(lt_gguf_get_i64(g, "t.i16", &i64), LT_OK);
    assert_int_equal(i64, -30000);
    assert_int_equal(lt_gguf_get_i64(g, "t.i32", &i64), LT_OK);
    assert_int_equal(i64, -7);
    assert_int_equal(lt_gguf_get_i64(g, "t.i64", &i64), LT_OK);
    assert_true(i64 == -123456789012LL);
    assert_int_equal(lt_gguf_get_i64(g, "t.u64", &i64), LT_OK);
    assert_true(i64 == 1LL << 40);
    assert_int_equal(lt_gguf_get_i64(g, "t.u64big", &i64), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_i64(g, "t.f64", &i64), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_f32(g, "t.f32", &fv), LT_OK);
    assert_true(fv == 1.5e-5f);
    assert_int_equal(lt_gguf_get_f32(g, "t.f64", &fv), LT_OK);
    assert_true(fv == 10000.25f);
    assert_int_equal(lt_gguf_get_f32(g, "t.i32", &fv), LT_OK);
    assert_true(fv == -7.0f);
    assert_int_equal(lt_gguf_get_f32(g, "t.u32", &fv), LT_OK);
    assert_true(fv == 4e9f);
    assert_int_equal(lt_gguf_get_f32(g, "t.bool", &fv), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_f32(g, "t.strs", &fv), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_bool(g, "t.bool", &bv), LT_OK);
    assert_true(bv);
    assert_int_equal(lt_gguf_get_bool(g, "t.u8", &bv), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_bool(g, "t.nope", &bv), LT_ERR_NOTFOUND);
    assert_int_equal(lt_gguf_get_str(g, "t.u32", &s, &len), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_str(g, "t.nope", &s, &len), LT_ERR_NOTFOUND);

    int et;
    uint64_t n;
    const void *data;
    assert_int_equal(lt_gguf_get_arr(g, "t.strs", &et, &n, &data), LT_OK);
    assert_int_equal(et, LT_GGUF_STRING);
    assert_int_equal(n, 3);
    assert_null(data);
    static const char *want[] = {"a", "bc", ""};
    for (uint64_t i = 0; i < 3; i++) {
        assert_int_equal(lt_gguf_get_arr_str(g, "t.strs", i, &s, &len), LT_OK);
        assert_int_equal(len, strlen(want[i]));
        assert_memory_equal(s, want[i], len);
    }
    assert_int_equal(lt_gguf_get_arr_str(g, "t.strs", 3, &s, &len), LT_ERR_RANGE);
    assert_int_equal(lt_gguf_get_arr_str(g, "t.i32s", 0, &s, &len), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_arr_str(g, "t.u32", 0, &s, &len), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_arr_str(g, "t.nope", 0, &s, &len), LT_ERR_NOTFOUND);
    assert_int_equal(lt_gguf_get_arr(g, "t.i32s", &et, &n, &data), LT_OK);
    assert_int_equal(et, LT_GGUF_INT32);
    assert_int_equal(n, 3);
    int32_t iv[3];
    memcpy(iv, data, sizeof iv);
    assert_int_equal(iv[0], 1);
    assert_int_equal(iv[1], -2);
    assert_int_equal(iv[2], 3);
    assert_int_equal(lt_gguf_get_arr(g, "t.none", &et, &n, &data), LT_OK);
    assert_int_equal(et, LT_GGUF_FLOAT32);
    assert_int_equal(n, 0);
    assert_int_equal(lt_gguf_get_arr(g, "t.u32", &et, &n, &data), LT_ERR_FORMAT);
    assert_int_equal(lt_gguf_get_arr(g, "t.nope", &et, &n, &data), LT_ERR_NOTFOUND);

    size_t a = align ? align : 32;
    assert_int_equal(lt_gguf_n_tensors(g), 3);
    assert_string_equal(lt_gguf_tensor(g, 0)->name, "a");
    assert_string_equal(lt_gguf_tensor(g, 1)->name, "blk.0.b");
    assert_string_equal(lt_gguf_tensor(g, 2)->name, "c");
    assert_null(lt_gguf_tensor(g, 3));
    assert_null(lt_gguf_tensor(g, -1));
    assert_null(lt_gguf_find_tensor(g, "blk.0"));
    check_tensor(g, "a", LT_DTYPE_F32, 2, k_dims_a, 32, 0);
    check_tensor(g, "blk.0.b", LT_DTYPE_Q8_0, 1, k_dims_b, 68, a > 32 ? a : 64);
    check_tensor(g, "c", LT_DTYPE_Q4_1, 4, k_dims_c, 40, a > 32 ? 2 * a : 160);
    assert_int_equal(lt_tensor_nelems(lt_gguf_find_tensor(g, "c")), 64);
    assert_ptr_equal(lt_gguf_tensor(g, 0)->data, lt_gguf_find_tensor(g, "a")->data);

    lt_gguf_close(&g);
    assert_null(g);
    lt_gguf_close(&g); /* closing twice is harmless */
    gw_free(&b);
}

static void test_valid(void **state) {
    (void)state;
    check_valid(3, 0);   /* default alignment 32 */
    check_valid(2, 0);   /* version 2 reads the same */
    check_valid(3, 64);  /* general.alignment */
    check_valid(3, 256); /* padding larger than the default */
}

/* A file with no tensors and no metadata is valid. */
static void test_empty_model(void **state) {
    (void)state;
    gw_t b = {0};
    gw_header(&b, 3, 0, 0);
    lt_gguf_t *g = open_ok(&b);
    assert_int_equal(lt_gguf_n_kv(g), 0);
    assert_int_equal(lt_gguf_n_tensors(g), 0);
    assert_int_equal(lt_gguf_find_key(g, "x"), -1);
    assert_null(lt_gguf_find_tensor(g, "x"));
    lt_gguf_close(&g);
    gw_free(&b);
}

/* ---- bad files ---- */

static void test_missing_file(void **state) {
    (void)state;
    char path[4200], err[LT_ERR_LEN];
    snprintf(path, sizeof path, "%s/absent.gguf", g_dir);
    lt_gguf_t *g = NULL;
    assert_int_equal(lt_gguf_open(path, &g, err), LT_ERR_IO);
    assert_null(g);
    assert_non_null(strstr(err, path));
}

static void test_bad_header(void **state) {
    (void)state;
    gw_t b;
    build_valid(&b, 3, 0);
    memcpy(b.p, "GGUX", 4);
    expect_fail(&b, LT_ERR_FORMAT, "bad magic");
    memcpy(b.p, "GGUF", 4);

    const uint32_t versions[] = {0, 1, 4, 0xffffffffu};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        memcpy(b.p + 4, &versions[i], 4);
        expect_fail(&b, LT_ERR_UNSUPPORTED, "version");
    }
    uint32_t be3 = 0x03000000u;
    memcpy(b.p + 4, &be3, 4);
    expect_fail(&b, LT_ERR_UNSUPPORTED, "big-endian");
    gw_free(&b);

    build_valid(&b, 3, 0);
    expect_fail_n(&b, 0, LT_ERR_FORMAT, "truncated header");
    expect_fail_n(&b, 3, LT_ERR_FORMAT, "truncated header");
    expect_fail_n(&b, 8, LT_ERR_FORMAT, "truncated header");
    expect_fail_n(&b, 23, LT_ERR_FORMAT, "truncated header");
    gw_free(&b);
}

static void test_huge_counts(void **state) {
    (void)state;
    gw_t b = {0};
    gw_header(&b, 3, 1ull << 62, 0);
    expect_fail(&b, LT_ERR_FORMAT, "tensor count");
    gw_free(&b);
    gw_header(&b, 3, 0, UINT64_MAX);
    expect_fail(&b, LT_ERR_FORMAT, "metadata count");
    gw_free(&b);
    gw_header(&b, 3, (1 << 18) + 1, 0);
    expect_fail(&b, LT_ERR_FORMAT, "tensor count 262145 is too large");
    gw_free(&b);
    gw_header(&b, 3, 0, (1 << 16) + 1);
    expect_fail(&b, LT_ERR_FORMAT, "metadata count 65537 is too large");
    gw_free(&b);
    /* Within the limits but more than the file holds. */
    gw_header(&b, 3, 1000, 0);
    expect_fail(&b, LT_ERR_FORMAT, "truncated in tensor infos (tensor 0 of 1000)");
    gw_free(&b);

    gw_header(&b, 3, 0, 1);
    gw_key(&b, "arr", LT_GGUF_ARRAY);
    gw_u32(&b, LT_GGUF_UINT64);
    gw_u64(&b, 1ull << 61); /* 2^61 * 8 overflows 64 bits */
    gw_u64(&b, 0);
    expect_fail(&b, LT_ERR_FORMAT, "runs past end of file");
    gw_free(&b);

    gw_header(&b, 3, 0, 1);
    gw_key(&b, "strs", LT_GGUF_ARRAY);
    gw_u32(&b, LT_GGUF_STRING);
    gw_u64(&b, UINT64_MAX);
    gw_str(&b, "x");
    expect_fail(&b, LT_ERR_FORMAT, "runs past end of file");
    gw_free(&b);
}

/* Every proper prefix of a valid file is refused as malformed, whatever field it cuts. */
static void test_truncated_everywhere(void **state) {
    (void)state;
    gw_t b;
    build_valid(&b, 3, 0);
    for (size_t len = 0; len < b.n; len++) expect_fail_n(&b, len, LT_ERR_FORMAT, NULL);
    /* Cuts at chosen fields give messages saying where. */
    expect_fail_n(&b, 24 + 4, LT_ERR_FORMAT, "truncated in metadata");          /* key length */
    expect_fail_n(&b, 24 + 8 + 20 + 2, LT_ERR_FORMAT, "truncated in metadata"); /* type */
    expect_fail_n(&b, 24 + 8 + 20 + 4 + 3, LT_ERR_FORMAT, "truncated in metadata");
    expect_fail_n(&b, 24 + 8 + 10, LT_ERR_FORMAT, "runs past end of file"); /* key bytes */
    expect_fail_n(&b, g_infos_at + 3, LT_ERR_FORMAT, "truncated in tensor infos");
    expect_fail_n(&b, g_infos_at + 8 + 1 + 2, LT_ERR_FORMAT, "truncated in tensor infos");
    expect_fail_n(&b, g_infos_at + 8 + 1 + 4 + 12, LT_ERR_FORMAT, "truncated in tensor infos");
    expect_fail_n(&b, g_data_at, LT_ERR_FORMAT, "extends past end of file");
    expect_fail_n(&b, b.n - 1, LT_ERR_FORMAT, "'c' extends past end of file");
    gw_free(&b);
}

static void test_bad_metadata(void **state) {
    (void)state;
    gw_t b = {0};
    /* String length past the end of the file. */
    gw_header(&b, 3, 0, 1);
    gw_u64(&b, 1000000);
    gw_put(&b, "key", 3);
    expect_fail(&b, LT_ERR_FORMAT, "string length 1000000 runs past end of file");
    gw_free(&b);

    gw_header(&b, 3, 0, 1);
    gw_key(&b, "s", LT_GGUF_STRING);
    gw_u64(&b, UINT64_MAX);
    gw_u64(&b, 0);
    expect_fail(&b, LT_ERR_FORMAT, "runs past end of file");
    gw_free(&b);

    gw_header(&b, 3, 0, 2);
    gw_kv_u32(&b, "k", 1);
    gw_kv_u32(&b, "k", 2);
    expect_fail(&b, LT_ERR_FORMAT, "duplicate key 'k'");
    gw_free(&b);

    gw_header(&b, 3, 0, 1);
    gw_key(&b, "k", 13);
    gw_u64(&b, 0);
    expect_fail(&b, LT_ERR_FORMAT, "unknown value type 13");
    gw_free(&b);

    gw_header(&b, 3, 0, 1);
    gw_key(&b, "nest", LT_GGUF_ARRAY);
    gw_u32(&b, LT_GGUF_ARRAY);
    gw_u64(&b, 1);
    gw_u32(&b, LT_GGUF_UINT8);
    gw_u64(&b, 1);
    gw_u8(&b, 0);
    expect_fail(&b, LT_ERR_UNSUPPORTED, "key 'nest': nested arrays are not supported");
    gw_free(&b);

    gw_header(&b, 3, 0, 1);
    gw_key(&b, "arr", LT_GGUF_ARRAY);
    gw_u32(&b, 77);
    gw_u64(&b, 0);
    expect_fail(&b, LT_ERR_FORMAT, "unknown element type 77");
    gw_free(&b);

    gw_header(&b, 3, 0, 1);
    gw_key(&b, "b", LT_GGUF_BOOL);
    gw_u8(&b, 2);
    expect_fail(&b, LT_ERR_FORMAT, "bool");
    gw_free(&b);

    gw_header(&b, 3, 0, 1);
    gw_u64(&b, 0);
    gw_u32(&b, LT_GGUF_UINT8);
    gw_u8(&b, 0);
    expect_fail(&b, LT_ERR_FORMAT, "empty key");
    gw_free(&b);

    gw_header(&b, 3, 0, 1);
    gw_u64(&b, 3);
    gw_put(&b, "a\0b", 3);
    gw_u32(&b, LT_GGUF_UINT8);
    gw_u8(&b, 0);
    expect_fail(&b, LT_ERR_FORMAT, "NUL");
    gw_free(&b);

    /* A control character in a key is shown as '?', keeping the message on one line. */
    gw_header(&b, 3, 0, 2);
    gw_kv_u32(&b, "a\nb", 1);
    gw_kv_u32(&b, "a\nb", 1);
    expect_fail(&b, LT_ERR_FORMAT, "duplicate key 'a?b'");
    gw_free(&b);

    const uint32_t bad_align[] = {0, 3, 48};
    for (size_t i = 0; i < 3; i++) {
        gw_header(&b, 3, 0, 1);
        gw_kv_u32(&b, "general.alignment", bad_align[i]);
        expect_fail(&b, LT_ERR_FORMAT, "general.alignment");
        gw_free(&b);
    }
    gw_header(&b, 3, 0, 1);
    gw_kv_str(&b, "general.alignment", "32");
    expect_fail(&b, LT_ERR_FORMAT, "general.alignment is not");
    gw_free(&b);
}

/* One tensor "t" after the header; offset into a data section of data_len bytes. */
static void one_tensor(gw_t *b, uint32_t n_dims, const uint64_t *dims, uint32_t type,
                       uint64_t offset, size_t data_len) {
    memset(b, 0, sizeof *b);
    gw_header(b, 3, 1, 0);
    gw_tensor(b, "t", n_dims, dims, type, offset);
    gw_pad(b, 32);
    for (size_t i = 0; i < data_len; i++) gw_u8(b, 0);
}

static void test_bad_tensors(void **state) {
    (void)state;
    gw_t b;
    const uint64_t d64[] = {64, 1, 1, 1, 1};
    one_tensor(&b, 1, d64, LT_DTYPE_F32, 0, 256);
    lt_gguf_t *g = open_ok(&b); /* the baseline is valid */
    lt_gguf_close(&g);
    gw_free(&b);

    one_tensor(&b, 1, d64, LT_DTYPE_F32, 0, 255);
    expect_fail(&b, LT_ERR_FORMAT, "tensor 't' extends past end of file");
    gw_free(&b);
    one_tensor(&b, 1, d64, LT_DTYPE_F32, 1ull << 40, 256);
    expect_fail(&b, LT_ERR_FORMAT, "tensor 't' extends past end of file");
    gw_free(&b);
    one_tensor(&b, 1, d64, LT_DTYPE_F32, UINT64_MAX - 31, 256); /* offset + size overflows */
    expect_fail(&b, LT_ERR_FORMAT, "tensor 't' extends past end of file");
    gw_free(&b);

    one_tensor(&b, 1, d64, LT_DTYPE_F32, 8, 512);
    expect_fail(&b, LT_ERR_FORMAT, "tensor 't' offset 8 is not a multiple of the alignment 32");
    gw_free(&b);

    one_tensor(&b, 1, d64, 99, 0, 256);
    expect_fail(&b, LT_ERR_UNSUPPORTED, "tensor 't' has unknown type 99");
    gw_free(&b);
    one_tensor(&b, 1, d64, LT_DTYPE_Q8_K, 0, 256);
    expect_fail(&b, LT_ERR_UNSUPPORTED, "tensor 't' has unsupported type Q8_K");
    gw_free(&b);

    one_tensor(&b, 0, d64, LT_DTYPE_F32, 0, 256);
    expect_fail(&b, LT_ERR_FORMAT, "tensor 't' has 0 dimensions");
    gw_free(&b);
    one_tensor(&b, 5, d64, LT_DTYPE_F32, 0, 256);
    expect_fail(&b, LT_ERR_FORMAT, "tensor 't' has 5 dimensions");
    gw_free(&b);

    const uint64_t zero[] = {64, 0};
    one_tensor(&b, 2, zero, LT_DTYPE_F32, 0, 256);
    expect_fail(&b, LT_ERR_FORMAT, "invalid dimension ne[1] = 0");
    gw_free(&b);
    const uint64_t neg[] = {1ull << 63};
    one_tensor(&b, 1, neg, LT_DTYPE_F32, 0, 256);
    expect_fail(&b, LT_ERR_FORMAT, "invalid dimension");
    gw_free(&b);
    const uint64_t ovf[] = {1ull << 32, 1ull << 32};
    one_tensor(&b, 2, ovf, LT_DTYPE_F32, 0, 256);
    expect_fail(&b, LT_ERR_FORMAT, "element count overflows");
    gw_free(&b);
    const uint64_t big[] = {1ull << 62};
    one_tensor(&b, 1, big, LT_DTYPE_F32, 0, 256); /* 2^62 elements * 4 bytes overflows */
    expect_fail(&b, LT_ERR_FORMAT, "too large");
    gw_free(&b);

    const uint64_t odd[] = {48, 2};
    one_tensor(&b, 2, odd, LT_DTYPE_Q4_1, 0, 256);
    expect_fail(&b, LT_ERR_FORMAT, "ne[0] = 48 is not a multiple of the Q4_1 block size 32");
    gw_free(&b);

    memset(&b, 0, sizeof b);
    gw_header(&b, 3, 2, 0);
    gw_tensor(&b, "w", 1, d64, LT_DTYPE_F32, 0);
    gw_tensor(&b, "w", 1, d64, LT_DTYPE_F32, 256);
    gw_pad(&b, 32);
    for (int i = 0; i < 512; i++) gw_u8(&b, 0);
    expect_fail(&b, LT_ERR_FORMAT, "duplicate tensor name 'w'");
    gw_free(&b);

    memset(&b, 0, sizeof b);
    gw_header(&b, 3, 1, 0);
    gw_str(&b, "");
    gw_u32(&b, 1);
    gw_u64(&b, 64);
    gw_u32(&b, LT_DTYPE_F32);
    gw_u64(&b, 0);
    expect_fail(&b, LT_ERR_FORMAT, "empty tensor name");
    gw_free(&b);
}

/* ---- the default model ---- */

static void test_default_model(void **state) {
    (void)state;
    const char *path = tu_default_model();
    if (!path) {
        skip();
        return;
    }
    char err[LT_ERR_LEN];
    lt_gguf_t *g = NULL;
    int rc = lt_gguf_open(path, &g, err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(lt_gguf_version(g), 3);
    const char *s;
    size_t len;
    assert_int_equal(lt_gguf_get_str(g, "general.architecture", &s, &len), LT_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(s, "llama", 5);
    assert_int_equal(lt_gguf_n_tensors(g), 272);
    const lt_tensor_t *t = lt_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, LT_DTYPE_Q8_0);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 576);
    assert_int_equal(t->ne[1], 49152);
    assert_int_equal(t->nbytes, 576 * 49152 / 32 * 34);
    uint32_t u;
    assert_int_equal(lt_gguf_get_u32(g, "llama.embedding_length", &u), LT_OK);
    assert_int_equal(u, 576);

    int et;
    uint64_t n;
    const void *data;
    assert_int_equal(lt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), LT_OK);
    assert_int_equal(et, LT_GGUF_STRING);
    assert_int_equal(n, 49152);
    for (uint64_t i = 0; i < n; i++)
        assert_int_equal(lt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &len), LT_OK);

    /* Every tensor is a known type and dequantizes; the first row of each is finite. */
    float row[1024];
    for (int i = 0; i < lt_gguf_n_tensors(g); i++) {
        const lt_tensor_t *ti = lt_gguf_tensor(g, i);
        assert_true(lt_dtype_supported(ti->type));
        int64_t ne0 = ti->ne[0] <= 1024 ? ti->ne[0] : 1024;
        assert_int_equal(kn_dequantize(ti->type, ti->data, row, ne0), LT_OK);
        for (int64_t j = 0; j < ne0; j++)
            assert_true(row[j] == row[j] && row[j] > -1e30f && row[j] < 1e30f);
    }
    lt_gguf_close(&g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),         cmocka_unit_test(test_empty_model),
        cmocka_unit_test(test_missing_file),  cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_huge_counts),   cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_bad_metadata),  cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_default_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
