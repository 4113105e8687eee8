/*
 * worker_main.c — the worker process (`lantern __worker`, started by the engine): loads its
 * tensor-parallel shard, allocates the paged KV cache, says HELLO, then runs every step plan
 * broadcast on the shared-memory ring. Rank 0 samples and returns the tokens; all ranks join the
 * shared-memory all-reduce inside the forward pass.
 *
 * It never decides scheduling and never talks to the frontend (DESIGN.md §1). It exits when the
 * ring closes or SHUTDOWN arrives, and dies with the engine (PR_SET_PDEATHSIG).
 */
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc.h"
#include "lt.h"
#include "msg.h"
#include "proc.h"
#include "sampler.h"
#include "worker.h"

/* ---- per-request sampling state (rank 0) ---- */

typedef struct seq_state {
    uint64_t id; /* 0: free slot */
    ipc_sampling_t sp;
    wk_sampling_params_t params;
    wk_rng_t rng;
    int32_t *hist; /* prompt then output ids, for the penalties */
    int n_prompt, n_out, cap;
} seq_state_t;

typedef struct worker {
    int rank, tp;
    wk_model_t *m;
    wk_kv_cache_t *kv;
    wk_ctx_t *ctx;
    wk_sampler_t *sampler;
    float *logits; /* (max_num_seqs, vocab) */
    seq_state_t *seqs;
    int n_seq_slots;
    ipc_step_t step;
    ipc_result_t result;
    int max_model_len;
} worker_t;

static seq_state_t *seq_find(worker_t *w, uint64_t id) {
    for (int i = 0; i < w->n_seq_slots; i++)
        if (w->seqs[i].id == id) return &w->seqs[i];
    return NULL;
}

static void seq_apply_new(worker_t *w, const ipc_step_new_t *nw, const int32_t *prompt) {
    seq_state_t *s = seq_find(w, nw->id);
    if (s) return; /* resumed after preemption: keep the generator and history */
    s = seq_find(w, 0);
    if (!s) {
        LT_ERROR("no free sequence slot for request %llu", (unsigned long long)nw->id);
        return;
    }
    s->id = nw->id;
    s->sp = nw->sampling;
    wk_sampling_defaults(&s->params);
    s->params.temperature = s->sp.temperature;
    s->params.top_p = s->sp.top_p;
    s->params.top_k = s->sp.top_k;
    s->params.min_p = s->sp.min_p;
    s->params.repetition_penalty = s->sp.repetition_penalty;
    s->params.presence_penalty = s->sp.presence_penalty;
    s->params.frequency_penalty = s->sp.frequency_penalty;
    s->params.logprobs = s->sp.logprobs;
    s->params.n_logit_bias = s->sp.n_logit_bias;
    s->params.logit_bias_ids = s->sp.logit_bias_ids;
    s->params.logit_bias = s->sp.logit_bias;
    wk_rng_seed(&s->rng, s->sp.has_seed ? s->sp.seed : (lt_now_ns() ^ (nw->id << 17)));
    s->n_prompt = nw->n_prompt < s->cap ? nw->n_prompt : s->cap;
    memcpy(s->hist, prompt, (size_t)s->n_prompt * sizeof *prompt);
    s->n_out = 0;
}

/* ---- one step ---- */

static int run_step(worker_t *w, char *err) {
    ipc_step_t *st = &w->step;
    for (int i = 0; i < st->n_finished; i++) {
        seq_state_t *s = seq_find(w, st->finished[i]);
        if (s) s->id = 0;
    }
    if (w->rank == 0)
        for (int i = 0; i < st->n_new; i++)
            seq_apply_new(w, &st->news[i], st->new_prompts + (size_t)i * st->max_prompt);
    if (st->n_tokens == 0) return LT_OK;
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
    int rc = wk_forward(w->m, w->kv, w->ctx, &b, w->logits, err);
    if (rc || w->rank != 0) return rc;
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
        wk_sample_result_t sr;
        wk_sampling_params_t greedy;
        wk_sampling_defaults(&greedy);
        if (s)
            rc = wk_sample(w->sampler, &s->params, &s->rng, w->logits + (size_t)i * vocab, s->hist,
                           s->n_prompt, s->hist + s->n_prompt, s->n_out, &sr);
        else /* state lost (should not happen): greedy keeps the request alive */
            rc = wk_sample(w->sampler, &greedy, NULL, w->logits + (size_t)i * vocab, NULL, 0, NULL,
                           0, &sr);
        if (rc) return lt_errf(err, rc, "sampling failed for request %llu", (unsigned long long)id);
        it->token = sr.token;
        it->logprob = sr.logprob;
        it->n_top = sr.n_top;
        memcpy(it->top_ids, sr.top_ids, sizeof(int32_t) * (size_t)sr.n_top);
        memcpy(it->top_logprobs, sr.top_logprobs, sizeof(float) * (size_t)sr.n_top);
        if (s && s->n_prompt + s->n_out < s->cap) s->hist[s->n_prompt + s->n_out++] = sr.token;
    }
    return LT_OK;
}

/* ---- main ---- */

static void usage(void) {
    fprintf(stderr, "lantern __worker: internal; started by the engine\n");
}

int wk_worker_main(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"rank", required_argument, 0, 'r'},
                                         {"tp", required_argument, 0, 't'},
                                         {"ring", required_argument, 0, 'R'},
                                         {"allreduce", required_argument, 0, 'A'},
                                         {"results", required_argument, 0, 'o'},
                                         {"max-num-seqs", required_argument, 0, 's'},
                                         {"max-num-batched-tokens", required_argument, 0, 'b'},
                                         {"max-model-len", required_argument, 0, 'l'},
                                         {"block-size", required_argument, 0, 'B'},
                                         {"kv-cache-memory", required_argument, 0, 'k'},
                                         {"threads", required_argument, 0, 'T'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *ring_name = NULL, *ar_name = NULL, *results = NULL;
    int rank = 0, tp = 1, max_seqs = 64, max_batched = 2048, max_len = 0, block_size = 16,
        threads = 0;
    long long kv_mem = 1ll << 30;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'r': rank = atoi(optarg); break;
        case 't': tp = atoi(optarg); break;
        case 'R': ring_name = optarg; break;
        case 'A': ar_name = optarg; break;
        case 'o': results = optarg; break;
        case 's': max_seqs = atoi(optarg); break;
        case 'b': max_batched = atoi(optarg); break;
        case 'l': max_len = atoi(optarg); break;
        case 'B': block_size = atoi(optarg); break;
        case 'k': kv_mem = atoll(optarg); break;
        case 'T': threads = atoi(optarg); break;
        default: usage(); return 2;
        }
    }
    if (!model || !ring_name || !results || tp < 1 || rank < 0 || rank >= tp) {
        usage();
        return 2;
    }
    lt_log_set_role("worker", rank);
    lt_signals_install();
    if (threads > 0) omp_set_num_threads(threads);
    /* set by `lantern serve --batch-invariant` for the whole tree */
    const char *bi = getenv("LANTERN_BATCH_INVARIANT");
    if (bi && *bi && strcmp(bi, "0") != 0) {
        wk_set_batch_invariant(true);
        LT_INFO("batch-invariant mode: quantized kernels for every batch size");
    }
    char err[LT_ERR_LEN];
    worker_t w = {.rank = rank, .tp = tp};
    ipc_step_t *st = &w.step; /* before any goto: the clean-up frees its buffers */
    ipc_ctx_t *ctx = NULL;
    ipc_sock_t *out = NULL;
    ipc_ring_t *ring = NULL;
    ipc_allreduce_t *ar = NULL;
    ipc_writer_t wr;
    ipc_envelope_t env;
    int status = 1;
    bool wr_ok = false, env_ok = false, started = false;
    const void *data;
    size_t len;
    ipc_hello_t h;
    if (ipc_writer_init(&wr, 1 << 16, err) || !(wr_ok = true) || ipc_envelope_init(&env, 0, err) ||
        !(env_ok = true) || ipc_ctx_create(&ctx, err) ||
        ipc_sock_create(ctx, IPC_PUSH, 0, &out, err) || ipc_sock_connect(out, results, err))
        goto fail;
    wk_load_opts_t lo = {.tp_rank = rank, .tp_size = tp};
    if (wk_model_load(model, &lo, &w.m, err)) goto fail;
    const lt_model_config_t *c = &w.m->cfg;
    w.max_model_len = max_len > 0 && max_len < c->max_seq_len ? max_len : c->max_seq_len;
    size_t block_bytes =
        (size_t)2 * c->n_layer * w.m->n_kv_head_local * block_size * c->head_dim * sizeof(float);
    long long nb = kv_mem / (long long)block_bytes;
    if (nb < 1) {
        lt_errf(err, LT_ERR_RANGE, "--kv-cache-memory %lld bytes holds no %zu-byte KV block",
                kv_mem, block_bytes);
        goto fail;
    }
    if (nb > (1 << 24)) nb = 1 << 24;
    if (wk_kv_cache_create(w.m, (int)nb, block_size, &w.kv, err) ||
        wk_ctx_create(w.m, max_batched, w.max_model_len, &w.ctx, err))
        goto fail;
    if (tp > 1) {
        int rc;
        for (int i = 0;
             i < 3000 && (rc = ipc_allreduce_attach(ar_name, rank, &ar, err)) == IPC_AGAIN; i++)
            usleep(10000);
        if (rc) goto fail;
        wk_ctx_set_allreduce(w.ctx, ipc_allreduce_hook, ar);
    }
    /* step buffers, sized for the largest plan the engine may send */
    int max_blocks = (w.max_model_len + block_size - 1) / block_size;
    st->cap_tokens = max_batched;
    st->cap_seqs = max_seqs;
    st->max_blocks = max_blocks;
    st->cap_new = max_seqs;
    st->max_prompt = w.max_model_len;
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
    st->new_prompts = malloc(sizeof(int32_t) * (size_t)max_seqs * (size_t)w.max_model_len);
    st->finished = malloc(sizeof(uint64_t) * (size_t)st->cap_finished);
    w.result.cap = max_seqs;
    w.result.items = malloc(sizeof(ipc_out_item_t) * (size_t)max_seqs);
    if (!st->tokens || !st->pos || !st->seq_idx || !st->seq_ids || !st->table_lens || !st->tables ||
        !st->sample_rows || !st->sample_seqs || !st->news || !st->new_prompts || !st->finished ||
        !w.result.items) {
        lt_errf(err, LT_ERR_NOMEM, "out of memory for step buffers");
        goto fail;
    }
    if (rank == 0) {
        w.n_seq_slots = 2 * max_seqs;
        w.seqs = calloc((size_t)w.n_seq_slots, sizeof *w.seqs);
        w.logits = malloc(sizeof(float) * (size_t)max_seqs * c->vocab_size);
        if (!w.seqs || !w.logits || wk_sampler_create(c->vocab_size, &w.sampler, err)) goto fail;
        for (int i = 0; i < w.n_seq_slots; i++) {
            w.seqs[i].cap = w.max_model_len + 1;
            w.seqs[i].hist = malloc(sizeof(int32_t) * (size_t)w.seqs[i].cap);
            if (!w.seqs[i].hist) goto fail;
        }
    }
    {
        int rc;
        for (int i = 0; i < 3000 && (rc = ipc_ring_attach(ring_name, (uint32_t)rank, ctx, &ring,
                                                          err)) == IPC_AGAIN;
             i++)
            usleep(10000);
        if (rc) goto fail;
    }
    h = (ipc_hello_t){.role = 1,
                      .rank = rank,
                      .pid = (int)getpid(),
                      .num_blocks = (int)nb,
                      .vocab = c->vocab_size,
                      .eos_id = c->eos_id,
                      .bos_id = c->bos_id,
                      .max_model_len = w.max_model_len,
                      .block_size = block_size};
    if (ipc_msg_hello_write(&wr, &h, &data, &len, err) ||
        ipc_sock_send(out, NULL, data, len, 5000, err))
        goto fail;
    started = true;
    LT_INFO("ready: %s shard %d/%d, %lld KV blocks of %d tokens (%.0f MiB)", model, rank, tp, nb,
            block_size, (double)nb * block_bytes / 1048576.0);

    while (!lt_sig_shutdown) {
        if (lt_sig_dump) {
            lt_sig_dump = 0;
            LT_INFO("state: rank %d/%d pid %d, %d KV blocks of %d tokens, weights %.0f MiB", rank,
                    tp, (int)getpid(), (int)nb, block_size, w.m->weight_bytes / 1048576.0);
        }
        const void *msg;
        size_t mlen;
        int rc = ipc_ring_read(ring, &msg, &mlen, 200, err);
        if (rc == IPC_AGAIN) continue;
        if (rc == IPC_CLOSED) break;
        if (rc < 0) goto fail;
        rc = ipc_envelope_decode(msg, mlen, &env, err);
        if (rc == 0 && env.type == IPC_MSG_SHUTDOWN) {
            ipc_ring_release(ring);
            break;
        }
        if (rc == 0) rc = ipc_msg_step_read(&env, st, err);
        ipc_ring_release(ring);
        if (rc) {
            LT_ERROR("dropped a malformed step message: %s", err);
            continue;
        }
        rc = run_step(&w, err);
        if (rank == 0 && (st->n_tokens > 0 || rc)) { /* a plan with no rows gets no reply */
            if (rc) {
                w.result.step_id = st->step_id;
                w.result.n = 0;
                w.result.error = rc;
                snprintf(w.result.err_text, sizeof w.result.err_text, "%.255s", err);
            }
            if (ipc_msg_result_write(&wr, &w.result, &data, &len, err) ||
                ipc_sock_send(out, NULL, data, len, 5000, err))
                goto fail;
        }
        if (rc) {
            LT_ERROR("step %llu failed: %s", (unsigned long long)st->step_id, err);
            if (tp > 1) goto fail; /* a broken all-reduce group cannot go on */
        }
    }
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
    if (ar) ipc_allreduce_destroy(&ar);
    ipc_sock_destroy(&out);
    ipc_ctx_destroy(&ctx);
    if (wr_ok) ipc_writer_fini(&wr);
    if (env_ok) ipc_envelope_fini(&env);
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
    free(w.result.items);
    if (w.seqs)
        for (int i = 0; i < w.n_seq_slots; i++) free(w.seqs[i].hist);
    free(w.seqs);
    free(w.logits);
    wk_sampler_destroy(&w.sampler);
    wk_ctx_destroy(&w.ctx);
    wk_kv_cache_destroy(&w.kv);
    wk_model_free(&w.m);
    return status;
}
