/* L2-regularized logistic regression, the strongly convex problem on which
 * eclk and its baselines are compared (SPEC §2, eclk):
 *
 *   P(x) = (1/K) sum_k f_k(x) + (mu/2) ||x||^2,
 *   f_k(x) = (1/m) sum_{i in shard k} log(1 + exp(-b_i a_i^T x)),
 *
 * with K equal shards of m rows, so that P is also the average loss over
 * all n = K m rows plus the regularizer. Data are floats (the library's
 * type); every sum is accumulated in double, and the reference solution P*
 * is computed in double to near machine precision.
 *
 * Smoothness constants (exact, from the data): the loss of one row has
 * Hessian s(t) a_i a_i^T with s(t) = sigma(t)(1 - sigma(t)) <= 1/4, so
 *   L     = max_i ||a_i||^2 / 4            (the parts; add mu for the
 *                                            regularized parts)
 *   L_f   = lambda_max(A^T A) / (4 n)      (the average; add mu for P)
 * L_f is computed by power iteration. */
#ifndef DEFT_CONVEX_H
#define DEFT_CONVEX_H

#include "data/data.h"
#include "deft.h"

#include <stddef.h>
#include <stdint.h>

/* Rows are stored densely (a) or as CSR (a == NULL, indptr != NULL); every
 * function below takes either, with the same results up to the order of
 * summation. A zeroed struct with n, d, a and b set is a dense problem.
 * CSR row i holds values[k] at columns indices[k] for k in
 * [indptr[i], indptr[i + 1]), columns increasing, the bias column (d - 1)
 * included; memory is O(n + nnz). */
typedef struct {
    size_t n, d;  /* rows, features (the bias feature included)          */
    float *a;     /* (n, d) row-major; NULL for CSR                       */
    float *b;     /* (n,) labels, -1 or +1                                */
    size_t *indptr;      /* CSR: (n + 1,) row starts; NULL for dense      */
    uint32_t *indices;   /* CSR: (nnz,) column of each value, < d         */
    float *values;       /* CSR: (nnz,)                                   */
    size_t nnz;          /* CSR: indptr[n], stored values (bias included) */
    uint32_t *column_ids; /* (d,) or NULL: the file's 1-based feature
                           * index of each column, 0 for the bias (set by
                           * deft_logreg_load_libsvm, to map x back)      */
    size_t d_file;       /* the largest feature index in the file (set by
                          * deft_logreg_load_libsvm, else 0)              */
} deft_logreg_t;

/* Builds the problem from a two-class data set (ds->n_classes == 2):
 * class 1 -> label +1, class 0 -> -1; features are the c*h*w values of an
 * example followed by a bias feature 1. With normalize, every row
 * (bias included) is scaled to unit norm, so that L = 1/4. Errors:
 * DEFT_ERR_INVALID_ARG (not two classes, empty), DEFT_ERR_NOMEM. */
deft_status_t deft_logreg_from_dataset(deft_logreg_t *out,
                                       const deft_dataset_t *ds,
                                       int normalize);

/* Reads a two-class LIBSVM file (data.h: raw or gzip, the same parser and
 * input limits as deft_dataset_load_libsvm) straight into CSR rows, in two
 * passes (count and validate, then fill), so memory is O(n + nnz) whatever
 * the feature indices: at most about 10 bytes per byte of text, including
 * the scratch of the column compaction.
 *
 * Labels: exactly two distinct values, the larger -> +1, the smaller -> -1
 * (so -1/+1, 0/1 and 1/2 all work). Columns: the features that have no
 * non-zero value in any row (explicit zeros are not stored) are dropped and
 * the others renumbered in increasing order of their index; a bias feature
 * 1 is appended as the last column of every row. Dropping empty columns
 * does not change the problem for L2-regularized logistic regression
 * started at x0 = 0: such a column's loss gradient is always 0, so its
 * coordinate stays at 0 (its gradient is mu x_j = 0) and its optimal
 * weight is 0. So a file naming features 3 and 900000000 has d = 3.
 * out->column_ids maps the columns back to the file's indices (0 for the
 * bias), out->d_file (and *n_features_in_file if not NULL) is the largest
 * index in the file. With normalize, every row (bias included) is scaled to
 * unit norm, as deft_logreg_from_dataset does, so that L = 1/4.
 *
 * Errors (the message names the file, and the line where there is one):
 * DEFT_ERR_IO (cannot open or read), DEFT_ERR_FORMAT (malformed line, not
 * exactly two labels, no examples, over deft_data_max_bytes),
 * DEFT_ERR_INVALID_ARG (NULL out or path), DEFT_ERR_NOMEM. On error *out
 * is left empty. */
deft_status_t deft_logreg_load_libsvm(deft_logreg_t *out, const char *path,
                                      int normalize,
                                      size_t *n_features_in_file);

/* NULL-safe; leaves *p empty. */
void deft_logreg_free(deft_logreg_t *p);

/* Permutes the rows with a permutation drawn from seed (Fisher-Yates on
 * the counter-based stream DEFT_STREAM_DATA), so that contiguous shards
 * are i.i.d. even when the file is sorted by label. A dense and a CSR copy
 * of the same rows get the same permutation. CSR rows are gathered into
 * new arrays (O(n + nnz) temporary memory); if that memory cannot be had,
 * they are swapped in place instead (no memory, but O(n nnz) time). */
void deft_logreg_shuffle(deft_logreg_t *p, uint64_t seed);

/* Keeps the first n rows (n <= p->n); memory is not released. */
void deft_logreg_truncate(deft_logreg_t *p, size_t n);

/* A fingerprint of the data (n, d, every a and b bit; for CSR every
 * indptr, index and value instead of a): the identity of the problem in
 * caches of P*. A dense and a CSR copy of the same rows hash differently. */
uint64_t deft_logreg_hash(const deft_logreg_t *p);

/* Average logistic loss over rows [lo, hi) at x (d,), no regularizer. */
double deft_logreg_loss(const deft_logreg_t *p, size_t lo, size_t hi,
                        const double *x);
double deft_logreg_loss_f32(const deft_logreg_t *p, size_t lo, size_t hi,
                            const float *x);

/* g (d,) = the average gradient of the loss over rows [lo, hi) at x;
 * returns the average loss there. No regularizer. */
double deft_logreg_loss_grad(const deft_logreg_t *p, size_t lo, size_t hi,
                             const double *x, double *g);
double deft_logreg_loss_grad_f32(const deft_logreg_t *p, size_t lo, size_t hi,
                                 const float *x, double *g);

/* g (d,) += scale * the gradient of row i's loss at x. */
void deft_logreg_row_grad_add(const deft_logreg_t *p, size_t i, const float *x,
                              double scale, double *g);

/* P(x) over all rows. */
double deft_logreg_objective(const deft_logreg_t *p, double mu,
                             const double *x);
double deft_logreg_objective_f32(const deft_logreg_t *p, double mu,
                                 const float *x);

/* max over rows [lo, hi) of ||a_i||^2 / 4: the smoothness of the parts. */
double deft_logreg_smooth_max(const deft_logreg_t *p, size_t lo, size_t hi);

/* lambda_max(A^T A) / (4 (hi - lo)) over rows [lo, hi): the smoothness of
 * their average loss, by power iteration from a fixed random start until
 * the Rayleigh quotient changes by less than tol (relative) or max_iter
 * iterations. The Rayleigh quotient is a lower bound that converges from
 * below. *iters (may be NULL) gets the iterations used. */
double deft_logreg_smooth_avg(const deft_logreg_t *p, size_t lo, size_t hi,
                              double tol, int max_iter, int *iters);

/* lambda_max(q A^T A + (1 - q) Diag(A^T A)) / (4 (hi - lo)), q in [0, 1],
 * by the same power iteration (q = 1 is deft_logreg_smooth_avg). With
 * q = (k - 1)/(d - 1) it is L_f's counterpart for a k-of-d coordinate
 * mask S: E[P_S H P_S] = (k/d)(q H + (1 - q) Diag H) for H = A^T A /
 * (4 m). NAN when out of memory. */
double deft_logreg_smooth_masked(const deft_logreg_t *p, size_t lo,
                                 size_t hi, double q, double tol,
                                 int max_iter, int *iters);

/* How deft_logreg_solve computes Newton steps. */
typedef enum {
    DEFT_NEWTON_AUTO = 0, /* dense rows up to 4096 features, else CG     */
    DEFT_NEWTON_DENSE,    /* Hessian formed (sgemm-class BLAS), Cholesky;
                           * dense rows only                             */
    DEFT_NEWTON_CG        /* Hessian-vector products, conjugate gradient */
} deft_newton_kind_t;

typedef struct {
    double pstar;      /* P(x*)                                           */
    double grad_norm;  /* ||grad P(x*)||, the accuracy reached            */
    int iters;         /* Newton iterations                               */
} deft_logreg_solution_t;

/* Minimizes P (mu > 0) by damped Newton in double precision, from x (d,)
 * (e.g. zeros), which receives the minimizer. Stops when ||grad P|| stops
 * decreasing at the level of rounding or the Newton decrement is below
 * 1e-24. Then P(x) - P* is below ||grad P||^2 / (2 mu). With CG, each
 * Hessian-vector product costs O(nnz + d) (O(n d) dense), and each Newton
 * step runs at most a number of CG iterations bounded from the Hessian's
 * condition number (see solve.c). Errors: DEFT_ERR_INVALID_ARG (mu <= 0,
 * DEFT_NEWTON_DENSE on CSR rows), DEFT_ERR_NOMEM, DEFT_ERR_DIVERGED (a
 * Newton system could not be solved). */
deft_status_t deft_logreg_solve(const deft_logreg_t *p, double mu,
                                deft_newton_kind_t kind, double *x,
                                deft_logreg_solution_t *out);

#endif
