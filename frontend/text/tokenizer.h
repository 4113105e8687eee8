/*
 * tokenizer.h — text <-> token ids for the frontend, giving the same ids as Hugging Face
 * `tokenizers` (what transformers and vLLM use), plus incremental detokenization for streaming.
 *
 * Supported: BPE models, both byte-level (GPT-2 family: SmolLM2, Qwen2/3, Llama 3) and
 * SentencePiece-style with byte fallback (Llama 2, Mistral), loaded from a GGUF file
 * (tokenizer.ggml.model "gpt2" or "llama") or from a Hugging Face directory (tokenizer.json and
 * tokenizer_config.json). The tokenizer.json pipeline is reproduced stage by stage: added tokens
 * (special, lstrip, rstrip, single_word, normalized), normalizers (NFC, NFD, NFKC, NFKD,
 * Lowercase, Prepend, Replace, Strip, Sequence), pre-tokenizers (Split, ByteLevel, Digits,
 * Metaspace, Whitespace, WhitespaceSplit, Punctuation, Sequence), the BPE model (merges by rank,
 * byte_fallback, unk/fuse_unk, ignore_merges), post-processors (TemplateProcessing, Roberta/Bert,
 * ByteLevel, Sequence) and decoders (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
 * Sequence). Anything else is refused at load with LT_ERR_UNSUPPORTED and its name.
 *
 * Invalid UTF-8 input is never an error: before anything else it is repaired the way Python's
 * bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy repair it (each
 * maximal invalid subsequence becomes U+FFFD), so the ids are those HF gives for the repaired
 * string. Decoding always yields valid UTF-8 (invalid byte sequences from byte tokens become
 * U+FFFD, exactly as HF's decoders do).
 *
 * Thread safety: a fe_tokenizer_t is immutable after load; any number of threads may call every
 * function taking a const fe_tokenizer_t * at once. A fe_detok_t belongs to one thread at a time.
 * Ownership: encode and decode allocate only their outputs (freed by the caller with free());
 * their working memory is allocated and freed within the call. Not on the engine's hot path: the
 * frontend tokenizes per request and detokenizes per generated token (fe_detok_feed does not
 * allocate once its buffers have grown to the request's needs).
 */
#ifndef FE_TOKENIZER_H
#define FE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct fe_tokenizer fe_tokenizer_t;

/* ---- loading ---- */

/* Builds the tokenizer described by a GGUF file's tokenizer.ggml.* metadata. Byte-level BPE
 * ("gpt2") takes its pre-tokenizer from tokenizer.ggml.pre: "default"/"gpt-2"/"gpt2" (GPT-2
 * regex), "smollm"/"starcoder"/"refact"/"codeshell"/"command-r" (digits one by one, then GPT-2),
 * "llama-bpe"/"llama3"/"llama-v3" (Llama 3 regex, ignore_merges),
 * "qwen2"/"qwen3"/"deepseek-r1-qwen" (Qwen2 regex and NFC, as in Qwen2's tokenizer.json). A missing
 * pre means "default" (a warning is logged); an unknown one is LT_ERR_UNSUPPORTED. "llama"
 * (SentencePiece) uses merges when the file has them, else ranks pairs by the merged token's score.
 * Token types CONTROL and UNKNOWN become special added tokens, USER_DEFINED plain added tokens.
 * add_bos/add_eos default to true/false for "llama" and false/false for "gpt2" when the keys are
 * absent. Returns 0, or LT_ERR_FORMAT/LT_ERR_UNSUPPORTED/LT_ERR_NOMEM with a message in err
 * (LT_ERR_LEN bytes). The tokenizer copies what it needs: g may be closed afterwards. */
int fe_tokenizer_from_gguf(const lt_gguf_t *g, fe_tokenizer_t **out, char *err);

/* Builds the tokenizer from tokenizer.json and, when tokenizer_config_path is not NULL and the file
 * exists, tokenizer_config.json: bos_token/eos_token give fe_tokenizer_bos/eos; for the classes
 * whose transformers tokenizer rebuilds its post-processor from add_bos_token/add_eos_token
 * (LlamaTokenizer, CodeLlamaTokenizer, GemmaTokenizer, GPTNeoXTokenizer, CohereTokenizer, with or
 * without "Fast"), those flags decide the ids added around the text, as transformers does;
 * otherwise tokenizer.json's post_processor decides. */
int fe_tokenizer_from_hf(const char *tokenizer_json_path, const char *tokenizer_config_path,
                         fe_tokenizer_t **out, char *err);

/* Loads from a model path: a directory (tokenizer.json + tokenizer_config.json) or a GGUF file. */
int fe_tokenizer_load(const char *model_path, fe_tokenizer_t **out, char *err);

void fe_tokenizer_destroy(fe_tokenizer_t **t);

/* ---- encoding ---- */

/* Tokenizes text[0..len) (any bytes; see the header comment on invalid UTF-8) into a malloc'd
 * array *ids of *n_ids ids (*ids may be NULL when *n_ids is 0). add_special: add the model's
 * BOS/EOS (HF add_special_tokens). parse_special: special tokens written in the text become their
 * ids (HF's default); when false their text is tokenized as plain text (HF
 * encode_special_tokens = true); non-special added tokens are matched either way.
 * Returns 0, LT_ERR_NOMEM, or LT_ERR_RANGE for input over 2 GiB. */
int fe_tokenizer_encode(const fe_tokenizer_t *t, const char *text, size_t len, bool add_special,
                        bool parse_special, int32_t **ids, int *n_ids, char *err);

/* ---- decoding ---- */

/* Decodes ids into a malloc'd NUL-terminated UTF-8 string *text of *len bytes, as HF's
 * decode(ids, skip_special_tokens) does. Ids outside the vocabulary are skipped (as HF does). */
int fe_tokenizer_decode(const fe_tokenizer_t *t, const int32_t *ids, int n, bool skip_special,
                        char **text, size_t *len, char *err);

/* ---- vocabulary ---- */

int fe_tokenizer_n_vocab(const fe_tokenizer_t *t);
/* -1 when the model has none. */
int32_t fe_tokenizer_bos(const fe_tokenizer_t *t);
int32_t fe_tokenizer_eos(const fe_tokenizer_t *t);
bool fe_tokenizer_is_special(const fe_tokenizer_t *t, int32_t id);
/* The vocabulary string of id, as stored in the model (byte-level tokens in their mapped form,
 * e.g. "Ġthe"); "" for an id out of range. Lives as long as t. */
const char *fe_tokenizer_token_text(const fe_tokenizer_t *t, int32_t id);
/* Id of a vocabulary string (added tokens included), or -1. */
int32_t fe_tokenizer_token_id(const fe_tokenizer_t *t, const char *text, size_t len);
/* One line describing the tokenizer for logs (source, model, vocabulary size). */
const char *fe_tokenizer_describe(const fe_tokenizer_t *t);

/* ---- incremental detokenization ---- */

/* Streaming decoder for one sequence: feed ids one at a time; each call releases the text that
 * is final (never a broken UTF-8 sequence; incomplete bytes, runs of byte-fallback tokens and
 * anything a later token could still change are held back). The concatenation of every release
 * and of fe_detok_flush equals fe_tokenizer_decode of all the ids fed (with the same
 * skip_special). Borrows t, which must outlive it. */
typedef struct fe_detok fe_detok_t;

int fe_detok_create(const fe_tokenizer_t *t, bool skip_special, fe_detok_t **out, char *err);
void fe_detok_destroy(fe_detok_t **d);
/* Forgets everything fed so far (keeps the buffers). */
void fe_detok_reset(fe_detok_t *d);
/* Feeds one id. *text and *len: the newly releasable text (possibly empty), valid until the next
 * call on d; *text is NUL-terminated. Returns 0 or LT_ERR_NOMEM. */
int fe_detok_feed(fe_detok_t *d, int32_t id, const char **text, size_t *len, char *err);
/* Ends the sequence: releases whatever was held back. d may then be reset and reused. */
int fe_detok_flush(fe_detok_t *d, const char **text, size_t *len, char *err);

#endif
