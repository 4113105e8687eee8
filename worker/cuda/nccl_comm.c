/*
 * nccl_comm.c — the NCCL all-reduce of the CUDA backend (nccl_comm.h), in the module
 * liblantern_cuda.so (see backend_cuda.c); cuda_loader.c forwards nccl_comm.h's calls to it.
 *
 * An all-reduce is only enqueued on the compute stream: the host does not wait for it, so a
 * step's kernels and all-reduces flow without a synchronization between them and a step can be
 * recorded as a CUDA graph. The wait happens once, at the step's end, when the backend copies the
 * logits back (wk_nccl_stream_wait_mod): there the stream and NCCL's asynchronous error are
 * polled, and a dead or stuck peer aborts the communicator instead of hanging the worker.
 */
#include "nccl_comm.h"

#include <pthread.h>
#include <stdio.h>
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
int wk_nccl_stream_wait_mod(void *stream, char *why, size_t why_len);

struct wk_nccl {
    ncclComm_t comm;
    cudaStream_t stream;
    int rank, world, timeout_ms;
    bool broken;          /* aborted: every later call fails */
    char failure[160];    /* why it was aborted */
    struct wk_nccl *next; /* in g_comms */
};

/* The communicators, found by their stream at a step's end (ranks may be threads of a process:
 * tests/unit/cuda/test_cuda_tp.c). */
static pthread_mutex_t g_comms_mu = PTHREAD_MUTEX_INITIALIZER;
static wk_nccl_t *g_comms;

static void comms_add(wk_nccl_t *c) {
    pthread_mutex_lock(&g_comms_mu);
    c->next = g_comms;
    g_comms = c;
    pthread_mutex_unlock(&g_comms_mu);
}

static void comms_remove(wk_nccl_t *c) {
    pthread_mutex_lock(&g_comms_mu);
    for (wk_nccl_t **p = &g_comms; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    pthread_mutex_unlock(&g_comms_mu);
}

static wk_nccl_t *comm_on(void *stream) {
    pthread_mutex_lock(&g_comms_mu);
    wk_nccl_t *c = g_comms;
    while (c && c->stream != stream) c = c->next;
    pthread_mutex_unlock(&g_comms_mu);
    return c;
}

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

static int fail(wk_nccl_t *c, const char *what, const char *why) {
    LT_ERROR("NCCL rank %d: %s: %s; aborting the communicator", c->rank, what, why);
    snprintf(c->failure, sizeof c->failure, "%s: %s (communicator aborted)", what, why);
    ncclCommAbort(c->comm);
    c->comm = NULL;
    c->broken = true;
    return LT_ERR_IO;
}

/* Until the stream has run everything enqueued, watching for a peer that died (NCCL's
 * asynchronous error) or never comes (timeout_ms): then the communicator is aborted, which ends
 * the NCCL kernels still waiting on the device. */
static int wait_stream(wk_nccl_t *c) {
    double t0 = now_ms();
    for (unsigned spins = 0;; spins++) {
        cudaError_t e = cudaStreamQuery(c->stream);
        ncclResult_t ae = ncclSuccess, r = ncclCommGetAsyncError(c->comm, &ae);
        if (r != ncclSuccess || ae != ncclSuccess)
            return fail(c, "asynchronous error", ncclGetErrorString(r != ncclSuccess ? r : ae));
        if (e == cudaSuccess) return LT_OK;
        if (e != cudaErrorNotReady) return fail(c, "the compute stream", cudaGetErrorString(e));
        if (now_ms() - t0 > c->timeout_ms) return fail(c, "a step's all-reduces", "timed out");
        if (spins > 1000) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
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
    if (!rc) rc = wait_stream(c);
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
    comms_add(c);
    if ((rc = warm_up(c, err))) {
        wk_nccl_destroy_mod(&c);
        return rc;
    }
    *out = c;
    return LT_OK;
}

int wk_nccl_allreduce_mod(float *buf, size_t n, void *user) {
    /* HOT */
    wk_nccl_t *c = user;
    if (c->broken) return LT_ERR_IO;
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, c->comm, c->stream);
    return r == ncclSuccess ? LT_OK : fail(c, "ncclAllReduce", ncclGetErrorString(r));
}

int wk_nccl_stream_wait_mod(void *stream, char *why, size_t why_len) {
    wk_nccl_t *c = comm_on(stream);
    if (!c) {
        cudaError_t e = cudaStreamSynchronize(stream);
        if (e != cudaSuccess) snprintf(why, why_len, "%s", cudaGetErrorString(e));
        return e == cudaSuccess ? LT_OK : LT_ERR_IO;
    }
    int rc = c->broken ? LT_ERR_IO : wait_stream(c);
    if (rc) snprintf(why, why_len, "NCCL rank %d of %d: %s", c->rank, c->world, c->failure);
    return rc;
}

void wk_nccl_destroy_mod(wk_nccl_t **cp) {
    wk_nccl_t *c = *cp;
    if (!c) return;
    comms_remove(c);
    if (c->comm) ncclCommDestroy(c->comm);
    free(c);
    *cp = NULL;
}

#endif
