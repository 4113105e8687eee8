/*
 * telemetry.c — a process's telemetry switched on: resource, exporter, batch processor and
 * recorder wired together (telemetry.h).
 */
#define _GNU_SOURCE
#include "telemetry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt.h"
#include "otlp.h"

static struct {
    bool enabled;
    tel_resource_t resource;
    tel_otlp_t *otlp;
    tel_bsp_t *bsp;
    char keys[1024]; /* OTEL_RESOURCE_ATTRIBUTES' keys: the resource's keys are borrowed */
    size_t keys_len;
} g;

static void release_span(tel_span_t *sp, void *user) {
    (void)user;
    tel_span_release(sp);
}

static int hexval(int c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* "k=v,k2=v2" (values percent-decoded, as the OpenTelemetry spec writes them). */
static int resource_from_env(tel_resource_t *r, bool *has_service, char *err) {
    const char *env = getenv("OTEL_RESOURCE_ATTRIBUTES");
    *has_service = false;
    if (!env || !*env) return LT_OK;
    char buf[1024];
    if (strlen(env) >= sizeof buf)
        return lt_errf(err, LT_ERR_INVAL, "OTEL_RESOURCE_ATTRIBUTES is over %zu bytes",
                       sizeof buf - 1);
    snprintf(buf, sizeof buf, "%s", env);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        while (*kv == ' ') kv++;
        if (!eq || eq == kv)
            return lt_errf(err, LT_ERR_INVAL, "OTEL_RESOURCE_ATTRIBUTES: '%.60s' is not key=value",
                           kv);
        *eq = '\0';
        char *k = kv, *v = eq + 1, *e = eq;
        while (e > k && e[-1] == ' ') *--e = '\0';
        char val[512];
        size_t n = 0;
        for (const char *p = v; *p && n + 1 < sizeof val; p++) {
            if (*p == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
                val[n++] = (char)(hexval(p[1]) << 4 | hexval(p[2]));
                p += 2;
            } else {
                val[n++] = *p;
            }
        }
        val[n] = '\0';
        size_t kl = strlen(k) + 1;
        if (g.keys_len + kl > sizeof g.keys) break;
        char *key = memcpy(g.keys + g.keys_len, k, kl);
        g.keys_len += kl;
        if (strcmp(key, "service.name") == 0) *has_service = true;
        tel_resource_set_str(r, key, val);
    }
    return LT_OK;
}

static int build_resource(const tel_process_config_t *cfg, char *err) {
    tel_resource_t *r = &g.resource;
    memset(r, 0, sizeof *r);
    bool has_service;
    int rc = resource_from_env(r, &has_service, err);
    if (rc) return rc;
    const char *svc = getenv("OTEL_SERVICE_NAME"); /* wins over OTEL_RESOURCE_ATTRIBUTES' */
    if (svc && *svc) {
        for (int i = 0; i < r->n_attrs; i++)
            if (strcmp(r->attrs[i].key, "service.name") == 0) r->attrs[i].key = "lantern.ignored";
        tel_resource_set_str(r, "service.name", svc);
    } else if (!has_service) {
        tel_resource_set_str(r, "service.name", "lantern");
    }
    uint8_t id[16];
    char hex[33], host[256] = "";
    tel_new_trace_id(id);
    tel_trace_id_hex(id, hex);
    gethostname(host, sizeof host - 1);
    tel_resource_set_str(r, "service.instance.id", hex);
    tel_resource_set_str(r, "service.version", lt_version());
    tel_resource_set_int(r, "process.pid", (int64_t)getpid());
    tel_resource_set_str(r, "host.name", host);
    tel_resource_set_str(r, "lantern.process.role", cfg->role);
    if (cfg->rank >= 0) tel_resource_set_int(r, "lantern.worker.rank", cfg->rank);
    tel_resource_set_int(r, "lantern.tensor_parallel_size", cfg->tensor_parallel_size);
    tel_resource_set_str(r, "telemetry.sdk.name", "lantern");
    tel_resource_set_str(r, "telemetry.sdk.language", "c");
    return LT_OK;
}

int tel_process_start(const tel_process_config_t *cfg, char *err) {
    memset(&g, 0, sizeof g);
    tel_otlp_config_t oc;
    tel_bsp_config_t bc;
    tel_tracer_config_t tc = {0};
    int rc;
    if ((rc = tel_otlp_config_from_env(&oc, cfg->otlp_endpoint, err)) ||
        (rc = tel_sampler_from_env(&tc.sampler, err)) || (rc = tel_bsp_config_from_env(&bc, err)))
        return rc;
    if (!oc.enabled) return tel_tracer_init(&tc, err); /* off */
    if ((rc = build_resource(cfg, err)) || (rc = tel_otlp_create(&g.otlp, &oc, &g.resource, err)))
        return rc;
    if ((rc = tel_bsp_create(&g.bsp, &bc, tel_otlp_export, g.otlp, release_span, NULL, err))) {
        tel_otlp_destroy(&g.otlp);
        return rc;
    }
    tc.enabled = true;
    tc.pool_size = cfg->pool_size > 0 ? cfg->pool_size : bc.max_queue_size + 1024;
    tc.submit = tel_bsp_submit_cb;
    tc.submit_user = g.bsp;
    if ((rc = tel_tracer_init(&tc, err))) {
        tel_bsp_destroy(&g.bsp, 0, NULL);
        tel_otlp_destroy(&g.otlp);
        return rc;
    }
    g.enabled = true;
    static const char *const samplers[] = {"always_on",
                                           "always_off",
                                           "traceidratio",
                                           "parentbased_always_on",
                                           "parentbased_always_off",
                                           "parentbased_traceidratio"};
    LT_INFO("tracing: OTLP %s to %s, sampler %s (ratio %g), queue %d, batch %d",
            tel_otlp_protocol_name(oc.protocol), oc.url, samplers[tc.sampler.kind],
            tc.sampler.ratio, bc.max_queue_size, bc.max_export_batch_size);
    return LT_OK;
}

void tel_process_stop(int timeout_ms) {
    if (!g.enabled) {
        tel_tracer_fini();
        return;
    }
    tel_bsp_stats_t st;
    tel_bsp_destroy(&g.bsp, timeout_ms, &st);
    tel_otlp_destroy(&g.otlp);
    tel_tracer_stats_t ts;
    tel_tracer_stats(&ts);
    tel_tracer_fini();
    LT_INFO("tracing: %llu spans exported, %llu dropped (queue full), %llu failed, %llu not "
            "sampled, %llu not recorded (pool empty)",
            (unsigned long long)st.exported, (unsigned long long)st.dropped,
            (unsigned long long)st.failed, (unsigned long long)ts.discarded,
            (unsigned long long)ts.pool_empty);
    g.enabled = false;
}

void tel_process_stats(tel_process_stats_t *st) {
    memset(st, 0, sizeof *st);
    st->enabled = g.enabled;
    if (!g.enabled) return;
    tel_bsp_stats(g.bsp, &st->bsp);
    tel_tracer_stats(&st->tracer);
}
