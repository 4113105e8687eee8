/*
 * gguf.h — GGUF reader over a read-only mmap (worker-internal).
 *
 * Parses the header, the metadata key/value table and the tensor infos, validating every count,
 * length, type, offset and size against the file before use: a corrupted or hostile file yields
 * an error naming the file and the problem, never an out-of-bounds read.
 * Thread safety: a wk_gguf_t is immutable after open; any thread may read it.
 * Ownership: the reader owns the mapping and all names; tensor data pointers borrow from it.
 */
#ifndef WK_GGUF_H
#define WK_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

/* GGUF metadata value types. */
typedef enum {
    WK_GGUF_UINT8 = 0,
    WK_GGUF_INT8 = 1,
    WK_GGUF_UINT16 = 2,
    WK_GGUF_INT16 = 3,
    WK_GGUF_UINT32 = 4,
    WK_GGUF_INT32 = 5,
    WK_GGUF_FLOAT32 = 6,
    WK_GGUF_BOOL = 7,
    WK_GGUF_STRING = 8,
    WK_GGUF_ARRAY = 9,
    WK_GGUF_UINT64 = 10,
    WK_GGUF_INT64 = 11,
    WK_GGUF_FLOAT64 = 12,
} wk_gguf_vtype_t;

typedef struct wk_gguf wk_gguf_t;

/* Opens and validates path. On error returns
 * LT_ERR_IO/LT_ERR_FORMAT/LT_ERR_UNSUPPORTED/LT_ERR_NOMEM and writes "<path>: <problem>" to err
 * (LT_ERR_LEN bytes). */
int wk_gguf_open(const char *path, wk_gguf_t **out, char *err);
void wk_gguf_close(wk_gguf_t **g);

const char *wk_gguf_path(const wk_gguf_t *g);
uint32_t wk_gguf_version(const wk_gguf_t *g);

/* ---- metadata ---- */

int wk_gguf_n_kv(const wk_gguf_t *g);
const char *wk_gguf_kv_key(const wk_gguf_t *g, int i);
/* Index of key, or -1. */
int wk_gguf_find_key(const wk_gguf_t *g, const char *key);
/* Type of the value at index i (for arrays, WK_GGUF_ARRAY). */
int wk_gguf_kv_type(const wk_gguf_t *g, int i);

/* Typed getters by key. Return 0; LT_ERR_NOTFOUND if absent; LT_ERR_FORMAT if the stored type
 * cannot represent the request (any integer type converts to another integer type when the value
 * fits; any float or integer converts to float/double). */
int wk_gguf_get_u32(const wk_gguf_t *g, const char *key, uint32_t *out);
int wk_gguf_get_i64(const wk_gguf_t *g, const char *key, int64_t *out);
int wk_gguf_get_f32(const wk_gguf_t *g, const char *key, float *out);
int wk_gguf_get_bool(const wk_gguf_t *g, const char *key, bool *out);
/* A string value: *s points into the mapping and is NOT NUL-terminated; *len is its length. */
int wk_gguf_get_str(const wk_gguf_t *g, const char *key, const char **s, size_t *len);

/* An array value: element type and count. For arrays of numbers, *data points at the packed
 * little-endian elements in the mapping; for arrays of strings *data is NULL and elements are
 * read with wk_gguf_get_arr_str. */
int wk_gguf_get_arr(const wk_gguf_t *g, const char *key, int *elem_type, uint64_t *n,
                    const void **data);
/* LT_ERR_RANGE when i is past the end. Bools only read as bools; strings and bools never convert
 * to numbers (LT_ERR_FORMAT). */
int wk_gguf_get_arr_str(const wk_gguf_t *g, const char *key, uint64_t i, const char **s,
                        size_t *len);

/* ---- tensors ---- */

int wk_gguf_n_tensors(const wk_gguf_t *g);
const wk_tensor_t *wk_gguf_tensor(const wk_gguf_t *g, int i);
/* NULL if absent. */
const wk_tensor_t *wk_gguf_find_tensor(const wk_gguf_t *g, const char *name);

#endif
