/* testutil.c — see testutil.h. */
#include "testutil.h"

#include "lt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *tu_fixture(const char *name) {
    static char buf[4096];
    const char *dir = getenv("LANTERN_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/fixtures", name);
    return buf;
}

const char *tu_default_model(void) {
    static char buf[4096];
    lt_default_model_path(buf, sizeof buf);
    struct stat st;
    return stat(buf, &st) == 0 ? buf : NULL;
}

const char *tu_tmpdir(void) {
    static char buf[4096];
    const char *t = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/lantern-test-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(buf);
}

int tu_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}
