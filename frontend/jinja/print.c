/*
 * print.c — values as text: Python's str() and repr() (the shortest repr of a float, the quotes
 * and escapes Python chooses) and transformers' tojson (json.dumps with ensure_ascii=False unless
 * asked, indent, separators and sort_keys).
 *
 * Why apart: printing is where a rendered prompt most easily differs from transformers' by a
 * byte, so it lives in one place with nothing else.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

/* ---- str() and repr() ---- */

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
        uint32_t c = jt_u8_next(s, n, &j);
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

static int write_dict_body(render_t *r, lt_buf_t *b, const dict_t *d, int depth) {
    int rc = lt_buf_putc(b, '{');
    for (uint32_t i = 0; i < d->n && !rc; i++) {
        if (i) rc = lt_buf_put(b, ", ", 2);
        if (!rc) rc = jt_write(r, b, &d->k[i], true, depth + 1);
        if (!rc) rc = lt_buf_put(b, ": ", 2);
        if (!rc) rc = jt_write(r, b, &d->v[i], true, depth + 1);
    }
    return rc ? rc : lt_buf_putc(b, '}');
}

int jt_write(render_t *r, lt_buf_t *b, const val_t *v, bool repr, int depth) {
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
            if (!rc) rc = jt_write(r, b, &l->v[i], true, depth + 1);
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
            return lt_buf_printf(b, "<function %s>", jt_fixed_names[v->u.fn->id]);
        return lt_buf_puts(b, "<built-in method>");
    default: return 0;
    }
}

int jt_tostr(render_t *r, int line, const val_t *v, val_t *out) {
    if (v->k == VK_STR) {
        *out = *v;
        return 0;
    }
    if (v->k == VK_UNDEF) {
        *out = v_str("", 0);
        return 0;
    }
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    return jt_str_take(r, line, &b, jt_write(r, &b, v, false, 0), out);
}

/* ---- JSON (transformers' tojson: json.dumps with ensure_ascii=False) ---- */

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
            uint32_t cp = jt_u8_next(s, n, &j);
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

int jt_json_write(render_t *r, lt_buf_t *b, const val_t *v, const json_opts_t *o, int level,
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
            if (!rc) rc = jt_json_write(r, b, &l->v[i], o, level + 1, bad);
        }
        if (!rc && o->indent) rc = json_newline(b, o, level);
        return rc ? rc : lt_buf_putc(b, ']');
    }
    case VK_DICT: {
        const dict_t *d = v->u.m;
        if (d->n == 0) return lt_buf_put(b, "{}", 2);
        uint32_t *order = NULL;
        if (o->sort_keys && d->n > 1) { /* insertion sort: keys are few, and this is stable */
            order = jt_alloc(r, d->n * sizeof *order);
            if (!order) return LT_ERR_NOMEM;
            for (uint32_t i = 0; i < d->n; i++) {
                uint32_t j = i;
                int c;
                while (j > 0 && jt_cmp(&d->k[i], &d->k[order[j - 1]], &c, 0) && c < 0) {
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
            if (!rc) rc = jt_json_write(r, b, &d->v[k], o, level + 1, bad);
        }
        if (!rc && o->indent) rc = json_newline(b, o, level);
        return rc ? rc : lt_buf_putc(b, '}');
    }
    default: *bad = v; return LT_ERR_INVAL;
    }
}
