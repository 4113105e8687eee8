/*
 * bench_ring.c — engine → worker broadcast latency: lantern's shared-memory ring against
 * ZeroMQ PUB/SUB over ipc://, measured in the same run on the same machine.
 *
 * Ping-style: the writer timestamps, sends one message, and waits until every reader process
 * has received it, checked its sequence number and summed all its bytes (so both transports
 * pay for touching the data), and bumped a shared atomic counter. That interval is one sample:
 * the latency until all readers have the message. 5000 samples per cell after 200 warm-up
 * messages; p50 and p99 reported, and the ratio ZeroMQ / ring (above 1: the ring is faster).
 *
 * Rows: the ring with its default spin (readers spin 20 µs before sleeping on a futex), the
 * ring with spin 0 (futex only: what a worker costs when it must not burn a core), the ring
 * with 4 KiB chunks so that 64 KiB messages take the overflow path (ZeroMQ underneath), and
 * ZeroMQ PUB/SUB. Readers are separate processes made with fork.
 *
 *   build-ipc/bench/bench_ring [messages]
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc.h"
#include "lt.h"

#define WARMUP 200

typedef struct shared {
    alignas(64) _Atomic uint64_t acks;
    alignas(64) _Atomic uint32_t failed;
} shared_t;

typedef enum { T_RING, T_RING_NOSPIN, T_RING_OVERFLOW, T_ZMQ } transport_t;
static const char *const T_NAME[] = {"shm ring", "shm ring, spin 0", "shm ring, overflow",
                                     "zmq ipc PUB/SUB"};

static uint64_t checksum(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t s = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, b + i, 8);
        s += v;
    }
    for (; i < n; i++) s += b[i];
    return s;
}

static volatile uint64_t g_sink;

/* A reader process: receive `total` messages, check order, touch every byte, ack. */
static int reader_main(transport_t t, const char *name, const char *ep, int idx, long total,
                       shared_t *sh) {
    char err[LT_ERR_LEN];
    ipc_ring_t *r = NULL;
    ipc_ctx_t *ctx = NULL;
    ipc_sock_t *sub = NULL;
    int rc;
    if (t == T_ZMQ) {
        if (ipc_ctx_create(&ctx, err) || ipc_sock_create(ctx, IPC_SUB, 0, &sub, err) ||
            ipc_sock_connect(sub, ep, err))
            goto fail;
    } else {
        while ((rc = ipc_ring_attach(name, (uint32_t)idx, NULL, &r, err)) == IPC_AGAIN) usleep(200);
        if (rc) goto fail;
        if (t == T_RING_NOSPIN) ipc_ring_set_spin_us(r, 0);
    }
    for (long i = 0; i < total; i++) {
        const void *data;
        size_t len;
        rc = t == T_ZMQ ? ipc_sock_recv(sub, NULL, &data, &len, 30000, err)
                        : ipc_ring_read(r, &data, &len, 30000, err);
        if (rc) goto fail;
        uint64_t seq;
        memcpy(&seq, data, sizeof seq);
        if (seq != (uint64_t)i) {
            snprintf(err, sizeof err, "message %ld arrived as %llu", i, (unsigned long long)seq);
            goto fail;
        }
        g_sink += checksum(data, len);
        if (r) ipc_ring_release(r);
        atomic_fetch_add_explicit(&sh->acks, 1, memory_order_release);
    }
    ipc_ring_detach(&r);
    ipc_sock_destroy(&sub);
    ipc_ctx_destroy(&ctx);
    return 0;
fail:
    fprintf(stderr, "reader %d (%s): %s\n", idx, T_NAME[t], err);
    atomic_store(&sh->failed, 1);
    return 1;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Runs one cell; fills p50/p99 in microseconds. Returns 0 or -1. */
static int run(transport_t t, size_t size, int readers, long n, double *p50, double *p99) {
    char err[LT_ERR_LEN], name[128], ep[256], what[64];
    snprintf(what, sizeof what, "bench-%d-%zu-%d", (int)t, size, readers);
    if (ipc_name(name, sizeof name, getpid(), what, err) ||
        ipc_endpoint(ep, sizeof ep, getpid(), what, err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    shared_t *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return -1;
    memset(sh, 0, sizeof *sh);
    long total = WARMUP + n;
    pid_t pids[8];
    fflush(NULL);
    /* readers first: no ZeroMQ context exists in this process when they fork */
    for (int i = 0; i < readers; i++)
        if ((pids[i] = fork()) == 0) _exit(reader_main(t, name, ep, i, total, sh));

    ipc_ring_t *w = NULL;
    ipc_ctx_t *ctx = NULL;
    ipc_sock_t *pub = NULL;
    int rc = 0;
    if (t == T_ZMQ) {
        rc = ipc_ctx_create(&ctx, err) || ipc_sock_create(ctx, IPC_XPUB, 0, &pub, err) ||
             ipc_sock_bind(pub, ep, err);
        /* wait for every subscription, else the first messages go nowhere */
        for (int s = 0; !rc && s < readers; s++) {
            const void *d;
            size_t l;
            rc = ipc_sock_recv(pub, NULL, &d, &l, 10000, err);
        }
    } else {
        size_t chunk = t == T_RING_OVERFLOW ? 4096 : size;
        rc = ipc_ring_create(name, 16, chunk, (uint32_t)readers, NULL, &w, err);
    }
    uint64_t *lat = malloc((size_t)total * sizeof *lat);
    uint8_t *buf = calloc(1, size);
    for (size_t i = 8; i < size; i++) buf[i] = (uint8_t)(i * 31);
    for (long i = 0; !rc && i < total; i++) {
        memcpy(buf, &i, sizeof i);
        uint64_t target = (uint64_t)readers * (uint64_t)(i + 1);
        uint64_t t0 = lt_now_ns();
        rc = t == T_ZMQ ? ipc_sock_send(pub, NULL, buf, size, 30000, err)
                        : ipc_ring_push(w, buf, size, 30000, err);
        if (rc) break;
        /* spin, yielding: on an oversubscribed machine the readers need this core */
        for (uint32_t k = 0; atomic_load_explicit(&sh->acks, memory_order_acquire) < target; k++) {
            if (atomic_load(&sh->failed)) {
                rc = -1;
                snprintf(err, sizeof err, "a reader failed");
                break;
            }
            if (k > 64) sched_yield();
        }
        lat[i] = lt_now_ns() - t0;
    }
    if (rc) fprintf(stderr, "%s, %zu bytes, %d readers: %s\n", T_NAME[t], size, readers, err);
    int ok = !rc;
    for (int i = 0; i < readers; i++) {
        int st;
        if (rc) kill(pids[i], SIGKILL);
        waitpid(pids[i], &st, 0);
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    ipc_ring_destroy(&w);
    ipc_sock_destroy(&pub);
    ipc_ctx_destroy(&ctx);
    if (ok) {
        qsort(lat + WARMUP, (size_t)n, sizeof *lat, cmp_u64);
        *p50 = (double)lat[WARMUP + n / 2] / 1e3;
        *p99 = (double)lat[WARMUP + (n * 99) / 100] / 1e3;
    }
    free(lat);
    free(buf);
    munmap(sh, sizeof *sh);
    return ok ? 0 : -1;
}

static void machine(char *cpu, size_t n) {
    snprintf(cpu, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                snprintf(cpu, n, "%s", p + 2);
                cpu[strcspn(cpu, "\n")] = 0;
            }
            break;
        }
    fclose(f);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 5000;
    if (n < 100) n = 100;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char cpu[160];
    machine(cpu, sizeof cpu);
    printf("bench_ring: broadcast latency until every reader has the message (µs), %ld messages "
           "per cell after %d warm-up\n",
           n, WARMUP);
    printf("machine: %s, %ld online cores%s\n\n", cpu, cores,
           cores < 5 ? " — cells with readers + writer > cores are oversubscribed" : "");
    static const size_t sizes[] = {1024, 65536};
    static const int nreaders[] = {1, 2, 4};
    printf("%-7s %-7s %-20s %9s %9s %11s %11s\n", "size", "readers", "transport", "p50", "p99",
           "zmq/p50", "zmq/p99");
    int failures = 0;
    for (size_t s = 0; s < 2; s++)
        for (size_t r = 0; r < 3; r++) {
            double p50[4] = {0}, p99[4] = {0};
            bool have[4] = {0};
            for (int t = 0; t < 4; t++) {
                if (t == T_RING_OVERFLOW && sizes[s] <= 4096) continue;
                have[t] = run((transport_t)t, sizes[s], nreaders[r], n, &p50[t], &p99[t]) == 0;
                failures += !have[t];
            }
            bool over = nreaders[r] + 1 > cores;
            for (int t = 0; t < 4; t++) {
                if (!have[t]) continue;
                char row[16];
                snprintf(row, sizeof row, "%d%s", nreaders[r], over ? "*" : "");
                printf("%-7s %-7s %-20s %9.1f %9.1f", sizes[s] == 1024 ? "1 KiB" : "64 KiB", row,
                       T_NAME[t], p50[t], p99[t]);
                if (t != T_ZMQ && have[T_ZMQ])
                    printf(" %10.2fx %10.2fx\n", p50[T_ZMQ] / p50[t], p99[T_ZMQ] / p99[t]);
                else
                    printf(" %11s %11s\n", "", "");
            }
            printf("\n");
        }
    if (cores < 5) printf("* oversubscribed: %ld cores for the writer and the readers\n", cores);
    return failures ? 1 : 0;
}
