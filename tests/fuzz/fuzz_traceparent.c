/*
 * fuzz_traceparent.c — libFuzzer target for the W3C traceparent parser (telemetry/trace.h): any
 * byte string must either parse into a valid context that formats back to a version-00 header
 * the parser accepts again with the same ids and flags, or be refused leaving the context
 * invalid; nothing may read past the input (ASan).
 *
 * Built by CMake as a replay program over tests/fuzz/corpus_traceparent (a ctest) and, in the
 * `fuzz` preset, with libFuzzer (tools/fuzz.sh; tests/fuzz/README.md); by hand with clang's
 * libFuzzer, from the repo root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Itelemetry -Icommon \
 *       -DLANTERN_VERSION=\"fuzz\" tests/fuzz/fuzz_traceparent.c telemetry/trace.c \
 *       telemetry/span.c common/lt.c \
 *       -o /tmp/fuzz_traceparent
 *   /tmp/fuzz_traceparent -max_total_time=60 -max_len=256 tests/fuzz/corpus_traceparent
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a copy of exactly `size` bytes: the parser must not read one past it */
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    tel_ctx_t c;
    if (tel_ctx_parse(buf, size, &c)) {
        char out[TEL_TRACEPARENT_LEN + 1];
        tel_ctx_format(&c, out);
        tel_ctx_t again;
        if (!c.valid || !tel_ctx_parse(out, TEL_TRACEPARENT_LEN, &again) ||
            memcmp(again.trace_id, c.trace_id, 16) || memcmp(again.span_id, c.span_id, 8) ||
            again.flags != c.flags)
            abort();
    } else if (c.valid) {
        abort();
    }
    free(buf);
    return 0;
}
