/*
 * chat_template.c — a Jinja2-subset interpreter for model chat templates: the public API of
 * chat_template.h, which compiles a template (lexer.c, parser.c) and renders it (render.c).
 *
 * Why our own: the server must produce exactly the prompt that transformers' apply_chat_template
 * produces from the model's own template, in C and without Python. jinja2's observable behaviour
 * is the specification, checked against fixtures rendered by transformers itself
 * (tools/gen_chat_template_fixtures.py): its lexer's whitespace rules (trim_blocks,
 * lstrip_blocks, the '-' and '+' markers, one trailing newline dropped), its parser's precedence,
 * its scoping (a for-loop body is a fresh scope on every iteration, so state leaves a loop only
 * through namespace() objects), Python's str() and repr() of values, and transformers' tojson.
 *
 * Structure: the lexer turns the source into tokens (template data already trimmed), a
 * recursive-descent parser mirroring jinja2's builds an immutable tree of nodes in the template's
 * arena, and the renderer walks that tree. Everything a render creates lives in a per-render arena
 * freed in one go; strings are (pointer, length) slices into the context, the template or that
 * arena, so message contents are never copied until they are written out. Context values are
 * converted from cJSON only for names the template uses, on first use. The files and what they
 * share are listed in jinja_internal.h.
 *
 * Known differences from Python, kept deliberately small: integers are 64-bit (overflow is an
 * error, not a bignum); a JSON number with an integral value is an int (cJSON does not keep
 * whether it was written "1" or "1.0"); case mapping covers ASCII, Latin-1, Latin Extended-A,
 * Greek and Cyrillic; the generators jinja2's filters return (map, select, unique, items...) are
 * computed at once but behave as iterators (always true, no len(), errors only when consumed);
 * printing a function, range() or dict view differs from Python's repr; str.format() and a few
 * rarely used filters are refused by name.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

/* ---- errors ---- */

int jt_verrf(char *err, int code, int line, const char *fmt, va_list ap) {
    char msg[LT_ERR_LEN];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return lt_errf(err, code, "chat template line %d: %s", line, msg);
}

int jt_errf(char *err, int code, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = jt_verrf(err, code, line, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- public API ---- */

int fe_chat_template_compile(const char *src, size_t len, fe_chat_template_t **out, char *err) {
    *out = NULL;
    if (!src && len) return lt_errf(err, LT_ERR_INVAL, "chat template: NULL source");
    if (len > CT_MAX_SOURCE)
        return lt_errf(err, LT_ERR_RANGE, "chat template: %zu bytes, more than the %u allowed", len,
                       CT_MAX_SOURCE);
    fe_chat_template_t *t = calloc(1, sizeof *t);
    if (!t) return lt_errf(err, LT_ERR_NOMEM, "chat template: out of memory");
    t->arena.chunk_bytes = CT_ARENA_CHUNK;
    /* newlines normalised to \n, and one trailing newline dropped (keep_trailing_newline=False) */
    t->src = malloc(len + 1);
    if (!t->src) {
        free(t);
        return lt_errf(err, LT_ERR_NOMEM, "chat template: out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            t->src[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            t->src[n++] = src[i];
        }
    }
    if (n && t->src[n - 1] == '\n') n--;
    t->src[n] = 0;

    int rc = 0;
    for (int i = 0; i < NM__FIXED && !rc; i++)
        if (jt_intern(t, jt_fixed_names[i], strlen(jt_fixed_names[i])) != i) rc = LT_ERR_NOMEM;
    if (rc) {
        fe_chat_template_destroy(&t);
        return lt_errf(err, rc, "chat template: out of memory");
    }
    tok_t *toks;
    rc = jt_lex(t->src, n, &t->arena, &toks, err);
    if (!rc) {
        rc = jt_parse(t, toks, err);
        free(toks);
    }
    if (rc) {
        fe_chat_template_destroy(&t);
        return rc;
    }
    *out = t;
    return 0;
}

void fe_chat_template_destroy(fe_chat_template_t **t) {
    if (!t || !*t) return;
    lt_arena_free(&(*t)->arena);
    free((*t)->src);
    free(*t);
    *t = NULL;
}

int fe_chat_template_render(const fe_chat_template_t *t, const cJSON *ctx, char **out, size_t *len,
                            char *err) {
    *out = NULL;
    if (len) *len = 0;
    if (!t) return lt_errf(err, LT_ERR_INVAL, "chat template: NULL template");
    if (ctx && !cJSON_IsObject(ctx))
        return lt_errf(err, LT_ERR_INVAL, "chat template: the context must be a JSON object");
    char ebuf[LT_ERR_LEN] = "";
    render_t r = {.t = t,
                  .ctx = ctx,
                  .arena = {.chunk_bytes = CT_ARENA_CHUNK, .limit = CT_MAX_ARENA},
                  .out = {.limit = CT_MAX_OUTPUT},
                  .err = ebuf};
    r.root = jt_alloc(&r, (size_t)t->nnames * sizeof *r.root);
    int rc = 0;
    if (!r.root) rc = lt_errf(ebuf, LT_ERR_NOMEM, "chat template: out of memory");
    if (!rc) {
        memset(r.root, 0, (size_t)t->nnames * sizeof *r.root); /* VK_MISSING */
        rc = lt_buf_reserve(&r.out, 4096)
                 ? lt_errf(ebuf, LT_ERR_NOMEM, "chat template: out of memory")
                 : jt_exec_body(&r, t->body, t->nbody);
    }
    lt_arena_free(&r.arena);
    if (rc) {
        lt_buf_free(&r.out);
        if (err) snprintf(err, LT_ERR_LEN, "%s", ebuf);
        return rc;
    }
    r.out.data[r.out.len] = 0; /* macro calls and captures may have cut the text after its NUL */
    if (len) *len = r.out.len; /* the text may hold a NUL of the conversation's own */
    *out = lt_buf_take(&r.out);
    return 0;
}
