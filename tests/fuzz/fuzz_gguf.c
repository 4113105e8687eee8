/*
 * fuzz_gguf.c — libFuzzer target for the GGUF reader: any byte string must either open, with
 * every key, value, array element and tensor byte then readable, or be refused with one error
 * line that starts with the file's path. Sanitizers catch any out-of-bounds read on the way.
 *
 * Built by CMake as a replay program over its corpus (a ctest) and, in the `fuzz` preset, with
 * libFuzzer (tools/fuzz.sh runs it; see tests/fuzz/README.md). By hand, from the repo root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *       -Icommon -Ikernels -Iworker tests/fuzz/fuzz_gguf.c worker/gguf.c kernels/cpu/dtype.c \
 *       common/lt.c -lm -o /tmp/fuzz_gguf
 *   mkdir -p /tmp/gguf_corpus && /tmp/fuzz_gguf -max_total_time=60 -max_len=4096 \
 *       /tmp/gguf_corpus tests/fuzz/corpus_gguf
 *
 * Seeds in tests/fuzz/corpus_gguf/ were written with gguf-py's GGUFWriter (an independent
 * writer): a one-tensor F32 file, a Q8_0/F16 file with string, bool and int arrays, and a file
 * with general.alignment = 64 holding a Q4_1 tensor.
 *
 * The input is written to a memfd and opened through /proc/self/fd, so the real open/mmap path
 * runs without touching the disk.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "kernels.h"
#include "lt.h"
#include "fuzz_file.h"

static void walk(const lt_gguf_t *g) {
    for (int i = 0; i < lt_gguf_n_kv(g); i++) {
        const char *key = lt_gguf_kv_key(g, i);
        if (!key || lt_gguf_find_key(g, key) != i) __builtin_trap();
        uint32_t u;
        int64_t i64;
        float f;
        bool b;
        const char *s;
        size_t len;
        g_sink += (uint64_t)lt_gguf_get_u32(g, key, &u);
        g_sink += (uint64_t)lt_gguf_get_i64(g, key, &i64);
        g_sink += (uint64_t)lt_gguf_get_f32(g, key, &f);
        g_sink += (uint64_t)lt_gguf_get_bool(g, key, &b);
        if (lt_gguf_get_str(g, key, &s, &len) == LT_OK) touch(s, len);
        int et;
        uint64_t n;
        const void *data;
        if (lt_gguf_get_arr(g, key, &et, &n, &data) != LT_OK) continue;
        if (et == LT_GGUF_STRING) {
            for (uint64_t j = 0; j < n; j++) {
                if (lt_gguf_get_arr_str(g, key, j, &s, &len) != LT_OK) __builtin_trap();
                touch(s, len);
            }
            if (lt_gguf_get_arr_str(g, key, n, &s, &len) != LT_ERR_RANGE) __builtin_trap();
        } else if (n > 0) {
            static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
            if (et < 0 || et > 12 || sz[et] == 0 || !data) __builtin_trap();
            touch(data, n * sz[et]);
        }
    }
    for (int i = 0; i < lt_gguf_n_tensors(g); i++) {
        const lt_tensor_t *t = lt_gguf_tensor(g, i);
        if (!t || lt_gguf_find_tensor(g, t->name) != t) __builtin_trap();
        if (lt_dtype_nbytes(t->type, lt_tensor_nelems(t)) != (int64_t)t->nbytes) __builtin_trap();
        touch(t->data, t->nbytes);
        /* Dequantize the first block or so of the first row. */
        float row[256];
        int64_t n = lt_dtype_block_elems(t->type);
        if (n == 1) n = t->ne[0] < 256 ? t->ne[0] : 256;
        if (kn_dequantize(t->type, t->data, row, n) != LT_OK) __builtin_trap();
        touch(row, (size_t)n * sizeof(float));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("fuzz_gguf", data, size);

    char err[LT_ERR_LEN] = "";
    lt_gguf_t *g = NULL;
    int rc = lt_gguf_open(path, &g, err);
    if (rc == LT_OK) {
        if (!g) __builtin_trap();
        walk(g);
        lt_gguf_close(&g);
        if (g) __builtin_trap();
    } else {
        /* One line, "<path>: <problem>", and nothing left open. */
        size_t pl = strlen(path);
        if (g || strncmp(err, path, pl) != 0 || strncmp(err + pl, ": ", 2) != 0 ||
            strchr(err, '\n') || strlen(err) <= pl + 2)
            __builtin_trap();
        if (rc != LT_ERR_FORMAT && rc != LT_ERR_UNSUPPORTED && rc != LT_ERR_NOMEM) __builtin_trap();
    }
    return 0;
}
