/*
 * test_sched.c — the scheduler driven by a fake model. The fake model keeps a simulated KV cache
 * (token id and position per slot), writes every planned token into the slot its block table
 * names, and derives each sampled token from the whole context read back through the block table.
 * So a wrong block table, a bad prefix hit, a lost block after preemption or a wrong position
 * changes the tokens (and trips the slot checks), and the outputs of many concurrent requests must
 * equal those of each request run alone.
 *
 * Every plan is checked: budgets, positions inside the table, tokens equal to the request's own,
 * sampling exactly at the end, NEW flags, and no block shared between sequences unless it is a
 * cached full prefix block with refcount >= 2 that nobody writes.
 *
 * The steady-state test counts allocations: this target links with -Wl,--wrap=malloc/calloc/
 * realloc (tests/CMakeLists.txt), so every call from our code goes through the counters below.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "step_model.h"
#include "lt.h"
#include "testutil.h"

/* ---- allocation counting (see tests/CMakeLists.txt) ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
static int g_count_allocs;
static long g_allocs;

void *__wrap_malloc(size_t n) {
    if (g_count_allocs) g_allocs++;
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m) {
    if (g_count_allocs) g_allocs++;
    return __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n) {
    if (g_count_allocs) g_allocs++;
    return __real_realloc(p, n);
}

/* ---- harness: requests as the test sees them, and the fake model ---- */

#define V       1000
#define EOS     3
#define MAXT    1024
#define MAXREQ  128
#define ID_BASE 7000

typedef struct treq {
    bool used, added, done, known;
    bool preempt_pending; /* preempted: the next schedule must say NEW|RESUMED */
    int32_t toks[MAXT];
    int n_prompt, n;
    eng_req_params_t p;
    int32_t stop[4];
    eng_finish_t finish;
    int n_cached;
    int order; /* add order: FCFS priority */
} treq_t;

typedef struct slot {
    int32_t tok, pos;
} slot_t;

typedef struct harness {
    eng_sched_config_t cfg;
    eng_sched_t *s;
    treq_t *r; /* (MAXREQ) indexed by id - ID_BASE */
    slot_t *kv;
    int32_t *owner, *owner_written;
    uint64_t now;
    int steps, max_seqs, multi_steps, preempted, sampled_total, n_added;
    int eos_always; /* fake model emits EOS every time */
    int32_t sampled[1024];
} harness_t;

static void h_init(harness_t *h, const eng_sched_config_t *cfg) {
    memset(h, 0, sizeof *h);
    h->cfg = *cfg;
    char err[LT_ERR_LEN];
    int rc = eng_sched_create(cfg, &h->s, err);
    if (rc) fprintf(stderr, "create: %s\n", err);
    assert_int_equal(rc, 0);
    h->r = calloc(MAXREQ, sizeof *h->r);
    h->kv = calloc((size_t)cfg->num_blocks * (size_t)cfg->block_size, sizeof *h->kv);
    h->owner = malloc((size_t)cfg->num_blocks * sizeof *h->owner);
    h->owner_written = malloc((size_t)cfg->num_blocks * sizeof *h->owner_written);
    for (int i = 0; i < cfg->num_blocks * cfg->block_size; i++) h->kv[i].pos = -1;
    h->now = 1000000;
}

static void h_fini(harness_t *h) {
    eng_sched_destroy(&h->s);
    assert_null(h->s);
    free(h->r);
    free(h->kv);
    free(h->owner);
    free(h->owner_written);
}

static treq_t *h_req(harness_t *h, uint64_t id) {
    assert_true(id >= ID_BASE && id < ID_BASE + MAXREQ);
    treq_t *r = &h->r[id - ID_BASE];
    assert_true(r->used);
    return r;
}

/* Declares request idx (id ID_BASE + idx) without adding it. */
static treq_t *h_define(harness_t *h, int idx, const int32_t *prompt, int n, int max_tokens) {
    treq_t *r = &h->r[idx];
    memset(r, 0, sizeof *r);
    r->used = true;
    memcpy(r->toks, prompt, (size_t)n * sizeof *prompt);
    r->n_prompt = r->n = n;
    r->p.id = ID_BASE + (uint64_t)idx;
    r->p.prompt = r->toks;
    r->p.n_prompt = n;
    r->p.max_tokens = max_tokens;
    r->p.eos_id = EOS;
    r->p.stop_token_ids = r->stop;
    return r;
}

static void h_add(harness_t *h, treq_t *r) {
    char err[LT_ERR_LEN];
    int rc = eng_sched_add(h->s, &r->p, h->now, err);
    if (rc) fprintf(stderr, "add: %s\n", err);
    assert_int_equal(rc, 0);
    r->added = true;
    r->order = h->n_added++;
}

static uint64_t ctx_hash(const slot_t *kv, int bs, const int32_t *table, int n) {
    uint64_t x = 1469598103934665603ull;
    for (int p = 0; p < n; p++) {
        x ^= (uint64_t)kv[(size_t)table[p / bs] * (size_t)bs + (size_t)(p % bs)].tok;
        x *= 1099511628211ull;
    }
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 32;
    return x;
}

static int32_t fake_next(uint64_t hash) {
    if (hash % 29 == 0) return EOS;
    return (int32_t)(10 + hash % (V - 10));
}

/* Every invariant a plan must keep. */
static void check_plan(harness_t *h, const eng_plan_t *pl) {
    const eng_sched_config_t *c = &h->cfg;
    int bs = c->block_size;
    assert_true(pl->n_tokens <= c->max_num_batched_tokens);
    assert_true(pl->n_seqs <= c->max_num_seqs);
    for (int b = 0; b < c->num_blocks; b++) h->owner[b] = h->owner_written[b] = -1;
    int rows = 0, sampled = 0;
    for (int k = 0; k < pl->n_seqs; k++) {
        const eng_plan_seq_t *q = &pl->seqs[k];
        treq_t *r = h_req(h, q->id);
        assert_true(r->added && !r->done);
        for (int k2 = 0; k2 < k; k2++) assert_true(pl->seqs[k2].id != q->id);
        assert_true(q->n_tokens >= 1);
        assert_true(q->start_pos >= 0 && q->start_pos + q->n_tokens <= r->n);
        assert_int_equal(q->n_blocks, (q->start_pos + q->n_tokens + bs - 1) / bs);
        assert_true(q->start_pos + q->n_tokens <= q->n_blocks * bs);
        assert_memory_equal(q->tokens, r->toks + q->start_pos, (size_t)q->n_tokens * 4);
        assert_int_equal(q->sample, q->start_pos + q->n_tokens == r->n);
        assert_int_equal(q->n_prompt, r->n_prompt);
        assert_ptr_equal(q->block_table, pl->block_tables[k]);
        assert_int_equal(q->n_blocks, pl->block_table_lens[k]);
        /* NEW on first scheduling and after each preemption, RESUMED only then */
        if (!r->known)
            assert_int_equal(q->flags, ENG_SEQ_NEW);
        else if (r->preempt_pending)
            assert_int_equal(q->flags, ENG_SEQ_NEW | ENG_SEQ_RESUMED);
        else
            assert_int_equal(q->flags, 0);
        if (q->flags & ENG_SEQ_NEW) assert_int_equal(q->start_pos % bs, 0);
        r->known = true;
        r->preempt_pending = false;
        for (int j = 0; j < q->n_tokens; j++, rows++) {
            assert_int_equal(pl->tokens[rows], q->tokens[j]);
            assert_int_equal(pl->pos[rows], q->start_pos + j);
            assert_int_equal(pl->seq_idx[rows], k);
        }
        if (q->sample) {
            assert_true(sampled < pl->n_sampled);
            assert_int_equal(pl->sample_seqs[sampled], k);
            assert_int_equal(pl->sample_rows[sampled], rows - 1);
            sampled++;
        }
        /* block ownership: written blocks exclusive, shared blocks cached, full and read-only */
        int first_written = q->start_pos / bs;
        for (int i = 0; i < q->n_blocks; i++) {
            int32_t b = q->block_table[i];
            assert_true(b >= 0 && b < c->num_blocks);
            bool writes = i >= first_written;
            if (writes) {
                assert_int_equal(eng_kv_block_ref(eng_sched_kv(h->s), b), 1);
                assert_int_equal(h->owner[b], -1);
                assert_int_equal(h->owner_written[b], -1);
                h->owner_written[b] = k;
            } else if (h->owner[b] >= 0 || h->owner_written[b] >= 0) {
                assert_int_equal(h->owner_written[b], -1);
                assert_true(eng_kv_block_ref(eng_sched_kv(h->s), b) >= 2);
                assert_true(eng_kv_block_cached(eng_sched_kv(h->s), b));
            }
            if (!writes) {
                for (int i2 = 0; i2 < i; i2++) assert_true(q->block_table[i2] != b);
                h->owner[b] = k;
            }
        }
    }
    assert_int_equal(rows, pl->n_tokens);
    assert_int_equal(sampled, pl->n_sampled);
    for (int i = 0; i < pl->n_finished; i++) {
        treq_t *r = h_req(h, pl->finished_ids[i]);
        assert_true(r->done && r->known);
        r->known = false;
    }
    for (int i = 0; i < pl->n_preempted; i++) {
        treq_t *r = h_req(h, pl->preempted_ids[i]);
        assert_true(r->known && !r->done);
        /* victims are the latest arrivals: later than everything this step kept running (a step
         * that preempts admits nobody) */
        for (int k = 0; k < pl->n_seqs; k++)
            assert_true(h_req(h, pl->seqs[k].id)->order < r->order);
        r->preempt_pending = true;
        h->preempted++;
    }
}

/* The fake forward pass: writes the step's tokens into the simulated cache, then samples. */
static void fake_forward(harness_t *h, const eng_plan_t *pl) {
    int bs = h->cfg.block_size;
    for (int t = 0; t < pl->n_tokens; t++) {
        const eng_plan_seq_t *q = &pl->seqs[pl->seq_idx[t]];
        int p = pl->pos[t];
        slot_t *sl = &h->kv[(size_t)q->block_table[p / bs] * (size_t)bs + (size_t)(p % bs)];
        sl->tok = pl->tokens[t];
        sl->pos = p;
    }
    for (int m = 0; m < pl->n_sampled; m++) {
        const eng_plan_seq_t *q = &pl->seqs[pl->sample_seqs[m]];
        treq_t *r = h_req(h, q->id);
        int n = q->start_pos + q->n_tokens;
        /* the whole context must be there, in this request's order */
        for (int p = 0; p < n; p++) {
            const slot_t *sl =
                &h->kv[(size_t)q->block_table[p / bs] * (size_t)bs + (size_t)(p % bs)];
            assert_int_equal(sl->pos, p);
            assert_int_equal(sl->tok, r->toks[p]);
        }
        h->sampled[m] = h->eos_always ? EOS : fake_next(ctx_hash(h->kv, bs, q->block_table, n));
    }
}

/* Runs a planned (non-empty, checked) step through the fake model and applies the update,
 * recording outputs; returns the number of outputs. */
static int h_finish(harness_t *h, const eng_plan_t *pl) {
    h->steps++;
    if (pl->n_seqs > h->max_seqs) h->max_seqs = pl->n_seqs;
    if (pl->n_seqs > 1) h->multi_steps++;
    fake_forward(h, pl);
    eng_outputs_t out;
    h->now += 500;
    assert_int_equal(eng_sched_update(h->s, pl, h->sampled, pl->n_sampled, h->now, &out), 0);
    h->sampled_total += pl->n_sampled;
    assert_true(out.n <= pl->n_sampled);
    int fin = 0, m = 0;
    for (int i = 0; i < out.n; i++) {
        const eng_output_t *o = &out.items[i];
        treq_t *r = h_req(h, o->id);
        assert_false(r->done);
        /* outputs follow plan order; find this one's sampled token */
        while (pl->seqs[pl->sample_seqs[m]].id != o->id) m++;
        assert_int_equal(o->token, h->sampled[m]);
        m++;
        assert_true(r->n < MAXT);
        r->toks[r->n++] = o->token;
        assert_int_equal(o->n_output, r->n - r->n_prompt);
        assert_int_equal(o->n_prompt, r->n_prompt);
        assert_non_null(o->events);
        if (o->n_output == 1) assert_true(o->events->first_token_ns == h->now);
        if (o->finish != ENG_FINISH_NONE) {
            r->done = true;
            r->finish = o->finish;
            r->n_cached = o->n_cached_tokens;
            assert_true(o->events->finished_ns == h->now);
            fin++;
        }
    }
    assert_int_equal(fin, out.n_finished);
    return out.n;
}

/* Plans and checks the next step. */
static void h_plan(harness_t *h, eng_plan_t *pl) {
    h->now += 1000;
    assert_int_equal(eng_sched_step(h->s, h->now, pl), 0);
    check_plan(h, pl);
}

/* One step + update; false when the plan was empty. */
static bool h_step(harness_t *h) {
    eng_plan_t pl;
    h_plan(h, &pl);
    if (pl.n_seqs == 0) return false;
    h_finish(h, &pl);
    return true;
}

static void h_run(harness_t *h) {
    for (int guard = 0; eng_sched_has_work(h->s); guard++) {
        assert_true(guard < 200000);
        h_step(h);
    }
    /* one more step releases the last finished requests */
    eng_plan_t pl;
    assert_int_equal(eng_sched_step(h->s, h->now, &pl), 0);
    check_plan(h, &pl);
    assert_int_equal(pl.n_seqs, 0);
}

static uint64_t lcg(uint64_t *x) {
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 33;
}

/* Deterministic prompt for request i; every third shares a 40-token system prompt. */
static int make_prompt(int i, int32_t *out, int max_len) {
    uint64_t x = 12345 + (uint64_t)i * 7919;
    int n = (i % 4 == 0) ? 100 + (int)(lcg(&x) % 100) : 1 + (int)(lcg(&x) % 40);
    int k = 0;
    if (i % 3 == 0) {
        uint64_t y = 999;
        for (; k < 40; k++) out[k] = 10 + (int32_t)(lcg(&y) % (V - 10));
        n += 40;
    }
    if (n > max_len) n = max_len;
    for (; k < n; k++) out[k] = 10 + (int32_t)(lcg(&x) % (V - 10));
    return n;
}

static void base_cfg(eng_sched_config_t *c) {
    eng_sched_config_defaults(c);
    c->num_blocks = 1024;
    c->block_size = 16;
    c->max_num_seqs = 16;
    c->max_num_batched_tokens = 64;
    c->max_model_len = 512;
    c->vocab_size = V;
}

/* Runs request idx alone in a fresh scheduler; its tokens are the reference. */
static void run_single(const eng_sched_config_t *cfg, const treq_t *src, treq_t *dst) {
    harness_t h;
    h_init(&h, cfg);
    treq_t *r = &h.r[src->p.id - ID_BASE];
    h_define(&h, (int)(src->p.id - ID_BASE), src->toks, src->n_prompt, src->p.max_tokens);
    r->p.min_tokens = src->p.min_tokens;
    r->p.ignore_eos = src->p.ignore_eos;
    h_add(&h, r);
    h_run(&h);
    assert_true(r->done);
    *dst = *r;
    assert_int_equal(h.max_seqs, 1);
    h_fini(&h);
}

/* n requests of mixed lengths at once; each must produce exactly its single-run tokens. */
static void run_compare(const eng_sched_config_t *cfg, int n, bool expect_preempt) {
    harness_t h;
    h_init(&h, cfg);
    int32_t prompt[MAXT];
    for (int i = 0; i < n; i++) {
        int np = make_prompt(i, prompt, cfg->max_model_len / 2);
        int max_tokens = 5 + i % 60;
        if (np + max_tokens > cfg->max_model_len) max_tokens = cfg->max_model_len - np;
        treq_t *r = h_define(&h, i, prompt, np, max_tokens);
        if (i % 5 == 0) r->p.ignore_eos = true;
        h_add(&h, r);
    }
    h_run(&h);
    assert_true(h.multi_steps > 0);
    assert_true(h.max_seqs > 1);
    if (expect_preempt) assert_true(h.preempted > 0);
    eng_sched_stats_t st;
    eng_sched_get_stats(h.s, &st);
    assert_int_equal(st.kv.used, 0);
    assert_int_equal(st.n_running + st.n_waiting, 0);
    assert_int_equal((int)st.num_preemptions, h.preempted);
    assert_int_equal((int)st.num_generation_tokens, h.sampled_total);
    treq_t *ref = malloc(sizeof *ref);
    for (int i = 0; i < n; i++) {
        treq_t *r = &h.r[i];
        assert_true(r->done);
        run_single(cfg, r, ref);
        assert_int_equal(r->n, ref->n);
        assert_memory_equal(r->toks, ref->toks, (size_t)r->n * sizeof *r->toks);
        assert_int_equal(r->finish, ref->finish);
    }
    free(ref);
    h_fini(&h);
}

/* ---- tests ---- */

static void test_concurrent_match_single(void **state) {
    eng_sched_config_t c;
    base_cfg(&c);
    run_compare(&c, 64, false);
    /* small blocks, prefix caching off */
    base_cfg(&c);
    c.block_size = 4;
    c.num_blocks = 4096;
    c.enable_prefix_caching = false;
    c.max_num_batched_tokens = 100;
    run_compare(&c, 64, false);
}

static void test_preemption(void **state) {
    /* 40 blocks of 16 tokens for 64 requests that grow: KV runs out, sequences are preempted and
     * recomputed, and every output still equals the single run's */
    eng_sched_config_t c;
    base_cfg(&c);
    c.num_blocks = 40;
    c.max_num_seqs = 32;
    c.max_num_batched_tokens = 128;
    c.max_model_len = 320;
    run_compare(&c, 64, true);
    /* again without prefix caching (pure recompute) and with tiny blocks */
    c.enable_prefix_caching = false;
    c.block_size = 4;
    c.num_blocks = 100;
    c.max_model_len = 300;
    run_compare(&c, 64, true);
}

static void test_chunked_prefill(void **state) {
    eng_sched_config_t c;
    base_cfg(&c);
    harness_t h;
    h_init(&h, &c);
    int32_t prompt[200];
    for (int i = 0; i < 200; i++) prompt[i] = 10 + i;
    treq_t *r = h_define(&h, 0, prompt, 200, 3);
    r->p.ignore_eos = true;
    h_add(&h, r);
    int starts[4] = {0, 64, 128, 192}, lens[4] = {64, 64, 64, 8};
    for (int s = 0; s < 4; s++) {
        eng_plan_t pl;
        h_plan(&h, &pl);
        assert_int_equal(pl.n_seqs, 1);
        assert_int_equal(pl.seqs[0].start_pos, starts[s]);
        assert_int_equal(pl.seqs[0].n_tokens, lens[s]);
        assert_int_equal(pl.seqs[0].sample, s == 3);
        eng_req_info_t in;
        assert_int_equal(eng_sched_get(h.s, r->p.id, h.now, &in), 0);
        assert_int_equal(in.phase, ENG_PHASE_PREFILL);
        assert_int_equal(h_finish(&h, &pl), s == 3 ? 1 : 0);
    }
    eng_req_info_t in;
    assert_int_equal(eng_sched_get(h.s, r->p.id, h.now, &in), 0);
    assert_int_equal(in.phase, ENG_PHASE_DECODE);
    assert_int_equal(in.n_output, 1);
    h_run(&h);
    assert_int_equal(r->n, 203);
    assert_int_equal(r->finish, ENG_FINISH_LENGTH);

    /* a long prefill takes the whole budget, delaying a short request behind it... */
    h_fini(&h);
    h_init(&h, &c);
    r = h_define(&h, 0, prompt, 200, 2);
    h_add(&h, r);
    treq_t *r2 = h_define(&h, 1, prompt + 100, 10, 2);
    h_add(&h, r2);
    eng_plan_t pl;
    h_plan(&h, &pl);
    assert_int_equal(pl.n_seqs, 1);
    h_finish(&h, &pl);
    h_run(&h);
    assert_true(r->done && r2->done);
    h_fini(&h);
    /* ... unless long_prefill_token_threshold caps each sequence's chunk */
    c.long_prefill_token_threshold = 48;
    h_init(&h, &c);
    r = h_define(&h, 0, prompt, 200, 2);
    h_add(&h, r);
    r2 = h_define(&h, 1, prompt + 100, 10, 2);
    h_add(&h, r2);
    h_plan(&h, &pl);
    assert_int_equal(pl.n_seqs, 2);
    assert_int_equal(pl.seqs[0].n_tokens, 48);
    assert_int_equal(pl.seqs[1].n_tokens, 10);
    assert_true(pl.seqs[1].sample);
    h_finish(&h, &pl);
    h_run(&h);
    assert_true(r->done && r2->done);
    h_fini(&h);

    /* without chunked prefill a prompt goes in one step */
    base_cfg(&c);
    c.enable_chunked_prefill = false;
    c.max_num_batched_tokens = 512;
    h_init(&h, &c);
    r = h_define(&h, 0, prompt, 200, 2);
    h_add(&h, r);
    h_plan(&h, &pl);
    assert_int_equal(pl.n_tokens, 200);
    assert_int_equal(pl.n_sampled, 1);
    h_finish(&h, &pl);
    h_run(&h);
    h_fini(&h);
    /* ... and its budget must hold max_model_len */
    eng_sched_t *s;
    char err[LT_ERR_LEN];
    c.max_num_batched_tokens = 100;
    assert_int_equal(eng_sched_create(&c, &s, err), LT_ERR_INVAL);
    assert_non_null(strstr(err, "max_model_len"));
}

/* ---- --max-step-ms ---- */

/* The step-time model recovers known coefficients from noise-free steps of varied shape, and its
 * prefill fit inverts its prediction. */
static void test_step_model(void **state) {
    (void)state;
    eng_step_model_t m;
    eng_step_model_init(&m);
    const double truth[4] = {3.0, 1.5, 0.8, 0.2};
    unsigned seed = 7;
    for (int i = 0; i < 300; i++) {
        double x[4] = {1, 0, 0, 0}, top[4] = {0, 64, 512, 64};
        for (int f = 1; f < 4; f++) { /* independent draws: the high bits of an LCG */
            seed = seed * 1103515245u + 12345u;
            x[f] = (double)(seed >> 16) / 65536.0 * top[f];
        }
        eng_step_model_observe(
            &m, x, eng_step_model_predict(&(eng_step_model_t){.coef = {3.0, 1.5, 0.8, 0.2}}, x));
    }
    for (int i = 0; i < 4; i++)
        if (fabs(m.coef[i] - truth[i]) > 0.05 * truth[i] + 0.01)
            fail_msg("coefficient %d: %f, want %f", i, m.coef[i], truth[i]);
    /* n tokens from position 100 cost c n + d (100 n + n^2 / 2) / 1000 */
    int n = eng_step_model_prefill_fit(&m, 80.0, 100);
    double cost = m.coef[2] * n + m.coef[3] * (100.0 * n + n * (double)n / 2) / 1000;
    assert_true(cost <= 80.0 && cost > 80.0 - m.coef[2] - 0.1);
    assert_int_equal(eng_step_model_prefill_fit(&m, 0, 0), 0);
    assert_int_equal(eng_step_model_prefill_fit(&m, -5, 0), 0);
}

/* Simulated time: a step costs 2 ms + 1 ms per decode row + 0.5 ms per prefill token. */
static double sim_ms(const eng_plan_t *pl) {
    double ms = 2;
    for (int k = 0; k < pl->n_seqs; k++)
        ms += pl->seqs[k].n_tokens == 1 && pl->seqs[k].sample ? 1.0 : 0.5 * pl->seqs[k].n_tokens;
    return ms;
}

/* Eight streams decode while long prompts keep arriving: once the model has seen a few steps,
 * every step with decodes stays within --max-step-ms (but for the minimum chunk), the prompts
 * still finish, and their tokens are those of each request alone; a lone prompt still gets the
 * whole token budget; 0 turns it off. */
static void test_max_step_ms(void **state) {
    (void)state;
    eng_sched_config_t c;
    base_cfg(&c);
    c.max_num_batched_tokens = 256;
    c.max_step_ms = 40;
    int32_t prompt[300];
    for (int i = 0; i < 300; i++) prompt[i] = 10 + (i * 7) % 900;
    for (int off = 0; off <= 1; off++) {
        if (off) c.max_step_ms = 0;
        harness_t h;
        h_init(&h, &c);
        treq_t *lone = h_define(&h, 0, prompt, 200, 1);
        h_add(&h, lone);
        eng_plan_t pl;
        h_plan(&h, &pl);
        assert_int_equal(pl.n_tokens, 200); /* nothing decodes: the whole prompt at once */
        h.now += (uint64_t)(sim_ms(&pl) * 1e6);
        h_finish(&h, &pl);
        for (int i = 1; i <= 8; i++) {
            treq_t *d = h_define(&h, i, prompt + i, 3, 60);
            d->p.ignore_eos = true; /* streams that keep decoding */
            h_add(&h, d);
        }
        int next = 9, over = 0, long_steps = 0;
        while (eng_sched_has_work(h.s)) {
            if (h.steps % 6 == 0 && next < 20) {
                h_add(&h, h_define(&h, next, prompt + next, 250, 4));
                next++;
            }
            h_plan(&h, &pl);
            if (pl.n_seqs == 0) break;
            double ms = sim_ms(&pl);
            bool decodes = false;
            for (int k = 0; k < pl.n_seqs; k++)
                decodes |= pl.seqs[k].n_tokens == 1 && pl.seqs[k].sample;
            if (decodes && ms > 40 + 0.5 * 32 + 2) over++;
            if (ms > 60) long_steps++;
            h.now += (uint64_t)(ms * 1e6);
            h_finish(&h, &pl);
        }
        for (int i = 0; i < next; i++) assert_true(h.r[i].done);
        if (!off) {
            assert_true(over <= 3); /* the first steps, before the model has learned */
        } else {
            assert_true(long_steps > 3); /* without the limit, arrivals make long steps */
        }
        for (int i = 9; i < next; i++) {
            treq_t alone;
            run_single(&c, &h.r[i], &alone);
            assert_memory_equal(alone.toks, h.r[i].toks, (size_t)h.r[i].n * sizeof(int32_t));
        }
        h_fini(&h);
    }
}

static void test_prefix_cache_repeat(void **state) {
    eng_sched_config_t c;
    base_cfg(&c);
    harness_t h;
    h_init(&h, &c);
    int32_t prompt[100];
    for (int i = 0; i < 100; i++) prompt[i] = 20 + (i * 37) % 900;
    treq_t *a = h_define(&h, 0, prompt, 100, 8);
    a->p.ignore_eos = true;
    h_add(&h, a);
    h_run(&h);
    assert_int_equal(a->n_cached, 0);
    eng_sched_stats_t st;
    eng_sched_get_stats(h.s, &st);
    assert_int_equal(st.kv.prefix_queries, 100);
    assert_int_equal(st.kv.prefix_hits, 0);
    assert_int_equal(st.kv.used, 0);
    assert_true(st.kv.cached >= 6); /* 107 tokens computed: 6 full blocks */

    treq_t *b = h_define(&h, 1, prompt, 100, 8);
    b->p.ignore_eos = true;
    h_add(&h, b);
    eng_plan_t pl;
    h_plan(&h, &pl);
    assert_int_equal(pl.n_seqs, 1);
    assert_int_equal(pl.seqs[0].start_pos, 96); /* 6 blocks hit, the rest computed */
    assert_int_equal(pl.seqs[0].n_tokens, 4);
    for (int i = 0; i < 6; i++)
        assert_int_equal(eng_kv_block_ref(eng_sched_kv(h.s), pl.seqs[0].block_table[i]), 1);
    eng_req_info_t in;
    assert_int_equal(eng_sched_get(h.s, b->p.id, h.now, &in), 0);
    assert_int_equal(in.n_cached_tokens, 96);
    h_finish(&h, &pl);
    h_run(&h);
    assert_int_equal(b->n_cached, 96);
    assert_memory_equal(a->toks, b->toks, sizeof(int32_t) * 108);
    eng_sched_get_stats(h.s, &st);
    assert_int_equal(st.kv.prefix_queries, 200);
    assert_int_equal(st.kv.prefix_hits, 96);

    /* a prompt equal to a cached one plus its outputs hits those output blocks too */
    treq_t *d = h_define(&h, 2, a->toks, 108, 4);
    h_add(&h, d);
    h_plan(&h, &pl);
    assert_int_equal(pl.seqs[0].start_pos, 96); /* 107 computed: block 6 was never full */
    h_finish(&h, &pl);
    h_run(&h);

    /* a prompt of whole blocks, all cached: the last block is recomputed for its logits */
    treq_t *g = h_define(&h, 5, prompt, 64, 3), *g2 = h_define(&h, 6, prompt, 64, 3);
    h_add(&h, g);
    h_run(&h);
    h_add(&h, g2);
    h_plan(&h, &pl);
    assert_int_equal(pl.seqs[0].start_pos, 48);
    assert_int_equal(pl.seqs[0].n_tokens, 16);
    h_finish(&h, &pl);
    h_run(&h);
    assert_int_equal(g->n, g2->n);
    assert_memory_equal(g->toks, g2->toks, sizeof(int32_t) * (size_t)g->n);

    /* two identical prompts at once both compute: no hit on blocks still being written */
    treq_t *e = h_define(&h, 3, prompt + 1, 30, 2), *f = h_define(&h, 4, prompt + 1, 30, 2);
    h_add(&h, e);
    h_add(&h, f);
    h_plan(&h, &pl);
    assert_int_equal(pl.n_seqs, 2);
    assert_int_equal(pl.seqs[0].start_pos, 0);
    assert_int_equal(pl.seqs[1].start_pos, 0);
    h_finish(&h, &pl);
    h_run(&h);
    assert_memory_equal(e->toks, f->toks, sizeof(int32_t) * (size_t)e->n);
    h_fini(&h);
}

static void test_abort(void **state) {
    eng_sched_config_t c;
    base_cfg(&c);
    harness_t h;
    h_init(&h, &c);
    eng_sched_stats_t idle;
    eng_sched_get_stats(h.s, &idle);
    int32_t prompt[MAXT];
    for (int i = 0; i < 20; i++) {
        int np = make_prompt(i + 1, prompt, 200);
        treq_t *r = h_define(&h, i, prompt, np, 50);
        r->p.ignore_eos = true;
        h_add(&h, r);
    }
    assert_int_equal(eng_sched_abort(h.s, 424242, h.now), LT_ERR_NOTFOUND);
    for (int i = 0; i < 6; i++) h_step(&h);
    /* abort a running request while its step is in flight, and a waiting one */
    eng_plan_t pl;
    h.now += 1000;
    assert_int_equal(eng_sched_step(h.s, h.now, &pl), 0);
    check_plan(&h, &pl);
    assert_true(pl.n_seqs >= 2);
    uint64_t victim = pl.seqs[0].id;
    eng_req_info_t in;
    assert_int_equal(eng_sched_get(h.s, victim, h.now, &in), 0);
    assert_true(in.n_blocks > 0);
    uint64_t waiting = 0;
    eng_req_info_t list[64];
    int nl = eng_sched_list(h.s, h.now, list, 64);
    assert_int_equal(nl, 20);
    for (int i = 0; i < nl; i++)
        if (list[i].phase == ENG_PHASE_WAITING) waiting = list[i].id;
    assert_true(waiting != 0);
    assert_int_equal(eng_sched_abort(h.s, victim, h.now), 0);
    assert_int_equal(eng_sched_abort(h.s, victim, h.now), LT_ERR_NOTFOUND);
    assert_int_equal(eng_sched_abort(h.s, waiting, h.now), 0);
    assert_int_equal(eng_sched_get(h.s, victim, h.now, &in), 0);
    assert_int_equal(in.phase, ENG_PHASE_FINISHED);
    assert_int_equal(in.n_blocks, 0);
    h_req(&h, victim)->done = true;
    h_req(&h, waiting)->done = true;
    fake_forward(&h, &pl);
    eng_outputs_t out;
    /* a second step before the update is refused */
    eng_plan_t pl2;
    assert_int_equal(eng_sched_step(h.s, h.now, &pl2), LT_ERR_INVAL);
    assert_int_equal(eng_sched_update(h.s, &pl, h.sampled, pl.n_sampled, h.now, &out), 0);
    for (int i = 0; i < out.n; i++) {
        assert_true(out.items[i].id != victim);
        treq_t *r = h_req(&h, out.items[i].id);
        r->toks[r->n++] = out.items[i].token;
        if (out.items[i].finish) r->done = true;
    }
    /* the next plan reports the running one (workers knew it), not the never-scheduled one */
    const eng_req_events_t *ev = eng_sched_events(h.s, victim);
    assert_non_null(ev);
    assert_int_equal(ev->log[ev->n_events - 1].type, ENG_EV_FINISHED);
    h.now += 1000;
    assert_int_equal(eng_sched_step(h.s, h.now, &pl), 0);
    bool saw = false;
    for (int i = 0; i < pl.n_finished; i++) {
        assert_true(pl.finished_ids[i] != waiting);
        if (pl.finished_ids[i] == victim) saw = true;
    }
    assert_true(saw);
    check_plan(&h, &pl);
    assert_null(eng_sched_events(h.s, victim)); /* released */
    assert_int_equal(eng_sched_get(h.s, waiting, h.now, &in), LT_ERR_NOTFOUND);
    if (pl.n_seqs) {
        fake_forward(&h, &pl);
        assert_int_equal(eng_sched_update(h.s, &pl, h.sampled, pl.n_sampled, h.now, &out), 0);
        for (int i = 0; i < out.n; i++) {
            treq_t *r = h_req(&h, out.items[i].id);
            r->toks[r->n++] = out.items[i].token;
            if (out.items[i].finish) r->done = true;
        }
    }
    /* abort everything left: the cache goes back to idle */
    for (int i = 0; i < 20; i++) {
        treq_t *r = &h.r[i];
        if (r->done) continue;
        assert_int_equal(eng_sched_abort(h.s, r->p.id, h.now), 0);
        r->done = true;
    }
    assert_false(eng_sched_has_work(h.s));
    eng_sched_stats_t st;
    eng_sched_get_stats(h.s, &st);
    assert_int_equal(st.kv.used, 0);
    assert_true(st.kv.usage == idle.kv.usage);
    assert_int_equal(st.n_running, 0);
    assert_int_equal(st.n_waiting, 0);
    assert_true(st.num_finished[ENG_FINISH_ABORT] >= 3);
    /* the id may be used again once released */
    assert_int_equal(eng_sched_step(h.s, h.now, &pl), 0);
    check_plan(&h, &pl);
    treq_t *again = h_define(&h, 0, prompt, 5, 3);
    h_add(&h, again);
    h_run(&h);
    assert_true(again->done);
    h_fini(&h);
}

/* Drives one request with a scripted model: tokens[i] is the i-th sampled token. */
static void scripted(eng_sched_t *s, uint64_t id, const int32_t *script, int n_script, int *n_out,
                     eng_finish_t *fin, int32_t *stop_token) {
    *n_out = 0;
    *fin = ENG_FINISH_NONE;
    for (int guard = 0; guard < 1000 && *fin == ENG_FINISH_NONE; guard++) {
        eng_plan_t pl;
        assert_int_equal(eng_sched_step(s, 1, &pl), 0);
        assert_int_equal(pl.n_seqs, 1);
        int32_t tok = script[*n_out < n_script ? *n_out : n_script - 1];
        eng_outputs_t out;
        assert_int_equal(eng_sched_update(s, &pl, &tok, pl.n_sampled, 2, &out), 0);
        if (out.n == 0) continue;
        assert_int_equal(out.items[0].id, id);
        assert_int_equal(out.items[0].token, tok);
        (*n_out)++;
        *fin = out.items[0].finish;
        *stop_token = out.items[0].stop_token;
    }
}

static void test_stop_conditions(void **state) {
    eng_sched_config_t c;
    base_cfg(&c);
    c.max_model_len = 64;
    eng_sched_t *s;
    char err[LT_ERR_LEN];
    assert_int_equal(eng_sched_create(&c, &s, err), 0);
    int32_t prompt[10] = {11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    int32_t eos[1] = {EOS}, seq[4] = {30, 31, 32, 33}, stops[2] = {32, 77};
    eng_req_params_t p = {.id = 1, .prompt = prompt, .n_prompt = 10, .eos_id = EOS};
    int n;
    eng_finish_t fin;
    int32_t st;

    /* EOS stops at once */
    p.max_tokens = 20;
    assert_int_equal(eng_sched_add(s, &p, 0, err), 0);
    scripted(s, 1, eos, 1, &n, &fin, &st);
    assert_int_equal(n, 1);
    assert_int_equal(fin, ENG_FINISH_STOP);
    assert_int_equal(st, -1);
    /* min_tokens suppresses the EOS stop until that many outputs exist */
    p.id = 2;
    p.min_tokens = 5;
    assert_int_equal(eng_sched_add(s, &p, 0, err), 0);
    scripted(s, 2, eos, 1, &n, &fin, &st);
    assert_int_equal(n, 5);
    assert_int_equal(fin, ENG_FINISH_STOP);
    /* ignore_eos: only max_tokens ends it */
    p.id = 3;
    p.min_tokens = 0;
    p.ignore_eos = true;
    p.max_tokens = 7;
    assert_int_equal(eng_sched_add(s, &p, 0, err), 0);
    scripted(s, 3, eos, 1, &n, &fin, &st);
    assert_int_equal(n, 7);
    assert_int_equal(fin, ENG_FINISH_LENGTH);
    assert_string_equal(eng_finish_str(fin), "length");
    /* stop_token_ids */
    p.id = 4;
    p.ignore_eos = false;
    p.max_tokens = 20;
    p.stop_token_ids = stops;
    p.n_stop_token_ids = 2;
    assert_int_equal(eng_sched_add(s, &p, 0, err), 0);
    scripted(s, 4, seq, 4, &n, &fin, &st);
    assert_int_equal(n, 3);
    assert_int_equal(fin, ENG_FINISH_STOP);
    assert_int_equal(st, 32);
    assert_string_equal(eng_finish_str(fin), "stop");
    /* ... also held back by min_tokens */
    p.id = 5;
    p.min_tokens = 4;
    assert_int_equal(eng_sched_add(s, &p, 0, err), 0);
    scripted(s, 5, seq, 4, &n, &fin, &st);
    assert_int_equal(n, 20);
    assert_int_equal(fin, ENG_FINISH_LENGTH);
    /* max_tokens <= 0: up to max_model_len */
    p.id = 6;
    p.min_tokens = 0;
    p.max_tokens = 0;
    p.n_stop_token_ids = 0;
    p.ignore_eos = true;
    assert_int_equal(eng_sched_add(s, &p, 0, err), 0);
    scripted(s, 6, seq, 1, &n, &fin, &st);
    assert_int_equal(n, 54);
    assert_int_equal(fin, ENG_FINISH_LENGTH);
    eng_sched_destroy(&s);
}

static void test_add_validation(void **state) {
    eng_sched_config_t c;
    base_cfg(&c);
    c.max_model_len = 64;
    eng_sched_t *s;
    char err[LT_ERR_LEN];
    assert_int_equal(eng_sched_create(&c, &s, err), 0);
    int32_t prompt[64] = {0};
    eng_req_params_t p = {.id = 9, .prompt = prompt, .n_prompt = 10, .max_tokens = 60};
    assert_int_equal(eng_sched_add(s, &p, 0, err), LT_ERR_RANGE);
    assert_non_null(strstr(err, "10"));
    assert_non_null(strstr(err, "60"));
    assert_non_null(strstr(err, "64"));
    p.n_prompt = 64;
    p.max_tokens = 0;
    assert_int_equal(eng_sched_add(s, &p, 0, err), LT_ERR_RANGE);
    p.n_prompt = 0;
    assert_int_equal(eng_sched_add(s, &p, 0, err), LT_ERR_INVAL);
    assert_non_null(strstr(err, "empty"));
    p.n_prompt = 4;
    p.max_tokens = 4;
    p.min_tokens = 5;
    assert_int_equal(eng_sched_add(s, &p, 0, err), LT_ERR_INVAL);
    p.min_tokens = 0;
    prompt[2] = V;
    assert_int_equal(eng_sched_add(s, &p, 0, err), LT_ERR_INVAL);
    prompt[2] = -1;
    assert_int_equal(eng_sched_add(s, &p, 0, err), LT_ERR_INVAL);
    prompt[2] = 5;
    assert_int_equal(eng_sched_add(s, &p, 0, err), 0);
    assert_int_equal(eng_sched_add(s, &p, 0, err), LT_ERR_INVAL);
    assert_non_null(strstr(err, "already"));
    /* sampled tokens out of range are refused without changing anything */
    eng_plan_t pl;
    assert_int_equal(eng_sched_step(s, 1, &pl), 0);
    int32_t bad = V, good = 17;
    eng_outputs_t out;
    assert_int_equal(eng_sched_update(s, &pl, &bad, 1, 2, &out), LT_ERR_INVAL);
    assert_int_equal(eng_sched_update(s, &pl, &good, 0, 2, &out), LT_ERR_INVAL);
    assert_int_equal(eng_sched_update(s, &pl, &good, 1, 2, &out), 0);
    assert_int_equal(out.n, 1);
    assert_int_equal(eng_sched_update(s, &pl, &good, 1, 2, &out), LT_ERR_INVAL); /* twice */
    eng_sched_destroy(&s);
    /* a cache too small for max_model_len is a configuration error naming both */
    c.num_blocks = 3;
    assert_int_equal(eng_sched_create(&c, &s, err), LT_ERR_RANGE);
    assert_non_null(strstr(err, "64"));
    assert_non_null(strstr(err, "3"));
    c.num_blocks = 0;
    assert_int_equal(eng_sched_create(&c, &s, err), LT_ERR_INVAL);
}

static void test_steady_state_no_alloc(void **state) {
    eng_sched_config_t c;
    base_cfg(&c);
    c.num_blocks = 60; /* tight: preemptions, evictions and releases happen in the loop */
    c.max_num_seqs = 24;
    c.max_model_len = 400;
    harness_t h;
    h_init(&h, &c);
    int32_t prompt[MAXT];
    for (int i = 0; i < 48; i++) {
        int np = make_prompt(i, prompt, 200);
        h_add(&h, h_define(&h, i, prompt, np, 40));
    }
    g_allocs = 0;
    g_count_allocs = 1;
    int steps = 0;
    while (eng_sched_has_work(h.s)) {
        h_step(&h);
        steps++;
    }
    eng_plan_t pl;
    assert_int_equal(eng_sched_step(h.s, h.now, &pl), 0);
    g_count_allocs = 0;
    assert_true(steps > 50);
    assert_true(h.preempted > 0);
    assert_int_equal(g_allocs, 0);
    /* the counter works: an add allocates */
    g_count_allocs = 1;
    h_add(&h, h_define(&h, 100, prompt, 10, 5));
    g_count_allocs = 0;
    assert_true(g_allocs > 0);
    h_fini(&h);
}

static void test_events_stats_dump(void **state) {
    eng_sched_config_t c;
    base_cfg(&c);
    c.num_blocks = 40;
    c.max_num_batched_tokens = 128;
    c.max_model_len = 320;
    harness_t h;
    h_init(&h, &c);
    int32_t prompt[MAXT];
    for (int i = 0; i < 24; i++) {
        int np = make_prompt(i, prompt, 160);
        treq_t *r = h_define(&h, i, prompt, np, 60);
        r->p.ignore_eos = true;
        r->p.arrival_ns = h.now - 500;
        h_add(&h, r);
    }
    for (int i = 0; i < 30; i++) h_step(&h);
    eng_sched_stats_t st;
    eng_sched_get_stats(h.s, &st);
    assert_true(st.n_running > 0);
    assert_true(st.num_preemptions > 0);
    assert_int_equal(st.kv.used + st.kv.free + st.kv.cached, st.kv.num_blocks);
    assert_true(st.kv.usage > 0.0 && st.kv.usage <= 1.0);
    assert_true(st.kv.prefix_hits > 0); /* shared system prompt, recomputes */
    assert_true(st.kv.prefix_hits <= st.kv.prefix_queries);
    assert_int_equal(st.num_steps, 30);

    /* every timeline is ordered and complete so far */
    eng_req_info_t list[64];
    int n = eng_sched_list(h.s, h.now, list, 64);
    assert_int_equal(n, 24);
    int preempted_seen = 0;
    for (int i = 0; i < n; i++) {
        const eng_req_events_t *ev = eng_sched_events(h.s, list[i].id);
        assert_non_null(ev);
        assert_true(ev->n_events >= 2);
        assert_int_equal(ev->log[0].type, ENG_EV_ARRIVED);
        assert_int_equal(ev->log[1].type, ENG_EV_QUEUED);
        assert_true(ev->queued_ns - ev->arrived_ns == 500);
        for (int k = 1; k < ev->n_events; k++) assert_true(ev->log[k].t_ns >= ev->log[k - 1].t_ns);
        if (list[i].phase == ENG_PHASE_DECODE || list[i].phase == ENG_PHASE_PREFILL)
            assert_true(ev->first_scheduled_ns > 0);
        if (list[i].phase == ENG_PHASE_DECODE) assert_true(ev->first_token_ns > 0);
        if (ev->n_preemptions) {
            preempted_seen++;
            assert_true(ev->last_preempted_ns > 0);
            bool has = false;
            for (int k = 0; k < ev->n_events; k++) has |= ev->log[k].type == ENG_EV_PREEMPTED;
            assert_true(has || ev->n_dropped > 0);
        }
        assert_int_equal(list[i].age_ns, h.now - ev->arrived_ns);
    }
    assert_true(preempted_seen > 0);
    eng_step_info_t steps[ENG_STEP_HISTORY];
    int ns = eng_sched_recent_steps(h.s, steps, ENG_STEP_HISTORY);
    assert_int_equal(ns, 30);
    assert_true(steps[0].step_id > steps[1].step_id);
    for (int i = 0; i < ns; i++) {
        assert_int_equal(steps[i].dur_ns, 500);
        assert_true(steps[i].n_seqs >= 1 && steps[i].n_tokens <= 128);
    }

    assert_int_equal(eng_sched_set_step_duration(h.s, steps[3].step_id, 777), 0);
    assert_int_equal(eng_sched_set_step_duration(h.s, 999999, 1), LT_ERR_NOTFOUND);
    assert_int_equal(eng_sched_recent_steps(h.s, steps, 4), 4);
    assert_int_equal(steps[3].dur_ns, 777);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    eng_sched_dump(h.s, h.now, NULL, f);
    fclose(f);
    assert_non_null(strstr(buf, "running"));
    assert_non_null(strstr(buf, "phase=decode"));
    assert_non_null(strstr(buf, "prefix cache: on"));
    assert_non_null(strstr(buf, "recent steps"));
    assert_non_null(strstr(buf, "preemptions"));
    if (getenv("ENG_TEST_DUMP")) fputs(buf, stderr);
    free(buf);
    h_run(&h);
    h_fini(&h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_match_single),
        cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_step_model),
        cmocka_unit_test(test_max_step_ms),
        cmocka_unit_test(test_prefix_cache_repeat),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_stop_conditions),
        cmocka_unit_test(test_add_validation),
        cmocka_unit_test(test_steady_state_no_alloc),
        cmocka_unit_test(test_events_stats_dump),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
