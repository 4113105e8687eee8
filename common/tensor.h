/*
 * tensor.h — a named tensor view into a mapped model file, as both loaders (GGUF and safetensors)
 * produce it. Shared by the GGUF reader (common/) and the safetensors reader (worker/).
 *
 * Dimensions are stored as GGUF does: ne[0] is the innermost (contiguous) dimension, so a
 * PyTorch weight of shape (out, in) has ne[0] = in, ne[1] = out. The data pointer borrows from the
 * loader's mapping and is valid until the loader is closed.
 */
#ifndef LT_TENSOR_H
#define LT_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define LT_MAX_DIMS 4

typedef struct lt_tensor {
    char *name;              /* owned by the loader, NUL-terminated */
    int type;                /* lt_dtype_t */
    int n_dims;              /* 1..LT_MAX_DIMS */
    int64_t ne[LT_MAX_DIMS]; /* innermost first; unused dims are 1 */
    const void *data;        /* borrowed from the mapping; aligned only as the file says (GGUF
                                may use 1): read it through kn_dequantize or memcpy */
    size_t nbytes;           /* validated: data + nbytes lies inside the mapping */
} lt_tensor_t;

static inline int64_t lt_tensor_nelems(const lt_tensor_t *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->ne[i];
    return n;
}

#endif
