/*
 * bench_cuda.c — the GPU benchmark of issue 13: a Llama-3-8B-shaped model (32 layers, dim 4096,
 * 32 heads, 8 KV heads, MLP 14336, vocabulary 128256) with random weights made without a file
 * (wk_model_random) on CUDA device 0, through the same forward pass the worker runs.
 *
 * It measures, in one run:
 *  - the device-to-device copy bandwidth (cudaMemcpyAsync of 2 GiB, bytes read + written per
 *    second, median of 10): the HBM roofline's rate;
 *  - the cuBLAS bf16 GEMM peak (8192^3, fp32 accumulation, median of 10 after 3 warm-ups);
 *  - per weight type (BF16, Q4_1 and Q4_K, llama.cpp's usual 4-bit type, unfolded on the GPU at
 *    upload; --types to choose among bf16, f16, q4_0, q4_1, q8_0 and q4_k): prefill of 64 sequences
 * of
 * --prompt tokens in steps of --chunk tokens, as TFLOP/s of its matrix products against the GEMM
 * peak; then decode steps at batch 1, 8 and 64 (every sequence at its own context), the median step
 * time against the roofline: (weight bytes read + KV bytes read) / copy bandwidth, eager and with
 *    CUDA graphs.
 *
 * A step is wk_forward: indices up, the model, logits (batch, vocab) back to the host, timed on
 * the wall clock around the call (it returns after the copy). Each batch size runs twice: eager
 * (--enforce-eager) and with CUDA graphs (steps of up to 32 tokens: batches 1 and 8; a shape is
 * recorded on its second run, inside the 5 warm-up steps). Needs a GPU; exits 77 without one.
 *
 * Then, per type, decode at --long positions of context (batch 1 and 8, eager and graphs; 0: not).
 *
 *     bench_cuda [--types bf16,q4_1,q4_k] [--prompt 128] [--chunk 2048] [--steps 30] [--layers 32]
 *                [--long 4096] [--tiny 0]
 *
 * --tiny 1: a model of dim 256 (2 layers unless --layers), small copies and GEMMs: a smoke test of
 * the whole program (the CPU emulator of CUDA runs it in CI: tests/cuemu), not a benchmark.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lt.h"
#include "worker.h"

enum { NSEQ = 64, BLOCK = 16, SEQ_BLOCKS = 24 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Bytes read + written per second by a device-to-device copy of n bytes (2 GiB). */
static double copy_bandwidth(size_t n) {
    void *a, *b;
    if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) return 0;
    cudaMemset(a, 1, n);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    double t[10];
    for (int i = -2; i < 10; i++) {
        cudaEventRecord(e0, 0);
        cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i >= 0) t[i] = ms * 1e-3;
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(a), cudaFree(b);
    return 2.0 * (double)n / median(t, 10);
}

/* FLOP/s of an n^3 (8192^3) bf16 GEMM with fp32 accumulation through cuBLAS. */
static double gemm_peak(int n) {
    void *a, *b, *c;
    size_t bytes = (size_t)n * n * 2;
    if (cudaMalloc(&a, bytes) || cudaMalloc(&b, bytes) || cudaMalloc(&c, bytes)) return 0;
    cudaMemset(a, 0x3c, bytes), cudaMemset(b, 0x3c, bytes); /* bf16 ~0.0115 */
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return 0;
    float one = 1, zero = 0;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    double t[10];
    for (int i = -3; i < 10; i++) {
        cudaEventRecord(e0, 0);
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF,
                     n, &zero, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i >= 0) t[i] = ms * 1e-3;
    }
    cublasDestroy(h);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(a), cudaFree(b), cudaFree(c);
    return 2.0 * n * (double)n * n / median(t, 10);
}

typedef struct run {
    wk_model_t *m;
    wk_kv_cache_t *kv;
    wk_ctx_t *c;
    int32_t len[NSEQ]; /* tokens of each sequence in the cache */
    int bt_len;        /* blocks per sequence: sequence s owns blocks s * bt_len .. */
    int32_t *bt;       /* (NSEQ, bt_len) block tables */
    float *logits;
} run_t;

/* One step of `n` tokens: sequences seqs[0..ns), each with per[s] new tokens; logits of each
 * sequence's last token. Returns the wall time or -1 with err. */
static double step(run_t *r, const int *seqs, int ns, int per, char *err) {
    static int32_t tok[4096], pos[4096], seq[4096], rows[NSEQ], btl[NSEQ];
    static const int32_t *bts[NSEQ];
    int T = 0;
    for (int i = 0; i < ns; i++) {
        int s = seqs[i];
        for (int j = 0; j < per; j++, T++) {
            tok[T] = (int32_t)((s * 7919 + r->len[s] + j) % (r->m->cfg.vocab_size - 1)) + 1;
            pos[T] = r->len[s] + j;
            seq[T] = i;
        }
        rows[i] = T - 1;
        bts[i] = r->bt + (size_t)s * r->bt_len;
        btl[i] = r->bt_len;
    }
    wk_batch_t b = {.n_tokens = T,
                    .tokens = tok,
                    .pos = pos,
                    .seq = seq,
                    .n_seqs = ns,
                    .block_tables = bts,
                    .block_table_len = btl,
                    .n_logits = ns,
                    .logits_rows = rows};
    double t0 = now_s();
    if (wk_forward(r->m, r->kv, r->c, &b, r->logits, err)) return -1;
    double t = now_s() - t0;
    for (int i = 0; i < ns; i++) r->len[seqs[i]] += per;
    return t;
}

/* Matrix-product FLOPs of one token through every layer (the vocabulary projection apart). */
static double layer_flops(const lt_model_config_t *c) {
    double q = (double)c->n_head * c->head_dim, kv = (double)c->n_kv_head * c->head_dim;
    return 2.0 * c->n_layer * ((q + 2 * kv) * c->dim + q * c->dim + 3.0 * c->hidden_dim * c->dim);
}

/* Decode rows of the table: for each batch size, eager and then with CUDA graphs (where they
 * apply), `steps` timed steps after 5 warm-ups, the median against the roofline: (weight bytes
 * read + KV bytes read) / copy bandwidth. ctx >= 0 puts the sequences back at ctx positions
 * before each row. */
static int decode_rows(run_t *r, const lt_model_config_t *cfg, const int *batches, int nb,
                       int steps, int ctx, double bw) {
    char err[LT_ERR_LEN];
    size_t kv_tok = (size_t)2 * cfg->n_layer * cfg->n_kv_head * cfg->head_dim * 2; /* F16 */
    size_t wbytes = r->m->weight_bytes - r->m->tok_embd.row_bytes * (size_t)cfg->vocab_size;
    int seqs[NSEQ];
    for (int run = 0; run < 2 * nb; run++) {
        int B = batches[run / 2];
        bool eager = run % 2 == 0;
        wk_ctx_set_eager(r->c, eager);
        for (int i = 0; i < B; i++) {
            seqs[i] = i;
            if (ctx >= 0) r->len[i] = ctx;
        }
        double t[256], bytes = 0;
        for (int k = -5; k < steps; k++) {
            size_t kvb = 0;
            for (int i = 0; i < B; i++) kvb += (size_t)(r->len[i] + 1) * kv_tok;
            double dt = step(r, seqs, B, 1, err);
            if (dt < 0) {
                fprintf(stderr, "bench_cuda: decode: %s\n", err);
                return 1;
            }
            if (k >= 0) t[k] = dt, bytes += (double)(wbytes + kvb);
        }
        bytes /= steps;
        double ms = median(t, steps) * 1e3, roof = bytes / bw * 1e3;
        printf("%-6d %-7s %10.3f %10.3f %9.1f%% %10.0f %8.2f\n", B, eager ? "eager" : "graphs", ms,
               roof, 100 * roof / ms, B / ms * 1e3, bytes / 1e9);
    }
    return 0;
}

/* Decode at a long context: batches 1 and 8 of sequences whose first `ctx` positions are in the
 * cache (zeros: no prefill; attention reads them all the same), eager and with graphs. The
 * attention of these steps is split over position ranges (README "GPU"). */
static int bench_long(run_t *r, const lt_model_config_t *cfg, int ctx, int steps, double bw) {
    char err[LT_ERR_LEN];
    enum { LSEQ = 8 };
    r->bt_len = (ctx + 2 * (steps + 5) + BLOCK - 1) / BLOCK + 1;
    r->bt = malloc(sizeof(int32_t) * LSEQ * (size_t)r->bt_len);
    for (int i = 0; i < LSEQ * r->bt_len; i++) r->bt[i] = i;
    int rc = wk_kv_cache_create(r->m, LSEQ * r->bt_len, BLOCK, LT_DTYPE_F16, &r->kv, err);
    if (!rc) rc = wk_ctx_create(r->m, 64, r->bt_len * BLOCK, &r->c, err);
    if (rc) {
        fprintf(stderr, "bench_cuda: long context: %s\n", err);
        wk_kv_cache_destroy(&r->kv);
        free(r->bt);
        return 1;
    }
    printf("decode at context %d (no prefill: the cache holds zeros):\n", ctx);
    const int batches[2] = {1, LSEQ};
    rc = decode_rows(r, cfg, batches, 2, steps, ctx, bw);
    wk_ctx_destroy(&r->c);
    wk_kv_cache_destroy(&r->kv);
    free(r->bt);
    return rc;
}

static int bench_type(int type, const lt_model_config_t *cfg, int prompt, int chunk, int steps,
                      int long_context, double bw, double peak) {
    char err[LT_ERR_LEN];
    run_t *r = calloc(1, sizeof *r);
    wk_load_opts_t o = {.tp_rank = 0, .tp_size = 1, .device = WK_DEVICE_CUDA, .cuda_device = 0};
    double t0 = now_s();
    int rc = wk_model_random(cfg, type, &o, 1, &r->m, err);
    if (!rc) rc = wk_kv_cache_create(r->m, NSEQ * SEQ_BLOCKS, BLOCK, LT_DTYPE_F16, &r->kv, err);
    if (!rc) rc = wk_ctx_create(r->m, chunk, SEQ_BLOCKS * BLOCK, &r->c, err);
    r->logits = malloc(sizeof(float) * NSEQ * (size_t)cfg->vocab_size);
    if (rc) {
        fprintf(stderr, "bench_cuda: %s: %s\n", lt_dtype_name(type), err);
        return 1;
    }
    printf("\n== %s: %.2f GB of weights, made in %.1f s\n", lt_dtype_name(type),
           r->m->weight_bytes / 1e9, now_s() - t0);
    r->bt_len = SEQ_BLOCKS;
    r->bt = malloc(sizeof(int32_t) * NSEQ * SEQ_BLOCKS);
    for (int i = 0; i < NSEQ * SEQ_BLOCKS; i++) r->bt[i] = i;
    /* prefill: every sequence's prompt, chunk / prompt sequences per step */
    int per_step = chunk / prompt > 0 ? chunk / prompt : 1, seqs[NSEQ];
    double pt = 0;
    int ptok = 0;
    for (int s0 = 0; s0 < NSEQ; s0 += per_step) {
        int ns = NSEQ - s0 < per_step ? NSEQ - s0 : per_step;
        for (int i = 0; i < ns; i++) seqs[i] = s0 + i;
        double t = step(r, seqs, ns, prompt, err);
        if (t < 0) {
            fprintf(stderr, "bench_cuda: prefill: %s\n", err);
            return 1;
        }
        if (s0 > 0) pt += t, ptok += ns * prompt; /* the first step warms cuBLAS up */
    }
    double pf = layer_flops(cfg) * ptok / pt;
    printf("prefill: %d tokens in %.3f s (%.0f tok/s), %.1f TFLOP/s of matrix products = %.1f%% "
           "of the cuBLAS bf16 peak\n",
           ptok, pt, ptok / pt, pf / 1e12, 100 * pf / peak);
    printf("%-6s %-7s %10s %10s %10s %10s %8s\n", "batch", "mode", "step ms", "roof ms", "of roof",
           "tok/s", "GB/step");
    const int batches[3] = {1, 8, 64};
    rc = decode_rows(r, cfg, batches, 3, steps, -1, bw);
    wk_ctx_destroy(&r->c);
    wk_kv_cache_destroy(&r->kv);
    free(r->bt);
    if (!rc && long_context) rc = bench_long(r, cfg, long_context, steps, bw);
    free(r->logits);
    wk_model_free(&r->m);
    free(r);
    return rc;
}

int main(int argc, char **argv) {
    const char *types = "bf16,q4_1,q4_k";
    int prompt = 128, chunk = 2048, steps = 30, layers = -1, long_context = 4096, tiny = 0;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 == argc) {
            fprintf(stderr, "bench_cuda: %s wants a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--types"))
            types = argv[i + 1];
        else if (!strcmp(argv[i], "--prompt"))
            prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--chunk"))
            chunk = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps"))
            steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers"))
            layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--long"))
            long_context = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tiny"))
            tiny = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_cuda: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (layers < 0) layers = tiny ? 2 : 32;
    if (prompt < 1 || prompt + (steps + 5) * 6 >= SEQ_BLOCKS * BLOCK || chunk < prompt ||
        chunk > 4096 || steps < 1 || steps > 256 || layers < 1 || long_context < 0 ||
        long_context > 1 << 20 || tiny < 0 || tiny > 1) {
        fprintf(stderr,
                "bench_cuda: --prompt + 6 * (--steps + 5) must stay under %d, --chunk <= 4096, "
                "--long 0..%d, --tiny 0 or 1\n",
                SEQ_BLOCKS * BLOCK, 1 << 20);
        return 2;
    }
#ifndef CUEMU /* on the CPU emulator (tests/cuemu) there is a device but no driver to ask */
    if (wk_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
#endif
    struct cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv), cudaRuntimeGetVersion(&rt);
    printf("device: %s, %d SMs, %.0f GiB; driver API %d, runtime %d\n", p.name,
           p.multiProcessorCount, p.totalGlobalMem / 1073741824.0, drv, rt);
    int gn = tiny ? 256 : 8192;
    double bw = copy_bandwidth(tiny ? (size_t)16 << 20 : (size_t)2 << 30), peak = gemm_peak(gn);
    printf("device-to-device copy: %.2f TB/s (read + written); cuBLAS bf16 GEMM %d^3: %.0f "
           "TFLOP/s\n",
           bw / 1e12, gn, peak / 1e12);
    lt_model_config_t cfg;
    lt_model_config_defaults(&cfg);
    cfg.arch = LT_ARCH_LLAMA;
    cfg.n_layer = layers, cfg.dim = 4096, cfg.hidden_dim = 14336, cfg.n_head = 32;
    cfg.n_kv_head = 8, cfg.head_dim = 128, cfg.vocab_size = 128256, cfg.max_seq_len = 8192;
    cfg.rope_theta = 500000.0f, cfg.norm_eps = 1e-5f, cfg.rope_neox = true;
    if (tiny) /* head_dim 32 keeps the 16-bit quants' blocks inside a head */
        cfg.dim = 256, cfg.hidden_dim = 512, cfg.n_head = 8, cfg.n_kv_head = 4, cfg.head_dim = 32,
        cfg.vocab_size = 512;
    printf("model: %s shape, %d layers, random weights; prompt %d, %d decode steps\n",
           tiny ? "tiny (a smoke test: --tiny 1)" : "Llama-3-8B", layers, prompt, steps);
    int fails = 0;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", types);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        int type = !strcmp(t, "bf16")   ? LT_DTYPE_BF16
                   : !strcmp(t, "q4_1") ? LT_DTYPE_Q4_1
                   : !strcmp(t, "q4_0") ? LT_DTYPE_Q4_0
                   : !strcmp(t, "q8_0") ? LT_DTYPE_Q8_0
                   : !strcmp(t, "q4_k") ? LT_DTYPE_Q4_K
                   : !strcmp(t, "f16")  ? LT_DTYPE_F16
                                        : -1;
        if (type < 0) {
            fprintf(stderr, "bench_cuda: unknown type %s\n", t);
            return 2;
        }
        fails += bench_type(type, &cfg, prompt, chunk, steps, long_context, bw, peak);
    }
    return fails ? 1 : 0;
}
