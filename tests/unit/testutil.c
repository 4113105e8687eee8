/* testutil.c — see testutil.h. */
#include "testutil.h"

#include "lt.h"

#include <math.h>
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

double tu_logit_diff(const float *got, const float *ref, int rows, int n) {
    double worst = 0.0;
    for (int r = 0; r < rows; r++) {
        const float *a = got + (size_t)r * n, *b = ref + (size_t)r * n;
        float lo = b[0], hi = b[0];
        for (int v = 0; v < n; v++) {
            lo = b[v] < lo ? b[v] : lo;
            hi = b[v] > hi ? b[v] : hi;
        }
        for (int v = 0; v < n; v++) {
            double d = fabs(a[v] - b[v]) / (hi - lo);
            worst = d > worst ? d : worst;
        }
    }
    return worst;
}
