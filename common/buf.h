/*
 * buf.h — the one growable byte buffer and the one bump arena every lantern module uses.
 *
 * lt_buf_t: bytes appended at the end, always NUL-terminated after a successful append (so text
 * can be handed to C string functions), with an optional size limit that turns runaway output
 * into LT_ERR_RANGE instead of memory exhaustion. A zeroed lt_buf_t is an empty buffer.
 *
 * lt_arena_t: a bump allocator for many small allocations freed together (a parse, a render, a
 * tokenization call). Chunks never move, so pointers into the arena stay valid until
 * lt_arena_free; an optional limit bounds the bytes taken from malloc. A zeroed lt_arena_t is an
 * empty arena with the default chunk size.
 *
 * Thread safety: a buffer or an arena belongs to one thread at a time. Ownership: the buffer owns
 * `data` until lt_buf_free or lt_buf_take; the arena owns every block it handed out.
 * Hot path: appends allocate only when the buffer grows; a buffer reused with lt_buf_clear stops
 * allocating once it has reached its steady size.
 */
#ifndef LT_BUF_H
#define LT_BUF_H

#include <stdbool.h>
#include <stddef.h>

/* ---- growable byte buffer ---- */

typedef struct lt_buf {
    char *data;   /* NULL until the first append; then NUL-terminated at data[len] */
    size_t len;   /* bytes in use, the NUL not counted */
    size_t cap;   /* bytes allocated */
    size_t limit; /* 0: none; else appends that would make len exceed it fail with LT_ERR_RANGE */
} lt_buf_t;

/* Makes room for `extra` more bytes (and the NUL). 0, LT_ERR_NOMEM, or LT_ERR_RANGE past the
 * limit (nothing changes on failure). */
int lt_buf_reserve(lt_buf_t *b, size_t extra);
/* Appends n bytes of s (s may be NULL when n is 0). 0, LT_ERR_NOMEM or LT_ERR_RANGE. HOT */
int lt_buf_put(lt_buf_t *b, const void *s, size_t n);
int lt_buf_puts(lt_buf_t *b, const char *s);
int lt_buf_putc(lt_buf_t *b, char c);
/* Appends formatted text, whatever its length. */
int lt_buf_printf(lt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Empties the buffer, keeping its memory (and its limit). HOT */
void lt_buf_clear(lt_buf_t *b);
/* Frees the memory; the buffer is empty again (its limit kept). */
void lt_buf_free(lt_buf_t *b);
/* Hands the bytes over: a malloc'd NUL-terminated string the caller frees (an empty string for
 * an empty buffer; NULL only when that allocation fails). The buffer is empty afterwards. */
char *lt_buf_take(lt_buf_t *b);
/* The contents as a C string: "" for a buffer that never allocated. */
static inline const char *lt_buf_str(const lt_buf_t *b) {
    return b->data ? b->data : "";
}

/* ---- bump arena ---- */

typedef struct lt_arena_chunk lt_arena_chunk_t;

#define LT_ARENA_CHUNK_DEF 65536

typedef struct lt_arena {
    lt_arena_chunk_t *head;
    size_t chunk_bytes; /* 0: LT_ARENA_CHUNK_DEF */
    size_t total;       /* bytes taken from malloc */
    size_t limit;       /* 0: none */
    bool over;          /* the last failure was the limit, not malloc */
} lt_arena_t;

/* n bytes aligned for any type (max_align_t); NULL when malloc fails or the limit would be
 * passed (then `over` is set). n == 0 gives a valid distinct pointer. */
void *lt_arena_alloc(lt_arena_t *a, size_t n);
/* A NUL-terminated copy of s[0, n) in the arena. */
char *lt_arena_strndup(lt_arena_t *a, const char *s, size_t n);
/* Frees every chunk; the arena is empty again (chunk size and limit kept). */
void lt_arena_free(lt_arena_t *a);

#endif
