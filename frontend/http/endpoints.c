/*
 * endpoints.c — the endpoints besides generation and /metrics: /v1/models (and
 * /v1/models/{id}), /tokenize and /detokenize.
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json.h"
#include "lt.h"

static void write_model(fe_jw_t *w, const srv_t *s) {
    fe_jw_obj(w);
    fe_jw_key(w, "id");
    fe_jw_cstr(w, s->served_name);
    fe_jw_key(w, "object");
    fe_jw_cstr(w, "model");
    fe_jw_key(w, "created");
    fe_jw_int(w, (long long)s->started);
    fe_jw_key(w, "owned_by");
    fe_jw_cstr(w, "lantern");
    fe_jw_key(w, "root");
    fe_jw_cstr(w, s->model);
    fe_jw_key(w, "max_model_len");
    fe_jw_int(w, s->info.max_model_len);
    fe_jw_end(w, '}');
}

enum MHD_Result fe_http_models(call_t *c) {
    lt_buf_t b;
    fe_jw_t w;
    fe_http_json_begin(&w, &b);
    fe_jw_key(&w, "object");
    fe_jw_cstr(&w, "list");
    fe_jw_key(&w, "data");
    fe_jw_arr(&w);
    write_model(&w, c->s);
    fe_jw_end(&w, ']');
    return fe_http_respond_json(c, &w);
}

/* GET /v1/models/{id}: the model object itself (OpenAI's "retrieve model") */
enum MHD_Result fe_http_model(call_t *c, const char *id) {
    fe_oai_error_t e;
    if (fe_oai_model_known(&c->s->oai, id, &e)) return fe_http_respond_error(c, &e);
    lt_buf_t b = {0};
    fe_jw_t w;
    fe_jw_init(&w, &b);
    write_model(&w, c->s);
    enum MHD_Result ok =
        w.err ? MHD_NO : fe_http_respond(c, 200, "application/json", b.data ? b.data : "", b.len);
    lt_buf_free(&b);
    return ok;
}

/* The body as a tree (fe_oai_parse_body: strict, NULs kept, surrogates refused), or NULL after
 * answering the error. */
static cJSON *read_body(call_t *c, enum MHD_Result *ok) {
    fe_oai_error_t e;
    void *j;
    if (fe_oai_parse_body(c->body.data ? c->body.data : "", c->body.len, &j, &e)) {
        *ok = fe_http_respond_error(c, &e);
        return NULL;
    }
    if (!cJSON_IsObject((cJSON *)j)) {
        cJSON_Delete(j);
        *ok = fe_http_fail(c, 400, "invalid_request_error", NULL, NULL,
                           "the body must be a JSON object");
        return NULL;
    }
    return j;
}

enum MHD_Result fe_http_tokenize(call_t *c) {
    srv_t *s = c->s;
    fe_oai_error_t e;
    enum MHD_Result ok;
    cJSON *j = read_body(c, &ok);
    if (!j) return ok;
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(j, "add_special_tokens");
    char *text = NULL, err[LT_ERR_LEN];
    size_t len = 0;
    int32_t *ids = NULL;
    int n = 0;
    if (fe_oai_check_model(&s->oai, j, &e)) {
        ok = fe_http_respond_error(c, &e);
        goto out;
    }
    if (add && !cJSON_IsBool(add) && !cJSON_IsNull(add)) {
        ok = fe_http_fail(c, 400, "invalid_request_error", NULL, "add_special_tokens",
                          "'add_special_tokens' must be a boolean");
        goto out;
    }
    bool add_special;
    if (cJSON_IsString(prompt)) {
        add_special = !add || !cJSON_IsFalse(add);
        /* data: the NULs the body held (C0 80 in the tree) are tokenized as the byte they are */
        if ((text = strdup(prompt->valuestring))) len = lt_json_bytes(text, text, strlen(text));
    } else if (msgs) {
        add_special = add && cJSON_IsTrue(add);
        if (fe_oai_render_chat(&s->oai, j, &text, &len, &e)) {
            ok = fe_http_respond_error(c, &e);
            goto out;
        }
    } else {
        ok = fe_http_fail(c, 400, "invalid_request_error", NULL, "prompt",
                          "give 'prompt' (a string) or 'messages'");
        goto out;
    }
    if (!text || fe_tokenizer_encode(s->tok, text, len, add_special, true, &ids, &n, err)) {
        ok = fe_http_fail(c, 500, "server_error", NULL, NULL, "tokenization failed");
        goto out;
    }
    lt_buf_t b;
    fe_jw_t w;
    fe_http_json_begin(&w, &b);
    fe_jw_key(&w, "count");
    fe_jw_int(&w, n);
    fe_jw_key(&w, "max_model_len");
    fe_jw_int(&w, s->info.max_model_len);
    fe_jw_key(&w, "tokens");
    fe_jw_arr(&w);
    for (int i = 0; i < n; i++) fe_jw_int(&w, ids[i]);
    fe_jw_end(&w, ']');
    ok = fe_http_respond_json(c, &w);
out:
    free(text);
    free(ids);
    cJSON_Delete(j);
    return ok;
}

enum MHD_Result fe_http_detokenize(call_t *c) {
    srv_t *s = c->s;
    fe_oai_error_t e;
    enum MHD_Result ok;
    cJSON *j = read_body(c, &ok);
    if (!j) return ok;
    int32_t *ids = NULL;
    int n = 0;
    char *text = NULL, err[LT_ERR_LEN];
    if (fe_oai_check_model(&s->oai, j, &e)) {
        ok = fe_http_respond_error(c, &e);
        goto out;
    }
    if (fe_oai_token_ids(&s->oai, cJSON_GetObjectItemCaseSensitive(j, "tokens"), "tokens", &ids, &n,
                         &e)) {
        ok = fe_http_respond_error(c, &e);
        goto out;
    }
    size_t len;
    if (fe_tokenizer_decode(s->tok, ids, n, false, &text, &len, err)) {
        ok = fe_http_fail(c, 500, "server_error", NULL, NULL, "detokenization failed");
        goto out;
    }
    lt_buf_t b;
    fe_jw_t w;
    fe_http_json_begin(&w, &b);
    fe_jw_key(&w, "prompt");
    fe_jw_str(&w, text, len);
    ok = fe_http_respond_json(c, &w);
out:
    free(ids);
    free(text);
    cJSON_Delete(j);
    return ok;
}
