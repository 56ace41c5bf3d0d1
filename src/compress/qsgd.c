/* qsgd: stochastic s-level quantization (Alistarh et al. 2017). Per
 * segment norm = ||v_t||_2; coordinate i gets level
 * l_i = floor(|v_i| / norm * s + u_i) with u_i uniform in [0, 1) from the
 * worker-private stream (seed, step, segment, rank), so E[l_i] =
 * |v_i| / norm * s and C(v)_i = sign(v_i) * (norm / s) * l_i is unbiased.
 * Message: T floats (norms), then ceil(d * b / 8) bytes of b-bit codes
 * (b = 2 for s = 1, 4 for s <= 7, else 8), code i at bit offset i * b
 * (low bits first); a code's low bit is the sign (1 = negative), the rest
 * the level. A zero (below 2^-100) or non-finite norm gives all-zero codes
 * and leaves the segment's v as it was (C(v) = 0); a non-finite norm fails
 * msg_finite (and decodes to NaN), which is how divergence shows.
 *
 * Encoding runs in float, 64 elements at a time, with the uniforms from a
 * 32-bit counter-based hash per element (qsgd_u24), so the compiler
 * vectorizes it; the result depends only on (seed, step, segment, rank,
 * element), never on the vector width. */
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

/* The 24-bit uniform of element i of a segment's worker-private stream:
 * a 32-bit integer hash (Wellons' lowbias32, a bijection with full
 * avalanche) of the counter plus the stream key. Lanes are independent, so
 * the compiler evaluates 8 or 16 at once; the value depends only on
 * (key, i), never on the vector width. */
static inline uint32_t qsgd_u24(uint32_t key, uint32_t i)
{
    uint32_t x = i + key;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x >> 8;
}

enum { QBLK = 256 };

/* Quantizes x[0..n) (n <= QBLK), elements base.. of the segment: stores
 * the residuals in x and one code per byte in code8. In float, branch-free
 * and without division: y = |x| s / norm, l = floor(y) + (u < y - floor(y))
 * (y - floor(y) is exact), l <= s. */
static inline void quantize_block(float *x, unsigned char *code8, uint32_t n,
                                  uint32_t key, uint32_t base, float inv,
                                  float q, float s)
{
    /* 32-bit index: 64-bit lanes would cost shuffles to narrow */
    for (uint32_t j = 0; j < n; j++) {
        const float xi = x[j];
        const float y = fabsf(xi) * inv;
        const float t = (float)(int32_t)y;
        /* signed conversions: the vector ISA has them (24 bits fit) */
        const float u = (float)(int32_t)qsgd_u24(key, base + j) *
                        (1.0f / 16777216.0f);
        float l = t + (u < y - t ? 1.0f : 0.0f);
        l = l > s ? s : l;
        /* sign(x) * q * l by the sign bit: no compare, no blend */
        uint32_t xb, cb;
        const float c = q * l;
        memcpy(&xb, &xi, 4);
        memcpy(&cb, &c, 4);
        cb |= xb & 0x80000000u;
        float sc;
        memcpy(&sc, &cb, 4);
        x[j] = xi - sc;
        code8[j] = (unsigned char)((int32_t)l << 1 | (int32_t)(xb >> 31));
    }
}

/* ORs n codes of b = 2 or 4 bits into codes at bit offset bit; b is a
 * constant at every call, so the byte loop has fixed shifts and
 * vectorizes. */
static inline void pack_codes(unsigned char *codes, size_t bit,
                              const unsigned char *code8, size_t n, unsigned b)
{
    const unsigned per = 8 / b;
    size_t j = 0;
    for (; j < n && ((bit + j * b) & 7); j++)
        codes[(bit + j * b) >> 3] |=
            (unsigned char)(code8[j] << ((bit + j * b) & 7));
    unsigned char *o = codes + ((bit + j * b) >> 3);
    const size_t whole = (n - j) / per;
    const unsigned char *c8 = code8 + j;
    /* Whole bytes belong to this block alone, so they are stored, not
     * ORed: the codes of a byte, read as one little-endian word of
     * byte-sized codes, fold into place with two shifts. */
    if (per == 2)
        for (size_t k = 0; k < whole; k++) {
            uint16_t w;
            memcpy(&w, c8 + 2 * k, 2);
            o[k] = (unsigned char)(w | w >> 4);
        }
    else
        for (size_t k = 0; k < whole; k++) {
            uint32_t w;
            memcpy(&w, c8 + 4 * k, 4);
            w |= w >> 6;
            o[k] = (unsigned char)(w | w >> 12);
        }
    for (j += whole * per; j < n; j++)
        codes[(bit + j * b) >> 3] |=
            (unsigned char)(code8[j] << ((bit + j * b) & 7));
}

/* One segment: n elements at x, codes from bit offset bit, b-bit codes (a
 * constant after inlining into the wrappers below). */
static inline void quantize_segment(float *x, size_t n, unsigned char *codes,
                                    size_t bit, unsigned b, uint32_t key,
                                    float inv, float q, int s)
{
    unsigned char code8[QBLK];
    for (size_t j = 0; j < n; j += QBLK) {
        const size_t m = n - j < QBLK ? n - j : QBLK;
        /* 8-bit codes are bytes of the message already */
        unsigned char *dst = b == 8 ? codes + (bit >> 3) + j : code8;
        quantize_block(x + j, dst, (uint32_t)m, key, (uint32_t)j, inv, q,
                       (float)s);
        if (b != 8)
            pack_codes(codes, bit + j * b, code8, m, b);
    }
}

/* One function per code width, each compiled for several ISAs
 * (DEFT_CLONES, compress_impl.h). */
#define QSGD_SEGMENT_FN(B)                                                   \
    DEFT_CLONES static void quantize_segment_##B(                            \
        float *x, size_t n, unsigned char *codes, size_t bit, uint32_t key,  \
        float inv, float q, int s)                                           \
    {                                                                        \
        quantize_segment(x, n, codes, bit, B, key, inv, q, s);               \
    }
QSGD_SEGMENT_FN(2)
QSGD_SEGMENT_FN(4)
QSGD_SEGMENT_FN(8)

static void qsgd_encode(deft_compressor_t *c, uint64_t step, float *v,
                        void *msg)
{
    const int s = c->p.qsgd_levels;
    const unsigned b = code_bits(s);
    unsigned char *codes = (unsigned char *)msg + c->n_seg * sizeof(float);
    /* Whole bytes inside a segment that starts on a byte are stored, not
     * ORed: zero only the bytes that get ORed (a segment's first and last,
     * and all of one that starts mid-byte), all before any is written. */
    for (size_t t = 0; t < c->n_seg; t++) {
        const size_t lo = c->seg[t].off * b, hi = lo + c->seg[t].n * b;
        if (lo & 7)
            memset(codes + (lo >> 3), 0, ((hi + 7) >> 3) - (lo >> 3));
        codes[lo >> 3] = 0;
        codes[(hi - 1) >> 3] = 0;
    }
    for (size_t t = 0; t < c->n_seg; t++) {
        const size_t off = c->seg[t].off, n = c->seg[t].n;
        float *x = v + off;
        const float norm = (float)sqrt(deft_sum_sq_f64(x, n));
        deft_store_f32((unsigned char *)msg + t * sizeof(float), norm);
        /* s / norm must be a finite float: a norm below 2^-100 counts as 0 */
        if (!(norm >= 0x1p-100f) || deft_nonfinite_f32(norm)) {
            /* all-zero codes: the bytes only this segment uses (its edge
             * bytes were zeroed above) */
            const size_t lo = (off * b + 7) >> 3, hi = ((off + n) * b) >> 3;
            if (hi > lo)
                memset(codes + lo, 0, hi - lo);
            continue;
        }
        const float inv = (float)((double)s / (double)norm);
        const float q = level_step(norm, s);
        deft_rng_t g = deft_rng_make(c->p.seed, step, t,
                                     DEFT_STREAM_PRIVATE(DEFT_STREAM_QSGD,
                                                         c->p.rank));
        const uint64_t k64 = deft_rng_u64(&g);
        const uint32_t key = (uint32_t)(k64 ^ (k64 >> 32));
        if (b == 2)
            quantize_segment_2(x, n, codes, off * b, key, inv, q, s);
        else if (b == 4)
            quantize_segment_4(x, n, codes, off * b, key, inv, q, s);
        else
            quantize_segment_8(x, n, codes, off * b, key, inv, q, s);
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

static const deft_option_def_t qsgd_levels = DEFT_OPTION_DEF(
    deft_optim_config_t, qsgd_levels, INT, 1, 127, 0, .flag = "qsgd-levels",
    .metavar = "S", .help = "qsgd: number of levels s");
static const deft_option_def_t *const qsgd_params[] = {&qsgd_levels, NULL};

DEFT_COMPRESSOR(deft_compress_qsgd_ops) = {
    .kind = DEFT_COMP_QSGD,
    .name = "qsgd",
    .help = "stochastic s-level quantization with norms (allgather)",
    .wire = DEFT_WIRE_GATHER,
    .params = qsgd_params,
    .uses_ratio = 0,
    .init = qsgd_init,
    .fini = NULL,
    .encode = qsgd_encode,
    .decode_add = qsgd_decode_add,
    .select = NULL,
    .gather = NULL,
    .scatter = NULL,
};
