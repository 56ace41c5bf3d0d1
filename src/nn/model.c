/* Models as short lists of layers over one flat parameter vector.
 *
 * Each layer keeps its output for the whole batch (what backward needs);
 * ReLU is fused into the conv/dense layer before it (applied in place on
 * that layer's output), and a conv followed by a max-pool is differentiated
 * through the pool's argmax with the sparse conv backward. All buffers are
 * allocated at create; loss_grad and evaluate never allocate. */
#include "nn/nn.h"

#include "core/internal.h"
#include "core/rng.h"
#include "nn/layers.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#define MAX_LAYERS 8
#define MAX_TENSORS (2 * MAX_LAYERS)

typedef enum { LAYER_DENSE, LAYER_CONV, LAYER_POOL } layer_kind_t;

typedef struct {
    layer_kind_t kind;
    int relu;                  /* dense/conv: ReLU applied to the output      */
    int c, h, w;               /* input (C, H, W); dense: (in, 1, 1)          */
    int oc, oh, ow;            /* output (OC, OH, OW); dense: (out, 1, 1)     */
    deft_conv2d_shape_t conv;  /* conv only                                   */
    int tensor;                /* layout index of the weight (bias: +1), or -1 */
    size_t w_off, b_off;       /* offsets of weight and bias in params        */
    size_t in_size, out_size;  /* floats per example                          */
    float *out;                /* (max_batch, out_size)                       */
    int32_t *argmax;           /* pool only: (max_batch, out_size)            */
} layer_t;

struct deft_model {
    deft_model_kind_t kind;
    int c, h, w, n_classes, max_batch;
    int n_layers;
    layer_t layers[MAX_LAYERS];
    size_t n_params;
    size_t sizes[MAX_TENSORS];
    size_t rows[MAX_TENSORS];  /* weight: out channels / features; bias: 0 */
    deft_layout_t layout;
    float *grad_a, *grad_b;    /* (max_batch, max_act) gradient ping-pong     */
    float *scratch;            /* conv im2col buffers, one image's worth      */
};

static const char *const model_names[] = {"logreg", "mlp", "lenet", "vgg"};
#define N_MODEL_KINDS ((int)(sizeof model_names / sizeof model_names[0]))

const char *deft_model_name(deft_model_kind_t kind)
{
    if ((int)kind < 0 || (int)kind >= N_MODEL_KINDS)
        return "?";
    return model_names[kind];
}

deft_status_t deft_model_parse(const char *name, deft_model_kind_t *out)
{
    if (!name)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_model_parse: name is NULL");
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_model_parse: out is NULL");
    for (int i = 0; i < N_MODEL_KINDS; i++)
        if (strcmp(name, model_names[i]) == 0) {
            *out = (deft_model_kind_t)i;
            return DEFT_OK;
        }
    return deft_fail(DEFT_ERR_INVALID_ARG,
                     "deft_model_parse: unknown model \"%s\" (expected logreg, "
                     "mlp, lenet or vgg)",
                     name);
}

/* ---- building ------------------------------------------------------------- */

/* Appends layers while tracking the current (C, H, W); the builder only
 * computes shapes, create() checks them and allocates afterwards. */
typedef struct {
    deft_model_t *m;
    int c, h, w;
    int ok;
} builder_t;

static layer_t *push(builder_t *b, layer_kind_t kind)
{
    deft_model_t *m = b->m;
    if (m->n_layers >= MAX_LAYERS) {
        b->ok = 0;
        return NULL;
    }
    layer_t *l = &m->layers[m->n_layers++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->c = b->c, l->h = b->h, l->w = b->w;
    l->tensor = -1;
    return l;
}

/* A weight of wsize floats as a bsize x (wsize / bsize) matrix (dense
 * (out, in), conv (oc, c kh kw)), then its bias of bsize. */
static void add_params(builder_t *b, layer_t *l, size_t wsize, size_t bsize)
{
    deft_model_t *m = b->m;
    l->tensor = (int)m->layout.n_tensors;
    l->w_off = m->n_params;
    l->b_off = m->n_params + wsize;
    m->rows[m->layout.n_tensors] = bsize;
    m->sizes[m->layout.n_tensors++] = wsize;
    m->rows[m->layout.n_tensors] = 0;
    m->sizes[m->layout.n_tensors++] = bsize;
    m->n_params += wsize + bsize;
}

static void add_conv(builder_t *b, int oc, int k, int pad)
{
    layer_t *l = push(b, LAYER_CONV);
    if (!l)
        return;
    if (!deft_conv2d_shape(&l->conv, b->c, b->h, b->w, oc, k, pad)) {
        b->ok = 0;
        return;
    }
    l->relu = 1;
    l->oc = oc, l->oh = l->conv.oh, l->ow = l->conv.ow;
    add_params(b, l, (size_t)oc * b->c * k * k, (size_t)oc);
    b->c = l->oc, b->h = l->oh, b->w = l->ow;
}

static void add_pool(builder_t *b)
{
    layer_t *l = push(b, LAYER_POOL);
    if (!l)
        return;
    if (b->h < 2 || b->w < 2) {
        b->ok = 0;
        return;
    }
    l->oc = b->c, l->oh = b->h / 2, l->ow = b->w / 2;
    b->h = l->oh, b->w = l->ow;
}

static void add_dense(builder_t *b, int out, int relu)
{
    layer_t *l = push(b, LAYER_DENSE);
    if (!l)
        return;
    // flatten (C, H, W) in that order, as PyTorch's nn.Flatten does
    const size_t in = (size_t)b->c * b->h * b->w;
    if (in > INT_MAX) {
        b->ok = 0;
        return;
    }
    l->c = (int)in, l->h = 1, l->w = 1;
    l->relu = relu;
    l->oc = out, l->oh = 1, l->ow = 1;
    add_params(b, l, (size_t)out * in, (size_t)out);
    b->c = out, b->h = 1, b->w = 1;
}

static void build(builder_t *b, deft_model_kind_t kind, int n_classes)
{
    switch (kind) {
    case DEFT_MODEL_LOGREG:
        add_dense(b, n_classes, 0);
        break;
    case DEFT_MODEL_MLP:
        add_dense(b, 512, 1);
        add_dense(b, 512, 1);
        add_dense(b, n_classes, 0);
        break;
    case DEFT_MODEL_LENET:
        add_conv(b, 6, 5, 2);
        add_pool(b);
        add_conv(b, 16, 5, 0);
        add_pool(b);
        add_dense(b, 120, 1);
        add_dense(b, 84, 1);
        add_dense(b, n_classes, 0);
        break;
    case DEFT_MODEL_VGG:
        add_conv(b, 32, 3, 1);
        add_conv(b, 32, 3, 1);
        add_pool(b);
        add_conv(b, 64, 3, 1);
        add_conv(b, 64, 3, 1);
        add_pool(b);
        add_dense(b, 256, 1);
        add_dense(b, n_classes, 0);
        break;
    }
}

/* The smallest input side each model accepts (two pools, and lenet's
 * valid 5x5 conv between them). */
static int min_side(deft_model_kind_t kind)
{
    return kind == DEFT_MODEL_LENET ? 12 : kind == DEFT_MODEL_VGG ? 4 : 1;
}

void deft_model_destroy(deft_model_t *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_layers; i++) {
        deft_free(m->layers[i].out);
        deft_free(m->layers[i].argmax);
    }
    deft_free(m->grad_a);
    deft_free(m->grad_b);
    deft_free(m->scratch);
    deft_free(m);
}

/* Sizes are checked in floats per example so that every int the kernels
 * compute (sgemm dimensions, plane offsets) stays far from overflow. */
#define MAX_EXAMPLE_FLOATS ((size_t)1 << 28)
#define MAX_BATCH (1 << 20)

deft_status_t deft_model_create(deft_model_t **out, deft_model_kind_t kind,
                                int c, int h, int w, int n_classes,
                                int max_batch)
{
    static const char fn[] = "deft_model_create";
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if ((int)kind < 0 || (int)kind >= N_MODEL_KINDS)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: kind = %d is not a model",
                         fn, (int)kind);
    if (c < 1 || h < 1 || w < 1)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: input shape (c, h, w) = (%d, %d, %d), each must "
                         "be >= 1",
                         fn, c, h, w);
    if ((size_t)c * h * w > MAX_EXAMPLE_FLOATS / 64)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: input shape (c, h, w) = (%d, %d, %d) is too "
                         "large (c*h*w must be <= %zu)",
                         fn, c, h, w, MAX_EXAMPLE_FLOATS / 64);
    if (h < min_side(kind) || w < min_side(kind))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: %s needs h and w >= %d, got h = %d, w = %d", fn,
                         deft_model_name(kind), min_side(kind), h, w);
    if (n_classes < 2 || n_classes > 1 << 20)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: n_classes = %d, must be in [2, %d]", fn,
                         n_classes, 1 << 20);
    if (max_batch < 1 || max_batch > MAX_BATCH)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: max_batch = %d, must be in [1, %d]", fn,
                         max_batch, MAX_BATCH);

    deft_model_t *m = deft_alloc(sizeof *m);
    if (!m)
        return deft_fail(DEFT_ERR_NOMEM, "%s: out of memory", fn);
    m->kind = kind;
    m->c = c, m->h = h, m->w = w;
    m->n_classes = n_classes;
    m->max_batch = max_batch;
    m->layout.sizes = m->sizes;
    m->layout.rows = m->rows;
    builder_t b = {m, c, h, w, 1};
    build(&b, kind, n_classes);
    if (!b.ok) {
        deft_model_destroy(m);
        return deft_fail(DEFT_ERR_INTERNAL, "%s: %s on (%d, %d, %d) has an "
                         "empty layer", fn, deft_model_name(kind), c, h, w);
    }

    size_t max_act = (size_t)c * h * w, scratch = 0;
    for (int i = 0; i < m->n_layers; i++) {
        layer_t *l = &m->layers[i];
        l->in_size = (size_t)l->c * l->h * l->w;
        l->out_size = (size_t)l->oc * l->oh * l->ow;
        size_t col = 0;
        if (l->kind == LAYER_CONV) {
            col = deft_conv2d_scratch_floats(&l->conv);
            scratch = col > scratch ? col : scratch;
        }
        if (l->out_size > MAX_EXAMPLE_FLOATS || col > MAX_EXAMPLE_FLOATS) {
            deft_model_destroy(m);
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "%s: %s on input (%d, %d, %d) needs layers too "
                             "large for this implementation",
                             fn, deft_model_name(kind), c, h, w);
        }
        max_act = l->out_size > max_act ? l->out_size : max_act;
    }

    const size_t nb = (size_t)max_batch;
    int fail = 0;
    for (int i = 0; i < m->n_layers; i++) {
        layer_t *l = &m->layers[i];
        l->out = deft_alloc(nb * l->out_size * sizeof(float));
        fail |= !l->out;
        if (l->kind == LAYER_POOL) {
            l->argmax = deft_alloc(nb * l->out_size * sizeof(int32_t));
            fail |= !l->argmax;
        }
    }
    m->grad_a = deft_alloc(nb * max_act * sizeof(float));
    m->grad_b = deft_alloc(nb * max_act * sizeof(float));
    m->scratch = deft_alloc(scratch * sizeof(float));
    if (fail || !m->grad_a || !m->grad_b || !m->scratch) {
        deft_model_destroy(m);
        return deft_fail(DEFT_ERR_NOMEM,
                         "%s: out of memory for %s with max_batch = %d", fn,
                         deft_model_name(kind), max_batch);
    }
    *out = m;
    return DEFT_OK;
}

size_t deft_model_num_params(const deft_model_t *m)
{
    return m ? m->n_params : 0;
}

const deft_layout_t *deft_model_layout(const deft_model_t *m)
{
    return m ? &m->layout : NULL;
}

/* ---- init ----------------------------------------------------------------- */

/* n normals with standard deviation std from one counter-based stream,
 * two per Box-Muller pair. */
static void fill_normal(float *v, size_t n, double std, deft_rng_t *r)
{
    const double two_pi = 6.283185307179586;
    for (size_t i = 0; i < n; i += 2) {
        const double u1 = 1.0 - deft_rng_uniform_f64(r);  // (0, 1]: log-safe
        const double u2 = deft_rng_uniform_f64(r);
        const double rad = std * sqrt(-2.0 * log(u1));
        v[i] = (float)(rad * cos(two_pi * u2));
        if (i + 1 < n)
            v[i + 1] = (float)(rad * sin(two_pi * u2));
    }
}

void deft_model_init_params(const deft_model_t *m, float *params,
                            uint64_t seed)
{
    if (!m || !params)
        return;
    for (int i = 0; i < m->n_layers; i++) {
        const layer_t *l = &m->layers[i];
        if (l->tensor < 0)
            continue;
        const int k = l->kind == LAYER_CONV ? l->conv.k : 1;
        const double fan_in = (double)l->c * k * k;
        const double fan_out = (double)l->oc * k * k;
        // He keeps the activation scale through ReLUs; Glorot for the
        // logits, which no ReLU follows
        const double std = l->relu ? sqrt(2.0 / fan_in)
                                   : sqrt(2.0 / (fan_in + fan_out));
        deft_rng_t r = deft_rng_make(seed, 0, (uint64_t)l->tensor,
                                     DEFT_STREAM_INIT);
        fill_normal(params + l->w_off, m->sizes[l->tensor], std, &r);
        memset(params + l->b_off, 0, m->sizes[l->tensor + 1] * sizeof(float));
    }
}

/* ---- forward / backward --------------------------------------------------- */

static deft_status_t check_batch(const deft_model_t *m, const char *fn,
                                 const float *params, const float *x,
                                 const int32_t *labels, int batch)
{
    if (!m)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: m is NULL", fn);
    if (!params)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: params is NULL", fn);
    if (!x)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: x is NULL", fn);
    if (!labels)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: labels is NULL", fn);
    if (batch < 1 || batch > m->max_batch)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: batch = %d, must be in [1, max_batch = %d]", fn,
                         batch, m->max_batch);
    for (int i = 0; i < batch; i++)
        if (labels[i] < 0 || labels[i] >= m->n_classes)
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "%s: labels[%d] = %d, must be in [0, %d)", fn, i,
                             (int)labels[i], m->n_classes);
    return DEFT_OK;
}

static void forward(deft_model_t *m, const float *params, const float *x,
                    int B)
{
    const float *in = x;
    for (int i = 0; i < m->n_layers; i++) {
        layer_t *l = &m->layers[i];
        switch (l->kind) {
        case LAYER_DENSE:
            deft_dense_forward(l->out, in, params + l->w_off,
                               params + l->b_off, B, l->c, l->oc);
            if (l->relu)
                deft_relu_forward(l->out, (size_t)B * l->out_size);
            break;
        case LAYER_CONV:
            deft_conv2d_forward(l->out, in, params + l->w_off,
                                params + l->b_off, B, &l->conv, m->scratch,
                                l->relu);
            break;
        case LAYER_POOL:
            deft_maxpool2_forward(l->out, l->argmax, in, B, l->c, l->h, l->w);
            break;
        }
        in = l->out;
    }
}

/* dlogits must be in m->grad_a. Writes every tensor of grad. */
static void backward(deft_model_t *m, const float *params, const float *x,
                     int B, float *grad)
{
    float *dout = m->grad_a, *dnext = m->grad_b;
    for (int i = m->n_layers - 1; i >= 0; i--) {
        layer_t *l = &m->layers[i];
        const float *in = i ? m->layers[i - 1].out : x;
        float *dinp = i ? dnext : NULL;  // the input needs no gradient
        const size_t n_out = (size_t)B * l->out_size;
        switch (l->kind) {
        case LAYER_DENSE:
            if (l->relu)
                deft_relu_backward(dout, l->out, n_out);
            deft_dense_backward(dinp, grad + l->w_off, grad + l->b_off, dout,
                                in, params + l->w_off, B, l->c, l->oc);
            break;
        case LAYER_CONV:
            if (l->relu)
                deft_relu_backward(dout, l->out, n_out);
            deft_conv2d_backward(dinp, grad + l->w_off, grad + l->b_off, dout,
                                 in, params + l->w_off, B, &l->conv,
                                 m->scratch);
            break;
        case LAYER_POOL: {
            const layer_t *cv = i ? &m->layers[i - 1] : NULL;
            if (!cv || cv->kind != LAYER_CONV ||
                !deft_conv2d_sparse_ok(&cv->conv)) {
                if (dinp)
                    deft_maxpool2_backward(dinp, dout, l->argmax, B, l->c,
                                           l->h, l->w);
                break;
            }
            // Through the pool and the conv's ReLU in one go: the gradient
            // reaches the conv only at the argmax, and passes its ReLU
            // exactly where the pooled value is positive.
            if (cv->relu)
                deft_relu_backward(dout, l->out, n_out);
            i--;
            const float *cin = i ? m->layers[i - 1].out : x;
            deft_conv2d_backward_sparse(i ? dnext : NULL, grad + cv->w_off,
                                        grad + cv->b_off, dout, l->argmax,
                                        l->oh * l->ow, cin,
                                        params + cv->w_off, B, &cv->conv,
                                        m->scratch);
            break;
        }
        }
        float *t = dout;
        dout = dnext;
        dnext = t;
    }
}

uint64_t deft_model_pattern_hash(const deft_model_t *m, int batch)
{
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over 32-bit words
    for (int i = 0; i < m->n_layers; i++) {
        const layer_t *l = &m->layers[i];
        const size_t n = (size_t)batch * l->out_size;
        if (l->kind == LAYER_POOL)
            for (size_t j = 0; j < n; j++)
                h = (h ^ (uint32_t)l->argmax[j]) * 0x100000001b3ull;
        else if (l->relu)
            for (size_t j = 0; j < n; j++)
                h = (h ^ (uint32_t)(l->out[j] > 0.0f)) * 0x100000001b3ull;
    }
    return h;
}

deft_status_t deft_model_loss_grad(deft_model_t *m, const float *params,
                                   const float *x, const int32_t *labels,
                                   int batch, float *grad, double *loss,
                                   int *correct)
{
    static const char fn[] = "deft_model_loss_grad";
    deft_status_t st = check_batch(m, fn, params, x, labels, batch);
    if (st != DEFT_OK)
        return st;
    if (!grad)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: grad is NULL", fn);
    if (!loss)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: loss is NULL", fn);
    forward(m, params, x, batch);
    const layer_t *last = &m->layers[m->n_layers - 1];
    double sum = 0.0;
    int hits = 0;
    deft_softmax_xent(m->grad_a, &sum, &hits, last->out, labels, batch,
                      m->n_classes, 1.0f / (float)batch);
    backward(m, params, x, batch, grad);
    *loss = sum / batch;
    if (correct)
        *correct = hits;
    return DEFT_OK;
}

deft_status_t deft_model_evaluate(deft_model_t *m, const float *params,
                                  const float *x, const int32_t *labels,
                                  int batch, double *loss_sum, int *correct)
{
    static const char fn[] = "deft_model_evaluate";
    deft_status_t st = check_batch(m, fn, params, x, labels, batch);
    if (st != DEFT_OK)
        return st;
    if (!loss_sum)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: loss_sum is NULL", fn);
    if (!correct)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: correct is NULL", fn);
    forward(m, params, x, batch);
    const layer_t *last = &m->layers[m->n_layers - 1];
    double sum = 0.0;
    int hits = 0;
    deft_softmax_xent(NULL, &sum, &hits, last->out, labels, batch,
                      m->n_classes, 1.0f);
    *loss_sum = sum;
    *correct = hits;
    return DEFT_OK;
}
