/*
 * span.c — filling a span's or a resource's attributes (span.h).
 */
#include "span.h"

#include <string.h>

void tel_attrs_str(tel_attr_t *attrs, int *n, int cap, char *text, uint32_t *text_len,
                   uint32_t text_cap, uint32_t *dropped, const char *key, const char *s,
                   size_t len) {
    if (*n >= cap) {
        if (dropped) (*dropped)++;
        return;
    }
    if (!s) s = "", len = 0;
    size_t room = text_cap - *text_len;
    if (len > room) { /* cut at a UTF-8 boundary: never leave half a character */
        len = room;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80) len--;
    }
    memcpy(text + *text_len, s, len);
    tel_attr_t *a = &attrs[(*n)++];
    a->key = key;
    a->type = TEL_ATTR_STR;
    a->v.s.off = *text_len;
    a->v.s.len = (uint32_t)len;
    *text_len += (uint32_t)len;
}

void tel_span_set_str(tel_span_t *sp, const char *key, const char *s) {
    if (!sp) return;
    tel_attrs_str(sp->attrs, &sp->n_attrs, TEL_MAX_ATTRS, sp->text, &sp->text_len, TEL_TEXT_MAX,
                  &sp->dropped_attrs, key, s, s ? strlen(s) : 0);
}

static tel_attr_t *span_attr(tel_span_t *sp, const char *key, uint8_t type) {
    if (!sp) return NULL;
    if (sp->n_attrs >= TEL_MAX_ATTRS) {
        sp->dropped_attrs++;
        return NULL;
    }
    tel_attr_t *a = &sp->attrs[sp->n_attrs++];
    a->key = key;
    a->type = type;
    return a;
}

void tel_span_set_int(tel_span_t *sp, const char *key, int64_t v) {
    tel_attr_t *a = span_attr(sp, key, TEL_ATTR_INT);
    if (a) a->v.i = v;
}

void tel_span_set_double(tel_span_t *sp, const char *key, double v) {
    tel_attr_t *a = span_attr(sp, key, TEL_ATTR_DOUBLE);
    if (a) a->v.d = v;
}

void tel_span_set_bool(tel_span_t *sp, const char *key, bool v) {
    tel_attr_t *a = span_attr(sp, key, TEL_ATTR_BOOL);
    if (a) a->v.b = v;
}

void tel_resource_set_str(tel_resource_t *r, const char *key, const char *s) {
    tel_attrs_str(r->attrs, &r->n_attrs, TEL_RESOURCE_ATTRS, r->text, &r->text_len, sizeof r->text,
                  NULL, key, s, s ? strlen(s) : 0);
}

void tel_resource_set_int(tel_resource_t *r, const char *key, int64_t v) {
    if (r->n_attrs >= TEL_RESOURCE_ATTRS) return;
    tel_attr_t *a = &r->attrs[r->n_attrs++];
    a->key = key;
    a->type = TEL_ATTR_INT;
    a->v.i = v;
}
