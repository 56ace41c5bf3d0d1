/* The per-channel layers over oneDNN's channel-blocked layout (see
 * conv2d_dnnl.c): a tensor (B, C, H, W) held as (B, C/blk, HW, blk),
 * value (n, c, p) at ((n * C/blk + c/blk) * HW + p) * blk + c % blk, with
 * blk 8 or 16 and C a multiple of blk. The same definitions as their
 * plain-layout twins (batchnorm.c, avgpool.c, maxpool.c). BN sums in
 * float over runs of 32 pixels and in double across the runs, and takes
 * its variance in one pass about each channel's first value; the pool and
 * the GAP compute exactly as their twins. So the two layouts agree up to
 * float rounding.
 *
 * In this layout the blk channels of one pixel are contiguous, so every
 * loop here runs over them in the innermost position: one vector (or two)
 * per pixel, with a per-channel accumulator in each lane. */
#include "nn/layers.h"

#include <math.h>
#include <string.h>

#define BN_EPS 1e-5
#define MAXB 16
#define INLINE static inline __attribute__((always_inline))

/* Offset of block (n, cb)'s first value. */
INLINE size_t block_off(int n, int cb, int CB, int HW, int blk)
{
    return ((size_t)n * CB + cb) * HW * blk;
}

void deft_nn_to_blocked(float *dst, const float *src, int B, int C, int HW,
                        int blk)
{
    for (int n = 0; n < B; n++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < HW; p++)
                dst[block_off(n, c / blk, C / blk, HW, blk) + (size_t)p * blk +
                    c % blk] = src[((size_t)n * C + c) * HW + p];
}

void deft_nn_from_blocked(float *dst, const float *src, int B, int C, int HW,
                          int blk)
{
    for (int n = 0; n < B; n++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < HW; p++)
                dst[((size_t)n * C + c) * HW + p] =
                    src[block_off(n, c / blk, C / blk, HW, blk) +
                        (size_t)p * blk + c % blk];
}

/* ---- batch normalization -------------------------------------------------- */

/* The loops below run over one pixel's blk channels as blk/8 vectors of 8
 * floats (GCC's generic vectors; AVX in the DEFT_HOT clones), each lane
 * its own channel; sums go through 4-double vectors. */
typedef float v8f __attribute__((vector_size(32)));
typedef double v4d __attribute__((vector_size(32)));
#define NV (MAXB / 8)
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v8f))
#define STORE8(p, v) memcpy((p), &(v), sizeof(v8f))

/* Runs of up to RUN pixels are summed in float, 8 channels a vector, and
 * the runs' sums added up in double: the double work once per run rather
 * than per value, and each float sum short (error ~ RUN ulp at worst). */
#define RUN 32
#define LO4(v) __builtin_shufflevector(v, v, 0, 1, 2, 3)
#define HI4(v) __builtin_shufflevector(v, v, 4, 5, 6, 7)
/* acc[2i], acc[2i + 1] (4 doubles each) += the 8 floats of f */
#define ADD_RUN(acc, i, f)                                                     \
    do {                                                                       \
        (acc)[2 * (i)] += __builtin_convertvector(LO4(f), v4d);                \
        (acc)[2 * (i) + 1] += __builtin_convertvector(HI4(f), v4d);            \
    } while (0)

/* Over block cb of every image, lane j < blk: s1[j] = sum (x - k[j]) and
 * s2[j] = sum (x - k[j])^2, with k[j] the lane's first value, a shift
 * that keeps the one-pass variance s2/n - (s1/n)^2 clear of cancellation
 * when the mean is large against the spread. */
DEFT_HOT static void channel_moments(double *s1, double *s2, float *k,
                                     const float *x, int B, int CB, int cb,
                                     int HW, int blk)
{
    v4d a1[2 * NV] = {{0}}, a2[2 * NV] = {{0}};
    v8f kv[NV];
    const int nv = blk / 8;
    for (int i = 0; i < nv; i++) {
        LOAD8(kv[i], x + block_off(0, cb, CB, HW, blk) + 8 * i);
        STORE8(k + 8 * i, kv[i]);
    }
    for (int n = 0; n < B; n++) {
        const float *p = x + block_off(n, cb, CB, HW, blk);
        for (int t0 = 0; t0 < HW; t0 += RUN) {
            const int tn = HW - t0 < RUN ? HW - t0 : RUN;
            v8f f1[NV] = {{0}}, f2[NV] = {{0}};
            for (int t = 0; t < tn; t++, p += blk)
                for (int i = 0; i < nv; i++) {
                    v8f v;
                    LOAD8(v, p + 8 * i);
                    v -= kv[i];
                    f1[i] += v, f2[i] += v * v;
                }
            for (int i = 0; i < nv; i++) {
                ADD_RUN(a1, i, f1[i]);
                ADD_RUN(a2, i, f2[i]);
            }
        }
    }
    for (int q = 0; q < blk / 4; q++)
        for (int i = 0; i < 4; i++)
            s1[4 * q + i] = a1[q][i], s2[4 * q + i] = a2[q][i];
}

/* out = relu?(scale[j] * x + shift[j]) over block cb of every image. */
DEFT_HOT static void affine_block(float *out, const float *x, int B, int CB,
                                  int cb, int HW, const float *scale,
                                  const float *shift, int relu, int blk)
{
    v8f sc[NV], sh[NV];
    const int nv = blk / 8;
    const v8f zero = {0};
    for (int k = 0; k < nv; k++)
        LOAD8(sc[k], scale + 8 * k), LOAD8(sh[k], shift + 8 * k);
    for (int n = 0; n < B; n++) {
        const size_t o = block_off(n, cb, CB, HW, blk);
        const float *p = x + o;
        float *y = out + o;
        for (int t = 0; t < HW; t++, p += blk, y += blk)
            for (int k = 0; k < nv; k++) {
                v8f v;
                LOAD8(v, p + 8 * k);
                v = sc[k] * v + sh[k];
                if (relu)  // v < 0 ? 0 : v, which keeps a NaN
                    v = (v8f)((__typeof__(v < zero))v & ~(v < zero));
                STORE8(y + 8 * k, v);
            }
    }
}

void deft_batchnorm_forward_train_blocked(
    float *out, float *mean, float *invstd, const float *x, const float *gamma,
    const float *beta, int B, int C, int HW, float *run_mean, float *run_var,
    float momentum, int relu, int blk)
{
    const double n = (double)B * HW;
    const int CB = C / blk;
    for (int cb = 0; cb < CB; cb++) {
        double s1[MAXB], s2[MAXB], m[MAXB];
        float k[MAXB], scale[MAXB], shift[MAXB];
        channel_moments(s1, s2, k, x, B, CB, cb, HW, blk);
        for (int j = 0; j < blk; j++) {
            const int c = cb * blk + j;
            const double d = s1[j] / n, v = fmax(s2[j] / n - d * d, 0.0);
            const double is = 1.0 / sqrt(v + BN_EPS);
            m[j] = k[j] + d;
            mean[c] = (float)m[j];
            invstd[c] = (float)is;
            if (run_mean) {
                const double unbiased = n > 1 ? v * n / (n - 1) : v;
                run_mean[c] =
                    (float)((1.0 - momentum) * run_mean[c] + momentum * m[j]);
                run_var[c] = (float)((1.0 - momentum) * run_var[c] +
                                     momentum * unbiased);
            }
            scale[j] = (float)(gamma[c] * is);
            shift[j] = (float)(beta[c] - gamma[c] * is * m[j]);
        }
        affine_block(out, x, B, CB, cb, HW, scale, shift, relu, blk);
    }
}

void deft_batchnorm_forward_eval_blocked(float *out, const float *x,
                                         const float *gamma, const float *beta,
                                         const float *run_mean,
                                         const float *run_var, int B, int C,
                                         int HW, int relu, int blk)
{
    for (int cb = 0; cb < C / blk; cb++) {
        float scale[MAXB], shift[MAXB];
        for (int j = 0; j < blk; j++) {
            const int c = cb * blk + j;
            const double is = 1.0 / sqrt((double)run_var[c] + BN_EPS);
            scale[j] = (float)(gamma[c] * is);
            shift[j] = (float)(beta[c] - gamma[c] * is * run_mean[c]);
        }
        affine_block(out, x, B, C / blk, cb, HW, scale, shift, relu, blk);
    }
}

/* s[j] = sum dy, q[j] = sum dy * (x - m[j]) * is[j] over block cb of
 * every image, lane j < blk (runs in float, as channel_moments). With y,
 * a ReLU's output, dy is first masked to y > 0, in place. */
DEFT_HOT static void block_dsums(double *s, double *q, float *dy,
                                 const float *y, const float *x, int B,
                                 int CB, int cb, int HW, const float *m,
                                 const float *is, int blk)
{
    const v8f zero = {0};
    v4d a[2 * NV] = {{0}}, b[2 * NV] = {{0}};
    v8f mv[NV], iv[NV];
    const int nv = blk / 8;
    for (int i = 0; i < nv; i++) {
        LOAD8(mv[i], m + 8 * i);
        LOAD8(iv[i], is + 8 * i);
    }
    for (int n = 0; n < B; n++) {
        const size_t o = block_off(n, cb, CB, HW, blk);
        for (int t0 = 0; t0 < HW; t0 += RUN) {
            const int tn = HW - t0 < RUN ? HW - t0 : RUN;
            const size_t p0 = o + (size_t)t0 * blk;
            float *pd = dy + p0;
            const float *px = x + p0, *py = y ? y + p0 : NULL;
            v8f fa[NV] = {{0}}, fb[NV] = {{0}};
            for (int t = 0; t < tn; t++)
                for (int i = 0; i < nv; i++) {
                    const size_t e = (size_t)t * blk + 8 * i;
                    v8f d, v;
                    LOAD8(d, pd + e);
                    LOAD8(v, px + e);
                    if (py) {  // d * (y > 0), as deft_relu_backward
                        v8f u;
                        LOAD8(u, py + e);
                        d = (v8f)((__typeof__(u > zero))d & (u > zero));
                        STORE8(pd + e, d);
                    }
                    fa[i] += d;
                    fb[i] += d * ((v - mv[i]) * iv[i]);
                }
            for (int i = 0; i < nv; i++) {
                ADD_RUN(a, i, fa[i]);
                ADD_RUN(b, i, fb[i]);
            }
        }
    }
    for (int k = 0; k < blk / 4; k++)
        for (int i = 0; i < 4; i++)
            s[4 * k + i] = a[k][i], q[4 * k + i] = b[k][i];
}

/* dinp = k * (dout - a - (x - m) * is * bq), lane-wise, over block cb of
 * every image. */
DEFT_HOT static void block_dinp(float *dinp, const float *dout,
                                const float *x, int B, int CB, int cb, int HW,
                                const float *k, const float *a,
                                const float *m, const float *is,
                                const float *bq, int blk)
{
    v8f kv[NV], av[NV], mv[NV], iv[NV], bv[NV];
    const int nv = blk / 8;
    for (int i = 0; i < nv; i++) {
        LOAD8(kv[i], k + 8 * i), LOAD8(av[i], a + 8 * i);
        LOAD8(mv[i], m + 8 * i), LOAD8(iv[i], is + 8 * i);
        LOAD8(bv[i], bq + 8 * i);
    }
    for (int n = 0; n < B; n++) {
        const size_t o = block_off(n, cb, CB, HW, blk);
        for (size_t t = 0; t < (size_t)HW * blk; t += blk)
            for (int i = 0; i < nv; i++) {
                v8f d, v;
                LOAD8(d, dout + o + t + 8 * i);
                LOAD8(v, x + o + t + 8 * i);
                d = kv[i] * (d - av[i] - (v - mv[i]) * iv[i] * bv[i]);
                STORE8(dinp + o + t + 8 * i, d);
            }
    }
}

static void backward_block(float *dinp, float *dgamma, float *dbeta,
                           float *dout, const float *y, const float *x,
                           const float *mean, const float *invstd,
                           const float *gamma, int B, int CB, int cb, int HW,
                           int blk)
{
    const int c0 = cb * blk;
    double s[MAXB], q[MAXB];
    block_dsums(s, q, dout, y, x, B, CB, cb, HW, mean + c0, invstd + c0, blk);
    float k[MAXB], a[MAXB], bq[MAXB];
    const double n = (double)B * HW;
    for (int j = 0; j < blk; j++) {
        dgamma[c0 + j] = (float)q[j];
        dbeta[c0 + j] = (float)s[j];
        k[j] = (float)(gamma[c0 + j] * (double)invstd[c0 + j]);
        a[j] = (float)(s[j] / n);
        bq[j] = (float)(q[j] / n);
    }
    if (dinp)
        block_dinp(dinp, dout, x, B, CB, cb, HW, k, a, mean + c0, invstd + c0,
                   bq, blk);
}

void deft_batchnorm_backward_blocked(float *dinp, float *dgamma, float *dbeta,
                                     float *dout, const float *relu_y,
                                     const float *x, const float *mean,
                                     const float *invstd, const float *gamma,
                                     int B, int C, int HW, int blk)
{
    for (int cb = 0; cb < C / blk; cb++)
        backward_block(dinp, dgamma, dbeta, dout, relu_y, x, mean, invstd,
                       gamma, B, C / blk, cb, HW, blk);
}

/* ---- global average pooling -------------------------------------------- */

void deft_gap_forward_blocked(float *out, const float *inp, int B, int C,
                              int HW, int blk)
{
    const double inv = 1.0 / HW;
    for (int n = 0; n < B; n++)
        for (int cb = 0; cb < C / blk; cb++) {
            const float *x = inp + block_off(n, cb, C / blk, HW, blk);
            double s[MAXB] = {0};
            for (int p = 0; p < HW; p++, x += blk)
                for (int j = 0; j < blk; j++)
                    s[j] += x[j];
            for (int j = 0; j < blk; j++)
                out[(size_t)n * C + cb * blk + j] = (float)(s[j] * inv);
        }
}

void deft_gap_backward_blocked(float *dinp, const float *dout, int B, int C,
                               int HW, int blk)
{
    const float inv = 1.0f / (float)HW;
    for (int n = 0; n < B; n++)
        for (int cb = 0; cb < C / blk; cb++) {
            float *d = dinp + block_off(n, cb, C / blk, HW, blk);
            const float *g = dout + (size_t)n * C + cb * blk;
            for (int p = 0; p < HW; p++, d += blk)
                for (int j = 0; j < blk; j++)
                    d[j] = g[j] * inv;
        }
}

/* ---- 2x2 max-pool, stride 2 --------------------------------------------- */

void deft_maxpool2_forward_blocked(float *out, int32_t *argmax,
                                   const float *inp, int B, int C, int H,
                                   int W, int blk)
{
    const int OH = H / 2, OW = W / 2, CB = C / blk;
    for (int n = 0; n < B; n++)
        for (int cb = 0; cb < CB; cb++) {
            const float *x = inp + block_off(n, cb, CB, H * W, blk);
            const size_t o = block_off(n, cb, CB, OH * OW, blk);
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    const int32_t p0 = 2 * oy * W + 2 * ox;
                    const int32_t ps[4] = {p0, p0 + 1, p0 + W, p0 + W + 1};
                    float *y = out + o + ((size_t)oy * OW + ox) * blk;
                    int32_t *am = argmax + o + ((size_t)oy * OW + ox) * blk;
                    for (int j = 0; j < blk; j++) {
                        float m = x[(size_t)ps[0] * blk + j];
                        int32_t im = ps[0];
                        for (int t = 1; t < 4; t++) {
                            const float v = x[(size_t)ps[t] * blk + j];
                            if (v > m)  // first maximum wins ties
                                m = v, im = ps[t];
                        }
                        y[j] = m, am[j] = im;
                    }
                }
        }
}

void deft_maxpool2_backward_blocked(float *dinp, const float *dout,
                                    const int32_t *argmax, int B, int C, int H,
                                    int W, int blk)
{
    const int OH = H / 2, OW = W / 2, CB = C / blk;
    memset(dinp, 0, (size_t)B * C * H * W * sizeof(float));
    for (int n = 0; n < B; n++)
        for (int cb = 0; cb < CB; cb++) {
            float *d = dinp + block_off(n, cb, CB, H * W, blk);
            const size_t o = block_off(n, cb, CB, OH * OW, blk);
            for (size_t i = 0; i < (size_t)OH * OW * blk; i++)
                d[(size_t)argmax[o + i] * blk + i % blk] = dout[o + i];
        }
}
