/* Sparse (CSR) logistic problems read by deft_logreg_load_libsvm: the same
 * numbers as the dense path on the same file (losses, gradients, constants,
 * P*, shuffles), the exact CSR of a small file (column compaction, bias,
 * labels, explicit zeros), a 20 000 x 10^6 file in bounded memory with a
 * CG solve to machine precision, a file naming feature 900000000, and
 * clean errors naming the file for bad input. */
#include "testutil.h"

#include "convex/convex.h"
#include "convex/rows.h"
#include "core/internal.h"
#include "core/rng.h"
#include "data/data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static char tmpdir[64];

/* ---- files and fixtures ---------------------------------------------- */

static void tpath(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

/* Writes text to tmpdir/name, gzip-compressed if gz. */
static void write_file(const char *name, const char *text, int gz)
{
    char p[256];
    tpath(p, sizeof p, name);
    deft_test_write_file(p, text, strlen(text), gz);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/deft-test-sparse-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

/* The files the tests write (all in tmpdir, no subdirectories). */
static const char *const files[] = {
    "all-columns.svm", "gaps.svm", "exact.svm", "exact.svm.gz", "big.svm",
    "two-lines.svm", "three.svm", "one.svm", "garbage.svm", "empty.svm",
    "bad-index.svm"};

static int teardown(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        char p[256];
        tpath(p, sizeof p, files[k]);
        unlink(p);
    }
    rmdir(tmpdir);
    return 0;
}

/* The process's peak resident set, in MiB. */
static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

static void assert_empty_problem(const deft_logreg_t *p)
{
    assert_true(p->n == 0 && p->d == 0 && p->nnz == 0 && p->d_file == 0);
    assert_true(!p->a && !p->b && !p->indptr && !p->indices && !p->values &&
                !p->column_ids);
}

/* ---- the same file, dense and sparse ---------------------------------- */

/* n rows over features 1..F, each present with probability density and
 * for row i always feature (i mod F) + 1, unless skip[j] (never present;
 * written as an explicit "j:0" now and then, which must not count).
 * Values in [-1, 1) with 7 digits, labels lab[0] / lab[1] from a noisy
 * linear teacher. */
static void write_random_svm(const char *name, int n, int F, double density,
                             const int *skip, const char *lab[2],
                             uint64_t seed)
{
    size_t cap = (size_t)n * (size_t)F * 16 + 64, at = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    deft_rng_t r = deft_rng_make(seed, 0, 0, DEFT_STREAM_TEST);
    for (int i = 0; i < n; i++) {
        char row[4096];
        size_t len = 0;
        double t = 0.3 * (2 * deft_rng_uniform_f64(&r) - 1);
        for (int j = 1; j <= F; j++) {
            double u = deft_rng_uniform_f64(&r);
            if (skip && skip[j]) {
                if (u < 0.05)
                    len += (size_t)snprintf(row + len, sizeof row - len,
                                            " %d:0", j);
                continue;
            }
            if (j != i % F + 1 && u >= density)
                continue;
            float v = 2.0f * deft_rng_uniform(&r) - 1.0f;
            t += v * sin((double)j);
            len += (size_t)snprintf(row + len, sizeof row - len, " %d:%.7g",
                                    j, v);
        }
        at += (size_t)snprintf(text + at, cap - at, "%s%s\n", lab[t > 0], row);
    }
    write_file(name, text, 0);
    free(text);
}

/* xd (dense columns, dd) = xs (sparse columns) mapped through column_ids;
 * columns the sparse problem dropped are 0. */
static void to_dense(const deft_logreg_t *sp, const double *xs, double *xd,
                     size_t dd)
{
    memset(xd, 0, sizeof(double) * dd);
    for (size_t j = 0; j + 1 < sp->d; j++)
        xd[sp->column_ids[j] - 1] = xs[j];
    xd[dd - 1] = xs[sp->d - 1]; /* the bias */
}

/* Sparse gradient gs against the dense gd: equal on mapped columns, and
 * exactly 0 on the dropped ones. */
static void assert_grads_match(const deft_logreg_t *sp, const double *gs,
                               const double *gd, size_t dd)
{
    double *m = malloc(sizeof(double) * dd);
    assert_non_null(m);
    to_dense(sp, gs, m, dd);
    for (size_t c = 0; c < dd; c++)
        assert_close(m[c], gd[c], 1e-12, 1e-16);
    free(m);
}

/* Row i of the sparse problem expanded to dd dense columns equals the
 * dense row i, bit for bit, and so do the labels. */
static void assert_rows_match(const deft_logreg_t *sp, const deft_logreg_t *de)
{
    const size_t dd = de->d;
    float *row = malloc(sizeof(float) * dd);
    assert_non_null(row);
    assert_int_equal(sp->n, de->n);
    for (size_t i = 0; i < sp->n; i++) {
        memset(row, 0, sizeof(float) * dd);
        for (size_t k = sp->indptr[i]; k < sp->indptr[i + 1]; k++) {
            uint32_t c = sp->indices[k];
            row[c + 1 == sp->d ? dd - 1 : sp->column_ids[c] - 1] =
                sp->values[k];
        }
        if (memcmp(row, de->a + i * dd, sizeof(float) * dd) != 0 ||
            sp->b[i] != de->b[i])
            fail_msg("row %zu differs between the sparse and the dense copy",
                     i);
    }
    free(row);
}

static void load_both(const char *name, int normalize, deft_logreg_t *de,
                      deft_logreg_t *sp)
{
    char p[256];
    tpath(p, sizeof p, name);
    deft_dataset_t ds;
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_OK);
    assert_status(deft_logreg_from_dataset(de, &ds, normalize), DEFT_OK);
    deft_dataset_free(&ds);
    assert_status(deft_logreg_load_libsvm(sp, p, normalize, NULL), DEFT_OK);
    assert_true(deft_logreg_is_csr(sp) && sp->a == NULL);
}

/* Losses, gradients (both precisions, whole set and a shard, row by row),
 * P, the smoothness constants and P* agree between the two copies. */
static void compare_models(const deft_logreg_t *de, const deft_logreg_t *sp,
                           uint64_t seed)
{
    const size_t ds = sp->d, dd = de->d, n = sp->n;
    double *xs = malloc(sizeof(double) * ds), *xd = malloc(sizeof(double) * dd);
    double *gs = malloc(sizeof(double) * ds), *gd = malloc(sizeof(double) * dd);
    float *fs = malloc(sizeof(float) * ds), *fd = malloc(sizeof(float) * dd);
    assert_true(xs && xd && gs && gd && fs && fd);
    deft_rng_t r = deft_rng_make(seed, 0, 0, DEFT_STREAM_TEST);
    for (size_t j = 0; j < ds; j++) {
        fs[j] = 2.0f * deft_rng_uniform(&r) - 1.0f;
        xs[j] = fs[j];
    }
    to_dense(sp, xs, xd, dd);
    for (size_t j = 0; j < dd; j++)
        fd[j] = (float)xd[j];
    const size_t lo[2] = {0, 17}, hi[2] = {n, n / 2};
    for (int s = 0; s < 2; s++) {
        double ls = deft_logreg_loss_grad(sp, lo[s], hi[s], xs, gs);
        assert_close(ls, deft_logreg_loss_grad(de, lo[s], hi[s], xd, gd),
                     1e-13, 0);
        assert_grads_match(sp, gs, gd, dd);
        assert_close(deft_logreg_loss(sp, lo[s], hi[s], xs), ls, 1e-14, 0);
        ls = deft_logreg_loss_grad_f32(sp, lo[s], hi[s], fs, gs);
        assert_close(ls, deft_logreg_loss_grad_f32(de, lo[s], hi[s], fd, gd),
                     1e-13, 0);
        assert_grads_match(sp, gs, gd, dd);
        assert_close(deft_logreg_loss_f32(sp, lo[s], hi[s], fs), ls, 1e-14, 0);
        assert_close(deft_logreg_smooth_max(sp, lo[s], hi[s]),
                     deft_logreg_smooth_max(de, lo[s], hi[s]), 1e-14, 0);
        int its, itd;
        double ps = deft_logreg_smooth_avg(sp, lo[s], hi[s], 0, 400, &its);
        double pd = deft_logreg_smooth_avg(de, lo[s], hi[s], 0, 400, &itd);
        assert_close(ps, pd, 1e-12, 0);
        ps = deft_logreg_smooth_masked(sp, lo[s], hi[s], 0.2, 0, 400, NULL);
        pd = deft_logreg_smooth_masked(de, lo[s], hi[s], 0.2, 0, 400, NULL);
        assert_close(ps, pd, 1e-12, 0);
    }
    memset(gs, 0, sizeof(double) * ds);
    memset(gd, 0, sizeof(double) * dd);
    for (size_t i = 0; i < n; i += 7) {
        deft_logreg_row_grad_add(sp, i, fs, 0.5, gs);
        deft_logreg_row_grad_add(de, i, fd, 0.5, gd);
    }
    assert_grads_match(sp, gs, gd, dd);
    assert_close(deft_logreg_objective(sp, 0.1, xs),
                 deft_logreg_objective(de, 0.1, xd), 1e-13, 0);
    assert_close(deft_logreg_objective_f32(sp, 0.1, fs),
                 deft_logreg_objective_f32(de, 0.1, fd), 1e-13, 0);

    /* P*: dense Newton on one side, CG on the other (AUTO on CSR). */
    const double mu = 1e-2;
    deft_logreg_solution_t ss, sd;
    memset(xs, 0, sizeof(double) * ds);
    memset(xd, 0, sizeof(double) * dd);
    assert_status(deft_logreg_solve(sp, mu, DEFT_NEWTON_AUTO, xs, &ss),
                  DEFT_OK);
    assert_status(deft_logreg_solve(de, mu, DEFT_NEWTON_DENSE, xd, &sd),
                  DEFT_OK);
    assert_close(ss.pstar, sd.pstar, 1e-12, 0);
    assert_true(ss.grad_norm < 1e-13 && sd.grad_norm < 1e-13);
    to_dense(sp, xs, gd, dd);
    for (size_t c = 0; c < dd; c++)
        assert_close(gd[c], xd[c], 0, 1e-9); /* dropped columns: x*_c = 0 */
    free(xs);
    free(xd);
    free(gs);
    free(gd);
    free(fs);
    free(fd);
}

/* Shuffling both copies with one seed gives the same rows (so the same
 * shards), and truncating both the same problem. */
static void compare_shuffled(deft_logreg_t *de, deft_logreg_t *sp)
{
    uint64_t hs = deft_logreg_hash(sp), hd = deft_logreg_hash(de);
    assert_true(hs != hd);
    deft_logreg_shuffle(de, 1234);
    deft_logreg_shuffle(sp, 1234);
    assert_rows_match(sp, de);
    assert_true(deft_logreg_hash(sp) != hs && deft_logreg_hash(de) != hd);
    hs = deft_logreg_hash(sp);
    deft_logreg_truncate(de, 200);
    deft_logreg_truncate(sp, 200);
    assert_int_equal(sp->n, 200);
    assert_int_equal(sp->nnz, sp->indptr[200]);
    assert_true(deft_logreg_hash(sp) != hs);
    assert_rows_match(sp, de);
    compare_models(de, sp, 99);
}

static void test_sparse_matches_dense(void **state)
{
    (void)state;
    const char *pm[2] = {"-1", "+1"}, *two_four[2] = {"2", "4"};
    write_random_svm("all-columns.svm", 300, 50, 0.3, NULL, pm, 1);
    int skip[61] = {0};
    skip[17] = skip[33] = skip[41] = 1;
    write_random_svm("gaps.svm", 300, 60, 0.3, skip, two_four, 2);
    for (int normalize = 0; normalize < 2; normalize++) {
        deft_logreg_t de, sp;
        load_both("all-columns.svm", normalize, &de, &sp);
        assert_int_equal(sp.d, 51);
        assert_int_equal(de.d, 51);
        compare_models(&de, &sp, 5);
        compare_shuffled(&de, &sp);
        deft_logreg_free(&de);
        deft_logreg_free(&sp);

        load_both("gaps.svm", normalize, &de, &sp);
        assert_int_equal(de.d, 61);
        assert_int_equal(sp.d, 58); /* 60 features, 3 empty, + bias */
        assert_int_equal(sp.d_file, 60);
        compare_models(&de, &sp, 6);
        compare_shuffled(&de, &sp);
        deft_logreg_free(&de);
        deft_logreg_free(&sp);
    }
    /* The same file gives the same hash; normalizing changes it. */
    deft_logreg_t a, b;
    char p[256];
    tpath(p, sizeof p, "gaps.svm");
    assert_status(deft_logreg_load_libsvm(&a, p, 0, NULL), DEFT_OK);
    assert_status(deft_logreg_load_libsvm(&b, p, 0, NULL), DEFT_OK);
    assert_true(deft_logreg_hash(&a) == deft_logreg_hash(&b));
    deft_logreg_free(&b);
    assert_status(deft_logreg_load_libsvm(&b, p, 1, NULL), DEFT_OK);
    assert_true(deft_logreg_hash(&a) != deft_logreg_hash(&b));
    /* Without memory for the gathered rows, the shuffle swaps them in
     * place: the same permutation. */
    deft_logreg_shuffle(&a, 77);
    deft_logreg_free(&b);
    assert_status(deft_logreg_load_libsvm(&b, p, 0, NULL), DEFT_OK);
    deft_logreg_shuffle_csr_in_place(&b, 77);
    assert_memory_equal(a.indptr, b.indptr, sizeof(size_t) * (a.n + 1));
    assert_memory_equal(a.indices, b.indices, sizeof(uint32_t) * a.nnz);
    assert_memory_equal(a.values, b.values, sizeof(float) * a.nnz);
    assert_memory_equal(a.b, b.b, sizeof(float) * a.n);
    deft_logreg_free(&a);
    deft_logreg_free(&b);
}

/* ---- the CSR of a small file, entry by entry --------------------------- */

static void test_exact_csr(void **state)
{
    (void)state;
    const char *text = "# labels 3 and 7; feature 5 only ever explicitly 0\n"
                       "7 2:0.5 5:0 9:-2   # a comment\r\n"
                       "\n"
                       "3 9:1 12:4\n"
                       "7\n";
    write_file("exact.svm", text, 0);
    write_file("exact.svm.gz", text, 1);
    const char *names[2] = {"exact.svm", "exact.svm.gz"};
    for (int t = 0; t < 4; t++) {
        char p[256];
        tpath(p, sizeof p, names[t % 2]);
        int normalize = t / 2;
        deft_logreg_t sp;
        size_t nf = 0;
        assert_status(deft_logreg_load_libsvm(&sp, p, normalize, &nf), DEFT_OK);
        assert_int_equal(sp.n, 3);
        assert_int_equal(sp.d, 4);
        assert_int_equal(sp.nnz, 7);
        assert_int_equal(nf, 12);
        assert_int_equal(sp.d_file, 12);
        const size_t ptr[4] = {0, 3, 6, 7};
        const uint32_t idx[7] = {0, 1, 3, 1, 2, 3, 3}, ids[4] = {2, 9, 12, 0};
        const float b[3] = {1, -1, 1};
        float val[7] = {0.5f, -2, 1, 1, 4, 1, 1};
        if (normalize) {
            const double s0 = 1 / sqrt(0.25 + 4 + 1), s1 = 1 / sqrt(1 + 16 + 1);
            for (int k = 0; k < 3; k++)
                val[k] = (float)(val[k] * s0);
            for (int k = 3; k < 6; k++)
                val[k] = (float)(val[k] * s1);
        }
        assert_memory_equal(sp.indptr, ptr, sizeof ptr);
        assert_memory_equal(sp.indices, idx, sizeof idx);
        assert_memory_equal(sp.column_ids, ids, sizeof ids);
        assert_memory_equal(sp.b, b, sizeof b);
        for (int k = 0; k < 7; k++)
            assert_close(sp.values[k], val[k], 0, 0);
        /* At x = 0 every loss is log 2. */
        double x[4] = {0}, g[4];
        assert_close(deft_logreg_loss_grad(&sp, 0, 3, x, g), log(2.0), 1e-15,
                     0);
        deft_logreg_free(&sp);
        assert_empty_problem(&sp);
    }
}

/* ---- a file naming feature 900000000 ------------------------------------ */

static void test_huge_index_tiny_memory(void **state)
{
    (void)state;
    write_file("two-lines.svm", "1 3:1\n-1 900000000:2\n", 0);
    char p[256];
    tpath(p, sizeof p, "two-lines.svm");
    double before = peak_rss_mib();
    deft_logreg_t sp;
    size_t nf;
    assert_status(deft_logreg_load_libsvm(&sp, p, 0, &nf), DEFT_OK);
    double after = peak_rss_mib();
    printf("  peak RSS %.1f MiB before the load, %.1f MiB after\n", before,
           after);
    if (!(after - before < 16))
        fail_msg("peak RSS grew from %.1f to %.1f MiB loading a 2-line file",
                 before, after);
    assert_int_equal(sp.n, 2);
    assert_int_equal(sp.d, 3);
    assert_int_equal(sp.nnz, 4);
    assert_int_equal(nf, 900000000);
    const uint32_t ids[3] = {3, 900000000, 0};
    assert_memory_equal(sp.column_ids, ids, sizeof ids);
    double x[3] = {0};
    deft_logreg_solution_t s;
    assert_status(deft_logreg_solve(&sp, 0.1, DEFT_NEWTON_AUTO, x, &s),
                  DEFT_OK);
    assert_true(s.grad_norm < 1e-14 && s.pstar < log(2.0));
    assert_true(x[0] > 0 && x[1] < 0); /* feature 3 says +1, the other -1 */
    /* No dense Newton on CSR rows: the message says what to use. */
    assert_status(deft_logreg_solve(&sp, 0.1, DEFT_NEWTON_DENSE, x, &s),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("DEFT_NEWTON_CG");
    deft_logreg_free(&sp);
}

/* ---- 20 000 rows x 10^6 features ----------------------------------------- */

enum { BIG_N = 20000, BIG_F = 1000000, BIG_NNZ = 30 };

/* Draws BIG_NNZ distinct features, log-uniform over [1, BIG_F] (a few
 * frequent ones, a long tail, like words), into idx in increasing order. */
static void draw_features(deft_rng_t *r, long *idx)
{
    int m = 0;
    while (m < BIG_NNZ) {
        double u = deft_rng_uniform_f64(r);
        long j = (long)exp(u * log((double)BIG_F + 1));
        j = j < 1 ? 1 : j > BIG_F ? BIG_F : j;
        int at = m;
        while (at > 0 && idx[at - 1] > j)
            at--;
        if (at > 0 && idx[at - 1] == j)
            continue;
        memmove(idx + at + 1, idx + at, sizeof(long) * (size_t)(m - at));
        idx[at] = j;
        m++;
    }
}

/* BIG_N rows of draw_features, values in (0, 1], labels from a +-1
 * teacher (a hash of the feature) with noise. used (BIG_F + 1) marks the
 * features used; returns the largest. */
static long write_big_svm(const char *name, unsigned char *used)
{
    char p[256];
    tpath(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    deft_rng_t r = deft_rng_make(2024, 0, 0, DEFT_STREAM_TEST);
    long max_idx = 0;
    for (int i = 0; i < BIG_N; i++) {
        long idx[BIG_NNZ];
        int val[BIG_NNZ];
        draw_features(&r, idx);
        double t = 0.5 * (2 * deft_rng_uniform_f64(&r) - 1);
        for (int k = 0; k < BIG_NNZ; k++) {
            val[k] = 1 + (int)deft_rng_below(&r, 999);
            t += (deft_mix64((uint64_t)idx[k]) & 1 ? 1e-3 : -1e-3) * val[k];
            used[idx[k]] = 1;
            max_idx = idx[k] > max_idx ? idx[k] : max_idx;
        }
        fputs(t > 0 ? "+1" : "-1", f);
        for (int k = 0; k < BIG_NNZ; k++)
            fprintf(f, " %ld:0.%03d", idx[k], val[k]);
        fputc('\n', f);
    }
    assert_int_equal(fclose(f), 0);
    return max_idx;
}

/* Central differences of the loss along three directions match its
 * gradient: mostly along the gradient (with noise), random on the columns
 * of one row, random everywhere (nearly orthogonal to the gradient in
 * 10^5+ dimensions: an absolute check). */
static void check_directional_derivatives(const deft_logreg_t *p)
{
    const size_t d = p->d;
    double *x = malloc(sizeof(double) * d), *v = malloc(sizeof(double) * d);
    double *g = malloc(sizeof(double) * d), *xt = malloc(sizeof(double) * d);
    assert_true(x && v && g && xt);
    deft_rng_t r = deft_rng_make(31, 0, 0, DEFT_STREAM_TEST);
    for (size_t j = 0; j < d; j++)
        x[j] = 4 * deft_rng_uniform_f64(&r) - 2;
    deft_logreg_loss_grad(p, 0, p->n, x, g);
    double gn = 0;
    for (size_t j = 0; j < d; j++)
        gn += g[j] * g[j];
    gn = sqrt(gn);
    for (int dir = 0; dir < 3; dir++) {
        double nv = 0, gv = 0;
        memset(v, 0, sizeof(double) * d);
        for (size_t j = 0; j < d; j++) {
            double u = 2 * deft_rng_uniform_f64(&r) - 1;
            v[j] = dir == 0   ? g[j] / gn + u / sqrt((double)d)
                   : dir == 2 ? u
                              : 0;
        }
        for (size_t k = p->indptr[3]; dir == 1 && k < p->indptr[4]; k++)
            v[p->indices[k]] = 2 * deft_rng_uniform_f64(&r) - 1;
        for (size_t j = 0; j < d; j++)
            nv += v[j] * v[j];
        for (size_t j = 0; j < d; j++)
            gv += g[j] * v[j] / sqrt(nv);
        const double h = 1e-4;
        double f[2];
        for (int s = 0; s < 2; s++) {
            for (size_t j = 0; j < d; j++)
                xt[j] = x[j] + (s ? -h : h) * v[j] / sqrt(nv);
            f[s] = deft_logreg_loss(p, 0, p->n, xt);
        }
        printf("  direction %d: derivative %.9g, finite difference %.9g\n",
               dir, gv, (f[0] - f[1]) / (2 * h));
        assert_close((f[0] - f[1]) / (2 * h), gv, 1e-7, 1e-11);
    }
    free(x);
    free(v);
    free(g);
    free(xt);
}

static void test_million_features(void **state)
{
    (void)state;
    unsigned char *used = calloc(BIG_F + 1, 1);
    assert_non_null(used);
    double t0 = deft_wall_s();
    long max_idx = write_big_svm("big.svm", used);
    size_t cols = 0;
    for (long j = 1; j <= BIG_F; j++)
        cols += used[j];
    double t1 = deft_wall_s();
    char p[256];
    tpath(p, sizeof p, "big.svm");
    deft_logreg_t sp;
    assert_status(deft_logreg_load_libsvm(&sp, p, 1, NULL), DEFT_OK);
    double t2 = deft_wall_s();
    assert_int_equal(sp.n, BIG_N);
    assert_int_equal(sp.d, cols + 1);
    assert_int_equal(sp.nnz, (size_t)BIG_N * (BIG_NNZ + 1));
    assert_int_equal(sp.d_file, max_idx);
    for (size_t j = 0; j + 1 < sp.d; j++)
        assert_true(used[sp.column_ids[j]] &&
                    (j == 0 || sp.column_ids[j] > sp.column_ids[j - 1]));
    free(used);
    check_directional_derivatives(&sp);
    double t3 = deft_wall_s();

    const double mu = 1e-5; /* P* well below log 2; condition <= 2.5e4 */
    double *x = calloc(sp.d, sizeof(double));
    assert_non_null(x);
    deft_logreg_solution_t s;
    assert_status(deft_logreg_solve(&sp, mu, DEFT_NEWTON_AUTO, x, &s), DEFT_OK);
    double t4 = deft_wall_s();
    printf("  n %zu, d %zu of %zu features, nnz %zu; P* = %.17g, |grad| "
           "%.2g, %d Newton its\n  times: write %.2f s, load %.2f s, "
           "derivatives %.2f s, solve %.2f s\n",
           sp.n, sp.d, sp.d_file, sp.nnz, s.pstar, s.grad_norm, s.iters,
           t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    assert_true(s.grad_norm < 1e-13);
    assert_true(s.pstar < log(2.0));
    assert_close(deft_logreg_objective(&sp, mu, x), s.pstar, 1e-14, 0);
    free(x);
    double rss = peak_rss_mib();
    printf("  peak RSS %.1f MiB\n", rss);
    if (!(rss < 1024))
        fail_msg("peak RSS %.1f MiB, want < 1024 MiB", rss);
    deft_logreg_free(&sp);
}

/* ---- bad input --------------------------------------------------------- */

static void expect_bad(const char *name, const char *text, deft_status_t want,
                       const char *needle)
{
    char p[256], where[300];
    write_file(name, text, 0);
    tpath(p, sizeof p, name);
    deft_logreg_t sp;
    size_t nf = 7;
    deft_status_t st = deft_logreg_load_libsvm(&sp, p, 1, &nf);
    const char *msg = deft_last_error();
    snprintf(where, sizeof where, "%s", p);
    if (st != want || !strstr(msg, where) || !strstr(msg, needle))
        fail_msg("%s: got %s \"%s\", want %s mentioning \"%s\" and \"%s\"",
                 name, deft_status_str(st), msg, deft_status_str(want), where,
                 needle);
    assert_empty_problem(&sp);
    assert_int_equal(nf, 0);
}

static void test_bad_files(void **state)
{
    (void)state;
    expect_bad("three.svm", "1 1:1\n2 2:1\n1 1:2\n3 2:1\n2 1:1\n",
               DEFT_ERR_FORMAT,
               ":4: label 3 is a third distinct label (the file's labels "
               "range over [1, 3])");
    expect_bad("one.svm", "5 1:1\n5 2:1\n", DEFT_ERR_FORMAT,
               "every example has label 5");
    expect_bad("garbage.svm", "hello world\n", DEFT_ERR_FORMAT,
               ":1: bad label 'hello'");
    expect_bad("empty.svm", "# nothing\n\n", DEFT_ERR_FORMAT, "no examples");
    expect_bad("bad-index.svm", "1 1:1\n-1 4:1 2:1\n", DEFT_ERR_FORMAT,
               ":2: index 2 after index 4");
    char p[256];
    tpath(p, sizeof p, "no-such.svm");
    deft_logreg_t sp;
    assert_status(deft_logreg_load_libsvm(&sp, p, 0, NULL), DEFT_ERR_IO);
    assert_error_mentions("no-such.svm");
    assert_empty_problem(&sp);
    assert_status(deft_logreg_load_libsvm(&sp, NULL, 0, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("path is NULL");
    assert_status(deft_logreg_load_libsvm(NULL, p, 0, NULL),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("out is NULL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* first: its peak-RSS check needs a low peak */
        cmocka_unit_test(test_huge_index_tiny_memory),
        cmocka_unit_test(test_exact_csr),
        cmocka_unit_test(test_sparse_matches_dense),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_million_features),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
