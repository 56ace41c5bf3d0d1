/* qsgd: stochastic s-level quantization (Alistarh et al. 2017). Per
 * segment norm = ||v_t||_2; coordinate i gets level
 * l_i = floor(|v_i| / norm * s + u_i) with u_i uniform in [0, 1) from the
 * worker-private stream (seed, step, segment, rank), so E[l_i] =
 * |v_i| / norm * s and C(v)_i = sign(v_i) * (norm / s) * l_i is unbiased.
 * Message: T floats (norms), then ceil(d * b / 8) bytes of b-bit codes
 * (b = 2 for s = 1, 4 for s <= 7, else 8), code i at bit offset i * b
 * (low bits first); a code's low bit is the sign (1 = negative), the rest
 * the level. A zero or non-finite norm gives all-zero codes and leaves the
 * segment's v as it was (C(v) = 0); a non-finite norm fails msg_finite
 * (and decodes to NaN), which is how divergence shows. */
#include "compress/compress_impl.h"
#include "core/rng.h"

#include <math.h>

static unsigned code_bits(int s)
{
    return s == 1 ? 2 : s <= 7 ? 4 : 8;
}

static deft_status_t qsgd_init(deft_compressor_t *c)
{
    size_t b = code_bits(c->p.qsgd_levels);
    c->msg_bytes = c->n_seg * sizeof(float) + (c->dim * b + 7) / 8;
    c->float_off = 0;
    c->float_count = c->n_seg;
    return DEFT_OK;
}

/* The value of one level step; encode and decode must agree bitwise. */
static float level_step(float norm, int s)
{
    return (float)((double)norm / (double)s);
}

/* Quantizes *x with the 24-bit uniform u24: stores the residual and
 * returns the code. Branch-free: signs and roundings are coin flips. */
static inline unsigned quantize_one(float *x, uint32_t u24, double inv,
                                    float q, int s)
{
    const float xi = *x;
    /* y in [0, s] (up to rounding): truncation is floor, without libm. */
    const double y = fabs((double)xi) * inv;
    int l = (int)y;
    l += (double)u24 * (1.0 / 16777216.0) < y - (double)l;
    l = l > s ? s : l;
    *x = xi - copysignf(q * (float)l, xi);
    return (unsigned)l << 1 | (xi < 0.0f);
}

static void qsgd_encode(deft_compressor_t *c, uint64_t step, float *v,
                        void *msg)
{
    const int s = c->p.qsgd_levels;
    const unsigned b = code_bits(s);
    unsigned char *codes = (unsigned char *)msg + c->n_seg * sizeof(float);
    memset(codes, 0, (c->dim * b + 7) / 8);
    for (size_t t = 0; t < c->n_seg; t++) {
        const size_t off = c->seg[t].off, n = c->seg[t].n;
        float *x = v + off;
        const float norm = (float)sqrt(deft_sum_sq_f64(x, n));
        deft_store_f32((unsigned char *)msg + t * sizeof(float), norm);
        if (norm == 0.0f || deft_nonfinite_f32(norm))
            continue;
        const double inv = (double)s / (double)norm;
        const float q = level_step(norm, s);
        deft_rng_t g = deft_rng_make(c->p.seed, step, t,
                                     DEFT_STREAM_PRIVATE(DEFT_STREAM_QSGD,
                                                         c->p.rank));
        /* Two 24-bit uniforms per draw: bits 63..40 for element j (even),
         * bits 31..8 for element j + 1. */
        size_t bit = off * b, j = 0;
        for (; j + 2 <= n; j += 2, bit += 2 * b) {
            const uint64_t r = deft_rng_u64(&g);
            unsigned c0 = quantize_one(x + j, (uint32_t)(r >> 40), inv, q, s);
            unsigned c1 = quantize_one(x + j + 1,
                                       (uint32_t)(r >> 8) & 0xffffffu, inv,
                                       q, s);
            codes[bit >> 3] |= (unsigned char)(c0 << (bit & 7));
            codes[(bit + b) >> 3] |= (unsigned char)(c1 << ((bit + b) & 7));
        }
        if (j < n) {
            const uint64_t r = deft_rng_u64(&g);
            unsigned c0 = quantize_one(x + j, (uint32_t)(r >> 40), inv, q, s);
            codes[bit >> 3] |= (unsigned char)(c0 << (bit & 7));
        }
    }
}

/* alpha * C_i for a code: +-(q * level) times alpha. */
static inline float code_value(unsigned code, float q, float alpha)
{
    float cq = q * (float)(code >> 1);
    uint32_t u;
    memcpy(&u, &cq, sizeof u);
    u ^= (uint32_t)(code & 1) << 31; /* branch-free sign */
    memcpy(&cq, &u, sizeof cq);
    return alpha * cq;
}

/* out[i] += alpha * C_i for i in [off, off + n); b is a constant at each
 * call site, so each width gets its own loop with fixed shifts. Long
 * ranges look the 2^b possible values up in a table. */
static inline void decode_range(const unsigned char *codes, unsigned b,
                                size_t off, size_t n, float q, float alpha,
                                float *out)
{
    const unsigned mask = (1u << b) - 1;
    if (n < 4 * ((size_t)1 << b)) {
        for (size_t i = off; i < off + n; i++) {
            const size_t bit = i * b;
            out[i] += code_value((codes[bit >> 3] >> (bit & 7)) & mask, q,
                                 alpha);
        }
        return;
    }
    float tab[256];
    for (unsigned code = 0; code <= mask; code++)
        tab[code] = code_value(code, q, alpha);
    for (size_t i = off; i < off + n; i++) {
        const size_t bit = i * b;
        out[i] += tab[(codes[bit >> 3] >> (bit & 7)) & mask];
    }
}

static void qsgd_decode_add(const deft_compressor_t *c, const void *msg,
                            float alpha, float *out)
{
    const int s = c->p.qsgd_levels;
    const unsigned char *codes =
        (const unsigned char *)msg + c->n_seg * sizeof(float);
    for (size_t t = 0; t < c->n_seg; t++) {
        const size_t off = c->seg[t].off, n = c->seg[t].n;
        const float q = level_step(
            deft_load_f32((const unsigned char *)msg + t * sizeof(float)), s);
        switch (code_bits(s)) {
        case 2:
            decode_range(codes, 2, off, n, q, alpha, out);
            break;
        case 4:
            decode_range(codes, 4, off, n, q, alpha, out);
            break;
        default:
            decode_range(codes, 8, off, n, q, alpha, out);
            break;
        }
    }
}

const deft_compressor_ops_t deft_compress_qsgd_ops = {
    .name = "qsgd",
    .wire = DEFT_WIRE_GATHER,
    .uses_ratio = 0,
    .init = qsgd_init,
    .fini = NULL,
    .encode = qsgd_encode,
    .decode_add = qsgd_decode_add,
    .select = NULL,
    .gather = NULL,
    .scatter = NULL,
};
