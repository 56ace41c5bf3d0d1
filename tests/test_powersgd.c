/* powersgd (src/compress/powersgd.c): exact on rank-r matrices, near the
 * Eckart-Young optimum after warm-started steps, message sizes, the
 * two-round protocol across workers, bitwise determinism and state
 * save/load through the optimizer, and argument errors. */
#include "testutil.h"

#include "compress/compress.h"
#include "core/internal.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static deft_compressor_t *make_psgd(const deft_layout_t *l, int rank)
{
    deft_compressor_params_t p = {DEFT_COMP_POWERSGD, 1, DEFT_SCOPE_TENSOR, 0,
                                  16, 1234, 0, rank};
    deft_compressor_t *c = NULL;
    assert_status(deft_compressor_create(&c, l, &p), DEFT_OK);
    return c;
}

static float *falloc(size_t n)
{
    float *v = calloc(n, sizeof(float));
    assert_non_null(v);
    return v;
}

/* A (m, n) = U (m, r) diag(s) V^T with orthonormal U, V (Gram-Schmidt of
 * random columns, in double). */
static void make_spectrum(float *A, int m, int n, const double *s, int r,
                          uint64_t seed)
{
    double *U = calloc((size_t)m * r, sizeof(double));
    double *V = calloc((size_t)n * r, sizeof(double));
    assert_true(U && V);
    deft_rng_t g = deft_rng_make(seed, 0, 0, DEFT_STREAM_TEST);
    for (int pass = 0; pass < 2; pass++) {
        double *X = pass ? V : U;
        int rows = pass ? n : m;
        for (int i = 0; i < rows * r; i++)
            X[i] = deft_rng_uniform_f64(&g) - 0.5;
        for (int j = 0; j < r; j++) {
            for (int k = 0; k < j; k++) {
                double d = 0;
                for (int i = 0; i < rows; i++)
                    d += X[i * r + k] * X[i * r + j];
                for (int i = 0; i < rows; i++)
                    X[i * r + j] -= d * X[i * r + k];
            }
            double nn = 0;
            for (int i = 0; i < rows; i++)
                nn += X[i * r + j] * X[i * r + j];
            for (int i = 0; i < rows; i++)
                X[i * r + j] /= sqrt(nn);
        }
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double a = 0;
            for (int k = 0; k < r; k++)
                a += U[i * r + k] * s[k] * V[j * r + k];
            A[i * n + j] = (float)a;
        }
    free(U);
    free(V);
}

static double frob(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (b ? b[i] : 0.0f);
        s += d * d;
    }
    return sqrt(s);
}

/* One worker: v -> residual, returns C(v) in c_out. */
static void compress_local(deft_compressor_t *c, uint64_t step, float *v,
                           float *c_out, size_t d)
{
    void *msg = malloc(deft_compressor_msg_bytes(c));
    assert_non_null(msg);
    deft_compressor_encode_local(c, step, v, msg);
    memset(c_out, 0, d * sizeof(float));
    deft_compressor_decode_add(c, msg, 1.0f, c_out);
    free(msg);
}

/* A matrix of rank exactly r is reproduced by rank r in one step (P = M Q
 * spans M's columns), and the residual is ~0. */
static void test_exact_low_rank(void **state)
{
    (void)state;
    enum { M = 40, N = 30 };
    for (int r = 1; r <= 4; r++) {
        size_t sizes[1] = {M * N}, rows[1] = {M};
        deft_layout_t l = {1, sizes, rows};
        deft_compressor_t *c = make_psgd(&l, r);
        assert_int_equal(deft_compressor_msg_bytes(c), 4 * (size_t)r * (M + N));
        float *A = falloc(M * N), *v = falloc(M * N), *C = falloc(M * N);
        double s[4] = {3, 2, 1, 0.5};
        make_spectrum(A, M, N, s, r, 10 + r);
        memcpy(v, A, sizeof(float) * M * N);
        compress_local(c, 0, v, C, M * N);
        double rel = frob(C, A, M * N) / frob(A, NULL, M * N);
        printf("rank %d: ||C - A|| / ||A|| = %.3g, residual %.3g\n", r, rel,
               frob(v, NULL, M * N) / frob(A, NULL, M * N));
        assert_true(rel < 1e-5);
        assert_true(frob(v, NULL, M * N) < 1e-5 * frob(A, NULL, M * N));
        /* residual + C = A (the compressor's contract) */
        for (int i = 0; i < M * N; i++)
            assert_close(v[i] + C[i], A[i], 1e-5, 1e-6);
        free(A), free(v), free(C);
        deft_compressor_destroy(c);
    }
}

/* Warm-started power iteration on a fixed full-rank matrix: after a few
 * steps the rank-r error is within 1% of the best rank-r error,
 * sqrt(sum_{i > r} s_i^2) (Eckart-Young), and it was not after one step
 * from a random start, so the warm start is what got it there. */
static void test_eckart_young(void **state)
{
    (void)state;
    enum { M = 64, N = 48, R = 12 };
    double s[R];
    for (int i = 0; i < R; i++)
        s[i] = 10.0 / (1 << i / 2) * (1.0 + 0.1 * (R - i)); /* decaying, gaps */
    float *A = falloc(M * N), *v = falloc(M * N), *C = falloc(M * N);
    make_spectrum(A, M, N, s, R, 99);
    for (int r = 1; r <= 4; r *= 2) {
        size_t sizes[1] = {M * N}, rows[1] = {M};
        deft_layout_t l = {1, sizes, rows};
        deft_compressor_t *c = make_psgd(&l, r);
        double best = 0;
        for (int i = r; i < R; i++)
            best += s[i] * s[i];
        best = sqrt(best);
        double first = 0, err = 0;
        for (int step = 0; step < 30; step++) {
            memcpy(v, A, sizeof(float) * M * N);
            compress_local(c, (uint64_t)step, v, C, M * N);
            err = frob(C, A, M * N);
            if (step == 0)
                first = err;
        }
        printf("rank %d: best %.6g, first step %.6g, after 30 steps %.6g\n", r,
               best, first, err);
        assert_true(err >= best * (1 - 1e-4)); /* nothing beats the SVD */
        assert_true(err <= best * 1.01);
        assert_true(first > best * 1.01);
        deft_compressor_destroy(c);
    }
    free(A), free(v), free(C);
}

/* Which tensors are compressed, and the message: q (m + n) floats per
 * compressed matrix, vectors and matrices too small to gain sent whole. */
static void test_message_size(void **state)
{
    (void)state;
    /* 30x20 (rank 2: 100 < 600), 4x3 (rank 2: 14 >= 12, whole), a vector
     * of 7, a 1x9 "matrix" (a vector), 16x1 (a column: whole), 8x8 at
     * rank min(2, 8) = 2: 32 < 64. */
    size_t sizes[6] = {600, 12, 7, 9, 16, 64}, rows[6] = {30, 4, 0, 1, 16, 8};
    deft_layout_t l = {6, sizes, rows};
    deft_compressor_t *c = make_psgd(&l, 2);
    assert_int_equal(deft_compressor_msg_bytes(c),
                     4 * (100 + 12 + 7 + 9 + 16 + 32));
    assert_int_equal(deft_compressor_rounds(c), 2);
    size_t off, n;
    deft_compressor_round_span(c, 0, &off, &n);
    assert_int_equal(off, 0);
    assert_int_equal(n, 12 + 7 + 9 + 16 + 30 * 2 + 8 * 2);
    deft_compressor_round_span(c, 1, &off, &n);
    assert_int_equal(off, 12 + 7 + 9 + 16 + 30 * 2 + 8 * 2);
    assert_int_equal(n, 20 * 2 + 8 * 2);
    assert_int_equal(deft_compressor_state_floats(c), 20 * 2 + 8 * 2);
    deft_compressor_destroy(c);
    /* rank 64 on 8x8 is capped at 8 and then not worth it: all whole */
    c = make_psgd(&l, 64);
    assert_int_equal(deft_compressor_msg_bytes(c), 4 * (600 + 12 + 7 + 9 + 16 + 64));
    deft_compressor_destroy(c);
    /* no rows: every tensor is a vector */
    deft_layout_t flat = {6, sizes, NULL};
    c = make_psgd(&flat, 2);
    assert_int_equal(deft_compressor_msg_bytes(c), 4 * 708);
    deft_compressor_destroy(c);
}

/* The protocol by hand for K = 3 workers: sum round 0, encode round 1 from
 * the sum, sum round 1. The decoded sum equals sum_k C(M_k) (each worker's
 * own part is M_k minus its residual), and the residuals sum to sum_k M_k
 * minus the decoded approximation. */
static void test_protocol(void **state)
{
    (void)state;
    enum { K = 3, D = 600 + 5 };
    size_t sizes[2] = {600, 5}, rows[2] = {30, 0};
    deft_layout_t l = {2, sizes, rows};
    deft_compressor_t *c[K];
    float *v[K], *v0[K], *own[K];
    float *msg[K];
    size_t bytes = 0;
    for (int k = 0; k < K; k++) {
        c[k] = make_psgd(&l, 2);
        bytes = deft_compressor_msg_bytes(c[k]);
        msg[k] = falloc(bytes / 4);
        v[k] = falloc(D), v0[k] = falloc(D), own[k] = falloc(D);
        deft_test_fill(v0[k], D, 50 + k);
        memcpy(v[k], v0[k], sizeof(float) * D);
    }
    for (int r = 0; r < 2; r++) {
        for (int k = 0; k < K; k++)
            if (r == 0)
                deft_compressor_encode(c[k], 3, v[k], msg[k]);
            else
                deft_compressor_encode_round(c[k], 3, 1, v[k], msg[k], own[k]);
        size_t off, n;
        deft_compressor_round_span(c[0], r, &off, &n);
        for (size_t i = off; i < off + n; i++) {
            float s = 0;
            for (int k = 0; k < K; k++)
                s += msg[k][i];
            for (int k = 0; k < K; k++)
                msg[k][i] = s;
        }
        if (r == 0) /* round 0 leaves v alone */
            for (int k = 0; k < K; k++)
                assert_memory_equal(v[k], v0[k], sizeof(float) * D);
    }
    float *dec = falloc(D);
    deft_compressor_finish(c[0], msg[0]);
    deft_compressor_decode_add(c[0], msg[0], 1.0f, dec);
    for (int i = 0; i < D; i++) {
        double so = 0, sr = 0, sm = 0;
        for (int k = 0; k < K; k++) {
            so += own[k][i];
            sr += v[k][i];
            sm += v0[k][i];
            assert_close(own[k][i] + v[k][i], v0[k][i], 1e-5, 1e-6);
        }
        assert_close(dec[i], so, 1e-4, 1e-5);
        assert_close(sr, sm - dec[i], 1e-4, 1e-5);
        if (i >= 600) /* vectors: exact, residual 0 */
            for (int k = 0; k < K; k++)
                assert_true(v[k][i] == 0.0f && own[k][i] == v0[k][i]);
    }
    /* the approximation is not trivial: rank 2 of a random 30x20 keeps a
     * fraction of it, and not all */
    double kept = frob(dec, NULL, 600), total = 0;
    for (int i = 0; i < 600; i++) {
        double s = 0;
        for (int k = 0; k < K; k++)
            s += v0[k][i];
        total += s * s;
    }
    total = sqrt(total);
    assert_true(kept > 0.2 * total && kept < 0.9 * total);
    for (int k = 0; k < K; k++) {
        deft_compressor_destroy(c[k]);
        free(msg[k]), free(v[k]), free(v0[k]), free(own[k]);
    }
    free(dec);
}

/* A zero matrix gives zero P and Q without NaN, and the next step draws a
 * fresh Q and compresses again. */
static void test_zero_matrix(void **state)
{
    (void)state;
    size_t sizes[1] = {200}, rows[1] = {20};
    deft_layout_t l = {1, sizes, rows};
    deft_compressor_t *c = make_psgd(&l, 2);
    float v[200], C[200], A[200];
    memset(v, 0, sizeof v);
    compress_local(c, 0, v, C, 200);
    for (int i = 0; i < 200; i++)
        assert_true(C[i] == 0.0f && v[i] == 0.0f);
    deft_test_fill(A, 200, 8);
    memcpy(v, A, sizeof v);
    compress_local(c, 1, v, C, 200);
    double kept = frob(C, NULL, 200);
    assert_true(kept > 0.1 * frob(A, NULL, 200));
    assert_true(isfinite(kept));
    deft_compressor_destroy(c);
}

static void test_arguments(void **state)
{
    (void)state;
    size_t sizes[2] = {600, 5}, rows[2] = {30, 0}, bad[2] = {7, 0};
    deft_layout_t l = {2, sizes, rows}, lb = {2, sizes, bad};
    deft_compressor_params_t p = {DEFT_COMP_POWERSGD, 1, DEFT_SCOPE_TENSOR, 0,
                                  16, 1, 0, 0};
    deft_compressor_t *c = NULL;
    assert_status(deft_compressor_create(&c, &l, &p), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("powersgd_rank = 0");
    p.powersgd_rank = 2;
    p.scope = DEFT_SCOPE_GLOBAL;
    assert_status(deft_compressor_create(&c, &l, &p), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("DEFT_SCOPE_TENSOR");
    p.scope = DEFT_SCOPE_TENSOR;
    assert_status(deft_compressor_create(&c, &lb, &p), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("layout->rows[0] = 7 does not divide");
    assert_null(c);
}

/* ---- through the optimizer, on the threads backend ---------------------- */

/* Model: a 24x16 matrix, a 16-vector, a 10x12 matrix; worker k's gradient
 * at x is x - t_k (targets t_k): the optimum is avg(t_k). */
enum { OD = 24 * 16 + 16 + 10 * 12, OK_ = 4 };
static const size_t O_SIZES[3] = {24 * 16, 16, 10 * 12};
static const size_t O_ROWS[3] = {24, 0, 10};

typedef struct {
    deft_algo_t algo;
    int rank;
    int steps;
    int save_at;        /* save the state after this many steps (-1: no)   */
    unsigned char *saved[OK_];
    size_t saved_size;
    int resume;         /* start from saved[] instead of from scratch      */
    float momentum;
    float x[OK_][OD];
    uint64_t payload, allreduces;
    deft_status_t load_status;
} orun_t;

static deft_status_t opt_worker(deft_comm_t *comm, void *arg)
{
    orun_t *a = arg;
    int r = deft_comm_rank(comm);
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.algo = a->algo;
    cfg.compressor = DEFT_COMP_POWERSGD;
    cfg.powersgd_rank = a->rank;
    cfg.lr = 0.1f;
    cfg.momentum = a->momentum;
    cfg.seed = 5;
    deft_layout_t l = {3, O_SIZES, O_ROWS};
    float x0[OD], t[OD], g[OD];
    deft_test_fill(x0, OD, 1);
    deft_test_fill(t, OD, 100 + r);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &l, x0, &cfg);
    if (st != DEFT_OK)
        return st;
    int s0 = 0;
    if (a->resume) {
        a->load_status = deft_optim_state_load(opt, a->saved[r], a->saved_size);
        if (a->load_status != DEFT_OK) {
            deft_optim_destroy(opt);
            return DEFT_OK;
        }
        s0 = a->save_at;
    }
    deft_comm_reset_stats(comm);
    for (int s = s0; s < a->steps && st == DEFT_OK; s++) {
        if (s == a->save_at && !a->resume) {
            a->saved_size = deft_optim_state_size(opt);
            a->saved[r] = malloc(a->saved_size);
            st = deft_optim_state_save(opt, a->saved[r], a->saved_size);
        }
        const float *pt;
        deft_optim_ask(opt, &pt);
        for (int i = 0; i < OD; i++)
            g[i] = pt[i] - t[i];
        deft_step_info_t info;
        if (st == DEFT_OK)
            st = deft_optim_tell(opt, g, &info);
        if (r == 0)
            a->payload = info.payload_bytes;
    }
    deft_comm_stats_t cs;
    deft_comm_get_stats(comm, &cs);
    if (r == 0)
        a->allreduces = cs.n_allreduce;
    const float *x;
    deft_optim_params(opt, &x);
    memcpy(a->x[r], x, sizeof a->x[r]);
    deft_optim_destroy(opt);
    return st;
}

/* EF and DEF over powersgd: r (m + n) floats per matrix plus the vector in
 * two allreduces per step; bitwise repeatable; a state saved mid-run
 * continues bitwise (the warm start is in it); a state from another rank
 * is refused; and EF converges to the optimum avg(t_k). */
static void test_optimizer(void **state)
{
    (void)state;
    const deft_algo_t algos[2] = {DEFT_ALGO_EF, DEFT_ALGO_DEF};
    for (int ai = 0; ai < 2; ai++) {
        orun_t *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
        assert_true(a && b);
        a->algo = b->algo = algos[ai];
        a->rank = b->rank = 2;
        a->steps = b->steps = 40;
        a->save_at = 17;
        b->save_at = -1;
        assert_status(deft_run_threads(OK_, opt_worker, a), DEFT_OK);
        assert_status(deft_run_threads(OK_, opt_worker, b), DEFT_OK);
        assert_int_equal(a->payload, 4 * (2 * (24 + 16) + 16 + 2 * (10 + 12)));
        assert_int_equal(b->allreduces, 2 * 40);
        assert_memory_equal(a->x, b->x, sizeof a->x);
        /* resume from step 17 */
        orun_t *c = calloc(1, sizeof *c);
        assert_non_null(c);
        *c = *a;
        c->resume = 1;
        memset(c->x, 0, sizeof c->x);
        assert_status(deft_run_threads(OK_, opt_worker, c), DEFT_OK);
        assert_status(c->load_status, DEFT_OK);
        assert_memory_equal(c->x, b->x, sizeof b->x);
        /* the warm start matters: the same resume with Q zeroed differs
         * (Q ends the blob, before its CRC-32, which is made anew) */
        size_t qbytes = 4 * (16 * 2 + 12 * 2), body = a->saved_size - 4;
        for (int r = 0; r < OK_; r++) {
            memset(a->saved[r] + body - qbytes, 0, qbytes);
            uint32_t crc = deft_crc32(0, a->saved[r], body);
            memcpy(a->saved[r] + body, &crc, 4);
        }
        assert_status(deft_run_threads(OK_, opt_worker, c), DEFT_OK);
        assert_true(memcmp(c->x, b->x, sizeof b->x) != 0);
        /* rank 3's state is bigger: refused */
        c->rank = 3;
        assert_status(deft_run_threads(OK_, opt_worker, c), DEFT_OK);
        assert_status(c->load_status, DEFT_ERR_FORMAT);
        for (int r = 0; r < OK_; r++)
            free(a->saved[r]);
        free(a), free(b), free(c);
    }
    /* Convergence of EF and DEF to the optimum avg(t_k), without
     * momentum (with momentum 0.9 at lr 0.1 EF diverges here, over rbgs at
     * ratio 16 as over powersgd: the step is too long for error feedback,
     * not a fault of the compressor). */
    float t[OD], avg[OD] = {0}, x0[OD];
    for (int r = 0; r < OK_; r++) {
        deft_test_fill(t, OD, 100 + r);
        for (int i = 0; i < OD; i++)
            avg[i] += t[i] / OK_;
    }
    deft_test_fill(x0, OD, 1);
    for (int ai = 0; ai < 2; ai++) {
        orun_t *a = calloc(1, sizeof *a);
        assert_non_null(a);
        a->algo = algos[ai];
        a->rank = 1;
        a->steps = 400;
        a->save_at = -1;
        a->momentum = 0.0f;
        assert_status(deft_run_threads(OK_, opt_worker, a), DEFT_OK);
        double e0 = frob(x0, avg, OD), e = frob(a->x[0], avg, OD);
        printf("%s powersgd r=1: ||x - x*|| from %.4g to %.4g in 400 steps\n",
               deft_algo_name(algos[ai]), e0, e);
        assert_true(e < 1e-4 * e0);
        free(a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_low_rank),
        cmocka_unit_test(test_eckart_young),
        cmocka_unit_test(test_message_size),
        cmocka_unit_test(test_protocol),
        cmocka_unit_test(test_zero_matrix),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_optimizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
