/*
 * oai.c — validation of OpenAI completions / chat-completions bodies (see oai.h) and the JSON
 * writer the server formats its responses with.
 *
 * The rules follow what OpenAI's API and vLLM's OpenAI server accept: a field that is absent or
 * null takes its default; a present field of the wrong type or out of range is a 400 naming the
 * field (`param`); unknown fields are ignored, as vLLM does. A feature we do not implement
 * (suffix, best_of > n, structured output, prompt logprobs) is refused with a 400 that says so,
 * never silently dropped.
 */
#define _GNU_SOURCE
#include "oai.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "lt.h"
#include "utf8.h"

/* ---- errors ---- */

int fe_oai_fail(fe_oai_error_t *e, int status, const char *type, const char *code,
                const char *param, const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return LT_ERR_INVAL;
}

#define BAD(param, ...) fe_oai_fail(e, 400, "invalid_request_error", NULL, param, __VA_ARGS__)

/* s as a JSON string of valid UTF-8 (NULL: null): a message may quote the body's bytes (Jansson's
 * "near '...'" cuts a multi-byte character in two) or be cut mid-character by its fixed-size
 * buffer, and an error body that is not UTF-8 is one clients cannot parse (fuzz_oai found it);
 * each invalid sequence becomes U+FFFD. */
static void jw_text(fe_jw_t *w, const char *s) {
    if (!s || lt_utf8_valid_prefix(s, strlen(s)) == strlen(s)) {
        fe_jw_cstr(w, s);
        return;
    }
    lt_buf_t b = {0};
    lt_utf8_lossy_t st = {0};
    if (lt_utf8_lossy_push(&st, s, strlen(s), &b) || lt_utf8_lossy_flush(&st, &b))
        fe_jw_cstr(w, "(message not valid UTF-8)");
    else
        fe_jw_str(w, lt_buf_str(&b), b.len);
    lt_buf_free(&b);
}

void fe_oai_error_json(const fe_oai_error_t *e, lt_buf_t *out) {
    fe_jw_t w;
    fe_jw_init(&w, out);
    fe_jw_obj(&w);
    fe_jw_key(&w, "error");
    fe_jw_obj(&w);
    fe_jw_key(&w, "message");
    jw_text(&w, e->message);
    fe_jw_key(&w, "type");
    fe_jw_cstr(&w, e->type);
    fe_jw_key(&w, "param");
    jw_text(&w, e->param[0] ? e->param : NULL);
    fe_jw_key(&w, "code");
    fe_jw_cstr(&w, e->code);
    fe_jw_end(&w, '}');
    fe_jw_end(&w, '}');
}

/* ---- typed field access: absent or null means "not given" ---- */

static const cJSON *field(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* 1: given (value in *out), 0: absent, <0: error in e */
static int get_num(const cJSON *o, const char *name, double lo, double hi, double *out,
                   fe_oai_error_t *e) {
    const cJSON *v = field(o, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) return BAD(name, "'%s' must be a number", name);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return BAD(name, "'%s' must be between %g and %g, got %g", name, lo, hi, v->valuedouble);
    *out = v->valuedouble;
    return 1;
}

static int get_int(const cJSON *o, const char *name, double lo, double hi, long long *out,
                   fe_oai_error_t *e) {
    const cJSON *v = field(o, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return BAD(name, "'%s' must be an integer", name);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return BAD(name, "'%s' must be between %.0f and %.0f, got %.0f", name, lo, hi,
                   v->valuedouble);
    *out = (long long)v->valuedouble;
    return 1;
}

static int get_bool(const cJSON *o, const char *name, bool *out, fe_oai_error_t *e) {
    const cJSON *v = field(o, name);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return BAD(name, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(v);
    return 1;
}

static int get_str(const cJSON *o, const char *name, const char **out, fe_oai_error_t *e) {
    const cJSON *v = field(o, name);
    if (!v) return 0;
    if (!cJSON_IsString(v)) return BAD(name, "'%s' must be a string", name);
    *out = v->valuestring;
    return 1;
}

static bool is_int(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
}

static int token_id(const cJSON *v, int vocab, const char *param, int32_t *out, fe_oai_error_t *e) {
    if (!is_int(v)) return BAD(param, "'%s' must hold integer token ids", param);
    if (v->valuedouble < 0 || v->valuedouble >= vocab)
        return BAD(param, "token id %.0f in '%s' is outside the vocabulary (0..%d)", v->valuedouble,
                   param, vocab - 1);
    *out = (int32_t)v->valuedouble;
    return 0;
}

int fe_oai_token_ids(const fe_oai_ctx_t *c, const void *json, const char *param, int32_t **ids,
                     int *n, fe_oai_error_t *e) {
    const cJSON *arr = json;
    *ids = NULL;
    *n = 0;
    if (!cJSON_IsArray(arr)) return BAD(param, "'%s' must be a list of token ids", param);
    int cap = cJSON_GetArraySize(arr);
    int32_t *v = malloc(sizeof(int32_t) * (size_t)(cap ? cap : 1));
    if (!v) return fe_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (token_id(it, c->vocab_size, param, &v[k], e)) {
            free(v);
            return LT_ERR_INVAL;
        }
        k++;
    }
    *ids = v;
    *n = k;
    return 0;
}

int fe_oai_check_model(const fe_oai_ctx_t *c, const void *body_json, fe_oai_error_t *e) {
    const char *model = NULL;
    if (get_str(body_json, "model", &model, e) < 0) return LT_ERR_INVAL;
    return fe_oai_model_known(c, model, e);
}

int fe_oai_model_known(const fe_oai_ctx_t *c, const char *name, fe_oai_error_t *e) {
    if (!name || strcmp(name, c->served_name) == 0) return 0;
    char shown[256];
    return fe_oai_fail(e, 404, "invalid_request_error", "model_not_found", "model",
                       "The model `%s` does not exist.",
                       lt_json_show(name, 80, shown, sizeof shown));
}

/* ---- prompts ---- */

static int add_prompt(fe_oai_request_t *r, fe_oai_error_t *e) {
    if (r->n_prompts == FE_OAI_MAX_PROMPTS)
        return BAD("prompt", "at most %d prompts per request", FE_OAI_MAX_PROMPTS);
    if (!r->prompts) {
        r->prompts = calloc(FE_OAI_MAX_PROMPTS, sizeof *r->prompts);
        if (!r->prompts) return fe_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    r->n_prompts++;
    return 0;
}

/* Wall-clock ns: when a parsing phase ran, for the caller's spans. */
static uint64_t unix_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* s[0, len): text, or (from_json) a string of the parsed body, whose NULs are C0 80 (json.h) */
static int text_prompt(const fe_oai_ctx_t *c, fe_oai_request_t *r, const char *s, size_t len,
                       bool from_json, bool add_special, fe_oai_error_t *e) {
    if (add_prompt(r, e)) return LT_ERR_INVAL;
    fe_oai_prompt_t *p = &r->prompts[r->n_prompts - 1];
    char err[LT_ERR_LEN];
    uint64_t t0 = unix_ns();
    if (!r->tokenize_start_ns) r->tokenize_start_ns = t0;
    if ((p->text = malloc(len + 1))) {
        p->text_len = from_json ? lt_json_bytes(p->text, s, len) : len;
        if (!from_json) memcpy(p->text, s, len);
        p->text[p->text_len] = '\0';
    }
    int rc = !p->text || fe_tokenizer_encode(c->tok, p->text, p->text_len, add_special, true,
                                             &p->ids, &p->n_ids, err);
    r->tokenize_end_ns = unix_ns();
    r->tokenize_ns += r->tokenize_end_ns - t0;
    if (rc) return fe_oai_fail(e, 500, "server_error", NULL, NULL, "tokenization failed");
    return 0;
}

static int ids_prompt(const fe_oai_ctx_t *c, fe_oai_request_t *r, const cJSON *arr,
                      fe_oai_error_t *e) {
    if (add_prompt(r, e)) return LT_ERR_INVAL;
    fe_oai_prompt_t *p = &r->prompts[r->n_prompts - 1];
    if (fe_oai_token_ids(c, arr, "prompt", &p->ids, &p->n_ids, e)) return LT_ERR_INVAL;
    size_t tl;
    char err[LT_ERR_LEN];
    if (fe_tokenizer_decode(c->tok, p->ids, p->n_ids, false, &p->text, &tl, err))
        return fe_oai_fail(e, 500, "server_error", NULL, NULL, "detokenization failed");
    p->text_len = tl;
    return 0;
}

/* prompt: "text" | ["text", ...] | [id, ...] | [[id, ...], ...] */
static int parse_prompt(const fe_oai_ctx_t *c, const cJSON *j, fe_oai_request_t *r,
                        fe_oai_error_t *e) {
    const cJSON *p = field(j, "prompt");
    bool add_special = true;
    if (get_bool(j, "add_special_tokens", &add_special, e) < 0) return LT_ERR_INVAL;
    if (!p) return BAD("prompt", "'prompt' is required");
    if (cJSON_IsString(p))
        return text_prompt(c, r, p->valuestring, strlen(p->valuestring), true, add_special, e);
    if (!cJSON_IsArray(p) || cJSON_GetArraySize(p) == 0)
        return BAD("prompt", "'prompt' must be a string, a list of strings, a list of token ids "
                             "or a list of lists of token ids, and not empty");
    const cJSON *first = p->child;
    if (is_int(first)) return ids_prompt(c, r, p, e);
    const cJSON *it;
    cJSON_ArrayForEach(it, p) {
        int rc;
        if (cJSON_IsString(first) && cJSON_IsString(it))
            rc = text_prompt(c, r, it->valuestring, strlen(it->valuestring), true, add_special, e);
        else if (cJSON_IsArray(first) && cJSON_IsArray(it))
            rc = ids_prompt(c, r, it, e);
        else
            rc = BAD("prompt", "'prompt' list items must all be strings or all lists of token ids");
        if (rc) return rc;
    }
    return 0;
}

/* ---- chat ---- */

/* content: "text" | [{"type": "text", "text": ...}, ...] -> one string (parts joined with "\n",
 * as vLLM joins them for string-content templates) */
static int message_text(const cJSON *content, int i, lt_buf_t *out, fe_oai_error_t *e) {
    char param[48];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (cJSON_IsString(content))
        return lt_buf_put(out, content->valuestring, strlen(content->valuestring)) ? -1 : 0;
    if (!cJSON_IsArray(content))
        return BAD(param, "'%s' must be a string or a list of content parts", param);
    const cJSON *part;
    int k = 0;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type))
            return BAD(param, "each part of '%s' needs a string 'type'", param);
        char shown[128];
        if (strcmp(type->valuestring, "text") != 0)
            return BAD(param, "content part type '%s' is not supported (text only)",
                       lt_json_show(type->valuestring, 40, shown, sizeof shown));
        if (!cJSON_IsString(text)) return BAD(param, "a text part of '%s' needs 'text'", param);
        if ((k++ && lt_buf_put(out, "\n", 1)) ||
            lt_buf_put(out, text->valuestring, strlen(text->valuestring)))
            return fe_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    return 0;
}

int fe_oai_render_chat(const fe_oai_ctx_t *c, const void *body_json, char **out, size_t *out_len,
                       fe_oai_error_t *e) {
    const cJSON *j = body_json;
    *out = NULL;
    *out_len = 0;
    if (!c->tpl) return BAD("messages", "this model has no chat template: use /v1/completions");
    const cJSON *msgs = field(j, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return BAD("messages", "'messages' must be a non-empty list");
    bool add_gen = true, cont = false;
    if (get_bool(j, "add_generation_prompt", &add_gen, e) < 0 ||
        get_bool(j, "continue_final_message", &cont, e) < 0)
        return LT_ERR_INVAL;
    if (cont && add_gen) {
        const cJSON *ag = field(j, "add_generation_prompt");
        if (ag)
            return BAD("continue_final_message", "continue_final_message and "
                                                 "add_generation_prompt cannot both be true");
        add_gen = false;
    }
    const cJSON *kw = field(j, "chat_template_kwargs");
    if (kw && !cJSON_IsObject(kw))
        return BAD("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    const cJSON *tools = field(j, "tools");
    if (tools && !cJSON_IsArray(tools)) return BAD("tools", "'tools' must be a list");

    int rc = LT_ERR_INVAL;
    lt_buf_t text = {0};
    cJSON *ctx = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(ctx, "messages");
    const cJSON *m;
    int i = 0;
    const char *last_content = NULL;
    cJSON_ArrayForEach(m, msgs) {
        char param[48];
        snprintf(param, sizeof param, "messages[%d]", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
            BAD(param, "'%s' must be an object with a string 'role'", param);
            goto out;
        }
        const char *rs = role->valuestring;
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") &&
            strcmp(rs, "tool") && strcmp(rs, "developer")) {
            char shown[128];
            BAD(param, "unknown role '%s' in '%s'", lt_json_show(rs, 40, shown, sizeof shown),
                param);
            goto out;
        }
        cJSON *copy = cJSON_Duplicate(m, 1);
        cJSON_AddItemToArray(arr, copy);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (content && !cJSON_IsNull(content)) {
            lt_buf_clear(&text);
            if (message_text(content, i, &text, e)) goto out;
            cJSON_ReplaceItemInObjectCaseSensitive(copy, "content",
                                                   cJSON_CreateString(text.data ? text.data : ""));
        } else if (strcmp(rs, "assistant") != 0) {
            BAD(param, "'%s' needs 'content'", param);
            goto out;
        }
        const cJSON *cc = cJSON_GetObjectItemCaseSensitive(copy, "content");
        last_content = cJSON_IsString(cc) ? cc->valuestring : NULL;
        i++;
    }
    cJSON_AddBoolToObject(ctx, "add_generation_prompt", add_gen);
    cJSON_AddItemToObject(ctx, "tools", tools ? cJSON_Duplicate(tools, 1) : cJSON_CreateNull());
    cJSON_AddNullToObject(ctx, "documents");
    int32_t bos = fe_tokenizer_bos(c->tok), eos = fe_tokenizer_eos(c->tok);
    cJSON_AddStringToObject(ctx, "bos_token", bos >= 0 ? fe_tokenizer_token_text(c->tok, bos) : "");
    cJSON_AddStringToObject(ctx, "eos_token", eos >= 0 ? fe_tokenizer_token_text(c->tok, eos) : "");
    if (kw) {
        const cJSON *k;
        cJSON_ArrayForEach(k, kw) {
            if (strcmp(k->string, "messages") == 0) continue;
            cJSON_DeleteItemFromObjectCaseSensitive(ctx, k->string);
            cJSON_AddItemToObject(ctx, k->string, cJSON_Duplicate(k, 1));
        }
    }
    char err[LT_ERR_LEN];
    if (fe_chat_template_render(c->tpl, ctx, out, out_len, err)) {
        BAD("messages", "the chat template refused the conversation: %s", err);
        goto out;
    }
    if (cont && last_content && *last_content) {
        /* continue the last (assistant) message: cut what the template adds after it (the
         * content as the template saw it: NULs restored) */
        lt_buf_clear(&text);
        if (lt_buf_put(&text, last_content, strlen(last_content))) {
            fe_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
            goto out;
        }
        text.len = lt_json_bytes(text.data, text.data, text.len);
        const char *at = NULL, *f;
        for (size_t from = 0;
             (f = memmem(*out + from, *out_len - from, text.data, text.len)) != NULL;
             from = (size_t)(f - *out) + 1)
            at = f;
        if (at) {
            *out_len = (size_t)(at - *out) + text.len;
            (*out)[*out_len] = '\0';
        }
    }
    rc = 0;
out:
    if (rc) {
        free(*out);
        *out = NULL;
        *out_len = 0;
    }
    cJSON_Delete(ctx);
    lt_buf_free(&text);
    return rc;
}

static int parse_messages(const fe_oai_ctx_t *c, const cJSON *j, fe_oai_request_t *r,
                          fe_oai_error_t *e) {
    char *text;
    size_t len;
    r->render_start_ns = unix_ns();
    int bad = fe_oai_render_chat(c, j, &text, &len, e);
    r->render_end_ns = unix_ns();
    if (bad) return LT_ERR_INVAL;
    /* the template writes the special tokens (BOS included) itself */
    int rc = text_prompt(c, r, text, len, false, false, e);
    free(text);
    return rc;
}

/* ---- sampling and stopping ---- */

/* A stop string is data: its NULs (C0 80 in the tree, json.h) are turned back into bytes in
 * place, and its length kept beside it. */
static void add_stop(fe_oai_request_t *r, cJSON *s) {
    size_t n = lt_json_bytes(s->valuestring, s->valuestring, strlen(s->valuestring));
    if (n == 0) return; /* "" stops nothing (vLLM drops it too) */
    r->stop_lens[r->n_stops] = n;
    r->stops[r->n_stops++] = s->valuestring;
}

static int parse_stop(const cJSON *j, fe_oai_request_t *r, fe_oai_error_t *e) {
    cJSON *s = (cJSON *)field(j, "stop");
    if (!s) return 0;
    if (cJSON_IsString(s)) {
        add_stop(r, s);
        return 0;
    }
    if (!cJSON_IsArray(s)) return BAD("stop", "'stop' must be a string or a list of strings");
    cJSON *it;
    cJSON_ArrayForEach(it, s) {
        if (!cJSON_IsString(it)) return BAD("stop", "'stop' must hold strings");
        if (!*it->valuestring) continue;
        if (r->n_stops == FE_MAX_STOPS) return BAD("stop", "at most %d stop strings", FE_MAX_STOPS);
        add_stop(r, it);
    }
    return 0;
}

static int parse_ids_field(const fe_oai_ctx_t *c, const cJSON *j, ipc_params_t *p,
                           fe_oai_error_t *e) {
    const cJSON *s = field(j, "stop_token_ids");
    if (s) {
        if (!cJSON_IsArray(s)) return BAD("stop_token_ids", "'stop_token_ids' must be a list");
        const cJSON *it;
        cJSON_ArrayForEach(it, s) {
            if (p->n_stop_ids == IPC_MAX_STOP_IDS)
                return BAD("stop_token_ids", "at most %d stop token ids", IPC_MAX_STOP_IDS);
            if (token_id(it, c->vocab_size, "stop_token_ids", &p->stop_ids[p->n_stop_ids], e))
                return LT_ERR_INVAL;
            p->n_stop_ids++;
        }
    }
    const cJSON *b = field(j, "logit_bias");
    if (b) {
        if (!cJSON_IsObject(b))
            return BAD("logit_bias", "'logit_bias' must be an object of token id -> bias");
        const cJSON *it;
        cJSON_ArrayForEach(it, b) {
            char *end;
            long id = strtol(it->string, &end, 10);
            char shown[128];
            if (!*it->string || *end || id < 0 || id > INT32_MAX)
                return BAD("logit_bias", "logit_bias key '%s' is not a token id (0..%d)",
                           lt_json_show(it->string, 40, shown, sizeof shown), c->vocab_size - 1);
            if (!cJSON_IsNumber(it)) return BAD("logit_bias", "logit_bias values must be numbers");
            if (p->n_logit_bias == IPC_MAX_LOGIT_BIAS)
                return BAD("logit_bias", "at most %d logit_bias entries", IPC_MAX_LOGIT_BIAS);
            p->logit_bias_ids[p->n_logit_bias] = (int32_t)id;
            p->logit_bias[p->n_logit_bias++] = (float)it->valuedouble;
        }
    }
    return 0;
}

void fe_oai_params_defaults(const fe_oai_ctx_t *c, ipc_params_t *p) {
    ipc_params_defaults(p);
    const lt_model_config_t *g = c->gen;
    p->temperature = g && g->gen_temperature >= 0 ? g->gen_temperature : 1.0f;
    p->top_p = g && g->gen_top_p > 0 ? g->gen_top_p : 1.0f;
    p->top_k = g && g->gen_top_k > 0 ? g->gen_top_k : 0;
    p->repetition_penalty = g && g->gen_repetition_penalty > 0 ? g->gen_repetition_penalty : 1.0f;
}

/* Types here; ranges are ipc_params_check's (called once the whole body is read). */
static int parse_sampling(const cJSON *j, ipc_params_t *p, fe_oai_error_t *e) {
    static const struct {
        const char *name;
        size_t off;
    } nums[] = {{"temperature", offsetof(ipc_params_t, temperature)},
                {"top_p", offsetof(ipc_params_t, top_p)},
                {"min_p", offsetof(ipc_params_t, min_p)},
                {"presence_penalty", offsetof(ipc_params_t, presence_penalty)},
                {"frequency_penalty", offsetof(ipc_params_t, frequency_penalty)},
                {"repetition_penalty", offsetof(ipc_params_t, repetition_penalty)}};
    double v = 0;
    long long k;
    int g;
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if ((g = get_num(j, nums[i].name, -HUGE_VAL, HUGE_VAL, &v, e)) < 0) return g;
        if (g) *(float *)((char *)p + nums[i].off) = (float)v;
    }
    if ((g = get_int(j, "top_k", -1, 1 << 30, &k, e)) < 0) return g;
    if (g) p->top_k = k < 0 ? 0 : (int)k; /* vLLM's -1: no limit */
    if ((g = get_int(j, "seed", -9.2e18, 9.2e18, &k, e)) < 0) return g;
    if (g) {
        p->has_seed = true;
        p->seed = (uint64_t)k;
    }
    return 0;
}

/* completions: logprobs = N; chat: logprobs = bool, top_logprobs = N */
static int parse_logprobs(const cJSON *j, fe_oai_request_t *r, fe_oai_error_t *e) {
    long long k;
    int g;
    r->params.logprobs = -1;
    if (r->kind == FE_OAI_COMPLETION) {
        if ((g = get_int(j, "logprobs", 0, IPC_MAX_LOGPROBS, &k, e)) < 0) return g;
        if (g) r->params.logprobs = (int)k;
        if (g && r->echo)
            return BAD("logprobs", "echo with logprobs is not supported: lantern does not "
                                   "compute prompt logprobs");
        return 0;
    }
    bool on = false;
    if ((g = get_bool(j, "logprobs", &on, e)) < 0) return g;
    if ((g = get_int(j, "top_logprobs", 0, IPC_MAX_LOGPROBS, &k, e)) < 0) return g;
    if (g && !on) return BAD("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (on) r->params.logprobs = g ? (int)k : 0;
    return 0;
}

/* ---- the request ---- */

int fe_oai_parse_body(const char *body, size_t len, void **json, fe_oai_error_t *e) {
    lt_json_error_t je;
    cJSON *j = NULL;
    int rc = lt_json_parse(body, len, &j, &je);
    *json = j;
    if (rc == LT_ERR_NOMEM) return fe_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    const char *field = je.path[0] ? je.path : NULL; /* the param where known, else null */
    if (rc == LT_ERR_INVAL) /* an unpaired surrogate: valid JSON, but not text */
        return BAD(field, "%s%s%s is not valid Unicode text: %s", field ? "'" : "",
                   field ? field : "the body", field ? "'" : "", je.message);
    if (rc) return BAD(field, "the body is not valid JSON: %s", je.message);
    return 0;
}

int fe_oai_parse(fe_oai_kind_t kind, const char *body, size_t len, const fe_oai_ctx_t *c,
                 fe_oai_request_t *r, fe_oai_error_t *e) {
    void *j;
    if (fe_oai_parse_body(body, len, &j, e)) {
        memset(r, 0, sizeof *r);
        return LT_ERR_INVAL;
    }
    return fe_oai_parse_json(kind, j, c, r, e);
}

int fe_oai_parse_json(fe_oai_kind_t kind, void *json, const fe_oai_ctx_t *c, fe_oai_request_t *r,
                      fe_oai_error_t *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->skip_special = true;
    r->n = 1;
    fe_oai_params_defaults(c, &r->params);
    cJSON *j = json;
    r->json = j;
    if (!cJSON_IsObject(j)) return BAD(NULL, "the body must be a JSON object");
    if (fe_oai_check_model(c, j, e)) return LT_ERR_INVAL;
    if (get_str(j, "user", &r->user, e) < 0) return LT_ERR_INVAL;

    long long k;
    int g;
    if ((g = get_int(j, "n", 1, FE_OAI_MAX_N, &k, e)) < 0) return g;
    if (g) r->n = (int)k;
    if ((g = get_int(j, "best_of", 1, FE_OAI_MAX_N, &k, e)) < 0) return g;
    if (g && k != r->n) return BAD("best_of", "best_of other than n is not supported");
    if (field(j, "suffix")) return BAD("suffix", "'suffix' is not supported");
    const cJSON *rf = field(j, "response_format");
    if (rf) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rf, "type");
        if (!cJSON_IsObject(rf) || !cJSON_IsString(t))
            return BAD("response_format", "'response_format' must be an object with a 'type'");
        char shown[128];
        if (strcmp(t->valuestring, "text") != 0)
            return BAD("response_format", "response_format type '%s' is not supported",
                       lt_json_show(t->valuestring, 40, shown, sizeof shown));
    }
    if (get_bool(j, "stream", &r->stream, e) < 0) return LT_ERR_INVAL;
    const cJSON *so = field(j, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) return BAD("stream_options", "'stream_options' must be an object");
        if (!r->stream)
            return BAD("stream_options", "'stream_options' is only allowed with 'stream': true");
        if (get_bool(so, "include_usage", &r->include_usage, e) < 0) return LT_ERR_INVAL;
    }
    if (get_bool(j, "echo", &r->echo, e) < 0 ||
        get_bool(j, "ignore_eos", &r->params.ignore_eos, e) < 0 ||
        get_bool(j, "skip_special_tokens", &r->skip_special, e) < 0 ||
        get_bool(j, "include_stop_str_in_output", &r->include_stop, e) < 0)
        return LT_ERR_INVAL;
    if (kind == FE_OAI_CHAT) r->echo = false; /* chat echo is a vLLM extension we do not offer */
    if (parse_sampling(j, &r->params, e) || parse_logprobs(j, r, e) || parse_stop(j, r, e) ||
        parse_ids_field(c, j, &r->params, e))
        return LT_ERR_INVAL;
    if (kind == FE_OAI_CHAT ? parse_messages(c, j, r, e) : parse_prompt(c, j, r, e))
        return LT_ERR_INVAL;
    if ((long long)r->n_prompts * r->n > FE_OAI_MAX_N)
        return BAD("n", "at most %d choices per request (prompts x n)", FE_OAI_MAX_N);

    /* lengths: every prompt must leave room for the completion */
    const char *what = kind == FE_OAI_CHAT ? "messages" : "prompt";
    int longest = 0;
    for (int i = 0; i < r->n_prompts; i++) {
        if (r->prompts[i].n_ids == 0) return BAD(what, "the %s has no tokens", what);
        if (r->prompts[i].n_ids > longest) longest = r->prompts[i].n_ids;
    }
    long long max_tokens = -1;
    g = get_int(j, "max_completion_tokens", 0, 1e9, &max_tokens, e);
    if (g < 0) return g;
    if (!g && (g = get_int(j, "max_tokens", 0, 1e9, &max_tokens, e)) < 0) return g;
    if (!g) max_tokens = kind == FE_OAI_CHAT ? c->max_model_len - longest : 16;
    if (longest >= c->max_model_len || longest + max_tokens > c->max_model_len)
        return fe_oai_fail(e, 400, "invalid_request_error", "context_length_exceeded", what,
                           "This model's maximum context length is %d tokens. However, you "
                           "requested %lld tokens (%d in the %s, %lld for the completion). "
                           "Please reduce the length of the %s or completion.",
                           c->max_model_len, longest + (max_tokens > 0 ? max_tokens : 0), longest,
                           what, max_tokens > 0 ? max_tokens : 0, what);
    r->params.max_tokens = (int)max_tokens;
    if ((g = get_int(j, "min_tokens", 0, 1e9, &k, e)) < 0) return g;
    if (g) r->params.min_tokens = (int)k;
    const char *bad = NULL;
    char err[LT_ERR_LEN];
    if (ipc_params_check(&r->params, c->vocab_size, &bad, err)) return BAD(bad, "%s", err);
    return 0;
}

void fe_oai_request_fini(fe_oai_request_t *r) {
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].ids);
        free(r->prompts[i].text);
    }
    free(r->prompts);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

/* ---- JSON writer ---- */

void fe_jw_init(fe_jw_t *w, lt_buf_t *b) {
    memset(w, 0, sizeof *w);
    w->b = b;
    w->first[0] = true;
}

static void put(fe_jw_t *w, const char *s, size_t n) {
    if (!w->err && lt_buf_put(w->b, s, n)) w->err = LT_ERR_NOMEM;
}

/* a comma before every value but the first of its container (not after a key) */
static void sep(fe_jw_t *w) {
    if (!w->first[w->depth]) put(w, ",", 1);
    w->first[w->depth] = false;
}

static void open_(fe_jw_t *w, char c) {
    sep(w);
    put(w, &c, 1);
    if (w->depth < 31) w->depth++;
    w->first[w->depth] = true;
}

void fe_jw_obj(fe_jw_t *w) {
    open_(w, '{');
}

void fe_jw_arr(fe_jw_t *w) {
    open_(w, '[');
}

void fe_jw_end(fe_jw_t *w, char close) {
    put(w, &close, 1);
    if (w->depth > 0) w->depth--;
}

static void escaped(fe_jw_t *w, const char *s, size_t n) {
    put(w, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        put(w, s + run, i - run);
        run = i + 1;
        char esc[8];
        switch (ch) {
        case '"': put(w, "\\\"", 2); break;
        case '\\': put(w, "\\\\", 2); break;
        case '\n': put(w, "\\n", 2); break;
        case '\r': put(w, "\\r", 2); break;
        case '\t': put(w, "\\t", 2); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", ch); put(w, esc, 6);
        }
    }
    put(w, s + run, n - run);
    put(w, "\"", 1);
}

void fe_jw_key(fe_jw_t *w, const char *k) {
    sep(w);
    escaped(w, k, strlen(k));
    put(w, ":", 1);
    w->first[w->depth] = true; /* the value that follows takes no comma */
}

/* after a key the value must not add a comma, but the next key must: restore */
static void value_done(fe_jw_t *w) {
    w->first[w->depth] = false;
}

void fe_jw_str(fe_jw_t *w, const char *s, size_t n) {
    sep(w);
    escaped(w, s, n);
    value_done(w);
}

void fe_jw_cstr(fe_jw_t *w, const char *s) {
    if (!s) {
        fe_jw_null(w);
        return;
    }
    fe_jw_str(w, s, strlen(s));
}

void fe_jw_raw(fe_jw_t *w, const char *s) {
    sep(w);
    put(w, s, strlen(s));
    value_done(w);
}

void fe_jw_int(fe_jw_t *w, long long v) {
    char t[32];
    snprintf(t, sizeof t, "%lld", v);
    fe_jw_raw(w, t);
}

void fe_jw_num(fe_jw_t *w, double v) {
    if (!isfinite(v)) {
        /* OpenAI clients expect a number for a logprob; -9999 is what OpenAI sends for -inf */
        fe_jw_raw(w, v < 0 ? "-9999.0" : "null");
        return;
    }
    char t[32];
    snprintf(t, sizeof t, "%.9g", v);
    fe_jw_raw(w, t);
}

void fe_jw_bool(fe_jw_t *w, bool v) {
    fe_jw_raw(w, v ? "true" : "false");
}

void fe_jw_null(fe_jw_t *w) {
    fe_jw_raw(w, "null");
}
