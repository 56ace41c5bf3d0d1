/* Logistic regression: data, losses, gradients and smoothness constants.
 * Every dot product and every sum over rows is accumulated in double, so
 * the gradients the optimizers see carry float rounding only from the
 * stored data and the float iterate, not from the arithmetic. */
#include "convex/convex.h"

#include "convex/rows.h"
#include "core/internal.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>

/* log(1 + exp(-t)) without overflow. */
static double softplus_neg(double t)
{
    return t > 0 ? log1p(exp(-t)) : -t + log1p(exp(t));
}

/* The dense kernels of rows.h, out of line (see there). The dot products
 * keep 8 independent double accumulators: a single running sum is one
 * long dependency chain that the compiler may not reorder (no
 * -ffast-math), and the full-gradient baselines spend their time here. */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

NOINLINE double deft_logreg_dot_f32(const float *a, const float *x,
                                    size_t d)
{
    double s[8] = {0};
    size_t j = 0;
    for (; j + 8 <= d; j += 8)
        for (int k = 0; k < 8; k++)
            s[k] += (double)a[j + k] * x[j + k];
    for (; j < d; j++)
        s[0] += (double)a[j] * x[j];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

NOINLINE double deft_logreg_dot_f64(const float *a, const double *x,
                                    size_t d)
{
    double s[8] = {0};
    size_t j = 0;
    for (; j + 8 <= d; j += 8)
        for (int k = 0; k < 8; k++)
            s[k] += (double)a[j + k] * x[j + k];
    for (; j < d; j++)
        s[0] += (double)a[j] * x[j];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

NOINLINE void deft_logreg_axpy_f32(double c, const float *a, double *g,
                                   size_t d)
{
    for (size_t j = 0; j < d; j++)
        g[j] += c * a[j];
}

/* d/dt log(1 + exp(-t)) = -1 / (1 + exp(t)); exp overflows to inf for
 * large t and the result is then -0, never NaN. */
static double dloss(double t)
{
    return -1.0 / (1.0 + exp(t));
}

deft_status_t deft_logreg_from_dataset(deft_logreg_t *out,
                                       const deft_dataset_t *ds, int normalize)
{
    const char *fn = "deft_logreg_from_dataset";
    if (!out || !ds)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !out ? "out" : "ds");
    memset(out, 0, sizeof *out);
    if (ds->n_classes != 2)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: the data set has %d classes; logistic regression "
                         "needs exactly 2", fn, ds->n_classes);
    if (ds->n == 0)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: the data set is empty", fn);
    size_t f = (size_t)ds->c * (size_t)ds->h * (size_t)ds->w, d = f + 1;
    float *a = malloc(sizeof(float) * ds->n * d);
    float *b = malloc(sizeof(float) * ds->n);
    if (!a || !b) {
        free(a);
        free(b);
        return deft_fail(DEFT_ERR_NOMEM, "%s: no memory for %zu x %zu floats",
                         fn, ds->n, d);
    }
    for (size_t i = 0; i < ds->n; i++) {
        float *row = a + i * d;
        memcpy(row, ds->x + i * f, sizeof(float) * f);
        row[f] = 1.0f;
        b[i] = ds->y[i] == 1 ? 1.0f : -1.0f;
    }
    out->n = ds->n;
    out->d = d;
    out->a = a;
    out->b = b;
    if (normalize)
        deft_rows_normalize(out);
    return DEFT_OK;
}

void deft_logreg_free(deft_logreg_t *p)
{
    if (!p)
        return;
    free(p->a);
    free(p->b);
    free(p->indptr);
    free(p->indices);
    free(p->values);
    free(p->column_ids);
    memset(p, 0, sizeof *p);
}

/* The swaps of a Fisher-Yates shuffle of n rows drawn from seed: swap(ctx,
 * i - 1, j) for i = n, ..., 2 and j < i - 1 drawn below i (j = i - 1 is
 * drawn too and skipped). Every layout replays the same swaps. */
static void fisher_yates(size_t n, uint64_t seed,
                         void (*swap)(void *ctx, size_t i, size_t j), void *ctx)
{
    deft_rng_t r = deft_rng_make(seed, 0, 0, DEFT_STREAM_DATA);
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)deft_rng_below(&r, i);
        if (j != i - 1)
            swap(ctx, i - 1, j);
    }
}

static void swap_f32(float *v, size_t i, size_t j)
{
    float t = v[i];
    v[i] = v[j];
    v[j] = t;
}

/* Swaps dense rows i and j and their labels. */
static void swap_dense_rows(void *ctx, size_t i, size_t j)
{
    deft_logreg_t *p = ctx;
    for (size_t k = 0; k < p->d; k++)
        swap_f32(p->a, i * p->d + k, j * p->d + k);
    swap_f32(p->b, i, j);
}

/* CSR with scratch: the swaps go to the labels and to perm (row i of the
 * result is row perm[i] of the input); the rows move afterwards. */
typedef struct {
    float *b;
    size_t *perm;
} csr_perm_t;

static void swap_perm(void *ctx, size_t i, size_t j)
{
    csr_perm_t *c = ctx;
    size_t t = c->perm[i];
    c->perm[i] = c->perm[j];
    c->perm[j] = t;
    swap_f32(c->b, i, j);
}

/* Reverses CSR entries [lo, hi) (indices and values). */
static void reverse_entries(deft_logreg_t *p, size_t lo, size_t hi)
{
    for (; lo + 1 < hi; lo++, hi--) {
        uint32_t t = p->indices[lo];
        p->indices[lo] = p->indices[hi - 1];
        p->indices[hi - 1] = t;
        swap_f32(p->values, lo, hi - 1);
    }
}

/* CSR without scratch: swaps rows j < i in place. The entries of rows
 * j..i, laid out as R_j M R_i, become R_i M R_j by three reversals (the
 * whole span, then each part); the starts of rows j+1..i shift by
 * len(R_i) - len(R_j). */
static void swap_csr_rows(void *ctx, size_t i, size_t j)
{
    deft_logreg_t *p = ctx;
    size_t lo = p->indptr[j], hi = p->indptr[i + 1];
    size_t len_j = p->indptr[j + 1] - lo, len_i = hi - p->indptr[i];
    reverse_entries(p, lo, hi);
    reverse_entries(p, lo, lo + len_i);
    reverse_entries(p, lo + len_i, hi - len_j);
    reverse_entries(p, hi - len_j, hi);
    for (size_t k = j + 1; k <= i; k++)
        p->indptr[k] = p->indptr[k] + len_i - len_j;
    swap_f32(p->b, i, j);
}

void deft_logreg_shuffle_csr_in_place(deft_logreg_t *p, uint64_t seed)
{
    fisher_yates(p->n, seed, swap_csr_rows, p);
}

/* Shuffles CSR rows: the permutation into perm, then the rows gathered into
 * new arrays; in place by swaps if there is no memory for that. */
static void shuffle_csr(deft_logreg_t *p, uint64_t seed)
{
    const size_t n = p->n, nnz = p->indptr[n];
    size_t *perm = malloc(sizeof(size_t) * (n + 1));
    size_t *ptr = malloc(sizeof(size_t) * (n + 1));
    uint32_t *idx = malloc(sizeof(uint32_t) * (nnz ? nnz : 1));
    float *val = malloc(sizeof(float) * (nnz ? nnz : 1));
    if (!perm || !ptr || !idx || !val) {
        free(perm);
        free(ptr);
        free(idx);
        free(val);
        deft_logreg_shuffle_csr_in_place(p, seed);
        return;
    }
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    csr_perm_t c = {p->b, perm};
    fisher_yates(n, seed, swap_perm, &c);
    ptr[0] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t lo = p->indptr[perm[i]], len = p->indptr[perm[i] + 1] - lo;
        memcpy(idx + ptr[i], p->indices + lo, sizeof(uint32_t) * len);
        memcpy(val + ptr[i], p->values + lo, sizeof(float) * len);
        ptr[i + 1] = ptr[i] + len;
    }
    free(perm);
    free(p->indptr);
    free(p->indices);
    free(p->values);
    p->indptr = ptr;
    p->indices = idx;
    p->values = val;
    p->nnz = nnz;
}

void deft_logreg_shuffle(deft_logreg_t *p, uint64_t seed)
{
    if (deft_logreg_is_csr(p))
        shuffle_csr(p, seed);
    else
        fisher_yates(p->n, seed, swap_dense_rows, p);
}

void deft_logreg_truncate(deft_logreg_t *p, size_t n)
{
    if (n < p->n)
        p->n = n;
    if (deft_logreg_is_csr(p))
        p->nnz = p->indptr[p->n];
}

/* Folds count 4-byte words of v (floats or uint32) into h, each with its
 * position. */
static uint64_t hash_words(uint64_t h, const void *v, size_t count)
{
    const unsigned char *bytes = v;
    for (size_t i = 0; i < count; i++) {
        uint32_t u;
        memcpy(&u, bytes + 4 * i, 4);
        h = deft_mix64(h ^ (u + ((uint64_t)i << 32)));
    }
    return h;
}

uint64_t deft_logreg_hash(const deft_logreg_t *p)
{
    uint64_t h = deft_mix64(p->n ^ 0x6c6f6772u);
    h = deft_mix64(h ^ p->d);
    if (!deft_logreg_is_csr(p))
        return hash_words(hash_words(h, p->a, p->n * p->d), p->b, p->n);
    h = deft_mix64(h ^ 0x637372u); /* "csr": not the dense hash */
    for (size_t i = 0; i <= p->n; i++)
        h = deft_mix64(h ^ (uint64_t)p->indptr[i]);
    h = hash_words(h, p->indices, p->indptr[p->n]);
    h = hash_words(h, p->values, p->indptr[p->n]);
    return hash_words(h, p->b, p->n);
}

double deft_logreg_loss(const deft_logreg_t *p, size_t lo, size_t hi,
                        const double *x)
{
    double s = 0;
    for (size_t i = lo; i < hi; i++)
        s += softplus_neg(p->b[i] * deft_row_dot_f64(p, i, x));
    return hi > lo ? s / (double)(hi - lo) : 0.0;
}

double deft_logreg_loss_f32(const deft_logreg_t *p, size_t lo, size_t hi,
                            const float *x)
{
    double s = 0;
    for (size_t i = lo; i < hi; i++)
        s += softplus_neg(p->b[i] * deft_row_dot_f32(p, i, x));
    return hi > lo ? s / (double)(hi - lo) : 0.0;
}

/* Mean loss over rows [lo, hi) and its gradient into g (d,), at x given in
 * double (x64) or float (x32; x64 NULL): the two public entry points differ
 * only in the precision of the point. */
static double loss_grad(const deft_logreg_t *p, size_t lo, size_t hi,
                        const double *x64, const float *x32, double *g)
{
    const size_t d = p->d;
    for (size_t j = 0; j < d; j++)
        g[j] = 0;
    double s = 0;
    for (size_t i = lo; i < hi; i++) {
        double t = p->b[i] * (x64 ? deft_row_dot_f64(p, i, x64)
                                  : deft_row_dot_f32(p, i, x32));
        s += softplus_neg(t);
        deft_row_axpy(p, i, p->b[i] * dloss(t), g);
    }
    if (hi > lo) {
        double inv = 1.0 / (double)(hi - lo);
        for (size_t j = 0; j < d; j++)
            g[j] *= inv;
        s *= inv;
    }
    return s;
}

double deft_logreg_loss_grad(const deft_logreg_t *p, size_t lo, size_t hi,
                             const double *x, double *g)
{
    return loss_grad(p, lo, hi, x, NULL, g);
}

double deft_logreg_loss_grad_f32(const deft_logreg_t *p, size_t lo, size_t hi,
                                 const float *x, double *g)
{
    return loss_grad(p, lo, hi, NULL, x, g);
}

void deft_logreg_row_grad_add(const deft_logreg_t *p, size_t i, const float *x,
                              double scale, double *g)
{
    double c = scale * p->b[i] * dloss(p->b[i] * deft_row_dot_f32(p, i, x));
    deft_row_axpy(p, i, c, g);
}

double deft_logreg_objective(const deft_logreg_t *p, double mu, const double *x)
{
    double r = 0;
    for (size_t j = 0; j < p->d; j++)
        r += x[j] * x[j];
    return deft_logreg_loss(p, 0, p->n, x) + 0.5 * mu * r;
}

double deft_logreg_objective_f32(const deft_logreg_t *p, double mu,
                                 const float *x)
{
    double r = 0;
    for (size_t j = 0; j < p->d; j++)
        r += (double)x[j] * x[j];
    return deft_logreg_loss_f32(p, 0, p->n, x) + 0.5 * mu * r;
}

double deft_logreg_smooth_max(const deft_logreg_t *p, size_t lo, size_t hi)
{
    double m = 0;
    for (size_t i = lo; i < hi; i++) {
        double s = deft_row_sqnorm(p, i);
        m = s > m ? s : m;
    }
    return m / 4.0;
}

/* diag (d,) = the column sums of squares of rows [lo, hi), times scale. */
static void column_sqsums(const deft_logreg_t *p, size_t lo, size_t hi,
                          double scale, double *diag)
{
    for (size_t j = 0; j < p->d; j++)
        diag[j] = 0;
    for (size_t i = lo; i < hi; i++) {
        size_t len;
        const float *v = deft_row_values(p, i, &len);
        for (size_t k = 0; k < len; k++) {
            size_t j = p->indptr ? p->indices[p->indptr[i] + k] : k;
            diag[j] += scale * (double)v[k] * v[k];
        }
    }
}

double deft_logreg_smooth_avg(const deft_logreg_t *p, size_t lo, size_t hi,
                              double tol, int max_iter, int *iters)
{
    return deft_logreg_smooth_masked(p, lo, hi, 1.0, tol, max_iter, iters);
}

double deft_logreg_smooth_masked(const deft_logreg_t *p, size_t lo,
                                 size_t hi, double q, double tol,
                                 int max_iter, int *iters)
{
    const size_t d = p->d;
    if (iters)
        *iters = 0;
    if (hi <= lo)
        return 0.0;
    const double scale = 1.0 / (4.0 * (double)(hi - lo));
    double *v = malloc(sizeof(double) * d), *u = malloc(sizeof(double) * d);
    double *diag = q < 1.0 ? malloc(sizeof(double) * d) : NULL;
    if (!v || !u || (q < 1.0 && !diag)) {
        free(v);
        free(u);
        free(diag);
        return NAN;
    }
    if (diag)
        column_sqsums(p, lo, hi, scale * (1.0 - q), diag);
    deft_rng_t r = deft_rng_make(0x5eed, 0, 0, DEFT_STREAM_INIT);
    double nv = 0;
    for (size_t j = 0; j < d; j++) {
        v[j] = 2.0 * deft_rng_uniform_f64(&r) - 1.0;
        nv += v[j] * v[j];
    }
    for (size_t j = 0; j < d; j++)
        v[j] /= sqrt(nv);
    double lam = 0;
    int it = 0;
    while (it < max_iter) {
        it++;
        /* u = (q A^T A + (1 - q) Diag(A^T A)) v / (4 m); with ||v|| = 1,
         * v.u is the Rayleigh quotient. */
        for (size_t j = 0; j < d; j++)
            u[j] = diag ? diag[j] * v[j] : 0;
        for (size_t i = lo; i < hi; i++)
            deft_row_axpy(p, i, deft_row_dot_f64(p, i, v) * scale * q, u);
        double rq = 0, nu = 0;
        for (size_t j = 0; j < d; j++) {
            rq += v[j] * u[j];
            nu += u[j] * u[j];
        }
        nu = sqrt(nu);
        if (!(nu > 0))
            break; /* A v = 0: the data are all zero */
        for (size_t j = 0; j < d; j++)
            v[j] = u[j] / nu;
        int done = fabs(rq - lam) <= tol * rq;
        lam = rq;
        if (done)
            break;
    }
    free(v);
    free(u);
    free(diag);
    if (iters)
        *iters = it;
    return lam;
}
