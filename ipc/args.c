/*
 * args.c — the engine's arguments (args.h): defaults, the option table, parsing, argv writing.
 */
#include "args.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "lt.h"

void ipc_engine_args_defaults(ipc_engine_args_t *a) {
    memset(a, 0, sizeof *a);
    a->tensor_parallel_size = IPC_DEF_TENSOR_PARALLEL_SIZE;
    a->max_num_seqs = IPC_DEF_MAX_NUM_SEQS;
    a->max_num_batched_tokens = IPC_DEF_MAX_BATCHED_TOKENS;
    a->max_step_ms = IPC_DEF_MAX_STEP_MS;
    a->block_size = IPC_DEF_BLOCK_SIZE;
    a->enable_prefix_caching = true;
    a->kv_cache_memory = IPC_DEF_KV_CACHE_MEMORY;
    a->watchdog_timeout_s = IPC_DEF_WATCHDOG_TIMEOUT_S;
}

int ipc_engine_args_resolve(ipc_engine_args_t *a, char *err) {
    if (a->tensor_parallel_size < 1 || a->tensor_parallel_size > IPC_MAX_TENSOR_PARALLEL)
        return lt_errf(err, LT_ERR_INVAL, "--tensor-parallel-size must be 1..%d",
                       IPC_MAX_TENSOR_PARALLEL);
    if (a->max_num_seqs < 1 || a->max_num_batched_tokens < 1 || a->block_size < 1 ||
        a->max_model_len < 0 || a->kv_cache_memory < 1 || a->threads < 0)
        return lt_errf(err, LT_ERR_INVAL, "invalid engine arguments");
    if (a->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        a->threads = n > a->tensor_parallel_size ? (int)(n / a->tensor_parallel_size) : 1;
    }
    return LT_OK;
}

/* ---- options ---- */

const char *const ipc_kv_dtype_names[4] = {"auto", "fp32", "fp16", "bf16"};
const char *const ipc_device_names[3] = {"auto", "cuda", "cpu"};

enum {
    O_MODEL,
    O_TP,
    O_SEQS,
    O_BATCHED,
    O_STEP_MS,
    O_LEN,
    O_BLOCK,
    O_PREFIX,
    O_NO_PREFIX,
    O_KV_MEM,
    O_KV_DTYPE,
    O_GPU_MEM,
    O_THREADS,
    O_DEVICE,
    O_BATCH_INVARIANT,
    O_ENFORCE_EAGER,
    O_OTLP,
    O_DETAILED,
    O_SLOW,
    O_WATCHDOG,
    O_DUMP_DIR,
    O_COUNT
};

#define OPT(name, has, id)                                                                         \
    { name, has, 0, IPC_ENGINE_OPT + id }
static const struct option k_opts[O_COUNT] = {
    OPT("model", required_argument, O_MODEL),
    OPT("tensor-parallel-size", required_argument, O_TP),
    OPT("max-num-seqs", required_argument, O_SEQS),
    OPT("max-num-batched-tokens", required_argument, O_BATCHED),
    OPT("max-step-ms", required_argument, O_STEP_MS),
    OPT("max-model-len", required_argument, O_LEN),
    OPT("block-size", required_argument, O_BLOCK),
    OPT("enable-prefix-caching", no_argument, O_PREFIX),
    OPT("no-enable-prefix-caching", no_argument, O_NO_PREFIX),
    OPT("kv-cache-memory", required_argument, O_KV_MEM),
    OPT("kv-cache-dtype", required_argument, O_KV_DTYPE),
    OPT("gpu-memory-utilization", required_argument, O_GPU_MEM),
    OPT("threads", required_argument, O_THREADS),
    OPT("device", required_argument, O_DEVICE),
    OPT("batch-invariant", no_argument, O_BATCH_INVARIANT),
    OPT("enforce-eager", no_argument, O_ENFORCE_EAGER),
    OPT("otlp-traces-endpoint", required_argument, O_OTLP),
    OPT("collect-detailed-traces", required_argument, O_DETAILED),
    OPT("trace-slow-threshold-ms", required_argument, O_SLOW),
    OPT("watchdog-timeout", required_argument, O_WATCHDOG),
    OPT("dump-dir", required_argument, O_DUMP_DIR),
};

int ipc_engine_opts_table(const struct option *own, int n_own, struct option *out, int cap) {
    if (n_own + O_COUNT + 1 > cap) return -1;
    memcpy(out, own, sizeof *own * (size_t)n_own);
    memcpy(out + n_own, k_opts, sizeof k_opts);
    memset(&out[n_own + O_COUNT], 0, sizeof *out);
    return n_own + O_COUNT;
}

/* *out = the index of arg among names[0..n-1]; false (and *out untouched) if it is none. */
static bool pick_name(const char *arg, const char *const *names, int n, int *out) {
    for (int i = 0; i < n; i++)
        if (strcmp(arg, names[i]) == 0) {
            *out = i;
            return true;
        }
    return false;
}

int ipc_engine_args_set(ipc_engine_args_t *a, int val, const char *arg, char *err) {
    int id = val - IPC_ENGINE_OPT;
    if (id < 0 || id >= O_COUNT) return 1;
    long long v = 0;
    bool ok = true;
    const char *want = NULL;
    switch (id) {
    case O_MODEL: a->model = arg; break;
    case O_TP:
        ok = lt_parse_long(arg, 1, IPC_MAX_TENSOR_PARALLEL, &v);
        a->tensor_parallel_size = (int)v;
        want = "1..64";
        break;
    case O_SEQS:
        ok = lt_parse_long(arg, 1, 4096, &v);
        a->max_num_seqs = (int)v;
        want = "1..4096";
        break;
    case O_BATCHED:
        ok = lt_parse_long(arg, 1, 1 << 24, &v);
        a->max_num_batched_tokens = (int)v;
        want = "a positive number of tokens";
        break;
    case O_STEP_MS:
        ok = lt_parse_long(arg, 0, 3600 * 1000, &v);
        a->max_step_ms = (int)v;
        want = "milliseconds, 0..3600000 (0: off)";
        break;
    case O_LEN:
        ok = lt_parse_long(arg, 0, 1 << 24, &v);
        a->max_model_len = (int)v;
        want = "a number of tokens (0: the model's)";
        break;
    case O_BLOCK:
        ok = lt_parse_long(arg, 1, 1024, &v);
        a->block_size = (int)v;
        want = "1..1024";
        break;
    case O_PREFIX: a->enable_prefix_caching = true; break;
    case O_NO_PREFIX: a->enable_prefix_caching = false; break;
    case O_KV_MEM:
        ok = lt_parse_size(arg, &a->kv_cache_memory);
        want = "a size in bytes, K/M/G suffixes";
        break;
    case O_KV_DTYPE:
        ok = pick_name(arg, ipc_kv_dtype_names, 4, &a->kv_cache_dtype);
        want = "auto, fp32, fp16 or bf16";
        break;
    case O_GPU_MEM: {
        double f = 0;
        ok = lt_parse_double(arg, 1e-6, 1, &f);
        a->gpu_memory_utilization = (float)f;
        want = "a fraction in (0, 1]";
        break;
    }
    case O_THREADS:
        ok = lt_parse_long(arg, 1, 1024, &v);
        a->threads = (int)v;
        want = "1..1024";
        break;
    case O_DEVICE:
        ok = pick_name(arg, ipc_device_names, 3, &a->device);
        want = "auto, cuda or cpu";
        break;
    case O_BATCH_INVARIANT: a->batch_invariant = true; break;
    case O_ENFORCE_EAGER: a->enforce_eager = true; break;
    case O_OTLP:
        ok = *arg != '\0';
        a->otlp_traces_endpoint = arg;
        want = "a URL";
        break;
    case O_DETAILED: /* vLLM's values, comma-separated */
        a->detailed_traces = 0;
        for (const char *p = arg; ok && *p;) {
            size_t n = strcspn(p, ",");
            if (n == 6 && strncmp(p, "engine", 6) == 0)
                a->detailed_traces |= IPC_TRACE_ENGINE;
            else if (n == 6 && strncmp(p, "worker", 6) == 0)
                a->detailed_traces |= IPC_TRACE_ENGINE | IPC_TRACE_WORKER;
            else if (n == 3 && strncmp(p, "all", 3) == 0)
                a->detailed_traces |= IPC_TRACE_ENGINE | IPC_TRACE_WORKER;
            else
                ok = false;
            p += n + (p[n] == ',');
        }
        want = "engine, worker or all";
        break;
    case O_SLOW:
        ok = lt_parse_long(arg, 0, 1ll << 31, &v);
        a->trace_slow_threshold_ms = (int)v;
        want = "milliseconds (0: off)";
        break;
    case O_WATCHDOG:
        ok = lt_parse_long(arg, 0, 86400, &v);
        a->watchdog_timeout_s = (int)v;
        want = "seconds, 0..86400 (0: off)";
        break;
    case O_DUMP_DIR:
        ok = *arg != '\0';
        a->dump_dir = arg;
        want = "a directory";
        break;
    }
    if (!ok)
        return lt_errf(err, LT_ERR_INVAL, "--%s: invalid value '%s' (want %s)", k_opts[id].name,
                       arg, want);
    return LT_OK;
}

int ipc_engine_getopt(int argc, char **argv, const struct option *opts, ipc_engine_args_t *a,
                      const char *prog) {
    char err[LT_ERR_LEN];
    for (;;) {
        int o = getopt_long(argc, argv, "", opts, NULL);
        if (o == -1) return -1;
        int rc = ipc_engine_args_set(a, o, optarg, err);
        if (rc == 1) return o;
        if (rc < 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            return IPC_OPT_BAD;
        }
    }
}

void ipc_engine_args_help(FILE *f) {
    fprintf(
        f,
        "engine options (vLLM's names):\n"
        "  --model PATH                   GGUF file or Hugging Face directory (default: the\n"
        "                                 default model, SmolLM2-135M-Instruct Q4_1)\n"
        "  --tensor-parallel-size N       worker processes, each holding 1/N of the model (%d)\n"
        "  --max-model-len N              context length (0: the model's)\n"
        "  --max-num-seqs N               sequences per engine step (%d)\n"
        "  --max-num-batched-tokens N     tokens per engine step (%d)\n"
        "  --max-step-ms MS               while sequences decode, prefill only as many tokens as\n"
        "                                 a step-time model fitted to the last steps says fit in\n"
        "                                 MS beside them, so arrivals cannot stall every stream;\n"
        "                                 longer time to first token under load (%d; 0: off)\n"
        "  --block-size N                 KV-cache block size in tokens (%d)\n"
        "  --enable-prefix-caching        reuse cached KV blocks of shared prefixes (default)\n"
        "  --no-enable-prefix-caching     turn it off\n"
        "  --kv-cache-memory BYTES        KV-cache memory per worker, K/M/G suffixes (1G)\n"
        "  --kv-cache-dtype T             auto, fp32, fp16 or bf16: the KV cache's element type\n"
        "                                 (auto: fp16 on the CPU)\n"
        "  --gpu-memory-utilization F     CUDA workers: the share of the GPU's memory to fill;\n"
        "                                 the KV cache takes what the model and a profiling\n"
        "                                 step at the largest batch leave (not given: the KV\n"
        "                                 cache is --kv-cache-memory; CPU workers refuse it)\n"
        "  --threads N                    compute threads per worker (all cores / N workers)\n"
        "  --device D                     auto, cuda or cpu: the workers' backend (auto: CUDA\n"
        "                                 when a device is visible, worker rank r on device r)\n"
        "  --batch-invariant              accepted for compatibility: a request's tokens never\n"
        "                                 depend on what it is batched with\n"
        "  --enforce-eager                CUDA workers: run every step kernel by kernel, no\n"
        "                                 CUDA graphs (by default a decode step shape of up to\n"
        "                                 32 tokens is recorded on its second run, checked\n"
        "                                 against it, and replayed after)\n"
        "\n"
        "observability options:\n"
        "  --otlp-traces-endpoint URL     export spans of every process over OTLP (gRPC unless\n"
        "                                 OTEL_EXPORTER_OTLP_PROTOCOL says http/protobuf; the\n"
        "                                 other OTEL_EXPORTER_OTLP_* and OTEL_TRACES_SAMPLER too)\n"
        "  --collect-detailed-traces L    engine, worker or all: step spans in the engine and\n"
        "                                 worker spans too\n"
        "  --trace-slow-threshold-ms MS   keep every request slower than MS even when the\n"
        "                                 sampler dropped it (0: off)\n"
        "  --watchdog-timeout S           a step in flight longer than S seconds marks the engine\n"
        "                                 stalled, dumps, fails its requests and exits (%d; 0: "
        "off)\n"
        "  --dump-dir DIR                 on SIGUSR1 every process also writes its state as JSON\n"
        "                                 into DIR\n",
        IPC_DEF_TENSOR_PARALLEL_SIZE, IPC_DEF_MAX_NUM_SEQS, IPC_DEF_MAX_BATCHED_TOKENS,
        IPC_DEF_MAX_STEP_MS, IPC_DEF_BLOCK_SIZE, IPC_DEF_WATCHDOG_TIMEOUT_S);
}

/* ---- argv ---- */

int ipc_argv_add(ipc_argv_t *av, const char *s) {
    size_t n = strlen(s) + 1;
    if (av->argc >= IPC_ARGV_MAX || av->used + n > sizeof av->buf) return LT_ERR_RANGE;
    char *p = av->buf + av->used;
    memcpy(p, s, n);
    av->used += n;
    av->argv[av->argc++] = p;
    av->argv[av->argc] = NULL;
    return LT_OK;
}

int ipc_argv_addf(ipc_argv_t *av, const char *name, const char *fmt, ...) {
    char flag[64], val[4200];
    snprintf(flag, sizeof flag, "--%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof val, fmt, ap);
    va_end(ap);
    int rc = ipc_argv_add(av, flag);
    return rc ? rc : ipc_argv_add(av, val);
}

int ipc_engine_args_to_argv(const ipc_engine_args_t *a, ipc_argv_t *av) {
    int rc = 0;
    if (a->model) rc |= ipc_argv_addf(av, "model", "%s", a->model);
    rc |= ipc_argv_addf(av, "tensor-parallel-size", "%d", a->tensor_parallel_size);
    rc |= ipc_argv_addf(av, "max-num-seqs", "%d", a->max_num_seqs);
    rc |= ipc_argv_addf(av, "max-num-batched-tokens", "%d", a->max_num_batched_tokens);
    rc |= ipc_argv_addf(av, "max-step-ms", "%d", a->max_step_ms);
    rc |= ipc_argv_addf(av, "max-model-len", "%d", a->max_model_len);
    rc |= ipc_argv_addf(av, "block-size", "%d", a->block_size);
    rc |= ipc_argv_add(av, a->enable_prefix_caching ? "--enable-prefix-caching"
                                                    : "--no-enable-prefix-caching");
    rc |= ipc_argv_addf(av, "kv-cache-memory", "%lld", a->kv_cache_memory);
    rc |= ipc_argv_addf(av, "kv-cache-dtype", "%s", ipc_kv_dtype_names[a->kv_cache_dtype]);
    if (a->gpu_memory_utilization > 0)
        rc |= ipc_argv_addf(av, "gpu-memory-utilization", "%.9g", a->gpu_memory_utilization);
    rc |= ipc_argv_addf(av, "threads", "%d", a->threads);
    rc |= ipc_argv_addf(av, "device", "%s", ipc_device_names[a->device]);
    if (a->batch_invariant) rc |= ipc_argv_add(av, "--batch-invariant");
    if (a->enforce_eager) rc |= ipc_argv_add(av, "--enforce-eager");
    if (a->otlp_traces_endpoint)
        rc |= ipc_argv_addf(av, "otlp-traces-endpoint", "%s", a->otlp_traces_endpoint);
    if (a->detailed_traces)
        rc |= ipc_argv_addf(av, "collect-detailed-traces", "%s",
                            a->detailed_traces & IPC_TRACE_WORKER ? "all" : "engine");
    if (a->trace_slow_threshold_ms)
        rc |= ipc_argv_addf(av, "trace-slow-threshold-ms", "%d", a->trace_slow_threshold_ms);
    rc |= ipc_argv_addf(av, "watchdog-timeout", "%d", a->watchdog_timeout_s);
    if (a->dump_dir) rc |= ipc_argv_addf(av, "dump-dir", "%s", a->dump_dir);
    return rc ? LT_ERR_RANGE : LT_OK;
}

void ipc_engine_args_str(const ipc_engine_args_t *a, char *buf, size_t n) {
    snprintf(buf, n,
             "tensor_parallel_size=%d max_num_seqs=%d max_num_batched_tokens=%d max_step_ms=%d "
             "max_model_len=%d "
             "block_size=%d enable_prefix_caching=%d kv_cache_memory=%lld "
             "gpu_memory_utilization=%g threads=%d batch_invariant=%d enforce_eager=%d "
             "otlp_traces_endpoint=%s "
             "detailed_traces=%d trace_slow_threshold_ms=%d kv_cache_dtype=%s device=%s",
             a->tensor_parallel_size, a->max_num_seqs, a->max_num_batched_tokens, a->max_step_ms,
             a->max_model_len, a->block_size, a->enable_prefix_caching, a->kv_cache_memory,
             a->gpu_memory_utilization, a->threads, a->batch_invariant, a->enforce_eager,
             a->otlp_traces_endpoint ? a->otlp_traces_endpoint : "-", a->detailed_traces,
             a->trace_slow_threshold_ms, ipc_kv_dtype_names[a->kv_cache_dtype],
             ipc_device_names[a->device]);
}

struct cJSON *ipc_engine_args_json(const ipc_engine_args_t *a) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", a->model ? a->model : "");
    cJSON_AddNumberToObject(o, "tensor_parallel_size", a->tensor_parallel_size);
    cJSON_AddNumberToObject(o, "max_num_seqs", a->max_num_seqs);
    cJSON_AddNumberToObject(o, "max_num_batched_tokens", a->max_num_batched_tokens);
    cJSON_AddNumberToObject(o, "max_step_ms", a->max_step_ms);
    cJSON_AddNumberToObject(o, "max_model_len", a->max_model_len);
    cJSON_AddNumberToObject(o, "block_size", a->block_size);
    cJSON_AddBoolToObject(o, "enable_prefix_caching", a->enable_prefix_caching);
    cJSON_AddNumberToObject(o, "kv_cache_memory", (double)a->kv_cache_memory);
    cJSON_AddStringToObject(o, "kv_cache_dtype", ipc_kv_dtype_names[a->kv_cache_dtype]);
    cJSON_AddNumberToObject(o, "gpu_memory_utilization", a->gpu_memory_utilization);
    cJSON_AddNumberToObject(o, "threads", a->threads);
    cJSON_AddStringToObject(o, "device", ipc_device_names[a->device]);
    cJSON_AddBoolToObject(o, "batch_invariant", a->batch_invariant);
    cJSON_AddBoolToObject(o, "enforce_eager", a->enforce_eager);
    if (a->otlp_traces_endpoint)
        cJSON_AddStringToObject(o, "otlp_traces_endpoint", a->otlp_traces_endpoint);
    cJSON_AddNumberToObject(o, "detailed_traces", a->detailed_traces);
    cJSON_AddNumberToObject(o, "trace_slow_threshold_ms", a->trace_slow_threshold_ms);
    cJSON_AddNumberToObject(o, "watchdog_timeout_s", a->watchdog_timeout_s);
    return o;
}
