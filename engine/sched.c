/*
 * sched.c — the continuous-batching scheduler: requests in, step plans out, sampled tokens back
 * in. See engine.h for the contract.
 *
 * One rule drives everything (as in vLLM v1): a request holds n_tokens tokens (prompt, then
 * outputs) of which num_computed have their KV in the cache; a step feeds it the next
 * min(n_tokens - num_computed, budget) tokens. A decode is simply the case where one token is
 * left. Chunked prefill is the case where the budget cuts a prompt. Preemption by recompute
 * resets num_computed to 0 while the outputs stay in `tokens`, so the request comes back as a
 * longer prompt; prefix caching then sets num_computed to the cached prefix on admission, which
 * is how a preempted request usually gets most of its blocks back cheaply.
 *
 * Blocks computed in a step are registered in the prefix cache only when the plan is complete,
 * so a request admitted in the same step never hits blocks whose KV is still being written by
 * that same step.
 */
#include "sched_priv.h"

#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "lt.h"

/* ---- configuration ---- */

void eng_sched_config_defaults(eng_sched_config_t *c) {
    memset(c, 0, sizeof *c);
    /* the engine's defaults (ipc/args.h): one set for every process */
    c->block_size = IPC_DEF_BLOCK_SIZE;
    c->max_num_seqs = IPC_DEF_MAX_NUM_SEQS;
    c->max_num_batched_tokens = IPC_DEF_MAX_BATCHED_TOKENS;
    c->max_model_len = 2048;
    c->enable_prefix_caching = true;
    c->enable_chunked_prefill = true;
}

static int config_check(const eng_sched_config_t *c, char *err) {
    if (c->num_blocks < 1) return lt_errf(err, LT_ERR_INVAL, "num_blocks must be >= 1");
    if (c->block_size < 1 || c->block_size > 4096)
        return lt_errf(err, LT_ERR_INVAL, "block_size %d out of range [1, 4096]", c->block_size);
    if (c->max_num_seqs < 1 || c->max_num_seqs > (1 << 20))
        return lt_errf(err, LT_ERR_INVAL, "max_num_seqs %d out of range [1, 2^20]",
                       c->max_num_seqs);
    if (c->max_step_ms < 0 || c->max_step_ms > 3600 * 1000)
        return lt_errf(err, LT_ERR_INVAL, "max_step_ms %d out of range [0, 3600000]",
                       c->max_step_ms);
    if (c->max_num_batched_tokens < 1 || c->max_num_batched_tokens > (1 << 24))
        return lt_errf(err, LT_ERR_INVAL, "max_num_batched_tokens %d out of range [1, 2^24]",
                       c->max_num_batched_tokens);
    if (c->max_model_len < 2 || c->max_model_len > (1 << 24))
        return lt_errf(err, LT_ERR_INVAL, "max_model_len %d out of range [2, 2^24]",
                       c->max_model_len);
    if (c->long_prefill_token_threshold < 0 || c->vocab_size < 0)
        return lt_errf(err, LT_ERR_INVAL,
                       "long_prefill_token_threshold and vocab_size must be "
                       ">= 0");
    if (!c->enable_chunked_prefill && c->max_num_batched_tokens < c->max_model_len)
        return lt_errf(err, LT_ERR_INVAL,
                       "without chunked prefill max_num_batched_tokens (%d) must be >= "
                       "max_model_len (%d)",
                       c->max_num_batched_tokens, c->max_model_len);
    int64_t need = ((int64_t)c->max_model_len + c->block_size - 1) / c->block_size;
    if (need > c->num_blocks)
        return lt_errf(err, LT_ERR_RANGE,
                       "max_model_len %d needs %lld KV blocks of %d tokens but the cache has %d",
                       c->max_model_len, (long long)need, c->block_size, c->num_blocks);
    return 0;
}

/* ---- lifecycle ---- */

int eng_sched_create(const eng_sched_config_t *c, eng_sched_t **out, char *err) {
    *out = NULL;
    int rc = config_check(c, err);
    if (rc) return rc;
    eng_sched_t *s = calloc(1, sizeof *s);
    if (!s) return lt_errf(err, LT_ERR_NOMEM, "scheduler: out of memory");
    s->cfg = *c;
    eng_step_model_init(&s->model);
    s->last_prefill_cap = -1;
    rc = eng_kv_create(c->num_blocks, c->block_size, c->enable_prefix_caching, &s->kv, err);
    if (rc) {
        free(s);
        return rc;
    }
    size_t ns = (size_t)c->max_num_seqs, nt = (size_t)c->max_num_batched_tokens;
    size_t nb = ((size_t)c->max_model_len + (size_t)c->block_size - 1) / (size_t)c->block_size;
    s->map_mask = 63;
    s->map = calloc(s->map_mask + 1, sizeof *s->map);
    s->running = malloc(ns * sizeof *s->running);
    s->p_seqs = malloc(ns * sizeof *s->p_seqs);
    s->p_reqs = malloc(ns * sizeof *s->p_reqs);
    s->p_tokens = malloc(nt * sizeof *s->p_tokens);
    s->p_pos = malloc(nt * sizeof *s->p_pos);
    s->p_seq_idx = malloc(nt * sizeof *s->p_seq_idx);
    s->p_tables = malloc(ns * sizeof *s->p_tables);
    s->p_table_lens = malloc(ns * sizeof *s->p_table_lens);
    s->p_sample_rows = malloc(ns * sizeof *s->p_sample_rows);
    s->p_sample_seqs = malloc(ns * sizeof *s->p_sample_seqs);
    s->p_finished = malloc(ns * sizeof *s->p_finished);
    s->p_preempted = malloc(ns * sizeof *s->p_preempted);
    s->hit_buf = malloc(nb * sizeof *s->hit_buf);
    s->outputs = malloc(ns * sizeof *s->outputs);
    if (!s->map || !s->running || !s->p_seqs || !s->p_reqs || !s->p_tokens || !s->p_pos ||
        !s->p_seq_idx || !s->p_tables || !s->p_table_lens || !s->p_sample_rows ||
        !s->p_sample_seqs || !s->p_finished || !s->p_preempted || !s->hit_buf || !s->outputs) {
        eng_sched_destroy(&s);
        return lt_errf(err, LT_ERR_NOMEM, "scheduler: out of memory");
    }
    s->next_order = 1;
    *out = s;
    return 0;
}

void eng_sched_destroy(eng_sched_t **sp) {
    if (!sp || !*sp) return;
    eng_sched_t *s = *sp;
    if (s->map)
        for (uint64_t i = 0; i <= s->map_mask; i++) {
            eng_req_t *r = s->map[i];
            while (r) {
                eng_req_t *n = r->hnext;
                free(r);
                r = n;
            }
        }
    eng_kv_destroy(&s->kv);
    free(s->map);
    free(s->running);
    free(s->p_seqs);
    free(s->p_reqs);
    free(s->p_tokens);
    free(s->p_pos);
    free(s->p_seq_idx);
    free(s->p_tables);
    free(s->p_table_lens);
    free(s->p_sample_rows);
    free(s->p_sample_seqs);
    free(s->p_finished);
    free(s->p_preempted);
    free(s->hit_buf);
    free(s->outputs);
    free(s);
    *sp = NULL;
}

eng_kv_t *eng_sched_kv(eng_sched_t *s) {
    return s->kv;
}

bool eng_sched_has_work(const eng_sched_t *s) {
    return s->n_running > 0 || s->n_waiting > 0;
}

/* ---- id map ---- */

static inline uint64_t id_hash(uint64_t id) {
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return id;
}

eng_req_t *eng_sched_find(const eng_sched_t *s, uint64_t id) {
    for (eng_req_t *r = s->map[id_hash(id) & s->map_mask]; r; r = r->hnext)
        if (r->id == id) return r;
    return NULL;
}

static int map_grow(eng_sched_t *s) {
    uint64_t n = (s->map_mask + 1) * 2;
    eng_req_t **m = calloc(n, sizeof *m);
    if (!m) return LT_ERR_NOMEM;
    for (uint64_t i = 0; i <= s->map_mask; i++) {
        eng_req_t *r = s->map[i];
        while (r) {
            eng_req_t *next = r->hnext;
            uint64_t j = id_hash(r->id) & (n - 1);
            r->hnext = m[j];
            m[j] = r;
            r = next;
        }
    }
    free(s->map);
    s->map = m;
    s->map_mask = n - 1;
    return 0;
}

static void map_remove(eng_sched_t *s, eng_req_t *r) {
    eng_req_t **link = &s->map[id_hash(r->id) & s->map_mask];
    while (*link && *link != r) link = &(*link)->hnext;
    if (*link) *link = r->hnext;
}

/* ---- queues ---- */

static void wait_push_back(eng_sched_t *s, eng_req_t *r) {
    r->next = NULL;
    r->prev = s->wait_tail;
    if (s->wait_tail)
        s->wait_tail->next = r;
    else
        s->wait_head = r;
    s->wait_tail = r;
    s->n_waiting++;
}

static void wait_push_front(eng_sched_t *s, eng_req_t *r) {
    r->prev = NULL;
    r->next = s->wait_head;
    if (s->wait_head)
        s->wait_head->prev = r;
    else
        s->wait_tail = r;
    s->wait_head = r;
    s->n_waiting++;
}

static void wait_remove(eng_sched_t *s, eng_req_t *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        s->wait_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        s->wait_tail = r->prev;
    r->prev = r->next = NULL;
    s->n_waiting--;
    if (r->resumed) s->n_preempted_waiting--;
}

/* Keeps running[] sorted by arrival order; a fresh admission lands at the end, a request coming
 * back from preemption in its place. */
static void running_insert(eng_sched_t *s, eng_req_t *r) {
    int i = s->n_running;
    while (i > 0 && s->running[i - 1]->order > r->order) {
        s->running[i] = s->running[i - 1];
        i--;
    }
    s->running[i] = r;
    s->n_running++;
}

static void running_remove(eng_sched_t *s, eng_req_t *r) {
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i] == r) {
            memmove(&s->running[i], &s->running[i + 1],
                    (size_t)(s->n_running - i - 1) * sizeof *s->running);
            s->n_running--;
            return;
        }
}

/* ---- events ---- */

static void ev_add(eng_req_events_t *e, eng_event_type_t t, uint64_t ts) {
    /* the last slot is kept for FINISHED */
    if (t == ENG_EV_FINISHED || e->n_events < ENG_REQ_MAX_EVENTS - 1)
        e->log[e->n_events++] = (eng_event_t){.t_ns = ts, .type = t};
    else
        e->n_dropped++;
    switch (t) {
    case ENG_EV_ARRIVED: e->arrived_ns = ts; break;
    case ENG_EV_QUEUED: e->queued_ns = ts; break;
    case ENG_EV_SCHEDULED:
        if (!e->first_scheduled_ns) e->first_scheduled_ns = ts;
        break;
    case ENG_EV_FIRST_TOKEN: e->first_token_ns = ts; break;
    case ENG_EV_PREEMPTED:
        e->last_preempted_ns = ts;
        e->n_preemptions++;
        break;
    case ENG_EV_FINISHED: e->finished_ns = ts; break;
    }
}

/* ---- adding, finishing, aborting ---- */

int eng_sched_add(eng_sched_t *s, const eng_req_params_t *p, uint64_t now_ns, char *err) {
    const eng_sched_config_t *c = &s->cfg;
    if (!p->prompt || p->n_prompt < 1)
        return lt_errf(err, LT_ERR_INVAL, "request %llu: the prompt is empty",
                       (unsigned long long)p->id);
    for (int i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || (c->vocab_size > 0 && p->prompt[i] >= c->vocab_size))
            return lt_errf(err, LT_ERR_INVAL, "request %llu: prompt token %d at %d out of range",
                           (unsigned long long)p->id, (int)p->prompt[i], i);
    if (p->n_prompt >= c->max_model_len)
        return lt_errf(err, LT_ERR_RANGE,
                       "request %llu: the prompt (%d tokens) leaves no room for output under "
                       "max_model_len (%d)",
                       (unsigned long long)p->id, p->n_prompt, c->max_model_len);
    int max_tokens = p->max_tokens > 0 ? p->max_tokens : c->max_model_len - p->n_prompt;
    if ((int64_t)p->n_prompt + max_tokens > c->max_model_len)
        return lt_errf(err, LT_ERR_RANGE,
                       "request %llu: prompt (%d tokens) + max_tokens (%d) = %lld exceeds "
                       "max_model_len (%d)",
                       (unsigned long long)p->id, p->n_prompt, max_tokens,
                       (long long)p->n_prompt + max_tokens, c->max_model_len);
    if (p->min_tokens < 0 || p->min_tokens > max_tokens)
        return lt_errf(err, LT_ERR_INVAL, "request %llu: min_tokens (%d) must be in [0, %d]",
                       (unsigned long long)p->id, p->min_tokens, max_tokens);
    if (p->n_stop_token_ids < 0 || p->n_stop_token_ids > 1024 ||
        (p->n_stop_token_ids > 0 && !p->stop_token_ids))
        return lt_errf(err, LT_ERR_INVAL, "request %llu: bad stop_token_ids (%d)",
                       (unsigned long long)p->id, p->n_stop_token_ids);
    if (eng_sched_find(s, p->id))
        return lt_errf(err, LT_ERR_INVAL, "request id %llu already in use",
                       (unsigned long long)p->id);
    if ((uint64_t)s->n_reqs + 1 > s->map_mask + 1 && map_grow(s))
        return lt_errf(err, LT_ERR_NOMEM, "scheduler: out of memory");

    int cap_tokens = p->n_prompt + max_tokens;
    int cap_blocks = (cap_tokens + c->block_size - 1) / c->block_size;
    size_t bytes =
        sizeof(eng_req_t) +
        ((size_t)cap_tokens + (size_t)cap_blocks + (size_t)p->n_stop_token_ids) * sizeof(int32_t);
    eng_req_t *r = calloc(1, bytes);
    if (!r)
        return lt_errf(err, LT_ERR_NOMEM, "request %llu: out of memory", (unsigned long long)p->id);
    r->tokens = (int32_t *)(r + 1);
    r->kv.blocks = r->tokens + cap_tokens;
    r->kv.cap = cap_blocks;
    r->stop_ids = r->kv.blocks + cap_blocks;
    memcpy(r->tokens, p->prompt, (size_t)p->n_prompt * sizeof *r->tokens);
    if (p->n_stop_token_ids)
        memcpy(r->stop_ids, p->stop_token_ids, (size_t)p->n_stop_token_ids * sizeof *r->stop_ids);
    r->id = p->id;
    r->order = s->next_order++;
    r->user = p->user;
    r->n_prompt = r->n_tokens = p->n_prompt;
    r->cap_tokens = cap_tokens;
    r->max_tokens = max_tokens;
    r->min_tokens = p->min_tokens;
    r->ignore_eos = p->ignore_eos;
    r->eos_id = p->eos_id;
    r->n_stop = p->n_stop_token_ids;
    r->stop_token = -1;
    r->state = RS_WAITING;
    ev_add(&r->ev, ENG_EV_ARRIVED, p->arrival_ns ? p->arrival_ns : now_ns);
    ev_add(&r->ev, ENG_EV_QUEUED, now_ns);

    uint64_t j = id_hash(r->id) & s->map_mask;
    r->hnext = s->map[j];
    s->map[j] = r;
    s->n_reqs++;
    wait_push_back(s, r);
    return 0;
}

/* Moves r (already out of running / waiting) to the finished list, freeing its blocks. */
static void finish(eng_sched_t *s, eng_req_t *r, eng_finish_t why, uint64_t now_ns) {
    eng_kv_seq_free(s->kv, &r->kv);
    r->state = RS_FINISHED;
    r->finish = why;
    ev_add(&r->ev, ENG_EV_FINISHED, now_ns);
    s->num_finished[why]++;
    r->next = NULL;
    if (s->done_tail)
        s->done_tail->next = r;
    else
        s->done_head = r;
    s->done_tail = r;
    s->n_done++;
}

int eng_sched_abort(eng_sched_t *s, uint64_t id, uint64_t now_ns) {
    eng_req_t *r = eng_sched_find(s, id);
    if (!r || r->state == RS_FINISHED) return LT_ERR_NOTFOUND;
    if (r->state == RS_WAITING)
        wait_remove(s, r);
    else
        running_remove(s, r);
    finish(s, r, ENG_FINISH_ABORT, now_ns);
    return 0;
}

/* ---- step ---- */

typedef struct {
    int n_seqs, n_tokens, n_preempted;
} step_acc_t;

static void preempt(eng_sched_t *s, eng_req_t *r, uint64_t now_ns, step_acc_t *acc) {
    eng_kv_seq_free(s->kv, &r->kv);
    r->num_computed = 0;
    r->state = RS_WAITING;
    r->resumed = true;
    ev_add(&r->ev, ENG_EV_PREEMPTED, now_ns);
    wait_push_front(s, r);
    s->n_preempted_waiting++;
    s->num_preemptions++;
    s->p_preempted[acc->n_preempted++] = r->id;
}

/* Puts n tokens of r into the plan (its blocks already cover them) and advances num_computed. */
static void plan_add(eng_sched_t *s, eng_req_t *r, int n, step_acc_t *acc) {
    int k = acc->n_seqs++;
    eng_plan_seq_t *q = &s->p_seqs[k];
    q->id = r->id;
    q->user = r->user;
    q->tokens = r->tokens + r->num_computed;
    q->n_tokens = n;
    q->start_pos = r->num_computed;
    q->block_table = r->kv.blocks;
    q->n_blocks = r->kv.n_blocks;
    q->n_prompt = r->n_prompt;
    q->sample = r->num_computed + n == r->n_tokens;
    q->flags = 0;
    if (!r->known) q->flags = ENG_SEQ_NEW;
    if (r->resumed) q->flags = ENG_SEQ_NEW | ENG_SEQ_RESUMED;
    r->known = true;
    r->resumed = false;
    bool decode = n == 1 && q->sample && r->n_tokens > r->n_prompt;
    if (!decode) s->num_prefill_tokens += (uint64_t)n;
    r->num_computed += n;
    s->p_reqs[k] = r;
    acc->n_tokens += n;
}

static int chunk_size(const eng_sched_t *s, int remaining, int budget) {
    int n = remaining < budget ? remaining : budget;
    int t = s->cfg.long_prefill_token_threshold;
    if (s->cfg.enable_chunked_prefill && t > 0 && n > t) n = t;
    return n;
}

/* ---- keeping streams smooth (--max-step-ms) ---- */

/* Prefill tokens the coming step may hold beside its decodes: what the step-time model fits in
 * max_step_ms after the decodes (at least a minimum chunk and a quarter of the decodes' own
 * time, so prompts always progress), or -1 (no
 * cap) when nothing decodes or the limit is off. A lone prompt gets the whole token budget: the
 * cap only trades its time to first token for the other streams' smoothness. */
static int prefill_cap(const eng_sched_t *s) {
    const eng_sched_config_t *c = &s->cfg;
    if (c->max_step_ms <= 0) return -1;
    double x[ENG_STEP_FEATURES] = {1, 0, 0, 0};
    for (int i = 0; i < s->n_running; i++) {
        const eng_req_t *r = s->running[i];
        if (r->n_tokens - r->num_computed != 1) continue;
        x[1] += 1;
        x[3] += (r->num_computed + 1) / 1000.0;
    }
    if (x[1] == 0) return -1;
    int min_chunk = c->block_size > 32 ? c->block_size : 32;
    /* when the decodes alone overrun the limit (an overloaded machine), prefill may still add a
     * quarter of their time, so prompts are not starved down to the minimum chunk */
    double decode_ms = eng_step_model_predict(&s->model, x), avail = c->max_step_ms - decode_ms;
    int n = eng_step_model_prefill_fit(&s->model, avail > decode_ms / 4 ? avail : decode_ms / 4, 0);
    return n > min_chunk ? n : min_chunk;
}

/* Releases the requests that finished since the last step, listing those workers knew. */
static int release_finished(eng_sched_t *s) {
    int n = 0;
    while (s->done_head) {
        eng_req_t *r = s->done_head;
        if (r->known) {
            if (n == s->cfg.max_num_seqs) break; /* the rest go in the next plan */
            s->p_finished[n++] = r->id;
        }
        s->done_head = r->next;
        if (!s->done_head) s->done_tail = NULL;
        s->n_done--;
        map_remove(s, r);
        s->n_reqs--;
        free(r);
    }
    return n;
}

/* HOT */
int eng_sched_step(eng_sched_t *s, uint64_t now_ns, eng_plan_t *plan) {
    if (s->in_flight) return LT_ERR_INVAL;
    memset(plan, 0, sizeof *plan);
    const eng_sched_config_t *c = &s->cfg;
    int bs = c->block_size;
    s->step_id++;
    int n_finished = release_finished(s);

    step_acc_t acc = {0};
    int budget = c->max_num_batched_tokens;
    int cap = prefill_cap(s); /* prefill tokens left this step; -1: no cap */
    s->last_prefill_cap = cap;

    /* running sequences, earliest arrival first */
    for (int i = 0; i < s->n_running && budget > 0;) {
        eng_req_t *r = s->running[i];
        int remaining = r->n_tokens - r->num_computed;
        if (remaining > 1 && cap == 0) { /* a prompt's next chunk waits for a later step */
            i++;
            continue;
        }
        int n = chunk_size(s, remaining, remaining > 1 && cap > 0 && cap < budget ? cap : budget);
        bool scheduled = true;
        for (;;) {
            int rc = eng_kv_seq_alloc(s->kv, &r->kv, r->num_computed + n);
            if (rc == 0) break;
            if (rc != ENG_AGAIN) return rc; /* table storage too small: a bug */
            /* out of blocks: recompute the latest arrival later, maybe r itself */
            eng_req_t *victim = s->running[--s->n_running];
            preempt(s, victim, now_ns, &acc);
            if (victim == r) {
                scheduled = false;
                break;
            }
        }
        if (!scheduled) break;
        plan_add(s, r, n, &acc);
        budget -= n;
        if (remaining > 1 && cap > 0) cap -= n;
        i++;
    }

    /* waiting requests in FCFS order; none while this step had to preempt */
    while (acc.n_preempted == 0 && s->wait_head && budget > 0 && cap != 0 &&
           s->n_running < c->max_num_seqs) {
        eng_req_t *r = s->wait_head;
        int n_evictable = 0;
        int hits =
            eng_kv_match_prefix(s->kv, r->tokens, r->n_tokens, s->hit_buf, r->kv.cap, &n_evictable);
        int computed = hits * bs;
        int remaining = r->n_tokens - computed;
        if (!c->enable_chunked_prefill && remaining > budget) break;
        int n = chunk_size(s, remaining, cap > 0 && cap < budget ? cap : budget);
        int need = (computed + n + bs - 1) / bs - hits;
        if (need + n_evictable > eng_kv_num_available(s->kv)) break; /* FCFS: no overtaking */
        int rc = eng_kv_seq_acquire(s->kv, &r->kv, s->hit_buf, hits, r->n_tokens);
        if (rc == 0) rc = eng_kv_seq_alloc(s->kv, &r->kv, computed + n);
        if (rc != 0) { /* counted above, so only a bug gets here: leave r waiting */
            eng_kv_seq_free(s->kv, &r->kv);
            if (rc == ENG_AGAIN) break;
            return rc;
        }
        wait_remove(s, r);
        r->num_computed = computed;
        if (!r->known) r->n_cached_tokens = computed;
        r->state = RS_RUNNING;
        running_insert(s, r);
        ev_add(&r->ev, ENG_EV_SCHEDULED, now_ns);
        plan_add(s, r, n, &acc);
        budget -= n;
        if (cap > 0) cap -= n;
    }

    /* the step's full blocks become hits for later steps */
    for (int k = 0; k < acc.n_seqs; k++) {
        eng_req_t *r = s->p_reqs[k];
        eng_kv_seq_commit(s->kv, &r->kv, r->tokens, r->num_computed);
    }

    /* flat rows, a ready-made wk_batch_t; the step's features for the step-time model */
    int row = 0, n_sampled = 0, n_prefill = 0;
    double *x = s->step_x;
    x[0] = 1;
    x[1] = x[2] = x[3] = 0;
    for (int k = 0; k < acc.n_seqs; k++) {
        const eng_plan_seq_t *q = &s->p_seqs[k];
        memcpy(s->p_tokens + row, q->tokens, (size_t)q->n_tokens * sizeof *s->p_tokens);
        for (int j = 0; j < q->n_tokens; j++) {
            s->p_pos[row + j] = q->start_pos + j;
            s->p_seq_idx[row + j] = k;
        }
        row += q->n_tokens;
        s->p_tables[k] = q->block_table;
        s->p_table_lens[k] = q->n_blocks;
        if (q->sample) {
            s->p_sample_rows[n_sampled] = row - 1;
            s->p_sample_seqs[n_sampled++] = k;
        }
        if (q->n_tokens > 1 || !q->sample) n_prefill++;
        if (q->n_tokens == 1 && q->sample)
            x[1] += 1;
        else
            x[2] += q->n_tokens;
        x[3] += ((double)q->n_tokens * q->start_pos + (double)q->n_tokens * (q->n_tokens + 1) / 2) /
                1000.0;
    }

    plan->step_id = s->step_id;
    plan->now_ns = now_ns;
    plan->n_seqs = acc.n_seqs;
    plan->seqs = s->p_seqs;
    plan->n_tokens = row;
    plan->tokens = s->p_tokens;
    plan->pos = s->p_pos;
    plan->seq_idx = s->p_seq_idx;
    plan->block_tables = s->p_tables;
    plan->block_table_lens = s->p_table_lens;
    plan->n_sampled = n_sampled;
    plan->sample_rows = s->p_sample_rows;
    plan->sample_seqs = s->p_sample_seqs;
    plan->n_finished = n_finished;
    plan->finished_ids = s->p_finished;
    plan->n_preempted = acc.n_preempted;
    plan->preempted_ids = s->p_preempted;

    if (acc.n_seqs > 0) {
        s->in_flight = true;
        eng_step_info_t *si = &s->steps[s->n_steps_recorded++ % ENG_STEP_HISTORY];
        *si = (eng_step_info_t){.step_id = s->step_id,
                                .start_ns = now_ns,
                                .n_seqs = acc.n_seqs,
                                .n_tokens = row,
                                .n_prefill_seqs = n_prefill,
                                .n_preempted = acc.n_preempted};
    }
    return 0;
}

/* ---- update ---- */

static bool is_stop_token(const eng_req_t *r, int32_t tok) {
    for (int i = 0; i < r->n_stop; i++)
        if (r->stop_ids[i] == tok) return true;
    return false;
}

/* HOT */
int eng_sched_update(eng_sched_t *s, const eng_plan_t *plan, const int32_t *sampled, int n_sampled,
                     uint64_t now_ns, eng_outputs_t *out) {
    out->n = 0;
    out->items = s->outputs;
    out->n_finished = 0;
    if (!s->in_flight || plan->step_id != s->step_id || plan->seqs != s->p_seqs)
        return LT_ERR_INVAL;
    if (n_sampled != plan->n_sampled || (n_sampled > 0 && !sampled)) return LT_ERR_INVAL;
    for (int i = 0; i < n_sampled; i++)
        if (sampled[i] < 0 || (s->cfg.vocab_size > 0 && sampled[i] >= s->cfg.vocab_size))
            return LT_ERR_INVAL;

    int j = 0, n_out = 0, n_fin = 0;
    for (int k = 0; k < plan->n_seqs; k++) {
        if (!s->p_seqs[k].sample) continue;
        int32_t tok = sampled[j++];
        eng_req_t *r = s->p_reqs[k];
        if (r->state != RS_RUNNING) continue; /* aborted while the step was in flight */
        r->tokens[r->n_tokens++] = tok;
        int n_output = r->n_tokens - r->n_prompt;
        if (n_output == 1) ev_add(&r->ev, ENG_EV_FIRST_TOKEN, now_ns);
        s->num_generation_tokens++;

        eng_finish_t why = ENG_FINISH_NONE;
        if (n_output >= r->min_tokens) {
            if (!r->ignore_eos && r->eos_id >= 0 && tok == r->eos_id) {
                why = ENG_FINISH_STOP;
            } else if (is_stop_token(r, tok)) {
                why = ENG_FINISH_STOP;
                r->stop_token = tok;
            }
        }
        if (why == ENG_FINISH_NONE &&
            (n_output >= r->max_tokens || r->n_tokens >= s->cfg.max_model_len))
            why = ENG_FINISH_LENGTH;

        eng_output_t *o = &s->outputs[n_out++];
        o->id = r->id;
        o->user = r->user;
        o->token = tok;
        o->n_output = n_output;
        o->n_prompt = r->n_prompt;
        o->n_cached_tokens = r->n_cached_tokens;
        o->finish = why;
        o->stop_token = r->stop_token;
        o->events = &r->ev;
        if (why != ENG_FINISH_NONE) {
            finish(s, r, why, now_ns); /* leaves running[]: compacted below */
            n_fin++;
        }
    }
    if (n_fin > 0) {
        int w = 0;
        for (int i = 0; i < s->n_running; i++)
            if (s->running[i]->state == RS_RUNNING) s->running[w++] = s->running[i];
        s->n_running = w;
    }

    eng_step_info_t *si = &s->steps[(s->n_steps_recorded - 1) % ENG_STEP_HISTORY];
    if (si->step_id == plan->step_id) {
        si->dur_ns = now_ns - si->start_ns;
        eng_step_model_observe(&s->model, s->step_x, si->dur_ns / 1e6);
    }
    s->in_flight = false;
    out->n = n_out;
    out->n_finished = n_fin;
    return 0;
}
