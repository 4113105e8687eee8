/*
 * stop.h — stop strings over a stream of detokenized text (OpenAI `stop`).
 *
 * Text arrives in pieces (one per token, as the incremental detokenizer releases it); a stop
 * string may straddle pieces. The stopper releases text as soon as it cannot be the start of a
 * stop string, holds back the shortest tail that still could be, and on a match releases the
 * text before it (and the stop string itself if asked) and reports the match. Held-back text
 * always starts where a stop string starts, so a release never splits a UTF-8 character of valid
 * stop strings.
 * Thread safety: one stopper per request, one thread at a time. Ownership: the stopper copies
 * the stop strings; release buffers are the caller's (lt_buf_t).
 */
#ifndef FE_STOP_H
#define FE_STOP_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define FE_MAX_STOPS 16

typedef struct fe_stopper {
    char *stops[FE_MAX_STOPS];
    size_t lens[FE_MAX_STOPS];
    int n;
    bool include;  /* release the stop string too (vLLM include_stop_str_in_output) */
    lt_buf_t held; /* text not yet released */
    int matched;   /* index of the stop string that matched, -1 while none */
} fe_stopper_t;

/* n <= FE_MAX_STOPS non-empty strings of lens[i] bytes each (any bytes, NUL included; lens NULL:
 * C strings); LT_ERR_INVAL otherwise (message in err). */
int fe_stopper_init(fe_stopper_t *s, const char *const *stops, const size_t *lens, int n,
                    bool include, char *err);
void fe_stopper_fini(fe_stopper_t *s);

/* Appends text; writes what may be released to out. Returns 1 when a stop string matched
 * (nothing more will be released), 0 otherwise, or LT_ERR_NOMEM. */
int fe_stopper_feed(fe_stopper_t *s, const char *text, size_t len, lt_buf_t *out);

/* The stream ended without a match: releases the held-back text. */
int fe_stopper_flush(fe_stopper_t *s, lt_buf_t *out);

#endif
