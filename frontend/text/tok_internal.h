/*
 * tok_internal.h — the tokenizer's private types, shared by tokenizer.c (loading, encode driver),
 * tok_bpe.c (vocabulary, merges, the BPE model), tok_text.c (character classes, normalizers,
 * pre-tokenizers, added-token matching) and tok_detok.c (decoders, streaming detokenization). Not
 * a public header: only frontend/text/tok_*.c and tokenizer.c include it. Buffers, arenas and
 * UTF-8 are common/'s (buf.h, utf8.h).
 *
 * The pipeline mirrors Hugging Face `tokenizers` stage by stage, because matching its ids exactly
 * is the point: added-token extraction on the raw text, normalizer, added-token extraction on the
 * normalized text, pre-tokenizer, model (BPE), post-processor (template); decoding runs the decoder
 * chain. GGUF tokenizers are translated at load time into the same pipeline.
 *
 * Everything reachable from a fe_tokenizer_t is immutable after load; per-call state lives in
 * tok_ctx_t (encode) and fe_detok_t (decode).
 */
#ifndef FE_TOK_INTERNAL_H
#define FE_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "lt.h"
#include "tokenizer.h"
#include "utf8.h"

/* ---- limits ---- */

#define TOK_MAX_STAGES 16 /* normalizers, pre-tokenizers, decoders: after flattening Sequences */

/* ---- strings ---- */

/* A byte range that borrows its memory (the input text, the tokenizer, or the call's arena). */
typedef struct {
    const char *p;
    size_t n;
} tok_span_t;

/* ---- growing arrays ---- */

/* Room for `need` elements of `size` bytes in the array v of capacity *cap: the capacity doubles
 * (from `first`) until they fit. Returns the array, moved or not, and updates *cap; NULL when out
 * of memory (v and *cap are then unchanged). Out of line (tok_text.c), so that the pushes that
 * call it stay small enough to be inlined. */
void *tok_grow(void *v, size_t *cap, size_t need, size_t size, size_t first);

/* Token ids as they are produced: the BPE model appends to the encode call's output. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} tok_ids_t;

static inline int tok_ids_push(tok_ids_t *o, int32_t id) {
    if (o->n == o->cap) {
        int32_t *v = tok_grow(o->v, &o->cap, o->n + 1, sizeof *v, 256);
        if (!v) return LT_ERR_NOMEM;
        o->v = v;
    }
    o->v[o->n++] = id;
    return 0;
}

/* ---- hashing ---- */

static inline uint64_t tok_mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint64_t tok_hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0x100000001b3ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    if (n) memcpy(&v, s, n);
    return tok_mix64(h ^ v);
}

/* ---- character classes ---- */

/* Length of the character s[0] starts, as its lead byte announces it, cut to the n bytes there are
 * (no validation: for text already known to be UTF-8, or read as such on purpose). */
static inline size_t tok_char_len(const char *s, size_t n) {
    uint8_t b = (uint8_t)s[0];
    size_t k = b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
    return k > n ? n : k;
}

/* Rust's char::is_whitespace (the Unicode White_Space property). */
bool tok_is_whitespace(uint32_t cp);

/* ---- BPE model (tok_bpe.c) ---- */

/* String -> id hash map over keys that live elsewhere (the tokenizer's pool). */
typedef struct {
    uint32_t *slot; /* id + 1, 0 = empty */
    uint32_t mask;
    const char *pool;
    const uint32_t *key_off, *key_len; /* per id */
} tok_strmap_t;

int32_t tok_strmap_get(const tok_strmap_t *m, const char *s, size_t n);

/* (left id, right id) -> (rank, merged id). One 16-byte slot per entry: a probe costs one cache
 * line. */
typedef struct {
    uint64_t key;  /* (a << 32 | b) + 1, 0 = empty */
    uint32_t rank; /* merge priority: lower merges first; equal ranks merge leftmost first */
    int32_t merged;
} tok_pair_slot_t;

typedef struct {
    tok_pair_slot_t *slot;
    uint32_t mask;
    size_t n;
} tok_pairmap_t;

typedef struct {
    bool byte_level; /* symbols are bytes, looked up through byte_id (ByteLevel pre-tokenizer) */
    bool byte_fallback;
    bool fuse_unk;
    bool ignore_merges; /* a whole piece that is in the vocabulary is one token */
    /* Char mode: no vocabulary string has "▁" after a character other than "▁", so no merge can
     * span the boundary before such a "▁" and a piece may be cut there into independent words.
     * This turns Llama 2's one-piece-per-text (no pre-tokenizer) into word-sized BPE runs;
     * the ids are the same. */
    bool meta_split;
    int32_t unk_id;        /* -1: unknown symbols are dropped (HF BPE without unk_token) */
    int32_t byte_id[256];  /* byte-level: id of the byte's mapped character, -1 if absent */
    int32_t fb_id[256];    /* byte fallback: id of "<0xXX>", -1 if absent */
    int32_t ascii_id[128]; /* char mode: id of each ASCII character, -1 if absent */
    tok_strmap_t vocab;    /* model keys: raw bytes (byte-level) or token text (char mode) */
    tok_pairmap_t pairs;
} tok_bpe_t;

/* Per-call BPE scratch. */
typedef struct tok_bpe_work tok_bpe_work_t;
void tok_bpe_work_free(tok_bpe_work_t **w);

/* Tokenizes one pre-tokenized piece, appending ids to out. */
int tok_bpe_encode(const tok_bpe_t *m, const char *s, size_t n, tok_bpe_work_t **w, tok_ids_t *out);

/* Decides meta_split from the vocabulary (after the map is built). */
void tok_bpe_init_meta_split(tok_bpe_t *m, int32_t n_vocab);

int tok_strmap_build(tok_strmap_t *m, const char *pool, const uint32_t *key_off,
                     const uint32_t *key_len, const uint8_t *present, int32_t n);
void tok_strmap_free(tok_strmap_t *m);
int tok_pairmap_init(tok_pairmap_t *m, size_t expect);
/* Inserts or overwrites (a later duplicate merge wins, as in HF). */
int tok_pairmap_put(tok_pairmap_t *m, int32_t a, int32_t b, uint32_t rank, int32_t merged);
bool tok_pairmap_get(const tok_pairmap_t *m, int32_t a, int32_t b, uint32_t *rank, int32_t *merged);
void tok_pairmap_free(tok_pairmap_t *m);

/* GPT-2's reversible byte <-> character table (printable bytes map to themselves, the rest to
 * U+0100..). */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp); /* -1 if cp is not in the table */
/* The raw bytes a byte-level token string stands for, into out (n bytes of room); false if it is
 * not valid UTF-8 or a character is outside the table. */
bool tok_bytelevel_decode(const char *s, size_t n, char *out, size_t *on);

/* ---- normalizers, pre-tokenizers (tok_text.c) ---- */

typedef enum {
    TOK_NORM_NFC,
    TOK_NORM_NFD,
    TOK_NORM_NFKC,
    TOK_NORM_NFKD,
    TOK_NORM_LOWERCASE,
    TOK_NORM_PREPEND,
    TOK_NORM_REPLACE,
    TOK_NORM_STRIP,
} tok_norm_kind_t;

typedef struct {
    tok_norm_kind_t kind;
    char *str; /* PREPEND: the prefix; REPLACE: the replacement */
    size_t str_len;
    pcre2_code *re;   /* REPLACE: the pattern (literal or regex) */
    bool left, right; /* STRIP */
} tok_norm_t;

typedef enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok_split_behavior_t;

typedef enum {
    TOK_PRE_SPLIT,     /* regex or literal pattern */
    TOK_PRE_DIGITS,    /* \p{N}: individually (isolated) or in runs (contiguous) */
    TOK_PRE_METASPACE, /* ' ' -> replacement, prepend scheme, optional split */
    TOK_PRE_WSSPLIT,   /* split on White_Space, removed */
    TOK_PRE_PUNCT,     /* split on punctuation */
    TOK_PRE_BYTELEVEL, /* optional prefix space + GPT-2 regex; must be last */
} tok_pre_kind_t;

typedef enum { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok_prepend_t;

typedef struct {
    tok_pre_kind_t kind;
    pcre2_code *re; /* SPLIT (also Whitespace: \w+|[^\w\s]+ inverted), BYTELEVEL with use_regex */
    tok_split_behavior_t behavior;
    bool invert;
    bool individual;       /* DIGITS */
    bool add_prefix_space; /* BYTELEVEL */
    char rep[5];           /* METASPACE replacement as UTF-8 */
    int rep_len;
    tok_prepend_t prepend; /* METASPACE */
    bool split;            /* METASPACE */
} tok_pre_t;

/* A piece of text on its way through the pipeline. at_origin: starts at offset 0 of the original
 * input (HF's offsets_original().0 == 0, used by Metaspace's "first" prepend scheme). */
typedef struct {
    const char *p;
    uint32_t n;
    bool at_origin;
} tok_piece_t;

typedef struct {
    tok_piece_t *v;
    size_t n, cap;
} tok_pieces_t;

/* Per-call cache of BPE results for short pieces: long inputs repeat their words, and the merge
 * loop is most of the encoding time. Pieces borrow the call's text, so keys need no copy. */
typedef struct {
    const char *p;        /* NULL: empty slot */
    uint32_t n, off, cnt; /* ids[off .. off + cnt) */
} tok_cache_slot_t;

typedef struct {
    tok_cache_slot_t *slot;
    uint32_t mask, used;
    int32_t *ids;
    size_t n_ids, cap_ids;
} tok_cache_t;

/* Per-call encode scratch (one per fe_tokenizer_encode call; never shared). */
typedef struct {
    lt_arena_t arena; /* the call's scratch strings (normalized text, rewritten pieces) */
    char *pack;       /* rewritten pieces: the free rest of a packed arena block (tok_text.c) */
    size_t pack_left;
    tok_cache_t cache; /* slot == NULL: no cache (short input) */
    tok_pieces_t a, b;
    pcre2_match_data *md;
    pcre2_jit_stack *jit_stack;
    pcre2_match_context *mctx;
    tok_bpe_work_t *bpe;
    char *err;
} tok_ctx_t;

/* Compiles a pattern with UTF + UCP (+ JIT when available). literal: match the bytes as is. The
 * pattern is rewritten first so that \s means what Oniguruma's \s means (see tok_text.c). */
int tok_regex_compile(const char *pat, size_t len, bool literal, pcre2_code **out, char *err);
/* Next match of re in s[0..n) at or after `from`; returns 1 and the match bounds, 0 when there
 * is none, or a negative LT_ERR_* (message in ctx->err). */
int tok_regex_next(tok_ctx_t *ctx, const pcre2_code *re, const char *s, size_t n, size_t from,
                   size_t *ms, size_t *me);

/* Applies the normalizer chain to s; *out points at s itself (nothing to do) or into the arena. */
int tok_normalize(tok_ctx_t *ctx, const tok_norm_t *norms, int n_norms, const char *s, size_t n,
                  tok_span_t *out);
/* Runs the pre-tokenizer chain over one piece, appending the resulting pieces to ctx->a (the
 * caller's list is replaced). */
int tok_pretokenize(tok_ctx_t *ctx, const tok_pre_t *pre, int n_pre, tok_piece_t in);

void tok_norm_free(tok_norm_t *n);
void tok_pre_free(tok_pre_t *p);

/* ---- added tokens ---- */

typedef struct {
    uint32_t off, len; /* pattern in added_pool (the normalized content for normalized tokens) */
    int32_t id;
    bool special, lstrip, rstrip, single_word;
} tok_added_t;

/* Leftmost-longest matcher over a set of added tokens: index by first byte, then by second byte,
 * candidates longest first. */
typedef struct {
    tok_added_t *tok; /* sorted by (first byte, second byte, length desc) */
    int n;
    int32_t first[257];    /* tok[first[b] .. first[b+1]) start with byte b */
    uint8_t has_first[32]; /* bitmap of first bytes */
} tok_addset_t;

typedef struct {
    size_t start, end; /* byte range in the text */
    int32_t id;        /* -1: plain text */
} tok_seg_t;

/* Splits text into plain-text and added-token segments (HF AddedVocabulary::find_matches). */
int tok_added_split(const tok_addset_t *set, const char *pool, const char *s, size_t n,
                    bool parse_special, tok_seg_t **segs, size_t *n_segs, size_t *cap);

/* ---- decoders (tok_detok.c) ---- */

typedef enum {
    TOK_DEC_BYTELEVEL,
    TOK_DEC_METASPACE,
    TOK_DEC_REPLACE,
    TOK_DEC_BYTEFALLBACK,
    TOK_DEC_FUSE,
    TOK_DEC_STRIP,
} tok_dec_kind_t;

typedef struct {
    tok_dec_kind_t kind;
    char *pat, *rep; /* REPLACE: literal pattern and its replacement */
    size_t pat_len, rep_len;
    uint32_t ch;     /* METASPACE replacement, STRIP content */
    bool prepend;    /* METASPACE: prepend_scheme != never */
    int start, stop; /* STRIP */
} tok_dec_t;

void tok_dec_free(tok_dec_t *d);

/* ---- encoding ---- */

/* fe_tokenizer_encode with the per-call piece cache optional (cache = false: never; true: for
 * inputs of 4 KiB and more). Tests compare the two. */
int tok_encode(const fe_tokenizer_t *t, const char *text, size_t len, bool add_special,
               bool parse_special, bool cache, int32_t **ids, int *n_ids, char *err);

/* ---- the tokenizer ---- */

enum {
    TOK_F_PRESENT = 1, /* the id has a token */
    TOK_F_SPECIAL = 2, /* special added token: skipped by skip_special, parse_special-gated */
    TOK_F_ADDED = 4,   /* added token */
};

struct fe_tokenizer {
    char *pool; /* every string: token texts, model keys, added-token patterns */
    size_t pool_len;
    int32_t n_vocab;
    uint32_t *text_off, *text_len; /* per id: the vocabulary string, NUL-terminated in pool */
    uint8_t *flags;                /* per id: TOK_F_* */

    tok_bpe_t bpe;

    tok_addset_t added_raw;  /* matched on the raw text (normalized = false) */
    tok_addset_t added_norm; /* matched on normalized text (normalized = true) */
    char *added_pool;        /* the added tokens' patterns */

    tok_norm_t norm[TOK_MAX_STAGES];
    int n_norm;
    tok_pre_t pre[TOK_MAX_STAGES];
    int n_pre;

    int32_t prefix[8], suffix[8]; /* post-processor: ids around the sequence (add_special) */
    int n_prefix, n_suffix;

    tok_dec_t dec[TOK_MAX_STAGES];
    int n_dec;
    bool has_decoder; /* false: HF joins the token strings with " " */

    int32_t bos, eos;
    char desc[128]; /* one line for logs: "gguf gpt2/smollm, 49152 tokens" */
};

#endif
