/*
 * sampler.c — next-token selection: penalties, temperature, min-p / top-k / top-p filtering and
 * seeded sampling, plus raw-distribution logprobs. See sampler.h for the semantics.
 *
 * Filtering never sorts the whole vocabulary: top-k and top-p work on a candidate prefix found
 * by quickselect (partition around the k-th largest), doubling k until the prefix holds the
 * requested probability mass, then sorting only that prefix.
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "lt.h"

/* ---- generator ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void wk_rng_seed(wk_rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t wk_rng_next(wk_rng_t *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double wk_rng_uniform(wk_rng_t *r) {
    return (double)(wk_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- sampler state ---- */

typedef struct cand {
    float logit;
    int32_t id;
} cand_t;

struct wk_sampler {
    int vocab;
    cand_t *cand;       /* (vocab) */
    uint32_t *count;    /* (vocab) occurrences in the output so far, rebuilt per call */
    uint8_t *in_prompt; /* (vocab) */
    float *raw;         /* (vocab) the unmodified logits, kept when logprobs are asked for */
};

int wk_sampler_create(int vocab, wk_sampler_t **out, char *err) {
    *out = NULL;
    wk_sampler_t *s = calloc(1, sizeof *s);
    if (!s) return lt_errf(err, LT_ERR_NOMEM, "out of memory");
    s->vocab = vocab;
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->count = calloc((size_t)vocab, sizeof *s->count);
    s->in_prompt = calloc((size_t)vocab, 1);
    s->raw = malloc((size_t)vocab * sizeof *s->raw);
    if (!s->cand || !s->count || !s->in_prompt || !s->raw) {
        wk_sampler_destroy(&s);
        return lt_errf(err, LT_ERR_NOMEM, "out of memory for a %d-token sampler", vocab);
    }
    *out = s;
    return LT_OK;
}

void wk_sampler_destroy(wk_sampler_t **sp) {
    wk_sampler_t *s = *sp;
    if (!s) return;
    free(s->cand);
    free(s->count);
    free(s->in_prompt);
    free(s->raw);
    free(s);
    *sp = NULL;
}

/* ---- selection helpers ---- */

static inline bool cand_before(const cand_t *a, const cand_t *b) {
    /* larger logit first; equal logits by smaller id, so results do not depend on the order
     * quickselect left them in */
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* Rearranges c[0..n) so that its k best (cand_before) come first, unordered. */
static void select_top(cand_t *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        cand_t pivot = c[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (cand_before(&c[i], &pivot)) i++;
            while (cand_before(&pivot, &c[j])) j--;
            if (i <= j) {
                cand_t t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
}

static int cand_cmp(const void *a, const void *b) {
    const cand_t *x = a, *y = b;
    return cand_before(x, y) ? -1 : cand_before(y, x) ? 1 : 0;
}

/* ---- sampling ---- */

/* The sum over candidates [0, n) of e^(logit - mx), in fp32 exponentials (kn_expf_v, vectorized)
 * added in double: over a whole vocabulary this is most of a sampled token's cost, and libm's
 * double exp was several times slower. */
static double cand_mass(const cand_t *c, int n, float mx) {
    double total = 0.0;
#pragma omp simd reduction(+ : total)
    for (int i = 0; i < n; i++) total += (double)kn_expf_v(c[i].logit - mx);
    return total;
}

int wk_sample(wk_sampler_t *s, const ipc_params_t *p, wk_rng_t *rng, float *logits,
              const int32_t *prompt, int n_prompt, const int32_t *output, int n_output,
              wk_sample_result_t *res) {
    /* HOT */
    int V = s->vocab;
    memset(res, 0, sizeof *res);

    /* logprobs of the raw distribution, before anything below changes the logits */
    bool want_lp = p->logprobs >= 0;
    float raw_lse = 0.0f;
    if (want_lp) {
        memcpy(s->raw, logits, (size_t)V * sizeof *logits);
        float raw_max = logits[0];
        for (int i = 1; i < V; i++) raw_max = logits[i] > raw_max ? logits[i] : raw_max;
        double raw_sum = 0.0;
#pragma omp simd reduction(+ : raw_sum)
        for (int i = 0; i < V; i++) raw_sum += (double)kn_expf_v(logits[i] - raw_max);
        raw_lse = raw_max + (float)log(raw_sum);
    }
    if (p->logprobs > 0) {
        for (int i = 0; i < V; i++) s->cand[i] = (cand_t){logits[i], i};
        int k = p->logprobs < V ? p->logprobs : V;
        select_top(s->cand, V, k);
        qsort(s->cand, (size_t)k, sizeof *s->cand, cand_cmp);
        res->n_top = k;
        for (int i = 0; i < k; i++) {
            res->top_ids[i] = s->cand[i].id;
            res->top_logprobs[i] = s->cand[i].logit - raw_lse;
        }
    }
    /* logit bias */
    for (int i = 0; i < p->n_logit_bias; i++) logits[p->logit_bias_ids[i]] += p->logit_bias[i];

    /* penalties */
    bool rep = p->repetition_penalty != 1.0f;
    bool pf = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (rep || pf) {
        for (int i = 0; i < n_output; i++)
            if (output[i] >= 0 && output[i] < V) s->count[output[i]]++;
        if (rep)
            for (int i = 0; i < n_prompt; i++)
                if (prompt[i] >= 0 && prompt[i] < V) s->in_prompt[prompt[i]] = 1;
        /* visit only the tokens that occur: prompt and output lists */
        for (int pass = 0; pass < 2; pass++) {
            const int32_t *list = pass ? output : prompt;
            int n = pass ? n_output : n_prompt;
            for (int i = 0; i < n; i++) {
                int t = list[i];
                if (t < 0 || t >= V) continue;
                if (!s->in_prompt[t] && !s->count[t]) continue; /* already applied */
                if (rep) {
                    float r = p->repetition_penalty;
                    logits[t] = logits[t] > 0 ? logits[t] / r : logits[t] * r;
                }
                if (s->count[t])
                    logits[t] -= p->frequency_penalty * (float)s->count[t] + p->presence_penalty;
                s->in_prompt[t] = 0; /* mark applied, and leave the scratch clean */
                s->count[t] = 0;
            }
        }
    }

    int chosen;
    if (p->temperature < 1e-5f) {
        chosen = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[chosen]) chosen = i;
    } else {
        float inv_t = 1.0f / p->temperature;
        for (int i = 0; i < V; i++) s->cand[i] = (cand_t){logits[i] * inv_t, i};
        int n = V;
        /* min_p: drop tokens whose probability is below min_p x the most likely one's */
        float mx = s->cand[0].logit;
        for (int i = 1; i < n; i++) mx = s->cand[i].logit > mx ? s->cand[i].logit : mx;
        if (p->min_p > 0.0f) {
            float cut = mx + logf(p->min_p);
            int m = 0;
            for (int i = 0; i < n; i++)
                if (s->cand[i].logit >= cut) s->cand[m++] = s->cand[i];
            n = m;
        }
        if (p->top_k > 0 && p->top_k < n) {
            select_top(s->cand, n, p->top_k);
            n = p->top_k;
        }
        if (p->top_p < 1.0f) {
            /* mass of the whole remaining set, then grow a sorted prefix until it holds top_p */
            double want = p->top_p * cand_mass(s->cand, n, mx);
            int k = n < 64 ? n : 64;
            for (;;) {
                select_top(s->cand, n, k);
                if (cand_mass(s->cand, k, mx) >= want || k == n) break;
                k = k * 2 < n ? k * 2 : n;
            }
            qsort(s->cand, (size_t)k, sizeof *s->cand, cand_cmp);
            /* keep the smallest prefix whose mass reaches top_p (at least one token) */
            double acc = 0.0;
            int keep = 0;
            while (keep < k) {
                acc += (double)kn_expf_v(s->cand[keep].logit - mx);
                keep++;
                if (acc >= want) break;
            }
            n = keep;
        }
        double u = wk_rng_uniform(rng) * cand_mass(s->cand, n, mx), acc = 0.0;
        chosen = s->cand[n - 1].id;
        for (int i = 0; i < n; i++) {
            acc += (double)kn_expf_v(s->cand[i].logit - mx);
            if (u < acc) {
                chosen = s->cand[i].id;
                break;
            }
        }
    }
    res->token = chosen;
    res->logprob = want_lp ? s->raw[chosen] - raw_lse : 0.0f;
    return LT_OK;
}
