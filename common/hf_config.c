/*
 * hf_config.c — turns a Hugging Face model directory's config.json (and the optional
 * generation_config.json beside it) into a lt_model_config_t.
 *
 * config.json is written by transformers and edited by people, so every field is type-checked:
 * a wrong type or an out-of-range value is an error naming the file and the field, never a silent
 * default. Absent optional fields take the defaults transformers' own config classes use, so a
 * directory means the same model here as it does to transformers. Features that would change the
 * forward pass in ways lantern does not implement (biases on o_proj or the MLP, rope types other
 * than linear/llama3, activations other than SiLU) are LT_ERR_UNSUPPORTED rather than ignored.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lt.h"
#include "model_config.h"

#define HF_PATH_MAX 4096

/* ---- defaults ---- */

void lt_model_config_defaults(lt_model_config_t *c) {
    memset(c, 0, sizeof *c);
    c->arch = LT_ARCH_LLAMA;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_scaling = LT_ROPE_SCALING_NONE;
    c->rope_factor = 1.0f;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_orig_max_pos = 0;
    c->rope_neox = false;
    c->bos_id = -1;
    c->eos_id = -1;
    c->gen_temperature = -1.0f;
    c->gen_top_p = -1.0f;
    c->gen_top_k = -1;
    c->gen_repetition_penalty = -1.0f;
}

/* ---- typed field access ---- */

/* Every getter: absent (or JSON null) gives *found = false and returns 0; present with the wrong
 * type or range is LT_ERR_FORMAT naming path and key. `found` may be NULL when the caller does not
 * care. */

static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (j && !cJSON_IsNull(j)) ? j : NULL;
}

static bool is_int(const cJSON *j, double lo, double hi) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    return isfinite(d) && floor(d) == d && d >= lo && d <= hi;
}

static int get_pos_int(const char *path, const cJSON *obj, const char *key, int *out, bool *found,
                       char *err) {
    const cJSON *j = field(obj, key);
    if (found) *found = j != NULL;
    if (!j) return LT_OK;
    if (!is_int(j, 1, 2147483647.0))
        return lt_errf(err, LT_ERR_FORMAT, "%s: field '%s' must be a positive integer", path, key);
    *out = (int)j->valuedouble;
    return LT_OK;
}

/* Required positive integer. */
static int need_pos_int(const char *path, const cJSON *obj, const char *key, int *out, char *err) {
    bool found;
    int rc = get_pos_int(path, obj, key, out, &found, err);
    if (rc != LT_OK) return rc;
    if (!found)
        return lt_errf(err, LT_ERR_FORMAT, "%s: field '%s' must be a positive integer (missing)",
                       path, key);
    return LT_OK;
}

/* A number in [lo, hi]; lo_open excludes lo itself. */
static int get_float(const char *path, const cJSON *obj, const char *key, double lo, bool lo_open,
                     double hi, float *out, bool *found, char *err) {
    const cJSON *j = field(obj, key);
    if (found) *found = j != NULL;
    if (!j) return LT_OK;
    double d = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (!isfinite(d) || d < lo || (lo_open && d == lo) || d > hi)
        return lt_errf(err, LT_ERR_FORMAT, "%s: field '%s' must be a number in %s%g, %g]", path,
                       key, lo_open ? "(" : "[", lo, hi);
    *out = (float)d;
    return LT_OK;
}

static int get_bool(const char *path, const cJSON *obj, const char *key, bool *out, char *err) {
    const cJSON *j = field(obj, key);
    if (!j) return LT_OK;
    if (!cJSON_IsBool(j))
        return lt_errf(err, LT_ERR_FORMAT, "%s: field '%s' must be true or false", path, key);
    *out = cJSON_IsTrue(j);
    return LT_OK;
}

/* A token id: an integer, or a list of integers of which the first is taken (HF models list
 * several end-of-sequence ids; lantern stops on one). Absent, null or [] leaves *out alone. */
static int get_token_id(const char *path, const cJSON *obj, const char *key, int *out, char *err) {
    const cJSON *j = field(obj, key);
    if (!j) return LT_OK;
    if (cJSON_IsArray(j)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            if (!is_int(e, 0, 2147483647.0))
                return lt_errf(err, LT_ERR_FORMAT,
                               "%s: field '%s' must be a token id or a list of token ids", path,
                               key);
        }
        if (j->child) *out = (int)j->child->valuedouble;
        return LT_OK;
    }
    if (!is_int(j, 0, 2147483647.0))
        return lt_errf(err, LT_ERR_FORMAT,
                       "%s: field '%s' must be a token id or a list of token ids", path, key);
    *out = (int)j->valuedouble;
    return LT_OK;
}

static int get_str(const char *path, const cJSON *obj, const char *key, const char **out,
                   char *err) {
    const cJSON *j = field(obj, key);
    *out = NULL;
    if (!j) return LT_OK;
    if (!cJSON_IsString(j))
        return lt_errf(err, LT_ERR_FORMAT, "%s: field '%s' must be a string", path, key);
    *out = j->valuestring;
    return LT_OK;
}

/* ---- pieces of config.json ---- */

/* Model families: Mistral runs as LT_ARCH_LLAMA but its config defaults differ. */
typedef enum { FAM_LLAMA, FAM_MISTRAL, FAM_QWEN2, FAM_QWEN3 } hf_family_t;

static bool family_from_name(const char *s, hf_family_t *fam) {
    static const struct {
        const char *name;
        hf_family_t fam;
    } table[] = {
        {"LlamaForCausalLM", FAM_LLAMA},
        {"MistralForCausalLM", FAM_MISTRAL},
        {"llama", FAM_LLAMA},
        {"mistral", FAM_MISTRAL},
        {"Qwen2ForCausalLM", FAM_QWEN2},
        {"qwen2", FAM_QWEN2},
        {"Qwen3ForCausalLM", FAM_QWEN3},
        {"qwen3", FAM_QWEN3},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(s, table[i].name) == 0) {
            *fam = table[i].fam;
            return true;
        }
    }
    return false;
}

/* architectures[0] decides when present; model_type only when it is absent, so that e.g. a
 * LlamaForSequenceClassification (model_type "llama", no lm_head) is refused. */
static int parse_family(const char *path, const cJSON *root, hf_family_t *fam, char *err) {
    const cJSON *archs = field(root, "architectures");
    const char *name = NULL;
    const char *key = "architectures";
    if (archs) {
        if (!cJSON_IsArray(archs) || !cJSON_IsString(cJSON_GetArrayItem(archs, 0)))
            return lt_errf(err, LT_ERR_FORMAT,
                           "%s: field 'architectures' must be a list of strings", path);
        name = cJSON_GetArrayItem(archs, 0)->valuestring;
    } else {
        key = "model_type";
        int rc = get_str(path, root, "model_type", &name, err);
        if (rc != LT_OK) return rc;
        if (!name)
            return lt_errf(err, LT_ERR_FORMAT, "%s: neither 'architectures' nor 'model_type' given",
                           path);
    }
    if (!family_from_name(name, fam))
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "%s: %s '%.64s' is not supported (Llama, Mistral, Qwen2, Qwen3)", path, key,
                       name);
    return LT_OK;
}

static int parse_rope_scaling(const char *path, const cJSON *root, lt_model_config_t *c,
                              char *err) {
    const cJSON *rs = field(root, "rope_scaling");
    if (!rs) return LT_OK;
    if (!cJSON_IsObject(rs))
        return lt_errf(err, LT_ERR_FORMAT, "%s: field 'rope_scaling' must be an object or null",
                       path);
    /* transformers renamed "type" to "rope_type"; both appear in the wild. */
    const char *type = NULL;
    int rc = get_str(path, rs, "rope_type", &type, err);
    if (rc == LT_OK && !type) rc = get_str(path, rs, "type", &type, err);
    if (rc != LT_OK) return rc;
    if (!type)
        return lt_errf(err, LT_ERR_FORMAT, "%s: field 'rope_scaling' has no 'rope_type'", path);

    if (strcmp(type, "default") == 0) return LT_OK;
    bool found;
    if (strcmp(type, "linear") == 0) {
        c->rope_scaling = LT_ROPE_SCALING_LINEAR;
        rc = get_float(path, rs, "factor", 0, true, 1e6, &c->rope_factor, &found, err);
        if (rc != LT_OK) return rc;
        if (!found)
            return lt_errf(err, LT_ERR_FORMAT, "%s: field 'rope_scaling.factor' is missing", path);
        return LT_OK;
    }
    if (strcmp(type, "llama3") == 0) {
        c->rope_scaling = LT_ROPE_SCALING_LLAMA3;
        static const char *keys[] = {"factor", "low_freq_factor", "high_freq_factor"};
        float *dst[] = {&c->rope_factor, &c->rope_low_freq_factor, &c->rope_high_freq_factor};
        for (int i = 0; i < 3; i++) {
            rc = get_float(path, rs, keys[i], 0, true, 1e6, dst[i], &found, err);
            if (rc != LT_OK) return rc;
            if (!found)
                return lt_errf(err, LT_ERR_FORMAT, "%s: field 'rope_scaling.%s' is missing", path,
                               keys[i]);
        }
        rc = need_pos_int(path, rs, "original_max_position_embeddings", &c->rope_orig_max_pos, err);
        if (rc != LT_OK) return rc;
        if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
            return lt_errf(err, LT_ERR_FORMAT,
                           "%s: rope_scaling high_freq_factor must exceed low_freq_factor", path);
        return LT_OK;
    }
    return lt_errf(err, LT_ERR_UNSUPPORTED,
                   "%s: rope_scaling type '%.32s' is not supported (linear, llama3)", path, type);
}

/* Refuses options that add weights or change the math beyond what lt_model_config_t describes. */
static int check_unsupported(const char *path, const cJSON *root, char *err) {
    bool b = false;
    int rc = get_bool(path, root, "mlp_bias", &b, err);
    if (rc != LT_OK) return rc;
    if (b) return lt_errf(err, LT_ERR_UNSUPPORTED, "%s: mlp_bias=true is not supported", path);

    const char *act = NULL;
    rc = get_str(path, root, "hidden_act", &act, err);
    if (rc != LT_OK) return rc;
    if (act && strcmp(act, "silu") != 0)
        return lt_errf(err, LT_ERR_UNSUPPORTED, "%s: hidden_act '%.32s' is not supported (silu)",
                       path, act);
    return LT_OK;
}

static int parse_config(const char *path, const cJSON *root, lt_model_config_t *c, char *err) {
    if (!cJSON_IsObject(root))
        return lt_errf(err, LT_ERR_FORMAT, "%s: top level is not a JSON object", path);
    hf_family_t fam = FAM_LLAMA;
    int rc = parse_family(path, root, &fam, err);
    if (rc != LT_OK) return rc;
    rc = check_unsupported(path, root, err);
    if (rc != LT_OK) return rc;

    /* Defaults of transformers' LlamaConfig / MistralConfig / Qwen2Config / Qwen3Config for
     * absent fields. */
    static const lt_arch_t arch_of[] = {LT_ARCH_LLAMA, LT_ARCH_LLAMA, LT_ARCH_QWEN2, LT_ARCH_QWEN3};
    static const int max_pos_of[] = {2048, 131072, 32768, 32768};
    c->arch = arch_of[fam];
    c->max_seq_len = max_pos_of[fam];
    c->rope_neox = true; /* HF checkpoints are laid out for rotate-half RoPE */
    c->norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->tie_embeddings = false;
    c->qkv_bias = fam == FAM_QWEN2;
    c->qk_norm = fam == FAM_QWEN3;

    struct {
        const char *key;
        int *dst;
    } req[] = {
        {"num_hidden_layers", &c->n_layer},    {"hidden_size", &c->dim},
        {"intermediate_size", &c->hidden_dim}, {"num_attention_heads", &c->n_head},
        {"vocab_size", &c->vocab_size},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        rc = need_pos_int(path, root, req[i].key, req[i].dst, err);
        if (rc != LT_OK) return rc;
    }

    bool found;
    c->n_kv_head = c->n_head;
    rc = get_pos_int(path, root, "num_key_value_heads", &c->n_kv_head, NULL, err);
    if (rc != LT_OK) return rc;
    rc = get_pos_int(path, root, "head_dim", &c->head_dim, &found, err);
    if (rc != LT_OK) return rc;
    if (!found && fam == FAM_QWEN3) {
        c->head_dim = 128; /* Qwen3Config's literal default, not hidden_size / heads */
    } else if (!found) {
        if (c->dim % c->n_head != 0)
            return lt_errf(err, LT_ERR_FORMAT,
                           "%s: hidden_size %d is not divisible by num_attention_heads %d", path,
                           c->dim, c->n_head);
        c->head_dim = c->dim / c->n_head;
    }
    rc = get_pos_int(path, root, "max_position_embeddings", &c->max_seq_len, NULL, err);
    if (rc != LT_OK) return rc;
    rc = get_float(path, root, "rms_norm_eps", 0, true, 1, &c->norm_eps, NULL, err);
    if (rc != LT_OK) return rc;
    rc = get_float(path, root, "rope_theta", 0, true, 1e12, &c->rope_theta, NULL, err);
    if (rc != LT_OK) return rc;
    rc = get_bool(path, root, "tie_word_embeddings", &c->tie_embeddings, err);
    if (rc != LT_OK) return rc;

    /* attention_bias (Llama, Qwen3) puts a bias on o_proj too, which lt_model_config_t cannot
     * express; Qwen2's q/k/v biases are unconditional and it has no o_proj bias. */
    if (fam != FAM_QWEN2) {
        bool ab = false;
        rc = get_bool(path, root, "attention_bias", &ab, err);
        if (rc != LT_OK) return rc;
        if (ab)
            return lt_errf(err, LT_ERR_UNSUPPORTED,
                           "%s: attention_bias=true (biases on q/k/v/o_proj) is not supported",
                           path);
    }

    /* Sliding-window attention equals full attention while a sequence fits in the window, so
     * capping the context at the window keeps results exact without implementing it. Mistral's
     * window is on unless sliding_window is null (absent means MistralConfig's 4096); Qwen2/3
     * use theirs only with use_sliding_window (absent window: 4096, their configs' default). */
    bool use_sw = fam == FAM_MISTRAL;
    int window = fam == FAM_LLAMA ? 0 : 4096;
    if (fam == FAM_QWEN2 || fam == FAM_QWEN3) {
        rc = get_bool(path, root, "use_sliding_window", &use_sw, err);
        if (rc != LT_OK) return rc;
    }
    if (fam != FAM_LLAMA) {
        const cJSON *jw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        if (cJSON_IsNull(jw)) window = 0;
        rc = get_pos_int(path, root, "sliding_window", &window, NULL, err);
        if (rc != LT_OK) return rc;
    }
    if (use_sw && window > 0 && window < c->max_seq_len) {
        LT_INFO("%s: sliding_window %d: context limited to %d tokens", path, window, window);
        c->max_seq_len = window;
    }

    rc = parse_rope_scaling(path, root, c, err);
    if (rc != LT_OK) return rc;
    rc = get_token_id(path, root, "bos_token_id", &c->bos_id, err);
    if (rc != LT_OK) return rc;
    return get_token_id(path, root, "eos_token_id", &c->eos_id, err);
}

static int parse_generation(const char *path, const cJSON *root, lt_model_config_t *c, char *err) {
    if (!cJSON_IsObject(root))
        return lt_errf(err, LT_ERR_FORMAT, "%s: top level is not a JSON object", path);
    int rc = get_float(path, root, "temperature", 0, false, 100, &c->gen_temperature, NULL, err);
    if (rc == LT_OK) rc = get_float(path, root, "top_p", 0, true, 1, &c->gen_top_p, NULL, err);
    if (rc == LT_OK) {
        /* top_k 0 means "no limit" to transformers; keep it (>= 0 means present). */
        const cJSON *j = field(root, "top_k");
        if (j) {
            if (!is_int(j, 0, 2147483647.0))
                return lt_errf(err, LT_ERR_FORMAT,
                               "%s: field 'top_k' must be a non-negative integer", path);
            c->gen_top_k = (int)j->valuedouble;
        }
    }
    if (rc == LT_OK)
        rc = get_float(path, root, "repetition_penalty", 0, true, 100, &c->gen_repetition_penalty,
                       NULL, err);
    if (rc == LT_OK) rc = get_token_id(path, root, "bos_token_id", &c->bos_id, err);
    if (rc == LT_OK) rc = get_token_id(path, root, "eos_token_id", &c->eos_id, err);
    return rc;
}

/* ---- cross-field checks ---- */

static int validate(const char *path, const lt_model_config_t *c, char *err) {
    if (c->n_head % c->n_kv_head != 0)
        return lt_errf(err, LT_ERR_FORMAT,
                       "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                       path, c->n_head, c->n_kv_head);
    if (c->head_dim % 2 != 0)
        return lt_errf(err, LT_ERR_FORMAT, "%s: head_dim %d must be even for RoPE", path,
                       c->head_dim);
    if (c->bos_id >= c->vocab_size)
        return lt_errf(err, LT_ERR_FORMAT, "%s: bos_token_id %d is outside vocab_size %d", path,
                       c->bos_id, c->vocab_size);
    if (c->eos_id >= c->vocab_size)
        return lt_errf(err, LT_ERR_FORMAT, "%s: eos_token_id %d is outside vocab_size %d", path,
                       c->eos_id, c->vocab_size);
    return LT_OK;
}

/* ---- entry point ---- */

/* Reads and parses path into *root (the caller deletes it). */
static int load_json(const char *path, cJSON **root, char *err) {
    char *text = NULL;
    size_t len = 0;
    int rc = lt_read_file(path, &text, &len, err);
    if (rc != LT_OK) return rc;
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    long at = end ? (long)(end - text) : -1;
    free(text);
    if (!*root) return lt_errf(err, LT_ERR_FORMAT, "%s: not valid JSON (near byte %ld)", path, at);
    return LT_OK;
}

int lt_model_config_from_hf_dir(const char *dir, lt_model_config_t *out, char *err) {
    char path[HF_PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/config.json", dir);
    if (n < 0 || (size_t)n >= sizeof path)
        return lt_errf(err, LT_ERR_RANGE, "%s: path too long", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) return lt_errf(err, LT_ERR_NOTFOUND, "%s: no such file", path);

    /* Work on a copy so that *out is untouched on error. */
    lt_model_config_t c;
    lt_model_config_defaults(&c);
    cJSON *root = NULL;
    int rc = load_json(path, &root, err);
    if (rc != LT_OK) return rc;
    rc = parse_config(path, root, &c, err);
    cJSON_Delete(root);
    if (rc != LT_OK) return rc;
    rc = validate(path, &c, err);
    if (rc != LT_OK) return rc;

    n = snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (n < 0 || (size_t)n >= sizeof path)
        return lt_errf(err, LT_ERR_RANGE, "%s: path too long", dir);
    if (stat(path, &sb) == 0) {
        rc = load_json(path, &root, err);
        if (rc != LT_OK) return rc;
        rc = parse_generation(path, root, &c, err);
        cJSON_Delete(root);
        if (rc != LT_OK) return rc;
        rc = validate(path, &c, err);
        if (rc != LT_OK) return rc;
    }
    *out = c;
    return LT_OK;
}
