/*
 * json.c — the strict JSON reader of json.h: Jansson parses and checks the text (RFC 8259, UTF-8,
 * surrogate pairs, nothing after the value), then its tree is copied into the cJSON tree callers
 * read, each string written with its length (a NUL as C0 80).
 */
#include "json.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"
#include "utf8.h"

/* Deeper trees are refused, so no code walking a parsed tree recursively runs out of stack
 * (Jansson's own limit is 2048). */
#define JSON_MAX_DEPTH 512

/* Jansson's text for an escape that is not a Unicode character; the only one it gives is an
 * unpaired surrogate ("invalid Unicode '\uD800'", or "'\uD800\u0041'" for a high one followed
 * by something other than a low one: the first escape is the unpaired one). */
#define JANSSON_BAD_UNICODE "invalid Unicode '\\u"

/* A string from Jansson (len bytes, NULs allowed) as a cJSON string with every NUL as C0 80. */
static cJSON *copy_string(const char *s, size_t len) {
    if (!memchr(s, '\0', len)) return cJSON_CreateString(s);
    char *tmp = malloc(2 * len + 1);
    if (!tmp) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i]) {
            tmp[k++] = s[i];
        } else {
            memcpy(tmp + k, LT_JSON_NUL, LT_JSON_NUL_LEN);
            k += LT_JSON_NUL_LEN;
        }
    }
    tmp[k] = '\0';
    cJSON *c = cJSON_CreateString(tmp);
    free(tmp);
    return c;
}

/* Copies Jansson's tree v into a new cJSON tree at *out. Returns 0, LT_ERR_FORMAT (too deep) or
 * LT_ERR_NOMEM. */
static int copy(const json_t *v, int depth, cJSON **out) {
    *out = NULL;
    cJSON *c = NULL;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY: {
        if (depth == JSON_MAX_DEPTH) return LT_ERR_FORMAT;
        bool obj = json_is_object(v);
        c = obj ? cJSON_CreateObject() : cJSON_CreateArray();
        if (!c) return LT_ERR_NOMEM;
        const char *key;
        size_t i;
        json_t *m;
        int rc = 0;
        if (obj) {
            /* insertion order: the members in the order of the text (a repeated key keeps its
             * first place and its last value) */
            json_object_foreach((json_t *)v, key, m) {
                cJSON *cm;
                if ((rc = copy(m, depth + 1, &cm))) break;
                if (!cJSON_AddItemToObject(c, key, cm)) {
                    cJSON_Delete(cm);
                    rc = LT_ERR_NOMEM;
                    break;
                }
            }
        } else {
            json_array_foreach(v, i, m) {
                cJSON *cm;
                if ((rc = copy(m, depth + 1, &cm))) break;
                if (!cJSON_AddItemToArray(c, cm)) {
                    cJSON_Delete(cm);
                    rc = LT_ERR_NOMEM;
                    break;
                }
            }
        }
        if (rc) {
            cJSON_Delete(c);
            return rc;
        }
        break;
    }
    case JSON_STRING: c = copy_string(json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER:
    case JSON_REAL: c = cJSON_CreateNumber(json_number_value(v)); break;
    case JSON_TRUE: c = cJSON_CreateTrue(); break;
    case JSON_FALSE: c = cJSON_CreateFalse(); break;
    case JSON_NULL: c = cJSON_CreateNull(); break;
    }
    if (!c) return LT_ERR_NOMEM;
    *out = c;
    return 0;
}

/* Fills e from Jansson's error; returns the code lt_json_parse gives for it. */
static int from_jansson(const json_error_t *je, size_t skipped, lt_json_error_t *e) {
    e->offset = je->position > 0 ? (size_t)je->position + skipped : skipped;
    const char *t = je->text;
    enum json_error_code code = json_error_code(je);
    if (code == json_error_out_of_memory) {
        snprintf(e->message, sizeof e->message, "out of memory");
        return LT_ERR_NOMEM;
    }
    const size_t pl = sizeof JANSSON_BAD_UNICODE - 1;
    if (strncmp(t, JANSSON_BAD_UNICODE, pl) == 0 && strlen(t) >= pl + 4) {
        char hex[5];
        for (int k = 0; k < 4; k++) {
            char h = t[pl + k];
            hex[k] = h >= 'A' && h <= 'F' ? (char)(h - 'A' + 'a') : h;
        }
        hex[4] = '\0';
        e->unicode = true;
        snprintf(e->message, sizeof e->message,
                 "an unpaired UTF-16 surrogate (\\u%s) in the string ending at line %d, column %d "
                 "(byte %zu) is not a Unicode character",
                 hex, je->line, je->column, e->offset);
        return LT_ERR_INVAL;
    }
    snprintf(e->message, sizeof e->message, "%s%s at line %d, column %d (byte %zu)",
             code == json_error_invalid_utf8 ? "not valid UTF-8: " : "", t, je->line, je->column,
             e->offset);
    return LT_ERR_FORMAT;
}

/* ---- public ---- */

int lt_json_parse(const char *text, size_t len, cJSON **out, lt_json_error_t *e) {
    *out = NULL;
    memset(e, 0, sizeof *e);
    if (!text) text = "", len = 0;
    size_t skip = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) skip = 3; /* a BOM, as cJSON skips */
    json_error_t je;
    json_t *j = json_loadb(text + skip, len - skip,
                           JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
    if (!j) return from_jansson(&je, skip, e);
    int rc = copy(j, 0, out);
    json_decref(j);
    if (rc == LT_ERR_FORMAT)
        snprintf(e->message, sizeof e->message, "nested deeper than %d levels", JSON_MAX_DEPTH);
    else if (rc)
        snprintf(e->message, sizeof e->message, "out of memory");
    return rc;
}

size_t lt_json_bytes(char *dst, const char *s, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] == 0xC0 && i + 1 < n && (unsigned char)s[i + 1] == 0x80) {
            dst[j++] = '\0';
            i++;
        } else {
            dst[j++] = s[i];
        }
    }
    return j;
}

bool lt_json_has_nul(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++)
        if ((unsigned char)s[i] == 0xC0 && (unsigned char)s[i + 1] == 0x80) return true;
    return false;
}

const char *lt_json_show(const char *s, size_t max_chars, char *out, size_t cap) {
    size_t k = 0, chars = 0, n = s ? strlen(s) : 0;
    if (!cap) return out;
    for (size_t i = 0; i < n;) {
        const unsigned char c = (unsigned char)s[i];
        char piece[8];
        size_t m, adv;
        int ok;
        if (c == 0xC0 && i + 1 < n && (unsigned char)s[i + 1] == 0x80) {
            m = (size_t)snprintf(piece, sizeof piece, "\\u0000");
            adv = 2;
        } else if (c < 0x20 || c == 0x7f) {
            m = (size_t)snprintf(piece, sizeof piece, "\\u%04x", c);
            adv = 1;
        } else {
            int sl = lt_utf8_seq(s + i, n - i, &ok);
            adv = sl > 0 ? (size_t)sl : 1;
            m = sl > 0 ? adv : 3;
            memcpy(piece, sl > 0 ? s + i : "\xEF\xBF\xBD", m);
        }
        if (chars == max_chars || k + m + 4 > cap) {
            if (k + 4 <= cap) memcpy(out + k, "...", 3), k += 3;
            break;
        }
        memcpy(out + k, piece, m);
        k += m;
        i += adv;
        chars++;
    }
    out[k < cap ? k : cap - 1] = '\0';
    return out;
}
