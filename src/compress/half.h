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
 * does the rounding. All three cases are computed and one selected, with
 * no branch, so loops over it vectorize. */
static inline uint16_t deft_f32_to_f16(float f)
{
    const uint32_t u = deft_f32_bits(f);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t x = u & 0x7fffffffu;
    const uint32_t magic = 126u << 23; /* 0.5: its ulp is fp16's 2^-24 */
    const uint32_t sub =
        deft_f32_bits(deft_bits_f32(x) + deft_bits_f32(magic)) - magic;
    const uint32_t normal = (x + 0xc8000fffu + ((x >> 13) & 1u)) >> 13;
    const uint32_t special = 0x7c00u | (uint32_t)(x > 0x7f800000u) << 9;
    const uint32_t big = 0u - (uint32_t)(x >= 0x47800000u);  /* >= 2^16   */
    const uint32_t tiny = 0u - (uint32_t)(x < 0x38800000u);  /* < 2^-14   */
    const uint32_t o = (special & big) | (sub & tiny) | (normal & ~(big | tiny));
    return (uint16_t)(o | sign);
}

/* fp16 -> float, exact: the bits shifted into place and rebiased (twice
 * for Inf and NaN), subnormals as m * 2^-24; branch-free as above. */
static inline float deft_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = h & 0x7c00u;
    const uint32_t rebased = ((uint32_t)(h & 0x7fffu) << 13) + (112u << 23);
    const uint32_t normal =
        rebased + ((0u - (uint32_t)(e == 0x7c00u)) & (112u << 23));
    const uint32_t sub =
        deft_f32_bits((float)(int32_t)(h & 0x3ffu) * 5.9604644775390625e-8f);
    const uint32_t z = 0u - (uint32_t)(e == 0);
    return deft_bits_f32(((sub & z) | (normal & ~z)) | sign);
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
