/*
 * dtype.c — the element-type table (dtype.h): names and block geometry of the GGML formats.
 */
#include "dtype.h"

#define QK   LT_DTYPE_QK
#define QK_K LT_DTYPE_QK_K

typedef struct {
    const char *name;
    int block_elems;    /* 0: a known id that is never a stored weight */
    size_t block_bytes; /* bytes of one block */
} dtype_info_t;

/* Indexed by GGML type id. */
static const dtype_info_t k_types[] = {
    [LT_DTYPE_F32] = {"F32", 1, 4},
    [LT_DTYPE_F16] = {"F16", 1, 2},
    [LT_DTYPE_Q4_0] = {"Q4_0", QK, 2 + QK / 2},
    [LT_DTYPE_Q4_1] = {"Q4_1", QK, 2 + 2 + QK / 2},
    [LT_DTYPE_Q5_0] = {"Q5_0", QK, 2 + 4 + QK / 2},
    [LT_DTYPE_Q5_1] = {"Q5_1", QK, 2 + 2 + 4 + QK / 2},
    [LT_DTYPE_Q8_0] = {"Q8_0", QK, 2 + QK},
    [LT_DTYPE_Q8_1] = {"Q8_1", 0, 0},
    [LT_DTYPE_Q2_K] = {"Q2_K", QK_K, QK_K / 16 + QK_K / 4 + 2 + 2},
    [LT_DTYPE_Q3_K] = {"Q3_K", QK_K, QK_K / 8 + QK_K / 4 + 12 + 2},
    [LT_DTYPE_Q4_K] = {"Q4_K", QK_K, 2 + 2 + 12 + QK_K / 2},
    [LT_DTYPE_Q5_K] = {"Q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2},
    [LT_DTYPE_Q6_K] = {"Q6_K", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2},
    [LT_DTYPE_Q8_K] = {"Q8_K", 0, 0},
    [LT_DTYPE_BF16] = {"BF16", 1, 2},
};

#define N_TYPES ((int)(sizeof k_types / sizeof k_types[0]))

static const dtype_info_t *lookup(int type) {
    if (type < 0 || type >= N_TYPES || !k_types[type].name) return 0;
    return &k_types[type];
}

bool lt_dtype_supported(int type) {
    const dtype_info_t *t = lookup(type);
    return t && t->block_elems > 0;
}

const char *lt_dtype_name(int type) {
    const dtype_info_t *t = lookup(type);
    return t ? t->name : "unknown";
}

int lt_dtype_block_elems(int type) {
    return lt_dtype_supported(type) ? k_types[type].block_elems : 0;
}

size_t lt_dtype_block_bytes(int type) {
    return lt_dtype_supported(type) ? k_types[type].block_bytes : 0;
}

int64_t lt_dtype_nbytes(int type, int64_t n) {
    if (!lt_dtype_supported(type) || n < 0) return -1;
    const dtype_info_t *t = &k_types[type];
    if (n % t->block_elems != 0) return -1;
    int64_t bytes;
    if (__builtin_mul_overflow(n / t->block_elems, (int64_t)t->block_bytes, &bytes)) return -1;
    return bytes;
}
