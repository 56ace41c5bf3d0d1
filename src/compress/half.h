/* 16-bit floats: IEEE binary16 (fp16) and bfloat16 (bf16), as uint16_t bit
 * patterns, with round-to-nearest-even casts from float and exact casts
 * back. Shared by the fp16 and bf16 compressors and the 16-bit allreduce
 * of src/comm/. NaN stays NaN (quiet), +-Inf stays Inf, a float beyond the
 * 16-bit range rounds to Inf as IEEE rounding says (fp16: |x| >= 65520). */
#ifndef DEFT_HALF_H
#define DEFT_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t deft_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float deft_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* float -> fp16, round to nearest even. Normal results round the 13 dropped
 * mantissa bits with the add-0xfff-plus-odd-bit trick (a carry into the
 * exponent is correct, up to Inf); results below 2^-14 are formed by a
 * float addition that aligns the value to the subnormal grid, so the FPU
 * does the rounding. */
static inline uint16_t deft_f32_to_f16(float f)
{
    uint32_t x = deft_f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    uint32_t o;
    if (x >= 0x47800000u) {              /* >= 2^16, Inf or NaN            */
        o = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (x < 0x38800000u) {        /* below 2^-14: subnormal or 0    */
        const uint32_t magic = 126u << 23; /* 0.5: ulp 2^-24 = fp16's      */
        o = deft_f32_bits(deft_bits_f32(x) + deft_bits_f32(magic)) - magic;
    } else {
        const uint32_t odd = (x >> 13) & 1u;
        x += 0xc8000fffu + odd;          /* rebias 127 -> 15, round        */
        o = x >> 13;
    }
    return (uint16_t)(o | sign);
}

/* fp16 -> float, exact. */
static inline float deft_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t u;
    if (e == 0x1f)
        u = 0x7f800000u | m << 13;
    else if (e == 0) /* subnormal or zero: m * 2^-24, exact in float */
        u = deft_f32_bits((float)m * 5.9604644775390625e-8f);
    else
        u = (e + 112u) << 23 | m << 13;
    return deft_bits_f32(u | sign);
}

/* float -> bf16, round to nearest even (NaN kept quiet). */
static inline uint16_t deft_f32_to_bf16(float f)
{
    uint32_t x = deft_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* bf16 -> float, exact. */
static inline float deft_bf16_to_f32(uint16_t h)
{
    return deft_bits_f32((uint32_t)h << 16);
}

/* 1 when the 16-bit value is NaN or Inf (all-ones exponent). */
static inline int deft_f16_nonfinite(uint16_t h)
{
    return (h & 0x7c00u) == 0x7c00u;
}
static inline int deft_bf16_nonfinite(uint16_t h)
{
    return (h & 0x7f80u) == 0x7f80u;
}

#endif
