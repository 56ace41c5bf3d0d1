/* ECLK: error-compensated loopless Katyusha (Qian, Richtarik & Zhang,
 * "Error Compensated Distributed SGD Can Be Accelerated", arXiv 2010.00091,
 * Algorithm 1). It is L-Katyusha (Kovalev, Horvath & Richtarik, "Don't Jump
 * Through Hoops and Remove Those Loops", ALT 2020, Algorithm 2) in which the
 * gradient step of the mirror sequence z is compressed with error feedback:
 *   x    = theta1 z + theta2 w + (1 - theta1 - theta2) y        (ask)
 *   g_k  = the caller's variance-reduced estimate at x, + wd x
 *   p_k  = (eta/L) g_k + e_k;  d_k = C(p_k);  e_k = p_k - d_k
 *   z+   = (eta sigma x + z - avg_k d_k) / (1 + eta sigma)
 *   y+   = x + theta1 (z+ - z)
 *   w+   = y (before this step) with probability p, else w
 * With C = identity, e_k stays 0 and avg_k d_k = (eta/L) avg_k g_k: exactly
 * L-Katyusha's z step on the averaged problem.
 *
 * The anchor takes the y of before the step, y^k, as L-Katyusha's line
 * "w^{k+1} = y^k with probability p" does (SPEC §2 lists the coin after the
 * y update; we follow the paper, whose analysis bounds P(w) through
 * P(y^k)).
 * The coin is shared without communication: u < p for u uniform from the
 * counter-based stream (seed, step, 0, DEFT_STREAM_ECLK_COIN).
 *
 * Parameters (cfg fields left 0 are derived) follow L-Katyusha's theorem
 * for uniform sampling (Kovalev et al. 2020). ECLK's own theorem also
 * involves the compressor's contraction factor; its constants were not
 * available here (only the paper's abstract), and with small theta1 (large
 * eta/L) compressed runs can oscillate: set eclk_theta1 larger then (see
 * docs/eclk.md).
 *   sigma  = mu / L
 *   theta2 = 1/2
 *   p      = 1/n                       (n = parts per worker)
 *   theta1 = min(sqrt(2 sigma / (3 p)), 1/2), which for p = 1/n is
 *            Kovalev et al.'s min(sqrt(2 sigma n / 3), 1/2)
 *   eta    = theta2 / ((1 + theta2) theta1)
 * giving O((n + sqrt(n L / mu)) log(1/eps)) steps without compression. L is
 * the smoothness of the parts f_{k,i}, which bounds the variance of the
 * estimator for any sampling, so the worker count K does not enter this
 * (conservative) choice. The output is y: L-Katyusha's Lyapunov function
 * contains (P(y) - P*) / theta1, so y is the sequence whose
 * function value is guaranteed to converge (x mixes in z, which only has a
 * distance guarantee). */
#include "core/internal.h"
#include "core/rng.h"
#include "optim/optim_internal.h"

#include <math.h>

void deft_eclk_theory(double L, double mu, uint64_t n, double p_in,
                      double theta1_in, double *p_out, double *theta1_out)
{
    double p = p_in > 0.0 ? p_in : 1.0 / (double)n;
    double theta1 = theta1_in;
    if (!(theta1 > 0.0)) {
        theta1 = sqrt(2.0 * (mu / L) / (3.0 * p));
        theta1 = theta1 < 0.5 ? theta1 : 0.5;
    }
    *p_out = p;
    *theta1_out = theta1;
}

static void eclk_setup(deft_optim_t *opt)
{
    const deft_optim_config_t *c = &opt->cfg;
    deft_eclk_theory(c->eclk_L, c->eclk_mu, c->eclk_n, c->eclk_p,
                     c->eclk_theta1, &opt->eclk_p, &opt->eclk_theta1);
    opt->eclk_theta2 = 0.5;
    opt->eclk_eta = opt->eclk_theta2 /
                    ((1.0 + opt->eclk_theta2) * opt->eclk_theta1);
    opt->eclk_sigma = c->eclk_mu / c->eclk_L;
    memcpy(opt->z, opt->x, opt->d * sizeof(float));
    memcpy(opt->w, opt->x, opt->d * sizeof(float));
    opt->anchor_version = 1;
}

static const float *eclk_ask(deft_optim_t *opt)
{
    /* point (d,) = theta1 z + theta2 w + (1 - theta1 - theta2) y, each
     * element in double and rounded once. */
    const double t1 = opt->eclk_theta1, t2 = opt->eclk_theta2;
    const double t3 = 1.0 - t1 - t2;
    const float *y = opt->x, *z = opt->z, *w = opt->w;
    float *pt = opt->point;
    for (size_t i = 0; i < opt->d; i++)
        pt[i] = (float)(t1 * z[i] + t2 * w[i] + t3 * y[i]);
    return pt;
}

static deft_status_t eclk_tell(deft_optim_t *opt, const float *grad)
{
    const size_t d = opt->d;
    const double scale = opt->eclk_eta / opt->cfg.eclk_L; /* eta / L */
    const float *x = opt->point;
    float *e = opt->e, *y = opt->x, *z = opt->z, *delta = opt->delta;

    /* p_k = (eta/L)(g_k + wd x) + e_k, built in e's buffer (wd from each
     * tensor's group); the exchange leaves e = p_k - C(p_k) there and adds
     * avg_k C(p_k) into delta. */
    uint32_t expmax = 0;
    for (size_t t = 0; t < opt->n_tensors; t++) {
        const double wd = opt->groups[opt->tgroup[t]].weight_decay;
        for (size_t i = opt->offs[t]; i < opt->offs[t + 1]; i++) {
            float pi = (float)(e[i] + scale * ((double)grad[i] + wd * x[i]));
            e[i] = pi;
            expmax = deft_exp_fold(expmax, pi);
        }
    }
    memset(delta, 0, d * sizeof(float));
    deft_status_t st = deft_optim_exchange(opt, e, expmax == DEFT_EXP_NONFINITE,
                                           1.0f / (float)opt->nworkers, delta,
                                           NULL);
    if (st != DEFT_OK)
        return st;

    /* The shared coin; on heads the anchor becomes the y of before this
     * step, so copy it before y moves. */
    deft_rng_t rng = deft_rng_make(opt->cfg.seed, opt->step, 0,
                                   DEFT_STREAM_ECLK_COIN);
    if (deft_rng_uniform_f64(&rng) < opt->eclk_p) {
        memcpy(opt->w, y, d * sizeof(float));
        opt->anchor_version++;
    }

    const double es = opt->eclk_eta * opt->eclk_sigma;
    const double inv = 1.0 / (1.0 + es), t1 = opt->eclk_theta1;
    for (size_t i = 0; i < d; i++) {
        double zn = (es * x[i] + z[i] - (double)delta[i]) * inv;
        y[i] = (float)(x[i] + t1 * (zn - z[i]));
        z[i] = (float)zn;
    }
    return DEFT_OK;
}

deft_status_t deft_optim_eclk_anchor(const deft_optim_t *opt, const float **w,
                                     uint64_t *version)
{
    if (!opt || !w || !version)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_optim_eclk_anchor: %s is NULL",
                         !opt ? "opt" : !w ? "w" : "version");
    if (opt->cfg.algo != DEFT_ALGO_ECLK)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_optim_eclk_anchor: the optimizer runs %s; only "
                         "eclk has an anchor", deft_algo_name(opt->cfg.algo));
    *w = opt->w;
    *version = opt->anchor_version;
    return DEFT_OK;
}

/* The problem's constants and the method's parameters (0: from theory). */
static const deft_option_def_t eclk_L = DEFT_OPTION_DEF(
    deft_optim_config_t, eclk_L, DOUBLE, 0, INFINITY, DEFT_OPTION_MIN_OPEN,
    .zero = "not given", .required = 1,
    .help = "eclk: smoothness L of the parts (required)");
static const deft_option_def_t eclk_mu = DEFT_OPTION_DEF(
    deft_optim_config_t, eclk_mu, DOUBLE, 0, INFINITY, DEFT_OPTION_MIN_OPEN,
    .zero = "not given", .required = 1,
    .help = "eclk: strong convexity mu, at most eclk_L (required)");
static const deft_option_def_t eclk_p = DEFT_OPTION_DEF(
    deft_optim_config_t, eclk_p, DOUBLE, 0, 1, DEFT_OPTION_MIN_OPEN,
    .zero = "the theory's 1/eclk_n",
    .help = "eclk: probability that the anchor moves in a step");
static const deft_option_def_t eclk_theta1 = DEFT_OPTION_DEF(
    deft_optim_config_t, eclk_theta1, DOUBLE, 0, 0.5, DEFT_OPTION_MIN_OPEN,
    .zero = "derive from theory",
    .help = "eclk: momentum weight theta1");
static const deft_option_def_t eclk_n = DEFT_OPTION_DEF(
    deft_optim_config_t, eclk_n, UINT64, 1, INFINITY, 0,
    .zero = "not given: eclk_p and eclk_theta1 must be",
    .help = "eclk: parts (local samples) per worker");
static const deft_option_def_t *const eclk_params[] = {
    &eclk_L, &eclk_mu, &eclk_p, &eclk_theta1, &eclk_n, NULL};
/* Its steps follow from L and mu. */
static const char *const eclk_ignores[] = {"lr", "momentum", "dampening",
                                           "nesterov", NULL};

/* The rules between eclk's fields (each one's range is checked from its
 * entry above). */
static deft_status_t eclk_validate(const deft_optim_config_t *cfg,
                                   const char *pre)
{
    char a[128], b[128];
    if (!(cfg->eclk_mu <= cfg->eclk_L))
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s = %g: must be at most %s "
                         "= %g (strong convexity cannot exceed smoothness)",
                         deft_option_label("eclk_mu", pre, a), cfg->eclk_mu,
                         deft_option_label("eclk_L", pre, b), cfg->eclk_L);
    if (cfg->eclk_n == 0 && (cfg->eclk_p == 0.0 || cfg->eclk_theta1 == 0.0))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s = 0: the number of parts per worker is needed to "
                         "derive %s from theory",
                         deft_option_label("eclk_n", pre, a),
                         deft_option_label(cfg->eclk_p == 0.0 ? "eclk_p"
                                                              : "eclk_theta1",
                                           pre, b));
    return DEFT_OK;
}

DEFT_ALGORITHM(deft_algo_eclk) = {
    .algo = DEFT_ALGO_ECLK,
    .name = "eclk",
    .help = "error-compensated loopless Katyusha (convex problems)",
    .needs = DEFT_NEED_E | DEFT_NEED_POINT | DEFT_NEED_ECLK | DEFT_NEED_COMPRESSOR,
    .ask = eclk_ask,
    .tell = eclk_tell,
    .output = deft_output_x,
    .local = DEFT_BUF_E,
    .params = eclk_params,
    .ignores = eclk_ignores,
    .validate = eclk_validate,
    .setup = eclk_setup,
    .coupled_point = 1,
};
