/*
 * generate.c — `lantern generate`: runs a prompt through the full process tree (liblantern:
 * engine-core and tensor-parallel workers) and decodes greedily, printing the generated token ids
 * on stdout and the prefill and decode throughput on stderr. `--in-process` runs the same model
 * in this process instead, without the engine: the single-process reference path.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lantern.h"
#include "lt.h"

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

static void gen_usage(FILE *f) {
    fprintf(
        f, "usage: lantern generate [--model PATH] --prompt-ids 1,2,3 [--max-tokens N]\n"
           "                        [--threads N] [--ignore-eos] [--tensor-parallel-size N]\n"
           "                        [--in-process]\n"
           "\n"
           "  --model PATH       GGUF file or Hugging Face directory (default: the default model,\n"
           "                     SmolLM2-135M-Instruct Q4_1, fetched by tools/setup.sh)\n"
           "  --prompt-ids IDS   prompt as comma-separated token ids\n"
           "  --max-tokens N     tokens to generate (default 16)\n"
           "  --threads N        CPU threads (default: all cores)\n"
           "  --ignore-eos       keep generating after the end-of-sequence token\n"
           "  --tensor-parallel-size N\n"
           "                     worker processes sharing the model (default 1)\n"
           "  --in-process       run the model in this process, without the engine\n"
           "\n"
           "Prints the generated ids, comma-separated, on stdout; prefill and decode speed on\n"
           "stderr.\n");
}

/* The process-tree path: one request through liblantern. */
static int generate_engine(const char *model, const int *prompt, int n_prompt, int max_tokens,
                           bool ignore_eos, int tp, int threads) {
    char err[LT_ERR_LEN];
    lantern_engine_args_t a;
    lantern_engine_args_default(&a);
    a.model = model;
    a.tensor_parallel_size = tp;
    a.threads_per_worker = threads;
    a.max_num_seqs = 8;
    if (n_prompt > a.max_num_batched_tokens) a.max_num_batched_tokens = n_prompt;
    a.max_model_len = n_prompt + max_tokens; /* capped by the model's own context */
    uint64_t t0 = lt_now_ns();
    lantern_t *l;
    if (lantern_create(&a, &l, err)) {
        fprintf(stderr, "lantern generate: %s\n", err);
        return 1;
    }
    uint64_t t_ready = lt_now_ns();
    lantern_model_info_t info;
    lantern_model_info(l, &info);
    int status = 1;
    for (int i = 0; i < n_prompt; i++) {
        if (prompt[i] >= info.vocab_size) {
            fprintf(stderr, "lantern generate: token id %d is outside the vocabulary (%d)\n",
                    prompt[i], info.vocab_size);
            goto out;
        }
    }
    if (n_prompt + max_tokens > info.max_model_len) {
        fprintf(stderr,
                "lantern generate: prompt (%d tokens) + max tokens (%d) exceeds the model's "
                "context of %d\n",
                n_prompt, max_tokens, info.max_model_len);
        goto out;
    }
    lantern_request_t r;
    lantern_request_default(&r);
    r.prompt = (const int32_t *)prompt;
    r.n_prompt = n_prompt;
    r.max_tokens = max_tokens;
    r.ignore_eos = ignore_eos;
    uint64_t id;
    if (max_tokens == 0) {
        printf("\n");
        status = 0;
        goto out;
    }
    if (lantern_submit(l, &r, &id, err)) {
        fprintf(stderr, "lantern generate: %s\n", err);
        goto out;
    }
    lantern_token_t toks[64];
    lantern_output_t o = {.tokens = toks, .tokens_cap = 64};
    int n_gen = 0;
    for (;;) {
        int rc = lantern_next(l, id, &o, -1, err);
        if (rc < 0) {
            fprintf(stderr, "lantern generate: %s\n", err);
            goto out;
        }
        for (int i = 0; i < o.n_tokens; i++) printf(n_gen++ ? ",%d" : "%d", toks[i].id);
        fflush(stdout);
        if (o.finish != LANTERN_FINISH_NONE) break;
    }
    printf("\n");
    if (o.finish == LANTERN_FINISH_ERROR || o.finish == LANTERN_FINISH_ABORT) {
        fprintf(stderr, "lantern generate: request failed: %s\n", o.error[0] ? o.error : "aborted");
        goto out;
    }
    int n_dec = n_gen > 0 ? n_gen - 1 : 0;
    fprintf(stderr, "load: %.3f s (engine and %d worker(s) started)\n", (t_ready - t0) / 1e9, tp);
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s)\n", n_prompt, o.prefill_s,
            o.prefill_s > 0 ? n_prompt / o.prefill_s : 0.0);
    fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s)\n", n_dec, o.decode_s,
            n_dec > 0 && o.decode_s > 0 ? n_dec / o.decode_s : 0.0);
    status = 0;
out:
    lantern_destroy(&l);
    return status;
}

int fe_cmd_generate(int argc, char **argv, fe_in_process_fn run_in_process) {
    for (int i = 1; i < argc; i++) /* text in, text out */
        if (strcmp(argv[i], "--prompt") == 0 || strcmp(argv[i], "--chat") == 0 ||
            strncmp(argv[i], "--prompt=", 9) == 0 || strncmp(argv[i], "--chat=", 7) == 0)
            return fe_generate_text(argc, argv);
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"prompt-ids", required_argument, 0, 'p'},
                                         {"max-tokens", required_argument, 0, 'n'},
                                         {"threads", required_argument, 0, 't'},
                                         {"ignore-eos", no_argument, 0, 'e'},
                                         {"help", no_argument, 0, 'h'},
                                         {"tensor-parallel-size", required_argument, 0, 'P'},
                                         {"in-process", no_argument, 0, 'I'},
                                         {0, 0, 0, 0}};
    const char *model_path = NULL, *prompt_ids = NULL;
    long max_tokens = 16, threads = 0;
    bool ignore_eos = false, in_process = false;
    long tp = 1;
    char *end;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model_path = optarg; break;
        case 'p': prompt_ids = optarg; break;
        case 'n':
            max_tokens = strtol(optarg, &end, 10);
            if (*end || max_tokens < 0 || max_tokens > 1000000) {
                fprintf(stderr, "lantern generate: --max-tokens must be 0..1000000\n");
                return 2;
            }
            break;
        case 't':
            threads = strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 1024) {
                fprintf(stderr, "lantern generate: --threads must be 1..1024\n");
                return 2;
            }
            break;
        case 'e': ignore_eos = true; break;
        case 'I': in_process = true; break;
        case 'P':
            tp = strtol(optarg, &end, 10);
            if (*end || tp < 1 || tp > 64) {
                fprintf(stderr, "lantern generate: --tensor-parallel-size must be 1..64\n");
                return 2;
            }
            break;
        case 'h': gen_usage(stdout); return 0;
        default: gen_usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lantern generate: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!prompt_ids) {
        fprintf(stderr, "lantern generate: --prompt-ids is required\n");
        gen_usage(stderr);
        return 2;
    }
    char err[LT_ERR_LEN];
    int *prompt;
    int n_prompt = fe_parse_ids(prompt_ids, &prompt, err);
    if (n_prompt < 0) {
        fprintf(stderr, "lantern generate: %s\n", err);
        return 2;
    }
    char defpath[4096];
    if (!model_path) model_path = lt_default_model_path(defpath, sizeof defpath);
    if (!in_process) {
        int st = generate_engine(model_path, prompt, n_prompt, (int)max_tokens, ignore_eos, (int)tp,
                                 (int)threads);
        free(prompt);
        return st;
    }
    if (!run_in_process) {
        fprintf(stderr, "lantern generate: --in-process is not available in this build\n");
        free(prompt);
        return 2;
    }
    int st =
        run_in_process(model_path, prompt, n_prompt, (int)max_tokens, ignore_eos, (int)threads);
    free(prompt);
    return st;
}
