/*
 * envelope.c — the msgpack envelope every lantern message travels in, and the typed reader and
 * writer that payload schemas (requests, step plans, outputs) are written with.
 *
 * Decoding uses msgpack-c, after a bounds pre-scan of our own: msgpack-c allocates a container's
 * element array from the count in its header before it has seen a single element, so the six
 * bytes "dd 0f ff ff ff 01" make it allocate 6 GiB. The scan walks the bytes once without
 * building anything, refuses truncation, trailing bytes, reserved type bytes and nesting deeper
 * than IPC_MAX_DEPTH, and adds up exactly how much zone msgpack_unpack will take (one
 * msgpack_object per array element, one msgpack_object_kv per map pair), so that the decoder can
 * size its zone once and reuse it: in steady state a decode allocates nothing, and an input can
 * never make it allocate more than about 24 bytes per input byte. The scan also records where
 * each envelope field starts, which gives the payload's raw byte span.
 *
 * Encoding is msgpack-c's packer writing into our growable buffer (ipc_writer_t).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"

#define ENV_MAGIC 0x49504345u /* "IPCE": set by ipc_envelope_init */
#define ZONE_MIN  4096

/* ---- names ---- */

const char *ipc_msg_type_name(uint32_t type) {
    static const char *const names[] = {"?",    "ADD",    "ABORT", "UTILITY",  "OUTPUT",
                                        "STEP", "RESULT", "HELLO", "SHUTDOWN", "ERROR"};
    return type >= 1 && type <= IPC_MSG_LAST ? names[type] : "?";
}

static const char *obj_type_name(msgpack_object_type t) {
    switch (t) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative int";
    case MSGPACK_OBJECT_FLOAT32: return "float32";
    case MSGPACK_OBJECT_FLOAT64: return "float64";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "?";
}

/* ---- trace context and request id checks ---- */

static bool is_lower_hex(const char *s, size_t n, bool *all_zero) {
    bool zero = true;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        if (c != '0') zero = false;
    }
    if (all_zero) *all_zero = zero;
    return true;
}

bool ipc_traceparent_valid(const char *s, size_t len) {
    /* 00-TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT-PPPPPPPPPPPPPPPP-FF
     * 0  3                                36               53 */
    if (!s || len != IPC_TRACEPARENT_LEN) return false;
    if (s[0] != '0' || s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-') return false;
    bool trace_zero, parent_zero;
    return is_lower_hex(s + 3, 32, &trace_zero) && is_lower_hex(s + 36, 16, &parent_zero) &&
           is_lower_hex(s + 53, 2, NULL) && !trace_zero && !parent_zero;
}

/* Printable ASCII only: tracestate's grammar is a subset of it. */
bool ipc_tracestate_valid(const char *s, size_t len) {
    if (len > IPC_TRACESTATE_MAX) return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return false;
    return true;
}

/* Request ids end up in log lines: no control bytes (UTF-8 is fine). */
bool ipc_request_id_valid(const char *s, size_t len) {
    if (len == 0 || len > IPC_REQUEST_ID_MAX) return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f) return false;
    return true;
}

/* ---- bounds pre-scan ---- */

static inline uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Walks the one msgpack object that must fill p[0, len) exactly. On success *zone is the zone
 * bytes msgpack_unpack will allocate for it and starts[0, *nstarts) the offsets of the root
 * container's first `cap` children. HOT */
static int mp_scan(const uint8_t *p, size_t len, size_t *zone, size_t *starts, int cap,
                   int *nstarts, char *err) {
    uint64_t left[IPC_MAX_DEPTH + 1]; /* objects still to read at each depth */
    int depth = 0;
    size_t off = 0, z = 0;
    left[0] = 1;
    *nstarts = 0;
    while (depth >= 0) {
        if (left[depth] == 0) {
            depth--;
            continue;
        }
        left[depth]--;
        if (depth == 1 && *nstarts < cap) starts[(*nstarts)++] = off;
        if (off >= len) return lt_errf(err, LT_ERR_FORMAT, "envelope: truncated at byte %zu", off);
        uint8_t b = p[off++];
        uint64_t skip = 0, count = 0; /* bytes to skip / container children */
        size_t elem = 0;              /* zone bytes per container child */
        int lenbytes = 0;             /* big-endian length field that follows b */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool: the byte is the whole object */
        } else if (b >= 0x80 && b <= 0x8f) {
            count = b & 0x0f;
            elem = sizeof(msgpack_object_kv);
        } else if (b >= 0x90 && b <= 0x9f) {
            count = b & 0x0f;
            elem = sizeof(msgpack_object);
        } else if (b >= 0xa0 && b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4:
            case 0xd9: lenbytes = 1; break; /* bin8, str8 */
            case 0xc5:
            case 0xda: lenbytes = 2; break; /* bin16, str16 */
            case 0xc6:
            case 0xdb: lenbytes = 4; break; /* bin32, str32 */
            case 0xc7:
                lenbytes = 1;
                skip = 1;
                break; /* ext8: len, type, data */
            case 0xc8:
                lenbytes = 2;
                skip = 1;
                break;
            case 0xc9:
                lenbytes = 4;
                skip = 1;
                break;
            case 0xca: skip = 4; break; /* float32 */
            case 0xcb: skip = 8; break; /* float64 */
            case 0xcc:
            case 0xd0: skip = 1; break; /* (u)int8 */
            case 0xcd:
            case 0xd1: skip = 2; break;
            case 0xce:
            case 0xd2: skip = 4; break;
            case 0xcf:
            case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break; /* fixext1..16: type + data */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc:
            case 0xdd:
            case 0xde:
            case 0xdf: {
                int n = (b & 1) ? 4 : 2;
                if (len - off < (size_t)n)
                    return lt_errf(err, LT_ERR_FORMAT, "envelope: truncated at byte %zu", off);
                count = be(p + off, n);
                off += n;
                elem = b >= 0xde ? sizeof(msgpack_object_kv) : sizeof(msgpack_object);
                break;
            }
            default: /* 0xc1 is reserved */
                return lt_errf(err, LT_ERR_FORMAT, "envelope: invalid msgpack byte 0x%02x at %zu",
                               b, off - 1);
            }
        }
        if (lenbytes) {
            if (len - off < (size_t)lenbytes)
                return lt_errf(err, LT_ERR_FORMAT, "envelope: truncated at byte %zu", off);
            skip += be(p + off, lenbytes);
            off += lenbytes;
        }
        if (skip > len - off)
            return lt_errf(err, LT_ERR_FORMAT, "envelope: truncated at byte %zu", off);
        off += skip;
        if (elem) {
            uint64_t children = elem == sizeof(msgpack_object_kv) ? 2 * count : count;
            /* Each child takes at least one byte: a count the rest of the input cannot hold is
             * refused here, before it can turn into a huge allocation. */
            if (children > len - off)
                return lt_errf(err, LT_ERR_FORMAT,
                               "envelope: container of %llu elements at byte %zu is truncated",
                               (unsigned long long)count, off);
            z += (size_t)count * elem;
            if (children) {
                if (depth + 1 > IPC_MAX_DEPTH)
                    return lt_errf(err, LT_ERR_FORMAT, "envelope: nested deeper than %d",
                                   IPC_MAX_DEPTH);
                left[++depth] = children;
            }
        }
    }
    if (off != len)
        return lt_errf(err, LT_ERR_FORMAT, "envelope: %zu trailing bytes after the message",
                       len - off);
    *zone = z;
    return 0;
}

/* ---- decoder ---- */

int ipc_envelope_init(ipc_envelope_t *env, size_t max_payload, char *err) {
    memset(env, 0, sizeof *env);
    env->max_payload = max_payload ? max_payload : IPC_MAX_PAYLOAD_DEF;
    if (!msgpack_zone_init(&env->zone, ZONE_MIN))
        return lt_errf(err, LT_ERR_NOMEM, "envelope: out of memory");
    env->zone_cap = ZONE_MIN;
    env->magic = ENV_MAGIC;
    return 0;
}

void ipc_envelope_fini(ipc_envelope_t *env) {
    if (env->magic == ENV_MAGIC && env->zone_cap) msgpack_zone_destroy(&env->zone);
    memset(env, 0, sizeof *env);
}

/* Makes the zone's single chunk hold `need` bytes: msgpack_zone_clear keeps one chunk, so a
 * zone whose first chunk is big enough never allocates again. */
static int zone_reserve(ipc_envelope_t *env, size_t need, char *err) {
    if (need <= env->zone_cap) {
        msgpack_zone_clear(&env->zone);
        return 0;
    }
    size_t cap = env->zone_cap * 2 > need ? env->zone_cap * 2 : need;
    if (env->zone_cap) msgpack_zone_destroy(&env->zone);
    env->zone_cap = 0;
    if (!msgpack_zone_init(&env->zone, cap))
        return lt_errf(err, LT_ERR_NOMEM, "envelope: out of memory for %zu bytes of objects", cap);
    env->zone_cap = cap;
    return 0;
}

int ipc_envelope_decode(const void *buf, size_t len, ipc_envelope_t *env, char *err) {
    if (!env || env->magic != ENV_MAGIC)
        return lt_errf(err, LT_ERR_INVAL, "envelope: decoder not initialised");
    env->payload = NULL;
    if (!buf || len == 0) return lt_errf(err, LT_ERR_FORMAT, "envelope: empty message");
    if (len > env->max_payload + IPC_ENVELOPE_OVERHEAD)
        return lt_errf(err, LT_ERR_RANGE, "envelope: %zu bytes exceed the limit of %zu", len,
                       env->max_payload + IPC_ENVELOPE_OVERHEAD);

    const uint8_t *p = buf;
    size_t zone = 0, starts[5] = {0};
    int nstarts, rc;
    if ((rc = mp_scan(p, len, &zone, starts, 5, &nstarts, err))) return rc;
    if ((rc = zone_reserve(env, zone, err))) return rc;

    msgpack_object root;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(buf, len, &off, &env->zone, &root);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return lt_errf(err, LT_ERR_NOMEM, "envelope: out of memory");
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len)
        return lt_errf(err, LT_ERR_FORMAT, "envelope: msgpack-c refused it (%d)", (int)ur);

    if (root.type != MSGPACK_OBJECT_ARRAY)
        return lt_errf(err, LT_ERR_FORMAT, "envelope: expected an array, got %s",
                       obj_type_name(root.type));
    const msgpack_object *f = root.via.array.ptr;
    uint32_t nf = root.via.array.size;
    /* The version first: a future layout must read as "unsupported", not "malformed". */
    if (nf < 1 || f[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return lt_errf(err, LT_ERR_FORMAT, "envelope: first field is not a version number");
    if (f[0].via.u64 != IPC_VERSION)
        return lt_errf(err, LT_ERR_UNSUPPORTED, "envelope: version %llu, this build speaks %d",
                       (unsigned long long)f[0].via.u64, IPC_VERSION);
    if (nf != 5 || nstarts != 5)
        return lt_errf(err, LT_ERR_FORMAT, "envelope: %u fields, expected 5", nf);

    if (f[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return lt_errf(err, LT_ERR_FORMAT, "envelope: type is a %s, expected uint",
                       obj_type_name(f[1].type));
    if (f[1].via.u64 < 1 || f[1].via.u64 > IPC_MSG_LAST)
        return lt_errf(err, LT_ERR_FORMAT, "envelope: unknown message type %llu",
                       (unsigned long long)f[1].via.u64);

    ipc_str_t rid = {NULL, 0};
    if (f[2].type == MSGPACK_OBJECT_STR) {
        rid.ptr = f[2].via.str.ptr;
        rid.len = f[2].via.str.size;
        if (!ipc_request_id_valid(rid.ptr, rid.len))
            return lt_errf(err, LT_ERR_FORMAT,
                           "envelope: request id of %zu bytes is empty, longer than %d or holds "
                           "control characters",
                           rid.len, IPC_REQUEST_ID_MAX);
    } else if (f[2].type != MSGPACK_OBJECT_NIL) {
        return lt_errf(err, LT_ERR_FORMAT, "envelope: request id is a %s, expected str or nil",
                       obj_type_name(f[2].type));
    }

    ipc_trace_ctx_t tc = {{NULL, 0}, {NULL, 0}};
    bool has_trace = false;
    if (f[3].type == MSGPACK_OBJECT_ARRAY) {
        const msgpack_object *t = f[3].via.array.ptr;
        if (f[3].via.array.size != 2 || t[0].type != MSGPACK_OBJECT_STR ||
            t[1].type != MSGPACK_OBJECT_STR)
            return lt_errf(err, LT_ERR_FORMAT,
                           "envelope: trace context is not [traceparent, tracestate]");
        tc.traceparent = (ipc_str_t){t[0].via.str.ptr, t[0].via.str.size};
        tc.tracestate = (ipc_str_t){t[1].via.str.ptr, t[1].via.str.size};
        if (!ipc_traceparent_valid(tc.traceparent.ptr, tc.traceparent.len))
            return lt_errf(err, LT_ERR_FORMAT, "envelope: invalid traceparent \"%.*s\"",
                           tc.traceparent.len > 64 ? 64 : (int)tc.traceparent.len,
                           tc.traceparent.ptr);
        if (!ipc_tracestate_valid(tc.tracestate.ptr, tc.tracestate.len))
            return lt_errf(err, LT_ERR_FORMAT,
                           "envelope: tracestate of %zu bytes is longer than %d or not printable",
                           tc.tracestate.len, IPC_TRACESTATE_MAX);
        has_trace = true;
    } else if (f[3].type != MSGPACK_OBJECT_NIL) {
        return lt_errf(err, LT_ERR_FORMAT, "envelope: trace context is a %s, expected array or nil",
                       obj_type_name(f[3].type));
    }

    size_t raw_len = len - starts[4];
    if (raw_len > env->max_payload)
        return lt_errf(err, LT_ERR_RANGE, "envelope: payload of %zu bytes exceeds the limit of %zu",
                       raw_len, env->max_payload);

    env->version = (uint32_t)f[0].via.u64;
    env->type = (ipc_msg_type_t)f[1].via.u64;
    env->request_id = rid;
    env->has_trace = has_trace;
    env->trace = tc;
    env->payload = &f[4];
    env->payload_raw = p + starts[4];
    env->payload_raw_len = raw_len;
    return 0;
}

int ipc_envelope_payload_bin(const ipc_envelope_t *env, const void **p, size_t *len, char *err) {
    if (!env->payload || env->payload->type != MSGPACK_OBJECT_BIN)
        return lt_errf(err, LT_ERR_FORMAT, "%s message: payload is a %s, expected bin",
                       ipc_msg_type_name(env->type),
                       env->payload ? obj_type_name(env->payload->type) : "nothing");
    *p = env->payload->via.bin.ptr;
    *len = env->payload->via.bin.size;
    return 0;
}

/* ---- writer ---- */

/* msgpack_packer's sink: appends to the writer's buffer, doubling it when full. HOT (allocates
 * only while the buffer is still growing) */
static int wr_sink(void *data, const char *p, size_t n) {
    ipc_writer_t *w = data;
    if (w->rc) return -1;
    if (n > w->cap - w->len) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap - w->len < n) {
            if (cap > SIZE_MAX / 2) {
                w->rc = LT_ERR_NOMEM;
                return -1;
            }
            cap *= 2;
        }
        char *nb = realloc(w->buf, cap);
        if (!nb) {
            w->rc = LT_ERR_NOMEM;
            return -1;
        }
        w->buf = nb;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return 0;
}

int ipc_writer_init(ipc_writer_t *w, size_t initial_cap, char *err) {
    memset(w, 0, sizeof *w);
    msgpack_packer_init(&w->pk, w, wr_sink);
    if (initial_cap) {
        if (!(w->buf = malloc(initial_cap)))
            return lt_errf(err, LT_ERR_NOMEM, "writer: out of memory for %zu bytes", initial_cap);
        w->cap = initial_cap;
    }
    return 0;
}

void ipc_writer_fini(ipc_writer_t *w) {
    free(w->buf);
    memset(w, 0, sizeof *w);
}

void ipc_writer_reset(ipc_writer_t *w) {
    w->len = 0;
    w->rc = 0;
}

int ipc_writer_check(const ipc_writer_t *w, char *err) {
    if (!w->rc) return 0;
    return lt_errf(err, w->rc, "writer: %s",
                   w->rc == LT_ERR_NOMEM ? "out of memory" : "value too large to pack");
}

/* Marks a size that msgpack cannot represent (over 2^32 - 1). */
static int wr_range(ipc_writer_t *w, size_t n) {
    if (n > UINT32_MAX && !w->rc) w->rc = LT_ERR_RANGE;
    return w->rc;
}

int ipc_envelope_begin(ipc_writer_t *w, ipc_msg_type_t type, ipc_str_t request_id,
                       const ipc_trace_ctx_t *trace, char *err) {
    ipc_writer_reset(w);
    if ((uint32_t)type < 1 || (uint32_t)type > IPC_MSG_LAST)
        return lt_errf(err, LT_ERR_INVAL, "envelope: unknown message type %u", (unsigned)type);
    if (request_id.ptr && !ipc_request_id_valid(request_id.ptr, request_id.len))
        return lt_errf(err, LT_ERR_INVAL,
                       "envelope: request id of %zu bytes is empty, longer than %d or holds "
                       "control characters",
                       request_id.len, IPC_REQUEST_ID_MAX);
    if (trace) {
        if (!ipc_traceparent_valid(trace->traceparent.ptr, trace->traceparent.len))
            return lt_errf(err, LT_ERR_INVAL, "envelope: invalid traceparent");
        if (trace->tracestate.len && !trace->tracestate.ptr)
            return lt_errf(err, LT_ERR_INVAL, "envelope: tracestate has a length but no bytes");
        if (!ipc_tracestate_valid(trace->tracestate.ptr, trace->tracestate.len))
            return lt_errf(err, LT_ERR_INVAL, "envelope: tracestate too long or not printable");
    }
    msgpack_packer *pk = &w->pk;
    msgpack_pack_array(pk, 5);
    msgpack_pack_unsigned_int(pk, IPC_VERSION);
    msgpack_pack_unsigned_int(pk, (unsigned)type);
    ipc_wr_str(w, request_id.ptr, request_id.len);
    if (trace) {
        msgpack_pack_array(pk, 2);
        ipc_wr_str(w, trace->traceparent.ptr, trace->traceparent.len);
        msgpack_pack_str(pk, trace->tracestate.len);
        if (trace->tracestate.len)
            msgpack_pack_str_body(pk, trace->tracestate.ptr, trace->tracestate.len);
    } else {
        msgpack_pack_nil(pk);
    }
    return ipc_writer_check(w, err);
}

int ipc_envelope_end(ipc_writer_t *w, const void **data, size_t *len, char *err) {
    int rc = ipc_writer_check(w, err);
    if (rc) return rc;
    *data = w->buf;
    *len = w->len;
    return 0;
}

int ipc_envelope_write_bin(ipc_writer_t *w, ipc_msg_type_t type, ipc_str_t request_id,
                           const ipc_trace_ctx_t *trace, const void *payload, size_t payload_len,
                           const void **data, size_t *len, char *err) {
    int rc = ipc_envelope_begin(w, type, request_id, trace, err);
    if (rc) return rc;
    if (!payload && !payload_len)
        ipc_wr_nil(w);
    else
        ipc_wr_bin(w, payload, payload_len);
    return ipc_envelope_end(w, data, len, err);
}

/* ---- payload writers ---- */

int ipc_wr_nil(ipc_writer_t *w) {
    msgpack_pack_nil(&w->pk);
    return w->rc;
}

int ipc_wr_bool(ipc_writer_t *w, bool v) {
    v ? msgpack_pack_true(&w->pk) : msgpack_pack_false(&w->pk);
    return w->rc;
}

int ipc_wr_u64(ipc_writer_t *w, uint64_t v) {
    msgpack_pack_uint64(&w->pk, v);
    return w->rc;
}

int ipc_wr_i64(ipc_writer_t *w, int64_t v) {
    msgpack_pack_int64(&w->pk, v);
    return w->rc;
}

int ipc_wr_f32(ipc_writer_t *w, float v) {
    msgpack_pack_float(&w->pk, v);
    return w->rc;
}

int ipc_wr_f64(ipc_writer_t *w, double v) {
    msgpack_pack_double(&w->pk, v);
    return w->rc;
}

int ipc_wr_str(ipc_writer_t *w, const char *s, size_t len) {
    if (!s) return ipc_wr_nil(w);
    if (wr_range(w, len)) return w->rc;
    msgpack_pack_str(&w->pk, len);
    if (len) msgpack_pack_str_body(&w->pk, s, len);
    return w->rc;
}

int ipc_wr_cstr(ipc_writer_t *w, const char *s) {
    return ipc_wr_str(w, s, s ? strlen(s) : 0);
}

int ipc_wr_bin(ipc_writer_t *w, const void *p, size_t len) {
    if (wr_range(w, len)) return w->rc;
    msgpack_pack_bin(&w->pk, len);
    if (len) msgpack_pack_bin_body(&w->pk, p, len);
    return w->rc;
}

int ipc_wr_array(ipc_writer_t *w, size_t n) {
    if (wr_range(w, n)) return w->rc;
    msgpack_pack_array(&w->pk, n);
    return w->rc;
}

int ipc_wr_map(ipc_writer_t *w, size_t n) {
    if (wr_range(w, n)) return w->rc;
    msgpack_pack_map(&w->pk, n);
    return w->rc;
}

int ipc_wr_i32_array(ipc_writer_t *w, const int32_t *a, size_t n) {
    if (ipc_wr_array(w, n)) return w->rc;
    for (size_t i = 0; i < n; i++) msgpack_pack_int32(&w->pk, a[i]);
    return w->rc;
}

int ipc_wr_f32_array(ipc_writer_t *w, const float *a, size_t n) {
    if (ipc_wr_array(w, n)) return w->rc;
    for (size_t i = 0; i < n; i++) msgpack_pack_float(&w->pk, a[i]);
    return w->rc;
}

int ipc_wr_i32_vec(ipc_writer_t *w, const int32_t *a, size_t n) {
    if (n > UINT32_MAX / 4) return wr_range(w, (size_t)UINT32_MAX + 1);
    msgpack_pack_bin(&w->pk, n * 4);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n) msgpack_pack_bin_body(&w->pk, a, n * 4);
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)a[i];
        char le[4] = {(char)u, (char)(u >> 8), (char)(u >> 16), (char)(u >> 24)};
        msgpack_pack_bin_body(&w->pk, le, 4);
    }
#endif
    return w->rc;
}

/* ---- payload reader ---- */

static const msgpack_object *rd_at(const ipc_rd_t *r, uint32_t i) {
    if (r->items) return &r->items[i];
    return (i & 1) ? &r->kv[i >> 1].val : &r->kv[i >> 1].key;
}

/* Records the first error on r and all its ancestors; the message goes out only if no error was
 * recorded anywhere on the chain before. */
__attribute__((format(printf, 4, 5))) static int rd_fail(ipc_rd_t *r, int code, uint32_t elem,
                                                         const char *fmt, ...) {
    ipc_rd_t *root = r;
    while (root->parent) root = root->parent;
    bool first = root->rc == 0 && r->rc == 0;
    for (ipc_rd_t *q = r; q; q = q->parent)
        if (!q->rc) q->rc = code;
    if (!first || !r->err) return code;
    uint32_t path[IPC_MAX_DEPTH];
    int np = 0;
    for (const ipc_rd_t *q = r; q->parent && np < IPC_MAX_DEPTH; q = q->parent)
        path[np++] = q->index;
    char *e = r->err;
    int k = snprintf(e, LT_ERR_LEN, "%s", root->name ? root->name : "payload");
    while (np > 0 && k >= 0 && k < LT_ERR_LEN)
        k += snprintf(e + k, (size_t)(LT_ERR_LEN - k), "[%u]", path[--np]);
    if (k >= 0 && k < LT_ERR_LEN)
        k += snprintf(e + k, (size_t)(LT_ERR_LEN - k), ": element %u: ", elem);
    if (k >= 0 && k < LT_ERR_LEN) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e + k, (size_t)(LT_ERR_LEN - k), fmt, ap);
        va_end(ap);
    }
    return code;
}

/* The next element, or NULL after an error (recorded). */
static const msgpack_object *rd_next(ipc_rd_t *r) {
    if (r->rc) return NULL;
    if (r->pos >= r->n) {
        rd_fail(r, LT_ERR_FORMAT, r->pos, "missing (only %u elements)", r->n);
        return NULL;
    }
    return rd_at(r, r->pos++);
}

static int rd_type(ipc_rd_t *r, const msgpack_object *o, const char *want) {
    return rd_fail(r, LT_ERR_FORMAT, r->pos - 1, "expected %s, got %s", want,
                   obj_type_name(o->type));
}

static void rd_over(ipc_rd_t *r, const msgpack_object *o) {
    memset(r, 0, sizeof *r);
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        r->items = o->via.array.ptr;
        r->n = o->via.array.size;
    } else {
        r->kv = o->via.map.ptr;
        r->n = o->via.map.size * 2;
    }
}

int ipc_rd_init(ipc_rd_t *r, const msgpack_object *o, const char *name, char *err) {
    if (!o || (o->type != MSGPACK_OBJECT_ARRAY && o->type != MSGPACK_OBJECT_MAP)) {
        memset(r, 0, sizeof *r);
        r->rc = LT_ERR_FORMAT;
        return lt_errf(err, LT_ERR_FORMAT, "%s: expected an array or map, got %s",
                       name ? name : "payload", o ? obj_type_name(o->type) : "nothing");
    }
    rd_over(r, o);
    r->name = name;
    r->err = err;
    return 0;
}

int ipc_rd_end(ipc_rd_t *r) {
    if (r->rc) return r->rc;
    if (r->pos != r->n)
        return rd_fail(r, LT_ERR_FORMAT, r->pos, "%u unexpected trailing elements", r->n - r->pos);
    return 0;
}

static int rd_int(ipc_rd_t *r, int64_t *v, int64_t lo, int64_t hi, uint64_t *uv) {
    const msgpack_object *o = rd_next(r);
    if (!o) return r->rc;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (uv) {
            *uv = o->via.u64;
            return 0;
        }
        if (o->via.u64 > (uint64_t)hi)
            return rd_fail(r, LT_ERR_RANGE, r->pos - 1, "%llu is outside [%lld, %lld]",
                           (unsigned long long)o->via.u64, (long long)lo, (long long)hi);
        *v = (int64_t)o->via.u64;
    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && !uv) {
        *v = o->via.i64;
    } else {
        return rd_type(r, o, uv ? "uint" : "int");
    }
    if (*v < lo || *v > hi)
        return rd_fail(r, LT_ERR_RANGE, r->pos - 1, "%lld is outside [%lld, %lld]", (long long)*v,
                       (long long)lo, (long long)hi);
    return 0;
}

int ipc_rd_u64(ipc_rd_t *r, uint64_t *v) {
    *v = 0;
    return rd_int(r, NULL, 0, 0, v);
}

int ipc_rd_u32(ipc_rd_t *r, uint32_t *v) {
    uint64_t u = 0;
    *v = 0;
    int rc = rd_int(r, NULL, 0, 0, &u);
    if (rc) return rc;
    if (u > UINT32_MAX)
        return rd_fail(r, LT_ERR_RANGE, r->pos - 1, "%llu does not fit 32 bits",
                       (unsigned long long)u);
    *v = (uint32_t)u;
    return 0;
}

int ipc_rd_i64(ipc_rd_t *r, int64_t *v) {
    *v = 0;
    int64_t x = 0;
    int rc = rd_int(r, &x, INT64_MIN, INT64_MAX, NULL);
    if (!rc) *v = x;
    return rc;
}

int ipc_rd_i32_range(ipc_rd_t *r, int32_t *v, int32_t lo, int32_t hi) {
    *v = 0;
    int64_t x = 0;
    int rc = rd_int(r, &x, lo, hi, NULL);
    if (!rc) *v = (int32_t)x;
    return rc;
}

int ipc_rd_i32(ipc_rd_t *r, int32_t *v) {
    return ipc_rd_i32_range(r, v, INT32_MIN, INT32_MAX);
}

static bool obj_number(const msgpack_object *o, double *v) {
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *v = o->via.f64; return true;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *v = (double)o->via.u64; return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *v = (double)o->via.i64; return true;
    default: return false;
    }
}

int ipc_rd_f64(ipc_rd_t *r, double *v) {
    *v = 0;
    const msgpack_object *o = rd_next(r);
    if (!o) return r->rc;
    return obj_number(o, v) ? 0 : rd_type(r, o, "number");
}

int ipc_rd_f32(ipc_rd_t *r, float *v) {
    double d = 0;
    int rc = ipc_rd_f64(r, &d);
    *v = (float)d;
    return rc;
}

int ipc_rd_bool(ipc_rd_t *r, bool *v) {
    *v = false;
    const msgpack_object *o = rd_next(r);
    if (!o) return r->rc;
    if (o->type != MSGPACK_OBJECT_BOOLEAN) return rd_type(r, o, "bool");
    *v = o->via.boolean;
    return 0;
}

int ipc_rd_str(ipc_rd_t *r, ipc_str_t *s, size_t max_len) {
    *s = (ipc_str_t){NULL, 0};
    const msgpack_object *o = rd_next(r);
    if (!o) return r->rc;
    if (o->type != MSGPACK_OBJECT_STR) return rd_type(r, o, "str");
    if (o->via.str.size > max_len)
        return rd_fail(r, LT_ERR_RANGE, r->pos - 1, "str of %u bytes, at most %zu allowed",
                       o->via.str.size, max_len);
    /* An empty str still gets a non-NULL pointer: NULL means nil. */
    s->ptr = o->via.str.size ? o->via.str.ptr : "";
    s->len = o->via.str.size;
    return 0;
}

int ipc_rd_bin(ipc_rd_t *r, const void **p, size_t *len, size_t max_len) {
    *p = NULL;
    *len = 0;
    const msgpack_object *o = rd_next(r);
    if (!o) return r->rc;
    if (o->type != MSGPACK_OBJECT_BIN) return rd_type(r, o, "bin");
    if (o->via.bin.size > max_len)
        return rd_fail(r, LT_ERR_RANGE, r->pos - 1, "bin of %u bytes, at most %zu allowed",
                       o->via.bin.size, max_len);
    *p = o->via.bin.ptr;
    *len = o->via.bin.size;
    return 0;
}

int ipc_rd_nil(ipc_rd_t *r) {
    if (r->rc) return r->rc;
    if (r->pos >= r->n)
        return rd_fail(r, LT_ERR_FORMAT, r->pos, "missing (only %u elements)", r->n);
    if (rd_at(r, r->pos)->type != MSGPACK_OBJECT_NIL) return 0;
    r->pos++;
    return 1;
}

int ipc_rd_object(ipc_rd_t *r, const msgpack_object **o) {
    *o = rd_next(r);
    return *o ? 0 : r->rc;
}

int ipc_rd_skip(ipc_rd_t *r) {
    return rd_next(r) ? 0 : r->rc;
}

static int rd_container(ipc_rd_t *r, ipc_rd_t *sub, uint32_t *n, uint32_t max_n,
                        msgpack_object_type t) {
    memset(sub, 0, sizeof *sub);
    sub->parent = r;
    sub->err = r->err;
    sub->index = r->pos;
    if (n) *n = 0;
    const msgpack_object *o = rd_next(r);
    if (!o) return sub->rc = r->rc;
    if (o->type != t) {
        rd_type(r, o, t == MSGPACK_OBJECT_ARRAY ? "array" : "map");
        return sub->rc = r->rc;
    }
    uint32_t count = t == MSGPACK_OBJECT_ARRAY ? o->via.array.size : o->via.map.size;
    if (count > max_n) {
        rd_fail(r, LT_ERR_RANGE, r->pos - 1, "%s of %u elements, at most %u allowed",
                obj_type_name(t), count, max_n);
        return sub->rc = r->rc;
    }
    rd_over(sub, o);
    sub->parent = r;
    sub->err = r->err;
    sub->index = r->pos - 1;
    if (n) *n = count;
    return 0;
}

int ipc_rd_array(ipc_rd_t *r, ipc_rd_t *sub, uint32_t *n, uint32_t max_n) {
    return rd_container(r, sub, n, max_n, MSGPACK_OBJECT_ARRAY);
}

int ipc_rd_map(ipc_rd_t *r, ipc_rd_t *sub, uint32_t *n, uint32_t max_n) {
    return rd_container(r, sub, n, max_n, MSGPACK_OBJECT_MAP);
}

int ipc_rd_i32_array(ipc_rd_t *r, int32_t *buf, size_t cap, size_t *n) {
    *n = 0;
    ipc_rd_t a;
    uint32_t cnt;
    int rc = ipc_rd_array(r, &a, &cnt, cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap);
    if (rc) return rc;
    for (uint32_t i = 0; i < cnt; i++)
        if ((rc = ipc_rd_i32(&a, &buf[i]))) return rc;
    *n = cnt;
    return 0;
}

int ipc_rd_f32_array(ipc_rd_t *r, float *buf, size_t cap, size_t *n) {
    *n = 0;
    ipc_rd_t a;
    uint32_t cnt;
    int rc = ipc_rd_array(r, &a, &cnt, cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap);
    if (rc) return rc;
    for (uint32_t i = 0; i < cnt; i++)
        if ((rc = ipc_rd_f32(&a, &buf[i]))) return rc;
    *n = cnt;
    return 0;
}

int ipc_rd_i32_vec(ipc_rd_t *r, int32_t *buf, size_t cap, size_t *n) {
    *n = 0;
    const void *p;
    size_t len;
    int rc = ipc_rd_bin(r, &p, &len, cap > SIZE_MAX / 4 ? SIZE_MAX : cap * 4);
    if (rc) return rc;
    if (len % 4) return rd_fail(r, LT_ERR_FORMAT, r->pos - 1, "int32 vector of %zu bytes", len);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (len) memcpy(buf, p, len);
#else
    const uint8_t *b = p;
    for (size_t i = 0; i < len / 4; i++)
        buf[i] = (int32_t)((uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                           (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24);
#endif
    *n = len / 4;
    return 0;
}
