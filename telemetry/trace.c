/*
 * trace.c — the span recorder (trace.h): W3C context, ids, the sampler and the span pool.
 *
 * The pool is an array of slots and a lock-free stack of free slot indices (a Treiber stack
 * whose head packs the index with a tag that changes on every push, so a stale pop cannot
 * succeed: no ABA). Starting a span pops a slot (or takes one never used yet: the array is
 * calloc'd, so untouched slots cost no memory), the exporter's release pushes it back.
 */
#define _GNU_SOURCE
#include "trace.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"

/* ---- W3C trace context ---- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* uppercase is invalid: W3C asks for lowercase */
}

static bool parse_hex(const char *s, int n, uint8_t *out, bool *all_zero) {
    bool zero = true;
    for (int i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
        if (out[i]) zero = false;
    }
    if (all_zero) *all_zero = zero;
    return true;
}

bool tel_ctx_parse(const char *s, size_t len, tel_ctx_t *out) {
    memset(out, 0, sizeof *out);
    if (!s || len < TEL_TRACEPARENT_LEN) return false;
    uint8_t version;
    bool tz, pz;
    if (!parse_hex(s, 1, &version, NULL) || version == 0xff) return false;
    /* version 00 is exactly the 55 characters; a later version may add fields after a '-' */
    if (version == 0 ? len != TEL_TRACEPARENT_LEN
                     : len > TEL_TRACEPARENT_LEN && s[TEL_TRACEPARENT_LEN] != '-')
        return false;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-') return false;
    if (!parse_hex(s + 3, 16, out->trace_id, &tz) || !parse_hex(s + 36, 8, out->span_id, &pz) ||
        !parse_hex(s + 53, 1, &out->flags, NULL) || tz || pz) {
        memset(out, 0, sizeof *out);
        return false;
    }
    out->valid = true;
    return true;
}

static void to_hex(const uint8_t *b, int n, char *out) {
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
}

void tel_ctx_format(const tel_ctx_t *c, char *out) {
    memcpy(out, "00-", 3);
    to_hex(c->trace_id, 16, out + 3);
    out[35] = '-';
    to_hex(c->span_id, 8, out + 36);
    out[52] = '-';
    to_hex(&c->flags, 1, out + 53);
    out[55] = '\0';
}

void tel_trace_id_hex(const uint8_t id[16], char *out) {
    to_hex(id, 16, out);
    out[32] = '\0';
}

tel_ctx_t tel_span_ctx(const tel_span_t *sp) {
    tel_ctx_t c = {.flags = sp->flags, .valid = true};
    memcpy(c.trace_id, sp->trace_id, 16);
    memcpy(c.span_id, sp->span_id, 8);
    return c;
}

/* ---- ids ---- */

/* xoshiro256** per thread, seeded from getrandom(); a change of process id (a fork that did
 * not exec) re-seeds, so no two processes share a sequence. */
static _Thread_local uint64_t t_rng[4];
static _Thread_local pid_t t_rng_pid;

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void) {
    pid_t pid = getpid();
    if (t_rng_pid != pid) {
        if (getrandom(t_rng, sizeof t_rng, 0) != sizeof t_rng) { /* no entropy: time and pid */
            uint64_t x = lt_now_ns() ^ ((uint64_t)pid << 32) ^ (uint64_t)(uintptr_t)&t_rng;
            for (int i = 0; i < 4; i++) { /* splitmix64 */
                x += 0x9e3779b97f4a7c15ull;
                uint64_t z = x;
                z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
                z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
                t_rng[i] = z ^ (z >> 31);
            }
        }
        t_rng_pid = pid;
    }
    uint64_t *s = t_rng;
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static void random_id(uint8_t *id, int n) {
    do {
        for (int i = 0; i < n; i += 8) {
            uint64_t r = rng_next();
            memcpy(id + i, &r, (size_t)(n - i < 8 ? n - i : 8));
        }
        bool zero = true;
        for (int i = 0; i < n; i++) zero &= id[i] == 0;
        if (!zero) return;
    } while (1);
}

void tel_new_trace_id(uint8_t id[16]) {
    random_id(id, 16);
}

void tel_new_span_id(uint8_t id[8]) {
    random_id(id, 8);
}

uint64_t tel_now_unix_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- sampler ---- */

int tel_sampler_from_env(tel_sampler_t *s, char *err) {
    static const struct {
        const char *name;
        tel_sampler_kind_t kind;
    } names[] = {{"always_on", TEL_SAMPLE_ALWAYS_ON},
                 {"always_off", TEL_SAMPLE_ALWAYS_OFF},
                 {"traceidratio", TEL_SAMPLE_RATIO},
                 {"parentbased_always_on", TEL_SAMPLE_PARENT_ON},
                 {"parentbased_always_off", TEL_SAMPLE_PARENT_OFF},
                 {"parentbased_traceidratio", TEL_SAMPLE_PARENT_RATIO}};
    s->kind = TEL_SAMPLE_PARENT_ON;
    s->ratio = 1.0;
    const char *v = getenv("OTEL_TRACES_SAMPLER"), *arg = getenv("OTEL_TRACES_SAMPLER_ARG");
    if (v && *v) {
        size_t i = 0;
        while (i < sizeof names / sizeof names[0] && strcmp(names[i].name, v) != 0) i++;
        if (i == sizeof names / sizeof names[0])
            return lt_errf(err, LT_ERR_INVAL,
                           "OTEL_TRACES_SAMPLER '%.60s': want always_on, always_off, "
                           "traceidratio or parentbased_{always_on,always_off,traceidratio}",
                           v);
        s->kind = names[i].kind;
    }
    if ((s->kind == TEL_SAMPLE_RATIO || s->kind == TEL_SAMPLE_PARENT_RATIO) && arg && *arg &&
        !lt_parse_double(arg, 0, 1, &s->ratio))
        return lt_errf(err, LT_ERR_INVAL, "OTEL_TRACES_SAMPLER_ARG '%.60s': want a ratio in [0, 1]",
                       arg);
    return LT_OK;
}

/* traceidratio: the trace id's last 8 bytes (big-endian) compared with ratio x 2^63, as the
 * OpenTelemetry SDKs do, so every process of a trace decides alike. */
static bool ratio_keeps(double ratio, const uint8_t trace[16]) {
    uint64_t x = 0;
    for (int i = 8; i < 16; i++) x = x << 8 | trace[i];
    return (double)(x >> 1) < ratio * 9223372036854775808.0;
}

bool tel_sampler_decide(const tel_sampler_t *s, const tel_ctx_t *parent, const uint8_t trace[16]) {
    bool has_parent = parent && parent->valid;
    switch (s->kind) {
    case TEL_SAMPLE_ALWAYS_ON: return true;
    case TEL_SAMPLE_ALWAYS_OFF: return false;
    case TEL_SAMPLE_RATIO: return ratio_keeps(s->ratio, trace);
    case TEL_SAMPLE_PARENT_ON: return has_parent ? tel_ctx_sampled(parent) : true;
    case TEL_SAMPLE_PARENT_OFF: return has_parent ? tel_ctx_sampled(parent) : false;
    case TEL_SAMPLE_PARENT_RATIO:
        return has_parent ? tel_ctx_sampled(parent) : ratio_keeps(s->ratio, trace);
    }
    return true;
}

/* ---- the pool ---- */

#define TEL_LINKS_MAX 65536 /* links per span at most: beyond, counted as dropped */

typedef struct slot {
    tel_span_t span; /* first: a span pointer is its slot's */
    tel_link_t *links;
    int links_cap;
    _Atomic uint32_t next; /* free-stack link: read by racing pops, hence atomic */
} slot_t;

static struct {
    bool enabled;
    tel_tracer_config_t cfg;
    slot_t *slots;
    uint32_t n_slots;
    _Atomic uint64_t free_head; /* (tag << 32) | (index + 1); index + 1 == 0: empty */
    _Atomic uint32_t fresh;     /* slots never handed out start here: the pool's memory is
                                   touched only as far as it is used */
    _Atomic uint64_t started, submitted, discarded, pool_empty, links_dropped;
} g;

static void push_free(slot_t *s) {
    uint32_t idx = (uint32_t)(s - g.slots);
    uint64_t head = atomic_load_explicit(&g.free_head, memory_order_relaxed);
    uint64_t next;
    do {
        atomic_store_explicit(&s->next, (uint32_t)head, memory_order_relaxed); /* old top */
        next = ((head >> 32) + 1) << 32 | (uint64_t)(idx + 1);
        /* release: the slot's contents and next are written before it becomes poppable */
    } while (!atomic_compare_exchange_weak_explicit(&g.free_head, &head, next, memory_order_release,
                                                    memory_order_relaxed));
}

static slot_t *pop_free(void) {
    /* acquire: pairs with push_free's release, so next and the slot are seen as pushed */
    uint64_t head = atomic_load_explicit(&g.free_head, memory_order_acquire);
    for (;;) {
        uint32_t top = (uint32_t)head;
        if (top == 0) { /* nothing given back: a slot never used yet, if any is left */
            if (atomic_load_explicit(&g.fresh, memory_order_relaxed) >= g.n_slots) return NULL;
            uint32_t i = atomic_fetch_add_explicit(&g.fresh, 1, memory_order_relaxed);
            return i < g.n_slots ? &g.slots[i] : NULL;
        }
        slot_t *s = &g.slots[top - 1];
        uint64_t next =
            ((head >> 32) + 1) << 32 | atomic_load_explicit(&s->next, memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&g.free_head, &head, next, memory_order_acquire,
                                                  memory_order_acquire))
            return s;
    }
}

int tel_tracer_init(const tel_tracer_config_t *cfg, char *err) {
    memset(&g, 0, sizeof g);
    g.cfg = *cfg;
    if (!cfg->enabled) return LT_OK;
    if (cfg->pool_size < 1 || !cfg->submit)
        return lt_errf(err, LT_ERR_INVAL, "tracer: a pool and an exporter are needed");
    g.slots = calloc((size_t)cfg->pool_size, sizeof *g.slots);
    if (!g.slots)
        return lt_errf(err, LT_ERR_NOMEM, "tracer: out of memory for %d spans", cfg->pool_size);
    g.n_slots = (uint32_t)cfg->pool_size;
    g.enabled = true;
    return LT_OK;
}

void tel_tracer_fini(void) {
    if (g.slots)
        for (uint32_t i = 0; i < g.n_slots; i++) free(g.slots[i].links);
    free(g.slots);
    memset(&g, 0, sizeof g);
}

bool tel_tracer_enabled(void) {
    return g.enabled;
}

void tel_tracer_stats(tel_tracer_stats_t *st) {
    st->started = atomic_load(&g.started);
    st->submitted = atomic_load(&g.submitted);
    st->discarded = atomic_load(&g.discarded);
    st->pool_empty = atomic_load(&g.pool_empty);
    st->links_dropped = atomic_load(&g.links_dropped);
}

/* ---- spans ---- */

tel_span_t *tel_span_start(const char *name, tel_kind_t kind, const tel_ctx_t *parent,
                           uint64_t start_unix_ns) {
    if (!g.enabled) return NULL;
    slot_t *s = pop_free();
    if (!s) {
        atomic_fetch_add_explicit(&g.pool_empty, 1, memory_order_relaxed);
        return NULL;
    }
    atomic_fetch_add_explicit(&g.started, 1, memory_order_relaxed);
    tel_span_t *sp = &s->span;
    /* reset only the header and the counts: the arrays are read up to their counts */
    sp->n_attrs = sp->n_events = sp->n_links = 0;
    sp->text_len = sp->dropped_attrs = sp->dropped_events = 0;
    sp->status = TEL_STATUS_UNSET;
    sp->status_message[0] = '\0';
    sp->kind = (uint8_t)kind;
    sp->links = s->links;
    snprintf(sp->name, sizeof sp->name, "%s", name);
    if (parent && parent->valid) {
        memcpy(sp->trace_id, parent->trace_id, 16);
        memcpy(sp->parent_id, parent->span_id, 8);
    } else {
        tel_new_trace_id(sp->trace_id);
        memset(sp->parent_id, 0, 8);
    }
    tel_new_span_id(sp->span_id);
    sp->flags = tel_sampler_decide(&g.cfg.sampler, parent, sp->trace_id) ? 1 : 0;
    sp->start_unix_ns = start_unix_ns ? start_unix_ns : tel_now_unix_ns();
    sp->end_unix_ns = 0;
    return sp;
}

void tel_span_add_link(tel_span_t *sp, const tel_ctx_t *to) {
    if (!sp || !to || !to->valid) return;
    slot_t *s = (slot_t *)sp;
    if (sp->n_links == s->links_cap) {
        int cap = s->links_cap ? s->links_cap * 2 : 64;
        tel_link_t *nl = cap <= TEL_LINKS_MAX ? realloc(s->links, sizeof *nl * (size_t)cap) : NULL;
        if (!nl) {
            atomic_fetch_add_explicit(&g.links_dropped, 1, memory_order_relaxed);
            return;
        }
        s->links = nl;
        s->links_cap = cap;
        sp->links = nl;
    }
    tel_link_t *l = &s->links[sp->n_links++];
    memcpy(l->trace_id, to->trace_id, 16);
    memcpy(l->span_id, to->span_id, 8);
    l->flags = to->flags;
}

void tel_span_event(tel_span_t *sp, const char *name, uint64_t t_unix_ns, int n, ...) {
    if (!sp) return;
    if (sp->n_events == TEL_MAX_EVENTS) {
        sp->dropped_events++;
        return;
    }
    tel_event_t *e = &sp->events[sp->n_events++];
    e->name = name;
    e->time_unix_ns = t_unix_ns ? t_unix_ns : tel_now_unix_ns();
    e->n_attrs = 0;
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *key = va_arg(ap, const char *);
        int64_t v = va_arg(ap, int64_t);
        if (e->n_attrs == TEL_EVENT_ATTRS) continue;
        e->attrs[e->n_attrs++] = (tel_attr_t){.key = key, .type = TEL_ATTR_INT, .v.i = v};
    }
    va_end(ap);
}

void tel_span_set_status(tel_span_t *sp, tel_status_t st, const char *message) {
    if (!sp) return;
    sp->status = (uint8_t)st;
    snprintf(sp->status_message, sizeof sp->status_message, "%s", message ? message : "");
}

void tel_span_submit(tel_span_t *sp, uint64_t end_unix_ns, bool keep) {
    if (!sp) return;
    sp->end_unix_ns = end_unix_ns ? end_unix_ns : tel_now_unix_ns();
    if (sp->end_unix_ns < sp->start_unix_ns) sp->end_unix_ns = sp->start_unix_ns;
    if (!(sp->flags & 1) && !keep) {
        atomic_fetch_add_explicit(&g.discarded, 1, memory_order_relaxed);
        tel_span_release(sp);
        return;
    }
    atomic_fetch_add_explicit(&g.submitted, 1, memory_order_relaxed);
    g.cfg.submit(sp, g.cfg.submit_user);
}

void tel_span_release(tel_span_t *sp) {
    if (sp) push_free((slot_t *)sp);
}
