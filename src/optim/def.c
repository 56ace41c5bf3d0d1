/* DEF: detached error feedback (Xu & Huang, ICML 2022, Algorithm 1). The
 * gradient is taken at the detached point x - lambda * e_k, and the model
 * to evaluate is y = x - avg(e), which follows the uncompressed path
 * y_{t+1} = y_t - lr * avg(m_k) exactly (eq. 8). */
#include "optim/optim_internal.h"

const deft_algo_ops_t deft_algo_def = {
    DEFT_ALGO_DEF,
    "def",
    DEFT_NEED_E | DEFT_NEED_M | DEFT_NEED_POINT | DEFT_NEED_COMPRESSOR,
    deft_ef_ask,
    deft_ef_step,
    deft_output_x_minus_avg_e,
    DEFT_BUF_E | DEFT_BUF_M,
};
