/*
 * model.c — builds a wk_model_t from a GGUF file or a Hugging Face directory.
 *
 * Both formats are reduced to one path: a configuration (from GGUF metadata or config.json) and a
 * tensor lookup by name. Each weight is found under its format's name, its shape checked against
 * the configuration, and placed by the backend in its stored type — sliced for this rank when
 * tensor-parallel (column-parallel q/k/v/gate/up take a range of rows, used in place in the mapped
 * file; row-parallel o/down a range of columns, copied). Vectors (norms, biases, rotary factors)
 * are converted to fp32.
 */
#include "worker.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "kernels.h"
#include "lt.h"
#include "safetensors.h"

/* ---- tensor source: one of the two formats ---- */

typedef struct src {
    const char *path;
    lt_gguf_t *gguf; /* exactly one of gguf / st is set */
    wk_st_t *st;
} src_t;

static const lt_tensor_t *src_find(const src_t *s, const char *name) {
    return s->gguf ? lt_gguf_find_tensor(s->gguf, name) : wk_st_find_tensor(s->st, name);
}

/* ---- buffers ---- */

/* Backend memory of n bytes owned by the model (released by wk_model_free). */
static void *model_alloc(wk_model_t *m, size_t n) {
    if (m->n_bufs == m->cap_bufs) {
        int cap = m->cap_bufs ? m->cap_bufs * 2 : 64;
        void **nb = realloc(m->bufs, (size_t)cap * sizeof *nb);
        if (!nb) return NULL;
        m->bufs = nb;
        m->cap_bufs = cap;
    }
    void *p = m->be->ops->alloc(m->be, n);
    if (!p) return NULL;
    m->bufs[m->n_bufs++] = p;
    m->weight_copy_bytes += n;
    return p;
}

/* ops->prepare on a weight the model allocated (model_alloc): where the backend moved it into new
 * memory, that memory takes the old one's place among the model's buffers. */
static int model_prepare(wk_model_t *m, wk_tensor_t *w, char *err) {
    if (!m->be->ops->prepare) return LT_OK;
    const void *before = w->data;
    int rc = m->be->ops->prepare(m->be, w, err);
    if (w->data != before)
        for (int i = m->n_bufs - 1; i >= 0; i--)
            if (m->bufs[i] == before) {
                m->bufs[i] = (void *)w->data;
                break;
            }
    return rc;
}

static int model_keep(wk_model_t *m, void *owned) {
    if (!owned) return LT_OK;
    if (m->n_bufs == m->cap_bufs) {
        int cap = m->cap_bufs ? m->cap_bufs * 2 : 64;
        void **nb = realloc(m->bufs, (size_t)cap * sizeof *nb);
        if (!nb) {
            m->be->ops->release(m->be, owned);
            return LT_ERR_NOMEM;
        }
        m->bufs = nb;
        m->cap_bufs = cap;
    }
    m->bufs[m->n_bufs++] = owned;
    return LT_OK;
}

/* ---- loading one tensor ---- */

/* Finds tensor `name` and checks that its shape is (rows, cols) — ne = {cols, rows}, or {cols}
 * when rows == 0 for a vector — and that its data covers that shape. */
static int find_checked(const src_t *s, const char *name, int64_t rows, int64_t cols,
                        const lt_tensor_t **out, char *err) {
    const lt_tensor_t *t = src_find(s, name);
    if (!t) return lt_errf(err, LT_ERR_NOTFOUND, "%s: missing tensor '%s'", s->path, name);
    bool is_vec = rows == 0;
    bool ok = is_vec ? (t->n_dims == 1 && t->ne[0] == cols)
                     : (t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows);
    if (!ok) {
        char shape[96];
        int n = 0;
        for (int i = 0; i < t->n_dims && n < (int)sizeof shape - 24; i++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%lld", i ? ", " : "",
                          (long long)t->ne[i]);
        if (is_vec)
            return lt_errf(err, LT_ERR_FORMAT,
                           "%s: tensor '%s' has shape [%s], expected [%lld] from the config",
                           s->path, name, shape, (long long)cols);
        return lt_errf(err, LT_ERR_FORMAT,
                       "%s: tensor '%s' has shape [%s], expected [%lld, %lld] from the config",
                       s->path, name, shape, (long long)cols, (long long)rows);
    }
    int64_t row_bytes = lt_dtype_nbytes(t->type, cols);
    if (row_bytes < 0 || (uint64_t)row_bytes * (uint64_t)(is_vec ? 1 : rows) > t->nbytes)
        return lt_errf(err, LT_ERR_FORMAT, "%s: tensor '%s' of type %s has an invalid size",
                       s->path, name, lt_dtype_name(t->type));
    *out = t;
    return LT_OK;
}

/* Dequantizes columns [col0, col0 + ncols) of rows [row0, row0 + nrows) of t (cols per row) into
 * host dst (nrows, ncols). */
static int dequant_slice(const src_t *s, const char *name, const lt_tensor_t *t, int64_t cols,
                         int64_t row0, int64_t nrows, int64_t col0, int64_t ncols, float *dst,
                         char *err) {
    int64_t row_bytes = lt_dtype_nbytes(t->type, cols);
    float *row = malloc((size_t)cols * sizeof(float));
    if (!row) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", s->path);
    for (int64_t r = 0; r < nrows; r++) {
        if (kn_dequantize(t->type, (const uint8_t *)t->data + (row0 + r) * row_bytes, row, cols)) {
            free(row);
            return lt_errf(err, LT_ERR_UNSUPPORTED, "%s: cannot read '%s' of type %s", s->path,
                           name, lt_dtype_name(t->type));
        }
        memcpy(dst + r * ncols, row + col0, (size_t)ncols * sizeof(float));
    }
    free(row);
    return LT_OK;
}

/* A vector (n) of any type, as fp32 backend memory: elements [i0, i0 + ni). */
static int load_vec_slice(wk_model_t *m, const src_t *s, const char *name, int64_t n, int64_t i0,
                          int64_t ni, const float **out, char *err) {
    const lt_tensor_t *t;
    int rc = find_checked(s, name, 0, n, &t, err);
    if (rc) return rc;
    float *host = malloc((size_t)ni * sizeof(float));
    if (!host) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", s->path);
    if ((rc = dequant_slice(s, name, t, n, 0, 1, i0, ni, host, err))) {
        free(host);
        return rc;
    }
    float *dst = model_alloc(m, (size_t)ni * sizeof(float));
    if (dst) m->be->ops->upload(m->be, dst, host, (size_t)ni * sizeof(float));
    free(host);
    if (!dst) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory loading '%s'", s->path, name);
    *out = dst;
    return LT_OK;
}

static int load_vec(wk_model_t *m, const src_t *s, const char *name, int64_t n, const float **out,
                    char *err) {
    return load_vec_slice(m, s, name, n, 0, n, out, err);
}

/* A copy of the sub-matrix [row0, +nrows) x [col0, +ncols) in new backend memory: the stored
 * blocks where the slice falls on block boundaries and the backend reads the type, else fp32. */
static int load_copy(wk_model_t *m, const src_t *s, const char *name, const lt_tensor_t *t,
                     int64_t cols, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols,
                     wk_tensor_t *out, char *err) {
    int be = lt_dtype_block_elems(t->type);
    bool keep =
        be > 0 && col0 % be == 0 && ncols % be == 0 && m->be->ops->supports(m->be, t->type, ncols);
    int type = keep ? t->type : LT_DTYPE_F32;
    size_t sub = (size_t)lt_dtype_nbytes(type, ncols), bytes = sub * (size_t)nrows;
    uint8_t *host = malloc(bytes ? bytes : 1);
    if (!host) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory loading '%s'", s->path, name);
    int rc = LT_OK;
    if (keep) {
        size_t rb = (size_t)lt_dtype_nbytes(t->type, cols),
               off = (size_t)lt_dtype_nbytes(type, col0);
        for (int64_t r = 0; r < nrows; r++)
            memcpy(host + r * sub, (const uint8_t *)t->data + (row0 + r) * rb + off, sub);
    } else {
        rc = dequant_slice(s, name, t, cols, row0, nrows, col0, ncols, (float *)host, err);
    }
    void *dst = rc ? NULL : model_alloc(m, bytes);
    if (dst) m->be->ops->upload(m->be, dst, host, bytes);
    free(host);
    if (rc) return rc;
    if (!dst) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory loading '%s'", s->path, name);
    *out = (wk_tensor_t){dst, type, nrows, ncols, sub};
    return model_prepare(m, out, err);
}

/* Loads the sub-matrix [row0, +nrows) x [col0, +ncols) of tensor `name`, whose full shape must be
 * (rows, cols). Whole rows of a type the backend reads are used in place (the CPU backend points
 * into the mapped file); column slices and other types are copied. */
static int load_slice(wk_model_t *m, const src_t *s, const char *name, int64_t rows, int64_t cols,
                      int64_t row0, int64_t nrows, int64_t col0, int64_t ncols, wk_tensor_t *out,
                      char *err) {
    const lt_tensor_t *t;
    int rc = find_checked(s, name, rows, cols, &t, err);
    if (rc) return rc;
    m->weight_bytes += (size_t)lt_dtype_nbytes(t->type, ncols) * (size_t)nrows;
    if (col0 != 0 || ncols != cols || !m->be->ops->supports(m->be, t->type, cols))
        return load_copy(m, s, name, t, cols, row0, nrows, col0, ncols, out, err);
    void *owned = NULL;
    if ((rc = m->be->ops->weight(m->be, t->data, t->type, cols, row0, nrows, out, &owned, err)))
        return rc;
    if (model_keep(m, owned)) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", s->path);
    return LT_OK;
}

/* Rows [r0, r0+nr) of a (rows, cols) matrix: column parallel. */
static int load_rows(wk_model_t *m, const src_t *s, const char *name, int64_t rows, int64_t cols,
                     int64_t r0, int64_t nr, wk_tensor_t *out, char *err) {
    return load_slice(m, s, name, rows, cols, r0, nr, 0, cols, out, err);
}

/* Columns [c0, c0+nc) of a (rows, cols) matrix: row parallel. */
static int load_cols(wk_model_t *m, const src_t *s, const char *name, int64_t rows, int64_t cols,
                     int64_t c0, int64_t nc, wk_tensor_t *out, char *err) {
    return load_slice(m, s, name, rows, cols, 0, rows, c0, nc, out, err);
}

/* ---- configuration from GGUF metadata ---- */

static int gguf_u32(const lt_gguf_t *g, const char *path, const char *arch, const char *suffix,
                    bool required, int *out, char *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    int rc = lt_gguf_get_u32(g, key, &v);
    if (rc == LT_ERR_NOTFOUND && !required) return LT_OK;
    if (rc == LT_ERR_NOTFOUND)
        return lt_errf(err, LT_ERR_FORMAT, "%s: missing key '%s'", path, key);
    if (rc || v == 0 || v > (1u << 30))
        return lt_errf(err, LT_ERR_FORMAT, "%s: key '%s' is not a valid positive integer", path,
                       key);
    *out = (int)v;
    return LT_OK;
}

static int gguf_f32(const lt_gguf_t *g, const char *path, const char *arch, const char *suffix,
                    float *out, char *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    float v;
    int rc = lt_gguf_get_f32(g, key, &v);
    if (rc == LT_ERR_NOTFOUND) return LT_OK;
    if (rc || !isfinite(v))
        return lt_errf(err, LT_ERR_FORMAT, "%s: key '%s' is not a number", path, key);
    *out = v;
    return LT_OK;
}

static int config_from_gguf(const lt_gguf_t *g, const char *path, lt_model_config_t *c, char *err) {
    lt_model_config_defaults(c);
    const char *a;
    size_t alen;
    if (lt_gguf_get_str(g, "general.architecture", &a, &alen) != LT_OK)
        return lt_errf(err, LT_ERR_FORMAT, "%s: missing key 'general.architecture'", path);
    char arch[32];
    if (alen >= sizeof arch) alen = sizeof arch - 1;
    memcpy(arch, a, alen);
    arch[alen] = '\0';
    if (strcmp(arch, "llama") == 0 || strcmp(arch, "mistral") == 0) {
        c->arch = LT_ARCH_LLAMA;
        c->rope_neox = false; /* GGUF llama q/k rows are permuted for adjacent-pair rotation */
    } else if (strcmp(arch, "qwen2") == 0) {
        c->arch = LT_ARCH_QWEN2;
        c->qkv_bias = true;
        c->rope_neox = true;
    } else if (strcmp(arch, "qwen3") == 0) {
        c->arch = LT_ARCH_QWEN3;
        c->qk_norm = true;
        c->rope_neox = true;
    } else {
        return lt_errf(err, LT_ERR_UNSUPPORTED, "%s: unsupported architecture '%s'", path, arch);
    }
    int rc;
    if ((rc = gguf_u32(g, path, arch, "block_count", true, &c->n_layer, err)) ||
        (rc = gguf_u32(g, path, arch, "embedding_length", true, &c->dim, err)) ||
        (rc = gguf_u32(g, path, arch, "feed_forward_length", true, &c->hidden_dim, err)) ||
        (rc = gguf_u32(g, path, arch, "attention.head_count", true, &c->n_head, err)))
        return rc;
    c->n_kv_head = c->n_head;
    c->max_seq_len = 2048;
    if ((rc = gguf_u32(g, path, arch, "attention.head_count_kv", false, &c->n_kv_head, err)) ||
        (rc = gguf_u32(g, path, arch, "context_length", false, &c->max_seq_len, err)))
        return rc;
    c->head_dim = c->dim / c->n_head;
    if ((rc = gguf_u32(g, path, arch, "attention.key_length", false, &c->head_dim, err)) ||
        (rc = gguf_f32(g, path, arch, "attention.layer_norm_rms_epsilon", &c->norm_eps, err)) ||
        (rc = gguf_f32(g, path, arch, "rope.freq_base", &c->rope_theta, err)))
        return rc;
    int rope_dim = c->head_dim;
    if ((rc = gguf_u32(g, path, arch, "rope.dimension_count", false, &rope_dim, err))) return rc;
    if (rope_dim != c->head_dim)
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "%s: partial rotary embedding (%d of %d dims) is not supported", path,
                       rope_dim, c->head_dim);
    const char *st;
    size_t stlen;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (lt_gguf_get_str(g, key, &st, &stlen) == LT_OK) {
        if (stlen == 6 && memcmp(st, "linear", 6) == 0) {
            c->rope_scaling = LT_ROPE_SCALING_LINEAR;
            if ((rc = gguf_f32(g, path, arch, "rope.scaling.factor", &c->rope_factor, err)))
                return rc;
        } else if (!(stlen == 4 && memcmp(st, "none", 4) == 0)) {
            return lt_errf(err, LT_ERR_UNSUPPORTED, "%s: unsupported rope scaling '%.*s'", path,
                           (int)stlen, st);
        }
    }
    /* llama3-style scaling arrives as a rope_freqs tensor; see build_inv_freq. */
    const lt_tensor_t *tok = lt_gguf_find_tensor(g, "token_embd.weight");
    uint32_t v;
    snprintf(key, sizeof key, "%s.vocab_size", arch);
    if (lt_gguf_get_u32(g, key, &v) == LT_OK) {
        c->vocab_size = (int)v;
    } else if (tok && tok->n_dims == 2) {
        c->vocab_size = (int)tok->ne[1];
    } else {
        return lt_errf(err, LT_ERR_FORMAT, "%s: cannot determine the vocabulary size", path);
    }
    c->tie_embeddings = lt_gguf_find_tensor(g, "output.weight") == NULL;
    if (c->arch == LT_ARCH_QWEN2 || c->arch == LT_ARCH_QWEN3)
        c->qkv_bias = lt_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    if (lt_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v) == LT_OK) c->bos_id = (int)v;
    if (lt_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v) == LT_OK) c->eos_id = (int)v;
    return LT_OK;
}

/* ---- validation shared by both formats ---- */

static int config_validate(const lt_model_config_t *c, const char *path, int tp, char *err) {
    if (c->n_layer <= 0 || c->dim <= 0 || c->hidden_dim <= 0 || c->n_head <= 0 ||
        c->n_kv_head <= 0 || c->head_dim <= 0 || c->vocab_size <= 0)
        return lt_errf(err, LT_ERR_FORMAT, "%s: model dimensions must be positive", path);
    if (c->n_head % c->n_kv_head)
        return lt_errf(err, LT_ERR_FORMAT, "%s: %d heads is not a multiple of %d kv heads", path,
                       c->n_head, c->n_kv_head);
    if (c->head_dim % 2)
        return lt_errf(err, LT_ERR_FORMAT, "%s: head_dim %d is odd", path, c->head_dim);
    if (tp < 1 || c->n_head % tp || c->n_kv_head % tp || c->hidden_dim % tp)
        return lt_errf(err, LT_ERR_INVAL,
                       "%s: tensor-parallel size %d must divide heads (%d), kv heads (%d) and the "
                       "MLP size (%d)",
                       path, tp, c->n_head, c->n_kv_head, c->hidden_dim);
    return LT_OK;
}

/* ---- rotary frequencies ---- */

static int build_inv_freq(wk_model_t *m, const src_t *s, char *err) {
    const lt_model_config_t *c = &m->cfg;
    int half = c->head_dim / 2;
    float inv_freq[half];
    m->rope.attn_factor = 1.0f;
    m->rope.neox = c->rope_neox;
    for (int i = 0; i < half; i++)
        inv_freq[i] = (float)(1.0 / pow((double)c->rope_theta, (2.0 * i) / c->head_dim));
    if (c->rope_scaling == LT_ROPE_SCALING_LINEAR && c->rope_factor > 0) {
        for (int i = 0; i < half; i++) inv_freq[i] /= c->rope_factor;
    } else if (c->rope_scaling == LT_ROPE_SCALING_LLAMA3) {
        /* Llama 3.1: long wavelengths slowed by `factor`, short ones kept, smooth in between. */
        double lo_wl = c->rope_orig_max_pos / c->rope_low_freq_factor;
        double hi_wl = c->rope_orig_max_pos / c->rope_high_freq_factor;
        for (int i = 0; i < half; i++) {
            double f = inv_freq[i], wl = 2.0 * M_PI / f;
            if (wl > lo_wl) {
                f /= c->rope_factor;
            } else if (wl >= hi_wl) {
                double smooth = (c->rope_orig_max_pos / wl - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
            }
            inv_freq[i] = (float)f;
        }
    }
    /* GGUF carries llama3 scaling as per-frequency divisors in rope_freqs.weight. */
    const lt_tensor_t *rf = s ? src_find(s, "rope_freqs.weight") : NULL;
    if (rf) {
        float fac[half];
        const lt_tensor_t *t;
        int rc = find_checked(s, "rope_freqs.weight", 0, half, &t, err);
        if (rc || (rc = dequant_slice(s, "rope_freqs.weight", t, half, 0, 1, 0, half, fac, err)))
            return rc;
        for (int i = 0; i < half; i++) inv_freq[i] /= fac[i];
    }
    float *dst = model_alloc(m, sizeof inv_freq);
    if (!dst) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", m->path);
    m->be->ops->upload(m->be, dst, inv_freq, sizeof inv_freq);
    m->rope.inv_freq = dst;
    return LT_OK;
}

/* ---- weights ---- */

typedef struct names {
    const char *tok_embd, *out_norm, *output;
    const char *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *q_norm, *k_norm, *wo, *ffn_norm, *gate,
        *up, *down; /* printf formats taking the layer index */
} names_t;

static const names_t GGUF_NAMES = {
    "token_embd.weight",         "output_norm.weight",        "output.weight",
    "blk.%d.attn_norm.weight",   "blk.%d.attn_q.weight",      "blk.%d.attn_k.weight",
    "blk.%d.attn_v.weight",      "blk.%d.attn_q.bias",        "blk.%d.attn_k.bias",
    "blk.%d.attn_v.bias",        "blk.%d.attn_q_norm.weight", "blk.%d.attn_k_norm.weight",
    "blk.%d.attn_output.weight", "blk.%d.ffn_norm.weight",    "blk.%d.ffn_gate.weight",
    "blk.%d.ffn_up.weight",      "blk.%d.ffn_down.weight",
};

static const names_t HF_NAMES = {
    "model.embed_tokens.weight",
    "model.norm.weight",
    "lm_head.weight",
    "model.layers.%d.input_layernorm.weight",
    "model.layers.%d.self_attn.q_proj.weight",
    "model.layers.%d.self_attn.k_proj.weight",
    "model.layers.%d.self_attn.v_proj.weight",
    "model.layers.%d.self_attn.q_proj.bias",
    "model.layers.%d.self_attn.k_proj.bias",
    "model.layers.%d.self_attn.v_proj.bias",
    "model.layers.%d.self_attn.q_norm.weight",
    "model.layers.%d.self_attn.k_norm.weight",
    "model.layers.%d.self_attn.o_proj.weight",
    "model.layers.%d.post_attention_layernorm.weight",
    "model.layers.%d.mlp.gate_proj.weight",
    "model.layers.%d.mlp.up_proj.weight",
    "model.layers.%d.mlp.down_proj.weight",
};

#define LNAME(fmt) (snprintf(name, sizeof name, (fmt), l), name)

static int load_weights(wk_model_t *m, const src_t *s, const names_t *nm, char *err) {
    const lt_model_config_t *c = &m->cfg;
    int hd = c->head_dim, r = m->tp_rank;
    int64_t q_rows = (int64_t)c->n_head * hd, kv_rows = (int64_t)c->n_kv_head * hd;
    int64_t q_loc = (int64_t)m->n_head_local * hd, kv_loc = (int64_t)m->n_kv_head_local * hd;
    int64_t h_loc = m->hidden_local;
    int rc;
    if ((rc = load_rows(m, s, nm->tok_embd, c->vocab_size, c->dim, 0, c->vocab_size, &m->tok_embd,
                        err)) ||
        (rc = load_vec(m, s, nm->out_norm, c->dim, &m->out_norm, err)))
        return rc;
    if (c->tie_embeddings) {
        m->output = m->tok_embd;
    } else if ((rc = load_rows(m, s, nm->output, c->vocab_size, c->dim, 0, c->vocab_size,
                               &m->output, err))) {
        return rc;
    }
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", s->path);
    char name[160];
    for (int l = 0; l < c->n_layer; l++) {
        wk_layer_t *L = &m->layers[l];
        if ((rc = load_vec(m, s, LNAME(nm->attn_norm), c->dim, &L->attn_norm, err)) ||
            (rc = load_rows(m, s, LNAME(nm->wq), q_rows, c->dim, r * q_loc, q_loc, &L->wq, err)) ||
            (rc = load_rows(m, s, LNAME(nm->wk), kv_rows, c->dim, r * kv_loc, kv_loc, &L->wk,
                            err)) ||
            (rc = load_rows(m, s, LNAME(nm->wv), kv_rows, c->dim, r * kv_loc, kv_loc, &L->wv,
                            err)) ||
            (rc = load_cols(m, s, LNAME(nm->wo), c->dim, q_rows, r * q_loc, q_loc, &L->wo, err)) ||
            (rc = load_vec(m, s, LNAME(nm->ffn_norm), c->dim, &L->ffn_norm, err)) ||
            (rc = load_rows(m, s, LNAME(nm->gate), c->hidden_dim, c->dim, r * h_loc, h_loc,
                            &L->w_gate, err)) ||
            (rc = load_rows(m, s, LNAME(nm->up), c->hidden_dim, c->dim, r * h_loc, h_loc, &L->w_up,
                            err)) ||
            (rc = load_cols(m, s, LNAME(nm->down), c->dim, c->hidden_dim, r * h_loc, h_loc,
                            &L->w_down, err)))
            return rc;
        if (c->qkv_bias) {
            if ((rc = load_vec_slice(m, s, LNAME(nm->bq), q_rows, r * q_loc, q_loc, &L->bq, err)) ||
                (rc = load_vec_slice(m, s, LNAME(nm->bk), kv_rows, r * kv_loc, kv_loc, &L->bk,
                                     err)) ||
                (rc =
                     load_vec_slice(m, s, LNAME(nm->bv), kv_rows, r * kv_loc, kv_loc, &L->bv, err)))
                return rc;
        }
        if (c->qk_norm) {
            if ((rc = load_vec(m, s, LNAME(nm->q_norm), hd, &L->q_norm, err)) ||
                (rc = load_vec(m, s, LNAME(nm->k_norm), hd, &L->k_norm, err)))
                return rc;
        }
    }
    return LT_OK;
}

/* ---- public ---- */

int wk_model_load(const char *path, const wk_load_opts_t *opts, wk_model_t **out, char *err) {
    *out = NULL;
    wk_model_t *m = calloc(1, sizeof *m);
    if (!m) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    snprintf(m->path, sizeof m->path, "%s", path);
    m->tp_rank = opts ? opts->tp_rank : 0;
    m->tp_size = opts ? opts->tp_size : 1;
    src_t s = {.path = path};
    if (opts && opts->device == WK_DEVICE_CUDA) {
        m->be = wk_backend_cuda_create(opts->cuda_device, err);
        if (!m->be) {
            free(m);
            return LT_ERR_UNSUPPORTED;
        }
    } else if (!(m->be = wk_backend_cpu_create())) {
        free(m);
        return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    }
    int rc;
    const names_t *nm;
    if (lt_is_dir(path)) {
        if ((rc = lt_model_config_from_hf_dir(path, &m->cfg, err)) ||
            (rc = wk_st_open_dir(path, &s.st, err)))
            goto fail;
        nm = &HF_NAMES;
    } else {
        if ((rc = lt_gguf_open(path, &s.gguf, err)) ||
            (rc = config_from_gguf(s.gguf, path, &m->cfg, err)))
            goto fail;
        nm = &GGUF_NAMES;
    }
    if ((rc = config_validate(&m->cfg, path, m->tp_size, err))) goto fail;
    if (m->tp_rank < 0 || m->tp_rank >= m->tp_size) {
        rc = lt_errf(err, LT_ERR_INVAL, "tensor-parallel rank %d out of range", m->tp_rank);
        goto fail;
    }
    m->n_head_local = m->cfg.n_head / m->tp_size;
    m->n_kv_head_local = m->cfg.n_kv_head / m->tp_size;
    m->hidden_local = m->cfg.hidden_dim / m->tp_size;
    m->gguf = s.gguf; /* the weights point into the mapping: it lives as long as the model */
    m->st = s.st;
    if ((rc = load_weights(m, &s, nm, err)) || (rc = build_inv_freq(m, &s, err))) goto fail;
    *out = m;
    return LT_OK;
fail:
    m->gguf = s.gguf;
    m->st = s.st;
    wk_model_free(&m);
    return rc;
}

void wk_model_free(wk_model_t **mp) {
    wk_model_t *m = *mp;
    if (!m) return;
    for (int i = 0; i < m->n_bufs; i++) m->be->ops->release(m->be, m->bufs[i]);
    free(m->bufs);
    free(m->layers);
    wk_backend_destroy(&m->be);
    lt_gguf_t *g = m->gguf;
    wk_st_t *st = m->st;
    if (g) lt_gguf_close(&g);
    if (st) wk_st_close(&st);
    free(m);
    *mp = NULL;
}

/* ---- random weights, no file ---- */

/* The next value of the xorshift state *s. */
static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

/* Fills one block of `type` (block_elems elements) at dst with random values of spread about
 * `scale` (a uniform weight in [-scale, scale]; Q4_K about twice that); rng is a xorshift
 * state. */
static void random_block(uint8_t *dst, int type, float scale, uint64_t *rng) {
    switch (type) {
    case LT_DTYPE_Q4_0:
    case LT_DTYPE_Q4_1: { /* d·q (+ m): 4-bit q, offset -8·d */
        uint16_t d = lt_f32_to_f16(scale / 8.0f), mn = lt_f32_to_f16(-scale);
        memcpy(dst, &d, 2);
        if (type == LT_DTYPE_Q4_1) memcpy(dst + 2, &mn, 2);
        uint8_t *q = dst + (type == LT_DTYPE_Q4_1 ? 4 : 2);
        for (int i = 0; i < 16; i++) q[i] = (uint8_t)rnd(rng);
        break;
    }
    case LT_DTYPE_Q8_0: {
        uint16_t d = lt_f32_to_f16(scale / 127.0f);
        memcpy(dst, &d, 2);
        for (int i = 0; i < 32; i++) dst[2 + i] = (uint8_t)rnd(rng);
        break;
    }
    case LT_DTYPE_Q4_K: { /* (d·sc)·q − dmin·m, 6-bit sc and m: within about ±2·scale */
        uint16_t d = lt_f32_to_f16(scale / 480.0f), dmin = lt_f32_to_f16(scale / 32.0f);
        memcpy(dst, &d, 2);
        memcpy(dst + 2, &dmin, 2);
        for (int i = 4; i < 144; i++) dst[i] = (uint8_t)rnd(rng);
        break;
    }
    case LT_DTYPE_F16:
    case LT_DTYPE_BF16:
    case LT_DTYPE_F32: {
        float f = ((float)(rnd(rng) >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * scale;
        if (type == LT_DTYPE_F32) {
            memcpy(dst, &f, 4);
        } else if (type == LT_DTYPE_F16) {
            uint16_t h = lt_f32_to_f16(f);
            memcpy(dst, &h, 2);
        } else {
            uint32_t u;
            memcpy(&u, &f, 4);
            uint16_t h = (uint16_t)(u >> 16);
            memcpy(dst, &h, 2);
        }
        break;
    }
    }
}

/* A matrix (rows, cols) of `type` in new backend memory: a pattern of random blocks made once on
 * the host (pat, pat_bytes: a whole number of blocks), uploaded over and over. */
static int random_matrix(wk_model_t *m, int type, int64_t rows, int64_t cols, const uint8_t *pat,
                         size_t pat_bytes, wk_tensor_t *out, char *err) {
    size_t row_bytes = (size_t)lt_dtype_nbytes(type, cols), n = row_bytes * (size_t)rows;
    uint8_t *dst = model_alloc(m, n);
    if (!dst)
        return lt_errf(err, LT_ERR_NOMEM, "random model: out of backend memory (%zu bytes)", n);
    for (size_t off = 0; off < n; off += pat_bytes)
        m->be->ops->upload(m->be, dst + off, pat, n - off < pat_bytes ? n - off : pat_bytes);
    *out = (wk_tensor_t){
        .data = dst, .type = type, .rows = rows, .cols = cols, .row_bytes = row_bytes};
    m->weight_bytes += n;
    return model_prepare(m, out, err);
}

static int random_ones(wk_model_t *m, int64_t n, const float **out, char *err) {
    float *host = malloc(sizeof(float) * (size_t)n), *dst = model_alloc(m, sizeof(float) * n);
    if (!host || !dst) {
        free(host);
        return lt_errf(err, LT_ERR_NOMEM, "random model: out of memory");
    }
    for (int64_t i = 0; i < n; i++) host[i] = 1.0f;
    m->be->ops->upload(m->be, dst, host, sizeof(float) * (size_t)n);
    free(host);
    *out = dst;
    return LT_OK;
}

int wk_model_random(const lt_model_config_t *cfg, int type, const wk_load_opts_t *opts,
                    uint64_t seed, wk_model_t **out, char *err) {
    *out = NULL;
    if (type != LT_DTYPE_Q4_0 && type != LT_DTYPE_Q4_1 && type != LT_DTYPE_Q8_0 &&
        type != LT_DTYPE_Q4_K && type != LT_DTYPE_F16 && type != LT_DTYPE_BF16 &&
        type != LT_DTYPE_F32)
        return lt_errf(err, LT_ERR_INVAL, "random model: type %s not supported",
                       lt_dtype_name(type));
    wk_model_t *m = calloc(1, sizeof *m);
    if (!m) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    m->cfg = *cfg;
    m->cfg.qkv_bias = m->cfg.qk_norm = false;
    snprintf(m->path, sizeof m->path, "(random %s)", lt_dtype_name(type));
    m->tp_rank = opts ? opts->tp_rank : 0;
    m->tp_size = opts ? opts->tp_size : 1;
    m->be = opts && opts->device == WK_DEVICE_CUDA ? wk_backend_cuda_create(opts->cuda_device, err)
                                                   : wk_backend_cpu_create();
    if (!m->be) {
        free(m);
        return opts && opts->device == WK_DEVICE_CUDA ? LT_ERR_UNSUPPORTED
                                                      : lt_errf(err, LT_ERR_NOMEM, "out of memory");
    }
    const lt_model_config_t *c = &m->cfg;
    int rc = config_validate(c, m->path, m->tp_size, err);
    m->n_head_local = c->n_head / m->tp_size;
    m->n_kv_head_local = c->n_kv_head / m->tp_size;
    m->hidden_local = c->hidden_dim / m->tp_size;
    int be = lt_dtype_block_elems(type);
    if (!rc && (c->dim % be || (m->n_head_local * c->head_dim) % be || m->hidden_local % be))
        rc = lt_errf(err, LT_ERR_INVAL,
                     "random model: %s needs the model's and each shard's input dimensions to be "
                     "multiples of %d (dim %d, hidden %d, heads x head_dim %d)",
                     lt_dtype_name(type), be, c->dim, m->hidden_local,
                     m->n_head_local * c->head_dim);
    size_t blk = lt_dtype_block_bytes(type), pat_bytes = blk * 65536;
    uint8_t *pat = malloc(pat_bytes);
    if (!rc && !pat) rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
    if (!rc) {
        uint64_t rng = seed * 0x9E3779B97F4A7C15ull | 1;
        for (size_t off = 0; off < pat_bytes; off += blk)
            random_block(pat + off, type, 0.03f, &rng);
    }
    int64_t hd = c->head_dim, q_loc = m->n_head_local * hd, kv_loc = m->n_kv_head_local * hd;
    if (!rc && !(m->layers = calloc((size_t)c->n_layer, sizeof *m->layers)))
        rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
    if (!rc) rc = random_matrix(m, type, c->vocab_size, c->dim, pat, pat_bytes, &m->tok_embd, err);
    if (!rc) rc = random_ones(m, c->dim, &m->out_norm, err);
    if (!rc && c->tie_embeddings)
        m->output = m->tok_embd;
    else if (!rc)
        rc = random_matrix(m, type, c->vocab_size, c->dim, pat, pat_bytes, &m->output, err);
    for (int l = 0; !rc && l < c->n_layer; l++) {
        wk_layer_t *L = &m->layers[l];
        if ((rc = random_ones(m, c->dim, &L->attn_norm, err)) ||
            (rc = random_ones(m, c->dim, &L->ffn_norm, err)) ||
            (rc = random_matrix(m, type, q_loc, c->dim, pat, pat_bytes, &L->wq, err)) ||
            (rc = random_matrix(m, type, kv_loc, c->dim, pat, pat_bytes, &L->wk, err)) ||
            (rc = random_matrix(m, type, kv_loc, c->dim, pat, pat_bytes, &L->wv, err)) ||
            (rc = random_matrix(m, type, c->dim, q_loc, pat, pat_bytes, &L->wo, err)) ||
            (rc = random_matrix(m, type, m->hidden_local, c->dim, pat, pat_bytes, &L->w_gate,
                                err)) ||
            (rc = random_matrix(m, type, m->hidden_local, c->dim, pat, pat_bytes, &L->w_up, err)) ||
            (rc = random_matrix(m, type, c->dim, m->hidden_local, pat, pat_bytes, &L->w_down, err)))
            break;
    }
    free(pat);
    if (!rc) rc = build_inv_freq(m, NULL, err);
    if (rc) {
        wk_model_free(&m);
        return rc;
    }
    m->weight_copy_bytes = 0; /* every byte is a weight here, counted in weight_bytes */
    *out = m;
    return LT_OK;
}
