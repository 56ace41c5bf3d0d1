/* bf16: every coordinate cast to bfloat16, round to nearest even (float's
 * 8 exponent bits and range, 7 mantissa bits: 8 significant bits).
 * The message is d 16-bit values, half of none's bytes; workers sum it
 * with a 16-bit allreduce that decodes to float before adding
 * (src/comm/). A value out of range becomes Inf, which msg_finite reports
 * as divergence. */
#include "compress/half_codec.h"

DEFT_CLONES static void bf16_encode(deft_compressor_t *c, uint64_t step,
                                    float *v, void *msg)
{
    (void)step;
    half_codec_encode(c, v, msg, 1);
}

DEFT_CLONES static void bf16_decode_add(const deft_compressor_t *c,
                                        const void *msg, float alpha,
                                        float *out)
{
    half_codec_decode_add(c, msg, alpha, out, 1);
}

static int bf16_finite(const deft_compressor_t *c, const void *msg)
{
    return half_codec_finite(c, msg, 1);
}

static void bf16_poison(const deft_compressor_t *c, void *msg)
{
    (void)c;
    half_codec_poison(msg, 1);
}

DEFT_COMPRESSOR(deft_compress_bf16_ops) = {
    .kind = DEFT_COMP_BF16,
    .name = "bf16",
    .help = "bfloat16 values, round to nearest even (dense, 2 bytes a value)",
    .wire = DEFT_WIRE_SUM_BF16,
    .uses_ratio = 0,
    .init = half_codec_init,
    .encode = bf16_encode,
    .decode_add = bf16_decode_add,
    .msg_finite = bf16_finite,
    .poison = bf16_poison,
};
