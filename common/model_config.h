/*
 * model_config.h — what a model is, as its files describe it: architecture, shapes, RoPE, special
 * token ids and generation defaults. A GGUF file's metadata (read by the worker's loader) and a
 * Hugging Face directory's config.json + generation_config.json (read here) both end in one
 * lt_model_config_t, which every process may read: the worker to build the model, the frontend
 * for the generation defaults.
 *
 * Thread safety: plain data and pure readers. Not on the hot path.
 */
#ifndef LT_MODEL_CONFIG_H
#define LT_MODEL_CONFIG_H

#include <stdbool.h>

typedef enum {
    LT_ARCH_LLAMA = 0, /* Llama 2/3, Mistral, SmolLM2 */
    LT_ARCH_QWEN2 = 1, /* adds q/k/v biases */
    LT_ARCH_QWEN3 = 2, /* adds per-head q/k RMSNorm */
} lt_arch_t;

typedef enum {
    LT_ROPE_SCALING_NONE = 0,
    LT_ROPE_SCALING_LINEAR = 1,
    LT_ROPE_SCALING_LLAMA3 = 2,
} lt_rope_scaling_t;

typedef struct lt_model_config {
    lt_arch_t arch;
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
    lt_rope_scaling_t rope_scaling;
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
} lt_model_config_t;

/* Fills c with neutral defaults (ids -1, generation defaults -1, eps 1e-5, theta 10000). */
void lt_model_config_defaults(lt_model_config_t *c);

/* Parses a Hugging Face config.json (and generation_config.json beside it, if present) from
 * directory dir. Unknown architectures and missing required fields are errors naming the file
 * and the field. */
int lt_model_config_from_hf_dir(const char *dir, lt_model_config_t *c, char *err);

#endif
