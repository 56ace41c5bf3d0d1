/* A least-squares problem split over K workers, for optimizer tests:
 * worker k holds A_k (M, D) and b_k (M,), and its gradient at x is
 * A_k^T (A_k x - b_k) / M. The model has three tensors. */
#ifndef DEFT_TEST_LSQ_H
#define DEFT_TEST_LSQ_H

#include <stdlib.h>

#include "testutil.h"

enum { LSQ_M = 48, LSQ_D = 64 };
static const size_t lsq_sizes[3] = {20, 13, 31};

typedef struct {
    int K;
    float *A; /* (K, M, D) */
    float *b; /* (K, M) */
} lsq_t;

static inline void lsq_init(lsq_t *p, int K, uint64_t seed)
{
    p->K = K;
    p->A = malloc(sizeof(float) * (size_t)K * LSQ_M * LSQ_D);
    p->b = malloc(sizeof(float) * (size_t)K * LSQ_M);
    deft_test_fill(p->A, (size_t)K * LSQ_M * LSQ_D, seed);
    deft_test_fill(p->b, (size_t)K * LSQ_M, seed + 1);
}

static inline void lsq_free(lsq_t *p)
{
    free(p->A);
    free(p->b);
}

/* grad (D,) = A_k^T (A_k x - b_k) / M, in double then rounded. */
static inline void lsq_grad(const lsq_t *p, int k, const float *x, float *grad)
{
    const float *A = p->A + (size_t)k * LSQ_M * LSQ_D, *b = p->b + (size_t)k * LSQ_M;
    double g[LSQ_D] = {0};
    for (int i = 0; i < LSQ_M; i++) {
        double r = -b[i];
        for (int j = 0; j < LSQ_D; j++)
            r += (double)A[i * LSQ_D + j] * x[j];
        for (int j = 0; j < LSQ_D; j++)
            g[j] += r * A[i * LSQ_D + j];
    }
    for (int j = 0; j < LSQ_D; j++)
        grad[j] = (float)(g[j] / LSQ_M);
}

static inline void lsq_grad_f64(const lsq_t *p, int k, const double *x,
                                double *grad)
{
    const float *A = p->A + (size_t)k * LSQ_M * LSQ_D, *b = p->b + (size_t)k * LSQ_M;
    for (int j = 0; j < LSQ_D; j++)
        grad[j] = 0;
    for (int i = 0; i < LSQ_M; i++) {
        double r = -b[i];
        for (int j = 0; j < LSQ_D; j++)
            r += (double)A[i * LSQ_D + j] * x[j];
        for (int j = 0; j < LSQ_D; j++)
            grad[j] += r * A[i * LSQ_D + j] / LSQ_M;
    }
}

/* The first tensor is a 4 x 5 matrix (only powersgd reads rows). */
static const size_t lsq_rows[3] = {4, 0, 0};

static inline const deft_layout_t *lsq_layout(void)
{
    static deft_layout_t layout = {3, lsq_sizes, lsq_rows};
    return &layout;
}

#endif
