/* fp16: every coordinate cast to IEEE binary16, round to nearest even (5
 * exponent bits, 10 mantissa bits: |x| up to 65504, 11 significant bits;
 * subnormal below 2^-14, zero below 2^-25).
 * The message is d 16-bit values, half of none's bytes; workers sum it
 * with a 16-bit allreduce that decodes to float before adding
 * (src/comm/). A value out of range becomes Inf, which msg_finite reports
 * as divergence. */
#include "compress/half_codec.h"

DEFT_CLONES static void fp16_encode(deft_compressor_t *c, uint64_t step,
                                    float *v, void *msg)
{
    (void)step;
    half_codec_encode(c, v, msg, 0);
}

DEFT_CLONES static void fp16_decode_add(const deft_compressor_t *c,
                                        const void *msg, float alpha,
                                        float *out)
{
    half_codec_decode_add(c, msg, alpha, out, 0);
}

static int fp16_finite(const deft_compressor_t *c, const void *msg)
{
    return half_codec_finite(c, msg, 0);
}

static void fp16_poison(const deft_compressor_t *c, void *msg)
{
    (void)c;
    half_codec_poison(msg, 0);
}

DEFT_COMPRESSOR(deft_compress_fp16_ops) = {
    .kind = DEFT_COMP_FP16,
    .name = "fp16",
    .help = "IEEE half precision, round to nearest even (dense, 2 bytes a value)",
    .wire = DEFT_WIRE_SUM_F16,
    .uses_ratio = 0,
    .init = half_codec_init,
    .encode = fp16_encode,
    .decode_add = fp16_decode_add,
    .msg_finite = fp16_finite,
    .poison = fp16_poison,
};
