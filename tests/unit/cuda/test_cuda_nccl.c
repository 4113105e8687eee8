/*
 * test_cuda_nccl.c — a single-GPU NCCL communicator round trip through the worker's path
 * (worker/cuda_loader.c → liblantern_cuda.so): wk_nccl_init as rank 0 of 1 (the unique id goes
 * through the bcast callback as the tree's shared-memory all-reduce would carry it), then
 * wk_nccl_allreduce on device buffers of several sizes on a stream of our own: a sum over one
 * rank gives back every value exactly. Then the communicator is destroyed and made again.
 * Exits 77 (skipped) where no GPU is visible; runs on a GPU machine.
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "lt.h"
#include "nccl_comm.h"
#include "worker.h"

static int bcast_calls;

/* One rank: the sum over the ranks is the buffer itself. */
static int bcast_one(float *buf, size_t n, void *user) {
    (void)buf, (void)n, (void)user;
    bcast_calls++;
    return LT_OK;
}

static int round_trip(cudaStream_t st, size_t n) {
    char err[LT_ERR_LEN];
    wk_nccl_t *c = NULL;
    if (wk_nccl_init(0, 1, st, bcast_one, NULL, 10000, &c, err)) {
        fprintf(stderr, "FAIL init: %s\n", err);
        return 1;
    }
    float *h = malloc(sizeof(float) * n), *back = malloc(sizeof(float) * n), *d = NULL;
    for (size_t i = 0; i < n; i++) h[i] = (float)((int)(i * 2654435761u % 2001) - 1000) / 7.0f;
    int bad = 0;
    if (cudaMalloc((void **)&d, sizeof(float) * n) != cudaSuccess) {
        fprintf(stderr, "FAIL cudaMalloc\n");
        bad = 1;
    } else {
        cudaMemcpy(d, h, sizeof(float) * n, cudaMemcpyHostToDevice);
        int rc = wk_nccl_allreduce(d, n, c);
        cudaMemcpy(back, d, sizeof(float) * n, cudaMemcpyDeviceToHost);
        size_t diff = 0;
        for (size_t i = 0; i < n; i++) diff += back[i] != h[i];
        bad = rc != LT_OK || diff != 0;
        printf("%s all-reduce of %zu floats: rc %d, %zu values changed\n", bad ? "FAIL" : "ok  ", n,
               rc, diff);
        cudaFree(d);
    }
    wk_nccl_destroy(&c);
    free(h), free(back);
    return bad;
}

int main(void) {
#ifndef CUEMU /* on the CPU emulator (tests/cuemu) there is a device but no driver to ask */
    if (wk_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
#endif
    cudaStream_t st;
    if (cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess) {
        fprintf(stderr, "FAIL cudaStreamCreate\n");
        return 1;
    }
    int fails = 0;
    const size_t sizes[] = {1, 576, 4096 * 64, 1u << 22};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) fails += round_trip(st, sizes[i]);
    printf("%s bcast called %d times for %zu communicators\n",
           bcast_calls == (int)(sizeof sizes / sizeof *sizes) ? "ok  " : "FAIL", bcast_calls,
           sizeof sizes / sizeof *sizes);
    fails += bcast_calls != (int)(sizeof sizes / sizeof *sizes);
    cudaStreamDestroy(st);
    return fails ? 1 : 0;
}
