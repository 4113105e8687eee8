/*
 * cuda_steps.h — what test_cuda_forward and test_cuda_tp share: the model they run and the steps
 * they run it through (a prefill of two sequences on scattered KV blocks, then decode steps of
 * both), so that the CUDA backend's results, one rank or several, compare with the CPU backend's
 * on the same batches. Static functions: each test program includes it once.
 */
#ifndef LT_TEST_CUDA_STEPS_H
#define LT_TEST_CUDA_STEPS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt.h"
#include "worker.h"

/* KV block size and blocks, batch tokens and context of the runs; STEPS: the prefill and 8
 * decode steps. */
enum { BS = 16, MAXT = 96, CTX = 256, NB = 32, STEPS = 9 };

/* The model: $LANTERN_MODEL, else the default model in ~/.cache/lantern/models. 0, or 77 (the
 * tests' "skipped") with a line saying so when it is absent. */
static int cs_model_path(char *path, size_t n) {
    const char *env = getenv("LANTERN_MODEL"), *home = getenv("HOME");
    if (env)
        snprintf(path, n, "%s", env);
    else
        snprintf(path, n, "%s/.cache/lantern/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                 home ? home : "");
    if (access(path, R_OK) == 0) return 0;
    printf("model %s absent: skipped\n", path);
    return 77;
}

/* Prefill of sequences of 50 and 30 tokens on scattered blocks, then STEPS - 1 decode steps of
 * both, fed next[] (step s's two tokens) when given, else their own argmax (written to own[]). */
static int run_steps(wk_model_t *m, wk_kv_cache_t *kv, wk_ctx_t *c, int steps, float *logits,
                     const int *next, int *own, char *err) {
    int vocab = m->cfg.vocab_size;
    int32_t bt0[8] = {5, 9, 2, 11, 20, 7, 1, 14}, bt1[8] = {17, 3, 30, 25, 12, 0, 8, 19};
    const int32_t *bts[2] = {bt0, bt1};
    int32_t btl[2] = {8, 8};
    int32_t tokens[MAXT], pos[MAXT], seq[MAXT], rows[2];
    int len[2] = {50, 30}, T = 0;
    unsigned rs = 9;
    for (int s = 0; s < 2; s++)
        for (int p = 0; p < len[s]; p++, T++)
            tokens[T] = 1 + (int)((rs = rs * 1103515245u + 12345u) >> 8) % (vocab - 1), pos[T] = p,
            seq[T] = s;
    rows[0] = len[0] - 1, rows[1] = T - 1;
    int rc = LT_OK;
    for (int step = 0; step < steps && !rc; step++) {
        wk_batch_t b = {.n_tokens = T,
                        .tokens = tokens,
                        .pos = pos,
                        .seq = seq,
                        .n_seqs = 2,
                        .block_tables = bts,
                        .block_table_len = btl,
                        .n_logits = logits ? 2 : 0,
                        .logits_rows = rows};
        float *out = logits ? logits + (size_t)step * 2 * vocab : NULL;
        if ((rc = wk_forward(m, kv, c, &b, out, err))) break;
        for (int s = 0; s < 2; s++) {
            int t = next ? next[step * 2 + s] : 0;
            if (!next) {
                const float *row = out + (size_t)s * vocab;
                for (int v = 1; v < vocab; v++)
                    if (row[v] > row[t]) t = v;
                own[step * 2 + s] = t;
            }
            tokens[s] = t, pos[s] = len[s]++, seq[s] = s;
        }
        T = 2;
        rows[0] = 0, rows[1] = 1;
    }
    return rc;
}

/* The STEPS steps on model m, on a cache and scratch of their own (eager: no CUDA graphs); the
 * logits of every step in logits (STEPS, 2, vocab); next and own as run_steps's. */
static int cs_run(wk_model_t *m, bool eager, float *logits, const int *next, int *own, char *err) {
    wk_kv_cache_t *kv = NULL;
    wk_ctx_t *c = NULL;
    int rc = wk_kv_cache_create(m, NB, BS, LT_DTYPE_F16, &kv, err);
    if (!rc) rc = wk_ctx_create(m, MAXT, CTX, &c, err);
    if (!rc) {
        wk_ctx_set_eager(c, eager);
        rc = run_steps(m, kv, c, STEPS, logits, next, own, err);
    }
    wk_ctx_destroy(&c);
    wk_kv_cache_destroy(&kv);
    return rc;
}

/* Step by step, got's logits (STEPS, 2, vocab) against the CPU's (ref): NMSE <= 1e-4, and against
 * the eager run's bit for bit; a line a step, after what. Returns the steps that fail (NaN fails).
 */
static int cs_compare(const char *what, int vocab, const float *got, const float *ref,
                      const float *eager) {
    int fails = 0;
    for (int step = 0; step < STEPS; step++) {
        size_t o = (size_t)step * 2 * vocab;
        double num = 0, den = 0;
        for (int i = 0; i < 2 * vocab; i++) {
            num += (double)(got[o + i] - ref[o + i]) * (got[o + i] - ref[o + i]);
            den += (double)ref[o + i] * ref[o + i];
        }
        double nmse = num / den;
        bool same = memcmp(got + o, eager + o, sizeof(float) * 2 * vocab) == 0;
        bool ok = nmse <= 1e-4 && same;
        printf("%s %sstep %d: logits NMSE %.3e against the CPU's; %s the eager run's\n",
               ok ? "ok  " : "FAIL", what, step, nmse, same ? "bit for bit" : "DIFFERENT from");
        fails += !ok;
    }
    return fails;
}

#endif
