/*
 * telemetry.h — a process's telemetry, switched on in one call: its OpenTelemetry resource (who
 * sends: service.name, service.instance.id, process.pid, host.name, lantern.process.role,
 * lantern.worker.rank, lantern.tensor_parallel_size, and OTEL_RESOURCE_ATTRIBUTES), the OTLP
 * exporter (otlp.h), the batch span processor (bsp.h) and the span recorder (trace.h) wired
 * together. Every process of the tree calls it once at start-up with the same endpoint, so each
 * exports its own spans under its own resource.
 *
 * With no endpoint (neither --otlp-traces-endpoint nor OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT)
 * tracing stays off and costs nothing: the recorder's starts return NULL.
 *
 * Thread safety: tel_process_start and tel_process_stop from the main thread, once each;
 * tel_process_stats from any thread.
 */
#ifndef TEL_TELEMETRY_H
#define TEL_TELEMETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "bsp.h"
#include "trace.h"

typedef struct tel_process_config {
    const char *role; /* "frontend", "engine", "worker" */
    int rank;         /* a worker's rank; -1 elsewhere */
    int tensor_parallel_size;
    const char *otlp_endpoint; /* --otlp-traces-endpoint, or NULL */
    int pool_size;             /* spans in flight at most; 0: the queue size plus 1024 */
} tel_process_config_t;

/* Reads the OTEL_* environment, and when an endpoint is configured starts the exporter thread
 * and the recorder. LT_ERR_INVAL naming a malformed variable or flag. */
int tel_process_start(const tel_process_config_t *cfg, char *err);
/* Flushes what is queued (at most timeout_ms), stops the exporter, logs the span counters. */
void tel_process_stop(int timeout_ms);

typedef struct tel_process_stats {
    bool enabled;
    tel_bsp_stats_t bsp;
    tel_tracer_stats_t tracer;
} tel_process_stats_t;
void tel_process_stats(tel_process_stats_t *st);

#endif
