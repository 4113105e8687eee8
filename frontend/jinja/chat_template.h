/*
 * chat_template.h — renders a model's own chat template (GGUF `tokenizer.chat_template` or
 * tokenizer_config.json `chat_template`), a Jinja2 program, into the prompt text, byte for byte as
 * transformers' apply_chat_template does (jinja2 ImmutableSandboxedEnvironment with
 * trim_blocks=True, lstrip_blocks=True, the loopcontrols extension, transformers' own `tojson`
 * filter and its `raise_exception` / `strftime_now` globals). No template is hard-coded: we
 * interpret the subset of Jinja2 that chat templates use and refuse the rest at compile time.
 *
 * Thread safety: a compiled template is immutable; any number of threads may render it at once.
 * Ownership: fe_chat_template_compile copies what it needs from src; the caller keeps src. Render
 * borrows ctx (it must not change during the call) and returns a malloc'd string the caller frees.
 * Not on the hot path: one compile per model load, one render per chat request (a typical
 * 10-message conversation renders in a few microseconds).
 */
#ifndef FE_CHAT_TEMPLATE_H
#define FE_CHAT_TEMPLATE_H

#include <stddef.h>

#include <cjson/cJSON.h>

typedef struct fe_chat_template fe_chat_template_t;

/* Parses a template. An unsupported construct (a Jinja2 tag or filter we do not implement) is
 * LT_ERR_UNSUPPORTED with a message naming it and its line, e.g. "chat template line 3:
 * unsupported filter 'wordwrap'"; a syntax error (unclosed tag, unknown tag, bad expression) is
 * LT_ERR_FORMAT with its line. err (LT_ERR_LEN bytes, may be NULL) receives the message. */
int fe_chat_template_compile(const char *src, size_t len, fe_chat_template_t **out, char *err);

/* Frees a template and sets *t to NULL; NULL and *t == NULL are fine. */
void fe_chat_template_destroy(fe_chat_template_t **t);

/* Renders with a context object holding the template's variables, as transformers passes them:
 * "messages" (array of {role, content, ...}), "add_generation_prompt" (bool), "tools" and
 * "documents" (array or null: transformers always passes both, null when absent), "bos_token",
 * "eos_token" and any further keyword (e.g. "date_string", "enable_thinking"). On success *out is
 * a malloc'd NUL-terminated string of *len bytes (len may be NULL). A context string holding C0 80
 * (how common/json.h keeps U+0000 in a cJSON string) is the text with a NUL there, so the output
 * may hold NULs: use *len, not strlen.
 * Errors: raise_exception("msg") in the template is LT_ERR_INVAL with exactly "msg" in err; a
 * runtime error (undefined attribute of an undefined value, type error) is LT_ERR_INVAL with the
 * template line; a runaway template (too many loop iterations or calls, recursion, output or
 * memory past the limits) is LT_ERR_RANGE; a Python method we do not implement is
 * LT_ERR_UNSUPPORTED. */
int fe_chat_template_render(const fe_chat_template_t *t, const cJSON *ctx, char **out, size_t *len,
                            char *err);

/* The model's chat template source (GGUF tokenizer.chat_template or tokenizer_config.json's
 * chat_template), malloc'd. LT_ERR_NOTFOUND when the model has none. (source.c) */
int fe_chat_template_source(const char *model_path, char **src, char *err);

#endif
