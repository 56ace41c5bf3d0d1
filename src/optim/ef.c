/* EF: error feedback with momentum (Zheng et al. 2019); plain EF of
 * Karimireddy et al. (2019) with momentum 0. The gradient is taken at x. */
#include "optim/optim_internal.h"

const deft_algo_ops_t deft_algo_ef = {
    DEFT_ALGO_EF, "ef", DEFT_NEED_E | DEFT_NEED_M | DEFT_NEED_COMPRESSOR,
    deft_ef_ask,  deft_ef_step, deft_output_x, DEFT_BUF_E | DEFT_BUF_M,
};
