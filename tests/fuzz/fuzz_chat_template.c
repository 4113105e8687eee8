/*
 * fuzz_chat_template.c — libFuzzer target for the chat template interpreter
 * (frontend/jinja/chat_template.h): any byte string, compiled as a template, must either be
 * refused (LT_ERR_FORMAT or LT_ERR_UNSUPPORTED, or LT_ERR_RANGE past the source limit) with a
 * message, or compile and then render a fixed conversation (system, user with a NUL and non-ASCII
 * text, assistant with a tool call, user; tools and documents; the usual keywords) into a
 * NUL-terminated string of the length it reports, or fail with one of the codes render promises
 * and a message. The interpreter's limits (loop iterations, calls, recursion, output, memory)
 * bound every render: a template that hangs or eats memory is a finding (libFuzzer's -timeout
 * and -rss_limit_mb, which tools/fuzz.sh sets).
 *
 * Built by CMake: a replay program over tests/fuzz/corpus_chat_template (a ctest) in every build;
 * fuzz_chat_template, linked with libFuzzer, in the `fuzz` preset (tools/fuzz.sh). Seeds: the
 * chat templates of real model families (ChatML, Llama 3, Mistral, Gemma, Phi-3, a tool-calling
 * one) and edge cases of our own (recursion, loops, the range() limit, whitespace control).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat_template.h"
#include "lt.h"

static const char ctx_json[] =
    "{\"messages\": ["
    "{\"role\": \"system\", \"content\": \"You are helpful.\"},"
    "{\"role\": \"user\", \"content\": \"Hi \\u00e9\\u4e16 \\u00c0\\u0080 <|im_end|> {{ x }}\"},"
    "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"type\": \"function\","
    " \"function\": {\"name\": \"get_time\", \"arguments\": {\"tz\": \"UTC\"}}}]},"
    "{\"role\": \"tool\", \"content\": \"12:00\"},"
    "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"and now?\"}]}],"
    " \"add_generation_prompt\": true,"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_time\","
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"tz\": {\"type\": \"string\"}}}}}],"
    " \"documents\": null, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
    " \"enable_thinking\": false, \"date_string\": \"04 Dec 2026\"}";

static cJSON *g_ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ctx) {
        g_ctx = cJSON_Parse(ctx_json);
        if (!g_ctx) abort();
    }
    char *src = malloc(size ? size : 1); /* exactly size bytes: no read past the source */
    if (!src) return 0;
    memcpy(src, data, size);

    char err[LT_ERR_LEN] = "";
    fe_chat_template_t *t = NULL;
    int rc = fe_chat_template_compile(src, size, &t, err);
    free(src); /* compile copies what it needs */
    if (rc != LT_OK) {
        if (t || !err[0] ||
            (rc != LT_ERR_FORMAT && rc != LT_ERR_UNSUPPORTED && rc != LT_ERR_RANGE &&
             rc != LT_ERR_NOMEM)) {
            fprintf(stderr, "fuzz_chat_template: compile rc %d, error '%s'\n", rc, err);
            abort();
        }
        return 0;
    }
    if (!t) abort();
    char *out = NULL;
    size_t len = 0;
    err[0] = '\0';
    rc = fe_chat_template_render(t, g_ctx, &out, &len, err);
    if (rc == LT_OK) {
        if (!out || out[len] != '\0') abort();
        free(out);
    } else if (out || (rc != LT_ERR_INVAL && rc != LT_ERR_RANGE && rc != LT_ERR_UNSUPPORTED &&
                       rc != LT_ERR_NOMEM)) {
        fprintf(stderr, "fuzz_chat_template: render rc %d, error '%s'\n", rc, err);
        abort();
    }
    fe_chat_template_destroy(&t);
    if (t) abort();
    return 0;
}
