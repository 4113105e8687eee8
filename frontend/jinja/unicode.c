/*
 * unicode.c — the UTF-8 and the bits of Unicode the interpreter needs to behave as Python's str:
 * a lenient decoder that carries invalid bytes through (Python's surrogateescape), counting and
 * indexing by code point, and the character classes and case mapping of str.isspace(),
 * str.upper() and the like.
 *
 * Why not common/utf8.h alone: a template must never fail on a context string that is not valid
 * UTF-8, and Python's str methods need character classes a tokenizer does not. Encoding goes
 * through common/utf8.h; only the surrogateescape rule is ours.
 */

#include "jinja_internal.h"

#include "utf8.h"

/* ---- UTF-8, leniently ---- */

uint32_t jt_u8_next(const char *s, size_t n, size_t *i) {
    const unsigned char *u = (const unsigned char *)s;
    size_t k = *i;
    uint32_t c = u[k];
    if (c < 0x80) {
        *i = k + 1;
        return c;
    }
    int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (len && c < 0xF5 && k + (size_t)len <= n) {
        uint32_t cp = c & (0x3F >> (len - 1));
        int j;
        for (j = 1; j < len; j++) {
            if ((u[k + j] & 0xC0) != 0x80) break;
            cp = (cp << 6) | (u[k + j] & 0x3F);
        }
        bool ok = j == len && !(len == 3 && cp < 0x800) && !(len == 4 && cp < 0x10000) &&
                  cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
        if (ok) {
            *i = k + (size_t)len;
            return cp;
        }
    }
    *i = k + 1;
    return 0xDC00 | c;
}

uint32_t jt_u8_prev(const char *s, size_t start, size_t *i) {
    size_t k = *i - 1;
    size_t lim = *i >= start + 4 ? *i - 4 : start;
    while (k > lim && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    size_t j = k;
    uint32_t c = jt_u8_next(s, *i, &j);
    if (j != *i) { /* not a sequence ending exactly here: take the last byte alone */
        k = *i - 1;
        j = k;
        c = jt_u8_next(s, *i, &j);
    }
    *i = k;
    return c;
}

size_t jt_u8_put(uint32_t c, char *o) {
    if (c >= 0xDC80 && c <= 0xDCFF) { /* an escaped raw byte */
        o[0] = (char)(c & 0xFF);
        return 1;
    }
    if (c >= 0xD800 && c <= 0xDFFF) c = 0xFFFD;
    return (size_t)lt_utf8_encode(c, o);
}

size_t jt_u8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        jt_u8_next(s, n, &i);
        k++;
    }
    return k;
}

size_t jt_u8_offset(const char *s, size_t n, size_t idx) {
    size_t i = 0;
    while (idx > 0 && i < n) {
        jt_u8_next(s, n, &i);
        idx--;
    }
    return i;
}

size_t jt_ws_span(const char *s, size_t n, size_t i) {
    while (i < n) {
        size_t j = i;
        if (!jt_uc_isspace(jt_u8_next(s, n, &j))) break;
        i = j;
    }
    return i;
}

/* ---- character classes and case, as Python's str has them ---- */

bool jt_uc_isspace(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Latin Extended-A pairs U+0100..U+017F: which member of a pair is upper case varies by range. */
static uint32_t uc_latin_a(uint32_t c, bool to_upper) {
    bool even_upper;
    if (c <= 0x12F || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        even_upper = true;
    else if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        even_upper = false;
    else if (c == 0x131)
        return to_upper ? 'I' : c;
    else if (c == 0x178)
        return to_upper ? c : 0xFF;
    else if (c == 0x17F)
        return to_upper ? 'S' : c;
    else
        return c;
    bool is_upper = ((c & 1) == 0) == even_upper;
    if (to_upper && !is_upper) return c - 1; /* the lower-case letter follows its capital */
    if (!to_upper && is_upper) return c + 1;
    return c;
}

uint32_t jt_uc_lower(uint32_t c) {
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c >= 0x100 && c <= 0x17F) return uc_latin_a(c, false);
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 32;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}

uint32_t jt_uc_upper(uint32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c == 0xB5) return 0x39C;
    if (c >= 0x100 && c <= 0x17F) return uc_latin_a(c, true);
    if (c == 0x3C2) return 0x3A3;
    if (c >= 0x3B1 && c <= 0x3CB) return c - 32;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    return c;
}

bool jt_uc_isupper(uint32_t c) {
    return jt_uc_lower(c) != c;
}

bool jt_uc_islower(uint32_t c) {
    return jt_uc_upper(c) != c || c == 0xDF;
}

bool jt_uc_cased(uint32_t c) {
    return jt_uc_isupper(c) || jt_uc_islower(c);
}

bool jt_uc_isdigit(uint32_t c) {
    return c >= '0' && c <= '9';
}

bool jt_uc_isalpha(uint32_t c) {
    return jt_uc_cased(c) || c == 0xAA || c == 0xBA || c == 0xDF || (c >= 0x5D0 && c <= 0x5EA) ||
           (c >= 0x620 && c <= 0x64A) || (c >= 0x3041 && c <= 0x30FF && c != 0x30FB) ||
           (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) ||
           (c >= 0xAC00 && c <= 0xD7A3);
}

bool jt_uc_isalnum(uint32_t c) {
    return jt_uc_isalpha(c) || jt_uc_isdigit(c);
}
