/*
 * json.h — reading JSON that comes from outside (request bodies, batch input lines) strictly and
 * without losing any character, into a cJSON tree.
 *
 * cJSON keeps strings NUL-terminated and has no length, so a "\u0000" in a string would cut it
 * silently, and it turns a bad escape such as "\uZZZZ" into a NUL as well. So lt_json_parse has
 * Jansson parse the text (strict RFC 8259: bad escapes, raw control characters, invalid UTF-8,
 * bad numbers and anything after the value are refused; an unpaired UTF-16 surrogate such as
 * "\ud800", not a Unicode character, is refused with its line and column) and copies Jansson's
 * tree into a cJSON tree, members in the order of the text (a repeated key: its last value),
 * numbers as doubles, every string written with its length, a U+0000 in it as the two bytes C0 80
 * (the "modified UTF-8" of Java and JNI: an overlong NUL that no C string function stops at and
 * no valid UTF-8 contains, so C0 80 in the tree can only stand for U+0000). Object keys holding
 * U+0000 are refused (Jansson keeps keys NUL-terminated); a leading BOM is skipped.
 *
 * Code reading a string from such a tree as data turns it back into its bytes and length with
 * lt_json_bytes; code comparing it with a name (a model, a role, a field value) compares it as it
 * is, so "system\u0000" is not "system". lt_json_show prints one in a message readably.
 *
 * Thread safety: stateless; any thread. Ownership: the caller deletes the tree (cJSON_Delete).
 * Not on the hot path: once per request body.
 */
#ifndef LT_JSON_H
#define LT_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* How U+0000 is stored inside a parsed tree's strings. */
#define LT_JSON_NUL     "\xC0\x80"
#define LT_JSON_NUL_LEN 2

typedef struct lt_json_error {
    bool unicode;   /* an unpaired surrogate (the text was valid JSON, its string not Unicode) */
    size_t offset;  /* byte of the text where (just after) the problem is */
    char path[128]; /* the value it is in ("messages[0].content") where known; "" when not: Jansson
                     * reports a position only, so lt_json_parse leaves it empty */
    char message[256];
} lt_json_error_t;

/* Parses text[0, len). Returns 0 with *out the tree, LT_ERR_FORMAT (not JSON, not UTF-8, or
 * nested deeper than 512 levels) or LT_ERR_INVAL (an unpaired surrogate) with e filled (message
 * with line, column and byte), or LT_ERR_NOMEM. */
int lt_json_parse(const char *text, size_t len, cJSON **out, lt_json_error_t *e);

/* Writes s[0, n) (a string from a parsed tree) to dst with every C0 80 turned back into a NUL;
 * returns the byte count. dst needs n bytes and may be s itself (decoding in place). */
size_t lt_json_bytes(char *dst, const char *s, size_t n);
/* Whether s[0, n) holds an encoded NUL (lt_json_bytes would change it). */
bool lt_json_has_nul(const char *s, size_t n);

/* Writes s (a string from a parsed tree) into out[cap] for an error message: at most max_chars
 * characters, NUL and control characters as \u0000-style escapes, "..." when cut. Returns out. */
const char *lt_json_show(const char *s, size_t max_chars, char *out, size_t cap);

#endif
