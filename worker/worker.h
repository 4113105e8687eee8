/*
 * worker.h — the model a worker runs: configuration, weights, KV cache and the CPU forward pass.
 *
 * A model comes from a GGUF file or a Hugging Face directory (config.json + safetensors); both
 * end in the same wk_config_t and fp32 weights. The forward pass takes a batch of tokens from
 * one or more sequences, each with its positions and a block table into the paged KV cache, and
 * returns logits for the rows asked for.
 *
 * Thread safety: a wk_model_t is read-only after load and may be shared; a wk_kv_cache_t and a
 * wk_ctx_t (scratch buffers) belong to one thread at a time.
 * Ownership: wk_model_load() returns a model the caller frees with wk_model_free().
 */
#ifndef WK_WORKER_H
#define WK_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- configuration ---- */

typedef enum {
    WK_ARCH_LLAMA = 0, /* Llama 2/3, Mistral, SmolLM2 */
    WK_ARCH_QWEN2 = 1, /* adds q/k/v biases */
    WK_ARCH_QWEN3 = 2, /* adds per-head q/k RMSNorm */
} wk_arch_t;

typedef enum {
    WK_ROPE_SCALING_NONE = 0,
    WK_ROPE_SCALING_LINEAR = 1,
    WK_ROPE_SCALING_LLAMA3 = 2,
} wk_rope_scaling_t;

typedef struct wk_config {
    wk_arch_t arch;
    int n_layer;
    int dim;        /* hidden size */
    int hidden_dim; /* MLP intermediate size */
    int n_head;
    int n_kv_head;
    int head_dim; /* usually dim / n_head; Qwen3 may differ */
    int vocab_size;
    int max_seq_len; /* max_position_embeddings / context_length */
    float norm_eps;
    float rope_theta;
    wk_rope_scaling_t rope_scaling;
    float rope_factor;           /* linear and llama3 */
    float rope_low_freq_factor;  /* llama3 */
    float rope_high_freq_factor; /* llama3 */
    int rope_orig_max_pos;       /* llama3 original_max_position_embeddings */
    bool rope_neox; /* true: rotate halves (HF layout); false: adjacent pairs (GGUF llama) */
    bool tie_embeddings;
    bool qkv_bias;
    bool qk_norm;
    /* token ids from the model's metadata; -1 when absent */
    int bos_id;
    int eos_id;
    /* generation defaults (generation_config.json); < 0 when absent */
    float gen_temperature;
    float gen_top_p;
    int gen_top_k;
    float gen_repetition_penalty;
} wk_config_t;

/* Fills c with neutral defaults (ids -1, generation defaults -1, eps 1e-5, theta 10000). */
void wk_config_defaults(wk_config_t *c);

/* Parses a Hugging Face config.json (and generation_config.json beside it, if present) from
 * directory dir. Unknown architectures and missing required fields are errors naming the file
 * and the field. */
int wk_config_from_hf_dir(const char *dir, wk_config_t *c, char *err);

#endif
