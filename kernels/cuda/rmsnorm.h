/*
 * rmsnorm.h — CUDA RMSNorm, the first op of the CUDA backend; its CPU reference is kn_rmsnorm.
 * Callable from C. Not thread-safe across streams sharing buffers; HOT once the backend runs.
 */
#ifndef KN_CUDA_RMSNORM_H
#define KN_CUDA_RMSNORM_H

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices visible; 0 when there is no driver or no GPU (never aborts). */
int kn_cuda_device_count(void);

/* out (rows, n) = x (rows, n) / rms(x) * w (n), all device pointers, on the default stream. */
void kn_cuda_rmsnorm(float *out, const float *x, const float *w, int rows, int n, float eps);

#ifdef __cplusplus
}
#endif

#endif
