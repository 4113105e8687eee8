/*
 * chat_template.c — a Jinja2-subset interpreter for model chat templates (see chat_template.h).
 *
 * Why our own: the server must produce exactly the prompt that transformers' apply_chat_template
 * produces from the model's own template, in C and without Python. jinja2's observable behaviour
 * is the specification, checked against fixtures rendered by transformers itself
 * (tools/gen_chat_template_fixtures.py): its lexer's whitespace rules (trim_blocks,
 * lstrip_blocks, the '-' and '+' markers, one trailing newline dropped), its parser's precedence,
 * its scoping (a for-loop body is a fresh scope on every iteration, so state leaves a loop only
 * through namespace() objects), Python's str() and repr() of values, and transformers' tojson.
 *
 * Structure: the lexer turns the source into tokens (template data already trimmed), a
 * recursive-descent parser mirroring jinja2's builds an immutable tree of nodes in the template's
 * arena, and the renderer walks that tree. Everything a render creates lives in a per-render arena
 * freed in one go; strings are (pointer, length) slices into the context, the template or that
 * arena, so message contents are never copied until they are written out. Context values are
 * converted from cJSON only for names the template uses, on first use.
 *
 * Known differences from Python, kept deliberately small: integers are 64-bit (overflow is an
 * error, not a bignum); a JSON number with an integral value is an int (cJSON does not keep
 * whether it was written "1" or "1.0"); case mapping covers ASCII, Latin-1, Latin Extended-A,
 * Greek and Cyrillic; the generators jinja2's filters return (map, select, unique, items...) are
 * computed at once but behave as iterators (always true, no len(), errors only when consumed);
 * printing a function, range() or dict view differs from Python's repr; str.format() and a few
 * rarely used filters are refused by name.
 */
#define _GNU_SOURCE /* memmem */
#include "chat_template.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "lt.h"
#include "utf8.h"

/* ---- limits ---- */

#define CT_MAX_SOURCE    (16u << 20)  /* template source bytes */
#define CT_MAX_NEST      200          /* parser nesting: expressions, blocks, brackets */
#define CT_MAX_CALLS     100          /* macro call depth, which bounds recursion */
#define CT_MAX_STEPS     (1u << 20)   /* loop iterations, macro calls and filter elements */
#define CT_MAX_OUTPUT    (32u << 20)  /* bytes of rendered text */
#define CT_MAX_ARENA     (256u << 20) /* bytes of values made by one render */
#define CT_MAX_RANGE     100000       /* range() length, as jinja2's sandbox */
#define CT_MAX_VAL_DEPTH 256          /* nesting of a value printed, compared or converted */
#define CT_ARENA_CHUNK   (64u << 10)

/* ---- errors ---- */

/* "chat template line N: <message>" into err; returns code. */
static int ct_errf(char *err, int code, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int ct_errf(char *err, int code, int line, const char *fmt, ...) {
    char msg[LT_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lt_errf(err, code, "chat template line %d: %s", line, msg);
}

/* ---- UTF-8 and the bits of Unicode that Python's str methods need ---- */

/* Decodes the code point at s[*i] and advances *i. A byte that does not start a valid sequence
 * decodes as U+DC80..U+DCFF (Python's surrogateescape) so that u8_put writes it back unchanged. */
static uint32_t u8_next(const char *s, size_t n, size_t *i) {
    const unsigned char *u = (const unsigned char *)s;
    size_t k = *i;
    uint32_t c = u[k];
    if (c < 0x80) {
        *i = k + 1;
        return c;
    }
    int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (len && c < 0xF5 && k + (size_t)len <= n) {
        uint32_t cp = c & (0x3F >> (len - 1));
        int j;
        for (j = 1; j < len; j++) {
            if ((u[k + j] & 0xC0) != 0x80) break;
            cp = (cp << 6) | (u[k + j] & 0x3F);
        }
        bool ok = j == len && !(len == 3 && cp < 0x800) && !(len == 4 && cp < 0x10000) &&
                  cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
        if (ok) {
            *i = k + (size_t)len;
            return cp;
        }
    }
    *i = k + 1;
    return 0xDC00 | c;
}

/* The code point that ends at s[*i - 1] (not before start); moves *i back to its first byte. */
static uint32_t u8_prev(const char *s, size_t start, size_t *i) {
    size_t k = *i - 1;
    size_t lim = *i >= start + 4 ? *i - 4 : start;
    while (k > lim && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    size_t j = k;
    uint32_t c = u8_next(s, *i, &j);
    if (j != *i) { /* not a sequence ending exactly here: take the last byte alone */
        k = *i - 1;
        j = k;
        c = u8_next(s, *i, &j);
    }
    *i = k;
    return c;
}

/* UTF-8 for c, writing an escaped raw byte (U+DC80..U+DCFF, see u8_next) back as that byte and
 * any other lone surrogate as U+FFFD. */
static size_t u8_put(uint32_t c, char *o) {
    if (c >= 0xDC80 && c <= 0xDCFF) { /* an escaped raw byte */
        o[0] = (char)(c & 0xFF);
        return 1;
    }
    if (c >= 0xD800 && c <= 0xDFFF) c = 0xFFFD;
    return (size_t)lt_utf8_encode(c, o);
}

static size_t u8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        u8_next(s, n, &i);
        k++;
    }
    return k;
}

/* Byte offset of code point number idx (n when past the end). */
static size_t u8_offset(const char *s, size_t n, size_t idx) {
    size_t i = 0;
    while (idx > 0 && i < n) {
        u8_next(s, n, &i);
        idx--;
    }
    return i;
}

/* Python's str.isspace(). */
static bool uc_isspace(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Latin Extended-A pairs U+0100..U+017F: which member of a pair is upper case varies by range. */
static uint32_t uc_latin_a(uint32_t c, bool to_upper) {
    bool even_upper;
    if (c <= 0x12F || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        even_upper = true;
    else if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        even_upper = false;
    else if (c == 0x131)
        return to_upper ? 'I' : c;
    else if (c == 0x178)
        return to_upper ? c : 0xFF;
    else if (c == 0x17F)
        return to_upper ? 'S' : c;
    else
        return c;
    bool is_upper = ((c & 1) == 0) == even_upper;
    if (to_upper && !is_upper) return c - 1; /* the lower-case letter follows its capital */
    if (!to_upper && is_upper) return c + 1;
    return c;
}

static uint32_t uc_lower(uint32_t c) {
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c >= 0x100 && c <= 0x17F) return uc_latin_a(c, false);
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 32;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}

static uint32_t uc_upper(uint32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c == 0xB5) return 0x39C;
    if (c >= 0x100 && c <= 0x17F) return uc_latin_a(c, true);
    if (c == 0x3C2) return 0x3A3;
    if (c >= 0x3B1 && c <= 0x3CB) return c - 32;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    return c;
}

static bool uc_isupper(uint32_t c) {
    return uc_lower(c) != c;
}
static bool uc_islower(uint32_t c) {
    return uc_upper(c) != c || c == 0xDF;
}
static bool uc_cased(uint32_t c) {
    return uc_isupper(c) || uc_islower(c);
}
static bool uc_isdigit(uint32_t c) {
    return c >= '0' && c <= '9';
}
/* Letters: the cased ones we map, plus the big uncased scripts (Hebrew, Arabic, kana, CJK,
 * Hangul). An approximation of Python's category L*, enough for isalpha()/isalnum(). */
static bool uc_isalpha(uint32_t c) {
    return uc_cased(c) || c == 0xAA || c == 0xBA || c == 0xDF || (c >= 0x5D0 && c <= 0x5EA) ||
           (c >= 0x620 && c <= 0x64A) || (c >= 0x3041 && c <= 0x30FF && c != 0x30FB) ||
           (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) ||
           (c >= 0xAC00 && c <= 0xD7A3);
}

/* ---- values ---- */

enum {
    VK_MISSING = 0, /* internal: an unbound slot, never seen by a template */
    VK_UNDEF,
    VK_NONE,
    VK_BOOL,
    VK_INT,
    VK_FLOAT,
    VK_STR,
    VK_LIST, /* f: LF_* */
    VK_DICT,
    VK_NS,   /* namespace(): a mutable dict reached through attributes */
    VK_LOOP, /* the `loop` variable */
    VK_FN,   /* macro, global function, bound method, caller */
};

/* VK_LIST flags. An iterator stands for the generators jinja2's filters return (map, select,
 * unique, items, reverse...): always true, no len(), no indexing, printed as an object. */
#define LF_TUPLE 1
#define LF_ITER  2

/* Why an undefined value is undefined, for the message when it is misused (as jinja2's). */
enum { UH_NONE = 0, UH_NAME, UH_ATTR, UH_ITEM, UH_UNSAFE, UH_MSG };

typedef struct list list_t;
typedef struct dict dict_t;
typedef struct loopctx loopctx_t;
typedef struct fn fn_t;

typedef struct val {
    uint8_t k;
    uint8_t f;  /* VK_LIST: LF_*; VK_UNDEF: UH_*; VK_STR: 1 = Markup (from safe / escape) */
    uint8_t t;  /* VK_UNDEF: kind of the object a lookup failed on */
    uint32_t n; /* VK_STR: bytes; VK_UNDEF: hint length */
    union {
        bool b;
        int64_t i;
        double d;
        const char *s; /* VK_STR, and the VK_UNDEF hint */
        list_t *l;
        dict_t *m; /* VK_DICT, VK_NS */
        loopctx_t *lp;
        const fn_t *fn;
    } u;
} val_t;

struct list {
    uint32_t n, cap;
    val_t *v;
    const char *err; /* an iterator whose (lazy) computation failed: consuming it is the error */
};

struct dict {
    uint32_t n, cap;
    val_t *k, *v;
};

static inline val_t v_undef(void) {
    return (val_t){.k = VK_UNDEF};
}
static inline val_t v_none(void) {
    return (val_t){.k = VK_NONE};
}
static inline val_t v_bool(bool b) {
    return (val_t){.k = VK_BOOL, .u.b = b};
}
static inline val_t v_int(int64_t i) {
    return (val_t){.k = VK_INT, .u.i = i};
}
static inline val_t v_float(double d) {
    return (val_t){.k = VK_FLOAT, .u.d = d};
}
static inline val_t v_str(const char *s, size_t n) {
    return (val_t){.k = VK_STR, .n = (uint32_t)n, .u.s = s};
}
static inline val_t v_undef_hint(int why, int objkind, const char *s, size_t n) {
    return (val_t){
        .k = VK_UNDEF, .f = (uint8_t)why, .t = (uint8_t)objkind, .n = (uint32_t)n, .u.s = s};
}

static bool v_isnum(const val_t *v) {
    return v->k == VK_INT || v->k == VK_FLOAT || v->k == VK_BOOL;
}
static bool v_isint(const val_t *v) {
    return v->k == VK_INT || v->k == VK_BOOL;
}
static int64_t v_asint(const val_t *v) {
    return v->k == VK_BOOL ? (int64_t)v->u.b : v->u.i;
}
static double v_asfloat(const val_t *v) {
    return v->k == VK_FLOAT ? v->u.d : (double)v_asint(v);
}

/* Python's type name, for error messages. */
static const char *v_typename(int k, int tuple) {
    switch (k) {
    case VK_UNDEF: return "Undefined";
    case VK_NONE: return "NoneType";
    case VK_BOOL: return "bool";
    case VK_INT: return "int";
    case VK_FLOAT: return "float";
    case VK_STR: return "str";
    case VK_LIST: return (tuple & LF_ITER) ? "generator" : (tuple & LF_TUPLE) ? "tuple" : "list";
    case VK_DICT: return "dict";
    case VK_NS: return "Namespace";
    case VK_LOOP: return "LoopContext";
    case VK_FN: return "function";
    default: return "object";
    }
}

static bool v_truthy(const val_t *v) {
    switch (v->k) {
    case VK_UNDEF:
    case VK_NONE: return false;
    case VK_BOOL: return v->u.b;
    case VK_INT: return v->u.i != 0;
    case VK_FLOAT: return v->u.d != 0.0;
    case VK_STR: return v->n > 0;
    case VK_LIST: return v->u.l->n > 0 || (v->f & LF_ITER);
    case VK_DICT: return v->u.m->n > 0;
    default: return true;
    }
}

/* ---- lexer ---- */

/* Tokens as jinja2's lexer makes them. Template data comes out already trimmed by the
 * whitespace rules; comments and raw markers do not come out at all. */
enum {
    TK_EOF,
    TK_DATA,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP,
};

enum {
    OP_NONE,
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_FLOORDIV,
    OP_MOD,
    OP_POW,
    OP_TILDE,
    OP_LBRACKET,
    OP_RBRACKET,
    OP_LPAREN,
    OP_RPAREN,
    OP_LBRACE,
    OP_RBRACE,
    OP_EQ,
    OP_NE,
    OP_GT,
    OP_GE,
    OP_LT,
    OP_LE,
    OP_ASSIGN,
    OP_DOT,
    OP_COLON,
    OP_PIPE,
    OP_COMMA,
    OP_SEMICOLON,
    OP_IN, /* comparison operators made by the parser from names */
    OP_NOTIN,
};

static const struct {
    const char *s;
    uint8_t op;
} k_ops[] = {
    /* two-character operators first: the lexer takes the longest match */
    {"//", OP_FLOORDIV}, {"**", OP_POW},   {"==", OP_EQ},      {"!=", OP_NE},      {">=", OP_GE},
    {"<=", OP_LE},       {"+", OP_ADD},    {"-", OP_SUB},      {"/", OP_DIV},      {"*", OP_MUL},
    {"%", OP_MOD},       {"~", OP_TILDE},  {"[", OP_LBRACKET}, {"]", OP_RBRACKET}, {"(", OP_LPAREN},
    {")", OP_RPAREN},    {"{", OP_LBRACE}, {"}", OP_RBRACE},   {">", OP_GT},       {"<", OP_LT},
    {"=", OP_ASSIGN},    {".", OP_DOT},    {":", OP_COLON},    {"|", OP_PIPE},     {",", OP_COMMA},
    {";", OP_SEMICOLON},
};

typedef struct tok {
    uint8_t type, op;
    int line;
    const char *s; /* data, name, decoded string; points into the template's copy or arena */
    size_t n;
    int64_t i;
    double d;
} tok_t;

typedef struct lexer {
    const char *s;
    size_t n, pos;
    int line;
    bool line_starting; /* the last match ended a line: lstrip_blocks may strip at pos */
    tok_t *v;
    size_t nv, cap;
    lt_arena_t *arena;
    char *err;
} lexer_t;

static tok_t *lex_push(lexer_t *lx, int type, int line, const char *s, size_t n) {
    if (lx->nv == lx->cap) {
        size_t cap = lx->cap ? lx->cap * 2 : 256;
        tok_t *v = realloc(lx->v, cap * sizeof *v);
        if (!v) return NULL;
        lx->v = v;
        lx->cap = cap;
    }
    tok_t *t = &lx->v[lx->nv++];
    *t = (tok_t){.type = (uint8_t)type, .line = line, .s = s, .n = n};
    return t;
}

static int count_nl(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

/* End of the run of (Unicode) whitespace starting at i: Python's \s*. */
static size_t ws_span(const char *s, size_t n, size_t i) {
    while (i < n) {
        size_t j = i;
        if (!uc_isspace(u8_next(s, n, &j))) break;
        i = j;
    }
    return i;
}

/* str.rstrip() of s[start, end): the new end. */
static size_t ws_rstrip(const char *s, size_t start, size_t end) {
    while (end > start) {
        size_t j = end;
        if (!uc_isspace(u8_prev(s, start, &j))) break;
        end = j;
    }
    return end;
}

/* lstrip_blocks: the text before a block or comment tag loses the whitespace that precedes the
 * tag on its line, when nothing else does. Returns the new end of the text [a, b). */
static size_t lstrip_block(const lexer_t *lx, size_t a, size_t b) {
    size_t l = b;
    while (l > a && lx->s[l - 1] != '\n') l--;
    if (l == a && !lx->line_starting) return b;
    if (l == b || ws_span(lx->s, b, l) != b) return b;
    return l;
}

static bool at(const char *s, size_t n, size_t i, const char *lit) {
    size_t k = strlen(lit);
    return i <= n && n - i >= k && memcmp(s + i, lit, k) == 0;
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
static bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool is_name_char(char c) {
    return is_name_start(c) || is_digit(c);
}

/* The end of the block-tag terminator at i ("+%}", "-%}" and whitespace, "%}" and one newline), or
 * 0 when there is none. */
static size_t block_end_at(const char *s, size_t n, size_t i) {
    if (at(s, n, i, "+%}")) return i + 3;
    if (at(s, n, i, "-%}")) return ws_span(s, n, i + 3);
    if (at(s, n, i, "%}")) return i + 2 + (i + 2 < n && s[i + 2] == '\n');
    return 0;
}

/* After "{%" and its sign at p: is this `raw -%}` / `raw %}`? Sets *end past the tag. */
static bool raw_begin_at(const char *s, size_t n, size_t p, size_t *end) {
    size_t i = ws_span(s, n, p);
    if (!at(s, n, i, "raw")) return false;
    i = ws_span(s, n, i + 3);
    if (at(s, n, i, "-%}")) {
        *end = ws_span(s, n, i + 3);
        return true;
    }
    if (at(s, n, i, "%}")) {
        *end = i + 2;
        return true;
    }
    return false;
}

/* Finds "{%[-+] endraw [+-]%}" from p: *start is where it begins, *sign its opening sign, *end
 * past it (with trim_blocks' newline). */
static bool raw_end_find(const char *s, size_t n, size_t p, size_t *start, char *sign,
                         size_t *end) {
    for (size_t i = p; i + 1 < n; i++) {
        if (s[i] != '{' || s[i + 1] != '%') continue;
        size_t j = i + 2;
        char sg = 0;
        if (j < n && (s[j] == '-' || s[j] == '+')) sg = s[j++];
        j = ws_span(s, n, j);
        if (!at(s, n, j, "endraw")) continue;
        j = ws_span(s, n, j + 6);
        size_t e = block_end_at(s, n, j);
        if (!e) continue;
        *start = i;
        *sign = sg;
        *end = e;
        return true;
    }
    return false;
}

/* (\d+_)*\d+ at i: returns the end, or i when there is no digit. */
static size_t scan_digits(const char *s, size_t n, size_t i) {
    if (i >= n || !is_digit(s[i])) return i;
    while (i < n && is_digit(s[i])) i++;
    while (i + 1 < n && s[i] == '_' && is_digit(s[i + 1])) {
        i++;
        while (i < n && is_digit(s[i])) i++;
    }
    return i;
}

/* jinja2's float_re at i (no '.' just before): returns the end or 0. */
static size_t scan_float(const char *s, size_t n, size_t i) {
    if (i > 0 && s[i - 1] == '.') return 0;
    size_t j = scan_digits(s, n, i);
    if (j == i) return 0;
    size_t frac = 0;
    if (j < n && s[j] == '.') {
        size_t k = scan_digits(s, n, j + 1);
        if (k > j + 1) frac = k;
    }
    size_t e = frac ? frac : j;
    if (e < n && (s[e] == 'e' || s[e] == 'E')) {
        size_t k = e + 1;
        if (k < n && (s[k] == '+' || s[k] == '-')) k++;
        size_t m = scan_digits(s, n, k);
        if (m > k) return m;
    }
    return frac;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* jinja2's integer_re at i: returns the end or 0; the value in *v (*big when past int64). */
static size_t scan_int(const char *s, size_t n, size_t i, int64_t *v, bool *big) {
    int base = 10;
    size_t j = i;
    *big = false;
    char b1 = i + 1 < n ? (char)(s[i + 1] | 0x20) : 0;
    if (s[i] == '0' && (b1 == 'b' || b1 == 'o' || b1 == 'x')) {
        base = b1 == 'b' ? 2 : b1 == 'o' ? 8 : 16;
        j = i + 2;
        size_t k = j;
        for (;;) {
            size_t m = k;
            if (m < n && s[m] == '_') m++;
            int d = m < n ? hexval(s[m]) : -1;
            if (d < 0 || d >= base) break;
            k = m + 1;
        }
        if (k == j)
            base = 10; /* "0x" alone: just the zero */
        else
            j = k;
    }
    if (base == 10) {
        if (i >= n || !is_digit(s[i])) return 0;
        if (s[i] == '0') {
            j = i + 1;
            while (j < n && (s[j] == '0' || (s[j] == '_' && j + 1 < n && s[j + 1] == '0')))
                j += s[j] == '_' ? 2 : 1;
        } else {
            j = scan_digits(s, n, i);
        }
    }
    uint64_t acc = 0;
    for (size_t k = base == 10 ? i : i + 2; k < j; k++) {
        if (s[k] == '_') continue;
        uint64_t d = (uint64_t)hexval(s[k]);
        if (acc > (UINT64_MAX - d) / (uint64_t)base) *big = true;
        acc = acc * (uint64_t)base + d;
    }
    if (acc > (uint64_t)INT64_MAX) *big = true;
    *v = (int64_t)acc;
    return j;
}

/* Decodes a string literal's body as Python's unicode-escape codec does. */
static int lex_string(lexer_t *lx, const char *s, size_t n, int line, tok_t *t) {
    char *o = lt_arena_alloc(lx->arena, n + 1);
    if (!o) return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\' || i + 1 >= n) {
            o[k++] = s[i++];
            continue;
        }
        char c = s[i + 1];
        i += 2;
        uint32_t cp;
        switch (c) {
        case '\n': continue;
        case '\\': o[k++] = '\\'; continue;
        case '\'': o[k++] = '\''; continue;
        case '"': o[k++] = '"'; continue;
        case 'a': o[k++] = '\a'; continue;
        case 'b': o[k++] = '\b'; continue;
        case 'f': o[k++] = '\f'; continue;
        case 'n': o[k++] = '\n'; continue;
        case 'r': o[k++] = '\r'; continue;
        case 't': o[k++] = '\t'; continue;
        case 'v': o[k++] = '\v'; continue;
        case 'x':
        case 'u':
        case 'U': {
            int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            cp = 0;
            for (int d = 0; d < nd; d++) {
                int h = i + (size_t)d < n ? hexval(s[i + (size_t)d]) : -1;
                if (h < 0)
                    return ct_errf(lx->err, LT_ERR_FORMAT, line, "truncated \\%c escape in string",
                                   c);
                cp = cp * 16 + (uint32_t)h;
            }
            i += (size_t)nd;
            if (cp > 0x10FFFF)
                return ct_errf(lx->err, LT_ERR_FORMAT, line, "illegal Unicode character");
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 5 < n && s[i] == '\\' && s[i + 1] == 'u') {
                uint32_t lo = 0;
                int d;
                for (d = 0; d < 4 && hexval(s[i + 2 + (size_t)d]) >= 0; d++)
                    lo = lo * 16 + (uint32_t)hexval(s[i + 2 + (size_t)d]);
                if (d == 4 && lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
            k += u8_put(cp, o + k);
            continue;
        }
        case 'N':
            return ct_errf(lx->err, LT_ERR_UNSUPPORTED, line,
                           "unsupported \\N{...} escape in string");
        default:
            if (c >= '0' && c <= '7') {
                cp = (uint32_t)(c - '0');
                for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++)
                    cp = cp * 8 + (uint32_t)(s[i++] - '0');
                k += u8_put(cp, o + k);
                continue;
            }
            o[k++] = '\\'; /* unknown escapes stay as written */
            o[k++] = c;
            continue;
        }
    }
    o[k] = 0;
    t->s = o;
    t->n = k;
    return 0;
}

/* The inside of a {{ }} or {% %} tag from p; kind is '{' or '%'. */
static int lex_tag(lexer_t *lx, char kind, size_t p, int open_line) {
    const char *s = lx->s;
    size_t n = lx->n;
    char stack[CT_MAX_NEST];
    int depth = 0;
    if (!lex_push(lx, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, lx->line, NULL, 0))
        return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
    size_t i = p;
    for (;;) {
        if (i >= n)
            return ct_errf(lx->err, LT_ERR_FORMAT, open_line, "unclosed '%s' tag",
                           kind == '%' ? "{%" : "{{");
        if (depth == 0) {
            size_t end = 0;
            if (kind == '%')
                end = block_end_at(s, n, i);
            else if (at(s, n, i, "-}}"))
                end = ws_span(s, n, i + 3);
            else if (at(s, n, i, "}}"))
                end = i + 2;
            if (end) {
                if (!lex_push(lx, kind == '%' ? TK_BLOCK_END : TK_VAR_END, lx->line, NULL, 0))
                    return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
                lx->line += count_nl(s + i, end - i);
                lx->line_starting = s[end - 1] == '\n';
                lx->pos = end;
                return 0;
            }
        }
        size_t j = ws_span(s, n, i);
        if (j > i) {
            lx->line += count_nl(s + i, j - i);
            i = j;
            continue;
        }
        tok_t *t;
        char c = s[i];
        if (is_digit(c)) {
            if ((j = scan_float(s, n, i)) != 0) {
                char tmp[64];
                size_t k = 0;
                for (size_t m = i; m < j && k < sizeof tmp - 1; m++)
                    if (s[m] != '_') tmp[k++] = s[m];
                tmp[k] = 0;
                if (!(t = lex_push(lx, TK_FLOAT, lx->line, s + i, j - i)))
                    return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
                t->d = strtod(tmp, NULL);
            } else {
                int64_t v;
                bool big;
                j = scan_int(s, n, i, &v, &big);
                if (big)
                    return ct_errf(lx->err, LT_ERR_UNSUPPORTED, lx->line,
                                   "integer literal '%.*s' is too large", (int)(j - i), s + i);
                if (!(t = lex_push(lx, TK_INT, lx->line, s + i, j - i)))
                    return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
                t->i = v;
            }
            i = j;
            continue;
        }
        if (is_name_start(c)) {
            for (j = i + 1; j < n && is_name_char(s[j]);) j++;
            if (!lex_push(lx, TK_NAME, lx->line, s + i, j - i))
                return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
            i = j;
            continue;
        }
        if (c == '\'' || c == '"') {
            for (j = i + 1; j < n && s[j] != c; j += s[j] == '\\' ? 2 : 1) {
            }
            if (j >= n)
                return ct_errf(lx->err, LT_ERR_FORMAT, lx->line, "unterminated string literal");
            if (!(t = lex_push(lx, TK_STRING, lx->line, NULL, 0)))
                return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
            int rc = lex_string(lx, s + i + 1, j - i - 1, lx->line, t);
            if (rc) return rc;
            lx->line += count_nl(s + i, j - i);
            i = j + 1;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof k_ops / sizeof k_ops[0]; k++)
            if (at(s, n, i, k_ops[k].s)) break;
        if (k == sizeof k_ops / sizeof k_ops[0]) {
            size_t e = i;
            u8_next(s, n, &e);
            return ct_errf(lx->err, LT_ERR_FORMAT, lx->line, "unexpected char '%.*s'", (int)(e - i),
                           s + i);
        }
        uint8_t op = k_ops[k].op;
        if (op == OP_LPAREN || op == OP_LBRACKET || op == OP_LBRACE) {
            if (depth == CT_MAX_NEST)
                return ct_errf(lx->err, LT_ERR_RANGE, lx->line, "brackets nested too deeply");
            stack[depth++] = op == OP_LPAREN ? ')' : op == OP_LBRACKET ? ']' : '}';
        } else if (op == OP_RPAREN || op == OP_RBRACKET || op == OP_RBRACE) {
            if (depth == 0) return ct_errf(lx->err, LT_ERR_FORMAT, lx->line, "unexpected '%c'", c);
            if (stack[--depth] != c)
                return ct_errf(lx->err, LT_ERR_FORMAT, lx->line, "unexpected '%c', expected '%c'",
                               c, stack[depth]);
        }
        if (!(t = lex_push(lx, TK_OP, lx->line, s + i, strlen(k_ops[k].s))))
            return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
        t->op = op;
        i += strlen(k_ops[k].s);
    }
}

/* Tokenises the whole (newline-normalised) source. */
static int lex_all(lexer_t *lx) {
    const char *s = lx->s;
    size_t n = lx->n;
    lx->line = 1;
    lx->line_starting = true;
    while (lx->pos < n) {
        size_t q = lx->pos;
        while (q + 1 < n &&
               !(s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')))
            q++;
        if (q + 1 >= n) { /* the rest is data */
            if (!lex_push(lx, TK_DATA, lx->line, s + lx->pos, n - lx->pos))
                return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
            lx->line += count_nl(s + lx->pos, n - lx->pos);
            lx->pos = n;
            break;
        }
        char kind = s[q + 1];
        size_t p = q + 2;
        char sign = 0;
        if (p < n && (s[p] == '-' || s[p] == '+')) sign = s[p++];
        size_t raw_end = 0;
        bool raw = kind == '%' && raw_begin_at(s, n, p, &raw_end);
        size_t a = lx->pos, b = q;
        if (sign == '-')
            b = ws_rstrip(s, a, b);
        else if (sign != '+' && kind != '{')
            b = lstrip_block(lx, a, b);
        if (b > a && !lex_push(lx, TK_DATA, lx->line, s + a, b - a))
            return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
        lx->line += count_nl(s + a, q - a);
        int open_line = lx->line;
        if (raw) {
            lx->line += count_nl(s + q, raw_end - q);
            lx->line_starting = s[raw_end - 1] == '\n';
            size_t start, end;
            char esign;
            if (!raw_end_find(s, n, raw_end, &start, &esign, &end))
                return ct_errf(lx->err, LT_ERR_FORMAT, open_line, "missing end of raw directive");
            size_t e = start;
            lx->pos = raw_end;
            if (esign == '-')
                e = ws_rstrip(s, raw_end, e);
            else if (esign != '+')
                e = lstrip_block(lx, raw_end, e);
            if (e > raw_end && !lex_push(lx, TK_DATA, lx->line, s + raw_end, e - raw_end))
                return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
            lx->line += count_nl(s + raw_end, end - raw_end);
            lx->line_starting = s[end - 1] == '\n';
            lx->pos = end;
        } else if (kind == '#') {
            size_t c = p;
            while (c + 1 < n && !(s[c] == '#' && s[c + 1] == '}')) c++;
            if (c + 1 >= n)
                return ct_errf(lx->err, LT_ERR_FORMAT, open_line, "missing end of comment tag");
            size_t end;
            if (c > p && s[c - 1] == '+')
                end = c + 2;
            else if (c > p && s[c - 1] == '-')
                end = ws_span(s, n, c + 2);
            else
                end = c + 2 + (c + 2 < n && s[c + 2] == '\n');
            lx->line += count_nl(s + q, end - q);
            lx->line_starting = s[end - 1] == '\n';
            lx->pos = end;
        } else {
            int rc = lex_tag(lx, kind, p, open_line);
            if (rc) return rc;
        }
    }
    if (!lex_push(lx, TK_EOF, lx->line, NULL, 0))
        return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
    return 0;
}

/* ---- syntax tree ---- */

enum {
    /* statements */
    S_DATA,        /* s, n */
    S_OUTPUT,      /* a */
    S_IF,          /* a: test, v: body, w: else body (an elif is an else holding one S_IF) */
    S_FOR,         /* a: target, b: iterable, c: filter test or NULL, v: body, w: else body */
    S_SET,         /* a: target (E_NAME, E_TUPLE of names, E_NSREF), b: value */
    S_SETBLOCK,    /* a: target, c: filter chain or NULL, v: body */
    S_MACRO,       /* id: name, kw/nw: parameters, w: defaults (NULL: none), v: body, op: MAC_* */
    S_CALLBLOCK,   /* a: the E_CALL, kw/nw/w: caller's parameters, v: caller's body, op: MAC_* */
    S_FILTERBLOCK, /* c: filter chain (innermost operand NULL), v: body */
    S_WITH,        /* kw/nw: names, w: values, v: body */
    S_BREAK,
    S_CONTINUE,
    S_GENERATION, /* transformers' {% generation %}: v rendered as is */
    /* expressions */
    E_CONST,   /* k */
    E_NAME,    /* id */
    E_NSREF,   /* assignment target ns.attr: id, s/n */
    E_GETATTR, /* a, s/n; id: method number or -1 */
    E_GETITEM, /* a, b */
    E_SLICE,   /* a; v[0..2]: start, stop, step (each may be NULL) */
    E_CALL,    /* a: callee, v: args, w/kw: keyword args */
    E_FILTER,  /* a: operand (NULL in a filter block), id: filter, s: name, v, w/kw */
    E_TEST,    /* a, id: test, s: name, v, w/kw */
    E_BIN,     /* op, a, b */
    E_NEG,
    E_POS,
    E_CONCAT, /* v */
    E_CMP,    /* a, v: operands, ops */
    E_AND,
    E_OR,
    E_NOT,
    E_COND,  /* a: value, b: test, c: else value or NULL */
    E_LIST,  /* v */
    E_TUPLE, /* v */
    E_DICT,  /* v: keys, w: values */
};

typedef struct node node_t;
struct node {
    uint8_t kind;
    uint8_t op;
    uint8_t negpow; /* E_BIN **: jinja2's constant-folding quirk, see parse_pow */
    int line;
    int id;
    node_t *a, *b, *c;
    node_t **v;
    node_t **w;
    int *kw;
    uint8_t *ops;
    int nv, nw;
    const char *s;
    size_t n;
    val_t k;
};

typedef struct {
    const char *s;
    size_t n;
} name_t;

struct fe_chat_template {
    lt_arena_t arena; /* nodes, names, decoded strings */
    char *src;        /* the newline-normalised source: data nodes point into it */
    node_t **body;
    int nbody;
    name_t *names; /* identifiers, by id */
    int nnames, capnames;
};

/* Names with fixed ids, interned first. */
enum {
    NM_LOOP,
    NM_CALLER,
    NM_RANGE,
    NM_NAMESPACE,
    NM_RAISE,
    NM_STRFTIME,
    NM_DICT,
    NM_CYCLER,
    NM_JOINER,
    NM_LIPSUM,
    NM_KWARGS,
    NM_VARARGS,
    NM__FIXED
};
static const char *const k_fixed_names[NM__FIXED] = {
    "loop", "caller", "range",  "namespace", "raise_exception", "strftime_now",
    "dict", "cycler", "joiner", "lipsum",    "kwargs",          "varargs"};

/* S_MACRO / S_CALLBLOCK op bits: which special names the body reads (jinja2 decides from the
 * same thing whether a macro accepts a caller, extra keywords or extra positionals). */
#define MAC_CALLER  1
#define MAC_KWARGS  2
#define MAC_VARARGS 4

/* ---- builtin tables: filters, tests, methods ---- */

/* The index of the filter called name in k_filters (in the filters section), or -1. */
static int find_filter(const char *s, size_t len);

/* jinja2 filters we do not implement: a template using one fails to compile, by name. */
static const char *const k_filters_unsupported[] = {
    "batch",     "center", "filesizeformat", "forceescape", "groupby",
    "pprint",    "random", "slice",          "striptags",   "truncate",
    "urlencode", "urlize", "wordcount",      "wordwrap",    "xmlattr"};

/* The index of the test called name in k_tests (in the tests section), or -1. */
static int find_test(const char *s, size_t len);

/* jinja2 tests we do not implement. */
static const char *const k_tests_unsupported[] = {"filter", "test"};

/* The index of the Python method called name in k_methods (in the methods section), or -1;
 * whether value v has method m, and whether the sandbox forbids it. */
static int find_method(const char *s, size_t len);
static bool method_of(const val_t *v, int m, bool *unsafe);

static bool in_list(const char *const *tab, size_t n, const char *s, size_t len) {
    for (size_t i = 0; i < n; i++)
        if (strlen(tab[i]) == len && memcmp(tab[i], s, len) == 0) return true;
    return false;
}

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- parser ---- */

/* A recursive-descent parser with jinja2's grammar and precedence, function for function:
 * condexpr > or > and > not > compare > math1 (+ -) > concat (~) > math2 (* / // %) > pow >
 * unary (- + then postfix, filters and tests). */
typedef struct parser {
    const tok_t *t;
    size_t i;
    fe_chat_template_t *tpl;
    int depth;
    int loops; /* enclosing for-loops in this macro body: break/continue are allowed */
    char *err;
} parser_t;

typedef struct {
    node_t **v;
    int n, cap;
} nvec_t;

static const tok_t *cur(const parser_t *p) {
    return &p->t[p->i];
}
static const tok_t *peek(const parser_t *p) {
    return p->t[p->i].type == TK_EOF ? &p->t[p->i] : &p->t[p->i + 1];
}
static bool is_op(const tok_t *t, int op) {
    return t->type == TK_OP && t->op == op;
}
static bool is_name(const tok_t *t, const char *name) {
    return t->type == TK_NAME && t->n == strlen(name) && memcmp(t->s, name, t->n) == 0;
}

static int p_nomem(parser_t *p) {
    return lt_errf(p->err, LT_ERR_NOMEM, "chat template: out of memory");
}

static const char *tok_desc(const tok_t *t, char *buf, size_t n) {
    switch (t->type) {
    case TK_EOF: return "end of template";
    case TK_DATA: return "template data";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_VAR_END: return "end of print statement";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_BLOCK_END: return "end of statement block";
    case TK_STRING: return "string";
    default: snprintf(buf, n, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s); return buf;
    }
}

static int p_unexpected(parser_t *p, const char *expected) {
    char buf[64];
    const tok_t *t = cur(p);
    if (expected)
        return ct_errf(p->err, LT_ERR_FORMAT, t->line, "expected %s, got %s", expected,
                       tok_desc(t, buf, sizeof buf));
    return ct_errf(p->err, LT_ERR_FORMAT, t->line, "unexpected %s", tok_desc(t, buf, sizeof buf));
}

static int p_expect_op(parser_t *p, int op, const char *what) {
    if (!is_op(cur(p), op)) return p_unexpected(p, what);
    p->i++;
    return 0;
}

static int p_expect_type(parser_t *p, int type, const char *what) {
    if (cur(p)->type != type) return p_unexpected(p, what);
    p->i++;
    return 0;
}

static node_t *p_node(parser_t *p, int kind, int line) {
    node_t *e = lt_arena_alloc(&p->tpl->arena, sizeof *e);
    if (e) *e = (node_t){.kind = (uint8_t)kind, .line = line, .id = -1};
    return e;
}

static int nv_push(parser_t *p, nvec_t *v, node_t *e) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 4;
        node_t **nv = lt_arena_alloc(&p->tpl->arena, (size_t)cap * sizeof *nv);
        if (!nv) return p_nomem(p);
        if (v->n) memcpy(nv, v->v, (size_t)v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = e;
    return 0;
}

/* The id of identifier s (interned in the template). -1 on allocation failure. */
static int intern(fe_chat_template_t *t, const char *s, size_t n) {
    for (int i = 0; i < t->nnames; i++)
        if (t->names[i].n == n && memcmp(t->names[i].s, s, n) == 0) return i;
    if (t->nnames == t->capnames) {
        int cap = t->capnames ? t->capnames * 2 : 32;
        name_t *v = lt_arena_alloc(&t->arena, (size_t)cap * sizeof *v);
        if (!v) return -1;
        if (t->nnames) memcpy(v, t->names, (size_t)t->nnames * sizeof *v);
        t->names = v;
        t->capnames = cap;
    }
    char *c = lt_arena_alloc(&t->arena, n + 1);
    if (!c) return -1;
    memcpy(c, s, n);
    c[n] = 0;
    t->names[t->nnames] = (name_t){c, n};
    return t->nnames++;
}

static int parse_expression(parser_t *p, bool with_condexpr, node_t **out);
static int parse_tuple(parser_t *p, bool simplified, bool with_condexpr, const char *extra_end,
                       bool explicit_parens, bool with_ns, node_t **out);
static int parse_unary(parser_t *p, bool with_filter, node_t **out);
static int parse_primary(parser_t *p, bool with_ns, node_t **out);
static int parse_postfix(parser_t *p, node_t **e);
static int parse_body(parser_t *p, const char *const *ends, nvec_t *out);

/* `(args, name=value)`: positional args into v, keyword args into w and kw. */
static int parse_call_args(parser_t *p, node_t *e) {
    nvec_t args = {0}, kwv = {0};
    int *kw = NULL, nkw = 0, capkw = 0;
    int rc = p_expect_op(p, OP_LPAREN, "'('");
    if (rc) return rc;
    bool need_comma = false;
    while (!is_op(cur(p), OP_RPAREN)) {
        if (need_comma) {
            if ((rc = p_expect_op(p, OP_COMMA, "','"))) return rc;
            if (is_op(cur(p), OP_RPAREN)) break;
        }
        if (is_op(cur(p), OP_MUL) || is_op(cur(p), OP_POW))
            return ct_errf(p->err, LT_ERR_UNSUPPORTED, cur(p)->line,
                           "unsupported '*args' / '**kwargs' in a call");
        node_t *a;
        if (cur(p)->type == TK_NAME && is_op(peek(p), OP_ASSIGN)) {
            int id = intern(p->tpl, cur(p)->s, cur(p)->n);
            if (id < 0) return p_nomem(p);
            p->i += 2;
            if ((rc = parse_expression(p, true, &a))) return rc;
            if (nkw == capkw) {
                capkw = capkw ? capkw * 2 : 4;
                int *nk = lt_arena_alloc(&p->tpl->arena, (size_t)capkw * sizeof *nk);
                if (!nk) return p_nomem(p);
                if (nkw) memcpy(nk, kw, (size_t)nkw * sizeof *nk);
                kw = nk;
            }
            kw[nkw++] = id;
            if ((rc = nv_push(p, &kwv, a))) return rc;
        } else {
            if (nkw)
                return ct_errf(p->err, LT_ERR_FORMAT, cur(p)->line,
                               "positional argument follows keyword argument");
            if ((rc = parse_expression(p, true, &a))) return rc;
            if ((rc = nv_push(p, &args, a))) return rc;
        }
        need_comma = true;
    }
    p->i++;
    e->v = args.v;
    e->nv = args.n;
    e->w = kwv.v;
    e->nw = kwv.n;
    e->kw = kw;
    return 0;
}

/* `| name(args)` chains; node may be NULL (filter blocks, set blocks). */
static int parse_filter(parser_t *p, node_t *node, bool start_inline, node_t **out) {
    int rc;
    while (is_op(cur(p), OP_PIPE) || start_inline) {
        if (!start_inline) p->i++;
        start_inline = false;
        const tok_t *t = cur(p);
        if (t->type != TK_NAME) return p_unexpected(p, "filter name");
        p->i++;
        if (is_op(cur(p), OP_DOT))
            return ct_errf(p->err, LT_ERR_UNSUPPORTED, t->line, "unsupported dotted filter name");
        int f = find_filter(t->s, t->n);
        if (f < 0) {
            if (in_list(k_filters_unsupported, COUNT_OF(k_filters_unsupported), t->s, t->n))
                return ct_errf(p->err, LT_ERR_UNSUPPORTED, t->line, "unsupported filter '%.*s'",
                               (int)t->n, t->s);
            return ct_errf(p->err, LT_ERR_FORMAT, t->line, "no filter named '%.*s'", (int)t->n,
                           t->s);
        }
        node_t *e = p_node(p, E_FILTER, t->line);
        if (!e) return p_nomem(p);
        e->a = node;
        e->id = f;
        e->s = t->s;
        e->n = t->n;
        if (is_op(cur(p), OP_LPAREN) && (rc = parse_call_args(p, e))) return rc;
        node = e;
    }
    *out = node;
    return 0;
}

static int parse_test(parser_t *p, node_t *node, node_t **out) {
    int line = cur(p)->line, rc;
    p->i++; /* 'is' */
    bool negated = false;
    if (is_name(cur(p), "not")) {
        negated = true;
        p->i++;
    }
    const tok_t *t = cur(p);
    if (t->type != TK_NAME) return p_unexpected(p, "test name");
    p->i++;
    if (is_op(cur(p), OP_DOT))
        return ct_errf(p->err, LT_ERR_UNSUPPORTED, t->line, "unsupported dotted test name");
    int id = find_test(t->s, t->n);
    if (id < 0) {
        if (in_list(k_tests_unsupported, COUNT_OF(k_tests_unsupported), t->s, t->n))
            return ct_errf(p->err, LT_ERR_UNSUPPORTED, t->line, "unsupported test '%.*s'",
                           (int)t->n, t->s);
        return ct_errf(p->err, LT_ERR_FORMAT, t->line, "no test named '%.*s'", (int)t->n, t->s);
    }
    node_t *e = p_node(p, E_TEST, line);
    if (!e) return p_nomem(p);
    e->a = node;
    e->id = id;
    e->s = t->s;
    e->n = t->n;
    const tok_t *c = cur(p);
    if (is_op(c, OP_LPAREN)) {
        if ((rc = parse_call_args(p, e))) return rc;
    } else if ((c->type == TK_NAME || c->type == TK_STRING || c->type == TK_INT ||
                c->type == TK_FLOAT || is_op(c, OP_LBRACKET) || is_op(c, OP_LBRACE)) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is"))
            return ct_errf(p->err, LT_ERR_FORMAT, c->line,
                           "you cannot chain multiple tests with is");
        node_t *arg;
        if ((rc = parse_primary(p, false, &arg)) || (rc = parse_postfix(p, &arg))) return rc;
        e->v = lt_arena_alloc(&p->tpl->arena, sizeof *e->v);
        if (!e->v) return p_nomem(p);
        e->v[0] = arg;
        e->nv = 1;
    }
    if (negated) {
        node_t *n = p_node(p, E_NOT, line);
        if (!n) return p_nomem(p);
        n->a = e;
        e = n;
    }
    *out = e;
    return 0;
}

/* One subscript: an expression or a slice a:b:c. */
static int parse_subscribed(parser_t *p, node_t **out) {
    int line = cur(p)->line, rc;
    node_t *args[3] = {NULL, NULL, NULL};
    if (is_op(cur(p), OP_COLON)) {
        p->i++;
    } else {
        node_t *e;
        if ((rc = parse_expression(p, true, &e))) return rc;
        if (!is_op(cur(p), OP_COLON)) {
            *out = e;
            return 0;
        }
        p->i++;
        args[0] = e;
    }
    if (!is_op(cur(p), OP_COLON) && !is_op(cur(p), OP_RBRACKET) && !is_op(cur(p), OP_COMMA))
        if ((rc = parse_expression(p, true, &args[1]))) return rc;
    if (is_op(cur(p), OP_COLON)) {
        p->i++;
        if (!is_op(cur(p), OP_RBRACKET) && !is_op(cur(p), OP_COMMA))
            if ((rc = parse_expression(p, true, &args[2]))) return rc;
    }
    node_t *s = p_node(p, E_SLICE, line);
    if (!s) return p_nomem(p);
    s->v = lt_arena_alloc(&p->tpl->arena, 3 * sizeof *s->v);
    if (!s->v) return p_nomem(p);
    memcpy(s->v, args, sizeof args);
    s->nv = 3;
    *out = s;
    return 0;
}

static int parse_subscript(parser_t *p, node_t **e) {
    const tok_t *t = cur(p);
    int rc;
    p->i++;
    if (t->op == OP_DOT) {
        const tok_t *a = cur(p);
        p->i++;
        if (a->type == TK_NAME) {
            node_t *g = p_node(p, E_GETATTR, t->line);
            if (!g) return p_nomem(p);
            g->a = *e;
            g->s = a->s;
            g->n = a->n;
            g->id = find_method(a->s, a->n);
            *e = g;
            return 0;
        }
        if (a->type != TK_INT) {
            p->i--;
            return p_unexpected(p, "name or number");
        }
        node_t *k = p_node(p, E_CONST, a->line), *g = p_node(p, E_GETITEM, t->line);
        if (!k || !g) return p_nomem(p);
        k->k = v_int(a->i);
        g->a = *e;
        g->b = k;
        *e = g;
        return 0;
    }
    nvec_t args = {0};
    while (!is_op(cur(p), OP_RBRACKET)) {
        if (args.n && (rc = p_expect_op(p, OP_COMMA, "','"))) return rc;
        node_t *a = NULL;
        if ((rc = parse_subscribed(p, &a)) || (rc = nv_push(p, &args, a))) return rc;
    }
    p->i++;
    node_t *key = args.n ? args.v[0] : NULL;
    if (args.n == 1 && key->kind == E_SLICE) {
        key->a = *e;
        *e = key;
        return 0;
    }
    if (args.n != 1) { /* x[a, b] and x[] index with a tuple */
        key = p_node(p, E_TUPLE, t->line);
        if (!key) return p_nomem(p);
        key->v = args.v;
        key->nv = args.n;
    }
    node_t *g = p_node(p, E_GETITEM, t->line);
    if (!g) return p_nomem(p);
    g->a = *e;
    g->b = key;
    *e = g;
    return 0;
}

static int parse_postfix(parser_t *p, node_t **e) {
    int rc;
    for (;;) {
        const tok_t *t = cur(p);
        if (is_op(t, OP_DOT) || is_op(t, OP_LBRACKET)) {
            if ((rc = parse_subscript(p, e))) return rc;
        } else if (is_op(t, OP_LPAREN)) {
            node_t *c = p_node(p, E_CALL, t->line);
            if (!c) return p_nomem(p);
            c->a = *e;
            if ((rc = parse_call_args(p, c))) return rc;
            *e = c;
        } else {
            return 0;
        }
    }
}

static int parse_filter_expr(parser_t *p, node_t **e) {
    int rc;
    for (;;) {
        const tok_t *t = cur(p);
        if (is_op(t, OP_PIPE)) {
            if ((rc = parse_filter(p, *e, false, e))) return rc;
        } else if (is_name(t, "is")) {
            if ((rc = parse_test(p, *e, e))) return rc;
        } else if (is_op(t, OP_LPAREN)) {
            node_t *c = p_node(p, E_CALL, t->line);
            if (!c) return p_nomem(p);
            c->a = *e;
            if ((rc = parse_call_args(p, c))) return rc;
            *e = c;
        } else {
            return 0;
        }
    }
}

static int parse_seq(parser_t *p, int kind, node_t **out) {
    int line = cur(p)->line, rc;
    bool dict = kind == E_DICT;
    int close = dict ? OP_RBRACE : OP_RBRACKET;
    p->i++;
    nvec_t keys = {0}, vals = {0};
    while (!is_op(cur(p), close)) {
        if (keys.n && (rc = p_expect_op(p, OP_COMMA, "','"))) return rc;
        if (is_op(cur(p), close)) break;
        node_t *k, *v;
        if ((rc = parse_expression(p, true, &k)) || (rc = nv_push(p, &keys, k))) return rc;
        if (dict) {
            if ((rc = p_expect_op(p, OP_COLON, "':'"))) return rc;
            if ((rc = parse_expression(p, true, &v)) || (rc = nv_push(p, &vals, v))) return rc;
        }
    }
    p->i++;
    node_t *e = p_node(p, kind, line);
    if (!e) return p_nomem(p);
    e->v = keys.v;
    e->nv = keys.n;
    e->w = vals.v;
    e->nw = vals.n;
    *out = e;
    return 0;
}

static int parse_primary(parser_t *p, bool with_ns, node_t **out) {
    const tok_t *t = cur(p);
    int rc;
    node_t *e = NULL;
    switch (t->type) {
    case TK_NAME:
        p->i++;
        if (is_name(t, "true") || is_name(t, "True") || is_name(t, "false") ||
            is_name(t, "False")) {
            if (!(e = p_node(p, E_CONST, t->line))) return p_nomem(p);
            e->k = v_bool(t->s[0] == 't' || t->s[0] == 'T');
        } else if (is_name(t, "none") || is_name(t, "None")) {
            if (!(e = p_node(p, E_CONST, t->line))) return p_nomem(p);
            e->k = v_none();
        } else if (with_ns && is_op(cur(p), OP_DOT)) {
            p->i++;
            const tok_t *a = cur(p);
            if (a->type != TK_NAME) return p_unexpected(p, "attribute name");
            p->i++;
            if (!(e = p_node(p, E_NSREF, t->line))) return p_nomem(p);
            if ((e->id = intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
            e->s = a->s;
            e->n = a->n;
        } else {
            if (!(e = p_node(p, E_NAME, t->line))) return p_nomem(p);
            if ((e->id = intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
            e->s = p->tpl->names[e->id].s;
            e->n = t->n;
        }
        break;
    case TK_STRING: {
        p->i++;
        size_t total = t->n, k = p->i;
        while (p->t[k].type == TK_STRING) total += p->t[k++].n;
        if (!(e = p_node(p, E_CONST, t->line))) return p_nomem(p);
        if (k == p->i) { /* the common case: one literal */
            e->k = v_str(t->s, t->n);
        } else { /* adjacent literals concatenate */
            char *s = lt_arena_alloc(&p->tpl->arena, total + 1);
            if (!s) return p_nomem(p);
            memcpy(s, t->s, t->n);
            size_t off = t->n;
            for (; p->i < k; p->i++) {
                memcpy(s + off, p->t[p->i].s, p->t[p->i].n);
                off += p->t[p->i].n;
            }
            e->k = v_str(s, total);
        }
        break;
    }
    case TK_INT:
    case TK_FLOAT:
        p->i++;
        if (!(e = p_node(p, E_CONST, t->line))) return p_nomem(p);
        e->k = t->type == TK_INT ? v_int(t->i) : v_float(t->d);
        break;
    case TK_OP:
        if (t->op == OP_LPAREN) {
            p->i++;
            if ((rc = parse_tuple(p, false, true, NULL, true, false, &e))) return rc;
            if ((rc = p_expect_op(p, OP_RPAREN, "')'"))) return rc;
            break;
        }
        if (t->op == OP_LBRACKET) {
            if ((rc = parse_seq(p, E_LIST, &e))) return rc;
            break;
        }
        if (t->op == OP_LBRACE) {
            if ((rc = parse_seq(p, E_DICT, &e))) return rc;
            break;
        }
        return p_unexpected(p, NULL);
    default: return p_unexpected(p, NULL);
    }
    *out = e;
    return 0;
}

static int parse_unary(parser_t *p, bool with_filter, node_t **out) {
    const tok_t *t = cur(p);
    int rc;
    if (++p->depth > CT_MAX_NEST)
        return ct_errf(p->err, LT_ERR_RANGE, t->line, "expression nested too deeply");
    node_t *e = NULL;
    if (is_op(t, OP_SUB) || is_op(t, OP_ADD)) {
        p->i++;
        node_t *a;
        if ((rc = parse_unary(p, false, &a))) return rc;
        if (!(e = p_node(p, t->op == OP_SUB ? E_NEG : E_POS, t->line))) return p_nomem(p);
        e->a = a;
    } else if ((rc = parse_primary(p, false, &e))) {
        return rc;
    }
    if ((rc = parse_postfix(p, &e))) return rc;
    if (with_filter && (rc = parse_filter_expr(p, &e))) return rc;
    p->depth--;
    *out = e;
    return 0;
}

static int parse_bin(parser_t *p, int kind, int op, int line, node_t *a, node_t *b, node_t **out) {
    node_t *e = p_node(p, kind, line);
    if (!e) return p_nomem(p);
    e->op = (uint8_t)op;
    e->a = a;
    e->b = b;
    *out = e;
    return 0;
}

/* The value of a numeric constant expression as jinja2's optimizer folds it (literals, unary
 * signs and arithmetic on them); false for anything else. */
static bool const_num(const node_t *e, double *v) {
    double a, b;
    switch (e->kind) {
    case E_CONST:
        if (!v_isnum(&e->k)) return false;
        *v = v_asfloat(&e->k);
        return true;
    case E_NEG:
    case E_POS:
        if (!const_num(e->a, &a)) return false;
        *v = e->kind == E_NEG ? -a : a;
        return true;
    case E_BIN:
        if (!const_num(e->a, &a) || !const_num(e->b, &b)) return false;
        switch (e->op) {
        case OP_ADD: *v = a + b; return true;
        case OP_SUB: *v = a - b; return true;
        case OP_MUL: *v = a * b; return true;
        case OP_DIV: *v = b != 0 ? a / b : 0; return b != 0;
        default: return false;
        }
    default: return false;
    }
}

static int parse_pow(parser_t *p, node_t **out) {
    node_t *l = NULL, *r = NULL;
    int rc;
    if ((rc = parse_unary(p, true, &l))) return rc;
    while (is_op(cur(p), OP_POW)) {
        int line = cur(p)->line;
        p->i++;
        if ((rc = parse_unary(p, true, &r)) || (rc = parse_bin(p, E_BIN, OP_POW, line, l, r, &l)))
            return rc;
        /* jinja2 folds a constant left operand into Python source as a literal; a negative one
         * then reads `-3 ** x`, which Python evaluates as -(3 ** x). */
        double a, b;
        l->negpow = const_num(l->a, &a) && a < 0 && !const_num(l->b, &b);
    }
    *out = l;
    return 0;
}

static int parse_math2(parser_t *p, node_t **out) {
    node_t *l = NULL, *r = NULL;
    int rc;
    if ((rc = parse_pow(p, &l))) return rc;
    for (;;) {
        const tok_t *t = cur(p);
        if (!(is_op(t, OP_MUL) || is_op(t, OP_DIV) || is_op(t, OP_FLOORDIV) || is_op(t, OP_MOD)))
            break;
        p->i++;
        if ((rc = parse_pow(p, &r)) || (rc = parse_bin(p, E_BIN, t->op, t->line, l, r, &l)))
            return rc;
    }
    *out = l;
    return 0;
}

static int parse_concat(parser_t *p, node_t **out) {
    node_t *e = NULL;
    int rc, line = cur(p)->line;
    if ((rc = parse_math2(p, &e))) return rc;
    if (!is_op(cur(p), OP_TILDE)) {
        *out = e;
        return 0;
    }
    nvec_t args = {0};
    if ((rc = nv_push(p, &args, e))) return rc;
    while (is_op(cur(p), OP_TILDE)) {
        p->i++;
        if ((rc = parse_math2(p, &e)) || (rc = nv_push(p, &args, e))) return rc;
    }
    node_t *c = p_node(p, E_CONCAT, line);
    if (!c) return p_nomem(p);
    c->v = args.v;
    c->nv = args.n;
    *out = c;
    return 0;
}

static int parse_math1(parser_t *p, node_t **out) {
    node_t *l = NULL, *r = NULL;
    int rc;
    if ((rc = parse_concat(p, &l))) return rc;
    for (;;) {
        const tok_t *t = cur(p);
        if (!(is_op(t, OP_ADD) || is_op(t, OP_SUB))) break;
        p->i++;
        if ((rc = parse_concat(p, &r)) || (rc = parse_bin(p, E_BIN, t->op, t->line, l, r, &l)))
            return rc;
    }
    *out = l;
    return 0;
}

static int parse_compare(parser_t *p, node_t **out) {
    node_t *first = NULL, *e = NULL;
    int rc, line = cur(p)->line;
    if ((rc = parse_math1(p, &first))) return rc;
    nvec_t operands = {0};
    uint8_t ops[64];
    for (;;) {
        const tok_t *t = cur(p);
        int op;
        if (t->type == TK_OP && (t->op == OP_EQ || t->op == OP_NE || t->op == OP_LT ||
                                 t->op == OP_LE || t->op == OP_GT || t->op == OP_GE)) {
            op = t->op;
            p->i++;
        } else if (is_name(t, "in")) {
            op = OP_IN;
            p->i++;
        } else if (is_name(t, "not") && is_name(peek(p), "in")) {
            op = OP_NOTIN;
            p->i += 2;
        } else {
            break;
        }
        if (operands.n == (int)sizeof ops)
            return ct_errf(p->err, LT_ERR_RANGE, t->line, "comparison chain too long");
        ops[operands.n] = (uint8_t)op;
        if ((rc = parse_math1(p, &e)) || (rc = nv_push(p, &operands, e))) return rc;
    }
    if (!operands.n) {
        *out = first;
        return 0;
    }
    node_t *c = p_node(p, E_CMP, line);
    if (!c || !(c->ops = lt_arena_alloc(&p->tpl->arena, (size_t)operands.n))) return p_nomem(p);
    memcpy(c->ops, ops, (size_t)operands.n);
    c->a = first;
    c->v = operands.v;
    c->nv = operands.n;
    *out = c;
    return 0;
}

static int parse_not(parser_t *p, node_t **out) {
    if (is_name(cur(p), "not")) {
        int line = cur(p)->line, rc;
        p->i++;
        if (++p->depth > CT_MAX_NEST)
            return ct_errf(p->err, LT_ERR_RANGE, line, "expression nested too deeply");
        node_t *a = NULL, *e = NULL;
        if ((rc = parse_not(p, &a))) return rc;
        p->depth--;
        if (!(e = p_node(p, E_NOT, line))) return p_nomem(p);
        e->a = a;
        *out = e;
        return 0;
    }
    return parse_compare(p, out);
}

static int parse_and(parser_t *p, node_t **out) {
    node_t *l = NULL, *r = NULL;
    int rc;
    if ((rc = parse_not(p, &l))) return rc;
    while (is_name(cur(p), "and")) {
        int line = cur(p)->line;
        p->i++;
        if ((rc = parse_not(p, &r)) || (rc = parse_bin(p, E_AND, 0, line, l, r, &l))) return rc;
    }
    *out = l;
    return 0;
}

static int parse_or(parser_t *p, node_t **out) {
    node_t *l = NULL, *r = NULL;
    int rc;
    if ((rc = parse_and(p, &l))) return rc;
    while (is_name(cur(p), "or")) {
        int line = cur(p)->line;
        p->i++;
        if ((rc = parse_and(p, &r)) || (rc = parse_bin(p, E_OR, 0, line, l, r, &l))) return rc;
    }
    *out = l;
    return 0;
}

static int parse_condexpr(parser_t *p, node_t **out) {
    node_t *e1 = NULL;
    int rc;
    if ((rc = parse_or(p, &e1))) return rc;
    while (is_name(cur(p), "if")) {
        int line = cur(p)->line;
        p->i++;
        node_t *test, *alt = NULL, *c;
        if ((rc = parse_or(p, &test))) return rc;
        if (is_name(cur(p), "else")) {
            p->i++;
            if (++p->depth > CT_MAX_NEST)
                return ct_errf(p->err, LT_ERR_RANGE, line, "expression nested too deeply");
            if ((rc = parse_condexpr(p, &alt))) return rc;
            p->depth--;
        }
        if (!(c = p_node(p, E_COND, line))) return p_nomem(p);
        c->a = e1;
        c->b = test;
        c->c = alt;
        e1 = c;
    }
    *out = e1;
    return 0;
}

static int parse_expression(parser_t *p, bool with_condexpr, node_t **out) {
    return with_condexpr ? parse_condexpr(p, out) : parse_or(p, out);
}

static bool is_tuple_end(const parser_t *p, const char *extra_end) {
    const tok_t *t = cur(p);
    if (t->type == TK_VAR_END || t->type == TK_BLOCK_END || is_op(t, OP_RPAREN)) return true;
    return extra_end && is_name(t, extra_end);
}

static int parse_tuple(parser_t *p, bool simplified, bool with_condexpr, const char *extra_end,
                       bool explicit_parens, bool with_ns, node_t **out) {
    int line = cur(p)->line, rc;
    nvec_t args = {0};
    bool is_tuple = false;
    for (;;) {
        if (args.n && (rc = p_expect_op(p, OP_COMMA, "','"))) return rc;
        if (is_tuple_end(p, extra_end)) break;
        node_t *e;
        rc = simplified ? parse_primary(p, with_ns, &e) : parse_expression(p, with_condexpr, &e);
        if (rc || (rc = nv_push(p, &args, e))) return rc;
        if (!is_op(cur(p), OP_COMMA)) break;
        is_tuple = true;
    }
    if (!is_tuple) {
        if (args.n) {
            *out = args.v[0];
            return 0;
        }
        if (!explicit_parens) return p_unexpected(p, "an expression");
    }
    node_t *t = p_node(p, E_TUPLE, line);
    if (!t) return p_nomem(p);
    t->v = args.v;
    t->nv = args.n;
    *out = t;
    return 0;
}

/* ---- parser: statements ---- */

/* An assignment target: a name, a tuple of names, or (with_ns) ns.attr. */
static int parse_assign_target(parser_t *p, const char *extra_end, bool with_ns, node_t **out) {
    int line = cur(p)->line, rc;
    node_t *t;
    if ((rc = parse_tuple(p, true, true, extra_end, false, with_ns, &t))) return rc;
    bool ok = t->kind == E_NAME || t->kind == E_NSREF;
    if (t->kind == E_TUPLE) {
        ok = t->nv > 0;
        for (int i = 0; i < t->nv; i++) ok = ok && t->v[i]->kind == E_NAME;
    }
    if (!ok) return ct_errf(p->err, LT_ERR_FORMAT, line, "can't assign to this expression");
    *out = t;
    return 0;
}

/* `: %}` then the body up to one of ends; leaves the end name as the current token. */
static int parse_statements(parser_t *p, const char *const *ends, nvec_t *out) {
    int rc;
    if (is_op(cur(p), OP_COLON)) p->i++;
    if ((rc = p_expect_type(p, TK_BLOCK_END, "end of statement block"))) return rc;
    return parse_body(p, ends, out);
}

/* `(a, b=default)` for macros and call blocks. */
static int parse_signature(parser_t *p, node_t *e) {
    int rc;
    nvec_t defs = {0};
    int ids[64], n = 0;
    bool any_default = false;
    if ((rc = p_expect_op(p, OP_LPAREN, "'('"))) return rc;
    while (!is_op(cur(p), OP_RPAREN)) {
        if (n && (rc = p_expect_op(p, OP_COMMA, "','"))) return rc;
        const tok_t *t = cur(p);
        if (t->type != TK_NAME) return p_unexpected(p, "parameter name");
        if (n == (int)COUNT_OF(ids))
            return ct_errf(p->err, LT_ERR_RANGE, t->line, "too many parameters");
        if ((ids[n] = intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
        p->i++;
        node_t *d = NULL;
        if (is_op(cur(p), OP_ASSIGN)) {
            p->i++;
            if ((rc = parse_expression(p, true, &d))) return rc;
            any_default = true;
        } else if (any_default) {
            return ct_errf(p->err, LT_ERR_FORMAT, t->line,
                           "non-default argument follows default argument");
        }
        if ((rc = nv_push(p, &defs, d))) return rc;
        n++;
    }
    p->i++;
    e->kw = lt_arena_alloc(&p->tpl->arena, (size_t)(n ? n : 1) * sizeof *e->kw);
    if (!e->kw) return p_nomem(p);
    memcpy(e->kw, ids, (size_t)n * sizeof *ids);
    e->w = defs.v;
    e->nw = n;
    return 0;
}

/* MAC_* bits for the special names read anywhere under e. */
static int special_names(const node_t *e) {
    if (!e) return 0;
    int bits = 0;
    if (e->kind == E_NAME)
        bits = e->id == NM_CALLER    ? MAC_CALLER
               : e->id == NM_KWARGS  ? MAC_KWARGS
               : e->id == NM_VARARGS ? MAC_VARARGS
                                     : 0;
    bits |= special_names(e->a) | special_names(e->b) | special_names(e->c);
    for (int i = 0; i < e->nv; i++) bits |= special_names(e->v[i]);
    for (int i = 0; i < e->nw; i++) bits |= special_names(e->w[i]);
    return bits;
}

static int body_special_names(node_t *const *v, int n) {
    int bits = 0;
    for (int i = 0; i < n; i++) bits |= special_names(v[i]);
    return bits;
}

static int parse_for(parser_t *p, node_t **out) {
    static const char *const ends_body[] = {"endfor", "else", NULL};
    static const char *const ends_else[] = {"endfor", NULL};
    int line = cur(p)->line, rc;
    p->i++;
    node_t *e = p_node(p, S_FOR, line);
    if (!e) return p_nomem(p);
    if ((rc = parse_assign_target(p, "in", false, &e->a))) return rc;
    if (!is_name(cur(p), "in")) return p_unexpected(p, "'in'");
    p->i++;
    if ((rc = parse_tuple(p, false, false, "recursive", false, false, &e->b))) return rc;
    if (is_name(cur(p), "if")) {
        p->i++;
        if ((rc = parse_expression(p, true, &e->c))) return rc;
    }
    if (is_name(cur(p), "recursive"))
        return ct_errf(p->err, LT_ERR_UNSUPPORTED, cur(p)->line, "unsupported recursive loop");
    nvec_t body = {0}, els = {0};
    p->loops++;
    if ((rc = parse_statements(p, ends_body, &body))) return rc;
    p->loops--;
    if (is_name(cur(p), "else")) {
        p->i++;
        if ((rc = parse_statements(p, ends_else, &els))) return rc;
    }
    p->i++; /* endfor */
    e->v = body.v;
    e->nv = body.n;
    e->w = els.v;
    e->nw = els.n;
    *out = e;
    return 0;
}

static int parse_if(parser_t *p, node_t **out) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    static const char *const ends_else[] = {"endif", NULL};
    int rc;
    node_t *first = NULL, *last = NULL;
    for (;;) {
        node_t *e = p_node(p, S_IF, cur(p)->line);
        if (!e) return p_nomem(p);
        p->i++; /* if / elif */
        if ((rc = parse_tuple(p, false, false, NULL, false, false, &e->a))) return rc;
        nvec_t body = {0};
        if ((rc = parse_statements(p, ends, &body))) return rc;
        e->v = body.v;
        e->nv = body.n;
        if (last) {
            last->w = lt_arena_alloc(&p->tpl->arena, sizeof *last->w);
            if (!last->w) return p_nomem(p);
            last->w[0] = e;
            last->nw = 1;
        } else {
            first = e;
        }
        last = e;
        if (is_name(cur(p), "elif")) continue;
        if (is_name(cur(p), "else")) {
            p->i++;
            nvec_t els = {0};
            if ((rc = parse_statements(p, ends_else, &els))) return rc;
            last->w = els.v;
            last->nw = els.n;
        }
        p->i++; /* endif */
        break;
    }
    *out = first;
    return 0;
}

static int parse_set(parser_t *p, node_t **out) {
    static const char *const ends[] = {"endset", NULL};
    int line = cur(p)->line, rc;
    p->i++;
    node_t *target;
    if ((rc = parse_assign_target(p, NULL, true, &target))) return rc;
    node_t *e = NULL;
    if (is_op(cur(p), OP_ASSIGN)) {
        p->i++;
        if (!(e = p_node(p, S_SET, line))) return p_nomem(p);
        e->a = target;
        if ((rc = parse_tuple(p, false, true, NULL, false, false, &e->b))) return rc;
    } else {
        if (!(e = p_node(p, S_SETBLOCK, line))) return p_nomem(p);
        e->a = target;
        if ((rc = parse_filter(p, NULL, false, &e->c))) return rc;
        nvec_t body = {0};
        if ((rc = parse_statements(p, ends, &body))) return rc;
        p->i++;
        e->v = body.v;
        e->nv = body.n;
    }
    *out = e;
    return 0;
}

static int parse_macro(parser_t *p, node_t **out) {
    static const char *const ends[] = {"endmacro", NULL};
    int line = cur(p)->line, rc;
    p->i++;
    const tok_t *t = cur(p);
    if (t->type != TK_NAME) return p_unexpected(p, "macro name");
    p->i++;
    node_t *e = p_node(p, S_MACRO, line);
    if (!e) return p_nomem(p);
    if ((e->id = intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
    e->s = p->tpl->names[e->id].s;
    e->n = t->n;
    if ((rc = parse_signature(p, e))) return rc;
    int loops = p->loops;
    p->loops = 0;
    nvec_t body = {0};
    if ((rc = parse_statements(p, ends, &body))) return rc;
    p->loops = loops;
    p->i++;
    e->v = body.v;
    e->nv = body.n;
    e->op = (uint8_t)body_special_names(body.v, body.n);
    *out = e;
    return 0;
}

static int parse_call_block(parser_t *p, node_t **out) {
    static const char *const ends[] = {"endcall", NULL};
    int line = cur(p)->line, rc;
    p->i++;
    node_t *e = p_node(p, S_CALLBLOCK, line);
    if (!e) return p_nomem(p);
    e->s = "caller";
    e->n = 6;
    if (is_op(cur(p), OP_LPAREN)) {
        if ((rc = parse_signature(p, e))) return rc;
    }
    if ((rc = parse_expression(p, true, &e->a))) return rc;
    if (e->a->kind != E_CALL) return ct_errf(p->err, LT_ERR_FORMAT, line, "expected call");
    int loops = p->loops;
    p->loops = 0;
    nvec_t body = {0};
    if ((rc = parse_statements(p, ends, &body))) return rc;
    p->loops = loops;
    p->i++;
    e->v = body.v;
    e->nv = body.n;
    e->op = (uint8_t)body_special_names(body.v, body.n);
    *out = e;
    return 0;
}

static int parse_simple_block(parser_t *p, int kind, const char *end, node_t **out) {
    const char *ends[] = {end, NULL};
    int line = cur(p)->line, rc;
    p->i++;
    node_t *e = p_node(p, kind, line);
    if (!e) return p_nomem(p);
    if (kind == S_FILTERBLOCK && (rc = parse_filter(p, NULL, true, &e->c))) return rc;
    if (kind == S_WITH) {
        nvec_t vals = {0};
        int ids[64], n = 0;
        while (cur(p)->type != TK_BLOCK_END) {
            if (n && (rc = p_expect_op(p, OP_COMMA, "','"))) return rc;
            const tok_t *t = cur(p);
            if (t->type != TK_NAME) return p_unexpected(p, "name");
            if (n == (int)COUNT_OF(ids))
                return ct_errf(p->err, LT_ERR_RANGE, t->line, "too many names");
            if ((ids[n] = intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
            p->i++;
            if ((rc = p_expect_op(p, OP_ASSIGN, "'='"))) return rc;
            node_t *v;
            if ((rc = parse_expression(p, true, &v)) || (rc = nv_push(p, &vals, v))) return rc;
            n++;
        }
        e->kw = lt_arena_alloc(&p->tpl->arena, (size_t)(n ? n : 1) * sizeof *e->kw);
        if (!e->kw) return p_nomem(p);
        memcpy(e->kw, ids, (size_t)n * sizeof *ids);
        e->w = vals.v;
        e->nw = n;
    }
    nvec_t body = {0};
    if ((rc = parse_statements(p, ends, &body))) return rc;
    p->i++;
    e->v = body.v;
    e->nv = body.n;
    *out = e;
    return 0;
}

/* One {% tag %} after '{%'; appends its node(s) to out. The caller expects the closing '%}'. */
static int parse_statement(parser_t *p, nvec_t *out) {
    static const char *const unsupported[] = {"block",  "extends", "include",
                                              "import", "from",    "autoescape"};
    const tok_t *t = cur(p);
    node_t *e = NULL;
    int rc;
    if (t->type != TK_NAME) return p_unexpected(p, "tag name");
    if (is_name(t, "for"))
        rc = parse_for(p, &e);
    else if (is_name(t, "if"))
        rc = parse_if(p, &e);
    else if (is_name(t, "set"))
        rc = parse_set(p, &e);
    else if (is_name(t, "macro"))
        rc = parse_macro(p, &e);
    else if (is_name(t, "call"))
        rc = parse_call_block(p, &e);
    else if (is_name(t, "filter"))
        rc = parse_simple_block(p, S_FILTERBLOCK, "endfilter", &e);
    else if (is_name(t, "with"))
        rc = parse_simple_block(p, S_WITH, "endwith", &e);
    else if (is_name(t, "generation"))
        rc = parse_simple_block(p, S_GENERATION, "endgeneration", &e);
    else if (is_name(t, "break") || is_name(t, "continue")) {
        if (!p->loops)
            return ct_errf(p->err, LT_ERR_FORMAT, t->line, "'%.*s' outside of a loop", (int)t->n,
                           t->s);
        p->i++;
        e = p_node(p, t->s[0] == 'b' ? S_BREAK : S_CONTINUE, t->line);
        rc = e ? 0 : p_nomem(p);
    } else if (is_name(t, "print")) {
        p->i++;
        bool first = true;
        while (cur(p)->type != TK_BLOCK_END) {
            if (!first && (rc = p_expect_op(p, OP_COMMA, "','"))) return rc;
            first = false;
            node_t *x, *o = p_node(p, S_OUTPUT, cur(p)->line);
            if (!o) return p_nomem(p);
            if ((rc = parse_expression(p, true, &x))) return rc;
            o->a = x;
            if ((rc = nv_push(p, out, o))) return rc;
        }
        return 0;
    } else if (in_list(unsupported, COUNT_OF(unsupported), t->s, t->n)) {
        return ct_errf(p->err, LT_ERR_UNSUPPORTED, t->line, "unsupported tag '%.*s'", (int)t->n,
                       t->s);
    } else {
        return ct_errf(p->err, LT_ERR_FORMAT, t->line, "unknown tag '%.*s'", (int)t->n, t->s);
    }
    if (rc) return rc;
    return nv_push(p, out, e);
}

/* Statements and data until `{% end %}` for an end in ends (NULL: until the end of input). */
static int parse_body(parser_t *p, const char *const *ends, nvec_t *out) {
    int rc, line = cur(p)->line;
    if (++p->depth > CT_MAX_NEST)
        return ct_errf(p->err, LT_ERR_RANGE, line, "blocks nested too deeply");
    for (;;) {
        const tok_t *t = cur(p);
        if (t->type == TK_EOF) {
            if (ends) {
                char want[128];
                size_t k = 0;
                for (int i = 0; ends[i] && k < sizeof want - 24; i++)
                    k += (size_t)snprintf(want + k, sizeof want - k, "%s'%s'", i ? " or " : "",
                                          ends[i]);
                return ct_errf(p->err, LT_ERR_FORMAT, t->line,
                               "unexpected end of template, expected %s", want);
            }
            break;
        }
        if (t->type == TK_DATA) {
            node_t *e = p_node(p, S_DATA, t->line);
            if (!e) return p_nomem(p);
            e->s = t->s;
            e->n = t->n;
            p->i++;
            if ((rc = nv_push(p, out, e))) return rc;
        } else if (t->type == TK_VAR_BEGIN) {
            p->i++;
            node_t *e = p_node(p, S_OUTPUT, t->line);
            if (!e) return p_nomem(p);
            if ((rc = parse_tuple(p, false, true, NULL, false, false, &e->a))) return rc;
            if ((rc = p_expect_type(p, TK_VAR_END, "end of print statement"))) return rc;
            if ((rc = nv_push(p, out, e))) return rc;
        } else if (t->type == TK_BLOCK_BEGIN) {
            p->i++;
            if (ends)
                for (int i = 0; ends[i]; i++)
                    if (is_name(cur(p), ends[i])) {
                        p->depth--;
                        return 0;
                    }
            if ((rc = parse_statement(p, out))) return rc;
            if ((rc = p_expect_type(p, TK_BLOCK_END, "end of statement block"))) return rc;
        } else {
            return p_unexpected(p, NULL);
        }
    }
    p->depth--;
    return 0;
}

/* ---- render: state, errors, allocation ---- */

typedef struct scope scope_t;
struct scope {
    scope_t *parent; /* NULL: the template's top level (render_t.root) */
    int n, cap;
    int *ids;
    val_t *vals;
};

struct loopctx {
    int64_t i, n;       /* index0, length */
    const val_t *items; /* for previtem / nextitem */
    val_t last;         /* changed() */
    bool has_last;
};

enum { FN_MACRO, FN_CALLER, FN_GLOBAL, FN_METHOD };

struct fn {
    uint8_t kind;
    int id;             /* FN_GLOBAL: NM_*; FN_METHOD: index into k_methods */
    const node_t *node; /* FN_MACRO: S_MACRO; FN_CALLER: S_CALLBLOCK */
    scope_t *scope;     /* where it was defined */
    val_t self;         /* FN_METHOD */
};

/* Global functions are shared by every render: they hold no state. */
static const fn_t k_global_fns[NM__FIXED] = {
    [NM_RANGE] = {.kind = FN_GLOBAL, .id = NM_RANGE},
    [NM_NAMESPACE] = {.kind = FN_GLOBAL, .id = NM_NAMESPACE},
    [NM_RAISE] = {.kind = FN_GLOBAL, .id = NM_RAISE},
    [NM_STRFTIME] = {.kind = FN_GLOBAL, .id = NM_STRFTIME},
    [NM_DICT] = {.kind = FN_GLOBAL, .id = NM_DICT},
    [NM_CYCLER] = {.kind = FN_GLOBAL, .id = NM_CYCLER},
    [NM_JOINER] = {.kind = FN_GLOBAL, .id = NM_JOINER},
    [NM_LIPSUM] = {.kind = FN_GLOBAL, .id = NM_LIPSUM},
};

/* Control flow out of a statement list, besides 0 and negative errors. */
enum { SIG_BREAK = 1, SIG_CONTINUE = 2 };

typedef struct render {
    const fe_chat_template_t *t;
    const cJSON *ctx;
    lt_arena_t arena;
    lt_buf_t out; /* output; captured bodies are rendered at its end and cut off again */
    val_t *root;  /* top-level variables by name id; VK_MISSING: not looked up yet */
    scope_t *sc;  /* innermost scope; NULL: top level */
    uint64_t steps;
    int calls;
    bool raised; /* err holds a raise_exception() message as is */
    char *err;
} render_t;

static int r_err(render_t *r, int line, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int r_err(render_t *r, int line, int code, const char *fmt, ...) {
    char msg[LT_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ct_errf(r->err, code, line, "%s", msg);
}

static int r_nomem(render_t *r, int line) {
    if (r->arena.over)
        return r_err(r, line, LT_ERR_RANGE, "render uses more than %u MiB", CT_MAX_ARENA >> 20);
    return r_err(r, line, LT_ERR_NOMEM, "out of memory");
}

/* Out of the output buffer's limit or memory. */
static int r_outerr(render_t *r, int line, int rc) {
    if (rc == LT_ERR_RANGE)
        return r_err(r, line, LT_ERR_RANGE, "output longer than %u MiB", CT_MAX_OUTPUT >> 20);
    return r_err(r, line, LT_ERR_NOMEM, "out of memory");
}

static int r_step(render_t *r, int line, uint64_t k) {
    r->steps += k;
    if (r->steps > CT_MAX_STEPS)
        return r_err(r, line, LT_ERR_RANGE, "template runs more than %u loop iterations or calls",
                     CT_MAX_STEPS);
    return 0;
}

static void *r_alloc(render_t *r, size_t n) {
    return lt_arena_alloc(&r->arena, n);
}

static list_t *list_new(render_t *r, size_t cap) {
    if (cap > UINT32_MAX / 2) return NULL;
    list_t *l = r_alloc(r, sizeof *l);
    if (!l) return NULL;
    l->n = 0;
    l->err = NULL;
    l->cap = (uint32_t)(cap ? cap : 1);
    l->v = r_alloc(r, l->cap * sizeof *l->v);
    return l->v ? l : NULL;
}

static bool list_push(render_t *r, list_t *l, val_t v) {
    if (l->n == l->cap) {
        if (l->cap > UINT32_MAX / 4) return false;
        val_t *nv = r_alloc(r, (size_t)l->cap * 2 * sizeof *nv);
        if (!nv) return false;
        memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
    return true;
}

static val_t v_list(list_t *l, int flags) {
    return (val_t){.k = VK_LIST, .f = (uint8_t)flags, .u.l = l};
}

static bool v_isiter(const val_t *v) {
    return v->k == VK_LIST && (v->f & LF_ITER);
}

static dict_t *dict_new(render_t *r, size_t cap) {
    if (cap > UINT32_MAX / 2) return NULL;
    dict_t *d = r_alloc(r, sizeof *d);
    if (!d) return NULL;
    d->n = 0;
    d->cap = (uint32_t)(cap ? cap : 1);
    d->k = r_alloc(r, d->cap * sizeof *d->k);
    d->v = r_alloc(r, d->cap * sizeof *d->v);
    return d->k && d->v ? d : NULL;
}

/* A new string of n bytes to fill; NULL when out of memory. */
static char *str_new(render_t *r, size_t n, val_t *out) {
    if (n > CT_MAX_OUTPUT) {
        r->arena.over = true;
        return NULL;
    }
    char *s = r_alloc(r, n + 1);
    if (!s) return NULL;
    s[n] = 0;
    *out = v_str(s, n);
    return s;
}

static bool str_eq(const val_t *v, const char *s, size_t n) {
    return v->k == VK_STR && v->n == n && memcmp(v->u.s, s, n) == 0;
}

/* ---- render: equality and ordering (Python's == and <) ---- */

static bool v_eq(const val_t *a, const val_t *b, int depth);

static int dict_find(const dict_t *d, const val_t *key) {
    for (uint32_t i = 0; i < d->n; i++)
        if (v_eq(&d->k[i], key, 0)) return (int)i;
    return -1;
}

static int dict_find_str(const dict_t *d, const char *s, size_t n) {
    for (uint32_t i = 0; i < d->n; i++)
        if (str_eq(&d->k[i], s, n)) return (int)i;
    return -1;
}

/* Adds a key known to be absent. */
static bool dict_append(render_t *r, dict_t *d, val_t key, val_t v) {
    if (d->n == d->cap) {
        if (d->cap > UINT32_MAX / 4) return false;
        val_t *nk = r_alloc(r, (size_t)d->cap * 2 * sizeof *nk);
        val_t *nv = r_alloc(r, (size_t)d->cap * 2 * sizeof *nv);
        if (!nk || !nv) return false;
        memcpy(nk, d->k, d->n * sizeof *nk);
        memcpy(nv, d->v, d->n * sizeof *nv);
        d->k = nk;
        d->v = nv;
        d->cap *= 2;
    }
    d->k[d->n] = key;
    d->v[d->n++] = v;
    return true;
}

/* Sets key to v (a new key goes last, as in Python). */
static bool dict_set(render_t *r, dict_t *d, val_t key, val_t v) {
    int i = dict_find(d, &key);
    if (i >= 0) {
        d->v[i] = v;
        return true;
    }
    return dict_append(r, d, key, v);
}

static bool v_eq(const val_t *a, const val_t *b, int depth) {
    if (depth > CT_MAX_VAL_DEPTH) return false;
    if (v_isnum(a) && v_isnum(b)) {
        if (a->k == VK_FLOAT || b->k == VK_FLOAT) return v_asfloat(a) == v_asfloat(b);
        return v_asint(a) == v_asint(b);
    }
    if (a->k != b->k) return false;
    switch (a->k) {
    case VK_UNDEF:
    case VK_NONE: return true;
    case VK_STR: return a->n == b->n && memcmp(a->u.s, b->u.s, a->n) == 0;
    case VK_LIST:
        if ((a->f | b->f) & LF_ITER) return a->u.l == b->u.l;
        if (a->f != b->f || a->u.l->n != b->u.l->n) return false;
        for (uint32_t i = 0; i < a->u.l->n; i++)
            if (!v_eq(&a->u.l->v[i], &b->u.l->v[i], depth + 1)) return false;
        return true;
    case VK_DICT:
        if (a->u.m->n != b->u.m->n) return false;
        for (uint32_t i = 0; i < a->u.m->n; i++) {
            int j = dict_find(b->u.m, &a->u.m->k[i]);
            if (j < 0 || !v_eq(&a->u.m->v[i], &b->u.m->v[j], depth + 1)) return false;
        }
        return true;
    case VK_NS: return a->u.m == b->u.m;
    case VK_LOOP: return a->u.lp == b->u.lp;
    case VK_FN: return a->u.fn == b->u.fn;
    default: return false;
    }
}

/* Python's a < b, as -1/0/1 in *res; false when the types do not order (a TypeError). */
static bool v_cmp(const val_t *a, const val_t *b, int *res, int depth) {
    if (v_isnum(a) && v_isnum(b)) {
        if (a->k == VK_FLOAT || b->k == VK_FLOAT) {
            double x = v_asfloat(a), y = v_asfloat(b);
            *res = x < y ? -1 : x > y ? 1 : 0;
            if (x != x || y != y) *res = 2; /* NaN: every comparison false */
        } else {
            int64_t x = v_asint(a), y = v_asint(b);
            *res = x < y ? -1 : x > y;
        }
        return true;
    }
    if (a->k == VK_STR && b->k == VK_STR) { /* UTF-8 byte order is code point order */
        size_t n = a->n < b->n ? a->n : b->n;
        int c = memcmp(a->u.s, b->u.s, n);
        *res = c < 0 ? -1 : c > 0 ? 1 : a->n < b->n ? -1 : a->n > b->n;
        return true;
    }
    if (a->k == VK_LIST && b->k == VK_LIST && a->f == b->f && !(a->f & LF_ITER) &&
        depth < CT_MAX_VAL_DEPTH) {
        const list_t *x = a->u.l, *y = b->u.l;
        for (uint32_t i = 0; i < x->n && i < y->n; i++) {
            if (v_eq(&x->v[i], &y->v[i], depth + 1)) continue;
            return v_cmp(&x->v[i], &y->v[i], res, depth + 1);
        }
        *res = x->n < y->n ? -1 : x->n > y->n;
        return true;
    }
    return false;
}

/* ---- render: printing values (Python's str() and repr()) ---- */

/* repr(float): the shortest digits that read back the same, in Python's layout. */
static size_t fmt_float(double x, char *o) {
    if (x != x) return (size_t)sprintf(o, "nan");
    if (isinf(x)) return (size_t)sprintf(o, x < 0 ? "-inf" : "inf");
    if (x == 0) return (size_t)sprintf(o, signbit(x) ? "-0.0" : "0.0");
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, x);
        if (strtod(tmp, NULL) == x) break;
    }
    /* tmp: [-]d[.ddd]e[+-]xx */
    const char *s = tmp;
    size_t k = 0;
    if (*s == '-') o[k++] = *s++;
    char digits[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int exp10 = atoi(s + 1);
    int decpt = exp10 + 1;
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            o[k++] = '0';
            o[k++] = '.';
            for (int i = 0; i < -decpt; i++) o[k++] = '0';
            memcpy(o + k, digits, (size_t)nd);
            k += (size_t)nd;
        } else if (decpt >= nd) {
            memcpy(o + k, digits, (size_t)nd);
            k += (size_t)nd;
            for (int i = nd; i < decpt; i++) o[k++] = '0';
            o[k++] = '.';
            o[k++] = '0';
        } else {
            memcpy(o + k, digits, (size_t)decpt);
            k += (size_t)decpt;
            o[k++] = '.';
            memcpy(o + k, digits + decpt, (size_t)(nd - decpt));
            k += (size_t)(nd - decpt);
        }
    } else {
        o[k++] = digits[0];
        if (nd > 1) {
            o[k++] = '.';
            memcpy(o + k, digits + 1, (size_t)(nd - 1));
            k += (size_t)(nd - 1);
        }
        k += (size_t)sprintf(o + k, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
    o[k] = 0;
    return k;
}

/* Characters Python's repr() escapes: str.isprintable() is false for them. */
static bool uc_unprintable(uint32_t c) {
    return c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) ||
           (c >= 0x205f && c <= 0x206f) || c == 0x3000 || c == 0xfeff ||
           (c >= 0xfff9 && c <= 0xfffb) || (c >= 0xe000 && c <= 0xf8ff) ||
           (c >= 0xDC80 && c <= 0xDCFF);
}

static int repr_str(lt_buf_t *b, const char *s, size_t n) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    int rc = lt_buf_putc(b, q);
    for (size_t i = 0; i < n && !rc;) {
        size_t j = i;
        uint32_t c = u8_next(s, n, &j);
        if (c == (uint32_t)q || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = lt_buf_put(b, e, 2);
        } else if (c == '\n')
            rc = lt_buf_put(b, "\\n", 2);
        else if (c == '\r')
            rc = lt_buf_put(b, "\\r", 2);
        else if (c == '\t')
            rc = lt_buf_put(b, "\\t", 2);
        else if (uc_unprintable(c)) {
            if (c >= 0xDC80 && c <= 0xDCFF)
                rc = lt_buf_printf(b, "\\udc%02x", c & 0xFF);
            else if (c < 0x100)
                rc = lt_buf_printf(b, "\\x%02x", c);
            else
                rc = lt_buf_printf(b, "\\u%04x", c);
        } else
            rc = lt_buf_put(b, s + i, j - i);
        i = j;
    }
    return rc ? rc : lt_buf_putc(b, q);
}

static int v_write(render_t *r, lt_buf_t *b, const val_t *v, bool repr, int depth);

static int write_dict_body(render_t *r, lt_buf_t *b, const dict_t *d, int depth) {
    int rc = lt_buf_putc(b, '{');
    for (uint32_t i = 0; i < d->n && !rc; i++) {
        if (i) rc = lt_buf_put(b, ", ", 2);
        if (!rc) rc = v_write(r, b, &d->k[i], true, depth + 1);
        if (!rc) rc = lt_buf_put(b, ": ", 2);
        if (!rc) rc = v_write(r, b, &d->v[i], true, depth + 1);
    }
    return rc ? rc : lt_buf_putc(b, '}');
}

/* str(v) (repr false) or repr(v) into b. Returns an sbuf error code (LT_ERR_RANGE when the value
 * nests too deeply or the text grows past the output limit). */
static int v_write(render_t *r, lt_buf_t *b, const val_t *v, bool repr, int depth) {
    char tmp[64];
    if (depth > CT_MAX_VAL_DEPTH) return LT_ERR_RANGE;
    switch (v->k) {
    case VK_UNDEF: return repr ? lt_buf_puts(b, "Undefined") : 0;
    case VK_NONE: return lt_buf_puts(b, "None");
    case VK_BOOL: return lt_buf_puts(b, v->u.b ? "True" : "False");
    case VK_INT: return lt_buf_printf(b, "%lld", (long long)v->u.i);
    case VK_FLOAT: return lt_buf_put(b, tmp, fmt_float(v->u.d, tmp));
    case VK_STR:
        if (!repr) return lt_buf_put(b, v->u.s, v->n);
        if (v->f) { /* Markup('...') */
            int rc = lt_buf_puts(b, "Markup(");
            if (!rc) rc = repr_str(b, v->u.s, v->n);
            return rc ? rc : lt_buf_putc(b, ')');
        }
        return repr_str(b, v->u.s, v->n);
    case VK_LIST: {
        const list_t *l = v->u.l;
        bool tuple = v->f & LF_TUPLE;
        if (v->f & LF_ITER) return lt_buf_puts(b, "<generator object>");
        int rc = lt_buf_putc(b, tuple ? '(' : '[');
        for (uint32_t i = 0; i < l->n && !rc; i++) {
            if (i) rc = lt_buf_put(b, ", ", 2);
            if (!rc) rc = v_write(r, b, &l->v[i], true, depth + 1);
        }
        if (!rc && tuple && l->n == 1) rc = lt_buf_putc(b, ',');
        return rc ? rc : lt_buf_putc(b, tuple ? ')' : ']');
    }
    case VK_DICT: return write_dict_body(r, b, v->u.m, depth);
    case VK_NS: {
        int rc = lt_buf_puts(b, "<Namespace ");
        if (!rc) rc = write_dict_body(r, b, v->u.m, depth);
        return rc ? rc : lt_buf_putc(b, '>');
    }
    case VK_LOOP:
        return lt_buf_printf(b, "<LoopContext %lld/%lld>", (long long)v->u.lp->i + 1,
                             (long long)v->u.lp->n);
    case VK_FN:
        if (v->u.fn->kind == FN_MACRO)
            return lt_buf_printf(b, "<Macro '%.*s'>", (int)v->u.fn->node->n, v->u.fn->node->s);
        if (v->u.fn->kind == FN_CALLER) return lt_buf_puts(b, "<Macro 'caller'>");
        if (v->u.fn->kind == FN_GLOBAL)
            return lt_buf_printf(b, "<function %s>", k_fixed_names[v->u.fn->id]);
        return lt_buf_puts(b, "<built-in method>");
    default: return 0;
    }
}

/* str(v) as a string value: strings as they are, anything else printed into the arena. */
static int v_tostr(render_t *r, int line, const val_t *v, val_t *out) {
    if (v->k == VK_STR) {
        *out = *v;
        return 0;
    }
    if (v->k == VK_UNDEF) {
        *out = v_str("", 0);
        return 0;
    }
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    int rc = v_write(r, &b, v, false, 0);
    if (rc) {
        free(b.data);
        return r_outerr(r, line, rc);
    }
    char *s = str_new(r, b.len, out);
    if (s && b.len) memcpy(s, b.data, b.len);
    free(b.data);
    return s ? 0 : r_nomem(r, line);
}

/* ---- render: JSON (transformers' tojson: json.dumps with ensure_ascii=False) ---- */

typedef struct {
    const char *indent; /* NULL: single line */
    size_t indent_n;
    const char *item_sep, *key_sep;
    size_t item_sep_n, key_sep_n;
    bool sort_keys, ensure_ascii;
} json_opts_t;

static int json_str(lt_buf_t *b, const char *s, size_t n, bool ascii) {
    int rc = lt_buf_putc(b, '"');
    for (size_t i = 0; i < n && !rc;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            rc = lt_buf_put(b, "\\\"", 2);
        else if (c == '\\')
            rc = lt_buf_put(b, "\\\\", 2);
        else if (c == '\n')
            rc = lt_buf_put(b, "\\n", 2);
        else if (c == '\r')
            rc = lt_buf_put(b, "\\r", 2);
        else if (c == '\t')
            rc = lt_buf_put(b, "\\t", 2);
        else if (c == '\b')
            rc = lt_buf_put(b, "\\b", 2);
        else if (c == '\f')
            rc = lt_buf_put(b, "\\f", 2);
        else if (c < 0x20)
            rc = lt_buf_printf(b, "\\u%04x", c);
        else if (c < 0x80 || !ascii) {
            size_t j = i + 1;
            while (j < n && (unsigned char)s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' &&
                   (!ascii || (unsigned char)s[j] < 0x80))
                j++;
            rc = lt_buf_put(b, s + i, j - i);
            i = j;
            continue;
        } else {
            size_t j = i;
            uint32_t cp = u8_next(s, n, &j);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                rc = lt_buf_printf(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            } else {
                rc = lt_buf_printf(b, "\\u%04x", cp);
            }
            i = j;
            continue;
        }
        i++;
    }
    return rc ? rc : lt_buf_putc(b, '"');
}

static int json_newline(lt_buf_t *b, const json_opts_t *o, int level) {
    int rc = lt_buf_putc(b, '\n');
    for (int i = 0; i < level && !rc; i++) rc = lt_buf_put(b, o->indent, o->indent_n);
    return rc;
}

/* Writes v as JSON; *bad receives the first value that cannot be serialised. */
static int json_write(render_t *r, lt_buf_t *b, const val_t *v, const json_opts_t *o, int level,
                      const val_t **bad) {
    char tmp[64];
    int rc = 0;
    if (level > CT_MAX_VAL_DEPTH) return LT_ERR_RANGE;
    switch (v->k) {
    case VK_NONE: return lt_buf_puts(b, "null");
    case VK_BOOL: return lt_buf_puts(b, v->u.b ? "true" : "false");
    case VK_INT: return lt_buf_printf(b, "%lld", (long long)v->u.i);
    case VK_FLOAT:
        if (v->u.d != v->u.d) return lt_buf_puts(b, "NaN");
        if (isinf(v->u.d)) return lt_buf_puts(b, v->u.d < 0 ? "-Infinity" : "Infinity");
        return lt_buf_put(b, tmp, fmt_float(v->u.d, tmp));
    case VK_STR: return json_str(b, v->u.s, v->n, o->ensure_ascii);
    case VK_LIST: {
        const list_t *l = v->u.l;
        if (v->f & LF_ITER) {
            *bad = v;
            return LT_ERR_INVAL;
        }
        if (l->n == 0) return lt_buf_put(b, "[]", 2);
        rc = lt_buf_putc(b, '[');
        for (uint32_t i = 0; i < l->n && !rc; i++) {
            if (i) rc = lt_buf_put(b, o->item_sep, o->item_sep_n);
            if (!rc && o->indent) rc = json_newline(b, o, level + 1);
            if (!rc) rc = json_write(r, b, &l->v[i], o, level + 1, bad);
        }
        if (!rc && o->indent) rc = json_newline(b, o, level);
        return rc ? rc : lt_buf_putc(b, ']');
    }
    case VK_DICT: {
        const dict_t *d = v->u.m;
        if (d->n == 0) return lt_buf_put(b, "{}", 2);
        uint32_t *order = NULL;
        if (o->sort_keys && d->n > 1) { /* insertion sort: keys are few, and this is stable */
            order = r_alloc(r, d->n * sizeof *order);
            if (!order) return LT_ERR_NOMEM;
            for (uint32_t i = 0; i < d->n; i++) {
                uint32_t j = i;
                int c;
                while (j > 0 && v_cmp(&d->k[i], &d->k[order[j - 1]], &c, 0) && c < 0) {
                    order[j] = order[j - 1];
                    j--;
                }
                order[j] = i;
            }
        }
        rc = lt_buf_putc(b, '{');
        for (uint32_t i = 0; i < d->n && !rc; i++) {
            uint32_t k = order ? order[i] : i;
            const val_t *key = &d->k[k];
            if (i) rc = lt_buf_put(b, o->item_sep, o->item_sep_n);
            if (!rc && o->indent) rc = json_newline(b, o, level + 1);
            if (rc) break;
            if (key->k == VK_STR)
                rc = json_str(b, key->u.s, key->n, o->ensure_ascii);
            else if (key->k == VK_NONE)
                rc = lt_buf_puts(b, "\"null\"");
            else if (key->k == VK_BOOL)
                rc = lt_buf_puts(b, key->u.b ? "\"true\"" : "\"false\"");
            else if (key->k == VK_INT)
                rc = lt_buf_printf(b, "\"%lld\"", (long long)key->u.i);
            else if (key->k == VK_FLOAT) {
                size_t m = fmt_float(key->u.d, tmp);
                rc = lt_buf_putc(b, '"');
                if (!rc) rc = lt_buf_put(b, tmp, m);
                if (!rc) rc = lt_buf_putc(b, '"');
            } else {
                *bad = key;
                return LT_ERR_INVAL;
            }
            if (!rc) rc = lt_buf_put(b, o->key_sep, o->key_sep_n);
            if (!rc) rc = json_write(r, b, &d->v[k], o, level + 1, bad);
        }
        if (!rc && o->indent) rc = json_newline(b, o, level);
        return rc ? rc : lt_buf_putc(b, '}');
    }
    default: *bad = v; return LT_ERR_INVAL;
    }
}

/* ---- render: context values from cJSON ---- */

static int from_json(render_t *r, const cJSON *j, val_t *out, int depth) {
    if (depth > CT_MAX_VAL_DEPTH) return LT_ERR_RANGE;
    if (cJSON_IsNull(j) || cJSON_IsInvalid(j))
        *out = v_none();
    else if (cJSON_IsBool(j))
        *out = v_bool(cJSON_IsTrue(j));
    else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) <= 9007199254740992.0)
            *out = v_int((int64_t)d);
        else
            *out = v_float(d);
    } else if (cJSON_IsString(j) || cJSON_IsRaw(j)) {
        const char *s = j->valuestring ? j->valuestring : "";
        *out = v_str(s, strlen(s));
    } else if (cJSON_IsArray(j)) {
        list_t *l = list_new(r, (size_t)cJSON_GetArraySize(j));
        if (!l) return LT_ERR_NOMEM;
        for (const cJSON *c = j->child; c; c = c->next) {
            val_t v;
            int rc = from_json(r, c, &v, depth + 1);
            if (rc) return rc;
            if (!list_push(r, l, v)) return LT_ERR_NOMEM;
        }
        *out = v_list(l, 0);
    } else if (cJSON_IsObject(j)) {
        dict_t *d = dict_new(r, (size_t)cJSON_GetArraySize(j));
        if (!d) return LT_ERR_NOMEM;
        for (const cJSON *c = j->child; c; c = c->next) {
            val_t v;
            int rc = from_json(r, c, &v, depth + 1);
            if (rc) return rc;
            const char *k = c->string ? c->string : "";
            int i = dict_find_str(d, k, strlen(k)); /* a repeated key: the last one wins */
            if (i >= 0) {
                d->v[i] = v;
                continue;
            }
            if (!dict_append(r, d, v_str(k, strlen(k)), v)) return LT_ERR_NOMEM;
        }
        *out = (val_t){.k = VK_DICT, .u.m = d};
    } else {
        *out = v_none();
    }
    return 0;
}

/* ---- render: variables and scopes ---- */

static int lookup(render_t *r, int line, int id, val_t *out) {
    for (scope_t *s = r->sc; s; s = s->parent)
        for (int i = s->n - 1; i >= 0; i--)
            if (s->ids[i] == id) {
                *out = s->vals[i];
                return 0;
            }
    val_t *v = &r->root[id];
    if (v->k == VK_MISSING) {
        const name_t *nm = &r->t->names[id];
        const cJSON *j = r->ctx ? cJSON_GetObjectItemCaseSensitive(r->ctx, nm->s) : NULL;
        if (j) {
            int rc = from_json(r, j, v, 0);
            if (rc == LT_ERR_RANGE)
                return r_err(r, line, LT_ERR_RANGE, "context value '%s' nested too deeply", nm->s);
            if (rc) return r_nomem(r, line);
        } else if (id < NM__FIXED && k_global_fns[id].kind == FN_GLOBAL) {
            *v = (val_t){.k = VK_FN, .u.fn = &k_global_fns[id]};
        } else {
            *v = v_undef_hint(UH_NAME, 0, nm->s, nm->n);
        }
    }
    *out = *v;
    return 0;
}

static int scope_set(render_t *r, int line, int id, val_t v) {
    scope_t *s = r->sc;
    if (!s) {
        r->root[id] = v;
        return 0;
    }
    for (int i = 0; i < s->n; i++)
        if (s->ids[i] == id) {
            s->vals[i] = v;
            return 0;
        }
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 8;
        int *ids = r_alloc(r, (size_t)cap * sizeof *ids);
        val_t *vals = r_alloc(r, (size_t)cap * sizeof *vals);
        if (!ids || !vals) return r_nomem(r, line);
        if (s->n) {
            memcpy(ids, s->ids, (size_t)s->n * sizeof *ids);
            memcpy(vals, s->vals, (size_t)s->n * sizeof *vals);
        }
        s->ids = ids;
        s->vals = vals;
        s->cap = cap;
    }
    s->ids[s->n] = id;
    s->vals[s->n++] = v;
    return 0;
}

static scope_t *scope_push(render_t *r, scope_t *parent) {
    scope_t *s = r_alloc(r, sizeof *s);
    if (s) *s = (scope_t){.parent = parent};
    return s;
}

/* jinja2's object_type_repr: "None" or "<type> object". */
static const char *obj_type_repr(int k, char *buf, size_t n) {
    if (k == VK_NONE) return "None";
    snprintf(buf, n, "%s object", v_typename(k, 0));
    return buf;
}

/* jinja2's UndefinedError for a misused undefined value. */
static int undef_err(render_t *r, int line, const val_t *u) {
    char tn[32];
    switch (u->f) {
    case UH_NAME: return r_err(r, line, LT_ERR_INVAL, "'%.*s' is undefined", (int)u->n, u->u.s);
    case UH_ATTR:
        return r_err(r, line, LT_ERR_INVAL, "'%s' has no attribute '%.*s'",
                     obj_type_repr(u->t, tn, sizeof tn), (int)u->n, u->u.s);
    case UH_ITEM:
        return r_err(r, line, LT_ERR_INVAL, "%s has no element %.*s",
                     obj_type_repr(u->t, tn, sizeof tn), (int)u->n, u->u.s);
    case UH_UNSAFE:
        return r_err(r, line, LT_ERR_INVAL, "access to attribute '%.*s' of '%s' object is unsafe",
                     (int)u->n, u->u.s, v_typename(u->t, 0));
    case UH_MSG: return r_err(r, line, LT_ERR_INVAL, "%.*s", (int)u->n, u->u.s);
    default: return r_err(r, line, LT_ERR_INVAL, "undefined value");
    }
}

static int type_err(render_t *r, int line, const char *fmt, const val_t *a, const val_t *b) {
    return r_err(r, line, LT_ERR_INVAL, fmt, v_typename(a->k, a->f),
                 b ? v_typename(b->k, b->f) : "");
}

/* ---- render: attributes and items (jinja2's sandboxed getattr / getitem) ---- */

static int loop_attr(render_t *r, const loopctx_t *lp, const char *s, size_t n, val_t *out) {
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(s, lit, n) == 0)
    if (IS("index"))
        *out = v_int(lp->i + 1);
    else if (IS("index0"))
        *out = v_int(lp->i);
    else if (IS("revindex"))
        *out = v_int(lp->n - lp->i);
    else if (IS("revindex0"))
        *out = v_int(lp->n - lp->i - 1);
    else if (IS("first"))
        *out = v_bool(lp->i == 0);
    else if (IS("last"))
        *out = v_bool(lp->i == lp->n - 1);
    else if (IS("length"))
        *out = v_int(lp->n);
    else if (IS("depth"))
        *out = v_int(1);
    else if (IS("depth0"))
        *out = v_int(0);
    else if (IS("previtem"))
        *out = lp->i > 0 ? lp->items[lp->i - 1]
                         : v_undef_hint(UH_MSG, 0, "there is no previous item", 25);
    else if (IS("nextitem"))
        *out = lp->i + 1 < lp->n ? lp->items[lp->i + 1]
                                 : v_undef_hint(UH_MSG, 0, "there is no next item", 21);
    else
        *out = v_undef_hint(UH_ATTR, VK_LOOP, s, n);
#undef IS
    (void)r;
    return 0;
}

/* A bound method value (only made when a method is taken without being called). */
static int bound_method(render_t *r, int line, const val_t *obj, int m, val_t *out) {
    fn_t *f = r_alloc(r, sizeof *f);
    if (!f) return r_nomem(r, line);
    *f = (fn_t){.kind = FN_METHOD, .id = m, .self = *obj};
    *out = (val_t){.k = VK_FN, .u.fn = f};
    return 0;
}

/* obj.name: a Python attribute first (methods; namespace and loop attributes), then obj[name]. */
static int get_attr(render_t *r, int line, const val_t *obj, const char *s, size_t n, int m,
                    val_t *out) {
    bool unsafe;
    if (obj->k == VK_UNDEF) return undef_err(r, line, obj);
    if (method_of(obj, m, &unsafe)) {
        if (unsafe) {
            *out = v_undef_hint(UH_UNSAFE, obj->k, s, n);
            return 0;
        }
        return bound_method(r, line, obj, m, out);
    }
    if (obj->k == VK_DICT || obj->k == VK_NS) {
        int i = dict_find_str(obj->u.m, s, n);
        *out = i >= 0 ? obj->u.m->v[i] : v_undef_hint(UH_ATTR, obj->k, s, n);
        return 0;
    }
    if (obj->k == VK_LOOP) return loop_attr(r, obj->u.lp, s, n, out);
    *out = v_undef_hint(UH_ATTR, obj->k, s, n);
    return 0;
}

/* Python's index normalisation for a sequence of length n; false when out of range. */
static bool seq_index(int64_t i, size_t n, size_t *out) {
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return false;
    *out = (size_t)i;
    return true;
}

/* One code point of s as a string value pointing into s. */
static val_t str_char_at(const char *s, size_t n, size_t off) {
    size_t j = off;
    u8_next(s, n, &j);
    return v_str(s + off, j - off);
}

/* The undefined value of a failed obj[key] lookup, naming the key for the error message. */
static int undef_item(render_t *r, int line, int objkind, const val_t *key, val_t *out) {
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    int rc = v_write(r, &b, key, true, 0);
    size_t n = rc ? 0 : (b.len > 200 ? 200 : b.len);
    char *s = r_alloc(r, n + 1);
    if (s && n) memcpy(s, b.data, n);
    free(b.data);
    if (!s) return r_nomem(r, line);
    *out = v_undef_hint(UH_ITEM, objkind, s, n);
    return 0;
}

/* obj[key]: the item first, then (for a string key) the attribute. */
static int get_item(render_t *r, int line, const val_t *obj, const val_t *key, val_t *out) {
    if (obj->k == VK_UNDEF) return undef_err(r, line, obj);
    size_t idx;
    switch (obj->k) {
    case VK_DICT: {
        int i = dict_find(obj->u.m, key);
        if (i >= 0) {
            *out = obj->u.m->v[i];
            return 0;
        }
        break;
    }
    case VK_LIST:
        if (v_isiter(obj)) { /* generators are not subscriptable */
            *out = v_undef_hint(UH_NONE, obj->k, "", 0);
            return 0;
        }
        if (v_isint(key)) {
            if (!seq_index(v_asint(key), obj->u.l->n, &idx))
                return undef_item(r, line, obj->k, key, out);
            *out = obj->u.l->v[idx];
            return 0;
        }
        break;
    case VK_STR:
        if (v_isint(key)) {
            int64_t i = v_asint(key);
            bool ascii = true;
            for (uint32_t k = 0; k < obj->n && ascii; k++)
                ascii = (unsigned char)obj->u.s[k] < 0x80;
            size_t len = ascii ? obj->n : u8_count(obj->u.s, obj->n);
            if (!seq_index(i, len, &idx)) return undef_item(r, line, obj->k, key, out);
            size_t off = ascii ? idx : u8_offset(obj->u.s, obj->n, idx);
            *out = str_char_at(obj->u.s, obj->n, off);
            return 0;
        }
        break;
    default: break;
    }
    if (key->k == VK_STR) {
        val_t v;
        int rc = get_attr(r, line, obj, key->u.s, key->n, find_method(key->u.s, key->n), &v);
        *out = v;
        return rc;
    }
    return undef_item(r, line, obj->k, key, out);
}

/* Python's slice.indices(): start, stop, step for a sequence of length n. */
static int slice_indices(render_t *r, int line, const val_t *sv, size_t n, int64_t *start,
                         int64_t *stop, int64_t *step) {
    int64_t len = (int64_t)n;
    *step = 1;
    if (sv[2].k != VK_NONE) {
        if (!v_isint(&sv[2]))
            return r_err(r, line, LT_ERR_INVAL, "slice indices must be integers or None");
        *step = v_asint(&sv[2]);
        if (*step == 0) return r_err(r, line, LT_ERR_INVAL, "slice step cannot be zero");
    }
    for (int k = 0; k < 2; k++) {
        int64_t *dst = k == 0 ? start : stop;
        if (sv[k].k == VK_NONE) {
            *dst = (*step < 0) ? (k == 0 ? len - 1 : -1) : (k == 0 ? 0 : len);
            continue;
        }
        if (!v_isint(&sv[k]))
            return r_err(r, line, LT_ERR_INVAL, "slice indices must be integers or None");
        int64_t i = v_asint(&sv[k]);
        if (i < 0) {
            i += len;
            if (i < 0) i = *step < 0 ? -1 : 0;
        } else if (i >= len) {
            i = *step < 0 ? len - 1 : len;
        }
        *dst = i;
    }
    return 0;
}

static int get_slice(render_t *r, int line, const val_t *obj, const val_t *sv, val_t *out) {
    if (obj->k == VK_UNDEF) return undef_err(r, line, obj);
    if ((obj->k != VK_LIST && obj->k != VK_STR) || v_isiter(obj)) {
        *out = v_undef_hint(UH_NONE, obj->k, "", 0);
        return 0;
    }
    bool ascii = true;
    if (obj->k == VK_STR)
        for (uint32_t k = 0; k < obj->n && ascii; k++) ascii = (unsigned char)obj->u.s[k] < 0x80;
    size_t offs_n = obj->k == VK_LIST ? obj->u.l->n : ascii ? obj->n : u8_count(obj->u.s, obj->n);
    int64_t start = 0, stop = 0, step = 1;
    int rc = slice_indices(r, line, sv, offs_n, &start, &stop, &step);
    if (rc) return rc;
    int64_t cnt = 0;
    if (step > 0 && stop > start) cnt = (stop - start + step - 1) / step;
    if (step < 0 && start > stop) cnt = (start - stop + (-step) - 1) / (-step);
    if (obj->k == VK_LIST) {
        if (step == 1) { /* a view: lists are never changed in place */
            list_t *l = r_alloc(r, sizeof *l);
            if (!l) return r_nomem(r, line);
            *l = (list_t){.n = (uint32_t)cnt, .cap = (uint32_t)cnt, .v = obj->u.l->v + start};
            *out = v_list(l, obj->f);
            return 0;
        }
        list_t *l = list_new(r, (size_t)cnt);
        if (!l) return r_nomem(r, line);
        for (int64_t i = 0; i < cnt; i++) l->v[i] = obj->u.l->v[start + i * step];
        l->n = (uint32_t)cnt;
        *out = v_list(l, obj->f);
        return 0;
    }
    if (ascii && step == 1) {
        *out = v_str(obj->u.s + start, (size_t)cnt);
        return 0;
    }
    /* code point offsets, then copy the chosen ones */
    size_t *offs = r_alloc(r, (offs_n + 1) * sizeof *offs);
    if (!offs) return r_nomem(r, line);
    for (size_t i = 0, k = 0; k <= offs_n; k++) {
        offs[k] = i;
        if (i < obj->n) u8_next(obj->u.s, obj->n, &i);
    }
    char *o = str_new(r, obj->n, out);
    if (!o) return r_nomem(r, line);
    size_t m = 0;
    for (int64_t i = 0; i < cnt; i++) {
        int64_t c = start + i * step;
        size_t a = offs[c], b = offs[c + 1];
        memcpy(o + m, obj->u.s + a, b - a);
        m += b - a;
    }
    o[m] = 0;
    out->n = (uint32_t)m;
    return 0;
}

/* ---- render: iteration ---- */

/* The items `for` and the filters walk: a list's items, a dict's keys, a string's characters;
 * undefined is empty. Points into the value when it can. */
static int iter_items(render_t *r, int line, const val_t *v, const val_t **items, size_t *n) {
    switch (v->k) {
    case VK_UNDEF:
        *items = NULL;
        *n = 0;
        return 0;
    case VK_LIST:
        if (v->u.l->err) return r_err(r, line, LT_ERR_INVAL, "%s", v->u.l->err);
        *items = v->u.l->v;
        *n = v->u.l->n;
        return 0;
    case VK_DICT:
        *items = v->u.m->k;
        *n = v->u.m->n;
        return 0;
    case VK_STR: {
        size_t cnt = u8_count(v->u.s, v->n);
        val_t *o = r_alloc(r, (cnt ? cnt : 1) * sizeof *o);
        if (!o) return r_nomem(r, line);
        for (size_t i = 0, k = 0; i < v->n; k++) {
            size_t j = i;
            u8_next(v->u.s, v->n, &j);
            o[k] = v_str(v->u.s + i, j - i);
            i = j;
        }
        *items = o;
        *n = cnt;
        return 0;
    }
    default:
        return r_err(r, line, LT_ERR_INVAL, "'%s' object is not iterable", v_typename(v->k, v->f));
    }
}

static bool is_iterable(const val_t *v) {
    return v->k == VK_UNDEF || v->k == VK_LIST || v->k == VK_DICT || v->k == VK_STR;
}

/* What a generator filter returns for input it cannot iterate: jinja2 only fails when the
 * generator is consumed, so until then it is an (always true) iterator. */
static int deferred_iter(render_t *r, int line, const char *msg, const val_t *v, val_t *out) {
    list_t *l = list_new(r, 0);
    char *m = r_alloc(r, 128);
    if (!l || !m) return r_nomem(r, line);
    snprintf(m, 128, msg, v_typename(v->k, v->f));
    l->err = m;
    *out = v_list(l, LF_ITER);
    return 0;
}

/* A generator filter's per-item failure (a test or filter raising on one item) becomes a deferred
 * iterator too: jinja2 would only raise when the items are consumed. Other errors stay errors. */
static int defer_failure(render_t *r, int line, int rc, val_t *out) {
    if (rc != LT_ERR_INVAL || r->raised) return rc;
    const char *msg = strstr(r->err, ": ");
    msg = msg ? msg + 2 : r->err;
    char *m = r_alloc(r, strlen(msg) + 1);
    list_t *l = list_new(r, 0);
    if (!m || !l) return r_nomem(r, line);
    strcpy(m, msg);
    l->err = m;
    *out = v_list(l, LF_ITER);
    return 0;
}

/* ---- render: operators ---- */

static int str_percent(render_t *r, int line, const val_t *fmt, const val_t *arg, val_t *out);

static int html_escape(render_t *r, int line, const val_t *v, val_t *out);

static int arith(render_t *r, int line, int op, const val_t *a, const val_t *b, val_t *out) {
    if (a->k == VK_UNDEF) return undef_err(r, line, a);
    if (op == OP_MOD && a->k == VK_STR) return str_percent(r, line, a, b, out);
    if (b->k == VK_UNDEF) return undef_err(r, line, b);
    if (v_isnum(a) && v_isnum(b)) {
        bool fl = a->k == VK_FLOAT || b->k == VK_FLOAT;
        if (op == OP_DIV) fl = true;
        if (op == OP_POW && !fl && v_asint(b) < 0) fl = true;
        if (!fl) {
            int64_t x = v_asint(a), y = v_asint(b), z = 0;
            bool ovf = false;
            switch (op) {
            case OP_ADD: ovf = __builtin_add_overflow(x, y, &z); break;
            case OP_SUB: ovf = __builtin_sub_overflow(x, y, &z); break;
            case OP_MUL: ovf = __builtin_mul_overflow(x, y, &z); break;
            case OP_FLOORDIV:
            case OP_MOD:
                if (y == 0)
                    return r_err(r, line, LT_ERR_INVAL, "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) {
                    ovf = op == OP_FLOORDIV;
                    z = 0;
                    break;
                }
                z = op == OP_FLOORDIV ? x / y : x % y;
                if (op == OP_FLOORDIV && (x % y != 0) && ((x < 0) != (y < 0))) z--;
                if (op == OP_MOD && z != 0 && ((z < 0) != (y < 0))) z += y;
                break;
            case OP_POW:
                z = 1;
                for (int64_t e = y, base = x; e > 0 && !ovf; e >>= 1) {
                    if (e & 1) ovf = __builtin_mul_overflow(z, base, &z);
                    if (e > 1 && !ovf) ovf = __builtin_mul_overflow(base, base, &base);
                }
                break;
            }
            if (ovf) return r_err(r, line, LT_ERR_RANGE, "integer overflow");
            *out = v_int(z);
            return 0;
        }
        double x = v_asfloat(a), y = v_asfloat(b), z = 0;
        switch (op) {
        case OP_ADD: z = x + y; break;
        case OP_SUB: z = x - y; break;
        case OP_MUL: z = x * y; break;
        case OP_DIV:
            if (y == 0) return r_err(r, line, LT_ERR_INVAL, "division by zero");
            z = x / y;
            break;
        case OP_FLOORDIV:
        case OP_MOD: {
            if (y == 0) return r_err(r, line, LT_ERR_INVAL, "float modulo or division by zero");
            double mod = fmod(x, y), div = (x - mod) / y;
            if (mod != 0 && ((y < 0) != (mod < 0))) {
                mod += y;
                div -= 1.0;
            }
            if (mod == 0) mod = copysign(0.0, y);
            double fdiv = 0;
            if (div != 0) {
                fdiv = floor(div);
                if (div - fdiv > 0.5) fdiv += 1.0;
            } else {
                fdiv = copysign(0.0, x / y);
            }
            z = op == OP_MOD ? mod : fdiv;
            break;
        }
        case OP_POW:
            if (x == 0 && y < 0)
                return r_err(r, line, LT_ERR_INVAL, "0.0 cannot be raised to a negative power");
            if (x < 0 && y != floor(y))
                return r_err(r, line, LT_ERR_UNSUPPORTED, "unsupported complex result of **");
            z = pow(x, y);
            if (isinf(z) && isfinite(x) && isfinite(y))
                return r_err(r, line, LT_ERR_INVAL, "numerical result out of range");
            break;
        }
        *out = v_float(z);
        return 0;
    }
    if (op == OP_ADD && a->k == VK_STR && b->k == VK_STR) {
        val_t x = *a, y = *b;
        int rc = 0;
        if (a->f && !b->f) rc = html_escape(r, line, b, &y); /* Markup + str escapes the str */
        if (b->f && !a->f) rc = html_escape(r, line, a, &x);
        if (rc) return rc;
        char *s = str_new(r, (size_t)x.n + y.n, out);
        if (!s) return r_nomem(r, line);
        memcpy(s, x.u.s, x.n);
        memcpy(s + x.n, y.u.s, y.n);
        out->f = a->f | b->f;
        return 0;
    }
    if (op == OP_ADD && a->k == VK_LIST && b->k == VK_LIST && a->f == b->f && !v_isiter(a)) {
        list_t *l = list_new(r, (size_t)a->u.l->n + b->u.l->n);
        if (!l) return r_nomem(r, line);
        memcpy(l->v, a->u.l->v, a->u.l->n * sizeof *l->v);
        memcpy(l->v + a->u.l->n, b->u.l->v, b->u.l->n * sizeof *l->v);
        l->n = a->u.l->n + b->u.l->n;
        *out = v_list(l, a->f);
        return 0;
    }
    if (op == OP_MUL && !v_isiter(a) && !v_isiter(b) &&
        (((a->k == VK_STR || a->k == VK_LIST) && v_isint(b)) ||
         ((b->k == VK_STR || b->k == VK_LIST) && v_isint(a)))) {
        const val_t *seq = a->k == VK_STR || a->k == VK_LIST ? a : b;
        int64_t times = v_asint(seq == a ? b : a);
        if (times < 0) times = 0;
        size_t unit = seq->k == VK_STR ? seq->n : seq->u.l->n;
        if (unit && (uint64_t)times > CT_MAX_OUTPUT / unit)
            return r_err(r, line, LT_ERR_RANGE, "sequence repeated too many times");
        size_t total = unit * (size_t)times;
        if (seq->k == VK_STR) {
            char *s = str_new(r, total, out);
            if (!s) return r_nomem(r, line);
            for (int64_t i = 0; i < times; i++) memcpy(s + (size_t)i * unit, seq->u.s, unit);
        } else {
            list_t *l = list_new(r, total);
            if (!l) return r_nomem(r, line);
            for (int64_t i = 0; i < times; i++)
                memcpy(l->v + (size_t)i * unit, seq->u.l->v, unit * sizeof *l->v);
            l->n = (uint32_t)total;
            *out = v_list(l, seq->f);
        }
        return 0;
    }
    static const char *const sym[] = {
        [OP_ADD] = "+",       [OP_SUB] = "-", [OP_MUL] = "*",          [OP_DIV] = "/",
        [OP_FLOORDIV] = "//", [OP_MOD] = "%", [OP_POW] = "** or pow()"};
    return r_err(r, line, LT_ERR_INVAL, "unsupported operand type(s) for %s: '%s' and '%s'",
                 sym[op], v_typename(a->k, a->f), v_typename(b->k, b->f));
}

/* Python's printf-style `str % arg` for what templates use: %s %r %d %i %% and, with a mapping,
 * %(name)s. Anything else (widths, precisions, other conversions) is refused by name. */
static int str_percent(render_t *r, int line, const val_t *fmt, const val_t *arg, val_t *out) {
    const val_t *args = arg;
    size_t nargs = 1, used = 0;
    /* anything subscriptable but a tuple counts as a mapping: no "not all converted" error */
    bool mapping = arg->k == VK_DICT || arg->k == VK_UNDEF ||
                   (arg->k == VK_LIST && !(arg->f & (LF_TUPLE | LF_ITER)));
    if (arg->k == VK_LIST && (arg->f & LF_TUPLE)) {
        args = arg->u.l->v;
        nargs = arg->u.l->n;
    }
    const char *s = fmt->u.s;
    size_t n = fmt->n;
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    int rc = 0, brc = 0;
    for (size_t i = 0; i < n && !rc && !brc;) {
        if (s[i] != '%') {
            const char *p = memchr(s + i, '%', n - i);
            size_t j = p ? (size_t)(p - s) : n;
            brc = lt_buf_put(&b, s + i, j - i);
            i = j;
            continue;
        }
        if (++i >= n) {
            rc = r_err(r, line, LT_ERR_INVAL, "incomplete format");
            break;
        }
        if (s[i] == '%') {
            brc = lt_buf_putc(&b, '%');
            i++;
            continue;
        }
        const val_t *v;
        if (s[i] == '(') {
            const char *close = memchr(s + i, ')', n - i);
            if (arg->k != VK_DICT || !close) {
                rc = r_err(r, line, LT_ERR_INVAL, "format requires a mapping");
                break;
            }
            size_t j = (size_t)(close - s);
            int k = dict_find_str(arg->u.m, s + i + 1, j - i - 1);
            if (k < 0) {
                rc = r_err(r, line, LT_ERR_INVAL, "KeyError: '%.*s'", (int)(j - i - 1), s + i + 1);
                break;
            }
            v = &arg->u.m->v[k];
            i = j + 1;
        } else {
            if (used >= nargs) {
                rc = r_err(r, line, LT_ERR_INVAL, "not enough arguments for format string");
                break;
            }
            v = &args[used++];
        }
        char c = i < n ? s[i++] : 0;
        if (c == 's' || c == 'r') {
            brc = v_write(r, &b, v, c == 'r', 0);
        } else if ((c == 'd' || c == 'i') && v_isnum(v)) {
            if (v->k == VK_FLOAT && !isfinite(v->u.d))
                rc =
                    r_err(r, line, LT_ERR_INVAL, "cannot convert float infinity or NaN to integer");
            else
                brc = lt_buf_printf(&b, "%lld",
                                    (long long)(v->k == VK_FLOAT ? (int64_t)v->u.d : v_asint(v)));
        } else if (c == 'd' || c == 'i') {
            rc = type_err(r, line, "%%d format: a real number is required, not %s", v, NULL);
        } else {
            rc = r_err(r, line, LT_ERR_UNSUPPORTED, "unsupported format specification '%%%c'",
                       c ? c : ' ');
        }
    }
    if (!rc && !brc && !mapping && used < nargs)
        rc = r_err(r, line, LT_ERR_INVAL, "not all arguments converted during string formatting");
    if (!rc && brc) rc = r_outerr(r, line, brc);
    char *dst = rc ? NULL : str_new(r, b.len, out);
    if (dst && b.len) memcpy(dst, b.data, b.len);
    free(b.data);
    if (rc) return rc;
    return dst ? 0 : r_nomem(r, line);
}

/* `a in b` (Python's b.__contains__(a)); false for undefined b, like jinja2. */
static int contains(render_t *r, int line, const val_t *a, const val_t *b, bool *res) {
    switch (b->k) {
    case VK_UNDEF: *res = false; return 0;
    case VK_STR:
        if (a->k != VK_STR)
            return r_err(r, line, LT_ERR_INVAL,
                         "'in <string>' requires string as left operand, not %s",
                         v_typename(a->k, a->f));
        *res = a->n == 0 || (a->n <= b->n && memmem(b->u.s, b->n, a->u.s, a->n) != NULL);
        return 0;
    case VK_LIST:
        if (b->u.l->err) return r_err(r, line, LT_ERR_INVAL, "%s", b->u.l->err);
        *res = false;
        for (uint32_t i = 0; i < b->u.l->n && !*res; i++) *res = v_eq(a, &b->u.l->v[i], 0);
        return 0;
    case VK_DICT:
        if ((a->k == VK_LIST && !(a->f & (LF_TUPLE | LF_ITER))) || a->k == VK_DICT || a->k == VK_NS)
            return type_err(r, line, "unhashable type: '%s'", a, NULL);
        *res = dict_find(b->u.m, a) >= 0;
        return 0;
    default:
        return r_err(r, line, LT_ERR_INVAL, "argument of type '%s' is not iterable",
                     v_typename(b->k, b->f));
    }
}

static int compare(render_t *r, int line, int op, const val_t *a, const val_t *b, bool *res) {
    int c;
    switch (op) {
    case OP_EQ: *res = v_eq(a, b, 0); return 0;
    case OP_NE: *res = !v_eq(a, b, 0); return 0;
    case OP_IN: return contains(r, line, a, b, res);
    case OP_NOTIN: {
        int rc = contains(r, line, a, b, res);
        *res = !*res;
        return rc;
    }
    default: break;
    }
    if (a->k == VK_UNDEF) return undef_err(r, line, a);
    if (b->k == VK_UNDEF) return undef_err(r, line, b);
    if (!v_cmp(a, b, &c, 0)) {
        static const char *const sym[] = {
            [OP_LT] = "<", [OP_LE] = "<=", [OP_GT] = ">", [OP_GE] = ">="};
        return r_err(r, line, LT_ERR_INVAL, "'%s' not supported between instances of '%s' and '%s'",
                     sym[op], v_typename(a->k, a->f), v_typename(b->k, b->f));
    }
    if (c == 2)
        *res = false; /* NaN */
    else if (op == OP_LT)
        *res = c < 0;
    else if (op == OP_LE)
        *res = c <= 0;
    else if (op == OP_GT)
        *res = c > 0;
    else
        *res = c >= 0;
    return 0;
}

/* ---- render: Python string methods ---- */

static bool cp_in(uint32_t c, const val_t *chars) {
    if (!chars) return uc_isspace(c);
    for (size_t i = 0; i < chars->n;)
        if (u8_next(chars->u.s, chars->n, &i) == c) return true;
    return false;
}

/* str.strip / lstrip / rstrip: a slice of s. chars NULL: whitespace. */
static val_t str_strip(const val_t *s, const val_t *chars, bool left, bool right) {
    size_t a = 0, b = s->n;
    while (left && a < b) {
        size_t j = a;
        if (!cp_in(u8_next(s->u.s, b, &j), chars)) break;
        a = j;
    }
    while (right && b > a) {
        size_t j = b;
        if (!cp_in(u8_prev(s->u.s, a, &j), chars)) break;
        b = j;
    }
    return v_str(s->u.s + a, b - a);
}

enum { CASE_UPPER, CASE_LOWER, CASE_CAPITALIZE, CASE_TITLE, CASE_JTITLE };

/* upper(), lower(), capitalize(), title() and jinja2's title filter (words start after
 * whitespace or one of "-({[<"). No mapping here makes a character longer in UTF-8. */
static int str_case(render_t *r, int line, const val_t *s, int mode, val_t *out) {
    char *o = str_new(r, s->n, out);
    if (!o) return r_nomem(r, line);
    size_t k = 0;
    bool prev_cased = false, first = true;
    uint32_t prev = 0;
    for (size_t i = 0; i < s->n;) {
        uint32_t c = u8_next(s->u.s, s->n, &i);
        bool up;
        switch (mode) {
        case CASE_UPPER: up = true; break;
        case CASE_LOWER: up = false; break;
        case CASE_CAPITALIZE: up = first; break;
        case CASE_TITLE: up = !prev_cased; break;
        default:
            up = first || prev == '-' || prev == '(' || prev == '{' || prev == '[' || prev == '<' ||
                 uc_isspace(prev);
        }
        if (up && c == 0xDF) { /* ß has no single upper-case letter */
            o[k++] = 'S';
            o[k++] = mode == CASE_UPPER || mode == CASE_JTITLE ? 'S' : 's';
        } else if (!up && c == 0x3A3 && prev_cased) { /* Σ ends a word as ς */
            size_t j = i;
            bool next_cased = i < s->n && uc_cased(u8_next(s->u.s, s->n, &j));
            k += u8_put(next_cased ? 0x3C3 : 0x3C2, o + k);
        } else {
            k += u8_put(up ? uc_upper(c) : uc_lower(c), o + k);
        }
        prev_cased = uc_cased(c);
        prev = c;
        first = false;
    }
    o[k] = 0;
    out->n = (uint32_t)k;
    return 0;
}

static const char *memrmem(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn > hn) return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (memcmp(h + i, n, nn) == 0) return h + i;
    return NULL;
}

/* str.split / rsplit (sep NULL: runs of whitespace). */
static int str_split(render_t *r, int line, const val_t *s, const val_t *sep, int64_t maxsplit,
                     bool right, val_t *out) {
    list_t *l = list_new(r, 8);
    if (!l) return r_nomem(r, line);
    const char *p = s->u.s;
    size_t n = s->n;
    int64_t count = 0;
    if (sep && sep->n == 0) return r_err(r, line, LT_ERR_INVAL, "empty separator");
    if (!right) {
        size_t i = 0;
        for (;;) {
            if (!sep) {
                i = ws_span(p, n, i);
                if (i == n) break;
            }
            if (maxsplit >= 0 && count == maxsplit) {
                if (!list_push(r, l, v_str(p + i, n - i))) return r_nomem(r, line);
                break;
            }
            size_t j;
            if (sep) {
                const char *f = memmem(p + i, n - i, sep->u.s, sep->n);
                j = f ? (size_t)(f - p) : n;
            } else {
                j = i;
                while (j < n) {
                    size_t k = j;
                    if (uc_isspace(u8_next(p, n, &k))) break;
                    j = k;
                }
            }
            if (!list_push(r, l, v_str(p + i, j - i))) return r_nomem(r, line);
            count++;
            if (sep && j == n) break;
            i = sep ? j + sep->n : j;
        }
    } else {
        size_t e = n;
        for (;;) {
            if (!sep) {
                while (e > 0) {
                    size_t k = e;
                    if (!uc_isspace(u8_prev(p, 0, &k))) break;
                    e = k;
                }
                if (e == 0) break;
            }
            if (maxsplit >= 0 && count == maxsplit) {
                if (!list_push(r, l, v_str(p, e))) return r_nomem(r, line);
                break;
            }
            size_t b;
            if (sep) {
                const char *f = memrmem(p, e, sep->u.s, sep->n);
                b = f ? (size_t)(f - p) + sep->n : 0;
            } else {
                b = e;
                while (b > 0) {
                    size_t k = b;
                    if (uc_isspace(u8_prev(p, 0, &k))) break;
                    b = k;
                }
            }
            if (!list_push(r, l, v_str(p + b, e - b))) return r_nomem(r, line);
            count++;
            if (sep && b == 0) break;
            e = sep ? b - sep->n : b;
        }
        for (uint32_t i = 0; i < l->n / 2; i++) { /* collected right to left */
            val_t t = l->v[i];
            l->v[i] = l->v[l->n - 1 - i];
            l->v[l->n - 1 - i] = t;
        }
    }
    *out = v_list(l, 0);
    return 0;
}

static bool is_line_break(uint32_t c) {
    return c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d ||
           c == 0x1e || c == 0x85 || c == 0x2028 || c == 0x2029;
}

static int str_splitlines(render_t *r, int line, const val_t *s, val_t *out) {
    list_t *l = list_new(r, 8);
    if (!l) return r_nomem(r, line);
    size_t i = 0, start = 0;
    while (i < s->n) {
        size_t j = i;
        uint32_t c = u8_next(s->u.s, s->n, &j);
        if (is_line_break(c)) {
            if (!list_push(r, l, v_str(s->u.s + start, i - start))) return r_nomem(r, line);
            if (c == '\r' && j < s->n && s->u.s[j] == '\n') j++;
            start = j;
        }
        i = j;
    }
    if (start < s->n && !list_push(r, l, v_str(s->u.s + start, s->n - start)))
        return r_nomem(r, line);
    *out = v_list(l, 0);
    return 0;
}

static int str_replace(render_t *r, int line, const val_t *s, const val_t *old, const val_t *rep,
                       int64_t count, val_t *out) {
    size_t hits = 0;
    if (old->n == 0) {
        hits = u8_count(s->u.s, s->n) + 1;
    } else {
        for (const char *p = s->u.s, *e = s->u.s + s->n;
             (p = memmem(p, (size_t)(e - p), old->u.s, old->n)); p += old->n)
            hits++;
    }
    if (count >= 0 && (uint64_t)count < hits) hits = (size_t)count;
    if (hits == 0) {
        *out = *s;
        return 0;
    }
    uint64_t len = (uint64_t)s->n - (uint64_t)hits * old->n + (uint64_t)hits * rep->n;
    if (len > CT_MAX_OUTPUT) return r_err(r, line, LT_ERR_RANGE, "replace() result too long");
    char *o = str_new(r, (size_t)len, out);
    if (!o) return r_nomem(r, line);
    size_t k = 0, i = 0;
    for (size_t h = 0; h < hits; h++) {
        size_t at_;
        if (old->n == 0) {
            at_ = i;
        } else {
            const char *f = memmem(s->u.s + i, s->n - i, old->u.s, old->n);
            at_ = (size_t)(f - s->u.s);
        }
        memcpy(o + k, s->u.s + i, at_ - i);
        k += at_ - i;
        memcpy(o + k, rep->u.s, rep->n);
        k += rep->n;
        i = at_ + old->n;
        if (old->n == 0 && i < s->n) { /* copy one character before the next insertion */
            size_t j = i;
            u8_next(s->u.s, s->n, &j);
            memcpy(o + k, s->u.s + i, j - i);
            k += j - i;
            i = j;
        }
    }
    memcpy(o + k, s->u.s + i, s->n - i);
    return 0;
}

static int64_t str_find(const val_t *s, const val_t *sub, bool right) {
    const char *f = right ? memrmem(s->u.s, s->n, sub->u.s, sub->n)
                          : (sub->n == 0 ? s->u.s : memmem(s->u.s, s->n, sub->u.s, sub->n));
    if (!f) return -1;
    return (int64_t)u8_count(s->u.s, (size_t)(f - s->u.s));
}

static int64_t str_count(const val_t *s, const val_t *sub) {
    if (sub->n == 0) return (int64_t)u8_count(s->u.s, s->n) + 1;
    int64_t k = 0;
    for (const char *p = s->u.s, *e = s->u.s + s->n;
         (p = memmem(p, (size_t)(e - p), sub->u.s, sub->n)); p += sub->n)
        k++;
    return k;
}

/* str.isdigit() and friends: every character passes and there is at least one. */
static bool str_all(const val_t *s, bool (*pred)(uint32_t)) {
    if (s->n == 0) return false;
    for (size_t i = 0; i < s->n;)
        if (!pred(u8_next(s->u.s, s->n, &i))) return false;
    return true;
}
static bool uc_isalnum(uint32_t c) {
    return uc_isalpha(c) || uc_isdigit(c);
}

/* islower (want_lower) / isupper: some cased character and none of the other case. */
static bool str_iscase(const val_t *s, bool want_lower) {
    bool cased = false;
    for (size_t i = 0; i < s->n;) {
        uint32_t c = u8_next(s->u.s, s->n, &i);
        if (want_lower ? uc_isupper(c) : uc_islower(c)) return false;
        cased = cased || uc_cased(c);
    }
    return cased;
}

/* ---- render: calls and arguments ---- */

typedef struct {
    val_t *pos;
    int npos;
    const val_t *kwv;
    const int *kwid;
    int nkw;
} args_t;

static int eval(render_t *r, const node_t *e, val_t *out);

static int eval_args(render_t *r, const node_t *e, args_t *a) {
    *a = (args_t){.npos = e->nv, .nkw = e->nw, .kwid = e->kw};
    if (e->nv + e->nw == 0) return 0;
    val_t *v = r_alloc(r, (size_t)(e->nv + e->nw) * sizeof *v);
    if (!v) return r_nomem(r, e->line);
    for (int i = 0; i < e->nv; i++) {
        int rc = eval(r, e->v[i], &v[i]);
        if (rc) return rc;
    }
    for (int i = 0; i < e->nw; i++) {
        int rc = eval(r, e->w[i], &v[e->nv + i]);
        if (rc) return rc;
    }
    a->pos = v;
    a->kwv = v + e->nv;
    return 0;
}

/* Binds arguments to named parameters; unbound slots are VK_MISSING. */
static int bind(render_t *r, int line, const char *what, const char *const *params, int np,
                const args_t *a, val_t *slots) {
    for (int i = 0; i < np; i++) slots[i].k = VK_MISSING;
    if (a->npos > np)
        return r_err(r, line, LT_ERR_INVAL, "%s takes at most %d argument(s) (%d given)", what, np,
                     a->npos);
    for (int i = 0; i < a->npos; i++) slots[i] = a->pos[i];
    for (int k = 0; k < a->nkw; k++) {
        const char *name = r->t->names[a->kwid[k]].s;
        int i;
        for (i = 0; i < np; i++)
            if (params[i] && strcmp(params[i], name) == 0) break;
        if (i == np)
            return r_err(r, line, LT_ERR_INVAL, "%s got an unexpected keyword argument '%s'", what,
                         name);
        if (slots[i].k != VK_MISSING)
            return r_err(r, line, LT_ERR_INVAL, "%s got multiple values for argument '%s'", what,
                         name);
        slots[i] = a->kwv[k];
    }
    return 0;
}

static int arg_int(render_t *r, int line, const val_t *v, int64_t dflt, const char *what,
                   int64_t *out) {
    if (v->k == VK_MISSING || v->k == VK_NONE)
        *out = dflt;
    else if (v_isint(v))
        *out = v_asint(v);
    else
        return r_err(r, line, LT_ERR_INVAL, "%s: expected an integer, got '%s'", what,
                     v_typename(v->k, v->f));
    return 0;
}

static bool arg_bool(const val_t *v, bool dflt) {
    return v->k == VK_MISSING ? dflt : v_truthy(v);
}

static int need_str(render_t *r, int line, const val_t *v, const char *what) {
    if (v->k == VK_STR) return 0;
    return r_err(r, line, LT_ERR_INVAL, "%s: expected a string, got '%s'", what,
                 v_typename(v->k, v->f));
}

/* make_attrgetter: item["a"]["b"] for "a.b" (digit parts index lists). */
static int attr_path(render_t *r, int line, const val_t *item, const val_t *attr, val_t *out) {
    if (attr->k != VK_STR) return get_item(r, line, item, attr, out);
    val_t cur = *item;
    const char *s = attr->u.s;
    size_t n = attr->n;
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && s[j] != '.') j++;
        bool digits = j > i;
        int64_t num = 0;
        for (size_t k = i; k < j && digits; k++) {
            digits = is_digit(s[k]);
            num = num * 10 + (s[k] - '0');
        }
        val_t key = digits ? v_int(num) : v_str(s + i, j - i), next;
        int rc = get_item(r, line, &cur, &key, &next);
        if (rc) return rc;
        cur = next;
        i = j + 1;
    }
    *out = cur;
    return 0;
}

/* Lower-cases strings for the case-insensitive filters (sort, unique, min, max, dictsort). */
static int fold_case(render_t *r, int line, const val_t *v, bool case_sensitive, val_t *out) {
    if (case_sensitive || v->k != VK_STR) {
        *out = *v;
        return 0;
    }
    return str_case(r, line, v, CASE_LOWER, out);
}

/* Stable merge sort of order[] by keys[]; false on incomparable keys (error set). */
static int sort_order(render_t *r, int line, const val_t *keys, uint32_t *order, size_t n,
                      bool reverse) {
    uint32_t *tmp = r_alloc(r, (n ? n : 1) * sizeof *tmp);
    if (!tmp) return r_nomem(r, line);
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int c;
                if (!v_cmp(&keys[order[j]], &keys[order[i]], &c, 0))
                    return r_err(r, line, LT_ERR_INVAL,
                                 "'<' not supported between instances of '%s' and '%s'",
                                 v_typename(keys[order[j]].k, keys[order[j]].f),
                                 v_typename(keys[order[i]].k, keys[order[i]].f));
                bool take_right = reverse ? c == 1 : c == -1;
                tmp[k++] = take_right ? order[j++] : order[i++];
            }
            while (i < mid) tmp[k++] = order[i++];
            while (j < hi) tmp[k++] = order[j++];
        }
        memcpy(order, tmp, n * sizeof *order);
    }
    return 0;
}

/* ---- render: tests ---- */

/* A test gets its operand v and its one argument (VK_MISSING for the tests that take none). */
typedef int (*test_fn)(render_t *r, int line, const val_t *v, const val_t *arg, bool *res);

static int test_boolean(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_BOOL;
    return 0;
}

static int test_callable(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_FN || v->k == VK_UNDEF;
    return 0;
}

static int test_defined(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k != VK_UNDEF;
    return 0;
}

static int test_undefined(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_UNDEF;
    return 0;
}

static int test_none(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_NONE;
    return 0;
}

static int test_false(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_BOOL && !v->u.b;
    return 0;
}

static int test_true(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_BOOL && v->u.b;
    return 0;
}

static int test_integer(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_INT;
    return 0;
}

static int test_float(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_FLOAT;
    return 0;
}

static int test_number(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v_isnum(v);
    return 0;
}

static int test_string(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_STR;
    return 0;
}

static int test_mapping(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_DICT;
    return 0;
}

static int test_iterable(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res =
        v->k == VK_STR || v->k == VK_LIST || v->k == VK_DICT || v->k == VK_UNDEF || v->k == VK_LOOP;
    return 0;
}

static int test_sequence(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res =
        v->k == VK_STR || (v->k == VK_LIST && !v_isiter(v)) || v->k == VK_DICT || v->k == VK_UNDEF;
    return 0;
}

static int test_escaped(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = false;
    return 0;
}

static int test_lower(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    val_t s;
    int rc = v_tostr(r, line, v, &s);
    if (!rc) *res = str_iscase(&s, true);
    return rc;
}

static int test_upper(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    val_t s;
    int rc = v_tostr(r, line, v, &s);
    if (!rc) *res = str_iscase(&s, false);
    return rc;
}

/* v % d == want, as Python computes it (so floats and bools work, and 0 is an error). */
static int mod_is(render_t *r, int line, const val_t *v, val_t d, double want, bool *res) {
    val_t m;
    int rc = arith(r, line, OP_MOD, v, &d, &m);
    if (!rc) *res = v_asfloat(&m) == want;
    return rc;
}

static int test_even(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return mod_is(r, line, v, v_int(2), 0.0, res);
}

static int test_odd(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return mod_is(r, line, v, v_int(2), 1.0, res);
}

static int test_divisibleby(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return mod_is(r, line, v, *arg, 0.0, res);
}

/* Python's `is`: identity, as far as values here have one (small ints are cached). */
static int test_sameas(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    const val_t *o = arg;
    if (v->k != o->k)
        *res = false;
    else if (v->k == VK_NONE || v->k == VK_UNDEF)
        *res = true;
    else if (v->k == VK_BOOL)
        *res = v->u.b == o->u.b;
    else if (v->k == VK_INT)
        *res = v->u.i == o->u.i && v->u.i >= -5 && v->u.i <= 256;
    else if (v->k == VK_STR)
        *res = v->u.s == o->u.s && v->n == o->n;
    else
        *res = v->u.l == o->u.l;
    return 0;
}

static int test_in(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return contains(r, line, v, arg, res);
}

static int test_eq(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return compare(r, line, OP_EQ, v, arg, res);
}

static int test_ne(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return compare(r, line, OP_NE, v, arg, res);
}

static int test_lt(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return compare(r, line, OP_LT, v, arg, res);
}

static int test_le(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return compare(r, line, OP_LE, v, arg, res);
}

static int test_gt(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return compare(r, line, OP_GT, v, arg, res);
}

static int test_ge(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return compare(r, line, OP_GE, v, arg, res);
}

/* jinja2's tests, by name; aliases share a function. */
static const struct {
    const char *name;
    test_fn fn;
    const char *param; /* the one argument's name, or NULL */
} k_tests[] = {
    {"boolean", test_boolean, NULL},
    {"callable", test_callable, NULL},
    {"defined", test_defined, NULL},
    {"divisibleby", test_divisibleby, "num"},
    {"eq", test_eq, "b"},
    {"equalto", test_eq, "b"},
    {"==", test_eq, "b"},
    {"escaped", test_escaped, NULL},
    {"even", test_even, NULL},
    {"false", test_false, NULL},
    {"float", test_float, NULL},
    {"ge", test_ge, "b"},
    {">=", test_ge, "b"},
    {"gt", test_gt, "b"},
    {">", test_gt, "b"},
    {"greaterthan", test_gt, "b"},
    {"in", test_in, "seq"},
    {"integer", test_integer, NULL},
    {"iterable", test_iterable, NULL},
    {"le", test_le, "b"},
    {"<=", test_le, "b"},
    {"lower", test_lower, NULL},
    {"lt", test_lt, "b"},
    {"<", test_lt, "b"},
    {"lessthan", test_lt, "b"},
    {"mapping", test_mapping, NULL},
    {"ne", test_ne, "b"},
    {"!=", test_ne, "b"},
    {"none", test_none, NULL},
    {"number", test_number, NULL},
    {"odd", test_odd, NULL},
    {"sameas", test_sameas, "other"},
    {"sequence", test_sequence, NULL},
    {"string", test_string, NULL},
    {"true", test_true, NULL},
    {"undefined", test_undefined, NULL},
    {"upper", test_upper, NULL},
};

static int find_test(const char *s, size_t len) {
    for (size_t i = 0; i < COUNT_OF(k_tests); i++)
        if (strlen(k_tests[i].name) == len && memcmp(k_tests[i].name, s, len) == 0) return (int)i;
    return -1;
}

/* The test a string value names (select, reject...), or -1. */
static int find_test_by_name(const val_t *name) {
    return name->k == VK_STR ? find_test(name->u.s, name->n) : -1;
}

/* Applies test number idx (from find_test) to v. */
static int apply_test(render_t *r, int line, int idx, const val_t *v, const args_t *a, bool *res) {
    /* messages name a test after the first row with its function: `==` reports as 'eq' */
    const char *name = k_tests[idx].name;
    for (size_t i = 0; i < COUNT_OF(k_tests); i++)
        if (k_tests[i].fn == k_tests[idx].fn) {
            name = k_tests[i].name;
            break;
        }
    val_t arg = {.k = VK_MISSING};
    int np = k_tests[idx].param ? 1 : 0, rc;
    char what[48];
    snprintf(what, sizeof what, "test '%s'", name);
    if ((rc = bind(r, line, what, &k_tests[idx].param, np, a, &arg))) return rc;
    if (np && arg.k == VK_MISSING)
        return r_err(r, line, LT_ERR_INVAL, "%s needs an argument", what);
    return k_tests[idx].fn(r, line, v, &arg, res);
}

/* ---- render: filters ---- */

/* markupsafe's escape(): a Markup string. */
static int html_escape(render_t *r, int line, const val_t *v, val_t *out) {
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    int rc = 0;
    for (uint32_t i = 0; i < v->n && !rc; i++) {
        char c = v->u.s[i];
        rc = c == '&'    ? lt_buf_puts(&b, "&amp;")
             : c == '<'  ? lt_buf_puts(&b, "&lt;")
             : c == '>'  ? lt_buf_puts(&b, "&gt;")
             : c == '"'  ? lt_buf_puts(&b, "&#34;")
             : c == '\'' ? lt_buf_puts(&b, "&#39;")
                         : lt_buf_putc(&b, c);
    }
    char *dst = rc ? NULL : str_new(r, b.len, out);
    if (dst && b.len) memcpy(dst, b.data, b.len);
    free(b.data);
    if (rc) return r_outerr(r, line, rc);
    if (!dst) return r_nomem(r, line);
    out->f = 1;
    return 0;
}

/* A filter gets its operand v and the call's arguments as they came (a); unless its row is
 * variadic, they are also bound to the row's parameters in sl (unbound slots VK_MISSING). */
typedef int (*filter_fn)(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out);

static int apply_filter(render_t *r, int line, int idx, const val_t *v, const args_t *a,
                        val_t *out);

/* select / reject / selectattr / rejectattr. */
static int select_items(render_t *r, int line, const val_t *v, const args_t *a, bool attr,
                        bool keep, val_t *out) {
    if (a->nkw)
        return r_err(r, line, LT_ERR_UNSUPPORTED, "unsupported keyword argument to select filters");
    int off = attr ? 1 : 0, test = -1, rc;
    if (attr && a->npos < 1)
        return r_err(r, line, LT_ERR_INVAL, "selectattr/rejectattr need an attribute name");
    if (a->npos > off) {
        test = find_test_by_name(&a->pos[off]);
        if (test < 0) {
            val_t nm;
            if ((rc = v_tostr(r, line, &a->pos[off], &nm))) return rc;
            return r_err(r, line, LT_ERR_INVAL, "no test named '%.*s'", (int)nm.n, nm.u.s);
        }
    }
    args_t targs = {.pos = a->npos > off + 1 ? a->pos + off + 1 : NULL,
                    .npos = a->npos > off + 1 ? a->npos - off - 1 : 0};
    if (!is_iterable(v)) return deferred_iter(r, line, "'%s' object is not iterable", v, out);
    const val_t *items;
    size_t n;
    if ((rc = iter_items(r, line, v, &items, &n)) || (rc = r_step(r, line, n))) return rc;
    list_t *l = list_new(r, n);
    if (!l) return r_nomem(r, line);
    for (size_t i = 0; i < n; i++) {
        val_t x = items[i];
        if (attr && (rc = attr_path(r, line, &items[i], &a->pos[0], &x)))
            return defer_failure(r, line, rc, out);
        bool ok;
        if (test < 0)
            ok = v_truthy(&x);
        else if ((rc = apply_test(r, line, test, &x, &targs, &ok)))
            return defer_failure(r, line, rc, out);
        if (ok == keep) l->v[l->n++] = items[i];
    }
    *out = v_list(l, LF_ITER);
    return 0;
}

static int filter_select(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    return select_items(r, line, v, a, false, true, out);
}

static int filter_reject(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    return select_items(r, line, v, a, false, false, out);
}

static int filter_selectattr(render_t *r, int line, const val_t *v, const args_t *a,
                             const val_t *sl, val_t *out) {
    return select_items(r, line, v, a, true, true, out);
}

static int filter_rejectattr(render_t *r, int line, const val_t *v, const args_t *a,
                             const val_t *sl, val_t *out) {
    return select_items(r, line, v, a, true, false, out);
}

static int filter_map(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                      val_t *out) {
    int rc;
    const val_t *attr = NULL, *dflt = NULL;
    int filt = -1;
    args_t fargs = {0};
    if (a->npos == 0) {
        for (int k = 0; k < a->nkw; k++) {
            const char *nm = r->t->names[a->kwid[k]].s;
            if (strcmp(nm, "attribute") == 0)
                attr = &a->kwv[k];
            else if (strcmp(nm, "default") == 0)
                dflt = &a->kwv[k];
            else
                return r_err(r, line, LT_ERR_INVAL, "unexpected keyword argument '%s'", nm);
        }
        if (!attr) return r_err(r, line, LT_ERR_INVAL, "map requires a filter argument");
    } else {
        if (a->pos[0].k != VK_STR || (filt = find_filter(a->pos[0].u.s, a->pos[0].n)) < 0)
            return r_err(r, line, LT_ERR_INVAL, "map: no filter named '%.*s'",
                         a->pos[0].k == VK_STR ? (int)a->pos[0].n : 1,
                         a->pos[0].k == VK_STR ? a->pos[0].u.s : "?");
        fargs = (args_t){
            .pos = a->pos + 1, .npos = a->npos - 1, .kwv = a->kwv, .kwid = a->kwid, .nkw = a->nkw};
    }
    if (!is_iterable(v)) return deferred_iter(r, line, "'%s' object is not iterable", v, out);
    const val_t *items;
    size_t n;
    if ((rc = iter_items(r, line, v, &items, &n)) || (rc = r_step(r, line, n))) return rc;
    list_t *l = list_new(r, n);
    if (!l) return r_nomem(r, line);
    for (size_t i = 0; i < n; i++) {
        val_t x;
        if (attr) {
            if ((rc = attr_path(r, line, &items[i], attr, &x)))
                return defer_failure(r, line, rc, out);
            if (x.k == VK_UNDEF && dflt) x = *dflt;
        } else if ((rc = apply_filter(r, line, filt, &items[i], &fargs, &x))) {
            return defer_failure(r, line, rc, out);
        }
        l->v[l->n++] = x;
    }
    *out = v_list(l, LF_ITER);
    return 0;
}

/* Python's int(str) (base 10): optional sign, digits with single underscores, spaces around. */
static bool parse_int_str(const val_t *s, int64_t *out) {
    val_t t = str_strip(s, NULL, true, true);
    const char *p = t.u.s;
    size_t n = t.n, i = 0;
    bool neg = false;
    if (i < n && (p[i] == '+' || p[i] == '-')) neg = p[i++] == '-';
    if (i >= n || !is_digit(p[i])) return false;
    uint64_t acc = 0;
    for (; i < n; i++) {
        if (p[i] == '_' && i + 1 < n && is_digit(p[i + 1]) && is_digit(p[i - 1])) continue;
        if (!is_digit(p[i])) return false;
        if (acc > (uint64_t)INT64_MAX / 10) return false;
        acc = acc * 10 + (uint64_t)(p[i] - '0');
    }
    if (acc > (uint64_t)INT64_MAX) return false;
    *out = neg ? -(int64_t)acc : (int64_t)acc;
    return true;
}

/* Python's float(str). */
static bool parse_float_str(const val_t *s, double *out) {
    val_t t = str_strip(s, NULL, true, true);
    if (t.n == 0 || t.n > 100) return false;
    char buf[128];
    size_t k = 0;
    for (size_t i = 0; i < t.n; i++) {
        char c = t.u.s[i];
        if (c == '_' && i > 0 && i + 1 < t.n && is_digit(t.u.s[i - 1]) && is_digit(t.u.s[i + 1]))
            continue;
        if (c == 'x' || c == 'X' || c == 'p' || c == 'P') return false; /* no hex floats */
        buf[k++] = c;
    }
    buf[k] = 0;
    char *end;
    *out = strtod(buf, &end);
    return end == buf + k && k > 0;
}

static int filter_tojson(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    json_opts_t o = {.item_sep = ", ", .item_sep_n = 2, .key_sep = ": ", .key_sep_n = 2};
    o.ensure_ascii = arg_bool(&sl[0], false);
    o.sort_keys = arg_bool(&sl[3], false);
    const val_t *ind = &sl[1];
    if (ind->k != VK_MISSING && ind->k != VK_NONE) {
        if (ind->k == VK_STR) {
            o.indent = ind->u.s;
            o.indent_n = ind->n;
        } else if (v_isint(ind)) {
            int64_t w = v_asint(ind);
            if (w > 64) w = 64;
            o.indent = "                                                                ";
            o.indent_n = w > 0 ? (size_t)w : 0;
        } else {
            return r_err(r, line, LT_ERR_INVAL, "tojson: indent must be an integer or a string");
        }
        o.item_sep = ",";
        o.item_sep_n = 1;
    }
    const val_t *sep = &sl[2];
    if (sep->k != VK_MISSING && sep->k != VK_NONE) {
        if (sep->k != VK_LIST || sep->u.l->n != 2 || sep->u.l->v[0].k != VK_STR ||
            sep->u.l->v[1].k != VK_STR)
            return r_err(r, line, LT_ERR_INVAL, "tojson: separators must be a pair of strings");
        o.item_sep = sep->u.l->v[0].u.s;
        o.item_sep_n = sep->u.l->v[0].n;
        o.key_sep = sep->u.l->v[1].u.s;
        o.key_sep_n = sep->u.l->v[1].n;
    }
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    const val_t *bad = NULL;
    int rc = json_write(r, &b, v, &o, 0, &bad);
    if (rc) {
        free(b.data);
        if (bad)
            return r_err(r, line, LT_ERR_INVAL, "Object of type %s is not JSON serializable",
                         v_typename(bad->k, bad->f));
        return rc == LT_ERR_NOMEM ? r_nomem(r, line) : r_outerr(r, line, rc);
    }
    char *s = str_new(r, b.len, out);
    if (s && b.len) memcpy(s, b.data, b.len);
    free(b.data);
    return s ? 0 : r_nomem(r, line);
}

/* `s += "\n"` in jinja2: only strings. */
static int filter_indent(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    if (v->k == VK_UNDEF) return undef_err(r, line, v);
    if (v->k != VK_STR)
        return type_err(r, line, "unsupported operand type(s) for +=: '%s' and 'str'", v, NULL);
    char spaces[64];
    val_t ind;
    if (sl[0].k == VK_STR) {
        ind = sl[0];
    } else {
        int64_t w = 0;
        int rc = arg_int(r, line, &sl[0], 4, "indent", &w);
        if (rc) return rc;
        if (w < 0) w = 0;
        if (w > (int64_t)sizeof spaces) w = sizeof spaces;
        memset(spaces, ' ', sizeof spaces);
        ind = v_str(spaces, (size_t)w);
    }
    bool first = arg_bool(&sl[1], false), blank = arg_bool(&sl[2], false);
    /* s += "\n"; lines = s.splitlines(); ... as jinja2 does */
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    int rc = lt_buf_put(&b, v->u.s, v->n);
    if (!rc) rc = lt_buf_putc(&b, '\n');
    val_t whole = v_str(b.data, b.len), lines;
    if (!rc && (rc = str_splitlines(r, line, &whole, &lines))) {
        free(b.data);
        return rc;
    }
    lt_buf_t o = {.limit = CT_MAX_OUTPUT};
    if (!rc && first) rc = lt_buf_put(&o, ind.u.s, ind.n);
    const list_t *l = rc ? NULL : lines.u.l;
    for (uint32_t i = 0; l && i < l->n && !rc; i++) {
        const val_t *ln = &l->v[i];
        if (i) rc = lt_buf_putc(&o, '\n');
        if (!rc && i && (blank || ln->n)) rc = lt_buf_put(&o, ind.u.s, ind.n);
        if (!rc) rc = lt_buf_put(&o, ln->u.s, ln->n);
    }
    char *dst = rc ? NULL : str_new(r, o.len, out);
    if (dst && o.len) memcpy(dst, o.data, o.len);
    free(b.data);
    free(o.data);
    if (rc) return r_outerr(r, line, rc);
    return dst ? 0 : r_nomem(r, line);
}

static int filter_join(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    const val_t *items;
    size_t n;
    val_t sep = v_str("", 0), x, s = {0};
    int rc;
    if (sl[0].k != VK_MISSING && (rc = v_tostr(r, line, &sl[0], &sep))) return rc;
    if ((rc = iter_items(r, line, v, &items, &n)) || (rc = r_step(r, line, n))) return rc;
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    for (size_t i = 0; i < n && !rc; i++) {
        x = items[i];
        if (sl[1].k != VK_MISSING && (rc = attr_path(r, line, &items[i], &sl[1], &x))) break;
        if ((rc = v_tostr(r, line, &x, &s))) break;
        int brc = (i ? lt_buf_put(&b, sep.u.s, sep.n) : 0);
        if (!brc) brc = lt_buf_put(&b, s.u.s, s.n);
        if (brc) rc = r_outerr(r, line, brc);
    }
    char *dst = rc ? NULL : str_new(r, b.len, out);
    if (dst && b.len) memcpy(dst, b.data, b.len);
    free(b.data);
    if (rc) return rc;
    return dst ? 0 : r_nomem(r, line);
}

/* The items of v (a step each) and their keys for sort, unique, min and max: through attribute
 * when given, lower-cased unless case_sensitive. */
static int items_and_keys(render_t *r, int line, const val_t *v, const val_t *attr,
                          bool case_sensitive, const val_t **items, size_t *n, val_t **keys) {
    int rc;
    if ((rc = iter_items(r, line, v, items, n)) || (rc = r_step(r, line, *n))) return rc;
    val_t *k = r_alloc(r, (*n ? *n : 1) * sizeof *k);
    if (!k) return r_nomem(r, line);
    for (size_t i = 0; i < *n; i++) {
        val_t x = (*items)[i];
        if (attr->k != VK_MISSING && attr->k != VK_NONE &&
            (rc = attr_path(r, line, &(*items)[i], attr, &x)))
            return rc;
        if ((rc = fold_case(r, line, &x, case_sensitive, &k[i]))) return rc;
    }
    *keys = k;
    return 0;
}

static int filter_sort(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    const val_t *items;
    size_t n;
    val_t *keys;
    int rc = items_and_keys(r, line, v, &sl[2], arg_bool(&sl[1], false), &items, &n, &keys);
    if (rc) return rc;
    list_t *l = list_new(r, n);
    uint32_t *order = l ? r_alloc(r, (n ? n : 1) * sizeof *order) : NULL;
    if (!order) return r_nomem(r, line);
    for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
    if ((rc = sort_order(r, line, keys, order, n, arg_bool(&sl[0], false)))) return rc;
    for (size_t i = 0; i < n; i++) l->v[i] = items[order[i]];
    l->n = (uint32_t)n;
    *out = v_list(l, 0);
    return 0;
}

static int filter_unique(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    if (!is_iterable(v)) return deferred_iter(r, line, "'%s' object is not iterable", v, out);
    const val_t *items;
    size_t n;
    val_t *keys;
    int rc = items_and_keys(r, line, v, &sl[1], arg_bool(&sl[0], false), &items, &n, &keys);
    if (rc) return rc;
    list_t *l = list_new(r, n);
    if (!l) return r_nomem(r, line);
    for (size_t i = 0; i < n; i++) {
        size_t j;
        for (j = 0; j < i; j++)
            if (v_eq(&keys[j], &keys[i], 0)) break;
        if (j == i) l->v[l->n++] = items[i];
    }
    *out = v_list(l, LF_ITER);
    return 0;
}

/* min (want -1) or max (want 1): the first item whose key no other key beats. */
static int extreme(render_t *r, int line, const val_t *v, const val_t *sl, int want, val_t *out) {
    const val_t *items;
    size_t n;
    val_t *keys;
    int rc = items_and_keys(r, line, v, &sl[1], arg_bool(&sl[0], false), &items, &n, &keys);
    if (rc) return rc;
    if (n == 0) {
        *out = v_undef_hint(UH_MSG, 0, "No aggregated item, sequence was empty.", 39);
        return 0;
    }
    size_t best = 0;
    for (size_t i = 1; i < n; i++) {
        int c;
        if (!v_cmp(&keys[i], &keys[best], &c, 0))
            return type_err(r, line, "'<' not supported between instances of '%s' and '%s'",
                            &keys[i], &keys[best]);
        if (c == want) best = i;
    }
    *out = items[best];
    return 0;
}

static int filter_min(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                      val_t *out) {
    return extreme(r, line, v, sl, -1, out);
}

static int filter_max(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                      val_t *out) {
    return extreme(r, line, v, sl, 1, out);
}

/* Markup(str(value)) */
static int filter_safe(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    int rc = v_tostr(r, line, v, out);
    if (!rc) out->f = 1;
    return rc;
}

static int filter_string(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    return v_tostr(r, line, v, out);
}

/* str(value), then a case mapping (CASE_*). */
static int case_filter(render_t *r, int line, const val_t *v, int mode, val_t *out) {
    val_t s = {0};
    int rc = v_tostr(r, line, v, &s);
    return rc ? rc : str_case(r, line, &s, mode, out);
}

static int filter_upper(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    return case_filter(r, line, v, CASE_UPPER, out);
}

static int filter_lower(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    return case_filter(r, line, v, CASE_LOWER, out);
}

static int filter_capitalize(render_t *r, int line, const val_t *v, const args_t *a,
                             const val_t *sl, val_t *out) {
    return case_filter(r, line, v, CASE_CAPITALIZE, out);
}

static int filter_title(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    return case_filter(r, line, v, CASE_JTITLE, out);
}

static int filter_trim(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    val_t s = {0};
    int rc;
    if ((rc = v_tostr(r, line, v, &s))) return rc;
    if (sl[0].k != VK_MISSING && sl[0].k != VK_NONE && (rc = need_str(r, line, &sl[0], "trim")))
        return rc;
    *out = str_strip(&s, sl[0].k == VK_STR ? &sl[0] : NULL, true, true);
    return 0;
}

static int filter_default(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                          val_t *out) {
    if (v->k == VK_UNDEF || (arg_bool(&sl[1], false) && !v_truthy(v)))
        *out = sl[0].k == VK_MISSING ? v_str("", 0) : sl[0];
    else
        *out = *v;
    return 0;
}

static int filter_length(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    switch (v->k) {
    case VK_UNDEF: *out = v_int(0); return 0;
    case VK_STR: *out = v_int((int64_t)u8_count(v->u.s, v->n)); return 0;
    case VK_LIST:
        if (v_isiter(v)) break;
        *out = v_int(v->u.l->n);
        return 0;
    case VK_DICT: *out = v_int(v->u.m->n); return 0;
    case VK_LOOP: *out = v_int(v->u.lp->n); return 0;
    default: break;
    }
    return type_err(r, line, "object of type '%s' has no len()", v, NULL);
}

static int filter_first(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    const val_t *items;
    size_t n;
    int rc = iter_items(r, line, v, &items, &n);
    if (rc) return rc;
    *out = n ? items[0] : v_undef_hint(UH_MSG, 0, "No first item, sequence was empty.", 34);
    return 0;
}

static int filter_last(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    if (v_isiter(v)) return type_err(r, line, "'%s' object is not reversible", v, NULL);
    const val_t *items;
    size_t n;
    int rc = iter_items(r, line, v, &items, &n);
    if (rc) return rc;
    *out = n ? items[n - 1] : v_undef_hint(UH_MSG, 0, "No first item, sequence was empty.", 34);
    return 0;
}

static int filter_list(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    const val_t *items;
    size_t n;
    int rc = iter_items(r, line, v, &items, &n);
    if (rc) return rc;
    list_t *l = list_new(r, n);
    if (!l) return r_nomem(r, line);
    if (n) memcpy(l->v, items, n * sizeof *items);
    l->n = (uint32_t)n;
    *out = v_list(l, 0);
    return 0;
}

/* The (key, value) tuples of d, in order. */
static list_t *dict_items(render_t *r, const dict_t *d, const uint32_t *order) {
    list_t *l = list_new(r, d->n);
    if (!l) return NULL;
    for (uint32_t i = 0; i < d->n; i++) {
        uint32_t k = order ? order[i] : i;
        list_t *p = list_new(r, 2);
        if (!p) return NULL;
        p->v[0] = d->k[k];
        p->v[1] = d->v[k];
        p->n = 2;
        l->v[l->n++] = v_list(p, LF_TUPLE);
    }
    return l;
}

static int filter_items(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    if (v->k == VK_UNDEF) {
        list_t *l = list_new(r, 0);
        if (!l) return r_nomem(r, line);
        *out = v_list(l, LF_ITER);
        return 0;
    }
    if (v->k != VK_DICT)
        return deferred_iter(r, line, "Can only get item pairs from a mapping.", v, out);
    list_t *l = dict_items(r, v->u.m, NULL);
    if (!l) return r_nomem(r, line);
    *out = v_list(l, LF_ITER);
    return 0;
}

static int filter_replace(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                          val_t *out) {
    val_t s, old, rep;
    int64_t count = 0;
    int rc;
    if (sl[0].k == VK_MISSING || sl[1].k == VK_MISSING)
        return r_err(r, line, LT_ERR_INVAL, "replace needs old and new strings");
    if ((rc = v_tostr(r, line, v, &s)) || (rc = v_tostr(r, line, &sl[0], &old)) ||
        (rc = v_tostr(r, line, &sl[1], &rep)) ||
        (rc = arg_int(r, line, &sl[2], -1, "replace", &count)))
        return rc;
    return str_replace(r, line, &s, &old, &rep, count, out);
}

static int filter_escape(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    if (v->k == VK_STR && v->f) {
        *out = *v;
        return 0;
    }
    val_t s;
    int rc = v_tostr(r, line, v, &s);
    return rc ? rc : html_escape(r, line, &s, out);
}

static int filter_int(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                      val_t *out) {
    int64_t dflt = 0, i;
    double d;
    int rc;
    if (v->k == VK_UNDEF) return undef_err(r, line, v);
    if ((rc = arg_int(r, line, &sl[0], 0, "int", &dflt))) return rc;
    if (sl[1].k != VK_MISSING && !(v_isint(&sl[1]) && v_asint(&sl[1]) == 10))
        return r_err(r, line, LT_ERR_UNSUPPORTED, "unsupported int filter base");
    if (v_isint(v))
        *out = v_int(v_asint(v));
    else if (v->k == VK_FLOAT && isfinite(v->u.d) && fabs(v->u.d) < 9.2e18)
        *out = v_int((int64_t)v->u.d);
    else if (v->k == VK_STR && parse_int_str(v, &i))
        *out = v_int(i);
    else if (v->k == VK_STR && parse_float_str(v, &d) && isfinite(d) && fabs(d) < 9.2e18)
        *out = v_int((int64_t)d);
    else
        *out = sl[0].k == VK_MISSING ? v_int(dflt) : sl[0];
    return 0;
}

static int filter_float(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    double d;
    if (v->k == VK_UNDEF) return undef_err(r, line, v);
    if (v_isnum(v))
        *out = v_float(v_asfloat(v));
    else if (v->k == VK_STR && parse_float_str(v, &d))
        *out = v_float(d);
    else
        *out = sl[0].k == VK_MISSING ? v_float(0.0) : sl[0];
    return 0;
}

static int filter_abs(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                      val_t *out) {
    if (v->k == VK_FLOAT) {
        *out = v_float(fabs(v->u.d));
        return 0;
    }
    if (!v_isint(v)) return type_err(r, line, "bad operand type for abs(): '%s'", v, NULL);
    int64_t i = v_asint(v);
    if (i == INT64_MIN) return r_err(r, line, LT_ERR_RANGE, "integer overflow");
    *out = v_int(i < 0 ? -i : i);
    return 0;
}

static int filter_round(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    int64_t prec = 0;
    int rc;
    if ((rc = arg_int(r, line, &sl[0], 0, "round", &prec))) return rc;
    val_t m = sl[1].k == VK_MISSING ? v_str("common", 6) : sl[1];
    bool common = str_eq(&m, "common", 6), ceil_ = str_eq(&m, "ceil", 4);
    if (!common && !ceil_ && !str_eq(&m, "floor", 5))
        return r_err(r, line, LT_ERR_INVAL, "method must be common, ceil or floor");
    if (!v_isnum(v)) return type_err(r, line, "type %s doesn't define __round__ method", v, NULL);
    if (common && v_isint(v) && prec >= 0) {
        *out = v_int(v_asint(v));
        return 0;
    }
    double x = v_asfloat(v), y;
    if (!common) {
        double p10 = pow(10.0, (double)prec);
        y = (ceil_ ? ceil(x * p10) : floor(x * p10)) / p10;
    } else if (!isfinite(x)) {
        y = x;
    } else if (prec >= 0) {
        char buf[400];
        snprintf(buf, sizeof buf, "%.*f", (int)(prec > 300 ? 300 : prec), x);
        y = strtod(buf, NULL);
    } else {
        double p10 = pow(10.0, (double)-prec);
        y = nearbyint(x / p10) * p10;
    }
    *out = v_float(y);
    return 0;
}

static int filter_attr(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    val_t s;
    int rc;
    if (sl[0].k == VK_MISSING) return r_err(r, line, LT_ERR_INVAL, "attr needs a name");
    if ((rc = v_tostr(r, line, &sl[0], &s))) return rc;
    if (v->k == VK_DICT) { /* an attribute, not a key: only methods */
        bool unsafe;
        int m = find_method(s.u.s, s.n);
        if (method_of(v, m, &unsafe) && !unsafe) return bound_method(r, line, v, m, out);
        *out = v_undef_hint(UH_ATTR, VK_DICT, s.u.s, s.n);
        return 0;
    }
    return get_attr(r, line, v, s.u.s, s.n, find_method(s.u.s, s.n), out);
}

static int filter_reverse(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                          val_t *out) {
    if (v->k == VK_STR) {
        char *o = str_new(r, v->n, out);
        if (!o) return r_nomem(r, line);
        size_t k = v->n;
        for (size_t i = 0; i < v->n;) {
            size_t j = i;
            u8_next(v->u.s, v->n, &j);
            k -= j - i;
            memcpy(o + k, v->u.s + i, j - i);
            i = j;
        }
        return 0;
    }
    const val_t *items;
    size_t n;
    int rc = iter_items(r, line, v, &items, &n);
    if (rc) return rc;
    list_t *l = list_new(r, n);
    if (!l) return r_nomem(r, line);
    for (size_t i = 0; i < n; i++) l->v[i] = items[n - 1 - i];
    l->n = (uint32_t)n;
    *out = v_list(l, v_isiter(v) ? 0 : LF_ITER);
    return 0;
}

/* str(value) % (kwargs or args) */
static int filter_format(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    if (a->npos && a->nkw)
        return r_err(r, line, LT_ERR_INVAL,
                     "can't handle positional and keyword arguments at the same time");
    val_t arg, s;
    int rc;
    if (a->nkw) {
        dict_t *d = dict_new(r, (size_t)a->nkw);
        if (!d) return r_nomem(r, line);
        for (int k = 0; k < a->nkw; k++) {
            const name_t *nm = &r->t->names[a->kwid[k]];
            if (!dict_set(r, d, v_str(nm->s, nm->n), a->kwv[k])) return r_nomem(r, line);
        }
        arg = (val_t){.k = VK_DICT, .u.m = d};
    } else {
        list_t *l = list_new(r, (size_t)a->npos);
        if (!l) return r_nomem(r, line);
        for (int k = 0; k < a->npos; k++) l->v[l->n++] = a->pos[k];
        arg = v_list(l, LF_TUPLE);
    }
    if ((rc = v_tostr(r, line, v, &s))) return rc;
    return str_percent(r, line, &s, &arg, out);
}

static int filter_sum(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                      val_t *out) {
    val_t acc = sl[1].k == VK_MISSING ? v_int(0) : sl[1];
    const val_t *items;
    size_t n;
    int rc;
    if ((rc = iter_items(r, line, v, &items, &n)) || (rc = r_step(r, line, n))) return rc;
    for (size_t i = 0; i < n; i++) {
        val_t x = items[i];
        if (sl[0].k != VK_MISSING && sl[0].k != VK_NONE &&
            (rc = attr_path(r, line, &items[i], &sl[0], &x)))
            return rc;
        if ((rc = arith(r, line, OP_ADD, &acc, &x, &acc))) return rc;
    }
    *out = acc;
    return 0;
}

static int filter_dictsort(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                           val_t *out) {
    if (v->k != VK_DICT) return type_err(r, line, "dictsort: '%s' is not a mapping", v, NULL);
    bool cs = arg_bool(&sl[0], false), by_value = false;
    int rc;
    if (sl[1].k != VK_MISSING) {
        if (str_eq(&sl[1], "value", 5))
            by_value = true;
        else if (!str_eq(&sl[1], "key", 3))
            return r_err(r, line, LT_ERR_INVAL, "You can only sort by either \"key\" or \"value\"");
    }
    const dict_t *d = v->u.m;
    size_t n = d->n;
    val_t *keys = r_alloc(r, (n ? n : 1) * sizeof *keys);
    uint32_t *order = r_alloc(r, (n ? n : 1) * sizeof *order);
    if (!keys || !order) return r_nomem(r, line);
    for (size_t i = 0; i < n; i++) {
        order[i] = (uint32_t)i;
        if ((rc = fold_case(r, line, by_value ? &d->v[i] : &d->k[i], cs, &keys[i]))) return rc;
    }
    if ((rc = sort_order(r, line, keys, order, n, arg_bool(&sl[2], false)))) return rc;
    list_t *l = dict_items(r, d, order);
    if (!l) return r_nomem(r, line);
    *out = v_list(l, 0);
    return 0;
}

/* jinja2's filters, by name; aliases share a function. */
static const struct {
    const char *name;
    filter_fn fn;
    bool variadic;         /* takes its arguments as they come (map, select...) */
    const char *params[4]; /* after the operand, in order */
} k_filters[] = {
    {"abs", filter_abs, false, {0}},
    {"attr", filter_attr, false, {"name"}},
    {"capitalize", filter_capitalize, false, {0}},
    {"count", filter_length, false, {0}},
    {"d", filter_default, false, {"default_value", "boolean"}},
    {"default", filter_default, false, {"default_value", "boolean"}},
    {"dictsort", filter_dictsort, false, {"case_sensitive", "by", "reverse"}},
    {"e", filter_escape, false, {0}},
    {"escape", filter_escape, false, {0}},
    {"first", filter_first, false, {0}},
    {"float", filter_float, false, {"default"}},
    {"format", filter_format, true, {0}},
    {"indent", filter_indent, false, {"width", "first", "blank"}},
    {"int", filter_int, false, {"default", "base"}},
    {"items", filter_items, false, {0}},
    {"join", filter_join, false, {"d", "attribute"}},
    {"last", filter_last, false, {0}},
    {"length", filter_length, false, {0}},
    {"list", filter_list, false, {0}},
    {"lower", filter_lower, false, {0}},
    {"map", filter_map, true, {0}},
    {"max", filter_max, false, {"case_sensitive", "attribute"}},
    {"min", filter_min, false, {"case_sensitive", "attribute"}},
    {"reject", filter_reject, true, {0}},
    {"rejectattr", filter_rejectattr, true, {0}},
    {"replace", filter_replace, false, {"old", "new", "count"}},
    {"reverse", filter_reverse, false, {0}},
    {"round", filter_round, false, {"precision", "method"}},
    {"safe", filter_safe, false, {0}},
    {"select", filter_select, true, {0}},
    {"selectattr", filter_selectattr, true, {0}},
    {"sort", filter_sort, false, {"reverse", "case_sensitive", "attribute"}},
    {"string", filter_string, false, {0}},
    {"sum", filter_sum, false, {"attribute", "start"}},
    {"title", filter_title, false, {0}},
    {"tojson", filter_tojson, false, {"ensure_ascii", "indent", "separators", "sort_keys"}},
    {"trim", filter_trim, false, {"chars"}},
    {"unique", filter_unique, false, {"case_sensitive", "attribute"}},
    {"upper", filter_upper, false, {0}},
};

static int find_filter(const char *s, size_t len) {
    for (size_t i = 0; i < COUNT_OF(k_filters); i++)
        if (strlen(k_filters[i].name) == len && memcmp(k_filters[i].name, s, len) == 0)
            return (int)i;
    return -1;
}

/* Applies filter number idx (from find_filter) to v. */
static int apply_filter(render_t *r, int line, int idx, const val_t *v, const args_t *a,
                        val_t *out) {
    val_t sl[4];
    int rc, np = 0;
    if (!k_filters[idx].variadic) {
        char what[48];
        while (np < 4 && k_filters[idx].params[np]) np++;
        snprintf(what, sizeof what, "filter '%s'", k_filters[idx].name);
        if ((rc = bind(r, line, what, k_filters[idx].params, np, a, sl))) return rc;
    }
    return k_filters[idx].fn(r, line, v, a, sl, out);
}

/* ---- render: methods ---- */

/* A method gets its receiver self and the call's arguments as they came (a); unless its row is
 * variadic, they are also bound to the row's parameters in sl. what ("str.strip()") names it in
 * messages. */
typedef int (*method_fn)(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                         const char *what, val_t *out);

/* The receivers a method row applies to. */
enum { MT_STR = 1, MT_LIST = 2, MT_DICT = 4, MT_LOOP = 8 };

/* An optional `chars` / `sep` argument: a string, or NULL when missing or None. */
static int opt_str(render_t *r, int line, const val_t *v, const char *what, const val_t **out) {
    int rc;
    if (v->k != VK_MISSING && v->k != VK_NONE && (rc = need_str(r, line, v, what))) return rc;
    *out = v->k == VK_STR ? v : NULL;
    return 0;
}

static int strip_method(render_t *r, int line, const val_t *self, const val_t *sl, const char *what,
                        bool left, bool right, val_t *out) {
    const val_t *chars;
    int rc = opt_str(r, line, &sl[0], what, &chars);
    if (rc) return rc;
    *out = str_strip(self, chars, left, right);
    return 0;
}

static int method_strip(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    return strip_method(r, line, self, sl, what, true, true, out);
}

static int method_lstrip(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                         const char *what, val_t *out) {
    return strip_method(r, line, self, sl, what, true, false, out);
}

static int method_rstrip(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                         const char *what, val_t *out) {
    return strip_method(r, line, self, sl, what, false, true, out);
}

static int split_method(render_t *r, int line, const val_t *self, const val_t *sl, const char *what,
                        bool right, val_t *out) {
    int64_t maxsplit = 0;
    const val_t *sep;
    int rc;
    if ((rc = arg_int(r, line, &sl[1], -1, what, &maxsplit)) ||
        (rc = opt_str(r, line, &sl[0], what, &sep)))
        return rc;
    return str_split(r, line, self, sep, maxsplit, right, out);
}

static int method_split(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    return split_method(r, line, self, sl, what, false, out);
}

static int method_rsplit(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                         const char *what, val_t *out) {
    return split_method(r, line, self, sl, what, true, out);
}

static int method_splitlines(render_t *r, int line, const val_t *self, const args_t *a,
                             const val_t *sl, const char *what, val_t *out) {
    if (arg_bool(&sl[0], false))
        return r_err(r, line, LT_ERR_UNSUPPORTED, "unsupported splitlines(keepends=True)");
    return str_splitlines(r, line, self, out);
}

/* startswith / endswith: x is a string or a tuple of strings. */
static int affix_method(render_t *r, int line, const val_t *self, const val_t *sl, const char *what,
                        bool at_end, val_t *out) {
    const val_t *cands = &sl[0];
    size_t nc = 1;
    if (sl[0].k == VK_LIST && (sl[0].f & LF_TUPLE)) {
        cands = sl[0].u.l->v;
        nc = sl[0].u.l->n;
    }
    bool hit = false;
    for (size_t i = 0; i < nc && !hit; i++) {
        if (cands[i].k != VK_STR)
            return r_err(r, line, LT_ERR_INVAL, "%s: expected a str or a tuple of str", what);
        size_t k = cands[i].n;
        hit = k <= self->n && memcmp(self->u.s + (at_end ? self->n - k : 0), cands[i].u.s, k) == 0;
    }
    *out = v_bool(hit);
    return 0;
}

static int method_startswith(render_t *r, int line, const val_t *self, const args_t *a,
                             const val_t *sl, const char *what, val_t *out) {
    return affix_method(r, line, self, sl, what, false, out);
}

static int method_endswith(render_t *r, int line, const val_t *self, const args_t *a,
                           const val_t *sl, const char *what, val_t *out) {
    return affix_method(r, line, self, sl, what, true, out);
}

static int method_upper(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    return str_case(r, line, self, CASE_UPPER, out);
}

static int method_lower(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    return str_case(r, line, self, CASE_LOWER, out);
}

static int method_casefold(render_t *r, int line, const val_t *self, const args_t *a,
                           const val_t *sl, const char *what, val_t *out) {
    return str_case(r, line, self, CASE_LOWER, out);
}

static int method_title(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    return str_case(r, line, self, CASE_TITLE, out);
}

static int method_capitalize(render_t *r, int line, const val_t *self, const args_t *a,
                             const val_t *sl, const char *what, val_t *out) {
    return str_case(r, line, self, CASE_CAPITALIZE, out);
}

static int method_replace(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    int64_t count = 0;
    int rc;
    if (sl[0].k == VK_MISSING || sl[1].k == VK_MISSING)
        return r_err(r, line, LT_ERR_INVAL, "%s needs old and new", what);
    if ((rc = need_str(r, line, &sl[0], what)) || (rc = need_str(r, line, &sl[1], what)) ||
        (rc = arg_int(r, line, &sl[2], -1, what, &count)))
        return rc;
    return str_replace(r, line, self, &sl[0], &sl[1], count, out);
}

/* The one argument of find, count, index and the like; a string unless self is a list. */
static int sub_arg(render_t *r, int line, const val_t *self, const val_t *sl, const char *what) {
    if (sl[0].k == VK_MISSING) return r_err(r, line, LT_ERR_INVAL, "%s needs an argument", what);
    return self->k == VK_LIST ? 0 : need_str(r, line, &sl[0], what);
}

/* How many items of l equal x, and the index of the first (-1: none). */
static int64_t list_search(const list_t *l, const val_t *x, int64_t *first) {
    int64_t hits = 0;
    *first = -1;
    for (uint32_t i = 0; i < l->n; i++)
        if (v_eq(&l->v[i], x, 0)) {
            if (*first < 0) *first = i;
            hits++;
        }
    return hits;
}

static int method_find(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                       const char *what, val_t *out) {
    int rc = sub_arg(r, line, self, sl, what);
    if (!rc) *out = v_int(str_find(self, &sl[0], false));
    return rc;
}

static int method_rfind(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    int rc = sub_arg(r, line, self, sl, what);
    if (!rc) *out = v_int(str_find(self, &sl[0], true));
    return rc;
}

static int method_count(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    int64_t first;
    int rc = sub_arg(r, line, self, sl, what);
    if (rc) return rc;
    *out = v_int(self->k == VK_LIST ? list_search(self->u.l, &sl[0], &first)
                                    : str_count(self, &sl[0]));
    return 0;
}

static int method_index(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    int64_t i;
    int rc = sub_arg(r, line, self, sl, what);
    if (rc) return rc;
    if (self->k == VK_LIST) {
        list_search(self->u.l, &sl[0], &i);
        if (i < 0) return r_err(r, line, LT_ERR_INVAL, "list.index(x): x not in list");
    } else {
        i = str_find(self, &sl[0], false);
        if (i < 0) return r_err(r, line, LT_ERR_INVAL, "substring not found");
    }
    *out = v_int(i);
    return 0;
}

/* removeprefix (at_end false) / removesuffix. */
static int unaffix_method(render_t *r, int line, const val_t *self, const val_t *sl,
                          const char *what, bool at_end, val_t *out) {
    int rc = sub_arg(r, line, self, sl, what);
    if (rc) return rc;
    size_t k = sl[0].n;
    if (k <= self->n && memcmp(self->u.s + (at_end ? self->n - k : 0), sl[0].u.s, k) == 0)
        *out = v_str(self->u.s + (at_end ? 0 : k), self->n - k);
    else
        *out = *self;
    return 0;
}

static int method_removeprefix(render_t *r, int line, const val_t *self, const args_t *a,
                               const val_t *sl, const char *what, val_t *out) {
    return unaffix_method(r, line, self, sl, what, false, out);
}

static int method_removesuffix(render_t *r, int line, const val_t *self, const args_t *a,
                               const val_t *sl, const char *what, val_t *out) {
    return unaffix_method(r, line, self, sl, what, true, out);
}

static int method_join(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                       const char *what, val_t *out) {
    const val_t *items;
    size_t n;
    int rc = iter_items(r, line, &sl[0], &items, &n);
    if (rc) return rc;
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    for (size_t i = 0; i < n && !rc; i++) {
        if (items[i].k != VK_STR) {
            free(b.data);
            return r_err(r, line, LT_ERR_INVAL,
                         "sequence item %zu: expected str instance, %s found", i,
                         v_typename(items[i].k, items[i].f));
        }
        if (i) rc = lt_buf_put(&b, self->u.s, self->n);
        if (!rc) rc = lt_buf_put(&b, items[i].u.s, items[i].n);
    }
    char *dst = rc ? NULL : str_new(r, b.len, out);
    if (dst && b.len) memcpy(dst, b.data, b.len);
    free(b.data);
    if (rc) return r_outerr(r, line, rc);
    return dst ? 0 : r_nomem(r, line);
}

static int method_isdigit(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(str_all(self, uc_isdigit));
    return 0;
}

static int method_isalpha(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(str_all(self, uc_isalpha));
    return 0;
}

static int method_isalnum(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(str_all(self, uc_isalnum));
    return 0;
}

static int method_isspace(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(str_all(self, uc_isspace));
    return 0;
}

static int method_islower(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(str_iscase(self, true));
    return 0;
}

static int method_isupper(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(str_iscase(self, false));
    return 0;
}

static int method_get(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                      const char *what, val_t *out) {
    if (sl[0].k == VK_MISSING) return r_err(r, line, LT_ERR_INVAL, "%s needs a key", what);
    int i = dict_find(self->u.m, &sl[0]);
    *out = i >= 0 ? self->u.m->v[i] : sl[1].k == VK_MISSING ? v_none() : sl[1];
    return 0;
}

/* A view, not a generator: it has a length. */
static int method_items(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    list_t *l = dict_items(r, self->u.m, NULL);
    if (!l) return r_nomem(r, line);
    *out = v_list(l, 0);
    return 0;
}

/* keys() (want_keys) or values(), as a list. */
static int dict_column(render_t *r, int line, const dict_t *d, bool want_keys, val_t *out) {
    list_t *l = list_new(r, d->n);
    if (!l) return r_nomem(r, line);
    memcpy(l->v, want_keys ? d->k : d->v, d->n * sizeof *l->v);
    l->n = d->n;
    *out = v_list(l, 0);
    return 0;
}

static int method_keys(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                       const char *what, val_t *out) {
    return dict_column(r, line, self->u.m, true, out);
}

static int method_values(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                         const char *what, val_t *out) {
    return dict_column(r, line, self->u.m, false, out);
}

static int method_copy(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                       const char *what, val_t *out) {
    if (self->k == VK_LIST) {
        list_t *l = list_new(r, self->u.l->n);
        if (!l) return r_nomem(r, line);
        memcpy(l->v, self->u.l->v, self->u.l->n * sizeof *l->v);
        l->n = self->u.l->n;
        *out = v_list(l, self->f);
        return 0;
    }
    const dict_t *d = self->u.m;
    dict_t *c = dict_new(r, d->n);
    if (!c) return r_nomem(r, line);
    memcpy(c->k, d->k, d->n * sizeof *c->k);
    memcpy(c->v, d->v, d->n * sizeof *c->v);
    c->n = d->n;
    *out = (val_t){.k = VK_DICT, .u.m = c};
    return 0;
}

/* loop.cycle(a, b, ...) */
static int method_cycle(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    if (a->nkw || a->npos == 0) return r_err(r, line, LT_ERR_INVAL, "no items for cycling given");
    *out = a->pos[self->u.lp->i % a->npos];
    return 0;
}

/* loop.changed(a, b, ...): whether the arguments differ from the last call's. */
static int method_changed(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    list_t *l = list_new(r, (size_t)a->npos);
    if (!l) return r_nomem(r, line);
    if (a->npos) memcpy(l->v, a->pos, (size_t)a->npos * sizeof *l->v);
    l->n = (uint32_t)a->npos;
    val_t now = v_list(l, 0);
    loopctx_t *lp = self->u.lp;
    bool changed = !lp->has_last || !v_eq(&lp->last, &now, 0);
    lp->last = now;
    lp->has_last = true;
    *out = v_bool(changed);
    return 0;
}

/* str methods Python has and we refuse by name (str.format is refused on its own row, and so
 * keeps its own name in the message). */
static int method_format(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                         const char *what, val_t *out) {
    return r_err(r, line, LT_ERR_UNSUPPORTED, "unsupported method '%s'", what);
}

static int method_refused(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    return r_err(r, line, LT_ERR_UNSUPPORTED, "unsupported method '%s'", what);
}

/* The Python methods templates call, by name. `on`: the receivers that have it; `unsafe`: those
 * on which it exists but mutates, so the sandbox refuses it (no function). */
static const struct {
    const char *name;
    method_fn fn;
    uint8_t on, unsafe;    /* MT_* */
    bool variadic;         /* takes its arguments as they come */
    const char *params[3]; /* in order */
} k_methods[] = {
    {"strip", method_strip, MT_STR, 0, false, {"chars"}},
    {"lstrip", method_lstrip, MT_STR, 0, false, {"chars"}},
    {"rstrip", method_rstrip, MT_STR, 0, false, {"chars"}},
    {"split", method_split, MT_STR, 0, false, {"sep", "maxsplit"}},
    {"rsplit", method_rsplit, MT_STR, 0, false, {"sep", "maxsplit"}},
    {"splitlines", method_splitlines, MT_STR, 0, false, {"keepends"}},
    {"startswith", method_startswith, MT_STR, 0, false, {"x"}},
    {"endswith", method_endswith, MT_STR, 0, false, {"x"}},
    {"upper", method_upper, MT_STR, 0, false, {0}},
    {"lower", method_lower, MT_STR, 0, false, {0}},
    {"casefold", method_casefold, MT_STR, 0, false, {0}},
    {"title", method_title, MT_STR, 0, false, {0}},
    {"capitalize", method_capitalize, MT_STR, 0, false, {0}},
    {"replace", method_replace, MT_STR, 0, false, {"old", "new", "count"}},
    {"find", method_find, MT_STR, 0, false, {"x"}},
    {"rfind", method_rfind, MT_STR, 0, false, {"x"}},
    {"count", method_count, MT_STR | MT_LIST, 0, false, {"x"}},
    {"join", method_join, MT_STR, 0, false, {"x"}},
    {"isdigit", method_isdigit, MT_STR, 0, false, {0}},
    {"isalpha", method_isalpha, MT_STR, 0, false, {0}},
    {"isalnum", method_isalnum, MT_STR, 0, false, {0}},
    {"isspace", method_isspace, MT_STR, 0, false, {0}},
    {"islower", method_islower, MT_STR, 0, false, {0}},
    {"isupper", method_isupper, MT_STR, 0, false, {0}},
    {"removeprefix", method_removeprefix, MT_STR, 0, false, {"x"}},
    {"removesuffix", method_removesuffix, MT_STR, 0, false, {"x"}},
    {"get", method_get, MT_DICT, 0, false, {"key", "default"}},
    {"items", method_items, MT_DICT, 0, false, {0}},
    {"keys", method_keys, MT_DICT, 0, false, {0}},
    {"values", method_values, MT_DICT, 0, false, {0}},
    {"copy", method_copy, MT_LIST | MT_DICT, 0, false, {0}},
    {"index", method_index, MT_STR | MT_LIST, 0, false, {"x"}},
    {"cycle", method_cycle, MT_LOOP, 0, true, {0}},
    {"changed", method_changed, MT_LOOP, 0, true, {0}},
    {"append", NULL, 0, MT_LIST, false, {0}},
    {"extend", NULL, 0, MT_LIST, false, {0}},
    {"insert", NULL, 0, MT_LIST, false, {0}},
    {"pop", NULL, 0, MT_LIST | MT_DICT, false, {0}},
    {"remove", NULL, 0, MT_LIST, false, {0}},
    {"reverse", NULL, 0, MT_LIST, false, {0}},
    {"sort", NULL, 0, MT_LIST, false, {0}},
    {"clear", NULL, 0, MT_LIST | MT_DICT, false, {0}},
    {"update", NULL, 0, MT_DICT, false, {0}},
    {"setdefault", NULL, 0, MT_DICT, false, {0}},
    {"popitem", NULL, 0, MT_DICT, false, {0}},
    {"format", method_format, MT_STR, 0, true, {0}},
    {"center", method_refused, MT_STR, 0, true, {0}},
    {"ljust", method_refused, MT_STR, 0, true, {0}},
    {"rjust", method_refused, MT_STR, 0, true, {0}},
    {"zfill", method_refused, MT_STR, 0, true, {0}},
    {"partition", method_refused, MT_STR, 0, true, {0}},
    {"rpartition", method_refused, MT_STR, 0, true, {0}},
    {"encode", method_refused, MT_STR, 0, true, {0}},
    {"expandtabs", method_refused, MT_STR, 0, true, {0}},
    {"swapcase", method_refused, MT_STR, 0, true, {0}},
    {"istitle", method_refused, MT_STR, 0, true, {0}},
    {"isnumeric", method_refused, MT_STR, 0, true, {0}},
    {"isdecimal", method_refused, MT_STR, 0, true, {0}},
    {"isidentifier", method_refused, MT_STR, 0, true, {0}},
    {"isprintable", method_refused, MT_STR, 0, true, {0}},
    {"isascii", method_refused, MT_STR, 0, true, {0}},
    {"rindex", method_refused, MT_STR, 0, true, {0}},
    {"format_map", method_refused, MT_STR, 0, true, {0}},
    {"translate", method_refused, MT_STR, 0, true, {0}},
};

static int find_method(const char *s, size_t len) {
    for (size_t i = 0; i < COUNT_OF(k_methods); i++)
        if (strlen(k_methods[i].name) == len && memcmp(k_methods[i].name, s, len) == 0)
            return (int)i;
    return -1;
}

static bool method_of(const val_t *v, int m, bool *unsafe) {
    *unsafe = false;
    if (m < 0 || v_isiter(v)) return false;
    int type = v->k == VK_STR    ? MT_STR
               : v->k == VK_LIST ? MT_LIST
               : v->k == VK_DICT ? MT_DICT
               : v->k == VK_LOOP ? MT_LOOP
                                 : 0;
    if (k_methods[m].on & type) return true;
    *unsafe = (k_methods[m].unsafe & type) != 0;
    return *unsafe;
}

/* Calls method number m (from find_method) of self, which has it (method_of). */
static int call_method(render_t *r, int line, const val_t *self, int m, const args_t *a,
                       val_t *out) {
    /* messages name a method after the first row with its function, so the refused str methods
     * all report as 'center', as they always have */
    const char *name = k_methods[m].name;
    for (size_t i = 0; k_methods[m].fn && i < COUNT_OF(k_methods); i++)
        if (k_methods[i].fn == k_methods[m].fn) {
            name = k_methods[i].name;
            break;
        }
    bool unsafe;
    method_of(self, m, &unsafe);
    if (unsafe)
        return r_err(r, line, LT_ERR_INVAL, "access to attribute '%s' of '%s' object is unsafe",
                     name, v_typename(self->k, self->f));
    char what[64];
    snprintf(what, sizeof what, "%s.%s()", v_typename(self->k, self->f), name);
    val_t sl[3];
    int rc, np = 0;
    while (np < 3 && k_methods[m].params[np]) np++;
    if (!k_methods[m].variadic && (rc = bind(r, line, what, k_methods[m].params, np, a, sl)))
        return rc;
    return k_methods[m].fn(r, line, self, a, sl, what, out);
}

/* ---- render: global functions and macros ---- */

static int exec_body(render_t *r, node_t *const *v, int n);

static int call_global(render_t *r, int line, int id, const args_t *a, val_t *out) {
    int rc;
    switch (id) {
    case NM_RANGE: {
        if (a->nkw) return r_err(r, line, LT_ERR_INVAL, "range() takes no keyword arguments");
        if (a->npos < 1 || a->npos > 3)
            return r_err(r, line, LT_ERR_INVAL, "range expected 1 to 3 arguments, got %d", a->npos);
        int64_t x[3] = {0, 0, 1};
        for (int i = 0; i < a->npos; i++)
            if (!v_isint(&a->pos[i]))
                return type_err(r, line, "'%s' object cannot be interpreted as an integer",
                                &a->pos[i], NULL);
        if (a->npos == 1)
            x[1] = v_asint(&a->pos[0]);
        else
            for (int i = 0; i < a->npos; i++) x[i] = v_asint(&a->pos[i]);
        if (x[2] == 0) return r_err(r, line, LT_ERR_INVAL, "range() arg 3 must not be zero");
        double cnt = 0;
        if (x[2] > 0 && x[1] > x[0]) cnt = ceil(((double)x[1] - (double)x[0]) / (double)x[2]);
        if (x[2] < 0 && x[1] < x[0]) cnt = ceil(((double)x[0] - (double)x[1]) / (double)-x[2]);
        if (cnt > CT_MAX_RANGE)
            return r_err(r, line, LT_ERR_RANGE, "range too big: the sandbox allows at most %d",
                         CT_MAX_RANGE);
        list_t *l = list_new(r, (size_t)cnt);
        if (!l) return r_nomem(r, line);
        for (int64_t v = x[0]; x[2] > 0 ? v < x[1] : v > x[1]; v += x[2]) l->v[l->n++] = v_int(v);
        *out = v_list(l, 0);
        return 0;
    }
    case NM_NAMESPACE:
    case NM_DICT: {
        dict_t *d = dict_new(r, 4);
        if (!d) return r_nomem(r, line);
        for (int i = 0; i < a->npos; i++) {
            if (a->pos[i].k != VK_DICT)
                return r_err(r, line, LT_ERR_UNSUPPORTED, "unsupported positional argument to %s()",
                             k_fixed_names[id]);
            for (uint32_t k = 0; k < a->pos[i].u.m->n; k++)
                if (!dict_set(r, d, a->pos[i].u.m->k[k], a->pos[i].u.m->v[k]))
                    return r_nomem(r, line);
        }
        for (int k = 0; k < a->nkw; k++) {
            const name_t *nm = &r->t->names[a->kwid[k]];
            if (!dict_set(r, d, v_str(nm->s, nm->n), a->kwv[k])) return r_nomem(r, line);
        }
        *out = (val_t){.k = id == NM_NAMESPACE ? VK_NS : VK_DICT, .u.m = d};
        return 0;
    }
    case NM_RAISE: {
        val_t msg = a->npos ? a->pos[0] : v_str("", 0);
        if (a->npos != 1 || a->nkw)
            return r_err(r, line, LT_ERR_INVAL, "raise_exception() takes exactly one argument");
        if ((rc = v_tostr(r, line, &msg, &msg))) return rc;
        r->raised = true;
        return lt_errf(r->err, LT_ERR_INVAL, "%.*s", (int)msg.n, msg.u.s);
    }
    case NM_STRFTIME: {
        if (a->npos != 1 || a->nkw || a->pos[0].k != VK_STR)
            return r_err(r, line, LT_ERR_INVAL, "strftime_now() takes one format string");
        char fmt[256], buf[512];
        snprintf(fmt, sizeof fmt, "%.*s", (int)a->pos[0].n, a->pos[0].u.s);
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t k = strftime(buf, sizeof buf, fmt, &tm);
        char *s = str_new(r, k, out);
        if (!s) return r_nomem(r, line);
        memcpy(s, buf, k);
        return 0;
    }
    default:
        return r_err(r, line, LT_ERR_UNSUPPORTED, "unsupported function '%s'", k_fixed_names[id]);
    }
}

/* Calls a macro (or a call block's body as `caller`) and returns what it rendered, binding
 * arguments as jinja2's Macro.__call__ does: positionals, then keywords, then defaults; `caller`,
 * `kwargs` and `varargs` only for a body that reads them. */
static int call_macro(render_t *r, int line, const fn_t *f, const args_t *a, const fn_t *caller,
                      val_t *out) {
    const node_t *m = f->node;
    const char *name = f->kind == FN_CALLER ? "caller" : m->s;
    int rc;
    if (r->calls >= CT_MAX_CALLS)
        return r_err(r, line, LT_ERR_RANGE, "macro calls nested more than %d deep", CT_MAX_CALLS);
    if ((rc = r_step(r, line, 1))) return rc;
    if (a->npos > m->nw && !(m->op & MAC_VARARGS))
        return r_err(r, line, LT_ERR_INVAL, "macro '%s' takes not more than %d argument(s)", name,
                     m->nw);
    dict_t *extra_kw = NULL;
    for (int k = 0; k < a->nkw; k++) {
        int i;
        for (i = 0; i < m->nw && m->kw[i] != a->kwid[k]; i++) {
        }
        if (i < m->nw && i >= a->npos) continue;
        if (i < m->nw) /* a positional already filled it: the keyword is left over */
            i = m->nw;
        if (!(m->op & MAC_KWARGS))
            return r_err(r, line, LT_ERR_INVAL, "macro '%s' takes no keyword argument '%s'", name,
                         r->t->names[a->kwid[k]].s);
        if (!extra_kw && !(extra_kw = dict_new(r, 4))) return r_nomem(r, line);
        const name_t *kn = &r->t->names[a->kwid[k]];
        if (!dict_set(r, extra_kw, v_str(kn->s, kn->n), a->kwv[k])) return r_nomem(r, line);
    }
    if (caller && !(m->op & MAC_CALLER))
        return r_err(r, line, LT_ERR_INVAL,
                     "macro '%s' was invoked with two values for the special caller argument",
                     name);
    scope_t *s = scope_push(r, f->scope), *saved = r->sc;
    if (!s) return r_nomem(r, line);
    r->sc = s;
    r->calls++;
    for (int i = 0; i < m->nw && !rc; i++) {
        val_t v = {.k = VK_MISSING};
        if (i < a->npos)
            v = a->pos[i];
        else
            for (int k = 0; k < a->nkw; k++)
                if (a->kwid[k] == m->kw[i]) v = a->kwv[k];
        if (v.k == VK_MISSING) {
            if (m->w[i])
                rc = eval(r, m->w[i], &v);
            else {
                const name_t *pn = &r->t->names[m->kw[i]];
                v = v_undef_hint(UH_NAME, 0, pn->s, pn->n);
            }
        }
        if (!rc) rc = scope_set(r, line, m->kw[i], v);
    }
    if (!rc && (m->op & MAC_CALLER))
        rc = scope_set(r, line, NM_CALLER,
                       caller ? (val_t){.k = VK_FN, .u.fn = caller}
                              : v_undef_hint(UH_MSG, 0, "No caller defined", 17));
    if (!rc && (m->op & MAC_KWARGS)) {
        if (!extra_kw && !(extra_kw = dict_new(r, 1))) rc = r_nomem(r, line);
        if (!rc) rc = scope_set(r, line, NM_KWARGS, (val_t){.k = VK_DICT, .u.m = extra_kw});
    }
    if (!rc && (m->op & MAC_VARARGS)) {
        int n = a->npos > m->nw ? a->npos - m->nw : 0;
        list_t *l = list_new(r, (size_t)n);
        if (!l) rc = r_nomem(r, line);
        for (int i = 0; !rc && i < n; i++) l->v[l->n++] = a->pos[m->nw + i];
        if (!rc) rc = scope_set(r, line, NM_VARARGS, v_list(l, LF_TUPLE));
    }
    size_t mark = r->out.len;
    if (!rc) rc = exec_body(r, m->v, m->nv);
    r->calls--;
    r->sc = saved;
    if (rc < 0) {
        r->out.len = mark;
        return rc;
    }
    size_t len = r->out.len - mark;
    char *dst = str_new(r, len, out);
    if (dst && len) memcpy(dst, r->out.data + mark, len);
    r->out.len = mark;
    return dst ? 0 : r_nomem(r, line);
}

static int call_value(render_t *r, int line, const val_t *f, const args_t *a, const fn_t *caller,
                      val_t *out) {
    if (f->k == VK_UNDEF) return undef_err(r, line, f);
    if (f->k != VK_FN) return type_err(r, line, "'%s' object is not callable", f, NULL);
    const fn_t *fn = f->u.fn;
    switch (fn->kind) {
    case FN_MACRO:
    case FN_CALLER: return call_macro(r, line, fn, a, caller, out);
    case FN_GLOBAL: return call_global(r, line, fn->id, a, out);
    default: return call_method(r, line, &fn->self, fn->id, a, out);
    }
}

static int eval_call(render_t *r, const node_t *e, const fn_t *caller, val_t *out) {
    const node_t *c = e->a;
    val_t f;
    args_t a;
    int rc;
    if (c->kind == E_GETATTR && c->id >= 0) { /* obj.method(...): no bound method value */
        val_t obj;
        bool unsafe;
        if ((rc = eval(r, c->a, &obj))) return rc;
        if (method_of(&obj, c->id, &unsafe)) {
            if ((rc = eval_args(r, e, &a))) return rc;
            return call_method(r, e->line, &obj, c->id, &a, out);
        }
        if ((rc = get_attr(r, c->line, &obj, c->s, c->n, c->id, &f))) return rc;
    } else if ((rc = eval(r, c, &f))) {
        return rc;
    }
    if ((rc = eval_args(r, e, &a))) return rc;
    return call_value(r, e->line, &f, &a, caller, out);
}

/* ---- render: expressions ---- */

/* Applies a filter node; input stands for the innermost operand when it is NULL (blocks). */
static int eval_filter(render_t *r, const node_t *e, const val_t *input, val_t *out) {
    val_t v;
    args_t a;
    int rc = 0;
    if (!e->a)
        v = *input;
    else if (e->a->kind == E_FILTER)
        rc = eval_filter(r, e->a, input, &v);
    else
        rc = eval(r, e->a, &v);
    if (rc || (rc = eval_args(r, e, &a))) return rc;
    return apply_filter(r, e->line, e->id, &v, &a, out);
}

static int eval(render_t *r, const node_t *e, val_t *out) {
    val_t a, b;
    int rc;
    switch (e->kind) {
    case E_CONST: *out = e->k; return 0;
    case E_NAME: return lookup(r, e->line, e->id, out);
    case E_GETATTR:
        if ((rc = eval(r, e->a, &a))) return rc;
        return get_attr(r, e->line, &a, e->s, e->n, e->id, out);
    case E_GETITEM:
        if ((rc = eval(r, e->a, &a)) || (rc = eval(r, e->b, &b))) return rc;
        return get_item(r, e->line, &a, &b, out);
    case E_SLICE: {
        val_t sv[3];
        if ((rc = eval(r, e->a, &a))) return rc;
        for (int i = 0; i < 3; i++) {
            sv[i] = v_none();
            if (e->v[i] && (rc = eval(r, e->v[i], &sv[i]))) return rc;
        }
        return get_slice(r, e->line, &a, sv, out);
    }
    case E_CALL: return eval_call(r, e, NULL, out);
    case E_FILTER: return eval_filter(r, e, NULL, out);
    case E_TEST: {
        args_t args;
        bool res;
        if ((rc = eval(r, e->a, &a)) || (rc = eval_args(r, e, &args)) ||
            (rc = apply_test(r, e->line, e->id, &a, &args, &res)))
            return rc;
        *out = v_bool(res);
        return 0;
    }
    case E_BIN:
        if ((rc = eval(r, e->a, &a)) || (rc = eval(r, e->b, &b))) return rc;
        if (e->negpow && v_isnum(&a)) { /* see parse_pow */
            a = a.k == VK_FLOAT ? v_float(-a.u.d) : v_int(-v_asint(&a));
            if ((rc = arith(r, e->line, e->op, &a, &b, out))) return rc;
            *out = out->k == VK_FLOAT ? v_float(-out->u.d) : v_int(-out->u.i);
            return 0;
        }
        return arith(r, e->line, e->op, &a, &b, out);
    case E_NEG:
    case E_POS:
        if ((rc = eval(r, e->a, &a))) return rc;
        if (a.k == VK_UNDEF) return undef_err(r, e->line, &a);
        if (a.k == VK_FLOAT)
            *out = v_float(e->kind == E_NEG ? -a.u.d : a.u.d);
        else if (v_isint(&a)) {
            int64_t i = v_asint(&a);
            if (e->kind == E_NEG && i == INT64_MIN)
                return r_err(r, e->line, LT_ERR_RANGE, "integer overflow");
            *out = v_int(e->kind == E_NEG ? -i : i);
        } else {
            return r_err(r, e->line, LT_ERR_INVAL, "bad operand type for unary %c: '%s'",
                         e->kind == E_NEG ? '-' : '+', v_typename(a.k, a.f));
        }
        return 0;
    case E_CONCAT: {
        lt_buf_t buf = {.limit = CT_MAX_OUTPUT};
        for (int i = 0; i < e->nv; i++) {
            if ((rc = eval(r, e->v[i], &a))) {
                free(buf.data);
                return rc;
            }
            int brc = a.k == VK_STR ? lt_buf_put(&buf, a.u.s, a.n) : v_write(r, &buf, &a, false, 0);
            if (brc) {
                free(buf.data);
                return r_outerr(r, e->line, brc);
            }
        }
        char *dst = str_new(r, buf.len, out);
        if (dst && buf.len) memcpy(dst, buf.data, buf.len);
        free(buf.data);
        return dst ? 0 : r_nomem(r, e->line);
    }
    case E_CMP: {
        if ((rc = eval(r, e->a, &a))) return rc;
        bool res = true;
        for (int i = 0; i < e->nv && res; i++) {
            if ((rc = eval(r, e->v[i], &b)) || (rc = compare(r, e->line, e->ops[i], &a, &b, &res)))
                return rc;
            a = b;
        }
        *out = v_bool(res);
        return 0;
    }
    case E_AND:
    case E_OR:
        if ((rc = eval(r, e->a, &a))) return rc;
        if (v_truthy(&a) == (e->kind == E_OR)) {
            *out = a;
            return 0;
        }
        return eval(r, e->b, out);
    case E_NOT:
        if ((rc = eval(r, e->a, &a))) return rc;
        *out = v_bool(!v_truthy(&a));
        return 0;
    case E_COND:
        if ((rc = eval(r, e->b, &a))) return rc;
        if (v_truthy(&a)) return eval(r, e->a, out);
        if (e->c) return eval(r, e->c, out);
        *out = v_undef();
        return 0;
    case E_LIST:
    case E_TUPLE: {
        list_t *l = list_new(r, (size_t)e->nv);
        if (!l) return r_nomem(r, e->line);
        for (int i = 0; i < e->nv; i++)
            if ((rc = eval(r, e->v[i], &l->v[i]))) return rc;
        l->n = (uint32_t)e->nv;
        *out = v_list(l, e->kind == E_TUPLE ? LF_TUPLE : 0);
        return 0;
    }
    case E_DICT: {
        dict_t *d = dict_new(r, (size_t)e->nv);
        if (!d) return r_nomem(r, e->line);
        for (int i = 0; i < e->nv; i++) {
            if ((rc = eval(r, e->v[i], &a)) || (rc = eval(r, e->w[i], &b))) return rc;
            if (a.k == VK_LIST && !(a.f & LF_TUPLE))
                return r_err(r, e->line, LT_ERR_INVAL, "unhashable type: 'list'");
            if (a.k == VK_DICT || a.k == VK_NS)
                return r_err(r, e->line, LT_ERR_INVAL, "unhashable type: 'dict'");
            if (!dict_set(r, d, a, b)) return r_nomem(r, e->line);
        }
        *out = (val_t){.k = VK_DICT, .u.m = d};
        return 0;
    }
    default: return r_err(r, e->line, LT_ERR_UNSUPPORTED, "unsupported expression");
    }
}

/* ---- render: statements ---- */

static int emit(render_t *r, int line, const char *s, size_t n) {
    int rc = lt_buf_put(&r->out, s, n);
    return rc ? r_outerr(r, line, rc) : 0;
}

static int emit_val(render_t *r, int line, const val_t *v) {
    if (v->k == VK_STR) return emit(r, line, v->u.s, v->n);
    int rc = v_write(r, &r->out, v, false, 0);
    return rc ? r_outerr(r, line, rc) : 0;
}

/* Binds a for/set target (a name or a tuple of names) to v. */
static int assign(render_t *r, const node_t *target, const val_t *v) {
    if (target->kind == E_NAME) return scope_set(r, target->line, target->id, *v);
    const val_t *items;
    size_t n;
    int rc;
    if (v->k == VK_UNDEF) return undef_err(r, target->line, v);
    if ((rc = iter_items(r, target->line, v, &items, &n))) return rc;
    if (n != (size_t)target->nv)
        return r_err(r, target->line, LT_ERR_INVAL, "%s values to unpack (expected %d, got %zu)",
                     n > (size_t)target->nv ? "too many" : "not enough", target->nv, n);
    for (int i = 0; i < target->nv; i++)
        if ((rc = scope_set(r, target->line, target->v[i]->id, items[i]))) return rc;
    return 0;
}

static int exec_for(render_t *r, const node_t *e) {
    val_t seq;
    const val_t *items;
    size_t n;
    int rc;
    if ((rc = eval(r, e->b, &seq)) || (rc = iter_items(r, e->line, &seq, &items, &n))) return rc;
    scope_t *saved = r->sc, *s = scope_push(r, saved);
    if (!s) return r_nomem(r, e->line);
    r->sc = s;
    if (e->c) { /* `for x in xs if test`: filter first, so loop.length counts what is kept */
        val_t *kept = r_alloc(r, (n ? n : 1) * sizeof *kept);
        if (!kept) return r_nomem(r, e->line);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            val_t t;
            s->n = 0;
            if ((rc = r_step(r, e->line, 1)) || (rc = assign(r, e->a, &items[i])) ||
                (rc = eval(r, e->c, &t))) {
                r->sc = saved;
                return rc;
            }
            if (v_truthy(&t)) kept[k++] = items[i];
        }
        items = kept;
        n = k;
    }
    loopctx_t *lp = r_alloc(r, sizeof *lp);
    if (!lp) return r_nomem(r, e->line);
    *lp = (loopctx_t){.n = (int64_t)n, .items = items};
    rc = 0;
    /* jinja2 runs the else block unless some iteration reached the end of the body: a loop that
     * only ever breaks or continues runs it too */
    bool completed = false;
    for (size_t i = 0; i < n; i++) {
        lp->i = (int64_t)i;
        s->n = 0; /* each iteration starts with a fresh scope, as in jinja2 */
        if ((rc = r_step(r, e->line, 1)) || (rc = assign(r, e->a, &items[i])) ||
            (rc = scope_set(r, e->line, NM_LOOP, (val_t){.k = VK_LOOP, .u.lp = lp})))
            break;
        rc = exec_body(r, e->v, e->nv);
        if (rc == 0) completed = true;
        if (rc == SIG_CONTINUE) rc = 0;
        if (rc) break;
    }
    r->sc = saved;
    if (rc == SIG_BREAK) rc = 0;
    if (rc) return rc;
    if (!completed && e->nw) return exec_body(r, e->w, e->nw);
    return 0;
}

/* Renders body into a string value (set blocks, filter blocks), in a scope of its own: what the
 * body assigns stays inside, as in jinja2. */
static int capture(render_t *r, const node_t *e, val_t *out) {
    size_t mark = r->out.len;
    scope_t *saved = r->sc, *s = scope_push(r, saved);
    if (!s) return r_nomem(r, e->line);
    r->sc = s;
    int rc = exec_body(r, e->v, e->nv);
    r->sc = saved;
    if (rc) {
        r->out.len = mark;
        return rc;
    }
    size_t len = r->out.len - mark;
    char *dst = str_new(r, len, out);
    if (dst && len) memcpy(dst, r->out.data + mark, len);
    r->out.len = mark;
    if (!dst) return r_nomem(r, e->line);
    if (e->c) return eval_filter(r, e->c, out, out);
    return 0;
}

static int exec_set(render_t *r, const node_t *target, const val_t *v) {
    if (target->kind != E_NSREF) return assign(r, target, v);
    val_t ns;
    int rc = lookup(r, target->line, target->id, &ns);
    if (rc) return rc;
    if (ns.k != VK_NS)
        return r_err(r, target->line, LT_ERR_INVAL,
                     "cannot assign attribute on non-namespace object");
    if (!dict_set(r, ns.u.m, v_str(target->s, target->n), *v)) return r_nomem(r, target->line);
    return 0;
}

static int exec_stmt(render_t *r, const node_t *e) {
    val_t v;
    int rc;
    switch (e->kind) {
    case S_DATA: return emit(r, e->line, e->s, e->n);
    case S_OUTPUT:
        if ((rc = eval(r, e->a, &v))) return rc;
        return emit_val(r, e->line, &v);
    case S_IF:
        if ((rc = eval(r, e->a, &v))) return rc;
        return v_truthy(&v) ? exec_body(r, e->v, e->nv) : exec_body(r, e->w, e->nw);
    case S_FOR: return exec_for(r, e);
    case S_SET:
        if ((rc = eval(r, e->b, &v))) return rc;
        return exec_set(r, e->a, &v);
    case S_SETBLOCK:
        if ((rc = capture(r, e, &v))) return rc;
        return exec_set(r, e->a, &v);
    case S_FILTERBLOCK:
        if ((rc = capture(r, e, &v))) return rc;
        return emit_val(r, e->line, &v);
    case S_MACRO: {
        fn_t *f = r_alloc(r, sizeof *f);
        if (!f) return r_nomem(r, e->line);
        *f = (fn_t){.kind = FN_MACRO, .node = e, .scope = r->sc};
        return scope_set(r, e->line, e->id, (val_t){.k = VK_FN, .u.fn = f});
    }
    case S_CALLBLOCK: {
        fn_t *f = r_alloc(r, sizeof *f);
        if (!f) return r_nomem(r, e->line);
        *f = (fn_t){.kind = FN_CALLER, .node = e, .scope = r->sc};
        if ((rc = eval_call(r, e->a, f, &v))) return rc;
        return emit_val(r, e->line, &v);
    }
    case S_WITH: {
        scope_t *saved = r->sc, *s = scope_push(r, saved);
        if (!s) return r_nomem(r, e->line);
        val_t *vals = r_alloc(r, (size_t)(e->nw ? e->nw : 1) * sizeof *vals);
        if (!vals) return r_nomem(r, e->line);
        for (int i = 0; i < e->nw; i++)
            if ((rc = eval(r, e->w[i], &vals[i]))) return rc;
        r->sc = s;
        for (int i = 0; i < e->nw && !rc; i++) rc = scope_set(r, e->line, e->kw[i], vals[i]);
        if (!rc) rc = exec_body(r, e->v, e->nv);
        r->sc = saved;
        return rc;
    }
    case S_GENERATION: return exec_body(r, e->v, e->nv);
    case S_BREAK: return SIG_BREAK;
    case S_CONTINUE: return SIG_CONTINUE;
    default: return r_err(r, e->line, LT_ERR_UNSUPPORTED, "unsupported statement");
    }
}

static int exec_body(render_t *r, node_t *const *v, int n) {
    for (int i = 0; i < n; i++) {
        int rc = exec_stmt(r, v[i]);
        if (rc) return rc;
    }
    return 0;
}

/* ---- public API ---- */

int fe_chat_template_compile(const char *src, size_t len, fe_chat_template_t **out, char *err) {
    *out = NULL;
    if (!src && len) return lt_errf(err, LT_ERR_INVAL, "chat template: NULL source");
    if (len > CT_MAX_SOURCE)
        return lt_errf(err, LT_ERR_RANGE, "chat template: %zu bytes, more than the %u allowed", len,
                       CT_MAX_SOURCE);
    fe_chat_template_t *t = calloc(1, sizeof *t);
    if (!t) return lt_errf(err, LT_ERR_NOMEM, "chat template: out of memory");
    t->arena.chunk_bytes = CT_ARENA_CHUNK;
    /* newlines normalised to \n, and one trailing newline dropped (keep_trailing_newline=False) */
    t->src = malloc(len + 1);
    if (!t->src) {
        free(t);
        return lt_errf(err, LT_ERR_NOMEM, "chat template: out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            t->src[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            t->src[n++] = src[i];
        }
    }
    if (n && t->src[n - 1] == '\n') n--;
    t->src[n] = 0;

    int rc = 0;
    for (int i = 0; i < NM__FIXED && !rc; i++)
        if (intern(t, k_fixed_names[i], strlen(k_fixed_names[i])) != i) rc = LT_ERR_NOMEM;
    if (rc) {
        fe_chat_template_destroy(&t);
        return lt_errf(err, rc, "chat template: out of memory");
    }
    lexer_t lx = {.s = t->src, .n = n, .arena = &t->arena, .err = err};
    rc = lex_all(&lx);
    if (!rc) {
        parser_t p = {.t = lx.v, .tpl = t, .err = err};
        nvec_t body = {0};
        rc = parse_body(&p, NULL, &body);
        t->body = body.v;
        t->nbody = body.n;
    }
    free(lx.v);
    if (rc) {
        fe_chat_template_destroy(&t);
        return rc;
    }
    *out = t;
    return 0;
}

void fe_chat_template_destroy(fe_chat_template_t **t) {
    if (!t || !*t) return;
    lt_arena_free(&(*t)->arena);
    free((*t)->src);
    free(*t);
    *t = NULL;
}

int fe_chat_template_render(const fe_chat_template_t *t, const cJSON *ctx, char **out, char *err) {
    *out = NULL;
    if (!t) return lt_errf(err, LT_ERR_INVAL, "chat template: NULL template");
    if (ctx && !cJSON_IsObject(ctx))
        return lt_errf(err, LT_ERR_INVAL, "chat template: the context must be a JSON object");
    char ebuf[LT_ERR_LEN] = "";
    render_t r = {.t = t,
                  .ctx = ctx,
                  .arena = {.chunk_bytes = CT_ARENA_CHUNK, .limit = CT_MAX_ARENA},
                  .out = {.limit = CT_MAX_OUTPUT},
                  .err = ebuf};
    r.root = r_alloc(&r, (size_t)t->nnames * sizeof *r.root);
    int rc = 0;
    if (!r.root) rc = lt_errf(ebuf, LT_ERR_NOMEM, "chat template: out of memory");
    if (!rc) {
        memset(r.root, 0, (size_t)t->nnames * sizeof *r.root); /* VK_MISSING */
        rc = lt_buf_reserve(&r.out, 4096)
                 ? lt_errf(ebuf, LT_ERR_NOMEM, "chat template: out of memory")
                 : exec_body(&r, t->body, t->nbody);
    }
    lt_arena_free(&r.arena);
    if (rc) {
        lt_buf_free(&r.out);
        if (err) snprintf(err, LT_ERR_LEN, "%s", ebuf);
        return rc;
    }
    r.out.data[r.out.len] = 0; /* macro calls and captures may have cut the text after its NUL */
    *out = lt_buf_take(&r.out);
    return 0;
}
