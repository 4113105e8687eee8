/*
 * test_json.c — common/json.c, the strict reader of request bodies (Jansson, copied into a cJSON
 * tree): "\u0000" kept (as C0 80, back to a NUL with lt_json_bytes), refused in a key; unpaired
 * surrogates refused with their line and column; what cJSON lets through refused (bad \u escapes
 * it reads as NUL, raw control characters, trailing data, bad numbers, deep nesting, invalid
 * UTF-8); ordinary documents read exactly as cJSON reads them, members in order; lt_json_show.
 */
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "lt.h"
#include "testutil.h"

static cJSON *parse_ok(const char *text) {
    cJSON *j = NULL;
    lt_json_error_t e;
    int rc = lt_json_parse(text, strlen(text), &j, &e);
    if (rc) fail_msg("%s: %d %s", text, rc, e.message);
    return j;
}

static int parse_err(const char *text, lt_json_error_t *e) {
    cJSON *j = (cJSON *)1;
    int rc = lt_json_parse(text, strlen(text), &j, e);
    assert_null(j);
    return rc;
}

static void test_nul_kept(void **state) {
    (void)state;
    cJSON *j = parse_ok("{\"prompt\": \"hello\\u0000 world\", \"k\": \"\\u0000\"}");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    assert_string_equal(p->valuestring, "hello\xC0\x80 world");
    char buf[64];
    size_t n = lt_json_bytes(buf, p->valuestring, strlen(p->valuestring));
    assert_int_equal(n, 12);
    assert_memory_equal(buf, "hello\0 world", 12);
    assert_true(lt_json_has_nul(p->valuestring, strlen(p->valuestring)));
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "k");
    assert_int_equal(lt_json_bytes(buf, k->valuestring, strlen(k->valuestring)), 1);
    assert_int_equal(buf[0], 0);
    cJSON_Delete(j);
    j = parse_ok("[\"\\u0000\", \"a\\u0000\\u0000\"]");
    assert_string_equal(j->child->valuestring, "\xC0\x80");
    assert_string_equal(j->child->next->valuestring, "a\xC0\x80\xC0\x80");
    cJSON_Delete(j);
    /* a key holding a NUL is refused (not read as the key without it) */
    lt_json_error_t e;
    assert_int_equal(parse_err("{\"k\\u0000\": 1}", &e), LT_ERR_FORMAT);
    assert_non_null(strstr(e.message, "key"));
}

static void test_surrogates(void **state) {
    (void)state;
    lt_json_error_t e;
    assert_int_equal(
        parse_err("{\"messages\": [{\"role\": \"user\", \"content\": \"x\\ud800\"}]}", &e),
        LT_ERR_INVAL);
    assert_true(e.unicode);
    assert_string_equal(e.path, "");
    assert_non_null(strstr(e.message, "unpaired UTF-16 surrogate (\\ud800)"));
    assert_non_null(strstr(e.message, "line 1, column 51"));
    assert_int_equal(e.offset, 51);
    assert_int_equal(parse_err("{\"stop\": [\"a\",\n \"\\uDC00b\"]}", &e), LT_ERR_INVAL);
    assert_non_null(strstr(e.message, "(\\udc00)"));
    assert_non_null(strstr(e.message, "line 2, column 10"));
    /* a high surrogate followed by something other than a low one: the high one is named */
    assert_int_equal(parse_err("{\"prompt\": \"\\ud800\\u0041\"}", &e), LT_ERR_INVAL);
    assert_non_null(strstr(e.message, "(\\ud800)"));
    assert_int_equal(parse_err("{\"prompt\": \"\\udbff\\udbff\"}", &e), LT_ERR_INVAL);
    assert_non_null(strstr(e.message, "(\\udbff)"));
    /* in a key, and at the top */
    assert_int_equal(parse_err("{\"a\": {\"b\\udfff\": 1}}", &e), LT_ERR_INVAL);
    assert_int_equal(parse_err("\"\\udbff\"", &e), LT_ERR_INVAL);
    assert_true(e.unicode);
    /* a pair is a character */
    cJSON *j = parse_ok("[\"\\ud83d\\ude00\"]");
    assert_string_equal(j->child->valuestring, "\xF0\x9F\x98\x80");
    cJSON_Delete(j);
}

static void test_syntax(void **state) {
    (void)state;
    lt_json_error_t e;
    static const char *bad[] = {
        "{\"a\": \"\\uZZZZ\"}", /* cJSON reads this as a NUL */
        "{\"a\": \"\\u12\"}",
        "{\"a\": \"x\ty\"}", /* raw control characters must be escaped */
        "{\"a\": \"x\ny\"}",
        "{\"a\": \"\\x\"}",
        "{\"a\": \"open",
        "{\"a\": \"open\\",
        "{} x",
        "[1,]",
        "[01]",
        "[1.]",
        "[-]",
        "[1e]",
        "{\"a\" 1}",
        "{\"a\": tru}",
        "{1: 2}",
        "",
        "   ",
        "[",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse_err(bad[i], &e);
        if (rc != LT_ERR_FORMAT) fail_msg("'%s' gave %d", bad[i], rc);
        assert_false(e.unicode);
        assert_true(e.message[0]);
    }
    /* the message says where */
    assert_int_equal(parse_err("{\"a\": [1,\n \"x\ty\"]}", &e), LT_ERR_FORMAT);
    assert_non_null(strstr(e.message, "control character"));
    assert_non_null(strstr(e.message, "line 2"));
    /* a raw NUL byte in the text is not JSON either */
    cJSON *j = NULL;
    assert_int_equal(lt_json_parse("[\"a\0b\"]", 7, &j, &e), LT_ERR_FORMAT);
    assert_null(j);
    /* nesting: deep is fine, too deep is refused (not a stack overflow) */
    char deep[2048];
    memset(deep, '[', 600);
    memset(deep + 600, ']', 600);
    deep[1200] = '\0';
    assert_int_equal(parse_err(deep, &e), LT_ERR_FORMAT);
    memset(deep, '[', 500);
    memset(deep + 500, ']', 500);
    deep[1000] = '\0';
    cJSON_Delete(parse_ok(deep));
}

static void test_utf8_refused(void **state) {
    (void)state;
    /* invalid UTF-8 is not JSON text; raw C0 80 in particular, so C0 80 in a tree only ever
     * means U+0000 */
    lt_json_error_t e;
    static const char *bad[] = {"[\"a\xC0\x80z\"]", "[\"\xE2\x82\"]", "[\"\xFF\"]",
                                "{\"k\xED\xA0\x80\": 1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse_err(bad[i], &e), LT_ERR_FORMAT);
        assert_false(e.unicode);
        assert_non_null(strstr(e.message, "UTF-8"));
    }
}

/* Ordinary documents: the same tree as cJSON's own parser. */
static void test_same_as_cjson(void **state) {
    (void)state;
    static const char *docs[] = {
        "{\"model\": \"m\", \"prompt\": [\"a\", \"b\\n\\\"c\\\"\\\\ \\/ \\b\\f\\r\\t\"], "
        "\"max_tokens\": 5, \"temperature\": 0.5e-1, \"stop\": null, \"echo\": true, "
        "\"x\": false, \"n\": -0, \"big\": 1E+300, \"u\": \"\\u00e9\\u4e2d\"}",
        "\xEF\xBB\xBF[1, 2.5, -3e2, {}, [], \"\"]",
        "  \"plain\"  ",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        cJSON *a = parse_ok(docs[i]), *b = cJSON_Parse(docs[i]);
        assert_non_null(b);
        char *pa = cJSON_PrintUnformatted(a), *pb = cJSON_PrintUnformatted(b);
        assert_string_equal(pa, pb);
        free(pa);
        free(pb);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
}

/* Members keep the order of the text; a repeated key keeps its first place and its last value
 * (as Python's json, which OpenAI's own server reads bodies with). */
static void test_order(void **state) {
    (void)state;
    cJSON *j =
        parse_ok("{\"z\": 1, \"a\": 2, \"m\": [3, 4], \"a\": 5, \"b\": {\"y\": 1, \"x\": 2}}");
    char *p = cJSON_PrintUnformatted(j);
    assert_string_equal(p, "{\"z\":1,\"a\":5,\"m\":[3,4],\"b\":{\"y\":1,\"x\":2}}");
    free(p);
    cJSON_Delete(j);
    /* numbers are doubles, as cJSON's; integers too large for int64 are read, not refused */
    j = parse_ok("[123456789012345678901234567890, 2.5]");
    assert_true(j->child->valuedouble > 1.2e29);
    assert_true(j->child->next->valuedouble == 2.5);
    cJSON_Delete(j);
    lt_json_error_t e;
    assert_int_equal(parse_err("[1e400]", &e), LT_ERR_FORMAT); /* not a double */
}

static void test_show(void **state) {
    (void)state;
    char out[64];
    assert_string_equal(lt_json_show("system\xC0\x80", 40, out, sizeof out), "system\\u0000");
    assert_string_equal(lt_json_show("a\x01z", 40, out, sizeof out), "a\\u0001z");
    assert_string_equal(lt_json_show("\xC3\xA9t\xC3\xA9", 2, out, sizeof out), "\xC3\xA9t...");
    assert_string_equal(lt_json_show("", 10, out, sizeof out), "");
    char small[8];
    lt_json_show("abcdefghijkl", 40, small, sizeof small);
    assert_true(strlen(small) < sizeof small);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nul_kept),      cmocka_unit_test(test_surrogates),
        cmocka_unit_test(test_syntax),        cmocka_unit_test(test_utf8_refused),
        cmocka_unit_test(test_same_as_cjson), cmocka_unit_test(test_order),
        cmocka_unit_test(test_show),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
