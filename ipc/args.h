/*
 * args.h — the engine's arguments: one struct, one set of defaults, one option table with
 * vLLM's flag names, one parser and one argv writer. `lantern serve`, `generate` and `batch`
 * parse the user's flags with it, liblantern writes them into the engine's argv with it, the
 * engine parses them back and writes the same argv for every worker, and each worker parses
 * them once more: every flag reaches the process that uses it by argument, never by environment.
 *
 * Thread safety: plain data and pure functions. Not on the hot path.
 */
#ifndef LT_IPC_ARGS_H
#define LT_IPC_ARGS_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* ---- defaults ---- */

#define IPC_DEF_TENSOR_PARALLEL_SIZE 1
#define IPC_DEF_MAX_NUM_SEQS         64
#define IPC_DEF_MAX_BATCHED_TOKENS   2048
#define IPC_DEF_BLOCK_SIZE           16
#define IPC_DEF_MAX_STEP_MS          200
#define IPC_DEF_KV_CACHE_MEMORY      (1ll << 30)
#define IPC_MAX_TENSOR_PARALLEL      64

typedef struct ipc_engine_args {
    const char *model;          /* GGUF file or HF directory (borrowed); NULL: the default model */
    int tensor_parallel_size;   /* worker processes, each holding 1/N of the model */
    int max_num_seqs;           /* sequences per engine step at most */
    int max_num_batched_tokens; /* tokens per engine step at most */
    int max_step_ms;   /* while sequences decode, a step's prefill is cut to fit this (0: off) */
    int max_model_len; /* 0: the model's own context */
    int block_size;    /* KV-cache block size, tokens */
    bool enable_prefix_caching;
    long long kv_cache_memory;    /* bytes per worker (CPU backend) */
    int kv_cache_dtype;           /* IPC_KV_DTYPE_*: element type of the KV cache */
    float gpu_memory_utilization; /* 0: not given; the CUDA backend's KV sizing */
    int threads;                  /* compute threads per worker; 0: cores / tensor_parallel_size */
    int device;                   /* IPC_DEVICE_*: the backend each worker runs on */
    bool batch_invariant;         /* results independent of the batch (quantized kernels only) */
    bool enforce_eager;           /* CUDA: no graphs, every step kernel by kernel */
    /* tracing (telemetry/): where every process sends its spans (NULL: OTEL_EXPORTER_OTLP_*
     * environment, else no export), which step-level spans to record, and the e2e latency past
     * which a request's spans are kept whatever the sampler said */
    const char *otlp_traces_endpoint;
    int detailed_traces; /* IPC_TRACE_* bits */
    int trace_slow_threshold_ms;
    /* health: a step in flight longer than this (seconds) means a hung engine or worker: the
     * engine dumps its state, fails every request with an error and exits (0: off) */
    int watchdog_timeout_s;
    const char *dump_dir; /* SIGUSR1 also writes one JSON document per process here (NULL: no) */
} ipc_engine_args_t;

#define IPC_DEF_WATCHDOG_TIMEOUT_S 300

/* --kv-cache-dtype (vLLM's name): auto is the backend's choice (fp16 on the CPU: half the
 * memory of fp32, and what llama.cpp keeps). */
enum { IPC_KV_DTYPE_AUTO, IPC_KV_DTYPE_FP32, IPC_KV_DTYPE_FP16, IPC_KV_DTYPE_BF16 };
extern const char *const ipc_kv_dtype_names[4]; /* "auto", "fp32", "fp16", "bf16" */

/* --device: auto is CUDA when a CUDA device is visible (worker rank r on device r of
 * CUDA_VISIBLE_DEVICES), else the CPU; cuda fails at start-up without one. */
enum { IPC_DEVICE_AUTO, IPC_DEVICE_CUDA, IPC_DEVICE_CPU };
extern const char *const ipc_device_names[3]; /* "auto", "cuda", "cpu" */

#define IPC_TRACE_ENGINE 1 /* one span per scheduler step, linked to its requests */
#define IPC_TRACE_WORKER 2 /* per-rank worker spans under each step span */

void ipc_engine_args_defaults(ipc_engine_args_t *a);

/* Cross-field checks and the resolution of automatic values (threads). LT_ERR_INVAL with the
 * flag named in err. */
int ipc_engine_args_resolve(ipc_engine_args_t *a, char *err);

/* ---- command line ---- */

/* getopt_long `val` of the engine options: IPC_ENGINE_OPT + index (out of every short option's
 * and every command's own range). */
#define IPC_ENGINE_OPT 0x1000

/* Builds a getopt_long table in out (cap entries): the command's own options (n_own, no
 * terminator needed), then every engine option, then the terminator. Returns the number of
 * entries before the terminator, or -1 when cap is too small. */
int ipc_engine_opts_table(const struct option *own, int n_own, struct option *out, int cap);

/* Applies one parsed option: 0 when it was an engine option with a valid value, 1 when `val` is
 * not an engine option (the caller's own), LT_ERR_INVAL with "--flag: why" in err. */
int ipc_engine_args_set(ipc_engine_args_t *a, int val, const char *arg, char *err);

/* getopt_long over a table from ipc_engine_opts_table that applies the engine options to a
 * itself: returns the next option that is the caller's own (its val; '?' for an unknown one,
 * which getopt has reported), -1 at the end, or IPC_OPT_BAD after printing "<prog>: --flag: why"
 * for an engine option with a bad value. Set optind = 1 before the first call. */
#define IPC_OPT_BAD (-2)
int ipc_engine_getopt(int argc, char **argv, const struct option *opts, ipc_engine_args_t *a,
                      const char *prog);

/* The engine options, one per line with their defaults, for a command's --help. */
void ipc_engine_args_help(FILE *f);

/* ---- argv for a child process ---- */

#define IPC_ARGV_MAX 96

typedef struct ipc_argv {
    int argc;
    char *argv[IPC_ARGV_MAX + 1]; /* NULL-terminated */
    char buf[8192];
    size_t used;
} ipc_argv_t;

/* Appends one argument (copied). LT_ERR_RANGE when the argv is full. */
int ipc_argv_add(ipc_argv_t *av, const char *s);
/* Appends "--name" and a formatted value. */
int ipc_argv_addf(ipc_argv_t *av, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Appends every field of a as flags, so the child resolves nothing again. */
int ipc_engine_args_to_argv(const ipc_engine_args_t *a, ipc_argv_t *av);

/* The arguments as a JSON object (cJSON *, the caller's), for the JSON dumps. */
struct cJSON;
struct cJSON *ipc_engine_args_json(const ipc_engine_args_t *a);

/* "tensor_parallel_size=2 max_num_seqs=64 ..." for logs and dumps. */
void ipc_engine_args_str(const ipc_engine_args_t *a, char *buf, size_t n);

#endif
