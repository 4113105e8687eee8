/*
 * test_safetensors.c — the safetensors reader against files written here byte by byte: a valid
 * file in every supported dtype and rank, sharded and unsharded directories, and each way a file
 * or directory can be wrong. Every error must carry the right code and name the offending path,
 * and corrupted bytes must never crash the reader.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels.h"
#include "lt.h"
#include "safetensors.h"

/* ---- helpers ---- */

/* Every test works in a fresh subdirectory of one temporary directory, removed at the end. */
static char g_base[4096];
static char g_dir[4096];

static const char *new_dir(void) {
    static int n;
    if (snprintf(g_dir, sizeof g_dir, "%s/%d", g_base, n++) >= (int)sizeof g_dir) return NULL;
    return mkdir(g_dir, 0700) == 0 ? g_dir : NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    (void)state;
    const char *t = tu_tmpdir();
    if (!t) return -1;
    snprintf(g_base, sizeof g_base, "%s", t);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return nftw(g_base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes a safetensors file: header length (u64 LE), header text, then data. */
static void write_st(const char *path, const char *header, const void *data, size_t len) {
    size_t hl = strlen(header);
    size_t total = 8 + hl + len;
    uint8_t *buf = malloc(total ? total : 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (len) memcpy(buf + 8 + hl, data, len);
    assert_int_equal(tu_write_file(path, buf, total), 0);
    free(buf);
}

static char g_path[4096];

static const char *join(const char *dir, const char *name) {
    if (snprintf(g_path, sizeof g_path, "%s/%s", dir, name) >= (int)sizeof g_path)
        fail_msg("path too long");
    return g_path;
}

/* Opens path (a file) and expects failure with code, the message naming path. */
static void expect_file_error(const char *path, int code) {
    wk_st_t *st = (wk_st_t *)0x1;
    char err[LT_ERR_LEN] = "";
    assert_int_equal(wk_st_open_file(path, &st, err), code);
    assert_null(st);
    if (!strstr(err, path)) fail_msg("error '%s' does not name '%s'", err, path);
    assert_null(strchr(err, '\n'));
}

static void expect_dir_error(const char *dir, int code, const char *must_contain) {
    wk_st_t *st = (wk_st_t *)0x1;
    char err[LT_ERR_LEN] = "";
    assert_int_equal(wk_st_open_dir(dir, &st, err), code);
    assert_null(st);
    if (!strstr(err, must_contain)) fail_msg("error '%s' does not contain '%s'", err, must_contain);
}

/* One bad header against 16 bytes of data. */
static void expect_header_error(const char *header, int code) {
    const char *dir = new_dir();
    assert_non_null(dir);
    uint8_t data[16] = {0};
    const char *p = join(dir, "bad.safetensors");
    write_st(p, header, data, sizeof data);
    char path[4096];
    snprintf(path, sizeof path, "%s", p);
    expect_file_error(path, code);
}

/* ---- valid files ---- */

static void test_valid_file(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    /* data: a F32 (2,3) at 0..24, b F16 (4) at 24..32, c BF16 scalar at 32..34, d F32 (2,1,1,2)
     * at 34..50 (unaligned on purpose: the format allows it). */
    uint8_t data[50];
    float a[6] = {0, 1, 2, 3, 4, 5};
    memcpy(data, a, 24);
    uint16_t b[4];
    for (int i = 0; i < 4; i++) b[i] = lt_f32_to_f16((float)i + 0.5f);
    memcpy(data + 24, b, 8);
    uint16_t c = 0x3f80; /* bf16 1.0 */
    memcpy(data + 32, &c, 2);
    float d[4] = {-1, -2, -3, -4};
    memcpy(data + 34, d, 16);
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                      "\"c\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[32,34]},"
                      "\"d\":{\"dtype\":\"F32\",\"shape\":[2,1,1,2],\"data_offsets\":[34,50]}}  ";
    char path[4096];
    snprintf(path, sizeof path, "%s", join(dir, "model.safetensors"));
    write_st(path, hdr, data, sizeof data);

    wk_st_t *st = NULL;
    char err[LT_ERR_LEN] = "";
    int rc = wk_st_open_file(path, &st, err);
    if (rc != 0) fail_msg("open: %s", err);
    assert_int_equal(wk_st_n_tensors(st), 4);

    const lt_tensor_t *t = wk_st_find_tensor(st, "a");
    assert_non_null(t);
    assert_string_equal(t->name, "a");
    assert_int_equal(t->type, LT_DTYPE_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 3); /* innermost first */
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->nbytes, 24);
    assert_int_equal(lt_tensor_nelems(t), 6);
    float got[6];
    memcpy(got, t->data, 24);
    for (int i = 0; i < 6; i++) assert_true(got[i] == (float)i);

    t = wk_st_find_tensor(st, "b");
    assert_non_null(t);
    assert_int_equal(t->type, LT_DTYPE_F16);
    assert_int_equal(t->n_dims, 1);
    assert_int_equal(t->ne[0], 4);
    uint16_t h;
    memcpy(&h, (const uint8_t *)t->data + 6, 2);
    assert_true(lt_f16_to_f32(h) == 3.5f);

    t = wk_st_find_tensor(st, "c");
    assert_non_null(t);
    assert_int_equal(t->type, LT_DTYPE_BF16);
    assert_int_equal(t->n_dims, 1); /* scalar exposed as 1-D of one element */
    assert_int_equal(t->ne[0], 1);
    assert_int_equal(t->nbytes, 2);
    memcpy(&h, t->data, 2);
    assert_true(lt_bf16_to_f32(h) == 1.0f);

    t = wk_st_find_tensor(st, "d");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 4);
    assert_int_equal(t->ne[0], 2);
    assert_int_equal(t->ne[1], 1);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->ne[3], 2);
    memcpy(got, t->data, 16);
    assert_true(got[3] == -4.0f);

    assert_null(wk_st_find_tensor(st, "e"));
    assert_null(wk_st_find_tensor(st, "__metadata__"));
    assert_null(wk_st_tensor(st, 4));
    assert_null(wk_st_tensor(st, -1));
    /* Indexing by position covers every tensor once. */
    int seen = 0;
    for (int i = 0; i < wk_st_n_tensors(st); i++) seen |= 1 << (wk_st_tensor(st, i)->name[0] - 'a');
    assert_int_equal(seen, 0xf);

    wk_st_close(&st);
    assert_null(st);
    wk_st_close(&st); /* idempotent */

    /* The same file as the only one of a directory. */
    rc = wk_st_open_dir(dir, &st, err);
    if (rc != 0) fail_msg("open_dir: %s", err);
    assert_int_equal(wk_st_n_tensors(st), 4);
    wk_st_close(&st);
}

static void test_empty_tensor_and_no_tensors(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s", join(dir, "x.safetensors"));
    write_st(path, "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[0,0]}}", NULL, 0);
    wk_st_t *st = NULL;
    char err[LT_ERR_LEN];
    assert_int_equal(wk_st_open_file(path, &st, err), 0);
    const lt_tensor_t *t = wk_st_find_tensor(st, "z");
    assert_non_null(t);
    assert_int_equal(t->nbytes, 0);
    assert_int_equal(lt_tensor_nelems(t), 0);
    wk_st_close(&st);

    write_st(path, "{}", NULL, 0);
    assert_int_equal(wk_st_open_file(path, &st, err), 0);
    assert_int_equal(wk_st_n_tensors(st), 0);
    assert_null(wk_st_find_tensor(st, "z"));
    wk_st_close(&st);
}

/* Two shards: x1/x2 in shard 1, y in shard 2. */
static void write_two_shards(const char *dir) {
    float v[4] = {1, 2, 3, 4};
    write_st(join(dir, "model-00001-of-00002.safetensors"),
             "{\"x1\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"x2\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
             v, 16);
    write_st(join(dir, "model-00002-of-00002.safetensors"),
             "{\"y\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]}}", v + 2, 8);
}

static const char *k_index = "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
                             "\"x1\":\"model-00001-of-00002.safetensors\","
                             "\"y\":\"model-00002-of-00002.safetensors\","
                             "\"x2\":\"model-00001-of-00002.safetensors\"}}";

static void test_sharded_with_index(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    write_two_shards(d);
    assert_int_equal(
        tu_write_file(join(d, "model.safetensors.index.json"), k_index, strlen(k_index)), 0);
    wk_st_t *st = NULL;
    char err[LT_ERR_LEN] = "";
    int rc = wk_st_open_dir(d, &st, err);
    if (rc != 0) fail_msg("open_dir: %s", err);
    assert_int_equal(wk_st_n_tensors(st), 3);
    const lt_tensor_t *t = wk_st_find_tensor(st, "y");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 2);
    assert_int_equal(t->ne[1], 1);
    float f[2];
    memcpy(f, t->data, 8);
    assert_true(f[0] == 3.0f && f[1] == 4.0f);
    t = wk_st_find_tensor(st, "x2");
    assert_non_null(t);
    memcpy(f, t->data, 8);
    assert_true(f[0] == 3.0f);
    wk_st_close(&st);
}

static void test_sharded_without_index(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    write_two_shards(d);
    /* Files that are not *.safetensors are ignored. */
    assert_int_equal(tu_write_file(join(d, "config.json"), "{}", 2), 0);
    wk_st_t *st = NULL;
    char err[LT_ERR_LEN] = "";
    int rc = wk_st_open_dir(d, &st, err);
    if (rc != 0) fail_msg("open_dir: %s", err);
    assert_int_equal(wk_st_n_tensors(st), 3);
    /* Files are read in name order, so tensor order is stable. */
    assert_string_equal(wk_st_tensor(st, 2)->name, "y");
    assert_non_null(wk_st_find_tensor(st, "x1"));
    wk_st_close(&st);
}

/* ---- bad files ---- */

static void test_bad_header_length(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s", join(dir, "t.safetensors"));

    /* Length field says 1000 bytes; the file has 10. */
    uint8_t buf[18] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'};
    assert_int_equal(tu_write_file(path, buf, 10), 0);
    expect_file_error(path, LT_ERR_FORMAT);

    /* A length that would overflow 8 + N. */
    memset(buf, 0xff, 8);
    assert_int_equal(tu_write_file(path, buf, 18), 0);
    expect_file_error(path, LT_ERR_FORMAT);

    /* Shorter than the length field itself, and empty. */
    assert_int_equal(tu_write_file(path, buf, 5), 0);
    expect_file_error(path, LT_ERR_FORMAT);
    assert_int_equal(tu_write_file(path, buf, 0), 0);
    expect_file_error(path, LT_ERR_FORMAT);

    /* A header over the size cap, in a sparse file that is really that long. */
    uint64_t big = 101ull * 1024 * 1024;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(big >> (8 * i));
    assert_int_equal(tu_write_file(path, buf, 8), 0);
    assert_int_equal(truncate(path, (off_t)(8 + big)), 0);
    char err[LT_ERR_LEN];
    wk_st_t *st = NULL;
    assert_int_equal(wk_st_open_file(path, &st, err), LT_ERR_FORMAT);
    assert_non_null(strstr(err, "limit"));
    assert_int_equal(truncate(path, 0), 0);

    /* Missing file. */
    expect_file_error(join(dir, "absent.safetensors"), LT_ERR_IO);
}

static void test_bad_json(void **state) {
    (void)state;
    expect_header_error("{\"a\":{\"dtype\":\"F32\",", LT_ERR_FORMAT);
    expect_header_error("not json at all", LT_ERR_FORMAT);
    expect_header_error("[1,2,3]", LT_ERR_FORMAT);
    expect_header_error("{} trailing", LT_ERR_FORMAT);
    expect_header_error("{\"a\":[]}", LT_ERR_FORMAT);
    expect_header_error("{\"__metadata__\":3}", LT_ERR_FORMAT);
    expect_header_error("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                        LT_ERR_FORMAT);
}

static void test_bad_entries(void **state) {
    (void)state;
    /* missing or malformed fields */
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}",
                        LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}",
                        LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}",
                        LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",8]}}",
                        LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
                        LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}",
                        LT_ERR_FORMAT);
    /* offsets past the end of the data region (16 bytes), and reversed */
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]}}",
                        LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}",
                        LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}",
                        LT_ERR_FORMAT);
    /* size does not match shape x dtype */
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                        LT_ERR_FORMAT);
    expect_header_error("{\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}",
                        LT_ERR_FORMAT);
    /* shape product overflows */
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                        "\"data_offsets\":[0,8]}}",
                        LT_ERR_FORMAT);
    /* zero elements, but the other dimensions overflow int64 (found by fuzz_safetensors) */
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,4294967296,4294967296],"
                        "\"data_offsets\":[0,0]}}",
                        LT_ERR_FORMAT);
    /* duplicate name within one header */
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                        LT_ERR_FORMAT);
    /* rank above LT_MAX_DIMS */
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}",
                        LT_ERR_UNSUPPORTED);
}

static void test_unsupported_dtype(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s", join(dir, "u.safetensors"));
    static const char *dtypes[] = {"I64", "F8_E4M3", "F64", "U8", "BOOL", "f32"};
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        char hdr[256];
        snprintf(hdr, sizeof hdr,
                 "{\"ok\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"pos_ids\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[4,12]}}",
                 dtypes[i]);
        uint8_t data[12] = {0};
        write_st(path, hdr, data, sizeof data);
        wk_st_t *st = NULL;
        char err[LT_ERR_LEN] = "";
        assert_int_equal(wk_st_open_file(path, &st, err), LT_ERR_UNSUPPORTED);
        assert_null(st);
        assert_non_null(strstr(err, path));
        assert_non_null(strstr(err, "pos_ids"));
        assert_non_null(strstr(err, dtypes[i]));
    }
}

/* ---- bad directories ---- */

static void test_index_missing_shard(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    write_two_shards(d);
    const char *idx = "{\"weight_map\":{\"x1\":\"model-00001-of-00002.safetensors\","
                      "\"z\":\"model-00003-of-00002.safetensors\"}}";
    assert_int_equal(tu_write_file(join(d, "model.safetensors.index.json"), idx, strlen(idx)), 0);
    expect_dir_error(d, LT_ERR_NOTFOUND, "model-00003-of-00002.safetensors");
    expect_dir_error(d, LT_ERR_NOTFOUND, "model.safetensors.index.json");
}

static void test_index_tensor_missing_from_shard(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    write_two_shards(d);
    /* x2 exists, but in shard 1, not where the index says; w exists nowhere. */
    const char *idx = "{\"weight_map\":{\"x1\":\"model-00001-of-00002.safetensors\","
                      "\"x2\":\"model-00002-of-00002.safetensors\","
                      "\"y\":\"model-00002-of-00002.safetensors\"}}";
    assert_int_equal(tu_write_file(join(d, "model.safetensors.index.json"), idx, strlen(idx)), 0);
    expect_dir_error(d, LT_ERR_FORMAT, "'x2'");
    expect_dir_error(d, LT_ERR_FORMAT, "model-00002-of-00002.safetensors");

    idx = "{\"weight_map\":{\"x1\":\"model-00001-of-00002.safetensors\","
          "\"w\":\"model-00002-of-00002.safetensors\"}}";
    assert_int_equal(tu_write_file(join(d, "model.safetensors.index.json"), idx, strlen(idx)), 0);
    expect_dir_error(d, LT_ERR_FORMAT, "'w'");
}

static void test_bad_index(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    write_two_shards(d);
    static const char *bad[] = {
        "{\"weight_map\":",
        "{\"metadata\":{}}",
        "{\"weight_map\":[]}",
        "{\"weight_map\":{}}",
        "{\"weight_map\":{\"x1\":1}}",
        "{\"weight_map\":{\"x1\":\"../model-00001-of-00002.safetensors\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(
            tu_write_file(join(d, "model.safetensors.index.json"), bad[i], strlen(bad[i])), 0);
        expect_dir_error(d, LT_ERR_FORMAT, "model.safetensors.index.json");
    }
}

static void test_duplicate_across_shards(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    write_two_shards(d);
    float v[2] = {5, 6};
    write_st(join(d, "model-00003-of-00003.safetensors"),
             "{\"x2\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", v, 8);
    /* without an index: every file is read */
    expect_dir_error(d, LT_ERR_FORMAT, "'x2'");
    expect_dir_error(d, LT_ERR_FORMAT, "model-00001-of-00002.safetensors");
    expect_dir_error(d, LT_ERR_FORMAT, "model-00003-of-00003.safetensors");
    /* with an index that names both shards */
    const char *idx = "{\"weight_map\":{\"x1\":\"model-00001-of-00002.safetensors\","
                      "\"x2\":\"model-00003-of-00003.safetensors\"}}";
    assert_int_equal(tu_write_file(join(d, "model.safetensors.index.json"), idx, strlen(idx)), 0);
    expect_dir_error(d, LT_ERR_FORMAT, "'x2'");
}

static void test_empty_dir(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    assert_int_equal(tu_write_file(join(d, "config.json"), "{}", 2), 0);
    char want[4200];
    snprintf(want, sizeof want, "%s: no *.safetensors files", d);
    expect_dir_error(d, LT_ERR_NOTFOUND, want);
    /* not a directory at all */
    expect_dir_error(join(d, "config.json"), LT_ERR_IO, "config.json");
    expect_dir_error(join(d, "nope"), LT_ERR_IO, "nope");
}

/* ---- corruption ---- */

/* Flips random bytes of a valid file many times: every open must either succeed with tensors
 * inside the mapping or fail cleanly. Run under ASan to make "cleanly" mean something. */
static void test_corrupted_bytes(void **state) {
    (void)state;
    const char *dir = new_dir();
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s", join(dir, "f.safetensors"));
    const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}}";
    size_t hl = strlen(hdr), total = 8 + hl + 32;
    uint8_t *orig = calloc(1, total), *buf = malloc(total);
    assert_non_null(orig);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) orig[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(orig + 8, hdr, hl);
    srand(1234);
    int ok = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, orig, total);
        int flips = 1 + rand() % 4;
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)rand() % (8 + hl);
            buf[at] = (uint8_t)(rand() % 3 == 0 ? "0123456789[]{},\":"[rand() % 17] : rand());
        }
        size_t len = rand() % 8 == 0 ? (size_t)rand() % total : total;
        /* unlink first: rewriting a file in place makes ext4 flush it on close, every time */
        unlink(path);
        assert_int_equal(tu_write_file(path, buf, len), 0);
        wk_st_t *st = NULL;
        char err[LT_ERR_LEN];
        int rc = wk_st_open_file(path, &st, err);
        if (rc == 0) {
            ok++;
            for (int i = 0; i < wk_st_n_tensors(st); i++) {
                const lt_tensor_t *t = wk_st_tensor(st, i);
                volatile uint8_t sum = 0;
                for (size_t k = 0; k < t->nbytes; k++) sum += ((const uint8_t *)t->data)[k];
                (void)sum;
            }
            wk_st_close(&st);
        } else {
            assert_null(st);
            assert_non_null(strstr(err, path));
        }
    }
    assert_true(ok > 0);
    free(orig);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file),
        cmocka_unit_test(test_empty_tensor_and_no_tensors),
        cmocka_unit_test(test_sharded_with_index),
        cmocka_unit_test(test_sharded_without_index),
        cmocka_unit_test(test_bad_header_length),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_unsupported_dtype),
        cmocka_unit_test(test_index_missing_shard),
        cmocka_unit_test(test_index_tensor_missing_from_shard),
        cmocka_unit_test(test_bad_index),
        cmocka_unit_test(test_duplicate_across_shards),
        cmocka_unit_test(test_empty_dir),
        cmocka_unit_test(test_corrupted_bytes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
