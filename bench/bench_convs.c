/* Every conv of preresnet20 and vgg11bn at batch 128, one thread: the
 * forward and the backward (input and weight gradients) as deft runs them,
 * best of 7, against a reference measured in the same run: the same
 * multiply-adds as one large sgemm, (OC, B*P) = (OC, K) (K, B*P) with
 * K = C*k*k and P the output pixels, the best shape an im2col conv could
 * hope for. The ratio is (forward + backward) / (3 x that sgemm): below 1
 * the conv does fewer multiplies than the direct sum (Winograd), above it
 * the transforms, copies and narrow products cost more than they save.
 * Where oneDNN has JIT convs (src/nn/conv2d_dnnl.c), the same conv on
 * oneDNN, in its blocked layout as the BN models run it, is timed too.
 *
 * Usage: bench_convs [--batch B]       (B in 1..512, default 128) */
#include "bench_common.h"
#include "core/internal.h"
#include "nn/layers.h"

#include <cblas.h>
#include <stdio.h>

#define REPS 7

typedef struct {
    const char *model;
    int c, h, oc, k, pad, stride, count; /* count: convs of this shape */
} conv_t;

static const conv_t convs[] = {
    {"preresnet20", 1, 28, 16, 3, 1, 1, 1},
    {"preresnet20", 16, 28, 16, 3, 1, 1, 6},
    {"preresnet20", 16, 28, 32, 3, 1, 2, 1},
    {"preresnet20", 16, 28, 32, 1, 0, 2, 1},
    {"preresnet20", 32, 14, 32, 3, 1, 1, 5},
    {"preresnet20", 32, 14, 64, 3, 1, 2, 1},
    {"preresnet20", 32, 14, 64, 1, 0, 2, 1},
    {"preresnet20", 64, 7, 64, 3, 1, 1, 5},
    {"vgg11bn", 1, 28, 32, 3, 1, 1, 1},
    {"vgg11bn", 32, 14, 64, 3, 1, 1, 1},
    {"vgg11bn", 64, 7, 128, 3, 1, 1, 1},
    {"vgg11bn", 128, 7, 128, 3, 1, 1, 1},
    {"vgg11bn", 128, 3, 256, 3, 1, 1, 1},
    {"vgg11bn", 256, 3, 256, 3, 1, 1, 1},
    {"vgg11bn", 256, 1, 256, 3, 1, 1, 2},
};

static void fill(float *p, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        p[i] = scale * (float)((int)(i % 13) - 6);
}

/* Best of REPS of oneDNN's forward and backward of the conv (t[0], t[1]),
 * as a model runs it: input blocked (plain for the one-channel stem), a
 * bias. 0, or -1 if oneDNN cannot make it. */
static int time_onednn(const deft_conv2d_shape_t *s, int B, float *y,
                       float *x, float *w, float *b, float *dy, float *dx,
                       float *dw, float *db, double t[2])
{
    const int stem = s->c % deft_dnnl_block() != 0;
    deft_dnnl_scratch_t *pad = deft_dnnl_scratch_create();
    deft_dnnl_conv_t *c =
        pad ? deft_dnnl_conv_create(s, !stem, 1, !stem, B, pad) : NULL;
    if (!c) {
        deft_dnnl_scratch_destroy(pad);
        return -1;
    }
    int rc = 0;
    t[0] = t[1] = 1e30;
    for (int r = 0; r < REPS && rc == 0; r++) {
        double t0 = bench_now();
        rc |= deft_dnnl_conv_forward(c, y, x, w, b, B);
        double t1 = bench_now();
        rc |= deft_dnnl_conv_backward(c, stem ? NULL : dx, dw, db, dy, x, w, B);
        double t2 = bench_now();
        t[0] = t1 - t0 < t[0] ? t1 - t0 : t[0];
        t[1] = t2 - t1 < t[1] ? t2 - t1 : t[1];
    }
    deft_dnnl_conv_destroy(c);
    deft_dnnl_scratch_destroy(pad);
    return rc;
}

/* Best of REPS: forward, backward, the reference sgemm, and oneDNN's
 * forward and backward (0 without oneDNN), in seconds. */
static int time_conv(const conv_t *c, int B, double t[5])
{
    deft_conv2d_shape_t s;
    if (!deft_conv2d_shape(&s, c->c, c->h, c->h, c->oc, c->k, c->pad, c->stride))
        return -1;
    const size_t nx = (size_t)B * c->c * c->h * c->h;
    const size_t P = (size_t)s.oh * s.ow, ny = (size_t)B * c->oc * P;
    const size_t K = (size_t)c->c * c->k * c->k, nw = (size_t)c->oc * K;
    float *x = deft_alloc(nx * sizeof(float)), *dx = deft_alloc(nx * sizeof(float));
    float *y = deft_alloc(ny * sizeof(float)), *dy = deft_alloc(ny * sizeof(float));
    float *w = deft_alloc(nw * sizeof(float)), *dw = deft_alloc(nw * sizeof(float));
    float *b = deft_alloc((size_t)c->oc * sizeof(float));
    float *db = deft_alloc((size_t)c->oc * sizeof(float));
    float *sc = deft_alloc(deft_conv2d_scratch_floats(&s) * sizeof(float));
    float *col = deft_alloc(K * B * P * sizeof(float));
    int ok = x && dx && y && dy && w && dw && b && db && sc && col;
    if (ok) {
        fill(x, nx, 0.1f), fill(dy, ny, 0.01f), fill(w, nw, 0.02f);
        fill(b, (size_t)c->oc, 0.1f), fill(col, K * B * P, 0.1f);
        t[0] = t[1] = t[2] = 1e30;
        for (int r = 0; r < REPS; r++) {
            double t0 = bench_now();
            deft_conv2d_forward(y, x, w, b, B, &s, sc, 0);
            double t1 = bench_now();
            // the stem's input gradient is never asked for
            deft_conv2d_backward(c->c == 1 ? NULL : dx, dw, db, dy, x, w, B,
                                 &s, sc);
            double t2 = bench_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->oc,
                        (int)(B * P), (int)K, 1.0f, w, (int)K, col,
                        (int)(B * P), 0.0f, dy, (int)(B * P));
            double t3 = bench_now();
            t[0] = t1 - t0 < t[0] ? t1 - t0 : t[0];
            t[1] = t2 - t1 < t[1] ? t2 - t1 : t[1];
            t[2] = t3 - t2 < t[2] ? t3 - t2 : t[2];
            fill(dy, ny, 0.01f);  // the reference wrote over it
        }
        t[3] = t[4] = 0.0;
        if (deft_dnnl_block() &&
            time_onednn(&s, B, y, x, w, b, dy, dx, dw, db, t + 3) != 0)
            ok = 0;
    }
    deft_free(x), deft_free(dx), deft_free(y), deft_free(dy), deft_free(w);
    deft_free(dw), deft_free(b), deft_free(db), deft_free(sc), deft_free(col);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    int B = 128;
    if (argc == 3 && strcmp(argv[1], "--batch") == 0)
        B = atoi(argv[2]);
    if ((argc != 1 && argc != 3) || B < 1 || B > 512) {
        fprintf(stderr, "usage: bench_convs [--batch 1..512]\n");
        return 2;
    }
    openblas_set_num_threads(1);
    printf("OpenBLAS core %s; batch %d, one thread, best of %d\n\n",
           openblas_get_corename(), B, REPS);
    printf("oneDNN: %s\n\n", deft_dnnl_block() ? "JIT convs, blocked layout"
                                                : "no JIT convs on this CPU");
    printf("| model | conv (C, HxW -> OC, k, stride) x count | forward ms | "
           "backward ms | sgemm ref ms | ratio | oneDNN fwd ms | oneDNN bwd "
           "ms | oneDNN ratio |\n"
           "|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    double total[2] = {0, 0}, ref[2] = {0, 0}, dnnl[2] = {0, 0};
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
        const conv_t *c = &convs[i];
        double t[5];
        if (time_conv(c, B, t) != 0) {
            fprintf(stderr, "bench_convs: out of memory, or oneDNN failed\n");
            return 1;
        }
        const int m = strcmp(c->model, "vgg11bn") == 0;
        total[m] += c->count * (t[0] + t[1]), ref[m] += c->count * 3 * t[2];
        dnnl[m] += c->count * (t[3] + t[4]);
        printf("| %s | %d, %dx%d -> %d, %dx%d, %d x %d | %.2f | %.2f | %.2f | "
               "%.2f | %.2f | %.2f | %.2f |\n", c->model, c->c, c->h, c->h,
               c->oc, c->k, c->k, c->stride, c->count, 1e3 * t[0], 1e3 * t[1],
               1e3 * t[2], (t[0] + t[1]) / (3 * t[2]), 1e3 * t[3], 1e3 * t[4],
               (t[3] + t[4]) / (3 * t[2]));
    }
    printf("\nall convs of a step: preresnet20 %.1f ms (%.2fx the sgemm "
           "reference), vgg11bn %.1f ms (%.2fx)\n", 1e3 * total[0],
           total[0] / ref[0], 1e3 * total[1], total[1] / ref[1]);
    if (deft_dnnl_block())
        printf("on oneDNN: preresnet20 %.1f ms (%.2fx), vgg11bn %.1f ms "
               "(%.2fx)\n", 1e3 * dnnl[0], dnnl[0] / ref[0], 1e3 * dnnl[1],
               dnnl[1] / ref[1]);
    return 0;
}
