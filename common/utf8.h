/*
 * utf8.h — the one UTF-8 codec every lantern module uses (Unicode Table 3-7 validity: no
 * overlongs, no surrogates, nothing above U+10FFFF) and a streaming lossy repair with Rust's
 * String::from_utf8_lossy / Python's errors="replace" rules.
 *
 * Thread safety: stateless functions, except lt_utf8_lossy_t which belongs to one caller.
 * Hot path: lt_utf8_valid_prefix (an ASCII fast path, eight bytes at a time) and the decoder.
 */
#ifndef LT_UTF8_H
#define LT_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Length of the valid UTF-8 prefix of s[0, n). */
size_t lt_utf8_valid_prefix(const char *s, size_t n);
/* Length of the valid sequence starting at s[0] (1..4), 0 if it is invalid or incomplete; *ok
 * receives how many leading bytes form a valid prefix of a sequence (0 for a bad lead byte). */
int lt_utf8_seq(const char *s, size_t n, int *ok);
/* Decodes one code point from VALID UTF-8 (check first); returns its length (1..4). */
int lt_utf8_decode(const char *s, size_t n, uint32_t *cp);
/* Encodes cp (<= 0x10FFFF) into out (4 bytes of room); returns its length (1..4). */
int lt_utf8_encode(uint32_t cp, char *out);

/* Streaming lossy repair: each maximal invalid subpart becomes one U+FFFD. `pend` holds a trailing
 * incomplete sequence between calls (at most 3 bytes). A zeroed state starts a stream. */
typedef struct lt_utf8_lossy {
    uint8_t pend[4];
    uint8_t n_pend;
} lt_utf8_lossy_t;

/* Appends the repaired s[0, n) to out, holding back an incomplete sequence at its end. */
int lt_utf8_lossy_push(lt_utf8_lossy_t *st, const char *s, size_t n, lt_buf_t *out);
/* Ends the stream: a held incomplete sequence becomes U+FFFD. */
int lt_utf8_lossy_flush(lt_utf8_lossy_t *st, lt_buf_t *out);

#endif
