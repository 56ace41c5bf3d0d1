/* Per-tensor hyperparameters (groups), dampening, Nesterov, growing the
 * model, and the state format that carries them.
 *
 * The restatement: every algorithm runs 4 steps on 2 threads with two
 * groups of different lr, momentum, dampening, weight decay and Nesterov
 * (a group table changed between steps, as a scheduler does), the
 * gradient of a quadratic 0.5 |x - t_k|^2 per worker, and the dense
 * deterministic compressor scale (C(v) = v / 4), so that the whole run can
 * be restated below in plain C, worker by worker, and compared. */
#include "testutil.h"

#include "core/internal.h"
#include "optim/optim_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { K = 2, NT = 3, D = 11, STEPS = 4 };
static const size_t SIZES[NT] = {4, 5, 2};
static const size_t OFFS[NT + 1] = {0, 4, 9, 11};
static const uint32_t TGROUP[NT] = {1, 0, 1};
static const float DELTA = 0.25f; /* scale's C(v) = delta v */

/* The group table at step s: a scheduler halves group 0's lr at step 2. */
static void groups_at(int s, deft_group_t g[2])
{
    g[0] = (deft_group_t){s < 2 ? 0.1f : 0.05f, 0.9f, 0.25f, 0.01f, 0};
    g[1] = (deft_group_t){0.03f, 0.5f, 0.0f, 0.0f, 1};
}

static float target(int k, size_t i)
{
    return 0.3f * (float)k - 0.1f * (float)i + 0.05f;
}

/* -- the restatement ------------------------------------------------------ */

typedef struct {
    float x[K][D], e[K][D], m[K][D], gk[K][D], g[D], z[D], w[D];
} ref_t;

static size_t tensor_of(size_t i)
{
    size_t t = 0;
    while (i >= OFFS[t + 1])
        t++;
    return t;
}

/* u from the momentum step of element i (torch.optim.SGD's form). */
static float ref_momentum(const deft_group_t *g, int s, float grad, float *m)
{
    float dc = g->momentum != 0.0f && s > 0 ? 1.0f - g->dampening : 1.0f;
    *m = g->momentum * *m + dc * grad;
    return g->nesterov ? grad + g->momentum * *m : *m;
}

static void ref_ef_family(ref_t *r, deft_algo_t algo, float lam, int s,
                          const deft_group_t *gs)
{
    float lam_eff = algo == DEFT_ALGO_SAEF ? 1.0f : algo == DEFT_ALGO_EF ? 0.0f : lam;
    float sum[D] = {0};
    for (int k = 0; k < K; k++)
        for (size_t i = 0; i < D; i++) {
            const deft_group_t *g = &gs[TGROUP[tensor_of(i)]];
            float pt = r->x[0][i] - lam_eff * r->e[k][i];
            float grad = (pt - target(k, i)) + g->weight_decay * pt;
            float u = ref_momentum(g, s, grad, &r->m[k][i]);
            float p = g->lr * u + r->e[k][i];
            float c = DELTA * p;
            r->e[k][i] = p - c;
            sum[i] += c;
        }
    for (size_t i = 0; i < D; i++) {
        float xi = r->x[0][i] - sum[i] / K;
        for (int k = 0; k < K; k++)
            r->x[k][i] = xi;
    }
    if (algo == DEFT_ALGO_SAEF && (s + 1) % 2 == 0) /* avg_period 2 */
        for (size_t i = 0; i < D; i++) {
            float a = (r->e[0][i] + r->e[1][i]) / K;
            r->e[0][i] = r->e[1][i] = a;
        }
}

static void ref_sgd(ref_t *r, int s, const deft_group_t *gs)
{
    for (size_t i = 0; i < D; i++) {
        const deft_group_t *g = &gs[TGROUP[tensor_of(i)]];
        float sum = 0;
        for (int k = 0; k < K; k++)
            sum += (r->x[0][i] - target(k, i)) + g->weight_decay * r->x[0][i];
        float u = ref_momentum(g, s, sum / K, &r->m[0][i]);
        r->x[0][i] -= g->lr * u;
        r->x[1][i] = r->x[0][i];
    }
}

static void ref_psync(ref_t *r, int s, const deft_group_t *gs)
{
    for (size_t i = 0; i < D; i++) {
        const deft_group_t *g = &gs[TGROUP[tensor_of(i)]];
        float sum = 0;
        for (int k = 0; k < K; k++) {
            float grad = (r->x[k][i] - target(k, i)) + g->weight_decay * r->x[k][i];
            r->x[k][i] -= g->lr * ref_momentum(g, s, grad, &r->m[k][i]);
            sum += r->x[k][i];
        }
        for (int k = 0; k < K; k++) /* compressor none: every coordinate */
            r->x[k][i] = sum / K;
    }
}

static void ref_ef21(ref_t *r, int s, const deft_group_t *gs)
{
    for (size_t i = 0; i < D; i++) {
        const deft_group_t *g = &gs[TGROUP[tensor_of(i)]];
        float sum = 0;
        for (int k = 0; k < K; k++) {
            float grad = (r->x[0][i] - target(k, i)) + g->weight_decay * r->x[0][i];
            float c = s == 0 ? grad : DELTA * (grad - r->gk[k][i]);
            r->gk[k][i] = s == 0 ? grad : r->gk[k][i] + c;
            sum += c;
        }
        r->g[i] = s == 0 ? sum / K : r->g[i] + sum / K;
        r->x[0][i] -= g->lr * r->g[i];
        r->x[1][i] = r->x[0][i];
    }
}

/* eclk with p = 1 (the anchor moves every step), theta1 = 0.3, L = 2,
 * mu = 0.5; the groups give only the weight decay. */
static void ref_eclk(ref_t *r, const deft_group_t *gs)
{
    const double t1 = 0.3, t2 = 0.5, L = 2.0, mu = 0.5;
    const double eta = t2 / ((1 + t2) * t1), es = eta * mu / L;
    float pt[D], delta[D] = {0};
    for (size_t i = 0; i < D; i++)
        pt[i] = (float)(t1 * r->z[i] + t2 * r->w[i] + (1 - t1 - t2) * r->x[0][i]);
    for (int k = 0; k < K; k++)
        for (size_t i = 0; i < D; i++) {
            double wd = gs[TGROUP[tensor_of(i)]].weight_decay;
            float grad = pt[i] - target(k, i);
            float p = (float)(r->e[k][i] + eta / L * ((double)grad + wd * pt[i]));
            float c = DELTA * p;
            r->e[k][i] = p - c;
            delta[i] += c;
        }
    for (size_t i = 0; i < D; i++) {
        r->w[i] = r->x[0][i];
        double zn = (es * pt[i] + r->z[i] - (double)(delta[i] / K)) / (1 + es);
        r->x[0][i] = r->x[1][i] = (float)(pt[i] + t1 * (zn - r->z[i]));
        r->z[i] = (float)zn;
    }
}

/* -- the library's run ---------------------------------------------------- */

typedef struct {
    deft_algo_t algo;
    float out[D]; /* rank 0's output model after the run */
    float x[K][D];
} run_t;

static deft_optim_config_t config_for(deft_algo_t algo)
{
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.algo = algo;
    cfg.compressor = algo == DEFT_ALGO_PSYNC ? DEFT_COMP_NONE : DEFT_COMP_SCALE;
    cfg.ratio = 1.0 / DELTA;
    cfg.lambda = 0.3f;
    cfg.avg_period = 2;
    cfg.eclk_L = 2.0, cfg.eclk_mu = 0.5, cfg.eclk_p = 1.0, cfg.eclk_theta1 = 0.3;
    return cfg;
}

static void x0_fill(float *x0)
{
    for (size_t i = 0; i < D; i++)
        x0[i] = 0.2f * (float)i - 1.0f;
}

static deft_status_t run_worker(deft_comm_t *comm, void *arg)
{
    run_t *a = arg;
    int k = deft_comm_rank(comm);
    deft_layout_t l = {NT, SIZES, NULL};
    deft_optim_config_t cfg = config_for(a->algo);
    float x0[D], grad[D];
    x0_fill(x0);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &l, x0, &cfg);
    for (int s = 0; s < STEPS && st == DEFT_OK; s++) {
        deft_group_t g[2];
        groups_at(s, g);
        const float *pt;
        if ((st = deft_optim_set_groups(opt, 2, g, TGROUP)) != DEFT_OK ||
            (st = deft_optim_ask(opt, &pt)) != DEFT_OK)
            break;
        for (size_t i = 0; i < D; i++)
            grad[i] = pt[i] - target(k, i);
        st = deft_optim_tell(opt, grad, NULL);
    }
    const float *x;
    if (st == DEFT_OK && (st = deft_optim_output(opt, k == 0 ? a->out : grad)) == DEFT_OK &&
        (st = deft_optim_params(opt, &x)) == DEFT_OK)
        memcpy(a->x[k], x, sizeof a->x[k]);
    deft_optim_destroy(opt);
    return st;
}

static void test_every_algorithm_matches_its_restatement(void **state)
{
    (void)state;
    const deft_algo_t algos[] = {DEFT_ALGO_SGD,  DEFT_ALGO_EF,    DEFT_ALGO_DEF,
                                 DEFT_ALGO_DEFA, DEFT_ALGO_SAEF,  DEFT_ALGO_PSYNC,
                                 DEFT_ALGO_EF21, DEFT_ALGO_ECLK};
    for (size_t ai = 0; ai < sizeof algos / sizeof algos[0]; ai++) {
        deft_algo_t algo = algos[ai];
        run_t a = {.algo = algo};
        assert_status(deft_run_threads(K, run_worker, &a), DEFT_OK);
        ref_t r;
        memset(&r, 0, sizeof r);
        x0_fill(r.x[0]);
        memcpy(r.x[1], r.x[0], sizeof r.x[0]);
        memcpy(r.z, r.x[0], sizeof r.z);
        memcpy(r.w, r.x[0], sizeof r.w);
        for (int s = 0; s < STEPS; s++) {
            deft_group_t g[2];
            groups_at(s, g);
            if (algo == DEFT_ALGO_SGD)
                ref_sgd(&r, s, g);
            else if (algo == DEFT_ALGO_PSYNC)
                ref_psync(&r, s, g);
            else if (algo == DEFT_ALGO_EF21)
                ref_ef21(&r, s, g);
            else if (algo == DEFT_ALGO_ECLK)
                ref_eclk(&r, g);
            else
                ref_ef_family(&r, algo, 0.3f, s, g);
        }
        float want[D];
        for (size_t i = 0; i < D; i++)
            want[i] = algo == DEFT_ALGO_DEF
                          ? r.x[0][i] - (r.e[0][i] + r.e[1][i]) / K
                          : algo == DEFT_ALGO_PSYNC ? (r.x[0][i] + r.x[1][i]) / K
                                                    : r.x[0][i];
        double dx = fmax(deft_test_max_rel_diff(a.x[0], r.x[0], D, 1e-3),
                         deft_test_max_rel_diff(a.x[1], r.x[1], D, 1e-3));
        double dout = deft_test_max_rel_diff(a.out, want, D, 1e-3);
        printf("%-5s: model %.2e, output %.2e (relative to the restatement)\n",
               deft_algo_name(algo), dx, dout);
        assert_true(dx <= 1e-5);
        assert_true(dout <= 1e-5);
        /* the run moved: the two groups' lr and the targets matter */
        assert_true(fabsf(a.out[0] - -1.0f) > 1e-3f);
    }
}

/* The restatement is sensitive to what it checks: with Nesterov off in
 * group 1 the library's run differs from it. */
static deft_status_t nesterov_off_worker(deft_comm_t *comm, void *arg)
{
    run_t *a = arg;
    deft_layout_t l = {NT, SIZES, NULL};
    deft_optim_config_t cfg = config_for(DEFT_ALGO_SGD);
    float x0[D], grad[D];
    x0_fill(x0);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &l, x0, &cfg);
    for (int s = 0; s < STEPS && st == DEFT_OK; s++) {
        deft_group_t g[2];
        groups_at(s, g);
        g[1].nesterov = 0;
        const float *pt;
        deft_optim_set_groups(opt, 2, g, TGROUP);
        deft_optim_ask(opt, &pt);
        for (size_t i = 0; i < D; i++)
            grad[i] = pt[i] - target(deft_comm_rank(comm), i);
        st = deft_optim_tell(opt, grad, NULL);
    }
    if (st == DEFT_OK)
        st = deft_optim_output(opt, a->out);
    deft_optim_destroy(opt);
    return st;
}

static void test_restatement_sees_nesterov(void **state)
{
    (void)state;
    run_t a = {.algo = DEFT_ALGO_SGD}, b = {.algo = DEFT_ALGO_SGD};
    assert_status(deft_run_threads(K, run_worker, &a), DEFT_OK);
    assert_status(deft_run_threads(K, nesterov_off_worker, &b), DEFT_OK);
    double diff = deft_test_max_rel_diff(b.out, a.out, D, 1e-3);
    printf("nesterov off vs on: %.2e\n", diff);
    assert_true(diff > 1e-4);
}

/* -- the API edge --------------------------------------------------------- */

static deft_optim_t *make_self(deft_comm_t **comm, const deft_optim_config_t *cfg)
{
    assert_status(deft_comm_create_self(comm), DEFT_OK);
    deft_layout_t l = {NT, SIZES, NULL};
    float x0[D];
    x0_fill(x0);
    deft_optim_t *opt;
    assert_status(deft_optim_create(&opt, *comm, &l, x0, cfg), DEFT_OK);
    return opt;
}

#define EXPECT(call, status, needle)                                         \
    do {                                                                     \
        assert_status((call), (status));                                     \
        assert_error_mentions(needle);                                       \
    } while (0)

static void test_groups_api_checks_every_value(void **state)
{
    (void)state;
    deft_optim_config_t cfg = config_for(DEFT_ALGO_DEF);
    deft_comm_t *comm;
    deft_optim_t *opt = make_self(&comm, &cfg);
    assert_int_equal(deft_optim_num_groups(opt), 1);
    deft_group_t g0;
    assert_status(deft_optim_get_group(opt, 0, &g0), DEFT_OK);
    assert_true(g0.lr == cfg.lr && g0.momentum == cfg.momentum &&
                g0.weight_decay == cfg.weight_decay && g0.nesterov == 0);
    deft_group_t g[2];
    groups_at(0, g);
    const uint32_t bad_t[NT] = {0, 2, 1};
    EXPECT(deft_optim_set_groups(opt, 2, g, bad_t), DEFT_ERR_INVALID_ARG,
           "tensor 1 is in group 2");
    EXPECT(deft_optim_set_groups(opt, 2, g, NULL), DEFT_OK, "");
    EXPECT(deft_optim_set_groups(opt, 0, g, TGROUP), DEFT_ERR_INVALID_ARG,
           "n_groups = 0");
    EXPECT(deft_optim_set_groups(opt, 65537, g, TGROUP), DEFT_ERR_INVALID_ARG,
           "n_groups = 65537");
    const struct {
        deft_group_t g;
        const char *needle;
    } bad[] = {
        {{-0.1f, 0.9f, 0, 0, 0}, "groups[1].lr = -0.1"},
        {{NAN, 0.9f, 0, 0, 0}, "groups[1].lr"},
        {{0.1f, 1.0f, 0, 0, 0}, "groups[1].momentum = 1"},
        {{0.1f, 0.9f, 1.5f, 0, 0}, "groups[1].dampening = 1.5"},
        {{0.1f, 0.9f, 0, -1, 0}, "groups[1].weight_decay = -1"},
        {{0.1f, 0.9f, 0, 0, 2}, "groups[1].nesterov = 2"},
        {{0.1f, 0.0f, 0, 0, 1}, "nesterov = 1 needs momentum > 0"},
        {{0.1f, 0.9f, 0.1f, 0, 1}, "dampening 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        deft_group_t two[2] = {g[0], bad[i].g};
        EXPECT(deft_optim_set_groups(opt, 2, two, TGROUP), DEFT_ERR_INVALID_ARG,
               bad[i].needle);
    }
    /* nothing changed by the refused calls */
    assert_int_equal(deft_optim_num_groups(opt), 2);
    assert_status(deft_optim_get_group(opt, 1, &g0), DEFT_OK);
    assert_memory_equal(&g0, &g[1], sizeof g0);
    assert_status(deft_optim_set_groups(opt, 2, g, TGROUP), DEFT_OK);
    uint32_t tg;
    assert_status(deft_optim_tensor_group(opt, 2, &tg), DEFT_OK);
    assert_int_equal(tg, 1);
    EXPECT(deft_optim_tensor_group(opt, NT, &tg), DEFT_ERR_INVALID_ARG, "t = 3");
    EXPECT(deft_optim_get_group(opt, 2, &g0), DEFT_ERR_INVALID_ARG, "g = 2");
    /* set_lr sets every group's lr; get_lr reads group 0's */
    assert_status(deft_optim_set_lr(opt, 0.5f), DEFT_OK);
    assert_status(deft_optim_get_group(opt, 1, &g0), DEFT_OK);
    assert_true(g0.lr == 0.5f && deft_optim_get_lr(opt) == 0.5f);
    deft_optim_destroy(opt);
    deft_comm_destroy(comm);
    /* the config's own values go through the same checks */
    deft_optim_config_t c2 = config_for(DEFT_ALGO_EF);
    c2.nesterov = 1;
    c2.dampening = 0.5f;
    deft_optim_t *o2 = NULL;
    assert_status(deft_comm_create_self(&comm), DEFT_OK);
    deft_layout_t l = {NT, SIZES, NULL};
    float x0[D] = {0};
    EXPECT(deft_optim_create(&o2, comm, &l, x0, &c2), DEFT_ERR_INVALID_ARG,
           "cfg->nesterov = 1 needs momentum > 0 and dampening 0");
    deft_comm_destroy(comm);
}

/* Output at the training point, for the default BN recalibration. */
static void test_output_is_point(void **state)
{
    (void)state;
    const struct {
        deft_algo_t algo;
        float lambda;
        int want;
    } cases[] = {{DEFT_ALGO_SGD, 0.3f, 1},  {DEFT_ALGO_EF, 0.3f, 1},
                 {DEFT_ALGO_EF21, 0.3f, 1}, {DEFT_ALGO_DEF, 0.3f, 0},
                 {DEFT_ALGO_DEF, 0.0f, 0},  {DEFT_ALGO_DEFA, 0.3f, 0},
                 {DEFT_ALGO_DEFA, 0.0f, 1}, {DEFT_ALGO_SAEF, 0.0f, 0},
                 {DEFT_ALGO_PSYNC, 0.3f, 0}, {DEFT_ALGO_ECLK, 0.3f, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        deft_optim_config_t cfg = config_for(cases[i].algo);
        cfg.lambda = cases[i].lambda;
        deft_comm_t *comm;
        deft_optim_t *opt = make_self(&comm, &cfg);
        assert_int_equal(deft_optim_output_is_point(opt), cases[i].want);
        deft_optim_destroy(opt);
        deft_comm_destroy(comm);
    }
    assert_int_equal(deft_optim_output_is_point(NULL), 0);
}

/* -- growing -------------------------------------------------------------- */

typedef struct {
    deft_algo_t algo;
    deft_compressor_kind_t comp;
    int bad_rank;          /* this rank passes a bad layout (-1: none)      */
    deft_status_t grow_st[K];
    float before[K][3][D]; /* x, e, m before the grow                      */
    float after[K][3][D + 6];
    float x_end[K][D + 6];
    uint64_t step_after;
    size_t groups_after;
} grow_t;

static void copy_or_zero(float *dst, const float *src, size_t n)
{
    if (src)
        memcpy(dst, src, n * sizeof(float));
    else
        memset(dst, 0, n * sizeof(float));
}

static deft_status_t grow_worker(deft_comm_t *comm, void *arg)
{
    grow_t *a = arg;
    int k = deft_comm_rank(comm);
    deft_layout_t l = {NT, SIZES, NULL};
    deft_optim_config_t cfg = config_for(a->algo);
    cfg.compressor = a->comp;
    cfg.ratio = 2;
    float x0[D], grad[D + 6];
    x0_fill(x0);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &l, x0, &cfg);
    deft_group_t g[2];
    groups_at(0, g);
    if (st == DEFT_OK)
        st = deft_optim_set_groups(opt, 2, g, TGROUP);
    for (int s = 0; s < 6 && st == DEFT_OK; s++) {
        if (s == 3) {
            const float *x, *e;
            deft_optim_params(opt, &x);
            deft_optim_error(opt, &e);
            copy_or_zero(a->before[k][0], x, D);
            copy_or_zero(a->before[k][1], e, D);
            copy_or_zero(a->before[k][2], opt->m, D);
            static const size_t add_sizes[2] = {4, 2};
            static const size_t bad_sizes[2] = {4, 0};
            float add_x0[6] = {1, 2, 3, 4, 5, 6};
            if (k == 1)
                add_x0[0] = 99; /* rank 0's values are broadcast */
            deft_layout_t add = {2, k == a->bad_rank ? bad_sizes : add_sizes, NULL};
            deft_optim_t *grown;
            a->grow_st[k] = deft_optim_create_grown(&grown, opt, &add, add_x0);
            if (a->grow_st[k] != DEFT_OK)
                break;
            /* the old one is unchanged until destroyed */
            assert_int_equal(deft_optim_dim(opt), D);
            deft_optim_destroy(opt);
            opt = grown;
            const float *x2, *e2;
            deft_optim_params(opt, &x2);
            deft_optim_error(opt, &e2);
            copy_or_zero(a->after[k][0], x2, D + 6);
            copy_or_zero(a->after[k][1], e2, D + 6);
            copy_or_zero(a->after[k][2], opt->m, D + 6);
            if (k == 0) {
                a->step_after = deft_optim_steps(opt);
                a->groups_after = deft_optim_num_groups(opt);
            }
        }
        const float *pt;
        deft_optim_ask(opt, &pt);
        size_t d = deft_optim_dim(opt);
        for (size_t i = 0; i < d; i++)
            grad[i] = pt[i] - target(k, i);
        st = deft_optim_tell(opt, grad, NULL);
    }
    if (st == DEFT_OK && a->grow_st[k] == DEFT_OK) {
        const float *x;
        deft_optim_params(opt, &x);
        memcpy(a->x_end[k], x, sizeof a->x_end[k]);
    }
    deft_optim_destroy(opt);
    return st;
}

static void test_grow_keeps_state_bitwise(void **state)
{
    (void)state;
    const struct {
        deft_algo_t algo;
        deft_compressor_kind_t comp;
    } cases[] = {{DEFT_ALGO_DEF, DEFT_COMP_RBGS}, {DEFT_ALGO_SGD, DEFT_COMP_NONE},
                 {DEFT_ALGO_PSYNC, DEFT_COMP_RBGS}, {DEFT_ALGO_EF21, DEFT_COMP_TOPK},
                 {DEFT_ALGO_EF, DEFT_COMP_POWERSGD}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        grow_t a;
        memset(&a, 0, sizeof a);
        a.algo = cases[c].algo;
        a.comp = cases[c].comp;
        a.bad_rank = -1;
        assert_status(deft_run_threads(K, grow_worker, &a), DEFT_OK);
        assert_int_equal(a.step_after, 3);
        assert_int_equal(a.groups_after, 2);
        for (int k = 0; k < K; k++) {
            assert_status(a.grow_st[k], DEFT_OK);
            for (int v = 0; v < 3; v++) {
                assert_memory_equal(a.after[k][v], a.before[k][v], D * sizeof(float));
                for (int i = 0; i < 6; i++) {
                    float want = v == 0 ? (float)(i + 1) : 0.0f;
                    if (a.after[k][v][D + i] != want)
                        fail_msg("%s: rank %d vector %d new element %d = %g, want %g",
                                 deft_algo_name(a.algo), k, v, i,
                                 (double)a.after[k][v][D + i], (double)want);
                }
            }
            /* the grown model trains: the new tensors moved to the targets */
            assert_true(fabsf(a.x_end[k][D] - 1.0f) > 1e-4f);
        }
    }
    /* a bad layout on one worker fails both, leaving each as it was */
    grow_t b;
    memset(&b, 0, sizeof b);
    b.algo = DEFT_ALGO_DEF;
    b.comp = DEFT_COMP_RBGS;
    b.bad_rank = 1;
    assert_status(deft_run_threads(K, grow_worker, &b), DEFT_OK);
    assert_status(b.grow_st[0], DEFT_ERR_INVALID_ARG);
    assert_status(b.grow_st[1], DEFT_ERR_INVALID_ARG);
}

/* -- the state blob -------------------------------------------------------- */

static void take_steps(deft_optim_t *opt, int n)
{
    float grad[D];
    for (int s = 0; s < n; s++) {
        const float *pt;
        assert_status(deft_optim_ask(opt, &pt), DEFT_OK);
        for (size_t i = 0; i < D; i++)
            grad[i] = pt[i] - target(0, i);
        assert_status(deft_optim_tell(opt, grad, NULL), DEFT_OK);
    }
}

static void test_state_carries_groups_and_detects_any_changed_byte(void **state)
{
    (void)state;
    deft_optim_config_t cfg = config_for(DEFT_ALGO_DEF);
    cfg.compressor = DEFT_COMP_RBGS;
    cfg.ratio = 2;
    deft_comm_t *ca, *cb;
    deft_optim_t *a = make_self(&ca, &cfg), *b = make_self(&cb, &cfg);
    deft_group_t g[2];
    groups_at(0, g);
    g[0].dampening = 0.5f;
    assert_status(deft_optim_set_groups(a, 2, g, TGROUP), DEFT_OK);
    take_steps(a, 3);
    size_t n = deft_optim_state_size(a);
    assert_true(n != deft_optim_state_size(b)); /* one group against two */
    unsigned char *blob = malloc(n);
    assert_non_null(blob);
    assert_status(deft_optim_state_save(a, blob, n), DEFT_OK);
    assert_status(deft_optim_state_load(b, blob, n), DEFT_OK);
    assert_int_equal(deft_optim_num_groups(b), 2);
    deft_group_t got;
    assert_status(deft_optim_get_group(b, 0, &got), DEFT_OK);
    assert_true(got.lr == g[0].lr && got.dampening == 0.5f &&
                got.weight_decay == g[0].weight_decay);
    assert_status(deft_optim_get_group(b, 1, &got), DEFT_OK);
    assert_true(got.nesterov == 1 && got.momentum == g[1].momentum);
    /* both continue bitwise (dampening past the first step included) */
    take_steps(a, 3);
    take_steps(b, 3);
    const float *xa, *xb;
    deft_optim_params(a, &xa);
    deft_optim_params(b, &xb);
    assert_memory_equal(xa, xb, D * sizeof(float));
    /* every single changed byte is refused, and b is left as it was */
    unsigned char *copy = malloc(n);
    assert_non_null(copy);
    float keep[D];
    memcpy(keep, xb, sizeof keep);
    for (size_t i = 0; i < n; i++) {
        memcpy(copy, blob, n);
        copy[i] ^= (unsigned char)(1u << (i % 8));
        deft_status_t st = deft_optim_state_load(b, copy, n);
        if (st != DEFT_ERR_FORMAT)
            fail_msg("byte %zu of %zu flipped: status %s, want a format error",
                     i, n, deft_status_str(st));
    }
    assert_memory_equal(keep, xb, sizeof keep);
    assert_status(deft_optim_state_load(b, blob, n - 1), DEFT_ERR_FORMAT);
    free(copy);
    free(blob);
    deft_optim_destroy(a);
    deft_optim_destroy(b);
    deft_comm_destroy(ca);
    deft_comm_destroy(cb);
}

/* Another layout with the same dimension is refused by its tensor sizes;
 * a version 1 blob (one lr, no groups, no checksum) still loads. */
static void test_state_layout_and_version_1(void **state)
{
    (void)state;
    deft_optim_config_t cfg = config_for(DEFT_ALGO_DEF);
    cfg.compressor = DEFT_COMP_RBGS;
    cfg.ratio = 2;
    deft_comm_t *ca, *cb;
    deft_optim_t *a = make_self(&ca, &cfg);
    assert_status(deft_comm_create_self(&cb), DEFT_OK);
    static const size_t other[NT] = {5, 4, 2};
    deft_layout_t l = {NT, other, NULL};
    float x0[D];
    x0_fill(x0);
    deft_optim_t *b;
    assert_status(deft_optim_create(&b, cb, &l, x0, &cfg), DEFT_OK);
    take_steps(a, 2);
    size_t n = deft_optim_state_size(a);
    unsigned char *blob = malloc(n);
    assert_non_null(blob);
    assert_status(deft_optim_state_save(a, blob, n), DEFT_OK);
    EXPECT(deft_optim_state_load(b, blob, n), DEFT_ERR_FORMAT,
           "tensor 0 has 4 elements, this layout's 5");
    /* version 1: header (magic, version, algo, compressor, d, step, lr,
     * mask) and the vectors x, e, m */
    const float *x, *e;
    deft_optim_params(a, &x);
    deft_optim_error(a, &e);
    unsigned char v1[40 + 3 * D * 4];
    uint32_t u32[4] = {0x534f4644u, 1, DEFT_ALGO_DEF, DEFT_COMP_RBGS};
    uint64_t u64[2] = {D, 2};
    float lr = 0.07f;
    uint32_t mask = 7;
    memcpy(v1, u32, 16);
    memcpy(v1 + 16, u64, 16);
    memcpy(v1 + 32, &lr, 4);
    memcpy(v1 + 36, &mask, 4);
    memcpy(v1 + 40, x, D * 4);
    memcpy(v1 + 40 + D * 4, e, D * 4);
    memcpy(v1 + 40 + 2 * D * 4, a->m, D * 4);
    deft_optim_t *c;
    deft_comm_t *cc;
    c = make_self(&cc, &cfg);
    assert_status(deft_optim_state_load(c, v1, sizeof v1), DEFT_OK);
    assert_true(deft_optim_get_lr(c) == 0.07f);
    assert_int_equal(deft_optim_steps(c), 2);
    const float *xc;
    deft_optim_params(c, &xc);
    assert_memory_equal(xc, x, D * sizeof(float));
    free(blob);
    deft_optim_destroy(a);
    deft_optim_destroy(b);
    deft_optim_destroy(c);
    deft_comm_destroy(ca);
    deft_comm_destroy(cb);
    deft_comm_destroy(cc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_algorithm_matches_its_restatement),
        cmocka_unit_test(test_restatement_sees_nesterov),
        cmocka_unit_test(test_groups_api_checks_every_value),
        cmocka_unit_test(test_output_is_point),
        cmocka_unit_test(test_grow_keeps_state_bitwise),
        cmocka_unit_test(test_state_carries_groups_and_detects_any_changed_byte),
        cmocka_unit_test(test_state_layout_and_version_1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
