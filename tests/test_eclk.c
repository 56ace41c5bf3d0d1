/* eclk (error-compensated loopless Katyusha) and the logistic problem it is
 * measured on: the model's gradients and constants, the reference solver,
 * eclk + none = L-Katyusha, linear convergence with Top-K ahead of EC-GD,
 * the API's checks, and checkpoints of eclk's extra state. */
#include "testutil.h"

#include "convex/convex.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- synthetic problems ---------------------------------------------- */

/* n rows of d features (the last one a bias 1): row i = u + spread * v_i
 * with u and v_i uniform in [-1, 1)^(d-1), labels from a noisy linear
 * teacher. A small spread makes the rows nearly collinear, so that
 * A^T A has one large and many small eigenvalues: an ill-conditioned
 * problem whose condition number mu sets. */
static deft_logreg_t make_problem(size_t n, size_t d, float spread,
                                  uint64_t seed)
{
    deft_logreg_t p = {.n = n, .d = d, .a = malloc(sizeof(float) * n * d),
                       .b = malloc(sizeof(float) * n)};
    float *u = malloc(sizeof(float) * d), *teacher = malloc(sizeof(float) * d);
    deft_test_fill(u, d, seed);
    deft_test_fill(teacher, d, seed + 1);
    deft_rng_t r = deft_rng_make(seed, 1, 0, DEFT_STREAM_TEST);
    for (size_t i = 0; i < n; i++) {
        float *a = p.a + i * d;
        double t = 0;
        for (size_t j = 0; j + 1 < d; j++) {
            a[j] = u[j] + spread * (2.0f * deft_rng_uniform(&r) - 1.0f);
            t += (double)a[j] * teacher[j];
        }
        a[d - 1] = 1.0f;
        t += 0.5 * (2.0 * deft_rng_uniform_f64(&r) - 1.0);
        p.b[i] = t > 0 ? 1.0f : -1.0f;
    }
    free(u);
    free(teacher);
    return p;
}

/* K shards that all hold the same m rows: f_k = f for every k, so that
 * grad f_k(x*) = 0 on every worker. Error feedback with a biased,
 * worker-specific compressor (Top-K) then has no heterogeneity floor: the
 * vectors each worker compresses vanish at the optimum, and both eclk and
 * EC-GD converge linearly to x* (with different shards they stall where
 * the errors' fluctuation balances, see docs/eclk.md). */
static deft_logreg_t replicate(const deft_logreg_t *one, int K)
{
    size_t n = one->n * (size_t)K, d = one->d;
    deft_logreg_t p = {.n = n, .d = d, .a = malloc(sizeof(float) * n * d),
                       .b = malloc(sizeof(float) * n)};
    for (int k = 0; k < K; k++) {
        memcpy(p.a + (size_t)k * one->n * d, one->a, sizeof(float) * one->n * d);
        memcpy(p.b + (size_t)k * one->n, one->b, sizeof(float) * one->n);
    }
    return p;
}

/* ---- the model: gradients, constants, optimum ------------------------ */

static void test_gradient_matches_finite_differences(void **state)
{
    (void)state;
    const size_t n = 40, d = 7;
    deft_logreg_t p = make_problem(n, d, 0.8f, 3);
    double x[7], g[7], gr[7], xp[7];
    float xf[7];
    for (int trial = 0; trial < 5; trial++) {
        deft_rng_t r = deft_rng_make(11, (uint64_t)trial, 0, DEFT_STREAM_TEST);
        /* x = xf exactly, so the float paths see the same point. (Drawn
         * in float: GCC 12.2 at -O3 vectorizes "xf = (float)double_expr;
         * x = xf;" into stores that skip the rounding for some elements.) */
        for (size_t j = 0; j < d; j++) {
            xf[j] = 3.0f * (2.0f * deft_rng_uniform(&r) - 1.0f);
            x[j] = xf[j];
        }
        size_t lo = 5, hi = 33; /* a shard, not the whole set */
        double f = deft_logreg_loss_grad(&p, lo, hi, x, g);
        assert_close(f, deft_logreg_loss(&p, lo, hi, x), 1e-14, 0);
        for (size_t j = 0; j < d; j++) {
            const double h = 1e-5;
            memcpy(xp, x, sizeof xp);
            xp[j] = x[j] + h;
            double fp = deft_logreg_loss(&p, lo, hi, xp);
            xp[j] = x[j] - h;
            double fm = deft_logreg_loss(&p, lo, hi, xp);
            /* central difference: error O(h^2 f''') ~ 1e-10 */
            assert_close(g[j], (fp - fm) / (2 * h), 1e-6, 1e-9);
        }
        /* The float-iterate variants compute the same in double. */
        double gf[7];
        assert_close(deft_logreg_loss_grad_f32(&p, lo, hi, xf, gf), f, 1e-14, 0);
        assert_close(deft_logreg_loss_f32(&p, lo, hi, xf), f, 1e-14, 0);
        for (size_t j = 0; j < d; j++)
            assert_close(gf[j], g[j], 1e-12, 1e-15);
        /* Rows add up to the shard's average gradient. */
        for (size_t j = 0; j < d; j++)
            gr[j] = 0;
        for (size_t i = lo; i < hi; i++)
            deft_logreg_row_grad_add(&p, i, xf, 1.0 / (double)(hi - lo), gr);
        for (size_t j = 0; j < d; j++)
            assert_close(gr[j], g[j], 1e-12, 1e-15);
        /* P adds (mu/2)||x||^2 to the average over all rows. */
        double r2 = 0;
        for (size_t j = 0; j < d; j++)
            r2 += x[j] * x[j];
        assert_close(deft_logreg_objective(&p, 0.3, x),
                     deft_logreg_loss(&p, 0, n, x) + 0.15 * r2, 1e-14, 0);
        assert_close(deft_logreg_objective_f32(&p, 0.3, xf),
                     deft_logreg_objective(&p, 0.3, x), 1e-14, 0);
    }
    /* No overflow far from the origin: margins of +-1e4. */
    for (size_t j = 0; j < d; j++)
        x[j] = 1e4;
    double f = deft_logreg_loss_grad(&p, 0, n, x, g);
    assert_true(isfinite(f));
    for (size_t j = 0; j < d; j++)
        assert_true(isfinite(g[j]));
    deft_logreg_free(&p);
}

/* lambda_max of a dense symmetric matrix by plain power iteration, the
 * brute-force reference for the implicit one in the library. */
static double dense_lambda_max(const double *M, size_t d)
{
    double v[16], u[16], lam = 0;
    for (size_t j = 0; j < d; j++)
        v[j] = 1.0 + 0.1 * (double)j;
    for (int it = 0; it < 20000; it++) {
        double nu = 0;
        for (size_t i = 0; i < d; i++) {
            u[i] = 0;
            for (size_t j = 0; j < d; j++)
                u[i] += M[i * d + j] * v[j];
            nu += u[i] * u[i];
        }
        nu = sqrt(nu);
        double nv = 0;
        for (size_t j = 0; j < d; j++)
            nv += v[j] * v[j];
        lam = nu / sqrt(nv);
        for (size_t j = 0; j < d; j++)
            v[j] = u[j] / nu;
    }
    return lam;
}

static void test_smoothness_constants(void **state)
{
    (void)state;
    const size_t n = 60, d = 6;
    deft_logreg_t p = make_problem(n, d, 0.5f, 8);
    /* L_max: the largest ||a_i||^2 / 4, by brute force. */
    double lmax = 0;
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (size_t j = 0; j < d; j++)
            s += (double)p.a[i * d + j] * p.a[i * d + j];
        lmax = fmax(lmax, s / 4);
    }
    assert_close(deft_logreg_smooth_max(&p, 0, n), lmax, 1e-15, 0);

    /* L_f = lambda_max(A^T A) / (4 n): dense matrix, long power iteration. */
    double M[36] = {0};
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            for (size_t k = 0; k < d; k++)
                M[j * d + k] += (double)p.a[i * d + j] * p.a[i * d + k] /
                                (4.0 * (double)n);
    int iters;
    double lf = deft_logreg_smooth_avg(&p, 0, n, 1e-12, 10000, &iters);
    double want = dense_lambda_max(M, d);
    printf("  L_f = %.10g (power iteration, %d its), dense %.10g, L_max %.6g\n",
           lf, iters, want, lmax);
    assert_close(lf, want, 1e-8, 0);
    assert_true(lf <= lmax * (1 + 1e-12));

    /* The masked smoothness: lambda_max(q M + (1 - q) Diag M) against the
     * dense matrix, for q = 0.3 and q = 0 (the largest diagonal entry).
     * With q = (k - 1)/(d - 1) it is E[P_S M P_S] / (k/d) over the k-of-d
     * masks S: averaged here over all 15 masks with k = 2 of d = 6. */
    double Mq[36], avg[36] = {0};
    for (size_t j = 0; j < d; j++)
        for (size_t k = 0; k < d; k++)
            Mq[j * d + k] = (j == k ? 1.0 : 0.3) * M[j * d + k];
    double lq = deft_logreg_smooth_masked(&p, 0, n, 0.3, 1e-13, 10000, NULL);
    double wq = dense_lambda_max(Mq, d), dmax = 0;
    printf("  masked (q = 0.3) %.10g, dense %.10g\n", lq, wq);
    assert_close(lq, wq, 1e-8, 0);
    for (size_t j = 0; j < d; j++)
        dmax = fmax(dmax, M[j * d + j]);
    assert_close(deft_logreg_smooth_masked(&p, 0, n, 0.0, 1e-13, 10000, NULL),
                 dmax, 1e-10, 0);
    for (size_t a = 0; a < d; a++)
        for (size_t b = a + 1; b < d; b++)
            for (size_t j = 0; j < d; j++)
                for (size_t k = 0; k < d; k++)
                    if ((j == a || j == b) && (k == a || k == b))
                        avg[j * d + k] += M[j * d + k] / 15.0;
    for (size_t j = 0; j < d; j++)
        for (size_t k = 0; k < d; k++) {
            double q = 1.0 / 5.0, w = (j == k ? 1.0 : q) * M[j * d + k];
            assert_close(avg[j * d + k], (2.0 / 6.0) * w, 1e-14, 1e-15);
        }

    /* L_f bounds the curvature of the average loss everywhere, and is
     * attained at x = 0 (s(0) = 1/4): the Hessian's quadratic form along
     * random directions, by finite differences of the gradient, never
     * exceeds L_f; and power iteration on those finite differences from
     * the best direction at the origin finds L_f itself. */
    double best0 = 0, vbest[6] = {0};
    for (int trial = 0; trial < 2000; trial++) {
        deft_rng_t r = deft_rng_make(5, (uint64_t)trial, 0, DEFT_STREAM_TEST);
        double x[6], v[6], xp[6], g1[6], g2[6], nv = 0;
        for (size_t j = 0; j < d; j++) {
            x[j] = trial < 1000 ? 0.0 : 2.0 * deft_rng_uniform_f64(&r) - 1.0;
            v[j] = 2.0 * deft_rng_uniform_f64(&r) - 1.0;
            nv += v[j] * v[j];
        }
        const double h = 1e-6;
        for (size_t j = 0; j < d; j++) {
            xp[j] = x[j] + h * v[j];
            x[j] -= h * v[j];
        }
        deft_logreg_loss_grad(&p, 0, n, xp, g1);
        deft_logreg_loss_grad(&p, 0, n, x, g2);
        double q = 0;
        for (size_t j = 0; j < d; j++)
            q += (g1[j] - g2[j]) * v[j];
        q /= 2 * h * nv;
        assert_true(q <= lf * (1 + 1e-6));
        if (trial < 1000 && q > best0) {
            best0 = q;
            for (size_t j = 0; j < d; j++)
                vbest[j] = v[j] / sqrt(nv);
        }
    }
    double q = 0;
    for (int it = 0; it < 200; it++) { /* v <- H(0) v / |H(0) v| */
        double xp[6], xm[6], g1[6], g2[6], hv[6], nh = 0;
        const double h = 1e-4;
        for (size_t j = 0; j < d; j++)
            xp[j] = h * vbest[j], xm[j] = -h * vbest[j];
        deft_logreg_loss_grad(&p, 0, n, xp, g1);
        deft_logreg_loss_grad(&p, 0, n, xm, g2);
        q = 0;
        for (size_t j = 0; j < d; j++) {
            hv[j] = (g1[j] - g2[j]) / (2 * h);
            q += hv[j] * vbest[j];
            nh += hv[j] * hv[j];
        }
        for (size_t j = 0; j < d; j++)
            vbest[j] = hv[j] / sqrt(nh);
    }
    printf("  Hessian quadratic form at 0: best of 1000 random directions "
           "%.6g, after power iteration %.10g\n", best0, q);
    assert_close(q, lf, 1e-6, 0);
    deft_logreg_free(&p);
}

static void test_newton_solves_to_machine_precision(void **state)
{
    (void)state;
    deft_logreg_t p = make_problem(200, 12, 0.3f, 17);
    const double mu = 1e-3;
    double xd[12] = {0}, xc[12] = {0}, g[12];
    deft_logreg_solution_t sd, sc;
    assert_status(deft_logreg_solve(&p, mu, DEFT_NEWTON_DENSE, xd, &sd), DEFT_OK);
    assert_status(deft_logreg_solve(&p, mu, DEFT_NEWTON_CG, xc, &sc), DEFT_OK);
    printf("  P* = %.17g (dense, %d its, |g| %.2g), %.17g (CG, %d its, |g| "
           "%.2g)\n", sd.pstar, sd.iters, sd.grad_norm, sc.pstar, sc.iters,
           sc.grad_norm);
    assert_close(sc.pstar, sd.pstar, 1e-14, 0);
    assert_true(sd.grad_norm < 1e-12 && sc.grad_norm < 1e-12);
    assert_close(deft_logreg_objective(&p, mu, xd), sd.pstar, 1e-15, 0);
    /* The gradient at x* is what the solver reports, and no nearby point
     * is lower. */
    deft_logreg_loss_grad(&p, 0, p.n, xd, g);
    double gn = 0;
    for (int j = 0; j < 12; j++)
        gn += (g[j] + mu * xd[j]) * (g[j] + mu * xd[j]);
    assert_true(sqrt(gn) < 1e-12);
    for (int trial = 0; trial < 50; trial++) {
        double x[12];
        deft_rng_t r = deft_rng_make(2, (uint64_t)trial, 0, DEFT_STREAM_TEST);
        for (int j = 0; j < 12; j++)
            x[j] = xd[j] + 1e-3 * (2 * deft_rng_uniform_f64(&r) - 1);
        assert_true(deft_logreg_objective(&p, mu, x) > sd.pstar);
    }
    assert_status(deft_logreg_solve(&p, 0.0, DEFT_NEWTON_AUTO, xd, &sd),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("mu");
    deft_logreg_free(&p);
}

/* ---- eclk + none is L-Katyusha ---------------------------------------- */

typedef struct {
    deft_logreg_t p;
    int K;
    size_t m;
    double mu, L;
    deft_optim_config_t cfg;
    int steps;
    double dev_x, dev_y, dev_w; /* worst relative deviations, rank 0      */
    uint64_t version, coins;
} ref_run_t;

/* The row worker k uses at step t, for both the optimizer's caller and the
 * reference: a private stream keyed by (seed, t, k). */
static size_t pick_row(uint64_t t, int k, size_t m)
{
    deft_rng_t r = deft_rng_make(777, t, 0,
                                 DEFT_STREAM_PRIVATE(DEFT_STREAM_TEST, k));
    return (size_t)deft_rng_below(&r, m);
}

static double rel_dev(const float *a, const double *b, size_t d)
{
    double num = 0, den = 0;
    for (size_t j = 0; j < d; j++) {
        num += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
        den += b[j] * b[j];
    }
    return sqrt(num / fmax(den, 1e-300));
}

static deft_status_t lkatyusha_vs_reference(deft_comm_t *comm, void *arg)
{
    ref_run_t *a = arg;
    const int rank = deft_comm_rank(comm), K = deft_comm_size(comm);
    const size_t d = a->p.d, m = a->m, lo = (size_t)rank * m;
    size_t sizes[2] = {3, d - 3};
    deft_layout_t layout = {2, sizes, NULL};
    float x0[16], grad[16];
    deft_test_fill(x0, d, 99);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &layout, x0, &a->cfg);
    if (st != DEFT_OK)
        return st;

    /* The reference, in double, on rank 0 (it recomputes every worker's
     * part of the gradient from the shared data). Theory's parameters,
     * written out here independently of the library. */
    const double sigma = a->mu / a->L, p = 1.0 / (double)m;
    const double theta1 = fmin(sqrt(2.0 * sigma * (double)m / 3.0), 0.5);
    const double theta2 = 0.5, eta = theta2 / ((1 + theta2) * theta1);
    double y[16], z[16], w[16], x[16], g[16], gk[16], zn[16];
    for (size_t j = 0; j < d; j++)
        y[j] = z[j] = w[j] = x0[j];
    double ganchor[16];
    uint64_t seen = 0;
    a->dev_x = a->dev_y = a->dev_w = 0;
    a->coins = 0;

    for (int t = 0; t < a->steps && st == DEFT_OK; t++) {
        const float *pt, *wf;
        uint64_t version;
        deft_optim_ask(opt, &pt);
        deft_optim_eclk_anchor(opt, &wf, &version);
        /* The caller's estimate: grad f_ki(x) - grad f_ki(w) + grad f_k(w)
         * + mu x, grad f_k(w) recomputed when the anchor moved. */
        if (version != seen) {
            deft_logreg_loss_grad_f32(&a->p, lo, lo + m, wf, ganchor);
            seen = version;
        }
        size_t i = lo + pick_row((uint64_t)t, rank, m);
        double gd[16];
        memcpy(gd, ganchor, sizeof(double) * d);
        deft_logreg_row_grad_add(&a->p, i, pt, 1.0, gd);
        deft_logreg_row_grad_add(&a->p, i, wf, -1.0, gd);
        for (size_t j = 0; j < d; j++)
            grad[j] = (float)(gd[j] + a->mu * pt[j]);

        if (rank == 0) {
            for (size_t j = 0; j < d; j++)
                x[j] = theta1 * z[j] + theta2 * w[j] + (1 - theta1 - theta2) * y[j];
            a->dev_x = fmax(a->dev_x, rel_dev(pt, x, d));
            for (size_t j = 0; j < d; j++)
                g[j] = a->mu * x[j];
            for (int k = 0; k < K; k++) {
                size_t ik = (size_t)k * m + pick_row((uint64_t)t, k, m);
                deft_logreg_loss_grad(&a->p, (size_t)k * m, (size_t)(k + 1) * m,
                                      w, gk);
                for (size_t j = 0; j < d; j++)
                    g[j] += gk[j] / K;
                deft_logreg_loss_grad(&a->p, ik, ik + 1, x, gk);
                for (size_t j = 0; j < d; j++)
                    g[j] += gk[j] / K;
                deft_logreg_loss_grad(&a->p, ik, ik + 1, w, gk);
                for (size_t j = 0; j < d; j++)
                    g[j] -= gk[j] / K;
            }
            for (size_t j = 0; j < d; j++)
                zn[j] = (eta * sigma * x[j] + z[j] - eta / a->L * g[j]) /
                        (1 + eta * sigma);
            deft_rng_t coin = deft_rng_make(a->cfg.seed, (uint64_t)t, 0,
                                            DEFT_STREAM_ECLK_COIN);
            if (deft_rng_uniform_f64(&coin) < p) { /* w^{k+1} = y^k */
                memcpy(w, y, sizeof(double) * d);
                a->coins++;
            }
            for (size_t j = 0; j < d; j++) {
                y[j] = x[j] + theta1 * (zn[j] - z[j]);
                z[j] = zn[j];
            }
        }
        if ((st = deft_optim_tell(opt, grad, NULL)) != DEFT_OK)
            break;
        if (rank == 0) {
            const float *yf, *e;
            deft_optim_params(opt, &yf);
            deft_optim_eclk_anchor(opt, &wf, &version);
            deft_optim_error(opt, &e);
            a->dev_y = fmax(a->dev_y, rel_dev(yf, y, d));
            a->dev_w = fmax(a->dev_w, rel_dev(wf, w, d));
            for (size_t j = 0; j < d; j++)
                if (e[j] != 0.0f) /* none sends everything: no error */
                    st = DEFT_ERR_INTERNAL;
            a->version = version;
        }
    }
    float out[16];
    if (st == DEFT_OK && rank == 0 &&
        (st = deft_optim_output(opt, out)) == DEFT_OK)
        a->dev_y = fmax(a->dev_y, rel_dev(out, y, d)); /* output is y */
    deft_optim_destroy(opt);
    return st;
}

static void test_eclk_none_is_lkatyusha(void **state)
{
    (void)state;
    ref_run_t a;
    memset(&a, 0, sizeof a);
    a.K = 3;
    a.m = 10;
    a.p = make_problem((size_t)a.K * a.m, 9, 0.7f, 41);
    a.mu = 0.01;
    a.L = deft_logreg_smooth_max(&a.p, 0, a.p.n) + a.mu;
    a.steps = 300;
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.algo = DEFT_ALGO_ECLK;
    cfg.compressor = DEFT_COMP_NONE;
    cfg.seed = 2024;
    cfg.eclk_L = a.L;
    cfg.eclk_mu = a.mu;
    cfg.eclk_n = a.m; /* p and theta1 from theory */
    a.cfg = cfg;
    assert_status(deft_run_threads(a.K, lkatyusha_vs_reference, &a), DEFT_OK);
    double theta1 = fmin(sqrt(2.0 * a.mu / a.L * (double)a.m / 3.0), 0.5);
    printf("  theta1 = %.4g, p = %.3g: %d steps, %llu anchor moves; max "
           "relative deviation x %.2g, y %.2g, w %.2g\n", theta1, 1.0 / a.m,
           a.steps, (unsigned long long)a.coins, a.dev_x, a.dev_y, a.dev_w);
    assert_true(theta1 < 0.5); /* the derived, not the capped, branch */
    assert_true(a.coins >= 10); /* the anchor really moved */
    assert_int_equal(a.version, 1 + a.coins);
    assert_true(a.dev_x <= 1e-6 && a.dev_y <= 1e-6 && a.dev_w <= 1e-6);
    deft_logreg_free(&a.p);
}

/* ---- linear convergence with Top-K, ahead of EC-GD --------------------- */

typedef struct {
    const deft_logreg_t *p;
    size_t m;
    double mu, pstar, p0;
    deft_optim_config_t cfg;
    int sampled;      /* eclk's one-row estimator, else full gradients */
    int max_steps;
    double target;
    double *rel;      /* (max_steps + 1,) relative suboptimality, rank 0 */
    int steps_done;
} conv_run_t;

static deft_status_t converge(deft_comm_t *comm, void *arg)
{
    conv_run_t *a = arg;
    const int rank = deft_comm_rank(comm);
    const size_t d = a->p->d, m = a->m, lo = (size_t)rank * m;
    size_t sizes[1] = {d};
    deft_layout_t layout = {1, sizes, NULL};
    float x0[16] = {0}, grad[16], y[16];
    double g[16], ganchor[16];
    uint64_t seen = 0;
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &layout, x0, &a->cfg);
    if (st != DEFT_OK)
        return st;
    int t = 0;
    for (;; t++) {
        /* All workers see the same y and stop at the same step. */
        deft_optim_output(opt, y);
        double rel = (deft_logreg_objective_f32(a->p, a->mu, y) - a->pstar) /
                     (a->p0 - a->pstar);
        if (rank == 0)
            a->rel[t] = rel;
        if (t == a->max_steps || rel <= a->target)
            break;
        const float *pt;
        deft_optim_ask(opt, &pt);
        if (a->sampled) {
            const float *w;
            uint64_t version;
            deft_optim_eclk_anchor(opt, &w, &version);
            if (version != seen) {
                deft_logreg_loss_grad_f32(a->p, lo, lo + m, w, ganchor);
                seen = version;
            }
            size_t i = lo + pick_row((uint64_t)t, rank, m);
            memcpy(g, ganchor, sizeof(double) * d);
            deft_logreg_row_grad_add(a->p, i, pt, 1.0, g);
            deft_logreg_row_grad_add(a->p, i, w, -1.0, g);
        } else {
            deft_logreg_loss_grad_f32(a->p, lo, lo + m, pt, g);
        }
        for (size_t j = 0; j < d; j++)
            grad[j] = (float)(g[j] + a->mu * pt[j]);
        if ((st = deft_optim_tell(opt, grad, NULL)) != DEFT_OK)
            break;
    }
    if (rank == 0)
        a->steps_done = t;
    deft_optim_destroy(opt);
    return st;
}

/* Least-squares slope of log10(rel) against the step. */
static double log_slope(const double *rel, int n)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int t = 0; t < n; t++) {
        double ly = log10(rel[t]);
        sx += t, sy += ly, sxx += (double)t * t, sxy += t * ly;
    }
    return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

static void test_eclk_topk_linear_and_ahead_of_ecgd(void **state)
{
    (void)state;
    const int K = 4;
    const size_t m = 6, d = 12;
    deft_logreg_t one = make_problem(m, d, 0.05f, 5);
    deft_logreg_t p = replicate(&one, K);
    const double mu = 1e-3;
    double xs[16] = {0};
    deft_logreg_solution_t sol;
    assert_status(deft_logreg_solve(&p, mu, DEFT_NEWTON_AUTO, xs, &sol), DEFT_OK);
    double zero[16] = {0};
    const double L = deft_logreg_smooth_max(&p, 0, p.n) + mu;
    const double Lf = deft_logreg_smooth_avg(&p, 0, p.n, 1e-12, 10000, NULL) + mu;
    const int max_steps = 20000;
    double *rel_eclk = calloc(max_steps + 1, sizeof(double));
    double *rel_ecgd = calloc(max_steps + 1, sizeof(double));

    conv_run_t a = {&p, m, mu, sol.pstar, deft_logreg_objective(&p, mu, zero),
                    DEFT_OPTIM_CONFIG_INIT, 1, max_steps, 1e-5, rel_eclk, 0};
    a.cfg.algo = DEFT_ALGO_ECLK;
    a.cfg.compressor = DEFT_COMP_TOPK;
    a.cfg.ratio = 4; /* 3 of 12 coordinates */
    a.cfg.seed = 9;
    a.cfg.eclk_L = L;
    a.cfg.eclk_mu = mu;
    a.cfg.eclk_n = m;
    assert_status(deft_run_threads(K, converge, &a), DEFT_OK);
    int n_eclk = a.steps_done;
    double slope = log_slope(rel_eclk, n_eclk + 1);

    conv_run_t b = a;
    b.rel = rel_ecgd;
    b.sampled = 0;
    b.cfg.algo = DEFT_ALGO_EF;
    b.cfg.momentum = 0.0f;
    b.cfg.lr = (float)(1.0 / Lf); /* GD's step for the smoothness of P */
    assert_status(deft_run_threads(K, converge, &b), DEFT_OK);
    int n_ecgd = b.steps_done;
    printf("  L/mu = %.0f, L_f/mu = %.0f: eclk + topk reaches 1e-5 after %d "
           "rounds (log10 slope %.3g per round), ecgd + topk after %d%s\n",
           L / mu, Lf / mu, n_eclk, slope, n_ecgd,
           rel_ecgd[n_ecgd] <= 1e-5 ? "" : " (not reached)");
    assert_true(rel_eclk[n_eclk] <= 1e-5);
    assert_true(n_eclk < 8000);
    assert_true(slope < 0);
    /* Linear, not just decreasing: every 1000 rounds gain a factor. */
    for (int t = 1000; t <= n_eclk; t += 1000)
        assert_true(rel_eclk[t] < 0.5 * rel_eclk[t - 1000]);
    assert_true(n_ecgd > n_eclk);
    free(rel_eclk);
    free(rel_ecgd);
    deft_logreg_free(&one);
    deft_logreg_free(&p);
}

/* ---- API ---------------------------------------------------------------- */

typedef struct {
    deft_optim_config_t cfg;
    deft_status_t st;
    char err[512];
} create_t;

static deft_status_t try_create(deft_comm_t *comm, void *arg)
{
    create_t *c = arg;
    float x0[8] = {0};
    size_t sizes[1] = {8};
    deft_layout_t layout = {1, sizes, NULL};
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &layout, x0, &c->cfg);
    if (deft_comm_rank(comm) == 0) {
        c->st = st;
        snprintf(c->err, sizeof c->err, "%s", deft_last_error());
    }
    deft_optim_destroy(st == DEFT_OK ? opt : NULL);
    return DEFT_OK;
}

static void expect_create(deft_optim_config_t cfg, deft_status_t want,
                          const char *needle)
{
    create_t c = {cfg, DEFT_OK, ""};
    assert_status(deft_run_threads(2, try_create, &c), DEFT_OK);
    if (c.st != want || !strstr(c.err, needle))
        fail_msg("create gave %s \"%s\", want %s mentioning \"%s\"",
                 deft_status_str(c.st), c.err, deft_status_str(want), needle);
}

static void test_eclk_config_checks(void **state)
{
    (void)state;
    deft_optim_config_t ok = DEFT_OPTIM_CONFIG_INIT, c;
    ok.algo = DEFT_ALGO_ECLK;
    ok.compressor = DEFT_COMP_TOPK;
    ok.eclk_L = 2.0;
    ok.eclk_mu = 0.01;
    ok.eclk_n = 100;
    expect_create(ok, DEFT_OK, "");
    c = ok, c.eclk_L = 0;
    expect_create(c, DEFT_ERR_INVALID_ARG, "eclk_L");
    c = ok, c.eclk_L = INFINITY;
    expect_create(c, DEFT_ERR_INVALID_ARG, "eclk_L");
    c = ok, c.eclk_mu = 0;
    expect_create(c, DEFT_ERR_INVALID_ARG, "eclk_mu");
    c = ok, c.eclk_mu = 3.0; /* > L */
    expect_create(c, DEFT_ERR_INVALID_ARG, "eclk_mu");
    c = ok, c.eclk_p = 1.5;
    expect_create(c, DEFT_ERR_INVALID_ARG, "eclk_p");
    c = ok, c.eclk_theta1 = 0.6;
    expect_create(c, DEFT_ERR_INVALID_ARG, "eclk_theta1");
    c = ok, c.eclk_n = 0;
    expect_create(c, DEFT_ERR_INVALID_ARG, "eclk_n");
    c = ok, c.eclk_n = 0, c.eclk_p = 0.1, c.eclk_theta1 = 0.2; /* no need */
    expect_create(c, DEFT_OK, "");
    /* The other algorithms ignore the eclk fields. */
    c = ok, c.algo = DEFT_ALGO_EF, c.eclk_L = -1, c.eclk_mu = NAN;
    expect_create(c, DEFT_OK, "");
    /* A positional initializer still gives zeros to the trailing fields. */
    deft_optim_config_t init = DEFT_OPTIM_CONFIG_INIT;
    assert_true(init.eclk_L == 0 && init.eclk_mu == 0 && init.eclk_p == 0 &&
                init.eclk_theta1 == 0 && init.eclk_n == 0);
}

static deft_status_t anchor_misuse(deft_comm_t *comm, void *arg)
{
    (void)arg;
    float x0[8], grad[8] = {0};
    deft_test_fill(x0, 8, 1);
    size_t sizes[1] = {8};
    deft_layout_t layout = {1, sizes, NULL};
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    deft_optim_t *ef, *ek;
    const float *w;
    uint64_t v;
    deft_status_t st = deft_optim_create(&ef, comm, &layout, x0, &cfg);
    if (st != DEFT_OK)
        return st;
    cfg.algo = DEFT_ALGO_ECLK;
    cfg.compressor = DEFT_COMP_RANDK;
    cfg.eclk_L = 1, cfg.eclk_mu = 0.1, cfg.eclk_p = 1, cfg.eclk_theta1 = 0.3;
    if ((st = deft_optim_create(&ek, comm, &layout, x0, &cfg)) != DEFT_OK) {
        deft_optim_destroy(ef);
        return st;
    }
#define EXPECT(call, want, needle)                                            \
    do {                                                                      \
        deft_status_t s_ = (call);                                            \
        if (s_ != (want) || !strstr(deft_last_error(), (needle))) {           \
            print_error("%s: got %d \"%s\"\n", #call, (int)s_,                \
                        deft_last_error());                                   \
            st = DEFT_ERR_INTERNAL;                                           \
            goto done;                                                        \
        }                                                                     \
    } while (0)
    EXPECT(deft_optim_eclk_anchor(NULL, &w, &v), DEFT_ERR_INVALID_ARG, "opt");
    EXPECT(deft_optim_eclk_anchor(ek, NULL, &v), DEFT_ERR_INVALID_ARG, "w");
    EXPECT(deft_optim_eclk_anchor(ek, &w, NULL), DEFT_ERR_INVALID_ARG,
           "version");
    EXPECT(deft_optim_eclk_anchor(ef, &w, &v), DEFT_ERR_INVALID_ARG, "eclk");
    EXPECT(deft_optim_tell(ek, grad, NULL), DEFT_ERR_INVALID_USAGE, "ask");
    /* After create: w = x0 = y, version 1; with p = 1 every step moves
     * the anchor (to the y of before the step) and bumps the version. */
    EXPECT(deft_optim_eclk_anchor(ek, &w, &v), DEFT_OK, "");
    if (v != 1 || memcmp(w, x0, sizeof x0) != 0) {
        st = DEFT_ERR_INTERNAL;
        goto done;
    }
    for (int t = 0; t < 3; t++) {
        const float *pt, *y;
        float y_before[8];
        deft_optim_params(ek, &y);
        memcpy(y_before, y, sizeof y_before);
        deft_optim_ask(ek, &pt);
        for (int j = 0; j < 8; j++)
            grad[j] = pt[j] - 0.5f; /* any gradient */
        if ((st = deft_optim_tell(ek, grad, NULL)) != DEFT_OK)
            goto done;
        EXPECT(deft_optim_eclk_anchor(ek, &w, &v), DEFT_OK, "");
        if (v != (uint64_t)t + 2 || memcmp(w, y_before, sizeof y_before) != 0) {
            st = DEFT_ERR_INTERNAL;
            goto done;
        }
    }
#undef EXPECT
done:
    deft_optim_destroy(ef);
    deft_optim_destroy(ek);
    return st;
}

static void test_eclk_anchor_misuse(void **state)
{
    (void)state;
    assert_status(deft_run_threads(2, anchor_misuse, NULL), DEFT_OK);
}

/* ---- checkpoints hold z, w and the errors ------------------------------ */

typedef struct {
    deft_logreg_t p;
    size_t m;
    deft_optim_config_t cfg;
    float final[2][3][16]; /* run, rank: y after 60 steps */
} ckpt_run_t;

static deft_status_t steps(deft_optim_t *opt, const ckpt_run_t *a, int rank,
                           int from, int to, uint64_t *seen, double *ganchor)
{
    const size_t d = a->p.d, lo = (size_t)rank * a->m;
    float grad[16];
    for (int t = from; t < to; t++) {
        const float *pt, *w;
        uint64_t version;
        deft_optim_ask(opt, &pt);
        deft_optim_eclk_anchor(opt, &w, &version);
        if (version != *seen) {
            deft_logreg_loss_grad_f32(&a->p, lo, lo + a->m, w, ganchor);
            *seen = version;
        }
        double g[16];
        size_t i = lo + pick_row((uint64_t)t, rank, a->m);
        memcpy(g, ganchor, sizeof(double) * d);
        deft_logreg_row_grad_add(&a->p, i, pt, 1.0, g);
        deft_logreg_row_grad_add(&a->p, i, w, -1.0, g);
        for (size_t j = 0; j < d; j++)
            grad[j] = (float)(g[j] + 0.01 * pt[j]);
        deft_status_t st = deft_optim_tell(opt, grad, NULL);
        if (st != DEFT_OK)
            return st;
    }
    return DEFT_OK;
}

static deft_status_t checkpoint_run(deft_comm_t *comm, void *arg)
{
    ckpt_run_t *a = arg;
    const int rank = deft_comm_rank(comm);
    size_t sizes[1] = {a->p.d};
    deft_layout_t layout = {1, sizes, NULL};
    float x0[16] = {0};
    double ganchor[16];
    uint64_t seen = 0;
    deft_optim_t *opt, *fresh;
    deft_status_t st = deft_optim_create(&opt, comm, &layout, x0, &a->cfg);
    if (st != DEFT_OK)
        return st;
    /* Run 0: 60 steps straight. */
    st = steps(opt, a, rank, 0, 60, &seen, ganchor);
    const float *y;
    deft_optim_params(opt, &y);
    memcpy(a->final[0][rank], y, sizeof(float) * a->p.d);
    deft_optim_destroy(opt);
    if (st != DEFT_OK)
        return st;

    /* Run 1: 25 steps, save, continue in a fresh optimizer (whose caller
     * has no cached anchor gradient), 35 more. */
    if ((st = deft_optim_create(&opt, comm, &layout, x0, &a->cfg)) != DEFT_OK)
        return st;
    seen = 0;
    st = steps(opt, a, rank, 0, 25, &seen, ganchor);
    size_t size = deft_optim_state_size(opt);
    void *blob = malloc(size);
    if (st == DEFT_OK)
        st = deft_optim_state_save(opt, blob, size);
    deft_optim_destroy(opt);
    if (st == DEFT_OK &&
        (st = deft_optim_create(&fresh, comm, &layout, x0, &a->cfg)) == DEFT_OK) {
        const float *w;
        uint64_t v0, v1;
        deft_optim_eclk_anchor(fresh, &w, &v0);
        if ((st = deft_optim_state_load(fresh, blob, size)) == DEFT_OK) {
            deft_optim_eclk_anchor(fresh, &w, &v1);
            if (v1 == v0) /* the anchor was replaced: the version moves */
                st = DEFT_ERR_INTERNAL;
        }
        seen = 0; /* a new process: no cached grad f_k(w) */
        if (st == DEFT_OK)
            st = steps(fresh, a, rank, 25, 60, &seen, ganchor);
        deft_optim_params(fresh, &y);
        memcpy(a->final[1][rank], y, sizeof(float) * a->p.d);
        deft_optim_destroy(fresh);
    }
    free(blob);
    return st;
}

static void test_eclk_checkpoint_continues_bitwise(void **state)
{
    (void)state;
    ckpt_run_t a;
    memset(&a, 0, sizeof a);
    a.m = 8;
    a.p = make_problem(3 * a.m, 10, 0.5f, 13);
    a.cfg = (deft_optim_config_t)DEFT_OPTIM_CONFIG_INIT;
    a.cfg.algo = DEFT_ALGO_ECLK;
    a.cfg.compressor = DEFT_COMP_TOPK; /* non-zero errors to carry over */
    a.cfg.ratio = 3;
    a.cfg.seed = 5;
    a.cfg.eclk_L = deft_logreg_smooth_max(&a.p, 0, a.p.n) + 0.01;
    a.cfg.eclk_mu = 0.01;
    a.cfg.eclk_n = a.m;
    assert_status(deft_run_threads(3, checkpoint_run, &a), DEFT_OK);
    assert_memory_equal(a.final[0], a.final[1], sizeof a.final[0]);
    deft_logreg_free(&a.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient_matches_finite_differences),
        cmocka_unit_test(test_smoothness_constants),
        cmocka_unit_test(test_newton_solves_to_machine_precision),
        cmocka_unit_test(test_eclk_none_is_lkatyusha),
        cmocka_unit_test(test_eclk_topk_linear_and_ahead_of_ecgd),
        cmocka_unit_test(test_eclk_config_checks),
        cmocka_unit_test(test_eclk_anchor_misuse),
        cmocka_unit_test(test_eclk_checkpoint_continues_bitwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
