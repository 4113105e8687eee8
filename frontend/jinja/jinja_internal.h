/*
 * jinja_internal.h — what the files of the chat template interpreter share: its limits, values,
 * tokens, syntax tree and render state, and the functions each file offers the others. The
 * public API is chat_template.h; nothing outside frontend/jinja includes this header.
 *
 * Why one private header: the interpreter is one program cut into files by concern (unicode,
 * lexer, parser, value, print, strings, access, render, filters, tests, methods, chat_template);
 * they share one set of types, and one header keeps their contracts in one place.
 *
 * Naming: what a file offers the others carries jt_; the small inline value helpers keep their
 * short v_ names. Errors: functions return 0 or a negative LT_ERR_*; those that take a render_t
 * have written the message, with the template line, into its err. Ownership: values point into
 * the context, the template or the render's arena and are never freed one by one. Thread safety:
 * a compiled template is immutable; a render_t belongs to one render on one thread.
 */
#ifndef FE_JINJA_INTERNAL_H
#define FE_JINJA_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "chat_template.h"
#include "lt.h"

/* ---- limits ---- */

#define CT_MAX_SOURCE    (16u << 20)  /* template source bytes */
#define CT_MAX_NEST      200          /* parser nesting: expressions, blocks, brackets */
#define CT_MAX_CALLS     100          /* macro call depth, which bounds recursion */
#define CT_MAX_STEPS     (1u << 20)   /* loop iterations, macro calls and filter elements */
#define CT_MAX_OUTPUT    (32u << 20)  /* bytes of rendered text */
#define CT_MAX_ARENA     (256u << 20) /* bytes of values made by one render */
#define CT_MAX_RANGE     100000       /* range() length, as jinja2's sandbox */
#define CT_MAX_VAL_DEPTH 256          /* nesting of a value printed, compared or converted */
#define CT_ARENA_CHUNK   (64u << 10)  /* the arenas' chunk size */

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* "chat template line N: <message>" into err (LT_ERR_LEN bytes, may be NULL); returns code. */
int jt_errf(char *err, int code, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int jt_verrf(char *err, int code, int line, const char *fmt, va_list ap);

/* ---- values ---- */

enum {
    VK_MISSING = 0, /* internal: an unbound slot, never seen by a template */
    VK_UNDEF,
    VK_NONE,
    VK_BOOL,
    VK_INT,
    VK_FLOAT,
    VK_STR,
    VK_LIST, /* f: LF_* */
    VK_DICT,
    VK_NS,   /* namespace(): a mutable dict reached through attributes */
    VK_LOOP, /* the `loop` variable */
    VK_FN,   /* macro, global function, bound method, caller */
};

/* VK_LIST flags. An iterator stands for the generators jinja2's filters return (map, select,
 * unique, items, reverse...): always true, no len(), no indexing, printed as an object. */
#define LF_TUPLE 1
#define LF_ITER  2

/* Why an undefined value is undefined, for the message when it is misused (as jinja2's). */
enum { UH_NONE = 0, UH_NAME, UH_ATTR, UH_ITEM, UH_UNSAFE, UH_MSG };

typedef struct list list_t;
typedef struct dict dict_t;
typedef struct loopctx loopctx_t;
typedef struct fn fn_t;

typedef struct val {
    uint8_t k;
    uint8_t f;  /* VK_LIST: LF_*; VK_UNDEF: UH_*; VK_STR: 1 = Markup (from safe / escape) */
    uint8_t t;  /* VK_UNDEF: kind of the object a lookup failed on */
    uint32_t n; /* VK_STR: bytes; VK_UNDEF: hint length */
    union {
        bool b;
        int64_t i;
        double d;
        const char *s; /* VK_STR, and the VK_UNDEF hint */
        list_t *l;
        dict_t *m; /* VK_DICT, VK_NS */
        loopctx_t *lp;
        const fn_t *fn;
    } u;
} val_t;

struct list {
    uint32_t n, cap;
    val_t *v;
    const char *err; /* an iterator whose (lazy) computation failed: consuming it is the error */
};

struct dict {
    uint32_t n, cap;
    val_t *k, *v;
};

static inline val_t v_undef(void) {
    return (val_t){.k = VK_UNDEF};
}

static inline val_t v_none(void) {
    return (val_t){.k = VK_NONE};
}

static inline val_t v_bool(bool b) {
    return (val_t){.k = VK_BOOL, .u.b = b};
}

static inline val_t v_int(int64_t i) {
    return (val_t){.k = VK_INT, .u.i = i};
}

static inline val_t v_float(double d) {
    return (val_t){.k = VK_FLOAT, .u.d = d};
}

static inline val_t v_str(const char *s, size_t n) {
    return (val_t){.k = VK_STR, .n = (uint32_t)n, .u.s = s};
}

static inline val_t v_undef_hint(int why, int objkind, const char *s, size_t n) {
    return (val_t){
        .k = VK_UNDEF, .f = (uint8_t)why, .t = (uint8_t)objkind, .n = (uint32_t)n, .u.s = s};
}

static inline bool v_isnum(const val_t *v) {
    return v->k == VK_INT || v->k == VK_FLOAT || v->k == VK_BOOL;
}

static inline bool v_isint(const val_t *v) {
    return v->k == VK_INT || v->k == VK_BOOL;
}

static inline int64_t v_asint(const val_t *v) {
    return v->k == VK_BOOL ? (int64_t)v->u.b : v->u.i;
}

static inline double v_asfloat(const val_t *v) {
    return v->k == VK_FLOAT ? v->u.d : (double)v_asint(v);
}

static inline bool v_truthy(const val_t *v) {
    switch (v->k) {
    case VK_UNDEF:
    case VK_NONE: return false;
    case VK_BOOL: return v->u.b;
    case VK_INT: return v->u.i != 0;
    case VK_FLOAT: return v->u.d != 0.0;
    case VK_STR: return v->n > 0;
    case VK_LIST: return v->u.l->n > 0 || (v->f & LF_ITER);
    case VK_DICT: return v->u.m->n > 0;
    default: return true;
    }
}

static inline val_t v_list(list_t *l, int flags) {
    return (val_t){.k = VK_LIST, .f = (uint8_t)flags, .u.l = l};
}

static inline bool v_isiter(const val_t *v) {
    return v->k == VK_LIST && (v->f & LF_ITER);
}

static inline bool v_streq(const val_t *v, const char *s, size_t n) {
    return v->k == VK_STR && v->n == n && memcmp(v->u.s, s, n) == 0;
}

/* ---- tokens (lexer.c) ---- */

/* Tokens as jinja2's lexer makes them. Template data comes out already trimmed by the
 * whitespace rules; comments and raw markers do not come out at all. */
enum {
    TK_EOF,
    TK_DATA,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP,
};

enum {
    OP_NONE,
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_FLOORDIV,
    OP_MOD,
    OP_POW,
    OP_TILDE,
    OP_LBRACKET,
    OP_RBRACKET,
    OP_LPAREN,
    OP_RPAREN,
    OP_LBRACE,
    OP_RBRACE,
    OP_EQ,
    OP_NE,
    OP_GT,
    OP_GE,
    OP_LT,
    OP_LE,
    OP_ASSIGN,
    OP_DOT,
    OP_COLON,
    OP_PIPE,
    OP_COMMA,
    OP_SEMICOLON,
    OP_IN, /* comparison operators made by the parser from names */
    OP_NOTIN,
};

typedef struct tok {
    uint8_t type, op;
    int line;
    const char *s; /* data, name, decoded string; points into the template's copy or arena */
    size_t n;
    int64_t i;
    double d;
} tok_t;

/* ---- syntax tree (parser.c) ---- */

enum {
    /* statements */
    S_DATA,        /* s, n */
    S_OUTPUT,      /* a */
    S_IF,          /* a: test, v: body, w: else body (an elif is an else holding one S_IF) */
    S_FOR,         /* a: target, b: iterable, c: filter test or NULL, v: body, w: else body */
    S_SET,         /* a: target (E_NAME, E_TUPLE of names, E_NSREF), b: value */
    S_SETBLOCK,    /* a: target, c: filter chain or NULL, v: body */
    S_MACRO,       /* id: name, kw/nw: parameters, w: defaults (NULL: none), v: body, op: MAC_* */
    S_CALLBLOCK,   /* a: the E_CALL, kw/nw/w: caller's parameters, v: caller's body, op: MAC_* */
    S_FILTERBLOCK, /* c: filter chain (innermost operand NULL), v: body */
    S_WITH,        /* kw/nw: names, w: values, v: body */
    S_BREAK,
    S_CONTINUE,
    S_GENERATION, /* transformers' {% generation %}: v rendered as is */
    /* expressions */
    E_CONST,   /* k */
    E_NAME,    /* id */
    E_NSREF,   /* assignment target ns.attr: id, s/n */
    E_GETATTR, /* a, s/n; id: jt_method_find's row or -1 */
    E_GETITEM, /* a, b */
    E_SLICE,   /* a; v[0..2]: start, stop, step (each may be NULL) */
    E_CALL,    /* a: callee, v: args, w/kw: keyword args */
    E_FILTER,  /* a: operand (NULL in a filter block), id: jt_filter_find's row, s: name, v, w/kw */
    E_TEST,    /* a, id: jt_test_find's row, s: name, v, w/kw */
    E_BIN,     /* op, a, b */
    E_NEG,
    E_POS,
    E_CONCAT, /* v */
    E_CMP,    /* a, v: operands, ops */
    E_AND,
    E_OR,
    E_NOT,
    E_COND,  /* a: value, b: test, c: else value or NULL */
    E_LIST,  /* v */
    E_TUPLE, /* v */
    E_DICT,  /* v: keys, w: values */
};

typedef struct node node_t;

struct node {
    uint8_t kind;
    uint8_t op;
    uint8_t negpow; /* E_BIN **: jinja2's constant-folding quirk, see parse_pow (parser.c) */
    int line;
    int id;
    node_t *a, *b, *c;
    node_t **v;
    node_t **w;
    int *kw;
    uint8_t *ops;
    int nv, nw;
    const char *s;
    size_t n;
    val_t k;
};

typedef struct {
    const char *s;
    size_t n;
} name_t;

struct fe_chat_template {
    lt_arena_t arena; /* nodes, names, decoded strings */
    char *src;        /* the newline-normalised source: data nodes point into it */
    node_t **body;
    int nbody;
    name_t *names; /* identifiers, by id */
    int nnames, capnames;
};

/* Names with fixed ids, interned first. */
enum {
    NM_LOOP,
    NM_CALLER,
    NM_RANGE,
    NM_NAMESPACE,
    NM_RAISE,
    NM_STRFTIME,
    NM_DICT,
    NM_CYCLER,
    NM_JOINER,
    NM_LIPSUM,
    NM_KWARGS,
    NM_VARARGS,
    NM__FIXED
};

/* S_MACRO / S_CALLBLOCK op bits: which special names the body reads (jinja2 decides from the
 * same thing whether a macro accepts a caller, extra keywords or extra positionals). */
#define MAC_CALLER  1
#define MAC_KWARGS  2
#define MAC_VARARGS 4

/* ---- render state (render.c) ---- */

typedef struct scope scope_t;

struct scope {
    scope_t *parent; /* NULL: the template's top level (render_t.root) */
    int n, cap;
    int *ids;
    val_t *vals;
};

struct loopctx {
    int64_t i, n;       /* index0, length */
    const val_t *items; /* for previtem / nextitem */
    val_t last;         /* changed() */
    bool has_last;
};

enum { FN_MACRO, FN_CALLER, FN_GLOBAL, FN_METHOD };

struct fn {
    uint8_t kind;
    int id;             /* FN_GLOBAL: NM_*; FN_METHOD: jt_method_find's row */
    const node_t *node; /* FN_MACRO: S_MACRO; FN_CALLER: S_CALLBLOCK */
    scope_t *scope;     /* where it was defined */
    val_t self;         /* FN_METHOD */
};

/* Control flow out of a statement list, besides 0 and negative errors. */
enum { SIG_BREAK = 1, SIG_CONTINUE = 2 };

typedef struct render {
    const fe_chat_template_t *t;
    const cJSON *ctx;
    lt_arena_t arena;
    lt_buf_t out; /* output; captured bodies are rendered at its end and cut off again */
    val_t *root;  /* top-level variables by name id; VK_MISSING: not looked up yet */
    scope_t *sc;  /* innermost scope; NULL: top level */
    uint64_t steps;
    int calls;
    bool raised; /* err holds a raise_exception() message as is */
    char *err;
} render_t;

static inline void *jt_alloc(render_t *r, size_t n) {
    return lt_arena_alloc(&r->arena, n);
}

typedef struct {
    val_t *pos;
    int npos;
    const val_t *kwv;
    const int *kwid;
    int nkw;
} args_t;

static inline bool jt_arg_bool(const val_t *v, bool dflt) {
    return v->k == VK_MISSING ? dflt : v_truthy(v);
}

/* ---- UTF-8 and Unicode (unicode.c) ---- */

/* ASCII 0-9. */
static inline bool jt_is_digit(char c) {
    return c >= '0' && c <= '9';
}

/* Decodes the code point at s[*i] and advances *i. A byte that does not start a valid sequence
 * decodes as U+DC80..U+DCFF (Python's surrogateescape) so that jt_u8_put writes it back unchanged.
 */
uint32_t jt_u8_next(const char *s, size_t n, size_t *i);
/* The code point that ends at s[*i - 1] (not before start); moves *i back to its first byte. */
uint32_t jt_u8_prev(const char *s, size_t start, size_t *i);
/* UTF-8 for c, writing an escaped raw byte (U+DC80..U+DCFF, see jt_u8_next) back as that byte and
 * any other lone surrogate as U+FFFD. */
size_t jt_u8_put(uint32_t c, char *o);
/* Code points in s[0, n). */
size_t jt_u8_count(const char *s, size_t n);
/* Byte offset of code point number idx (n when past the end). */
size_t jt_u8_offset(const char *s, size_t n, size_t idx);
/* End of the run of (Unicode) whitespace starting at i: Python's \s*. */
size_t jt_ws_span(const char *s, size_t n, size_t i);
/* Python's str.isspace(). */
bool jt_uc_isspace(uint32_t c);
/* Python's lower() / upper() of one code point, for the scripts we map (see
 * chat_template.c); anything else is left as it is. */
uint32_t jt_uc_lower(uint32_t c);
uint32_t jt_uc_upper(uint32_t c);
/* Upper case, lower case, either: as Python sees one character. */
bool jt_uc_isupper(uint32_t c);
bool jt_uc_islower(uint32_t c);
bool jt_uc_cased(uint32_t c);
/* An ASCII digit (str.isdigit() for what templates meet). */
bool jt_uc_isdigit(uint32_t c);
/* Letters: the cased ones we map, plus the big uncased scripts (Hebrew, Arabic, kana, CJK,
 * Hangul). An approximation of Python's category L*, enough for isalpha()/isalnum(). */
bool jt_uc_isalpha(uint32_t c);
bool jt_uc_isalnum(uint32_t c);

/* ---- lexer (lexer.c) ---- */

/* Tokenises the whole (newline-normalised) source s[0, n), decoding string literals into
 * arena. On success *toks is a malloc'd array ending with TK_EOF that the caller frees. */
int jt_lex(const char *s, size_t n, lt_arena_t *arena, tok_t **toks, char *err);

/* ---- parser (parser.c) ---- */

/* The NM_* names, interned first in every template so they keep these ids. */
extern const char *const jt_fixed_names[NM__FIXED];
/* The id of identifier s (interned in the template). -1 on allocation failure. */
int jt_intern(fe_chat_template_t *t, const char *s, size_t n);
/* Parses the tokens into t->body (nodes in t->arena, names interned in t). */
int jt_parse(fe_chat_template_t *t, const tok_t *toks, char *err);

/* ---- values and operators (value.c) ---- */

/* Python's type name, for error messages. */
const char *jt_typename(int k, int tuple);
/* A list with room for cap items in the render's arena; NULL when out of memory. */
list_t *jt_list_new(render_t *r, size_t cap);
/* Appends v, growing the list; false when out of memory. */
bool jt_list_push(render_t *r, list_t *l, val_t v);
/* A dict with room for cap keys in the render's arena; NULL when out of memory. */
dict_t *jt_dict_new(render_t *r, size_t cap);
/* A new string of n bytes to fill; NULL when out of memory. */
char *jt_str_new(render_t *r, size_t n, val_t *out);
/* b's text as a new string value, or, when brc (what filling b returned) is not 0, its error
 * (jt_outerr). Frees b either way. */
int jt_str_take(render_t *r, int line, lt_buf_t *b, int brc, val_t *out);
/* The index of key in d (Python's ==), or -1. */
int jt_dict_find(const dict_t *d, const val_t *key);
/* The index of the string key s[0, n) in d, or -1. */
int jt_dict_find_str(const dict_t *d, const char *s, size_t n);
/* Adds a key known to be absent. */
bool jt_dict_append(render_t *r, dict_t *d, val_t key, val_t v);
/* Sets key to v (a new key goes last, as in Python). */
bool jt_dict_set(render_t *r, dict_t *d, val_t key, val_t v);
/* The (key, value) tuples of d, in its order or, when order is not NULL, in that one. */
list_t *jt_dict_items(render_t *r, const dict_t *d, const uint32_t *order);
/* Python's a == b; depth bounds the recursion (too deep: not equal). */
bool jt_eq(const val_t *a, const val_t *b, int depth);
/* Python's a < b, as -1/0/1 in *res; false when the types do not order (a TypeError). */
bool jt_cmp(const val_t *a, const val_t *b, int *res, int depth);
/* a op b for the arithmetic OP_* (with `str % x` for OP_MOD), into *out. */
int jt_arith(render_t *r, int line, int op, const val_t *a, const val_t *b, val_t *out);
/* `a in b` (Python's b.__contains__(a)); false for undefined b, like jinja2. */
int jt_contains(render_t *r, int line, const val_t *a, const val_t *b, bool *res);
/* a op b for the comparison OP_*, OP_IN and OP_NOTIN, into *res. */
int jt_compare(render_t *r, int line, int op, const val_t *a, const val_t *b, bool *res);
/* A context value from cJSON, nested at most CT_MAX_VAL_DEPTH deep: 0, LT_ERR_RANGE or
 * LT_ERR_NOMEM, no message written. */
int jt_from_json(render_t *r, const cJSON *j, val_t *out, int depth);

/* ---- printing (print.c) ---- */

/* str(v) (repr false) or repr(v) into b. Returns an lt_buf error code (LT_ERR_RANGE when the value
 * nests too deeply or the text grows past the output limit). */
int jt_write(render_t *r, lt_buf_t *b, const val_t *v, bool repr, int depth);
/* str(v) as a string value: strings as they are, anything else printed into the arena. */
int jt_tostr(render_t *r, int line, const val_t *v, val_t *out);

/* How jt_json_write lays JSON out: json.dumps' indent, separators, sort_keys and ensure_ascii. */
typedef struct {
    const char *indent; /* NULL: single line */
    size_t indent_n;
    const char *item_sep, *key_sep;
    size_t item_sep_n, key_sep_n;
    bool sort_keys, ensure_ascii;
} json_opts_t;

/* Writes v as JSON; *bad receives the first value that cannot be serialised. */
int jt_json_write(render_t *r, lt_buf_t *b, const val_t *v, const json_opts_t *o, int level,
                  const val_t **bad);

/* ---- Python's str operations (strings.c) ---- */

/* str.strip / lstrip / rstrip: a slice of s. chars NULL: whitespace. */
val_t jt_str_strip(const val_t *s, const val_t *chars, bool left, bool right);

/* jt_str_case's mappings (CASE_JTITLE: jinja2's title filter). */
enum { CASE_UPPER, CASE_LOWER, CASE_CAPITALIZE, CASE_TITLE, CASE_JTITLE };

/* upper(), lower(), capitalize(), title() and jinja2's title filter (words start after
 * whitespace or one of "-({[<"). No mapping here makes a character longer in UTF-8. */
int jt_str_case(render_t *r, int line, const val_t *s, int mode, val_t *out);
/* str.split / rsplit (sep NULL: runs of whitespace). */
int jt_str_split(render_t *r, int line, const val_t *s, const val_t *sep, int64_t maxsplit,
                 bool right, val_t *out);
/* str.splitlines() without keepends. */
int jt_str_splitlines(render_t *r, int line, const val_t *s, val_t *out);
/* str.replace(old, rep, count); count < 0: every occurrence. */
int jt_str_replace(render_t *r, int line, const val_t *s, const val_t *old, const val_t *rep,
                   int64_t count, val_t *out);
/* str.find (right: rfind) as a code point index; -1 when absent. */
int64_t jt_str_find(const val_t *s, const val_t *sub, bool right);
/* str.count(sub). */
int64_t jt_str_count(const val_t *s, const val_t *sub);
/* str.isdigit() and friends: every character passes and there is at least one. */
bool jt_str_all(const val_t *s, bool (*pred)(uint32_t));
/* islower (want_lower) / isupper: some cased character and none of the other case. */
bool jt_str_iscase(const val_t *s, bool want_lower);
/* Python's printf-style `str % arg` for what templates use: %s %r %d %i %% and, with a mapping,
 * %(name)s. Anything else (widths, precisions, other conversions) is refused by name. */
int jt_str_percent(render_t *r, int line, const val_t *fmt, const val_t *arg, val_t *out);
/* markupsafe's escape(): a Markup string. */
int jt_html_escape(render_t *r, int line, const val_t *v, val_t *out);

/* ---- attributes, items, iteration (access.c) ---- */

/* A bound method value (only made when a method is taken without being called). */
int jt_bound_method(render_t *r, int line, const val_t *obj, int m, val_t *out);
/* obj.name: a Python attribute first (methods; namespace and loop attributes), then obj[name]. */
int jt_getattr(render_t *r, int line, const val_t *obj, const char *s, size_t n, int m, val_t *out);
/* obj[key]: the item first, then (for a string key) the attribute. */
int jt_getitem(render_t *r, int line, const val_t *obj, const val_t *key, val_t *out);
/* obj[start:stop:step]; sv holds the three bounds (None: the default). */
int jt_getslice(render_t *r, int line, const val_t *obj, const val_t *sv, val_t *out);
/* The items `for` and the filters walk: a list's items, a dict's keys, a string's characters;
 * undefined is empty. Points into the value when it can. */
int jt_iter_items(render_t *r, int line, const val_t *v, const val_t **items, size_t *n);

/* ---- render: errors, arguments, output (render.c) ---- */

/* "chat template line N: <message>" into r->err; returns code. */
int jt_err(render_t *r, int line, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Out of memory: LT_ERR_NOMEM, or LT_ERR_RANGE when the render's arena reached
 * CT_MAX_ARENA. */
int jt_nomem(render_t *r, int line);
/* Out of the output buffer's limit or memory. */
int jt_outerr(render_t *r, int line, int rc);
/* Counts k steps (loop iterations, macro calls, filter elements) against CT_MAX_STEPS. */
int jt_step(render_t *r, int line, uint64_t k);
/* jinja2's UndefinedError for a misused undefined value. */
int jt_undef_err(render_t *r, int line, const val_t *u);
/* A TypeError: fmt with the type names of a and b (b may be NULL). */
int jt_type_err(render_t *r, int line, const char *fmt, const val_t *a, const val_t *b);
/* Binds arguments to named parameters; unbound slots are VK_MISSING. */
int jt_bind(render_t *r, int line, const char *what, const char *const *params, int np,
            const args_t *a, val_t *slots);
/* An optional integer argument: dflt when missing or None. */
int jt_arg_int(render_t *r, int line, const val_t *v, int64_t dflt, const char *what, int64_t *out);
/* Fails unless v is a string; what names the callee. */
int jt_need_str(render_t *r, int line, const val_t *v, const char *what);
/* Renders n statements into r->out: 0, SIG_BREAK, SIG_CONTINUE or an error. */
int jt_exec_body(render_t *r, node_t *const *v, int n);

/* ---- filters (filters.c) ---- */

/* The row of the filter called s[0, len) in the table, or -1. */
int jt_filter_find(const char *s, size_t len);
/* Applies filter number idx (from jt_filter_find) to v. */
int jt_filter_apply(render_t *r, int line, int idx, const val_t *v, const args_t *a, val_t *out);

/* ---- tests (tests.c) ---- */

/* The row of the test called s[0, len) in the table, or -1. */
int jt_test_find(const char *s, size_t len);
/* Applies test number idx (from jt_test_find) to v. */
int jt_test_apply(render_t *r, int line, int idx, const val_t *v, const args_t *a, bool *res);

/* ---- methods (methods.c) ---- */

/* The row of the Python method called s[0, len) in the table, or -1. */
int jt_method_find(const char *s, size_t len);
/* Whether v has method m (a row, or -1), and in *unsafe whether the sandbox refuses it. */
bool jt_method_of(const val_t *v, int m, bool *unsafe);
/* Calls method number m (from jt_method_find) of self, which has it (jt_method_of). */
int jt_method_call(render_t *r, int line, const val_t *self, int m, const args_t *a, val_t *out);

#endif
