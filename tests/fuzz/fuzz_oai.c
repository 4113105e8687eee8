/*
 * fuzz_oai.c — libFuzzer target for the OpenAI request parser (frontend/http/oai.h): any body,
 * read as a completions and as a chat request, must either be refused with a 400/404 error whose
 * message is set and whose JSON form (fe_oai_error_json) our own body reader accepts again as an
 * object, or parse into a request that keeps every promise of oai.h: 1..64 prompts x choices,
 * each prompt 1..max_model_len-1 ids inside the vocabulary with its text NUL-terminated,
 * prompt + max_tokens within the context, at most FE_MAX_STOPS stop strings, and parameters
 * ipc_params_check accepts. The context is test_oai.c's: the Qwen2 fixture tokenizer and a
 * ChatML template of ours.
 *
 * Built by CMake: a replay program over tests/fuzz/corpus_oai (a ctest) in every build; fuzz_oai,
 * linked with libFuzzer, in the `fuzz` preset (tools/fuzz.sh).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat_template.h"
#include "lt.h"
#include "oai.h"
#include "tokenizer.h"

#ifndef LT_FUZZ_FIXTURES
#define LT_FUZZ_FIXTURES "tests/fixtures"
#endif

static const char chatml[] =
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

static fe_tokenizer_t *g_tok;
static fe_chat_template_t *g_tpl;
static fe_oai_ctx_t g_ctx;

static void load_once(void) {
    if (g_tok) return;
    const char *dir = getenv("LANTERN_FIXTURES");
    char path[4096], err[LT_ERR_LEN];
    snprintf(path, sizeof path, "%s/tokenizers/qwen2", dir ? dir : LT_FUZZ_FIXTURES);
    if (fe_tokenizer_load(path, &g_tok, err) ||
        fe_chat_template_compile(chatml, strlen(chatml), &g_tpl, err)) {
        fprintf(stderr, "fuzz_oai: %s\n", err);
        abort();
    }
    g_ctx = (fe_oai_ctx_t){.tok = g_tok,
                           .tpl = g_tpl,
                           .served_name = "tiny",
                           .max_model_len = 256,
                           .vocab_size = fe_tokenizer_n_vocab(g_tok),
                           .gen = NULL};
}

/* A refusal: a status, a message, and an error body that is itself a JSON object. */
static void check_error(const fe_oai_error_t *e) {
    if ((e->status != 400 && e->status != 404) || !e->type || !e->message[0]) abort();
    lt_buf_t b = {0};
    fe_oai_error_json(e, &b);
    void *j = NULL;
    fe_oai_error_t e2;
    if (fe_oai_parse_body(lt_buf_str(&b), b.len, &j, &e2) || !cJSON_IsObject((cJSON *)j)) {
        fprintf(stderr, "fuzz_oai: the error body is not a JSON object: %s\n", lt_buf_str(&b));
        abort();
    }
    cJSON_Delete(j);
    lt_buf_free(&b);
}

static void check_request(const fe_oai_request_t *r) {
    const int max_len = g_ctx.max_model_len;
    if (r->n_prompts < 1 || r->n_prompts > FE_OAI_MAX_PROMPTS || r->n < 1 ||
        r->n_prompts * r->n > FE_OAI_MAX_N || r->n_stops < 0 || r->n_stops > FE_MAX_STOPS)
        abort();
    for (int i = 0; i < r->n_prompts; i++) {
        const fe_oai_prompt_t *p = &r->prompts[i];
        if (p->n_ids < 1 || p->n_ids >= max_len || !p->text || p->text[p->text_len] != '\0')
            abort();
        for (int k = 0; k < p->n_ids; k++)
            if (p->ids[k] < 0 || p->ids[k] >= g_ctx.vocab_size) abort();
        if (r->params.max_tokens < 0 || p->n_ids + r->params.max_tokens > max_len) abort();
    }
    for (int i = 0; i < r->n_stops; i++)
        if (!r->stops[i]) abort();
    ipc_params_t p = r->params;
    const char *bad = NULL;
    char err[LT_ERR_LEN];
    if (ipc_params_check(&p, g_ctx.vocab_size, &bad, err)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    char *body = malloc(size ? size : 1); /* exactly size bytes: no read past the body */
    if (!body) return 0;
    memcpy(body, data, size);

    void *j = NULL;
    fe_oai_error_t e;
    memset(&e, 0, sizeof e);
    if (fe_oai_parse_body(body, size, &j, &e)) {
        if (j) abort();
        check_error(&e);
    } else {
        if (!j) abort();
        cJSON_Delete(j);
    }
    for (int kind = FE_OAI_COMPLETION; kind <= FE_OAI_CHAT; kind++) {
        fe_oai_request_t r;
        memset(&e, 0, sizeof e);
        if (fe_oai_parse((fe_oai_kind_t)kind, body, size, &g_ctx, &r, &e))
            check_error(&e);
        else
            check_request(&r);
        fe_oai_request_fini(&r);
    }
    free(body);
    return 0;
}
