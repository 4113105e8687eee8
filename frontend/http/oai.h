/*
 * oai.h — the OpenAI API surface of `lantern serve`, apart from HTTP: validating a completions or
 * chat-completions request body into token ids and engine parameters (with OpenAI's error shape
 * and status for every refusal), and a small JSON writer for responses and SSE chunks.
 *
 * Parsing reads JSON with cJSON; a request that passes comes back fully resolved: prompts
 * tokenized (a chat rendered with the model's own template first), sampling values defaulted from
 * the model's generation config and then OpenAI's defaults, lengths checked against the context.
 * Thread safety: fe_oai_ctx_t is read-only after set-up and shared by every HTTP thread; a
 * request and a writer belong to one thread at a time. Ownership: fe_oai_request_fini frees what
 * parsing allocated. The writer appends to a caller's lt_buf_t and allocates only when the buffer
 * grows (it reaches a request's steady size after the first chunks: the SSE path stops
 * allocating).
 */
#ifndef FE_OAI_H
#define FE_OAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "model_config.h"
#include "msg.h"
#include "stop.h"
#include "tokenizer.h"

/* ---- what every request is checked against ---- */

typedef struct fe_oai_ctx {
    const fe_tokenizer_t *tok;
    const fe_chat_template_t *tpl; /* NULL: the model has no chat template (chat is refused) */
    const char *served_name;
    int max_model_len;
    int vocab_size;
    /* the model's generation config (its gen_* fields; < 0 when absent), or NULL */
    const lt_model_config_t *gen;
} fe_oai_ctx_t;

/* A request's parameters before the body is read: ipc_params_defaults, then the sampling
 * defaults of the model's generation config, then OpenAI's (temperature 1). The one place these
 * defaults are decided, for `lantern serve` and `lantern generate` alike. */
void fe_oai_params_defaults(const fe_oai_ctx_t *ctx, ipc_params_t *p);

/* ---- errors in OpenAI's shape ---- */

typedef struct fe_oai_error {
    int status;       /* HTTP status */
    const char *type; /* "invalid_request_error", ... */
    const char *code; /* NULL or e.g. "context_length_exceeded" */
    char param[64];   /* "" when none */
    char message[512];
} fe_oai_error_t;

/* Fills e and returns LT_ERR_INVAL (status 400 unless given otherwise). */
int fe_oai_fail(fe_oai_error_t *e, int status, const char *type, const char *code,
                const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- a parsed request ---- */

typedef enum fe_oai_kind { FE_OAI_COMPLETION, FE_OAI_CHAT } fe_oai_kind_t;

#define FE_OAI_MAX_PROMPTS 64
#define FE_OAI_MAX_N       64

typedef struct fe_oai_prompt {
    int32_t *ids;
    int n_ids;
    char *text; /* the prompt as text (for echo and logs); decoded when it came as ids; text_len
                   bytes (a prompt may hold NULs), NUL-terminated */
    size_t text_len;
} fe_oai_prompt_t;

typedef struct fe_oai_request {
    fe_oai_kind_t kind;
    fe_oai_prompt_t *prompts;
    int n_prompts;
    int n;               /* choices per prompt */
    ipc_params_t params; /* resolved, defaulted and checked: what every choice asks the engine
                            (choice k of n with a seed samples with seed + k) */
    const char *stops[FE_MAX_STOPS]; /* point into the parsed JSON (kept in json); stop_lens[i]
                                        bytes each: a stop string may hold NULs */
    size_t stop_lens[FE_MAX_STOPS];
    int n_stops;
    bool echo; /* completions: the prompt text before the completion */
    bool skip_special, include_stop, stream, include_usage;
    const char *user; /* NULL when absent */
    /* when parsing rendered the chat template and tokenized (wall-clock ns; 0: did not), for
     * the caller's spans; tokenize_ns sums every prompt's tokenization */
    uint64_t render_start_ns, render_end_ns, tokenize_start_ns, tokenize_end_ns, tokenize_ns;
    void *json; /* the parsed body (cJSON *), owned */
} fe_oai_request_t;

/* Reads a body with common/json.h's strict reader (U+0000 kept as C0 80 in the tree's strings):
 * *json is the tree (cJSON *), or NULL with e filled: 400 "the body is not valid JSON: ..." (with
 * Jansson's reason, line and column) or, for an unpaired surrogate, 400 "the body is not valid
 * Unicode text: an unpaired UTF-16 surrogate (\ud800) in the string ending at line 1, column 19
 * ..."; param is the field where the reader knows it, else null. Every endpoint reads its body
 * with it. */
int fe_oai_parse_body(const char *body, size_t len, void **json, fe_oai_error_t *e);

/* Parses and validates a request body. On failure returns non-zero with e filled (status 400,
 * 404 for an unknown model, 503 never: the engine is not consulted). */
int fe_oai_parse(fe_oai_kind_t kind, const char *body, size_t len, const fe_oai_ctx_t *ctx,
                 fe_oai_request_t *r, fe_oai_error_t *e);
/* The same for a body already parsed (a cJSON object), which r takes over (fe_oai_request_fini
 * deletes it): for callers that build a request rather than receive one (`lantern generate`). */
int fe_oai_parse_json(fe_oai_kind_t kind, void *json, const fe_oai_ctx_t *ctx, fe_oai_request_t *r,
                      fe_oai_error_t *e);
void fe_oai_request_fini(fe_oai_request_t *r);

/* A JSON list of token ids (cJSON *) checked against the vocabulary into a malloc'd array;
 * `param` names the field in the error. */
int fe_oai_token_ids(const fe_oai_ctx_t *ctx, const void *json, const char *param, int32_t **ids,
                     int *n, fe_oai_error_t *e);

/* The body's optional "model" (cJSON object) must be a string naming the served model: 400 for
 * another type, 404 model_not_found for another name. */
int fe_oai_check_model(const fe_oai_ctx_t *ctx, const void *body_json, fe_oai_error_t *e);
/* NULL or the served name: 0; any other name: 404 model_not_found. */
int fe_oai_model_known(const fe_oai_ctx_t *ctx, const char *name, fe_oai_error_t *e);

/* Renders a chat (messages array and options as in a request body) into prompt text of *out_len
 * bytes (it may hold NULs the messages held): used by chat completions and /tokenize. The caller
 * frees *out. */
int fe_oai_render_chat(const fe_oai_ctx_t *ctx, const void *body_json, char **out, size_t *out_len,
                       fe_oai_error_t *e);

/* ---- JSON writer ---- */

/* Appends JSON to a buffer; `first` tracks whether a comma is due at each nesting level. */
typedef struct fe_jw {
    lt_buf_t *b;
    int depth;
    bool first[32];
    int err; /* sticky LT_ERR_NOMEM */
} fe_jw_t;

void fe_jw_init(fe_jw_t *w, lt_buf_t *b);
void fe_jw_obj(fe_jw_t *w);             /* { */
void fe_jw_arr(fe_jw_t *w);             /* [ */
void fe_jw_end(fe_jw_t *w, char close); /* } or ] */
void fe_jw_key(fe_jw_t *w, const char *k);
void fe_jw_str(fe_jw_t *w, const char *s, size_t n); /* escaped; invalid UTF-8 is kept as is */
void fe_jw_cstr(fe_jw_t *w, const char *s);          /* NULL writes null */
void fe_jw_int(fe_jw_t *w, long long v);
/* JSON has no infinities: -inf (a logprob of an excluded token) writes -9999.0, as OpenAI and
 * vLLM send it; +inf and NaN write null. */
void fe_jw_num(fe_jw_t *w, double v);
void fe_jw_bool(fe_jw_t *w, bool v);
void fe_jw_null(fe_jw_t *w);
void fe_jw_raw(fe_jw_t *w, const char *s); /* a value already in JSON */

/* The error body {"error": {...}}. */
void fe_oai_error_json(const fe_oai_error_t *e, lt_buf_t *out);

#endif
