/* DEF-A: DEF's steps, but the model to evaluate is x itself, which for
 * K = 1, lambda = 1 and C(v) = delta * v is SGD with iterate averaging
 * (DEF paper, Lemma C.1); it generalizes faster early in training. */
#include "optim/optim_internal.h"

const deft_algo_ops_t deft_algo_defa = {
    DEFT_ALGO_DEFA,
    "defa",
    DEFT_NEED_E | DEFT_NEED_M | DEFT_NEED_POINT | DEFT_NEED_COMPRESSOR,
    deft_ef_ask,
    deft_ef_step,
    deft_output_x,
    DEFT_BUF_E | DEFT_BUF_M,
};
