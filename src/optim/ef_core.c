/* The step shared by the error-feedback family (ef, def, defa, saef):
 *   g   = grad(point) + wd * point       point = x - lambda * e_k
 *   m_k = mu * m_k + g                   (with dampening: see deft.h)
 *   p_k = lr * m_k + e_k                 (computed in e_k's buffer; with
 *                                         Nesterov lr * (g + mu * m_k))
 *   e_k = p_k - C(p_k)                   (the compressor's residual)
 *   x   = x - avg_k C(p_k)
 * (DEF paper, Algorithm 1 with the momentum form of eq. 11.) */
#include "core/internal.h"
#include "optim/optim_internal.h"

const float *deft_ef_ask(deft_optim_t *opt)
{
    if (opt->lambda == 0.0f)
        return opt->x;
    /* point is (d,): the detached point where the gradient is taken. */
    const float lam = opt->lambda;
    const float *x = opt->x, *e = opt->e;
    float *pt = opt->point;
    for (size_t i = 0; i < opt->d; i++)
        pt[i] = x[i] - lam * e[i];
    return pt;
}

deft_status_t deft_ef_step(deft_optim_t *opt, const float *grad)
{
    const float *pt = opt->lambda == 0.0f ? opt->x : opt->point;
    float *m = opt->m, *e = opt->e;
    uint32_t expmax = 0;
    for (size_t t = 0; t < opt->n_tensors; t++) {
        const deft_hp_t h = deft_tensor_hp(opt, t);
        for (size_t i = opt->offs[t]; i < opt->offs[t + 1]; i++) {
            float u = deft_momentum(&h, grad[i] + h.wd * pt[i], &m[i]);
            float pi = h.lr * u + e[i];
            e[i] = pi;
            expmax = deft_exp_fold(expmax, pi);
        }
    }
    return deft_optim_exchange(opt, e, expmax == DEFT_EXP_NONFINITE,
                               -1.0f / (float)opt->nworkers, opt->x, NULL);
}

const deft_option_def_t deft_option_lambda = DEFT_OPTION_DEF(
    deft_optim_config_t, lambda, FLOAT, 0, 1, 0, .flag = "lambda",
    .metavar = "L",
    .help = "def, defa: the gradient is taken at x - lambda e (DEF's detach "
            "coefficient)");
