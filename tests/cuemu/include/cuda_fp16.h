/*
 * cuda_fp16.h (cuemu) — __half and the conversions lantern's kernels use, for the CPU emulator
 * of tests/cuemu. Conversions round to nearest even (the compiler's _Float16).
 */
#ifndef CUEMU_CUDA_FP16_H
#define CUEMU_CUDA_FP16_H

#include <stdint.h>
#include <string.h>

#include "cuda_runtime.h"

struct __half {
    uint16_t x;
};
struct alignas(4) __half2 {
    __half x, y;
};

static inline float __half2float(__half h) {
    _Float16 f;
    memcpy(&f, &h.x, 2);
    return (float)f;
}

static inline __half __float2half_rn(float v) {
    _Float16 f = (_Float16)v;
    __half h;
    memcpy(&h.x, &f, 2);
    return h;
}

static inline __half __float2half(float v) {
    return __float2half_rn(v);
}

static inline __half __ushort_as_half(unsigned short u) {
    return __half{u};
}

static inline float2 __half22float2(__half2 h) {
    return float2{__half2float(h.x), __half2float(h.y)};
}

static inline unsigned short __half_as_ushort(__half h) {
    return h.x;
}

#endif
