/* Batch normalization over (B, C, HW): channel c is normalized over its
 * B*HW values. 2-d BN is HW = H*W, 1-d BN (on dense features) is HW = 1.
 * The same definitions as PyTorch's BatchNorm (eps 1e-5):
 *
 *   train:  y = gamma * (x - mean_B) / sqrt(var_B + eps) + beta, with the
 *           biased batch variance var_B, and the running statistics
 *           updated as r = (1 - momentum) r + momentum * stat, where the
 *           running variance takes the unbiased n/(n-1) var_B;
 *   eval:   y = gamma * (x - r_mean) / sqrt(r_var + eps) + beta.
 *
 * Per-channel sums are accumulated in double: a channel holds up to
 * B*H*W = 12,544 values at batch 16 on 28x28. They run in 4-double
 * vectors with independent accumulators: one double sum in sequence waits
 * on each add's latency, and took 16% of a preresnet20 step. */
#include "nn/layers.h"

#include <math.h>
#include <string.h>

#define BN_EPS 1e-5

typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
/* (a macro: a vector argument would change the ABI between the clones) */
#define LOAD4D(v, p)                                                           \
    do {                                                                       \
        v4f f_;                                                                \
        memcpy(&f_, (p), sizeof f_);                                           \
        (v) = __builtin_convertvector(f_, v4d);                                \
    } while (0)

/* The sums over p[0..n) of p[j] (dev = 0) or of (p[j] - m)^2 (dev = 1),
 * in double. */
DEFT_HOT static double plane_sum(const float *p, int n, double m, int dev)
{
    v4d a0 = {0}, a1 = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v4d u, v;
        LOAD4D(u, p + j);
        LOAD4D(v, p + j + 4);
        if (dev)
            u -= m, v -= m, u *= u, v *= v;
        a0 += u, a1 += v;
    }
    a0 += a1;
    double s = (a0[0] + a0[1]) + (a0[2] + a0[3]);
    for (; j < n; j++)
        s += dev ? (p[j] - m) * (p[j] - m) : p[j];
    return s;
}

/* Over p[0..n), the sums of dy[j] and of dy[j] * (x[j] - m) * is, in
 * double. */
DEFT_HOT static void plane_dsums(const float *dy, const float *x, int n,
                                 double m, double is, double *sdy,
                                 double *sdyx)
{
    v4d a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v4d d0, d1, x0, x1;
        LOAD4D(d0, dy + j);
        LOAD4D(d1, dy + j + 4);
        LOAD4D(x0, x + j);
        LOAD4D(x1, x + j + 4);
        a0 += d0, a1 += d1;
        b0 += d0 * ((x0 - m) * is), b1 += d1 * ((x1 - m) * is);
    }
    a0 += a1, b0 += b1;
    double s = (a0[0] + a0[1]) + (a0[2] + a0[3]);
    double q = (b0[0] + b0[1]) + (b0[2] + b0[3]);
    for (; j < n; j++)
        s += dy[j], q += dy[j] * ((x[j] - m) * is);
    *sdy += s, *sdyx += q;
}

/* One channel's mean and biased variance over B planes of HW. */
static void channel_stats(const float *x, int B, int C, int HW, int c,
                          double *mean, double *var)
{
    double s = 0.0;
    for (int i = 0; i < B; i++)
        s += plane_sum(x + ((size_t)i * C + c) * HW, HW, 0.0, 0);
    const double n = (double)B * HW, m = s / n;
    double q = 0.0;
    for (int i = 0; i < B; i++)
        q += plane_sum(x + ((size_t)i * C + c) * HW, HW, m, 1);
    *mean = m;
    *var = q / n;
}

/* dinp = k * (dout - a - (x - m) * is * bq) for channel c's planes. */
DEFT_HOT static void dinp_channel(float *dinp, const float *dout,
                                  const float *x, int B, int C, int HW, int c,
                                  float k, float a, float m, float is,
                                  float bq)
{
    for (int i = 0; i < B; i++) {
        const size_t o = ((size_t)i * C + c) * HW;
        for (int j = 0; j < HW; j++)
            dinp[o + j] = k * (dout[o + j] - a - (x[o + j] - m) * is * bq);
    }
}

/* out = relu?(scale * x + shift) for channel c's planes. */
DEFT_HOT static void affine_channel(float *out, const float *x, int B, int C,
                                    int HW, int c, float scale, float shift,
                                    int relu)
{
    for (int i = 0; i < B; i++) {
        const size_t o = ((size_t)i * C + c) * HW;
        for (int j = 0; j < HW; j++) {
            float v = scale * x[o + j] + shift;
            out[o + j] = relu && v < 0.0f ? 0.0f : v;  // NaN stays NaN
        }
    }
}

void deft_batchnorm_forward_train(float *out, float *mean, float *invstd,
                                  const float *x, const float *gamma,
                                  const float *beta, int B, int C, int HW,
                                  float *run_mean, float *run_var,
                                  float momentum, int relu)
{
    const double n = (double)B * HW;
    for (int c = 0; c < C; c++) {
        double m, v;
        channel_stats(x, B, C, HW, c, &m, &v);
        const double is = 1.0 / sqrt(v + BN_EPS);
        mean[c] = (float)m;
        invstd[c] = (float)is;
        if (run_mean) {
            const double unbiased = n > 1 ? v * n / (n - 1) : v;
            run_mean[c] = (float)((1.0 - momentum) * run_mean[c] + momentum * m);
            run_var[c] =
                (float)((1.0 - momentum) * run_var[c] + momentum * unbiased);
        }
        const float scale = (float)(gamma[c] * is);
        affine_channel(out, x, B, C, HW, c, scale,
                       (float)(beta[c] - gamma[c] * is * m), relu);
    }
}

void deft_batchnorm_forward_eval(float *out, const float *x,
                                 const float *gamma, const float *beta,
                                 const float *run_mean, const float *run_var,
                                 int B, int C, int HW, int relu)
{
    for (int c = 0; c < C; c++) {
        const double is = 1.0 / sqrt((double)run_var[c] + BN_EPS);
        affine_channel(out, x, B, C, HW, c, (float)(gamma[c] * is),
                       (float)(beta[c] - gamma[c] * is * run_mean[c]), relu);
    }
}

void deft_batchnorm_backward(float *dinp, float *dgamma, float *dbeta,
                             const float *dout, const float *x,
                             const float *mean, const float *invstd,
                             const float *gamma, int B, int C, int HW)
{
    const double n = (double)B * HW;
    for (int c = 0; c < C; c++) {
        const double m = mean[c], is = invstd[c];
        double sdy = 0.0, sdyx = 0.0;  // sum dy, sum dy * xhat
        for (int i = 0; i < B; i++) {
            const size_t o = ((size_t)i * C + c) * HW;
            plane_dsums(dout + o, x + o, HW, m, is, &sdy, &sdyx);
        }
        dgamma[c] = (float)sdyx;
        dbeta[c] = (float)sdy;
        if (!dinp)
            continue;
        // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
        const float k = (float)(gamma[c] * is);
        const float a = (float)(sdy / n), bq = (float)(sdyx / n);
        dinp_channel(dinp, dout, x, B, C, HW, c, k, a, (float)m, (float)is,
                     bq);
    }
}
