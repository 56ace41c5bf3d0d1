/* The problem deft convex solves and its optimum P* (run.h): loading,
 * shuffling and sharding the data, and the P* cache next to the log. */
#include "convex/run.h"

#include "core/internal.h"
#include "core/rng.h"
#include "data/data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the problem ----------------------------------------------------- */

/* Fashion-MNIST's training set, T-shirt/top (+1) against Shirt (-1). */
static deft_status_t load_fmnist(deft_logreg_t *out, const char *data_dir,
                                 int normalize)
{
    deft_dataset_t ds = {0};
    deft_status_t st = deft_dataset_load_mnist_dir(&ds, NULL, data_dir);
    /* Shirt (6) -> class 0 -> label -1, T-shirt/top (0) -> +1. */
    const int32_t keep[2] = {6, 0};
    if (st == DEFT_OK)
        st = deft_dataset_filter_labels(&ds, keep, 2);
    if (st == DEFT_OK)
        st = deft_logreg_from_dataset(out, &ds, normalize);
    deft_dataset_free(&ds);
    return st;
}

/* The data as named by data (checked by the caller), and desc. */
static deft_status_t load_data(deft_logreg_t *out, const char *data,
                               const char *data_dir, int normalize,
                               char *desc, size_t desc_n)
{
    deft_status_t st;
    char line[1024];
    if (!strcmp(data, "fmnist")) {
        st = load_fmnist(out, data_dir, normalize);
        snprintf(line, sizeof line,
                 "fmnist:%s classes T-shirt/top(+1),Shirt(-1)%s",
                 data_dir ? data_dir : DEFT_FASHION_MNIST_DIR,
                 normalize ? " normalized" : "");
    } else {
        size_t features = 0;
        st = deft_logreg_load_libsvm(out, data + 7, normalize, &features);
        snprintf(line, sizeof line, "%s (%zu features in the file)%s", data,
                 features, normalize ? " normalized" : "");
    }
    if (desc && desc_n)
        snprintf(desc, desc_n, "%s", line);
    /* The loaders' invalid arguments are the data's faults here (a data
     * set without the two classes, a directory path too long): keep
     * DEFT_ERR_INVALID_ARG for the caller's usage errors. */
    return st == DEFT_ERR_INVALID_ARG ? DEFT_ERR_FORMAT : st;
}

deft_status_t deft_convex_problem_load(deft_logreg_t *out, const char *data,
                                       const char *data_dir, int normalize,
                                       int workers, char *desc, size_t desc_n)
{
    const char *fn = "deft_convex_problem_load";
    if (desc && desc_n)
        desc[0] = '\0';
    if (!out || !data)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !out ? "out" : "data");
    memset(out, 0, sizeof *out);
    if (workers < 1)
        return deft_fail(DEFT_ERR_INVALID_ARG, "--workers %d: must be >= 1",
                         workers);
    if (strcmp(data, "fmnist") && (strncmp(data, "libsvm:", 7) || !data[7]))
        return deft_fail(DEFT_ERR_INVALID_ARG, "--data '%s': expected fmnist "
                         "or libsvm:PATH", data);
    deft_status_t st = load_data(out, data, data_dir, normalize, desc, desc_n);
    if (st != DEFT_OK) {
        deft_logreg_free(out);
        return st;
    }
    size_t n = out->n, m = n / (size_t)workers;
    if (m < 2) {
        deft_logreg_free(out);
        if (n >= 2) /* fewer workers would do: a usage error */
            return deft_fail(DEFT_ERR_INVALID_ARG, "%zu examples cannot be "
                             "split over %d workers (at least 2 rows each): "
                             "use at most --workers %zu", n, workers, n / 2);
        return deft_fail(DEFT_ERR_FORMAT, "%s holds %zu example(s); at least "
                         "2 are needed", data, n);
    }
    deft_logreg_shuffle(out, DEFT_CONVEX_DATA_SEED);
    deft_logreg_truncate(out, m * (size_t)workers);
    return DEFT_OK;
}

/* ---- the P* cache ---------------------------------------------------- */

uint64_t deft_convex_pstar_key(const deft_logreg_t *prob, double mu)
{
    uint64_t mu_bits;
    memcpy(&mu_bits, &mu, sizeof mu_bits);
    return deft_mix64(deft_logreg_hash(prob) ^ deft_mix64(mu_bits));
}

void deft_convex_pstar_path(const char *log_path, uint64_t key, char *out,
                            size_t n)
{
    if (!out || !n)
        return;
    out[0] = '\0';
    if (!log_path)
        return;
    const char *slash = strrchr(log_path, '/');
    int dlen = slash ? (int)(slash - log_path) : 1;
    snprintf(out, n, "%.*s/pstar-%016llx.txt", dlen, slash ? log_path : ".",
             (unsigned long long)key);
}

int deft_convex_pstar_read(const char *path, uint64_t key, double *pstar)
{
    FILE *f = path && path[0] ? fopen(path, "r") : NULL;
    if (!f)
        return 0;
    char line[512];
    int have_key = 0, have_p = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long k;
        char *end;
        if (sscanf(line, "key %llx", &k) == 1)
            have_key = (uint64_t)k == key;
        else if (!strncmp(line, "pstar ", 6)) {
            errno = 0;
            *pstar = strtod(line + 6, &end);
            have_p = end != line + 6 && errno == 0 && isfinite(*pstar);
        }
    }
    fclose(f);
    return have_key && have_p;
}

deft_status_t deft_convex_pstar_write(const char *path, uint64_t key,
                                      const char *desc,
                                      const deft_logreg_t *prob, double mu,
                                      const deft_logreg_solution_t *s)
{
    if (!path || !path[0])
        return DEFT_OK;
    FILE *f = fopen(path, "w");
    if (!f)
        return deft_fail(DEFT_ERR_IO, "cannot write the P* cache %s: %s",
                         path, strerror(errno));
    fprintf(f, "# deft convex: optimum of L2-regularized logistic regression\n"
            "# (Newton in double, %d iterations, ||grad P|| = %.3g)\n"
            "key %016llx\ndata %s\nn %zu\nd %zu\nmu %.17g\npstar %.17g\n",
            s->iters, s->grad_norm, (unsigned long long)key, desc ? desc : "",
            prob->n, prob->d, mu, s->pstar);
    if (fclose(f) != 0)
        return deft_fail(DEFT_ERR_IO, "cannot write the P* cache %s", path);
    return DEFT_OK;
}

deft_status_t deft_convex_optimum(const deft_logreg_t *prob, double mu,
                                  const char *log_path, const char *desc,
                                  double *pstar, int *cached,
                                  deft_status_t *cache_st)
{
    int dummy;
    if (!cached)
        cached = &dummy;
    *cached = 0;
    if (cache_st)
        *cache_st = DEFT_OK;
    if (!prob || !pstar)
        return deft_fail(DEFT_ERR_INVALID_ARG, "computing P*: %s is NULL",
                         !prob ? "prob" : "pstar");
    uint64_t key = deft_convex_pstar_key(prob, mu);
    char path[4096];
    deft_convex_pstar_path(log_path, key, path, sizeof path);
    if ((*cached = deft_convex_pstar_read(path, key, pstar)))
        return DEFT_OK;
    double *xs = calloc(prob->d, sizeof(double));
    deft_logreg_solution_t sol;
    deft_status_t st = xs ? deft_logreg_solve(prob, mu, DEFT_NEWTON_AUTO, xs,
                                              &sol)
                          : deft_fail(DEFT_ERR_NOMEM, "no memory for %zu "
                                      "doubles", prob->d);
    free(xs);
    if (st != DEFT_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", deft_last_error());
        return deft_fail(st, "computing P*: %s", why);
    }
    *pstar = sol.pstar;
    st = deft_convex_pstar_write(path, key, desc, prob, mu, &sol);
    if (cache_st)
        *cache_st = st;
    return DEFT_OK;
}
