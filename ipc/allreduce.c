/*
 * allreduce.c — the CPU tensor-parallel all-reduce: `world` worker processes sum float vectors
 * through one shared-memory segment (DESIGN.md §4).
 *
 * Determinism is the point. Element i of the result is always ((x0[i] + x1[i]) + x2[i]) + ...
 * in rank order, computed once for everybody (large vectors) or by every rank with the same
 * instructions on the same copies (small ones), so all ranks hold the same bits and a serial
 * sum reproduces them, whichever rank arrives first.
 *
 *   small (n <= IPC_ALLREDUCE_SMALL): copy in → barrier → every rank sums the whole vector.
 *       The copies alternate between two banks by call parity: a fast rank writing call g + 1
 *       cannot disturb a slow rank still summing call g, and call g + 2 reuses the bank only
 *       after the barrier of g + 1, which nobody passes before everybody finished g.
 *   large: copy in → barrier → each rank sums its 16-float-aligned slice into the shared result
 *       (reduce-scatter) → barrier → every rank copies the result out (all-gather). The next
 *       call's first barrier orders its writes after everybody's copy-out.
 *
 * The barrier is one 32-bit counter of arrivals that only grows: barrier b completes when it
 * reaches world × (b + 1) (modulo 2^32; every rank counts the same b). Arriving is an acq_rel
 * fetch_add: release publishes this rank's copy, and the RMW chain is a release sequence, so the
 * waiter whose acquire load reads the final count sees every rank's writes. Waiters spin for
 * spin_us (yielding now and then: on an oversubscribed machine the missing rank may need this
 * core), then sleep on the counter with FUTEX_WAIT, using the same announce-fence-recheck
 * protocol as ring.c. A wait past the timeout marks the group broken and wakes everyone.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ipc_priv.h"

#define AR_MAGIC   0x31524c4c414e544cull /* "LTNALLR1" little-endian */
#define AR_VERSION 1
#define BLOCK      1024 /* floats summed per pass: the slice of every source stays in L1 */

typedef struct ar_hdr {
    ipc_shm_hdr_t h;
    /* geometry: written before magic is published, read-only afterwards */
    uint32_t world;
    uint32_t small_max; /* floats in a small-bank slot */
    uint64_t max_floats;
    uint64_t stride;       /* floats between two ranks' slots in the big bank (16-aligned) */
    uint64_t small_stride; /* same for the small banks */
    uint64_t ranks_off, big_off, result_off, small_off; /* byte offsets */
    /* Arrivals at barriers, ever. acq_rel fetch_add by arriving ranks, acquire loads by
     * waiters; the futex word. */
    alignas(IPC_CACHE_LINE) _Atomic uint32_t arrived;
    /* Ranks asleep on `arrived`: relaxed RMWs around seq_cst fences (Dekker, see ring.c). */
    alignas(IPC_CACHE_LINE) _Atomic uint32_t sleepers;
    /* 1 once a rank timed out or saw an inconsistency: release store then a wake; every wait
     * and call loads it with acquire and fails. Never reset. */
    alignas(IPC_CACHE_LINE) _Atomic uint32_t broken;
} ar_hdr_t;

typedef struct ar_rank {
    _Atomic uint32_t attached; /* 0 → 1 by acq_rel CAS: one handle per rank */
    _Atomic int32_t pid;       /* relaxed, informational (timeout messages) */
    _Atomic uint32_t barriers; /* barriers this rank has arrived at; relaxed, informational */
    uint32_t pad0;
    /* n of the call, by call parity; relaxed, ordered by the barrier that follows the store */
    _Atomic uint64_t n[2];
    char pad[IPC_CACHE_LINE - 32];
} ar_rank_t;

struct ipc_allreduce {
    uint8_t *base;
    size_t size;
    ar_hdr_t *hdr;
    int rank, world;
    bool creator;
    uint32_t barriers; /* barriers this rank has passed */
    uint64_t calls;
    int timeout_ms;
    uint32_t spin_us;
    char name[208];
};

static inline uint64_t round16(uint64_t n) {
    return (n + 15) & ~(uint64_t)15;
}

static inline ar_rank_t *rank_info(const ipc_allreduce_t *ar, int r) {
    return (ar_rank_t *)(ar->base + ar->hdr->ranks_off) + r;
}

static inline float *big_slot(const ipc_allreduce_t *ar, int r) {
    return (float *)(ar->base + ar->hdr->big_off) + (size_t)r * ar->hdr->stride;
}

static inline float *small_slot(const ipc_allreduce_t *ar, int bank, int r) {
    return (float *)(ar->base + ar->hdr->small_off) +
           ((size_t)bank * ar->world + (size_t)r) * ar->hdr->small_stride;
}

/* ---- create / attach ---- */

static int join(ipc_allreduce_t *ar, int rank, char *err) {
    if (rank < 0 || rank >= ar->world)
        return lt_errf(err, LT_ERR_INVAL, "all-reduce %s: rank %d of %d", ar->name, rank,
                       ar->world);
    ar_rank_t *ri = rank_info(ar, rank);
    uint32_t zero = 0;
    /* acq_rel: exactly one process may hold a rank */
    if (!atomic_compare_exchange_strong_explicit(&ri->attached, &zero, 1, memory_order_acq_rel,
                                                 memory_order_acquire))
        return lt_errf(err, LT_ERR_INVAL, "all-reduce %s: rank %d is already taken", ar->name,
                       rank);
    atomic_store_explicit(&ri->pid, (int32_t)getpid(), memory_order_relaxed);
    ar->rank = rank;
    return 0;
}

int ipc_allreduce_create(const char *name, int rank, int world, size_t max_floats,
                         ipc_allreduce_t **out, char *err) {
    *out = NULL;
    int rc = ipc_check_name(name, 200, err);
    if (rc) return rc;
    if (world < 1 || world > IPC_ALLREDUCE_MAX_WORLD || max_floats < 1 ||
        max_floats > ((uint64_t)1 << 34) || (rank != IPC_NO_RANK && (rank < 0 || rank >= world)))
        return lt_errf(err, LT_ERR_INVAL, "all-reduce %s: rank %d, world %d, %zu floats", name,
                       rank, world, max_floats);
    ipc_allreduce_t *ar = calloc(1, sizeof *ar);
    if (!ar) return lt_errf(err, LT_ERR_NOMEM, "all-reduce %s: out of memory", name);
    snprintf(ar->name, sizeof ar->name, "%s", name);
    ar->rank = IPC_NO_RANK;
    ar->world = world;
    ar->creator = true;
    ar->timeout_ms = IPC_ALLREDUCE_TIMEOUT_MS;
    ar->spin_us = IPC_ALLREDUCE_SPIN_US;

    uint64_t small_max = max_floats < IPC_ALLREDUCE_SMALL ? max_floats : IPC_ALLREDUCE_SMALL;
    uint64_t stride = round16(max_floats), small_stride = round16(small_max);
    uint64_t ranks_off = (sizeof(ar_hdr_t) + IPC_CACHE_LINE - 1) & ~(uint64_t)(IPC_CACHE_LINE - 1);
    uint64_t big_off = ranks_off + (uint64_t)world * sizeof(ar_rank_t);
    uint64_t result_off = big_off + (uint64_t)world * stride * sizeof(float);
    uint64_t small_off = result_off + stride * sizeof(float);
    uint64_t size = small_off + 2 * (uint64_t)world * small_stride * sizeof(float);
    if ((rc = ipc_shm_create(name, size, (void **)&ar->base, err))) {
        free(ar);
        return rc;
    }
    ar->size = size;
    ar_hdr_t *h = ar->hdr = (ar_hdr_t *)ar->base;
    h->h.version = AR_VERSION;
    h->h.creator_pid = (uint32_t)getpid();
    h->h.size = size;
    h->world = (uint32_t)world;
    h->small_max = (uint32_t)small_max;
    h->max_floats = max_floats;
    h->stride = stride;
    h->small_stride = small_stride;
    h->ranks_off = ranks_off;
    h->big_off = big_off;
    h->result_off = result_off;
    h->small_off = small_off;
    /* release: the geometry is visible to whoever acquires magic */
    atomic_store_explicit(&h->h.magic, AR_MAGIC, memory_order_release);
    if (rank != IPC_NO_RANK && (rc = join(ar, rank, err))) {
        ipc_allreduce_destroy(&ar);
        return rc;
    }
    *out = ar;
    return 0;
}

int ipc_allreduce_attach(const char *name, int rank, ipc_allreduce_t **out, char *err) {
    *out = NULL;
    void *base;
    size_t size;
    int rc = ipc_shm_attach(name, AR_MAGIC, AR_VERSION, sizeof(ar_hdr_t), &base, &size, err);
    if (rc) return rc;
    ar_hdr_t *h = base;
    /* Geometry from another process: check before computing any address. */
    uint64_t ss = round16(h->small_max), need = 0;
    bool ok = h->world >= 1 && h->world <= IPC_ALLREDUCE_MAX_WORLD && h->max_floats >= 1 &&
              h->max_floats <= ((uint64_t)1 << 34) && h->stride == round16(h->max_floats) &&
              h->small_max >= 1 && h->small_max <= IPC_ALLREDUCE_SMALL &&
              h->small_max <= h->max_floats && h->small_stride == ss &&
              h->ranks_off >= sizeof(ar_hdr_t) &&
              h->big_off >= h->ranks_off + h->world * sizeof(ar_rank_t) &&
              h->result_off >= h->big_off + h->world * h->stride * sizeof(float) &&
              h->small_off >= h->result_off + h->stride * sizeof(float) &&
              !lt_add_ovf(h->small_off, 2 * (uint64_t)h->world * ss * sizeof(float), &need) &&
              need <= size;
    if (!ok) {
        munmap(base, size);
        return lt_errf(err, LT_ERR_FORMAT, "all-reduce %s: inconsistent header", name);
    }
    ipc_allreduce_t *ar = calloc(1, sizeof *ar);
    if (!ar) {
        munmap(base, size);
        return lt_errf(err, LT_ERR_NOMEM, "all-reduce %s: out of memory", name);
    }
    snprintf(ar->name, sizeof ar->name, "%s", name);
    ar->base = base;
    ar->size = size;
    ar->hdr = h;
    ar->rank = IPC_NO_RANK;
    ar->world = (int)h->world;
    ar->timeout_ms = IPC_ALLREDUCE_TIMEOUT_MS;
    ar->spin_us = IPC_ALLREDUCE_SPIN_US;
    if ((rc = join(ar, rank, err))) {
        munmap(base, size);
        free(ar);
        return rc;
    }
    *out = ar;
    return 0;
}

void ipc_allreduce_set_timeout(ipc_allreduce_t *ar, int timeout_ms) {
    ar->timeout_ms = timeout_ms;
}

void ipc_allreduce_set_spin_us(ipc_allreduce_t *ar, uint32_t spin_us) {
    ar->spin_us = spin_us;
}

void ipc_allreduce_destroy(ipc_allreduce_t **arp) {
    if (!arp || !*arp) return;
    ipc_allreduce_t *ar = *arp;
    if (ar->rank != IPC_NO_RANK) {
        ar_rank_t *ri = rank_info(ar, ar->rank);
        atomic_store_explicit(&ri->pid, 0, memory_order_relaxed);
        /* release: our use of the segment happens before another process claims the rank */
        atomic_store_explicit(&ri->attached, 0, memory_order_release);
    }
    munmap(ar->base, ar->size);
    if (ar->creator) ipc_shm_unlink(ar->name);
    free(ar);
    *arp = NULL;
}

int ipc_allreduce_unlink(const char *name) {
    return ipc_shm_unlink(name);
}

/* ---- barrier ---- */

/* Marks the group broken and wakes every sleeper so that they fail too. */
static void set_broken(ipc_allreduce_t *ar) {
    /* release + fence: a sleeper that wakes (or is about to sleep) loads broken after its own
     * fence and sees it */
    atomic_store_explicit(&ar->hdr->broken, 1, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    ipc_futex_wake(&ar->hdr->arrived, INT32_MAX);
}

static int broken_err(ipc_allreduce_t *ar, char *err) {
    return lt_errf(err, LT_ERR_IO,
                   "all-reduce %s: rank %d: the group is broken (another rank "
                   "timed out or failed)",
                   ar->name, ar->rank);
}

static int timeout_err(ipc_allreduce_t *ar, char *err) {
    if (!err) return LT_ERR_IO;
    int k =
        snprintf(err, LT_ERR_LEN, "all-reduce %s: rank %d waited %d ms at barrier %u; missing rank",
                 ar->name, ar->rank, ar->timeout_ms, ar->barriers);
    for (int r = 0; r < ar->world && k > 0 && k < LT_ERR_LEN - 48; r++) {
        ar_rank_t *ri = rank_info(ar, r);
        uint32_t b = atomic_load_explicit(&ri->barriers, memory_order_relaxed);
        if ((int32_t)(b - ar->barriers) >= 0) continue;
        int pid = atomic_load_explicit(&ri->pid, memory_order_relaxed);
        k += snprintf(err + k, (size_t)(LT_ERR_LEN - k), " %d (pid %d, %s)", r, pid,
                      pid == 0             ? "not attached"
                      : ipc_pid_alive(pid) ? "alive"
                                           : "dead");
    }
    return LT_ERR_IO;
}

static inline bool reached(uint32_t v, uint32_t target) {
    return (int32_t)(v - target) >= 0;
}

static int barrier(ipc_allreduce_t *ar, char *err) {
    ar_hdr_t *h = ar->hdr;
    uint32_t b = ++ar->barriers, target = b * (uint32_t)ar->world;
    atomic_store_explicit(&rank_info(ar, ar->rank)->barriers, b, memory_order_relaxed);
    /* acq_rel: release publishes this rank's copy-in / slice; acquire, for the last arriver,
     * sees everybody's (release sequence) */
    uint32_t v = atomic_fetch_add_explicit(&h->arrived, 1, memory_order_acq_rel) + 1;
    if (v == target) {
        /* the Dekker half pairing with the sleepers' fence */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&h->sleepers, memory_order_relaxed))
            ipc_futex_wake(&h->arrived, INT32_MAX);
        return 0;
    }
    uint64_t deadline = ipc_deadline(ar->timeout_ms);
    if (ar->spin_us) {
        uint64_t end = lt_now_ns() + (uint64_t)ar->spin_us * 1000u;
        for (uint32_t i = 1;; i++) {
            /* acquire: see the fetch_add above */
            if (reached(atomic_load_explicit(&h->arrived, memory_order_acquire), target)) return 0;
            ipc_cpu_relax();
            if ((i & 63) == 0) {
                if (atomic_load_explicit(&h->broken, memory_order_acquire))
                    return broken_err(ar, err);
                if (lt_now_ns() >= end) break;
                sched_yield();
            }
        }
    }
    for (;;) {
        atomic_fetch_add_explicit(&h->sleepers, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        v = atomic_load_explicit(&h->arrived, memory_order_acquire);
        bool done = reached(v, target);
        bool broken = !done && atomic_load_explicit(&h->broken, memory_order_acquire);
        bool late = !done && !broken && lt_now_ns() >= deadline;
        if (!done && !broken && !late) ipc_futex_wait(&h->arrived, v, deadline);
        atomic_fetch_sub_explicit(&h->sleepers, 1, memory_order_relaxed);
        if (done) return 0;
        if (broken) return broken_err(ar, err);
        if (late) {
            set_broken(ar);
            return timeout_err(ar, err);
        }
    }
}

/* ---- sum ---- */

/* dst[lo, hi) = src[0] + src[1] + ... in rank order. */
static void reduce(float *restrict dst, float *const *src, int world, size_t lo, size_t hi) {
    for (size_t b = lo; b < hi; b += BLOCK) {
        size_t e = hi - b < BLOCK ? hi : b + BLOCK;
        const float *restrict s0 = src[0], *restrict s1 = src[1];
        for (size_t i = b; i < e; i++) dst[i] = s0[i] + s1[i];
        for (int q = 2; q < world; q++) {
            const float *restrict s = src[q];
            for (size_t i = b; i < e; i++) dst[i] += s[i];
        }
    }
}

/* After the first barrier: every rank must have passed the same n (all ranks see the same
 * values, so all of them agree on the outcome). */
static int check_n(ipc_allreduce_t *ar, int parity, size_t n, char *err) {
    for (int r = 0; r < ar->world; r++) {
        uint64_t m = atomic_load_explicit(&rank_info(ar, r)->n[parity], memory_order_relaxed);
        if (m != n) {
            set_broken(ar);
            return lt_errf(err, LT_ERR_INVAL,
                           "all-reduce %s: rank %d passed %zu floats, rank %d "
                           "passed %llu",
                           ar->name, ar->rank, n, r, (unsigned long long)m);
        }
    }
    return 0;
}

int ipc_allreduce_sum(ipc_allreduce_t *ar, float *buf, size_t n, char *err) {
    if (ar->rank == IPC_NO_RANK)
        return lt_errf(err, LT_ERR_INVAL, "all-reduce %s: this handle has no rank", ar->name);
    ar_hdr_t *h = ar->hdr;
    /* acquire: pairs with set_broken's release */
    if (atomic_load_explicit(&h->broken, memory_order_acquire)) return broken_err(ar, err);
    if (n > h->max_floats) {
        set_broken(ar); /* the other ranks would wait for us forever otherwise */
        return lt_errf(err, LT_ERR_RANGE, "all-reduce %s: %zu floats, the segment holds %llu",
                       ar->name, n, (unsigned long long)h->max_floats);
    }
    if (ar->world == 1) return 0;
    int parity = (int)(ar->calls++ & 1), rc;
    /* relaxed: the barrier's release/acquire orders it */
    atomic_store_explicit(&rank_info(ar, ar->rank)->n[parity], n, memory_order_relaxed);
    float *src[IPC_ALLREDUCE_MAX_WORLD];
    if (n <= h->small_max) {
        memcpy(small_slot(ar, parity, ar->rank), buf, n * sizeof(float));
        if ((rc = barrier(ar, err)) || (rc = check_n(ar, parity, n, err))) return rc;
        for (int r = 0; r < ar->world; r++) src[r] = small_slot(ar, parity, r);
        reduce(buf, src, ar->world, 0, n);
        return 0;
    }
    memcpy(big_slot(ar, ar->rank), buf, n * sizeof(float));
    if ((rc = barrier(ar, err)) || (rc = check_n(ar, parity, n, err))) return rc;
    for (int r = 0; r < ar->world; r++) src[r] = big_slot(ar, r);
    /* 16-float slices: no two ranks write the same cache line of the result */
    size_t per = round16((n + (size_t)ar->world - 1) / (size_t)ar->world);
    size_t lo = per * (size_t)ar->rank, hi = lo + per < n ? lo + per : n;
    float *result = (float *)(ar->base + h->result_off);
    if (lo < n) reduce(result, src, ar->world, lo, hi);
    if ((rc = barrier(ar, err))) return rc;
    memcpy(buf, result, n * sizeof(float));
    return 0;
}

int ipc_allreduce_hook(float *buf, size_t n, void *user) {
    char err[LT_ERR_LEN];
    int rc = ipc_allreduce_sum(user, buf, n, err);
    if (rc) LT_ERROR("%s", err);
    return rc;
}
