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

/* The step-ahead point: lambda = 1 whatever cfg->lambda says. */
static void saef_setup(deft_optim_t *opt)
{
    opt->lambda = 1.0f;
}

static const deft_option_def_t avg_period = DEFT_OPTION_DEF(
    deft_optim_config_t, avg_period, INT, 0, 1 << 30, 0, .flag = "avg-period",
    .metavar = "P", .help = "saef: average the errors every P steps (0 = never)");
static const deft_option_def_t *const saef_params[] = {&avg_period, NULL};

DEFT_ALGORITHM(deft_algo_saef) = {
    .algo = DEFT_ALGO_SAEF,
    .name = "saef",
    .help = "step-ahead error feedback (lambda = 1) with error averaging",
    .needs = DEFT_NEED_E | DEFT_NEED_M | DEFT_NEED_POINT | DEFT_NEED_COMPRESSOR,
    .ask = deft_ef_ask,
    .tell = saef_tell,
    .output = deft_output_x,
    .local = DEFT_BUF_E | DEFT_BUF_M,
    .params = saef_params,
    .setup = saef_setup,
};
