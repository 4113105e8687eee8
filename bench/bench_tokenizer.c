/*
 * bench_tokenizer.c — the lantern side of bench/bench_tokenizer.py: loads a tokenizer (GGUF file
 * or Hugging Face directory), encodes a text file `reps` times on one thread, and prints one JSON
 * line with the best and median times. The ids of the last run go to ids_out (one per line) so
 * the Python side can check they equal Hugging Face's.
 *
 * With SEP (a byte in hex, e.g. 00) the file is a list of documents separated by that byte,
 * each encoded by its own call, as a server tokenizes requests.
 *
 * Usage: bench_tokenizer MODEL TEXT_FILE REPS [IDS_OUT [SEP]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"
#include "tokenizer.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL TEXT_FILE REPS [IDS_OUT [SEP]]\n", argv[0]);
        return 2;
    }
    char err[LT_ERR_LEN];
    fe_tokenizer_t *t;
    uint64_t t0 = lt_now_ns();
    if (fe_tokenizer_load(argv[1], &t, err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err);
        return 1;
    }
    double load_s = (double)(lt_now_ns() - t0) / 1e9;
    char *text;
    size_t len;
    if (lt_read_file(argv[2], &text, &len, err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err);
        return 1;
    }
    int reps = atoi(argv[3]);
    if (reps < 1) reps = 1;
    int sep = argc > 5 ? (int)strtol(argv[5], NULL, 16) : -1;
    /* Document boundaries. */
    size_t n_docs = 1;
    for (size_t i = 0; sep >= 0 && i < len; i++) n_docs += (unsigned char)text[i] == sep;
    size_t *start = malloc(sizeof *start * (n_docs + 1));
    size_t k = 0;
    start[k++] = 0;
    for (size_t i = 0; sep >= 0 && i < len; i++)
        if ((unsigned char)text[i] == sep) start[k++] = i + 1;
    start[k] = len + 1;
    double *secs = malloc(sizeof *secs * (size_t)reps);
    int32_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    for (int r = 0; r < reps; r++) {
        n_ids = 0;
        uint64_t a = lt_now_ns();
        for (size_t d = 0; d < n_docs; d++) {
            int32_t *v;
            int nv;
            size_t b = start[d], e = start[d + 1] - 1;
            if (fe_tokenizer_encode(t, text + b, e - b, false, true, &v, &nv, err)) {
                fprintf(stderr, "bench_tokenizer: %s\n", err);
                return 1;
            }
            if (n_ids + (size_t)nv > cap) {
                cap = (n_ids + (size_t)nv) * 2;
                ids = realloc(ids, cap * sizeof *ids);
            }
            if (nv) memcpy(ids + n_ids, v, (size_t)nv * sizeof *v);
            n_ids += (size_t)nv;
            free(v);
        }
        secs[r] = (double)(lt_now_ns() - a) / 1e9;
    }
    len -= n_docs - 1; /* separators are not text */
    if (argc > 4) {
        FILE *f = fopen(argv[4], "w");
        if (!f) {
            perror(argv[4]);
            return 1;
        }
        for (size_t i = 0; i < n_ids; i++) fprintf(f, "%d\n", ids[i]);
        fclose(f);
    }
    qsort(secs, (size_t)reps, sizeof *secs, cmp_double);
    printf("{\"bytes\": %zu, \"tokens\": %zu, \"best_s\": %.6f, \"median_s\": %.6f, "
           "\"load_s\": %.4f, \"tokenizer\": \"%s\"}\n",
           len, n_ids, secs[0], secs[reps / 2], load_s, fe_tokenizer_describe(t));
    free(ids);
    free(start);
    free(secs);
    free(text);
    fe_tokenizer_destroy(&t);
    return 0;
}
