/*
 * test_ipc_allreduce.c — the shared-memory all-reduce across forked ranks: for 1, 2, 3 and 4
 * ranks and sizes from 1 float to 512 × 4096, every rank ends with exactly the bits of a serial
 * rank-order sum (so all ranks agree); a killed rank makes the others fail within the timeout,
 * naming it, and the group stays broken; mismatched sizes fail on every rank; no segment is
 * left behind.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
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

#define MAX_CALLS 64

static int leftovers(void) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "lantern-%d-", (int)getpid());
    DIR *d = opendir("/dev/shm");
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            print_message("leftover: /dev/shm/%s\n", e->d_name);
            n++;
        }
    closedir(d);
    return n;
}

static int teardown_check(void **state) {
    assert_int_equal(leftovers(), 0);
    return 0;
}

static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Input of `rank` at call c, element i: magnitudes from 1e-3 to 1e3, so that the order of
 * summation shows in the low bits. Not inlined: gnu11 compiles with -ffp-contract=fast, and
 * inlined into a sum its multiply would fuse with the add (FMA), changing the reference. */
__attribute__((noinline)) static float input(int rank, int c, size_t i) {
    static const float scale[7] = {1e-3f, 1e-2f, 1e-1f, 1.0f, 1e1f, 1e2f, 1e3f};
    uint64_t h = mix(((uint64_t)rank << 56) ^ ((uint64_t)c << 40) ^ i);
    return ((float)(int32_t)(h & 0xffffff) / (float)(1 << 23) - 1.0f) * scale[(h >> 32) % 7];
}

static uint64_t hash_bits(const float *x, size_t n) {
    uint64_t h = 1469598103934665603ull;
    const uint8_t *b = (const uint8_t *)x;
    for (size_t i = 0; i < n * sizeof *x; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static const size_t SIZES[] = {1, 5, 17, 1000, 4095, 4096, 4097, 10000, 65539, 512 * 4096};
#define NSIZES (sizeof SIZES / sizeof *SIZES)
#define REPS   2

/* One rank: every call's result must equal the serial sum bit for bit. Returns an exit code. */
static int rank_main(const char *name, int rank, int world, uint64_t *hashes) {
    char err[LT_ERR_LEN];
    ipc_allreduce_t *ar;
    int rc;
    uint64_t t0 = lt_now_ns();
    while ((rc = ipc_allreduce_attach(name, rank, &ar, err)) == IPC_AGAIN) {
        if (lt_now_ns() - t0 > 10000000000ull) return 10;
        usleep(1000);
    }
    if (rc) {
        fprintf(stderr, "rank %d: attach: %s\n", rank, err);
        return 11;
    }
    ipc_allreduce_set_timeout(ar, 60000);
    size_t max = 512 * 4096;
    float *buf = malloc(max * sizeof *buf), *want = malloc(max * sizeof *want);
    int c = 0;
    for (int rep = 0; rep < REPS; rep++)
        for (size_t s = 0; s < NSIZES; s++, c++) {
            size_t n = SIZES[s];
            for (size_t i = 0; i < n; i++) buf[i] = input(rank, c, i);
            if ((rc = ipc_allreduce_sum(ar, buf, n, err))) {
                fprintf(stderr, "rank %d: call %d: %s\n", rank, c, err);
                return 12;
            }
            for (size_t i = 0; i < n; i++) {
                float v = input(0, c, i);
                for (int q = 1; q < world; q++) v += input(q, c, i);
                want[i] = v;
            }
            if (memcmp(buf, want, n * sizeof *buf) != 0) {
                size_t i = 0;
                while (memcmp(&buf[i], &want[i], sizeof *buf) == 0) i++;
                fprintf(stderr, "rank %d: call %d (n %zu): element %zu is %.9g, serial %.9g\n",
                        rank, c, n, i, buf[i], want[i]);
                return 13;
            }
            hashes[rank * MAX_CALLS + c] = hash_bits(buf, n);
        }
    free(buf);
    free(want);
    ipc_allreduce_destroy(&ar);
    return 0;
}

static pid_t spawn(int (*fn)(const char *, int, int, uint64_t *), const char *name, int rank,
                   int world, uint64_t *shared) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(fn(name, rank, world, shared));
    return pid;
}

static int wait_status(pid_t pid) {
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static void run_world(int world) {
    char err[LT_ERR_LEN], name[128], what[32];
    snprintf(what, sizeof what, "ar-%d", world);
    assert_int_equal(ipc_name(name, sizeof name, getpid(), what, err), 0);
    /* the engine's way: create without a rank, let the workers attach */
    ipc_allreduce_t *owner;
    assert_int_equal(ipc_allreduce_create(name, IPC_NO_RANK, world, 512 * 4096, &owner, err), 0);
    float x = 1;
    assert_int_equal(ipc_allreduce_sum(owner, &x, 1, err), LT_ERR_INVAL); /* no rank */
    uint64_t *hashes = mmap(NULL, 4 * MAX_CALLS * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(hashes != MAP_FAILED);
    pid_t pids[4];
    uint64_t t0 = lt_now_ns();
    for (int r = 0; r < world; r++) pids[r] = spawn(rank_main, name, r, world, hashes);
    for (int r = 0; r < world; r++) {
        int st = wait_status(pids[r]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("rank %d: status %d", r, st);
    }
    for (int c = 0; c < (int)(REPS * NSIZES); c++)
        for (int r = 1; r < world; r++) assert_true(hashes[r * MAX_CALLS + c] == hashes[c]);
    print_message("world %d: %zu calls per rank, identical bits, %.2f s\n", world, REPS * NSIZES,
                  (double)(lt_now_ns() - t0) / 1e9);
    munmap(hashes, 4 * MAX_CALLS * sizeof(uint64_t));
    ipc_allreduce_destroy(&owner);
    assert_null(owner);
}

static void test_world_1(void **state) {
    char err[LT_ERR_LEN], name[128];
    assert_int_equal(ipc_name(name, sizeof name, getpid(), "ar-1", err), 0);
    ipc_allreduce_t *ar;
    assert_int_equal(ipc_allreduce_create(name, 0, 1, 100, &ar, err), 0);
    float v[3] = {1, -0.0f, 3};
    assert_int_equal(ipc_allreduce_sum(ar, v, 3, err), 0);
    assert_true(v[0] == 1 && v[2] == 3 && signbit(v[1]));
    assert_int_equal(ipc_allreduce_hook(v, 3, ar), 0);
    ipc_allreduce_destroy(&ar);
    run_world(1);
}

static void test_world_2(void **state) {
    run_world(2);
}
static void test_world_3(void **state) {
    run_world(3);
}
static void test_world_4(void **state) {
    run_world(4);
}

/* The inputs are chosen so that summation order matters: otherwise "identical bits" would be
 * a weak claim. */
static void test_order_matters(void **state) {
    size_t differ = 0;
    for (size_t i = 0; i < 10000; i++) {
        float fwd = ((input(0, 3, i) + input(1, 3, i)) + input(2, 3, i)) + input(3, 3, i);
        float rev = ((input(3, 3, i) + input(2, 3, i)) + input(1, 3, i)) + input(0, 3, i);
        differ += memcmp(&fwd, &rev, sizeof fwd) != 0;
    }
    print_message("forward and reverse order differ in %zu of 10000 elements\n", differ);
    assert_true(differ > 100);
}

/* Rank 2 joins and dies; ranks 0 and 1 must fail within their timeout and then stay failed. */
static int timeout_rank(const char *name, int rank, int world, uint64_t *out) {
    char err[LT_ERR_LEN];
    ipc_allreduce_t *ar;
    int rc;
    while ((rc = ipc_allreduce_attach(name, rank, &ar, err)) == IPC_AGAIN) usleep(1000);
    if (rc) return 11;
    if (rank == 2) raise(SIGKILL);
    ipc_allreduce_set_timeout(ar, 300);
    float buf[8192] = {0};
    size_t n = 8192; /* the two-barrier path */
    uint64_t t0 = lt_now_ns();
    rc = ipc_allreduce_sum(ar, buf, n, err);
    uint64_t dt = lt_now_ns() - t0;
    if (rc != LT_ERR_IO) return 12;
    /* the first to time out names rank 2; the other may instead see the group broken */
    if (!strstr(err, "missing rank 2 (pid") && !strstr(err, "broken")) {
        fprintf(stderr, "rank %d: %s\n", rank, err);
        return 13;
    }
    if (strstr(err, "missing") && !strstr(err, "dead")) return 14;
    if (dt > 3000000000ull) return 15;
    t0 = lt_now_ns();
    if (ipc_allreduce_sum(ar, buf, 10, err) != LT_ERR_IO || !strstr(err, "broken")) return 16;
    if (lt_now_ns() - t0 > 1000000000ull) return 17; /* fails at once, not after a timeout */
    out[rank] = dt;
    ipc_allreduce_destroy(&ar);
    return 0;
}

static void test_dead_rank(void **state) {
    char err[LT_ERR_LEN], name[128];
    assert_int_equal(ipc_name(name, sizeof name, getpid(), "ar-dead", err), 0);
    ipc_allreduce_t *owner;
    assert_int_equal(ipc_allreduce_create(name, IPC_NO_RANK, 3, 10000, &owner, err), 0);
    uint64_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pids[3];
    for (int r = 0; r < 3; r++) pids[r] = spawn(timeout_rank, name, r, 3, shared);
    for (int r = 0; r < 2; r++) {
        int st = wait_status(pids[r]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("rank %d: status %d", r, st);
    }
    int st = wait_status(pids[2]);
    assert_true(WIFSIGNALED(st));
    print_message("ranks 0 and 1 gave up after %.0f and %.0f ms\n", (double)shared[0] / 1e6,
                  (double)shared[1] / 1e6);
    munmap(shared, 4096);
    ipc_allreduce_destroy(&owner);
}

/* Ranks disagree on n: both fail, neither hangs. */
static int mismatch_rank(const char *name, int rank, int world, uint64_t *out) {
    char err[LT_ERR_LEN];
    ipc_allreduce_t *ar;
    int rc;
    while ((rc = ipc_allreduce_attach(name, rank, &ar, err)) == IPC_AGAIN) usleep(1000);
    if (rc) return 11;
    ipc_allreduce_set_timeout(ar, 5000);
    float buf[200] = {0};
    if ((rc = ipc_allreduce_sum(ar, buf, 100, err))) return 12; /* agree once */
    rc = ipc_allreduce_sum(ar, buf, rank == 0 ? 100 : 101, err);
    if (rc != LT_ERR_INVAL) {
        fprintf(stderr, "rank %d: rc %d: %s\n", rank, rc, err);
        return 13;
    }
    ipc_allreduce_destroy(&ar);
    return 0;
}

static void test_mismatch_and_errors(void **state) {
    char err[LT_ERR_LEN], name[128];
    assert_int_equal(ipc_name(name, sizeof name, getpid(), "ar-mm", err), 0);
    ipc_allreduce_t *owner, *a, *b;
    assert_int_equal(ipc_allreduce_create(name, IPC_NO_RANK, 2, 1000, &owner, err), 0);
    /* attach errors while nobody runs */
    assert_int_equal(ipc_allreduce_attach(name, 2, &a, err), LT_ERR_INVAL);
    assert_int_equal(ipc_allreduce_attach(name, 0, &a, err), 0);
    assert_int_equal(ipc_allreduce_attach(name, 0, &b, err), LT_ERR_INVAL); /* taken */
    ipc_allreduce_destroy(&a);
    assert_int_equal(ipc_allreduce_attach("lantern-0-none", 0, &a, err), IPC_AGAIN);
    assert_int_equal(ipc_allreduce_create(name, 0, 2, 1000, &a, err), LT_ERR_INVAL); /* exists */
    assert_int_equal(ipc_allreduce_create("x", 0, 0, 1000, &a, err), LT_ERR_INVAL);
    assert_int_equal(ipc_allreduce_create("x", 5, 2, 1000, &a, err), LT_ERR_INVAL);

    pid_t p0 = spawn(mismatch_rank, name, 0, 2, NULL), p1 = spawn(mismatch_rank, name, 1, 2, NULL);
    int st0 = wait_status(p0), st1 = wait_status(p1);
    assert_true(WIFEXITED(st0) && WEXITSTATUS(st0) == 0);
    assert_true(WIFEXITED(st1) && WEXITSTATUS(st1) == 0);
    ipc_allreduce_destroy(&owner);

    /* more floats than the segment holds */
    assert_int_equal(ipc_allreduce_create(name, 0, 1, 10, &a, err), 0);
    float buf[11] = {0};
    assert_int_equal(ipc_allreduce_sum(a, buf, 11, err), LT_ERR_RANGE);
    assert_int_equal(ipc_allreduce_sum(a, buf, 1, err), LT_ERR_IO); /* broken now */
    ipc_allreduce_destroy(&a);
    assert_int_equal(ipc_allreduce_unlink(name), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_order_matters, teardown_check),
        cmocka_unit_test_teardown(test_world_1, teardown_check),
        cmocka_unit_test_teardown(test_world_2, teardown_check),
        cmocka_unit_test_teardown(test_world_3, teardown_check),
        cmocka_unit_test_teardown(test_world_4, teardown_check),
        cmocka_unit_test_teardown(test_dead_rank, teardown_check),
        cmocka_unit_test_teardown(test_mismatch_and_errors, teardown_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
