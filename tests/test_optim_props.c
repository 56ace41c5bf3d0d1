/* The properties the papers prove (SPEC §2), checked on a least-squares
 * problem, plus determinism and the one-collective-per-step promise. */
#include "testutil.h"
#include "lsq.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    lsq_t p;
    deft_optim_config_t cfg;
    int steps;
    int nan_step;       /* worker 1 reports NaN gradients from this step   */
    int halve_every;    /* halve the lr every this many steps (0: never)   */
    double dev;         /* the property's worst deviation (set by rank 0)   */
    double control;     /* the same measure for a quantity that must differ */
    float *final_x;     /* (K, D) */
    float *final_e;     /* (K, D) */
    deft_comm_stats_t stats[8];
    deft_status_t tell_status[8];
    char tell_error[8][256];
} run_t;

static double norm2(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += v[i] * v[i];
    return sqrt(s);
}

static void init_x0(float *x0)
{
    deft_test_fill(x0, LSQ_D, 77);
}

static deft_optim_config_t base_cfg(deft_algo_t algo, deft_compressor_kind_t c,
                                    double ratio)
{
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.algo = algo;
    cfg.compressor = c;
    cfg.ratio = ratio;
    cfg.lr = 0.05f;
    cfg.seed = 12345;
    return cfg;
}

/* Property 1: K = 1, lambda = 1: y = x - e of def follows the SGD path
 * (DEF paper eq. 8, Remark 4.5(1)), whatever the compressor. The SGD path
 * is computed alongside in double precision. The control is EF (lambda = 0)
 * whose x - e does not follow it. */
static deft_status_t single_worker_path(deft_comm_t *comm, void *arg)
{
    run_t *a = arg;
    float x0[LSQ_D], grad[LSQ_D];
    init_x0(x0);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, lsq_layout(), x0, &a->cfg);
    if (st != DEFT_OK)
        return st;
    double y[LSQ_D], m[LSQ_D] = {0}, g[LSQ_D];
    for (int j = 0; j < LSQ_D; j++)
        y[j] = x0[j];
    const double mu = a->cfg.momentum, lr = a->cfg.lr, wd = a->cfg.weight_decay;
    a->dev = 0;
    for (int t = 0; t < a->steps; t++) {
        const float *pt, *x, *e;
        if ((st = deft_optim_ask(opt, &pt)) != DEFT_OK)
            break;
        lsq_grad(&a->p, 0, pt, grad);
        if ((st = deft_optim_tell(opt, grad, NULL)) != DEFT_OK)
            break;
        lsq_grad_f64(&a->p, 0, y, g);
        for (int j = 0; j < LSQ_D; j++) {
            m[j] = mu * m[j] + g[j] + wd * y[j];
            y[j] -= lr * m[j];
        }
        deft_optim_params(opt, &x);
        deft_optim_error(opt, &e);
        double diff[LSQ_D];
        for (int j = 0; j < LSQ_D; j++)
            diff[j] = ((double)x[j] - (double)e[j]) - y[j];
        double dev = norm2(diff, LSQ_D) / norm2(y, LSQ_D);
        if (dev > a->dev)
            a->dev = dev;
    }
    deft_optim_destroy(opt);
    return st;
}

static void test_property1_def_k1_lambda1_is_sgd(void **state)
{
    (void)state;
    const deft_compressor_kind_t comps[] = {DEFT_COMP_RBGS, DEFT_COMP_RANDK,
                                            DEFT_COMP_TOPK, DEFT_COMP_SIGN};
    for (size_t c = 0; c < sizeof comps / sizeof comps[0]; c++) {
        run_t a = {0};
        lsq_init(&a.p, 1, 5);
        a.cfg = base_cfg(DEFT_ALGO_DEF, comps[c], 8);
        a.cfg.lambda = 1.0f;
        a.cfg.weight_decay = 1e-3f;
        a.steps = 200;
        assert_status(deft_run_threads(1, single_worker_path, &a), DEFT_OK);
        printf("  def lambda=1 %s: max |y - y_sgd| / |y_sgd| = %.3g\n",
               deft_compressor_name(comps[c]), a.dev);
        assert_close(a.dev, 0.0, 0.0, 1e-5);

        /* Control: with lambda = 0 (EF) the gradient is taken at x, not at
         * y, and x - e leaves the SGD path. */
        a.cfg.algo = DEFT_ALGO_EF;
        a.cfg.lambda = 0.0f;
        assert_status(deft_run_threads(1, single_worker_path, &a), DEFT_OK);
        printf("  ef (control) %s: max deviation = %.3g\n",
               deft_compressor_name(comps[c]), a.dev);
        assert_true(a.dev > 1e-3);
        lsq_free(&a.p);
    }
}

/* Property 2 (Lemma C.1): K = 1, lambda = 1, C(v) = delta * v: x of defa
 * is SGD with iterate averaging, x_{t+1} = x_t + delta (y_{t+1} - x_t). */
static deft_status_t iterate_averaging(deft_comm_t *comm, void *arg)
{
    run_t *a = arg;
    float x0[LSQ_D], grad[LSQ_D];
    init_x0(x0);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, lsq_layout(), x0, &a->cfg);
    if (st != DEFT_OK)
        return st;
    const double delta = 1.0 / a->cfg.ratio, mu = a->cfg.momentum,
                 lr = a->cfg.lr;
    double y[LSQ_D], xr[LSQ_D], m[LSQ_D] = {0}, g[LSQ_D];
    for (int j = 0; j < LSQ_D; j++)
        y[j] = xr[j] = x0[j];
    a->dev = a->control = 0;
    for (int t = 0; t < a->steps; t++) {
        const float *pt, *x;
        if ((st = deft_optim_ask(opt, &pt)) != DEFT_OK ||
            (lsq_grad(&a->p, 0, pt, grad), 0) ||
            (st = deft_optim_tell(opt, grad, NULL)) != DEFT_OK)
            break;
        lsq_grad_f64(&a->p, 0, y, g);
        for (int j = 0; j < LSQ_D; j++) {
            m[j] = mu * m[j] + g[j];
            y[j] -= lr * m[j];
            xr[j] += delta * (y[j] - xr[j]);
        }
        deft_optim_params(opt, &x);
        double diff[LSQ_D], dy[LSQ_D];
        for (int j = 0; j < LSQ_D; j++) {
            diff[j] = (double)x[j] - xr[j];
            dy[j] = (double)x[j] - y[j];
        }
        double dev = norm2(diff, LSQ_D) / norm2(xr, LSQ_D);
        double ctl = norm2(dy, LSQ_D) / norm2(y, LSQ_D);
        a->dev = dev > a->dev ? dev : a->dev;
        a->control = ctl > a->control ? ctl : a->control;
    }
    deft_optim_destroy(opt);
    return st;
}

static void test_property2_defa_is_iterate_averaging(void **state)
{
    (void)state;
    const float mus[] = {0.0f, 0.9f};
    for (int i = 0; i < 2; i++) {
        run_t a = {0};
        lsq_init(&a.p, 1, 9);
        a.cfg = base_cfg(DEFT_ALGO_DEFA, DEFT_COMP_SCALE, 4); /* delta = 1/4 */
        a.cfg.lambda = 1.0f;
        a.cfg.momentum = mus[i];
        a.steps = 200;
        assert_status(deft_run_threads(1, iterate_averaging, &a), DEFT_OK);
        printf("  defa, C(v) = v/4, mu = %.1f: max |x - x_IA| / |x_IA| = %.3g "
               "(x vs the SGD path itself: %.3g)\n", (double)mus[i], a.dev,
               a.control);
        assert_close(a.dev, 0.0, 0.0, 1e-5);
        assert_true(a.control > 1e-3); /* averaging really lags behind SGD */
        lsq_free(&a.p);
    }
}

/* Property 4: for K = 4, y = x - avg(e) (psync: avg(x_k)) moves by exactly
 * -lr * avg(g_k) each step (DEF paper eq. 8), with mu = 0 and wd = 0. The
 * control measures the same for x alone, which does not obey it. */
static deft_status_t average_path(deft_comm_t *comm, void *arg)
{
    run_t *a = arg;
    int r = deft_comm_rank(comm), K = deft_comm_size(comm);
    float x0[LSQ_D], grad[LSQ_D], y[LSQ_D], ynext[LSQ_D], gavg[LSQ_D];
    float xprev[LSQ_D];
    init_x0(x0);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, lsq_layout(), x0, &a->cfg);
    if (st != DEFT_OK)
        return st;
    const int has_e = a->cfg.algo != DEFT_ALGO_PSYNC;
    double worst = 0, worst_ctl = 0;
    /* y = x - avg(e) computed by the test itself from the public views. */
#define AVG_Y(out)                                                            \
    do {                                                                      \
        const float *x_, *e_;                                                 \
        deft_optim_params(opt, &x_);                                          \
        if (has_e) {                                                          \
            deft_optim_error(opt, &e_);                                       \
            memcpy(out, e_, sizeof out);                                      \
            if ((st = deft_comm_allreduce_sum_f32(comm, out, LSQ_D)))         \
                goto done;                                                    \
            for (int j = 0; j < LSQ_D; j++)                                   \
                out[j] = x_[j] - out[j] / K;                                  \
        } else if ((st = deft_optim_output(opt, out))) {                      \
            goto done;                                                        \
        }                                                                     \
    } while (0)
    AVG_Y(y);
    for (int t = 0; t < a->steps; t++) {
        const float *pt, *x;
        if ((st = deft_optim_ask(opt, &pt)) != DEFT_OK)
            goto done;
        lsq_grad(&a->p, r, pt, grad);
        memcpy(gavg, grad, sizeof grad);
        if ((st = deft_comm_allreduce_sum_f32(comm, gavg, LSQ_D)) != DEFT_OK)
            goto done;
        deft_optim_params(opt, &x);
        memcpy(xprev, x, sizeof xprev);
        if ((st = deft_optim_tell(opt, grad, NULL)) != DEFT_OK)
            goto done;
        AVG_Y(ynext);
        double diff[LSQ_D], ctl[LSQ_D], ynorm[LSQ_D];
        deft_optim_params(opt, &x);
        for (int j = 0; j < LSQ_D; j++) {
            double want = (double)y[j] - a->cfg.lr * ((double)gavg[j] / K);
            diff[j] = (double)ynext[j] - want;
            ctl[j] = (double)x[j] -
                     ((double)xprev[j] - a->cfg.lr * ((double)gavg[j] / K));
            ynorm[j] = y[j];
        }
        double dev = norm2(diff, LSQ_D) / norm2(ynorm, LSQ_D);
        double c = norm2(ctl, LSQ_D) / norm2(ynorm, LSQ_D);
        worst = dev > worst ? dev : worst;
        worst_ctl = c > worst_ctl ? c : worst_ctl;
        memcpy(y, ynext, sizeof y);
    }
#undef AVG_Y
done:
    if (r == 0) {
        a->dev = worst;
        a->control = worst_ctl;
    }
    deft_optim_destroy(opt);
    return st;
}

static void test_property4_average_follows_sgd(void **state)
{
    (void)state;
    const deft_algo_t algos[] = {DEFT_ALGO_EF, DEFT_ALGO_DEF, DEFT_ALGO_DEFA,
                                 DEFT_ALGO_SAEF, DEFT_ALGO_PSYNC};
    const deft_compressor_kind_t comps[] = {DEFT_COMP_RBGS, DEFT_COMP_TOPK};
    for (size_t i = 0; i < sizeof algos / sizeof algos[0]; i++) {
        for (size_t c = 0; c < 2; c++) {
            if (algos[i] == DEFT_ALGO_PSYNC && comps[c] == DEFT_COMP_TOPK)
                continue; /* psync needs a selecting compressor */
            run_t a = {0};
            lsq_init(&a.p, 4, 21);
            a.cfg = base_cfg(algos[i], comps[c], 8);
            a.cfg.momentum = 0.0f;
            a.cfg.avg_period = 7;
            a.steps = 100;
            assert_status(deft_run_threads(4, average_path, &a), DEFT_OK);
            printf("  %s/%s K=4: max |y' - (y - lr avg g)| / |y| = %.3g "
                   "(same for x alone: %.3g)\n", deft_algo_name(algos[i]),
                   deft_compressor_name(comps[c]), a.dev, a.control);
            assert_close(a.dev, 0.0, 0.0, 1e-6);
            assert_true(a.control > 1e-3);
            lsq_free(&a.p);
        }
    }
}

/* Runs cfg for a->steps steps on K workers and keeps every worker's final
 * x and e, traffic counters and tell statuses. */
static deft_status_t plain_run(deft_comm_t *comm, void *arg)
{
    run_t *a = arg;
    int r = deft_comm_rank(comm);
    float x0[LSQ_D], grad[LSQ_D];
    init_x0(x0);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, lsq_layout(), x0, &a->cfg);
    if (st != DEFT_OK)
        return st;
    deft_comm_reset_stats(comm);
    for (int t = 0; t < a->steps && st == DEFT_OK; t++) {
        const float *pt;
        deft_optim_ask(opt, &pt);
        lsq_grad(&a->p, r, pt, grad);
        if (r == 1 && a->nan_step >= 0 && t >= a->nan_step)
            grad[LSQ_D / 2] = NAN;
        st = deft_optim_tell(opt, grad, NULL);
        if (st != DEFT_OK) {
            a->tell_status[r] = st;
            snprintf(a->tell_error[r], sizeof a->tell_error[r], "%s",
                     deft_last_error());
        }
        if (st == DEFT_OK && a->halve_every && (t + 1) % a->halve_every == 0)
            st = deft_optim_set_lr(opt, 0.5f * deft_optim_get_lr(opt));
    }
    deft_comm_get_stats(comm, &a->stats[r]);
    const float *x, *e;
    deft_optim_params(opt, &x);
    deft_optim_error(opt, &e);
    memcpy(a->final_x + (size_t)r * LSQ_D, x, sizeof(float) * LSQ_D);
    if (e)
        memcpy(a->final_e + (size_t)r * LSQ_D, e, sizeof(float) * LSQ_D);
    deft_optim_destroy(opt);
    return st == DEFT_ERR_DIVERGED ? DEFT_OK : st;
}

static void run_init(run_t *a, int K, deft_optim_config_t cfg, int steps)
{
    memset(a, 0, sizeof *a);
    lsq_init(&a->p, K, 31);
    a->cfg = cfg;
    a->steps = steps;
    a->nan_step = -1;
    a->final_x = calloc((size_t)K * LSQ_D, sizeof(float));
    a->final_e = calloc((size_t)K * LSQ_D, sizeof(float));
}

static void run_free(run_t *a)
{
    lsq_free(&a->p);
    free(a->final_x);
    free(a->final_e);
}

static void test_saef_period0_equals_def_lambda1(void **state)
{
    (void)state;
    run_t s, d;
    deft_optim_config_t cfg = base_cfg(DEFT_ALGO_SAEF, DEFT_COMP_RBGS, 8);
    cfg.avg_period = 0;
    cfg.lambda = 0.3f; /* ignored by saef, which always steps ahead fully */
    run_init(&s, 3, cfg, 60);
    cfg.algo = DEFT_ALGO_DEF;
    cfg.lambda = 1.0f;
    run_init(&d, 3, cfg, 60);
    assert_status(deft_run_threads(3, plain_run, &s), DEFT_OK);
    assert_status(deft_run_threads(3, plain_run, &d), DEFT_OK);
    assert_memory_equal(s.final_x, d.final_x, sizeof(float) * 3 * LSQ_D);
    assert_memory_equal(s.final_e, d.final_e, sizeof(float) * 3 * LSQ_D);

    /* With averaging on, the errors become equal across workers right after
     * an averaging step (60 is a multiple of 6) and the run differs. */
    run_free(&s);
    cfg.algo = DEFT_ALGO_SAEF;
    cfg.avg_period = 6;
    run_init(&s, 3, cfg, 60);
    assert_status(deft_run_threads(3, plain_run, &s), DEFT_OK);
    assert_memory_equal(s.final_e, s.final_e + LSQ_D, sizeof(float) * LSQ_D);
    assert_memory_equal(s.final_e, s.final_e + 2 * LSQ_D, sizeof(float) * LSQ_D);
    assert_true(memcmp(s.final_x, d.final_x, sizeof(float) * LSQ_D) != 0);
    run_free(&s);
    run_free(&d);
}

static void test_same_seed_bitwise_identical(void **state)
{
    (void)state;
    const deft_algo_t algos[] = {DEFT_ALGO_SGD,  DEFT_ALGO_EF,    DEFT_ALGO_DEF,
                                 DEFT_ALGO_DEFA, DEFT_ALGO_SAEF,  DEFT_ALGO_PSYNC,
                                 DEFT_ALGO_EF21};
    const deft_compressor_kind_t comps[] = {DEFT_COMP_RBGS, DEFT_COMP_RANDK,
                                            DEFT_COMP_TOPK, DEFT_COMP_SIGN,
                                            DEFT_COMP_QSGD, DEFT_COMP_NONE,
                                            DEFT_COMP_RANDK_PRIVATE};
    for (size_t i = 0; i < sizeof algos / sizeof algos[0]; i++)
        for (size_t c = 0; c < sizeof comps / sizeof comps[0]; c++) {
            deft_optim_config_t cfg = base_cfg(algos[i], comps[c], 4);
            if (algos[i] == DEFT_ALGO_PSYNC &&
                comps[c] != DEFT_COMP_RBGS && comps[c] != DEFT_COMP_RANDK &&
                comps[c] != DEFT_COMP_NONE)
                continue;
            cfg.avg_period = 5;
            cfg.weight_decay = 1e-4f;
            run_t a, b;
            run_init(&a, 4, cfg, 25);
            run_init(&b, 4, cfg, 25);
            assert_status(deft_run_threads(4, plain_run, &a), DEFT_OK);
            assert_status(deft_run_threads(4, plain_run, &b), DEFT_OK);
            if (memcmp(a.final_x, b.final_x, sizeof(float) * 4 * LSQ_D) ||
                memcmp(a.final_e, b.final_e, sizeof(float) * 4 * LSQ_D))
                fail_msg("%s/%s: two runs with the same seed differ",
                         deft_algo_name(algos[i]), deft_compressor_name(comps[c]));
            /* Every algorithm but psync keeps one shared model. */
            if (algos[i] != DEFT_ALGO_PSYNC)
                for (int r = 1; r < 4; r++)
                    assert_memory_equal(a.final_x, a.final_x + r * LSQ_D,
                                        sizeof(float) * LSQ_D);
            /* It must also have made progress: x moved from x0. */
            float x0[LSQ_D];
            init_x0(x0);
            assert_true(memcmp(x0, a.final_x, sizeof x0) != 0);
            run_free(&a);
            run_free(&b);
        }
}

static void test_one_collective_per_step(void **state)
{
    (void)state;
    const deft_compressor_kind_t lin[] = {DEFT_COMP_RBGS, DEFT_COMP_RANDK,
                                          DEFT_COMP_NONE};
    for (size_t c = 0; c < 3; c++) {
        run_t a;
        run_init(&a, 4, base_cfg(DEFT_ALGO_DEF, lin[c], 16), 30);
        assert_status(deft_run_threads(4, plain_run, &a), DEFT_OK);
        for (int r = 0; r < 4; r++) {
            assert_int_equal(a.stats[r].n_allreduce, 30);
            assert_int_equal(a.stats[r].n_allgather, 0);
        }
        run_free(&a);
    }
    run_t a;
    run_init(&a, 4, base_cfg(DEFT_ALGO_DEF, DEFT_COMP_TOPK, 16), 30);
    assert_status(deft_run_threads(4, plain_run, &a), DEFT_OK);
    assert_int_equal(a.stats[0].n_allgather, 30);
    assert_int_equal(a.stats[0].n_allreduce, 0);
    /* rbgs ratio 16 on tensors (20, 13, 31): blocks of 1 + 1 + 1 floats. */
    run_free(&a);
    run_init(&a, 4, base_cfg(DEFT_ALGO_DEF, DEFT_COMP_RBGS, 16), 10);
    assert_status(deft_run_threads(4, plain_run, &a), DEFT_OK);
    assert_int_equal(a.stats[0].payload_bytes, 10 * 3 * sizeof(float));
    run_free(&a);
}

/* EF over randk-private on K = 4 workers of a heterogeneous least-squares
 * problem (each worker its own A_k, b_k: at the optimum x* of the average
 * every worker's gradient is ~0.25 in norm, only their sum vanishes).
 * Each step allgathers one message of K = 5 + 3 + 7 indices and values
 * (ratio 4 on tensors of 20, 13, 31) and no allreduce; all workers keep
 * the same x; two runs are bitwise equal. With the lr halved every 250
 * steps, x reaches 1e-3 of its initial distance to x* in 2000 steps. At a
 * constant lr it cannot: the workers' coordinates differ, so the sum of
 * their messages is not C(sum), and what each drops of its own non-zero
 * gradient keeps x at a distance proportional to the lr, while shared
 * randk (linear: the errors sum to C's error of the zero sum) converges. */
static void lsq_optimum(const lsq_t *p, double *x)
{
    double g[LSQ_D], gs[LSQ_D];
    for (int j = 0; j < LSQ_D; j++)
        x[j] = 0;
    /* gradient descent in double; the Hessian's eigenvalues lie in about
     * [0.06, 0.83], so step 1 contracts by 0.94 or better */
    for (int it = 0; it < 3000; it++) {
        memset(gs, 0, sizeof gs);
        for (int k = 0; k < p->K; k++) {
            lsq_grad_f64(p, k, x, g);
            for (int j = 0; j < LSQ_D; j++)
                gs[j] += g[j] / p->K;
        }
        for (int j = 0; j < LSQ_D; j++)
            x[j] -= gs[j];
    }
    assert_true(norm2(gs, LSQ_D) < 1e-12);
}

static double dist_to(const float *x, const double *xs)
{
    double d[LSQ_D];
    for (int j = 0; j < LSQ_D; j++)
        d[j] = (double)x[j] - xs[j];
    return norm2(d, LSQ_D);
}

static void test_randk_private_ef_converges(void **state)
{
    (void)state;
    enum { K = 4, STEPS = 2000 };
    double xs[LSQ_D];
    float x0[LSQ_D];
    run_t a, b;
    deft_optim_config_t cfg =
        base_cfg(DEFT_ALGO_EF, DEFT_COMP_RANDK_PRIVATE, 4);
    cfg.lr = 0.2f;
    cfg.momentum = 0.0f;
    run_init(&a, K, cfg, STEPS);
    run_init(&b, K, cfg, STEPS);
    a.halve_every = b.halve_every = 250;
    lsq_optimum(&a.p, xs);
    init_x0(x0);
    const double d0 = dist_to(x0, xs);
    for (int k = 0; k < K; k++) {
        double g[LSQ_D];
        lsq_grad_f64(&a.p, k, xs, g);
        assert_true(norm2(g, LSQ_D) > 0.2); /* heterogeneous */
    }
    assert_status(deft_run_threads(K, plain_run, &a), DEFT_OK);
    assert_status(deft_run_threads(K, plain_run, &b), DEFT_OK);
    assert_memory_equal(a.final_x, b.final_x, sizeof(float) * K * LSQ_D);
    assert_memory_equal(a.final_e, b.final_e, sizeof(float) * K * LSQ_D);
    for (int r = 0; r < K; r++) {
        assert_memory_equal(a.final_x, a.final_x + r * LSQ_D,
                            sizeof(float) * LSQ_D);
        assert_int_equal(a.stats[r].n_allgather, STEPS);
        assert_int_equal(a.stats[r].n_allreduce, 0);
        assert_int_equal(a.stats[r].payload_bytes,
                         (uint64_t)STEPS * 15 * (4 + 4));
    }
    /* the workers' errors are their own */
    assert_true(memcmp(a.final_e, a.final_e + LSQ_D, sizeof(float) * LSQ_D));
    const double d = dist_to(a.final_x, xs);
    printf("  ef randk-private, lr 0.2 halved every 250 steps: "
           "|x - x*| / |x0 - x*| = %.3g after %d steps\n", d / d0, STEPS);
    assert_true(d < 1e-3 * d0);
    run_free(&a);
    run_free(&b);

    /* Constant lr: shared randk converges, randk-private stalls. */
    double dc[2];
    const deft_compressor_kind_t kinds[2] = {DEFT_COMP_RANDK,
                                             DEFT_COMP_RANDK_PRIVATE};
    for (int i = 0; i < 2; i++) {
        cfg.compressor = kinds[i];
        run_init(&a, K, cfg, STEPS);
        assert_status(deft_run_threads(K, plain_run, &a), DEFT_OK);
        dc[i] = dist_to(a.final_x, xs) / d0;
        printf("  ef %s, lr 0.2 constant: |x - x*| / |x0 - x*| = %.3g after "
               "%d steps\n", deft_compressor_name(kinds[i]), dc[i], STEPS);
        run_free(&a);
    }
    assert_true(dc[0] < 1e-6);
    assert_true(dc[1] > 1e-3);
}

static void test_divergence_reported_on_all_workers(void **state)
{
    (void)state;
    const deft_algo_t algos[] = {DEFT_ALGO_SGD,  DEFT_ALGO_DEF,  DEFT_ALGO_DEF,
                                 DEFT_ALGO_PSYNC, DEFT_ALGO_EF21, DEFT_ALGO_DEF,
                                 DEFT_ALGO_EF21, DEFT_ALGO_EF,   DEFT_ALGO_DEFA};
    const deft_compressor_kind_t comps[] = {
        DEFT_COMP_NONE, DEFT_COMP_RBGS,     DEFT_COMP_TOPK,
        DEFT_COMP_RBGS, DEFT_COMP_SIGN,     DEFT_COMP_POWERSGD,
        DEFT_COMP_POWERSGD, DEFT_COMP_FP16, DEFT_COMP_BF16};
    for (size_t i = 0; i < sizeof algos / sizeof algos[0]; i++) {
        run_t a;
        run_init(&a, 3, base_cfg(algos[i], comps[i], 64), 20);
        a.nan_step = 7;
        assert_status(deft_run_threads(3, plain_run, &a), DEFT_OK);
        for (int r = 0; r < 3; r++) {
            if (a.tell_status[r] != DEFT_ERR_DIVERGED)
                fail_msg("%s/%s: worker %d got status %d, want DIVERGED",
                         deft_algo_name(algos[i]), deft_compressor_name(comps[i]),
                         r, (int)a.tell_status[r]);
            if (!strstr(a.tell_error[r], "step 7"))
                fail_msg("worker %d's message does not name step 7: %s", r,
                         a.tell_error[r]);
        }
        run_free(&a);
    }
}

/* With the identity compressor (`none`) every algorithm is momentum SGD on
 * the averaged gradient (e stays 0; psync averages whole models), except
 * EF21, which has no momentum and is plain gradient descent. Checked against
 * a double-precision reference, with weight decay, on K = 3 workers; the
 * output model is compared, so deft_optim_output is checked too. */
typedef struct {
    deft_optim_config_t cfg;
    lsq_t p;
    int steps;
    float out[LSQ_D];
} ref_t;

static deft_status_t ref_worker(deft_comm_t *comm, void *arg)
{
    ref_t *a = arg;
    int r = deft_comm_rank(comm);
    float x0[LSQ_D], grad[LSQ_D];
    init_x0(x0);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, lsq_layout(), x0, &a->cfg);
    if (st != DEFT_OK)
        return st;
    for (int t = 0; t < a->steps && st == DEFT_OK; t++) {
        const float *pt;
        deft_optim_ask(opt, &pt);
        lsq_grad(&a->p, r, pt, grad);
        st = deft_optim_tell(opt, grad, NULL);
    }
    float out[LSQ_D];
    if (st == DEFT_OK)
        st = deft_optim_output(opt, out);
    if (st == DEFT_OK && r == 0)
        memcpy(a->out, out, sizeof out);
    deft_optim_destroy(opt);
    return st;
}

static void test_none_compressor_reduces_to_sgd(void **state)
{
    (void)state;
    const deft_algo_t algos[] = {DEFT_ALGO_SGD,  DEFT_ALGO_EF,    DEFT_ALGO_DEF,
                                 DEFT_ALGO_DEFA, DEFT_ALGO_SAEF,  DEFT_ALGO_PSYNC,
                                 DEFT_ALGO_EF21};
    for (size_t i = 0; i < sizeof algos / sizeof algos[0]; i++) {
        ref_t a;
        memset(&a, 0, sizeof a);
        a.cfg = base_cfg(algos[i], DEFT_COMP_NONE, 1);
        a.cfg.weight_decay = 1e-2f;
        a.cfg.avg_period = 3;
        a.steps = 60;
        lsq_init(&a.p, 3, 51);
        assert_status(deft_run_threads(3, ref_worker, &a), DEFT_OK);

        double x[LSQ_D], m[LSQ_D] = {0}, g[LSQ_D], gk[LSQ_D];
        float x0[LSQ_D];
        init_x0(x0);
        for (int j = 0; j < LSQ_D; j++)
            x[j] = x0[j];
        double mu = algos[i] == DEFT_ALGO_EF21 ? 0.0 : a.cfg.momentum;
        for (int t = 0; t < a.steps; t++) {
            for (int j = 0; j < LSQ_D; j++)
                g[j] = 0;
            for (int k = 0; k < 3; k++) {
                lsq_grad_f64(&a.p, k, x, gk);
                for (int j = 0; j < LSQ_D; j++)
                    g[j] += (gk[j] + a.cfg.weight_decay * x[j]) / 3;
            }
            for (int j = 0; j < LSQ_D; j++) {
                m[j] = mu * m[j] + g[j];
                x[j] -= a.cfg.lr * m[j];
            }
        }
        double diff[LSQ_D];
        for (int j = 0; j < LSQ_D; j++)
            diff[j] = (double)a.out[j] - x[j];
        double dev = norm2(diff, LSQ_D) / norm2(x, LSQ_D);
        printf("  %s + none: |out - momentum SGD| / |x| = %.3g\n",
               deft_algo_name(algos[i]), dev);
        assert_close(dev, 0.0, 0.0, 1e-5);
        lsq_free(&a.p);
    }
}

/* deft_optim_output returns the model each algorithm promises: def
 * x - avg(e), defa and ef x, psync avg(x_k). */
typedef struct {
    deft_optim_config_t cfg;
    lsq_t p;
    double dev;
} out_t;

static deft_status_t output_worker(deft_comm_t *comm, void *arg)
{
    out_t *a = arg;
    int r = deft_comm_rank(comm), K = deft_comm_size(comm);
    float x0[LSQ_D], grad[LSQ_D], want[LSQ_D], got[LSQ_D];
    init_x0(x0);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, lsq_layout(), x0, &a->cfg);
    if (st != DEFT_OK)
        return st;
    for (int t = 0; t < 20 && st == DEFT_OK; t++) {
        const float *pt;
        deft_optim_ask(opt, &pt);
        lsq_grad(&a->p, r, pt, grad);
        st = deft_optim_tell(opt, grad, NULL);
    }
    const float *x, *e;
    deft_optim_params(opt, &x);
    deft_optim_error(opt, &e);
    if (a->cfg.algo == DEFT_ALGO_DEF) {
        memcpy(want, e, sizeof want);
        st = deft_comm_allreduce_sum_f32(comm, want, LSQ_D);
        for (int j = 0; j < LSQ_D; j++)
            want[j] = x[j] - want[j] / (float)K;
    } else if (a->cfg.algo == DEFT_ALGO_PSYNC) {
        memcpy(want, x, sizeof want);
        st = deft_comm_allreduce_sum_f32(comm, want, LSQ_D);
        for (int j = 0; j < LSQ_D; j++)
            want[j] /= (float)K;
    } else {
        memcpy(want, x, sizeof want);
    }
    if (st == DEFT_OK)
        st = deft_optim_output(opt, got);
    if (r == 0)
        a->dev = deft_test_max_rel_diff(got, want, LSQ_D, 1e-3);
    deft_optim_destroy(opt);
    return st;
}

static void test_output_model_per_algorithm(void **state)
{
    (void)state;
    const deft_algo_t algos[] = {DEFT_ALGO_DEF, DEFT_ALGO_DEFA, DEFT_ALGO_EF,
                                 DEFT_ALGO_PSYNC};
    for (size_t i = 0; i < 4; i++) {
        out_t a;
        memset(&a, 0, sizeof a);
        a.cfg = base_cfg(algos[i], DEFT_COMP_RBGS, 8);
        lsq_init(&a.p, 4, 61);
        assert_status(deft_run_threads(4, output_worker, &a), DEFT_OK);
        if (a.dev > 1e-6)
            fail_msg("%s: output differs from its definition by %.3g",
                     deft_algo_name(algos[i]), a.dev);
        lsq_free(&a.p);
    }
}

/* A state saved after 15 steps and loaded into a fresh optimizer continues
 * bitwise like the uninterrupted run. */
typedef struct {
    deft_optim_config_t cfg;
    lsq_t p;
    float *x_cont, *x_resumed; /* (K, D) */
    deft_status_t load_bad;
} resume_t;

static deft_status_t steps(deft_optim_t *opt, const lsq_t *p, int r, int n)
{
    float grad[LSQ_D];
    for (int t = 0; t < n; t++) {
        const float *pt;
        deft_optim_ask(opt, &pt);
        lsq_grad(p, r, pt, grad);
        deft_status_t st = deft_optim_tell(opt, grad, NULL);
        if (st != DEFT_OK)
            return st;
    }
    return DEFT_OK;
}

static deft_status_t resume_worker(deft_comm_t *comm, void *arg)
{
    resume_t *a = arg;
    int r = deft_comm_rank(comm);
    float x0[LSQ_D];
    init_x0(x0);
    deft_optim_t *opt, *fresh;
    deft_status_t st = deft_optim_create(&opt, comm, lsq_layout(), x0, &a->cfg);
    if (st != DEFT_OK)
        return st;
    if ((st = steps(opt, &a->p, r, 15)) != DEFT_OK)
        return st;
    deft_optim_set_lr(opt, a->cfg.lr * 0.5f); /* the lr is part of the state */
    size_t n = deft_optim_state_size(opt);
    char *blob = malloc(n);
    if ((st = deft_optim_state_save(opt, blob, n)) != DEFT_OK)
        return st;
    if ((st = steps(opt, &a->p, r, 10)) != DEFT_OK)
        return st;
    const float *x;
    deft_optim_params(opt, &x);
    memcpy(a->x_cont + (size_t)r * LSQ_D, x, sizeof(float) * LSQ_D);

    if ((st = deft_optim_create(&fresh, comm, lsq_layout(), x0, &a->cfg)))
        return st;
    /* A truncated or foreign blob is refused and changes nothing. */
    if (deft_optim_state_load(fresh, blob, n - 4) != DEFT_ERR_FORMAT)
        a->load_bad = DEFT_ERR_INTERNAL;
    blob[0] ^= 1;
    if (deft_optim_state_load(fresh, blob, n) != DEFT_ERR_FORMAT)
        a->load_bad = DEFT_ERR_INTERNAL;
    blob[0] ^= 1;
    if ((st = deft_optim_state_load(fresh, blob, n)) != DEFT_OK)
        return st;
    if (deft_optim_steps(fresh) != 15)
        return DEFT_ERR_INTERNAL;
    if ((st = steps(fresh, &a->p, r, 10)) != DEFT_OK)
        return st;
    deft_optim_params(fresh, &x);
    memcpy(a->x_resumed + (size_t)r * LSQ_D, x, sizeof(float) * LSQ_D);
    free(blob);
    deft_optim_destroy(opt);
    deft_optim_destroy(fresh);
    return DEFT_OK;
}

static void test_state_save_load_continues_bitwise(void **state)
{
    (void)state;
    const deft_algo_t algos[] = {DEFT_ALGO_SGD, DEFT_ALGO_DEF, DEFT_ALGO_SAEF,
                                 DEFT_ALGO_PSYNC, DEFT_ALGO_EF21};
    for (size_t i = 0; i < sizeof algos / sizeof algos[0]; i++) {
        resume_t a = {base_cfg(algos[i], DEFT_COMP_RBGS, 8), {0}, NULL, NULL,
                      DEFT_OK};
        a.cfg.avg_period = 4;
        lsq_init(&a.p, 3, 41);
        a.x_cont = calloc(3 * LSQ_D, sizeof(float));
        a.x_resumed = calloc(3 * LSQ_D, sizeof(float));
        assert_status(deft_run_threads(3, resume_worker, &a), DEFT_OK);
        assert_status(a.load_bad, DEFT_OK);
        if (memcmp(a.x_cont, a.x_resumed, sizeof(float) * 3 * LSQ_D))
            fail_msg("%s: resumed run differs from the uninterrupted one",
                     deft_algo_name(algos[i]));
        free(a.x_cont);
        free(a.x_resumed);
        lsq_free(&a.p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_property1_def_k1_lambda1_is_sgd),
        cmocka_unit_test(test_property2_defa_is_iterate_averaging),
        cmocka_unit_test(test_property4_average_follows_sgd),
        cmocka_unit_test(test_saef_period0_equals_def_lambda1),
        cmocka_unit_test(test_same_seed_bitwise_identical),
        cmocka_unit_test(test_one_collective_per_step),
        cmocka_unit_test(test_randk_private_ef_converges),
        cmocka_unit_test(test_divergence_reported_on_all_workers),
        cmocka_unit_test(test_state_save_load_continues_bitwise),
        cmocka_unit_test(test_none_compressor_reduces_to_sgd),
        cmocka_unit_test(test_output_model_per_algorithm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
