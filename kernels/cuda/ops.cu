/*
 * ops.cu — the CUDA backend's kernels (ops.h): embedding gather, RMSNorm, q/k norm + RoPE,
 * SwiGLU, add, row gather, paged-KV store, paged attention and quantized matrix products. Three
 * layers as STYLE.md asks: kernels, launchers, public C entries. The per-element arithmetic is
 * device_math.h's, which the CPU unit tests check against kernels/cpu.
 *
 * Matrix products: up to KN_CU_MATVEC_MAX_ROWS activation rows, one warp per weight row
 * dequantizes the stored blocks on the fly and accumulates in fp32 against the fp32 activations
 * (no activation quantization). More rows: weight rows are dequantized KN_CU_DEQ_ROWS at a time
 * into an fp16 tile, the activations converted to fp16, and cuBLAS (cublasGemmEx, fp32 compute
 * and output) multiplies; F16 and BF16 weights go to cuBLAS as they are, F32 through cublasSgemm.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "device_math.h"
#include "ops.h"

#define KN_ATT_THREADS  128
#define KN_ATT_WARPS    (KN_ATT_THREADS / 32)
#define KN_ATT_PER_LANE 8 /* head_dim <= 32 * 8 */

static int cu_rc(cudaError_t e) {
    return e == cudaSuccess ? 0 : -(int)e;
}

static int last_rc(void) {
    return cu_rc(cudaGetLastError());
}

extern "C" const char *kn_cu_error_str(int rc) {
    if (rc <= -100000) return cublasGetStatusString((cublasStatus_t)(-rc - 100000));
    return cudaGetErrorString((cudaError_t)(-rc));
}

static int blas_rc(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? 0 : -(100000 + (int)s);
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block-wide sum of v over blockDim.x (a multiple of 32, <= 1024) threads; sh >= 32 floats. */
static __device__ float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float t = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(t);
}

/* ---- kernels: elementwise and rows ---- */

static __global__ void embed_kernel(float *x, const uint8_t *table, int type, size_t row_bytes,
                                    int cols, const int32_t *tokens) {
    const uint8_t *row = table + (size_t)tokens[blockIdx.x] * row_bytes;
    float *out = x + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) out[i] = kn_row_elem(type, row, i);
}

static __global__ void rmsnorm_rows_kernel(float *out, const float *x, const float *w, int n,
                                           float eps) {
    __shared__ float sh[32];
    const float *row = x + (size_t)blockIdx.x * n;
    float *orow = out + (size_t)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += row[i] * row[i];
    float scale = rsqrtf(block_sum(s, sh) / n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) orow[i] = row[i] * scale * w[i];
}

/* One block per (token, head) of q then k: optional RMSNorm of the head, then its rotation. */
static __global__ void qk_rope_kernel(float *q, float *k, int nh, int nkv, int hd,
                                      const float *q_norm, const float *k_norm, float eps,
                                      const float *inv_freq, int neox, float attn_factor,
                                      const int32_t *pos) {
    __shared__ float sh[32];
    int t = blockIdx.x, h = blockIdx.y;
    if (h >= nh + nkv) return;
    bool is_q = h < nh;
    float *x = is_q ? q + ((size_t)t * nh + h) * hd : k + ((size_t)t * nkv + (h - nh)) * hd;
    const float *nw = is_q ? q_norm : k_norm;
    if (nw) { /* uniform per block: every thread takes the same branch */
        float s = 0.0f;
        for (int i = threadIdx.x; i < hd; i += blockDim.x) s += x[i] * x[i];
        float scale = rsqrtf(block_sum(s, sh) / hd + eps);
        __syncthreads();
        for (int i = threadIdx.x; i < hd; i += blockDim.x) x[i] = x[i] * scale * nw[i];
        __syncthreads();
    }
    for (int i = threadIdx.x; i < hd / 2; i += blockDim.x) {
        double ang = (double)pos[t] * (double)inv_freq[i]; /* double, as kn_rope */
        float c = (float)cos(ang) * attn_factor, s = (float)sin(ang) * attn_factor;
        int a, b;
        kn_rope_pair_idx(i, hd, neox, &a, &b);
        kn_rope_rotate(&x[a], &x[b], c, s);
    }
}

static __global__ void swiglu_kernel(float *gate, const float *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        gate[i] = kn_silu(gate[i]) * up[i];
}

static __global__ void add_kernel(float *x, const float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

static __global__ void gather_kernel(float *dst, const float *src, const int32_t *rows, int n) {
    const float *s = src + (size_t)rows[blockIdx.x] * n;
    float *d = dst + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) d[i] = s[i];
}

/* ---- kernels: paged KV cache ---- */

static __device__ __forceinline__ size_t kv_off(int layer, int n_blocks, int nkv, int bs, int hd,
                                                int block, int h, int slot) {
    return ((((size_t)layer * n_blocks + block) * nkv + h) * bs + slot) * hd;
}

static __device__ __forceinline__ void kv_put(void *base, int dtype, size_t i, float v) {
    if (dtype == KN_T_F32)
        ((float *)base)[i] = v;
    else if (dtype == KN_T_F16)
        ((uint16_t *)base)[i] = kn_f2h(v);
    else
        ((uint16_t *)base)[i] = kn_f2bf(v);
}

static __device__ __forceinline__ float kv_get(const void *base, int dtype, size_t i) {
    if (dtype == KN_T_F32) return ((const float *)base)[i];
    uint16_t u = ((const uint16_t *)base)[i];
    return dtype == KN_T_F16 ? kn_h2f(u) : kn_bf2f(u);
}

/* One block per (token, kv head). */
static __global__ void kv_store_kernel(kn_cu_kv_t kv, int layer, const float *k, const float *v,
                                       kn_cu_batch_t b) {
    int t = blockIdx.x, h = blockIdx.y, hd = kv.head_dim, bs = kv.block_size;
    int p = b.pos[t];
    int blk = b.block_tables[(size_t)b.seq[t] * b.bt_stride + p / bs];
    size_t off = kv_off(layer, kv.n_blocks, kv.n_kv_head, bs, hd, blk, h, p % bs);
    size_t src = ((size_t)t * kv.n_kv_head + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        kv_put(kv.k, kv.dtype, off + i, k[src + i]);
        kv_put(kv.v, kv.dtype, off + i, v[src + i]);
    }
}

/* One block per (token, query head): each warp walks positions warp, warp + KN_ATT_WARPS, ...
 * with its own online-softmax state (lane l holds dims l, l + 32, ...), then the warps' states
 * are merged through shared memory. */
static __global__ void __launch_bounds__(KN_ATT_THREADS)
    attention_kernel(float *out, const float *q, kn_cu_kv_t kv, int layer, int nh,
                     kn_cu_batch_t b) {
    __shared__ float s_m[KN_ATT_WARPS], s_l[KN_ATT_WARPS];
    __shared__ float s_o[KN_ATT_WARPS][32 * KN_ATT_PER_LANE];
    int t = blockIdx.x, h = blockIdx.y, hd = kv.head_dim, bs = kv.block_size;
    int kvh = h / (nh / kv.n_kv_head);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const float *qh = q + ((size_t)t * nh + h) * hd;
    float scale = rsqrtf((float)hd);
    float qr[KN_ATT_PER_LANE], o[KN_ATT_PER_LANE];
#pragma unroll
    for (int j = 0; j < KN_ATT_PER_LANE; j++) {
        int d = lane + 32 * j;
        qr[j] = d < hd ? qh[d] * scale : 0.0f;
        o[j] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    int n = b.pos[t] + 1;
    const int32_t *bt = b.block_tables + (size_t)b.seq[t] * b.bt_stride;
    for (int j = w; j < n; j += KN_ATT_WARPS) {
        size_t off = kv_off(layer, kv.n_blocks, kv.n_kv_head, bs, hd, bt[j / bs], kvh, j % bs);
        float part = 0.0f;
#pragma unroll
        for (int i = 0; i < KN_ATT_PER_LANE; i++) {
            int d = lane + 32 * i;
            if (d < hd) part += qr[i] * kv_get(kv.k, kv.dtype, off + d);
        }
        float p, corr = kn_online_step(&m, &l, warp_sum(part), &p);
#pragma unroll
        for (int i = 0; i < KN_ATT_PER_LANE; i++) {
            int d = lane + 32 * i;
            o[i] = o[i] * corr + (d < hd ? p * kv_get(kv.v, kv.dtype, off + d) : 0.0f);
        }
    }
    if (lane == 0) {
        s_m[w] = m;
        s_l[w] = l;
    }
#pragma unroll
    for (int i = 0; i < KN_ATT_PER_LANE; i++) s_o[w][lane + 32 * i] = o[i];
    __syncthreads();
    float mx = -INFINITY;
    for (int i = 0; i < KN_ATT_WARPS; i++) mx = fmaxf(mx, s_m[i]);
    float den = 0.0f;
    for (int i = 0; i < KN_ATT_WARPS; i++)
        if (s_l[i] > 0.0f) den += s_l[i] * expf(s_m[i] - mx);
    float *oh = out + ((size_t)t * nh + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int i = 0; i < KN_ATT_WARPS; i++)
            if (s_l[i] > 0.0f) acc += s_o[i][d] * expf(s_m[i] - mx);
        oh[d] = acc / den;
    }
}

/* ---- kernels: matrix products ---- */

/* One warp per weight row against `rows` (<= KN_CU_MATVEC_MAX_ROWS) activation rows. Quantized
 * types: lane l takes blocks l, l + 32, ...; decodes each block's scale once. */
static __global__ void matvec_kernel(float *y, const float *x, const uint8_t *w, int type,
                                     size_t row_bytes, int n, int k, const float *bias, int rows) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= n) return;
    const uint8_t *wr = w + (size_t)row * row_bytes;
    float acc[KN_CU_MATVEC_MAX_ROWS];
#pragma unroll
    for (int r = 0; r < KN_CU_MATVEC_MAX_ROWS; r++) acc[r] = 0.0f;
    int qb = kn_qblock_bytes(type);
    if (qb) {
        for (int blk = lane; blk < k / KN_BLOCK; blk += 32) {
            float d, mn;
            const uint8_t *qs = kn_qblock_head(type, wr + (size_t)blk * qb, &d, &mn);
            for (int e = 0; e < KN_BLOCK; e++) {
                float wv = d * (float)kn_qblock_q(type, qs, e) + mn;
                int c = blk * KN_BLOCK + e;
#pragma unroll
                for (int r = 0; r < KN_CU_MATVEC_MAX_ROWS; r++)
                    if (r < rows) acc[r] += wv * x[(size_t)r * k + c];
            }
        }
    } else {
        for (int c = lane; c < k; c += 32) {
            float wv = kn_row_elem(type, wr, c);
#pragma unroll
            for (int r = 0; r < KN_CU_MATVEC_MAX_ROWS; r++)
                if (r < rows) acc[r] += wv * x[(size_t)r * k + c];
        }
    }
#pragma unroll
    for (int r = 0; r < KN_CU_MATVEC_MAX_ROWS; r++) {
        float s = warp_sum(acc[r]);
        if (lane == 0 && r < rows) y[(size_t)r * n + row] = s + (bias ? bias[row] : 0.0f);
    }
}

/* tile (nr, k) fp16 = weight rows [row0, row0 + nr) dequantized. */
static __global__ void dequant_f16_kernel(__half *tile, const uint8_t *w, int type,
                                          size_t row_bytes, int k) {
    const uint8_t *wr = w + (size_t)blockIdx.x * row_bytes;
    __half *out = tile + (size_t)blockIdx.x * k;
    for (int i = threadIdx.x; i < k; i += blockDim.x)
        out[i] = __float2half_rn(kn_row_elem(type, wr, i));
}

static __global__ void to_f16_kernel(__half *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}

static __global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

static __global__ void bias_kernel(float *y, const float *bias, int n, int rows) {
    size_t total = (size_t)n * rows;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += bias[i % n];
}

/* ---- launchers ---- */

static unsigned grid_for(size_t n, unsigned threads) {
    size_t g = (n + threads - 1) / threads;
    return (unsigned)(g > 65535 ? 65535 : (g ? g : 1));
}

/* C = (rows, n) fp32 row-major = X (rows, k) @ W^T with W (nr, k) row-major of cuBLAS type wt. */
static int gemm(cublasHandle_t hb, float *y, int ldy, const void *wmat, cudaDataType wt,
                const void *xm, int nr, int k, int rows) {
    const float one = 1.0f, zero = 0.0f;
    return blas_rc(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, nr, rows, k, &one, wmat, wt, k, xm,
                                wt, k, &zero, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
}

static int matmul_blas(float *y, const float *x, const uint8_t *w, int type, size_t row_bytes,
                       int n, int k, int rows, const kn_cu_mm_scratch_t *s, cudaStream_t st) {
    cublasHandle_t hb = (cublasHandle_t)s->cublas;
    size_t nx = (size_t)rows * k;
    if (type == KN_T_F32) {
        const float one = 1.0f, zero = 0.0f;
        return blas_rc(cublasSgemm(hb, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &one, (const float *)w,
                                   k, x, k, &zero, y, n));
    }
    if (type == KN_T_BF16) {
        to_bf16_kernel<<<grid_for(nx, 256), 256, 0, st>>>((__nv_bfloat16 *)s->xh, x, nx);
        int rc = last_rc();
        return rc ? rc : gemm(hb, y, n, w, CUDA_R_16BF, s->xh, n, k, rows);
    }
    to_f16_kernel<<<grid_for(nx, 256), 256, 0, st>>>((__half *)s->xh, x, nx);
    int rc = last_rc();
    if (rc) return rc;
    if (type == KN_T_F16) return gemm(hb, y, n, w, CUDA_R_16F, s->xh, n, k, rows);
    for (int r0 = 0; r0 < n; r0 += KN_CU_DEQ_ROWS) {
        int nr = n - r0 < KN_CU_DEQ_ROWS ? n - r0 : KN_CU_DEQ_ROWS;
        dequant_f16_kernel<<<nr, 256, 0, st>>>((__half *)s->wtile, w + (size_t)r0 * row_bytes, type,
                                               row_bytes, k);
        if ((rc = last_rc()) ||
            (rc = gemm(hb, y + r0, n, s->wtile, CUDA_R_16F, s->xh, nr, k, rows)))
            return rc;
    }
    return 0;
}

/* ---- public ---- */

extern "C" int kn_cu_embed(float *x, const void *table, int type, size_t row_bytes, int cols,
                           const kn_cu_batch_t *b, void *stream) {
    embed_kernel<<<b->n_tokens, 256, 0, (cudaStream_t)stream>>>(x, (const uint8_t *)table, type,
                                                                row_bytes, cols, b->tokens);
    return last_rc();
}

extern "C" int kn_cu_rmsnorm(float *out, const float *x, const float *w, int rows, int n, float eps,
                             void *stream) {
    if (rows <= 0) return 0;
    rmsnorm_rows_kernel<<<rows, 256, 0, (cudaStream_t)stream>>>(out, x, w, n, eps);
    return last_rc();
}

extern "C" int kn_cu_qk_rope(float *q, float *k, int nh, int nkv, int hd, const float *q_norm,
                             const float *k_norm, float eps, const float *inv_freq, int neox,
                             float attn_factor, const kn_cu_batch_t *b, void *stream) {
    dim3 grid(b->n_tokens, nh + nkv);
    qk_rope_kernel<<<grid, 64, 0, (cudaStream_t)stream>>>(q, k, nh, nkv, hd, q_norm, k_norm, eps,
                                                          inv_freq, neox, attn_factor, b->pos);
    return last_rc();
}

extern "C" int kn_cu_swiglu(float *gate, const float *up, size_t n, void *stream) {
    swiglu_kernel<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(gate, up, n);
    return last_rc();
}

extern "C" int kn_cu_add(float *x, const float *y, size_t n, void *stream) {
    add_kernel<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(x, y, n);
    return last_rc();
}

extern "C" int kn_cu_gather(float *dst, const float *src, const int32_t *rows, int n_rows, int n,
                            void *stream) {
    if (n_rows <= 0) return 0;
    gather_kernel<<<n_rows, 256, 0, (cudaStream_t)stream>>>(dst, src, rows, n);
    return last_rc();
}

extern "C" int kn_cu_kv_store(const kn_cu_kv_t *kv, int layer, const float *k, const float *v,
                              const kn_cu_batch_t *b, void *stream) {
    dim3 grid(b->n_tokens, kv->n_kv_head);
    kv_store_kernel<<<grid, 128, 0, (cudaStream_t)stream>>>(*kv, layer, k, v, *b);
    return last_rc();
}

extern "C" int kn_cu_attention(float *out, const float *q, const kn_cu_kv_t *kv, int layer, int nh,
                               const kn_cu_batch_t *b, void *stream) {
    if (kv->head_dim > 32 * KN_ATT_PER_LANE) return -(int)cudaErrorInvalidValue;
    dim3 grid(b->n_tokens, nh);
    attention_kernel<<<grid, KN_ATT_THREADS, 0, (cudaStream_t)stream>>>(out, q, *kv, layer, nh, *b);
    return last_rc();
}

extern "C" int kn_cu_matmul_supported(int type, int64_t cols) {
    if (cols <= 0 || cols > (1 << 30)) return 0;
    if (type == KN_T_F32 || type == KN_T_F16 || type == KN_T_BF16) return 1;
    return kn_qblock_bytes(type) && cols % KN_BLOCK == 0;
}

extern "C" int kn_cu_matmul(float *y, const float *x, const void *w, int type, size_t row_bytes,
                            int n, int k, const float *bias, int rows, const kn_cu_mm_scratch_t *s,
                            void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    if (rows <= 0) return 0;
    if (rows <= KN_CU_MATVEC_MAX_ROWS) {
        const int warps = 4;
        matvec_kernel<<<(n + warps - 1) / warps, warps * 32, 0, st>>>(
            y, x, (const uint8_t *)w, type, row_bytes, n, k, bias, rows);
        return last_rc();
    }
    int rc = matmul_blas(y, x, (const uint8_t *)w, type, row_bytes, n, k, rows, s, st);
    if (rc || !bias) return rc;
    bias_kernel<<<grid_for((size_t)n * rows, 256), 256, 0, st>>>(y, bias, n, rows);
    return last_rc();
}
