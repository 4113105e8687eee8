/*
 * test_cuda_tp.c — tensor parallelism on the CUDA backend: W ranks (threads of this process, rank
 * r on device r) each load their shard, join one NCCL communicator through the worker's
 * wk_nccl_init (the unique id carried by a host sum between the threads, as the process tree's
 * shared-memory all-reduce carries it) and all-reduce with wk_nccl_allreduce. Rank 0's logits for
 * a prefill of two sequences and 8 decode steps must match the CPU backend's unsharded run (NMSE
 * <= 1e-4 per step, the bound of test_cuda_forward); a second, eager run (--enforce-eager) must
 * give the first run's logits bit for bit, CUDA graphs or not. Then the last rank leaves after
 * LEAVE steps: rank 0's steps must fail with NCCL's error within the watchdog's time (a dead
 * peer fails the step, never hangs the worker).
 * W: the smallest of 2, 3, 4 that divides the model's heads and KV heads, with that many devices.
 * Model: $LANTERN_MODEL or the default model. Exits 77 (skipped) with fewer devices or no model;
 * on the CPU emulator (tests/cuemu) the ranks' "devices" are CUEMU_DEVICES.
 */
#include <cuda_runtime_api.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda_steps.h"
#include "lt.h"
#include "nccl_comm.h"
#include "worker.h"

enum { MAX_TP = 4, LEAVE = 4 };
enum { WATCHDOG_MS = 10000 }; /* the all-reduces' timeout in the leaving run */

/* ---- the host sum that carries NCCL's unique id ---- */

typedef struct group {
    int world;
    pthread_barrier_t bar;
    float *bufs[MAX_TP];
} group_t;

typedef struct rank {
    group_t *g;
    int r, device;
    bool eager;
    int steps; /* this rank runs steps [0, steps) */
    const char *path;
    float *logits;   /* rank 0: (STEPS, 2, vocab) */
    const int *next; /* (STEPS, 2): the CPU run's greedy tokens, fed to every rank */
    int rc;
    char err[LT_ERR_LEN];
} rank_t;

static int host_sum(float *buf, size_t n, void *user) {
    rank_t *rk = user;
    group_t *g = rk->g;
    g->bufs[rk->r] = buf;
    pthread_barrier_wait(&g->bar);
    float *t = malloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++) {
        float s = 0.0f;
        for (int r = 0; r < g->world; r++) s += g->bufs[r][i];
        t[i] = s;
    }
    pthread_barrier_wait(&g->bar);
    memcpy(buf, t, n * sizeof *buf);
    free(t);
    return 0;
}

static void *rank_main(void *arg) {
    rank_t *rk = arg;
    int world = rk->g->world;
    wk_load_opts_t o = {
        .tp_rank = rk->r, .tp_size = world, .device = WK_DEVICE_CUDA, .cuda_device = rk->device};
    wk_model_t *m = NULL;
    wk_kv_cache_t *kv = NULL;
    wk_ctx_t *c = NULL;
    wk_nccl_t *nc = NULL;
    if ((rk->rc = wk_model_load(rk->path, &o, &m, rk->err))) goto out;
    if ((rk->rc = wk_nccl_init(rk->r, world, wk_backend_cuda_stream(m->be), host_sum, rk,
                               WATCHDOG_MS, &nc, rk->err)))
        goto out;
    if ((rk->rc = wk_kv_cache_create(m, NB, BS, LT_DTYPE_F16, &kv, rk->err)) ||
        (rk->rc = wk_ctx_create(m, MAXT, CTX, &c, rk->err)))
        goto out;
    wk_ctx_set_eager(c, rk->eager);
    wk_ctx_set_allreduce(c, wk_nccl_allreduce, nc);
    rk->rc =
        run_steps(m, kv, c, rk->steps, rk->r == 0 ? rk->logits : NULL, rk->next, NULL, rk->err);
out:
    wk_ctx_destroy(&c);
    wk_kv_cache_destroy(&kv);
    wk_nccl_destroy(&nc);
    wk_model_free(&m);
    return NULL;
}

/* W ranks, the last running `last_steps` steps; rank 0's logits in out. Fills rk. */
static void run_tp(const char *path, int world, bool eager, int last_steps, const int *next,
                   float *out, rank_t *rk) {
    group_t g = {.world = world};
    pthread_barrier_init(&g.bar, NULL, (unsigned)world);
    pthread_t th[MAX_TP];
    for (int r = 0; r < world; r++) {
        rk[r] = (rank_t){.g = &g,
                         .r = r,
                         .device = r,
                         .eager = eager,
                         .steps = r == world - 1 ? last_steps : STEPS,
                         .path = path,
                         .logits = r == 0 ? out : NULL,
                         .next = next};
        pthread_create(&th[r], NULL, rank_main, &rk[r]);
    }
    for (int r = 0; r < world; r++) pthread_join(th[r], NULL);
    pthread_barrier_destroy(&g.bar);
}

/* Whether every rank ran without error (the failures printed). */
static bool all_ok(const rank_t *rk, int world) {
    bool ok = true;
    for (int r = 0; r < world; r++)
        if (rk[r].rc) fprintf(stderr, "FAIL TP=%d rank %d: %s\n", world, r, rk[r].err), ok = false;
    return ok;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
    char path[1024], err[LT_ERR_LEN];
    if (cs_model_path(path, sizeof path)) return 77;
    wk_model_t *cpu = NULL;
    if (wk_model_load(path, NULL, &cpu, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int world = 0, vocab = cpu->cfg.vocab_size;
    for (int w = 2; w <= MAX_TP && !world; w++)
        if (cpu->cfg.n_head % w == 0 && cpu->cfg.n_kv_head % w == 0) world = w;
    if (!world || devices < world) {
        printf("%d CUDA device(s), a %d-way split of %d heads / %d KV heads wanted: skipped\n",
               devices, world ? world : 2, cpu->cfg.n_head, cpu->cfg.n_kv_head);
        wk_model_free(&cpu);
        return 77;
    }
    /* the reference: the CPU backend, unsharded; its greedy tokens feed every run */
    size_t n = (size_t)STEPS * 2 * vocab;
    float *ref = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float)),
          *eager = malloc(n * sizeof(float));
    int next[STEPS * 2];
    int rc = cs_run(cpu, false, ref, NULL, next, err);
    wk_model_free(&cpu);
    if (rc) {
        fprintf(stderr, "CPU reference: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < n; i++) got[i] = eager[i] = NAN;
    rank_t rk[MAX_TP];
    run_tp(path, world, false, STEPS, next, got, rk);
    int fails = !all_ok(rk, world);
    run_tp(path, world, true, STEPS, next, eager, rk);
    fails += !all_ok(rk, world);
    if (!fails) {
        char what[32];
        snprintf(what, sizeof what, "TP=%d ", world);
        fails += cs_compare(what, vocab, got, ref, eager);
    }
    /* the last rank leaves after LEAVE steps: rank 0 fails, with NCCL's reason, in bounded time */
    double t0 = now_s();
    run_tp(path, world, false, LEAVE, next, got, rk);
    double took = now_s() - t0;
    bool failed = rk[0].rc != 0 && strstr(rk[0].err, "NCCL") != NULL;
    bool ok = failed && took < 2.0 * WATCHDOG_MS / 1000.0 + 30.0;
    printf("%s TP=%d, rank %d leaving after %d steps: rank 0 %s in %.1f s (%s)\n",
           ok ? "ok  " : "FAIL", world, world - 1, LEAVE, failed ? "failed" : "did NOT fail", took,
           rk[0].rc ? rk[0].err : "no error");
    fails += !ok;
    free(ref), free(got), free(eager);
    return fails ? 1 : 0;
}
