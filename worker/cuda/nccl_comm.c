/*
 * nccl_comm.c — the NCCL all-reduce of the CUDA backend (nccl_comm.h), in the module
 * liblantern_cuda.so (see backend_cuda.c); cuda_loader.c forwards nccl_comm.h's calls to it.
 */
#include "nccl_comm.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lt.h"

#ifdef LANTERN_HAVE_CUDA

#include <cuda_runtime_api.h>
#include <nccl.h>

/* The module's entry points (cuda_loader.c finds them with dlsym). */
int wk_nccl_init_mod(int rank, int world, void *stream, wk_allreduce_fn bcast, void *bcast_user,
                     int timeout_ms, wk_nccl_t **out, char *err);
int wk_nccl_allreduce_mod(float *buf, size_t n, void *user);
void wk_nccl_destroy_mod(wk_nccl_t **cp);

struct wk_nccl {
    ncclComm_t comm;
    cudaStream_t stream;
    int rank, world, timeout_ms;
    bool broken; /* aborted: every later call fails */
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Rank 0's id to every rank through the sum of byte-valued floats (exact: 0..255 plus zeros). */
static int share_id(ncclUniqueId *id, int rank, wk_allreduce_fn bcast, void *user, char *err) {
    float f[sizeof id->internal];
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        f[i] = rank == 0 ? (float)(unsigned char)id->internal[i] : 0.0f;
    int rc = bcast(f, sizeof f / sizeof *f, user);
    if (rc) return lt_errf(err, rc, "NCCL: sharing the unique id failed: %s", lt_err_str(rc));
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        if (f[i] < 0.0f || f[i] > 255.0f || f[i] != (float)(int)f[i])
            return lt_errf(err, LT_ERR_FORMAT, "NCCL: the unique id arrived damaged");
        id->internal[i] = (char)(unsigned char)(int)f[i];
    }
    return LT_OK;
}

/* The ring's first all-reduce: every rank gives 1 + rank for each of 64 floats, so every value
 * must come back as world * (world + 1) / 2 (exact in fp32). */
static int warm_up(wk_nccl_t *c, char *err) {
    enum { N = 64 };
    float h[N], *d = NULL;
    for (int i = 0; i < N; i++) h[i] = (float)(1 + c->rank);
    cudaError_t e = cudaMalloc((void **)&d, sizeof h);
    if (e == cudaSuccess) e = cudaMemcpyAsync(d, h, sizeof h, cudaMemcpyHostToDevice, c->stream);
    if (e != cudaSuccess) {
        cudaFree(d);
        return lt_errf(err, LT_ERR_IO, "NCCL rank %d: warm-up buffer: %s", c->rank,
                       cudaGetErrorString(e));
    }
    int rc = wk_nccl_allreduce_mod(d, N, c);
    if (!rc && (e = cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost)) != cudaSuccess)
        rc = LT_ERR_IO;
    cudaFree(d);
    if (rc)
        return lt_errf(err, LT_ERR_IO, "NCCL rank %d of %d: the warm-up all-reduce failed (%s)",
                       c->rank, c->world, e != cudaSuccess ? cudaGetErrorString(e) : "see above");
    float want = (float)c->world * (float)(c->world + 1) / 2.0f;
    for (int i = 0; i < N; i++)
        if (h[i] != want)
            return lt_errf(err, LT_ERR_IO,
                           "NCCL rank %d of %d: the warm-up all-reduce gave %g, not %g: the ring "
                           "is broken",
                           c->rank, c->world, h[i], want);
    return LT_OK;
}

int wk_nccl_init_mod(int rank, int world, void *stream, wk_allreduce_fn bcast, void *bcast_user,
                     int timeout_ms, wk_nccl_t **out, char *err) {
    *out = NULL;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r;
    if (rank == 0 && (r = ncclGetUniqueId(&id)) != ncclSuccess)
        return lt_errf(err, LT_ERR_IO, "NCCL: ncclGetUniqueId: %s", ncclGetErrorString(r));
    int rc = share_id(&id, rank, bcast, bcast_user, err);
    if (rc) return rc;
    wk_nccl_t *c = calloc(1, sizeof *c);
    if (!c) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    c->stream = stream;
    c->rank = rank;
    c->world = world;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
    if ((r = ncclCommInitRank(&c->comm, world, id, rank)) != ncclSuccess) {
        free(c);
        return lt_errf(err, LT_ERR_IO, "NCCL: rank %d of %d: ncclCommInitRank: %s", rank, world,
                       ncclGetErrorString(r));
    }
    if ((rc = warm_up(c, err))) {
        wk_nccl_destroy_mod(&c);
        return rc;
    }
    *out = c;
    return LT_OK;
}

static int fail(wk_nccl_t *c, const char *what, const char *why) {
    LT_ERROR("NCCL rank %d: %s: %s; aborting the communicator", c->rank, what, why);
    ncclCommAbort(c->comm);
    c->comm = NULL;
    c->broken = true;
    return LT_ERR_IO;
}

int wk_nccl_allreduce_mod(float *buf, size_t n, void *user) {
    /* HOT */
    wk_nccl_t *c = user;
    if (c->broken) return LT_ERR_IO;
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, c->comm, c->stream);
    if (r != ncclSuccess) return fail(c, "ncclAllReduce", ncclGetErrorString(r));
    /* wait for the stream, watching for a peer that died (async error) or never came */
    double t0 = now_ms();
    for (unsigned spins = 0;; spins++) {
        cudaError_t e = cudaStreamQuery(c->stream);
        if (e == cudaSuccess) return LT_OK;
        if (e != cudaErrorNotReady) return fail(c, "the compute stream", cudaGetErrorString(e));
        ncclResult_t ae = ncclSuccess;
        if ((r = ncclCommGetAsyncError(c->comm, &ae)) != ncclSuccess || ae != ncclSuccess)
            return fail(c, "asynchronous error", ncclGetErrorString(r != ncclSuccess ? r : ae));
        if (now_ms() - t0 > c->timeout_ms) return fail(c, "all-reduce", "timed out");
        if (spins > 1000) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
}

void wk_nccl_destroy_mod(wk_nccl_t **cp) {
    wk_nccl_t *c = *cp;
    if (!c) return;
    if (c->comm) ncclCommDestroy(c->comm);
    free(c);
    *cp = NULL;
}

#endif
