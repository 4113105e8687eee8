/*
 * test_ipc_envelope.c — the envelope codec and the payload reader/writer: round trips, every
 * truncation and every single-field corruption refused with the right code, strict traceparent
 * checks, 20k random and mutated buffers that must never crash, the tiny-input-huge-allocation
 * case msgpack-c alone falls for, and zero allocations per message in steady state.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"
#include "lt.h"
#include "testutil.h"

/* ---- allocation counter (not under sanitizers, which own malloc) ---- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNT_ALLOCS 0
#else
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static long g_allocs;
static int g_counting;
void *malloc(size_t n) {
    if (g_counting) g_allocs++;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
    if (g_counting) g_allocs++;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    if (g_counting) g_allocs++;
    return __libc_realloc(p, n);
}
void free(void *p) {
    __libc_free(p);
}
#endif

static const char TP[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static uint64_t rng_next(uint64_t *s) {
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Packs an envelope by hand, bypassing the writer's checks, to feed the decoder bad fields.
 * rid/tp/ts NULL: nil (tp NULL means the whole trace context is nil). */
static size_t pack_raw(char *out, size_t cap, uint64_t version, uint64_t type, const char *rid,
                       const char *tp, const char *ts, int nfields) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (size_t)nfields);
    msgpack_pack_uint64(&pk, version);
    if (nfields > 1) msgpack_pack_uint64(&pk, type);
    if (nfields > 2) {
        if (rid) {
            msgpack_pack_str(&pk, strlen(rid));
            msgpack_pack_str_body(&pk, rid, strlen(rid));
        } else {
            msgpack_pack_nil(&pk);
        }
    }
    if (nfields > 3) {
        if (tp) {
            msgpack_pack_array(&pk, 2);
            msgpack_pack_str(&pk, strlen(tp));
            msgpack_pack_str_body(&pk, tp, strlen(tp));
            msgpack_pack_str(&pk, strlen(ts));
            msgpack_pack_str_body(&pk, ts, strlen(ts));
        } else {
            msgpack_pack_nil(&pk);
        }
    }
    for (int i = 4; i < nfields; i++) msgpack_pack_bin(&pk, 0);
    assert_true(sb.size <= cap);
    memcpy(out, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static int decode_raw(const char *buf, size_t n, char *err) {
    ipc_envelope_t env;
    assert_int_equal(ipc_envelope_init(&env, 0, err), 0);
    int rc = ipc_envelope_decode(buf, n, &env, err);
    ipc_envelope_fini(&env);
    return rc;
}

/* A full envelope with a payload exercising every writer helper. */
static void build_sample(ipc_writer_t *w, const void **data, size_t *len) {
    char err[LT_ERR_LEN];
    ipc_trace_ctx_t tc = {ipc_str(TP), ipc_str("vendor=abc,other=1")};
    assert_int_equal(ipc_envelope_begin(w, IPC_MSG_STEP, ipc_str("req-42"), &tc, err), 0);
    int32_t ids[5] = {1, -2, 300000, INT32_MAX, INT32_MIN};
    float fs[3] = {0.5f, -1.25f, 3e10f};
    ipc_wr_array(w, 13);
    ipc_wr_u64(w, UINT64_MAX);
    ipc_wr_i64(w, -5);
    ipc_wr_f32(w, 0.75f);
    ipc_wr_f64(w, 1e300);
    ipc_wr_bool(w, true);
    ipc_wr_cstr(w, "hello");
    ipc_wr_bin(w, "\x00\x01\x02", 3);
    ipc_wr_nil(w);
    ipc_wr_i32_array(w, ids, 5);
    ipc_wr_f32_array(w, fs, 3);
    ipc_wr_i32_vec(w, ids, 5);
    ipc_wr_map(w, 2);
    ipc_wr_cstr(w, "k1");
    ipc_wr_u64(w, 7);
    ipc_wr_cstr(w, "k2");
    ipc_wr_array(w, 2);
    ipc_wr_u64(w, 8);
    ipc_wr_i64(w, 42);
    ipc_wr_u64(w, 99); /* integers read back as floats */
    assert_int_equal(ipc_envelope_end(w, data, len, err), 0);
}

static void test_round_trip(void **state) {
    char err[LT_ERR_LEN];
    ipc_writer_t w;
    ipc_envelope_t env;
    assert_int_equal(ipc_writer_init(&w, 0, err), 0);
    assert_int_equal(ipc_envelope_init(&env, 0, err), 0);
    const void *data;
    size_t len;
    build_sample(&w, &data, &len);
    assert_int_equal(ipc_envelope_decode(data, len, &env, err), 0);
    assert_int_equal(env.version, IPC_VERSION);
    assert_int_equal(env.type, IPC_MSG_STEP);
    assert_int_equal(env.request_id.len, 6);
    assert_memory_equal(env.request_id.ptr, "req-42", 6);
    assert_true(env.has_trace);
    assert_int_equal(env.trace.traceparent.len, 55);
    assert_memory_equal(env.trace.traceparent.ptr, TP, 55);
    assert_int_equal(env.trace.tracestate.len, 18);
    /* views point into the input buffer */
    assert_true((const char *)env.request_id.ptr > (const char *)data &&
                (const char *)env.request_id.ptr < (const char *)data + len);
    assert_true(env.payload_raw > (const uint8_t *)data);
    assert_int_equal(env.payload_raw + env.payload_raw_len, (const uint8_t *)data + len);

    ipc_rd_t r, a, m, m2;
    assert_int_equal(ipc_rd_init(&r, env.payload, "sample", err), 0);
    uint64_t u;
    int64_t i;
    float f;
    double d;
    bool b;
    ipc_str_t s;
    const void *p;
    size_t n;
    int32_t ids[8];
    float fs[4];
    assert_int_equal(ipc_rd_u64(&r, &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(ipc_rd_i64(&r, &i), 0);
    assert_int_equal(i, -5);
    assert_int_equal(ipc_rd_f32(&r, &f), 0);
    assert_true(f == 0.75f);
    assert_int_equal(ipc_rd_f64(&r, &d), 0);
    assert_true(d == 1e300);
    assert_int_equal(ipc_rd_bool(&r, &b), 0);
    assert_true(b);
    assert_int_equal(ipc_rd_str(&r, &s, 16), 0);
    assert_int_equal(s.len, 5);
    assert_memory_equal(s.ptr, "hello", 5);
    assert_int_equal(ipc_rd_bin(&r, &p, &n, 16), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "\x00\x01\x02", 3);
    assert_int_equal(ipc_rd_nil(&r), 1);
    assert_int_equal(ipc_rd_i32_array(&r, ids, 8, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ids[2], 300000);
    assert_int_equal(ids[3], INT32_MAX);
    assert_int_equal(ids[4], INT32_MIN);
    assert_int_equal(ipc_rd_f32_array(&r, fs, 4, &n), 0);
    assert_int_equal(n, 3);
    assert_true(fs[2] == 3e10f);
    memset(ids, 0, sizeof ids);
    assert_int_equal(ipc_rd_i32_vec(&r, ids, 8, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ids[1], -2);
    assert_int_equal(ids[4], INT32_MIN);
    uint32_t pairs;
    assert_int_equal(ipc_rd_map(&r, &m, &pairs, 4), 0);
    assert_int_equal(pairs, 2);
    assert_int_equal(ipc_rd_str(&m, &s, 8), 0);
    assert_memory_equal(s.ptr, "k1", 2);
    assert_int_equal(ipc_rd_u64(&m, &u), 0);
    assert_int_equal(u, 7);
    assert_int_equal(ipc_rd_str(&m, &s, 8), 0);
    assert_int_equal(ipc_rd_array(&m, &m2, NULL, 2), 0);
    assert_int_equal(ipc_rd_u64(&m2, &u), 0);
    assert_int_equal(ipc_rd_i64(&m2, &i), 0);
    assert_int_equal(ipc_rd_end(&m2), 0);
    assert_int_equal(ipc_rd_end(&m), 0);
    assert_int_equal(ipc_rd_f64(&r, &d), 0);
    assert_true(d == 99.0);
    assert_int_equal(ipc_rd_end(&r), 0);
    (void)a;

    /* nil request id, nil trace, bin payload, and the empty-payload form */
    assert_int_equal(ipc_envelope_write_bin(&w, IPC_MSG_RESULT, (ipc_str_t){0}, NULL, "xyz", 3,
                                            &data, &len, err),
                     0);
    assert_int_equal(ipc_envelope_decode(data, len, &env, err), 0);
    assert_null(env.request_id.ptr);
    assert_false(env.has_trace);
    assert_int_equal(ipc_envelope_payload_bin(&env, &p, &n, err), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "xyz", 3);
    assert_int_equal(ipc_envelope_write_bin(&w, IPC_MSG_SHUTDOWN, (ipc_str_t){0}, NULL, NULL, 0,
                                            &data, &len, err),
                     0);
    assert_int_equal(ipc_envelope_decode(data, len, &env, err), 0);
    assert_int_equal(env.payload->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(ipc_envelope_payload_bin(&env, &p, &n, err), LT_ERR_FORMAT);

    /* every type name */
    for (uint32_t t = 1; t <= IPC_MSG_LAST; t++) assert_string_not_equal(ipc_msg_type_name(t), "?");
    assert_string_equal(ipc_msg_type_name(0), "?");
    assert_string_equal(ipc_msg_type_name(IPC_MSG_LAST + 1), "?");
    ipc_envelope_fini(&env);
    ipc_writer_fini(&w);
}

static void test_truncations(void **state) {
    char err[LT_ERR_LEN];
    ipc_writer_t w;
    ipc_envelope_t env;
    assert_int_equal(ipc_writer_init(&w, 0, err), 0);
    assert_int_equal(ipc_envelope_init(&env, 0, err), 0);
    const void *data;
    size_t len;
    build_sample(&w, &data, &len);
    /* a private copy per prefix, so that reading past the prefix would be caught by ASan */
    for (size_t k = 0; k < len; k++) {
        char *cut = k ? malloc(k) : NULL;
        if (k) memcpy(cut, data, k);
        int rc = ipc_envelope_decode(cut, k, &env, err);
        if (rc != LT_ERR_FORMAT) fail_msg("prefix of %zu/%zu bytes: rc %d (%s)", k, len, rc, err);
        free(cut);
    }
    /* trailing bytes */
    char *more = malloc(len + 1);
    memcpy(more, data, len);
    more[len] = 0x01;
    assert_int_equal(ipc_envelope_decode(more, len + 1, &env, err), LT_ERR_FORMAT);
    assert_non_null(strstr(err, "trailing"));
    free(more);
    ipc_envelope_fini(&env);
    ipc_writer_fini(&w);
}

static void test_bad_fields(void **state) {
    char err[LT_ERR_LEN], buf[4096];
    size_t n;
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "r1", TP, "", 5);
    assert_int_equal(decode_raw(buf, n, err), 0);

    /* versions */
    n = pack_raw(buf, sizeof buf, 2, IPC_MSG_ADD, "r1", TP, "", 5);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "version 2"));
    n = pack_raw(buf, sizeof buf, 0, IPC_MSG_ADD, "r1", TP, "", 5);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_UNSUPPORTED);
    n = pack_raw(buf, sizeof buf, 7, 0, NULL, NULL, NULL, 1); /* a future layout: [7] */
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_UNSUPPORTED);

    /* field count, type enum */
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "r1", TP, "", 4);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_FORMAT);
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "r1", TP, "", 6);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_FORMAT);
    n = pack_raw(buf, sizeof buf, IPC_VERSION, 0, "r1", NULL, NULL, 5);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_FORMAT);
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_LAST + 1, "r1", NULL, NULL, 5);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_FORMAT);
    assert_non_null(strstr(err, "unknown message type"));
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_LAST, NULL, NULL, NULL, 5);
    assert_int_equal(decode_raw(buf, n, err), 0);

    /* request ids */
    char rid[IPC_REQUEST_ID_MAX + 2];
    memset(rid, 'a', sizeof rid);
    rid[IPC_REQUEST_ID_MAX] = 0;
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, rid, NULL, NULL, 5);
    assert_int_equal(decode_raw(buf, n, err), 0);
    rid[IPC_REQUEST_ID_MAX] = 'a';
    rid[IPC_REQUEST_ID_MAX + 1] = 0;
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, rid, NULL, NULL, 5);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_FORMAT);
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "", NULL, NULL, 5);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_FORMAT);
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "a\nb", NULL, NULL, 5);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_FORMAT);
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "caf\xc3\xa9", NULL, NULL, 5);
    assert_int_equal(decode_raw(buf, n, err), 0);
    memcpy(buf, "\x95\x01\x01\x05\xc0\xc0", 6); /* request id as an int */
    assert_int_equal(decode_raw(buf, 6, err), LT_ERR_FORMAT);
    memcpy(buf, "\x95\x01\x01\xc0\x05\xc0", 6); /* trace context as an int */
    assert_int_equal(decode_raw(buf, 6, err), LT_ERR_FORMAT);
    memcpy(buf, "\x95\x01\xa1x\xc0\xc0\xc0", 7); /* type as a str */
    assert_int_equal(decode_raw(buf, 7, err), LT_ERR_FORMAT);
    memcpy(buf, "\x85\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01", 11); /* a map */
    assert_int_equal(decode_raw(buf, 11, err), LT_ERR_FORMAT);

    /* trace context shape: [tp] alone, [tp, ts, x], [tp, 5] */
    memcpy(buf, "\x95\x01\x01\xc0\x91\xa1x\xc0", 8);
    assert_int_equal(decode_raw(buf, 8, err), LT_ERR_FORMAT);
    memcpy(buf, "\x95\x01\x01\xc0\x92\xa1x\x05\xc0", 9);
    assert_int_equal(decode_raw(buf, 9, err), LT_ERR_FORMAT);

    /* tracestate */
    char ts[IPC_TRACESTATE_MAX + 2];
    memset(ts, 'k', sizeof ts);
    ts[IPC_TRACESTATE_MAX] = 0;
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "r", TP, ts, 5);
    assert_int_equal(decode_raw(buf, n, err), 0);
    ts[IPC_TRACESTATE_MAX] = 'k';
    ts[IPC_TRACESTATE_MAX + 1] = 0;
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "r", TP, ts, 5);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_FORMAT);
    n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "r", TP, "a=b\tc", 5);
    assert_int_equal(decode_raw(buf, n, err), LT_ERR_FORMAT);
}

static void test_traceparent(void **state) {
    assert_true(ipc_traceparent_valid(TP, 55));
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", /* long */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* invalid version */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* uppercase */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  /* not hex */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent id */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7--01", /* dashes moved */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",  /* flags */
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",  /* leading space */
    };
    char err[LT_ERR_LEN], buf[512];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_false(ipc_traceparent_valid(bad[i], strlen(bad[i])));
        size_t n = pack_raw(buf, sizeof buf, IPC_VERSION, IPC_MSG_ADD, "r", bad[i], "", 5);
        if (decode_raw(buf, n, err) != LT_ERR_FORMAT) fail_msg("accepted \"%s\"", bad[i]);
    }
    /* a NUL inside the string is not hex either */
    char nul[56];
    memcpy(nul, TP, 56);
    nul[10] = 0;
    assert_false(ipc_traceparent_valid(nul, 55));
    assert_false(ipc_traceparent_valid(NULL, 55));
}

static void test_writer_refuses(void **state) {
    char err[LT_ERR_LEN];
    ipc_writer_t w;
    assert_int_equal(ipc_writer_init(&w, 64, err), 0);
    ipc_trace_ctx_t bad = {ipc_str("00-abc"), ipc_str("")};
    assert_int_equal(ipc_envelope_begin(&w, IPC_MSG_ADD, ipc_str("r"), &bad, err), LT_ERR_INVAL);
    ipc_trace_ctx_t good = {ipc_str(TP), ipc_str("x\x01")};
    assert_int_equal(ipc_envelope_begin(&w, IPC_MSG_ADD, ipc_str("r"), &good, err), LT_ERR_INVAL);
    assert_int_equal(ipc_envelope_begin(&w, IPC_MSG_ADD, ipc_str(""), NULL, err), LT_ERR_INVAL);
    assert_int_equal(ipc_envelope_begin(&w, (ipc_msg_type_t)0, ipc_str("r"), NULL, err),
                     LT_ERR_INVAL);
    assert_int_equal(
        ipc_envelope_begin(&w, (ipc_msg_type_t)(IPC_MSG_LAST + 1), ipc_str("r"), NULL, err),
        LT_ERR_INVAL);
    /* the empty tracestate may come as a NULL view */
    ipc_trace_ctx_t empty = {ipc_str(TP), {NULL, 0}};
    assert_int_equal(ipc_envelope_begin(&w, IPC_MSG_ADD, ipc_str("r"), &empty, err), 0);
    ipc_wr_nil(&w);
    const void *data;
    size_t len;
    assert_int_equal(ipc_envelope_end(&w, &data, &len, err), 0);
    assert_int_equal(decode_raw(data, len, err), 0);
    ipc_writer_fini(&w);
}

static void test_limits(void **state) {
    char err[LT_ERR_LEN];
    ipc_writer_t w;
    ipc_envelope_t env;
    assert_int_equal(ipc_writer_init(&w, 0, err), 0);
    assert_int_equal(ipc_envelope_init(&env, 100, err), 0);
    char blob[2000] = {0};
    const void *data;
    size_t len;
    /* payload bin of 98 bytes encodes to 100: accepted; 99 → 101: refused */
    assert_int_equal(
        ipc_envelope_write_bin(&w, IPC_MSG_ADD, ipc_str("r"), NULL, blob, 98, &data, &len, err), 0);
    assert_int_equal(ipc_envelope_decode(data, len, &env, err), 0);
    assert_int_equal(env.payload_raw_len, 100);
    assert_int_equal(
        ipc_envelope_write_bin(&w, IPC_MSG_ADD, ipc_str("r"), NULL, blob, 99, &data, &len, err), 0);
    assert_int_equal(ipc_envelope_decode(data, len, &env, err), LT_ERR_RANGE);
    /* far above the limit: refused before scanning */
    assert_int_equal(
        ipc_envelope_write_bin(&w, IPC_MSG_ADD, ipc_str("r"), NULL, blob, 1500, &data, &len, err),
        0);
    assert_int_equal(ipc_envelope_decode(data, len, &env, err), LT_ERR_RANGE);
    ipc_envelope_fini(&env);

    /* nesting deeper than IPC_MAX_DEPTH */
    assert_int_equal(ipc_envelope_init(&env, 0, err), 0);
    for (int depth = IPC_MAX_DEPTH - 2; depth <= IPC_MAX_DEPTH + 5; depth++) {
        assert_int_equal(ipc_envelope_begin(&w, IPC_MSG_ADD, ipc_str("r"), NULL, err), 0);
        for (int i = 0; i < depth; i++) ipc_wr_array(&w, 1);
        ipc_wr_nil(&w);
        assert_int_equal(ipc_envelope_end(&w, &data, &len, err), 0);
        int rc = ipc_envelope_decode(data, len, &env, err);
        /* the payload sits at depth 1 of the envelope */
        assert_int_equal(rc, depth + 1 <= IPC_MAX_DEPTH ? 0 : LT_ERR_FORMAT);
    }

    /* six bytes that make msgpack-c alone allocate gigabytes: refused, zone stays small */
    static const char huge[][8] = {"\xdd\x0f\xff\xff\xff\x01", "\xdf\x0f\xff\xff\xff\x01",
                                   "\x95\x01\x01\xc0\xc0\xdd"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ipc_envelope_decode(huge[i], 6, &env, err), LT_ERR_FORMAT);
        assert_true(env.zone_cap < (1u << 20));
    }
    /* the reserved byte 0xc1 */
    assert_int_equal(ipc_envelope_decode("\x95\x01\x01\xc0\xc0\xc1", 6, &env, err), LT_ERR_FORMAT);
    /* decoding into a struct that was never initialised */
    ipc_envelope_t raw;
    memset(&raw, 0, sizeof raw);
    assert_int_equal(ipc_envelope_decode("\xc0", 1, &raw, err), LT_ERR_INVAL);
    ipc_envelope_fini(&env);
    ipc_writer_fini(&w);
}

/* Walks a decoded payload through the reader API with whatever types it finds. */
static void walk(ipc_rd_t *r, int depth) {
    while (ipc_rd_left(r) && !r->rc) {
        const msgpack_object *o = r->items       ? &r->items[r->pos]
                                  : (r->pos & 1) ? &r->kv[r->pos / 2].val
                                                 : &r->kv[r->pos / 2].key;
        ipc_rd_t sub;
        uint64_t u;
        int64_t i;
        double d;
        bool b;
        ipc_str_t s;
        const void *p;
        size_t n;
        switch (o->type) {
        case MSGPACK_OBJECT_ARRAY:
            ipc_rd_array(r, &sub, NULL, UINT32_MAX);
            walk(&sub, depth + 1);
            break;
        case MSGPACK_OBJECT_MAP:
            ipc_rd_map(r, &sub, NULL, UINT32_MAX);
            walk(&sub, depth + 1);
            break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER: ipc_rd_u64(r, &u); break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: ipc_rd_i64(r, &i); break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64: ipc_rd_f64(r, &d); break;
        case MSGPACK_OBJECT_BOOLEAN: ipc_rd_bool(r, &b); break;
        case MSGPACK_OBJECT_STR: {
            ipc_rd_str(r, &s, SIZE_MAX);
            volatile char sink = 0;
            for (size_t k = 0; k < s.len; k++) sink ^= s.ptr[k];
            break;
        }
        case MSGPACK_OBJECT_BIN: {
            ipc_rd_bin(r, &p, &n, SIZE_MAX);
            volatile char sink = 0;
            for (size_t k = 0; k < n; k++) sink ^= ((const char *)p)[k];
            break;
        }
        default: ipc_rd_skip(r); break;
        }
    }
}

static void test_garbage(void **state) {
    char err[LT_ERR_LEN];
    ipc_envelope_t env;
    ipc_writer_t w;
    assert_int_equal(ipc_envelope_init(&env, 1 << 16, err), 0);
    assert_int_equal(ipc_writer_init(&w, 0, err), 0);
    const void *sample;
    size_t slen;
    build_sample(&w, &sample, &slen);
    uint64_t seed = 12345;
    int ok = 0;
    uint8_t *buf = malloc(4096);
    for (int it = 0; it < 20000; it++) {
        size_t n;
        if (it < 10000) {
            /* random bytes, biased towards msgpack-looking heads */
            n = rng_next(&seed) % 300;
            for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)rng_next(&seed);
            if (n && (rng_next(&seed) & 1)) buf[0] = 0x95;
            if (n > 1 && (rng_next(&seed) & 1)) buf[1] = 0x01;
        } else {
            /* the valid sample with 1..4 random bytes changed, sometimes cut */
            n = slen;
            memcpy(buf, sample, n);
            int flips = 1 + (int)(rng_next(&seed) % 4);
            for (int f = 0; f < flips; f++) buf[rng_next(&seed) % n] = (uint8_t)rng_next(&seed);
            if (rng_next(&seed) % 4 == 0) n = rng_next(&seed) % n;
        }
        uint8_t *copy = n ? malloc(n) : NULL; /* exact size: ASan sees any overread */
        if (n) memcpy(copy, buf, n);
        int rc = ipc_envelope_decode(copy, n, &env, err);
        assert_true(rc == 0 || rc == LT_ERR_FORMAT || rc == LT_ERR_UNSUPPORTED ||
                    rc == LT_ERR_RANGE);
        if (rc == 0) {
            ok++;
            assert_true(env.type >= 1 && env.type <= IPC_MSG_LAST);
            ipc_rd_t r;
            if (ipc_rd_init(&r, env.payload, "fuzz", err) == 0) walk(&r, 0);
        } else {
            assert_true(strlen(err) > 0);
        }
        free(copy);
    }
    free(buf);
    print_message("garbage: %d of 20000 inputs decoded, the rest refused\n", ok);
    ipc_writer_fini(&w);
    ipc_envelope_fini(&env);
}

static void test_reader_errors(void **state) {
    char err[LT_ERR_LEN];
    ipc_writer_t w;
    ipc_envelope_t env;
    assert_int_equal(ipc_writer_init(&w, 0, err), 0);
    assert_int_equal(ipc_envelope_init(&env, 0, err), 0);
    const void *data;
    size_t len;
    assert_int_equal(ipc_envelope_begin(&w, IPC_MSG_STEP, (ipc_str_t){0}, NULL, err), 0);
    ipc_wr_array(&w, 4);
    ipc_wr_u64(&w, 5);
    ipc_wr_array(&w, 3);
    ipc_wr_i64(&w, -1);
    ipc_wr_cstr(&w, "not a number");
    ipc_wr_u64(&w, (uint64_t)1 << 40);
    ipc_wr_cstr(&w, "abcdef");
    ipc_wr_bin(&w, "abc", 3); /* not a multiple of 4 */
    assert_int_equal(ipc_envelope_end(&w, &data, &len, err), 0);
    assert_int_equal(ipc_envelope_decode(data, len, &env, err), 0);

    ipc_rd_t r, sub;
    int32_t v;
    uint32_t u32;
    float f;
    ipc_str_t s;
    size_t n;
    int32_t vec[4];

    /* type mismatch deep inside: the path names it, the error reaches the root */
    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    assert_int_equal(ipc_rd_i32_range(&r, &v, 0, 10), 0);
    assert_int_equal(ipc_rd_array(&r, &sub, NULL, 8), 0);
    assert_int_equal(ipc_rd_u32(&sub, &u32), LT_ERR_FORMAT); /* -1 is not a uint */
    assert_int_equal(u32, 0);
    assert_string_equal(err, "plan[1]: element 0: expected uint, got negative int");
    assert_int_equal(ipc_rd_end(&r), LT_ERR_FORMAT);
    /* sticky: later reads fail without touching the message */
    assert_int_equal(ipc_rd_str(&r, &s, 100), LT_ERR_FORMAT);
    assert_string_equal(err, "plan[1]: element 0: expected uint, got negative int");

    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    assert_int_equal(ipc_rd_i32_range(&r, &v, 0, 4), LT_ERR_RANGE);
    assert_non_null(strstr(err, "outside [0, 4]"));

    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    ipc_rd_skip(&r);
    assert_int_equal(ipc_rd_array(&r, &sub, NULL, 2), LT_ERR_RANGE); /* 3 elements > 2 */

    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    ipc_rd_skip(&r);
    assert_int_equal(ipc_rd_array(&r, &sub, NULL, 3), 0);
    ipc_rd_skip(&sub);
    assert_int_equal(ipc_rd_f32(&sub, &f), LT_ERR_FORMAT);
    assert_non_null(strstr(err, "expected number, got str"));

    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    ipc_rd_skip(&r);
    assert_int_equal(ipc_rd_array(&r, &sub, NULL, 3), 0);
    ipc_rd_skip(&sub);
    ipc_rd_skip(&sub);
    assert_int_equal(ipc_rd_i32(&sub, &v), LT_ERR_RANGE); /* 2^40 */
    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    ipc_rd_skip(&r);
    ipc_rd_skip(&r);
    assert_int_equal(ipc_rd_str(&r, &s, 3), LT_ERR_RANGE);
    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    ipc_rd_skip(&r);
    ipc_rd_skip(&r);
    ipc_rd_skip(&r);
    assert_int_equal(ipc_rd_i32_vec(&r, vec, 4, &n), LT_ERR_FORMAT);
    assert_int_equal(ipc_rd_skip(&r), LT_ERR_FORMAT); /* sticky */

    /* running off the end, and leftovers at the end */
    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    for (int i = 0; i < 4; i++) assert_int_equal(ipc_rd_skip(&r), 0);
    assert_int_equal(ipc_rd_skip(&r), LT_ERR_FORMAT);
    assert_non_null(strstr(err, "missing"));
    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    ipc_rd_skip(&r);
    assert_int_equal(ipc_rd_end(&r), LT_ERR_FORMAT);
    assert_non_null(strstr(err, "trailing"));
    /* a cursor over a scalar */
    msgpack_object five = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = 5};
    assert_int_equal(ipc_rd_init(&r, &five, "plan", err), LT_ERR_FORMAT);
    /* too many elements for the caller's buffer */
    assert_int_equal(ipc_rd_init(&r, env.payload, "plan", err), 0);
    ipc_rd_skip(&r);
    int32_t small[2];
    assert_int_equal(ipc_rd_i32_array(&r, small, 2, &n), LT_ERR_RANGE);
    ipc_envelope_fini(&env);
    ipc_writer_fini(&w);
}

static void test_no_alloc_steady_state(void **state) {
#if COUNT_ALLOCS
    char err[LT_ERR_LEN];
    ipc_writer_t w;
    ipc_envelope_t env;
    assert_int_equal(ipc_writer_init(&w, 0, err), 0);
    assert_int_equal(ipc_envelope_init(&env, 0, err), 0);
    const void *data;
    size_t len;
    int32_t ids[512];
    for (int i = 0; i < 512; i++) ids[i] = i * 7;
    ipc_trace_ctx_t tc = {ipc_str(TP), ipc_str("")};
    /* warm up with the largest message, then 1000 messages of varying size */
    for (int it = -1; it < 1000; it++) {
        if (it == 0) {
            g_allocs = 0;
            g_counting = 1;
        }
        int n = it < 0 ? 512 : 1 + it % 512;
        assert_int_equal(ipc_envelope_begin(&w, IPC_MSG_STEP, ipc_str("req-1"), &tc, err), 0);
        ipc_wr_array(&w, 3);
        ipc_wr_u64(&w, (uint64_t)it);
        ipc_wr_i32_array(&w, ids, (size_t)n);
        ipc_wr_i32_vec(&w, ids, (size_t)n);
        assert_int_equal(ipc_envelope_end(&w, &data, &len, err), 0);
        assert_int_equal(ipc_envelope_decode(data, len, &env, err), 0);
        ipc_rd_t r;
        int32_t back[512];
        size_t got;
        uint64_t step;
        ipc_rd_init(&r, env.payload, "step", err);
        ipc_rd_u64(&r, &step);
        ipc_rd_i32_array(&r, back, 512, &got);
        ipc_rd_i32_vec(&r, back, 512, &got);
        assert_int_equal(ipc_rd_end(&r), 0);
        assert_int_equal(got, (size_t)n);
    }
    g_counting = 0;
    assert_int_equal(g_allocs, 0);
    /* the counter does count */
    g_counting = 1;
    void *volatile probe = malloc(16);
    g_counting = 0;
    free(probe);
    assert_int_equal(g_allocs, 1);
    ipc_envelope_fini(&env);
    ipc_writer_fini(&w);
#else
    skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_traceparent),
        cmocka_unit_test(test_writer_refuses),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_reader_errors),
        cmocka_unit_test(test_no_alloc_steady_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
