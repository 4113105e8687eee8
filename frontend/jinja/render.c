/*
 * render.c — walks a compiled template's tree with one context: variables and scopes as jinja2
 * has them (a for-loop body is a fresh scope on every iteration, so state leaves a loop only
 * through namespace() objects; a macro sees the scope it was defined in), expressions, calls of
 * macros, call blocks and the global functions, and the statements that write the output.
 *
 * Everything a render makes lives in its render_t (an arena and the output buffer) and the
 * template is only read, so one template may be rendered on any number of threads at once.
 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jinja_internal.h"

/* ---- errors and limits ---- */

int jt_err(render_t *r, int line, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = jt_verrf(r->err, code, line, fmt, ap);
    va_end(ap);
    return rc;
}

int jt_nomem(render_t *r, int line) {
    if (r->arena.over)
        return jt_err(r, line, LT_ERR_RANGE, "render uses more than %u MiB", CT_MAX_ARENA >> 20);
    return jt_err(r, line, LT_ERR_NOMEM, "out of memory");
}

int jt_outerr(render_t *r, int line, int rc) {
    if (rc == LT_ERR_RANGE)
        return jt_err(r, line, LT_ERR_RANGE, "output longer than %u MiB", CT_MAX_OUTPUT >> 20);
    return jt_err(r, line, LT_ERR_NOMEM, "out of memory");
}

int jt_step(render_t *r, int line, uint64_t k) {
    r->steps += k;
    if (r->steps > CT_MAX_STEPS)
        return jt_err(r, line, LT_ERR_RANGE, "template runs more than %u loop iterations or calls",
                      CT_MAX_STEPS);
    return 0;
}

/* jinja2's object_type_repr: "None" or "<type> object". */
static const char *obj_type_repr(int k, char *buf, size_t n) {
    if (k == VK_NONE) return "None";
    snprintf(buf, n, "%s object", jt_typename(k, 0));
    return buf;
}

int jt_undef_err(render_t *r, int line, const val_t *u) {
    char tn[32];
    switch (u->f) {
    case UH_NAME: return jt_err(r, line, LT_ERR_INVAL, "'%.*s' is undefined", (int)u->n, u->u.s);
    case UH_ATTR:
        return jt_err(r, line, LT_ERR_INVAL, "'%s' has no attribute '%.*s'",
                      obj_type_repr(u->t, tn, sizeof tn), (int)u->n, u->u.s);
    case UH_ITEM:
        return jt_err(r, line, LT_ERR_INVAL, "%s has no element %.*s",
                      obj_type_repr(u->t, tn, sizeof tn), (int)u->n, u->u.s);
    case UH_UNSAFE:
        return jt_err(r, line, LT_ERR_INVAL, "access to attribute '%.*s' of '%s' object is unsafe",
                      (int)u->n, u->u.s, jt_typename(u->t, 0));
    case UH_MSG: return jt_err(r, line, LT_ERR_INVAL, "%.*s", (int)u->n, u->u.s);
    default: return jt_err(r, line, LT_ERR_INVAL, "undefined value");
    }
}

int jt_type_err(render_t *r, int line, const char *fmt, const val_t *a, const val_t *b) {
    return jt_err(r, line, LT_ERR_INVAL, fmt, jt_typename(a->k, a->f),
                  b ? jt_typename(b->k, b->f) : "");
}

/* ---- variables and scopes ---- */

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

/* Variable id: from the innermost scope that binds it, else the context (converted from cJSON
 * on first use and kept in r->root), else a global function, else undefined. */
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
            int rc = jt_from_json(r, j, v, 0);
            if (rc == LT_ERR_RANGE)
                return jt_err(r, line, LT_ERR_RANGE, "context value '%s' nested too deeply", nm->s);
            if (rc) return jt_nomem(r, line);
        } else if (id < NM__FIXED && k_global_fns[id].kind == FN_GLOBAL) {
            *v = (val_t){.k = VK_FN, .u.fn = &k_global_fns[id]};
        } else {
            *v = v_undef_hint(UH_NAME, 0, nm->s, nm->n);
        }
    }
    *out = *v;
    return 0;
}

/* Binds id in the innermost scope (at the top level when there is none). */
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
        int *ids = jt_alloc(r, (size_t)cap * sizeof *ids);
        val_t *vals = jt_alloc(r, (size_t)cap * sizeof *vals);
        if (!ids || !vals) return jt_nomem(r, line);
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
    scope_t *s = jt_alloc(r, sizeof *s);
    if (s) *s = (scope_t){.parent = parent};
    return s;
}

/* ---- calls and arguments ---- */

static int eval(render_t *r, const node_t *e, val_t *out);

static int eval_args(render_t *r, const node_t *e, args_t *a) {
    *a = (args_t){.npos = e->nv, .nkw = e->nw, .kwid = e->kw};
    if (e->nv + e->nw == 0) return 0;
    val_t *v = jt_alloc(r, (size_t)(e->nv + e->nw) * sizeof *v);
    if (!v) return jt_nomem(r, e->line);
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

int jt_bind(render_t *r, int line, const char *what, const char *const *params, int np,
            const args_t *a, val_t *slots) {
    for (int i = 0; i < np; i++) slots[i].k = VK_MISSING;
    if (a->npos > np)
        return jt_err(r, line, LT_ERR_INVAL, "%s takes at most %d argument(s) (%d given)", what, np,
                      a->npos);
    for (int i = 0; i < a->npos; i++) slots[i] = a->pos[i];
    for (int k = 0; k < a->nkw; k++) {
        const char *name = r->t->names[a->kwid[k]].s;
        int i;
        for (i = 0; i < np; i++)
            if (params[i] && strcmp(params[i], name) == 0) break;
        if (i == np)
            return jt_err(r, line, LT_ERR_INVAL, "%s got an unexpected keyword argument '%s'", what,
                          name);
        if (slots[i].k != VK_MISSING)
            return jt_err(r, line, LT_ERR_INVAL, "%s got multiple values for argument '%s'", what,
                          name);
        slots[i] = a->kwv[k];
    }
    return 0;
}

int jt_arg_int(render_t *r, int line, const val_t *v, int64_t dflt, const char *what,
               int64_t *out) {
    if (v->k == VK_MISSING || v->k == VK_NONE)
        *out = dflt;
    else if (v_isint(v))
        *out = v_asint(v);
    else
        return jt_err(r, line, LT_ERR_INVAL, "%s: expected an integer, got '%s'", what,
                      jt_typename(v->k, v->f));
    return 0;
}

int jt_need_str(render_t *r, int line, const val_t *v, const char *what) {
    if (v->k == VK_STR) return 0;
    return jt_err(r, line, LT_ERR_INVAL, "%s: expected a string, got '%s'", what,
                  jt_typename(v->k, v->f));
}

/* ---- global functions and macros ---- */

static int call_global(render_t *r, int line, int id, const args_t *a, val_t *out) {
    int rc;
    switch (id) {
    case NM_RANGE: {
        if (a->nkw) return jt_err(r, line, LT_ERR_INVAL, "range() takes no keyword arguments");
        if (a->npos < 1 || a->npos > 3)
            return jt_err(r, line, LT_ERR_INVAL, "range expected 1 to 3 arguments, got %d",
                          a->npos);
        int64_t x[3] = {0, 0, 1};
        for (int i = 0; i < a->npos; i++)
            if (!v_isint(&a->pos[i]))
                return jt_type_err(r, line, "'%s' object cannot be interpreted as an integer",
                                   &a->pos[i], NULL);
        if (a->npos == 1)
            x[1] = v_asint(&a->pos[0]);
        else
            for (int i = 0; i < a->npos; i++) x[i] = v_asint(&a->pos[i]);
        if (x[2] == 0) return jt_err(r, line, LT_ERR_INVAL, "range() arg 3 must not be zero");
        double cnt = 0;
        if (x[2] > 0 && x[1] > x[0]) cnt = ceil(((double)x[1] - (double)x[0]) / (double)x[2]);
        if (x[2] < 0 && x[1] < x[0]) cnt = ceil(((double)x[0] - (double)x[1]) / (double)-x[2]);
        if (cnt > CT_MAX_RANGE)
            return jt_err(r, line, LT_ERR_RANGE, "range too big: the sandbox allows at most %d",
                          CT_MAX_RANGE);
        list_t *l = jt_list_new(r, (size_t)cnt);
        if (!l) return jt_nomem(r, line);
        for (int64_t v = x[0]; x[2] > 0 ? v < x[1] : v > x[1]; v += x[2]) l->v[l->n++] = v_int(v);
        *out = v_list(l, 0);
        return 0;
    }
    case NM_NAMESPACE:
    case NM_DICT: {
        dict_t *d = jt_dict_new(r, 4);
        if (!d) return jt_nomem(r, line);
        for (int i = 0; i < a->npos; i++) {
            if (a->pos[i].k != VK_DICT)
                return jt_err(r, line, LT_ERR_UNSUPPORTED,
                              "unsupported positional argument to %s()", jt_fixed_names[id]);
            for (uint32_t k = 0; k < a->pos[i].u.m->n; k++)
                if (!jt_dict_set(r, d, a->pos[i].u.m->k[k], a->pos[i].u.m->v[k]))
                    return jt_nomem(r, line);
        }
        for (int k = 0; k < a->nkw; k++) {
            const name_t *nm = &r->t->names[a->kwid[k]];
            if (!jt_dict_set(r, d, v_str(nm->s, nm->n), a->kwv[k])) return jt_nomem(r, line);
        }
        *out = (val_t){.k = id == NM_NAMESPACE ? VK_NS : VK_DICT, .u.m = d};
        return 0;
    }
    case NM_RAISE: {
        val_t msg = a->npos ? a->pos[0] : v_str("", 0);
        if (a->npos != 1 || a->nkw)
            return jt_err(r, line, LT_ERR_INVAL, "raise_exception() takes exactly one argument");
        if ((rc = jt_tostr(r, line, &msg, &msg))) return rc;
        r->raised = true;
        return lt_errf(r->err, LT_ERR_INVAL, "%.*s", (int)msg.n, msg.u.s);
    }
    case NM_STRFTIME: {
        if (a->npos != 1 || a->nkw || a->pos[0].k != VK_STR)
            return jt_err(r, line, LT_ERR_INVAL, "strftime_now() takes one format string");
        char fmt[256], buf[512];
        snprintf(fmt, sizeof fmt, "%.*s", (int)a->pos[0].n, a->pos[0].u.s);
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t k = strftime(buf, sizeof buf, fmt, &tm);
        char *s = jt_str_new(r, k, out);
        if (!s) return jt_nomem(r, line);
        memcpy(s, buf, k);
        return 0;
    }
    default:
        return jt_err(r, line, LT_ERR_UNSUPPORTED, "unsupported function '%s'", jt_fixed_names[id]);
    }
}

/* What the output gained since mark (a macro's or a block's text), as a string value; the
 * output is cut back to mark. */
static int cut_output(render_t *r, int line, size_t mark, val_t *out) {
    size_t len = r->out.len - mark;
    char *dst = jt_str_new(r, len, out);
    if (dst && len) memcpy(dst, r->out.data + mark, len);
    r->out.len = mark;
    return dst ? 0 : jt_nomem(r, line);
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
        return jt_err(r, line, LT_ERR_RANGE, "macro calls nested more than %d deep", CT_MAX_CALLS);
    if ((rc = jt_step(r, line, 1))) return rc;
    if (a->npos > m->nw && !(m->op & MAC_VARARGS))
        return jt_err(r, line, LT_ERR_INVAL, "macro '%s' takes not more than %d argument(s)", name,
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
            return jt_err(r, line, LT_ERR_INVAL, "macro '%s' takes no keyword argument '%s'", name,
                          r->t->names[a->kwid[k]].s);
        if (!extra_kw && !(extra_kw = jt_dict_new(r, 4))) return jt_nomem(r, line);
        const name_t *kn = &r->t->names[a->kwid[k]];
        if (!jt_dict_set(r, extra_kw, v_str(kn->s, kn->n), a->kwv[k])) return jt_nomem(r, line);
    }
    if (caller && !(m->op & MAC_CALLER))
        return jt_err(r, line, LT_ERR_INVAL,
                      "macro '%s' was invoked with two values for the special caller argument",
                      name);
    scope_t *s = scope_push(r, f->scope), *saved = r->sc;
    if (!s) return jt_nomem(r, line);
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
        if (!extra_kw && !(extra_kw = jt_dict_new(r, 1))) rc = jt_nomem(r, line);
        if (!rc) rc = scope_set(r, line, NM_KWARGS, (val_t){.k = VK_DICT, .u.m = extra_kw});
    }
    if (!rc && (m->op & MAC_VARARGS)) {
        int n = a->npos > m->nw ? a->npos - m->nw : 0;
        list_t *l = jt_list_new(r, (size_t)n);
        if (!l) rc = jt_nomem(r, line);
        for (int i = 0; !rc && i < n; i++) l->v[l->n++] = a->pos[m->nw + i];
        if (!rc) rc = scope_set(r, line, NM_VARARGS, v_list(l, LF_TUPLE));
    }
    size_t mark = r->out.len;
    if (!rc) rc = jt_exec_body(r, m->v, m->nv);
    r->calls--;
    r->sc = saved;
    if (rc < 0) {
        r->out.len = mark;
        return rc;
    }
    return cut_output(r, line, mark, out);
}

static int call_value(render_t *r, int line, const val_t *f, const args_t *a, const fn_t *caller,
                      val_t *out) {
    if (f->k == VK_UNDEF) return jt_undef_err(r, line, f);
    if (f->k != VK_FN) return jt_type_err(r, line, "'%s' object is not callable", f, NULL);
    const fn_t *fn = f->u.fn;
    switch (fn->kind) {
    case FN_MACRO:
    case FN_CALLER: return call_macro(r, line, fn, a, caller, out);
    case FN_GLOBAL: return call_global(r, line, fn->id, a, out);
    default: return jt_method_call(r, line, &fn->self, fn->id, a, out);
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
        if (jt_method_of(&obj, c->id, &unsafe)) {
            if ((rc = eval_args(r, e, &a))) return rc;
            return jt_method_call(r, e->line, &obj, c->id, &a, out);
        }
        if ((rc = jt_getattr(r, c->line, &obj, c->s, c->n, c->id, &f))) return rc;
    } else if ((rc = eval(r, c, &f))) {
        return rc;
    }
    if ((rc = eval_args(r, e, &a))) return rc;
    return call_value(r, e->line, &f, &a, caller, out);
}

/* ---- expressions ---- */

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
    return jt_filter_apply(r, e->line, e->id, &v, &a, out);
}

static int eval(render_t *r, const node_t *e, val_t *out) {
    val_t a, b;
    int rc;
    switch (e->kind) {
    case E_CONST: *out = e->k; return 0;
    case E_NAME: return lookup(r, e->line, e->id, out);
    case E_GETATTR:
        if ((rc = eval(r, e->a, &a))) return rc;
        return jt_getattr(r, e->line, &a, e->s, e->n, e->id, out);
    case E_GETITEM:
        if ((rc = eval(r, e->a, &a)) || (rc = eval(r, e->b, &b))) return rc;
        return jt_getitem(r, e->line, &a, &b, out);
    case E_SLICE: {
        val_t sv[3];
        if ((rc = eval(r, e->a, &a))) return rc;
        for (int i = 0; i < 3; i++) {
            sv[i] = v_none();
            if (e->v[i] && (rc = eval(r, e->v[i], &sv[i]))) return rc;
        }
        return jt_getslice(r, e->line, &a, sv, out);
    }
    case E_CALL: return eval_call(r, e, NULL, out);
    case E_FILTER: return eval_filter(r, e, NULL, out);
    case E_TEST: {
        args_t args;
        bool res;
        if ((rc = eval(r, e->a, &a)) || (rc = eval_args(r, e, &args)) ||
            (rc = jt_test_apply(r, e->line, e->id, &a, &args, &res)))
            return rc;
        *out = v_bool(res);
        return 0;
    }
    case E_BIN:
        if ((rc = eval(r, e->a, &a)) || (rc = eval(r, e->b, &b))) return rc;
        if (e->negpow && v_isnum(&a)) { /* see parse_pow */
            a = a.k == VK_FLOAT ? v_float(-a.u.d) : v_int(-v_asint(&a));
            if ((rc = jt_arith(r, e->line, e->op, &a, &b, out))) return rc;
            *out = out->k == VK_FLOAT ? v_float(-out->u.d) : v_int(-out->u.i);
            return 0;
        }
        return jt_arith(r, e->line, e->op, &a, &b, out);
    case E_NEG:
    case E_POS:
        if ((rc = eval(r, e->a, &a))) return rc;
        if (a.k == VK_UNDEF) return jt_undef_err(r, e->line, &a);
        if (a.k == VK_FLOAT)
            *out = v_float(e->kind == E_NEG ? -a.u.d : a.u.d);
        else if (v_isint(&a)) {
            int64_t i = v_asint(&a);
            if (e->kind == E_NEG && i == INT64_MIN)
                return jt_err(r, e->line, LT_ERR_RANGE, "integer overflow");
            *out = v_int(e->kind == E_NEG ? -i : i);
        } else {
            return jt_err(r, e->line, LT_ERR_INVAL, "bad operand type for unary %c: '%s'",
                          e->kind == E_NEG ? '-' : '+', jt_typename(a.k, a.f));
        }
        return 0;
    case E_CONCAT: {
        lt_buf_t buf = {.limit = CT_MAX_OUTPUT};
        for (int i = 0; i < e->nv; i++) {
            if ((rc = eval(r, e->v[i], &a))) {
                lt_buf_free(&buf);
                return rc;
            }
            int brc =
                a.k == VK_STR ? lt_buf_put(&buf, a.u.s, a.n) : jt_write(r, &buf, &a, false, 0);
            if (brc) return jt_str_take(r, e->line, &buf, brc, out);
        }
        return jt_str_take(r, e->line, &buf, 0, out);
    }
    case E_CMP: {
        if ((rc = eval(r, e->a, &a))) return rc;
        bool res = true;
        for (int i = 0; i < e->nv && res; i++) {
            if ((rc = eval(r, e->v[i], &b)) ||
                (rc = jt_compare(r, e->line, e->ops[i], &a, &b, &res)))
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
        list_t *l = jt_list_new(r, (size_t)e->nv);
        if (!l) return jt_nomem(r, e->line);
        for (int i = 0; i < e->nv; i++)
            if ((rc = eval(r, e->v[i], &l->v[i]))) return rc;
        l->n = (uint32_t)e->nv;
        *out = v_list(l, e->kind == E_TUPLE ? LF_TUPLE : 0);
        return 0;
    }
    case E_DICT: {
        dict_t *d = jt_dict_new(r, (size_t)e->nv);
        if (!d) return jt_nomem(r, e->line);
        for (int i = 0; i < e->nv; i++) {
            if ((rc = eval(r, e->v[i], &a)) || (rc = eval(r, e->w[i], &b))) return rc;
            if (a.k == VK_LIST && !(a.f & LF_TUPLE))
                return jt_err(r, e->line, LT_ERR_INVAL, "unhashable type: 'list'");
            if (a.k == VK_DICT || a.k == VK_NS)
                return jt_err(r, e->line, LT_ERR_INVAL, "unhashable type: 'dict'");
            if (!jt_dict_set(r, d, a, b)) return jt_nomem(r, e->line);
        }
        *out = (val_t){.k = VK_DICT, .u.m = d};
        return 0;
    }
    default: return jt_err(r, e->line, LT_ERR_UNSUPPORTED, "unsupported expression");
    }
}

/* ---- statements ---- */

static int emit(render_t *r, int line, const char *s, size_t n) {
    int rc = lt_buf_put(&r->out, s, n);
    return rc ? jt_outerr(r, line, rc) : 0;
}

static int emit_val(render_t *r, int line, const val_t *v) {
    if (v->k == VK_STR) return emit(r, line, v->u.s, v->n);
    int rc = jt_write(r, &r->out, v, false, 0);
    return rc ? jt_outerr(r, line, rc) : 0;
}

/* Binds a for/set target (a name or a tuple of names) to v. */
static int assign(render_t *r, const node_t *target, const val_t *v) {
    if (target->kind == E_NAME) return scope_set(r, target->line, target->id, *v);
    const val_t *items;
    size_t n;
    int rc;
    if (v->k == VK_UNDEF) return jt_undef_err(r, target->line, v);
    if ((rc = jt_iter_items(r, target->line, v, &items, &n))) return rc;
    if (n != (size_t)target->nv)
        return jt_err(r, target->line, LT_ERR_INVAL, "%s values to unpack (expected %d, got %zu)",
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
    if ((rc = eval(r, e->b, &seq)) || (rc = jt_iter_items(r, e->line, &seq, &items, &n))) return rc;
    scope_t *saved = r->sc, *s = scope_push(r, saved);
    if (!s) return jt_nomem(r, e->line);
    r->sc = s;
    if (e->c) { /* `for x in xs if test`: filter first, so loop.length counts what is kept */
        val_t *kept = jt_alloc(r, (n ? n : 1) * sizeof *kept);
        if (!kept) return jt_nomem(r, e->line);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            val_t t;
            s->n = 0;
            if ((rc = jt_step(r, e->line, 1)) || (rc = assign(r, e->a, &items[i])) ||
                (rc = eval(r, e->c, &t))) {
                r->sc = saved;
                return rc;
            }
            if (v_truthy(&t)) kept[k++] = items[i];
        }
        items = kept;
        n = k;
    }
    loopctx_t *lp = jt_alloc(r, sizeof *lp);
    if (!lp) return jt_nomem(r, e->line);
    *lp = (loopctx_t){.n = (int64_t)n, .items = items};
    rc = 0;
    /* jinja2 runs the else block unless some iteration reached the end of the body: a loop that
     * only ever breaks or continues runs it too */
    bool completed = false;
    for (size_t i = 0; i < n; i++) {
        lp->i = (int64_t)i;
        s->n = 0; /* each iteration starts with a fresh scope, as in jinja2 */
        if ((rc = jt_step(r, e->line, 1)) || (rc = assign(r, e->a, &items[i])) ||
            (rc = scope_set(r, e->line, NM_LOOP, (val_t){.k = VK_LOOP, .u.lp = lp})))
            break;
        rc = jt_exec_body(r, e->v, e->nv);
        if (rc == 0) completed = true;
        if (rc == SIG_CONTINUE) rc = 0;
        if (rc) break;
    }
    r->sc = saved;
    if (rc == SIG_BREAK) rc = 0;
    if (rc) return rc;
    if (!completed && e->nw) return jt_exec_body(r, e->w, e->nw);
    return 0;
}

/* Renders body into a string value (set blocks, filter blocks), in a scope of its own: what the
 * body assigns stays inside, as in jinja2. */
static int capture(render_t *r, const node_t *e, val_t *out) {
    size_t mark = r->out.len;
    scope_t *saved = r->sc, *s = scope_push(r, saved);
    if (!s) return jt_nomem(r, e->line);
    r->sc = s;
    int rc = jt_exec_body(r, e->v, e->nv);
    r->sc = saved;
    if (rc) {
        r->out.len = mark;
        return rc;
    }
    if ((rc = cut_output(r, e->line, mark, out))) return rc;
    if (e->c) return eval_filter(r, e->c, out, out);
    return 0;
}

static int exec_set(render_t *r, const node_t *target, const val_t *v) {
    if (target->kind != E_NSREF) return assign(r, target, v);
    val_t ns;
    int rc = lookup(r, target->line, target->id, &ns);
    if (rc) return rc;
    if (ns.k != VK_NS)
        return jt_err(r, target->line, LT_ERR_INVAL,
                      "cannot assign attribute on non-namespace object");
    if (!jt_dict_set(r, ns.u.m, v_str(target->s, target->n), *v)) return jt_nomem(r, target->line);
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
        return v_truthy(&v) ? jt_exec_body(r, e->v, e->nv) : jt_exec_body(r, e->w, e->nw);
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
        fn_t *f = jt_alloc(r, sizeof *f);
        if (!f) return jt_nomem(r, e->line);
        *f = (fn_t){.kind = FN_MACRO, .node = e, .scope = r->sc};
        return scope_set(r, e->line, e->id, (val_t){.k = VK_FN, .u.fn = f});
    }
    case S_CALLBLOCK: {
        fn_t *f = jt_alloc(r, sizeof *f);
        if (!f) return jt_nomem(r, e->line);
        *f = (fn_t){.kind = FN_CALLER, .node = e, .scope = r->sc};
        if ((rc = eval_call(r, e->a, f, &v))) return rc;
        return emit_val(r, e->line, &v);
    }
    case S_WITH: {
        scope_t *saved = r->sc, *s = scope_push(r, saved);
        if (!s) return jt_nomem(r, e->line);
        val_t *vals = jt_alloc(r, (size_t)(e->nw ? e->nw : 1) * sizeof *vals);
        if (!vals) return jt_nomem(r, e->line);
        for (int i = 0; i < e->nw; i++)
            if ((rc = eval(r, e->w[i], &vals[i]))) return rc;
        r->sc = s;
        for (int i = 0; i < e->nw && !rc; i++) rc = scope_set(r, e->line, e->kw[i], vals[i]);
        if (!rc) rc = jt_exec_body(r, e->v, e->nv);
        r->sc = saved;
        return rc;
    }
    case S_GENERATION: return jt_exec_body(r, e->v, e->nv);
    case S_BREAK: return SIG_BREAK;
    case S_CONTINUE: return SIG_CONTINUE;
    default: return jt_err(r, e->line, LT_ERR_UNSUPPORTED, "unsupported statement");
    }
}

int jt_exec_body(render_t *r, node_t *const *v, int n) {
    for (int i = 0; i < n; i++) {
        int rc = exec_stmt(r, v[i]);
        if (rc) return rc;
    }
    return 0;
}
