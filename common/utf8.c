/*
 * utf8.c — UTF-8 validation, decoding, encoding and lossy repair (utf8.h).
 */
#include "utf8.h"

#include <stdbool.h>
#include <string.h>

#include "lt.h"

int lt_utf8_seq(const char *str, size_t n, int *ok) {
    const uint8_t *s = (const uint8_t *)str;
    uint8_t b = s[0];
    if (b < 0x80) return *ok = 1, 1;
    int need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf)
        need = 2;
    else if (b >= 0xe0 && b <= 0xef) {
        need = 3;
        if (b == 0xe0) lo = 0xa0;
        if (b == 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        need = 4;
        if (b == 0xf0) lo = 0x90;
        if (b == 0xf4) hi = 0x8f;
    } else
        return *ok = 0, 0;
    *ok = 1;
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= n) return 0;
        uint8_t c = s[k];
        if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xbf)) return 0;
        *ok = k + 1;
    }
    return need;
}

size_t lt_utf8_valid_prefix(const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            /* ASCII fast path, eight bytes at a time. */
            while (i + 8 <= n) {
                uint64_t v;
                memcpy(&v, u + i, 8);
                if (v & 0x8080808080808080ull) break;
                i += 8;
            }
            while (i < n && u[i] < 0x80) i++;
            continue;
        }
        int ok;
        int k = lt_utf8_seq(s + i, n - i, &ok);
        if (!k) return i;
        i += (size_t)k;
    }
    return n;
}

int lt_utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const uint8_t *u = (const uint8_t *)s;
    if (u[0] < 0x80 || n < 2) return *cp = u[0], 1;
    if (u[0] < 0xe0) return *cp = ((uint32_t)(u[0] & 0x1f) << 6) | (u[1] & 0x3f), 2;
    if (u[0] < 0xf0 || n < 4) {
        if (n < 3) return *cp = u[0], 1;
        *cp = ((uint32_t)(u[0] & 0x0f) << 12) | ((uint32_t)(u[1] & 0x3f) << 6) | (u[2] & 0x3f);
        return 3;
    }
    *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3f) << 12) |
          ((uint32_t)(u[2] & 0x3f) << 6) | (u[3] & 0x3f);
    return 4;
}

int lt_utf8_encode(uint32_t cp, char *out) {
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) return o[0] = (uint8_t)cp, 1;
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xc0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xe0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (uint8_t)(0xf0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- lossy repair ---- */

static const char REPLACEMENT[3] = {(char)0xef, (char)0xbf, (char)0xbd};

/* Repairs s[0..n) into out; *held receives how many trailing bytes form an incomplete (so far
 * valid) sequence that was not consumed (only when `final` is false). */
static int lossy_run(const char *s, size_t n, bool final, lt_buf_t *out, size_t *held) {
    size_t i = 0;
    *held = 0;
    while (i < n) {
        size_t v = lt_utf8_valid_prefix(s + i, n - i);
        if (v && lt_buf_put(out, s + i, v)) return LT_ERR_NOMEM;
        i += v;
        if (i >= n) break;
        int ok;
        (void)lt_utf8_seq(s + i, n - i, &ok);
        if (ok > 0 && i + (size_t)ok == n && !final) { /* incomplete at the end: wait */
            *held = (size_t)ok;
            return 0;
        }
        /* A maximal invalid subpart: the valid prefix (at least the lead byte) becomes one
         * U+FFFD; the byte that broke it starts over. */
        if (lt_buf_put(out, REPLACEMENT, 3)) return LT_ERR_NOMEM;
        i += ok > 0 ? (size_t)ok : 1;
    }
    return 0;
}

int lt_utf8_lossy_push(lt_utf8_lossy_t *st, const char *s, size_t n, lt_buf_t *out) {
    size_t held;
    if (st->n_pend) {
        /* Complete the pending sequence with up to 3 more bytes, then go on from there. */
        char tmp[8];
        size_t k = n < 3 ? n : 3;
        memcpy(tmp, st->pend, st->n_pend);
        memcpy(tmp + st->n_pend, s, k);
        size_t tn = st->n_pend + k;
        int ok;
        int len = lt_utf8_seq(tmp, tn, &ok);
        if (len == 0 && ok == (int)tn) { /* still incomplete: everything pending */
            memcpy(st->pend, tmp, tn);
            st->n_pend = (uint8_t)tn;
            return 0;
        }
        size_t used; /* bytes of s consumed by the pending sequence */
        if (len) {
            if (lt_buf_put(out, tmp, (size_t)len)) return LT_ERR_NOMEM;
            used = (size_t)len - st->n_pend;
        } else {
            if (lt_buf_put(out, REPLACEMENT, 3)) return LT_ERR_NOMEM;
            used = ok > st->n_pend ? (size_t)ok - st->n_pend : 0;
        }
        st->n_pend = 0;
        s += used;
        n -= used;
    }
    int rc = lossy_run(s, n, false, out, &held);
    if (rc) return rc;
    memcpy(st->pend, s + n - held, held);
    st->n_pend = (uint8_t)held;
    return 0;
}

int lt_utf8_lossy_flush(lt_utf8_lossy_t *st, lt_buf_t *out) {
    size_t held;
    int rc = lossy_run((const char *)st->pend, st->n_pend, true, out, &held);
    st->n_pend = 0;
    return rc;
}
