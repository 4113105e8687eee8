/*
 * safetensors.h — reader for Hugging Face safetensors files, single or sharded (worker-internal).
 *
 * wk_st_open_dir() maps model.safetensors.index.json's shards, or every *.safetensors file of a
 * directory when there is no index; each file's JSON header is parsed with cJSON and every
 * offset, shape and dtype is validated against the file before use.
 * Supported dtypes: F32, F16, BF16 (mapped to LT_DTYPE_F32/LT_DTYPE_F16/LT_DTYPE_BF16); others are
 * LT_ERR_UNSUPPORTED naming the tensor.
 * Thread safety: immutable after open. Ownership: the reader owns mappings and names.
 */
#ifndef WK_SAFETENSORS_H
#define WK_SAFETENSORS_H

#include "tensor.h"

typedef struct wk_st wk_st_t;

/* Opens one .safetensors file. */
int wk_st_open_file(const char *path, wk_st_t **out, char *err);
/* Opens all shards of a Hugging Face model directory. */
int wk_st_open_dir(const char *dir, wk_st_t **out, char *err);
void wk_st_close(wk_st_t **st);

int wk_st_n_tensors(const wk_st_t *st);
const lt_tensor_t *wk_st_tensor(const wk_st_t *st, int i);
/* NULL if absent. */
const lt_tensor_t *wk_st_find_tensor(const wk_st_t *st, const char *name);

#endif
