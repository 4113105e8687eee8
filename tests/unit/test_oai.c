/*
 * test_oai.c — the OpenAI request validator and JSON writer of `lantern serve` (frontend/oai.c),
 * without HTTP: every prompt shape resolves to the tokenizer's ids; every wrong type, range,
 * unknown model, unsupported feature and over-long request is refused with OpenAI's status, type,
 * code and the offending field as `param`; defaults come from the generation config, then
 * OpenAI's; chat messages go through the template; the writer's output parses back with cJSON
 * to the same values, control characters and quotes included.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat_template.h"
#include "lt.h"
#include "oai.h"
#include "tokenizer.h"
#include "utf8.h"

static fe_tokenizer_t *tok;
static fe_chat_template_t *tpl;
static fe_oai_ctx_t ctx;

/* a ChatML template of our own (the fixture tokenizer's model family uses ChatML) */
static const char chatml[] =
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

static int setup(void **state) {
    (void)state;
    char err[LT_ERR_LEN];
    if (fe_tokenizer_load(tu_fixture("tokenizers/qwen2"), &tok, err)) {
        print_error("%s\n", err);
        return -1;
    }
    if (fe_chat_template_compile(chatml, strlen(chatml), &tpl, err)) {
        print_error("%s\n", err);
        return -1;
    }
    ctx = (fe_oai_ctx_t){.tok = tok,
                         .tpl = tpl,
                         .served_name = "tiny",
                         .max_model_len = 64,
                         .vocab_size = fe_tokenizer_n_vocab(tok),
                         .gen = NULL};
    return 0;
}

static int teardown(void **state) {
    (void)state;
    fe_chat_template_destroy(&tpl);
    fe_tokenizer_destroy(&tok);
    return 0;
}

static int parse(fe_oai_kind_t kind, const char *body, fe_oai_request_t *r, fe_oai_error_t *e) {
    return fe_oai_parse(kind, body, strlen(body), &ctx, r, e);
}

/* Expects a refusal with this status, code (NULL: none) and param ("" : none). */
static void refused(fe_oai_kind_t kind, const char *body, int status, const char *code,
                    const char *param) {
    fe_oai_request_t r;
    fe_oai_error_t e;
    memset(&e, 0, sizeof e);
    int rc = parse(kind, body, &r, &e);
    if (rc == 0 || e.status != status || strcmp(e.param, param) != 0 ||
        (code ? !e.code || strcmp(e.code, code) : e.code != NULL)) {
        print_error("body %s: rc %d status %d param '%s' code '%s' message '%s'\n", body, rc,
                    e.status, e.param, e.code ? e.code : "(null)", e.message);
        fail();
    }
    assert_true(strlen(e.message) > 10);
    fe_oai_request_fini(&r);
}

/* ---- prompts ---- */

static void test_prompt_shapes(void **state) {
    (void)state;
    fe_oai_request_t r;
    fe_oai_error_t e;
    char err[LT_ERR_LEN];
    int32_t *ids;
    int n;
    assert_int_equal(fe_tokenizer_encode(tok, "Hello world", 11, true, true, &ids, &n, err), 0);

    assert_int_equal(parse(FE_OAI_COMPLETION, "{\"prompt\": \"Hello world\"}", &r, &e), 0);
    assert_int_equal(r.n_prompts, 1);
    assert_int_equal(r.prompts[0].n_ids, n);
    assert_memory_equal(r.prompts[0].ids, ids, sizeof(int32_t) * (size_t)n);
    assert_string_equal(r.prompts[0].text, "Hello world");
    /* OpenAI's defaults */
    assert_int_equal(r.n, 1);
    assert_int_equal(r.params.max_tokens, 16);
    assert_true(r.params.temperature == 1.0f && r.params.top_p == 1.0f && r.params.top_k == 0);
    assert_int_equal(r.params.logprobs, -1);
    assert_false(r.stream);
    assert_true(r.skip_special);
    fe_oai_request_fini(&r);

    /* token ids: kept as given, text decoded for echo */
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\": [%d, %d], \"echo\": true, \"max_tokens\": 0}", ids[0],
             ids[1]);
    assert_int_equal(parse(FE_OAI_COMPLETION, body, &r, &e), 0);
    assert_int_equal(r.prompts[0].n_ids, 2);
    assert_int_equal(r.prompts[0].ids[1], ids[1]);
    assert_true(r.echo);
    assert_int_equal(r.params.max_tokens, 0);
    assert_true(strncmp(r.prompts[0].text, "Hello", 5) == 0);
    fe_oai_request_fini(&r);

    assert_int_equal(parse(FE_OAI_COMPLETION,
                           "{\"prompt\": [\"a\", \"b c\"], \"n\": 3, \"model\": \"tiny\"}", &r, &e),
                     0);
    assert_int_equal(r.n_prompts, 2);
    assert_int_equal(r.n, 3);
    fe_oai_request_fini(&r);

    assert_int_equal(parse(FE_OAI_COMPLETION, "{\"prompt\": [[1, 2], [3]]}", &r, &e), 0);
    assert_int_equal(r.n_prompts, 2);
    assert_int_equal(r.prompts[1].n_ids, 1);
    assert_int_equal(r.prompts[1].ids[0], 3);
    fe_oai_request_fini(&r);
    free(ids);

    refused(FE_OAI_COMPLETION, "{\"prompt\": [\"a\", [1]]}", 400, NULL, "prompt");
    refused(FE_OAI_COMPLETION, "{\"prompt\": []}", 400, NULL, "prompt");
    refused(FE_OAI_COMPLETION, "{\"prompt\": 5}", 400, NULL, "prompt");
    refused(FE_OAI_COMPLETION, "{\"max_tokens\": 5}", 400, NULL, "prompt");
    refused(FE_OAI_COMPLETION, "{\"prompt\": [1, -2]}", 400, NULL, "prompt");
    refused(FE_OAI_COMPLETION, "{\"prompt\": [1, 99999999]}", 400, NULL, "prompt");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"\"}", 400, NULL, "prompt");
}

/* ---- refusals ---- */

static void test_bad_bodies(void **state) {
    (void)state;
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\",", 400, NULL, "");
    refused(FE_OAI_COMPLETION, "[1, 2]", 400, NULL, "");
    refused(FE_OAI_COMPLETION, "", 400, NULL, "");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"model\": \"gpt-4\"}", 404, "model_not_found",
            "model");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"model\": 7}", 400, NULL, "model");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"temperature\": \"hot\"}", 400, NULL,
            "temperature");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"temperature\": 2.5}", 400, NULL,
            "temperature");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"top_p\": 0}", 400, NULL, "top_p");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"top_k\": 1.5}", 400, NULL, "top_k");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"min_p\": 2}", 400, NULL, "min_p");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"n\": 0}", 400, NULL, "n");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"n\": 2, \"best_of\": 3}", 400, NULL,
            "best_of");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"max_tokens\": 1.5}", 400, NULL, "max_tokens");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"max_tokens\": -1}", 400, NULL, "max_tokens");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"max_tokens\": 4, \"min_tokens\": 5}", 400,
            NULL, "min_tokens");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"stop\": 5}", 400, NULL, "stop");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"stop\": [\"a\", 1]}", 400, NULL, "stop");
    refused(FE_OAI_COMPLETION,
            "{\"prompt\": \"x\", \"stop\": [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\","
            "\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
            400, NULL, "stop");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"stop_token_ids\": [\"a\"]}", 400, NULL,
            "stop_token_ids");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"logit_bias\": {\"abc\": 1}}", 400, NULL,
            "logit_bias");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"logit_bias\": {\"5\": 200}}", 400, NULL,
            "logit_bias");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"logit_bias\": [1]}", 400, NULL, "logit_bias");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"seed\": \"x\"}", 400, NULL, "seed");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"stream\": 1}", 400, NULL, "stream");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"stream_options\": {\"include_usage\": true}}",
            400, NULL, "stream_options");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"logprobs\": 21}", 400, NULL, "logprobs");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"logprobs\": 1, \"echo\": true}", 400, NULL,
            "logprobs");
    refused(FE_OAI_COMPLETION, "{\"prompt\": \"x\", \"suffix\": \"y\"}", 400, NULL, "suffix");
    refused(FE_OAI_COMPLETION,
            "{\"prompt\": \"x\", \"response_format\": {\"type\": \"json_object\"}}", 400, NULL,
            "response_format");
    refused(FE_OAI_COMPLETION, "{\"prompt\": [\"a\", \"b\", \"c\"], \"n\": 30}", 400, NULL, "n");
}

static void test_context_length(void **state) {
    (void)state;
    fe_oai_request_t r;
    fe_oai_error_t e;
    /* 64-token context: a 10-token prompt may ask for 54 more, not 55 */
    assert_int_equal(parse(FE_OAI_COMPLETION,
                           "{\"prompt\": [1,2,3,4,5,6,7,8,9,10], \"max_tokens\": 54}", &r, &e),
                     0);
    fe_oai_request_fini(&r);
    refused(FE_OAI_COMPLETION, "{\"prompt\": [1,2,3,4,5,6,7,8,9,10], \"max_tokens\": 55}", 400,
            "context_length_exceeded", "prompt");
    memset(&e, 0, sizeof e);
    assert_int_not_equal(parse(FE_OAI_COMPLETION,
                               "{\"prompt\": [1,2,3,4,5,6,7,8,9,10], \"max_tokens\": 55}", &r, &e),
                         0);
    assert_non_null(strstr(e.message, "64 tokens"));
    assert_non_null(strstr(e.message, "65 tokens"));
    assert_non_null(strstr(e.message, "10 in the prompt"));
    fe_oai_request_fini(&r);
    /* a long text prompt with no room at all */
    char body[2048] = "{\"prompt\": \"";
    for (int i = 0; i < 100; i++) strcat(body, "word ");
    strcat(body, "\", \"max_tokens\": 1}");
    refused(FE_OAI_COMPLETION, body, 400, "context_length_exceeded", "prompt");
}

/* ---- sampling defaults ---- */

static void test_defaults(void **state) {
    (void)state;
    fe_oai_request_t r;
    fe_oai_error_t e;
    fe_oai_ctx_t saved = ctx;
    lt_model_config_t gen;
    lt_model_config_defaults(&gen);
    gen.gen_temperature = 0.6f;
    gen.gen_top_p = 0.9f;
    gen.gen_top_k = 50;
    gen.gen_repetition_penalty = 1.1f;
    ctx.gen = &gen;
    assert_int_equal(parse(FE_OAI_COMPLETION, "{\"prompt\": \"x\"}", &r, &e), 0);
    assert_true(r.params.temperature == 0.6f && r.params.top_p == 0.9f && r.params.top_k == 50 &&
                r.params.repetition_penalty == 1.1f);
    fe_oai_request_fini(&r);
    /* the request wins; null means "not given" */
    assert_int_equal(parse(FE_OAI_COMPLETION,
                           "{\"prompt\": \"x\", \"temperature\": 0, \"top_p\": null, \"top_k\": "
                           "-1, \"seed\": -3, \"stop\": [\"\\n\", \"\"], \"logit_bias\": "
                           "{\"7\": -100}, \"stop_token_ids\": [2], \"logprobs\": 3}",
                           &r, &e),
                     0);
    assert_true(r.params.temperature == 0.0f && r.params.top_p == 0.9f && r.params.top_k == 0);
    assert_true(r.params.has_seed && r.params.seed == (uint64_t)-3);
    assert_int_equal(r.n_stops, 1); /* empty strings are dropped */
    assert_string_equal(r.stops[0], "\n");
    assert_int_equal(r.params.n_logit_bias, 1);
    assert_int_equal(r.params.logit_bias_ids[0], 7);
    assert_true(r.params.logit_bias[0] == -100.0f);
    assert_int_equal(r.params.n_stop_ids, 1);
    assert_int_equal(r.params.logprobs, 3);
    fe_oai_request_fini(&r);
    ctx = saved;
}

/* ---- chat ---- */

static void test_chat(void **state) {
    (void)state;
    fe_oai_request_t r;
    fe_oai_error_t e;
    const char *body = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
                       "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": "
                       "\"Hi\"}, {\"type\": \"text\", \"text\": \"there\"}]}], \"logprobs\": "
                       "true, \"top_logprobs\": 2}";
    assert_int_equal(parse(FE_OAI_CHAT, body, &r, &e), 0);
    assert_string_equal(r.prompts[0].text, "<|im_start|>system\nBe brief.<|im_end|>\n"
                                           "<|im_start|>user\nHi\nthere<|im_end|>\n"
                                           "<|im_start|>assistant\n");
    /* special tokens written by the template are single ids */
    int32_t im_start = fe_tokenizer_token_id(tok, "<|im_start|>", 12);
    assert_true(im_start >= 0);
    assert_int_equal(r.prompts[0].ids[0], im_start);
    /* chat's default max_tokens is the rest of the context */
    assert_int_equal(r.params.max_tokens, 64 - r.prompts[0].n_ids);
    assert_int_equal(r.params.logprobs, 2);
    fe_oai_request_fini(&r);

    char *text;
    cJSON *cont = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                              "{\"role\": \"assistant\", \"content\": \"Hel\"}], "
                              "\"continue_final_message\": true}");
    size_t n;
    assert_int_equal(fe_oai_render_chat(&ctx, cont, &text, &n, &e), 0);
    cJSON_Delete(cont);
    /* continue the assistant's message: nothing after its content */
    assert_int_equal(n, strlen(text));
    assert_true(n > 3 && strcmp(text + n - 3, "Hel") == 0);
    free(text);

    refused(FE_OAI_CHAT, "{\"messages\": []}", 400, NULL, "messages");
    refused(FE_OAI_CHAT, "{\"messages\": \"hi\"}", 400, NULL, "messages");
    refused(FE_OAI_CHAT, "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", 400, NULL,
            "messages[0]");
    refused(FE_OAI_CHAT, "{\"messages\": [{\"content\": \"x\"}]}", 400, NULL, "messages[0]");
    refused(FE_OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}]}", 400, NULL, "messages[0]");
    refused(FE_OAI_CHAT,
            "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", 400,
            NULL, "messages[0].content");
    refused(FE_OAI_CHAT,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 2}", 400,
            NULL, "top_logprobs");
    refused(FE_OAI_CHAT,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 64}", 400,
            "context_length_exceeded", "messages");
    /* a model without a template refuses chat clearly */
    fe_oai_ctx_t saved = ctx;
    ctx.tpl = NULL;
    refused(FE_OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 400, NULL,
            "messages");
    ctx = saved;
}

/* ---- the JSON writer ---- */

static void test_writer(void **state) {
    (void)state;
    lt_buf_t b = {0};
    fe_jw_t w;
    fe_jw_init(&w, &b);
    const char nasty[] = "q\"b\\s/\n\r\t\x01\x1f é 😀";
    fe_jw_obj(&w);
    fe_jw_key(&w, "s");
    fe_jw_cstr(&w, nasty);
    fe_jw_key(&w, "n");
    fe_jw_null(&w);
    fe_jw_key(&w, "a");
    fe_jw_arr(&w);
    fe_jw_int(&w, -5);
    fe_jw_num(&w, 0.25);
    fe_jw_bool(&w, true);
    fe_jw_obj(&w);
    fe_jw_end(&w, '}');
    fe_jw_arr(&w);
    fe_jw_end(&w, ']');
    fe_jw_end(&w, ']');
    fe_jw_key(&w, "lp");
    fe_jw_num(&w, -1.0 / 0.0);
    fe_jw_end(&w, '}');
    assert_int_equal(w.err, 0);
    cJSON *j = cJSON_Parse(b.data);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "s")->valuestring, nasty);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "n")));
    cJSON *a = cJSON_GetObjectItem(j, "a");
    assert_int_equal(cJSON_GetArraySize(a), 5);
    assert_int_equal(cJSON_GetArrayItem(a, 0)->valueint, -5);
    assert_true(cJSON_GetArrayItem(a, 1)->valuedouble == 0.25);
    assert_true(cJSON_IsTrue(cJSON_GetArrayItem(a, 2)));
    assert_true(cJSON_GetObjectItem(j, "lp")->valuedouble == -9999.0);
    cJSON_Delete(j);

    /* the error body */
    fe_oai_error_t e;
    fe_oai_fail(&e, 400, "invalid_request_error", "context_length_exceeded", "prompt",
                "too \"long\": %d", 5);
    lt_buf_clear(&b);
    fe_oai_error_json(&e, &b);
    j = cJSON_Parse(b.data);
    cJSON *err = cJSON_GetObjectItem(j, "error");
    assert_string_equal(cJSON_GetObjectItem(err, "message")->valuestring, "too \"long\": 5");
    assert_string_equal(cJSON_GetObjectItem(err, "type")->valuestring, "invalid_request_error");
    assert_string_equal(cJSON_GetObjectItem(err, "param")->valuestring, "prompt");
    assert_string_equal(cJSON_GetObjectItem(err, "code")->valuestring, "context_length_exceeded");
    cJSON_Delete(j);
    fe_oai_fail(&e, 400, "invalid_request_error", NULL, NULL, "bad");
    lt_buf_clear(&b);
    fe_oai_error_json(&e, &b);
    j = cJSON_Parse(b.data);
    err = cJSON_GetObjectItem(j, "error");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(err, "param")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(err, "code")));
    cJSON_Delete(j);
    lt_buf_free(&b);
}

/* The error body is valid UTF-8 even when the message quotes half a character of the body:
 * Jansson's "near '\u0<EF>'" (found by fuzz_oai; corpus_oai/crash_error_utf8.json). */
static void test_error_json_utf8(void **state) {
    (void)state;
    static const char body[] = "{\"stop\": [\"\\u0\xef\xbb\xbf\"]}";
    void *j = NULL;
    fe_oai_error_t e;
    assert_int_not_equal(fe_oai_parse_body(body, strlen(body), &j, &e), 0);
    assert_null(j);
    lt_buf_t b = {0};
    fe_oai_error_json(&e, &b);
    assert_int_equal(lt_utf8_valid_prefix(b.data, b.len), b.len);
    assert_int_equal(fe_oai_parse_body(b.data, b.len, &j, &e), 0);
    cJSON_Delete(j);
    /* a message cut inside a character by its buffer: U+FFFD in its place */
    fe_oai_fail(&e, 400, "invalid_request_error", NULL, "p\xc3", "caf\xc3");
    lt_buf_clear(&b);
    fe_oai_error_json(&e, &b);
    cJSON *root = cJSON_Parse(b.data);
    cJSON *o = cJSON_GetObjectItem(root, "error");
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "message")->valuestring, "caf\xef\xbf\xbd");
    assert_string_equal(cJSON_GetObjectItem(o, "param")->valuestring, "p\xef\xbf\xbd");
    cJSON_Delete(root);
    lt_buf_free(&b);
}

/* ---- helpers shared with /tokenize, /detokenize and /v1/models/{id} ---- */

static void test_shared_checks(void **state) {
    (void)state;
    fe_oai_error_t e;
    int32_t *ids;
    int n;
    cJSON *j = cJSON_Parse("[1, 2, 3]");
    assert_int_equal(fe_oai_token_ids(&ctx, j, "tokens", &ids, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[2], 3);
    free(ids);
    cJSON_Delete(j);
    const char *bad[] = {"[1, -1]", "[1, 99999999]", "[1.5]", "[\"a\"]", "{}", "3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        j = cJSON_Parse(bad[i]);
        memset(&e, 0, sizeof e);
        assert_int_not_equal(fe_oai_token_ids(&ctx, j, "tokens", &ids, &n, &e), 0);
        assert_int_equal(e.status, 400);
        assert_string_equal(e.param, "tokens");
        assert_null(ids);
        cJSON_Delete(j);
    }
    assert_int_not_equal(fe_oai_token_ids(&ctx, NULL, "tokens", &ids, &n, &e), 0);

    assert_int_equal(fe_oai_model_known(&ctx, NULL, &e), 0);
    assert_int_equal(fe_oai_model_known(&ctx, "tiny", &e), 0);
    assert_int_not_equal(fe_oai_model_known(&ctx, "gpt-4", &e), 0);
    assert_int_equal(e.status, 404);
    assert_string_equal(e.code, "model_not_found");
    j = cJSON_Parse("{\"model\": 5}");
    assert_int_not_equal(fe_oai_check_model(&ctx, j, &e), 0);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.param, "model");
    cJSON_Delete(j);
    j = cJSON_Parse("{\"model\": null}");
    assert_int_equal(fe_oai_check_model(&ctx, j, &e), 0);
    cJSON_Delete(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_shapes),  cmocka_unit_test(test_bad_bodies),
        cmocka_unit_test(test_context_length), cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_chat),           cmocka_unit_test(test_writer),
        cmocka_unit_test(test_shared_checks),  cmocka_unit_test(test_error_json_utf8),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
