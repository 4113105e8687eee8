/*
 * tok_detok.c — decoding: HF's decoder chain run as a stream, so that one implementation serves
 * both fe_tokenizer_decode (feed everything, then flush) and incremental detokenization (feed one
 * id at a time). Their outputs are equal by construction.
 *
 * HF decoders work on a list of token strings (decode_chain). Here each stage receives pieces one
 * at a time; a piece is a whole token or, once a Fuse or ByteLevel stage has joined everything
 * into one string, a continuation ("cont") of the previous one. Stages hold back only what a
 * later token could still change:
 *   ByteLevel     maps characters back to bytes and repairs the byte stream like
 *                 String::from_utf8_lossy; an incomplete trailing sequence waits for more bytes.
 *   ByteFallback  collects a run of <0xXX> tokens; at its end the run becomes its UTF-8 text, or
 *                 one U+FFFD per byte if the run is not valid UTF-8 (HF's rule), so the run waits.
 *   Strip         drops up to `start` leading and `stop` trailing copies of a character per
 *                 token; trailing candidates wait for the token's end.
 *   Metaspace     turns the replacement character into a space, or drops it in the first token.
 *   Replace, Fuse are stateless.
 * Without a decoder HF joins the tokens with spaces; that is the sink's job. A last repair stage
 * guarantees valid UTF-8 even for a GGUF vocabulary holding invalid strings.
 * Known difference: a multi-character Replace pattern split across two pieces after a Fuse is not
 * replaced (no shipped tokenizer has one: Llama and Mistral replace the single "▁").
 */
#include <stdlib.h>
#include <string.h>

#include "lt.h"
#include "tok_internal.h"
#include "tokenizer.h"

/* ---- state ---- */

typedef struct {
    uint64_t n_tok;        /* tokens (non-continuation pieces) received */
    bool emitted;          /* Fuse/ByteLevel: produced their (single) output token already */
    lt_buf_t run;          /* ByteFallback: pending bytes */
    lt_utf8_lossy_t lossy; /* ByteLevel */
    int stripped;          /* Strip: leading characters dropped from the current token */
    bool leading;          /* Strip: still at the start of the current token */
    int held;              /* Strip: trailing characters held back */
    lt_buf_t tmp;          /* scratch for this stage's output */
} stage_t;

struct fe_detok {
    const fe_tokenizer_t *t;
    bool skip_special;
    stage_t st[TOK_MAX_STAGES];
    lt_utf8_lossy_t guard;
    bool any_token; /* sink: a token was joined (no-decoder mode) */
    lt_buf_t out;
    int rc;
};

void tok_dec_free(tok_dec_t *d) {
    free(d->pat);
    free(d->rep);
    memset(d, 0, sizeof *d);
}

static const char FFFD[3] = {(char)0xef, (char)0xbf, (char)0xbd};

/* ---- the chain ---- */

static void push(fe_detok_t *d, int k, const char *s, size_t n, bool cont);

static void sink(fe_detok_t *d, const char *s, size_t n, bool cont) {
    if (!d->t->has_decoder && !cont) {
        if (d->any_token && lt_buf_putc(&d->out, ' ')) d->rc = LT_ERR_NOMEM;
        d->any_token = true;
    }
    if (lt_utf8_lossy_push(&d->guard, s, n, &d->out)) d->rc = LT_ERR_NOMEM;
}

static void emit(fe_detok_t *d, int k, const char *s, size_t n, bool cont) {
    if (k + 1 < d->t->n_dec)
        push(d, k + 1, s, n, cont);
    else
        sink(d, s, n, cont);
}

static bool is_byte_token(const char *s, size_t n, uint8_t *out) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return false;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int x = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (x < 0) return false;
        v = v * 16 + x;
    }
    *out = (uint8_t)v;
    return true;
}

static void run_flush(fe_detok_t *d, int k) {
    stage_t *st = &d->st[k];
    if (!st->run.len) return;
    if (lt_utf8_valid_prefix(st->run.data, st->run.len) == st->run.len) {
        emit(d, k, st->run.data, st->run.len, false);
    } else {
        for (size_t i = 0; i < st->run.len; i++) emit(d, k, FFFD, 3, false);
    }
    lt_buf_clear(&st->run);
}

/* Appends s[0, n) to o with each occurrence of pat (scanned left to right, not overlapping)
 * replaced by rep. */
static int replace_all(lt_buf_t *o, const char *s, size_t n, const char *pat, size_t pat_len,
                       const char *rep, size_t rep_len) {
    size_t from = 0;
    for (size_t i = 0; i + pat_len <= n;) {
        if (memcmp(s + i, pat, pat_len) != 0) {
            i++;
            continue;
        }
        if (lt_buf_put(o, s + from, i - from) || lt_buf_put(o, rep, rep_len)) return LT_ERR_NOMEM;
        i += pat_len;
        from = i;
    }
    return lt_buf_put(o, s + from, n - from);
}

static void strip_end_token(stage_t *st) {
    st->held = 0; /* trailing characters of a finished token are dropped */
}

static void push(fe_detok_t *d, int k, const char *s, size_t n, bool cont) {
    const tok_dec_t *dc = &d->t->dec[k];
    stage_t *st = &d->st[k];
    if (!cont) st->n_tok++;
    lt_buf_t *o = &st->tmp;
    lt_buf_clear(o);
    switch (dc->kind) {
    case TOK_DEC_BYTELEVEL: {
        /* Map every character back to its byte; a token with a character outside the table
         * keeps its UTF-8 bytes (HF's rule). */
        lt_buf_t *raw = &st->run; /* scratch: ByteLevel never uses run otherwise */
        if (lt_buf_reserve(raw, n)) goto nomem;
        size_t rn;
        bool mapped = tok_bytelevel_decode(s, n, raw->data, &rn);
        int rc = lt_utf8_lossy_push(&st->lossy, mapped ? raw->data : s, mapped ? rn : n, o);
        lt_buf_clear(raw);
        if (rc) goto nomem;
        emit(d, k, lt_buf_str(o), o->len, st->emitted);
        st->emitted = true;
        return;
    }
    case TOK_DEC_FUSE:
        emit(d, k, s, n, st->emitted);
        st->emitted = true;
        return;
    case TOK_DEC_BYTEFALLBACK: {
        uint8_t byte;
        if (!cont && is_byte_token(s, n, &byte)) {
            if (lt_buf_putc(&st->run, (char)byte)) goto nomem;
            return;
        }
        run_flush(d, k);
        emit(d, k, s, n, cont);
        return;
    }
    case TOK_DEC_REPLACE:
        if (replace_all(o, s, n, dc->pat, dc->pat_len, dc->rep, dc->rep_len)) goto nomem;
        emit(d, k, lt_buf_str(o), o->len, cont);
        return;
    case TOK_DEC_METASPACE: {
        /* The replacement character becomes a space, except in the first token when a prefix
         * was prepended. */
        char ch[4];
        int chn = lt_utf8_encode(dc->ch, ch);
        bool drop = st->n_tok == 1 && dc->prepend;
        if (replace_all(o, s, n, ch, (size_t)chn, " ", drop ? 0 : 1)) goto nomem;
        emit(d, k, lt_buf_str(o), o->len, cont);
        return;
    }
    case TOK_DEC_STRIP: {
        char ch[4];
        int chn = lt_utf8_encode(dc->ch, ch);
        if (!cont) {
            strip_end_token(st);
            st->stripped = 0;
            st->leading = true;
        }
        for (size_t i = 0; i < n;) {
            size_t k2 = tok_char_len(s + i, n - i);
            bool is_ch = k2 == (size_t)chn && memcmp(s + i, ch, (size_t)chn) == 0;
            if (st->leading && st->stripped < dc->start && is_ch) {
                st->stripped++;
                i += k2;
                continue;
            }
            st->leading = false;
            if (dc->stop > 0 && is_ch) {
                if (st->held == dc->stop) {
                    if (lt_buf_put(o, ch, (size_t)chn)) goto nomem; /* oldest held goes out */
                } else {
                    st->held++;
                }
            } else {
                for (; st->held > 0; st->held--)
                    if (lt_buf_put(o, ch, (size_t)chn)) goto nomem;
                if (lt_buf_put(o, s + i, k2)) goto nomem;
            }
            i += k2;
        }
        emit(d, k, lt_buf_str(o), o->len, cont);
        return;
    }
    }
    return;
nomem:
    d->rc = LT_ERR_NOMEM;
}

static void flush(fe_detok_t *d, int k) {
    if (k >= d->t->n_dec) {
        if (lt_utf8_lossy_flush(&d->guard, &d->out)) d->rc = LT_ERR_NOMEM;
        return;
    }
    stage_t *st = &d->st[k];
    switch (d->t->dec[k].kind) {
    case TOK_DEC_BYTEFALLBACK: run_flush(d, k); break;
    case TOK_DEC_BYTELEVEL:
        lt_buf_clear(&st->tmp);
        if (lt_utf8_lossy_flush(&st->lossy, &st->tmp)) d->rc = LT_ERR_NOMEM;
        if (st->tmp.len) {
            emit(d, k, st->tmp.data, st->tmp.len, st->emitted);
            st->emitted = true;
        }
        break;
    case TOK_DEC_STRIP: strip_end_token(st); break;
    default: break;
    }
    flush(d, k + 1);
}

static void feed_id(fe_detok_t *d, int32_t id) {
    const fe_tokenizer_t *t = d->t;
    if (id < 0 || id >= t->n_vocab || !(t->flags[id] & TOK_F_PRESENT)) return;
    if (d->skip_special && (t->flags[id] & TOK_F_SPECIAL)) return;
    const char *s = t->pool + t->text_off[id];
    size_t n = t->text_len[id];
    if (t->n_dec)
        push(d, 0, s, n, false);
    else
        sink(d, s, n, false);
}

/* ---- API ---- */

int fe_detok_create(const fe_tokenizer_t *t, bool skip_special, fe_detok_t **out, char *err) {
    fe_detok_t *d = calloc(1, sizeof *d);
    if (!d) {
        *out = NULL;
        return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    }
    d->t = t;
    d->skip_special = skip_special;
    fe_detok_reset(d);
    *out = d;
    return 0;
}

void fe_detok_reset(fe_detok_t *d) {
    for (int k = 0; k < TOK_MAX_STAGES; k++) {
        stage_t *st = &d->st[k];
        st->n_tok = 0;
        st->emitted = false;
        lt_buf_clear(&st->run);
        st->lossy.n_pend = 0;
        st->stripped = 0;
        st->leading = true;
        st->held = 0;
    }
    d->guard.n_pend = 0;
    d->any_token = false;
    lt_buf_clear(&d->out);
    d->rc = 0;
}

void fe_detok_destroy(fe_detok_t **dp) {
    fe_detok_t *d = dp ? *dp : NULL;
    if (!d) return;
    for (int k = 0; k < TOK_MAX_STAGES; k++) {
        lt_buf_free(&d->st[k].run);
        lt_buf_free(&d->st[k].tmp);
    }
    lt_buf_free(&d->out);
    free(d);
    *dp = NULL;
}

static int release(fe_detok_t *d, const char **text, size_t *len, char *err) {
    if (d->rc || lt_buf_reserve(&d->out, 0)) {
        *text = "";
        *len = 0;
        return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    }
    d->out.data[d->out.len] = '\0';
    *text = d->out.data;
    *len = d->out.len;
    return 0;
}

int fe_detok_feed(fe_detok_t *d, int32_t id, const char **text, size_t *len, char *err) {
    lt_buf_clear(&d->out);
    feed_id(d, id);
    return release(d, text, len, err);
}

int fe_detok_flush(fe_detok_t *d, const char **text, size_t *len, char *err) {
    lt_buf_clear(&d->out);
    flush(d, 0);
    return release(d, text, len, err);
}

int fe_tokenizer_decode(const fe_tokenizer_t *t, const int32_t *ids, int n, bool skip_special,
                        char **text, size_t *len, char *err) {
    *text = NULL;
    *len = 0;
    fe_detok_t *d;
    int rc = fe_detok_create(t, skip_special, &d, err);
    if (rc) return rc;
    for (int i = 0; i < n && !d->rc; i++) feed_id(d, ids[i]);
    flush(d, 0);
    const char *s;
    rc = release(d, &s, len, err);
    if (rc == 0) *text = lt_buf_take(&d->out); /* s itself: release made sure there is memory */
    fe_detok_destroy(&d);
    return rc;
}
