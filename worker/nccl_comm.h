/*
 * nccl_comm.h — tensor parallelism over NCCL for the CUDA backend: one communicator per worker
 * rank, an all-reduce (wk_allreduce_fn) that sums in place with ncclAllReduce on the backend's
 * compute stream without waiting for it, and the polling at the step's end that turns a dead or
 * stuck peer into a failed step instead of a hang (ncclCommGetAsyncError, then ncclCommAbort).
 *
 * The ncclUniqueId that rank 0 makes reaches the other ranks through the tree's existing
 * shared-memory all-reduce (ipc_allreduce): each of its bytes is one float, rank 0 adds the
 * values and the others zeros, so the sum every rank gets back is rank 0's id, exactly.
 *
 * Built with LANTERN_HAVE_CUDA; without it wk_nccl_init fails with a message. A one-rank
 * communicator ran on an H200 (test_cuda_nccl); several ranks have not run on GPUs yet (README
 * "GPU"). Thread safety: a communicator belongs to its worker thread.
 */
#ifndef WK_NCCL_COMM_H
#define WK_NCCL_COMM_H

#include <stddef.h>

#include "backend.h"

typedef struct wk_nccl wk_nccl_t;

/* Joins the group of `world` ranks as `rank`, on the CUDA backend's stream. bcast/bcast_user is
 * an all-reduce every rank can already call (the shared-memory one): it carries the unique id.
 * Then a warm-up all-reduce checks the ring (every rank's 1 + rank must sum to world(world+1)/2)
 * before any step. timeout_ms bounds the wait for a step (0: 60 s). */
int wk_nccl_init(int rank, int world, void *stream, wk_allreduce_fn bcast, void *bcast_user,
                 int timeout_ms, wk_nccl_t **out, char *err);
/* wk_allreduce_fn over NCCL (user = the wk_nccl_t *): enqueues the in-place sum of buf (n floats,
 * device memory) across the ranks on the compute stream and returns without waiting (the step
 * goes on; CUDA graphs may record it). The backend's copy of the logits at the step's end waits
 * for everything, watching NCCL's asynchronous error and the timeout: a dead or stuck peer
 * aborts the communicator and fails that step (LT_ERR_IO), and every later call fails at once. */
int wk_nccl_allreduce(float *buf, size_t n, void *user);
void wk_nccl_destroy(wk_nccl_t **c);

#endif
