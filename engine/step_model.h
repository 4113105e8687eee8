/*
 * step_model.h — how long a scheduler step will take, learned from the steps already run.
 *
 * A step's wall time (plan to results, what every running stream waits between two tokens) is
 * modelled as t = a + b * decode_rows + c * prefill_tokens + d * attended_kpos, where
 * attended_kpos is the sum over the step's rows of the positions each attends to, in thousands
 * (attention grows with the context, prefill's quadratically). The coefficients are refitted after
 * every step by exponentially weighted least squares (recent steps count most, so the model
 * follows load from other processes), pulled toward conservative priors while few steps are in,
 * and never negative. The scheduler asks it how many prefill tokens fit beside the step's decodes
 * within --max-step-ms (sched.c).
 *
 * Thread safety: plain data, owned by the scheduler.
 */
#ifndef LT_ENGINE_STEP_MODEL_H
#define LT_ENGINE_STEP_MODEL_H

#define ENG_STEP_FEATURES 4 /* 1, decode rows, prefill tokens, attended positions / 1000 */

typedef struct eng_step_model {
    double xtx[ENG_STEP_FEATURES][ENG_STEP_FEATURES]; /* decayed sums of x x^T */
    double xty[ENG_STEP_FEATURES];                    /* decayed sums of x t */
    double coef[ENG_STEP_FEATURES];                   /* ms: a, b, c, d */
    long long n_steps;                                /* steps observed */
} eng_step_model_t;

void eng_step_model_init(eng_step_model_t *m);

/* One finished step: its features x (x[0] = 1) and its wall time in milliseconds. */
void eng_step_model_observe(eng_step_model_t *m, const double *x, double ms);

/* Predicted milliseconds of a step with features x. */
double eng_step_model_predict(const eng_step_model_t *m, const double *x);

/* Prefill tokens that fit in `ms` milliseconds for one sequence whose chunk starts at position
 * `start` (its own attention included); 0 when none. */
int eng_step_model_prefill_fit(const eng_step_model_t *m, double ms, int start);

#endif
