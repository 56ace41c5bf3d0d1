/* DEF-A: DEF's steps, but the model to evaluate is x itself, which for
 * K = 1, lambda = 1 and C(v) = delta * v is SGD with iterate averaging
 * (DEF paper, Lemma C.1); it generalizes faster early in training. */
#include "optim/optim_internal.h"

static const deft_option_def_t *const defa_params[] = {&deft_option_lambda,
                                                       NULL};

DEFT_ALGORITHM(deft_algo_defa) = {
    .algo = DEFT_ALGO_DEFA,
    .name = "defa",
    .help = "DEF-A: DEF's steps, output x",
    .needs = DEFT_NEED_E | DEFT_NEED_M | DEFT_NEED_POINT | DEFT_NEED_COMPRESSOR,
    .ask = deft_ef_ask,
    .tell = deft_ef_step,
    .output = deft_output_x,
    .local = DEFT_BUF_E | DEFT_BUF_M,
    .params = defa_params,
};
