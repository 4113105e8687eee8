/*
 * span.h — a finished span as lantern's processes record it and the OTLP exporter sends it: the
 * contract between the recorder (trace.h: ids, context, the span pool) and the exporter
 * (otlp.h: the batch processor and the OTLP encoders and transports).
 *
 * A span is fixed-size plain data except its links, which point into storage the recorder owns:
 * the pool hands spans out and takes them back, so recording allocates nothing. Attribute keys
 * and event names are static strings (literals); string values live in the span's own text
 * store. Times are wall-clock nanoseconds since the Unix epoch (OTLP's time_unix_nano).
 *
 * Thread safety: a span belongs to one thread at a time: the recorder's until it hands the span
 * to the batch processor, the exporter thread's until it gives the span back.
 */
#ifndef TEL_SPAN_H
#define TEL_SPAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TEL_NAME_MAX    64   /* bytes of a span name, NUL included */
#define TEL_MAX_ATTRS   40   /* attributes per span */
#define TEL_TEXT_MAX    1536 /* bytes of string attribute values per span */
#define TEL_MAX_EVENTS  8    /* timed events per span */
#define TEL_EVENT_ATTRS 4    /* attributes per event (numbers only) */

typedef enum tel_kind { /* OTLP's Span.SpanKind */
                        TEL_KIND_INTERNAL = 1,
                        TEL_KIND_SERVER = 2,
                        TEL_KIND_CLIENT = 3,
                        TEL_KIND_PRODUCER = 4,
                        TEL_KIND_CONSUMER = 5,
} tel_kind_t;

typedef enum tel_status { /* OTLP's Status.StatusCode */
                          TEL_STATUS_UNSET = 0,
                          TEL_STATUS_OK = 1,
                          TEL_STATUS_ERROR = 2,
} tel_status_t;

typedef enum tel_attr_type {
    TEL_ATTR_STR = 0,
    TEL_ATTR_INT,
    TEL_ATTR_DOUBLE,
    TEL_ATTR_BOOL,
} tel_attr_type_t;

typedef struct tel_attr {
    const char *key; /* a static string */
    uint8_t type;    /* tel_attr_type_t */
    union {
        int64_t i;
        double d;
        bool b;
        struct {
            uint32_t off, len; /* bytes [off, off + len) of the owner's text store */
        } s;
    } v;
} tel_attr_t;

typedef struct tel_link {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* W3C trace flags of the linked context */
} tel_link_t;

typedef struct tel_event {
    const char *name; /* a static string */
    uint64_t time_unix_ns;
    int n_attrs;
    tel_attr_t attrs[TEL_EVENT_ATTRS]; /* numbers and booleans only */
} tel_event_t;

typedef struct tel_span {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8]; /* all zero: a root span */
    uint8_t flags;        /* W3C trace flags (bit 0: sampled) */
    char name[TEL_NAME_MAX];
    uint8_t kind;   /* tel_kind_t */
    uint8_t status; /* tel_status_t */
    char status_message[128];
    uint64_t start_unix_ns, end_unix_ns;
    int n_attrs;
    tel_attr_t attrs[TEL_MAX_ATTRS];
    uint32_t text_len;
    char text[TEL_TEXT_MAX]; /* string attribute values, not NUL-terminated */
    int n_events;
    tel_event_t events[TEL_MAX_EVENTS];
    int n_links;
    const tel_link_t *links;                /* (n_links) storage owned by the recorder */
    uint32_t dropped_attrs, dropped_events; /* over the fixed capacities */
} tel_span_t;

/* A process's resource: attributes describing who sends the spans (service.name, process.pid,
 * lantern.process.role...). Same storage rules as a span's attributes. */
#define TEL_RESOURCE_ATTRS 24
typedef struct tel_resource {
    int n_attrs;
    tel_attr_t attrs[TEL_RESOURCE_ATTRS];
    uint32_t text_len;
    char text[2048];
} tel_resource_t;

/* Helpers that fill a span or a resource (the same layout of attrs and text store); a NULL span
 * (tracing off, or not recorded) is fine and ignored. They drop
 * (and count in *dropped, may be NULL) what does not fit; string values are truncated at a UTF-8
 * boundary when the store runs short. */
void tel_attrs_str(tel_attr_t *attrs, int *n, int cap, char *text, uint32_t *text_len,
                   uint32_t text_cap, uint32_t *dropped, const char *key, const char *s,
                   size_t len);
void tel_span_set_str(tel_span_t *sp, const char *key, const char *s);
void tel_span_set_int(tel_span_t *sp, const char *key, int64_t v);
void tel_span_set_double(tel_span_t *sp, const char *key, double v);
void tel_span_set_bool(tel_span_t *sp, const char *key, bool v);
void tel_resource_set_str(tel_resource_t *r, const char *key, const char *s);
void tel_resource_set_int(tel_resource_t *r, const char *key, int64_t v);
/* A string attribute's value (not NUL-terminated) from its owner's text store. */
static inline const char *tel_attr_str(const char *text, const tel_attr_t *a, size_t *len) {
    *len = a->v.s.len;
    return text + a->v.s.off;
}

#endif
