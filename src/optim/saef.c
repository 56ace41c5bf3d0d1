/* SAEF: step-ahead error feedback with error averaging (Xu, Huo & Huang,
 * AAAI 2021). Step ahead: the gradient is taken at x - e_k (DEF with
 * lambda = 1, whatever cfg->lambda says). Error averaging: every avg_period
 * steps the workers replace e_k by avg(e_k), a dense allreduce, so that the
 * local errors do not drift apart. The model to evaluate is x. */
#include "core/internal.h"
#include "optim/optim_internal.h"

static deft_status_t saef_tell(deft_optim_t *opt, const float *grad)
{
    deft_status_t st = deft_ef_step(opt, grad);
    if (st != DEFT_OK)
        return st;
    int period = opt->cfg.avg_period;
    if (period == 0 || (opt->step + 1) % (uint64_t)period != 0)
        return DEFT_OK;
    st = deft_comm_allreduce_sum_f32(opt->comm, opt->e, opt->d);
    if (st != DEFT_OK)
        return st;
    const float inv = 1.0f / (float)opt->nworkers;
    for (size_t i = 0; i < opt->d; i++)
        opt->e[i] *= inv;
    if (deft_exp_max_f32(opt->e, opt->d) == DEFT_EXP_NONFINITE)
        return deft_optim_diverged(opt, "the averaged error holds NaN or Inf");
    return DEFT_OK;
}

const deft_algo_ops_t deft_algo_saef = {
    DEFT_ALGO_SAEF,
    "saef",
    DEFT_NEED_E | DEFT_NEED_M | DEFT_NEED_POINT | DEFT_NEED_COMPRESSOR,
    deft_ef_ask,
    saef_tell,
    deft_output_x,
    DEFT_BUF_E | DEFT_BUF_M,
};
