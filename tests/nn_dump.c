/* nn_dump: writes deft's layer and model computations on fixed inputs to
 * files, for scripts/torch_nn_check.py to redo in PyTorch and compare.
 *
 *   nn_dump model NAME SEED BATCH OUTDIR    lenet, vgg, preresnet20, vgg11bn
 *   nn_dump layer KIND SEED OUTDIR          bn1d, bn2d, gap, add
 *
 * Model mode: params.f32 (P; the default init with every vector (biases,
 * BN gamma and beta) moved by U(+-0.2)), buffers_in.f32 (NB, random
 * running statistics), x.f32 (B, 1, 28, 28), y.i32 (B), grad.f32 (P, of
 * the training-mode mean cross-entropy), buffers_out.f32 (NB, after that
 * training pass), logits_eval.f32 (B, 10, evaluation mode with
 * buffers_out), and meta.json with the sizes and losses. Layer mode: the
 * layer's inputs, a random output gradient dout, the training-mode output
 * and input gradients, and for BN the running statistics before and after
 * and the evaluation-mode output. All arrays raw little-endian. Exit 0 on
 * success, 2 on bad usage, 1 on errors. */
#include "core/rng.h"
#include "nn/layers.h"
#include "nn/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_dir;

static int put(const char *name, const void *p, size_t bytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, bytes, f) != bytes) {
        fprintf(stderr, "nn_dump: cannot write %s\n", path);
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

static float *randv(size_t n, float lo, float hi, deft_rng_t *r)
{
    float *v = malloc((n ? n : 1) * sizeof(float));
    if (!v) {
        fprintf(stderr, "nn_dump: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * deft_rng_uniform(r);
    return v;
}

static int dump_model(const char *name, uint64_t seed, int B)
{
    deft_model_kind_t kind;
    deft_model_t *m;
    if (deft_model_parse(name, &kind) != DEFT_OK ||
        deft_model_create(&m, kind, 1, 28, 28, 10, B) != DEFT_OK) {
        fprintf(stderr, "nn_dump: %s\n", deft_last_error());
        return 2;
    }
    const size_t P = deft_model_num_params(m), NB = deft_model_num_buffers(m);
    const deft_layout_t *lay = deft_model_layout(m);
    deft_rng_t r = deft_rng_make(seed, 0, 0, DEFT_STREAM_TEST);
    float *params = randv(P, 0, 0, &r), *grad = randv(P, 0, 0, &r);
    deft_model_init_params(m, params, seed, DEFT_INIT_TORCH);
    for (size_t t = 0, off = 0; t < lay->n_tensors; off += lay->sizes[t++])
        if (lay->rows[t] == 0)
            for (size_t i = 0; i < lay->sizes[t]; i++)
                params[off + i] += 0.4f * deft_rng_uniform(&r) - 0.2f;
    float *bufs = deft_model_buffers(m);
    // every statistic in (0.5, 1.5): valid as a mean and as a variance
    for (size_t i = 0; i < NB; i++)
        bufs[i] = 0.5f + deft_rng_uniform(&r);
    float *x = randv((size_t)B * 784, -1.0f, 2.0f, &r);
    int32_t *y = malloc((size_t)B * sizeof(int32_t));
    if (!y)
        return 1;
    for (int i = 0; i < B; i++)
        y[i] = (int32_t)deft_rng_below(&r, 10);
    float *bin = randv(NB, 0, 0, &r);
    if (NB)
        memcpy(bin, bufs, NB * sizeof(float));
    double loss, eval_sum;
    int correct;
    if (deft_model_loss_grad(m, params, x, y, B, grad, &loss, NULL) != DEFT_OK ||
        deft_model_evaluate(m, params, x, y, B, &eval_sum, &correct) != DEFT_OK) {
        fprintf(stderr, "nn_dump: %s\n", deft_last_error());
        return 1;
    }
    int bad = put("params.f32", params, P * 4) || put("buffers_in.f32", bin, NB * 4) ||
              put("x.f32", x, (size_t)B * 784 * 4) || put("y.i32", y, (size_t)B * 4) ||
              put("grad.f32", grad, P * 4) ||
              put("buffers_out.f32", NB ? bufs : bin, NB * 4) ||
              put("logits_eval.f32", deft_model_logits(m), (size_t)B * 10 * 4);
    char meta[1 << 14];
    int n = snprintf(meta, sizeof meta,
                     "{\"mode\": \"model\", \"model\": \"%s\", \"c\": 1, \"h\": 28, "
                     "\"w\": 28, \"classes\": 10, \"batch\": %d, \"params\": %zu, "
                     "\"buffers\": %zu, \"loss\": %.9g, \"eval_loss_sum\": %.9g, "
                     "\"eval_correct\": %d, \"tensors\": [",
                     name, B, P, NB, loss, eval_sum, correct);
    for (size_t t = 0; t < lay->n_tensors && n < (int)sizeof meta - 32; t++)
        n += snprintf(meta + n, sizeof meta - (size_t)n, "%s%zu", t ? ", " : "",
                      lay->sizes[t]);
    n += snprintf(meta + n, sizeof meta - (size_t)n, "]}\n");
    bad = bad || put("meta.json", meta, (size_t)n);
    free(params), free(grad), free(x), free(y), free(bin);
    deft_model_destroy(m);
    return bad ? 1 : 0;
}

static int dump_bn(uint64_t seed, int B, int C, int HW, const char *kind)
{
    deft_rng_t r = deft_rng_make(seed, 0, 1, DEFT_STREAM_TEST);
    const size_t n = (size_t)B * C * HW;
    float *x = randv(n, -1.0f, 3.0f, &r), *g = randv(C, 0.5f, 1.5f, &r);
    float *b = randv(C, -0.5f, 0.5f, &r), *rm = randv(C, -0.5f, 0.5f, &r);
    float *rv = randv(C, 0.5f, 1.5f, &r), *dout = randv(n, -1.0f, 1.0f, &r);
    float *rm0 = randv(C, 0, 0, &r), *rv0 = randv(C, 0, 0, &r);
    memcpy(rm0, rm, C * sizeof(float));
    memcpy(rv0, rv, C * sizeof(float));
    float *y = randv(n, 0, 0, &r), *dx = randv(n, 0, 0, &r), *ye = randv(n, 0, 0, &r);
    float *mean = randv(C, 0, 0, &r), *is = randv(C, 0, 0, &r);
    float *dg = randv(C, 0, 0, &r), *db = randv(C, 0, 0, &r);
    deft_batchnorm_forward_train(y, mean, is, x, g, b, B, C, HW, rm, rv,
                                 DEFT_BN_MOMENTUM, 0);
    deft_batchnorm_backward(dx, dg, db, dout, x, mean, is, g, B, C, HW);
    deft_batchnorm_forward_eval(ye, x, g, b, rm, rv, B, C, HW, 0);
    char meta[256];
    int len = HW == 1
                  ? snprintf(meta, sizeof meta, "{\"mode\": \"layer\", \"kind\": \"%s\", "
                             "\"shape\": [%d, %d]}\n", kind, B, C)
                  : snprintf(meta, sizeof meta, "{\"mode\": \"layer\", \"kind\": \"%s\", "
                             "\"shape\": [%d, %d, 5, 6]}\n", kind, B, C);
    int bad = put("x.f32", x, n * 4) || put("gamma.f32", g, C * 4) ||
              put("beta.f32", b, C * 4) || put("rm_in.f32", rm0, C * 4) ||
              put("rv_in.f32", rv0, C * 4) || put("dout.f32", dout, n * 4) ||
              put("y.f32", y, n * 4) || put("dx.f32", dx, n * 4) ||
              put("dgamma.f32", dg, C * 4) || put("dbeta.f32", db, C * 4) ||
              put("rm_out.f32", rm, C * 4) || put("rv_out.f32", rv, C * 4) ||
              put("y_eval.f32", ye, n * 4) || put("meta.json", meta, (size_t)len);
    free(x), free(g), free(b), free(rm), free(rv), free(dout), free(rm0);
    free(rv0), free(y), free(dx), free(ye), free(mean), free(is), free(dg);
    free(db);
    return bad ? 1 : 0;
}

static int dump_layer(const char *kind, uint64_t seed)
{
    if (!strcmp(kind, "bn1d"))
        return dump_bn(seed, 8, 5, 1, kind);
    if (!strcmp(kind, "bn2d"))
        return dump_bn(seed, 4, 3, 30, kind);
    deft_rng_t r = deft_rng_make(seed, 0, 2, DEFT_STREAM_TEST);
    const int B = 4, C = 3, HW = 30;
    const size_t n = (size_t)B * C * HW;
    char meta[256];
    int len = snprintf(meta, sizeof meta, "{\"mode\": \"layer\", \"kind\": \"%s\", "
                       "\"shape\": [%d, %d, 5, 6]}\n", kind, B, C);
    if (!strcmp(kind, "gap")) {
        float *x = randv(n, -1, 1, &r), *dout = randv((size_t)B * C, -1, 1, &r);
        float *y = randv((size_t)B * C, 0, 0, &r), *dx = randv(n, 0, 0, &r);
        deft_gap_forward(y, x, B, C, HW);
        deft_gap_backward(dx, dout, B, C, HW);
        int bad = put("x.f32", x, n * 4) || put("dout.f32", dout, (size_t)B * C * 4) ||
                  put("y.f32", y, (size_t)B * C * 4) || put("dx.f32", dx, n * 4) ||
                  put("meta.json", meta, (size_t)len);
        free(x), free(dout), free(y), free(dx);
        return bad ? 1 : 0;
    }
    if (!strcmp(kind, "add")) {
        float *a = randv(n, -1, 1, &r), *b = randv(n, -1, 1, &r);
        float *dout = randv(n, -1, 1, &r), *y = randv(n, 0, 0, &r);
        deft_add_forward(y, a, b, n);
        // the gradient reaches both inputs unchanged
        int bad = put("a.f32", a, n * 4) || put("b.f32", b, n * 4) ||
                  put("dout.f32", dout, n * 4) || put("y.f32", y, n * 4) ||
                  put("da.f32", dout, n * 4) || put("db.f32", dout, n * 4) ||
                  put("meta.json", meta, (size_t)len);
        free(a), free(b), free(dout), free(y);
        return bad ? 1 : 0;
    }
    fprintf(stderr, "nn_dump: unknown layer '%s' (bn1d, bn2d, gap, add)\n", kind);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "model")) {
        g_dir = argv[5];
        int B = atoi(argv[4]);
        if (B < 2 || B > 4096) {
            fprintf(stderr, "nn_dump: BATCH must be in [2, 4096]\n");
            return 2;
        }
        return dump_model(argv[2], strtoull(argv[3], NULL, 10), B);
    }
    if (argc == 5 && !strcmp(argv[1], "layer")) {
        g_dir = argv[4];
        return dump_layer(argv[2], strtoull(argv[3], NULL, 10));
    }
    fprintf(stderr, "usage: nn_dump model NAME SEED BATCH OUTDIR\n"
                    "       nn_dump layer bn1d|bn2d|gap|add SEED OUTDIR\n");
    return 2;
}
