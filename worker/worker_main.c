/*
 * worker_main.c — the worker process (`lantern __worker`, started by the engine): loads its
 * tensor-parallel shard, allocates the paged KV cache, says HELLO, then runs every step plan
 * broadcast on the shared-memory ring. Rank 0 samples and returns the tokens; all ranks join the
 * shared-memory all-reduce inside the forward pass.
 *
 * Every rank keeps the identity of the sequences it computes (the STEP entry that first schedules
 * a request carries it), so its logs and SIGUSR1 dumps name requests by the id the client knows.
 *
 * It never decides scheduling and never talks to the frontend (DESIGN.md §1). It exits when the
 * ring closes or SHUTDOWN arrives, and dies with the engine (PR_SET_PDEATHSIG).
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "dump.h"
#include "ipc.h"
#include "lt.h"
#include "msg.h"
#include "proc.h"
#include "sampler.h"
#include "metrics.h"
#include "telemetry.h"
#include "trace.h"
#include "kernels.h"
#include "nccl_comm.h"
#include "worker.h"

/* ---- per-sequence state ---- */

/* A sequence the engine scheduled on this rank: its identity on every rank; on rank 0 also its
 * parameters, generator and token history (for the penalties). */
typedef struct seq_state {
    uint64_t id; /* 0: free slot */
    ipc_ident_t ident;
    ipc_params_t params;
    wk_rng_t rng;
    int32_t *hist; /* (cap) prompt then output ids: rank 0 only */
    int n_prompt, n_out, cap;
    uint64_t first_step, last_step;
} seq_state_t;

/* The all-reduce, timed: every call's duration feeds the step's figures (and its span). */
typedef struct ar_timer {
    ipc_allreduce_t *ar;
    wk_allreduce_fn fn; /* ipc_allreduce_hook (user = ar), or NCCL's on the CUDA backend */
    void *user;
    uint64_t calls, total_ns, max_ns; /* since the step began */
    tel_span_t *span;                 /* the step's forward span, or NULL */
    tel_hist_t *hist;                 /* this rank's all-reduce histogram, or NULL */
} ar_timer_t;

typedef struct worker {
    ipc_engine_args_t args;
    const char *ring_name, *ar_name, *results, *metrics_name;
    tel_metrics_shm_t *metrics; /* the tree's region; this rank writes rank[rank] */
    tel_rank_metrics_t *mine;
    int rank;
    wk_model_t *m;
    wk_kv_cache_t *kv;
    wk_ctx_t *ctx;
    wk_sampler_t *sampler;
    float *logits; /* (max_num_seqs, vocab): rank 0 */
    seq_state_t *seqs;
    int n_seq_slots;
    uint64_t *refused; /* (refused_cap) requests this rank holds no slot for: they fail alone */
    int n_refused, refused_cap;
    ipc_step_t step;
    ipc_result_t result;
    int max_model_len;
    long long n_blocks;
    size_t block_bytes;
    int kv_dtype; /* lt_dtype_t of the KV cache */
    uint64_t n_steps;
    ar_timer_t ar_timer;
    wk_nccl_t *nccl;    /* CUDA backend under tensor parallelism */
    tel_ctx_t step_ctx; /* the STEP envelope's trace context (the engine's step span) */
} worker_t;

static int timed_allreduce(float *buf, size_t n, void *user) {
    ar_timer_t *t = user;
    uint64_t t0 = lt_now_ns(), u0 = t->span ? tel_now_unix_ns() : 0;
    int rc = t->fn(buf, n, t->user);
    uint64_t dt = lt_now_ns() - t0;
    t->calls++;
    t->total_ns += dt;
    if (dt > t->max_ns) t->max_ns = dt;
    if (t->hist) tel_hist_observe(t->hist, &TEL_B_STEP, (double)dt * 1e-9, NULL, NULL);
    if (t->span) /* the first ones as events; every one in the totals */
        tel_span_event(t->span, "allreduce", u0, 2, "lantern.allreduce.floats", (int64_t)n,
                       "lantern.allreduce.ns", (int64_t)dt);
    return rc;
}

static seq_state_t *seq_find(worker_t *w, uint64_t id) {
    for (int i = 0; i < w->n_seq_slots; i++)
        if (w->seqs[i].id == id) return &w->seqs[i];
    return NULL;
}

static int refused_find(const worker_t *w, uint64_t id) {
    for (int i = 0; i < w->n_refused; i++)
        if (w->refused[i] == id) return i;
    return -1;
}

/* A request the engine schedules for the first time (or again after a preemption). When no slot
 * is free (the engine never schedules more than max_num_seqs at once and releases finished ones
 * first, so the two disagree) the request cannot be sampled as it asked: its generator and
 * history need a slot. It then fails alone: rank 0 answers its rows with no token (token -1) and
 * the engine ends it with an error; it is never sampled some other way (greedily, unseeded).
 * Fails the step only when even the list of such requests is full. */
static int seq_apply_new(worker_t *w, const ipc_step_new_t *nw, const int32_t *prompt, char *err) {
    seq_state_t *s = seq_find(w, nw->id);
    if (s || refused_find(w, nw->id) >= 0) return LT_OK; /* resumed after preemption: kept */
    if (!(s = seq_find(w, 0))) {
        if (w->n_refused == w->refused_cap)
            return lt_errf(err, LT_ERR_RANGE, "req=%s: no free sequence slot (%d in use)",
                           nw->ident.id, w->n_seq_slots);
        w->refused[w->n_refused++] = nw->id;
        LT_ERROR("req=%s: no free sequence slot (%d in use): this request fails", nw->ident.id,
                 w->n_seq_slots);
        return LT_OK;
    }
    s->id = nw->id;
    s->ident = nw->ident;
    s->params = nw->params;
    s->first_step = s->last_step = w->step.step_id;
    s->n_out = 0;
    s->n_prompt = 0;
    if (w->rank != 0) return LT_OK;
    wk_rng_seed(&s->rng, s->params.has_seed ? s->params.seed : (lt_now_ns() ^ (nw->id << 17)));
    s->n_prompt = nw->n_prompt < s->cap ? nw->n_prompt : s->cap;
    memcpy(s->hist, prompt, (size_t)s->n_prompt * sizeof *prompt);
    return LT_OK;
}

/* ---- one step ---- */

/* Rank 0: samples every sampled row into the result. */
static int sample_step(worker_t *w, char *err) {
    const ipc_step_t *st = &w->step;
    int vocab = w->m->cfg.vocab_size;
    ipc_result_t *res = &w->result;
    res->step_id = st->step_id;
    res->n = st->n_sampled;
    res->error = 0;
    for (int i = 0; i < st->n_sampled; i++) {
        uint64_t id = st->seq_ids[st->sample_seqs[i]];
        seq_state_t *s = seq_find(w, id);
        ipc_out_item_t *it = &res->items[i];
        memset(it, 0, sizeof *it);
        it->id = id;
        if (!s && refused_find(w, id) >= 0) { /* no state to sample it with: the engine fails it */
            it->token = -1;
            continue;
        }
        if (!s)
            return lt_errf(err, LT_ERR_INVAL, "step %llu samples request %llu, never announced",
                           (unsigned long long)st->step_id, (unsigned long long)id);
        wk_sample_result_t sr;
        int rc = wk_sample(w->sampler, &s->params, &s->rng, w->logits + (size_t)i * vocab, s->hist,
                           s->n_prompt, s->hist + s->n_prompt, s->n_out, &sr);
        if (rc) return lt_errf(err, rc, "req=%s: sampling failed", s->ident.id);
        it->token = sr.token;
        it->logprob = sr.logprob;
        it->n_top = sr.n_top;
        memcpy(it->top_ids, sr.top_ids, sizeof(int32_t) * (size_t)sr.n_top);
        memcpy(it->top_logprobs, sr.top_logprobs, sizeof(float) * (size_t)sr.n_top);
        if (s->n_prompt + s->n_out < s->cap) s->hist[s->n_prompt + s->n_out++] = sr.token;
    }
    return LT_OK;
}

static int run_step(worker_t *w, char *err) {
    ipc_step_t *st = &w->step;
    for (int i = 0; i < st->n_finished; i++) {
        seq_state_t *s = seq_find(w, st->finished[i]);
        if (s) s->id = 0;
        int k = refused_find(w, st->finished[i]);
        if (k >= 0) w->refused[k] = w->refused[--w->n_refused];
    }
    for (int i = 0; i < st->n_new; i++) {
        int rc = seq_apply_new(w, &st->news[i], st->new_prompts + (size_t)i * st->max_prompt, err);
        if (rc) return rc;
    }
    if (st->n_tokens == 0) return LT_OK;
    w->n_steps++;
    for (int i = 0; i < st->n_seqs; i++) {
        seq_state_t *s = seq_find(w, st->seq_ids[i]);
        if (s) s->last_step = st->step_id;
    }
    const int32_t *tables[st->n_seqs > 0 ? st->n_seqs : 1];
    for (int i = 0; i < st->n_seqs; i++) tables[i] = st->tables + (size_t)i * st->max_blocks;
    wk_batch_t b = {.n_tokens = st->n_tokens,
                    .tokens = st->tokens,
                    .pos = st->pos,
                    .seq = st->seq_idx,
                    .n_seqs = st->n_seqs,
                    .block_tables = tables,
                    .block_table_len = st->table_lens,
                    .n_logits = w->rank == 0 ? st->n_sampled : 0,
                    .logits_rows = st->sample_rows};
    /* --collect-detailed-traces worker: this rank's spans, children of the engine's step */
    tel_span_t *step = NULL, *fwd = NULL;
    if (w->step_ctx.valid) {
        step = tel_span_start("worker_step", TEL_KIND_INTERNAL, &w->step_ctx, 0);
        tel_span_set_int(step, "lantern.worker.rank", w->rank);
        tel_span_set_int(step, "lantern.step.id", (int64_t)st->step_id);
        tel_span_set_int(step, "lantern.step.tokens", st->n_tokens);
        tel_span_set_int(step, "lantern.step.sequences", st->n_seqs);
        tel_ctx_t sc = step ? tel_span_ctx(step) : w->step_ctx;
        fwd = tel_span_start("forward", TEL_KIND_INTERNAL, &sc, 0);
    }
    w->ar_timer = (ar_timer_t){.ar = w->ar_timer.ar,
                               .fn = w->ar_timer.fn,
                               .user = w->ar_timer.user,
                               .span = fwd,
                               .hist = w->ar_timer.hist};
    uint64_t f0 = lt_now_ns();
    int rc = wk_forward(w->m, w->kv, w->ctx, &b, w->logits, err);
    if (w->mine)
        tel_hist_observe(&w->mine->hist[TEL_H_FORWARD], &TEL_B_STEP,
                         (double)(lt_now_ns() - f0) * 1e-9, NULL, NULL);
    if (fwd) {
        tel_span_set_int(fwd, "lantern.allreduce.calls", (int64_t)w->ar_timer.calls);
        tel_span_set_int(fwd, "lantern.allreduce.total_ns", (int64_t)w->ar_timer.total_ns);
        tel_span_set_int(fwd, "lantern.allreduce.max_ns", (int64_t)w->ar_timer.max_ns);
        if (rc) tel_span_set_status(fwd, TEL_STATUS_ERROR, err);
        tel_span_submit(fwd, 0, rc != 0);
        w->ar_timer.span = NULL;
    }
    if (!rc && w->rank == 0) {
        tel_span_t *smp = NULL;
        if (step) {
            tel_ctx_t sc = tel_span_ctx(step);
            smp = tel_span_start("sample", TEL_KIND_INTERNAL, &sc, 0);
            tel_span_set_int(smp, "lantern.sampled", st->n_sampled);
        }
        rc = sample_step(w, err);
        tel_span_submit(smp, 0, rc != 0);
    }
    if (step && rc) tel_span_set_status(step, TEL_STATUS_ERROR, err);
    tel_span_submit(step, 0, rc != 0);
    return rc;
}

/* ---- metrics ---- */

/* This process's span counts into its rank's section (for /metrics). */
static void worker_span_counts(worker_t *w) {
    if (!w->mine) return;
    tel_process_stats_t ts;
    tel_process_stats(&ts);
    tel_span_counts_t *c = &w->mine->spans;
    atomic_store_explicit(&c->enabled, ts.enabled, memory_order_relaxed);
    atomic_store_explicit(&c->exported, ts.bsp.exported, memory_order_relaxed);
    atomic_store_explicit(&c->dropped, ts.bsp.dropped, memory_order_relaxed);
    atomic_store_explicit(&c->failed, ts.bsp.failed, memory_order_relaxed);
    atomic_store_explicit(&c->queued, ts.bsp.queued, memory_order_relaxed);
}

static void metrics_attach(worker_t *w) {
    char err[LT_ERR_LEN];
    if (!w->metrics_name) return;
    if (tel_metrics_attach(w->metrics_name, &w->metrics, err) || w->rank >= w->metrics->n_ranks) {
        LT_WARN("%s: no metrics from this worker", err);
        tel_metrics_detach(&w->metrics);
        return;
    }
    w->mine = &w->metrics->rank[w->rank];
    atomic_store(&w->mine->pid, (int64_t)getpid());
    w->ar_timer.hist = &w->mine->hist[TEL_H_ALLREDUCE];
}

/* ---- dump ---- */

/* The JSON dump (--dump-dir): this rank, its KV cache, its sequences. */
static void dump_json(const worker_t *w) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "engine_args", ipc_engine_args_json(&w->args));
    cJSON_AddNumberToObject(doc, "kv_blocks", (double)w->n_blocks);
    cJSON_AddNumberToObject(doc, "kv_bytes", (double)w->n_blocks * (double)w->block_bytes);
    cJSON_AddNumberToObject(doc, "weights_bytes", (double)w->m->weight_bytes);
    cJSON_AddNumberToObject(doc, "steps", (double)w->n_steps);
    cJSON *seqs = cJSON_AddArrayToObject(doc, "sequences");
    for (int i = 0; i < w->n_seq_slots; i++) {
        const seq_state_t *q = &w->seqs[i];
        if (!q->id) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "request_id", q->ident.id);
        cJSON_AddStringToObject(o, "traceparent", q->ident.traceparent);
        cJSON_AddNumberToObject(o, "engine_id", (double)q->id);
        cJSON_AddNumberToObject(o, "first_step", (double)q->first_step);
        cJSON_AddNumberToObject(o, "last_step", (double)q->last_step);
        if (w->rank == 0) {
            cJSON_AddNumberToObject(o, "prompt_tokens", q->n_prompt);
            cJSON_AddNumberToObject(o, "generated_tokens", q->n_out);
        }
        cJSON_AddItemToArray(seqs, o);
    }
    char err[LT_ERR_LEN];
    if (lt_dump_write(w->args.dump_dir, "worker", w->rank, doc, err)) LT_WARN("%s", err);
}

static void dump_state(const worker_t *w) {
    char args[512];
    ipc_engine_args_str(&w->args, args, sizeof args);
    int live = 0;
    for (int i = 0; i < w->n_seq_slots; i++) live += w->seqs[i].id != 0;
    LT_INFO("state dump: rank %d/%d pid %d, %lld KV blocks of %d tokens (%.0f MiB), weights %.0f "
            "MiB, %llu steps, %d live sequences; model=%s %s",
            w->rank, w->args.tensor_parallel_size, (int)getpid(), w->n_blocks, w->args.block_size,
            (double)w->n_blocks * (double)w->block_bytes / 1048576.0,
            w->m->weight_bytes / 1048576.0, (unsigned long long)w->n_steps, live, w->args.model,
            args);
    for (int i = 0; i < w->n_seq_slots; i++) {
        const seq_state_t *s = &w->seqs[i];
        if (!s->id) continue;
        LT_INFO("state dump: req=%s engine id %llu traceparent=%s steps %llu..%llu%s", s->ident.id,
                (unsigned long long)s->id, s->ident.traceparent[0] ? s->ident.traceparent : "-",
                (unsigned long long)s->first_step, (unsigned long long)s->last_step,
                w->rank == 0 ? "" : " (not sampled on this rank)");
        if (w->rank == 0)
            LT_INFO("state dump: req=%s prompt %d tokens, %d generated, temperature %g, top_p %g, "
                    "top_k %d, seed %s",
                    s->ident.id, s->n_prompt, s->n_out, s->params.temperature, s->params.top_p,
                    s->params.top_k, s->params.has_seed ? "set" : "none");
    }
    if (w->args.dump_dir) dump_json(w);
}

/* ---- start-up ---- */

static void usage(void) {
    fprintf(stderr, "lantern __worker: internal; started by the engine\n");
}

/* The worker's own flags (its place in the tree) beside the engine arguments. */
enum { OPT_RANK = 1, OPT_RING, OPT_ALLREDUCE, OPT_RESULTS, OPT_METRICS };

static int parse_args(worker_t *w, int argc, char **argv) {
    static const struct option own[] = {{"rank", required_argument, 0, OPT_RANK},
                                        {"ring", required_argument, 0, OPT_RING},
                                        {"allreduce", required_argument, 0, OPT_ALLREDUCE},
                                        {"results", required_argument, 0, OPT_RESULTS},
                                        {"metrics", required_argument, 0, OPT_METRICS}};
    struct option opts[32];
    char err[LT_ERR_LEN];
    ipc_engine_args_defaults(&w->args);
    if (ipc_engine_opts_table(own, 5, opts, 32) < 0) return 2;
    int o;
    optind = 1;
    while ((o = ipc_engine_getopt(argc, argv, opts, &w->args, "lantern __worker")) != -1) {
        if (o == IPC_OPT_BAD) return 2;
        switch (o) {
        case OPT_RANK: w->rank = atoi(optarg); break;
        case OPT_RING: w->ring_name = optarg; break;
        case OPT_ALLREDUCE: w->ar_name = optarg; break;
        case OPT_RESULTS: w->results = optarg; break;
        case OPT_METRICS: w->metrics_name = optarg; break;
        default: usage(); return 2;
        }
    }
    if (!w->args.model || !w->ring_name || !w->results || optind < argc || w->rank < 0 ||
        w->rank >= w->args.tensor_parallel_size || ipc_engine_args_resolve(&w->args, err)) {
        usage();
        return 2;
    }
    return 0;
}

/* Step buffers, sized for the largest plan the engine may send, and rank 0's sampling state. */
static int alloc_buffers(worker_t *w, char *err) {
    const int max_seqs = w->args.max_num_seqs, max_batched = w->args.max_num_batched_tokens;
    const int max_blocks = (w->max_model_len + w->args.block_size - 1) / w->args.block_size;
    ipc_step_t *st = &w->step;
    st->cap_tokens = max_batched;
    st->cap_seqs = max_seqs;
    st->max_blocks = max_blocks;
    st->cap_new = max_seqs;
    st->max_prompt = w->max_model_len;
    st->cap_finished = 4 * max_seqs;
    st->tokens = malloc(sizeof(int32_t) * (size_t)max_batched);
    st->pos = malloc(sizeof(int32_t) * (size_t)max_batched);
    st->seq_idx = malloc(sizeof(int32_t) * (size_t)max_batched);
    st->seq_ids = malloc(sizeof(uint64_t) * (size_t)max_seqs);
    st->table_lens = malloc(sizeof(int32_t) * (size_t)max_seqs);
    st->tables = malloc(sizeof(int32_t) * (size_t)max_seqs * (size_t)max_blocks);
    st->sample_rows = malloc(sizeof(int32_t) * (size_t)max_seqs);
    st->sample_seqs = malloc(sizeof(int32_t) * (size_t)max_seqs);
    st->news = malloc(sizeof(ipc_step_new_t) * (size_t)max_seqs);
    st->new_prompts = malloc(sizeof(int32_t) * (size_t)max_seqs * (size_t)w->max_model_len);
    st->finished = malloc(sizeof(uint64_t) * (size_t)st->cap_finished);
    w->result.cap = max_seqs;
    w->result.items = malloc(sizeof(ipc_out_item_t) * (size_t)max_seqs);
    /* twice max_num_seqs: a finished sequence's slot is freed by the plan that also announces
     * its successor, so both may be listed at once */
    w->n_seq_slots = 2 * max_seqs;
    /* fault injection for the tests: fewer slots than the engine may use */
    const char *fault = getenv("LANTERN_FAULT_WORKER_SLOTS");
    if (fault && atoi(fault) > 0 && atoi(fault) < w->n_seq_slots) w->n_seq_slots = atoi(fault);
    w->seqs = calloc((size_t)w->n_seq_slots, sizeof *w->seqs);
    w->refused_cap = 2 * max_seqs;
    w->refused = malloc(sizeof *w->refused * (size_t)w->refused_cap);
    if (!st->tokens || !st->pos || !st->seq_idx || !st->seq_ids || !st->table_lens || !st->tables ||
        !st->sample_rows || !st->sample_seqs || !st->news || !st->new_prompts || !st->finished ||
        !w->result.items || !w->seqs || !w->refused)
        return lt_errf(err, LT_ERR_NOMEM, "out of memory for step buffers");
    if (w->rank != 0) return LT_OK;
    const int vocab = w->m->cfg.vocab_size;
    w->logits = malloc(sizeof(float) * (size_t)max_seqs * (size_t)vocab);
    if (!w->logits) return lt_errf(err, LT_ERR_NOMEM, "out of memory for logits");
    for (int i = 0; i < w->n_seq_slots; i++) {
        w->seqs[i].cap = w->max_model_len + 1;
        w->seqs[i].hist = malloc(sizeof(int32_t) * (size_t)w->seqs[i].cap);
        if (!w->seqs[i].hist) return lt_errf(err, LT_ERR_NOMEM, "out of memory for histories");
    }
    return wk_sampler_create(vocab, &w->sampler, err);
}

static void free_buffers(worker_t *w) {
    ipc_step_t *st = &w->step;
    free(st->tokens);
    free(st->pos);
    free(st->seq_idx);
    free(st->seq_ids);
    free(st->table_lens);
    free(st->tables);
    free(st->sample_rows);
    free(st->sample_seqs);
    free(st->news);
    free(st->new_prompts);
    free(st->finished);
    free(w->result.items);
    if (w->seqs)
        for (int i = 0; i < w->n_seq_slots; i++) free(w->seqs[i].hist);
    free(w->seqs);
    free(w->refused);
    free(w->logits);
    wk_sampler_destroy(&w->sampler);
}

/* --gpu-memory-utilization: one forward step at the largest batch the engine may send
 * (max_num_batched_tokens tokens of one sequence, logits for max_num_seqs rows) on a cache just
 * big enough, so every scratch buffer and cuBLAS's workspace exist; then the KV blocks that fit
 * in what the fraction leaves of the device (wk_kv_blocks_for). Under tensor parallelism every
 * rank runs it, all-reduces included; its numbers are not used, only its memory. */
static int profile_kv_blocks(worker_t *w, char *err) {
    const ipc_engine_args_t *a = &w->args;
    wk_backend_t *be = w->m->be;
    if (!be->ops->mem_info)
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "--gpu-memory-utilization: the %s backend has no device memory to size",
                       be->ops->name);
    int T =
        a->max_num_batched_tokens < w->max_model_len ? a->max_num_batched_tokens : w->max_model_len;
    int n_logits = a->max_num_seqs < T ? a->max_num_seqs : T, bs = a->block_size;
    int nb = (T + bs - 1) / bs, vocab = w->m->cfg.vocab_size;
    int32_t *idx = malloc(sizeof(int32_t) * ((size_t)3 * T + (size_t)n_logits + (size_t)nb));
    float *logits = malloc(sizeof(float) * (size_t)n_logits * (size_t)vocab);
    wk_kv_cache_t *kv = NULL;
    int rc = idx && logits ? LT_OK : lt_errf(err, LT_ERR_NOMEM, "out of memory");
    if (!rc) {
        int32_t *tok = idx, *pos = idx + T, *seq = idx + 2 * T, *rows = idx + 3 * T,
                *table = rows + n_logits;
        for (int i = 0; i < T; i++) tok[i] = i % vocab, pos[i] = i, seq[i] = 0;
        for (int i = 0; i < n_logits; i++) rows[i] = T - n_logits + i;
        for (int i = 0; i < nb; i++) table[i] = i;
        const int32_t *tables[1] = {table};
        int32_t table_len[1] = {nb};
        wk_batch_t b = {.n_tokens = T,
                        .tokens = tok,
                        .pos = pos,
                        .seq = seq,
                        .n_seqs = 1,
                        .block_tables = tables,
                        .block_table_len = table_len,
                        .n_logits = n_logits,
                        .logits_rows = rows};
        rc = wk_kv_cache_create(w->m, nb, bs, w->kv_dtype, &kv, err);
        if (!rc) rc = wk_forward(w->m, kv, w->ctx, &b, logits, err);
    }
    wk_kv_cache_destroy(&kv);
    free(idx);
    free(logits);
    size_t free_b = 0, total_b = 0;
    if (!rc) rc = be->ops->mem_info(be, &free_b, &total_b, err);
    if (!rc)
        rc = wk_kv_blocks_for(free_b, total_b, a->gpu_memory_utilization, w->block_bytes,
                              &w->n_blocks, err);
    if (!rc)
        LT_INFO("--gpu-memory-utilization %.2f: %.2f GiB of %.2f GiB free after a %d-token "
                "profiling step: %lld KV blocks (%.2f GiB)",
                a->gpu_memory_utilization, free_b / 1073741824.0, total_b / 1073741824.0, T,
                w->n_blocks, (double)w->n_blocks * (double)w->block_bytes / 1073741824.0);
    return rc;
}

/* Model, scratch, the all-reduce group, then the KV cache (sized last: on CUDA with
 * --gpu-memory-utilization it takes what the others left). */
static int load(worker_t *w, ipc_allreduce_t **ar, char *err) {
    const ipc_engine_args_t *a = &w->args;
    /* --device auto: CUDA when a device is visible; rank r takes device r */
    bool cuda = a->device == IPC_DEVICE_CUDA ||
                (a->device == IPC_DEVICE_AUTO && wk_cuda_device_count() > 0);
    if (a->gpu_memory_utilization > 0 && !cuda)
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "--gpu-memory-utilization sizes the KV cache of workers on the CUDA "
                       "backend; this worker runs on the CPU backend: size it with "
                       "--kv-cache-memory");
    omp_set_num_threads(a->threads);
    if (a->batch_invariant) /* always so now: kept as a flag for scripts that pass it */
        LT_INFO("batch-invariant mode: always on (one kernel for every batch size)");
    wk_load_opts_t lo = {.tp_rank = w->rank,
                         .tp_size = a->tensor_parallel_size,
                         .device = cuda ? WK_DEVICE_CUDA : WK_DEVICE_CPU,
                         .cuda_device = w->rank};
    int rc = wk_model_load(a->model, &lo, &w->m, err);
    if (rc) return rc;
    const lt_model_config_t *c = &w->m->cfg;
    w->max_model_len = a->max_model_len > 0 && a->max_model_len < c->max_seq_len ? a->max_model_len
                                                                                 : c->max_seq_len;
    /* auto: fp16 on the CPU backend (half of fp32's memory, what llama.cpp keeps) */
    static const int kv_types[] = {[IPC_KV_DTYPE_AUTO] = LT_DTYPE_F16,
                                   [IPC_KV_DTYPE_FP32] = LT_DTYPE_F32,
                                   [IPC_KV_DTYPE_FP16] = LT_DTYPE_F16,
                                   [IPC_KV_DTYPE_BF16] = LT_DTYPE_BF16};
    w->kv_dtype = kv_types[a->kv_cache_dtype];
    w->block_bytes = wk_kv_block_bytes(w->m, a->block_size, w->kv_dtype);
    if ((rc = wk_ctx_create(w->m, a->max_num_batched_tokens, w->max_model_len, &w->ctx, err)))
        return rc;
    wk_ctx_set_eager(w->ctx, a->enforce_eager);
    if (cuda)
        LT_INFO("CUDA graphs: %s",
                a->enforce_eager ? "off (--enforce-eager)"
                : a->tensor_parallel_size > 1
                    ? "steps of up to 32 tokens recorded on their second run (that run is the "
                      "recording's first replay: every rank runs each step once), then replayed"
                    : "steps of up to 32 tokens recorded on their second run, checked against "
                      "it, then replayed");
    if (a->tensor_parallel_size > 1) {
        for (int i = 0;
             i < 3000 && (rc = ipc_allreduce_attach(w->ar_name, w->rank, ar, err)) == IPC_AGAIN;
             i++)
            usleep(10000);
        if (rc) return rc;
        w->ar_timer.ar = *ar;
        w->ar_timer.fn = ipc_allreduce_hook;
        w->ar_timer.user = *ar;
        if (cuda) { /* device buffers: NCCL, its id carried by the shared-memory all-reduce */
            if ((rc = wk_nccl_init(w->rank, a->tensor_parallel_size,
                                   wk_backend_cuda_stream(w->m->be), ipc_allreduce_hook, *ar,
                                   a->watchdog_timeout_s * 1000, &w->nccl, err)))
                return rc;
            w->ar_timer.fn = wk_nccl_allreduce;
            w->ar_timer.user = w->nccl;
        }
        /* before the profiling step: its layers all-reduce too (every rank profiles the same
         * shapes, so the collectives match) */
        wk_ctx_set_allreduce(w->ctx, timed_allreduce, &w->ar_timer);
    }
    if (a->gpu_memory_utilization > 0) {
        if ((rc = profile_kv_blocks(w, err))) return rc;
    } else {
        w->n_blocks = a->kv_cache_memory / (long long)w->block_bytes;
        if (w->n_blocks < 1)
            return lt_errf(err, LT_ERR_RANGE,
                           "--kv-cache-memory %lld bytes holds no %zu-byte KV block",
                           a->kv_cache_memory, w->block_bytes);
        if (w->n_blocks > (1 << 24)) w->n_blocks = 1 << 24;
    }
    if ((rc = wk_kv_cache_create(w->m, (int)w->n_blocks, a->block_size, w->kv_dtype, &w->kv, err)))
        return rc;
    return alloc_buffers(w, err);
}

/* ---- the loop ---- */

/* Runs step plans until the ring closes or SHUTDOWN (0), or a failure (an error code). */
static int serve(worker_t *w, ipc_ring_t *ring, ipc_sock_t *out, ipc_writer_t *wr,
                 ipc_envelope_t *env, char *err) {
    ipc_step_t *st = &w->step;
    const void *data;
    size_t len;
    while (!lt_sig_shutdown) {
        if (lt_sig_dump) {
            lt_sig_dump = 0;
            dump_state(w);
        }
        const void *msg;
        size_t mlen;
        int rc = ipc_ring_read(ring, &msg, &mlen, 200, err);
        if (rc == IPC_AGAIN) continue;
        if (rc == IPC_CLOSED) return 0;
        if (rc < 0) return rc;
        rc = ipc_envelope_decode(msg, mlen, env, err);
        if (rc == 0 && env->type == IPC_MSG_SHUTDOWN) {
            ipc_ring_release(ring);
            return 0;
        }
        if (rc == 0) rc = ipc_msg_step_read(env, st, err);
        w->step_ctx.valid = false;
        if (rc == 0 && env->has_trace && tel_tracer_enabled())
            tel_ctx_parse(env->trace.traceparent.ptr, env->trace.traceparent.len, &w->step_ctx);
        ipc_ring_release(ring);
        if (rc) { /* answered with an error, so the engine fails the step instead of waiting */
            LT_ERROR("refused a malformed step message: %s", err);
            char e2[LT_ERR_LEN];
            w->result = (ipc_result_t){
                .items = w->result.items, .cap = w->result.cap, .error = LT_ERR_FORMAT};
            snprintf(w->result.err_text, sizeof w->result.err_text,
                     "rank %d could not read the step: %.200s", w->rank, err);
            if (ipc_msg_result_write(wr, &w->result, &data, &len, e2) ||
                ipc_sock_send(out, NULL, data, len, 5000, e2)) {
                snprintf(err, LT_ERR_LEN, "%s", e2);
                return LT_ERR_IO;
            }
            continue;
        }
        uint64_t s0 = lt_now_ns();
        rc = run_step(w, err);
        if (w->mine && st->n_tokens > 0) {
            tel_hist_observe(&w->mine->hist[TEL_H_STEP], &TEL_B_STEP,
                             (double)(lt_now_ns() - s0) * 1e-9, NULL, NULL);
            atomic_fetch_add_explicit(&w->mine->steps, 1, memory_order_relaxed);
            if ((w->n_steps & 63) == 1) worker_span_counts(w); /* now and then */
        }
        if (w->rank == 0 && (st->n_tokens > 0 || rc)) { /* a plan with no rows gets no reply */
            if (rc) {
                w->result.step_id = st->step_id;
                w->result.n = 0;
                w->result.error = rc;
                snprintf(w->result.err_text, sizeof w->result.err_text, "%.255s", err);
            }
            char e2[LT_ERR_LEN];
            if (ipc_msg_result_write(wr, &w->result, &data, &len, e2) ||
                ipc_sock_send(out, NULL, data, len, 5000, e2)) {
                snprintf(err, LT_ERR_LEN, "%s", e2);
                return LT_ERR_IO;
            }
        }
        if (rc) {
            LT_ERROR("step %llu failed: %s", (unsigned long long)st->step_id, err);
            if (w->args.tensor_parallel_size > 1) return rc; /* a broken group cannot go on */
        }
    }
    return 0;
}

int wk_worker_main(int argc, char **argv) {
    worker_t w = {0};
    int status = parse_args(&w, argc, argv);
    if (status) return status;
    lt_log_set_role("worker", w.rank);
    lt_signals_install();
    char err[LT_ERR_LEN];
    /* a worker records spans only for --collect-detailed-traces worker/all */
    tel_process_config_t tc = {.role = "worker",
                               .rank = w.rank,
                               .tensor_parallel_size = w.args.tensor_parallel_size,
                               .otlp_endpoint = w.args.otlp_traces_endpoint};
    if ((w.args.detailed_traces & IPC_TRACE_WORKER) && tel_process_start(&tc, err)) {
        LT_ERROR("%s", err);
        return 2;
    }
    metrics_attach(&w);
    ipc_ctx_t *ctx = NULL;
    ipc_sock_t *out = NULL;
    ipc_ring_t *ring = NULL;
    ipc_allreduce_t *ar = NULL;
    ipc_writer_t wr;
    ipc_envelope_t env;
    bool wr_ok = false, env_ok = false, started = false;
    const void *data;
    size_t len;
    status = 1;
    if (ipc_writer_init(&wr, 1 << 16, err) || !(wr_ok = true) || ipc_envelope_init(&env, 0, err) ||
        !(env_ok = true) || ipc_ctx_create(&ctx, err) ||
        ipc_sock_create(ctx, IPC_PUSH, 0, &out, err) || ipc_sock_connect(out, w.results, err) ||
        load(&w, &ar, err))
        goto fail;
    int rc;
    for (int i = 0; i < 3000 && (rc = ipc_ring_attach(w.ring_name, (uint32_t)w.rank, ctx, &ring,
                                                      err)) == IPC_AGAIN;
         i++)
        usleep(10000);
    if (rc) goto fail;
    const lt_model_config_t *c = &w.m->cfg;
    ipc_hello_t h = {.role = 1,
                     .rank = w.rank,
                     .pid = (int)getpid(),
                     .num_blocks = (int)w.n_blocks,
                     .vocab = c->vocab_size,
                     .eos_id = c->eos_id,
                     .bos_id = c->bos_id,
                     .max_model_len = w.max_model_len,
                     .block_size = w.args.block_size};
    if (ipc_msg_hello_write(&wr, &h, &data, &len, err) ||
        ipc_sock_send(out, NULL, data, len, 5000, err))
        goto fail;
    started = true;
    LT_INFO("ready: %s shard %d/%d, %lld KV blocks of %d tokens (%.0f MiB), %d threads, "
            "KV cache %s, backend %s (%s), weights %.0f MiB in their stored type (%.1f MiB "
            "copied)",
            w.args.model, w.rank, w.args.tensor_parallel_size, w.n_blocks, w.args.block_size,
            (double)w.n_blocks * (double)w.block_bytes / 1048576.0, w.args.threads,
            lt_dtype_name(w.kv_dtype), w.m->be->ops->name, kn_isa_name(kn_isa()),
            w.m->weight_bytes / 1048576.0, w.m->weight_copy_bytes / 1048576.0);
    if (serve(&w, ring, out, &wr, &env, err)) goto fail;
    status = 0;
    goto out;
fail:
    /* a start-up failure goes to the engine, which passes it on: one line for the user */
    if (!started && out && wr_ok &&
        ipc_msg_error_write(&wr, LT_ERR_IO, err, &data, &len, err) == 0 &&
        ipc_sock_send(out, NULL, data, len, 1000, err) == 0) {
        usleep(100000); /* sockets close with linger 0: let the report leave first */
        goto out;
    }
    LT_ERROR("%s", err);
out:
    if (ring) ipc_ring_detach(&ring);
    wk_nccl_destroy(&w.nccl);
    if (ar) ipc_allreduce_destroy(&ar);
    ipc_sock_destroy(&out);
    ipc_ctx_destroy(&ctx);
    if (wr_ok) ipc_writer_fini(&wr);
    if (env_ok) ipc_envelope_fini(&env);
    free_buffers(&w);
    wk_ctx_destroy(&w.ctx);
    wk_kv_cache_destroy(&w.kv);
    wk_model_free(&w.m);
    tel_process_stop(5000);
    tel_metrics_detach(&w.metrics);
    return status;
}
