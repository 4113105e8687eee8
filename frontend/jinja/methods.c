/*
 * methods.c — the Python methods templates call on values (s.strip(), d.items(), loop.cycle()...),
 * one function each in a table that also says which receivers have each method and on which the
 * sandbox refuses it (list.append and the other methods that mutate).
 *
 * Why a table: which types have which method, what is refused and how the arguments bind are
 * data, kept side by side in one place rather than spread through a switch.
 */

#include <stdio.h>
#include <string.h>

#include "jinja_internal.h"

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
    if (v->k != VK_MISSING && v->k != VK_NONE && (rc = jt_need_str(r, line, v, what))) return rc;
    *out = v->k == VK_STR ? v : NULL;
    return 0;
}

static int strip_method(render_t *r, int line, const val_t *self, const val_t *sl, const char *what,
                        bool left, bool right, val_t *out) {
    const val_t *chars;
    int rc = opt_str(r, line, &sl[0], what, &chars);
    if (rc) return rc;
    *out = jt_str_strip(self, chars, left, right);
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
    if ((rc = jt_arg_int(r, line, &sl[1], -1, what, &maxsplit)) ||
        (rc = opt_str(r, line, &sl[0], what, &sep)))
        return rc;
    return jt_str_split(r, line, self, sep, maxsplit, right, out);
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
    if (jt_arg_bool(&sl[0], false))
        return jt_err(r, line, LT_ERR_UNSUPPORTED, "unsupported splitlines(keepends=True)");
    return jt_str_splitlines(r, line, self, out);
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
            return jt_err(r, line, LT_ERR_INVAL, "%s: expected a str or a tuple of str", what);
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
    return jt_str_case(r, line, self, CASE_UPPER, out);
}

static int method_lower(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    return jt_str_case(r, line, self, CASE_LOWER, out);
}

static int method_casefold(render_t *r, int line, const val_t *self, const args_t *a,
                           const val_t *sl, const char *what, val_t *out) {
    return jt_str_case(r, line, self, CASE_LOWER, out);
}

static int method_title(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    return jt_str_case(r, line, self, CASE_TITLE, out);
}

static int method_capitalize(render_t *r, int line, const val_t *self, const args_t *a,
                             const val_t *sl, const char *what, val_t *out) {
    return jt_str_case(r, line, self, CASE_CAPITALIZE, out);
}

static int method_replace(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    int64_t count = 0;
    int rc;
    if (sl[0].k == VK_MISSING || sl[1].k == VK_MISSING)
        return jt_err(r, line, LT_ERR_INVAL, "%s needs old and new", what);
    if ((rc = jt_need_str(r, line, &sl[0], what)) || (rc = jt_need_str(r, line, &sl[1], what)) ||
        (rc = jt_arg_int(r, line, &sl[2], -1, what, &count)))
        return rc;
    return jt_str_replace(r, line, self, &sl[0], &sl[1], count, out);
}

/* The one argument of find, count, index and the like; a string unless self is a list. */
static int sub_arg(render_t *r, int line, const val_t *self, const val_t *sl, const char *what) {
    if (sl[0].k == VK_MISSING) return jt_err(r, line, LT_ERR_INVAL, "%s needs an argument", what);
    return self->k == VK_LIST ? 0 : jt_need_str(r, line, &sl[0], what);
}

/* How many items of l equal x, and the index of the first (-1: none). */
static int64_t list_search(const list_t *l, const val_t *x, int64_t *first) {
    int64_t hits = 0;
    *first = -1;
    for (uint32_t i = 0; i < l->n; i++)
        if (jt_eq(&l->v[i], x, 0)) {
            if (*first < 0) *first = i;
            hits++;
        }
    return hits;
}

static int method_find(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                       const char *what, val_t *out) {
    int rc = sub_arg(r, line, self, sl, what);
    if (!rc) *out = v_int(jt_str_find(self, &sl[0], false));
    return rc;
}

static int method_rfind(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    int rc = sub_arg(r, line, self, sl, what);
    if (!rc) *out = v_int(jt_str_find(self, &sl[0], true));
    return rc;
}

static int method_count(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    int64_t first;
    int rc = sub_arg(r, line, self, sl, what);
    if (rc) return rc;
    *out = v_int(self->k == VK_LIST ? list_search(self->u.l, &sl[0], &first)
                                    : jt_str_count(self, &sl[0]));
    return 0;
}

static int method_index(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    int64_t i;
    int rc = sub_arg(r, line, self, sl, what);
    if (rc) return rc;
    if (self->k == VK_LIST) {
        list_search(self->u.l, &sl[0], &i);
        if (i < 0) return jt_err(r, line, LT_ERR_INVAL, "list.index(x): x not in list");
    } else {
        i = jt_str_find(self, &sl[0], false);
        if (i < 0) return jt_err(r, line, LT_ERR_INVAL, "substring not found");
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
    int rc = jt_iter_items(r, line, &sl[0], &items, &n);
    if (rc) return rc;
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    for (size_t i = 0; i < n && !rc; i++) {
        if (items[i].k != VK_STR) {
            lt_buf_free(&b);
            return jt_err(r, line, LT_ERR_INVAL,
                          "sequence item %zu: expected str instance, %s found", i,
                          jt_typename(items[i].k, items[i].f));
        }
        if (i) rc = lt_buf_put(&b, self->u.s, self->n);
        if (!rc) rc = lt_buf_put(&b, items[i].u.s, items[i].n);
    }
    return jt_str_take(r, line, &b, rc, out);
}

static int method_isdigit(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(jt_str_all(self, jt_uc_isdigit));
    return 0;
}

static int method_isalpha(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(jt_str_all(self, jt_uc_isalpha));
    return 0;
}

static int method_isalnum(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(jt_str_all(self, jt_uc_isalnum));
    return 0;
}

static int method_isspace(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(jt_str_all(self, jt_uc_isspace));
    return 0;
}

static int method_islower(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(jt_str_iscase(self, true));
    return 0;
}

static int method_isupper(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    *out = v_bool(jt_str_iscase(self, false));
    return 0;
}

static int method_get(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                      const char *what, val_t *out) {
    if (sl[0].k == VK_MISSING) return jt_err(r, line, LT_ERR_INVAL, "%s needs a key", what);
    int i = jt_dict_find(self->u.m, &sl[0]);
    *out = i >= 0 ? self->u.m->v[i] : sl[1].k == VK_MISSING ? v_none() : sl[1];
    return 0;
}

/* A view, not a generator: it has a length. */
static int method_items(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    list_t *l = jt_dict_items(r, self->u.m, NULL);
    if (!l) return jt_nomem(r, line);
    *out = v_list(l, 0);
    return 0;
}

/* keys() (want_keys) or values(), as a list. */
static int dict_column(render_t *r, int line, const dict_t *d, bool want_keys, val_t *out) {
    list_t *l = jt_list_new(r, d->n);
    if (!l) return jt_nomem(r, line);
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
        list_t *l = jt_list_new(r, self->u.l->n);
        if (!l) return jt_nomem(r, line);
        memcpy(l->v, self->u.l->v, self->u.l->n * sizeof *l->v);
        l->n = self->u.l->n;
        *out = v_list(l, self->f);
        return 0;
    }
    const dict_t *d = self->u.m;
    dict_t *c = jt_dict_new(r, d->n);
    if (!c) return jt_nomem(r, line);
    memcpy(c->k, d->k, d->n * sizeof *c->k);
    memcpy(c->v, d->v, d->n * sizeof *c->v);
    c->n = d->n;
    *out = (val_t){.k = VK_DICT, .u.m = c};
    return 0;
}

/* loop.cycle(a, b, ...) */
static int method_cycle(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                        const char *what, val_t *out) {
    if (a->nkw || a->npos == 0) return jt_err(r, line, LT_ERR_INVAL, "no items for cycling given");
    *out = a->pos[self->u.lp->i % a->npos];
    return 0;
}

/* loop.changed(a, b, ...): whether the arguments differ from the last call's. */
static int method_changed(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    list_t *l = jt_list_new(r, (size_t)a->npos);
    if (!l) return jt_nomem(r, line);
    if (a->npos) memcpy(l->v, a->pos, (size_t)a->npos * sizeof *l->v);
    l->n = (uint32_t)a->npos;
    val_t now = v_list(l, 0);
    loopctx_t *lp = self->u.lp;
    bool changed = !lp->has_last || !jt_eq(&lp->last, &now, 0);
    lp->last = now;
    lp->has_last = true;
    *out = v_bool(changed);
    return 0;
}

/* str methods Python has and we refuse by name (str.format is refused on its own row, and so
 * keeps its own name in the message). */
static int method_format(render_t *r, int line, const val_t *self, const args_t *a, const val_t *sl,
                         const char *what, val_t *out) {
    return jt_err(r, line, LT_ERR_UNSUPPORTED, "unsupported method '%s'", what);
}

static int method_refused(render_t *r, int line, const val_t *self, const args_t *a,
                          const val_t *sl, const char *what, val_t *out) {
    return jt_err(r, line, LT_ERR_UNSUPPORTED, "unsupported method '%s'", what);
}

/* ---- the table ---- */

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

int jt_method_find(const char *s, size_t len) {
    for (size_t i = 0; i < COUNT_OF(k_methods); i++)
        if (strlen(k_methods[i].name) == len && memcmp(k_methods[i].name, s, len) == 0)
            return (int)i;
    return -1;
}

bool jt_method_of(const val_t *v, int m, bool *unsafe) {
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

int jt_method_call(render_t *r, int line, const val_t *self, int m, const args_t *a, val_t *out) {
    /* messages name a method after the first row with its function, so the refused str methods
     * all report as 'center', as they always have */
    const char *name = k_methods[m].name;
    for (size_t i = 0; k_methods[m].fn && i < COUNT_OF(k_methods); i++)
        if (k_methods[i].fn == k_methods[m].fn) {
            name = k_methods[i].name;
            break;
        }
    bool unsafe;
    jt_method_of(self, m, &unsafe);
    if (unsafe)
        return jt_err(r, line, LT_ERR_INVAL, "access to attribute '%s' of '%s' object is unsafe",
                      name, jt_typename(self->k, self->f));
    char what[64];
    snprintf(what, sizeof what, "%s.%s()", jt_typename(self->k, self->f), name);
    val_t sl[3];
    int rc, np = 0;
    while (np < 3 && k_methods[m].params[np]) np++;
    if (!k_methods[m].variadic && (rc = jt_bind(r, line, what, k_methods[m].params, np, a, sl)))
        return rc;
    return k_methods[m].fn(r, line, self, a, sl, what, out);
}
