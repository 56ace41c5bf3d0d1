/* Training throughput of a model (default lenet) on synthetic 28x28
 * images, batch 128, one OpenBLAS thread: images per second through
 * forward + backward + a plain SGD update (p -= lr * g). Next to it,
 * measured in the same run, two workers on two cores (one thread and one
 * model each, batch 64 each: a global batch of 128) and, for lenet and
 * preresnet20, the time of the sgemm calls of one step made alone. For
 * the models whose convs run on oneDNN (preresnet20, vgg11bn; see
 * src/nn/conv2d_dnnl.c), the same step on deft's own conv kernels is
 * measured too, in the same run.
 * PyTorch's figure for the same model is measured by
 * bench/bench_models.sh, which runs this and bench/bench_torch_models.py
 * one after the other and prints the ratio.
 *
 * Usage: bench_train [--model NAME] [--batch B] [steps] [reps]
 * The last line is machine-readable, with the median over the reps (the
 * figure bench/bench_torch_models.py gives for PyTorch):
 *   RESULT model=NAME batch=B images_per_s=X */
#include "bench_common.h"
#include "core/internal.h"
#include "core/rng.h"
#include "nn/layers.h"
#include "nn/nn.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 128 /* lenet's sgemm table below is for this batch */
#define N_IMAGES 1024
#define WARMUP 3

static deft_model_kind_t g_kind = DEFT_MODEL_LENET;
static int g_own; /* trainers on deft's own conv kernels, not oneDNN's */

typedef struct {
    deft_model_t *m;
    float *params, *grad, *x;
    int32_t *y;
    int batch;
    size_t P;
} trainer_t;

static int trainer_init(trainer_t *t, int batch, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->batch = batch;
    if (deft_model_create(&t->m, g_kind, 1, 28, 28, 10, batch) != DEFT_OK)
        return -1;
    if (g_own)
        deft_model_set_convs(t->m, DEFT_CONVS_OWN);
    t->P = deft_model_num_params(t->m);
    t->params = deft_alloc(t->P * sizeof(float));
    t->grad = deft_alloc(t->P * sizeof(float));
    t->x = deft_alloc((size_t)N_IMAGES * 784 * sizeof(float));
    t->y = deft_alloc((size_t)N_IMAGES * sizeof(int32_t));
    if (!t->params || !t->grad || !t->x || !t->y)
        return -1;
    deft_model_init_params(t->m, t->params, seed, DEFT_INIT_TORCH);
    // MNIST-like pixels: mostly background, so that ReLU/pool patterns
    // (and the sparse backward's work) resemble real training
    deft_rng_t r = deft_rng_make(seed, 0, 0, DEFT_STREAM_TEST);
    for (size_t i = 0; i < (size_t)N_IMAGES * 784; i++)
        t->x[i] = deft_rng_uniform(&r) < 0.8f ? 0.0f : deft_rng_uniform(&r);
    for (int i = 0; i < N_IMAGES; i++)
        t->y[i] = (int32_t)deft_rng_below(&r, 10);
    return 0;
}

static void trainer_free(trainer_t *t)
{
    deft_model_destroy(t->m);
    deft_free(t->params), deft_free(t->grad), deft_free(t->x), deft_free(t->y);
}

/* steps training steps over the synthetic set; returns 0 on success. */
static int train(trainer_t *t, int steps)
{
    const int per_set = N_IMAGES / t->batch > 0 ? N_IMAGES / t->batch : 1;
    for (int s = 0; s < steps; s++) {
        const size_t first = (size_t)(s % per_set) * t->batch;
        double loss;
        if (deft_model_loss_grad(t->m, t->params, t->x + first * 784,
                                 t->y + first, t->batch, t->grad, &loss,
                                 NULL) != DEFT_OK)
            return -1;
        const float lr = 0.01f;
        for (size_t i = 0; i < t->P; i++)
            t->params[i] -= lr * t->grad[i];
    }
    return 0;
}

/* ---- the sgemm calls of one lenet step, alone --------------------------- */

typedef struct {
    int ta, tb, m, n, k, count;
} gemm_call_t;

/* The sgemm calls deft's lenet makes per step at batch 128: conv2 forward
 * one image at a time (conv1's forward is a direct kernel, and both convs'
 * backward is sparse, without sgemm), dense layers forward and backward. */
static const gemm_call_t deft_calls[] = {
    {0, 0, 16, 100, 150, BATCH},   // conv2 forward, per image
    {0, 1, BATCH, 120, 400, 1},    // fc1 forward
    {0, 1, BATCH, 84, 120, 1},     // fc2 forward
    {0, 1, BATCH, 10, 84, 1},      // fc3 forward
    {1, 0, 10, 84, BATCH, 1},      // fc3 dW
    {0, 0, BATCH, 84, 10, 1},      // fc3 dx
    {1, 0, 84, 120, BATCH, 1},     // fc2 dW
    {0, 0, BATCH, 120, 84, 1},     // fc2 dx
    {1, 0, 120, 400, BATCH, 1},    // fc1 dW
    {0, 0, BATCH, 400, 120, 1},    // fc1 dx
};

/* What a plain im2col + sgemm step calls on top of those: conv1 forward,
 * and the convs' backward. */
static const gemm_call_t plain_conv_calls[] = {
    {0, 0, 6, 784, 25, BATCH},     // conv1 forward, per image
    {0, 1, 6, 25, 784, BATCH},     // conv1 dW, per image
    {0, 1, 16, 150, 100, BATCH},   // conv2 dW, per image
    {1, 0, 150, 100, 16, BATCH},   // conv2 dcol, per image
};

static double time_gemms(const gemm_call_t *calls, size_t n, float *a,
                         float *b, float *c, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        for (size_t i = 0; i < n; i++) {
            const gemm_call_t *g = &calls[i];
            const int lda = g->ta ? g->m : g->k, ldb = g->tb ? g->k : g->n;
            for (int j = 0; j < g->count; j++)
                cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans,
                            g->tb ? CblasTrans : CblasNoTrans, g->m, g->n,
                            g->k, 1.0f, a, lda, b, ldb, 0.0f, c, g->n);
        }
        double t = bench_now() - t0;
        best = t < best ? t : best;
    }
    return best;
}

/* ---- two workers ---------------------------------------------------------- */

typedef struct {
    trainer_t t;
    int steps;
    pthread_barrier_t *start;
    double seconds;
    int status;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    w->status = train(&w->t, WARMUP);
    pthread_barrier_wait(w->start);
    double t0 = bench_now();
    w->status |= train(&w->t, w->steps);
    w->seconds = bench_now() - t0;
    return NULL;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void sgemm_table(double best, int reps);
static void preresnet_sgemm(double best, int batch, int reps);

/* Best and median seconds per step of one thread at batch over reps of
 * steps; 0, or -1 on a failure (printed). */
static int time_steps(int batch, int steps, int reps, double *best,
                      double *median)
{
    trainer_t t;
    if (trainer_init(&t, batch, 1) != 0 || train(&t, WARMUP) != 0) {
        fprintf(stderr, "bench_train: setup failed: %s\n", deft_last_error());
        trainer_free(&t);
        return -1;
    }
    double step_s[64];
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        if (train(&t, steps) != 0) {
            fprintf(stderr, "bench_train: %s\n", deft_last_error());
            trainer_free(&t);
            return -1;
        }
        step_s[r] = (bench_now() - t0) / steps;
    }
    qsort(step_s, (size_t)reps, sizeof step_s[0], compare_double);
    *best = step_s[0], *median = step_s[reps / 2];
    trainer_free(&t);
    return 0;
}

int main(int argc, char **argv)
{
    int batch = BATCH, pos = 0, steps = 0, reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            if (deft_model_parse(argv[++i], &g_kind) != DEFT_OK) {
                fprintf(stderr, "bench_train: %s\n", deft_last_error());
                return 2;
            }
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            batch = atoi(argv[++i]);
        } else if (pos == 0) {
            steps = atoi(argv[i]), pos++;
        } else if (pos == 1) {
            reps = atoi(argv[i]), pos++;
        } else {
            pos = -1;
            break;
        }
    }
    if (!steps)  // about a second a rep on this machine
        steps = g_kind == DEFT_MODEL_LENET || g_kind == DEFT_MODEL_LOGREG ? 50 : 8;
    if (pos < 0 || steps < 1 || reps < 1 || reps > 64 || batch < 2 ||
        batch > N_IMAGES) {
        fprintf(stderr, "usage: bench_train [--model NAME] [--batch 2..%d] "
                "[steps >= 1] [reps in 1..64]\n", N_IMAGES);
        return 2;
    }
    const char *name = deft_model_name(g_kind);
    openblas_set_num_threads(1);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("OpenBLAS: %s, core %s; OPENBLAS_CORETYPE=%s\n", openblas_get_config(),
           openblas_get_corename(), ct ? (*ct ? ct : "(set, empty)") : "(unset)");
    deft_model_t *probe;
    if (deft_model_create(&probe, g_kind, 1, 28, 28, 10, batch) != DEFT_OK) {
        fprintf(stderr, "bench_train: %s\n", deft_last_error());
        return 1;
    }
    const int blk = deft_model_onednn(probe);
    deft_model_destroy(probe);
    printf("%s, 28x28x1, batch %d, 1 thread, %d steps per rep, best and "
           "median of %d reps; convs on %s\n\n",
           name, batch, steps, reps,
           blk == 16 ? "oneDNN (nChw16c)"
           : blk     ? "oneDNN (nChw8c)"
                     : "deft's own kernels");

    double best, median;
    if (time_steps(batch, steps, reps, &best, &median) != 0)
        return 1;
    printf("training throughput:  %8.0f images/s (best), %8.0f (median); "
           "step %.3f ms\n",
           batch / best, batch / median, 1e3 * best);
    double own_best = best;
    if (blk) {  // the same step on deft's own conv kernels
        double own_median;
        g_own = 1;
        if (time_steps(batch, steps, reps, &own_best, &own_median) != 0)
            return 1;
        g_own = 0;
        printf("same run, convs on deft's own kernels: %8.0f images/s "
               "(median); oneDNN's / own = %.2f\n",
               batch / own_median, own_median / median);
    }
    if (g_kind == DEFT_MODEL_LENET && batch == BATCH)
        sgemm_table(best, reps);
    if (g_kind == DEFT_MODEL_PRERESNET20)
        preresnet_sgemm(own_best, batch, reps);

    // two workers, each its own model and half the batch, started together
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    double total_best = 0;
    for (int r = 0; r < (reps < 3 ? reps : 3); r++) {
        worker_t w[2];
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            if (trainer_init(&w[i].t, batch / 2, 10 + (uint64_t)i) != 0)
                return 1;
            w[i].steps = steps, w[i].start = &start, w[i].status = 0;
        }
        for (int i = 0; i < 2; i++)
            pthread_create(&th[i], NULL, worker_main, &w[i]);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        const double slowest =
            w[0].seconds > w[1].seconds ? w[0].seconds : w[1].seconds;
        const double ips = 2.0 * (batch / 2) * steps / slowest;
        total_best = ips > total_best ? ips : total_best;
        for (int i = 0; i < 2; i++) {
            if (w[i].status != 0) {
                fprintf(stderr, "bench_train: worker failed: %s\n",
                        deft_last_error());
                return 1;
            }
            trainer_free(&w[i].t);
        }
    }
    pthread_barrier_destroy(&start);
    printf("two workers (1 thread, batch %d each): %8.0f images/s, %.2fx one "
           "thread\n",
           batch / 2, total_best, total_best * best / batch);
    // the median, as bench/bench_torch_models.py reports PyTorch's
    printf("RESULT model=%s batch=%d images_per_s=%.1f\n", name, batch,
           batch / median);
    return 0;
}

/* lenet at batch 128: the step against its own sgemm calls made alone. */
static void sgemm_table(double best, int reps)
{
    // scratch big enough for every call's operands
    const size_t big = 200000;
    float *a = deft_alloc(big * sizeof(float)), *b = deft_alloc(big * sizeof(float));
    float *c = deft_alloc(big * sizeof(float));
    if (!a || !b || !c) {
        deft_free(a), deft_free(b), deft_free(c);
        return;
    }
    for (size_t i = 0; i < big; i++)
        a[i] = b[i] = 0.01f * (float)(i % 97);
    const size_t n_deft = sizeof deft_calls / sizeof deft_calls[0];
    const size_t n_plain = sizeof plain_conv_calls / sizeof plain_conv_calls[0];
    const double g_deft = time_gemms(deft_calls, n_deft, a, b, c, reps + 2);
    const double g_plain =
        g_deft + time_gemms(plain_conv_calls, n_plain, a, b, c, reps + 2);
    printf("same run, the sgemm calls of one step alone:\n");
    printf("  the calls this step makes:         %.3f ms; step / sgemm = "
           "%.2f\n",
           1e3 * g_deft, best / g_deft);
    printf("  a plain im2col+sgemm step's calls: %.3f ms; step / sgemm = "
           "%.2f\n",
           1e3 * g_plain, best / g_plain);
    deft_free(a), deft_free(b), deft_free(c);
}

/* preresnet20: the sgemm calls of one step made alone, per image, for
 * every conv, two ways:
 *  - im2col + sgemm (forward o = w col, backward dw = d col^T and
 *    dcol = w^T d), PyTorch's own method on this CPU build: their sum
 *    bounds any implementation of that kind on this machine's OpenBLAS;
 *  - the calls deft makes: for a 3x3 stride-1 conv of 4+ channels,
 *    Winograd F(2x2, 3x3)'s 16 products per pass over the T tiles of a
 *    group of images (deft_conv2d_winograd_group; forward (OC, T, C),
 *    weight gradient (OC, C, T), input gradient (C, T, OC)); the rest as
 *    above, except the stem's forward, a direct kernel, and its input
 *    gradient, which nothing needs. */
static void preresnet_sgemm(double best, int batch, int reps)
{
    // convs as (C, H, W, OC, k, stride, count): the stem, 2 x 3 blocks'
    // 3x3 convs per stage, the strided first convs and 1x1 shortcuts
    static const int convs[][7] = {
        {1, 28, 28, 16, 3, 1, 1},  {16, 28, 28, 16, 3, 1, 6},
        {16, 28, 28, 32, 3, 2, 1}, {32, 14, 14, 32, 3, 1, 5},
        {16, 28, 28, 32, 1, 2, 1}, {32, 14, 14, 64, 3, 2, 1},
        {64, 7, 7, 64, 3, 1, 5},   {32, 14, 14, 64, 1, 2, 1},
    };
    enum { NC = sizeof convs / sizeof convs[0] };
    gemm_call_t plain[3 * NC], ours[3 * NC];
    size_t np = 0, no = 0;
    for (size_t i = 0; i < NC; i++) {
        const int *c = convs[i];
        const int K = c[0] * c[4] * c[4], oh = (c[1] + 2 * (c[4] / 2) - c[4]) / c[5] + 1;
        const int P = oh * oh, count = c[6] * batch;
        plain[np++] = (gemm_call_t){0, 0, c[3], P, K, count};  // forward
        plain[np++] = (gemm_call_t){0, 1, c[3], K, P, count};  // dw
        if (i > 0)                                             // dcol
            plain[np++] = (gemm_call_t){1, 0, K, P, c[3], count};
        deft_conv2d_shape_t s;
        deft_conv2d_shape(&s, c[0], c[1], c[2], c[3], c[4], c[4] / 2, c[5]);
        if (deft_conv2d_uses_winograd(&s)) {
            // products over groups of G images of T tiles (count * batch
            // is a multiple of G for these batches and shapes)
            const int G = deft_conv2d_winograd_group(&s);
            const int T = G * ((oh + 1) / 2) * ((oh + 1) / 2);
            const int n = 16 * ((count + G - 1) / G);
            ours[no++] = (gemm_call_t){0, 0, c[3], T, c[0], n};
            ours[no++] = (gemm_call_t){0, 1, c[3], c[0], T, n};
            ours[no++] = (gemm_call_t){1, 0, c[0], T, c[3], n};
        } else if (i > 0) {  // strided or 1x1: the same three calls
            for (size_t j = np - 3; j < np; j++)
                ours[no++] = plain[j];
        } else {  // the stem: its weight gradient only
            ours[no++] = plain[np - 1];
        }
    }
    const size_t big = 1 << 20;
    float *a = deft_alloc(big * sizeof(float)), *b = deft_alloc(big * sizeof(float));
    float *c = deft_alloc(big * sizeof(float));
    if (a && b && c) {
        for (size_t i = 0; i < big; i++)
            a[i] = b[i] = 0.01f * (float)(i % 97);
        const int r = reps < 3 ? reps : 3;
        const double g = time_gemms(plain, np, a, b, c, r);
        const double w = time_gemms(ours, no, a, b, c, r);
        printf("same run, one step's conv sgemm calls alone (deft's own "
               "kernels):\n"
               "  as im2col + sgemm:      %6.1f ms; no such step beats %.0f "
               "images/s here\n"
               "  as deft makes them:     %6.1f ms (Winograd for the 3x3 "
               "stride-1 convs); own step / sgemm = %.2f\n",
               1e3 * g, batch / g, 1e3 * w, best / w);
    }
    deft_free(a), deft_free(b), deft_free(c);
}
