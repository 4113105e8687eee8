/*
 * serve.c — `lantern serve`: the OpenAI-compatible HTTP server (libmicrohttpd) in the frontend
 * process, in front of the engine tree that liblantern starts.
 *
 * Threads: libmicrohttpd runs a small pool of event-loop threads; none of them ever waits on the
 * engine. A request that waits for tokens is *suspended* (MHD_suspend_connection) and resumed by
 * liblantern's notify hook when its next output arrives, so 128 concurrent streams cost no
 * thread each and no polling. The main thread only watches signals, the engine's health and the
 * periodic stats line.
 *
 * Suspend/resume protocol (call_sleep / call_notify): a call sleeps by suspending first, then
 * raising `suspended`, then re-checking `ready`; the notifier raises `ready`, then takes
 * `suspended` with an exchange. Whichever of the two takes `suspended` resumes the connection, so
 * a wake-up can never be lost and a connection is never resumed before it was suspended.
 *
 * Lifetime of a call: one per HTTP request (MHD's con_cls). Streaming calls are also referenced by
 * their response (the SSE reader); the last of the two references frees the call. A call's engine
 * requests are released (aborted if still running) when the HTTP request completes for any
 * reason, client disconnect included, and lantern_release guarantees no notify after that.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "http.h"
#include "lt.h"
#include "proc.h"
#include "telemetry.h"

static srv_t g_srv;

/* ---- the hang-up watchdog ---- */

/* A suspended connection is not watched by MHD, so a client that gives up while its request
 * waits (queued, or a non-streaming request still generating) would go unnoticed until the
 * response is written. The main thread polls those sockets for a hang-up and aborts their engine
 * requests; the ABORT outputs then resume the connection, which MHD closes. Only lantern_abort
 * is called here: the call itself belongs to its MHD thread. */
static void watch_hangups(srv_t *s) {
    pthread_mutex_lock(&s->mu);
    for (call_t *c = s->calls; c; c = c->next) {
        if (c->closed || !atomic_load(&c->suspended) || atomic_load(&c->gone)) continue;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci) continue;
        struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
        if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR))) continue;
        atomic_store(&c->gone, true);
        for (int i = 0; i < c->n_ch; i++) lantern_abort(s->l, c->ch[i].id);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- state dump and stats line ---- */

static void dump_state(srv_t *s) {
    uint64_t now = lt_now_ns();
    cJSON *extra = cJSON_CreateObject(), *http = cJSON_AddObjectToObject(extra, "http");
    cJSON_AddStringToObject(http, "host", s->host);
    cJSON_AddNumberToObject(http, "port", s->port);
    int nh, nr, ni, no;
    fe_http_conns_count(s, &nh, &nr, &ni, &no);
    cJSON *conns = cJSON_AddObjectToObject(http, "connections");
    cJSON_AddNumberToObject(conns, "sending_headers", nh);
    cJSON_AddNumberToObject(conns, "in_request", nr);
    cJSON_AddNumberToObject(conns, "idle", ni);
    cJSON_AddNumberToObject(conns, "to_refuse", no);
    LT_INFO("state dump: http connections: %d sending headers, %d in a request, %d idle, %d to "
            "refuse",
            nh, nr, ni, no);
    cJSON *calls = cJSON_AddArrayToObject(http, "open_requests");
    pthread_mutex_lock(&s->mu);
    LT_INFO("state dump: http server on %s:%d, %d open requests", s->host, s->port, s->n_calls);
    for (call_t *c = s->calls; c; c = c->next) {
        int toks = 0;
        for (int i = 0; i < c->n_ch; i++) toks += c->ch[i].n_tokens;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "request_id", c->rid);
        cJSON_AddStringToObject(o, "traceparent", c->traceparent);
        cJSON_AddNumberToObject(o, "age_s", (double)(now - c->t0_ns) / 1e9);
        cJSON_AddNumberToObject(o, "choices", c->n_ch);
        cJSON_AddNumberToObject(o, "generating", c->n_live);
        cJSON_AddNumberToObject(o, "tokens", toks);
        cJSON_AddBoolToObject(o, "waiting_for_engine", atomic_load(&c->suspended));
        cJSON_AddItemToArray(calls, o);
        LT_INFO("state dump: req=%s traceparent=%s: %s, age %.1f s, %d choice(s), %d still "
                "generating, %d tokens so far%s",
                c->rid, c->traceparent[0] ? c->traceparent : "-",
                c->route == R_CHAT          ? "chat"
                : c->route == R_COMPLETIONS ? "completion"
                                            : "other",
                (double)(now - c->t0_ns) / 1e9, c->n_ch, c->n_live, toks,
                atomic_load(&c->suspended) ? ", waiting for the engine" : "");
    }
    pthread_mutex_unlock(&s->mu);
    lantern_dump(s->l, extra);
}

/* The open calls: MHD's worker threads add and remove them under s->mu. */
static int open_calls(srv_t *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->n_calls;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void stats_line(srv_t *s, double dt, unsigned long long *last_p,
                       unsigned long long *last_g) {
    lantern_stats_t st;
    lantern_stats(s->l, &st);
    const tel_metrics_shm_t *sh = lantern_metrics(s->l); /* the engine's counters */
    unsigned long long p = sh ? atomic_load(&((tel_metrics_shm_t *)sh)->engine.prompt_tokens) : 0;
    unsigned long long g =
        sh ? atomic_load(&((tel_metrics_shm_t *)sh)->engine.generation_tokens) : 0;
    if (p == *last_p && g == *last_g && st.running == 0 && st.waiting == 0) return; /* idle */
    LT_INFO("stats: prompt throughput %.1f tokens/s, generation throughput %.1f tokens/s, running "
            "%d, waiting %d, KV cache usage %.1f%%, prefix cache hit rate %.1f%%, %d open HTTP "
            "requests",
            (double)(p - *last_p) / dt, (double)(g - *last_g) / dt, st.running, st.waiting,
            st.kv_usage * 100.0,
            st.prefix_queries ? 100.0 * (double)st.prefix_hits / (double)st.prefix_queries : 0.0,
            open_calls(s));
    *last_p = p;
    *last_g = g;
}

/* ---- connections and descriptors ---- */

/* What connection management did lately, when it did anything but routine keep-alive closes:
 * a flood of idle or slow clients shows up here. */
static void conns_report(srv_t *s, unsigned long long last[4]) {
    unsigned long long now[4] = {atomic_load(&s->n_conn_evicted), atomic_load(&s->n_conn_timed_out),
                                 atomic_load(&s->n_conn_refused),
                                 atomic_load(&s->n_conn_full) + atomic_load(&s->n_conn_per_ip)};
    if (memcmp(now, last, sizeof now) == 0) return;
    int nh, nr, ni, no;
    fe_http_conns_count(s, &nh, &nr, &ni, &no);
    LT_WARN("http connections: %d open (%d sending headers, %d in a request, %d idle); since the "
            "last report %llu closed to make room, %llu past the header timeout, %llu refused at "
            "accept, %llu answered 503/429",
            nh + nr + ni + no, nh, nr, ni, now[0] - last[0], now[1] - last[1], now[2] - last[2],
            now[3] - last[3]);
    memcpy(last, now, sizeof now);
}

/* MHD's own connection limit: ours, the overflow answered at once, and room for connections we
 * closed that their MHD thread has not released yet (MHD refuses beyond its limit by leaving
 * connections in the kernel's backlog, which is what we must never do). */
static unsigned mhd_conn_limit(int max_conns) {
    return (unsigned)max_conns + FE_CONN_OVERFLOW + (unsigned)max_conns / 4 + 64;
}

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return 64;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* Makes the descriptor limit hold every connection MHD may keep open: raises the soft limit (up
 * to the hard one), else lowers --http-max-connections, saying so. */
static void fit_fd_limit(srv_t *s) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    rlim_t reserve = (rlim_t)open_fds() + 128; /* ours now, and what the exporter etc. may open */
    rlim_t need = mhd_conn_limit(s->max_conns) + reserve;
    if (rl.rlim_cur < need) {
        struct rlimit nl = {
            rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nl) == 0) rl.rlim_cur = nl.rlim_cur;
    }
    if (rl.rlim_cur >= need) return;
    rlim_t room = mhd_conn_limit(0);
    int fit = rl.rlim_cur > reserve + room ? (int)((rl.rlim_cur - reserve - room) * 4 / 5) : 1;
    if (fit < 1) fit = 1;
    LT_WARN("the descriptor limit (ulimit -n) is %llu: serving at most %d connections, not %d "
            "(--http-max-connections %d needs ulimit -n %llu)",
            (unsigned long long)rl.rlim_cur, fit, s->max_conns, s->max_conns,
            (unsigned long long)need);
    s->max_conns = fit;
}

/* ---- command line ---- */

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: lantern serve [MODEL] [options]\n"
        "\n"
        "Serves MODEL (a GGUF file or a Hugging Face directory; default: SmolLM2-135M-Instruct)\n"
        "over an OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions (streaming\n"
        "with SSE), /v1/models, /tokenize, /detokenize, /health, /version, /metrics.\n"
        "\n"
        "server options (vLLM's names):\n"
        "  --host HOST                    address to listen on (127.0.0.1; use 0.0.0.0 or ::\n"
        "                                 to listen on all interfaces)\n"
        "  --port PORT                    port (8000; 0 picks a free one)\n"
        "  --served-model-name NAME       the name clients use as 'model' (default: the file\n"
        "                                 or directory name)\n"
        "  --api-key KEY                  require 'Authorization: Bearer KEY' on every path but\n"
        "                                 /health, /metrics, /version (also LANTERN_API_KEY)\n"
        "  --max-request-body BYTES       largest request body, K/M/G suffixes (16M)\n"
        "  --http-header-timeout S        a request's headers must all be in within S seconds\n"
        "                                 of the connection (or of its previous response), and\n"
        "                                 its body may not stall longer (10)\n"
        "  --http-idle-timeout S          a keep-alive connection is closed after S seconds\n"
        "                                 without a request, a response after S seconds on a\n"
        "                                 client that does not read (60); a request waiting for\n"
        "                                 the engine or streaming tokens is never timed out\n"
        "  --http-max-connections N       open connections (1000); when full, a new one closes\n"
        "                                 the oldest that holds no request, or is answered 503\n"
        "                                 with Retry-After; needs ulimit -n of about 1.25 N + 300\n"
        "                                 (it raises its soft limit up to the hard one)\n"
        "  --http-max-connections-per-ip N  open connections per client address (0: no cap,\n"
        "                                 the default: behind a proxy every client shares one);\n"
        "                                 over it, 429 with Retry-After\n"
        "  --max-undelivered-bytes-per-request BYTES\n"
        "                                 generated output one request may have waiting for\n"
        "                                 its client (a stream nobody reads) before it is\n"
        "                                 aborted with an error; 0: no limit (32M)\n"
        "  --max-undelivered-bytes BYTES  the same across all requests: the largest backlog\n"
        "                                 is aborted first (512M)\n"
        "  --disable-log-requests         no log line per request\n"
        "  --disable-log-stats            no periodic stats line\n"
        "  --metrics-prefix P             lantern (default) or vllm: /metrics under vLLM's own\n"
        "                                 names, for vLLM dashboards and alerts\n"
        "  --help                         this text\n"
        "\n");
    ipc_engine_args_help(f);
}

static void default_name(const char *model, char *out, size_t cap) {
    const char *b = strrchr(model, '/');
    b = b && b[1] ? b + 1 : model;
    snprintf(out, cap, "%.255s", b);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = '\0';
    if (n > 5 && strcmp(out + n - 5, ".gguf") == 0) out[n - 5] = '\0';
}

static int bind_addr(const char *host, int port, struct sockaddr_storage *ss, unsigned *flags,
                     char *err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc)
        return lt_errf(err, LT_ERR_INVAL, "cannot resolve host '%s': %s", host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    if (res->ai_family == AF_INET6) *flags |= MHD_USE_DUAL_STACK; /* "::" serves IPv4 too */
    freeaddrinfo(res);
    return LT_OK;
}

/* Binds the address once before the engine starts, so that a port in use (or not ours to take)
 * is said at once, not after the model has loaded; MHD binds it again afterwards. */
static int check_port(const struct sockaddr_storage *ss, const char *host, long long port,
                      char *err) {
    if (port == 0) return LT_OK;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return LT_OK; /* MHD will say what is wrong */
    int one = 1;              /* as MHD does: a previous run's TIME_WAIT is no conflict */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len =
        ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int e = bind(fd, (const struct sockaddr *)ss, len) == 0 ? 0 : errno;
    close(fd);
    if (!e) return LT_OK;
    return lt_errf(err, LT_ERR_IO, "cannot listen on %s:%lld: %s%s", host, port,
                   e == EADDRINUSE ? "the address is already in use" : strerror(e),
                   e == EADDRINUSE ? " (another server listens there: choose another --port)"
                   : e == EACCES   ? " (ports below 1024 need privileges)"
                                   : "");
}

/* A byte count with K/M/G suffixes, or 0 (no limit). */
static bool parse_limit(const char *s, long long *out) {
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return true;
    }
    return lt_parse_size(s, out);
}

/* The command line: the server's own options, then every engine option (ipc/args.h). 0 to go
 * on, else the exit status. */
enum {
    OPT_HOST = 1,
    OPT_PORT,
    OPT_NAME,
    OPT_KEY,
    OPT_BODY,
    OPT_NO_LOG_REQ,
    OPT_NO_LOG_STATS,
    OPT_METRICS_PREFIX,
    OPT_HEADER_TIMEOUT,
    OPT_IDLE_TIMEOUT,
    OPT_MAX_CONNS,
    OPT_MAX_CONNS_PER_IP,
    OPT_UNDELIV_REQ,
    OPT_UNDELIV,
    OPT_HELP
};

static int parse_args(srv_t *s, int argc, char **argv, lantern_engine_args_t *a, long long *port) {
    static const struct option own[] = {
        {"host", required_argument, 0, OPT_HOST},
        {"port", required_argument, 0, OPT_PORT},
        {"served-model-name", required_argument, 0, OPT_NAME},
        {"api-key", required_argument, 0, OPT_KEY},
        {"max-request-body", required_argument, 0, OPT_BODY},
        {"disable-log-requests", no_argument, 0, OPT_NO_LOG_REQ},
        {"disable-log-stats", no_argument, 0, OPT_NO_LOG_STATS},
        {"metrics-prefix", required_argument, 0, OPT_METRICS_PREFIX},
        {"http-header-timeout", required_argument, 0, OPT_HEADER_TIMEOUT},
        {"http-idle-timeout", required_argument, 0, OPT_IDLE_TIMEOUT},
        {"http-max-connections", required_argument, 0, OPT_MAX_CONNS},
        {"http-max-connections-per-ip", required_argument, 0, OPT_MAX_CONNS_PER_IP},
        {"max-undelivered-bytes-per-request", required_argument, 0, OPT_UNDELIV_REQ},
        {"max-undelivered-bytes", required_argument, 0, OPT_UNDELIV},
        {"help", no_argument, 0, OPT_HELP}};
    struct option opts[48];
    ipc_engine_opts_table(own, (int)(sizeof own / sizeof own[0]), opts, 48);
    const char *name = NULL, *host = "127.0.0.1", *key = getenv("LANTERN_API_KEY");
    long long max_body = 16ll << 20, header_s = 10, idle_s = 60, max_conns = 1000, per_ip = 0;
    long long undeliv_req = 32ll << 20, undeliv = 512ll << 20;
    *port = 8000;
    s->log_requests = s->log_stats = true;
    s->metrics_prefix = "lantern";
    ipc_engine_args_defaults(a);
    int o;
    optind = 1;
    while ((o = ipc_engine_getopt(argc, argv, opts, a, "lantern serve")) != -1) {
        if (o == IPC_OPT_BAD) return 2;
        bool ok = true;
        switch (o) {
        case OPT_HOST: host = optarg; break;
        case OPT_PORT: ok = lt_parse_long(optarg, 0, 65535, port); break;
        case OPT_NAME: name = optarg; break;
        case OPT_KEY: key = optarg; break;
        case OPT_BODY: ok = lt_parse_size(optarg, &max_body); break;
        case OPT_UNDELIV_REQ: ok = parse_limit(optarg, &undeliv_req); break;
        case OPT_UNDELIV: ok = parse_limit(optarg, &undeliv); break;
        case OPT_NO_LOG_REQ: s->log_requests = false; break;
        case OPT_NO_LOG_STATS: s->log_stats = false; break;
        case OPT_METRICS_PREFIX:
            ok = strcmp(optarg, "lantern") == 0 || strcmp(optarg, "vllm") == 0;
            s->metrics_prefix = strcmp(optarg, "vllm") == 0 ? "vllm" : "lantern";
            break;
        case OPT_HEADER_TIMEOUT: ok = lt_parse_long(optarg, 1, 86400, &header_s); break;
        case OPT_IDLE_TIMEOUT: ok = lt_parse_long(optarg, 1, 86400, &idle_s); break;
        case OPT_MAX_CONNS: ok = lt_parse_long(optarg, 1, 1000000, &max_conns); break;
        case OPT_MAX_CONNS_PER_IP: ok = lt_parse_long(optarg, 0, 1000000, &per_ip); break;
        case OPT_HELP: usage(stdout); return -1;
        default: usage(stderr); return 2;
        }
        if (!ok) {
            const char *flag = "?";
            for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
                if (own[i].val == o) flag = own[i].name;
            fprintf(stderr, "lantern serve: invalid value '%s' for --%s%s\n", optarg, flag,
                    o == OPT_METRICS_PREFIX ? " (lantern or vllm)" : "");
            return 2;
        }
    }
    if (optind < argc && !a->model) a->model = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "lantern serve: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (key && !*key) key = NULL;
    if (a->model)
        snprintf(s->model, sizeof s->model, "%s", a->model);
    else
        lt_default_model_path(s->model, sizeof s->model);
    a->model = s->model;
    if (name)
        snprintf(s->served_name, sizeof s->served_name, "%s", name);
    else
        default_name(s->model, s->served_name, sizeof s->served_name);
    snprintf(s->host, sizeof s->host, "%s", host);
    s->max_body = (size_t)max_body;
    s->header_timeout_s = (unsigned)header_s;
    s->idle_timeout_s = (unsigned)idle_s;
    s->max_conns = (int)max_conns;
    s->max_conns_per_ip = (int)per_ip;
    s->max_undelivered_req = (size_t)undeliv_req;
    s->max_undelivered = (size_t)undeliv;
    s->api_key = key ? strdup(key) : NULL;
    return 0;
}

int fe_cmd_serve(int argc, char **argv) {
    srv_t *s = &g_srv;
    memset(s, 0, sizeof *s);
    lantern_engine_args_t a;
    long long port;
    int st = parse_args(s, argc, argv, &a, &port);
    if (st) return st < 0 ? 0 : st;
    /* One malloc arena: glibc gives the HTTP threads arenas of their own, which kept 40-60 MB of
     * freed memory resident after bursts of connections and let the process grow round after
     * round in the soak test; small allocations go through each thread's cache first, so
     * sharing one arena costs little. */
    mallopt(M_ARENA_MAX, 1);
    const char *host = s->host;
    lt_log_set_role("frontend", -1);
    s->started = time(NULL);
    s->trace_slow_ns = (uint64_t)a.trace_slow_threshold_ms * 1000000ull;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);

    int status = 1;
    char err[LT_ERR_LEN];
    char *src = NULL;
    lt_signals_install();
    tel_process_config_t tc = {.role = "frontend",
                               .rank = -1,
                               .tensor_parallel_size = a.tensor_parallel_size,
                               .otlp_endpoint = a.otlp_traces_endpoint};
    if (tel_process_start(&tc, err)) {
        fprintf(stderr, "lantern serve: %s\n", err);
        return 2;
    }
    if (fe_tokenizer_load(s->model, &s->tok, err)) goto fail;
    if (fe_chat_template_source(s->model, &src, err) == 0) {
        if (fe_chat_template_compile(src, strlen(src), &s->tpl, err))
            LT_WARN("the model's chat template cannot be used (%s): /v1/chat/completions will "
                    "refuse requests",
                    err);
    } else {
        LT_WARN("%s: /v1/chat/completions will refuse requests", err);
    }
    free(src);
    struct sockaddr_storage ss;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (bind_addr(host, (int)port, &ss, &flags, err) || check_port(&ss, host, port, err)) goto fail;
    LT_INFO("starting the engine for %s (tensor parallel size %d)", s->model,
            a.tensor_parallel_size);
    if (lantern_create(&a, &s->l, err)) goto fail;
    lantern_set_output_limits(s->l, s->max_undelivered_req, s->max_undelivered);
    lantern_model_info(s->l, &s->info);
    lt_model_config_defaults(&s->gen);
    if (lt_is_dir(s->model) && lt_model_config_from_hf_dir(s->model, &s->gen, err))
        LT_WARN("generation config: %s (OpenAI's defaults apply)", err);
    s->oai = (fe_oai_ctx_t){.tok = s->tok,
                            .tpl = s->tpl,
                            .served_name = s->served_name,
                            .max_model_len = s->info.max_model_len,
                            .vocab_size = s->info.vocab_size,
                            .gen = &s->gen};
    fit_fd_limit(s);
    /* the daemon's timeout is the headers' and body's; conns.c sets the response's per request */
    s->d = MHD_start_daemon(
        flags, (uint16_t)port, fe_http_conns_accept, s, fe_http_on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, fe_http_mhd_log, s, /* first: it logs the rest */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)4,
        MHD_OPTION_CONNECTION_LIMIT, mhd_conn_limit(s->max_conns), MHD_OPTION_CONNECTION_TIMEOUT,
        s->header_timeout_s,
        /* no MHD_OPTION_LISTENING_ADDRESS_REUSE: it sets SO_REUSEPORT, with which a second
         * server on the same port starts silently and takes half the connections; MHD's default
         * SO_REUSEADDR already allows a quick restart */
        MHD_OPTION_NOTIFY_COMPLETED, fe_http_on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
        fe_http_conns_notify, s, MHD_OPTION_END);
    if (!s->d) {
        lt_errf(err, LT_ERR_IO, "cannot listen on %s:%lld: %s", host, port, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : (int)port;
    bool v6 = strchr(host, ':') != NULL; /* an IPv6 literal goes in brackets in a URL */
    LT_INFO("serving %s as '%s' (context %d tokens, %d KV blocks of %d): listening on "
            "http://%s%s%s:%d",
            s->model, s->served_name, s->info.max_model_len, s->info.num_kv_blocks,
            s->info.block_size, v6 ? "[" : "", host, v6 ? "]" : "", s->port);
    char per_ip[32] = "no cap";
    if (s->max_conns_per_ip > 0) snprintf(per_ip, sizeof per_ip, "%d", s->max_conns_per_ip);
    LT_INFO("http: at most %d connections (per client address: %s), header timeout %u s, idle "
            "timeout %u s",
            s->max_conns, per_ip, s->header_timeout_s, s->idle_timeout_s);

    uint64_t last_stats = lt_now_ns(), dead_since = 0;
    unsigned long long last_p = 0, last_g = 0, last_conns[4] = {0};
    status = 0;
    while (!lt_sig_shutdown) {
        usleep(100 * 1000);
        if (lt_sig_dump) {
            lt_sig_dump = 0;
            dump_state(s);
        }
        watch_hangups(s);
        fe_http_conns_tick(s);
        uint64_t now = lt_now_ns();
        if (!lantern_alive(s->l)) {
            /* keep answering 503 briefly so health checks see it, then exit non-zero */
            if (!dead_since) {
                dead_since = now;
                LT_ERROR("the engine died: answering 503 and exiting");
            }
            if (now - dead_since > 2000000000ull) {
                status = 1;
                break;
            }
        }
        if (s->log_stats && now - last_stats >= 10000000000ull) {
            stats_line(s, (double)(now - last_stats) / 1e9, &last_p, &last_g);
            conns_report(s, last_conns);
            last_stats = now;
        }
    }
    LT_INFO("shutting down: %d open requests", open_calls(s));
    /* stop accepting, let open requests end (aborting what still generates), then stop */
    MHD_socket lsock = MHD_quiesce_daemon(s->d);
    if (lsock != MHD_INVALID_SOCKET) close(lsock);
    pthread_mutex_lock(&s->mu);
    for (call_t *c = s->calls; c; c = c->next)
        for (int i = 0; i < c->n_ch; i++)
            if (c->ch[i].live) lantern_abort(s->l, c->ch[i].id);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < 50 && open_calls(s) > 0; i++) usleep(100 * 1000);
    MHD_stop_daemon(s->d);
    s->d = NULL;
    goto done;
fail:
    fprintf(stderr, "lantern serve: %s\n", err);
done:
    if (s->d) MHD_stop_daemon(s->d);
    lantern_destroy(&s->l);
    fe_chat_template_destroy(&s->tpl);
    fe_tokenizer_destroy(&s->tok);
    free(s->api_key);
    tel_process_stop(5000); /* after every span of every call has ended */
    return status;
}
