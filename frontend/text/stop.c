/*
 * stop.c — stop-string matching across token boundaries (see stop.h). The held-back text is
 * short (shorter than the longest stop string) unless a match is pending, so every feed costs
 * O(pieces x stops x longest stop).
 */
#define _GNU_SOURCE
#include "stop.h"

#include <stdlib.h>
#include <string.h>

#include "lt.h"

/* ---- stopper ---- */

int fe_stopper_init(fe_stopper_t *s, const char *const *stops, const size_t *lens, int n,
                    bool include, char *err) {
    memset(s, 0, sizeof *s);
    s->matched = -1;
    s->include = include;
    if (n < 0 || n > FE_MAX_STOPS)
        return lt_errf(err, LT_ERR_INVAL, "at most %d stop strings", FE_MAX_STOPS);
    for (int i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : strlen(stops[i]);
        if (len == 0) {
            fe_stopper_fini(s);
            return lt_errf(err, LT_ERR_INVAL, "stop strings must not be empty");
        }
        s->stops[i] = malloc(len);
        if (s->stops[i]) memcpy(s->stops[i], stops[i], len);
        if (!s->stops[i]) {
            fe_stopper_fini(s);
            return lt_errf(err, LT_ERR_NOMEM, "out of memory");
        }
        s->lens[i] = len;
        s->n = i + 1;
    }
    return LT_OK;
}

void fe_stopper_fini(fe_stopper_t *s) {
    for (int i = 0; i < s->n; i++) free(s->stops[i]);
    lt_buf_free(&s->held);
    s->n = 0;
}

/* Length of the longest suffix of text that is a proper prefix of some stop string. */
static size_t partial_tail(const fe_stopper_t *s, const char *text, size_t len) {
    size_t best = 0;
    for (int i = 0; i < s->n; i++) {
        size_t max = s->lens[i] - 1 < len ? s->lens[i] - 1 : len;
        for (size_t k = max; k > best; k--) {
            if (memcmp(text + len - k, s->stops[i], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

int fe_stopper_feed(fe_stopper_t *s, const char *text, size_t len, lt_buf_t *out) {
    if (s->matched >= 0) return 1;
    if (s->n == 0) return lt_buf_put(out, text, len);
    if (lt_buf_put(&s->held, text, len)) return LT_ERR_NOMEM;
    const char *h = s->held.data;
    size_t hl = s->held.len;
    /* earliest match wins; at one position, the longest stop string */
    const char *best = NULL;
    int which = -1;
    for (int i = 0; i < s->n; i++) {
        const char *m = memmem(h, hl, s->stops[i], s->lens[i]);
        if (m && (!best || m < best || (m == best && s->lens[i] > s->lens[which]))) {
            best = m;
            which = i;
        }
    }
    if (best) {
        size_t upto = (size_t)(best - h) + (s->include ? s->lens[which] : 0);
        if (lt_buf_put(out, h, upto)) return LT_ERR_NOMEM;
        s->matched = which;
        lt_buf_clear(&s->held);
        return 1;
    }
    size_t keep = partial_tail(s, h, hl);
    if (lt_buf_put(out, h, hl - keep)) return LT_ERR_NOMEM;
    memmove(s->held.data, h + hl - keep, keep);
    s->held.len = keep;
    s->held.data[keep] = '\0';
    return 0;
}

int fe_stopper_flush(fe_stopper_t *s, lt_buf_t *out) {
    if (s->matched >= 0 || s->held.len == 0) return LT_OK;
    int rc = lt_buf_put(out, s->held.data, s->held.len);
    lt_buf_clear(&s->held);
    return rc;
}
