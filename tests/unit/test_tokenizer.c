/*
 * test_tokenizer.c — frontend/tokenizer.c against Hugging Face `tokenizers`.
 *
 * The fixtures (tools/gen_tokenizer_fixtures.py) hold a corpus of >2000 strings and, for four
 * tokenizers, the ids and decoded strings HF produces. For every string and tokenizer this checks:
 * the ids (with and without special-token parsing, with and without BOS/EOS), decode with and
 * without skip_special_tokens, and that the incremental detokenizer, fed one id at a time,
 * releases only valid UTF-8 whose concatenation is the full decode. Each tokenizer is checked as
 * tokenizer.json and as GGUF. The default model's tokenizer (SmolLM2) is checked when
 * tools/fetch_model.sh has fetched it, else that test is skipped. Strings may hold U+0000 (read
 * with common/json.h, which keeps them whole): they are tokenized and compared by length.
 * Then: invalid UTF-8 input, a 1 MB input, the detokenizer API, load errors and concurrent use.
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "json.h"
#include "lt.h"
#include "tok_internal.h" /* tok_encode: the cache switch */
#include "tokenizer.h"

/* ---- fixtures ---- */

typedef struct {
    int32_t *v;
    int n;
} ivec_t;

typedef struct {
    int i; /* corpus index */
    ivec_t ids, nosp, gguf;
    bool has_nosp, has_gguf, nodec;
    char *dec, *dec_skip, *dec_bos; /* NULL: same as the previous level */
    size_t dec_n, dec_skip_n, dec_bos_n;
} rec_t;

typedef struct {
    char **s;
    size_t *len;
    int n;
} corpus_t;

typedef struct {
    ivec_t prefix, suffix;
    rec_t *r;
    int n;
} expected_t;

static corpus_t g_corpus;

static char *read_all(const char *path, size_t *len) {
    char *text, err[LT_ERR_LEN];
    if (lt_read_file(path, &text, len, err)) {
        print_error("%s\n", err);
        return NULL;
    }
    return text;
}

/* Calls fn for every line of a file. */
static void for_lines(char *text, void (*fn)(const char *line, void *ctx), void *ctx) {
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        if (*p) fn(p, ctx);
        if (!nl) break;
        p = nl + 1;
    }
}

/* A JSON line read whole: a string's "\u0000" stays in it (common/json.h). */
static cJSON *parse_line(const char *line) {
    cJSON *j = NULL;
    lt_json_error_t e;
    if (lt_json_parse(line, strlen(line), &j, &e)) fail_msg("%s: %s", line, e.message);
    return j;
}

/* A malloc'd copy of a parsed string's bytes (NULs restored); *n its length. */
static char *jbytes(const char *s, size_t *n) {
    char *d = strdup(s);
    *n = lt_json_bytes(d, d, strlen(d));
    d[*n] = '\0';
    return d;
}

static void corpus_line(const char *line, void *ctx) {
    corpus_t *c = ctx;
    cJSON *j = parse_line(line);
    assert_true(cJSON_IsString(j));
    c->s = realloc(c->s, (size_t)(c->n + 1) * sizeof *c->s);
    c->len = realloc(c->len, (size_t)(c->n + 1) * sizeof *c->len);
    c->s[c->n] = jbytes(j->valuestring, &c->len[c->n]);
    c->n++;
    cJSON_Delete(j);
}

static ivec_t jivec(const cJSON *a) {
    ivec_t v = {malloc(sizeof(int32_t) * (size_t)(cJSON_GetArraySize(a) + 1)), 0};
    const cJSON *e;
    cJSON_ArrayForEach(e, a) v.v[v.n++] = (int32_t)e->valuedouble;
    return v;
}

static char *jdup(const cJSON *o, const char *key, size_t *n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? jbytes(v->valuestring, n) : NULL;
}

static void expected_line(const char *line, void *ctx) {
    expected_t *e = ctx;
    cJSON *j = parse_line(line);
    assert_non_null(j);
    if (cJSON_GetObjectItemCaseSensitive(j, "tokenizer")) {
        e->prefix = jivec(cJSON_GetObjectItemCaseSensitive(j, "prefix"));
        e->suffix = jivec(cJSON_GetObjectItemCaseSensitive(j, "suffix"));
        e->r = calloc((size_t)cJSON_GetObjectItemCaseSensitive(j, "n")->valueint + 1, sizeof *e->r);
    } else {
        rec_t *r = &e->r[e->n];
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, "i");
        r->i = x ? x->valueint : e->n;
        e->n++;
        r->ids = jivec(cJSON_GetObjectItemCaseSensitive(j, "ids"));
        r->nodec = cJSON_GetObjectItemCaseSensitive(j, "nodec") != NULL;
        if ((x = cJSON_GetObjectItemCaseSensitive(j, "nosp"))) r->nosp = jivec(x), r->has_nosp = 1;
        if ((x = cJSON_GetObjectItemCaseSensitive(j, "gguf"))) r->gguf = jivec(x), r->has_gguf = 1;
        r->dec = jdup(j, "dec", &r->dec_n);
        r->dec_skip = jdup(j, "dec_skip", &r->dec_skip_n);
        r->dec_bos = jdup(j, "dec_bos", &r->dec_bos_n);
    }
    cJSON_Delete(j);
}

/* tests/fixtures/tokenizers/<file>. */
static bool load_expected(const char *file_in, expected_t *e) {
    char file[256];
    snprintf(file, sizeof file, "tokenizers/%s", file_in);
    size_t len;
    char *text = read_all(tu_fixture(file), &len);
    if (!text) return false;
    memset(e, 0, sizeof *e);
    for_lines(text, expected_line, e);
    free(text);
    return true;
}

static void free_expected(expected_t *e) {
    for (int i = 0; i < e->n; i++) {
        free(e->r[i].ids.v);
        free(e->r[i].nosp.v);
        free(e->r[i].gguf.v);
        free(e->r[i].dec);
        free(e->r[i].dec_skip);
        free(e->r[i].dec_bos);
    }
    free(e->r);
    free(e->prefix.v);
    free(e->suffix.v);
}

static int setup_corpus(void **state) {
    (void)state;
    size_t len;
    char *text = read_all(tu_fixture("tokenizers/corpus.jsonl"), &len);
    if (!text) return -1;
    for_lines(text, corpus_line, &g_corpus);
    free(text);
    return g_corpus.n >= 2000 ? 0 : -1;
}

static int teardown_corpus(void **state) {
    (void)state;
    for (int i = 0; i < g_corpus.n; i++) free(g_corpus.s[i]);
    free(g_corpus.s);
    free(g_corpus.len);
    return 0;
}

/* ---- helpers ---- */

static bool ivec_eq(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static void print_ids(const char *label, const int32_t *v, int n) {
    char buf[512];
    size_t o = 0;
    for (int i = 0; i < n && o < sizeof buf - 16; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%d", i ? "," : "", v[i]);
    print_message("    %s (%d): [%s%s]\n", label, n, buf, o >= sizeof buf - 16 ? ",..." : "");
}

static void print_str(const char *label, const char *s, size_t n) {
    char buf[256];
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof buf - 8; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    print_message("    %s (%zu bytes): \"%s\"%s\n", label, n, buf,
                  o >= sizeof buf - 8 ? "..." : "");
}

static bool valid_utf8(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        int k = c < 0x80                   ? 1
                : (c >= 0xc2 && c <= 0xdf) ? 2
                : (c >= 0xe0 && c <= 0xef) ? 3
                : (c >= 0xf0 && c <= 0xf4) ? 4
                                           : 0;
        if (!k || i + (size_t)k > n) return false;
        unsigned lo = 0x80, hi = 0xbf;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
        for (int j = 1; j < k; j++) {
            unsigned d = u[i + (size_t)j];
            if (d < (j == 1 ? lo : 0x80) || d > (j == 1 ? hi : 0xbf)) return false;
        }
        i += (size_t)k;
    }
    return true;
}

static char *decode(const fe_tokenizer_t *t, const int32_t *ids, int n, bool skip, size_t *len) {
    char err[LT_ERR_LEN], *text;
    assert_int_equal(fe_tokenizer_decode(t, ids, n, skip, &text, len, err), 0);
    assert_int_equal(text[*len], '\0'); /* NUL-terminated (the text itself may hold NULs) */
    return text;
}

/* Feeds ids one by one: every release is valid UTF-8 and the concatenation equals `full`. */
static bool detok_matches(const fe_tokenizer_t *t, const int32_t *ids, int n, bool skip,
                          const char *full, size_t full_len) {
    char err[LT_ERR_LEN];
    fe_detok_t *d;
    assert_int_equal(fe_detok_create(t, skip, &d, err), 0);
    char *acc = malloc(full_len + 64);
    size_t got = 0;
    bool ok = true;
    for (int i = 0; i <= n && ok; i++) {
        const char *s;
        size_t len;
        int rc = i < n ? fe_detok_feed(d, ids[i], &s, &len, err) : fe_detok_flush(d, &s, &len, err);
        assert_int_equal(rc, 0);
        assert_int_equal(s[len], '\0');
        if (!valid_utf8(s, len) || got + len > full_len) {
            ok = false;
            break;
        }
        memcpy(acc + got, s, len);
        got += len;
    }
    ok = ok && got == full_len && memcmp(acc, full, full_len) == 0;
    free(acc);
    fe_detok_destroy(&d);
    assert_null(d);
    return ok;
}

static fe_tokenizer_t *load(const char *path) {
    char err[LT_ERR_LEN] = "";
    fe_tokenizer_t *t = NULL;
    int rc = fe_tokenizer_load(path, &t, err);
    if (rc) print_error("load %s: %s\n", path, err);
    assert_int_equal(rc, 0);
    assert_non_null(t);
    return t;
}

/* ---- the corpus against HF ---- */

typedef struct {
    int ids, special, nosp, dec, dec_skip, dec_bos, detok, detok_skip;
} fails_t;

#define SHOW 8 /* mismatches printed per check */

/* Every record of e against t. gguf: the tokenizer is the GGUF variant (its own ids where they
 * differ; special-token parsing is not compared there). */
static void check_records(const char *name, fe_tokenizer_t *t, const expected_t *e, bool gguf) {
    fails_t f = {0};
    char err[LT_ERR_LEN];
    uint64_t t0 = lt_now_ns();
    size_t bytes = 0;
    for (int k = 0; k < e->n; k++) {
        const rec_t *r = &e->r[k];
        int i = r->i;
        assert_true(i >= 0 && i < g_corpus.n);
        const char *s = g_corpus.s[i];
        size_t n = g_corpus.len[i];
        const ivec_t *want = gguf && r->has_gguf ? &r->gguf : &r->ids;
        int32_t *ids;
        int n_ids;
        bytes += n;
        assert_int_equal(fe_tokenizer_encode(t, s, n, false, true, &ids, &n_ids, err), 0);
        if (!ivec_eq(ids, n_ids, want->v, want->n) && f.ids++ < SHOW) {
            print_message("  [%s] string %d: ids differ\n", name, i);
            print_str("text", s, n);
            print_ids("want", want->v, want->n);
            print_ids("got ", ids, n_ids);
        }
        free(ids);
        /* add_special: the template's ids around the same ids. */
        assert_int_equal(fe_tokenizer_encode(t, s, n, true, true, &ids, &n_ids, err), 0);
        bool ok = n_ids == e->prefix.n + want->n + e->suffix.n &&
                  ivec_eq(ids, e->prefix.n, e->prefix.v, e->prefix.n) &&
                  ivec_eq(ids + e->prefix.n, want->n, want->v, want->n) &&
                  ivec_eq(ids + e->prefix.n + want->n, e->suffix.n, e->suffix.v, e->suffix.n);
        if (!ok && f.special++ < SHOW) {
            print_message("  [%s] string %d: ids with add_special differ\n", name, i);
            print_ids("got", ids, n_ids);
        }
        free(ids);
        /* parse_special = false (HF encode_special_tokens). */
        if (!(gguf && r->has_gguf)) {
            const ivec_t *w2 = r->has_nosp ? &r->nosp : want;
            assert_int_equal(fe_tokenizer_encode(t, s, n, false, false, &ids, &n_ids, err), 0);
            if (!ivec_eq(ids, n_ids, w2->v, w2->n) && f.nosp++ < SHOW) {
                print_message("  [%s] string %d: ids without special parsing differ\n", name, i);
                print_str("text", s, n);
                print_ids("want", w2->v, w2->n);
                print_ids("got ", ids, n_ids);
            }
            free(ids);
        }
        if (r->nodec) { /* HF panics: only check that streaming equals our decode */
            size_t len;
            char *text = decode(t, r->ids.v, r->ids.n, false, &len);
            if (!detok_matches(t, r->ids.v, r->ids.n, false, text, len) && f.detok++ < SHOW)
                print_message("  [%s] string %d: incremental detokenization differs\n", name, i);
            free(text);
            continue;
        }
        /* Decoding HF's ids. */
        const char *d_plain = r->dec ? r->dec : s;
        size_t n_plain = r->dec ? r->dec_n : n;
        const char *d_skip = r->dec_skip ? r->dec_skip : d_plain;
        size_t n_skip = r->dec_skip ? r->dec_skip_n : n_plain;
        const char *d_bos = r->dec_bos ? r->dec_bos : d_skip;
        size_t n_bos = r->dec_bos ? r->dec_bos_n : n_skip;
        size_t len;
        char *text = decode(t, r->ids.v, r->ids.n, false, &len);
        if ((len != n_plain || memcmp(text, d_plain, len)) && f.dec++ < SHOW) {
            print_message("  [%s] string %d: decode differs\n", name, i);
            print_str("want", d_plain, n_plain);
            print_str("got ", text, len);
        }
        if (!detok_matches(t, r->ids.v, r->ids.n, false, text, len) && f.detok++ < SHOW)
            print_message("  [%s] string %d: incremental detokenization differs\n", name, i);
        free(text);
        text = decode(t, r->ids.v, r->ids.n, true, &len);
        if ((len != n_skip || memcmp(text, d_skip, len)) && f.dec_skip++ < SHOW) {
            print_message("  [%s] string %d: decode(skip_special) differs\n", name, i);
            print_str("want", d_skip, n_skip);
            print_str("got ", text, len);
        }
        free(text);
        int nb = e->prefix.n + r->ids.n + e->suffix.n;
        int32_t *full = malloc(sizeof *full * (size_t)(nb + 1));
        memcpy(full, e->prefix.v, sizeof *full * (size_t)e->prefix.n);
        memcpy(full + e->prefix.n, r->ids.v, sizeof *full * (size_t)r->ids.n);
        memcpy(full + e->prefix.n + r->ids.n, e->suffix.v, sizeof *full * (size_t)e->suffix.n);
        text = decode(t, full, nb, true, &len);
        if ((len != n_bos || memcmp(text, d_bos, len)) && f.dec_bos++ < SHOW) {
            print_message("  [%s] string %d: decode(BOS + ids, skip_special) differs\n", name, i);
            print_str("want", d_bos, n_bos);
            print_str("got ", text, len);
        }
        if (!detok_matches(t, full, nb, true, text, len) && f.detok_skip++ < SHOW)
            print_message("  [%s] string %d: incremental detokenization (skip) differs\n", name, i);
        free(text);
        free(full);
    }
    double secs = (double)(lt_now_ns() - t0) / 1e9;
    print_message("  %s: %d strings, %zu bytes; mismatches: ids %d, add_special %d, "
                  "parse_special=false %d, decode %d, decode skip %d, decode bos %d, detok %d, "
                  "detok skip %d (%.2f s)\n",
                  name, e->n, bytes, f.ids, f.special, f.nosp, f.dec, f.dec_skip, f.dec_bos,
                  f.detok, f.detok_skip, secs);
    assert_int_equal(
        f.ids + f.special + f.nosp + f.dec + f.dec_skip + f.dec_bos + f.detok + f.detok_skip, 0);
}

static void check_corpus(const char *name, const char *path_in, bool gguf) {
    char path[4096], file[128];
    snprintf(path, sizeof path, "%s", path_in); /* tu_fixture's buffer is reused below */
    snprintf(file, sizeof file, "expected_%s.jsonl", name);
    expected_t e = {0};
    assert_true(load_expected(file, &e));
    assert_int_equal(e.n, g_corpus.n);
    fe_tokenizer_t *t = load(path);
    print_message("  %s: %s\n", path, fe_tokenizer_describe(t));
    check_records(name, t, &e, gguf);
    fe_tokenizer_destroy(&t);
    assert_null(t);
    free_expected(&e);
}

static void test_spm_json(void **state) {
    (void)state;
    check_corpus("spm", tu_fixture("tokenizers/spm"), false);
}
static void test_spm_gguf(void **state) {
    (void)state;
    check_corpus("spm", tu_fixture("tokenizers/spm.gguf"), true);
}
static void test_llama3_json(void **state) {
    (void)state;
    check_corpus("llama3", tu_fixture("tokenizers/llama3"), false);
}
static void test_llama3_gguf(void **state) {
    (void)state;
    check_corpus("llama3", tu_fixture("tokenizers/llama3.gguf"), true);
}
static void test_qwen2_json(void **state) {
    (void)state;
    check_corpus("qwen2", tu_fixture("tokenizers/qwen2"), false);
}
static void test_qwen2_gguf(void **state) {
    (void)state;
    check_corpus("qwen2", tu_fixture("tokenizers/qwen2.gguf"), true);
}
static void test_smollm2(void **state) {
    (void)state;
    const char *m = tu_default_model();
    if (!m) skip();
    check_corpus("smollm2", m, true);
}

/* Pipeline variants: a base tokenizer.json with sections replaced (variants.json), against HF on
 * every 4th corpus string. */
static void test_variants(void **state) {
    (void)state;
    size_t len;
    char *vtext = read_all(tu_fixture("tokenizers/variants.json"), &len);
    assert_non_null(vtext);
    cJSON *vs = cJSON_Parse(vtext);
    free(vtext);
    assert_true(cJSON_IsObject(vs));
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    int count = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, vs) {
        const char *base = cJSON_GetObjectItemCaseSensitive(v, "base")->valuestring;
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", base);
        char *btext = read_all(tu_fixture(rel), &len);
        assert_non_null(btext);
        cJSON *tj = cJSON_Parse(btext);
        free(btext);
        const cJSON *sec;
        cJSON_ArrayForEach(sec, v) {
            if (strcmp(sec->string, "base") == 0) continue;
            if (strcmp(sec->string, "model") == 0) {
                cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
                const cJSON *opt;
                cJSON_ArrayForEach(opt, sec) {
                    cJSON_ReplaceItemInObjectCaseSensitive(model, opt->string,
                                                           cJSON_Duplicate(opt, true));
                }
                continue;
            }
            cJSON_ReplaceItemInObjectCaseSensitive(tj, sec->string, cJSON_Duplicate(sec, true));
        }
        char *out = cJSON_PrintUnformatted(tj);
        cJSON_Delete(tj);
        char path[4200];
        snprintf(path, sizeof path, "%s/%s.json", dir, v->string);
        assert_int_equal(tu_write_file(path, out, strlen(out)), 0);
        free(out);
        char err[LT_ERR_LEN] = "";
        fe_tokenizer_t *t = NULL;
        int rc = fe_tokenizer_from_hf(path, NULL, &t, err);
        if (rc) print_error("variant %s: %s\n", v->string, err);
        assert_int_equal(rc, 0);
        char file[128];
        snprintf(file, sizeof file, "expected_v_%s.jsonl", v->string);
        expected_t e = {0};
        assert_true(load_expected(file, &e));
        check_records(v->string, t, &e, false);
        free_expected(&e);
        fe_tokenizer_destroy(&t);
        count++;
    }
    cJSON_Delete(vs);
    assert_true(count >= 8);
}

/* ---- invalid UTF-8 ---- */

/* Each input with the string Python's bytes.decode("utf-8", "replace") makes of it. */
static const struct {
    const char *in, *repaired;
} BAD[] = {
    {"\xff", "\xef\xbf\xbd"},
    {"a\xffz", "a\xef\xbf\xbdz"},
    {"abc\xe4\xbd", "abc\xef\xbf\xbd"},                       /* truncated 3-byte sequence */
    {"\xe4\xbd!", "\xef\xbf\xbd!"},                           /* ... followed by ASCII */
    {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong '/' */
    {"\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* overlong, 3 bytes */
    {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* lone surrogate U+D800 */
    {"x\xed\xbf\xbfy", "x\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdy"},
    {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
    {"\x80\x80hi", "\xef\xbf\xbd\xef\xbf\xbdhi"}, /* stray continuations */
    {"\xf0\x9f\x98", "\xef\xbf\xbd"},             /* emoji cut short */
    {"\xf0\x9f\x98 \xf0\x9f\x98\x80", "\xef\xbf\xbd \xf0\x9f\x98\x80"},
    {"<|im_start|>\xfe<|im_end|>", "<|im_start|>\xef\xbf\xbd<|im_end|>"},
    {"caf\xc3", "caf\xef\xbf\xbd"},
};

static void check_invalid(const char *path) {
    fe_tokenizer_t *t = load(path);
    print_message("  %s\n", fe_tokenizer_describe(t));
    char err[LT_ERR_LEN];
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        int32_t *a, *b;
        int na, nb;
        assert_int_equal(
            fe_tokenizer_encode(t, BAD[i].in, strlen(BAD[i].in), false, true, &a, &na, err), 0);
        assert_int_equal(fe_tokenizer_encode(t, BAD[i].repaired, strlen(BAD[i].repaired), false,
                                             true, &b, &nb, err),
                         0);
        if (!ivec_eq(a, na, b, nb)) print_message("  %s: bad input %zu\n", path, i);
        assert_true(ivec_eq(a, na, b, nb));
        size_t len;
        char *text = decode(t, a, na, false, &len);
        assert_true(valid_utf8(text, len));
        assert_true(detok_matches(t, a, na, false, text, len));
        free(text);
        free(a);
        free(b);
    }
    /* Random bytes: no crash, valid UTF-8 out, and decoding is a fixed point after one round. */
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 20; round++) {
        size_t n = 1 + (size_t)(round * 397 % 4000);
        char *buf = malloc(n);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = (char)(round % 2 ? (x & 0xff) : (0x80 | (x & 0x7f)));
            if (buf[i] == 0) buf[i] = 1;
        }
        int32_t *a, *b;
        int na, nb;
        assert_int_equal(fe_tokenizer_encode(t, buf, n, true, true, &a, &na, err), 0);
        size_t len, len2;
        char *text = decode(t, a, na, true, &len);
        assert_true(valid_utf8(text, len));
        assert_true(detok_matches(t, a, na, true, text, len));
        assert_int_equal(fe_tokenizer_encode(t, text, len, true, true, &b, &nb, err), 0);
        char *text2 = decode(t, b, nb, true, &len2);
        assert_int_equal(len, len2);
        assert_memory_equal(text, text2, len);
        free(text);
        free(text2);
        free(a);
        free(b);
        free(buf);
    }
    /* A byte-level tokenizer decodes byte tokens that do not form UTF-8 to U+FFFD. */
    fe_tokenizer_destroy(&t);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    check_invalid(tu_fixture("tokenizers/spm"));
    check_invalid(tu_fixture("tokenizers/llama3"));
    check_invalid(tu_fixture("tokenizers/qwen2.gguf"));
    if (tu_default_model()) check_invalid(tu_default_model());
}

/* ---- a large input ---- */

static char *big_text(size_t target, size_t *len) {
    char *buf = malloc(target + 4096);
    size_t n = 0;
    for (int i = 0; n < target; i = (i + 1) % g_corpus.n) {
        size_t k = g_corpus.len[i];
        if (k > 4000) continue;
        memcpy(buf + n, g_corpus.s[i], k);
        n += k;
        buf[n++] = ' ';
    }
    *len = n;
    return buf;
}

static void check_big(const char *path, const char *text, size_t n, bool lossless) {
    fe_tokenizer_t *t = load(path);
    char err[LT_ERR_LEN];
    int32_t *ids;
    int n_ids;
    uint64_t t0 = lt_now_ns();
    assert_int_equal(fe_tokenizer_encode(t, text, n, false, true, &ids, &n_ids, err), 0);
    double secs = (double)(lt_now_ns() - t0) / 1e9;
    print_message("  %s: %zu bytes -> %d tokens in %.3f s (%.1f MB/s)\n", path, n, n_ids, secs,
                  (double)n / 1e6 / secs);
    assert_true(secs < 20.0); /* generous: sanitizer builds on a busy machine */
    assert_true(n_ids > 0);
    /* The per-call piece cache changes nothing. */
    int32_t *ids2;
    int n2;
    assert_int_equal(tok_encode(t, text, n, false, true, false, &ids2, &n2, err), 0);
    assert_true(ivec_eq(ids, n_ids, ids2, n2));
    free(ids2);
    size_t len;
    char *back = decode(t, ids, n_ids, false, &len);
    if (lossless) {
        assert_int_equal(len, n);
        assert_memory_equal(back, text, n);
    }
    free(back);
    free(ids);
    fe_tokenizer_destroy(&t);
}

static void test_one_megabyte(void **state) {
    (void)state;
    size_t n;
    char *text = big_text(1 << 20, &n);
    check_big(tu_fixture("tokenizers/llama3"), text, n, false);
    check_big(tu_fixture("tokenizers/qwen2"), text, n, false);
    check_big(tu_fixture("tokenizers/spm.gguf"), text, n, false);
    if (tu_default_model()) check_big(tu_default_model(), text, n, false);
    free(text);
    /* One 1 MB "word": no spaces, a single BPE piece for the SentencePiece model (the heap path)
     * and 1 MB of whitespace for the byte-level regex. */
    size_t m = 1 << 20;
    char *word = malloc(m);
    for (size_t i = 0; i < m; i++) word[i] = "abcdefghijklmnopqrstuvwxyz"[(i * 7 + i / 3) % 26];
    check_big(tu_fixture("tokenizers/spm"), word, m, true);
    memset(word, ' ', m);
    check_big(tu_fixture("tokenizers/llama3"), word, m, true);
    free(word);
}

/* ---- API details ---- */

static void test_api(void **state) {
    (void)state;
    fe_tokenizer_t *t = load(tu_fixture("tokenizers/spm"));
    char err[LT_ERR_LEN];
    assert_int_equal(fe_tokenizer_bos(t), 1);
    assert_int_equal(fe_tokenizer_eos(t), 2);
    assert_true(fe_tokenizer_is_special(t, 1));
    assert_false(fe_tokenizer_is_special(t, 300));
    assert_false(fe_tokenizer_is_special(t, -1));
    assert_false(fe_tokenizer_is_special(t, 1 << 30));
    assert_string_equal(fe_tokenizer_token_text(t, 1), "<s>");
    assert_string_equal(fe_tokenizer_token_text(t, 3), "<0x00>");
    assert_string_equal(fe_tokenizer_token_text(t, -5), "");
    assert_int_equal(fe_tokenizer_token_id(t, "</s>", 4), 2);
    assert_int_equal(fe_tokenizer_token_id(t, "no such token", 13), -1);
    assert_true(fe_tokenizer_n_vocab(t) > 2000);

    /* Empty input: only the template's ids. */
    int32_t *ids;
    int n;
    assert_int_equal(fe_tokenizer_encode(t, "", 0, true, true, &ids, &n, err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    free(ids);
    assert_int_equal(fe_tokenizer_encode(t, "", 0, false, true, &ids, &n, err), 0);
    assert_int_equal(n, 0);
    free(ids);

    /* Out-of-range ids decode to nothing, as in HF. */
    int32_t bad[] = {-1, 1 << 30, fe_tokenizer_n_vocab(t)};
    size_t len;
    char *text = decode(t, bad, 3, false, &len);
    assert_int_equal(len, 0);
    free(text);

    /* The detokenizer: byte-fallback runs are held until they end, then released whole; reset
     * starts a new sequence (the leading space is stripped again). */
    const char *s = " héllo 你好 wörld";
    assert_int_equal(fe_tokenizer_encode(t, s, strlen(s), true, true, &ids, &n, err), 0);
    fe_detok_t *d;
    assert_int_equal(fe_detok_create(t, true, &d, err), 0);
    for (int round = 0; round < 2; round++) {
        char acc[128] = "";
        for (int i = 0; i <= n; i++) {
            const char *out;
            size_t ol;
            assert_int_equal(i < n ? fe_detok_feed(d, ids[i], &out, &ol, err)
                                   : fe_detok_flush(d, &out, &ol, err),
                             0);
            assert_true(valid_utf8(out, ol));
            strncat(acc, out, sizeof acc - strlen(acc) - 1);
        }
        assert_string_equal(acc, s);
        fe_detok_reset(d);
    }
    fe_detok_destroy(&d);
    assert_null(d);
    /* Without skip_special the BOS shows. */
    text = decode(t, ids, n, false, &len);
    assert_string_equal(text, "<s>  héllo 你好 wörld");
    free(text);
    free(ids);
    fe_tokenizer_destroy(&t);
    fe_tokenizer_destroy(&t); /* destroying NULL is a no-op */
}

/* ---- load errors ---- */

static void expect_load_error(const char *path, int code, const char *needle) {
    char err[LT_ERR_LEN] = "";
    fe_tokenizer_t *t = (fe_tokenizer_t *)1;
    int rc = fe_tokenizer_load(path, &t, err);
    if (rc != code || !strstr(err, needle))
        print_error("load %s: rc %d, err '%s' (want %d, '%s')\n", path, rc, err, code, needle);
    assert_int_equal(rc, code);
    assert_null(t);
    assert_non_null(strstr(err, needle));
}

static void write_json(const char *dir, const char *json) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(tu_write_file(path, json, strlen(json)), 0);
}

static void test_load_errors(void **state) {
    (void)state;
    expect_load_error("/nonexistent/model.gguf", LT_ERR_IO, "nonexistent");
    const char *dir = tu_tmpdir();
    assert_non_null(dir);
    expect_load_error(dir, LT_ERR_IO, "tokenizer.json");
    write_json(dir, "{not json");
    expect_load_error(dir, LT_ERR_FORMAT, "not a JSON object");
    write_json(dir, "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
    expect_load_error(dir, LT_ERR_UNSUPPORTED, "Unigram");
    write_json(dir, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                    "\"merges\": [\"a c\"]}}");
    expect_load_error(dir, LT_ERR_FORMAT, "not in the vocabulary");
    write_json(dir, "{\"normalizer\": {\"type\": \"Precompiled\"}, \"model\": {\"type\": \"BPE\", "
                    "\"vocab\": {\"a\": 0}, \"merges\": []}}");
    expect_load_error(dir, LT_ERR_UNSUPPORTED, "Precompiled");
    write_json(dir, "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                    "\"behavior\": \"Isolated\", \"invert\": false}, \"model\": {\"type\": "
                    "\"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    expect_load_error(dir, LT_ERR_UNSUPPORTED, "regex");
    /* A minimal valid one, without decoder: HF joins tokens with spaces. */
    write_json(dir, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
                    "\"merges\": [[\"a\", \"b\"]]}}");
    fe_tokenizer_t *t = load(dir);
    char err[LT_ERR_LEN];
    int32_t *ids;
    int n;
    assert_int_equal(fe_tokenizer_encode(t, "abba", 4, true, true, &ids, &n, err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 1);
    assert_int_equal(ids[2], 0);
    size_t len;
    char *text = decode(t, ids, n, false, &len);
    assert_string_equal(text, "ab b a");
    free(text);
    free(ids);
    fe_tokenizer_destroy(&t);
}

/* A GGUF holding only tokenizer metadata, written byte by byte: model, pre (NULL: absent),
 * tokens "a", "b", "ab", "<s>" (CONTROL) and the merge "a b". */
static void put(FILE *f, const void *p, size_t n) {
    assert_int_equal(fwrite(p, 1, n, f), n);
}
static void put_u32(FILE *f, uint32_t v) {
    put(f, &v, 4);
}
static void put_u64(FILE *f, uint64_t v) {
    put(f, &v, 8);
}
static void put_str(FILE *f, const char *s) {
    put_u64(f, strlen(s));
    put(f, s, strlen(s));
}

static void write_gguf(const char *path, const char *model, const char *pre, bool merges) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    put(f, "GGUF", 4);
    put_u32(f, 3);
    put_u64(f, 0);
    put_u64(f, 3 + (pre != NULL) + merges);
    put_str(f, "tokenizer.ggml.model");
    put_u32(f, LT_GGUF_STRING);
    put_str(f, model);
    if (pre) {
        put_str(f, "tokenizer.ggml.pre");
        put_u32(f, LT_GGUF_STRING);
        put_str(f, pre);
    }
    static const char *toks[] = {"a", "b", "ab", "<s>"};
    put_str(f, "tokenizer.ggml.tokens");
    put_u32(f, LT_GGUF_ARRAY);
    put_u32(f, LT_GGUF_STRING);
    put_u64(f, 4);
    for (int i = 0; i < 4; i++) put_str(f, toks[i]);
    put_str(f, "tokenizer.ggml.token_type");
    put_u32(f, LT_GGUF_ARRAY);
    put_u32(f, LT_GGUF_INT32);
    put_u64(f, 4);
    int32_t types[] = {1, 1, 1, 3};
    put(f, types, sizeof types);
    if (merges) {
        put_str(f, "tokenizer.ggml.merges");
        put_u32(f, LT_GGUF_ARRAY);
        put_u32(f, LT_GGUF_STRING);
        put_u64(f, 1);
        put_str(f, "a b");
    }
    assert_int_equal(fclose(f), 0);
}

static void test_gguf_variants(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/tok.gguf", tu_tmpdir());
    write_gguf(path, "bert", "default", true);
    expect_load_error(path, LT_ERR_UNSUPPORTED, "'bert' is not supported");
    write_gguf(path, "gpt2", "no-such-pre", true);
    expect_load_error(path, LT_ERR_UNSUPPORTED, "'no-such-pre' is not supported");
    write_gguf(path, "gpt2", "gpt2", false);
    expect_load_error(path, LT_ERR_FORMAT, "merges");
    /* No pre: GPT-2's regex, with a warning. The CONTROL token is special. */
    write_gguf(path, "gpt2", NULL, true);
    fe_tokenizer_t *t = load(path);
    char err[LT_ERR_LEN];
    int32_t *ids;
    int n;
    assert_int_equal(fe_tokenizer_encode(t, "<s>abba", 7, true, true, &ids, &n, err), 0);
    int32_t want[] = {3, 2, 1, 0};
    assert_true(ivec_eq(ids, n, want, 4));
    free(ids);
    assert_true(fe_tokenizer_is_special(t, 3));
    assert_int_equal(fe_tokenizer_bos(t), -1);
    fe_tokenizer_destroy(&t);
    /* SentencePiece without scores or merges. */
    write_gguf(path, "llama", NULL, false);
    expect_load_error(path, LT_ERR_FORMAT, "scores");
    /* A GGUF without tokenizer. */
    FILE *f = fopen(path, "wb");
    put(f, "GGUF", 4);
    put_u32(f, 3);
    put_u64(f, 0);
    put_u64(f, 0);
    fclose(f);
    expect_load_error(path, LT_ERR_NOTFOUND, "tokenizer.ggml.model");
}

/* ---- concurrent use of one tokenizer ---- */

typedef struct {
    const fe_tokenizer_t *t;
    int start, fails;
} worker_arg_t;

static void *encode_worker(void *p) {
    worker_arg_t *a = p;
    char err[LT_ERR_LEN];
    for (int k = 0; k < g_corpus.n; k++) {
        int i = (a->start + k) % g_corpus.n;
        int32_t *x, *y;
        int nx, ny;
        if (fe_tokenizer_encode(a->t, g_corpus.s[i], g_corpus.len[i], true, true, &x, &nx, err) ||
            fe_tokenizer_encode(a->t, g_corpus.s[i], g_corpus.len[i], true, true, &y, &ny, err)) {
            a->fails++;
            continue;
        }
        a->fails += !ivec_eq(x, nx, y, ny);
        free(x);
        free(y);
    }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    fe_tokenizer_t *t = load(tu_fixture("tokenizers/qwen2"));
    pthread_t th[4];
    worker_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg_t){t, i * 511, 0};
        assert_int_equal(pthread_create(&th[i], NULL, encode_worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].fails, 0);
    }
    fe_tokenizer_destroy(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api),           cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_gguf_variants), cmocka_unit_test(test_spm_json),
        cmocka_unit_test(test_spm_gguf),      cmocka_unit_test(test_llama3_json),
        cmocka_unit_test(test_llama3_gguf),   cmocka_unit_test(test_qwen2_json),
        cmocka_unit_test(test_qwen2_gguf),    cmocka_unit_test(test_smollm2),
        cmocka_unit_test(test_variants),      cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_one_megabyte),  cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup_corpus, teardown_corpus);
}
