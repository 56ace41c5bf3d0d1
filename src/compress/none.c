/* none: the message is v itself (d floats); the residual is exactly 0. */
#include "compress/compress_impl.h"

static deft_status_t none_init(deft_compressor_t *c)
{
    c->msg_bytes = c->dim * sizeof(float);
    c->float_off = 0;
    c->float_count = c->dim;
    return DEFT_OK;
}

static void none_encode(deft_compressor_t *c, uint64_t step, float *v,
                        void *msg)
{
    (void)step;
    memcpy(msg, v, c->dim * sizeof(float));
    memset(v, 0, c->dim * sizeof(float));
}

void deft_dense_decode_add(const deft_compressor_t *c, const void *msg,
                           float alpha, float *out)
{
    const float *m = msg;
    size_t d = c->dim;
    for (size_t i = 0; i < d; i++)
        out[i] += alpha * m[i];
}

void deft_dense_gather(const deft_compressor_t *c, const float *v, float *msg)
{
    memcpy(msg, v, c->dim * sizeof(float));
}

void deft_dense_scatter(const deft_compressor_t *c, const float *msg,
                        float alpha, float *out)
{
    size_t d = c->dim;
    for (size_t i = 0; i < d; i++)
        out[i] = alpha * msg[i];
}

DEFT_COMPRESSOR(deft_compress_none_ops) = {
    .kind = DEFT_COMP_NONE,
    .name = "none",
    .help = "send everything (dense float32)",
    .selects = deft_selects_always,
    .wire = DEFT_WIRE_SUM,
    .uses_ratio = 0,
    .init = none_init,
    .fini = NULL,
    .encode = none_encode,
    .decode_add = deft_dense_decode_add,
    .select = NULL,
    .gather = deft_dense_gather,
    .scatter = deft_dense_scatter,
};
