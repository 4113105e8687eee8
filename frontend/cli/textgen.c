/*
 * textgen.c — `lantern generate --prompt TEXT` / `--chat MESSAGE [--system TEXT]`: text in, text
 * out, through the process tree. The prompt is tokenized here (the frontend owns the tokenizer),
 * a chat is rendered first with the model's own chat template; the tokens stream back through
 * the incremental detokenizer and the stop-string matcher and are written to stdout as they are
 * released. Sampling flags carry the OpenAI parameter names.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "cli.h"
#include "gguf.h"
#include "lantern.h"
#include "lt.h"
#include "stop.h"
#include "tokenizer.h"
#include "model_config.h"

/* ---- the model's chat template ---- */

int fe_chat_template_source(const char *model_path, char **src, char *err) {
    *src = NULL;
    if (!lt_is_dir(model_path)) {
        lt_gguf_t *g;
        int rc = lt_gguf_open(model_path, &g, err);
        if (rc) return rc;
        const char *s;
        size_t len;
        rc = lt_gguf_get_str(g, "tokenizer.chat_template", &s, &len);
        if (rc == LT_OK) {
            *src = strndup(s, len);
            if (!*src) rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
        } else {
            rc = lt_errf(err, LT_ERR_NOTFOUND, "%s: the model has no chat template", model_path);
        }
        lt_gguf_close(&g);
        return rc;
    }
    char path[4200], *text;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model_path);
    int rc = lt_read_file(path, &text, NULL, err);
    if (rc) return rc;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) return lt_errf(err, LT_ERR_FORMAT, "%s: not valid JSON", path);
    const cJSON *t = cJSON_GetObjectItem(j, "chat_template");
    const char *found = NULL;
    if (cJSON_IsString(t)) {
        found = t->valuestring;
    } else if (cJSON_IsArray(t)) { /* [{"name": "default", "template": ...}, ...] */
        const cJSON *it;
        cJSON_ArrayForEach(it, t) {
            const cJSON *name = cJSON_GetObjectItem(it, "name");
            const cJSON *tpl = cJSON_GetObjectItem(it, "template");
            if (cJSON_IsString(tpl) &&
                (!found || (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0)))
                found = tpl->valuestring;
        }
    }
    rc = found ? ((*src = strdup(found)) ? LT_OK : LT_ERR_NOMEM)
               : lt_errf(err, LT_ERR_NOTFOUND, "%s: no chat_template", path);
    cJSON_Delete(j);
    return rc;
}

/* Renders [system], user with the model's template and the generation prompt. */
static int render_chat(const char *model, const fe_tokenizer_t *tok, const char *system,
                       const char *user, char **out, char *err) {
    char *src;
    int rc = fe_chat_template_source(model, &src, err);
    if (rc) return rc;
    fe_chat_template_t *tpl;
    rc = fe_chat_template_compile(src, strlen(src), &tpl, err);
    free(src);
    if (rc) return rc;
    cJSON *ctx = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(ctx, "messages");
    if (system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system);
        cJSON_AddItemToArray(msgs, m);
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", user);
    cJSON_AddItemToArray(msgs, m);
    cJSON_AddBoolToObject(ctx, "add_generation_prompt", 1);
    int32_t bos = fe_tokenizer_bos(tok), eos = fe_tokenizer_eos(tok);
    cJSON_AddStringToObject(ctx, "bos_token", bos >= 0 ? fe_tokenizer_token_text(tok, bos) : "");
    cJSON_AddStringToObject(ctx, "eos_token", eos >= 0 ? fe_tokenizer_token_text(tok, eos) : "");
    rc = fe_chat_template_render(tpl, ctx, out, err);
    cJSON_Delete(ctx);
    fe_chat_template_destroy(&tpl);
    return rc;
}

/* ---- options ---- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: lantern generate [--model PATH] (--prompt TEXT | --chat MESSAGE [--system "
            "TEXT])\n"
            "                        [--max-tokens N] [--min-tokens N] [--temperature T]\n"
            "                        [--top-p P] [--top-k K] [--min-p P] [--seed N]\n"
            "                        [--presence-penalty X] [--frequency-penalty X]\n"
            "                        [--repetition-penalty X] [--stop TEXT]... [--stop-token-ids "
            "IDS]\n"
            "                        [--ignore-eos] [--tensor-parallel-size N] [--threads N]\n"
            "\n"
            "Streams the generated text to stdout. --chat renders the conversation with the\n"
            "model's own chat template. Sampling defaults come from the model's\n"
            "generation_config.json, then OpenAI's (temperature 1, top_p 1).\n");
}

bool fe_parse_float(const char *s, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !(v >= lo && v <= hi)) return false;
    *out = (float)v;
    return true;
}

bool fe_parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

int fe_generate_text(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"prompt", required_argument, 0, 'p'},
                                         {"chat", required_argument, 0, 'c'},
                                         {"system", required_argument, 0, 'S'},
                                         {"max-tokens", required_argument, 0, 'n'},
                                         {"min-tokens", required_argument, 0, 'N'},
                                         {"temperature", required_argument, 0, 'T'},
                                         {"top-p", required_argument, 0, 'P'},
                                         {"top-k", required_argument, 0, 'K'},
                                         {"min-p", required_argument, 0, 'M'},
                                         {"seed", required_argument, 0, 's'},
                                         {"presence-penalty", required_argument, 0, 'r'},
                                         {"frequency-penalty", required_argument, 0, 'f'},
                                         {"repetition-penalty", required_argument, 0, 'R'},
                                         {"stop", required_argument, 0, 'x'},
                                         {"stop-token-ids", required_argument, 0, 'X'},
                                         {"ignore-eos", no_argument, 0, 'e'},
                                         {"tensor-parallel-size", required_argument, 0, 'z'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *prompt = NULL, *chat = NULL, *system = NULL;
    const char *stops[FE_MAX_STOPS];
    int n_stops = 0;
    int *stop_ids = NULL, n_stop_ids = 0;
    long max_tokens = 256, min_tokens = 0, top_k = 0, tp = 1, threads = 0, seed = -1;
    float temperature = -1, top_p = -1, min_p = 0, pres = 0, freq = 0, rep = -1;
    bool ignore_eos = false, ok = true;
    char err[LT_ERR_LEN];
    int o, li = 0;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, &li)) != -1) {
        long v;
        switch (o) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'c': chat = optarg; break;
        case 'S': system = optarg; break;
        case 'n': ok = fe_parse_long(optarg, 0, 1000000, &max_tokens); break;
        case 'N': ok = fe_parse_long(optarg, 0, 1000000, &min_tokens); break;
        case 'T': ok = fe_parse_float(optarg, 0, 100, &temperature); break;
        case 'P': ok = fe_parse_float(optarg, 1e-6f, 1, &top_p); break;
        case 'K': ok = fe_parse_long(optarg, -1, 1 << 24, &top_k); break;
        case 'M': ok = fe_parse_float(optarg, 0, 1, &min_p); break;
        case 's': ok = fe_parse_long(optarg, 0, 0x7fffffffffffffffL, &seed); break;
        case 'r': ok = fe_parse_float(optarg, -2, 2, &pres); break;
        case 'f': ok = fe_parse_float(optarg, -2, 2, &freq); break;
        case 'R': ok = fe_parse_float(optarg, 1e-6f, 10, &rep); break;
        case 'x':
            if (n_stops == FE_MAX_STOPS) {
                fprintf(stderr, "lantern generate: at most %d --stop strings\n", FE_MAX_STOPS);
                return 2;
            }
            stops[n_stops++] = optarg;
            break;
        case 'X':
            free(stop_ids);
            n_stop_ids = fe_parse_ids(optarg, &stop_ids, err);
            ok = n_stop_ids >= 0;
            break;
        case 'e': ignore_eos = true; break;
        case 'z': ok = fe_parse_long(optarg, 1, 64, &tp); break;
        case 't': ok = fe_parse_long(optarg, 1, 1024, &v) && (threads = v, true); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (!ok) {
            fprintf(stderr, "lantern generate: invalid value '%s' for --%s\n", optarg,
                    opts[li].name);
            return 2;
        }
    }
    if (optind < argc || (!prompt == !chat) || (system && !chat)) {
        fprintf(stderr, optind < argc ? "lantern generate: unexpected argument\n"
                                      : "lantern generate: give exactly one of --prompt and "
                                        "--chat (--system goes with --chat)\n");
        return 2;
    }
    char defpath[4096];
    if (!model) model = lt_default_model_path(defpath, sizeof defpath);

    int status = 1;
    fe_tokenizer_t *tok = NULL;
    fe_detok_t *detok = NULL;
    lantern_t *l = NULL;
    char *rendered = NULL;
    int32_t *ids = NULL;
    int n_ids = 0;
    fe_stopper_t stopper;
    lt_buf_t out = {0};
    bool stopper_ok = false;
    if (fe_tokenizer_load(model, &tok, err)) goto fail;
    if (chat) {
        if (render_chat(model, tok, system, chat, &rendered, err) ||
            fe_tokenizer_encode(tok, rendered, strlen(rendered), false, true, &ids, &n_ids, err))
            goto fail;
    } else if (fe_tokenizer_encode(tok, prompt, strlen(prompt), true, true, &ids, &n_ids, err)) {
        goto fail;
    }
    if (n_ids == 0) {
        lt_errf(err, LT_ERR_INVAL, "the prompt has no tokens");
        goto fail;
    }
    if (fe_stopper_init(&stopper, stops, n_stops, false, err) || !(stopper_ok = true) ||
        fe_detok_create(tok, true, &detok, err))
        goto fail;
    /* sampling defaults: the model's generation config, then OpenAI's */
    lt_model_config_t gc;
    lt_model_config_defaults(&gc);
    if (lt_is_dir(model)) lt_model_config_from_hf_dir(model, &gc, err);
    lantern_engine_args_t a;
    lantern_engine_args_default(&a);
    a.model = model;
    a.tensor_parallel_size = (int)tp;
    a.threads_per_worker = (int)threads;
    a.max_num_seqs = 4;
    if (n_ids > a.max_num_batched_tokens) a.max_num_batched_tokens = n_ids;
    a.max_model_len = n_ids + (int)max_tokens;
    if (lantern_create(&a, &l, err)) goto fail;
    lantern_model_info_t info;
    lantern_model_info(l, &info);
    if (n_ids + max_tokens > info.max_model_len) {
        lt_errf(err, LT_ERR_RANGE,
                "prompt (%d tokens) + max tokens (%ld) exceeds the model's context of %d", n_ids,
                max_tokens, info.max_model_len);
        goto fail;
    }
    lantern_request_t r;
    lantern_request_default(&r);
    r.prompt = ids;
    r.n_prompt = n_ids;
    r.max_tokens = (int)max_tokens;
    r.min_tokens = (int)min_tokens;
    r.ignore_eos = ignore_eos;
    r.stop_token_ids = stop_ids;
    r.n_stop_token_ids = n_stop_ids;
    lantern_sampling_t *sp = &r.sampling;
    sp->temperature = temperature >= 0          ? temperature
                      : gc.gen_temperature >= 0 ? gc.gen_temperature
                                                : 1.0f;
    sp->top_p = top_p > 0 ? top_p : gc.gen_top_p > 0 ? gc.gen_top_p : 1.0f;
    sp->top_k = top_k ? (int)top_k : gc.gen_top_k > 0 ? gc.gen_top_k : 0;
    sp->min_p = min_p;
    sp->presence_penalty = pres;
    sp->frequency_penalty = freq;
    sp->repetition_penalty = rep > 0                         ? rep
                             : gc.gen_repetition_penalty > 0 ? gc.gen_repetition_penalty
                                                             : 1.0f;
    sp->has_seed = seed >= 0;
    sp->seed = (uint64_t)seed;
    uint64_t id;
    if (max_tokens == 0) {
        status = 0;
        goto done;
    }
    if (lantern_submit(l, &r, &id, err)) goto fail;
    lantern_token_t toks[64];
    lantern_output_t o2 = {.tokens = toks, .tokens_cap = 64};
    bool stopped = false;
    int n_gen = 0;
    for (;;) {
        int rc = lantern_next(l, id, &o2, -1, err);
        if (rc < 0) goto fail;
        for (int i = 0; i < o2.n_tokens && !stopped; i++) {
            const char *t;
            size_t tl;
            n_gen++;
            if (fe_detok_feed(detok, toks[i].id, &t, &tl, err)) goto fail;
            lt_buf_clear(&out);
            if (fe_stopper_feed(&stopper, t, tl, &out) == 1) stopped = true;
            fwrite(out.data ? out.data : "", 1, out.len, stdout);
            fflush(stdout);
        }
        if (stopped && o2.finish == LANTERN_FINISH_NONE) {
            lantern_abort(l, id); /* the engine frees its blocks; wait for its last output */
            stopped = true;
        }
        if (o2.finish != LANTERN_FINISH_NONE) break;
    }
    if (!stopped) {
        const char *t;
        size_t tl;
        if (fe_detok_flush(detok, &t, &tl, err)) goto fail;
        lt_buf_clear(&out);
        if (fe_stopper_feed(&stopper, t, tl, &out) != 1) fe_stopper_flush(&stopper, &out);
        fwrite(out.data ? out.data : "", 1, out.len, stdout);
    }
    printf("\n");
    fflush(stdout);
    if (o2.finish == LANTERN_FINISH_ERROR) {
        lt_errf(err, LT_ERR_IO, "request failed: %s", o2.error);
        goto fail;
    }
    fprintf(stderr, "prompt: %d tokens, generated: %d tokens (%s), prefill %.3f s, decode %.3f s\n",
            n_ids, n_gen,
            stopped                            ? "stop string"
            : o2.finish == LANTERN_FINISH_STOP ? "stop"
                                               : "length",
            o2.prefill_s, o2.decode_s);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "lantern generate: %s\n", err);
done:
    lantern_destroy(&l);
    fe_detok_destroy(&detok);
    if (stopper_ok) fe_stopper_fini(&stopper);
    lt_buf_free(&out);
    fe_tokenizer_destroy(&tok);
    free(rendered);
    free(ids);
    free(stop_ids);
    return status;
}
