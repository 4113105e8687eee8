/*
 * tokenizer.c — loading tokenizers (GGUF metadata, or HF tokenizer.json + tokenizer_config.json)
 * into one pipeline description, and the encode driver that runs it. See tokenizer.h for the
 * contract and tok_internal.h for the pipeline's shape.
 *
 * A GGUF tokenizer is translated into what its tokenizer.json would say: "gpt2" becomes a
 * byte-level BPE whose pre-tokenizer comes from tokenizer.ggml.pre; "llama" becomes Llama 2's
 * SentencePiece BPE (Prepend("▁") + Replace(" ", "▁") normalizer, byte fallback, its decoder).
 * Token strings of byte-level vocabularies are stored twice: as written (for
 * fe_tokenizer_token_text and decoding) and as the raw bytes they stand for (the model's keys),
 * so that encoding looks up bytes directly and never builds the mapped string.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lt.h"
#include "tok_internal.h"
#include "tokenizer.h"

/* ---- built-in pre-tokenizer regexes (GGUF tokenizer.ggml.pre) ---- */

static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* HF's Whitespace pre-tokenizer, \w+|[^\w\s]+ in Rust's regex crate, whose \w is Alphabetic,
 * marks, decimal digits, connector punctuation and joiners, and \s is White_Space. */
static const char RE_WHITESPACE[] =
    "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]+"
    "|[^\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}\\p{White_Space}]+";

static const char META[] = "\xe2\x96\x81"; /* U+2581 "▁" */

/* ---- builder: the vocabulary while it is being loaded ---- */

typedef struct {
    lt_buf_t pool;
    int32_t n;
    uint32_t *text_off, *text_len; /* as written */
    uint32_t *key_off, *key_len;   /* model key (raw bytes for byte-level) */
    uint8_t *in_model;             /* 1: the model's vocabulary has this id */
    uint8_t *flags;
    bool byte_level;
} builder_t;

static int bld_init(builder_t *b, int32_t n, bool byte_level) {
    memset(b, 0, sizeof *b);
    b->n = n;
    b->byte_level = byte_level;
    size_t m = n > 0 ? (size_t)n : 1;
    b->text_off = calloc(m, sizeof(uint32_t));
    b->text_len = calloc(m, sizeof(uint32_t));
    b->key_off = calloc(m, sizeof(uint32_t));
    b->key_len = calloc(m, sizeof(uint32_t));
    b->in_model = calloc(m, 1);
    b->flags = calloc(m, 1);
    if (!b->text_off || !b->text_len || !b->key_off || !b->key_len || !b->in_model || !b->flags)
        return LT_ERR_NOMEM;
    /* Offset 0 is the empty string, the text of ids without a token. */
    return lt_buf_putc(&b->pool, '\0');
}

static void bld_free(builder_t *b) {
    lt_buf_free(&b->pool);
    free(b->text_off);
    free(b->text_len);
    free(b->key_off);
    free(b->key_len);
    free(b->in_model);
    free(b->flags);
    memset(b, 0, sizeof *b);
}

/* Appends s[0, n) and a NUL to a string pool; *off receives its offset (pools are indexed with
 * 32 bits). */
static int pool_add(lt_buf_t *pool, const char *s, size_t n, uint32_t *off) {
    if (pool->len + n + 1 > UINT32_MAX) return LT_ERR_RANGE;
    *off = (uint32_t)pool->len;
    if (lt_buf_put(pool, s, n) || lt_buf_putc(pool, '\0')) return LT_ERR_NOMEM;
    return 0;
}

/* Sets id's text (and model key when in_model). */
static int bld_set(builder_t *b, int32_t id, const char *s, size_t n, bool in_model) {
    int rc = pool_add(&b->pool, s, n, &b->text_off[id]);
    if (rc) return rc;
    b->text_len[id] = (uint32_t)n;
    b->flags[id] |= TOK_F_PRESENT;
    if (!in_model) return 0;
    b->in_model[id] = 1;
    if (!b->byte_level) {
        b->key_off[id] = b->text_off[id];
        b->key_len[id] = b->text_len[id];
        return 0;
    }
    char stackbuf[256];
    char *raw = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (!raw) return LT_ERR_NOMEM;
    size_t rn;
    if (tok_bytelevel_decode(s, n, raw, &rn)) {
        rc = pool_add(&b->pool, raw, rn, &b->key_off[id]);
        b->key_len[id] = (uint32_t)rn;
    } else {
        b->in_model[id] = 0; /* no byte sequence spells it: BPE can never produce it */
    }
    if (raw != stackbuf) free(raw);
    return rc;
}

/* Moves the builder's arrays into t and builds the model's lookup tables. */
static int bld_finish(builder_t *b, fe_tokenizer_t *t, char *err) {
    t->pool_len = b->pool.len;
    t->pool = lt_buf_take(&b->pool); /* not NULL: bld_init put the empty string in */
    t->n_vocab = b->n;
    t->text_off = b->text_off;
    t->text_len = b->text_len;
    t->flags = b->flags;
    b->text_off = b->text_len = NULL;
    b->flags = NULL;
    tok_bpe_t *m = &t->bpe;
    m->byte_level = b->byte_level;
    if (tok_strmap_build(&m->vocab, t->pool, b->key_off, b->key_len, b->in_model, b->n))
        return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    /* The map borrows the key arrays: keep them with the tokenizer (freed in destroy). */
    b->key_off = b->key_len = NULL;
    for (int i = 0; i < 256; i++) {
        char c = (char)i;
        m->byte_id[i] = b->byte_level ? tok_strmap_get(&m->vocab, &c, 1) : -1;
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", i);
        m->fb_id[i] = tok_strmap_get(&m->vocab, name, 6);
        if (i < 128) m->ascii_id[i] = b->byte_level ? -1 : tok_strmap_get(&m->vocab, &c, 1);
    }
    tok_bpe_init_meta_split(m, b->n);
    return 0;
}

/* ---- added tokens ---- */

typedef struct {
    const char *s; /* content (borrowed) */
    size_t n;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} added_in_t;

/* Builds a matcher over `in`, copying the patterns into pool. */
static int addset_build(tok_addset_t *set, lt_buf_t *pool, const added_in_t *in, int n) {
    memset(set, 0, sizeof *set);
    if (n == 0) return 0;
    set->tok = calloc((size_t)n, sizeof *set->tok);
    if (!set->tok) return LT_ERR_NOMEM;
    /* Bucket by first byte (counting sort), longest first within a bucket (insertion sort: added
     * tokens number in the hundreds at most). */
    int count[257] = {0};
    for (int i = 0; i < n; i++) count[(uint8_t)in[i].s[0] + 1]++;
    for (int c = 0; c < 256; c++) count[c + 1] += count[c];
    for (int c = 0; c <= 256; c++) set->first[c] = count[c];
    for (int i = 0; i < n; i++) {
        uint8_t fb = (uint8_t)in[i].s[0];
        tok_added_t *t = &set->tok[count[fb]++];
        int rc = pool_add(pool, in[i].s, in[i].n, &t->off);
        if (rc) return rc;
        t->len = (uint32_t)in[i].n;
        t->id = in[i].id;
        t->special = in[i].special;
        t->lstrip = in[i].lstrip;
        t->rstrip = in[i].rstrip;
        t->single_word = in[i].single_word;
        set->has_first[fb >> 3] |= (uint8_t)(1u << (fb & 7));
    }
    for (int c = 0; c < 256; c++) {
        tok_added_t *v = set->tok + set->first[c];
        int m = set->first[c + 1] - set->first[c];
        for (int i = 1; i < m; i++) {
            tok_added_t x = v[i];
            int j = i;
            while (j > 0 && v[j - 1].len < x.len) v[j] = v[j - 1], j--;
            v[j] = x;
        }
    }
    set->n = n;
    return 0;
}

/* Registers the added tokens: flags per id and the two matchers (raw text, normalized text).
 * Patterns of normalized tokens go through the tokenizer's normalizers first, as in HF. Must run
 * after the normalizers are set up. */
static int added_finish(fe_tokenizer_t *t, added_in_t *in, int n, char *err) {
    added_in_t *raw = calloc((size_t)n + 1, sizeof *raw);
    added_in_t *nrm = calloc((size_t)n + 1, sizeof *nrm);
    lt_buf_t pool = {0};
    int n_raw = 0, n_nrm = 0, rc = 0;
    tok_ctx_t ctx = {.err = err};
    ctx.md = pcre2_match_data_create(1, NULL);
    if (!raw || !nrm || !ctx.md) rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        if (in[i].id < 0 || in[i].id >= t->n_vocab) continue;
        t->flags[in[i].id] |= TOK_F_ADDED | (in[i].special ? TOK_F_SPECIAL : 0);
        /* Tokens whose text is empty or not UTF-8 can never match (repaired) input text. */
        if (in[i].n == 0 || lt_utf8_valid_prefix(in[i].s, in[i].n) != in[i].n) continue;
        if (!in[i].normalized || t->n_norm == 0) {
            raw[n_raw++] = in[i];
            continue;
        }
        tok_span_t ns;
        rc = tok_normalize(&ctx, t->norm, t->n_norm, in[i].s, in[i].n, &ns);
        if (rc || ns.n == 0) continue;
        nrm[n_nrm] = in[i];
        nrm[n_nrm].s = ns.p;
        nrm[n_nrm].n = ns.n;
        n_nrm++;
    }
    if (!rc && (addset_build(&t->added_raw, &pool, raw, n_raw) ||
                addset_build(&t->added_norm, &pool, nrm, n_nrm)))
        rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
    t->added_pool = pool.data; /* the tokenizer's now; NULL without added tokens */
    lt_arena_free(&ctx.arena);
    pcre2_match_data_free(ctx.md);
    free(raw);
    free(nrm);
    return rc;
}

/* ---- merges ---- */

/* Returns merge i as two token strings. */
typedef int (*merge_get_fn)(void *ctx, size_t i, const char **a, size_t *an, const char **b,
                            size_t *bn);

/* Model-key form of a token string: raw bytes for byte-level vocabularies. */
static bool key_form(bool byte_level, const char *s, size_t n, lt_buf_t *out) {
    lt_buf_clear(out);
    if (!byte_level) return lt_buf_put(out, s, n) == 0;
    if (lt_buf_reserve(out, n)) return false;
    size_t on;
    bool ok = tok_bytelevel_decode(s, n, out->data, &on);
    out->len = ok ? on : 0;
    out->data[out->len] = '\0';
    return ok;
}

/* Fills the pair map: merge i has rank i; its result is the token spelled a+b. A token missing
 * from the vocabulary is an error, as in HF. */
static int load_merges(fe_tokenizer_t *t, size_t n, merge_get_fn get, void *gctx, const char *src,
                       char *err) {
    bool bl = t->bpe.byte_level;
    lt_buf_t ka = {0}, kb = {0};
    int rc = tok_pairmap_init(&t->bpe.pairs, n);
    if (rc) return lt_errf(err, rc, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        const char *a, *b;
        size_t an, bn;
        if (get(gctx, i, &a, &an, &b, &bn)) {
            rc = lt_errf(err, LT_ERR_FORMAT, "%s: merge %zu is malformed", src, i);
            break;
        }
        if (!key_form(bl, a, an, &ka) || !key_form(bl, b, bn, &kb)) {
            rc = lt_errf(err, LT_ERR_FORMAT, "%s: merge %zu '%.*s %.*s' is not byte-level text",
                         src, i, (int)an, a, (int)bn, b);
            break;
        }
        int32_t ia = tok_strmap_get(&t->bpe.vocab, ka.data, ka.len);
        int32_t ib = tok_strmap_get(&t->bpe.vocab, kb.data, kb.len);
        if (lt_buf_put(&ka, kb.data, kb.len)) {
            rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
            break;
        }
        int32_t im = tok_strmap_get(&t->bpe.vocab, ka.data, ka.len);
        if (ia < 0 || ib < 0 || im < 0) {
            rc = lt_errf(err, LT_ERR_FORMAT,
                         "%s: merge %zu '%.*s %.*s' uses a token that is not "
                         "in the vocabulary",
                         src, i, (int)an, a, (int)bn, b);
            break;
        }
        if (tok_pairmap_put(&t->bpe.pairs, ia, ib, (uint32_t)i, im))
            rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
    }
    lt_buf_free(&ka);
    lt_buf_free(&kb);
    return rc;
}

/* ---- tokenizer lifetime ---- */

static fe_tokenizer_t *tok_new(void) {
    fe_tokenizer_t *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->bos = t->eos = -1;
    t->bpe.unk_id = -1;
    t->has_decoder = true;
    return t;
}

void fe_tokenizer_destroy(fe_tokenizer_t **tp) {
    fe_tokenizer_t *t = tp ? *tp : NULL;
    if (!t) return;
    for (int i = 0; i < t->n_norm; i++) tok_norm_free(&t->norm[i]);
    for (int i = 0; i < t->n_pre; i++) tok_pre_free(&t->pre[i]);
    for (int i = 0; i < t->n_dec; i++) tok_dec_free(&t->dec[i]);
    free((void *)t->bpe.vocab.key_off);
    free((void *)t->bpe.vocab.key_len);
    tok_strmap_free(&t->bpe.vocab);
    tok_pairmap_free(&t->bpe.pairs);
    free(t->added_raw.tok);
    free(t->added_norm.tok);
    free(t->added_pool);
    free(t->pool);
    free(t->text_off);
    free(t->text_len);
    free(t->flags);
    free(t);
    *tp = NULL;
}

/* ---- pipeline stages ---- */

/* The next free element (zeroed) of an array of TOK_MAX_STAGES stages of `size` bytes, *n of
 * them in use; NULL, with the error written, when all are taken. */
static void *new_stage(void *stages, size_t size, int *n, const char *what, char *err) {
    if (*n == TOK_MAX_STAGES) {
        lt_errf(err, LT_ERR_UNSUPPORTED, "more than %d %s", TOK_MAX_STAGES, what);
        return NULL;
    }
    void *p = (char *)stages + (size_t)(*n)++ * size;
    memset(p, 0, size);
    return p;
}

static tok_pre_t *new_pre(fe_tokenizer_t *t, tok_pre_kind_t kind, char *err) {
    tok_pre_t *p = new_stage(t->pre, sizeof *p, &t->n_pre, "pre-tokenizers", err);
    if (p) p->kind = kind;
    return p;
}

static tok_norm_t *new_norm(fe_tokenizer_t *t, tok_norm_kind_t kind, char *err) {
    tok_norm_t *nm = new_stage(t->norm, sizeof *nm, &t->n_norm, "normalizers", err);
    if (nm) nm->kind = kind;
    return nm;
}

static tok_dec_t *new_dec(fe_tokenizer_t *t, tok_dec_kind_t kind, char *err) {
    tok_dec_t *d = new_stage(t->dec, sizeof *d, &t->n_dec, "decoders", err);
    if (d) d->kind = kind;
    return d;
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static int pre_split(fe_tokenizer_t *t, const char *re, size_t n, bool literal,
                     tok_split_behavior_t bh, bool invert, char *err) {
    tok_pre_t *p = new_pre(t, TOK_PRE_SPLIT, err);
    if (!p) return LT_ERR_UNSUPPORTED;
    p->behavior = bh;
    p->invert = invert;
    return tok_regex_compile(re, n, literal, &p->re, err);
}

static int pre_bytelevel(fe_tokenizer_t *t, bool use_regex, bool add_prefix_space, char *err) {
    tok_pre_t *p = new_pre(t, TOK_PRE_BYTELEVEL, err);
    if (!p) return LT_ERR_UNSUPPORTED;
    p->add_prefix_space = add_prefix_space;
    return use_regex ? tok_regex_compile(RE_GPT2, strlen(RE_GPT2), false, &p->re, err) : 0;
}

static int norm_str(fe_tokenizer_t *t, tok_norm_kind_t kind, const char *str, size_t n,
                    const char *pat, size_t pn, bool regex, char *err) {
    tok_norm_t *nm = new_norm(t, kind, err);
    if (!nm) return LT_ERR_UNSUPPORTED;
    if (str && !(nm->str = dupn(str, n))) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    nm->str_len = n;
    return pat ? tok_regex_compile(pat, pn, !regex, &nm->re, err) : 0;
}

static int dec_replace(fe_tokenizer_t *t, const char *pat, size_t pn, const char *rep, size_t rn,
                       char *err) {
    tok_dec_t *d = new_dec(t, TOK_DEC_REPLACE, err);
    if (!d) return LT_ERR_UNSUPPORTED;
    d->pat = dupn(pat, pn);
    d->rep = dupn(rep, rn);
    if (!d->pat || !d->rep) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    d->pat_len = pn;
    d->rep_len = rn;
    return 0;
}

/* ---- GGUF ---- */

enum {
    GGUF_TT_NORMAL = 1,
    GGUF_TT_UNKNOWN = 2,
    GGUF_TT_CONTROL = 3,
    GGUF_TT_USER = 4,
    GGUF_TT_UNUSED = 5,
    GGUF_TT_BYTE = 6,
};

static bool gguf_bool(const lt_gguf_t *g, const char *key, bool dflt) {
    bool v;
    return lt_gguf_get_bool(g, key, &v) == 0 ? v : dflt;
}

static int32_t gguf_id(const lt_gguf_t *g, const char *key, int32_t n) {
    uint32_t v;
    if (lt_gguf_get_u32(g, key, &v) != 0 || v >= (uint32_t)n) return -1;
    return (int32_t)v;
}

/* The pipeline llama.cpp's tokenizer.ggml.pre names, written as its tokenizer.json would be. */
static int gguf_pre(fe_tokenizer_t *t, const char *pre, size_t n, const char *path, char *err) {
#define PRE_IS(s) (n == strlen(s) && memcmp(pre, s, n) == 0)
    if (PRE_IS("default") || PRE_IS("gpt-2") || PRE_IS("gpt2"))
        return pre_bytelevel(t, true, false, err);
    if (PRE_IS("smollm") || PRE_IS("starcoder") || PRE_IS("refact") || PRE_IS("codeshell") ||
        PRE_IS("command-r")) {
        tok_pre_t *p = new_pre(t, TOK_PRE_DIGITS, err);
        if (!p) return LT_ERR_UNSUPPORTED;
        p->individual = true;
        return pre_bytelevel(t, true, false, err);
    }
    if (PRE_IS("llama-bpe") || PRE_IS("llama3") || PRE_IS("llama-v3")) {
        t->bpe.ignore_merges = true;
        int rc = pre_split(t, RE_LLAMA3, strlen(RE_LLAMA3), false, TOK_SPLIT_ISOLATED, false, err);
        return rc ? rc : pre_bytelevel(t, false, false, err);
    }
    if (PRE_IS("qwen2") || PRE_IS("qwen3") || PRE_IS("deepseek-r1-qwen")) {
        if (!new_norm(t, TOK_NORM_NFC, err)) return LT_ERR_UNSUPPORTED;
        int rc = pre_split(t, RE_QWEN2, strlen(RE_QWEN2), false, TOK_SPLIT_ISOLATED, false, err);
        return rc ? rc : pre_bytelevel(t, false, false, err);
    }
#undef PRE_IS
    return lt_errf(err, LT_ERR_UNSUPPORTED,
                   "%s: tokenizer.ggml.pre '%.*s' is not supported (known: default, gpt-2, "
                   "smollm, starcoder, refact, codeshell, command-r, llama-bpe, llama3, qwen2, "
                   "qwen3, deepseek-r1-qwen)",
                   path, (int)n, pre);
}

/* Pairs of a SentencePiece vocabulary without merges: every split of a normal piece into two
 * normal pieces, ranked by the piece's score (higher first; equal scores share a rank, so the
 * leftmost pair wins, as in SentencePiece and llama.cpp). */
static int gguf_score_pairs(fe_tokenizer_t *t, const int32_t *types, const float *scores, int32_t n,
                            char *err) {
    int32_t *order = malloc((size_t)n * sizeof *order);
    uint32_t *rank = malloc((size_t)n * sizeof *rank);
    int rc = 0;
    if (!order || !rank) {
        rc = LT_ERR_NOMEM;
        goto done;
    }
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if (types[i] == GGUF_TT_NORMAL) order[m++] = i;
    /* Normal ids by score, descending, ties by id (shell sort: C11 qsort has no context). */
    for (int32_t gap = m / 2; gap > 0; gap /= 2)
        for (int32_t i = gap; i < m; i++) {
            int32_t x = order[i], j = i;
            while (j >= gap && (scores[order[j - gap]] < scores[x] ||
                                (scores[order[j - gap]] == scores[x] && order[j - gap] > x))) {
                order[j] = order[j - gap];
                j -= gap;
            }
            order[j] = x;
        }
    uint32_t r = 0;
    for (int32_t i = 0; i < m; i++) {
        if (i > 0 && scores[order[i]] != scores[order[i - 1]]) r++;
        rank[order[i]] = r;
    }
    rc = tok_pairmap_init(&t->bpe.pairs, (size_t)m * 2);
    for (int32_t k = 0; k < m && !rc; k++) {
        int32_t id = order[k];
        const char *s = t->pool + t->text_off[id];
        size_t len = t->text_len[id];
        for (size_t i = 1; i < len && !rc; i++) {
            if (((uint8_t)s[i] & 0xc0) == 0x80) continue; /* split at character boundaries */
            int32_t a = tok_strmap_get(&t->bpe.vocab, s, i);
            int32_t b = tok_strmap_get(&t->bpe.vocab, s + i, len - i);
            if (a < 0 || b < 0 || types[a] != GGUF_TT_NORMAL || types[b] != GGUF_TT_NORMAL)
                continue;
            rc = tok_pairmap_put(&t->bpe.pairs, a, b, rank[id], id);
        }
    }
done:
    free(order);
    free(rank);
    return rc ? lt_errf(err, LT_ERR_NOMEM, "out of memory") : 0;
}

static int gguf_merge_get(void *vctx, size_t i, const char **a, size_t *an, const char **b,
                          size_t *bn) {
    const lt_gguf_t *g = vctx;
    const char *s;
    size_t n;
    if (lt_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s, &n)) return -1;
    const char *sp = memchr(s, ' ', n);
    if (!sp) return -1;
    *a = s;
    *an = (size_t)(sp - s);
    *b = sp + 1;
    *bn = n - *an - 1;
    return 0;
}

int fe_tokenizer_from_gguf(const lt_gguf_t *g, fe_tokenizer_t **out, char *err) {
    *out = NULL;
    const char *path = lt_gguf_path(g);
    const char *model;
    size_t model_n;
    if (lt_gguf_get_str(g, "tokenizer.ggml.model", &model, &model_n))
        return lt_errf(err, LT_ERR_NOTFOUND, "%s: no tokenizer.ggml.model", path);
    bool gpt2 = model_n == 4 && memcmp(model, "gpt2", 4) == 0;
    bool spm = model_n == 5 && memcmp(model, "llama", 5) == 0;
    if (!gpt2 && !spm)
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "%s: tokenizer.ggml.model '%.*s' is not supported (gpt2, llama)", path,
                       (int)model_n, model);
    int et;
    uint64_t n64;
    const void *data;
    if (lt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n64, &data) || et != LT_GGUF_STRING ||
        n64 == 0 || n64 > INT32_MAX / 4)
        return lt_errf(err, LT_ERR_FORMAT, "%s: tokenizer.ggml.tokens missing or malformed", path);
    int32_t n = (int32_t)n64;

    fe_tokenizer_t *t = tok_new();
    builder_t b = {0};
    int32_t *types = malloc((size_t)n * sizeof *types);
    added_in_t *added = calloc((size_t)n, sizeof *added);
    float *scores = NULL;
    int n_added = 0, rc;
    if (!t || !types || !added || bld_init(&b, n, gpt2)) {
        rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < n; i++) types[i] = GGUF_TT_NORMAL;
    if (lt_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n64, &data) == 0) {
        if ((et != LT_GGUF_INT32 && et != LT_GGUF_UINT32) || n64 != (uint64_t)n) {
            rc = lt_errf(err, LT_ERR_FORMAT, "%s: tokenizer.ggml.token_type is malformed", path);
            goto fail;
        }
        memcpy(types, data, (size_t)n * sizeof *types);
    }
    for (int32_t i = 0; i < n; i++) {
        const char *s;
        size_t sn;
        if (lt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s, &sn)) {
            rc = lt_errf(err, LT_ERR_FORMAT, "%s: token %d is unreadable", path, i);
            goto fail;
        }
        if ((rc = bld_set(&b, i, s, sn, true)) != 0) {
            rc = lt_errf(err, rc, "%s: vocabulary too large", path);
            goto fail;
        }
    }

    const char *pre = NULL;
    size_t pre_n = 0;
    if (gpt2) {
        if (lt_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pre_n)) {
            LT_WARN("%s: no tokenizer.ggml.pre; using the GPT-2 pre-tokenizer", path);
            pre = "default";
            pre_n = 7;
        }
        if ((rc = gguf_pre(t, pre, pre_n, path, err)) != 0) goto fail;
        if (!new_dec(t, TOK_DEC_BYTELEVEL, err)) goto fail_stage;
    } else {
        /* Llama 2's tokenizer.json: Prepend("▁") + Replace(" ", "▁"); byte fallback; decoder
         * Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0). */
        bool space_prefix = gguf_bool(g, "tokenizer.ggml.add_space_prefix", true);
        if (space_prefix && (rc = norm_str(t, TOK_NORM_PREPEND, META, 3, NULL, 0, false, err)))
            goto fail;
        if ((rc = norm_str(t, TOK_NORM_REPLACE, META, 3, " ", 1, false, err))) goto fail;
        t->bpe.byte_fallback = true;
        t->bpe.fuse_unk = true;
        if ((rc = dec_replace(t, META, 3, " ", 1, err))) goto fail;
        if (!new_dec(t, TOK_DEC_BYTEFALLBACK, err) || !new_dec(t, TOK_DEC_FUSE, err))
            goto fail_stage;
        if (space_prefix) {
            tok_dec_t *d = new_dec(t, TOK_DEC_STRIP, err);
            if (!d) goto fail_stage;
            d->ch = ' ';
            d->start = 1;
        }
    }
    if ((rc = bld_finish(&b, t, err)) != 0) goto fail;
    for (int32_t i = 0; i < n; i++) {
        int ty = types[i];
        if (ty != GGUF_TT_CONTROL && ty != GGUF_TT_UNKNOWN && ty != GGUF_TT_USER) continue;
        added[n_added++] = (added_in_t){.s = t->pool + t->text_off[i],
                                        .n = t->text_len[i],
                                        .id = i,
                                        .special = ty != GGUF_TT_USER};
    }
    if ((rc = added_finish(t, added, n_added, err)) != 0) goto fail;

    if (spm) {
        t->bpe.unk_id = gguf_id(g, "tokenizer.ggml.unknown_token_id", n);
        for (int32_t i = 0; i < n && t->bpe.unk_id < 0; i++)
            if (types[i] == GGUF_TT_UNKNOWN) t->bpe.unk_id = i;
    }
    t->bos = gguf_id(g, "tokenizer.ggml.bos_token_id", n);
    t->eos = gguf_id(g, "tokenizer.ggml.eos_token_id", n);
    if (gguf_bool(g, "tokenizer.ggml.add_bos_token", spm) && t->bos >= 0)
        t->prefix[t->n_prefix++] = t->bos;
    if (gguf_bool(g, "tokenizer.ggml.add_eos_token", false) && t->eos >= 0)
        t->suffix[t->n_suffix++] = t->eos;

    if (lt_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n64, &data) == 0 &&
        et == LT_GGUF_STRING) {
        rc = load_merges(t, (size_t)n64, gguf_merge_get, (void *)g, path, err);
    } else if (spm) {
        if (lt_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n64, &data) ||
            et != LT_GGUF_FLOAT32 || n64 != (uint64_t)n) {
            rc = lt_errf(err, LT_ERR_FORMAT, "%s: neither tokenizer.ggml.merges nor scores", path);
            goto fail;
        }
        if (!(scores = malloc((size_t)n * sizeof *scores))) {
            rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
            goto fail;
        }
        memcpy(scores, data, (size_t)n * sizeof *scores);
        rc = gguf_score_pairs(t, types, scores, n, err);
    } else {
        rc = lt_errf(err, LT_ERR_FORMAT, "%s: tokenizer.ggml.merges is missing", path);
    }
    if (rc) goto fail;
    snprintf(t->desc, sizeof t->desc, "gguf %s%s%.*s, %d tokens", gpt2 ? "gpt2" : "llama",
             pre ? "/" : "", pre ? (int)pre_n : 0, pre ? pre : "", n);
    bld_free(&b);
    free(types);
    free(scores);
    free(added);
    *out = t;
    return 0;
fail_stage:
    rc = LT_ERR_UNSUPPORTED;
fail:
    bld_free(&b);
    free(types);
    free(scores);
    free(added);
    fe_tokenizer_destroy(&t);
    return rc;
}

/* ---- Hugging Face tokenizer.json ---- */

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jbool(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* A pattern object {"String": s} or {"Regex": r}. */
static const char *jpattern(const cJSON *o, bool *regex) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *s = jstr(p, "String");
    *regex = false;
    if (s) return s;
    *regex = true;
    return jstr(p, "Regex");
}

static bool jfind_type(const cJSON *o, const char *type, const char *list_key) {
    if (!o || cJSON_IsNull(o)) return false;
    const char *ty = jstr(o, "type");
    if (ty && strcmp(ty, type) == 0) return true;
    if (ty && strcmp(ty, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, list_key)) {
            if (jfind_type(e, type, list_key)) return true;
        }
    }
    return false;
}

static int unsupported(char *err, const char *src, const char *what, const char *type) {
    return lt_errf(err, LT_ERR_UNSUPPORTED, "%s: %s '%s' is not supported", src, what,
                   type ? type : "(no type)");
}

typedef int (*parse_fn)(fe_tokenizer_t *t, const cJSON *j, const char *src, char *err);

/* A Sequence of normalizers, pre-tokenizers or decoders: the elements of j[key] in order. */
static int parse_seq(fe_tokenizer_t *t, const cJSON *j, const char *key, parse_fn parse,
                     const char *src, char *err) {
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, key)) {
        int rc = parse(t, e, src, err);
        if (rc) return rc;
    }
    return 0;
}

static int parse_norm(fe_tokenizer_t *t, const cJSON *j, const char *src, char *err) {
    if (!j || cJSON_IsNull(j)) return 0;
    const char *ty = jstr(j, "type");
    if (!ty) return unsupported(err, src, "normalizer", ty);
    if (strcmp(ty, "Sequence") == 0) return parse_seq(t, j, "normalizers", parse_norm, src, err);
    static const struct {
        const char *name;
        tok_norm_kind_t kind;
    } simple[] = {{"NFC", TOK_NORM_NFC},
                  {"NFD", TOK_NORM_NFD},
                  {"NFKC", TOK_NORM_NFKC},
                  {"NFKD", TOK_NORM_NFKD},
                  {"Lowercase", TOK_NORM_LOWERCASE}};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
        if (strcmp(ty, simple[i].name) == 0)
            return new_norm(t, simple[i].kind, err) ? 0 : LT_ERR_UNSUPPORTED;
    if (strcmp(ty, "Prepend") == 0) {
        const char *s = jstr(j, "prepend");
        if (!s) return lt_errf(err, LT_ERR_FORMAT, "%s: Prepend without 'prepend'", src);
        return norm_str(t, TOK_NORM_PREPEND, s, strlen(s), NULL, 0, false, err);
    }
    if (strcmp(ty, "Replace") == 0) {
        bool regex;
        const char *pat = jpattern(j, &regex), *content = jstr(j, "content");
        if (!pat || !content) return lt_errf(err, LT_ERR_FORMAT, "%s: malformed Replace", src);
        return norm_str(t, TOK_NORM_REPLACE, content, strlen(content), pat, strlen(pat), regex,
                        err);
    }
    if (strcmp(ty, "Strip") == 0) {
        tok_norm_t *nm = new_norm(t, TOK_NORM_STRIP, err);
        if (!nm) return LT_ERR_UNSUPPORTED;
        nm->left = jbool(j, "strip_left", true);
        nm->right = jbool(j, "strip_right", true);
        return 0;
    }
    return unsupported(err, src, "normalizer", ty);
}

static int parse_behavior(const char *s, tok_split_behavior_t *out) {
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    static const tok_split_behavior_t kinds[] = {TOK_SPLIT_REMOVED, TOK_SPLIT_ISOLATED,
                                                 TOK_SPLIT_MERGED_PREV, TOK_SPLIT_MERGED_NEXT,
                                                 TOK_SPLIT_CONTIGUOUS};
    for (int i = 0; s && i < 5; i++)
        if (strcmp(s, names[i]) == 0) return *out = kinds[i], 0;
    return -1;
}

/* Metaspace's replacement and prepend scheme (also the legacy add_prefix_space). */
static int parse_metaspace(const cJSON *j, char *rep, int *rep_len, tok_prepend_t *scheme) {
    const char *r = jstr(j, "replacement");
    if (!r || !*r || strlen(r) > 4 || lt_utf8_valid_prefix(r, strlen(r)) != strlen(r)) return -1;
    uint32_t cp;
    *rep_len = lt_utf8_decode(r, strlen(r), &cp);
    memcpy(rep, r, (size_t)*rep_len);
    rep[*rep_len] = '\0';
    const char *ps = jstr(j, "prepend_scheme");
    *scheme = TOK_PREPEND_ALWAYS;
    if (ps && strcmp(ps, "first") == 0) *scheme = TOK_PREPEND_FIRST;
    if (ps && strcmp(ps, "never") == 0) *scheme = TOK_PREPEND_NEVER;
    if (!ps && !jbool(j, "add_prefix_space", true)) *scheme = TOK_PREPEND_NEVER;
    return 0;
}

static int parse_pre(fe_tokenizer_t *t, const cJSON *j, const char *src, char *err) {
    if (!j || cJSON_IsNull(j)) return 0;
    const char *ty = jstr(j, "type");
    if (!ty) return unsupported(err, src, "pre-tokenizer", ty);
    if (strcmp(ty, "Sequence") == 0) return parse_seq(t, j, "pretokenizers", parse_pre, src, err);
    if (t->n_pre && t->pre[t->n_pre - 1].kind == TOK_PRE_BYTELEVEL)
        return lt_errf(err, LT_ERR_UNSUPPORTED, "%s: a pre-tokenizer after ByteLevel", src);
    if (strcmp(ty, "ByteLevel") == 0)
        return pre_bytelevel(t, jbool(j, "use_regex", true), jbool(j, "add_prefix_space", true),
                             err);
    if (strcmp(ty, "Split") == 0) {
        bool regex;
        const char *pat = jpattern(j, &regex);
        tok_split_behavior_t bh;
        if (!pat || parse_behavior(jstr(j, "behavior"), &bh))
            return lt_errf(err, LT_ERR_FORMAT, "%s: malformed Split pre-tokenizer", src);
        return pre_split(t, pat, strlen(pat), !regex, bh, jbool(j, "invert", false), err);
    }
    if (strcmp(ty, "Digits") == 0) {
        tok_pre_t *p = new_pre(t, TOK_PRE_DIGITS, err);
        if (!p) return LT_ERR_UNSUPPORTED;
        p->individual = jbool(j, "individual_digits", false);
        return 0;
    }
    if (strcmp(ty, "Metaspace") == 0) {
        tok_pre_t *p = new_pre(t, TOK_PRE_METASPACE, err);
        if (!p) return LT_ERR_UNSUPPORTED;
        if (parse_metaspace(j, p->rep, &p->rep_len, &p->prepend))
            return lt_errf(err, LT_ERR_FORMAT, "%s: malformed Metaspace", src);
        p->split = jbool(j, "split", true);
        return 0;
    }
    if (strcmp(ty, "Whitespace") == 0)
        return pre_split(t, RE_WHITESPACE, strlen(RE_WHITESPACE), false, TOK_SPLIT_REMOVED, true,
                         err);
    if (strcmp(ty, "WhitespaceSplit") == 0)
        return new_pre(t, TOK_PRE_WSSPLIT, err) ? 0 : LT_ERR_UNSUPPORTED;
    if (strcmp(ty, "Punctuation") == 0) {
        tok_pre_t *p = new_pre(t, TOK_PRE_PUNCT, err);
        if (!p) return LT_ERR_UNSUPPORTED;
        p->behavior = TOK_SPLIT_ISOLATED;
        const char *bh = jstr(j, "behavior");
        if (bh && parse_behavior(bh, &p->behavior))
            return lt_errf(err, LT_ERR_FORMAT, "%s: malformed Punctuation", src);
        return 0;
    }
    return unsupported(err, src, "pre-tokenizer", ty);
}

static int parse_dec(fe_tokenizer_t *t, const cJSON *j, const char *src, char *err) {
    const char *ty = jstr(j, "type");
    if (!ty) return unsupported(err, src, "decoder", ty);
    if (strcmp(ty, "Sequence") == 0) return parse_seq(t, j, "decoders", parse_dec, src, err);
    if (strcmp(ty, "ByteLevel") == 0)
        return new_dec(t, TOK_DEC_BYTELEVEL, err) ? 0 : LT_ERR_UNSUPPORTED;
    if (strcmp(ty, "ByteFallback") == 0) {
        for (int i = 0; i < t->n_dec; i++)
            if (t->dec[i].kind == TOK_DEC_FUSE || t->dec[i].kind == TOK_DEC_BYTELEVEL)
                return lt_errf(err, LT_ERR_UNSUPPORTED, "%s: ByteFallback after Fuse/ByteLevel",
                               src);
        return new_dec(t, TOK_DEC_BYTEFALLBACK, err) ? 0 : LT_ERR_UNSUPPORTED;
    }
    if (strcmp(ty, "Fuse") == 0) return new_dec(t, TOK_DEC_FUSE, err) ? 0 : LT_ERR_UNSUPPORTED;
    if (strcmp(ty, "Replace") == 0) {
        bool regex;
        const char *pat = jpattern(j, &regex), *content = jstr(j, "content");
        if (!pat || !content || !*pat)
            return lt_errf(err, LT_ERR_FORMAT, "%s: malformed Replace", src);
        if (regex) return unsupported(err, src, "decoder", "Replace with a regex");
        return dec_replace(t, pat, strlen(pat), content, strlen(content), err);
    }
    if (strcmp(ty, "Metaspace") == 0) {
        char rep[5];
        int rep_len;
        tok_prepend_t scheme;
        if (parse_metaspace(j, rep, &rep_len, &scheme))
            return lt_errf(err, LT_ERR_FORMAT, "%s: malformed Metaspace", src);
        tok_dec_t *d = new_dec(t, TOK_DEC_METASPACE, err);
        if (!d) return LT_ERR_UNSUPPORTED;
        lt_utf8_decode(rep, (size_t)rep_len, &d->ch);
        d->prepend = scheme != TOK_PREPEND_NEVER;
        return 0;
    }
    if (strcmp(ty, "Strip") == 0) {
        const char *c = jstr(j, "content");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "start");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "stop");
        if (!c || !*c || !cJSON_IsNumber(st) || !cJSON_IsNumber(sp) || st->valuedouble < 0 ||
            sp->valuedouble < 0)
            return lt_errf(err, LT_ERR_FORMAT, "%s: malformed Strip decoder", src);
        tok_dec_t *d = new_dec(t, TOK_DEC_STRIP, err);
        if (!d) return LT_ERR_UNSUPPORTED;
        lt_utf8_decode(c, strlen(c), &d->ch);
        d->start = st->valuedouble > 1e6 ? 1000000 : (int)st->valuedouble;
        d->stop = sp->valuedouble > 1e6 ? 1000000 : (int)sp->valuedouble;
        return 0;
    }
    return unsupported(err, src, "decoder", ty);
}

/* Post-processors as the ids they put before and after the sequence. */
typedef struct {
    int32_t pre[8], suf[8];
    int n_pre, n_suf;
} wrap_t;

static int wrap_add(int32_t *v, int *n, int32_t id) {
    if (*n == 8) return -1;
    v[(*n)++] = id;
    return 0;
}

static int wrap_add_all(int32_t *v, int *n, const int32_t *ids, int n_ids) {
    for (int i = 0; i < n_ids; i++)
        if (wrap_add(v, n, ids[i])) return -1;
    return 0;
}

static int parse_post(const cJSON *j, wrap_t *w, const char *src, char *err) {
    if (!j || cJSON_IsNull(j)) return 0;
    const char *ty = jstr(j, "type");
    if (!ty) return unsupported(err, src, "post-processor", ty);
    if (strcmp(ty, "ByteLevel") == 0) return 0;
    wrap_t x = {0};
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "processors")) {
            int rc = parse_post(e, w, src, err);
            if (rc) return rc;
        }
        return 0;
    } else if (strcmp(ty, "TemplateProcessing") == 0) {
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
        const cJSON *e;
        bool seen_a = false;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "single")) {
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
            if (!sp) {
                seen_a = true; /* {"Sequence": {"id": "A"}} */
                continue;
            }
            const char *name = jstr(sp, "id");
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(specials, name ? name : ""), "ids");
            if (!name || !cJSON_IsArray(ids))
                return lt_errf(err, LT_ERR_FORMAT, "%s: template token '%s' undefined", src,
                               name ? name : "?");
            const cJSON *id;
            cJSON_ArrayForEach(id, ids) {
                if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > INT32_MAX ||
                    wrap_add(seen_a ? x.suf : x.pre, seen_a ? &x.n_suf : &x.n_pre,
                             (int32_t)id->valuedouble))
                    return lt_errf(err, LT_ERR_FORMAT, "%s: bad template ids", src);
            }
        }
    } else if (strcmp(ty, "RobertaProcessing") == 0 || strcmp(ty, "BertProcessing") == 0) {
        const cJSON *cls = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "cls"), 1);
        const cJSON *sep = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "sep"), 1);
        if (!cJSON_IsNumber(cls) || !cJSON_IsNumber(sep))
            return lt_errf(err, LT_ERR_FORMAT, "%s: malformed %s", src, ty);
        x.pre[x.n_pre++] = (int32_t)cls->valuedouble;
        x.suf[x.n_suf++] = (int32_t)sep->valuedouble;
    } else {
        return unsupported(err, src, "post-processor", ty);
    }
    /* A later processor wraps what the earlier ones produced. */
    wrap_t r = {0};
    if (wrap_add_all(r.pre, &r.n_pre, x.pre, x.n_pre) ||
        wrap_add_all(r.pre, &r.n_pre, w->pre, w->n_pre) ||
        wrap_add_all(r.suf, &r.n_suf, w->suf, w->n_suf) ||
        wrap_add_all(r.suf, &r.n_suf, x.suf, x.n_suf))
        return lt_errf(err, LT_ERR_RANGE, "%s: too many template ids", src);
    *w = r;
    return 0;
}

typedef struct {
    const cJSON *cur;
} json_merge_ctx_t;

static int json_merge_get(void *vctx, size_t i, const char **a, size_t *an, const char **b,
                          size_t *bn) {
    json_merge_ctx_t *c = vctx;
    const cJSON *m = c->cur;
    (void)i;
    if (!m) return -1;
    c->cur = m->next;
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp) return -1;
        *a = s;
        *an = (size_t)(sp - s);
        *b = sp + 1;
        *bn = strlen(sp + 1);
        return 0;
    }
    const cJSON *x = m->child, *y = x ? x->next : NULL;
    if (!cJSON_IsString(x) || !cJSON_IsString(y)) return -1;
    *a = x->valuestring;
    *an = strlen(x->valuestring);
    *b = y->valuestring;
    *bn = strlen(y->valuestring);
    return 0;
}

/* A token given in tokenizer_config.json: a string, or an object with "content". */
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    return jstr(v, "content");
}

static int apply_config(fe_tokenizer_t *t, const char *path, char *err) {
    char *text;
    size_t len;
    struct stat st;
    if (stat(path, &st) != 0) return 0; /* optional */
    int rc = lt_read_file(path, &text, &len, err);
    if (rc) return rc;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return lt_errf(err, LT_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
    if (bos) t->bos = fe_tokenizer_token_id(t, bos, strlen(bos));
    if (eos) t->eos = fe_tokenizer_token_id(t, eos, strlen(eos));
    /* transformers' tokenizer classes that rebuild the post-processor from add_bos_token and
     * add_eos_token, with their defaults. */
    static const struct {
        const char *cls;
        bool bos, eos;
    } classes[] = {{"LlamaTokenizer", true, false},
                   {"CodeLlamaTokenizer", true, false},
                   {"GemmaTokenizer", true, false},
                   {"CohereTokenizer", true, false},
                   {"GPTNeoXTokenizer", false, false}};
    const char *cls = jstr(cfg, "tokenizer_class");
    for (size_t i = 0; cls && i < sizeof classes / sizeof classes[0]; i++) {
        size_t n = strlen(classes[i].cls);
        if (strncmp(cls, classes[i].cls, n) != 0 || (cls[n] && strcmp(cls + n, "Fast") != 0))
            continue;
        bool add_bos = jbool(cfg, "add_bos_token", classes[i].bos);
        bool add_eos = jbool(cfg, "add_eos_token", classes[i].eos);
        if ((add_bos && t->bos < 0) || (add_eos && t->eos < 0)) {
            cJSON_Delete(cfg);
            return lt_errf(err, LT_ERR_FORMAT, "%s: add_%s_token without a %s_token", path,
                           add_bos && t->bos < 0 ? "bos" : "eos",
                           add_bos && t->bos < 0 ? "bos" : "eos");
        }
        t->n_prefix = t->n_suffix = 0;
        if (add_bos) t->prefix[t->n_prefix++] = t->bos;
        if (add_eos) t->suffix[t->n_suffix++] = t->eos;
        break;
    }
    cJSON_Delete(cfg);
    return 0;
}

/* The model section: anything but a plain BPE model is refused. */
static int hf_check_model(const cJSON *model, const char *src, char *err) {
    const char *mtype = jstr(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!mtype && cJSON_IsArray(merges)) mtype = "BPE";
    if (!mtype || strcmp(mtype, "BPE") != 0) return unsupported(err, src, "model", mtype);
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return lt_errf(err, LT_ERR_FORMAT, "%s: BPE model without vocab or merges", src);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    const char *cont = jstr(model, "continuing_subword_prefix");
    const char *eow = jstr(model, "end_of_word_suffix");
    if ((cJSON_IsNumber(dropout) && dropout->valuedouble > 0) || (cont && *cont) || (eow && *eow))
        return unsupported(err, src, "BPE option",
                           "dropout/continuing_subword_prefix/"
                           "end_of_word_suffix");
    return 0;
}

/* The model's vocabulary and the added tokens into b, whose ids run to the largest id either
 * names. *added receives the added tokens (their content borrowed from the JSON); the caller
 * frees it, also on failure. */
static int hf_vocab(const cJSON *vocab, const cJSON *atoks, bool byte_level, builder_t *b,
                    added_in_t **added, int *n_added, const char *src, char *err) {
    *added = NULL;
    *n_added = 0;
    int32_t max_id = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= INT32_MAX / 4)
            return lt_errf(err, LT_ERR_FORMAT, "%s: vocab entry '%s' has a bad id", src, e->string);
        if ((int32_t)e->valuedouble > max_id) max_id = (int32_t)e->valuedouble;
    }
    added_in_t *v = *added = calloc((size_t)cJSON_GetArraySize(atoks) + 1, sizeof *v);
    if (!v) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    cJSON_ArrayForEach(e, atoks) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const char *content = jstr(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= INT32_MAX / 4 ||
            !content)
            return lt_errf(err, LT_ERR_FORMAT, "%s: malformed added token", src);
        v[(*n_added)++] = (added_in_t){.s = content,
                                       .n = strlen(content),
                                       .id = (int32_t)id->valuedouble,
                                       .special = jbool(e, "special", false),
                                       .lstrip = jbool(e, "lstrip", false),
                                       .rstrip = jbool(e, "rstrip", false),
                                       .single_word = jbool(e, "single_word", false),
                                       .normalized = jbool(e, "normalized", true)};
        if (v[*n_added - 1].id > max_id) max_id = v[*n_added - 1].id;
    }
    if (max_id < 0) return lt_errf(err, LT_ERR_FORMAT, "%s: empty vocabulary", src);
    if (bld_init(b, max_id + 1, byte_level)) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    int rc;
    cJSON_ArrayForEach(e, vocab) {
        if ((rc = bld_set(b, (int32_t)e->valuedouble, e->string, strlen(e->string), true)))
            return lt_errf(err, rc, "%s: vocabulary too large", src);
    }
    /* An added token's content is its text (HF decodes added tokens by content). */
    for (int i = 0; i < *n_added; i++) {
        int32_t id = v[i].id;
        uint32_t off;
        if ((rc = pool_add(&b->pool, v[i].s, v[i].n, &off)))
            return lt_errf(err, rc, "%s: vocabulary too large", src);
        b->text_off[id] = off;
        b->text_len[id] = (uint32_t)v[i].n;
        b->flags[id] |= TOK_F_PRESENT;
    }
    return 0;
}

int fe_tokenizer_from_hf(const char *json_path, const char *config_path, fe_tokenizer_t **out,
                         char *err) {
    *out = NULL;
    char *text;
    size_t len;
    int rc = lt_read_file(json_path, &text, &len, err);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const char *src = json_path;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lt_errf(err, LT_ERR_FORMAT, "%s: not a JSON object", src);
    }
    fe_tokenizer_t *t = tok_new();
    builder_t b = {0};
    added_in_t *added = NULL;
    int n_added = 0;
    if (!t) {
        rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    bool byte_level = jfind_type(pre, "ByteLevel", "pretokenizers");
    if ((rc = hf_check_model(model, src, err)) ||
        (rc = hf_vocab(cJSON_GetObjectItemCaseSensitive(model, "vocab"),
                       cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), byte_level, &b,
                       &added, &n_added, src, err)))
        goto done;
    if ((rc = parse_norm(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), src, err)) ||
        (rc = parse_pre(t, pre, src, err)))
        goto done;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!dec || cJSON_IsNull(dec))
        t->has_decoder = false;
    else if ((rc = parse_dec(t, dec, src, err)))
        goto done;
    wrap_t w = {0};
    if ((rc = parse_post(cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &w, src, err)))
        goto done;
    memcpy(t->prefix, w.pre, sizeof w.pre);
    memcpy(t->suffix, w.suf, sizeof w.suf);
    t->n_prefix = w.n_pre;
    t->n_suffix = w.n_suf;

    if ((rc = bld_finish(&b, t, err))) goto done;
    tok_bpe_t *m = &t->bpe;
    m->byte_fallback = jbool(model, "byte_fallback", false);
    m->fuse_unk = jbool(model, "fuse_unk", false);
    m->ignore_merges = jbool(model, "ignore_merges", false);
    const char *unk = jstr(model, "unk_token");
    if (unk) {
        lt_buf_t k = {0};
        if (key_form(byte_level, unk, strlen(unk), &k))
            m->unk_id = tok_strmap_get(&m->vocab, k.data, k.len);
        lt_buf_free(&k);
    }
    json_merge_ctx_t mc = {merges->child};
    if ((rc = load_merges(t, (size_t)cJSON_GetArraySize(merges), json_merge_get, &mc, src, err)))
        goto done;
    for (int i = 0; i < n_added; i++)
        if (added[i].id >= t->n_vocab) added[i].id = -1;
    if ((rc = added_finish(t, added, n_added, err))) goto done;
    if (t->n_prefix == 1) t->bos = t->prefix[0];
    if (config_path && (rc = apply_config(t, config_path, err))) goto done;
    snprintf(t->desc, sizeof t->desc, "tokenizer.json BPE%s, %d tokens",
             byte_level ? " byte-level" : "", t->n_vocab);
done:
    bld_free(&b);
    free(added);
    cJSON_Delete(root);
    if (rc) {
        fe_tokenizer_destroy(&t);
        return rc;
    }
    *out = t;
    return 0;
}

int fe_tokenizer_load(const char *model_path, fe_tokenizer_t **out, char *err) {
    *out = NULL;
    if (lt_is_dir(model_path)) {
        char tj[4096], tc[4096];
        snprintf(tj, sizeof tj, "%s/tokenizer.json", model_path);
        snprintf(tc, sizeof tc, "%s/tokenizer_config.json", model_path);
        return fe_tokenizer_from_hf(tj, tc, out, err);
    }
    lt_gguf_t *g;
    int rc = lt_gguf_open(model_path, &g, err);
    if (rc) return rc;
    rc = fe_tokenizer_from_gguf(g, out, err);
    lt_gguf_close(&g);
    return rc;
}

/* ---- encoding ---- */

#define CACHE_MAX_PIECE 32   /* bytes: longer pieces are rare and not worth caching */
#define CACHE_MIN_INPUT 4096 /* bytes: below this an encode call does not set up a cache */

/* The model on one pre-tokenized piece, through the per-call cache when there is one. */
static int encode_piece(const fe_tokenizer_t *t, tok_ctx_t *ctx, const char *p, size_t n,
                        tok_ids_t *out) {
    tok_cache_t *c = &ctx->cache;
    if (!c->slot || n > CACHE_MAX_PIECE) return tok_bpe_encode(&t->bpe, p, n, &ctx->bpe, out);
    uint32_t i = (uint32_t)tok_hash_bytes(p, n) & c->mask;
    for (; c->slot[i].p; i = (i + 1) & c->mask) {
        const tok_cache_slot_t *s = &c->slot[i];
        if (s->n != n || memcmp(s->p, p, n) != 0) continue;
        for (uint32_t k = 0; k < s->cnt; k++)
            if (tok_ids_push(out, c->ids[s->off + k])) return LT_ERR_NOMEM;
        return 0;
    }
    size_t before = out->n;
    int rc = tok_bpe_encode(&t->bpe, p, n, &ctx->bpe, out);
    if (rc || (c->used + 1) * 4 > (c->mask + 1) * 3) return rc; /* full: stop inserting */
    size_t cnt = out->n - before;
    if (c->n_ids + cnt > c->cap_ids) {
        int32_t *v = tok_grow(c->ids, &c->cap_ids, c->n_ids + cnt, sizeof *v, 4096);
        if (!v) return LT_ERR_NOMEM;
        c->ids = v;
    }
    memcpy(c->ids + c->n_ids, out->v + before, cnt * sizeof *out->v);
    c->slot[i] = (tok_cache_slot_t){p, (uint32_t)n, (uint32_t)c->n_ids, (uint32_t)cnt};
    c->n_ids += cnt;
    c->used++;
    return 0;
}

/* Pre-tokenizer and model over one piece of normalized text. */
static int encode_words(const fe_tokenizer_t *t, tok_ctx_t *ctx, const char *s, size_t n,
                        bool origin, tok_ids_t *out) {
    tok_piece_t whole = {s, (uint32_t)n, origin};
    const tok_piece_t *v = &whole;
    size_t cnt = n ? 1 : 0;
    if (t->n_pre) {
        int rc = tok_pretokenize(ctx, t->pre, t->n_pre, whole);
        if (rc) return rc;
        v = ctx->a.v;
        cnt = ctx->a.n;
    }
    for (size_t i = 0; i < cnt; i++) {
        int rc = encode_piece(t, ctx, v[i].p, v[i].n, out);
        if (rc) return lt_errf(ctx->err, rc, "out of memory");
    }
    return 0;
}

/* Normalizer, then normalized added tokens, then pre-tokenizer and model, on one stretch of text
 * between raw added tokens. */
static int encode_text(const fe_tokenizer_t *t, tok_ctx_t *ctx, const char *s, size_t n,
                       bool origin, bool parse_special, tok_ids_t *out) {
    tok_span_t ns = {s, n};
    if (t->n_norm) {
        int rc = tok_normalize(ctx, t->norm, t->n_norm, s, n, &ns);
        if (rc) return rc;
    }
    if (t->added_norm.n == 0) return encode_words(t, ctx, ns.p, ns.n, origin, out);
    tok_seg_t *segs = NULL;
    size_t n_segs = 0, cap = 0;
    int rc = tok_added_split(&t->added_norm, t->added_pool, ns.p, ns.n, parse_special, &segs,
                             &n_segs, &cap);
    if (rc) rc = lt_errf(ctx->err, rc, "out of memory");
    for (size_t i = 0; i < n_segs && !rc; i++) {
        if (segs[i].id >= 0)
            rc = tok_ids_push(out, segs[i].id) ? lt_errf(ctx->err, LT_ERR_NOMEM, "out of memory")
                                               : 0;
        else
            rc = encode_words(t, ctx, ns.p + segs[i].start, segs[i].end - segs[i].start,
                              origin && segs[i].start == 0, out);
    }
    free(segs);
    return rc;
}

int fe_tokenizer_encode(const fe_tokenizer_t *t, const char *text, size_t len, bool add_special,
                        bool parse_special, int32_t **ids, int *n_ids, char *err) {
    return tok_encode(t, text, len, add_special, parse_special, true, ids, n_ids, err);
}

int tok_encode(const fe_tokenizer_t *t, const char *text, size_t len, bool add_special,
               bool parse_special, bool cache, int32_t **ids, int *n_ids, char *err) {
    *ids = NULL;
    *n_ids = 0;
    if (len > (size_t)INT32_MAX)
        return lt_errf(err, LT_ERR_RANGE, "text of %zu bytes is too long to tokenize", len);
    lt_buf_t fixed = {0};
    tok_ctx_t ctx = {.err = err};
    tok_ids_t out = {0};
    tok_seg_t *segs = NULL;
    size_t n_segs = 0, cap = 0;
    int rc = 0;
    if (lt_utf8_valid_prefix(text, len) != len) {
        lt_utf8_lossy_t st = {0};
        if (lt_utf8_lossy_push(&st, text, len, &fixed) || lt_utf8_lossy_flush(&st, &fixed)) {
            rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
            goto done;
        }
        text = fixed.data;
        len = fixed.len;
    }
    if (!(ctx.md = pcre2_match_data_create(1, NULL))) {
        rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (cache &&
        len >= CACHE_MIN_INPUT) { /* about one distinct piece per 16 bytes, at most 64 Ki */
        size_t slots = 1024;
        while (slots < len / 16 && slots < 65536) slots *= 2;
        ctx.cache.slot = calloc(slots, sizeof *ctx.cache.slot);
        ctx.cache.mask = ctx.cache.slot ? (uint32_t)(slots - 1) : 0; /* no memory: no cache */
    }
    for (int i = 0; i < t->n_prefix && add_special && !rc; i++)
        rc = tok_ids_push(&out, t->prefix[i]);
    if (!rc && t->added_raw.n)
        rc = tok_added_split(&t->added_raw, t->added_pool, text, len, parse_special, &segs, &n_segs,
                             &cap);
    if (rc) {
        rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!t->added_raw.n) {
        rc = encode_text(t, &ctx, text, len, true, parse_special, &out);
    } else {
        for (size_t i = 0; i < n_segs && !rc; i++) {
            if (segs[i].id >= 0)
                rc = tok_ids_push(&out, segs[i].id) ? lt_errf(err, LT_ERR_NOMEM, "out of memory")
                                                    : 0;
            else
                rc = encode_text(t, &ctx, text + segs[i].start, segs[i].end - segs[i].start,
                                 segs[i].start == 0, parse_special, &out);
        }
    }
    for (int i = 0; i < t->n_suffix && add_special && !rc; i++)
        rc = tok_ids_push(&out, t->suffix[i]);
    if (rc) goto done;
    if (out.n > (size_t)INT32_MAX) {
        rc = lt_errf(err, LT_ERR_RANGE, "too many tokens");
        goto done;
    }
    *ids = out.v;
    *n_ids = (int)out.n;
    out.v = NULL;
done:
    if (rc == LT_ERR_NOMEM && err && !*err) lt_errf(err, rc, "out of memory");
    free(out.v);
    free(segs);
    lt_buf_free(&fixed);
    lt_arena_free(&ctx.arena);
    free(ctx.cache.slot);
    free(ctx.cache.ids);
    free(ctx.a.v);
    free(ctx.b.v);
    tok_bpe_work_free(&ctx.bpe);
    if (ctx.md) pcre2_match_data_free(ctx.md);
    if (ctx.mctx) pcre2_match_context_free(ctx.mctx);
    if (ctx.jit_stack) pcre2_jit_stack_free(ctx.jit_stack);
    return rc;
}

/* ---- vocabulary ---- */

int fe_tokenizer_n_vocab(const fe_tokenizer_t *t) {
    return t->n_vocab;
}

int32_t fe_tokenizer_bos(const fe_tokenizer_t *t) {
    return t->bos;
}

int32_t fe_tokenizer_eos(const fe_tokenizer_t *t) {
    return t->eos;
}

bool fe_tokenizer_is_special(const fe_tokenizer_t *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->flags[id] & TOK_F_SPECIAL);
}

const char *fe_tokenizer_token_text(const fe_tokenizer_t *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return "";
    return t->pool + t->text_off[id];
}

int32_t fe_tokenizer_token_id(const fe_tokenizer_t *t, const char *text, size_t len) {
    for (int32_t id = 0; id < t->n_vocab; id++)
        if ((t->flags[id] & TOK_F_ADDED) && t->text_len[id] == len &&
            memcmp(t->pool + t->text_off[id], text, len) == 0)
            return id;
    lt_buf_t k = {0};
    int32_t id = -1;
    if (key_form(t->bpe.byte_level, text, len, &k))
        id = tok_strmap_get(&t->bpe.vocab, k.data, k.len);
    lt_buf_free(&k);
    return id;
}

const char *fe_tokenizer_describe(const fe_tokenizer_t *t) {
    return t->desc;
}
