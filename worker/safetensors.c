/*
 * safetensors.c — reader for Hugging Face safetensors files (see safetensors.h).
 *
 * A file is: u64 little-endian header length N, N bytes of JSON mapping tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional "__metadata__" object), then
 * the data region, which the offsets index. Every file is mmapped read-only and its header is
 * checked completely before any tensor is exposed: a truncated, corrupted or hostile file gives
 * one error line naming the file and the problem, never an out-of-bounds read.
 *
 * A directory is either sharded with model.safetensors.index.json (each shard named by its
 * "weight_map" is opened once and must hold the tensors the index assigns to it) or a plain set of
 * *.safetensors files opened in name order. Tensor names must be unique across all files; after
 * opening, the tensors are indexed by name (sorted) so lookups are a binary search.
 */
#define _GNU_SOURCE
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels.h"
#include "lt.h"

/* A header larger than this is not a model we would load; refusing it early bounds the JSON
 * parser's memory use on a corrupted length field. */
#define ST_MAX_HEADER (100u * 1024u * 1024u)
/* Largest integer a double (cJSON's number type) holds exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0
#define ST_PATH_MAX     4096

typedef struct st_file {
    char *path;
    lt_mmap_t map;
} st_file_t;

typedef struct st_name {
    const char *name; /* borrowed from tensors[idx] */
    int idx;
} st_name_t;

struct wk_st {
    st_file_t *files;
    int n_files, cap_files;
    lt_tensor_t *tensors;
    int *tensor_file; /* (n_tensors) index into files */
    int n_tensors, cap_tensors;
    st_name_t *by_name; /* (n_tensors) sorted by name */
};

/* ---- small helpers ---- */

static uint64_t read_u64_le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Element size and kn type of a safetensors dtype string; false if we do not handle it. */
static bool dtype_lookup(const char *s, int *type, uint64_t *elem_size) {
    if (strcmp(s, "F32") == 0) {
        *type = LT_DTYPE_F32;
        *elem_size = 4;
    } else if (strcmp(s, "F16") == 0) {
        *type = LT_DTYPE_F16;
        *elem_size = 2;
    } else if (strcmp(s, "BF16") == 0) {
        *type = LT_DTYPE_BF16;
        *elem_size = 2;
    } else {
        return false;
    }
    return true;
}

/* A JSON number that is a non-negative integer exactly representable as a double. */
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!isfinite(d) || d < 0 || d > ST_MAX_JSON_INT || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static int st_add_file(wk_st_t *st, const char *path, char *err) {
    if (st->n_files == st->cap_files) {
        int cap = st->cap_files ? st->cap_files * 2 : 4;
        st_file_t *nf = realloc(st->files, (size_t)cap * sizeof *nf);
        if (!nf) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", path);
        st->files = nf;
        st->cap_files = cap;
    }
    st_file_t *f = &st->files[st->n_files];
    f->path = strdup(path);
    if (!f->path) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", path);
    int rc = lt_mmap_open(path, &f->map, err);
    if (rc != LT_OK) {
        free(f->path);
        return rc;
    }
    st->n_files++;
    return LT_OK;
}

static lt_tensor_t *st_add_tensor(wk_st_t *st, int file, const char *name, char *err) {
    if (st->n_tensors == st->cap_tensors) {
        int cap = st->cap_tensors ? st->cap_tensors * 2 : 64;
        lt_tensor_t *nt = realloc(st->tensors, (size_t)cap * sizeof *nt);
        if (!nt) goto nomem;
        st->tensors = nt;
        int *nf = realloc(st->tensor_file, (size_t)cap * sizeof *nf);
        if (!nf) goto nomem;
        st->tensor_file = nf;
        st->cap_tensors = cap;
    }
    lt_tensor_t *t = &st->tensors[st->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) goto nomem;
    st->tensor_file[st->n_tensors] = file;
    st->n_tensors++;
    return t;
nomem:
    lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", st->files[file].path);
    return NULL;
}

/* ---- one file's header ---- */

/* Validates one header entry and fills t. data/data_size describe the file's data region. */
static int parse_entry(const char *path, const cJSON *e, const uint8_t *data, uint64_t data_size,
                       lt_tensor_t *t, char *err) {
    const char *name = t->name;
    if (!cJSON_IsObject(e))
        return lt_errf(err, LT_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, name);

    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(jd))
        return lt_errf(err, LT_ERR_FORMAT, "%s: tensor '%s': missing or non-string 'dtype'", path,
                       name);
    uint64_t esize;
    if (!dtype_lookup(jd->valuestring, &t->type, &esize))
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "%s: tensor '%s': dtype %.32s is not supported (F32, F16, BF16 only)", path,
                       name, jd->valuestring);

    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(js))
        return lt_errf(err, LT_ERR_FORMAT, "%s: tensor '%s': missing or non-array 'shape'", path,
                       name);
    int rank = cJSON_GetArraySize(js);
    if (rank > LT_MAX_DIMS)
        return lt_errf(err, LT_ERR_UNSUPPORTED, "%s: tensor '%s': rank %d exceeds %d", path, name,
                       rank, LT_MAX_DIMS);
    for (int i = 0; i < LT_MAX_DIMS; i++) t->ne[i] = 1;
    /* A rank-0 tensor is a scalar: one element, exposed as 1-D. */
    t->n_dims = rank == 0 ? 1 : rank;
    /* nonzero: the product of the non-zero dimensions, which must fit int64 as well, so that a
     * zero-element tensor's other dimensions multiply safely in any order (lt_tensor_nelems
     * multiplies innermost first: [0, 2^32, 2^32] would overflow before reaching the 0). */
    uint64_t nelem = 1, nonzero = 1;
    int i = 0;
    const cJSON *jdim;
    cJSON_ArrayForEach(jdim, js) {
        uint64_t d;
        if (!json_uint(jdim, &d) || d > INT64_MAX)
            return lt_errf(err, LT_ERR_FORMAT,
                           "%s: tensor '%s': shape[%d] is not a non-negative integer", path, name,
                           i);
        if (lt_mul_ovf(nelem, d, &nelem) ||
            (d && (lt_mul_ovf(nonzero, d, &nonzero) || nonzero > INT64_MAX)))
            return lt_errf(err, LT_ERR_FORMAT, "%s: tensor '%s': shape overflows", path, name);
        /* safetensors shapes are outermost first; ne is innermost first. */
        t->ne[rank - 1 - i] = (int64_t)d;
        i++;
    }
    uint64_t nbytes;
    if (lt_mul_ovf(nelem, esize, &nbytes))
        return lt_errf(err, LT_ERR_FORMAT, "%s: tensor '%s': size overflows", path, name);

    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 ||
        !json_uint(cJSON_GetArrayItem(jo, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(jo, 1), &end))
        return lt_errf(err, LT_ERR_FORMAT,
                       "%s: tensor '%s': 'data_offsets' must be [begin, end] integers", path, name);
    if (begin > end || end > data_size)
        return lt_errf(err, LT_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] outside the %llu-byte data "
                       "region",
                       path, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)data_size);
    if (end - begin != nbytes)
        return lt_errf(err, LT_ERR_FORMAT,
                       "%s: tensor '%s': %llu bytes at data_offsets but shape and dtype need %llu",
                       path, name, (unsigned long long)(end - begin), (unsigned long long)nbytes);
    t->data = data + begin;
    t->nbytes = (size_t)nbytes;
    return LT_OK;
}

/* Maps path, validates its header and appends its tensors to st. */
static int st_load_file(wk_st_t *st, const char *path, char *err) {
    int rc = st_add_file(st, path, err);
    if (rc != LT_OK) return rc;
    int fi = st->n_files - 1;
    const uint8_t *base = st->files[fi].map.data;
    uint64_t size = st->files[fi].map.size;

    if (size < 8)
        return lt_errf(err, LT_ERR_FORMAT, "%s: file of %llu bytes is too short for a header", path,
                       (unsigned long long)size);
    uint64_t hlen = read_u64_le(base);
    if (hlen > size - 8)
        return lt_errf(err, LT_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the %llu-byte file", path,
                       (unsigned long long)hlen, (unsigned long long)size);
    if (hlen > ST_MAX_HEADER)
        return lt_errf(err, LT_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit", path,
                       (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen < 2) return lt_errf(err, LT_ERR_FORMAT, "%s: header too short to be JSON", path);

    const char *hdr = (const char *)base + 8;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, false);
    if (!root) {
        long at = end ? (long)(end - hdr) : -1;
        return lt_errf(err, LT_ERR_FORMAT, "%s: header is not valid JSON (near byte %ld)", path,
                       at);
    }
    /* Writers pad the header with spaces to align the data region; anything else is garbage. */
    for (const char *p = end; p < hdr + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
            cJSON_Delete(root);
            return lt_errf(err, LT_ERR_FORMAT, "%s: trailing bytes after the JSON header", path);
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lt_errf(err, LT_ERR_FORMAT, "%s: header is not a JSON object", path);
    }

    const uint8_t *data = base + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    rc = LT_OK;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!e->string || !*e->string) {
            rc = lt_errf(err, LT_ERR_FORMAT, "%s: tensor with an empty name", path);
            break;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                rc = lt_errf(err, LT_ERR_FORMAT, "%s: '__metadata__' is not an object", path);
                break;
            }
            continue;
        }
        lt_tensor_t *t = st_add_tensor(st, fi, e->string, err);
        if (!t) {
            rc = LT_ERR_NOMEM;
            break;
        }
        rc = parse_entry(path, e, data, data_size, t, err);
        if (rc != LT_OK) break;
    }
    cJSON_Delete(root);
    return rc;
}

/* ---- name index ---- */

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const st_name_t *)a)->name, ((const st_name_t *)b)->name);
}

/* Sorts tensors by name and rejects duplicates (within a file or across shards). */
static int st_index(wk_st_t *st, char *err) {
    st->by_name = malloc((size_t)(st->n_tensors ? st->n_tensors : 1) * sizeof *st->by_name);
    if (!st->by_name) return lt_errf(err, LT_ERR_NOMEM, "safetensors: out of memory");
    for (int i = 0; i < st->n_tensors; i++) st->by_name[i] = (st_name_t){st->tensors[i].name, i};
    qsort(st->by_name, (size_t)st->n_tensors, sizeof *st->by_name, cmp_by_name);
    for (int i = 1; i < st->n_tensors; i++) {
        int a = st->by_name[i - 1].idx, b = st->by_name[i].idx;
        if (strcmp(st->by_name[i - 1].name, st->by_name[i].name) == 0) {
            /* Report in file order so the message is stable. */
            if (a > b) {
                int tmp = a;
                a = b;
                b = tmp;
            }
            const char *pa = st->files[st->tensor_file[a]].path;
            const char *pb = st->files[st->tensor_file[b]].path;
            if (pa == pb)
                return lt_errf(err, LT_ERR_FORMAT, "%s: tensor '%s' appears twice", pb,
                               st->tensors[b].name);
            return lt_errf(err, LT_ERR_FORMAT, "%s: tensor '%s' is also in %s", pb,
                           st->tensors[b].name, pa);
        }
    }
    return LT_OK;
}

/* ---- directories ---- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static bool is_regular_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int join_path(char *out, const char *dir, const char *name, char *err) {
    int n = snprintf(out, ST_PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= ST_PATH_MAX)
        return lt_errf(err, LT_ERR_RANGE, "%s: path too long for '%s'", dir, name);
    return LT_OK;
}

/* Opens every *.safetensors of dir in name order. */
static int st_load_glob(wk_st_t *st, const char *dir, char *err) {
    DIR *d = opendir(dir);
    if (!d) return lt_errf(err, LT_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0, rc = LT_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!has_suffix(de->d_name, ".safetensors")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = realloc(names, (size_t)cap * sizeof *nn);
            if (!nn) {
                rc = lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", dir);
                break;
            }
            names = nn;
        }
        names[n] = strdup(de->d_name);
        if (!names[n]) {
            rc = lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == LT_OK && n == 0)
        rc = lt_errf(err, LT_ERR_NOTFOUND, "%s: no *.safetensors files", dir);
    if (rc == LT_OK) qsort(names, (size_t)n, sizeof *names, cmp_str);
    char path[ST_PATH_MAX];
    for (int i = 0; rc == LT_OK && i < n; i++) {
        rc = join_path(path, dir, names[i], err);
        if (rc == LT_OK) rc = st_load_file(st, path, err);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

/* Index of the file whose path ends in "/shard", or -1. */
static int find_file_by_shard(const wk_st_t *st, const char *dir, const char *shard) {
    size_t dl = strlen(dir);
    for (int i = 0; i < st->n_files; i++) {
        const char *p = st->files[i].path;
        if (strncmp(p, dir, dl) == 0 && p[dl] == '/' && strcmp(p + dl + 1, shard) == 0) return i;
    }
    return -1;
}

/* Opens the shards named by an index file's weight_map and checks each listed tensor is in the
 * shard the index assigns it to. */
static int st_load_index(wk_st_t *st, const char *dir, const char *ipath, char *err) {
    char *text = NULL;
    size_t len = 0;
    int rc = lt_read_file(ipath, &text, &len, err);
    if (rc != LT_OK) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return lt_errf(err, LT_ERR_FORMAT, "%s: not valid JSON", ipath);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return lt_errf(err, LT_ERR_FORMAT, "%s: missing or non-object 'weight_map'", ipath);
    }
    if (!wm->child) {
        cJSON_Delete(root);
        return lt_errf(err, LT_ERR_FORMAT, "%s: 'weight_map' is empty", ipath);
    }

    /* First pass: open each distinct shard once, in the order the index first names it. */
    char path[ST_PATH_MAX];
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || !*e->valuestring) {
            rc = lt_errf(err, LT_ERR_FORMAT, "%s: weight_map['%s'] is not a file name", ipath,
                         e->string);
            break;
        }
        const char *shard = e->valuestring;
        /* Shards live beside the index; a path could reach outside the model directory. */
        if (strchr(shard, '/') || strcmp(shard, ".") == 0 || strcmp(shard, "..") == 0) {
            rc = lt_errf(err, LT_ERR_FORMAT, "%s: shard name '%s' is not a plain file name", ipath,
                         shard);
            break;
        }
        if (find_file_by_shard(st, dir, shard) >= 0) continue;
        rc = join_path(path, dir, shard, err);
        if (rc != LT_OK) break;
        if (!is_regular_file(path)) {
            rc = lt_errf(err, LT_ERR_NOTFOUND, "%s: shard '%s' does not exist", ipath, shard);
            break;
        }
        rc = st_load_file(st, path, err);
        if (rc != LT_OK) break;
    }

    /* Second pass: every tensor the index lists must be in its shard. A linear scan per entry is
     * quadratic, so sort first: build the index now and look up by name. */
    if (rc == LT_OK) rc = st_index(st, err);
    if (rc == LT_OK) {
        cJSON_ArrayForEach(e, wm) {
            const lt_tensor_t *t = wk_st_find_tensor(st, e->string);
            int want = find_file_by_shard(st, dir, e->valuestring);
            if (!t || st->tensor_file[t - st->tensors] != want) {
                rc = lt_errf(err, LT_ERR_FORMAT, "%s: tensor '%s' listed in %s is missing",
                             st->files[want].path, e->string, ipath);
                break;
            }
        }
    }
    cJSON_Delete(root);
    return rc;
}

/* ---- public API ---- */

static wk_st_t *st_new(void) {
    return calloc(1, sizeof(wk_st_t));
}

int wk_st_open_file(const char *path, wk_st_t **out, char *err) {
    *out = NULL;
    wk_st_t *st = st_new();
    if (!st) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", path);
    int rc = st_load_file(st, path, err);
    if (rc == LT_OK) rc = st_index(st, err);
    if (rc != LT_OK) {
        wk_st_close(&st);
        return rc;
    }
    *out = st;
    return LT_OK;
}

int wk_st_open_dir(const char *dir, wk_st_t **out, char *err) {
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return lt_errf(err, LT_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return lt_errf(err, LT_ERR_IO, "%s: not a directory", dir);
    char ipath[ST_PATH_MAX];
    int rc = join_path(ipath, dir, "model.safetensors.index.json", err);
    if (rc != LT_OK) return rc;
    wk_st_t *st = st_new();
    if (!st) return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", dir);
    if (is_regular_file(ipath)) {
        rc = st_load_index(st, dir, ipath, err);
    } else {
        rc = st_load_glob(st, dir, err);
        if (rc == LT_OK) rc = st_index(st, err);
    }
    if (rc != LT_OK) {
        wk_st_close(&st);
        return rc;
    }
    *out = st;
    return LT_OK;
}

void wk_st_close(wk_st_t **stp) {
    if (!stp || !*stp) return;
    wk_st_t *st = *stp;
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    for (int i = 0; i < st->n_files; i++) {
        lt_mmap_close(&st->files[i].map);
        free(st->files[i].path);
    }
    free(st->tensors);
    free(st->tensor_file);
    free(st->by_name);
    free(st->files);
    free(st);
    *stp = NULL;
}

int wk_st_n_tensors(const wk_st_t *st) {
    return st->n_tensors;
}

const lt_tensor_t *wk_st_tensor(const wk_st_t *st, int i) {
    if (i < 0 || i >= st->n_tensors) return NULL;
    return &st->tensors[i];
}

const lt_tensor_t *wk_st_find_tensor(const wk_st_t *st, const char *name) {
    int lo = 0, hi = st->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->by_name[mid].name);
        if (c == 0) return &st->tensors[st->by_name[mid].idx];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}
