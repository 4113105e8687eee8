/*
 * test_sampler.c — next-token sampling: filters never emit excluded tokens, the empirical
 * distribution at a fixed temperature matches softmax(logits / T) (chi-square), seeds reproduce,
 * penalties and logit_bias move the right logits, logprobs are the raw distribution's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"
#include "sampler.h"
#include "testutil.h"

#define V 64

static void make_logits(float *l, int n, unsigned seed) {
    wk_rng_t r;
    wk_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) l[i] = (float)(wk_rng_uniform(&r) * 6.0 - 3.0);
}

static int draw(wk_sampler_t *s, const ipc_params_t *p, wk_rng_t *rng, const float *l) {
    float buf[V];
    memcpy(buf, l, sizeof buf);
    wk_sample_result_t res;
    assert_int_equal(wk_sample(s, p, rng, buf, NULL, 0, NULL, 0, &res), 0);
    return res.token;
}

static void probs(const float *l, float t, double *p) {
    double mx = -1e30, sum = 0;
    for (int i = 0; i < V; i++) mx = l[i] / t > mx ? l[i] / t : mx;
    for (int i = 0; i < V; i++) sum += p[i] = exp(l[i] / t - mx);
    for (int i = 0; i < V; i++) p[i] /= sum;
}

static void test_greedy(void **state) {
    wk_sampler_t *s;
    char err[LT_ERR_LEN];
    assert_int_equal(wk_sampler_create(V, &s, err), 0);
    float l[V];
    make_logits(l, V, 1);
    int best = 0;
    for (int i = 1; i < V; i++)
        if (l[i] > l[best]) best = i;
    ipc_params_t p;
    ipc_params_defaults(&p);
    wk_rng_t rng;
    wk_rng_seed(&rng, 5);
    for (int i = 0; i < 10; i++) assert_int_equal(draw(s, &p, &rng, l), best);
    wk_sampler_destroy(&s);
}

static void test_filters_exclude(void **state) {
    wk_sampler_t *s;
    char err[LT_ERR_LEN];
    assert_int_equal(wk_sampler_create(V, &s, err), 0);
    float l[V];
    make_logits(l, V, 2);
    double pr[V];
    probs(l, 1.0f, pr);
    int order[V];
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 0; i < V; i++) /* selection sort by probability, descending */
        for (int j = i + 1; j < V; j++)
            if (pr[order[j]] > pr[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    bool in_topk[V] = {0}, in_topp[V] = {0}, in_minp[V] = {0};
    for (int i = 0; i < 5; i++) in_topk[order[i]] = true;
    double acc = 0;
    for (int i = 0; i < V && acc < 0.5; i++) {
        in_topp[order[i]] = true;
        acc += pr[order[i]];
    }
    for (int i = 0; i < V; i++) in_minp[i] = pr[i] >= 0.3 * pr[order[0]];

    wk_rng_t rng;
    wk_rng_seed(&rng, 99);
    ipc_params_t p;
    ipc_params_defaults(&p);
    p.temperature = 1.0f;
    p.top_k = 5;
    bool seen[V] = {0};
    for (int i = 0; i < 3000; i++) {
        int t = draw(s, &p, &rng, l);
        assert_true(in_topk[t]);
        seen[t] = true;
    }
    for (int i = 0; i < V; i++) assert_true(seen[i] == in_topk[i]); /* and all of them occur */
    ipc_params_defaults(&p);
    p.temperature = 1.0f;
    p.top_p = 0.5f;
    for (int i = 0; i < 3000; i++) assert_true(in_topp[draw(s, &p, &rng, l)]);
    ipc_params_defaults(&p);
    p.temperature = 1.0f;
    p.min_p = 0.3f;
    for (int i = 0; i < 3000; i++) assert_true(in_minp[draw(s, &p, &rng, l)]);
    wk_sampler_destroy(&s);
}

/* Pearson chi-square over the 64 tokens (63 degrees of freedom); the 0.1% critical value is
 * 103.4. A wrong temperature, an off-by-one in the cumulative walk or a biased generator all
 * push it far past that with 200,000 draws. */
static void test_chi_square(void **state) {
    wk_sampler_t *s;
    char err[LT_ERR_LEN];
    assert_int_equal(wk_sampler_create(V, &s, err), 0);
    float l[V];
    make_logits(l, V, 3);
    const float temps[] = {0.7f, 1.0f, 1.6f};
    for (int ti = 0; ti < 3; ti++) {
        double pr[V];
        probs(l, temps[ti], pr);
        ipc_params_t p;
        ipc_params_defaults(&p);
        p.temperature = temps[ti];
        wk_rng_t rng;
        wk_rng_seed(&rng, 1234 + ti);
        int counts[V] = {0};
        const int N = 200000;
        for (int i = 0; i < N; i++) counts[draw(s, &p, &rng, l)]++;
        double chi = 0;
        for (int i = 0; i < V; i++) {
            double e = N * pr[i];
            chi += (counts[i] - e) * (counts[i] - e) / e;
        }
        printf("temperature %.1f: chi-square %.1f (63 dof, critical 103.4)\n", temps[ti], chi);
        assert_true(chi < 103.4);
        /* and a wrong temperature is detected: the same counts against T * 1.15 */
        double wrong[V];
        probs(l, temps[ti] * 1.15f, wrong);
        double chi_wrong = 0;
        for (int i = 0; i < V; i++) {
            double e = N * wrong[i];
            chi_wrong += (counts[i] - e) * (counts[i] - e) / e;
        }
        assert_true(chi_wrong > 103.4);
    }
    wk_sampler_destroy(&s);
}

static void test_seed_reproducible(void **state) {
    wk_sampler_t *s;
    char err[LT_ERR_LEN];
    assert_int_equal(wk_sampler_create(V, &s, err), 0);
    float l[V];
    make_logits(l, V, 4);
    ipc_params_t p;
    ipc_params_defaults(&p);
    p.temperature = 1.0f;
    p.top_p = 0.9f;
    int a[50], b[50], c[50];
    wk_rng_t r1, r2, r3;
    wk_rng_seed(&r1, 42);
    wk_rng_seed(&r2, 42);
    wk_rng_seed(&r3, 43);
    for (int i = 0; i < 50; i++) {
        a[i] = draw(s, &p, &r1, l);
        b[i] = draw(s, &p, &r2, l);
        c[i] = draw(s, &p, &r3, l);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    wk_sampler_destroy(&s);
}

static void test_penalties_and_bias(void **state) {
    wk_sampler_t *s;
    char err[LT_ERR_LEN];
    assert_int_equal(wk_sampler_create(V, &s, err), 0);
    float l[V] = {0};
    l[3] = 2.0f;  /* best */
    l[7] = 1.5f;  /* second */
    l[9] = -1.0f; /* negative logit in the prompt */
    ipc_params_t p;
    ipc_params_defaults(&p);
    wk_rng_t rng;
    wk_rng_seed(&rng, 1);
    wk_sample_result_t res;
    float buf[V];

    /* repetition penalty 2 on prompt token 3: 2.0 -> 1.0, so 7 wins; -1.0 -> -2.0 */
    int32_t prompt[] = {3, 9};
    p.repetition_penalty = 2.0f;
    memcpy(buf, l, sizeof buf);
    assert_int_equal(wk_sample(s, &p, &rng, buf, prompt, 2, NULL, 0, &res), 0);
    assert_int_equal(res.token, 7);
    assert_float_equal(buf[3], 1.0f, 1e-6);
    assert_float_equal(buf[9], -2.0f, 1e-6);

    /* frequency 0.3 x 2 occurrences + presence 0.1 on output token 3: 2.0 - 0.7 = 1.3 */
    ipc_params_defaults(&p);
    p.frequency_penalty = 0.3f;
    p.presence_penalty = 0.1f;
    int32_t out[] = {3, 5, 3};
    memcpy(buf, l, sizeof buf);
    assert_int_equal(wk_sample(s, &p, &rng, buf, prompt, 2, out, 3, &res), 0);
    assert_int_equal(res.token, 7);
    assert_float_equal(buf[3], 1.3f, 1e-6);
    assert_float_equal(buf[5], -0.4f, 1e-6);
    assert_float_equal(buf[9], -1.0f, 1e-6); /* prompt-only: no presence/frequency penalty */
    /* the scratch is left clean: the same call again gives the same result */
    memcpy(buf, l, sizeof buf);
    assert_int_equal(wk_sample(s, &p, &rng, buf, prompt, 2, out, 3, &res), 0);
    assert_float_equal(buf[3], 1.3f, 1e-6);

    /* logit_bias forces a token */
    ipc_params_defaults(&p);
    p.n_logit_bias = 1;
    p.logit_bias_ids[0] = 11;
    p.logit_bias[0] = 100.0f;
    memcpy(buf, l, sizeof buf);
    assert_int_equal(wk_sample(s, &p, &rng, buf, NULL, 0, NULL, 0, &res), 0);
    assert_int_equal(res.token, 11);
    wk_sampler_destroy(&s);
}

static void test_logprobs(void **state) {
    wk_sampler_t *s;
    char err[LT_ERR_LEN];
    assert_int_equal(wk_sampler_create(V, &s, err), 0);
    float l[V], buf[V];
    make_logits(l, V, 6);
    double pr[V];
    probs(l, 1.0f, pr);
    ipc_params_t p;
    ipc_params_defaults(&p);
    p.temperature = 0.5f; /* logprobs stay those of the raw distribution */
    p.logprobs = 5;
    wk_rng_t rng;
    wk_rng_seed(&rng, 8);
    wk_sample_result_t res;
    memcpy(buf, l, sizeof buf);
    assert_int_equal(wk_sample(s, &p, &rng, buf, NULL, 0, NULL, 0, &res), 0);
    assert_float_equal(res.logprob, log(pr[res.token]), 1e-5);
    assert_int_equal(res.n_top, 5);
    for (int i = 0; i < 5; i++) {
        assert_float_equal(res.top_logprobs[i], log(pr[res.top_ids[i]]), 1e-5);
        if (i) assert_true(res.top_logprobs[i] <= res.top_logprobs[i - 1]);
    }
    for (int i = 0; i < V; i++)
        assert_true(pr[i] <= exp(res.top_logprobs[4]) + 1e-9 || i == res.top_ids[0] ||
                    i == res.top_ids[1] || i == res.top_ids[2] || i == res.top_ids[3] ||
                    i == res.top_ids[4]);
    wk_sampler_destroy(&s);
}

/* The one check a request's parameters pass before they reach the sampler (ipc_params_check):
 * out-of-range values and token ids are refused with the offending field named. */
static void test_params_check(void **state) {
    char err[LT_ERR_LEN];
    const char *field;
    ipc_params_t p;
    ipc_params_defaults(&p);
    assert_int_equal(ipc_params_check(&p, V, &field, err), 0);
    p.temperature = -1;
    assert_int_equal(ipc_params_check(&p, V, &field, err), LT_ERR_INVAL);
    assert_string_equal(field, "temperature");
    assert_non_null(strstr(err, "temperature"));
    ipc_params_defaults(&p);
    p.top_p = 0;
    assert_int_equal(ipc_params_check(&p, V, &field, err), LT_ERR_INVAL);
    assert_string_equal(field, "top_p");
    ipc_params_defaults(&p);
    p.temperature = NAN;
    assert_int_equal(ipc_params_check(&p, V, &field, err), LT_ERR_INVAL);
    ipc_params_defaults(&p);
    p.min_tokens = p.max_tokens + 1;
    assert_int_equal(ipc_params_check(&p, V, &field, err), LT_ERR_INVAL);
    assert_string_equal(field, "min_tokens");
    ipc_params_defaults(&p);
    p.n_logit_bias = 1;
    p.logit_bias_ids[0] = V;
    p.logit_bias[0] = 1;
    assert_int_equal(ipc_params_check(&p, V, &field, err), LT_ERR_INVAL);
    assert_string_equal(field, "logit_bias");
    assert_int_equal(ipc_params_check(&p, 0, &field, err), 0); /* vocabulary unknown: ids >= 0 */
    p.logit_bias[0] = 101;
    assert_int_equal(ipc_params_check(&p, 0, &field, err), LT_ERR_INVAL);
    ipc_params_defaults(&p);
    p.n_stop_ids = IPC_MAX_STOP_IDS + 1;
    assert_int_equal(ipc_params_check(&p, V, &field, err), LT_ERR_INVAL);
    assert_string_equal(field, "stop_token_ids");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_filters_exclude),
        cmocka_unit_test(test_chi_square),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_penalties_and_bias),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_params_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
