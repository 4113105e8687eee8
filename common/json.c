/*
 * json.c — the strict JSON reader of json.h: one pass over the text that checks it, tracks the
 * path of the value it is in (for errors that name the field) and writes the copy cJSON parses
 * (NUL as C0 80, strings repaired to valid UTF-8), then cJSON builds the tree from that copy.
 */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "lt.h"
#include "utf8.h"

/* Below cJSON's own nesting limit (1000), so cJSON never refuses what this pass accepted. */
#define JSON_MAX_DEPTH 512

/* One step of the path: an object member (key != NULL, the raw text between its quotes) or an
 * array element. */
typedef struct seg {
    const char *key;
    size_t key_len;
    long index;
} seg_t;

typedef struct rd {
    const unsigned char *s;
    size_t n, i;
    lt_buf_t out;
    seg_t path[JSON_MAX_DEPTH];
    int depth;
    int nomem;
    lt_json_error_t *e;
} rd_t;

/* ---- errors ---- */

static void fmt_path(const rd_t *r, char *out, size_t cap) {
    size_t k = 0;
    out[0] = '\0';
    for (int d = 0; d < r->depth && k + 1 < cap; d++) {
        const seg_t *g = &r->path[d];
        char piece[64];
        if (g->key) {
            size_t m = 0;
            if (d > 0) piece[m++] = '.';
            for (size_t j = 0; j < g->key_len && m + 4 < sizeof piece; j++) {
                unsigned char c = (unsigned char)g->key[j];
                piece[m++] = c >= 0x20 && c < 0x7f ? (char)c : '?'; /* names are ASCII */
            }
            piece[m] = '\0';
        } else {
            snprintf(piece, sizeof piece, "[%ld]", g->index);
        }
        k += (size_t)snprintf(out + k, cap - k, "%s", piece);
        if (k >= cap) k = cap - 1;
    }
}

static int fail(rd_t *r, bool unicode, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(rd_t *r, bool unicode, const char *fmt, ...) {
    lt_json_error_t *e = r->e;
    e->unicode = unicode;
    e->offset = r->i;
    fmt_path(r, e->path, sizeof e->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return unicode ? LT_ERR_INVAL : LT_ERR_FORMAT;
}

static int put(rd_t *r, const void *p, size_t n) {
    if (lt_buf_put(&r->out, p, n)) {
        r->nomem = 1;
        return LT_ERR_NOMEM;
    }
    return 0;
}

/* ---- scalars ---- */

static void ws(rd_t *r) {
    while (r->i < r->n &&
           (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' || r->s[r->i] == '\r'))
        r->i++;
}

static long hex4(const unsigned char *p) {
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int c = p[k], d = c >= '0' && c <= '9'   ? c - '0'
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Raw bytes s[from, to) of a string, repaired (each maximal invalid subpart becomes U+FFFD). */
static int put_raw(rd_t *r, size_t from, size_t to) {
    if (from == to) return 0;
    if (lt_utf8_valid_prefix((const char *)r->s + from, to - from) == to - from)
        return put(r, r->s + from, to - from);
    lt_utf8_lossy_t st = {0};
    if (lt_utf8_lossy_push(&st, (const char *)r->s + from, to - from, &r->out) ||
        lt_utf8_lossy_flush(&st, &r->out)) {
        r->nomem = 1;
        return LT_ERR_NOMEM;
    }
    return 0;
}

/* One \u escape at s[i] (the backslash), i + 6 <= n checked by the caller. */
static int escape_u(rd_t *r, bool key) {
    long cp = hex4(r->s + r->i + 2);
    if (cp < 0) return fail(r, false, "bad \\u escape at byte %zu", r->i);
    if (cp == 0) {
        r->i += 6;
        return put(r, LT_JSON_NUL, LT_JSON_NUL_LEN);
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        const unsigned char *q = r->s + r->i + 6;
        long lo = r->i + 12 <= r->n && q[0] == '\\' && q[1] == 'u' ? hex4(q + 2) : -1;
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
            int rc = put(r, r->s + r->i, 12);
            r->i += 12;
            return rc;
        }
    }
    if (cp >= 0xD800 && cp <= 0xDFFF)
        return fail(r, true, "\\u%04lx at byte %zu is an unpaired UTF-16 surrogate%s", cp, r->i,
                    key ? " (in an object key)" : "");
    int rc = put(r, r->s + r->i, 6);
    r->i += 6;
    return rc;
}

/* A string at s[i] (the opening quote). */
static int string(rd_t *r, bool key) {
    size_t open = r->i++;
    if (put(r, "\"", 1)) return LT_ERR_NOMEM;
    size_t run = r->i;
    for (;;) {
        if (r->i >= r->n) {
            r->i = open;
            return fail(r, false, "unterminated string at byte %zu", open);
        }
        unsigned char c = r->s[r->i];
        if (c != '"' && c != '\\' && c >= 0x20) {
            r->i++;
            continue;
        }
        if (put_raw(r, run, r->i)) return LT_ERR_NOMEM;
        if (c == '"') {
            r->i++;
            return put(r, "\"", 1);
        }
        if (c < 0x20)
            return fail(r, false, "unescaped control character U+%04X in a string at byte %zu", c,
                        r->i);
        if (r->i + 1 >= r->n) {
            r->i = open;
            return fail(r, false, "unterminated string at byte %zu", open);
        }
        unsigned char x = r->s[r->i + 1];
        int rc;
        if (x == 'u') {
            if (r->i + 6 > r->n) return fail(r, false, "bad \\u escape at byte %zu", r->i);
            rc = escape_u(r, key);
        } else if (x && strchr("\"\\/bfnrt", x)) {
            rc = put(r, r->s + r->i, 2);
            r->i += 2;
        } else {
            return fail(r, false, "invalid escape at byte %zu", r->i);
        }
        if (rc) return rc;
        run = r->i;
    }
}

static bool digit(const rd_t *r) {
    return r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9';
}

static int number(rd_t *r) {
    size_t start = r->i;
    if (r->s[r->i] == '-') r->i++;
    if (r->i < r->n && r->s[r->i] == '0') {
        r->i++;
    } else if (digit(r)) {
        while (digit(r)) r->i++;
    } else {
        return fail(r, false, "bad number at byte %zu", start);
    }
    if (r->i < r->n && r->s[r->i] == '.') {
        r->i++;
        if (!digit(r)) return fail(r, false, "bad number at byte %zu", start);
        while (digit(r)) r->i++;
    }
    if (r->i < r->n && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
        r->i++;
        if (r->i < r->n && (r->s[r->i] == '+' || r->s[r->i] == '-')) r->i++;
        if (!digit(r)) return fail(r, false, "bad number at byte %zu", start);
        while (digit(r)) r->i++;
    }
    return put(r, r->s + start, r->i - start);
}

static int literal(rd_t *r, const char *word) {
    size_t k = strlen(word);
    if (r->n - r->i < k || memcmp(r->s + r->i, word, k) != 0)
        return fail(r, false, "unexpected character at byte %zu", r->i);
    r->i += k;
    return put(r, word, k);
}

/* ---- containers ---- */

static int value(rd_t *r);

/* An array or an object at s[i]. */
static int container(rd_t *r) {
    bool obj = r->s[r->i] == '{';
    char close = obj ? '}' : ']';
    if (r->depth == JSON_MAX_DEPTH)
        return fail(r, false, "nested deeper than %d levels at byte %zu", JSON_MAX_DEPTH, r->i);
    if (put(r, r->s + r->i++, 1)) return LT_ERR_NOMEM;
    ws(r);
    if (r->i < r->n && r->s[r->i] == close) {
        r->i++;
        return put(r, &close, 1);
    }
    for (long k = 0;; k++) {
        seg_t g = {.index = k};
        if (obj) {
            ws(r);
            if (r->i >= r->n || r->s[r->i] != '"')
                return fail(r, false, "expected a string key at byte %zu", r->i);
            size_t at = r->i;
            int rc = string(r, true);
            if (rc) return rc;
            g.key = (const char *)r->s + at + 1;
            g.key_len = r->i - at - 2;
            ws(r);
            if (r->i >= r->n || r->s[r->i] != ':')
                return fail(r, false, "expected ':' at byte %zu", r->i);
            r->i++;
            if (put(r, ":", 1)) return LT_ERR_NOMEM;
        }
        r->path[r->depth++] = g;
        int rc = value(r);
        if (rc) return rc;
        r->depth--;
        ws(r);
        if (r->i < r->n && r->s[r->i] == ',') {
            r->i++;
            if (put(r, ",", 1)) return LT_ERR_NOMEM;
            continue;
        }
        if (r->i < r->n && r->s[r->i] == close) {
            r->i++;
            return put(r, &close, 1);
        }
        return fail(r, false, "expected ',' or '%c' at byte %zu", close, r->i);
    }
}

static int value(rd_t *r) {
    ws(r);
    if (r->i >= r->n) return fail(r, false, "unexpected end at byte %zu", r->i);
    switch (r->s[r->i]) {
    case '{':
    case '[': return container(r);
    case '"': return string(r, false);
    case 't': return literal(r, "true");
    case 'f': return literal(r, "false");
    case 'n': return literal(r, "null");
    default:
        if (r->s[r->i] == '-' || digit(r)) return number(r);
        return fail(r, false, "unexpected character at byte %zu", r->i);
    }
}

/* ---- public ---- */

int lt_json_parse(const char *text, size_t len, cJSON **out, lt_json_error_t *e) {
    *out = NULL;
    memset(e, 0, sizeof *e);
    rd_t *r = calloc(1, sizeof *r);
    if (!r) return LT_ERR_NOMEM;
    r->s = (const unsigned char *)(text ? text : "");
    r->n = text ? len : 0;
    r->e = e;
    if (r->n >= 3 && memcmp(r->s, "\xEF\xBB\xBF", 3) == 0) r->i = 3; /* a BOM, as cJSON skips */
    int rc = value(r);
    if (!rc) {
        ws(r);
        if (r->i < r->n) rc = fail(r, false, "extra data after the JSON value at byte %zu", r->i);
    }
    if (r->nomem) rc = LT_ERR_NOMEM;
    if (!rc) {
        *out = cJSON_ParseWithLength(r->out.data, r->out.len);
        if (!*out) rc = LT_ERR_NOMEM; /* the text was checked: only memory can fail here */
    }
    lt_buf_free(&r->out);
    free(r);
    return rc;
}

size_t lt_json_bytes(char *dst, const char *s, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] == 0xC0 && i + 1 < n && (unsigned char)s[i + 1] == 0x80) {
            dst[j++] = '\0';
            i++;
        } else {
            dst[j++] = s[i];
        }
    }
    return j;
}

bool lt_json_has_nul(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++)
        if ((unsigned char)s[i] == 0xC0 && (unsigned char)s[i + 1] == 0x80) return true;
    return false;
}

const char *lt_json_show(const char *s, size_t max_chars, char *out, size_t cap) {
    size_t k = 0, chars = 0, n = s ? strlen(s) : 0;
    if (!cap) return out;
    for (size_t i = 0; i < n;) {
        const unsigned char c = (unsigned char)s[i];
        char piece[8];
        size_t m, adv;
        int ok;
        if (c == 0xC0 && i + 1 < n && (unsigned char)s[i + 1] == 0x80) {
            m = (size_t)snprintf(piece, sizeof piece, "\\u0000");
            adv = 2;
        } else if (c < 0x20 || c == 0x7f) {
            m = (size_t)snprintf(piece, sizeof piece, "\\u%04x", c);
            adv = 1;
        } else {
            int sl = lt_utf8_seq(s + i, n - i, &ok);
            adv = sl > 0 ? (size_t)sl : 1;
            m = sl > 0 ? adv : 3;
            memcpy(piece, sl > 0 ? s + i : "\xEF\xBF\xBD", m);
        }
        if (chars == max_chars || k + m + 4 > cap) {
            if (k + 4 <= cap) memcpy(out + k, "...", 3), k += 3;
            break;
        }
        memcpy(out + k, piece, m);
        k += m;
        i += adv;
        chars++;
    }
    out[k < cap ? k : cap - 1] = '\0';
    return out;
}
