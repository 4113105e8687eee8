/*
 * ipc_priv.h — internals shared by the ipc/ sources, not part of the module's interface:
 * shared-memory segments that start with a header, futex wait/wake on cross-process words,
 * spin-then-sleep waiting with deadlines, the raw ZeroMQ handle behind an ipc_sock_t.
 */
#ifndef LT_IPC_PRIV_H
#define LT_IPC_PRIV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc.h"

#define IPC_CACHE_LINE 64

/* ---- time ---- */

/* Absolute deadline for a wait of timeout_ms (< 0: never). */
static inline uint64_t ipc_deadline(int timeout_ms) {
    return timeout_ms < 0 ? UINT64_MAX : lt_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

static inline void ipc_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ---- futex on a 32-bit word in shared memory ---- */

/* Sleeps while *word == expected, at most until deadline_ns (UINT64_MAX: no limit). Returns
 * when woken, when the word differs, on a signal, or at the deadline: the caller re-checks its
 * condition and the clock. Shared (not FUTEX_PRIVATE) because the word is in a MAP_SHARED
 * segment used by several processes. */
void ipc_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline_ns);
/* Wakes up to n sleepers on word (INT32_MAX: all). */
void ipc_futex_wake(_Atomic uint32_t *word, int n);

/* ---- shared-memory segments ---- */

/* Every segment starts with this. The creator fills the rest of its header first and publishes
 * `magic` last with a release store; an attacher loads magic with acquire, so once it sees the
 * right value every field the creator wrote before is visible. Fields after magic that never
 * change after creation are plain; fields that change are _Atomic with their order commented. */
typedef struct ipc_shm_hdr {
    _Atomic uint64_t magic;
    uint32_t version;
    uint32_t creator_pid;
    uint64_t size; /* bytes of the whole segment; an attacher checks it against fstat */
} ipc_shm_hdr_t;

/* Creates "/<name>" (O_EXCL, mode 0600) of `size` bytes, zero-filled, mapped read-write. */
int ipc_shm_create(const char *name, size_t size, void **base, char *err);
/* Maps an existing segment whose header carries `magic` and `version` and whose size matches.
 * IPC_AGAIN if absent or not yet published, LT_ERR_FORMAT if foreign, LT_ERR_UNSUPPORTED for
 * another version. */
int ipc_shm_attach(const char *name, uint64_t magic, uint32_t version, size_t min_size, void **base,
                   size_t *size, char *err);
int ipc_shm_unlink(const char *name);
/* Validates a segment name: 1..200 characters from [A-Za-z0-9._-]. */
int ipc_check_name(const char *name, size_t max, char *err);

/* True if process pid exists and has not exited (a zombie counts as dead). Error paths only. */
bool ipc_pid_alive(int pid);

/* ---- sockets ---- */

void *ipc_sock_zmq(ipc_sock_t *s);
void *ipc_ctx_zmq(ipc_ctx_t *c);

#endif
