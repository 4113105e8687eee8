/*
 * lt.h — utilities shared by every lantern process: error codes, error text, logging, time,
 * read-only file mapping and half-precision conversion.
 *
 * Thread safety: every function here may be called from any thread. Logging writes one line per
 * call with a single write(2), so lines from different threads never interleave.
 * Ownership: an lt_mmap_t owns its mapping until lt_mmap_close().
 * Not on the hot path except lt_now_ns() and the half-float conversions.
 */
#ifndef LT_H
#define LT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- version ---- */

/* lantern's version ("0.1.0"), from the build (CMake's project version): the one place. */
const char *lt_version(void);

/* ---- errors ---- */

/* Functions return 0 or one of these; a caller-supplied buffer of LT_ERR_LEN bytes receives the
 * one-line explanation (file, what was wrong). */
enum {
    LT_OK = 0,
    LT_ERR_NOMEM = -1,       /* allocation failed */
    LT_ERR_IO = -2,          /* open/read/mmap failed */
    LT_ERR_FORMAT = -3,      /* input is malformed: bad magic, truncated, out of range */
    LT_ERR_UNSUPPORTED = -4, /* well-formed but not something we handle (unknown type, arch) */
    LT_ERR_INVAL = -5,       /* bad argument from the caller */
    LT_ERR_NOTFOUND = -6,    /* key, tensor or file not present */
    LT_ERR_RANGE = -7,       /* value outside the allowed range (too long, too many) */
};

#define LT_ERR_LEN 512

const char *lt_err_str(int code);

/* Formats a message into err (may be NULL) and returns code, so that callers can write
 * `return lt_errf(err, LT_ERR_FORMAT, "%s: truncated header", path);` */
int lt_errf(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- logging ---- */

typedef enum { LT_LOG_DEBUG = 0, LT_LOG_INFO, LT_LOG_WARN, LT_LOG_ERROR } lt_log_level_t;

/* Sets this process's tag (role and rank), e.g. lt_log_set_role("worker", 1). */
void lt_log_set_role(const char *role, int rank);
void lt_log_set_level(lt_log_level_t level);
void lt_log(lt_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LT_DEBUG(...) lt_log(LT_LOG_DEBUG, __VA_ARGS__)
#define LT_INFO(...)  lt_log(LT_LOG_INFO, __VA_ARGS__)
#define LT_WARN(...)  lt_log(LT_LOG_WARN, __VA_ARGS__)
#define LT_ERROR(...) lt_log(LT_LOG_ERROR, __VA_ARGS__)
/* A line about one request starts "req=<its id>: ", in every process, so that one grep follows
 * a request through the tree. */

/* ---- parsing flag values ---- */

/* Whole-string parses for command-line values: false unless s is entirely a number in [lo, hi]
 * (out untouched then). */
bool lt_parse_long(const char *s, long long lo, long long hi, long long *out);
bool lt_parse_double(const char *s, double lo, double hi, double *out);
/* A byte size with an optional K/M/G (or KiB/MiB/GiB, KB/MB/GB) suffix, > 0 and at most 1e15. */
bool lt_parse_size(const char *s, long long *out);

/* ---- time ---- */

/* Monotonic clock in nanoseconds. HOT */
uint64_t lt_now_ns(void);

/* ---- files ---- */

typedef struct lt_mmap {
    const uint8_t *data; /* read-only mapping, NULL for an empty file */
    size_t size;
} lt_mmap_t;

/* Maps a whole file read-only. On error writes "<path>: <reason>" to err. */
int lt_mmap_open(const char *path, lt_mmap_t *m, char *err);
void lt_mmap_close(lt_mmap_t *m);

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer the caller frees. */
int lt_read_file(const char *path, char **out, size_t *len, char *err);

bool lt_is_dir(const char *path);

/* Path of the default model (SmolLM2-135M-Instruct Q4_1): $LANTERN_MODEL if set, else
 * $LANTERN_CACHE_DIR/models/..., else ${XDG_CACHE_HOME:-$HOME/.cache}/lantern/models/..., the
 * place tools/fetch_model.sh puts it. Writes into buf (n bytes) and returns buf. */
const char *lt_default_model_path(char *buf, size_t n);

/* ---- half precision ---- */

float lt_f16_to_f32(uint16_t h);
uint16_t lt_f32_to_f16(float f);
static inline float lt_bf16_to_f32(uint16_t b) {
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)b << 16};
    return v.f;
}

/* ---- overflow-checked size arithmetic: return false on overflow ---- */

static inline bool lt_mul_ovf(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline bool lt_add_ovf(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_add_overflow(a, b, out);
}

#endif
