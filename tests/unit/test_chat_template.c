/*
 * test_chat_template.c — the chat template interpreter (frontend/jinja/) against
 * transformers: every case of tests/fixtures/chat_templates.json (made by
 * tools/gen_chat_template_fixtures.py with transformers' own render_jinja_template) must render
 * byte for byte, or fail with the message the template raises. Then what the fixture cannot
 * show: compile errors name the construct and its line, runaway templates stop at the limits, a
 * 100 KB template compiles and renders in linear time, one compiled template renders from
 * several threads at once, and a 10-message conversation renders well under a millisecond.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "chat_template.h"
#include "gguf.h"
#include "json.h"
#include "lt.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

/* ---- helpers ---- */

static cJSON *load_fixture(void) {
    char err[LT_ERR_LEN];
    char *text;
    size_t len;
    const char *path = tu_fixture("chat_templates.json");
    if (lt_read_file(path, &text, &len, err) != 0) {
        print_error("%s\n", err);
        fail();
    }
    cJSON *doc = cJSON_ParseWithLength(text, len);
    free(text);
    assert_non_null(doc);
    return doc;
}

/* Prints where two renderings first differ, with some text around it. */
static void print_diff(const char *what, const char *want, const char *got) {
    size_t i = 0;
    while (want[i] && want[i] == got[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    print_error("%s: first difference at byte %zu (expected %zu bytes, got %zu)\n"
                "  expected: \"%.100s\"\n  got:      \"%.100s\"\n",
                what, i, strlen(want), strlen(got), want + from, got + from);
}

/* Renders every case of one fixture template from src; returns the number of failures. */
static int check_cases(const char *tname, const char *src, const cJSON *cases) {
    char err[LT_ERR_LEN] = "";
    fe_chat_template_t *t = NULL;
    int rc = fe_chat_template_compile(src, strlen(src), &t, err);
    if (rc != 0) {
        print_error("%s: compile failed (%d): %s\n", tname, rc, err);
        return 1;
    }
    int failures = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        char what[256];
        snprintf(what, sizeof what, "%s/%s", tname,
                 cJSON_GetStringValue(cJSON_GetObjectItem(c, "name")));
        const cJSON *ctx = cJSON_GetObjectItem(c, "context");
        const char *want = cJSON_GetStringValue(cJSON_GetObjectItem(c, "expected"));
        const char *want_err = cJSON_GetStringValue(cJSON_GetObjectItem(c, "error"));
        char *out = NULL;
        err[0] = 0;
        rc = fe_chat_template_render(t, ctx, &out, NULL, err);
        if (want) {
            if (rc != 0) {
                print_error("%s: render failed (%d): %s\n", what, rc, err);
                failures++;
            } else if (strcmp(out, want) != 0) {
                print_diff(what, want, out);
                failures++;
            }
        } else {
            /* raise_exception(msg): exactly msg; jinja2's own errors: its message is contained */
            bool raised = cJSON_IsTrue(cJSON_GetObjectItem(c, "raised"));
            bool ok = rc == LT_ERR_INVAL && want_err &&
                      (raised ? strcmp(err, want_err) == 0 : strstr(err, want_err) != NULL);
            if (!ok) {
                print_error("%s: expected error \"%s\", got rc %d \"%s\"\n", what,
                            want_err ? want_err : "?", rc, rc ? err : out);
                failures++;
            }
        }
        free(out);
    }
    fe_chat_template_destroy(&t);
    assert_null(t);
    return failures;
}

static int compile_err(const char *src, char *err) {
    fe_chat_template_t *t = NULL;
    int rc = fe_chat_template_compile(src, strlen(src), &t, err);
    if (rc == 0) fe_chat_template_destroy(&t);
    return rc;
}

/* Compiles and renders src with a context given as JSON text (NULL: none). */
static int render_str(const char *src, const char *ctx_json, char **out, char *err) {
    fe_chat_template_t *t = NULL;
    *out = NULL;
    int rc = fe_chat_template_compile(src, strlen(src), &t, err);
    if (rc) return rc;
    cJSON *ctx = ctx_json ? cJSON_Parse(ctx_json) : NULL;
    if (ctx_json) assert_non_null(ctx);
    rc = fe_chat_template_render(t, ctx, out, NULL, err);
    cJSON_Delete(ctx);
    fe_chat_template_destroy(&t);
    return rc;
}

static double now_s(void) {
    return (double)lt_now_ns() * 1e-9;
}

/* ---- the fixture ---- */

static void test_fixture(void **state) {
    (void)state;
    cJSON *doc = load_fixture();
    const cJSON *tpl;
    int failures = 0, templates = 0, cases = 0;
    cJSON_ArrayForEach(tpl, cJSON_GetObjectItem(doc, "templates")) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(tpl, "name"));
        const char *src = cJSON_GetStringValue(cJSON_GetObjectItem(tpl, "template"));
        const cJSON *cs = cJSON_GetObjectItem(tpl, "cases");
        assert_non_null(name);
        assert_non_null(src);
        failures += check_cases(name, src, cs);
        templates++;
        cases += cJSON_GetArraySize(cs);
    }
    print_message("chat templates: %d templates, %d cases, %d failures\n", templates, cases,
                  failures);
    assert_true(templates >= 10);
    assert_int_equal(failures, 0);
    cJSON_Delete(doc);
}

/* The default model's own template, read from its GGUF: the same text as the fixture's, so the
 * fixture's expectations hold for what the server will actually load. */
static void test_default_model(void **state) {
    (void)state;
    const char *path = tu_default_model();
    if (!path) skip();
    char err[LT_ERR_LEN];
    lt_gguf_t *g = NULL;
    assert_int_equal(lt_gguf_open(path, &g, err), 0);
    const char *s;
    size_t n;
    assert_int_equal(lt_gguf_get_str(g, "tokenizer.chat_template", &s, &n), 0);
    char *src = malloc(n + 1);
    assert_non_null(src);
    memcpy(src, s, n);
    src[n] = 0;
    lt_gguf_close(&g);

    cJSON *doc = load_fixture();
    const cJSON *tpl, *found = NULL;
    cJSON_ArrayForEach(tpl, cJSON_GetObjectItem(doc, "templates")) {
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(tpl, "name")), "default_model") == 0)
            found = tpl;
    }
    assert_non_null(found); /* regenerate the fixture with the model present */
    assert_string_equal(src, cJSON_GetStringValue(cJSON_GetObjectItem(found, "template")));
    assert_int_equal(check_cases("default_model(gguf)", src, cJSON_GetObjectItem(found, "cases")),
                     0);
    cJSON_Delete(doc);
    free(src);
}

/* ---- compile errors ---- */

static void test_compile_errors(void **state) {
    (void)state;
    static const struct {
        const char *src;
        int code;
        const char *msg; /* must appear in the message */
    } cases[] = {
        {"{% if x %}never closed", LT_ERR_FORMAT, "line 1: unexpected end of template"},
        {"line 1\n{{ x ", LT_ERR_FORMAT, "line 2: unclosed '{{' tag"},
        {"a\n{%\nif x", LT_ERR_FORMAT, "line 2: unclosed '{%' tag"},
        {"a\n\n{% frobnicate %}", LT_ERR_FORMAT, "line 3: unknown tag 'frobnicate'"},
        {"{% endif %}", LT_ERR_FORMAT, "line 1: unknown tag 'endif'"},
        {"{% for x in y %}{% endif %}", LT_ERR_FORMAT, "unknown tag 'endif'"},
        {"x\n\n{{ messages | wordwrap(20) }}", LT_ERR_UNSUPPORTED,
         "chat template line 3: unsupported filter 'wordwrap'"},
        {"{{ x | nosuchfilter }}", LT_ERR_FORMAT, "line 1: no filter named 'nosuchfilter'"},
        {"{{ x is nosuchtest }}", LT_ERR_FORMAT, "no test named 'nosuchtest'"},
        {"\n{% include 'other.jinja' %}", LT_ERR_UNSUPPORTED, "line 2: unsupported tag 'include'"},
        {"{% extends 'base' %}", LT_ERR_UNSUPPORTED, "unsupported tag 'extends'"},
        {"{% for x in y recursive %}{% endfor %}", LT_ERR_UNSUPPORTED, "recursive"},
        {"{{ f(*args) }}", LT_ERR_UNSUPPORTED, "*args"},
        {"{{ 1 + }}", LT_ERR_FORMAT, "line 1: unexpected"},
        {"{{ (1, 2 }}", LT_ERR_FORMAT, "unexpected '}'"},
        {"{% break %}", LT_ERR_FORMAT, "'break' outside of a loop"},
        {"{# never closed", LT_ERR_FORMAT, "missing end of comment tag"},
        {"{{ 'never closed }}", LT_ERR_FORMAT, "unterminated string"},
        {"{% raw %}never closed", LT_ERR_FORMAT, "missing end of raw directive"},
        {"{{ x ! y }}", LT_ERR_FORMAT, "unexpected char '!'"},
        {"{% set 1 = x %}", LT_ERR_FORMAT, "can't assign"},
        {"{% macro m(a=1, b) %}{% endmacro %}", LT_ERR_FORMAT, "non-default argument"},
        {"{{ 99999999999999999999 }}", LT_ERR_UNSUPPORTED, "too large"},
        {"{{ '\\N{BULLET}' }}", LT_ERR_UNSUPPORTED, "\\N"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[LT_ERR_LEN] = "";
        int rc = compile_err(cases[i].src, err);
        if (rc != cases[i].code || !strstr(err, cases[i].msg)) {
            print_error("template %zu \"%s\": rc %d \"%s\", expected rc %d with \"%s\"\n", i,
                        cases[i].src, rc, err, cases[i].code, cases[i].msg);
            fail();
        }
    }
    /* nesting deep enough to exhaust a naive recursive descent is refused, not a crash */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 16);
    assert_non_null(deep);
    size_t k = 0;
    k += (size_t)sprintf(deep, "{{ ");
    for (size_t i = 0; i < depth; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (size_t i = 0; i < depth; i++) deep[k++] = ')';
    strcpy(deep + k, " }}");
    char err[LT_ERR_LEN];
    assert_int_equal(compile_err(deep, err), LT_ERR_RANGE);
    k = 0;
    for (size_t i = 0; i < 2000; i++) k += (size_t)sprintf(deep + k, "{%% if x %%}");
    assert_int_equal(compile_err(deep, err), LT_ERR_RANGE);
    k = (size_t)sprintf(deep, "{{ ");
    for (size_t i = 0; i < 5000; i++) k += (size_t)sprintf(deep + k, "not ");
    strcpy(deep + k, "x }}");
    assert_int_equal(compile_err(deep, err), LT_ERR_RANGE);
    free(deep);
}

/* ---- runtime errors ---- */

static void test_runtime_errors(void **state) {
    (void)state;
    static const struct {
        const char *src, *ctx;
        int code;
        const char *msg;
        bool exact;
    } cases[] = {
        {"{{ raise_exception('Roles must alternate') }}", NULL, LT_ERR_INVAL,
         "Roles must alternate", true},
        {"a\n{% if messages|length > 1 %}{{ raise_exception('too many: ' ~ messages|length) }}"
         "{% endif %}",
         "{\"messages\": [1, 2, 3]}", LT_ERR_INVAL, "too many: 3", true},
        {"\n\n{{ foo.bar }}", NULL, LT_ERR_INVAL, "chat template line 3: 'foo' is undefined",
         false},
        {"{{ messages[0].x.y }}", "{\"messages\": [{}]}", LT_ERR_INVAL,
         "'dict object' has no attribute 'x'", false},
        {"{{ 'a' + 1 }}", NULL, LT_ERR_INVAL, "unsupported operand type(s) for +", false},
        {"{{ 1 // 0 }}", NULL, LT_ERR_INVAL, "division or modulo by zero", false},
        {"{{ [1, 2].append(3) }}", NULL, LT_ERR_INVAL, "unsafe", false},
        {"{{ 'a{}'.format(1) }}", NULL, LT_ERR_UNSUPPORTED, "unsupported method 'str.format()'",
         false},
        {"{{ none|tojson }}{{ x|tojson }}", NULL, LT_ERR_INVAL, "not JSON serializable", false},
        {"{% set a, b = [1, 2, 3] %}", NULL, LT_ERR_INVAL, "too many values to unpack", false},
        {"{% set x = 1 %}{% set x.y = 2 %}", NULL, LT_ERR_INVAL, "non-namespace", false},
        {"{{ cycler(1, 2) }}", NULL, LT_ERR_UNSUPPORTED, "unsupported function 'cycler'", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[LT_ERR_LEN] = "", *out = NULL;
        int rc = render_str(cases[i].src, cases[i].ctx, &out, err);
        bool ok = rc == cases[i].code &&
                  (cases[i].exact ? strcmp(err, cases[i].msg) == 0 : !!strstr(err, cases[i].msg));
        if (!ok) {
            print_error("case %zu \"%s\": rc %d \"%s\", expected rc %d with \"%s\"\n", i,
                        cases[i].src, rc, rc ? err : out, cases[i].code, cases[i].msg);
            fail();
        }
        assert_null(out);
    }
    /* a NULL err buffer is fine */
    fe_chat_template_t *t;
    assert_int_equal(fe_chat_template_compile("{{ raise_exception('x') }}", 26, &t, NULL), 0);
    char *out;
    assert_int_equal(fe_chat_template_render(t, NULL, &out, NULL, NULL), LT_ERR_INVAL);
    /* the context must be an object */
    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(fe_chat_template_render(t, arr, &out, NULL, NULL), LT_ERR_INVAL);
    cJSON_Delete(arr);
    fe_chat_template_destroy(&t);
    fe_chat_template_destroy(&t); /* NULL after the first: a no-op */
    assert_int_equal(fe_chat_template_compile("{% if %}", 8, &t, NULL), LT_ERR_FORMAT);
    assert_null(t);
}

/* ---- limits: runaway templates stop with LT_ERR_RANGE ---- */

static void test_limits(void **state) {
    (void)state;
    static const char *const runaway[] = {
        /* 10^10 iterations */
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        /* unbounded recursion */
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        /* mutual recursion through a call block */
        "{% macro g() %}{% call g() %}{% endcall %}{{ caller() }}{% endmacro %}{{ g() }}",
        /* 100 MB of output */
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        /* a string that doubles 60 times */
        "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        /* range() past the sandbox's limit */
        "{{ range(1000000)|length }}",
        /* a huge repetition */
        "{{ ('ab' * 100000000)|length }}",
        /* a value nested deeper than we print */
        "{% set ns = namespace(v=[]) %}{% for i in range(1000) %}{% set ns.v = [ns.v] %}"
        "{% endfor %}{{ ns.v }}",
    };
    for (size_t i = 0; i < sizeof runaway / sizeof runaway[0]; i++) {
        char err[LT_ERR_LEN] = "", *out = NULL;
        double t0 = now_s();
        int rc = render_str(runaway[i], NULL, &out, err);
        double dt = now_s() - t0;
        if (rc != LT_ERR_RANGE) {
            print_error("runaway %zu: rc %d (%s)\n", i, rc, rc ? err : "rendered");
            fail();
        }
        assert_null(out);
        assert_true(dt < (SANITIZED ? 60.0 : 10.0));
    }
    /* an empty sequence repeated a huge number of times is empty, at once (it used to loop) */
    static const char *const empty_times[] = {"{{ ([] * 9223372036854775807)|length }}",
                                              "{{ ('' * 9223372036854775807)|length }}"};
    for (size_t i = 0; i < 2; i++) {
        char err[LT_ERR_LEN] = "", *out = NULL;
        double t0 = now_s();
        assert_int_equal(render_str(empty_times[i], NULL, &out, err), 0);
        assert_string_equal(out, "0");
        assert_true(now_s() - t0 < 1.0);
        free(out);
    }
}

/* ---- size: 100 KB templates, no quadratic behaviour ---- */

static void test_large_template(void **state) {
    (void)state;
    const size_t target = 100 * 1024;
    char *src = malloc(target + 256);
    assert_non_null(src);
    /* plain text with a tag every line: lstrip_blocks and trim_blocks on every one */
    size_t n = 0;
    int lines = 0;
    while (n < target) {
        n += (size_t)sprintf(src + n, "  {%% if true %%}\nline %d {{ name }}\n  {%% endif %%}\n",
                             lines++);
    }
    char err[LT_ERR_LEN];
    fe_chat_template_t *t = NULL;
    double t0 = now_s();
    assert_int_equal(fe_chat_template_compile(src, n, &t, err), 0);
    cJSON *ctx = cJSON_Parse("{\"name\": \"N\"}");
    char *out = NULL;
    assert_int_equal(fe_chat_template_render(t, ctx, &out, NULL, err), 0);
    double dt = now_s() - t0;
    /* every line renders as "line K N\n" */
    char want[64];
    snprintf(want, sizeof want, "line %d N\n", lines - 1);
    size_t len = strlen(out);
    assert_true(len > strlen(want));
    assert_memory_equal(out + len - strlen(want), want, strlen(want));
    assert_memory_equal(out, "line 0 N\nline 1 N\n", 18);
    print_message("100 KB template (%d tags): compile + render %.2f ms\n", 2 * lines, dt * 1e3);
    assert_true(dt < 0.5);
    free(out);
    fe_chat_template_destroy(&t);

    /* one 100 KB line of data: passes through whole */
    memset(src, 'a', target);
    src[target] = 0;
    assert_int_equal(fe_chat_template_compile(src, target, &t, err), 0);
    assert_int_equal(fe_chat_template_render(t, NULL, &out, NULL, err), 0);
    assert_int_equal(strlen(out), target);
    free(out);
    fe_chat_template_destroy(&t);

    /* one 100 KB line of whitespace and comments: lstrip looks back only to the line start */
    n = 0;
    while (n < target) n += (size_t)sprintf(src + n, "   {#- c -#}   {%% set x = 1 %%}");
    t0 = now_s();
    assert_int_equal(fe_chat_template_compile(src, n, &t, err), 0);
    assert_int_equal(fe_chat_template_render(t, NULL, &out, NULL, err), 0);
    assert_true(now_s() - t0 < 0.5);
    assert_string_equal(out, "");
    free(out);
    fe_chat_template_destroy(&t);
    cJSON_Delete(ctx);
    free(src);
}

/* ---- context values, globals ---- */

static void test_context_and_globals(void **state) {
    (void)state;
    char err[LT_ERR_LEN], *out;
    /* JSON numbers: integral values are ints, others floats; nested values print as Python */
    assert_int_equal(render_str("{{ a }} {{ b }} {{ a / 2 }} {{ c }} {{ d }}",
                                "{\"a\": 3, \"b\": 0.5, \"c\": [1, \"x\", null, true, {\"k\": "
                                "-2.5e-7}], \"d\": \"\\u00e9\\ud83d\\ude00\"}",
                                &out, err),
                     0);
    assert_string_equal(out,
                        "3 0.5 1.5 [1, 'x', None, True, {'k': -2.5e-07}] \xc3\xa9\xf0\x9f\x98\x80");
    free(out);
    /* no context at all: every name is undefined */
    assert_int_equal(render_str("[{{ messages }}]{{ messages is defined }}", NULL, &out, err), 0);
    assert_string_equal(out, "[]False");
    free(out);
    /* the context overrides globals; globals stay callable otherwise */
    assert_int_equal(render_str("{{ range }}|{{ namespace(a=1).a }}", "{\"range\": 5}", &out, err),
                     0);
    assert_string_equal(out, "5|1");
    free(out);
    /* strftime_now formats the local time as strftime does */
    assert_int_equal(render_str("{{ strftime_now('%Y') }}", NULL, &out, err), 0);
    char year[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(year, sizeof year, "%Y", &tm);
    assert_string_equal(out, year);
    free(out);
    /* CRLF sources: newlines are normalised, one trailing newline dropped */
    assert_int_equal(render_str("a\r\nb\rc\r\n", NULL, &out, err), 0);
    assert_string_equal(out, "a\nb\nc");
    free(out);
    /* an empty template renders the empty string */
    assert_int_equal(render_str("", NULL, &out, err), 0);
    assert_string_equal(out, "");
    free(out);
}

/* ---- threads: one compiled template, rendered concurrently ---- */

typedef struct {
    const fe_chat_template_t *t;
    const cJSON *ctx;
    const char *want;
    int bad;
} thread_arg_t;

static void *render_many(void *p) {
    thread_arg_t *a = p;
    for (int i = 0; i < 200; i++) {
        char err[LT_ERR_LEN], *out = NULL;
        if (fe_chat_template_render(a->t, a->ctx, &out, NULL, err) != 0 ||
            strcmp(out, a->want) != 0)
            a->bad++;
        free(out);
    }
    return NULL;
}

/* The fixture's qwen3 template and its tool-call case. */
static void qwen3_case(cJSON *doc, const char **src, const cJSON **ctx, const char **want) {
    const cJSON *tpl, *c;
    cJSON_ArrayForEach(tpl, cJSON_GetObjectItem(doc, "templates")) {
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(tpl, "name")), "qwen3") != 0) continue;
        *src = cJSON_GetStringValue(cJSON_GetObjectItem(tpl, "template"));
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(tpl, "cases")) {
            if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(c, "name")), "tools_and_calls"))
                continue;
            *ctx = cJSON_GetObjectItem(c, "context");
            *want = cJSON_GetStringValue(cJSON_GetObjectItem(c, "expected"));
        }
    }
    assert_non_null(*src);
    assert_non_null(*ctx);
    assert_non_null(*want);
}

static void test_threads(void **state) {
    (void)state;
    cJSON *doc = load_fixture();
    const char *src = NULL, *want = NULL;
    const cJSON *ctx = NULL;
    qwen3_case(doc, &src, &ctx, &want);
    char err[LT_ERR_LEN];
    fe_chat_template_t *t;
    assert_int_equal(fe_chat_template_compile(src, strlen(src), &t, err), 0);
    enum { N = 4 };
    pthread_t th[N];
    thread_arg_t args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (thread_arg_t){.t = t, .ctx = ctx, .want = want};
        assert_int_equal(pthread_create(&th[i], NULL, render_many, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    fe_chat_template_destroy(&t);
    cJSON_Delete(doc);
}

/* ---- speed: a typical conversation renders well under a millisecond ---- */

static void test_speed(void **state) {
    (void)state;
    cJSON *doc = load_fixture();
    const char *src = NULL, *want = NULL;
    const cJSON *tctx = NULL;
    qwen3_case(doc, &src, &tctx, &want);
    char err[LT_ERR_LEN];
    fe_chat_template_t *t;
    assert_int_equal(fe_chat_template_compile(src, strlen(src), &t, err), 0);
    /* 10 messages of ~200 bytes, no tools */
    cJSON *ctx = cJSON_CreateObject();
    cJSON *msgs = cJSON_AddArrayToObject(ctx, "messages");
    char content[256];
    for (int i = 0; i < 10; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", i == 0 ? "system" : i % 2 ? "user" : "assistant");
        snprintf(content, sizeof content,
                 "Message %d: the quick brown fox jumps over the lazy dog, then explains what "
                 "it did in some detail so that this turn is about as long as a typical chat "
                 "message written by a person who types a full sentence or two.",
                 i);
        cJSON_AddStringToObject(m, "content", content);
        cJSON_AddItemToArray(msgs, m);
    }
    cJSON_AddBoolToObject(ctx, "add_generation_prompt", true);
    cJSON_AddNullToObject(ctx, "tools");
    const int iters = 2000;
    char *out = NULL;
    double t0 = now_s();
    for (int i = 0; i < iters; i++) {
        free(out);
        assert_int_equal(fe_chat_template_render(t, ctx, &out, NULL, err), 0);
    }
    double per = (now_s() - t0) / iters;
    print_message("qwen3 template, 10 messages: %.1f us per render (%zu bytes)\n", per * 1e6,
                  strlen(out));
    assert_non_null(strstr(out, "Message 9:"));
    if (!SANITIZED) assert_true(per < 1e-3);
    free(out);
    cJSON_Delete(ctx);
    fe_chat_template_destroy(&t);
    cJSON_Delete(doc);
}

/* A context string holding U+0000 (C0 80, as common/json.h reads it) is the character itself in
 * the template: one character long, written as a NUL byte, escaped by tojson; the output's
 * length counts it. */
static void test_nul_in_context(void **state) {
    (void)state;
    char err[LT_ERR_LEN];
    fe_chat_template_t *t = NULL;
    const char *src = "{{ a }}|{{ a|length }}|{{ a|tojson }}|{% for k in d %}{{ k|length }}"
                      "{% endfor %}";
    assert_int_equal(fe_chat_template_compile(src, strlen(src), &t, err), 0);
    cJSON *ctx = NULL;
    lt_json_error_t je;
    const char *body = "{\"a\": \"x\\u0000y\", \"d\": {}}";
    assert_int_equal(lt_json_parse(body, strlen(body), &ctx, &je), 0);
    /* a key holding it: lt_json_parse refuses one in a body, but a tree may hold it */
    cJSON_AddNumberToObject(cJSON_GetObjectItemCaseSensitive(ctx, "d"), "k" LT_JSON_NUL, 1);
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(fe_chat_template_render(t, ctx, &out, &len, err), 0);
    const char want[] = "x\0y|3|\"x\\u0000y\"|2";
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(out, want, len);
    free(out);
    cJSON_Delete(ctx);
    fe_chat_template_destroy(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_default_model),
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test(test_runtime_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_large_template),
        cmocka_unit_test(test_context_and_globals),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_speed),
        cmocka_unit_test(test_nul_in_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
