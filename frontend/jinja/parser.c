/*
 * parser.c — builds a template's syntax tree from its tokens: a recursive-descent parser with
 * jinja2's grammar and precedence, function for function, for expressions and for the statements
 * chat templates use (if, for, set, macro, call, filter, with, generation...). What we do not
 * implement is refused here, by name and line, so a template fails when it is loaded and not in
 * the middle of a request.
 *
 * The tree lives in the template's arena and never changes after compile, which is what lets any
 * number of threads render one template at once.
 */

#include <stdio.h>
#include <string.h>

#include "jinja_internal.h"

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
        return jt_errf(p->err, LT_ERR_FORMAT, t->line, "expected %s, got %s", expected,
                       tok_desc(t, buf, sizeof buf));
    return jt_errf(p->err, LT_ERR_FORMAT, t->line, "unexpected %s", tok_desc(t, buf, sizeof buf));
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

/* ---- names ---- */

const char *const jt_fixed_names[NM__FIXED] = {
    "loop", "caller", "range",  "namespace", "raise_exception", "strftime_now",
    "dict", "cycler", "joiner", "lipsum",    "kwargs",          "varargs"};

int jt_intern(fe_chat_template_t *t, const char *s, size_t n) {
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

/* jinja2 filters we do not implement: a template using one fails to compile, by name. */
static const char *const k_filters_unsupported[] = {
    "batch",     "center", "filesizeformat", "forceescape", "groupby",
    "pprint",    "random", "slice",          "striptags",   "truncate",
    "urlencode", "urlize", "wordcount",      "wordwrap",    "xmlattr"};

/* jinja2 tests we do not implement. */
static const char *const k_tests_unsupported[] = {"filter", "test"};

static bool in_list(const char *const *tab, size_t n, const char *s, size_t len) {
    for (size_t i = 0; i < n; i++)
        if (strlen(tab[i]) == len && memcmp(tab[i], s, len) == 0) return true;
    return false;
}

/* ---- expressions ---- */

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
            return jt_errf(p->err, LT_ERR_UNSUPPORTED, cur(p)->line,
                           "unsupported '*args' / '**kwargs' in a call");
        node_t *a;
        if (cur(p)->type == TK_NAME && is_op(peek(p), OP_ASSIGN)) {
            int id = jt_intern(p->tpl, cur(p)->s, cur(p)->n);
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
                return jt_errf(p->err, LT_ERR_FORMAT, cur(p)->line,
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

/* The name of a filter or test (kind) after `|` or `is`: *name its token and *row its row from
 * find; a dotted name, a name in refused or an unknown one is an error that names it. */
static int parse_builtin_name(parser_t *p, const char *kind, int (*find)(const char *, size_t),
                              const char *const *refused, size_t nrefused, const tok_t **name,
                              int *row) {
    const tok_t *t = cur(p);
    char what[16];
    *name = t;
    *row = -1;
    snprintf(what, sizeof what, "%s name", kind);
    if (t->type != TK_NAME) return p_unexpected(p, what);
    p->i++;
    if (is_op(cur(p), OP_DOT))
        return jt_errf(p->err, LT_ERR_UNSUPPORTED, t->line, "unsupported dotted %s name", kind);
    if ((*row = find(t->s, t->n)) >= 0) return 0;
    if (in_list(refused, nrefused, t->s, t->n))
        return jt_errf(p->err, LT_ERR_UNSUPPORTED, t->line, "unsupported %s '%.*s'", kind,
                       (int)t->n, t->s);
    return jt_errf(p->err, LT_ERR_FORMAT, t->line, "no %s named '%.*s'", kind, (int)t->n, t->s);
}

/* `| name(args)` chains; node may be NULL (filter blocks, set blocks). */
static int parse_filter(parser_t *p, node_t *node, bool start_inline, node_t **out) {
    int rc;
    while (is_op(cur(p), OP_PIPE) || start_inline) {
        if (!start_inline) p->i++;
        start_inline = false;
        const tok_t *t;
        int f;
        if ((rc = parse_builtin_name(p, "filter", jt_filter_find, k_filters_unsupported,
                                     COUNT_OF(k_filters_unsupported), &t, &f)))
            return rc;
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
    const tok_t *t;
    int id;
    if ((rc = parse_builtin_name(p, "test", jt_test_find, k_tests_unsupported,
                                 COUNT_OF(k_tests_unsupported), &t, &id)))
        return rc;
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
            return jt_errf(p->err, LT_ERR_FORMAT, c->line,
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
            g->id = jt_method_find(a->s, a->n);
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

/* `callee(args)`: *e, the callee, becomes the call. */
static int parse_call(parser_t *p, int line, node_t **e) {
    node_t *c = p_node(p, E_CALL, line);
    if (!c) return p_nomem(p);
    c->a = *e;
    int rc = parse_call_args(p, c);
    if (!rc) *e = c;
    return rc;
}

static int parse_postfix(parser_t *p, node_t **e) {
    int rc;
    for (;;) {
        const tok_t *t = cur(p);
        if (is_op(t, OP_DOT) || is_op(t, OP_LBRACKET)) {
            if ((rc = parse_subscript(p, e))) return rc;
        } else if (is_op(t, OP_LPAREN)) {
            if ((rc = parse_call(p, t->line, e))) return rc;
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
            if ((rc = parse_call(p, t->line, e))) return rc;
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
            if ((e->id = jt_intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
            e->s = a->s;
            e->n = a->n;
        } else {
            if (!(e = p_node(p, E_NAME, t->line))) return p_nomem(p);
            if ((e->id = jt_intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
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
        return jt_errf(p->err, LT_ERR_RANGE, t->line, "expression nested too deeply");
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

/* One precedence level of operands from sub joined left to right: by the arithmetic operators in
 * ops (ending with OP_NONE) into E_BIN nodes, or by the keyword word into kind nodes. */
static int parse_arith_level(parser_t *p, const uint8_t *ops, int (*sub)(parser_t *, node_t **),
                             node_t **out) {
    node_t *l = NULL, *r = NULL;
    int rc;
    if ((rc = sub(p, &l))) return rc;
    for (;;) {
        const tok_t *t = cur(p);
        int k = 0;
        while (ops[k] != OP_NONE && !is_op(t, ops[k])) k++;
        if (ops[k] == OP_NONE) break;
        p->i++;
        if ((rc = sub(p, &r)) || (rc = parse_bin(p, E_BIN, t->op, t->line, l, r, &l))) return rc;
    }
    *out = l;
    return 0;
}

static int parse_logic_level(parser_t *p, const char *word, int kind,
                             int (*sub)(parser_t *, node_t **), node_t **out) {
    node_t *l = NULL, *r = NULL;
    int rc;
    if ((rc = sub(p, &l))) return rc;
    while (is_name(cur(p), word)) {
        int line = cur(p)->line;
        p->i++;
        if ((rc = sub(p, &r)) || (rc = parse_bin(p, kind, 0, line, l, r, &l))) return rc;
    }
    *out = l;
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
    static const uint8_t ops[] = {OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_NONE};
    return parse_arith_level(p, ops, parse_pow, out);
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
    static const uint8_t ops[] = {OP_ADD, OP_SUB, OP_NONE};
    return parse_arith_level(p, ops, parse_concat, out);
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
            return jt_errf(p->err, LT_ERR_RANGE, t->line, "comparison chain too long");
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
            return jt_errf(p->err, LT_ERR_RANGE, line, "expression nested too deeply");
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
    return parse_logic_level(p, "and", E_AND, parse_not, out);
}

static int parse_or(parser_t *p, node_t **out) {
    return parse_logic_level(p, "or", E_OR, parse_and, out);
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
                return jt_errf(p->err, LT_ERR_RANGE, line, "expression nested too deeply");
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

/* ---- statements ---- */

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
    if (!ok) return jt_errf(p->err, LT_ERR_FORMAT, line, "can't assign to this expression");
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
            return jt_errf(p->err, LT_ERR_RANGE, t->line, "too many parameters");
        if ((ids[n] = jt_intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
        p->i++;
        node_t *d = NULL;
        if (is_op(cur(p), OP_ASSIGN)) {
            p->i++;
            if ((rc = parse_expression(p, true, &d))) return rc;
            any_default = true;
        } else if (any_default) {
            return jt_errf(p->err, LT_ERR_FORMAT, t->line,
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

/* `%}` and the body of e up to `{% end %}`, whose name is consumed (the caller expects `%}`). */
static int parse_block_body(parser_t *p, const char *end, node_t *e) {
    const char *ends[] = {end, NULL};
    nvec_t body = {0};
    int rc = parse_statements(p, ends, &body);
    if (rc) return rc;
    p->i++;
    e->v = body.v;
    e->nv = body.n;
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
        return jt_errf(p->err, LT_ERR_UNSUPPORTED, cur(p)->line, "unsupported recursive loop");
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
        if ((rc = parse_filter(p, NULL, false, &e->c)) || (rc = parse_block_body(p, "endset", e)))
            return rc;
    }
    *out = e;
    return 0;
}

/* A macro's or call block's body, up to `end`: the loops around it are not its own (no break or
 * continue), and e->op records the special names it reads. */
static int parse_macro_body(parser_t *p, const char *end, node_t *e) {
    int loops = p->loops, rc;
    p->loops = 0;
    if ((rc = parse_block_body(p, end, e))) return rc;
    p->loops = loops;
    e->op = (uint8_t)body_special_names(e->v, e->nv);
    return 0;
}

static int parse_macro(parser_t *p, node_t **out) {
    int line = cur(p)->line, rc;
    p->i++;
    const tok_t *t = cur(p);
    if (t->type != TK_NAME) return p_unexpected(p, "macro name");
    p->i++;
    node_t *e = p_node(p, S_MACRO, line);
    if (!e) return p_nomem(p);
    if ((e->id = jt_intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
    e->s = p->tpl->names[e->id].s;
    e->n = t->n;
    if ((rc = parse_signature(p, e))) return rc;
    if ((rc = parse_macro_body(p, "endmacro", e))) return rc;
    *out = e;
    return 0;
}

static int parse_call_block(parser_t *p, node_t **out) {
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
    if (e->a->kind != E_CALL) return jt_errf(p->err, LT_ERR_FORMAT, line, "expected call");
    if ((rc = parse_macro_body(p, "endcall", e))) return rc;
    *out = e;
    return 0;
}

static int parse_simple_block(parser_t *p, int kind, const char *end, node_t **out) {
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
                return jt_errf(p->err, LT_ERR_RANGE, t->line, "too many names");
            if ((ids[n] = jt_intern(p->tpl, t->s, t->n)) < 0) return p_nomem(p);
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
    if ((rc = parse_block_body(p, end, e))) return rc;
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
            return jt_errf(p->err, LT_ERR_FORMAT, t->line, "'%.*s' outside of a loop", (int)t->n,
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
        return jt_errf(p->err, LT_ERR_UNSUPPORTED, t->line, "unsupported tag '%.*s'", (int)t->n,
                       t->s);
    } else {
        return jt_errf(p->err, LT_ERR_FORMAT, t->line, "unknown tag '%.*s'", (int)t->n, t->s);
    }
    if (rc) return rc;
    return nv_push(p, out, e);
}

/* Statements and data until `{% end %}` for an end in ends (NULL: until the end of input). */
static int parse_body(parser_t *p, const char *const *ends, nvec_t *out) {
    int rc, line = cur(p)->line;
    if (++p->depth > CT_MAX_NEST)
        return jt_errf(p->err, LT_ERR_RANGE, line, "blocks nested too deeply");
    for (;;) {
        const tok_t *t = cur(p);
        if (t->type == TK_EOF) {
            if (ends) {
                char want[128];
                size_t k = 0;
                for (int i = 0; ends[i] && k < sizeof want - 24; i++)
                    k += (size_t)snprintf(want + k, sizeof want - k, "%s'%s'", i ? " or " : "",
                                          ends[i]);
                return jt_errf(p->err, LT_ERR_FORMAT, t->line,
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

int jt_parse(fe_chat_template_t *t, const tok_t *toks, char *err) {
    parser_t p = {.t = toks, .tpl = t, .err = err};
    nvec_t body = {0};
    int rc = parse_body(&p, NULL, &body);
    t->body = body.v;
    t->nbody = body.n;
    return rc;
}
