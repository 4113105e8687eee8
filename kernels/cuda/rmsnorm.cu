/*
 * rmsnorm.cu — RMSNorm on the GPU: one block per row, a shared-memory tree reduction of the sum
 * of squares. Three layers as STYLE.md asks: kernel, launcher, public C entry.
 */
#include "cuda_common.cuh"
#include "rmsnorm.h"

/* ---- kernel ---- */

static __global__ void rmsnorm_kernel(float *out, const float *x, const float *w, int n,
                                      float eps) {
    extern __shared__ float partial[];
    const float *row = x + (size_t)blockIdx.x * n;
    float *orow = out + (size_t)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += row[i] * row[i];
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    float scale = rsqrtf(partial[0] / n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) orow[i] = row[i] * scale * w[i];
}

/* ---- launcher ---- */

static void rmsnorm_launch(float *out, const float *x, const float *w, int rows, int n, float eps,
                           cudaStream_t stream) {
    const int threads = 256; /* power of two: the reduction halves it */
    rmsnorm_kernel<<<rows, threads, threads * sizeof(float), stream>>>(out, x, w, n, eps);
    CUDA_CHECK(cudaGetLastError());
}

/* ---- public ---- */

extern "C" int kn_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
}

extern "C" void kn_cuda_rmsnorm(float *out, const float *x, const float *w, int rows, int n,
                                float eps) {
    rmsnorm_launch(out, x, w, rows, n, eps, 0);
}
