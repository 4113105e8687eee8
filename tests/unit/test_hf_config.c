/*
 * test_hf_config.c — config.json / generation_config.json parsing against the shapes real
 * checkpoints ship (Llama 3.1 with llama3 rope scaling, Mistral, Qwen2.5, Qwen3) and against
 * broken files: each error must carry the right code and name the file and the field.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lt.h"
#include "worker.h"

/* ---- helpers ---- */

static char g_base[4096];
static char g_dir[4096];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    (void)state;
    const char *t = tu_tmpdir();
    if (!t) return -1;
    snprintf(g_base, sizeof g_base, "%s", t);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return nftw(g_base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory holding config.json (and generation_config.json when gen is not NULL). */
static const char *model_dir(const char *config, const char *gen) {
    static int n;
    if (snprintf(g_dir, sizeof g_dir, "%s/%d", g_base, n++) >= (int)sizeof g_dir)
        fail_msg("path too long");
    assert_int_equal(mkdir(g_dir, 0700), 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", g_dir);
    if (config) assert_int_equal(tu_write_file(path, config, strlen(config)), 0);
    snprintf(path, sizeof path, "%s/generation_config.json", g_dir);
    if (gen) assert_int_equal(tu_write_file(path, gen, strlen(gen)), 0);
    return g_dir;
}

static lt_model_config_t load_ok(const char *config, const char *gen) {
    const char *dir = model_dir(config, gen);
    lt_model_config_t c;
    char err[LT_ERR_LEN] = "";
    int rc = lt_model_config_from_hf_dir(dir, &c, err);
    if (rc != 0) fail_msg("load: %s", err);
    return c;
}

/* Expects code, a message naming `file` of the directory, containing `needle`, and *out left
 * untouched. */
static void load_bad(const char *config, const char *gen, int code, const char *file,
                     const char *needle) {
    const char *dir = model_dir(config, gen);
    lt_model_config_t c, before;
    memset(&c, 0x5a, sizeof c);
    before = c;
    char err[LT_ERR_LEN] = "";
    int rc = lt_model_config_from_hf_dir(dir, &c, err);
    if (rc != code) fail_msg("expected %d, got %d (%s)", code, rc, err);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (!strstr(err, path)) fail_msg("error '%s' does not name '%s'", err, path);
    if (needle && !strstr(err, needle)) fail_msg("error '%s' does not contain '%s'", err, needle);
    assert_memory_equal(&c, &before, sizeof c);
}

static void assert_float(float got, float want) {
    if (fabsf(got - want) > 1e-6f * fabsf(want) + 1e-12f) fail_msg("got %g, want %g", got, want);
}

/* ---- real-world configs ---- */

static const char *k_llama31 =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"attention_bias\":false,"
    "\"attention_dropout\":0.0,\"bos_token_id\":128000,\"eos_token_id\":[128001,128008,128009],"
    "\"hidden_act\":\"silu\",\"hidden_size\":4096,\"initializer_range\":0.02,"
    "\"intermediate_size\":14336,\"max_position_embeddings\":131072,\"mlp_bias\":false,"
    "\"model_type\":\"llama\",\"num_attention_heads\":32,\"num_hidden_layers\":32,"
    "\"num_key_value_heads\":8,\"pretraining_tp\":1,\"rms_norm_eps\":1e-05,"
    "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
    "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},"
    "\"rope_theta\":500000.0,\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\","
    "\"transformers_version\":\"4.43.0.dev0\",\"use_cache\":true,\"vocab_size\":128256}";

static void test_llama3(void **state) {
    (void)state;
    lt_model_config_t c = load_ok(k_llama31, NULL);
    assert_int_equal(c.arch, LT_ARCH_LLAMA);
    assert_int_equal(c.n_layer, 32);
    assert_int_equal(c.dim, 4096);
    assert_int_equal(c.hidden_dim, 14336);
    assert_int_equal(c.n_head, 32);
    assert_int_equal(c.n_kv_head, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.vocab_size, 128256);
    assert_int_equal(c.max_seq_len, 131072);
    assert_float(c.norm_eps, 1e-5f);
    assert_float(c.rope_theta, 500000.0f);
    assert_int_equal(c.rope_scaling, LT_ROPE_SCALING_LLAMA3);
    assert_float(c.rope_factor, 8.0f);
    assert_float(c.rope_low_freq_factor, 1.0f);
    assert_float(c.rope_high_freq_factor, 4.0f);
    assert_int_equal(c.rope_orig_max_pos, 8192);
    assert_true(c.rope_neox);
    assert_false(c.tie_embeddings);
    assert_false(c.qkv_bias);
    assert_false(c.qk_norm);
    assert_int_equal(c.bos_id, 128000);
    assert_int_equal(c.eos_id, 128001); /* first of the list */
    assert_float(c.gen_temperature, -1.0f);
    assert_float(c.gen_top_p, -1.0f);
    assert_int_equal(c.gen_top_k, -1);
    assert_float(c.gen_repetition_penalty, -1.0f);
}

static void test_llama_minimal_defaults(void **state) {
    (void)state;
    /* SmolLM2-style: only what is needed; everything else takes LlamaConfig's defaults. */
    lt_model_config_t c = load_ok("{\"model_type\":\"llama\",\"hidden_size\":576,"
                                  "\"intermediate_size\":1536,\"num_attention_heads\":9,"
                                  "\"num_hidden_layers\":30,\"vocab_size\":49152,"
                                  "\"tie_word_embeddings\":true,\"rope_scaling\":null,"
                                  "\"bos_token_id\":null}",
                                  NULL);
    assert_int_equal(c.arch, LT_ARCH_LLAMA);
    assert_int_equal(c.n_kv_head, 9);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.max_seq_len, 2048);
    assert_float(c.norm_eps, 1e-6f);
    assert_float(c.rope_theta, 10000.0f);
    assert_int_equal(c.rope_scaling, LT_ROPE_SCALING_NONE);
    assert_true(c.tie_embeddings);
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.eos_id, -1);
}

static void test_linear_rope(void **state) {
    (void)state;
    lt_model_config_t c = load_ok("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,"
                                  "\"intermediate_size\":128,\"num_attention_heads\":4,"
                                  "\"num_hidden_layers\":2,\"vocab_size\":100,"
                                  "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}",
                                  NULL);
    assert_int_equal(c.rope_scaling, LT_ROPE_SCALING_LINEAR);
    assert_float(c.rope_factor, 2.0f);
    c = load_ok("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,"
                "\"intermediate_size\":128,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":2,\"vocab_size\":100,"
                "\"rope_scaling\":{\"rope_type\":\"default\"}}",
                NULL);
    assert_int_equal(c.rope_scaling, LT_ROPE_SCALING_NONE);
}

static void test_mistral(void **state) {
    (void)state;
    /* Mistral 7B v0.1: a 4096-token sliding window caps the context. */
    const char *v01 = "{\"architectures\":[\"MistralForCausalLM\"],\"bos_token_id\":1,"
                      "\"eos_token_id\":2,\"hidden_act\":\"silu\",\"hidden_size\":4096,"
                      "\"intermediate_size\":14336,\"max_position_embeddings\":32768,"
                      "\"model_type\":\"mistral\",\"num_attention_heads\":32,"
                      "\"num_hidden_layers\":32,\"num_key_value_heads\":8,"
                      "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"sliding_window\":4096,"
                      "\"tie_word_embeddings\":false,\"vocab_size\":32000}";
    lt_model_config_t c = load_ok(v01, NULL);
    assert_int_equal(c.arch, LT_ARCH_LLAMA);
    assert_int_equal(c.max_seq_len, 4096);
    assert_int_equal(c.n_kv_head, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.eos_id, 2);
    assert_true(c.rope_neox);

    /* v0.3: no window; explicit head_dim. */
    c = load_ok("{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":4096,"
                "\"head_dim\":128,\"intermediate_size\":14336,"
                "\"max_position_embeddings\":32768,\"num_attention_heads\":32,"
                "\"num_hidden_layers\":32,\"num_key_value_heads\":8,\"rms_norm_eps\":1e-05,"
                "\"rope_theta\":1000000.0,\"sliding_window\":null,\"vocab_size\":32768}",
                NULL);
    assert_int_equal(c.max_seq_len, 32768);
    assert_float(c.rope_theta, 1e6f);
}

static void test_qwen2(void **state) {
    (void)state;
    const char *qwen25 =
        "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,"
        "\"bos_token_id\":151643,\"eos_token_id\":151645,\"hidden_act\":\"silu\","
        "\"hidden_size\":896,\"initializer_range\":0.02,\"intermediate_size\":4864,"
        "\"max_position_embeddings\":32768,\"max_window_layers\":21,\"model_type\":\"qwen2\","
        "\"num_attention_heads\":14,\"num_hidden_layers\":24,\"num_key_value_heads\":2,"
        "\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,\"sliding_window\":32768,"
        "\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\",\"use_cache\":true,"
        "\"use_sliding_window\":false,\"vocab_size\":151936}";
    lt_model_config_t c = load_ok(qwen25, NULL);
    assert_int_equal(c.arch, LT_ARCH_QWEN2);
    assert_true(c.qkv_bias);
    assert_false(c.qk_norm);
    assert_true(c.tie_embeddings);
    assert_int_equal(c.n_head, 14);
    assert_int_equal(c.n_kv_head, 2);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.max_seq_len, 32768);
    assert_float(c.norm_eps, 1e-6f);
    assert_int_equal(c.bos_id, 151643);
    assert_int_equal(c.eos_id, 151645);
    assert_true(c.rope_neox);
}

static void test_qwen3(void **state) {
    (void)state;
    /* Qwen3-0.6B: head_dim 128 while hidden_size / heads is 64. */
    const char *qwen3 =
        "{\"architectures\":[\"Qwen3ForCausalLM\"],\"attention_bias\":false,"
        "\"attention_dropout\":0.0,\"bos_token_id\":151643,\"eos_token_id\":151645,"
        "\"head_dim\":128,\"hidden_act\":\"silu\",\"hidden_size\":1024,"
        "\"initializer_range\":0.02,\"intermediate_size\":3072,"
        "\"max_position_embeddings\":40960,\"max_window_layers\":28,\"model_type\":\"qwen3\","
        "\"num_attention_heads\":16,\"num_hidden_layers\":28,\"num_key_value_heads\":8,"
        "\"rms_norm_eps\":1e-06,\"rope_scaling\":null,\"rope_theta\":1000000,"
        "\"sliding_window\":null,\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\","
        "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}";
    lt_model_config_t c = load_ok(qwen3, NULL);
    assert_int_equal(c.arch, LT_ARCH_QWEN3);
    assert_true(c.qk_norm);
    assert_false(c.qkv_bias);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.dim, 1024);
    assert_int_equal(c.n_head, 16);
    assert_int_equal(c.max_seq_len, 40960);
    assert_true(c.tie_embeddings);
    assert_int_equal(c.rope_scaling, LT_ROPE_SCALING_NONE);

    /* model_type alone; absent head_dim is Qwen3Config's literal 128; a used window caps. */
    c = load_ok("{\"model_type\":\"qwen3\",\"hidden_size\":64,\"intermediate_size\":128,"
                "\"num_attention_heads\":4,\"num_hidden_layers\":2,\"vocab_size\":100,"
                "\"use_sliding_window\":true,\"sliding_window\":1024}",
                NULL);
    assert_int_equal(c.arch, LT_ARCH_QWEN3);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.max_seq_len, 1024);
    assert_false(c.tie_embeddings);
}

static void test_generation_config(void **state) {
    (void)state;
    lt_model_config_t c =
        load_ok(k_llama31, "{\"bos_token_id\":128000,\"do_sample\":true,"
                           "\"eos_token_id\":[128009,128001],\"temperature\":0.6,"
                           "\"top_p\":0.9,\"top_k\":50,\"repetition_penalty\":1.1,"
                           "\"transformers_version\":\"4.45.0\"}");
    assert_int_equal(c.bos_id, 128000);
    assert_int_equal(c.eos_id, 128009); /* generation_config wins */
    assert_float(c.gen_temperature, 0.6f);
    assert_float(c.gen_top_p, 0.9f);
    assert_int_equal(c.gen_top_k, 50);
    assert_float(c.gen_repetition_penalty, 1.1f);

    /* An empty generation config changes nothing. */
    c = load_ok(k_llama31, "{}");
    assert_int_equal(c.eos_id, 128001);
    assert_float(c.gen_temperature, -1.0f);
    /* A scalar eos, temperature 0 (greedy), top_k 0 (no limit). */
    c = load_ok(k_llama31, "{\"eos_token_id\":128008,\"temperature\":0,\"top_k\":0}");
    assert_int_equal(c.eos_id, 128008);
    assert_float(c.gen_temperature, 0.0f);
    assert_int_equal(c.gen_top_k, 0);
}

static void test_defaults(void **state) {
    (void)state;
    lt_model_config_t c;
    memset(&c, 0x77, sizeof c);
    lt_model_config_defaults(&c);
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.eos_id, -1);
    assert_float(c.norm_eps, 1e-5f);
    assert_float(c.rope_theta, 10000.0f);
    assert_int_equal(c.rope_scaling, LT_ROPE_SCALING_NONE);
    assert_true(c.gen_temperature < 0 && c.gen_top_p < 0 && c.gen_top_k < 0 &&
                c.gen_repetition_penalty < 0);
    assert_false(c.tie_embeddings || c.qkv_bias || c.qk_norm);
}

/* ---- bad configs ---- */

#define BASE_FIELDS                                                                                \
    "\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,"                      \
    "\"num_hidden_layers\":2,\"vocab_size\":100"

static void test_bad_fields(void **state) {
    (void)state;
    const int F = LT_ERR_FORMAT;
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"],\"intermediate_size\":128,"
             "\"num_attention_heads\":4,\"num_hidden_layers\":2,\"vocab_size\":100}",
             NULL, F, "config.json", "field 'hidden_size' must be a positive integer");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":\"64\","
             "\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":2,"
             "\"vocab_size\":100}",
             NULL, F, "config.json", "field 'hidden_size' must be a positive integer");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64.5,"
             "\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":2,"
             "\"vocab_size\":100}",
             NULL, F, "config.json", "'hidden_size'");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,"
             "\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":0,"
             "\"vocab_size\":100}",
             NULL, F, "config.json", "'num_hidden_layers'");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"num_key_value_heads\":3}",
             NULL, F, "config.json", "num_key_value_heads 3");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":66,"
             "\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":2,"
             "\"vocab_size\":100}",
             NULL, F, "config.json", "not divisible");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"rms_norm_eps\":\"x\"}",
             NULL, F, "config.json", "'rms_norm_eps'");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"rope_theta\":-1}", NULL,
             F, "config.json", "'rope_theta'");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"tie_word_embeddings\":1}",
             NULL, F, "config.json", "'tie_word_embeddings'");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"eos_token_id\":\"2\"}",
             NULL, F, "config.json", "'eos_token_id'");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"eos_token_id\":[2,-1]}",
             NULL, F, "config.json", "'eos_token_id'");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"eos_token_id\":100}",
             NULL, F, "config.json", "eos_token_id 100");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"head_dim\":15}", NULL, F,
             "config.json", "head_dim");
    load_bad("{\"architectures\":\"LlamaForCausalLM\"," BASE_FIELDS "}", NULL, F, "config.json",
             "'architectures'");
    load_bad("{" BASE_FIELDS "}", NULL, F, "config.json", "model_type");
    load_bad("[1,2]", NULL, F, "config.json", NULL);
}

static void test_unsupported(void **state) {
    (void)state;
    const int U = LT_ERR_UNSUPPORTED;
    load_bad("{\"architectures\":[\"GPT2LMHeadModel\"]," BASE_FIELDS "}", NULL, U, "config.json",
             "GPT2LMHeadModel");
    load_bad("{\"architectures\":[\"LlamaForSequenceClassification\"],\"model_type\":"
             "\"llama\"," BASE_FIELDS "}",
             NULL, U, "config.json", "LlamaForSequenceClassification");
    load_bad("{\"model_type\":\"mixtral\"," BASE_FIELDS "}", NULL, U, "config.json", "mixtral");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS
             ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}}",
             NULL, U, "config.json", "yarn");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS
             ",\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2.0}}",
             NULL, U, "config.json", "dynamic");
    load_bad("{\"architectures\":[\"Qwen3ForCausalLM\"]," BASE_FIELDS ",\"attention_bias\":true}",
             NULL, U, "config.json", "attention_bias");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"mlp_bias\":true}", NULL,
             U, "config.json", "mlp_bias");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"hidden_act\":\"gelu\"}",
             NULL, U, "config.json", "gelu");
}

static void test_bad_rope_scaling(void **state) {
    (void)state;
    const int F = LT_ERR_FORMAT;
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS
             ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
             "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0}}",
             NULL, F, "config.json", "original_max_position_embeddings");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS
             ",\"rope_scaling\":{\"rope_type\":\"linear\"}}",
             NULL, F, "config.json", "factor");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS
             ",\"rope_scaling\":{\"factor\":2.0}}",
             NULL, F, "config.json", "rope_type");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"rope_scaling\":\"x\"}",
             NULL, F, "config.json", "'rope_scaling'");
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS
             ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
             "\"low_freq_factor\":4.0,\"high_freq_factor\":1.0,"
             "\"original_max_position_embeddings\":8192}}",
             NULL, F, "config.json", "high_freq_factor");
}

static void test_malformed_json(void **state) {
    (void)state;
    load_bad("{\"architectures\":[\"LlamaForCausalLM\"], \"hidden_size\": 64,", NULL, LT_ERR_FORMAT,
             "config.json", "not valid JSON");
    load_bad("", NULL, LT_ERR_FORMAT, "config.json", "not valid JSON");
    load_bad(k_llama31, "{\"temperature\": 0.7", LT_ERR_FORMAT, "generation_config.json",
             "not valid JSON");
    load_bad(k_llama31, "{\"temperature\":\"hot\"}", LT_ERR_FORMAT, "generation_config.json",
             "'temperature'");
    load_bad(k_llama31, "{\"top_p\":1.5}", LT_ERR_FORMAT, "generation_config.json", "'top_p'");
    load_bad(k_llama31, "{\"top_k\":-5}", LT_ERR_FORMAT, "generation_config.json", "'top_k'");
    load_bad(k_llama31, "{\"eos_token_id\":200000}", LT_ERR_FORMAT, "generation_config.json",
             "eos_token_id");
    /* no config.json at all */
    load_bad(NULL, NULL, LT_ERR_NOTFOUND, "config.json", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_llama_minimal_defaults),
        cmocka_unit_test(test_linear_rope),
        cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_qwen3),
        cmocka_unit_test(test_generation_config),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_bad_rope_scaling),
        cmocka_unit_test(test_malformed_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
