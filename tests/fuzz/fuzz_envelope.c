/*
 * fuzz_envelope.c — libFuzzer target for the envelope decoder and the payload reader: any byte
 * string must either decode, with every field then readable through ipc_rd_* and every string
 * and bin byte inside the input, or be refused with a non-empty message; nothing may read out
 * of bounds (ASan), overflow (UBSan) or allocate without bound (libFuzzer's -rss_limit_mb and
 * -malloc_limit_mb catch the gigabyte allocations msgpack-c alone makes for tiny inputs).
 *
 * Built by CMake as a replay program over its corpus (a ctest) and, in the `fuzz` preset, with
 * libFuzzer (tools/fuzz.sh runs it; see tests/fuzz/README.md). By hand, from the repo root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *       -Iipc -Icommon tests/fuzz/fuzz_envelope.c ipc/envelope.c common/lt.c \
 *       -lmsgpackc -lm -o /tmp/fuzz_envelope
 *   mkdir -p /tmp/env_corpus && /tmp/fuzz_envelope -max_total_time=60 -max_len=4096 \
 *       -malloc_limit_mb=256 /tmp/env_corpus tests/fuzz/corpus_envelope
 *
 * Seeds in tests/fuzz/corpus_envelope/ were written with Python's msgpack package (an
 * independent encoder): a STEP with trace context and a nested step-plan-like payload, an ADD
 * with a bin payload, a SHUTDOWN with nil fields, an OUTPUT with a map payload, and a future
 * version.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ipc.h"

static volatile uint8_t sink;

static void touch(const void *p, size_t n, const uint8_t *lo, const uint8_t *hi) {
    const uint8_t *b = p;
    if (n && (b < lo || b + n > hi)) __builtin_trap(); /* a view must lie inside the input */
    for (size_t i = 0; i < n; i++) sink ^= b[i];
}

static void walk(ipc_rd_t *r, const uint8_t *lo, const uint8_t *hi, int depth) {
    while (ipc_rd_left(r) && !r->rc) {
        const msgpack_object *o = r->items       ? &r->items[r->pos]
                                  : (r->pos & 1) ? &r->kv[r->pos / 2].val
                                                 : &r->kv[r->pos / 2].key;
        ipc_rd_t sub;
        uint32_t n32;
        uint64_t u;
        int64_t i;
        int32_t i32, vec[64];
        double d;
        float f;
        bool b;
        ipc_str_t s;
        const void *p;
        size_t n;
        switch (o->type) {
        case MSGPACK_OBJECT_ARRAY:
            if (depth & 1) {
                ipc_rd_array(r, &sub, &n32, UINT32_MAX);
                walk(&sub, lo, hi, depth + 1);
            } else {
                ipc_rd_i32_array(r, vec, 64, &n); /* mostly fails: exercises the error path */
            }
            break;
        case MSGPACK_OBJECT_MAP:
            ipc_rd_map(r, &sub, &n32, UINT32_MAX);
            walk(&sub, lo, hi, depth + 1);
            break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            if (depth & 1)
                ipc_rd_u64(r, &u);
            else
                ipc_rd_i32(r, &i32);
            break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: ipc_rd_i64(r, &i); break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            if (depth & 1)
                ipc_rd_f64(r, &d);
            else
                ipc_rd_f32(r, &f);
            break;
        case MSGPACK_OBJECT_BOOLEAN: ipc_rd_bool(r, &b); break;
        case MSGPACK_OBJECT_STR:
            if (ipc_rd_str(r, &s, SIZE_MAX) == 0) touch(s.ptr, s.len, lo, hi);
            break;
        case MSGPACK_OBJECT_BIN:
            if (depth & 1) {
                if (ipc_rd_bin(r, &p, &n, SIZE_MAX) == 0) touch(p, n, lo, hi);
            } else {
                ipc_rd_i32_vec(r, vec, 64, &n);
            }
            break;
        default: ipc_rd_nil(r) == 0 ? ipc_rd_skip(r) : 0; break;
        }
    }
    ipc_rd_end(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static ipc_envelope_t env;
    static int ready;
    char err[LT_ERR_LEN];
    if (!ready) {
        if (ipc_envelope_init(&env, 1 << 20, err)) __builtin_trap();
        ready = 1;
    }
    err[0] = 0;
    int rc = ipc_envelope_decode(data, size, &env, err);
    if (rc) {
        if (!err[0] || rc > 0) __builtin_trap();
        return 0;
    }
    const uint8_t *lo = data, *hi = data + size;
    if (env.type < 1 || env.type > IPC_MSG_LAST || env.version != IPC_VERSION) __builtin_trap();
    touch(env.request_id.ptr, env.request_id.len, lo, hi);
    if (env.has_trace) {
        if (!ipc_traceparent_valid(env.trace.traceparent.ptr, env.trace.traceparent.len))
            __builtin_trap();
        touch(env.trace.tracestate.ptr, env.trace.tracestate.len, lo, hi);
    }
    touch(env.payload_raw, env.payload_raw_len, lo, hi);
    if (env.payload_raw + env.payload_raw_len != hi) __builtin_trap();
    ipc_rd_t r;
    if (ipc_rd_init(&r, env.payload, "payload", err) == 0) walk(&r, lo, hi, 0);
    const void *p;
    size_t n;
    if (ipc_envelope_payload_bin(&env, &p, &n, err) == 0) touch(p, n, lo, hi);
    return 0;
}
