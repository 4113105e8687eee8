/*
 * bsp.c — the batch span processor (bsp.h): a bounded multi-producer single-consumer ring of span
 * pointers and the one exporter thread that drains it in batches.
 *
 * Why a ring of pointers with per-slot sequence numbers (Vyukov's bounded queue): producers are
 * the engine's and workers' step loops and the HTTP threads, which must never wait for each
 * other or for the exporter. A producer claims a position with one CAS on `head` and publishes
 * the slot with a release store of its sequence number; a full queue is seen without waiting
 * (the slot a position maps to has not been emptied yet) and the span is dropped. The exporter
 * thread alone moves `tail`. Positions are 64-bit and never wrap; slot = position % capacity,
 * so the capacity is exactly max_queue_size (no rounding to a power of two).
 *
 * Waking the exporter: it sleeps in poll() on an eventfd with the schedule delay as timeout. The
 * producer whose span makes a full batch writes the eventfd, once per wake-up (the wake_pending
 * flag), so a queue that stays full costs submitters no syscalls at all.
 */
#define _GNU_SOURCE
#include "bsp.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"

#define NS_PER_MS 1000000ull

typedef struct bsp_slot {
    /* Position + 1 once a producer published the span for that position; position + capacity
     * once the exporter emptied it for the next round. */
    _Atomic uint64_t seq;
    tel_span_t *sp;
} bsp_slot_t;

struct tel_bsp {
    tel_bsp_config_t cfg;
    tel_export_fn export_fn;
    void *export_user;
    tel_release_fn release;
    void *release_user;
    uint64_t cap;       /* slots (max_queue_size) */
    bsp_slot_t *slots;  /* (cap) */
    tel_span_t **batch; /* (max_export_batch_size): the exporter thread's */
    int efd;
    pthread_t thread;

    pthread_mutex_t mu; /* flush completion only: never on the submit path */
    pthread_cond_t cv;
    uint64_t flush_done; /* under mu: the last flush ticket whose spans were exported */
    bool exited;         /* under mu: the exporter thread has finished */

    /* Producers' and the consumer's positions on separate cache lines. */
    _Alignas(64) _Atomic uint64_t head; /* next position a producer claims */
    _Alignas(64) _Atomic uint64_t tail; /* next position the exporter takes (it alone writes) */
    _Alignas(64) _Atomic int wake_pending;
    _Atomic bool stopping;
    _Atomic uint64_t flush_req;          /* flush tickets handed out */
    _Atomic uint64_t stop_deadline_ns;   /* shutdown's deadline (UINT64_MAX: none) */
    _Atomic uint64_t export_deadline_ns; /* the export in progress must end by then */

    /* Counters: independent totals, relaxed (no other memory depends on them). */
    _Alignas(64) _Atomic uint64_t dropped;
    _Atomic uint64_t exported, failed, requests, retries, batches;
};

/* ---- configuration ---- */

void tel_bsp_config_default(tel_bsp_config_t *cfg) {
    cfg->max_queue_size = 2048;
    cfg->max_export_batch_size = 512;
    cfg->schedule_delay_ms = 5000;
    cfg->export_timeout_ms = 30000;
}

static int env_int(const char *name, long long lo, long long hi, int *out, char *err) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    long long x;
    if (!lt_parse_long(v, lo, hi, &x))
        return lt_errf(err, LT_ERR_INVAL, "%s='%s': expected a whole number in [%lld, %lld]", name,
                       v, lo, hi);
    *out = (int)x;
    return 0;
}

int tel_bsp_config_from_env(tel_bsp_config_t *cfg, char *err) {
    tel_bsp_config_default(cfg);
    int rc;
    if ((rc = env_int("OTEL_BSP_MAX_QUEUE_SIZE", 1, 1 << 24, &cfg->max_queue_size, err)) ||
        (rc = env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, 1 << 24, &cfg->max_export_batch_size,
                      err)) ||
        (rc = env_int("OTEL_BSP_SCHEDULE_DELAY", 1, 3600000, &cfg->schedule_delay_ms, err)) ||
        (rc = env_int("OTEL_BSP_EXPORT_TIMEOUT", 1, 3600000, &cfg->export_timeout_ms, err)))
        return rc;
    if (cfg->max_export_batch_size > cfg->max_queue_size)
        return lt_errf(err, LT_ERR_INVAL,
                       "OTEL_BSP_MAX_EXPORT_BATCH_SIZE (%d) is over OTEL_BSP_MAX_QUEUE_SIZE (%d)",
                       cfg->max_export_batch_size, cfg->max_queue_size);
    return 0;
}

static int config_check(const tel_bsp_config_t *c, char *err) {
    if (c->max_queue_size < 1 || c->max_export_batch_size < 1 ||
        c->max_export_batch_size > c->max_queue_size || c->schedule_delay_ms < 1 ||
        c->export_timeout_ms < 1)
        return lt_errf(err, LT_ERR_INVAL,
                       "batch span processor: queue %d, batch %d, delay %d ms, timeout %d ms: "
                       "each must be >= 1 and the batch at most the queue",
                       c->max_queue_size, c->max_export_batch_size, c->schedule_delay_ms,
                       c->export_timeout_ms);
    return 0;
}

/* ---- the queue ---- */

static void bsp_wake(tel_bsp_t *bsp) {
    uint64_t one = 1;
    /* Non-blocking eventfd: fails only when the counter would overflow, i.e. already signalled. */
    if (write(bsp->efd, &one, sizeof one) < 0) { /* nothing to do */
    }
}

bool tel_bsp_submit(tel_bsp_t *bsp, tel_span_t *sp) { /* HOT */
    /* head is only a hint of where to claim: relaxed. The slot's seq is read with acquire so
     * that the exporter's read of the slot's previous span happens before we overwrite it. */
    uint64_t pos = atomic_load_explicit(&bsp->head, memory_order_relaxed);
    bsp_slot_t *slot;
    for (;;) {
        slot = &bsp->slots[pos % bsp->cap];
        uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - pos);
        if (dif == 0) { /* free for this position: claim it (pos is reloaded on failure) */
            if (atomic_compare_exchange_weak_explicit(&bsp->head, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed))
                break;
        } else if (dif < 0) { /* still holds the span from one round ago: full */
            atomic_fetch_add_explicit(&bsp->dropped, 1, memory_order_relaxed);
            bsp->release(sp, bsp->release_user);
            return false;
        } else { /* another producer took pos: try the current head */
            pos = atomic_load_explicit(&bsp->head, memory_order_relaxed);
        }
    }
    slot->sp = sp;
    /* release: the exporter that sees seq == pos + 1 (acquire) sees slot->sp and the span. */
    atomic_store_explicit(&slot->seq, pos + 1, memory_order_release);

    /* A full batch is waiting: wake the exporter, once until it takes the flag back. The
     * exchange is acq_rel so that the exporter's own exchange (which reads our 1) makes every
     * span published before it visible to the exporter's next take. */
    uint64_t tail = atomic_load_explicit(&bsp->tail, memory_order_relaxed);
    if (pos + 1 - tail >= (uint64_t)bsp->cfg.max_export_batch_size &&
        !atomic_load_explicit(&bsp->wake_pending, memory_order_relaxed) &&
        !atomic_exchange_explicit(&bsp->wake_pending, 1, memory_order_acq_rel))
        bsp_wake(bsp);
    return true;
}

void tel_bsp_submit_cb(tel_span_t *sp, void *bsp) { /* HOT */
    tel_bsp_submit(bsp, sp);
}

/* Spans waiting (claimed positions included). tail first: it never passes head, so the
 * difference is never negative. */
static uint64_t bsp_queued(const tel_bsp_t *bsp) {
    uint64_t tail = atomic_load_explicit(&bsp->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&bsp->head, memory_order_relaxed);
    return head - tail;
}

/* Takes up to max published spans into bsp->batch; the exporter thread only (or destroy, after
 * it joined the thread). A position claimed but not yet published ends the take: that span is
 * taken next time. */
static size_t bsp_take(tel_bsp_t *bsp, size_t max) {
    uint64_t tail = atomic_load_explicit(&bsp->tail, memory_order_relaxed); /* ours */
    size_t n = 0;
    while (n < max) {
        bsp_slot_t *slot = &bsp->slots[tail % bsp->cap];
        /* acquire: pairs with the producer's release, so slot->sp is the published span */
        if (atomic_load_explicit(&slot->seq, memory_order_acquire) != tail + 1) break;
        bsp->batch[n++] = slot->sp;
        /* release: our read of slot->sp happens before a producer (acquire) reuses the slot */
        atomic_store_explicit(&slot->seq, tail + bsp->cap, memory_order_release);
        tail++;
    }
    atomic_store_explicit(&bsp->tail, tail, memory_order_relaxed);
    return n;
}

static void bsp_release_batch(tel_bsp_t *bsp, size_t n) {
    for (size_t i = 0; i < n; i++) bsp->release(bsp->batch[i], bsp->release_user);
}

/* ---- the exporter thread ---- */

/* Exports bsp->batch[0, n) and gives the spans back. */
static void bsp_export(tel_bsp_t *bsp, size_t n) {
    uint64_t now = lt_now_ns();
    uint64_t dl = now + (uint64_t)bsp->cfg.export_timeout_ms * NS_PER_MS;
    /* seq_cst store then load, against destroy's seq_cst store of the stop deadline then
     * lowering of this one: one of the two sees the other's, so the shutdown deadline always
     * reaches the export. */
    atomic_store(&bsp->export_deadline_ns, dl);
    uint64_t stop = atomic_load(&bsp->stop_deadline_ns);
    if (stop < dl) atomic_store(&bsp->export_deadline_ns, stop);

    if (now >= stop) { /* shutdown's deadline has passed: not worth a try */
        atomic_fetch_add_explicit(&bsp->failed, n, memory_order_relaxed);
        bsp_release_batch(bsp, n);
        return;
    }
    tel_export_stats_t st = {0};
    int rc = bsp->export_fn(bsp->export_user, (const tel_span_t *const *)bsp->batch, n,
                            &bsp->export_deadline_ns, &st);
    atomic_fetch_add_explicit(rc == 0 ? &bsp->exported : &bsp->failed, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&bsp->requests, st.requests, memory_order_relaxed);
    atomic_fetch_add_explicit(&bsp->retries, st.retries, memory_order_relaxed);
    atomic_fetch_add_explicit(&bsp->batches, 1, memory_order_relaxed);
    bsp_release_batch(bsp, n);
}

/* Shutdown has begun: the loops leave the rest to bsp_shutdown_drain. */
static bool bsp_stopping(const tel_bsp_t *bsp) {
    return atomic_load_explicit(&bsp->stopping, memory_order_acquire);
}

/* Exports the spans queued before position end (a flush: what producers add meanwhile waits
 * for its turn, so that a busy process cannot make a flush last forever). */
static void bsp_export_until(tel_bsp_t *bsp, uint64_t end) {
    const uint64_t batch = (uint64_t)bsp->cfg.max_export_batch_size;
    for (;;) {
        uint64_t tail = atomic_load_explicit(&bsp->tail, memory_order_relaxed);
        if (tail >= end || bsp_stopping(bsp)) break;
        size_t n = bsp_take(bsp, (size_t)(end - tail < batch ? end - tail : batch));
        if (n == 0) break;
        bsp_export(bsp, n);
    }
}

/* Sleeps until the eventfd is written or wait_ns passed. */
static void bsp_wait(tel_bsp_t *bsp, uint64_t wait_ns) {
    struct pollfd p = {.fd = bsp->efd, .events = POLLIN};
    uint64_t ms = (wait_ns + NS_PER_MS - 1) / NS_PER_MS;
    if (poll(&p, 1, ms > 3600000 ? 3600000 : (int)ms) > 0) {
        uint64_t v;
        if (read(bsp->efd, &v, sizeof v) < 0) { /* EAGAIN: someone else's wake, already read */
        }
    }
}

static void bsp_flush_done(tel_bsp_t *bsp, uint64_t ticket, bool exited) {
    pthread_mutex_lock(&bsp->mu);
    if (ticket > bsp->flush_done) bsp->flush_done = ticket;
    if (exited) bsp->exited = true;
    pthread_cond_broadcast(&bsp->cv);
    pthread_mutex_unlock(&bsp->mu);
}

/* Shutdown: export what is queued until the deadline, give back the rest as failed. */
static void bsp_shutdown_drain(tel_bsp_t *bsp) {
    uint64_t stop = atomic_load(&bsp->stop_deadline_ns);
    size_t n, max = (size_t)bsp->cfg.max_export_batch_size;
    while (lt_now_ns() < stop && (n = bsp_take(bsp, max)) > 0) bsp_export(bsp, n);
    while ((n = bsp_take(bsp, max)) > 0) {
        atomic_fetch_add_explicit(&bsp->failed, n, memory_order_relaxed);
        bsp_release_batch(bsp, n);
    }
    bsp_flush_done(bsp, atomic_load_explicit(&bsp->flush_req, memory_order_acquire), true);
}

static void *bsp_main(void *arg) {
    tel_bsp_t *bsp = arg;
    const uint64_t delay = (uint64_t)bsp->cfg.schedule_delay_ms * NS_PER_MS;
    const uint64_t batch = (uint64_t)bsp->cfg.max_export_batch_size;
    uint64_t next = lt_now_ns() + delay; /* the scheduled export */
    uint64_t flush_seen = 0;
    for (;;) {
        uint64_t now = lt_now_ns();
        bool stop = atomic_load_explicit(&bsp->stopping, memory_order_acquire);
        uint64_t flush = atomic_load_explicit(&bsp->flush_req, memory_order_acquire);
        if (!stop && flush == flush_seen && bsp_queued(bsp) < batch && now < next) {
            bsp_wait(bsp, next - now);
            continue;
        }
        /* Take the wake flag back before taking spans (see tel_bsp_submit). */
        atomic_exchange_explicit(&bsp->wake_pending, 0, memory_order_acq_rel);
        if (stop) break;
        if (flush != flush_seen) {
            /* Every submit that returned before the flush call claimed a position below head,
             * and its span is published (the flush_req acquire above orders it). */
            bsp_export_until(bsp, atomic_load_explicit(&bsp->head, memory_order_relaxed));
            flush_seen = flush;
            bsp_flush_done(bsp, flush, false);
        } else {
            size_t n, sent = 0;
            if (now >= next && (n = bsp_take(bsp, batch)) > 0) bsp_export(bsp, n), sent++;
            while (bsp_queued(bsp) >= batch && !bsp_stopping(bsp) && (n = bsp_take(bsp, batch)))
                bsp_export(bsp, n), sent++;
            /* A full batch counted but nothing to take: a producer claimed the slot at the tail
             * and has not published it yet (preempted in between). Give it a millisecond
             * rather than spin. */
            if (!sent && now < next) {
                bsp_wait(bsp, NS_PER_MS);
                continue;
            }
        }
        next = lt_now_ns() + delay;
    }
    bsp_shutdown_drain(bsp);
    return NULL;
}

/* ---- lifecycle ---- */

static int bsp_init_sync(tel_bsp_t *bsp, char *err) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&bsp->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) return lt_errf(err, LT_ERR_NOMEM, "batch span processor: %s", strerror(rc));
    pthread_mutex_init(&bsp->mu, NULL);
    bsp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (bsp->efd < 0) {
        pthread_cond_destroy(&bsp->cv);
        pthread_mutex_destroy(&bsp->mu);
        return lt_errf(err, LT_ERR_IO, "batch span processor: eventfd: %s", strerror(errno));
    }
    return 0;
}

static void bsp_free(tel_bsp_t *bsp) {
    free(bsp->slots);
    free(bsp->batch);
    free(bsp);
}

int tel_bsp_create(tel_bsp_t **out, const tel_bsp_config_t *cfg, tel_export_fn export_fn,
                   void *export_user, tel_release_fn release, void *release_user, char *err) {
    *out = NULL;
    int rc = config_check(cfg, err);
    if (rc) return rc;
    if (!export_fn || !release)
        return lt_errf(err, LT_ERR_INVAL, "batch span processor: no export or release function");
    tel_bsp_t *bsp;
    if (posix_memalign((void **)&bsp, 64, sizeof *bsp))
        return lt_errf(err, LT_ERR_NOMEM, "batch span processor: out of memory");
    memset(bsp, 0, sizeof *bsp);
    bsp->cfg = *cfg;
    bsp->export_fn = export_fn, bsp->export_user = export_user;
    bsp->release = release, bsp->release_user = release_user;
    bsp->cap = (uint64_t)cfg->max_queue_size;
    bsp->slots = calloc(bsp->cap, sizeof *bsp->slots);
    bsp->batch = calloc((size_t)cfg->max_export_batch_size, sizeof *bsp->batch);
    if (!bsp->slots || !bsp->batch) {
        bsp_free(bsp);
        return lt_errf(err, LT_ERR_NOMEM, "batch span processor: out of memory");
    }
    for (uint64_t i = 0; i < bsp->cap; i++) atomic_init(&bsp->slots[i].seq, i);
    atomic_init(&bsp->stop_deadline_ns, UINT64_MAX);
    atomic_init(&bsp->export_deadline_ns, UINT64_MAX);
    if ((rc = bsp_init_sync(bsp, err))) {
        bsp_free(bsp);
        return rc;
    }
    /* The thread inherits a full signal mask: process signals go to the threads that handle
     * them, never interrupt an export. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&bsp->thread, NULL, bsp_main, bsp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        close(bsp->efd);
        pthread_cond_destroy(&bsp->cv);
        pthread_mutex_destroy(&bsp->mu);
        bsp_free(bsp);
        return lt_errf(err, LT_ERR_NOMEM, "batch span processor: thread: %s", strerror(rc));
    }
    pthread_setname_np(bsp->thread, "lt-bsp");
    *out = bsp;
    return 0;
}

int tel_bsp_flush(tel_bsp_t *bsp, int timeout_ms) {
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    uint64_t ns = (uint64_t)dl.tv_nsec + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * NS_PER_MS;
    dl.tv_sec += (time_t)(ns / 1000000000ull);
    dl.tv_nsec = (long)(ns % 1000000000ull);

    uint64_t ticket = atomic_fetch_add_explicit(&bsp->flush_req, 1, memory_order_acq_rel) + 1;
    bsp_wake(bsp);
    int rc = 0;
    pthread_mutex_lock(&bsp->mu);
    while (bsp->flush_done < ticket && !bsp->exited) {
        if (pthread_cond_timedwait(&bsp->cv, &bsp->mu, &dl) == ETIMEDOUT) {
            rc = bsp->flush_done >= ticket ? 0 : LT_ERR_IO;
            break;
        }
    }
    pthread_mutex_unlock(&bsp->mu);
    return rc;
}

void tel_bsp_destroy(tel_bsp_t **bsp_p, int timeout_ms, tel_bsp_stats_t *final) {
    if (!bsp_p || !*bsp_p) return;
    tel_bsp_t *bsp = *bsp_p;
    *bsp_p = NULL;
    uint64_t dl = lt_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * NS_PER_MS;
    atomic_store(&bsp->stop_deadline_ns, dl); /* seq_cst: see bsp_export */
    uint64_t cur = atomic_load(&bsp->export_deadline_ns);
    while (cur > dl && !atomic_compare_exchange_weak(&bsp->export_deadline_ns, &cur, dl)) {
    }
    atomic_store_explicit(&bsp->stopping, true, memory_order_release);
    bsp_wake(bsp);
    pthread_join(bsp->thread, NULL);

    /* Spans submitted after the thread's last take (a submitter racing shutdown). */
    size_t n;
    while ((n = bsp_take(bsp, (size_t)bsp->cfg.max_export_batch_size)) > 0) {
        atomic_fetch_add_explicit(&bsp->failed, n, memory_order_relaxed);
        bsp_release_batch(bsp, n);
    }
    if (final) tel_bsp_stats(bsp, final);
    close(bsp->efd);
    pthread_cond_destroy(&bsp->cv);
    pthread_mutex_destroy(&bsp->mu);
    bsp_free(bsp);
}

/* ---- counters ---- */

void tel_bsp_stats(const tel_bsp_t *bsp, tel_bsp_stats_t *st) {
    st->queued = bsp_queued(bsp);
    st->dropped = atomic_load_explicit(&bsp->dropped, memory_order_relaxed);
    st->exported = atomic_load_explicit(&bsp->exported, memory_order_relaxed);
    st->failed = atomic_load_explicit(&bsp->failed, memory_order_relaxed);
    st->requests = atomic_load_explicit(&bsp->requests, memory_order_relaxed);
    st->retries = atomic_load_explicit(&bsp->retries, memory_order_relaxed);
    st->batches = atomic_load_explicit(&bsp->batches, memory_order_relaxed);
}
