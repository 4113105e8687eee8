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
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "ipc.h"
#include "lt.h"
#include "msg.h"
#include "proc.h"

#define CORE_MAX_TP      64
#define CORE_RING_CHUNKS 8
#define CORE_RING_CHUNK  (256 * 1024)
/* wait_workers: a worker reported a start-up error (text in err), to pass on to the frontend */
#define CORE_CHILD_FAILED (-100)

/* What the engine keeps per request besides the scheduler's state: what rank 0 needs when the
 * sequence first reaches it. */
typedef struct core_req {
    struct core_req *prev, *next; /* every live request, for aborts and shutdown */
    uint64_t id;
    ipc_sampling_t sampling;
    int32_t *prompt;
    int n_prompt;
} core_req_t;

typedef struct core {
    /* arguments */
    const char *model, *in_ep, *out_ep;
    int tp, tree_pid, max_seqs, max_batched, max_len, block_size, threads;
    long long kv_mem;
    bool prefix_caching;
    /* children and channels */
    lt_child_t workers[CORE_MAX_TP];
    ipc_ctx_t *ctx;
    ipc_sock_t *in, *out, *res;
    ipc_ring_t *ring;
    ipc_allreduce_t *ar;
    char ring_name[128], ar_name[128], res_ep[256];
    /* state */
    eng_sched_t *sched;
    ipc_hello_t info;
    ipc_writer_t wr;
    ipc_envelope_t env;
    ipc_add_t add;
    ipc_step_t step;
    ipc_result_t result;
    ipc_output_t output;
    int out_cap;
    int32_t *sampled;
    bool in_flight;
    eng_plan_t plan;
    uint64_t step_started_ns;
    core_req_t *reqs; /* live requests (head of a doubly-linked list) */
} core_t;

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

static void fail_request(core_t *c, uint64_t id, int finish, const char *msg) {
    char err[LT_ERR_LEN];
    ipc_out_item_t *it = out_item(c, err);
    if (!it) return;
    it->id = id;
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

static void free_req(core_t *c, core_req_t *r) {
    if (!r) return;
    if (r->prev)
        r->prev->next = r->next;
    else if (c->reqs == r)
        c->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    free(r->prompt);
    free(r);
}

static core_req_t *find_req(core_t *c, uint64_t id) {
    for (core_req_t *r = c->reqs; r; r = r->next)
        if (r->id == id) return r;
    return NULL;
}

/* ---- requests from the frontend ---- */

static void on_add(core_t *c) {
    char err[LT_ERR_LEN];
    int rc = ipc_msg_add_read(&c->env, &c->add, err);
    if (rc) {
        LT_ERROR("dropped a malformed ADD message: %s", err);
        if (c->add.id) fail_request(c, c->add.id, IPC_FINISH_ERROR, err);
        return;
    }
    core_req_t *r = calloc(1, sizeof *r);
    if (!r || !(r->prompt = malloc(sizeof(int32_t) * (size_t)c->add.n_prompt))) {
        free(r);
        fail_request(c, c->add.id, IPC_FINISH_ERROR, "engine out of memory");
        return;
    }
    r->id = c->add.id;
    r->sampling = c->add.sampling;
    r->n_prompt = c->add.n_prompt;
    memcpy(r->prompt, c->add.prompt, sizeof(int32_t) * (size_t)r->n_prompt);
    uint64_t now = lt_now_ns();
    eng_req_params_t p = {.id = r->id,
                          .prompt = r->prompt,
                          .n_prompt = r->n_prompt,
                          .max_tokens = c->add.max_tokens,
                          .min_tokens = c->add.min_tokens,
                          .ignore_eos = c->add.ignore_eos,
                          .eos_id = c->info.eos_id,
                          .stop_token_ids = c->add.stop_ids,
                          .n_stop_token_ids = c->add.n_stop_ids,
                          .arrival_ns = now,
                          .user = r};
    if ((rc = eng_sched_add(c->sched, &p, now, err))) {
        fail_request(c, r->id, IPC_FINISH_ERROR, err);
        free(r->prompt);
        free(r);
        return;
    }
    link_req(c, r);
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
            uint64_t id = 0;
            if (c->env.request_id.ptr && c->env.request_id.len < 24) {
                char buf[24];
                memcpy(buf, c->env.request_id.ptr, c->env.request_id.len);
                buf[c->env.request_id.len] = '\0';
                id = strtoull(buf, NULL, 10);
            }
            if (id && eng_sched_abort(c->sched, id, lt_now_ns()) == LT_OK) {
                fail_request(c, id, IPC_FINISH_ABORT, NULL);
                /* an abort after a stop string is a normal end: its timings still count */
                const eng_req_events_t *ev = eng_sched_events(c->sched, id);
                if (ev && c->output.n_items > 0 && c->output.items[c->output.n_items - 1].id == id)
                    item_timings(&c->output.items[c->output.n_items - 1], ev);
                /* the scheduler never dereferences `user`, and an aborted request is never
                 * scheduled again: its sampling state can go now */
                free_req(c, find_req(c, id));
            }
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
    if (pl->n_seqs == 0 && pl->n_finished == 0) return LT_OK;
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
            nw->sampling = r->sampling;
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
    if ((rc = ipc_msg_step_write(&c->wr, s, NULL, &data, &len, err))) return rc;
    for (;;) {
        rc = ipc_ring_push(c->ring, data, len, 1000, err);
        if (rc != IPC_AGAIN) break;
        for (int i = 0; i < c->tp; i++)
            if (lt_proc_check(&c->workers[i], NULL))
                return lt_errf(err, LT_ERR_IO, "worker %d died", i);
    }
    if (rc) return rc;
    c->in_flight = pl->n_seqs > 0;
    c->step_started_ns = lt_now_ns();
    return LT_OK;
}

static int on_result(core_t *c, char *err) {
    int rc = ipc_msg_result_read(&c->env, &c->result, err);
    if (rc) return rc;
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
    for (int i = 0; i < c->result.n; i++) c->sampled[i] = c->result.items[i].token;
    eng_outputs_t outs;
    uint64_t now = lt_now_ns();
    c->in_flight = false;
    if ((rc = eng_sched_update(c->sched, &c->plan, c->sampled, c->result.n, now, &outs)))
        return lt_errf(err, rc, "scheduler update failed");
    for (int i = 0; i < outs.n; i++) {
        const eng_output_t *o = &outs.items[i];
        ipc_out_item_t *it = out_item(c, err);
        if (!it) return LT_ERR_IO;
        it->id = o->id;
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
    int cap = c->max_seqs * 4 + 1024;
    eng_req_info_t *infos = malloc(sizeof *infos * (size_t)cap);
    if (!infos) return;
    int n = eng_sched_list(c->sched, lt_now_ns(), infos, cap);
    char err[LT_ERR_LEN];
    for (int i = 0; i < n; i++) fail_request(c, infos[i].id, IPC_FINISH_ERROR, why);
    flush_output(c, 0, err);
    free(infos);
}

/* ---- start-up ---- */

static int spawn_workers(core_t *c, char *err) {
    char rank[16], tp[16], seqs[16], batched[16], len[16], bs[16], kvm[32], thr[16];
    snprintf(tp, sizeof tp, "%d", c->tp);
    snprintf(seqs, sizeof seqs, "%d", c->max_seqs);
    snprintf(batched, sizeof batched, "%d", c->max_batched);
    snprintf(len, sizeof len, "%d", c->max_len);
    snprintf(bs, sizeof bs, "%d", c->block_size);
    snprintf(kvm, sizeof kvm, "%lld", c->kv_mem);
    snprintf(thr, sizeof thr, "%d", c->threads);
    for (int r = 0; r < c->tp; r++) {
        snprintf(rank, sizeof rank, "%d", r);
        char *argv[] = {"lantern",
                        "__worker",
                        "--model",
                        (char *)c->model,
                        "--rank",
                        rank,
                        "--tp",
                        tp,
                        "--ring",
                        c->ring_name,
                        "--allreduce",
                        c->ar_name,
                        "--results",
                        c->res_ep,
                        "--max-num-seqs",
                        seqs,
                        "--max-num-batched-tokens",
                        batched,
                        "--max-model-len",
                        len,
                        "--block-size",
                        bs,
                        "--kv-cache-memory",
                        kvm,
                        "--threads",
                        thr,
                        NULL};
        int rc = lt_proc_spawn(argv, &c->workers[r], err);
        if (rc) return rc;
    }
    return LT_OK;
}

/* Waits for every worker's HELLO (model loaded, KV allocated), watching for deaths. */
static int wait_workers(core_t *c, char *err) {
    int ready = 0, min_blocks = 0;
    uint64_t deadline = lt_now_ns() + 600ull * 1000000000ull;
    int dead = -1, dead_status = 0;
    while (ready < c->tp) {
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
            for (int i = 0; i < c->tp && dead < 0; i++)
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
    int mb = (c->info.max_model_len + c->block_size - 1) / c->block_size;
    ipc_step_t *s = &c->step;
    s->max_blocks = mb;
    s->max_prompt = c->info.max_model_len;
    s->seq_ids = malloc(sizeof(uint64_t) * (size_t)c->max_seqs);
    s->table_lens = malloc(sizeof(int32_t) * (size_t)c->max_seqs);
    s->tables = malloc(sizeof(int32_t) * (size_t)c->max_seqs * (size_t)mb);
    s->news = malloc(sizeof(ipc_step_new_t) * (size_t)c->max_seqs);
    s->new_prompts = malloc(sizeof(int32_t) * (size_t)c->max_seqs * (size_t)s->max_prompt);
    c->add.prompt_cap = c->info.max_model_len;
    c->add.prompt = malloc(sizeof(int32_t) * (size_t)c->add.prompt_cap);
    c->result.cap = c->max_seqs;
    c->result.items = malloc(sizeof(ipc_out_item_t) * (size_t)c->max_seqs);
    c->out_cap = c->max_seqs + 64;
    c->output.items = malloc(sizeof(ipc_out_item_t) * (size_t)c->out_cap);
    c->output.items_cap = c->out_cap;
    c->sampled = malloc(sizeof(int32_t) * (size_t)c->max_seqs);
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

/* ---- main ---- */

int eng_core_main(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"tp", required_argument, 0, 't'},
                                         {"input", required_argument, 0, 'i'},
                                         {"output", required_argument, 0, 'o'},
                                         {"tree-pid", required_argument, 0, 'P'},
                                         {"max-num-seqs", required_argument, 0, 's'},
                                         {"max-num-batched-tokens", required_argument, 0, 'b'},
                                         {"max-model-len", required_argument, 0, 'l'},
                                         {"block-size", required_argument, 0, 'B'},
                                         {"kv-cache-memory", required_argument, 0, 'k'},
                                         {"no-prefix-caching", no_argument, 0, 'n'},
                                         {"threads", required_argument, 0, 'T'},
                                         {0, 0, 0, 0}};
    core_t c = {.tp = 1,
                .max_seqs = 64,
                .max_batched = 2048,
                .block_size = 16,
                .kv_mem = 1ll << 30,
                .prefix_caching = true};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': c.model = optarg; break;
        case 't': c.tp = atoi(optarg); break;
        case 'i': c.in_ep = optarg; break;
        case 'o': c.out_ep = optarg; break;
        case 'P': c.tree_pid = atoi(optarg); break;
        case 's': c.max_seqs = atoi(optarg); break;
        case 'b': c.max_batched = atoi(optarg); break;
        case 'l': c.max_len = atoi(optarg); break;
        case 'B': c.block_size = atoi(optarg); break;
        case 'k': c.kv_mem = atoll(optarg); break;
        case 'n': c.prefix_caching = false; break;
        case 'T': c.threads = atoi(optarg); break;
        default: return 2;
        }
    }
    if (!c.model || !c.in_ep || !c.out_ep || c.tree_pid <= 0 || c.tp < 1 || c.tp > CORE_MAX_TP) {
        fprintf(stderr, "lantern __engine: internal; started by the frontend\n");
        return 2;
    }
    lt_log_set_role("engine", -1);
    lt_signals_install();
    char err[LT_ERR_LEN];
    int status = 1;
    bool wr_ok = false, env_ok = false;
    for (int i = 0; i < CORE_MAX_TP; i++) c.workers[i] = (lt_child_t){-1, -1};
    if (ipc_writer_init(&c.wr, 1 << 16, err) || !(wr_ok = true) ||
        ipc_envelope_init(&c.env, 0, err) || !(env_ok = true) || ipc_ctx_create(&c.ctx, err) ||
        ipc_name(c.ring_name, sizeof c.ring_name, c.tree_pid, "step", err) ||
        ipc_name(c.ar_name, sizeof c.ar_name, c.tree_pid, "allreduce", err) ||
        ipc_endpoint(c.res_ep, sizeof c.res_ep, c.tree_pid, "results", err) ||
        ipc_sock_create(c.ctx, IPC_PULL, 0, &c.res, err) || ipc_sock_bind(c.res, c.res_ep, err) ||
        ipc_sock_create(c.ctx, IPC_ROUTER, 0, &c.in, err) || ipc_sock_bind(c.in, c.in_ep, err) ||
        ipc_sock_create(c.ctx, IPC_PUSH, 0, &c.out, err) || ipc_sock_connect(c.out, c.out_ep, err))
        goto fail;
    ipc_ring_opts_t ro = {.ctx = c.ctx};
    if (ipc_ring_create(c.ring_name, CORE_RING_CHUNKS, CORE_RING_CHUNK, (uint32_t)c.tp, &ro,
                        &c.ring, err))
        goto fail;
    if (c.tp > 1 && ipc_allreduce_create(c.ar_name, IPC_NO_RANK, c.tp,
                                         (size_t)c.max_batched * 16384, &c.ar, err))
        goto fail;
    int wrc;
    if (spawn_workers(&c, err)) goto fail;
    if ((wrc = wait_workers(&c, err))) {
        const void *data;
        size_t len;
        char e2[LT_ERR_LEN];
        if (wrc == CORE_CHILD_FAILED &&
            ipc_msg_error_write(&c.wr, LT_ERR_IO, err, &data, &len, e2) == 0 &&
            ipc_sock_send(c.out, NULL, data, len, 1000, e2) == 0) {
            usleep(100000); /* sockets close with linger 0: let the report leave first */
            goto fail_quiet;
        }
        goto fail;
    }
    c.max_len = c.info.max_model_len;
    eng_sched_config_t sc;
    eng_sched_config_defaults(&sc);
    sc.num_blocks = c.info.num_blocks;
    sc.block_size = c.block_size;
    sc.max_num_seqs = c.max_seqs;
    sc.max_num_batched_tokens = c.max_batched;
    sc.max_model_len = c.info.max_model_len;
    sc.enable_prefix_caching = c.prefix_caching;
    sc.vocab_size = c.info.vocab;
    if (eng_sched_create(&sc, &c.sched, err) || alloc_buffers(&c, err)) goto fail;
    {
        const void *data;
        size_t len;
        if (ipc_msg_hello_write(&c.wr, &c.info, &data, &len, err) ||
            ipc_sock_send(c.out, NULL, data, len, 5000, err))
            goto fail;
    }
    LT_INFO("ready: %d worker(s), %d KV blocks of %d tokens, max model len %d", c.tp,
            c.info.num_blocks, c.block_size, c.info.max_model_len);

    while (!lt_sig_shutdown) {
        if (lt_sig_dump) {
            lt_sig_dump = 0;
            for (int i = 0; i < c.tp; i++)
                if (c.workers[i].pid > 0) kill(c.workers[i].pid, SIGUSR1);
            LT_INFO("state dump (pid %d, %d workers):", (int)getpid(), c.tp);
            eng_sched_dump(c.sched, lt_now_ns(), stderr);
        }
        ipc_poll_item_t items[2 + CORE_MAX_TP];
        int n = 0;
        items[n++] = (ipc_poll_item_t){.sock = c.in, .events = IPC_POLLIN};
        items[n++] = (ipc_poll_item_t){.sock = c.res, .events = IPC_POLLIN};
        for (int i = 0; i < c.tp; i++)
            items[n++] = (ipc_poll_item_t){.fd = c.workers[i].pidfd, .events = IPC_POLLIN};
        int timeout = c.in_flight ? 200 : eng_sched_has_work(c.sched) ? 0 : 100;
        if (ipc_poll(items, n, timeout, err) < 0) goto fail;
        for (int i = 0; i < c.tp; i++) {
            int st;
            if (lt_proc_check(&c.workers[i], &st)) {
                char why[96], msg[160];
                snprintf(msg, sizeof msg, "worker %d %s", i,
                         lt_proc_status_str(st, why, sizeof why));
                LT_ERROR("%s: failing every request and shutting down", msg);
                fail_all(&c, msg);
                goto fail_quiet;
            }
        }
        drain_input(&c);
        while (c.in_flight) {
            int rc = ipc_sock_recv_envelope(c.res, NULL, &c.env, 0, err);
            if (rc == IPC_AGAIN) break;
            if (rc < 0 || (rc = on_result(&c, err))) {
                LT_ERROR("%s", err);
                fail_all(&c, err);
                goto fail_quiet;
            }
        }
        if (flush_output(&c, 0, err)) goto fail;
        if (!c.in_flight && eng_sched_has_work(c.sched)) {
            int rc = send_step(&c, err);
            if (rc) {
                LT_ERROR("%s", err);
                fail_all(&c, err);
                goto fail_quiet;
            }
        }
    }
    status = 0;
    goto out;
fail:
    LT_ERROR("%s", err);
fail_quiet:
    status = 1;
out:
    for (int i = 0; i < c.tp; i++) lt_proc_stop(&c.workers[i], SIGTERM, status ? 100 : 2000);
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
    free_buffers(&c);
    return status;
}
