/*
 * filters.c — jinja2's filters (`value | name(args)`), one function each in a table by name: the
 * parser looks names up in it, the renderer dispatches through it after binding the call's
 * arguments to the filter's parameters as Python would.
 *
 * Why a table: a filter is one function and one row; aliases (count and length, d and default,
 * e and escape) share a function, and the generator filters (select, map, unique...) share the
 * lazy-failure rules below.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

/* ---- generators and keys ---- */

static bool is_iterable(const val_t *v) {
    return v->k == VK_UNDEF || v->k == VK_LIST || v->k == VK_DICT || v->k == VK_STR;
}

/* What a generator filter returns for input it cannot iterate: jinja2 only fails when the
 * generator is consumed, so until then it is an (always true) iterator. */
static int deferred_iter(render_t *r, int line, const char *msg, const val_t *v, val_t *out) {
    list_t *l = jt_list_new(r, 0);
    char *m = jt_alloc(r, 128);
    if (!l || !m) return jt_nomem(r, line);
    snprintf(m, 128, msg, jt_typename(v->k, v->f));
    l->err = m;
    *out = v_list(l, LF_ITER);
    return 0;
}

/* The start of a generator filter (select, map...): v's items, a step each, and a list for what
 * it yields; or, when v cannot be iterated, *l NULL and *out the deferred failure. */
static int generator_start(render_t *r, int line, const val_t *v, const val_t **items, size_t *n,
                           list_t **l, val_t *out) {
    int rc;
    *l = NULL;
    if (!is_iterable(v)) return deferred_iter(r, line, "'%s' object is not iterable", v, out);
    if ((rc = jt_iter_items(r, line, v, items, n)) || (rc = jt_step(r, line, *n))) return rc;
    *l = jt_list_new(r, *n);
    return *l ? 0 : jt_nomem(r, line);
}

/* A generator filter's per-item failure (a test or filter raising on one item) becomes a deferred
 * iterator too: jinja2 would only raise when the items are consumed. Other errors stay errors. */
static int defer_failure(render_t *r, int line, int rc, val_t *out) {
    if (rc != LT_ERR_INVAL || r->raised) return rc;
    const char *msg = strstr(r->err, ": ");
    msg = msg ? msg + 2 : r->err;
    char *m = jt_alloc(r, strlen(msg) + 1);
    list_t *l = jt_list_new(r, 0);
    if (!m || !l) return jt_nomem(r, line);
    strcpy(m, msg);
    l->err = m;
    *out = v_list(l, LF_ITER);
    return 0;
}

/* make_attrgetter: item["a"]["b"] for "a.b" (digit parts index lists). */
static int attr_path(render_t *r, int line, const val_t *item, const val_t *attr, val_t *out) {
    if (attr->k != VK_STR) return jt_getitem(r, line, item, attr, out);
    val_t cur = *item;
    const char *s = attr->u.s;
    size_t n = attr->n;
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && s[j] != '.') j++;
        bool digits = j > i;
        int64_t num = 0;
        for (size_t k = i; k < j && digits; k++) {
            digits = jt_is_digit(s[k]);
            num = num * 10 + (s[k] - '0');
        }
        val_t key = digits ? v_int(num) : v_str(s + i, j - i), next;
        int rc = jt_getitem(r, line, &cur, &key, &next);
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
    return jt_str_case(r, line, v, CASE_LOWER, out);
}

/* Stable merge sort of order[] by keys[]; incomparable keys are a TypeError. */
static int sort_order(render_t *r, int line, const val_t *keys, uint32_t *order, size_t n,
                      bool reverse) {
    uint32_t *tmp = jt_alloc(r, (n ? n : 1) * sizeof *tmp);
    if (!tmp) return jt_nomem(r, line);
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int c;
                if (!jt_cmp(&keys[order[j]], &keys[order[i]], &c, 0))
                    return jt_err(r, line, LT_ERR_INVAL,
                                  "'<' not supported between instances of '%s' and '%s'",
                                  jt_typename(keys[order[j]].k, keys[order[j]].f),
                                  jt_typename(keys[order[i]].k, keys[order[i]].f));
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

/* The test a string value names (select, reject...), or -1. */
static int find_test_by_name(const val_t *name) {
    return name->k == VK_STR ? jt_test_find(name->u.s, name->n) : -1;
}

/* ---- the filters ---- */

/* A filter gets its operand v and the call's arguments as they came (a); unless its row is
 * variadic, they are also bound to the row's parameters in sl (unbound slots VK_MISSING). */
typedef int (*filter_fn)(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out);

/* select / reject / selectattr / rejectattr. */
static int select_items(render_t *r, int line, const val_t *v, const args_t *a, bool attr,
                        bool keep, val_t *out) {
    if (a->nkw)
        return jt_err(r, line, LT_ERR_UNSUPPORTED,
                      "unsupported keyword argument to select filters");
    int off = attr ? 1 : 0, test = -1, rc;
    if (attr && a->npos < 1)
        return jt_err(r, line, LT_ERR_INVAL, "selectattr/rejectattr need an attribute name");
    if (a->npos > off) {
        test = find_test_by_name(&a->pos[off]);
        if (test < 0) {
            val_t nm;
            if ((rc = jt_tostr(r, line, &a->pos[off], &nm))) return rc;
            return jt_err(r, line, LT_ERR_INVAL, "no test named '%.*s'", (int)nm.n, nm.u.s);
        }
    }
    args_t targs = {.pos = a->npos > off + 1 ? a->pos + off + 1 : NULL,
                    .npos = a->npos > off + 1 ? a->npos - off - 1 : 0};
    const val_t *items;
    size_t n;
    list_t *l;
    if ((rc = generator_start(r, line, v, &items, &n, &l, out)) || !l) return rc;
    for (size_t i = 0; i < n; i++) {
        val_t x = items[i];
        if (attr && (rc = attr_path(r, line, &items[i], &a->pos[0], &x)))
            return defer_failure(r, line, rc, out);
        bool ok;
        if (test < 0)
            ok = v_truthy(&x);
        else if ((rc = jt_test_apply(r, line, test, &x, &targs, &ok)))
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
                return jt_err(r, line, LT_ERR_INVAL, "unexpected keyword argument '%s'", nm);
        }
        if (!attr) return jt_err(r, line, LT_ERR_INVAL, "map requires a filter argument");
    } else {
        if (a->pos[0].k != VK_STR || (filt = jt_filter_find(a->pos[0].u.s, a->pos[0].n)) < 0)
            return jt_err(r, line, LT_ERR_INVAL, "map: no filter named '%.*s'",
                          a->pos[0].k == VK_STR ? (int)a->pos[0].n : 1,
                          a->pos[0].k == VK_STR ? a->pos[0].u.s : "?");
        fargs = (args_t){
            .pos = a->pos + 1, .npos = a->npos - 1, .kwv = a->kwv, .kwid = a->kwid, .nkw = a->nkw};
    }
    const val_t *items;
    size_t n;
    list_t *l;
    if ((rc = generator_start(r, line, v, &items, &n, &l, out)) || !l) return rc;
    for (size_t i = 0; i < n; i++) {
        val_t x;
        if (attr) {
            if ((rc = attr_path(r, line, &items[i], attr, &x)))
                return defer_failure(r, line, rc, out);
            if (x.k == VK_UNDEF && dflt) x = *dflt;
        } else if ((rc = jt_filter_apply(r, line, filt, &items[i], &fargs, &x))) {
            return defer_failure(r, line, rc, out);
        }
        l->v[l->n++] = x;
    }
    *out = v_list(l, LF_ITER);
    return 0;
}

/* Python's int(str) (base 10): optional sign, digits with single underscores, spaces around. */
static bool parse_int_str(const val_t *s, int64_t *out) {
    val_t t = jt_str_strip(s, NULL, true, true);
    const char *p = t.u.s;
    size_t n = t.n, i = 0;
    bool neg = false;
    if (i < n && (p[i] == '+' || p[i] == '-')) neg = p[i++] == '-';
    if (i >= n || !jt_is_digit(p[i])) return false;
    uint64_t acc = 0;
    for (; i < n; i++) {
        if (p[i] == '_' && i + 1 < n && jt_is_digit(p[i + 1]) && jt_is_digit(p[i - 1])) continue;
        if (!jt_is_digit(p[i])) return false;
        if (acc > (uint64_t)INT64_MAX / 10) return false;
        acc = acc * 10 + (uint64_t)(p[i] - '0');
    }
    if (acc > (uint64_t)INT64_MAX) return false;
    *out = neg ? -(int64_t)acc : (int64_t)acc;
    return true;
}

/* Python's float(str). */
static bool parse_float_str(const val_t *s, double *out) {
    val_t t = jt_str_strip(s, NULL, true, true);
    if (t.n == 0 || t.n > 100) return false;
    char buf[128];
    size_t k = 0;
    for (size_t i = 0; i < t.n; i++) {
        char c = t.u.s[i];
        if (c == '_' && i > 0 && i + 1 < t.n && jt_is_digit(t.u.s[i - 1]) &&
            jt_is_digit(t.u.s[i + 1]))
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
    o.ensure_ascii = jt_arg_bool(&sl[0], false);
    o.sort_keys = jt_arg_bool(&sl[3], false);
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
            return jt_err(r, line, LT_ERR_INVAL, "tojson: indent must be an integer or a string");
        }
        o.item_sep = ",";
        o.item_sep_n = 1;
    }
    const val_t *sep = &sl[2];
    if (sep->k != VK_MISSING && sep->k != VK_NONE) {
        if (sep->k != VK_LIST || sep->u.l->n != 2 || sep->u.l->v[0].k != VK_STR ||
            sep->u.l->v[1].k != VK_STR)
            return jt_err(r, line, LT_ERR_INVAL, "tojson: separators must be a pair of strings");
        o.item_sep = sep->u.l->v[0].u.s;
        o.item_sep_n = sep->u.l->v[0].n;
        o.key_sep = sep->u.l->v[1].u.s;
        o.key_sep_n = sep->u.l->v[1].n;
    }
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    const val_t *bad = NULL;
    int rc = jt_json_write(r, &b, v, &o, 0, &bad);
    if (rc) {
        lt_buf_free(&b);
        if (bad)
            return jt_err(r, line, LT_ERR_INVAL, "Object of type %s is not JSON serializable",
                          jt_typename(bad->k, bad->f));
        return rc == LT_ERR_NOMEM ? jt_nomem(r, line) : jt_outerr(r, line, rc);
    }
    return jt_str_take(r, line, &b, 0, out);
}

/* `s += "\n"` in jinja2: only strings. */
static int filter_indent(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    if (v->k == VK_UNDEF) return jt_undef_err(r, line, v);
    if (v->k != VK_STR)
        return jt_type_err(r, line, "unsupported operand type(s) for +=: '%s' and 'str'", v, NULL);
    char spaces[64];
    val_t ind;
    if (sl[0].k == VK_STR) {
        ind = sl[0];
    } else {
        int64_t w = 0;
        int rc = jt_arg_int(r, line, &sl[0], 4, "indent", &w);
        if (rc) return rc;
        if (w < 0) w = 0;
        if (w > (int64_t)sizeof spaces) w = sizeof spaces;
        memset(spaces, ' ', sizeof spaces);
        ind = v_str(spaces, (size_t)w);
    }
    bool first = jt_arg_bool(&sl[1], false), blank = jt_arg_bool(&sl[2], false);
    /* s += "\n"; lines = s.splitlines(); ... as jinja2 does */
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    int rc = lt_buf_put(&b, v->u.s, v->n);
    if (!rc) rc = lt_buf_putc(&b, '\n');
    val_t whole = v_str(b.data, b.len), lines;
    if (!rc && (rc = jt_str_splitlines(r, line, &whole, &lines))) {
        lt_buf_free(&b);
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
    lt_buf_free(&b); /* after the lines, which point into it */
    return jt_str_take(r, line, &o, rc, out);
}

static int filter_join(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    const val_t *items;
    size_t n;
    val_t sep = v_str("", 0), x, s = {0};
    int rc;
    if (sl[0].k != VK_MISSING && (rc = jt_tostr(r, line, &sl[0], &sep))) return rc;
    if ((rc = jt_iter_items(r, line, v, &items, &n)) || (rc = jt_step(r, line, n))) return rc;
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    for (size_t i = 0; i < n && !rc; i++) {
        x = items[i];
        if (sl[1].k != VK_MISSING && (rc = attr_path(r, line, &items[i], &sl[1], &x))) break;
        if ((rc = jt_tostr(r, line, &x, &s))) break;
        int brc = (i ? lt_buf_put(&b, sep.u.s, sep.n) : 0);
        if (!brc) brc = lt_buf_put(&b, s.u.s, s.n);
        if (brc) rc = jt_outerr(r, line, brc);
    }
    if (rc) {
        lt_buf_free(&b);
        return rc;
    }
    return jt_str_take(r, line, &b, 0, out);
}

/* The items of v (a step each) and their keys for sort, unique, min and max: through attribute
 * when given, lower-cased unless case_sensitive. */
static int items_and_keys(render_t *r, int line, const val_t *v, const val_t *attr,
                          bool case_sensitive, const val_t **items, size_t *n, val_t **keys) {
    int rc;
    if ((rc = jt_iter_items(r, line, v, items, n)) || (rc = jt_step(r, line, *n))) return rc;
    val_t *k = jt_alloc(r, (*n ? *n : 1) * sizeof *k);
    if (!k) return jt_nomem(r, line);
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
    int rc = items_and_keys(r, line, v, &sl[2], jt_arg_bool(&sl[1], false), &items, &n, &keys);
    if (rc) return rc;
    list_t *l = jt_list_new(r, n);
    uint32_t *order = l ? jt_alloc(r, (n ? n : 1) * sizeof *order) : NULL;
    if (!order) return jt_nomem(r, line);
    for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
    if ((rc = sort_order(r, line, keys, order, n, jt_arg_bool(&sl[0], false)))) return rc;
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
    int rc = items_and_keys(r, line, v, &sl[1], jt_arg_bool(&sl[0], false), &items, &n, &keys);
    if (rc) return rc;
    list_t *l = jt_list_new(r, n);
    if (!l) return jt_nomem(r, line);
    for (size_t i = 0; i < n; i++) {
        size_t j;
        for (j = 0; j < i; j++)
            if (jt_eq(&keys[j], &keys[i], 0)) break;
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
    int rc = items_and_keys(r, line, v, &sl[1], jt_arg_bool(&sl[0], false), &items, &n, &keys);
    if (rc) return rc;
    if (n == 0) {
        *out = v_undef_hint(UH_MSG, 0, "No aggregated item, sequence was empty.", 39);
        return 0;
    }
    size_t best = 0;
    for (size_t i = 1; i < n; i++) {
        int c;
        if (!jt_cmp(&keys[i], &keys[best], &c, 0))
            return jt_type_err(r, line, "'<' not supported between instances of '%s' and '%s'",
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
    int rc = jt_tostr(r, line, v, out);
    if (!rc) out->f = 1;
    return rc;
}

static int filter_string(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    return jt_tostr(r, line, v, out);
}

/* str(value), then a case mapping (CASE_*). */
static int case_filter(render_t *r, int line, const val_t *v, int mode, val_t *out) {
    val_t s = {0};
    int rc = jt_tostr(r, line, v, &s);
    return rc ? rc : jt_str_case(r, line, &s, mode, out);
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
    if ((rc = jt_tostr(r, line, v, &s))) return rc;
    if (sl[0].k != VK_MISSING && sl[0].k != VK_NONE && (rc = jt_need_str(r, line, &sl[0], "trim")))
        return rc;
    *out = jt_str_strip(&s, sl[0].k == VK_STR ? &sl[0] : NULL, true, true);
    return 0;
}

static int filter_default(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                          val_t *out) {
    if (v->k == VK_UNDEF || (jt_arg_bool(&sl[1], false) && !v_truthy(v)))
        *out = sl[0].k == VK_MISSING ? v_str("", 0) : sl[0];
    else
        *out = *v;
    return 0;
}

static int filter_length(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    switch (v->k) {
    case VK_UNDEF: *out = v_int(0); return 0;
    case VK_STR: *out = v_int((int64_t)jt_u8_count(v->u.s, v->n)); return 0;
    case VK_LIST:
        if (v_isiter(v)) break;
        *out = v_int(v->u.l->n);
        return 0;
    case VK_DICT: *out = v_int(v->u.m->n); return 0;
    case VK_LOOP: *out = v_int(v->u.lp->n); return 0;
    default: break;
    }
    return jt_type_err(r, line, "object of type '%s' has no len()", v, NULL);
}

/* The first or last item; undefined when there is none (with the first filter's message for
 * both, where jinja2's last says "No last item"). */
static int end_item(render_t *r, int line, const val_t *v, bool last, val_t *out) {
    const val_t *items;
    size_t n;
    int rc = jt_iter_items(r, line, v, &items, &n);
    if (rc) return rc;
    *out = n ? items[last ? n - 1 : 0]
             : v_undef_hint(UH_MSG, 0, "No first item, sequence was empty.", 34);
    return 0;
}

static int filter_first(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    return end_item(r, line, v, false, out);
}

static int filter_last(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    if (v_isiter(v)) return jt_type_err(r, line, "'%s' object is not reversible", v, NULL);
    return end_item(r, line, v, true, out);
}

static int filter_list(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                       val_t *out) {
    const val_t *items;
    size_t n;
    int rc = jt_iter_items(r, line, v, &items, &n);
    if (rc) return rc;
    list_t *l = jt_list_new(r, n);
    if (!l) return jt_nomem(r, line);
    if (n) memcpy(l->v, items, n * sizeof *items);
    l->n = (uint32_t)n;
    *out = v_list(l, 0);
    return 0;
}

static int filter_items(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    if (v->k == VK_UNDEF) {
        list_t *l = jt_list_new(r, 0);
        if (!l) return jt_nomem(r, line);
        *out = v_list(l, LF_ITER);
        return 0;
    }
    if (v->k != VK_DICT)
        return deferred_iter(r, line, "Can only get item pairs from a mapping.", v, out);
    list_t *l = jt_dict_items(r, v->u.m, NULL);
    if (!l) return jt_nomem(r, line);
    *out = v_list(l, LF_ITER);
    return 0;
}

static int filter_replace(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                          val_t *out) {
    val_t s, old, rep;
    int64_t count = 0;
    int rc;
    if (sl[0].k == VK_MISSING || sl[1].k == VK_MISSING)
        return jt_err(r, line, LT_ERR_INVAL, "replace needs old and new strings");
    if ((rc = jt_tostr(r, line, v, &s)) || (rc = jt_tostr(r, line, &sl[0], &old)) ||
        (rc = jt_tostr(r, line, &sl[1], &rep)) ||
        (rc = jt_arg_int(r, line, &sl[2], -1, "replace", &count)))
        return rc;
    return jt_str_replace(r, line, &s, &old, &rep, count, out);
}

static int filter_escape(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    if (v->k == VK_STR && v->f) {
        *out = *v;
        return 0;
    }
    val_t s;
    int rc = jt_tostr(r, line, v, &s);
    return rc ? rc : jt_html_escape(r, line, &s, out);
}

static int filter_int(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                      val_t *out) {
    int64_t dflt = 0, i;
    double d;
    int rc;
    if (v->k == VK_UNDEF) return jt_undef_err(r, line, v);
    if ((rc = jt_arg_int(r, line, &sl[0], 0, "int", &dflt))) return rc;
    if (sl[1].k != VK_MISSING && !(v_isint(&sl[1]) && v_asint(&sl[1]) == 10))
        return jt_err(r, line, LT_ERR_UNSUPPORTED, "unsupported int filter base");
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
    if (v->k == VK_UNDEF) return jt_undef_err(r, line, v);
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
    if (!v_isint(v)) return jt_type_err(r, line, "bad operand type for abs(): '%s'", v, NULL);
    int64_t i = v_asint(v);
    if (i == INT64_MIN) return jt_err(r, line, LT_ERR_RANGE, "integer overflow");
    *out = v_int(i < 0 ? -i : i);
    return 0;
}

static int filter_round(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                        val_t *out) {
    int64_t prec = 0;
    int rc;
    if ((rc = jt_arg_int(r, line, &sl[0], 0, "round", &prec))) return rc;
    val_t m = sl[1].k == VK_MISSING ? v_str("common", 6) : sl[1];
    bool common = v_streq(&m, "common", 6), ceil_ = v_streq(&m, "ceil", 4);
    if (!common && !ceil_ && !v_streq(&m, "floor", 5))
        return jt_err(r, line, LT_ERR_INVAL, "method must be common, ceil or floor");
    if (!v_isnum(v))
        return jt_type_err(r, line, "type %s doesn't define __round__ method", v, NULL);
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
    if (sl[0].k == VK_MISSING) return jt_err(r, line, LT_ERR_INVAL, "attr needs a name");
    if ((rc = jt_tostr(r, line, &sl[0], &s))) return rc;
    if (v->k == VK_DICT) { /* an attribute, not a key: only methods */
        bool unsafe;
        int m = jt_method_find(s.u.s, s.n);
        if (jt_method_of(v, m, &unsafe) && !unsafe) return jt_bound_method(r, line, v, m, out);
        *out = v_undef_hint(UH_ATTR, VK_DICT, s.u.s, s.n);
        return 0;
    }
    return jt_getattr(r, line, v, s.u.s, s.n, jt_method_find(s.u.s, s.n), out);
}

static int filter_reverse(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                          val_t *out) {
    if (v->k == VK_STR) {
        char *o = jt_str_new(r, v->n, out);
        if (!o) return jt_nomem(r, line);
        size_t k = v->n;
        for (size_t i = 0; i < v->n;) {
            size_t j = i;
            jt_u8_next(v->u.s, v->n, &j);
            k -= j - i;
            memcpy(o + k, v->u.s + i, j - i);
            i = j;
        }
        return 0;
    }
    const val_t *items;
    size_t n;
    int rc = jt_iter_items(r, line, v, &items, &n);
    if (rc) return rc;
    list_t *l = jt_list_new(r, n);
    if (!l) return jt_nomem(r, line);
    for (size_t i = 0; i < n; i++) l->v[i] = items[n - 1 - i];
    l->n = (uint32_t)n;
    *out = v_list(l, v_isiter(v) ? 0 : LF_ITER);
    return 0;
}

/* str(value) % (kwargs or args) */
static int filter_format(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                         val_t *out) {
    if (a->npos && a->nkw)
        return jt_err(r, line, LT_ERR_INVAL,
                      "can't handle positional and keyword arguments at the same time");
    val_t arg, s;
    int rc;
    if (a->nkw) {
        dict_t *d = jt_dict_new(r, (size_t)a->nkw);
        if (!d) return jt_nomem(r, line);
        for (int k = 0; k < a->nkw; k++) {
            const name_t *nm = &r->t->names[a->kwid[k]];
            if (!jt_dict_set(r, d, v_str(nm->s, nm->n), a->kwv[k])) return jt_nomem(r, line);
        }
        arg = (val_t){.k = VK_DICT, .u.m = d};
    } else {
        list_t *l = jt_list_new(r, (size_t)a->npos);
        if (!l) return jt_nomem(r, line);
        for (int k = 0; k < a->npos; k++) l->v[l->n++] = a->pos[k];
        arg = v_list(l, LF_TUPLE);
    }
    if ((rc = jt_tostr(r, line, v, &s))) return rc;
    return jt_str_percent(r, line, &s, &arg, out);
}

static int filter_sum(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                      val_t *out) {
    val_t acc = sl[1].k == VK_MISSING ? v_int(0) : sl[1];
    const val_t *items;
    size_t n;
    int rc;
    if ((rc = jt_iter_items(r, line, v, &items, &n)) || (rc = jt_step(r, line, n))) return rc;
    for (size_t i = 0; i < n; i++) {
        val_t x = items[i];
        if (sl[0].k != VK_MISSING && sl[0].k != VK_NONE &&
            (rc = attr_path(r, line, &items[i], &sl[0], &x)))
            return rc;
        if ((rc = jt_arith(r, line, OP_ADD, &acc, &x, &acc))) return rc;
    }
    *out = acc;
    return 0;
}

static int filter_dictsort(render_t *r, int line, const val_t *v, const args_t *a, const val_t *sl,
                           val_t *out) {
    if (v->k != VK_DICT) return jt_type_err(r, line, "dictsort: '%s' is not a mapping", v, NULL);
    bool cs = jt_arg_bool(&sl[0], false), by_value = false;
    int rc;
    if (sl[1].k != VK_MISSING) {
        if (v_streq(&sl[1], "value", 5))
            by_value = true;
        else if (!v_streq(&sl[1], "key", 3))
            return jt_err(r, line, LT_ERR_INVAL,
                          "You can only sort by either \"key\" or \"value\"");
    }
    const dict_t *d = v->u.m;
    size_t n = d->n;
    val_t *keys = jt_alloc(r, (n ? n : 1) * sizeof *keys);
    uint32_t *order = jt_alloc(r, (n ? n : 1) * sizeof *order);
    if (!keys || !order) return jt_nomem(r, line);
    for (size_t i = 0; i < n; i++) {
        order[i] = (uint32_t)i;
        if ((rc = fold_case(r, line, by_value ? &d->v[i] : &d->k[i], cs, &keys[i]))) return rc;
    }
    if ((rc = sort_order(r, line, keys, order, n, jt_arg_bool(&sl[2], false)))) return rc;
    list_t *l = jt_dict_items(r, d, order);
    if (!l) return jt_nomem(r, line);
    *out = v_list(l, 0);
    return 0;
}

/* ---- the table ---- */

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

int jt_filter_find(const char *s, size_t len) {
    for (size_t i = 0; i < COUNT_OF(k_filters); i++)
        if (strlen(k_filters[i].name) == len && memcmp(k_filters[i].name, s, len) == 0)
            return (int)i;
    return -1;
}

int jt_filter_apply(render_t *r, int line, int idx, const val_t *v, const args_t *a, val_t *out) {
    val_t sl[4];
    int rc, np = 0;
    if (!k_filters[idx].variadic) {
        char what[48];
        while (np < 4 && k_filters[idx].params[np]) np++;
        snprintf(what, sizeof what, "filter '%s'", k_filters[idx].name);
        if ((rc = jt_bind(r, line, what, k_filters[idx].params, np, a, sl))) return rc;
    }
    return k_filters[idx].fn(r, line, v, a, sl, out);
}
