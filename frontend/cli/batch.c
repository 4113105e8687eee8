/*
 * batch.c — `lantern batch`: offline generation through the process tree. Reads requests as JSON
 * lines, runs up to --concurrency of them at once (one thread each, all sharing one liblantern
 * engine), writes one JSON line per request in input order, and prints a summary (throughput,
 * largest batch, prefix-cache hits, preemptions) as JSON on stdout. Used by the engine tests and
 * the offline throughput benchmark; SIGUSR1 makes the whole tree dump its state.
 *
 * Input line: {"prompt_ids": [..], "max_tokens": N, "min_tokens": N, "ignore_eos": bool,
 *              "temperature": x, "top_p": x, "top_k": n, "seed": n, "stop_token_ids": [..]}
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lantern.h"
#include "lt.h"
#include "proc.h"
#include "telemetry.h"

typedef struct job {
    lantern_t *l;
    sem_t *slots;
    int32_t *prompt;
    int n_prompt;
    lantern_request_t req;
    char rid[32]; /* "batch-<line>": the request id in every process's logs */
    /* results */
    int32_t *out;
    int n_out, cap_out;
    lantern_output_t last;
    char err[LT_ERR_LEN];
    int submit_rc;
    _Atomic uint64_t id; /* 0 until submitted */
    pthread_t th;
} job_t;

static void *job_main(void *arg) {
    job_t *j = arg;
    lantern_token_t toks[64];
    lantern_output_t o = {.tokens = toks, .tokens_cap = 64};
    uint64_t id;
    j->req.request_id = j->rid; /* here: the jobs array moved while it grew */
    /* with tracing on, each request runs under an llm_request span of its own trace */
    char tp[TEL_TRACEPARENT_LEN + 1];
    tel_span_t *span = tel_span_start("llm_request", TEL_KIND_INTERNAL, NULL, 0);
    if (span) {
        tel_ctx_t c = tel_span_ctx(span);
        tel_ctx_format(&c, tp);
        j->req.traceparent = tp;
        tel_span_set_str(span, "gen_ai.request.id", j->rid);
        tel_span_set_int(span, "gen_ai.request.max_tokens", j->req.params.max_tokens);
        tel_span_set_int(span, "gen_ai.usage.prompt_tokens", j->n_prompt);
    }
    j->submit_rc = lantern_submit(j->l, &j->req, &id, j->err);
    if (j->submit_rc == 0) {
        j->id = id;
        for (;;) {
            int rc = lantern_next(j->l, id, &o, -1, j->err);
            if (rc < 0) {
                j->submit_rc = rc;
                break;
            }
            for (int i = 0; i < o.n_tokens; i++) {
                if (j->n_out == j->cap_out) {
                    int cap = j->cap_out ? 2 * j->cap_out : 64;
                    int32_t *n = realloc(j->out, sizeof *n * (size_t)cap);
                    if (!n) break;
                    j->out = n;
                    j->cap_out = cap;
                }
                j->out[j->n_out++] = toks[i].id;
            }
            if (o.finish != LANTERN_FINISH_NONE) break;
        }
        j->last = o;
        j->last.tokens = NULL;
    }
    if (span) {
        bool failed = j->submit_rc || o.finish == LANTERN_FINISH_ERROR;
        tel_span_set_int(span, "gen_ai.usage.completion_tokens", j->n_out);
        tel_span_set_double(span, "gen_ai.latency.time_to_first_token", o.queue_s + o.prefill_s);
        if (failed) tel_span_set_status(span, TEL_STATUS_ERROR, j->err);
        tel_span_submit(span, 0, failed);
    }
    sem_post(j->slots);
    return NULL;
}

/* SIGTERM / SIGINT: abort every submitted request, so the batch ends promptly. */
static void serve_signals(lantern_t *l, job_t *jobs, int n) {
    if (lt_sig_dump) {
        lt_sig_dump = 0;
        lantern_dump(l, NULL);
    }
    if (lt_sig_shutdown == 1) {
        lt_sig_shutdown = 2;
        for (int i = 0; i < n; i++)
            if (jobs[i].id) lantern_abort(l, jobs[i].id);
    }
}

static int parse_job(const char *line, job_t *j, char *err) {
    cJSON *o = cJSON_Parse(line);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return lt_errf(err, LT_ERR_FORMAT, "not a JSON object");
    }
    lantern_request_default(&j->req);
    const cJSON *ids = cJSON_GetObjectItem(o, "prompt_ids");
    int n = cJSON_GetArraySize(ids);
    if (!cJSON_IsArray(ids) || n == 0) {
        cJSON_Delete(o);
        return lt_errf(err, LT_ERR_FORMAT, "prompt_ids must be a non-empty array");
    }
    j->prompt = malloc(sizeof(int32_t) * (size_t)n);
    j->n_prompt = n;
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(ids, i);
        if (!cJSON_IsNumber(v) || v->valuedouble < 0) {
            cJSON_Delete(o);
            return lt_errf(err, LT_ERR_FORMAT, "prompt_ids[%d] is not a token id", i);
        }
        j->prompt[i] = v->valueint;
    }
    j->req.prompt = j->prompt;
    j->req.n_prompt = n;
    ipc_params_t *p = &j->req.params;
    const cJSON *v;
    if ((v = cJSON_GetObjectItem(o, "max_tokens")) && cJSON_IsNumber(v))
        p->max_tokens = v->valueint;
    if ((v = cJSON_GetObjectItem(o, "min_tokens")) && cJSON_IsNumber(v))
        p->min_tokens = v->valueint;
    if ((v = cJSON_GetObjectItem(o, "ignore_eos"))) p->ignore_eos = cJSON_IsTrue(v);
    if ((v = cJSON_GetObjectItem(o, "temperature")) && cJSON_IsNumber(v))
        p->temperature = (float)v->valuedouble;
    if ((v = cJSON_GetObjectItem(o, "top_p")) && cJSON_IsNumber(v))
        p->top_p = (float)v->valuedouble;
    if ((v = cJSON_GetObjectItem(o, "top_k")) && cJSON_IsNumber(v)) p->top_k = v->valueint;
    if ((v = cJSON_GetObjectItem(o, "seed")) && cJSON_IsNumber(v)) {
        p->has_seed = true;
        p->seed = (uint64_t)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItem(o, "stop_token_ids")) && cJSON_IsArray(v)) {
        int k = cJSON_GetArraySize(v);
        if (k > IPC_MAX_STOP_IDS) k = IPC_MAX_STOP_IDS;
        for (int i = 0; i < k; i++) p->stop_ids[i] = cJSON_GetArrayItem(v, i)->valueint;
        p->n_stop_ids = k;
    }
    int rc = ipc_params_check(p, 0, NULL, err);
    cJSON_Delete(o);
    return rc;
}

static const char *finish_name(lantern_finish_t f) {
    switch (f) {
    case LANTERN_FINISH_STOP: return "stop";
    case LANTERN_FINISH_LENGTH: return "length";
    case LANTERN_FINISH_ABORT: return "abort";
    case LANTERN_FINISH_ERROR: return "error";
    default: return "none";
    }
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: lantern batch --input FILE [--output FILE] [--concurrency N] [engine options]\n"
            "\n"
            "Runs every JSON-lines request of FILE through the engine, at most N at once\n"
            "(default: all), writes one JSON line per request to --output (default: none)\n"
            "and a JSON summary on stdout. Request i is named batch-<i> in every process's\n"
            "logs and dumps.\n"
            "\n");
    ipc_engine_args_help(f);
}

enum { OPT_INPUT = 1, OPT_OUTPUT, OPT_CONCURRENCY, OPT_HELP };

int fe_cmd_batch(int argc, char **argv) {
    static const struct option own[] = {{"input", required_argument, 0, OPT_INPUT},
                                        {"output", required_argument, 0, OPT_OUTPUT},
                                        {"concurrency", required_argument, 0, OPT_CONCURRENCY},
                                        {"help", no_argument, 0, OPT_HELP}};
    struct option opts[32];
    ipc_engine_opts_table(own, 4, opts, 32);
    lantern_engine_args_t a;
    lantern_engine_args_default(&a);
    const char *in_path = NULL, *out_path = NULL;
    long long concurrency = 0;
    char err[LT_ERR_LEN];
    int o;
    optind = 1;
    while ((o = ipc_engine_getopt(argc, argv, opts, &a, "lantern batch")) != -1) {
        if (o == IPC_OPT_BAD) return 2;
        switch (o) {
        case OPT_INPUT: in_path = optarg; break;
        case OPT_OUTPUT: out_path = optarg; break;
        case OPT_CONCURRENCY:
            if (!lt_parse_long(optarg, 0, 1 << 20, &concurrency)) {
                fprintf(stderr, "lantern batch: --concurrency must be a number\n");
                return 2;
            }
            break;
        case OPT_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!in_path || optind < argc) {
        usage(stderr);
        return 2;
    }
    FILE *f = fopen(in_path, "r");
    if (!f) {
        fprintf(stderr, "lantern batch: cannot open %s\n", in_path);
        return 2;
    }
    int n_jobs = 0, cap = 64;
    job_t *jobs = calloc((size_t)cap, sizeof *jobs);
    char *line = NULL;
    size_t lcap = 0;
    int lineno = 0;
    while (getline(&line, &lcap, f) > 0) {
        lineno++;
        if (line[0] == '\n' || line[0] == '\0') continue;
        if (n_jobs == cap) {
            cap *= 2;
            jobs = realloc(jobs, sizeof *jobs * (size_t)cap);
            memset(jobs + n_jobs, 0, sizeof *jobs * (size_t)(cap - n_jobs));
        }
        snprintf(jobs[n_jobs].rid, sizeof jobs[n_jobs].rid, "batch-%d", n_jobs);
        if (parse_job(line, &jobs[n_jobs], err)) {
            fprintf(stderr, "lantern batch: %s line %d: %s\n", in_path, lineno, err);
            return 2;
        }
        n_jobs++;
    }
    free(line);
    fclose(f);
    if (concurrency <= 0 || concurrency > n_jobs) concurrency = n_jobs > 0 ? n_jobs : 1;
    lt_signals_install();
    tel_process_config_t tc = {.role = "frontend",
                               .rank = -1,
                               .tensor_parallel_size = a.tensor_parallel_size,
                               .otlp_endpoint = a.otlp_traces_endpoint};
    if (tel_process_start(&tc, err)) {
        fprintf(stderr, "lantern batch: %s\n", err);
        return 2;
    }
    lantern_t *l;
    if (lantern_create(&a, &l, err)) {
        fprintf(stderr, "lantern batch: %s\n", err);
        for (int i = 0; i < n_jobs; i++) free(jobs[i].prompt);
        free(jobs);
        return 1;
    }
    sem_t slots;
    sem_init(&slots, 0, (unsigned)concurrency);
    uint64_t t0 = lt_now_ns();
    for (int i = 0; i < n_jobs; i++) {
        if (lt_sig_shutdown) { /* interrupted: the rest are not started */
            jobs[i].submit_rc = lt_errf(jobs[i].err, LT_ERR_IO, "interrupted");
            continue;
        }
        while (sem_trywait(&slots) != 0) {
            serve_signals(l, jobs, i);
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
        jobs[i].l = l;
        jobs[i].slots = &slots;
        pthread_create(&jobs[i].th, NULL, job_main, &jobs[i]);
    }
    for (int done = 0; done < concurrency;) { /* wait for the last ones, serving signals */
        serve_signals(l, jobs, n_jobs);
        if (sem_trywait(&slots) == 0) {
            done++;
            continue;
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n_jobs; i++)
        if (jobs[i].l) pthread_join(jobs[i].th, NULL);
    double elapsed = (lt_now_ns() - t0) / 1e9;
    lantern_stats_t st;
    lantern_stats(l, &st);
    bool alive = lantern_alive(l);
    FILE *out = out_path ? fopen(out_path, "w") : NULL;
    long long total_out = 0;
    int n_failed = 0;
    for (int i = 0; i < n_jobs; i++) {
        job_t *j = &jobs[i];
        total_out += j->n_out;
        lantern_finish_t fin = j->submit_rc ? LANTERN_FINISH_ERROR : j->last.finish;
        if (fin == LANTERN_FINISH_ERROR) n_failed++;
        if (!out) continue;
        fprintf(out, "{\"index\":%d,\"finish\":\"%s\",\"ids\":[", i, finish_name(fin));
        for (int k = 0; k < j->n_out; k++) fprintf(out, k ? ",%d" : "%d", j->out[k]);
        cJSON *e = cJSON_CreateString(j->submit_rc ? j->err : j->last.error);
        char *es = cJSON_PrintUnformatted(e);
        fprintf(out,
                "],\"error\":%s,\"prompt_tokens\":%d,\"cached_tokens\":%d,\"preemptions\":%d,"
                "\"queue_s\":%.6f,\"prefill_s\":%.6f,\"decode_s\":%.6f}\n",
                es, j->n_prompt, j->last.n_cached_tokens, j->last.n_preemptions, j->last.queue_s,
                j->last.prefill_s, j->last.decode_s);
        free(es);
        cJSON_Delete(e);
    }
    if (out) fclose(out);
    printf("{\"requests\":%d,\"failed\":%d,\"output_tokens\":%lld,\"elapsed_s\":%.3f,"
           "\"output_tok_s\":%.1f,\"max_running\":%d,\"prefix_queries\":%llu,\"prefix_hits\":%llu,"
           "\"preemptions\":%llu,\"steps\":%llu,\"engine_alive\":%s}\n",
           n_jobs, n_failed, total_out, elapsed, total_out / elapsed, st.max_running,
           (unsigned long long)st.prefix_queries, (unsigned long long)st.prefix_hits,
           (unsigned long long)st.preemptions, (unsigned long long)st.steps,
           alive ? "true" : "false");
    fflush(stdout);
    lantern_destroy(&l);
    tel_process_stop(5000);
    for (int i = 0; i < n_jobs; i++) {
        free(jobs[i].prompt);
        free(jobs[i].out);
    }
    free(jobs);
    sem_destroy(&slots);
    return alive && n_failed == 0 ? 0 : 1;
}
