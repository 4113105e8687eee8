/*
 * test_kv_blocks.c — the KV block manager: allocation, refcounts and release; prefix-cache hits
 * that compare token ids exactly; LRU eviction order (a prefix's tail before its head); never
 * reusing a sequence's last token; forced hash collisions that must not give wrong hits;
 * duplicate registrations; prefix caching off.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "lt.h"
#include "testutil.h"

#define CAP 64

typedef struct seq {
    eng_kv_seq_t kv;
    int32_t store[CAP];
} seq_t;

static void seq_init(seq_t *s) {
    memset(s, 0, sizeof *s);
    s->kv.blocks = s->store;
    s->kv.cap = CAP;
}

static eng_kv_t *make(int n, int bs, bool cache) {
    eng_kv_t *kv;
    char err[LT_ERR_LEN];
    assert_int_equal(eng_kv_create(n, bs, cache, &kv, err), 0);
    return kv;
}

/* Allocates and computes tokens[0, n) into a fresh seq, registering its full blocks. */
static void compute(eng_kv_t *kv, seq_t *s, const int32_t *tokens, int n) {
    seq_init(s);
    int32_t hit[CAP];
    int h = eng_kv_match_prefix(kv, tokens, n, hit, CAP, NULL);
    assert_int_equal(eng_kv_seq_acquire(kv, &s->kv, hit, h, n), 0);
    assert_int_equal(eng_kv_seq_alloc(kv, &s->kv, n), 0);
    eng_kv_seq_commit(kv, &s->kv, tokens, n);
}

static void test_alloc_free_refcounts(void **state) {
    eng_kv_t *kv = make(8, 4, false);
    seq_t a, b;
    seq_init(&a);
    seq_init(&b);
    assert_int_equal(eng_kv_blocks_needed(kv, &a.kv, 10), 3);
    assert_int_equal(eng_kv_seq_alloc(kv, &a.kv, 10), 0);
    assert_int_equal(a.kv.n_blocks, 3);
    assert_int_equal(eng_kv_seq_alloc(kv, &a.kv, 12), 0); /* still 3 blocks */
    assert_int_equal(a.kv.n_blocks, 3);
    assert_int_equal(eng_kv_seq_alloc(kv, &a.kv, 13), 0);
    assert_int_equal(a.kv.n_blocks, 4);
    for (int i = 0; i < 4; i++) assert_int_equal(eng_kv_block_ref(kv, a.kv.blocks[i]), 1);
    /* distinct ids */
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++) assert_int_not_equal(a.kv.blocks[i], a.kv.blocks[j]);
    assert_int_equal(eng_kv_num_available(kv), 4);
    /* 5 more blocks do not fit: nothing changes */
    assert_int_equal(eng_kv_seq_alloc(kv, &b.kv, 20), ENG_AGAIN);
    assert_int_equal(b.kv.n_blocks, 0);
    assert_int_equal(eng_kv_num_available(kv), 4);
    assert_int_equal(eng_kv_seq_alloc(kv, &b.kv, 16), 0);
    assert_int_equal(eng_kv_num_available(kv), 0);
    eng_kv_stats_t st;
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.used, 8);
    assert_true(st.usage == 1.0);
    /* table storage too small */
    seq_t c;
    seq_init(&c);
    c.kv.cap = 1;
    eng_kv_seq_free(kv, &b.kv);
    assert_int_equal(eng_kv_seq_alloc(kv, &c.kv, 8), LT_ERR_RANGE);
    eng_kv_seq_free(kv, &a.kv);
    assert_int_equal(a.kv.n_blocks, 0);
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.used, 0);
    assert_int_equal(st.free, 8);
    assert_int_equal(st.cached, 0);
    assert_true(st.usage == 0.0);
    /* no prefix caching: nothing matches, nothing is counted */
    int32_t toks[8] = {1, 2, 3, 4, 5, 6, 7, 8}, hit[CAP];
    compute(kv, &a, toks, 8);
    eng_kv_seq_free(kv, &a.kv);
    assert_int_equal(eng_kv_match_prefix(kv, toks, 8, hit, CAP, NULL), 0);
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.cached, 0);
    assert_int_equal(st.prefix_queries, 0);
    eng_kv_destroy(&kv);
    assert_null(kv);
}

static void test_prefix_hits_exact(void **state) {
    eng_kv_t *kv = make(16, 4, true);
    int32_t t1[14], hit[CAP];
    for (int i = 0; i < 14; i++) t1[i] = 100 + i;
    seq_t a, b;
    compute(kv, &a, t1, 14);
    assert_int_equal(a.kv.n_full, 3);
    for (int i = 0; i < 3; i++) assert_true(eng_kv_block_cached(kv, a.kv.blocks[i]));
    assert_false(eng_kv_block_cached(kv, a.kv.blocks[3])); /* partial: never cached */

    /* same first 8 tokens, third block differs in its last token */
    int32_t t2[14];
    memcpy(t2, t1, sizeof t2);
    t2[11] = 7;
    int ne = -1;
    assert_int_equal(eng_kv_match_prefix(kv, t2, 14, hit, CAP, &ne), 2);
    assert_int_equal(ne, 0); /* a still holds them */
    assert_int_equal(hit[0], a.kv.blocks[0]);
    assert_int_equal(hit[1], a.kv.blocks[1]);
    seq_init(&b);
    assert_int_equal(eng_kv_seq_acquire(kv, &b.kv, hit, 2, 14), 0);
    assert_int_equal(eng_kv_block_ref(kv, a.kv.blocks[0]), 2);
    assert_int_equal(eng_kv_block_ref(kv, a.kv.blocks[1]), 2);
    assert_int_equal(eng_kv_seq_alloc(kv, &b.kv, 14), 0);
    assert_int_equal(b.kv.n_blocks, 4);
    assert_int_not_equal(b.kv.blocks[2], a.kv.blocks[2]);
    eng_kv_seq_commit(kv, &b.kv, t2, 14);
    eng_kv_stats_t st;
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.prefix_queries, 14 + 14);
    assert_int_equal(st.prefix_hits, 8);
    assert_int_equal(st.used, 4 + 2);

    /* release a: shared blocks stay used by b, its own full block becomes cached */
    eng_kv_seq_free(kv, &a.kv);
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.used, 4);
    assert_int_equal(st.cached, 1);
    assert_int_equal(st.free, 11);
    /* the whole of t1 still hits: 2 blocks in use by b + 1 evictable */
    assert_int_equal(eng_kv_match_prefix(kv, t1, 14, hit, CAP, &ne), 3);
    assert_int_equal(ne, 1);
    /* max_blocks caps the match */
    assert_int_equal(eng_kv_match_prefix(kv, t1, 14, hit, 1, NULL), 1);
    eng_kv_seq_free(kv, &b.kv);
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.used, 0);
    assert_int_equal(st.cached, 4); /* t1's 3 + t2's third block */
    eng_kv_destroy(&kv);
}

static void test_never_last_token(void **state) {
    eng_kv_t *kv = make(16, 4, true);
    int32_t t[12], hit[CAP];
    for (int i = 0; i < 12; i++) t[i] = i * 3;
    seq_t a;
    compute(kv, &a, t, 12);
    assert_int_equal(a.kv.n_full, 3);
    eng_kv_seq_free(kv, &a.kv);
    /* all 3 blocks are cached, but the 12th token must be computed: 2 blocks */
    assert_int_equal(eng_kv_match_prefix(kv, t, 12, hit, CAP, NULL), 2);
    assert_int_equal(eng_kv_match_prefix(kv, t, 13, hit, CAP, NULL), 3);
    assert_int_equal(eng_kv_match_prefix(kv, t, 5, hit, CAP, NULL), 1);
    assert_int_equal(eng_kv_match_prefix(kv, t, 4, hit, CAP, NULL), 0);
    assert_int_equal(eng_kv_match_prefix(kv, t, 1, hit, CAP, NULL), 0);
    eng_kv_destroy(&kv);
}

static void test_lru_eviction_order(void **state) {
    eng_kv_t *kv = make(4, 2, true);
    int32_t ta[5] = {1, 2, 3, 4, 9}, tb[5] = {5, 6, 7, 8, 9}, hit[CAP];
    seq_t a, b, c, d;
    compute(kv, &a, ta, 4);
    compute(kv, &b, tb, 4);
    int32_t a0 = a.kv.blocks[0], a1 = a.kv.blocks[1], b0 = b.kv.blocks[0], b1 = b.kv.blocks[1];
    eng_kv_seq_free(kv, &a.kv); /* LRU: a1 a0 */
    eng_kv_seq_free(kv, &b.kv); /* LRU: a1 a0 b1 b0 */
    eng_kv_stats_t st;
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.free, 0);
    assert_int_equal(st.cached, 4);
    assert_int_equal(eng_kv_num_available(kv), 4);

    /* one new block: the least recently released is a's tail */
    seq_init(&c);
    assert_int_equal(eng_kv_seq_alloc(kv, &c.kv, 2), 0);
    assert_int_equal(c.kv.blocks[0], a1);
    assert_false(eng_kv_block_cached(kv, a1));
    assert_int_equal(eng_kv_match_prefix(kv, ta, 5, hit, CAP, NULL), 1);
    assert_int_equal(eng_kv_match_prefix(kv, tb, 5, hit, CAP, NULL), 2);

    /* a hit moves b's blocks out of the LRU; released again they are the most recent */
    seq_init(&d);
    assert_int_equal(eng_kv_seq_acquire(kv, &d.kv, hit, 2, 5), 0);
    eng_kv_seq_free(kv, &d.kv); /* LRU: a0 b1 b0 */
    seq_init(&d);
    assert_int_equal(eng_kv_seq_alloc(kv, &d.kv, 4), 0);
    assert_int_equal(d.kv.blocks[0], a0);
    assert_int_equal(d.kv.blocks[1], b1);
    assert_int_equal(eng_kv_match_prefix(kv, tb, 5, hit, CAP, NULL), 1);
    assert_int_equal(hit[0], b0);
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.evictions, 3);
    /* freed blocks that were never full go to the free list and are reused before the cache */
    eng_kv_seq_free(kv, &c.kv);
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.free, 1);
    seq_init(&c);
    assert_int_equal(eng_kv_seq_alloc(kv, &c.kv, 1), 0);
    assert_int_equal(c.kv.blocks[0], a1);
    assert_true(eng_kv_block_cached(kv, b0));
    eng_kv_destroy(&kv);
}

static uint64_t const_hash(uint64_t parent, const int32_t *tokens, int n) {
    return 42;
}

static void test_hash_collisions(void **state) {
    eng_kv_t *kv = make(32, 2, true);
    assert_int_equal(eng_kv_set_hash_fn(kv, const_hash), 0);
    /* every block has the same hash: only exact token and parent comparison tells them apart */
    int32_t ta[5] = {1, 2, 7, 8, 0}, tb[5] = {3, 4, 7, 8, 0}, tc[5] = {3, 4, 7, 8, 0},
            td[5] = {9, 9, 7, 8, 0}, hit[CAP];
    seq_t a, b, c;
    compute(kv, &a, ta, 4);
    compute(kv, &b, tb, 4);
    assert_int_equal(b.kv.n_full, 2);
    assert_int_not_equal(b.kv.blocks[0], a.kv.blocks[0]); /* no false hit on block 0 */
    /* a and b have the same second block tokens under different parents */
    assert_int_equal(eng_kv_match_prefix(kv, tc, 5, hit, CAP, NULL), 2);
    assert_int_equal(hit[0], b.kv.blocks[0]);
    assert_int_equal(hit[1], b.kv.blocks[1]); /* not a's, though tokens and hash are equal */
    assert_int_equal(eng_kv_match_prefix(kv, ta, 5, hit, CAP, NULL), 2);
    assert_int_equal(hit[1], a.kv.blocks[1]);
    assert_int_equal(eng_kv_match_prefix(kv, td, 5, hit, CAP, NULL), 0);
    /* c's second block has a's tokens and (forced) hash but another parent */
    eng_kv_seq_free(kv, &a.kv);
    compute(kv, &c, td, 4);
    assert_int_equal(eng_kv_match_prefix(kv, td, 5, hit, CAP, NULL), 2);
    assert_int_equal(hit[0], c.kv.blocks[0]);
    assert_int_equal(hit[1], c.kv.blocks[1]);
    /* the hook only changes on an empty cache */
    assert_int_equal(eng_kv_set_hash_fn(kv, NULL), LT_ERR_INVAL);
    eng_kv_destroy(&kv);

    /* the default hash spreads: different tokens, different parents, different hashes */
    int32_t x[4] = {1, 2, 3, 4}, y[4] = {1, 2, 3, 5};
    uint64_t h1 = eng_kv_hash_block(ENG_KV_ROOT_HASH, x, 4);
    assert_true(h1 != eng_kv_hash_block(ENG_KV_ROOT_HASH, y, 4));
    assert_true(h1 != eng_kv_hash_block(h1, x, 4));
    assert_true(h1 == eng_kv_hash_block(ENG_KV_ROOT_HASH, x, 4));
}

static void test_duplicates(void **state) {
    /* two sequences compute the same prefix at once (neither could hit the other) */
    eng_kv_t *kv = make(16, 2, true);
    int32_t t[7] = {5, 6, 7, 8, 9, 10, 11}, hit[CAP];
    seq_t a, b, c;
    compute(kv, &a, t, 6);
    seq_init(&b);
    assert_int_equal(eng_kv_seq_alloc(kv, &b.kv, 6), 0);
    eng_kv_seq_commit(kv, &b.kv, t, 6);
    assert_int_equal(b.kv.n_full, 3);
    /* both copies are registered; a lookup prefers one in use */
    eng_kv_seq_free(kv, &a.kv);
    assert_int_equal(eng_kv_match_prefix(kv, t, 7, hit, CAP, NULL), 3);
    for (int i = 0; i < 3; i++) assert_int_equal(hit[i], b.kv.blocks[i]);
    eng_kv_seq_free(kv, &b.kv); /* LRU: a2 a1 a0 b2 b1 b0 */
    eng_kv_stats_t st;
    eng_kv_get_stats(kv, &st);
    assert_int_equal(st.cached, 6);
    /* evict a's copies of blocks 2 and 1: b's copies still serve the whole chain */
    seq_init(&c);
    assert_int_equal(eng_kv_seq_alloc(kv, &c.kv, 2 * (st.free + 2)), 0);
    assert_false(eng_kv_block_cached(kv, a.store[2]));
    assert_false(eng_kv_block_cached(kv, a.store[1]));
    assert_true(eng_kv_block_cached(kv, a.store[0]));
    assert_int_equal(eng_kv_match_prefix(kv, t, 7, hit, CAP, NULL), 3);
    assert_int_equal(hit[1], b.store[1]);
    assert_int_equal(hit[2], b.store[2]);
    eng_kv_destroy(&kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_free_refcounts), cmocka_unit_test(test_prefix_hits_exact),
        cmocka_unit_test(test_never_last_token),     cmocka_unit_test(test_lru_eviction_order),
        cmocka_unit_test(test_hash_collisions),      cmocka_unit_test(test_duplicates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
