/* Global average pooling: each (H, W) plane to its mean, as PyTorch's
 * AdaptiveAvgPool2d(1) followed by a flatten. */
#include "nn/layers.h"

void deft_gap_forward(float *out, const float *inp, int B, int C, int HW)
{
    const double inv = 1.0 / HW;
    for (size_t p = 0; p < (size_t)B * C; p++) {
        const float *x = inp + p * HW;
        double s = 0.0;
        for (int j = 0; j < HW; j++)
            s += x[j];
        out[p] = (float)(s * inv);
    }
}

void deft_gap_backward(float *dinp, const float *dout, int B, int C, int HW)
{
    const float inv = 1.0f / (float)HW;
    for (size_t p = 0; p < (size_t)B * C; p++) {
        const float g = dout[p] * inv;
        float *d = dinp + p * HW;
        for (int j = 0; j < HW; j++)
            d[j] = g;
    }
}
