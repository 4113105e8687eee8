/*
 * test_cuda_rmsnorm.c — the CUDA RMSNorm against the CPU reference kn_rmsnorm (NMSE).
 * Exits 77 (skipped) where no GPU is visible; runs on a GPU machine.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda/rmsnorm.h"
#include "kernels.h"

int main(void) {
    if (kn_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const int rows = 37, n = 576;
    float *x = malloc(sizeof(float) * rows * n), *w = malloc(sizeof(float) * n);
    float *ref = malloc(sizeof(float) * rows * n), *got = malloc(sizeof(float) * rows * n);
    srand(1);
    for (int i = 0; i < rows * n; i++) x[i] = (float)rand() / RAND_MAX * 4.0f - 2.0f;
    for (int i = 0; i < n; i++) w[i] = 0.5f + (float)rand() / RAND_MAX;
    for (int r = 0; r < rows; r++) kn_rmsnorm(ref + r * n, x + r * n, w, n, 1e-5f);
    float *dx, *dw, *dy;
    cudaMalloc((void **)&dx, sizeof(float) * rows * n);
    cudaMalloc((void **)&dw, sizeof(float) * n);
    cudaMalloc((void **)&dy, sizeof(float) * rows * n);
    cudaMemcpy(dx, x, sizeof(float) * rows * n, cudaMemcpyHostToDevice);
    cudaMemcpy(dw, w, sizeof(float) * n, cudaMemcpyHostToDevice);
    kn_cuda_rmsnorm(dy, dx, dw, rows, n, 1e-5f);
    cudaMemcpy(got, dy, sizeof(float) * rows * n, cudaMemcpyDeviceToHost);
    double num = 0, den = 0;
    for (int i = 0; i < rows * n; i++) {
        num += (got[i] - ref[i]) * (double)(got[i] - ref[i]);
        den += ref[i] * (double)ref[i];
    }
    double nmse = num / den;
    printf("cuda rmsnorm NMSE %.3e\n", nmse);
    cudaFree(dx), cudaFree(dw), cudaFree(dy);
    free(x), free(w), free(ref), free(got);
    return nmse < 1e-10 ? 0 : 1; /* NaN (an unwritten element) fails */
}
