/* scale: C(v) = delta * v with delta = 1/ratio rounded to float, dense
 * (d floats). It saves no traffic; with DEF-A it realizes SGD with iterate
 * averaging (DEF paper, Lemma C.1). */
#include "compress/compress_impl.h"

static deft_status_t scale_init(deft_compressor_t *c)
{
    c->msg_bytes = c->dim * sizeof(float);
    c->float_off = 0;
    c->float_count = c->dim;
    return DEFT_OK;
}

static void scale_encode(deft_compressor_t *c, uint64_t step, float *v,
                         void *msg)
{
    (void)step;
    float *m = msg;
    const float delta = (float)(1.0 / c->p.ratio);
    size_t d = c->dim;
    for (size_t i = 0; i < d; i++) {
        float q = delta * v[i];
        m[i] = q;
        v[i] -= q;
    }
}

DEFT_COMPRESSOR(deft_compress_scale_ops) = {
    .kind = DEFT_COMP_SCALE,
    .name = "scale",
    .help = "C(v) = v / ratio, dense: SGD with iterate averaging (DEF paper, Lemma C.1); saves no traffic",
    .wire = DEFT_WIRE_SUM,
    .uses_ratio = 1,
    .init = scale_init,
    .fini = NULL,
    .encode = scale_encode,
    .decode_add = deft_dense_decode_add,
    .select = NULL,
    .gather = deft_dense_gather,
    .scatter = deft_dense_scatter,
};
