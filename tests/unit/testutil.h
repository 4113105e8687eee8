/*
 * testutil.h — helpers shared by the unit tests: locating fixtures and the default model,
 * reading small binary fixture files. Tests link this with cmocka.
 */
#ifndef LT_TESTUTIL_H
#define LT_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// clang-format off
#include <cmocka.h>
// clang-format on

/* Path of fixture `name` under $LANTERN_FIXTURES (static buffer, valid until the next call). */
const char *tu_fixture(const char *name);
/* Path of the default model ($LANTERN_MODEL, else the cache path tools/fetch_model.sh uses), or
 * NULL when the file does not exist. */
const char *tu_default_model(void);
/* A fresh temporary directory (mkdtemp under $TMPDIR), static buffer. */
const char *tu_tmpdir(void);
/* Writes len bytes to path; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t len);
/* The largest |got - ref| over rows rows of n logits, each row's difference divided by the range
 * (max - min) of that row of ref. */
double tu_logit_diff(const float *got, const float *ref, int rows, int n);

#define TU_SKIP 77

#endif
