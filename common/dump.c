/*
 * dump.c — writing a process's JSON state dump (dump.h).
 */
#define _GNU_SOURCE
#include "dump.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"

int lt_dump_write(const char *dir, const char *role, int rank, cJSON *doc, char *err) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cJSON_AddStringToObject(doc, "role", role);
    if (rank >= 0) cJSON_AddNumberToObject(doc, "rank", rank);
    cJSON_AddNumberToObject(doc, "pid", (double)getpid());
    cJSON_AddNumberToObject(doc, "time", (double)ts.tv_sec + ts.tv_nsec / 1e9);
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    if (!text) return lt_errf(err, LT_ERR_NOMEM, "dump: out of memory");
    char path[4096], tmp[4120];
    if (rank >= 0)
        snprintf(path, sizeof path, "%s/%s-%d-%d.json", dir, role, rank, (int)getpid());
    else
        snprintf(path, sizeof path, "%s/%s-%d.json", dir, role, (int)getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int rc = LT_OK;
    if (!f || fputs(text, f) < 0 || fputc('\n', f) < 0) rc = LT_ERR_IO;
    if (f && fclose(f) != 0) rc = LT_ERR_IO;
    if (rc == LT_OK && rename(tmp, path) != 0) rc = LT_ERR_IO;
    if (rc) {
        rc = lt_errf(err, LT_ERR_IO, "dump: cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(text);
    return rc;
}
