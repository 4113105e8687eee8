/*
 * kv_blocks.c — the paged KV block manager: block ids, reference counts, a free stack, and the
 * prefix cache (hash table of full blocks + LRU list of released cached blocks). See engine.h.
 *
 * Every structure is sized at creation and indexed by block id (int32 links, no pointers), so
 * nothing here allocates after eng_kv_create().
 *
 * A block is in exactly one of three states:
 *   FREE       on the free stack: no reference, no registered contents;
 *   USED       refcount > 0, held by one or more sequences (more only for cached full blocks);
 *   EVICTABLE  refcount 0, contents registered in the hash table, on the LRU list.
 * A USED block may be registered too (a full block being shared or about to be released).
 *
 * Exactness of prefix hits. The 64-bit chained hash only selects candidates. Each registered
 * block also carries a content id (cid) naming its whole prefix: a block whose (parent cid,
 * tokens) equal an already registered block's inherits that block's cid (both stay registered,
 * so either can serve a hit); otherwise it gets a fresh cid. A lookup accepts a candidate only if
 * its tokens equal ours and its parent cid equals the cid of the block we matched just before
 * (0 for the first block), so by induction a hit's whole prefix equals ours, whatever the hash
 * does. A forced-collision test (eng_kv_set_hash_fn) checks it.
 */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

#include "lt.h"

enum { BLK_FREE = 0, BLK_USED = 1, BLK_EVICTABLE = 2 };

typedef struct blk {
    int32_t ref;
    int32_t prev, next; /* LRU links (EVICTABLE only), -1 at the ends */
    int32_t hnext;      /* hash-bucket chain (registered only) */
    uint8_t state;
    bool registered;
    uint64_t hash;
    uint64_t cid;        /* content id of the prefix ending with this block */
    uint64_t parent_cid; /* 0 for a first block */
} blk_t;

struct eng_kv {
    int num_blocks, block_size;
    bool prefix_caching;
    blk_t *blk;        /* (num_blocks) */
    int32_t *tok;      /* (num_blocks, block_size) token ids of registered blocks */
    int32_t *free_stk; /* (num_blocks) */
    int n_free;
    int32_t lru_head, lru_tail; /* head = least recently released = evicted first */
    int n_evictable;
    int n_used;
    int32_t *buckets; /* (mask + 1) heads of hash chains, -1 empty */
    uint64_t mask;
    uint64_t next_cid;
    uint64_t queries, hits, evictions;
    eng_kv_hash_fn hash_fn;
};

/* ---- hashing ---- */

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull

static inline uint64_t rotl64(uint64_t x, int r) {
    return (x << r) | (x >> (64 - r));
}

uint64_t eng_kv_hash_block(uint64_t parent, const int32_t *tokens, int n) {
    uint64_t h = parent * P1 + P4 + (uint64_t)n * P3;
    for (int i = 0; i < n; i++) {
        uint64_t k = rotl64((uint64_t)(uint32_t)tokens[i] * P2, 31) * P1;
        h = rotl64(h ^ k, 27) * P1 + P4;
    }
    /* final avalanche so that nearby inputs spread over all bucket bits */
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

/* ---- lifecycle ---- */

int eng_kv_create(int num_blocks, int block_size, bool enable_prefix_caching, eng_kv_t **out,
                  char *err) {
    *out = NULL;
    if (num_blocks < 1 || num_blocks > (1 << 30))
        return lt_errf(err, LT_ERR_INVAL, "kv: num_blocks %d out of range [1, 2^30]", num_blocks);
    if (block_size < 1 || block_size > 4096)
        return lt_errf(err, LT_ERR_INVAL, "kv: block_size %d out of range [1, 4096]", block_size);
    eng_kv_t *kv = calloc(1, sizeof *kv);
    if (!kv) return lt_errf(err, LT_ERR_NOMEM, "kv: out of memory");
    kv->num_blocks = num_blocks;
    kv->block_size = block_size;
    kv->prefix_caching = enable_prefix_caching;
    kv->hash_fn = eng_kv_hash_block;
    uint64_t nb = 1;
    while (nb < 2 * (uint64_t)num_blocks) nb <<= 1;
    kv->mask = nb - 1;
    kv->blk = calloc((size_t)num_blocks, sizeof *kv->blk);
    kv->free_stk = malloc((size_t)num_blocks * sizeof *kv->free_stk);
    kv->buckets = malloc(nb * sizeof *kv->buckets);
    if (enable_prefix_caching)
        kv->tok = malloc((size_t)num_blocks * (size_t)block_size * sizeof *kv->tok);
    if (!kv->blk || !kv->free_stk || !kv->buckets || (enable_prefix_caching && !kv->tok)) {
        eng_kv_destroy(&kv);
        return lt_errf(err, LT_ERR_NOMEM, "kv: out of memory for %d blocks", num_blocks);
    }
    for (uint64_t i = 0; i < nb; i++) kv->buckets[i] = -1;
    /* stack top is the end: pop block 0 first */
    for (int i = 0; i < num_blocks; i++) {
        kv->free_stk[i] = num_blocks - 1 - i;
        kv->blk[i].prev = kv->blk[i].next = kv->blk[i].hnext = -1;
    }
    kv->n_free = num_blocks;
    kv->lru_head = kv->lru_tail = -1;
    kv->next_cid = 1;
    *out = kv;
    return 0;
}

void eng_kv_destroy(eng_kv_t **kvp) {
    if (!kvp || !*kvp) return;
    eng_kv_t *kv = *kvp;
    free(kv->blk);
    free(kv->tok);
    free(kv->free_stk);
    free(kv->buckets);
    free(kv);
    *kvp = NULL;
}

int eng_kv_block_size(const eng_kv_t *kv) {
    return kv->block_size;
}

int eng_kv_num_available(const eng_kv_t *kv) {
    return kv->n_free + kv->n_evictable;
}

int eng_kv_blocks_needed(const eng_kv_t *kv, const eng_kv_seq_t *seq, int n_slots) {
    int need = (n_slots + kv->block_size - 1) / kv->block_size - seq->n_blocks;
    return need > 0 ? need : 0;
}

/* ---- LRU list and hash table ---- */

static void lru_remove(eng_kv_t *kv, int32_t b) {
    blk_t *x = &kv->blk[b];
    if (x->prev >= 0)
        kv->blk[x->prev].next = x->next;
    else
        kv->lru_head = x->next;
    if (x->next >= 0)
        kv->blk[x->next].prev = x->prev;
    else
        kv->lru_tail = x->prev;
    x->prev = x->next = -1;
    kv->n_evictable--;
}

static void lru_push_tail(eng_kv_t *kv, int32_t b) {
    blk_t *x = &kv->blk[b];
    x->prev = kv->lru_tail;
    x->next = -1;
    if (kv->lru_tail >= 0)
        kv->blk[kv->lru_tail].next = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_evictable++;
}

static void table_insert(eng_kv_t *kv, int32_t b) {
    uint64_t i = kv->blk[b].hash & kv->mask;
    kv->blk[b].hnext = kv->buckets[i];
    kv->buckets[i] = b;
    kv->blk[b].registered = true;
}

static void table_remove(eng_kv_t *kv, int32_t b) {
    int32_t *link = &kv->buckets[kv->blk[b].hash & kv->mask];
    while (*link >= 0 && *link != b) link = &kv->blk[*link].hnext;
    if (*link == b) *link = kv->blk[b].hnext;
    kv->blk[b].hnext = -1;
    kv->blk[b].registered = false;
    kv->blk[b].cid = kv->blk[b].parent_cid = kv->blk[b].hash = 0;
}

/* The registered block with this hash, parent content id and tokens, or -1. Prefers one that is
 * in use, so that a hit does not pull a second copy out of the evictable pool. */
static int32_t table_find(const eng_kv_t *kv, uint64_t hash, uint64_t parent_cid,
                          const int32_t *tokens) {
    size_t bytes = (size_t)kv->block_size * sizeof *tokens;
    int32_t found = -1;
    for (int32_t b = kv->buckets[hash & kv->mask]; b >= 0; b = kv->blk[b].hnext) {
        const blk_t *x = &kv->blk[b];
        if (x->hash != hash || x->parent_cid != parent_cid) continue;
        if (memcmp(kv->tok + (size_t)b * (size_t)kv->block_size, tokens, bytes) != 0) continue;
        if (x->ref > 0) return b;
        if (found < 0) found = b;
    }
    return found;
}

/* ---- allocation ---- */

/* Takes a free block, else evicts the least recently released cached one. */
static int32_t take_block(eng_kv_t *kv) {
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_stk[--kv->n_free];
    } else {
        b = kv->lru_head;
        if (b < 0) return -1;
        lru_remove(kv, b);
        table_remove(kv, b);
        kv->evictions++;
    }
    kv->blk[b].ref = 1;
    kv->blk[b].state = BLK_USED;
    kv->n_used++;
    return b;
}

int eng_kv_match_prefix(const eng_kv_t *kv, const int32_t *tokens, int n_tokens, int32_t *out,
                        int max_blocks, int *n_evictable) {
    if (n_evictable) *n_evictable = 0;
    if (!kv->prefix_caching || n_tokens < 1) return 0;
    int limit = (n_tokens - 1) / kv->block_size;
    if (limit > max_blocks) limit = max_blocks;
    uint64_t h = ENG_KV_ROOT_HASH, cid = 0;
    int n = 0;
    for (; n < limit; n++) {
        const int32_t *t = tokens + (size_t)n * (size_t)kv->block_size;
        h = kv->hash_fn(h, t, kv->block_size);
        int32_t b = table_find(kv, h, cid, t);
        if (b < 0) break;
        out[n] = b;
        cid = kv->blk[b].cid;
        if (n_evictable && kv->blk[b].ref == 0) (*n_evictable)++;
    }
    return n;
}

int eng_kv_seq_acquire(eng_kv_t *kv, eng_kv_seq_t *seq, const int32_t *blocks, int n,
                       int n_query_tokens) {
    if (seq->n_blocks != 0 || n > seq->cap || n < 0) return LT_ERR_INVAL;
    for (int i = 0; i < n; i++) {
        blk_t *x = &kv->blk[blocks[i]];
        if (!x->registered) return LT_ERR_INVAL; /* only cached full blocks are shared */
    }
    for (int i = 0; i < n; i++) {
        int32_t b = blocks[i];
        blk_t *x = &kv->blk[b];
        if (x->ref == 0) {
            lru_remove(kv, b);
            x->state = BLK_USED;
            kv->n_used++;
        }
        x->ref++;
        seq->blocks[i] = b;
    }
    seq->n_blocks = seq->n_full = n;
    if (kv->prefix_caching) {
        kv->queries += (uint64_t)(n_query_tokens > 0 ? n_query_tokens : 0);
        kv->hits += (uint64_t)n * (uint64_t)kv->block_size;
    }
    return 0;
}

int eng_kv_seq_alloc(eng_kv_t *kv, eng_kv_seq_t *seq, int n_slots) {
    int need = eng_kv_blocks_needed(kv, seq, n_slots);
    if (need == 0) return 0;
    if (seq->n_blocks + need > seq->cap) return LT_ERR_RANGE;
    if (need > eng_kv_num_available(kv)) return ENG_AGAIN;
    for (int i = 0; i < need; i++) seq->blocks[seq->n_blocks++] = take_block(kv);
    return 0;
}

void eng_kv_seq_commit(eng_kv_t *kv, eng_kv_seq_t *seq, const int32_t *tokens, int n_computed) {
    if (!kv->prefix_caching) return;
    int full = n_computed / kv->block_size;
    if (full > seq->n_blocks) full = seq->n_blocks;
    size_t bs = (size_t)kv->block_size;
    for (int i = seq->n_full; i < full; i++) {
        uint64_t parent_hash = ENG_KV_ROOT_HASH, parent_cid = 0;
        if (i > 0) {
            const blk_t *p = &kv->blk[seq->blocks[i - 1]];
            parent_hash = p->hash;
            parent_cid = p->cid;
        }
        int32_t b = seq->blocks[i];
        blk_t *x = &kv->blk[b];
        const int32_t *t = tokens + (size_t)i * bs;
        uint64_t h = kv->hash_fn(parent_hash, t, kv->block_size);
        int32_t same = table_find(kv, h, parent_cid, t);
        x->hash = h;
        x->parent_cid = parent_cid;
        x->cid = same >= 0 ? kv->blk[same].cid : kv->next_cid++;
        memcpy(kv->tok + (size_t)b * bs, t, bs * sizeof *t);
        table_insert(kv, b);
    }
    if (full > seq->n_full) seq->n_full = full;
}

void eng_kv_seq_free(eng_kv_t *kv, eng_kv_seq_t *seq) {
    /* last block first: the LRU then evicts a prefix's tail before its head */
    for (int i = seq->n_blocks - 1; i >= 0; i--) {
        int32_t b = seq->blocks[i];
        blk_t *x = &kv->blk[b];
        if (--x->ref > 0) continue;
        kv->n_used--;
        if (x->registered) {
            x->state = BLK_EVICTABLE;
            lru_push_tail(kv, b);
        } else {
            x->state = BLK_FREE;
            kv->free_stk[kv->n_free++] = b;
        }
    }
    seq->n_blocks = seq->n_full = 0;
}

/* ---- introspection ---- */

void eng_kv_get_stats(const eng_kv_t *kv, eng_kv_stats_t *st) {
    st->num_blocks = kv->num_blocks;
    st->used = kv->n_used;
    st->free = kv->n_free;
    st->cached = kv->n_evictable;
    st->usage = (double)kv->n_used / (double)kv->num_blocks;
    st->prefix_queries = kv->queries;
    st->prefix_hits = kv->hits;
    st->evictions = kv->evictions;
}

int eng_kv_block_ref(const eng_kv_t *kv, int32_t block) {
    if (block < 0 || block >= kv->num_blocks) return -1;
    return kv->blk[block].ref;
}

bool eng_kv_block_cached(const eng_kv_t *kv, int32_t block) {
    if (block < 0 || block >= kv->num_blocks) return false;
    return kv->blk[block].registered;
}

int eng_kv_set_hash_fn(eng_kv_t *kv, eng_kv_hash_fn fn) {
    for (int i = 0; i < kv->num_blocks; i++)
        if (kv->blk[i].registered) return LT_ERR_INVAL;
    kv->hash_fn = fn ? fn : eng_kv_hash_block;
    return 0;
}
