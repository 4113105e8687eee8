/*
 * dump.h — the JSON state dumps every process writes on SIGUSR1 when --dump-dir is set: one
 * document per process, <dir>/<role>[-<rank>]-<pid>.json, written to a temporary file and
 * renamed, so a reader never sees half a document. The content is what the process logs in its
 * "state dump" lines, as data an operator's tools can parse.
 *
 * Thread safety: call from the thread that owns the state being dumped. Not on the hot path.
 */
#ifndef LT_DUMP_H
#define LT_DUMP_H

#include <cjson/cJSON.h>

/* Adds "role", "rank" (workers), "pid" and "time" (wall clock, seconds) to doc, writes it and
 * frees it. 0, or an error naming the file. */
int lt_dump_write(const char *dir, const char *role, int rank, cJSON *doc, char *err);

#endif
