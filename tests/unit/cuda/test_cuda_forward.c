/*
 * test_cuda_forward.c — the whole forward pass (worker/forward.c) on the CUDA backend against the
 * CPU backend, same model, same batches: a prefill batch of two sequences (50 and 30 tokens:
 * cuBLAS products, attention by tiles, scattered KV blocks), then 8 decode steps of both
 * sequences fed the CPU's greedy tokens. Logits NMSE per step <= 1e-4 (fp16 KV cache on both;
 * cuBLAS rounds prefill activations to fp16: ~2e-5; decode ~1e-6, where int8 activation quants
 * gave ~3e-4), and the share of argmax agreement is printed (the steps: cuda_steps.h). A third side
 * runs the same steps on CUDA with --enforce-eager: the default side's decode steps are CUDA-graph
 * replays from the third step on (recorded on the second), and their logits must equal the eager
 * side's bit for bit.
 * Model: $LANTERN_MODEL or the default model in ~/.cache/lantern/models. Exits 77 (skipped)
 * without a GPU or without the model.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_steps.h"
#include "lt.h"
#include "worker.h"

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

int main(void) {
#ifndef CUEMU /* on the CPU emulator (tests/cuemu) there is a device but no driver to ask */
    if (wk_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
#endif
    char path[1024], err[LT_ERR_LEN];
    if (cs_model_path(path, sizeof path)) return 77;
    /* three sides: the CPU backend, CUDA (graphs from the third step on), CUDA eager */
    wk_model_t *m[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        wk_load_opts_t o = {.tp_size = 1, .device = i ? WK_DEVICE_CUDA : WK_DEVICE_CPU};
        if (wk_model_load(path, &o, &m[i], err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    int vocab = m[0]->cfg.vocab_size, next[STEPS * 2];
    size_t n = (size_t)STEPS * 2 * vocab;
    float *lc = malloc(n * sizeof(float)), *lg = malloc(n * sizeof(float)),
          *le = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) lg[i] = le[i] = NAN;
    /* the CPU picks the decode tokens; both CUDA sides are fed them */
    if (cs_run(m[0], false, lc, NULL, next, err) || cs_run(m[1], false, lg, next, NULL, err) ||
        cs_run(m[2], true, le, next, NULL, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int fails = cs_compare("", vocab, lg, lc, le), agree = 0;
    for (int r = 0; r < STEPS * 2; r++)
        agree += argmax(lc + (size_t)r * vocab, vocab) == argmax(lg + (size_t)r * vocab, vocab);
    printf("argmax agreement %d/%d\n", agree, STEPS * 2);
    free(lc), free(lg), free(le);
    for (int i = 0; i < 3; i++) wk_model_free(&m[i]);
    return fails ? 1 : 0;
}
