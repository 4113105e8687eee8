/*
 * fuzz_file.h — what the fuzz targets that read model files share (fuzz_gguf.c,
 * fuzz_safetensors.c): the input written to one memfd per process and opened through
 * /proc/self/fd, so the real open/mmap path runs without touching the disk, and a read of every
 * byte a parser hands back (ASan catches one outside its mapping).
 */
#ifndef LT_FUZZ_FILE_H
#define LT_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile uint64_t g_sink;

static inline void touch(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i++) acc += b[i];
    g_sink += acc;
}

/* The path of a memfd (named name, made on the first call) now holding exactly data (size). */
static inline const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create(name, MFD_CLOEXEC);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) abort();
    return path;
}

#endif
