/*
 * test_forward.c — the CPU forward pass against Hugging Face transformers.
 *
 * For the default model and the random-weight models of tools/random_models.json, runs the
 * reference prompts (tests/fixtures/reference_<name>.json, from tools/gen_reference.py) and
 * checks: at every prompt position our logits for the reference top-20 ids differ by at most
 * 1e-3 x the logit range, the argmax agrees, and the 32-token greedy continuation is identical.
 * Also checks that chunked prefill, several sequences in one batch, and scattered KV blocks give
 * the same logits as one whole-prompt pass.
 *
 * Random models are made by the ctest fixture `random_models` into $LANTERN_MODELS_DIR.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"
#include "testutil.h"
#include "worker.h"

#define BS 16

/* The KV cache's element type for the next run_init: F16 is what lantern serves with by default,
 * F32 the exact path, BF16 the third option. */
static int g_kv_dtype = LT_DTYPE_F32;

/* ---- helpers ---- */

static cJSON *load_json(const char *path) {
    char *text, err[LT_ERR_LEN];
    if (lt_read_file(path, &text, NULL, err) != LT_OK) fail_msg("%s", err);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) fail_msg("%s: bad JSON", path);
    return j;
}

static int *json_ints(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int *v = malloc((size_t)*n * sizeof *v);
    for (int i = 0; i < *n; i++) v[i] = cJSON_GetArrayItem(arr, i)->valueint;
    return v;
}

/* A single sequence on a fresh cache, fed in chunks of `chunk` tokens. */
typedef struct run {
    wk_kv_cache_t *kv;
    wk_ctx_t *ctx;
    int32_t table[256];
    int n_blocks, len;
} run_t;

static void run_init(run_t *r, const wk_model_t *m, int max_ctx, bool scatter) {
    char err[LT_ERR_LEN];
    memset(r, 0, sizeof *r);
    r->n_blocks = (max_ctx + BS - 1) / BS;
    assert_true(r->n_blocks <= 128);
    int total_blocks = scatter ? 2 * r->n_blocks + 3 : r->n_blocks;
    assert_int_equal(wk_kv_cache_create(m, total_blocks, BS, g_kv_dtype, &r->kv, err), 0);
    assert_int_equal(wk_ctx_create(m, max_ctx, max_ctx, &r->ctx, err), 0);
    for (int i = 0; i < r->n_blocks; i++)
        r->table[i] = scatter ? total_blocks - 1 - 2 * i : i; /* reversed, with gaps */
}

static void run_fini(run_t *r) {
    wk_kv_cache_destroy(&r->kv);
    wk_ctx_destroy(&r->ctx);
}

/* Feeds n tokens; writes logits for all of them to out (n, vocab). */
static void run_feed(run_t *r, const wk_model_t *m, const int *ids, int n, float *out) {
    char err[LT_ERR_LEN];
    int32_t tok[512], pos[512], seq[512], rows[512];
    assert_true(n <= 512);
    for (int i = 0; i < n; i++) {
        tok[i] = ids[i];
        pos[i] = r->len + i;
        seq[i] = 0;
        rows[i] = i;
    }
    const int32_t *tables[1] = {r->table};
    int32_t tl[1] = {r->n_blocks};
    wk_batch_t b = {.n_tokens = n,
                    .tokens = tok,
                    .pos = pos,
                    .seq = seq,
                    .n_seqs = 1,
                    .block_tables = tables,
                    .block_table_len = tl,
                    .n_logits = n,
                    .logits_rows = rows};
    int rc = wk_forward(m, r->kv, r->ctx, &b, out, err);
    if (rc) fail_msg("forward: %s", err);
    r->len += n;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* ---- comparison against a reference fixture ---- */

static void check_reference(const char *model_path, const char *fixture, int kv_dtype) {
    g_kv_dtype = kv_dtype;
    char err[LT_ERR_LEN];
    wk_model_t *m;
    if (wk_model_load(model_path, NULL, &m, err) != LT_OK) fail_msg("%s", err);
    cJSON *ref = load_json(tu_fixture(fixture));
    int vocab = m->cfg.vocab_size;
    const cJSON *cases = cJSON_GetObjectItem(ref, "cases");
    int n_cases = cJSON_GetArraySize(cases);
    assert_true(n_cases >= 4);
    double worst = 0.0;
    for (int ci = 0; ci < n_cases; ci++) {
        const cJSON *cs = cJSON_GetArrayItem(cases, ci);
        int n_prompt, n_greedy;
        int *prompt = json_ints(cJSON_GetObjectItem(cs, "prompt_ids"), &n_prompt);
        int *greedy = json_ints(cJSON_GetObjectItem(cs, "greedy"), &n_greedy);
        const cJSON *margins = cJSON_GetObjectItem(cs, "greedy_margin");
        const cJSON *positions = cJSON_GetObjectItem(cs, "positions");
        assert_int_equal(cJSON_GetArraySize(positions), n_prompt);

        run_t r;
        run_init(&r, m, n_prompt + n_greedy, false);
        float *logits = malloc((size_t)n_prompt * vocab * sizeof(float));
        run_feed(&r, m, prompt, n_prompt, logits);
        for (int p = 0; p < n_prompt; p++) {
            const cJSON *pp = cJSON_GetArrayItem(positions, p);
            double range = cJSON_GetObjectItem(pp, "max")->valuedouble -
                           cJSON_GetObjectItem(pp, "min")->valuedouble;
            const cJSON *ids = cJSON_GetObjectItem(pp, "ids");
            const cJSON *vals = cJSON_GetObjectItem(pp, "logits");
            const float *row = logits + (size_t)p * vocab;
            for (int k = 0; k < cJSON_GetArraySize(ids); k++) {
                int id = cJSON_GetArrayItem(ids, k)->valueint;
                double d = fabs(row[id] - cJSON_GetArrayItem(vals, k)->valuedouble) / range;
                if (d > worst) worst = d;
                if (d > 1e-3)
                    fail_msg("%s case %d position %d id %d: ours %.6f, reference %.6f (range "
                             "%.3f)",
                             fixture, ci, p, id, row[id], cJSON_GetArrayItem(vals, k)->valuedouble,
                             range);
            }
            /* The argmax agrees, or the reference itself has a near tie (top two within the
             * logit tolerance, 1e-3 of the range) and ours is the runner-up. */
            int ours = argmax(row, vocab), top = cJSON_GetArrayItem(ids, 0)->valueint;
            if (ours != top) {
                double gap = cJSON_GetArrayItem(vals, 0)->valuedouble -
                             cJSON_GetArrayItem(vals, 1)->valuedouble;
                if (!(ours == cJSON_GetArrayItem(ids, 1)->valueint && gap < 1e-3 * range))
                    fail_msg("%s case %d position %d: argmax %d, reference %d (reference top-2 "
                             "gap %.2e of the range)",
                             fixture, ci, p, ours, top, gap / range);
                print_message("%s case %d position %d: near tie (gap %.2e of the range), ours is "
                              "the reference's runner-up\n",
                              fixture, ci, p, gap / range);
            }
        }
        /* greedy continuation, one token at a time */
        float *last = malloc((size_t)vocab * sizeof(float));
        memcpy(last, logits + (size_t)(n_prompt - 1) * vocab, (size_t)vocab * sizeof(float));
        for (int g = 0; g < n_greedy; g++) {
            int ours = argmax(last, vocab);
            if (ours != greedy[g]) {
                double margin = cJSON_GetArrayItem(margins, g)->valuedouble;
                fail_msg("%s case %d greedy step %d: ours %d, reference %d (reference top-2 "
                         "margin %.2e)",
                         fixture, ci, g, ours, greedy[g], margin);
            }
            run_feed(&r, m, &ours, 1, last);
        }
        free(last);
        free(logits);
        free(prompt);
        free(greedy);
        run_fini(&r);
    }
    printf("%s: %d cases, KV cache %s, worst top-%d logit difference %.2e of the range\n", fixture,
           n_cases, lt_dtype_name(kv_dtype), cJSON_GetObjectItem(ref, "top")->valueint, worst);
    cJSON_Delete(ref);
    wk_model_free(&m);
}

static const char *random_model(const char *name) {
    static char buf[4096];
    const char *dir = getenv("LANTERN_MODELS_DIR");
    if (!dir) fail_msg("LANTERN_MODELS_DIR is not set: run through ctest (fixture random_models)");
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

/* ---- tests ---- */

static void test_default_model(void **state) {
    const char *path = tu_default_model();
    if (!path) {
        printf("default model absent: run tools/fetch_model.sh\n");
        skip();
    }
    check_reference(path, "reference_default.json", LT_DTYPE_F16);
    check_reference(path, "reference_default.json", LT_DTYPE_F32);
}

static void test_qwen2_tiny(void **state) {
    check_reference(random_model("qwen2-tiny"), "reference_qwen2-tiny.json", LT_DTYPE_F32);
    check_reference(random_model("qwen2-tiny"), "reference_qwen2-tiny.json", LT_DTYPE_BF16);
}

static void test_qwen3_tiny(void **state) {
    check_reference(random_model("qwen3-tiny"), "reference_qwen3-tiny.json", LT_DTYPE_F16);
}

static void test_llama_tiny(void **state) {
    check_reference(random_model("llama-tiny"), "reference_llama-tiny.json", LT_DTYPE_F32);
}

/* The same random weights written as GGUF (q/k rows permuted as llama.cpp's converter does)
 * must give the HF reference too: checks the adjacent-pair RoPE path. */
static void test_llama_tiny_gguf(void **state) {
    char path[4200];
    snprintf(path, sizeof path, "%s/model.gguf", random_model("llama-tiny-gguf"));
    check_reference(path, "reference_llama-tiny.json", LT_DTYPE_F16);
}

/* A model whose matrices are quantized blocks of random bytes against the same model dequantized
 * to F32 (tools/make_random_model.py --dtype kquant|q5 --dequantized-twin): the kernels end to
 * end, through the loader, the forward pass and the LM head. Logits within 1e-3 of the range at
 * every prompt position (the int16 activations' rounding, as against transformers), the same
 * greedy continuation. */
static void check_twin(const char *model) {
    char path[4200], twin[4200], err[LT_ERR_LEN];
    snprintf(path, sizeof path, "%s/model.gguf", random_model(model));
    snprintf(twin, sizeof twin, "%s/twin.gguf", random_model(model));
    wk_model_t *mq, *mf;
    if (wk_model_load(path, NULL, &mq, err) != LT_OK) fail_msg("%s", err);
    if (wk_model_load(twin, NULL, &mf, err) != LT_OK) fail_msg("%s", err);
    g_kv_dtype = LT_DTYPE_F32;
    enum { N = 24, GREEDY = 16 };
    int vocab = mq->cfg.vocab_size, ids[N];
    for (int i = 0; i < N; i++) ids[i] = (i * 37 + 11) % vocab;
    float *lq = malloc((size_t)N * vocab * sizeof(float)),
          *lf = malloc((size_t)N * vocab * sizeof(float));
    run_t rq, rf;
    run_init(&rq, mq, N + GREEDY, false);
    run_init(&rf, mf, N + GREEDY, false);
    run_feed(&rq, mq, ids, N, lq);
    run_feed(&rf, mf, ids, N, lf);
    double worst = tu_logit_diff(lq, lf, N, vocab);
    printf("%s against its F32 twin: worst logit difference %.2e of the range\n", model, worst);
    assert_true(worst < 1e-3);
    int tq = argmax(lq + (size_t)(N - 1) * vocab, vocab),
        tf = argmax(lf + (size_t)(N - 1) * vocab, vocab);
    for (int g = 0; g < GREEDY; g++) {
        if (tq != tf) fail_msg("%s greedy step %d: %d, F32 twin %d", model, g, tq, tf);
        run_feed(&rq, mq, &tq, 1, lq);
        run_feed(&rf, mf, &tf, 1, lf);
        tq = argmax(lq, vocab);
        tf = argmax(lf, vocab);
    }
    run_fini(&rq);
    run_fini(&rf);
    free(lq);
    free(lf);
    wk_model_free(&mq);
    wk_model_free(&mf);
}

/* Q4_K/Q5_K/Q6_K super-blocks (llama.cpp's Q4_K_M mix). */
static void test_kquant_gguf(void **state) {
    check_twin("llama-kquant-gguf");
}

/* Q5_0/Q5_1 blocks on dims that are multiples of 32, not of 256. */
static void test_q5_gguf(void **state) {
    check_twin("llama-q5-gguf");
}

/* Chunked prefill, scattered blocks and a two-sequence batch agree with one whole pass. */
static void test_batching_equivalence(void **state) {
    char err[LT_ERR_LEN];
    wk_model_t *m;
    if (wk_model_load(random_model("qwen3-tiny"), NULL, &m, err) != LT_OK) fail_msg("%s", err);
    int vocab = m->cfg.vocab_size;
    int ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (i * 37 + 11) % vocab;
    float *whole = malloc(40 * (size_t)vocab * sizeof(float));
    float *part = malloc(40 * (size_t)vocab * sizeof(float));
    run_t r;
    g_kv_dtype = LT_DTYPE_F32;
    run_init(&r, m, 40, false);
    run_feed(&r, m, ids, 40, whole);
    run_fini(&r);

    run_init(&r, m, 40, true);
    int chunks[] = {7, 1, 16, 3, 13};
    int at = 0;
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
        run_feed(&r, m, ids + at, chunks[c], part + (size_t)at * vocab);
        at += chunks[c];
    }
    assert_int_equal(at, 40);
    run_fini(&r);
    for (size_t i = 0; i < 40 * (size_t)vocab; i++)
        if (fabsf(whole[i] - part[i]) > 1e-4f * (1.0f + fabsf(whole[i])))
            fail_msg("chunked logit %zu: %f vs %f", i, part[i], whole[i]);

    /* two sequences interleaved in one batch: seq 0 = ids[0..20), seq 1 = ids[20..40) */
    wk_kv_cache_t *kv;
    wk_ctx_t *ctx;
    assert_int_equal(wk_kv_cache_create(m, 8, BS, LT_DTYPE_F32, &kv, err), 0);
    assert_int_equal(wk_ctx_create(m, 40, 40, &ctx, err), 0);
    int32_t t0[2] = {5, 2}, t1[2] = {0, 7};
    const int32_t *tables[2] = {t0, t1};
    int32_t tl[2] = {2, 2};
    int32_t tok[40], pos[40], seq[40], rows[40];
    for (int i = 0; i < 40; i++) {
        int s = i % 2, k = i / 2; /* interleave */
        tok[i] = ids[s * 20 + k];
        pos[i] = k;
        seq[i] = s;
        rows[i] = i;
    }
    wk_batch_t b = {.n_tokens = 40,
                    .tokens = tok,
                    .pos = pos,
                    .seq = seq,
                    .n_seqs = 2,
                    .block_tables = tables,
                    .block_table_len = tl,
                    .n_logits = 40,
                    .logits_rows = rows};
    assert_int_equal(wk_forward(m, kv, ctx, &b, part, err), 0);
    /* sequence 0's logits must equal the first 20 positions of the whole pass */
    for (int i = 0; i < 40; i += 2) {
        const float *a = part + (size_t)i * vocab, *w = whole + (size_t)(i / 2) * vocab;
        for (int v = 0; v < vocab; v++)
            if (fabsf(a[v] - w[v]) > 1e-4f * (1.0f + fabsf(w[v])))
                fail_msg("batched seq 0 pos %d logit %d: %f vs %f", i / 2, v, a[v], w[v]);
    }
    /* a malformed batch is refused, not crashed on */
    int32_t bad_tok = vocab;
    b.n_tokens = 1;
    b.tokens = &bad_tok;
    b.n_logits = 0;
    assert_int_equal(wk_forward(m, kv, ctx, &b, part, err), LT_ERR_INVAL);
    int32_t bad_pos = 100;
    b.tokens = tok;
    b.pos = &bad_pos;
    assert_int_equal(wk_forward(m, kv, ctx, &b, part, err), LT_ERR_INVAL);
    wk_kv_cache_destroy(&kv);
    wk_ctx_destroy(&ctx);
    free(whole);
    free(part);
    wk_model_free(&m);
}

/* Batch invariance: a sequence's logits are bit-identical whether its 12 prompt tokens go through
 * the forward pass at once, in chunks of 5/4/3, one by one, or batched after 1..63 other
 * sequences' tokens (which shift its rows across the kernels' row groups). Needs quantized weights:
 * the default model. */
static void last_logits(const wk_model_t *m, const int *ids, const int *chunks, int n_chunks,
                        float *out) {
    int vocab = m->cfg.vocab_size, done = 0;
    run_t r;
    g_kv_dtype = LT_DTYPE_F16;
    run_init(&r, m, 32, false);
    float *all = malloc((size_t)12 * vocab * sizeof(float));
    for (int c = 0; c < n_chunks; c++) {
        run_feed(&r, m, ids + done, chunks[c], all);
        done += chunks[c];
    }
    memcpy(out, all + (size_t)(chunks[n_chunks - 1] - 1) * vocab, (size_t)vocab * sizeof(float));
    free(all);
    run_fini(&r);
}

/* Last logits of a 700-token sequence fed in chunks (sizes), on a fresh fp16 cache. */
static void long_last(const wk_model_t *m, const int *ids, const int *sizes, int n_sizes, int row,
                      float *out) {
    int vocab = m->cfg.vocab_size, done = 0;
    run_t r;
    g_kv_dtype = LT_DTYPE_F16;
    run_init(&r, m, 704, true);
    float *all = malloc((size_t)512 * vocab * sizeof(float));
    for (int c = 0; c < n_sizes; c++) {
        run_feed(&r, m, ids + done, sizes[c], all);
        done += sizes[c];
    }
    assert_int_equal(done, 700);
    memcpy(out, all + (size_t)row * vocab, (size_t)vocab * sizeof(float));
    free(all);
    run_fini(&r);
}

/* Attention over more positions than one chunk (backend_cpu.c: 256): position 699 gives the same
 * bits decoded alone (chunks spread over threads) and as a row of a large prefill (whole pairs per
 * thread), and agrees with one single chunk (LANTERN_ATTENTION_CHUNK) to rounding. */
static void test_long_context_chunks(void **state) {
    (void)state;
    wk_model_t *m;
    char err[LT_ERR_LEN];
    if (wk_model_load(random_model("qwen3-tiny"), NULL, &m, err) != LT_OK) fail_msg("%s", err);
    int vocab = m->cfg.vocab_size, ids[700];
    for (int i = 0; i < 700; i++) ids[i] = (i * 7919 + 13) % vocab;
    size_t bytes = (size_t)vocab * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes), *one = malloc(bytes);
    static const int decode[] = {512, 187, 1}, prefill[] = {350, 350};
    long_last(m, ids, decode, 3, 0, a);
    long_last(m, ids, prefill, 2, 349, b);
    assert_memory_equal(a, b, bytes);
    setenv("LANTERN_ATTENTION_CHUNK", "4096", 1); /* read when the backend is made */
    wk_model_t *m1;
    if (wk_model_load(random_model("qwen3-tiny"), NULL, &m1, err) != LT_OK) fail_msg("%s", err);
    unsetenv("LANTERN_ATTENTION_CHUNK");
    long_last(m1, ids, decode, 3, 0, one);
    wk_model_free(&m1);
    double worst = 0, lo = one[0], hi = one[0];
    for (int v = 0; v < vocab; v++) {
        lo = fmin(lo, one[v]);
        hi = fmax(hi, one[v]);
        worst = fmax(worst, fabs((double)a[v] - one[v]));
    }
    if (!(worst <= 1e-4 * (hi - lo))) fail_msg("chunked vs one chunk: %g of %g", worst, hi - lo);
    assert_true(memcmp(a, one, bytes) != 0); /* the two really are different arithmetic */
    free(a);
    free(b);
    free(one);
    wk_model_free(&m);
}

/* The 12-token sequence ids after `others` other sequences of 1..4 tokens each, in one batch;
 * writes the last row's logits. */
static void batched_logits(const wk_model_t *m, const int *ids, int others, float *out) {
    char err[LT_ERR_LEN];
    int vocab = m->cfg.vocab_size, n_seqs = others + 1;
    int32_t tok[512], pos[512], seq[512], tables[64], tl[64], row;
    const int32_t *tp[64];
    int n = 0;
    for (int s = 0; s < others; s++) {
        int len = 1 + s % 4;
        for (int i = 0; i < len; i++, n++) {
            tok[n] = (7919 * (s + 1) + 104729 * i) % vocab;
            pos[n] = i;
            seq[n] = s;
        }
    }
    for (int i = 0; i < 12; i++, n++) {
        tok[n] = ids[i];
        pos[n] = i;
        seq[n] = others;
    }
    for (int s = 0; s < n_seqs; s++) {
        tables[s] = n_seqs - 1 - s; /* one block each (all lengths <= BS), reversed */
        tp[s] = &tables[s];
        tl[s] = 1;
    }
    row = n - 1;
    wk_kv_cache_t *kv;
    wk_ctx_t *ctx;
    assert_int_equal(wk_kv_cache_create(m, n_seqs, BS, LT_DTYPE_F16, &kv, err), 0);
    assert_int_equal(wk_ctx_create(m, n, BS, &ctx, err), 0);
    wk_batch_t b = {.n_tokens = n,
                    .tokens = tok,
                    .pos = pos,
                    .seq = seq,
                    .n_seqs = n_seqs,
                    .block_tables = tp,
                    .block_table_len = tl,
                    .n_logits = 1,
                    .logits_rows = &row};
    if (wk_forward(m, kv, ctx, &b, out, err)) fail_msg("forward: %s", err);
    wk_kv_cache_destroy(&kv);
    wk_ctx_destroy(&ctx);
}

static void test_batch_invariance(void **state) {
    (void)state;
    const char *path = tu_default_model();
    if (!path) skip();
    char err[LT_ERR_LEN];
    wk_model_t *m;
    if (wk_model_load(path, NULL, &m, err) != LT_OK) fail_msg("%s", err);
    int vocab = m->cfg.vocab_size;
    static const int ids[12] = {504, 3575, 282, 4649, 314, 1345, 30, 5248, 260, 2911, 28, 438};
    static const int whole[] = {12}, parts[] = {5, 4, 3},
                     ones[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    size_t bytes = (size_t)vocab * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes);
    last_logits(m, ids, whole, 1, a);
    last_logits(m, ids, parts, 3, b);
    assert_memory_equal(a, b, bytes);
    last_logits(m, ids, ones, 12, b);
    assert_memory_equal(a, b, bytes);
    for (int others = 1; others <= 63; others++) {
        batched_logits(m, ids, others, b);
        if (memcmp(a, b, bytes) != 0)
            fail_msg("logits differ when batched after %d others", others);
    }
    free(a);
    free(b);
    wk_model_free(&m);
}

/* The shape of the random models below: 2 layers, dim 64, 4 heads over 2 KV heads, 100 tokens. */
static lt_model_config_t small_config(void) {
    lt_model_config_t cfg;
    lt_model_config_defaults(&cfg);
    cfg.n_layer = 2, cfg.dim = 64, cfg.hidden_dim = 96, cfg.n_head = 4, cfg.n_kv_head = 2;
    cfg.head_dim = 16, cfg.vocab_size = 100, cfg.max_seq_len = 64, cfg.rope_neox = true;
    return cfg;
}

/* The logits of five ids through a random model of `type` made twice with seed 7: finite, not all
 * the same, the same bits both times; each model's counted weight bytes must be `bytes`. */
static void random_model_runs(const lt_model_config_t *cfg, int type, size_t bytes) {
    char err[LT_ERR_LEN];
    static const int ids[5] = {3, 14, 15, 92, 65};
    float a[5 * 100], b[5 * 100], *out[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        wk_model_t *m;
        if (wk_model_random(cfg, type, NULL, 7, &m, err)) fail_msg("%s", err);
        assert_int_equal(m->weight_bytes, bytes);
        run_t r = {0};
        run_init(&r, m, 16, false);
        run_feed(&r, m, ids, 5, out[k]);
        run_fini(&r);
        wk_model_free(&m);
    }
    double spread = 0;
    for (int j = 0; j < 5 * 100; j++) {
        if (!isfinite(a[j])) fail_msg("%s: logit %d not finite", lt_dtype_name(type), j);
        spread += fabs(a[j] - a[0]);
    }
    assert_memory_equal(a, b, sizeof a);
    if (spread == 0) fail_msg("%s: every logit the same", lt_dtype_name(type));
}

/* Weight bytes of a random model of cfg (vocab 100, tied embeddings counted twice, no biases)
 * in `type`. */
static size_t random_model_bytes(const lt_model_config_t *c, int type) {
    size_t q = (size_t)c->n_head * c->head_dim, kv = (size_t)c->n_kv_head * c->head_dim;
    size_t per_layer = (size_t)lt_dtype_nbytes(type, c->dim) * (q + 2 * kv + 2 * c->hidden_dim) +
                       (size_t)lt_dtype_nbytes(type, (int64_t)q) * c->dim +
                       (size_t)lt_dtype_nbytes(type, c->hidden_dim) * c->dim;
    return c->n_layer * per_layer + 2 * (size_t)lt_dtype_nbytes(type, c->dim) * c->vocab_size;
}

/* wk_model_random: every type it makes runs, the same seed gives the same logits, the weights
 * are counted, and a type or shape it cannot make is refused. */
static void test_random_model(void **state) {
    (void)state;
    char err[LT_ERR_LEN];
    lt_model_config_t cfg = small_config();
    static const int types[] = {LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q8_0,
                                LT_DTYPE_F16,  LT_DTYPE_BF16, LT_DTYPE_F32};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        random_model_runs(&cfg, types[i], random_model_bytes(&cfg, types[i]));
    wk_model_t *m = NULL;
    assert_int_equal(wk_model_random(&cfg, LT_DTYPE_Q6_K, NULL, 7, &m, err), LT_ERR_INVAL);
    assert_null(m);
    assert_non_null(strstr(err, "Q6_K"));
    /* Q4_K: super-blocks of 256, so dimensions of 64 are refused and multiples of 256 run */
    assert_int_equal(wk_model_random(&cfg, LT_DTYPE_Q4_K, NULL, 7, &m, err), LT_ERR_INVAL);
    assert_null(m);
    assert_non_null(strstr(err, "multiples of 256"));
    cfg.dim = 256, cfg.hidden_dim = 512, cfg.n_head = 4, cfg.n_kv_head = 2, cfg.head_dim = 64;
    random_model_runs(&cfg, LT_DTYPE_Q4_K, random_model_bytes(&cfg, LT_DTYPE_Q4_K));
}

/* ---- recorded steps (backend.h): forward.c's side of the contract, with a CPU backend whose
 * graph operations are the test's ---- */

static struct {
    int begins, records, ends, resets, equal;
    int script[8]; /* graph_begin's answers, in turn */
    float ref[4 * 100];
    size_t n;
} g_rec;

static int fake_begin(wk_backend_t *be, const void *kv, const void *ctx, int n_logits) {
    (void)be, (void)kv, (void)ctx, (void)n_logits;
    return g_rec.script[g_rec.begins++ % 8];
}

static int fake_record(wk_backend_t *be, const float *ref, size_t n, char *err) {
    (void)be, (void)err;
    assert_true(n <= sizeof g_rec.ref / sizeof *g_rec.ref);
    memcpy(g_rec.ref, ref, n * sizeof(float)); /* CPU backend: host memory */
    g_rec.n = n;
    g_rec.records++;
    return LT_OK;
}

static int fake_end(wk_backend_t *be, float *out, size_t n, int rc, char *err) {
    (void)be, (void)err;
    assert_int_equal(rc, 0);
    assert_int_equal(n, g_rec.n);
    g_rec.equal += memcmp(out, g_rec.ref, n * sizeof(float)) == 0;
    g_rec.ends++;
    return LT_OK;
}

static void fake_reset(wk_backend_t *be) {
    (void)be;
    g_rec.resets++;
}

/* A step forward.c records (its operations run twice: eagerly, then "recorded") gives the same
 * logits and the same cache as the plain step; graph_begin is not asked for --enforce-eager
 * scratch or for more than 32 logits rows; a cache or scratch going away resets recordings. */
static void test_graph_contract(void **state) {
    (void)state;
    char err[LT_ERR_LEN];
    lt_model_config_t cfg = small_config();
    wk_model_t *m;
    if (wk_model_random(&cfg, LT_DTYPE_Q8_0, NULL, 3, &m, err)) fail_msg("%s", err);
    static wk_backend_ops_t ops;
    const wk_backend_ops_t *plain = m->be->ops;
    ops = *plain;
    ops.graph_begin = fake_begin, ops.graph_record = fake_record, ops.graph_end = fake_end;
    ops.graph_reset = fake_reset;
    memset(&g_rec, 0, sizeof g_rec);
    g_rec.script[0] = WK_GRAPH_OFF, g_rec.script[1] = WK_GRAPH_RECORD;
    g_rec.script[2] = WK_GRAPH_RECORD, g_rec.script[3] = WK_GRAPH_OFF;
    static const int ids[6] = {5, 17, 42, 8, 99, 1};
    float want[6 * 100], got[6 * 100];
    run_t a = {0}, b = {0};
    run_init(&a, m, 16, false);
    run_feed(&a, m, ids, 3, want); /* plain: prefill 3, then 3 single tokens */
    for (int i = 3; i < 6; i++) run_feed(&a, m, ids + i, 1, want + i * 100);
    run_init(&b, m, 16, false);
    m->be->ops = &ops;
    run_feed(&b, m, ids, 3, got); /* 3 logits rows: OFF */
    for (int i = 3; i < 6; i++)
        run_feed(&b, m, ids + i, 1, got + i * 100); /* RECORD, RECORD, OFF */
    assert_int_equal(g_rec.begins, 4);
    assert_int_equal(g_rec.records, 2);
    assert_int_equal(g_rec.ends, 2);
    assert_int_equal(g_rec.equal, 2); /* the second run of each recorded step matched the first */
    assert_memory_equal(want, got, sizeof want);
    const wk_kv_cache_t *kv = a.kv;
    size_t kv_bytes = (size_t)kv->n_layer * kv->n_blocks * kv->n_kv_head * kv->block_size *
                      kv->head_dim * (kv->dtype == LT_DTYPE_F32 ? 4 : 2);
    assert_memory_equal(a.kv->k, b.kv->k, kv_bytes);
    assert_memory_equal(a.kv->v, b.kv->v, kv_bytes);
    /* --enforce-eager: not asked */
    wk_ctx_set_eager(b.ctx, true);
    int before = g_rec.begins;
    float one[100];
    run_feed(&b, m, ids, 1, one);
    assert_int_equal(g_rec.begins, before);
    wk_ctx_set_eager(b.ctx, false);
    run_feed(&b, m, ids, 1, one);
    assert_int_equal(g_rec.begins, before + 1);
    /* more than 32 logits rows: not asked */
    run_t c = {0};
    run_init(&c, m, 48, false);
    static int many[40];
    static float many_logits[40 * 100];
    before = g_rec.begins;
    run_feed(&c, m, many, 40, many_logits);
    assert_int_equal(g_rec.begins, before);
    run_fini(&c);
    int resets = g_rec.resets;
    run_fini(&b);
    assert_int_equal(g_rec.resets, resets + 2); /* the cache and the scratch */
    m->be->ops = plain;
    run_fini(&a);
    wk_model_free(&m);
}

/* --gpu-memory-utilization's arithmetic: free - (1 - util) * total, in whole blocks. */
static void test_kv_blocks_for(void **state) {
    (void)state;
    char err[LT_ERR_LEN];
    long long n = -1;
    const size_t G = 1ull << 30;
    /* 80 GiB device, 60 free after the model: 0.9 keeps 8 GiB back, 52 GiB of 2 MiB blocks */
    assert_int_equal(wk_kv_blocks_for(60 * G, 80 * G, 0.9, 2u << 20, &n, err), 0);
    assert_int_equal(n, 52 * 512);
    assert_int_equal(wk_kv_blocks_for(60 * G, 80 * G, 1.0, 2u << 20, &n, err), 0);
    assert_int_equal(n, 60 * 512);
    /* what is kept back exceeds what is free: a clear error with the figures */
    assert_int_equal(wk_kv_blocks_for(10 * G, 80 * G, 0.8, 2u << 20, &n, err), LT_ERR_RANGE);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err, "10.00 GiB free of 80.00 GiB"));
    assert_non_null(strstr(err, "--gpu-memory-utilization"));
    assert_int_equal(wk_kv_blocks_for(10 * G, 80 * G, 0.0, 2u << 20, &n, err), LT_ERR_INVAL);
    assert_int_equal(wk_kv_blocks_for(10 * G, 80 * G, 1.5, 2u << 20, &n, err), LT_ERR_INVAL);
    /* capped like --kv-cache-memory */
    assert_int_equal(wk_kv_blocks_for(1000 * G, 1000 * G, 1.0, 1024, &n, err), 0);
    assert_int_equal(n, 1 << 24);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_blocks_for),        cmocka_unit_test(test_graph_contract),
        cmocka_unit_test(test_random_model),         cmocka_unit_test(test_default_model),
        cmocka_unit_test(test_qwen2_tiny),           cmocka_unit_test(test_qwen3_tiny),
        cmocka_unit_test(test_llama_tiny),           cmocka_unit_test(test_llama_tiny_gguf),
        cmocka_unit_test(test_kquant_gguf),          cmocka_unit_test(test_q5_gguf),
        cmocka_unit_test(test_batching_equivalence), cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_long_context_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
