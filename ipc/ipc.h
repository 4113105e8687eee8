/*
 * ipc.h — how lantern's processes talk to each other (DESIGN.md §2):
 *
 *   envelopes   msgpack positional arrays [version, type, request_id, trace_context, payload],
 *               a writer into a reused buffer and a validating decoder, plus a small typed
 *               reader/writer for payload schemas built on msgpack;
 *   channels    thin ZeroMQ wrappers (ROUTER/DEALER, PUSH/PULL, PUB/XPUB/SUB) over ipc:// or
 *               tcp:// endpoints, names for socket files and shared memory, cleanup;
 *   ring        a shared-memory broadcast ring from one writer (engine) to N readers (workers),
 *               messages larger than a chunk overflow to a ZeroMQ XPUB/SUB pair;
 *   all-reduce  a deterministic shared-memory sum across the ranks of CPU tensor parallelism.
 *
 * Return values: 0 on success, a negative LT_ERR_* with a one-line explanation in a caller
 * buffer of LT_ERR_LEN bytes on failure, or one of the positive codes below, which are normal
 * outcomes rather than errors (nginx's AGAIN): the caller decides whether to retry.
 *
 * Thread safety: every object here (writer, envelope, reader cursor, socket, ring handle,
 * all-reduce handle) belongs to one thread at a time; different objects may be used from
 * different threads. An ipc_ctx_t may be shared by all threads of a process. Never use a ZeroMQ
 * context or socket in a child made by fork(); make new ones there.
 *
 * Hot path (no allocation in steady state, no lock, no blocking call unless the caller asked for
 * a wait): the envelope writer and decoder, the payload reader and writer, ipc_ring_push/_read/
 * _release for messages that fit a chunk (overflow messages go through ZeroMQ, which allocates)
 * and ipc_allreduce_sum. Functions marked HOT below. The ZeroMQ channels are not hot: ZeroMQ
 * copies and allocates per message.
 */
#ifndef LT_IPC_H
#define LT_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "lt.h"

/* Positive "not an error" outcomes. */
#define IPC_AGAIN  1 /* nothing yet (non-blocking call, or the wait timed out); try again later */
#define IPC_CLOSED 2 /* the other side closed the ring cleanly; no more messages will come */

/* ---- envelope ---- */

#define IPC_VERSION           1
#define IPC_REQUEST_ID_MAX    128         /* bytes */
#define IPC_TRACEPARENT_LEN   55          /* "00-<32 hex>-<16 hex>-<2 hex>" */
#define IPC_TRACESTATE_MAX    512         /* bytes */
#define IPC_MAX_PAYLOAD_DEF   (64u << 20) /* default limit on an envelope's payload, bytes */
#define IPC_ENVELOPE_OVERHEAD 1024        /* most bytes an envelope adds around its payload */
#define IPC_MAX_DEPTH         32          /* deepest msgpack nesting a decoder accepts */

typedef enum ipc_msg_type {
    IPC_MSG_ADD = 1,  /* frontend → engine: a new request */
    IPC_MSG_ABORT,    /* frontend → engine: cancel a request */
    IPC_MSG_UTILITY,  /* frontend ⇄ engine: control calls (stats, profile, reset cache...) */
    IPC_MSG_OUTPUT,   /* engine → frontend: one step's outputs, batched */
    IPC_MSG_STEP,     /* engine → workers: a step plan */
    IPC_MSG_RESULT,   /* worker rank 0 → engine: sampled tokens of a step */
    IPC_MSG_HELLO,    /* any child → parent: started, ready (payload: role, rank, pid) */
    IPC_MSG_SHUTDOWN, /* parent → child: finish and exit */
    IPC_MSG_ERROR,    /* any: a failure report (payload: code, text) */
    IPC_MSG_LAST = IPC_MSG_ERROR
} ipc_msg_type_t;

/* "ADD", "STEP"...; "?" for a value outside the enum. */
const char *ipc_msg_type_name(uint32_t type);

/* A string view: not NUL-terminated, borrowed. ptr == NULL means nil / absent. */
typedef struct ipc_str {
    const char *ptr;
    size_t len;
} ipc_str_t;

static inline ipc_str_t ipc_str(const char *cstr) {
    ipc_str_t s = {cstr, 0};
    if (cstr)
        while (cstr[s.len]) s.len++;
    return s;
}

/* W3C trace context of the span that sent a message. */
typedef struct ipc_trace_ctx {
    ipc_str_t traceparent; /* exactly IPC_TRACEPARENT_LEN bytes, see ipc_traceparent_valid */
    ipc_str_t tracestate;  /* 0..IPC_TRACESTATE_MAX printable ASCII bytes (ptr may be NULL) */
} ipc_trace_ctx_t;

/* Strict W3C check: "00-" 32 lowercase hex "-" 16 lowercase hex "-" 2 lowercase hex, trace id
 * and parent id not all zeros. */
bool ipc_traceparent_valid(const char *s, size_t len);
/* 0..IPC_TRACESTATE_MAX printable ASCII bytes (tracestate's grammar is a subset of it). */
bool ipc_tracestate_valid(const char *s, size_t len);
/* 1..IPC_REQUEST_ID_MAX bytes without control bytes (request ids end up in log lines). */
bool ipc_request_id_valid(const char *s, size_t len);

/* -- writing -- */

/* A growable output buffer with a msgpack packer on it. Reuse one per thread: once the buffer
 * has grown to the largest message, packing allocates nothing. Errors are sticky: after a failed
 * write every later write is a no-op and ipc_envelope_end / ipc_writer_check report it.
 * Do not copy an initialised writer (the packer points at it). */
typedef struct ipc_writer {
    msgpack_packer pk; /* packs into this writer; use it for what the ipc_wr_* helpers lack */
    char *buf;
    size_t len, cap;
    int rc; /* first error (LT_ERR_NOMEM, LT_ERR_RANGE), sticky until the next begin/reset */
} ipc_writer_t;

int ipc_writer_init(ipc_writer_t *w, size_t initial_cap, char *err);
void ipc_writer_fini(ipc_writer_t *w);
/* Empties the buffer (keeps its memory) and clears the error. HOT */
void ipc_writer_reset(ipc_writer_t *w);
/* 0, or the sticky error with a message. HOT */
int ipc_writer_check(const ipc_writer_t *w, char *err);

/* Starts an envelope: resets w and packs version, type, request_id (ptr NULL: nil) and the
 * trace context (NULL: nil), refusing what a decoder would refuse. The caller then packs exactly
 * one payload object (ipc_wr_* or w->pk) and calls ipc_envelope_end. HOT */
int ipc_envelope_begin(ipc_writer_t *w, ipc_msg_type_t type, ipc_str_t request_id,
                       const ipc_trace_ctx_t *trace, char *err);
/* The finished envelope's bytes, owned by w and valid until its next begin/reset/fini. HOT */
int ipc_envelope_end(ipc_writer_t *w, const void **data, size_t *len, char *err);
/* begin + a bin payload (data NULL and len 0: nil payload) + end. HOT */
int ipc_envelope_write_bin(ipc_writer_t *w, ipc_msg_type_t type, ipc_str_t request_id,
                           const ipc_trace_ctx_t *trace, const void *payload, size_t payload_len,
                           const void **data, size_t *len, char *err);

/* Payload writers (msgpack over w->pk). Return 0 or the sticky error. All HOT. */
int ipc_wr_nil(ipc_writer_t *w);
int ipc_wr_bool(ipc_writer_t *w, bool v);
int ipc_wr_u64(ipc_writer_t *w, uint64_t v);
int ipc_wr_i64(ipc_writer_t *w, int64_t v);
int ipc_wr_f32(ipc_writer_t *w, float v);
int ipc_wr_f64(ipc_writer_t *w, double v);
int ipc_wr_str(ipc_writer_t *w, const char *s, size_t len); /* s NULL: nil */
int ipc_wr_cstr(ipc_writer_t *w, const char *s);            /* NUL-terminated; NULL: nil */
int ipc_wr_bin(ipc_writer_t *w, const void *p, size_t len);
int ipc_wr_array(ipc_writer_t *w, size_t n); /* then exactly n objects */
int ipc_wr_map(ipc_writer_t *w, size_t n);   /* then n key, value pairs */
/* A msgpack array of n integers / floats: readable by any msgpack tool. */
int ipc_wr_i32_array(ipc_writer_t *w, const int32_t *a, size_t n);
int ipc_wr_f32_array(ipc_writer_t *w, const float *a, size_t n);
/* A bin of n little-endian int32: 4 bytes per value and one object however large n is, so the
 * decoder does no per-value work. Use it for long vectors (token ids, block tables). */
int ipc_wr_i32_vec(ipc_writer_t *w, const int32_t *a, size_t n);

/* -- decoding -- */

/* A decoded envelope, and the decoder's reusable state. Initialise once, decode many times.
 *
 * Lifetime of the decoded views: request_id, the trace strings, payload_raw and every str/bin
 * inside the payload point into the INPUT buffer; `payload` and the msgpack objects under it
 * live in this struct's zone. Both are valid until the next ipc_envelope_decode into this
 * struct, ipc_envelope_fini, or the release of the input buffer (for a ring chunk: the next
 * ipc_ring_release/_read; for a socket: its next receive), whichever comes first.
 * Do not copy an initialised envelope: it owns its zone. */
typedef struct ipc_envelope {
    uint32_t version;
    ipc_msg_type_t type;
    ipc_str_t request_id; /* ptr NULL when nil; else 1..IPC_REQUEST_ID_MAX bytes, no controls */
    bool has_trace;
    ipc_trace_ctx_t trace;         /* when has_trace: validated */
    const msgpack_object *payload; /* any msgpack object (NIL when the payload is nil) */
    const uint8_t *payload_raw;    /* the payload's encoded bytes inside the input */
    size_t payload_raw_len;        /* <= max_payload */

    /* private */
    uint32_t magic;
    size_t max_payload;
    size_t zone_cap;
    msgpack_zone zone;
} ipc_envelope_t;

/* max_payload 0: IPC_MAX_PAYLOAD_DEF. Preallocates a small object zone. */
int ipc_envelope_init(ipc_envelope_t *env, size_t max_payload, char *err);
void ipc_envelope_fini(ipc_envelope_t *env);

/* Decodes and validates one envelope: every length, type and enum is checked before use, and
 * nothing is allocated beyond what the input's own size bounds (about 24 bytes of zone per input
 * byte at worst; the zone is kept for the next message, so steady state allocates nothing).
 * Errors: LT_ERR_UNSUPPORTED for a version other than IPC_VERSION, LT_ERR_FORMAT for anything
 * else malformed (truncated, trailing bytes, wrong types, bad trace context, unknown type),
 * LT_ERR_RANGE for a payload above the limit, LT_ERR_NOMEM. Never reads outside buf[0, len).
 * HOT */
int ipc_envelope_decode(const void *buf, size_t len, ipc_envelope_t *env, char *err);

/* The payload as bin bytes (views into the input). LT_ERR_FORMAT if it is not a bin. */
int ipc_envelope_payload_bin(const ipc_envelope_t *env, const void **p, size_t *len, char *err);

/* -- reading payloads -- */

/* A cursor over the elements of a msgpack array, or the keys and values of a map (key, value,
 * key, value...). Getters take the next element, check its type and range, and store it; on a
 * mismatch they store a zero value, write "<name>[i][j]: field k: expected uint, got str" to
 * err and return LT_ERR_FORMAT (LT_ERR_RANGE for out-of-range). The first error is sticky and
 * propagates to the parent cursors, so a schema decoder may read everything and check once with
 * ipc_rd_end on the outermost cursor. Views (str, bin, objects) have the envelope's lifetime.
 * Sub-cursors must not outlive their parent. All HOT; none allocates. */
typedef struct ipc_rd {
    const msgpack_object *items; /* array elements (NULL for a map) */
    const msgpack_object_kv *kv; /* map pairs (NULL for an array) */
    uint32_t n;                  /* elements: 2 × pairs for a map */
    uint32_t pos;
    int rc;
    char *err;
    const char *name;
    struct ipc_rd *parent;
    uint32_t index; /* element index in the parent */
} ipc_rd_t;

/* o must be an array or a map; name labels error messages ("step plan"). */
int ipc_rd_init(ipc_rd_t *r, const msgpack_object *o, const char *name, char *err);
static inline uint32_t ipc_rd_left(const ipc_rd_t *r) {
    return r->n - r->pos;
}
/* Sticky status; also an error if elements are left unread. */
int ipc_rd_end(ipc_rd_t *r);

int ipc_rd_u64(ipc_rd_t *r, uint64_t *v);
int ipc_rd_u32(ipc_rd_t *r, uint32_t *v);
int ipc_rd_i64(ipc_rd_t *r, int64_t *v);
int ipc_rd_i32(ipc_rd_t *r, int32_t *v);
/* An int32 in [lo, hi]: enums, token ids, indices. */
int ipc_rd_i32_range(ipc_rd_t *r, int32_t *v, int32_t lo, int32_t hi);
/* Floats accept msgpack float32, float64 and integers. NaN and infinities pass: range-check
 * what must be finite. */
int ipc_rd_f64(ipc_rd_t *r, double *v);
int ipc_rd_f32(ipc_rd_t *r, float *v);
int ipc_rd_bool(ipc_rd_t *r, bool *v);
/* A str of at most max_len bytes (view, not NUL-terminated). */
int ipc_rd_str(ipc_rd_t *r, ipc_str_t *s, size_t max_len);
/* A bin of at most max_len bytes (view). */
int ipc_rd_bin(ipc_rd_t *r, const void **p, size_t *len, size_t max_len);
/* 1 and consumes the element if it is nil, 0 (not consumed) if it is something else: for
 * optional fields. An error if no element is left. */
int ipc_rd_nil(ipc_rd_t *r);
/* Any object, unchecked (view). */
int ipc_rd_object(ipc_rd_t *r, const msgpack_object **o);
int ipc_rd_skip(ipc_rd_t *r);
/* The next element must be an array of at most max_n elements / a map of at most max_n pairs:
 * sub becomes a cursor over it, *n its element / pair count (n may be NULL). */
int ipc_rd_array(ipc_rd_t *r, ipc_rd_t *sub, uint32_t *n, uint32_t max_n);
int ipc_rd_map(ipc_rd_t *r, ipc_rd_t *sub, uint32_t *n, uint32_t max_n);
/* Copies an array of integers (each within int32) / of numbers into buf[0, cap). *n = count.
 * More than cap elements is LT_ERR_RANGE. */
int ipc_rd_i32_array(ipc_rd_t *r, int32_t *buf, size_t cap, size_t *n);
int ipc_rd_f32_array(ipc_rd_t *r, float *buf, size_t cap, size_t *n);
/* Copies an ipc_wr_i32_vec bin (length a multiple of 4, at most cap values) into buf. */
int ipc_rd_i32_vec(ipc_rd_t *r, int32_t *buf, size_t cap, size_t *n);

/* ---- names and cleanup ---- */

/* Every shared-memory segment and socket file of the process tree is named
 * "lantern-<pid>-<what>", pid being the process that owns the tree (the frontend), so that one
 * ipc_cleanup(pid) after the tree has exited removes anything a crash left behind.
 * `what`: 1..64 characters from [A-Za-z0-9._-]. */

/* Directory for socket files: $XDG_RUNTIME_DIR when it is an existing directory, else /tmp. */
const char *ipc_runtime_dir(void);
/* "lantern-<pid>-<what>": a ring or all-reduce name. */
int ipc_name(char *buf, size_t n, int pid, const char *what, char *err);
/* "ipc://<runtime dir>/lantern-<pid>-<what>.sock"; LT_ERR_RANGE if the path would exceed the
 * 107 bytes a Unix socket path may have. */
int ipc_endpoint(char *buf, size_t n, int pid, const char *what, char *err);
/* Unlinks the socket file of an ipc:// endpoint (no-op for other transports or if absent). */
void ipc_endpoint_unlink(const char *endpoint);
/* Removes /dev/shm/lantern-<pid>-* and <runtime dir>/lantern-<pid>-*.sock. Returns how many
 * were removed. Call it once no process of the tree uses them. */
int ipc_cleanup(int pid);
/* Removes what crashed trees left behind (a frontend killed with SIGKILL cannot clean up; its
 * children die with it): every /dev/shm/lantern-<pid>-<what> and lantern-<pid>-<what>.sock in
 * the runtime directory and in /tmp whose pid no longer exists (kill(pid, 0) fails with ESRCH),
 * that belongs to our user and is a regular file (shm) or a socket. Never a live process's
 * files, never names of another pattern. `mine`: our own pid's too, for a caller that knows no
 * tree of this process exists (a restarted container's process may get the crashed one's pid).
 * Logs each removal; returns the count. Start-up only. */
int ipc_cleanup_stale(bool mine);

/* ---- ZeroMQ channels ---- */

typedef struct ipc_ctx ipc_ctx_t;
int ipc_ctx_create(ipc_ctx_t **out, char *err);
/* Sockets of this context must have been destroyed first. */
void ipc_ctx_destroy(ipc_ctx_t **ctx);

typedef enum ipc_sock_type {
    IPC_ROUTER, /* engine side of requests: receives (peer, message), replies to a peer */
    IPC_DEALER, /* frontend side of requests */
    IPC_PUSH,
    IPC_PULL,
    IPC_PUB,
    IPC_XPUB, /* a PUB that also receives its subscribers' subscriptions */
    IPC_SUB,  /* subscribed to everything on creation */
} ipc_sock_type_t;

/* A ROUTER peer's routing id. */
typedef struct ipc_peer {
    uint8_t len;
    uint8_t id[255];
} ipc_peer_t;

typedef struct ipc_sock ipc_sock_t;

/* Creates a socket with linger 0 (close never blocks on unsent messages), unlimited
 * high-water marks for PUB/XPUB/SUB (a broadcast must not drop; callers bound what is in flight),
 * ROUTER_MANDATORY on ROUTER (a message to a gone peer is an error, not a silent drop) and, on
 * sockets that receive, ZMQ_MAXMSGSIZE = max_msg (0: IPC_MAX_PAYLOAD_DEF +
 * IPC_ENVELOPE_OVERHEAD): ZeroMQ drops the connection of a peer that sends more. */
int ipc_sock_create(ipc_ctx_t *ctx, ipc_sock_type_t type, size_t max_msg, ipc_sock_t **out,
                    char *err);
/* Closes; a socket bound to an ipc:// endpoint also unlinks its file. */
void ipc_sock_destroy(ipc_sock_t **s);
/* DEALER: set the routing id its ROUTER will see, before connecting. */
int ipc_sock_set_id(ipc_sock_t *s, const void *id, size_t len, char *err);
int ipc_sock_bind(ipc_sock_t *s, const char *endpoint, char *err);
int ipc_sock_connect(ipc_sock_t *s, const char *endpoint, char *err);
/* The endpoint last bound, resolved: "tcp://127.0.0.1:41234" after binding "tcp://127.0.0.1:*". */
int ipc_sock_endpoint(ipc_sock_t *s, char *buf, size_t n, char *err);

/* timeout_ms: 0 = do not wait, < 0 = wait forever, > 0 = wait at most that long. A wait
 * interrupted by a signal returns IPC_AGAIN so the caller's loop can look at its signal flags. */

/* Sends one message; `to` is required on a ROUTER and ignored elsewhere. IPC_AGAIN if it could
 * not be queued in time, LT_ERR_NOTFOUND if a ROUTER's peer is gone. ZeroMQ copies the bytes. */
int ipc_sock_send(ipc_sock_t *s, const ipc_peer_t *to, const void *data, size_t len, int timeout_ms,
                  char *err);
/* Receives one message: *data views memory the socket owns until its next receive. On a ROUTER
 * `from` (required) gets the sender's id; elsewhere it may be NULL. A message with an unexpected
 * number of frames is drained and refused with LT_ERR_FORMAT. */
int ipc_sock_recv(ipc_sock_t *s, ipc_peer_t *from, const void **data, size_t *len, int timeout_ms,
                  char *err);
/* Receives and decodes one envelope into env (views valid until the socket's next receive). */
int ipc_sock_recv_envelope(ipc_sock_t *s, ipc_peer_t *from, ipc_envelope_t *env, int timeout_ms,
                           char *err);

/* Waits until one of the items is ready. An item is a socket, or (sock NULL) a file descriptor
 * such as a pidfd. Returns the number of ready items (0 on timeout or signal) or an error. */
#define IPC_POLLIN   1
#define IPC_POLLOUT  2
#define IPC_POLL_MAX 32
typedef struct ipc_poll_item {
    ipc_sock_t *sock;
    int fd;
    short events;  /* IPC_POLLIN | IPC_POLLOUT */
    short revents; /* set by ipc_poll */
} ipc_poll_item_t;
int ipc_poll(ipc_poll_item_t *items, int n, int timeout_ms, char *err);

/* ---- shared-memory broadcast ring ---- */

/* One writer, n_readers readers, n_chunks slots of chunk_bytes. Every reader receives every
 * message, in order. The writer reuses a slot only after every reader has released the message
 * in it, so a slow reader slows the writer (at most n_chunks messages ahead) and never misses a
 * message. Messages longer than chunk_bytes travel over a ZeroMQ XPUB/SUB pair; the slot then
 * carries a marker, so order is kept and any size up to max_msg works.
 *
 * Waiting: a waiter spins for spin_us (yielding the core every few microseconds, so that an
 * oversubscribed machine still runs the peer it waits for), then sleeps on a futex that the
 * other side wakes only when someone sleeps (one atomic load per message otherwise). Spinning
 * burns a core while it lasts but answers in about a microsecond; a futex wake-up costs several
 * microseconds plus the scheduler's latency (bench/bench_ring.c measures both). spin_us 0
 * sleeps at once: for workers that must leave their core alone between steps.
 *
 * Process safety: one writer handle, and one handle per reader index, each used by one thread.
 * The creator unlinks the segment and the socket file on destroy. */
typedef struct ipc_ring ipc_ring_t;

#define IPC_RING_MAX_MSG_DEF (1ull << 30) /* default largest message */
#define IPC_RING_SPIN_US_DEF 20

typedef struct ipc_ring_opts {
    ipc_ctx_t *ctx;                /* for the overflow socket; NULL: the ring makes its own */
    const char *overflow_endpoint; /* NULL: ipc://<runtime dir>/<name>.sock */
    size_t max_msg;                /* 0: IPC_RING_MAX_MSG_DEF */
} ipc_ring_opts_t;

/* name: a shared-memory name as ipc_name makes ("lantern-<pid>-step"). Creates the segment
 * (refusing an existing one), binds the overflow socket. opts may be NULL. */
int ipc_ring_create(const char *name, uint32_t n_chunks, size_t chunk_bytes, uint32_t n_readers,
                    const ipc_ring_opts_t *opts, ipc_ring_t **out, char *err);
/* Joins as reader `reader` (0..n_readers-1; one handle per index). ctx: for the overflow socket
 * (NULL: the ring makes its own). IPC_AGAIN while the segment does not exist yet or is being
 * initialised; LT_ERR_FORMAT for a foreign or incompatible segment. */
int ipc_ring_attach(const char *name, uint32_t reader, ipc_ctx_t *ctx, ipc_ring_t **out, char *err);
/* Writer: marks the ring closed (readers get IPC_CLOSED once they have read everything before
 * it), closes the socket, unmaps, unlinks the segment and the socket file. */
void ipc_ring_destroy(ipc_ring_t **r);
/* Reader: releases any held message, unmaps. */
void ipc_ring_detach(ipc_ring_t **r);
/* Removes a segment by name (left behind by a crash); 0 if removed or absent. */
int ipc_ring_unlink(const char *name);
void ipc_ring_set_spin_us(ipc_ring_t *r, uint32_t spin_us);

/* Writer: copies len bytes into the next slot (or sends them as overflow) and wakes readers.
 * IPC_AGAIN after timeout_ms if a reader has still not released the slot's previous message
 * (err names the readers and whether their processes are alive): nothing was sent, the push can
 * be retried. LT_ERR_RANGE above max_msg. HOT */
int ipc_ring_push(ipc_ring_t *r, const void *data, size_t len, int timeout_ms, char *err);
/* Writer: waits until every reader has released every message pushed so far (before a
 * destroy that must not cut off overflow messages still queued in ZeroMQ). IPC_AGAIN on
 * timeout, err naming the readers. */
int ipc_ring_flush(ipc_ring_t *r, int timeout_ms, char *err);
/* Reader: the next message. *data points into the shared slot (or the overflow message) and
 * stays valid, and the slot held, until ipc_ring_release or the next _read. IPC_AGAIN after
 * timeout_ms with nothing consumed (err says whether the writer is alive), IPC_CLOSED once the
 * writer closed and everything was read, LT_ERR_FORMAT if the overflow stream is out of step.
 * HOT */
int ipc_ring_read(ipc_ring_t *r, const void **data, size_t *len, int timeout_ms, char *err);
/* Reader: gives the held message's slot back to the writer. HOT */
void ipc_ring_release(ipc_ring_t *r);

/* ---- shared-memory all-reduce ---- */

/* Sums float vectors across `world` ranks in place. Deterministic: element i of the result is
 * ((x0[i] + x1[i]) + x2[i]) + ... in rank order, the same bits on every rank and the same as a
 * serial sum, whatever order the ranks arrive in. Vectors up to IPC_ALLREDUCE_SMALL floats: each
 * rank sums the whole vector itself (one barrier). Larger: each rank sums a slice into a shared
 * result, then all copy it (reduce-scatter + all-gather, two barriers).
 *
 * Every rank must call ipc_allreduce_sum the same number of times with the same n. A rank that
 * waits longer than the timeout (default IPC_ALLREDUCE_TIMEOUT_MS) marks the group broken and
 * returns LT_ERR_IO naming the ranks that did not arrive; every other rank then fails at once
 * too. A broken group stays broken: the caller tears the tensor-parallel group down.
 * Process safety: one handle per rank, used by one thread. */
typedef struct ipc_allreduce ipc_allreduce_t;

#define IPC_ALLREDUCE_SMALL      4096
#define IPC_ALLREDUCE_MAX_WORLD  64
#define IPC_ALLREDUCE_TIMEOUT_MS 30000
#define IPC_ALLREDUCE_SPIN_US    50
#define IPC_NO_RANK              (-1)

/* Creates the segment for `world` ranks and vectors up to max_floats, and joins as `rank`
 * (IPC_NO_RANK: create only, e.g. in the engine that spawns the workers). The creator unlinks
 * the segment on destroy. */
int ipc_allreduce_create(const char *name, int rank, int world, size_t max_floats,
                         ipc_allreduce_t **out, char *err);
/* Joins an existing segment as `rank`. IPC_AGAIN while it does not exist or is being set up;
 * LT_ERR_INVAL if that rank is already taken. */
int ipc_allreduce_attach(const char *name, int rank, ipc_allreduce_t **out, char *err);
void ipc_allreduce_set_timeout(ipc_allreduce_t *ar, int timeout_ms);
void ipc_allreduce_set_spin_us(ipc_allreduce_t *ar, uint32_t spin_us);
/* Leaves the group; the creator also unlinks the segment. */
void ipc_allreduce_destroy(ipc_allreduce_t **ar);
int ipc_allreduce_unlink(const char *name);

/* buf[0, n) becomes the elementwise sum over all ranks. HOT */
int ipc_allreduce_sum(ipc_allreduce_t *ar, float *buf, size_t n, char *err);
/* Adapter with worker.h's wk_allreduce_fn signature (user = the ipc_allreduce_t *); logs the
 * error text with LT_ERROR and returns the code. */
int ipc_allreduce_hook(float *buf, size_t n, void *user);

#endif
