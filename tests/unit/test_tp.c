/*
 * test_tp.c — tensor-parallel sharding of the forward pass, in one process: N threads each load
 * their shard (column-parallel q/k/v/gate/up, row-parallel o/down) and sum partial outputs with a
 * deterministic in-memory all-reduce. Rank 0's logits must match the unsharded model's, for
 * prefill and decode, on random models with 8 heads / 4 KV heads (TP 2 and 4) and the default
 * model (9 heads / 3 KV heads, TP 3, quantized weights sliced by columns).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"
#include "testutil.h"
#include "worker.h"

#define BS     16
#define PROMPT 23
#define DECODE 8
#define MAX_TP 4

/* ---- an all-reduce between threads ---- */

typedef struct group {
    int world;
    pthread_barrier_t bar;
    float *bufs[MAX_TP];
    float *tmp[MAX_TP];
} group_t;

typedef struct rank {
    group_t *g;
    int r;
    const char *path;
    const int *ids;
    float *logits; /* rank 0: (PROMPT + DECODE, vocab) */
    int rc;
    char err[LT_ERR_LEN];
} rank_t;

static int thread_allreduce(float *buf, size_t n, void *user) {
    rank_t *rk = user;
    group_t *g = rk->g;
    g->bufs[rk->r] = buf;
    pthread_barrier_wait(&g->bar);
    float *t = g->tmp[rk->r];
    for (size_t i = 0; i < n; i++) {
        float s = 0.0f;
        for (int r = 0; r < g->world; r++) s += g->bufs[r][i]; /* rank order: same bits */
        t[i] = s;
    }
    pthread_barrier_wait(&g->bar);
    memcpy(buf, t, n * sizeof *buf);
    return 0;
}

/* Prefill PROMPT tokens, then DECODE steps feeding back rank 0's argmax (shared via ids[]). */
static void *rank_main(void *arg) {
    rank_t *rk = arg;
    wk_load_opts_t o = {.tp_rank = rk->r, .tp_size = rk->g->world};
    wk_model_t *m = NULL;
    wk_kv_cache_t *kv = NULL;
    wk_ctx_t *c = NULL;
    if ((rk->rc = wk_model_load(rk->path, &o, &m, rk->err))) return NULL;
    int V = m->cfg.vocab_size, total = PROMPT + DECODE;
    if ((rk->rc = wk_kv_cache_create(m, (total + BS - 1) / BS, BS, LT_DTYPE_F32, &kv, rk->err)) ||
        (rk->rc = wk_ctx_create(m, PROMPT, total, &c, rk->err)))
        goto out;
    if (rk->g->world > 1) wk_ctx_set_allreduce(c, thread_allreduce, rk);
    int32_t table[8] = {0, 1, 2, 3, 4, 5, 6, 7}, tok[PROMPT], pos[PROMPT], seq[PROMPT] = {0},
            rows[PROMPT];
    const int32_t *tables[1] = {table};
    int32_t tl[1] = {(total + BS - 1) / BS};
    for (int i = 0; i < PROMPT; i++) {
        tok[i] = rk->ids[i];
        pos[i] = i;
        rows[i] = i;
    }
    wk_batch_t b = {.n_tokens = PROMPT,
                    .tokens = tok,
                    .pos = pos,
                    .seq = seq,
                    .n_seqs = 1,
                    .block_tables = tables,
                    .block_table_len = tl,
                    .n_logits = rk->r == 0 ? PROMPT : 0,
                    .logits_rows = rows};
    if ((rk->rc = wk_forward(m, kv, c, &b, rk->logits, rk->err))) goto out;
    for (int d = 0; d < DECODE; d++) {
        /* every rank feeds the unsharded reference's greedy tokens (precomputed in ids); the
         * reference run itself (one rank, ids < 0) picks them from its own logits */
        int next = rk->ids[PROMPT + d];
        if (next < 0) {
            const float *row = rk->logits + (size_t)(PROMPT + d - 1) * V;
            next = 0;
            for (int v = 1; v < V; v++)
                if (row[v] > row[next]) next = v;
            ((int *)rk->ids)[PROMPT + d] = next;
        }
        tok[0] = next;
        pos[0] = PROMPT + d;
        b.n_tokens = 1;
        b.n_logits = rk->r == 0 ? 1 : 0;
        float *out = rk->logits ? rk->logits + (size_t)(PROMPT + d) * V : NULL;
        if ((rk->rc = wk_forward(m, kv, c, &b, out, rk->err))) goto out;
    }
out:
    wk_ctx_destroy(&c);
    wk_kv_cache_destroy(&kv);
    wk_model_free(&m);
    return NULL;
}

static float *run_tp(const char *path, int world, const int *ids, int V) {
    group_t g = {.world = world};
    pthread_barrier_init(&g.bar, NULL, (unsigned)world);
    rank_t rk[MAX_TP];
    pthread_t th[MAX_TP];
    float *logits = calloc((size_t)(PROMPT + DECODE) * V, sizeof(float));
    for (int r = 0; r < world; r++) {
        g.tmp[r] = malloc(sizeof(float) * PROMPT * 4096);
        rk[r] =
            (rank_t){.g = &g, .r = r, .path = path, .ids = ids, .logits = r == 0 ? logits : NULL};
        pthread_create(&th[r], NULL, rank_main, &rk[r]);
    }
    for (int r = 0; r < world; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < world; r++) {
        if (rk[r].rc) fail_msg("tp %d rank %d: %s", world, r, rk[r].err);
        free(g.tmp[r]);
    }
    pthread_barrier_destroy(&g.bar);
    return logits;
}

static void check_tp(const char *path, const int *tps, int n_tps) {
    char err[LT_ERR_LEN];
    wk_model_t *m;
    if (wk_model_load(path, NULL, &m, err)) fail_msg("%s", err);
    int V = m->cfg.vocab_size;
    assert_true(m->cfg.dim <= 4096);
    wk_model_free(&m);
    int ids[PROMPT + DECODE];
    for (int i = 0; i < PROMPT; i++) ids[i] = (i * 131 + 7) % V;
    /* reference: unsharded; its greedy continuation decides the decode tokens for everyone */
    for (int d = 0; d < DECODE; d++) ids[PROMPT + d] = -1;
    float *ref = run_tp(path, 1, ids, V);
    free(ref);
    ref = run_tp(path, 1, ids, V);
    for (int t = 0; t < n_tps; t++) {
        float *got = run_tp(path, tps[t], ids, V);
        double worst_pre = tu_logit_diff(got, ref, PROMPT, V),
               worst = tu_logit_diff(got, ref, PROMPT + DECODE, V);
        printf("%s: TP=%d worst logit difference %.2e of the range (prefill %.2e)\n", path, tps[t],
               worst, worst_pre);
        /* Every product reads quantized weights with int16-quantized activations (kn_qmatmul):
         * once the all-reduce's summation order changes an upstream sum in its last bit, the
         * activations' rounding can flip differently. On the random fp32 models that leaves
         * ~1e-7 of the range; on the default model, with its outlier activations, ~4e-4 — the
         * same scale as our difference from transformers, and inside the reference test's 1e-3. */
        assert_true(worst_pre < 1e-3);
        assert_true(worst < 1e-3);
        for (int row = PROMPT - 1; row < PROMPT + DECODE; row++) {
            const float *a = got + (size_t)row * V, *b = ref + (size_t)row * V;
            int ia = 0, ib = 0;
            for (int v = 1; v < V; v++) {
                if (a[v] > a[ia]) ia = v;
                if (b[v] > b[ib]) ib = v;
            }
            if (ia != ib && fabsf(b[ia] - b[ib]) > 1e-3f * fabsf(b[ib]))
                fail_msg("TP=%d row %d: argmax %d vs %d (logits %f vs %f)", tps[t], row, ia, ib,
                         b[ia], b[ib]);
        }
        free(got);
    }
    free(ref);
}

static const char *random_model(const char *name) {
    static char buf[4096];
    const char *dir = getenv("LANTERN_MODELS_DIR");
    if (!dir) fail_msg("LANTERN_MODELS_DIR is not set: run through ctest");
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static void test_qwen3_tp(void **state) {
    int tps[] = {2, 4};
    check_tp(random_model("qwen3-tiny"), tps, 2);
}

static void test_qwen2_tp(void **state) {
    int tps[] = {2, 4};
    check_tp(random_model("qwen2-tiny"), tps, 2);
}

/* Q4_K/Q5_K/Q6_K matrices split across ranks (o_proj's 256 columns into slices of 128 and 64,
 * inside a super-block). */
static void test_kquant_tp(void **state) {
    char path[4200];
    snprintf(path, sizeof path, "%s/model.gguf", random_model("llama-kquant-gguf"));
    int tps[] = {2, 4};
    check_tp(path, tps, 2);
}

static void test_default_tp3(void **state) {
    const char *p = tu_default_model();
    if (!p) skip();
    int tps[] = {3};
    check_tp(p, tps, 1);
}

static void test_bad_tp(void **state) {
    char err[LT_ERR_LEN];
    wk_model_t *m;
    wk_load_opts_t o = {.tp_rank = 0, .tp_size = 3}; /* 8 heads do not split 3 ways */
    assert_int_equal(wk_model_load(random_model("qwen3-tiny"), &o, &m, err), LT_ERR_INVAL);
    assert_non_null(strstr(err, "tensor-parallel size 3"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3_tp),  cmocka_unit_test(test_qwen2_tp),
        cmocka_unit_test(test_kquant_tp), cmocka_unit_test(test_default_tp3),
        cmocka_unit_test(test_bad_tp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
