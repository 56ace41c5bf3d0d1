/* rbgs: random block-wise gradient sparsification. Per segment one block of
 * b = max(1, floor(n / ratio)) consecutive elements, starting at a uniform
 * start in [0, n) drawn from (seed, step, segment) and wrapping to 0; every
 * worker draws the same start, so messages add up (linear). The message
 * holds the segments' blocks one after the other, each in block order
 * (start, start + 1, ..., n - 1, 0, 1, ...). Not rescaled. */
#include "compress/compress_impl.h"
#include "core/rng.h"

typedef struct {
    size_t *start; /* [T] block start of the last encode/select */
} rbgs_t;

static deft_status_t rbgs_init(deft_compressor_t *c)
{
    c->msg_bytes = c->total_k * sizeof(float);
    c->float_off = 0;
    c->float_count = c->total_k;
    rbgs_t *r = deft_alloc(sizeof *r);
    c->impl = r;
    if (!r || !(r->start = deft_alloc(c->n_seg * sizeof *r->start)))
        return deft_fail(DEFT_ERR_NOMEM,
                         "deft_compressor_create: out of memory (rbgs)");
    return DEFT_OK;
}

static void rbgs_fini(deft_compressor_t *c)
{
    rbgs_t *r = c->impl;
    if (r)
        deft_free(r->start);
    deft_free(r);
}

static void rbgs_select(deft_compressor_t *c, uint64_t step)
{
    rbgs_t *r = c->impl;
    for (size_t t = 0; t < c->n_seg; t++) {
        deft_rng_t g = deft_rng_make(c->p.seed, step, t, DEFT_STREAM_RBGS);
        r->start[t] = (size_t)deft_rng_below(&g, c->seg[t].n);
    }
}

/* The block of segment t as at most two ranges of the flat vector:
 * [a0, a0 + n0) then [a1, a1 + n1) (n1 = 0 without wrap-around). */
typedef struct {
    size_t a0, n0, a1, n1;
} block_t;

static block_t block_of(const deft_compressor_t *c, size_t t)
{
    const rbgs_t *r = c->impl;
    const deft_segment_t *s = &c->seg[t];
    size_t st = r->start[t];
    block_t b;
    b.a0 = s->off + st;
    b.n0 = s->n - st < s->k ? s->n - st : s->k;
    b.a1 = s->off;
    b.n1 = s->k - b.n0;
    return b;
}

static void rbgs_encode(deft_compressor_t *c, uint64_t step, float *v,
                        void *msg)
{
    rbgs_select(c, step);
    float *m = msg;
    for (size_t t = 0; t < c->n_seg; t++) {
        block_t b = block_of(c, t);
        memcpy(m, v + b.a0, b.n0 * sizeof(float));
        memset(v + b.a0, 0, b.n0 * sizeof(float));
        m += b.n0;
        memcpy(m, v + b.a1, b.n1 * sizeof(float));
        memset(v + b.a1, 0, b.n1 * sizeof(float));
        m += b.n1;
    }
}

static void rbgs_decode_add(const deft_compressor_t *c, const void *msg,
                            float alpha, float *out)
{
    const float *m = msg;
    for (size_t t = 0; t < c->n_seg; t++) {
        block_t b = block_of(c, t);
        for (size_t i = 0; i < b.n0; i++)
            out[b.a0 + i] += alpha * m[i];
        m += b.n0;
        for (size_t i = 0; i < b.n1; i++)
            out[b.a1 + i] += alpha * m[i];
        m += b.n1;
    }
}

static void rbgs_gather(const deft_compressor_t *c, const float *v,
                        float *msg)
{
    for (size_t t = 0; t < c->n_seg; t++) {
        block_t b = block_of(c, t);
        memcpy(msg, v + b.a0, b.n0 * sizeof(float));
        msg += b.n0;
        memcpy(msg, v + b.a1, b.n1 * sizeof(float));
        msg += b.n1;
    }
}

static void rbgs_scatter(const deft_compressor_t *c, const float *msg,
                         float alpha, float *out)
{
    for (size_t t = 0; t < c->n_seg; t++) {
        block_t b = block_of(c, t);
        for (size_t i = 0; i < b.n0; i++)
            out[b.a0 + i] = alpha * msg[i];
        msg += b.n0;
        for (size_t i = 0; i < b.n1; i++)
            out[b.a1 + i] = alpha * msg[i];
        msg += b.n1;
    }
}

DEFT_COMPRESSOR(deft_compress_rbgs_ops) = {
    .kind = DEFT_COMP_RBGS,
    .name = "rbgs",
    .help = "one random contiguous block per tensor, the same on every worker",
    .selects = deft_selects_always,
    .wire = DEFT_WIRE_SUM,
    .uses_ratio = 1,
    .init = rbgs_init,
    .fini = rbgs_fini,
    .encode = rbgs_encode,
    .decode_add = rbgs_decode_add,
    .select = rbgs_select,
    .gather = rbgs_gather,
    .scatter = rbgs_scatter,
};
