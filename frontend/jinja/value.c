/*
 * value.c — what the renderer computes with: lists, dicts and strings in the render's arena,
 * Python's == and < on values, its arithmetic, `in` and comparison operators with the errors
 * Python raises, and context values converted from cJSON.
 *
 * Why apart: this is Python's semantics, the same whatever a template does with a value;
 * filters, tests, methods and the renderer all lean on it.
 */

#define _GNU_SOURCE /* memmem */
#include <math.h>
#include <string.h>

#include "jinja_internal.h"
#include "json.h"

/* ---- values in the render's arena ---- */

const char *jt_typename(int k, int tuple) {
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

list_t *jt_list_new(render_t *r, size_t cap) {
    if (cap > UINT32_MAX / 2) return NULL;
    list_t *l = jt_alloc(r, sizeof *l);
    if (!l) return NULL;
    l->n = 0;
    l->err = NULL;
    l->cap = (uint32_t)(cap ? cap : 1);
    l->v = jt_alloc(r, l->cap * sizeof *l->v);
    return l->v ? l : NULL;
}

bool jt_list_push(render_t *r, list_t *l, val_t v) {
    if (l->n == l->cap) {
        if (l->cap > UINT32_MAX / 4) return false;
        val_t *nv = jt_alloc(r, (size_t)l->cap * 2 * sizeof *nv);
        if (!nv) return false;
        memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
    return true;
}

dict_t *jt_dict_new(render_t *r, size_t cap) {
    if (cap > UINT32_MAX / 2) return NULL;
    dict_t *d = jt_alloc(r, sizeof *d);
    if (!d) return NULL;
    d->n = 0;
    d->cap = (uint32_t)(cap ? cap : 1);
    d->k = jt_alloc(r, d->cap * sizeof *d->k);
    d->v = jt_alloc(r, d->cap * sizeof *d->v);
    return d->k && d->v ? d : NULL;
}

char *jt_str_new(render_t *r, size_t n, val_t *out) {
    if (n > CT_MAX_OUTPUT) {
        r->arena.over = true;
        return NULL;
    }
    char *s = jt_alloc(r, n + 1);
    if (!s) return NULL;
    s[n] = 0;
    *out = v_str(s, n);
    return s;
}

int jt_str_take(render_t *r, int line, lt_buf_t *b, int brc, val_t *out) {
    char *s = brc ? NULL : jt_str_new(r, b->len, out);
    if (s && b->len) memcpy(s, b->data, b->len);
    lt_buf_free(b);
    if (brc) return jt_outerr(r, line, brc);
    return s ? 0 : jt_nomem(r, line);
}

int jt_dict_find(const dict_t *d, const val_t *key) {
    for (uint32_t i = 0; i < d->n; i++)
        if (jt_eq(&d->k[i], key, 0)) return (int)i;
    return -1;
}

int jt_dict_find_str(const dict_t *d, const char *s, size_t n) {
    for (uint32_t i = 0; i < d->n; i++)
        if (v_streq(&d->k[i], s, n)) return (int)i;
    return -1;
}

bool jt_dict_append(render_t *r, dict_t *d, val_t key, val_t v) {
    if (d->n == d->cap) {
        if (d->cap > UINT32_MAX / 4) return false;
        val_t *nk = jt_alloc(r, (size_t)d->cap * 2 * sizeof *nk);
        val_t *nv = jt_alloc(r, (size_t)d->cap * 2 * sizeof *nv);
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

bool jt_dict_set(render_t *r, dict_t *d, val_t key, val_t v) {
    int i = jt_dict_find(d, &key);
    if (i >= 0) {
        d->v[i] = v;
        return true;
    }
    return jt_dict_append(r, d, key, v);
}

list_t *jt_dict_items(render_t *r, const dict_t *d, const uint32_t *order) {
    list_t *l = jt_list_new(r, d->n);
    if (!l) return NULL;
    for (uint32_t i = 0; i < d->n; i++) {
        uint32_t k = order ? order[i] : i;
        list_t *p = jt_list_new(r, 2);
        if (!p) return NULL;
        p->v[0] = d->k[k];
        p->v[1] = d->v[k];
        p->n = 2;
        l->v[l->n++] = v_list(p, LF_TUPLE);
    }
    return l;
}

/* ---- equality and ordering (Python's == and <) ---- */

bool jt_eq(const val_t *a, const val_t *b, int depth) {
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
            if (!jt_eq(&a->u.l->v[i], &b->u.l->v[i], depth + 1)) return false;
        return true;
    case VK_DICT:
        if (a->u.m->n != b->u.m->n) return false;
        for (uint32_t i = 0; i < a->u.m->n; i++) {
            int j = jt_dict_find(b->u.m, &a->u.m->k[i]);
            if (j < 0 || !jt_eq(&a->u.m->v[i], &b->u.m->v[j], depth + 1)) return false;
        }
        return true;
    case VK_NS: return a->u.m == b->u.m;
    case VK_LOOP: return a->u.lp == b->u.lp;
    case VK_FN: return a->u.fn == b->u.fn;
    default: return false;
    }
}

bool jt_cmp(const val_t *a, const val_t *b, int *res, int depth) {
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
            if (jt_eq(&x->v[i], &y->v[i], depth + 1)) continue;
            return jt_cmp(&x->v[i], &y->v[i], res, depth + 1);
        }
        *res = x->n < y->n ? -1 : x->n > y->n;
        return true;
    }
    return false;
}

/* ---- operators ---- */

int jt_arith(render_t *r, int line, int op, const val_t *a, const val_t *b, val_t *out) {
    if (a->k == VK_UNDEF) return jt_undef_err(r, line, a);
    if (op == OP_MOD && a->k == VK_STR) return jt_str_percent(r, line, a, b, out);
    if (b->k == VK_UNDEF) return jt_undef_err(r, line, b);
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
                    return jt_err(r, line, LT_ERR_INVAL, "integer division or modulo by zero");
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
            if (ovf) return jt_err(r, line, LT_ERR_RANGE, "integer overflow");
            *out = v_int(z);
            return 0;
        }
        double x = v_asfloat(a), y = v_asfloat(b), z = 0;
        switch (op) {
        case OP_ADD: z = x + y; break;
        case OP_SUB: z = x - y; break;
        case OP_MUL: z = x * y; break;
        case OP_DIV:
            if (y == 0) return jt_err(r, line, LT_ERR_INVAL, "division by zero");
            z = x / y;
            break;
        case OP_FLOORDIV:
        case OP_MOD: {
            if (y == 0) return jt_err(r, line, LT_ERR_INVAL, "float modulo or division by zero");
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
                return jt_err(r, line, LT_ERR_INVAL, "0.0 cannot be raised to a negative power");
            if (x < 0 && y != floor(y))
                return jt_err(r, line, LT_ERR_UNSUPPORTED, "unsupported complex result of **");
            z = pow(x, y);
            if (isinf(z) && isfinite(x) && isfinite(y))
                return jt_err(r, line, LT_ERR_INVAL, "numerical result out of range");
            break;
        }
        *out = v_float(z);
        return 0;
    }
    if (op == OP_ADD && a->k == VK_STR && b->k == VK_STR) {
        val_t x = *a, y = *b;
        int rc = 0;
        if (a->f && !b->f) rc = jt_html_escape(r, line, b, &y); /* Markup + str escapes the str */
        if (b->f && !a->f) rc = jt_html_escape(r, line, a, &x);
        if (rc) return rc;
        char *s = jt_str_new(r, (size_t)x.n + y.n, out);
        if (!s) return jt_nomem(r, line);
        memcpy(s, x.u.s, x.n);
        memcpy(s + x.n, y.u.s, y.n);
        out->f = a->f | b->f;
        return 0;
    }
    if (op == OP_ADD && a->k == VK_LIST && b->k == VK_LIST && a->f == b->f && !v_isiter(a)) {
        list_t *l = jt_list_new(r, (size_t)a->u.l->n + b->u.l->n);
        if (!l) return jt_nomem(r, line);
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
        size_t unit = seq->k == VK_STR ? seq->n : seq->u.l->n;
        if (times < 0 || unit == 0) times = 0; /* an empty unit: empty, at once, whatever N */
        if (unit && (uint64_t)times > CT_MAX_OUTPUT / unit)
            return jt_err(r, line, LT_ERR_RANGE, "sequence repeated too many times");
        size_t total = unit * (size_t)times;
        if (seq->k == VK_STR) {
            char *s = jt_str_new(r, total, out);
            if (!s) return jt_nomem(r, line);
            for (int64_t i = 0; i < times; i++) memcpy(s + (size_t)i * unit, seq->u.s, unit);
        } else {
            list_t *l = jt_list_new(r, total);
            if (!l) return jt_nomem(r, line);
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
    return jt_err(r, line, LT_ERR_INVAL, "unsupported operand type(s) for %s: '%s' and '%s'",
                  sym[op], jt_typename(a->k, a->f), jt_typename(b->k, b->f));
}

int jt_contains(render_t *r, int line, const val_t *a, const val_t *b, bool *res) {
    switch (b->k) {
    case VK_UNDEF: *res = false; return 0;
    case VK_STR:
        if (a->k != VK_STR)
            return jt_err(r, line, LT_ERR_INVAL,
                          "'in <string>' requires string as left operand, not %s",
                          jt_typename(a->k, a->f));
        *res = a->n == 0 || (a->n <= b->n && memmem(b->u.s, b->n, a->u.s, a->n) != NULL);
        return 0;
    case VK_LIST:
        if (b->u.l->err) return jt_err(r, line, LT_ERR_INVAL, "%s", b->u.l->err);
        *res = false;
        for (uint32_t i = 0; i < b->u.l->n && !*res; i++) *res = jt_eq(a, &b->u.l->v[i], 0);
        return 0;
    case VK_DICT:
        if ((a->k == VK_LIST && !(a->f & (LF_TUPLE | LF_ITER))) || a->k == VK_DICT || a->k == VK_NS)
            return jt_type_err(r, line, "unhashable type: '%s'", a, NULL);
        *res = jt_dict_find(b->u.m, a) >= 0;
        return 0;
    default:
        return jt_err(r, line, LT_ERR_INVAL, "argument of type '%s' is not iterable",
                      jt_typename(b->k, b->f));
    }
}

int jt_compare(render_t *r, int line, int op, const val_t *a, const val_t *b, bool *res) {
    int c;
    switch (op) {
    case OP_EQ: *res = jt_eq(a, b, 0); return 0;
    case OP_NE: *res = !jt_eq(a, b, 0); return 0;
    case OP_IN: return jt_contains(r, line, a, b, res);
    case OP_NOTIN: {
        int rc = jt_contains(r, line, a, b, res);
        *res = !*res;
        return rc;
    }
    default: break;
    }
    if (a->k == VK_UNDEF) return jt_undef_err(r, line, a);
    if (b->k == VK_UNDEF) return jt_undef_err(r, line, b);
    if (!jt_cmp(a, b, &c, 0)) {
        static const char *const sym[] = {
            [OP_LT] = "<", [OP_LE] = "<=", [OP_GT] = ">", [OP_GE] = ">="};
        return jt_err(r, line, LT_ERR_INVAL,
                      "'%s' not supported between instances of '%s' and '%s'", sym[op],
                      jt_typename(a->k, a->f), jt_typename(b->k, b->f));
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

/* ---- context values from cJSON ---- */

/* A string of the context: a request's strings carry U+0000 as C0 80 (common/json.h); the
 * template sees the character itself, as transformers' templates do. */
static int json_str(render_t *r, const char *s, val_t *out) {
    size_t n = strlen(s);
    if (!lt_json_has_nul(s, n)) {
        *out = v_str(s, n);
        return 0;
    }
    char *d = jt_alloc(r, n);
    if (!d) return LT_ERR_NOMEM;
    *out = v_str(d, lt_json_bytes(d, s, n));
    return 0;
}

int jt_from_json(render_t *r, const cJSON *j, val_t *out, int depth) {
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
        return json_str(r, s, out);
    } else if (cJSON_IsArray(j)) {
        list_t *l = jt_list_new(r, (size_t)cJSON_GetArraySize(j));
        if (!l) return LT_ERR_NOMEM;
        for (const cJSON *c = j->child; c; c = c->next) {
            val_t v;
            int rc = jt_from_json(r, c, &v, depth + 1);
            if (rc) return rc;
            if (!jt_list_push(r, l, v)) return LT_ERR_NOMEM;
        }
        *out = v_list(l, 0);
    } else if (cJSON_IsObject(j)) {
        dict_t *d = jt_dict_new(r, (size_t)cJSON_GetArraySize(j));
        if (!d) return LT_ERR_NOMEM;
        for (const cJSON *c = j->child; c; c = c->next) {
            val_t v;
            int rc = jt_from_json(r, c, &v, depth + 1);
            if (rc) return rc;
            val_t k;
            if ((rc = json_str(r, c->string ? c->string : "", &k))) return rc;
            int i = jt_dict_find_str(d, k.u.s, k.n); /* a repeated key: the last one wins */
            if (i >= 0) {
                d->v[i] = v;
                continue;
            }
            if (!jt_dict_append(r, d, k, v)) return LT_ERR_NOMEM;
        }
        *out = (val_t){.k = VK_DICT, .u.m = d};
    } else {
        *out = v_none();
    }
    return 0;
}
