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
 * B*H*W = 12,544 values at batch 16 on 28x28. */
#include "nn/layers.h"

#include <math.h>

#define BN_EPS 1e-5

/* One channel's mean and biased variance over B planes of HW. */
static void channel_stats(const float *x, int B, int C, int HW, int c,
                          double *mean, double *var)
{
    double s = 0.0;
    for (int i = 0; i < B; i++) {
        const float *p = x + ((size_t)i * C + c) * HW;
        for (int j = 0; j < HW; j++)
            s += p[j];
    }
    const double n = (double)B * HW, m = s / n;
    double q = 0.0;
    for (int i = 0; i < B; i++) {
        const float *p = x + ((size_t)i * C + c) * HW;
        for (int j = 0; j < HW; j++) {
            const double d = p[j] - m;
            q += d * d;
        }
    }
    *mean = m;
    *var = q / n;
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
            for (int j = 0; j < HW; j++) {
                sdy += dout[o + j];
                sdyx += dout[o + j] * ((x[o + j] - m) * is);
            }
        }
        dgamma[c] = (float)sdyx;
        dbeta[c] = (float)sdy;
        if (!dinp)
            continue;
        // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
        const float k = (float)(gamma[c] * is);
        const float a = (float)(sdy / n), bq = (float)(sdyx / n);
        const float fm = (float)m, fis = (float)is;
        for (int i = 0; i < B; i++) {
            const size_t o = ((size_t)i * C + c) * HW;
            for (int j = 0; j < HW; j++)
                dinp[o + j] = k * (dout[o + j] - a - (x[o + j] - fm) * fis * bq);
        }
    }
}
