/*
 * qmatmul_avx512vnni.c — the AVX-512 gemm kernel with VNNI's vpdpwssd (a pair product and its
 * accumulation in one instruction), compiled for that instruction set whatever the build's
 * -march and called only where CPUID reports avx512vnni (qmatmul.c). The rest of the "avx512vnni"
 * variant is the AVX-512 one's. Bit-identical to the scalar reference (qmatmul_priv.h).
 */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

#include <immintrin.h>

static inline __m512i pair_dot(__m512i acc, __m512i w, __m512i x) {
    return _mm512_dpwssd_epi32(acc, w, x);
}

#include "qmatmul_avx512_gemm.h"

void kn_gemm_avx512vnni(const kn_wrows_t *w, int rows, const kn_qactT_t *a, int lanes, float *y,
                        int n, int row0, int j0) {
    gemm_avx512_body(w, rows, a, lanes, y, n, row0, j0);
}
