/*
 * ops.cu — the CUDA backend's kernels (ops.h): embedding gather, RMSNorm, q/k norm + RoPE,
 * SwiGLU, add, row gather, paged-KV store, paged attention and quantized matrix products. Three
 * layers as STYLE.md asks: kernels, launchers, public C entries. The per-element arithmetic is
 * device_math.h's, which the CPU unit tests check against kernels/cpu.
 *
 * Matrix products: up to KN_CU_MATVEC_MAX_ROWS activation rows, one warp per weight row
 * against the activations quantized once per product (16-bit quants in byte planes, dp4a) for
 * quantized weights, or in fp32 for the others. More rows: weight rows are dequantized
 * KN_CU_DEQ_ROWS at a time into an fp16 tile, the activations converted to fp16, and cuBLAS
 * (cublasGemmEx, fp32 compute and output) multiplies; F16 and BF16 weights go to cuBLAS as they
 * are, F32 through cublasSgemm.
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

/* 16-bit quants of activation block blk for the matrix-vector kernels (kn_q16_block's arithmetic,
 * layout of quant_x_kernel), one warp: lane `lane` holds the block's element lane. */
static __device__ __forceinline__ void quant_block(int8_t *xq, float2 *xs, size_t blk, int lane,
                                                   float v) {
    float amax = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float d = amax / (float)KN_Q16_MAX;
    int q = d > 0.0f ? (int)rintf(v / d) : 0;
    int8_t *out = xq + blk * 2 * KN_BLOCK;
    kn_q16_split(q, &out[lane], &out[KN_BLOCK + lane]);
    int sum = q;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) xs[blk] = make_float2(d, d * (float)sum);
}

/* ---- kernels: elementwise and rows ---- */

static __global__ void embed_kernel(float *x, const uint8_t *table, int type, size_t row_bytes,
                                    int cols, const int32_t *tokens) {
    const uint8_t *row = table + (size_t)tokens[blockIdx.x] * row_bytes;
    float *out = x + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) out[i] = kn_row_elem(type, row, cols, i);
}

/* A head's optional RMSNorm (nw), then its rotation at position p: the block's threads. */
static __device__ void norm_rope_head(float *x, int hd, const float *nw, float eps,
                                      const float *inv_freq, int neox, float attn_factor, int p,
                                      float *sh) {
    if (nw) { /* uniform per block: every thread takes the same branch */
        float s = 0.0f;
        for (int i = threadIdx.x; i < hd; i += blockDim.x) s += x[i] * x[i];
        float scale = rsqrtf(block_sum(s, sh) / hd + eps);
        __syncthreads();
        for (int i = threadIdx.x; i < hd; i += blockDim.x) x[i] = x[i] * scale * nw[i];
        __syncthreads();
    }
    for (int i = threadIdx.x; i < hd / 2; i += blockDim.x) {
        double ang = (double)p * (double)inv_freq[i]; /* double, as kn_rope */
        float c = (float)cos(ang) * attn_factor, s = (float)sin(ang) * attn_factor;
        int a, b;
        kn_rope_pair_idx(i, hd, neox, &a, &b);
        kn_rope_rotate(&x[a], &x[b], c, s);
    }
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
    norm_rope_head(x, hd, is_q ? q_norm : k_norm, eps, inv_freq, neox, attn_factor, pos[t], sh);
}

/* [ADD: x (rows, n) += y, then] out = RMSNorm(x) * w, one block per row; out may alias x, or y
 * (read before block_sum's barriers, out written after). With xq (n a multiple of 32) out's
 * 16-bit quants too, for the product that reads it (warp w takes the row's blocks w, w + 8, ...).
 * The same bits with and without ADD, quants or not: the sum of squares in one order. */
template <bool ADD>
static __global__ void rmsnorm_kernel(float *x, const float *y, float *out, const float *w, int n,
                                      float eps, int8_t *xq, float2 *xs) {
    __shared__ float sh[32];
    float *row = x + (size_t)blockIdx.x * n, *orow = out + (size_t)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = row[i];
        if (ADD) row[i] = v = v + y[(size_t)blockIdx.x * n + i];
        s += v * v;
    }
    float scale = rsqrtf(block_sum(s, sh) / n + eps);
    if (!xq) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) orow[i] = row[i] * scale * w[i];
        return;
    }
    int lane = threadIdx.x & 31, nb = n / KN_BLOCK;
    for (int b = threadIdx.x >> 5; b < nb; b += blockDim.x >> 5) {
        int i = b * KN_BLOCK + lane;
        float v = row[i] * scale * w[i];
        orow[i] = v;
        quant_block(xq, xs, (size_t)blockIdx.x * nb + b, lane, v);
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

/* qk_rope_kernel, then each k head (and the v head beside it) into the cache as kv_store_kernel
 * writes them: one kernel for the two operations, the same bits. */
static __global__ void qk_rope_store_kernel(float *q, float *k, const float *v, int nh, int nkv,
                                            int hd, const float *q_norm, const float *k_norm,
                                            float eps, const float *inv_freq, int neox,
                                            float attn_factor, kn_cu_kv_t kv, int layer,
                                            kn_cu_batch_t b) {
    __shared__ float sh[32];
    int t = blockIdx.x, h = blockIdx.y;
    if (h >= nh + nkv) return;
    bool is_q = h < nh;
    float *x = is_q ? q + ((size_t)t * nh + h) * hd : k + ((size_t)t * nkv + (h - nh)) * hd;
    int p = b.pos[t];
    norm_rope_head(x, hd, is_q ? q_norm : k_norm, eps, inv_freq, neox, attn_factor, p, sh);
    if (is_q) return; /* uniform per block */
    __syncthreads();  /* the rotated pairs are other threads' */
    int bs = kv.block_size, blk = b.block_tables[(size_t)b.seq[t] * b.bt_stride + p / bs];
    size_t off = kv_off(layer, kv.n_blocks, kv.n_kv_head, bs, hd, blk, h - nh, p % bs);
    const float *vh = v + ((size_t)t * nkv + (h - nh)) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        kv_put(kv.k, kv.dtype, off + i, x[i]);
        kv_put(kv.v, kv.dtype, off + i, vh[i]);
    }
}

/* One block per (token, query head[, range of positions]): each warp walks positions warp,
 * warp + KN_ATT_WARPS, ... with its own online-softmax state (lane l holds dims l, l + 32, ...),
 * then the warps' states are merged through shared memory. SPLIT (long contexts): block z of
 * gridDim.z takes the z-th range of the token's positions and writes its state, unnormalized,
 * to part (max, sum, hd values per (token, head, range)) for attention_merge_kernel. */
template <bool SPLIT>
static __global__ void __launch_bounds__(KN_ATT_THREADS)
    attention_kernel(float *out, const float *q, kn_cu_kv_t kv, int layer, int nh, kn_cu_batch_t b,
                     float *part, int8_t *xq, float2 *xs) {
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
    int n = b.pos[t] + 1, j0 = 0;
    if (SPLIT) { /* this block's range: [j0, n) of the positions */
        int chunk = (n + (int)gridDim.z - 1) / (int)gridDim.z;
        j0 = (int)blockIdx.z * chunk;
        n = min(n, j0 + chunk);
    }
    const int32_t *bt = b.block_tables + (size_t)b.seq[t] * b.bt_stride;
    for (int j = j0 + w; j < n; j += KN_ATT_WARPS) {
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
    float *oh = SPLIT ? part + (((size_t)t * nh + h) * gridDim.z + blockIdx.z) * (hd + 2) + 2
                      : out + ((size_t)t * nh + h) * hd;
    if (SPLIT && threadIdx.x == 0) oh[-2] = mx, oh[-1] = den; /* an empty range: -inf, 0 */
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {      /* warp-uniform: hd % 32 == 0 */
        float acc = 0.0f;
        for (int i = 0; i < KN_ATT_WARPS; i++)
            if (s_l[i] > 0.0f) acc += s_o[i][d] * expf(s_m[i] - mx);
        oh[d] = SPLIT ? acc : acc / den;
        if (!SPLIT && xq)
            quant_block(xq, xs, (((size_t)t * nh + h) * hd + d) / KN_BLOCK, lane, oh[d]);
    }
}

/* Keys per shared-memory run of attention_tiled_kernel: 32 (one per lane) up to head_dim 128,
 * else 8 (four lanes a key), so that the runs of K (rows padded by one float: no bank conflicts
 * between lanes reading one column) and V and the tile's queries fit in 48 KiB. */
static __host__ __device__ int att_run_keys(int hd) {
    return hd <= 128 ? 32 : 8;
}

static size_t att_tiled_smem(int hd) {
    int bk = att_run_keys(hd);
    return sizeof(float) * ((size_t)KN_CU_ATT_TILE * hd + (size_t)bk * (hd + 1) + (size_t)bk * hd);
}

/* One block per (tile, query head): the tile's queries (consecutive positions p0.. of one
 * sequence) in shared memory; then runs of bk keys and values of the head's KV head, loaded once
 * for every query of the tile. Warp w takes queries w, w + 4, ...; for each query and run, lane l
 * scores key l % bk over its share of the dimensions (all lanes when bk is 32), then an online
 * softmax step over the run and the lanes' dimensions of the output (lane l: l, l + 32, ...). */
static __global__ void __launch_bounds__(KN_ATT_THREADS)
    attention_tiled_kernel(float *out, const float *q, kn_cu_kv_t kv, int layer, int nh,
                           kn_cu_batch_t b) {
    extern __shared__ float sm[];
    constexpr int QPW = KN_CU_ATT_TILE / KN_ATT_WARPS; /* queries per warp */
    int t0 = b.tiles[2 * blockIdx.x], nq = b.tiles[2 * blockIdx.x + 1], h = blockIdx.y;
    int hd = kv.head_dim, bs = kv.block_size, bk = att_run_keys(hd), g = 32 / bk;
    int kvh = h / (nh / kv.n_kv_head), lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    float *sq = sm, *sk = sq + KN_CU_ATT_TILE * hd, *sv = sk + bk * (hd + 1);
    float scale = rsqrtf((float)hd);
    for (int i = threadIdx.x; i < nq * hd; i += blockDim.x)
        sq[i] = q[((size_t)(t0 + i / hd) * nh + h) * hd + i % hd] * scale;
    int p0 = b.pos[t0], last = p0 + nq - 1;
    const int32_t *bt = b.block_tables + (size_t)b.seq[t0] * b.bt_stride;
    float m[QPW], l[QPW], o[QPW][KN_ATT_PER_LANE];
#pragma unroll
    for (int i = 0; i < QPW; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int j = 0; j < KN_ATT_PER_LANE; j++) o[i][j] = 0.0f;
    }
    int key = lane % bk, part = hd / g, d0 = (lane / bk) * part; /* this lane's key and dims */
    for (int j0 = 0; j0 <= last; j0 += bk) {
        int nk = min(bk, last + 1 - j0);
        __syncthreads(); /* the previous run is read by every warp */
        for (int i = threadIdx.x; i < nk * hd; i += blockDim.x) {
            int r = i / hd, d = i % hd, j = j0 + r;
            size_t off = kv_off(layer, kv.n_blocks, kv.n_kv_head, bs, hd, bt[j / bs], kvh, j % bs);
            sk[r * (hd + 1) + d] = kv_get(kv.k, kv.dtype, off + d);
            sv[r * hd + d] = kv_get(kv.v, kv.dtype, off + d);
        }
        __syncthreads();
#pragma unroll
        for (int qi = 0; qi < QPW; qi++) {
            int qq = w + qi * KN_ATT_WARPS;         /* warp-uniform */
            if (qq >= nq || j0 > p0 + qq) continue; /* no query, or every key of the run masked */
            const float *qr = sq + qq * hd, *kr = sk + key * (hd + 1);
            float sc = 0.0f;
            for (int d = d0; d < d0 + part; d++) sc += qr[d] * kr[d];
            for (int o2 = 16; o2 >= bk; o2 >>= 1) sc += __shfl_xor_sync(0xffffffffu, sc, o2);
            if (key >= nk || j0 + key > p0 + qq) sc = -INFINITY; /* past the run, or causal */
            float mx = sc;
            for (int o2 = 16; o2 > 0; o2 >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
            float mnew = fmaxf(m[qi], mx), corr = expf(m[qi] - mnew), p = expf(sc - mnew);
            float ps = lane < bk ? p : 0.0f; /* one lane per key in the sum */
            for (int o2 = 16; o2 > 0; o2 >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o2);
            l[qi] = l[qi] * corr + ps;
            m[qi] = mnew;
#pragma unroll
            for (int i = 0; i < KN_ATT_PER_LANE; i++) o[qi][i] *= corr;
            for (int r = 0; r < nk; r++) {
                float pr = __shfl_sync(0xffffffffu, p, r);
#pragma unroll
                for (int i = 0; i < KN_ATT_PER_LANE; i++) {
                    int d = lane + 32 * i;
                    if (d < hd) o[qi][i] += pr * sv[r * hd + d];
                }
            }
        }
    }
#pragma unroll
    for (int qi = 0; qi < QPW; qi++) {
        int qq = w + qi * KN_ATT_WARPS;
        if (qq >= nq) continue;
        float *oh = out + ((size_t)(t0 + qq) * nh + h) * hd;
#pragma unroll
        for (int i = 0; i < KN_ATT_PER_LANE; i++) {
            int d = lane + 32 * i;
            if (d < hd) oh[d] = o[qi][i] / l[qi];
        }
    }
}

/* out (T, nh * hd) from the ranges' states in part: kn_online_merge, one block per (token,
 * head). */
static __global__ void attention_merge_kernel(float *out, const float *part, int nh, int hd,
                                              int splits, int8_t *xq, float2 *xs) {
    __shared__ float w[KN_ATT_MAX_SPLITS], den;
    int t = blockIdx.x, h = blockIdx.y;
    const float *p = part + ((size_t)t * nh + h) * splits * (hd + 2);
    if (threadIdx.x == 0) {
        float m[KN_ATT_MAX_SPLITS], l[KN_ATT_MAX_SPLITS];
        for (int s = 0; s < splits; s++)
            m[s] = p[(size_t)s * (hd + 2)], l[s] = p[(size_t)s * (hd + 2) + 1];
        den = kn_online_merge(m, l, splits, w);
    }
    __syncthreads();
    float *oh = out + ((size_t)t * nh + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) { /* warp-uniform: hd % 32 == 0 */
        float acc = 0.0f;
        for (int s = 0; s < splits; s++) acc += p[(size_t)s * (hd + 2) + 2 + d] * w[s];
        oh[d] = acc / den;
        if (xq)
            quant_block(xq, xs, (((size_t)t * nh + h) * hd + d) / KN_BLOCK, threadIdx.x & 31,
                        oh[d]);
    }
}

/* ---- kernels: matrix products ---- */

/* Generic: one warp per weight row against `rows` (<= KN_CU_MATVEC_MAX_ROWS) fp32 activation rows,
 * any type and row alignment (the fast kernels below take aligned rows). */
static __global__ void matvec_kernel(float *y, const float *x, const uint8_t *w, int type,
                                     size_t row_bytes, int n, int k, const float *bias, int rows) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= n) return;
    const uint8_t *wr = w + (size_t)row * row_bytes;
    float acc[KN_CU_MATVEC_MAX_ROWS];
#pragma unroll
    for (int r = 0; r < KN_CU_MATVEC_MAX_ROWS; r++) acc[r] = 0.0f;
    if (kn_is_qgpu(type)) {
        for (int blk = lane; blk < k / KN_BLOCK; blk += 32) {
            float d, mn;
            const uint8_t *qs = kn_prow_block(type, wr, k / KN_BLOCK, blk, &d, &mn);
            for (int e = 0; e < KN_BLOCK; e++) {
                float wv = kn_pelem(type, qs, d, mn, e);
                int c = blk * KN_BLOCK + e;
#pragma unroll
                for (int r = 0; r < KN_CU_MATVEC_MAX_ROWS; r++)
                    if (r < rows) acc[r] += wv * x[(size_t)r * k + c];
            }
        }
    } else {
        for (int c = lane; c < k; c += 32) {
            float wv = kn_row_elem(type, wr, k, c);
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

/* Activations to 16-bit quants for mmvq_kernel, one warp per 32-element block (kn_q16_block's
 * arithmetic): xq (rows, k / 32) blocks of 64 bytes, the hi plane's 32 then the lo plane's; xs
 * (rows, k / 32) {d, d * sum(v)}. */
static __global__ void quant_x_kernel(int8_t *xq, float2 *xs, const float *x, int nblocks) {
    int blk = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (blk >= nblocks) return;
    quant_block(xq, xs, (size_t)blk, lane, x[(size_t)blk * KN_BLOCK + lane]);
}

/* swiglu_kernel over rows of n (a multiple of 32), quantizing each output block: one warp per
 * block. */
static __global__ void swiglu_q_kernel(float *gate, const float *up, int nblocks, int8_t *xq,
                                       float2 *xs) {
    int blk = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (blk >= nblocks) return;
    size_t i = (size_t)blk * KN_BLOCK + lane;
    float v = kn_silu(gate[i]) * up[i];
    gate[i] = v;
    quant_block(xq, xs, (size_t)blk, lane, v);
}

#define KN_MV_WARPS 4 /* weight rows (warps) per thread block of the fast matrix-vector kernels */
#define KN_MV_SET   3 /* weights one fast matrix-vector launch reads (q, k, v) */

/* The weights of one launch: same type, k and row_bytes; weight i's rows are the launch's rows
 * [end[i - 1], end[i]); past count, end repeats the last (kernels index it with constants only,
 * so the set stays in the parameter space). */
typedef struct mv_set {
    const uint8_t *w[KN_MV_SET];
    float *y[KN_MV_SET];
    const float *bias[KN_MV_SET];
    int end[KN_MV_SET];
    int count;
} mv_set_t;

/* This warp's weight row: which weight (-1 past the last), its row and its row count. */
static __device__ __forceinline__ int mv_pick(const mv_set_t &s, int grow, int *row, int *n) {
    if (grow >= s.end[KN_MV_SET - 1]) return -1; /* the unused ends repeat the last */
    int i = grow < s.end[0] ? 0 : grow < s.end[1] ? 1 : 2, start = i ? s.end[i - 1] : 0;
    *row = grow - start;
    *n = s.end[i] - start;
    return i;
}

/* Weight i's rows, output and bias (selects: constant indices keep the set in parameter space). */
static __device__ __forceinline__ const uint8_t *mv_w(const mv_set_t &s, int i) {
    return i == 0 ? s.w[0] : i == 1 ? s.w[1] : s.w[2];
}

/* Lane 0 writes row `row` of weight i's output for R activation rows: acc + bias. */
template <int R>
static __device__ __forceinline__ void mv_store(const mv_set_t &s, int i, int row, int n,
                                                float *acc) {
    float *y = i == 0 ? s.y[0] : i == 1 ? s.y[1] : s.y[2];
    const float *bias = i == 0 ? s.bias[0] : i == 1 ? s.bias[1] : s.bias[2];
#pragma unroll
    for (int r = 0; r < R; r++) {
        float v = warp_sum(acc[r]);
        if ((threadIdx.x & 31) == 0) y[(size_t)r * n + row] = v + (bias ? bias[row] : 0.0f);
    }
}

/* Quantized weights (repacked rows, row_bytes a multiple of 16 when V16, else of 4) against R
 * activation rows of 16-bit quants: one warp per weight row, lane l takes blocks l, l + 32, ...;
 * each block is one 16-byte (Q4) or two (Q8_0) loads of quants, its header, and kn_qdot_block
 * per activation row (four 16-byte loads of its two planes). */
template <int TYPE, int R, bool V16>
static __global__ void __launch_bounds__(KN_MV_WARPS * 32, 1)
    mmvq_kernel(const __grid_constant__ mv_set_t set, const int8_t *xq, const float2 *xs,
                size_t row_bytes, int k) {
    constexpr int QS = kn_qs_bytes(TYPE), HB = kn_qhead_bytes(TYPE), NW = QS / 4;
    int lane = threadIdx.x & 31, row, n;
    int which = mv_pick(set, blockIdx.x * KN_MV_WARPS + (threadIdx.x >> 5), &row, &n);
    if (which < 0) return;
    const uint8_t *w = mv_w(set, which);
    int nb = k / KN_BLOCK;
    const uint8_t *wr = w + (size_t)row * row_bytes, *hd = wr + (size_t)nb * QS;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
#pragma unroll(R <= 4 ? 2 : 1)
    for (int b = lane; b < nb; b += 32) {
        const uint8_t *q = wr + (size_t)b * QS;
        kn_q32_t wq = {};
        if (V16) {
            int4 a = __ldg(reinterpret_cast<const int4 *>(q));
            wq.v[0] = a.x, wq.v[1] = a.y, wq.v[2] = a.z, wq.v[3] = a.w;
            if (NW == 8) {
                int4 c = __ldg(reinterpret_cast<const int4 *>(q) + 1);
                wq.v[4] = c.x, wq.v[5] = c.y, wq.v[6] = c.z, wq.v[7] = c.w;
            }
        } else {
#pragma unroll
            for (int j = 0; j < NW; j++) wq.v[j] = __ldg(reinterpret_cast<const int *>(q) + j);
        }
        float d, mn;
        if (HB == 8) { /* K sub-blocks: two floats (kn_prow_block) */
            float2 h = __ldg(reinterpret_cast<const float2 *>(hd + (size_t)b * 8));
            d = h.x, mn = h.y;
        } else if (HB == 4) {
            float2 h = __half22float2(__ldg(reinterpret_cast<const __half2 *>(hd + (size_t)b * 4)));
            d = h.x, mn = h.y;
        } else {
            d = __half2float(__ldg(reinterpret_cast<const __half *>(hd + (size_t)b * 2)));
            mn = TYPE == KN_T_Q4_0 ? -8.0f * d : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int4 *xr = reinterpret_cast<const int4 *>(xq + ((size_t)r * nb + b) * 64);
            int4 h0 = xr[0], h1 = xr[1], l0 = xr[2], l1 = xr[3];
            kn_q32_t xh = {{h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w}};
            kn_q32_t xl = {{l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w}};
            float2 sx = xs[(size_t)r * nb + b];
            acc[r] += kn_qdot_block(TYPE, wq, d, mn, xh, xl, sx.x, sx.y);
        }
    }
    mv_store<R>(set, which, row, n, acc);
}

/* F16 / BF16 / F32 weights (row_bytes a multiple of 16) against R fp32 activation rows: one warp
 * per weight row, lane l takes 16-byte chunks l, l + 32, ... (8 halves or 4 floats). */
template <int TYPE, int R>
static __global__ void __launch_bounds__(KN_MV_WARPS * 32, 1)
    mvf_kernel(const __grid_constant__ mv_set_t set, const float *x, size_t row_bytes, int k) {
    constexpr int EPC = TYPE == KN_T_F32 ? 4 : 8;
    int lane = threadIdx.x & 31, row, n;
    int which = mv_pick(set, blockIdx.x * KN_MV_WARPS + (threadIdx.x >> 5), &row, &n);
    if (which < 0) return;
    const int4 *wr = reinterpret_cast<const int4 *>(mv_w(set, which) + (size_t)row * row_bytes);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    int nc = k / EPC;
#pragma unroll 2
    for (int c = lane; c < nc; c += 32) {
        int4 v = __ldg(wr + c);
        float wf[EPC];
        if (TYPE == KN_T_F32) {
            wf[0] = __int_as_float(v.x), wf[1] = __int_as_float(v.y);
            wf[2] = __int_as_float(v.z), wf[3] = __int_as_float(v.w);
        } else {
            const uint32_t u[4] = {(uint32_t)v.x, (uint32_t)v.y, (uint32_t)v.z, (uint32_t)v.w};
#pragma unroll
            for (int j = 0; j < EPC / 2; j++) {
                uint16_t lo = (uint16_t)(u[j] & 0xffff), hi = (uint16_t)(u[j] >> 16);
                wf[2 * j] = TYPE == KN_T_BF16 ? kn_bf2f(lo) : __half2float(__ushort_as_half(lo));
                wf[2 * j + 1] =
                    TYPE == KN_T_BF16 ? kn_bf2f(hi) : __half2float(__ushort_as_half(hi));
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float4 *xr =
                reinterpret_cast<const float4 *>(x + (size_t)r * k + (size_t)c * EPC);
#pragma unroll
            for (int j = 0; j < EPC / 4; j++) {
                float4 a = xr[j];
                acc[r] += wf[4 * j] * a.x + wf[4 * j + 1] * a.y + wf[4 * j + 2] * a.z +
                          wf[4 * j + 3] * a.w;
            }
        }
    }
    mv_store<R>(set, which, row, n, acc);
}

/* tile (nr, k) fp16 = weight rows [row0, row0 + nr) dequantized: a thread per 32-element block
 * for quantized rows (four 16-byte stores), a thread per element otherwise. */
static __global__ void dequant_f16_kernel(__half *tile, const uint8_t *w, int type,
                                          size_t row_bytes, int k, int nr) {
    int nb = k / KN_BLOCK;
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (!kn_is_qgpu(type)) {
        if (i >= (size_t)nr * k) return;
        size_t r = i / k, c = i % k;
        tile[i] = __float2half_rn(kn_row_elem(type, w + r * row_bytes, k, (int64_t)c));
        return;
    }
    if (i >= (size_t)nr * nb) return;
    size_t r = i / nb;
    int b = (int)(i % nb);
    float d, mn;
    const uint8_t *qs = kn_prow_block(type, w + r * row_bytes, nb, b, &d, &mn);
    __align__(16) __half out[KN_BLOCK];
#pragma unroll
    for (int e = 0; e < KN_BLOCK; e++) out[e] = __float2half_rn(kn_pelem(type, qs, d, mn, e));
    int4 *dst = reinterpret_cast<int4 *>(tile + r * k + (size_t)b * KN_BLOCK);
#pragma unroll
    for (int j = 0; j < 4; j++) dst[j] = reinterpret_cast<const int4 *>(out)[j];
}

/* dst rows (nr, row_bytes) = src rows repacked (kn_repack_row); one thread per block. */
static __global__ void repack_kernel(uint8_t *dst, const uint8_t *src, int type, size_t row_bytes,
                                     int nb, int nr) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)nr * nb) return;
    size_t r = i / nb;
    kn_repack_block(type, dst + r * row_bytes, src + r * row_bytes, nb, (int)(i % nb));
}

/* dst rows (nr, kn_qrow_bytes) = stored rows of an unfolded type at src (src_row_bytes apart)
 * unfolded (kn_krepack_row); one thread per stored unit (super-block, or Q5 block). */
static __global__ void krepack_kernel(uint8_t *dst, const uint8_t *src, int type,
                                      size_t src_row_bytes, int nb, int nr) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x,
           nsb = (size_t)nb / kn_unfold_blocks(type);
    if (i >= (size_t)nr * nsb) return;
    size_t r = i / nsb;
    kn_krepack_sb(type, dst + r * kn_qrow_bytes(type, (int64_t)nb * KN_BLOCK),
                  src + r * src_row_bytes, nb, (int)(i % nsb));
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

/* Whether the quants of rows x n fit the scratch (the *_q operations). */
static bool quants_fit(const kn_cu_mm_scratch_t *s, int rows, int n) {
    return s->xq && rows >= 1 && rows <= KN_CU_MATVEC_MAX_ROWS && n % KN_BLOCK == 0 &&
           n <= s->max_k;
}

/* The end of a *_q operation that wrote rows x k of out (status rc) and, when fit, their quants:
 * s->quantized names them for the next product, or nothing; returns rc. */
static int quants_made(kn_cu_mm_scratch_t *s, int rc, bool fit, const float *out, int rows, int k) {
    s->quantized = NULL;
    if (!rc && fit) s->quantized = out, s->quantized_rows = rows, s->quantized_k = k;
    return rc;
}

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
        size_t units = kn_is_qgpu(type) ? (size_t)nr * (k / KN_BLOCK) : (size_t)nr * k;
        dequant_f16_kernel<<<(unsigned)((units + 255) / 256), 256, 0, st>>>(
            (__half *)s->wtile, w + (size_t)r0 * row_bytes, type, row_bytes, k, nr);
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
    rmsnorm_kernel<false>
        <<<rows, 256, 0, (cudaStream_t)stream>>>((float *)x, NULL, out, w, n, eps, NULL, NULL);
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

extern "C" int kn_cu_qk_rope_store(float *q, float *k, const float *v, int nh, int nkv, int hd,
                                   const float *q_norm, const float *k_norm, float eps,
                                   const float *inv_freq, int neox, float attn_factor,
                                   const kn_cu_kv_t *kv, int layer, const kn_cu_batch_t *b,
                                   void *stream) {
    if (kv->n_kv_head != nkv || kv->head_dim != hd) return -(int)cudaErrorInvalidValue;
    dim3 grid(b->n_tokens, nh + nkv);
    qk_rope_store_kernel<<<grid, 64, 0, (cudaStream_t)stream>>>(
        q, k, v, nh, nkv, hd, q_norm, k_norm, eps, inv_freq, neox, attn_factor, *kv, layer, *b);
    return last_rc();
}

extern "C" int kn_cu_swiglu(float *gate, const float *up, size_t n, void *stream) {
    swiglu_kernel<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(gate, up, n);
    return last_rc();
}

extern "C" int kn_cu_rmsnorm_q(float *out, const float *x, const float *w, int rows, int n,
                               float eps, kn_cu_mm_scratch_t *s, void *stream) {
    if (!quants_fit(s, rows, n))
        return quants_made(s, kn_cu_rmsnorm(out, x, w, rows, n, eps, stream), false, out, rows, n);
    rmsnorm_kernel<false><<<rows, 256, 0, (cudaStream_t)stream>>>((float *)x, NULL, out, w, n, eps,
                                                                  (int8_t *)s->xq, (float2 *)s->xs);
    return quants_made(s, last_rc(), true, out, rows, n);
}

extern "C" int kn_cu_add_rmsnorm_q(float *x, const float *y, float *out, const float *w, int rows,
                                   int n, float eps, kn_cu_mm_scratch_t *s, void *stream) {
    if (rows <= 0) return quants_made(s, 0, false, out, rows, n);
    bool fit = quants_fit(s, rows, n);
    rmsnorm_kernel<true><<<rows, 256, 0, (cudaStream_t)stream>>>(
        x, y, out, w, n, eps, fit ? (int8_t *)s->xq : NULL, fit ? (float2 *)s->xs : NULL);
    return quants_made(s, last_rc(), fit, out, rows, n);
}

extern "C" int kn_cu_swiglu_q(float *gate, const float *up, int rows, int n, kn_cu_mm_scratch_t *s,
                              void *stream) {
    if (!quants_fit(s, rows, n))
        return quants_made(s, kn_cu_swiglu(gate, up, (size_t)rows * n, stream), false, gate, rows,
                           n);
    int nblocks = rows * (n / KN_BLOCK);
    swiglu_q_kernel<<<(nblocks + 7) / 8, 256, 0, (cudaStream_t)stream>>>(
        gate, up, nblocks, (int8_t *)s->xq, (float2 *)s->xs);
    return quants_made(s, last_rc(), true, gate, rows, n);
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

/* kn_cu_attention_split's work, the output's quants in xq, xs too when they are not NULL. */
static int attention_run(float *out, const float *q, const kn_cu_kv_t *kv, int layer, int nh,
                         const kn_cu_batch_t *b, float *part, int splits, int8_t *xq, float2 *xs,
                         cudaStream_t st) {
    if (kv->head_dim > 32 * KN_ATT_PER_LANE || splits > KN_ATT_MAX_SPLITS)
        return -(int)cudaErrorInvalidValue;
    if (splits <= 1) {
        attention_kernel<false><<<dim3(b->n_tokens, nh), KN_ATT_THREADS, 0, st>>>(
            out, q, *kv, layer, nh, *b, NULL, xq, xs);
        return last_rc();
    }
    attention_kernel<true><<<dim3(b->n_tokens, nh, splits), KN_ATT_THREADS, 0, st>>>(
        out, q, *kv, layer, nh, *b, part, NULL, NULL);
    int rc = last_rc();
    if (rc) return rc;
    attention_merge_kernel<<<dim3(b->n_tokens, nh), KN_ATT_THREADS, 0, st>>>(
        out, part, nh, kv->head_dim, splits, xq, xs);
    return last_rc();
}

extern "C" int kn_cu_attention(float *out, const float *q, const kn_cu_kv_t *kv, int layer, int nh,
                               const kn_cu_batch_t *b, void *stream) {
    return attention_run(out, q, kv, layer, nh, b, NULL, 1, NULL, NULL, (cudaStream_t)stream);
}

extern "C" int kn_cu_att_tiles(const int32_t *seq, const int32_t *pos, int T, int max_rows,
                               int32_t *tiles) {
    int n = 0;
    if (max_rows < 1 || max_rows > KN_CU_ATT_TILE) max_rows = KN_CU_ATT_TILE;
    for (int t = 0; t < T; t++) {
        int32_t *c = n ? tiles + 2 * (n - 1) : NULL;
        if (c && c[1] < max_rows && seq[t] == seq[c[0]] && pos[t] == pos[c[0]] + c[1])
            c[1]++;
        else
            tiles[2 * n] = t, tiles[2 * n + 1] = 1, n++;
    }
    return n;
}

extern "C" int kn_cu_attention_tiled(float *out, const float *q, const kn_cu_kv_t *kv, int layer,
                                     int nh, const kn_cu_batch_t *b, void *stream) {
    if (kv->head_dim > 32 * KN_ATT_PER_LANE || kv->head_dim % 4 || !b->tiles)
        return -(int)cudaErrorInvalidValue;
    if (b->n_tiles <= 0) return 0;
    attention_tiled_kernel<<<dim3(b->n_tiles, nh), KN_ATT_THREADS, att_tiled_smem(kv->head_dim),
                             (cudaStream_t)stream>>>(out, q, *kv, layer, nh, *b);
    return last_rc();
}

extern "C" int kn_cu_attention_split(float *out, const float *q, const kn_cu_kv_t *kv, int layer,
                                     int nh, const kn_cu_batch_t *b, float *part, int splits,
                                     void *stream) {
    return attention_run(out, q, kv, layer, nh, b, part, splits, NULL, NULL, (cudaStream_t)stream);
}

extern "C" int kn_cu_attention_q(float *out, const float *q, const kn_cu_kv_t *kv, int layer,
                                 int nh, const kn_cu_batch_t *b, float *part, int splits,
                                 kn_cu_mm_scratch_t *s, void *stream) {
    int k = nh * kv->head_dim;
    bool fit = quants_fit(s, b->n_tokens, k) && kv->head_dim % KN_BLOCK == 0;
    int rc = attention_run(out, q, kv, layer, nh, b, part, splits, fit ? (int8_t *)s->xq : NULL,
                           fit ? (float2 *)s->xs : NULL, (cudaStream_t)stream);
    return quants_made(s, rc, fit, out, b->n_tokens, k);
}

extern "C" int kn_cu_matmul_supported(int type, int64_t cols) {
    if (cols <= 0 || cols > (1 << 30)) return 0;
    if (type == KN_T_F32 || type == KN_T_F16 || type == KN_T_BF16) return 1;
    if (kn_ksb_bytes(type)) return cols % KN_KBLOCK == 0;
    return (kn_qblock_bytes(type) || kn_unfold_bytes(type)) && cols % KN_BLOCK == 0;
}

/* The fast matrix-vector kernels for R activation rows over a set of weights of one type, when
 * their rows' alignment allows (the activations quantized once for all of them); -1 when it
 * does not (the caller runs the generic kernel). */
template <int R>
static int matvec_fast(const mv_set_t &set, const float *x, int type, size_t row_bytes, int k,
                       const kn_cu_mm_scratch_t *s, cudaStream_t st) {
    int total = set.end[set.count - 1];
    unsigned grid = (unsigned)((total + KN_MV_WARPS - 1) / KN_MV_WARPS), threads = KN_MV_WARPS * 32;
    if (kn_is_qgpu(type)) {
        if (row_bytes % 4 || !s->xq || k > s->max_k) return -1;
        bool v16 = row_bytes % 16 == 0;
        if (kn_ksb_bytes(type) && !v16) return -1; /* K rows: 24 or 40 bytes a block, k % 256 */
        int nblocks = R * (k / KN_BLOCK);
        if (s->quantized != x || s->quantized_rows != R || s->quantized_k != k)
            quant_x_kernel<<<(nblocks + 7) / 8, 256, 0, st>>>((int8_t *)s->xq, (float2 *)s->xs, x,
                                                              nblocks);
        const int8_t *xq = (const int8_t *)s->xq;
        const float2 *xs = (const float2 *)s->xs;
#define KN_MMVQ(T)                                                                                 \
    (v16 ? mmvq_kernel<T, R, true><<<grid, threads, 0, st>>>(set, xq, xs, row_bytes, k)            \
         : mmvq_kernel<T, R, false><<<grid, threads, 0, st>>>(set, xq, xs, row_bytes, k))
#define KN_MMVQ16(T) mmvq_kernel<T, R, true><<<grid, threads, 0, st>>>(set, xq, xs, row_bytes, k)
        if (type == KN_T_Q4_0)
            KN_MMVQ(KN_T_Q4_0);
        else if (type == KN_T_Q4_1)
            KN_MMVQ(KN_T_Q4_1);
        else if (type == KN_T_Q8_0)
            KN_MMVQ(KN_T_Q8_0);
        else if (type == KN_T_Q5_0)
            KN_MMVQ(KN_T_Q5_0);
        else if (type == KN_T_Q5_1)
            KN_MMVQ(KN_T_Q5_1);
        else if (type == KN_T_Q4_K)
            KN_MMVQ16(KN_T_Q4_K);
        else if (type == KN_T_Q3_K)
            KN_MMVQ16(KN_T_Q3_K);
        else if (type == KN_T_Q5_K)
            KN_MMVQ16(KN_T_Q5_K);
        else
            KN_MMVQ16(KN_T_Q6_K);
#undef KN_MMVQ
#undef KN_MMVQ16
        return last_rc();
    }
    if (row_bytes % 16 || k % 8) return -1;
    if (type == KN_T_BF16)
        mvf_kernel<KN_T_BF16, R><<<grid, threads, 0, st>>>(set, x, row_bytes, k);
    else if (type == KN_T_F16)
        mvf_kernel<KN_T_F16, R><<<grid, threads, 0, st>>>(set, x, row_bytes, k);
    else
        mvf_kernel<KN_T_F32, R><<<grid, threads, 0, st>>>(set, x, row_bytes, k);
    return last_rc();
}

typedef int (*matvec_fn)(const mv_set_t &, const float *, int, size_t, int,
                         const kn_cu_mm_scratch_t *, cudaStream_t);
static const matvec_fn MATVEC_FAST[KN_CU_MATVEC_MAX_ROWS] = {
    matvec_fast<1>, matvec_fast<2>, matvec_fast<3>, matvec_fast<4>,
    matvec_fast<5>, matvec_fast<6>, matvec_fast<7>, matvec_fast<8>};

extern "C" int kn_cu_matmul(float *y, const float *x, const void *w, int type, size_t row_bytes,
                            int n, int k, const float *bias, int rows, const kn_cu_mm_scratch_t *s,
                            void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    if (rows <= 0) return 0;
    if (rows <= KN_CU_MATVEC_MAX_ROWS) {
        mv_set_t set = {{(const uint8_t *)w}, {y}, {bias}, {n, n, n}, 1};
        int rc = MATVEC_FAST[rows - 1](set, x, type, row_bytes, k, s, st);
        if (rc != -1) return rc;
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

extern "C" int kn_cu_matmul_n(const kn_cu_mat_t *m, int count, const float *x, int k, int rows,
                              const kn_cu_mm_scratch_t *s, void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    if (count < 1 || count > KN_MV_SET || rows <= 0)
        return count < 1 ? 0 : -(int)cudaErrorInvalidValue;
    bool one = rows <= KN_CU_MATVEC_MAX_ROWS;
    for (int i = 1; i < count; i++)
        one = one && m[i].type == m[0].type && m[i].row_bytes == m[0].row_bytes;
    if (one) {
        mv_set_t set = {};
        for (int i = 0; i < count; i++) {
            set.w[i] = (const uint8_t *)m[i].w, set.y[i] = m[i].y, set.bias[i] = m[i].bias;
            set.end[i] = (i ? set.end[i - 1] : 0) + m[i].n;
        }
        for (int i = count; i < KN_MV_SET; i++) set.end[i] = set.end[count - 1];
        set.count = count;
        int rc = MATVEC_FAST[rows - 1](set, x, m[0].type, m[0].row_bytes, k, s, st);
        if (rc != -1) return rc;
    }
    for (int i = 0; i < count; i++) {
        int rc = kn_cu_matmul(m[i].y, x, m[i].w, m[i].type, m[i].row_bytes, m[i].n, k, m[i].bias,
                              rows, s, stream);
        if (rc) return rc;
    }
    return 0;
}

extern "C" int kn_cu_repack(void *w, int type, size_t row_bytes, int n, int k, void *tmp,
                            size_t tmp_bytes, void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    if (!kn_qblock_bytes(type) || n <= 0) return 0;
    int nb = k / KN_BLOCK, chunk = (int)(tmp_bytes / row_bytes);
    if (chunk < 1) return -(int)cudaErrorInvalidValue;
    for (int r0 = 0; r0 < n; r0 += chunk) {
        int nr = n - r0 < chunk ? n - r0 : chunk;
        uint8_t *rows = (uint8_t *)w + (size_t)r0 * row_bytes;
        size_t units = (size_t)nr * nb;
        repack_kernel<<<(unsigned)((units + 255) / 256), 256, 0, st>>>((uint8_t *)tmp, rows, type,
                                                                       row_bytes, nb, nr);
        int rc = last_rc();
        if (!rc)
            rc = cu_rc(
                cudaMemcpyAsync(rows, tmp, (size_t)nr * row_bytes, cudaMemcpyDeviceToDevice, st));
        if (rc) return rc;
    }
    return 0;
}

extern "C" size_t kn_cu_row_bytes(int type, int64_t k, size_t stored) {
    return kn_unfold_bytes(type) ? kn_qrow_bytes(type, k) : stored;
}

extern "C" int kn_cu_krepack(void *dst, const void *src, int type, size_t src_row_bytes, int n,
                             int k, void *stream) {
    int unit = KN_BLOCK * kn_unfold_blocks(type); /* elements of a stored unit */
    if (!kn_unfold_bytes(type) || k % unit) return -(int)cudaErrorInvalidValue;
    if (n <= 0) return 0;
    size_t units = (size_t)n * (k / unit);
    krepack_kernel<<<(unsigned)((units + 127) / 128), 128, 0, (cudaStream_t)stream>>>(
        (uint8_t *)dst, (const uint8_t *)src, type, src_row_bytes, k / KN_BLOCK, n);
    return last_rc();
}
