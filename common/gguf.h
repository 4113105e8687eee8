/*
 * gguf.h — GGUF reader over a read-only mmap, shared by every process that reads model files
 * (the worker for weights, the frontend for tokenizer metadata and the chat template).
 *
 * Parses the header, the metadata key/value table and the tensor infos, validating every count,
 * length, type, offset and size against the file before use: a corrupted or hostile file yields
 * an error naming the file and the problem, never an out-of-bounds read.
 * Thread safety: a lt_gguf_t is immutable after open; any thread may read it.
 * Ownership: the reader owns the mapping and all names; tensor data pointers borrow from it.
 */
#ifndef LT_GGUF_H
#define LT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

/* GGUF metadata value types. */
typedef enum {
    LT_GGUF_UINT8 = 0,
    LT_GGUF_INT8 = 1,
    LT_GGUF_UINT16 = 2,
    LT_GGUF_INT16 = 3,
    LT_GGUF_UINT32 = 4,
    LT_GGUF_INT32 = 5,
    LT_GGUF_FLOAT32 = 6,
    LT_GGUF_BOOL = 7,
    LT_GGUF_STRING = 8,
    LT_GGUF_ARRAY = 9,
    LT_GGUF_UINT64 = 10,
    LT_GGUF_INT64 = 11,
    LT_GGUF_FLOAT64 = 12,
} lt_gguf_vtype_t;

typedef struct lt_gguf lt_gguf_t;

/* Opens and validates path. On error returns
 * LT_ERR_IO/LT_ERR_FORMAT/LT_ERR_UNSUPPORTED/LT_ERR_NOMEM and writes "<path>: <problem>" to err
 * (LT_ERR_LEN bytes). */
int lt_gguf_open(const char *path, lt_gguf_t **out, char *err);
void lt_gguf_close(lt_gguf_t **g);

const char *lt_gguf_path(const lt_gguf_t *g);
uint32_t lt_gguf_version(const lt_gguf_t *g);

/* ---- metadata ---- */

int lt_gguf_n_kv(const lt_gguf_t *g);
const char *lt_gguf_kv_key(const lt_gguf_t *g, int i);
/* Index of key, or -1. */
int lt_gguf_find_key(const lt_gguf_t *g, const char *key);
/* Type of the value at index i (for arrays, LT_GGUF_ARRAY). */
int lt_gguf_kv_type(const lt_gguf_t *g, int i);

/* Typed getters by key. Return 0; LT_ERR_NOTFOUND if absent; LT_ERR_FORMAT if the stored type
 * cannot represent the request (any integer type converts to another integer type when the value
 * fits; any float or integer converts to float/double). */
int lt_gguf_get_u32(const lt_gguf_t *g, const char *key, uint32_t *out);
int lt_gguf_get_i64(const lt_gguf_t *g, const char *key, int64_t *out);
int lt_gguf_get_f32(const lt_gguf_t *g, const char *key, float *out);
int lt_gguf_get_bool(const lt_gguf_t *g, const char *key, bool *out);
/* A string value: *s points into the mapping and is NOT NUL-terminated; *len is its length. */
int lt_gguf_get_str(const lt_gguf_t *g, const char *key, const char **s, size_t *len);

/* An array value: element type and count. For arrays of numbers, *data points at the packed
 * little-endian elements in the mapping; for arrays of strings *data is NULL and elements are
 * read with lt_gguf_get_arr_str. */
int lt_gguf_get_arr(const lt_gguf_t *g, const char *key, int *elem_type, uint64_t *n,
                    const void **data);
/* LT_ERR_RANGE when i is past the end. Bools only read as bools; strings and bools never convert
 * to numbers (LT_ERR_FORMAT). */
int lt_gguf_get_arr_str(const lt_gguf_t *g, const char *key, uint64_t i, const char **s,
                        size_t *len);

/* ---- tensors ---- */

int lt_gguf_n_tensors(const lt_gguf_t *g);
const lt_tensor_t *lt_gguf_tensor(const lt_gguf_t *g, int i);
/* NULL if absent. */
const lt_tensor_t *lt_gguf_find_tensor(const lt_gguf_t *g, const char *name);

#endif
