/* The reference solution P* of the logistic problem: damped Newton in
 * double precision. The Hessian of P is (1/n) A^T S A + mu I with
 * S = diag(s(t_i)), s(t) = sigma(t)(1 - sigma(t)). Newton converges
 * quadratically, and since the gradient is exact in double the fixed
 * point is exact whatever the accuracy of the Hessian: the dense path
 * forms it with single-precision BLAS (ssyrk, the bulk of the work), the
 * CG path (the only one for CSR rows) never forms it. P(x) - P* <=
 * ||grad P(x)||^2 / (2 mu). */
#include "convex/convex.h"

#include "convex/rows.h"
#include "core/internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

enum { DENSE_MAX_D = 4096, MAX_NEWTON = 60 };

/* s(t) = sigma(t) sigma(-t), computed from exp(-|t|) (no overflow). */
static double curvature(double t)
{
    double e = exp(-fabs(t));
    return e / ((1.0 + e) * (1.0 + e));
}

static double objective_grad(const deft_logreg_t *p, double mu, const double *x,
                             double *g)
{
    double f = deft_logreg_loss_grad(p, 0, p->n, x, g), r = 0;
    for (size_t j = 0; j < p->d; j++) {
        g[j] += mu * x[j];
        r += x[j] * x[j];
    }
    return f + 0.5 * mu * r;
}

static double norm(const double *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i] * v[i];
    return sqrt(s);
}

/* s (n,) = curvatures at x. Returns trace((1/n) A^T S A) =
 * (1/n) sum_i s_i ||a_i||^2, an upper bound on the largest eigenvalue of
 * the loss's Hessian (which is positive semidefinite). */
static double curvatures(const deft_logreg_t *p, const double *x, double *s)
{
    double tr = 0;
    for (size_t i = 0; i < p->n; i++) {
        /* s is even: the label's sign does not matter */
        s[i] = curvature(deft_row_dot_f64(p, i, x));
        tr += s[i] * deft_row_sqnorm(p, i);
    }
    return p->n ? tr / (double)p->n : 0.0;
}

/* Solves (H) step = -g with H = (1/n) A^T S A + mu I formed densely.
 * r is (n, d) float scratch, h (d, d) float scratch, c (d, d) double.
 * Returns 0 if H is not positive definite (cannot happen for mu > 0 up to
 * rounding). */
static int newton_dense(const deft_logreg_t *p, double mu, const double *s,
                        const double *g, double *step, float *r, float *h,
                        double *c)
{
    const size_t n = p->n, d = p->d;
    for (size_t i = 0; i < n; i++) {
        float w = (float)sqrt(s[i] / (double)n);
        const float *a = p->a + i * d;
        float *ri = r + i * d;
        for (size_t j = 0; j < d; j++)
            ri[j] = w * a[j];
    }
    /* h (d, d), upper triangle = r^T r. */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0f, r,
                (int)d, 0.0f, h, (int)d);
    /* Cholesky c = L L^T in double, lower triangle of c. */
    for (size_t j = 0; j < d; j++)
        for (size_t k = 0; k <= j; k++)
            c[j * d + k] = h[k * d + j] + (j == k ? mu : 0.0);
    for (size_t j = 0; j < d; j++) {
        double djj = c[j * d + j];
        for (size_t k = 0; k < j; k++)
            djj -= c[j * d + k] * c[j * d + k];
        if (!(djj > 0))
            return 0;
        djj = sqrt(djj);
        c[j * d + j] = djj;
        for (size_t i = j + 1; i < d; i++) {
            double v = c[i * d + j];
            for (size_t k = 0; k < j; k++)
                v -= c[i * d + k] * c[j * d + k];
            c[i * d + j] = v / djj;
        }
    }
    /* L y = -g, then L^T step = y. */
    for (size_t i = 0; i < d; i++) {
        double v = -g[i];
        for (size_t k = 0; k < i; k++)
            v -= c[i * d + k] * step[k];
        step[i] = v / c[i * d + i];
    }
    for (size_t i = d; i-- > 0;) {
        double v = step[i];
        for (size_t k = i + 1; k < d; k++)
            v -= c[k * d + i] * step[k];
        step[i] = v / c[i * d + i];
    }
    return 1;
}

/* out (d,) = H v. */
static void hess_vec(const deft_logreg_t *p, double mu, const double *s,
                     const double *v, double *out)
{
    const size_t d = p->d;
    for (size_t j = 0; j < d; j++)
        out[j] = 0;
    for (size_t i = 0; i < p->n; i++)
        deft_row_axpy(p, i, s[i] * deft_row_dot_f64(p, i, v), out);
    for (size_t j = 0; j < d; j++)
        out[j] = out[j] / (double)p->n + mu * v[j];
}

/* The most CG iterations a Newton step may take to reduce the residual by
 * tol, H's condition number being at most kappa. CG's error in the H-norm
 * falls at least as fast as 2 rho^k, rho = (sqrt(kappa) - 1) /
 * (sqrt(kappa) + 1) <= exp(-2 / sqrt(kappa)), and the residual's relative
 * norm is at most sqrt(kappa) times the error's, so (sqrt(kappa) / 2)
 * ln(2 sqrt(kappa) / tol) iterations suffice; we allow twice that (rounding
 * slows CG down), and at most 2 (min(n, d) + 1) + 10 (H = mu I plus a
 * matrix of rank <= min(n, d) has at most min(n, d) + 1 distinct
 * eigenvalues: exact CG ends within that many). The cap only stops a CG
 * that rounding has stalled: its partial step is still a descent direction
 * (CG from 0 on a positive definite system), the line search keeps the
 * Newton iteration safe, and the next step starts afresh. */
static int cg_max_iters(double kappa, double tol, size_t n, size_t d)
{
    double sk = sqrt(kappa), m = (double)(n < d ? n : d);
    double k = fmin(sk * log(2.0 * sk / tol), 2.0 * (m + 1.0)) + 10.0;
    return k < 1e9 ? (int)k : 1000000000;
}

/* Truncated Newton: CG on H step = -g to a relative residual of
 * min(1/2, sqrt(||g||)) (superlinear convergence), for at most
 * cg_max_iters iterations; lmax bounds H's largest eigenvalue (its
 * smallest is >= mu). work is 3 d doubles. Each iteration costs one
 * Hessian-vector product, O(nnz + d) on CSR rows, O(n d) dense. */
static void newton_cg(const deft_logreg_t *p, double mu, double lmax,
                      const double *s, const double *g, double *step,
                      double *work)
{
    const size_t d = p->d;
    double *r = work, *dir = work + d, *hd = work + 2 * d;
    double gn = norm(g, d), tol = gn < 0.25 ? sqrt(gn) : 0.5;
    for (size_t j = 0; j < d; j++) {
        step[j] = 0;
        r[j] = -g[j];
        dir[j] = r[j];
    }
    double rr = gn * gn;
    int max_it = cg_max_iters(lmax / mu, tol, p->n, d);
    for (int it = 0; it < max_it && sqrt(rr) > tol * gn; it++) {
        hess_vec(p, mu, s, dir, hd);
        double dhd = 0;
        for (size_t j = 0; j < d; j++)
            dhd += dir[j] * hd[j];
        if (!(dhd > 0))
            break;
        double alpha = rr / dhd, rr2 = 0;
        for (size_t j = 0; j < d; j++) {
            step[j] += alpha * dir[j];
            r[j] -= alpha * hd[j];
            rr2 += r[j] * r[j];
        }
        for (size_t j = 0; j < d; j++)
            dir[j] = r[j] + (rr2 / rr) * dir[j];
        rr = rr2;
    }
}

/* x += t step, t = 1, 1/2, ... by backtracking (Armijo) from P(x) = f
 * with dec = -g.step; close to the optimum (dec < 1e-12) the full step is
 * taken without comparing function values, which then differ by less than
 * their rounding. xt is d scratch. */
static void line_search(const deft_logreg_t *p, double mu, double f,
                        double dec, const double *step, double *x, double *xt)
{
    double t = 1.0;
    for (int ls = 0; ls < 60; ls++, t *= 0.5) {
        for (size_t j = 0; j < p->d; j++)
            xt[j] = x[j] + t * step[j];
        if (dec < 1e-12 ||
            deft_logreg_objective(p, mu, xt) <= f - 0.25 * t * dec)
            break;
    }
    memcpy(x, xt, sizeof(double) * p->d);
}

deft_status_t deft_logreg_solve(const deft_logreg_t *p, double mu,
                                deft_newton_kind_t kind, double *x,
                                deft_logreg_solution_t *out)
{
    const char *fn = "deft_logreg_solve";
    if (!p || !x || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !p ? "p" : !x ? "x" : "out");
    if (!(mu > 0) || !isfinite(mu))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: mu = %g, must be a finite number > 0", fn, mu);
    const size_t n = p->n, d = p->d;
    const int csr = deft_logreg_is_csr(p);
    if (csr && kind == DEFT_NEWTON_DENSE)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: DEFT_NEWTON_DENSE needs dense rows, and this "
                         "problem is sparse (CSR, %zu features); use "
                         "DEFT_NEWTON_CG or DEFT_NEWTON_AUTO", fn, d);
    int dense = kind == DEFT_NEWTON_DENSE ||
                (kind == DEFT_NEWTON_AUTO && !csr && d <= DENSE_MAX_D);
    double *g = malloc(sizeof(double) * d), *step = malloc(sizeof(double) * d);
    double *xt = malloc(sizeof(double) * d), *s = malloc(sizeof(double) * n);
    double *work = malloc(sizeof(double) * 3 * d);
    float *r = dense ? malloc(sizeof(float) * n * d) : NULL;
    float *h = dense ? malloc(sizeof(float) * d * d) : NULL;
    double *c = dense ? malloc(sizeof(double) * d * d) : NULL;
    deft_status_t st = DEFT_OK;
    if (!g || !step || !xt || !s || !work || (dense && (!r || !h || !c))) {
        st = deft_fail(DEFT_ERR_NOMEM, "%s: no memory for a %zu-feature "
                       "Newton solve", fn, d);
        goto done;
    }
    double f = objective_grad(p, mu, x, g), gn = norm(g, d);
    int it = 0;
    while (it < MAX_NEWTON) {
        it++;
        double lmax = curvatures(p, x, s) + mu;
        if (dense) {
            if (!newton_dense(p, mu, s, g, step, r, h, c)) {
                st = deft_fail(DEFT_ERR_DIVERGED, "%s: the Newton system at "
                               "iteration %d is not positive definite", fn, it);
                goto done;
            }
        } else {
            newton_cg(p, mu, lmax, s, g, step, work);
        }
        double dec = 0; /* the Newton decrement squared, -g.step */
        for (size_t j = 0; j < d; j++)
            dec -= g[j] * step[j];
        line_search(p, mu, f, dec, step, x, xt);
        double gn_prev = gn;
        f = objective_grad(p, mu, x, g);
        gn = norm(g, d);
        /* Done when the decrement (an estimate of twice P(x) - P*) is far
         * below anything a float run can resolve, or when rounding stops
         * the gradient from shrinking. */
        if (dec < 1e-24 || (dec < 1e-16 && gn >= 0.5 * gn_prev))
            break;
    }
    out->pstar = f;
    out->grad_norm = gn;
    out->iters = it;
done:
    free(g);
    free(step);
    free(xt);
    free(s);
    free(work);
    free(r);
    free(h);
    free(c);
    return st;
}
