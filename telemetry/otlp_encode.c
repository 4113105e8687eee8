/*
 * otlp_encode.c — a batch of lantern spans (span.h) into an OTLP ExportTraceServiceRequest, with
 * the protobuf-c code generated from telemetry/proto (otlp.h's tel_otlp_encode).
 *
 * protobuf-c packs a tree of C structs. Building that tree for a batch would take thousands of
 * small allocations, so one pass sizes it (an upper bound per span) and the tree is carved out
 * of a single calloc'd arena that is freed once the bytes are packed. Strings must be
 * NUL-terminated and valid UTF-8 for protobuf, while a span's string values are slices of its
 * text store: they are copied into the arena and repaired there.
 */
#include "otlp.h"

#include <stdlib.h>
#include <string.h>

#include "lt.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "utf8.h"

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest pb_request_t;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans pb_rspans_t;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans pb_sspans_t;
typedef Opentelemetry__Proto__Trace__V1__Span pb_span_t;
typedef Opentelemetry__Proto__Trace__V1__Span__Event pb_event_t;
typedef Opentelemetry__Proto__Trace__V1__Span__Link pb_link_t;
typedef Opentelemetry__Proto__Trace__V1__Status pb_status_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue pb_kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue pb_any_t;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope pb_scope_t;
typedef Opentelemetry__Proto__Resource__V1__Resource pb_resource_t;

/* ---- the arena ---- */

#define A16(n) (((size_t)(n) + 15) & ~(size_t)15)

typedef struct arena {
    uint8_t *base;
    size_t used, cap;
} arena_t;

static void *arena_alloc(arena_t *a, size_t n) {
    n = A16(n);
    if (a->cap - a->used < n) return NULL; /* the sizing pass was wrong: never expected */
    void *p = a->base + a->used;
    a->used += n;
    return p;
}

/* A string's worst case: every byte replaced by U+FFFD (3 bytes), and the NUL. */
static size_t str_need(size_t len) {
    return A16(3 * len + 1);
}

/* s[0, n) as a NUL-terminated valid UTF-8 string: each maximal invalid subpart, and each NUL
 * (protobuf-c measures strings with strlen), becomes U+FFFD. */
static char *arena_str(arena_t *a, const char *s, size_t n) {
    char *out = arena_alloc(a, 3 * n + 1);
    if (!out) return NULL;
    size_t o = 0, i = 0;
    while (i < n) {
        size_t v = lt_utf8_valid_prefix(s + i, n - i);
        for (size_t j = 0; j < v; j++) {
            if (s[i + j])
                out[o++] = s[i + j];
            else
                memcpy(out + o, "\xEF\xBF\xBD", 3), o += 3;
        }
        i += v;
        if (i >= n) break;
        int ok;
        (void)lt_utf8_seq(s + i, n - i, &ok);
        memcpy(out + o, "\xEF\xBF\xBD", 3), o += 3;
        i += ok > 0 ? (size_t)ok : 1;
    }
    out[o] = 0;
    return out;
}

/* ---- attributes ---- */

/* A string attribute's slice of its owner's text store, clamped to the store. */
static const char *attr_text(const tel_attr_t *at, const char *text, size_t text_cap, size_t *len) {
    size_t off = at->v.s.off, n = at->v.s.len;
    if (!text || off > text_cap) off = text_cap, n = 0;
    if (n > text_cap - off) n = text_cap - off;
    *len = n;
    return text ? text + off : "";
}

static size_t attrs_need(const tel_attr_t *attrs, int n, const char *text, size_t text_cap) {
    size_t need = A16((size_t)n * sizeof(pb_kv_t *));
    for (int i = 0; i < n; i++) {
        need += A16(sizeof(pb_kv_t)) + A16(sizeof(pb_any_t));
        if (attrs[i].type == TEL_ATTR_STR) {
            size_t len;
            attr_text(&attrs[i], text, text_cap, &len);
            need += str_need(len);
        }
    }
    return need;
}

/* attrs[0, n) as KeyValues; a string attribute without a text store (an event's) is dropped
 * and counted in *dropped. 0, or -1 when the arena ran out. */
static int encode_attrs(arena_t *a, const tel_attr_t *attrs, int n, const char *text,
                        size_t text_cap, pb_kv_t ***out, size_t *n_out, uint32_t *dropped) {
    *out = arena_alloc(a, (size_t)n * sizeof(pb_kv_t *));
    *n_out = 0;
    if (n > 0 && !*out) return -1;
    for (int i = 0; i < n; i++) {
        const tel_attr_t *at = &attrs[i];
        if (at->type > TEL_ATTR_BOOL || (at->type == TEL_ATTR_STR && !text)) {
            (*dropped)++;
            continue;
        }
        pb_kv_t *kv = arena_alloc(a, sizeof *kv);
        pb_any_t *v = arena_alloc(a, sizeof *v);
        if (!kv || !v) return -1;
        *kv = (pb_kv_t)OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
        *v = (pb_any_t)OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
        kv->key = (char *)(at->key ? at->key : ""); /* static strings: not copied */
        kv->value = v;
        switch (at->type) {
        case TEL_ATTR_STR: {
            size_t len;
            const char *s = attr_text(at, text, text_cap, &len);
            v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
            if (!(v->string_value = arena_str(a, s, len))) return -1;
            break;
        }
        case TEL_ATTR_INT:
            v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
            v->int_value = at->v.i;
            break;
        case TEL_ATTR_DOUBLE:
            v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
            v->double_value = at->v.d;
            break;
        default:
            v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
            v->bool_value = at->v.b;
            break;
        }
        (*out)[(*n_out)++] = kv;
    }
    return 0;
}

/* ---- spans ---- */

static int clampi(int v, int hi) {
    return v < 0 ? 0 : v > hi ? hi : v;
}

static size_t span_need(const tel_span_t *sp) {
    size_t need =
        A16(sizeof(pb_span_t)) + A16(sizeof(pb_status_t)) +
        str_need(strnlen(sp->name, sizeof sp->name)) +
        str_need(strnlen(sp->status_message, sizeof sp->status_message)) +
        attrs_need(sp->attrs, clampi(sp->n_attrs, TEL_MAX_ATTRS), sp->text, sizeof sp->text);
    int ne = clampi(sp->n_events, TEL_MAX_EVENTS);
    need += A16((size_t)ne * sizeof(pb_event_t *));
    for (int i = 0; i < ne; i++)
        need += A16(sizeof(pb_event_t)) + attrs_need(sp->events[i].attrs,
                                                     clampi(sp->events[i].n_attrs, TEL_EVENT_ATTRS),
                                                     NULL, 0);
    int nl = sp->links ? clampi(sp->n_links, 1 << 20) : 0;
    need += A16((size_t)nl * sizeof(pb_link_t *)) + (size_t)nl * A16(sizeof(pb_link_t));
    return need;
}

static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

static int encode_events(arena_t *a, const tel_span_t *sp, pb_span_t *ps) {
    int ne = clampi(sp->n_events, TEL_MAX_EVENTS);
    ps->events = arena_alloc(a, (size_t)ne * sizeof(pb_event_t *));
    if (ne > 0 && !ps->events) return -1;
    for (int i = 0; i < ne; i++) {
        const tel_event_t *e = &sp->events[i];
        pb_event_t *pe = arena_alloc(a, sizeof *pe);
        if (!pe) return -1;
        *pe = (pb_event_t)OPENTELEMETRY__PROTO__TRACE__V1__SPAN__EVENT__INIT;
        pe->time_unix_nano = e->time_unix_ns;
        pe->name = (char *)(e->name ? e->name : "");
        if (encode_attrs(a, e->attrs, clampi(e->n_attrs, TEL_EVENT_ATTRS), NULL, 0, &pe->attributes,
                         &pe->n_attributes, &pe->dropped_attributes_count))
            return -1;
        ps->events[ps->n_events++] = pe;
    }
    return 0;
}

static int encode_links(arena_t *a, const tel_span_t *sp, pb_span_t *ps) {
    int nl = sp->links ? clampi(sp->n_links, 1 << 20) : 0;
    ps->links = arena_alloc(a, (size_t)nl * sizeof(pb_link_t *));
    if (nl > 0 && !ps->links) return -1;
    for (int i = 0; i < nl; i++) {
        const tel_link_t *l = &sp->links[i];
        pb_link_t *pl = arena_alloc(a, sizeof *pl);
        if (!pl) return -1;
        *pl = (pb_link_t)OPENTELEMETRY__PROTO__TRACE__V1__SPAN__LINK__INIT;
        pl->trace_id = (ProtobufCBinaryData){16, (uint8_t *)l->trace_id};
        pl->span_id = (ProtobufCBinaryData){8, (uint8_t *)l->span_id};
        pl->flags = l->flags; /* bits 0-7: the W3C trace flags; remoteness unknown (bits 8-9) */
        ps->links[ps->n_links++] = pl;
    }
    return 0;
}

static pb_span_t *encode_span(arena_t *a, const tel_span_t *sp) {
    pb_span_t *ps = arena_alloc(a, sizeof *ps);
    pb_status_t *st = arena_alloc(a, sizeof *st);
    if (!ps || !st) return NULL;
    *ps = (pb_span_t)OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
    *st = (pb_status_t)OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;
    /* The ids point into the span: it outlives the packing. */
    ps->trace_id = (ProtobufCBinaryData){16, (uint8_t *)sp->trace_id};
    ps->span_id = (ProtobufCBinaryData){8, (uint8_t *)sp->span_id};
    if (!all_zero(sp->parent_id, 8)) /* a root span has an empty parent_span_id */
        ps->parent_span_id = (ProtobufCBinaryData){8, (uint8_t *)sp->parent_id};
    ps->flags = sp->flags;
    if (!(ps->name = arena_str(a, sp->name, strnlen(sp->name, sizeof sp->name)))) return NULL;
    ps->kind = sp->kind <= TEL_KIND_CONSUMER ? sp->kind : 0; /* same numbers as SpanKind */
    ps->start_time_unix_nano = sp->start_unix_ns;
    ps->end_time_unix_nano = sp->end_unix_ns;
    ps->dropped_attributes_count = sp->dropped_attrs;
    if (encode_attrs(a, sp->attrs, clampi(sp->n_attrs, TEL_MAX_ATTRS), sp->text, sizeof sp->text,
                     &ps->attributes, &ps->n_attributes, &ps->dropped_attributes_count))
        return NULL;
    ps->dropped_events_count = sp->dropped_events;
    if (encode_events(a, sp, ps) || encode_links(a, sp, ps)) return NULL;
    st->code = sp->status <= TEL_STATUS_ERROR ? sp->status : 0; /* same numbers as StatusCode */
    st->message =
        arena_str(a, sp->status_message, strnlen(sp->status_message, sizeof sp->status_message));
    if (!st->message) return NULL;
    ps->status = st;
    return ps;
}

/* ---- the request ---- */

int tel_otlp_encode(const tel_span_t *const *spans, size_t n, const tel_resource_t *res,
                    size_t headroom, uint8_t **out, size_t *len, char *err) {
    *out = NULL;
    *len = 0;
    int n_rattrs = clampi(res->n_attrs, TEL_RESOURCE_ATTRS);
    arena_t a = {0};
    a.cap = A16(n * sizeof(pb_span_t *)) +
            attrs_need(res->attrs, n_rattrs, res->text, sizeof res->text);
    for (size_t i = 0; i < n; i++) a.cap += span_need(spans[i]);
    if (!(a.base = calloc(1, a.cap ? a.cap : 1)))
        return lt_errf(err, LT_ERR_NOMEM, "otlp: out of memory encoding %zu spans", n);

    pb_resource_t resource = OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
    pb_scope_t scope = OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
    pb_sspans_t ss = OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
    pb_rspans_t rs = OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
    pb_request_t req =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
    pb_sspans_t *ssp = &ss;
    pb_rspans_t *rsp = &rs;
    scope.name = "lantern";
    scope.version = (char *)lt_version();
    ss.scope = &scope;
    rs.resource = &resource;
    rs.n_scope_spans = 1, rs.scope_spans = &ssp;
    req.n_resource_spans = 1, req.resource_spans = &rsp;

    int rc = LT_ERR_NOMEM;
    if (encode_attrs(&a, res->attrs, n_rattrs, res->text, sizeof res->text, &resource.attributes,
                     &resource.n_attributes, &resource.dropped_attributes_count))
        goto done;
    if (!(ss.spans = arena_alloc(&a, n * sizeof(pb_span_t *))) && n) goto done;
    for (size_t i = 0; i < n; i++)
        if (!(ss.spans[ss.n_spans++] = encode_span(&a, spans[i]))) goto done;

    size_t size = protobuf_c_message_get_packed_size(&req.base);
    uint8_t *buf = malloc(headroom + size + 1);
    if (!buf) goto done;
    protobuf_c_message_pack(&req.base, buf + headroom);
    *out = buf;
    *len = size;
    rc = 0;
done:
    free(a.base);
    return rc ? lt_errf(err, rc, "otlp: out of memory encoding %zu spans", n) : 0;
}
