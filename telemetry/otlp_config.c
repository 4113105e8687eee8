/*
 * otlp_config.c — the OTLP exporter's configuration (otlp.h): --otlp-traces-endpoint and the
 * OTEL_EXPORTER_OTLP_* variables as the OpenTelemetry specification ("OTLP Exporter
 * Configuration") and vLLM name them, checked once at start-up so that a typo is an error
 * message, not a process that silently exports nothing.
 *
 * URLs are taken apart and put back together with libcurl's URL API (curl_url), the same parser
 * that will send the requests, so what we accept is exactly what curl understands.
 */
#define _GNU_SOURCE
#include "otlp.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "curl_lazy.h"
#include "lt.h"

#define GRPC_EXPORT_PATH "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

const char *tel_otlp_protocol_name(tel_otlp_protocol_t p) {
    return p == TEL_OTLP_GRPC ? "grpc" : "http/protobuf";
}

/* The signal-specific variable OTEL_EXPORTER_OTLP_TRACES_<what>, else the generic
 * OTEL_EXPORTER_OTLP_<what>; *name receives the one used. NULL when both are unset or empty. */
static const char *env2(const char *what, char *name, size_t name_len) {
    snprintf(name, name_len, "OTEL_EXPORTER_OTLP_TRACES_%s", what);
    const char *v = getenv(name);
    if (v && *v) return v;
    snprintf(name, name_len, "OTEL_EXPORTER_OTLP_%s", what);
    v = getenv(name);
    return v && *v ? v : NULL;
}

/* ---- scalar values ---- */

static int parse_protocol(tel_otlp_config_t *cfg, char *err) {
    char name[64];
    const char *v = env2("PROTOCOL", name, sizeof name);
    cfg->protocol = TEL_OTLP_GRPC;
    if (!v || !strcmp(v, "grpc")) return 0;
    if (!strcmp(v, "http/protobuf")) {
        cfg->protocol = TEL_OTLP_HTTP_PROTOBUF;
        return 0;
    }
    if (!strcmp(v, "http/json"))
        return lt_errf(err, LT_ERR_UNSUPPORTED,
                       "%s='%s': lantern exports OTLP as grpc or http/protobuf, not http/json",
                       name, v);
    return lt_errf(err, LT_ERR_INVAL, "%s='%s': expected grpc or http/protobuf", name, v);
}

static int parse_timeout(tel_otlp_config_t *cfg, char *err) {
    char name[64];
    const char *v = env2("TIMEOUT", name, sizeof name);
    long long ms = 10000;
    if (v && !lt_parse_long(v, 1, 3600000, &ms))
        return lt_errf(err, LT_ERR_INVAL,
                       "%s='%s': expected milliseconds, a whole number in [1, 3600000]", name, v);
    /* The specification says milliseconds; the Python SDK (vLLM's) reads seconds, so a value
     * carried over from a vLLM deployment ("10") would make every export time out. */
    if (v && ms < 100)
        LT_WARN("%s=%s: that is %lld ms (OTLP timeouts are milliseconds; the Python SDK reads "
                "seconds)",
                name, v, ms);
    cfg->timeout_ms = (int)ms;
    return 0;
}

/* *out: -1 unset, 0 false, 1 true. */
static int parse_insecure(int *out, char *err) {
    char name[64];
    const char *v = env2("INSECURE", name, sizeof name);
    *out = -1;
    if (!v) return 0;
    if (!strcasecmp(v, "true"))
        *out = 1;
    else if (!strcasecmp(v, "false"))
        *out = 0;
    else
        return lt_errf(err, LT_ERR_INVAL, "%s='%s': expected true or false", name, v);
    return 0;
}

static int parse_certificate(tel_otlp_config_t *cfg, char *err) {
    char name[64];
    const char *v = env2("CERTIFICATE", name, sizeof name);
    cfg->ca_file[0] = 0;
    if (!v) return 0;
    if (strlen(v) >= sizeof cfg->ca_file || access(v, R_OK) != 0)
        return lt_errf(err, LT_ERR_INVAL, "%s='%s': not a readable file", name, v);
    strcpy(cfg->ca_file, v);
    return 0;
}

/* ---- headers: "k=v,k2=v2" (W3C baggage form), values percent-encoded ---- */

static bool is_tchar(unsigned char c) { /* RFC 9110 token characters */
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One "key=value" member, s[0, n) with the surrounding spaces already trimmed. */
static int parse_header(tel_otlp_header_t *h, const char *s, size_t n, const char *var, char *err) {
    const char *eq = memchr(s, '=', n);
    if (!eq) return lt_errf(err, LT_ERR_INVAL, "%s: '%.*s' is not key=value", var, (int)n, s);
    size_t kn = (size_t)(eq - s);
    while (kn > 0 && (s[kn - 1] == ' ' || s[kn - 1] == '\t')) kn--;
    if (kn == 0 || kn >= sizeof h->name)
        return lt_errf(err, LT_ERR_INVAL, "%s: '%.*s': empty or too long a header name", var,
                       (int)n, s);
    for (size_t i = 0; i < kn; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return lt_errf(err, LT_ERR_INVAL, "%s: '%.*s' is not a valid header name", var, (int)kn,
                           s);
        h->name[i] = (char)tolower((unsigned char)s[i]); /* HTTP/2 wants lowercase names */
    }
    h->name[kn] = 0;
    const char *v = eq + 1, *end = s + n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    size_t o = 0;
    for (; v < end; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '%') {
            int hi = end - v >= 3 ? hexval(v[1]) : -1;
            int lo = hi >= 0 ? hexval(v[2]) : -1;
            if (hi < 0 || lo < 0)
                return lt_errf(err, LT_ERR_INVAL, "%s: header '%s': bad percent escape", var,
                               h->name);
            c = (unsigned char)(hi << 4 | lo);
            v += 2;
        }
        if (c < 0x20 || c == 0x7f) /* CR, LF, NUL...: would split or cut the header */
            return lt_errf(err, LT_ERR_INVAL, "%s: header '%s': control character in the value",
                           var, h->name);
        if (o + 1 >= sizeof h->value)
            return lt_errf(err, LT_ERR_INVAL, "%s: header '%s': value too long", var, h->name);
        h->value[o++] = (char)c;
    }
    h->value[o] = 0;
    return 0;
}

static int parse_headers(tel_otlp_config_t *cfg, char *err) {
    char name[64];
    const char *v = env2("HEADERS", name, sizeof name);
    cfg->n_headers = 0;
    if (!v) return 0;
    const char *p = v;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        if (a < b) { /* empty members ("a=b,,c=d", a trailing comma) are skipped */
            if (cfg->n_headers == TEL_OTLP_MAX_HEADERS)
                return lt_errf(err, LT_ERR_INVAL, "%s: more than %d headers", name,
                               TEL_OTLP_MAX_HEADERS);
            int rc = parse_header(&cfg->headers[cfg->n_headers], a, (size_t)(b - a), name, err);
            if (rc) return rc;
            cfg->n_headers++;
        }
        p = comma ? comma + 1 : end;
    }
    return 0;
}

/* ---- endpoints ---- */

/* Length of the scheme of "scheme://...", 0 when s has none. */
static size_t scheme_len(const char *s) {
    size_t i = 0;
    while (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.') i++;
    return i > 0 && isalpha((unsigned char)s[0]) && !strncmp(s + i, "://", 3) ? i : 0;
}

/* Parses url (which has an http or https scheme) into h; false when curl refuses it or it has
 * no host (curl would read "http:///v1/traces" as host "v1"). */
static bool url_parse(CURLU *h, const char *url) {
    const char *auth = strstr(url, "://");
    if (!auth || auth[3] == 0 || auth[3] == '/') return false;
    if (tel_curl.url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK) return false;
    char *host = NULL;
    bool ok = tel_curl.url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && *host;
    tel_curl.free(host);
    return ok;
}

static int url_out(CURLU *h, tel_otlp_config_t *cfg, const char *var, const char *v, char *err) {
    char *u = NULL;
    if (tel_curl.url_get(h, CURLUPART_URL, &u, 0) != CURLUE_OK || !u)
        return lt_errf(err, LT_ERR_INVAL, "%s='%s': not a URL", var, v);
    size_t n = strlen(u);
    if (n >= sizeof cfg->url) {
        tel_curl.free(u);
        return lt_errf(err, LT_ERR_INVAL, "%s='%s': URL too long", var, v);
    }
    memcpy(cfg->url, u, n + 1);
    tel_curl.free(u);
    return 0;
}

/* http/protobuf: an http(s) URL, used as given (signal-specific) or + "/v1/traces" (base). */
static int endpoint_http(tel_otlp_config_t *cfg, const char *var, const char *v, bool base,
                         char *err) {
    size_t sl = scheme_len(v);
    bool https = sl == 5 && !strncasecmp(v, "https", 5);
    if (!https && !(sl == 4 && !strncasecmp(v, "http", 4)))
        return lt_errf(err, LT_ERR_INVAL, "%s='%s': expected an http:// or https:// URL", var, v);
    char buf[TEL_OTLP_URL_MAX + 16];
    size_t n = strlen(v);
    if (n >= TEL_OTLP_URL_MAX) return lt_errf(err, LT_ERR_INVAL, "%s: URL too long", var);
    memcpy(buf, v, n + 1);
    int lrc = tel_curl_load(err);
    if (lrc) return lrc;
    if (base) { /* the specification's rule: append, with exactly one slash */
        while (n > sl + 3 && buf[n - 1] == '/') buf[--n] = 0;
        memcpy(buf + n, "/v1/traces", sizeof "/v1/traces");
    }
    CURLU *h = tel_curl.url();
    if (!h) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    int rc = url_parse(h, buf) ? url_out(h, cfg, var, v, err)
                               : lt_errf(err, LT_ERR_INVAL, "%s='%s': not a valid URL", var, v);
    tel_curl.url_cleanup(h);
    cfg->tls = https;
    return rc;
}

/* gRPC: http:// means plaintext (h2c), https:// TLS; with another scheme (vLLM's examples use
 * grpc://) or none (host:port), INSECURE=true means plaintext and the default is TLS. Only the
 * host and port count: the request goes to the TraceService/Export method's path. */
static int endpoint_grpc(tel_otlp_config_t *cfg, const char *var, const char *v, int insecure,
                         char *err) {
    size_t sl = scheme_len(v);
    bool tls;
    if (sl == 5 && !strncasecmp(v, "https", 5))
        tls = true;
    else if (sl == 4 && !strncasecmp(v, "http", 4))
        tls = false;
    else
        tls = insecure != 1;
    char buf[TEL_OTLP_URL_MAX + 16];
    if (strlen(v) >= TEL_OTLP_URL_MAX) return lt_errf(err, LT_ERR_INVAL, "%s: URL too long", var);
    snprintf(buf, sizeof buf, "%s://%s", tls ? "https" : "http", v + (sl ? sl + 3 : 0));
    int lrc = tel_curl_load(err);
    if (lrc) return lrc;
    CURLU *h = tel_curl.url();
    if (!h) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    int rc = 0;
    if (!url_parse(h, buf))
        rc = lt_errf(err, LT_ERR_INVAL, "%s='%s': expected [scheme://]host[:port]", var, v);
    else if (tel_curl.url_set(h, CURLUPART_PATH, GRPC_EXPORT_PATH, 0) != CURLUE_OK ||
             tel_curl.url_set(h, CURLUPART_QUERY, NULL, 0) != CURLUE_OK ||
             tel_curl.url_set(h, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK)
        rc = lt_errf(err, LT_ERR_INVAL, "%s='%s': not a valid URL", var, v);
    else
        rc = url_out(h, cfg, var, v, err);
    tel_curl.url_cleanup(h);
    cfg->tls = tls;
    return rc;
}

int tel_otlp_config_from_env(tel_otlp_config_t *cfg, const char *flag_endpoint, char *err) {
    memset(cfg, 0, sizeof *cfg);
    int insecure, rc;
    if ((rc = parse_protocol(cfg, err)) || (rc = parse_timeout(cfg, err)) ||
        (rc = parse_insecure(&insecure, err)) || (rc = parse_headers(cfg, err)) ||
        (rc = parse_certificate(cfg, err)))
        return rc;

    const char *var = "--otlp-traces-endpoint", *v = flag_endpoint;
    bool base = false;
    if (!v || !*v) {
        var = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
        v = getenv(var);
    }
    if (!v || !*v) {
        var = "OTEL_EXPORTER_OTLP_ENDPOINT";
        v = getenv(var);
        base = true;
    }
    if (!v || !*v) return 0; /* no endpoint: tracing stays off */
    rc = cfg->protocol == TEL_OTLP_GRPC ? endpoint_grpc(cfg, var, v, insecure, err)
                                        : endpoint_http(cfg, var, v, base, err);
    if (rc) return rc;
    cfg->enabled = true;
    return 0;
}
