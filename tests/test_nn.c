/* Layers and models of src/nn: finite-difference gradient checks of every
 * layer kind and every model, the sparse conv backward against the dense
 * one, init statistics, parameter counts and layouts, a short training run,
 * and argument errors. */
#include "testutil.h"

#include "core/internal.h"
#include "core/rng.h"
#include "nn/layers.h"
#include "nn/nn.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *falloc(size_t n)
{
    float *p = deft_alloc(n * sizeof(float));
    assert_non_null(p);
    return p;
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

/* ------------------------------------------------------------------------ */
/* Layer checks. Each layer is tested through the scalar L = <r, layer(x)>
 * for a fixed random r: backward with dout = r must give dL/d(everything).
 * Dense and conv are linear in each argument, so central differences are
 * exact up to rounding and every coordinate can be checked tightly.        */
/* ------------------------------------------------------------------------ */

/* Central difference of f at v[i], with the step actually representable. */
typedef double (*objective_fn)(void *ctx);

static double central_diff(objective_fn f, void *ctx, float *v, size_t i,
                           float h)
{
    const float v0 = v[i];
    const float up = v0 + h, dn = v0 - h;
    v[i] = up;
    const double fu = f(ctx);
    v[i] = dn;
    const double fd = f(ctx);
    v[i] = v0;
    return (fu - fd) / ((double)up - (double)dn);
}

/* Compares analytic grad[i] against central differences for every i. */
static void check_all(objective_fn f, void *ctx, float *v, const float *grad,
                      size_t n, float h, double rtol, double atol)
{
    for (size_t i = 0; i < n; i++) {
        const double fd = central_diff(f, ctx, v, i, h);
        if (fabs(grad[i] - fd) > rtol * fabs(fd) + atol)
            print_error("coordinate %zu of %zu\n", i, n);
        assert_close(grad[i], fd, rtol, atol);
    }
}

static double max_rel_err(const char *what, const float *got,
                          const double *want, size_t n);

typedef struct {
    deft_conv2d_shape_t s;
    int B;
    float *x, *w, *b, *out, *r, *scratch;
} conv_ctx_t;

static double conv_objective(void *p)
{
    conv_ctx_t *c = p;
    deft_conv2d_forward(c->out, c->x, c->w, c->b, c->B, &c->s, c->scratch, 0);
    return dot(c->r, c->out, (size_t)c->B * c->s.oc * c->s.oh * c->s.ow);
}

static void check_conv(int C, int H, int W, int OC, int k, int pad, int B)
{
    conv_ctx_t c;
    assert_true(deft_conv2d_shape(&c.s, C, H, W, OC, k, pad, 1));
    c.B = B;
    const size_t nx = (size_t)B * C * H * W, nw = (size_t)OC * C * k * k;
    const size_t ny = (size_t)B * OC * c.s.oh * c.s.ow;
    c.x = falloc(nx), c.w = falloc(nw), c.b = falloc(OC);
    c.out = falloc(ny), c.r = falloc(ny);
    c.scratch = falloc(2 * deft_conv2d_scratch_floats(&c.s));
    float *dx = falloc(nx), *dw = falloc(nw), *db = falloc(OC);
    deft_test_fill(c.x, nx, 1);
    deft_test_fill(c.w, nw, 2);
    deft_test_fill(c.b, OC, 3);
    deft_test_fill(c.r, ny, 4);

    deft_conv2d_backward(dx, dw, db, c.r, c.x, c.w, B, &c.s, c.scratch);
    check_all(conv_objective, &c, c.w, dw, nw, 0.25f, 1e-3, 2e-3);
    check_all(conv_objective, &c, c.b, db, OC, 0.25f, 1e-3, 2e-3);
    check_all(conv_objective, &c, c.x, dx, nx, 0.25f, 1e-3, 2e-3);

    // fused ReLU is ReLU of the plain output
    float *y0 = falloc(ny), *y1 = falloc(ny);
    deft_conv2d_forward(y0, c.x, c.w, c.b, B, &c.s, c.scratch, 0);
    deft_conv2d_forward(y1, c.x, c.w, c.b, B, &c.s, c.scratch, 1);
    for (size_t i = 0; i < ny; i++)
        assert_true(y1[i] == (y0[i] > 0.0f ? y0[i] : 0.0f));

    // one image at a time gives the batch's result: no state leaks between
    // images through the scratch (up to rounding: a batch puts several
    // images into one sgemm call, whose blocking may differ)
    if (B >= 2) {
        deft_conv2d_forward(y1, c.x + (size_t)C * H * W, c.w, c.b, 1, &c.s,
                            c.scratch, 0);
        const size_t per = (size_t)OC * c.s.oh * c.s.ow;
        double *want = calloc(per, sizeof(double));
        assert_non_null(want);
        for (size_t i = 0; i < per; i++)
            want[i] = y0[per + i];
        assert_true(max_rel_err("one image against the batch", y1, want,
                                per) < 1e-5);
        free(want);
    }

    deft_free(y0), deft_free(y1);
    deft_free(c.x), deft_free(c.w), deft_free(c.b), deft_free(c.out);
    deft_free(c.r), deft_free(c.scratch);
    deft_free(dx), deft_free(dw), deft_free(db);
}

static void test_conv2d_gradients(void **state)
{
    (void)state;
    check_conv(1, 6, 6, 3, 5, 2, 2);   // lenet's first layer, 'same'
    check_conv(3, 7, 6, 4, 5, 0, 2);   // 'valid', non-square input
    check_conv(2, 5, 5, 3, 3, 1, 3);   // vgg's 3x3 'same'
    check_conv(2, 4, 4, 2, 1, 0, 2);   // 1x1
    check_conv(1, 3, 3, 2, 5, 2, 1);   // kernel wider than the image
    // the direct forward (K <= 32, rows >= 8 wide): a 6-channel block and
    // a single channel; two vectors per row, the last overlapping
    check_conv(1, 12, 11, 7, 5, 2, 2);
    // ... and three vectors per row (a pair, then one), 13 = 6 + 6 + 1
    check_conv(2, 5, 17, 13, 3, 1, 2);
}

/* Direct sums in double (any stride), for one batch: y (B, OC, OH, OW) =
 * conv(x, w) + b and, for an output gradient r, dx (B, C, H, W), dw (OC, C, k, k) and
 * db (OC). */
static void conv_reference(double *y, double *dx, double *dw, double *db,
                           const float *x, const float *w, const float *b,
                           const float *r, int B, const deft_conv2d_shape_t *s)
{
    const int C = s->c, H = s->h, W = s->w, OC = s->oc, k = s->k;
    const int OH = s->oh, OW = s->ow;
    memset(dx, 0, sizeof(double) * B * C * H * W);
    memset(dw, 0, sizeof(double) * OC * C * k * k);
    memset(db, 0, sizeof(double) * OC);
    for (int i = 0; i < B; i++)
        for (int o = 0; o < OC; o++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    const size_t yi = (((size_t)i * OC + o) * OH + oy) * OW + ox;
                    double acc = b[o];
                    const double g = r[yi];
                    db[o] += g;
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                const int iy = oy * s->stride - s->pad + ky;
                                const int ix = ox * s->stride - s->pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                const size_t xi =
                                    (((size_t)i * C + c) * H + iy) * W + ix;
                                const size_t wi =
                                    (((size_t)o * C + c) * k + ky) * k + kx;
                                acc += (double)x[xi] * w[wi];
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                    y[yi] = acc;
                }
}

/* Largest |got - want| over n, relative to the largest |want| (infinite
 * for a NaN); prints the worst pair. */
static double max_rel_err(const char *what, const float *got,
                          const double *want, size_t n)
{
    double err = 0.0, scale = 1e-30;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(want[i]));
        const double e = fabs(got[i] - want[i]);
        if (!(e <= err))  // also a NaN
            err = isnan(e) ? INFINITY : e, worst = i;
    }
    if (err / scale > 1e-5)
        print_error("%s: index %zu of %zu: got %.9g, want %.9g (scale %g)\n",
                    what, worst, n, got[worst], want[worst], scale);
    return err / scale;
}

/* The conv's forward and backward through the public dispatch, or through
 * the Winograd path itself (which the dispatch leaves small maps to). */
static void conv_forward(int wino, float *y, const float *x, const float *w,
                         const float *b, int B, const deft_conv2d_shape_t *s,
                         float *scratch)
{
    if (wino)
        deft_conv2d_winograd_forward(y, x, w, b, B, s, scratch, 0);
    else
        deft_conv2d_forward(y, x, w, b, B, s, scratch, 0);
}

static void conv_backward(int wino, float *dx, float *dw, float *db,
                          const float *r, const float *x, const float *w,
                          int B, const deft_conv2d_shape_t *s, float *scratch)
{
    if (wino)
        deft_conv2d_winograd_backward(dx, dw, db, r, x, w, B, s, scratch);
    else
        deft_conv2d_backward(dx, dw, db, r, x, w, B, s, scratch);
}

/* A conv's forward and backward (k x k, stride 1) against the direct sums
 * in double, with and without a bias and an input gradient; through the
 * Winograd path itself if wino. */
static void check_direct(int C, int H, int W, int OC, int k, int pad, int B,
                         int wino)
{
    deft_conv2d_shape_t s;
    assert_true(deft_conv2d_shape(&s, C, H, W, OC, k, pad, 1));
    const size_t nx = (size_t)B * C * H * W, nw = (size_t)OC * C * k * k;
    const size_t ny = (size_t)B * OC * s.oh * s.ow;
    float *x = falloc(nx), *w = falloc(nw), *b = falloc(OC), *r = falloc(ny);
    float *y = falloc(ny), *dx = falloc(nx), *dw = falloc(nw), *db = falloc(OC);
    float *scratch = falloc(deft_conv2d_scratch_floats(&s));
    double *ry = calloc(ny, sizeof(double)), *rdx = calloc(nx, sizeof(double));
    double *rdw = calloc(nw, sizeof(double)), *rdb = calloc(OC, sizeof(double));
    assert_non_null(ry), assert_non_null(rdx), assert_non_null(rdw);
    assert_non_null(rdb);
    deft_test_fill(x, nx, 11), deft_test_fill(w, nw, 12);
    deft_test_fill(b, OC, 13), deft_test_fill(r, ny, 14);
    conv_reference(ry, rdx, rdw, rdb, x, w, b, r, B, &s);

    conv_forward(wino, y, x, w, b, B, &s, scratch);
    assert_true(max_rel_err("forward", y, ry, ny) < 1e-5);
    conv_backward(wino, dx, dw, db, r, x, w, B, &s, scratch);
    assert_true(max_rel_err("dx", dx, rdx, nx) < 1e-5);
    assert_true(max_rel_err("dw", dw, rdw, nw) < 1e-5);
    assert_true(max_rel_err("db", db, rdb, OC) < 1e-5);
    // no input gradient asked: the same dw
    float *dw2 = falloc(nw);
    conv_backward(wino, NULL, dw2, NULL, r, x, w, B, &s, scratch);
    assert_memory_equal(dw2, dw, nw * sizeof(float));
    // no bias: the reference less b
    conv_forward(wino, y, x, w, NULL, B, &s, scratch);
    const size_t plane = (size_t)s.oh * s.ow;
    for (size_t i = 0; i < ny; i++)
        ry[i] -= b[(i / plane) % OC];
    assert_true(max_rel_err("forward, no bias", y, ry, ny) < 1e-5);

    deft_free(x), deft_free(w), deft_free(b), deft_free(r), deft_free(y);
    deft_free(dx), deft_free(dw), deft_free(db), deft_free(dw2);
    deft_free(scratch);
    free(ry), free(rdx), free(rdw), free(rdb);
}

/* The Winograd F(2x2, 3x3) forward and backward against the direct sums
 * in double: even and odd output sizes (whole and partial tiles), 'same'
 * and 'valid'. */
static void check_winograd(int C, int H, int W, int OC, int pad, int B)
{
    deft_conv2d_shape_t s;
    assert_true(deft_conv2d_shape(&s, C, H, W, OC, 3, pad, 1));
    assert_true(deft_conv2d_winograd_ok(&s));
    check_direct(C, H, W, OC, 3, pad, B, 1);
    check_direct(C, H, W, OC, 3, pad, B, 0);  // and what the dispatch picks
}

/* A small output (16 pixels or fewer: vgg11bn's 3x3 and 1x1 maps) takes
 * several images per sgemm call (128 columns: 128 images of 1x1, 15 of
 * 3x3, 8 of 4x4): against the direct sums over whole groups and a partial
 * one, 'same' and 'valid', 3x3 and 1x1 kernels, and by finite
 * differences. */
static void test_conv2d_small_output(void **state)
{
    (void)state;
    check_direct(5, 1, 1, 6, 3, 1, 130, 0);  // 1x1 maps: 128 + 2
    check_direct(3, 3, 3, 4, 3, 0, 129, 0);  // 'valid' to 1x1
    check_direct(4, 1, 1, 3, 1, 0, 2, 0);    // a 1x1 kernel
    check_direct(6, 3, 3, 5, 3, 1, 31, 0);   // 3x3 maps: 15 + 15 + 1
    check_direct(4, 4, 3, 3, 3, 1, 17, 0);   // 4x3: 11 + 6
    check_conv(3, 1, 1, 4, 3, 1, 3);
    check_conv(2, 3, 3, 3, 3, 1, 17);
}

static void test_conv2d_winograd(void **state)
{
    (void)state;
    check_winograd(4, 6, 6, 5, 1, 2);     // whole tiles
    check_winograd(5, 7, 5, 3, 1, 2);     // odd: partial tiles both ways
    check_winograd(4, 8, 9, 6, 0, 2);     // 'valid', 6x7 output
    check_winograd(6, 3, 3, 4, 1, 1);     // one image, 2x2 tiles
    check_winograd(4, 2, 3, 2, 1, 2);     // 2x3: one whole tile, one half
    // a 1x1 map stays with im2col (one tile a quarter full)
    deft_conv2d_shape_t s1;
    assert_true(deft_conv2d_shape(&s1, 8, 1, 1, 8, 3, 1, 1));
    assert_false(deft_conv2d_winograd_ok(&s1));
    check_winograd(4, 5, 17, 3, 1, 2);    // 9 tiles a row: 8 + 1 (vectors)
    // preresnet20's three stages: 14, 7 and 4 tiles a row, which take
    // code specialized for those lengths
    check_winograd(16, 28, 28, 16, 1, 2);
    check_winograd(8, 14, 14, 8, 1, 2);
    check_winograd(64, 7, 7, 64, 1, 2);
    // several images per sgemm call (48 a group at 4 tiles an image, 12 at
    // 16): whole groups and a partial last one, whole and partial tiles
    check_winograd(4, 4, 4, 3, 1, 100);   // groups of 48, 48 and 4
    check_winograd(4, 3, 3, 3, 1, 50);    // 48 and 2, partial tiles
    check_winograd(5, 7, 7, 4, 1, 9);     // one partial group of 9
    // finite differences too, through the public dispatch
    check_conv(4, 5, 6, 3, 3, 1, 2);
}

/* ---- oneDNN's convs and the blocked layout ------------------------------ */

/* oneDNN has JIT convs wherever the CPU has AVX2 (nChw8c) or AVX-512
 * (nChw16c); elsewhere the models keep their own kernels, and there is
 * nothing of the engine to test. */
static int onednn_expected(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

/* A oneDNN conv (input blocked unless C is the model input's, output
 * blocked) against the direct sums in double, forward and backward, with
 * and without a bias, at batch B and then at B + 2 and B again (each a
 * new set of primitives). */
static void check_dnnl_conv(int C, int H, int W, int OC, int k, int pad,
                            int stride, int plain_src, int bias)
{
    const int blk = deft_dnnl_block();
    deft_conv2d_shape_t s;
    assert_true(deft_conv2d_shape(&s, C, H, W, OC, k, pad, stride));
    deft_dnnl_scratch_t *scratch = deft_dnnl_scratch_create();
    assert_non_null(scratch);
    deft_dnnl_conv_t *c =
        deft_dnnl_conv_create(&s, !plain_src, bias, !plain_src, 3, scratch);
    if (!c)
        fail_msg("oneDNN conv (%d, %dx%d -> %d, %dx%d, stride %d) not made",
                 C, H, W, OC, k, k, stride);
    const int batches[] = {3, 5, 3};
    for (int t = 0; t < 3; t++) {
        const int B = batches[t];
        const int HW = H * W, OHW = s.oh * s.ow;
        const size_t nx = (size_t)B * C * HW, nw = (size_t)OC * C * k * k;
        const size_t ny = (size_t)B * OC * OHW;
        float *x = falloc(nx), *w = falloc(nw), *b = falloc(OC);
        float *r = falloc(ny), *y = falloc(ny), *dx = falloc(nx);
        float *dw = falloc(nw), *db = falloc(OC);
        float *xb = falloc(nx), *rb = falloc(ny), *yb = falloc(ny);
        float *dxb = falloc(nx);
        double *ry = calloc(ny, sizeof(double));
        double *rdx = calloc(nx, sizeof(double));
        double *rdw = calloc(nw, sizeof(double));
        double *rdb = calloc(OC, sizeof(double));
        assert_non_null(ry), assert_non_null(rdx), assert_non_null(rdw);
        assert_non_null(rdb);
        deft_test_fill(x, nx, 71 + t), deft_test_fill(w, nw, 72);
        deft_test_fill(b, OC, 73), deft_test_fill(r, ny, 74 + t);
        // outputs start as NaN: a value oneDNN does not write shows
        for (size_t i = 0; i < ny; i++)
            yb[i] = NAN;
        for (size_t i = 0; i < nx; i++)
            dxb[i] = NAN;
        for (size_t i = 0; i < nw; i++)
            dw[i] = NAN;
        for (int i = 0; i < OC; i++)
            db[i] = NAN;
        if (!bias)
            memset(b, 0, OC * sizeof(float));
        conv_reference(ry, rdx, rdw, rdb, x, w, b, r, B, &s);
        if (plain_src)
            memcpy(xb, x, nx * sizeof(float));
        else
            deft_nn_to_blocked(xb, x, B, C, HW, blk);
        deft_nn_to_blocked(rb, r, B, OC, OHW, blk);

        assert_int_equal(deft_dnnl_conv_forward(c, yb, xb, w,
                                                bias ? b : NULL, B),
                         0);
        deft_nn_from_blocked(y, yb, B, OC, OHW, blk);
        assert_true(max_rel_err("onednn forward", y, ry, ny) < 1e-5);
        assert_int_equal(deft_dnnl_conv_backward(c, plain_src ? NULL : dxb, dw,
                                                 bias ? db : NULL, rb, xb, w,
                                                 B),
                         0);
        assert_true(max_rel_err("onednn dw", dw, rdw, nw) < 1e-5);
        if (bias)
            assert_true(max_rel_err("onednn db", db, rdb, OC) < 1e-5);
        if (!plain_src) {
            deft_nn_from_blocked(dx, dxb, B, C, HW, blk);
            assert_true(max_rel_err("onednn dx", dx, rdx, nx) < 1e-5);
            // no input gradient asked of a conv that can give one: the
            // same dw
            float *dw2 = falloc(nw);
            assert_int_equal(deft_dnnl_conv_backward(c, NULL, dw2,
                                                     bias ? db : NULL, rb, xb,
                                                     w, B),
                             0);
            assert_memory_equal(dw2, dw, nw * sizeof(float));
            deft_free(dw2);
        } else {  // and one made without refuses it
            assert_int_equal(deft_dnnl_conv_backward(c, dxb, dw,
                                                     bias ? db : NULL, rb, xb,
                                                     w, B),
                             -1);
        }
        deft_free(x), deft_free(w), deft_free(b), deft_free(r), deft_free(y);
        deft_free(dx), deft_free(dw), deft_free(db), deft_free(xb);
        deft_free(rb), deft_free(yb), deft_free(dxb);
        free(ry), free(rdx), free(rdw), free(rdb);
    }
    // a bias where the conv has none (and the reverse) is refused
    float z[1] = {0};
    assert_int_equal(deft_dnnl_conv_forward(c, z, z, z, bias ? NULL : z, 3),
                     -1);
    deft_dnnl_conv_destroy(c);
    deft_dnnl_scratch_destroy(scratch);
}

static void test_onednn_conv(void **state)
{
    (void)state;
    const int blk = deft_dnnl_block();
    if (!onednn_expected()) {
        print_message("no AVX2: oneDNN's JIT convs do not run here\n");
        return;
    }
    assert_true(blk == 8 || blk == 16);
    const int b2 = 2 * blk;
    check_dnnl_conv(1, 6, 7, blk, 3, 1, 1, 1, 0);     // a first layer
    check_dnnl_conv(1, 6, 6, b2, 3, 1, 1, 1, 1);      // with a bias
    check_dnnl_conv(blk, 5, 7, blk, 3, 1, 1, 0, 0);   // odd map
    check_dnnl_conv(blk, 5, 7, blk, 3, 1, 1, 0, 1);
    check_dnnl_conv(blk, 7, 7, b2, 3, 1, 2, 0, 0);    // downsampling 3x3
    check_dnnl_conv(blk, 6, 6, b2, 1, 0, 2, 0, 0);    // downsampling 1x1
    check_dnnl_conv(32, 7, 7, 32, 3, 1, 1, 0, 1);     // Winograd's rule
    check_dnnl_conv(32, 9, 6, 48, 3, 1, 1, 0, 0);     // Winograd, partial
    check_dnnl_conv(32, 3, 3, 32, 3, 1, 1, 0, 1);     // a map below a tile
    check_dnnl_conv(b2, 1, 1, b2, 3, 1, 1, 0, 1);     // 1x1 maps
    check_dnnl_conv(blk, 8, 8, blk, 3, 0, 1, 0, 0);   // 'valid'
    // what oneDNN cannot take blocked: OC not a multiple of the block;
    // and no conv without a scratchpad buffer or a batch
    deft_conv2d_shape_t s, ok;
    assert_true(deft_conv2d_shape(&s, blk, 6, 6, blk + 2, 3, 1, 1));
    assert_true(deft_conv2d_shape(&ok, blk, 6, 6, blk, 3, 1, 1));
    deft_dnnl_scratch_t *scratch = deft_dnnl_scratch_create();
    assert_non_null(scratch);
    assert_null(deft_dnnl_conv_create(&s, 1, 0, 1, 2, scratch));
    assert_null(deft_dnnl_conv_create(&ok, 1, 0, 1, 2, NULL));
    assert_null(deft_dnnl_conv_create(&ok, 1, 0, 1, 0, scratch));
    deft_dnnl_conv_t *c = deft_dnnl_conv_create(&ok, 1, 0, 1, 2, scratch);
    assert_non_null(c);
    assert_int_equal(deft_dnnl_conv_prepare(c, 7), 0);
    deft_dnnl_conv_destroy(c);
    deft_dnnl_scratch_destroy(scratch);
    deft_dnnl_scratch_destroy(NULL);
}

/* max |a - b| relative to max |b| over n; infinite for a NaN (which
 * fmax would pass over) */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double e = 0.0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        if (!(d <= e))
            e = isnan(d) ? INFINITY : d;
        scale = fmax(scale, fabs((double)b[i]));
    }
    return e / scale;
}

/* The blocked BN, GAP and pool against their plain twins on the same
 * values (in the other layout). */
static void check_blocked_layers(int B, int C, int H, int W, int blk,
                                 int far)
{
    const int HW = H * W, OHW = (H / 2) * (W / 2);
    const size_t n = (size_t)B * C * HW, no = (size_t)B * C * OHW;
    float *x = falloc(n), *xb = falloc(n), *r = falloc(n), *rb = falloc(n);
    float *y = falloc(n), *yb = falloc(n), *t = falloc(n);
    float *dx = falloc(n), *dxb = falloc(n);
    float *g = falloc(C), *be = falloc(C), *m = falloc(C), *is = falloc(C);
    float *mb = falloc(C), *isb = falloc(C), *dg = falloc(C), *dbe = falloc(C);
    float *dgb = falloc(C), *dbeb = falloc(C);
    float *rm = falloc(C), *rv = falloc(C), *rmb = falloc(C), *rvb = falloc(C);
    int32_t *am = deft_alloc(no * sizeof(int32_t));
    int32_t *amb = deft_alloc(no * sizeof(int32_t));
    int32_t *amt = deft_alloc(no * sizeof(int32_t));
    assert_non_null(am), assert_non_null(amb), assert_non_null(amt);
    deft_test_fill(x, n, 81), deft_test_fill(r, n, 82);
    deft_test_fill(g, C, 83), deft_test_fill(be, C, 84);
    for (size_t i = 0; i < n; i++)  // a mean away from 0, or far from it
        x[i] = far ? 1000.0f + 0.01f * x[i] : 3.0f + 2.0f * x[i];
    for (int c = 0; c < C; c++)
        g[c] += 1.5f, rm[c] = rmb[c] = 0.5f, rv[c] = rvb[c] = 2.0f;
    deft_nn_to_blocked(xb, x, B, C, HW, blk);
    deft_nn_to_blocked(rb, r, B, C, HW, blk);
    // the layout round trip is exact
    deft_nn_from_blocked(t, xb, B, C, HW, blk);
    assert_memory_equal(t, x, n * sizeof(float));

    // BN, training: output (with ReLU), statistics, backward
    deft_batchnorm_forward_train(y, m, is, x, g, be, B, C, HW, rm, rv, 0.1f,
                                 1);
    deft_batchnorm_forward_train_blocked(yb, mb, isb, xb, g, be, B, C, HW, rmb,
                                         rvb, 0.1f, 1, blk);
    deft_nn_from_blocked(t, yb, B, C, HW, blk);
    assert_true(rel_diff(t, y, n) < 1e-5);
    assert_true(rel_diff(mb, m, C) < 1e-6 && rel_diff(isb, is, C) < 1e-5);
    assert_true(rel_diff(rmb, rm, C) < 1e-6 && rel_diff(rvb, rv, C) < 1e-6);
    deft_batchnorm_backward(dx, dg, dbe, r, x, m, is, g, B, C, HW);
    deft_batchnorm_backward_blocked(dxb, dgb, dbeb, rb, NULL, xb, m, is, g, B,
                                    C, HW, blk);
    deft_nn_from_blocked(t, dxb, B, C, HW, blk);
    assert_true(rel_diff(t, dx, n) < 1e-5);
    assert_true(rel_diff(dgb, dg, C) < 1e-5 && rel_diff(dbeb, dbe, C) < 1e-5);
    // and with no input gradient asked, the same dgamma and dbeta
    deft_batchnorm_backward_blocked(NULL, dgb, dbeb, rb, NULL, xb, m, is, g, B,
                                    C, HW, blk);
    assert_true(rel_diff(dgb, dg, C) < 1e-5 && rel_diff(dbeb, dbe, C) < 1e-5);
    // with a ReLU's output: the same as its backward first, bitwise, and
    // dout masked in place
    float *yr = falloc(n), *r2 = falloc(n), *dx2 = falloc(n);
    deft_test_fill(yr, n, 85);
    memcpy(r2, rb, n * sizeof(float));
    deft_relu_backward(r2, yr, n);
    deft_batchnorm_backward_blocked(dx2, dgb, dbeb, r2, NULL, xb, m, is, g, B,
                                    C, HW, blk);
    float *dgr = falloc(C), *dber = falloc(C);
    deft_batchnorm_backward_blocked(dxb, dgr, dber, rb, yr, xb, m, is, g, B, C,
                                    HW, blk);
    assert_memory_equal(dxb, dx2, n * sizeof(float));
    assert_memory_equal(rb, r2, n * sizeof(float));
    assert_memory_equal(dgr, dgb, C * sizeof(float));
    assert_memory_equal(dber, dbeb, C * sizeof(float));
    deft_free(yr), deft_free(r2), deft_free(dx2), deft_free(dgr);
    deft_free(dber);
    // BN, evaluation
    deft_batchnorm_forward_eval(y, x, g, be, rm, rv, B, C, HW, 0);
    deft_batchnorm_forward_eval_blocked(yb, xb, g, be, rm, rv, B, C, HW, 0,
                                        blk);
    deft_nn_from_blocked(t, yb, B, C, HW, blk);
    assert_true(rel_diff(t, y, n) < 1e-6);

    // GAP: plain (B, C) output either way
    float *o = falloc((size_t)B * C), *ob = falloc((size_t)B * C);
    deft_gap_forward(o, x, B, C, HW);
    deft_gap_forward_blocked(ob, xb, B, C, HW, blk);
    assert_true(rel_diff(ob, o, (size_t)B * C) < 1e-6);
    deft_gap_backward(dx, r, B, C, HW);
    deft_gap_backward_blocked(dxb, r, B, C, HW, blk);
    deft_nn_from_blocked(t, dxb, B, C, HW, blk);
    assert_memory_equal(t, dx, n * sizeof(float));

    // 2x2 max-pool: the same maxima and argmax, the same scattered gradient
    if (OHW > 0) {
        deft_maxpool2_forward(y, am, x, B, C, H, W);
        deft_maxpool2_forward_blocked(yb, amb, xb, B, C, H, W, blk);
        deft_nn_from_blocked(t, yb, B, C, OHW, blk);
        assert_memory_equal(t, y, no * sizeof(float));
        // argmax is per value: blocked -> plain order as floats would be
        for (int i = 0; i < B; i++)
            for (int c = 0; c < C; c++)
                for (int p = 0; p < OHW; p++)
                    amt[((size_t)i * C + c) * OHW + p] =
                        amb[(((size_t)i * (C / blk) + c / blk) * OHW + p) *
                                blk + c % blk];
        assert_memory_equal(amt, am, no * sizeof(int32_t));
        deft_maxpool2_backward(dx, r, am, B, C, H, W);
        deft_maxpool2_backward_blocked(dxb, rb, amb, B, C, H, W, blk);
        deft_nn_from_blocked(t, dxb, B, C, HW, blk);
        // r (B, C, OH, OW) read as pooled gradients: the same values in the
        // blocked layout of the pooled shape
        float *rp = falloc(no);
        deft_nn_to_blocked(rp, r, B, C, OHW, blk);
        deft_maxpool2_backward_blocked(dxb, rp, amb, B, C, H, W, blk);
        deft_nn_from_blocked(t, dxb, B, C, HW, blk);
        assert_memory_equal(t, dx, n * sizeof(float));
        deft_free(rp);
    }
    deft_free(x), deft_free(xb), deft_free(r), deft_free(rb), deft_free(y);
    deft_free(yb), deft_free(t), deft_free(dx), deft_free(dxb), deft_free(g);
    deft_free(be), deft_free(m), deft_free(is), deft_free(mb), deft_free(isb);
    deft_free(dg), deft_free(dbe), deft_free(dgb), deft_free(dbeb);
    deft_free(rm), deft_free(rv), deft_free(rmb), deft_free(rvb);
    deft_free(am), deft_free(amb), deft_free(amt), deft_free(o), deft_free(ob);
}

static void test_blocked_layers(void **state)
{
    (void)state;
    for (int blk = 8; blk <= 16; blk += 8) {
        check_blocked_layers(3, blk, 5, 7, blk, 0);    // odd map: pool drops
        check_blocked_layers(2, 2 * blk, 4, 4, blk, 0);
        check_blocked_layers(5, blk, 1, 1, blk, 0);    // 1x1: no pool
        check_blocked_layers(2, blk, 40, 3, blk, 0);   // runs 32+32+32+24
        // values 1000 +- 0.01: the one-pass variance stays exact (it
        // sums about each channel's first value)
        check_blocked_layers(3, blk, 6, 5, blk, 1);
    }
}

/* The sparse backward equals the dense one on the scattered gradient, with
 * and without an input gradient, for pooled outputs with odd sizes. */
static void check_conv_sparse(int C, int H, int W, int OC, int k, int pad,
                              int B)
{
    deft_conv2d_shape_t s;
    assert_true(deft_conv2d_shape(&s, C, H, W, OC, k, pad, 1));
    const int PH = s.oh / 2, PW = s.ow / 2, Q = PH * PW, P = s.oh * s.ow;
    const size_t nx = (size_t)B * C * H * W, nw = (size_t)OC * C * k * k;
    const size_t ny = (size_t)B * OC * P, nq = (size_t)B * OC * Q;
    float *x = falloc(nx), *w = falloc(nw), *y = falloc(ny);
    float *pooled = falloc(nq), *g = falloc(nq), *dense_dout = falloc(ny);
    int32_t *idx = deft_alloc(nq * sizeof(int32_t));
    assert_non_null(idx);
    float *scratch = falloc(2 * deft_conv2d_scratch_floats(&s));
    float *dx0 = falloc(nx), *dw0 = falloc(nw), *db0 = falloc(OC);
    float *dx1 = falloc(nx), *dw1 = falloc(nw), *db1 = falloc(OC);
    deft_test_fill(x, nx, 11);
    deft_test_fill(w, nw, 12);
    deft_test_fill(y, ny, 13);
    deft_test_fill(g, nq, 14);
    for (size_t i = 0; i < nq; i += 3)
        g[i] = 0.0f;  // zeros, as a ReLU makes, are skipped
    deft_maxpool2_forward(pooled, idx, y, B, OC, s.oh, s.ow);
    deft_maxpool2_backward(dense_dout, g, idx, B, OC, s.oh, s.ow);

    deft_conv2d_backward(dx0, dw0, db0, dense_dout, x, w, B, &s, scratch);
    deft_conv2d_backward_sparse(dx1, dw1, db1, g, idx, Q, x, w, B, &s,
                                scratch);
    assert_true(deft_test_max_rel_diff(dw1, dw0, nw, 1e-2) < 1e-4);
    assert_true(deft_test_max_rel_diff(db1, db0, OC, 1e-2) < 1e-4);
    assert_true(deft_test_max_rel_diff(dx1, dx0, nx, 1e-2) < 1e-4);
    memset(dw1, 0, nw * sizeof(float));
    deft_conv2d_backward_sparse(NULL, dw1, db1, g, idx, Q, x, w, B, &s,
                                scratch);
    assert_true(deft_test_max_rel_diff(dw1, dw0, nw, 1e-2) < 1e-4);

    deft_free(x), deft_free(w), deft_free(y), deft_free(pooled), deft_free(g);
    deft_free(dense_dout), deft_free(idx), deft_free(scratch);
    deft_free(dx0), deft_free(dw0), deft_free(db0);
    deft_free(dx1), deft_free(dw1), deft_free(db1);
}

static void test_conv2d_sparse_backward(void **state)
{
    (void)state;
    check_conv_sparse(1, 12, 12, 6, 5, 2, 3);  // lenet conv1 (scaled down)
    check_conv_sparse(6, 9, 9, 16, 5, 0, 2);   // odd output: 5x5 -> 2x2
    check_conv_sparse(4, 7, 8, 5, 3, 1, 2);    // vgg-style, odd height
    check_conv_sparse(2, 10, 9, 3, 7, 3, 2);   // 7x7: window rows of 7
    check_conv_sparse(3, 6, 6, 4, 1, 0, 2);    // 1x1
}

typedef struct {
    int B, C, OC;
    float *x, *w, *b, *out, *r;
} dense_ctx_t;

static double dense_objective(void *p)
{
    dense_ctx_t *c = p;
    deft_dense_forward(c->out, c->x, c->w, c->b, c->B, c->C, c->OC);
    return dot(c->r, c->out, (size_t)c->B * c->OC);
}

static void test_dense_gradients(void **state)
{
    (void)state;
    dense_ctx_t c = {3, 7, 5, NULL, NULL, NULL, NULL, NULL};
    const size_t nx = 21, nw = 35, ny = 15;
    c.x = falloc(nx), c.w = falloc(nw), c.b = falloc(5);
    c.out = falloc(ny), c.r = falloc(ny);
    float *dx = falloc(nx), *dw = falloc(nw), *db = falloc(5);
    deft_test_fill(c.x, nx, 21);
    deft_test_fill(c.w, nw, 22);
    deft_test_fill(c.b, 5, 23);
    deft_test_fill(c.r, ny, 24);
    deft_dense_backward(dx, dw, db, c.r, c.x, c.w, c.B, c.C, c.OC);
    check_all(dense_objective, &c, c.w, dw, nw, 0.25f, 1e-3, 1e-3);
    check_all(dense_objective, &c, c.b, db, 5, 0.25f, 1e-3, 1e-3);
    check_all(dense_objective, &c, c.x, dx, nx, 0.25f, 1e-3, 1e-3);
    // without dinp the weight gradients are the same
    float *dw2 = falloc(nw), *db2 = falloc(5);
    deft_dense_backward(NULL, dw2, db2, c.r, c.x, c.w, c.B, c.C, c.OC);
    assert_memory_equal(dw, dw2, nw * sizeof(float));
    assert_memory_equal(db, db2, 5 * sizeof(float));
    deft_free(dw2), deft_free(db2);
    deft_free(c.x), deft_free(c.w), deft_free(c.b), deft_free(c.out);
    deft_free(c.r), deft_free(dx), deft_free(dw), deft_free(db);
}

/* Max-pool and ReLU are piecewise linear; the inputs are spaced so that no
 * step of size h crosses a kink (a tie in a window, or zero). */
typedef struct {
    int B, C, H, W;
    float *x, *out, *r;
    int32_t *am;
} pool_ctx_t;

static double pool_objective(void *p)
{
    pool_ctx_t *c = p;
    deft_maxpool2_forward(c->out, c->am, c->x, c->B, c->C, c->H, c->W);
    return dot(c->r, c->out, (size_t)c->B * c->C * (c->H / 2) * (c->W / 2));
}

static void test_maxpool_gradients(void **state)
{
    (void)state;
    pool_ctx_t c = {2, 3, 5, 6, NULL, NULL, NULL, NULL};  // odd H: row dropped
    const size_t nx = 2 * 3 * 5 * 6, ny = 2 * 3 * 2 * 3;
    c.x = falloc(nx), c.out = falloc(ny), c.r = falloc(ny);
    c.am = deft_alloc(ny * sizeof(int32_t));
    assert_non_null(c.am);
    // a random permutation of multiples of 0.1: distinct, 0.1 apart
    for (size_t i = 0; i < nx; i++)
        c.x[i] = 0.1f * (float)i - 5.0f;
    deft_rng_t rng = deft_rng_make(31, 0, 0, DEFT_STREAM_TEST);
    for (size_t i = nx - 1; i > 0; i--) {
        size_t j = deft_rng_below(&rng, i + 1);
        float t = c.x[i];
        c.x[i] = c.x[j], c.x[j] = t;
    }
    deft_test_fill(c.r, ny, 32);
    float *dx = falloc(nx);
    pool_objective(&c);
    deft_maxpool2_backward(dx, c.r, c.am, c.B, c.C, c.H, c.W);
    check_all(pool_objective, &c, c.x, dx, nx, 0.01f, 1e-3, 1e-4);

    // ties: the first maximum in row-major window order wins
    float tie[4] = {1.0f, 3.0f, 3.0f, 3.0f}, o;
    int32_t a;
    deft_maxpool2_forward(&o, &a, tie, 1, 1, 2, 2);
    assert_true(o == 3.0f && a == 1);
    deft_free(c.x), deft_free(c.out), deft_free(c.r), deft_free(c.am);
    deft_free(dx);
}

typedef struct {
    size_t n;
    float *x, *y, *r;
} relu_ctx_t;

static double relu_objective(void *p)
{
    relu_ctx_t *c = p;
    memcpy(c->y, c->x, c->n * sizeof(float));
    deft_relu_forward(c->y, c->n);
    return dot(c->r, c->y, c->n);
}

static void test_relu_gradients(void **state)
{
    (void)state;
    relu_ctx_t c = {37, NULL, NULL, NULL};
    c.x = falloc(c.n), c.y = falloc(c.n), c.r = falloc(c.n);
    float *dx = falloc(c.n);
    for (size_t i = 0; i < c.n; i++)  // away from 0 by more than the step
        c.x[i] = (i % 2 ? 1.0f : -1.0f) * (0.05f + 0.01f * (float)i);
    deft_test_fill(c.r, c.n, 41);
    relu_objective(&c);
    memcpy(dx, c.r, c.n * sizeof(float));
    deft_relu_backward(dx, c.y, c.n);
    check_all(relu_objective, &c, c.x, dx, c.n, 0.01f, 1e-3, 1e-4);
    deft_free(c.x), deft_free(c.y), deft_free(c.r), deft_free(dx);
}

/* Batch norm in training mode is smooth in x, gamma and beta (no kinks
 * without the ReLU), so central differences check all three. */
typedef struct {
    int B, C, HW;
    float *x, *gamma, *beta, *out, *r, *mean, *invstd;
} bn_ctx_t;

static double bn_objective(void *p)
{
    bn_ctx_t *c = p;
    deft_batchnorm_forward_train(c->out, c->mean, c->invstd, c->x, c->gamma,
                                 c->beta, c->B, c->C, c->HW, NULL, NULL, 0.0f,
                                 0);
    return dot(c->r, c->out, (size_t)c->B * c->C * c->HW);
}

static void check_bn(int B, int C, int HW)
{
    bn_ctx_t c = {B, C, HW, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    const size_t n = (size_t)B * C * HW;
    c.x = falloc(n), c.out = falloc(n), c.r = falloc(n);
    c.gamma = falloc(C), c.beta = falloc(C), c.mean = falloc(C);
    c.invstd = falloc(C);
    float *dx = falloc(n), *dg = falloc(C), *db = falloc(C);
    deft_test_fill(c.x, n, 51);
    deft_test_fill(c.gamma, C, 52);
    deft_test_fill(c.beta, C, 53);
    deft_test_fill(c.r, n, 54);
    for (int k = 0; k < C; k++)
        c.gamma[k] += 1.5f;  // away from 0, as a trained gamma
    bn_objective(&c);
    deft_batchnorm_backward(dx, dg, db, c.r, c.x, c.mean, c.invstd, c.gamma,
                            B, C, HW);
    check_all(bn_objective, &c, c.gamma, dg, C, 1e-2f, 1e-3, 1e-3);
    check_all(bn_objective, &c, c.beta, db, C, 1e-2f, 1e-3, 1e-3);
    check_all(bn_objective, &c, c.x, dx, n, 1e-2f, 1e-2, 2e-3);
    // in place (dinp == dout) gives the same input gradient
    float *dx2 = falloc(n);
    memcpy(dx2, c.r, n * sizeof(float));
    bn_objective(&c);
    deft_batchnorm_backward(dx2, dg, db, dx2, c.x, c.mean, c.invstd, c.gamma,
                            B, C, HW);
    assert_memory_equal(dx, dx2, n * sizeof(float));

    // running statistics: r = 0.9 r + 0.1 stat, the variance unbiased;
    // evaluation mode normalizes with them
    float *rm = falloc(C), *rv = falloc(C), *ev = falloc(n);
    for (int k = 0; k < C; k++)
        rm[k] = 0.5f, rv[k] = 2.0f;
    deft_batchnorm_forward_train(c.out, c.mean, c.invstd, c.x, c.gamma, c.beta,
                                 B, C, HW, rm, rv, 0.1f, 0);
    const double m = (double)B * HW;
    for (int k = 0; k < C; k++) {
        double s1 = 0, s2 = 0;
        for (int i = 0; i < B; i++)
            for (int j = 0; j < HW; j++) {
                const double v = c.x[((size_t)i * C + k) * HW + j];
                s1 += v, s2 += v * v;
            }
        const double mean = s1 / m, var = s2 / m - mean * mean;
        assert_close(rm[k], 0.9 * 0.5 + 0.1 * mean, 1e-5, 1e-6);
        assert_close(rv[k], 0.9 * 2.0 + 0.1 * var * m / (m - 1), 1e-5, 1e-6);
        assert_close(c.mean[k], mean, 1e-5, 1e-6);
        assert_close(c.invstd[k], 1.0 / sqrt(var + 1e-5), 1e-4, 0);
    }
    deft_batchnorm_forward_eval(ev, c.x, c.gamma, c.beta, rm, rv, B, C, HW, 1);
    for (size_t i = 0; i < n; i++) {
        const int k = (int)(i / HW % C);
        double want = c.gamma[k] * (c.x[i] - rm[k]) / sqrt(rv[k] + 1e-5) +
                      c.beta[k];
        assert_close(ev[i], want > 0 ? want : 0.0, 1e-5, 1e-5);
    }
    deft_free(c.x), deft_free(c.out), deft_free(c.r), deft_free(c.gamma);
    deft_free(c.beta), deft_free(c.mean), deft_free(c.invstd);
    deft_free(dx), deft_free(dg), deft_free(db), deft_free(dx2);
    deft_free(rm), deft_free(rv), deft_free(ev);
}

static void test_batchnorm_gradients(void **state)
{
    (void)state;
    check_bn(6, 4, 1);      // 1-d: (B, C) features
    check_bn(3, 2, 5 * 4);  // 2-d: (B, C, 5, 4)
    check_bn(2, 3, 1);      // the smallest batch with an unbiased variance
}

typedef struct {
    int B, C, HW;
    float *x, *out, *r;
} gap_ctx_t;

static double gap_objective(void *p)
{
    gap_ctx_t *c = p;
    deft_gap_forward(c->out, c->x, c->B, c->C, c->HW);
    return dot(c->r, c->out, (size_t)c->B * c->C);
}

static void test_gap_and_add(void **state)
{
    (void)state;
    gap_ctx_t c = {2, 3, 7 * 5, NULL, NULL, NULL};
    const size_t nx = 2 * 3 * 35, ny = 6;
    c.x = falloc(nx), c.out = falloc(ny), c.r = falloc(ny);
    float *dx = falloc(nx);
    deft_test_fill(c.x, nx, 61);
    deft_test_fill(c.r, ny, 62);
    gap_objective(&c);
    double want = 0;
    for (int j = 0; j < 35; j++)
        want += c.x[35 + j];
    assert_close(c.out[1], want / 35, 1e-6, 1e-7);
    deft_gap_backward(dx, c.r, c.B, c.C, c.HW);
    check_all(gap_objective, &c, c.x, dx, nx, 0.25f, 1e-3, 1e-4);

    float a[5] = {1, 2, 3, 4, 5}, b[5] = {0.5f, -2, 0, 1e-3f, 7}, o[5];
    deft_add_forward(o, a, b, 5);
    for (int i = 0; i < 5; i++)
        assert_true(o[i] == a[i] + b[i]);
    deft_add_inplace(a, b, 5);
    assert_memory_equal(a, o, sizeof o);
    deft_free(c.x), deft_free(c.out), deft_free(c.r), deft_free(dx);
}

typedef struct {
    int B, N;
    float *z;
    int32_t *y;
} xent_ctx_t;

static double xent_objective(void *p)
{
    xent_ctx_t *c = p;
    double s = 0.0;
    deft_softmax_xent(NULL, &s, NULL, c->z, c->y, c->B, c->N, 1.0f);
    return s / c->B;
}

static void test_softmax_xent(void **state)
{
    (void)state;
    xent_ctx_t c = {4, 7, NULL, NULL};
    int32_t y[4] = {0, 6, 3, 3};
    c.y = y;
    c.z = falloc(28);
    float *dz = falloc(28);
    deft_test_fill(c.z, 28, 51);
    for (int i = 0; i < 28; i++)
        c.z[i] *= 3.0f;
    double s = 0.0;
    int hits = 0;
    deft_softmax_xent(dz, &s, &hits, c.z, c.y, c.B, c.N, 1.0f / c.B);
    check_all(xent_objective, &c, c.z, dz, 28, 1e-2f, 2e-3, 2e-5);

    // the loss of each row is logsumexp(z) - z[y], in double
    double want = 0.0;
    int want_hits = 0;
    for (int i = 0; i < c.B; i++) {
        const float *z = c.z + i * c.N;
        double m = z[0], se = 0.0;
        int am = 0;
        for (int j = 1; j < c.N; j++)
            if (z[j] > m)
                m = z[j], am = j;
        for (int j = 0; j < c.N; j++)
            se += exp(z[j] - m);
        want += m + log(se) - z[y[i]];
        want_hits += am == y[i];
    }
    assert_close(s, want, 1e-6, 0);
    assert_int_equal(hits, want_hits);

    // huge logits stay finite: the max is subtracted before exp
    float big[3] = {1e30f, -1e30f, 80.0f}, dbig[3];
    int32_t y1 = 2;
    s = 0.0;
    deft_softmax_xent(dbig, &s, NULL, big, &y1, 1, 3, 1.0f);
    assert_true(isfinite(s) && s > 1e29);
    assert_close(dbig[0], 1.0, 0, 1e-6);
    assert_close(dbig[2], -1.0, 0, 1e-6);
    deft_free(c.z), deft_free(dz);
}

/* ------------------------------------------------------------------------ */
/* Model checks                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    deft_model_t *m;
    float *params, *x, *scratch_grad;
    int32_t *y;
    int B;
} model_ctx_t;

/* The training loss: for models with BN it depends on the batch's
 * statistics, so it is loss_grad's (whose running-statistics update does
 * not change the loss); for the others evaluate's, which is the same
 * forward without the backward. */
static double model_objective(void *p)
{
    model_ctx_t *c = p;
    double s;
    int hits;
    if (deft_model_num_buffers(c->m)) {
        assert_status(deft_model_loss_grad(c->m, c->params, c->x, c->y, c->B,
                                           c->scratch_grad, &s, &hits),
                      DEFT_OK);
        return s;
    }
    assert_status(deft_model_evaluate(c->m, c->params, c->x, c->y, c->B, &s,
                                      &hits),
                  DEFT_OK);
    return s / c->B;
}

/* Central difference of the mean loss at params[i], or NAN when a step
 * changes the model's piecewise-linear pattern (a ReLU sign or a pool
 * argmax): across such a kink a difference says nothing about the
 * derivative. */
static double model_diff(model_ctx_t *c, size_t i, float h, uint64_t base)
{
    const float v0 = c->params[i], up = v0 + h, dn = v0 - h;
    c->params[i] = up;
    const double fu = model_objective(c);
    const uint64_t hu = deft_model_pattern_hash(c->m, c->B);
    c->params[i] = dn;
    const double fd = model_objective(c);
    const uint64_t hd = deft_model_pattern_hash(c->m, c->B);
    c->params[i] = v0;
    if (hu != base || hd != base)
        return NAN;
    return (fu - fd) / ((double)up - (double)dn);
}

/* Checks n_per_tensor random coordinates of every tensor (all of a small
 * tensor) against central differences, skipping the coordinates where
 * every step tried crosses a kink. When strict, half of all coordinates
 * and some of every tensor must be checked; otherwise (large inputs, where
 * a conv weight moves thousands of units and kinks are common) a third. */
/* When set, check_model runs the model on deft's own conv kernels rather
 * than the engine it picks (oneDNN's, for the BN models). */
static int g_own_kernels;

static void check_model(deft_model_kind_t kind, int C, int H, int W,
                        int n_classes, int B, int n_per_tensor, float h,
                        int strict)
{
    int total_checked = 0, total_skipped = 0;
    model_ctx_t c;
    c.B = B;
    assert_status(deft_model_create(&c.m, kind, C, H, W, n_classes, B + 2),
                  DEFT_OK);
    if (g_own_kernels)
        deft_model_set_convs(c.m, DEFT_CONVS_OWN);
    print_message("%s on %s\n", deft_model_name(kind),
                  deft_model_onednn(c.m) ? "oneDNN's convs" : "deft's kernels");
    const size_t P = deft_model_num_params(c.m), nx = (size_t)B * C * H * W;
    const deft_layout_t *lay = deft_model_layout(c.m);
    c.params = falloc(P), c.x = falloc(nx);
    c.y = deft_alloc((size_t)B * sizeof(int32_t));
    assert_non_null(c.y);
    float *grad = falloc(P);
    c.scratch_grad = falloc(P);
    deft_model_init_params(c.m, c.params, 7, DEFT_INIT_TORCH);
    // pixels in [0, 1): no exact zeros, so no ties in a pool window that
    // every step would break
    deft_rng_t rng = deft_rng_make(9, 0, 0, DEFT_STREAM_TEST);
    for (size_t i = 0; i < nx; i++)
        c.x[i] = deft_rng_uniform(&rng);
    for (int i = 0; i < B; i++)
        c.y[i] = (int32_t)deft_rng_below(&rng, (uint64_t)n_classes);
    // vectors (biases, BN's gamma and beta) moved off their initial
    // values, so that their gradients and effects are generic
    size_t off = 0;
    for (size_t t = 0; t < lay->n_tensors; t++) {
        if (lay->rows[t] == 0)
            for (size_t i = 0; i < lay->sizes[t]; i++)
                c.params[off + i] += 0.05f * (2.0f * deft_rng_uniform(&rng) - 1.0f);
        off += lay->sizes[t];
    }

    double loss;
    assert_status(deft_model_loss_grad(c.m, c.params, c.x, c.y, B, grad, &loss,
                                       NULL),
                  DEFT_OK);
    assert_close(loss, model_objective(&c), 1e-6, 0);
    const uint64_t base = deft_model_pattern_hash(c.m, B);

    off = 0;
    for (size_t t = 0; t < lay->n_tensors; t++) {
        int checked = 0, skipped = 0;
        const size_t n = lay->sizes[t];
        const int all = (size_t)n_per_tensor >= n;
        const int picks = all ? (int)n : n_per_tensor;
        for (int j = 0; j < picks; j++) {
            const size_t i = off + (all ? (size_t)j : deft_rng_below(&rng, n));
            // the largest of h, h/4, ..., h/64 whose steps cross no kink; the
            // absolute tolerance is the rounding noise of the float loss
            // over the step (up to ~15 ulps of the loss was measured)
            double d = NAN;
            float hh = h;
            for (; hh >= h / 64; hh /= 4)
                if (!isnan(d = model_diff(&c, i, hh, base)))
                    break;
            const double atol = 16 * FLT_EPSILON * fmax(loss, 1.0) / hh;
            if (isnan(d)) {
                skipped++;
                continue;
            }
            checked++;
            const double g = grad[i];
            if (fabs(g - d) > 1e-2 * fmax(fabs(g), fabs(d)) + atol) {
                print_error("%s: tensor %zu, coordinate %zu\n",
                            deft_model_name(kind), t, i - off);
                assert_close(g, d, 1e-2, atol);
            }
        }
        off += n;
        if (strict && checked == 0)
            fail_msg("%s: tensor %zu: all %d coordinates skipped as kinks",
                     deft_model_name(kind), t, skipped);
        total_checked += checked, total_skipped += skipped;
    }
    print_message("%s: %d checked, %d skipped\n", deft_model_name(kind), total_checked, total_skipped);
    if (total_skipped > (strict ? 1 : 2) * total_checked)
        fail_msg("%s: %d coordinates skipped as kinks, only %d checked",
                 deft_model_name(kind), total_skipped, total_checked);

    deft_free(c.params), deft_free(c.x), deft_free(c.y), deft_free(grad);
    deft_free(c.scratch_grad);
    deft_model_destroy(c.m);
}

static void test_logreg_gradient(void **state)
{
    (void)state;
    check_model(DEFT_MODEL_LOGREG, 1, 6, 5, 4, 3, 40, 1e-2f, 1);
}

static void test_mlp_gradient(void **state)
{
    (void)state;
    check_model(DEFT_MODEL_MLP, 1, 28, 28, 10, 3, 12, 1e-2f, 1);
}

static void test_lenet_gradient(void **state)
{
    (void)state;
    check_model(DEFT_MODEL_LENET, 1, 28, 28, 10, 2, 12, 1e-2f, 0);
    check_model(DEFT_MODEL_LENET, 2, 13, 15, 3, 2, 12, 1e-2f, 1);  // odd sizes
}

static void test_vgg_gradient(void **state)
{
    (void)state;
    check_model(DEFT_MODEL_VGG, 1, 28, 28, 10, 1, 6, 1e-2f, 0);
    // small and odd: 5x6 -> pool 2x3 -> pool 1x1, dropping a column
    check_model(DEFT_MODEL_VGG, 3, 5, 6, 5, 1, 16, 1e-2f, 1);
}

static void test_preresnet20_gradient(void **state)
{
    (void)state;
    // 6x6 -> 3x3 -> 2x2 stages: every layer kind (stride-2 and 1x1 convs,
    // BN, residual adds, global average) at a size central differences
    // can afford; then odd sizes with two channels. Not strict: the first
    // conv feeds the residual stream of the whole network, so any step in
    // its weights moves every ReLU after it and usually flips one (all
    // its picks are skipped). scripts/torch_nn_check.py compares every
    // coordinate of the gradient with PyTorch's instead.
    // Both engines: oneDNN's convs (blocked layout) and deft's own.
    for (g_own_kernels = 0; g_own_kernels < 2; g_own_kernels++) {
        check_model(DEFT_MODEL_PRERESNET20, 1, 6, 6, 10, 2, 4, 1e-2f, 0);
        check_model(DEFT_MODEL_PRERESNET20, 2, 7, 9, 4, 2, 6, 1e-2f, 0);
    }
    g_own_kernels = 0;
}

static void test_vgg11bn_gradient(void **state)
{
    (void)state;
    for (g_own_kernels = 0; g_own_kernels < 2; g_own_kernels++)
        check_model(DEFT_MODEL_VGG11BN, 1, 16, 16, 10, 3, 4, 1e-2f, 0);
    g_own_kernels = 0;
}

/* The same model on oneDNN's convs and on deft's kernels: the same
 * function up to float rounding (loss, every gradient, the BN running
 * statistics, evaluation logits); each engine bitwise repeatable. */
static void check_engines(deft_model_kind_t kind, int H, int W, int B)
{
    deft_model_t *m;
    assert_status(deft_model_create(&m, kind, 1, H, W, 10, B), DEFT_OK);
    if (!onednn_expected()) {
        assert_int_equal(deft_model_onednn(m), 0);
        deft_model_destroy(m);
        return;
    }
    assert_int_equal(deft_model_onednn(m), deft_dnnl_block());
    const size_t P = deft_model_num_params(m), NB = deft_model_num_buffers(m);
    const size_t nx = (size_t)B * H * W;
    float *params = falloc(P), *x = falloc(nx), *g[3], *buf[3], *logits[3];
    int32_t *y = deft_alloc((size_t)B * sizeof(int32_t));
    assert_non_null(y);
    deft_model_init_params(m, params, 5, DEFT_INIT_TORCH);
    deft_test_fill(x, nx, 91);
    for (int i = 0; i < B; i++)
        y[i] = i % 10;
    double loss[3];
    // runs 0 and 1 on oneDNN, run 2 on deft's kernels
    for (int run = 0; run < 3; run++) {
        if (run == 2) {
            deft_model_set_convs(m, DEFT_CONVS_OWN);
            assert_int_equal(deft_model_onednn(m), 0);
        }
        g[run] = falloc(P), buf[run] = falloc(NB), logits[run] = falloc(B * 10);
        deft_model_reset_buffers(m);
        assert_status(deft_model_loss_grad(m, params, x, y, B, g[run],
                                           &loss[run], NULL),
                      DEFT_OK);
        memcpy(buf[run], deft_model_buffers(m), NB * sizeof(float));
        double sum;
        int hits;
        assert_status(deft_model_evaluate(m, params, x, y, B, &sum, &hits),
                      DEFT_OK);
        memcpy(logits[run], deft_model_logits(m), (size_t)B * 10 * sizeof(float));
    }
    assert_memory_equal(g[0], g[1], P * sizeof(float));
    assert_memory_equal(buf[0], buf[1], NB * sizeof(float));
    assert_close(loss[0], loss[2], 1e-5, 0);
    // per tensor, relative to its largest entry; a conv bias before a BN
    // has gradient 0 exactly, and rounding noise on either side: relative
    // to the whole gradient's largest entry there
    const deft_layout_t *lay = deft_model_layout(m);
    double gmax = 0.0;
    for (size_t i = 0; i < P; i++)
        gmax = fmax(gmax, fabs(g[2][i]));
    size_t off = 0;
    for (size_t t = 0; t < lay->n_tensors; t++) {
        double e = 0.0, tmax = 0.0;
        for (size_t i = off; i < off + lay->sizes[t]; i++) {
            e = fmax(e, fabs((double)g[0][i] - g[2][i]));
            tmax = fmax(tmax, fabs(g[2][i]));
        }
        if (e > 2e-3 * tmax + 1e-5 * gmax)
            fail_msg("%s: tensor %zu: oneDNN and deft's gradients differ by "
                     "%g (largest entry %g of the tensor, %g of all)",
                     deft_model_name(kind), t, e, tmax, gmax);
        off += lay->sizes[t];
    }
    assert_true(rel_diff(buf[0], buf[2], NB) < 1e-5);
    assert_true(rel_diff(logits[0], logits[2], (size_t)B * 10) < 1e-4);
    // back to oneDNN: the first run's numbers again
    deft_model_set_convs(m, DEFT_CONVS_AUTO);
    deft_model_reset_buffers(m);
    assert_status(deft_model_loss_grad(m, params, x, y, B, g[2], &loss[2],
                                       NULL),
                  DEFT_OK);
    assert_memory_equal(g[2], g[0], P * sizeof(float));
    for (int run = 0; run < 3; run++)
        deft_free(g[run]), deft_free(buf[run]), deft_free(logits[run]);
    deft_free(params), deft_free(x), deft_free(y);
    deft_model_destroy(m);
}

static void test_model_engines(void **state)
{
    (void)state;
    check_engines(DEFT_MODEL_PRERESNET20, 12, 12, 6);
    check_engines(DEFT_MODEL_VGG11BN, 16, 16, 4);
    // models whose convs oneDNN cannot take blocked keep deft's kernels
    const deft_model_kind_t own[] = {DEFT_MODEL_LENET, DEFT_MODEL_VGG,
                                     DEFT_MODEL_MLP};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        deft_model_t *m;
        assert_status(deft_model_create(&m, own[i], 1, 28, 28, 10, 2),
                      DEFT_OK);
        assert_int_equal(deft_model_onednn(m), 0);
        deft_model_set_convs(m, DEFT_CONVS_AUTO);
        assert_int_equal(deft_model_onednn(m), 0);
        deft_model_destroy(m);
    }
    deft_model_set_convs(NULL, DEFT_CONVS_AUTO);
    assert_int_equal(deft_model_onednn(NULL), 0);
}

/* ------------------------------------------------------------------------ */

static void test_param_counts_and_layout(void **state)
{
    (void)state;
    const struct {
        deft_model_kind_t kind;
        size_t want;
        size_t n_tensors;
    } cases[] = {
        {DEFT_MODEL_LOGREG, 784 * 10 + 10, 2},
        {DEFT_MODEL_MLP, 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10, 6},
        // conv 150+6, conv 2400+16, fc 48000+120, 10080+84, 840+10
        {DEFT_MODEL_LENET, 61706, 10},
        // conv 288+32, 9216+32, 18432+64, 36864+64, fc 802816+256, 2560+10
        {DEFT_MODEL_VGG, 870634, 12},
        // conv 144; stage 1: 6 convs of 2304 and 6 BN of 2x16; stage 2:
        // 4608 + 5 x 9216 + 1x1 512, BN 16 + 5 x 32 (x2); stage 3: 18432 +
        // 5 x 36864 + 2048, BN 32 + 5 x 64 (x2); final BN 2x64; fc 650
        {DEFT_MODEL_PRERESNET20,
         144 + 6 * 2304 + 6 * 32 + 4608 + 5 * 9216 + 512 + 2 * (16 + 5 * 32) +
             18432 + 5 * 36864 + 2048 + 2 * (32 + 5 * 64) + 128 + 650,
         61},
        // convs (with bias) 320, 18496, 73856, 147584, 295168, 590080 x 3;
        // BN 2 x (32 + 64 + 128 + 128 + 256 x 4); fc 65792 x 2 + 2570
        {DEFT_MODEL_VGG11BN,
         320 + 18496 + 73856 + 147584 + 295168 + 3 * 590080 +
             2 * (32 + 64 + 128 + 128 + 4 * 256) + 2 * 65792 + 2570,
         38},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        deft_model_t *m;
        assert_status(deft_model_create(&m, cases[k].kind, 1, 28, 28, 10, 4),
                      DEFT_OK);
        const size_t P = deft_model_num_params(m);
        assert_int_equal(P, cases[k].want);
        const deft_layout_t *lay = deft_model_layout(m);
        assert_int_equal(lay->n_tensors, cases[k].n_tensors);
        size_t sum = 0;
        for (size_t t = 0; t < lay->n_tensors; t++)
            sum += lay->sizes[t];
        assert_int_equal(sum, P);
        deft_model_destroy(m);
    }
    // lenet's first fc layer sees 16 * 5 * 5 = 400 features on 28x28,
    // and 16 * 1 * 1 on 12x12 (the smallest input it takes)
    deft_model_t *m;
    assert_status(deft_model_create(&m, DEFT_MODEL_LENET, 1, 12, 12, 10, 1),
                  DEFT_OK);
    assert_int_equal(deft_model_layout(m)->sizes[4], 120 * 16);
    deft_model_destroy(m);
    assert_true(deft_model_layout(NULL) == NULL);
    assert_int_equal(deft_model_num_params(NULL), 0);
    // the running statistics: mean and variance per BN channel
    assert_status(deft_model_create(&m, DEFT_MODEL_PRERESNET20, 1, 28, 28,
                                    10, 1),
                  DEFT_OK);
    assert_int_equal(deft_model_num_buffers(m),
                     2 * (7 * 16 + 6 * 32 + 6 * 64));
    deft_model_destroy(m);
    assert_status(deft_model_create(&m, DEFT_MODEL_LENET, 1, 28, 28, 10, 1),
                  DEFT_OK);
    assert_int_equal(deft_model_num_buffers(m), 0);
    assert_null(deft_model_buffers(m));
    deft_model_destroy(m);
}

/* Sample mean and standard deviation of n floats. */
static void moments(const float *v, size_t n, double *mean, double *sd)
{
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < n; i++)
        s1 += v[i], s2 += (double)v[i] * v[i];
    *mean = s1 / n;
    *sd = sqrt(fmax(s2 / n - *mean * *mean, 0.0));
}

/* v (n) looks drawn from a distribution of standard deviation want and
 * mean 0: the relative sampling error of a std is about 1 / sqrt(2n). */
static void assert_spread(const float *v, size_t n, double want)
{
    double mean, sd;
    moments(v, n, &mean, &sd);
    assert_close(sd, want, 4.0 / sqrt(2.0 * n) + 0.01, 0);
    assert_close(mean, 0.0, 0, 4.0 * want / sqrt((double)n));
}

static void test_init(void **state)
{
    (void)state;
    deft_model_t *m;
    assert_status(deft_model_create(&m, DEFT_MODEL_LENET, 1, 28, 28, 10, 1),
                  DEFT_OK);
    const size_t P = deft_model_num_params(m);
    const deft_layout_t *lay = deft_model_layout(m);
    float *a = falloc(P), *b = falloc(P), *c = falloc(P), *he = falloc(P);
    deft_model_init_params(m, a, 123, DEFT_INIT_TORCH);
    deft_model_init_params(m, b, 123, DEFT_INIT_TORCH);
    deft_model_init_params(m, c, 124, DEFT_INIT_TORCH);
    deft_model_init_params(m, he, 123, DEFT_INIT_HE);
    assert_memory_equal(a, b, P * sizeof(float));
    assert_memory_not_equal(a, c, P * sizeof(float));

    // torch: weight and bias U(+-1/sqrt(fan_in)), std bound/sqrt(3); He:
    // sqrt(2 / fan_in) where a ReLU follows, Glorot sqrt(2 / (fan_in +
    // fan_out)) for the logits, biases zero
    const double fan_in[5] = {25, 150, 400, 120, 84};
    const double want_he[5] = {sqrt(2.0 / 25), sqrt(2.0 / 150),
                               sqrt(2.0 / 400), sqrt(2.0 / 120),
                               sqrt(2.0 / (84 + 10))};
    size_t off = 0;
    for (size_t t = 0; t < lay->n_tensors; t++) {
        const size_t n = lay->sizes[t];
        const double bound = 1.0 / sqrt(fan_in[t / 2]);
        for (size_t i = 0; i < n; i++)
            if (!(fabs(a[off + i]) <= bound))
                fail_msg("tensor %zu [%zu] = %g outside +-%g", t, i,
                         (double)a[off + i], bound);
        if (n >= 100)  // the 6..120-float biases are too few for moments
            assert_spread(a + off, n, bound / sqrt(3.0));
        if (t % 2 == 1) {
            for (size_t i = 0; i < n; i++)
                assert_true(he[off + i] == 0.0f);
        } else {
            assert_spread(he + off, n, want_he[t / 2]);
        }
        off += n;
    }
    deft_free(a), deft_free(b), deft_free(c), deft_free(he);
    deft_model_destroy(m);

    // preresnet20 (torch = the DEF code's rule): conv N(0, 2/(9 oc)), BN
    // gamma 1 and beta 0, the fc U(+-1/8)
    assert_status(deft_model_create(&m, DEFT_MODEL_PRERESNET20, 1, 28, 28,
                                    10, 1),
                  DEFT_OK);
    const size_t Q = deft_model_num_params(m);
    lay = deft_model_layout(m);
    a = falloc(Q);
    deft_model_init_params(m, a, 9, DEFT_INIT_TORCH);
    off = 0;
    int n_bn = 0;
    for (size_t t = 0; t < lay->n_tensors; t++) {
        const size_t n = lay->sizes[t], rows = lay->rows[t];
        if (t + 2 == lay->n_tensors) {  // fc weight (10, 64)
            for (size_t i = 0; i < n; i++)
                assert_true(fabs(a[off + i]) <= 0.125);
        } else if (rows > 0 && n / rows == 16) {  // a 1x1 shortcut: 16 -> 32
            assert_spread(a + off, n, sqrt(2.0 / (1 * rows)));
        } else if (rows > 0 && n / rows == 32 && rows == 64) {  // 32 -> 64
            assert_spread(a + off, n, sqrt(2.0 / 64));
        } else if (rows > 0) {  // 3x3 convs
            assert_spread(a + off, n, sqrt(2.0 / (9.0 * rows)));
        } else if (t + 1 < lay->n_tensors) {  // BN gamma, then beta
            const float want = n_bn++ % 2 == 0 ? 1.0f : 0.0f;
            for (size_t i = 0; i < n; i++)
                assert_true(a[off + i] == want);
        }
        off += n;
    }
    assert_int_equal(n_bn, 2 * 19);
    deft_free(a);
    deft_model_destroy(m);

    deft_init_t k;
    assert_status(deft_init_parse("he", &k), DEFT_OK);
    assert_int_equal(k, DEFT_INIT_HE);
    assert_status(deft_init_parse("kaiming", &k), DEFT_ERR_INVALID_ARG);
    assert_non_null(strstr(deft_last_error(), "torch or he"));
    assert_string_equal(deft_init_name(DEFT_INIT_TORCH), "torch");
}

/* Images with MNIST-like statistics (mostly background zeros, the rest in
 * [0, 1)), labels i % 10. */
static void make_batch(float *x, int32_t *y, int B, size_t d, uint64_t seed)
{
    deft_rng_t r = deft_rng_make(seed, 0, 0, DEFT_STREAM_TEST);
    for (size_t i = 0; i < (size_t)B * d; i++)
        x[i] = deft_rng_uniform(&r) < 0.8f ? 0.0f : deft_rng_uniform(&r);
    for (int i = 0; i < B; i++)
        y[i] = i % 10;
}

static void test_fresh_loss_near_ln10(void **state)
{
    (void)state;
    enum { B = 64 };
    const size_t d = 784;
    float *x = falloc(B * d);
    int32_t y[B];
    make_batch(x, y, B, d, 77);
    for (int k = DEFT_MODEL_LOGREG; k <= DEFT_MODEL_VGG11BN; k++) {
        deft_model_t *m;
        assert_status(deft_model_create(&m, (deft_model_kind_t)k, 1, 28, 28,
                                        10, B),
                      DEFT_OK);
        float *p = falloc(deft_model_num_params(m));
        deft_model_init_params(m, p, 5, DEFT_INIT_TORCH);
        double s;
        int hits;
        assert_status(deft_model_evaluate(m, p, x, y, B, &s, &hits), DEFT_OK);
        // He/Glorot keep the logits' scale near 1: a bit above ln 10
        if (fabs(s / B - log(10.0)) > 0.4)
            fail_msg("%s: fresh loss %.4f, want about ln 10 = %.4f",
                     deft_model_name((deft_model_kind_t)k), s / B, log(10.0));
        deft_free(p);
        deft_model_destroy(m);
    }
    deft_free(x);
}

/* Plain SGD on one fixed batch must drive its loss down: the gradient is a
 * descent direction and the whole pipeline learns. He initialization:
 * from PyTorch's smaller one lenet sits on its initial plateau for longer
 * than these steps on labels that have nothing to do with the images.
 * 40 steps: preresnet20's loss falls steadily but slowly (2.45 to 0.65),
 * and after 25 it sat within 2% of the halfway mark, where float rounding
 * (Winograd against im2col convs) moved it across. */
static void test_sgd_reduces_loss(void **state)
{
    (void)state;
    enum { B = 20, STEPS = 40 };
    const size_t d = 784;
    float *x = falloc(B * d);
    int32_t y[B];
    make_batch(x, y, B, d, 99);
    for (int k = DEFT_MODEL_LOGREG; k <= DEFT_MODEL_VGG11BN; k++) {
        deft_model_t *m;
        assert_status(deft_model_create(&m, (deft_model_kind_t)k, 1, 28, 28,
                                        10, B),
                      DEFT_OK);
        const size_t P = deft_model_num_params(m);
        float *p = falloc(P), *g = falloc(P);
        deft_model_init_params(m, p, 3, DEFT_INIT_HE);
        // batch norm takes (and here needs) the larger step
        const float lr = deft_model_num_buffers(m) ? 0.1f : 0.05f;
        double first = 0, loss = 0;
        int correct = 0;
        for (int step = 0; step < STEPS; step++) {
            assert_status(deft_model_loss_grad(m, p, x, y, B, g, &loss,
                                               &correct),
                          DEFT_OK);
            if (step == 0)
                first = loss;
            for (size_t i = 0; i < P; i++)
                p[i] -= lr * g[i];
        }
        if (!(loss < 0.5 * first))
            fail_msg("%s: loss %.4f after %d steps, from %.4f",
                     deft_model_name((deft_model_kind_t)k), loss, STEPS,
                     first);
        deft_free(p), deft_free(g);
        deft_model_destroy(m);
    }
    deft_free(x);
}

/* Results do not depend on what an earlier, larger batch left behind, and
 * loss_grad and evaluate agree on loss and hits. */
static void test_batches_are_independent(void **state)
{
    (void)state;
    enum { B = 8 };
    const size_t d = 784;
    float *x = falloc(B * d);
    int32_t y[B];
    make_batch(x, y, B, d, 5);
    deft_model_t *m1, *m2;
    assert_status(deft_model_create(&m1, DEFT_MODEL_LENET, 1, 28, 28, 10, B),
                  DEFT_OK);
    assert_status(deft_model_create(&m2, DEFT_MODEL_LENET, 1, 28, 28, 10, B),
                  DEFT_OK);
    const size_t P = deft_model_num_params(m1);
    float *p = falloc(P), *g1 = falloc(P), *g2 = falloc(P);
    deft_model_init_params(m1, p, 1, DEFT_INIT_TORCH);
    double l1, l2, s;
    int c1, c2, c3;
    assert_status(deft_model_loss_grad(m1, p, x, y, B, g1, &l1, &c1), DEFT_OK);
    assert_status(deft_model_loss_grad(m1, p, x, y, 3, g1, &l1, &c1), DEFT_OK);
    assert_status(deft_model_loss_grad(m2, p, x, y, 3, g2, &l2, &c2), DEFT_OK);
    assert_memory_equal(g1, g2, P * sizeof(float));
    assert_true(l1 == l2 && c1 == c2);
    assert_status(deft_model_evaluate(m2, p, x, y, 3, &s, &c3), DEFT_OK);
    assert_close(s, 3 * l1, 1e-12, 0);
    assert_int_equal(c3, c1);
    deft_free(p), deft_free(g1), deft_free(g2), deft_free(x);
    deft_model_destroy(m1);
    deft_model_destroy(m2);
}

/* A NaN in the parameters must reach the loss and the gradient (ReLU and
 * max-pool must not clip it away), so that training can detect divergence. */
static void test_nan_reaches_loss(void **state)
{
    (void)state;
    enum { B = 4 };
    float *x = falloc(B * 784);
    int32_t y[B];
    make_batch(x, y, B, 784, 3);
    for (int k = DEFT_MODEL_LOGREG; k <= DEFT_MODEL_VGG11BN; k++) {
        deft_model_t *m;
        assert_status(deft_model_create(&m, (deft_model_kind_t)k, 1, 28, 28,
                                        10, B),
                      DEFT_OK);
        const size_t P = deft_model_num_params(m);
        float *p = falloc(P), *g = falloc(P);
        deft_model_init_params(m, p, 1, DEFT_INIT_TORCH);
        p[0] = NAN;  // a first-layer weight
        double loss, s;
        int hits;
        assert_status(deft_model_loss_grad(m, p, x, y, B, g, &loss, NULL),
                      DEFT_OK);
        assert_true(isnan(loss));
        int nan_grad = 0;
        for (size_t i = 0; i < P; i++)
            nan_grad |= isnan(g[i]);
        assert_true(nan_grad);
        assert_status(deft_model_evaluate(m, p, x, y, B, &s, &hits), DEFT_OK);
        assert_true(isnan(s));
        deft_free(p), deft_free(g);
        deft_model_destroy(m);
    }
    deft_free(x);
}

/* Training updates the running statistics, evaluation reads them and
 * leaves them alone, and recalibration from a reset makes them the plain
 * mean of the batches' statistics: with one batch, loss_grad's update
 * from the reset values (mean 0, variance 1, momentum 0.1) is exactly
 * 0.1 x that for every BN layer, since in training mode each BN layer
 * sees the same input either way. */
static void test_bn_buffers(void **state)
{
    (void)state;
    enum { B = 6 };
    const size_t d = 784;
    float *x = falloc(B * d);
    int32_t y[B];
    make_batch(x, y, B, d, 17);
    for (int k = DEFT_MODEL_PRERESNET20; k <= DEFT_MODEL_VGG11BN; k++) {
        deft_model_t *m;
        assert_status(deft_model_create(&m, (deft_model_kind_t)k, 1, 28, 28,
                                        10, B),
                      DEFT_OK);
        const size_t P = deft_model_num_params(m), NB = deft_model_num_buffers(m);
        float *p = falloc(P), *g = falloc(P), *after = falloc(NB);
        float *recal = falloc(NB);
        float *bufs = deft_model_buffers(m);
        deft_model_init_params(m, p, 2, DEFT_INIT_TORCH);
        double loss, ls;
        int hits;
        assert_status(deft_model_loss_grad(m, p, x, y, B, g, &loss, NULL),
                      DEFT_OK);
        memcpy(after, bufs, NB * sizeof(float));
        assert_status(deft_model_evaluate(m, p, x, y, B, &ls, &hits), DEFT_OK);
        assert_memory_equal(after, bufs, NB * sizeof(float));
        deft_model_reset_buffers(m);
        assert_status(deft_model_recalibrate(m, p, x, B, 0), DEFT_OK);
        memcpy(recal, bufs, NB * sizeof(float));
        // a second batch equal to the first leaves the mean unchanged
        assert_status(deft_model_recalibrate(m, p, x, B, 1), DEFT_OK);
        for (size_t i = 0; i < NB; i++)
            assert_close(bufs[i], recal[i], 1e-6, 1e-7);
        // layer by layer, C means then C variances: the reset pass's
        // means are 0.1 x the recalibrated ones, its variances 0.9 + 0.1 v
        static const int res_c[19] = {16, 16, 16, 16, 16, 16, 16, 32, 32, 32,
                                      32, 32, 32, 64, 64, 64, 64, 64, 64};
        static const int vgg_c[8] = {32, 64, 128, 128, 256, 256, 256, 256};
        const int *chans = k == DEFT_MODEL_PRERESNET20 ? res_c : vgg_c;
        const int n_bn = k == DEFT_MODEL_PRERESNET20 ? 19 : 8;
        size_t off = 0;
        for (int l = 0; l < n_bn; l++) {
            const size_t C = (size_t)chans[l];
            for (size_t j = 0; j < C; j++) {
                assert_close(after[off + j], 0.1 * recal[off + j], 1e-5, 1e-6);
                assert_close(after[off + C + j], 0.9 + 0.1 * recal[off + C + j],
                             1e-5, 1e-6);
            }
            off += 2 * C;
        }
        assert_int_equal(off, NB);
        // vgg11bn's last BN layers see a 1x1 map: a batch of one is refused
        const int min = deft_model_min_train_batch(m);
        assert_int_equal(min, k == DEFT_MODEL_VGG11BN ? 2 : 1);
        if (min > 1) {
            assert_status(deft_model_loss_grad(m, p, x, y, 1, g, &loss, NULL),
                          DEFT_ERR_INVALID_ARG);
            assert_non_null(strstr(deft_last_error(), "one value per channel"));
            assert_status(deft_model_recalibrate(m, p, x, 1, 0),
                          DEFT_ERR_INVALID_ARG);
        }
        // bad arguments are named
        assert_status(deft_model_recalibrate(m, p, x, B + 1, 0),
                      DEFT_ERR_INVALID_ARG);
        assert_non_null(strstr(deft_last_error(), "batch"));
        assert_status(deft_model_recalibrate(m, p, x, B, -1),
                      DEFT_ERR_INVALID_ARG);
        deft_free(p), deft_free(g), deft_free(after), deft_free(recal);
        deft_model_destroy(m);
    }
    deft_free(x);
}

/* deft_model_create_sized: gradients for up to max_train_batch, forward
 * passes for up to max_batch. */
static void test_train_batch_sizing(void **state)
{
    (void)state;
    enum { B = 8 };
    float *x = falloc(B * 784);
    int32_t y[B];
    make_batch(x, y, B, 784, 3);
    deft_model_t *m;
    assert_status(deft_model_create_sized(&m, DEFT_MODEL_PRERESNET20, 1, 28,
                                          28, 10, B, 4),
                  DEFT_OK);
    const size_t P = deft_model_num_params(m);
    float *p = falloc(P), *g = falloc(P);
    deft_model_init_params(m, p, 1, DEFT_INIT_TORCH);
    double loss, ls;
    int hits;
    assert_status(deft_model_loss_grad(m, p, x, y, 4, g, &loss, NULL), DEFT_OK);
    assert_status(deft_model_loss_grad(m, p, x, y, 5, g, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_non_null(strstr(deft_last_error(), "max_train_batch = 4"));
    assert_status(deft_model_evaluate(m, p, x, y, B, &ls, &hits), DEFT_OK);
    deft_model_destroy(m);
    assert_status(deft_model_create_sized(&m, DEFT_MODEL_LENET, 1, 28, 28, 10,
                                          4, 5),
                  DEFT_ERR_INVALID_ARG);
    assert_non_null(strstr(deft_last_error(), "max_train_batch"));
    deft_free(p), deft_free(g), deft_free(x);
}

static void test_errors(void **state)
{
    (void)state;
    deft_model_t *m;
    assert_status(deft_model_create(NULL, DEFT_MODEL_MLP, 1, 28, 28, 10, 4),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("out");
    m = (deft_model_t *)&m;
    assert_status(deft_model_create(&m, (deft_model_kind_t)9, 1, 28, 28, 10, 4),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("kind");
    assert_null(m);
    assert_status(deft_model_create(&m, DEFT_MODEL_MLP, 0, 28, 28, 10, 4),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("(0, 28, 28)");
    assert_status(deft_model_create(&m, DEFT_MODEL_MLP, 1, 28, 28, 1, 4),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("n_classes");
    assert_status(deft_model_create(&m, DEFT_MODEL_MLP, 1, 28, 28, 10, 0),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("max_batch");
    assert_status(deft_model_create(&m, DEFT_MODEL_LENET, 1, 11, 28, 10, 4),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("h = 11");
    assert_status(deft_model_create(&m, DEFT_MODEL_VGG, 1, 28, 3, 10, 4),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("w = 3");
    assert_status(deft_model_create(&m, DEFT_MODEL_MLP, 1 << 20, 1 << 10, 2,
                                    10, 4),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("too large");

    assert_status(deft_model_create(&m, DEFT_MODEL_LOGREG, 1, 4, 4, 3, 4),
                  DEFT_OK);
    float p[16 * 3 + 3] = {0}, g[16 * 3 + 3], x[5 * 16] = {0};
    int32_t y[5] = {0, 1, 2, 0, 1};
    double loss;
    int hits;
    assert_status(deft_model_loss_grad(NULL, p, x, y, 2, g, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("m is NULL");
    assert_status(deft_model_loss_grad(m, NULL, x, y, 2, g, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("params");
    assert_status(deft_model_loss_grad(m, p, NULL, y, 2, g, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("x is NULL");
    assert_status(deft_model_loss_grad(m, p, x, NULL, 2, g, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("labels");
    assert_status(deft_model_loss_grad(m, p, x, y, 2, NULL, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("grad");
    assert_status(deft_model_loss_grad(m, p, x, y, 2, g, NULL, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("loss");
    assert_status(deft_model_loss_grad(m, p, x, y, 0, g, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("batch = 0");
    assert_status(deft_model_loss_grad(m, p, x, y, 5, g, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("batch = 5");
    y[3] = 3;
    assert_status(deft_model_loss_grad(m, p, x, y, 4, g, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("labels[3] = 3");
    y[3] = -1;
    assert_status(deft_model_evaluate(m, p, x, y, 4, &loss, &hits),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("labels[3] = -1");
    assert_status(deft_model_evaluate(m, p, x, y, 3, NULL, &hits),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("loss_sum");
    assert_status(deft_model_evaluate(m, p, x, y, 3, &loss, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("correct");
    // all-zero params: uniform softmax, loss exactly ln 3
    assert_status(deft_model_loss_grad(m, p, x, y, 3, g, &loss, &hits),
                  DEFT_OK);
    assert_close(loss, log(3.0), 1e-6, 0);
    deft_model_destroy(m);
    deft_model_destroy(NULL);
}

static void test_names(void **state)
{
    (void)state;
    const char *names[] = {"logreg", "mlp", "lenet", "vgg"};
    for (int k = 0; k < 4; k++) {
        deft_model_kind_t kind;
        assert_status(deft_model_parse(names[k], &kind), DEFT_OK);
        assert_int_equal(kind, k);
        assert_string_equal(deft_model_name(kind), names[k]);
    }
    assert_string_equal(deft_model_name((deft_model_kind_t)7), "?");
    deft_model_kind_t kind;
    assert_status(deft_model_parse("resnet", &kind), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("\"resnet\"");
    assert_status(deft_model_parse(NULL, &kind), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("name");
    assert_status(deft_model_parse("mlp", NULL), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("out");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d_gradients),
        cmocka_unit_test(test_conv2d_winograd),
        cmocka_unit_test(test_conv2d_small_output),
        cmocka_unit_test(test_conv2d_sparse_backward),
        cmocka_unit_test(test_onednn_conv),
        cmocka_unit_test(test_blocked_layers),
        cmocka_unit_test(test_dense_gradients),
        cmocka_unit_test(test_maxpool_gradients),
        cmocka_unit_test(test_relu_gradients),
        cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_logreg_gradient),
        cmocka_unit_test(test_mlp_gradient),
        cmocka_unit_test(test_lenet_gradient),
        cmocka_unit_test(test_vgg_gradient),
        cmocka_unit_test(test_preresnet20_gradient),
        cmocka_unit_test(test_vgg11bn_gradient),
        cmocka_unit_test(test_model_engines),
        cmocka_unit_test(test_batchnorm_gradients),
        cmocka_unit_test(test_gap_and_add),
        cmocka_unit_test(test_bn_buffers),
        cmocka_unit_test(test_train_batch_sizing),
        cmocka_unit_test(test_param_counts_and_layout),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_fresh_loss_near_ln10),
        cmocka_unit_test(test_sgd_reduces_loss),
        cmocka_unit_test(test_batches_are_independent),
        cmocka_unit_test(test_nan_reaches_loss),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
