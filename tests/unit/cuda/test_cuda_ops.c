/*
 * test_cuda_ops.c — every kernel of kernels/cuda/ops.h against the CPU reference (kernels/cpu or
 * a direct double-precision loop) on random inputs: embedding gather, RMSNorm, q/k norm + RoPE
 * (neox and adjacent pairs), SwiGLU, add, row gather, paged KV store + attention (F32, F16 and
 * BF16 caches, head_dim 64, 128, 256, scattered blocks, two sequences, prefill and decode rows;
 * per token, split over position ranges, and by tiles), and matmul on both paths
 * (matrix-vector up to KN_CU_MATVEC_MAX_ROWS rows, cuBLAS above) for Q4_0, Q4_1, Q8_0, Q4_K, Q5_K,
 * Q6_K, Q3_K, Q5_0, Q5_1 (the last six unfolded on the device by kn_cu_krepack), F16, BF16, F32
 * weights, with and without
 * bias. Outputs are poisoned (NaN bytes) before each kernel so
 * an unwritten element fails; each comparison is an NMSE bound printed with its value.
 * Exits 77 (skipped) where no GPU is visible.
 */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/device_math.h"
#include "cuda/ops.h"
#include "cuda/rmsnorm.h"
#include "dtype.h"
#include "kernels.h"
#include "lt.h"

static int g_fail;

static float frand(float lo, float hi) {
    return lo + (hi - lo) * (float)rand() / (float)RAND_MAX;
}

static void *dev(const void *host, size_t n) {
    void *d = NULL;
    if (cudaMalloc(&d, n ? n : 4) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc %zu failed\n", n);
        exit(1);
    }
    if (host)
        cudaMemcpy(d, host, n, cudaMemcpyHostToDevice);
    else
        cudaMemset(d, 0xff, n); /* poison: NaN floats */
    return d;
}

static void back(void *host, const void *d, size_t n) {
    cudaError_t e = cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaMemcpy(host, d, n, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
        exit(1);
    }
}

/* Whether n bytes at device pointers x and y are the same bits (bit-for-bit checks). */
static bool dev_same(const void *x, const void *y, size_t n) {
    uint8_t *a = malloc(n), *b = malloc(n);
    back(a, x, n), back(b, y, n);
    bool same = memcmp(a, b, n) == 0;
    free(a), free(b);
    return same;
}

static void expect(const char *what, int rc, const float *got, const double *ref, size_t n,
                   double bound) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    double nmse = num / (den > 0 ? den : 1);
    bool ok = rc == 0 && nmse <= bound; /* NaN (an unwritten element) fails */
    printf("%s %-44s NMSE %.3e (bound %.0e)%s\n", ok ? "ok  " : "FAIL", what, nmse, bound,
           rc ? " kernel error" : "");
    if (!ok) g_fail = 1;
}

/* A random row of `type` with n elements and sane block scales. */
static void rand_row(int type, uint8_t *row, int n) {
    size_t bytes = (size_t)lt_dtype_nbytes(type, n);
    for (size_t i = 0; i < bytes; i++) row[i] = (uint8_t)rand();
    if (type == LT_DTYPE_F32)
        for (int i = 0; i < n; i++) ((float *)row)[i] = frand(-1, 1);
    if (type == LT_DTYPE_F16)
        for (int i = 0; i < n; i++) ((uint16_t *)row)[i] = lt_f32_to_f16(frand(-1, 1));
    if (type == LT_DTYPE_BF16)
        for (int i = 0; i < n; i++) ((uint16_t *)row)[i] = kn_f2bf(frand(-1, 1));
    int qb = kn_qblock_bytes(type);
    for (int b = 0; qb && b < n / KN_BLOCK; b++) {
        uint16_t d = lt_f32_to_f16(frand(0.005f, 0.05f)), m = lt_f32_to_f16(frand(-0.2f, 0.2f));
        memcpy(row + (size_t)b * qb, &d, 2);
        if (type == LT_DTYPE_Q4_1) memcpy(row + (size_t)b * qb + 2, &m, 2);
    }
    int q5 = type == LT_DTYPE_Q5_0 || type == LT_DTYPE_Q5_1 ? kn_unfold_bytes(type) : 0;
    for (int b = 0; q5 && b < n / KN_BLOCK; b++) { /* Q5_0 / Q5_1: each block's d (and m) */
        uint16_t d = lt_f32_to_f16(frand(0.005f, 0.05f)), m = lt_f32_to_f16(frand(-0.2f, 0.2f));
        memcpy(row + (size_t)b * q5, &d, 2);
        if (type == LT_DTYPE_Q5_1) memcpy(row + (size_t)b * q5 + 2, &m, 2);
    }
    int sbb = kn_ksb_bytes(type); /* K-quants: the super-blocks' f16 d (and dmin) */
    for (int s = 0; sbb && s < n / KN_KBLOCK; s++) {
        uint16_t d = lt_f32_to_f16(frand(0.0005f, 0.005f)), m = lt_f32_to_f16(frand(0, 0.005f));
        uint8_t *sb = row + (size_t)s * sbb;
        bool last = type == LT_DTYPE_Q6_K || type == LT_DTYPE_Q3_K; /* d at the end, no dmin */
        memcpy(last ? sb + sbb - 2 : sb, &d, 2);
        if (!last) memcpy(sb + 2, &m, 2);
    }
}

/* A matrix's rows as the GPU holds them, *grb bytes apart: Q4_0/Q4_1/Q8_0 rows repacked (ops.h:
 * kn_cu_repack; done on the host here with kn_repack_row, backend_cuda.c does it on the device);
 * K-quant and Q5 rows uploaded as stored and unfolded on the device by kn_cu_krepack, as the
 * backend does. */
static void *dev_weight(const uint8_t *w, int type, size_t rb, int n, int k, size_t *grb) {
    *grb = kn_cu_row_bytes(type, k, rb);
    if (kn_unfold_bytes(type)) {
        void *stored = dev(w, rb * n), *d = dev(NULL, *grb * n);
        int rc = kn_cu_krepack(d, stored, type, rb, n, k, NULL);
        cudaError_t e = cudaDeviceSynchronize();
        cudaFree(stored);
        if (rc || e != cudaSuccess) {
            fprintf(stderr, "kn_cu_krepack %s: %s\n", lt_dtype_name(type),
                    rc ? kn_cu_error_str(rc) : cudaGetErrorString(e));
            exit(1);
        }
        return d;
    }
    uint8_t *g = malloc(rb * n);
    memcpy(g, w, rb * n);
    if (kn_qblock_bytes(type))
        for (int r = 0; r < n; r++) kn_repack_row(type, g + r * rb, w + r * rb, k / KN_BLOCK);
    void *d = dev(g, rb * n);
    free(g);
    return d;
}

/* kn_cu_matmul's scratch for up to `rows` activation rows of k inputs, as backend_cuda.c sizes
 * it (outputs poisoned by dev). */
static kn_cu_mm_scratch_t mm_scratch(cublasHandle_t hb, int rows, int k) {
    return (kn_cu_mm_scratch_t){.wtile = dev(NULL, (size_t)KN_CU_DEQ_ROWS * k * 2),
                                .xh = dev(NULL, (size_t)rows * k * 2),
                                .xq = dev(NULL, (size_t)KN_CU_MATVEC_MAX_ROWS * k * 2),
                                .xs = dev(NULL, (size_t)KN_CU_MATVEC_MAX_ROWS * (k / 32) * 8),
                                .max_k = k,
                                .cublas = hb};
}

static void mm_scratch_free(kn_cu_mm_scratch_t *s) {
    cudaFree(s->wtile), cudaFree(s->xh), cudaFree(s->xq), cudaFree(s->xs);
}

static const int TYPES[] = {LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q8_0, LT_DTYPE_Q4_K,
                            LT_DTYPE_Q5_K, LT_DTYPE_Q6_K, LT_DTYPE_Q3_K, LT_DTYPE_Q5_0,
                            LT_DTYPE_Q5_1, LT_DTYPE_F16,  LT_DTYPE_BF16, LT_DTYPE_F32};
#define N_TYPES 12

/* Every type, k = 512 (16-byte aligned rows: the fast kernels), 96 and 160 (rows aligned to 4
 * bytes or less: the 4-byte and generic kernels; not for the K-quants, whose rows are whole
 * 256-element super-blocks); rows 1..8 take the matrix-vector kernels. */
static void test_matmul(cublasHandle_t hb, cudaStream_t st) {
    static const int k_list[] = {512, 96, 160};
    for (size_t ki = 0; ki < sizeof k_list / sizeof *k_list; ki++) {
        const int n = 300, k = k_list[ki], rows_list[] = {1, 3, 8, 9, 40};
        kn_cu_mm_scratch_t s = mm_scratch(hb, 40, k);
        float *x = malloc(sizeof(float) * 40 * k), *bias = malloc(sizeof(float) * n);
        float *wf = malloc(sizeof(float) * n * k), *got = malloc(sizeof(float) * 40 * n);
        double *ref = malloc(sizeof(double) * 40 * n);
        for (int i = 0; i < 40 * k; i++) x[i] = frand(-1, 1);
        for (int i = 0; i < n; i++) bias[i] = frand(-1, 1);
        float *dx = dev(x, sizeof(float) * 40 * k), *db = dev(bias, sizeof(float) * n);
        for (int ti = 0; ti < N_TYPES; ti++) {
            int type = TYPES[ti];
            if (!kn_cu_matmul_supported(type, k)) continue;
            size_t rb = (size_t)lt_dtype_nbytes(type, k), grb;
            uint8_t *w = malloc(rb * n);
            for (int r = 0; r < n; r++) {
                rand_row(type, w + r * rb, k);
                kn_dequantize(type, w + r * rb, wf + (size_t)r * k, k);
            }
            void *dw = dev_weight(w, type, rb, n, k, &grb);
            for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++) {
                int rows = rows_list[ri];
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    for (int t = 0; t < rows; t++)
                        for (int j = 0; j < n; j++) {
                            double acc = with_bias ? bias[j] : 0;
                            for (int c = 0; c < k; c++)
                                acc += (double)x[(size_t)t * k + c] * wf[(size_t)j * k + c];
                            ref[(size_t)t * n + j] = acc;
                        }
                    float *dy = dev(NULL, sizeof(float) * rows * n);
                    int rc = kn_cu_matmul(dy, dx, dw, type, grb, n, k, with_bias ? db : NULL, rows,
                                          &s, st);
                    back(got, dy, sizeof(float) * rows * n);
                    char what[96];
                    snprintf(what, sizeof what, "matmul %s k %d rows %d%s", lt_dtype_name(type), k,
                             rows, with_bias ? " +bias" : "");
                    /* matrix-vector, quantized: 16-bit activation quants (half a step of
                     * max|x| / 32639 per element: ~1e-10 of the signal; int8 quants, ~1e-5,
                     * fail); cuBLAS: fp16/bf16 activations */
                    bool mv = rows <= KN_CU_MATVEC_MAX_ROWS, q = kn_is_qgpu(type) != 0;
                    double bound = mv && q                 ? 1e-8
                                   : mv                    ? 1e-9
                                   : type == LT_DTYPE_BF16 ? 1e-4
                                   : type == LT_DTYPE_F32  ? 1e-6
                                                           : 1e-5;
                    expect(what, rc, got, ref, (size_t)rows * n, bound);
                    cudaFree(dy);
                }
            }
            cudaFree(dw);
            free(w);
        }
        cudaFree(dx);
        cudaFree(db);
        mm_scratch_free(&s);
        free(x), free(bias), free(wf), free(got), free(ref);
    }
}

/* Two sequences (prompt lengths 37 and 5) with scattered blocks; the batch holds the last 9
 * positions of sequence 0 (prefill chunk) and the last 1 of sequence 1 (decode). */
/* kn_cu_matmul_n over q/k/v-like weights (one type, n = 96, 32, 32; biases on two) gives each
 * weight's kn_cu_matmul result bit for bit, for rows 1..8 (one launch) and 9 (one by one); and
 * weights of two types fall back to one by one, the same bits. */
/* kn_cu_rmsnorm_q and kn_cu_swiglu_q then a product on their output (the product skips
 * quantizing it) against the plain operation then the product (which quantizes): the same bits,
 * outputs and products, for rows 1, 3, 8 (fused) and 9 (plain, s.quantized NULL). */
static void test_fused_quants(cublasHandle_t hb, cudaStream_t st) {
    enum { K = 256, N = 96, MAXR = 9 };
    int type = LT_DTYPE_Q4_1, rows_list[] = {1, 3, 8, 9};
    size_t rb = (size_t)lt_dtype_nbytes(type, K), grb;
    uint8_t *w = malloc(rb * N);
    for (int r = 0; r < N; r++) rand_row(type, w + r * rb, K);
    void *dw = dev_weight(w, type, rb, N, K, &grb);
    float x[MAXR * K], up[MAXR * K], nw[K];
    for (int i = 0; i < MAXR * K; i++) x[i] = frand(-2, 2), up[i] = frand(-2, 2);
    for (int i = 0; i < K; i++) nw[i] = frand(0.5f, 1.5f);
    float *dx = dev(x, sizeof x), *dup = dev(up, sizeof up), *dnw = dev(nw, sizeof nw);
    for (int op = 0; op < 2; op++)
        for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++) {
            int rows = rows_list[ri];
            kn_cu_mm_scratch_t s = mm_scratch(hb, MAXR, K);
            float *da = dev(NULL, sizeof x), *db = dev(NULL, sizeof x);
            float *dya = dev(NULL, sizeof(float) * MAXR * N),
                  *dyb = dev(NULL, sizeof(float) * MAXR * N);
            int rc = 0;
            if (op == 0) { /* fused, then plain */
                rc |= kn_cu_rmsnorm_q(da, dx, dnw, rows, K, 1e-5f, &s, st);
                rc |= s.quantized != (rows <= KN_CU_MATVEC_MAX_ROWS ? da : NULL);
                rc |= kn_cu_matmul(dya, da, dw, type, grb, N, K, NULL, rows, &s, st);
                s.quantized = NULL;
                rc |= kn_cu_rmsnorm(db, dx, dnw, rows, K, 1e-5f, st);
            } else {
                cudaMemcpy(da, dx, sizeof(float) * rows * K, cudaMemcpyDeviceToDevice);
                cudaMemcpy(db, dx, sizeof(float) * rows * K, cudaMemcpyDeviceToDevice);
                rc |= kn_cu_swiglu_q(da, dup, rows, K, &s, st);
                rc |= s.quantized != (rows <= KN_CU_MATVEC_MAX_ROWS ? da : NULL);
                rc |= kn_cu_matmul(dya, da, dw, type, grb, N, K, NULL, rows, &s, st);
                s.quantized = NULL;
                rc |= kn_cu_swiglu(db, dup, (size_t)rows * K, st);
            }
            rc |= kn_cu_matmul(dyb, db, dw, type, grb, N, K, NULL, rows, &s, st);
            bool ok = rc == 0 && dev_same(da, db, sizeof(float) * rows * K) &&
                      dev_same(dya, dyb, sizeof(float) * rows * N);
            printf("%s %s_q rows %d: output and product bit for bit the plain ones'\n",
                   ok ? "ok  " : "FAIL", op ? "swiglu" : "rmsnorm", rows);
            if (!ok) g_fail = 1;
            cudaFree(da), cudaFree(db), cudaFree(dya), cudaFree(dyb);
            mm_scratch_free(&s);
        }
    cudaFree(dx), cudaFree(dup), cudaFree(dnw), cudaFree(dw), free(w);
}

/* The fused pairs of the decode layer against the two operations they replace, bit for bit:
 * kn_cu_add_rmsnorm_q (the residual, the normalized rows aliasing y as forward.c calls it, and a
 * product on them) against kn_cu_add, kn_cu_rmsnorm and a quantizing product, rows 1, 3, 8 and
 * 40; kn_cu_qk_rope_store (q, k and both caches) against kn_cu_qk_rope then kn_cu_kv_store, with
 * and without q/k norms, neox and adjacent pairs. */
static void test_fused_pairs(cublasHandle_t hb, cudaStream_t st) {
    enum { K = 320, N = 48, MAXR = 40 };
    int type = LT_DTYPE_Q8_0, rows_list[] = {1, 3, 8, 40};
    size_t rb = (size_t)lt_dtype_nbytes(type, K), grb;
    uint8_t *w = malloc(rb * N);
    for (int r = 0; r < N; r++) rand_row(type, w + r * rb, K);
    void *dw = dev_weight(w, type, rb, N, K, &grb);
    float *x = malloc(sizeof(float) * MAXR * K), *y = malloc(sizeof(float) * MAXR * K);
    float nw[K];
    for (int i = 0; i < MAXR * K; i++) x[i] = frand(-2, 2), y[i] = frand(-2, 2);
    for (int i = 0; i < K; i++) nw[i] = frand(0.5f, 1.5f);
    float *dnw = dev(nw, sizeof nw);
    for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++) {
        int rows = rows_list[ri];
        size_t bytes = sizeof(float) * rows * K;
        kn_cu_mm_scratch_t s = mm_scratch(hb, MAXR, K);
        float *xa = dev(x, bytes), *ya = dev(y, bytes), *xb = dev(x, bytes), *yb = dev(y, bytes);
        float *ob = dev(NULL, bytes), *pa = dev(NULL, sizeof(float) * rows * N),
              *pb = dev(NULL, sizeof(float) * rows * N);
        int rc = kn_cu_add_rmsnorm_q(xa, ya, ya, dnw, rows, K, 1e-5f, &s, st);
        rc |= s.quantized != (rows <= KN_CU_MATVEC_MAX_ROWS ? ya : NULL);
        rc |= kn_cu_matmul(pa, ya, dw, type, grb, N, K, NULL, rows, &s, st);
        s.quantized = NULL;
        rc |= kn_cu_add(xb, yb, (size_t)rows * K, st);
        rc |= kn_cu_rmsnorm(ob, xb, dnw, rows, K, 1e-5f, st);
        rc |= kn_cu_matmul(pb, ob, dw, type, grb, N, K, NULL, rows, &s, st);
        bool ok = rc == 0 && dev_same(xa, xb, bytes) && dev_same(ya, ob, bytes) &&
                  dev_same(pa, pb, sizeof(float) * rows * N);
        printf("%s add_rmsnorm_q rows %d: residual, output and product bit for bit\n",
               ok ? "ok  " : "FAIL", rows);
        if (!ok) g_fail = 1;
        cudaFree(xa), cudaFree(ya), cudaFree(xb), cudaFree(yb), cudaFree(ob), cudaFree(pa),
            cudaFree(pb);
        mm_scratch_free(&s);
    }
    cudaFree(dnw), cudaFree(dw), free(w), free(x), free(y);

    enum { T = 3, NH = 4, NKV = 2, HD = 64, NB = 3, BS = 4, L = 2, LAYER = 1 };
    int32_t idx[3 * T + 3] = {0, 0, 0, 5, 6, 9, 0, 0, 0, 2, 0, 1}; /* tokens, pos, seq, table */
    int32_t *d_idx = dev(idx, sizeof idx);
    kn_cu_batch_t b = {.n_tokens = T,
                       .tokens = d_idx,
                       .pos = d_idx + T,
                       .seq = d_idx + 2 * T,
                       .block_tables = d_idx + 3 * T,
                       .bt_stride = 3};
    float q[T * NH * HD], k[T * NKV * HD], v[T * NKV * HD], inv[HD / 2], qn[HD], kn[HD];
    for (int i = 0; i < T * NH * HD; i++) q[i] = frand(-1, 1);
    for (int i = 0; i < T * NKV * HD; i++) k[i] = frand(-1, 1), v[i] = frand(-1, 1);
    for (int i = 0; i < HD / 2; i++) inv[i] = powf(10000.0f, -2.0f * i / HD);
    for (int i = 0; i < HD; i++) qn[i] = frand(0.5f, 1.5f), kn[i] = frand(0.5f, 1.5f);
    float *dinv = dev(inv, sizeof inv), *dqn = dev(qn, sizeof qn), *dkn = dev(kn, sizeof kn);
    float *dv = dev(v, sizeof v);
    size_t cache = (size_t)L * NB * NKV * BS * HD * 2;
    for (int variant = 0; variant < 4; variant++) {
        bool norms = variant & 1;
        int neox = variant >> 1;
        float *q1 = dev(q, sizeof q), *k1 = dev(k, sizeof k), *q2 = dev(q, sizeof q),
              *k2 = dev(k, sizeof k);
        kn_cu_kv_t kv1 = {.k = dev(NULL, cache),
                          .v = dev(NULL, cache),
                          .dtype = LT_DTYPE_F16,
                          .n_blocks = NB,
                          .n_kv_head = NKV,
                          .block_size = BS,
                          .head_dim = HD},
                   kv2 = kv1;
        kv2.k = dev(NULL, cache), kv2.v = dev(NULL, cache);
        cudaMemset(kv1.k, 0, cache), cudaMemset(kv1.v, 0, cache), cudaMemset(kv2.k, 0, cache),
            cudaMemset(kv2.v, 0, cache);
        const float *qnp = norms ? dqn : NULL, *knp = norms ? dkn : NULL;
        int rc = kn_cu_qk_rope_store(q1, k1, dv, NH, NKV, HD, qnp, knp, 1e-6f, dinv, neox, 1.0f,
                                     &kv1, LAYER, &b, st);
        rc |= kn_cu_qk_rope(q2, k2, NH, NKV, HD, qnp, knp, 1e-6f, dinv, neox, 1.0f, &b, st);
        rc |= kn_cu_kv_store(&kv2, LAYER, k2, dv, &b, st);
        bool ok = rc == 0 && dev_same(q1, q2, sizeof q) && dev_same(k1, k2, sizeof k) &&
                  dev_same(kv1.k, kv2.k, cache) && dev_same(kv1.v, kv2.v, cache);
        printf("%s qk_rope_store%s%s: q, k and the cache bit for bit qk_rope then kv_store\n",
               ok ? "ok  " : "FAIL", norms ? " + q/k norm" : "", neox ? " neox" : "");
        if (!ok) g_fail = 1;
        cudaFree(q1), cudaFree(k1), cudaFree(q2), cudaFree(k2);
        cudaFree(kv1.k), cudaFree(kv1.v), cudaFree(kv2.k), cudaFree(kv2.v);
    }
    cudaFree(dinv), cudaFree(dqn), cudaFree(dkn), cudaFree(dv), cudaFree(d_idx);
}

static void test_matmul_n(cublasHandle_t hb, cudaStream_t st) {
    const int k = 256, ns[3] = {96, 32, 32}, rows_list[] = {1, 2, 5, 8, 9};
    kn_cu_mm_scratch_t s = mm_scratch(hb, 9, k);
    float x[9 * 256], bias[96];
    for (int i = 0; i < 9 * k; i++) x[i] = frand(-1, 1);
    for (int i = 0; i < 96; i++) bias[i] = frand(-1, 1);
    float *dx = dev(x, sizeof x), *db = dev(bias, sizeof bias);
    for (int ti = 0; ti < N_TYPES; ti++) {
        for (int mixed = 0; mixed < 2; mixed++) {
            kn_cu_mat_t m[3];
            void *dw[3];
            float *dy[3], *dref[3];
            for (int i = 0; i < 3; i++) {
                int type = mixed && i == 2
                               ? (TYPES[ti] == LT_DTYPE_F32 ? LT_DTYPE_Q8_0 : LT_DTYPE_F32)
                               : TYPES[ti];
                size_t rb = (size_t)lt_dtype_nbytes(type, k), grb;
                uint8_t *w = malloc(rb * ns[i]);
                for (int r = 0; r < ns[i]; r++) rand_row(type, w + r * rb, k);
                dw[i] = dev_weight(w, type, rb, ns[i], k, &grb);
                free(w);
                dy[i] = dev(NULL, sizeof(float) * 9 * ns[i]);
                dref[i] = dev(NULL, sizeof(float) * 9 * ns[i]);
                m[i] = (kn_cu_mat_t){dw[i], type, grb, ns[i], dy[i], i < 2 ? db : NULL};
            }
            for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++) {
                int rows = rows_list[ri], rc = kn_cu_matmul_n(m, 3, dx, k, rows, &s, st), same = 1;
                for (int i = 0; i < 3; i++) {
                    rc |= kn_cu_matmul(dref[i], dx, dw[i], m[i].type, m[i].row_bytes, ns[i], k,
                                       m[i].bias, rows, &s, st);
                    same &= dev_same(dy[i], dref[i], sizeof(float) * rows * ns[i]);
                }
                bool ok = rc == 0 && same;
                printf("%s matmul_n %s%s rows %d: %s\n", ok ? "ok  " : "FAIL",
                       lt_dtype_name(TYPES[ti]), mixed ? " + another type" : "", rows,
                       same ? "each weight's matmul, bit for bit" : "DIFFERENT");
                if (!ok) g_fail = 1;
            }
            for (int i = 0; i < 3; i++) cudaFree(dw[i]), cudaFree(dy[i]), cudaFree(dref[i]);
        }
    }
    cudaFree(dx), cudaFree(db);
    mm_scratch_free(&s);
}

static void test_attention(cudaStream_t st, int dtype, const int HD) {
    enum { NB = 16, BS = 4, NKV = 2, NH = 6, L = 2, LAYER = 1 };
    const int lens[2] = {37, 5}, T = 10;
    int32_t bt_host[2][10], tokens[10] = {0}, pos[10], seq[10];
    int perm[NB];
    for (int i = 0; i < NB; i++) perm[i] = i;
    for (int i = NB - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int j = 0; j < 10; j++) bt_host[0][j] = perm[j];
    for (int j = 0; j < 10; j++) bt_host[1][j] = perm[10 + (j % 6)];
    for (int t = 0; t < 9; t++) pos[t] = lens[0] - 9 + t, seq[t] = 0;
    pos[9] = lens[1] - 1, seq[9] = 1;
    size_t es = dtype == LT_DTYPE_F32 ? 4 : 2, cache_n = (size_t)L * NB * NKV * BS * HD;
    /* history (positions before the batch) written on the host; the batch's rows by kv_store */
    float *kall = malloc(sizeof(float) * 2 * 40 * NKV * HD),
          *vall = malloc(sizeof(float) * 2 * 40 * NKV * HD);
    for (int i = 0; i < 2 * 40 * NKV * HD; i++) kall[i] = frand(-1, 1), vall[i] = frand(-1, 1);
    uint8_t *kc = calloc(cache_n, es), *vc = calloc(cache_n, es);
    for (int s = 0; s < 2; s++)
        for (int p = 0; p < lens[s]; p++)
            for (int h = 0; h < NKV; h++)
                for (int d = 0; d < HD; d++) {
                    size_t src = (((size_t)s * 40 + p) * NKV + h) * HD + d;
                    /* what the cache holds: rounded to its type */
                    float kr = kall[src], vr = vall[src];
                    if (dtype == LT_DTYPE_F16) kr = kn_h2f(kn_f2h(kr)), vr = kn_h2f(kn_f2h(vr));
                    if (dtype == LT_DTYPE_BF16)
                        kr = kn_bf2f(kn_f2bf(kr)), vr = kn_bf2f(kn_f2bf(vr));
                    kall[src] = kr, vall[src] = vr;
                    bool in_batch = s == 0 ? p >= lens[0] - 9 : p == lens[1] - 1;
                    if (in_batch) continue;
                    size_t off =
                        ((((size_t)LAYER * NB + bt_host[s][p / BS]) * NKV + h) * BS + p % BS) * HD +
                        d;
                    if (dtype == LT_DTYPE_F32)
                        ((float *)kc)[off] = kr, ((float *)vc)[off] = vr;
                    else if (dtype == LT_DTYPE_F16)
                        ((uint16_t *)kc)[off] = kn_f2h(kr), ((uint16_t *)vc)[off] = kn_f2h(vr);
                    else
                        ((uint16_t *)kc)[off] = kn_f2bf(kr), ((uint16_t *)vc)[off] = kn_f2bf(vr);
                }
    float *k = malloc(sizeof(float) * 10 * NKV * HD), *v = malloc(sizeof(float) * 10 * NKV * HD);
    float *q = malloc(sizeof(float) * 10 * NH * HD), *got = malloc(sizeof(float) * 10 * NH * HD);
    double *ref = malloc(sizeof(double) * 10 * NH * HD);
    size_t kvb = sizeof(float) * 10 * NKV * HD, qb = sizeof(float) * 10 * NH * HD;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < NKV * HD; i++) {
            size_t src = ((size_t)seq[t] * 40 + pos[t]) * NKV * HD + i;
            k[t * NKV * HD + i] = kall[src], v[t * NKV * HD + i] = vall[src];
        }
    for (int i = 0; i < T * NH * HD; i++) q[i] = frand(-1, 1);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < NH; h++) {
            int kvh = h / (NH / NKV), n = pos[t] + 1;
            double sc[40], mx = -1e300, sum = 0;
            for (int j = 0; j < n; j++) {
                double dot = 0;
                for (int d = 0; d < HD; d++)
                    dot += (double)q[(t * NH + h) * HD + d] *
                           kall[(((size_t)seq[t] * 40 + j) * NKV + kvh) * HD + d];
                sc[j] = dot / sqrt((double)HD);
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int j = 0; j < n; j++) sum += (sc[j] = exp(sc[j] - mx));
            for (int d = 0; d < HD; d++) {
                double o = 0;
                for (int j = 0; j < n; j++)
                    o += sc[j] / sum * vall[(((size_t)seq[t] * 40 + j) * NKV + kvh) * HD + d];
                ref[(t * NH + h) * HD + d] = o;
            }
        }
    int32_t idx[3 * 10 + 2 * 10];
    memcpy(idx, tokens, 40), memcpy(idx + 10, pos, 40), memcpy(idx + 20, seq, 40);
    memcpy(idx + 30, bt_host, sizeof bt_host);
    int32_t *d_idx = dev(idx, sizeof idx);
    kn_cu_batch_t b = {.n_tokens = T,
                       .tokens = d_idx,
                       .pos = d_idx + 10,
                       .seq = d_idx + 20,
                       .block_tables = d_idx + 30,
                       .bt_stride = 10};
    kn_cu_kv_t kv = {.k = dev(kc, cache_n * es),
                     .v = dev(vc, cache_n * es),
                     .dtype = dtype,
                     .n_blocks = NB,
                     .n_kv_head = NKV,
                     .block_size = BS,
                     .head_dim = HD};
    float *dk = dev(k, kvb), *dv = dev(v, kvb), *dq = dev(q, qb);
    float *dout = dev(NULL, qb);
    int rc = kn_cu_kv_store(&kv, LAYER, dk, dv, &b, st);
    if (!rc) rc = kn_cu_attention(dout, dq, &kv, LAYER, NH, &b, st);
    back(got, dout, qb);
    char what[64];
    snprintf(what, sizeof what, "kv_store + attention, %s cache, hd %d", lt_dtype_name(dtype), HD);
    expect(what, rc, got, ref, (size_t)T * NH * HD, 1e-10);
    /* by tiles of a sequence's consecutive tokens (prefill): sequence 0's 9 tokens in tiles of
     * 4 (4, 4, 1) and of KN_CU_ATT_TILE (one), sequence 1's token alone */
    for (int max_rows = 4; max_rows <= KN_CU_ATT_TILE; max_rows += KN_CU_ATT_TILE - 4) {
        int32_t tiles[2 * 10];
        int n_tiles = kn_cu_att_tiles(seq, pos, T, max_rows, tiles);
        int32_t *d_tiles = dev(tiles, sizeof tiles);
        kn_cu_batch_t bt = b;
        bt.tiles = d_tiles, bt.n_tiles = n_tiles;
        cudaMemset(dout, 0xff, qb);
        rc = kn_cu_attention_tiled(dout, dq, &kv, LAYER, NH, &bt, st);
        back(got, dout, qb);
        snprintf(what, sizeof what, "attention tiled (%d tiles), %s cache, hd %d", n_tiles,
                 lt_dtype_name(dtype), HD);
        expect(what, rc, got, ref, (size_t)T * NH * HD, 1e-10);
        cudaFree(d_tiles);
    }
    /* split over position ranges (long-context decode): 3 ranges, and 16 (more than sequence 1's
     * 5 positions: empty ranges) */
    static const int splits[2] = {3, KN_ATT_MAX_SPLITS};
    float *dpart = dev(NULL, sizeof(float) * T * NH * KN_ATT_MAX_SPLITS * (HD + 2));
    for (int i = 0; i < 2; i++) {
        cudaMemset(dout, 0xff, qb);
        rc = kn_cu_attention_split(dout, dq, &kv, LAYER, NH, &b, dpart, splits[i], st);
        back(got, dout, qb);
        snprintf(what, sizeof what, "attention split %d, %s cache, hd %d", splits[i],
                 lt_dtype_name(dtype), HD);
        expect(what, rc, got, ref, (size_t)T * NH * HD, 1e-10);
    }
    /* kn_cu_attention_q on the last two tokens (a decode batch), unsplit and split: the output
     * bit for bit kn_cu_attention_split's, and a product on it (which skips quantizing it) bit
     * for bit one that quantizes */
    {
        enum { N = 40 };
        int K = NH * HD, type = LT_DTYPE_Q4_1;
        kn_cu_batch_t b2 = b;
        b2.n_tokens = 2, b2.tokens += 8, b2.pos += 8, b2.seq += 8;
        size_t rb = (size_t)lt_dtype_nbytes(type, K), grb;
        uint8_t *w = malloc(rb * N);
        for (int r = 0; r < N; r++) rand_row(type, w + r * rb, K);
        void *dw = dev_weight(w, type, rb, N, K, &grb);
        float *dq2 = dq + (size_t)8 * NH * HD, *dref = dev(NULL, sizeof(float) * 2 * K);
        float *ya = dev(NULL, sizeof(float) * 2 * N), *yb = dev(NULL, sizeof(float) * 2 * N);
        for (int sp = 1; sp <= 3; sp += 2) {
            kn_cu_mm_scratch_t s = mm_scratch(NULL, 2, K);
            rc = kn_cu_attention_q(dout, dq2, &kv, LAYER, NH, &b2, dpart, sp, &s, st);
            rc |= s.quantized != dout;
            rc |= kn_cu_matmul(ya, dout, dw, type, grb, N, K, NULL, 2, &s, st);
            s.quantized = NULL;
            rc |= kn_cu_attention_split(dref, dq2, &kv, LAYER, NH, &b2, dpart, sp, st);
            rc |= kn_cu_matmul(yb, dref, dw, type, grb, N, K, NULL, 2, &s, st);
            bool ok = rc == 0 && dev_same(dout, dref, sizeof(float) * 2 * K) &&
                      dev_same(ya, yb, sizeof(float) * 2 * N);
            printf("%s attention_q split %d, %s cache, hd %d: output and product bit for bit\n",
                   ok ? "ok  " : "FAIL", sp, lt_dtype_name(dtype), HD);
            if (!ok) g_fail = 1;
            mm_scratch_free(&s);
        }
        cudaFree(dw), cudaFree(dref), cudaFree(ya), cudaFree(yb);
        free(w);
    }
    cudaFree(dpart);
    cudaFree(kv.k), cudaFree(kv.v), cudaFree(dk), cudaFree(dv), cudaFree(dq), cudaFree(dout);
    cudaFree(d_idx);
    free(kall), free(vall), free(kc), free(vc);
    free(k), free(v), free(q), free(got), free(ref);
}

static void to_double(double *d, const float *f, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = f[i];
}

static void test_rows(cudaStream_t st) {
    enum { T = 7, NH = 4, NKV = 2, HD = 64, DIM = 320, V = 40 };
    static float x[T * DIM], w[DIM], ref[T * DIM], got[T * DIM], y[T * DIM];
    static double rd[T * DIM];
    int32_t tokens[T], pos[T], seq[T] = {0}, gr[3] = {6, 0, 3};
    for (int t = 0; t < T; t++) tokens[t] = rand() % V, pos[t] = rand() % 5000;
    int32_t idx[3 * T];
    memcpy(idx, tokens, sizeof tokens), memcpy(idx + T, pos, sizeof pos);
    memcpy(idx + 2 * T, seq, sizeof seq);
    int32_t *d_idx = dev(idx, sizeof idx), *d_gr = dev(gr, sizeof gr);
    kn_cu_batch_t b = {.n_tokens = T, .tokens = d_idx, .pos = d_idx + T, .seq = d_idx + 2 * T};
    /* embed (the K-quants: rows of 256 columns, one super-block) */
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = TYPES[ti], cols = kn_ksb_bytes(type) ? KN_KBLOCK : DIM;
        size_t rb = (size_t)lt_dtype_nbytes(type, cols), grb;
        uint8_t *table = malloc(rb * V);
        for (int r = 0; r < V; r++) rand_row(type, table + r * rb, cols);
        for (int t = 0; t < T; t++)
            kn_dequantize(type, table + tokens[t] * rb, ref + t * cols, cols);
        void *dt = dev_weight(table, type, rb, V, cols, &grb);
        float *dx = dev(NULL, sizeof got);
        int rc = kn_cu_embed(dx, dt, type, grb, cols, &b, st);
        back(got, dx, sizeof(float) * T * cols);
        to_double(rd, ref, T * cols);
        char what[64];
        snprintf(what, sizeof what, "embed %s", lt_dtype_name(type));
        expect(what, rc, got, rd, (size_t)T * cols, 1e-12);
        cudaFree(dt), cudaFree(dx), free(table);
    }
    for (int i = 0; i < T * DIM; i++) x[i] = frand(-3, 3), y[i] = frand(-3, 3);
    for (int i = 0; i < DIM; i++) w[i] = frand(0.5f, 1.5f);
    float *dx = dev(x, sizeof x), *dw = dev(w, sizeof w), *dy = dev(y, sizeof y);
    float *dout = dev(NULL, sizeof got);
    /* rmsnorm: ops.cu's and rmsnorm.cu's */
    for (int t = 0; t < T; t++) kn_rmsnorm(ref + t * DIM, x + t * DIM, w, DIM, 1e-5f);
    to_double(rd, ref, T * DIM);
    int rc = kn_cu_rmsnorm(dout, dx, dw, T, DIM, 1e-5f, st);
    back(got, dout, sizeof got);
    expect("rmsnorm", rc, got, rd, T * DIM, 1e-10);
    cudaMemset(dout, 0xff, sizeof got);
    kn_cuda_rmsnorm(dout, dx, dw, T, DIM, 1e-5f);
    back(got, dout, sizeof got);
    expect("rmsnorm (rmsnorm.cu)", 0, got, rd, T * DIM, 1e-10);
    /* swiglu, add */
    memcpy(ref, x, sizeof x);
    kn_swiglu(ref, y, T * DIM);
    to_double(rd, ref, T * DIM);
    cudaMemcpy(dout, dx, sizeof x, cudaMemcpyDeviceToDevice);
    rc = kn_cu_swiglu(dout, dy, T * DIM, st);
    back(got, dout, sizeof got);
    expect("swiglu", rc, got, rd, T * DIM, 1e-12);
    for (int i = 0; i < T * DIM; i++) rd[i] = (double)(x[i] + y[i]);
    cudaMemcpy(dout, dx, sizeof x, cudaMemcpyDeviceToDevice);
    rc = kn_cu_add(dout, dy, T * DIM, st);
    back(got, dout, sizeof got);
    expect("add", rc, got, rd, T * DIM, 0);
    /* gather */
    cudaMemset(dout, 0xff, sizeof got);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < DIM; j++) rd[i * DIM + j] = x[gr[i] * DIM + j];
    rc = kn_cu_gather(dout, dx, d_gr, 3, DIM, st);
    back(got, dout, sizeof(float) * 3 * DIM);
    expect("gather", rc, got, rd, 3 * DIM, 0);
    /* q/k norm + rope, both pair layouts */
    float inv[HD / 2], qn[HD], kn[HD];
    for (int i = 0; i < HD / 2; i++) inv[i] = powf(10000.0f, -2.0f * i / HD);
    for (int i = 0; i < HD; i++) qn[i] = frand(0.5f, 1.5f), kn[i] = frand(0.5f, 1.5f);
    float *dinv = dev(inv, sizeof inv), *dqn = dev(qn, sizeof qn), *dkn = dev(kn, sizeof kn);
    for (int variant = 0; variant < 4; variant++) {
        int neox = variant & 1, norm = variant >> 1;
        static float q[T * NH * HD], k[T * NKV * HD], gq[T * NH * HD], gk[T * NKV * HD];
        static double rq[T * (NH + NKV) * HD];
        for (int i = 0; i < T * NH * HD; i++) q[i] = frand(-2, 2);
        for (int i = 0; i < T * NKV * HD; i++) k[i] = frand(-2, 2);
        float *dq = dev(q, sizeof q), *dk = dev(k, sizeof k);
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < NH; h++) {
                float *qh = q + (t * NH + h) * HD;
                if (norm) kn_rmsnorm(qh, qh, qn, HD, 1e-6f);
                kn_rope(qh, HD, pos[t], inv, neox, 0.8f);
            }
            for (int h = 0; h < NKV; h++) {
                float *kh = k + (t * NKV + h) * HD;
                if (norm) kn_rmsnorm(kh, kh, kn, HD, 1e-6f);
                kn_rope(kh, HD, pos[t], inv, neox, 0.8f);
            }
        }
        rc = kn_cu_qk_rope(dq, dk, NH, NKV, HD, norm ? dqn : NULL, norm ? dkn : NULL, 1e-6f, dinv,
                           neox, 0.8f, &b, st);
        back(gq, dq, sizeof q);
        back(gk, dk, sizeof k);
        to_double(rq, q, T * NH * HD);
        to_double(rq + T * NH * HD, k, T * NKV * HD);
        static float all[T * (NH + NKV) * HD];
        memcpy(all, gq, sizeof gq), memcpy(all + T * NH * HD, gk, sizeof gk);
        char what[64];
        snprintf(what, sizeof what, "qk_rope %s%s", neox ? "neox" : "adjacent",
                 norm ? " + q/k norm" : "");
        expect(what, rc, all, rq, T * (NH + NKV) * HD, 1e-10);
        cudaFree(dq), cudaFree(dk);
    }
    cudaFree(dinv), cudaFree(dqn), cudaFree(dkn), cudaFree(dx), cudaFree(dw), cudaFree(dy);
    cudaFree(dout), cudaFree(d_idx), cudaFree(d_gr);
}

/* kn_cu_krepack refuses what it cannot unfold (a type that is not a K-quant, rows that are not
 * whole super-blocks) before touching memory; kn_cu_row_bytes keeps the stored size of the others.
 */
static void test_krepack_refuses(void) {
    bool ok = kn_cu_krepack(NULL, NULL, LT_DTYPE_Q8_0, 34, 1, 256, NULL) < 0 &&
              kn_cu_krepack(NULL, NULL, LT_DTYPE_Q4_K, 144, 1, 100, NULL) < 0 &&
              kn_cu_row_bytes(LT_DTYPE_Q8_0, 256, 272) == 272 &&
              kn_cu_row_bytes(LT_DTYPE_Q4_K, 256, 144) == 192;
    printf("%s kn_cu_krepack refuses non-K types and partial super-blocks\n", ok ? "ok  " : "FAIL");
    if (!ok) g_fail = 1;
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    srand(42);
    cudaStream_t st;
    cublasHandle_t hb;
    if (cudaStreamCreate(&st) != cudaSuccess || cublasCreate(&hb) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(hb, st) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "stream / cuBLAS set-up failed\n");
        return 1;
    }
    test_rows(st);
    test_attention(st, LT_DTYPE_F32, 64);
    test_attention(st, LT_DTYPE_F16, 64);
    test_attention(st, LT_DTYPE_BF16, 64);
    test_attention(st, LT_DTYPE_F16, 128);
    test_attention(st, LT_DTYPE_F32, 256); /* four lanes a key in the tiled kernel */
    test_matmul(hb, st);
    test_matmul_n(hb, st);
    test_fused_quants(hb, st);
    test_fused_pairs(hb, st);
    test_krepack_refuses();
    cublasDestroy(hb);
    cudaStreamDestroy(st);
    printf(g_fail ? "FAILED\n" : "all passed\n");
    return g_fail;
}
