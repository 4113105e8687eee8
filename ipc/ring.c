/*
 * ring.c — the engine's step broadcast: one writer, N readers, a ring of fixed-size slots in a
 * POSIX shared-memory segment (DESIGN.md §2).
 *
 * Protocol. Message k (k = 0, 1, ...) goes into slot k % n_chunks. Each slot has a `written`
 * word, which holds k + 1 once message k is in it, and one `read` word per reader, which holds
 * k + 1 once that reader has released message k. The writer may put message k into a slot only
 * when every reader's `read` word of that slot says k - n_chunks + 1 (the previous occupant is
 * done with); a reader may read message k once `written` says k + 1. The words are 32-bit
 * sequence numbers rather than booleans so that a stale value can never be mistaken for a fresh
 * one (they wrap after 2^32 messages, harmless since no party is ever more than n_chunks
 * behind), and so that they can double as futex words.
 *
 * Waiting. A waiter re-checks its word for spin_us (yielding the core every few microseconds),
 * then announces itself (readers_sleeping / writer_waiting) and sleeps on the word with
 * FUTEX_WAIT. The other side, after its release store, issues a seq_cst fence and loads the
 * announcement; the waiter stores the announcement, fences and re-loads the word before
 * sleeping. With the two fences at least one side sees the other (store-buffering is
 * forbidden), and FUTEX_WAIT refuses to sleep if the word already changed, so no wake-up is
 * lost and nobody pays a syscall while nobody sleeps.
 *
 * Overflow. A message longer than a slot is published on the ring's XPUB socket as one frame
 * {seq, len, bytes}; the slot then carries only its length and the OVERFLOW flag, so readers
 * keep the ring's order and receive the bytes from their SUB socket. The writer waits until
 * every reader has subscribed before the first overflow (else early messages would be lost to
 * the slow-joiner race). Each reader subscribes to everything and also to a topic naming its
 * index (a message that happens to start with those bytes is still delivered once: ZeroMQ
 * matches pipes, not subscriptions); the writer sees those subscriptions on its XPUB and
 * keeps a bitmap, so a reader that reconnects and subscribes twice cannot stand in for one that
 * has not subscribed yet. Both sockets have unlimited high-water marks: the ring itself bounds
 * what is in flight to n_chunks messages per reader.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <zmq.h>

#include "ipc_priv.h"

#define RING_MAGIC       0x31474e49524e544cull /* "LTNRING1" little-endian */
#define RING_VERSION     1
#define RING_MAX_CHUNKS  65536
#define RING_MAX_READERS 256
#define RING_OVERFLOW    1u
#define OVF_HDR          16 /* {u64 seq, u64 len} before an overflow message's bytes */
#define TAG_LEN          6  /* reader tag topic: 0xff 'r' + index (u32 little-endian) */

typedef struct ring_hdr {
    ipc_shm_hdr_t h;
    /* geometry: written once before magic is published, then read-only */
    uint32_t n_chunks, n_readers;
    uint64_t chunk_bytes; /* data capacity of a slot */
    uint64_t stride;      /* bytes from one slot to the next */
    uint64_t readers_off; /* offset of the reader table */
    uint64_t chunks_off;  /* offset of slot 0 */
    uint64_t max_msg;
    char overflow_endpoint[256];
    /* Set once by the writer on destroy (release); readers load it (acquire) when their wait
     * fails, then re-check their slot, so messages pushed before the close are still read. */
    alignas(IPC_CACHE_LINE) _Atomic uint32_t closed;
    /* Readers asleep on some slot's `written` word. Changed with relaxed RMWs around a seq_cst
     * fence (see the file comment); the writer loads it relaxed after its own fence. */
    alignas(IPC_CACHE_LINE) _Atomic uint32_t readers_sleeping;
    /* 1 while the writer is (about to be) asleep on a `read` word; same fence protocol. */
    alignas(IPC_CACHE_LINE) _Atomic uint32_t writer_waiting;
} ring_hdr_t;

/* One per reader index, its own cache line. */
typedef struct reader_slot {
    /* 0 → 1 by the attaching reader (acq_rel CAS: one handle per index), 1 → 0 on detach. */
    _Atomic uint32_t attached;
    /* The reader's pid, for the writer's timeout messages; relaxed, informational only. */
    _Atomic int32_t pid;
    char pad[IPC_CACHE_LINE - 8];
} reader_slot_t;

/* The first cache line of a slot; n_readers cache lines of `read` words and the data follow. */
typedef struct slot_ctl {
    /* k + 1 once message k is in the slot. Release store by the writer after the data, length
     * and flags; acquire load by readers before they touch any of them. Futex word. */
    _Atomic uint32_t written;
    /* Length and flags of the message: relaxed, ordered by `written`'s release/acquire. */
    _Atomic uint32_t flags;
    _Atomic uint64_t len;
} slot_ctl_t;

struct ipc_ring {
    uint8_t *base;
    size_t size;
    ring_hdr_t *hdr;
    bool writer;
    uint32_t reader; /* reader index */
    uint64_t next;   /* writer: next message to push; reader: next to read */
    bool holding;    /* reader: message `next` is handed out until release */
    uint32_t spin_us;
    uint32_t subs; /* writer: readers seen subscribed on the overflow socket */
    uint64_t subscribed[RING_MAX_READERS / 64]; /* writer: bitmap of those readers */
    ipc_ctx_t *ctx;
    bool own_ctx;
    ipc_sock_t *sock; /* writer: XPUB; reader: SUB */
    zmq_msg_t ovf;    /* reader: the overflow message handed out */
    char name[208];
};

/* ---- layout ---- */

static inline uint64_t round_line(uint64_t n) {
    return (n + IPC_CACHE_LINE - 1) & ~(uint64_t)(IPC_CACHE_LINE - 1);
}

static inline slot_ctl_t *slot(const ipc_ring_t *r, uint64_t k) {
    const ring_hdr_t *h = r->hdr;
    return (slot_ctl_t *)(r->base + h->chunks_off + (k % h->n_chunks) * h->stride);
}

static inline _Atomic uint32_t *slot_read(slot_ctl_t *s, uint32_t reader) {
    return (_Atomic uint32_t *)((uint8_t *)s + IPC_CACHE_LINE * (1 + (size_t)reader));
}

static inline uint8_t *slot_data(const ipc_ring_t *r, slot_ctl_t *s) {
    return (uint8_t *)s + IPC_CACHE_LINE * (1 + (size_t)r->hdr->n_readers);
}

static inline reader_slot_t *reader_slot(const ipc_ring_t *r, uint32_t i) {
    return (reader_slot_t *)(r->base + r->hdr->readers_off) + i;
}

/* ---- waiting ---- */

/* Spins until *word == want or spin_us pass, yielding now and then. True if it got there. */
static bool spin_for(_Atomic uint32_t *word, uint32_t want, uint32_t spin_us, uint64_t deadline) {
    if (!spin_us) return false;
    uint64_t end = lt_now_ns() + (uint64_t)spin_us * 1000u;
    if (end > deadline) end = deadline;
    for (uint32_t i = 1;; i++) {
        /* acquire: see the caller's comment on what the word publishes */
        if (atomic_load_explicit(word, memory_order_acquire) == want) return true;
        ipc_cpu_relax();
        if ((i & 63) == 0) {
            if (lt_now_ns() >= end) return false;
            /* A few microseconds of PAUSE, then let any runnable peer have the core: on an
             * oversubscribed machine the process we wait for may need exactly this one (2
             * cores, 4 readers: p50 25-50 µs without the yield, 4-10 µs with it). */
            sched_yield();
        }
    }
}

/* ---- create / attach ---- */

int ipc_ring_create(const char *name, uint32_t n_chunks, size_t chunk_bytes, uint32_t n_readers,
                    const ipc_ring_opts_t *opts, ipc_ring_t **out, char *err) {
    *out = NULL;
    int rc = ipc_check_name(name, 200, err);
    if (rc) return rc;
    if (n_chunks < 1 || n_chunks > RING_MAX_CHUNKS || n_readers < 1 ||
        n_readers > RING_MAX_READERS || chunk_bytes < 1 || chunk_bytes > (1u << 30))
        return lt_errf(err, LT_ERR_INVAL,
                       "ring %s: %u chunks of %zu bytes for %u readers is out of range", name,
                       n_chunks, chunk_bytes, n_readers);
    ipc_ring_opts_t o = opts ? *opts : (ipc_ring_opts_t){0};
    size_t max_msg = o.max_msg ? o.max_msg : IPC_RING_MAX_MSG_DEF;

    ipc_ring_t *r = calloc(1, sizeof *r);
    if (!r) return lt_errf(err, LT_ERR_NOMEM, "ring %s: out of memory", name);
    r->writer = true;
    r->spin_us = IPC_RING_SPIN_US_DEF;
    snprintf(r->name, sizeof r->name, "%s", name);
    zmq_msg_init(&r->ovf);

    char ep[256];
    if (o.overflow_endpoint) {
        if (strlen(o.overflow_endpoint) >= sizeof ep) {
            rc = lt_errf(err, LT_ERR_RANGE, "ring %s: overflow endpoint too long", name);
            goto fail;
        }
        snprintf(ep, sizeof ep, "%s", o.overflow_endpoint);
    } else {
        int k = snprintf(ep, sizeof ep, "ipc://%s/%s.sock", ipc_runtime_dir(), name);
        if (k < 0 || k - 6 > 107) {
            rc = lt_errf(err, LT_ERR_RANGE, "ring %s: socket path too long", name);
            goto fail;
        }
    }

    uint64_t stride = IPC_CACHE_LINE * (1 + (uint64_t)n_readers) + round_line(chunk_bytes);
    uint64_t readers_off = round_line(sizeof(ring_hdr_t));
    uint64_t chunks_off = readers_off + (uint64_t)n_readers * sizeof(reader_slot_t);
    uint64_t size = chunks_off + stride * n_chunks;
    if ((rc = ipc_shm_create(name, size, (void **)&r->base, err))) goto fail;
    r->size = size;
    ring_hdr_t *h = r->hdr = (ring_hdr_t *)r->base;
    h->h.version = RING_VERSION;
    h->h.creator_pid = (uint32_t)getpid();
    h->h.size = size;
    h->n_chunks = n_chunks;
    h->n_readers = n_readers;
    h->chunk_bytes = chunk_bytes;
    h->stride = stride;
    h->readers_off = readers_off;
    h->chunks_off = chunks_off;
    h->max_msg = max_msg;
    snprintf(h->overflow_endpoint, sizeof h->overflow_endpoint, "%s", ep);

    if (o.ctx) {
        r->ctx = o.ctx;
    } else {
        if ((rc = ipc_ctx_create(&r->ctx, err))) goto fail;
        r->own_ctx = true;
    }
    if ((rc = ipc_sock_create(r->ctx, IPC_XPUB, 64, &r->sock, err)) ||
        (rc = ipc_sock_bind(r->sock, ep, err)))
        goto fail;

    /* release: everything above is visible to an attacher that acquires magic */
    atomic_store_explicit(&h->h.magic, RING_MAGIC, memory_order_release);
    *out = r;
    return 0;
fail:
    ipc_ring_destroy(&r);
    return rc;
}

int ipc_ring_attach(const char *name, uint32_t reader, ipc_ctx_t *ctx, ipc_ring_t **out,
                    char *err) {
    *out = NULL;
    void *base;
    size_t size;
    int rc = ipc_shm_attach(name, RING_MAGIC, RING_VERSION, sizeof(ring_hdr_t), &base, &size, err);
    if (rc) return rc;
    ring_hdr_t *h = base;
    /* The geometry comes from another process: check it before computing any address. */
    uint64_t need;
    bool ok =
        h->n_chunks >= 1 && h->n_chunks <= RING_MAX_CHUNKS && h->n_readers >= 1 &&
        h->n_readers <= RING_MAX_READERS && h->chunk_bytes >= 1 &&
        h->stride == IPC_CACHE_LINE * (1 + (uint64_t)h->n_readers) + round_line(h->chunk_bytes) &&
        h->readers_off >= sizeof(ring_hdr_t) &&
        h->chunks_off >= h->readers_off + (uint64_t)h->n_readers * sizeof(reader_slot_t) &&
        !lt_mul_ovf(h->stride, h->n_chunks, &need) && !lt_add_ovf(need, h->chunks_off, &need) &&
        need <= size && memchr(h->overflow_endpoint, 0, sizeof h->overflow_endpoint);
    if (!ok) {
        munmap(base, size);
        return lt_errf(err, LT_ERR_FORMAT, "ring %s: inconsistent header", name);
    }
    if (reader >= h->n_readers) {
        uint32_t nr = h->n_readers;
        munmap(base, size);
        return lt_errf(err, LT_ERR_INVAL, "ring %s: reader %u of %u", name, reader, nr);
    }
    ipc_ring_t *r = calloc(1, sizeof *r);
    if (!r) {
        munmap(base, size);
        return lt_errf(err, LT_ERR_NOMEM, "ring %s: out of memory", name);
    }
    r->base = base;
    r->size = size;
    r->hdr = h;
    r->reader = reader;
    r->spin_us = IPC_RING_SPIN_US_DEF;
    snprintf(r->name, sizeof r->name, "%s", name);
    zmq_msg_init(&r->ovf);

    reader_slot_t *rs = reader_slot(r, reader);
    uint32_t zero = 0;
    /* acq_rel: claims the index exactly once across processes */
    if (!atomic_compare_exchange_strong_explicit(&rs->attached, &zero, 1, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        zmq_msg_close(&r->ovf);
        munmap(base, size);
        free(r);
        return lt_errf(err, LT_ERR_INVAL, "ring %s: reader %u is already attached", name, reader);
    }
    atomic_store_explicit(&rs->pid, (int32_t)getpid(), memory_order_relaxed);

    if (ctx) {
        r->ctx = ctx;
    } else if ((rc = ipc_ctx_create(&r->ctx, err))) {
        goto fail;
    } else {
        r->own_ctx = true;
    }
    size_t max_msg = h->max_msg > SIZE_MAX - OVF_HDR ? SIZE_MAX : h->max_msg + OVF_HDR;
    if ((rc = ipc_sock_create(r->ctx, IPC_SUB, max_msg, &r->sock, err))) goto fail;
    uint8_t tag[TAG_LEN] = {0xff,
                            'r',
                            (uint8_t)reader,
                            (uint8_t)(reader >> 8),
                            (uint8_t)(reader >> 16),
                            (uint8_t)(reader >> 24)};
    if (zmq_setsockopt(ipc_sock_zmq(r->sock), ZMQ_SUBSCRIBE, tag, sizeof tag)) {
        rc = lt_errf(err, LT_ERR_IO, "ring %s: subscribe: %s", name, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if ((rc = ipc_sock_connect(r->sock, h->overflow_endpoint, err))) goto fail;
    *out = r;
    return 0;
fail:
    ipc_ring_detach(&r);
    return rc;
}

void ipc_ring_set_spin_us(ipc_ring_t *r, uint32_t spin_us) {
    r->spin_us = spin_us;
}

int ipc_ring_unlink(const char *name) {
    return ipc_shm_unlink(name);
}

void ipc_ring_destroy(ipc_ring_t **rp) {
    if (!rp || !*rp) return;
    ipc_ring_t *r = *rp;
    if (!r->writer) {
        ipc_ring_detach(rp);
        return;
    }
    if (r->hdr && atomic_load_explicit(&r->hdr->h.magic, memory_order_relaxed) == RING_MAGIC) {
        /* release: readers that see closed see every message pushed before it */
        atomic_store_explicit(&r->hdr->closed, 1, memory_order_release);
        atomic_thread_fence(memory_order_seq_cst);
        for (uint32_t c = 0; c < r->hdr->n_chunks; c++)
            ipc_futex_wake(&slot(r, c)->written, INT32_MAX);
    }
    char ep[256] = "";
    if (r->hdr) snprintf(ep, sizeof ep, "%s", r->hdr->overflow_endpoint);
    ipc_sock_destroy(&r->sock);
    if (r->own_ctx) ipc_ctx_destroy(&r->ctx);
    ipc_endpoint_unlink(ep);
    zmq_msg_close(&r->ovf);
    if (r->base) {
        munmap(r->base, r->size);
        ipc_shm_unlink(r->name);
    }
    free(r);
    *rp = NULL;
}

void ipc_ring_detach(ipc_ring_t **rp) {
    if (!rp || !*rp) return;
    ipc_ring_t *r = *rp;
    if (r->writer) {
        ipc_ring_destroy(rp);
        return;
    }
    ipc_ring_release(r);
    ipc_sock_destroy(&r->sock);
    if (r->own_ctx) ipc_ctx_destroy(&r->ctx);
    zmq_msg_close(&r->ovf);
    reader_slot_t *rs = reader_slot(r, r->reader);
    atomic_store_explicit(&rs->pid, 0, memory_order_relaxed);
    /* release: our last slot accesses happen before another process may claim the index */
    atomic_store_explicit(&rs->attached, 0, memory_order_release);
    munmap(r->base, r->size);
    free(r);
    *rp = NULL;
}

/* ---- writer ---- */

/* Names the readers that have not released message `k - n_chunks` and whether they live. */
static int laggards(ipc_ring_t *r, slot_ctl_t *s, uint32_t want, int timeout_ms, char *err) {
    if (!err) return IPC_AGAIN;
    int k = snprintf(err, LT_ERR_LEN, "ring %s: after %d ms still waiting for reader", r->name,
                     timeout_ms);
    for (uint32_t i = 0; i < r->hdr->n_readers && k > 0 && k < LT_ERR_LEN - 48; i++) {
        if (atomic_load_explicit(slot_read(s, i), memory_order_relaxed) == want) continue;
        int pid = atomic_load_explicit(&reader_slot(r, i)->pid, memory_order_relaxed);
        k += snprintf(err + k, (size_t)(LT_ERR_LEN - k), " %u (pid %d, %s)", i, pid,
                      pid == 0             ? "not attached"
                      : ipc_pid_alive(pid) ? "alive"
                                           : "dead");
    }
    return IPC_AGAIN;
}

/* Waits until every reader has released the message `want - 1` in slot s. */
static int wait_slot_free(ipc_ring_t *r, slot_ctl_t *s, uint32_t want, uint64_t deadline,
                          int timeout_ms, char *err) {
    ring_hdr_t *h = r->hdr;
    for (uint32_t i = 0; i < h->n_readers; i++) {
        _Atomic uint32_t *w = slot_read(s, i);
        /* acquire (here and below): pairs with the reader's release store in ipc_ring_release,
         * so its reads of the old message happen before we overwrite the slot */
        if (atomic_load_explicit(w, memory_order_acquire) == want) continue;
        if (spin_for(w, want, r->spin_us, deadline)) continue;
        for (;;) {
            /* relaxed store + seq_cst fence: the Dekker half that pairs with the reader's
             * fence in ipc_ring_release (file comment) */
            atomic_store_explicit(&h->writer_waiting, 1, memory_order_relaxed);
            atomic_thread_fence(memory_order_seq_cst);
            uint32_t v = atomic_load_explicit(w, memory_order_acquire);
            if (v == want) break;
            if (lt_now_ns() >= deadline) {
                atomic_store_explicit(&h->writer_waiting, 0, memory_order_relaxed);
                return laggards(r, s, want, timeout_ms, err);
            }
            ipc_futex_wait(w, v, deadline);
        }
        atomic_store_explicit(&h->writer_waiting, 0, memory_order_relaxed);
    }
    return 0;
}

/* Waits until all readers have subscribed to the overflow socket. */
static int wait_subscribers(ipc_ring_t *r, uint64_t deadline, char *err) {
    void *z = ipc_sock_zmq(r->sock);
    while (r->subs < r->hdr->n_readers) {
        uint64_t now = lt_now_ns();
        long ms = deadline == UINT64_MAX ? -1
                  : now >= deadline      ? 0
                                         : (long)((deadline - now + 999999) / 1000000);
        zmq_pollitem_t it = {.socket = z, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, ms) <= 0 || !(it.revents & ZMQ_POLLIN)) {
            if (lt_now_ns() >= deadline)
                return lt_errf(err, IPC_AGAIN,
                               "ring %s: only %u of %u readers subscribed to the overflow socket",
                               r->name, r->subs, r->hdr->n_readers);
            continue;
        }
        /* (un)subscription: 1 or 0, then the topic; only reader tags count */
        uint8_t b[1 + TAG_LEN + 1];
        int n = zmq_recv(z, b, sizeof b, ZMQ_DONTWAIT);
        if (n != 1 + TAG_LEN || b[1] != 0xff || b[2] != 'r') continue;
        uint32_t idx =
            (uint32_t)b[3] | (uint32_t)b[4] << 8 | (uint32_t)b[5] << 16 | (uint32_t)b[6] << 24;
        if (idx >= r->hdr->n_readers) continue;
        uint64_t bit = 1ull << (idx % 64), *word = &r->subscribed[idx / 64];
        if (b[0] == 1 && !(*word & bit)) {
            *word |= bit;
            r->subs++;
        } else if (b[0] == 0 && (*word & bit)) {
            *word &= ~bit;
            r->subs--;
        }
    }
    return 0;
}

int ipc_ring_push(ipc_ring_t *r, const void *data, size_t len, int timeout_ms, char *err) {
    if (!r->writer) return lt_errf(err, LT_ERR_INVAL, "ring %s: push on a reader handle", r->name);
    ring_hdr_t *h = r->hdr;
    if (len > h->max_msg)
        return lt_errf(err, LT_ERR_RANGE, "ring %s: message of %zu bytes exceeds %llu", r->name,
                       len, (unsigned long long)h->max_msg);
    uint64_t k = r->next, deadline = ipc_deadline(timeout_ms);
    slot_ctl_t *s = slot(r, k);
    int rc;
    if (k >= h->n_chunks &&
        (rc = wait_slot_free(r, s, (uint32_t)(k - h->n_chunks + 1), deadline, timeout_ms, err)))
        return rc;
    uint32_t flags = 0;
    if (len <= h->chunk_bytes) {
        if (len) memcpy(slot_data(r, s), data, len);
    } else {
        if ((rc = wait_subscribers(r, deadline, err))) return rc;
        zmq_msg_t m;
        if (zmq_msg_init_size(&m, OVF_HDR + len))
            return lt_errf(err, LT_ERR_NOMEM, "ring %s: out of memory for %zu bytes", r->name, len);
        uint64_t hdr[2] = {k, len};
        memcpy(zmq_msg_data(&m), hdr, OVF_HDR);
        memcpy((uint8_t *)zmq_msg_data(&m) + OVF_HDR, data, len);
        /* XPUB with no high-water mark: never blocks, never drops */
        if (zmq_msg_send(&m, ipc_sock_zmq(r->sock), ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return lt_errf(err, LT_ERR_IO, "ring %s: overflow send: %s", r->name,
                           zmq_strerror(zmq_errno()));
        }
        flags = RING_OVERFLOW;
    }
    /* relaxed: published by the release store of `written` just below */
    atomic_store_explicit(&s->len, len, memory_order_relaxed);
    atomic_store_explicit(&s->flags, flags, memory_order_relaxed);
    /* release: the data, length and flags above are visible to a reader that acquires k + 1 */
    atomic_store_explicit(&s->written, (uint32_t)(k + 1), memory_order_release);
    /* seq_cst fence, then the announcement: the Dekker half pairing with read_wait's fence */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&h->readers_sleeping, memory_order_relaxed))
        ipc_futex_wake(&s->written, INT32_MAX);
    r->next = k + 1;
    return 0;
}

int ipc_ring_flush(ipc_ring_t *r, int timeout_ms, char *err) {
    if (!r->writer || r->next == 0) return 0;
    uint64_t k = r->next - 1;
    return wait_slot_free(r, slot(r, k), (uint32_t)(k + 1), ipc_deadline(timeout_ms), timeout_ms,
                          err);
}

/* ---- reader ---- */

/* Waits until slot s holds message want - 1. 0, IPC_AGAIN or IPC_CLOSED. */
static int read_wait(ipc_ring_t *r, slot_ctl_t *s, uint32_t want, uint64_t deadline, int timeout_ms,
                     char *err) {
    ring_hdr_t *h = r->hdr;
    /* acquire (every load of `written` here): pairs with the writer's release store, making
     * the slot's data, length and flags visible */
    if (atomic_load_explicit(&s->written, memory_order_acquire) == want) return 0;
    if (spin_for(&s->written, want, r->spin_us, deadline)) return 0;
    for (;;) {
        /* relaxed RMW + seq_cst fence: the Dekker half pairing with the writer's fence in
         * ipc_ring_push */
        atomic_fetch_add_explicit(&h->readers_sleeping, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        uint32_t v = atomic_load_explicit(&s->written, memory_order_acquire);
        bool ready = v == want;
        /* acquire: pairs with the release store of closed on destroy */
        bool closed = !ready && atomic_load_explicit(&h->closed, memory_order_acquire);
        if (closed) ready = atomic_load_explicit(&s->written, memory_order_acquire) == want;
        bool late = !ready && !closed && lt_now_ns() >= deadline;
        if (!ready && !closed && !late) ipc_futex_wait(&s->written, v, deadline);
        atomic_fetch_sub_explicit(&h->readers_sleeping, 1, memory_order_relaxed);
        if (ready) return 0;
        if (closed) return lt_errf(err, IPC_CLOSED, "ring %s: closed by the writer", r->name);
        if (late) {
            int pid = (int)h->h.creator_pid;
            return lt_errf(err, IPC_AGAIN,
                           "ring %s: no message %llu within %d ms (writer pid %d, %s)", r->name,
                           (unsigned long long)r->next, timeout_ms, pid,
                           ipc_pid_alive(pid) ? "alive" : "dead");
        }
    }
}

int ipc_ring_read(ipc_ring_t *r, const void **data, size_t *len, int timeout_ms, char *err) {
    *data = NULL;
    *len = 0;
    if (r->writer) return lt_errf(err, LT_ERR_INVAL, "ring %s: read on the writer handle", r->name);
    ipc_ring_release(r);
    uint64_t k = r->next, deadline = ipc_deadline(timeout_ms);
    slot_ctl_t *s = slot(r, k);
    int rc = read_wait(r, s, (uint32_t)(k + 1), deadline, timeout_ms, err);
    if (rc) return rc;
    uint64_t n = atomic_load_explicit(&s->len, memory_order_relaxed);
    uint32_t flags = atomic_load_explicit(&s->flags, memory_order_relaxed);
    if (!(flags & RING_OVERFLOW)) {
        if (n > r->hdr->chunk_bytes)
            return lt_errf(err, LT_ERR_FORMAT, "ring %s: slot %llu claims %llu bytes", r->name,
                           (unsigned long long)k, (unsigned long long)n);
        *data = slot_data(r, s);
        *len = (size_t)n;
        r->holding = true;
        return 0;
    }
    /* The bytes are on the overflow socket, queued before the slot was published. */
    void *z = ipc_sock_zmq(r->sock);
    for (;;) {
        if (zmq_msg_recv(&r->ovf, z, ZMQ_DONTWAIT) >= 0) break;
        if (zmq_errno() != EAGAIN && zmq_errno() != EINTR)
            return lt_errf(err, LT_ERR_IO, "ring %s: overflow recv: %s", r->name,
                           zmq_strerror(zmq_errno()));
        uint64_t now = lt_now_ns();
        if (now >= deadline)
            return lt_errf(err, IPC_AGAIN, "ring %s: overflow message %llu not here within %d ms",
                           r->name, (unsigned long long)k, timeout_ms);
        long ms = deadline == UINT64_MAX ? -1 : (long)((deadline - now + 999999) / 1000000);
        zmq_pollitem_t it = {.socket = z, .events = ZMQ_POLLIN};
        zmq_poll(&it, 1, ms);
    }
    uint64_t hdr[2] = {0, 0};
    size_t got = zmq_msg_size(&r->ovf);
    if (got >= OVF_HDR) memcpy(hdr, zmq_msg_data(&r->ovf), OVF_HDR);
    if (got < OVF_HDR || hdr[0] != k || hdr[1] != n || got - OVF_HDR != n)
        return lt_errf(err, LT_ERR_FORMAT,
                       "ring %s: overflow out of step: expected message %llu of %llu bytes, got "
                       "%llu of %llu",
                       r->name, (unsigned long long)k, (unsigned long long)n,
                       (unsigned long long)hdr[0], (unsigned long long)hdr[1]);
    *data = (uint8_t *)zmq_msg_data(&r->ovf) + OVF_HDR;
    *len = (size_t)n;
    r->holding = true;
    return 0;
}

void ipc_ring_release(ipc_ring_t *r) {
    if (r->writer || !r->holding) return;
    uint64_t k = r->next;
    _Atomic uint32_t *w = slot_read(slot(r, k), r->reader);
    /* release: our reads of the slot happen before the writer's acquire sees k + 1 */
    atomic_store_explicit(w, (uint32_t)(k + 1), memory_order_release);
    /* seq_cst fence, then the announcement: pairs with the fence in wait_slot_free */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->hdr->writer_waiting, memory_order_relaxed)) ipc_futex_wake(w, 1);
    r->holding = false;
    r->next = k + 1;
}
