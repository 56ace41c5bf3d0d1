/* Row access for the logistic problem, dense or CSR (convex.h): the dot
 * product of row i with a point, the update g += c * row i, and the squared
 * norm of row i. Every function of logreg.c and solve.c that walks rows
 * goes through these, so that it has one body for both layouts; the dense
 * branch is the 8-accumulator loop the full-gradient baselines rely on, the
 * CSR one touches the row's non-zeros only. Private to src/convex (and
 * its tests). */
#ifndef DEFT_CONVEX_ROWS_H
#define DEFT_CONVEX_ROWS_H

#include "convex/convex.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* The dense kernels (logreg.c): dot products with 8 independent double
 * accumulators, and g += c a. Out of line on purpose: inlined into the row
 * loops, GCC 12 stages vector halves through the stack and the loops run
 * 10-30% slower. */
double deft_logreg_dot_f32(const float *a, const float *x, size_t d);
double deft_logreg_dot_f64(const float *a, const double *x, size_t d);
void deft_logreg_axpy_f32(double c, const float *a, double *g,
                          size_t d);

/* deft_logreg_shuffle's CSR path when it cannot allocate the gathered
 * rows: the same permutation by swapping rows in place (no memory, O(n nnz)
 * time). For logreg.c and the tests. */
void deft_logreg_shuffle_csr_in_place(deft_logreg_t *p, uint64_t seed);

/* 1 if p is stored as CSR (p->a is then NULL). */
static inline int deft_logreg_is_csr(const deft_logreg_t *p)
{
    return p->indptr != NULL;
}

/* a_i . x, x (d,) in double. */
static inline double deft_row_dot_f64(const deft_logreg_t *p, size_t i,
                                      const double *x)
{
    if (!p->indptr)
        return deft_logreg_dot_f64(p->a + i * p->d, x, p->d);
    double s = 0;
    for (size_t k = p->indptr[i]; k < p->indptr[i + 1]; k++)
        s += (double)p->values[k] * x[p->indices[k]];
    return s;
}

/* a_i . x, x (d,) in float (the sum in double). */
static inline double deft_row_dot_f32(const deft_logreg_t *p, size_t i,
                                      const float *x)
{
    if (!p->indptr)
        return deft_logreg_dot_f32(p->a + i * p->d, x, p->d);
    double s = 0;
    for (size_t k = p->indptr[i]; k < p->indptr[i + 1]; k++)
        s += (double)p->values[k] * x[p->indices[k]];
    return s;
}

/* g (d,) += c * a_i. */
static inline void deft_row_axpy(const deft_logreg_t *p, size_t i, double c,
                                 double *g)
{
    if (!p->indptr) {
        deft_logreg_axpy_f32(c, p->a + i * p->d, g, p->d);
        return;
    }
    for (size_t k = p->indptr[i]; k < p->indptr[i + 1]; k++)
        g[p->indices[k]] += c * p->values[k];
}

/* The stored values of row i: d of them dense, its non-zeros (the bias
 * included) for CSR; *len receives their count. */
static inline float *deft_row_values(const deft_logreg_t *p, size_t i,
                                     size_t *len)
{
    if (!p->indptr) {
        *len = p->d;
        return p->a + i * p->d;
    }
    *len = p->indptr[i + 1] - p->indptr[i];
    return p->values + p->indptr[i];
}

/* ||a_i||^2, summed in double in column order. */
static inline double deft_row_sqnorm(const deft_logreg_t *p, size_t i)
{
    size_t len;
    const float *v = deft_row_values(p, i, &len);
    double s = 0;
    for (size_t k = 0; k < len; k++)
        s += (double)v[k] * v[k];
    return s;
}

/* Scales every row to unit norm (rows hold the bias 1, so norms >= 1).
 * Dense and CSR copies of the same rows get the same floats. */
static inline void deft_rows_normalize(deft_logreg_t *p)
{
    for (size_t i = 0; i < p->n; i++) {
        double inv = 1.0 / sqrt(deft_row_sqnorm(p, i));
        size_t len;
        float *v = deft_row_values(p, i, &len);
        for (size_t k = 0; k < len; k++)
            v[k] = (float)(v[k] * inv);
    }
}

#endif
