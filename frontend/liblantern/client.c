/*
 * client.c — liblantern (lantern.h): starts the engine-core process, sends requests as ADD
 * envelopes over a ZeroMQ DEALER, and routes the engine's per-step OUTPUT messages to their
 * requests from one background thread, which also watches the engine through its pidfd.
 *
 * Requests live in a small hash table under one mutex; waiters sleep on one condition variable
 * (broadcast per OUTPUT message: a message carries tokens for many requests at once).
 *
 * Back-pressure (lantern_set_output_limits): every queued output is counted in bytes for its
 * request, its group and the whole instance; the receiver thread checks the limits after each
 * OUTPUT message and aborts the group that is over (or, over the total, the one with the largest
 * backlog). The engine cannot hold a running request without decoding it, so stopping its work
 * means aborting it; its queue is dropped and replaced by one error output.
 *
 * Start-up also removes what crashed trees left behind (ipc_cleanup_stale) and checks that the
 * open-file limit leaves ZeroMQ enough descriptors, since ZeroMQ aborts the process when it runs
 * out.
 */
#define _GNU_SOURCE
#include "lantern.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

#include "args.h"
#include "dump.h"
#include "ipc.h"
#include "metrics.h"
#include "lt.h"
#include "msg.h"
#include "proc.h"

#define N_BUCKETS  1024
#define ITEM_BYTES ((uint64_t)sizeof(ipc_out_item_t)) /* what one queued output occupies */

/* Descriptors one process of the tree may hold open at start-up: ZeroMQ's context, io thread
 * and sockets (eventfds, epoll, listeners, one per connected peer), pidfds, logs. Measured: the
 * engine 22 at tensor-parallel size 1 and 31 at 4, the frontend 25 (plus one per HTTP
 * connection), a worker 14; about twice that here. */
#define FDS_BASE     64
#define FDS_PER_RANK 4

/* Trees this process runs: with none, files named with our pid are a previous holder's. */
static atomic_int g_trees;

typedef struct req {
    uint64_t id;
    char rid[IPC_REQUEST_ID_MAX + 1]; /* its identity, for aborts and dumps */
    uint64_t submitted_ns;
    bool done;
    bool tripped;           /* aborted by the output limits */
    lantern_group_t *group; /* the caller's, or NULL */
    uint64_t bytes;         /* outputs queued and not yet read */
    ipc_out_item_t *items;  /* queued outputs, copied from the engine's messages */
    int n, cap, head;
    void (*notify)(void *arg);
    void *notify_arg;
    struct req *next;
} req_t;

struct lantern {
    lantern_engine_args_t args;
    char model[4096];
    int tree_pid;
    lt_child_t engine;
    ipc_ctx_t *ctx;
    ipc_sock_t *in, *out;
    char in_ep[256], out_ep[256];
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu, send_mu;
    pthread_cond_t cv;
    req_t *buckets[N_BUCKETS];
    int n_pending;
    atomic_bool alive, stop;
    uint64_t next_id;
    char id_prefix[20]; /* made-up request ids: "<prefix>-<n>", random per instance */
    lantern_model_info_t info;
    lantern_stats_t stats;
    tel_metrics_shm_t *metrics; /* lantern-<pid>-metrics: the engine's and workers' figures */
    char death[200];
    bool counted; /* in g_trees */
    /* back-pressure (under mu) */
    uint64_t max_group_bytes, max_total_bytes; /* 0: no limit */
    uint64_t queued_bytes;                     /* every request's */
    struct {
        uint64_t id;
        char rid[IPC_REQUEST_ID_MAX + 1];
    } * aborts; /* collected under mu, sent after it (receiver thread) */
    int n_aborts, cap_aborts;
    ipc_writer_t wr; /* under send_mu */
    ipc_add_t add;
    ipc_envelope_t env; /* receiver thread */
    ipc_output_t output;
};

void lantern_request_default(lantern_request_t *r) {
    memset(r, 0, sizeof *r);
    ipc_params_defaults(&r->params);
}

/* ---- request table (under mu) ---- */

static req_t **req_slot(lantern_t *l, uint64_t id) {
    req_t **p = &l->buckets[id % N_BUCKETS];
    while (*p && (*p)->id != id) p = &(*p)->next;
    return p;
}

/* Counts `bytes` more (or fewer, negative) outputs waiting for request r. */
static void req_account(lantern_t *l, req_t *r, int64_t bytes) {
    r->bytes += (uint64_t)bytes;
    if (r->group) r->group->queued_bytes += (size_t)bytes;
    l->queued_bytes += (uint64_t)bytes;
}

/* Unlinks and frees the request at *slot. */
static void req_forget(lantern_t *l, req_t **slot) {
    req_t *r = *slot;
    *slot = r->next;
    l->n_pending--;
    req_account(l, r, -(int64_t)r->bytes);
    free(r->items);
    free(r);
}

static void req_push(lantern_t *l, req_t *r, const ipc_out_item_t *it) {
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        ipc_out_item_t *ni = realloc(r->items, sizeof *ni * (size_t)cap);
        if (!ni) return; /* out of memory: the output is lost, the finish still arrives */
        r->items = ni;
        r->cap = cap;
    }
    r->items[r->n++] = *it;
    req_account(l, r, (int64_t)ITEM_BYTES);
    if (it->finish != IPC_FINISH_NONE) r->done = true;
    if (r->notify) r->notify(r->notify_arg);
}

static void fail_all_locked(lantern_t *l, const char *why) {
    for (int b = 0; b < N_BUCKETS; b++)
        for (req_t *r = l->buckets[b]; r; r = r->next) {
            if (r->done) continue;
            ipc_out_item_t it = {.id = r->id, .token = -1, .finish = IPC_FINISH_ERROR};
            snprintf(it.error, sizeof it.error, "%.255s", why);
            req_push(l, r, &it);
        }
}

/* ---- back-pressure (under mu) ---- */

static uint64_t backlog(const req_t *r) {
    return r->group ? r->group->queued_bytes : r->bytes;
}

/* Drops what waits for r, ends it with an error saying why, and queues its ABORT when the
 * engine still runs it. */
static void trip_req(lantern_t *l, req_t *r, const char *why) {
    req_account(l, r, -(int64_t)r->bytes);
    r->head = r->n = 0;
    r->tripped = true;
    if (!r->done) {
        if (l->n_aborts == l->cap_aborts) {
            int cap = l->cap_aborts ? l->cap_aborts * 2 : 64;
            void *na = realloc(l->aborts, sizeof *l->aborts * (size_t)cap);
            if (na) {
                l->aborts = na;
                l->cap_aborts = cap;
            }
        }
        if (l->n_aborts < l->cap_aborts) { /* out of memory: it runs to its end, unread */
            l->aborts[l->n_aborts].id = r->id;
            memcpy(l->aborts[l->n_aborts].rid, r->rid, sizeof r->rid);
            l->n_aborts++;
        }
    }
    r->done = false; /* the error below is its end, whatever came before */
    ipc_out_item_t it = {.id = r->id, .token = -1, .finish = IPC_FINISH_ERROR};
    snprintf(it.error, sizeof it.error, "%.255s", why);
    req_push(l, r, &it);
}

/* Trips r's whole group (or r alone). */
static void trip_group(lantern_t *l, req_t *r, bool total) {
    char why[256];
    uint64_t b = backlog(r);
    if (total)
        snprintf(why, sizeof why,
                 "output not read: %llu bytes waited for this request's reader, the largest "
                 "backlog when all requests' reached the server's limit of %llu bytes "
                 "(--max-undelivered-bytes); generation stopped",
                 (unsigned long long)b, (unsigned long long)l->max_total_bytes);
    else
        snprintf(why, sizeof why,
                 "output not read: %llu bytes waited for this request's reader, over the limit "
                 "of %llu per request (--max-undelivered-bytes-per-request); generation stopped",
                 (unsigned long long)b, (unsigned long long)l->max_group_bytes);
    const char *name = r->group && r->group->name ? r->group->name : r->rid;
    int n = 0;
    if (r->group) {
        lantern_group_t *g = r->group;
        g->tripped = true;
        for (int k = 0; k < N_BUCKETS; k++)
            for (req_t *q = l->buckets[k]; q; q = q->next)
                if (q->group == g && !q->tripped) {
                    trip_req(l, q, why);
                    n++;
                }
    } else {
        trip_req(l, r, why);
        n = 1;
    }
    l->stats.undelivered_aborts++;
    LT_WARN("req=%s: %s (%d engine request(s) aborted)", name, why, n);
}

/* After an OUTPUT message: trips the groups over the limits. `out` are the message's items. */
static void check_limits(lantern_t *l, const ipc_output_t *out) {
    if (l->max_group_bytes)
        for (int i = 0; i < out->n_items; i++) {
            req_t *r = *req_slot(l, out->items[i].id);
            if (r && !r->tripped && backlog(r) > l->max_group_bytes) trip_group(l, r, false);
        }
    while (l->max_total_bytes && l->queued_bytes > l->max_total_bytes) {
        req_t *worst = NULL;
        for (int k = 0; k < N_BUCKETS; k++)
            for (req_t *q = l->buckets[k]; q; q = q->next)
                if (!q->tripped && q->bytes && (!worst || backlog(q) > backlog(worst))) worst = q;
        if (!worst) break; /* only tripped requests' error outputs are left */
        trip_group(l, worst, true);
    }
}

void lantern_set_output_limits(lantern_t *l, size_t per_group, size_t total) {
    pthread_mutex_lock(&l->mu);
    l->max_group_bytes = per_group;
    l->max_total_bytes = total;
    pthread_mutex_unlock(&l->mu);
}

/* ---- receiver thread ---- */

static int send_abort(lantern_t *l, uint64_t id, const char *rid);

static void on_output(lantern_t *l) {
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->output.n_items; i++) {
        const ipc_out_item_t *it = &l->output.items[i];
        req_t *r = *req_slot(l, it->id);
        if (!r || r->done) continue;
        if (it->rid[0] && strcmp(it->rid, r->rid) != 0) /* the identity must survive the trip */
            LT_ERROR("req=%s: the engine's output for id %llu names req=%s", r->rid,
                     (unsigned long long)it->id, it->rid);
        req_push(l, r, it);
    }
    check_limits(l, &l->output);
    const ipc_sched_stats_t *s = &l->output.stats;
    l->stats.running = s->running;
    /* the batch a step ran, not what is left running after it: requests that finish in their
     * first step count too */
    if (s->step_seqs > l->stats.max_running) l->stats.max_running = s->step_seqs;
    if (s->running > l->stats.max_running) l->stats.max_running = s->running;
    l->stats.waiting = s->waiting;
    l->stats.kv_usage = s->kv_usage;
    l->stats.prefix_queries = s->prefix_queries;
    l->stats.prefix_hits = s->prefix_hits;
    l->stats.preemptions = s->preemptions;
    l->stats.steps = s->steps;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    /* aborts go out without mu: submitters take send_mu, then mu. Only this thread fills the
     * list, so it may read it unlocked. */
    for (int i = 0; i < l->n_aborts; i++) send_abort(l, l->aborts[i].id, l->aborts[i].rid);
    l->n_aborts = 0;
}

static void *receiver(void *arg) {
    lantern_t *l = arg;
    char err[LT_ERR_LEN];
    while (!atomic_load(&l->stop)) {
        ipc_poll_item_t items[2] = {{.sock = l->out, .events = IPC_POLLIN},
                                    {.fd = l->engine.pidfd, .events = IPC_POLLIN}};
        ipc_poll(items, 2, 200, err);
        for (;;) {
            int rc = ipc_sock_recv_envelope(l->out, NULL, &l->env, 0, err);
            if (rc == IPC_AGAIN) break;
            if (rc == 0 && l->env.type == IPC_MSG_OUTPUT)
                rc = ipc_msg_output_read(&l->env, &l->output, err);
            else if (rc == 0)
                continue;
            if (rc) {
                LT_ERROR("dropped a malformed engine message: %s", err);
                continue;
            }
            on_output(l);
        }
        int st;
        if (lt_proc_check(&l->engine, &st)) {
            char why[96];
            pthread_mutex_lock(&l->mu);
            snprintf(l->death, sizeof l->death, "engine %s",
                     lt_proc_status_str(st, why, sizeof why));
            atomic_store(&l->alive, false);
            fail_all_locked(l, l->death);
            pthread_cond_broadcast(&l->cv);
            pthread_mutex_unlock(&l->mu);
            LT_ERROR("%s: every pending request failed", l->death);
            /* the engine could not clean up after itself: remove its shm and sockets */
            ipc_cleanup(l->tree_pid);
            break;
        }
    }
    return NULL;
}

/* ---- start and stop ---- */

int lantern_create(const lantern_engine_args_t *args, lantern_t **out, char *err) {
    *out = NULL;
    lantern_t *l = calloc(1, sizeof *l);
    if (!l) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    l->args = *args;
    l->engine = (lt_child_t){-1, -1};
    l->tree_pid = (int)getpid();
    atomic_init(&l->alive, false);
    atomic_init(&l->stop, false);
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->send_mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (args->model)
        snprintf(l->model, sizeof l->model, "%s", args->model);
    else
        lt_default_model_path(l->model, sizeof l->model);
    l->args.model = l->model;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = lt_now_ns() ^ (uint64_t)getpid();
    snprintf(l->id_prefix, sizeof l->id_prefix, "%016llx", (unsigned long long)rnd);
    int rc;
    if ((rc = ipc_writer_init(&l->wr, 1 << 16, err))) goto fail_early;
    if ((rc = ipc_envelope_init(&l->env, 0, err))) {
        ipc_writer_fini(&l->wr);
        goto fail_early;
    }
    if ((rc = ipc_engine_args_resolve(&l->args, err))) goto fail;
    char need_what[96];
    snprintf(need_what, sizeof need_what, "lantern's process tree (tensor-parallel size %d)",
             l->args.tensor_parallel_size);
    if ((rc = lt_fd_limit_ensure(FDS_BASE + FDS_PER_RANK * (long)l->args.tensor_parallel_size,
                                 need_what, err)))
        goto fail;
    /* before our own names exist: a crashed tree's, never a live one's */
    bool first = atomic_fetch_add(&g_trees, 1) == 0;
    l->counted = true;
    ipc_cleanup_stale(first);
    l->output.items_cap = l->args.max_num_seqs + 64;
    l->output.items = malloc(sizeof(ipc_out_item_t) * (size_t)l->output.items_cap);
    if (!l->output.items) {
        rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = ipc_endpoint(l->in_ep, sizeof l->in_ep, l->tree_pid, "input", err)) ||
        (rc = ipc_endpoint(l->out_ep, sizeof l->out_ep, l->tree_pid, "output", err)) ||
        (rc = ipc_ctx_create(&l->ctx, err)) ||
        (rc = ipc_sock_create(l->ctx, IPC_PULL, 0, &l->out, err)) ||
        (rc = ipc_sock_bind(l->out, l->out_ep, err)))
        goto fail;
    /* the metrics region the engine and the workers write and the frontend reads */
    char mname[128];
    if ((rc = ipc_name(mname, sizeof mname, l->tree_pid, "metrics", err)) ||
        (rc = tel_metrics_create(mname, l->args.tensor_parallel_size, &l->metrics, err)))
        goto fail;
    ipc_argv_t av = {0};
    if (ipc_argv_add(&av, "lantern") || ipc_argv_add(&av, "__engine") ||
        ipc_engine_args_to_argv(&l->args, &av) ||
        ipc_argv_addf(&av, "tree-pid", "%d", l->tree_pid) ||
        ipc_argv_addf(&av, "input", "%s", l->in_ep) ||
        ipc_argv_addf(&av, "output", "%s", l->out_ep)) {
        rc = lt_errf(err, LT_ERR_RANGE, "the engine's command line is too long");
        goto fail;
    }
    if ((rc = lt_proc_spawn_sibling("lantern-core", av.argv, &l->engine, err))) goto fail;
    /* wait for the engine's HELLO: every worker has loaded its shard */
    for (;;) {
        int st;
        if (lt_proc_check(&l->engine, &st)) {
            char why[96];
            rc = lt_errf(err, LT_ERR_IO, "the engine %s during start-up (see its log above)",
                         lt_proc_status_str(st, why, sizeof why));
            goto fail;
        }
        rc = ipc_sock_recv_envelope(l->out, NULL, &l->env, 200, err);
        if (rc == IPC_AGAIN) continue;
        if (rc < 0) goto fail;
        ipc_hello_t h;
        if ((rc = ipc_msg_hello_read(&l->env, &h, err)) == IPC_CHILD_ERROR)
            rc = LT_ERR_IO; /* err holds the child's own reason */
        if (rc) goto fail;
        l->info = (lantern_model_info_t){.vocab_size = h.vocab,
                                         .eos_id = h.eos_id,
                                         .bos_id = h.bos_id,
                                         .max_model_len = h.max_model_len,
                                         .num_kv_blocks = h.num_blocks,
                                         .block_size = h.block_size};
        break;
    }
    l->add.prompt_cap = 0;
    if ((rc = ipc_sock_create(l->ctx, IPC_DEALER, 0, &l->in, err)) ||
        (rc = ipc_sock_connect(l->in, l->in_ep, err)))
        goto fail;
    atomic_store(&l->alive, true);
    if (pthread_create(&l->thread, NULL, receiver, l) != 0) {
        rc = lt_errf(err, LT_ERR_IO, "cannot start the output thread");
        goto fail;
    }
    l->thread_started = true;
    *out = l;
    return LT_OK;
fail:
    lantern_destroy(&l);
    return rc;
fail_early:
    free(l);
    return rc;
}

void lantern_destroy(lantern_t **lp) {
    lantern_t *l = *lp;
    if (!l) return;
    atomic_store(&l->stop, true);
    if (l->thread_started) pthread_join(l->thread, NULL);
    lt_proc_stop(&l->engine, SIGTERM, 5000);
    ipc_sock_destroy(&l->in);
    ipc_sock_destroy(&l->out);
    ipc_ctx_destroy(&l->ctx);
    ipc_cleanup(l->tree_pid);
    for (int b = 0; b < N_BUCKETS; b++)
        for (req_t *r = l->buckets[b], *nx; r; r = nx) {
            nx = r->next;
            free(r->items);
            free(r);
        }
    ipc_writer_fini(&l->wr);
    ipc_envelope_fini(&l->env);
    free(l->output.items);
    free(l->aborts);
    if (l->counted) atomic_fetch_sub(&g_trees, 1);
    tel_metrics_detach(&l->metrics); /* its name went with ipc_cleanup */
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->send_mu);
    pthread_cond_destroy(&l->cv);
    free(l);
    *lp = NULL;
}

const tel_metrics_shm_t *lantern_metrics(const lantern_t *l) {
    return l->metrics;
}

void lantern_model_info(const lantern_t *l, lantern_model_info_t *info) {
    *info = l->info;
}

bool lantern_alive(const lantern_t *l) {
    return atomic_load(&((lantern_t *)l)->alive);
}

/* ---- requests ---- */

int lantern_submit(lantern_t *l, const lantern_request_t *r, uint64_t *id, char *err) {
    if (!atomic_load(&l->alive))
        return lt_errf(err, LT_ERR_IO, "the engine is not running%s%s", l->death[0] ? ": " : "",
                       l->death);
    if (!r->prompt || r->n_prompt <= 0) return lt_errf(err, LT_ERR_INVAL, "the prompt is empty");
    int rc = ipc_params_check(&r->params, l->info.vocab_size, NULL, err);
    if (rc) return rc;
    req_t *q = calloc(1, sizeof *q);
    if (!q) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    q->notify = r->notify;
    q->notify_arg = r->notify_arg;
    q->group = r->group;
    q->submitted_ns = lt_now_ns();
    pthread_mutex_lock(&l->mu);
    q->id = ++l->next_id;
    pthread_mutex_unlock(&l->mu);

    pthread_mutex_lock(&l->send_mu);
    ipc_add_t *a = &l->add;
    char made_up[40];
    const char *rid = r->request_id;
    if (!rid) {
        snprintf(made_up, sizeof made_up, "%s-%llu", l->id_prefix, (unsigned long long)q->id);
        rid = made_up;
    }
    rc = ipc_ident_set(&a->ident, rid, r->traceparent, r->tracestate, err);
    const void *data;
    size_t len;
    if (rc == 0) {
        snprintf(q->rid, sizeof q->rid, "%s", a->ident.id);
        a->id = q->id;
        a->prompt = (int32_t *)r->prompt;
        a->n_prompt = r->n_prompt;
        a->params = r->params;
        pthread_mutex_lock(&l->mu); /* in the table before the engine can answer */
        *req_slot(l, q->id) = q;
        l->n_pending++;
        pthread_mutex_unlock(&l->mu);
        rc = ipc_msg_add_write(&l->wr, a, &data, &len, err);
        if (rc == 0) rc = ipc_sock_send(l->in, NULL, data, len, 5000, err);
        if (rc) {
            pthread_mutex_lock(&l->mu);
            req_forget(l, req_slot(l, q->id));
            pthread_mutex_unlock(&l->mu);
            q = NULL;
        }
    }
    pthread_mutex_unlock(&l->send_mu);
    if (rc) {
        free(q); /* NULL once the table owned (and freed) it */
        return rc == IPC_AGAIN ? lt_errf(err, LT_ERR_IO, "the engine is not taking requests") : rc;
    }
    *id = q->id; /* q stays valid: only this caller's lantern_next/release forget it */
    return LT_OK;
}

/* Sends ABORT for request id, named rid. */
static int send_abort(lantern_t *l, uint64_t id, const char *rid) {
    char err[LT_ERR_LEN];
    pthread_mutex_lock(&l->send_mu);
    const void *data;
    size_t len;
    int rc = ipc_msg_abort_write(&l->wr, id, rid, &data, &len, err);
    if (rc == 0) rc = ipc_sock_send(l->in, NULL, data, len, 1000, err);
    pthread_mutex_unlock(&l->send_mu);
    if (rc) LT_WARN("req=%s: abort not sent: %s", rid, rc == IPC_AGAIN ? "engine busy" : err);
    return rc < 0 ? rc : LT_OK;
}

int lantern_abort(lantern_t *l, uint64_t id) {
    char rid[IPC_REQUEST_ID_MAX + 1];
    pthread_mutex_lock(&l->mu);
    req_t *r = *req_slot(l, id);
    if (r) memcpy(rid, r->rid, sizeof rid);
    pthread_mutex_unlock(&l->mu);
    if (!r) return LT_ERR_NOTFOUND; /* finished and read: nothing to abort */
    return send_abort(l, id, rid);
}

void lantern_release(lantern_t *l, uint64_t id) {
    char rid[IPC_REQUEST_ID_MAX + 1];
    pthread_mutex_lock(&l->mu);
    req_t **slot = req_slot(l, id), *r = *slot;
    bool running = r && !r->done;
    if (r) {
        memcpy(rid, r->rid, sizeof rid);
        req_forget(l, slot);
    }
    pthread_mutex_unlock(&l->mu);
    /* its remaining outputs find no request and are dropped */
    if (running && atomic_load(&l->alive)) send_abort(l, id, rid);
}

int lantern_next(lantern_t *l, uint64_t id, lantern_output_t *out, int timeout_ms, char *err) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    out->n_tokens = 0;
    out->finish = LANTERN_FINISH_NONE;
    out->error[0] = '\0';
    pthread_mutex_lock(&l->mu);
    req_t **slot = req_slot(l, id), *r = *slot;
    if (!r) {
        pthread_mutex_unlock(&l->mu);
        return lt_errf(err, LT_ERR_NOTFOUND, "no request %llu", (unsigned long long)id);
    }
    while (r->head == r->n) {
        int w = timeout_ms < 0 ? pthread_cond_wait(&l->cv, &l->mu)
                               : pthread_cond_timedwait(&l->cv, &l->mu, &dl);
        if (w != 0 && r->head == r->n) {
            pthread_mutex_unlock(&l->mu);
            return LANTERN_AGAIN;
        }
    }
    while (r->head < r->n && out->n_tokens < out->tokens_cap) {
        const ipc_out_item_t *it = &r->items[r->head];
        if (it->token >= 0) {
            lantern_token_t *t = &out->tokens[out->n_tokens++];
            t->id = it->token;
            t->logprob = it->logprob;
            t->n_top = it->n_top;
            memcpy(t->top_ids, it->top_ids, sizeof(int32_t) * (size_t)it->n_top);
            memcpy(t->top_logprobs, it->top_logprobs, sizeof(float) * (size_t)it->n_top);
        }
        r->head++;
        req_account(l, r, -(int64_t)ITEM_BYTES);
        if (it->finish != IPC_FINISH_NONE) {
            out->finish = (lantern_finish_t)it->finish;
            out->stop_token = it->stop_token;
            snprintf(out->error, sizeof out->error, "%s", it->error);
            out->n_prompt = it->n_prompt;
            out->n_cached_tokens = it->n_cached;
            out->n_preemptions = it->n_preemptions;
            out->queue_s = it->queue_ns / 1e9;
            out->prefill_s = it->prefill_ns / 1e9;
            out->decode_s = it->decode_ns / 1e9;
            req_forget(l, slot);
            r = NULL;
            break;
        }
    }
    if (r && r->head == r->n) r->head = r->n = 0; /* all read: the array is reused from 0 */
    pthread_mutex_unlock(&l->mu);
    return LT_OK;
}

void lantern_stats(lantern_t *l, lantern_stats_t *st) {
    pthread_mutex_lock(&l->mu);
    *st = l->stats;
    st->pending_requests = l->n_pending;
    st->undelivered_bytes = l->queued_bytes;
    pthread_mutex_unlock(&l->mu);
}

void lantern_dump(lantern_t *l, struct cJSON *extra) {
    lantern_stats_t st;
    lantern_stats(l, &st);
    char args[512];
    ipc_engine_args_str(&l->args, args, sizeof args);
    LT_INFO("state dump: frontend pid %d, engine pid %d (%s), %d pending requests (%llu bytes "
            "of output waiting for their readers, %llu aborted unread), engine: %d "
            "running, %d waiting, KV usage %.1f%%, prefix cache %llu/%llu tokens hit, %llu "
            "preemptions, %llu steps",
            (int)getpid(), (int)l->engine.pid, lantern_alive(l) ? "alive" : "dead",
            st.pending_requests, (unsigned long long)st.undelivered_bytes,
            (unsigned long long)st.undelivered_aborts, st.running, st.waiting, st.kv_usage * 100.0,
            (unsigned long long)st.prefix_hits, (unsigned long long)st.prefix_queries,
            (unsigned long long)st.preemptions, (unsigned long long)st.steps);
    LT_INFO("state dump: engine arguments: model=%s %s", l->model, args);
    cJSON *doc = l->args.dump_dir ? cJSON_CreateObject() : NULL, *pend = NULL;
    if (doc) {
        cJSON_AddItemToObject(doc, "engine_args", ipc_engine_args_json(&l->args));
        cJSON_AddNumberToObject(doc, "engine_pid", l->engine.pid);
        cJSON_AddBoolToObject(doc, "engine_alive", lantern_alive(l));
        pend = cJSON_AddArrayToObject(doc, "pending_requests");
    }
    uint64_t now = lt_now_ns();
    pthread_mutex_lock(&l->mu);
    for (int b = 0; b < N_BUCKETS; b++)
        for (const req_t *r = l->buckets[b]; r; r = r->next) {
            double age = (double)(now - r->submitted_ns) / 1e9;
            LT_INFO("state dump: req=%s engine id %llu, age %.3f s, %d outputs queued (%llu "
                    "bytes)%s",
                    r->rid, (unsigned long long)r->id, age, r->n - r->head,
                    (unsigned long long)r->bytes, r->done ? ", finished" : "");
            if (!pend) continue;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "request_id", r->rid);
            cJSON_AddNumberToObject(o, "engine_id", (double)r->id);
            cJSON_AddNumberToObject(o, "age_s", age);
            cJSON_AddNumberToObject(o, "outputs_queued", r->n - r->head);
            cJSON_AddNumberToObject(o, "outputs_queued_bytes", (double)r->bytes);
            cJSON_AddBoolToObject(o, "finished", r->done);
            cJSON_AddItemToArray(pend, o);
        }
    pthread_mutex_unlock(&l->mu);
    if (doc) {
        if (extra) /* the caller's part (the HTTP server's calls) */
            for (cJSON *it = extra->child, *next; it; it = next) {
                next = it->next;
                cJSON_AddItemToObject(doc, it->string, cJSON_DetachItemViaPointer(extra, it));
            }
        char err[LT_ERR_LEN];
        if (lt_dump_write(l->args.dump_dir, "frontend", -1, doc, err)) LT_WARN("%s", err);
    }
    cJSON_Delete(extra);
    if (l->engine.pid > 0) kill(l->engine.pid, SIGUSR1);
}
