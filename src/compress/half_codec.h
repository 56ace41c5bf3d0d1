/* The operations fp16.c and bf16.c share, written once over a constant
 * format flag (bf16 = 0 or 1) that each file passes as a literal, so the
 * compiler specializes every loop. Message: d uint16 values, element i the
 * 16-bit rounding of v_i. C(v)_i = float(msg_i) and the residual is
 * v_i - C(v)_i, exactly representable in float. */
#ifndef DEFT_HALF_CODEC_H
#define DEFT_HALF_CODEC_H

#include "compress/compress_impl.h"
#include "compress/half.h"

static inline uint16_t half_codec_to16(float x, int bf16)
{
    return bf16 ? deft_f32_to_bf16(x) : deft_f32_to_f16(x);
}

static inline float half_codec_to32(uint16_t h, int bf16)
{
    return bf16 ? deft_bf16_to_f32(h) : deft_f16_to_f32(h);
}

static inline deft_status_t half_codec_init(deft_compressor_t *c)
{
    c->msg_bytes = c->dim * sizeof(uint16_t);
    c->float_off = 0;
    c->float_count = 0; /* msg_finite is the kind's own */
    return DEFT_OK;
}

/* These messages are summed (never allgathered), so msg is always a
 * buffer of its own, aligned for uint16_t. */
static inline void half_codec_encode(deft_compressor_t *c, float *v,
                                     void *msg, int bf16)
{
    uint16_t *m = msg;
    for (size_t i = 0; i < c->dim; i++) {
        const uint16_t h = half_codec_to16(v[i], bf16);
        m[i] = h;
        v[i] -= half_codec_to32(h, bf16);
    }
}

static inline void half_codec_decode_add(const deft_compressor_t *c,
                                         const void *msg, float alpha,
                                         float *out, int bf16)
{
    const uint16_t *m = msg;
    for (size_t i = 0; i < c->dim; i++)
        out[i] += alpha * half_codec_to32(m[i], bf16);
}

static inline int half_codec_finite(const deft_compressor_t *c,
                                    const void *msg, int bf16)
{
    const uint16_t *m = msg;
    unsigned bad = 0;
    for (size_t i = 0; i < c->dim; i++)
        bad |= (unsigned)(bf16 ? deft_bf16_nonfinite(m[i])
                               : deft_f16_nonfinite(m[i]));
    return !bad;
}

static inline void half_codec_poison(void *msg, int bf16)
{
    uint16_t nan = bf16 ? 0x7fc0u : 0x7e00u;
    memcpy(msg, &nan, 2);
}

#endif
