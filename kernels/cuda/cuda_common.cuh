/*
 * cuda_common.cuh — error checking shared by the CUDA kernels: one CHECK_GEN macro builds
 * CUDA_CHECK, CUBLAS_CHECK and NCCL_CHECK, each reporting statement, file and line. A failed call
 * is fatal to the worker (see STYLE.md): the engine handles the worker's death.
 */
#ifndef KN_CUDA_COMMON_CUH
#define KN_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_GEN(stmt, type, ok, to_str)                                                          \
    do {                                                                                           \
        type rc_ = (stmt);                                                                         \
        if (rc_ != (ok)) {                                                                         \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #stmt, to_str(rc_));     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static inline const char *kn_cublas_str(cublasStatus_t s) {
    return cublasGetStatusString(s);
}

#define CUDA_CHECK(stmt)   CHECK_GEN(stmt, cudaError_t, cudaSuccess, cudaGetErrorString)
#define CUBLAS_CHECK(stmt) CHECK_GEN(stmt, cublasStatus_t, CUBLAS_STATUS_SUCCESS, kn_cublas_str)
#define NCCL_CHECK(stmt)   CHECK_GEN(stmt, ncclResult_t, ncclSuccess, ncclGetErrorString)

#endif
