/*
 * ops.h — the CUDA kernels of the GPU backend (worker/backend_cuda.c), callable from C. Every
 * pointer is device memory unless a comment says host; every call is asynchronous on `stream`
 * (a cudaStream_t passed as void *) and returns 0 or a cudaError_t / cublasStatus_t code turned
 * negative (kn_cu_error_str names it). The per-element arithmetic is in device_math.h, tested on
 * the CPU; each kernel is tested against the CPU reference by tests/unit/cuda/ on a GPU.
 *
 * Checked on an H200 by tools/gpu_check.sh (README "GPU").
 * Thread safety: one stream per caller. HOT.
 */
#ifndef KN_CUDA_OPS_H
#define KN_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A step's indices on the device (uploaded once per step by the backend's begin()). */
typedef struct kn_cu_batch {
    int n_tokens;
    const int32_t *tokens, *pos, *seq; /* (n_tokens) */
    const int32_t *block_tables;       /* (n_seqs, bt_stride): sequence s's block table, padded */
    int bt_stride;
    /* (n_tiles, 2) {first token, tokens}: runs of at most KN_CU_ATT_TILE tokens of one sequence
     * at consecutive positions (kn_cu_att_tiles), for kn_cu_attention_tiled; or NULL, 0 */
    const int32_t *tiles;
    int n_tiles;
} kn_cu_batch_t;

/* Query tokens per tile of kn_cu_attention_tiled. */
#define KN_CU_ATT_TILE 16

/* Host: the batch's tokens (seq, pos: host arrays of T) cut into tiles of at most max_rows (<=
 * KN_CU_ATT_TILE) consecutive tokens of one sequence at consecutive positions, written to tiles
 * ({first token, tokens} pairs; room for T); returns their count. */
int kn_cu_att_tiles(const int32_t *seq, const int32_t *pos, int T, int max_rows, int32_t *tiles);

/* A paged KV cache: (n_layer, n_blocks, n_kv_head, block_size, head_dim) elements of dtype
 * (KN_T_F32, KN_T_F16 or KN_T_BF16), the layout of worker.h's wk_kv_cache_t. */
typedef struct kn_cu_kv {
    void *k, *v;
    int dtype, n_blocks, n_kv_head, block_size, head_dim;
} kn_cu_kv_t;

const char *kn_cu_error_str(int rc);

/* x (T, cols) = rows tokens[t] of table (rows row_bytes apart, any supported type; quantized
 * tables repacked by kn_cu_repack). */
int kn_cu_embed(float *x, const void *table, int type, size_t row_bytes, int cols,
                const kn_cu_batch_t *b, void *stream);
/* out (rows, n) = x / rms(x) * w; out may alias x. */
int kn_cu_rmsnorm(float *out, const float *x, const float *w, int rows, int n, float eps,
                  void *stream);
/* Per head of q (T, nh, hd) and k (T, nkv, hd): RMSNorm with q_norm / k_norm (hd, NULL: none),
 * then RoPE at the token's position: inv_freq (hd / 2), neox halves or adjacent pairs. */
int kn_cu_qk_rope(float *q, float *k, int nh, int nkv, int hd, const float *q_norm,
                  const float *k_norm, float eps, const float *inv_freq, int neox,
                  float attn_factor, const kn_cu_batch_t *b, void *stream);
/* kn_cu_qk_rope, then kn_cu_kv_store of the rotated k and of v, in one kernel (the same bits). */
int kn_cu_qk_rope_store(float *q, float *k, const float *v, int nh, int nkv, int hd,
                        const float *q_norm, const float *k_norm, float eps, const float *inv_freq,
                        int neox, float attn_factor, const kn_cu_kv_t *kv, int layer,
                        const kn_cu_batch_t *b, void *stream);
/* gate (n) = silu(gate) * up. */
int kn_cu_swiglu(float *gate, const float *up, size_t n, void *stream);
/* x (n) += y (n). */
int kn_cu_add(float *x, const float *y, size_t n, void *stream);
/* dst row i (n) = src row rows[i]; dst must not overlap src. */
int kn_cu_gather(float *dst, const float *src, const int32_t *rows, int n_rows, int n,
                 void *stream);
/* Writes token t's k and v (T, nkv * hd) into slot pos % block_size of block
 * block_tables[seq][pos / block_size], layer `layer`. */
int kn_cu_kv_store(const kn_cu_kv_t *kv, int layer, const float *k, const float *v,
                   const kn_cu_batch_t *b, void *stream);
/* out (T, nh * hd): causal grouped-query attention of q over positions 0..pos of each token's
 * sequence, one thread block per (token, head), online softmax (hd <= 256). */
int kn_cu_attention(float *out, const float *q, const kn_cu_kv_t *kv, int layer, int nh,
                    const kn_cu_batch_t *b, void *stream);
/* kn_cu_attention for prefill: one thread block per (tile of b->tiles, head) loads each run of
 * keys and values once into shared memory for all the tile's queries (up to KN_CU_ATT_TILE),
 * instead of once per query; same online softmax, another summation order. */
int kn_cu_attention_tiled(float *out, const float *q, const kn_cu_kv_t *kv, int layer, int nh,
                          const kn_cu_batch_t *b, void *stream);
/* Ranges of positions at most: long-context attention split across thread blocks. */
#define KN_ATT_MAX_SPLITS 16
/* kn_cu_attention for long contexts ("flash decoding"): each token's positions in `splits`
 * (<= KN_ATT_MAX_SPLITS) ranges, one thread block per (token, head, range), their online-softmax
 * states in part (T * nh * splits * (hd + 2) floats), then merged (kn_online_merge). Not the
 * same bits as kn_cu_attention (another summation order); splits <= 1 is kn_cu_attention. */
int kn_cu_attention_split(float *out, const float *q, const kn_cu_kv_t *kv, int layer, int nh,
                          const kn_cu_batch_t *b, float *part, int splits, void *stream);

/* Rows at most this many take the matrix-vector kernels (quantized weights: dp4a against the
 * activations' 16-bit quants in two byte planes, device_math.h kn_q16_block; others: fp32); more
 * take cuBLAS. */
#define KN_CU_MATVEC_MAX_ROWS 8
/* Weight rows dequantized per cuBLAS call (the fp16 tile scratch holds this many rows). */
#define KN_CU_DEQ_ROWS 4096

/* Scratch of kn_cu_matmul. cuBLAS path: wtile (KN_CU_DEQ_ROWS * max_k halves), xh (max_rows *
 * max_k halves). Matrix-vector path on quantized weights: xq (KN_CU_MATVEC_MAX_ROWS * max_k * 2
 * bytes) and xs (KN_CU_MATVEC_MAX_ROWS * max_k / 32 float pairs), the activations' quants;
 * without them (NULL) that path runs the generic fp32 kernel. */
typedef struct kn_cu_mm_scratch {
    void *wtile, *xh;
    void *xq, *xs;
    int max_k;
    void *cublas; /* cublasHandle_t bound to the stream */
    /* xq and xs hold the quants of this buffer's quantized_rows rows of quantized_k elements,
     * made with it by kn_cu_rmsnorm_q or kn_cu_swiglu_q: a matrix-vector product reading that
     * buffer skips quantizing it. NULL: none. The caller clears it once the buffer may change
     * or the quants were used (they serve one product). */
    const float *quantized;
    int quantized_rows, quantized_k;
} kn_cu_mm_scratch_t;

/* kn_cu_rmsnorm and kn_cu_swiglu (gate and up: rows of n) that also leave their output's quants
 * in s (s->quantized) for the matrix-vector product that reads it next, one kernel instead of
 * two; the same bits as the plain operation then the product's own quantization. Rows over
 * KN_CU_MATVEC_MAX_ROWS, n not a multiple of 32 or over s->max_k, or no quant scratch: the plain
 * operation, s->quantized NULL. */
int kn_cu_rmsnorm_q(float *out, const float *x, const float *w, int rows, int n, float eps,
                    kn_cu_mm_scratch_t *s, void *stream);
int kn_cu_swiglu_q(float *gate, const float *up, int rows, int n, kn_cu_mm_scratch_t *s,
                   void *stream);
/* x (rows, n) += y, then out = kn_cu_rmsnorm(x) (out may alias y), in one kernel, out's quants
 * left in s as kn_cu_rmsnorm_q leaves them (when they fit); the same bits as kn_cu_add then
 * kn_cu_rmsnorm_q. */
int kn_cu_add_rmsnorm_q(float *x, const float *y, float *out, const float *w, int rows, int n,
                        float eps, kn_cu_mm_scratch_t *s, void *stream);
/* kn_cu_attention_split whose output's quants are left in s likewise (head_dim a multiple of 32;
 * not the tiled kernel: prefill batches are past KN_CU_MATVEC_MAX_ROWS). */
int kn_cu_attention_q(float *out, const float *q, const kn_cu_kv_t *kv, int layer, int nh,
                      const kn_cu_batch_t *b, float *part, int splits, kn_cu_mm_scratch_t *s,
                      void *stream);

/* One weight of kn_cu_matmul_n: y (rows, n) = x @ w^T (+ bias). */
typedef struct kn_cu_mat {
    const void *w;
    int type;
    size_t row_bytes;
    int n;
    float *y;
    const float *bias;
} kn_cu_mat_t;

/* kn_cu_matmul for count (1..3) weights with the same k sharing x: with at most
 * KN_CU_MATVEC_MAX_ROWS rows and weights of one type and row size, the activations are quantized
 * once and one kernel reads every weight (q/k/v, gate/up: two launches instead of six); else
 * kn_cu_matmul on each. The same results as kn_cu_matmul on each. */
int kn_cu_matmul_n(const kn_cu_mat_t *m, int count, const float *x, int k, int rows,
                   const kn_cu_mm_scratch_t *s, void *stream);
/* Rearranges the n rows (k elements, row_bytes apart) of a quantized weight (Q4_0, Q4_1, Q8_0) in
 * device memory w from the stored block layout into the GPU's (device_math.h: kn_repack_row),
 * through tmp (tmp_bytes >= row_bytes of device memory). Every quantized weight kn_cu_matmul and
 * kn_cu_embed read must have been repacked once; other types are left as they are. */
int kn_cu_repack(void *w, int type, size_t row_bytes, int n, int k, void *tmp, size_t tmp_bytes,
                 void *stream);
/* Bytes of a row of k elements of `type` on the GPU: `stored` (the file's row size) but for the
 * unfolded types, Q4_K, Q5_K, Q6_K, Q5_0 and Q5_1, whose quants are widened to bytes in
 * 32-element blocks (device_math.h). */
size_t kn_cu_row_bytes(int type, int64_t k, size_t stored);
/* dst (n rows of kn_cu_row_bytes) = the n stored rows of an unfolded type (Q4_K, Q5_K, Q6_K, Q5_0,
 * Q5_1) of k elements at src (src_row_bytes apart), both in device memory, unfolded into the GPU
 * layout. kn_cu_matmul and kn_cu_embed read those weights only in that layout. */
int kn_cu_krepack(void *dst, const void *src, int type, size_t src_row_bytes, int n, int k,
                  void *stream);
/* True when kn_cu_matmul reads weights of `type` with rows of cols elements. */
int kn_cu_matmul_supported(int type, int64_t cols);
/* y (rows, n) = x (rows, k) @ w^T (+ bias (n)), w (n, k) of `type`, rows row_bytes apart. */
int kn_cu_matmul(float *y, const float *x, const void *w, int type, size_t row_bytes, int n, int k,
                 const float *bias, int rows, const kn_cu_mm_scratch_t *s, void *stream);

#ifdef __cplusplus
}
#endif

#endif
