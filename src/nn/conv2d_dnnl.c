/* Convolutions by oneDNN (Debian's libdnnl), the library PyTorch itself
 * runs its CPU convs on, over activations in oneDNN's channel-blocked
 * layout (B, C/blk, H, W, blk) (nChw16c on AVX-512, nChw8c on AVX2; see
 * deft_dnnl_block).
 *
 * Why the blocked layout: oneDNN's fast kernels (its JIT convs) take and
 * give blocked tensors. Fed plain NCHW they reorder in and out on every
 * call, or fall back to a gemm path: in a one-off measurement at
 * preresnet20's shapes (batch 128, one thread) the plain-layout convs took
 * 2-6x the blocked ones' time. So a
 * model that uses this engine keeps the outputs of its convs, and of the
 * per-channel layers after them (BN, ReLU, residual add, pooling), in the
 * blocked layout end to end (model.c), and only the weights are reordered:
 * the optimizer's flat parameter buffer keeps them (OC, C, k, k).
 *
 * Each worker runs single-threaded (the workers are the parallelism), so
 * every oneDNN call here runs with one OpenMP thread: the calling thread's
 * OpenMP thread count is set to 1 around it and restored after. With one
 * thread the results are bitwise repeatable.
 *
 * Scratchpads are ours (oneDNN's user mode): its own library-managed one
 * is shared by every primitive of the process unless oneDNN was built for
 * concurrent execution, and workers on threads run primitives at once
 * (two workers crashed in it). The convs of one model run one after
 * another on one thread, so they share one buffer (deft_dnnl_scratch_t),
 * grown to the largest need: the Winograd primitives take 7-11 MB each. */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include "nn/layers.h"

#include "core/internal.h"

#include <dlfcn.h>
#include <dnnl.h>
#include <pthread.h>
#include <string.h>

struct deft_dnnl_conv {
    deft_conv2d_shape_t s;
    int src_blocked;  /* input in the blocked layout, else (B, C, H, W)   */
    int bias;         /* forward takes a bias (OC), backward gives db     */
    int dinp;         /* backward gives dinp (else the model's input)     */
    int batch;        /* batch the primitives below are for; 0 none       */
    dnnl_stream_t stream;
    dnnl_primitive_t fwd, bwd_data, bwd_w;
    dnnl_primitive_t w_to_fwd, w_to_bwd, dw_to_plain; /* weight reorders */
    /* user memories (handles set per call): src, dst, w and dw (OC, C, k,
     * k), b and db (OC), dsrc, ddst; oneDNN-owned: wf, wb, dwb, the
     * weights in the formats the primitives chose */
    dnnl_memory_t src, dst, w, dw, b, db, dsrc, ddst, wf, wb, dwb;
    /* each conv primitive's scratchpad, on the shared buffer */
    dnnl_memory_t pad_fwd, pad_bwd_data, pad_bwd_w;
    deft_dnnl_scratch_t *scratch;
};

struct deft_dnnl_scratch {
    void *p;
    size_t n; /* bytes */
};

deft_dnnl_scratch_t *deft_dnnl_scratch_create(void)
{
    return deft_alloc(sizeof(deft_dnnl_scratch_t));
}

void deft_dnnl_scratch_destroy(deft_dnnl_scratch_t *s)
{
    if (!s)
        return;
    deft_free(s->p);
    deft_free(s);
}

/* ---- the engine, the block size, the OpenMP thread count ---------------- */

static dnnl_engine_t g_engine;
static int g_block; /* 16, 8, or 0: no JIT convs here */
static int (*g_omp_get)(void);
static void (*g_omp_set)(int);
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* The calling thread's OpenMP thread count to 1; returns the old one for
 * one_thread_end (libgomp is oneDNN's runtime; looked up, not linked). */
static int one_thread_begin(void)
{
    if (!g_omp_get || !g_omp_set)
        return 0;
    const int prev = g_omp_get();
    if (prev != 1)
        g_omp_set(1);
    return prev;
}

static void one_thread_end(int prev)
{
    if (prev > 1)
        g_omp_set(prev);
}

static dnnl_format_tag_t block_tag(int blk)
{
    return blk == 16 ? dnnl_nChw16c : dnnl_nChw8c;
}

/* 1 for oneDNN's JIT kernels ("jit...", or its brgemm ones, "brg..."),
 * 0 for its reference and gemm fallbacks. */
static int impl_is_jit(const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) !=
            dnnl_success ||
        !impl)
        return 0;
    return strncmp(impl, "jit", 3) == 0 || strncmp(impl, "brg", 3) == 0;
}

/* The block of the activations oneDNN's forward conv picks itself for a
 * 16 -> 16 channel 3x3 conv: nChw16c where it has AVX-512 kernels,
 * nChw8c on AVX2; 0 if neither or no JIT kernel. */
static int probe_block(void)
{
    const dnnl_dims_t d = {16, 16, 14, 14}, wd = {16, 16, 3, 3};
    const dnnl_dims_t st = {1, 1}, pad = {1, 1};
    dnnl_memory_desc_t src, w, dst;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_memory_desc_init_by_tag(&src, 4, d, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&w, 4, wd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&dst, 4, d, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training,
                                           dnnl_convolution_direct, &src, &w,
                                           NULL, &dst, st, pad, pad) ||
        dnnl_primitive_desc_create(&pd, &cd, NULL, g_engine, NULL))
        return 0;
    int blk = 0;
    const dnnl_memory_desc_t *got =
        dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    for (int b = 16; b >= 8 && !blk && impl_is_jit(pd); b -= 8) {
        dnnl_memory_desc_t want;
        if (!dnnl_memory_desc_init_by_tag(&want, 4, d, dnnl_f32, block_tag(b)) &&
            got && dnnl_memory_desc_equal(got, &want))
            blk = b;
    }
    dnnl_primitive_desc_destroy(pd);
    return blk;
}

/* Without the OpenMP calls (another runtime, or one not visible here)
 * oneDNN would run each call on every core, several workers at once would
 * oversubscribe them, and the results would no longer be repeatable: then
 * the engine is off (block 0) and the models keep deft's kernels. */
static void init_once(void)
{
    void *get = dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    void *set = dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (!get || !set)
        return;
    memcpy(&g_omp_get, &get, sizeof get);
    memcpy(&g_omp_set, &set, sizeof set);
    const int prev = one_thread_begin();
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) == dnnl_success)
        g_block = probe_block();
    one_thread_end(prev);
}

int deft_dnnl_block(void)
{
    pthread_once(&g_once, init_once);
    return g_block;
}

/* ---- primitives for one batch size ------------------------------------- */

static void release(deft_dnnl_conv_t *c)
{
    dnnl_primitive_t *prims[] = {&c->fwd,      &c->bwd_data, &c->bwd_w,
                                 &c->w_to_fwd, &c->w_to_bwd, &c->dw_to_plain};
    for (size_t i = 0; i < sizeof prims / sizeof prims[0]; i++) {
        dnnl_primitive_destroy(*prims[i]);
        *prims[i] = NULL;
    }
    dnnl_memory_t *mems[] = {&c->src,     &c->dst,          &c->w,
                             &c->dw,      &c->b,            &c->db,
                             &c->dsrc,    &c->ddst,         &c->wf,
                             &c->wb,      &c->dwb,          &c->pad_fwd,
                             &c->pad_bwd_data, &c->pad_bwd_w};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++) {
        dnnl_memory_destroy(*mems[i]);
        *mems[i] = NULL;
    }
    c->batch = 0;
}

/* The descriptors of a conv of batch B: src, dst in their layouts, the
 * weights in any format (the primitive's choice), the bias (OC). */
typedef struct {
    dnnl_memory_desc_t src, dst, w_any, w_plain, bias;
    dnnl_dims_t strides, pad_l, pad_r;
} descs_t;

static int make_descs(descs_t *d, const deft_conv2d_shape_t *s,
                      int src_blocked, int B)
{
    const dnnl_dims_t sd = {B, s->c, s->h, s->w};
    const dnnl_dims_t dd = {B, s->oc, s->oh, s->ow};
    const dnnl_dims_t wd = {s->oc, s->c, s->k, s->k}, bd = {s->oc};
    const dnnl_format_tag_t blk = block_tag(g_block);
    for (int i = 0; i < 2; i++) {
        d->strides[i] = s->stride;
        d->pad_l[i] = s->pad;
    }
    // the padding on the bottom/right that makes the output size exact
    d->pad_r[0] = (s->oh - 1) * s->stride + s->k - s->h - s->pad;
    d->pad_r[1] = (s->ow - 1) * s->stride + s->k - s->w - s->pad;
    return dnnl_memory_desc_init_by_tag(&d->src, 4, sd, dnnl_f32,
                                        src_blocked ? blk : dnnl_nchw) ||
           dnnl_memory_desc_init_by_tag(&d->dst, 4, dd, dnnl_f32, blk) ||
           dnnl_memory_desc_init_by_tag(&d->w_any, 4, wd, dnnl_f32,
                                        dnnl_format_tag_any) ||
           dnnl_memory_desc_init_by_tag(&d->w_plain, 4, wd, dnnl_f32,
                                        dnnl_oihw) ||
           dnnl_memory_desc_init_by_tag(&d->bias, 1, bd, dnnl_f32, dnnl_x);
}

/* The conv primitive descriptors, forward, backward data (if dinp) and
 * backward weights, with scratchpads the caller provides (attr). */
static int conv_pds(dnnl_primitive_desc_t pd[3], descs_t *d,
                    const dnnl_memory_desc_t *b, int dinp,
                    const_dnnl_primitive_attr_t attr, dnnl_alg_kind_t alg)
{
    dnnl_convolution_desc_t f, bd, bw;
    pd[0] = pd[1] = pd[2] = NULL;
    return dnnl_convolution_forward_desc_init(
               &f, dnnl_forward_training, alg, &d->src,
               &d->w_any, b, &d->dst, d->strides, d->pad_l, d->pad_r) ||
           dnnl_primitive_desc_create(&pd[0], &f, attr, g_engine, NULL) ||
           (dinp && (dnnl_convolution_backward_data_desc_init(
                         &bd, alg, &d->src, &d->w_any,
                         &d->dst, d->strides, d->pad_l, d->pad_r) ||
                     dnnl_primitive_desc_create(&pd[1], &bd, attr, g_engine,
                                                pd[0]))) ||
           dnnl_convolution_backward_weights_desc_init(
               &bw, alg, &d->src, &d->w_any, b, &d->dst,
               d->strides, d->pad_l, d->pad_r) ||
           dnnl_primitive_desc_create(&pd[2], &bw, attr, g_engine, pd[0]);
}

static void destroy_pds(dnnl_primitive_desc_t pd[3])
{
    for (int i = 0; i < 3; i++) {
        dnnl_primitive_desc_destroy(pd[i]);
        pd[i] = NULL;
    }
}

/* oneDNN's Winograd F(4x4, 3x3) where it has one (AVX-512) for a 3x3
 * stride-1 conv of 32 or more input channels and an output of at least a
 * tile (4x4); its direct kernels otherwise. Measured at batch 128 on one
 * thread (bench_convs), Winograd takes 0.65-0.9x of the direct time at
 * 32-128 channels on 14x14 and 7x7 maps, and more than direct at 16
 * channels (28x28) and on maps below a tile. A fixed rule, not a timing:
 * the same model always runs the same arithmetic. */
static int wants_winograd(const deft_conv2d_shape_t *s)
{
    return s->k == 3 && s->stride == 1 && s->pad == 1 && s->c >= 32 &&
           s->oh >= 4 && s->ow >= 4;
}

/* conv_pds with user scratchpads; each must be a JIT kernel. */
static int make_pds(dnnl_primitive_desc_t pd[3], descs_t *d,
                    const deft_conv2d_shape_t *s, int bias, int dinp)
{
    dnnl_primitive_attr_t attr = NULL;
    const dnnl_memory_desc_t *b = bias ? &d->bias : NULL;
    pd[0] = pd[1] = pd[2] = NULL;
    int rc = dnnl_primitive_attr_create(&attr) ||
                     dnnl_primitive_attr_set_scratchpad_mode(
                         attr, dnnl_scratchpad_mode_user)
                 ? -1
                 : 0;
    if (rc == 0 && (!wants_winograd(s) ||
                    conv_pds(pd, d, b, dinp, attr, dnnl_convolution_winograd))) {
        destroy_pds(pd);
        rc = conv_pds(pd, d, b, dinp, attr, dnnl_convolution_direct) ? -1 : 0;
    }
    dnnl_primitive_attr_destroy(attr);
    for (int i = 0; i < 3 && rc == 0; i++)
        if (pd[i] && !impl_is_jit(pd[i]))
            rc = -1;
    return rc;
}

static int new_mem(dnnl_memory_t *m, const dnnl_memory_desc_t *md, int own)
{
    return dnnl_memory_create(m, md, g_engine,
                              own ? DNNL_MEMORY_ALLOCATE : DNNL_MEMORY_NONE) !=
                   dnnl_success
               ? -1
               : 0;
}

static int new_reorder(dnnl_primitive_t *p, dnnl_memory_t from,
                       dnnl_memory_t to)
{
    const dnnl_memory_desc_t *a, *b;
    dnnl_primitive_desc_t pd;
    if (dnnl_memory_get_memory_desc(from, &a) ||
        dnnl_memory_get_memory_desc(to, &b) ||
        dnnl_reorder_primitive_desc_create(&pd, a, g_engine, b, g_engine,
                                           NULL))
        return -1;
    const int rc = dnnl_primitive_create(p, pd) ? -1 : 0;
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

#define QMD(pd, what) dnnl_primitive_desc_query_md((pd), (what), 0)

/* The memories and primitives of c for batch B, from its descriptors. */
static int make_prims(deft_dnnl_conv_t *c, dnnl_primitive_desc_t pd[3],
                      descs_t *d)
{
    if (new_mem(&c->src, &d->src, 0) || new_mem(&c->dst, &d->dst, 0) ||
        new_mem(&c->dsrc, &d->src, 0) || new_mem(&c->ddst, &d->dst, 0) ||
        new_mem(&c->w, &d->w_plain, 0) || new_mem(&c->dw, &d->w_plain, 0) ||
        new_mem(&c->b, &d->bias, 0) || new_mem(&c->db, &d->bias, 0) ||
        new_mem(&c->wf, QMD(pd[0], dnnl_query_weights_md), 1) ||
        new_mem(&c->dwb, QMD(pd[2], dnnl_query_diff_weights_md), 1) ||
        new_mem(&c->pad_fwd, QMD(pd[0], dnnl_query_scratchpad_md), 0) ||
        new_mem(&c->pad_bwd_w, QMD(pd[2], dnnl_query_scratchpad_md), 0))
        return -1;
    if (dnnl_primitive_create(&c->fwd, pd[0]) ||
        dnnl_primitive_create(&c->bwd_w, pd[2]) ||
        new_reorder(&c->w_to_fwd, c->w, c->wf) ||
        new_reorder(&c->dw_to_plain, c->dwb, c->dw))
        return -1;
    if (!c->dinp)
        return 0;
    return new_mem(&c->wb, QMD(pd[1], dnnl_query_weights_md), 1) ||
                   new_mem(&c->pad_bwd_data,
                           QMD(pd[1], dnnl_query_scratchpad_md), 0) ||
                   dnnl_primitive_create(&c->bwd_data, pd[1]) ||
                   new_reorder(&c->w_to_bwd, c->w, c->wb)
               ? -1
               : 0;
}

/* Makes c's primitives for batch B unless they are there. 0, or -1 (then
 * c has none). Runs with one OpenMP thread (the caller's guard). */
static int ensure_batch(deft_dnnl_conv_t *c, int B)
{
    if (c->batch == B)
        return 0;
    release(c);
    descs_t d;
    dnnl_primitive_desc_t pd[3] = {NULL, NULL, NULL};
    int rc = make_descs(&d, &c->s, c->src_blocked, B) ? -1
             : make_pds(pd, &d, &c->s, c->bias, c->dinp) ? -1
                                                       : make_prims(c, pd, &d);
    for (int i = 0; i < 3; i++)
        dnnl_primitive_desc_destroy(pd[i]);
    if (rc != 0) {
        release(c);
        return -1;
    }
    c->batch = B;
    return 0;
}

static int grow_pad(deft_dnnl_conv_t *c, dnnl_memory_t pad);

int deft_dnnl_conv_prepare(deft_dnnl_conv_t *c, int B)
{
    const int prev = one_thread_begin();
    int rc = ensure_batch(c, B);
    dnnl_memory_t pads[] = {c->pad_fwd, c->pad_bwd_data, c->pad_bwd_w};
    for (int i = 0; i < 3 && rc == 0; i++)
        if (pads[i])
            rc = grow_pad(c, pads[i]);
    one_thread_end(prev);
    return rc;
}

/* ---- create, destroy, run ---------------------------------------------- */

deft_dnnl_conv_t *deft_dnnl_conv_create(const deft_conv2d_shape_t *s,
                                        int src_blocked, int bias, int dinp,
                                        int batch, deft_dnnl_scratch_t *scratch)
{
    const int blk = deft_dnnl_block();
    if (!blk || s->oc % blk || (src_blocked && s->c % blk) || batch < 1 ||
        !scratch)
        return NULL;
    deft_dnnl_conv_t *c = deft_alloc(sizeof *c);
    if (!c)
        return NULL;
    c->s = *s;
    c->src_blocked = src_blocked;
    c->bias = bias;
    c->dinp = dinp;
    c->scratch = scratch;
    const int prev = one_thread_begin();
    int ok = dnnl_stream_create(&c->stream, g_engine,
                                dnnl_stream_default_flags) == dnnl_success;
    ok = ok && ensure_batch(c, batch) == 0;
    one_thread_end(prev);
    if (!ok) {
        deft_dnnl_conv_destroy(c);
        return NULL;
    }
    return c;
}

void deft_dnnl_conv_destroy(deft_dnnl_conv_t *c)
{
    if (!c)
        return;
    release(c);
    dnnl_stream_destroy(c->stream);
    deft_free(c);
}

/* Sets the data handle of m to p (a const input is not written). */
static int bind(dnnl_memory_t m, const void *p)
{
    void *q;
    memcpy(&q, &p, sizeof q);
    return dnnl_memory_set_data_handle(m, q) != dnnl_success;
}

/* Grows the shared buffer to pad's (a scratchpad memory's) size. */
static int grow_pad(deft_dnnl_conv_t *c, dnnl_memory_t pad)
{
    const dnnl_memory_desc_t *md;
    if (dnnl_memory_get_memory_desc(pad, &md) != dnnl_success)
        return -1;
    const size_t need = dnnl_memory_desc_get_size(md);
    deft_dnnl_scratch_t *s = c->scratch;
    if (need > s->n) {
        void *p = deft_alloc(need);
        if (!p)
            return -1;
        deft_free(s->p);
        s->p = p, s->n = need;
    }
    return 0;
}

/* Puts pad on the shared buffer (grown to fit, if prepare did not). */
static int bind_pad(deft_dnnl_conv_t *c, dnnl_memory_t pad)
{
    return grow_pad(c, pad) || bind(pad, c->scratch->p);
}

static int run(deft_dnnl_conv_t *c, dnnl_primitive_t p, int n,
               const dnnl_exec_arg_t *args)
{
    return dnnl_primitive_execute(p, c->stream, n, args) != dnnl_success ||
           dnnl_stream_wait(c->stream) != dnnl_success;
}

static int forward(deft_dnnl_conv_t *c, float *out, const float *inp,
                   const float *w, const float *b)
{
    if (bind(c->src, inp) || bind(c->dst, out) || bind(c->w, w) ||
        (c->bias && bind(c->b, b)) || bind_pad(c, c->pad_fwd))
        return -1;
    const dnnl_exec_arg_t re[] = {{DNNL_ARG_FROM, c->w}, {DNNL_ARG_TO, c->wf}};
    const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, c->src},
                                    {DNNL_ARG_WEIGHTS, c->wf},
                                    {DNNL_ARG_DST, c->dst},
                                    {DNNL_ARG_SCRATCHPAD, c->pad_fwd},
                                    {DNNL_ARG_BIAS, c->b}};
    return run(c, c->w_to_fwd, 2, re) || run(c, c->fwd, 4 + c->bias, args);
}

int deft_dnnl_conv_forward(deft_dnnl_conv_t *c, float *out, const float *inp,
                           const float *w, const float *b, int B)
{
    if ((c->bias != 0) != (b != NULL))
        return -1;
    const int prev = one_thread_begin();
    const int rc = ensure_batch(c, B) || forward(c, out, inp, w, b) ? -1 : 0;
    one_thread_end(prev);
    return rc;
}

static int backward(deft_dnnl_conv_t *c, float *dinp, float *dw, float *db,
                    const float *dout, const float *inp, const float *w)
{
    if (bind(c->ddst, dout) || bind(c->src, inp) || bind(c->w, w) ||
        bind(c->dw, dw) || (c->bias && bind(c->db, db)))
        return -1;
    if (dinp) {
        const dnnl_exec_arg_t re[] = {{DNNL_ARG_FROM, c->w},
                                      {DNNL_ARG_TO, c->wb}};
        const dnnl_exec_arg_t args[] = {
            {DNNL_ARG_DIFF_DST, c->ddst},
            {DNNL_ARG_WEIGHTS, c->wb},
            {DNNL_ARG_DIFF_SRC, c->dsrc},
            {DNNL_ARG_SCRATCHPAD, c->pad_bwd_data}};
        if (bind(c->dsrc, dinp) || bind_pad(c, c->pad_bwd_data) ||
            run(c, c->w_to_bwd, 2, re) || run(c, c->bwd_data, 4, args))
            return -1;
    }
    const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, c->src},
                                    {DNNL_ARG_DIFF_DST, c->ddst},
                                    {DNNL_ARG_DIFF_WEIGHTS, c->dwb},
                                    {DNNL_ARG_SCRATCHPAD, c->pad_bwd_w},
                                    {DNNL_ARG_DIFF_BIAS, c->db}};
    const dnnl_exec_arg_t re[] = {{DNNL_ARG_FROM, c->dwb},
                                  {DNNL_ARG_TO, c->dw}};
    return bind_pad(c, c->pad_bwd_w) || run(c, c->bwd_w, 4 + c->bias, args) ||
           run(c, c->dw_to_plain, 2, re);
}

int deft_dnnl_conv_backward(deft_dnnl_conv_t *c, float *dinp, float *dw,
                            float *db, const float *dout, const float *inp,
                            const float *w, int B)
{
    if ((c->bias != 0) != (db != NULL) || (dinp && !c->dinp))
        return -1;
    const int prev = one_thread_begin();
    const int rc =
        ensure_batch(c, B) || backward(c, dinp, dw, db, dout, inp, w) ? -1 : 0;
    one_thread_end(prev);
    return rc;
}
