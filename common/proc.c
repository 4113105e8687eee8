/*
 * proc.c — child processes that die with their parent, pidfd-based death notices, and
 * flag-only signal handlers. See proc.h.
 */
#define _GNU_SOURCE
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lt.h"

volatile sig_atomic_t lt_sig_dump = 0;
volatile sig_atomic_t lt_sig_shutdown = 0;

/* ---- spawning ---- */

static int pidfd_open_(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

/* Forks and execs exe with argv; the child dies with its parent. */
static int spawn_exe(const char *exe, char *const argv[], lt_child_t *child, char *err) {
    child->pid = -1;
    child->pidfd = -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return lt_errf(err, LT_ERR_IO, "fork failed: %s", strerror(errno));
    if (pid == 0) {
        /* child: only async-signal-safe calls until exec */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) _exit(127);
        if (getppid() != parent) _exit(127); /* the parent died before prctl took effect */
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            if (devnull != STDIN_FILENO) close(devnull);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(exe, argv);
        _exit(127);
    }
    child->pid = pid;
    child->pidfd = pidfd_open_(pid);
    if (child->pidfd >= 0) fcntl(child->pidfd, F_SETFD, FD_CLOEXEC);
    return LT_OK;
}

/* /proc/self/exe's target into exe (cap bytes). */
static int self_exe(char *exe, size_t cap, char *err) {
    ssize_t n = readlink("/proc/self/exe", exe, cap - 1);
    if (n <= 0)
        return lt_errf(err, LT_ERR_IO, "cannot find our own executable: %s", strerror(errno));
    exe[n] = '\0';
    return LT_OK;
}

int lt_proc_spawn(char *const argv[], lt_child_t *child, char *err) {
    char exe[4096];
    int rc = self_exe(exe, sizeof exe, err);
    return rc ? rc : spawn_exe(exe, argv, child, err);
}

int lt_self_dir(char *dir, size_t cap, char *err) {
    int rc = self_exe(dir, cap, err);
    if (rc) return rc;
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    return LT_OK;
}

int lt_proc_spawn_sibling(const char *sibling, char *const argv[], lt_child_t *child, char *err) {
    char dir[4096], sib[4096 + 256];
    int rc = lt_self_dir(dir, sizeof dir, err);
    if (rc) return rc;
    if (snprintf(sib, sizeof sib, "%s/%s", dir, sibling) < (int)sizeof sib &&
        access(sib, X_OK) == 0)
        return spawn_exe(sib, argv, child, err);
    return lt_proc_spawn(argv, child, err);
}

int lt_proc_check(lt_child_t *child, int *status) {
    if (child->pid <= 0) return 1;
    int st = 0;
    pid_t r = waitpid(child->pid, &st, WNOHANG);
    if (r == 0) return 0;
    if (status) *status = r == child->pid ? st : 0;
    child->pid = -1;
    if (child->pidfd >= 0) close(child->pidfd);
    child->pidfd = -1;
    return 1;
}

void lt_proc_stop(lt_child_t *child, int sig, int timeout_ms) {
    if (child->pid <= 0) return;
    kill(child->pid, sig);
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        if (lt_proc_check(child, NULL)) return;
        if (child->pidfd >= 0) {
            struct pollfd p = {.fd = child->pidfd, .events = POLLIN};
            poll(&p, 1, 10);
        } else {
            usleep(10000);
        }
    }
    kill(child->pid, SIGKILL);
    waitpid(child->pid, NULL, 0);
    child->pid = -1;
    if (child->pidfd >= 0) close(child->pidfd);
    child->pidfd = -1;
}

const char *lt_proc_status_str(int status, char *buf, size_t n) {
    if (WIFEXITED(status))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, n, "ended (status 0x%x)", status);
    return buf;
}

/* ---- resources the tree needs ---- */

int lt_fd_limit_ensure(long need, const char *what, char *err) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return LT_OK; /* unknown: let it try */
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= (rlim_t)need) return LT_OK;
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= (rlim_t)need) {
        unsigned long long was = (unsigned long long)rl.rlim_cur;
        rl.rlim_cur = (rlim_t)need;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            LT_INFO("raised the open-file limit from %llu to %ld (%s needs that many)", was, need,
                    what);
            return LT_OK;
        }
    }
    /* ZeroMQ aborts the process (an assertion) when it cannot open a descriptor: say so first */
    return lt_errf(err, LT_ERR_RANGE,
                   "the open-file limit (RLIMIT_NOFILE) is %llu (hard limit %llu), but %s needs "
                   "at least %ld file descriptors per process: raise it, e.g. `ulimit -n %ld` "
                   "(LimitNOFILE= in a systemd unit, --ulimit nofile= for docker)",
                   (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, what, need,
                   need < 1024 ? 1024 : need);
}

int lt_shm_reserve(int fd, const char *path, size_t size, char *err) {
    /* tmpfs grows lazily: a segment larger than what /dev/shm has left is made without a word
     * and fails when a page past the space is first touched, as a SIGBUS in whichever process
     * touches it. So: no segment larger than the space left, and small ones (the step ring, the
     * metrics region) reserved outright. Large ones (the all-reduce's, sized for the largest
     * batch) stay sparse: reserving them would hold memory most models never touch. */
    struct statvfs v;
    unsigned long long avail = ULLONG_MAX;
    if (statvfs("/dev/shm", &v) == 0)
        avail = (unsigned long long)v.f_bavail * (unsigned long long)v.f_frsize;
    int e = 0;
    if (size > avail)
        e = ENOSPC;
    else if (ftruncate(fd, (off_t)size) != 0)
        e = errno;
    else if (size <= LT_SHM_RESERVE_MAX)
        e = posix_fallocate(fd, 0, (off_t)size);
    if (e == 0 || e == EOPNOTSUPP || e == EINVAL) return LT_OK;
    char left[64] = "";
    if (avail != ULLONG_MAX) snprintf(left, sizeof left, " (%llu bytes free)", avail);
    return lt_errf(err, e == ENOSPC ? LT_ERR_NOMEM : LT_ERR_IO,
                   "shm %s: cannot reserve %zu bytes in /dev/shm%s: %s; free space there or make "
                   "it larger (docker run --shm-size, the tmpfs size= option)",
                   path, size, left, strerror(e));
}

/* ---- signals ---- */

static void on_signal(int sig) {
    if (sig == SIGUSR1)
        lt_sig_dump = 1;
    else
        lt_sig_shutdown = 1;
}

void lt_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}
