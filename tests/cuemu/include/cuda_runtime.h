/*
 * cuda_runtime.h (cuemu) — the runtime API (cuda_runtime_api.h) and, in C++, what device code
 * needs to compile as host code for the CPU emulator of tests/cuemu (cuemu.cpp runs it):
 * built-in index variables, vector types, the intrinsics lantern's kernels use, warp shuffles,
 * __syncthreads, and the launch that tests/cuemu/translate.cmake writes for `k<<<...>>>(...)`.
 *
 * A kernel's threads run as fibers of one host thread, a block at a time; each runs until it
 * reaches a barrier (__syncthreads, __syncwarp, a shuffle) or returns, so a block's shared memory
 * (`__shared__`: a static) is theirs alone. A shuffle that reads an exited lane, or a barrier that
 * some threads never reach, stops the program with a message: those are bugs on a GPU too.
 */
#ifndef CUEMU_CUDA_RUNTIME_H
#define CUEMU_CUDA_RUNTIME_H

#include "cuda_runtime_api.h"

#ifdef __cplusplus

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

/* ---- qualifiers ---- */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__    __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__   static
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))

/* ---- vector types ---- */

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct alignas(8) int2 {
    int x, y;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
static inline float2 make_float2(float x, float y) {
    return float2{x, y};
}
static inline float4 make_float4(float x, float y, float z, float w) {
    return float4{x, y, z, w};
}
static inline int4 make_int4(int x, int y, int z, int w) {
    return int4{x, y, z, w};
}

/* ---- the emulator's side (cuemu.cpp) ---- */

namespace cuemu {
struct thread_ctx {
    uint3 tid, bid;
    dim3 bdim, gdim;
};
const thread_ctx &ctx();       /* the running fiber's indices */
void sync_block();             /* __syncthreads */
void sync_warp(unsigned mask); /* __syncwarp */
uint64_t exchange(unsigned mask, uint64_t bits, int mode, int arg, int width); /* shuffles */
void *dyn_shared(); /* the launch's dynamic shared memory */
bool launch_check(dim3 grid, dim3 block, size_t shmem);
void run_grid(dim3 grid, dim3 block, size_t shmem, void (*body)(void *), void *arg);
void submit(cudaStream_t st, void (*op)(void *), void *arg, void (*free_arg)(void *));

enum { SHFL_IDX, SHFL_XOR, SHFL_DOWN, SHFL_UP };

template <class T> static inline T shfl(unsigned mask, T v, int mode, int arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a scalar");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    u = exchange(mask, u, mode, arg, width);
    memcpy(&v, &u, sizeof v);
    return v;
}

/* One launch: the kernel, its configuration, then its arguments, converted to the kernel's
 * parameter types as a call would (so NULL and 0 stay null pointers). */
template <class... P> struct launcher {
    void (*f)(P...);
    dim3 grid, block;
    size_t shmem;
    cudaStream_t st;

    struct job {
        void (*f)(P...);
        std::tuple<typename std::decay<P>::type...> args;
        dim3 grid, block;
        size_t shmem;
    };
    static void body(void *p) {
        job *j = static_cast<job *>(p);
        std::apply(j->f, j->args);
    }
    static void run(void *p) {
        job *j = static_cast<job *>(p);
        run_grid(j->grid, j->block, j->shmem, body, j);
    }
    static void drop(void *p) {
        delete static_cast<job *>(p);
    }
    void operator()(P... p) const {
        if (!launch_check(grid, block, shmem)) return;
        submit(st, run, new job{f, std::make_tuple(p...), grid, block, shmem}, drop);
    }
};

template <class... P>
static inline launcher<P...> launch(void (*f)(P...), dim3 grid, dim3 block, size_t shmem = 0,
                                    cudaStream_t st = 0) {
    return launcher<P...>{f, grid, block, shmem, st};
}
} // namespace cuemu

#define threadIdx (cuemu::ctx().tid)
#define blockIdx  (cuemu::ctx().bid)
#define blockDim  (cuemu::ctx().bdim)
#define gridDim   (cuemu::ctx().gdim)
#define warpSize  32

static inline void __syncthreads(void) {
    cuemu::sync_block();
}
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    cuemu::sync_warp(mask);
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return cuemu::shfl(mask, v, cuemu::SHFL_IDX, src, width);
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
    return cuemu::shfl(mask, v, cuemu::SHFL_XOR, m, width);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return cuemu::shfl(mask, v, cuemu::SHFL_DOWN, (int)d, width);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return cuemu::shfl(mask, v, cuemu::SHFL_UP, (int)d, width);
}

/* ---- intrinsics ---- */

template <class T> static inline T __ldg(const T *p) {
    return *p;
}
static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
static inline int __float_as_int(float f) {
    int i;
    memcpy(&i, &f, 4);
    return i;
}
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float rsqrtf(float x) {
    return 1.0f / sqrtf(x);
}
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> 8 * i) * (int)(int8_t)(b >> 8 * i);
    return c;
}
static inline int min(int a, int b) {
    return a < b ? a : b;
}
static inline int max(int a, int b) {
    return a > b ? a : b;
}
static inline unsigned min(unsigned a, unsigned b) {
    return a < b ? a : b;
}
static inline unsigned max(unsigned a, unsigned b) {
    return a > b ? a : b;
}
static inline float atomicAdd(float *p, float v) { /* blocks run one at a time: no race */
    float old = *p;
    *p = old + v;
    return old;
}
static inline int atomicAdd(int *p, int v) {
    int old = *p;
    *p = old + v;
    return old;
}

#endif /* __cplusplus */

#endif
