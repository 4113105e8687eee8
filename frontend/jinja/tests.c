/*
 * tests.c — jinja2's tests (`value is name(arg)`), one function each in a table by name, for
 * `is` expressions and for the select and reject filters.
 *
 * Why a table: the parser, `is` and the filters all find a test by name; aliases (eq, equalto
 * and ==; gt, > and greaterthan...) share a function.
 */

#include <stdio.h>
#include <string.h>

#include "jinja_internal.h"

/* A test gets its operand v and its one argument (VK_MISSING for the tests that take none). */
typedef int (*test_fn)(render_t *r, int line, const val_t *v, const val_t *arg, bool *res);

static int test_boolean(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_BOOL;
    return 0;
}

static int test_callable(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_FN || v->k == VK_UNDEF;
    return 0;
}

static int test_defined(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k != VK_UNDEF;
    return 0;
}

static int test_undefined(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_UNDEF;
    return 0;
}

static int test_none(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_NONE;
    return 0;
}

static int test_false(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_BOOL && !v->u.b;
    return 0;
}

static int test_true(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_BOOL && v->u.b;
    return 0;
}

static int test_integer(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_INT;
    return 0;
}

static int test_float(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_FLOAT;
    return 0;
}

static int test_number(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v_isnum(v);
    return 0;
}

static int test_string(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_STR;
    return 0;
}

static int test_mapping(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = v->k == VK_DICT;
    return 0;
}

static int test_iterable(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res =
        v->k == VK_STR || v->k == VK_LIST || v->k == VK_DICT || v->k == VK_UNDEF || v->k == VK_LOOP;
    return 0;
}

static int test_sequence(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res =
        v->k == VK_STR || (v->k == VK_LIST && !v_isiter(v)) || v->k == VK_DICT || v->k == VK_UNDEF;
    return 0;
}

static int test_escaped(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    *res = false;
    return 0;
}

static int test_lower(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    val_t s;
    int rc = jt_tostr(r, line, v, &s);
    if (!rc) *res = jt_str_iscase(&s, true);
    return rc;
}

static int test_upper(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    val_t s;
    int rc = jt_tostr(r, line, v, &s);
    if (!rc) *res = jt_str_iscase(&s, false);
    return rc;
}

/* v % d == want, as Python computes it (so floats and bools work, and 0 is an error). */
static int mod_is(render_t *r, int line, const val_t *v, val_t d, double want, bool *res) {
    val_t m;
    int rc = jt_arith(r, line, OP_MOD, v, &d, &m);
    if (!rc) *res = v_asfloat(&m) == want;
    return rc;
}

static int test_even(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return mod_is(r, line, v, v_int(2), 0.0, res);
}

static int test_odd(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return mod_is(r, line, v, v_int(2), 1.0, res);
}

static int test_divisibleby(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return mod_is(r, line, v, *arg, 0.0, res);
}

/* Python's `is`: identity, as far as values here have one (small ints are cached). */
static int test_sameas(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    const val_t *o = arg;
    if (v->k != o->k)
        *res = false;
    else if (v->k == VK_NONE || v->k == VK_UNDEF)
        *res = true;
    else if (v->k == VK_BOOL)
        *res = v->u.b == o->u.b;
    else if (v->k == VK_INT)
        *res = v->u.i == o->u.i && v->u.i >= -5 && v->u.i <= 256;
    else if (v->k == VK_STR)
        *res = v->u.s == o->u.s && v->n == o->n;
    else
        *res = v->u.l == o->u.l;
    return 0;
}

static int test_in(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return jt_contains(r, line, v, arg, res);
}

static int test_eq(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return jt_compare(r, line, OP_EQ, v, arg, res);
}

static int test_ne(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return jt_compare(r, line, OP_NE, v, arg, res);
}

static int test_lt(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return jt_compare(r, line, OP_LT, v, arg, res);
}

static int test_le(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return jt_compare(r, line, OP_LE, v, arg, res);
}

static int test_gt(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return jt_compare(r, line, OP_GT, v, arg, res);
}

static int test_ge(render_t *r, int line, const val_t *v, const val_t *arg, bool *res) {
    return jt_compare(r, line, OP_GE, v, arg, res);
}

/* ---- the table ---- */

/* jinja2's tests, by name; aliases share a function. */
static const struct {
    const char *name;
    test_fn fn;
    const char *param; /* the one argument's name, or NULL */
} k_tests[] = {
    {"boolean", test_boolean, NULL},
    {"callable", test_callable, NULL},
    {"defined", test_defined, NULL},
    {"divisibleby", test_divisibleby, "num"},
    {"eq", test_eq, "b"},
    {"equalto", test_eq, "b"},
    {"==", test_eq, "b"},
    {"escaped", test_escaped, NULL},
    {"even", test_even, NULL},
    {"false", test_false, NULL},
    {"float", test_float, NULL},
    {"ge", test_ge, "b"},
    {">=", test_ge, "b"},
    {"gt", test_gt, "b"},
    {">", test_gt, "b"},
    {"greaterthan", test_gt, "b"},
    {"in", test_in, "seq"},
    {"integer", test_integer, NULL},
    {"iterable", test_iterable, NULL},
    {"le", test_le, "b"},
    {"<=", test_le, "b"},
    {"lower", test_lower, NULL},
    {"lt", test_lt, "b"},
    {"<", test_lt, "b"},
    {"lessthan", test_lt, "b"},
    {"mapping", test_mapping, NULL},
    {"ne", test_ne, "b"},
    {"!=", test_ne, "b"},
    {"none", test_none, NULL},
    {"number", test_number, NULL},
    {"odd", test_odd, NULL},
    {"sameas", test_sameas, "other"},
    {"sequence", test_sequence, NULL},
    {"string", test_string, NULL},
    {"true", test_true, NULL},
    {"undefined", test_undefined, NULL},
    {"upper", test_upper, NULL},
};

int jt_test_find(const char *s, size_t len) {
    for (size_t i = 0; i < COUNT_OF(k_tests); i++)
        if (strlen(k_tests[i].name) == len && memcmp(k_tests[i].name, s, len) == 0) return (int)i;
    return -1;
}

int jt_test_apply(render_t *r, int line, int idx, const val_t *v, const args_t *a, bool *res) {
    /* messages name a test after the first row with its function: `==` reports as 'eq' */
    const char *name = k_tests[idx].name;
    for (size_t i = 0; i < COUNT_OF(k_tests); i++)
        if (k_tests[i].fn == k_tests[idx].fn) {
            name = k_tests[i].name;
            break;
        }
    val_t arg = {.k = VK_MISSING};
    int np = k_tests[idx].param ? 1 : 0, rc;
    char what[48];
    snprintf(what, sizeof what, "test '%s'", name);
    if ((rc = jt_bind(r, line, what, &k_tests[idx].param, np, a, &arg))) return rc;
    if (np && arg.k == VK_MISSING)
        return jt_err(r, line, LT_ERR_INVAL, "%s needs an argument", what);
    return k_tests[idx].fn(r, line, v, &arg, res);
}
