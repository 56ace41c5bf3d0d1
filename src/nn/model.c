/* Models as short lists of layers over one flat parameter vector.
 *
 * Layers run in build order; each reads the output of an earlier layer
 * (src; a residual addition also src2), so a list describes both the
 * plain stacks and the pre-activation ResNet. Each layer keeps its output
 * and the gradient with respect to it for the whole batch (what backward
 * needs); an output that two layers read (the residual stream) gets the
 * second gradient through a spare buffer and an add. ReLU is fused into
 * the conv/dense/BN layer before it (applied in place on that layer's
 * output), and a conv whose only reader is a max-pool is differentiated
 * through the pool's argmax with the sparse conv backward (deft's own
 * kernels only). All buffers are allocated at create; loss_grad and
 * evaluate never allocate, except that a model on oneDNN's convs makes
 * the conv primitives of each new batch size (prepare_batch) before it
 * computes anything. */
#include "nn/nn.h"

#include "core/internal.h"
#include "core/rng.h"
#include "nn/layers.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#define MAX_LAYERS 64
#define MAX_TENSORS 128
#define NO_BIAS ((size_t)-1)

typedef enum {
    LAYER_DENSE,
    LAYER_CONV,
    LAYER_POOL,  /* 2x2 max-pool                                          */
    LAYER_BN,    /* batch norm per channel, 2-d (H, W > 1) or 1-d         */
    LAYER_ADD,   /* residual: out = src + src2                            */
    LAYER_GAP    /* global average pooling (C, H, W) -> (C, 1, 1)         */
} layer_kind_t;

typedef struct {
    layer_kind_t kind;
    int src, src2;             /* input layers; -1 is the model's input x;
                                  src2 for add only                       */
    int consumers;             /* layers that read this one's output      */
    int relu;                  /* dense/conv/bn: ReLU applied to output   */
    int c, h, w;               /* input (C, H, W); dense: (in, 1, 1)      */
    int oc, oh, ow;            /* output (OC, OH, OW); dense: (out, 1, 1) */
    deft_conv2d_shape_t conv;  /* conv only                               */
    deft_dnnl_conv_t *dnnl;    /* conv run by oneDNN, or NULL             */
    int blk;                   /* layout of out (and grad): 1 plain (B,
                                  OC, OH, OW), else oneDNN's blocked one
                                  with this block (layers.h)              */
    int tensor;                /* layout index of the weight (bias, BN's
                                  beta: +1), or -1                        */
    size_t w_off, b_off;       /* weight (BN: gamma) and bias (BN: beta)
                                  offsets in params; b_off NO_BIAS if none */
    size_t buf_off;            /* BN: running mean at buf_off (C), running
                                  variance at buf_off + C (C)             */
    size_t in_size, out_size;  /* floats per example                      */
    float *out;                /* (max_batch, out_size)                   */
    float *grad;               /* (max_batch, out_size) d loss / d out    */
    int32_t *argmax;           /* pool only: (max_batch, out_size)        */
    float *mean, *invstd;      /* BN only: (C) of the last training pass  */
    int has_grad;              /* backward: grad holds a value            */
} layer_t;

struct deft_model {
    deft_model_kind_t kind;
    int c, h, w, n_classes, max_batch;
    int max_train_batch;       /* loss_grad's limit: gradients are sized
                                  for it (evaluation takes max_batch)     */
    int min_bn_hw;             /* fewest values per channel and example
                                  any BN layer sees (0: no BN)            */
    int blk;                   /* oneDNN's block if its convs run this
                                  model (see plan_blocked), else 0        */
    deft_dnnl_scratch_t *dnnl_scratch; /* their shared scratchpad          */
    int n_layers;
    layer_t layers[MAX_LAYERS];
    size_t n_params, n_buffers;
    size_t sizes[MAX_TENSORS];
    size_t rows[MAX_TENSORS];  /* weight: out channels / features; else 0 */
    deft_layout_t layout;
    float *buffers;            /* (n_buffers,) BN running statistics      */
    float *tmp;                /* (max_batch, max_act): a second gradient
                                  for outputs that feed two layers        */
    float *scratch;            /* conv im2col buffers, one image's worth  */
};

static const char *const model_names[] = {"logreg", "mlp",         "lenet",
                                          "vgg",    "preresnet20", "vgg11bn"};
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
                     "mlp, lenet, vgg, preresnet20 or vgg11bn)",
                     name);
}

static const char *const convs_names[] = {"auto", "own"};

const char *deft_convs_name(deft_convs_t convs)
{
    return (int)convs >= 0 && (int)convs < 2 ? convs_names[convs] : "?";
}

static const char *const init_names[] = {"torch", "he"};

const char *deft_init_name(deft_init_t init)
{
    return (int)init >= 0 && (int)init < 2 ? init_names[init] : "?";
}

deft_status_t deft_init_parse(const char *name, deft_init_t *out)
{
    if (!name || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_init_parse: %s is NULL",
                         !name ? "name" : "out");
    for (int i = 0; i < 2; i++)
        if (strcmp(name, init_names[i]) == 0) {
            *out = (deft_init_t)i;
            return DEFT_OK;
        }
    return deft_fail(DEFT_ERR_INVALID_ARG, "--init %s: unknown initialization "
                     "(expected torch or he)", name);
}

/* ---- building ------------------------------------------------------------- */

/* Appends layers after the current one (cur, of output (C, H, W)); the
 * builder only computes shapes, create() checks them and allocates
 * afterwards. */
typedef struct {
    deft_model_t *m;
    int cur;
    int c, h, w;
    int ok;
} builder_t;

/* Makes layer idx's output (-1: the input) the current one. */
static void set_cur(builder_t *b, int idx, int c, int h, int w)
{
    b->cur = idx;
    if (idx >= 0) {
        const layer_t *l = &b->m->layers[idx];
        c = l->oc, h = l->oh, w = l->ow;
    }
    b->c = c, b->h = h, b->w = w;
}

static layer_t *push(builder_t *b, layer_kind_t kind)
{
    deft_model_t *m = b->m;
    if (!b->ok || m->n_layers >= MAX_LAYERS) {
        b->ok = 0;
        return NULL;
    }
    layer_t *l = &m->layers[m->n_layers++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->src = b->cur;
    l->src2 = -1;
    l->c = b->c, l->h = b->h, l->w = b->w;
    l->oc = b->c, l->oh = b->h, l->ow = b->w;
    l->tensor = -1;
    l->b_off = NO_BIAS;
    return l;
}

/* The layer just pushed becomes the current one. */
static void done(builder_t *b, layer_t *l)
{
    b->cur = (int)(l - b->m->layers);
    b->c = l->oc, b->h = l->oh, b->w = l->ow;
}

/* Appends a tensor of n floats (rows: its out channels for a weight
 * matrix, 0 for a vector) and returns its offset in params. */
static size_t add_tensor(builder_t *b, layer_t *l, size_t n, size_t rows)
{
    deft_model_t *m = b->m;
    if (m->layout.n_tensors >= MAX_TENSORS) {
        b->ok = 0;
        return 0;
    }
    if (l->tensor < 0)
        l->tensor = (int)m->layout.n_tensors;
    m->rows[m->layout.n_tensors] = rows;
    m->sizes[m->layout.n_tensors++] = n;
    m->n_params += n;
    return m->n_params - n;
}

static void add_conv(builder_t *b, int oc, int k, int pad, int stride,
                     int bias, int relu)
{
    layer_t *l = push(b, LAYER_CONV);
    if (!l)
        return;
    if (!deft_conv2d_shape(&l->conv, b->c, b->h, b->w, oc, k, pad, stride)) {
        b->ok = 0;
        return;
    }
    l->relu = relu;
    l->oc = oc, l->oh = l->conv.oh, l->ow = l->conv.ow;
    l->w_off = add_tensor(b, l, (size_t)oc * b->c * k * k, (size_t)oc);
    if (bias)
        l->b_off = add_tensor(b, l, (size_t)oc, 0);
    done(b, l);
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
    l->oh = b->h / 2, l->ow = b->w / 2;
    done(b, l);
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
    l->w_off = add_tensor(b, l, (size_t)out * in, (size_t)out);
    l->b_off = add_tensor(b, l, (size_t)out, 0);
    done(b, l);
}

/* Batch norm over the current output's channels (2-d, or 1-d after a
 * dense layer), gamma then beta in params, its running statistics in the
 * buffers. */
static void add_bn(builder_t *b, int relu)
{
    layer_t *l = push(b, LAYER_BN);
    if (!l)
        return;
    l->relu = relu;
    l->w_off = add_tensor(b, l, (size_t)b->c, 0);
    l->b_off = add_tensor(b, l, (size_t)b->c, 0);
    l->buf_off = b->m->n_buffers;
    b->m->n_buffers += 2 * (size_t)b->c;
    done(b, l);
}

static void add_gap(builder_t *b)
{
    layer_t *l = push(b, LAYER_GAP);
    if (!l)
        return;
    l->oh = 1, l->ow = 1;
    done(b, l);
}

/* current + layer other's output, which must have the same shape. */
static void add_residual(builder_t *b, int other)
{
    layer_t *l = push(b, LAYER_ADD);
    if (!l)
        return;
    const layer_t *o = &b->m->layers[other];
    if (o->oc != b->c || o->oh != b->h || o->ow != b->w) {
        b->ok = 0;
        return;
    }
    l->src2 = other;
    done(b, l);
}

/* Pre-activation basic block (He et al. 2016, as the DEF paper's
 * models/preresnet.py): bn-relu-conv3x3(stride)-bn-relu-conv3x3, plus the
 * block's input, through a 1x1 conv of that stride when the shape
 * changes. The 1x1 conv comes after the second 3x3 in params, as PyTorch
 * registers it. */
static void add_preact_block(builder_t *b, int planes, int stride)
{
    const int x = b->cur, in_c = b->c, in_h = b->h, in_w = b->w;
    add_bn(b, 1);
    add_conv(b, planes, 3, 1, stride, 0, 0);
    add_bn(b, 1);
    add_conv(b, planes, 3, 1, 1, 0, 0);
    if (!b->ok)
        return;
    const int main = b->cur, mc = b->c, mh = b->h, mw = b->w;
    int shortcut = x;
    if (stride != 1 || in_c != planes) {
        set_cur(b, x, in_c, in_h, in_w);
        add_conv(b, planes, 1, 0, stride, 0, 0);
        shortcut = b->cur;
    }
    if (shortcut < 0) {  // a residual straight from the input: not built
        b->ok = 0;
        return;
    }
    set_cur(b, main, mc, mh, mw);
    add_residual(b, shortcut);
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
        add_conv(b, 6, 5, 2, 1, 1, 1);
        add_pool(b);
        add_conv(b, 16, 5, 0, 1, 1, 1);
        add_pool(b);
        add_dense(b, 120, 1);
        add_dense(b, 84, 1);
        add_dense(b, n_classes, 0);
        break;
    case DEFT_MODEL_VGG:
        add_conv(b, 32, 3, 1, 1, 1, 1);
        add_conv(b, 32, 3, 1, 1, 1, 1);
        add_pool(b);
        add_conv(b, 64, 3, 1, 1, 1, 1);
        add_conv(b, 64, 3, 1, 1, 1, 1);
        add_pool(b);
        add_dense(b, 256, 1);
        add_dense(b, n_classes, 0);
        break;
    case DEFT_MODEL_PRERESNET20:
        // (1, 28, 28) -> conv 16 -> 3 blocks of 16 @ 28x28 -> 3 of 32 @
        // 14x14 -> 3 of 64 @ 7x7 -> bn relu -> global average -> fc
        add_conv(b, 16, 3, 1, 1, 0, 0);
        for (int stage = 0; stage < 3; stage++)
            for (int blk = 0; blk < 3; blk++)
                add_preact_block(b, 16 << stage, stage > 0 && blk == 0 ? 2 : 1);
        add_bn(b, 1);
        add_gap(b);
        add_dense(b, n_classes, 0);
        break;
    case DEFT_MODEL_VGG11BN: {
        // VGG-11's layer pattern at half width, each conv followed by BN
        // and ReLU: 28 -> 14 -> 7 -> 3 -> 1 through four max-pools (the
        // fifth, on a 1x1 map, is dropped), then 256 -> 256 -> 256 -> 10
        static const int cfg[] = {32, 0, 64, 0, 128, 128, 0, 256, 256, 0,
                                  256, 256};
        for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
            if (!cfg[i]) {
                add_pool(b);
                continue;
            }
            add_conv(b, cfg[i], 3, 1, 1, 1, 0);
            add_bn(b, 1);
        }
        add_dense(b, 256, 1);
        add_dense(b, 256, 1);
        add_dense(b, n_classes, 0);
        break;
    }
    }
}

/* The smallest input side each model accepts (two pools, and lenet's
 * valid 5x5 conv between them; vgg11bn's four pools). */
static int min_side(deft_model_kind_t kind)
{
    switch (kind) {
    case DEFT_MODEL_LENET:
        return 12;
    case DEFT_MODEL_VGG:
        return 4;
    case DEFT_MODEL_VGG11BN:
        return 16;
    default:
        return 1;
    }
}

static void engine_own(deft_model_t *m);

void deft_model_destroy(deft_model_t *m)
{
    if (!m)
        return;
    engine_own(m);
    for (int i = 0; i < m->n_layers; i++) {
        deft_free(m->layers[i].out);
        deft_free(m->layers[i].grad);
        deft_free(m->layers[i].argmax);
        deft_free(m->layers[i].mean);
        deft_free(m->layers[i].invstd);
    }
    deft_free(m->buffers);
    deft_free(m->tmp);
    deft_free(m->scratch);
    deft_free(m);
}

/* Sizes are checked in floats per example so that every int the kernels
 * compute (sgemm dimensions, plane offsets) stays far from overflow. */
#define MAX_EXAMPLE_FLOATS ((size_t)1 << 28)
#define MAX_BATCH (1 << 20)

/* Checks create's arguments, naming the bad one. */
static deft_status_t check_create(const char *fn, deft_model_kind_t kind, int c,
                                  int h, int w, int n_classes, int max_batch,
                                  int max_train_batch)
{
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
    if (max_train_batch < 1 || max_train_batch > max_batch)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: max_train_batch = %d, must be in [1, max_batch "
                         "= %d]", fn, max_train_batch, max_batch);
    return DEFT_OK;
}

/* Sizes every layer after build(): consumers, floats per example, the
 * largest activation and conv scratch, the fewest values per channel a BN
 * layer sees per example. 0, or -1 if a layer is too large. */
static int size_layers(deft_model_t *m, size_t *max_act, size_t *scratch)
{
    *max_act = (size_t)m->c * m->h * m->w, *scratch = 0;
    m->min_bn_hw = 0;
    for (int i = 0; i < m->n_layers; i++) {
        layer_t *l = &m->layers[i];
        if (l->src >= 0)
            m->layers[l->src].consumers++;
        if (l->src2 >= 0)
            m->layers[l->src2].consumers++;
        l->in_size = (size_t)l->c * l->h * l->w;
        l->out_size = (size_t)l->oc * l->oh * l->ow;
        size_t col = 0;
        if (l->kind == LAYER_CONV) {
            col = deft_conv2d_scratch_floats(&l->conv);
            *scratch = col > *scratch ? col : *scratch;
        }
        if (l->kind == LAYER_BN && (!m->min_bn_hw || l->h * l->w < m->min_bn_hw))
            m->min_bn_hw = l->h * l->w;
        if (l->out_size > MAX_EXAMPLE_FLOATS || col > MAX_EXAMPLE_FLOATS)
            return -1;
        *max_act = l->out_size > *max_act ? l->out_size : *max_act;
    }
    return 0;
}

/* Allocates every buffer: outputs for max_batch examples, gradients (and
 * the spare one) for max_train_batch. 0, or -1 out of memory. */
static int alloc_buffers(deft_model_t *m, size_t max_act, size_t scratch)
{
    const size_t nb = (size_t)m->max_batch, nt = (size_t)m->max_train_batch;
    int fail = 0;
    for (int i = 0; i < m->n_layers; i++) {
        layer_t *l = &m->layers[i];
        l->out = deft_alloc(nb * l->out_size * sizeof(float));
        l->grad = deft_alloc(nt * l->out_size * sizeof(float));
        fail |= !l->out || !l->grad;
        if (l->kind == LAYER_POOL) {
            l->argmax = deft_alloc(nb * l->out_size * sizeof(int32_t));
            fail |= !l->argmax;
        }
        if (l->kind == LAYER_BN) {
            l->mean = deft_alloc((size_t)l->c * sizeof(float));
            l->invstd = deft_alloc((size_t)l->c * sizeof(float));
            fail |= !l->mean || !l->invstd;
        }
    }
    m->buffers = deft_alloc((m->n_buffers ? m->n_buffers : 1) * sizeof(float));
    m->tmp = deft_alloc(nt * max_act * sizeof(float));
    m->scratch = deft_alloc((scratch ? scratch : 1) * sizeof(float));
    return fail || !m->buffers || !m->tmp || !m->scratch ? -1 : 0;
}

/* ---- the oneDNN engine -------------------------------------------------- */

/* The layout of l's input: its source layer's, or plain for the model's
 * input x. */
static int in_block(const deft_model_t *m, const layer_t *l)
{
    return l->src < 0 ? 1 : m->layers[l->src].blk;
}

/* Which layers' outputs take oneDNN's blocked layout (block blk) when its
 * convs run the model: a conv's output, and after it those of the
 * per-channel layers (BN, pool, residual add) of a blocked input; GAP and
 * dense outputs are plain. Sets each layer's blk and returns 1 if the
 * model can run so: it has convs, each with OC a multiple of blk (a
 * blocked input has C one too), both inputs of a residual add in one
 * layout, and no dense layer on a blocked map of more than one pixel
 * (whose flattening would differ from the plain order). Else 0. */
static int plan_blocked(deft_model_t *m, int blk)
{
    int convs = 0;
    for (int i = 0; i < m->n_layers; i++) {
        layer_t *l = &m->layers[i];
        const int in_blk = in_block(m, l);
        l->blk = in_blk;
        switch (l->kind) {
        case LAYER_CONV:
            if (l->oc % blk)
                return 0;
            l->blk = blk, convs++;
            break;
        case LAYER_ADD:
            if (l->src2 < 0 || m->layers[l->src2].blk != in_blk)
                return 0;
            break;
        case LAYER_DENSE:
            if (in_blk > 1 && l->src >= 0 &&
                m->layers[l->src].oh * m->layers[l->src].ow > 1)
                return 0;
            l->blk = 1;
            break;
        case LAYER_GAP:
            l->blk = 1;
            break;
        case LAYER_POOL:
        case LAYER_BN:
            break;
        }
    }
    return convs > 0;
}

/* Drops the oneDNN convs: every layer back to the plain layout and
 * deft's own kernels. */
static void engine_own(deft_model_t *m)
{
    for (int i = 0; i < m->n_layers; i++) {
        deft_dnnl_conv_destroy(m->layers[i].dnnl);
        m->layers[i].dnnl = NULL;
        m->layers[i].blk = 1;
    }
    deft_dnnl_scratch_destroy(m->dnnl_scratch);
    m->dnnl_scratch = NULL;
    m->blk = 0;
}

/* Puts the model's convs on oneDNN where plan_blocked allows it and every
 * conv gets JIT kernels; otherwise leaves it on its own kernels. */
static void engine_auto(deft_model_t *m)
{
    if (m->blk)
        return;  // on oneDNN already
    engine_own(m);
    const int blk = deft_dnnl_block();
    if (!blk || !plan_blocked(m, blk) ||
        !(m->dnnl_scratch = deft_dnnl_scratch_create())) {
        engine_own(m);
        return;
    }
    for (int i = 0; i < m->n_layers; i++) {
        layer_t *l = &m->layers[i];
        if (l->kind != LAYER_CONV)
            continue;
        l->dnnl = deft_dnnl_conv_create(&l->conv, in_block(m, l) > 1,
                                        l->b_off != NO_BIAS, l->src >= 0,
                                        m->max_train_batch, m->dnnl_scratch);
        if (!l->dnnl) {
            engine_own(m);
            return;
        }
    }
    m->blk = blk;
}

int deft_model_onednn(const deft_model_t *m)
{
    return m ? m->blk : 0;
}

void deft_model_set_convs(deft_model_t *m, deft_convs_t convs)
{
    if (!m)
        return;
    if (convs == DEFT_CONVS_OWN)
        engine_own(m);
    else
        engine_auto(m);
}

deft_status_t deft_model_create_sized(deft_model_t **out,
                                      deft_model_kind_t kind, int c, int h,
                                      int w, int n_classes, int max_batch,
                                      int max_train_batch)
{
    static const char fn[] = "deft_model_create";
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    deft_status_t st = check_create(fn, kind, c, h, w, n_classes, max_batch,
                                    max_train_batch);
    if (st != DEFT_OK)
        return st;
    deft_model_t *m = deft_alloc(sizeof *m);
    if (!m)
        return deft_fail(DEFT_ERR_NOMEM, "%s: out of memory", fn);
    m->kind = kind;
    m->c = c, m->h = h, m->w = w;
    m->n_classes = n_classes;
    m->max_batch = max_batch;
    m->max_train_batch = max_train_batch;
    m->layout.sizes = m->sizes;
    m->layout.rows = m->rows;
    builder_t b = {m, -1, c, h, w, 1};
    build(&b, kind, n_classes);
    if (!b.ok) {
        deft_model_destroy(m);
        return deft_fail(DEFT_ERR_INTERNAL, "%s: %s on (%d, %d, %d) has an "
                         "empty layer", fn, deft_model_name(kind), c, h, w);
    }
    size_t max_act, scratch;
    if (size_layers(m, &max_act, &scratch) != 0) {
        deft_model_destroy(m);
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: %s on input (%d, %d, %d) needs layers too "
                         "large for this implementation",
                         fn, deft_model_name(kind), c, h, w);
    }
    if (alloc_buffers(m, max_act, scratch) != 0) {
        deft_model_destroy(m);
        return deft_fail(DEFT_ERR_NOMEM,
                         "%s: out of memory for %s with max_batch = %d", fn,
                         deft_model_name(kind), max_batch);
    }
    engine_auto(m);
    deft_model_reset_buffers(m);
    *out = m;
    return DEFT_OK;
}

deft_status_t deft_model_create(deft_model_t **out, deft_model_kind_t kind,
                                int c, int h, int w, int n_classes,
                                int max_batch)
{
    return deft_model_create_sized(out, kind, c, h, w, n_classes, max_batch,
                                   max_batch);
}

int deft_model_min_train_batch(const deft_model_t *m)
{
    if (!m || !m->min_bn_hw)
        return 1;
    return m->min_bn_hw >= 2 ? 1 : 2;
}

int deft_model_kind_has_bn(deft_model_kind_t kind)
{
    return kind == DEFT_MODEL_PRERESNET20 || kind == DEFT_MODEL_VGG11BN;
}

size_t deft_model_num_params(const deft_model_t *m)
{
    return m ? m->n_params : 0;
}

const deft_layout_t *deft_model_layout(const deft_model_t *m)
{
    return m ? &m->layout : NULL;
}

size_t deft_model_num_buffers(const deft_model_t *m)
{
    return m ? m->n_buffers : 0;
}

float *deft_model_buffers(deft_model_t *m)
{
    return m && m->n_buffers ? m->buffers : NULL;
}

void deft_model_reset_buffers(deft_model_t *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_layers; i++) {
        const layer_t *l = &m->layers[i];
        if (l->kind != LAYER_BN)
            continue;
        for (int c = 0; c < l->c; c++) {
            m->buffers[l->buf_off + (size_t)c] = 0.0f;             // mean
            m->buffers[l->buf_off + (size_t)l->c + c] = 1.0f;      // var
        }
    }
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

/* n uniforms in [-bound, bound). */
static void fill_uniform(float *v, size_t n, double bound, deft_rng_t *r)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((2.0 * deft_rng_uniform_f64(r) - 1.0) * bound);
}

static void fill_const(float *v, size_t n, float value)
{
    for (size_t i = 0; i < n; i++)
        v[i] = value;
}

/* The models taken from the DEF paper's code keep that code's conv rule. */
static int def_code_model(deft_model_kind_t kind)
{
    return kind == DEFT_MODEL_PRERESNET20 || kind == DEFT_MODEL_VGG11BN;
}

/* One conv or dense layer's weight and bias. tensor is the weight's layout
 * index: each tensor draws from its own stream (seed, 0, tensor). */
static void init_affine(const deft_model_t *m, const layer_t *l, int last,
                        float *params, uint64_t seed, deft_init_t init)
{
    const int k = l->kind == LAYER_CONV ? l->conv.k : 1;
    const double fan_in = (double)l->c * k * k;
    const double fan_out = (double)l->oc * k * k;
    float *w = params + l->w_off;
    const size_t nw = m->sizes[l->tensor];
    const size_t nb = l->b_off == NO_BIAS ? 0 : (size_t)l->oc;
    float *b = nb ? params + l->b_off : NULL;
    deft_rng_t r = deft_rng_make(seed, 0, (uint64_t)l->tensor, DEFT_STREAM_INIT);
    if (init == DEFT_INIT_HE) {
        // He keeps the activation scale through ReLUs; Glorot for the
        // logits, which no ReLU follows
        fill_normal(w, nw, last ? sqrt(2.0 / (fan_in + fan_out))
                                : sqrt(2.0 / fan_in), &r);
        if (nb)
            fill_const(b, nb, 0.0f);
        return;
    }
    if (l->kind == LAYER_CONV && def_code_model(m->kind)) {
        // the DEF code's models: N(0, 2 / (k k out_channels)), zero bias
        fill_normal(w, nw, sqrt(2.0 / fan_out), &r);
        if (nb)
            fill_const(b, nb, 0.0f);
        return;
    }
    // PyTorch's Conv2d / Linear default: kaiming_uniform(a = sqrt 5) gives
    // U(+-1/sqrt(fan_in)) for the weight, and the bias takes the same bound
    const double bound = 1.0 / sqrt(fan_in);
    fill_uniform(w, nw, bound, &r);
    if (nb) {
        deft_rng_t rb = deft_rng_make(seed, 0, (uint64_t)l->tensor + 1,
                                      DEFT_STREAM_INIT);
        fill_uniform(b, nb, bound, &rb);
    }
}

void deft_model_init_params(const deft_model_t *m, float *params,
                            uint64_t seed, deft_init_t init)
{
    if (!m || !params)
        return;
    for (int i = 0; i < m->n_layers; i++) {
        const layer_t *l = &m->layers[i];
        if (l->kind == LAYER_BN) {
            fill_const(params + l->w_off, (size_t)l->c, 1.0f);  // gamma
            fill_const(params + l->b_off, (size_t)l->c, 0.0f);  // beta
        } else if (l->tensor >= 0) {
            init_affine(m, l, i == m->n_layers - 1, params, seed, init);
        }
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

static const float *output_of(const deft_model_t *m, int idx, const float *x)
{
    return idx < 0 ? x : m->layers[idx].out;
}

/* BN modes of a forward pass: training (batch statistics, running ones
 * updated with the given momentum), or evaluation (running statistics). */
typedef struct {
    int train;
    float momentum;
} bn_mode_t;

static void forward_bn(deft_model_t *m, layer_t *l, const float *params,
                       const float *in, int B, bn_mode_t mode)
{
    const int HW = l->h * l->w;
    float *rm = m->buffers + l->buf_off, *rv = rm + l->c;
    if (l->blk > 1 && mode.train)
        deft_batchnorm_forward_train_blocked(
            l->out, l->mean, l->invstd, in, params + l->w_off,
            params + l->b_off, B, l->c, HW, rm, rv, mode.momentum, l->relu,
            l->blk);
    else if (l->blk > 1)
        deft_batchnorm_forward_eval_blocked(l->out, in, params + l->w_off,
                                            params + l->b_off, rm, rv, B,
                                            l->c, HW, l->relu, l->blk);
    else if (mode.train)
        deft_batchnorm_forward_train(l->out, l->mean, l->invstd, in,
                                     params + l->w_off, params + l->b_off, B,
                                     l->c, HW, rm, rv, mode.momentum, l->relu);
    else
        deft_batchnorm_forward_eval(l->out, in, params + l->w_off,
                                    params + l->b_off, rm, rv, B, l->c, HW,
                                    l->relu);
}

/* A conv layer's forward, by oneDNN or deft's kernels. 0, or -1 if
 * oneDNN failed. */
static int forward_conv(deft_model_t *m, layer_t *l, const float *params,
                        const float *in, const float *bias, int B)
{
    if (!l->dnnl) {
        deft_conv2d_forward(l->out, in, params + l->w_off, bias, B, &l->conv,
                            m->scratch, l->relu);
        return 0;
    }
    if (deft_dnnl_conv_forward(l->dnnl, l->out, in, params + l->w_off, bias,
                               B) != 0)
        return -1;
    if (l->relu)
        deft_relu_forward(l->out, (size_t)B * l->out_size);
    return 0;
}

/* Makes every oneDNN conv ready for batch B before a pass starts, so that
 * a failure (out of memory) comes before any layer has run: BN's running
 * statistics are then untouched. 0, or -1. */
static int prepare_batch(deft_model_t *m, int B)
{
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].dnnl &&
            deft_dnnl_conv_prepare(m->layers[i].dnnl, B) != 0)
            return -1;
    return 0;
}

/* 0, or -1 if oneDNN failed (preparing for B, or in a call). */
static int forward(deft_model_t *m, const float *params, const float *x,
                   int B, bn_mode_t mode)
{
    if (prepare_batch(m, B) != 0)
        return -1;
    for (int i = 0; i < m->n_layers; i++) {
        layer_t *l = &m->layers[i];
        const float *in = output_of(m, l->src, x);
        const float *bias = l->b_off == NO_BIAS ? NULL : params + l->b_off;
        switch (l->kind) {
        case LAYER_DENSE:
            deft_dense_forward(l->out, in, params + l->w_off, bias, B, l->c,
                               l->oc);
            if (l->relu)
                deft_relu_forward(l->out, (size_t)B * l->out_size);
            break;
        case LAYER_CONV:
            if (forward_conv(m, l, params, in, bias, B) != 0)
                return -1;
            break;
        case LAYER_POOL:
            if (l->blk > 1)
                deft_maxpool2_forward_blocked(l->out, l->argmax, in, B, l->c,
                                              l->h, l->w, l->blk);
            else
                deft_maxpool2_forward(l->out, l->argmax, in, B, l->c, l->h,
                                      l->w);
            break;
        case LAYER_BN:
            forward_bn(m, l, params, in, B, mode);
            break;
        case LAYER_ADD:
            deft_add_forward(l->out, in, output_of(m, l->src2, x),
                             (size_t)B * l->out_size);
            break;
        case LAYER_GAP:
            if (in_block(m, l) > 1)
                deft_gap_forward_blocked(l->out, in, B, l->c, l->h * l->w,
                                         in_block(m, l));
            else
                deft_gap_forward(l->out, in, B, l->c, l->h * l->w);
            break;
        }
    }
    return 0;
}

/* Where a layer writes the gradient for its input layer idx: straight into
 * that layer's grad the first time, else into tmp, which accumulate()
 * then adds (an output read by two layers: the residual stream). NULL
 * for the model's input, which needs no gradient. */
static float *grad_target(deft_model_t *m, int idx)
{
    if (idx < 0)
        return NULL;
    return m->layers[idx].has_grad ? m->tmp : m->layers[idx].grad;
}

static void accumulate(deft_model_t *m, int idx, int B)
{
    if (idx < 0)
        return;
    layer_t *t = &m->layers[idx];
    if (t->has_grad)
        deft_add_inplace(t->grad, m->tmp, (size_t)B * t->out_size);
    t->has_grad = 1;
}

/* Through a 2x2 pool and the conv before it (whose output only the pool
 * reads) in one go: the gradient reaches the conv only at the argmax, and
 * passes its ReLU exactly where the pooled value is positive. */
static void backward_pool_conv(deft_model_t *m, const layer_t *l,
                               const layer_t *cv, const float *params,
                               const float *x, int B, float *grad)
{
    float *dout = l->grad;
    if (cv->relu)
        deft_relu_backward(dout, l->out, (size_t)B * l->out_size);
    float *dinp = grad_target(m, cv->src);
    deft_conv2d_backward_sparse(
        dinp, grad + cv->w_off, cv->b_off == NO_BIAS ? NULL : grad + cv->b_off,
        dout, l->argmax, l->oh * l->ow, output_of(m, cv->src, x),
        params + cv->w_off, B, &cv->conv, m->scratch);
    accumulate(m, cv->src, B);
}

/* The residual add's backward to its input layer idx: dout, the add's
 * gradient (l's grad buffer when the backward began), unchanged. An input
 * with a gradient adds dout in. One without takes the buffer dout is in,
 * while l still owns it (the two swap buffers of the same size: no copy);
 * after that, it gets a copy. */
static void pass_grad(deft_model_t *m, layer_t *l, int idx, float *dout,
                      int B)
{
    if (idx < 0)
        return;
    layer_t *t = &m->layers[idx];
    const size_t n = (size_t)B * l->out_size;
    if (t->has_grad) {
        deft_add_inplace(t->grad, dout, n);
    } else if (l->grad == dout) {
        l->grad = t->grad;
        t->grad = dout;
    } else {
        memcpy(t->grad, dout, n * sizeof(float));
    }
    t->has_grad = 1;
}

/* A conv layer's backward, by oneDNN or deft's kernels. 0, or -1. */
static int backward_conv(deft_model_t *m, const layer_t *l,
                         const float *params, const float *in, float *dinp,
                         float *dw, float *db, int B)
{
    if (l->dnnl)
        return deft_dnnl_conv_backward(l->dnnl, dinp, dw, db, l->grad, in,
                                       params + l->w_off, B);
    deft_conv2d_backward(dinp, dw, db, l->grad, in, params + l->w_off, B,
                         &l->conv, m->scratch);
    return 0;
}

/* 0, or -1 if oneDNN failed. */
static int backward_layer(deft_model_t *m, layer_t *l, const float *params,
                          const float *x, int B, float *grad)
{
    const size_t n_out = (size_t)B * l->out_size;
    const float *in = output_of(m, l->src, x);
    const int in_blk = in_block(m, l);
    float *dout = l->grad;
    float *dinp = grad_target(m, l->src);
    float *db = l->b_off == NO_BIAS ? NULL : grad + l->b_off;
    // a blocked BN masks by its ReLU in its own first pass
    const int fused_relu = l->kind == LAYER_BN && in_blk > 1;
    if (l->relu && !fused_relu)
        deft_relu_backward(dout, l->out, n_out);
    switch (l->kind) {
    case LAYER_DENSE:
        deft_dense_backward(dinp, grad + l->w_off, db, dout, in,
                            params + l->w_off, B, l->c, l->oc);
        break;
    case LAYER_CONV:
        if (backward_conv(m, l, params, in, dinp, grad + l->w_off, db, B))
            return -1;
        break;
    case LAYER_POOL:
        if (dinp && in_blk > 1)
            deft_maxpool2_backward_blocked(dinp, dout, l->argmax, B, l->c,
                                           l->h, l->w, in_blk);
        else if (dinp)
            deft_maxpool2_backward(dinp, dout, l->argmax, B, l->c, l->h, l->w);
        break;
    case LAYER_BN:
        if (in_blk > 1)
            deft_batchnorm_backward_blocked(
                dinp, grad + l->w_off, db, dout, l->relu ? l->out : NULL, in,
                l->mean, l->invstd, params + l->w_off, B, l->c, l->h * l->w,
                in_blk);
        else
            deft_batchnorm_backward(dinp, grad + l->w_off, db, dout, in,
                                    l->mean, l->invstd, params + l->w_off, B,
                                    l->c, l->h * l->w);
        break;
    case LAYER_ADD:
        pass_grad(m, l, l->src, dout, B);
        pass_grad(m, l, l->src2, dout, B);
        return 0;
    case LAYER_GAP:
        if (dinp && in_blk > 1)
            deft_gap_backward_blocked(dinp, dout, B, l->c, l->h * l->w,
                                      in_blk);
        else if (dinp)
            deft_gap_backward(dinp, dout, B, l->c, l->h * l->w);
        break;
    }
    accumulate(m, l->src, B);
    return 0;
}

/* dlogits must be in the last layer's grad. Writes every tensor of grad.
 * 0, or -1 if oneDNN failed. */
static int backward(deft_model_t *m, const float *params, const float *x,
                     int B, float *grad)
{
    for (int i = 0; i < m->n_layers - 1; i++)
        m->layers[i].has_grad = 0;
    m->layers[m->n_layers - 1].has_grad = 1;
    for (int i = m->n_layers - 1; i >= 0; i--) {
        layer_t *l = &m->layers[i];
        const layer_t *cv = l->src >= 0 ? &m->layers[l->src] : NULL;
        if (l->kind == LAYER_POOL && l->src == i - 1 && cv &&
            cv->kind == LAYER_CONV && cv->consumers == 1 && !cv->dnnl &&
            deft_conv2d_sparse_ok(&cv->conv)) {
            backward_pool_conv(m, l, cv, params, x, B, grad);
            i--;  // the conv is done
            continue;
        }
        if (backward_layer(m, l, params, x, B, grad) != 0)
            return -1;
    }
    return 0;
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

/* A oneDNN conv failed on this batch: out of memory preparing the batch
 * size (before any layer ran: prepare_batch), or an error inside oneDNN's
 * execution. */
static deft_status_t onednn_failed(const char *fn, int batch)
{
    return deft_fail(DEFT_ERR_NOMEM,
                     "%s: oneDNN's convs failed at batch = %d: out of memory "
                     "for that batch size's primitives, or an error inside "
                     "oneDNN; a smaller batch needs less, and --convs own "
                     "avoids oneDNN", fn, batch);
}

/* Training-mode passes: the gradients are sized for max_train_batch, and
 * a BN layer must see at least two values per channel (one would
 * normalize to beta whatever the input, and pass no gradient). */
static deft_status_t check_train_batch(const deft_model_t *m, const char *fn,
                                       int batch)
{
    if (batch > m->max_train_batch)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: batch = %d, must be <= max_train_batch = %d", fn,
                         batch, m->max_train_batch);
    if (batch < deft_model_min_train_batch(m))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: batch = %d gives a batch-norm layer of %s one "
                         "value per channel; training needs batch >= %d", fn,
                         batch, deft_model_name(m->kind),
                         deft_model_min_train_batch(m));
    return DEFT_OK;
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
    if ((st = check_train_batch(m, fn, batch)) != DEFT_OK)
        return st;
    if (forward(m, params, x, batch, (bn_mode_t){1, DEFT_BN_MOMENTUM}) != 0)
        return onednn_failed(fn, batch);
    layer_t *last = &m->layers[m->n_layers - 1];
    double sum = 0.0;
    int hits = 0;
    deft_softmax_xent(last->grad, &sum, &hits, last->out, labels, batch,
                      m->n_classes, 1.0f / (float)batch);
    if (backward(m, params, x, batch, grad) != 0)
        return onednn_failed(fn, batch);
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
    if (forward(m, params, x, batch, (bn_mode_t){0, 0.0f}) != 0)
        return onednn_failed(fn, batch);
    const layer_t *last = &m->layers[m->n_layers - 1];
    double sum = 0.0;
    int hits = 0;
    deft_softmax_xent(NULL, &sum, &hits, last->out, labels, batch,
                      m->n_classes, 1.0f);
    *loss_sum = sum;
    *correct = hits;
    return DEFT_OK;
}

deft_status_t deft_model_recalibrate(deft_model_t *m, const float *params,
                                     const float *x, int batch, int index)
{
    static const char fn[] = "deft_model_recalibrate";
    if (!m)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: m is NULL", fn);
    if (!params || !x)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !params ? "params" : "x");
    if (batch < 1 || batch > m->max_batch)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: batch = %d, must be in [1, max_batch = %d]", fn,
                         batch, m->max_batch);
    if (index < 0)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: index = %d, must be >= 0",
                         fn, index);
    if (!m->n_buffers)
        return DEFT_OK;
    if (batch < deft_model_min_train_batch(m))
        return check_train_batch(m, fn, batch);
    // momentum 1/(index+1): after batch `index` each statistic is the plain
    // mean of the batches 0..index (PyTorch's momentum = None)
    if (forward(m, params, x, batch,
                (bn_mode_t){1, 1.0f / ((float)index + 1.0f)}) != 0)
        return onednn_failed(fn, batch);
    return DEFT_OK;
}

const float *deft_model_logits(const deft_model_t *m)
{
    return m && m->n_layers ? m->layers[m->n_layers - 1].out : NULL;
}
