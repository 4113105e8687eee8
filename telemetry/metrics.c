/*
 * metrics.c — histograms, the shared metrics region and the Prometheus / OpenMetrics writers
 * (metrics.h).
 */
#define _GNU_SOURCE
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"
#include "proc.h"

/* ---- bucket sets (vLLM's, where vLLM has one) ---- */

const tel_bounds_t TEL_B_TTFT = {22, {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                      0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                      20.0,  40.0,  80.0, 160.0, 640.0, 2560.0}};
const tel_bounds_t TEL_B_ITL = {19,
                                {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                                 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}};
const tel_bounds_t TEL_B_LATENCY = {21, {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                         5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                         60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}};
const tel_bounds_t TEL_B_PREFILL_TOKEN = {
    10, {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0}};
const tel_bounds_t TEL_B_ITERATION = {
    13, {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}};
const tel_bounds_t TEL_B_N = {5, {1, 2, 5, 10, 20}};
const tel_bounds_t TEL_B_STEP = {18,
                                 {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                  0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                                  60.0}};
const tel_bounds_t TEL_B_FAST = {13,
                                 {0.000001, 0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                  0.0025, 0.005, 0.01, 0.05, 0.25, 1.0}};

void tel_bounds_125(tel_bounds_t *b, int64_t max) {
    static const int m[3] = {1, 2, 5};
    b->n = 0;
    for (double p = 1; b->n < TEL_HIST_MAX_BOUNDS; p *= 10)
        for (int i = 0; i < 3 && b->n < TEL_HIST_MAX_BOUNDS; i++) {
            if (m[i] * p > (double)max) return;
            b->le[b->n++] = m[i] * p;
        }
}

/* ---- histograms ---- */

void tel_hist_observe(tel_hist_t *h, const tel_bounds_t *b, double v, const uint8_t *trace,
                      const uint8_t *span) {
    int i = 0;
    while (i < b->n && v > b->le[i]) i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed), nu;
    do {
        double s;
        memcpy(&s, &old, sizeof s);
        s += v;
        memcpy(&nu, &s, sizeof nu);
    } while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, nu, memory_order_relaxed,
                                                    memory_order_relaxed));
    if (!trace) return;
    /* the bucket's exemplar: the latest observation that had a trace. A seqlock: odd while it
     * is written; release on the final store, so a reader that saw it even saw the fields. */
    tel_exemplar_t *ex = &h->exemplar[i];
    uint32_t seq = atomic_load_explicit(&ex->seq, memory_order_relaxed);
    /* odd: someone else is writing it, leave it to them; the CAS makes one writer win */
    if ((seq & 1) || !atomic_compare_exchange_strong_explicit(
                         &ex->seq, &seq, seq + 1, memory_order_acquire, memory_order_relaxed))
        return;
    uint64_t hi, lo, sp = 0;
    memcpy(&hi, trace, 8);
    memcpy(&lo, trace + 8, 8);
    if (span) memcpy(&sp, span, 8);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store_explicit(&ex->trace_hi, hi, memory_order_relaxed);
    atomic_store_explicit(&ex->trace_lo, lo, memory_order_relaxed);
    atomic_store_explicit(&ex->span_id, sp, memory_order_relaxed);
    tel_set_double(&ex->value_bits, v);
    atomic_store_explicit(&ex->unix_ms, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000,
                          memory_order_relaxed);
    atomic_store_explicit(&ex->seq, seq + 2, memory_order_release);
}

/* ---- the shared region ---- */

static size_t region_size(int n_ranks) {
    return sizeof(tel_metrics_shm_t) + sizeof(tel_rank_metrics_t) * (size_t)n_ranks;
}

int tel_metrics_create(const char *name, int n_ranks, tel_metrics_shm_t **out, char *err) {
    *out = NULL;
    if (n_ranks < 1 || n_ranks > TEL_MAX_RANKS)
        return lt_errf(err, LT_ERR_INVAL, "metrics: %d ranks", n_ranks);
    size_t size = region_size(n_ranks);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return lt_errf(err, LT_ERR_IO, "metrics: shm_open %s: %s", name, strerror(errno));
    int rc = lt_shm_reserve(fd, name, size, err);
    if (rc) {
        close(fd);
        shm_unlink(name);
        return rc;
    }
    tel_metrics_shm_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        shm_unlink(name);
        return lt_errf(err, LT_ERR_IO, "metrics: mmap %s: %s", name, strerror(errno));
    }
    /* the pages are zero: every counter starts at 0 */
    m->n_ranks = n_ranks;
    m->size = size;
    m->version = TEL_METRICS_VERSION;
    atomic_thread_fence(memory_order_release); /* the header last: attachers check the magic */
    m->magic = TEL_METRICS_MAGIC;
    *out = m;
    return LT_OK;
}

int tel_metrics_attach(const char *name, tel_metrics_shm_t **out, char *err) {
    *out = NULL;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) return lt_errf(err, LT_ERR_IO, "metrics: shm_open %s: %s", name, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(tel_metrics_shm_t)) {
        close(fd);
        return lt_errf(err, LT_ERR_FORMAT, "metrics: %s is too small", name);
    }
    tel_metrics_shm_t *m =
        mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return lt_errf(err, LT_ERR_IO, "metrics: mmap %s: %s", name, strerror(errno));
    atomic_thread_fence(memory_order_acquire);
    if (m->magic != TEL_METRICS_MAGIC || m->version != TEL_METRICS_VERSION ||
        m->size != (uint64_t)st.st_size || m->n_ranks < 1 || m->n_ranks > TEL_MAX_RANKS ||
        region_size(m->n_ranks) != m->size) {
        munmap(m, (size_t)st.st_size);
        return lt_errf(err, LT_ERR_FORMAT, "metrics: %s is not a lantern metrics region", name);
    }
    *out = m;
    return LT_OK;
}

void tel_metrics_detach(tel_metrics_shm_t **mp) {
    if (!*mp) return;
    munmap(*mp, (*mp)->size);
    *mp = NULL;
}

/* ---- exposition ---- */

static void series_labels(tel_expo_t *e, const char *extra, char *out, size_t n) {
    bool a = e->labels[0], b = extra && *extra;
    snprintf(out, n, "%s%s%s%s%s", a || b ? "{" : "", e->labels, a && b ? "," : "", b ? extra : "",
             a || b ? "}" : "");
}

/* The shortest decimal that reads back as v (0.005, not 0.0050000000000000001). */
static void shortest(double v, char *out, size_t n) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static void number(lt_buf_t *b, double v) {
    char t[40];
    if (isnan(v))
        lt_buf_puts(b, "NaN");
    else if (isinf(v))
        lt_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    else {
        shortest(v, t, sizeof t);
        lt_buf_puts(b, t);
    }
}

static void meta(tel_expo_t *e, const char *name, const char *type, const char *help) {
    lt_buf_printf(e->b, "# HELP %s:%s %s\n# TYPE %s:%s %s\n", e->prefix, name, help, e->prefix,
                  name, type);
}

void tel_expo_gauge(tel_expo_t *e, const char *name, const char *help, const char *extra,
                    double v) {
    meta(e, name, "gauge", help);
    tel_expo_more(e, name, false, extra, v);
}

void tel_expo_counter(tel_expo_t *e, const char *name, const char *help, const char *extra,
                      double v) {
    /* Prometheus text names the counter with its _total; OpenMetrics names the family without */
    lt_buf_printf(e->b, "# HELP %s:%s%s %s\n# TYPE %s:%s%s counter\n", e->prefix, name,
                  e->openmetrics ? "" : "_total", help, e->prefix, name,
                  e->openmetrics ? "" : "_total");
    tel_expo_more(e, name, true, extra, v);
}

void tel_expo_more(tel_expo_t *e, const char *name, bool counter, const char *extra, double v) {
    char l[1200];
    series_labels(e, extra, l, sizeof l);
    lt_buf_printf(e->b, "%s:%s%s%s ", e->prefix, name, counter ? "_total" : "", l);
    number(e->b, v);
    lt_buf_putc(e->b, '\n');
}

static void exemplar(tel_expo_t *e, const tel_exemplar_t *ex) {
    if (!e->openmetrics) return;
    tel_exemplar_t *x = (tel_exemplar_t *)ex;
    for (int tries = 0; tries < 4; tries++) {
        uint32_t s0 = atomic_load_explicit(&x->seq, memory_order_acquire);
        if (s0 == 0) return; /* never written */
        if (s0 & 1) continue;
        uint64_t hi = atomic_load_explicit(&x->trace_hi, memory_order_relaxed);
        uint64_t lo = atomic_load_explicit(&x->trace_lo, memory_order_relaxed);
        uint64_t sp = atomic_load_explicit(&x->span_id, memory_order_relaxed);
        double v = tel_get_double(&x->value_bits);
        uint64_t ms = atomic_load_explicit(&x->unix_ms, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&x->seq, memory_order_relaxed) != s0) continue;
        uint8_t b[24];
        memcpy(b, &hi, 8);
        memcpy(b + 8, &lo, 8);
        memcpy(b + 16, &sp, 8);
        lt_buf_puts(e->b, " # {trace_id=\"");
        for (int i = 0; i < 16; i++) lt_buf_printf(e->b, "%02x", b[i]);
        if (sp) {
            lt_buf_puts(e->b, "\",span_id=\"");
            for (int i = 16; i < 24; i++) lt_buf_printf(e->b, "%02x", b[i]);
        }
        lt_buf_puts(e->b, "\"} ");
        number(e->b, v);
        lt_buf_printf(e->b, " %llu.%03llu", (unsigned long long)(ms / 1000),
                      (unsigned long long)(ms % 1000));
        return;
    }
}

void tel_expo_hist_more(tel_expo_t *e, const char *name, const char *extra, const tel_hist_t *h,
                        const tel_bounds_t *b) {
    char l[1200], le[64];
    uint64_t cum = 0;
    for (int i = 0; i <= b->n; i++) {
        cum += atomic_load_explicit((_Atomic uint64_t *)&h->bucket[i], memory_order_relaxed);
        char num[40];
        shortest(i < b->n ? b->le[i] : 0, num, sizeof num);
        if (i < b->n)
            snprintf(le, sizeof le, "le=\"%s\"", num);
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        char ex[600];
        snprintf(ex, sizeof ex, "%s%s%s", extra && *extra ? extra : "", extra && *extra ? "," : "",
                 le);
        series_labels(e, ex, l, sizeof l);
        lt_buf_printf(e->b, "%s:%s_bucket%s %llu", e->prefix, name, l, (unsigned long long)cum);
        exemplar(e, &h->exemplar[i]);
        lt_buf_putc(e->b, '\n');
    }
    series_labels(e, extra, l, sizeof l);
    lt_buf_printf(e->b, "%s:%s_sum%s ", e->prefix, name, l);
    number(e->b, tel_get_double(&h->sum_bits));
    /* the count equals the +Inf bucket: both from the buckets, so a scrape is self-consistent */
    lt_buf_printf(e->b, "\n%s:%s_count%s %llu\n", e->prefix, name, l, (unsigned long long)cum);
}

void tel_expo_hist(tel_expo_t *e, const char *name, const char *help, const char *extra,
                   const tel_hist_t *h, const tel_bounds_t *b) {
    meta(e, name, "histogram", help);
    tel_expo_hist_more(e, name, extra, h, b);
}

void tel_expo_end(tel_expo_t *e) {
    if (e->openmetrics) lt_buf_puts(e->b, "# EOF\n");
}

int64_t tel_process_rss(int64_t pid) {
    if (pid <= 0) return -1;
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/%lld/statm", (long long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    long long size, resident;
    if (sscanf(buf, "%lld %lld", &size, &resident) != 2) return -1;
    return resident * (int64_t)sysconf(_SC_PAGESIZE);
}
