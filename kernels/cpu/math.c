/*
 * math.c — fp32 reference kernels of a decoder layer: RMSNorm, softmax, SwiGLU and rotary
 * embeddings. These are the CPU backend's path and the specification every other backend is
 * tested against. See kernels.h. (Matrix products: qmatmul.c.)
 */
#include "kernels.h"

#include <math.h>

/* ---- normalisation and activations ---- */

void kn_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    /* HOT */
    double ss = 0.0; /* double: keeps the sum stable for wide hidden sizes */
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

void kn_softmax(float *x, int n) {
    /* HOT */
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void kn_swiglu(float *gate, const float *up, int n) {
    /* HOT */
#pragma omp simd
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + kn_expf_v(-g)) * up[i];
    }
}

/* ---- rotary embedding ---- */

void kn_rope_table(float *cs, int head_dim, int pos, const float *inv_freq, float attn_factor) {
    for (int i = 0; i < head_dim / 2; i++) {
        /* angle in double: positions up to 1e6 times frequencies near 1 lose bits in fp32 */
        double angle = (double)pos * (double)inv_freq[i];
        cs[2 * i] = (float)cos(angle) * attn_factor;
        cs[2 * i + 1] = (float)sin(angle) * attn_factor;
    }
}

void kn_rope_cs(float *x, int head_dim, const float *cs, bool neox) {
    /* HOT */
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1];
        int a = neox ? i : 2 * i;
        int b = neox ? i + half : 2 * i + 1;
        float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

void kn_rope(float *x, int head_dim, int pos, const float *inv_freq, bool neox, float attn_factor) {
    /* HOT */
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        /* angle in double: positions up to 1e6 times frequencies near 1 lose bits in fp32 */
        double angle = (double)pos * (double)inv_freq[i];
        float c = (float)cos(angle) * attn_factor;
        float s = (float)sin(angle) * attn_factor;
        int a = neox ? i : 2 * i;
        int b = neox ? i + half : 2 * i + 1;
        float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}
