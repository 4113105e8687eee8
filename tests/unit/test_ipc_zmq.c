/*
 * test_ipc_zmq.c — the ZeroMQ channel wrappers: ROUTER/DEALER with identities, PUSH/PULL,
 * XPUB/SUB, tcp://, timeouts and non-blocking IPC_AGAIN, refusal of multi-frame and oversized
 * messages, ipc_poll over sockets and plain fds, names, and that no socket file outlives its
 * socket (ipc_cleanup removes stale ones).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zmq.h>

#include "ipc.h"
#include "lt.h"
#include "testutil.h"

static const char TP[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/* Entries named lantern-<our pid>-* in dir. */
static int leftovers_in(const char *dir) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "lantern-%d-", (int)getpid());
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
    assert_int_equal(leftovers_in("/dev/shm") + leftovers_in(ipc_runtime_dir()), 0);
    return 0;
}

static bool exists(const char *endpoint) {
    struct stat st;
    return stat(endpoint + strlen("ipc://"), &st) == 0;
}

static void test_names(void **state) {
    char buf[256], err[LT_ERR_LEN], want[64];
    assert_int_equal(ipc_name(buf, sizeof buf, 123, "step", err), 0);
    assert_string_equal(buf, "lantern-123-step");
    assert_int_equal(ipc_name(buf, sizeof buf, 123, "a/b", err), LT_ERR_INVAL);
    assert_int_equal(ipc_name(buf, sizeof buf, 123, "", err), LT_ERR_INVAL);
    assert_int_equal(ipc_name(buf, 10, 123, "step", err), LT_ERR_RANGE);
    assert_int_equal(ipc_endpoint(buf, sizeof buf, 123, "engine.in", err), 0);
    snprintf(want, sizeof want, "/lantern-123-engine.in.sock");
    assert_int_equal(strncmp(buf, "ipc://", 6), 0);
    assert_string_equal(buf + strlen(buf) - strlen(want), want);
    assert_string_equal(buf + 6, strcat(strcpy((char[256]){0}, ipc_runtime_dir()), want));

    /* a runtime directory so deep that the socket path exceeds sun_path */
    const char *tmp = tu_tmpdir();
    assert_non_null(tmp);
    char deep[512];
    snprintf(deep, sizeof deep, "%s/%0100d", tmp, 0);
    assert_int_equal(mkdir(deep, 0700), 0);
    const char *old = getenv("XDG_RUNTIME_DIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("XDG_RUNTIME_DIR", deep, 1);
    assert_string_equal(ipc_runtime_dir(), deep);
    assert_int_equal(ipc_endpoint(buf, sizeof buf, 123, "x", err), LT_ERR_RANGE);
    setenv("XDG_RUNTIME_DIR", "/nonexistent/dir", 1);
    assert_string_equal(ipc_runtime_dir(), "/tmp");
    if (saved) {
        setenv("XDG_RUNTIME_DIR", saved, 1);
        free(saved);
    } else {
        unsetenv("XDG_RUNTIME_DIR");
    }
    rmdir(deep);
    rmdir(tmp);
}

static void test_router_dealer(void **state) {
    char err[LT_ERR_LEN], ep[256];
    ipc_ctx_t *ctx;
    ipc_sock_t *router, *dealer;
    assert_int_equal(ipc_ctx_create(&ctx, err), 0);
    assert_int_equal(ipc_endpoint(ep, sizeof ep, getpid(), "rd", err), 0);
    assert_int_equal(ipc_sock_create(ctx, IPC_ROUTER, 0, &router, err), 0);
    assert_int_equal(ipc_sock_bind(router, ep, err), 0);
    assert_true(exists(ep));
    assert_int_equal(ipc_sock_create(ctx, IPC_DEALER, 0, &dealer, err), 0);
    assert_int_equal(ipc_sock_set_id(dealer, "fe-1", 4, err), 0);
    assert_int_equal(ipc_sock_connect(dealer, ep, err), 0);

    ipc_writer_t w;
    ipc_envelope_t env;
    assert_int_equal(ipc_writer_init(&w, 0, err), 0);
    assert_int_equal(ipc_envelope_init(&env, 0, err), 0);
    ipc_trace_ctx_t tc = {ipc_str(TP), ipc_str("")};
    const void *data;
    size_t len;
    assert_int_equal(ipc_envelope_write_bin(&w, IPC_MSG_ADD, ipc_str("req-7"), &tc, "prompt", 6,
                                            &data, &len, err),
                     0);
    /* nothing there yet: non-blocking and timed receives say AGAIN */
    ipc_peer_t from;
    const void *got;
    size_t glen;
    assert_int_equal(ipc_sock_recv(router, &from, &got, &glen, 0, err), IPC_AGAIN);
    uint64_t t0 = lt_now_ns();
    assert_int_equal(ipc_sock_recv(router, &from, &got, &glen, 50, err), IPC_AGAIN);
    assert_true(lt_now_ns() - t0 >= 40 * 1000000ull);

    assert_int_equal(ipc_sock_send(dealer, NULL, data, len, 1000, err), 0);
    assert_int_equal(ipc_sock_recv_envelope(router, &from, &env, 2000, err), 0);
    assert_int_equal(from.len, 4);
    assert_memory_equal(from.id, "fe-1", 4);
    assert_int_equal(env.type, IPC_MSG_ADD);
    assert_memory_equal(env.request_id.ptr, "req-7", 5);
    assert_true(env.has_trace);

    /* reply to that peer; a reply to an unknown peer is an error, not a silent drop */
    assert_int_equal(ipc_envelope_write_bin(&w, IPC_MSG_OUTPUT, ipc_str("req-7"), NULL, "tok", 3,
                                            &data, &len, err),
                     0);
    assert_int_equal(ipc_sock_send(router, &from, data, len, 1000, err), 0);
    assert_int_equal(ipc_sock_recv_envelope(dealer, NULL, &env, 2000, err), 0);
    assert_int_equal(env.type, IPC_MSG_OUTPUT);
    ipc_peer_t nobody = {.len = 6};
    memcpy(nobody.id, "nobody", 6);
    assert_int_equal(ipc_sock_send(router, &nobody, data, len, 0, err), LT_ERR_NOTFOUND);
    assert_int_equal(ipc_sock_send(router, NULL, data, len, 0, err), LT_ERR_INVAL);
    assert_int_equal(ipc_sock_recv(router, NULL, &got, &glen, 0, err), LT_ERR_INVAL);

    /* garbage from a peer is a decode error on that message, the socket keeps working */
    assert_int_equal(ipc_sock_send(dealer, NULL, "\x95\x09", 2, 1000, err), 0);
    assert_int_equal(ipc_sock_recv_envelope(router, &from, &env, 2000, err), LT_ERR_FORMAT);
    assert_int_equal(ipc_sock_send(dealer, NULL, "\x95\x01", 2, 1000, err), 0);
    assert_int_equal(ipc_sock_recv_envelope(router, &from, &env, 2000, err), LT_ERR_FORMAT);

    ipc_envelope_fini(&env);
    ipc_writer_fini(&w);
    ipc_sock_destroy(&dealer);
    ipc_sock_destroy(&router);
    assert_null(router);
    assert_false(exists(ep));
    ipc_ctx_destroy(&ctx);
    assert_null(ctx);
}

static void test_push_pull_frames_and_size(void **state) {
    char err[LT_ERR_LEN], ep[256];
    ipc_ctx_t *ctx;
    ipc_sock_t *push, *pull;
    assert_int_equal(ipc_ctx_create(&ctx, err), 0);
    assert_int_equal(ipc_endpoint(ep, sizeof ep, getpid(), "pp", err), 0);
    assert_int_equal(ipc_sock_create(ctx, IPC_PULL, 100, &pull, err), 0);
    assert_int_equal(ipc_sock_bind(pull, ep, err), 0);
    assert_int_equal(ipc_sock_create(ctx, IPC_PUSH, 0, &push, err), 0);
    assert_int_equal(ipc_sock_connect(push, ep, err), 0);

    const void *got;
    size_t glen;
    assert_int_equal(ipc_sock_send(push, NULL, "one", 3, 1000, err), 0);
    assert_int_equal(ipc_sock_recv(pull, NULL, &got, &glen, 2000, err), 0);
    assert_int_equal(glen, 3);
    assert_memory_equal(got, "one", 3);

    /* a two-frame message (from a raw ZeroMQ peer) is drained and refused; the next one
     * comes through */
    void *zctx = zmq_ctx_new(), *zpush = zmq_socket(zctx, ZMQ_PUSH);
    int zero = 0;
    zmq_setsockopt(zpush, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(zpush, ep), 0);
    assert_int_equal(zmq_send(zpush, "a", 1, ZMQ_SNDMORE), 1);
    assert_int_equal(zmq_send(zpush, "b", 1, 0), 1);
    assert_int_equal(zmq_send(zpush, "two", 3, 0), 3);
    assert_int_equal(ipc_sock_recv(pull, NULL, &got, &glen, 2000, err), LT_ERR_FORMAT);
    assert_non_null(strstr(err, "more than one"));
    assert_int_equal(ipc_sock_recv(pull, NULL, &got, &glen, 2000, err), 0);
    assert_memory_equal(got, "two", 3);
    zmq_close(zpush);
    zmq_ctx_term(zctx);

    /* above the receiver's ZMQ_MAXMSGSIZE: never delivered (ZeroMQ drops the connection) */
    char big[200];
    memset(big, 'x', sizeof big);
    assert_int_equal(ipc_sock_send(push, NULL, big, sizeof big, 1000, err), 0);
    assert_int_equal(ipc_sock_recv(pull, NULL, &got, &glen, 200, err), IPC_AGAIN);

    ipc_sock_destroy(&push);
    ipc_sock_destroy(&pull);
    ipc_ctx_destroy(&ctx);
}

static void test_pub_sub_and_tcp(void **state) {
    char err[LT_ERR_LEN], ep[256];
    ipc_ctx_t *ctx;
    ipc_sock_t *pub, *sub;
    assert_int_equal(ipc_ctx_create(&ctx, err), 0);
    assert_int_equal(ipc_endpoint(ep, sizeof ep, getpid(), "ps", err), 0);
    assert_int_equal(ipc_sock_create(ctx, IPC_XPUB, 0, &pub, err), 0);
    assert_int_equal(ipc_sock_bind(pub, ep, err), 0);
    assert_int_equal(ipc_sock_create(ctx, IPC_SUB, 0, &sub, err), 0);
    assert_int_equal(ipc_sock_connect(sub, ep, err), 0);
    /* XPUB sees the subscription: from then on nothing published is lost to the joiner */
    const void *got;
    size_t glen;
    assert_int_equal(ipc_sock_recv(pub, NULL, &got, &glen, 2000, err), 0);
    assert_int_equal(glen, 1);
    assert_int_equal(((const uint8_t *)got)[0], 1);
    for (int i = 0; i < 100; i++) {
        char m[16];
        int n = snprintf(m, sizeof m, "m%d", i);
        assert_int_equal(ipc_sock_send(pub, NULL, m, (size_t)n, 0, err), 0);
    }
    for (int i = 0; i < 100; i++) {
        char m[16];
        int n = snprintf(m, sizeof m, "m%d", i);
        assert_int_equal(ipc_sock_recv(sub, NULL, &got, &glen, 2000, err), 0);
        assert_int_equal(glen, (size_t)n);
        assert_memory_equal(got, m, (size_t)n);
    }
    ipc_sock_destroy(&sub);
    ipc_sock_destroy(&pub);

    /* tcp on an ephemeral port */
    ipc_sock_t *push, *pull;
    assert_int_equal(ipc_sock_create(ctx, IPC_PULL, 0, &pull, err), 0);
    assert_int_equal(ipc_sock_bind(pull, "tcp://127.0.0.1:*", err), 0);
    assert_int_equal(ipc_sock_endpoint(pull, ep, sizeof ep, err), 0);
    assert_int_equal(strncmp(ep, "tcp://127.0.0.1:", 16), 0);
    assert_int_equal(ipc_sock_create(ctx, IPC_PUSH, 0, &push, err), 0);
    assert_int_equal(ipc_sock_connect(push, ep, err), 0);
    assert_int_equal(ipc_sock_send(push, NULL, "over tcp", 8, 1000, err), 0);
    assert_int_equal(ipc_sock_recv(pull, NULL, &got, &glen, 2000, err), 0);
    assert_memory_equal(got, "over tcp", 8);
    assert_int_equal(ipc_sock_bind(pull, "nonsense://x", err), LT_ERR_IO);
    assert_non_null(strstr(err, "nonsense://x"));
    ipc_sock_destroy(&push);
    ipc_sock_destroy(&pull);
    ipc_ctx_destroy(&ctx);
}

static void test_poll(void **state) {
    char err[LT_ERR_LEN], ep[256];
    ipc_ctx_t *ctx;
    ipc_sock_t *push, *pull;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(ipc_ctx_create(&ctx, err), 0);
    assert_int_equal(ipc_endpoint(ep, sizeof ep, getpid(), "poll", err), 0);
    assert_int_equal(ipc_sock_create(ctx, IPC_PULL, 0, &pull, err), 0);
    assert_int_equal(ipc_sock_bind(pull, ep, err), 0);
    assert_int_equal(ipc_sock_create(ctx, IPC_PUSH, 0, &push, err), 0);
    assert_int_equal(ipc_sock_connect(push, ep, err), 0);
    ipc_poll_item_t it[2] = {{.sock = pull, .events = IPC_POLLIN},
                             {.sock = NULL, .fd = fds[0], .events = IPC_POLLIN}};
    assert_int_equal(ipc_poll(it, 2, 20, err), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_int_equal(ipc_poll(it, 2, 1000, err), 1);
    assert_int_equal(it[0].revents, 0);
    assert_int_equal(it[1].revents, IPC_POLLIN);
    char c;
    assert_int_equal(read(fds[0], &c, 1), 1);
    assert_int_equal(ipc_sock_send(push, NULL, "y", 1, 1000, err), 0);
    assert_int_equal(ipc_poll(it, 2, 2000, err), 1);
    assert_int_equal(it[0].revents, IPC_POLLIN);
    assert_int_equal(it[1].revents, 0);
    ipc_poll_item_t many[IPC_POLL_MAX + 1];
    assert_int_equal(ipc_poll(many, IPC_POLL_MAX + 1, 0, err), LT_ERR_INVAL);
    close(fds[0]);
    close(fds[1]);
    ipc_sock_destroy(&push);
    ipc_sock_destroy(&pull);
    ipc_ctx_destroy(&ctx);
}

static void test_cleanup(void **state) {
    char err[LT_ERR_LEN], ep[256], path[512];
    /* what a crashed tree leaves: a socket file and a segment */
    assert_int_equal(ipc_endpoint(ep, sizeof ep, getpid(), "stale", err), 0);
    assert_int_equal(tu_write_file(ep + 6, "", 0), 0);
    int fd = shm_open("/lantern-x-not-ours", O_CREAT | O_RDWR, 0600);
    assert_true(fd >= 0);
    close(fd);
    snprintf(path, sizeof path, "/lantern-%d-stale", (int)getpid());
    fd = shm_open(path, O_CREAT | O_RDWR, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(ipc_cleanup(getpid()), 2);
    assert_false(exists(ep));
    assert_int_equal(shm_open(path, O_RDWR, 0), -1);
    /* another tree's names are left alone */
    fd = shm_open("/lantern-x-not-ours", O_RDWR, 0);
    assert_true(fd >= 0);
    close(fd);
    shm_unlink("/lantern-x-not-ours");
    assert_int_equal(ipc_cleanup(getpid()), 0);
    ipc_endpoint_unlink("tcp://127.0.0.1:5555"); /* no-op */
}

/* A pid that no longer exists: a child's, once reaped. */
static int dead_pid(void) {
    pid_t p = fork();
    if (p == 0) _exit(0);
    assert_true(p > 0);
    assert_int_equal(waitpid(p, NULL, 0), p);
    return (int)p;
}

static void socket_file(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    close(fd); /* the file stays, as a crashed process's does */
}

static void shm_file(const char *name) {
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    assert_true(fd >= 0);
    close(fd);
}

static bool shm_exists(const char *name) {
    int fd = shm_open(name, O_RDWR, 0);
    if (fd >= 0) close(fd);
    return fd >= 0;
}

static void test_cleanup_stale(void **state) {
    (void)state;
    char err[LT_ERR_LEN], dead_ep[256], live_ep[256], dead_shm[64], live_shm[64], plain[300];
    int dead = dead_pid();
    assert_int_equal(ipc_endpoint(dead_ep, sizeof dead_ep, dead, "cs-input", err), 0);
    assert_int_equal(ipc_endpoint(live_ep, sizeof live_ep, getpid(), "cs-input", err), 0);
    snprintf(dead_shm, sizeof dead_shm, "/lantern-%d-cs-step", dead);
    snprintf(live_shm, sizeof live_shm, "/lantern-%d-cs-step", (int)getpid());
    snprintf(plain, sizeof plain, "%s/lantern-%d-cs-plain.sock", ipc_runtime_dir(), dead);
    socket_file(dead_ep + 6);
    socket_file(live_ep + 6);
    shm_file(dead_shm);
    shm_file(live_shm);
    shm_file("/lantern-cs-not-a-pid");
    assert_int_equal(tu_write_file(plain, "", 0), 0); /* named like a socket, but a file */
    /* other crashed trees' files on this machine may go too: at least ours */
    assert_true(ipc_cleanup_stale(false) >= 2);
    assert_false(exists(dead_ep));
    assert_false(shm_exists(dead_shm));
    /* a live pid's, another pattern's and a non-socket are left alone */
    assert_true(exists(live_ep));
    assert_true(shm_exists(live_shm));
    assert_true(shm_exists("/lantern-cs-not-a-pid"));
    struct stat st;
    assert_int_equal(stat(plain, &st), 0);
    unlink(plain);
    shm_unlink("/lantern-cs-not-a-pid");
    /* told that no tree of ours runs, our own pid's go too */
    assert_true(ipc_cleanup_stale(true) >= 2);
    assert_false(exists(live_ep));
    assert_false(shm_exists(live_shm));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_names, teardown_check),
        cmocka_unit_test_teardown(test_router_dealer, teardown_check),
        cmocka_unit_test_teardown(test_push_pull_frames_and_size, teardown_check),
        cmocka_unit_test_teardown(test_pub_sub_and_tcp, teardown_check),
        cmocka_unit_test_teardown(test_poll, teardown_check),
        cmocka_unit_test_teardown(test_cleanup, teardown_check),
        cmocka_unit_test_teardown(test_cleanup_stale, teardown_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
