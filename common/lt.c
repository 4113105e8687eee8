/*
 * lt.c — shared utilities: error text, the per-process log sink, monotonic time, file mapping,
 * half-precision conversion. See lt.h.
 */
#define _GNU_SOURCE
#include "lt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- version ---- */

#ifndef LANTERN_VERSION
#error "LANTERN_VERSION comes from CMakeLists.txt's project(VERSION)"
#endif

const char *lt_version(void) {
    return LANTERN_VERSION;
}

/* ---- errors ---- */

const char *lt_err_str(int code) {
    switch (code) {
    case LT_OK: return "ok";
    case LT_ERR_NOMEM: return "out of memory";
    case LT_ERR_IO: return "i/o error";
    case LT_ERR_FORMAT: return "malformed input";
    case LT_ERR_UNSUPPORTED: return "unsupported";
    case LT_ERR_INVAL: return "invalid argument";
    case LT_ERR_NOTFOUND: return "not found";
    case LT_ERR_RANGE: return "out of range";
    default: return "unknown error";
    }
}

int lt_errf(char *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, LT_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- logging ---- */

static char g_role[32] = "lantern";
static int g_rank = -1;
static lt_log_level_t g_level = LT_LOG_INFO;

void lt_log_set_role(const char *role, int rank) {
    snprintf(g_role, sizeof g_role, "%s", role);
    g_rank = rank;
}

void lt_log_set_level(lt_log_level_t level) {
    g_level = level;
}

void lt_log(lt_log_level_t level, const char *fmt, ...) {
    if (level < g_level) return;
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n;
    if (g_rank >= 0)
        n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s %s[%d] pid=%d ", tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, names[level], g_role, g_rank,
                     (int)getpid());
    else
        n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s %s pid=%d ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level], g_role, (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

/* ---- parsing flag values ---- */

bool lt_parse_long(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool lt_parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

bool lt_parse_size(const char *s, long long *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mul = 1;
    if (end == s) return false;
    if (*end == 'K' || *end == 'k')
        mul = 1024.0, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1048576.0, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1073741824.0, end++;
    if (*end == 'i' && mul > 1) end++;
    if (*end == 'B') end++;
    if (*end || errno || !(v > 0) || v * mul > 1e15) return false;
    *out = (long long)(v * mul);
    return true;
}

/* ---- time ---- */

uint64_t lt_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- files ---- */

int lt_mmap_open(const char *path, lt_mmap_t *m, char *err) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lt_errf(err, LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lt_errf(err, LT_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lt_errf(err, LT_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return lt_errf(err, LT_ERR_IO, "%s: cannot mmap: %s", path, strerror(e));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return LT_OK;
}

void lt_mmap_close(lt_mmap_t *m) {
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

int lt_read_file(const char *path, char **out, size_t *len, char *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return lt_errf(err, LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return lt_errf(err, LT_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0) break;
        n += r;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return lt_errf(err, LT_ERR_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return LT_OK;
}

bool lt_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

#define LT_DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

const char *lt_default_model_path(char *buf, size_t n) {
    const char *m = getenv("LANTERN_MODEL");
    const char *cache = getenv("LANTERN_CACHE_DIR");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (m && *m)
        snprintf(buf, n, "%s", m);
    else if (cache && *cache)
        snprintf(buf, n, "%s/models/" LT_DEFAULT_MODEL_FILE, cache);
    else if (xdg && *xdg)
        snprintf(buf, n, "%s/lantern/models/" LT_DEFAULT_MODEL_FILE, xdg);
    else
        snprintf(buf, n, "%s/.cache/lantern/models/" LT_DEFAULT_MODEL_FILE, home ? home : ".");
    return buf;
}

/* ---- half precision ---- */

float lt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    union {
        uint32_t u;
        float f;
    } v = {.u = bits};
    return v.f;
}

uint16_t lt_f32_to_f16(float f) {
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    uint32_t x = v.u;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
    if (exp >= 0x1f) return sign | 0x7c00;
    if (exp <= 0) {
        if (exp < -10) return sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t half = ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return sign | (uint16_t)half;
}
