/* DEF: detached error feedback (Xu & Huang, ICML 2022, Algorithm 1). The
 * gradient is taken at the detached point x - lambda * e_k, and the model
 * to evaluate is y = x - avg(e), which follows the uncompressed path
 * y_{t+1} = y_t - lr * avg(m_k) exactly (eq. 8). */
#include "optim/optim_internal.h"

static const deft_option_def_t *const def_params[] = {&deft_option_lambda,
                                                      NULL};

DEFT_ALGORITHM(deft_algo_def) = {
    .algo = DEFT_ALGO_DEF,
    .name = "def",
    .help = "detached error feedback: gradient at x - lambda e, output x - avg(e)",
    .needs = DEFT_NEED_E | DEFT_NEED_M | DEFT_NEED_POINT | DEFT_NEED_COMPRESSOR,
    .ask = deft_ef_ask,
    .tell = deft_ef_step,
    .output = deft_output_x_minus_avg_e,
    .local = DEFT_BUF_E | DEFT_BUF_M,
    .params = def_params,
};
