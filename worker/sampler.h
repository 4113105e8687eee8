/*
 * sampler.h — choosing the next token from a row of logits, per request (worker-internal; rank 0
 * samples for the whole tensor-parallel group).
 *
 * OpenAI/vLLM semantics: logit_bias is added first; repetition_penalty (prompt and output tokens:
 * positive logits divided, negative multiplied) and presence/frequency penalties (output tokens
 * only) follow; then temperature (0 means greedy), then min_p, top_k and top_p filter the
 * distribution, which is renormalised and sampled with the request's own generator, so the same
 * seed gives the same tokens. Logprobs are those of the model's raw distribution (before any of
 * the above), as vLLM reports them by default.
 *
 * Thread safety: a wk_sampler_t belongs to one thread at a time. Ownership: the sampler owns its
 * scratch buffers, sized once for the vocabulary; wk_sample() allocates nothing. HOT
 */
#ifndef WK_SAMPLER_H
#define WK_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "msg.h"

#define WK_MAX_LOGPROBS IPC_MAX_LOGPROBS

/* The parameters are the request's own ipc_params_t (ipc/msg.h), checked by the engine with
 * ipc_params_check before they reach the sampler. */

/* A request's generator: xoshiro256** seeded by splitmix64 from the seed. */
typedef struct wk_rng {
    uint64_t s[4];
} wk_rng_t;

void wk_rng_seed(wk_rng_t *r, uint64_t seed);
uint64_t wk_rng_next(wk_rng_t *r);
/* Uniform in [0, 1) with 53 random bits. */
double wk_rng_uniform(wk_rng_t *r);

typedef struct wk_sample_result {
    int32_t token;
    float logprob;                    /* of the chosen token, raw distribution */
    int n_top;                        /* alternatives filled, <= WK_MAX_LOGPROBS */
    int32_t top_ids[WK_MAX_LOGPROBS]; /* most likely first */
    float top_logprobs[WK_MAX_LOGPROBS];
} wk_sample_result_t;

typedef struct wk_sampler wk_sampler_t;

int wk_sampler_create(int vocab, wk_sampler_t **out, char *err);
void wk_sampler_destroy(wk_sampler_t **s);

/* Samples one token from logits (vocab), which it may modify. prompt/output are the request's
 * token history for the penalties (output counts are derived from `output`). HOT */
int wk_sample(wk_sampler_t *s, const ipc_params_t *p, wk_rng_t *rng, float *logits,
              const int32_t *prompt, int n_prompt, const int32_t *output, int n_output,
              wk_sample_result_t *res);

#endif
