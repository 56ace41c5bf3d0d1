/* sign: per segment the scale ||v_t||_1 / n_t and one bit per coordinate;
 * C(v)_i = -scale if v_i < 0 else +scale (so 0 and NaN map to +scale).
 * Message: T floats (scales), then ceil(d / 8) bytes; bit i of the vector
 * is bit i % 8 of byte i / 8 (segments share bytes at their borders). */
#include "compress/compress_impl.h"

static deft_status_t sign_init(deft_compressor_t *c)
{
    c->msg_bytes = c->n_seg * sizeof(float) + (c->dim + 7) / 8;
    c->float_off = 0;
    c->float_count = c->n_seg;
    return DEFT_OK;
}

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The float whose bits are x's with the sign bit flipped when neg (0/1):
 * branch-free, since signs of gradients are coin flips to a predictor. */
static inline float flip_sign(float x, uint32_t neg)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u ^= neg << 31;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Scalar step for one element: returns its sign bit, stores the residual. */
static inline unsigned sign_one(float *x, float scale)
{
    uint32_t neg = *x < 0.0f;
    *x -= flip_sign(scale, neg);
    return neg;
}

/* Encodes the 8 elements x[0..8) into one byte (bit j = x[j] < 0). */
static inline unsigned sign_byte(float *x, float scale)
{
#if defined(__SSE2__)
    const __m128 zero = _mm_setzero_ps();
    const __m128 sgn = _mm_castsi128_ps(_mm_set1_epi32((int)0x80000000u));
    const __m128 s4 = _mm_set1_ps(scale);
    __m128 x0 = _mm_loadu_ps(x), x1 = _mm_loadu_ps(x + 4);
    __m128 m0 = _mm_cmplt_ps(x0, zero), m1 = _mm_cmplt_ps(x1, zero);
    _mm_storeu_ps(x, _mm_sub_ps(x0, _mm_xor_ps(s4, _mm_and_ps(m0, sgn))));
    _mm_storeu_ps(x + 4, _mm_sub_ps(x1, _mm_xor_ps(s4, _mm_and_ps(m1, sgn))));
    return (unsigned)(_mm_movemask_ps(m0) | _mm_movemask_ps(m1) << 4);
#else
    unsigned b = 0;
    for (int j = 0; j < 8; j++)
        b |= sign_one(x + j, scale) << j;
    return b;
#endif
}

static void sign_encode(deft_compressor_t *c, uint64_t step, float *v,
                        void *msg)
{
    (void)step;
    unsigned char *bits = (unsigned char *)msg + c->n_seg * sizeof(float);
    memset(bits, 0, (c->dim + 7) / 8);
    for (size_t t = 0; t < c->n_seg; t++) {
        const deft_segment_t *s = &c->seg[t];
        const float scale =
            (float)(deft_sum_abs_f64(v + s->off, s->n) / (double)s->n);
        deft_store_f32((unsigned char *)msg + t * sizeof(float), scale);
        size_t i = s->off, end = s->off + s->n;
        /* Elements before the first whole byte, whole bytes, the rest
         * (bytes at segment borders are shared, hence |=). */
        for (; i < end && (i & 7); i++)
            bits[i >> 3] |= (unsigned char)(sign_one(v + i, scale) << (i & 7));
        for (; i + 8 <= end; i += 8)
            bits[i >> 3] = (unsigned char)sign_byte(v + i, scale);
        for (; i < end; i++)
            bits[i >> 3] |= (unsigned char)(sign_one(v + i, scale) << (i & 7));
    }
}

#if defined(__SSE2__)
/* Lane j of entry b: the sign bit when bit j of the nibble b is set. */
static const uint32_t nibble_signs[16][4] = {
#define S_(b, j) (((b) >> (j)) & 1 ? 0x80000000u : 0u)
#define ROW_(b) {S_(b, 0), S_(b, 1), S_(b, 2), S_(b, 3)}
    ROW_(0),  ROW_(1),  ROW_(2),  ROW_(3),  ROW_(4),  ROW_(5),
    ROW_(6),  ROW_(7),  ROW_(8),  ROW_(9),  ROW_(10), ROW_(11),
    ROW_(12), ROW_(13), ROW_(14), ROW_(15)
#undef ROW_
#undef S_
};
#endif

static void sign_decode_add(const deft_compressor_t *c, const void *msg,
                            float alpha, float *out)
{
    const unsigned char *bits =
        (const unsigned char *)msg + c->n_seg * sizeof(float);
    for (size_t t = 0; t < c->n_seg; t++) {
        const deft_segment_t *s = &c->seg[t];
        /* alpha * (+-scale) = +-(alpha * scale) exactly. */
        const float a =
            alpha * deft_load_f32((const unsigned char *)msg + t * 4);
        size_t i = s->off, end = s->off + s->n;
        for (; i < end && (i & 7); i++)
            out[i] += flip_sign(a, (bits[i >> 3] >> (i & 7)) & 1u);
#if defined(__SSE2__)
        const __m128 a4 = _mm_set1_ps(a);
        for (; i + 8 <= end; i += 8) {
            unsigned b = bits[i >> 3];
            __m128 f0 = _mm_castsi128_ps(
                _mm_loadu_si128((const __m128i *)nibble_signs[b & 15]));
            __m128 f1 = _mm_castsi128_ps(
                _mm_loadu_si128((const __m128i *)nibble_signs[b >> 4]));
            _mm_storeu_ps(out + i,
                          _mm_add_ps(_mm_loadu_ps(out + i), _mm_xor_ps(a4, f0)));
            _mm_storeu_ps(out + i + 4, _mm_add_ps(_mm_loadu_ps(out + i + 4),
                                                  _mm_xor_ps(a4, f1)));
        }
#endif
        for (; i < end; i++)
            out[i] += flip_sign(a, (bits[i >> 3] >> (i & 7)) & 1u);
    }
}

DEFT_COMPRESSOR(deft_compress_sign_ops) = {
    .kind = DEFT_COMP_SIGN,
    .name = "sign",
    .help = "sign bits scaled by the mean magnitude (allgather)",
    .wire = DEFT_WIRE_GATHER,
    .uses_ratio = 0,
    .init = sign_init,
    .fini = NULL,
    .encode = sign_encode,
    .decode_add = sign_decode_add,
    .select = NULL,
    .gather = NULL,
    .scatter = NULL,
};
