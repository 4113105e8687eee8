/*
 * otlp_send.c — test_otlp_export.py's sender: N deterministic spans through the batch span
 * processor and the OTLP exporter, configured exactly as a lantern process is (the OTEL_BSP_*
 * and OTEL_EXPORTER_OTLP_* variables, --endpoint as --otlp-traces-endpoint), to the receiver the
 * test runs. It prints each span it sent as one JSON line ({"span": ...}: the truth the test
 * compares the received protobuf with) and, at the end, a {"summary": ...} line: how long each
 * submit took (the submitter must never wait for the collector), flush's and destroy's results
 * and durations, and the processor's final counters.
 *
 *   otlp_send [--endpoint URL] [--spans N] [--interval-us U] [--flush-ms F] [--destroy-ms D]
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bsp.h"
#include "lt.h"
#include "otlp.h"
#include "span.h"

static const tel_link_t LINKS[2] = {
    {.trace_id = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e,
                  0x0e, 0x47, 0x36},
     .span_id = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
     .flags = 1},
    {.trace_id = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
     .span_id = {0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8},
     .flags = 0},
};

static void fill(uint8_t *p, size_t n, uint64_t seed) {
    for (size_t k = 0; k < n; k++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[k] = (uint8_t)(seed >> 56);
    }
    p[0] |= 1; /* never all zero */
}

/* Span i: every field varies with i, so that a field swapped between spans shows. */
static void make_span(tel_span_t *sp, int i, const tel_span_t *prev) {
    memset(sp, 0, sizeof *sp);
    fill(sp->trace_id, 16, (uint64_t)i * 2 + 1);
    fill(sp->span_id, 8, (uint64_t)i * 2 + 2);
    if (i % 3 && prev) memcpy(sp->parent_id, prev->span_id, 8); /* every third span: a root */
    sp->flags = (uint8_t)(i % 2);
    snprintf(sp->name, sizeof sp->name, "span-%d", i);
    sp->kind = (uint8_t)(1 + i % 5);
    sp->status = (uint8_t)(i % 3);
    if (sp->status == TEL_STATUS_ERROR)
        snprintf(sp->status_message, sizeof sp->status_message, "failure %d", i);
    sp->start_unix_ns = 1700000000000000000ull + (uint64_t)i * 1000003ull;
    sp->end_unix_ns = sp->start_unix_ns + 999 + (uint64_t)i;
    char s[64];
    snprintf(s, sizeof s, "value-%d caf\xc3\xa9", i);
    tel_span_set_str(sp, "lantern.str", s);
    tel_span_set_int(sp, "lantern.int", (int64_t)i * 1000 - 7);
    tel_span_set_double(sp, "lantern.double", i + 0.5);
    tel_span_set_bool(sp, "lantern.bool", i % 2);
    sp->dropped_attrs += (uint32_t)(i % 3);
    sp->dropped_events = (uint32_t)(i % 2);
    if (i % 2) {
        sp->n_events = 1;
        sp->events[0] =
            (tel_event_t){.name = "tick", .time_unix_ns = sp->start_unix_ns + 5, .n_attrs = 3};
        sp->events[0].attrs[0] = (tel_attr_t){.key = "n", .type = TEL_ATTR_INT, .v.i = i};
        sp->events[0].attrs[1] = (tel_attr_t){.key = "x", .type = TEL_ATTR_DOUBLE, .v.d = 0.25};
        sp->events[0].attrs[2] = (tel_attr_t){.key = "b", .type = TEL_ATTR_BOOL, .v.b = true};
    }
    if (i % 4 == 1) sp->n_links = 2, sp->links = LINKS;
}

/* ---- the truth, as JSON (ids in lowercase hex, 64-bit numbers as strings) ---- */

static void hex(char *out, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
}

static void add_u64(cJSON *o, const char *k, uint64_t v) {
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    cJSON_AddStringToObject(o, k, b);
}

static cJSON *attrs_json(const tel_attr_t *a, int n, const char *text) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < n; i++) {
        char b[64];
        switch (a[i].type) {
        case TEL_ATTR_STR: {
            size_t len;
            const char *s = tel_attr_str(text, &a[i], &len);
            char *v = strndup(s, len);
            cJSON_AddStringToObject(o, a[i].key, v);
            free(v);
            break;
        }
        case TEL_ATTR_INT:
            snprintf(b, sizeof b, "int:%lld", (long long)a[i].v.i);
            cJSON_AddStringToObject(o, a[i].key, b);
            break;
        case TEL_ATTR_DOUBLE:
            snprintf(b, sizeof b, "double:%.17g", a[i].v.d);
            cJSON_AddStringToObject(o, a[i].key, b);
            break;
        default: cJSON_AddStringToObject(o, a[i].key, a[i].v.b ? "bool:1" : "bool:0"); break;
        }
    }
    return o;
}

static void print_span(const tel_span_t *sp) {
    char b[64];
    cJSON *o = cJSON_CreateObject();
    hex(b, sp->trace_id, 16), cJSON_AddStringToObject(o, "trace_id", b);
    hex(b, sp->span_id, 8), cJSON_AddStringToObject(o, "span_id", b);
    static const uint8_t zero[8];
    if (memcmp(sp->parent_id, zero, 8))
        hex(b, sp->parent_id, 8);
    else
        b[0] = 0;
    cJSON_AddStringToObject(o, "parent_span_id", b);
    cJSON_AddNumberToObject(o, "flags", sp->flags);
    cJSON_AddStringToObject(o, "name", sp->name);
    cJSON_AddNumberToObject(o, "kind", sp->kind);
    add_u64(o, "start", sp->start_unix_ns);
    add_u64(o, "end", sp->end_unix_ns);
    cJSON_AddItemToObject(o, "attributes", attrs_json(sp->attrs, sp->n_attrs, sp->text));
    cJSON_AddNumberToObject(o, "dropped_attributes", sp->dropped_attrs);
    cJSON *ev = cJSON_AddArrayToObject(o, "events");
    for (int i = 0; i < sp->n_events; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", sp->events[i].name);
        add_u64(e, "time", sp->events[i].time_unix_ns);
        cJSON_AddItemToObject(e, "attributes",
                              attrs_json(sp->events[i].attrs, sp->events[i].n_attrs, NULL));
        cJSON_AddItemToArray(ev, e);
    }
    cJSON_AddNumberToObject(o, "dropped_events", sp->dropped_events);
    cJSON *ln = cJSON_AddArrayToObject(o, "links");
    for (int i = 0; i < sp->n_links; i++) {
        cJSON *l = cJSON_CreateObject();
        hex(b, sp->links[i].trace_id, 16), cJSON_AddStringToObject(l, "trace_id", b);
        hex(b, sp->links[i].span_id, 8), cJSON_AddStringToObject(l, "span_id", b);
        cJSON_AddNumberToObject(l, "flags", sp->links[i].flags);
        cJSON_AddItemToArray(ln, l);
    }
    cJSON_AddNumberToObject(o, "status_code", sp->status);
    cJSON_AddStringToObject(o, "status_message", sp->status_message);
    cJSON *line = cJSON_CreateObject();
    cJSON_AddItemToObject(line, "span", o);
    char *txt = cJSON_PrintUnformatted(line);
    printf("%s\n", txt);
    free(txt);
    cJSON_Delete(line);
}

/* ---- main ---- */

static _Atomic long g_released;

static void on_release(tel_span_t *sp, void *user) {
    g_released++;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void add_stats(cJSON *o, const char *k, const tel_bsp_stats_t *st) {
    cJSON *s = cJSON_AddObjectToObject(o, k);
    cJSON_AddNumberToObject(s, "queued", (double)st->queued);
    cJSON_AddNumberToObject(s, "dropped", (double)st->dropped);
    cJSON_AddNumberToObject(s, "exported", (double)st->exported);
    cJSON_AddNumberToObject(s, "failed", (double)st->failed);
    cJSON_AddNumberToObject(s, "requests", (double)st->requests);
    cJSON_AddNumberToObject(s, "retries", (double)st->retries);
    cJSON_AddNumberToObject(s, "batches", (double)st->batches);
}

int main(int argc, char **argv) {
    const char *endpoint = NULL;
    long n = 10, interval_us = 0, flush_ms = 5000, destroy_ms = 5000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--endpoint"))
            endpoint = argv[i + 1];
        else if (!strcmp(argv[i], "--spans"))
            n = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--interval-us"))
            interval_us = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--flush-ms"))
            flush_ms = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--destroy-ms"))
            destroy_ms = atol(argv[i + 1]);
        else
            return fprintf(stderr, "otlp_send: unknown option %s\n", argv[i]), 2;
    }
    char err[LT_ERR_LEN];
    tel_otlp_config_t ocfg;
    tel_bsp_config_t bcfg;
    if (tel_otlp_config_from_env(&ocfg, endpoint, err) || tel_bsp_config_from_env(&bcfg, err))
        return fprintf(stderr, "otlp_send: %s\n", err), 2;
    if (!ocfg.enabled) return fprintf(stderr, "otlp_send: no endpoint\n"), 2;

    static tel_resource_t res;
    tel_resource_set_str(&res, "service.name", "otlp_send");
    tel_resource_set_int(&res, "process.pid", getpid());
    tel_resource_set_str(&res, "lantern.process.role", "test");
    tel_otlp_t *otlp;
    tel_bsp_t *bsp;
    if (tel_otlp_create(&otlp, &ocfg, &res, err) ||
        tel_bsp_create(&bsp, &bcfg, tel_otlp_export, otlp, on_release, NULL, err))
        return fprintf(stderr, "otlp_send: %s\n", err), 1;

    tel_span_t *spans = calloc((size_t)n, sizeof *spans);
    uint64_t *took = calloc((size_t)n, sizeof *took);
    for (long i = 0; i < n; i++) make_span(&spans[i], (int)i, i ? &spans[i - 1] : NULL);
    for (long i = 0; i < n; i++) print_span(&spans[i]);
    fflush(stdout);

    long accepted = 0;
    uint64_t total = 0;
    for (long i = 0; i < n; i++) {
        uint64_t t = lt_now_ns();
        accepted += tel_bsp_submit(bsp, &spans[i]);
        took[i] = lt_now_ns() - t;
        total += took[i];
        if (interval_us) usleep((useconds_t)interval_us);
    }
    uint64_t t = lt_now_ns();
    int flush_rc = tel_bsp_flush(bsp, (int)flush_ms);
    double flush_took = (double)(lt_now_ns() - t) / 1e6;
    tel_bsp_stats_t after_flush, final;
    tel_bsp_stats(bsp, &after_flush);
    t = lt_now_ns();
    tel_bsp_destroy(&bsp, (int)destroy_ms, &final);
    double destroy_took = (double)(lt_now_ns() - t) / 1e6;
    tel_otlp_destroy(&otlp);

    qsort(took, (size_t)n, sizeof *took, cmp_u64);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "submitted", (double)n);
    cJSON_AddNumberToObject(o, "accepted", (double)accepted);
    cJSON_AddNumberToObject(o, "released", (double)g_released);
    cJSON_AddNumberToObject(o, "submit_max_ms", n ? (double)took[n - 1] / 1e6 : 0);
    cJSON_AddNumberToObject(o, "submit_p99_ms", n ? (double)took[(n - 1) * 99 / 100] / 1e6 : 0);
    cJSON_AddNumberToObject(o, "submit_total_ms", (double)total / 1e6);
    cJSON_AddNumberToObject(o, "flush_rc", flush_rc);
    cJSON_AddNumberToObject(o, "flush_ms", flush_took);
    cJSON_AddNumberToObject(o, "destroy_ms", destroy_took);
    add_stats(o, "after_flush", &after_flush);
    add_stats(o, "final", &final);
    cJSON *line = cJSON_CreateObject();
    cJSON_AddItemToObject(line, "summary", o);
    char *txt = cJSON_PrintUnformatted(line);
    printf("%s\n", txt);
    free(txt);
    cJSON_Delete(line);
    free(spans);
    free(took);
    return 0;
}
