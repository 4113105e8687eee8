/*
 * generate.c — `lantern generate`: one request through the full process tree (liblantern:
 * engine-core and tensor-parallel workers), from the command line. Two modes:
 *
 *   text   --prompt TEXT | --chat MESSAGE [--system TEXT]: tokenized here with the model's own
 *          tokenizer (a chat rendered first with its own chat template), sampled with the
 *          OpenAI-named flags, and streamed back as text through the incremental detokenizer
 *          and the stop strings;
 *   ids    --prompt-ids 1,2,3: greedy decoding of token ids, printing the generated ids and the
 *          prefill/decode throughput; `--in-process` runs the same model in this process instead
 *          (the single-process reference path, handed in by the executable).
 *
 * The request's parameters are resolved the way `lantern serve` resolves them (one set of
 * defaults: fe_oai_params_defaults; one check: ipc_params_check), and the engine flags are the
 * same as every command's (ipc/args.h).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "cli.h"
#include "lantern.h"
#include "lt.h"
#include "oai.h"
#include "proc.h"
#include "stop.h"
#include "telemetry.h"
#include "tokenizer.h"

/* ---- options ---- */

enum {
    OPT_PROMPT = 1,
    OPT_CHAT,
    OPT_SYSTEM,
    OPT_IDS,
    OPT_IN_PROCESS,
    OPT_REQUEST_ID,
    OPT_TRACEPARENT,
    OPT_HELP,
    OPT_MAX_TOKENS,
    OPT_IGNORE_EOS,
    /* sampling and stopping: text mode only */
    OPT_SAMPLING_FIRST,
    OPT_MIN_TOKENS = OPT_SAMPLING_FIRST,
    OPT_TEMPERATURE,
    OPT_TOP_P,
    OPT_TOP_K,
    OPT_MIN_P,
    OPT_SEED,
    OPT_PRESENCE,
    OPT_FREQUENCY,
    OPT_REPETITION,
    OPT_STOP,
    OPT_STOP_IDS,
};

typedef struct gen_opts {
    lantern_engine_args_t args;
    const char *prompt, *chat, *system, *prompt_ids, *request_id, *traceparent;
    bool in_process, ignore_eos;
    long long max_tokens; /* -1: the mode's default */
    /* sampling flags in command-line order, applied over the model's defaults */
    int n_sampling;
    int sampling_opt[64];
    const char *sampling_arg[64];
    int n_stops;
    const char *stops[FE_MAX_STOPS];
} gen_opts_t;

static void usage(FILE *f) {
    fprintf(f,
            "usage: lantern generate (--prompt TEXT | --chat MESSAGE [--system TEXT] |\n"
            "                         --prompt-ids IDS [--in-process]) [options]\n"
            "\n"
            "modes:\n"
            "  --prompt TEXT          complete TEXT, tokenized with the model's own tokenizer;\n"
            "                         the text streams to stdout\n"
            "  --chat MESSAGE         a one-turn chat rendered with the model's chat template\n"
            "  --system TEXT          a system message before it (with --chat)\n"
            "  --prompt-ids IDS       token ids in (comma-separated), greedy ids out on stdout,\n"
            "                         load/prefill/decode speed on stderr\n"
            "  --in-process           (ids mode) run the model in this process, without the\n"
            "                         engine: the single-process reference path\n"
            "\n"
            "request:\n"
            "  --max-tokens N         tokens to generate (text: 256, ids: 16)\n"
            "  --ignore-eos           keep generating after the end-of-sequence token\n"
            "  --request-id ID        the request's id in every process's logs and dumps\n"
            "  --traceparent TP       the W3C trace context of the caller's span\n"
            "\n"
            "sampling (text modes; OpenAI's names and ranges; defaults come from the model's\n"
            "generation_config.json, then OpenAI's: temperature 1, top_p 1):\n"
            "  --temperature T  --top-p P  --top-k K  --min-p P  --seed N  --min-tokens N\n"
            "  --presence-penalty X  --frequency-penalty X  --repetition-penalty X\n"
            "  --stop TEXT (repeatable)  --stop-token-ids IDS\n"
            "\n");
    ipc_engine_args_help(f);
}

int fe_parse_ids(const char *s, int **out, char *err) {
    *out = NULL;
    int n = 0, cap = 64;
    int *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return lt_errf(err, -1, "out of memory");
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT_MAX) {
            free(ids);
            return lt_errf(err, -1, "bad token id list '%s': expected comma-separated integers", s);
        }
        if (n == cap) {
            cap *= 2;
            int *nb = realloc(ids, (size_t)cap * sizeof *ids);
            if (!nb) {
                free(ids);
                return lt_errf(err, -1, "out of memory");
            }
            ids = nb;
        }
        ids[n++] = (int)v;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',')
            p++;
        else if (*p) {
            free(ids);
            return lt_errf(err, -1, "bad token id list '%s': unexpected '%c'", s, *p);
        }
    }
    if (n == 0) {
        free(ids);
        return lt_errf(err, -1, "empty token id list");
    }
    *out = ids;
    return n;
}

/* 0 to go on; else the exit status (-1: --help, status 0). */
static int parse_opts(int argc, char **argv, gen_opts_t *o) {
    static const struct option own[] = {
        {"prompt", required_argument, 0, OPT_PROMPT},
        {"chat", required_argument, 0, OPT_CHAT},
        {"system", required_argument, 0, OPT_SYSTEM},
        {"prompt-ids", required_argument, 0, OPT_IDS},
        {"in-process", no_argument, 0, OPT_IN_PROCESS},
        {"request-id", required_argument, 0, OPT_REQUEST_ID},
        {"traceparent", required_argument, 0, OPT_TRACEPARENT},
        {"help", no_argument, 0, OPT_HELP},
        {"max-tokens", required_argument, 0, OPT_MAX_TOKENS},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"min-tokens", required_argument, 0, OPT_MIN_TOKENS},
        {"temperature", required_argument, 0, OPT_TEMPERATURE},
        {"top-p", required_argument, 0, OPT_TOP_P},
        {"top-k", required_argument, 0, OPT_TOP_K},
        {"min-p", required_argument, 0, OPT_MIN_P},
        {"seed", required_argument, 0, OPT_SEED},
        {"presence-penalty", required_argument, 0, OPT_PRESENCE},
        {"frequency-penalty", required_argument, 0, OPT_FREQUENCY},
        {"repetition-penalty", required_argument, 0, OPT_REPETITION},
        {"stop", required_argument, 0, OPT_STOP},
        {"stop-token-ids", required_argument, 0, OPT_STOP_IDS},
    };
    struct option opts[48];
    ipc_engine_opts_table(own, (int)(sizeof own / sizeof own[0]), opts, 48);
    memset(o, 0, sizeof *o);
    ipc_engine_args_defaults(&o->args);
    o->max_tokens = -1;
    int c;
    optind = 1;
    while ((c = ipc_engine_getopt(argc, argv, opts, &o->args, "lantern generate")) != -1) {
        if (c == IPC_OPT_BAD) return 2;
        switch (c) {
        case OPT_PROMPT: o->prompt = optarg; break;
        case OPT_CHAT: o->chat = optarg; break;
        case OPT_SYSTEM: o->system = optarg; break;
        case OPT_IDS: o->prompt_ids = optarg; break;
        case OPT_IN_PROCESS: o->in_process = true; break;
        case OPT_REQUEST_ID: o->request_id = optarg; break;
        case OPT_TRACEPARENT: o->traceparent = optarg; break;
        case OPT_IGNORE_EOS: o->ignore_eos = true; break;
        case OPT_MAX_TOKENS:
            if (!lt_parse_long(optarg, 0, 1000000, &o->max_tokens)) {
                fprintf(stderr, "lantern generate: --max-tokens must be 0..1000000\n");
                return 2;
            }
            break;
        case OPT_STOP:
            if (o->n_stops == FE_MAX_STOPS) {
                fprintf(stderr, "lantern generate: at most %d --stop strings\n", FE_MAX_STOPS);
                return 2;
            }
            o->stops[o->n_stops++] = optarg;
            break;
        case OPT_HELP: usage(stdout); return -1;
        default:
            if (c < OPT_SAMPLING_FIRST || c > OPT_STOP_IDS || o->n_sampling == 64) {
                usage(stderr);
                return 2;
            }
            o->sampling_opt[o->n_sampling] = c;
            o->sampling_arg[o->n_sampling++] = optarg;
        }
    }
    const char *why = NULL;
    int modes = !!o->prompt + !!o->chat + !!o->prompt_ids;
    if (optind < argc)
        why = "unexpected argument";
    else if (modes != 1)
        why = "give exactly one of --prompt, --chat and --prompt-ids";
    else if (o->system && !o->chat)
        why = "--system goes with --chat";
    else if (o->in_process && !o->prompt_ids)
        why = "--in-process goes with --prompt-ids";
    else if (o->prompt_ids && (o->n_sampling || o->n_stops))
        why = "--prompt-ids decodes greedily: sampling and stop flags need --prompt or --chat";
    if (why) {
        if (optind < argc)
            fprintf(stderr, "lantern generate: unexpected argument '%s'\n", argv[optind]);
        else
            fprintf(stderr, "lantern generate: %s\n", why);
        return 2;
    }
    return 0;
}

/* The sampling flags over p (already defaulted), then the one range check. 0 or status 2. */
static int apply_sampling(const gen_opts_t *o, ipc_params_t *p) {
    char err[LT_ERR_LEN];
    for (int i = 0; i < o->n_sampling; i++) {
        const char *arg = o->sampling_arg[i];
        double d = 0;
        long long v = 0;
        bool ok = true;
        int opt = o->sampling_opt[i];
        if (opt == OPT_STOP_IDS) {
            int *ids;
            int n = fe_parse_ids(arg, &ids, err);
            ok = n >= 0 && n <= IPC_MAX_STOP_IDS;
            for (int k = 0; ok && k < n; k++) p->stop_ids[k] = ids[k];
            if (ok) p->n_stop_ids = n;
            if (n >= 0) free(ids);
        } else if (opt == OPT_MIN_TOKENS || opt == OPT_TOP_K || opt == OPT_SEED) {
            ok = lt_parse_long(arg, opt == OPT_TOP_K ? -1 : 0, LLONG_MAX, &v);
            if (opt == OPT_MIN_TOKENS) p->min_tokens = v > INT32_MAX ? INT32_MAX : (int32_t)v;
            if (opt == OPT_TOP_K) p->top_k = v < 0 ? 0 : v > INT32_MAX ? INT32_MAX : (int32_t)v;
            if (opt == OPT_SEED) p->has_seed = true, p->seed = (uint64_t)v;
        } else {
            ok = lt_parse_double(arg, -1e30, 1e30, &d);
            float f = (float)d;
            switch (opt) {
            case OPT_TEMPERATURE: p->temperature = f; break;
            case OPT_TOP_P: p->top_p = f; break;
            case OPT_MIN_P: p->min_p = f; break;
            case OPT_PRESENCE: p->presence_penalty = f; break;
            case OPT_FREQUENCY: p->frequency_penalty = f; break;
            case OPT_REPETITION: p->repetition_penalty = f; break;
            }
        }
        if (!ok) {
            fprintf(stderr, "lantern generate: invalid value '%s'\n", arg);
            return 2;
        }
    }
    if (ipc_params_check(p, 0, NULL, err)) {
        fprintf(stderr, "lantern generate: %s\n", err);
        return 2;
    }
    return 0;
}

/* ---- running one request ---- */

typedef struct gen_run {
    lantern_t *l;
    lantern_model_info_t info;
    uint64_t t_start, t_ready;
    bool traced;      /* tel_process_start ran: tel_process_stop is due */
    tel_span_t *span; /* the request's llm_request, with tracing on */
    char traceparent[TEL_TRACEPARENT_LEN + 1];
} gen_run_t;

/* Starts the engine and checks the prompt against the model (vocabulary, context). */
static int gen_start(const gen_opts_t *o, gen_run_t *g, const int32_t *ids, int n_ids,
                     int max_tokens, char *err) {
    g->t_start = lt_now_ns();
    lt_signals_install();
    tel_process_config_t tc = {.role = "frontend",
                               .rank = -1,
                               .tensor_parallel_size = o->args.tensor_parallel_size,
                               .otlp_endpoint = o->args.otlp_traces_endpoint};
    int rc = tel_process_start(&tc, err);
    if (rc) return rc;
    g->traced = true;
    if ((rc = lantern_create(&o->args, &g->l, err))) return rc;
    g->t_ready = lt_now_ns();
    lantern_model_info(g->l, &g->info);
    for (int i = 0; i < n_ids; i++)
        if (ids[i] >= g->info.vocab_size)
            return lt_errf(err, LT_ERR_INVAL, "token id %d is outside the vocabulary (%d)", ids[i],
                           g->info.vocab_size);
    if ((long long)n_ids + max_tokens > g->info.max_model_len)
        return lt_errf(err, LT_ERR_RANGE,
                       "prompt (%d tokens) + max tokens (%d) exceeds the model's context of %d",
                       n_ids, max_tokens, g->info.max_model_len);
    return LT_OK;
}

/* lantern_next, waking every 100 ms to serve signals: SIGUSR1 dumps the whole tree's state,
 * SIGTERM/SIGINT abort the request (its last output follows). */
static int gen_next(gen_run_t *g, uint64_t id, lantern_output_t *out, char *err) {
    for (;;) {
        int rc = lantern_next(g->l, id, out, 100, err);
        if (lt_sig_dump) {
            lt_sig_dump = 0;
            lantern_dump(g->l, NULL);
        }
        if (lt_sig_shutdown == 1) {
            lt_sig_shutdown = 2;
            lantern_abort(g->l, id);
        }
        if (rc != LANTERN_AGAIN) return rc;
    }
}

/* With tracing on, the request runs under an llm_request span of this process (a child of
 * --traceparent when given), whose context the engine receives. */
static int gen_submit(const gen_opts_t *o, gen_run_t *g, const int32_t *ids, int n_ids,
                      const ipc_params_t *p, uint64_t *id, char *err) {
    lantern_request_t r;
    lantern_request_default(&r);
    r.prompt = ids;
    r.n_prompt = n_ids;
    r.params = *p;
    r.request_id = o->request_id;
    r.traceparent = o->traceparent;
    tel_ctx_t parent = {0};
    if (o->traceparent && !tel_ctx_parse(o->traceparent, strlen(o->traceparent), &parent))
        return lt_errf(err, LT_ERR_INVAL, "--traceparent '%.80s' is not a W3C traceparent",
                       o->traceparent);
    if ((g->span = tel_span_start("llm_request", TEL_KIND_INTERNAL, &parent, 0))) {
        tel_ctx_t c = tel_span_ctx(g->span);
        tel_ctx_format(&c, g->traceparent);
        r.traceparent = g->traceparent;
        tel_span_set_int(g->span, "gen_ai.request.max_tokens", p->max_tokens);
        tel_span_set_double(g->span, "gen_ai.request.temperature", p->temperature);
        tel_span_set_str(g->span, "gen_ai.operation.name", "text_completion");
        tel_span_set_str(g->span, "gen_ai.provider.name", "lantern");
    }
    return lantern_submit(g->l, &r, id, err);
}

/* Ends the request's span (kept whatever the sampler said when the request failed), stops the
 * tree, and flushes this process's spans. */
static void gen_end(gen_run_t *g, const lantern_output_t *out, int n_prompt, int n_gen,
                    const char *error) {
    if (g->span) {
        tel_span_set_int(g->span, "gen_ai.usage.prompt_tokens", n_prompt);
        tel_span_set_int(g->span, "gen_ai.usage.completion_tokens", n_gen);
        tel_span_set_double(g->span, "gen_ai.latency.time_in_queue", out->queue_s);
        tel_span_set_double(g->span, "gen_ai.latency.time_to_first_token",
                            out->queue_s + out->prefill_s);
        tel_span_set_double(g->span, "gen_ai.latency.time_in_model_prefill", out->prefill_s);
        tel_span_set_double(g->span, "gen_ai.latency.time_in_model_decode", out->decode_s);
        if (error) tel_span_set_status(g->span, TEL_STATUS_ERROR, error);
        tel_span_submit(g->span, 0, error != NULL);
        g->span = NULL;
    }
    lantern_destroy(&g->l);
    if (g->traced) tel_process_stop(5000);
}

/* Ids mode through the tree: greedy ids on stdout, throughput on stderr. */
static int run_ids(const gen_opts_t *o, const int *prompt, int n_prompt) {
    char err[LT_ERR_LEN];
    ipc_params_t p;
    ipc_params_defaults(&p); /* greedy */
    p.max_tokens = o->max_tokens >= 0 ? (int)o->max_tokens : IPC_DEF_MAX_TOKENS;
    p.ignore_eos = o->ignore_eos;
    gen_run_t g = {0};
    int status = 1;
    uint64_t id;
    lantern_token_t toks[64];
    lantern_output_t out = {.tokens = toks, .tokens_cap = 64};
    int n_gen = 0;
    if (gen_start(o, &g, prompt, n_prompt, p.max_tokens, err)) goto fail;
    if (p.max_tokens == 0) {
        printf("\n");
        status = 0;
        goto done;
    }
    if (gen_submit(o, &g, prompt, n_prompt, &p, &id, err)) goto fail;
    do {
        if (gen_next(&g, id, &out, err) < 0) goto fail;
        for (int i = 0; i < out.n_tokens; i++) printf(n_gen++ ? ",%d" : "%d", toks[i].id);
        fflush(stdout);
    } while (out.finish == LANTERN_FINISH_NONE);
    printf("\n");
    if (out.finish == LANTERN_FINISH_ERROR || out.finish == LANTERN_FINISH_ABORT) {
        lt_errf(err, LT_ERR_IO, "request failed: %s", out.error[0] ? out.error : "aborted");
        goto fail;
    }
    int n_dec = n_gen > 0 ? n_gen - 1 : 0; /* the first token comes from the prefill */
    fprintf(stderr, "load: %.3f s (engine and %d worker(s) started)\n",
            (g.t_ready - g.t_start) / 1e9, o->args.tensor_parallel_size);
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s)\n", n_prompt, out.prefill_s,
            out.prefill_s > 0 ? n_prompt / out.prefill_s : 0.0);
    fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s)\n", n_dec, out.decode_s,
            n_dec > 0 && out.decode_s > 0 ? n_dec / out.decode_s : 0.0);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "lantern generate: %s\n", err);
done:
    gen_end(&g, &out, n_prompt, n_gen, status ? err : NULL);
    return status;
}

/* The text-mode prompt: the chat rendered with the model's template (the same code as
 * /v1/chat/completions), or the plain text; then its tokens. */
static int text_prompt(const gen_opts_t *o, const fe_oai_ctx_t *ctx, int32_t **ids, int *n_ids,
                       char *err) {
    char *text = NULL;
    size_t len = 0;
    bool add_special = true;
    if (o->chat) {
        cJSON *body = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(body, "messages");
        for (int i = o->system ? 0 : 1; i < 2; i++) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", i == 0 ? "system" : "user");
            cJSON_AddStringToObject(m, "content", i == 0 ? o->system : o->chat);
            cJSON_AddItemToArray(msgs, m);
        }
        fe_oai_error_t e;
        int rc = fe_oai_render_chat(ctx, body, &text, &len, &e);
        cJSON_Delete(body);
        if (rc) return lt_errf(err, LT_ERR_INVAL, "%s", e.message);
        add_special = false; /* the template writes the special tokens itself */
    }
    const char *t = text ? text : o->prompt;
    int rc = fe_tokenizer_encode(ctx->tok, t, text ? len : strlen(t), add_special, true, ids, n_ids,
                                 err);
    free(text);
    if (rc == 0 && *n_ids == 0) rc = lt_errf(err, LT_ERR_INVAL, "the prompt has no tokens");
    return rc;
}

/* Reads the request's outputs until it ends, writing released text to stdout. */
static int stream_text(gen_run_t *g, uint64_t id, fe_detok_t *detok, fe_stopper_t *stopper,
                       lantern_output_t *out, int *n_gen, bool *stopped, char *err) {
    lt_buf_t text = {0};
    int rc = 0;
    do {
        if ((rc = gen_next(g, id, out, err)) < 0) break;
        for (int i = 0; i < out->n_tokens && !*stopped; i++) {
            const char *t;
            size_t tl;
            (*n_gen)++;
            if ((rc = fe_detok_feed(detok, out->tokens[i].id, &t, &tl, err))) goto out;
            lt_buf_clear(&text);
            if (fe_stopper_feed(stopper, t, tl, &text) == 1) {
                *stopped = true;
                lantern_abort(g->l, id); /* the engine frees its blocks; its last output follows */
            }
            fwrite(lt_buf_str(&text), 1, text.len, stdout);
            fflush(stdout);
        }
    } while (out->finish == LANTERN_FINISH_NONE);
    if (rc == 0 && !*stopped) {
        const char *t;
        size_t tl;
        if ((rc = fe_detok_flush(detok, &t, &tl, err))) goto out;
        lt_buf_clear(&text);
        if (fe_stopper_feed(stopper, t, tl, &text) != 1) fe_stopper_flush(stopper, &text);
        fwrite(lt_buf_str(&text), 1, text.len, stdout);
    }
    printf("\n");
    fflush(stdout);
out:
    lt_buf_free(&text);
    return rc < 0 ? rc : 0;
}

/* Text mode: tokenizer and template here, the request through the tree, text out. */
static int run_text(const gen_opts_t *o) {
    char err[LT_ERR_LEN], *src = NULL;
    int status = 1, n_ids = 0, n_gen = 0;
    int32_t *ids = NULL;
    fe_tokenizer_t *tok = NULL;
    fe_chat_template_t *tpl = NULL;
    fe_detok_t *detok = NULL;
    fe_stopper_t stopper;
    bool stopper_ok = false, stopped = false;
    gen_run_t g = {0};
    lantern_token_t toks[64];
    lantern_output_t out = {.tokens = toks, .tokens_cap = 64};
    lt_model_config_t gen;
    lt_model_config_defaults(&gen);
    const char *model = o->args.model;
    if (lt_is_dir(model) && lt_model_config_from_hf_dir(model, &gen, err))
        LT_WARN("generation config: %s (OpenAI's defaults apply)", err);
    fe_oai_ctx_t ctx = {.gen = &gen};
    ipc_params_t p;
    fe_oai_params_defaults(&ctx, &p);
    p.max_tokens = o->max_tokens >= 0 ? (int)o->max_tokens : 256;
    p.ignore_eos = o->ignore_eos;
    if ((status = apply_sampling(o, &p))) return status;
    status = 1;
    if (fe_tokenizer_load(model, &tok, err)) goto fail;
    ctx.tok = tok;
    if (o->chat && (fe_chat_template_source(model, &src, err) ||
                    fe_chat_template_compile(src, strlen(src), &tpl, err)))
        goto fail;
    ctx.tpl = tpl;
    if (text_prompt(o, &ctx, &ids, &n_ids, err) ||
        fe_stopper_init(&stopper, o->stops, NULL, o->n_stops, false, err) || !(stopper_ok = true) ||
        fe_detok_create(tok, true, &detok, err) || gen_start(o, &g, ids, n_ids, p.max_tokens, err))
        goto fail;
    uint64_t id;
    if (p.max_tokens > 0) {
        if (gen_submit(o, &g, ids, n_ids, &p, &id, err) ||
            stream_text(&g, id, detok, &stopper, &out, &n_gen, &stopped, err))
            goto fail;
        if (out.finish == LANTERN_FINISH_ERROR) {
            lt_errf(err, LT_ERR_IO, "request failed: %s", out.error);
            goto fail;
        }
    }
    fprintf(stderr, "prompt: %d tokens, generated: %d tokens (%s), prefill %.3f s, decode %.3f s\n",
            n_ids, n_gen,
            stopped                             ? "stop string"
            : out.finish == LANTERN_FINISH_STOP ? "stop"
                                                : "length",
            out.prefill_s, out.decode_s);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "lantern generate: %s\n", err);
done:
    gen_end(&g, &out, n_ids, n_gen, status ? err : NULL);
    fe_detok_destroy(&detok);
    if (stopper_ok) fe_stopper_fini(&stopper);
    fe_chat_template_destroy(&tpl);
    fe_tokenizer_destroy(&tok);
    free(src);
    free(ids);
    return status;
}

int fe_cmd_generate(int argc, char **argv, fe_in_process_fn run_in_process) {
    gen_opts_t o;
    int st = parse_opts(argc, argv, &o);
    if (st) return st < 0 ? 0 : st;
    char defpath[4096];
    if (!o.args.model) o.args.model = lt_default_model_path(defpath, sizeof defpath);
    if (!o.prompt_ids) return run_text(&o);
    char err[LT_ERR_LEN];
    int *prompt;
    int n_prompt = fe_parse_ids(o.prompt_ids, &prompt, err);
    if (n_prompt < 0) {
        fprintf(stderr, "lantern generate: %s\n", err);
        return 2;
    }
    int max_tokens = o.max_tokens >= 0 ? (int)o.max_tokens : IPC_DEF_MAX_TOKENS;
    if (o.in_process && !run_in_process)
        fprintf(stderr, "lantern generate: --in-process is not available in this build\n");
    if (o.in_process)
        st = run_in_process ? run_in_process(o.args.model, prompt, n_prompt, max_tokens,
                                             o.ignore_eos, o.args.threads)
                            : 2;
    else
        st = run_ids(&o, prompt, n_prompt);
    free(prompt);
    return st;
}
