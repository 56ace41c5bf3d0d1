/* Cost of one optimizer step without the gradient: ask + tell of def with
 * rbgs (ratio 256, per-tensor) on one worker, next to a STREAM triad over
 * the bytes the step must touch, measured in the same run.
 *
 * Bytes a def step must move per parameter: ask reads x and e and writes
 * the point (12 B); tell reads grad and the point, reads and writes m and
 * e (24 B): 36 B. The sparse part (the block, 1/256 of d) is negligible.
 *
 * usage: bench_optim [d ...]   (default: 1M and 16M floats) */
#include "bench_common.h"
#include "core/rng.h"
#include "deft.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    size_t d;
    deft_algo_t algo;
    int steps;
    double best, median;
} bench_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static deft_status_t worker(deft_comm_t *comm, void *arg)
{
    bench_t *b = arg;
    enum { NT = 16 };
    size_t sizes[NT];
    for (int t = 0; t < NT; t++)
        sizes[t] = b->d / NT + (t < (int)(b->d % NT) ? 1 : 0);
    deft_layout_t layout = {NT, sizes, NULL};
    float *x0 = malloc(b->d * sizeof(float)), *grad = malloc(b->d * sizeof(float));
    if (!x0 || !grad)
        return DEFT_ERR_NOMEM;
    deft_rng_t r = deft_rng_make(1, 0, 0, DEFT_STREAM_TEST);
    for (size_t i = 0; i < b->d; i++) {
        x0[i] = deft_rng_uniform(&r) - 0.5f;
        grad[i] = 1e-3f * (deft_rng_uniform(&r) - 0.5f);
    }
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.algo = b->algo;
    cfg.compressor = DEFT_COMP_RBGS;
    cfg.ratio = 256;
    cfg.weight_decay = 5e-4f;
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &layout, x0, &cfg);
    if (st != DEFT_OK)
        return st;
    double *times = malloc(sizeof(double) * (size_t)b->steps);
    for (int s = -3; s < b->steps && st == DEFT_OK; s++) {
        const float *pt;
        double t0 = bench_now();
        st = deft_optim_ask(opt, &pt);
        if (st == DEFT_OK)
            st = deft_optim_tell(opt, grad, NULL);
        double t = bench_now() - t0;
        if (s >= 0)
            times[s] = t;
    }
    if (st == DEFT_OK) {
        qsort(times, (size_t)b->steps, sizeof(double), cmp_double);
        b->best = times[0];
        b->median = times[b->steps / 2];
    }
    free(times);
    deft_optim_destroy(opt);
    free(x0);
    free(grad);
    return st;
}

int main(int argc, char **argv)
{
    size_t dims[8] = {1u << 20, 1u << 24};
    int ndims = 2;
    if (argc > 1) {
        ndims = 0;
        for (int i = 1; i < argc && ndims < 8; i++)
            dims[ndims++] = (size_t)strtoull(argv[i], NULL, 10);
    }
    printf("bench_optim: one step (ask + tell, no gradient), rbgs ratio 256, "
           "1 worker\n");
    printf("%-6s %10s %11s %11s %13s %9s\n", "algo", "d", "step ms",
           "median ms", "triad-ref ms", "ratio");
    const deft_algo_t algos[] = {DEFT_ALGO_DEF, DEFT_ALGO_EF, DEFT_ALGO_SGD};
    /* Bytes per parameter each algorithm must move (see the top comment):
     * ef skips the point (24 B); sgd reads grad and x, writes the message,
      * then reads the message, m and x and writes m and x (32 B). */
    const double bytes_per[] = {36, 24, 32};
    for (int k = 0; k < ndims; k++) {
        size_t d = dims[k];
        /* Triad moves 12 B per element: time for `bytes` B = t * bytes/12. */
        double triad = bench_triad_seconds(d, 5);
        for (int a = 0; a < 3; a++) {
            bench_t b = {d, algos[a], d >= (1u << 24) ? 10 : 40, 0, 0};
            deft_status_t st = deft_run_threads(1, worker, &b);
            if (st != DEFT_OK) {
                fprintf(stderr, "bench_optim: %s: %s\n", deft_status_str(st),
                        deft_last_error());
                return 1;
            }
            double ref = triad * bytes_per[a] / 12.0;
            printf("%-6s %10zu %11.3f %11.3f %13.3f %8.2fx\n",
                   deft_algo_name(algos[a]), d, b.best * 1e3, b.median * 1e3,
                   ref * 1e3, b.best / ref);
        }
    }
    printf("ratio = best step time / time of a STREAM triad moving the same "
           "bytes (target for def: <= 1.5)\n");
    return 0;
}
