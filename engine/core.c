/*
 * core.c — the engine-core process (`lantern __engine`, started by the frontend).
 *
 * Owns the request queue and the scheduler. It starts one worker process per tensor-parallel
 * rank, broadcasts each step plan on the shared-memory ring, applies rank 0's sampled tokens and
 * streams the outputs of every step to the frontend as one OUTPUT message. One step is in flight
 * at a time. It never touches tokenizer text (DESIGN.md §1).
 *
 * Failure handling: a worker's death is seen at once through its pidfd; every in-flight request
 * is then failed with an error, the other workers are stopped, the shared memory is unlinked and
 * the engine exits non-zero. The engine dies with the frontend (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "engine.h"
#include "ipc.h"
#include "lt.h"
#include "msg.h"
#include "proc.h"
#include "core_priv.h"
#include "dump.h"
#include "telemetry.h"

/* ---- output to the frontend ---- */

static int flush_output(core_t *c, uint64_t step_id, char *err) {
    if (c->output.n_items == 0) return LT_OK;
    eng_sched_stats_t st;
    eng_sched_get_stats(c->sched, &st);
    c->output.step_id = step_id;
    c->output.stats = (ipc_sched_stats_t){.running = st.n_running,
                                          .waiting = st.n_waiting,
                                          .step_seqs = step_id ? c->plan.n_seqs : 0,
                                          .kv_usage = (float)st.kv.usage,
                                          .prefix_queries = st.kv.prefix_queries,
                                          .prefix_hits = st.kv.prefix_hits,
                                          .preemptions = st.num_preemptions,
                                          .steps = st.num_steps};
    const void *data;
    size_t len;
    int rc = ipc_msg_output_write(&c->wr, &c->output, &data, &len, err);
    if (rc == 0) rc = ipc_sock_send(c->out, NULL, data, len, 2000, err);
    c->output.n_items = 0;
    return rc < 0 ? rc : LT_OK;
}

static ipc_out_item_t *out_item(core_t *c, char *err) {
    if (c->output.n_items == c->out_cap && flush_output(c, 0, err)) return NULL;
    ipc_out_item_t *it = &c->output.items[c->output.n_items++];
    memset(it, 0, sizeof *it);
    it->token = -1;
    it->stop_token = -1;
    return it;
}

static void fail_request(core_t *c, uint64_t id, const char *rid, int finish, const char *msg) {
    char err[LT_ERR_LEN];
    ipc_out_item_t *it = out_item(c, err);
    if (!it) return;
    it->id = id;
    snprintf(it->rid, sizeof it->rid, "%s", rid);
    it->finish = finish;
    if (msg) snprintf(it->error, sizeof it->error, "%.255s", msg);
}

/* A finished request's intervals, each measured here between two of its events. */
static void item_timings(ipc_out_item_t *it, const eng_req_events_t *e) {
    it->queue_ns = e->first_scheduled_ns > e->queued_ns ? e->first_scheduled_ns - e->queued_ns : 0;
    it->prefill_ns =
        e->first_token_ns > e->first_scheduled_ns ? e->first_token_ns - e->first_scheduled_ns : 0;
    it->decode_ns = e->first_token_ns && e->finished_ns > e->first_token_ns
                        ? e->finished_ns - e->first_token_ns
                        : 0;
    it->n_preemptions = e->n_preemptions;
}

static void link_req(core_t *c, core_req_t *r) {
    r->prev = NULL;
    r->next = c->reqs;
    if (c->reqs) c->reqs->prev = r;
    c->reqs = r;
}

/* A finished or aborted request leaves the live list, but the scheduler keeps pointing at it
 * (its `user`) until its next step releases the request: until then dumps and lists may still
 * read it, so it is freed only after that step (release_retired). */
static void free_req(core_t *c, core_req_t *r) {
    if (!r) return;
    if (r->prev)
        r->prev->next = r->next;
    else if (c->reqs == r)
        c->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = NULL;
    r->next = c->retired;
    c->retired = r;
}

static void release_retired(core_t *c) {
    while (c->retired) {
        core_req_t *r = c->retired;
        c->retired = r->next;
        free(r->prompt);
        free(r);
    }
}

static core_req_t *find_req(core_t *c, uint64_t id) {
    for (core_req_t *r = c->reqs; r; r = r->next)
        if (r->id == id) return r;
    return NULL;
}

/* ---- requests from the frontend ---- */

static void on_add(core_t *c) {
    char err[LT_ERR_LEN];
    ipc_add_t *a = &c->add;
    a->id = 0;
    a->ident.id[0] = '\0';
    int rc = ipc_msg_add_read(&c->env, a, err);
    if (rc == 0) rc = ipc_params_check(&a->params, c->info.vocab, NULL, err);
    if (rc) {
        LT_ERROR("req=%s: refused a malformed ADD: %s", a->ident.id[0] ? a->ident.id : "?", err);
        if (a->id) fail_request(c, a->id, a->ident.id, IPC_FINISH_ERROR, err);
        return;
    }
    core_req_t *r = calloc(1, sizeof *r);
    if (!r || !(r->prompt = malloc(sizeof(int32_t) * (size_t)a->n_prompt))) {
        free(r);
        fail_request(c, a->id, a->ident.id, IPC_FINISH_ERROR, "engine out of memory");
        return;
    }
    r->id = a->id;
    r->ident = a->ident;
    r->params = a->params;
    r->n_prompt = a->n_prompt;
    memcpy(r->prompt, a->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
    uint64_t now = lt_now_ns();
    eng_req_params_t p = {.id = r->id,
                          .prompt = r->prompt,
                          .n_prompt = r->n_prompt,
                          .max_tokens = r->params.max_tokens,
                          .min_tokens = r->params.min_tokens,
                          .ignore_eos = r->params.ignore_eos,
                          .eos_id = c->info.eos_id,
                          .stop_token_ids = r->params.stop_ids,
                          .n_stop_token_ids = r->params.n_stop_ids,
                          .arrival_ns = now,
                          .user = r};
    if ((rc = eng_sched_add(c->sched, &p, now, err))) {
        LT_WARN("req=%s: refused: %s", r->ident.id, err);
        fail_request(c, r->id, r->ident.id, IPC_FINISH_ERROR, err);
        free(r->prompt);
        free(r);
        return;
    }
    link_req(c, r);
    core_spans_add(c, r);
}

static void on_abort(core_t *c) {
    char err[LT_ERR_LEN];
    uint64_t id = 0;
    if (ipc_msg_abort_read(&c->env, &id, err)) {
        LT_ERROR("dropped a malformed ABORT: %s", err);
        return;
    }
    core_req_t *r = find_req(c, id);
    if (!r || eng_sched_abort(c->sched, id, lt_now_ns()) != LT_OK) return; /* already over */
    fail_request(c, id, r->ident.id, IPC_FINISH_ABORT, NULL);
    core_spans_finish(c, r, "abort", false);
    core_metrics_finish(c, r, false);
    /* an abort after a stop string is a normal end: its timings still count */
    const eng_req_events_t *ev = eng_sched_events(c->sched, id);
    if (ev && c->output.n_items > 0 && c->output.items[c->output.n_items - 1].id == id)
        item_timings(&c->output.items[c->output.n_items - 1], ev);
    /* the scheduler never dereferences `user`, and an aborted request is never scheduled
     * again: its state can go now */
    free_req(c, r);
}

static void drain_input(core_t *c) {
    char err[LT_ERR_LEN];
    for (;;) {
        ipc_peer_t from;
        int rc = ipc_sock_recv_envelope(c->in, &from, &c->env, 0, err);
        if (rc == IPC_AGAIN) return;
        if (rc < 0) {
            LT_ERROR("dropped a malformed request message: %s", err);
            continue;
        }
        if (c->env.type == IPC_MSG_ADD) {
            on_add(c);
        } else if (c->env.type == IPC_MSG_ABORT) {
            on_abort(c);
        } else if (c->env.type == IPC_MSG_SHUTDOWN) {
            lt_sig_shutdown = 1;
        } else {
            LT_WARN("ignored a %s message on the request socket", ipc_msg_type_name(c->env.type));
        }
    }
}

/* ---- steps ---- */

static int send_step(core_t *c, char *err) {
    eng_plan_t *pl = &c->plan;
    int rc = eng_sched_step(c->sched, lt_now_ns(), pl);
    if (rc) return rc;
    release_retired(c); /* the step released every finished request: nothing points at them */
    if (pl->n_seqs == 0 && pl->n_finished == 0) return LT_OK;
    core_spans_step(c, tel_now_unix_ns());
    ipc_step_t *s = &c->step;
    s->step_id = pl->step_id;
    s->n_tokens = pl->n_tokens;
    s->tokens = (int32_t *)pl->tokens;
    s->pos = (int32_t *)pl->pos;
    s->seq_idx = (int32_t *)pl->seq_idx;
    s->n_seqs = pl->n_seqs;
    s->n_new = 0;
    for (int i = 0; i < pl->n_seqs; i++) {
        const eng_plan_seq_t *q = &pl->seqs[i];
        s->seq_ids[i] = q->id;
        s->table_lens[i] = q->n_blocks;
        memcpy(s->tables + (size_t)i * s->max_blocks, q->block_table,
               sizeof(int32_t) * (size_t)q->n_blocks);
        if (q->flags & ENG_SEQ_NEW) {
            const core_req_t *r = q->user;
            ipc_step_new_t *nw = &s->news[s->n_new];
            nw->id = q->id;
            nw->ident = r->ident;
            nw->params = r->params;
            nw->n_prompt = r->n_prompt;
            memcpy(s->new_prompts + (size_t)s->n_new * s->max_prompt, r->prompt,
                   sizeof(int32_t) * (size_t)r->n_prompt);
            s->n_new++;
        }
    }
    s->n_sampled = pl->n_sampled;
    s->sample_rows = (int32_t *)pl->sample_rows;
    s->sample_seqs = (int32_t *)pl->sample_seqs;
    s->n_finished = pl->n_finished;
    s->finished = (uint64_t *)pl->finished_ids;
    const void *data;
    size_t len;
    ipc_trace_ctx_t tc = {ipc_str(c->step_traceparent), {NULL, 0}};
    if ((rc = ipc_msg_step_write(&c->wr, s, c->step_traceparent[0] ? &tc : NULL, &data, &len, err)))
        return rc;
    /* test aid: LANTERN_FAULT_CORRUPT_STEP=N sends step N cut in half (a malformed message the
     * workers must refuse with an error rather than drop) */
    if (c->fault_corrupt_step && pl->step_id == c->fault_corrupt_step) {
        LT_WARN("fault injection: step %llu sent corrupted", (unsigned long long)pl->step_id);
        len /= 2;
    }
    uint64_t t0 = lt_now_ns();
    for (;;) {
        rc = ipc_ring_push(c->ring, data, len, 1000, err);
        if (rc != IPC_AGAIN) break;
        for (int i = 0; i < c->args.tensor_parallel_size; i++)
            if (lt_proc_check(&c->workers[i], NULL))
                return lt_errf(err, LT_ERR_IO, "worker %d died", i);
        /* the ring is full: a worker has not taken the earlier steps (a hang) */
        uint64_t wd = (uint64_t)c->args.watchdog_timeout_s * 1000000000ull;
        if (wd && lt_now_ns() - t0 > wd) {
            c->step_started_ns = t0;
            return CORE_STALLED;
        }
    }
    if (rc) return rc;
    c->in_flight = pl->n_seqs > 0;
    c->step_started_ns = lt_now_ns();
    if (c->in_flight) core_metrics_step_sent(c, c->step_started_ns);
    return LT_OK;
}

static int on_result(core_t *c, char *err) {
    int rc = ipc_msg_result_read(&c->env, &c->result, err);
    if (rc) return rc;
    if (c->in_flight && c->result.error) /* a worker refused the step (or could not read it) */
        return lt_errf(err, LT_ERR_IO, "worker failed step %llu: %s",
                       (unsigned long long)c->plan.step_id, c->result.err_text);
    if (!c->in_flight || c->result.step_id != c->plan.step_id) {
        LT_WARN("ignored a result for step %llu", (unsigned long long)c->result.step_id);
        return LT_OK;
    }
    if (c->result.error)
        return lt_errf(err, LT_ERR_IO, "worker failed step %llu: %s",
                       (unsigned long long)c->result.step_id, c->result.err_text);
    if (c->result.n != c->plan.n_sampled)
        return lt_errf(err, LT_ERR_FORMAT, "result has %d tokens for %d sampled sequences",
                       c->result.n, c->plan.n_sampled);
    for (int i = 0; i < c->result.n; i++) {
        const ipc_out_item_t *ri = &c->result.items[i];
        c->sampled[i] = ri->token;
        if (ri->token >= 0) continue;
        /* rank 0 could not sample this request as it asked (it holds no state for it): that
         * request alone fails; the placeholder is skipped, the request no longer running */
        c->sampled[i] = 0;
        core_req_t *r = find_req(c, ri->id);
        if (!r || eng_sched_abort(c->sched, ri->id, lt_now_ns()) != LT_OK) continue;
        const char *why = "the worker holds no sampling state for this request (no free sequence "
                          "slot); it fails rather than being sampled differently";
        LT_ERROR("req=%s: %s", r->ident.id, why);
        fail_request(c, ri->id, r->ident.id, IPC_FINISH_ERROR, why);
        core_spans_finish(c, r, why, true);
        core_metrics_finish(c, r, true);
        free_req(c, r);
    }
    eng_outputs_t outs;
    uint64_t now = lt_now_ns();
    c->in_flight = false;
    if ((rc = eng_sched_update(c->sched, &c->plan, c->sampled, c->result.n, now, &outs)))
        return lt_errf(err, rc, "scheduler update failed");
    core_spans_result(c, &outs, tel_now_unix_ns()); /* before finished requests are freed */
    core_metrics_result(c, &outs, now);
    for (int i = 0; i < outs.n; i++) {
        const eng_output_t *o = &outs.items[i];
        ipc_out_item_t *it = out_item(c, err);
        if (!it) return LT_ERR_IO;
        it->id = o->id;
        snprintf(it->rid, sizeof it->rid, "%s", ((const core_req_t *)o->user)->ident.id);
        it->token = o->token;
        /* the result items are in plan order; outputs too, minus aborted entries */
        for (int j = 0; j < c->result.n; j++) {
            if (c->result.items[j].id != o->id) continue;
            it->logprob = c->result.items[j].logprob;
            it->n_top = c->result.items[j].n_top;
            memcpy(it->top_ids, c->result.items[j].top_ids, sizeof(int32_t) * (size_t)it->n_top);
            memcpy(it->top_logprobs, c->result.items[j].top_logprobs,
                   sizeof(float) * (size_t)it->n_top);
            break;
        }
        it->finish = o->finish == ENG_FINISH_STOP     ? IPC_FINISH_STOP
                     : o->finish == ENG_FINISH_LENGTH ? IPC_FINISH_LENGTH
                     : o->finish == ENG_FINISH_ABORT  ? IPC_FINISH_ABORT
                                                      : IPC_FINISH_NONE;
        it->stop_token = o->stop_token;
        it->n_prompt = o->n_prompt;
        it->n_cached = o->n_cached_tokens;
        if (o->finish != ENG_FINISH_NONE && o->events) {
            item_timings(it, o->events);
            free_req(c, (core_req_t *)o->user);
        }
    }
    return flush_output(c, c->plan.step_id, err);
}

/* Fails every request the scheduler holds (a worker died): each gets an error output. */
static void fail_all(core_t *c, const char *why) {
    int cap = c->args.max_num_seqs * 4 + 1024;
    eng_req_info_t *infos = malloc(sizeof *infos * (size_t)cap);
    if (!infos) return;
    int n = eng_sched_list(c->sched, lt_now_ns(), infos, cap);
    char err[LT_ERR_LEN];
    for (int i = 0; i < n && i < cap; i++) {
        core_req_t *r = (core_req_t *)infos[i].user;
        fail_request(c, infos[i].id, r ? r->ident.id : "", IPC_FINISH_ERROR, why);
        if (r) core_spans_finish(c, r, why, true);
        if (r) core_metrics_finish(c, r, true);
    }
    flush_output(c, 0, err);
    free(infos);
}

/* ---- start-up ---- */

/* Every worker gets the engine's own arguments (one argv writer, ipc/args.h) and its place. */
static int spawn_workers(core_t *c, char *err) {
    for (int r = 0; r < c->args.tensor_parallel_size; r++) {
        ipc_argv_t av = {0};
        if (ipc_argv_add(&av, "lantern") || ipc_argv_add(&av, "__worker") ||
            ipc_engine_args_to_argv(&c->args, &av) || ipc_argv_addf(&av, "rank", "%d", r) ||
            ipc_argv_addf(&av, "ring", "%s", c->ring_name) ||
            ipc_argv_addf(&av, "allreduce", "%s", c->ar_name) ||
            ipc_argv_addf(&av, "results", "%s", c->res_ep) ||
            ipc_argv_addf(&av, "metrics", "lantern-%d-metrics", c->tree_pid))
            return lt_errf(err, LT_ERR_RANGE, "a worker's command line is too long");
        int rc = lt_proc_spawn(av.argv, &c->workers[r], err);
        if (rc) return rc;
    }
    return LT_OK;
}

/* Waits for every worker's HELLO (model loaded, KV allocated), watching for deaths. */
static int wait_workers(core_t *c, char *err) {
    int ready = 0, min_blocks = 0;
    uint64_t deadline = lt_now_ns() + 600ull * 1000000000ull;
    int dead = -1, dead_status = 0;
    while (ready < c->args.tensor_parallel_size) {
        if (lt_sig_shutdown) return lt_errf(err, LT_ERR_IO, "shut down during start-up");
        if (lt_now_ns() > deadline) return lt_errf(err, LT_ERR_IO, "workers did not start in time");
        /* a worker that fails says why before it exits: read its message before its death */
        int rc = ipc_sock_recv_envelope(c->res, NULL, &c->env, dead >= 0 ? 300 : 100, err);
        if (rc == IPC_AGAIN) {
            if (dead >= 0) {
                char why[96];
                return lt_errf(err, LT_ERR_IO, "worker %d %s during start-up", dead,
                               lt_proc_status_str(dead_status, why, sizeof why));
            }
            for (int i = 0; i < c->args.tensor_parallel_size && dead < 0; i++)
                if (c->workers[i].pid > 0 && lt_proc_check(&c->workers[i], &dead_status)) dead = i;
            continue;
        }
        if (rc < 0) return rc;
        ipc_hello_t h;
        if ((rc = ipc_msg_hello_read(&c->env, &h, err)) == IPC_CHILD_ERROR)
            return CORE_CHILD_FAILED;
        if (rc) return rc;
        if (ready == 0 || h.num_blocks < min_blocks) min_blocks = h.num_blocks;
        if (h.rank == 0) c->info = h;
        ready++;
    }
    c->info.num_blocks = min_blocks;
    c->info.role = 0;
    c->info.pid = (int)getpid();
    return LT_OK;
}

static int alloc_buffers(core_t *c, char *err) {
    const int max_seqs = c->args.max_num_seqs, bs = c->args.block_size;
    int mb = (c->info.max_model_len + bs - 1) / bs;
    ipc_step_t *s = &c->step;
    s->max_blocks = mb;
    s->max_prompt = c->info.max_model_len;
    s->seq_ids = malloc(sizeof(uint64_t) * (size_t)max_seqs);
    s->table_lens = malloc(sizeof(int32_t) * (size_t)max_seqs);
    s->tables = malloc(sizeof(int32_t) * (size_t)max_seqs * (size_t)mb);
    s->news = malloc(sizeof(ipc_step_new_t) * (size_t)max_seqs);
    s->new_prompts = malloc(sizeof(int32_t) * (size_t)max_seqs * (size_t)s->max_prompt);
    c->add.prompt_cap = c->info.max_model_len;
    c->add.prompt = malloc(sizeof(int32_t) * (size_t)c->add.prompt_cap);
    c->result.cap = max_seqs;
    c->result.items = malloc(sizeof(ipc_out_item_t) * (size_t)max_seqs);
    c->out_cap = max_seqs + 64;
    c->output.items = malloc(sizeof(ipc_out_item_t) * (size_t)c->out_cap);
    c->output.items_cap = c->out_cap;
    c->sampled = malloc(sizeof(int32_t) * (size_t)max_seqs);
    if (!s->seq_ids || !s->table_lens || !s->tables || !s->news || !s->new_prompts ||
        !c->add.prompt || !c->result.items || !c->output.items || !c->sampled)
        return lt_errf(err, LT_ERR_NOMEM, "engine: out of memory for buffers");
    return LT_OK;
}

static void free_buffers(core_t *c) {
    free(c->step.seq_ids);
    free(c->step.table_lens);
    free(c->step.tables);
    free(c->step.news);
    free(c->step.new_prompts);
    free(c->add.prompt);
    free(c->result.items);
    free(c->output.items);
    free(c->sampled);
}

/* ---- state dump ---- */

static void req_label(const void *user, char *buf, size_t n) {
    const core_req_t *r = user;
    if (!r) {
        snprintf(buf, n, "req=?");
        return;
    }
    snprintf(buf, n, "req=%s traceparent=%s", r->ident.id,
             r->ident.traceparent[0] ? r->ident.traceparent : "-");
}

/* The JSON dump (--dump-dir): arguments, scheduler, every request, recent steps. */
static void dump_json(core_t *c) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "engine_args", ipc_engine_args_json(&c->args));
    eng_sched_stats_t st;
    eng_sched_get_stats(c->sched, &st);
    cJSON *sc = cJSON_AddObjectToObject(doc, "scheduler");
    cJSON_AddNumberToObject(sc, "running", st.n_running);
    cJSON_AddNumberToObject(sc, "waiting", st.n_waiting);
    cJSON_AddNumberToObject(sc, "kv_blocks", st.kv.num_blocks);
    cJSON_AddNumberToObject(sc, "kv_used", st.kv.used);
    cJSON_AddNumberToObject(sc, "kv_usage", st.kv.usage);
    cJSON_AddNumberToObject(sc, "prefix_cache_queries", (double)st.kv.prefix_queries);
    cJSON_AddNumberToObject(sc, "prefix_cache_hits", (double)st.kv.prefix_hits);
    cJSON_AddNumberToObject(sc, "preemptions", (double)st.num_preemptions);
    cJSON_AddNumberToObject(sc, "steps", (double)st.num_steps);
    uint64_t now = lt_now_ns();
    if (c->in_flight) {
        cJSON *f = cJSON_AddObjectToObject(doc, "step_in_flight");
        cJSON_AddNumberToObject(f, "step_id", (double)c->plan.step_id);
        cJSON_AddNumberToObject(f, "age_s", (double)(now - c->step_started_ns) / 1e9);
    }
    int cap = c->args.max_num_seqs * 4 + 1024;
    eng_req_info_t *in = malloc(sizeof *in * (size_t)cap);
    cJSON *reqs = cJSON_AddArrayToObject(doc, "requests");
    int n = in ? eng_sched_list(c->sched, now, in, cap) : 0;
    for (int i = 0; i < n && i < cap; i++) {
        const core_req_t *r = in[i].user;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "request_id", r ? r->ident.id : "");
        cJSON_AddStringToObject(o, "traceparent", r ? r->ident.traceparent : "");
        cJSON_AddNumberToObject(o, "engine_id", (double)in[i].id);
        cJSON_AddStringToObject(o, "phase", eng_phase_str(in[i].phase));
        cJSON_AddNumberToObject(o, "prompt_tokens", in[i].n_prompt);
        cJSON_AddNumberToObject(o, "computed_tokens", in[i].n_computed);
        cJSON_AddNumberToObject(o, "output_tokens", in[i].n_output);
        cJSON_AddNumberToObject(o, "blocks", in[i].n_blocks);
        cJSON_AddNumberToObject(o, "preemptions", in[i].n_preemptions);
        cJSON_AddNumberToObject(o, "age_s", (double)in[i].age_ns / 1e9);
        cJSON_AddItemToArray(reqs, o);
    }
    free(in);
    eng_step_info_t steps[ENG_STEP_HISTORY];
    int ns = eng_sched_recent_steps(c->sched, steps, ENG_STEP_HISTORY);
    cJSON *sa = cJSON_AddArrayToObject(doc, "recent_steps");
    for (int i = 0; i < ns; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "step_id", (double)steps[i].step_id);
        cJSON_AddNumberToObject(o, "duration_ms", (double)steps[i].dur_ns / 1e6);
        cJSON_AddNumberToObject(o, "sequences", steps[i].n_seqs);
        cJSON_AddNumberToObject(o, "tokens", steps[i].n_tokens);
        cJSON_AddItemToArray(sa, o);
    }
    char err[LT_ERR_LEN];
    if (lt_dump_write(c->args.dump_dir, "engine", -1, doc, err)) LT_WARN("%s", err);
}

static void dump_state(core_t *c) {
    char args[512];
    ipc_engine_args_str(&c->args, args, sizeof args);
    for (int i = 0; i < c->args.tensor_parallel_size; i++)
        if (c->workers[i].pid > 0) kill(c->workers[i].pid, SIGUSR1);
    LT_INFO("state dump: %d workers, model=%s %s", c->args.tensor_parallel_size, c->args.model,
            args);
    /* the scheduler writes its dump to a stream; each of its lines goes out as a log line, so
     * that it carries the engine's tag like every other line of this process */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return;
    eng_sched_dump(c->sched, lt_now_ns(), req_label, f);
    fclose(f);
    for (char *line = text, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        LT_INFO("state dump: %s", line);
    }
    free(text);
    if (c->args.dump_dir) dump_json(c);
}

/* ---- the watchdog ---- */

/* A step has been in flight past --watchdog-timeout (a worker hangs, or died without the kernel
 * telling us): marks the engine unhealthy for /health, names the stalled step and its requests,
 * dumps the whole state first (logs and, with --dump-dir, JSON), and leaves the message every
 * request fails with in err. */
static void stalled(core_t *c, char *err) {
    double s = (double)(lt_now_ns() - c->step_started_ns) / 1e9;
    if (c->metrics) atomic_store(&c->metrics->engine.stalled, 1);
    char ids[512] = "";
    for (int i = 0, n = 0; i < c->plan.n_seqs; i++) {
        const core_req_t *r = c->plan.seqs[i].user;
        n += snprintf(ids + n, sizeof ids - (size_t)n, "%s%s", i ? " " : "", r->ident.id);
        if ((size_t)n >= sizeof ids) break;
    }
    LT_ERROR("watchdog: step %llu (%d sequences: %s) has not completed in %.1f s (timeout %d s): "
             "the engine is stalled",
             (unsigned long long)c->plan.step_id, c->plan.n_seqs, ids, s,
             c->args.watchdog_timeout_s);
    dump_state(c);
    snprintf(err, LT_ERR_LEN, "engine stalled: step %llu did not complete in %d s",
             (unsigned long long)c->plan.step_id, c->args.watchdog_timeout_s);
}

/* ---- start-up ---- */

static void usage(void) {
    fprintf(stderr, "lantern __engine: internal; started by the frontend\n");
}

/* The engine's own flags (where it sits in the tree) beside the engine arguments. */
enum { OPT_TREE_PID = 1, OPT_INPUT, OPT_OUTPUT };

static int parse_args(core_t *c, int argc, char **argv) {
    static const struct option own[] = {{"tree-pid", required_argument, 0, OPT_TREE_PID},
                                        {"input", required_argument, 0, OPT_INPUT},
                                        {"output", required_argument, 0, OPT_OUTPUT}};
    struct option opts[32];
    char err[LT_ERR_LEN];
    ipc_engine_args_defaults(&c->args);
    if (ipc_engine_opts_table(own, 3, opts, 32) < 0) return 2;
    int o;
    optind = 1;
    while ((o = ipc_engine_getopt(argc, argv, opts, &c->args, "lantern __engine")) != -1) {
        if (o == IPC_OPT_BAD) return 2;
        switch (o) {
        case OPT_TREE_PID: c->tree_pid = atoi(optarg); break;
        case OPT_INPUT: c->in_ep = optarg; break;
        case OPT_OUTPUT: c->out_ep = optarg; break;
        default: usage(); return 2;
        }
    }
    if (!c->args.model || !c->in_ep || !c->out_ep || c->tree_pid <= 0 || optind < argc ||
        ipc_engine_args_resolve(&c->args, err)) {
        usage();
        return 2;
    }
    return 0;
}

/* Channels, the step ring and the all-reduce segment; then the workers and the scheduler. */
static int start(core_t *c, char *err) {
    const int tp = c->args.tensor_parallel_size;
    if (ipc_ctx_create(&c->ctx, err) ||
        ipc_name(c->ring_name, sizeof c->ring_name, c->tree_pid, "step", err) ||
        ipc_name(c->ar_name, sizeof c->ar_name, c->tree_pid, "allreduce", err) ||
        ipc_endpoint(c->res_ep, sizeof c->res_ep, c->tree_pid, "results", err) ||
        ipc_sock_create(c->ctx, IPC_PULL, 0, &c->res, err) ||
        ipc_sock_bind(c->res, c->res_ep, err) ||
        ipc_sock_create(c->ctx, IPC_ROUTER, 0, &c->in, err) ||
        ipc_sock_bind(c->in, c->in_ep, err) || ipc_sock_create(c->ctx, IPC_PUSH, 0, &c->out, err) ||
        ipc_sock_connect(c->out, c->out_ep, err))
        return LT_ERR_IO;
    ipc_ring_opts_t ro = {.ctx = c->ctx};
    if (ipc_ring_create(c->ring_name, CORE_RING_CHUNKS, CORE_RING_CHUNK, (uint32_t)tp, &ro,
                        &c->ring, err))
        return LT_ERR_IO;
    if (tp > 1 && ipc_allreduce_create(c->ar_name, IPC_NO_RANK, tp,
                                       (size_t)c->args.max_num_batched_tokens * 16384, &c->ar, err))
        return LT_ERR_IO;
    int rc;
    if ((rc = spawn_workers(c, err)) || (rc = wait_workers(c, err))) return rc;
    eng_sched_config_t sc;
    eng_sched_config_defaults(&sc);
    sc.num_blocks = c->info.num_blocks;
    sc.block_size = c->args.block_size;
    sc.max_num_seqs = c->args.max_num_seqs;
    sc.max_num_batched_tokens = c->args.max_num_batched_tokens;
    sc.max_step_ms = c->args.max_step_ms;
    sc.max_model_len = c->info.max_model_len;
    sc.enable_prefix_caching = c->args.enable_prefix_caching;
    sc.vocab_size = c->info.vocab;
    if (eng_sched_create(&sc, &c->sched, err) || alloc_buffers(c, err) || core_spans_init(c, err))
        return LT_ERR_IO;
    core_metrics_ready(c);
    const void *data;
    size_t len;
    if (ipc_msg_hello_write(&c->wr, &c->info, &data, &len, err) ||
        ipc_sock_send(c->out, NULL, data, len, 5000, err))
        return LT_ERR_IO;
    LT_INFO("ready: %d worker(s), %d KV blocks of %d tokens, max model len %d", tp,
            c->info.num_blocks, c->args.block_size, c->info.max_model_len);
    return LT_OK;
}

/* A worker reported why it could not start: pass its reason on to the frontend as the engine's
 * own start-up error, so the user reads it once. */
static void report_child_failure(core_t *c, const char *why) {
    const void *data;
    size_t len;
    char e2[LT_ERR_LEN];
    if (ipc_msg_error_write(&c->wr, LT_ERR_IO, why, &data, &len, e2) == 0 &&
        ipc_sock_send(c->out, NULL, data, len, 1000, e2) == 0)
        usleep(100000); /* sockets close with linger 0: let the report leave first */
    else
        LT_ERROR("%s", why);
}

/* ---- the loop ---- */

/* Runs until SIGTERM/SHUTDOWN (0) or a failure that fails every request (1). */
static int run(core_t *c) {
    char err[LT_ERR_LEN];
    const int tp = c->args.tensor_parallel_size;
    while (!lt_sig_shutdown) {
        if (lt_sig_dump) {
            lt_sig_dump = 0;
            dump_state(c);
        }
        ipc_poll_item_t items[2 + CORE_MAX_TP];
        int n = 0;
        items[n++] = (ipc_poll_item_t){.sock = c->in, .events = IPC_POLLIN};
        items[n++] = (ipc_poll_item_t){.sock = c->res, .events = IPC_POLLIN};
        for (int i = 0; i < tp; i++)
            items[n++] = (ipc_poll_item_t){.fd = c->workers[i].pidfd, .events = IPC_POLLIN};
        int timeout = c->in_flight ? 200 : eng_sched_has_work(c->sched) ? 0 : 100;
        if (ipc_poll(items, n, timeout, err) < 0) goto fail;
        for (int i = 0; i < tp; i++) {
            int st;
            if (lt_proc_check(&c->workers[i], &st)) {
                char why[96];
                snprintf(err, sizeof err, "worker %d %s", i,
                         lt_proc_status_str(st, why, sizeof why));
                goto fail;
            }
        }
        drain_input(c);
        core_metrics_gauges(c);
        while (c->in_flight) {
            int rc = ipc_sock_recv_envelope(c->res, NULL, &c->env, 0, err);
            if (rc == IPC_AGAIN) break;
            if (rc < 0 || (rc = on_result(c, err))) goto fail;
        }
        uint64_t wd = (uint64_t)c->args.watchdog_timeout_s * 1000000000ull;
        if (c->in_flight && wd && lt_now_ns() - c->step_started_ns > wd) goto stalled;
        if (flush_output(c, 0, err)) goto fail;
        if (!c->in_flight && eng_sched_has_work(c->sched)) {
            int rc = send_step(c, err);
            if (rc == CORE_STALLED) goto stalled;
            if (rc) goto fail;
        }
    }
    return 0;
stalled:
    stalled(c, err);
fail:
    LT_ERROR("%s: failing every request and shutting down", err);
    fail_all(c, err);
    return 1;
}

int eng_core_main(int argc, char **argv) {
    core_t c = {0};
    int status = parse_args(&c, argc, argv);
    if (status) return status;
    lt_log_set_role("engine", -1);
    lt_signals_install();
    char err[LT_ERR_LEN];
    tel_process_config_t tc = {.role = "engine",
                               .rank = -1,
                               .tensor_parallel_size = c.args.tensor_parallel_size,
                               .otlp_endpoint = c.args.otlp_traces_endpoint,
                               .pool_size = 4096};
    if (tel_process_start(&tc, err)) {
        LT_ERROR("%s", err);
        return 2;
    }
    if (core_metrics_attach(&c, err)) LT_WARN("%s: no metrics from the engine", err);
    const char *fault = getenv("LANTERN_FAULT_CORRUPT_STEP");
    if (fault && *fault) c.fault_corrupt_step = strtoull(fault, NULL, 10);
    bool wr_ok = false, env_ok = false;
    for (int i = 0; i < CORE_MAX_TP; i++) c.workers[i] = (lt_child_t){-1, -1};
    status = 1;
    if (ipc_writer_init(&c.wr, 1 << 16, err) || !(wr_ok = true) ||
        ipc_envelope_init(&c.env, 0, err) || !(env_ok = true)) {
        LT_ERROR("%s", err);
    } else {
        int rc = start(&c, err);
        if (rc == CORE_CHILD_FAILED)
            report_child_failure(&c, err);
        else if (rc)
            LT_ERROR("%s", err);
        else
            status = run(&c);
    }
    for (int i = 0; i < c.args.tensor_parallel_size && i < CORE_MAX_TP; i++)
        lt_proc_stop(&c.workers[i], SIGTERM, status ? 100 : 2000);
    if (c.ring) ipc_ring_destroy(&c.ring);
    if (c.ar) ipc_allreduce_destroy(&c.ar);
    ipc_sock_destroy(&c.in);
    ipc_sock_destroy(&c.out);
    ipc_sock_destroy(&c.res);
    ipc_ctx_destroy(&c.ctx);
    if (wr_ok) ipc_writer_fini(&c.wr);
    if (env_ok) ipc_envelope_fini(&c.env);
    eng_sched_destroy(&c.sched);
    while (c.reqs) free_req(&c, c.reqs);
    release_retired(&c);
    free_buffers(&c);
    core_spans_fini(&c);
    tel_process_stop(5000);
    tel_metrics_detach(&c.metrics);
    return status;
}
