/*
 * lexer.c — turns a template's source into jinja2's tokens: template data already trimmed by
 * its whitespace rules (trim_blocks, lstrip_blocks, the '-' and '+' markers), comments dropped
 * and raw blocks passed through, and inside tags the names, numbers, decoded string literals
 * and operators, with their lines.
 *
 * Why apart: jinja2's whitespace rules are the most intricate part of matching its output byte
 * for byte, and they are the lexer's alone; the parser only ever sees tokens.
 */

#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

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

static int lex_nomem(const lexer_t *lx) {
    return lt_errf(lx->err, LT_ERR_NOMEM, "chat template: out of memory");
}

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

/* ---- whitespace rules and tag ends ---- */

/* str.rstrip() of s[start, end): the new end. */
static size_t ws_rstrip(const char *s, size_t start, size_t end) {
    while (end > start) {
        size_t j = end;
        if (!jt_uc_isspace(jt_u8_prev(s, start, &j))) break;
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
    if (l == b || jt_ws_span(lx->s, b, l) != b) return b;
    return l;
}

static bool at(const char *s, size_t n, size_t i, const char *lit) {
    size_t k = strlen(lit);
    return i <= n && n - i >= k && memcmp(s + i, lit, k) == 0;
}

static bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_name_char(char c) {
    return is_name_start(c) || jt_is_digit(c);
}

/* The end of the block-tag terminator at i ("+%}", "-%}" and whitespace, "%}" and one newline), or
 * 0 when there is none. */
static size_t block_end_at(const char *s, size_t n, size_t i) {
    if (at(s, n, i, "+%}")) return i + 3;
    if (at(s, n, i, "-%}")) return jt_ws_span(s, n, i + 3);
    if (at(s, n, i, "%}")) return i + 2 + (i + 2 < n && s[i + 2] == '\n');
    return 0;
}

/* After "{%" and its sign at p: is this `raw -%}` / `raw %}`? Sets *end past the tag. */
static bool raw_begin_at(const char *s, size_t n, size_t p, size_t *end) {
    size_t i = jt_ws_span(s, n, p);
    if (!at(s, n, i, "raw")) return false;
    i = jt_ws_span(s, n, i + 3);
    if (at(s, n, i, "-%}")) {
        *end = jt_ws_span(s, n, i + 3);
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
        j = jt_ws_span(s, n, j);
        if (!at(s, n, j, "endraw")) continue;
        j = jt_ws_span(s, n, j + 6);
        size_t e = block_end_at(s, n, j);
        if (!e) continue;
        *start = i;
        *sign = sg;
        *end = e;
        return true;
    }
    return false;
}

/* ---- numbers and strings ---- */

/* (\d+_)*\d+ at i: returns the end, or i when there is no digit. */
static size_t scan_digits(const char *s, size_t n, size_t i) {
    if (i >= n || !jt_is_digit(s[i])) return i;
    while (i < n && jt_is_digit(s[i])) i++;
    while (i + 1 < n && s[i] == '_' && jt_is_digit(s[i + 1])) {
        i++;
        while (i < n && jt_is_digit(s[i])) i++;
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
        if (i >= n || !jt_is_digit(s[i])) return 0;
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
    if (!o) return lex_nomem(lx);
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
                    return jt_errf(lx->err, LT_ERR_FORMAT, line, "truncated \\%c escape in string",
                                   c);
                cp = cp * 16 + (uint32_t)h;
            }
            i += (size_t)nd;
            if (cp > 0x10FFFF)
                return jt_errf(lx->err, LT_ERR_FORMAT, line, "illegal Unicode character");
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
            k += jt_u8_put(cp, o + k);
            continue;
        }
        case 'N':
            return jt_errf(lx->err, LT_ERR_UNSUPPORTED, line,
                           "unsupported \\N{...} escape in string");
        default:
            if (c >= '0' && c <= '7') {
                cp = (uint32_t)(c - '0');
                for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++)
                    cp = cp * 8 + (uint32_t)(s[i++] - '0');
                k += jt_u8_put(cp, o + k);
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

/* ---- tags and the whole source ---- */

/* The inside of a {{ }} or {% %} tag from p; kind is '{' or '%'. */
static int lex_tag(lexer_t *lx, char kind, size_t p, int open_line) {
    const char *s = lx->s;
    size_t n = lx->n;
    char stack[CT_MAX_NEST];
    int depth = 0;
    if (!lex_push(lx, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, lx->line, NULL, 0))
        return lex_nomem(lx);
    size_t i = p;
    for (;;) {
        if (i >= n)
            return jt_errf(lx->err, LT_ERR_FORMAT, open_line, "unclosed '%s' tag",
                           kind == '%' ? "{%" : "{{");
        if (depth == 0) {
            size_t end = 0;
            if (kind == '%')
                end = block_end_at(s, n, i);
            else if (at(s, n, i, "-}}"))
                end = jt_ws_span(s, n, i + 3);
            else if (at(s, n, i, "}}"))
                end = i + 2;
            if (end) {
                if (!lex_push(lx, kind == '%' ? TK_BLOCK_END : TK_VAR_END, lx->line, NULL, 0))
                    return lex_nomem(lx);
                lx->line += count_nl(s + i, end - i);
                lx->line_starting = s[end - 1] == '\n';
                lx->pos = end;
                return 0;
            }
        }
        size_t j = jt_ws_span(s, n, i);
        if (j > i) {
            lx->line += count_nl(s + i, j - i);
            i = j;
            continue;
        }
        tok_t *t;
        char c = s[i];
        if (jt_is_digit(c)) {
            if ((j = scan_float(s, n, i)) != 0) {
                char tmp[64];
                size_t k = 0;
                for (size_t m = i; m < j && k < sizeof tmp - 1; m++)
                    if (s[m] != '_') tmp[k++] = s[m];
                tmp[k] = 0;
                if (!(t = lex_push(lx, TK_FLOAT, lx->line, s + i, j - i))) return lex_nomem(lx);
                t->d = strtod(tmp, NULL);
            } else {
                int64_t v;
                bool big;
                j = scan_int(s, n, i, &v, &big);
                if (big)
                    return jt_errf(lx->err, LT_ERR_UNSUPPORTED, lx->line,
                                   "integer literal '%.*s' is too large", (int)(j - i), s + i);
                if (!(t = lex_push(lx, TK_INT, lx->line, s + i, j - i))) return lex_nomem(lx);
                t->i = v;
            }
            i = j;
            continue;
        }
        if (is_name_start(c)) {
            for (j = i + 1; j < n && is_name_char(s[j]);) j++;
            if (!lex_push(lx, TK_NAME, lx->line, s + i, j - i)) return lex_nomem(lx);
            i = j;
            continue;
        }
        if (c == '\'' || c == '"') {
            for (j = i + 1; j < n && s[j] != c; j += s[j] == '\\' ? 2 : 1) {
            }
            if (j >= n)
                return jt_errf(lx->err, LT_ERR_FORMAT, lx->line, "unterminated string literal");
            if (!(t = lex_push(lx, TK_STRING, lx->line, NULL, 0))) return lex_nomem(lx);
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
            jt_u8_next(s, n, &e);
            return jt_errf(lx->err, LT_ERR_FORMAT, lx->line, "unexpected char '%.*s'", (int)(e - i),
                           s + i);
        }
        uint8_t op = k_ops[k].op;
        if (op == OP_LPAREN || op == OP_LBRACKET || op == OP_LBRACE) {
            if (depth == CT_MAX_NEST)
                return jt_errf(lx->err, LT_ERR_RANGE, lx->line, "brackets nested too deeply");
            stack[depth++] = op == OP_LPAREN ? ')' : op == OP_LBRACKET ? ']' : '}';
        } else if (op == OP_RPAREN || op == OP_RBRACKET || op == OP_RBRACE) {
            if (depth == 0) return jt_errf(lx->err, LT_ERR_FORMAT, lx->line, "unexpected '%c'", c);
            if (stack[--depth] != c)
                return jt_errf(lx->err, LT_ERR_FORMAT, lx->line, "unexpected '%c', expected '%c'",
                               c, stack[depth]);
        }
        if (!(t = lex_push(lx, TK_OP, lx->line, s + i, strlen(k_ops[k].s)))) return lex_nomem(lx);
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
            if (!lex_push(lx, TK_DATA, lx->line, s + lx->pos, n - lx->pos)) return lex_nomem(lx);
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
        if (b > a && !lex_push(lx, TK_DATA, lx->line, s + a, b - a)) return lex_nomem(lx);
        lx->line += count_nl(s + a, q - a);
        int open_line = lx->line;
        if (raw) {
            lx->line += count_nl(s + q, raw_end - q);
            lx->line_starting = s[raw_end - 1] == '\n';
            size_t start, end;
            char esign;
            if (!raw_end_find(s, n, raw_end, &start, &esign, &end))
                return jt_errf(lx->err, LT_ERR_FORMAT, open_line, "missing end of raw directive");
            size_t e = start;
            lx->pos = raw_end;
            if (esign == '-')
                e = ws_rstrip(s, raw_end, e);
            else if (esign != '+')
                e = lstrip_block(lx, raw_end, e);
            if (e > raw_end && !lex_push(lx, TK_DATA, lx->line, s + raw_end, e - raw_end))
                return lex_nomem(lx);
            lx->line += count_nl(s + raw_end, end - raw_end);
            lx->line_starting = s[end - 1] == '\n';
            lx->pos = end;
        } else if (kind == '#') {
            size_t c = p;
            while (c + 1 < n && !(s[c] == '#' && s[c + 1] == '}')) c++;
            if (c + 1 >= n)
                return jt_errf(lx->err, LT_ERR_FORMAT, open_line, "missing end of comment tag");
            size_t end;
            if (c > p && s[c - 1] == '+')
                end = c + 2;
            else if (c > p && s[c - 1] == '-')
                end = jt_ws_span(s, n, c + 2);
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
    if (!lex_push(lx, TK_EOF, lx->line, NULL, 0)) return lex_nomem(lx);
    return 0;
}

int jt_lex(const char *s, size_t n, lt_arena_t *arena, tok_t **toks, char *err) {
    lexer_t lx = {.s = s, .n = n, .arena = arena, .err = err};
    int rc = lex_all(&lx);
    if (rc) {
        free(lx.v);
        lx.v = NULL;
    }
    *toks = lx.v;
    return rc;
}
