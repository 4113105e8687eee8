/*
 * fuzz_safetensors.c — libFuzzer target for the safetensors reader (worker/safetensors.h): any
 * byte string must either open, with every tensor findable by its name, its size the product of
 * its shape and element size, and every byte of its data readable, or be refused with one error
 * message that starts with the file's path. Sanitizers catch an out-of-bounds read of the header
 * on the way; a tensor running past the mapping faults when its bytes are read.
 *
 * The input is written to a memfd and opened through /proc/self/fd, so the real open/mmap path
 * runs without touching the disk (as fuzz_gguf.c does).
 *
 * Built by CMake: a replay program over tests/fuzz/corpus_safetensors (a ctest) in every build;
 * fuzz_safetensors, linked with libFuzzer, in the `fuzz` preset (tools/fuzz.sh). Seeds, written
 * to the format's specification (u64 little-endian header length, JSON header, data): F32, F16
 * and BF16 tensors with __metadata__ and a scalar, a zero-element tensor, an empty header, and
 * edge cases (overlapping, reversed and out-of-range offsets, a header length past the end,
 * duplicate names, an unsupported dtype, rank 5, a huge shape with a zero dimension, trailing
 * garbage after the header, a file too short for the length).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "lt.h"
#include "fuzz_file.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("fuzz_safetensors", data, size);

    char err[LT_ERR_LEN] = "";
    wk_st_t *st = NULL;
    int rc = wk_st_open_file(path, &st, err);
    if (rc != LT_OK) {
        if (st || (rc != LT_ERR_NOMEM && strncmp(err, path, strlen(path)) != 0)) {
            fprintf(stderr, "fuzz_safetensors: rc %d, error '%s'\n", rc, err);
            abort();
        }
        return 0;
    }
    if (!st) abort();
    int n = wk_st_n_tensors(st);
    if (n < 0) abort();
    for (int i = 0; i < n; i++) {
        const lt_tensor_t *t = wk_st_tensor(st, i);
        if (!t || !t->name || wk_st_find_tensor(st, t->name) != t) abort();
        if (t->n_dims < 1 || t->n_dims > LT_MAX_DIMS) abort();
        if (lt_dtype_nbytes(t->type, lt_tensor_nelems(t)) != (int64_t)t->nbytes) abort();
        touch(t->data, t->nbytes);
    }
    if (wk_st_tensor(st, n) != NULL || wk_st_tensor(st, -1) != NULL) abort();
    wk_st_close(&st);
    if (st) abort();
    return 0;
}
