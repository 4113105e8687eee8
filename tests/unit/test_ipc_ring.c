/*
 * test_ipc_ring.c — the shared-memory broadcast ring: in-process basics (wrap-around, overflow,
 * back-pressure, errors), 10k messages of random sizes (overflow sizes included) broadcast to 1,
 * 2 and 4 forked reader processes that check order and content, a reader killed mid-stream that
 * makes the writer time out with its name instead of hanging, clean close, no allocation per
 * message in steady state, and no segment or socket file left behind after any test.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc.h"
#include "lt.h"
#include "testutil.h"

/* ---- allocation counter for the calling thread (not under sanitizers) ---- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNT_ALLOCS 0
#else
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static long g_allocs;
static __thread int g_counting; /* ZeroMQ's I/O thread is not ours to count */
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

/* ---- helpers ---- */

static int leftovers_in(const char *dir, int pid) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "lantern-%d-", pid);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            print_message("leftover: %s/%s\n", dir, e->d_name);
            n++;
        }
    closedir(d);
    return n;
}

static int teardown_check(void **state) {
    assert_int_equal(leftovers_in("/dev/shm", getpid()) + leftovers_in(ipc_runtime_dir(), getpid()),
                     0);
    return 0;
}

static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Message i of a stream: its size (a tenth of them overflow a chunk) and its bytes. */
static size_t msg_size(uint64_t i, size_t chunk) {
    uint64_t h = mix(i * 7 + 1);
    switch (h % 10) {
    case 0: return chunk + 1 + (size_t)(mix(h) % (3 * chunk)); /* overflow */
    case 1: return 0;
    case 2: return chunk; /* exactly full */
    default: return (size_t)(mix(h) % chunk);
    }
}

static void msg_fill(uint64_t i, uint8_t *p, size_t n) {
    uint64_t s = i * 0x100000001b3ull;
    for (size_t k = 0; k < n; k += 8) {
        uint64_t v = mix(s + k);
        memcpy(p + k, &v, n - k < 8 ? n - k : 8);
    }
}

static bool msg_check(uint64_t i, const uint8_t *p, size_t n, size_t chunk, uint8_t *scratch) {
    if (n != msg_size(i, chunk)) return false;
    msg_fill(i, scratch, n);
    return memcmp(p, scratch, n) == 0;
}

/* A reader process: reads n messages (n < 0: until closed), checks each, dies on purpose after
 * die_after of them if die_after > 0, expects IPC_CLOSED at the end. Exit status: 0 if all went
 * well, a code saying what failed otherwise. */
static int reader_main(const char *name, uint32_t idx, long n, long die_after, size_t chunk) {
    char err[LT_ERR_LEN];
    ipc_ring_t *r = NULL;
    int rc;
    uint64_t t0 = lt_now_ns();
    while ((rc = ipc_ring_attach(name, idx, NULL, &r, err)) == IPC_AGAIN) {
        if (lt_now_ns() - t0 > 10000000000ull) return 10;
        usleep(1000);
    }
    if (rc) {
        fprintf(stderr, "reader %u: attach: %s\n", idx, err);
        return 11;
    }
    uint8_t *scratch = malloc(4 * chunk + 16);
    for (long i = 0; n < 0 || i < n; i++) {
        const void *data;
        size_t len;
        rc = ipc_ring_read(r, &data, &len, 20000, err);
        if (rc == IPC_CLOSED && n < 0) break;
        if (rc) {
            fprintf(stderr, "reader %u: message %ld: rc %d: %s\n", idx, i, rc, err);
            return 12;
        }
        if (!msg_check((uint64_t)i, data, len, chunk, scratch)) {
            fprintf(stderr, "reader %u: message %ld of %zu bytes is corrupt\n", idx, i, len);
            return 13;
        }
        ipc_ring_release(r);
        if (die_after > 0 && i + 1 == die_after) raise(SIGKILL);
    }
    if (n >= 0) {
        const void *data;
        size_t len;
        rc = ipc_ring_read(r, &data, &len, 20000, err);
        if (rc != IPC_CLOSED) {
            fprintf(stderr, "reader %u: expected the close, got rc %d: %s\n", idx, rc, err);
            return 14;
        }
    }
    free(scratch);
    ipc_ring_detach(&r);
    return 0;
}

static pid_t spawn_reader(const char *name, uint32_t idx, long n, long die_after, size_t chunk) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(reader_main(name, idx, n, die_after, chunk));
    return pid;
}

static int wait_status(pid_t pid) {
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

/* ---- tests ---- */

static void test_ring_in_process(void **state) {
    char err[LT_ERR_LEN], name[128];
    ipc_ctx_t *ctx;
    assert_int_equal(ipc_ctx_create(&ctx, err), 0);
    assert_int_equal(ipc_name(name, sizeof name, getpid(), "ring-basic", err), 0);
    ipc_ring_opts_t o = {.ctx = ctx, .max_msg = 10000};
    ipc_ring_t *w, *r, *r2;
    assert_int_equal(ipc_ring_create(name, 4, 64, 1, &o, &w, err), 0);
    assert_int_not_equal(ipc_ring_create(name, 4, 64, 1, &o, &r, err), 0); /* exists */
    assert_int_equal(ipc_ring_attach(name, 0, ctx, &r, err), 0);
    assert_int_equal(ipc_ring_attach(name, 0, ctx, &r2, err), LT_ERR_INVAL); /* index taken */
    assert_int_equal(ipc_ring_attach(name, 1, ctx, &r2, err), LT_ERR_INVAL); /* out of range */

    const void *data;
    size_t len;
    assert_int_equal(ipc_ring_read(r, &data, &len, 0, err), IPC_AGAIN);
    uint64_t t0 = lt_now_ns();
    assert_int_equal(ipc_ring_read(r, &data, &len, 30, err), IPC_AGAIN);
    assert_true(lt_now_ns() - t0 >= 25000000ull);
    assert_non_null(strstr(err, "alive"));

    /* wrap around many times, with the read view held until the next read */
    char buf[10001];
    for (int i = 0; i < 100; i++) {
        int n = snprintf(buf, sizeof buf, "message %d", i);
        assert_int_equal(ipc_ring_push(w, buf, (size_t)n, 1000, err), 0);
        assert_int_equal(ipc_ring_read(r, &data, &len, 1000, err), 0);
        assert_int_equal(len, (size_t)n);
        assert_memory_equal(data, buf, len);
    }
    ipc_ring_release(r);
    ipc_ring_release(r); /* idempotent */

    /* back-pressure: a full ring times out naming the reader, and resumes once it reads */
    for (int i = 0; i < 4; i++) assert_int_equal(ipc_ring_push(w, "x", 1, 1000, err), 0);
    assert_int_equal(ipc_ring_push(w, "y", 1, 20, err), IPC_AGAIN);
    assert_non_null(strstr(err, "reader 0"));
    assert_int_equal(ipc_ring_read(r, &data, &len, 1000, err), 0);
    assert_int_equal(ipc_ring_push(w, "y", 1, 20, err), IPC_AGAIN); /* still held */
    ipc_ring_release(r);
    assert_int_equal(ipc_ring_push(w, "y", 1, 20, err), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ipc_ring_read(r, &data, &len, 1000, err), 0);
        assert_int_equal(len, 1);
        assert_memory_equal(data, i < 3 ? "x" : "y", 1);
    }

    /* overflow sizes, an empty message, the size limit */
    for (int i = 0; i < 20; i++) {
        size_t n = i == 0 ? 0 : (size_t)(i * 499) % 10000;
        memset(buf, 'a' + i, n);
        assert_int_equal(ipc_ring_push(w, buf, n, 1000, err), 0);
        assert_int_equal(ipc_ring_read(r, &data, &len, 1000, err), 0);
        assert_int_equal(len, n);
        for (size_t k = 0; k < n; k++) assert_int_equal(((const char *)data)[k], 'a' + i);
    }
    assert_int_equal(ipc_ring_push(w, buf, 10001, 1000, err), LT_ERR_RANGE);
    assert_int_equal(ipc_ring_push(r, buf, 1, 1000, err), LT_ERR_INVAL);
    assert_int_equal(ipc_ring_read(w, &data, &len, 0, err), LT_ERR_INVAL);

    /* a clean close: what was pushed before is still read, then IPC_CLOSED */
    assert_int_equal(ipc_ring_push(w, "last", 4, 1000, err), 0);
    ipc_ring_destroy(&w);
    assert_null(w);
    assert_int_equal(ipc_ring_read(r, &data, &len, 1000, err), 0);
    assert_memory_equal(data, "last", 4);
    assert_int_equal(ipc_ring_read(r, &data, &len, 1000, err), IPC_CLOSED);
    ipc_ring_detach(&r);
    assert_null(r);
    ipc_ctx_destroy(&ctx);
}

/* Overflow frames start with their sequence number; message 29439 (0x72ff) begins with the
 * same bytes as reader 0's tag topic (0xff 'r' 0 0 0 0). It must still arrive exactly once. */
static void test_ring_tag_collision(void **state) {
    char err[LT_ERR_LEN], name[128];
    assert_int_equal(ipc_name(name, sizeof name, getpid(), "ring-tag", err), 0);
    ipc_ring_t *w, *r;
    assert_int_equal(ipc_ring_create(name, 4, 16, 1, NULL, &w, err), 0);
    assert_int_equal(ipc_ring_attach(name, 0, NULL, &r, err), 0);
    char buf[64];
    for (uint64_t k = 0; k < 29445; k++) {
        size_t n = (k == 3 || k >= 29438) ? 40 : 8; /* 40 > 16: overflow */
        memset(buf, 0, sizeof buf);
        memcpy(buf, &k, sizeof k);
        assert_int_equal(ipc_ring_push(w, buf, n, 1000, err), 0);
        const void *data;
        size_t len;
        int rc = ipc_ring_read(r, &data, &len, 1000, err);
        if (rc) fail_msg("message %llu: %s", (unsigned long long)k, err);
        assert_int_equal(len, n);
        assert_memory_equal(data, buf, n);
    }
    const void *data;
    size_t len;
    assert_int_equal(ipc_ring_read(r, &data, &len, 0, err), IPC_AGAIN); /* no duplicate */
    ipc_ring_detach(&r);
    ipc_ring_destroy(&w);
}

static void test_ring_attach_errors(void **state) {
    char err[LT_ERR_LEN], name[128], path[160];
    ipc_ring_t *r;
    assert_int_equal(ipc_name(name, sizeof name, getpid(), "nothing", err), 0);
    assert_int_equal(ipc_ring_attach(name, 0, NULL, &r, err), IPC_AGAIN);
    assert_int_equal(ipc_ring_attach("bad/name", 0, NULL, &r, err), LT_ERR_INVAL);
    /* a segment of the right name but foreign content */
    assert_int_equal(ipc_name(name, sizeof name, getpid(), "foreign", err), 0);
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_CREAT | O_RDWR, 0600);
    assert_true(fd >= 0);
    uint8_t junk[4096];
    memset(junk, 0x5a, sizeof junk);
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    assert_int_equal(ipc_ring_attach(name, 0, NULL, &r, err), LT_ERR_FORMAT);
    /* too small to hold a header: not initialised yet */
    assert_int_equal(ftruncate(shm_open(path, O_RDWR, 0), 8), 0);
    assert_int_equal(ipc_ring_attach(name, 0, NULL, &r, err), IPC_AGAIN);
    assert_int_equal(ipc_ring_unlink(name), 0);
    assert_int_equal(ipc_ring_unlink(name), 0); /* absent: fine */
    ipc_ring_opts_t o = {0};
    assert_int_equal(ipc_ring_create(name, 0, 64, 1, &o, &r, err), LT_ERR_INVAL);
    assert_int_equal(ipc_ring_create(name, 4, 64, 0, &o, &r, err), LT_ERR_INVAL);
}

static void broadcast(int n_readers) {
    char err[LT_ERR_LEN], name[128], what[32];
    enum { N = 10000, CHUNKS = 8 };
    const size_t chunk = 4096;
    snprintf(what, sizeof what, "ring-%d", n_readers);
    assert_int_equal(ipc_name(name, sizeof name, getpid(), what, err), 0);
    pid_t pids[4];
    /* readers first: they retry attaching until the segment exists, and no ZeroMQ context
     * exists in this process yet when they fork */
    for (int i = 0; i < n_readers; i++) pids[i] = spawn_reader(name, (uint32_t)i, N, 0, chunk);
    ipc_ring_t *w;
    assert_int_equal(ipc_ring_create(name, CHUNKS, chunk, (uint32_t)n_readers, NULL, &w, err), 0);
    uint8_t *buf = malloc(4 * chunk + 16);
    size_t bytes = 0, overflows = 0;
    uint64_t t0 = lt_now_ns();
    for (uint64_t i = 0; i < N; i++) {
        size_t n = msg_size(i, chunk);
        msg_fill(i, buf, n);
        int rc = ipc_ring_push(w, buf, n, 20000, err);
        if (rc) fail_msg("push %llu: rc %d: %s", (unsigned long long)i, rc, err);
        bytes += n;
        overflows += n > chunk;
    }
    assert_int_equal(ipc_ring_flush(w, 20000, err), 0);
    double s = (double)(lt_now_ns() - t0) / 1e9;
    ipc_ring_destroy(&w);
    for (int i = 0; i < n_readers; i++) {
        int st = wait_status(pids[i]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("reader %d: status %d", i, st);
    }
    print_message("%d readers: %d messages (%zu overflow, %.1f MB) in %.2f s\n", n_readers, N,
                  overflows, (double)bytes / 1e6, s);
    free(buf);
}

static void test_ring_1_reader(void **state) {
    broadcast(1);
}
static void test_ring_2_readers(void **state) {
    broadcast(2);
}
static void test_ring_4_readers(void **state) {
    broadcast(4);
}

static void test_ring_reader_killed(void **state) {
    char err[LT_ERR_LEN], name[128];
    const size_t chunk = 256;
    assert_int_equal(ipc_name(name, sizeof name, getpid(), "ring-kill", err), 0);
    pid_t live = spawn_reader(name, 0, -1, 0, chunk);
    pid_t doomed = spawn_reader(name, 1, -1, 100, chunk);
    ipc_ring_t *w;
    assert_int_equal(ipc_ring_create(name, 8, chunk, 2, NULL, &w, err), 0);
    uint8_t buf[4 * 256 + 16];
    int rc = 0;
    uint64_t i = 0, t_fail = 0;
    for (; i < 100000; i++) {
        size_t n = msg_size(i, chunk);
        msg_fill(i, buf, n);
        uint64_t t = lt_now_ns();
        /* generous for a live reader on a loaded machine, short enough for the test */
        rc = ipc_ring_push(w, buf, n, 1000, err);
        if (rc) {
            t_fail = lt_now_ns() - t;
            break;
        }
    }
    assert_int_equal(rc, IPC_AGAIN);
    /* stuck right after the 100 messages the doomed reader took, plus the ring's depth */
    assert_true(i >= 100 && i <= 100 + 8);
    assert_true(t_fail >= 900000000ull && t_fail < 5000000000ull);
    assert_non_null(strstr(err, "reader 1"));
    assert_non_null(strstr(err, "dead"));
    assert_null(strstr(err, "reader 0"));
    print_message("after message %llu: %s\n", (unsigned long long)i, err);
    ipc_ring_destroy(&w);
    int st = wait_status(doomed);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    st = wait_status(live); /* it read everything, then saw the close */
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_ring_no_alloc(void **state) {
#if COUNT_ALLOCS
    char err[LT_ERR_LEN], name[128];
    assert_int_equal(ipc_name(name, sizeof name, getpid(), "ring-alloc", err), 0);
    ipc_ring_t *w, *r;
    assert_int_equal(ipc_ring_create(name, 8, 1024, 1, NULL, &w, err), 0);
    assert_int_equal(ipc_ring_attach(name, 0, NULL, &r, err), 0);
    char buf[1024] = {0};
    g_allocs = 0;
    g_counting = 1;
    for (int i = 0; i < 10000; i++) {
        const void *data;
        size_t len;
        if (ipc_ring_push(w, buf, (size_t)(i % 1024), 1000, err)) break;
        if (i % 3 == 2) /* let the writer run ahead now and then */
            for (int k = 0; k < 3; k++)
                if (ipc_ring_read(r, &data, &len, 1000, err)) break;
        if (i % 3 == 2) ipc_ring_release(r);
    }
    g_counting = 0;
    assert_int_equal(g_allocs, 0);
    /* the counter does count */
    g_counting = 1;
    void *volatile probe = malloc(16);
    g_counting = 0;
    free(probe);
    assert_int_equal(g_allocs, 1);
    ipc_ring_detach(&r);
    ipc_ring_destroy(&w);
#else
    skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ring_in_process, teardown_check),
        cmocka_unit_test_teardown(test_ring_attach_errors, teardown_check),
        cmocka_unit_test_teardown(test_ring_tag_collision, teardown_check),
        cmocka_unit_test_teardown(test_ring_no_alloc, teardown_check),
        cmocka_unit_test_teardown(test_ring_1_reader, teardown_check),
        cmocka_unit_test_teardown(test_ring_2_readers, teardown_check),
        cmocka_unit_test_teardown(test_ring_4_readers, teardown_check),
        cmocka_unit_test_teardown(test_ring_reader_killed, teardown_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
