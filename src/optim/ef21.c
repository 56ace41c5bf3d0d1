/* EF21 (Richtarik, Sokolov & Fatkhullin 2021): each worker keeps a gradient
 * estimate g_k and sends only the compressed change of it; all keep
 * g = avg(g_k). The first step sends the dense gradient to set
 * g_k = grad_k(x_0). Then, per step with the gradient at x:
 *   c_k = C(grad_k + wd * x - g_k);  g_k += c_k;  g += avg(c_k)
 *   x -= lr * g
 * (wd and lr per tensor, from its group). As in the paper (and SPEC §2)
 * there is no momentum: the groups' momentum, dampening and nesterov are
 * ignored. */
#include "core/internal.h"
#include "optim/optim_internal.h"

static const float *ef21_ask(deft_optim_t *opt)
{
    return opt->x;
}

static deft_status_t ef21_tell(deft_optim_t *opt, const float *grad)
{
    const size_t d = opt->d;
    float *x = opt->x, *gk = opt->gk, *g = opt->g;
    deft_status_t st;
    if (opt->step == 0) {
        for (size_t t = 0; t < opt->n_tensors; t++) {
            const float wd = opt->groups[opt->tgroup[t]].weight_decay;
            for (size_t i = opt->offs[t]; i < opt->offs[t + 1]; i++)
                g[i] = gk[i] = grad[i] + wd * x[i];
        }
        if ((st = deft_comm_allreduce_sum_f32(opt->comm, g, d)) != DEFT_OK)
            return st;
        const float inv = 1.0f / (float)opt->nworkers;
        for (size_t i = 0; i < d; i++)
            g[i] *= inv;
        if (deft_exp_max_f32(g, d) == DEFT_EXP_NONFINITE)
            return deft_optim_diverged(opt, "the initial gradient holds NaN "
                                            "or Inf");
    } else {
        float *diff = opt->point; /* (d,) scratch */
        uint32_t expmax = 0;
        for (size_t t = 0; t < opt->n_tensors; t++) {
            const float wd = opt->groups[opt->tgroup[t]].weight_decay;
            for (size_t i = opt->offs[t]; i < opt->offs[t + 1]; i++) {
                float di = grad[i] + wd * x[i] - gk[i];
                diff[i] = di;
                expmax = deft_exp_fold(expmax, di);
            }
        }
        st = deft_optim_exchange(opt, diff, expmax == DEFT_EXP_NONFINITE,
                                 1.0f / (float)opt->nworkers, g, gk);
        if (st != DEFT_OK)
            return st;
    }
    for (size_t t = 0; t < opt->n_tensors; t++) {
        const float lr = opt->groups[opt->tgroup[t]].lr;
        for (size_t i = opt->offs[t]; i < opt->offs[t + 1]; i++)
            x[i] -= lr * g[i];
    }
    return DEFT_OK;
}

/* The paper's method has no momentum. */
static const char *const ef21_ignores[] = {"momentum", "dampening", "nesterov",
                                           NULL};

DEFT_ALGORITHM(deft_algo_ef21) = {
    .algo = DEFT_ALGO_EF21,
    .name = "ef21",
    .help = "EF21: compressed gradient differences (no momentum)",
    .needs = DEFT_NEED_POINT | DEFT_NEED_EF21 | DEFT_NEED_COMPRESSOR,
    .ask = ef21_ask,
    .tell = ef21_tell,
    .output = deft_output_x,
    .local = DEFT_BUF_GK,
    .ignores = ef21_ignores,
};
