/* Residual addition, out = a + b, and the in-place accumulate the model's
 * backward uses where one output feeds two layers (the residual stream):
 * the gradient of out passes unchanged to a and to b. */
#include "nn/layers.h"

DEFT_HOT void deft_add_forward(float *out, const float *a, const float *b,
                               size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

DEFT_HOT void deft_add_inplace(float *acc, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        acc[i] += x[i];
}
