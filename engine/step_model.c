/*
 * step_model.c — the scheduler's step-time model (step_model.h).
 */
#include "step_model.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#define F     ENG_STEP_FEATURES
#define DECAY 0.97 /* weight of a step one step older: ~33 steps of memory */

/* Priors (ms) for a 2-core CPU on a small model, deliberately on the slow side: before the first
 * steps the scheduler rather cuts prefill too short than stalls streams. They enter the sums as
 * PRIOR_STEPS pseudo-steps of typical shape (scale) and decay like any step, so a few dozen real
 * steps outweigh them. */
static const double k_prior[F] = {5.0, 2.0, 2.5, 0.5};
static const double k_scale[F] = {1.0, 16.0, 256.0, 100.0};
#define PRIOR_STEPS 2.0

void eng_step_model_init(eng_step_model_t *m) {
    memset(m, 0, sizeof *m);
    memcpy(m->coef, k_prior, sizeof k_prior);
    for (int i = 0; i < F; i++) {
        double l = PRIOR_STEPS * k_scale[i] * k_scale[i];
        m->xtx[i][i] = l;
        m->xty[i] = l * k_prior[i];
    }
}

/* Solves a x = b (F x F) by Gaussian elimination with partial pivoting; false when singular. */
static bool solve(double a[F][F], double *b, double *x) {
    for (int c = 0; c < F; c++) {
        int p = c;
        for (int r = c + 1; r < F; r++)
            if (fabs(a[r][c]) > fabs(a[p][c])) p = r;
        if (fabs(a[p][c]) < 1e-12) return false;
        if (p != c) {
            for (int k = 0; k < F; k++) {
                double t = a[c][k];
                a[c][k] = a[p][k];
                a[p][k] = t;
            }
            double t = b[c];
            b[c] = b[p];
            b[p] = t;
        }
        for (int r = c + 1; r < F; r++) {
            double f = a[r][c] / a[c][c];
            for (int k = c; k < F; k++) a[r][k] -= f * a[c][k];
            b[r] -= f * b[c];
        }
    }
    for (int c = F - 1; c >= 0; c--) {
        double s = b[c];
        for (int k = c + 1; k < F; k++) s -= a[c][k] * x[k];
        x[c] = s / a[c][c];
    }
    return true;
}

void eng_step_model_observe(eng_step_model_t *m, const double *x, double ms) {
    if (!(ms >= 0) || !isfinite(ms)) return;
    for (int i = 0; i < F; i++) {
        for (int j = 0; j < F; j++) m->xtx[i][j] = DECAY * m->xtx[i][j] + x[i] * x[j];
        m->xty[i] = DECAY * m->xty[i] + x[i] * ms;
    }
    m->n_steps++;
    /* X'X coef = X'y, the priors' pseudo-steps included; a vanishing ridge keeps it solvable when
     * the steps so far all had the same shape */
    double a[F][F], b[F], coef[F];
    for (int i = 0; i < F; i++) {
        for (int j = 0; j < F; j++) a[i][j] = m->xtx[i][j];
        a[i][i] += 1e-9 * k_scale[i] * k_scale[i];
        b[i] = m->xty[i];
    }
    if (!solve(a, b, coef)) return;
    for (int i = 0; i < F; i++) m->coef[i] = coef[i] > 0 ? coef[i] : 0;
}

double eng_step_model_predict(const eng_step_model_t *m, const double *x) {
    double t = 0;
    for (int i = 0; i < F; i++) t += m->coef[i] * x[i];
    return t;
}

int eng_step_model_prefill_fit(const eng_step_model_t *m, double ms, int start) {
    if (!(ms > 0)) return 0;
    /* n tokens from `start` cost c n + d (n start + n^2 / 2) / 1000 */
    double qa = m->coef[3] / 2000.0, qb = m->coef[2] + m->coef[3] * start / 1000.0;
    double n =
        qa > 1e-15 ? (-qb + sqrt(qb * qb + 4 * qa * ms)) / (2 * qa) : (qb > 1e-15 ? ms / qb : 1e9);
    return n >= 1e9 ? 1000000000 : (int)n;
}
