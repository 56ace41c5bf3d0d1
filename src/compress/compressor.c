/* Compressor object: argument checks, segments, and dispatch to the kind's
 * operations (compress_impl.h). */
#include "compress/compress_impl.h"

#include <math.h>

const deft_compressor_ops_t *deft_compressor_ops_of(deft_compressor_kind_t kind)
{
    for (const deft_compressor_ops_t *const *r = deft_compressor_registry; *r; r++)
        if ((*r)->kind == kind)
            return *r;
    return NULL;
}

int deft_selects_always(const deft_optim_config_t *cfg)
{
    (void)cfg;
    return 1;
}

int deft_compressor_kind_uses_rows(deft_compressor_kind_t kind)
{
    const deft_compressor_ops_t *ops = deft_compressor_ops_of(kind);
    return ops && ops->uses_rows;
}

/* The kind's own parameters (p's values) against their ranges. */
static deft_status_t check_params(const deft_compressor_ops_t *ops,
                                  const deft_compressor_params_t *p)
{
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.randk_scaled = p->randk_scaled;
    cfg.qsgd_levels = p->qsgd_levels;
    cfg.powersgd_rank = p->powersgd_rank;
    for (const deft_option_def_t *const *d = ops->params; d && *d; d++) {
        deft_status_t st = deft_option_check(*d, &cfg, "deft_compressor_create: p->");
        if (st != DEFT_OK)
            return st;
    }
    return DEFT_OK;
}

/* max(1, floor(n / ratio)), at most n; ratio >= 1 (may be +Inf). */
static size_t segment_keep(size_t n, double ratio)
{
    double q = floor((double)n / ratio);
    size_t k = q >= (double)n ? n : (size_t)q;
    return k < 1 ? 1 : k;
}

static const char *const FN = "deft_compressor_create";

deft_status_t deft_compressor_create(deft_compressor_t **out,
                                     const deft_layout_t *layout,
                                     const deft_compressor_params_t *p)
{
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: out is NULL", FN);
    *out = NULL;
    if (!layout)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: layout is NULL", FN);
    if (!p)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: p is NULL", FN);
    const deft_compressor_ops_t *ops = deft_compressor_ops_of(p->kind);
    if (!ops)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: p->kind = %d is not a compressor kind", FN,
                         (int)p->kind);
    if (p->scope != DEFT_SCOPE_TENSOR && p->scope != DEFT_SCOPE_GLOBAL)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: p->scope = %d, must be DEFT_SCOPE_TENSOR or "
                         "DEFT_SCOPE_GLOBAL",
                         FN, (int)p->scope);
    /* The ratio only matters to kinds that keep k of n (and to scale). */
    if (ops->uses_ratio && !(p->ratio >= 1.0))
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: p->ratio = %g, must be >= 1",
                         FN, p->ratio);
    deft_status_t pst = check_params(ops, p);
    if (pst != DEFT_OK)
        return pst;
    if (p->kind == DEFT_COMP_POWERSGD && p->scope != DEFT_SCOPE_TENSOR)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: powersgd approximates each matrix of the layout "
                         "and needs scope DEFT_SCOPE_TENSOR", FN);
    if ((p->kind == DEFT_COMP_QSGD || p->kind == DEFT_COMP_RANDK_PRIVATE) &&
        p->rank < 0)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: p->rank = %d, must be >= 0 (%s draws from the "
                         "rank's private stream)", FN, p->rank, ops->name);
    if (layout->n_tensors == 0)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: layout->n_tensors = 0, need at least one tensor",
                         FN);
    if (!layout->sizes)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: layout->sizes is NULL", FN);
    size_t dim = 0;
    for (size_t t = 0; t < layout->n_tensors; t++) {
        size_t n = layout->sizes[t];
        if (n == 0)
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "%s: layout->sizes[%zu] = 0, every tensor needs "
                             "at least one element",
                             FN, t);
        /* Indices travel as uint32 (topk), so d must stay below 2^32. */
        if (n >= ((uint64_t)1 << 32) - dim)
            return deft_fail(DEFT_ERR_UNSUPPORTED,
                             "%s: layout has more than 2^32 - 1 elements "
                             "(tensor %zu of size %zu), compressors index "
                             "with 32 bits",
                             FN, t, n);
        size_t r = layout->rows ? layout->rows[t] : 0;
        if (r > 1 && (r > n || n % r != 0))
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "%s: layout->rows[%zu] = %zu does not divide "
                             "layout->sizes[%zu] = %zu (a matrix is rows x "
                             "sizes / rows)", FN, t, r, t, n);
        dim += n;
    }

    deft_compressor_t *c = deft_alloc(sizeof *c);
    if (!c)
        return deft_fail(DEFT_ERR_NOMEM, "%s: out of memory", FN);
    c->ops = ops;
    c->p = *p;
    c->dim = dim;
    c->n_seg = p->scope == DEFT_SCOPE_GLOBAL ? 1 : layout->n_tensors;
    c->seg = deft_alloc(c->n_seg * sizeof *c->seg);
    if (!c->seg) {
        deft_compressor_destroy(c);
        return deft_fail(DEFT_ERR_NOMEM,
                         "%s: out of memory for %zu segments", FN, c->n_seg);
    }
    size_t off = 0;
    for (size_t t = 0; t < c->n_seg; t++) {
        deft_segment_t *s = &c->seg[t];
        s->off = off;
        s->n = p->scope == DEFT_SCOPE_GLOBAL ? dim : layout->sizes[t];
        s->k = ops->uses_ratio ? segment_keep(s->n, p->ratio) : 0;
        s->rows = p->scope == DEFT_SCOPE_TENSOR && layout->rows &&
                          layout->rows[t] > 1
                      ? layout->rows[t]
                      : 0;
        off += s->n;
        c->total_k += s->k;
        if (s->n > c->max_n)
            c->max_n = s->n;
        if (s->k > c->max_k)
            c->max_k = s->k;
    }
    deft_status_t st = ops->init(c);
    if (st != DEFT_OK) {
        deft_compressor_destroy(c);
        return st;
    }
    *out = c;
    return DEFT_OK;
}

void deft_compressor_destroy(deft_compressor_t *c)
{
    if (!c)
        return;
    if (c->ops && c->ops->fini)
        c->ops->fini(c);
    deft_free(c->seg);
    deft_free(c);
}

deft_wire_t deft_compressor_wire(const deft_compressor_t *c)
{
    return c ? c->ops->wire : DEFT_WIRE_SUM;
}

int deft_compressor_is_linear(const deft_compressor_t *c)
{
    return c ? c->ops->wire == DEFT_WIRE_SUM : 0;
}

int deft_compressor_rounds(const deft_compressor_t *c)
{
    return c && c->ops->wire == DEFT_WIRE_ROUNDS ? 2 : 0;
}

void deft_compressor_round_span(const deft_compressor_t *c, int r,
                                size_t *off, size_t *n)
{
    *off = *n = 0;
    if (c->ops->round_span)
        c->ops->round_span(c, r, off, n);
}

void deft_compressor_encode_round(deft_compressor_t *c, uint64_t step, int r,
                                  float *v, void *msg, float *own_out)
{
    if (c->ops->encode_round)
        c->ops->encode_round(c, step, r, v, msg, own_out);
}

void deft_compressor_finish(deft_compressor_t *c, const void *msg)
{
    if (c->ops->finish)
        c->ops->finish(c, msg);
}

void deft_compressor_encode_local(deft_compressor_t *c, uint64_t step,
                                  float *v, void *msg)
{
    c->ops->encode(c, step, v, msg);
    for (int r = 1; r < deft_compressor_rounds(c); r++)
        c->ops->encode_round(c, step, r, v, msg, NULL);
    deft_compressor_finish(c, msg);
}

size_t deft_compressor_state_floats(const deft_compressor_t *c)
{
    return c && c->ops->state_floats ? c->ops->state_floats(c) : 0;
}

void deft_compressor_state_get(const deft_compressor_t *c, void *state)
{
    if (c->ops->state_get)
        c->ops->state_get(c, state);
}

void deft_compressor_state_set(deft_compressor_t *c, const void *state)
{
    if (c->ops->state_set)
        c->ops->state_set(c, state);
}

size_t deft_compressor_msg_bytes(const deft_compressor_t *c)
{
    return c ? c->msg_bytes : 0;
}

size_t deft_compressor_dim(const deft_compressor_t *c)
{
    return c ? c->dim : 0;
}

void deft_compressor_encode(deft_compressor_t *c, uint64_t step, float *v,
                            void *msg)
{
    c->ops->encode(c, step, v, msg);
}

void deft_compressor_decode_add(const deft_compressor_t *c, const void *msg,
                                float alpha, float *out)
{
    c->ops->decode_add(c, msg, alpha, out);
}

void deft_compressor_select(deft_compressor_t *c, uint64_t step)
{
    if (c->ops->select)
        c->ops->select(c, step);
}

void deft_compressor_gather(const deft_compressor_t *c, const float *v,
                            float *msg)
{
    if (c->ops->gather)
        c->ops->gather(c, v, msg);
}

void deft_compressor_scatter(const deft_compressor_t *c, const float *msg,
                             float alpha, float *out)
{
    if (c->ops->scatter)
        c->ops->scatter(c, msg, alpha, out);
}

int deft_compressor_msg_finite(const deft_compressor_t *c, const void *msg)
{
    if (c->ops->msg_finite)
        return c->ops->msg_finite(c, msg);
    const unsigned char *f = (const unsigned char *)msg + c->float_off;
    uint32_t m = 0;
    for (size_t i = 0; i < c->float_count; i++) {
        uint32_t u;
        memcpy(&u, f + 4 * i, sizeof u);
        u &= DEFT_EXP_NONFINITE;
        m = u > m ? u : m;
    }
    return m != DEFT_EXP_NONFINITE;
}

void deft_compressor_poison(const deft_compressor_t *c, void *msg)
{
    if (c->ops->poison) {
        c->ops->poison(c, msg);
        return;
    }
    deft_store_f32((unsigned char *)msg + c->float_off, NAN);
}

double deft_sum_abs_f64(const float *v, size_t n)
{
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            a[j] += fabs((double)v[i + j]);
    for (; i < n; i++)
        a[0] += fabs((double)v[i]);
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* 32 interleaved accumulators (element i goes to a[i % 32]) combined
 * pairwise: four independent vector chains, so the sum runs at memory
 * speed instead of waiting on one chain's add latency. The pattern is
 * fixed in C, so every clone gives the same bits. */
DEFT_CLONES double deft_sum_sq_f64(const float *v, size_t n)
{
    enum { A = 32 };
    double a[A] = {0};
    size_t i = 0;
    for (; i + A <= n; i += A)
        for (int j = 0; j < A; j++)
            a[j] += (double)v[i + j] * (double)v[i + j];
    for (int j = 0; i < n; i++, j++)
        a[j] += (double)v[i] * (double)v[i];
    for (int w = A / 2; w >= 1; w /= 2)
        for (int j = 0; j < w; j++)
            a[j] += a[j + w];
    return a[0];
}
