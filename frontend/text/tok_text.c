/*
 * tok_text.c — text handling for the tokenizer: character classes, regular expressions (PCRE2
 * with UTF, UCP and JIT), normalizers (utf8proc), pre-tokenizers and added-token matching, each
 * reproducing what HF `tokenizers` does on the same input. UTF-8 and scratch memory come from
 * common/ (utf8.h, buf.h).
 *
 * Where HF's regex engine (Oniguruma) and PCRE2 disagree, patterns are rewritten before compiling
 * (tok_regex_compile): Oniguruma's \s is [\t-\r\x85\p{Z}], while PCRE2's also takes U+180E; its
 * \w is [\p{L}\p{M}\p{N}\p{Pc}], while PCRE2 10.42's is [\p{L}\p{N}_]; its \h is a hex digit.
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "lt.h"
#include "tok_internal.h"

/* ---- arrays ---- */

void *tok_grow(void *v, size_t *cap, size_t need, size_t size, size_t first) {
    size_t c = *cap ? *cap : first;
    while (c < need) {
        if (c > SIZE_MAX / 2 / size) return NULL;
        c *= 2;
    }
    void *p = realloc(v, c * size);
    if (p) *cap = c;
    return p;
}

/* ---- character classes ---- */

bool tok_is_whitespace(uint32_t cp) {
    if (cp < 0x80) return (cp >= 9 && cp <= 13) || cp == 32;
    switch (cp) {
    case 0x85:
    case 0xa0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202f:
    case 0x205f:
    case 0x3000: return true;
    default: return cp >= 0x2000 && cp <= 0x200a;
    }
}

/* Rust's char::is_numeric: general categories Nd, Nl, No. */
static bool is_numeric(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

/* HF's Punctuation pre-tokenizer: ASCII punctuation or any Unicode P* category. */
static bool is_punct(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
               (cp >= 123 && cp <= 126);
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

/* Rust regex's \w (used by HF for single_word): alphabetic, marks, decimal digits, connector
 * punctuation, joiners. Alphabetic is approximated by L* and Nl. */
static bool is_word(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
               cp == '_';
    if (cp == 0x200c || cp == 0x200d) return true;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_ME) || c == UTF8PROC_CATEGORY_ND ||
           c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_PC;
}

/* lt_utf8_decode with ASCII decoded in line: the predicate pre-tokenizers (Digits runs on every
 * byte-level GPT-2 text) decode every character, and a call per character costs them 5%. */
static inline int utf8_next(const char *s, size_t n, uint32_t *cp) {
    if ((uint8_t)s[0] < 0x80) return *cp = (uint8_t)s[0], 1;
    return lt_utf8_decode(s, n, cp);
}

/* Start of the code point that ends at s[n]. */
static size_t utf8_prev(const char *s, size_t n) {
    size_t i = n - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xc0) == 0x80) i--;
    return i;
}

/* End of the whitespace run that starts at s[i], within s[0, n). */
static size_t ws_skip(const char *s, size_t i, size_t n) {
    uint32_t cp;
    while (i < n) {
        int k = lt_utf8_decode(s + i, n - i, &cp);
        if (!tok_is_whitespace(cp)) break;
        i += (size_t)k;
    }
    return i;
}

/* Start of the whitespace run that ends at s[j], not before s[lo]. */
static size_t ws_skip_back(const char *s, size_t lo, size_t j) {
    uint32_t cp;
    while (j > lo) {
        size_t p = utf8_prev(s, j);
        lt_utf8_decode(s + p, j - p, &cp);
        if (!tok_is_whitespace(cp)) break;
        j = p;
    }
    return j;
}

/* ---- regular expressions ---- */

static int rewrite_pattern(const char *pat, size_t len, lt_buf_t *o) {
    static const char S_IN[] = "\\t-\\r\\x{85}\\p{Z}";
    static const char W_IN[] = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
    bool in_class = false;
    for (size_t i = 0; i < len; i++) {
        char c = pat[i];
        int rc = 0;
        if (c == '\\' && i + 1 < len) {
            char e = pat[++i];
            if (e == 's' || e == 'w') {
                const char *cls = e == 's' ? S_IN : W_IN;
                if (in_class)
                    rc = lt_buf_puts(o, cls);
                else {
                    rc = lt_buf_putc(o, '[');
                    rc |= lt_buf_puts(o, cls);
                    rc |= lt_buf_putc(o, ']');
                }
            } else if (e == 'h' || (e == 'H' && !in_class)) {
                /* Oniguruma's \h is a hexadecimal digit, PCRE2's a horizontal space. */
                const char *cls = in_class   ? "0-9a-fA-F"
                                  : e == 'h' ? "[0-9a-fA-F]"
                                             : "[^0-9a-fA-F]";
                rc = lt_buf_puts(o, cls);
            } else if ((e == 'S' || e == 'W') && !in_class) {
                const char *cls = e == 'S' ? S_IN : W_IN;
                rc = lt_buf_puts(o, "[^");
                rc |= lt_buf_puts(o, cls);
                rc |= lt_buf_putc(o, ']');
            } else {
                char two[2] = {'\\', e};
                rc = lt_buf_put(o, two, 2);
            }
        } else {
            if (!in_class && c == '[') {
                in_class = true;
                rc = lt_buf_putc(o, c);
                /* A ']' right after '[' or '[^' is a literal. */
                if (i + 1 < len && pat[i + 1] == '^') rc |= lt_buf_putc(o, pat[++i]);
                if (i + 1 < len && pat[i + 1] == ']') rc |= lt_buf_putc(o, pat[++i]);
                if (rc) return LT_ERR_NOMEM;
                continue;
            }
            if (in_class && c == '[' && i + 1 < len && pat[i + 1] == ':') {
                /* POSIX class inside a class: copy through its closing ":]". */
                const char *end = NULL;
                for (size_t k = i + 2; k + 1 < len; k++)
                    if (pat[k] == ':' && pat[k + 1] == ']') {
                        end = pat + k + 2;
                        break;
                    }
                if (end) {
                    rc = lt_buf_put(o, pat + i, (size_t)(end - (pat + i)));
                    i = (size_t)(end - pat) - 1;
                    if (rc) return LT_ERR_NOMEM;
                    continue;
                }
            }
            if (in_class && c == ']') in_class = false;
            rc = lt_buf_putc(o, c);
        }
        if (rc) return LT_ERR_NOMEM;
    }
    return 0;
}

int tok_regex_compile(const char *pat, size_t len, bool literal, pcre2_code **out, char *err) {
    lt_buf_t b = {0};
    const char *p = pat;
    size_t n = len;
    if (!literal) {
        if (rewrite_pattern(pat, len, &b)) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
        p = lt_buf_str(&b);
        n = b.len;
    }
    int ec;
    PCRE2_SIZE eo;
    uint32_t opt = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)p, n, opt, &ec, &eo, NULL);
    lt_buf_free(&b);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return lt_errf(err, LT_ERR_UNSUPPORTED, "regex /%.*s/ at offset %zu: %s", (int)len, pat,
                       (size_t)eo, (const char *)msg);
    }
    /* Without JIT (an unusual PCRE2 build) pcre2_match interprets: slower, same results. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return 0;
}

int tok_regex_next(tok_ctx_t *ctx, const pcre2_code *re, const char *s, size_t n, size_t from,
                   size_t *ms, size_t *me) {
    for (;;) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, ctx->md, ctx->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !ctx->jit_stack) {
            /* The default 32 KiB JIT stack is too small for this subject: retry with 8 MiB. */
            ctx->jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
            if (!ctx->mctx) ctx->mctx = pcre2_match_context_create(NULL);
            if (!ctx->jit_stack || !ctx->mctx)
                return lt_errf(ctx->err, LT_ERR_NOMEM, "out of memory");
            pcre2_jit_stack_assign(ctx->mctx, NULL, ctx->jit_stack);
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lt_errf(ctx->err, LT_ERR_RANGE, "pre-tokenizer regex: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ctx->md);
        *ms = ov[0];
        *me = ov[1];
        return 1;
    }
}

/* ---- normalizers ---- */

static int arena_copy(tok_ctx_t *ctx, const lt_buf_t *b, tok_span_t *out) {
    char *p = lt_arena_strndup(&ctx->arena, b->data, b->len);
    if (!p) return lt_errf(ctx->err, LT_ERR_NOMEM, "out of memory");
    out->p = p;
    out->n = b->len;
    return 0;
}

/* Unicode normalization form `opt` (utf8proc flags). ASCII is invariant under every form and a
 * starter that nothing composes with from the left, so only the non-ASCII runs (with the ASCII
 * character before each, which a combining mark may compose with) go through utf8proc. */
static int norm_unicode(const char *s, size_t n, int opt, lt_buf_t *o) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && (uint8_t)s[j] < 0x80) j++;
        if (j == n) return lt_buf_put(o, s + i, n - i);
        size_t seg = j > i ? j - 1 : j; /* keep the ASCII character before the run with it */
        if (seg > i && lt_buf_put(o, s + i, seg - i)) return LT_ERR_NOMEM;
        size_t k = j;
        while (k < n && (uint8_t)s[k] >= 0x80) k++;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r =
            utf8proc_map((const utf8proc_uint8_t *)s + seg, (utf8proc_ssize_t)(k - seg), &dst,
                         (utf8proc_option_t)opt);
        if (r < 0) {
            /* Cannot happen on valid UTF-8; keep the text rather than fail. */
            if (lt_buf_put(o, s + seg, k - seg)) return LT_ERR_NOMEM;
        } else {
            int rc = lt_buf_put(o, dst, (size_t)r);
            free(dst);
            if (rc) return rc;
        }
        i = k;
    }
    return 0;
}

/* Rust's char::to_lowercase, code point by code point (HF's Lowercase does not apply the final
 * sigma rule): the simple mapping, except U+0130 which lowercases to "i̇". */
static int norm_lower(const char *s, size_t n, lt_buf_t *o) {
    if (lt_buf_reserve(o, n + 16)) return LT_ERR_NOMEM;
    for (size_t i = 0; i < n;) {
        uint8_t b = (uint8_t)s[i];
        if (b < 0x80) { /* an ASCII run: one reserve, no call per byte */
            size_t j = i;
            while (j < n && (uint8_t)s[j] < 0x80) j++;
            if (lt_buf_reserve(o, j - i)) return LT_ERR_NOMEM;
            for (; i < j; i++) {
                uint8_t c = (uint8_t)s[i];
                o->data[o->len++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            }
            o->data[o->len] = '\0';
            continue;
        }
        uint32_t cp;
        int k = lt_utf8_decode(s + i, n - i, &cp);
        i += (size_t)k;
        char enc[8];
        int m;
        if (cp == 0x130) {
            m = lt_utf8_encode('i', enc);
            m += lt_utf8_encode(0x307, enc + m);
        } else {
            m = lt_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), enc);
        }
        if (lt_buf_put(o, enc, (size_t)m)) return LT_ERR_NOMEM;
    }
    return 0;
}

static int norm_replace(tok_ctx_t *ctx, const tok_norm_t *nm, const char *s, size_t n, lt_buf_t *o,
                        bool *changed) {
    size_t pos = 0, from = 0;
    *changed = false;
    for (;;) {
        size_t ms, me;
        int rc = tok_regex_next(ctx, nm->re, s, n, from, &ms, &me);
        if (rc < 0) return rc;
        if (rc == 0) break;
        if (me == ms) { /* an empty match replaces nothing; step over one character */
            if (me >= n) break;
            uint32_t cp;
            from = me + (size_t)lt_utf8_decode(s + me, n - me, &cp);
            continue;
        }
        if (lt_buf_put(o, s + pos, ms - pos) || lt_buf_put(o, nm->str, nm->str_len))
            return LT_ERR_NOMEM;
        pos = from = me;
        *changed = true;
    }
    if (*changed && lt_buf_put(o, s + pos, n - pos)) return LT_ERR_NOMEM;
    return 0;
}

static void norm_strip(const char *s, size_t n, bool left, bool right, size_t *b, size_t *e) {
    *b = left ? ws_skip(s, 0, n) : 0;
    *e = right ? ws_skip_back(s, *b, n) : n;
}

int tok_normalize(tok_ctx_t *ctx, const tok_norm_t *norms, int n_norms, const char *s, size_t n,
                  tok_span_t *out) {
    tok_span_t cur = {s, n};
    lt_buf_t b = {0};
    int rc = 0;
    for (int k = 0; k < n_norms && rc == 0; k++) {
        const tok_norm_t *nm = &norms[k];
        lt_buf_clear(&b);
        bool changed = true;
        switch (nm->kind) {
        case TOK_NORM_NFC:
        case TOK_NORM_NFD:
        case TOK_NORM_NFKC:
        case TOK_NORM_NFKD: {
            int opt = UTF8PROC_STABLE;
            opt |= (nm->kind == TOK_NORM_NFC || nm->kind == TOK_NORM_NFKC) ? UTF8PROC_COMPOSE
                                                                           : UTF8PROC_DECOMPOSE;
            if (nm->kind == TOK_NORM_NFKC || nm->kind == TOK_NORM_NFKD) opt |= UTF8PROC_COMPAT;
            size_t i = 0;
            while (i < cur.n && (uint8_t)cur.p[i] < 0x80) i++;
            if (i == cur.n) { /* ASCII is invariant under every form */
                changed = false;
                break;
            }
            rc = norm_unicode(cur.p, cur.n, opt, &b);
            break;
        }
        case TOK_NORM_LOWERCASE: rc = norm_lower(cur.p, cur.n, &b); break;
        case TOK_NORM_PREPEND:
            if (cur.n == 0) {
                changed = false;
                break;
            }
            rc = lt_buf_put(&b, nm->str, nm->str_len);
            if (!rc) rc = lt_buf_put(&b, cur.p, cur.n);
            break;
        case TOK_NORM_REPLACE: rc = norm_replace(ctx, nm, cur.p, cur.n, &b, &changed); break;
        case TOK_NORM_STRIP: {
            size_t i, j;
            norm_strip(cur.p, cur.n, nm->left, nm->right, &i, &j);
            cur.p += i;
            cur.n = j - i;
            changed = false;
            break;
        }
        }
        if (rc == LT_ERR_NOMEM) rc = lt_errf(ctx->err, rc, "out of memory");
        if (!rc && changed) rc = arena_copy(ctx, &b, &cur);
    }
    lt_buf_free(&b);
    *out = cur;
    return rc;
}

void tok_norm_free(tok_norm_t *n) {
    free(n->str);
    if (n->re) pcre2_code_free(n->re);
    memset(n, 0, sizeof *n);
}

/* ---- pre-tokenizers ---- */

#define PACK_BLOCK 4096 /* bytes */

/* n bytes of per-call scratch for a rewritten piece. Pieces are often one word long and a
 * pre-tokenizer after WhitespaceSplit rewrites every one of them; lt_arena_alloc would round each
 * up to 16 bytes (twice the memory, about 10% slower on such pipelines), so they are packed
 * unaligned into blocks taken from the arena. */
static char *piece_bytes(tok_ctx_t *ctx, size_t n) {
    if (!ctx->pack || n > ctx->pack_left) {
        if (n > PACK_BLOCK / 8) return lt_arena_alloc(&ctx->arena, n);
        if (!(ctx->pack = lt_arena_alloc(&ctx->arena, PACK_BLOCK))) return NULL;
        ctx->pack_left = PACK_BLOCK;
    }
    char *p = ctx->pack;
    ctx->pack += n;
    ctx->pack_left -= n;
    return p;
}

static inline int pieces_push(tok_ctx_t *ctx, tok_pieces_t *l, const char *p, size_t n,
                              bool origin) {
    if (n == 0) return 0; /* HF drops empty splits */
    if (l->n == l->cap) {
        tok_piece_t *v = tok_grow(l->v, &l->cap, l->n + 1, sizeof *v, 256);
        if (!v) return lt_errf(ctx->err, LT_ERR_NOMEM, "out of memory");
        l->v = v;
    }
    l->v[l->n++] = (tok_piece_t){p, (uint32_t)n, origin};
    return 0;
}

/* Segments of one piece: (start, end, is_match), covering it in order. */
typedef struct {
    uint32_t s, e;
    bool m;
} seg_t;

typedef struct {
    seg_t *v;
    size_t n, cap;
} segs_t;

static int segs_push(segs_t *l, size_t s, size_t e, bool m) {
    if (l->n == l->cap) {
        seg_t *v = tok_grow(l->v, &l->cap, l->n + 1, sizeof *v, 64);
        if (!v) return LT_ERR_NOMEM;
        l->v = v;
    }
    l->v[l->n++] = (seg_t){(uint32_t)s, (uint32_t)e, m};
    return 0;
}

/* HF's Pattern::find_matches for a regex. */
static int segs_regex(tok_ctx_t *ctx, const pcre2_code *re, const char *s, size_t n, segs_t *out) {
    size_t prev = 0, from = 0;
    while (from <= n) {
        size_t ms, me;
        int rc = tok_regex_next(ctx, re, s, n, from, &ms, &me);
        if (rc < 0) return rc;
        if (rc == 0) break;
        if (prev != ms && segs_push(out, prev, ms, false)) return LT_ERR_NOMEM;
        if (segs_push(out, ms, me, true)) return LT_ERR_NOMEM;
        prev = me;
        if (me == ms) { /* empty match: step over one character */
            if (me >= n) break;
            uint32_t cp;
            from = me + (size_t)lt_utf8_decode(s + me, n - me, &cp);
        } else {
            from = me;
        }
    }
    if (prev != n && segs_push(out, prev, n, false)) return LT_ERR_NOMEM;
    return 0;
}

/* HF's Pattern::find_matches for a character predicate: each matching character is a match. */
static int segs_pred(const char *s, size_t n, bool (*pred)(uint32_t, const tok_pre_t *),
                     const tok_pre_t *pre, segs_t *out) {
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = (size_t)utf8_next(s + i, n - i, &cp);
        if (pred(cp, pre)) {
            if (last < i && segs_push(out, last, i, false)) return LT_ERR_NOMEM;
            if (segs_push(out, i, i + k, true)) return LT_ERR_NOMEM;
            last = i + k;
        }
        i += k;
    }
    if (last < n && segs_push(out, last, n, false)) return LT_ERR_NOMEM;
    return 0;
}

static bool pred_numeric(uint32_t cp, const tok_pre_t *p) {
    (void)p;
    return is_numeric(cp);
}
static bool pred_space(uint32_t cp, const tok_pre_t *p) {
    (void)p;
    return tok_is_whitespace(cp);
}
static bool pred_punct(uint32_t cp, const tok_pre_t *p) {
    (void)p;
    return is_punct(cp);
}
static bool pred_meta(uint32_t cp, const tok_pre_t *p) {
    uint32_t r;
    lt_utf8_decode(p->rep, (size_t)p->rep_len, &r);
    return cp == r;
}

/* HF's NormalizedString::split: folds the segments by behavior into pieces of `in`. */
static int split_apply(tok_ctx_t *ctx, tok_piece_t in, segs_t *sg, tok_split_behavior_t bh,
                       bool invert, tok_pieces_t *out) {
    seg_t *v = sg->v;
    size_t n = sg->n;
    if (invert)
        for (size_t i = 0; i < n; i++) v[i].m = !v[i].m;
    /* Fold in place: w is the write index; `rm` marks segments to drop (Removed). */
    size_t w = 0;
    bool prev = false;
    switch (bh) {
    case TOK_SPLIT_ISOLATED:
        for (size_t i = 0; i < n; i++) v[i].m = false;
        w = n;
        break;
    case TOK_SPLIT_REMOVED: w = n; break;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n; i++) {
            bool m = v[i].m;
            if (m == prev && w > 0)
                v[w - 1].e = v[i].e;
            else
                v[w++] = (seg_t){v[i].s, v[i].e, false};
            prev = m;
        }
        break;
    case TOK_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < n; i++) {
            bool m = v[i].m;
            if (m && !prev && w > 0)
                v[w - 1].e = v[i].e;
            else
                v[w++] = (seg_t){v[i].s, v[i].e, false};
            prev = m;
        }
        break;
    case TOK_SPLIT_MERGED_NEXT: {
        /* Right to left, writing from the end of the array. */
        size_t r = n;
        for (size_t i = n; i-- > 0;) {
            bool m = v[i].m;
            if (m && !prev && r < n)
                v[r].s = v[i].s;
            else
                v[--r] = (seg_t){v[i].s, v[i].e, false};
            prev = m;
        }
        memmove(v, v + r, (n - r) * sizeof *v);
        w = n - r;
        break;
    }
    }
    for (size_t i = 0; i < w; i++) {
        if (v[i].m) continue; /* removed */
        int rc = pieces_push(ctx, out, in.p + v[i].s, v[i].e - v[i].s, in.at_origin && v[i].s == 0);
        if (rc) return rc;
    }
    return 0;
}

static int pre_one(tok_ctx_t *ctx, const tok_pre_t *pr, tok_piece_t in, segs_t *sg,
                   tok_pieces_t *out) {
    sg->n = 0;
    int rc = 0;
    switch (pr->kind) {
    case TOK_PRE_SPLIT:
        rc = segs_regex(ctx, pr->re, in.p, in.n, sg);
        if (rc == LT_ERR_NOMEM) goto nomem;
        return rc ? rc : split_apply(ctx, in, sg, pr->behavior, pr->invert, out);
    case TOK_PRE_DIGITS:
        if (segs_pred(in.p, in.n, pred_numeric, pr, sg)) goto nomem;
        return split_apply(ctx, in, sg, pr->individual ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS,
                           false, out);
    case TOK_PRE_WSSPLIT:
        if (segs_pred(in.p, in.n, pred_space, pr, sg)) goto nomem;
        return split_apply(ctx, in, sg, TOK_SPLIT_REMOVED, false, out);
    case TOK_PRE_PUNCT:
        if (segs_pred(in.p, in.n, pred_punct, pr, sg)) goto nomem;
        return split_apply(ctx, in, sg, pr->behavior, false, out);
    case TOK_PRE_METASPACE: {
        size_t cnt = 0;
        for (size_t i = 0; i < in.n; i++) cnt += in.p[i] == ' ';
        bool starts =
            in.n >= (size_t)pr->rep_len && memcmp(in.p, pr->rep, (size_t)pr->rep_len) == 0;
        bool pre = false;
        if (pr->prepend == TOK_PREPEND_ALWAYS) pre = !starts && !(in.n && in.p[0] == ' ');
        if (pr->prepend == TOK_PREPEND_FIRST)
            pre = !starts && !(in.n && in.p[0] == ' ') && in.at_origin;
        size_t len = in.n + cnt * ((size_t)pr->rep_len - 1) + (pre ? (size_t)pr->rep_len : 0);
        char *p = piece_bytes(ctx, len);
        if (!p) return lt_errf(ctx->err, LT_ERR_NOMEM, "out of memory");
        size_t o = 0;
        if (pre) memcpy(p, pr->rep, (size_t)pr->rep_len), o = (size_t)pr->rep_len;
        for (size_t i = 0; i < in.n; i++) {
            if (in.p[i] == ' ') {
                memcpy(p + o, pr->rep, (size_t)pr->rep_len);
                o += (size_t)pr->rep_len;
            } else {
                p[o++] = in.p[i];
            }
        }
        tok_piece_t np = {p, (uint32_t)o, in.at_origin};
        if (!pr->split) return pieces_push(ctx, out, np.p, np.n, np.at_origin);
        if (segs_pred(np.p, np.n, pred_meta, pr, sg)) goto nomem;
        return split_apply(ctx, np, sg, TOK_SPLIT_MERGED_NEXT, false, out);
    }
    case TOK_PRE_BYTELEVEL:
        if (pr->add_prefix_space && !(in.n && in.p[0] == ' ')) {
            char *p = piece_bytes(ctx, (size_t)in.n + 1);
            if (!p) return lt_errf(ctx->err, LT_ERR_NOMEM, "out of memory");
            p[0] = ' ';
            memcpy(p + 1, in.p, in.n);
            in.p = p;
            in.n++;
        }
        if (!pr->re) return pieces_push(ctx, out, in.p, in.n, in.at_origin);
        rc = segs_regex(ctx, pr->re, in.p, in.n, sg);
        if (rc == LT_ERR_NOMEM) goto nomem;
        return rc ? rc : split_apply(ctx, in, sg, TOK_SPLIT_ISOLATED, false, out);
    }
    return lt_errf(ctx->err, LT_ERR_UNSUPPORTED, "unknown pre-tokenizer %d", (int)pr->kind);
nomem:
    return lt_errf(ctx->err, LT_ERR_NOMEM, "out of memory");
}

int tok_pretokenize(tok_ctx_t *ctx, const tok_pre_t *pre, int n_pre, tok_piece_t in) {
    ctx->a.n = 0;
    int rc = pieces_push(ctx, &ctx->a, in.p, in.n, in.at_origin);
    segs_t sg = {0};
    for (int k = 0; k < n_pre && rc == 0; k++) {
        ctx->b.n = 0;
        for (size_t i = 0; i < ctx->a.n && rc == 0; i++)
            rc = pre_one(ctx, &pre[k], ctx->a.v[i], &sg, &ctx->b);
        tok_pieces_t t = ctx->a;
        ctx->a = ctx->b;
        ctx->b = t;
    }
    free(sg.v);
    return rc;
}

void tok_pre_free(tok_pre_t *p) {
    if (p->re) pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

/* ---- added tokens ---- */

static bool ends_with_word(const char *s, size_t n) {
    if (n == 0) return false;
    size_t p = utf8_prev(s, n);
    uint32_t cp;
    lt_utf8_decode(s + p, n - p, &cp);
    return is_word(cp);
}

static bool starts_with_word(const char *s, size_t n) {
    if (n == 0) return false;
    uint32_t cp;
    lt_utf8_decode(s, n, &cp);
    return is_word(cp);
}

static int segv_push(tok_seg_t **v, size_t *n, size_t *cap, size_t s, size_t e, int32_t id) {
    if (*n == *cap) {
        tok_seg_t *p = tok_grow(*v, cap, *n + 1, sizeof *p, 16);
        if (!p) return LT_ERR_NOMEM;
        *v = p;
    }
    (*v)[(*n)++] = (tok_seg_t){s, e, id};
    return 0;
}

int tok_added_split(const tok_addset_t *set, const char *pool, const char *s, size_t n,
                    bool parse_special, tok_seg_t **segs, size_t *n_segs, size_t *cap) {
    *n_segs = 0;
    if (n == 0) return 0;
    size_t start_off = 0, i = 0;
    while (i < n) {
        uint8_t b = (uint8_t)s[i];
        if (!(set->has_first[b >> 3] & (1u << (b & 7)))) {
            i++;
            continue;
        }
        const tok_added_t *hit = NULL;
        for (int32_t k = set->first[b]; k < set->first[b + 1]; k++) {
            const tok_added_t *t = &set->tok[k];
            if (t->len <= n - i && memcmp(pool + t->off, s + i, t->len) == 0) {
                hit = t; /* candidates are longest first */
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t ms = i, me = i + hit->len;
        /* A match that does not count still consumes its span (HF's automaton resumes after
         * it). */
        if (!parse_special && hit->special) {
            i = me;
            continue;
        }
        if (hit->single_word &&
            ((ms > 0 && ends_with_word(s, ms)) || (me < n && starts_with_word(s + me, n - me)))) {
            i = me;
            continue;
        }
        size_t start = ms, stop = me;
        if (hit->lstrip) {
            size_t ns = ws_skip_back(s, 0, ms);
            start = ns > start_off ? ns : start_off;
        }
        if (hit->rstrip) stop = ws_skip(s, stop, n);
        if (start_off < start && segv_push(segs, n_segs, cap, start_off, start, -1))
            return LT_ERR_NOMEM;
        if (segv_push(segs, n_segs, cap, start, stop, hit->id)) return LT_ERR_NOMEM;
        start_off = stop;
        i = stop;
    }
    if (start_off < n && segv_push(segs, n_segs, cap, start_off, n, -1)) return LT_ERR_NOMEM;
    return 0;
}
