/* PSync (CSER with partial synchronization, Xie et al. 2020): every worker
 * steps its own model x_k with local momentum SGD, then the workers
 * average one compressor-chosen block of their models each step. What is
 * not yet synchronized, x_k - avg(x_k), plays the role of the error. The
 * model to evaluate is avg(x_k). */
#include "core/internal.h"
#include "optim/optim_internal.h"

static const float *psync_ask(deft_optim_t *opt)
{
    return opt->x;
}

static deft_status_t psync_tell(deft_optim_t *opt, const float *grad)
{
    float *x = opt->x, *m = opt->m;
    uint32_t expmax = 0;
    for (size_t t = 0; t < opt->n_tensors; t++) {
        const deft_hp_t h = deft_tensor_hp(opt, t);
        for (size_t i = opt->offs[t]; i < opt->offs[t + 1]; i++) {
            float u = deft_momentum(&h, grad[i] + h.wd * x[i], &m[i]);
            float xi = x[i] - h.lr * u;
            x[i] = xi;
            expmax = deft_exp_fold(expmax, xi);
        }
    }
    float *msg = opt->msg;
    deft_compressor_select(opt->comp, opt->step);
    deft_compressor_gather(opt->comp, x, msg);
    if (expmax == DEFT_EXP_NONFINITE)
        deft_compressor_poison(opt->comp, msg);
    deft_status_t st = deft_comm_allreduce_sum_f32(
        opt->comm, msg, opt->msg_bytes / sizeof(float));
    if (st != DEFT_OK)
        return st;
    if (!deft_compressor_msg_finite(opt->comp, msg))
        return deft_optim_diverged(opt, "the averaged model block holds NaN "
                                        "or Inf");
    deft_compressor_scatter(opt->comp, msg, 1.0f / (float)opt->nworkers, x);
    return DEFT_OK;
}

static deft_status_t psync_output(deft_optim_t *opt, float *model)
{
    memcpy(model, opt->x, opt->d * sizeof(float));
    deft_status_t st = deft_comm_allreduce_sum_f32(opt->comm, model, opt->d);
    if (st != DEFT_OK)
        return st;
    const float inv = 1.0f / (float)opt->nworkers;
    for (size_t i = 0; i < opt->d; i++)
        model[i] *= inv;
    return DEFT_OK;
}

DEFT_ALGORITHM(deft_algo_psync) = {
    .algo = DEFT_ALGO_PSYNC,
    .name = "psync",
    .help = "partial synchronization of local models (CSER)",
    .needs = DEFT_NEED_M | DEFT_NEED_COMPRESSOR | DEFT_NEED_LINEAR,
    .ask = psync_ask,
    .tell = psync_tell,
    .output = psync_output,
    .local = DEFT_BUF_X | DEFT_BUF_M,
};
