/*
 * solo.c — the single-process reference path (`lantern generate --in-process`): one model, one
 * sequence, greedy decoding, in the calling process, without the engine or any IPC. It is what
 * the process tree's results and speed are compared against.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "lt.h"
#include "worker.h"

#define SOLO_BLOCK_SIZE 16

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int wk_generate_solo(const char *model_path, const int *prompt, int n_prompt, int max_tokens,
                     bool ignore_eos, int threads) {
    char err[LT_ERR_LEN];
    if (threads > 0) omp_set_num_threads(threads);
    int status = 1;
    wk_model_t *m = NULL;
    wk_kv_cache_t *kv = NULL;
    wk_ctx_t *ctx = NULL;
    float *logits = NULL;
    int32_t *toks = NULL, *pos = NULL, *seq = NULL, *table = NULL;
    uint64_t t0 = lt_now_ns();
    if (wk_model_load(model_path, NULL, &m, err) != LT_OK) {
        fprintf(stderr, "lantern generate: %s\n", err);
        goto out;
    }
    uint64_t t_loaded = lt_now_ns();
    int vocab = m->cfg.vocab_size;
    int total = n_prompt + max_tokens;
    if (total > m->cfg.max_seq_len) {
        fprintf(stderr,
                "lantern generate: prompt (%d tokens) + max tokens (%d) exceeds the model's "
                "context of %d\n",
                n_prompt, max_tokens, m->cfg.max_seq_len);
        goto out;
    }
    for (int i = 0; i < n_prompt; i++) {
        if (prompt[i] >= vocab) {
            fprintf(stderr, "lantern generate: token id %d is outside the vocabulary (%d)\n",
                    prompt[i], vocab);
            goto out;
        }
    }
    int n_blocks = (total + SOLO_BLOCK_SIZE - 1) / SOLO_BLOCK_SIZE;
    if (wk_kv_cache_create(m, n_blocks, SOLO_BLOCK_SIZE, LT_DTYPE_F16, &kv, err) ||
        wk_ctx_create(m, n_prompt, total, &ctx, err)) {
        fprintf(stderr, "lantern generate: %s\n", err);
        goto out;
    }
    logits = malloc((size_t)vocab * sizeof(float));
    toks = malloc((size_t)n_prompt * sizeof *toks);
    pos = malloc((size_t)n_prompt * sizeof *pos);
    seq = calloc((size_t)n_prompt, sizeof *seq);
    table = malloc((size_t)n_blocks * sizeof *table);
    if (!logits || !toks || !pos || !seq || !table) {
        fprintf(stderr, "lantern generate: out of memory\n");
        goto out;
    }
    for (int i = 0; i < n_blocks; i++) table[i] = i;
    for (int i = 0; i < n_prompt; i++) {
        toks[i] = prompt[i];
        pos[i] = i;
    }
    const int32_t *tables[1] = {table};
    int32_t table_len[1] = {n_blocks};
    int32_t last = n_prompt - 1;
    wk_batch_t b = {.n_tokens = n_prompt,
                    .tokens = toks,
                    .pos = pos,
                    .seq = seq,
                    .n_seqs = 1,
                    .block_tables = tables,
                    .block_table_len = table_len,
                    .n_logits = 1,
                    .logits_rows = &last};
    uint64_t t1 = lt_now_ns();
    if (wk_forward(m, kv, ctx, &b, logits, err)) {
        fprintf(stderr, "lantern generate: %s\n", err);
        goto out;
    }
    uint64_t t2 = lt_now_ns();
    int n_gen = 0;
    for (; n_gen < max_tokens; n_gen++) {
        int next = argmax(logits, vocab);
        printf(n_gen ? ",%d" : "%d", next);
        if (!ignore_eos && next == m->cfg.eos_id) {
            n_gen++;
            break;
        }
        if (n_gen + 1 == max_tokens) {
            n_gen++;
            break;
        }
        toks[0] = next;
        pos[0] = n_prompt + n_gen;
        int32_t row0 = 0;
        wk_batch_t d = b;
        d.n_tokens = 1;
        d.logits_rows = &row0;
        if (wk_forward(m, kv, ctx, &d, logits, err)) {
            fprintf(stderr, "lantern generate: %s\n", err);
            goto out;
        }
    }
    printf("\n");
    fflush(stdout);
    uint64_t t3 = lt_now_ns();
    double load_s = (t_loaded - t0) / 1e9, pre_s = (t2 - t1) / 1e9, dec_s = (t3 - t2) / 1e9;
    /* The first generated token comes from the prefill; decode steps are n_gen - 1. */
    int n_dec = n_gen > 0 ? n_gen - 1 : 0;
    fprintf(stderr, "load: %.3f s (%.1f MiB of weights in their stored type, %.1f MiB copied)\n",
            load_s, m->weight_bytes / 1048576.0, m->weight_copy_bytes / 1048576.0);
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s)\n", n_prompt, pre_s,
            n_prompt / pre_s);
    fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s)\n", n_dec, dec_s,
            n_dec > 0 ? n_dec / dec_s : 0.0);
    status = 0;
out:
    free(logits);
    free(toks);
    free(pos);
    free(seq);
    free(table);
    wk_ctx_destroy(&ctx);
    wk_kv_cache_destroy(&kv);
    wk_model_free(&m);
    return status;
}
