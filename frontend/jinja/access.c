/*
 * access.c — how a template reaches into a value: obj.name and obj[key] in the order jinja2's
 * sandbox tries them (methods first, mutating ones refused as unsafe, then items), the `loop`
 * variable's attributes, Python's slices, and the items a for-loop or a filter walks.
 *
 * Why apart: a failed lookup gives an undefined value that remembers why it is undefined, so a
 * later misuse fails with jinja2's own message; that is the same for every caller.
 */

#include <string.h>

#include "jinja_internal.h"

/* ---- attributes ---- */

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

int jt_bound_method(render_t *r, int line, const val_t *obj, int m, val_t *out) {
    fn_t *f = jt_alloc(r, sizeof *f);
    if (!f) return jt_nomem(r, line);
    *f = (fn_t){.kind = FN_METHOD, .id = m, .self = *obj};
    *out = (val_t){.k = VK_FN, .u.fn = f};
    return 0;
}

int jt_getattr(render_t *r, int line, const val_t *obj, const char *s, size_t n, int m,
               val_t *out) {
    bool unsafe;
    if (obj->k == VK_UNDEF) return jt_undef_err(r, line, obj);
    if (jt_method_of(obj, m, &unsafe)) {
        if (unsafe) {
            *out = v_undef_hint(UH_UNSAFE, obj->k, s, n);
            return 0;
        }
        return jt_bound_method(r, line, obj, m, out);
    }
    if (obj->k == VK_DICT || obj->k == VK_NS) {
        int i = jt_dict_find_str(obj->u.m, s, n);
        *out = i >= 0 ? obj->u.m->v[i] : v_undef_hint(UH_ATTR, obj->k, s, n);
        return 0;
    }
    if (obj->k == VK_LOOP) return loop_attr(r, obj->u.lp, s, n, out);
    *out = v_undef_hint(UH_ATTR, obj->k, s, n);
    return 0;
}

/* ---- items and slices ---- */

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
    jt_u8_next(s, n, &j);
    return v_str(s + off, j - off);
}

/* The undefined value of a failed obj[key] lookup, naming the key for the error message. */
static int undef_item(render_t *r, int line, int objkind, const val_t *key, val_t *out) {
    lt_buf_t b = {.limit = CT_MAX_OUTPUT};
    int rc = jt_write(r, &b, key, true, 0);
    size_t n = rc ? 0 : (b.len > 200 ? 200 : b.len);
    char *s = jt_alloc(r, n + 1);
    if (s && n) memcpy(s, b.data, n);
    lt_buf_free(&b);
    if (!s) return jt_nomem(r, line);
    *out = v_undef_hint(UH_ITEM, objkind, s, n);
    return 0;
}

int jt_getitem(render_t *r, int line, const val_t *obj, const val_t *key, val_t *out) {
    if (obj->k == VK_UNDEF) return jt_undef_err(r, line, obj);
    size_t idx;
    switch (obj->k) {
    case VK_DICT: {
        int i = jt_dict_find(obj->u.m, key);
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
            size_t len = ascii ? obj->n : jt_u8_count(obj->u.s, obj->n);
            if (!seq_index(i, len, &idx)) return undef_item(r, line, obj->k, key, out);
            size_t off = ascii ? idx : jt_u8_offset(obj->u.s, obj->n, idx);
            *out = str_char_at(obj->u.s, obj->n, off);
            return 0;
        }
        break;
    default: break;
    }
    if (key->k == VK_STR) {
        val_t v;
        int rc = jt_getattr(r, line, obj, key->u.s, key->n, jt_method_find(key->u.s, key->n), &v);
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
            return jt_err(r, line, LT_ERR_INVAL, "slice indices must be integers or None");
        *step = v_asint(&sv[2]);
        if (*step == 0) return jt_err(r, line, LT_ERR_INVAL, "slice step cannot be zero");
    }
    for (int k = 0; k < 2; k++) {
        int64_t *dst = k == 0 ? start : stop;
        if (sv[k].k == VK_NONE) {
            *dst = (*step < 0) ? (k == 0 ? len - 1 : -1) : (k == 0 ? 0 : len);
            continue;
        }
        if (!v_isint(&sv[k]))
            return jt_err(r, line, LT_ERR_INVAL, "slice indices must be integers or None");
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

int jt_getslice(render_t *r, int line, const val_t *obj, const val_t *sv, val_t *out) {
    if (obj->k == VK_UNDEF) return jt_undef_err(r, line, obj);
    if ((obj->k != VK_LIST && obj->k != VK_STR) || v_isiter(obj)) {
        *out = v_undef_hint(UH_NONE, obj->k, "", 0);
        return 0;
    }
    bool ascii = true;
    if (obj->k == VK_STR)
        for (uint32_t k = 0; k < obj->n && ascii; k++) ascii = (unsigned char)obj->u.s[k] < 0x80;
    size_t offs_n = obj->k == VK_LIST ? obj->u.l->n
                    : ascii           ? obj->n
                                      : jt_u8_count(obj->u.s, obj->n);
    int64_t start = 0, stop = 0, step = 1;
    int rc = slice_indices(r, line, sv, offs_n, &start, &stop, &step);
    if (rc) return rc;
    int64_t cnt = 0;
    if (step > 0 && stop > start) cnt = (stop - start + step - 1) / step;
    if (step < 0 && start > stop) cnt = (start - stop + (-step) - 1) / (-step);
    if (obj->k == VK_LIST) {
        if (step == 1) { /* a view: lists are never changed in place */
            list_t *l = jt_alloc(r, sizeof *l);
            if (!l) return jt_nomem(r, line);
            *l = (list_t){.n = (uint32_t)cnt, .cap = (uint32_t)cnt, .v = obj->u.l->v + start};
            *out = v_list(l, obj->f);
            return 0;
        }
        list_t *l = jt_list_new(r, (size_t)cnt);
        if (!l) return jt_nomem(r, line);
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
    size_t *offs = jt_alloc(r, (offs_n + 1) * sizeof *offs);
    if (!offs) return jt_nomem(r, line);
    for (size_t i = 0, k = 0; k <= offs_n; k++) {
        offs[k] = i;
        if (i < obj->n) jt_u8_next(obj->u.s, obj->n, &i);
    }
    char *o = jt_str_new(r, obj->n, out);
    if (!o) return jt_nomem(r, line);
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

/* ---- iteration ---- */

int jt_iter_items(render_t *r, int line, const val_t *v, const val_t **items, size_t *n) {
    switch (v->k) {
    case VK_UNDEF:
        *items = NULL;
        *n = 0;
        return 0;
    case VK_LIST:
        if (v->u.l->err) return jt_err(r, line, LT_ERR_INVAL, "%s", v->u.l->err);
        *items = v->u.l->v;
        *n = v->u.l->n;
        return 0;
    case VK_DICT:
        *items = v->u.m->k;
        *n = v->u.m->n;
        return 0;
    case VK_STR: {
        size_t cnt = jt_u8_count(v->u.s, v->n);
        val_t *o = jt_alloc(r, (cnt ? cnt : 1) * sizeof *o);
        if (!o) return jt_nomem(r, line);
        for (size_t i = 0, k = 0; i < v->n; k++) {
            size_t j = i;
            jt_u8_next(v->u.s, v->n, &j);
            o[k] = v_str(v->u.s + i, j - i);
            i = j;
        }
        *items = o;
        *n = cnt;
        return 0;
    }
    default:
        return jt_err(r, line, LT_ERR_INVAL, "'%s' object is not iterable",
                      jt_typename(v->k, v->f));
    }
}
