/* EF: error feedback with momentum (Zheng et al. 2019); plain EF of
 * Karimireddy et al. (2019) with momentum 0. The gradient is taken at x. */
#include "optim/optim_internal.h"

DEFT_ALGORITHM(deft_algo_ef) = {
    .algo = DEFT_ALGO_EF,
    .name = "ef",
    .help = "error feedback (momentum variant)",
    .needs = DEFT_NEED_E | DEFT_NEED_M | DEFT_NEED_COMPRESSOR,
    .ask = deft_ef_ask,
    .tell = deft_ef_step,
    .output = deft_output_x,
    .local = DEFT_BUF_E | DEFT_BUF_M,
};
