/*
 * proc.h — the process tree's plumbing: starting a child that dies with its parent, learning at
 * once that a child died (pidfd, pollable), and signal flags that the main loops read.
 *
 * Children are this same binary re-executed with a hidden subcommand (fork + exec, never fork
 * alone: the parent may already run threads). Each child asks the kernel to SIGKILL it when its
 * parent dies (PR_SET_PDEATHSIG), so no orphan outlives the tree.
 * Signal handlers only set the sig_atomic_t flags below (STYLE.md, as nginx does); the main loop
 * of each process polls them.
 * Thread safety: lt_proc_spawn may be called from any thread; the flags are process-wide.
 */
#ifndef LT_PROC_H
#define LT_PROC_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct lt_child {
    pid_t pid;
    int pidfd; /* readable (POLLIN) once the child has exited; -1 if the kernel lacks pidfd */
} lt_child_t;

/* Starts /proc/self/exe with argv (argv[0] is replaced by the executable path), the child's
 * stdin on /dev/null and stdout/stderr inherited. */
int lt_proc_spawn(char *const argv[], lt_child_t *child, char *err);

/* The directory of /proc/self/exe (no trailing slash) into dir (cap bytes). */
int lt_self_dir(char *dir, size_t cap, char *err);

/* The same with the executable named sibling in /proc/self/exe's directory when there is one
 * (the tree's engine and workers run as lantern-core, which links neither the HTTP server nor
 * the text libraries), else /proc/self/exe itself. */
int lt_proc_spawn_sibling(const char *sibling, char *const argv[], lt_child_t *child, char *err);

/* Non-blocking: 1 and the wait status if the child has exited (and is reaped), 0 if it runs. */
int lt_proc_check(lt_child_t *child, int *status);

/* Sends sig, waits up to timeout_ms for exit, then SIGKILLs; reaps; closes the pidfd. */
void lt_proc_stop(lt_child_t *child, int sig, int timeout_ms);

/* Describes a wait status: "exited with status 3", "killed by signal 9 (Killed)". */
const char *lt_proc_status_str(int status, char *buf, size_t n);

/* ---- resources the tree needs ---- */

/* Makes sure this process (and the children it will start, which inherit the limit) may open
 * `need` file descriptors: raises the soft RLIMIT_NOFILE up to the hard one when it is lower;
 * if the hard limit is lower too, fails with a message naming the limit and `ulimit -n`.
 * `what` names who needs them ("the engine with 2 workers"). Start-up only. */
int lt_fd_limit_ensure(long need, const char *what, char *err);

/* Sizes the shared-memory segment open on fd (named path, in /dev/shm) to size bytes, refusing
 * a size over what /dev/shm has left and reserving the pages of segments up to
 * LT_SHM_RESERVE_MAX, so that a full /dev/shm is this error (naming /dev/shm, the size and the
 * space left) instead of a SIGBUS at the first touch of a page. Start-up only. */
#define LT_SHM_RESERVE_MAX (64u << 20)
int lt_shm_reserve(int fd, const char *path, size_t size, char *err);

/* ---- signals ---- */

extern volatile sig_atomic_t lt_sig_dump;     /* SIGUSR1: dump state to the log */
extern volatile sig_atomic_t lt_sig_shutdown; /* SIGTERM / SIGINT: leave the main loop */

/* Installs the flag-setting handlers for SIGUSR1, SIGTERM, SIGINT and ignores SIGPIPE. */
void lt_signals_install(void);

#endif
