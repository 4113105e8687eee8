/*
 * tok_bpe.c — the BPE model: the vocabulary hash map, the merge table, GPT-2's byte <-> character
 * table, and the merge loop that turns one pre-tokenized piece into ids.
 *
 * The merge loop follows HF `tokenizers` (models/bpe): start from one symbol per character (per
 * byte for byte-level models), then repeatedly merge the adjacent pair with the lowest rank,
 * leftmost first on equal ranks. Short pieces (the vast majority) use a linear scan over the live
 * symbols; long ones a binary heap of candidate pairs with lazy invalidation, so a 1 MB word is
 * O(n log n), not quadratic. Both orders pick the same pair at every step, so they give the same
 * ids. There is no cache: the model is immutable and shared by threads, and without one encoding
 * is already faster than HF with its cache (bench/bench_tokenizer.py).
 */
#include <stdlib.h>
#include <string.h>

#include "lt.h"
#include "tok_internal.h"

/* ---- string map ---- */

int tok_strmap_build(tok_strmap_t *m, const char *pool, const uint32_t *key_off,
                     const uint32_t *key_len, const uint8_t *present, int32_t n) {
    memset(m, 0, sizeof *m);
    size_t cap = 16;
    while (cap < (size_t)n * 2 + 2) cap *= 2;
    m->slot = calloc(cap, sizeof *m->slot);
    if (!m->slot) return LT_ERR_NOMEM;
    m->mask = (uint32_t)(cap - 1);
    m->pool = pool;
    m->key_off = key_off;
    m->key_len = key_len;
    for (int32_t id = 0; id < n; id++) {
        if (!present[id]) continue;
        const char *k = pool + key_off[id];
        size_t kn = key_len[id];
        uint32_t i = (uint32_t)tok_hash_bytes(k, kn) & m->mask;
        for (;; i = (i + 1) & m->mask) {
            uint32_t s = m->slot[i];
            if (s == 0) {
                m->slot[i] = (uint32_t)id + 1;
                break;
            }
            /* A duplicate key keeps the first id (HF's vocab is a map: one id per string). */
            if (key_len[s - 1] == kn && memcmp(pool + key_off[s - 1], k, kn) == 0) break;
        }
    }
    return 0;
}

int32_t tok_strmap_get(const tok_strmap_t *m, const char *s, size_t n) {
    if (!m->slot) return -1;
    uint32_t i = (uint32_t)tok_hash_bytes(s, n) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        uint32_t v = m->slot[i];
        if (v == 0) return -1;
        uint32_t id = v - 1;
        if (m->key_len[id] == n && memcmp(m->pool + m->key_off[id], s, n) == 0) return (int32_t)id;
    }
}

void tok_strmap_free(tok_strmap_t *m) {
    free(m->slot);
    memset(m, 0, sizeof *m);
}

/* ---- pair map ---- */

static inline uint64_t pair_key(int32_t a, int32_t b) {
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

int tok_pairmap_init(tok_pairmap_t *m, size_t expect) {
    memset(m, 0, sizeof *m);
    size_t cap = 16;
    while (cap < expect * 2 + 2) cap *= 2;
    m->slot = calloc(cap, sizeof *m->slot);
    if (!m->slot) return LT_ERR_NOMEM;
    m->mask = (uint32_t)(cap - 1);
    return 0;
}

static int pairmap_grow(tok_pairmap_t *m) {
    tok_pairmap_t g;
    int rc = tok_pairmap_init(&g, (size_t)(m->mask + 1));
    if (rc) return rc;
    for (size_t i = 0; i <= m->mask; i++) {
        if (!m->slot[i].key) continue;
        uint32_t j = (uint32_t)tok_mix64(m->slot[i].key) & g.mask;
        while (g.slot[j].key) j = (j + 1) & g.mask;
        g.slot[j] = m->slot[i];
    }
    g.n = m->n;
    tok_pairmap_free(m);
    *m = g;
    return 0;
}

int tok_pairmap_put(tok_pairmap_t *m, int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    if ((m->n + 1) * 2 > (size_t)m->mask + 1) {
        int rc = pairmap_grow(m);
        if (rc) return rc;
    }
    uint64_t k = pair_key(a, b);
    uint32_t i = (uint32_t)tok_mix64(k) & m->mask;
    while (m->slot[i].key && m->slot[i].key != k) i = (i + 1) & m->mask;
    if (!m->slot[i].key) m->n++;
    m->slot[i] = (tok_pair_slot_t){k, rank, merged};
    return 0;
}

bool tok_pairmap_get(const tok_pairmap_t *m, int32_t a, int32_t b, uint32_t *rank,
                     int32_t *merged) {
    if (!m->slot) return false;
    uint64_t k = pair_key(a, b);
    uint32_t i = (uint32_t)tok_mix64(k) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        const tok_pair_slot_t *e = &m->slot[i];
        if (e->key == k) {
            *rank = e->rank;
            *merged = e->merged;
            return true;
        }
        if (!e->key) return false;
    }
}

void tok_pairmap_free(tok_pairmap_t *m) {
    free(m->slot);
    memset(m, 0, sizeof *m);
}

/* ---- GPT-2 byte <-> character table ---- */

/* Bytes that are printable and not space map to the same code point; the other 68 map, in byte
 * order, to U+0100, U+0101, ... */
static bool byte_is_direct(unsigned b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
}

uint32_t tok_byte_to_cp(uint8_t b) {
    if (byte_is_direct(b)) return b;
    unsigned n = 0;
    for (unsigned i = 0; i < b; i++) n += !byte_is_direct(i);
    return 0x100 + n;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return byte_is_direct(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    unsigned n = cp - 0x100;
    for (unsigned b = 0; b < 256; b++) {
        if (byte_is_direct(b)) continue;
        if (n == 0) return (int)b;
        n--;
    }
    return -1;
}

bool tok_bytelevel_decode(const char *s, size_t n, char *out, size_t *on) {
    size_t o = 0;
    if (lt_utf8_valid_prefix(s, n) != n) return false;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)lt_utf8_decode(s + i, n - i, &cp);
        int b = tok_cp_to_byte(cp);
        if (b < 0) return false;
        out[o++] = (char)b;
    }
    *on = o;
    return true;
}

/* ---- merge loop ---- */

typedef struct {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    uint32_t rank;      /* small-word scan: rank of the pair (this, next), UINT32_MAX if none */
    int32_t merged;
    bool dead;
} sym_t;

typedef struct {
    uint32_t rank;
    uint32_t pos;
    int32_t merged;
} cand_t;

struct tok_bpe_work {
    sym_t *sym;
    size_t cap_sym;
    cand_t *heap;
    size_t cap_heap, n_heap;
};

void tok_bpe_work_free(tok_bpe_work_t **w) {
    if (!*w) return;
    free((*w)->sym);
    free((*w)->heap);
    free(*w);
    *w = NULL;
}

#define SMALL_WORD 48 /* up to this many symbols: linear scan instead of a heap */

static inline bool cand_less(const cand_t *a, const cand_t *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(tok_bpe_work_t *w, cand_t c) {
    if (w->n_heap == w->cap_heap) {
        cand_t *h = tok_grow(w->heap, &w->cap_heap, w->n_heap + 1, sizeof *h, 256);
        if (!h) return LT_ERR_NOMEM;
        w->heap = h;
    }
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
    return 0;
}

static cand_t heap_pop(tok_bpe_work_t *w) {
    cand_t top = w->heap[0];
    cand_t last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t c = (l + 1 < n && cand_less(&w->heap[l + 1], &w->heap[l])) ? l + 1 : l;
        if (!cand_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static inline void pair_of(const tok_bpe_t *m, sym_t *s, int32_t i) {
    int32_t j = s[i].next;
    if (j < 0 || !tok_pairmap_get(&m->pairs, s[i].id, s[j].id, &s[i].rank, &s[i].merged))
        s[i].rank = UINT32_MAX;
}

static void merge_small(const tok_bpe_t *m, sym_t *s, int32_t n) {
    for (int32_t i = 0; i < n; i++) pair_of(m, s, i);
    for (;;) {
        int32_t best = -1;
        uint32_t best_rank = UINT32_MAX;
        for (int32_t i = 0; i >= 0; i = s[i].next)
            if (s[i].rank < best_rank) {
                best_rank = s[i].rank;
                best = i;
            }
        if (best < 0) return;
        int32_t j = s[best].next;
        s[best].id = s[best].merged;
        s[best].next = s[j].next;
        if (s[j].next >= 0) s[s[j].next].prev = best;
        s[j].dead = true;
        pair_of(m, s, best);
        if (s[best].prev >= 0) pair_of(m, s, s[best].prev);
    }
}

static int push_pair(const tok_bpe_t *m, tok_bpe_work_t *w, int32_t i) {
    sym_t *s = w->sym;
    int32_t j = s[i].next;
    cand_t c;
    if (j < 0 || !tok_pairmap_get(&m->pairs, s[i].id, s[j].id, &c.rank, &c.merged)) return 0;
    c.pos = (uint32_t)i;
    return heap_push(w, c);
}

static int merge_heap(const tok_bpe_t *m, tok_bpe_work_t *w, int32_t n) {
    sym_t *s = w->sym;
    w->n_heap = 0;
    for (int32_t i = 0; i + 1 < n; i++) {
        int rc = push_pair(m, w, i);
        if (rc) return rc;
    }
    while (w->n_heap) {
        cand_t c = heap_pop(w);
        int32_t i = (int32_t)c.pos;
        if (s[i].dead || s[i].next < 0) continue;
        int32_t j = s[i].next;
        uint32_t r;
        int32_t mg;
        /* A stale candidate: the pair at i changed since it was pushed. */
        if (!tok_pairmap_get(&m->pairs, s[i].id, s[j].id, &r, &mg) || mg != c.merged) continue;
        s[i].id = c.merged;
        s[i].next = s[j].next;
        if (s[j].next >= 0) s[s[j].next].prev = i;
        s[j].dead = true;
        int rc = 0;
        if (s[i].prev >= 0) rc = push_pair(m, w, s[i].prev);
        if (!rc) rc = push_pair(m, w, i);
        if (rc) return rc;
    }
    return 0;
}

/* ---- piece -> ids ---- */

typedef struct {
    sym_t *s;
    int32_t n;
} symlist_t;

static inline void sym_add(symlist_t *l, int32_t id) {
    sym_t *x = &l->s[l->n];
    x->id = id;
    x->prev = l->n - 1;
    x->next = -1;
    x->dead = false;
    if (l->n > 0) l->s[l->n - 1].next = l->n;
    l->n++;
}

/* One symbol that is not in the vocabulary (`c` is its text in model-key form): byte fallback
 * when every byte has a <0xXX> token, else the unknown token (fused with a preceding one when
 * fuse_unk), else nothing — HF's BPE::merge_word, including its order: byte tokens go in before a
 * pending unknown token. */
static void sym_unknown(const tok_bpe_t *m, symlist_t *l, const char *c, size_t cn,
                        int32_t *pend_unk) {
    if (m->byte_fallback) {
        bool all = true;
        for (size_t k = 0; k < cn; k++) all &= m->fb_id[(uint8_t)c[k]] >= 0;
        if (all) {
            for (size_t k = 0; k < cn; k++) sym_add(l, m->fb_id[(uint8_t)c[k]]);
            return;
        }
    }
    if (m->unk_id < 0) return;
    if (*pend_unk >= 0 && !m->fuse_unk) sym_add(l, *pend_unk);
    *pend_unk = m->unk_id;
}

static int encode_word(const tok_bpe_t *m, const char *s, size_t n, tok_bpe_work_t **wp,
                       tok_ids_t *out) {
    if (!*wp) {
        *wp = calloc(1, sizeof **wp);
        if (!*wp) return LT_ERR_NOMEM;
    }
    tok_bpe_work_t *w = *wp;
    /* At most one symbol per byte, except byte fallback in byte-level mode: two per byte (the
     * UTF-8 of the byte's mapped character). */
    if (w->cap_sym < 2 * n + 2) {
        sym_t *p = tok_grow(w->sym, &w->cap_sym, 2 * n + 2, sizeof *p, 64);
        if (!p) return LT_ERR_NOMEM;
        w->sym = p;
    }
    symlist_t l = {w->sym, 0};
    int32_t pend_unk = -1;
    if (m->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = m->byte_id[(uint8_t)s[i]];
            if (id >= 0) {
                if (pend_unk >= 0) sym_add(&l, pend_unk), pend_unk = -1;
                sym_add(&l, id);
            } else {
                char c[4];
                int cn = lt_utf8_encode(tok_byte_to_cp((uint8_t)s[i]), c);
                sym_unknown(m, &l, c, (size_t)cn, &pend_unk);
            }
        }
    } else {
        for (size_t i = 0; i < n;) {
            uint8_t b = (uint8_t)s[i];
            size_t cn = tok_char_len(s + i, n - i);
            int32_t id = b < 0x80 ? m->ascii_id[b] : tok_strmap_get(&m->vocab, s + i, cn);
            if (id >= 0) {
                if (pend_unk >= 0) sym_add(&l, pend_unk), pend_unk = -1;
                sym_add(&l, id);
            } else {
                sym_unknown(m, &l, s + i, cn, &pend_unk);
            }
            i += cn;
        }
    }
    if (pend_unk >= 0) sym_add(&l, pend_unk);
    if (l.n == 0) return 0;
    if (l.n > 1) {
        if (l.n <= SMALL_WORD) {
            merge_small(m, l.s, l.n);
        } else {
            int rc = merge_heap(m, w, l.n);
            if (rc) return rc;
        }
    }
    for (int32_t i = 0; i >= 0; i = l.s[i].next) {
        int rc = tok_ids_push(out, l.s[i].id);
        if (rc) return rc;
    }
    return 0;
}

static const char META[3] = {(char)0xe2, (char)0x96, (char)0x81}; /* "▁" */

static inline bool meta_at(const char *s, size_t n, size_t i) {
    return i + 3 <= n && memcmp(s + i, META, 3) == 0;
}

int tok_bpe_encode(const tok_bpe_t *m, const char *s, size_t n, tok_bpe_work_t **wp,
                   tok_ids_t *out) {
    if (n == 0) return 0;
    if (m->ignore_merges) {
        int32_t id = tok_strmap_get(&m->vocab, s, n);
        if (id >= 0) return tok_ids_push(out, id);
    }
    if (!m->meta_split) return encode_word(m, s, n, wp, out);
    size_t start = 0;
    for (size_t i = 3; i + 3 <= n; i++) {
        if (!meta_at(s, n, i) || meta_at(s, n, i - 3)) continue;
        int rc = encode_word(m, s + start, i - start, wp, out);
        if (rc) return rc;
        start = i;
        i += 2;
    }
    return encode_word(m, s + start, n - start, wp, out);
}

void tok_bpe_init_meta_split(tok_bpe_t *m, int32_t n_vocab) {
    m->meta_split = false;
    if (m->byte_level || tok_strmap_get(&m->vocab, META, 3) < 0) return;
    for (int32_t id = 0; id < n_vocab; id++) {
        /* Only ids in the map are model strings. */
        const char *k = m->vocab.pool + m->vocab.key_off[id];
        size_t kn = m->vocab.key_len[id];
        if (tok_strmap_get(&m->vocab, k, kn) != id) continue;
        for (size_t i = 3; i + 3 <= kn; i++)
            if (meta_at(k, kn, i) && !meta_at(k, kn, i - 3)) return;
    }
    m->meta_split = true;
}
