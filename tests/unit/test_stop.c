/*
 * test_stop.c — stop strings over streamed text: matches across piece boundaries, text before
 * the match released (and nothing after), held-back prefixes released when they turn out not to
 * be a stop, earliest match wins, include_stop, UTF-8 stops, stops holding NULs (by length),
 * bad arguments.
 */
#include <string.h>

#include "lt.h"
#include "stop.h"
#include "testutil.h"

/* Feeds pieces one by one; returns the released text and whether a stop matched. */
static int run(const char *const *stops, int n, bool include, const char *const *pieces,
               int n_pieces, lt_buf_t *out) {
    fe_stopper_t s;
    char err[LT_ERR_LEN];
    assert_int_equal(fe_stopper_init(&s, stops, NULL, n, include, err), 0);
    int matched = 0;
    for (int i = 0; i < n_pieces && !matched; i++) {
        size_t before = out->len;
        matched = fe_stopper_feed(&s, pieces[i], strlen(pieces[i]), out);
        assert_true(matched >= 0);
        (void)before;
    }
    if (!matched) assert_int_equal(fe_stopper_flush(&s, out), 0);
    fe_stopper_fini(&s);
    return matched;
}

static void test_across_boundaries(void **state) {
    const char *stops[] = {"\n\nUser:"};
    const char *pieces[] = {"Hello", " there", "!\n", "\nUs", "er:", " more"};
    lt_buf_t out = {0};
    assert_int_equal(run(stops, 1, false, pieces, 6, &out), 1);
    assert_string_equal(out.data, "Hello there!");
    lt_buf_free(&out);
}

static void test_false_prefix_released(void **state) {
    const char *stops[] = {"STOP"};
    const char *pieces[] = {"a ST", "O", "P-like STO", "RE"};
    lt_buf_t out = {0};
    /* "a ST" + "O" + "P" matches at "a " */
    assert_int_equal(run(stops, 1, false, pieces, 4, &out), 1);
    assert_string_equal(out.data, "a ");
    lt_buf_free(&out);
    const char *pieces2[] = {"a ST", "ORE", " STO"};
    assert_int_equal(run(stops, 1, false, pieces2, 3, &out), 0);
    assert_string_equal(out.data, "a STORE STO"); /* the held tail comes out at the end */
    lt_buf_free(&out);
}

static void test_streaming_releases_early(void **state) {
    fe_stopper_t s;
    char err[LT_ERR_LEN];
    const char *stops[] = {"</answer>"};
    assert_int_equal(fe_stopper_init(&s, stops, NULL, 1, false, err), 0);
    lt_buf_t out = {0};
    assert_int_equal(fe_stopper_feed(&s, "42 is it", 8, &out), 0);
    assert_string_equal(out.data, "42 is it"); /* nothing could start a stop: all released */
    assert_int_equal(fe_stopper_feed(&s, " </ans", 6, &out), 0);
    assert_string_equal(out.data, "42 is it "); /* "</ans" held back */
    assert_int_equal(fe_stopper_feed(&s, "wer>tail", 8, &out), 1);
    assert_string_equal(out.data, "42 is it ");
    assert_int_equal(s.matched, 0);
    fe_stopper_fini(&s);
    lt_buf_free(&out);
}

static void test_earliest_and_include(void **state) {
    const char *stops[] = {"world", "lo w"};
    const char *pieces[] = {"hello world"};
    lt_buf_t out = {0};
    assert_int_equal(run(stops, 2, false, pieces, 1, &out), 1);
    assert_string_equal(out.data, "hel"); /* "lo w" starts earlier than "world" */
    lt_buf_free(&out);
    assert_int_equal(run(stops, 2, true, pieces, 1, &out), 1);
    assert_string_equal(out.data, "hello w");
    lt_buf_free(&out);
}

static void test_utf8(void **state) {
    const char *stops[] = {"\xe3\x80\x82"}; /* "。" */
    const char *pieces[] = {"\xe4\xbd\xa0\xe5\xa5\xbd", "\xe3\x80", "\x82\xe5\x86\x8d"};
    lt_buf_t out = {0};
    assert_int_equal(run(stops, 1, false, pieces, 3, &out), 1);
    assert_string_equal(out.data, "\xe4\xbd\xa0\xe5\xa5\xbd");
    lt_buf_free(&out);
}

static void test_no_stops_and_errors(void **state) {
    const char *pieces[] = {"a", "b"};
    lt_buf_t out = {0};
    assert_int_equal(run(NULL, 0, false, pieces, 2, &out), 0);
    assert_string_equal(out.data, "ab");
    lt_buf_free(&out);
    fe_stopper_t s;
    char err[LT_ERR_LEN];
    const char *empty[] = {""};
    assert_int_equal(fe_stopper_init(&s, empty, NULL, 1, false, err), LT_ERR_INVAL);
    const char *many[FE_MAX_STOPS + 1];
    for (int i = 0; i <= FE_MAX_STOPS; i++) many[i] = "x";
    assert_int_equal(fe_stopper_init(&s, many, NULL, FE_MAX_STOPS + 1, false, err), LT_ERR_INVAL);
}

/* A stop string is data of a given length: "a\0b" stops on the three bytes, never on "a". */
static void test_nul_stops(void **state) {
    (void)state;
    fe_stopper_t s;
    char err[LT_ERR_LEN];
    const char *stops[] = {"a\0b", "\0"};
    const size_t lens[] = {3, 1};
    lt_buf_t out = {0};
    assert_int_equal(fe_stopper_init(&s, stops, lens, 1, true, err), 0);
    assert_int_equal(fe_stopper_feed(&s, "xa", 2, &out), 0);
    assert_int_equal(fe_stopper_feed(&s, "\0", 1, &out), 0);
    assert_int_equal(fe_stopper_feed(&s, "c a", 3, &out), 0); /* "a\0c": no match */
    assert_int_equal(fe_stopper_feed(&s, "\0b tail", 7, &out), 1);
    assert_int_equal(out.len, 8);
    assert_memory_equal(out.data, "xa\0c a\0b", 8);
    fe_stopper_fini(&s);
    lt_buf_free(&out);
    /* a lone NUL stop */
    assert_int_equal(fe_stopper_init(&s, stops + 1, lens + 1, 1, false, err), 0);
    assert_int_equal(fe_stopper_feed(&s, "ok\0more", 7, &out), 1);
    assert_int_equal(out.len, 2);
    assert_memory_equal(out.data, "ok", 2);
    fe_stopper_fini(&s);
    lt_buf_free(&out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_across_boundaries),
        cmocka_unit_test(test_false_prefix_released),
        cmocka_unit_test(test_streaming_releases_early),
        cmocka_unit_test(test_earliest_and_include),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_nul_stops),
        cmocka_unit_test(test_no_stops_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
