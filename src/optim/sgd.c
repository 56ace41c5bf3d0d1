/* Full-precision momentum SGD, the baseline every compressor is measured
 * against: g_k = grad + wd * x; m = mu * m + (1 - dampening) avg(g_k);
 * x -= lr * m (or lr * (avg(g_k) + mu * m) with Nesterov), each tensor with
 * its group's values: torch.optim.SGD on the averaged gradient. It
 * allreduces the dense gradient, whatever cfg->compressor says. */
#include "core/internal.h"
#include "optim/optim_internal.h"

static const float *sgd_ask(deft_optim_t *opt)
{
    return opt->x;
}

static deft_status_t sgd_tell(deft_optim_t *opt, const float *grad)
{
    float *g = opt->msg, *x = opt->x, *m = opt->m;
    for (size_t t = 0; t < opt->n_tensors; t++) {
        const float wd = opt->groups[opt->tgroup[t]].weight_decay;
        for (size_t i = opt->offs[t]; i < opt->offs[t + 1]; i++)
            g[i] = grad[i] + wd * x[i];
    }
    deft_status_t st = deft_comm_allreduce_sum_f32(opt->comm, g, opt->d);
    if (st != DEFT_OK)
        return st;
    const float inv = 1.0f / (float)opt->nworkers;
    uint32_t expmax = 0;
    for (size_t t = 0; t < opt->n_tensors; t++) {
        const deft_hp_t h = deft_tensor_hp(opt, t);
        for (size_t i = opt->offs[t]; i < opt->offs[t + 1]; i++) {
            float u = deft_momentum(&h, g[i] * inv, &m[i]);
            x[i] -= h.lr * u;
            expmax = deft_exp_fold(expmax, u);
        }
    }
    if (expmax == DEFT_EXP_NONFINITE)
        return deft_optim_diverged(opt, "the averaged gradient holds NaN or Inf");
    return DEFT_OK;
}

/* It sends the dense gradient: no compressor. */
static const char *const sgd_ignores[] = {"compressor", "ratio", "scope", NULL};

DEFT_ALGORITHM(deft_algo_sgd) = {
    .algo = DEFT_ALGO_SGD,
    .name = "sgd",
    .help = "full-precision momentum SGD (dense allreduce), the baseline",
    .needs = DEFT_NEED_M,
    .ask = sgd_ask,
    .tell = sgd_tell,
    .output = deft_output_x,
    .local = 0,
    .ignores = sgd_ignores,
};
