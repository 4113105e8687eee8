/*
 * buf.c — the growable byte buffer and the bump arena (buf.h).
 */
#include "buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"

/* ---- growable byte buffer ---- */

int lt_buf_reserve(lt_buf_t *b, size_t extra) {
    size_t need;
    if (__builtin_add_overflow(b->len, extra, &need) || (b->limit && need > b->limit))
        return LT_ERR_RANGE;
    if (need < b->cap) return LT_OK; /* room for the NUL too */
    size_t cap = b->cap ? b->cap : 64;
    while (cap <= need) {
        if (cap > SIZE_MAX / 2) return LT_ERR_NOMEM;
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) return LT_ERR_NOMEM;
    b->data = d;
    b->cap = cap;
    return LT_OK;
}

int lt_buf_put(lt_buf_t *b, const void *s, size_t n) {
    int rc = lt_buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return LT_OK;
}

int lt_buf_puts(lt_buf_t *b, const char *s) {
    return lt_buf_put(b, s, strlen(s));
}

int lt_buf_putc(lt_buf_t *b, char c) {
    return lt_buf_put(b, &c, 1);
}

int lt_buf_printf(lt_buf_t *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return LT_ERR_INVAL;
    if ((size_t)k < sizeof tmp) return lt_buf_put(b, tmp, (size_t)k);
    int rc = lt_buf_reserve(b, (size_t)k);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)k;
    return LT_OK;
}

void lt_buf_clear(lt_buf_t *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void lt_buf_free(lt_buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *lt_buf_take(lt_buf_t *b) {
    char *s = b->data ? b->data : strdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

/* ---- bump arena ---- */

struct lt_arena_chunk {
    lt_arena_chunk_t *next;
    size_t used, cap;
    max_align_t data[];
};

void *lt_arena_alloc(lt_arena_t *a, size_t n) {
    const size_t align = sizeof(max_align_t);
    if (n > ((size_t)1 << 40)) {
        a->over = true;
        return NULL;
    }
    n = n ? (n + align - 1) & ~(align - 1) : align;
    size_t chunk = a->chunk_bytes ? a->chunk_bytes : LT_ARENA_CHUNK_DEF;
    lt_arena_chunk_t *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > chunk ? n : chunk;
        if (a->limit && a->total + cap > a->limit) {
            a->over = true;
            return NULL;
        }
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        if (n > chunk / 2 && a->head) { /* a big block: keep filling the current chunk */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
        a->total += cap;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

char *lt_arena_strndup(lt_arena_t *a, const char *s, size_t n) {
    char *p = lt_arena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void lt_arena_free(lt_arena_t *a) {
    for (lt_arena_chunk_t *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
    a->total = 0;
    a->over = false;
}
