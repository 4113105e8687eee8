/*
 * fuzz_tokenizer.c — libFuzzer target for the tokenizer (frontend/text/tokenizer.h) on arbitrary
 * bytes, with the Llama 3 tokenizer of tests/fixtures/tokenizers/llama3 (byte-level BPE, no
 * normalizer, no stripping added tokens): that pipeline loses nothing but invalid UTF-8, so
 *   decode(encode(x)) == lossy_utf8(x)
 * must hold both with special tokens parsed and with their text tokenized as plain text; every
 * id must be in the vocabulary; and the streaming detokenizer fed the ids one by one must
 * release exactly the same text (tokenizer.h's promise).
 *
 * Built by CMake: a replay program over tests/fuzz/corpus_tokenizer (a ctest) in every build;
 * fuzz_tokenizer, linked with libFuzzer, in the `fuzz` preset (tools/fuzz.sh). The fixtures come
 * from $LANTERN_FIXTURES, else the source tree's (LT_FUZZ_FIXTURES, set by CMake).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "lt.h"
#include "tokenizer.h"
#include "utf8.h"

#ifndef LT_FUZZ_FIXTURES
#define LT_FUZZ_FIXTURES "tests/fixtures"
#endif

static fe_tokenizer_t *g_tok;
static fe_detok_t *g_detok;

static void load_once(void) {
    if (g_tok) return;
    const char *dir = getenv("LANTERN_FIXTURES");
    char path[4096], err[LT_ERR_LEN];
    snprintf(path, sizeof path, "%s/tokenizers/llama3", dir ? dir : LT_FUZZ_FIXTURES);
    if (fe_tokenizer_load(path, &g_tok, err) || fe_detok_create(g_tok, false, &g_detok, err)) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err);
        abort();
    }
}

static void check(const char *text, size_t len, const lt_buf_t *want, bool parse_special) {
    char err[LT_ERR_LEN];
    int32_t *ids = NULL;
    int n = 0;
    if (fe_tokenizer_encode(g_tok, text, len, false, parse_special, &ids, &n, err)) abort();
    int vocab = fe_tokenizer_n_vocab(g_tok);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab) abort();
    char *out = NULL;
    size_t out_len = 0;
    if (fe_tokenizer_decode(g_tok, ids, n, false, &out, &out_len, err)) abort();
    if (out_len != want->len || memcmp(out, lt_buf_str(want), out_len) != 0) {
        fprintf(stderr, "fuzz_tokenizer: round trip (parse_special %d) gave %zu bytes, want %zu\n",
                parse_special, out_len, want->len);
        abort();
    }
    /* the stream of releases concatenates to the same text */
    lt_buf_t streamed = {0};
    fe_detok_reset(g_detok);
    const char *piece;
    size_t piece_len;
    for (int i = 0; i < n; i++) {
        if (fe_detok_feed(g_detok, ids[i], &piece, &piece_len, err)) abort();
        if (lt_buf_put(&streamed, piece, piece_len)) abort();
    }
    if (fe_detok_flush(g_detok, &piece, &piece_len, err)) abort();
    if (lt_buf_put(&streamed, piece, piece_len)) abort();
    if (streamed.len != out_len || memcmp(lt_buf_str(&streamed), out, out_len) != 0) {
        fprintf(stderr, "fuzz_tokenizer: streamed %zu bytes, decode gave %zu\n", streamed.len,
                out_len);
        abort();
    }
    lt_buf_free(&streamed);
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    char *text = malloc(size ? size : 1); /* exactly size bytes: no read past the input */
    if (!text) return 0;
    memcpy(text, data, size);
    lt_buf_t want = {0};
    lt_utf8_lossy_t st = {0};
    if (lt_utf8_lossy_push(&st, text, size, &want) || lt_utf8_lossy_flush(&st, &want)) abort();
    check(text, size, &want, false);
    check(text, size, &want, true);
    lt_buf_free(&want);
    free(text);
    return 0;
}
