/*
 * cuemu.cpp — a CPU emulator of the CUDA runtime, cuBLAS and NCCL calls lantern makes, so that
 * its real kernels (the .cu files of kernels/cuda), the CUDA backend (worker/cuda/) and the CUDA
 * tests (tests/unit/cuda/) run on machines without a GPU: every build machine of this project, and
 * ASan's build, which then checks each kernel's memory accesses against the exact extent of each
 * allocation.
 *
 * Why: GPUs are lent to few sessions and for minutes; without this, a kernel change is checked
 * only by the compiler until one is. What it is not: a model of GPU speed, of concurrency between
 * blocks, or of the memory model (a block's threads interleave only at barriers).
 *
 * Pieces:
 *   - device memory: host allocations of the exact size, poisoned (0xff bytes: NaN floats,
 *     index -1), tracked, capped at $CUEMU_DEVICE_MIB (default 1024) so that out-of-memory
 *     paths run; copies check that their device side lies inside one allocation;
 *   - streams: operations run when submitted, in order (the device is synchronous), unless the
 *     stream is being captured: then they become a graph's nodes, replayed by cudaGraphLaunch.
 *     Calls that CUDA forbids during a capture (cudaMalloc, cudaFree, synchronous copies,
 *     synchronizations) fail it as CUDA does (cudaErrorStreamCaptureUnsupported, then
 *     cudaErrorStreamCaptureInvalidated at the end);
 *   - kernels: each block's threads are fibers (a 6-register context switch) run by a scheduler
 *     until all have returned; barriers and shuffles are where they meet;
 *   - cuBLAS GEMM: the product of the converted inputs in fp32;
 *   - NCCL: see include/nccl.h.
 * $CUEMU_DEVICES (default 1) is the device count cudaGetDeviceCount reports; $CUEMU_ORDER=reverse
 * runs blocks and threads last to first (run_block); $CUEMU_STATS=1 prints the kernels run at
 * exit.
 *
 * Thread safety: a mutex around the calls' bookkeeping and another around kernels (two host
 * threads' kernels do not overlap); copies and all-reduces run on their caller's thread unlocked,
 * so ranks may be threads of one process as well as processes.
 * x86-64 only (the context switch).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"
#include "nccl.h"

#if !defined(__x86_64__)
#error "cuemu's fibers switch x86-64 contexts"
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#define CUEMU_ASAN 1
#endif

namespace cuemu {

static std::recursive_mutex g_mu;
typedef std::lock_guard<std::recursive_mutex> lock_t;

[[noreturn]] __attribute__((format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuemu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

static long env_long(const char *name, long dflt) {
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

/* ---- errors ---- */

static thread_local cudaError_t t_last = cudaSuccess;

static cudaError_t fail(cudaError_t e) {
    if (e != cudaSuccess) t_last = e;
    return e;
}

/* ---- device memory ---- */

static std::map<uintptr_t, size_t> g_allocs; /* start -> bytes */
static size_t g_used;

static size_t mem_limit() {
    static size_t lim = (size_t)env_long("CUEMU_DEVICE_MIB", 1024) << 20;
    return lim;
}

/* Whether [p, p + n) lies inside one allocation. */
static bool on_device(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return false;
    --it;
    return a >= it->first && a + n <= it->first + it->second;
}

/* ---- streams, capture, graphs ---- */

struct node {
    void (*op)(void *);
    std::shared_ptr<void> arg;
};

} // namespace cuemu

struct CUgraph_st {
    std::vector<cuemu::node> nodes;
};
struct CUgraphExec_st {
    std::vector<cuemu::node> nodes;
};
struct CUstream_st {
    bool capturing = false, invalidated = false;
    int mode = 0;
    std::thread::id owner; /* the thread capturing */
    CUgraph_st *graph = nullptr;
};
struct CUevent_st {
    double ms = 0;
};

namespace cuemu {

static CUstream_st g_legacy; /* stream 0 */
static std::vector<CUstream_st *> g_streams;

static CUstream_st *stream_of(cudaStream_t st) {
    return st ? st : &g_legacy;
}

/* A call that CUDA forbids during a capture ("potentially unsafe": it allocates, frees or
 * synchronizes) from the capturing thread unless in relaxed mode, or from any thread while a
 * global-mode capture runs: fails those captures (and the call). Returns true when it must fail. */
static bool capture_forbids() {
    bool any = false;
    std::thread::id me = std::this_thread::get_id();
    for (CUstream_st *s : g_streams)
        if (s->capturing && (s->mode == cudaStreamCaptureModeGlobal ||
                             (s->mode == cudaStreamCaptureModeThreadLocal && s->owner == me)))
            s->invalidated = any = true;
    return any;
}

/* Runs op now, outside the lock (an all-reduce waits there for other threads' ranks), or records
 * it when the stream is being captured. */
void submit(cudaStream_t st, void (*op)(void *), void *arg, void (*free_arg)(void *)) {
    {
        lock_t l(g_mu);
        CUstream_st *s = stream_of(st);
        if (s->capturing) {
            s->graph->nodes.push_back(node{op, std::shared_ptr<void>(arg, free_arg)});
            return;
        }
    }
    op(arg);
    free_arg(arg);
}

static double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* ---- kernels: fibers ---- */

extern "C" void cuemu_switch(void **save_sp, void *to_sp);
asm(R"(
    .text
    .p2align 4
    .globl cuemu_switch
    .hidden cuemu_switch
    .type cuemu_switch, @function
cuemu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuemu_switch, .-cuemu_switch
)");

#ifdef CUEMU_ASAN
enum : size_t { STACK = 1 << 20 };
#else
enum : size_t { STACK = 256 << 10 };
#endif
enum { MAX_THREADS = 1024, WARPS = MAX_THREADS / 32 };
enum { READY, AT_BLOCK, AT_WARP, DONE };

struct fiber {
    void *sp;
    char *stack; /* STACK bytes above a guard page */
    thread_ctx c;
    int state, lane, warp, round; /* round: the warp round of its last shuffle */
    unsigned mask;                /* of the shuffle or __syncwarp it waits at */
    void *fake;                   /* ASan's fake stack while switched out */
};

struct block_run {
    fiber f[MAX_THREADS];
    int n, live;
    int warp_round[WARPS];
    uint64_t slot[2][WARPS][32];
    int slot_round[2][WARPS][32];
    void *sched_sp, *sched_fake;
    const void *sched_bottom;
    size_t sched_size;
    void (*body)(void *);
    void *arg;
    std::vector<max_align_t> shmem;
};

static thread_local block_run *t_blk; /* the block running on this thread, or NULL */
static thread_local fiber *t_cur;

/* A host thread's kernel state, made on its first launch and freed when it exits (ranks may be
 * threads that come and go). */
struct host_thread {
    block_run *blk = nullptr;
    char *stacks[MAX_THREADS] = {};
    ~host_thread() {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        for (char *s : stacks)
            if (s) munmap(s - page, STACK + page);
        delete blk;
    }
};
static thread_local host_thread t_host;

const thread_ctx &ctx() {
    if (!t_cur) die("a kernel built-in (threadIdx, blockIdx, ...) read outside a kernel");
    return t_cur->c;
}

void *dyn_shared() {
    return t_blk->shmem.data();
}

static void asan_start(void **save, const void *bottom, size_t size) {
#ifdef CUEMU_ASAN
    __sanitizer_start_switch_fiber(save, bottom, size);
#else
    (void)save, (void)bottom, (void)size;
#endif
}

static void asan_finish(void *save, const void **bottom, size_t *size) {
#ifdef CUEMU_ASAN
    __sanitizer_finish_switch_fiber(save, bottom, size);
#else
    (void)save, (void)bottom, (void)size;
#endif
}

/* From a fiber back to the scheduler (for good when exiting). */
static void yield(fiber *f, bool exiting) {
    block_run *b = t_blk;
    asan_start(exiting ? nullptr : &f->fake, b->sched_bottom, b->sched_size);
    cuemu_switch(&f->sp, b->sched_sp);
    asan_finish(f->fake, nullptr, nullptr);
}

static void fiber_main() {
    block_run *b = t_blk;
    fiber *f = t_cur;
    asan_finish(nullptr, &b->sched_bottom, &b->sched_size);
    b->body(b->arg);
    f->state = DONE;
    b->live--;
    yield(f, true);
    die("a finished thread was resumed");
}

static char *stack_at(int i) {
    char **t_stacks = t_host.stacks;
    if (!t_stacks[i]) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        void *m =
            mmap(NULL, STACK + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) die("no memory for a thread stack");
        mprotect(m, page, PROT_NONE); /* a guard page below: overflow faults */
        t_stacks[i] = (char *)m + page;
    }
    return t_stacks[i];
}

static void fiber_init(fiber *f, int i) {
    f->stack = stack_at(i);
#ifdef CUEMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f->stack, STACK);
#endif
    uintptr_t top = ((uintptr_t)f->stack + STACK) & ~(uintptr_t)15;
    void **ret = (void **)(top - 16); /* 16-aligned: rsp is 8 mod 16 at fiber_main's entry */
    ret[0] = (void *)fiber_main;
    ret[1] = nullptr;
    f->sp = (char *)ret - 6 * sizeof(void *); /* the six callee-saved registers, zero */
    memset(f->sp, 0, 6 * sizeof(void *));
    f->state = READY;
    f->fake = nullptr;
    f->round = -1;
}

static void run_fiber(block_run *b, fiber *f) {
    t_cur = f;
    asan_start(&b->sched_fake, f->stack, STACK);
    cuemu_switch(&b->sched_sp, f->sp);
    asan_finish(b->sched_fake, nullptr, nullptr);
    t_cur = nullptr;
}

/* The lanes of warp w that exist in this block. */
static unsigned warp_lanes(const block_run *b, int w) {
    int n = b->n - 32 * w;
    return n >= 32 ? 0xffffffffu : (1u << n) - 1;
}

/* Releases warp w's lanes waiting at a shuffle or __syncwarp once every lane of their mask has
 * arrived or exited. */
static bool release_warp(block_run *b, int w) {
    unsigned waiting = 0, done = 0, mask = 0;
    bool first = true;
    for (int l = 0; l < 32 && 32 * w + l < b->n; l++) {
        fiber *f = &b->f[32 * w + l];
        if (f->state == DONE) done |= 1u << l;
        if (f->state != AT_WARP) continue;
        if (!first && f->mask != mask)
            die("warp %d: lanes wait at shuffles of different masks (not emulated)", w);
        mask = f->mask, first = false, waiting |= 1u << l;
    }
    if (!waiting) return false;
    mask &= warp_lanes(b, w);
    if ((mask & ~(waiting | done)) != 0) return false;
    b->warp_round[w]++;
    for (int l = 0; l < 32; l++)
        if (waiting >> l & 1) b->f[32 * w + l].state = READY;
    return true;
}

static void report_deadlock(block_run *b) {
    fprintf(stderr, "cuemu: block (%u,%u,%u) of a kernel cannot go on:", b->f[0].c.bid.x,
            b->f[0].c.bid.y, b->f[0].c.bid.z);
    for (int i = 0; i < b->n; i++)
        if (b->f[i].state != DONE)
            fprintf(stderr, " thread %d at %s", i,
                    b->f[i].state == AT_BLOCK ? "__syncthreads" : "a warp barrier");
    fprintf(stderr, " (threads of a block or warp meet different barriers)\n");
    abort();
}

/* $CUEMU_ORDER=reverse: blocks, and a block's threads between barriers, run last to first. A
 * kernel whose results change with it reads what another thread or block writes without a
 * barrier between them: a race on a GPU, invisible in the usual order. */
static bool reverse_order() {
    static int r = -1;
    if (r < 0) {
        const char *v = getenv("CUEMU_ORDER");
        r = v && strcmp(v, "reverse") == 0;
    }
    return r == 1;
}

static void run_block(block_run *b) {
    for (int i = 0; i < b->n; i++) fiber_init(&b->f[i], i);
    b->live = b->n;
    for (int w = 0; w < WARPS; w++) b->warp_round[w] = 0;
    bool rev = reverse_order();
    while (b->live > 0) {
        bool moved = false;
        for (int k = 0; k < b->n; k++) {
            fiber *f = &b->f[rev ? b->n - 1 - k : k];
            if (f->state == READY) run_fiber(b, f), moved = true;
        }
        int at_block = 0;
        for (int i = 0; i < b->n; i++) at_block += b->f[i].state == AT_BLOCK;
        if (at_block && at_block == b->live) {
            for (int i = 0; i < b->n; i++)
                if (b->f[i].state == AT_BLOCK) b->f[i].state = READY;
            moved = true;
        }
        for (int w = 0; w * 32 < b->n; w++) moved |= release_warp(b, w);
        if (!moved && b->live > 0) report_deadlock(b);
    }
}

void sync_block() {
    fiber *f = t_cur;
    if (!f) die("__syncthreads outside a kernel");
    f->state = AT_BLOCK;
    yield(f, false);
}

void sync_warp(unsigned mask) {
    fiber *f = t_cur;
    if (!f) die("__syncwarp outside a kernel");
    f->mask = mask;
    f->state = AT_WARP;
    yield(f, false);
}

uint64_t exchange(unsigned mask, uint64_t bits, int mode, int arg, int width) {
    fiber *f = t_cur;
    block_run *b = t_blk;
    if (!f) die("a shuffle outside a kernel");
    if (width <= 0 || width > 32 || (width & (width - 1))) die("shuffle width %d", width);
    int w = f->warp, round = b->warp_round[w], par = round & 1;
    b->slot[par][w][f->lane] = bits;
    b->slot_round[par][w][f->lane] = round;
    f->mask = mask;
    f->state = AT_WARP;
    yield(f, false);
    int lane = f->lane, seg = lane & ~(width - 1), src = lane;
    if (mode == SHFL_IDX) src = seg + (arg & (width - 1));
    if (mode == SHFL_XOR && ((lane ^ arg) & ~(width - 1)) == seg) src = lane ^ arg;
    if (mode == SHFL_DOWN && (lane & (width - 1)) + arg < width) src = lane + arg;
    if (mode == SHFL_UP && (lane & (width - 1)) >= arg) src = lane - arg;
    if (32 * w + src >= b->n || b->slot_round[par][w][src] != round)
        die("a shuffle of warp %d reads lane %d, which did not take part", w, src);
    return b->slot[par][w][src];
}

bool launch_check(dim3 grid, dim3 block, size_t shmem) {
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    bool ok = threads >= 1 && threads <= MAX_THREADS && block.z <= 64 && grid.x >= 1 &&
              grid.y >= 1 && grid.z >= 1 && grid.x <= 0x7fffffffu && grid.y <= 65535 &&
              grid.z <= 65535 && shmem <= 48 * 1024;
    if (!ok) fail(cudaErrorInvalidConfiguration);
    return ok;
}

/* One kernel at a time in the process: __shared__ arrays are statics. */
static std::mutex g_kernel_mu;

/* $CUEMU_STATS=1: the kernels run and graphs launched, printed when the process exits (how many
 * kernels a step takes is a count, not a time: it holds on a GPU too). */
static std::atomic<long> g_kernels, g_graphs, g_graph_kernels;
static thread_local bool t_in_graph;

static void print_stats() {
    fprintf(stderr, "cuemu: pid %d ran %ld kernels, %ld of them in %ld graph launches\n",
            (int)getpid(), g_kernels.load(), g_graph_kernels.load(), g_graphs.load());
}

void run_grid(dim3 grid, dim3 block, size_t shmem, void (*body)(void *), void *arg) {
    std::lock_guard<std::mutex> l(g_kernel_mu);
    static bool stats = env_long("CUEMU_STATS", 0) != 0 && atexit(print_stats) == 0;
    if (stats) {
        g_kernels++;
        if (t_in_graph) g_graph_kernels++;
    }
    if (!t_host.blk) t_host.blk = new block_run();
    block_run *b = t_host.blk;
    if (t_blk) die("a kernel launched from a kernel");
    t_blk = b;
    b->n = (int)(block.x * block.y * block.z);
    b->body = body;
    b->arg = arg;
    b->shmem.assign(shmem / sizeof(max_align_t) + 1, max_align_t());
    memset(b->shmem.data(), 0xff, b->shmem.size() * sizeof(max_align_t)); /* NaN until written */
    bool rev = reverse_order();
    for (unsigned zi = 0; zi < grid.z; zi++)
        for (unsigned yi = 0; yi < grid.y; yi++)
            for (unsigned xi = 0; xi < grid.x; xi++) {
                unsigned z = rev ? grid.z - 1 - zi : zi, y = rev ? grid.y - 1 - yi : yi,
                         x = rev ? grid.x - 1 - xi : xi;
                int i = 0;
                for (unsigned tz = 0; tz < block.z; tz++)
                    for (unsigned ty = 0; ty < block.y; ty++)
                        for (unsigned tx = 0; tx < block.x; tx++, i++) {
                            fiber *f = &b->f[i];
                            f->c = thread_ctx{{tx, ty, tz}, {x, y, z}, block, grid};
                            f->lane = i & 31;
                            f->warp = i >> 5;
                        }
                run_block(b);
            }
    t_blk = nullptr;
}

/* ---- copies ---- */

struct copy_job {
    void *dst;
    const void *src;
    size_t n;
    int value; /* memset when src is NULL */
};

static void copy_run(void *p) {
    copy_job *j = (copy_job *)p;
    if (j->src)
        memmove(j->dst, j->src, j->n);
    else
        memset(j->dst, j->value, j->n);
}

static void copy_free(void *p) {
    delete (copy_job *)p;
}

static cudaError_t copy_check(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
    bool dd = on_device(dst, n), sd = on_device(src, n);
    switch (kind) {
    case cudaMemcpyHostToDevice: return dd && !sd ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyDeviceToHost: return sd && !dd ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyDeviceToDevice: return dd && sd ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyHostToHost: return !dd && !sd ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyDefault: return cudaSuccess;
    }
    return cudaErrorInvalidMemcpyDirection;
}

} // namespace cuemu

using namespace cuemu;

/* ---- the runtime API ---- */

extern "C" {

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    default: return cudaGetErrorName(e);
    }
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = t_last;
    t_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) {
    return t_last;
}

cudaError_t cudaGetDeviceCount(int *n) {
    *n = (int)env_long("CUEMU_DEVICES", 1);
    return *n > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}

static thread_local int t_device;

cudaError_t cudaSetDevice(int device) {
    int n = 0;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n) return fail(cudaErrorInvalidDevice);
    t_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    *device = t_device;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    lock_t l(g_mu);
    return capture_forbids() ? fail(cudaErrorStreamCaptureUnsupported) : cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    lock_t l(g_mu);
    *total_bytes = mem_limit();
    *free_bytes = mem_limit() - g_used;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device) {
    int n = 0;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuemu %d (the CPU emulator of CUDA)", device);
    p->totalGlobalMem = mem_limit();
    p->multiProcessorCount = 1;
    p->major = 9;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n) {
    lock_t l(g_mu);
    *p = NULL;
    if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
    if (n == 0) return cudaSuccess;
    if (n > mem_limit() - g_used) return fail(cudaErrorMemoryAllocation);
    void *m = NULL;
    if (posix_memalign(&m, 256, n) != 0) return fail(cudaErrorMemoryAllocation);
    memset(m, 0xff, n); /* never written: NaN floats, -1 indices */
#ifdef CUEMU_ASAN
    __lsan_ignore_object(m); /* device memory: CUDA frees it with the process's context */
#endif
    g_allocs[(uintptr_t)m] = n;
    g_used += n;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    lock_t l(g_mu);
    if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
    if (!p) return cudaSuccess;
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end()) return fail(cudaErrorInvalidValue);
    g_used -= it->second;
    g_allocs.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                            cudaStream_t st) {
    lock_t l(g_mu);
    if (n == 0) return cudaSuccess;
    cudaError_t e = copy_check(dst, src, n, kind);
    if (e != cudaSuccess) return fail(e);
    submit(st, copy_run, new copy_job{dst, src, n, 0}, copy_free);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
    lock_t l(g_mu);
    if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
    return cudaMemcpyAsync(dst, src, n, kind, NULL);
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t st) {
    lock_t l(g_mu);
    if (n == 0) return cudaSuccess;
    if (!on_device(dst, n)) return fail(cudaErrorInvalidValue);
    submit(st, copy_run, new copy_job{dst, NULL, n, value}, copy_free);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *dst, int value, size_t n) {
    lock_t l(g_mu);
    if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
    return cudaMemsetAsync(dst, value, n, NULL);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned flags) {
    lock_t l(g_mu);
    (void)flags;
    *st = new CUstream_st();
    g_streams.push_back(*st);
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *st) {
    return cudaStreamCreateWithFlags(st, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t st) {
    lock_t l(g_mu);
    for (size_t i = 0; i < g_streams.size(); i++)
        if (g_streams[i] == st) {
            g_streams.erase(g_streams.begin() + (long)i);
            delete st->graph;
            delete st;
            return cudaSuccess;
        }
    return fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaStreamSynchronize(cudaStream_t st) {
    lock_t l(g_mu);
    (void)st;
    return capture_forbids() ? fail(cudaErrorStreamCaptureUnsupported) : cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t st) {
    lock_t l(g_mu);
    if (stream_of(st)->capturing) {
        stream_of(st)->invalidated = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *ev) {
    *ev = new CUevent_st();
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t ev) {
    delete ev;
    return cudaSuccess;
}

static void event_run(void *p) {
    (*(cudaEvent_t *)p)->ms = now_ms();
}

static void event_free(void *p) {
    delete (cudaEvent_t *)p;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st) {
    if (!ev) return fail(cudaErrorInvalidResourceHandle);
    submit(st, event_run, new cudaEvent_t(ev), event_free);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev) {
    return ev ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!start || !end) return fail(cudaErrorInvalidResourceHandle);
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t st, enum cudaStreamCaptureMode mode) {
    lock_t l(g_mu);
    CUstream_st *s = stream_of(st);
    if (!st || s->capturing) return fail(cudaErrorStreamCaptureUnsupported);
    s->capturing = true;
    s->invalidated = false;
    s->mode = mode;
    s->owner = std::this_thread::get_id();
    s->graph = new CUgraph_st();
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *graph) {
    lock_t l(g_mu);
    CUstream_st *s = stream_of(st);
    *graph = NULL;
    if (!s->capturing) return fail(cudaErrorInvalidValue);
    s->capturing = false;
    CUgraph_st *g = s->graph;
    s->graph = nullptr;
    if (s->invalidated) {
        delete g;
        return fail(cudaErrorStreamCaptureInvalidated);
    }
    *graph = g;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags) {
    (void)flags;
    if (!graph) return fail(cudaErrorInvalidValue);
    *exec = new CUgraphExec_st{graph->nodes};
    return cudaSuccess;
}

static void graph_run(void *p) {
    g_graphs++;
    t_in_graph = true;
    for (const node &n : (*(cudaGraphExec_t *)p)->nodes) n.op(n.arg.get());
    t_in_graph = false;
}

static void graph_free(void *p) {
    delete (cudaGraphExec_t *)p;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t st) {
    if (!exec) return fail(cudaErrorInvalidValue);
    submit(st, graph_run, new cudaGraphExec_t(exec), graph_free);
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete graph;
    return cudaSuccess;
}

} /* extern "C" */

/* ---- cuBLAS ---- */

struct cublasContext {
    cudaStream_t st;
};

namespace cuemu {

struct gemm_job {
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const void *a, *b;
    cudaDataType at, bt;
    float *c;
};

static float elem(const void *p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    if (t == CUDA_R_16F) return __half2float(((const __half *)p)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

/* Rows [r0, r0 + nr) of op(X) (rows x k, X column-major with leading dimension ld) as fp32,
 * row-major. */
static void op_rows(float *out, const void *x, cudaDataType t, cublasOperation_t op, int ld, int r0,
                    int nr, int k) {
    for (int r = 0; r < nr; r++)
        for (int l = 0; l < k; l++)
            out[(size_t)r * k + l] = op == CUBLAS_OP_N
                                         ? elem(x, t, (size_t)(r0 + r) + (size_t)l * ld)
                                         : elem(x, t, (size_t)l + (size_t)(r0 + r) * ld);
}

static void gemm_run(void *p) {
    const gemm_job *j = (const gemm_job *)p;
    enum { CHUNK = 64 };
    std::vector<float> a((size_t)CHUNK * j->k), bt((size_t)j->n * j->k);
    /* op(B) is k x n: its columns are rows of op(B)^T, which is op'(B) with the other op */
    op_rows(bt.data(), j->b, j->bt, j->tb == CUBLAS_OP_N ? CUBLAS_OP_T : CUBLAS_OP_N, j->ldb, 0,
            j->n, j->k);
    for (int i0 = 0; i0 < j->m; i0 += CHUNK) {
        int ni = j->m - i0 < CHUNK ? j->m - i0 : CHUNK;
        op_rows(a.data(), j->a, j->at, j->ta, j->lda, i0, ni, j->k);
        for (int col = 0; col < j->n; col++)
            for (int i = 0; i < ni; i++) {
                const float *x = &a[(size_t)i * j->k], *y = &bt[(size_t)col * j->k];
                float s[8] = {0};
                int l = 0;
                for (; l + 8 <= j->k; l += 8)
                    for (int u = 0; u < 8; u++) s[u] += x[l + u] * y[l + u];
                for (; l < j->k; l++) s[0] += x[l] * y[l];
                float dot = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
                float *c = &j->c[(size_t)(i0 + i) + (size_t)col * j->ldc];
                *c = j->alpha * dot + (j->beta != 0.0f ? j->beta * *c : 0.0f);
            }
    }
}

static void gemm_free(void *p) {
    delete (gemm_job *)p;
}

} // namespace cuemu

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new cublasContext{NULL};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t st) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->st = st;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes) {
    (void)ws, (void)bytes;
    return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

static cublasStatus_t gemm_submit(cublasHandle_t h, const gemm_job &j) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (j.m < 0 || j.n < 0 || j.k < 0 || j.ldc < (j.m > 1 ? j.m : 1) ||
        j.lda < ((j.ta == CUBLAS_OP_N ? j.m : j.k) > 1 ? (j.ta == CUBLAS_OP_N ? j.m : j.k) : 1) ||
        j.ldb < ((j.tb == CUBLAS_OP_N ? j.k : j.n) > 1 ? (j.tb == CUBLAS_OP_N ? j.k : j.n) : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (j.m == 0 || j.n == 0) return CUBLAS_STATUS_SUCCESS;
    submit(h->st, gemm_run, new gemm_job(j), gemm_free);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *a, cudaDataType at,
                            int lda, const void *b, cudaDataType bt, int ldb, const void *beta,
                            void *c, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo) {
    (void)algo;
    if (at != bt || (at != CUDA_R_16F && at != CUDA_R_16BF && at != CUDA_R_32F) ||
        ct != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F || ta == CUBLAS_OP_C || tb == CUBLAS_OP_C)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return gemm_submit(h, gemm_job{ta, tb, m, n, k, lda, ldb, ldc, *(const float *)alpha,
                                   *(const float *)beta, a, b, at, bt, (float *)c});
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *a, int lda,
                           const float *b, int ldb, const float *beta, float *c, int ldc) {
    if (ta == CUBLAS_OP_C || tb == CUBLAS_OP_C) return CUBLAS_STATUS_NOT_SUPPORTED;
    return gemm_submit(h, gemm_job{ta, tb, m, n, k, lda, ldb, ldc, *alpha, *beta, a, b, CUDA_R_32F,
                                   CUDA_R_32F, c});
}

} /* extern "C" */

/* ---- NCCL ---- */

namespace cuemu {

enum { NCCL_MAX_RANKS = 64, NCCL_CHUNK = 1 << 18 }; /* floats per rank per round */
static const uint64_t NCCL_MAGIC = 0x6c63636e756d6563ull;

/* The shared segment: this header, then a slot of NCCL_CHUNK floats per rank. */
struct nccl_shm {
    std::atomic<uint64_t> magic;
    std::atomic<int> joined, aborted;
    std::atomic<unsigned> arrive, gen; /* the barrier: arrivals, then a new generation */
    std::atomic<int> pid[NCCL_MAX_RANKS];
};

static size_t nccl_bytes(int nranks) {
    return sizeof(nccl_shm) + (size_t)nranks * NCCL_CHUNK * sizeof(float);
}

static float *nccl_slot(nccl_shm *h, int r) {
    return (float *)(h + 1) + (size_t)r * NCCL_CHUNK;
}

/* Whether process pid is gone (or a zombie: dead, not yet reaped). */
static bool pid_gone(int pid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return kill(pid, 0) != 0 && errno == ESRCH;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p && (p[2] == 'Z' || p[2] == 'X');
}

} // namespace cuemu

struct ncclComm {
    cuemu::nccl_shm *h;
    int rank, nranks;
    std::atomic<int> async; /* an ncclResult_t */
};

namespace cuemu {

/* Every rank's arrival; ncclRemoteError when a peer died or aborted, ncclSystemError after
 * $CUEMU_NCCL_TIMEOUT_MS (default 300000). */
static ncclResult_t nccl_barrier(ncclComm *c) {
    nccl_shm *h = c->h;
    unsigned g = h->gen.load(std::memory_order_acquire);
    if (h->arrive.fetch_add(1, std::memory_order_acq_rel) == (unsigned)c->nranks - 1) {
        h->arrive.store(0, std::memory_order_relaxed);
        h->gen.fetch_add(1, std::memory_order_release);
        return ncclSuccess;
    }
    double t0 = now_ms(), last_check = t0;
    long timeout = env_long("CUEMU_NCCL_TIMEOUT_MS", 300000);
    for (unsigned spins = 0;; spins++) {
        if (h->gen.load(std::memory_order_acquire) != g) return ncclSuccess;
        if (h->aborted.load(std::memory_order_acquire)) return ncclRemoteError;
        if (spins > 1000) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
            double t = now_ms();
            if (t - last_check > 20) {
                last_check = t;
                for (int r = 0; r < c->nranks; r++) {
                    int pid = h->pid[r].load(std::memory_order_acquire);
                    if (pid && pid_gone(pid)) return ncclRemoteError;
                }
            }
            if (t - t0 > timeout) return ncclSystemError;
        }
    }
}

struct allreduce_job {
    ncclComm *c;
    const float *send;
    float *recv;
    size_t count;
};

static void allreduce_run(void *p) {
    const allreduce_job *j = (const allreduce_job *)p;
    ncclComm *c = j->c;
    if (c->async.load() != ncclSuccess) return;
    if (c->nranks == 1) {
        memmove(j->recv, j->send, j->count * sizeof(float));
        return;
    }
    std::vector<float> sum(NCCL_CHUNK);
    for (size_t off = 0; off < j->count; off += NCCL_CHUNK) {
        size_t n = j->count - off < NCCL_CHUNK ? j->count - off : NCCL_CHUNK;
        memcpy(nccl_slot(c->h, c->rank), j->send + off, n * sizeof(float));
        ncclResult_t r = nccl_barrier(c);
        if (r == ncclSuccess) {
            for (size_t i = 0; i < n; i++) sum[i] = nccl_slot(c->h, 0)[i];
            for (int q = 1; q < c->nranks; q++) {
                const float *s = nccl_slot(c->h, q);
                for (size_t i = 0; i < n; i++) sum[i] += s[i];
            }
            r = nccl_barrier(c); /* every rank has read every slot before they are rewritten */
        }
        if (r != ncclSuccess) {
            c->async.store(r);
            return;
        }
        memcpy(j->recv + off, sum.data(), n * sizeof(float));
    }
}

static void allreduce_free(void *p) {
    delete (allreduce_job *)p;
}

} // namespace cuemu

extern "C" {

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error (timed out waiting for a peer)";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    }
    return "unknown result code";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "/cuemu-nccl-%d-%lx", (int)getpid(),
             (unsigned long)ts.tv_nsec ^ ((unsigned long)ts.tv_sec << 20));
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    *comm = NULL;
    if (nranks < 1 || nranks > NCCL_MAX_RANKS || rank < 0 || rank >= nranks)
        return ncclInvalidArgument;
    if (id.internal[0] != '/' || !memchr(id.internal, 0, sizeof id.internal))
        return ncclInvalidArgument;
    ncclComm *c = new ncclComm();
    c->rank = rank;
    c->nranks = nranks;
    c->async = ncclSuccess;
    size_t bytes = nccl_bytes(nranks);
    int fd = shm_open(id.internal, O_CREAT | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0) {
        if (fd >= 0) close(fd);
        delete c;
        return ncclSystemError;
    }
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        delete c;
        return ncclSystemError;
    }
    c->h = (nccl_shm *)m;
    c->h->pid[rank].store((int)getpid(), std::memory_order_release);
    c->h->joined.fetch_add(1, std::memory_order_acq_rel);
    ncclResult_t r = nccl_barrier(c); /* all have opened it: the name can go */
    if (rank == 0) shm_unlink(id.internal);
    if (r != ncclSuccess) {
        munmap(m, bytes);
        delete c;
        return r;
    }
    c->h->magic.store(NCCL_MAGIC);
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t st) {
    if (!comm || type != ncclFloat32 || op != ncclSum) return ncclInvalidArgument;
    submit(st, allreduce_run, new allreduce_job{comm, (const float *)send, (float *)recv, count},
           allreduce_free);
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async_error) {
    if (!comm) return ncclInvalidArgument;
    *async_error = (ncclResult_t)comm->async.load();
    return ncclSuccess;
}

static ncclResult_t comm_free(ncclComm_t comm, bool abort_peers) {
    if (!comm) return ncclInvalidArgument;
    if (abort_peers) comm->h->aborted.store(1, std::memory_order_release);
    munmap(comm->h, nccl_bytes(comm->nranks));
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
    return comm_free(comm, true);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    return comm_free(comm, false);
}

} /* extern "C" */
