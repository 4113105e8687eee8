/*
 * bench_qmatmul.c — matrix products from stored weights: kn_qmatmul reading
 * Q4_1/Q8_0/Q4_0/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K/F16/BF16 (with the instruction set LANTERN_CPU_ISA picks,
 * or the best) versus OpenBLAS sgemv/sgemm over the same weights dequantized to fp32, same run, for
 * decode- and prefill-sized row counts. build/bench/bench_qmatmul [n k]    (default: the default
 * model's MLP, 1536 x 576)
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "lt.h"

static double time_it(void (*fn)(void *), void *arg, int reps) {
    fn(arg); /* warm-up */
    uint64_t t0 = lt_now_ns();
    for (int i = 0; i < reps; i++) fn(arg);
    return (lt_now_ns() - t0) / 1e9 / reps;
}

typedef struct {
    float *y, *x, *wf;
    void *wq;
    int type, m, n, k;
    kn_qscratch_t *s;
} job_t;

static void run_q(void *a) {
    job_t *j = a;
    kn_qmatmul(j->y, j->x, j->wq, j->type, j->m, j->n, j->k, j->s);
}

static void run_f(void *a) {
    job_t *j = a;
    if (j->m == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, j->n, j->k, 1.0f, j->wf, j->k, j->x, 1, 0.0f, j->y,
                    1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, j->n, j->k, 1.0f, j->x, j->k,
                    j->wf, j->k, 0.0f, j->y, j->n);
}

int main(int argc, char **argv) {
    int n = argc > 2 ? atoi(argv[1]) : 1536, k = argc > 2 ? atoi(argv[2]) : 576;
    int types[] = {LT_DTYPE_Q4_1, LT_DTYPE_Q8_0, LT_DTYPE_Q4_0, LT_DTYPE_Q5_0, LT_DTYPE_Q5_1,
                   LT_DTYPE_Q4_K, LT_DTYPE_Q5_K, LT_DTYPE_Q6_K, LT_DTYPE_F16,  LT_DTYPE_BF16};
    printf("%-6s %3s %12s %12s %8s   (n=%d k=%d, %s)\n", "type", "m", "qmatmul us", "sgemm us",
           "ratio", n, k, kn_isa_name(kn_isa()));
    kn_qscratch_t *qs = kn_qscratch_create(512, k);
    srand(1);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        int type = types[ti];
        if (!kn_qmatmul_supported(type, k)) {
            printf(
                "%-6s (k=%d is not a whole number of its blocks: run with k a multiple of 256)\n",
                lt_dtype_name(type), k);
            continue;
        }
        size_t bytes = (size_t)lt_dtype_nbytes(type, (int64_t)n * k);
        uint8_t *wq = malloc(bytes);
        for (size_t i = 0; i < bytes; i++) wq[i] = (uint8_t)rand();
        /* sane f16 scales: every block starts with d (and m), but Q6_K's ends with it (F16 and
         * BF16: every element one small value) */
        size_t bb = lt_dtype_block_bytes(type);
        for (size_t b = 0; b < bytes / bb; b++) {
            uint16_t h = lt_f32_to_f16(0.01f);
            memcpy(wq + b * bb + (type == LT_DTYPE_Q6_K ? bb - 2 : 0), &h, 2);
            if (type == LT_DTYPE_Q4_1 || type == LT_DTYPE_Q5_1 || type == LT_DTYPE_Q4_K ||
                type == LT_DTYPE_Q5_K)
                memcpy(wq + b * bb + 2, &h, 2); /* m, or the K-quant's dmin */
        }
        float *wf = malloc(sizeof(float) * n * k);
        kn_dequantize(type, wq, wf, (int64_t)n * k);
        static const int ms[] = {1, 2, 4, 8, 16, 64, 512};
        for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++) {
            int m = ms[mi];
            float *x = malloc(sizeof(float) * m * k), *y = malloc(sizeof(float) * m * n);
            for (int i = 0; i < m * k; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
            job_t j = {y, x, wf, wq, type, m, n, k, qs};
            int reps = m >= 64 ? 10 : 200;
            double tq = time_it(run_q, &j, reps), tf = time_it(run_f, &j, reps);
            printf("%-6s %3d %12.1f %12.1f %8.2f\n", lt_dtype_name(type), m, tq * 1e6, tf * 1e6,
                   tf / tq);
            free(x);
            free(y);
        }
        free(wq);
        free(wf);
    }
    kn_qscratch_destroy(&qs);
    return 0;
}
