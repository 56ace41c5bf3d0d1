/* randk: per segment k = max(1, floor(n / ratio)) distinct coordinates
 * drawn from (seed, step, segment), the same on every worker (linear). The
 * message holds their values in increasing index order, segment after
 * segment, times n / k when randk_scaled (then E[C(v)] = v). */
#include "compress/compress_impl.h"
#include "core/rng.h"

typedef struct {
    uint32_t *idx;    /* [K] chosen global indices of the last encode/select */
    uint64_t *bitmap; /* [ceil(max_n / 64)] scratch, all zero between calls */
} randk_t;

static deft_status_t randk_init(deft_compressor_t *c)
{
    c->msg_bytes = c->total_k * sizeof(float);
    c->float_off = 0;
    c->float_count = c->total_k;
    randk_t *r = deft_alloc(sizeof *r);
    c->impl = r;
    if (!r || !(r->idx = deft_alloc(c->total_k * sizeof *r->idx)) ||
        !(r->bitmap = deft_alloc((c->max_n + 63) / 64 * sizeof(uint64_t))))
        return deft_fail(DEFT_ERR_NOMEM,
                         "deft_compressor_create: out of memory (randk)");
    return DEFT_OK;
}

static void randk_fini(deft_compressor_t *c)
{
    randk_t *r = c->impl;
    if (r) {
        deft_free(r->idx);
        deft_free(r->bitmap);
    }
    deft_free(r);
}

/* Draws k distinct indices of [0, n) with Floyd's algorithm (k draws, each
 * index equally likely to be in the set) and writes them sorted, plus off,
 * to idx[0..k). Leaves bm zeroed. */
static void draw_sorted(deft_rng_t *g, size_t n, size_t k, size_t off,
                        uint64_t *bm, uint32_t *idx)
{
    for (size_t j = n - k; j < n; j++) {
        size_t t = (size_t)deft_rng_below(g, (uint64_t)j + 1);
        uint64_t bit = (uint64_t)1 << (t & 63);
        if (bm[t >> 6] & bit)
            bm[j >> 6] |= (uint64_t)1 << (j & 63);
        else
            bm[t >> 6] |= bit;
    }
    size_t e = 0;
    for (size_t w = 0; w < (n + 63) / 64; w++) {
        uint64_t x = bm[w];
        bm[w] = 0;
        while (x) {
            idx[e++] = (uint32_t)(off + w * 64 + (size_t)__builtin_ctzll(x));
            x &= x - 1;
        }
    }
}

void deft_randk_draw(const deft_compressor_t *c, uint64_t step,
                     uint64_t purpose, uint64_t *bitmap, uint32_t *idx)
{
    for (size_t t = 0; t < c->n_seg; t++) {
        const deft_segment_t *s = &c->seg[t];
        deft_rng_t g = deft_rng_make(c->p.seed, step, t, purpose);
        draw_sorted(&g, s->n, s->k, s->off, bitmap, idx);
        idx += s->k;
    }
}

void deft_randk_take(const deft_compressor_t *c, const uint32_t *idx,
                     float *v, float *val)
{
    if (!c->p.randk_scaled) {
        for (size_t j = 0; j < c->total_k; j++) {
            val[j] = v[idx[j]];
            v[idx[j]] = 0.0f;
        }
        return;
    }
    for (size_t t = 0; t < c->n_seg; t++) {
        const deft_segment_t *s = &c->seg[t];
        const float f = (float)((double)s->n / (double)s->k);
        for (size_t j = 0; j < s->k; j++) {
            float q = f * v[idx[j]];
            val[j] = q;
            v[idx[j]] -= q;
        }
        idx += s->k;
        val += s->k;
    }
}

static void randk_select(deft_compressor_t *c, uint64_t step)
{
    randk_t *r = c->impl;
    deft_randk_draw(c, step, DEFT_STREAM_RANDK, r->bitmap, r->idx);
}

static void randk_encode(deft_compressor_t *c, uint64_t step, float *v,
                         void *msg)
{
    randk_select(c, step);
    deft_randk_take(c, ((randk_t *)c->impl)->idx, v, msg);
}

static void randk_decode_add(const deft_compressor_t *c, const void *msg,
                             float alpha, float *out)
{
    const uint32_t *idx = ((const randk_t *)c->impl)->idx;
    const float *m = msg;
    for (size_t j = 0; j < c->total_k; j++)
        out[idx[j]] += alpha * m[j];
}

static void randk_gather(const deft_compressor_t *c, const float *v,
                         float *msg)
{
    const uint32_t *idx = ((const randk_t *)c->impl)->idx;
    for (size_t j = 0; j < c->total_k; j++)
        msg[j] = v[idx[j]];
}

static void randk_scatter(const deft_compressor_t *c, const float *msg,
                          float alpha, float *out)
{
    const uint32_t *idx = ((const randk_t *)c->impl)->idx;
    for (size_t j = 0; j < c->total_k; j++)
        out[idx[j]] = alpha * msg[j];
}

const deft_option_def_t deft_option_randk_scaled = DEFT_OPTION_DEF(
    deft_optim_config_t, randk_scaled, FLAG, 0, 1, 0, .flag = "randk-scaled",
    .help = "randk, randk-private: scale kept values by n/k (unbiased)");

static const deft_option_def_t *const randk_params[] = {
    &deft_option_randk_scaled, NULL};

int deft_randk_selects(const deft_optim_config_t *cfg)
{
    return !cfg->randk_scaled;
}

DEFT_COMPRESSOR(deft_compress_randk_ops) = {
    .kind = DEFT_COMP_RANDK,
    .name = "randk",
    .help = "k random coordinates per tensor, the same on every worker (shared seed)",
    .wire = DEFT_WIRE_SUM,
    .params = randk_params,
    .selects = deft_randk_selects,
    .uses_ratio = 1,
    .init = randk_init,
    .fini = randk_fini,
    .encode = randk_encode,
    .decode_add = randk_decode_add,
    .select = randk_select,
    .gather = randk_gather,
    .scatter = randk_scatter,
};
