/*
 * gguf.c — reader for GGUF model files, versions 2 and 3, little-endian (see gguf.h).
 *
 * A file is: magic "GGUF", u32 version, u64 tensor count, u64 metadata count; the metadata
 * key/value table (key: u64 length + bytes; u32 value type; value); the tensor infos (name;
 * u32 n_dims; n_dims u64 dims, innermost first; u32 GGML type; u64 offset into the data section);
 * padding to `general.alignment` (default 32); the data section.
 *
 * The whole file is mmapped and parsed once with a bounds-checked cursor. Every count, length,
 * type and offset is checked against what is left of the file before it is used, so a corrupted
 * or hostile file yields one line "<path>: <problem>", never an out-of-bounds read or an
 * outsized allocation (see the limits below). Values stay in the mapping; only keys and tensor
 * names are copied (they must be NUL-terminated), plus one pointer per element of a string array so
 * that lt_gguf_get_arr_str is O(1) (a tokenizer reads every one of ~50k tokens).
 * Keys and tensor names are indexed by small open-addressing hash tables, which also catch
 * duplicates in linear time.
 */
#include "gguf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "lt.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gguf.c assumes a little-endian host");

/* ---- limits ---- */

/* Far above any real model (SmolLM2: 272 tensors, 33 keys; the largest MoE GGUFs hold a few
 * thousand tensors), yet small enough that what a hostile header can make us allocate up front
 * (the kv and tensor tables, sized by the counts) stays under 25 MB. Everything else allocated is
 * bounded by the bytes actually present. */
#define GGUF_MAX_TENSORS (1 << 18)
#define GGUF_MAX_KV      (1 << 16)
/* The format caps keys at 65535 bytes. Tensor names are 64 bytes in GGML; we allow more. */
#define GGUF_MAX_KEY           65535u
#define GGUF_MAX_NAME          256u
#define GGUF_DEFAULT_ALIGNMENT 32u

/* ---- types ---- */

typedef struct {
    char *key;            /* owned, NUL-terminated */
    uint32_t type;        /* lt_gguf_vtype_t */
    uint32_t elem_type;   /* arrays: the element type */
    uint64_t n;           /* strings: byte length; arrays: element count */
    const uint8_t *val;   /* scalars: the value; strings: the bytes; arrays: the first element */
    const uint8_t **strs; /* arrays of strings: (n) each element's u64 length field, owned */
} gguf_kv_t;

/* Open addressing over indices into kvs or tensors; -1 marks an empty slot. */
typedef struct {
    int *slot;
    size_t mask;
} gguf_index_t;

struct lt_gguf {
    char *path;
    lt_mmap_t map;
    uint32_t version;
    uint32_t alignment;
    gguf_kv_t *kvs;
    int n_kv;
    lt_tensor_t *tensors;
    int n_tensors;
    gguf_index_t kv_index;
    gguf_index_t tensor_index;
};

/* The parse cursor and where its errors go. */
typedef struct {
    const uint8_t *base;
    size_t size;
    size_t pos;
    const char *path;
    char *err;
} gguf_rd_t;

/* ---- errors ---- */

static int fail(const gguf_rd_t *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(const gguf_rd_t *r, int code, const char *fmt, ...) {
    char msg[LT_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lt_errf(r->err, code, "%s: %s", r->path, msg);
}

/* A name as it may appear in an error line: at most 64 bytes, control bytes replaced, so the
 * message stays one short line whatever the file holds. */
typedef struct {
    char s[72];
} shown_t;

static shown_t show(const char *name) {
    shown_t out;
    size_t i = 0;
    for (; name[i] && i < 64; i++) {
        unsigned char c = (unsigned char)name[i];
        out.s[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (name[i]) {
        memcpy(out.s + i, "...", 3);
        i += 3;
    }
    out.s[i] = '\0';
    return out;
}

/* ---- cursor ---- */

static size_t rd_left(const gguf_rd_t *r) {
    return r->size - r->pos;
}

static bool rd_u32(gguf_rd_t *r, uint32_t *v) {
    if (rd_left(r) < 4) return false;
    memcpy(v, r->base + r->pos, 4);
    r->pos += 4;
    return true;
}

static bool rd_u64(gguf_rd_t *r, uint64_t *v) {
    if (rd_left(r) < 8) return false;
    memcpy(v, r->base + r->pos, 8);
    r->pos += 8;
    return true;
}

/* ---- value types ---- */

static const char *vtype_name(uint32_t t) {
    static const char *names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                  "int32",  "float32", "bool",   "string", "array",
                                  "uint64", "int64",   "float64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Bytes of a fixed-size value type; 0 for string, array and unknown types. */
static size_t vtype_size(uint32_t t) {
    switch (t) {
    case LT_GGUF_UINT8:
    case LT_GGUF_INT8:
    case LT_GGUF_BOOL: return 1;
    case LT_GGUF_UINT16:
    case LT_GGUF_INT16: return 2;
    case LT_GGUF_UINT32:
    case LT_GGUF_INT32:
    case LT_GGUF_FLOAT32: return 4;
    case LT_GGUF_UINT64:
    case LT_GGUF_INT64:
    case LT_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static bool vtype_known(uint32_t t) {
    return t <= LT_GGUF_FLOAT64;
}

/* ---- name index ---- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int index_init(gguf_index_t *ix, int n) {
    size_t cap = 8;
    while (cap < 2 * (size_t)n) cap *= 2;
    ix->slot = malloc(cap * sizeof *ix->slot);
    if (!ix->slot) return LT_ERR_NOMEM;
    memset(ix->slot, 0xff, cap * sizeof *ix->slot); /* all -1 */
    ix->mask = cap - 1;
    return LT_OK;
}

/* Names are reached through a stride so one index serves both kvs and tensors (the name is the
 * first member of either struct). */
static const char *name_at(const void *items, size_t stride, int i) {
    return *(char *const *)(const void *)((const char *)items + (size_t)i * stride);
}

/* Slot holding name, or the empty slot where it would go. The table is never full: it has at
 * least twice as many slots as entries. */
static size_t index_slot(const gguf_index_t *ix, const void *items, size_t stride,
                         const char *name) {
    size_t h = hash_str(name) & ix->mask;
    while (ix->slot[h] >= 0 && strcmp(name_at(items, stride, ix->slot[h]), name) != 0)
        h = (h + 1) & ix->mask;
    return h;
}

/* Index of name, or -1. */
static int index_find(const gguf_index_t *ix, const void *items, size_t stride, const char *name) {
    return ix->slot ? ix->slot[index_slot(ix, items, stride, name)] : -1;
}

/* Records item idx under its name; returns the index already there (a duplicate) or -1. */
static int index_insert(gguf_index_t *ix, const void *items, size_t stride, int idx) {
    size_t h = index_slot(ix, items, stride, name_at(items, stride, idx));
    if (ix->slot[h] >= 0) return ix->slot[h];
    ix->slot[h] = idx;
    return -1;
}

/* ---- metadata ---- */

/* Reads a u64-length string; *s points into the mapping. what names it in errors. */
static int rd_str(gguf_rd_t *r, const uint8_t **s, uint64_t *len, const char *what) {
    if (!rd_u64(r, len)) return fail(r, LT_ERR_FORMAT, "truncated in %s", what);
    if (*len > rd_left(r))
        return fail(r, LT_ERR_FORMAT,
                    "%s: string length %llu runs past end of file (%zu bytes left)", what,
                    (unsigned long long)*len, rd_left(r));
    *s = r->base + r->pos;
    r->pos += (size_t)*len;
    return LT_OK;
}

/* Copies a key or tensor name into a NUL-terminated string, rejecting embedded NULs. */
static int dup_name(gguf_rd_t *r, const uint8_t *s, uint64_t len, const char *what, char **out) {
    if (memchr(s, 0, (size_t)len))
        return fail(r, LT_ERR_FORMAT, "%s: name contains a NUL byte", what);
    char *p = malloc((size_t)len + 1);
    if (!p) return fail(r, LT_ERR_NOMEM, "out of memory");
    memcpy(p, s, (size_t)len);
    p[len] = '\0';
    *out = p;
    return LT_OK;
}

static int parse_array(gguf_rd_t *r, gguf_kv_t *kv) {
    const shown_t k = show(kv->key);
    if (!rd_u32(r, &kv->elem_type) || !rd_u64(r, &kv->n))
        return fail(r, LT_ERR_FORMAT, "truncated in metadata (value of '%s')", k.s);
    if (kv->elem_type == LT_GGUF_ARRAY)
        return fail(r, LT_ERR_UNSUPPORTED, "key '%s': nested arrays are not supported", k.s);
    if (!vtype_known(kv->elem_type))
        return fail(r, LT_ERR_FORMAT, "key '%s': array has unknown element type %u", k.s,
                    kv->elem_type);
    kv->val = r->base + r->pos;
    if (kv->elem_type == LT_GGUF_STRING) {
        /* Each element needs at least its 8-byte length, which bounds the pointer table by the
         * file size before we allocate it. */
        if (kv->n > rd_left(r) / 8)
            return fail(r, LT_ERR_FORMAT, "key '%s': array of %llu strings runs past end of file",
                        k.s, (unsigned long long)kv->n);
        if (kv->n > 0) {
            kv->strs = malloc((size_t)kv->n * sizeof *kv->strs);
            if (!kv->strs) return fail(r, LT_ERR_NOMEM, "out of memory");
        }
        for (uint64_t i = 0; i < kv->n; i++) {
            /* rd_str inlined: a tokenizer has ~50k elements, too many to format a label for. */
            uint64_t len;
            kv->strs[i] = r->base + r->pos;
            if (!rd_u64(r, &len))
                return fail(r, LT_ERR_FORMAT, "truncated in metadata (element %llu of '%s')",
                            (unsigned long long)i, k.s);
            if (len > rd_left(r))
                return fail(r, LT_ERR_FORMAT,
                            "metadata (element %llu of '%s'): string length %llu runs past end "
                            "of file (%zu bytes left)",
                            (unsigned long long)i, k.s, (unsigned long long)len, rd_left(r));
            r->pos += (size_t)len;
        }
        return LT_OK;
    }
    size_t esz = vtype_size(kv->elem_type);
    if (kv->n > rd_left(r) / esz)
        return fail(r, LT_ERR_FORMAT, "key '%s': array of %llu %s values runs past end of file",
                    k.s, (unsigned long long)kv->n, vtype_name(kv->elem_type));
    size_t bytes = (size_t)kv->n * esz;
    if (kv->elem_type == LT_GGUF_BOOL) {
        for (size_t i = 0; i < bytes; i++)
            if (kv->val[i] > 1)
                return fail(r, LT_ERR_FORMAT, "key '%s': element %zu is not a bool (%u)", k.s, i,
                            kv->val[i]);
    }
    r->pos += bytes;
    return LT_OK;
}

static int parse_value(gguf_rd_t *r, gguf_kv_t *kv) {
    const shown_t k = show(kv->key);
    if (!rd_u32(r, &kv->type))
        return fail(r, LT_ERR_FORMAT, "truncated in metadata (type of '%s')", k.s);
    if (kv->type == LT_GGUF_ARRAY) return parse_array(r, kv);
    if (kv->type == LT_GGUF_STRING) {
        char what[128];
        snprintf(what, sizeof what, "metadata (value of '%s')", k.s);
        return rd_str(r, &kv->val, &kv->n, what);
    }
    size_t sz = vtype_size(kv->type);
    if (sz == 0) return fail(r, LT_ERR_FORMAT, "key '%s' has unknown value type %u", k.s, kv->type);
    if (rd_left(r) < sz)
        return fail(r, LT_ERR_FORMAT, "truncated in metadata (value of '%s')", k.s);
    kv->val = r->base + r->pos;
    if (kv->type == LT_GGUF_BOOL && kv->val[0] > 1)
        return fail(r, LT_ERR_FORMAT, "key '%s': bool value is %u", k.s, kv->val[0]);
    r->pos += sz;
    return LT_OK;
}

static int parse_kvs(gguf_rd_t *r, lt_gguf_t *g) {
    for (int i = 0; i < g->n_kv; i++) {
        gguf_kv_t *kv = &g->kvs[i];
        char what[64];
        snprintf(what, sizeof what, "metadata (key %d of %d)", i, g->n_kv);
        const uint8_t *s = NULL;
        uint64_t len = 0;
        int rc = rd_str(r, &s, &len, what);
        if (rc) return rc;
        if (len == 0) return fail(r, LT_ERR_FORMAT, "%s: empty key", what);
        if (len > GGUF_MAX_KEY)
            return fail(r, LT_ERR_FORMAT, "%s: key is %llu bytes long (limit %u)", what,
                        (unsigned long long)len, GGUF_MAX_KEY);
        if ((rc = dup_name(r, s, len, what, &kv->key))) return rc;
        if (index_insert(&g->kv_index, g->kvs, sizeof *g->kvs, i) >= 0)
            return fail(r, LT_ERR_FORMAT, "duplicate key '%s'", show(kv->key).s);
        if ((rc = parse_value(r, kv))) return rc;
    }
    return LT_OK;
}

/* ---- metadata getters ---- */

static const gguf_kv_t *kv_get(const lt_gguf_t *g, const char *key) {
    int i = lt_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kvs[i];
}

typedef struct {
    bool is_signed;
    int64_t s;
    uint64_t u;
} gguf_int_t;

/* Decodes an integer scalar; false if the value is not an integer. */
static bool kv_int(const gguf_kv_t *kv, gguf_int_t *v) {
    v->is_signed = false;
    v->s = 0;
    v->u = 0;
    switch (kv->type) {
    case LT_GGUF_UINT8: v->u = kv->val[0]; return true;
    case LT_GGUF_INT8:
        v->is_signed = true;
        v->s = (int8_t)kv->val[0];
        return true;
    case LT_GGUF_UINT16: {
        uint16_t x;
        memcpy(&x, kv->val, 2);
        v->u = x;
        return true;
    }
    case LT_GGUF_INT16: {
        int16_t x;
        memcpy(&x, kv->val, 2);
        v->is_signed = true;
        v->s = x;
        return true;
    }
    case LT_GGUF_UINT32: {
        uint32_t x;
        memcpy(&x, kv->val, 4);
        v->u = x;
        return true;
    }
    case LT_GGUF_INT32: {
        int32_t x;
        memcpy(&x, kv->val, 4);
        v->is_signed = true;
        v->s = x;
        return true;
    }
    case LT_GGUF_UINT64: memcpy(&v->u, kv->val, 8); return true;
    case LT_GGUF_INT64:
        memcpy(&v->s, kv->val, 8);
        v->is_signed = true;
        return true;
    default: return false;
    }
}

int lt_gguf_get_u32(const lt_gguf_t *g, const char *key, uint32_t *out) {
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return LT_ERR_NOTFOUND;
    gguf_int_t v;
    if (!kv_int(kv, &v)) return LT_ERR_FORMAT;
    if (v.is_signed ? (v.s < 0 || v.s > (int64_t)UINT32_MAX) : v.u > UINT32_MAX)
        return LT_ERR_FORMAT;
    *out = v.is_signed ? (uint32_t)v.s : (uint32_t)v.u;
    return LT_OK;
}

int lt_gguf_get_i64(const lt_gguf_t *g, const char *key, int64_t *out) {
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return LT_ERR_NOTFOUND;
    gguf_int_t v;
    if (!kv_int(kv, &v)) return LT_ERR_FORMAT;
    if (!v.is_signed && v.u > (uint64_t)INT64_MAX) return LT_ERR_FORMAT;
    *out = v.is_signed ? v.s : (int64_t)v.u;
    return LT_OK;
}

int lt_gguf_get_f32(const lt_gguf_t *g, const char *key, float *out) {
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return LT_ERR_NOTFOUND;
    if (kv->type == LT_GGUF_FLOAT32) {
        memcpy(out, kv->val, 4);
        return LT_OK;
    }
    if (kv->type == LT_GGUF_FLOAT64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
        return LT_OK;
    }
    gguf_int_t v;
    if (!kv_int(kv, &v)) return LT_ERR_FORMAT;
    *out = v.is_signed ? (float)v.s : (float)v.u;
    return LT_OK;
}

int lt_gguf_get_bool(const lt_gguf_t *g, const char *key, bool *out) {
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return LT_ERR_NOTFOUND;
    if (kv->type != LT_GGUF_BOOL) return LT_ERR_FORMAT;
    *out = kv->val[0] != 0;
    return LT_OK;
}

int lt_gguf_get_str(const lt_gguf_t *g, const char *key, const char **s, size_t *len) {
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return LT_ERR_NOTFOUND;
    if (kv->type != LT_GGUF_STRING) return LT_ERR_FORMAT;
    *s = (const char *)kv->val;
    *len = (size_t)kv->n;
    return LT_OK;
}

int lt_gguf_get_arr(const lt_gguf_t *g, const char *key, int *elem_type, uint64_t *n,
                    const void **data) {
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return LT_ERR_NOTFOUND;
    if (kv->type != LT_GGUF_ARRAY) return LT_ERR_FORMAT;
    if (elem_type) *elem_type = (int)kv->elem_type;
    if (n) *n = kv->n;
    if (data) *data = kv->elem_type == LT_GGUF_STRING ? NULL : kv->val;
    return LT_OK;
}

int lt_gguf_get_arr_str(const lt_gguf_t *g, const char *key, uint64_t i, const char **s,
                        size_t *len) {
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return LT_ERR_NOTFOUND;
    if (kv->type != LT_GGUF_ARRAY || kv->elem_type != LT_GGUF_STRING) return LT_ERR_FORMAT;
    if (i >= kv->n) return LT_ERR_RANGE;
    uint64_t l;
    memcpy(&l, kv->strs[i], 8); /* validated at open */
    *s = (const char *)kv->strs[i] + 8;
    *len = (size_t)l;
    return LT_OK;
}

int lt_gguf_n_kv(const lt_gguf_t *g) {
    return g->n_kv;
}

const char *lt_gguf_kv_key(const lt_gguf_t *g, int i) {
    return i >= 0 && i < g->n_kv ? g->kvs[i].key : NULL;
}

int lt_gguf_find_key(const lt_gguf_t *g, const char *key) {
    if (!key) return -1;
    return index_find(&g->kv_index, g->kvs, sizeof *g->kvs, key);
}

int lt_gguf_kv_type(const lt_gguf_t *g, int i) {
    return i >= 0 && i < g->n_kv ? (int)g->kvs[i].type : -1;
}

/* general.alignment: any integer that fits u32, non-zero, a power of two. */
static int read_alignment(gguf_rd_t *r, lt_gguf_t *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int i = lt_gguf_find_key(g, "general.alignment");
    if (i < 0) return LT_OK;
    uint32_t a;
    if (lt_gguf_get_u32(g, "general.alignment", &a) != LT_OK)
        return fail(r, LT_ERR_FORMAT, "general.alignment is not a 32-bit unsigned integer (%s)",
                    vtype_name(g->kvs[i].type));
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(r, LT_ERR_FORMAT, "general.alignment %u is not a non-zero power of two", a);
    g->alignment = a;
    return LT_OK;
}

/* ---- tensor infos ---- */

static int parse_tensor_info(gguf_rd_t *r, lt_gguf_t *g, int i, uint64_t *offset) {
    lt_tensor_t *t = &g->tensors[i];
    char what[64];
    snprintf(what, sizeof what, "tensor infos (tensor %d of %d)", i, g->n_tensors);
    const uint8_t *s = NULL;
    uint64_t len = 0;
    int rc = rd_str(r, &s, &len, what);
    if (rc) return rc;
    if (len == 0) return fail(r, LT_ERR_FORMAT, "%s: empty tensor name", what);
    if (len > GGUF_MAX_NAME)
        return fail(r, LT_ERR_FORMAT, "%s: tensor name is %llu bytes long (limit %u)", what,
                    (unsigned long long)len, GGUF_MAX_NAME);
    if ((rc = dup_name(r, s, len, what, &t->name))) return rc;
    const shown_t nm = show(t->name);
    if (index_insert(&g->tensor_index, g->tensors, sizeof *g->tensors, i) >= 0)
        return fail(r, LT_ERR_FORMAT, "duplicate tensor name '%s'", nm.s);

    uint32_t n_dims;
    if (!rd_u32(r, &n_dims))
        return fail(r, LT_ERR_FORMAT, "truncated in tensor infos (tensor '%s')", nm.s);
    if (n_dims < 1 || n_dims > LT_MAX_DIMS)
        return fail(r, LT_ERR_FORMAT, "tensor '%s' has %u dimensions (must be 1..%d)", nm.s, n_dims,
                    LT_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t nelems = 1;
    for (int d = 0; d < LT_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims) continue;
        uint64_t v;
        if (!rd_u64(r, &v))
            return fail(r, LT_ERR_FORMAT, "truncated in tensor infos (tensor '%s')", nm.s);
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return fail(r, LT_ERR_FORMAT, "tensor '%s' has invalid dimension ne[%d] = %llu", nm.s,
                        d, (unsigned long long)v);
        t->ne[d] = (int64_t)v;
        if (__builtin_mul_overflow(nelems, t->ne[d], &nelems))
            return fail(r, LT_ERR_FORMAT, "tensor '%s': element count overflows", nm.s);
    }
    uint32_t type;
    if (!rd_u32(r, &type) || !rd_u64(r, offset))
        return fail(r, LT_ERR_FORMAT, "truncated in tensor infos (tensor '%s')", nm.s);
    if (!lt_dtype_supported((int)type)) {
        const char *tn = lt_dtype_name((int)type);
        if (strcmp(tn, "unknown") == 0)
            return fail(r, LT_ERR_UNSUPPORTED, "tensor '%s' has unknown type %u", nm.s, type);
        return fail(r, LT_ERR_UNSUPPORTED, "tensor '%s' has unsupported type %s (%u)", nm.s, tn,
                    type);
    }
    t->type = (int)type;
    int be = lt_dtype_block_elems(t->type);
    if (t->ne[0] % be != 0)
        return fail(r, LT_ERR_FORMAT,
                    "tensor '%s': ne[0] = %lld is not a multiple of the %s block size %d", nm.s,
                    (long long)t->ne[0], lt_dtype_name(t->type), be);
    int64_t nbytes = lt_dtype_nbytes(t->type, nelems);
    if (nbytes < 0 || (uint64_t)nbytes > SIZE_MAX)
        return fail(r, LT_ERR_FORMAT, "tensor '%s' is too large", nm.s);
    t->nbytes = (size_t)nbytes;
    return LT_OK;
}

/* Places every tensor in the data section, which starts at the first aligned offset after the
 * tensor infos. */
static int place_tensors(gguf_rd_t *r, lt_gguf_t *g, const uint64_t *offsets) {
    uint64_t a = g->alignment, start;
    if (lt_add_ovf(r->pos, a - 1, &start)) return fail(r, LT_ERR_FORMAT, "data offset overflows");
    start &= ~(a - 1);
    for (int i = 0; i < g->n_tensors; i++) {
        lt_tensor_t *t = &g->tensors[i];
        const shown_t nm = show(t->name);
        if (offsets[i] % a != 0)
            return fail(r, LT_ERR_FORMAT,
                        "tensor '%s' offset %llu is not a multiple of the alignment %llu", nm.s,
                        (unsigned long long)offsets[i], (unsigned long long)a);
        uint64_t begin, end;
        if (lt_add_ovf(start, offsets[i], &begin) || lt_add_ovf(begin, t->nbytes, &end) ||
            end > r->size)
            return fail(r, LT_ERR_FORMAT,
                        "tensor '%s' extends past end of file (offset %llu, %zu bytes, file is "
                        "%zu bytes)",
                        nm.s, (unsigned long long)offsets[i], t->nbytes, r->size);
        t->data = r->base + begin;
    }
    return LT_OK;
}

static int parse_tensors(gguf_rd_t *r, lt_gguf_t *g) {
    uint64_t *offsets = calloc((size_t)g->n_tensors + 1, sizeof *offsets);
    if (!offsets) return fail(r, LT_ERR_NOMEM, "out of memory");
    int rc = LT_OK;
    for (int i = 0; i < g->n_tensors && rc == LT_OK; i++)
        rc = parse_tensor_info(r, g, i, &offsets[i]);
    if (rc == LT_OK) rc = place_tensors(r, g, offsets);
    free(offsets);
    return rc;
}

const lt_tensor_t *lt_gguf_tensor(const lt_gguf_t *g, int i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const lt_tensor_t *lt_gguf_find_tensor(const lt_gguf_t *g, const char *name) {
    if (!name) return NULL;
    int i = index_find(&g->tensor_index, g->tensors, sizeof *g->tensors, name);
    return i < 0 ? NULL : &g->tensors[i];
}

int lt_gguf_n_tensors(const lt_gguf_t *g) {
    return g->n_tensors;
}

/* ---- open / close ---- */

static int parse_header(gguf_rd_t *r, lt_gguf_t *g) {
    uint32_t magic;
    if (!rd_u32(r, &magic))
        return fail(r, LT_ERR_FORMAT, "truncated header (file is %zu bytes)", r->size);
    if (memcmp(&magic, "GGUF", 4) != 0)
        return fail(r, LT_ERR_FORMAT, "not a GGUF file (bad magic 0x%08x)", magic);
    if (!rd_u32(r, &g->version))
        return fail(r, LT_ERR_FORMAT, "truncated header (file is %zu bytes)", r->size);
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return fail(r, LT_ERR_UNSUPPORTED, "big-endian GGUF files are not supported");
    if (g->version != 2 && g->version != 3)
        return fail(r, LT_ERR_UNSUPPORTED, "unsupported GGUF version %u (need 2 or 3)", g->version);
    uint64_t n_tensors, n_kv;
    if (!rd_u64(r, &n_tensors) || !rd_u64(r, &n_kv))
        return fail(r, LT_ERR_FORMAT, "truncated header (file is %zu bytes)", r->size);
    if (n_kv > GGUF_MAX_KV)
        return fail(r, LT_ERR_FORMAT, "metadata count %llu is too large (limit %d)",
                    (unsigned long long)n_kv, GGUF_MAX_KV);
    if (n_tensors > GGUF_MAX_TENSORS)
        return fail(r, LT_ERR_FORMAT, "tensor count %llu is too large (limit %d)",
                    (unsigned long long)n_tensors, GGUF_MAX_TENSORS);
    g->n_kv = (int)n_kv;
    g->n_tensors = (int)n_tensors;
    return LT_OK;
}

static void gguf_free(lt_gguf_t *g) {
    if (!g) return;
    for (int i = 0; g->kvs && i < g->n_kv; i++) {
        free(g->kvs[i].key);
        free(g->kvs[i].strs);
    }
    for (int i = 0; g->tensors && i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    free(g->kv_index.slot);
    free(g->tensor_index.slot);
    lt_mmap_close(&g->map);
    free(g->path);
    free(g);
}

int lt_gguf_open(const char *path, lt_gguf_t **out, char *err) {
    *out = NULL;
    lt_gguf_t *g = calloc(1, sizeof *g);
    if (!g) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", path);
    size_t plen = strlen(path);
    g->path = malloc(plen + 1);
    if (!g->path) {
        free(g);
        return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(g->path, path, plen + 1);
    int rc = lt_mmap_open(path, &g->map, err);
    if (rc) {
        gguf_free(g);
        return rc;
    }
    gguf_rd_t r = {.base = g->map.data, .size = g->map.size, .path = path, .err = err};
    if ((rc = parse_header(&r, g))) goto fail;
    g->kvs = calloc((size_t)g->n_kv + 1, sizeof *g->kvs);
    g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
    if (!g->kvs || !g->tensors || index_init(&g->kv_index, g->n_kv) ||
        index_init(&g->tensor_index, g->n_tensors)) {
        rc = fail(&r, LT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = parse_kvs(&r, g)) || (rc = read_alignment(&r, g)) || (rc = parse_tensors(&r, g)))
        goto fail;
    *out = g;
    return LT_OK;
fail:
    gguf_free(g);
    return rc;
}

void lt_gguf_close(lt_gguf_t **g) {
    if (!g || !*g) return;
    gguf_free(*g);
    *g = NULL;
}

const char *lt_gguf_path(const lt_gguf_t *g) {
    return g->path;
}

uint32_t lt_gguf_version(const lt_gguf_t *g) {
    return g->version;
}
