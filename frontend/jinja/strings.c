/*
 * strings.c — Python's str operations on string values: strip, split, splitlines, replace,
 * find, count, the case mappings and the is...() predicates, printf-style `%` formatting, and
 * markupsafe's HTML escape.
 *
 * Why apart: str methods (s.split()), filters (|upper, |replace, |format) and operators (`%`,
 * Markup `+`) share these, so each is written once, against Python's behaviour.
 */

#define _GNU_SOURCE /* memmem */
#include <math.h>
#include <string.h>

#include "jinja_internal.h"

static bool cp_in(uint32_t c, const val_t *chars) {
    if (!chars) return jt_uc_isspace(c);
    for (size_t i = 0; i < chars->n;)
        if (jt_u8_next(chars->u.s, chars->n, &i) == c) return true;
    return false;
}

val_t jt_str_strip(const val_t *s, const val_t *chars, bool left, bool right) {
    size_t a = 0, b = s->n;
    while (left && a < b) {
        size_t j = a;
        if (!cp_in(jt_u8_next(s->u.s, b, &j), chars)) break;
        a = j;
    }
    while (right && b > a) {
        size_t j = b;
        if (!cp_in(jt_u8_prev(s->u.s, a, &j), chars)) break;
        b = j;
    }
    return v_str(s->u.s + a, b - a);
}

int jt_str_case(render_t *r, int line, const val_t *s, int mode, val_t *out) {
    char *o = jt_str_new(r, s->n, out);
    if (!o) return jt_nomem(r, line);
    size_t k = 0;
    bool prev_cased = false, first = true;
    uint32_t prev = 0;
    for (size_t i = 0; i < s->n;) {
        uint32_t c = jt_u8_next(s->u.s, s->n, &i);
        bool up;
        switch (mode) {
        case CASE_UPPER: up = true; break;
        case CASE_LOWER: up = false; break;
        case CASE_CAPITALIZE: up = first; break;
        case CASE_TITLE: up = !prev_cased; break;
        default:
            up = first || prev == '-' || prev == '(' || prev == '{' || prev == '[' || prev == '<' ||
                 jt_uc_isspace(prev);
        }
        if (up && c == 0xDF) { /* ß has no single upper-case letter */
            o[k++] = 'S';
            o[k++] = mode == CASE_UPPER || mode == CASE_JTITLE ? 'S' : 's';
        } else if (!up && c == 0x3A3 && prev_cased) { /* Σ ends a word as ς */
            size_t j = i;
            bool next_cased = i < s->n && jt_uc_cased(jt_u8_next(s->u.s, s->n, &j));
            k += jt_u8_put(next_cased ? 0x3C3 : 0x3C2, o + k);
        } else {
            k += jt_u8_put(up ? jt_uc_upper(c) : jt_uc_lower(c), o + k);
        }
        prev_cased = jt_uc_cased(c);
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

int jt_str_split(render_t *r, int line, const val_t *s, const val_t *sep, int64_t maxsplit,
                 bool right, val_t *out) {
    list_t *l = jt_list_new(r, 8);
    if (!l) return jt_nomem(r, line);
    const char *p = s->u.s;
    size_t n = s->n;
    int64_t count = 0;
    if (sep && sep->n == 0) return jt_err(r, line, LT_ERR_INVAL, "empty separator");
    if (!right) {
        size_t i = 0;
        for (;;) {
            if (!sep) {
                i = jt_ws_span(p, n, i);
                if (i == n) break;
            }
            if (maxsplit >= 0 && count == maxsplit) {
                if (!jt_list_push(r, l, v_str(p + i, n - i))) return jt_nomem(r, line);
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
                    if (jt_uc_isspace(jt_u8_next(p, n, &k))) break;
                    j = k;
                }
            }
            if (!jt_list_push(r, l, v_str(p + i, j - i))) return jt_nomem(r, line);
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
                    if (!jt_uc_isspace(jt_u8_prev(p, 0, &k))) break;
                    e = k;
                }
                if (e == 0) break;
            }
            if (maxsplit >= 0 && count == maxsplit) {
                if (!jt_list_push(r, l, v_str(p, e))) return jt_nomem(r, line);
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
                    if (jt_uc_isspace(jt_u8_prev(p, 0, &k))) break;
                    b = k;
                }
            }
            if (!jt_list_push(r, l, v_str(p + b, e - b))) return jt_nomem(r, line);
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

int jt_str_splitlines(render_t *r, int line, const val_t *s, val_t *out) {
    list_t *l = jt_list_new(r, 8);
    if (!l) return jt_nomem(r, line);
    size_t i = 0, start = 0;
    while (i < s->n) {
        size_t j = i;
        uint32_t c = jt_u8_next(s->u.s, s->n, &j);
        if (is_line_break(c)) {
            if (!jt_list_push(r, l, v_str(s->u.s + start, i - start))) return jt_nomem(r, line);
            if (c == '\r' && j < s->n && s->u.s[j] == '\n') j++;
            start = j;
        }
        i = j;
    }
    if (start < s->n && !jt_list_push(r, l, v_str(s->u.s + start, s->n - start)))
        return jt_nomem(r, line);
    *out = v_list(l, 0);
    return 0;
}

int jt_str_replace(render_t *r, int line, const val_t *s, const val_t *old, const val_t *rep,
                   int64_t count, val_t *out) {
    size_t hits = 0;
    if (old->n == 0) {
        hits = jt_u8_count(s->u.s, s->n) + 1;
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
    if (len > CT_MAX_OUTPUT) return jt_err(r, line, LT_ERR_RANGE, "replace() result too long");
    char *o = jt_str_new(r, (size_t)len, out);
    if (!o) return jt_nomem(r, line);
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
            jt_u8_next(s->u.s, s->n, &j);
            memcpy(o + k, s->u.s + i, j - i);
            k += j - i;
            i = j;
        }
    }
    memcpy(o + k, s->u.s + i, s->n - i);
    return 0;
}

int64_t jt_str_find(const val_t *s, const val_t *sub, bool right) {
    const char *f = right ? memrmem(s->u.s, s->n, sub->u.s, sub->n)
                          : (sub->n == 0 ? s->u.s : memmem(s->u.s, s->n, sub->u.s, sub->n));
    if (!f) return -1;
    return (int64_t)jt_u8_count(s->u.s, (size_t)(f - s->u.s));
}

int64_t jt_str_count(const val_t *s, const val_t *sub) {
    if (sub->n == 0) return (int64_t)jt_u8_count(s->u.s, s->n) + 1;
    int64_t k = 0;
    for (const char *p = s->u.s, *e = s->u.s + s->n;
         (p = memmem(p, (size_t)(e - p), sub->u.s, sub->n)); p += sub->n)
        k++;
    return k;
}

bool jt_str_all(const val_t *s, bool (*pred)(uint32_t)) {
    if (s->n == 0) return false;
    for (size_t i = 0; i < s->n;)
        if (!pred(jt_u8_next(s->u.s, s->n, &i))) return false;
    return true;
}

bool jt_str_iscase(const val_t *s, bool want_lower) {
    bool cased = false;
    for (size_t i = 0; i < s->n;) {
        uint32_t c = jt_u8_next(s->u.s, s->n, &i);
        if (want_lower ? jt_uc_isupper(c) : jt_uc_islower(c)) return false;
        cased = cased || jt_uc_cased(c);
    }
    return cased;
}

/* ---- formatting and escaping ---- */

int jt_str_percent(render_t *r, int line, const val_t *fmt, const val_t *arg, val_t *out) {
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
            rc = jt_err(r, line, LT_ERR_INVAL, "incomplete format");
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
                rc = jt_err(r, line, LT_ERR_INVAL, "format requires a mapping");
                break;
            }
            size_t j = (size_t)(close - s);
            int k = jt_dict_find_str(arg->u.m, s + i + 1, j - i - 1);
            if (k < 0) {
                rc = jt_err(r, line, LT_ERR_INVAL, "KeyError: '%.*s'", (int)(j - i - 1), s + i + 1);
                break;
            }
            v = &arg->u.m->v[k];
            i = j + 1;
        } else {
            if (used >= nargs) {
                rc = jt_err(r, line, LT_ERR_INVAL, "not enough arguments for format string");
                break;
            }
            v = &args[used++];
        }
        char c = i < n ? s[i++] : 0;
        if (c == 's' || c == 'r') {
            brc = jt_write(r, &b, v, c == 'r', 0);
        } else if ((c == 'd' || c == 'i') && v_isnum(v)) {
            if (v->k == VK_FLOAT && !isfinite(v->u.d))
                rc = jt_err(r, line, LT_ERR_INVAL,
                            "cannot convert float infinity or NaN to integer");
            else
                brc = lt_buf_printf(&b, "%lld",
                                    (long long)(v->k == VK_FLOAT ? (int64_t)v->u.d : v_asint(v)));
        } else if (c == 'd' || c == 'i') {
            rc = jt_type_err(r, line, "%%d format: a real number is required, not %s", v, NULL);
        } else {
            rc = jt_err(r, line, LT_ERR_UNSUPPORTED, "unsupported format specification '%%%c'",
                        c ? c : ' ');
        }
    }
    if (!rc && !brc && !mapping && used < nargs)
        rc = jt_err(r, line, LT_ERR_INVAL, "not all arguments converted during string formatting");
    if (rc) {
        lt_buf_free(&b);
        return rc;
    }
    return jt_str_take(r, line, &b, brc, out);
}

int jt_html_escape(render_t *r, int line, const val_t *v, val_t *out) {
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
    if ((rc = jt_str_take(r, line, &b, rc, out))) return rc;
    out->f = 1;
    return 0;
}
