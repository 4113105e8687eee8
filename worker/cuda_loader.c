/*
 * cuda_loader.c — the CUDA backend and the NCCL all-reduce behind dlopen, so that the CPU path
 * never loads the CUDA runtime, cuBLAS or NCCL (hundreds of MiB of mappings per worker).
 *
 * wk_cuda_device_count asks the driver (libcuda.so.1: cuInit, cuDeviceGetCount; it honours
 * CUDA_VISIBLE_DEVICES) and answers 0 when there is no driver. wk_backend_cuda_create and the
 * wk_nccl_* calls open the module liblantern_cuda.so (worker/cuda/, kernels/cuda/: built when
 * CMake finds nvcc and NCCL) from $LANTERN_CUDA_MODULE, else next to the executable or one
 * directory up (the tests), and forward to its *_mod entry points. The module resolves its lt_*
 * calls against the executable (linked with exported symbols).
 *
 * Thread safety: the first call opens the module; callers are one worker thread.
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "lt.h"
#include "nccl_comm.h"
#include "proc.h"

#define MODULE_NAME "liblantern_cuda.so"

int wk_cuda_device_count(void) {
    static int cached = -1;
    if (cached >= 0) return cached;
    cached = 0;
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (!h) return 0;
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(h, "cuInit");
    int (*count)(int *) = (int (*)(int *))dlsym(h, "cuDeviceGetCount");
    int n = 0;
    if (init && count && init(0) == 0 && count(&n) == 0) cached = n;
    /* the driver stays loaded: the backend will use it */
    return cached;
}

static void *g_mod;

/* Opens the module once; NULL with the reason in err. */
static void *module(char *err) {
    if (g_mod) return g_mod;
    char path[PATH_MAX], exe[PATH_MAX], why[3][256] = {{0}}, ignored[LT_ERR_LEN];
    const char *env = getenv("LANTERN_CUDA_MODULE");
    if (lt_self_dir(exe, sizeof exe, ignored)) exe[0] = '\0';
    const char *cands[3] = {env, NULL, NULL};
    char c1[PATH_MAX + 32], c2[PATH_MAX + 32];
    snprintf(c1, sizeof c1, "%s/%s", exe, MODULE_NAME);
    snprintf(c2, sizeof c2, "%s/../%s", exe, MODULE_NAME);
    cands[1] = c1;
    cands[2] = c2;
    for (int i = 0; i < 3; i++) {
        if (!cands[i] || access(cands[i], R_OK) != 0) continue;
        snprintf(path, sizeof path, "%s", cands[i]);
        if ((g_mod = dlopen(path, RTLD_NOW | RTLD_LOCAL))) return g_mod;
        snprintf(why[i], sizeof why[i], "%s", dlerror());
        lt_errf(err, LT_ERR_UNSUPPORTED, "--device cuda: cannot load %s: %s", path, why[i]);
        return NULL;
    }
    lt_errf(err, LT_ERR_UNSUPPORTED,
            "--device cuda: this lantern has no CUDA backend (%s not found next to %s; built "
            "without nvcc/NCCL?)",
            MODULE_NAME, exe);
    return NULL;
}

static void *sym(const char *name, char *err) {
    void *m = module(err);
    if (!m) return NULL;
    void *f = dlsym(m, name);
    if (!f) lt_errf(err, LT_ERR_UNSUPPORTED, "%s: no symbol %s", MODULE_NAME, name);
    return f;
}

wk_backend_t *wk_backend_cuda_create(int device, char *err) {
    wk_backend_t *(*f)(int, char *) =
        (wk_backend_t * (*)(int, char *)) sym("wk_backend_cuda_create_mod", err);
    return f ? f(device, err) : NULL;
}

void *wk_backend_cuda_stream(wk_backend_t *be) {
    char err[LT_ERR_LEN];
    if (!g_mod) return NULL; /* no module: no CUDA backend exists */
    void *(*f)(wk_backend_t *) = (void *(*)(wk_backend_t *))sym("wk_backend_cuda_stream_mod", err);
    return f ? f(be) : NULL;
}

typedef int (*nccl_init_fn)(int, int, void *, wk_allreduce_fn, void *, int, wk_nccl_t **, char *);
static wk_allreduce_fn g_nccl_allreduce;

int wk_nccl_init(int rank, int world, void *stream, wk_allreduce_fn bcast, void *bcast_user,
                 int timeout_ms, wk_nccl_t **out, char *err) {
    *out = NULL;
    nccl_init_fn f = (nccl_init_fn)sym("wk_nccl_init_mod", err);
    g_nccl_allreduce = (wk_allreduce_fn)sym("wk_nccl_allreduce_mod", err);
    if (!f || !g_nccl_allreduce) return LT_ERR_UNSUPPORTED;
    return f(rank, world, stream, bcast, bcast_user, timeout_ms, out, err);
}

int wk_nccl_allreduce(float *buf, size_t n, void *user) {
    /* HOT */
    return g_nccl_allreduce ? g_nccl_allreduce(buf, n, user) : LT_ERR_UNSUPPORTED;
}

void wk_nccl_destroy(wk_nccl_t **c) {
    char err[LT_ERR_LEN];
    if (!*c) return;
    void (*f)(wk_nccl_t **) = (void (*)(wk_nccl_t **))sym("wk_nccl_destroy_mod", err);
    if (f) f(c);
    *c = NULL;
}
