/*
 * shm.c — plumbing under the ring and the all-reduce: POSIX shared-memory segments that start
 * with a {magic, version, size} header, futex waits on words inside them, and the naming scheme
 * ("lantern-<pid>-<what>") that lets one sweep remove whatever a crashed tree left behind in
 * /dev/shm and the runtime directory.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ipc_priv.h"
#include "proc.h"

/* ---- futex ---- */

void ipc_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline_ns) {
    struct timespec ts, *tp = NULL;
    if (deadline_ns != UINT64_MAX) {
        uint64_t now = lt_now_ns();
        if (now >= deadline_ns) return;
        uint64_t d = deadline_ns - now;
        ts.tv_sec = (time_t)(d / 1000000000u);
        ts.tv_nsec = (long)(d % 1000000000u);
        tp = &ts;
    }
    /* FUTEX_WAIT takes a relative timeout. EAGAIN (the word changed), EINTR and ETIMEDOUT all
     * send the caller back to re-check. */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, tp, NULL, 0);
}

void ipc_futex_wake(_Atomic uint32_t *word, int n) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

bool ipc_pid_alive(int pid) {
    if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM)) return false;
    /* A zombie (exited, not yet reaped by its parent) still answers kill(pid, 0). */
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return true;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return true;
    buf[n] = 0;
    const char *paren = strrchr(buf, ')'); /* the command name may itself hold ") " */
    return !(paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X'));
}

/* ---- names ---- */

int ipc_check_name(const char *name, size_t max, char *err) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > max)
        return lt_errf(err, LT_ERR_INVAL, "ipc name \"%s\": empty or longer than %zu",
                       name ? name : "", max);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return lt_errf(err, LT_ERR_INVAL, "ipc name \"%s\": only [A-Za-z0-9._-] allowed", name);
    }
    return 0;
}

const char *ipc_runtime_dir(void) {
    const char *d = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    if (d && d[0] == '/' && stat(d, &st) == 0 && S_ISDIR(st.st_mode)) return d;
    return "/tmp";
}

int ipc_name(char *buf, size_t n, int pid, const char *what, char *err) {
    int rc = ipc_check_name(what, 64, err);
    if (rc) return rc;
    int k = snprintf(buf, n, "lantern-%d-%s", pid, what);
    if (k < 0 || (size_t)k >= n)
        return lt_errf(err, LT_ERR_RANGE, "ipc name for \"%s\" does not fit %zu bytes", what, n);
    return 0;
}

int ipc_endpoint(char *buf, size_t n, int pid, const char *what, char *err) {
    int rc = ipc_check_name(what, 64, err);
    if (rc) return rc;
    const char *dir = ipc_runtime_dir();
    int k = snprintf(buf, n, "ipc://%s/lantern-%d-%s.sock", dir, pid, what);
    if (k < 0 || (size_t)k >= n)
        return lt_errf(err, LT_ERR_RANGE, "endpoint for \"%s\" does not fit %zu bytes", what, n);
    if (k - 6 > 107) /* sun_path holds 108 bytes with the NUL */
        return lt_errf(err, LT_ERR_RANGE, "socket path %s is longer than 107 bytes", buf + 6);
    return 0;
}

void ipc_endpoint_unlink(const char *endpoint) {
    if (endpoint && strncmp(endpoint, "ipc://", 6) == 0 && endpoint[6] != '@') unlink(endpoint + 6);
}

/* Unlinks every entry of dir named prefix*suffix; returns the count. */
static int sweep(const char *dir, const char *prefix, const char *suffix, bool shm) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t np = strlen(prefix), ns = strlen(suffix);
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < np + ns || strncmp(e->d_name, prefix, np) != 0 ||
            strcmp(e->d_name + n - ns, suffix) != 0)
            continue;
        int rc;
        if (shm) {
            char nm[NAME_MAX + 2];
            snprintf(nm, sizeof nm, "/%s", e->d_name);
            rc = shm_unlink(nm);
        } else {
            rc = unlinkat(dirfd(d), e->d_name, 0);
        }
        if (rc == 0) removed++;
    }
    closedir(d);
    return removed;
}

int ipc_cleanup(int pid) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "lantern-%d-", pid);
    return sweep("/dev/shm", prefix, "", true) + sweep(ipc_runtime_dir(), prefix, ".sock", false);
}

/* ---- leftovers of crashed trees ---- */

/* The pid in "lantern-<pid>-<what><suffix>" (what: 1..64 of [A-Za-z0-9._-]), or -1 when the
 * name is not one ipc_name / ipc_endpoint makes. */
static int leftover_pid(const char *name, const char *suffix) {
    if (strncmp(name, "lantern-", 8) != 0) return -1;
    const char *p = name + 8;
    long pid = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 10; p++, digits++) pid = pid * 10 + (*p - '0');
    if (digits == 0 || *p != '-' || pid <= 0 || pid > INT32_MAX) return -1;
    size_t n = strlen(++p), ns = strlen(suffix);
    if (n <= ns || n - ns > 64 || strcmp(p + n - ns, suffix) != 0) return -1;
    for (size_t i = 0; i < n - ns; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return -1;
    }
    return (int)pid;
}

/* Removes from dir the entries named like ours whose owning process no longer exists: only
 * regular files (shm) or sockets, only our own user's, and only when kill(pid, 0) says ESRCH
 * (EPERM or success means the pid is in use: never touched), or, with mine, our own pid's. */
static int sweep_stale(const char *dir, const char *suffix, bool shm, bool mine) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int pid = leftover_pid(e->d_name, suffix);
        bool self = pid == (int)getpid();
        if (pid < 0 || (self && !mine)) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (st.st_uid != geteuid() || !(shm ? S_ISREG(st.st_mode) : S_ISSOCK(st.st_mode))) continue;
        if (!self && (kill(pid, 0) == 0 || errno != ESRCH)) continue;
        int rc;
        if (shm) {
            char nm[NAME_MAX + 2];
            snprintf(nm, sizeof nm, "/%s", e->d_name);
            rc = shm_unlink(nm);
        } else {
            rc = unlinkat(dirfd(d), e->d_name, 0);
        }
        if (rc == 0) {
            removed++;
            LT_INFO("removed %s/%s, left behind by lantern process %d, which no longer exists%s",
                    dir, e->d_name, pid, self ? " (this process has its pid now)" : "");
        }
    }
    closedir(d);
    return removed;
}

int ipc_cleanup_stale(bool mine) {
    const char *rt = ipc_runtime_dir();
    int n = sweep_stale("/dev/shm", "", true, mine) + sweep_stale(rt, ".sock", false, mine);
    if (strcmp(rt, "/tmp") != 0) n += sweep_stale("/tmp", ".sock", false, mine);
    return n;
}

/* ---- segments ---- */

int ipc_shm_create(const char *name, size_t size, void **base, char *err) {
    int rc = ipc_check_name(name, 200, err);
    if (rc) return rc;
    char path[256];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return lt_errf(err, errno == EEXIST ? LT_ERR_INVAL : LT_ERR_IO, "shm %s: %s", path,
                       errno == EEXIST ? "already exists (a live tree, or one that crashed: "
                                         "ipc_cleanup removes its leftovers)"
                                       : strerror(errno));
    if ((rc = lt_shm_reserve(fd, path, size, err))) {
        close(fd);
        shm_unlink(path);
        return rc;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        shm_unlink(path);
        return lt_errf(err, LT_ERR_IO, "shm %s: mmap of %zu bytes: %s", path, size, strerror(e));
    }
    *base = p;
    return 0;
}

int ipc_shm_attach(const char *name, uint64_t magic, uint32_t version, size_t min_size, void **base,
                   size_t *size, char *err) {
    int rc = ipc_check_name(name, 200, err);
    if (rc) return rc;
    char path[256];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT) return lt_errf(err, IPC_AGAIN, "shm %s: does not exist yet", path);
        return lt_errf(err, LT_ERR_IO, "shm %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lt_errf(err, LT_ERR_IO, "shm %s: fstat: %s", path, strerror(e));
    }
    if ((size_t)st.st_size < sizeof(ipc_shm_hdr_t)) {
        close(fd); /* the creator has not sized it yet */
        return lt_errf(err, IPC_AGAIN, "shm %s: not initialised yet", path);
    }
    size_t sz = (size_t)st.st_size;
    void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return lt_errf(err, LT_ERR_IO, "shm %s: mmap: %s", path, strerror(e));
    ipc_shm_hdr_t *h = p;
    /* acquire: pairs with the creator's release store of magic, after which the header it
     * filled in is visible here */
    uint64_t m = atomic_load_explicit(&h->magic, memory_order_acquire);
    if (m == 0) {
        munmap(p, sz);
        return lt_errf(err, IPC_AGAIN, "shm %s: not initialised yet", path);
    }
    if (m != magic) {
        munmap(p, sz);
        return lt_errf(err, LT_ERR_FORMAT, "shm %s: not a segment of this kind (magic %016llx)",
                       path, (unsigned long long)m);
    }
    uint32_t v = h->version;
    uint64_t hsize = h->size;
    if (v != version) {
        munmap(p, sz);
        return lt_errf(err, LT_ERR_UNSUPPORTED, "shm %s: layout version %u, this build has %u",
                       path, v, version);
    }
    if (hsize != sz || sz < min_size) {
        munmap(p, sz);
        return lt_errf(err, LT_ERR_FORMAT, "shm %s: header says %llu bytes, segment has %zu", path,
                       (unsigned long long)hsize, sz);
    }
    *base = p;
    *size = sz;
    return 0;
}

int ipc_shm_unlink(const char *name) {
    char err[LT_ERR_LEN];
    int rc = ipc_check_name(name, 200, err);
    if (rc) return rc;
    char path[256];
    snprintf(path, sizeof path, "/%s", name);
    if (shm_unlink(path) != 0 && errno != ENOENT) return LT_ERR_IO;
    return 0;
}
