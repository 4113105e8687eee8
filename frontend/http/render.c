/*
 * render.c — OpenAI's response bodies from a call's choices: the full (non-streaming)
 * response, SSE chunks, logprobs in the completions and chat layouts, usage, timings, and the
 * request's log line.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "lt.h"

/* ---- response bodies ---- */

const char *fe_http_finish_str(lantern_finish_t f) {
    switch (f) {
    case LANTERN_FINISH_STOP: return "stop";
    case LANTERN_FINISH_LENGTH: return "length";
    case LANTERN_FINISH_ABORT: return "abort";
    case LANTERN_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

static void write_stop_reason(fe_jw_t *w, const call_t *c, const choice_t *ch) {
    fe_jw_key(w, "stop_reason");
    if (ch->stop_string >= 0)
        fe_jw_str(w, c->req.stops[ch->stop_string], c->req.stop_lens[ch->stop_string]);
    else if (ch->stop_token >= 0)
        fe_jw_int(w, ch->stop_token);
    else
        fe_jw_null(w);
}

double fe_http_tokens_per_s(int n_tokens, double decode_s) {
    return decode_s > 0 && n_tokens > 1 ? (n_tokens - 1) / decode_s : 0;
}

/* The whole request: prompts counted once each, every choice's tokens, the slowest choice's
 * phases (tokens/s is then over every choice). */
void fe_http_call_summary(const call_t *c, summary_t *t) {
    memset(t, 0, sizeof *t);
    for (int i = 0; i < c->req.n_prompts; i++) t->prompt += c->req.prompts[i].n_ids;
    for (int i = 0; i < c->n_ch; i++) {
        const choice_t *ch = &c->ch[i];
        t->completion += ch->n_tokens;
        if (ch->queue_s > t->queue_s) t->queue_s = ch->queue_s;
        if (ch->prefill_s > t->prefill_s) t->prefill_s = ch->prefill_s;
        if (ch->decode_s > t->decode_s) t->decode_s = ch->decode_s;
        if (ch->n_cached > t->cached) t->cached = ch->n_cached;
    }
}

static void write_timings(fe_jw_t *w, const summary_t *t) {
    fe_jw_key(w, "timings");
    fe_jw_obj(w);
    fe_jw_key(w, "queue_ms");
    fe_jw_num(w, t->queue_s * 1e3);
    fe_jw_key(w, "prefill_ms");
    fe_jw_num(w, t->prefill_s * 1e3);
    fe_jw_key(w, "decode_ms");
    fe_jw_num(w, t->decode_s * 1e3);
    fe_jw_key(w, "decode_tokens_per_s");
    fe_jw_num(w, fe_http_tokens_per_s(t->completion, t->decode_s));
    fe_jw_key(w, "prompt_tokens");
    fe_jw_int(w, t->prompt);
    fe_jw_key(w, "cached_prompt_tokens");
    fe_jw_int(w, t->cached);
    fe_jw_key(w, "completion_tokens");
    fe_jw_int(w, t->completion);
    fe_jw_end(w, '}');
}

static void token_text(const srv_t *s, int32_t id, char *out, size_t cap) {
    char *t = NULL, err[LT_ERR_LEN];
    size_t n;
    if (fe_tokenizer_decode(s->tok, &id, 1, false, &t, &n, err)) n = 0;
    snprintf(out, cap, "%.*s", (int)n, t ? t : "");
    free(t);
}

static void write_bytes(fe_jw_t *w, const char *t) {
    fe_jw_key(w, "bytes");
    fe_jw_arr(w);
    for (const unsigned char *p = (const unsigned char *)t; *p; p++) fe_jw_int(w, *p);
    fe_jw_end(w, ']');
}

/* Writes and forgets the logprob entries gathered so far. */
static void write_logprobs(fe_jw_t *w, const call_t *c, choice_t *ch) {
    fe_jw_key(w, "logprobs");
    if (c->req.params.logprobs < 0) {
        fe_jw_null(w);
        return;
    }
    char t[256];
    fe_jw_obj(w);
    if (c->req.kind == FE_OAI_CHAT) {
        fe_jw_key(w, "content");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) {
            const lantern_token_t *e = &ch->lp[i].tok;
            fe_jw_obj(w);
            token_text(c->s, e->id, t, sizeof t);
            fe_jw_key(w, "token");
            fe_jw_cstr(w, t);
            fe_jw_key(w, "logprob");
            fe_jw_num(w, e->logprob);
            write_bytes(w, t);
            fe_jw_key(w, "top_logprobs");
            fe_jw_arr(w);
            for (int k = 0; k < e->n_top && k < c->req.params.logprobs; k++) {
                fe_jw_obj(w);
                token_text(c->s, e->top_ids[k], t, sizeof t);
                fe_jw_key(w, "token");
                fe_jw_cstr(w, t);
                fe_jw_key(w, "logprob");
                fe_jw_num(w, e->top_logprobs[k]);
                write_bytes(w, t);
                fe_jw_end(w, '}');
            }
            fe_jw_end(w, ']');
            fe_jw_end(w, '}');
        }
        fe_jw_end(w, ']');
    } else {
        fe_jw_key(w, "tokens");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) {
            token_text(c->s, ch->lp[i].tok.id, t, sizeof t);
            fe_jw_cstr(w, t);
        }
        fe_jw_end(w, ']');
        fe_jw_key(w, "token_logprobs");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) fe_jw_num(w, ch->lp[i].tok.logprob);
        fe_jw_end(w, ']');
        fe_jw_key(w, "top_logprobs");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) {
            fe_jw_obj(w);
            /* the chosen token first, then the alternatives (vLLM's layout) */
            token_text(c->s, ch->lp[i].tok.id, t, sizeof t);
            fe_jw_key(w, t);
            fe_jw_num(w, ch->lp[i].tok.logprob);
            for (int k = 0; k < ch->lp[i].tok.n_top && k < c->req.params.logprobs; k++) {
                if (ch->lp[i].tok.top_ids[k] == ch->lp[i].tok.id) continue;
                token_text(c->s, ch->lp[i].tok.top_ids[k], t, sizeof t);
                fe_jw_key(w, t);
                fe_jw_num(w, ch->lp[i].tok.top_logprobs[k]);
            }
            fe_jw_end(w, '}');
        }
        fe_jw_end(w, ']');
        fe_jw_key(w, "text_offset");
        fe_jw_arr(w);
        for (int i = 0; i < ch->n_lp; i++) fe_jw_int(w, (long long)ch->lp[i].offset);
        fe_jw_end(w, ']');
    }
    fe_jw_end(w, '}');
    ch->n_lp = 0;
}

static void write_usage(fe_jw_t *w, const summary_t *t) {
    fe_jw_key(w, "usage");
    fe_jw_obj(w);
    fe_jw_key(w, "prompt_tokens");
    fe_jw_int(w, t->prompt);
    fe_jw_key(w, "completion_tokens");
    fe_jw_int(w, t->completion);
    fe_jw_key(w, "total_tokens");
    fe_jw_int(w, t->prompt + t->completion);
    fe_jw_end(w, '}');
}

static void write_head(fe_jw_t *w, const call_t *c, bool chunk) {
    bool chat = c->req.kind == FE_OAI_CHAT;
    fe_jw_key(w, "id");
    fe_jw_cstr(w, c->oid);
    fe_jw_key(w, "object");
    fe_jw_cstr(w, chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    fe_jw_key(w, "created");
    fe_jw_int(w, c->created);
    fe_jw_key(w, "model");
    fe_jw_cstr(w, c->s->served_name);
}

void fe_http_build_full(call_t *c, const summary_t *t, lt_buf_t *b) {
    bool chat = c->req.kind == FE_OAI_CHAT;
    fe_jw_t w;
    fe_jw_init(&w, b);
    fe_jw_obj(&w);
    write_head(&w, c, false);
    fe_jw_key(&w, "choices");
    fe_jw_arr(&w);
    for (int i = 0; i < c->n_ch; i++) {
        choice_t *ch = &c->ch[i];
        fe_jw_obj(&w);
        fe_jw_key(&w, "index");
        fe_jw_int(&w, i);
        if (chat) {
            fe_jw_key(&w, "message");
            fe_jw_obj(&w);
            fe_jw_key(&w, "role");
            fe_jw_cstr(&w, "assistant");
            fe_jw_key(&w, "content");
            fe_jw_str(&w, ch->text.data ? ch->text.data : "", ch->text.len);
            fe_jw_end(&w, '}');
        } else {
            fe_jw_key(&w, "text");
            fe_jw_str(&w, ch->text.data ? ch->text.data : "", ch->text.len);
        }
        write_logprobs(&w, c, ch);
        fe_jw_key(&w, "finish_reason");
        fe_jw_cstr(&w, fe_http_finish_str(ch->finish));
        write_stop_reason(&w, c, ch);
        fe_jw_end(&w, '}');
    }
    fe_jw_end(&w, ']');
    write_usage(&w, t);
    write_timings(&w, t);
    fe_jw_end(&w, '}');
}

/* One SSE event per choice with news: text, logprobs, its end. */
void fe_http_build_chunks(call_t *c) {
    bool chat = c->req.kind == FE_OAI_CHAT;
    fe_jw_t w;
    for (int i = 0; i < c->n_ch; i++) {
        choice_t *ch = &c->ch[i];
        bool ended = !ch->live && ch->finish != LANTERN_FINISH_NONE;
        bool role = chat && !ch->role_sent;
        if (ch->final_sent || (!role && ch->text.len == 0 && ch->n_lp == 0 && !ended)) continue;
        lt_buf_put(&c->out, "data: ", 6);
        fe_jw_init(&w, &c->out);
        fe_jw_obj(&w);
        write_head(&w, c, true);
        fe_jw_key(&w, "choices");
        fe_jw_arr(&w);
        fe_jw_obj(&w);
        fe_jw_key(&w, "index");
        fe_jw_int(&w, i);
        if (chat) {
            fe_jw_key(&w, "delta");
            fe_jw_obj(&w);
            if (role) {
                fe_jw_key(&w, "role");
                fe_jw_cstr(&w, "assistant");
                ch->role_sent = true;
            }
            if (ch->text.len || role) {
                fe_jw_key(&w, "content");
                fe_jw_str(&w, ch->text.data ? ch->text.data : "", ch->text.len);
            }
            fe_jw_end(&w, '}');
        } else {
            fe_jw_key(&w, "text");
            fe_jw_str(&w, ch->text.data ? ch->text.data : "", ch->text.len);
        }
        lt_buf_clear(&ch->text);
        write_logprobs(&w, c, ch);
        fe_jw_key(&w, "finish_reason");
        fe_jw_cstr(&w, ended ? fe_http_finish_str(ch->finish) : NULL);
        if (ended) {
            write_stop_reason(&w, c, ch);
            ch->final_sent = true;
        }
        fe_jw_end(&w, '}');
        fe_jw_end(&w, ']');
        if (ended) {
            summary_t t = {.prompt = c->req.prompts[ch->prompt].n_ids,
                           .cached = ch->n_cached,
                           .completion = ch->n_tokens,
                           .queue_s = ch->queue_s,
                           .prefill_s = ch->prefill_s,
                           .decode_s = ch->decode_s};
            write_timings(&w, &t);
        }
        fe_jw_end(&w, '}');
        lt_buf_put(&c->out, "\n\n", 2);
        if (ended && ch->finish == LANTERN_FINISH_ERROR) {
            fe_oai_error_t e;
            lt_buf_t eb = {0};
            fe_oai_fail(&e, 500, "server_error", NULL, NULL, "generation failed: %s", ch->error);
            fe_oai_error_json(&e, &eb);
            lt_buf_put(&c->out, "data: ", 6);
            lt_buf_put(&c->out, eb.data ? eb.data : "{}", eb.len);
            lt_buf_put(&c->out, "\n\n", 2);
            lt_buf_free(&eb);
        }
    }
    if (c->complete && !c->tail_sent) {
        if (c->req.include_usage) {
            lt_buf_put(&c->out, "data: ", 6);
            fe_jw_init(&w, &c->out);
            fe_jw_obj(&w);
            write_head(&w, c, true);
            fe_jw_key(&w, "choices");
            fe_jw_arr(&w);
            fe_jw_end(&w, ']');
            summary_t t;
            fe_http_call_summary(c, &t);
            write_usage(&w, &t);
            fe_jw_end(&w, '}');
            lt_buf_put(&c->out, "\n\n", 2);
        }
        lt_buf_put(&c->out, "data: [DONE]\n\n", 14);
        c->tail_sent = true;
    }
}

void fe_http_log_done(call_t *c) {
    if (!c->s->log_requests || !c->has_req) return;
    summary_t t;
    fe_http_call_summary(c, &t);
    LT_INFO("req=%s: %s %d, %d choice(s), prompt %d tokens (%d cached), completion %d "
            "tokens, queue %.1f ms, prefill %.1f ms, decode %.1f ms (%.1f tokens/s)",
            c->rid, c->route == R_CHAT ? "chat" : "completion", c->status, c->n_ch, t.prompt,
            t.cached, t.completion, t.queue_s * 1e3, t.prefill_s * 1e3, t.decode_s * 1e3,
            fe_http_tokens_per_s(t.completion, t.decode_s));
}
