/*
 * test_trace.c — the span recorder (telemetry/trace.h): strict W3C traceparent parsing over a
 * corpus of valid and malformed headers, formatting, ids (distinct, never zero, different in a
 * forked child), the samplers, and the pool (exhaustion, links past their first capacity,
 * submit versus discard).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lt.h"
#include "trace.h"

#define T32 "4bf92f3577b34da6a3ce929d0e0e4736"
#define S16 "00f067aa0ba902b7"

/* ---- traceparent ---- */

static void test_parse_valid(void **state) {
    (void)state;
    tel_ctx_t c;
    const char *ok = "00-" T32 "-" S16 "-01";
    assert_true(tel_ctx_parse(ok, strlen(ok), &c));
    assert_true(c.valid && tel_ctx_sampled(&c));
    char out[TEL_TRACEPARENT_LEN + 1];
    tel_ctx_format(&c, out);
    assert_string_equal(out, ok);
    const char *unsampled = "00-" T32 "-" S16 "-00";
    assert_true(tel_ctx_parse(unsampled, strlen(unsampled), &c));
    assert_false(tel_ctx_sampled(&c));
    /* a later version may carry more fields after a '-' (W3C: parse what we know) */
    const char *v1 = "01-" T32 "-" S16 "-01-extra";
    assert_true(tel_ctx_parse(v1, strlen(v1), &c));
    const char *v1exact = "cc-" T32 "-" S16 "-09";
    assert_true(tel_ctx_parse(v1exact, strlen(v1exact), &c));
    assert_int_equal(c.flags, 9);
}

/* Every one of these must be refused (and leave the context invalid). */
static const char *const k_malformed[] = {
    "",
    "00",
    "00-",
    "00-" T32,
    "00-" T32 "-",
    "00-" T32 "-" S16,
    "00-" T32 "-" S16 "-",
    "00-" T32 "-" S16 "-0",
    "00-" T32 "-" S16 "-011",      /* version 00 is exactly 55 characters */
    "00-" T32 "-" S16 "-01-extra", /* ... no extension for version 00 */
    "00-" T32 "-" S16 "-01 ",
    " 00-" T32 "-" S16 "-01",
    "ff-" T32 "-" S16 "-01", /* version ff is invalid */
    "0g-" T32 "-" S16 "-01",
    "0-" T32 "-" S16 "-01",
    "000-" T32 "-" S16 "-01",
    "00-00000000000000000000000000000000-" S16 "-01", /* all-zero trace id */
    "00-" T32 "-0000000000000000-01",                 /* all-zero parent id */
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-" S16 "-01", /* uppercase */
    "00-" T32 "-00F067AA0BA902B7-01",
    "00-" T32 "-" S16 "-0A",
    "0A-" T32 "-" S16 "-01",
    "00_" T32 "-" S16 "-01",
    "00-" T32 "_" S16 "-01",
    "00-" T32 "-" S16 "_01",
    "00-4bf92f3577b34da6a3ce929d0e0e473-" S16 "-01",   /* 31 hex */
    "00-4bf92f3577b34da6a3ce929d0e0e47366-" S16 "-01", /* 33 hex */
    "00-" T32 "-00f067aa0ba902b-01",
    "00-" T32 "-00f067aa0ba902b77-01",
    "00-" T32 "-" S16 "-1",
    "00-4bf92f3577b34da6a3ce929d0e0e473z-" S16 "-01",
    "00-" T32 "-00f067aa0ba902bz-01",
    "00-" T32 "-" S16 "-0z",
    "00-" T32 "-" S16 "-\x01\x02",
    "00-4bf92f3577b34da6 3ce929d0e0e4736-" S16 "-01",
    "00- " T32 "-" S16 "-01",
    "00--" T32 "-" S16 "-01",
    "00-" T32 "--" S16 "-01",
    "00-" T32 "-" S16 "--01",
    "-00-" T32 "-" S16 "-01",
    "00-" T32 "-" S16 "-01-",
    "01-" T32 "-" S16 "-01x", /* a later version: more only after a '-' */
    "traceparent: 00-" T32 "-" S16 "-01",
    "00:" T32 ":" S16 ":01",
    "00-" T32 S16 "-01",
    "00-" S16 "-" T32 "-01",
    "00-" T32 "-" S16 "-01"
    "0000000000000000000000000000000000000000000000000000000000",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
    "\xff\xfe-" T32 "-" S16 "-01",
    "00-" T32 "-" S16 "-\xc3\xa9",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\x00",
    "xx-" T32 "-" S16 "-01",
};

static void test_parse_malformed(void **state) {
    (void)state;
    size_t n = sizeof k_malformed / sizeof k_malformed[0];
    assert_true(n >= 50);
    for (size_t i = 0; i < n; i++) {
        tel_ctx_t c;
        c.valid = true;
        size_t len = strlen(k_malformed[i]);
        if (i == n - 2) len = TEL_TRACEPARENT_LEN; /* the embedded NUL counts as a byte */
        if (tel_ctx_parse(k_malformed[i], len, &c)) fail_msg("accepted case %zu", i);
        assert_false(c.valid);
    }
    /* over-long input of every length up to 4 KiB is refused without reading past it */
    char *big = malloc(4096);
    memset(big, 'a', 4096);
    for (size_t len = 0; len <= 4096; len += 97) {
        tel_ctx_t c;
        assert_false(tel_ctx_parse(big, len, &c));
    }
    free(big);
}

/* ---- ids ---- */

static void test_ids(void **state) {
    (void)state;
    uint8_t a[16], b[16], z[16] = {0};
    for (int i = 0; i < 1000; i++) {
        tel_new_trace_id(a);
        tel_new_trace_id(b);
        assert_memory_not_equal(a, b, 16);
        assert_memory_not_equal(a, z, 16);
    }
    /* a forked child (no exec) draws another sequence than its parent */
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    tel_new_span_id(a); /* the parent's generator is seeded */
    pid_t pid = fork();
    if (pid == 0) {
        uint8_t c[8];
        tel_new_span_id(c);
        ssize_t w = write(fd[1], c, 8);
        _exit(w == 8 ? 0 : 1);
    }
    uint8_t child[8], parent[8];
    tel_new_span_id(parent);
    assert_int_equal(read(fd[0], child, 8), 8);
    int st;
    waitpid(pid, &st, 0);
    assert_memory_not_equal(child, parent, 8);
    close(fd[0]);
    close(fd[1]);
}

/* ---- sampler ---- */

static void test_sampler(void **state) {
    (void)state;
    char err[LT_ERR_LEN];
    tel_sampler_t s;
    unsetenv("OTEL_TRACES_SAMPLER");
    unsetenv("OTEL_TRACES_SAMPLER_ARG");
    assert_int_equal(tel_sampler_from_env(&s, err), 0);
    assert_int_equal(s.kind, TEL_SAMPLE_PARENT_ON);
    setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "0.25", 1);
    assert_int_equal(tel_sampler_from_env(&s, err), 0);
    assert_true(s.kind == TEL_SAMPLE_PARENT_RATIO && s.ratio == 0.25);
    int kept = 0;
    uint8_t id[16];
    for (int i = 0; i < 20000; i++) {
        tel_new_trace_id(id);
        kept += tel_sampler_decide(&s, NULL, id);
    }
    assert_true(kept > 4500 && kept < 5500); /* 25% of 20000, within ~7 sigma */
    tel_ctx_t parent = {.valid = true, .flags = 1};
    assert_true(tel_sampler_decide(&s, &parent, id)); /* the parent decides */
    parent.flags = 0;
    assert_false(tel_sampler_decide(&s, &parent, id));
    setenv("OTEL_TRACES_SAMPLER", "sometimes", 1);
    assert_int_equal(tel_sampler_from_env(&s, err), LT_ERR_INVAL);
    assert_non_null(strstr(err, "OTEL_TRACES_SAMPLER"));
    setenv("OTEL_TRACES_SAMPLER", "traceidratio", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "1.5", 1);
    assert_int_equal(tel_sampler_from_env(&s, err), LT_ERR_INVAL);
    unsetenv("OTEL_TRACES_SAMPLER");
    unsetenv("OTEL_TRACES_SAMPLER_ARG");
}

/* ---- pool ---- */

static int n_submitted;
static tel_span_t *submitted[16];

static void fake_submit(tel_span_t *sp, void *user) {
    (void)user;
    submitted[n_submitted++ % 16] = sp;
}

static void test_pool(void **state) {
    (void)state;
    char err[LT_ERR_LEN];
    tel_tracer_config_t cfg = {.enabled = true,
                               .sampler = {.kind = TEL_SAMPLE_PARENT_ON, .ratio = 1},
                               .pool_size = 4,
                               .submit = fake_submit};
    assert_int_equal(tel_tracer_init(&cfg, err), 0);
    tel_span_t *sp[5];
    for (int i = 0; i < 4; i++)
        assert_non_null(sp[i] = tel_span_start("s", TEL_KIND_INTERNAL, NULL, 0));
    assert_null(tel_span_start("s", TEL_KIND_INTERNAL, NULL, 0)); /* empty: counted */
    tel_tracer_stats_t st;
    tel_tracer_stats(&st);
    assert_int_equal(st.pool_empty, 1);
    /* a child shares its parent's trace and names it as parent */
    tel_ctx_t pc = tel_span_ctx(sp[0]);
    tel_span_release(sp[1]);
    tel_span_t *child = tel_span_start("child", TEL_KIND_INTERNAL, &pc, 0);
    assert_non_null(child);
    assert_memory_equal(child->trace_id, sp[0]->trace_id, 16);
    assert_memory_equal(child->parent_id, sp[0]->span_id, 8);
    /* links past their first capacity */
    for (int i = 0; i < 300; i++) tel_span_add_link(child, &pc);
    assert_int_equal(child->n_links, 300);
    assert_memory_equal(child->links[299].span_id, pc.span_id, 8);
    tel_span_set_str(child, "k", "v");
    tel_span_event(child, "e", 0, 1, "n", (int64_t)7);
    assert_int_equal(child->events[0].attrs[0].v.i, 7);
    n_submitted = 0;
    tel_span_submit(child, 0, false); /* sampled: exported */
    assert_int_equal(n_submitted, 1);
    tel_span_release(submitted[0]);
    /* an unsampled span is given back unless kept */
    tel_ctx_t off = pc;
    off.flags = 0;
    tel_span_t *u = tel_span_start("u", TEL_KIND_INTERNAL, &off, 0);
    assert_false(u->flags & 1);
    tel_span_submit(u, 0, false);
    assert_int_equal(n_submitted, 1);
    u = tel_span_start("u", TEL_KIND_INTERNAL, &off, 0);
    tel_span_submit(u, 0, true); /* tail-kept */
    assert_int_equal(n_submitted, 2);
    tel_span_release(submitted[1]);
    tel_tracer_stats(&st);
    assert_int_equal(st.discarded, 1);
    for (int i = 0; i < 4; i++)
        if (i != 1) tel_span_release(sp[i]);
    tel_tracer_fini();
    /* off: nothing is recorded */
    cfg.enabled = false;
    assert_int_equal(tel_tracer_init(&cfg, err), 0);
    assert_null(tel_span_start("s", TEL_KIND_INTERNAL, NULL, 0));
    tel_tracer_fini();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid), cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_ids),         cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
